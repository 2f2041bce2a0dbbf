//! Events: parent–teacher conferences with time slots, open days, lectures, parent classes.
//!
//! # Where things live
//!
//! - Notebook `events/<event>`: the event (kind, title, place, time, whether full slots keep a
//!   waitlist), created by one staff device, with its `slots/<slot>` map created in the same
//!   change. A slot's start/end/capacity is a register (`spec`): each edit is a new record
//!   object and the greatest [`Hlc`] wins, so a teacher can move or narrow a slot. Withdrawing
//!   a slot or cancelling the event is a monotonic flag.
//! - Lane `requests/<request>`: a family's **booking request** (event, slot, student, note,
//!   stamp) or an **RSVP** (attending, how many people). Cancelling a request is a monotonic
//!   flag on it. RSVP changes are new items; the greatest stamp per event wins.
//! - Notebook `decisions/<decision>`: a registrar's **decision** about one request
//!   (confirmed, waitlisted, declined, released), written by [`decide_bookings`].
//!
//! # Never two confirmations
//!
//! A family's booking stays [`BookingStatus::Pending`] until a registrar decides it. The
//! registrar confirms in request order (the request's HLC, then request id) while places are
//! free. The status a reader sees is computed from the notebook's decisions alone (so every
//! member sees the same), and over-capacity confirmations — from two registrars deciding
//! concurrently, or a teacher narrowing a slot — resolve deterministically: the earliest
//! decision keeps the place, the rest are [`BookingStatus::Displaced`] and offered the
//! nearest free slots. A slot that is withdrawn or moved displaces its bookings too; nothing
//! is silently dropped.
//!
//! Decisions name the family and request, so the class can see who holds which slot (the
//! notebook is class-wide by design); the request's student and note stay in the lane.

pub(crate) mod allocation;

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc};

use self::allocation::{
    KIND_BOOKING, LaneRequest, Ledger, Registrar, Resource, author_is_staff, change_spec,
    check_spec, create_resource, flag_set_by_staff, read_decisions, read_resources,
};
use crate::context::Actor;
use crate::error::{ModelError, check_text};
use crate::hlc::{Hlc, read_stamp};
use crate::ids::{FamilyId, IdSource, ItemId, StudentId};
use crate::roster::RosterIndex;
use crate::values::{
    author_of_obj, get_bool, get_i64, get_str, guardian_device_at, keys, map_at, top_map,
};

/// Longest event title, in characters.
pub const MAX_TITLE: usize = 200;
/// Longest location, in characters.
pub const MAX_LOCATION: usize = 200;
/// Longest booking note, in characters.
pub const MAX_NOTE: usize = 500;
/// Most people one RSVP may announce.
pub const MAX_PEOPLE: u32 = 20;
/// Most slots one event may have.
pub const MAX_SLOTS: usize = 500;

/// What kind of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// Parent–teacher conference with bookable time slots.
    Conference,
    /// School open day.
    OpenDay,
    /// A lecture for parents.
    Lecture,
    /// A parent class (parenting course).
    ParentClass,
}

impl EventKind {
    /// The key stored in documents.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Conference => "conference",
            EventKind::OpenDay => "open_day",
            EventKind::Lecture => "lecture",
            EventKind::ParentClass => "parent_class",
        }
    }

    /// Parse a stored key.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "conference" => EventKind::Conference,
            "open_day" => EventKind::OpenDay,
            "lecture" => EventKind::Lecture,
            "parent_class" => EventKind::ParentClass,
            _ => return None,
        })
    }
}

/// A new event, as the teacher enters it.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    /// Kind of event.
    pub kind: EventKind,
    /// Title shown to families.
    pub title: &'a str,
    /// Where it happens (may be empty).
    pub location: &'a str,
    /// Start, ms since the Unix epoch.
    pub starts_at: i64,
    /// End, ms since the Unix epoch; after `starts_at`.
    pub ends_at: i64,
    /// Whether requests for a full slot join a waitlist (else they are declined).
    pub waitlist: bool,
}

/// Start, end and capacity of a slot (or duty shift).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotSpec {
    /// Start, ms since the Unix epoch.
    pub start: i64,
    /// End, ms since the Unix epoch; after `start`.
    pub end: i64,
    /// Places: at least 1.
    pub capacity: u32,
}

/// An event as read from the notebook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event's id.
    pub id: ItemId,
    /// Kind of event.
    pub kind: EventKind,
    /// Title.
    pub title: String,
    /// Location (possibly empty).
    pub location: String,
    /// Start.
    pub starts_at: i64,
    /// End.
    pub ends_at: i64,
    /// Whether full slots keep a waitlist.
    pub waitlist: bool,
    /// Whether the event was cancelled (every slot then counts as withdrawn).
    pub cancelled: bool,
    /// Its slots, by start time.
    pub slots: Vec<Slot>,
}

/// A slot with its occupancy in the merged view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The slot's id.
    pub id: ItemId,
    /// Current start.
    pub start: i64,
    /// Current end.
    pub end: i64,
    /// Current capacity.
    pub capacity: u32,
    /// Withdrawn by the teacher (or its event cancelled).
    pub withdrawn: bool,
    /// Confirmed bookings holding a place.
    pub confirmed: u32,
    /// Waitlisted bookings.
    pub waitlisted: u32,
    /// Free places.
    pub free: u32,
}

/// What a registrar decided about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The request holds a place.
    Confirmed,
    /// The request waits for a place.
    Waitlisted,
    /// The request was refused (full without waitlist, duplicate, too late, slot changed).
    Declined,
    /// The place was given back (the family cancelled, swapped, or staff released it).
    Released,
}

/// The status of a booking (or duty claim) as a family and the class see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BookingStatus {
    /// Not decided yet: the app shows "pending", never "confirmed".
    Pending,
    /// Holds a place.
    Confirmed,
    /// Waits for a place; `position` is 1 for the next in line.
    Waitlisted {
        /// Place in the waitlist, from 1.
        position: u32,
    },
    /// Refused; alternatives are offered.
    Declined {
        /// Why.
        reason: DeclineReason,
    },
    /// Had (or asked for) a place that no longer exists as booked; the family is told and
    /// offered alternatives.
    Displaced {
        /// Why.
        reason: DisplaceReason,
    },
    /// Cancelled by the family.
    Cancelled,
    /// Handed to another family through an accepted swap (duty claims).
    SwappedAway,
}

/// Why a request was declined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeclineReason {
    /// No free place and no waitlist.
    Full,
    /// The family already holds or asked for this place.
    Duplicate,
    /// The slot had started before the request was decided.
    Closed,
}

/// Why a booking was displaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisplaceReason {
    /// The teacher withdrew the slot or cancelled the event.
    Withdrawn,
    /// The teacher moved the slot to another time after it was confirmed.
    SlotChanged,
    /// More confirmations than places: capacity narrowed, or two registrars confirmed
    /// concurrently; the earliest confirmations keep their places.
    OverCapacity,
    /// Staff released the place.
    ReleasedByStaff,
}

/// A family's booking with its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    /// The request's id.
    pub request: ItemId,
    /// The family.
    pub family: FamilyId,
    /// The event.
    pub event: ItemId,
    /// The slot asked for.
    pub slot: ItemId,
    /// The student it is about, if given.
    pub student: Option<StudentId>,
    /// The family's note.
    pub note: String,
    /// When it was requested.
    pub requested: Hlc,
    /// Where it stands.
    pub status: BookingStatus,
    /// Nearest free slots of the same event, offered when waitlisted, declined or displaced.
    pub alternatives: Vec<ItemId>,
}

/// Who holds, waits for, or lost a slot (from the notebook alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotBookings {
    /// The slot.
    pub slot: ItemId,
    /// Confirmed (family, request), earliest first; never more than the capacity.
    pub confirmed: Vec<(FamilyId, ItemId)>,
    /// Waitlisted (family, request), next in line first.
    pub waitlist: Vec<(FamilyId, ItemId)>,
    /// Displaced confirmations.
    pub displaced: Vec<(FamilyId, ItemId, DisplaceReason)>,
}

/// A decision written by [`decide_bookings`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The request decided.
    pub request: ItemId,
    /// Its family.
    pub family: FamilyId,
    /// The slot (or shift) it is about.
    pub slot: ItemId,
    /// What was decided.
    pub outcome: Outcome,
}

/// A family's answer to an invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attendance {
    /// Will come.
    Yes,
    /// Will not come.
    No,
    /// Not sure yet.
    Maybe,
}

impl Attendance {
    fn as_str(self) -> &'static str {
        match self {
            Attendance::Yes => "yes",
            Attendance::No => "no",
            Attendance::Maybe => "maybe",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "yes" => Attendance::Yes,
            "no" => Attendance::No,
            "maybe" => Attendance::Maybe,
            _ => return None,
        })
    }
}

/// A family's current RSVP to one event (the latest by HLC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rsvp {
    /// The family.
    pub family: FamilyId,
    /// The event.
    pub event: ItemId,
    /// Coming or not.
    pub attendance: Attendance,
    /// How many people.
    pub people: u32,
    /// When it was given.
    pub stamp: Hlc,
}

/// RSVP counts for one event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RsvpSummary {
    /// Families coming.
    pub yes: u32,
    /// Families not coming.
    pub no: u32,
    /// Families not sure.
    pub maybe: u32,
    /// People announced by families coming.
    pub people: u32,
}

// ---------------------------------------------------------------------------------------
// Staff writes

/// Create an event with its slots (staff). Returns the event id and the slot ids in order.
pub fn create_event(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    ids: &mut impl IdSource,
    event: &NewEvent<'_>,
    slots: &[SlotSpec],
) -> Result<(ItemId, Vec<ItemId>), ModelError> {
    actor.require_staff()?;
    check_text("title", event.title, MAX_TITLE, false)?;
    check_text("location", event.location, MAX_LOCATION, true)?;
    if event.ends_at <= event.starts_at {
        return Err(ModelError::InvalidInput {
            field: "ends_at",
            reason: "must be after starts_at".into(),
        });
    }
    if slots.len() > MAX_SLOTS {
        return Err(ModelError::InvalidInput {
            field: "slots",
            reason: format!("at most {MAX_SLOTS} slots"),
        });
    }
    for s in slots {
        check_slot(event.starts_at, event.ends_at, s)?;
    }
    let stamp = Hlc::after(actor.device, actor.now, []);
    let events = top_map(tx, "events")?;
    let id = ids.item_id(actor.now);
    let obj = tx.put_object(&events, id.to_hex(), ObjType::Map)?;
    tx.put(&obj, "kind", event.kind.as_str())?;
    tx.put(&obj, "title", event.title)?;
    tx.put(&obj, "location", event.location)?;
    tx.put(&obj, "starts_at", event.starts_at)?;
    tx.put(&obj, "ends_at", event.ends_at)?;
    tx.put(&obj, "waitlist", event.waitlist)?;
    tx.put(&obj, "stamp", stamp.encode())?;
    let children = tx.put_object(&obj, "slots", ObjType::Map)?;
    let mut slot_ids = Vec::with_capacity(slots.len());
    for s in slots {
        let sid = ids.item_id(actor.now);
        create_resource(tx, &children, sid, s.start, s.end, s.capacity, stamp)?;
        slot_ids.push(sid);
    }
    Ok((id, slot_ids))
}

/// Add a slot to an event (staff).
pub fn add_slot(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    ids: &mut impl IdSource,
    event: ItemId,
    slot: SlotSpec,
) -> Result<ItemId, ModelError> {
    actor.require_staff()?;
    let (obj, head) = event_obj(tx, actor.roster, event)?;
    if head.cancelled {
        return Err(ModelError::InvalidState(format!(
            "event {event} is cancelled"
        )));
    }
    check_slot(head.starts_at, head.ends_at, &slot)?;
    let children = map_at(tx, &obj, "slots")?.ok_or(ModelError::Corrupt {
        what: "event without slots map".into(),
    })?;
    let id = ids.item_id(actor.now);
    let stamp = Hlc::after(actor.device, actor.now, []);
    create_resource(
        tx,
        &children,
        id,
        slot.start,
        slot.end,
        slot.capacity,
        stamp,
    )?;
    Ok(id)
}

/// Move or narrow (or widen) a slot (staff). Confirmed bookings whose time changed become
/// [`DisplaceReason::SlotChanged`]; confirmations beyond a narrowed capacity become
/// [`DisplaceReason::OverCapacity`] (latest confirmations first).
pub fn change_slot(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    event: ItemId,
    slot: ItemId,
    spec: SlotSpec,
) -> Result<(), ModelError> {
    actor.require_staff()?;
    let (obj, head) = event_obj(tx, actor.roster, event)?;
    check_slot(head.starts_at, head.ends_at, &spec)?;
    let s = slot_obj(tx, &obj, slot)?;
    change_spec(
        tx,
        &s,
        actor.device,
        actor.now,
        spec.start,
        spec.end,
        spec.capacity,
    )
}

/// Withdraw a slot (staff): its bookings become [`DisplaceReason::Withdrawn`].
pub fn withdraw_slot(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    event: ItemId,
    slot: ItemId,
) -> Result<(), ModelError> {
    actor.require_staff()?;
    let (obj, _) = event_obj(tx, actor.roster, event)?;
    let s = slot_obj(tx, &obj, slot)?;
    allocation::withdraw(tx, &s, actor.device, actor.now)
}

/// Cancel an event (staff): every slot counts as withdrawn.
pub fn cancel_event(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    event: ItemId,
) -> Result<(), ModelError> {
    actor.require_staff()?;
    let (obj, _) = event_obj(tx, actor.roster, event)?;
    tx.put(
        &obj,
        "cancelled",
        Hlc::after(actor.device, actor.now, []).encode(),
    )?;
    Ok(())
}

fn check_slot(starts_at: i64, ends_at: i64, s: &SlotSpec) -> Result<(), ModelError> {
    check_spec(s.start, s.end, s.capacity)?;
    if s.start < starts_at || s.end > ends_at {
        return Err(ModelError::InvalidInput {
            field: "slot",
            reason: "must lie within the event's time".into(),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Family writes

/// Ask for a place in a slot (a guardian of `family`, in the family's lane). The booking is
/// [`BookingStatus::Pending`] until a registrar decides it.
#[allow(clippy::too_many_arguments)]
pub fn request_booking(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    notebook: &impl ReadDoc,
    ids: &mut impl IdSource,
    family: FamilyId,
    event: ItemId,
    slot: ItemId,
    student: Option<StudentId>,
    note: &str,
) -> Result<ItemId, ModelError> {
    actor.require_guardian_of(&family)?;
    check_text("note", note, MAX_NOTE, true)?;
    check_student(actor.roster, &family, student)?;
    let (obj, head) = event_obj(notebook, actor.roster, event)?;
    if head.cancelled {
        return Err(ModelError::InvalidState(format!(
            "event {event} is cancelled"
        )));
    }
    let res = read_resources(notebook, actor.roster, &obj, event, "slots", false)?
        .into_iter()
        .find(|r| r.id == slot)
        .ok_or_else(|| ModelError::UnknownId {
            kind: "slot",
            id: slot.to_hex(),
        })?;
    if res.withdrawn {
        return Err(ModelError::InvalidState(format!(
            "slot {slot} was withdrawn"
        )));
    }
    if actor.now >= res.start {
        return Err(ModelError::InvalidState(format!(
            "slot {slot} has already started"
        )));
    }
    let requests = top_map(tx, "requests")?;
    let mut seen = Vec::new();
    for (req, _) in lane_bookings(tx, actor.roster, family)? {
        seen.push(req.stamp);
        if req.resource == slot && !req.cancelled {
            return Err(ModelError::InvalidState(format!(
                "the family already asked for slot {slot} (request {})",
                req.id
            )));
        }
    }
    let stamp = Hlc::after(actor.device, actor.now, &seen);
    let id = ids.item_id(actor.now);
    let obj = tx.put_object(&requests, id.to_hex(), ObjType::Map)?;
    tx.put(&obj, "kind", KIND_BOOKING)?;
    tx.put(&obj, "event", event.to_hex())?;
    tx.put(&obj, "slot", slot.to_hex())?;
    tx.put(
        &obj,
        "student",
        student.map(|s| s.to_hex()).unwrap_or_default(),
    )?;
    tx.put(&obj, "note", note)?;
    tx.put(&obj, "stamp", stamp.encode())?;
    Ok(id)
}

/// Cancel a booking request (a guardian of `family`). Idempotent; the registrar then releases
/// the place for others.
pub fn cancel_booking(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    family: FamilyId,
    request: ItemId,
) -> Result<(), ModelError> {
    actor.require_guardian_of(&family)?;
    let requests = top_map(tx, "requests")?;
    let obj = map_at(tx, &requests, &request.to_hex())?
        .filter(|o| matches!(get_str(tx, o, "kind"), Ok(Some(k)) if k == KIND_BOOKING))
        .ok_or_else(|| ModelError::UnknownId {
            kind: "request",
            id: request.to_hex(),
        })?;
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

/// Answer an invitation (a guardian of `family`). A later answer replaces an earlier one;
/// concurrent answers from two guardians resolve by HLC.
#[allow(clippy::too_many_arguments)]
pub fn rsvp(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    notebook: &impl ReadDoc,
    ids: &mut impl IdSource,
    family: FamilyId,
    event: ItemId,
    attendance: Attendance,
    people: u32,
) -> Result<(), ModelError> {
    actor.require_guardian_of(&family)?;
    if people > MAX_PEOPLE || (attendance == Attendance::Yes && people == 0) {
        return Err(ModelError::InvalidInput {
            field: "people",
            reason: format!(
                "between 1 and {MAX_PEOPLE} when attending, at most {MAX_PEOPLE} otherwise"
            ),
        });
    }
    let (_, head) = event_obj(notebook, actor.roster, event)?;
    if head.cancelled {
        return Err(ModelError::InvalidState(format!(
            "event {event} is cancelled"
        )));
    }
    if actor.now >= head.ends_at {
        return Err(ModelError::InvalidState(format!("event {event} is over")));
    }
    let seen: Vec<Hlc> = family_rsvps(tx, actor.roster, family)?
        .into_iter()
        .filter(|r| r.event == event)
        .map(|r| r.stamp)
        .collect();
    let stamp = Hlc::after(actor.device, actor.now, &seen);
    let requests = top_map(tx, "requests")?;
    let obj = tx.put_object(&requests, ids.item_id(actor.now).to_hex(), ObjType::Map)?;
    tx.put(&obj, "kind", "rsvp")?;
    tx.put(&obj, "event", event.to_hex())?;
    tx.put(&obj, "attendance", attendance.as_str())?;
    tx.put(&obj, "people", i64::from(people))?;
    tx.put(&obj, "stamp", stamp.encode())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Registrar

/// Decide pending booking requests (a registrar: a staff device), writing decisions into the
/// notebook `tx`. `lanes` are the family lanes the registrar has. In one run:
/// cancelled requests are released; then, per slot, queued requests (pending, waitlisted, or
/// displaced by over-capacity) are taken in request order — HLC, then request id — and
/// confirmed while places are free, the rest waitlisted (or declined when the event keeps no
/// waitlist). Requests for slots the registrar does not know yet stay pending.
pub fn decide_bookings<L: ReadDoc>(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    ids: &mut impl IdSource,
    lanes: &[(FamilyId, &L)],
) -> Result<Vec<Decided>, ModelError> {
    actor.require_staff()?;
    let (heads, resources) = load(tx, actor.roster)?;
    let mut requests = Vec::new();
    for (family, lane) in lanes {
        requests.extend(
            lane_bookings(*lane, actor.roster, *family)?
                .into_iter()
                .map(|(r, _)| r),
        );
    }
    let decisions = read_decisions(tx, actor.roster, KIND_BOOKING)?;
    let mut reg = Registrar::new(
        KIND_BOOKING,
        actor.device,
        actor.now,
        &resources,
        decisions,
        &requests,
    );
    reg.release_cancelled(ids, &requests);
    let waitlist: BTreeMap<ItemId, bool> = heads.iter().map(|e| (e.id, e.waitlist)).collect();
    reg.fill(ids, &requests, |g| waitlist.get(g).copied().unwrap_or(true));
    Ok(reg
        .write(tx)?
        .into_iter()
        .map(|d| Decided {
            request: d.request,
            family: d.family,
            slot: d.resource,
            outcome: d.outcome,
        })
        .collect())
}

// ---------------------------------------------------------------------------------------
// Reads

/// Every event in the notebook, by start time, with each slot's occupancy.
pub fn read_events(doc: &impl ReadDoc, roster: &RosterIndex) -> Result<Vec<Event>, ModelError> {
    let (mut heads, resources) = load(doc, roster)?;
    let ledger = Ledger::build(&resources, &read_decisions(doc, roster, KIND_BOOKING)?);
    for e in &mut heads {
        e.slots = slots_of(&resources, &ledger, e.id);
    }
    heads.sort_by_key(|e| (e.starts_at, e.id));
    Ok(heads)
}

/// One event, with its slots' occupancy.
pub fn read_event(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
    event: ItemId,
) -> Result<Event, ModelError> {
    let (_, mut head) = event_obj(doc, roster, event)?;
    let (_, resources) = load(doc, roster)?;
    let ledger = Ledger::build(&resources, &read_decisions(doc, roster, KIND_BOOKING)?);
    head.slots = slots_of(&resources, &ledger, event);
    Ok(head)
}

/// A family's booking requests with their statuses, oldest first. Needs the notebook (for
/// decisions and slots) and the family's lane (for the requests).
pub fn family_bookings(
    notebook: &impl ReadDoc,
    lane: &impl ReadDoc,
    roster: &RosterIndex,
    family: FamilyId,
) -> Result<Vec<Booking>, ModelError> {
    let (_, resources) = load(notebook, roster)?;
    let ledger = Ledger::build(&resources, &read_decisions(notebook, roster, KIND_BOOKING)?);
    let mut out: Vec<Booking> = lane_bookings(lane, roster, family)?
        .into_iter()
        .map(|(req, extra)| {
            let status = ledger.status_for(&resources, &req);
            let alternatives = ledger.alternatives(&resources, &req, &status);
            Booking {
                request: req.id,
                family,
                event: req.group,
                slot: req.resource,
                student: extra.student,
                note: extra.note,
                requested: req.stamp,
                status,
                alternatives,
            }
        })
        .collect();
    out.sort_by_key(|b| (b.requested, b.request));
    Ok(out)
}

/// Who holds and waits for each slot of `event`, from the notebook alone (what every member
/// sees).
pub fn slot_bookings(
    notebook: &impl ReadDoc,
    roster: &RosterIndex,
    event: ItemId,
) -> Result<Vec<SlotBookings>, ModelError> {
    let head = read_event(notebook, roster, event)?;
    let (_, resources) = load(notebook, roster)?;
    let ledger = Ledger::build(&resources, &read_decisions(notebook, roster, KIND_BOOKING)?);
    Ok(head
        .slots
        .iter()
        .map(|s| SlotBookings {
            slot: s.id,
            confirmed: ledger.holders.get(&s.id).cloned().unwrap_or_default(),
            waitlist: ledger.waitlists.get(&s.id).cloned().unwrap_or_default(),
            displaced: ledger.displaced.get(&s.id).cloned().unwrap_or_default(),
        })
        .collect())
}

/// A family's current RSVP per event (latest by HLC among its guardians' answers).
pub fn family_rsvps(
    lane: &impl ReadDoc,
    roster: &RosterIndex,
    family: FamilyId,
) -> Result<Vec<Rsvp>, ModelError> {
    let requests = top_map(lane, "requests")?;
    let mut best: BTreeMap<ItemId, Rsvp> = BTreeMap::new();
    for key in keys(lane, &requests) {
        let Some(obj) = map_at(lane, &requests, &key)? else {
            continue;
        };
        if get_str(lane, &obj, "kind")?.as_deref() != Some("rsvp") {
            continue;
        }
        let Some(stamp) = read_stamp(lane, &obj, "stamp")? else {
            continue;
        };
        if !author_of_obj(&obj)
            .is_some_and(|d| guardian_device_at(roster, &d, &family, stamp.wall_ms))
        {
            continue;
        }
        let (Some(event), Some(attendance), Some(people)) = (
            get_str(lane, &obj, "event")?.and_then(|s| s.parse::<ItemId>().ok()),
            get_str(lane, &obj, "attendance")?.and_then(|s| Attendance::parse(&s)),
            get_i64(lane, &obj, "people")?.and_then(|p| u32::try_from(p).ok()),
        ) else {
            continue;
        };
        let r = Rsvp {
            family,
            event,
            attendance,
            people: people.min(MAX_PEOPLE),
            stamp,
        };
        if best.get(&event).is_none_or(|b| r.stamp > b.stamp) {
            best.insert(event, r);
        }
    }
    Ok(best.into_values().collect())
}

/// RSVP counts for `event` over the given lanes (staff).
pub fn rsvp_summary<L: ReadDoc>(
    lanes: &[(FamilyId, &L)],
    roster: &RosterIndex,
    event: ItemId,
) -> Result<RsvpSummary, ModelError> {
    let mut sum = RsvpSummary::default();
    for (family, lane) in lanes {
        for r in family_rsvps(*lane, roster, *family)? {
            if r.event != event {
                continue;
            }
            match r.attendance {
                Attendance::Yes => {
                    sum.yes += 1;
                    sum.people += r.people;
                }
                Attendance::No => sum.no += 1,
                Attendance::Maybe => sum.maybe += 1,
            }
        }
    }
    Ok(sum)
}

// ---------------------------------------------------------------------------------------
// Internals

/// What a booking request carries besides the allocation fields.
#[derive(Debug, Clone)]
struct BookingExtra {
    student: Option<StudentId>,
    note: String,
}

pub(crate) fn check_student(
    roster: &RosterIndex,
    family: &FamilyId,
    student: Option<StudentId>,
) -> Result<(), ModelError> {
    if let Some(s) = student {
        let known = roster
            .families
            .get(family)
            .is_some_and(|f| f.students.contains_key(&s));
        if !known {
            return Err(ModelError::UnknownId {
                kind: "student",
                id: s.to_hex(),
            });
        }
    }
    Ok(())
}

/// The booking requests in a lane written by a guardian of `family`.
fn lane_bookings(
    lane: &impl ReadDoc,
    roster: &RosterIndex,
    family: FamilyId,
) -> Result<Vec<(LaneRequest, BookingExtra)>, ModelError> {
    let requests = top_map(lane, "requests")?;
    let mut out = Vec::new();
    for key in keys(lane, &requests) {
        let Ok(id) = key.parse::<ItemId>() else {
            continue;
        };
        let Some(obj) = map_at(lane, &requests, &key)? else {
            continue;
        };
        if get_str(lane, &obj, "kind")?.as_deref() != Some(KIND_BOOKING) {
            continue;
        }
        let Some(stamp) = read_stamp(lane, &obj, "stamp")? else {
            continue;
        };
        if !author_of_obj(&obj)
            .is_some_and(|d| guardian_device_at(roster, &d, &family, stamp.wall_ms))
        {
            continue;
        }
        let (Some(event), Some(slot)) = (
            get_str(lane, &obj, "event")?.and_then(|s| s.parse::<ItemId>().ok()),
            get_str(lane, &obj, "slot")?.and_then(|s| s.parse::<ItemId>().ok()),
        ) else {
            continue;
        };
        let cancelled = cancelled_by_family(lane, roster, &obj, &family)?;
        out.push((
            LaneRequest {
                id,
                family,
                group: event,
                resource: slot,
                stamp,
                cancelled,
                queueable: true,
            },
            BookingExtra {
                student: get_str(lane, &obj, "student")?.and_then(|s| s.parse().ok()),
                note: get_str(lane, &obj, "note")?.unwrap_or_default(),
            },
        ));
    }
    Ok(out)
}

/// Whether a guardian of `family` (at the time of the cancellation) set `obj.cancelled`.
pub(crate) fn cancelled_by_family(
    lane: &impl ReadDoc,
    roster: &RosterIndex,
    obj: &ObjId,
    family: &FamilyId,
) -> Result<bool, ModelError> {
    for (value, op) in lane.get_all(obj, "cancelled")? {
        let Some(at) = value.as_str().and_then(|s| Hlc::decode(s).ok()) else {
            continue;
        };
        if author_of_obj(&op).is_some_and(|d| guardian_device_at(roster, &d, family, at.wall_ms)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// All events (without slots) and all slots as resources.
fn load(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
) -> Result<(Vec<Event>, BTreeMap<ItemId, Resource>), ModelError> {
    let events = top_map(doc, "events")?;
    let mut heads = Vec::new();
    let mut resources = BTreeMap::new();
    for key in keys(doc, &events) {
        let Ok(id) = key.parse::<ItemId>() else {
            continue;
        };
        let Some(obj) = map_at(doc, &events, &key)? else {
            continue;
        };
        let Some(head) = read_head(doc, roster, &obj, id)? else {
            continue;
        };
        for r in read_resources(doc, roster, &obj, id, "slots", head.cancelled)? {
            resources.insert(r.id, r);
        }
        heads.push(head);
    }
    Ok((heads, resources))
}

fn read_head(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
    obj: &ObjId,
    id: ItemId,
) -> Result<Option<Event>, ModelError> {
    if !author_is_staff(doc, roster, obj)? {
        return Ok(None);
    }
    let (Some(kind), Some(starts_at), Some(ends_at)) = (
        get_str(doc, obj, "kind")?.and_then(|k| EventKind::parse(&k)),
        get_i64(doc, obj, "starts_at")?,
        get_i64(doc, obj, "ends_at")?,
    ) else {
        return Ok(None);
    };
    Ok(Some(Event {
        id,
        kind,
        title: get_str(doc, obj, "title")?.unwrap_or_default(),
        location: get_str(doc, obj, "location")?.unwrap_or_default(),
        starts_at,
        ends_at,
        waitlist: get_bool(doc, obj, "waitlist")?.unwrap_or(true),
        cancelled: flag_set_by_staff(doc, roster, obj, "cancelled")?,
        slots: Vec::new(),
    }))
}

fn event_obj(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
    event: ItemId,
) -> Result<(ObjId, Event), ModelError> {
    let unknown = || ModelError::UnknownId {
        kind: "event",
        id: event.to_hex(),
    };
    let events = top_map(doc, "events")?;
    let obj = map_at(doc, &events, &event.to_hex())?.ok_or_else(unknown)?;
    let head = read_head(doc, roster, &obj, event)?.ok_or_else(unknown)?;
    Ok((obj, head))
}

fn slot_obj(doc: &impl ReadDoc, event_obj: &ObjId, slot: ItemId) -> Result<ObjId, ModelError> {
    let unknown = || ModelError::UnknownId {
        kind: "slot",
        id: slot.to_hex(),
    };
    let children = map_at(doc, event_obj, "slots")?.ok_or_else(unknown)?;
    map_at(doc, &children, &slot.to_hex())?.ok_or_else(unknown)
}

fn slots_of(resources: &BTreeMap<ItemId, Resource>, ledger: &Ledger, event: ItemId) -> Vec<Slot> {
    let mut slots: Vec<Slot> = resources
        .values()
        .filter(|r| r.group == event)
        .map(|r| Slot {
            id: r.id,
            start: r.start,
            end: r.end,
            capacity: r.capacity,
            withdrawn: r.withdrawn,
            confirmed: count(ledger.holders.get(&r.id)),
            waitlisted: count(ledger.waitlists.get(&r.id)),
            free: ledger.free(r),
        })
        .collect();
    slots.sort_by_key(|s| (s.start, s.id));
    slots
}

fn count<T>(v: Option<&Vec<T>>) -> u32 {
    v.map_or(0, |v| u32::try_from(v.len()).unwrap_or(u32::MAX))
}

/// What the newest change of a notebook decided: the families whose booking requests (or duty
/// claims) it decided, and whether it wrote anything besides decisions. The relay's webhook
/// pings only those families for a change that only decided (`only_decisions`): a decision
/// is news for the family that asked, not for the whole class.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewestDecisions {
    /// The families named by the decisions the newest change wrote.
    pub families: std::collections::BTreeSet<FamilyId>,
    /// Whether the newest change wrote decisions and nothing else.
    pub only_decisions: bool,
}

/// [`NewestDecisions`] of `doc` (a notebook). Reads only the objects the newest change (the
/// heads with the latest timestamp) touched, like [`crate::entries::entries_in_newest_change`],
/// so its cost does not grow with the notebook.
pub fn decisions_in_newest_change(doc: &automerge::Automerge) -> NewestDecisions {
    let Ok(decisions) = top_map(doc, "decisions") else {
        return NewestDecisions::default();
    };
    let (ids, other) = crate::values::items_in_newest_change(doc, &decisions);
    let mut families = std::collections::BTreeSet::new();
    for id in &ids {
        let family = map_at(doc, &decisions, id)
            .ok()
            .flatten()
            .and_then(|obj| get_str(doc, &obj, "family").ok().flatten())
            .and_then(|s| s.parse::<FamilyId>().ok());
        if let Some(f) = family {
            families.insert(f);
        }
    }
    NewestDecisions {
        only_decisions: !other && !families.is_empty(),
        families,
    }
}
