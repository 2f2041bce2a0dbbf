//! Duty and volunteer rosters: traffic-guidance duty, daily supervision, event volunteers.
//!
//! # Where things live
//!
//! - Notebook `duty/<post>`: a post (kind, title, place) with its `shifts/<shift>`, each a
//!   start/end/capacity register like an event slot (see [`crate::events`]).
//! - Lane `claims/<claim>`: a family's claim on a shift. Claims are decided like bookings: a
//!   registrar confirms in claim order while places are free and waitlists the rest
//!   ([`decide_claims`]); decisions are in the notebook (`decisions`, kind `claim`), and the
//!   merged view never shows more holders than places.
//! - Lane `swaps/<half>`: one family's half of a swap with another family: what it gives (a
//!   claim it holds) and what it takes (a claim the partner holds), either of which may be
//!   absent for a one-way handover. Both parties write their half with mirrored arguments
//!   ([`propose_swap`]): a swap needs **both** halves. The registrar executes a matched pair
//!   only if every claim given is **still held** by its giver, by releasing the given claims
//!   and confirming each taking half as the new holder of the shift it takes; otherwise it
//!   records the swap as failed. The verdict is in the notebook (`decisions`, kind `swap`).
//! - Lane `checkins/<id>`: a check-in at a held shift (by a guardian or staff), from 30
//!   minutes before the shift starts until it ends.
//!
//! Hours are derived, never stored: a family's hours are the lengths of the shifts it holds
//! and checked in to.

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc};

use crate::context::Actor;
use crate::error::{ModelError, check_text};
use crate::events::allocation::{
    KIND_CLAIM, LaneRequest, Ledger, Reason, Registrar, Resource, author_is_staff, change_spec,
    check_spec, create_resource, flag_set_by_staff, is_registrar, read_decisions, read_resources,
};
use crate::events::{
    BookingStatus, Decided, Outcome, Slot, SlotBookings, SlotSpec, cancelled_by_family,
};
use crate::hlc::{Hlc, read_stamp};
use crate::ids::{FamilyId, IdSource, ItemId};
use crate::roster::RosterIndex;
use crate::values::{
    author_of_obj, get_i64, get_str, guardian_device_at, keys, map_at, staff_device_at, top_map,
};

/// Longest post title or location, in characters.
pub const MAX_TITLE: usize = 200;
/// Most shifts one post may have.
pub const MAX_SHIFTS: usize = 1000;
/// How long before a shift starts a check-in is accepted, in ms.
pub const CHECK_IN_EARLY_MS: i64 = 30 * 60 * 1000;

const KIND_SWAP: &str = "swap";

/// What kind of duty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DutyKind {
    /// Traffic-guidance duty at the school gate.
    Traffic,
    /// Daily supervision (lunch, after school).
    Supervision,
    /// Volunteering at an event.
    Volunteer,
}

impl DutyKind {
    /// The key stored in documents.
    pub fn as_str(&self) -> &'static str {
        match self {
            DutyKind::Traffic => "traffic",
            DutyKind::Supervision => "supervision",
            DutyKind::Volunteer => "volunteer",
        }
    }

    /// Parse a stored key.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "traffic" => DutyKind::Traffic,
            "supervision" => DutyKind::Supervision,
            "volunteer" => DutyKind::Volunteer,
            _ => return None,
        })
    }
}

/// A new post, as the teacher enters it.
#[derive(Debug, Clone, Copy)]
pub struct NewPost<'a> {
    /// Kind of duty.
    pub kind: DutyKind,
    /// Title shown to families.
    pub title: &'a str,
    /// Where (may be empty).
    pub location: &'a str,
}

/// A post with its shifts' occupancy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    /// The post's id.
    pub id: ItemId,
    /// Kind of duty.
    pub kind: DutyKind,
    /// Title.
    pub title: String,
    /// Location.
    pub location: String,
    /// Whether the post was cancelled (its shifts then count as withdrawn).
    pub cancelled: bool,
    /// Shifts by start time (same shape as event slots).
    pub shifts: Vec<Slot>,
}

/// A family's claim on a shift (or a shift it took through a swap), with its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The claim's id (or the swap half's id when `via_swap`).
    pub id: ItemId,
    /// The family.
    pub family: FamilyId,
    /// The post.
    pub post: ItemId,
    /// The shift.
    pub shift: ItemId,
    /// When it was made.
    pub requested: Hlc,
    /// Whether the family got this shift from another family through a swap.
    pub via_swap: bool,
    /// Where it stands.
    pub status: BookingStatus,
    /// Nearest free shifts of the same post, offered when waitlisted, declined or displaced.
    pub alternatives: Vec<ItemId>,
    /// Whether someone checked in for it.
    pub checked_in: bool,
}

/// Where a swap stands, as the family that wrote one half sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SwapStatus {
    /// Waiting for the partner's half, or for the registrar.
    AwaitingPartner,
    /// Executed: the shifts changed hands.
    Done,
    /// Both halves were there, but a claim given was no longer held by its giver.
    Failed,
    /// Withdrawn by the family before it was executed.
    Withdrawn,
}

/// One family's half of a swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swap {
    /// The half's id.
    pub id: ItemId,
    /// The family that wrote it.
    pub family: FamilyId,
    /// The other family.
    pub partner: FamilyId,
    /// The claim this family gives, if any.
    pub give: Option<ItemId>,
    /// The partner's claim this family takes, if any.
    pub take: Option<ItemId>,
    /// When it was written.
    pub stamp: Hlc,
    /// Where it stands.
    pub status: SwapStatus,
}

/// A registrar's verdict on a matched pair of swap halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwapVerdict {
    /// One half: (family, half id).
    pub a: (FamilyId, ItemId),
    /// The other half.
    pub b: (FamilyId, ItemId),
    /// Whether it was executed (false: a claim given was no longer held).
    pub done: bool,
}

/// What one [`decide_claims`] run wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DutyDecisions {
    /// Claim decisions (including releases and confirmations made by swaps).
    pub decided: Vec<Decided>,
    /// Swap verdicts.
    pub swaps: Vec<SwapVerdict>,
}

/// Duty time served (held shifts with a check-in).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DutyHours {
    /// Total minutes.
    pub minutes: u64,
    /// Number of shifts.
    pub shifts: u32,
}

// ---------------------------------------------------------------------------------------
// Staff writes

/// Create a post with its shifts (staff). Returns the post id and the shift ids in order.
pub fn create_post(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    ids: &mut impl IdSource,
    post: &NewPost<'_>,
    shifts: &[SlotSpec],
) -> Result<(ItemId, Vec<ItemId>), ModelError> {
    actor.require_staff()?;
    check_text("title", post.title, MAX_TITLE, false)?;
    check_text("location", post.location, MAX_TITLE, true)?;
    if shifts.len() > MAX_SHIFTS {
        return Err(ModelError::InvalidInput {
            field: "shifts",
            reason: format!("at most {MAX_SHIFTS} shifts"),
        });
    }
    for s in shifts {
        check_spec(s.start, s.end, s.capacity)?;
    }
    let stamp = Hlc::after(actor.device, actor.now, []);
    let duty = top_map(tx, "duty")?;
    let id = ids.item_id(actor.now);
    let obj = tx.put_object(&duty, id.to_hex(), ObjType::Map)?;
    tx.put(&obj, "kind", post.kind.as_str())?;
    tx.put(&obj, "title", post.title)?;
    tx.put(&obj, "location", post.location)?;
    tx.put(&obj, "stamp", stamp.encode())?;
    let children = tx.put_object(&obj, "shifts", ObjType::Map)?;
    let mut out = Vec::with_capacity(shifts.len());
    for s in shifts {
        let sid = ids.item_id(actor.now);
        create_resource(tx, &children, sid, s.start, s.end, s.capacity, stamp)?;
        out.push(sid);
    }
    Ok((id, out))
}

/// Add a shift to a post (staff).
pub fn add_shift(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    ids: &mut impl IdSource,
    post: ItemId,
    shift: SlotSpec,
) -> Result<ItemId, ModelError> {
    actor.require_staff()?;
    check_spec(shift.start, shift.end, shift.capacity)?;
    let (obj, head) = post_obj(tx, actor.roster, post)?;
    if head.cancelled {
        return Err(ModelError::InvalidState(format!(
            "post {post} is cancelled"
        )));
    }
    let children = map_at(tx, &obj, "shifts")?.ok_or(ModelError::Corrupt {
        what: "post without shifts map".into(),
    })?;
    let id = ids.item_id(actor.now);
    let stamp = Hlc::after(actor.device, actor.now, []);
    create_resource(
        tx,
        &children,
        id,
        shift.start,
        shift.end,
        shift.capacity,
        stamp,
    )?;
    Ok(id)
}

/// Move or narrow a shift (staff); holders of a moved shift, or beyond a narrowed capacity,
/// become displaced and are told.
pub fn change_shift(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    post: ItemId,
    shift: ItemId,
    spec: SlotSpec,
) -> Result<(), ModelError> {
    actor.require_staff()?;
    check_spec(spec.start, spec.end, spec.capacity)?;
    let (obj, _) = post_obj(tx, actor.roster, post)?;
    let s = shift_obj(tx, &obj, shift)?;
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

/// Withdraw a shift (staff): its claims become displaced.
pub fn withdraw_shift(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    post: ItemId,
    shift: ItemId,
) -> Result<(), ModelError> {
    actor.require_staff()?;
    let (obj, _) = post_obj(tx, actor.roster, post)?;
    let s = shift_obj(tx, &obj, shift)?;
    crate::events::allocation::withdraw(tx, &s, actor.device, actor.now)
}

/// Cancel a post (staff): every shift counts as withdrawn.
pub fn cancel_post(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    post: ItemId,
) -> Result<(), ModelError> {
    actor.require_staff()?;
    let (obj, _) = post_obj(tx, actor.roster, post)?;
    tx.put(
        &obj,
        "cancelled",
        Hlc::after(actor.device, actor.now, []).encode(),
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Family writes

/// Claim a shift (a guardian of `family`, in the family's lane). Pending until decided.
pub fn claim_shift(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    notebook: &impl ReadDoc,
    ids: &mut impl IdSource,
    family: FamilyId,
    post: ItemId,
    shift: ItemId,
) -> Result<ItemId, ModelError> {
    actor.require_guardian_of(&family)?;
    let (obj, head) = post_obj(notebook, actor.roster, post)?;
    if head.cancelled {
        return Err(ModelError::InvalidState(format!(
            "post {post} is cancelled"
        )));
    }
    let res = read_resources(notebook, actor.roster, &obj, post, "shifts", false)?
        .into_iter()
        .find(|r| r.id == shift)
        .ok_or_else(|| ModelError::UnknownId {
            kind: "shift",
            id: shift.to_hex(),
        })?;
    if res.withdrawn {
        return Err(ModelError::InvalidState(format!(
            "shift {shift} was withdrawn"
        )));
    }
    if actor.now >= res.start {
        return Err(ModelError::InvalidState(format!(
            "shift {shift} has already started"
        )));
    }
    let mut seen = Vec::new();
    for c in lane_claims(tx, actor.roster, family)? {
        seen.push(c.stamp);
        if c.resource == shift && !c.cancelled {
            return Err(ModelError::InvalidState(format!(
                "the family already claimed shift {shift} (claim {})",
                c.id
            )));
        }
    }
    let stamp = Hlc::after(actor.device, actor.now, &seen);
    let claims = top_map(tx, "claims")?;
    let id = ids.item_id(actor.now);
    let obj = tx.put_object(&claims, id.to_hex(), ObjType::Map)?;
    tx.put(&obj, "post", post.to_hex())?;
    tx.put(&obj, "shift", shift.to_hex())?;
    tx.put(&obj, "stamp", stamp.encode())?;
    Ok(id)
}

/// Give up a claim — or a shift taken through a swap, by its half's id — (a guardian of
/// `family`). Idempotent; the registrar then releases the place.
pub fn cancel_claim(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    family: FamilyId,
    claim: ItemId,
) -> Result<(), ModelError> {
    actor.require_guardian_of(&family)?;
    let obj = match map_at(tx, &top_map(tx, "claims")?, &claim.to_hex())? {
        Some(o) => o,
        None => map_at(tx, &top_map(tx, "swaps")?, &claim.to_hex())?.ok_or_else(|| {
            ModelError::UnknownId {
                kind: "claim",
                id: claim.to_hex(),
            }
        })?,
    };
    set_cancelled(tx, actor, &obj)
}

/// Withdraw this family's half of a swap (a guardian of `family`). A half already executed
/// is not undone (use [`cancel_claim`] to give up the shift it brought).
pub fn withdraw_swap(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    family: FamilyId,
    swap: ItemId,
) -> Result<(), ModelError> {
    actor.require_guardian_of(&family)?;
    let obj = map_at(tx, &top_map(tx, "swaps")?, &swap.to_hex())?.ok_or_else(|| {
        ModelError::UnknownId {
            kind: "swap",
            id: swap.to_hex(),
        }
    })?;
    set_cancelled(tx, actor, &obj)
}

fn set_cancelled(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    obj: &ObjId,
) -> Result<(), ModelError> {
    if tx.get(obj, "cancelled")?.is_none() {
        let seen = read_stamp(tx, obj, "stamp")?;
        tx.put(
            obj,
            "cancelled",
            Hlc::after(actor.device, actor.now, seen.as_ref()).encode(),
        )?;
    }
    Ok(())
}

/// Write this family's half of a swap with `partner` (a guardian of `family`). `give` is a
/// claim this family holds now; `take` a claim the partner holds now (as the notebook shows);
/// at least one is given. The partner writes the mirrored half (its `give` = our `take`, its
/// `take` = our `give`). Nothing changes hands until a registrar finds both halves and checks
/// the claims are still held.
#[allow(clippy::too_many_arguments)]
pub fn propose_swap(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    notebook: &impl ReadDoc,
    ids: &mut impl IdSource,
    family: FamilyId,
    partner: FamilyId,
    give: Option<ItemId>,
    take: Option<ItemId>,
) -> Result<ItemId, ModelError> {
    actor.require_guardian_of(&family)?;
    if partner == family {
        return Err(ModelError::InvalidInput {
            field: "partner",
            reason: "a swap needs another family".into(),
        });
    }
    if !actor.roster.families.contains_key(&partner) {
        return Err(ModelError::UnknownId {
            kind: "family",
            id: partner.to_hex(),
        });
    }
    if give.is_none() && take.is_none() {
        return Err(ModelError::InvalidInput {
            field: "give",
            reason: "a swap gives or takes at least one claim".into(),
        });
    }
    let (_, resources) = load(notebook, actor.roster)?;
    let ledger = Ledger::build(
        &resources,
        &read_decisions(notebook, actor.roster, KIND_CLAIM)?,
    );
    if let Some(g) = give {
        let mine = family_requests(tx, actor.roster, family)?;
        let req = mine
            .iter()
            .find(|r| r.id == g)
            .ok_or_else(|| ModelError::UnknownId {
                kind: "claim",
                id: g.to_hex(),
            })?;
        if ledger.status_for(&resources, req) != BookingStatus::Confirmed {
            return Err(ModelError::InvalidState(format!(
                "claim {g} is not held by this family"
            )));
        }
    }
    let taken = match take {
        Some(t) => {
            let held = ledger.status.get(&(partner, t)) == Some(&BookingStatus::Confirmed);
            let d = ledger
                .effective
                .get(&(partner, t))
                .filter(|_| held)
                .ok_or_else(|| {
                    ModelError::InvalidState(format!("claim {t} is not held by family {partner}"))
                })?;
            Some((d.group, d.resource))
        }
        None => None,
    };
    let swaps = top_map(tx, "swaps")?;
    let mut seen = Vec::new();
    for h in lane_halves(tx, actor.roster, family)? {
        seen.push(h.stamp);
    }
    let stamp = Hlc::after(actor.device, actor.now, &seen);
    let id = ids.item_id(actor.now);
    let obj = tx.put_object(&swaps, id.to_hex(), ObjType::Map)?;
    tx.put(&obj, "partner", partner.to_hex())?;
    tx.put(&obj, "give", give.map(|g| g.to_hex()).unwrap_or_default())?;
    tx.put(&obj, "take", take.map(|t| t.to_hex()).unwrap_or_default())?;
    if let Some((post, shift)) = taken {
        tx.put(&obj, "take_post", post.to_hex())?;
        tx.put(&obj, "take_shift", shift.to_hex())?;
    }
    tx.put(&obj, "stamp", stamp.encode())?;
    Ok(id)
}

/// Check in at a held shift (a guardian of `family`, or staff on its behalf), from
/// [`CHECK_IN_EARLY_MS`] before the shift starts until it ends.
pub fn check_in(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    notebook: &impl ReadDoc,
    ids: &mut impl IdSource,
    family: FamilyId,
    claim: ItemId,
) -> Result<ItemId, ModelError> {
    if actor.require_staff().is_err() {
        actor.require_guardian_of(&family)?;
    }
    let (_, resources) = load(notebook, actor.roster)?;
    let ledger = Ledger::build(
        &resources,
        &read_decisions(notebook, actor.roster, KIND_CLAIM)?,
    );
    let mine = family_requests(tx, actor.roster, family)?;
    let req = mine
        .iter()
        .find(|r| r.id == claim)
        .ok_or_else(|| ModelError::UnknownId {
            kind: "claim",
            id: claim.to_hex(),
        })?;
    if ledger.status_for(&resources, req) != BookingStatus::Confirmed {
        return Err(ModelError::InvalidState(format!(
            "claim {claim} is not held"
        )));
    }
    let res = resources
        .get(&req.resource)
        .ok_or_else(|| ModelError::UnknownId {
            kind: "shift",
            id: req.resource.to_hex(),
        })?;
    if !in_window(res, actor.now) {
        return Err(ModelError::InvalidState(format!(
            "check-in is open from 30 minutes before shift {} until it ends",
            res.id
        )));
    }
    let checkins = top_map(tx, "checkins")?;
    let id = ids.item_id(actor.now);
    let obj = tx.put_object(&checkins, id.to_hex(), ObjType::Map)?;
    tx.put(&obj, "claim", claim.to_hex())?;
    tx.put(&obj, "at", actor.now)?;
    tx.put(
        &obj,
        "stamp",
        Hlc::after(actor.device, actor.now, []).encode(),
    )?;
    Ok(id)
}

fn in_window(res: &Resource, at: i64) -> bool {
    at >= res.start.saturating_sub(CHECK_IN_EARLY_MS) && at <= res.end
}

// ---------------------------------------------------------------------------------------
// Registrar

/// Decide claims and execute swaps (a registrar: a staff device), writing into the notebook
/// `tx`. In one run: cancelled claims are released; matched swap pairs are executed if every
/// claim given is still held (else recorded as failed); then claims are confirmed in claim
/// order (HLC, then id) while places are free and the rest waitlisted.
pub fn decide_claims<L: ReadDoc>(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    ids: &mut impl IdSource,
    lanes: &[(FamilyId, &L)],
) -> Result<DutyDecisions, ModelError> {
    actor.require_staff()?;
    let (_, resources) = load(tx, actor.roster)?;
    let mut requests = Vec::new();
    let mut halves = Vec::new();
    for (family, lane) in lanes {
        requests.extend(family_requests(*lane, actor.roster, *family)?);
        halves.extend(lane_halves(*lane, actor.roster, *family)?);
    }
    let decisions = read_decisions(tx, actor.roster, KIND_CLAIM)?;
    let verdicts = read_verdicts(tx, actor.roster)?;
    let mut reg = Registrar::new(
        KIND_CLAIM,
        actor.device,
        actor.now,
        &resources,
        decisions,
        &requests,
    );
    reg.release_cancelled(ids, &requests);

    // Swaps: every matched pair not yet judged, in a deterministic order.
    let judged: BTreeSet<(FamilyId, ItemId)> = verdicts.iter().flat_map(|v| [v.a, v.b]).collect();
    halves.sort_by_key(|h| (h.stamp, h.family, h.id));
    let mut new_verdicts = Vec::new();
    let mut used: BTreeSet<(FamilyId, ItemId)> = BTreeSet::new();
    for a in &halves {
        if a.cancelled || judged.contains(&(a.family, a.id)) || used.contains(&(a.family, a.id)) {
            continue;
        }
        let Some(b) = halves.iter().find(|b| {
            b.family == a.partner
                && b.partner == a.family
                && b.give == a.take
                && b.take == a.give
                && !b.cancelled
                && !judged.contains(&(b.family, b.id))
                && !used.contains(&(b.family, b.id))
        }) else {
            continue;
        };
        used.insert((a.family, a.id));
        used.insert((b.family, b.id));
        let done = execute_swap(&mut reg, ids, &requests, a, b);
        let (a, b) = if (a.family, a.id) <= (b.family, b.id) {
            (a, b)
        } else {
            (b, a)
        };
        new_verdicts.push((
            SwapVerdict {
                a: (a.family, a.id),
                b: (b.family, b.id),
                done,
            },
            reg.stamp(),
        ));
    }

    reg.fill(ids, &requests, |_| true);
    let decided = reg
        .write(tx)?
        .into_iter()
        .map(|d| Decided {
            request: d.request,
            family: d.family,
            slot: d.resource,
            outcome: d.outcome,
        })
        .collect();
    let map = top_map(tx, "decisions")?;
    for (v, stamp) in &new_verdicts {
        let obj = tx.put_object(&map, ids.item_id(actor.now).to_hex(), ObjType::Map)?;
        tx.put(&obj, "kind", KIND_SWAP)?;
        tx.put(&obj, "a", v.a.1.to_hex())?;
        tx.put(&obj, "a_family", v.a.0.to_hex())?;
        tx.put(&obj, "b", v.b.1.to_hex())?;
        tx.put(&obj, "b_family", v.b.0.to_hex())?;
        tx.put(
            &obj,
            "outcome",
            if v.done { "confirmed" } else { "declined" },
        )?;
        tx.put(&obj, "stamp", stamp.encode())?;
    }
    Ok(DutyDecisions {
        decided,
        swaps: new_verdicts.into_iter().map(|(v, _)| v).collect(),
    })
}

/// Execute a matched pair if every claim given is still held by its giver.
fn execute_swap(
    reg: &mut Registrar<'_>,
    ids: &mut impl IdSource,
    requests: &[LaneRequest],
    a: &HalfRec,
    b: &HalfRec,
) -> bool {
    // Each given claim: (giver's request, taking half as a request for the same shift).
    let mut moves: Vec<(LaneRequest, LaneRequest)> = Vec::new();
    for (giver, taker) in [(a, b), (b, a)] {
        let Some(given) = giver.give else { continue };
        let Some(req) = requests
            .iter()
            .find(|r| r.family == giver.family && r.id == given)
        else {
            return false;
        };
        if reg.ledger.status.get(&(giver.family, given)) != Some(&BookingStatus::Confirmed)
            || req.cancelled
        {
            return false;
        }
        moves.push((
            req.clone(),
            LaneRequest {
                id: taker.id,
                family: taker.family,
                group: req.group,
                resource: req.resource,
                stamp: taker.stamp,
                cancelled: false,
                queueable: false,
            },
        ));
    }
    for (given, taking) in &moves {
        reg.decide(ids, given, Outcome::Released, Reason::Swapped);
        reg.decide(ids, taking, Outcome::Confirmed, Reason::None);
    }
    reg.rebuild();
    true
}

// ---------------------------------------------------------------------------------------
// Reads

/// Every post with its shifts' occupancy.
pub fn read_posts(doc: &impl ReadDoc, roster: &RosterIndex) -> Result<Vec<Post>, ModelError> {
    let (mut heads, resources) = load(doc, roster)?;
    let ledger = Ledger::build(&resources, &read_decisions(doc, roster, KIND_CLAIM)?);
    for p in &mut heads {
        p.shifts = shifts_of(&resources, &ledger, p.id);
    }
    heads.sort_by_key(|p| (p.shifts.first().map(|s| s.start), p.id));
    Ok(heads)
}

/// Who holds and waits for each shift of `post` (from the notebook alone).
pub fn shift_roster(
    notebook: &impl ReadDoc,
    roster: &RosterIndex,
    post: ItemId,
) -> Result<Vec<SlotBookings>, ModelError> {
    post_obj(notebook, roster, post)?;
    let (_, resources) = load(notebook, roster)?;
    let ledger = Ledger::build(&resources, &read_decisions(notebook, roster, KIND_CLAIM)?);
    Ok(shifts_of(&resources, &ledger, post)
        .iter()
        .map(|s| SlotBookings {
            slot: s.id,
            confirmed: ledger.holders.get(&s.id).cloned().unwrap_or_default(),
            waitlist: ledger.waitlists.get(&s.id).cloned().unwrap_or_default(),
            displaced: ledger.displaced.get(&s.id).cloned().unwrap_or_default(),
        })
        .collect())
}

/// A family's claims (and shifts taken through swaps) with their statuses, oldest first.
pub fn family_claims(
    notebook: &impl ReadDoc,
    lane: &impl ReadDoc,
    roster: &RosterIndex,
    family: FamilyId,
) -> Result<Vec<Claim>, ModelError> {
    let (_, resources) = load(notebook, roster)?;
    let ledger = Ledger::build(&resources, &read_decisions(notebook, roster, KIND_CLAIM)?);
    let claim_ids: BTreeSet<ItemId> = lane_claims(lane, roster, family)?
        .iter()
        .map(|c| c.id)
        .collect();
    let checked = checked_in(
        lane,
        roster,
        family,
        &resources,
        &family_requests(lane, roster, family)?,
    )?;
    let mut out: Vec<Claim> = family_requests(lane, roster, family)?
        .into_iter()
        // A swap half shows as a claim once the registrar executed it.
        .filter(|req| {
            claim_ids.contains(&req.id) || ledger.effective.contains_key(&(family, req.id))
        })
        .map(|req| {
            let status = ledger.status_for(&resources, &req);
            let alternatives = ledger.alternatives(&resources, &req, &status);
            Claim {
                id: req.id,
                family,
                post: req.group,
                shift: req.resource,
                requested: req.stamp,
                via_swap: !claim_ids.contains(&req.id),
                checked_in: checked.contains(&req.id),
                status,
                alternatives,
            }
        })
        .collect();
    out.sort_by_key(|c| (c.requested, c.id));
    Ok(out)
}

/// A family's swap halves with their statuses, oldest first.
pub fn family_swaps(
    notebook: &impl ReadDoc,
    lane: &impl ReadDoc,
    roster: &RosterIndex,
    family: FamilyId,
) -> Result<Vec<Swap>, ModelError> {
    let verdicts = read_verdicts(notebook, roster)?;
    let mut out: Vec<Swap> = lane_halves(lane, roster, family)?
        .into_iter()
        .map(|h| {
            let key = (family, h.id);
            let verdict = verdicts
                .iter()
                .filter(|v| v.a == key || v.b == key)
                .map(|v| v.done)
                .max();
            let status = match verdict {
                Some(true) => SwapStatus::Done,
                Some(false) => SwapStatus::Failed,
                None if h.cancelled => SwapStatus::Withdrawn,
                None => SwapStatus::AwaitingPartner,
            };
            Swap {
                id: h.id,
                family,
                partner: h.partner,
                give: h.give,
                take: h.take,
                stamp: h.stamp,
                status,
            }
        })
        .collect();
    out.sort_by_key(|s| (s.stamp, s.id));
    Ok(out)
}

/// A family's duty time: held shifts with a check-in.
pub fn family_hours(
    notebook: &impl ReadDoc,
    lane: &impl ReadDoc,
    roster: &RosterIndex,
    family: FamilyId,
) -> Result<DutyHours, ModelError> {
    let mut hours = DutyHours::default();
    let (_, resources) = load(notebook, roster)?;
    for c in family_claims(notebook, lane, roster, family)? {
        if c.status != BookingStatus::Confirmed || !c.checked_in {
            continue;
        }
        if let Some(r) = resources.get(&c.shift) {
            hours.minutes += u64::try_from((r.end - r.start) / 60_000).unwrap_or(0);
            hours.shifts += 1;
        }
    }
    Ok(hours)
}

/// Duty time per family over the given lanes (staff).
pub fn class_hours<L: ReadDoc>(
    notebook: &impl ReadDoc,
    lanes: &[(FamilyId, &L)],
    roster: &RosterIndex,
) -> Result<BTreeMap<FamilyId, DutyHours>, ModelError> {
    let mut out = BTreeMap::new();
    for (family, lane) in lanes {
        out.insert(*family, family_hours(notebook, *lane, roster, *family)?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Internals

/// One swap half as found in a lane.
#[derive(Debug, Clone)]
struct HalfRec {
    id: ItemId,
    family: FamilyId,
    partner: FamilyId,
    give: Option<ItemId>,
    take: Option<ItemId>,
    take_post: Option<ItemId>,
    take_shift: Option<ItemId>,
    stamp: Hlc,
    cancelled: bool,
}

fn opt_id(doc: &impl ReadDoc, obj: &ObjId, key: &str) -> Result<Option<ItemId>, ModelError> {
    Ok(get_str(doc, obj, key)?.and_then(|s| s.parse().ok()))
}

/// Claims written by a guardian of `family`.
fn lane_claims(
    lane: &impl ReadDoc,
    roster: &RosterIndex,
    family: FamilyId,
) -> Result<Vec<LaneRequest>, ModelError> {
    let claims = top_map(lane, "claims")?;
    let mut out = Vec::new();
    for key in keys(lane, &claims) {
        let Ok(id) = key.parse::<ItemId>() else {
            continue;
        };
        let Some(obj) = map_at(lane, &claims, &key)? else {
            continue;
        };
        let Some(stamp) = read_stamp(lane, &obj, "stamp")? else {
            continue;
        };
        if !author_of_obj(&obj)
            .is_some_and(|d| guardian_device_at(roster, &d, &family, stamp.wall_ms))
        {
            continue;
        }
        let (Some(post), Some(shift)) = (opt_id(lane, &obj, "post")?, opt_id(lane, &obj, "shift")?)
        else {
            continue;
        };
        out.push(LaneRequest {
            id,
            family,
            group: post,
            resource: shift,
            stamp,
            cancelled: cancelled_by_family(lane, roster, &obj, &family)?,
            queueable: true,
        });
    }
    Ok(out)
}

/// Swap halves written by a guardian of `family`.
fn lane_halves(
    lane: &impl ReadDoc,
    roster: &RosterIndex,
    family: FamilyId,
) -> Result<Vec<HalfRec>, ModelError> {
    let swaps = top_map(lane, "swaps")?;
    let mut out = Vec::new();
    for key in keys(lane, &swaps) {
        let Ok(id) = key.parse::<ItemId>() else {
            continue;
        };
        let Some(obj) = map_at(lane, &swaps, &key)? else {
            continue;
        };
        let Some(stamp) = read_stamp(lane, &obj, "stamp")? else {
            continue;
        };
        if !author_of_obj(&obj)
            .is_some_and(|d| guardian_device_at(roster, &d, &family, stamp.wall_ms))
        {
            continue;
        }
        let Some(partner) =
            get_str(lane, &obj, "partner")?.and_then(|s| s.parse::<FamilyId>().ok())
        else {
            continue;
        };
        let (give, take) = (opt_id(lane, &obj, "give")?, opt_id(lane, &obj, "take")?);
        if give.is_none() && take.is_none() {
            continue;
        }
        out.push(HalfRec {
            id,
            family,
            partner,
            give,
            take,
            take_post: opt_id(lane, &obj, "take_post")?,
            take_shift: opt_id(lane, &obj, "take_shift")?,
            stamp,
            cancelled: cancelled_by_family(lane, roster, &obj, &family)?,
        });
    }
    Ok(out)
}

/// Everything in a lane that can hold a shift: claims, and swap halves that take one.
fn family_requests(
    lane: &impl ReadDoc,
    roster: &RosterIndex,
    family: FamilyId,
) -> Result<Vec<LaneRequest>, ModelError> {
    let mut out = lane_claims(lane, roster, family)?;
    for h in lane_halves(lane, roster, family)? {
        if let (Some(_), Some(post), Some(shift)) = (h.take, h.take_post, h.take_shift) {
            out.push(LaneRequest {
                id: h.id,
                family,
                group: post,
                resource: shift,
                stamp: h.stamp,
                cancelled: h.cancelled,
                queueable: false,
            });
        }
    }
    Ok(out)
}

/// Claims (by id) with a valid check-in: by a guardian of the family or staff, inside the
/// shift's check-in window.
fn checked_in(
    lane: &impl ReadDoc,
    roster: &RosterIndex,
    family: FamilyId,
    resources: &BTreeMap<ItemId, Resource>,
    requests: &[LaneRequest],
) -> Result<BTreeSet<ItemId>, ModelError> {
    let checkins = top_map(lane, "checkins")?;
    let mut out = BTreeSet::new();
    for key in keys(lane, &checkins) {
        let Some(obj) = map_at(lane, &checkins, &key)? else {
            continue;
        };
        let (Some(claim), Some(at)) = (opt_id(lane, &obj, "claim")?, get_i64(lane, &obj, "at")?)
        else {
            continue;
        };
        let ok_author = author_of_obj(&obj).is_some_and(|d| {
            guardian_device_at(roster, &d, &family, at) || staff_device_at(roster, &d, at)
        });
        let ok_time = requests
            .iter()
            .find(|r| r.id == claim)
            .and_then(|r| resources.get(&r.resource))
            .is_some_and(|r| in_window(r, at));
        if ok_author && ok_time {
            out.insert(claim);
        }
    }
    Ok(out)
}

/// Registrar-written swap verdicts.
fn read_verdicts(doc: &impl ReadDoc, roster: &RosterIndex) -> Result<Vec<SwapVerdict>, ModelError> {
    let map = top_map(doc, "decisions")?;
    let mut out = Vec::new();
    for key in keys(doc, &map) {
        let Some(obj) = map_at(doc, &map, &key)? else {
            continue;
        };
        if get_str(doc, &obj, "kind")?.as_deref() != Some(KIND_SWAP) {
            continue;
        }
        let Some(stamp) = read_stamp(doc, &obj, "stamp")? else {
            continue;
        };
        if !author_of_obj(&obj).is_some_and(|d| is_registrar(roster, &d, stamp.wall_ms)) {
            continue;
        }
        let fam = |k: &str| -> Result<Option<FamilyId>, ModelError> {
            Ok(get_str(doc, &obj, k)?.and_then(|s| s.parse().ok()))
        };
        let (Some(a), Some(af), Some(b), Some(bf), Some(outcome)) = (
            opt_id(doc, &obj, "a")?,
            fam("a_family")?,
            opt_id(doc, &obj, "b")?,
            fam("b_family")?,
            get_str(doc, &obj, "outcome")?,
        ) else {
            continue;
        };
        out.push(SwapVerdict {
            a: (af, a),
            b: (bf, b),
            done: outcome == "confirmed",
        });
    }
    Ok(out)
}

/// All posts (without shifts) and all shifts as resources.
fn load(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
) -> Result<(Vec<Post>, BTreeMap<ItemId, Resource>), ModelError> {
    let duty = top_map(doc, "duty")?;
    let mut heads = Vec::new();
    let mut resources = BTreeMap::new();
    for key in keys(doc, &duty) {
        let Ok(id) = key.parse::<ItemId>() else {
            continue;
        };
        let Some(obj) = map_at(doc, &duty, &key)? else {
            continue;
        };
        let Some(head) = read_head(doc, roster, &obj, id)? else {
            continue;
        };
        for r in read_resources(doc, roster, &obj, id, "shifts", head.cancelled)? {
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
) -> Result<Option<Post>, ModelError> {
    if !author_is_staff(doc, roster, obj)? {
        return Ok(None);
    }
    let Some(kind) = get_str(doc, obj, "kind")?.and_then(|k| DutyKind::parse(&k)) else {
        return Ok(None);
    };
    Ok(Some(Post {
        id,
        kind,
        title: get_str(doc, obj, "title")?.unwrap_or_default(),
        location: get_str(doc, obj, "location")?.unwrap_or_default(),
        cancelled: flag_set_by_staff(doc, roster, obj, "cancelled")?,
        shifts: Vec::new(),
    }))
}

fn post_obj(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
    post: ItemId,
) -> Result<(ObjId, Post), ModelError> {
    let unknown = || ModelError::UnknownId {
        kind: "post",
        id: post.to_hex(),
    };
    let duty = top_map(doc, "duty")?;
    let obj = map_at(doc, &duty, &post.to_hex())?.ok_or_else(unknown)?;
    let head = read_head(doc, roster, &obj, post)?.ok_or_else(unknown)?;
    Ok((obj, head))
}

fn shift_obj(doc: &impl ReadDoc, post_obj: &ObjId, shift: ItemId) -> Result<ObjId, ModelError> {
    let unknown = || ModelError::UnknownId {
        kind: "shift",
        id: shift.to_hex(),
    };
    let children = map_at(doc, post_obj, "shifts")?.ok_or_else(unknown)?;
    map_at(doc, &children, &shift.to_hex())?.ok_or_else(unknown)
}

fn shifts_of(resources: &BTreeMap<ItemId, Resource>, ledger: &Ledger, post: ItemId) -> Vec<Slot> {
    let mut shifts: Vec<Slot> = resources
        .values()
        .filter(|r| r.group == post)
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
    shifts.sort_by_key(|s| (s.start, s.id));
    shifts
}

fn count<T>(v: Option<&Vec<T>>) -> u32 {
    v.map_or(0, |v| u32::try_from(v.len()).unwrap_or(u32::MAX))
}
