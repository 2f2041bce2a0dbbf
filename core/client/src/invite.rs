//! Invites on the device: creating them (staff), joining with a code, removing members, and
//! the audit of refused changes. See docs/invites.md.

use std::net::SocketAddr;
use std::time::Duration;

use homeroom_core::error::check_text;
use homeroom_core::invite::{self as core_invite, InviteCode, ShortCode};
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
/// Store meta key of the relay's further addresses (from an invite code listing several), as
/// text, one per line: tried in order when the relay target's address does not connect.
const RELAY_ALTERNATES_KEY: &str = "invite/relay-alternates";
/// Store meta key of the pending short-code joins (class not known yet; same encoding as the
/// pending joins, with an all-zero class).
const SHORT_JOINS_KEY: &str = "invite/short-joins";

/// A created invite, to show as text and as a QR code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// The class.
    pub class: ClassId,
    /// What it grants.
    pub role: InviteRole,
    /// The text code (also what the QR encodes): `HR` + uppercase base32, which fits QR
    /// alphanumeric mode. Carries the class, the relay and its certificate fingerprint.
    pub code: String,
    /// The short code of the same invite, for typing: `XXXX-XXXX-XXXX` (Crockford base32). It
    /// names neither class nor relay: it works on a device that already knows the relay
    /// ([`Device::join_with_short_code`]).
    pub short_code: String,
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
    for j in stored_short_joins(store)? {
        node.add_find(j.secret, &j.name);
    }
    Ok(())
}

fn stored_short_joins(store: &Store) -> Result<Vec<StoredJoin>, ClientError> {
    Ok(store
        .meta(SHORT_JOINS_KEY)?
        .map(|b| decode_joins(&b))
        .unwrap_or_default())
}

/// Forget the pending short-code join of `invite`; returns it.
fn take_short_join(
    store: &mut Store,
    invite: &DeviceId,
) -> Result<Option<StoredJoin>, ClientError> {
    let mut joins = stored_short_joins(store)?;
    let Some(pos) = joins
        .iter()
        .position(|j| core_invite::invite_key(&j.secret).device_id() == *invite)
    else {
        return Ok(None);
    };
    let found = joins.remove(pos);
    store.set_meta(SHORT_JOINS_KEY, &encode_joins(&joins))?;
    Ok(Some(found))
}

/// A short code resolved to `class`: its join becomes an ordinary pending join on disk.
fn short_join_found(
    store: &mut Store,
    invite: &DeviceId,
    class: ClassId,
) -> Result<(), ClientError> {
    let Some(found) = take_short_join(store, invite)? else {
        return Ok(());
    };
    let mut joins = stored_joins(store)?;
    joins.retain(|j| j.class != class);
    joins.push(StoredJoin { class, ..found });
    store.set_meta(JOINS_KEY, &encode_joins(&joins))?;
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

/// The relay's further addresses (see [`Device::relay_addresses`]).
pub(crate) fn stored_alternates(store: &Store) -> Result<Vec<SocketAddr>, ClientError> {
    let Some(v) = store.meta(RELAY_ALTERNATES_KEY)? else {
        return Ok(Vec::new());
    };
    Ok(String::from_utf8_lossy(&v)
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect())
}

fn store_alternates(store: &mut Store, addrs: &[SocketAddr]) -> Result<(), ClientError> {
    let text: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
    store.set_meta(RELAY_ALTERNATES_KEY, text.join("\n").as_bytes())?;
    Ok(())
}

/// Connect over QUIC to the relay target's address, and when that fails to each further
/// address of the same relay (an invite code may list several: e.g. its LAN and its public
/// address), in order. The error is the first address's.
pub(crate) async fn connect_relay_quic(
    device: &Device,
    endpoint: &quinn::Endpoint,
    target: &RelayTarget,
    timeout: Duration,
) -> Result<quinn::Connection, ClientError> {
    let first_error = match crate::connection::connect_quic(endpoint, target, timeout).await {
        Ok(conn) => return Ok(conn),
        Err(e) => e,
    };
    let alternates = stored_alternates(&device.lock().store).unwrap_or_default();
    for addr in alternates {
        // The endpoint is bound for the target's address family.
        if addr == target.addr || addr.is_ipv6() != target.addr.is_ipv6() {
            continue;
        }
        let other = RelayTarget {
            addr,
            fingerprint: target.fingerprint,
        };
        match crate::connection::connect_quic(endpoint, &other, timeout).await {
            Ok(conn) => {
                tracing::info!(%addr, first = %target.addr, "connected to the relay's next address");
                return Ok(conn);
            }
            Err(e) => tracing::info!(%addr, error = %e, "the relay's next address did not connect"),
        }
    }
    Err(first_error)
}

pub(crate) fn store_relay(store: &mut Store, target: &RelayTarget) -> Result<(), ClientError> {
    // Another relay (another certificate): the further addresses were the old relay's.
    if stored_relay(store)?.is_some_and(|old| old.fingerprint != target.fingerprint) {
        store_alternates(store, &[])?;
    }
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
            NodeEvent::InviteFound { invite, class } => {
                if let Err(e) = short_join_found(&mut self.store, invite, *class) {
                    tracing::warn!(error = %e, "could not record a resolved short code");
                }
                self.join_failures.remove(class);
                self.notify(DeviceEvent::InviteFound {
                    invite: *invite,
                    class: *class,
                });
                None
            }
            NodeEvent::InviteNotFound { invite } => {
                if let Err(e) = take_short_join(&mut self.store, invite) {
                    tracing::warn!(error = %e, "could not forget a failed short code");
                }
                tracing::warn!(%invite, "the relay knows no class with this short code");
                self.notify(DeviceEvent::InviteNotFound { invite: *invite });
                None
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

/// A created invite in both its forms.
fn invite_for(role: InviteRole, short: &ShortCode, id: DeviceId, code: &InviteCode) -> Invite {
    let text = code.encode();
    Invite {
        class: code.class,
        role,
        qr_payload: text.clone(),
        code: text,
        short_code: short.encode(),
        expires_at: code.expires_at,
        id,
    }
}

impl Device {
    /// Create an invite for `role`, valid for `valid_for`: staff for any role; a guardian
    /// (any active non-staff member) only `AnotherDevice` for their own member, valid for at
    /// most 7 days. The relay addresses ([`Device::relay_addresses`]) and the
    /// certificate fingerprint come from the relay target this device syncs with (remembered
    /// on disk by [`Device::start_sync`]); [`ClientError::NoRelayKnown`] if there is none.
    /// The invite has two forms: the long code (also the QR payload) and a short code to type
    /// ([`Invite::short_code`], [`Device::join_with_short_code`]).
    /// Writes the invite into the roster (signed, on disk when this returns).
    pub fn create_invite(
        &self,
        class: ClassId,
        role: InviteRole,
        valid_for: Duration,
    ) -> Result<Invite, ClientError> {
        self.create_invite_with_relays(class, role, valid_for, &[])
    }

    /// [`Device::create_invite`] whose code lists `relays` (at most
    /// [`core_invite::MAX_RELAYS`], in order of preference): addresses of the relay this device
    /// syncs with — its certificate fingerprint is the code's — e.g. its LAN and its public
    /// address; a joining device tries them in turn. Empty: [`Device::relay_addresses`].
    pub fn create_invite_with_relays(
        &self,
        class: ClassId,
        role: InviteRole,
        valid_for: Duration,
        relays: &[SocketAddr],
    ) -> Result<Invite, ClientError> {
        let target = self.relay_target().ok_or(ClientError::NoRelayKnown)?;
        let relays: Vec<SocketAddr> = if relays.is_empty() {
            self.relay_addresses()
        } else {
            relays
                .iter()
                .take(core_invite::MAX_RELAYS)
                .copied()
                .collect()
        };
        // The secret derives from the short code, so both forms name the same invite.
        let mut random = [0u8; 8];
        random_bytes(&mut random)?;
        let short = ShortCode::from_random(random);
        let secret = short.secret();
        let key = core_invite::invite_key(&secret);
        let id = key.device_id();
        let valid_ms = i64::try_from(valid_for.as_millis()).unwrap_or(i64::MAX / 2);
        let code = |expires_at| InviteCode {
            class,
            secret,
            relays: relays.clone(),
            fingerprint: target.fingerprint,
            expires_at,
        };
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
            return Ok(invite_for(role, &short, id, &code(expires_at)));
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
        Ok(invite_for(role, &short, id, &code(expires_at)))
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
            && let Some((addr, alternates)) = code.relays.split_first()
        {
            store_relay(
                &mut g.store,
                &RelayTarget {
                    addr: *addr,
                    fingerprint: code.fingerprint,
                },
            )?;
            // The code's further addresses of the same relay: tried when the first does not
            // connect.
            store_alternates(&mut g.store, alternates)?;
        }
        g.join_failures.remove(&class);
        g.node.add_join(class, code.secret, display_name);
        g.pump()?;
        Ok(class)
    }

    /// Join a class with a short code (`XXXX-XXXX-XXXX`, see [`Invite::short_code`]), through
    /// the relay this device already knows ([`Device::relay_target`]). Like [`Device::join`]
    /// it does not touch the network: the code is checked (a malformed or mistyped code is an
    /// immediate [`ClientError::Invite`]; a device that knows no relay gets
    /// [`ClientError::ShortCodeNeedsRelay`]: scan the QR code instead) and the join is recorded
    /// on disk. The sync driver asks the relay which class holds the invite:
    /// [`DeviceEvent::InviteFound`] (then `Joined` or `JoinFailed` as for a long code) or, if
    /// the relay knows none for a minute, [`DeviceEvent::InviteNotFound`]. Returns the
    /// invite's public key, which those events carry.
    pub fn join_with_short_code(
        &self,
        short_code: &str,
        display_name: &str,
    ) -> Result<DeviceId, ClientError> {
        let code = ShortCode::parse(short_code)?;
        check_text("display_name", display_name, MAX_NAME, false)?;
        if self.relay_target().is_none() {
            return Err(ClientError::ShortCodeNeedsRelay);
        }
        self.record_short_join(&code, display_name)
    }

    /// [`Device::join_with_short_code`] through `relay` (an address and certificate
    /// fingerprint the school gave out), which becomes this device's relay target if it has
    /// none.
    pub fn join_with_short_code_via(
        &self,
        short_code: &str,
        display_name: &str,
        relay: &RelayTarget,
    ) -> Result<DeviceId, ClientError> {
        let code = ShortCode::parse(short_code)?;
        check_text("display_name", display_name, MAX_NAME, false)?;
        {
            let mut g = self.lock();
            if stored_relay(&g.store)?.is_none() {
                store_relay(&mut g.store, relay)?;
            }
        }
        self.record_short_join(&code, display_name)
    }

    fn record_short_join(
        &self,
        code: &ShortCode,
        display_name: &str,
    ) -> Result<DeviceId, ClientError> {
        let secret = code.secret();
        let invite = core_invite::invite_key(&secret).device_id();
        let mut g = self.lock();
        let mut joins = stored_short_joins(&g.store)?;
        joins.retain(|j| j.secret != secret);
        joins.push(StoredJoin {
            class: ClassId([0; 16]),
            secret,
            name: display_name.to_string(),
        });
        g.store.set_meta(SHORT_JOINS_KEY, &encode_joins(&joins))?;
        g.node.add_find(secret, display_name);
        g.pump()?;
        Ok(invite)
    }

    /// Every address of this device's relay it knows, in order of preference: the relay
    /// target's, then those an invite code listed beside it (tried in turn by the sync driver
    /// when the first does not connect). Empty if no relay is known.
    pub fn relay_addresses(&self) -> Vec<SocketAddr> {
        let g = self.lock();
        let Ok(Some(target)) = stored_relay(&g.store) else {
            return Vec::new();
        };
        let mut out = vec![target.addr];
        for a in stored_alternates(&g.store).unwrap_or_default() {
            if !out.contains(&a) && out.len() < core_invite::MAX_RELAYS {
                out.push(a);
            }
        }
        out
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
