//! Removal wins in the NotebookView and in the other readers (the private thread and contact
//! records, the committee board and the principal's mailbox, moderation marks): what a removed
//! member or a revoked device wrote dated after the removal is hidden, though it stays in the
//! document; what they wrote before is kept (staff) — docs/invites.md §3.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod view_support;

use homeroom_core::committee::{self, NewPost};
use homeroom_core::entries::{self, Moderation, ReplyScope, Visibility};
use homeroom_core::ids::SeededIds;
use homeroom_core::roster;
use homeroom_core::thread::{self, ContactKind, NewContact};
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

#[test]
fn the_private_thread_and_contact_records_hide_a_removed_teachers_late_items() {
    let mut c = Class::new();
    let t2 = c.teacher2;
    let mut lane = c.replica(DocKind::Lane(c.fam_a), &t2);
    let message = |at: i64, seed: u64, text: &'static str| {
        move |tx: &mut homeroom_core::automerge::transaction::Transaction<'_>, c: &Class| {
            thread::post_thread_message(
                tx,
                &c.actor_at(t2, at),
                &mut SeededIds::new(seed),
                c.fam_a,
                text,
            )
        }
    };
    let early = write(&mut lane, |tx| message(BEFORE, 1, "Before")(tx, &c)).unwrap();
    let late = write(&mut lane, |tx| message(AFTER, 2, "After")(tx, &c)).unwrap();
    // The family's message, from a guardian's own phone (authorship is the writing device).
    let mut lane_a1 = c.replica(DocKind::Lane(c.fam_a), &c.a1);
    let from_family = write(&mut lane_a1, |tx| {
        thread::post_thread_message(
            tx,
            &c.actor_at(c.a1, AFTER),
            &mut SeededIds::new(3),
            c.fam_a,
            "Thanks",
        )
    })
    .unwrap();
    sync(&mut lane, &lane_a1);
    let contact = |at: i64, seed: u64| {
        move |tx: &mut homeroom_core::automerge::transaction::Transaction<'_>, c: &Class| {
            thread::record_contact(
                tx,
                &c.actor_at(t2, at),
                &mut SeededIds::new(seed),
                &NewContact {
                    kind: ContactKind::PhoneCall,
                    occurred_at: BEFORE,
                    duration_minutes: Some(10),
                    notes: "",
                },
            )
        }
    };
    let early_contact = write(&mut lane, |tx| contact(BEFORE, 4)(tx, &c)).unwrap();
    write(&mut lane, |tx| contact(AFTER, 5)(tx, &c)).unwrap();
    let ids = |msgs: Vec<thread::ThreadMessage>| msgs.into_iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(
        ids(thread::read_thread(&lane, &c.roster, c.fam_a).unwrap()),
        vec![early, late, from_family]
    );
    assert_eq!(thread::read_contacts(&lane, &c.roster).unwrap().len(), 2);
    let before_removal = c.roster.clone();

    c.change_roster(|tx| roster::remove_member(tx, MemberId([2; 8]), REMOVED_AT));
    assert_eq!(
        ids(thread::read_thread(&lane, &c.roster, c.fam_a).unwrap()),
        vec![early, from_family],
        "the late staff message is hidden"
    );
    let contacts = thread::read_contacts(&lane, &c.roster).unwrap();
    assert_eq!(
        contacts.iter().map(|x| x.id).collect::<Vec<_>>(),
        vec![early_contact],
        "the late contact record is hidden"
    );
    assert_eq!(
        thread::contact_stats(&lane, &c.roster, NOW..AFTER + 1)
            .unwrap()
            .phone_calls,
        1
    );
    // Kept in the document: read against the roster of before the removal, all are there.
    assert_eq!(
        thread::read_thread(&lane, &before_removal, c.fam_a)
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        thread::read_contacts(&lane, &before_removal).unwrap().len(),
        2
    );
}

#[test]
fn the_committee_board_and_the_mailbox_hide_late_posts_of_removed_staff() {
    let mut c = Class::new();
    let t2 = c.teacher2;
    let principal = c.principal;
    let mut board = c.replica(DocKind::Committee, &t2);
    let post = |device, at: i64, seed: u64, text: &'static str| {
        move |tx: &mut homeroom_core::automerge::transaction::Transaction<'_>, c: &Class| {
            committee::post_to_committee(
                tx,
                &c.actor_at(device, at),
                &mut SeededIds::new(seed),
                &NewPost {
                    title: "",
                    text,
                    reply_to: None,
                },
            )
        }
    };
    let early = write(&mut board, |tx| post(t2, BEFORE, 1, "Before")(tx, &c)).unwrap();
    let late = write(&mut board, |tx| post(t2, AFTER, 2, "After")(tx, &c)).unwrap();
    let mut board_c1 = c.replica(DocKind::Committee, &c.c1);
    let member_post = write(&mut board_c1, |tx| {
        post(c.c1, AFTER, 3, "Bake sale")(tx, &c)
    })
    .unwrap();
    sync(&mut board, &board_c1);
    let mut mailbox = c.replica(DocKind::Mailbox(c.fam_b), &principal);
    let answer = |at: i64, seed: u64, text: &'static str| {
        move |tx: &mut homeroom_core::automerge::transaction::Transaction<'_>, c: &Class| {
            committee::send_to_mailbox(
                tx,
                &c.actor_at(principal, at),
                &mut SeededIds::new(seed),
                c.fam_b,
                text,
            )
        }
    };
    let early_answer = write(&mut mailbox, |tx| answer(BEFORE, 4, "Before")(tx, &c)).unwrap();
    let late_answer = write(&mut mailbox, |tx| answer(AFTER, 5, "After")(tx, &c)).unwrap();
    let posts = |c: &Class, b: &homeroom_core::automerge::Automerge| {
        committee::read_committee_posts(b, &c.roster)
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect::<Vec<_>>()
    };
    let messages = |c: &Class, m: &homeroom_core::automerge::Automerge| {
        committee::read_mailbox(m, &c.roster, c.fam_b)
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(posts(&c, &board), vec![early, late, member_post]);
    assert_eq!(messages(&c, &mailbox), vec![early_answer, late_answer]);

    // The second teacher is removed; the principal's phone is lost and revoked.
    c.change_roster(|tx| roster::remove_member(tx, MemberId([2; 8]), REMOVED_AT));
    c.change_roster(|tx| roster::revoke_device(tx, principal, REMOVED_AT));
    assert_eq!(
        posts(&c, &board),
        vec![early, member_post],
        "the late staff post is hidden"
    );
    assert_eq!(
        messages(&c, &mailbox),
        vec![early_answer],
        "the late answer from the revoked phone is hidden"
    );
    // Kept in the documents.
    let stored = homeroom_core::automerge::ReadDoc::keys(
        &board,
        homeroom_core::automerge::ReadDoc::get(&board, homeroom_core::automerge::ROOT, "posts")
            .unwrap()
            .unwrap()
            .1,
    )
    .count();
    assert_eq!(stored, 3);
}

#[test]
fn moderation_marks_of_a_removed_teacher_dated_after_the_removal_do_not_count() {
    let mut c = Class::new();
    let t2 = c.teacher2;
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
    let mut board = c.replica(DocKind::Board(c.fam_a), &c.a1);
    let reply = |seed: u64, text: &'static str| {
        move |tx: &mut homeroom_core::automerge::transaction::Transaction<'_>,
              c: &Class,
              nb: &homeroom_core::automerge::Automerge| {
            entries::post_reply(
                tx,
                &c.actor(c.a1),
                &mut SeededIds::new(seed),
                nb,
                ReplyScope::Public,
                posted.entry,
                text,
            )
        }
    };
    let r1 = write(&mut board, |tx| reply(2, "First")(tx, &c, &nb)).unwrap();
    let r2 = write(&mut board, |tx| reply(3, "Second")(tx, &c, &nb)).unwrap();
    let r3 = write(&mut board, |tx| reply(4, "Third")(tx, &c, &nb)).unwrap();
    // The second teacher's phone moderates: r1 before the removal, r2 after (offline), and
    // purges r3 after, concurrently with the head teacher hiding r3.
    let mut nb2 = c.replica(DocKind::Notebook, &t2);
    sync(&mut nb2, &nb);
    for (at, r, m) in [
        (BEFORE, r1, Moderation::Hide),
        (AFTER, r2, Moderation::Hide),
        (AFTER, r3, Moderation::Purge),
    ] {
        write(&mut nb2, |tx| {
            entries::moderate_reply(tx, &c.actor_at(t2, at), &board, r, m)
        })
        .unwrap();
    }
    write(&mut nb, |tx| {
        entries::moderate_reply(tx, &c.actor(c.teacher), &board, r3, Moderation::Hide)
    })
    .unwrap();
    sync(&mut nb, &nb2);
    let marks = entries::read_moderation(&nb, &c.roster).unwrap();
    assert_eq!(marks.get(&r1), Some(&Visibility::HiddenByModerator));
    assert_eq!(marks.get(&r2), Some(&Visibility::HiddenByModerator));
    assert_eq!(marks.get(&r3), Some(&Visibility::Purged));
    let before_removal = c.roster.clone();

    c.change_roster(|tx| roster::remove_member(tx, MemberId([2; 8]), REMOVED_AT));
    let marks = entries::read_moderation(&nb, &c.roster).unwrap();
    assert_eq!(
        marks.get(&r1),
        Some(&Visibility::HiddenByModerator),
        "a mark made before the removal stays"
    );
    assert_eq!(
        marks.get(&r2),
        None,
        "a mark made after the removal is void"
    );
    assert_eq!(
        marks.get(&r3),
        Some(&Visibility::HiddenByModerator),
        "the late purge is void; the head teacher's concurrent mark stands"
    );
    // The view follows: another family's guardian reads r2 again, not r1.
    let view = c.view(&c.b1, &nb, &[], &[(c.fam_a, &board)]);
    let e = view.entry(posted.entry).unwrap();
    let shown = |id| {
        e.public_replies
            .iter()
            .find(|r| r.id == id)
            .map(|r| (r.visibility, r.text.is_some()))
    };
    assert_eq!(shown(r1), Some((Visibility::HiddenByModerator, false)));
    assert_eq!(shown(r2), Some((Visibility::Visible, true)));
    assert_eq!(shown(r3), Some((Visibility::HiddenByModerator, false)));
    // Kept in the Notebook: read against the roster of before the removal, all count.
    let marks = entries::read_moderation(&nb, &before_removal).unwrap();
    assert_eq!(marks.get(&r2), Some(&Visibility::HiddenByModerator));
    assert_eq!(marks.get(&r3), Some(&Visibility::Purged));
}
