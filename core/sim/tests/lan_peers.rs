//! LAN peer sessions of the sans-IO engine (`SyncNode::connect_peer`, docs/lan.md): two
//! devices, no relay. Each verifies the other; only documents both may read travel; forged
//! changes are refused with `Reject`; nothing becomes "delivered" through a peer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use homeroom_core::automerge::ReadDoc;
use homeroom_core::automerge::transaction::Transactable;
use homeroom_core::roster::{self, Role};
use homeroom_core::{ClassId, DeviceId, DeviceKey, DocId, DocKind, FamilyId, MemberId};
use homeroom_protocol::{ErrorCode, Message, RejectReason};
use homeroom_sync::{Limits, MemorySource, Replica, SessionId, SyncNode};

const NOW: i64 = 1_750_000_000_000;

struct Dev {
    node: SyncNode,
    id: DeviceId,
    disk: MemorySource,
}

fn dev(seed: u8) -> Dev {
    let key = DeviceKey::from_secret([seed; 32]);
    let id = key.device_id();
    let replica = Replica::device(
        key,
        [seed; 8],
        Box::new(MemorySource::default()),
        Limits::default(),
    )
    .unwrap();
    Dev {
        node: SyncNode::new(replica),
        id,
        disk: MemorySource::default(),
    }
}

/// Persist pending writes and report them done.
fn flush(d: &mut Dev) {
    while let Some(w) = d.node.poll_write() {
        d.disk.apply(&w);
        d.node.handle_write_done(w.id);
    }
}

/// Everything one end said to the other, in order.
#[derive(Default)]
struct Wire {
    a_to_b: Vec<Message>,
    b_to_a: Vec<Message>,
}

/// Run a session between `a` and `b` until both are quiet. Returns the two session ids and
/// every message sent.
fn session(a: &mut Dev, b: &mut Dev, exporter: [u8; 32]) -> (SessionId, SessionId, Wire) {
    let sa = a.node.connect_peer(NOW, exporter).unwrap();
    let sb = b.node.connect_peer(NOW, exporter).unwrap();
    let mut wire = Wire::default();
    pump(a, sa, b, sb, &mut wire);
    (sa, sb, wire)
}

fn pump(a: &mut Dev, sa: SessionId, b: &mut Dev, sb: SessionId, wire: &mut Wire) {
    for _ in 0..10_000 {
        flush(a);
        flush(b);
        let mut moved = false;
        while let Some((sid, msg)) = a.node.poll_transmit() {
            assert_eq!(sid, sa);
            wire.a_to_b.push(msg.clone());
            b.node.handle_message(NOW, sb, msg).unwrap();
            moved = true;
        }
        while let Some((sid, msg)) = b.node.poll_transmit() {
            assert_eq!(sid, sb);
            wire.b_to_a.push(msg.clone());
            a.node.handle_message(NOW, sa, msg).unwrap();
            moved = true;
        }
        while a.node.poll_close().is_some() || b.node.poll_close().is_some() {}
        while a.node.poll_event().is_some() || b.node.poll_event().is_some() {}
        if !moved {
            return;
        }
    }
    panic!("the peers never went quiet");
}

struct Class {
    id: ClassId,
    teacher: Dev,
    parents: Vec<(FamilyId, Dev)>,
}

/// A teacher founds a class on their phone and enrolls two guardians' phones; the parents'
/// phones hold nothing yet. The teacher also writes into family 2's lane.
fn class() -> Class {
    let mut teacher = dev(1);
    let id = teacher
        .node
        .found_class([7; 16], "3B", MemberId([1; 8]), "Ms Li", NOW)
        .unwrap();
    let mut parents = Vec::new();
    for i in 0..2u8 {
        let p = dev(10 + i);
        let fam = FamilyId([i + 1; 8]);
        let member = MemberId([i + 100; 8]);
        let device = p.id;
        teacher
            .node
            .edit(&DocId::new(id, DocKind::Roster), NOW, |tx, _, _| {
                roster::add_family(tx, fam, "Family")?;
                roster::add_member(tx, member, "Parent", &[Role::Guardian], Some(fam))?;
                roster::add_device(tx, device, member, NOW)
            })
            .unwrap();
        parents.push((fam, p));
    }
    put(
        &mut teacher,
        DocId::new(id, DocKind::Notebook),
        "entry",
        "homework",
    );
    let lane2 = DocId::new(id, DocKind::Lane(parents[1].0));
    put(&mut teacher, lane2, "note", "private to family 2");
    flush(&mut teacher);
    while teacher.node.poll_event().is_some() {}
    Class {
        id,
        teacher,
        parents,
    }
}

fn put(d: &mut Dev, doc: DocId, key: &str, value: &str) {
    let (key, value) = (key.to_string(), value.to_string());
    d.node
        .edit(&doc, NOW, move |tx, _, _| {
            tx.put(homeroom_core::automerge::ROOT, key.as_str(), value.as_str())?;
            Ok(())
        })
        .unwrap();
}

fn has_key(d: &mut Dev, doc: &DocId, key: &str) -> bool {
    d.node
        .document(doc)
        .unwrap()
        .get(homeroom_core::automerge::ROOT, key)
        .unwrap()
        .is_some()
}

fn synced_docs(msgs: &[Message]) -> Vec<DocId> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::Sync { doc, .. } => Some(*doc),
            _ => None,
        })
        .collect()
}

#[test]
fn a_parent_joins_over_the_lan_and_receives_only_what_it_may_read() {
    let mut c = class();
    let (fam1, mut p1) = c.parents.remove(0);
    let (fam2, _) = c.parents.remove(0);
    let (st, sp, wire) = session(&mut c.teacher, &mut p1, [42; 32]);
    assert!(c.teacher.node.is_established(st) && p1.node.is_established(sp));
    assert_eq!(c.teacher.node.lan_peer_of(st), Some(p1.id));
    assert_eq!(p1.node.lan_peer_of(sp), Some(c.teacher.id));
    // The roster arrived (verified), then the notebook.
    assert_eq!(p1.node.replica().classes(), vec![c.id]);
    assert!(has_key(
        &mut p1,
        &DocId::new(c.id, DocKind::Notebook),
        "entry"
    ));
    // Family 2's lane never went to parent 1's phone, nor was it asked for.
    let lane2 = DocId::new(c.id, DocKind::Lane(fam2));
    assert!(!synced_docs(&wire.a_to_b).contains(&lane2));
    assert!(!synced_docs(&wire.b_to_a).contains(&lane2));
    assert!(!p1.disk.docs.contains_key(&lane2));
    // Nor does a later edit of it (fan-out to live sessions checks the peer's right too).
    put(&mut c.teacher, lane2, "later", "still private");
    let mut wire = Wire::default();
    pump(&mut c.teacher, st, &mut p1, sp, &mut wire);
    assert!(!synced_docs(&wire.a_to_b).contains(&lane2));
    assert!(!p1.disk.docs.contains_key(&lane2));

    // Parent 1 writes in its own lane: it reaches the teacher's phone, but stays undelivered
    // on parent 1 (a peer is not the relay).
    let lane1 = DocId::new(c.id, DocKind::Lane(fam1));
    put(&mut p1, lane1, "reply", "thanks");
    let mut wire = Wire::default();
    pump(&mut c.teacher, st, &mut p1, sp, &mut wire);
    assert!(has_key(&mut c.teacher, &lane1, "reply"));
    assert!(p1.node.replica().undelivered_count() > 0);
    assert!(
        !wire
            .a_to_b
            .iter()
            .any(|m| matches!(m, Message::Saved { .. }))
    );

    // A peer claiming parent 1's valid change is refused cannot make parent 1 drop it.
    let hash = p1.node.document(&lane1).unwrap().get_heads()[0];
    p1.node
        .handle_message(
            NOW,
            sp,
            Message::Reject {
                doc: lane1,
                changes: vec![hash.0],
                reason: RejectReason::NotAWriter,
            },
        )
        .unwrap();
    assert!(has_key(&mut p1, &lane1, "reply"));

    // Nothing a peer says makes it "delivered": not a `Saved` naming the change, not a fresh
    // session whose catalog matches exactly.
    p1.node
        .handle_message(
            NOW,
            sp,
            Message::Saved {
                doc: lane1,
                heads: vec![hash.0],
            },
        )
        .unwrap();
    c.teacher.node.handle_closed(st, "test");
    p1.node.handle_closed(sp, "test");
    flush(&mut c.teacher);
    flush(&mut p1);
    let (_, _, wire) = session(&mut c.teacher, &mut p1, [46; 32]);
    assert!(
        wire.a_to_b
            .iter()
            .any(|m| matches!(m, Message::Catalog { .. }))
    );
    assert!(!p1.node.replica().is_delivered(&lane1, &hash));
    assert!(p1.node.replica().undelivered_count() > 0);
}

#[test]
fn a_forged_teacher_entry_from_a_parent_is_rejected_and_sync_goes_on() {
    let mut c = class();
    let (fam1, mut p1) = c.parents.remove(0);
    let (st, sp, _) = session(&mut c.teacher, &mut p1, [43; 32]);
    let notebook = DocId::new(c.id, DocKind::Notebook);
    // Parent 1 signs a notebook change it may not write (bypassing its own check).
    p1.node
        .edit_unchecked(&notebook, NOW, |tx, _, _| {
            tx.put(homeroom_core::automerge::ROOT, "forged", "cancel school")?;
            Ok(())
        })
        .unwrap();
    let lane1 = DocId::new(c.id, DocKind::Lane(fam1));
    put(&mut p1, lane1, "reply", "legit");
    let mut wire = Wire::default();
    pump(&mut c.teacher, st, &mut p1, sp, &mut wire);
    assert!(!has_key(&mut c.teacher, &notebook, "forged"));
    assert!(
        wire.a_to_b.iter().any(|m| matches!(
            m,
            Message::Reject { doc, reason: RejectReason::NotAWriter, .. } if *doc == notebook
        )),
        "the teacher's phone refuses the forged change"
    );
    let stats = c.teacher.node.replica_mut().doc_stats(&notebook).unwrap();
    assert_eq!((stats.held, stats.rejected), (0, 1));
    // The legitimate lane edit still went through.
    assert!(has_key(&mut c.teacher, &lane1, "reply"));
    // The forger's phone checks the Reject against its own roster, agrees, and drops the change
    // (as on the relay's Reject), so sync of the notebook goes on.
    assert!(!has_key(&mut p1, &notebook, "forged"));
    // The teacher's later entries still reach the forger's phone in the same session.
    put(&mut c.teacher, notebook, "next", "more homework");
    let mut wire = Wire::default();
    pump(&mut c.teacher, st, &mut p1, sp, &mut wire);
    assert!(has_key(&mut p1, &notebook, "next"));
    assert!(!has_key(&mut c.teacher, &notebook, "forged"));
}

#[test]
fn a_reflected_hello_and_a_stranger_get_nothing() {
    let mut c = class();
    // Our own Hello sent back to us (same TLS session, so the same exporter) is refused.
    let sid = c.teacher.node.connect_peer(NOW, [44; 32]).unwrap();
    let (_, hello) = c.teacher.node.poll_transmit().unwrap();
    c.teacher.node.handle_message(NOW, sid, hello).unwrap();
    assert!(!c.teacher.node.is_established(sid));
    assert!(matches!(
        c.teacher.node.poll_transmit(),
        Some((
            _,
            Message::Error {
                code: ErrorCode::AuthenticationFailed,
                fatal: true,
                ..
            }
        ))
    ));
    c.teacher.node.handle_closed(sid, "test");

    // A device enrolled nowhere: the session closes and carries no document.
    let mut stranger = dev(99);
    let (_, _, wire) = session(&mut c.teacher, &mut stranger, [45; 32]);
    assert!(
        synced_docs(&wire.a_to_b).is_empty(),
        "{:?}",
        synced_docs(&wire.a_to_b)
    );
    assert!(wire.a_to_b.iter().chain(&wire.b_to_a).any(|m| matches!(
        m,
        Message::Error {
            code: ErrorCode::NotEnrolled,
            fatal: true,
            ..
        }
    )));
    assert!(stranger.node.replica().classes().is_empty());
}
