//! Capacity-limited allocation, shared by event slots (bookings) and duty shifts (claims).
//!
//! A CRDT cannot enforce "at most N holders", so families write **requests** in their lanes
//! and a trusted registrar writes **decisions** in the notebook. This module holds the three
//! pieces both activities share:
//!
//! - **resources** (a slot or a shift): a `spec` register (start, end, capacity) resolved by
//!   HLC among staff-written record objects, and a monotonic `withdrawn` flag;
//! - the **ledger**: the merged view computed from the notebook alone, so every member sees
//!   the same confirmations. Per request the effective decision is a `released` one if any
//!   exists (terminal), else the one with the greatest stamp. Per resource the effective
//!   confirmations are ordered by decision stamp (earliest wins, tie-broken by request id);
//!   the first `capacity` hold the place and the rest are displaced. So even two registrars
//!   deciding concurrently on different request sets never show two confirmations for one
//!   place;
//! - the **registrar**: plans new decisions from the ledger and the lanes' requests, in
//!   request-stamp order.

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc};

use super::{BookingStatus, DeclineReason, DisplaceReason, Outcome};
use crate::error::ModelError;
use crate::hlc::{Hlc, read_stamp};
use crate::identity::DeviceId;
use crate::ids::{FamilyId, IdSource, ItemId};
use crate::roster::RosterIndex;
use crate::values::{
    all_maps_at, author_of_obj, get_i64, get_str, keys, map_at, staff_device_at, top_map,
};

/// Decision kind of event-slot bookings.
pub(crate) const KIND_BOOKING: &str = "booking";
/// Decision kind of duty-shift claims (and swap halves taking a shift).
pub(crate) const KIND_CLAIM: &str = "claim";

/// Most places a slot or shift may have.
pub(crate) const MAX_CAPACITY: u32 = 1000;
/// How many alternatives a family is offered.
pub(crate) const MAX_ALTERNATIVES: usize = 3;

/// A slot or shift as currently specified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resource {
    pub(crate) id: ItemId,
    pub(crate) group: ItemId,
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) capacity: u32,
    /// Withdrawn itself, or its event/post was cancelled.
    pub(crate) withdrawn: bool,
}

/// Check a start/end/capacity triple given by the API caller.
pub(crate) fn check_spec(start: i64, end: i64, capacity: u32) -> Result<(), ModelError> {
    if end <= start {
        return Err(ModelError::InvalidInput {
            field: "end",
            reason: "must be after start".into(),
        });
    }
    if capacity == 0 || capacity > MAX_CAPACITY {
        return Err(ModelError::InvalidInput {
            field: "capacity",
            reason: format!("must be between 1 and {MAX_CAPACITY}"),
        });
    }
    Ok(())
}

/// Create resource `id` under `children` (a map created with its group by the same writer).
pub(crate) fn create_resource(
    tx: &mut impl Transactable,
    children: &ObjId,
    id: ItemId,
    start: i64,
    end: i64,
    capacity: u32,
    stamp: Hlc,
) -> Result<(), ModelError> {
    let obj = tx.put_object(children, id.to_hex(), ObjType::Map)?;
    tx.put(&obj, "stamp", stamp.encode())?;
    put_spec(tx, &obj, start, end, capacity, stamp)
}

/// Replace a resource's spec (a register: a new record object, resolved by HLC on read).
pub(crate) fn change_spec(
    tx: &mut impl Transactable,
    obj: &ObjId,
    device: DeviceId,
    now: i64,
    start: i64,
    end: i64,
    capacity: u32,
) -> Result<(), ModelError> {
    let mut seen = Vec::new();
    for rec in all_maps_at(tx, obj, "spec")? {
        if let Some(s) = read_stamp(tx, &rec, "stamp")? {
            seen.push(s);
        }
    }
    let stamp = Hlc::after(device, now, &seen);
    put_spec(tx, obj, start, end, capacity, stamp)
}

fn put_spec(
    tx: &mut impl Transactable,
    obj: &ObjId,
    start: i64,
    end: i64,
    capacity: u32,
    stamp: Hlc,
) -> Result<(), ModelError> {
    let spec = tx.put_object(obj, "spec", ObjType::Map)?;
    tx.put(&spec, "start", start)?;
    tx.put(&spec, "end", end)?;
    tx.put(&spec, "capacity", i64::from(capacity))?;
    tx.put(&spec, "stamp", stamp.encode())?;
    Ok(())
}

/// Mark a resource withdrawn (monotonic: any value means withdrawn).
pub(crate) fn withdraw(
    tx: &mut impl Transactable,
    obj: &ObjId,
    device: DeviceId,
    now: i64,
) -> Result<(), ModelError> {
    tx.put(obj, "withdrawn", Hlc::after(device, now, []).encode())?;
    Ok(())
}

/// The current spec of a resource object: the staff-written record with the greatest stamp.
pub(crate) fn read_spec(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
    obj: &ObjId,
) -> Result<Option<(i64, i64, u32)>, ModelError> {
    let mut best: Option<(Hlc, (i64, i64, u32))> = None;
    for rec in all_maps_at(doc, obj, "spec")? {
        let Some(stamp) = read_stamp(doc, &rec, "stamp")? else {
            continue;
        };
        if !author_of_obj(&rec).is_some_and(|d| staff_device_at(roster, &d, stamp.wall_ms)) {
            continue;
        }
        let (Some(start), Some(end), Some(cap)) = (
            get_i64(doc, &rec, "start")?,
            get_i64(doc, &rec, "end")?,
            get_i64(doc, &rec, "capacity")?.and_then(|c| u32::try_from(c).ok()),
        ) else {
            continue;
        };
        if end <= start || cap == 0 {
            continue;
        }
        if best.as_ref().is_none_or(|(b, _)| stamp > *b) {
            best = Some((stamp, (start, end, cap)));
        }
    }
    Ok(best.map(|(_, s)| s))
}

/// Every resource under `group_obj[children_key]`, with their group's cancellation folded in.
pub(crate) fn read_resources(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
    group_obj: &ObjId,
    group: ItemId,
    children_key: &str,
    group_cancelled: bool,
) -> Result<Vec<Resource>, ModelError> {
    let mut out = Vec::new();
    let Some(children) = map_at(doc, group_obj, children_key)? else {
        return Ok(out);
    };
    for key in keys(doc, &children) {
        let Ok(id) = key.parse::<ItemId>() else {
            continue;
        };
        let Some(obj) = map_at(doc, &children, &key)? else {
            continue;
        };
        if !author_is_staff(doc, roster, &obj)? {
            continue;
        }
        let Some((start, end, capacity)) = read_spec(doc, roster, &obj)? else {
            continue;
        };
        let withdrawn = group_cancelled || flag_set_by_staff(doc, roster, &obj, "withdrawn")?;
        out.push(Resource {
            id,
            group,
            start,
            end,
            capacity,
            withdrawn,
        });
    }
    Ok(out)
}

/// Whether a monotonic flag (any stamp value means set) at `obj[key]` was set by staff.
pub(crate) fn flag_set_by_staff(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
    obj: &ObjId,
    key: &str,
) -> Result<bool, ModelError> {
    for (value, op) in doc.get_all(obj, key)? {
        let at = value
            .as_str()
            .and_then(|s| Hlc::decode(s).ok())
            .map_or(i64::MAX - 1, |s| s.wall_ms);
        if author_of_obj(&op).is_some_and(|d| staff_device_at(roster, &d, at)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether an object was created by a staff device (checked at the object's `stamp` if it has
/// one, else as of now).
pub(crate) fn author_is_staff(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
    obj: &ObjId,
) -> Result<bool, ModelError> {
    let at = read_stamp(doc, obj, "stamp")?.map_or(i64::MAX - 1, |s| s.wall_ms);
    Ok(author_of_obj(obj).is_some_and(|d| staff_device_at(roster, &d, at)))
}

/// Why a decision was made, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    None,
    Full,
    Duplicate,
    Closed,
    Cancelled,
    Swapped,
    SlotChanged,
    Withdrawn,
    Staff,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::None => "",
            Reason::Full => "full",
            Reason::Duplicate => "duplicate",
            Reason::Closed => "closed",
            Reason::Cancelled => "cancelled",
            Reason::Swapped => "swapped",
            Reason::SlotChanged => "slot_changed",
            Reason::Withdrawn => "withdrawn",
            Reason::Staff => "staff",
        }
    }

    fn parse(s: &str) -> Reason {
        match s {
            "full" => Reason::Full,
            "duplicate" => Reason::Duplicate,
            "closed" => Reason::Closed,
            "cancelled" => Reason::Cancelled,
            "swapped" => Reason::Swapped,
            "slot_changed" => Reason::SlotChanged,
            "withdrawn" => Reason::Withdrawn,
            "staff" => Reason::Staff,
            _ => Reason::None,
        }
    }
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Confirmed => "confirmed",
            Outcome::Waitlisted => "waitlisted",
            Outcome::Declined => "declined",
            Outcome::Released => "released",
        }
    }

    fn parse(s: &str) -> Option<Outcome> {
        Some(match s {
            "confirmed" => Outcome::Confirmed,
            "waitlisted" => Outcome::Waitlisted,
            "declined" => Outcome::Declined,
            "released" => Outcome::Released,
            _ => return None,
        })
    }
}

/// One registrar decision about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) id: ItemId,
    pub(crate) request: ItemId,
    pub(crate) family: FamilyId,
    pub(crate) group: ItemId,
    pub(crate) resource: ItemId,
    pub(crate) outcome: Outcome,
    pub(crate) reason: Reason,
    pub(crate) stamp: Hlc,
    pub(crate) request_stamp: Hlc,
    /// The resource's time when confirmed (a later change of time displaces the booking).
    pub(crate) start: i64,
    pub(crate) end: i64,
}

/// Every well-formed decision of `kind` written by a registrar (a staff device).
pub(crate) fn read_decisions(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
    kind: &str,
) -> Result<Vec<Decision>, ModelError> {
    let map = top_map(doc, "decisions")?;
    let mut out = Vec::new();
    for key in keys(doc, &map) {
        let Ok(id) = key.parse::<ItemId>() else {
            continue;
        };
        let Some(obj) = map_at(doc, &map, &key)? else {
            continue;
        };
        if get_str(doc, &obj, "kind")?.as_deref() != Some(kind) {
            continue;
        }
        let Some(stamp) = read_stamp(doc, &obj, "stamp")? else {
            continue;
        };
        if !author_of_obj(&obj).is_some_and(|d| is_registrar(roster, &d, stamp.wall_ms)) {
            continue;
        }
        let id_at = |k: &str| -> Result<Option<ItemId>, ModelError> {
            Ok(get_str(doc, &obj, k)?.and_then(|s| s.parse().ok()))
        };
        let (Some(request), Some(family), Some(group), Some(resource), Some(outcome)) = (
            id_at("request")?,
            get_str(doc, &obj, "family")?.and_then(|s| s.parse::<FamilyId>().ok()),
            id_at("group")?,
            id_at("resource")?,
            get_str(doc, &obj, "outcome")?.and_then(|s| Outcome::parse(&s)),
        ) else {
            continue;
        };
        let Some(request_stamp) = read_stamp(doc, &obj, "request_stamp")? else {
            continue;
        };
        out.push(Decision {
            id,
            request,
            family,
            group,
            resource,
            outcome,
            reason: Reason::parse(&get_str(doc, &obj, "reason")?.unwrap_or_default()),
            stamp,
            request_stamp,
            start: get_i64(doc, &obj, "start")?.unwrap_or(0),
            end: get_i64(doc, &obj, "end")?.unwrap_or(0),
        });
    }
    Ok(out)
}

/// Whether `device` may write decisions: a staff device today (the relay's registrar
/// identity will be added here).
pub(crate) fn is_registrar(roster: &RosterIndex, device: &DeviceId, at_ms: i64) -> bool {
    staff_device_at(roster, device, at_ms)
}

fn write_decision(
    tx: &mut impl Transactable,
    map: &ObjId,
    kind: &str,
    d: &Decision,
) -> Result<(), ModelError> {
    let obj = tx.put_object(map, d.id.to_hex(), ObjType::Map)?;
    tx.put(&obj, "kind", kind)?;
    tx.put(&obj, "request", d.request.to_hex())?;
    tx.put(&obj, "family", d.family.to_hex())?;
    tx.put(&obj, "group", d.group.to_hex())?;
    tx.put(&obj, "resource", d.resource.to_hex())?;
    tx.put(&obj, "outcome", d.outcome.as_str())?;
    tx.put(&obj, "reason", d.reason.as_str())?;
    tx.put(&obj, "stamp", d.stamp.encode())?;
    tx.put(&obj, "request_stamp", d.request_stamp.encode())?;
    tx.put(&obj, "start", d.start)?;
    tx.put(&obj, "end", d.end)?;
    Ok(())
}

/// A request as found in a family's lane (already checked for authorship).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LaneRequest {
    pub(crate) id: ItemId,
    pub(crate) family: FamilyId,
    pub(crate) group: ItemId,
    pub(crate) resource: ItemId,
    pub(crate) stamp: Hlc,
    pub(crate) cancelled: bool,
    /// Whether the registrar queues it (claims, bookings) or it only becomes confirmed by
    /// another mechanism (a swap half).
    pub(crate) queueable: bool,
}

/// The merged view of all decisions of one kind, from the notebook alone.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Effective decision per (family, request).
    pub(crate) effective: BTreeMap<(FamilyId, ItemId), Decision>,
    /// Status per decided (family, request).
    pub(crate) status: BTreeMap<(FamilyId, ItemId), BookingStatus>,
    /// Holders per resource, earliest confirmation first.
    pub(crate) holders: BTreeMap<ItemId, Vec<(FamilyId, ItemId)>>,
    /// Waitlist per resource, earliest request first.
    pub(crate) waitlists: BTreeMap<ItemId, Vec<(FamilyId, ItemId)>>,
    /// Displaced confirmations per resource.
    pub(crate) displaced: BTreeMap<ItemId, Vec<(FamilyId, ItemId, DisplaceReason)>>,
}

impl Ledger {
    /// Resolve `decisions` against the current `resources`.
    pub(crate) fn build(resources: &BTreeMap<ItemId, Resource>, decisions: &[Decision]) -> Ledger {
        let mut ledger = Ledger::default();
        for d in decisions {
            let key = (d.family, d.request);
            let replace = match ledger.effective.get(&key) {
                None => true,
                Some(cur) => match (
                    cur.outcome == Outcome::Released,
                    d.outcome == Outcome::Released,
                ) {
                    (true, false) => false,
                    (false, true) => true,
                    _ => (d.stamp, d.id) > (cur.stamp, cur.id),
                },
            };
            if replace {
                ledger.effective.insert(key, d.clone());
            }
        }

        let mut confirmed: BTreeMap<ItemId, Vec<&Decision>> = BTreeMap::new();
        let mut waiting: BTreeMap<ItemId, Vec<&Decision>> = BTreeMap::new();
        for (key, d) in &ledger.effective {
            let status = match d.outcome {
                Outcome::Released => match d.reason {
                    Reason::Cancelled => BookingStatus::Cancelled,
                    Reason::Swapped => BookingStatus::SwappedAway,
                    _ => BookingStatus::Displaced {
                        reason: DisplaceReason::ReleasedByStaff,
                    },
                },
                Outcome::Declined => match d.reason {
                    Reason::Withdrawn => BookingStatus::Displaced {
                        reason: DisplaceReason::Withdrawn,
                    },
                    Reason::SlotChanged => BookingStatus::Displaced {
                        reason: DisplaceReason::SlotChanged,
                    },
                    Reason::Duplicate => BookingStatus::Declined {
                        reason: DeclineReason::Duplicate,
                    },
                    Reason::Closed => BookingStatus::Declined {
                        reason: DeclineReason::Closed,
                    },
                    _ => BookingStatus::Declined {
                        reason: DeclineReason::Full,
                    },
                },
                Outcome::Waitlisted => {
                    waiting.entry(d.resource).or_default().push(d);
                    continue;
                }
                Outcome::Confirmed => {
                    confirmed.entry(d.resource).or_default().push(d);
                    continue;
                }
            };
            ledger.status.insert(*key, status);
        }

        for (rid, mut list) in confirmed {
            let res = resources.get(&rid).filter(|r| !r.withdrawn);
            list.sort_by_key(|d| (d.stamp, d.request, d.family));
            let mut held = 0u32;
            for d in list {
                let key = (d.family, d.request);
                let reason = match res {
                    None => Some(DisplaceReason::Withdrawn),
                    Some(r) if (r.start, r.end) != (d.start, d.end) => {
                        Some(DisplaceReason::SlotChanged)
                    }
                    Some(r) if held >= r.capacity => Some(DisplaceReason::OverCapacity),
                    Some(_) => None,
                };
                match reason {
                    Some(reason) => {
                        ledger
                            .displaced
                            .entry(rid)
                            .or_default()
                            .push((d.family, d.request, reason));
                        ledger
                            .status
                            .insert(key, BookingStatus::Displaced { reason });
                    }
                    None => {
                        held += 1;
                        ledger.holders.entry(rid).or_default().push(key);
                        ledger.status.insert(key, BookingStatus::Confirmed);
                    }
                }
            }
        }

        for (rid, mut list) in waiting {
            let open = resources.get(&rid).is_some_and(|r| !r.withdrawn);
            list.sort_by_key(|d| (d.request_stamp, d.request, d.family));
            for (i, d) in list.into_iter().enumerate() {
                let key = (d.family, d.request);
                if open {
                    ledger.waitlists.entry(rid).or_default().push(key);
                    let position = u32::try_from(i + 1).unwrap_or(u32::MAX);
                    ledger
                        .status
                        .insert(key, BookingStatus::Waitlisted { position });
                } else {
                    ledger.status.insert(
                        key,
                        BookingStatus::Displaced {
                            reason: DisplaceReason::Withdrawn,
                        },
                    );
                }
            }
        }
        ledger
    }

    /// Places still free on `r`.
    pub(crate) fn free(&self, r: &Resource) -> u32 {
        if r.withdrawn {
            return 0;
        }
        let held = self.holders.get(&r.id).map_or(0, Vec::len);
        r.capacity
            .saturating_sub(u32::try_from(held).unwrap_or(u32::MAX))
    }

    /// The status of a request found in a lane: the ledger's, with the lane's own knowledge
    /// (a cancellation not yet released by the registrar; an undecided request).
    pub(crate) fn status_for(
        &self,
        resources: &BTreeMap<ItemId, Resource>,
        req: &LaneRequest,
    ) -> BookingStatus {
        let key = (req.family, req.id);
        let released = self
            .effective
            .get(&key)
            .is_some_and(|d| d.outcome == Outcome::Released);
        if req.cancelled && !released {
            return BookingStatus::Cancelled;
        }
        if let Some(s) = self.status.get(&key) {
            return s.clone();
        }
        match resources.get(&req.resource) {
            Some(r) if r.withdrawn => BookingStatus::Displaced {
                reason: DisplaceReason::Withdrawn,
            },
            _ => BookingStatus::Pending,
        }
    }

    /// The nearest free resources of the same group as `req`, offered to a family that did
    /// not get (or lost) its place.
    pub(crate) fn alternatives(
        &self,
        resources: &BTreeMap<ItemId, Resource>,
        req: &LaneRequest,
        status: &BookingStatus,
    ) -> Vec<ItemId> {
        let offer = matches!(
            status,
            BookingStatus::Waitlisted { .. }
                | BookingStatus::Declined { .. }
                | BookingStatus::Displaced { .. }
        );
        if !offer {
            return Vec::new();
        }
        let around = resources.get(&req.resource).map(|r| r.start);
        let mut free: Vec<&Resource> = resources
            .values()
            .filter(|r| r.group == req.group && r.id != req.resource && self.free(r) > 0)
            .collect();
        free.sort_by_key(|r| {
            let dist = around.map_or(0, |a| r.start.abs_diff(a));
            (dist, r.start, r.id)
        });
        free.into_iter()
            .take(MAX_ALTERNATIVES)
            .map(|r| r.id)
            .collect()
    }
}

/// A registrar run: plans decisions one at a time, each stamped after every stamp seen, and
/// keeps the ledger current so later steps see earlier ones.
pub(crate) struct Registrar<'a> {
    kind: &'static str,
    now: i64,
    clock: Hlc,
    resources: &'a BTreeMap<ItemId, Resource>,
    decisions: Vec<Decision>,
    new: Vec<Decision>,
    pub(crate) ledger: Ledger,
}

impl<'a> Registrar<'a> {
    /// Start a run over the notebook's `decisions` and the lanes' `requests`.
    pub(crate) fn new(
        kind: &'static str,
        device: DeviceId,
        now: i64,
        resources: &'a BTreeMap<ItemId, Resource>,
        decisions: Vec<Decision>,
        requests: &[LaneRequest],
    ) -> Self {
        let mut clock = Hlc::zero(device);
        for d in &decisions {
            clock.observe(&d.stamp);
        }
        for r in requests {
            clock.observe(&r.stamp);
        }
        let ledger = Ledger::build(resources, &decisions);
        Self {
            kind,
            now,
            clock,
            resources,
            decisions,
            new: Vec::new(),
            ledger,
        }
    }

    /// Record a new decision (stamped now) about `req`.
    pub(crate) fn decide(
        &mut self,
        ids: &mut impl IdSource,
        req: &LaneRequest,
        outcome: Outcome,
        reason: Reason,
    ) {
        let (start, end) = self
            .resources
            .get(&req.resource)
            .map_or((0, 0), |r| (r.start, r.end));
        let d = Decision {
            id: ids.item_id(self.now),
            request: req.id,
            family: req.family,
            group: req.group,
            resource: req.resource,
            outcome,
            reason,
            stamp: self.clock.tick(self.now),
            request_stamp: req.stamp,
            start,
            end,
        };
        self.decisions.push(d.clone());
        self.new.push(d);
    }

    /// Recompute the ledger after [`decide`](Self::decide) calls.
    pub(crate) fn rebuild(&mut self) {
        self.ledger = Ledger::build(self.resources, &self.decisions);
    }

    /// A stamp for a record that is not a decision (e.g. a swap verdict), after all others.
    pub(crate) fn stamp(&mut self) -> Hlc {
        self.clock.tick(self.now)
    }

    /// Release every cancelled request not yet released, so its place frees up for all.
    pub(crate) fn release_cancelled(&mut self, ids: &mut impl IdSource, requests: &[LaneRequest]) {
        for req in requests {
            let released = self
                .ledger
                .effective
                .get(&(req.family, req.id))
                .is_some_and(|d| d.outcome == Outcome::Released);
            let decided = self.ledger.effective.contains_key(&(req.family, req.id));
            // A withdrawn swap half that never held anything needs no release.
            if req.cancelled && !released && (req.queueable || decided) {
                self.decide(ids, req, Outcome::Released, Reason::Cancelled);
            }
        }
        self.rebuild();
    }

    /// Give free places to queued requests in request-stamp order (tie-break: request id),
    /// waitlist or decline the rest, and settle displaced confirmations.
    pub(crate) fn fill(
        &mut self,
        ids: &mut impl IdSource,
        requests: &[LaneRequest],
        waitlist_of: impl Fn(&ItemId) -> bool,
    ) {
        let mut sorted: Vec<&LaneRequest> = requests
            .iter()
            .filter(|r| r.queueable && !r.cancelled)
            .collect();
        sorted.sort_by_key(|r| (r.stamp, r.id, r.family));

        // Families already holding a place on each resource.
        let mut seen: BTreeSet<(FamilyId, ItemId)> = BTreeSet::new();
        for (rid, holders) in &self.ledger.holders {
            for (f, _) in holders {
                seen.insert((*f, *rid));
            }
        }

        let mut queues: BTreeMap<ItemId, Vec<&LaneRequest>> = BTreeMap::new();
        for req in sorted {
            let Some(res) = self.resources.get(&req.resource) else {
                continue;
            };
            if res.group != req.group || res.withdrawn {
                continue;
            }
            let status = self.ledger.status_for(self.resources, req);
            let effective = self
                .ledger
                .effective
                .get(&(req.family, req.id))
                .map(|d| d.outcome);
            match status {
                BookingStatus::Pending | BookingStatus::Waitlisted { .. } => {}
                BookingStatus::Displaced {
                    reason: DisplaceReason::OverCapacity,
                } => {}
                BookingStatus::Displaced {
                    reason: DisplaceReason::SlotChanged,
                } if effective == Some(Outcome::Confirmed) => {
                    // Settle it, so a later change back of the time cannot revive it.
                    self.decide(ids, req, Outcome::Declined, Reason::SlotChanged);
                    continue;
                }
                _ => continue,
            }
            if !seen.insert((req.family, req.resource)) {
                self.decide(ids, req, Outcome::Declined, Reason::Duplicate);
                continue;
            }
            if self.now >= res.start {
                self.decide(ids, req, Outcome::Declined, Reason::Closed);
                continue;
            }
            queues.entry(req.resource).or_default().push(req);
        }

        for (rid, queue) in queues {
            let Some(res) = self.resources.get(&rid) else {
                continue;
            };
            let free = self.ledger.free(res) as usize;
            let waitlist = waitlist_of(&res.group);
            for (i, req) in queue.into_iter().enumerate() {
                let current = self.ledger.status_for(self.resources, req);
                if i < free {
                    self.decide(ids, req, Outcome::Confirmed, Reason::None);
                } else if waitlist {
                    if !matches!(current, BookingStatus::Waitlisted { .. }) {
                        self.decide(ids, req, Outcome::Waitlisted, Reason::Full);
                    }
                } else {
                    self.decide(ids, req, Outcome::Declined, Reason::Full);
                }
            }
        }
        self.rebuild();
    }

    /// Write the planned decisions to the notebook and return them.
    pub(crate) fn write(self, tx: &mut impl Transactable) -> Result<Vec<Decision>, ModelError> {
        let map = top_map(tx, "decisions")?;
        for d in &self.new {
            write_decision(tx, &map, self.kind, d)?;
        }
        Ok(self.new)
    }
}
