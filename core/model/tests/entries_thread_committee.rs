//! The private teacher–family thread, contact records and statistics, the committee board and
//! the principal's mailbox.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod view_support;

use homeroom_core::committee::{self, NewPost};
use homeroom_core::ids::SeededIds;
use homeroom_core::thread::{self, ContactKind, ContactStats, NewContact};
use homeroom_core::{DocKind, ItemId, ModelError};
use view_support::*;

const DAY: i64 = 86_400_000;

fn contact(kind: ContactKind, occurred_at: i64) -> NewContact<'static> {
    NewContact {
        kind,
        occurred_at,
        duration_minutes: Some(30),
        notes: "talked about reading",
    }
}

#[test]
fn thread_messages_from_both_sides_merge_in_time_order() {
    let c = Class::new();
    let mut lane_t = c.replica(DocKind::Lane(c.fam_a), &c.teacher);
    let mut lane_a = c.replica(DocKind::Lane(c.fam_a), &c.a1);
    write(&mut lane_t, |tx| {
        thread::post_thread_message(
            tx,
            &c.actor_at(c.teacher, NOW + 2),
            &mut SeededIds::new(1),
            c.fam_a,
            "How is Ming?",
        )
    })
    .unwrap();
    write(&mut lane_a, |tx| {
        thread::post_thread_message(
            tx,
            &c.actor_at(c.a1, NOW + 1),
            &mut SeededIds::new(2),
            c.fam_a,
            "Ming is ill today",
        )
    })
    .unwrap();
    // Another family's guardian cannot post here.
    assert!(matches!(
        write(&mut lane_a, |tx| thread::post_thread_message(
            tx,
            &c.actor(c.b1),
            &mut SeededIds::new(3),
            c.fam_a,
            "hi"
        )),
        Err(ModelError::NotAllowed(_))
    ));
    assert!(matches!(
        write(&mut lane_a, |tx| thread::post_thread_message(
            tx,
            &c.actor(c.a1),
            &mut SeededIds::new(3),
            c.fam_a,
            ""
        )),
        Err(ModelError::InvalidInput { field: "text", .. })
    ));
    sync(&mut lane_t, &lane_a);
    sync(&mut lane_a, &lane_t);
    let msgs = thread::read_thread(&lane_t, &c.roster, c.fam_a).unwrap();
    assert_eq!(
        msgs,
        thread::read_thread(&lane_a, &c.roster, c.fam_a).unwrap()
    );
    let texts: Vec<_> = msgs
        .iter()
        .map(|m| (m.text.as_str(), m.from_staff))
        .collect();
    assert_eq!(
        texts,
        vec![("Ming is ill today", false), ("How is Ming?", true)]
    );
    assert_eq!(msgs[0].member, c.member_a1);

    // A message written into the lane by another family's device does not show.
    let mut forged = c.replica(DocKind::Lane(c.fam_a), &c.b1);
    sync(&mut forged, &lane_a);
    write(&mut forged, |tx| {
        thread::post_thread_message(
            tx,
            &c.actor(c.a1),
            &mut SeededIds::new(4),
            c.fam_a,
            "forged",
        )
    })
    .unwrap();
    assert_eq!(
        thread::read_thread(&forged, &c.roster, c.fam_a)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn contacts_are_staff_only_and_counted_per_family_and_term() {
    let c = Class::new();
    let term = NOW..NOW + 120 * DAY;
    let mut lane_a = c.replica(DocKind::Lane(c.fam_a), &c.teacher);
    let mut lane_b = c.replica(DocKind::Lane(c.fam_b), &c.teacher2);
    let mut ids = SeededIds::new(1);
    for (kind, day) in [
        (ContactKind::HomeVisit, 3),
        (ContactKind::PhoneCall, 10),
        (ContactKind::PhoneCall, 11),
        (ContactKind::Meeting, 200), // next term
    ] {
        write(&mut lane_a, |tx| {
            thread::record_contact(
                tx,
                &c.actor(c.teacher),
                &mut ids,
                &contact(kind, NOW + day * DAY),
            )
        })
        .unwrap();
    }
    write(&mut lane_b, |tx| {
        thread::record_contact(
            tx,
            &c.actor(c.teacher2),
            &mut ids,
            &contact(ContactKind::Meeting, NOW + DAY),
        )
    })
    .unwrap();
    // Before the term started.
    write(&mut lane_b, |tx| {
        thread::record_contact(
            tx,
            &c.actor(c.teacher2),
            &mut ids,
            &contact(ContactKind::Meeting, NOW - DAY),
        )
    })
    .unwrap();

    // Guardians cannot record contacts; bad input is typed.
    let mut parent_lane = c.replica(DocKind::Lane(c.fam_a), &c.a1);
    assert!(matches!(
        write(&mut parent_lane, |tx| thread::record_contact(
            tx,
            &c.actor(c.a1),
            &mut ids,
            &contact(ContactKind::HomeVisit, NOW)
        )),
        Err(ModelError::NotAllowed(_))
    ));
    let mut long = contact(ContactKind::HomeVisit, NOW);
    long.duration_minutes = Some(thread::MAX_CONTACT_MINUTES + 1);
    assert!(matches!(
        write(&mut lane_a, |tx| thread::record_contact(
            tx,
            &c.actor(c.teacher),
            &mut ids,
            &long
        )),
        Err(ModelError::InvalidInput {
            field: "duration_minutes",
            ..
        })
    ));
    let notes = "n".repeat(thread::MAX_CONTACT_NOTES + 1);
    let mut bad = contact(ContactKind::HomeVisit, NOW);
    bad.notes = &notes;
    assert!(matches!(
        write(&mut lane_a, |tx| thread::record_contact(
            tx,
            &c.actor(c.teacher),
            &mut ids,
            &bad
        )),
        Err(ModelError::InvalidInput { field: "notes", .. })
    ));
    // A record a guardian's device forges in the teacher's name is not counted.
    sync(&mut parent_lane, &lane_a);
    write(&mut parent_lane, |tx| {
        thread::record_contact(
            tx,
            &c.actor(c.teacher),
            &mut ids,
            &contact(ContactKind::HomeVisit, NOW + 5 * DAY),
        )
    })
    .unwrap();

    let stats = thread::contact_stats(&parent_lane, &c.roster, term.clone()).unwrap();
    assert_eq!(
        stats,
        ContactStats {
            home_visits: 1,
            phone_calls: 2,
            meetings: 0
        }
    );
    assert_eq!(stats.total(), 3);
    let by_family =
        thread::contact_stats_by_family(&[(c.fam_a, &lane_a), (c.fam_b, &lane_b)], &c.roster, term)
            .unwrap();
    assert_eq!(by_family[&c.fam_a].total(), 3);
    assert_eq!(
        by_family[&c.fam_b],
        ContactStats {
            home_visits: 0,
            phone_calls: 0,
            meetings: 1
        }
    );
    let records = thread::read_contacts(&lane_a, &c.roster).unwrap();
    assert_eq!(records.len(), 4);
    assert_eq!(records[0].kind, ContactKind::HomeVisit);
    assert_eq!(records[0].recorded_by, c.teacher);
    assert_eq!(records[0].notes, "talked about reading");
}

#[test]
fn committee_board_is_for_committee_members_and_staff() {
    let c = Class::new();
    let mut doc = c.replica(DocKind::Committee, &c.c1);
    let mut ids = SeededIds::new(1);
    let post = NewPost {
        title: "Spring fair",
        text: "Who can help?",
        reply_to: None,
    };
    let first = write(&mut doc, |tx| {
        committee::post_to_committee(tx, &c.actor_at(c.c1, NOW), &mut ids, &post)
    })
    .unwrap();
    let answer = NewPost {
        title: "",
        text: "I can",
        reply_to: Some(first),
    };
    // The teacher answers from their own phone.
    let mut teacher_doc = c.replica(DocKind::Committee, &c.teacher);
    sync(&mut teacher_doc, &doc);
    write(&mut teacher_doc, |tx| {
        committee::post_to_committee(tx, &c.actor_at(c.teacher, NOW + 1), &mut ids, &answer)
    })
    .unwrap();
    sync(&mut doc, &teacher_doc);
    // A plain guardian is not on the committee.
    assert!(matches!(
        write(&mut doc, |tx| committee::post_to_committee(
            tx,
            &c.actor(c.a1),
            &mut ids,
            &post
        )),
        Err(ModelError::NotAllowed(_))
    ));
    let orphan = NewPost {
        reply_to: Some(ItemId([9; 8])),
        ..answer.clone()
    };
    assert!(matches!(
        write(&mut doc, |tx| committee::post_to_committee(
            tx,
            &c.actor(c.c1),
            &mut ids,
            &orphan
        )),
        Err(ModelError::UnknownId { kind: "post", .. })
    ));
    let empty = NewPost {
        text: " ",
        ..post.clone()
    };
    assert!(matches!(
        write(&mut doc, |tx| committee::post_to_committee(
            tx,
            &c.actor(c.c1),
            &mut ids,
            &empty
        )),
        Err(ModelError::InvalidInput { field: "text", .. })
    ));
    // Written by a non-member device in the committee member's name: not shown.
    let mut forged = c.replica(DocKind::Committee, &c.a1);
    sync(&mut forged, &doc);
    write(&mut forged, |tx| {
        committee::post_to_committee(tx, &c.actor(c.c1), &mut ids, &post)
    })
    .unwrap();

    let posts = committee::read_committee_posts(&forged, &c.roster).unwrap();
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[0].title, "Spring fair");
    assert!(!posts[0].from_staff);
    assert_eq!(posts[1].reply_to, Some(first));
    assert!(posts[1].from_staff);
}

#[test]
fn mailbox_connects_one_family_with_the_principal() {
    let c = Class::new();
    let mut doc = c.replica(DocKind::Mailbox(c.fam_a), &c.a2);
    let mut ids = SeededIds::new(1);
    write(&mut doc, |tx| {
        committee::send_to_mailbox(tx, &c.actor_at(c.a2, NOW), &mut ids, c.fam_a, "A concern")
    })
    .unwrap();
    let mut principal = c.replica(DocKind::Mailbox(c.fam_a), &c.principal);
    sync(&mut principal, &doc);
    write(&mut principal, |tx| {
        committee::send_to_mailbox(
            tx,
            &c.actor_at(c.principal, NOW + 1),
            &mut ids,
            c.fam_a,
            "Thank you",
        )
    })
    .unwrap();
    // Neither a class teacher nor another family writes here.
    for d in [c.teacher, c.b1] {
        assert!(matches!(
            write(&mut doc, |tx| committee::send_to_mailbox(
                tx,
                &c.actor(d),
                &mut ids,
                c.fam_a,
                "x"
            )),
            Err(ModelError::NotAllowed(_))
        ));
    }
    let long = "m".repeat(committee::MAX_POST_TEXT + 1);
    assert!(matches!(
        write(&mut doc, |tx| committee::send_to_mailbox(
            tx,
            &c.actor(c.a2),
            &mut ids,
            c.fam_a,
            &long
        )),
        Err(ModelError::InvalidInput { field: "text", .. })
    ));
    let msgs = committee::read_mailbox(&principal, &c.roster, c.fam_a).unwrap();
    let seen: Vec<_> = msgs
        .iter()
        .map(|m| (m.text.as_str(), m.from_principal))
        .collect();
    assert_eq!(seen, vec![("A concern", false), ("Thank you", true)]);
    // Read as another family's mailbox, the guardian's message does not count.
    assert_eq!(
        committee::read_mailbox(&principal, &c.roster, c.fam_b)
            .unwrap()
            .len(),
        1
    );
}
