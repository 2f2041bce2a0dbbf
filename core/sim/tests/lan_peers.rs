//! LAN peer sessions of the sans-IO engine (`SyncNode::connect_peer`, docs/lan.md): two
//! devices, no relay. Each verifies the other; only documents both may read travel; forged
//! changes are refused with `Reject`; nothing becomes "delivered" through a peer; a peer
//! revoked or removed during a session is told, cut off, and its later changes are refused
//! (docs/invites.md §3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use homeroom_core::automerge::ChangeHash;
use homeroom_core::automerge::ReadDoc;
use homeroom_core::automerge::transaction::Transactable;
use homeroom_core::roster::{self, Role};
use homeroom_core::{ClassId, DeviceId, DeviceKey, DocId, DocKind, FamilyId, MemberId};
use homeroom_protocol::{ErrorCode, Message, RejectReason};
use homeroom_sync::{Limits, MemorySource, NodeEvent, Replica, SessionId, SyncNode, WriteKind};

const NOW: i64 = 1_750_000_000_000;

struct Dev {
    node: SyncNode,
    id: DeviceId,
    disk: MemorySource,
    /// Changes written to the audit table: refused, kept, never applied.
    audited: Vec<(DocId, ChangeHash, RejectReason)>,
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
        audited: Vec::new(),
    }
}

/// Persist pending writes and report them done.
fn flush(d: &mut Dev) {
    while let Some(w) = d.node.poll_write() {
        if let WriteKind::Audit {
            doc,
            changes,
            reason,
        } = &w.kind
        {
            d.audited
                .extend(changes.iter().map(|c| (*doc, c.hash, *reason)));
        }
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
    put_at(d, doc, key, value, NOW);
}

/// Like [`put`], dated `at`; returns the change's hash.
fn put_at(d: &mut Dev, doc: DocId, key: &str, value: &str, at: i64) -> ChangeHash {
    let (key, value) = (key.to_string(), value.to_string());
    d.node
        .edit(&doc, at, move |tx, _, _| {
            tx.put(homeroom_core::automerge::ROOT, key.as_str(), value.as_str())?;
            Ok(())
        })
        .unwrap()
        .1
        .unwrap()
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

/// One end of a LAN session: a device's index and its session id.
type End = (usize, SessionId);

/// LAN sessions between several devices at once, each link a session at both ends.
#[derive(Default)]
struct Lan {
    /// The two ends of each session; `None` once the transport closed it.
    links: Vec<Option<(End, End)>>,
    /// Every message sent: from, to, message.
    sent: Vec<(usize, usize, Message)>,
    /// Every close a device's engine asked for: device, session, reason.
    closed: Vec<(usize, SessionId, String)>,
    /// Every event: device, event.
    events: Vec<(usize, NodeEvent)>,
}

impl Lan {
    /// Open a session between devices `a` and `b` (both ends connect) and run until quiet.
    fn link(&mut self, devs: &mut [Dev], a: usize, b: usize, exporter: [u8; 32]) -> usize {
        let sa = devs[a].node.connect_peer(NOW, exporter).unwrap();
        let sb = devs[b].node.connect_peer(NOW, exporter).unwrap();
        self.links.push(Some(((a, sa), (b, sb))));
        self.run(devs);
        self.links.len() - 1
    }

    fn open(&self, link: usize) -> bool {
        self.links[link].is_some()
    }

    /// The other end of device `i`'s session `sid`.
    fn peer_end(&self, i: usize, sid: SessionId) -> Option<End> {
        self.links.iter().flatten().find_map(|&(x, y)| {
            if x == (i, sid) {
                Some(y)
            } else if y == (i, sid) {
                Some(x)
            } else {
                None
            }
        })
    }

    /// Deliver messages in rounds (device by device, in index order) until all are quiet. A
    /// close an engine asks for takes effect at the end of the round: messages already on
    /// the wire still arrive (at a session the engine has closed).
    fn run(&mut self, devs: &mut [Dev]) {
        for _ in 0..10_000 {
            let mut moved = false;
            let mut closing = Vec::new();
            for i in 0..devs.len() {
                flush(&mut devs[i]);
                while let Some((sid, msg)) = devs[i].node.poll_transmit() {
                    let Some((j, sj)) = self.peer_end(i, sid) else {
                        continue;
                    };
                    self.sent.push((i, j, msg.clone()));
                    devs[j].node.handle_message(NOW, sj, msg).unwrap();
                    moved = true;
                }
                while let Some((sid, reason)) = devs[i].node.poll_close() {
                    self.closed.push((i, sid, reason));
                    closing.push((i, sid));
                }
                while let Some(e) = devs[i].node.poll_event() {
                    self.events.push((i, e));
                }
            }
            for (i, sid) in closing {
                let Some(at) = self
                    .links
                    .iter()
                    .position(|l| l.is_some_and(|(x, y)| x == (i, sid) || y == (i, sid)))
                else {
                    continue;
                };
                if let Some(((a, sa), (b, sb))) = self.links[at].take() {
                    devs[a].node.handle_closed(sa, "closed");
                    devs[b].node.handle_closed(sb, "closed");
                    moved = true;
                }
            }
            if !moved {
                for d in devs.iter_mut() {
                    flush(d);
                }
                return;
            }
        }
        panic!("the peers never went quiet");
    }

    /// Close a link from outside (the devices walked apart).
    fn close(&mut self, devs: &mut [Dev], link: usize) {
        if let Some(((a, sa), (b, sb))) = self.links[link].take() {
            devs[a].node.handle_closed(sa, "test");
            devs[b].node.handle_closed(sb, "test");
        }
        self.run(devs);
    }

    /// Messages from device `from` to device `to`, in order.
    fn between(&self, from: usize, to: usize) -> Vec<&Message> {
        self.sent
            .iter()
            .filter(|(f, t, _)| *f == from && *t == to)
            .map(|(_, _, m)| m)
            .collect()
    }
}

fn is_not_enrolled(m: &Message) -> bool {
    matches!(
        m,
        Message::Error {
            code: ErrorCode::NotEnrolled,
            fatal: true,
            ..
        }
    )
}

/// Enroll a device for `member` on the teacher's phone (at `NOW`).
fn enroll(c: &mut Class, device: DeviceId, member: MemberId) {
    c.teacher
        .node
        .edit(&DocId::new(c.id, DocKind::Roster), NOW, |tx, _, _| {
            roster::add_device(tx, device, member, NOW)
        })
        .unwrap();
    flush(&mut c.teacher);
}

const REMOVED_AT: i64 = NOW + 1_000;
const LATE: i64 = NOW + 2_000;

#[test]
fn a_peer_revoked_during_a_session_is_told_cut_off_and_its_late_change_is_not_applied() {
    let mut c = class();
    let (fam1, p1) = c.parents.remove(0);
    let p1_id = p1.id;
    let roster_doc = DocId::new(c.id, DocKind::Roster);
    let lane1 = DocId::new(c.id, DocKind::Lane(fam1));
    let mut devs = vec![c.teacher, p1];
    let (t, p) = (0, 1);
    let mut lan = Lan::default();
    let link = lan.link(&mut devs, t, p, [50; 32]);
    assert!(lan.open(link));
    assert!(has_key(
        &mut devs[p],
        &DocId::new(c.id, DocKind::Notebook),
        "entry"
    ));
    assert!(devs[p].node.replica().classes_of(&p1_id).contains(&c.id));

    // The parent's phone writes in its lane (dated after the revocation) while the teacher
    // revokes it on their own phone: both are on the wire at once.
    let late = put_at(
        &mut devs[p],
        lane1,
        "late",
        "written after the revocation",
        LATE,
    );
    devs[t]
        .node
        .edit(&roster_doc, REMOVED_AT, |tx, _, _| {
            roster::revoke_device(tx, p1_id, REMOVED_AT)
        })
        .unwrap();
    lan.sent.clear();
    lan.run(&mut devs);

    // The teacher's phone sent the roster (so the phone learns it was revoked), then
    // `Error { NotEnrolled }`, and closed the session.
    let to_parent = lan.between(t, p);
    let error_at = to_parent.iter().position(|m| is_not_enrolled(m));
    let roster_at = to_parent
        .iter()
        .position(|m| matches!(m, Message::Sync { doc, .. } if *doc == roster_doc));
    assert!(
        matches!((roster_at, error_at), (Some(r), Some(e)) if r < e),
        "{to_parent:?}"
    );
    assert!(!lan.open(link), "the session is closed");
    assert!(
        lan.closed
            .iter()
            .any(|(i, _, reason)| *i == t && reason.contains("NotEnrolled"))
    );
    assert!(
        !synced_docs(&to_parent.iter().map(|m| (*m).clone()).collect::<Vec<_>>())
            .iter()
            .any(|d| d.kind != DocKind::Roster),
        "nothing but the roster went to the revoked phone"
    );
    // Its late change reached a closed session: not applied.
    assert!(
        lan.between(p, t)
            .iter()
            .any(|m| matches!(m, Message::Sync { doc, .. } if *doc == lane1))
    );
    assert!(!has_key(&mut devs[t], &lane1, "late"));
    assert!(
        devs[t]
            .node
            .document(&lane1)
            .unwrap()
            .get_change_by_hash(&late)
            .is_none()
    );
    // The phone knows it was revoked.
    let r = devs[p].node.replica().roster(&c.id).cloned().unwrap();
    assert_eq!(r.inactive_since(&p1_id), Some(REMOVED_AT));

    // A new LAN handshake from it finds no class in common: refused, nothing travels.
    lan.sent.clear();
    let again = lan.link(&mut devs, t, p, [51; 32]);
    assert!(!lan.open(again));
    assert!(
        synced_docs(
            &lan.sent
                .iter()
                .map(|(_, _, m)| m.clone())
                .collect::<Vec<_>>()
        )
        .is_empty()
    );
    assert!(lan.between(t, p).iter().any(|m| is_not_enrolled(m)));
    assert!(!has_key(&mut devs[t], &lane1, "late"));
}

#[test]
fn a_member_removed_elsewhere_is_cut_off_and_its_late_change_relayed_by_another_phone_is_refused() {
    let mut c = class();
    let (fam1, p1) = c.parents.remove(0);
    let p1_id = p1.id;
    let p1_member = MemberId([100; 8]);
    // The teacher's tablet (same member as the teacher's phone) and a second guardian of
    // family 1 (another member, who stays).
    let tablet = dev(2);
    enroll(&mut c, tablet.id, MemberId([1; 8]));
    let co_guardian = dev(21);
    let co_id = co_guardian.id;
    c.teacher
        .node
        .edit(&DocId::new(c.id, DocKind::Roster), NOW, |tx, _, _| {
            roster::add_member(
                tx,
                MemberId([102; 8]),
                "Co-parent",
                &[Role::Guardian],
                Some(fam1),
            )?;
            roster::add_device(tx, co_id, MemberId([102; 8]), NOW)
        })
        .unwrap();
    let roster_doc = DocId::new(c.id, DocKind::Roster);
    let lane1 = DocId::new(c.id, DocKind::Lane(fam1));
    let mut devs = vec![c.teacher, tablet, p1, co_guardian];
    let (t, tab, p, co) = (0, 1, 2, 3);
    let mut lan = Lan::default();
    for other in [tab, co, p] {
        let l = lan.link(&mut devs, t, other, [60 + other as u8; 32]);
        lan.close(&mut devs, l);
    }
    // The parent's phone is with the teacher's phone and the co-guardian's; the tablet, also
    // connected to the teacher's phone, removes the parent (custody change) while the
    // parent's phone writes a late reply (dated after the removal): all on the wire at once.
    let to_parent = lan.link(&mut devs, t, p, [71; 32]);
    let to_tablet = lan.link(&mut devs, tab, t, [72; 32]);
    let parent_co = lan.link(&mut devs, p, co, [70; 32]);
    assert!(lan.open(to_parent) && lan.open(to_tablet) && lan.open(parent_co));
    lan.sent.clear();
    devs[tab]
        .node
        .edit(&roster_doc, REMOVED_AT, |tx, _, _| {
            roster::remove_member(tx, p1_member, REMOVED_AT)
        })
        .unwrap();
    let late = put_at(
        &mut devs[p],
        lane1,
        "late",
        "written after the removal",
        LATE,
    );
    lan.run(&mut devs);
    assert!(
        !lan.open(to_parent),
        "the removed parent's session is closed"
    );
    assert!(lan.open(to_tablet), "the tablet's session goes on");
    assert!(lan.between(t, p).iter().any(|m| is_not_enrolled(m)));
    // The late reply reached the teacher's phone only at the closed session: not applied.
    assert!(
        lan.between(p, t)
            .iter()
            .any(|m| matches!(m, Message::Sync { doc, .. } if *doc == lane1))
    );
    assert!(!has_key(&mut devs[t], &lane1, "late"));
    // The co-guardian's phone, which did not know of the removal, took it.
    assert!(has_key(&mut devs[co], &lane1, "late"));
    // The parent's phone, told of its removal, left its other session too.
    assert!(!lan.open(parent_co));
    let r = devs[p].node.replica().roster(&c.id).cloned().unwrap();
    assert_eq!(
        r.inactive_since(&p1_id),
        Some(REMOVED_AT),
        "the parent's phone was told"
    );

    // The co-guardian's phone, which does not know of the removal yet, offers the late reply
    // to the teacher's phone: refused (NotAWriter) and kept for audit, never applied.
    lan.sent.clear();
    let l = lan.link(&mut devs, t, co, [73; 32]);
    assert!(lan.between(t, co).iter().any(|m| matches!(
        m,
        Message::Reject { doc, changes, reason: RejectReason::NotAWriter }
            if *doc == lane1 && changes.contains(&late.0)
    )));
    assert!(!has_key(&mut devs[t], &lane1, "late"));
    assert!(
        devs[t]
            .audited
            .contains(&(lane1, late, RejectReason::NotAWriter))
    );
    // The co-guardian's phone, now holding the removal too, agrees and drops it.
    assert!(!has_key(&mut devs[co], &lane1, "late"));
    assert!(lan.open(l), "the co-guardian's session goes on");
    // The teacher's phone and the tablet still sync.
    put(&mut devs[tab], lane1, "after", "from the tablet");
    lan.run(&mut devs);
    assert!(has_key(&mut devs[t], &lane1, "after"));
}

#[test]
fn a_peer_revoked_in_one_of_two_shared_classes_keeps_the_other_and_its_late_upload_is_refused() {
    let mut c = class();
    let (fam1, p1) = c.parents.remove(0);
    let p1_id = p1.id;
    // A second class of the same teacher, where the same phone is enrolled too.
    let class2 = c
        .teacher
        .node
        .found_class([8; 16], "4A", MemberId([1; 8]), "Ms Li", NOW)
        .unwrap();
    let fam2 = FamilyId([9; 8]);
    c.teacher
        .node
        .edit(&DocId::new(class2, DocKind::Roster), NOW, |tx, _, _| {
            roster::add_family(tx, fam2, "Family")?;
            roster::add_member(
                tx,
                MemberId([109; 8]),
                "Parent",
                &[Role::Guardian],
                Some(fam2),
            )?;
            roster::add_device(tx, p1_id, MemberId([109; 8]), NOW)
        })
        .unwrap();
    flush(&mut c.teacher);
    let roster1 = DocId::new(c.id, DocKind::Roster);
    let lane1 = DocId::new(c.id, DocKind::Lane(fam1));
    let lane2 = DocId::new(class2, DocKind::Lane(fam2));
    let mut devs = vec![c.teacher, p1];
    let (t, p) = (0, 1);
    let mut lan = Lan::default();
    let link = lan.link(&mut devs, t, p, [80; 32]);
    assert_eq!(devs[p].node.replica().classes_of(&p1_id).len(), 2);

    // Revoked in the first class only; the phone writes there late, before it hears of it.
    devs[t]
        .node
        .edit(&roster1, REMOVED_AT, |tx, _, _| {
            roster::revoke_device(tx, p1_id, REMOVED_AT)
        })
        .unwrap();
    let late = put_at(
        &mut devs[p],
        lane1,
        "late",
        "written after the revocation",
        LATE,
    );
    lan.sent.clear();
    lan.run(&mut devs);
    assert!(
        lan.open(link),
        "the second class is still shared: the session goes on"
    );
    // Its upload is refused (NotAWriter) and kept for audit, never applied.
    assert!(
        lan.between(t, p).iter().any(|m| matches!(
            m,
            Message::Reject { doc, changes, reason: RejectReason::NotAWriter }
                if *doc == lane1 && changes.contains(&late.0)
        )),
        "{:?}",
        lan.between(t, p)
    );
    assert!(!has_key(&mut devs[t], &lane1, "late"));
    assert!(
        devs[t]
            .audited
            .contains(&(lane1, late, RejectReason::NotAWriter))
    );
    // Of the first class it got only the roster, which told it of the revocation; it agrees
    // with the refusal and drops the change.
    let from_t: Vec<Message> = lan.between(t, p).into_iter().cloned().collect();
    assert!(
        synced_docs(&from_t)
            .iter()
            .all(|d| d.class != c.id || d.kind == DocKind::Roster)
    );
    let r = devs[p].node.replica().roster(&c.id).cloned().unwrap();
    assert_eq!(r.inactive_since(&p1_id), Some(REMOVED_AT));
    assert!(!has_key(&mut devs[p], &lane1, "late"));
    // The second class still syncs both ways.
    put(&mut devs[p], lane2, "reply", "still here");
    put(&mut devs[t], lane2, "note", "hello");
    lan.run(&mut devs);
    assert!(has_key(&mut devs[t], &lane2, "reply"));
    assert!(has_key(&mut devs[p], &lane2, "note"));
    // A later teacher edit in the first class does not reach the revoked phone.
    put(&mut devs[t], lane1, "private", "not for a revoked phone");
    lan.run(&mut devs);
    assert!(!has_key(&mut devs[p], &lane1, "private"));
}
