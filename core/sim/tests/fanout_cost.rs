//! The cost of a post must not grow with the number of posts before it in a session.
//!
//! Automerge's sync state for a peer advances only when that peer answers; a receiver that
//! never answers makes every later message to it carry (and its sender compute) a bloom filter
//! over everything sent since. The engine answers every few received changes
//! (`ACK_AFTER_CHANGES` in `homeroom_sync::node`); this test measures the bytes per post early
//! and late in a long session, which grow by a tenth without those answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use homeroom_core::automerge::{ROOT, ReadDoc, Value};
use homeroom_core::{DocId, DocKind};
use homeroom_sim::{NetConfig, Sim, SimClass};

const PARENTS: usize = 4;
const POSTS: usize = 80;
/// Windows of 16 posts: two whole answer periods of every receiver.
const EARLY: std::ops::Range<usize> = 8..24;
const LATE: std::ops::Range<usize> = 64..80;

#[test]
fn bytes_per_post_do_not_grow_over_a_long_session() {
    let mut sim = Sim::new(
        11,
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
    assert!(sim.run_until_quiet(60_000));
    for &p in &parents {
        assert!(sim.connect(p, relay));
    }
    assert!(sim.run_until_quiet(60_000));

    let notebook = DocId::new(class, DocKind::Notebook);
    let mut bytes = Vec::with_capacity(POSTS);
    for k in 0..POSTS {
        let before = sim.bytes;
        sim.post_homework(teacher, class, k);
        assert!(sim.run_until_quiet(60_000));
        bytes.push(sim.bytes - before);
    }
    for &p in &parents {
        let d = sim.node(p).document(&notebook).unwrap();
        let entries = match d.get(ROOT, "entries").unwrap() {
            Some((Value::Object(_), id)) => id,
            _ => panic!("no entries map"),
        };
        assert_eq!(d.keys(&entries).count(), POSTS, "a parent misses posts");
    }
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    let early: u64 = bytes[EARLY].iter().sum();
    let late: u64 = bytes[LATE].iter().sum();
    // Longer keys and counters add a few bytes per change; stale sync states add ~10 %.
    assert!(
        late * 100 <= early * 103,
        "bytes per post grew over the session: {early} B in posts {EARLY:?}, {late} B in posts \
         {LATE:?} (per post: {bytes:?})"
    );
}
