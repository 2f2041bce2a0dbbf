//! Random operation sequences on three replicas (sites), merged in random orders and
//! partitions. After every step the site that changed must keep the rules (no slot, shift
//! or capped chain place held twice; homework statuses only move up); at the end every
//! replica must converge to identical read results, with no request, claim, chain line or
//! answer lost.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod coordination_support;

use std::collections::{BTreeMap, BTreeSet};

use automerge::Automerge;
use coordination_support::*;
use homeroom_core::chains::{self, ChainPlace, LineKey, NewChain};
use homeroom_core::duty::{self, DutyKind, NewPost};
use homeroom_core::events::{self, BookingStatus, EventKind, NewEvent, SlotSpec};
use homeroom_core::homework::{self, HomeworkState, HomeworkStatus};
use homeroom_core::surveys::{self, Answer, NewQuestion, NewSurvey, QuestionSpec};
use homeroom_core::{DeviceId, FamilyId, ItemId, ModelError, SeededIds, StudentId};
use proptest::prelude::*;

const SITES: usize = 3;
/// Clock skew per site, ms.
const SKEW: [i64; SITES] = [0, -700, 400];
const FAR: i64 = T0 + 10 * DAY;

#[derive(Debug, Clone)]
enum Op {
    CreateEvent {
        site: usize,
        staff: bool,
        slots: u8,
        cap: u32,
        waitlist: bool,
    },
    ChangeSlot {
        site: usize,
        pick: usize,
        cap: u32,
        move_it: bool,
    },
    WithdrawSlot {
        site: usize,
        pick: usize,
    },
    Book {
        site: usize,
        fam: usize,
        alt: bool,
        pick: usize,
    },
    CancelBooking {
        site: usize,
        fam: usize,
        pick: usize,
    },
    DecideBookings {
        site: usize,
        staff: bool,
    },
    CreatePost {
        site: usize,
        cap: u32,
    },
    Claim {
        site: usize,
        fam: usize,
        alt: bool,
        pick: usize,
    },
    CancelClaim {
        site: usize,
        fam: usize,
        pick: usize,
    },
    OfferSwap {
        site: usize,
        fam: usize,
        partner: usize,
        pick: usize,
        exchange: bool,
    },
    AcceptSwap {
        site: usize,
        fam: usize,
        pick: usize,
    },
    DecideClaims {
        site: usize,
        staff: bool,
    },
    CreateSurvey {
        site: usize,
    },
    Answer {
        site: usize,
        fam: usize,
        alt: bool,
        pick: usize,
        value: u8,
    },
    SealSurvey {
        site: usize,
        pick: usize,
    },
    CreateChain {
        site: usize,
        cap: Option<u32>,
        per_student: bool,
    },
    AddLine {
        site: usize,
        fam: usize,
        alt: bool,
        pick: usize,
        student: usize,
    },
    WithdrawLine {
        site: usize,
        fam: usize,
        pick: usize,
    },
    Homework {
        site: usize,
        fam: usize,
        staff: bool,
        entry: u8,
        student: usize,
        status: u8,
    },
    ReturnHomework {
        site: usize,
        fam: usize,
        entry: u8,
        student: usize,
    },
    Sync {
        from: usize,
        to: usize,
    },
    Tick {
        ms: i64,
    },
}

/// A site, most often the first (so operations build on each other between merges).
fn site() -> impl Strategy<Value = usize> + Clone {
    prop_oneof![3 => Just(0usize), 1 => Just(1usize), 1 => Just(2usize)]
}

/// Operations around places: bookings, claims, swaps, registrars, slot edits.
fn allocation_op() -> impl Strategy<Value = Op> {
    let s = site();
    let f = 0..3usize;
    prop_oneof![
        1 => (s.clone(), any::<bool>(), 1..4u8, 1..3u32, any::<bool>())
            .prop_map(|(site, staff, slots, cap, waitlist)| Op::CreateEvent { site, staff, slots, cap, waitlist }),
        1 => (s.clone(), any::<usize>(), 1..3u32, any::<bool>())
            .prop_map(|(site, pick, cap, move_it)| Op::ChangeSlot { site, pick, cap, move_it }),
        1 => (s.clone(), any::<usize>()).prop_map(|(site, pick)| Op::WithdrawSlot { site, pick }),
        5 => (s.clone(), f.clone(), any::<bool>(), any::<usize>())
            .prop_map(|(site, fam, alt, pick)| Op::Book { site, fam, alt, pick }),
        1 => (s.clone(), f.clone(), any::<usize>()).prop_map(|(site, fam, pick)| Op::CancelBooking { site, fam, pick }),
        3 => (s.clone(), any::<bool>()).prop_map(|(site, staff)| Op::DecideBookings { site, staff }),
        1 => (s.clone(), 1..3u32).prop_map(|(site, cap)| Op::CreatePost { site, cap }),
        4 => (s.clone(), f.clone(), any::<bool>(), any::<usize>())
            .prop_map(|(site, fam, alt, pick)| Op::Claim { site, fam, alt, pick }),
        1 => (s.clone(), f.clone(), any::<usize>()).prop_map(|(site, fam, pick)| Op::CancelClaim { site, fam, pick }),
        3 => (s.clone(), f.clone(), f.clone(), any::<usize>(), any::<bool>())
            .prop_map(|(site, fam, partner, pick, exchange)| Op::OfferSwap { site, fam, partner, pick, exchange }),
        4 => (s.clone(), f.clone(), any::<usize>()).prop_map(|(site, fam, pick)| Op::AcceptSwap { site, fam, pick }),
        4 => (s.clone(), any::<bool>()).prop_map(|(site, staff)| Op::DecideClaims { site, staff }),
        8 => (s.clone(), s.clone()).prop_map(|(from, to)| Op::Sync { from, to }),
        1 => (1..(10 * MIN)).prop_map(|ms| Op::Tick { ms }),
    ]
}

/// Operations around per-family registers and sets: survey answers and seals, chain lines,
/// homework statuses and returns.
fn register_op() -> impl Strategy<Value = Op> {
    let s = site();
    let f = 0..3usize;
    prop_oneof![
        1 => s.clone().prop_map(|site| Op::CreateSurvey { site }),
        5 => (s.clone(), f.clone(), any::<bool>(), any::<usize>(), 1..6u8)
            .prop_map(|(site, fam, alt, pick, value)| Op::Answer { site, fam, alt, pick, value }),
        2 => (s.clone(), any::<usize>()).prop_map(|(site, pick)| Op::SealSurvey { site, pick }),
        1 => (s.clone(), proptest::option::of(1..3u32), any::<bool>())
            .prop_map(|(site, cap, per_student)| Op::CreateChain { site, cap, per_student }),
        4 => (s.clone(), f.clone(), any::<bool>(), any::<usize>(), any::<usize>())
            .prop_map(|(site, fam, alt, pick, student)| Op::AddLine { site, fam, alt, pick, student }),
        1 => (s.clone(), f.clone(), any::<usize>()).prop_map(|(site, fam, pick)| Op::WithdrawLine { site, fam, pick }),
        5 => (s.clone(), f.clone(), any::<bool>(), 0..1u8, any::<usize>(), 0..3u8)
            .prop_map(|(site, fam, staff, entry, student, status)| Op::Homework { site, fam, staff, entry, student, status }),
        3 => (s.clone(), f.clone(), 0..1u8, any::<usize>())
            .prop_map(|(site, fam, entry, student)| Op::ReturnHomework { site, fam, entry, student }),
        7 => (s.clone(), s.clone()).prop_map(|(from, to)| Op::Sync { from, to }),
        3 => (1..(2 * HOUR)).prop_map(|ms| Op::Tick { ms }),
    ]
}

struct Site {
    nb: Automerge,
    lanes: Vec<Automerge>,
}

struct World {
    c: Class,
    ids: SeededIds,
    sites: Vec<Site>,
    now: i64,
    /// Everything written that must never be lost: (family index, id).
    requests: BTreeSet<(usize, ItemId)>,
    claims: BTreeSet<(usize, ItemId)>,
    lines: BTreeSet<(usize, ItemId, LineKey)>,
    answers: BTreeSet<(usize, ItemId, ItemId)>,
    /// Last homework state seen per (site, family, entry, student).
    homework: BTreeMap<(usize, usize, ItemId, StudentId), HomeworkState>,
}

fn survey(closes_at: i64) -> NewSurvey<'static> {
    const QS: &[NewQuestion<'static>] = &[
        NewQuestion {
            prompt: "Rate",
            spec: QuestionSpec::Rating { max: 5 },
        },
        NewQuestion {
            prompt: "Pick",
            spec: QuestionSpec::SingleChoice(&["a", "b", "c", "d", "e"]),
        },
    ];
    NewSurvey {
        title: "Survey",
        anonymous: false,
        opens_at: T0,
        closes_at,
        grace_ms: 30 * MIN,
        questions: QS,
    }
}

fn pick<T: Clone>(v: &[T], i: usize) -> Option<T> {
    (!v.is_empty()).then(|| v[i % v.len()].clone())
}

/// An error from a random operation must be one a caller can act on, never a corruption.
fn expected(r: Result<(), ModelError>) {
    match r {
        Ok(())
        | Err(ModelError::InvalidInput { .. })
        | Err(ModelError::UnknownId { .. })
        | Err(ModelError::NotAllowed(_))
        | Err(ModelError::InvalidState(_)) => {}
        Err(e) => panic!("unexpected error: {e:?}"),
    }
}

impl World {
    /// Three sites sharing a starting notebook: a conference with three slots (capacities
    /// 1, 1, 2), a duty post with two shifts (1, 2), a survey closing in two hours, a
    /// capped chain and a capped one-per-student chain. Random operations add more.
    fn new(seed: u64, waitlist: bool) -> World {
        let c = Class::new();
        let mut ids = SeededIds::new(seed);
        let mut nb = c.replica(c.notebook());
        let actor = c.actor(c.t1, T0);
        edit(&mut nb, c.t1, 0, |tx| {
            let ev = NewEvent {
                kind: EventKind::Conference,
                title: "Conferences",
                location: "",
                starts_at: FAR,
                ends_at: FAR + DAY,
                waitlist,
            };
            let slots: Vec<SlotSpec> = [1, 1, 2]
                .iter()
                .enumerate()
                .map(|(k, cap)| SlotSpec {
                    start: FAR + k as i64 * 15 * MIN,
                    end: FAR + (k as i64 + 1) * 15 * MIN,
                    capacity: *cap,
                })
                .collect();
            events::create_event(tx, &actor, &mut ids, &ev, &slots)?;
            let shifts: Vec<SlotSpec> = [1, 2]
                .iter()
                .enumerate()
                .map(|(k, cap)| SlotSpec {
                    start: FAR + k as i64 * HOUR,
                    end: FAR + k as i64 * HOUR + 30 * MIN,
                    capacity: *cap,
                })
                .collect();
            duty::create_post(
                tx,
                &actor,
                &mut ids,
                &NewPost {
                    kind: DutyKind::Traffic,
                    title: "Gate",
                    location: "",
                },
                &shifts,
            )?;
            surveys::create_survey(tx, &actor, &mut ids, &survey(T0 + 2 * HOUR))?;
            for per_student in [false, true] {
                let ch = NewChain {
                    title: "Outing",
                    description: "",
                    one_per_student: per_student,
                    capacity: Some(2),
                    closes_at: None,
                };
                chains::create_chain(tx, &actor, &mut ids, &ch)?;
            }
            Ok(())
        })
        .unwrap();
        let sites = (0..SITES)
            .map(|_| Site {
                nb: fork(&nb),
                lanes: [c.f1, c.f2, c.f3]
                    .iter()
                    .map(|f| c.replica(c.lane(*f)))
                    .collect(),
            })
            .collect();
        World {
            c,
            ids,
            sites,
            now: T0,
            requests: BTreeSet::new(),
            claims: BTreeSet::new(),
            lines: BTreeSet::new(),
            answers: BTreeSet::new(),
            homework: BTreeMap::new(),
        }
    }

    fn fam(&self, i: usize) -> FamilyId {
        [self.c.f1, self.c.f2, self.c.f3][i]
    }

    fn guardian(&self, i: usize, alt: bool) -> DeviceId {
        match (i, alt) {
            (0, false) => self.c.g1a,
            (0, true) => self.c.g1b,
            (1, _) => self.c.g2,
            _ => self.c.g3,
        }
    }

    fn staff(&self, t1: bool) -> DeviceId {
        if t1 { self.c.t1 } else { self.c.t2 }
    }

    fn students(&self, i: usize) -> Vec<StudentId> {
        self.c.roster.families[&self.fam(i)]
            .students
            .keys()
            .copied()
            .collect()
    }

    fn at(&self, site: usize) -> i64 {
        self.now + SKEW[site]
    }

    fn lanes_at(&self, site: usize) -> Vec<(FamilyId, &Automerge)> {
        (0..3)
            .map(|i| (self.fam(i), &self.sites[site].lanes[i]))
            .collect()
    }

    fn slots(&self, site: usize) -> Vec<(ItemId, ItemId)> {
        let evs = events::read_events(&self.sites[site].nb, &self.c.roster).unwrap();
        evs.iter()
            .flat_map(|e| e.slots.iter().map(move |s| (e.id, s.id)))
            .collect()
    }

    fn shifts(&self, site: usize) -> Vec<(ItemId, ItemId)> {
        let posts = duty::read_posts(&self.sites[site].nb, &self.c.roster).unwrap();
        posts
            .iter()
            .flat_map(|p| p.shifts.iter().map(move |s| (p.id, s.id)))
            .collect()
    }

    fn apply(&mut self, op: &Op) {
        self.now += 1000;
        let c = &self.c;
        match *op {
            Op::Tick { ms } => self.now += ms,
            Op::Sync { from, to } => {
                if from != to {
                    let (a, b) = two(&mut self.sites, from, to);
                    b.nb.merge(&mut a.nb).unwrap();
                    for i in 0..3 {
                        b.lanes[i].merge(&mut a.lanes[i]).unwrap();
                    }
                }
            }
            Op::CreateEvent {
                site,
                staff,
                slots,
                cap,
                waitlist,
            } => {
                let d = self.staff(staff);
                let specs: Vec<SlotSpec> = (0..i64::from(slots))
                    .map(|k| SlotSpec {
                        start: FAR + k * 15 * MIN,
                        end: FAR + (k + 1) * 15 * MIN,
                        capacity: cap,
                    })
                    .collect();
                let ev = NewEvent {
                    kind: EventKind::Conference,
                    title: "Conferences",
                    location: "",
                    starts_at: FAR,
                    ends_at: FAR + DAY,
                    waitlist,
                };
                let actor = c.actor(d, self.at(site));
                let r = edit(&mut self.sites[site].nb, d, site as u8, |tx| {
                    events::create_event(tx, &actor, &mut self.ids, &ev, &specs)
                });
                expected(r.map(|_| ()));
            }
            Op::ChangeSlot {
                site,
                pick: p,
                cap,
                move_it,
            } => {
                let Some((e, s)) = pick(&self.slots(site), p) else {
                    return;
                };
                let shift = if move_it { 5 * MIN } else { 0 };
                let spec = SlotSpec {
                    start: FAR + shift,
                    end: FAR + shift + 10 * MIN,
                    capacity: cap,
                };
                let actor = c.actor(c.t2, self.at(site));
                let r = edit(&mut self.sites[site].nb, c.t2, site as u8, |tx| {
                    events::change_slot(tx, &actor, e, s, spec)
                });
                expected(r);
            }
            Op::WithdrawSlot { site, pick: p } => {
                let Some((e, s)) = pick(&self.slots(site), p) else {
                    return;
                };
                let actor = c.actor(c.t1, self.at(site));
                let r = edit(&mut self.sites[site].nb, c.t1, site as u8, |tx| {
                    events::withdraw_slot(tx, &actor, e, s)
                });
                expected(r);
            }
            Op::Book {
                site,
                fam,
                alt,
                pick: p,
            } => {
                let Some((e, s)) = pick(&self.slots(site), p) else {
                    return;
                };
                let d = self.guardian(fam, alt);
                let f = self.fam(fam);
                let actor = c.actor(d, self.at(site));
                let Site { nb, lanes } = &mut self.sites[site];
                let r = edit(&mut lanes[fam], d, site as u8, |tx| {
                    events::request_booking(tx, &actor, &*nb, &mut self.ids, f, e, s, None, "")
                });
                if let Ok(id) = &r {
                    self.requests.insert((fam, *id));
                }
                expected(r.map(|_| ()));
            }
            Op::CancelBooking { site, fam, pick: p } => {
                let f = self.fam(fam);
                let mine = events::family_bookings(
                    &self.sites[site].nb,
                    &self.sites[site].lanes[fam],
                    &c.roster,
                    f,
                )
                .unwrap();
                let Some(b) = pick(&mine, p) else { return };
                let d = self.guardian(fam, false);
                let actor = c.actor(d, self.at(site));
                let r = edit(&mut self.sites[site].lanes[fam], d, site as u8, |tx| {
                    events::cancel_booking(tx, &actor, f, b.request)
                });
                expected(r);
            }
            Op::DecideBookings { site, staff } => {
                let d = self.staff(staff);
                let actor = c.actor(d, self.at(site));
                let Site { nb, lanes } = &mut self.sites[site];
                let lanes: Vec<(FamilyId, &Automerge)> =
                    (0..3).map(|i| ([c.f1, c.f2, c.f3][i], &lanes[i])).collect();
                let r = edit(nb, d, site as u8, |tx| {
                    events::decide_bookings(tx, &actor, &mut self.ids, &lanes)
                });
                expected(r.map(|_| ()));
            }
            Op::CreatePost { site, cap } => {
                let specs: Vec<SlotSpec> = (0..2)
                    .map(|k| SlotSpec {
                        start: FAR + k * HOUR,
                        end: FAR + k * HOUR + 30 * MIN,
                        capacity: cap,
                    })
                    .collect();
                let post = NewPost {
                    kind: DutyKind::Volunteer,
                    title: "Fair",
                    location: "",
                };
                let actor = c.actor(c.t1, self.at(site));
                let r = edit(&mut self.sites[site].nb, c.t1, site as u8, |tx| {
                    duty::create_post(tx, &actor, &mut self.ids, &post, &specs)
                });
                expected(r.map(|_| ()));
            }
            Op::Claim {
                site,
                fam,
                alt,
                pick: p,
            } => {
                let Some((post, s)) = pick(&self.shifts(site), p) else {
                    return;
                };
                let d = self.guardian(fam, alt);
                let f = self.fam(fam);
                let actor = c.actor(d, self.at(site));
                let Site { nb, lanes } = &mut self.sites[site];
                let r = edit(&mut lanes[fam], d, site as u8, |tx| {
                    duty::claim_shift(tx, &actor, &*nb, &mut self.ids, f, post, s)
                });
                if let Ok(id) = &r {
                    self.claims.insert((fam, *id));
                }
                expected(r.map(|_| ()));
            }
            Op::CancelClaim { site, fam, pick: p } => {
                let f = self.fam(fam);
                let mine = duty::family_claims(
                    &self.sites[site].nb,
                    &self.sites[site].lanes[fam],
                    &c.roster,
                    f,
                )
                .unwrap();
                let Some(cl) = pick(&mine, p) else { return };
                let d = self.guardian(fam, true);
                let actor = c.actor(d, self.at(site));
                let r = edit(&mut self.sites[site].lanes[fam], d, site as u8, |tx| {
                    duty::cancel_claim(tx, &actor, f, cl.id)
                });
                expected(r);
            }
            Op::OfferSwap {
                site,
                fam,
                partner,
                pick: p,
                exchange,
            } => {
                let (f, pf) = (self.fam(fam), self.fam(partner));
                let held = |i: usize| -> Vec<ItemId> {
                    let s = &self.sites[site];
                    duty::family_claims(&s.nb, &s.lanes[i], &c.roster, self.fam(i))
                        .unwrap()
                        .into_iter()
                        .filter(|x| x.status == BookingStatus::Confirmed)
                        .map(|x| x.id)
                        .collect()
                };
                let give = pick(&held(fam), p);
                let take = if exchange {
                    pick(&held(partner), p)
                } else {
                    None
                };
                let d = self.guardian(fam, false);
                let actor = c.actor(d, self.at(site));
                let Site { nb, lanes } = &mut self.sites[site];
                let r = edit(&mut lanes[fam], d, site as u8, |tx| {
                    duty::propose_swap(tx, &actor, &*nb, &mut self.ids, f, pf, give, take)
                });
                expected(r.map(|_| ()));
            }
            Op::AcceptSwap { site, fam, pick: p } => {
                // Mirror a half some other family addressed to us (as if told out of band).
                let f = self.fam(fam);
                let s = &self.sites[site];
                let offers: Vec<(FamilyId, duty::Swap)> = (0..3)
                    .filter(|i| *i != fam)
                    .flat_map(|i| {
                        duty::family_swaps(&s.nb, &s.lanes[i], &c.roster, self.fam(i))
                            .unwrap()
                            .into_iter()
                            .filter(|h| h.partner == f)
                            .map(move |h| (h.family, h))
                    })
                    .collect();
                let Some((from, h)) = pick(&offers, p) else {
                    return;
                };
                let d = self.guardian(fam, true);
                let actor = c.actor(d, self.at(site));
                let Site { nb, lanes } = &mut self.sites[site];
                let r = edit(&mut lanes[fam], d, site as u8, |tx| {
                    duty::propose_swap(tx, &actor, &*nb, &mut self.ids, f, from, h.take, h.give)
                });
                expected(r.map(|_| ()));
            }
            Op::DecideClaims { site, staff } => {
                let d = self.staff(staff);
                let actor = c.actor(d, self.at(site));
                let Site { nb, lanes } = &mut self.sites[site];
                let lanes: Vec<(FamilyId, &Automerge)> =
                    (0..3).map(|i| ([c.f1, c.f2, c.f3][i], &lanes[i])).collect();
                let r = edit(nb, d, site as u8, |tx| {
                    duty::decide_claims(tx, &actor, &mut self.ids, &lanes)
                });
                expected(r.map(|_| ()));
            }
            Op::CreateSurvey { site } => {
                let s = survey(self.now + 2 * HOUR);
                let actor = c.actor(c.t2, self.at(site));
                let r = edit(&mut self.sites[site].nb, c.t2, site as u8, |tx| {
                    surveys::create_survey(tx, &actor, &mut self.ids, &s)
                });
                expected(r.map(|_| ()));
            }
            Op::Answer {
                site,
                fam,
                alt,
                pick: p,
                value,
            } => {
                let svs = surveys::read_surveys(&self.sites[site].nb, &c.roster).unwrap();
                let qs: Vec<(ItemId, ItemId)> = svs
                    .iter()
                    .flat_map(|s| s.questions.iter().map(move |q| (s.id, q.id)))
                    .collect();
                let Some((sid, qid)) = pick(&qs, p) else {
                    return;
                };
                let ans = if qs.iter().position(|x| *x == (sid, qid)).unwrap_or(0) % 2 == 0 {
                    Answer::Rating(value)
                } else {
                    Answer::Choice(u32::from(value) - 1)
                };
                let d = self.guardian(fam, alt);
                let f = self.fam(fam);
                let actor = c.actor(d, self.at(site));
                let Site { nb, lanes } = &mut self.sites[site];
                let r = edit(&mut lanes[fam], d, site as u8, |tx| {
                    surveys::answer(tx, &actor, &*nb, f, sid, qid, &ans)
                });
                if r.is_ok() {
                    self.answers.insert((fam, sid, qid));
                }
                expected(r.map(|_| ()));
            }
            Op::SealSurvey { site, pick: p } => {
                let svs = surveys::read_surveys(&self.sites[site].nb, &c.roster).unwrap();
                let Some(s) = pick(&svs, p) else { return };
                let actor = c.actor(c.t1, self.at(site));
                let Site { nb, lanes } = &mut self.sites[site];
                let lanes: Vec<(FamilyId, &Automerge)> =
                    (0..3).map(|i| ([c.f1, c.f2, c.f3][i], &lanes[i])).collect();
                let r = edit(nb, c.t1, site as u8, |tx| {
                    surveys::seal_survey(tx, &actor, &mut self.ids, s.id, &lanes, None)
                });
                expected(r.map(|_| ()));
            }
            Op::CreateChain {
                site,
                cap,
                per_student,
            } => {
                let ch = NewChain {
                    title: "Outing",
                    description: "",
                    one_per_student: per_student,
                    capacity: cap,
                    closes_at: None,
                };
                let actor = c.actor(c.t1, self.at(site));
                let r = edit(&mut self.sites[site].nb, c.t1, site as u8, |tx| {
                    chains::create_chain(tx, &actor, &mut self.ids, &ch)
                });
                expected(r.map(|_| ()));
            }
            Op::AddLine {
                site,
                fam,
                alt,
                pick: p,
                student,
            } => {
                let chs = chains::read_chains(&self.sites[site].nb, &c.roster).unwrap();
                let Some(ch) = pick(&chs, p) else { return };
                let st = ch
                    .one_per_student
                    .then(|| pick(&self.students(fam), student))
                    .flatten();
                let d = self.guardian(fam, alt);
                let f = self.fam(fam);
                let actor = c.actor(d, self.at(site));
                let Site { nb, lanes } = &mut self.sites[site];
                let r = edit(&mut lanes[fam], d, site as u8, |tx| {
                    chains::add_line(tx, &actor, &*nb, &mut self.ids, f, ch.id, st, "line")
                });
                if let Ok(k) = &r {
                    self.lines.insert((fam, ch.id, *k));
                }
                expected(r.map(|_| ()));
            }
            Op::WithdrawLine { site, fam, pick: p } => {
                let mine: Vec<(ItemId, LineKey)> = self
                    .lines
                    .iter()
                    .filter(|l| l.0 == fam)
                    .map(|l| (l.1, l.2))
                    .collect();
                let Some((ch, k)) = pick(&mine, p) else {
                    return;
                };
                let d = self.guardian(fam, false);
                let f = self.fam(fam);
                let actor = c.actor(d, self.at(site));
                let r = edit(&mut self.sites[site].lanes[fam], d, site as u8, |tx| {
                    chains::withdraw_line(tx, &actor, f, ch, k)
                });
                expected(r);
            }
            Op::Homework {
                site,
                fam,
                staff,
                entry,
                student,
                status,
            } => {
                let st = pick(&self.students(fam), student).unwrap_or(StudentId([0; 8]));
                let status = [
                    HomeworkStatus::Done,
                    HomeworkStatus::Submitted,
                    HomeworkStatus::Graded,
                ][usize::from(status)];
                let d = if staff {
                    c.t2
                } else {
                    self.guardian(fam, false)
                };
                let f = self.fam(fam);
                let actor = c.actor(d, self.at(site));
                let r = edit(&mut self.sites[site].lanes[fam], d, site as u8, |tx| {
                    homework::set_homework_status(
                        tx,
                        &actor,
                        f,
                        ItemId([0xe0 + entry; 8]),
                        st,
                        status,
                    )
                });
                expected(r.map(|_| ()));
            }
            Op::ReturnHomework {
                site,
                fam,
                entry,
                student,
            } => {
                let st = pick(&self.students(fam), student).unwrap_or(StudentId([0; 8]));
                let f = self.fam(fam);
                let actor = c.actor(c.t1, self.at(site));
                let r = edit(&mut self.sites[site].lanes[fam], c.t1, site as u8, |tx| {
                    homework::return_homework(tx, &actor, f, ItemId([0xe0 + entry; 8]), st, "again")
                });
                expected(r.map(|_| ()));
            }
        }
    }

    /// The rules every replica must keep at every moment.
    fn check(&mut self, site: usize) -> Result<(), TestCaseError> {
        let c = &self.c;
        let s = &self.sites[site];
        // Slots: never more holders than places, in the class view and in families' views.
        let mut held: BTreeSet<(FamilyId, ItemId)> = BTreeSet::new();
        for e in events::read_events(&s.nb, &c.roster).unwrap() {
            let table = events::slot_bookings(&s.nb, &c.roster, e.id).unwrap();
            for (slot, t) in e.slots.iter().zip(&table) {
                prop_assert!(
                    t.confirmed.len() as u32 <= slot.capacity,
                    "slot over capacity: {t:?}"
                );
                if slot.withdrawn {
                    prop_assert!(t.confirmed.is_empty());
                }
                held.extend(t.confirmed.iter().copied());
            }
        }
        for i in 0..3 {
            for b in events::family_bookings(&s.nb, &s.lanes[i], &c.roster, self.fam(i)).unwrap() {
                if b.status == BookingStatus::Confirmed {
                    prop_assert!(
                        held.contains(&(self.fam(i), b.request)),
                        "a family sees a confirmation the class does not: {b:?}"
                    );
                }
            }
        }
        // Shifts likewise.
        let mut held: BTreeSet<(FamilyId, ItemId)> = BTreeSet::new();
        for p in duty::read_posts(&s.nb, &c.roster).unwrap() {
            let table = duty::shift_roster(&s.nb, &c.roster, p.id).unwrap();
            for (shift, t) in p.shifts.iter().zip(&table) {
                prop_assert!(
                    t.confirmed.len() as u32 <= shift.capacity,
                    "shift over capacity: {t:?}"
                );
                held.extend(t.confirmed.iter().copied());
            }
        }
        for i in 0..3 {
            for cl in duty::family_claims(&s.nb, &s.lanes[i], &c.roster, self.fam(i)).unwrap() {
                if cl.status == BookingStatus::Confirmed {
                    prop_assert!(held.contains(&(self.fam(i), cl.id)), "{cl:?}");
                }
            }
        }
        // Capped chains: never more placed lines than places (from this site's lanes).
        for ch in chains::read_chains(&s.nb, &c.roster).unwrap() {
            let v = chains::chain_view(&s.nb, &self.lanes_at(site), &c.roster, ch.id).unwrap();
            let placed: Vec<u32> = v
                .lines
                .iter()
                .filter_map(|l| match l.place {
                    ChainPlace::Placed { number } => Some(number),
                    _ => None,
                })
                .collect();
            if let Some(cap) = ch.capacity {
                prop_assert!(placed.len() as u32 <= cap);
            }
            prop_assert_eq!(
                placed,
                (1..=v
                    .lines
                    .iter()
                    .filter(|l| matches!(l.place, ChainPlace::Placed { .. }))
                    .count() as u32)
                    .collect::<Vec<_>>()
            );
        }
        // Homework statuses only move up on every replica.
        for i in 0..3 {
            for r in homework::family_homework(&s.lanes[i], &c.roster, self.fam(i)).unwrap() {
                let key = (site, i, r.entry, r.student);
                if let Some(prev) = self.homework.get(&key) {
                    prop_assert!(
                        r.state >= *prev,
                        "homework moved down: {prev:?} -> {:?}",
                        r.state
                    );
                }
                self.homework.insert(key, r.state);
            }
        }
        Ok(())
    }

    /// Every read result of a site, as one comparable string.
    fn digest(&self, site: usize) -> String {
        let c = &self.c;
        let s = &self.sites[site];
        let lanes = self.lanes_at(site);
        let mut out = String::new();
        let evs = events::read_events(&s.nb, &c.roster).unwrap();
        out += &format!("{evs:?}\n");
        for e in &evs {
            out += &format!(
                "{:?}\n",
                events::slot_bookings(&s.nb, &c.roster, e.id).unwrap()
            );
        }
        let posts = duty::read_posts(&s.nb, &c.roster).unwrap();
        out += &format!("{posts:?}\n");
        for p in &posts {
            out += &format!(
                "{:?}\n",
                duty::shift_roster(&s.nb, &c.roster, p.id).unwrap()
            );
        }
        let svs = surveys::read_surveys(&s.nb, &c.roster).unwrap();
        out += &format!("{svs:?}\n");
        for sv in &svs {
            out += &format!(
                "{:?}\n",
                surveys::survey_results::<Automerge, Automerge>(
                    &s.nb, &lanes, None, &c.roster, sv.id
                )
                .unwrap()
            );
        }
        for ch in chains::read_chains(&s.nb, &c.roster).unwrap() {
            out += &format!(
                "{:?}\n",
                chains::chain_view(&s.nb, &lanes, &c.roster, ch.id).unwrap()
            );
        }
        for (i, (f, lane)) in lanes.iter().enumerate() {
            out += &format!("family {i}\n");
            out += &format!(
                "{:?}\n",
                events::family_bookings(&s.nb, *lane, &c.roster, *f).unwrap()
            );
            out += &format!(
                "{:?}\n",
                duty::family_claims(&s.nb, *lane, &c.roster, *f).unwrap()
            );
            out += &format!(
                "{:?}\n",
                duty::family_swaps(&s.nb, *lane, &c.roster, *f).unwrap()
            );
            out += &format!(
                "{:?}\n",
                duty::family_hours(&s.nb, *lane, &c.roster, *f).unwrap()
            );
            for sv in &svs {
                out += &format!(
                    "{:?}\n",
                    surveys::family_answers(&s.nb, *lane, &c.roster, *f, sv.id).unwrap()
                );
            }
            out += &format!(
                "{:?}\n",
                homework::family_homework(*lane, &c.roster, *f).unwrap()
            );
        }
        out += &format!(
            "{:?}\n",
            homework::homework_load(&lanes, &c.roster).unwrap()
        );
        out
    }

    /// Nothing written was lost: every request, claim, line and answer is still read at `site`.
    fn check_nothing_lost(&self, site: usize) -> Result<(), TestCaseError> {
        let c = &self.c;
        let s = &self.sites[site];
        for (i, id) in &self.requests {
            let b = events::family_bookings(&s.nb, &s.lanes[*i], &c.roster, self.fam(*i)).unwrap();
            prop_assert!(b.iter().any(|b| b.request == *id), "request {id} lost");
        }
        for (i, id) in &self.claims {
            let b = duty::family_claims(&s.nb, &s.lanes[*i], &c.roster, self.fam(*i)).unwrap();
            prop_assert!(b.iter().any(|b| b.id == *id), "claim {id} lost");
        }
        for (i, ch, k) in &self.lines {
            let v = chains::chain_view(&s.nb, &self.lanes_at(site), &c.roster, *ch).unwrap();
            prop_assert!(
                v.lines
                    .iter()
                    .any(|l| l.family == self.fam(*i) && l.key == *k),
                "line {k:?} lost"
            );
        }
        for (i, sid, qid) in &self.answers {
            let a = surveys::family_answers(&s.nb, &s.lanes[*i], &c.roster, self.fam(*i), *sid)
                .unwrap();
            prop_assert!(a.iter().any(|a| a.question == *qid), "answer to {qid} lost");
        }
        Ok(())
    }
}

fn two<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert_ne!(a, b);
    if a < b {
        let (x, y) = v.split_at_mut(b);
        (&mut x[a], &mut y[0])
    } else {
        let (x, y) = v.split_at_mut(a);
        (&mut y[0], &mut x[b])
    }
}

/// Run `ops`, checking the rules after every step, heal all partitions (first some merges in
/// the given order, then everyone with everyone), and check convergence and that nothing
/// was lost.
fn run(
    seed: u64,
    waitlist: bool,
    ops: &[Op],
    final_order: &[(usize, usize)],
) -> Result<(), TestCaseError> {
    let mut w = World::new(seed, waitlist);
    for op in ops {
        w.apply(op);
        let touched: Option<usize> = match op {
            Op::Sync { to, .. } => Some(*to),
            Op::Tick { .. } => None,
            Op::CreateEvent { site, .. }
            | Op::ChangeSlot { site, .. }
            | Op::WithdrawSlot { site, .. }
            | Op::Book { site, .. }
            | Op::CancelBooking { site, .. }
            | Op::DecideBookings { site, .. }
            | Op::CreatePost { site, .. }
            | Op::Claim { site, .. }
            | Op::CancelClaim { site, .. }
            | Op::OfferSwap { site, .. }
            | Op::AcceptSwap { site, .. }
            | Op::DecideClaims { site, .. }
            | Op::CreateSurvey { site }
            | Op::Answer { site, .. }
            | Op::SealSurvey { site, .. }
            | Op::CreateChain { site, .. }
            | Op::AddLine { site, .. }
            | Op::WithdrawLine { site, .. }
            | Op::Homework { site, .. }
            | Op::ReturnHomework { site, .. } => Some(*site),
        };
        if let Some(site) = touched {
            w.check(site)?;
        }
    }
    for (from, to) in final_order {
        w.apply(&Op::Sync {
            from: *from,
            to: *to,
        });
        w.check(*to)?;
    }
    for _ in 0..2 {
        for from in 0..SITES {
            for to in 0..SITES {
                w.apply(&Op::Sync { from, to });
            }
        }
    }
    let d0 = w.digest(0);
    for site in 0..SITES {
        w.check(site)?;
        w.check_nothing_lost(site)?;
        prop_assert_eq!(&w.digest(site), &d0, "site {} diverged", site);
    }
    // One more registrar run on the converged state keeps every rule too.
    w.apply(&Op::DecideBookings {
        site: 0,
        staff: true,
    });
    w.apply(&Op::DecideClaims {
        site: 0,
        staff: true,
    });
    w.check(0)?;
    w.check_nothing_lost(0)?;
    Ok(())
}

proptest! {
    // 12 cases each by default (Automerge is slow in debug builds); PROPTEST_CASES=500 for a
    // deeper run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12),
        max_shrink_iters: 300,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bookings_claims_and_swaps_converge_and_never_double_confirm(
        seed in any::<u64>(),
        waitlist in any::<bool>(),
        ops in proptest::collection::vec(allocation_op(), 10..60),
        final_order in proptest::collection::vec((0..SITES, 0..SITES), 0..12),
    ) {
        run(seed, waitlist, &ops, &final_order)?;
    }

    #[test]
    fn random_answers_lines_and_homework_converge_and_only_move_up(
        seed in any::<u64>(),
        ops in proptest::collection::vec(register_op(), 10..60),
        final_order in proptest::collection::vec((0..SITES, 0..SITES), 0..12),
    ) {
        run(seed, true, &ops, &final_order)?;
    }
}
