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

use homeroom_core::automerge::transaction::Transactable;
use homeroom_core::automerge::{ObjType, ROOT, ReadDoc, Value};
use homeroom_core::roster::{self, Role};
use homeroom_core::{DocId, DocKind, FamilyId, MemberId, ModelError};
use homeroom_sim::{NetConfig, Sim};

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
    let teacher = sim.add_device();
    let nonce = sim.nonce();
    let now = sim.now();
    let class = sim
        .node(teacher)
        .found_class(nonce, "Class 3B", MemberId([1; 8]), "Ms Li", now)
        .unwrap();
    let mut parents = Vec::new();
    for i in 0..PARENTS {
        let parent = sim.add_device();
        let dev = sim.device_id(parent).unwrap();
        let fam = FamilyId((i as u64 + 1).to_le_bytes());
        let member = MemberId((i as u64 + 100).to_le_bytes());
        let now = sim.now();
        sim.node(teacher)
            .edit(&DocId::new(class, DocKind::Roster), now, |tx, _, _| {
                roster::add_family(tx, fam, &format!("Family {i}"))?;
                roster::add_member(
                    tx,
                    member,
                    &format!("Parent {i}"),
                    &[Role::Guardian],
                    Some(fam),
                )?;
                roster::add_device(tx, dev, member, now)
            })
            .unwrap();
        parents.push(parent);
    }
    sim.settle(teacher);
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
        let now = sim.now();
        sim.node(teacher)
            .edit(&notebook, now, move |tx, _, _| {
                let entries = match tx.get(ROOT, "entries")? {
                    Some((Value::Object(ObjType::Map), id)) => id,
                    _ => return Err(ModelError::MissingGenesis { map: "entries" }),
                };
                let e = tx.put_object(&entries, format!("entry-{k}"), ObjType::Map)?;
                tx.put(&e, "title", format!("Homework for day {k}"))?;
                tx.put(&e, "body", "Read pages 12-14 and sign below. ".repeat(4))?;
                Ok(())
            })
            .unwrap();
        sim.settle(teacher);
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
