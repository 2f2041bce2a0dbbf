//! Notebook entries and everything families write about them.
//!
//! - **Entries** live in the Notebook document (top-level map `entries`), written by staff. An
//!   entry is a daily note, homework or announcement with an urgency and an audience. Its text
//!   lives in **revisions**: every edit adds a revision (its own [`ItemId`], title, text, author,
//!   time, and whether the edit is `material`), stored as one immutable record at `rev:<id>` in
//!   the entry's map. Concurrent edits by two teachers simply add two revisions; the latest is
//!   the last in [`Revision::order_key`] order, the same on every replica.
//! - **Signatures** live in the family's Lane (`signatures`). Each names the revision its
//!   guardian saw, and optionally answers a consent question. A signature is one immutable
//!   scalar (a small versioned binary record) under a fresh [`ItemId`]: its author is the author
//!   of that one operation, so no other device can alter what it says, and a year of them
//!   (30,000 per class) reads in a few milliseconds.
//! - **Read receipts** live in the Lane (`receipts`), one scalar per entry and device.
//! - **Replies** are public (the family's Board, `replies`) or private to the teacher (the
//!   Lane, `replies`). The author edits the text; visibility only moves up: visible < hidden by
//!   author < hidden by moderator < purged. The author's mark is on the reply; moderators'
//!   marks live in the Notebook (`moderation`, a map only staff can write, so a family cannot
//!   overwrite a moderator's decision), read with `get_all` and the maximum taken, so
//!   concurrent marks resolve upward. Each mark is dated (`at:<reply>`, written by the same
//!   change), so a mark by a revoked device or a removed member dated after the removal does
//!   not count (removal wins).
//!
//! Which signatures, receipts and replies *count* (authorship against the roster) is decided
//! when they are composed into the [`crate::view::NotebookView`]; the readers here report
//! every record with the device that wrote it.

use std::collections::{BTreeSet, HashMap};

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc};

use crate::context::Actor;
use crate::error::{ModelError, check_text};
use crate::identity::DeviceId;
use crate::ids::{FamilyId, IdSource, ItemId, MemberId, StudentId};
use crate::roster::RosterIndex;
use crate::values::{
    ChildMapVisitor, FieldRef, author_of_obj, item_id_from_hex, map_at, ref_bytes, ref_i64,
    ref_str, same_actor, top_map, visit_child_maps, visit_trusted_fields,
};

/// Longest entry title, in characters.
pub const MAX_TITLE: usize = 200;
/// Longest entry text, in characters.
pub const MAX_ENTRY_TEXT: usize = 20_000;
/// Longest reply text, in characters.
pub const MAX_REPLY_TEXT: usize = 4_000;

/// What an entry is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum EntryKind {
    /// The day's note to families.
    DailyNote,
    /// A homework assignment.
    Homework,
    /// An announcement or notice.
    Announcement,
}

impl EntryKind {
    /// The form stored in the document.
    pub fn as_str(&self) -> &'static str {
        match self {
            EntryKind::DailyNote => "daily_note",
            EntryKind::Homework => "homework",
            EntryKind::Announcement => "announcement",
        }
    }

    /// Parse the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "daily_note" => EntryKind::DailyNote,
            "homework" => EntryKind::Homework,
            "announcement" => EntryKind::Announcement,
            _ => return None,
        })
    }
}

/// How urgent an entry is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Urgency {
    /// Act now.
    Red,
    /// Soon.
    Amber,
    /// For information.
    Green,
}

impl Urgency {
    /// The form stored in the document.
    pub fn as_str(&self) -> &'static str {
        match self {
            Urgency::Red => "red",
            Urgency::Amber => "amber",
            Urgency::Green => "green",
        }
    }

    /// Parse the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "red" => Urgency::Red,
            "amber" => Urgency::Amber,
            "green" => Urgency::Green,
            _ => return None,
        })
    }
}

/// Who an entry is addressed to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Audience {
    /// Every family of the class.
    WholeClass,
    /// The families of these students.
    Students(BTreeSet<StudentId>),
}

impl Audience {
    /// The form stored in the document: `class`, or `students:` and comma-separated ids.
    pub fn encode(&self) -> String {
        match self {
            Audience::WholeClass => "class".into(),
            Audience::Students(set) => {
                let ids: Vec<String> = set.iter().map(StudentId::to_hex).collect();
                format!("students:{}", ids.join(","))
            }
        }
    }

    /// Parse the stored form; malformed student ids are skipped.
    pub fn parse(s: &str) -> Option<Self> {
        if s == "class" {
            return Some(Audience::WholeClass);
        }
        let list = s.strip_prefix("students:")?;
        Some(Audience::Students(
            list.split(',').filter_map(|x| x.parse().ok()).collect(),
        ))
    }

    /// Whether the entry is addressed to `family` (as the roster records its students).
    pub fn includes(&self, roster: &RosterIndex, family: &FamilyId) -> bool {
        match self {
            Audience::WholeClass => roster.families.contains_key(family),
            Audience::Students(set) => roster
                .families
                .get(family)
                .is_some_and(|f| f.students.keys().any(|s| set.contains(s))),
        }
    }

    /// Every family of the roster the entry is addressed to.
    pub fn families(&self, roster: &RosterIndex) -> BTreeSet<FamilyId> {
        roster
            .families
            .keys()
            .filter(|f| self.includes(roster, f))
            .copied()
            .collect()
    }
}

/// How two guardians' different consent answers resolve for their family.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum ConsentPolicy {
    /// Any guardian's decline decides (the default).
    #[default]
    DeclineWins,
    /// Any guardian's allow decides.
    AllowWins,
}

impl ConsentPolicy {
    /// The form stored in the document.
    pub fn as_str(&self) -> &'static str {
        match self {
            ConsentPolicy::DeclineWins => "decline_wins",
            ConsentPolicy::AllowWins => "allow_wins",
        }
    }

    /// Parse the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "decline_wins" => ConsentPolicy::DeclineWins,
            "allow_wins" => ConsentPolicy::AllowWins,
            _ => return None,
        })
    }
}

/// A guardian's answer to an entry that asks for consent.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum ConsentAnswer {
    /// Consent given.
    Allow,
    /// Consent refused.
    Decline,
}

/// A new entry, as a teacher writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry<'a> {
    /// What it is.
    pub kind: EntryKind,
    /// How urgent.
    pub urgency: Urgency,
    /// Who it is for.
    pub audience: Audience,
    /// Title (may be empty).
    pub title: &'a str,
    /// Body text.
    pub text: &'a str,
    /// Whether families are asked to sign it.
    pub signature_requested: bool,
    /// Whether it asks for consent, and how different answers resolve.
    pub consent: Option<ConsentPolicy>,
}

/// The ids of a freshly posted entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PostedEntry {
    /// The entry.
    pub entry: ItemId,
    /// Its first revision.
    pub revision: ItemId,
}

/// One revision of an entry's content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Revision {
    /// The revision's id (what signatures name).
    pub id: ItemId,
    /// Title.
    pub title: String,
    /// Body text.
    pub text: String,
    /// The device that wrote it.
    pub author: Option<DeviceId>,
    /// When it was written (the writer's clock).
    pub at: i64,
    /// Whether the edit was material (asks families to sign again). The first revision is.
    pub material: bool,
    /// Position in the revision order: one more than the highest the writer had seen, so an
    /// edit always orders after every revision it was made from.
    pub seq: i64,
}

impl Revision {
    /// The total order of revisions: `seq`, then time, then id (deterministic on every replica).
    pub fn order_key(&self) -> (i64, i64, ItemId) {
        (self.seq, self.at, self.id)
    }
}

/// An entry with all its revisions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// The entry's id.
    pub id: ItemId,
    /// What it is.
    pub kind: EntryKind,
    /// How urgent.
    pub urgency: Urgency,
    /// Who it is for.
    pub audience: Audience,
    /// When it was posted.
    pub created_at: i64,
    /// The device that posted it.
    pub author: Option<DeviceId>,
    /// Whether families are asked to sign it.
    pub signature_requested: bool,
    /// Whether it asks for consent, and how different answers resolve.
    pub consent: Option<ConsentPolicy>,
    /// Every revision, oldest first in [`Revision::order_key`] order; never empty.
    pub revisions: Vec<Revision>,
}

impl Entry {
    /// The current revision: the last in revision order (`None` only for a hand-built entry
    /// without revisions; entries read from a document always have one).
    pub fn latest(&self) -> Option<&Revision> {
        self.revisions.last()
    }

    /// The revision with id `id`, with its position in revision order.
    pub fn revision(&self, id: ItemId) -> Option<(usize, &Revision)> {
        self.revisions.iter().enumerate().find(|(_, r)| r.id == id)
    }

    /// Position of the last material revision: a signature of a revision at or after it is
    /// current, one before it is superseded.
    pub fn last_material_position(&self) -> usize {
        self.revisions.iter().rposition(|r| r.material).unwrap_or(0)
    }
}

/// A signature as stored in a lane (authorship not yet checked against the roster).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Signature {
    /// The signature's id.
    pub id: ItemId,
    /// The entry signed.
    pub entry: ItemId,
    /// The revision the guardian saw.
    pub revision: ItemId,
    /// When it was signed (the signer's clock).
    pub at: i64,
    /// The consent answer, for entries that ask for one.
    pub consent: Option<ConsentAnswer>,
    /// The device whose change wrote it.
    pub author: Option<DeviceId>,
}

/// A read receipt as stored in a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadReceipt {
    /// The entry read.
    pub entry: ItemId,
    /// When it was first opened (the reader's clock).
    pub at: i64,
    /// The device whose change wrote it.
    pub author: Option<DeviceId>,
}

/// Where a reply is posted.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum ReplyScope {
    /// Under the entry, for the class: the family's Board document.
    Public,
    /// To the teacher only: the family's Lane document.
    Private,
}

/// How visible a reply is. Only ever moves up (the derived order).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub enum Visibility {
    /// Shown.
    #[default]
    Visible,
    /// The author withdrew it.
    HiddenByAuthor,
    /// A moderator (staff) hid it.
    HiddenByModerator,
    /// A moderator removed its content.
    Purged,
}

impl Visibility {
    /// The form stored in the document.
    pub fn as_str(&self) -> &'static str {
        match self {
            Visibility::Visible => "visible",
            Visibility::HiddenByAuthor => "hidden_by_author",
            Visibility::HiddenByModerator => "hidden_by_moderator",
            Visibility::Purged => "purged",
        }
    }

    /// Parse the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "visible" => Visibility::Visible,
            "hidden_by_author" => Visibility::HiddenByAuthor,
            "hidden_by_moderator" => Visibility::HiddenByModerator,
            "purged" => Visibility::Purged,
            _ => return None,
        })
    }
}

/// What a moderator does to a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Moderation {
    /// Hide it from families (staff and the author still see it).
    Hide,
    /// Remove its content for everyone.
    Purge,
}

impl Moderation {
    /// The visibility this moderation sets.
    pub fn visibility(&self) -> Visibility {
        match self {
            Moderation::Hide => Visibility::HiddenByModerator,
            Moderation::Purge => Visibility::Purged,
        }
    }
}

/// A reply as stored in a Board or Lane. Its fields are read only from changes by its author's
/// member (any of their devices); values written by anyone else are ignored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reply {
    /// The reply's id.
    pub id: ItemId,
    /// The entry replied to.
    pub entry: ItemId,
    /// The current text (absent if erased by a moderator).
    pub text: Option<String>,
    /// When it was posted.
    pub at: i64,
    /// When the author last edited it.
    pub edited_at: Option<i64>,
    /// The device that created it.
    pub author: Option<DeviceId>,
    /// Whether the author hid it.
    pub hidden_by_author: bool,
}

// ---------------------------------------------------------------------------------------------
// Entries (Notebook)

fn unknown(kind: &'static str, id: ItemId) -> ModelError {
    ModelError::UnknownId {
        kind,
        id: id.to_hex(),
    }
}

fn entry_obj(doc: &impl ReadDoc, entry: ItemId) -> Result<ObjId, ModelError> {
    let entries = top_map(doc, "entries")?;
    map_at(doc, &entries, &entry.to_hex())?.ok_or_else(|| unknown("entry", entry))
}

fn check_entry_text(title: &str, text: &str) -> Result<(), ModelError> {
    check_text("title", title, MAX_TITLE, true)?;
    check_text("text", text, MAX_ENTRY_TEXT, false)
}

/// Key prefix of revision records inside an entry's map.
const REVISION_PREFIX: &str = "rev:";
const REVISION_V1: u8 = 1;
const REVISION_HEADER: usize = 1 + 8 + 8 + 1 + 4;

/// The fields of a revision being written.
struct NewRevision<'a> {
    id: ItemId,
    title: &'a str,
    text: &'a str,
    at: i64,
    material: bool,
    seq: i64,
}

/// A revision is one immutable record (a versioned binary value) at `rev:<id>` in its entry's
/// map, written once by its author: its author is the author of that single operation, and
/// reading an entry with all its revisions is one pass over one map.
fn encode_revision(rev: &NewRevision<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(REVISION_HEADER + rev.title.len() + rev.text.len());
    out.push(REVISION_V1);
    out.extend_from_slice(&rev.seq.to_be_bytes());
    out.extend_from_slice(&rev.at.to_be_bytes());
    out.push(u8::from(rev.material));
    // Titles are at most MAX_TITLE characters, so their byte length fits in a u32.
    out.extend_from_slice(
        &u32::try_from(rev.title.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(rev.title.as_bytes());
    out.extend_from_slice(rev.text.as_bytes());
    out
}

fn decode_revision(id: ItemId, bytes: &[u8], author: Option<DeviceId>) -> Option<Revision> {
    if bytes.len() < REVISION_HEADER || bytes[0] != REVISION_V1 {
        return None;
    }
    let seq = i64::from_be_bytes(bytes[1..9].try_into().ok()?);
    let at = i64::from_be_bytes(bytes[9..17].try_into().ok()?);
    let material = match bytes[17] {
        0 => false,
        1 => true,
        _ => return None,
    };
    let title_len = usize::try_from(u32::from_be_bytes(bytes[18..22].try_into().ok()?)).ok()?;
    let rest = &bytes[REVISION_HEADER..];
    if title_len > rest.len() {
        return None;
    }
    let (title, text) = rest.split_at(title_len);
    Some(Revision {
        id,
        title: std::str::from_utf8(title).ok()?.to_owned(),
        text: std::str::from_utf8(text).ok()?.to_owned(),
        author,
        at,
        material,
        seq,
    })
}

fn put_revision(
    tx: &mut impl Transactable,
    entry_obj: &ObjId,
    rev: &NewRevision<'_>,
) -> Result<(), ModelError> {
    tx.put(
        entry_obj,
        format!("{REVISION_PREFIX}{}", rev.id.to_hex()),
        encode_revision(rev),
    )?;
    Ok(())
}

/// Post a new entry (staff only). Returns the entry's and its first revision's ids.
pub fn post_entry(
    tx: &mut impl Transactable,
    actor: &Actor,
    ids: &mut impl IdSource,
    new: &NewEntry<'_>,
) -> Result<PostedEntry, ModelError> {
    actor.require_staff()?;
    check_entry_text(new.title, new.text)?;
    if matches!(&new.audience, Audience::Students(set) if set.is_empty()) {
        return Err(ModelError::InvalidInput {
            field: "audience",
            reason: "name at least one student, or address the whole class".into(),
        });
    }
    let entries = top_map(tx, "entries")?;
    let entry = ids.item_id(actor.now);
    let revision = ids.item_id(actor.now);
    let obj = tx.put_object(&entries, entry.to_hex(), ObjType::Map)?;
    tx.put(&obj, "kind", new.kind.as_str())?;
    tx.put(&obj, "urgency", new.urgency.as_str())?;
    tx.put(&obj, "audience", new.audience.encode())?;
    tx.put(&obj, "created_at", actor.now)?;
    tx.put(&obj, "signature_requested", new.signature_requested)?;
    if let Some(policy) = new.consent {
        tx.put(&obj, "consent", policy.as_str())?;
    }
    let first = NewRevision {
        id: revision,
        title: new.title,
        text: new.text,
        at: actor.now,
        material: true,
        seq: 1,
    };
    put_revision(tx, &obj, &first)?;
    Ok(PostedEntry { entry, revision })
}

/// Edit an entry (staff only): adds a revision and returns its id. A `material` edit asks
/// families to sign again; a minor one (a typo fix) carries their signatures forward.
pub fn edit_entry(
    tx: &mut impl Transactable,
    actor: &Actor,
    ids: &mut impl IdSource,
    entry: ItemId,
    title: &str,
    text: &str,
    material: bool,
) -> Result<ItemId, ModelError> {
    actor.require_staff()?;
    check_entry_text(title, text)?;
    let current = read_entry(tx, entry)?;
    let obj = entry_obj(tx, entry)?;
    let seq = current.revisions.iter().map(|r| r.seq).max().unwrap_or(0) + 1;
    let revision = ids.item_id(actor.now);
    let rev = NewRevision {
        id: revision,
        title,
        text,
        at: actor.now,
        material,
        seq,
    };
    put_revision(tx, &obj, &rev)?;
    Ok(revision)
}

/// Change an entry's urgency (staff only; last writer wins).
pub fn set_urgency(
    tx: &mut impl Transactable,
    actor: &Actor,
    entry: ItemId,
    urgency: Urgency,
) -> Result<(), ModelError> {
    actor.require_staff()?;
    let obj = entry_obj(tx, entry)?;
    tx.put(&obj, "urgency", urgency.as_str())?;
    Ok(())
}

/// Change an entry's audience (staff only; last writer wins, as one value).
pub fn set_audience(
    tx: &mut impl Transactable,
    actor: &Actor,
    entry: ItemId,
    audience: &Audience,
) -> Result<(), ModelError> {
    actor.require_staff()?;
    if matches!(audience, Audience::Students(s) if s.is_empty()) {
        return Err(ModelError::InvalidInput {
            field: "audience",
            reason: "name at least one student, or address the whole class".into(),
        });
    }
    let obj = entry_obj(tx, entry)?;
    tx.put(&obj, "audience", audience.encode())?;
    Ok(())
}

/// An entry being read field by field.
struct EntryParts {
    id: ItemId,
    author: Option<DeviceId>,
    kind: Option<EntryKind>,
    urgency: Option<Urgency>,
    audience: Option<Audience>,
    created_at: Option<i64>,
    signature_requested: bool,
    consent: Option<ConsentPolicy>,
    revisions: Vec<Revision>,
}

impl EntryParts {
    fn new(id: ItemId, obj: &ObjId) -> Self {
        Self {
            id,
            author: author_of_obj(obj),
            kind: None,
            urgency: None,
            audience: None,
            created_at: None,
            signature_requested: false,
            consent: None,
            revisions: Vec::new(),
        }
    }

    /// Take one field of the entry's map. The entry's own fields are whatever staff last wrote
    /// (the Notebook is staff-only); each revision record carries its own author.
    fn field(&mut self, item: &automerge::iter::MapRangeItem<'_>) {
        let value = &item.value;
        match item.key.as_ref() {
            "kind" => self.kind = ref_str(value).and_then(EntryKind::parse),
            "urgency" => self.urgency = ref_str(value).and_then(Urgency::parse),
            "audience" => self.audience = ref_str(value).and_then(Audience::parse),
            "created_at" => self.created_at = ref_i64(value),
            "signature_requested" => {
                self.signature_requested = matches!(
                    value,
                    automerge::ValueRef::Scalar(automerge::ScalarValueRef::Boolean(true))
                )
            }
            "consent" => self.consent = ref_str(value).and_then(ConsentPolicy::parse),
            key => {
                let Some(rev_id) = key.strip_prefix(REVISION_PREFIX).and_then(item_id_from_hex)
                else {
                    return;
                };
                let Some(bytes) = ref_bytes(value) else {
                    return;
                };
                if let Some(r) = decode_revision(rev_id, bytes, author_of_obj(&item.id())) {
                    self.revisions.push(r);
                }
            }
        }
    }

    /// The entry, if it is well formed and has a revision.
    fn finish(mut self) -> Option<Entry> {
        let kind = self.kind?;
        if self.revisions.is_empty() {
            return None;
        }
        self.revisions.sort_by_key(Revision::order_key);
        Some(Entry {
            id: self.id,
            kind,
            urgency: self.urgency.unwrap_or(Urgency::Green),
            audience: self.audience.unwrap_or(Audience::WholeClass),
            created_at: self.created_at.unwrap_or(0),
            author: self.author,
            signature_requested: self.signature_requested,
            consent: self.consent,
            revisions: self.revisions,
        })
    }
}

/// Collects entries for [`read_entries`].
struct EntryCollector(Vec<EntryParts>);

impl ChildMapVisitor for EntryCollector {
    fn child(&mut self, key: &str, obj: &ObjId) -> bool {
        match item_id_from_hex(key) {
            Some(id) => {
                self.0.push(EntryParts::new(id, obj));
                true
            }
            None => false,
        }
    }

    fn field(&mut self, child: usize, item: &automerge::iter::MapRangeItem<'_>) {
        if let Some(p) = self.0.get_mut(child) {
            p.field(item);
        }
    }
}

/// Read one entry with all its revisions.
pub fn read_entry(doc: &impl ReadDoc, entry: ItemId) -> Result<Entry, ModelError> {
    let obj = entry_obj(doc, entry)?;
    let mut parts = EntryParts::new(entry, &obj);
    for item in doc.map_range(&obj, ..) {
        parts.field(&item);
    }
    parts.finish().ok_or_else(|| ModelError::Corrupt {
        what: format!("entry {entry} is malformed"),
    })
}

/// Read every well-formed entry of a Notebook document (malformed ones are skipped), in one
/// pass over the document.
pub fn read_entries(doc: &impl ReadDoc) -> Result<Vec<Entry>, ModelError> {
    let entries = top_map(doc, "entries")?;
    let mut parts = EntryCollector(Vec::new());
    visit_child_maps(doc, &entries, &mut parts);
    Ok(parts.0.into_iter().filter_map(EntryParts::finish).collect())
}

/// The entries that the newest change at `doc`'s heads wrote to: posted, edited (a new
/// revision) or re-flagged. Costs the size of that change, not of the notebook — for code that
/// reacts to "what just arrived" on every edit (the relay's notification webhook). Among
/// concurrent heads only those with the newest timestamp count: an older head is not news.
pub fn entries_in_newest_change(doc: &automerge::Automerge) -> Vec<ItemId> {
    let Ok(entries) = top_map(doc, "entries") else {
        return Vec::new();
    };
    let (items, _) = crate::values::items_in_newest_change(doc, &entries);
    items.iter().filter_map(|k| item_id_from_hex(k)).collect()
}

// ---------------------------------------------------------------------------------------------
// Signatures and receipts (Lane)

const SIGNATURE_V1: u8 = 1;
const SIGNATURE_LEN: usize = 1 + 8 + 8 + 8 + 1;

fn encode_signature(
    entry: ItemId,
    revision: ItemId,
    at: i64,
    consent: Option<ConsentAnswer>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNATURE_LEN);
    out.push(SIGNATURE_V1);
    out.extend_from_slice(&entry.0);
    out.extend_from_slice(&revision.0);
    out.extend_from_slice(&at.to_be_bytes());
    out.push(match consent {
        None => 0,
        Some(ConsentAnswer::Allow) => 1,
        Some(ConsentAnswer::Decline) => 2,
    });
    out
}

/// Decode a stored signature record: (entry, revision, at, consent).
fn decode_signature(bytes: &[u8]) -> Option<(ItemId, ItemId, i64, Option<ConsentAnswer>)> {
    if bytes.len() != SIGNATURE_LEN || bytes[0] != SIGNATURE_V1 {
        return None;
    }
    let mut entry = [0u8; 8];
    let mut revision = [0u8; 8];
    let mut at = [0u8; 8];
    entry.copy_from_slice(&bytes[1..9]);
    revision.copy_from_slice(&bytes[9..17]);
    at.copy_from_slice(&bytes[17..25]);
    let consent = match bytes[25] {
        0 => None,
        1 => Some(ConsentAnswer::Allow),
        2 => Some(ConsentAnswer::Decline),
        _ => return None,
    };
    Some((
        ItemId(entry),
        ItemId(revision),
        i64::from_be_bytes(at),
        consent,
    ))
}

/// Sign an entry: the acting guardian acknowledges `revision` of `entry` (and answers its
/// consent question, if it asks one). `tx` must be a transaction on the guardian's own family
/// Lane; `notebook` is the class Notebook, used to check the ids. Every call records a new
/// signature (signing again, e.g. with a changed consent answer, never overwrites the earlier
/// one; the view takes each guardian's latest).
pub fn sign_entry(
    tx: &mut impl Transactable,
    actor: &Actor,
    ids: &mut impl IdSource,
    notebook: &impl ReadDoc,
    entry: ItemId,
    revision: ItemId,
    consent: Option<ConsentAnswer>,
) -> Result<ItemId, ModelError> {
    let family = actor.guardian_family()?;
    let e = read_entry(notebook, entry)?;
    if e.revision(revision).is_none() {
        return Err(unknown("revision", revision));
    }
    if !e.audience.includes(actor.roster, &family) {
        return Err(ModelError::NotAllowed(format!(
            "entry {entry} is not addressed to family {family}"
        )));
    }
    match (e.consent, consent) {
        (Some(_), None) => {
            return Err(ModelError::InvalidInput {
                field: "consent",
                reason: "this entry asks for consent: answer allow or decline".into(),
            });
        }
        (None, Some(_)) => {
            return Err(ModelError::InvalidInput {
                field: "consent",
                reason: "this entry does not ask for consent".into(),
            });
        }
        _ => {}
    }
    let signatures = top_map(tx, "signatures")?;
    let id = ids.item_id(actor.now);
    tx.put(
        &signatures,
        id.to_hex(),
        encode_signature(entry, revision, actor.now, consent),
    )?;
    Ok(id)
}

/// Every signature record of a Lane document (malformed ones are skipped).
pub fn read_signatures(lane: &impl ReadDoc) -> Result<Vec<Signature>, ModelError> {
    let signatures = top_map(lane, "signatures")?;
    let mut out = Vec::new();
    for item in lane.map_range(&signatures, ..) {
        let Some(id) = item_id_from_hex(&item.key) else {
            continue;
        };
        let Some((entry, revision, at, consent)) =
            ref_bytes(&item.value).and_then(decode_signature)
        else {
            continue;
        };
        out.push(Signature {
            id,
            entry,
            revision,
            at,
            consent,
            author: author_of_obj(&item.id()),
        });
    }
    Ok(out)
}

/// The key of a read receipt: the entry and the first 8 bytes of the reading device, so each
/// key has exactly one writer.
fn receipt_key(entry: ItemId, device: &DeviceId) -> String {
    format!("{}:{}", entry.to_hex(), hex::encode(&device.0[..8]))
}

/// Record that the acting guardian's device opened `entry`. `tx` must be a transaction on the
/// guardian's own family Lane. Returns `false` if this device had already recorded it.
pub fn mark_read(
    tx: &mut impl Transactable,
    actor: &Actor,
    notebook: &impl ReadDoc,
    entry: ItemId,
) -> Result<bool, ModelError> {
    actor.guardian_family()?;
    entry_obj(notebook, entry)?;
    let receipts = top_map(tx, "receipts")?;
    let key = receipt_key(entry, &actor.device);
    if tx.get(&receipts, key.as_str())?.is_some() {
        return Ok(false);
    }
    tx.put(&receipts, key, actor.now)?;
    Ok(true)
}

/// Every read receipt of a Lane document.
pub fn read_receipts(lane: &impl ReadDoc) -> Result<Vec<ReadReceipt>, ModelError> {
    let receipts = top_map(lane, "receipts")?;
    let mut out = Vec::new();
    for item in lane.map_range(&receipts, ..) {
        let Some(entry) = item
            .key
            .split_once(':')
            .and_then(|(e, _)| item_id_from_hex(e))
        else {
            continue;
        };
        let Some(at) = ref_i64(&item.value) else {
            continue;
        };
        out.push(ReadReceipt {
            entry,
            at,
            author: author_of_obj(&item.id()),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Replies (Board / Lane) and moderation (Notebook)

fn reply_obj(doc: &impl ReadDoc, reply: ItemId) -> Result<ObjId, ModelError> {
    let replies = top_map(doc, "replies")?;
    map_at(doc, &replies, &reply.to_hex())?.ok_or_else(|| unknown("reply", reply))
}

/// Post a reply under `entry`. Public replies go to the acting guardian's family Board (`tx`
/// on that Board); private replies go to a family Lane (`tx` on that Lane) and may also be
/// written by staff. Guardians may reply only to entries addressed to their family.
pub fn post_reply(
    tx: &mut impl Transactable,
    actor: &Actor,
    ids: &mut impl IdSource,
    notebook: &impl ReadDoc,
    scope: ReplyScope,
    entry: ItemId,
    text: &str,
) -> Result<ItemId, ModelError> {
    let member = actor.member()?;
    let staff = member.is_active_staff();
    if scope == ReplyScope::Public || !staff {
        let family = actor.guardian_family()?;
        let e = read_entry(notebook, entry)?;
        if !e.audience.includes(actor.roster, &family) {
            return Err(ModelError::NotAllowed(format!(
                "entry {entry} is not addressed to family {family}"
            )));
        }
    } else {
        entry_obj(notebook, entry)?;
    }
    check_text("text", text, MAX_REPLY_TEXT, false)?;
    let replies = top_map(tx, "replies")?;
    let id = ids.item_id(actor.now);
    let obj = tx.put_object(&replies, id.to_hex(), ObjType::Map)?;
    tx.put(&obj, "entry", entry.to_hex())?;
    tx.put(&obj, "text", text)?;
    tx.put(&obj, "at", actor.now)?;
    Ok(id)
}

/// The member behind the device that created the reply object `obj`, and check the actor is
/// that member.
fn require_reply_author(actor: &Actor, obj: &ObjId) -> Result<(), ModelError> {
    let me = actor.member()?;
    let author = author_of_obj(obj)
        .and_then(|d| actor.roster.devices.get(&d))
        .map(|d| d.member);
    if author == Some(me.id) {
        Ok(())
    } else {
        Err(ModelError::NotAllowed(
            "only the reply's author may do this".into(),
        ))
    }
}

/// Edit a reply's text (its author only, from any of their devices). `tx` is on the document
/// holding the reply. A reply its author hid can no longer be edited.
pub fn edit_reply(
    tx: &mut impl Transactable,
    actor: &Actor,
    reply: ItemId,
    text: &str,
) -> Result<(), ModelError> {
    let obj = reply_obj(tx, reply)?;
    require_reply_author(actor, &obj)?;
    check_text("text", text, MAX_REPLY_TEXT, false)?;
    let current = read_reply_at(tx, actor.roster, reply, &obj)?;
    if current.is_some_and(|r| r.hidden_by_author) {
        return Err(ModelError::InvalidState(format!(
            "reply {reply} was withdrawn by its author"
        )));
    }
    tx.put(&obj, "text", text)?;
    tx.put(&obj, "edited_at", actor.now)?;
    Ok(())
}

/// Hide one's own reply (its author only). Cannot be undone: visibility only moves up.
pub fn hide_own_reply(
    tx: &mut impl Transactable,
    actor: &Actor,
    reply: ItemId,
) -> Result<(), ModelError> {
    let obj = reply_obj(tx, reply)?;
    require_reply_author(actor, &obj)?;
    tx.put(&obj, "hidden", true)?;
    Ok(())
}

/// Moderate a reply (staff only): `tx` is on the Notebook, where moderation marks live;
/// `replies_doc` is the Board or Lane holding the reply. Visibility only moves up: moderating
/// to a level at or below the current one changes nothing. Returns the resulting moderation
/// level.
pub fn moderate_reply(
    tx: &mut impl Transactable,
    actor: &Actor,
    replies_doc: &impl ReadDoc,
    reply: ItemId,
    moderation: Moderation,
) -> Result<Visibility, ModelError> {
    actor.require_staff()?;
    reply_obj(replies_doc, reply)?;
    let marks = top_map(tx, "moderation")?;
    let current = moderation_level(tx, actor.roster, &marks, &reply.to_hex())?;
    let wanted = moderation.visibility();
    if current >= wanted {
        return Ok(current);
    }
    tx.put(&marks, reply.to_hex(), wanted.as_str())?;
    // The mark's date, as the very next operation of the same change: removal wins over a
    // mark dated after its author's removal (see `mark_counts`).
    tx.put(&marks, mark_date_key(&reply.to_hex()), actor.now)?;
    Ok(wanted)
}

/// Erase a reply's text from the current state of its document (staff only, usually with
/// [`Moderation::Purge`]). History keeps it; views never show a purged reply's text.
pub fn erase_reply_text(
    tx: &mut impl Transactable,
    actor: &Actor,
    reply: ItemId,
) -> Result<(), ModelError> {
    actor.require_staff()?;
    let obj = reply_obj(tx, reply)?;
    tx.delete(&obj, "text")?;
    Ok(())
}

/// Whose writes count for a reply's fields: devices of the member who created it.
struct ReplyTrust<'r> {
    roster: &'r RosterIndex,
    obj: ObjId,
    author: Option<DeviceId>,
    member: Option<MemberId>,
}

impl<'r> ReplyTrust<'r> {
    fn new(roster: &'r RosterIndex, obj: &ObjId) -> Self {
        let author = author_of_obj(obj);
        let member = author
            .and_then(|d| roster.devices.get(&d))
            .map(|d| d.member);
        Self {
            roster,
            obj: obj.clone(),
            author,
            member,
        }
    }

    fn accepts(&self, op: &ObjId) -> bool {
        if same_actor(op, &self.obj) {
            return true;
        }
        match (
            self.member,
            author_of_obj(op).and_then(|d| self.roster.devices.get(&d)),
        ) {
            (Some(m), Some(d)) => d.member == m,
            _ => false,
        }
    }
}

/// A reply's fields as read so far.
#[derive(Default)]
struct ReplyFields {
    entry: Option<ItemId>,
    text: Option<String>,
    at: Option<i64>,
    edited_at: Option<i64>,
    hidden: bool,
}

impl ReplyFields {
    fn take(&mut self, key: &str, value: FieldRef<'_>) {
        match key {
            "entry" => self.entry = value.as_str().and_then(item_id_from_hex),
            "text" => self.text = value.as_str().map(str::to_owned),
            "at" => self.at = value.as_i64(),
            "edited_at" => self.edited_at = value.as_i64(),
            "hidden" => self.hidden = value.as_bool().unwrap_or(false),
            _ => {}
        }
    }

    fn finish(self, id: ItemId, author: Option<DeviceId>) -> Option<Reply> {
        Some(Reply {
            id,
            entry: self.entry?,
            text: self.text,
            at: self.at?,
            edited_at: self.edited_at,
            author,
            hidden_by_author: self.hidden,
        })
    }
}

/// Read the reply object `obj`, trusting only fields written by devices of its creator's
/// member. `None` if malformed.
fn read_reply_at(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
    id: ItemId,
    obj: &ObjId,
) -> Result<Option<Reply>, ModelError> {
    let trust = ReplyTrust::new(roster, obj);
    let mut fields = ReplyFields::default();
    visit_trusted_fields(
        doc,
        obj,
        |op| trust.accepts(op),
        |key, value, _| fields.take(key, value),
    )?;
    Ok(fields.finish(id, trust.author))
}

/// Collects replies for [`read_replies`].
struct ReplyCollector<'r> {
    roster: &'r RosterIndex,
    replies: Vec<(ItemId, ReplyTrust<'r>, ReplyFields)>,
    /// Keys whose visible value is untrusted but which hold concurrent values.
    conflicted: Vec<(usize, String)>,
}

impl ChildMapVisitor for ReplyCollector<'_> {
    fn child(&mut self, key: &str, obj: &ObjId) -> bool {
        match item_id_from_hex(key) {
            Some(id) => {
                let trust = ReplyTrust::new(self.roster, obj);
                self.replies.push((id, trust, ReplyFields::default()));
                true
            }
            None => false,
        }
    }

    fn field(&mut self, child: usize, item: &automerge::iter::MapRangeItem<'_>) {
        let Some((_, trust, fields)) = self.replies.get_mut(child) else {
            return;
        };
        if trust.accepts(&item.id()) {
            fields.take(&item.key, FieldRef::from_value_ref(&item.value));
        } else if item.conflict {
            self.conflicted.push((child, item.key.to_string()));
        }
    }
}

/// Every well-formed reply of a Board or Lane document, in one pass over the document. Fields
/// are read only from changes by the reply author's member.
pub fn read_replies(doc: &impl ReadDoc, roster: &RosterIndex) -> Result<Vec<Reply>, ModelError> {
    let map = top_map(doc, "replies")?;
    let mut collector = ReplyCollector {
        roster,
        replies: Vec::new(),
        conflicted: Vec::new(),
    };
    visit_child_maps(doc, &map, &mut collector);
    let ReplyCollector {
        mut replies,
        conflicted,
        ..
    } = collector;
    for (child, key) in conflicted {
        let Some((_, trust, fields)) = replies.get_mut(child) else {
            continue;
        };
        let all = doc.get_all(&trust.obj, key.as_str())?;
        if let Some((value, _)) = all.iter().rev().find(|(_, op)| trust.accepts(op)) {
            fields.take(&key, FieldRef::from_value(value));
        }
    }
    Ok(replies
        .into_iter()
        .filter_map(|(id, trust, fields)| fields.finish(id, trust.author))
        .collect())
}

/// Whether `device` belongs to a member holding a staff role (even if since removed): staff
/// content stays valid after a teacher leaves.
pub(crate) fn was_staff(roster: &RosterIndex, device: &DeviceId) -> bool {
    roster
        .devices
        .get(device)
        .and_then(|d| roster.members.get(&d.member))
        .is_some_and(|m| m.roles.iter().any(crate::roster::Role::is_staff))
}

/// The key, in the moderation map, of the date of the mark at `key` (a reply id).
fn mark_date_key(key: &str) -> String {
    format!("at:{key}")
}

/// Whether the moderation mark written by operation `op` at `key` of the moderation map
/// counts: written by a staff device (even if since removed) while it and its member were
/// active. Removal wins: a mark by a revoked device or a removed member counts only if its
/// date — written by the same change as the next operation, at [`mark_date_key`] — is at or
/// before the removal ([`RosterIndex::written_while_active`]); an undated one does not. The
/// mark stays in the Notebook either way.
fn mark_counts(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
    marks: &ObjId,
    key: &str,
    op: &ObjId,
) -> Result<bool, ModelError> {
    let Some(device) = author_of_obj(op) else {
        return Ok(false);
    };
    if !was_staff(roster, &device) {
        return Ok(false);
    }
    if roster.inactive_since(&device).is_none() {
        return Ok(true);
    }
    let ObjId::Id(counter, actor, _) = op else {
        return Ok(false);
    };
    let dated = doc
        .get_all(marks, mark_date_key(key))?
        .into_iter()
        .find_map(|(value, id)| match id {
            ObjId::Id(c, a, _) if c == counter.saturating_add(1) && a == *actor => value.as_i64(),
            _ => None,
        });
    Ok(dated.is_some_and(|at| roster.written_while_active(&device, at)))
}

/// The highest counting moderation mark at `key` of the moderation map ([`mark_counts`]).
fn moderation_level(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
    marks: &ObjId,
    key: &str,
) -> Result<Visibility, ModelError> {
    let mut level = Visibility::Visible;
    for (value, op) in doc.get_all(marks, key)? {
        let Some(v) = value.as_str().and_then(Visibility::parse) else {
            continue;
        };
        if mark_counts(doc, roster, marks, key, &op)? {
            level = level.max(v);
        }
    }
    Ok(level)
}

/// The moderation level of every moderated reply, from a Notebook document: for each reply the
/// highest mark written by a staff device (concurrent marks resolve upward). A mark by a
/// revoked device or a removed member dated after the removal does not count (removal wins).
pub fn read_moderation(
    notebook: &impl ReadDoc,
    roster: &RosterIndex,
) -> Result<HashMap<ItemId, Visibility>, ModelError> {
    let marks = top_map(notebook, "moderation")?;
    let mut out = HashMap::new();
    let mut conflicted = Vec::new();
    for item in notebook.map_range(&marks, ..) {
        let Ok(id) = item.key.parse::<ItemId>() else {
            continue;
        };
        if item.conflict {
            conflicted.push(id);
            continue;
        }
        let Some(v) = ref_str(&item.value).and_then(Visibility::parse) else {
            continue;
        };
        if v > Visibility::Visible && mark_counts(notebook, roster, &marks, &item.key, &item.id())?
        {
            out.insert(id, v);
        }
    }
    for id in conflicted {
        let v = moderation_level(notebook, roster, &marks, &id.to_hex())?;
        if v > Visibility::Visible {
            out.insert(id, v);
        }
    }
    Ok(out)
}
