//! W1's engine share, without sockets, SQLite or a scheduler: one relay engine and 31 device
//! engines (a teacher and 30 guardians) in the simulated network; the teacher posts, the
//! simulation runs until every message and write is done. Prints the median wall time per
//! post (all 32 engines on one thread) and the frames and bytes per post.
//!
//! It is deterministic (fixed seed), so `valgrind --tool=callgrind` gives repeatable
//! instruction counts even on a loaded machine. Setting up the class costs far more than a
//! post, so measure a post as the difference of two runs:
//! `cargo bench -p homeroom-sim --bench fanout --no-run`, then
//! `HOMEROOM_FANOUT_POSTS=10` and `HOMEROOM_FANOUT_POSTS=40 valgrind --tool=callgrind
//! target/release/deps/fanout-<hash>`; (instructions of the second − the first) / 30.
//! The figures and their breakdown by component are in docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use homeroom_core::automerge::{ROOT, ReadDoc, Value};
use homeroom_core::{DocId, DocKind};
use homeroom_sim::{NetConfig, Sim, SimClass};

const PARENTS: usize = 30;

fn main() {
    let quick = std::env::var("HOMEROOM_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let posts = std::env::var("HOMEROOM_FANOUT_POSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 30 } else { 300 });
    let mut sim = Sim::new(
        7,
        NetConfig {
            latency_ms: (1, 1),
            fsync_ms: (1, 1),
            ..NetConfig::default()
        },
    );
    let relay = sim.add_relay();
    let SimClass {
        id: class,
        teacher,
        families,
    } = sim.found_class(PARENTS);
    let parents: Vec<_> = families.into_iter().map(|(_, p)| p).collect();
    assert!(sim.connect(teacher, relay));
    sim.run_until_quiet(60_000);
    for &p in &parents {
        assert!(sim.connect(p, relay));
    }
    sim.run_until_quiet(60_000);

    let notebook = DocId::new(class, DocKind::Notebook);
    let mut times = Vec::with_capacity(posts);
    let (frames0, bytes0) = (sim.frames, sim.bytes);
    for k in 0..posts {
        let t0 = Instant::now();
        sim.post_homework(teacher, class, k);
        assert!(sim.run_until_quiet(60_000));
        times.push(t0.elapsed());
    }
    let (frames, bytes) = (sim.frames - frames0, sim.bytes - bytes0);
    // Every parent has every post.
    for &p in &parents {
        let d = sim.node(p).document(&notebook).unwrap();
        let entries = match d.get(ROOT, "entries").unwrap() {
            Some((Value::Object(_), id)) => id,
            _ => panic!("no entries map"),
        };
        assert_eq!(d.keys(&entries).count(), posts, "a parent misses posts");
    }
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "fan-out, engines only (1 relay + 31 devices, one thread, {posts} posts): per post median {:.3} ms, p90 {:.3} ms; {:.1} frames, {:.0} bytes per post",
        ms(times[times.len() / 2]),
        ms(times[times.len() * 9 / 10]),
        frames as f64 / posts as f64,
        bytes as f64 / posts as f64
    );
}
