//! School activities on a class: events, slots and bookings; duty rosters and claims;
//! surveys; sign-up chains; leave; homework minutes; the private thread.

use homeroom_client::Device;
use homeroom_core::automerge::Automerge;
use homeroom_core::events::{self, BookingStatus};
use homeroom_core::view::{Viewer, ViewerRole};
use homeroom_core::{
    ClassId, DocId, DocKind, FamilyId, IdSource, ItemId, ModelError, RosterIndex, StudentId,
};

use crate::classroom::Classroom;
use crate::error::ApiError;
use crate::ids::{parse, parse_opt};

/// Where a booking request stands.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum BookingState {
    /// Not decided yet.
    Pending,
    /// The family has the slot.
    Confirmed,
    /// On the waitlist.
    Waitlisted {
        /// Position (1 = next).
        position: u32,
    },
    /// Declined (`full`, `duplicate`, `closed`).
    Declined {
        /// Why.
        reason: String,
    },
    /// Lost the slot (`withdrawn`, `slot_changed`, `over_capacity`, `released_by_staff`).
    Displaced {
        /// Why.
        reason: String,
    },
    /// Cancelled by the family.
    Cancelled,
    /// Replaced by a swap.
    SwappedAway,
}

impl From<&BookingStatus> for BookingState {
    fn from(s: &BookingStatus) -> Self {
        match s {
            BookingStatus::Pending => BookingState::Pending,
            BookingStatus::Confirmed => BookingState::Confirmed,
            BookingStatus::Waitlisted { position } => BookingState::Waitlisted {
                position: *position,
            },
            BookingStatus::Declined { reason } => BookingState::Declined {
                reason: format!("{reason:?}"),
            },
            BookingStatus::Displaced { reason } => BookingState::Displaced {
                reason: format!("{reason:?}"),
            },
            BookingStatus::Cancelled => BookingState::Cancelled,
            BookingStatus::SwappedAway => BookingState::SwappedAway,
        }
    }
}

/// A family's booking request and its status.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct BookingInfo {
    /// The request id.
    pub request_id: String,
    /// The family.
    pub family_id: String,
    /// The event.
    pub event_id: String,
    /// The slot asked for.
    pub slot_id: String,
    /// The family's note.
    pub note: String,
    /// Where it stands.
    pub state: BookingState,
}

impl From<&events::Booking> for BookingInfo {
    fn from(b: &events::Booking) -> Self {
        BookingInfo {
            request_id: b.request.to_hex(),
            family_id: b.family.to_hex(),
            event_id: b.event.to_hex(),
            slot_id: b.slot.to_hex(),
            note: b.note.clone(),
            state: BookingState::from(&b.status),
        }
    }
}

/// The bookings of this device's family in `class` (`NotAllowed` if it is not a guardian).
pub(crate) fn family_bookings_of(
    device: &Device,
    class: ClassId,
) -> Result<Vec<BookingInfo>, ApiError> {
    let roster = device.roster(class)?;
    let viewer = Viewer::of_device(&roster, &device.device_id())?;
    let ViewerRole::Guardian(family) = viewer.role else {
        return Err(ApiError::NotAllowed {
            reason: "only guardians have bookings".into(),
        });
    };
    let lane = device.read(DocId::new(class, DocKind::Lane(family)), |am, _| {
        Ok(am.clone())
    })?;
    let bookings = device.read(DocId::new(class, DocKind::Notebook), |nb, roster| {
        events::family_bookings(nb, &lane, roster, family)
    })?;
    Ok(bookings.iter().map(BookingInfo::from).collect())
}

// ---------------------------------------------------------------------------------------
// Helpers shared by the activity wrappers.

impl Classroom {
    /// The roster and this device's viewer role.
    fn viewer(&self) -> Result<(RosterIndex, Viewer), ApiError> {
        let roster = self.device.roster(self.class)?;
        let viewer = Viewer::of_device(&roster, &self.device.device_id())?;
        Ok((roster, viewer))
    }

    /// `family_id` if given, else this device's own family (guardians).
    fn family(&self, family_id: Option<String>) -> Result<FamilyId, ApiError> {
        if let Some(f) = family_id {
            return parse("family_id", &f);
        }
        match self.viewer()?.1.role {
            ViewerRole::Guardian(f) => Ok(f),
            ViewerRole::Staff => Err(ApiError::invalid("family_id", "staff must name the family")),
        }
    }

    /// A copy of a document as this device holds it.
    fn snapshot(&self, kind: DocKind) -> Result<Automerge, ApiError> {
        Ok(self.device.read(self.doc(kind), |am, _| Ok(am.clone()))?)
    }

    /// Copies of every family lane this device may read (all of them for staff).
    fn lanes(&self) -> Result<Vec<(FamilyId, Automerge)>, ApiError> {
        let roster = self.device.roster(self.class)?;
        let me = self.device.device_id();
        let mut out = Vec::new();
        for f in roster.families.keys() {
            if roster.can_read(&me, &DocKind::Lane(*f)) {
                out.push((*f, self.snapshot(DocKind::Lane(*f))?));
            }
        }
        Ok(out)
    }

    /// Read the notebook together with a family's lane.
    fn read_with_lane<T>(
        &self,
        family: FamilyId,
        f: impl FnOnce(&Automerge, &Automerge, &RosterIndex) -> Result<T, ModelError>,
    ) -> Result<T, ApiError> {
        let lane = self.snapshot(DocKind::Lane(family))?;
        Ok(self
            .device
            .read(self.doc(DocKind::Notebook), |nb, roster| {
                f(nb, &lane, roster)
            })?)
    }

    /// Write to a family's lane, reading the notebook.
    fn edit_lane<T>(
        &self,
        family: FamilyId,
        f: impl FnOnce(
            &mut homeroom_core::automerge::transaction::Transaction<'_>,
            &Automerge,
            &homeroom_core::Actor<'_>,
            &mut dyn IdSource,
        ) -> Result<T, ModelError>,
    ) -> Result<T, ApiError> {
        let (v, _) = self.device.edit_reading(
            self.doc(DocKind::Lane(family)),
            self.doc(DocKind::Notebook),
            f,
        )?;
        Ok(v)
    }

    /// Write to the notebook.
    fn edit_notebook<T>(
        &self,
        f: impl FnOnce(
            &mut homeroom_core::automerge::transaction::Transaction<'_>,
            &homeroom_core::Actor<'_>,
            &mut dyn IdSource,
        ) -> Result<T, ModelError>,
    ) -> Result<T, ApiError> {
        let (v, _) = self.device.edit(self.doc(DocKind::Notebook), f)?;
        Ok(v)
    }
}

// ---------------------------------------------------------------------------------------
// Events, slots, bookings.

/// What kind of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum EventKind {
    /// Parent–teacher conference (bookable slots).
    Conference,
    /// Open day.
    OpenDay,
    /// A lecture for parents.
    Lecture,
    /// A class for parents.
    ParentClass,
}

impl From<EventKind> for events::EventKind {
    fn from(k: EventKind) -> Self {
        match k {
            EventKind::Conference => events::EventKind::Conference,
            EventKind::OpenDay => events::EventKind::OpenDay,
            EventKind::Lecture => events::EventKind::Lecture,
            EventKind::ParentClass => events::EventKind::ParentClass,
        }
    }
}

impl From<events::EventKind> for EventKind {
    fn from(k: events::EventKind) -> Self {
        match k {
            events::EventKind::Conference => EventKind::Conference,
            events::EventKind::OpenDay => EventKind::OpenDay,
            events::EventKind::Lecture => EventKind::Lecture,
            events::EventKind::ParentClass => EventKind::ParentClass,
        }
    }
}

/// An event to create.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NewEvent {
    /// Kind.
    pub kind: EventKind,
    /// Title (non-empty).
    pub title: String,
    /// Where.
    pub location: String,
    /// Start (ms since the Unix epoch).
    pub starts_at: i64,
    /// End (after the start).
    pub ends_at: i64,
    /// Whether requests for a full slot wait in line (else they are declined).
    pub waitlist: bool,
}

/// A bookable slot to create: a time range within the event and how many families fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct SlotSpec {
    /// Start.
    pub start: i64,
    /// End.
    pub end: i64,
    /// Families that fit.
    pub capacity: u32,
}

impl From<SlotSpec> for events::SlotSpec {
    fn from(s: SlotSpec) -> Self {
        events::SlotSpec {
            start: s.start,
            end: s.end,
            capacity: s.capacity,
        }
    }
}

/// A slot (or a duty shift) and how full it is.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SlotInfo {
    /// The slot id.
    pub id: String,
    /// Start.
    pub start: i64,
    /// End.
    pub end: i64,
    /// Capacity.
    pub capacity: u32,
    /// Withdrawn by staff.
    pub withdrawn: bool,
    /// Confirmed families.
    pub confirmed: u32,
    /// Waitlisted families.
    pub waitlisted: u32,
    /// Free places.
    pub free: u32,
}

impl From<&events::Slot> for SlotInfo {
    fn from(s: &events::Slot) -> Self {
        SlotInfo {
            id: s.id.to_hex(),
            start: s.start,
            end: s.end,
            capacity: s.capacity,
            withdrawn: s.withdrawn,
            confirmed: s.confirmed,
            waitlisted: s.waitlisted,
            free: s.free,
        }
    }
}

/// An event with its slots.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct EventInfo {
    /// The event id.
    pub id: String,
    /// Kind.
    pub kind: EventKind,
    /// Title.
    pub title: String,
    /// Where.
    pub location: String,
    /// Start.
    pub starts_at: i64,
    /// End.
    pub ends_at: i64,
    /// Whether full slots keep a waitlist.
    pub waitlist: bool,
    /// Cancelled by staff.
    pub cancelled: bool,
    /// Its slots.
    pub slots: Vec<SlotInfo>,
}

impl From<&events::Event> for EventInfo {
    fn from(e: &events::Event) -> Self {
        EventInfo {
            id: e.id.to_hex(),
            kind: e.kind.into(),
            title: e.title.clone(),
            location: e.location.clone(),
            starts_at: e.starts_at,
            ends_at: e.ends_at,
            waitlist: e.waitlist,
            cancelled: e.cancelled,
            slots: e.slots.iter().map(SlotInfo::from).collect(),
        }
    }
}

/// What creating an event (or a duty post) made.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Created {
    /// The event's (post's) id.
    pub id: String,
    /// Its slots' (shifts') ids, in the order given.
    pub slot_ids: Vec<String>,
}

/// A staff decision about one booking request or duty claim.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DecisionInfo {
    /// The request (claim) id.
    pub request_id: String,
    /// The family.
    pub family_id: String,
    /// The slot (shift).
    pub slot_id: String,
    /// `Confirmed`, `Waitlisted`, `Declined` or `Released`.
    pub outcome: String,
}

impl From<&events::Decided> for DecisionInfo {
    fn from(d: &events::Decided) -> Self {
        DecisionInfo {
            request_id: d.request.to_hex(),
            family_id: d.family.to_hex(),
            slot_id: d.slot.to_hex(),
            outcome: format!("{:?}", d.outcome),
        }
    }
}

/// Whether a family comes to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Attendance {
    /// Coming.
    Yes,
    /// Not coming.
    No,
    /// Not sure.
    Maybe,
}

#[uniffi::export]
impl Classroom {
    /// Create an event with its bookable slots (staff).
    pub fn create_event(&self, event: NewEvent, slots: Vec<SlotSpec>) -> Result<Created, ApiError> {
        let e = events::NewEvent {
            kind: event.kind.into(),
            title: &event.title,
            location: &event.location,
            starts_at: event.starts_at,
            ends_at: event.ends_at,
            waitlist: event.waitlist,
        };
        let specs: Vec<events::SlotSpec> = slots.into_iter().map(Into::into).collect();
        let (id, slot_ids) = self.edit_notebook(|tx, actor, mut ids| {
            events::create_event(tx, actor, &mut ids, &e, &specs)
        })?;
        Ok(Created {
            id: id.to_hex(),
            slot_ids: slot_ids.iter().map(|s| s.to_hex()).collect(),
        })
    }

    /// Add a slot to an event (staff); returns the slot id.
    pub fn add_slot(&self, event_id: String, slot: SlotSpec) -> Result<String, ApiError> {
        let event: ItemId = parse("event_id", &event_id)?;
        let id = self.edit_notebook(|tx, actor, mut ids| {
            events::add_slot(tx, actor, &mut ids, event, slot.into())
        })?;
        Ok(id.to_hex())
    }

    /// Cancel an event (staff).
    pub fn cancel_event(&self, event_id: String) -> Result<(), ApiError> {
        let event: ItemId = parse("event_id", &event_id)?;
        self.edit_notebook(|tx, actor, _| events::cancel_event(tx, actor, event))
    }

    /// The class's events, by start time.
    pub fn events(&self) -> Result<Vec<EventInfo>, ApiError> {
        let list = self
            .device
            .read(self.doc(DocKind::Notebook), events::read_events)?;
        Ok(list.iter().map(EventInfo::from).collect())
    }

    /// Ask for a slot (guardian); returns the request id. Staff decide with
    /// `decide_bookings`; the family's observer hears `booking_decided`.
    pub fn request_booking(
        &self,
        event_id: String,
        slot_id: String,
        student_id: Option<String>,
        note: String,
    ) -> Result<String, ApiError> {
        let event: ItemId = parse("event_id", &event_id)?;
        let slot: ItemId = parse("slot_id", &slot_id)?;
        let student: Option<StudentId> = parse_opt("student_id", student_id.as_deref())?;
        let family = self.family(None)?;
        let id = self.edit_lane(family, |tx, nb, actor, mut ids| {
            events::request_booking(tx, actor, nb, &mut ids, family, event, slot, student, &note)
        })?;
        Ok(id.to_hex())
    }

    /// Cancel a booking request (guardian).
    pub fn cancel_booking(&self, request_id: String) -> Result<(), ApiError> {
        let request: ItemId = parse("request_id", &request_id)?;
        let family = self.family(None)?;
        self.edit_lane(family, |tx, _, actor, _| {
            events::cancel_booking(tx, actor, family, request)
        })
    }

    /// A family's booking requests and where they stand (`family_id` defaults to the
    /// guardian's own family).
    pub fn bookings(&self, family_id: Option<String>) -> Result<Vec<BookingInfo>, ApiError> {
        let family = self.family(family_id)?;
        let list = self.read_with_lane(family, |nb, lane, roster| {
            events::family_bookings(nb, lane, roster, family)
        })?;
        Ok(list.iter().map(BookingInfo::from).collect())
    }

    /// Decide every pending booking request the device holds (staff): first come, first
    /// served per slot. Returns the decisions made.
    pub fn decide_bookings(&self) -> Result<Vec<DecisionInfo>, ApiError> {
        let lanes = self.lanes()?;
        let refs: Vec<(FamilyId, &Automerge)> = lanes.iter().map(|(f, d)| (*f, d)).collect();
        let decided = self.edit_notebook(|tx, actor, mut ids| {
            events::decide_bookings(tx, actor, &mut ids, &refs)
        })?;
        Ok(decided.iter().map(DecisionInfo::from).collect())
    }

    /// Say whether the family comes to an event and with how many people (guardian).
    pub fn rsvp(
        &self,
        event_id: String,
        attendance: Attendance,
        people: u32,
    ) -> Result<(), ApiError> {
        let event: ItemId = parse("event_id", &event_id)?;
        let family = self.family(None)?;
        let a = match attendance {
            Attendance::Yes => events::Attendance::Yes,
            Attendance::No => events::Attendance::No,
            Attendance::Maybe => events::Attendance::Maybe,
        };
        self.edit_lane(family, |tx, nb, actor, mut ids| {
            events::rsvp(tx, actor, nb, &mut ids, family, event, a, people)
        })
    }
}

// ---------------------------------------------------------------------------------------
// Duty rosters and claims.

/// What kind of duty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum DutyKind {
    /// Traffic duty at the gate.
    Traffic,
    /// Supervision (lunch, trips).
    Supervision,
    /// Other volunteering.
    Volunteer,
}

/// A duty post to create.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NewDutyPost {
    /// Kind.
    pub kind: DutyKind,
    /// Title (non-empty).
    pub title: String,
    /// Where.
    pub location: String,
}

/// A duty post with its shifts.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DutyPostInfo {
    /// The post id.
    pub id: String,
    /// Kind.
    pub kind: DutyKind,
    /// Title.
    pub title: String,
    /// Where.
    pub location: String,
    /// Cancelled by staff.
    pub cancelled: bool,
    /// Its shifts.
    pub shifts: Vec<SlotInfo>,
}

/// A family's claim on a shift.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ClaimInfo {
    /// The claim id.
    pub id: String,
    /// The family.
    pub family_id: String,
    /// The post.
    pub post_id: String,
    /// The shift.
    pub shift_id: String,
    /// Where it stands (decided like bookings).
    pub state: BookingState,
    /// Whether the family checked in.
    pub checked_in: bool,
}

fn duty_kind(k: homeroom_core::duty::DutyKind) -> DutyKind {
    use homeroom_core::duty::DutyKind as D;
    match k {
        D::Traffic => DutyKind::Traffic,
        D::Supervision => DutyKind::Supervision,
        D::Volunteer => DutyKind::Volunteer,
    }
}

#[uniffi::export]
impl Classroom {
    /// Create a duty post with its shifts (staff).
    pub fn create_duty_post(
        &self,
        post: NewDutyPost,
        shifts: Vec<SlotSpec>,
    ) -> Result<Created, ApiError> {
        use homeroom_core::duty::{self, DutyKind as D};
        let p = duty::NewPost {
            kind: match post.kind {
                DutyKind::Traffic => D::Traffic,
                DutyKind::Supervision => D::Supervision,
                DutyKind::Volunteer => D::Volunteer,
            },
            title: &post.title,
            location: &post.location,
        };
        let specs: Vec<events::SlotSpec> = shifts.into_iter().map(Into::into).collect();
        let (id, ids_) = self.edit_notebook(|tx, actor, mut ids| {
            duty::create_post(tx, actor, &mut ids, &p, &specs)
        })?;
        Ok(Created {
            id: id.to_hex(),
            slot_ids: ids_.iter().map(|s| s.to_hex()).collect(),
        })
    }

    /// The class's duty posts.
    pub fn duty_posts(&self) -> Result<Vec<DutyPostInfo>, ApiError> {
        let posts = self
            .device
            .read(self.doc(DocKind::Notebook), homeroom_core::duty::read_posts)?;
        Ok(posts
            .iter()
            .map(|p| DutyPostInfo {
                id: p.id.to_hex(),
                kind: duty_kind(p.kind),
                title: p.title.clone(),
                location: p.location.clone(),
                cancelled: p.cancelled,
                shifts: p.shifts.iter().map(SlotInfo::from).collect(),
            })
            .collect())
    }

    /// Claim a shift (guardian); returns the claim id.
    pub fn claim_shift(&self, post_id: String, shift_id: String) -> Result<String, ApiError> {
        let post: ItemId = parse("post_id", &post_id)?;
        let shift: ItemId = parse("shift_id", &shift_id)?;
        let family = self.family(None)?;
        let id = self.edit_lane(family, |tx, nb, actor, mut ids| {
            homeroom_core::duty::claim_shift(tx, actor, nb, &mut ids, family, post, shift)
        })?;
        Ok(id.to_hex())
    }

    /// Cancel a claim (guardian).
    pub fn cancel_claim(&self, claim_id: String) -> Result<(), ApiError> {
        let claim: ItemId = parse("claim_id", &claim_id)?;
        let family = self.family(None)?;
        self.edit_lane(family, |tx, _, actor, _| {
            homeroom_core::duty::cancel_claim(tx, actor, family, claim)
        })
    }

    /// A family's claims (`family_id` defaults to the guardian's own family).
    pub fn claims(&self, family_id: Option<String>) -> Result<Vec<ClaimInfo>, ApiError> {
        let family = self.family(family_id)?;
        let list = self.read_with_lane(family, |nb, lane, roster| {
            homeroom_core::duty::family_claims(nb, lane, roster, family)
        })?;
        Ok(list
            .iter()
            .map(|c| ClaimInfo {
                id: c.id.to_hex(),
                family_id: c.family.to_hex(),
                post_id: c.post.to_hex(),
                shift_id: c.shift.to_hex(),
                state: BookingState::from(&c.status),
                checked_in: c.checked_in,
            })
            .collect())
    }

    /// Decide every pending claim and swap (staff). Returns the claim decisions made.
    pub fn decide_claims(&self) -> Result<Vec<DecisionInfo>, ApiError> {
        let lanes = self.lanes()?;
        let refs: Vec<(FamilyId, &Automerge)> = lanes.iter().map(|(f, d)| (*f, d)).collect();
        let d = self.edit_notebook(|tx, actor, mut ids| {
            homeroom_core::duty::decide_claims(tx, actor, &mut ids, &refs)
        })?;
        Ok(d.decided.iter().map(DecisionInfo::from).collect())
    }
}

// ---------------------------------------------------------------------------------------
// Surveys (named answers; anonymous ballots are not exposed yet).

/// What kind of question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum QuestionKind {
    /// Pick one option.
    SingleChoice,
    /// Pick any options.
    MultiChoice,
    /// A rating from 1 to `max_rating`.
    Rating,
    /// Free text.
    Text,
}

/// A question to create.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NewQuestion {
    /// The prompt.
    pub prompt: String,
    /// Kind.
    pub kind: QuestionKind,
    /// Options (choice questions).
    pub options: Vec<String>,
    /// Top of the scale (rating questions).
    pub max_rating: u8,
}

/// A survey to create.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NewSurvey {
    /// Title.
    pub title: String,
    /// Opens (ms since the Unix epoch).
    pub opens_at: i64,
    /// Closes.
    pub closes_at: i64,
    /// How long after closing offline answers still count (ms).
    pub grace_ms: i64,
    /// Questions.
    pub questions: Vec<NewQuestion>,
}

/// A question as read.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct QuestionInfo {
    /// The question id.
    pub id: String,
    /// The prompt.
    pub prompt: String,
    /// Kind.
    pub kind: QuestionKind,
    /// Options.
    pub options: Vec<String>,
    /// Top of the rating scale.
    pub max_rating: u8,
}

/// A survey as read.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SurveyInfo {
    /// The survey id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Whether answers are anonymous.
    pub anonymous: bool,
    /// Opens.
    pub opens_at: i64,
    /// Closes.
    pub closes_at: i64,
    /// Questions.
    pub questions: Vec<QuestionInfo>,
    /// Whether staff sealed the results.
    pub sealed: bool,
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum AnswerValue {
    /// The index of the chosen option.
    Choice {
        /// Option index.
        index: u32,
    },
    /// The indexes of the chosen options.
    Choices {
        /// Option indexes.
        indexes: Vec<u32>,
    },
    /// A rating.
    Rating {
        /// The value.
        value: u8,
    },
    /// Free text.
    Text {
        /// The text.
        text: String,
    },
}

impl From<AnswerValue> for homeroom_core::surveys::Answer {
    fn from(a: AnswerValue) -> Self {
        use homeroom_core::surveys::Answer as A;
        match a {
            AnswerValue::Choice { index } => A::Choice(index),
            AnswerValue::Choices { indexes } => A::Choices(indexes),
            AnswerValue::Rating { value } => A::Rating(value),
            AnswerValue::Text { text } => A::Text(text),
        }
    }
}

impl From<&homeroom_core::surveys::Answer> for AnswerValue {
    fn from(a: &homeroom_core::surveys::Answer) -> Self {
        use homeroom_core::surveys::Answer as A;
        match a {
            A::Choice(index) => AnswerValue::Choice { index: *index },
            A::Choices(indexes) => AnswerValue::Choices {
                indexes: indexes.clone(),
            },
            A::Rating(value) => AnswerValue::Rating { value: *value },
            A::Text(text) => AnswerValue::Text { text: text.clone() },
        }
    }
}

/// A family's answer to one question.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct AnswerInfo {
    /// The question.
    pub question_id: String,
    /// The answer.
    pub answer: AnswerValue,
    /// `Provisional`, `Accepted` or `Late`.
    pub status: String,
}

/// Results of one question.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct QuestionResultInfo {
    /// The question.
    pub question_id: String,
    /// Families that answered.
    pub responses: u32,
    /// Per-option counts (choice questions).
    pub counts: Vec<u32>,
    /// Sum of ratings.
    pub rating_sum: u64,
    /// Free-text answers.
    pub texts: Vec<String>,
}

/// Results of a survey (staff).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SurveyResultsInfo {
    /// Families that answered anything.
    pub respondents: u32,
    /// Per question.
    pub questions: Vec<QuestionResultInfo>,
}

fn question_kind(k: homeroom_core::surveys::QuestionKind) -> QuestionKind {
    use homeroom_core::surveys::QuestionKind as Q;
    match k {
        Q::SingleChoice => QuestionKind::SingleChoice,
        Q::MultiChoice => QuestionKind::MultiChoice,
        Q::Rating => QuestionKind::Rating,
        Q::Text => QuestionKind::Text,
    }
}

#[uniffi::export]
impl Classroom {
    /// Create a survey with named answers (staff); returns the survey id.
    pub fn create_survey(&self, survey: NewSurvey) -> Result<String, ApiError> {
        use homeroom_core::surveys::{self as s, QuestionSpec};
        let options: Vec<Vec<&str>> = survey
            .questions
            .iter()
            .map(|q| q.options.iter().map(String::as_str).collect())
            .collect();
        let questions: Vec<s::NewQuestion<'_>> = survey
            .questions
            .iter()
            .zip(&options)
            .map(|(q, o)| s::NewQuestion {
                prompt: &q.prompt,
                spec: match q.kind {
                    QuestionKind::SingleChoice => QuestionSpec::SingleChoice(o),
                    QuestionKind::MultiChoice => QuestionSpec::MultiChoice(o),
                    QuestionKind::Rating => QuestionSpec::Rating { max: q.max_rating },
                    QuestionKind::Text => QuestionSpec::Text,
                },
            })
            .collect();
        let new = s::NewSurvey {
            title: &survey.title,
            anonymous: false,
            opens_at: survey.opens_at,
            closes_at: survey.closes_at,
            grace_ms: survey.grace_ms,
            questions: &questions,
        };
        let (id, _) =
            self.edit_notebook(|tx, actor, mut ids| s::create_survey(tx, actor, &mut ids, &new))?;
        Ok(id.to_hex())
    }

    /// The class's surveys.
    pub fn surveys(&self) -> Result<Vec<SurveyInfo>, ApiError> {
        let list = self.device.read(
            self.doc(DocKind::Notebook),
            homeroom_core::surveys::read_surveys,
        )?;
        Ok(list
            .iter()
            .map(|s| SurveyInfo {
                id: s.id.to_hex(),
                title: s.title.clone(),
                anonymous: s.anonymous,
                opens_at: s.opens_at,
                closes_at: s.closes_at,
                questions: s
                    .questions
                    .iter()
                    .map(|q| QuestionInfo {
                        id: q.id.to_hex(),
                        prompt: q.prompt.clone(),
                        kind: question_kind(q.kind),
                        options: q.options.clone(),
                        max_rating: q.scale,
                    })
                    .collect(),
                sealed: s.sealed,
            })
            .collect())
    }

    /// Answer one question of a survey for the family (guardian).
    pub fn answer_survey(
        &self,
        survey_id: String,
        question_id: String,
        answer: AnswerValue,
    ) -> Result<(), ApiError> {
        let survey: ItemId = parse("survey_id", &survey_id)?;
        let question: ItemId = parse("question_id", &question_id)?;
        let family = self.family(None)?;
        let a = answer.into();
        self.edit_lane(family, |tx, nb, actor, _| {
            homeroom_core::surveys::answer(tx, actor, nb, family, survey, question, &a)
        })?;
        Ok(())
    }

    /// A family's answers to a survey (`family_id` defaults to the guardian's own family).
    pub fn survey_answers(
        &self,
        survey_id: String,
        family_id: Option<String>,
    ) -> Result<Vec<AnswerInfo>, ApiError> {
        let survey: ItemId = parse("survey_id", &survey_id)?;
        let family = self.family(family_id)?;
        let list = self.read_with_lane(family, |nb, lane, roster| {
            homeroom_core::surveys::family_answers(nb, lane, roster, family, survey)
        })?;
        Ok(list
            .iter()
            .map(|a| AnswerInfo {
                question_id: a.question.to_hex(),
                answer: AnswerValue::from(&a.answer),
                status: format!("{:?}", a.status),
            })
            .collect())
    }

    /// Close a survey now (staff).
    pub fn close_survey(&self, survey_id: String) -> Result<(), ApiError> {
        let survey: ItemId = parse("survey_id", &survey_id)?;
        self.edit_notebook(|tx, actor, _| homeroom_core::surveys::close_survey(tx, actor, survey))
    }

    /// Results over every family lane this device holds (staff).
    pub fn survey_results(&self, survey_id: String) -> Result<SurveyResultsInfo, ApiError> {
        let survey: ItemId = parse("survey_id", &survey_id)?;
        let lanes = self.lanes()?;
        let refs: Vec<(FamilyId, &Automerge)> = lanes.iter().map(|(f, d)| (*f, d)).collect();
        let r = self
            .device
            .read(self.doc(DocKind::Notebook), |nb, roster| {
                homeroom_core::surveys::survey_results(
                    nb,
                    &refs,
                    None::<&Automerge>,
                    roster,
                    survey,
                )
            })?;
        Ok(SurveyResultsInfo {
            respondents: r.respondents,
            questions: r
                .questions
                .iter()
                .map(|q| QuestionResultInfo {
                    question_id: q.question.to_hex(),
                    responses: q.responses,
                    counts: q.counts.clone(),
                    rating_sum: q.rating_sum,
                    texts: q.texts.clone(),
                })
                .collect(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Sign-up chains.

/// A sign-up chain to create.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NewChain {
    /// Title.
    pub title: String,
    /// What it is for.
    pub description: String,
    /// One line per student (else per family line).
    pub one_per_student: bool,
    /// How many lines get a place (the rest wait).
    pub capacity: Option<u32>,
    /// When it closes.
    pub closes_at: Option<i64>,
}

/// Where a line stands.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ChainPlace {
    /// Has a place, numbered from 1.
    Placed {
        /// The line number.
        number: u32,
    },
    /// Waiting.
    Waitlisted {
        /// Position from 1.
        position: u32,
    },
    /// Added after the chain closed.
    Late,
    /// Withdrawn by the family.
    Withdrawn,
}

/// A line of a chain.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ChainLineInfo {
    /// The family.
    pub family_id: String,
    /// The student, for one-per-student chains.
    pub student_id: Option<String>,
    /// The text.
    pub text: String,
    /// Where it stands.
    pub place: ChainPlace,
}

/// A chain and its lines (complete for staff; a family sees its own lines).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ChainInfo {
    /// The chain id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Lines, in order.
    pub lines: Vec<ChainLineInfo>,
}

#[uniffi::export]
impl Classroom {
    /// Create a sign-up chain (staff); returns its id.
    pub fn create_chain(&self, chain: NewChain) -> Result<String, ApiError> {
        use homeroom_core::chains;
        let c = chains::NewChain {
            title: &chain.title,
            description: &chain.description,
            one_per_student: chain.one_per_student,
            capacity: chain.capacity,
            closes_at: chain.closes_at,
        };
        let id =
            self.edit_notebook(|tx, actor, mut ids| chains::create_chain(tx, actor, &mut ids, &c))?;
        Ok(id.to_hex())
    }

    /// Add the family's line to a chain (guardian).
    pub fn add_chain_line(
        &self,
        chain_id: String,
        student_id: Option<String>,
        text: String,
    ) -> Result<(), ApiError> {
        let chain: ItemId = parse("chain_id", &chain_id)?;
        let student: Option<StudentId> = parse_opt("student_id", student_id.as_deref())?;
        let family = self.family(None)?;
        self.edit_lane(family, |tx, nb, actor, mut ids| {
            homeroom_core::chains::add_line(tx, actor, nb, &mut ids, family, chain, student, &text)
        })?;
        Ok(())
    }

    /// Close a chain (staff).
    pub fn close_chain(&self, chain_id: String) -> Result<(), ApiError> {
        let chain: ItemId = parse("chain_id", &chain_id)?;
        self.edit_notebook(|tx, actor, _| homeroom_core::chains::close_chain(tx, actor, chain))
    }

    /// The class's chains with the lines this device can see.
    pub fn chains(&self) -> Result<Vec<ChainInfo>, ApiError> {
        use homeroom_core::chains::{self, ChainPlace as P};
        let lanes = self.lanes()?;
        let refs: Vec<(FamilyId, &Automerge)> = lanes.iter().map(|(f, d)| (*f, d)).collect();
        let views = self
            .device
            .read(self.doc(DocKind::Notebook), |nb, roster| {
                chains::read_chains(nb, roster)?
                    .iter()
                    .map(|c| chains::chain_view(nb, &refs, roster, c.id))
                    .collect::<Result<Vec<_>, _>>()
            })?;
        Ok(views
            .iter()
            .map(|v| ChainInfo {
                id: v.chain.id.to_hex(),
                title: v.chain.title.clone(),
                description: v.chain.description.clone(),
                lines: v
                    .lines
                    .iter()
                    .map(|l| ChainLineInfo {
                        family_id: l.family.to_hex(),
                        student_id: l.student.map(|s| s.to_hex()),
                        text: l.text.clone(),
                        place: match l.place {
                            P::Placed { number } => ChainPlace::Placed { number },
                            P::Waitlisted { position } => ChainPlace::Waitlisted { position },
                            P::Late => ChainPlace::Late,
                            P::Withdrawn => ChainPlace::Withdrawn,
                        },
                    })
                    .collect(),
            })
            .collect())
    }
}

// ---------------------------------------------------------------------------------------
// Leave requests.

/// Why a student is away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum LeaveKind {
    /// Ill.
    Sick,
    /// Personal reasons.
    Personal,
    /// Other.
    Other,
}

/// A leave request to make.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NewLeave {
    /// The student.
    pub student_id: String,
    /// First moment away (ms since the Unix epoch).
    pub starts_at: i64,
    /// Back (after `starts_at`).
    pub ends_at: i64,
    /// Kind.
    pub kind: LeaveKind,
    /// Reason (private to the family and staff).
    pub reason: String,
}

/// Where a leave request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum LeaveStatus {
    /// Not decided yet.
    Pending,
    /// Approved.
    Approved,
    /// Rejected.
    Rejected,
    /// Cancelled by the family.
    Cancelled,
}

/// A leave request.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct LeaveInfo {
    /// The request id.
    pub id: String,
    /// The family.
    pub family_id: String,
    /// The student.
    pub student_id: String,
    /// First moment away.
    pub starts_at: i64,
    /// Back.
    pub ends_at: i64,
    /// Kind.
    pub kind: LeaveKind,
    /// Reason.
    pub reason: String,
    /// Where it stands.
    pub status: LeaveStatus,
    /// The teacher's comment.
    pub comment: String,
}

fn leave_info(l: &homeroom_core::leave::Leave) -> LeaveInfo {
    use homeroom_core::leave::{LeaveKind as K, LeaveStatus as S};
    LeaveInfo {
        id: l.id.to_hex(),
        family_id: l.family.to_hex(),
        student_id: l.student.to_hex(),
        starts_at: l.from,
        ends_at: l.to,
        kind: match l.kind {
            K::Sick => LeaveKind::Sick,
            K::Personal => LeaveKind::Personal,
            K::Other => LeaveKind::Other,
        },
        reason: l.reason.clone(),
        status: match l.status {
            S::Pending => LeaveStatus::Pending,
            S::Approved => LeaveStatus::Approved,
            S::Rejected => LeaveStatus::Rejected,
            S::Cancelled => LeaveStatus::Cancelled,
        },
        comment: l.comment.clone(),
    }
}

#[uniffi::export]
impl Classroom {
    /// Ask for leave for a student of the family (guardian); returns the request id.
    pub fn request_leave(&self, leave: NewLeave) -> Result<String, ApiError> {
        use homeroom_core::leave::{self, LeaveKind as K};
        let student: StudentId = parse("student_id", &leave.student_id)?;
        let family = self.family(None)?;
        let l = leave::NewLeave {
            student,
            from: leave.starts_at,
            to: leave.ends_at,
            kind: match leave.kind {
                LeaveKind::Sick => K::Sick,
                LeaveKind::Personal => K::Personal,
                LeaveKind::Other => K::Other,
            },
            reason: &leave.reason,
        };
        let id = self.edit_lane(family, |tx, _, actor, mut ids| {
            leave::request_leave(tx, actor, &mut ids, family, &l)
        })?;
        Ok(id.to_hex())
    }

    /// Cancel a leave request (guardian).
    pub fn cancel_leave(&self, request_id: String) -> Result<(), ApiError> {
        let request: ItemId = parse("request_id", &request_id)?;
        let family = self.family(None)?;
        self.edit_lane(family, |tx, _, actor, _| {
            homeroom_core::leave::cancel_leave(tx, actor, family, request)
        })
    }

    /// Approve or reject a family's leave request (staff).
    pub fn decide_leave(
        &self,
        family_id: String,
        request_id: String,
        approve: bool,
        comment: String,
    ) -> Result<(), ApiError> {
        let family: FamilyId = parse("family_id", &family_id)?;
        let request: ItemId = parse("request_id", &request_id)?;
        self.edit_lane(family, |tx, _, actor, mut ids| {
            homeroom_core::leave::decide_leave(
                tx, actor, &mut ids, family, request, approve, &comment,
            )
        })?;
        Ok(())
    }

    /// Leave requests: a family's (guardian: own family), or with `family_id` `None` for
    /// staff, every family's.
    pub fn leave_requests(&self, family_id: Option<String>) -> Result<Vec<LeaveInfo>, ApiError> {
        let (_, viewer) = self.viewer()?;
        if family_id.is_none() && viewer.is_staff() {
            let lanes = self.lanes()?;
            let refs: Vec<(FamilyId, &Automerge)> = lanes.iter().map(|(f, d)| (*f, d)).collect();
            let roster = self.device.roster(self.class)?;
            let list = homeroom_core::leave::class_leave(&refs, &roster)?;
            return Ok(list.iter().map(leave_info).collect());
        }
        let family = self.family(family_id)?;
        let list = self.read_with_lane(family, |_, lane, roster| {
            homeroom_core::leave::family_leave(lane, roster, family)
        })?;
        Ok(list.iter().map(leave_info).collect())
    }
}

// ---------------------------------------------------------------------------------------
// Homework.

/// Where a student's homework stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum HomeworkStatus {
    /// Assigned, not done.
    Assigned,
    /// Done at home.
    Done,
    /// Handed in.
    Submitted,
    /// Graded by the teacher.
    Graded,
}

/// A student's homework record for one homework entry.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HomeworkInfo {
    /// The family.
    pub family_id: String,
    /// The homework entry.
    pub entry_id: String,
    /// The student.
    pub student_id: String,
    /// Status.
    pub status: HomeworkStatus,
    /// Round (increases when the teacher returns it).
    pub round: u32,
    /// The teacher's comment when returned.
    pub return_comment: Option<String>,
    /// Minutes reported, if any.
    pub minutes: Option<u32>,
    /// The day they were reported for (days since 1970-01-01).
    pub minutes_day: Option<i64>,
}

#[uniffi::export]
impl Classroom {
    /// Report how many minutes a student spent on a homework entry on `day` (days since
    /// 1970-01-01; guardian).
    pub fn report_minutes(
        &self,
        entry_id: String,
        student_id: String,
        day: i64,
        minutes: u32,
    ) -> Result<(), ApiError> {
        let entry: ItemId = parse("entry_id", &entry_id)?;
        let student: StudentId = parse("student_id", &student_id)?;
        let family = self.family(None)?;
        self.edit_lane(family, |tx, _, actor, _| {
            homeroom_core::homework::report_minutes(tx, actor, family, entry, student, day, minutes)
        })
    }

    /// Set a student's homework status (guardian: `Done`; staff: `Submitted`/`Graded`).
    pub fn set_homework_status(
        &self,
        family_id: Option<String>,
        entry_id: String,
        student_id: String,
        status: HomeworkStatus,
    ) -> Result<(), ApiError> {
        use homeroom_core::homework::HomeworkStatus as H;
        let entry: ItemId = parse("entry_id", &entry_id)?;
        let student: StudentId = parse("student_id", &student_id)?;
        let family = self.family(family_id)?;
        let s = match status {
            HomeworkStatus::Assigned => H::Assigned,
            HomeworkStatus::Done => H::Done,
            HomeworkStatus::Submitted => H::Submitted,
            HomeworkStatus::Graded => H::Graded,
        };
        self.edit_lane(family, |tx, _, actor, _| {
            homeroom_core::homework::set_homework_status(tx, actor, family, entry, student, s)
        })?;
        Ok(())
    }

    /// A family's homework records (`family_id` defaults to the guardian's own family).
    pub fn homework(&self, family_id: Option<String>) -> Result<Vec<HomeworkInfo>, ApiError> {
        use homeroom_core::homework::HomeworkStatus as H;
        let family = self.family(family_id)?;
        let list = self.read_with_lane(family, |_, lane, roster| {
            homeroom_core::homework::family_homework(lane, roster, family)
        })?;
        Ok(list
            .iter()
            .map(|h| HomeworkInfo {
                family_id: h.family.to_hex(),
                entry_id: h.entry.to_hex(),
                student_id: h.student.to_hex(),
                status: match h.state.status {
                    H::Assigned => HomeworkStatus::Assigned,
                    H::Done => HomeworkStatus::Done,
                    H::Submitted => HomeworkStatus::Submitted,
                    H::Graded => HomeworkStatus::Graded,
                },
                round: h.state.round,
                return_comment: h.return_comment.clone(),
                minutes: h.minutes.as_ref().map(|m| m.minutes),
                minutes_day: h.minutes.as_ref().map(|m| m.day),
            })
            .collect())
    }
}

// ---------------------------------------------------------------------------------------
// The private thread between a family and the teachers.

/// A message of a family's private thread.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ThreadMessageInfo {
    /// The message id.
    pub id: String,
    /// Text.
    pub text: String,
    /// When.
    pub at: i64,
    /// The writing device.
    pub author: String,
    /// Whether a teacher wrote it.
    pub from_staff: bool,
}

#[uniffi::export]
impl Classroom {
    /// Write in a family's private thread with the teachers (guardian: own family; staff:
    /// name the family). Returns the message id.
    pub fn post_thread_message(
        &self,
        family_id: Option<String>,
        text: String,
    ) -> Result<String, ApiError> {
        let family = self.family(family_id)?;
        let (id, _) = self
            .device
            .edit(self.doc(DocKind::Lane(family)), |tx, actor, mut ids| {
                homeroom_core::thread::post_thread_message(tx, actor, &mut ids, family, &text)
            })?;
        Ok(id.to_hex())
    }

    /// A family's private thread, oldest first.
    pub fn thread(&self, family_id: Option<String>) -> Result<Vec<ThreadMessageInfo>, ApiError> {
        let family = self.family(family_id)?;
        let list = self
            .device
            .read(self.doc(DocKind::Lane(family)), |lane, roster| {
                homeroom_core::thread::read_thread(lane, roster, family)
            })?;
        Ok(list
            .iter()
            .map(|m| ThreadMessageInfo {
                id: m.id.to_hex(),
                text: m.text.clone(),
                at: m.at,
                author: m.author.to_hex(),
                from_staff: m.from_staff,
            })
            .collect())
    }
}
