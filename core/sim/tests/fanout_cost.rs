//! The cost of a post must not grow with the number of posts before it in a session.
//!
//! Automerge's sync state for a peer advances only when that peer answers; a receiver that
//! never answers makes every later message to it carry (and its sender compute) a bloom filter
//! over everything sent since. The engine answers every few received changes
//! (`ACK_AFTER_CHANGES` in `homeroom_sync::node`); this test measures the bytes per post early
//! and late in a long session, which grow by a tenth without those answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use homeroom_core::automerge::transaction::Transactable;
use homeroom_core::automerge::{ObjType, ROOT, ReadDoc, Value};
use homeroom_core::roster::{self, Role};
use homeroom_core::{DocId, DocKind, FamilyId, MemberId, ModelError};
use homeroom_sim::{NetConfig, Sim};

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
    assert!(sim.run_until_quiet(60_000));
    for &p in &parents {
        assert!(sim.connect(p, relay));
    }
    assert!(sim.run_until_quiet(60_000));

    let notebook = DocId::new(class, DocKind::Notebook);
    let mut bytes = Vec::with_capacity(POSTS);
    for k in 0..POSTS {
        let before = sim.bytes;
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
