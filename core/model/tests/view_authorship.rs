//! Who counts in the NotebookView: authorship is read from operation ids and checked against
//! the roster; and what each viewer is allowed to see.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod view_support;

use homeroom_core::automerge::Automerge;
use homeroom_core::entries::{
    self, ConsentAnswer, ConsentPolicy, Moderation, PostedEntry, ReplyScope, Visibility,
};
use homeroom_core::ids::SeededIds;
use homeroom_core::roster;
use homeroom_core::view::{SignatureStatus, ViewerRole};
use homeroom_core::{DocKind, FamilyId};
use view_support::*;

fn posted_notebook(c: &Class) -> (Automerge, PostedEntry) {
    let mut nb = c.replica(DocKind::Notebook, &c.teacher);
    let posted = write(&mut nb, |tx| {
        entries::post_entry(
            tx,
            &c.actor(c.teacher),
            &mut SeededIds::new(1),
            &whole_class_entry("Field trip"),
        )
    })
    .unwrap();
    (nb, posted)
}

fn status_of(
    c: &Class,
    nb: &Automerge,
    lanes: &[(FamilyId, &Automerge)],
    family: FamilyId,
) -> SignatureStatus {
    c.view(&c.teacher, nb, lanes, &[]).entries[0].families[&family].status
}

#[test]
fn a_genuine_guardian_signature_counts() {
    let c = Class::new();
    let (nb, posted) = posted_notebook(&c);
    let mut lane = c.replica(DocKind::Lane(c.fam_a), &c.a1);
    write(&mut lane, |tx| {
        entries::sign_entry(
            tx,
            &c.actor(c.a1),
            &mut SeededIds::new(2),
            &nb,
            posted.entry,
            posted.revision,
            None,
        )
    })
    .unwrap();
    let status = status_of(&c, &nb, &[(c.fam_a, &lane)], c.fam_a);
    assert_eq!(
        status,
        SignatureStatus::Signed {
            revision: posted.revision,
            carried_forward: false
        }
    );
    // The same lane handed in twice is read once.
    let view = c.view(&c.teacher, &nb, &[(c.fam_a, &lane), (c.fam_a, &lane)], &[]);
    let e = &view.entries[0];
    assert_eq!(e.signatures_of(&c.fam_a).len(), 1);
    assert_eq!(e.signatures_of(&c.fam_a)[0].member, c.member_a1);
    assert_eq!(e.signatures_of(&c.fam_b).len(), 0);
}

#[test]
fn a_signature_written_by_a_teacher_device_does_not_count() {
    let c = Class::new();
    let (nb, posted) = posted_notebook(&c);
    // The teacher's phone writes a signature claiming to be guardian a1 (the content and the
    // acting context say a1, but the change is the teacher's).
    let mut lane = c.replica(DocKind::Lane(c.fam_a), &c.teacher);
    write(&mut lane, |tx| {
        entries::sign_entry(
            tx,
            &c.actor(c.a1),
            &mut SeededIds::new(2),
            &nb,
            posted.entry,
            posted.revision,
            None,
        )
    })
    .unwrap();
    assert_eq!(
        entries::read_signatures(&lane).unwrap().len(),
        1,
        "the record is there"
    );
    assert_eq!(
        status_of(&c, &nb, &[(c.fam_a, &lane)], c.fam_a),
        SignatureStatus::Unsigned
    );
    let view = c.view(&c.teacher, &nb, &[(c.fam_a, &lane)], &[]);
    assert!(view.entries[0].signatures_of(&c.fam_a).is_empty());
    assert_eq!(view.entries[0].families[&c.fam_a].signature_count, 0);
    assert!(
        view.entries[0]
            .signing
            .as_ref()
            .unwrap()
            .unsigned
            .contains(&c.fam_a)
    );
}

#[test]
fn a_signature_by_another_familys_guardian_does_not_count() {
    let c = Class::new();
    let (nb, posted) = posted_notebook(&c);
    // Guardian b1 writes into family A's lane: once as themself, once pretending to be a1.
    let mut lane = c.replica(DocKind::Lane(c.fam_a), &c.b1);
    write(&mut lane, |tx| {
        entries::sign_entry(
            tx,
            &c.actor(c.b1),
            &mut SeededIds::new(2),
            &nb,
            posted.entry,
            posted.revision,
            None,
        )
    })
    .unwrap();
    write(&mut lane, |tx| {
        entries::sign_entry(
            tx,
            &c.actor(c.a1),
            &mut SeededIds::new(3),
            &nb,
            posted.entry,
            posted.revision,
            None,
        )
    })
    .unwrap();
    assert_eq!(entries::read_signatures(&lane).unwrap().len(), 2);
    assert_eq!(
        status_of(&c, &nb, &[(c.fam_a, &lane)], c.fam_a),
        SignatureStatus::Unsigned
    );
    // Nor does it count for b1's own family: it is not in family B's lane.
    assert_eq!(
        status_of(&c, &nb, &[(c.fam_a, &lane)], c.fam_b),
        SignatureStatus::Unsigned
    );
}

#[test]
fn a_signature_from_a_revoked_device_or_removed_guardian_does_not_count() {
    let mut c = Class::new();
    let (nb, posted) = posted_notebook(&c);
    let mut lane = c.replica(DocKind::Lane(c.fam_a), &c.a1);
    write(&mut lane, |tx| {
        entries::sign_entry(
            tx,
            &c.actor(c.a1),
            &mut SeededIds::new(2),
            &nb,
            posted.entry,
            posted.revision,
            None,
        )
    })
    .unwrap();
    assert!(matches!(
        status_of(&c, &nb, &[(c.fam_a, &lane)], c.fam_a),
        SignatureStatus::Signed { .. }
    ));
    let a1 = c.a1;
    c.change_roster(|tx| roster::revoke_device(tx, a1, NOW + 1));
    assert_eq!(
        status_of(&c, &nb, &[(c.fam_a, &lane)], c.fam_a),
        SignatureStatus::Unsigned
    );

    let mut c = Class::new();
    let mut lane = c.replica(DocKind::Lane(c.fam_a), &c.a2);
    write(&mut lane, |tx| {
        entries::sign_entry(
            tx,
            &c.actor(c.a2),
            &mut SeededIds::new(2),
            &nb,
            posted.entry,
            posted.revision,
            None,
        )
    })
    .unwrap();
    let m = c.member_a2;
    c.change_roster(|tx| roster::remove_member(tx, m, NOW + 1));
    assert_eq!(
        status_of(&c, &nb, &[(c.fam_a, &lane)], c.fam_a),
        SignatureStatus::Unsigned
    );
}

#[test]
fn a_receipt_or_reply_by_a_non_guardian_does_not_count() {
    let c = Class::new();
    let (nb, posted) = posted_notebook(&c);
    // b1 marks read and posts a public reply inside family A's lane and board.
    let mut lane = c.replica(DocKind::Lane(c.fam_a), &c.b1);
    write(&mut lane, |tx| {
        entries::mark_read(tx, &c.actor(c.b1), &nb, posted.entry)
    })
    .unwrap();
    let mut board = c.replica(DocKind::Board(c.fam_a), &c.b1);
    write(&mut board, |tx| {
        entries::post_reply(
            tx,
            &c.actor(c.b1),
            &mut SeededIds::new(3),
            &nb,
            ReplyScope::Public,
            posted.entry,
            "pretending to be A",
        )
    })
    .unwrap();
    let view = c.view(&c.teacher, &nb, &[(c.fam_a, &lane)], &[(c.fam_a, &board)]);
    let e = &view.entries[0];
    assert!(!e.families[&c.fam_a].read);
    assert!(e.signing.as_ref().unwrap().unread.contains(&c.fam_a));
    assert!(e.public_replies.is_empty());

    // The genuine guardian's receipt counts.
    let mut lane = c.replica(DocKind::Lane(c.fam_a), &c.a2);
    assert!(
        write(&mut lane, |tx| entries::mark_read(
            tx,
            &c.actor(c.a2),
            &nb,
            posted.entry
        ))
        .unwrap()
    );
    assert!(
        !write(&mut lane, |tx| entries::mark_read(
            tx,
            &c.actor(c.a2),
            &nb,
            posted.entry
        ))
        .unwrap(),
        "idempotent"
    );
    let view = c.view(&c.teacher, &nb, &[(c.fam_a, &lane)], &[]);
    assert!(view.entries[0].families[&c.fam_a].read);
    assert!(
        !view.entries[0]
            .signing
            .as_ref()
            .unwrap()
            .unread
            .contains(&c.fam_a)
    );
}

#[test]
fn a_moderation_mark_or_entry_written_by_a_guardian_does_not_count() {
    let c = Class::new();
    let (nb_t, posted) = posted_notebook(&c);
    let mut board = c.replica(DocKind::Board(c.fam_b), &c.b1);
    let reply = write(&mut board, |tx| {
        entries::post_reply(
            tx,
            &c.actor(c.b1),
            &mut SeededIds::new(3),
            &nb_t,
            ReplyScope::Public,
            posted.entry,
            "hello",
        )
    })
    .unwrap();
    // A guardian's device forges a moderation mark and an entry in its notebook replica,
    // acting in the teacher's name.
    let mut nb_g = c.replica(DocKind::Notebook, &c.a1);
    sync(&mut nb_g, &nb_t);
    write(&mut nb_g, |tx| {
        entries::moderate_reply(tx, &c.actor(c.teacher), &board, reply, Moderation::Purge)
    })
    .unwrap();
    let forged = write(&mut nb_g, |tx| {
        entries::post_entry(
            tx,
            &c.actor(c.teacher),
            &mut SeededIds::new(4),
            &whole_class_entry("forged"),
        )
    })
    .unwrap();
    assert!(
        entries::read_entry(&nb_g, forged.entry).is_ok(),
        "the forged entry is in the document"
    );
    let view = c.view(&c.teacher, &nb_g, &[], &[(c.fam_b, &board)]);
    assert_eq!(view.entries.len(), 1, "the forged entry is not shown");
    assert_eq!(
        view.entries[0].public_replies[0].visibility,
        Visibility::Visible
    );
    assert_eq!(
        view.entries[0].public_replies[0].text.as_deref(),
        Some("hello")
    );
}

#[test]
fn a_parents_view_has_no_list_of_other_families() {
    let c = Class::new();
    let mut ids = SeededIds::new(7);
    let mut nb = c.replica(DocKind::Notebook, &c.teacher);
    let posted = write(&mut nb, |tx| {
        entries::post_entry(
            tx,
            &c.actor(c.teacher),
            &mut ids,
            &consent_entry("Trip", ConsentPolicy::DeclineWins),
        )
    })
    .unwrap();
    // An entry only for family B's student.
    let mut only_b = whole_class_entry("About your child");
    only_b.audience = students(&[c.student_b]);
    let private = write(&mut nb, |tx| {
        entries::post_entry(tx, &c.actor(c.teacher), &mut ids, &only_b)
    })
    .unwrap();
    let mut lane_a = c.replica(DocKind::Lane(c.fam_a), &c.a1);
    let mut lane_b = c.replica(DocKind::Lane(c.fam_b), &c.b1);
    write(&mut lane_a, |tx| {
        entries::sign_entry(
            tx,
            &c.actor(c.a1),
            &mut ids,
            &nb,
            posted.entry,
            posted.revision,
            Some(ConsentAnswer::Allow),
        )
    })
    .unwrap();
    let private_reply = write(&mut lane_b, |tx| {
        entries::post_reply(
            tx,
            &c.actor(c.b1),
            &mut ids,
            &nb,
            ReplyScope::Private,
            posted.entry,
            "private to teacher",
        )
    })
    .unwrap();
    let lanes = [(c.fam_a, &lane_a), (c.fam_b, &lane_b)];

    // Parent a1, even if handed family B's lane by mistake.
    let parent = c.view(&c.a1, &nb, &lanes, &[]);
    assert_eq!(parent.viewer.role, ViewerRole::Guardian(c.fam_a));
    assert_eq!(
        parent.entries.len(),
        1,
        "entries for other families' students are not shown"
    );
    let e = &parent.entries[0];
    assert!(
        e.signing.is_none(),
        "no who-has/hasn't-signed summary for parents"
    );
    assert_eq!(
        e.families.keys().copied().collect::<Vec<_>>(),
        vec![c.fam_a]
    );
    assert!(matches!(
        e.families[&c.fam_a].status,
        SignatureStatus::Signed { .. }
    ));
    assert!(
        e.private_replies.is_empty(),
        "another family's private reply is not shown"
    );

    // The teacher sees everything.
    let staff = c.view(&c.teacher, &nb, &lanes, &[]);
    assert_eq!(staff.entries.len(), 2);
    let e = staff.entry(posted.entry).unwrap();
    assert_eq!(e.families.len(), 3);
    let s = e.signing.as_ref().unwrap();
    assert_eq!(s.signed, vec![c.fam_a]);
    assert_eq!(s.unsigned, vec![c.fam_b, c.fam_c]);
    assert_eq!(e.private_replies.len(), 1);
    assert_eq!(e.private_replies[0].id, private_reply);
    let p = staff.entry(private.entry).unwrap();
    assert_eq!(
        p.families.keys().copied().collect::<Vec<_>>(),
        vec![c.fam_b],
        "only the addressed family"
    );

    // Parent b1 sees their own private reply and the entry addressed to them.
    let parent_b = c.view(&c.b1, &nb, &[(c.fam_b, &lane_b)], &[]);
    assert_eq!(parent_b.entries.len(), 2);
    assert_eq!(
        parent_b.entry(posted.entry).unwrap().private_replies.len(),
        1
    );
}

#[test]
fn a_teacher_can_answer_privately_in_a_familys_lane() {
    let c = Class::new();
    let (nb, posted) = posted_notebook(&c);
    let mut lane = c.replica(DocKind::Lane(c.fam_a), &c.teacher);
    write(&mut lane, |tx| {
        entries::post_reply(
            tx,
            &c.actor(c.teacher),
            &mut SeededIds::new(5),
            &nb,
            ReplyScope::Private,
            posted.entry,
            "thanks",
        )
    })
    .unwrap();
    let view = c.view(&c.a1, &nb, &[(c.fam_a, &lane)], &[]);
    let r = &view.entries[0].private_replies[0];
    assert!(r.from_staff);
    assert_eq!(r.text.as_deref(), Some("thanks"));
}
