//! Invites on the device: creating them (staff), joining with a code, removing members, and
//! the audit of refused changes. See docs/invites.md.

use std::net::SocketAddr;
use std::time::Duration;

use homeroom_core::error::check_text;
use homeroom_core::invite::{self as core_invite, InviteCode};
use homeroom_core::roster::{self, MAX_NAME};
use homeroom_core::{ClassId, DeviceId, DocId, DocKind, MemberId, ModelError};
use homeroom_protocol::RejectReason;
use homeroom_store::{RejectedChange, Store};
use homeroom_sync::{NodeEvent, SyncNode};

pub use homeroom_core::invite::{InviteError, InviteRole};

use crate::connection::RelayTarget;
use crate::device::{Device, DeviceEvent, Inner};
use crate::error::ClientError;
use crate::ids::{now_ms, random_bytes};

/// Store meta key of the pending joins.
const JOINS_KEY: &str = "invite/joins";
/// Store meta key of the remembered relay target.
const RELAY_KEY: &str = "invite/relay-target";

/// A created invite, to show as text and as a QR code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// The class.
    pub class: ClassId,
    /// What it grants.
    pub role: InviteRole,
    /// The text code (also what the QR encodes): `HR` + uppercase base32, which fits QR
    /// alphanumeric mode.
    pub code: String,
    /// The QR payload: the same string as `code`.
    pub qr_payload: String,
    /// Expiry, ms since the Unix epoch (whole seconds).
    pub expires_at: i64,
    /// The invite's public key (its roster entry is `class/invite/<hex>`).
    pub id: DeviceId,
}

/// Why a join did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinFailure {
    /// Someone already joined with this invite.
    AlreadyUsed,
    /// The invite expired before it was redeemed.
    Expired,
    /// The relay's roster has no such invite (withdrawn, wrong class or relay).
    Unknown,
    /// Anything else the relay said.
    Refused(String),
}

impl JoinFailure {
    fn from_reason(reason: RejectReason) -> Self {
        match reason {
            RejectReason::InviteUsed => JoinFailure::AlreadyUsed,
            RejectReason::InviteExpired => JoinFailure::Expired,
            RejectReason::InviteUnknown => JoinFailure::Unknown,
            other => JoinFailure::Refused(format!("{other:?}")),
        }
    }
}

impl std::fmt::Display for JoinFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinFailure::AlreadyUsed => f.write_str("invite already used"),
            JoinFailure::Expired => f.write_str("invite expired"),
            JoinFailure::Unknown => f.write_str("the class does not know this invite"),
            JoinFailure::Refused(r) => write!(f, "the relay refused the join: {r}"),
        }
    }
}

/// This device's standing in a class, as [`Device::classes`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// Enrolled: an active device of an active member.
    Member,
    /// A join is recorded and waits for the relay.
    Joining,
    /// The join failed.
    JoinFailed(JoinFailure),
    /// This device was revoked or its member removed.
    Removed,
}

/// A pending join as stored: class ‖ secret ‖ name length (u16 BE) ‖ name.
struct StoredJoin {
    class: ClassId,
    secret: [u8; 16],
    name: String,
}

fn encode_joins(joins: &[StoredJoin]) -> Vec<u8> {
    let mut v = Vec::new();
    for j in joins {
        v.extend_from_slice(&j.class.0);
        v.extend_from_slice(&j.secret);
        let name = j.name.as_bytes();
        let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(&name[..usize::from(len)]);
    }
    v
}

fn decode_joins(mut b: &[u8]) -> Vec<StoredJoin> {
    let mut out = Vec::new();
    while b.len() >= 34 {
        let mut class = [0u8; 16];
        class.copy_from_slice(&b[..16]);
        let mut secret = [0u8; 16];
        secret.copy_from_slice(&b[16..32]);
        let len = usize::from(u16::from_be_bytes([b[32], b[33]]));
        let Some(name) = b.get(34..34 + len) else {
            break;
        };
        out.push(StoredJoin {
            class: ClassId(class),
            secret,
            name: String::from_utf8_lossy(name).into_owned(),
        });
        b = &b[34 + len..];
    }
    out
}

fn stored_joins(store: &Store) -> Result<Vec<StoredJoin>, ClientError> {
    Ok(store
        .meta(JOINS_KEY)?
        .map(|b| decode_joins(&b))
        .unwrap_or_default())
}

/// Device start-up: hand the stored pending joins to the engine.
/// (A join whose redemption was written before a restart resumes too: the relay's catalog
/// completes it once the redemption is there.)
pub(crate) fn restore_joins(store: &Store, node: &mut SyncNode) -> Result<(), ClientError> {
    for j in stored_joins(store)? {
        node.add_join(j.class, j.secret, &j.name);
    }
    Ok(())
}

fn forget_join(store: &mut Store, class: &ClassId) -> Result<(), ClientError> {
    let mut joins = stored_joins(store)?;
    joins.retain(|j| j.class != *class);
    store.set_meta(JOINS_KEY, &encode_joins(&joins))?;
    Ok(())
}

pub(crate) fn stored_relay(store: &Store) -> Result<Option<RelayTarget>, ClientError> {
    let Some(v) = store.meta(RELAY_KEY)? else {
        return Ok(None);
    };
    // Fingerprint (32 bytes) ‖ address as text.
    if v.len() <= 32 {
        return Ok(None);
    }
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(&v[..32]);
    let Ok(addr) = String::from_utf8_lossy(&v[32..]).parse::<SocketAddr>() else {
        return Ok(None);
    };
    Ok(Some(RelayTarget { addr, fingerprint }))
}

pub(crate) fn store_relay(store: &mut Store, target: &RelayTarget) -> Result<(), ClientError> {
    let mut v = target.fingerprint.to_vec();
    v.extend_from_slice(target.addr.to_string().as_bytes());
    store.set_meta(RELAY_KEY, &v)?;
    Ok(())
}

impl Inner {
    /// Invite bookkeeping for an engine event (called before the event's usual handling).
    pub(crate) fn on_join_event(&mut self, ev: &NodeEvent) {
        let failed = match ev {
            NodeEvent::JoinRefused { class, reason } => {
                Some((*class, JoinFailure::from_reason(*reason)))
            }
            NodeEvent::Rejected {
                doc,
                reason,
                ours: true,
                ..
            } if doc.kind == DocKind::Roster && self.node.pending_joins().contains(&doc.class) => {
                self.node.remove_join(&doc.class);
                Some((doc.class, JoinFailure::from_reason(*reason)))
            }
            NodeEvent::Joined { class } => {
                if let Err(e) = forget_join(&mut self.store, class) {
                    tracing::warn!(error = %e, "could not forget a completed join");
                }
                self.join_failures.remove(class);
                self.notify(DeviceEvent::Joined { class: *class });
                None
            }
            NodeEvent::RosterChanged { class } | NodeEvent::ClassAdded { class } => {
                let me = self.node.replica().device_id();
                let removed = me.is_some_and(|me| {
                    self.node
                        .replica()
                        .roster(class)
                        .is_some_and(|r| r.inactive_since(&me).is_some())
                });
                if removed && self.removed_notified.insert(*class) {
                    self.notify(DeviceEvent::Removed { class: *class });
                }
                None
            }
            _ => None,
        };
        if let Some((class, reason)) = failed {
            if let Err(e) = forget_join(&mut self.store, &class) {
                tracing::warn!(error = %e, "could not forget a failed join");
            }
            tracing::warn!(%class, %reason, "joining the class failed");
            self.join_failures.insert(class, reason.clone());
            self.notify(DeviceEvent::JoinFailed { class, reason });
        }
    }

    /// This device's standing in `class`.
    pub(crate) fn membership(&self, class: &ClassId, me: &DeviceId) -> Membership {
        if let Some(f) = self.join_failures.get(class) {
            return Membership::JoinFailed(f.clone());
        }
        if self.node.pending_joins().contains(class) {
            return Membership::Joining;
        }
        match self.node.replica().roster(class) {
            Some(r) if r.member_of(me).is_some() => Membership::Member,
            Some(r) if r.inactive_since(me).is_some() => Membership::Removed,
            _ => Membership::Joining,
        }
    }
}

impl Device {
    /// Create an invite for `role`, valid for `valid_for`: staff for any role; a guardian
    /// (any active non-staff member) only `AnotherDevice` for their own member, valid for at
    /// most 7 days. The relay address and the
    /// certificate fingerprint come from the relay target this device syncs with (remembered
    /// on disk by [`Device::start_sync`]); [`ClientError::NoRelayKnown`] if there is none.
    /// Writes the invite into the roster (signed, on disk when this returns).
    pub fn create_invite(
        &self,
        class: ClassId,
        role: InviteRole,
        valid_for: Duration,
    ) -> Result<Invite, ClientError> {
        let target = self.relay_target().ok_or(ClientError::NoRelayKnown)?;
        let mut secret = [0u8; 16];
        random_bytes(&mut secret)?;
        let key = core_invite::invite_key(&secret);
        let id = key.device_id();
        let valid_ms = i64::try_from(valid_for.as_millis()).unwrap_or(i64::MAX / 2);
        // Whole seconds: that is what the code carries.
        let expires_at = now_ms().saturating_add(valid_ms) / 1000 * 1000;
        let roster = self.roster(class)?;
        let me = self.device_id();
        let own_member = roster.member_of(&me).map(|m| m.id);
        if !roster.is_staff(&me) {
            // A guardian may invite their own second device, and nothing else.
            match (role, own_member) {
                (InviteRole::AnotherDevice { member }, Some(mine)) if member == mine => {}
                _ => {
                    return Err(ClientError::Model(ModelError::NotAllowed(
                        "only staff may create this invite (a guardian may invite their own \
                         second device)"
                            .into(),
                    )));
                }
            }
            let expires_at = expires_at
                .min((now_ms().saturating_add(core_invite::MAX_SELF_INVITE_MS)) / 1000 * 1000);
            {
                let mut g = self.lock();
                g.node.write_self_invite(class, id, expires_at, now_ms())?;
                g.pump()?;
            }
            return Ok(self.invite_for(class, role, secret, id, expires_at, &target));
        }
        self.edit(DocId::new(class, DocKind::Roster), |tx, actor, _| {
            actor.require_staff()?;
            match role {
                InviteRole::Guardian { family } | InviteRole::Committee { family } => {
                    if !actor.roster.families.contains_key(&family) {
                        return Err(ModelError::UnknownId {
                            kind: "family",
                            id: family.to_hex(),
                        });
                    }
                }
                InviteRole::AnotherDevice { member } => {
                    let active = actor
                        .roster
                        .members
                        .get(&member)
                        .is_some_and(|m| m.removed_at.is_none());
                    if !active {
                        return Err(ModelError::UnknownId {
                            kind: "member",
                            id: member.to_hex(),
                        });
                    }
                }
                InviteRole::CoTeacher => {}
            }
            roster::write_invite(tx, id, role, expires_at, actor.device, actor.now)
        })?;
        Ok(self.invite_for(class, role, secret, id, expires_at, &target))
    }

    fn invite_for(
        &self,
        class: ClassId,
        role: InviteRole,
        secret: [u8; 16],
        id: DeviceId,
        expires_at: i64,
        target: &RelayTarget,
    ) -> Invite {
        let code = InviteCode {
            class,
            secret,
            relays: vec![target.addr],
            fingerprint: target.fingerprint,
            expires_at,
        }
        .encode();
        Invite {
            class,
            role,
            qr_payload: code.clone(),
            code,
            expires_at,
            id,
        }
    }

    /// Join a class with an invite code. Does not touch the network: the code is checked
    /// (a malformed, mistyped, unsupported or expired code is an immediate
    /// [`ClientError::Invite`]), the join is recorded on disk, and the code's relay becomes
    /// this device's relay target if it has none ([`Device::relay_target`]). The sync driver
    /// completes the join; the outcome arrives as [`DeviceEvent::Joined`] or
    /// [`DeviceEvent::JoinFailed`] and in [`Device::classes`]. `display_name` names the new
    /// member (not used by an "another device" invite, but still required).
    pub fn join(&self, code: &str, display_name: &str) -> Result<ClassId, ClientError> {
        let code = InviteCode::parse_at(code, now_ms())?;
        check_text("display_name", display_name, MAX_NAME, false)?;
        let class = code.class;
        let mut g = self.lock();
        let mut joins = stored_joins(&g.store)?;
        joins.retain(|j| j.class != class);
        joins.push(StoredJoin {
            class,
            secret: code.secret,
            name: display_name.to_string(),
        });
        g.store.set_meta(JOINS_KEY, &encode_joins(&joins))?;
        if stored_relay(&g.store)?.is_none()
            && let Some(addr) = code.relays.first()
        {
            store_relay(
                &mut g.store,
                &RelayTarget {
                    addr: *addr,
                    fingerprint: code.fingerprint,
                },
            )?;
        }
        g.join_failures.remove(&class);
        g.node.add_join(class, code.secret, display_name);
        g.pump()?;
        Ok(class)
    }

    /// The relay target remembered on disk (from [`Device::start_sync`] or [`Device::join`]).
    /// A fresh device calls `join(code, name)` and then `start_sync` with this target.
    pub fn relay_target(&self) -> Option<RelayTarget> {
        stored_relay(&self.lock().store).ok().flatten()
    }

    /// Staff: remove a member (custody change, left the class). Their devices' open
    /// connections are closed by the relay and every replica refuses their later changes
    /// (kept in the audit table, see [`Device::rejected_changes`]).
    pub fn remove_member(&self, class: ClassId, member: MemberId) -> Result<(), ClientError> {
        self.edit(DocId::new(class, DocKind::Roster), |tx, actor, _| {
            actor.require_staff()?;
            if !actor.roster.members.contains_key(&member) {
                return Err(ModelError::UnknownId {
                    kind: "member",
                    id: member.to_hex(),
                });
            }
            roster::remove_member(tx, member, actor.now)
        })?;
        Ok(())
    }

    /// The audit table of `doc` on this device: changes refused here (e.g. by a removed
    /// author) or refused by the relay, with their bytes where known. Never applied.
    pub fn rejected_changes(&self, doc: DocId) -> Result<Vec<RejectedChange>, ClientError> {
        let mut g = self.lock();
        // Refusals recorded on arrival may still wait in the deferred received writes.
        g.flush_received()?;
        Ok(g.store.rejected(&doc)?)
    }
}
