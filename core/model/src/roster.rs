//! The class roster: members, roles, families, students and device keys — the root of trust.
//!
//! Only staff write the roster — plus exactly one change per invite, authored by the invite's
//! key, that redeems it (see [`crate::invite`]) — so membership is itself signed history. A class is founded by
//! one device key: the founding change carries a nonce in its commit message
//! (`homeroom-class:<hex>`), and the class id is `BLAKE3("homeroom/class/v1" ‖ key ‖ nonce)`
//! truncated to 16 bytes ([`class_id_for`]). Anyone can check that a roster belongs to its
//! class id without trusting whoever sent it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Automerge, ObjType, ReadDoc};
use serde::{Deserialize, Serialize};

use crate::document::{DocId, DocKind};
use crate::error::{ModelError, check_text};
use crate::identity::{DeviceId, author_of};
use crate::ids::{ClassId, FamilyId, MemberId, StudentId};
use crate::invite::{InviteId, InviteRecord, InviteRole, Invites, member_for_invite};
use crate::values::{get_i64, get_str, keys, map_at, top_map};

/// Key prefix of an invite inside the roster's `class` map (`invite/<public key hex>`). Each
/// invite has its own key, so concurrent invites by two staff devices never conflict.
pub const INVITE_KEY_PREFIX: &str = "invite/";

/// Commit-message prefix of the founding change.
pub const FOUNDING_PREFIX: &str = "homeroom-class:";

/// Longest display name, in characters.
pub const MAX_NAME: usize = 120;

/// The class id that `founder` and `nonce` commit to.
pub fn class_id_for(founder: &DeviceId, nonce: &[u8; 16]) -> ClassId {
    let mut h = blake3::Hasher::new();
    h.update(b"homeroom/class/v1\0");
    h.update(&founder.0);
    h.update(nonce);
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.finalize().as_bytes()[..16]);
    ClassId(id)
}

/// Parse a founding change's commit message into its nonce.
pub fn founding_nonce(message: &str) -> Option<[u8; 16]> {
    let hex_part = message.strip_prefix(FOUNDING_PREFIX)?;
    let mut nonce = [0u8; 16];
    hex::decode_to_slice(hex_part, &mut nonce).ok()?;
    Some(nonce)
}

/// A member's role in a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// The class's head teacher.
    HeadTeacher,
    /// A subject teacher.
    SubjectTeacher,
    /// A school admin or the principal: staff, and reader of families' mailboxes.
    Admin,
    /// A guardian of one family.
    Guardian,
    /// A parent-committee member (also a guardian).
    Committee,
}

impl Role {
    /// The key used inside the roster document.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::HeadTeacher => "head_teacher",
            Role::SubjectTeacher => "subject_teacher",
            Role::Admin => "admin",
            Role::Guardian => "guardian",
            Role::Committee => "committee",
        }
    }

    /// Parse a roster key.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "head_teacher" => Role::HeadTeacher,
            "subject_teacher" => Role::SubjectTeacher,
            "admin" => Role::Admin,
            "guardian" => Role::Guardian,
            "committee" => Role::Committee,
            _ => return None,
        })
    }

    /// Whether the role is staff (teachers and admins).
    pub fn is_staff(&self) -> bool {
        matches!(self, Role::HeadTeacher | Role::SubjectTeacher | Role::Admin)
    }
}

/// A member as the roster records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's id.
    pub id: MemberId,
    /// Display name.
    pub name: String,
    /// Roles held.
    pub roles: BTreeSet<Role>,
    /// The family, for guardians.
    pub family: Option<FamilyId>,
    /// When the member was removed (custody change, left the class), if they were.
    pub removed_at: Option<i64>,
}

impl Member {
    /// Whether the member is staff and not removed.
    pub fn is_active_staff(&self) -> bool {
        self.removed_at.is_none() && self.roles.iter().any(Role::is_staff)
    }

    /// Whether the member is an active guardian of `family`.
    pub fn is_guardian_of(&self, family: &FamilyId) -> bool {
        self.removed_at.is_none()
            && self.family.as_ref() == Some(family)
            && (self.roles.contains(&Role::Guardian) || self.roles.contains(&Role::Committee))
    }
}

/// A device enrolled in the roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The device key.
    pub id: DeviceId,
    /// The member it belongs to.
    pub member: MemberId,
    /// When it was added.
    pub added_at: i64,
    /// When it was revoked (lost phone), if it was.
    pub revoked_at: Option<i64>,
}

/// A family with its students.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// The family's id.
    pub id: FamilyId,
    /// Display name (e.g. the surname).
    pub name: String,
    /// Students by id, with their names.
    pub students: BTreeMap<StudentId, String>,
}

/// A read-only index of a roster document: who is who, and what each device may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RosterIndex {
    /// The class name.
    pub class_name: String,
    /// Members by id.
    pub members: BTreeMap<MemberId, Member>,
    /// Devices by key.
    pub devices: HashMap<DeviceId, Device>,
    /// Families by id.
    pub families: BTreeMap<FamilyId, Family>,
    /// When the class became a read-only archive (its term ended), if it did.
    pub archived_at: Option<i64>,
    /// The class that continues this one next term.
    pub next_term: Option<ClassId>,
    /// The class this one continues from last term.
    pub previous_term: Option<ClassId>,
    /// Invites by their public key (see [`crate::invite`]).
    pub invites: Invites,
}

impl RosterIndex {
    /// Read the index from a roster document. Entries with malformed ids are skipped (they
    /// can only come from a staff device, and skipping them grants nothing).
    pub fn read(doc: &impl ReadDoc) -> Result<Self, ModelError> {
        let mut index = RosterIndex::default();
        let class = top_map(doc, "class")?;
        index.class_name = get_str(doc, &class, "name")?.unwrap_or_default();
        index.archived_at = get_i64(doc, &class, "archived_at")?;
        index.next_term = get_str(doc, &class, "next_term")?.and_then(|c| c.parse().ok());
        index.previous_term = get_str(doc, &class, "previous_term")?.and_then(|c| c.parse().ok());
        for key in keys(doc, &class) {
            let Some(Ok(id)) = key
                .strip_prefix(INVITE_KEY_PREFIX)
                .map(str::parse::<InviteId>)
            else {
                continue;
            };
            let Some(obj) = map_at(doc, &class, &key)? else {
                continue;
            };
            let kind = get_str(doc, &obj, "role")?.unwrap_or_default();
            let family = get_str(doc, &obj, "family")?.and_then(|f| f.parse().ok());
            let member = get_str(doc, &obj, "member")?.and_then(|m| m.parse().ok());
            let Some(role) = InviteRole::from_parts(&kind, family, member) else {
                continue;
            };
            index.invites.insert(
                id,
                InviteRecord {
                    id,
                    role,
                    expires_at: get_i64(doc, &obj, "expires_at")?.unwrap_or(0),
                    created_by: get_str(doc, &obj, "created_by")?.and_then(|d| d.parse().ok()),
                    used_by: get_str(doc, &obj, "used_by")?.and_then(|d| d.parse().ok()),
                    used_at: get_i64(doc, &obj, "used_at")?,
                },
            );
        }

        let members = top_map(doc, "members")?;
        for key in keys(doc, &members) {
            let Ok(id) = key.parse::<MemberId>() else {
                continue;
            };
            let Some(obj) = map_at(doc, &members, &key)? else {
                continue;
            };
            let mut roles = BTreeSet::new();
            if let Some(r) = map_at(doc, &obj, "roles")? {
                for role in keys(doc, &r) {
                    if let Some(role) = Role::parse(&role) {
                        roles.insert(role);
                    }
                }
            }
            let family = get_str(doc, &obj, "family")?.and_then(|f| f.parse().ok());
            index.members.insert(
                id,
                Member {
                    id,
                    name: get_str(doc, &obj, "name")?.unwrap_or_default(),
                    roles,
                    family,
                    removed_at: get_i64(doc, &obj, "removed_at")?,
                },
            );
        }

        let devices = top_map(doc, "devices")?;
        for key in keys(doc, &devices) {
            let Ok(id) = key.parse::<DeviceId>() else {
                continue;
            };
            let Some(obj) = map_at(doc, &devices, &key)? else {
                continue;
            };
            let Some(member) = get_str(doc, &obj, "member")?.and_then(|m| m.parse().ok()) else {
                continue;
            };
            index.devices.insert(
                id,
                Device {
                    id,
                    member,
                    added_at: get_i64(doc, &obj, "added_at")?.unwrap_or(0),
                    revoked_at: get_i64(doc, &obj, "revoked_at")?,
                },
            );
        }

        let families = top_map(doc, "families")?;
        for key in keys(doc, &families) {
            let Ok(id) = key.parse::<FamilyId>() else {
                continue;
            };
            let Some(obj) = map_at(doc, &families, &key)? else {
                continue;
            };
            let mut students = BTreeMap::new();
            if let Some(s) = map_at(doc, &obj, "students")? {
                for sk in keys(doc, &s) {
                    let Ok(sid) = sk.parse::<StudentId>() else {
                        continue;
                    };
                    let name = map_at(doc, &s, &sk)?
                        .map(|o| get_str(doc, &o, "name"))
                        .transpose()?
                        .flatten()
                        .unwrap_or_default();
                    students.insert(sid, name);
                }
            }
            index.families.insert(
                id,
                Family {
                    id,
                    name: get_str(doc, &obj, "name")?.unwrap_or_default(),
                    students,
                },
            );
        }
        Ok(index)
    }

    /// The active member behind an active (not revoked) device.
    pub fn member_of(&self, device: &DeviceId) -> Option<&Member> {
        let d = self.devices.get(device)?;
        if d.revoked_at.is_some() {
            return None;
        }
        let m = self.members.get(&d.member)?;
        if m.removed_at.is_some() {
            return None;
        }
        Some(m)
    }

    /// When `device` stopped being active (its revocation or its member's removal, whichever
    /// came first); `None` if it is active or unknown.
    pub fn inactive_since(&self, device: &DeviceId) -> Option<i64> {
        let d = self.devices.get(device)?;
        let removed = self.members.get(&d.member).and_then(|m| m.removed_at);
        match (d.revoked_at, removed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether an item `device` wrote, dated `time` (its own stamp, ms), was made while the
    /// device and its member were active: dated at or before the revocation or removal
    /// ([`RosterIndex::inactive_since`], [`dated_at_or_before`]), or neither happened. An
    /// unknown device counts as active here; callers check the author's role separately.
    pub fn written_while_active(&self, device: &DeviceId, time: i64) -> bool {
        self.inactive_since(device)
            .is_none_or(|since| dated_at_or_before(time, since))
    }

    /// Whether `device` is an active staff device.
    pub fn is_staff(&self, device: &DeviceId) -> bool {
        self.member_of(device).is_some_and(Member::is_active_staff)
    }

    /// Whether `device` may read document `kind` of this class.
    pub fn can_read(&self, device: &DeviceId, kind: &DocKind) -> bool {
        let Some(m) = self.member_of(device) else {
            return false;
        };
        let staff = m.is_active_staff();
        let admin = m.roles.contains(&Role::Admin);
        match kind {
            DocKind::Roster | DocKind::Notebook | DocKind::Board(_) => true,
            DocKind::Lane(f) => staff || m.is_guardian_of(f),
            DocKind::Committee => staff || m.roles.contains(&Role::Committee),
            DocKind::Mailbox(f) => admin || m.is_guardian_of(f),
            DocKind::Ballots => staff,
        }
    }

    /// Whether `device` may write document `kind` of this class. Nobody writes an archived
    /// class (a past term); see [`RosterIndex::can_write_dated`] for changes made before the
    /// archive.
    pub fn can_write(&self, device: &DeviceId, kind: &DocKind) -> bool {
        self.archived_at.is_none() && self.may_write_open(device, kind)
    }

    /// Whether a change by `device` to document `kind`, dated `time` (the change's own time,
    /// ms since the Unix epoch), is within the author's write right: as
    /// [`RosterIndex::can_write`], except that in an archived class a change dated at or before
    /// `archived_at` ([`dated_at_or_before`], the rule removal uses with
    /// [`RosterIndex::inactive_since`]) is accepted if its author may write the document. A
    /// post written just before the term was rolled over, that reaches a replica after the
    /// archive change, is thus kept. This trusts the author's clock, only for edits before the
    /// archive time: a writer could backdate an edit, which they could also have made before
    /// the archive.
    pub fn can_write_dated(&self, device: &DeviceId, kind: &DocKind, time: i64) -> bool {
        self.archived_at
            .is_none_or(|archived| dated_at_or_before(time, archived))
            && self.may_write_open(device, kind)
    }

    /// Whether `device` may write document `kind` of this class, leaving the archive aside.
    fn may_write_open(&self, device: &DeviceId, kind: &DocKind) -> bool {
        let Some(m) = self.member_of(device) else {
            return false;
        };
        let staff = m.is_active_staff();
        let admin = m.roles.contains(&Role::Admin);
        let guardian_any = m.family.is_some()
            && (m.roles.contains(&Role::Guardian) || m.roles.contains(&Role::Committee));
        match kind {
            DocKind::Roster | DocKind::Notebook => staff,
            DocKind::Lane(f) | DocKind::Board(f) => staff || m.is_guardian_of(f),
            DocKind::Committee => staff || m.roles.contains(&Role::Committee),
            DocKind::Mailbox(f) => admin || m.is_guardian_of(f),
            DocKind::Ballots => guardian_any,
        }
    }

    /// Every document of `class` that `device` may read.
    pub fn readable_docs(&self, class: ClassId, device: &DeviceId) -> Vec<DocId> {
        let mut kinds = vec![
            DocKind::Roster,
            DocKind::Notebook,
            DocKind::Committee,
            DocKind::Ballots,
        ];
        for f in self.families.keys() {
            kinds.push(DocKind::Lane(*f));
            kinds.push(DocKind::Board(*f));
            kinds.push(DocKind::Mailbox(*f));
        }
        kinds
            .into_iter()
            .filter(|k| self.can_read(device, k))
            .map(|k| DocId::new(class, k))
            .collect()
    }
}

/// Whether something dated `time` (a change's Automerge time, or an item's own stamp, ms)
/// counts as made at or before `cutoff` (a removal, a revocation or the archive of the class):
/// the one rule by which an author's edit that reaches a replica after such a roster change is
/// still judged by the right the author had when they made it. Both dates are the writers'
/// clocks.
pub fn dated_at_or_before(time: i64, cutoff: i64) -> bool {
    time <= cutoff
}

/// The founder and class id recorded in a roster document, if it has been founded: found by
/// scanning for the founding change (whose message carries the nonce).
pub fn founding_of(doc: &Automerge) -> Option<(DeviceId, ClassId)> {
    doc.get_changes(&[]).iter().find_map(|c| {
        let nonce = founding_nonce(c.message()?)?;
        let founder = author_of(c.actor_id())?;
        Some((founder, class_id_for(&founder, &nonce)))
    })
}

/// Write the founding content of a roster: the class name and the founder as head teacher with
/// their device. Commit it with [`founding_commit`] so the nonce lands in the change.
pub fn write_founding(
    tx: &mut impl Transactable,
    class_name: &str,
    founder: &DeviceId,
    founder_member: MemberId,
    founder_name: &str,
    now: i64,
) -> Result<(), ModelError> {
    check_text("class_name", class_name, MAX_NAME, false)?;
    let class = top_map(tx, "class")?;
    tx.put(&class, "name", class_name)?;
    tx.put(&class, "created_at", now)?;
    add_member(tx, founder_member, founder_name, &[Role::HeadTeacher], None)?;
    add_device(tx, *founder, founder_member, now)?;
    Ok(())
}

/// Commit options for the founding change: the nonce in the message.
pub fn founding_commit(nonce: &[u8; 16], now: i64) -> CommitOptions {
    CommitOptions::default()
        .with_message(format!("{FOUNDING_PREFIX}{}", hex::encode(nonce)))
        .with_time(now)
}

/// End this class's term: it becomes a read-only archive continued by `next_term`.
pub fn archive(tx: &mut impl Transactable, next_term: ClassId, now: i64) -> Result<(), ModelError> {
    let class = top_map(tx, "class")?;
    tx.put(&class, "next_term", next_term.to_hex())?;
    tx.put(&class, "archived_at", now)?;
    Ok(())
}

/// Record that this class continues `previous` (last term's class).
pub fn link_previous_term(tx: &mut impl Transactable, previous: ClassId) -> Result<(), ModelError> {
    let class = top_map(tx, "class")?;
    tx.put(&class, "previous_term", previous.to_hex())?;
    Ok(())
}

/// Add (or overwrite) a member.
pub fn add_member(
    tx: &mut impl Transactable,
    id: MemberId,
    name: &str,
    roles: &[Role],
    family: Option<FamilyId>,
) -> Result<(), ModelError> {
    check_text("display_name", name, MAX_NAME, false)?;
    if roles.is_empty() {
        return Err(ModelError::InvalidInput {
            field: "roles",
            reason: "a member needs at least one role".into(),
        });
    }
    let guardian = roles
        .iter()
        .any(|r| matches!(r, Role::Guardian | Role::Committee));
    if guardian && family.is_none() {
        return Err(ModelError::InvalidInput {
            field: "family",
            reason: "a guardian must belong to a family".into(),
        });
    }
    let members = top_map(tx, "members")?;
    let obj = tx.put_object(&members, id.to_hex(), ObjType::Map)?;
    tx.put(&obj, "name", name)?;
    let r = tx.put_object(&obj, "roles", ObjType::Map)?;
    for role in roles {
        tx.put(&r, role.as_str(), true)?;
    }
    if let Some(f) = family {
        tx.put(&obj, "family", f.to_hex())?;
    }
    Ok(())
}

/// Mark a member removed at `now` (custody change, left the class). Their devices stop being
/// able to read or write.
pub fn remove_member(tx: &mut impl Transactable, id: MemberId, now: i64) -> Result<(), ModelError> {
    let members = top_map(tx, "members")?;
    let obj = map_at(tx, &members, &id.to_hex())?.ok_or_else(|| ModelError::UnknownId {
        kind: "member",
        id: id.to_hex(),
    })?;
    tx.put(&obj, "removed_at", now)?;
    Ok(())
}

/// Enroll a device for a member.
pub fn add_device(
    tx: &mut impl Transactable,
    device: DeviceId,
    member: MemberId,
    now: i64,
) -> Result<(), ModelError> {
    let devices = top_map(tx, "devices")?;
    let obj = tx.put_object(&devices, device.to_hex(), ObjType::Map)?;
    tx.put(&obj, "member", member.to_hex())?;
    tx.put(&obj, "added_at", now)?;
    Ok(())
}

/// Revoke a device (lost phone) at `now`.
pub fn revoke_device(
    tx: &mut impl Transactable,
    device: DeviceId,
    now: i64,
) -> Result<(), ModelError> {
    let devices = top_map(tx, "devices")?;
    let obj = map_at(tx, &devices, &device.to_hex())?.ok_or_else(|| ModelError::UnknownId {
        kind: "device",
        id: device.to_hex(),
    })?;
    tx.put(&obj, "revoked_at", now)?;
    Ok(())
}

/// Record an invite (staff): its role, expiry (ms since the Unix epoch) and creator.
pub fn write_invite(
    tx: &mut impl Transactable,
    invite: InviteId,
    role: InviteRole,
    expires_at: i64,
    created_by: DeviceId,
    now: i64,
) -> Result<(), ModelError> {
    let class = top_map(tx, "class")?;
    let obj = tx.put_object(
        &class,
        format!("{INVITE_KEY_PREFIX}{}", invite.to_hex()),
        ObjType::Map,
    )?;
    tx.put(&obj, "role", role.kind_str())?;
    if let Some(f) = role.family() {
        tx.put(&obj, "family", f.to_hex())?;
    }
    if let InviteRole::AnotherDevice { member } = role {
        tx.put(&obj, "member", member.to_hex())?;
    }
    tx.put(&obj, "expires_at", expires_at)?;
    tx.put(&obj, "created_by", created_by.to_hex())?;
    tx.put(&obj, "created_at", now)?;
    Ok(())
}

/// Redeem an invite (the content of the change authored by the invite key): enroll `device`
/// — for a role invite as a new member named `name` — and mark the invite used.
pub fn redeem_invite(
    tx: &mut impl Transactable,
    invite: &InviteRecord,
    device: DeviceId,
    name: &str,
    now: i64,
) -> Result<MemberId, ModelError> {
    let member = match invite.role {
        InviteRole::AnotherDevice { member } => member,
        role => {
            let member = member_for_invite(&invite.id);
            add_member(tx, member, name, &role.member_roles(), role.family())?;
            member
        }
    };
    add_device(tx, device, member, now)?;
    let class = top_map(tx, "class")?;
    let obj = map_at(
        tx,
        &class,
        &format!("{INVITE_KEY_PREFIX}{}", invite.id.to_hex()),
    )?
    .ok_or_else(|| ModelError::UnknownId {
        kind: "invite",
        id: invite.id.to_hex(),
    })?;
    tx.put(&obj, "used_by", device.to_hex())?;
    tx.put(&obj, "used_at", now)?;
    Ok(member)
}

/// Add a family.
pub fn add_family(tx: &mut impl Transactable, id: FamilyId, name: &str) -> Result<(), ModelError> {
    check_text("family_name", name, MAX_NAME, false)?;
    let families = top_map(tx, "families")?;
    let obj = tx.put_object(&families, id.to_hex(), ObjType::Map)?;
    tx.put(&obj, "name", name)?;
    tx.put_object(&obj, "students", ObjType::Map)?;
    Ok(())
}

/// Add a student to a family.
pub fn add_student(
    tx: &mut impl Transactable,
    family: FamilyId,
    id: StudentId,
    name: &str,
) -> Result<(), ModelError> {
    check_text("student_name", name, MAX_NAME, false)?;
    let families = top_map(tx, "families")?;
    let fam = map_at(tx, &families, &family.to_hex())?.ok_or_else(|| ModelError::UnknownId {
        kind: "family",
        id: family.to_hex(),
    })?;
    let students = map_at(tx, &fam, "students")?.ok_or(ModelError::Corrupt {
        what: "family without students map".into(),
    })?;
    let s = tx.put_object(&students, id.to_hex(), ObjType::Map)?;
    tx.put(&s, "name", name)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genesis::genesis_document;
    use crate::identity::{DeviceKey, actor_for};

    #[test]
    fn founding_commits_to_class_id_and_grants_access() {
        let key = DeviceKey::from_secret([5; 32]);
        let dev = key.device_id();
        let nonce = [9u8; 16];
        let class = class_id_for(&dev, &nonce);
        let doc_id = DocId::new(class, DocKind::Roster);
        let mut doc = genesis_document(&doc_id, actor_for(&dev, [1; 8]));
        let mut tx = doc.transaction();
        write_founding(&mut tx, "Class 3B", &dev, MemberId([1; 8]), "Ms Li", 1000).unwrap();
        let fam = FamilyId([2; 8]);
        add_family(&mut tx, fam, "Wang").unwrap();
        add_member(
            &mut tx,
            MemberId([3; 8]),
            "Mr Wang",
            &[Role::Guardian],
            Some(fam),
        )
        .unwrap();
        let parent = DeviceKey::from_secret([6; 32]).device_id();
        add_device(&mut tx, parent, MemberId([3; 8]), 1001).unwrap();
        tx.commit_with(founding_commit(&nonce, 1000));

        assert_eq!(founding_of(&doc), Some((dev, class)));
        let idx = RosterIndex::read(&doc).unwrap();
        assert_eq!(idx.class_name, "Class 3B");
        assert!(idx.is_staff(&dev));
        assert!(idx.can_write(&dev, &DocKind::Notebook));
        assert!(!idx.can_write(&parent, &DocKind::Notebook));
        assert!(idx.can_read(&parent, &DocKind::Notebook));
        assert!(idx.can_write(&parent, &DocKind::Lane(fam)));
        assert!(!idx.can_read(&parent, &DocKind::Lane(FamilyId([7; 8]))));
        assert!(!idx.can_read(&parent, &DocKind::Mailbox(FamilyId([7; 8]))));
        assert!(!idx.can_read(&parent, &DocKind::Ballots));
        assert!(idx.can_write(&parent, &DocKind::Ballots));

        // Revoking the device removes every right.
        let mut tx = doc.transaction();
        revoke_device(&mut tx, parent, 2000).unwrap();
        tx.commit();
        let idx = RosterIndex::read(&doc).unwrap();
        assert!(!idx.can_read(&parent, &DocKind::Notebook));
        assert!(idx.readable_docs(class, &parent).is_empty());
    }

    #[test]
    fn an_archived_class_accepts_only_edits_dated_before_the_archive() {
        let key = DeviceKey::from_secret([5; 32]);
        let dev = key.device_id();
        let nonce = [9u8; 16];
        let class = class_id_for(&dev, &nonce);
        let mut doc =
            genesis_document(&DocId::new(class, DocKind::Roster), actor_for(&dev, [1; 8]));
        let mut tx = doc.transaction();
        write_founding(&mut tx, "Class 3B", &dev, MemberId([1; 8]), "Ms Li", 1000).unwrap();
        let fam = FamilyId([2; 8]);
        add_family(&mut tx, fam, "Wang").unwrap();
        add_member(
            &mut tx,
            MemberId([3; 8]),
            "Mr Wang",
            &[Role::Guardian],
            Some(fam),
        )
        .unwrap();
        let parent = DeviceKey::from_secret([6; 32]).device_id();
        add_device(&mut tx, parent, MemberId([3; 8]), 1001).unwrap();
        tx.commit_with(founding_commit(&nonce, 1000));
        let open = RosterIndex::read(&doc).unwrap();
        assert!(open.can_write_dated(&dev, &DocKind::Notebook, i64::MAX));

        let mut tx = doc.transaction();
        archive(&mut tx, ClassId([8; 16]), 5000).unwrap();
        tx.commit();
        let idx = RosterIndex::read(&doc).unwrap();
        assert!(!idx.can_write(&dev, &DocKind::Notebook));
        assert!(idx.can_write_dated(&dev, &DocKind::Notebook, 4999));
        assert!(idx.can_write_dated(&dev, &DocKind::Notebook, 5000));
        assert!(!idx.can_write_dated(&dev, &DocKind::Notebook, 5001));
        // Only the right the author had: a guardian never wrote the notebook.
        assert!(idx.can_write_dated(&parent, &DocKind::Lane(fam), 4000));
        assert!(!idx.can_write_dated(&parent, &DocKind::Notebook, 4000));
        // A revoked device gets nothing from this rule (removal has its own).
        let mut tx = doc.transaction();
        revoke_device(&mut tx, parent, 3000).unwrap();
        tx.commit();
        let idx = RosterIndex::read(&doc).unwrap();
        assert!(!idx.can_write_dated(&parent, &DocKind::Lane(fam), 2000));
    }

    #[test]
    fn bad_member_input_is_a_typed_error() {
        let doc_id = DocId::new(ClassId([1; 16]), DocKind::Roster);
        let mut doc = genesis_document(&doc_id, actor_for(&DeviceId([1; 32]), [1; 8]));
        let mut tx = doc.transaction();
        assert!(matches!(
            add_member(&mut tx, MemberId([1; 8]), "", &[Role::HeadTeacher], None),
            Err(ModelError::InvalidInput {
                field: "display_name",
                ..
            })
        ));
        assert!(matches!(
            add_member(&mut tx, MemberId([1; 8]), "x", &[Role::Guardian], None),
            Err(ModelError::InvalidInput {
                field: "family",
                ..
            })
        ));
        assert!(matches!(
            add_student(&mut tx, FamilyId([9; 8]), StudentId([1; 8]), "Ann"),
            Err(ModelError::UnknownId { kind: "family", .. })
        ));
    }
}
