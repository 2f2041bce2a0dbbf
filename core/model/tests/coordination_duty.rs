//! Duty rosters: "two parents claim the same duty shift; swaps" — claims decided like
//! bookings, swaps need both parties and a claim still held — plus check-ins and hours.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod coordination_support;

use automerge::Automerge;
use coordination_support::*;
use homeroom_core::duty::{self, DutyKind, NewPost, SwapStatus};
use homeroom_core::events::{BookingStatus, SlotSpec};
use homeroom_core::{FamilyId, ItemId, ModelError, SeededIds};

struct Setup {
    c: Class,
    ids: SeededIds,
    nb: Automerge,
    post: ItemId,
    shifts: Vec<ItemId>,
    lanes: Vec<Automerge>,
}

fn setup(capacity: u32) -> Setup {
    let c = Class::new();
    let mut ids = SeededIds::new(11);
    let mut nb = c.replica(c.notebook());
    let shifts: Vec<SlotSpec> = (0..3)
        .map(|i| SlotSpec {
            start: T0 + (i + 1) * DAY,
            end: T0 + (i + 1) * DAY + 30 * MIN,
            capacity,
        })
        .collect();
    let (post, shifts) = edit(&mut nb, c.t1, 1, |tx| {
        duty::create_post(
            tx,
            &c.actor(c.t1, T0),
            &mut ids,
            &NewPost {
                kind: DutyKind::Traffic,
                title: "Gate duty",
                location: "North gate",
            },
            &shifts,
        )
    })
    .unwrap();
    let lanes = vec![
        c.replica(c.lane(c.f1)),
        c.replica(c.lane(c.f2)),
        c.replica(c.lane(c.f3)),
    ];
    Setup {
        c,
        ids,
        nb,
        post,
        shifts,
        lanes,
    }
}

impl Setup {
    fn claim(&mut self, i: usize, shift: ItemId, now: i64) -> Result<ItemId, ModelError> {
        let (g, f) = self.who(i);
        let c = &self.c;
        edit(&mut self.lanes[i], g, 2 + i as u8, |tx| {
            duty::claim_shift(
                tx,
                &c.actor(g, now),
                &self.nb,
                &mut self.ids,
                f,
                self.post,
                shift,
            )
        })
    }

    fn who(&self, i: usize) -> (homeroom_core::DeviceId, FamilyId) {
        [
            (self.c.g1a, self.c.f1),
            (self.c.g2, self.c.f2),
            (self.c.g3, self.c.f3),
        ][i]
    }

    fn decide(&mut self, now: i64) -> duty::DutyDecisions {
        let c = &self.c;
        let lanes = [
            (c.f1, &self.lanes[0]),
            (c.f2, &self.lanes[1]),
            (c.f3, &self.lanes[2]),
        ];
        edit(&mut self.nb, c.t1, 1, |tx| {
            duty::decide_claims(tx, &c.actor(c.t1, now), &mut self.ids, &lanes)
        })
        .unwrap()
    }

    fn claims(&self, i: usize) -> Vec<(ItemId, ItemId, BookingStatus, bool)> {
        let f = self.who(i).1;
        duty::family_claims(&self.nb, &self.lanes[i], &self.c.roster, f)
            .unwrap()
            .into_iter()
            .map(|c| (c.id, c.shift, c.status, c.via_swap))
            .collect()
    }

    fn swap(
        &mut self,
        i: usize,
        partner: FamilyId,
        give: Option<ItemId>,
        take: Option<ItemId>,
        now: i64,
    ) -> Result<ItemId, ModelError> {
        let (g, f) = self.who(i);
        let c = &self.c;
        edit(&mut self.lanes[i], g, 2 + i as u8, |tx| {
            duty::propose_swap(
                tx,
                &c.actor(g, now),
                &self.nb,
                &mut self.ids,
                f,
                partner,
                give,
                take,
            )
        })
    }

    fn swaps(&self, i: usize) -> Vec<SwapStatus> {
        let f = self.who(i).1;
        duty::family_swaps(&self.nb, &self.lanes[i], &self.c.roster, f)
            .unwrap()
            .into_iter()
            .map(|s| s.status)
            .collect()
    }
}

#[test]
fn two_parents_claim_the_same_shift_one_holds_it_the_other_waits() {
    let mut s = setup(1);
    let shift = s.shifts[0];
    let a = s.claim(0, shift, T0 + 100).unwrap();
    let b = s.claim(1, shift, T0 + 50).unwrap();
    assert_eq!(s.claims(0), vec![(a, shift, BookingStatus::Pending, false)]);
    // Two registrars decide concurrently: T2 sees only family 1's claim (and confirms it,
    // later by the clock); T1 sees both (confirms family 2's earlier claim).
    let mut nb2 = fork(&s.nb);
    {
        let c = &s.c;
        edit(&mut nb2, c.t2, 7, |tx| {
            duty::decide_claims(
                tx,
                &c.actor(c.t2, T0 + 1100),
                &mut s.ids,
                &[(c.f1, &s.lanes[0])],
            )
        })
        .unwrap();
    }
    s.decide(T0 + 1000);
    sync(&mut s.nb, &mut nb2);
    let roster = duty::shift_roster(&s.nb, &s.c.roster, s.post).unwrap();
    assert_eq!(
        roster[0].confirmed.len(),
        1,
        "never two holders of a one-place shift"
    );
    assert_eq!(
        roster[0].confirmed[0].1, b,
        "the earliest confirmation holds it"
    );
    assert_eq!(
        s.claims(0)[0].2,
        BookingStatus::Displaced {
            reason: homeroom_core::events::DisplaceReason::OverCapacity
        }
    );
    assert_eq!(s.claims(0)[0].0, a);
    s.decide(T0 + 2000);
    assert_eq!(s.claims(0)[0].2, BookingStatus::Waitlisted { position: 1 });
    assert_eq!(s.claims(1)[0].2, BookingStatus::Confirmed);
    let posts = duty::read_posts(&s.nb, &s.c.roster).unwrap();
    assert_eq!(
        (
            posts[0].shifts[0].confirmed,
            posts[0].shifts[0].waitlisted,
            posts[0].shifts[0].free
        ),
        (1, 1, 0)
    );
}

#[test]
fn a_swap_needs_both_parties_and_then_moves_the_shifts() {
    let mut s = setup(1);
    let (s1, s2) = (s.shifts[0], s.shifts[1]);
    let ca = s.claim(0, s1, T0 + 10).unwrap();
    let cb = s.claim(1, s2, T0 + 20).unwrap();
    s.decide(T0 + 100);
    let (f1, f2) = (s.c.f1, s.c.f2);

    // Family 1 offers to exchange its shift for family 2's.
    let ha = s.swap(0, f2, Some(ca), Some(cb), T0 + 200).unwrap();
    let out = s.decide(T0 + 300);
    assert!(out.swaps.is_empty(), "one party alone changes nothing");
    assert_eq!(s.swaps(0), vec![SwapStatus::AwaitingPartner]);
    assert_eq!(s.claims(0), vec![(ca, s1, BookingStatus::Confirmed, false)]);

    // Family 2 accepts with the mirrored half; the registrar executes it.
    let hb = s.swap(1, f1, Some(cb), Some(ca), T0 + 400).unwrap();
    let out = s.decide(T0 + 500);
    assert_eq!(out.swaps.len(), 1);
    assert!(out.swaps[0].done);
    assert_eq!(s.swaps(0), vec![SwapStatus::Done]);
    assert_eq!(s.swaps(1), vec![SwapStatus::Done]);
    assert_eq!(
        s.claims(0),
        vec![
            (ca, s1, BookingStatus::SwappedAway, false),
            (ha, s2, BookingStatus::Confirmed, true)
        ]
    );
    assert_eq!(
        s.claims(1),
        vec![
            (cb, s2, BookingStatus::SwappedAway, false),
            (hb, s1, BookingStatus::Confirmed, true)
        ]
    );
    let roster = duty::shift_roster(&s.nb, &s.c.roster, s.post).unwrap();
    assert_eq!(roster[0].confirmed, vec![(f2, hb)]);
    assert_eq!(roster[1].confirmed, vec![(f1, ha)]);
    // Running the registrar again changes nothing.
    let again = s.decide(T0 + 600);
    assert!(
        again.decided.is_empty() && again.swaps.is_empty(),
        "{again:?}"
    );
}

#[test]
fn a_swap_is_checked_against_the_claim_still_being_held() {
    let mut s = setup(1);
    let s1 = s.shifts[0];
    let ca = s.claim(0, s1, T0 + 10).unwrap();
    s.decide(T0 + 100);
    let (f1, f2) = (s.c.f1, s.c.f2);
    // A one-way handover from family 1 to family 2, both halves written...
    s.swap(0, f2, Some(ca), None, T0 + 200).unwrap();
    s.swap(1, f1, None, Some(ca), T0 + 210).unwrap();
    // ...but family 1's other guardian gives the shift up before the registrar sees them.
    {
        let c = &s.c;
        edit(&mut s.lanes[0], c.g1b, 9, |tx| {
            duty::cancel_claim(tx, &c.actor(c.g1b, T0 + 220), f1, ca)
        })
        .unwrap();
    }
    let out = s.decide(T0 + 300);
    assert_eq!(out.swaps.len(), 1);
    assert!(!out.swaps[0].done);
    assert_eq!(s.swaps(0), vec![SwapStatus::Failed]);
    assert_eq!(s.swaps(1), vec![SwapStatus::Failed]);
    assert!(
        s.claims(1).is_empty(),
        "family 2 got nothing: {:?}",
        s.claims(1)
    );
    assert_eq!(s.claims(0), vec![(ca, s1, BookingStatus::Cancelled, false)]);
    assert!(
        duty::shift_roster(&s.nb, &s.c.roster, s.post).unwrap()[0]
            .confirmed
            .is_empty()
    );

    // Proposing a swap of a claim not held is refused up front.
    let cb = s.claim(1, s.shifts[1], T0 + 400).unwrap();
    let r = s.swap(1, f1, Some(cb), None, T0 + 410);
    assert!(
        matches!(r, Err(ModelError::InvalidState(_))),
        "pending claim: {r:?}"
    );
    let r = s.swap(0, f2, None, Some(ca), T0 + 410);
    assert!(
        matches!(r, Err(ModelError::InvalidState(_))),
        "taking a claim the partner does not hold: {r:?}"
    );
    let r = s.swap(0, f1, None, Some(ca), T0 + 410);
    assert!(matches!(
        r,
        Err(ModelError::InvalidInput {
            field: "partner",
            ..
        })
    ));
    let r = s.swap(0, f2, None, None, T0 + 410);
    assert!(matches!(
        r,
        Err(ModelError::InvalidInput { field: "give", .. })
    ));
}

#[test]
fn check_ins_on_held_shifts_make_hours() {
    let mut s = setup(2);
    let ca = s.claim(0, s.shifts[0], T0 + 10).unwrap();
    let cb = s.claim(0, s.shifts[1], T0 + 11).unwrap();
    let pending = s.claim(1, s.shifts[0], T0 + 12).unwrap();
    let c = &s.c;
    let f1 = c.f1;
    // Not held yet: refused.
    let r = edit(&mut s.lanes[1], c.g2, 3, |tx| {
        duty::check_in(
            tx,
            &c.actor(c.g2, T0 + DAY),
            &s.nb,
            &mut s.ids,
            c.f2,
            pending,
        )
    });
    assert!(matches!(r, Err(ModelError::InvalidState(_))), "{r:?}");
    s.decide(T0 + 100);
    let c = &s.c;
    // Too early, then in the window (10 minutes before start), then staff on the family's behalf.
    let r = edit(&mut s.lanes[0], c.g1a, 2, |tx| {
        duty::check_in(
            tx,
            &c.actor(c.g1a, T0 + DAY - 2 * HOUR),
            &s.nb,
            &mut s.ids,
            f1,
            ca,
        )
    });
    assert!(matches!(r, Err(ModelError::InvalidState(_))), "{r:?}");
    edit(&mut s.lanes[0], c.g1a, 2, |tx| {
        duty::check_in(
            tx,
            &c.actor(c.g1a, T0 + DAY - 10 * MIN),
            &s.nb,
            &mut s.ids,
            f1,
            ca,
        )
    })
    .unwrap();
    let hours = duty::family_hours(&s.nb, &s.lanes[0], &c.roster, f1).unwrap();
    assert_eq!((hours.minutes, hours.shifts), (30, 1));
    edit(&mut s.lanes[0], c.t1, 1, |tx| {
        duty::check_in(
            tx,
            &c.actor(c.t1, T0 + 2 * DAY + 5 * MIN),
            &s.nb,
            &mut s.ids,
            f1,
            cb,
        )
    })
    .unwrap();
    let all = duty::class_hours(
        &s.nb,
        &[(c.f1, &s.lanes[0]), (c.f2, &s.lanes[1])],
        &c.roster,
    )
    .unwrap();
    assert_eq!(all[&c.f1].minutes, 60);
    assert_eq!(all[&c.f2].minutes, 0, "held but never checked in");
    let r = edit(&mut s.lanes[0], c.g2, 3, |tx| {
        duty::check_in(tx, &c.actor(c.g2, T0 + DAY), &s.nb, &mut s.ids, f1, ca)
    });
    assert!(matches!(r, Err(ModelError::NotAllowed(_))));
}

#[test]
fn bad_duty_input_is_a_typed_error() {
    let mut s = setup(1);
    let c = &s.c;
    let staff = c.actor(c.t1, T0);
    let post = NewPost {
        kind: DutyKind::Supervision,
        title: "",
        location: "",
    };
    let r = edit(&mut s.nb, c.t1, 1, |tx| {
        duty::create_post(tx, &staff, &mut s.ids, &post, &[])
    });
    assert!(matches!(
        r,
        Err(ModelError::InvalidInput { field: "title", .. })
    ));
    let post = NewPost {
        title: "Lunch",
        ..post
    };
    let bad = SlotSpec {
        start: T0,
        end: T0 + MIN,
        capacity: 0,
    };
    let r = edit(&mut s.nb, c.t1, 1, |tx| {
        duty::create_post(tx, &staff, &mut s.ids, &post, &[bad])
    });
    assert!(matches!(
        r,
        Err(ModelError::InvalidInput {
            field: "capacity",
            ..
        })
    ));
    let r = edit(&mut s.nb, c.t1, 1, |tx| {
        duty::add_shift(
            tx,
            &staff,
            &mut s.ids,
            ItemId([9; 8]),
            SlotSpec { capacity: 1, ..bad },
        )
    });
    assert!(matches!(r, Err(ModelError::UnknownId { kind: "post", .. })));
    let r = s.claim(0, ItemId([9; 8]), T0);
    assert!(matches!(
        r,
        Err(ModelError::UnknownId { kind: "shift", .. })
    ));
    s.claim(0, s.shifts[0], T0).unwrap();
    let r = s.claim(0, s.shifts[0], T0);
    assert!(
        matches!(r, Err(ModelError::InvalidState(_))),
        "duplicate claim"
    );
    let c = &s.c;
    edit(&mut s.nb, c.t1, 1, |tx| {
        duty::withdraw_shift(tx, &c.actor(c.t1, T0), s.post, s.shifts[1])
    })
    .unwrap();
    let r = s.claim(1, s.shifts[1], T0);
    assert!(
        matches!(r, Err(ModelError::InvalidState(_))),
        "withdrawn shift"
    );
    let c = &s.c;
    let r = edit(&mut s.lanes[0], c.g1a, 2, |tx| {
        duty::cancel_claim(tx, &c.actor(c.g1a, T0), c.f1, ItemId([8; 8]))
    });
    assert!(matches!(
        r,
        Err(ModelError::UnknownId { kind: "claim", .. })
    ));
    let r = edit(&mut s.nb, c.g1a, 2, |tx| {
        duty::cancel_post(tx, &c.actor(c.g1a, T0), s.post)
    });
    assert!(matches!(r, Err(ModelError::NotAllowed(_))));
}
