//! Invites under simulation: joining through the relay, and one invite redeemed by two
//! devices at once (docs/invites.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use homeroom_core::invite::{InviteRole, invite_key};
use homeroom_core::roster::{self, Role};
use homeroom_core::{ClassId, DocId, DocKind, FamilyId, MemberId};
use homeroom_protocol::RejectReason;
use homeroom_sim::{NetConfig, NodeIx, Sim};
use homeroom_sync::NodeEvent;

const SECRET: [u8; 16] = [7; 16];
const FAMILY: FamilyId = FamilyId([2; 8]);

/// A teacher founds a class with one family and one guardian invite, and syncs it.
fn class_with_invite(sim: &mut Sim, relay: NodeIx) -> (ClassId, NodeIx) {
    let teacher = sim.add_device();
    let nonce = sim.nonce();
    let now = sim.now();
    let class = sim
        .node(teacher)
        .found_class(nonce, "Class 3B", MemberId([1; 8]), "Ms Li", now)
        .unwrap();
    let invite = invite_key(&SECRET).device_id();
    let me = sim.device_id(teacher).unwrap();
    sim.node(teacher)
        .edit(&DocId::new(class, DocKind::Roster), now, |tx, _, _| {
            roster::add_family(tx, FAMILY, "Wang")?;
            roster::write_invite(
                tx,
                invite,
                InviteRole::Guardian { family: FAMILY },
                now + 3_600_000,
                me,
                now,
            )
        })
        .unwrap();
    sim.settle(teacher);
    sim.connect(teacher, relay);
    assert!(sim.run_until_quiet(60_000));
    (class, teacher)
}

fn refused_used(sim: &Sim, ix: NodeIx) -> bool {
    sim.events(ix).iter().any(|e| {
        matches!(
            e,
            NodeEvent::JoinRefused {
                reason: RejectReason::InviteUsed,
                ..
            } | NodeEvent::Rejected {
                reason: RejectReason::InviteUsed,
                ours: true,
                ..
            }
        )
    })
}

#[test]
fn a_device_joins_through_the_relay_and_everyone_accepts_the_redemption() {
    let mut sim = Sim::new(11, NetConfig::default());
    let relay = sim.add_relay();
    let (class, teacher) = class_with_invite(&mut sim, relay);
    let parent = sim.add_device();
    sim.node(parent).add_join(class, SECRET, "Mr Wang");
    sim.connect(parent, relay);
    assert!(sim.run_until_quiet(60_000));
    let dev = sim.device_id(parent).unwrap();
    for ix in [relay, teacher, parent] {
        let r = sim.node(ix).replica().roster(&class).cloned().unwrap();
        let m = r.member_of(&dev).expect("enrolled everywhere");
        assert!(m.roles.contains(&Role::Guardian) && m.is_guardian_of(&FAMILY));
        assert!(r.invites.values().all(|i| i.used_by == Some(dev)));
    }
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn one_invite_redeemed_by_two_devices_at_once_enrolls_exactly_one() {
    for seed in 0..16 {
        let mut sim = Sim::new(100 + seed, NetConfig::default());
        let relay = sim.add_relay();
        let (class, teacher) = class_with_invite(&mut sim, relay);
        let x = sim.add_device();
        let y = sim.add_device();
        for d in [x, y] {
            sim.node(d).add_join(class, SECRET, "Someone");
            sim.connect(d, relay);
        }
        assert!(
            sim.run_until_quiet(60_000),
            "seed {seed}: the network goes quiet"
        );
        let (dx, dy) = (sim.device_id(x).unwrap(), sim.device_id(y).unwrap());
        let relay_roster = sim.node(relay).replica().roster(&class).cloned().unwrap();
        let enrolled: Vec<bool> = [dx, dy]
            .iter()
            .map(|d| relay_roster.member_of(d).is_some())
            .collect();
        assert_eq!(
            enrolled.iter().filter(|e| **e).count(),
            1,
            "seed {seed}: exactly one wins"
        );
        let loser = if enrolled[0] { y } else { x };
        assert!(
            refused_used(&sim, loser),
            "seed {seed}: the loser is told the invite was used: {:#?}",
            sim.events(loser)
        );
        // The teacher's roster agrees with the relay's.
        let t = sim.node(teacher).replica().roster(&class).cloned().unwrap();
        assert_eq!(t.devices.len(), relay_roster.devices.len(), "seed {seed}");
        assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    }
}

#[test]
fn a_revoked_device_is_disconnected_and_its_later_edits_are_refused() {
    let mut sim = Sim::new(21, NetConfig::default());
    let relay = sim.add_relay();
    let (class, teacher) = class_with_invite(&mut sim, relay);
    let parent = sim.add_device();
    sim.node(parent).add_join(class, SECRET, "Mr Wang");
    sim.connect(parent, relay);
    assert!(sim.run_until_quiet(60_000));
    assert!(sim.is_connected(parent));
    let dev = sim.device_id(parent).unwrap();

    // The teacher revokes the phone: the relay closes its connection.
    let now = sim.now();
    sim.node(teacher)
        .edit(&DocId::new(class, DocKind::Roster), now, |tx, _, _| {
            roster::revoke_device(tx, dev, now)
        })
        .unwrap();
    sim.settle(teacher);
    assert!(sim.run_until_quiet(60_000));
    assert!(!sim.is_connected(parent), "the revoked session is closed");

    // A modified client writes anyway and reconnects: the relay refuses it for good.
    let lane = DocId::new(class, DocKind::Lane(FAMILY));
    let now = sim.now();
    let (_, hash) = sim
        .node(parent)
        .edit_unchecked(&lane, now, |tx, _, _| {
            use homeroom_core::automerge::transaction::Transactable;
            use homeroom_core::automerge::{ObjType, ROOT};
            let m = tx.put_object(ROOT, "forged", ObjType::Map)?;
            tx.put(&m, "x", 1)?;
            Ok(())
        })
        .unwrap();
    let hash = hash.unwrap();
    sim.settle(parent);
    sim.connect(parent, relay);
    assert!(sim.run_until_quiet(60_000));
    assert!(
        sim.events(relay).iter().any(|e| matches!(
            e,
            NodeEvent::Rejected { hashes, reason: RejectReason::NotAWriter, .. } if hashes.contains(&hash)
        )),
        "the relay refused the revoked device's edit"
    );
    assert!(!sim.durable_has(relay, &lane, &hash));
    assert!(!sim.durable_has(teacher, &lane, &hash));
    // The revoked device learned of its revocation (roster-only access).
    let r = sim.node(parent).replica().roster(&class).cloned().unwrap();
    assert!(r.inactive_since(&dev).is_some());
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn a_device_that_joins_before_the_invite_reaches_the_relay_retries() {
    let mut sim = Sim::new(31, NetConfig::default());
    let relay = sim.add_relay();
    let teacher = sim.add_device();
    let nonce = sim.nonce();
    let now = sim.now();
    let class = sim
        .node(teacher)
        .found_class(nonce, "Class 3B", MemberId([1; 8]), "Ms Li", now)
        .unwrap();
    let me = sim.device_id(teacher).unwrap();
    let invite = invite_key(&SECRET).device_id();
    sim.node(teacher)
        .edit(&DocId::new(class, DocKind::Roster), now, |tx, _, _| {
            roster::add_family(tx, FAMILY, "Wang")?;
            roster::write_invite(
                tx,
                invite,
                InviteRole::Guardian { family: FAMILY },
                now + 3_600_000,
                me,
                now,
            )
        })
        .unwrap();
    sim.settle(teacher);
    // The parent is faster than the teacher's phone: the relay does not know the class yet.
    let parent = sim.add_device();
    sim.node(parent).add_join(class, SECRET, "Mr Wang");
    sim.connect(parent, relay);
    sim.run_for(3_000);
    sim.connect(teacher, relay);
    assert!(sim.run_until_quiet(60_000));
    // The simulator does not fire timers by itself: the driver's tick asks again.
    for _ in 0..3 {
        sim.run_for(1_500);
        let now = sim.now();
        sim.node(parent).handle_timeout(now);
        sim.settle(parent);
        assert!(sim.run_until_quiet(60_000));
    }
    let dev = sim.device_id(parent).unwrap();
    let r = sim.node(relay).replica().roster(&class).cloned().unwrap();
    assert!(r.member_of(&dev).is_some(), "{:#?}", sim.events(parent));
    assert!(
        sim.events(parent)
            .iter()
            .any(|e| matches!(e, NodeEvent::Joined { .. }))
    );
}

/// docs/invites.md §3, "Known gap": a removal made offline reaches the relay after a change
/// the removed author dated after it. The relay keeps that change (it applied it before it
/// knew); devices that already know of the removal refuse it (`NotAWriter`, audited), and a
/// later change that depends on it is refused there too (`DependsOnRejected`). Sync still
/// settles.
#[test]
fn a_late_change_the_relay_kept_before_an_offline_removal_is_refused_by_devices() {
    let mut sim = Sim::new(41, NetConfig::default());
    let relay = sim.add_relay();
    let (class, teacher) = class_with_invite(&mut sim, relay);
    let parent = sim.add_device();
    sim.node(parent).add_join(class, SECRET, "Mr Wang");
    sim.connect(parent, relay);
    assert!(sim.run_until_quiet(60_000));
    let dev = sim.device_id(parent).unwrap();
    // The teacher's tablet (same member), which stays online.
    let tablet = sim.add_device();
    let tablet_id = sim.device_id(tablet).unwrap();
    let roster_doc = DocId::new(class, DocKind::Roster);
    let now = sim.now();
    sim.node(teacher)
        .edit(&roster_doc, now, |tx, _, _| {
            roster::add_device(tx, tablet_id, MemberId([1; 8]), now)
        })
        .unwrap();
    sim.settle(teacher);
    assert!(sim.run_until_quiet(60_000));
    sim.connect(tablet, relay);
    assert!(sim.run_until_quiet(60_000));

    // The teacher's phone goes offline and revokes the parent's phone there.
    sim.disconnect(teacher);
    assert!(sim.run_until_quiet(60_000));
    let removed_at = sim.now();
    sim.node(teacher)
        .edit(&roster_doc, removed_at, |tx, _, _| {
            roster::revoke_device(tx, dev, removed_at)
        })
        .unwrap();
    sim.settle(teacher);
    sim.run_for(1_000);

    // The parent's phone, still online, writes after that; the relay (not knowing) keeps it
    // and the tablet builds on it.
    let lane = DocId::new(class, DocKind::Lane(FAMILY));
    let put = |sim: &mut Sim, ix: NodeIx, key: &'static str| {
        let now = sim.now();
        let (_, hash) = sim
            .node(ix)
            .edit(&lane, now, move |tx, _, _| {
                use homeroom_core::automerge::ROOT;
                use homeroom_core::automerge::transaction::Transactable;
                tx.put(ROOT, key, now)?;
                Ok(())
            })
            .unwrap();
        sim.settle(ix);
        hash.unwrap()
    };
    let late = put(&mut sim, parent, "late");
    assert!(sim.run_until_quiet(60_000));
    let built_on = put(&mut sim, tablet, "answer");
    assert!(sim.run_until_quiet(60_000));
    assert!(sim.durable_has(relay, &lane, &late));
    assert!(sim.durable_has(relay, &lane, &built_on));
    assert!(sim.durable_has(tablet, &lane, &late));

    // The teacher's phone comes back: its removal reaches the relay, which closes the parent's
    // session; the relay keeps what it had, the teacher's phone refuses it.
    sim.connect(teacher, relay);
    assert!(
        sim.run_until_quiet(60_000),
        "sync settles (no endless heads-only exchange)"
    );
    assert!(!sim.is_connected(parent), "the revoked session is closed");
    assert!(sim.durable_has(relay, &lane, &late), "the relay keeps it");
    assert!(!sim.durable_has(teacher, &lane, &late));
    assert!(!sim.durable_has(teacher, &lane, &built_on));
    let refused = |sim: &Sim, reason: RejectReason, hash| {
        sim.events(teacher).iter().any(|e| {
            matches!(
                e,
                NodeEvent::Rejected { hashes, reason: r, ours: false, .. }
                    if *r == reason && hashes.contains(&hash)
            )
        })
    };
    // One refusal: the late change (NotAWriter) and what was built on it with it.
    assert!(
        refused(&sim, RejectReason::NotAWriter, late)
            && refused(&sim, RejectReason::NotAWriter, built_on),
        "{:#?}",
        sim.events(teacher)
    );
    let stats = sim.node(teacher).replica_mut().doc_stats(&lane).unwrap();
    assert_eq!(stats.rejected, 2);
    // A later change built on them reaches the teacher's phone on its own: DependsOnRejected.
    let later = put(&mut sim, tablet, "later");
    assert!(sim.run_until_quiet(60_000), "sync settles");
    assert!(sim.durable_has(relay, &lane, &later));
    assert!(!sim.durable_has(teacher, &lane, &later));
    assert!(refused(&sim, RejectReason::DependsOnRejected, later));
    // The lane itself still carries the teacher's new changes, and other documents sync.
    let from_teacher = put(&mut sim, teacher, "teacher_note");
    assert!(sim.run_until_quiet(60_000), "sync settles");
    assert!(sim.durable_has(relay, &lane, &from_teacher));
    assert!(sim.durable_has(tablet, &lane, &from_teacher));
    let nb = DocId::new(class, DocKind::Notebook);
    let now = sim.now();
    let (_, posted) = sim
        .node(teacher)
        .edit(&nb, now, |tx, _, _| {
            use homeroom_core::automerge::ROOT;
            use homeroom_core::automerge::transaction::Transactable;
            tx.put(ROOT, "after", 1)?;
            Ok(())
        })
        .unwrap();
    sim.settle(teacher);
    assert!(sim.run_until_quiet(60_000));
    assert!(sim.durable_has(tablet, &nb, &posted.unwrap()));
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}
