//! Homework status per student per homework entry, and the minutes families report
//! ("double reduction": the teacher sees the load per day and per student).
//!
//! # Where things live
//!
//! Lane `homework` of the student's family:
//!
//! - `<entry>.<student>.<round>.<status>`: one key per status **reached** — a record object
//!   (stamp, and the teacher's comment for a return). Keys are only ever added, so the status
//!   read is the maximum over the keys present: **max round wins, then max status within it**
//!   (assigned < done < submitted < graded). A parent marking "done" offline while the
//!   teacher grades merges to "graded"; nothing can move a status down (an overwrite would
//!   need a key to disappear). "Returned" is the teacher adding round `r + 1` at "assigned":
//!   a new round that the family works through again.
//! - `<entry>.<student>.minutes`: the minutes a guardian reports for that homework, with the
//!   school day it was done on (a register: each report is a new record object; the greatest
//!   [`Hlc`] wins, so a correction replaces the earlier figure).
//!
//! Who may set what: guardians of the family set done and submitted; staff set submitted,
//! graded and returned (and done, on a family's behalf). Keys written by anyone else are
//! ignored when reading. Homework entries themselves are notebook entries; they are named
//! here by [`ItemId`] only.

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc};

use crate::context::Actor;
use crate::error::{ModelError, check_text};
use crate::hlc::{Hlc, read_stamp};
use crate::ids::{FamilyId, ItemId, StudentId};
use crate::roster::RosterIndex;
use crate::values::{
    all_maps_at, author_of_obj, get_i64, get_str, guardian_device_at, keys, staff_device_at,
    top_map,
};

/// Most minutes one report may give (10 hours).
pub const MAX_MINUTES: u32 = 600;
/// Longest return comment, in characters.
pub const MAX_COMMENT: usize = 500;

/// A homework status within one round. Ordered: statuses only move up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HomeworkStatus {
    /// Given (the start of every round).
    Assigned,
    /// The family says it is done.
    Done,
    /// Handed in.
    Submitted,
    /// Graded by the teacher.
    Graded,
}

impl HomeworkStatus {
    fn as_str(self) -> &'static str {
        match self {
            HomeworkStatus::Assigned => "assigned",
            HomeworkStatus::Done => "done",
            HomeworkStatus::Submitted => "submitted",
            HomeworkStatus::Graded => "graded",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "assigned" => HomeworkStatus::Assigned,
            "done" => HomeworkStatus::Done,
            "submitted" => HomeworkStatus::Submitted,
            "graded" => HomeworkStatus::Graded,
            _ => return None,
        })
    }
}

/// Where one student's homework stands: the round (0 at first; each return adds one), then
/// the status within it. Ordered by round, then status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HomeworkState {
    /// Round: 0, then one more per return.
    pub round: u32,
    /// Status within the round.
    pub status: HomeworkStatus,
}

impl HomeworkState {
    /// Round 0, assigned: the state of homework nobody has touched.
    pub const START: HomeworkState = HomeworkState {
        round: 0,
        status: HomeworkStatus::Assigned,
    };
}

/// Minutes reported for one homework.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinutesReport {
    /// School day it was done on: days since 1970-01-01 in the school's time zone.
    pub day: i64,
    /// Minutes spent.
    pub minutes: u32,
    /// When it was reported.
    pub stamp: Hlc,
}

/// One student's homework for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeworkRecord {
    /// The family.
    pub family: FamilyId,
    /// The homework entry.
    pub entry: ItemId,
    /// The student.
    pub student: StudentId,
    /// Where it stands.
    pub state: HomeworkState,
    /// The teacher's comment when returning it for the current round, if any.
    pub return_comment: Option<String>,
    /// The latest minutes report, if any.
    pub minutes: Option<MinutesReport>,
}

/// Load on one school day, over the class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayLoad {
    /// Minutes reported in total.
    pub minutes: u64,
    /// Reports.
    pub reports: u32,
    /// Students with at least one report.
    pub students: u32,
    /// The most minutes one student reported that day.
    pub max_student_minutes: u64,
}

/// Load of one student.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudentLoad {
    /// Minutes reported in total.
    pub minutes: u64,
    /// Reports.
    pub reports: u32,
    /// Minutes per school day.
    pub per_day: BTreeMap<i64, u64>,
}

/// Homework load over the class ("double reduction").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HomeworkLoad {
    /// Per school day.
    pub per_day: BTreeMap<i64, DayLoad>,
    /// Per student.
    pub per_student: BTreeMap<StudentId, StudentLoad>,
}

// ---------------------------------------------------------------------------------------
// Writes

/// Move a student's homework up to `status` in the current round (guardians of `family`:
/// done, submitted; staff: done, submitted, graded). Setting the current status again is a
/// no-op; a lower one is refused (`InvalidState`): statuses only move up. Returns the state
/// after the write.
pub fn set_homework_status(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    family: FamilyId,
    entry: ItemId,
    student: StudentId,
    status: HomeworkStatus,
) -> Result<HomeworkState, ModelError> {
    let staff = actor.require_staff().is_ok();
    match status {
        HomeworkStatus::Assigned => {
            return Err(ModelError::InvalidInput {
                field: "status",
                reason: "a new round is started by return_homework".into(),
            });
        }
        HomeworkStatus::Graded if !staff => {
            return Err(ModelError::NotAllowed(
                "only teachers grade homework".into(),
            ));
        }
        _ if !staff => {
            actor.require_guardian_of(&family)?;
        }
        _ => {}
    }
    crate::events::check_student(actor.roster, &family, Some(student))?;
    let current = homework_state(tx, actor.roster, family, entry, student)?;
    let target = HomeworkState {
        round: current.round,
        status,
    };
    if target < current {
        return Err(ModelError::InvalidState(format!(
            "homework is already {:?} in round {}: statuses only move up",
            current.status, current.round
        )));
    }
    if target > current {
        put_state(tx, actor, entry, student, target, None)?;
    }
    Ok(target)
}

/// Return a student's homework for another round (staff): starts round `r + 1` at assigned.
pub fn return_homework(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    family: FamilyId,
    entry: ItemId,
    student: StudentId,
    comment: &str,
) -> Result<HomeworkState, ModelError> {
    actor.require_staff()?;
    check_text("comment", comment, MAX_COMMENT, true)?;
    crate::events::check_student(actor.roster, &family, Some(student))?;
    let current = homework_state(tx, actor.roster, family, entry, student)?;
    if current.status == HomeworkStatus::Assigned {
        return Err(ModelError::InvalidState(
            "nothing to return: the current round has not been done or handed in".into(),
        ));
    }
    let round = current
        .round
        .checked_add(1)
        .ok_or_else(|| ModelError::InvalidState("too many rounds".into()))?;
    let target = HomeworkState {
        round,
        status: HomeworkStatus::Assigned,
    };
    put_state(tx, actor, entry, student, target, Some(comment))?;
    Ok(target)
}

/// Report the minutes a student spent on a homework (a guardian of `family`). `day` is the
/// school day it was done on (days since 1970-01-01, school time zone). A later report
/// replaces an earlier one.
#[allow(clippy::too_many_arguments)]
pub fn report_minutes(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    family: FamilyId,
    entry: ItemId,
    student: StudentId,
    day: i64,
    minutes: u32,
) -> Result<(), ModelError> {
    actor.require_guardian_of(&family)?;
    crate::events::check_student(actor.roster, &family, Some(student))?;
    if minutes > MAX_MINUTES {
        return Err(ModelError::InvalidInput {
            field: "minutes",
            reason: format!("at most {MAX_MINUTES}"),
        });
    }
    if !(0..=1_000_000).contains(&day) {
        return Err(ModelError::InvalidInput {
            field: "day",
            reason: "days since 1970-01-01".into(),
        });
    }
    let map = top_map(tx, "homework")?;
    let key = format!("{entry}.{student}.minutes");
    let mut seen = Vec::new();
    for rec in all_maps_at(tx, &map, &key)? {
        seen.extend(read_stamp(tx, &rec, "stamp")?);
    }
    let stamp = Hlc::after(actor.device, actor.now, &seen);
    let rec = tx.put_object(&map, key, ObjType::Map)?;
    tx.put(&rec, "day", day)?;
    tx.put(&rec, "minutes", i64::from(minutes))?;
    tx.put(&rec, "stamp", stamp.encode())?;
    Ok(())
}

fn put_state(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    entry: ItemId,
    student: StudentId,
    state: HomeworkState,
    comment: Option<&str>,
) -> Result<(), ModelError> {
    let map = top_map(tx, "homework")?;
    let key = format!(
        "{entry}.{student}.{}.{}",
        state.round,
        state.status.as_str()
    );
    let rec = tx.put_object(&map, key, ObjType::Map)?;
    tx.put(
        &rec,
        "stamp",
        Hlc::after(actor.device, actor.now, []).encode(),
    )?;
    if let Some(c) = comment {
        tx.put(&rec, "comment", c)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Reads

/// Where one student's homework stands ([`HomeworkState::START`] if untouched).
pub fn homework_state(
    lane: &impl ReadDoc,
    roster: &RosterIndex,
    family: FamilyId,
    entry: ItemId,
    student: StudentId,
) -> Result<HomeworkState, ModelError> {
    let all = scan(lane, roster, family)?;
    Ok(all
        .get(&(entry, student))
        .map_or(HomeworkState::START, |s| s.state))
}

/// Every homework record in a family's lane, by entry then student.
pub fn family_homework(
    lane: &impl ReadDoc,
    roster: &RosterIndex,
    family: FamilyId,
) -> Result<Vec<HomeworkRecord>, ModelError> {
    Ok(scan(lane, roster, family)?
        .into_iter()
        .map(|((entry, student), s)| HomeworkRecord {
            family,
            entry,
            student,
            state: s.state,
            return_comment: s.comment,
            minutes: s.minutes,
        })
        .collect())
}

/// Every student's record for one homework entry over the given lanes (staff).
pub fn class_homework<L: ReadDoc>(
    lanes: &[(FamilyId, &L)],
    roster: &RosterIndex,
    entry: ItemId,
) -> Result<Vec<HomeworkRecord>, ModelError> {
    let mut out = Vec::new();
    for (family, lane) in lanes {
        out.extend(
            family_homework(*lane, roster, *family)?
                .into_iter()
                .filter(|r| r.entry == entry),
        );
    }
    Ok(out)
}

/// Reported minutes per school day and per student over the given lanes (staff).
pub fn homework_load<L: ReadDoc>(
    lanes: &[(FamilyId, &L)],
    roster: &RosterIndex,
) -> Result<HomeworkLoad, ModelError> {
    let mut load = HomeworkLoad::default();
    let mut day_students: BTreeMap<i64, BTreeSet<StudentId>> = BTreeMap::new();
    for (family, lane) in lanes {
        for r in family_homework(*lane, roster, *family)? {
            let Some(m) = r.minutes else { continue };
            let minutes = u64::from(m.minutes);
            let day = load.per_day.entry(m.day).or_default();
            day.minutes += minutes;
            day.reports += 1;
            day_students.entry(m.day).or_default().insert(r.student);
            let st = load.per_student.entry(r.student).or_default();
            st.minutes += minutes;
            st.reports += 1;
            *st.per_day.entry(m.day).or_default() += minutes;
        }
    }
    for (day, dl) in &mut load.per_day {
        dl.students = day_students
            .get(day)
            .map_or(0, |s| u32::try_from(s.len()).unwrap_or(u32::MAX));
        dl.max_student_minutes = load
            .per_student
            .values()
            .filter_map(|s| s.per_day.get(day).copied())
            .max()
            .unwrap_or(0);
    }
    Ok(load)
}

// ---------------------------------------------------------------------------------------
// Internals

#[derive(Debug, Clone)]
struct Scanned {
    state: HomeworkState,
    comment: Option<String>,
    /// Every state reached (by an allowed writer).
    reached: Vec<HomeworkState>,
    /// Rounds opened by a staff return, with the return's comment.
    comments: BTreeMap<u32, String>,
    minutes: Option<MinutesReport>,
}

/// Whether `obj`'s author may have reached `state`.
fn may_set(
    roster: &RosterIndex,
    obj: &ObjId,
    family: &FamilyId,
    state: HomeworkState,
    at: i64,
) -> bool {
    let Some(d) = author_of_obj(obj) else {
        return false;
    };
    let staff = staff_device_at(roster, &d, at);
    match state.status {
        HomeworkStatus::Assigned | HomeworkStatus::Graded => staff,
        HomeworkStatus::Done | HomeworkStatus::Submitted => {
            staff || guardian_device_at(roster, &d, family, at)
        }
    }
}

fn scan(
    lane: &impl ReadDoc,
    roster: &RosterIndex,
    family: FamilyId,
) -> Result<BTreeMap<(ItemId, StudentId), Scanned>, ModelError> {
    let map = top_map(lane, "homework")?;
    let students = roster.families.get(&family).map(|f| &f.students);
    let mut out: BTreeMap<(ItemId, StudentId), Scanned> = BTreeMap::new();
    for key in keys(lane, &map) {
        let parts: Vec<&str> = key.split('.').collect();
        let (Some(entry), Some(student)) = (
            parts.first().and_then(|p| p.parse::<ItemId>().ok()),
            parts.get(1).and_then(|p| p.parse::<StudentId>().ok()),
        ) else {
            continue;
        };
        if !students.is_some_and(|s| s.contains_key(&student)) {
            continue;
        }
        match parts.as_slice() {
            [_, _, "minutes"] => {
                let mut best: Option<MinutesReport> = None;
                for rec in all_maps_at(lane, &map, &key)? {
                    let (Some(stamp), Some(day), Some(minutes)) = (
                        read_stamp(lane, &rec, "stamp")?,
                        get_i64(lane, &rec, "day")?,
                        get_i64(lane, &rec, "minutes")?.and_then(|m| u32::try_from(m).ok()),
                    ) else {
                        continue;
                    };
                    if minutes > MAX_MINUTES
                        || !author_of_obj(&rec)
                            .is_some_and(|d| guardian_device_at(roster, &d, &family, stamp.wall_ms))
                    {
                        continue;
                    }
                    if best.is_none_or(|b| stamp > b.stamp) {
                        best = Some(MinutesReport {
                            day,
                            minutes,
                            stamp,
                        });
                    }
                }
                if let Some(m) = best {
                    let e = out.entry((entry, student)).or_insert_with(untouched);
                    e.minutes = Some(m);
                }
            }
            [_, _, round, status] => {
                let (Ok(round), Some(status)) =
                    (round.parse::<u32>(), HomeworkStatus::parse(status))
                else {
                    continue;
                };
                let state = HomeworkState { round, status };
                if state == HomeworkState::START || round.to_string() != parts[2] {
                    continue;
                }
                // Any record at the key written by someone allowed makes the state reached.
                let mut comment = None;
                let mut ok = false;
                for rec in all_maps_at(lane, &map, &key)? {
                    let Some(stamp) = read_stamp(lane, &rec, "stamp")? else {
                        continue;
                    };
                    if may_set(roster, &rec, &family, state, stamp.wall_ms) {
                        ok = true;
                        comment = comment.or(get_str(lane, &rec, "comment")?);
                    }
                }
                if !ok {
                    continue;
                }
                let e = out.entry((entry, student)).or_insert_with(untouched);
                e.reached.push(state);
                if status == HomeworkStatus::Assigned {
                    e.comments.insert(round, comment.unwrap_or_default());
                }
            }
            _ => {}
        }
    }
    for s in out.values_mut() {
        // A round exists only once staff returned the homework into it (round 0 always does):
        // a state in any other round is ignored, so nobody else can skip rounds.
        s.state = s
            .reached
            .iter()
            .filter(|r| r.round == 0 || s.comments.contains_key(&r.round))
            .copied()
            .max()
            .unwrap_or(HomeworkState::START);
        // A return comment belongs to the round it started.
        s.comment = s
            .comments
            .remove(&s.state.round)
            .filter(|_| s.state.round > 0);
    }
    Ok(out)
}

fn untouched() -> Scanned {
    Scanned {
        state: HomeworkState::START,
        comment: None,
        reached: Vec::new(),
        comments: BTreeMap::new(),
        minutes: None,
    }
}
