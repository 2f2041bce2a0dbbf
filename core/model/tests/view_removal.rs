//! Removal wins in the NotebookView: what a removed member or a revoked device wrote dated
//! after the removal is hidden, though it stays in the document; what they wrote before is
//! kept (staff) — docs/invites.md §3.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod view_support;

use homeroom_core::entries::{self, ReplyScope};
use homeroom_core::ids::SeededIds;
use homeroom_core::roster;
use homeroom_core::view::SignatureStatus;
use homeroom_core::{DocKind, MemberId};
use view_support::*;

/// When the second teacher (member 2) is removed, in the tests below.
const REMOVED_AT: i64 = NOW + 5_000;
const BEFORE: i64 = NOW + 1_000;
const AFTER: i64 = NOW + 10_000;

#[test]
fn a_removed_teachers_items_dated_after_the_removal_are_hidden_but_kept() {
    let mut c = Class::new();
    let t2 = c.teacher2;
    let mut nb = c.replica(DocKind::Notebook, &t2);
    // Written while the roster still showed them active (e.g. offline): one entry before the
    // removal, one after; a revision of the first dated after.
    let kept = write(&mut nb, |tx| {
        entries::post_entry(
            tx,
            &c.actor_at(t2, BEFORE),
            &mut SeededIds::new(1),
            &whole_class_entry("Field trip"),
        )
    })
    .unwrap();
    let late = write(&mut nb, |tx| {
        entries::post_entry(
            tx,
            &c.actor_at(t2, AFTER),
            &mut SeededIds::new(2),
            &whole_class_entry("Written after the removal"),
        )
    })
    .unwrap();
    let late_revision = write(&mut nb, |tx| {
        entries::edit_entry(
            tx,
            &c.actor_at(t2, AFTER),
            &mut SeededIds::new(3),
            kept.entry,
            "Notice",
            "Changed after the removal",
            true,
        )
    })
    .unwrap();
    // Private replies in family A's lane, one before and one after.
    let mut lane = c.replica(DocKind::Lane(c.fam_a), &t2);
    let early_reply = write(&mut lane, |tx| {
        entries::post_reply(
            tx,
            &c.actor_at(t2, BEFORE),
            &mut SeededIds::new(4),
            &nb,
            ReplyScope::Private,
            kept.entry,
            "Before",
        )
    })
    .unwrap();
    let late_reply = write(&mut lane, |tx| {
        entries::post_reply(
            tx,
            &c.actor_at(t2, AFTER),
            &mut SeededIds::new(5),
            &nb,
            ReplyScope::Private,
            kept.entry,
            "After",
        )
    })
    .unwrap();

    // Before the removal, everything shows.
    let view = c.view(&c.teacher, &nb, &[(c.fam_a, &lane)], &[]);
    assert_eq!(view.entries.len(), 2);
    assert_eq!(view.entry(kept.entry).unwrap().latest.id, late_revision);
    assert_eq!(view.entry(kept.entry).unwrap().private_replies.len(), 2);

    c.change_roster(|tx| roster::remove_member(tx, MemberId([2; 8]), REMOVED_AT));
    for viewer in [c.teacher, c.a1] {
        let view = c.view(&viewer, &nb, &[(c.fam_a, &lane)], &[]);
        assert!(view.entry(late.entry).is_none(), "the late entry is hidden");
        let e = view.entry(kept.entry).expect("the earlier entry stays");
        assert_eq!(e.latest.id, kept.revision, "the late revision is hidden");
        assert_eq!(e.revisions.len(), 1);
        let replies: Vec<_> = e.private_replies.iter().map(|r| r.id).collect();
        assert_eq!(replies, vec![early_reply], "the late reply is hidden");
    }
    // Kept in the documents.
    assert_eq!(entries::read_entries(&nb).unwrap().len(), 2);
    assert_eq!(
        entries::read_entry(&nb, kept.entry)
            .unwrap()
            .revisions
            .len(),
        2
    );
    let stored: Vec<_> = entries::read_replies(&lane, &c.roster)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert!(stored.contains(&late_reply) && stored.contains(&early_reply));
}

#[test]
fn a_revoked_teacher_device_and_a_revoked_guardian_device_show_nothing_late() {
    let mut c = Class::new();
    let t2 = c.teacher2;
    let a1 = c.a1;
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
    // The second teacher's phone edits after it is revoked; a guardian's phone signs after
    // it is revoked.
    let mut nb2 = c.replica(DocKind::Notebook, &t2);
    sync(&mut nb2, &nb);
    write(&mut nb2, |tx| {
        entries::edit_entry(
            tx,
            &c.actor_at(t2, AFTER),
            &mut SeededIds::new(2),
            posted.entry,
            "Notice",
            "From a lost phone",
            true,
        )
    })
    .unwrap();
    sync(&mut nb, &nb2);
    let mut lane = c.replica(DocKind::Lane(c.fam_a), &a1);
    write(&mut lane, |tx| {
        entries::sign_entry(
            tx,
            &c.actor_at(a1, AFTER),
            &mut SeededIds::new(3),
            &nb,
            posted.entry,
            posted.revision,
            None,
        )
    })
    .unwrap();
    c.change_roster(|tx| roster::revoke_device(tx, t2, REMOVED_AT));
    c.change_roster(|tx| roster::revoke_device(tx, a1, REMOVED_AT));

    let view = c.view(&c.teacher, &nb, &[(c.fam_a, &lane)], &[]);
    let e = view.entry(posted.entry).unwrap();
    assert_eq!(
        e.latest.id, posted.revision,
        "the lost phone's edit is hidden"
    );
    assert_eq!(e.families[&c.fam_a].status, SignatureStatus::Unsigned);
    assert!(e.signatures_of(&c.fam_a).is_empty());
    // Both stay in the documents.
    assert_eq!(
        entries::read_entry(&nb, posted.entry)
            .unwrap()
            .revisions
            .len(),
        2
    );
    assert_eq!(entries::read_signatures(&lane).unwrap().len(), 1);
}
