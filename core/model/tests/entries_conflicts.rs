//! The conflict-table rows of domain.md that concern notebook entries, signatures, consent and
//! replies: each edits two or three replicas concurrently, merges them and checks the outcome.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod view_support;

use homeroom_core::DocKind;
use homeroom_core::entries::{
    self, ConsentAnswer, ConsentPolicy, Moderation, ReplyScope, Visibility,
};
use homeroom_core::ids::SeededIds;
use homeroom_core::view::{ConsentOutcome, SignatureStatus};
use view_support::*;

/// Teacher posts, both families receive the notebook; then the teacher edits (material or
/// minor) while both families sign the first revision offline. Returns the merged view.
fn edit_while_signing(material: bool) -> (SignatureStatus, SignatureStatus, Vec<usize>) {
    let c = Class::new();
    let mut ids = SeededIds::new(1);
    let mut nb_t = c.replica(DocKind::Notebook, &c.teacher);
    let posted = write(&mut nb_t, |tx| {
        entries::post_entry(
            tx,
            &c.actor(c.teacher),
            &mut ids,
            &whole_class_entry("Trip on Friday"),
        )
    })
    .unwrap();
    let mut nb_a = c.replica(DocKind::Notebook, &c.a1);
    let mut nb_b = c.replica(DocKind::Notebook, &c.b1);
    sync(&mut nb_a, &nb_t);
    sync(&mut nb_b, &nb_t);

    // Concurrently: the edit on the teacher's phone, signatures on the parents' phones.
    let rev2 = write(&mut nb_t, |tx| {
        entries::edit_entry(
            tx,
            &c.actor(c.teacher),
            &mut ids,
            posted.entry,
            "Notice",
            "Trip on Saturday",
            material,
        )
    })
    .unwrap();
    let mut lane_a = c.replica(DocKind::Lane(c.fam_a), &c.a1);
    let mut lane_b = c.replica(DocKind::Lane(c.fam_b), &c.b1);
    write(&mut lane_a, |tx| {
        entries::sign_entry(
            tx,
            &c.actor(c.a1),
            &mut SeededIds::new(2),
            &nb_a,
            posted.entry,
            posted.revision,
            None,
        )
    })
    .unwrap();
    write(&mut lane_b, |tx| {
        entries::sign_entry(
            tx,
            &c.actor(c.b1),
            &mut SeededIds::new(3),
            &nb_b,
            posted.entry,
            posted.revision,
            None,
        )
    })
    .unwrap();

    // Everything reaches the teacher.
    sync(&mut nb_t, &nb_a);
    let view = c.view(
        &c.teacher,
        &nb_t,
        &[(c.fam_a, &lane_a), (c.fam_b, &lane_b)],
        &[],
    );
    let e = view.entry(posted.entry).unwrap();
    assert_eq!(e.revisions.len(), 2, "both revisions are kept");
    assert_eq!(e.latest.id, rev2);
    assert_eq!(e.latest.text, "Trip on Saturday");
    let summary = e.signing.as_ref().unwrap();
    let counts = vec![
        summary.signed.len(),
        summary.superseded.len(),
        summary.unsigned.len(),
    ];
    (
        e.families[&c.fam_a].status,
        e.families[&c.fam_b].status,
        counts,
    )
}

#[test]
fn material_edit_while_parents_sign_supersedes_their_signatures() {
    let (a, b, counts) = edit_while_signing(true);
    assert!(matches!(a, SignatureStatus::Superseded { .. }), "{a:?}");
    assert!(matches!(b, SignatureStatus::Superseded { .. }), "{b:?}");
    // signed, superseded, unsigned: A and B asked again, C never signed.
    assert_eq!(counts, vec![0, 2, 1]);
}

#[test]
fn minor_edit_while_parents_sign_carries_signatures_forward() {
    let (a, b, counts) = edit_while_signing(false);
    assert!(
        matches!(
            a,
            SignatureStatus::Signed {
                carried_forward: true,
                ..
            }
        ),
        "{a:?}"
    );
    assert!(
        matches!(
            b,
            SignatureStatus::Signed {
                carried_forward: true,
                ..
            }
        ),
        "{b:?}"
    );
    assert_eq!(counts, vec![2, 0, 1]);
}

#[test]
fn signing_again_after_a_material_edit_restores_signed() {
    let c = Class::new();
    let mut ids = SeededIds::new(1);
    let mut nb = c.replica(DocKind::Notebook, &c.teacher);
    let posted = write(&mut nb, |tx| {
        entries::post_entry(
            tx,
            &c.actor(c.teacher),
            &mut ids,
            &whole_class_entry("Bring paints"),
        )
    })
    .unwrap();
    let mut lane = c.replica(DocKind::Lane(c.fam_a), &c.a1);
    write(&mut lane, |tx| {
        entries::sign_entry(
            tx,
            &c.actor(c.a1),
            &mut ids,
            &nb,
            posted.entry,
            posted.revision,
            None,
        )
    })
    .unwrap();
    let rev2 = write(&mut nb, |tx| {
        entries::edit_entry(
            tx,
            &c.actor(c.teacher),
            &mut ids,
            posted.entry,
            "",
            "Bring paints and brushes",
            true,
        )
    })
    .unwrap();
    // A minor fix after the material edit.
    write(&mut nb, |tx| {
        entries::edit_entry(
            tx,
            &c.actor(c.teacher),
            &mut ids,
            posted.entry,
            "",
            "Bring paints and brushes.",
            false,
        )
    })
    .unwrap();
    let view = c.view(&c.teacher, &nb, &[(c.fam_a, &lane)], &[]);
    assert!(
        matches!(view.entries[0].families[&c.fam_a].status, SignatureStatus::Superseded { revision } if revision == posted.revision)
    );
    write(&mut lane, |tx| {
        entries::sign_entry(tx, &c.actor(c.a2), &mut ids, &nb, posted.entry, rev2, None)
    })
    .unwrap();
    let view = c.view(&c.teacher, &nb, &[(c.fam_a, &lane)], &[]);
    let state = &view.entries[0].families[&c.fam_a];
    assert_eq!(
        state.status,
        SignatureStatus::Signed {
            revision: rev2,
            carried_forward: true
        }
    );
    let sigs = view.entries[0].signatures_of(&c.fam_a);
    assert_eq!(sigs.len(), 2, "the superseded signature is kept");
    assert_eq!(state.signature_count, 2);
    assert!(!sigs[0].current && sigs[1].current);
}

#[test]
fn two_teachers_editing_concurrently_keep_both_revisions_and_agree_on_latest() {
    let c = Class::new();
    let mut nb_1 = c.replica(DocKind::Notebook, &c.teacher);
    let posted = write(&mut nb_1, |tx| {
        entries::post_entry(
            tx,
            &c.actor(c.teacher),
            &mut SeededIds::new(1),
            &whole_class_entry("v1"),
        )
    })
    .unwrap();
    let mut nb_2 = c.replica(DocKind::Notebook, &c.teacher2);
    sync(&mut nb_2, &nb_1);
    let r1 = write(&mut nb_1, |tx| {
        entries::edit_entry(
            tx,
            &c.actor_at(c.teacher, NOW + 10),
            &mut SeededIds::new(2),
            posted.entry,
            "",
            "edit by one",
            true,
        )
    })
    .unwrap();
    let r2 = write(&mut nb_2, |tx| {
        entries::edit_entry(
            tx,
            &c.actor_at(c.teacher2, NOW + 20),
            &mut SeededIds::new(3),
            posted.entry,
            "",
            "edit by two",
            false,
        )
    })
    .unwrap();
    sync(&mut nb_1, &nb_2);
    sync(&mut nb_2, &nb_1);
    let e1 = entries::read_entry(&nb_1, posted.entry).unwrap();
    let e2 = entries::read_entry(&nb_2, posted.entry).unwrap();
    assert_eq!(e1, e2);
    let ids: Vec<_> = e1.revisions.iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        vec![posted.revision, r1, r2],
        "same seq: ordered by time"
    );
    assert_eq!(e1.latest().unwrap().text, "edit by two");
    // A signature of the first revision is superseded by teacher one's material edit even
    // though the later minor edit is the latest.
    assert_eq!(e1.last_material_position(), 1);
}

fn consent_case(policy: ConsentPolicy) -> homeroom_core::view::EntryView {
    let c = Class::new();
    let mut nb = c.replica(DocKind::Notebook, &c.teacher);
    let posted = write(&mut nb, |tx| {
        entries::post_entry(
            tx,
            &c.actor(c.teacher),
            &mut SeededIds::new(1),
            &consent_entry("Swimming lessons", policy),
        )
    })
    .unwrap();
    // The two guardians of family A answer on their own phones, offline.
    let mut lane_1 = c.replica(DocKind::Lane(c.fam_a), &c.a1);
    let mut lane_2 = c.replica(DocKind::Lane(c.fam_a), &c.a2);
    write(&mut lane_1, |tx| {
        entries::sign_entry(
            tx,
            &c.actor(c.a1),
            &mut SeededIds::new(2),
            &nb,
            posted.entry,
            posted.revision,
            Some(ConsentAnswer::Allow),
        )
    })
    .unwrap();
    write(&mut lane_2, |tx| {
        entries::sign_entry(
            tx,
            &c.actor(c.a2),
            &mut SeededIds::new(3),
            &nb,
            posted.entry,
            posted.revision,
            Some(ConsentAnswer::Decline),
        )
    })
    .unwrap();
    sync(&mut lane_1, &lane_2);
    sync(&mut lane_2, &lane_1);
    let v1 = c.view(&c.teacher, &nb, &[(c.fam_a, &lane_1)], &[]);
    let v2 = c.view(&c.teacher, &nb, &[(c.fam_a, &lane_2)], &[]);
    assert_eq!(v1, v2, "both replicas agree");
    v1.entries[0].clone()
}

#[test]
fn two_guardians_answer_consent_differently_decline_wins_and_teacher_sees_conflict() {
    let c = Class::new();
    let e = consent_case(ConsentPolicy::DeclineWins);
    let state = &e.families[&c.fam_a];
    let consent = state.consent.as_ref().unwrap();
    assert_eq!(consent.answers.len(), 2, "both answers kept");
    assert!(consent.conflict);
    assert_eq!(consent.outcome, ConsentOutcome::Declined);
    // Acknowledged: a guardian allowed to sign did.
    assert!(matches!(state.status, SignatureStatus::Signed { .. }));
    assert_eq!(e.signing.as_ref().unwrap().consent_conflicts, vec![c.fam_a]);
}

#[test]
fn allow_wins_policy_resolves_the_same_conflict_to_allowed() {
    let c = Class::new();
    let e = consent_case(ConsentPolicy::AllowWins);
    let consent = e.families[&c.fam_a].consent.as_ref().unwrap();
    assert!(consent.conflict);
    assert_eq!(consent.outcome, ConsentOutcome::Allowed);
}

#[test]
fn a_guardian_changing_their_answer_replaces_only_their_own() {
    let c = Class::new();
    let mut ids = SeededIds::new(5);
    let mut nb = c.replica(DocKind::Notebook, &c.teacher);
    let posted = write(&mut nb, |tx| {
        entries::post_entry(
            tx,
            &c.actor(c.teacher),
            &mut ids,
            &consent_entry("Photo consent", ConsentPolicy::DeclineWins),
        )
    })
    .unwrap();
    let mut lane = c.replica(DocKind::Lane(c.fam_a), &c.a1);
    write(&mut lane, |tx| {
        entries::sign_entry(
            tx,
            &c.actor_at(c.a1, NOW + 1),
            &mut ids,
            &nb,
            posted.entry,
            posted.revision,
            Some(ConsentAnswer::Decline),
        )
    })
    .unwrap();
    let view = c.view(&c.teacher, &nb, &[(c.fam_a, &lane)], &[]);
    assert_eq!(
        view.entries[0].families[&c.fam_a]
            .consent
            .as_ref()
            .unwrap()
            .outcome,
        ConsentOutcome::Declined
    );
    write(&mut lane, |tx| {
        entries::sign_entry(
            tx,
            &c.actor_at(c.a1, NOW + 2),
            &mut ids,
            &nb,
            posted.entry,
            posted.revision,
            Some(ConsentAnswer::Allow),
        )
    })
    .unwrap();
    let view = c.view(&c.teacher, &nb, &[(c.fam_a, &lane)], &[]);
    let state = &view.entries[0].families[&c.fam_a];
    let consent = state.consent.as_ref().unwrap();
    assert_eq!(consent.answers.len(), 1);
    assert!(!consent.conflict);
    assert_eq!(consent.outcome, ConsentOutcome::Allowed);
    assert_eq!(
        state.signature_count, 2,
        "the earlier answer is kept in history"
    );
}

#[test]
fn consent_answers_on_a_superseded_revision_no_longer_decide() {
    let c = Class::new();
    let mut ids = SeededIds::new(9);
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
    let mut lane = c.replica(DocKind::Lane(c.fam_a), &c.a1);
    write(&mut lane, |tx| {
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
    write(&mut nb, |tx| {
        entries::edit_entry(
            tx,
            &c.actor(c.teacher),
            &mut ids,
            posted.entry,
            "",
            "Trip, now overnight",
            true,
        )
    })
    .unwrap();
    let view = c.view(&c.teacher, &nb, &[(c.fam_a, &lane)], &[]);
    let state = &view.entries[0].families[&c.fam_a];
    assert!(matches!(state.status, SignatureStatus::Superseded { .. }));
    assert_eq!(
        state.consent.as_ref().unwrap().outcome,
        ConsentOutcome::Pending
    );
}

#[test]
fn reply_edited_while_a_moderator_hides_it() {
    let c = Class::new();
    let mut nb_t = c.replica(DocKind::Notebook, &c.teacher);
    let posted = write(&mut nb_t, |tx| {
        entries::post_entry(
            tx,
            &c.actor(c.teacher),
            &mut SeededIds::new(1),
            &whole_class_entry("Sports day"),
        )
    })
    .unwrap();
    let nb_a = nb_t.clone();
    let mut board_a = c.replica(DocKind::Board(c.fam_a), &c.a1);
    let reply = write(&mut board_a, |tx| {
        entries::post_reply(
            tx,
            &c.actor(c.a1),
            &mut SeededIds::new(2),
            &nb_a,
            ReplyScope::Public,
            posted.entry,
            "rude words",
        )
    })
    .unwrap();
    let mut board_t = c.replica(DocKind::Board(c.fam_a), &c.teacher);
    sync(&mut board_t, &board_a);

    // Concurrently: the author edits on their phone, the teacher hides it on theirs.
    write(&mut board_a, |tx| {
        entries::edit_reply(tx, &c.actor_at(c.a1, NOW + 5), reply, "kind words")
    })
    .unwrap();
    let level = write(&mut nb_t, |tx| {
        entries::moderate_reply(tx, &c.actor(c.teacher), &board_t, reply, Moderation::Hide)
    })
    .unwrap();
    assert_eq!(level, Visibility::HiddenByModerator);
    sync(&mut board_t, &board_a);
    let mut nb_a = nb_a;
    sync(&mut nb_a, &nb_t);

    let boards_t = [(c.fam_a, &board_t)];
    let boards_a = [(c.fam_a, &board_a)];
    let staff = c.view(&c.teacher, &nb_t, &[], &boards_t);
    let author = c.view(&c.a1, &nb_a, &[], &boards_a);
    let other = c.view(&c.b1, &nb_a, &[], &boards_a);
    for v in [&staff, &author, &other] {
        let r = &v.entries[0].public_replies[0];
        assert_eq!(
            r.visibility,
            Visibility::HiddenByModerator,
            "the hide survives the edit"
        );
        assert_eq!(r.edited_at, Some(NOW + 5), "the edit survives the hide");
    }
    assert_eq!(
        staff.entries[0].public_replies[0].text.as_deref(),
        Some("kind words")
    );
    assert_eq!(
        author.entries[0].public_replies[0].text.as_deref(),
        Some("kind words")
    );
    assert_eq!(
        other.entries[0].public_replies[0].text, None,
        "other families don't see hidden text"
    );
}

#[test]
fn concurrent_moderation_marks_resolve_upward_and_never_move_down() {
    // Both ways round, so the result cannot depend on which concurrent mark Automerge shows.
    for teacher_one_purges in [true, false] {
        concurrent_moderation(teacher_one_purges);
    }
}

fn concurrent_moderation(teacher_one_purges: bool) {
    let (first, second) = if teacher_one_purges {
        (Moderation::Purge, Moderation::Hide)
    } else {
        (Moderation::Hide, Moderation::Purge)
    };
    let c = Class::new();
    let mut nb_1 = c.replica(DocKind::Notebook, &c.teacher);
    let posted = write(&mut nb_1, |tx| {
        entries::post_entry(
            tx,
            &c.actor(c.teacher),
            &mut SeededIds::new(1),
            &whole_class_entry("Open day"),
        )
    })
    .unwrap();
    let mut lane = c.replica(DocKind::Lane(c.fam_b), &c.b1);
    let reply = write(&mut lane, |tx| {
        entries::post_reply(
            tx,
            &c.actor(c.b1),
            &mut SeededIds::new(2),
            &nb_1,
            ReplyScope::Private,
            posted.entry,
            "question",
        )
    })
    .unwrap();
    // The author withdraws it while two teachers moderate concurrently.
    write(&mut lane, |tx| {
        entries::hide_own_reply(tx, &c.actor(c.b1), reply)
    })
    .unwrap();
    let mut nb_2 = c.replica(DocKind::Notebook, &c.teacher2);
    sync(&mut nb_2, &nb_1);
    write(&mut nb_1, |tx| {
        entries::moderate_reply(tx, &c.actor(c.teacher), &lane, reply, first)
    })
    .unwrap();
    write(&mut nb_2, |tx| {
        entries::moderate_reply(tx, &c.actor(c.teacher2), &lane, reply, second)
    })
    .unwrap();
    sync(&mut nb_1, &nb_2);
    sync(&mut nb_2, &nb_1);
    for nb in [&nb_1, &nb_2] {
        assert_eq!(
            entries::read_moderation(nb, &c.roster).unwrap()[&reply],
            Visibility::Purged
        );
        let v = c.view(&c.teacher, nb, &[(c.fam_b, &lane)], &[]);
        let r = &v.entries[0].private_replies[0];
        assert_eq!(r.visibility, Visibility::Purged);
        assert_eq!(r.text, None, "nobody reads a purged reply");
    }
    // Asking for a lower level afterwards changes nothing.
    let level = write(&mut nb_2, |tx| {
        entries::moderate_reply(tx, &c.actor(c.teacher2), &lane, reply, Moderation::Hide)
    })
    .unwrap();
    assert_eq!(level, Visibility::Purged);
    assert_eq!(
        entries::read_moderation(&nb_2, &c.roster).unwrap()[&reply],
        Visibility::Purged
    );
}

#[test]
fn hidden_by_author_is_shown_to_staff_and_author_only() {
    let c = Class::new();
    let mut nb = c.replica(DocKind::Notebook, &c.teacher);
    let posted = write(&mut nb, |tx| {
        entries::post_entry(
            tx,
            &c.actor(c.teacher),
            &mut SeededIds::new(1),
            &whole_class_entry("Concert"),
        )
    })
    .unwrap();
    let mut board = c.replica(DocKind::Board(c.fam_a), &c.a1);
    let reply = write(&mut board, |tx| {
        entries::post_reply(
            tx,
            &c.actor(c.a1),
            &mut SeededIds::new(2),
            &nb,
            ReplyScope::Public,
            posted.entry,
            "see you",
        )
    })
    .unwrap();
    write(&mut board, |tx| {
        entries::hide_own_reply(tx, &c.actor(c.a1), reply)
    })
    .unwrap();
    let boards = [(c.fam_a, &board)];
    let text = |d| {
        c.view(d, &nb, &[], &boards).entries[0].public_replies[0]
            .text
            .clone()
    };
    assert_eq!(text(&c.teacher).as_deref(), Some("see you"));
    assert_eq!(text(&c.a1).as_deref(), Some("see you"));
    assert_eq!(text(&c.b1), None);
    // Withdrawn replies can't be edited back into view.
    assert!(matches!(
        write(&mut board, |tx| entries::edit_reply(
            tx,
            &c.actor(c.a1),
            reply,
            "again"
        )),
        Err(homeroom_core::ModelError::InvalidState(_))
    ));
}
