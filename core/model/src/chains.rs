//! Sign-up chains (接龙): a list that families append to, one line per student when the chain
//! says so, with an optional capacity and a waitlist.
//!
//! # Where things live
//!
//! - Notebook `chains/<chain>`: title, description, whether it is one line per student, the
//!   capacity (0: unlimited), an optional closing time; staff may close it early
//!   (`closed_at`; concurrent closes take the earliest).
//! - Lane `chain_lines`, key `<chain>.<line>`: a family's line. For a one-per-student chain
//!   the line part is the **student id**, so two guardians adding a line for the same child
//!   concurrently write the same key: both record objects are kept by Automerge, and the read
//!   collapses them deterministically (text and withdrawal from the greatest [`Hlc`], place
//!   from the earliest `first` stamp). Otherwise the line part is a fresh id, so lines never
//!   overwrite each other. Each edit or withdrawal is a new record object at the same key.
//!
//! **Numbering is rendered, never stored**: the view orders live lines by their first stamp
//! (HLC, whose last part is the device), then family and key; the first `capacity` are placed
//! and numbered, the rest waitlisted. Lines in a family's lane are private to the family and
//! staff, so the complete view is the staff's (all lanes); a family computing it from its own
//! lane only sees a provisional place.

use std::cmp::Ordering;

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc, Value};

use crate::context::Actor;
use crate::error::{ModelError, check_text};
use crate::events::allocation::author_is_staff;
use crate::events::check_student;
use crate::hlc::{Hlc, read_stamp};
use crate::ids::{FamilyId, IdSource, ItemId, StudentId};
use crate::roster::RosterIndex;
use crate::values::{
    all_maps_at, author_of_obj, get_bool, get_i64, get_str, guardian_device_at, keys, map_at,
    staff_device_at, top_map,
};

/// Longest chain title, in characters.
pub const MAX_TITLE: usize = 200;
/// Longest chain description, in characters.
pub const MAX_DESCRIPTION: usize = 2000;
/// Longest line, in characters.
pub const MAX_LINE: usize = 200;
/// Largest capacity.
pub const MAX_CAPACITY: u32 = 10_000;

/// A new chain, as the teacher enters it.
#[derive(Debug, Clone, Copy)]
pub struct NewChain<'a> {
    /// Title.
    pub title: &'a str,
    /// What to write (may be empty).
    pub description: &'a str,
    /// One line per student (keyed by student).
    pub one_per_student: bool,
    /// Places, or `None` for unlimited.
    pub capacity: Option<u32>,
    /// When it closes, if planned.
    pub closes_at: Option<i64>,
}

/// A chain as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The chain's id.
    pub id: ItemId,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// One line per student.
    pub one_per_student: bool,
    /// Places, `None` for unlimited.
    pub capacity: Option<u32>,
    /// Effective closing time (planned or early), if any.
    pub closes_at: Option<i64>,
}

/// Which line of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LineKey {
    /// The line of a student (one-per-student chains).
    Student(StudentId),
    /// A free line.
    Line(ItemId),
}

impl LineKey {
    fn hex(&self) -> String {
        match self {
            LineKey::Student(s) => s.to_hex(),
            LineKey::Line(l) => l.to_hex(),
        }
    }
}

/// Where a line stands in the rendered chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainPlace {
    /// Has a place; `number` is the rendered line number from 1.
    Placed {
        /// Rendered number.
        number: u32,
    },
    /// Beyond capacity; `position` is 1 for the next in line.
    Waitlisted {
        /// Place in the waitlist, from 1.
        position: u32,
    },
    /// Written after the chain closed: kept, not placed.
    Late,
    /// Withdrawn by the family.
    Withdrawn,
}

/// A line as rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLine {
    /// The family.
    pub family: FamilyId,
    /// Which line.
    pub key: LineKey,
    /// The student it is for, if any.
    pub student: Option<StudentId>,
    /// The text (latest edit).
    pub text: String,
    /// When the line was first written: its place in the order.
    pub first: Hlc,
    /// When it was last edited.
    pub stamp: Hlc,
    /// Where it stands.
    pub place: ChainPlace,
}

/// A chain with its rendered lines: placed lines by number, then the waitlist, then late and
/// withdrawn lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainView {
    /// The chain.
    pub chain: Chain,
    /// Every line found in the given lanes.
    pub lines: Vec<ChainLine>,
}

// ---------------------------------------------------------------------------------------
// Writes

/// Create a chain (staff).
pub fn create_chain(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    ids: &mut impl IdSource,
    chain: &NewChain<'_>,
) -> Result<ItemId, ModelError> {
    actor.require_staff()?;
    check_text("title", chain.title, MAX_TITLE, false)?;
    check_text("description", chain.description, MAX_DESCRIPTION, true)?;
    if let Some(c) = chain.capacity
        && (c == 0 || c > MAX_CAPACITY)
    {
        return Err(ModelError::InvalidInput {
            field: "capacity",
            reason: format!("must be between 1 and {MAX_CAPACITY} (or none for unlimited)"),
        });
    }
    if chain.closes_at.is_some_and(|c| c <= actor.now) {
        return Err(ModelError::InvalidInput {
            field: "closes_at",
            reason: "must be in the future".into(),
        });
    }
    let chains = top_map(tx, "chains")?;
    let id = ids.item_id(actor.now);
    let obj = tx.put_object(&chains, id.to_hex(), ObjType::Map)?;
    tx.put(&obj, "title", chain.title)?;
    tx.put(&obj, "description", chain.description)?;
    tx.put(&obj, "one_per_student", chain.one_per_student)?;
    tx.put(&obj, "capacity", i64::from(chain.capacity.unwrap_or(0)))?;
    if let Some(c) = chain.closes_at {
        tx.put(&obj, "closes_at", c)?;
    }
    tx.put(
        &obj,
        "stamp",
        Hlc::after(actor.device, actor.now, []).encode(),
    )?;
    Ok(id)
}

/// Close a chain now (staff).
pub fn close_chain(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    chain: ItemId,
) -> Result<(), ModelError> {
    actor.require_staff()?;
    let (obj, c) = chain_obj(tx, actor.roster, chain)?;
    if c.closes_at.is_none_or(|at| actor.now < at) {
        tx.put(&obj, "closed_at", actor.now)?;
    }
    Ok(())
}

/// Add a line (a guardian of `family`, in its lane). In a one-per-student chain `student` is
/// required and a line the family already has for that student is edited instead (keeping its
/// place). Returns the line's key.
#[allow(clippy::too_many_arguments)]
pub fn add_line(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    notebook: &impl ReadDoc,
    ids: &mut impl IdSource,
    family: FamilyId,
    chain: ItemId,
    student: Option<StudentId>,
    text: &str,
) -> Result<LineKey, ModelError> {
    actor.require_guardian_of(&family)?;
    check_text("text", text, MAX_LINE, false)?;
    check_student(actor.roster, &family, student)?;
    let c = read_chain(notebook, actor.roster, chain)?;
    check_open(&c, actor.now)?;
    let key = match (c.one_per_student, student) {
        (true, Some(s)) => LineKey::Student(s),
        (true, None) => {
            return Err(ModelError::InvalidInput {
                field: "student",
                reason: "this chain takes one line per student: name the student".into(),
            });
        }
        (false, _) => LineKey::Line(ids.item_id(actor.now)),
    };
    let lines = top_map(tx, "chain_lines")?;
    let k = format!("{chain}.{}", key.hex());
    let current = collapse(tx, actor.roster, &family, &lines, &k)?;
    let seen = chain_stamps(tx, &lines, chain)?;
    let stamp = Hlc::after(actor.device, actor.now, &seen);
    let first = match &current {
        Some(cur) if !cur.withdrawn => cur.first,
        _ => stamp,
    };
    put_line(
        tx, &lines, &k, &key, student, text, first, stamp, false, actor.now,
    )?;
    Ok(key)
}

/// Withdraw a line (a guardian of `family`). Idempotent.
pub fn withdraw_line(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    family: FamilyId,
    chain: ItemId,
    line: LineKey,
) -> Result<(), ModelError> {
    actor.require_guardian_of(&family)?;
    let lines = top_map(tx, "chain_lines")?;
    let k = format!("{chain}.{}", line.hex());
    let cur =
        collapse(tx, actor.roster, &family, &lines, &k)?.ok_or_else(|| ModelError::UnknownId {
            kind: "line",
            id: line.hex(),
        })?;
    if cur.withdrawn {
        return Ok(());
    }
    let seen = chain_stamps(tx, &lines, chain)?;
    let stamp = Hlc::after(actor.device, actor.now, &seen);
    put_line(
        tx,
        &lines,
        &k,
        &line,
        cur.student,
        &cur.text,
        cur.first,
        stamp,
        true,
        actor.now,
    )
}

fn check_open(c: &Chain, now: i64) -> Result<(), ModelError> {
    if c.closes_at.is_some_and(|at| now >= at) {
        return Err(ModelError::InvalidState(format!(
            "chain {} is closed",
            c.id
        )));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn put_line(
    tx: &mut impl Transactable,
    lines: &ObjId,
    k: &str,
    key: &LineKey,
    student: Option<StudentId>,
    text: &str,
    first: Hlc,
    stamp: Hlc,
    withdrawn: bool,
    now: i64,
) -> Result<(), ModelError> {
    let rec = tx.put_object(lines, k, ObjType::Map)?;
    tx.put(
        &rec,
        "by",
        if matches!(key, LineKey::Student(_)) {
            "student"
        } else {
            "line"
        },
    )?;
    tx.put(
        &rec,
        "student",
        student.map(|s| s.to_hex()).unwrap_or_default(),
    )?;
    tx.put(&rec, "text", text)?;
    tx.put(&rec, "first", first.encode())?;
    tx.put(&rec, "stamp", stamp.encode())?;
    tx.put(&rec, "withdrawn", withdrawn)?;
    tx.put(&rec, "written_at", now)?;
    Ok(())
}

/// Every stamp of a chain's lines in this lane, so a new line is stamped after them.
fn chain_stamps(doc: &impl ReadDoc, lines: &ObjId, chain: ItemId) -> Result<Vec<Hlc>, ModelError> {
    let prefix = format!("{chain}.");
    let mut out = Vec::new();
    for key in keys(doc, lines) {
        if !key.starts_with(&prefix) {
            continue;
        }
        for rec in all_maps_at(doc, lines, &key)? {
            if let Some(s) = read_stamp(doc, &rec, "stamp")? {
                out.push(s);
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Reads

/// Every chain in the notebook.
pub fn read_chains(doc: &impl ReadDoc, roster: &RosterIndex) -> Result<Vec<Chain>, ModelError> {
    let chains = top_map(doc, "chains")?;
    let mut out = Vec::new();
    for key in keys(doc, &chains) {
        let Ok(id) = key.parse::<ItemId>() else {
            continue;
        };
        let Some(obj) = map_at(doc, &chains, &key)? else {
            continue;
        };
        if let Some(c) = read_chain_obj(doc, roster, &obj, id)? {
            out.push(c);
        }
    }
    out.sort_by_key(|c| c.id);
    Ok(out)
}

/// One chain.
pub fn read_chain(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
    chain: ItemId,
) -> Result<Chain, ModelError> {
    chain_obj(doc, roster, chain).map(|(_, c)| c)
}

/// Render a chain from the given lanes (staff: all lanes; a family: its own, provisionally).
pub fn chain_view<L: ReadDoc>(
    notebook: &impl ReadDoc,
    lanes: &[(FamilyId, &L)],
    roster: &RosterIndex,
    chain: ItemId,
) -> Result<ChainView, ModelError> {
    let c = read_chain(notebook, roster, chain)?;
    let prefix = format!("{chain}.");
    let mut all: Vec<(Collapsed, FamilyId, LineKey)> = Vec::new();
    for (family, lane) in lanes {
        let lines = top_map(*lane, "chain_lines")?;
        for key in keys(*lane, &lines) {
            let Some(rest) = key.strip_prefix(&prefix) else {
                continue;
            };
            let Some(cl) = collapse(*lane, roster, family, &lines, &key)? else {
                continue;
            };
            let lk = match cl.by_student {
                true => match rest.parse::<StudentId>() {
                    Ok(s) if c.one_per_student => LineKey::Student(s),
                    _ => continue,
                },
                false => match rest.parse::<ItemId>() {
                    Ok(l) if !c.one_per_student => LineKey::Line(l),
                    _ => continue,
                },
            };
            all.push((cl, *family, lk));
        }
    }
    all.sort_by(order);
    let mut placed = 0u32;
    let mut waiting = 0u32;
    let mut rendered: Vec<ChainLine> = all
        .into_iter()
        .map(|(cl, family, key)| {
            let place = if cl.withdrawn {
                ChainPlace::Withdrawn
            } else if c.closes_at.is_some_and(|at| cl.first_written_at >= at) {
                ChainPlace::Late
            } else if c.capacity.is_none_or(|cap| placed < cap) {
                placed += 1;
                ChainPlace::Placed { number: placed }
            } else {
                waiting += 1;
                ChainPlace::Waitlisted { position: waiting }
            };
            ChainLine {
                family,
                key,
                student: cl.student,
                text: cl.text,
                first: cl.first,
                stamp: cl.stamp,
                place,
            }
        })
        .collect();
    rendered.sort_by_key(|l| match l.place {
        ChainPlace::Placed { number } => (0, number),
        ChainPlace::Waitlisted { position } => (1, position),
        ChainPlace::Late => (2, 0),
        ChainPlace::Withdrawn => (3, 0),
    });
    Ok(ChainView {
        chain: c,
        lines: rendered,
    })
}

fn order(a: &(Collapsed, FamilyId, LineKey), b: &(Collapsed, FamilyId, LineKey)) -> Ordering {
    (a.0.first, a.1, a.2).cmp(&(b.0.first, b.1, b.2))
}

// ---------------------------------------------------------------------------------------
// Internals

/// A line key's records collapsed into one line.
#[derive(Debug, Clone)]
struct Collapsed {
    by_student: bool,
    student: Option<StudentId>,
    text: String,
    first: Hlc,
    /// When the line first written was written (the writer's clock), for the close rule.
    first_written_at: i64,
    stamp: Hlc,
    withdrawn: bool,
}

/// Collapse the records at a line key: latest (HLC, then op id) gives text and withdrawal; the
/// earliest `first` stamp gives the place. Only records by a guardian of `family` count.
fn collapse(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
    family: &FamilyId,
    lines: &ObjId,
    key: &str,
) -> Result<Option<Collapsed>, ModelError> {
    let mut latest: Option<(Hlc, ObjId, Collapsed)> = None;
    let mut first: Option<(Hlc, i64)> = None;
    for rec in all_maps_at(doc, lines, key)? {
        let (Some(stamp), Some(first_stamp), Some(written_at)) = (
            read_stamp(doc, &rec, "stamp")?,
            read_stamp(doc, &rec, "first")?,
            get_i64(doc, &rec, "written_at")?,
        ) else {
            continue;
        };
        if !author_of_obj(&rec)
            .is_some_and(|d| guardian_device_at(roster, &d, family, stamp.wall_ms))
        {
            continue;
        }
        // A line is first written no later than any of its records. (The first stamp is the
        // writer's claim, like any HLC: a device can only misplace its own family's line.)
        let first_stamp = first_stamp.min(stamp);
        let first_at = if first_stamp == stamp {
            written_at
        } else {
            first_stamp.wall_ms
        };
        if first.is_none_or(|(f, _)| first_stamp < f) {
            first = Some((first_stamp, first_at));
        }
        let cl = Collapsed {
            by_student: get_str(doc, &rec, "by")?.as_deref() == Some("student"),
            student: get_str(doc, &rec, "student")?.and_then(|s| s.parse().ok()),
            text: get_str(doc, &rec, "text")?.unwrap_or_default(),
            first: first_stamp,
            first_written_at: first_at,
            stamp,
            withdrawn: get_bool(doc, &rec, "withdrawn")?.unwrap_or(false),
        };
        if latest
            .as_ref()
            .is_none_or(|(s, op, _)| (stamp, &rec) > (*s, op))
        {
            latest = Some((stamp, rec, cl));
        }
    }
    Ok(latest.map(|(_, _, mut cl)| {
        if let Some((f, at)) = first {
            cl.first = f;
            cl.first_written_at = at;
        }
        cl
    }))
}

fn chain_obj(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
    chain: ItemId,
) -> Result<(ObjId, Chain), ModelError> {
    let unknown = || ModelError::UnknownId {
        kind: "chain",
        id: chain.to_hex(),
    };
    let chains = top_map(doc, "chains")?;
    let obj = map_at(doc, &chains, &chain.to_hex())?.ok_or_else(unknown)?;
    let c = read_chain_obj(doc, roster, &obj, chain)?.ok_or_else(unknown)?;
    Ok((obj, c))
}

fn read_chain_obj(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
    obj: &ObjId,
    id: ItemId,
) -> Result<Option<Chain>, ModelError> {
    if !author_is_staff(doc, roster, obj)? {
        return Ok(None);
    }
    let mut closes_at = get_i64(doc, obj, "closes_at")?;
    for (v, op) in doc.get_all(obj, "closed_at")? {
        let Value::Scalar(sv) = v else { continue };
        let Some(at) = sv.as_i64() else { continue };
        if author_of_obj(&op).is_some_and(|d| staff_device_at(roster, &d, at)) {
            closes_at = Some(closes_at.map_or(at, |c| c.min(at)));
        }
    }
    let capacity = get_i64(doc, obj, "capacity")?
        .and_then(|c| u32::try_from(c).ok())
        .filter(|c| *c > 0);
    Ok(Some(Chain {
        id,
        title: get_str(doc, obj, "title")?.unwrap_or_default(),
        description: get_str(doc, obj, "description")?.unwrap_or_default(),
        one_per_student: get_bool(doc, obj, "one_per_student")?.unwrap_or(false),
        capacity,
        closes_at,
    }))
}
