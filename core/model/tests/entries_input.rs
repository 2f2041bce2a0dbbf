//! Bad input and wrong roles give typed errors, and nothing is written.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod view_support;

use std::collections::BTreeSet;

use homeroom_core::entries::{
    self, Audience, ConsentAnswer, ConsentPolicy, Moderation, ReplyScope,
};
use homeroom_core::ids::SeededIds;
use homeroom_core::{DocKind, ItemId, ModelError};
use view_support::*;

fn invalid_field(r: Result<impl std::fmt::Debug, ModelError>) -> &'static str {
    match r {
        Err(ModelError::InvalidInput { field, .. }) => field,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

fn unknown_kind(r: Result<impl std::fmt::Debug, ModelError>) -> &'static str {
    match r {
        Err(ModelError::UnknownId { kind, .. }) => kind,
        other => panic!("expected UnknownId, got {other:?}"),
    }
}

fn not_allowed(r: Result<impl std::fmt::Debug, ModelError>) {
    assert!(
        matches!(r, Err(ModelError::NotAllowed(_))),
        "expected NotAllowed, got {r:?}"
    );
}

#[test]
fn entry_text_is_validated_per_field() {
    let c = Class::new();
    let mut nb = c.replica(DocKind::Notebook, &c.teacher);
    let mut ids = SeededIds::new(1);
    let t = c.actor(c.teacher);
    let heads = nb.get_heads();
    assert_eq!(
        invalid_field(write(&mut nb, |tx| entries::post_entry(
            tx,
            &t,
            &mut ids,
            &whole_class_entry("  ")
        ))),
        "text"
    );
    let long = "x".repeat(entries::MAX_ENTRY_TEXT + 1);
    assert_eq!(
        invalid_field(write(&mut nb, |tx| entries::post_entry(
            tx,
            &t,
            &mut ids,
            &whole_class_entry(&long)
        ))),
        "text"
    );
    let mut e = whole_class_entry("ok");
    let long_title = "t".repeat(entries::MAX_TITLE + 1);
    e.title = &long_title;
    assert_eq!(
        invalid_field(write(&mut nb, |tx| entries::post_entry(
            tx, &t, &mut ids, &e
        ))),
        "title"
    );
    let mut e = whole_class_entry("bell\u{7}");
    e.title = "";
    assert_eq!(
        invalid_field(write(&mut nb, |tx| entries::post_entry(
            tx, &t, &mut ids, &e
        ))),
        "text"
    );
    let mut e = whole_class_entry("ok");
    e.audience = Audience::Students(BTreeSet::new());
    assert_eq!(
        invalid_field(write(&mut nb, |tx| entries::post_entry(
            tx, &t, &mut ids, &e
        ))),
        "audience"
    );
    assert_eq!(nb.get_heads(), heads, "nothing was written");

    // Exactly at the limits is fine.
    let max = "y".repeat(entries::MAX_ENTRY_TEXT);
    let posted = write(&mut nb, |tx| {
        entries::post_entry(tx, &t, &mut ids, &whole_class_entry(&max))
    })
    .unwrap();
    assert_eq!(
        invalid_field(write(&mut nb, |tx| entries::edit_entry(
            tx,
            &t,
            &mut ids,
            posted.entry,
            "",
            "",
            true
        ))),
        "text"
    );
}

#[test]
fn parents_cannot_post_or_edit_entries_or_moderate() {
    let c = Class::new();
    let mut nb = c.replica(DocKind::Notebook, &c.teacher);
    let mut ids = SeededIds::new(1);
    let posted = write(&mut nb, |tx| {
        entries::post_entry(tx, &c.actor(c.teacher), &mut ids, &whole_class_entry("x"))
    })
    .unwrap();
    let parent = c.actor(c.a1);
    not_allowed(write(&mut nb, |tx| {
        entries::post_entry(tx, &parent, &mut ids, &whole_class_entry("mine"))
    }));
    not_allowed(write(&mut nb, |tx| {
        entries::edit_entry(tx, &parent, &mut ids, posted.entry, "", "mine", true)
    }));
    not_allowed(write(&mut nb, |tx| {
        entries::set_urgency(tx, &parent, posted.entry, entries::Urgency::Red)
    }));
    not_allowed(write(&mut nb, |tx| {
        entries::set_audience(tx, &parent, posted.entry, &Audience::WholeClass)
    }));
    let mut board = c.replica(DocKind::Board(c.fam_a), &c.a1);
    let reply = write(&mut board, |tx| {
        entries::post_reply(
            tx,
            &parent,
            &mut ids,
            &nb,
            ReplyScope::Public,
            posted.entry,
            "hi",
        )
    })
    .unwrap();
    not_allowed(write(&mut nb, |tx| {
        entries::moderate_reply(tx, &parent, &board, reply, Moderation::Hide)
    }));
    not_allowed(write(&mut board, |tx| {
        entries::erase_reply_text(tx, &parent, reply)
    }));
    // A device that is in no roster at all.
    let stranger = c.actor(device(99));
    not_allowed(write(&mut nb, |tx| {
        entries::post_entry(tx, &stranger, &mut ids, &whole_class_entry("x"))
    }));
}

#[test]
fn unknown_ids_are_reported_by_kind() {
    let c = Class::new();
    let mut nb = c.replica(DocKind::Notebook, &c.teacher);
    let mut ids = SeededIds::new(1);
    let t = c.actor(c.teacher);
    let posted = write(&mut nb, |tx| {
        entries::post_entry(tx, &t, &mut ids, &whole_class_entry("x"))
    })
    .unwrap();
    let nowhere = ItemId([0xee; 8]);
    assert_eq!(
        unknown_kind(write(&mut nb, |tx| entries::edit_entry(
            tx, &t, &mut ids, nowhere, "", "y", true
        ))),
        "entry"
    );
    assert_eq!(
        unknown_kind(write(&mut nb, |tx| entries::set_urgency(
            tx,
            &t,
            nowhere,
            entries::Urgency::Red
        ))),
        "entry"
    );
    assert_eq!(unknown_kind(entries::read_entry(&nb, nowhere)), "entry");
    let mut lane = c.replica(DocKind::Lane(c.fam_a), &c.a1);
    let a1 = c.actor(c.a1);
    assert_eq!(
        unknown_kind(write(&mut lane, |tx| entries::sign_entry(
            tx,
            &a1,
            &mut ids,
            &nb,
            nowhere,
            posted.revision,
            None
        ))),
        "entry"
    );
    assert_eq!(
        unknown_kind(write(&mut lane, |tx| entries::sign_entry(
            tx,
            &a1,
            &mut ids,
            &nb,
            posted.entry,
            nowhere,
            None
        ))),
        "revision"
    );
    assert_eq!(
        unknown_kind(write(&mut lane, |tx| entries::mark_read(
            tx, &a1, &nb, nowhere
        ))),
        "entry"
    );
    assert_eq!(
        unknown_kind(write(&mut lane, |tx| entries::post_reply(
            tx,
            &a1,
            &mut ids,
            &nb,
            ReplyScope::Private,
            nowhere,
            "hi"
        ))),
        "entry"
    );
    assert_eq!(
        unknown_kind(write(&mut lane, |tx| entries::edit_reply(
            tx, &a1, nowhere, "hi"
        ))),
        "reply"
    );
    assert_eq!(
        unknown_kind(write(&mut lane, |tx| entries::hide_own_reply(
            tx, &a1, nowhere
        ))),
        "reply"
    );
    assert_eq!(
        unknown_kind(write(&mut nb, |tx| entries::moderate_reply(
            tx,
            &t,
            &lane,
            nowhere,
            Moderation::Hide
        ))),
        "reply"
    );
    assert!(
        entries::read_signatures(&lane).unwrap().is_empty(),
        "nothing was written"
    );
}

#[test]
fn signing_checks_role_audience_and_consent() {
    let c = Class::new();
    let mut nb = c.replica(DocKind::Notebook, &c.teacher);
    let mut ids = SeededIds::new(1);
    let t = c.actor(c.teacher);
    let plain = write(&mut nb, |tx| {
        entries::post_entry(tx, &t, &mut ids, &whole_class_entry("x"))
    })
    .unwrap();
    let consent = write(&mut nb, |tx| {
        entries::post_entry(
            tx,
            &t,
            &mut ids,
            &consent_entry("y", ConsentPolicy::DeclineWins),
        )
    })
    .unwrap();
    let mut only_b = whole_class_entry("z");
    only_b.audience = students(&[c.student_b]);
    let for_b = write(&mut nb, |tx| entries::post_entry(tx, &t, &mut ids, &only_b)).unwrap();

    let mut lane = c.replica(DocKind::Lane(c.fam_a), &c.a1);
    let a1 = c.actor(c.a1);
    // Staff don't sign.
    not_allowed(write(&mut lane, |tx| {
        entries::sign_entry(tx, &t, &mut ids, &nb, plain.entry, plain.revision, None)
    }));
    // Not addressed to family A.
    not_allowed(write(&mut lane, |tx| {
        entries::sign_entry(tx, &a1, &mut ids, &nb, for_b.entry, for_b.revision, None)
    }));
    not_allowed(write(&mut lane, |tx| {
        entries::post_reply(
            tx,
            &a1,
            &mut ids,
            &nb,
            ReplyScope::Public,
            for_b.entry,
            "not for me",
        )
    }));
    // Consent answer missing, or given where none was asked.
    assert_eq!(
        invalid_field(write(&mut lane, |tx| entries::sign_entry(
            tx,
            &a1,
            &mut ids,
            &nb,
            consent.entry,
            consent.revision,
            None
        ))),
        "consent"
    );
    assert_eq!(
        invalid_field(write(&mut lane, |tx| {
            entries::sign_entry(
                tx,
                &a1,
                &mut ids,
                &nb,
                plain.entry,
                plain.revision,
                Some(ConsentAnswer::Allow),
            )
        })),
        "consent"
    );
    assert!(entries::read_signatures(&lane).unwrap().is_empty());
}

#[test]
fn replies_are_validated_and_only_their_author_edits_them() {
    let c = Class::new();
    let mut nb = c.replica(DocKind::Notebook, &c.teacher);
    let mut ids = SeededIds::new(1);
    let posted = write(&mut nb, |tx| {
        entries::post_entry(tx, &c.actor(c.teacher), &mut ids, &whole_class_entry("x"))
    })
    .unwrap();
    let mut board = c.replica(DocKind::Board(c.fam_a), &c.a1);
    let a1 = c.actor(c.a1);
    assert_eq!(
        invalid_field(write(&mut board, |tx| entries::post_reply(
            tx,
            &a1,
            &mut ids,
            &nb,
            ReplyScope::Public,
            posted.entry,
            ""
        ))),
        "text"
    );
    let long = "r".repeat(entries::MAX_REPLY_TEXT + 1);
    assert_eq!(
        invalid_field(write(&mut board, |tx| entries::post_reply(
            tx,
            &a1,
            &mut ids,
            &nb,
            ReplyScope::Public,
            posted.entry,
            &long
        ))),
        "text"
    );
    // Staff don't post public replies in a family's board.
    not_allowed(write(&mut board, |tx| {
        entries::post_reply(
            tx,
            &c.actor(c.teacher),
            &mut ids,
            &nb,
            ReplyScope::Public,
            posted.entry,
            "hi",
        )
    }));
    let reply = write(&mut board, |tx| {
        entries::post_reply(
            tx,
            &a1,
            &mut ids,
            &nb,
            ReplyScope::Public,
            posted.entry,
            "first",
        )
    })
    .unwrap();
    assert_eq!(
        invalid_field(write(&mut board, |tx| entries::edit_reply(
            tx, &a1, reply, " "
        ))),
        "text"
    );
    // The other guardian of the same family is not the author.
    not_allowed(write(&mut board, |tx| {
        entries::edit_reply(tx, &c.actor(c.a2), reply, "changed")
    }));
    not_allowed(write(&mut board, |tx| {
        entries::hide_own_reply(tx, &c.actor(c.teacher), reply)
    }));
    write(&mut board, |tx| {
        entries::edit_reply(tx, &c.actor_at(c.a1, NOW + 9), reply, "second")
    })
    .unwrap();
    let r = &entries::read_replies(&board, &c.roster).unwrap()[0];
    assert_eq!(r.text.as_deref(), Some("second"));
    assert_eq!(r.edited_at, Some(NOW + 9));
}

#[test]
fn a_reply_text_overwritten_by_someone_else_is_ignored() {
    let c = Class::new();
    let mut nb = c.replica(DocKind::Notebook, &c.teacher);
    let mut ids = SeededIds::new(1);
    let posted = write(&mut nb, |tx| {
        entries::post_entry(tx, &c.actor(c.teacher), &mut ids, &whole_class_entry("x"))
    })
    .unwrap();
    let mut board_a1 = c.replica(DocKind::Board(c.fam_a), &c.a1);
    let reply = write(&mut board_a1, |tx| {
        entries::post_reply(
            tx,
            &c.actor(c.a1),
            &mut ids,
            &nb,
            ReplyScope::Public,
            posted.entry,
            "original",
        )
    })
    .unwrap();
    // Guardian a2's device, acting in a1's name, rewrites a1's reply.
    let mut board_a2 = c.replica(DocKind::Board(c.fam_a), &c.a2);
    sync(&mut board_a2, &board_a1);
    write(&mut board_a2, |tx| {
        entries::edit_reply(tx, &c.actor(c.a1), reply, "forged")
    })
    .unwrap();
    let r = &entries::read_replies(&board_a2, &c.roster).unwrap()[0];
    assert_eq!(
        r.text, None,
        "a text written by someone else is never shown"
    );

    // Concurrently with the author's own edit: the author's value is read.
    write(&mut board_a1, |tx| {
        entries::edit_reply(tx, &c.actor(c.a1), reply, "edited by author")
    })
    .unwrap();
    let mut board_b = c.replica(DocKind::Board(c.fam_a), &c.b1);
    sync(&mut board_b, &board_a1);
    sync(&mut board_b, &board_a2);
    let r = &entries::read_replies(&board_b, &c.roster).unwrap()[0];
    assert_eq!(r.text.as_deref(), Some("edited by author"));
    {
        use homeroom_core::automerge::{ROOT, ReadDoc};
        let (_, replies) = board_b.get(ROOT, "replies").unwrap().unwrap();
        let (_, obj) = board_b.get(&replies, reply.to_hex()).unwrap().unwrap();
        // The forged value is the visible winner of the conflict; the reader still finds the
        // author's.
        assert_eq!(board_b.get_all(&obj, "text").unwrap().len(), 2);
        let winner = board_b.get(&obj, "text").unwrap().unwrap().0;
        assert_eq!(winner.as_str(), Some("forged"));
    }
}
