//! The private teacher–family thread and the teacher's contact records.
//!
//! Both live in the family's Lane (guardians of the family and staff): messages in `thread`,
//! contact records (home visits, phone calls, meetings) in `contacts`. Every item is a map
//! created once by its author under a fresh [`ItemId`] and never changed, and readers keep
//! only items whose creating change came from a device allowed to write them (an active
//! guardian of the family or a staff member for messages, staff for contacts). Removal wins:
//! a staff item dated after its device's revocation or its member's removal is left out too
//! ([`RosterIndex::written_while_active`]); it stays in the Lane for audit.
//! [`contact_stats`] and [`contact_stats_by_family`] count contacts by kind over a time range
//! (a term), as schools report them for teacher assessment.

use std::collections::BTreeMap;
use std::ops::Range;

use automerge::transaction::Transactable;
use automerge::{ObjType, ReadDoc};

use crate::context::Actor;
use crate::entries::was_staff;
use crate::error::{ModelError, check_text};
use crate::identity::DeviceId;
use crate::ids::{FamilyId, IdSource, ItemId, MemberId};
use crate::roster::RosterIndex;
use crate::values::{authored_items, same_actor, top_map, visit_trusted_fields};

/// Longest thread message, in characters.
pub const MAX_MESSAGE: usize = 4_000;
/// Longest contact note, in characters.
pub const MAX_CONTACT_NOTES: usize = 4_000;
/// Longest plausible contact, in minutes (a school day).
pub const MAX_CONTACT_MINUTES: u32 = 12 * 60;

/// A message in the private teacher–family thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadMessage {
    /// The message's id.
    pub id: ItemId,
    /// Its text.
    pub text: String,
    /// When it was written (the writer's clock).
    pub at: i64,
    /// The device that wrote it.
    pub author: DeviceId,
    /// The member behind that device.
    pub member: MemberId,
    /// Whether a staff member wrote it (otherwise a guardian of the family).
    pub from_staff: bool,
}

/// What kind of contact a teacher had with a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContactKind {
    /// A visit to the family's home.
    HomeVisit,
    /// A phone (or video) call.
    PhoneCall,
    /// A meeting at school.
    Meeting,
}

impl ContactKind {
    /// The form stored in the document.
    pub fn as_str(&self) -> &'static str {
        match self {
            ContactKind::HomeVisit => "home_visit",
            ContactKind::PhoneCall => "phone_call",
            ContactKind::Meeting => "meeting",
        }
    }

    /// Parse the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "home_visit" => ContactKind::HomeVisit,
            "phone_call" => ContactKind::PhoneCall,
            "meeting" => ContactKind::Meeting,
            _ => return None,
        })
    }
}

/// A contact as a teacher records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewContact<'a> {
    /// What kind of contact.
    pub kind: ContactKind,
    /// When it took place (milliseconds since the Unix epoch).
    pub occurred_at: i64,
    /// How long it took, if noted.
    pub duration_minutes: Option<u32>,
    /// The teacher's notes (may be empty).
    pub notes: &'a str,
}

/// A recorded contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRecord {
    /// The record's id.
    pub id: ItemId,
    /// What kind of contact.
    pub kind: ContactKind,
    /// When it took place.
    pub occurred_at: i64,
    /// How long it took, if noted.
    pub duration_minutes: Option<u32>,
    /// The teacher's notes.
    pub notes: String,
    /// When it was recorded (the recorder's clock).
    pub recorded_at: i64,
    /// The staff device that recorded it.
    pub recorded_by: DeviceId,
}

/// Contacts counted by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContactStats {
    /// Home visits.
    pub home_visits: u32,
    /// Phone calls.
    pub phone_calls: u32,
    /// Meetings.
    pub meetings: u32,
}

impl ContactStats {
    /// All contacts.
    pub fn total(&self) -> u32 {
        self.home_visits + self.phone_calls + self.meetings
    }

    fn add(&mut self, kind: ContactKind) {
        match kind {
            ContactKind::HomeVisit => self.home_visits += 1,
            ContactKind::PhoneCall => self.phone_calls += 1,
            ContactKind::Meeting => self.meetings += 1,
        }
    }
}

/// Post a message to the family's private thread: `tx` is on the family's Lane; the actor is
/// a guardian of `family` or staff.
pub fn post_thread_message(
    tx: &mut impl Transactable,
    actor: &Actor,
    ids: &mut impl IdSource,
    family: FamilyId,
    text: &str,
) -> Result<ItemId, ModelError> {
    let member = actor.member()?;
    if !member.is_active_staff() {
        actor.require_guardian_of(&family)?;
    }
    check_text("text", text, MAX_MESSAGE, false)?;
    let thread = top_map(tx, "thread")?;
    let id = ids.item_id(actor.now);
    let obj = tx.put_object(&thread, id.to_hex(), ObjType::Map)?;
    tx.put(&obj, "text", text)?;
    tx.put(&obj, "at", actor.now)?;
    Ok(id)
}

/// The messages of `family`'s thread (from its Lane), oldest first, keeping only those written
/// by an active guardian of the family or by staff — a staff message only if dated at or before
/// its device's revocation and its member's removal ([`RosterIndex::written_while_active`]:
/// removal wins; the message stays in the Lane for audit).
pub fn read_thread(
    lane: &impl ReadDoc,
    roster: &RosterIndex,
    family: FamilyId,
) -> Result<Vec<ThreadMessage>, ModelError> {
    let thread = top_map(lane, "thread")?;
    let mut out = Vec::new();
    for (id, obj, author) in authored_items(lane, &thread) {
        let from_staff = was_staff(roster, &author);
        let guardian = roster
            .member_of(&author)
            .is_some_and(|m| m.is_guardian_of(&family));
        if !from_staff && !guardian {
            continue;
        }
        let Some(member) = roster.devices.get(&author).map(|d| d.member) else {
            continue;
        };
        let (mut text, mut at) = (None, None);
        visit_trusted_fields(
            lane,
            &obj,
            |op| same_actor(op, &obj),
            |key, value, _| match key {
                "text" => text = value.as_str().map(str::to_owned),
                "at" => at = value.as_i64(),
                _ => {}
            },
        )?;
        // Removal wins: a staff message dated after its device's revocation or its member's
        // removal is hidden (it stays in the Lane). A guardian counts only while active.
        if !guardian && at.is_none_or(|at| !roster.written_while_active(&author, at)) {
            continue;
        }
        if let (Some(text), Some(at)) = (text, at) {
            out.push(ThreadMessage {
                id,
                text,
                at,
                author,
                member,
                from_staff,
            });
        }
    }
    out.sort_by_key(|m| (m.at, m.id));
    Ok(out)
}

/// Record a contact with the family (staff only): `tx` is on the family's Lane.
pub fn record_contact(
    tx: &mut impl Transactable,
    actor: &Actor,
    ids: &mut impl IdSource,
    contact: &NewContact<'_>,
) -> Result<ItemId, ModelError> {
    actor.require_staff()?;
    check_text("notes", contact.notes, MAX_CONTACT_NOTES, true)?;
    if contact
        .duration_minutes
        .is_some_and(|m| m > MAX_CONTACT_MINUTES)
    {
        return Err(ModelError::InvalidInput {
            field: "duration_minutes",
            reason: format!("at most {MAX_CONTACT_MINUTES} minutes"),
        });
    }
    let contacts = top_map(tx, "contacts")?;
    let id = ids.item_id(actor.now);
    let obj = tx.put_object(&contacts, id.to_hex(), ObjType::Map)?;
    tx.put(&obj, "kind", contact.kind.as_str())?;
    tx.put(&obj, "occurred_at", contact.occurred_at)?;
    if let Some(m) = contact.duration_minutes {
        tx.put(&obj, "duration_minutes", i64::from(m))?;
    }
    tx.put(&obj, "notes", contact.notes)?;
    tx.put(&obj, "recorded_at", actor.now)?;
    Ok(id)
}

/// The contact records of a family's Lane written by staff, in order of occurrence; a record
/// dated (`recorded_at`) after its author's revocation or removal is left out (removal wins).
pub fn read_contacts(
    lane: &impl ReadDoc,
    roster: &RosterIndex,
) -> Result<Vec<ContactRecord>, ModelError> {
    let contacts = top_map(lane, "contacts")?;
    let mut out = Vec::new();
    for (id, obj, author) in authored_items(lane, &contacts) {
        if !was_staff(roster, &author) {
            continue;
        }
        let (mut kind, mut occurred_at, mut duration, mut notes, mut recorded_at) =
            (None, None, None, String::new(), None);
        visit_trusted_fields(
            lane,
            &obj,
            |op| same_actor(op, &obj),
            |key, value, _| match key {
                "kind" => kind = value.as_str().and_then(ContactKind::parse),
                "occurred_at" => occurred_at = value.as_i64(),
                "duration_minutes" => duration = value.as_i64().and_then(|m| u32::try_from(m).ok()),
                "notes" => notes = value.as_str().unwrap_or_default().to_owned(),
                "recorded_at" => recorded_at = value.as_i64(),
                _ => {}
            },
        )?;
        if let (Some(kind), Some(occurred_at)) = (kind, occurred_at) {
            // Removal wins: a record made after its author's removal is hidden (kept in the
            // Lane), dated by when it was recorded.
            if !roster.written_while_active(&author, recorded_at.unwrap_or(occurred_at)) {
                continue;
            }
            out.push(ContactRecord {
                id,
                kind,
                occurred_at,
                duration_minutes: duration,
                notes,
                recorded_at: recorded_at.unwrap_or(occurred_at),
                recorded_by: author,
            });
        }
    }
    out.sort_by_key(|c| (c.occurred_at, c.id));
    Ok(out)
}

/// Contacts with one family that took place in `range` (e.g. a term), counted by kind.
pub fn contact_stats(
    lane: &impl ReadDoc,
    roster: &RosterIndex,
    range: Range<i64>,
) -> Result<ContactStats, ModelError> {
    let mut stats = ContactStats::default();
    for c in read_contacts(lane, roster)? {
        if range.contains(&c.occurred_at) {
            stats.add(c.kind);
        }
    }
    Ok(stats)
}

/// Contact statistics for every family whose Lane is given, over `range`.
pub fn contact_stats_by_family<D: ReadDoc>(
    lanes: &[(FamilyId, &D)],
    roster: &RosterIndex,
    range: Range<i64>,
) -> Result<BTreeMap<FamilyId, ContactStats>, ModelError> {
    let mut out = BTreeMap::new();
    for (family, lane) in lanes {
        out.insert(*family, contact_stats(*lane, roster, range.clone())?);
    }
    Ok(out)
}
