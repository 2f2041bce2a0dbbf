//! Events, slots and bookings: the conflict rows "two families book the same slot offline"
//! and "teacher withdraws or narrows a slot while families book", plus RSVPs and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod coordination_support;

use coordination_support::*;
use homeroom_core::events::{
    self, Attendance, BookingStatus, DeclineReason, DisplaceReason, EventKind, NewEvent, Outcome,
    RsvpSummary, SlotSpec,
};
use homeroom_core::{ItemId, ModelError, SeededIds};

fn conference(waitlist: bool) -> NewEvent<'static> {
    NewEvent {
        kind: EventKind::Conference,
        title: "Autumn conferences",
        location: "Room 3B",
        starts_at: T0 + DAY,
        ends_at: T0 + DAY + 2 * HOUR,
        waitlist,
    }
}

/// Three 15-minute slots with capacity 1 each.
fn three_slots() -> Vec<SlotSpec> {
    (0..3)
        .map(|i| SlotSpec {
            start: T0 + DAY + i * 15 * MIN,
            end: T0 + DAY + (i + 1) * 15 * MIN,
            capacity: 1,
        })
        .collect()
}

struct Setup {
    c: Class,
    ids: SeededIds,
    nb: automerge::Automerge,
    event: ItemId,
    slots: Vec<ItemId>,
}

fn setup(waitlist: bool, slots: &[SlotSpec]) -> Setup {
    let c = Class::new();
    let mut ids = SeededIds::new(1);
    let mut nb = c.replica(c.notebook());
    let (event, slots) = edit(&mut nb, c.t1, 1, |tx| {
        events::create_event(
            tx,
            &c.actor(c.t1, T0),
            &mut ids,
            &conference(waitlist),
            slots,
        )
    })
    .unwrap();
    Setup {
        c,
        ids,
        nb,
        event,
        slots,
    }
}

fn status_of(
    s: &Setup,
    nb: &automerge::Automerge,
    lane: &automerge::Automerge,
    f: homeroom_core::FamilyId,
) -> Vec<(BookingStatus, Vec<ItemId>)> {
    events::family_bookings(nb, lane, &s.c.roster, f)
        .unwrap()
        .into_iter()
        .map(|b| (b.status, b.alternatives))
        .collect()
}

#[test]
fn two_families_book_the_same_slot_offline_one_is_confirmed_the_other_told_with_alternatives() {
    let mut s = setup(false, &three_slots());
    let (c, slot) = (&s.c, s.slots[0]);
    // Both families have the notebook, then go offline and book the first slot.
    let mut lane1 = c.replica(c.lane(c.f1));
    let mut lane2 = c.replica(c.lane(c.f2));
    let nb_copy = fork(&s.nb);
    edit(&mut lane1, c.g1a, 2, |tx| {
        events::request_booking(
            tx,
            &c.actor(c.g1a, T0 + 100),
            &nb_copy,
            &mut s.ids,
            c.f1,
            s.event,
            slot,
            Some(c.s1a),
            "",
        )
    })
    .unwrap();
    edit(&mut lane2, c.g2, 3, |tx| {
        events::request_booking(
            tx,
            &c.actor(c.g2, T0 + 200),
            &nb_copy,
            &mut s.ids,
            c.f2,
            s.event,
            slot,
            None,
            "after 4pm",
        )
    })
    .unwrap();
    // Until a registrar decides, both are pending — never confirmed.
    assert_eq!(
        status_of(&s, &s.nb, &lane1, c.f1)[0].0,
        BookingStatus::Pending
    );
    assert_eq!(
        status_of(&s, &s.nb, &lane2, c.f2)[0].0,
        BookingStatus::Pending
    );

    // The teacher's device receives both lanes and decides.
    let decided = edit(&mut s.nb, c.t1, 1, |tx| {
        events::decide_bookings(
            tx,
            &c.actor(c.t1, T0 + 1000),
            &mut s.ids,
            &[(c.f2, &lane2), (c.f1, &lane1)],
        )
    })
    .unwrap();
    assert_eq!(decided.len(), 2);
    let by_family = |f| decided.iter().find(|d| d.family == f).unwrap().outcome;
    assert_eq!(by_family(c.f1), Outcome::Confirmed, "earlier request wins");
    assert_eq!(by_family(c.f2), Outcome::Declined);

    let one = status_of(&s, &s.nb, &lane1, c.f1);
    assert_eq!(one, vec![(BookingStatus::Confirmed, vec![])]);
    let two = status_of(&s, &s.nb, &lane2, c.f2);
    assert_eq!(
        two[0].0,
        BookingStatus::Declined {
            reason: DeclineReason::Full
        }
    );
    assert_eq!(
        two[0].1,
        vec![s.slots[1], s.slots[2]],
        "nearest free slots first"
    );

    let slots = events::slot_bookings(&s.nb, &c.roster, s.event).unwrap();
    assert_eq!(
        slots[0].confirmed,
        vec![(
            c.f1,
            events::family_bookings(&s.nb, &lane1, &c.roster, c.f1).unwrap()[0].request
        )]
    );
    let ev = events::read_event(&s.nb, &c.roster, s.event).unwrap();
    assert_eq!((ev.slots[0].confirmed, ev.slots[0].free), (1, 0));
    assert_eq!((ev.slots[1].confirmed, ev.slots[1].free), (0, 1));
}

#[test]
fn two_registrars_deciding_concurrently_never_show_two_confirmations() {
    let mut s = setup(true, &three_slots());
    let (c, slot) = (&s.c, s.slots[0]);
    let mut lane1 = c.replica(c.lane(c.f1));
    let mut lane2 = c.replica(c.lane(c.f2));
    edit(&mut lane1, c.g1a, 2, |tx| {
        events::request_booking(
            tx,
            &c.actor(c.g1a, T0 + 100),
            &s.nb,
            &mut s.ids,
            c.f1,
            s.event,
            slot,
            None,
            "",
        )
    })
    .unwrap();
    edit(&mut lane2, c.g2, 3, |tx| {
        events::request_booking(
            tx,
            &c.actor(c.g2, T0 + 200),
            &s.nb,
            &mut s.ids,
            c.f2,
            s.event,
            slot,
            None,
            "",
        )
    })
    .unwrap();

    // Two registrars, each seeing only one family's lane, decide concurrently. T2 decides
    // (by its clock) earlier, so its confirmation is the earliest.
    let mut nb2 = fork(&s.nb);
    edit(&mut s.nb, c.t1, 1, |tx| {
        events::decide_bookings(tx, &c.actor(c.t1, T0 + 5000), &mut s.ids, &[(c.f1, &lane1)])
    })
    .unwrap();
    edit(&mut nb2, c.t2, 4, |tx| {
        events::decide_bookings(tx, &c.actor(c.t2, T0 + 4000), &mut s.ids, &[(c.f2, &lane2)])
    })
    .unwrap();
    // Each alone shows its own confirmation.
    assert_eq!(
        status_of(&s, &s.nb, &lane1, c.f1)[0].0,
        BookingStatus::Confirmed
    );
    assert_eq!(
        status_of(&s, &nb2, &lane2, c.f2)[0].0,
        BookingStatus::Confirmed
    );

    sync(&mut s.nb, &mut nb2);
    for nb in [&s.nb, &nb2] {
        let slots = events::slot_bookings(nb, &c.roster, s.event).unwrap();
        assert_eq!(
            slots[0].confirmed.len(),
            1,
            "never two confirmations in the merged view"
        );
        assert_eq!(
            slots[0].confirmed[0].0, c.f2,
            "earliest decision keeps the place"
        );
        let one = status_of(&s, nb, &lane1, c.f1);
        assert_eq!(
            one[0].0,
            BookingStatus::Displaced {
                reason: DisplaceReason::OverCapacity
            }
        );
        assert_eq!(
            one[0].1,
            vec![s.slots[1], s.slots[2]],
            "the displaced family is offered slots"
        );
        assert_eq!(
            status_of(&s, nb, &lane2, c.f2)[0].0,
            BookingStatus::Confirmed
        );
    }

    // The next registrar run settles the displaced booking onto the waitlist.
    edit(&mut s.nb, c.t1, 1, |tx| {
        events::decide_bookings(
            tx,
            &c.actor(c.t1, T0 + 6000),
            &mut s.ids,
            &[(c.f1, &lane1), (c.f2, &lane2)],
        )
    })
    .unwrap();
    assert_eq!(
        status_of(&s, &s.nb, &lane1, c.f1)[0].0,
        BookingStatus::Waitlisted { position: 1 }
    );
    assert_eq!(
        events::slot_bookings(&s.nb, &c.roster, s.event).unwrap()[0]
            .confirmed
            .len(),
        1
    );

    // F2 cancels: at once it reads as cancelled; the registrar then promotes F1.
    edit(&mut lane2, c.g2, 3, |tx| {
        let req = events::family_bookings(&s.nb, &*tx, &c.roster, c.f2).unwrap()[0].request;
        events::cancel_booking(tx, &c.actor(c.g2, T0 + 7000), c.f2, req)
    })
    .unwrap();
    assert_eq!(
        status_of(&s, &s.nb, &lane2, c.f2)[0].0,
        BookingStatus::Cancelled
    );
    edit(&mut s.nb, c.t1, 1, |tx| {
        events::decide_bookings(
            tx,
            &c.actor(c.t1, T0 + 8000),
            &mut s.ids,
            &[(c.f1, &lane1), (c.f2, &lane2)],
        )
    })
    .unwrap();
    assert_eq!(
        status_of(&s, &s.nb, &lane1, c.f1)[0].0,
        BookingStatus::Confirmed
    );
    assert_eq!(
        status_of(&s, &s.nb, &lane2, c.f2)[0].0,
        BookingStatus::Cancelled
    );
    let slots = events::slot_bookings(&s.nb, &c.roster, s.event).unwrap();
    assert_eq!(
        slots[0].confirmed.iter().map(|x| x.0).collect::<Vec<_>>(),
        vec![c.f1]
    );
}

#[test]
fn teacher_withdraws_a_slot_while_families_book_and_they_are_displaced_not_dropped() {
    let mut s = setup(true, &three_slots());
    let (c, slot) = (&s.c, s.slots[0]);
    let mut lane1 = c.replica(c.lane(c.f1));
    let mut lane2 = c.replica(c.lane(c.f2));
    edit(&mut lane1, c.g1a, 2, |tx| {
        events::request_booking(
            tx,
            &c.actor(c.g1a, T0 + 100),
            &s.nb,
            &mut s.ids,
            c.f1,
            s.event,
            slot,
            None,
            "",
        )
    })
    .unwrap();
    edit(&mut s.nb, c.t1, 1, |tx| {
        events::decide_bookings(tx, &c.actor(c.t1, T0 + 200), &mut s.ids, &[(c.f1, &lane1)])
    })
    .unwrap();
    assert_eq!(
        status_of(&s, &s.nb, &lane1, c.f1)[0].0,
        BookingStatus::Confirmed
    );

    // Concurrently: the second teacher withdraws the slot; family 2 (not having seen that)
    // books it.
    let mut nb2 = fork(&s.nb);
    edit(&mut nb2, c.t2, 4, |tx| {
        events::withdraw_slot(tx, &c.actor(c.t2, T0 + 300), s.event, slot)
    })
    .unwrap();
    edit(&mut lane2, c.g2, 3, |tx| {
        events::request_booking(
            tx,
            &c.actor(c.g2, T0 + 300),
            &s.nb,
            &mut s.ids,
            c.f2,
            s.event,
            slot,
            None,
            "",
        )
    })
    .unwrap();
    sync(&mut s.nb, &mut nb2);

    let withdrawn = BookingStatus::Displaced {
        reason: DisplaceReason::Withdrawn,
    };
    let one = status_of(&s, &s.nb, &lane1, c.f1);
    assert_eq!(one, vec![(withdrawn.clone(), vec![s.slots[1], s.slots[2]])]);
    let two = status_of(&s, &s.nb, &lane2, c.f2);
    assert_eq!(two, vec![(withdrawn.clone(), vec![s.slots[1], s.slots[2]])]);

    // A registrar run confirms nothing on the withdrawn slot and keeps both told.
    edit(&mut s.nb, c.t1, 1, |tx| {
        events::decide_bookings(
            tx,
            &c.actor(c.t1, T0 + 400),
            &mut s.ids,
            &[(c.f1, &lane1), (c.f2, &lane2)],
        )
    })
    .unwrap();
    assert_eq!(status_of(&s, &s.nb, &lane1, c.f1)[0].0, withdrawn);
    assert_eq!(status_of(&s, &s.nb, &lane2, c.f2)[0].0, withdrawn);
    let slots = events::slot_bookings(&s.nb, &c.roster, s.event).unwrap();
    assert!(slots[0].confirmed.is_empty());
    assert_eq!(slots[0].displaced.len(), 1);
    // And the withdrawn slot cannot be booked any more.
    let err = edit(&mut lane2, c.g2, 3, |tx| {
        events::request_booking(
            tx,
            &c.actor(c.g2, T0 + 500),
            &s.nb,
            &mut s.ids,
            c.f2,
            s.event,
            slot,
            None,
            "",
        )
    });
    assert!(matches!(err, Err(ModelError::InvalidState(_))), "{err:?}");
}

#[test]
fn teacher_narrows_or_moves_a_slot_and_the_latest_confirmations_are_displaced() {
    let spec = SlotSpec {
        start: T0 + DAY,
        end: T0 + DAY + 30 * MIN,
        capacity: 2,
    };
    let other = SlotSpec {
        start: T0 + DAY + HOUR,
        end: T0 + DAY + HOUR + 30 * MIN,
        capacity: 1,
    };
    let mut s = setup(true, &[spec, other]);
    let (c, slot) = (&s.c, s.slots[0]);
    let mut lanes = [
        c.replica(c.lane(c.f1)),
        c.replica(c.lane(c.f2)),
        c.replica(c.lane(c.f3)),
    ];
    for (i, (g, f)) in [(c.g1a, c.f1), (c.g2, c.f2), (c.g3, c.f3)]
        .into_iter()
        .enumerate()
    {
        edit(&mut lanes[i], g, 2 + i as u8, |tx| {
            events::request_booking(
                tx,
                &c.actor(g, T0 + 100 * (i as i64 + 1)),
                &s.nb,
                &mut s.ids,
                f,
                s.event,
                slot,
                None,
                "",
            )
        })
        .unwrap();
    }
    let all = [(c.f1, &lanes[0]), (c.f2, &lanes[1]), (c.f3, &lanes[2])];
    edit(&mut s.nb, c.t1, 1, |tx| {
        events::decide_bookings(tx, &c.actor(c.t1, T0 + 1000), &mut s.ids, &all)
    })
    .unwrap();
    assert_eq!(
        status_of(&s, &s.nb, &lanes[2], c.f3)[0].0,
        BookingStatus::Waitlisted { position: 1 }
    );

    // Narrow to one place: the later of the two confirmations is displaced and told.
    edit(&mut s.nb, c.t2, 4, |tx| {
        events::change_slot(
            tx,
            &c.actor(c.t2, T0 + 2000),
            s.event,
            slot,
            SlotSpec {
                capacity: 1,
                ..spec
            },
        )
    })
    .unwrap();
    assert_eq!(
        status_of(&s, &s.nb, &lanes[0], c.f1)[0].0,
        BookingStatus::Confirmed
    );
    let two = status_of(&s, &s.nb, &lanes[1], c.f2);
    assert_eq!(
        two[0],
        (
            BookingStatus::Displaced {
                reason: DisplaceReason::OverCapacity
            },
            vec![s.slots[1]]
        )
    );
    assert_eq!(
        events::slot_bookings(&s.nb, &c.roster, s.event).unwrap()[0]
            .confirmed
            .len(),
        1
    );

    // Move the slot: the remaining confirmation is displaced (the family must re-confirm).
    edit(&mut s.nb, c.t2, 4, |tx| {
        events::change_slot(
            tx,
            &c.actor(c.t2, T0 + 3000),
            s.event,
            slot,
            SlotSpec {
                start: spec.start + 5 * MIN,
                capacity: 1,
                ..spec
            },
        )
    })
    .unwrap();
    assert_eq!(
        status_of(&s, &s.nb, &lanes[0], c.f1)[0].0,
        BookingStatus::Displaced {
            reason: DisplaceReason::SlotChanged
        }
    );

    // F2's confirmation (already beyond capacity) was for the old time too.
    assert_eq!(
        status_of(&s, &s.nb, &lanes[1], c.f2)[0].0,
        BookingStatus::Displaced {
            reason: DisplaceReason::SlotChanged
        }
    );

    // A registrar run gives the moved slot to the waitlist (F3) and settles the stale
    // confirmations, which stay displaced even if the time moves back.
    edit(&mut s.nb, c.t1, 1, |tx| {
        events::decide_bookings(tx, &c.actor(c.t1, T0 + 4000), &mut s.ids, &all)
    })
    .unwrap();
    assert_eq!(
        status_of(&s, &s.nb, &lanes[2], c.f3)[0].0,
        BookingStatus::Confirmed
    );
    edit(&mut s.nb, c.t2, 4, |tx| {
        events::change_slot(
            tx,
            &c.actor(c.t2, T0 + 5000),
            s.event,
            slot,
            SlotSpec {
                capacity: 1,
                ..spec
            },
        )
    })
    .unwrap();
    for (lane, f) in [(&lanes[0], c.f1), (&lanes[1], c.f2), (&lanes[2], c.f3)] {
        assert_eq!(
            status_of(&s, &s.nb, lane, f)[0].0,
            BookingStatus::Displaced {
                reason: DisplaceReason::SlotChanged
            }
        );
    }
    assert!(
        events::slot_bookings(&s.nb, &c.roster, s.event).unwrap()[0]
            .confirmed
            .is_empty()
    );
}

#[test]
fn rsvp_latest_answer_wins_and_is_counted_once_per_family() {
    let c = Class::new();
    let mut ids = SeededIds::new(3);
    let mut nb = c.replica(c.notebook());
    let open_day = NewEvent {
        kind: EventKind::OpenDay,
        title: "Open day",
        location: "",
        starts_at: T0 + DAY,
        ends_at: T0 + DAY + 3 * HOUR,
        waitlist: true,
    };
    let (event, _) = edit(&mut nb, c.t1, 1, |tx| {
        events::create_event(tx, &c.actor(c.t1, T0), &mut ids, &open_day, &[])
    })
    .unwrap();
    // Two guardians of family 1 answer concurrently on their own phones.
    let mut a = c.replica(c.lane(c.f1));
    let mut b = c.replica(c.lane(c.f1));
    edit(&mut a, c.g1a, 2, |tx| {
        events::rsvp(
            tx,
            &c.actor(c.g1a, T0 + 10),
            &nb,
            &mut ids,
            c.f1,
            event,
            Attendance::Yes,
            2,
        )
    })
    .unwrap();
    edit(&mut b, c.g1b, 3, |tx| {
        events::rsvp(
            tx,
            &c.actor(c.g1b, T0 + 20),
            &nb,
            &mut ids,
            c.f1,
            event,
            Attendance::No,
            0,
        )
    })
    .unwrap();
    sync(&mut a, &mut b);
    let r = events::family_rsvps(&a, &c.roster, c.f1).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].attendance, Attendance::No);
    assert_eq!(events::family_rsvps(&b, &c.roster, c.f1).unwrap(), r);
    // Guardian A, whose clock is behind, changes it after seeing B's: it still wins.
    edit(&mut a, c.g1a, 2, |tx| {
        events::rsvp(
            tx,
            &c.actor(c.g1a, T0 + 15),
            &nb,
            &mut ids,
            c.f1,
            event,
            Attendance::Yes,
            3,
        )
    })
    .unwrap();
    let mut f2 = c.replica(c.lane(c.f2));
    edit(&mut f2, c.g2, 4, |tx| {
        events::rsvp(
            tx,
            &c.actor(c.g2, T0 + 15),
            &nb,
            &mut ids,
            c.f2,
            event,
            Attendance::Maybe,
            1,
        )
    })
    .unwrap();
    let sum = events::rsvp_summary(&[(c.f1, &a), (c.f2, &f2)], &c.roster, event).unwrap();
    assert_eq!(
        sum,
        RsvpSummary {
            yes: 1,
            no: 0,
            maybe: 1,
            people: 3
        }
    );
}

#[test]
fn bad_event_and_booking_input_is_a_typed_error() {
    let mut s = setup(true, &three_slots());
    let c = &s.c;
    let staff = c.actor(c.t1, T0);
    let mut nb = fork(&s.nb);
    let bad = |e: NewEvent<'static>,
               slots: Vec<SlotSpec>,
               nb: &mut automerge::Automerge,
               ids: &mut SeededIds| {
        edit(nb, c.t1, 1, |tx| {
            events::create_event(tx, &staff, ids, &e, &slots)
        })
        .map(|_| ())
    };
    let field = |r: Result<(), ModelError>| match r {
        Err(ModelError::InvalidInput { field, .. }) => field,
        other => panic!("expected InvalidInput, got {other:?}"),
    };
    assert_eq!(
        field(bad(
            NewEvent {
                title: " ",
                ..conference(true)
            },
            vec![],
            &mut nb,
            &mut s.ids
        )),
        "title"
    );
    assert_eq!(
        field(bad(
            NewEvent {
                title: "a\u{0}b",
                ..conference(true)
            },
            vec![],
            &mut nb,
            &mut s.ids
        )),
        "title"
    );
    assert_eq!(
        field(bad(
            NewEvent {
                ends_at: T0,
                ..conference(true)
            },
            vec![],
            &mut nb,
            &mut s.ids
        )),
        "ends_at"
    );
    let zero = SlotSpec {
        start: T0 + DAY,
        end: T0 + DAY + MIN,
        capacity: 0,
    };
    assert_eq!(
        field(bad(conference(true), vec![zero], &mut nb, &mut s.ids)),
        "capacity"
    );
    let backwards = SlotSpec {
        start: T0 + DAY + MIN,
        end: T0 + DAY,
        capacity: 1,
    };
    assert_eq!(
        field(bad(conference(true), vec![backwards], &mut nb, &mut s.ids)),
        "end"
    );
    let outside = SlotSpec {
        start: T0,
        end: T0 + MIN,
        capacity: 1,
    };
    assert_eq!(
        field(bad(conference(true), vec![outside], &mut nb, &mut s.ids)),
        "slot"
    );

    // Roles.
    let r = edit(&mut nb, c.g1a, 2, |tx| {
        events::create_event(tx, &c.actor(c.g1a, T0), &mut s.ids, &conference(true), &[])
    });
    assert!(matches!(r, Err(ModelError::NotAllowed(_))));
    let r = edit(&mut nb, c.stranger, 9, |tx| {
        events::create_event(
            tx,
            &c.actor(c.stranger, T0),
            &mut s.ids,
            &conference(true),
            &[],
        )
    });
    assert!(matches!(r, Err(ModelError::NotAllowed(_))));
    let mut lane = c.replica(c.lane(c.f1));
    let r = edit(&mut lane, c.g2, 3, |tx| {
        events::request_booking(
            tx,
            &c.actor(c.g2, T0),
            &s.nb,
            &mut s.ids,
            c.f1,
            s.event,
            s.slots[0],
            None,
            "",
        )
    });
    assert!(
        matches!(r, Err(ModelError::NotAllowed(_))),
        "a guardian books only for their own family"
    );
    let r = edit(&mut lane, c.g1a, 2, |tx| {
        events::decide_bookings::<automerge::Automerge>(tx, &c.actor(c.g1a, T0), &mut s.ids, &[])
    });
    assert!(
        matches!(r, Err(ModelError::NotAllowed(_))),
        "only a registrar decides"
    );

    // Unknown ids.
    let unknown = ItemId([0xab; 8]);
    let r = edit(&mut lane, c.g1a, 2, |tx| {
        events::request_booking(
            tx,
            &c.actor(c.g1a, T0),
            &s.nb,
            &mut s.ids,
            c.f1,
            unknown,
            s.slots[0],
            None,
            "",
        )
    });
    assert!(
        matches!(r, Err(ModelError::UnknownId { kind: "event", .. })),
        "{r:?}"
    );
    let r = edit(&mut lane, c.g1a, 2, |tx| {
        events::request_booking(
            tx,
            &c.actor(c.g1a, T0),
            &s.nb,
            &mut s.ids,
            c.f1,
            s.event,
            unknown,
            None,
            "",
        )
    });
    assert!(
        matches!(r, Err(ModelError::UnknownId { kind: "slot", .. })),
        "{r:?}"
    );
    let r = edit(&mut lane, c.g1a, 2, |tx| {
        events::request_booking(
            tx,
            &c.actor(c.g1a, T0),
            &s.nb,
            &mut s.ids,
            c.f1,
            s.event,
            s.slots[0],
            Some(c.s2),
            "",
        )
    });
    assert!(
        matches!(
            r,
            Err(ModelError::UnknownId {
                kind: "student",
                ..
            })
        ),
        "another family's student: {r:?}"
    );
    let r = edit(&mut lane, c.g1a, 2, |tx| {
        events::cancel_booking(tx, &c.actor(c.g1a, T0), c.f1, unknown)
    });
    assert!(matches!(
        r,
        Err(ModelError::UnknownId {
            kind: "request",
            ..
        })
    ));
    let r = edit(&mut nb, c.t1, 1, |tx| {
        events::withdraw_slot(tx, &staff, s.event, unknown)
    });
    assert!(matches!(r, Err(ModelError::UnknownId { kind: "slot", .. })));

    // State: duplicate request, slot already started, note too long.
    edit(&mut lane, c.g1a, 2, |tx| {
        events::request_booking(
            tx,
            &c.actor(c.g1a, T0),
            &s.nb,
            &mut s.ids,
            c.f1,
            s.event,
            s.slots[0],
            None,
            "",
        )
    })
    .unwrap();
    let r = edit(&mut lane, c.g1b, 4, |tx| {
        events::request_booking(
            tx,
            &c.actor(c.g1b, T0),
            &s.nb,
            &mut s.ids,
            c.f1,
            s.event,
            s.slots[0],
            None,
            "",
        )
    });
    assert!(
        matches!(r, Err(ModelError::InvalidState(_))),
        "duplicate: {r:?}"
    );
    let r = edit(&mut lane, c.g1a, 2, |tx| {
        events::request_booking(
            tx,
            &c.actor(c.g1a, T0 + 2 * DAY),
            &s.nb,
            &mut s.ids,
            c.f1,
            s.event,
            s.slots[1],
            None,
            "",
        )
    });
    assert!(
        matches!(r, Err(ModelError::InvalidState(_))),
        "started: {r:?}"
    );
    let long = "x".repeat(events::MAX_NOTE + 1);
    let r = edit(&mut lane, c.g1a, 2, |tx| {
        events::request_booking(
            tx,
            &c.actor(c.g1a, T0),
            &s.nb,
            &mut s.ids,
            c.f1,
            s.event,
            s.slots[1],
            None,
            &long,
        )
    });
    assert!(matches!(
        r,
        Err(ModelError::InvalidInput { field: "note", .. })
    ));
    let r = edit(&mut lane, c.g1a, 2, |tx| {
        events::rsvp(
            tx,
            &c.actor(c.g1a, T0),
            &s.nb,
            &mut s.ids,
            c.f1,
            s.event,
            Attendance::Yes,
            0,
        )
    });
    assert!(matches!(
        r,
        Err(ModelError::InvalidInput {
            field: "people",
            ..
        })
    ));
    // Errors left nothing behind: the lane holds exactly the one good request.
    assert_eq!(
        events::family_bookings(&s.nb, &lane, &c.roster, c.f1)
            .unwrap()
            .len(),
        1
    );
}
