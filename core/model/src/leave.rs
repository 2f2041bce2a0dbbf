//! Leave and absence requests, with approval by staff.
//!
//! # Where things live — and why decisions stay in the lane
//!
//! Both the request and the teacher's decision live in the family's lane (`leave`), each as
//! its own item under a fresh id (`kind` = `request` or `decision`). The notebook is readable
//! by every member of the class, so a decision there — even one naming only a request id,
//! family and dates — would tell every family which child is away, and when; with a "sick"
//! reason it would leak health information. The lane is read by exactly the people who should
//! see it (the family's guardians and staff), staff can write it, and keeping request and
//! decision in one document means a family always sees a decision together with its request.
//! (The notebook's `leave_decisions` genesis map is therefore unused.)
//!
//! A request may be written by a guardian of the family, or by staff on its behalf (a phone
//! call). Decisions count only if written by staff; a later decision replaces an earlier one
//! (a teacher changing their mind) and concurrent decisions by two teachers resolve by
//! [`Hlc`]. A cancellation by the family (or staff) wins over any decision: the child is not
//! away after all.

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc};

use crate::context::Actor;
use crate::error::{ModelError, check_text};
use crate::hlc::{Hlc, read_stamp};
use crate::ids::{FamilyId, IdSource, ItemId, StudentId};
use crate::roster::RosterIndex;
use crate::values::{
    author_of_obj, get_i64, get_str, guardian_device_at, keys, map_at, staff_device_at, top_map,
};

/// Longest reason or comment, in characters.
pub const MAX_REASON: usize = 500;
/// Longest leave: 60 days.
pub const MAX_LEAVE_MS: i64 = 60 * 24 * 3600 * 1000;

/// Why the child is away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaveKind {
    /// Illness.
    Sick,
    /// Personal or family matters.
    Personal,
    /// Anything else.
    Other,
}

impl LeaveKind {
    fn as_str(self) -> &'static str {
        match self {
            LeaveKind::Sick => "sick",
            LeaveKind::Personal => "personal",
            LeaveKind::Other => "other",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "sick" => LeaveKind::Sick,
            "personal" => LeaveKind::Personal,
            "other" => LeaveKind::Other,
            _ => return None,
        })
    }
}

/// A new leave request.
#[derive(Debug, Clone, Copy)]
pub struct NewLeave<'a> {
    /// The student who will be away.
    pub student: StudentId,
    /// From, ms since the Unix epoch.
    pub from: i64,
    /// Until (exclusive), after `from`, at most 60 days later.
    pub to: i64,
    /// Why.
    pub kind: LeaveKind,
    /// Details (may be empty).
    pub reason: &'a str,
}

/// Where a leave request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaveStatus {
    /// Not decided yet.
    Pending,
    /// Approved by staff.
    Approved,
    /// Rejected by staff.
    Rejected,
    /// Cancelled.
    Cancelled,
}

/// A leave request with its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leave {
    /// The request's id.
    pub id: ItemId,
    /// The family.
    pub family: FamilyId,
    /// The student.
    pub student: StudentId,
    /// From.
    pub from: i64,
    /// Until (exclusive).
    pub to: i64,
    /// Why.
    pub kind: LeaveKind,
    /// Details.
    pub reason: String,
    /// When it was requested.
    pub requested: Hlc,
    /// Where it stands.
    pub status: LeaveStatus,
    /// The deciding teacher's comment (empty if none or undecided).
    pub comment: String,
}

/// Ask for leave (a guardian of `family`, or staff on its behalf), in the family's lane.
pub fn request_leave(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    ids: &mut impl IdSource,
    family: FamilyId,
    leave: &NewLeave<'_>,
) -> Result<ItemId, ModelError> {
    require_family_or_staff(actor, &family)?;
    check_text("reason", leave.reason, MAX_REASON, true)?;
    crate::events::check_student(actor.roster, &family, Some(leave.student))?;
    if leave.to <= leave.from {
        return Err(ModelError::InvalidInput {
            field: "to",
            reason: "must be after from".into(),
        });
    }
    if leave.to - leave.from > MAX_LEAVE_MS {
        return Err(ModelError::InvalidInput {
            field: "to",
            reason: "a leave request covers at most 60 days".into(),
        });
    }
    let map = top_map(tx, "leave")?;
    let id = ids.item_id(actor.now);
    let obj = tx.put_object(&map, id.to_hex(), ObjType::Map)?;
    tx.put(&obj, "kind", "request")?;
    tx.put(&obj, "student", leave.student.to_hex())?;
    tx.put(&obj, "from", leave.from)?;
    tx.put(&obj, "to", leave.to)?;
    tx.put(&obj, "reason_kind", leave.kind.as_str())?;
    tx.put(&obj, "reason", leave.reason)?;
    tx.put(
        &obj,
        "stamp",
        Hlc::after(actor.device, actor.now, []).encode(),
    )?;
    Ok(id)
}

/// Cancel a leave request (a guardian of `family`, or staff). Idempotent.
pub fn cancel_leave(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    family: FamilyId,
    request: ItemId,
) -> Result<(), ModelError> {
    require_family_or_staff(actor, &family)?;
    let obj = request_obj(tx, request)?;
    if tx.get(&obj, "cancelled")?.is_none() {
        let seen = read_stamp(tx, &obj, "stamp")?;
        tx.put(
            &obj,
            "cancelled",
            Hlc::after(actor.device, actor.now, seen.as_ref()).encode(),
        )?;
    }
    Ok(())
}

/// Approve or reject a leave request (staff), in the family's lane.
#[allow(clippy::too_many_arguments)]
pub fn decide_leave(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    ids: &mut impl IdSource,
    family: FamilyId,
    request: ItemId,
    approve: bool,
    comment: &str,
) -> Result<ItemId, ModelError> {
    actor.require_staff()?;
    check_text("comment", comment, MAX_REASON, true)?;
    let req = family_leave(tx, actor.roster, family)?
        .into_iter()
        .find(|l| l.id == request)
        .ok_or_else(|| ModelError::UnknownId {
            kind: "leave request",
            id: request.to_hex(),
        })?;
    if req.status == LeaveStatus::Cancelled {
        return Err(ModelError::InvalidState(format!(
            "leave request {request} was cancelled"
        )));
    }
    let mut seen = vec![req.requested];
    seen.extend(decisions(tx, actor.roster)?.get(&request).map(|d| d.stamp));
    let stamp = Hlc::after(actor.device, actor.now, &seen);
    let map = top_map(tx, "leave")?;
    let id = ids.item_id(actor.now);
    let obj = tx.put_object(&map, id.to_hex(), ObjType::Map)?;
    tx.put(&obj, "kind", "decision")?;
    tx.put(&obj, "request", request.to_hex())?;
    tx.put(
        &obj,
        "outcome",
        if approve { "approved" } else { "rejected" },
    )?;
    tx.put(&obj, "comment", comment)?;
    tx.put(&obj, "stamp", stamp.encode())?;
    Ok(id)
}

/// A family's leave requests with their statuses, oldest first.
pub fn family_leave(
    lane: &impl ReadDoc,
    roster: &RosterIndex,
    family: FamilyId,
) -> Result<Vec<Leave>, ModelError> {
    let map = top_map(lane, "leave")?;
    let decided = decisions(lane, roster)?;
    let mut out = Vec::new();
    for key in keys(lane, &map) {
        let Ok(id) = key.parse::<ItemId>() else {
            continue;
        };
        let Some(obj) = map_at(lane, &map, &key)? else {
            continue;
        };
        if get_str(lane, &obj, "kind")?.as_deref() != Some("request") {
            continue;
        }
        let Some(stamp) = read_stamp(lane, &obj, "stamp")? else {
            continue;
        };
        if !family_or_staff_at(roster, &obj, &family, stamp.wall_ms) {
            continue;
        }
        let (Some(student), Some(from), Some(to), Some(kind)) = (
            get_str(lane, &obj, "student")?.and_then(|s| s.parse::<StudentId>().ok()),
            get_i64(lane, &obj, "from")?,
            get_i64(lane, &obj, "to")?,
            get_str(lane, &obj, "reason_kind")?.and_then(|k| LeaveKind::parse(&k)),
        ) else {
            continue;
        };
        let cancelled = cancelled(lane, roster, &obj, &family)?;
        let d = decided.get(&id);
        let status = match (cancelled, d) {
            (true, _) => LeaveStatus::Cancelled,
            (false, Some(d)) if d.approved => LeaveStatus::Approved,
            (false, Some(_)) => LeaveStatus::Rejected,
            (false, None) => LeaveStatus::Pending,
        };
        out.push(Leave {
            id,
            family,
            student,
            from,
            to,
            kind,
            reason: get_str(lane, &obj, "reason")?.unwrap_or_default(),
            requested: stamp,
            status,
            comment: d.map(|d| d.comment.clone()).unwrap_or_default(),
        });
    }
    out.sort_by_key(|l| (l.requested, l.id));
    Ok(out)
}

/// Every family's leave requests over the given lanes (staff), by start time.
pub fn class_leave<L: ReadDoc>(
    lanes: &[(FamilyId, &L)],
    roster: &RosterIndex,
) -> Result<Vec<Leave>, ModelError> {
    let mut out = Vec::new();
    for (family, lane) in lanes {
        out.extend(family_leave(*lane, roster, *family)?);
    }
    out.sort_by_key(|l| (l.from, l.family, l.id));
    Ok(out)
}

/// Leave (approved or still pending) overlapping `[from, to)` over the given lanes (staff):
/// who is expected to be away.
pub fn absences<L: ReadDoc>(
    lanes: &[(FamilyId, &L)],
    roster: &RosterIndex,
    from: i64,
    to: i64,
) -> Result<Vec<Leave>, ModelError> {
    Ok(class_leave(lanes, roster)?
        .into_iter()
        .filter(|l| matches!(l.status, LeaveStatus::Approved | LeaveStatus::Pending))
        .filter(|l| l.from < to && from < l.to)
        .collect())
}

// ---------------------------------------------------------------------------------------
// Internals

fn require_family_or_staff(actor: &Actor<'_>, family: &FamilyId) -> Result<(), ModelError> {
    if actor.require_staff().is_ok() {
        return Ok(());
    }
    actor.require_guardian_of(family).map(|_| ())
}

fn family_or_staff_at(roster: &RosterIndex, obj: &ObjId, family: &FamilyId, at: i64) -> bool {
    author_of_obj(obj).is_some_and(|d| {
        guardian_device_at(roster, &d, family, at) || staff_device_at(roster, &d, at)
    })
}

fn request_obj(doc: &impl ReadDoc, request: ItemId) -> Result<ObjId, ModelError> {
    let map = top_map(doc, "leave")?;
    map_at(doc, &map, &request.to_hex())?
        .filter(|o| matches!(get_str(doc, o, "kind"), Ok(Some(k)) if k == "request"))
        .ok_or_else(|| ModelError::UnknownId {
            kind: "leave request",
            id: request.to_hex(),
        })
}

fn cancelled(
    lane: &impl ReadDoc,
    roster: &RosterIndex,
    obj: &ObjId,
    family: &FamilyId,
) -> Result<bool, ModelError> {
    for (value, op) in lane.get_all(obj, "cancelled")? {
        let Some(at) = value.as_str().and_then(|s| Hlc::decode(s).ok()) else {
            continue;
        };
        if family_or_staff_at(roster, &op, family, at.wall_ms) {
            return Ok(true);
        }
    }
    Ok(false)
}

struct LeaveDecision {
    approved: bool,
    comment: String,
    stamp: Hlc,
}

/// The effective staff decision per request: greatest stamp wins.
fn decisions(
    lane: &impl ReadDoc,
    roster: &RosterIndex,
) -> Result<BTreeMap<ItemId, LeaveDecision>, ModelError> {
    let map = top_map(lane, "leave")?;
    let mut out: BTreeMap<ItemId, LeaveDecision> = BTreeMap::new();
    for key in keys(lane, &map) {
        let Some(obj) = map_at(lane, &map, &key)? else {
            continue;
        };
        if get_str(lane, &obj, "kind")?.as_deref() != Some("decision") {
            continue;
        }
        let Some(stamp) = read_stamp(lane, &obj, "stamp")? else {
            continue;
        };
        if !author_of_obj(&obj).is_some_and(|d| staff_device_at(roster, &d, stamp.wall_ms)) {
            continue;
        }
        let (Some(request), Some(outcome)) = (
            get_str(lane, &obj, "request")?.and_then(|s| s.parse::<ItemId>().ok()),
            get_str(lane, &obj, "outcome")?,
        ) else {
            continue;
        };
        let approved = match outcome.as_str() {
            "approved" => true,
            "rejected" => false,
            _ => continue,
        };
        if out.get(&request).is_none_or(|d| stamp > d.stamp) {
            out.insert(
                request,
                LeaveDecision {
                    approved,
                    comment: get_str(lane, &obj, "comment")?.unwrap_or_default(),
                    stamp,
                },
            );
        }
    }
    Ok(out)
}
