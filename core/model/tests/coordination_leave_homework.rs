//! Leave requests with approval, and homework: "homework status set done offline while the
//! teacher grades" — status only moves up; "returned" starts a new round — plus minutes and
//! the per-day / per-student load.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod coordination_support;

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ReadDoc};
use coordination_support::*;
use homeroom_core::homework::{self, HomeworkState, HomeworkStatus};
use homeroom_core::leave::{self, LeaveKind, LeaveStatus, NewLeave};
use homeroom_core::{ItemId, ModelError, SeededIds};

fn state(round: u32, status: HomeworkStatus) -> HomeworkState {
    HomeworkState { round, status }
}

#[test]
fn leave_is_decided_by_staff_in_the_lane_and_cancellation_wins() {
    let c = Class::new();
    let mut ids = SeededIds::new(41);
    let mut lane = c.replica(c.lane(c.f1));
    let req = NewLeave {
        student: c.s1a,
        from: T0 + DAY,
        to: T0 + 2 * DAY,
        kind: LeaveKind::Sick,
        reason: "fever",
    };
    let id = edit(&mut lane, c.g1a, 2, |tx| {
        leave::request_leave(tx, &c.actor(c.g1a, T0), &mut ids, c.f1, &req)
    })
    .unwrap();
    let statuses = |l: &Automerge| {
        leave::family_leave(l, &c.roster, c.f1)
            .unwrap()
            .iter()
            .map(|x| x.status)
            .collect::<Vec<_>>()
    };
    assert_eq!(statuses(&lane), vec![LeaveStatus::Pending]);

    // Two teachers decide concurrently: the later decision (by HLC) wins on every replica.
    let mut t1 = fork(&lane);
    let mut t2 = fork(&lane);
    edit(&mut t1, c.t1, 1, |tx| {
        leave::decide_leave(
            tx,
            &c.actor(c.t1, T0 + 20),
            &mut ids,
            c.f1,
            id,
            false,
            "need a note",
        )
    })
    .unwrap();
    edit(&mut t2, c.t2, 4, |tx| {
        leave::decide_leave(tx, &c.actor(c.t2, T0 + 10), &mut ids, c.f1, id, true, "")
    })
    .unwrap();
    sync(&mut t1, &mut t2);
    assert_eq!(statuses(&t1), vec![LeaveStatus::Rejected]);
    assert_eq!(
        leave::family_leave(&t2, &c.roster, c.f1).unwrap()[0].comment,
        "need a note"
    );
    // A teacher approves after seeing that; the family cancels concurrently: cancelled wins.
    edit(&mut t2, c.t2, 4, |tx| {
        leave::decide_leave(tx, &c.actor(c.t2, T0 + 30), &mut ids, c.f1, id, true, "ok")
    })
    .unwrap();
    assert_eq!(statuses(&t2), vec![LeaveStatus::Approved]);
    let lanes = [(c.f1, &t2)];
    assert_eq!(
        leave::absences(&lanes, &c.roster, T0 + DAY + HOUR, T0 + DAY + 2 * HOUR)
            .unwrap()
            .len(),
        1
    );
    assert!(
        leave::absences(&lanes, &c.roster, T0 + 3 * DAY, T0 + 4 * DAY)
            .unwrap()
            .is_empty()
    );
    edit(&mut lane, c.g1b, 3, |tx| {
        leave::cancel_leave(tx, &c.actor(c.g1b, T0 + 25), c.f1, id)
    })
    .unwrap();
    sync(&mut lane, &mut t2);
    assert_eq!(statuses(&lane), vec![LeaveStatus::Cancelled]);
    assert!(
        leave::absences(&[(c.f1, &lane)], &c.roster, T0 + DAY, T0 + 2 * DAY)
            .unwrap()
            .is_empty()
    );
    let r = edit(&mut lane, c.t1, 1, |tx| {
        leave::decide_leave(tx, &c.actor(c.t1, T0 + 40), &mut ids, c.f1, id, true, "")
    });
    assert!(matches!(r, Err(ModelError::InvalidState(_))));
    // Staff may file a request on the family's behalf.
    edit(&mut lane, c.t1, 1, |tx| {
        leave::request_leave(
            tx,
            &c.actor(c.t1, T0 + 50),
            &mut ids,
            c.f1,
            &NewLeave {
                reason: "phoned in",
                ..req
            },
        )
    })
    .unwrap();
    assert_eq!(
        leave::class_leave(&[(c.f1, &lane)], &c.roster)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn bad_leave_input_is_a_typed_error() {
    let c = Class::new();
    let mut ids = SeededIds::new(42);
    let mut lane = c.replica(c.lane(c.f1));
    let ok = NewLeave {
        student: c.s1a,
        from: T0,
        to: T0 + DAY,
        kind: LeaveKind::Personal,
        reason: "",
    };
    let mut req = |d, l: NewLeave<'_>| {
        edit(&mut lane, d, 2, |tx| {
            leave::request_leave(tx, &c.actor(d, T0), &mut ids, c.f1, &l)
        })
    };
    assert!(matches!(
        req(c.g1a, NewLeave { to: T0, ..ok }),
        Err(ModelError::InvalidInput { field: "to", .. })
    ));
    assert!(matches!(
        req(
            c.g1a,
            NewLeave {
                to: T0 + 61 * DAY,
                ..ok
            }
        ),
        Err(ModelError::InvalidInput { field: "to", .. })
    ));
    assert!(matches!(
        req(
            c.g1a,
            NewLeave {
                student: c.s2,
                ..ok
            }
        ),
        Err(ModelError::UnknownId {
            kind: "student",
            ..
        })
    ));
    assert!(matches!(
        req(
            c.g1a,
            NewLeave {
                reason: "\u{7}",
                ..ok
            }
        ),
        Err(ModelError::InvalidInput {
            field: "reason",
            ..
        })
    ));
    assert!(matches!(req(c.g2, ok), Err(ModelError::NotAllowed(_))));
    let id = req(c.g1a, ok).unwrap();
    let r = edit(&mut lane, c.g1a, 2, |tx| {
        leave::decide_leave(tx, &c.actor(c.g1a, T0), &mut ids, c.f1, id, true, "")
    });
    assert!(
        matches!(r, Err(ModelError::NotAllowed(_))),
        "guardians do not approve their own leave"
    );
    let r = edit(&mut lane, c.t1, 1, |tx| {
        leave::decide_leave(
            tx,
            &c.actor(c.t1, T0),
            &mut ids,
            c.f1,
            ItemId([3; 8]),
            true,
            "",
        )
    });
    assert!(matches!(r, Err(ModelError::UnknownId { .. })));
    assert_eq!(
        leave::family_leave(&lane, &c.roster, c.f1).unwrap().len(),
        1
    );
}

#[test]
fn homework_done_offline_while_the_teacher_grades_merges_to_graded() {
    let c = Class::new();
    let hw = ItemId([0x77; 8]);
    let mut parent = c.replica(c.lane(c.f1));
    edit(&mut parent, c.g1a, 2, |tx| {
        homework::set_homework_status(
            tx,
            &c.actor(c.g1a, T0),
            c.f1,
            hw,
            c.s1a,
            HomeworkStatus::Submitted,
        )
    })
    .unwrap();
    let mut teacher = fork(&parent);
    // Offline, the other guardian marks it done (lower) while the teacher grades.
    let mut other = fork(&parent);
    let r = edit(&mut other, c.g1b, 3, |tx| {
        homework::set_homework_status(
            tx,
            &c.actor(c.g1b, T0 + 5),
            c.f1,
            hw,
            c.s1a,
            HomeworkStatus::Done,
        )
    });
    assert!(
        matches!(r, Err(ModelError::InvalidState(_))),
        "never moves down locally: {r:?}"
    );
    let mut stale = c.replica(c.lane(c.f1));
    edit(&mut stale, c.g1b, 4, |tx| {
        homework::set_homework_status(
            tx,
            &c.actor(c.g1b, T0 + 5),
            c.f1,
            hw,
            c.s1a,
            HomeworkStatus::Done,
        )
    })
    .unwrap();
    edit(&mut teacher, c.t1, 1, |tx| {
        homework::set_homework_status(
            tx,
            &c.actor(c.t1, T0 + 10),
            c.f1,
            hw,
            c.s1a,
            HomeworkStatus::Graded,
        )
    })
    .unwrap();
    sync(&mut stale, &mut teacher);
    sync(&mut parent, &mut stale);
    for l in [&parent, &stale, &teacher] {
        assert_eq!(
            homework::homework_state(l, &c.roster, c.f1, hw, c.s1a).unwrap(),
            state(0, HomeworkStatus::Graded)
        );
    }
    // A guardian cannot grade; a forged "graded" key written by a guardian is ignored.
    let r = edit(&mut parent, c.g1a, 2, |tx| {
        homework::set_homework_status(
            tx,
            &c.actor(c.g1a, T0),
            c.f1,
            ItemId([1; 8]),
            c.s1a,
            HomeworkStatus::Graded,
        )
    });
    assert!(matches!(r, Err(ModelError::NotAllowed(_))));
    edit(&mut parent, c.g1a, 2, |tx| {
        let map = match tx.get(automerge::ROOT, "homework")? {
            Some((_, id)) => id,
            None => unreachable!(),
        };
        let rec = tx.put_object(
            &map,
            format!("{}.{}.0.graded", ItemId([1; 8]), c.s1a),
            ObjType::Map,
        )?;
        tx.put(
            &rec,
            "stamp",
            homeroom_core::hlc::Hlc::new(T0, 0, c.g1a).encode(),
        )?;
        // A guardian cannot open a round either: only a staff return does.
        let rec = tx.put_object(&map, format!("{hw}.{}.5.done", c.s1a), ObjType::Map)?;
        tx.put(
            &rec,
            "stamp",
            homeroom_core::hlc::Hlc::new(T0, 0, c.g1a).encode(),
        )?;
        Ok(())
    })
    .unwrap();
    assert_eq!(
        homework::homework_state(&parent, &c.roster, c.f1, ItemId([1; 8]), c.s1a).unwrap(),
        HomeworkState::START
    );
    assert_eq!(
        homework::homework_state(&parent, &c.roster, c.f1, hw, c.s1a).unwrap(),
        state(0, HomeworkStatus::Graded)
    );
    let r = edit(&mut parent, c.g1a, 2, |tx| {
        homework::set_homework_status(
            tx,
            &c.actor(c.g1a, T0),
            c.f1,
            hw,
            c.s2,
            HomeworkStatus::Done,
        )
    });
    assert!(matches!(
        r,
        Err(ModelError::UnknownId {
            kind: "student",
            ..
        })
    ));
    let r = edit(&mut parent, c.t1, 1, |tx| {
        homework::set_homework_status(
            tx,
            &c.actor(c.t1, T0),
            c.f1,
            hw,
            c.s1a,
            HomeworkStatus::Assigned,
        )
    });
    assert!(matches!(
        r,
        Err(ModelError::InvalidInput {
            field: "status",
            ..
        })
    ));
}

#[test]
fn returned_homework_starts_a_new_round_and_the_max_round_wins() {
    let c = Class::new();
    let hw = ItemId([0x78; 8]);
    let mut lane = c.replica(c.lane(c.f1));
    let r = edit(&mut lane, c.t1, 1, |tx| {
        homework::return_homework(tx, &c.actor(c.t1, T0), c.f1, hw, c.s1b, "")
    });
    assert!(
        matches!(r, Err(ModelError::InvalidState(_))),
        "nothing to return yet"
    );
    edit(&mut lane, c.g1a, 2, |tx| {
        homework::set_homework_status(
            tx,
            &c.actor(c.g1a, T0),
            c.f1,
            hw,
            c.s1b,
            HomeworkStatus::Done,
        )
    })
    .unwrap();
    let mut parent = fork(&lane);
    let mut teacher = fork(&lane);
    // Offline, the parent submits round 0 while the teacher returns it.
    edit(&mut parent, c.g1a, 2, |tx| {
        homework::set_homework_status(
            tx,
            &c.actor(c.g1a, T0 + 10),
            c.f1,
            hw,
            c.s1b,
            HomeworkStatus::Submitted,
        )
    })
    .unwrap();
    let s = edit(&mut teacher, c.t1, 1, |tx| {
        homework::return_homework(
            tx,
            &c.actor(c.t1, T0 + 10),
            c.f1,
            hw,
            c.s1b,
            "redo question 3",
        )
    })
    .unwrap();
    assert_eq!(s, state(1, HomeworkStatus::Assigned));
    sync(&mut parent, &mut teacher);
    let rec = &homework::family_homework(&parent, &c.roster, c.f1).unwrap()[0];
    assert_eq!(
        rec.state,
        state(1, HomeworkStatus::Assigned),
        "the new round outranks round 0's submission"
    );
    assert_eq!(rec.return_comment.as_deref(), Some("redo question 3"));
    // The family works through round 1.
    edit(&mut parent, c.g1a, 2, |tx| {
        homework::set_homework_status(
            tx,
            &c.actor(c.g1a, T0 + 20),
            c.f1,
            hw,
            c.s1b,
            HomeworkStatus::Done,
        )
    })
    .unwrap();
    sync(&mut parent, &mut teacher);
    edit(&mut teacher, c.t1, 1, |tx| {
        homework::set_homework_status(
            tx,
            &c.actor(c.t1, T0 + 30),
            c.f1,
            hw,
            c.s1b,
            HomeworkStatus::Graded,
        )
    })
    .unwrap();
    let s = edit(&mut teacher, c.t1, 1, |tx| {
        homework::return_homework(tx, &c.actor(c.t1, T0 + 40), c.f1, hw, c.s1b, "")
    })
    .unwrap();
    assert_eq!(s, state(2, HomeworkStatus::Assigned));
    // Rounds compare as numbers, not as text (10 > 9).
    for round in 3..=11u32 {
        edit(&mut teacher, c.g1a, 5, |tx| {
            homework::set_homework_status(
                tx,
                &c.actor(c.g1a, T0 + 50),
                c.f1,
                hw,
                c.s1b,
                HomeworkStatus::Done,
            )
        })
        .unwrap();
        let s = edit(&mut teacher, c.t1, 1, |tx| {
            homework::return_homework(tx, &c.actor(c.t1, T0 + 50), c.f1, hw, c.s1b, "")
        })
        .unwrap();
        assert_eq!(s.round, round);
    }
    sync(&mut parent, &mut teacher);
    let rec = homework::class_homework(&[(c.f1, &parent)], &c.roster, hw).unwrap();
    assert_eq!(rec[0].state, state(11, HomeworkStatus::Assigned));
    assert_eq!(rec[0].return_comment.as_deref(), Some(""));
}

#[test]
fn minutes_reports_make_the_load_per_day_and_per_student() {
    let c = Class::new();
    let (hw1, hw2) = (ItemId([1; 8]), ItemId([2; 8]));
    let day = T0 / DAY;
    let mut l1 = c.replica(c.lane(c.f1));
    let mut l2 = c.replica(c.lane(c.f2));
    let report = |lane: &mut Automerge, d, f, hw, s, day, m, now| {
        edit(lane, d, 2, |tx| {
            homework::report_minutes(tx, &c.actor(d, now), f, hw, s, day, m)
        })
    };
    report(&mut l1, c.g1a, c.f1, hw1, c.s1a, day, 40, T0).unwrap();
    report(&mut l1, c.g1a, c.f1, hw2, c.s1a, day, 50, T0).unwrap();
    report(&mut l1, c.g1a, c.f1, hw1, c.s1b, day, 20, T0).unwrap();
    report(&mut l2, c.g2, c.f2, hw1, c.s2, day + 1, 30, T0).unwrap();
    // A correction on another device replaces the earlier figure.
    let mut l1b = fork(&l1);
    report(&mut l1b, c.g1b, c.f1, hw1, c.s1b, day, 25, T0 + 5).unwrap();
    sync(&mut l1, &mut l1b);
    let load = homework::homework_load(&[(c.f1, &l1), (c.f2, &l2)], &c.roster).unwrap();
    let d0 = load.per_day[&day];
    assert_eq!(
        (d0.minutes, d0.reports, d0.students, d0.max_student_minutes),
        (115, 3, 2, 90)
    );
    assert_eq!(load.per_day[&(day + 1)].minutes, 30);
    assert_eq!(load.per_student[&c.s1a].minutes, 90);
    assert_eq!(load.per_student[&c.s1b].minutes, 25);
    assert_eq!(load.per_student[&c.s2].per_day[&(day + 1)], 30);
    assert!(matches!(
        report(&mut l1, c.g1a, c.f1, hw1, c.s1a, day, 601, T0),
        Err(ModelError::InvalidInput {
            field: "minutes",
            ..
        })
    ));
    assert!(matches!(
        report(&mut l1, c.g1a, c.f1, hw1, c.s1a, -1, 1, T0),
        Err(ModelError::InvalidInput { field: "day", .. })
    ));
    assert!(matches!(
        report(&mut l1, c.t1, c.f1, hw1, c.s1a, day, 1, T0),
        Err(ModelError::NotAllowed(_))
    ));
}
