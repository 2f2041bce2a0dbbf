//! The parent committee's board and the principal's mailbox.
//!
//! - Committee posts live in the Committee document (`posts`), which only committee members and
//!   staff read and write. A post may answer another post.
//! - The principal's mailbox is a per-family document (`Mailbox(F)`, map `messages`): the
//!   family's guardians write to the principal (admins) and admins answer; class teachers do
//!   not see it.
//!
//! Every item is a map created once by its author under a fresh [`ItemId`]; readers keep only
//! items whose creating change came from a device allowed to write them. Removal wins: a staff
//! post or an admin's answer dated after its device's revocation or its member's removal is
//! left out ([`RosterIndex::written_while_active`]); it stays in the document for audit.
//! Guardians and committee members count only while active.

use automerge::transaction::Transactable;
use automerge::{ObjType, ReadDoc};

use crate::context::Actor;
use crate::entries::was_staff;
use crate::error::{ModelError, check_text};
use crate::identity::DeviceId;
use crate::ids::{FamilyId, IdSource, ItemId, MemberId};
use crate::roster::{Role, RosterIndex};
use crate::values::{authored_items, map_at, same_actor, top_map, visit_trusted_fields};

/// Longest post title, in characters.
pub const MAX_POST_TITLE: usize = 200;
/// Longest post or mailbox message text, in characters.
pub const MAX_POST_TEXT: usize = 10_000;

/// A committee post as its author writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPost<'a> {
    /// Title (may be empty, e.g. for an answer).
    pub title: &'a str,
    /// Body text.
    pub text: &'a str,
    /// The post this one answers, if any.
    pub reply_to: Option<ItemId>,
}

/// A post on the committee board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitteePost {
    /// The post's id.
    pub id: ItemId,
    /// Title.
    pub title: String,
    /// Body text.
    pub text: String,
    /// When it was written (the writer's clock).
    pub at: i64,
    /// The post it answers, if any.
    pub reply_to: Option<ItemId>,
    /// The device that wrote it.
    pub author: DeviceId,
    /// The member behind that device.
    pub member: MemberId,
    /// Whether a staff member wrote it.
    pub from_staff: bool,
}

/// A message in a family's mailbox to the principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxMessage {
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
    /// Whether the principal's office (an admin) wrote it, rather than the family.
    pub from_principal: bool,
}

fn is_committee(roster: &RosterIndex, device: &DeviceId) -> bool {
    roster
        .member_of(device)
        .is_some_and(|m| m.roles.contains(&Role::Committee))
}

fn was_admin(roster: &RosterIndex, device: &DeviceId) -> bool {
    roster
        .devices
        .get(device)
        .and_then(|d| roster.members.get(&d.member))
        .is_some_and(|m| m.roles.contains(&Role::Admin))
}

/// Post to the committee board (committee members and staff): `tx` is on the Committee doc.
pub fn post_to_committee(
    tx: &mut impl Transactable,
    actor: &Actor,
    ids: &mut impl IdSource,
    post: &NewPost<'_>,
) -> Result<ItemId, ModelError> {
    let member = actor.member()?;
    if !member.is_active_staff() && !member.roles.contains(&Role::Committee) {
        return Err(ModelError::NotAllowed(
            "only committee members and staff may post to the committee board".into(),
        ));
    }
    check_text("title", post.title, MAX_POST_TITLE, true)?;
    check_text("text", post.text, MAX_POST_TEXT, false)?;
    let posts = top_map(tx, "posts")?;
    if let Some(parent) = post.reply_to
        && map_at(tx, &posts, &parent.to_hex())?.is_none()
    {
        return Err(ModelError::UnknownId {
            kind: "post",
            id: parent.to_hex(),
        });
    }
    let id = ids.item_id(actor.now);
    let obj = tx.put_object(&posts, id.to_hex(), ObjType::Map)?;
    tx.put(&obj, "title", post.title)?;
    tx.put(&obj, "text", post.text)?;
    tx.put(&obj, "at", actor.now)?;
    if let Some(parent) = post.reply_to {
        tx.put(&obj, "reply_to", parent.to_hex())?;
    }
    Ok(id)
}

/// The committee board's posts, oldest first, keeping only those written by an active
/// committee member or by staff (a staff post only if dated at or before any revocation of
/// its device or removal of its member: removal wins).
pub fn read_committee_posts(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
) -> Result<Vec<CommitteePost>, ModelError> {
    let posts = top_map(doc, "posts")?;
    let mut out = Vec::new();
    for (id, obj, author) in authored_items(doc, &posts) {
        let from_staff = was_staff(roster, &author);
        let committee = is_committee(roster, &author);
        if !from_staff && !committee {
            continue;
        }
        let Some(member) = roster.devices.get(&author).map(|d| d.member) else {
            continue;
        };
        let (mut title, mut text, mut at, mut reply_to) = (String::new(), None, None, None);
        visit_trusted_fields(
            doc,
            &obj,
            |op| same_actor(op, &obj),
            |key, value, _| match key {
                "title" => title = value.as_str().unwrap_or_default().to_owned(),
                "text" => text = value.as_str().map(str::to_owned),
                "at" => at = value.as_i64(),
                "reply_to" => reply_to = value.as_str().and_then(|s| s.parse().ok()),
                _ => {}
            },
        )?;
        if !committee && at.is_none_or(|at| !roster.written_while_active(&author, at)) {
            continue;
        }
        if let (Some(text), Some(at)) = (text, at) {
            out.push(CommitteePost {
                id,
                title,
                text,
                at,
                reply_to,
                author,
                member,
                from_staff,
            });
        }
    }
    out.sort_by_key(|p| (p.at, p.id));
    Ok(out)
}

/// Write to the principal's mailbox of `family` (a guardian of the family, or an admin
/// answering): `tx` is on that family's Mailbox doc.
pub fn send_to_mailbox(
    tx: &mut impl Transactable,
    actor: &Actor,
    ids: &mut impl IdSource,
    family: FamilyId,
    text: &str,
) -> Result<ItemId, ModelError> {
    let member = actor.member()?;
    if !member.roles.contains(&Role::Admin) {
        actor.require_guardian_of(&family)?;
    }
    check_text("text", text, MAX_POST_TEXT, false)?;
    let messages = top_map(tx, "messages")?;
    let id = ids.item_id(actor.now);
    let obj = tx.put_object(&messages, id.to_hex(), ObjType::Map)?;
    tx.put(&obj, "text", text)?;
    tx.put(&obj, "at", actor.now)?;
    Ok(id)
}

/// The messages of `family`'s mailbox, oldest first, keeping only those written by an active
/// guardian of the family or by an admin (an admin's only if dated at or before any
/// revocation of its device or removal of its member: removal wins).
pub fn read_mailbox(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
    family: FamilyId,
) -> Result<Vec<MailboxMessage>, ModelError> {
    let messages = top_map(doc, "messages")?;
    let mut out = Vec::new();
    for (id, obj, author) in authored_items(doc, &messages) {
        let from_principal = was_admin(roster, &author);
        let guardian = roster
            .member_of(&author)
            .is_some_and(|m| m.is_guardian_of(&family));
        if !from_principal && !guardian {
            continue;
        }
        let Some(member) = roster.devices.get(&author).map(|d| d.member) else {
            continue;
        };
        let (mut text, mut at) = (None, None);
        visit_trusted_fields(
            doc,
            &obj,
            |op| same_actor(op, &obj),
            |key, value, _| match key {
                "text" => text = value.as_str().map(str::to_owned),
                "at" => at = value.as_i64(),
                _ => {}
            },
        )?;
        if !guardian && at.is_none_or(|at| !roster.written_while_active(&author, at)) {
            continue;
        }
        if let (Some(text), Some(at)) = (text, at) {
            out.push(MailboxMessage {
                id,
                text,
                at,
                author,
                member,
                from_principal,
            });
        }
    }
    out.sort_by_key(|m| (m.at, m.id));
    Ok(out)
}
