//! Term roll-over under simulation: a post written before the class was archived that reaches
//! the relay after the archive change is kept; one dated after the archive is refused
//! `ReadOnly` (docs/invites.md §4).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use homeroom_core::automerge::ChangeHash;
use homeroom_core::roster;
use homeroom_core::{ClassId, DocId, DocKind, MemberId};
use homeroom_protocol::RejectReason;
use homeroom_sim::{NetConfig, NodeIx, Sim};
use homeroom_sync::NodeEvent;

/// Write one notebook post on `ix`, dated `at`.
fn post(sim: &mut Sim, ix: NodeIx, notebook: &DocId, key: &str, at: i64) -> ChangeHash {
    let (_, hash) = sim
        .node(ix)
        .edit(notebook, at, |tx, _, _| {
            use homeroom_core::automerge::transaction::Transactable;
            use homeroom_core::automerge::{ObjType, ROOT};
            let m = tx.put_object(ROOT, key, ObjType::Map)?;
            tx.put(&m, "text", "Bring your gym clothes")?;
            Ok(())
        })
        .unwrap();
    hash.unwrap()
}

fn refused(sim: &Sim, ix: NodeIx, hash: &ChangeHash, why: RejectReason) -> bool {
    sim.events(ix).iter().any(|e| {
        matches!(e, NodeEvent::Rejected { hashes, reason, .. }
            if *reason == why && hashes.contains(hash))
    })
}

#[test]
fn a_post_written_before_the_archive_but_delivered_after_it_is_kept() {
    let mut sim = Sim::new(41, NetConfig::default());
    let relay = sim.add_relay();
    // The head teacher's two phones: `a` writes posts, `b` rolls the term over.
    let a = sim.add_device();
    let b = sim.add_device();
    let nonce = sim.nonce();
    let now = sim.now();
    let class = sim
        .node(a)
        .found_class(nonce, "Class 3B", MemberId([1; 8]), "Ms Li", now)
        .unwrap();
    let roster_doc = DocId::new(class, DocKind::Roster);
    let notebook = DocId::new(class, DocKind::Notebook);
    let b_id = sim.device_id(b).unwrap();
    sim.node(a)
        .edit(&roster_doc, now, |tx, _, _| {
            roster::add_device(tx, b_id, MemberId([1; 8]), now)
        })
        .unwrap();
    sim.settle(a);
    sim.connect(a, relay);
    assert!(sim.run_until_quiet(60_000));
    sim.connect(b, relay);
    assert!(sim.run_until_quiet(60_000));
    assert!(
        sim.node(b)
            .replica()
            .roster(&class)
            .is_some_and(|r| r.is_staff(&b_id))
    );

    // Phone `a` goes offline and writes a post; a minute later phone `b` archives the class.
    sim.partition(a);
    assert!(sim.run_until_quiet(60_000));
    let written = sim.now();
    let before = post(&mut sim, a, &notebook, "before", written);
    sim.settle(a);
    let archived_at = written + 60_000;
    sim.node(b)
        .edit(&roster_doc, archived_at, |tx, _, _| {
            roster::archive(tx, ClassId([9; 16]), archived_at)
        })
        .unwrap();
    sim.settle(b);
    assert!(sim.run_until_quiet(60_000));
    assert_eq!(
        sim.node(relay)
            .replica()
            .roster(&class)
            .and_then(|r| r.archived_at),
        Some(archived_at),
        "the relay applied the archive first"
    );

    // Still offline (its roster is not archived yet), `a` writes a post dated after the archive.
    let after = post(&mut sim, a, &notebook, "after", archived_at + 1_000);
    sim.settle(a);

    // `a` comes back: the relay receives both posts after the archive change.
    sim.heal();
    sim.connect(a, relay);
    assert!(sim.run_until_quiet(120_000));

    assert!(
        !refused(&sim, relay, &before, RejectReason::ReadOnly),
        "the post written before the archive is not refused: {:#?}",
        sim.events(relay)
    );
    for ix in [relay, b] {
        assert!(
            sim.durable_has(ix, &notebook, &before),
            "node {ix} keeps the post written before the archive"
        );
    }
    assert!(
        refused(&sim, relay, &after, RejectReason::ReadOnly),
        "the post dated after the archive is refused ReadOnly: {:#?}",
        sim.events(relay)
    );
    for ix in [relay, b] {
        assert!(!sim.durable_has(ix, &notebook, &after), "node {ix}");
    }
    // Everyone converges on the notebook with the earlier post only.
    let heads = sim.heads(relay, &notebook);
    assert_eq!(heads, vec![before]);
    assert_eq!(sim.heads(a, &notebook), heads);
    assert_eq!(sim.heads(b, &notebook), heads);

    // A roster change backdated before the archive cannot lift it (a modified client that
    // deletes `archived_at`): refused `ReadOnly`, the class stays archived everywhere.
    let (_, lift) = sim
        .node(a)
        .edit_unchecked(&roster_doc, archived_at - 1, |tx, _, _| {
            use homeroom_core::automerge::transaction::Transactable;
            use homeroom_core::automerge::{ROOT, ReadDoc};
            let (_, class_obj) = tx.get(ROOT, "class")?.unwrap();
            tx.delete(&class_obj, "archived_at")?;
            Ok(())
        })
        .unwrap();
    let lift = lift.unwrap();
    sim.settle(a);
    assert!(sim.run_until_quiet(60_000));
    assert!(
        refused(&sim, relay, &lift, RejectReason::ReadOnly),
        "{:#?}",
        sim.events(relay)
    );
    for ix in [relay, a, b] {
        assert_eq!(
            sim.node(ix)
                .replica()
                .roster(&class)
                .and_then(|r| r.archived_at),
            Some(archived_at),
            "node {ix} still sees the class archived"
        );
    }
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}
