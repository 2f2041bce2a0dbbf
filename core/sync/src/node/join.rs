//! Joining a class with an invite, and what a removed device may still do (docs/invites.md).
//!
//! Device side: [`SyncNode::add_join`] records an invite secret. On every established relay
//! session the device sends `Join { class, invite, proof }` — the invite key's signature over
//! `INVITE_DOMAIN ‖ TLS exporter` of that session. The relay checks the proof and that the
//! invite is in the roster, unused and unexpired, then lets the session read (and write) that
//! class's roster only — a "guest" — and sends a roster-only catalog entry. Once the device
//! holds the roster with the invite, it writes the redemption change (authored by the invite
//! key, see `Replica::redeem_invite`); when the relay applies it the device is enrolled and
//! the normal roster-change path sends it the full catalog. A refused `Join` comes back as
//! `JoinRefused { class, reason }`; a refused redemption as `Reject` of the roster change.
//!
//! Relay side, removed devices: a device known to a roster but revoked (or whose member was
//! removed) is listed with a roster-only catalog entry, may read that roster (so it learns it
//! was removed) and may upload; what it uploads is refused and kept for audit.

use std::collections::{BTreeSet, HashMap};

use homeroom_core::invite::{self, InviteError};
use homeroom_core::{ClassId, DeviceId, DocId, DocKind};
use homeroom_protocol::{
    ClassCatalog, DocDigest, INVITE_DOMAIN, Message, RejectReason, Sig64, class_digest,
    heads_digest,
};

use super::{PendingJoin, Phase, SessionId, Side, SyncNode};
use crate::error::SyncError;
use crate::write::NodeEvent;

/// How long a device keeps asking when the relay does not know its invite yet.
pub(super) const JOIN_UNKNOWN_GRACE_MS: i64 = 60_000;
/// How often it asks again meanwhile.
pub(super) const JOIN_RETRY_MS: i64 = 1_000;

/// Per-session invite state on a relay.
#[derive(Debug, Default)]
pub(super) struct JoinState {
    /// Classes each session may read the roster of to redeem an invite.
    guest: HashMap<SessionId, BTreeSet<ClassId>>,
    /// Classes where the session's device is known but removed.
    removed: HashMap<SessionId, BTreeSet<ClassId>>,
}

impl JoinState {
    pub(super) fn forget(&mut self, sid: SessionId) {
        self.guest.remove(&sid);
        self.removed.remove(&sid);
    }

    fn is_guest(&self, sid: SessionId, class: &ClassId) -> bool {
        self.guest.get(&sid).is_some_and(|s| s.contains(class))
    }

    fn is_removed(&self, sid: SessionId, class: &ClassId) -> bool {
        self.removed.get(&sid).is_some_and(|s| s.contains(class))
    }
}

fn refusal(e: &InviteError) -> RejectReason {
    match e {
        InviteError::AlreadyUsed => RejectReason::InviteUsed,
        InviteError::Expired { .. } => RejectReason::InviteExpired,
        InviteError::Unknown => RejectReason::InviteUnknown,
        _ => RejectReason::InviteMismatch,
    }
}

impl SyncNode {
    /// Device: redeem the invite with `secret` for `class` as soon as a relay session allows
    /// (now, if one is established). `name` is the new member's display name.
    pub fn add_join(&mut self, class: ClassId, secret: [u8; 16], name: &str) {
        self.pending_joins.insert(
            class,
            PendingJoin {
                secret,
                name: name.to_string(),
                redeemed: None,
                unknown_since: None,
                retry_at: None,
            },
        );
        let sids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.side == Side::Device && s.phase == Phase::Established)
            .map(|(id, _)| *id)
            .collect();
        for sid in sids {
            self.send_join(sid, class);
        }
    }

    /// Device (a guardian, no staff right needed): write an invite for this member's own
    /// second device and send it (see `Replica::write_self_invite`).
    pub fn write_self_invite(
        &mut self,
        class: ClassId,
        invite: DeviceId,
        expires_at: i64,
        now: i64,
    ) -> Result<(), SyncError> {
        self.replica
            .write_self_invite(class, invite, expires_at, now)?;
        self.fan_out(None, &DocId::new(class, DocKind::Roster))
    }

    /// Device: forget a pending join (completed or failed).
    pub fn remove_join(&mut self, class: &ClassId) {
        self.pending_joins.remove(class);
    }

    /// Device: the classes with a pending join.
    pub fn pending_joins(&self) -> Vec<ClassId> {
        self.pending_joins.keys().copied().collect()
    }

    /// Device: the relay's catalog lists `class` with these documents. A listing beyond the
    /// roster means the relay enrolled this device: a pending join is complete.
    pub(super) fn on_catalog_entry(&mut self, class: ClassId, docs: Option<&[DocDigest]>) {
        let full = docs.is_none_or(|d| d.iter().any(|x| x.kind != DocKind::Roster));
        if full && self.pending_joins.remove(&class).is_some() {
            self.replica.events.push_back(NodeEvent::Joined { class });
        }
    }

    /// Device, session established: ask to join every pending class (also one whose
    /// redemption is written but may not have reached the relay: the guest session lets it
    /// upload it).
    pub(super) fn send_joins(&mut self, sid: SessionId) {
        let classes: Vec<ClassId> = self.pending_joins.keys().copied().collect();
        for class in classes {
            self.send_join(sid, class);
        }
    }

    fn send_join(&mut self, sid: SessionId, class: ClassId) {
        let Some(join) = self.pending_joins.get(&class) else {
            return;
        };
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let key = invite::invite_key(&join.secret);
        let proof = Sig64(key.sign(INVITE_DOMAIN, &s.exporter));
        self.transmits.push_back((
            sid,
            Message::Join {
                class,
                invite: key.device_id(),
                proof,
            },
        ));
    }

    /// Device: the relay refused a `Join`. "Unknown invite" is retried every
    /// [`JOIN_RETRY_MS`] for [`JOIN_UNKNOWN_GRACE_MS`]: the invite may simply not have reached
    /// the relay yet (the inviting device uploads it when it syncs).
    pub(super) fn on_join_refused(&mut self, now: i64, class: ClassId, reason: RejectReason) {
        if reason == RejectReason::InviteUnknown
            && let Some(j) = self.pending_joins.get_mut(&class)
        {
            let since = *j.unknown_since.get_or_insert(now);
            if now.saturating_sub(since) < JOIN_UNKNOWN_GRACE_MS {
                j.retry_at = Some(now.saturating_add(JOIN_RETRY_MS));
                return;
            }
        }
        // (If this device's own redemption used it, the relay's `Hello` answer already listed the
        // class in full, before this refusal, and the join is no longer pending.)
        if self.pending_joins.remove(&class).is_some() {
            self.replica
                .events
                .push_back(NodeEvent::JoinRefused { class, reason });
        }
    }

    /// Device: ask again for joins whose invite the relay did not know yet.
    pub(super) fn retry_joins(&mut self, now: i64) {
        let due: Vec<ClassId> = self
            .pending_joins
            .iter()
            .filter(|(_, j)| j.retry_at.is_some_and(|t| now >= t))
            .map(|(c, _)| *c)
            .collect();
        if due.is_empty() {
            return;
        }
        let sids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.side == Side::Device && s.phase == Phase::Established)
            .map(|(id, _)| *id)
            .collect();
        for class in due {
            if let Some(j) = self.pending_joins.get_mut(&class) {
                j.retry_at = None;
            }
            for sid in &sids {
                self.send_join(*sid, class);
            }
        }
    }

    /// Device: the roster of `class` changed; if a join is pending and the roster now holds
    /// its invite, write the redemption change and send it.
    pub(super) fn try_redeem(&mut self, now: i64, class: ClassId) -> Result<(), SyncError> {
        let Some(join) = self.pending_joins.get(&class) else {
            return Ok(());
        };
        if join.redeemed.is_some() {
            return Ok(());
        }
        let Some(me) = self.replica.device_id() else {
            return Ok(());
        };
        let Some(roster) = self.replica.roster(&class) else {
            return Ok(());
        };
        if roster.members.is_empty() || roster.devices.contains_key(&me) {
            return Ok(());
        }
        let key = invite::invite_key(&join.secret);
        match invite::check_redeemable(roster, &key.device_id(), now) {
            Ok(_) => {}
            // The roster may not have reached the invite yet.
            Err(InviteError::Unknown) => return Ok(()),
            Err(e) => {
                self.pending_joins.remove(&class);
                self.replica.events.push_back(NodeEvent::JoinRefused {
                    class,
                    reason: refusal(&e),
                });
                return Ok(());
            }
        }
        let name = join.name.clone();
        let hash = self.replica.redeem_invite(class, &key, &name, now)?;
        if let Some(j) = self.pending_joins.get_mut(&class) {
            j.redeemed = Some(hash);
        }
        self.fan_out(None, &DocId::new(class, DocKind::Roster))
    }

    /// Relay: a device asks to join `class` with `invite`.
    pub(super) fn on_join(
        &mut self,
        now: i64,
        sid: SessionId,
        class: ClassId,
        invite: DeviceId,
        proof: &Sig64,
    ) -> Result<(), SyncError> {
        let Some(s) = self.sessions.get(&sid) else {
            return Ok(());
        };
        let reason = if invite.verify(INVITE_DOMAIN, &s.exporter, &proof.0).is_err() {
            Some(RejectReason::BadSignature)
        } else {
            match self.replica.roster(&class) {
                Some(r) if !r.members.is_empty() => invite::check_redeemable(r, &invite, now)
                    .err()
                    .map(|e| refusal(&e)),
                _ => Some(RejectReason::InviteUnknown),
            }
        };
        if let Some(reason) = reason {
            // Logged by the relay (guessing invites shows in its log and metrics).
            self.replica
                .events
                .push_back(NodeEvent::JoinRefused { class, reason });
            self.transmits
                .push_back((sid, Message::JoinRefused { class, reason }));
            return Ok(());
        }
        self.joins.guest.entry(sid).or_default().insert(class);
        let entry = self.roster_only_catalog(class)?;
        self.transmits.push_back((
            sid,
            Message::Catalog {
                classes: vec![entry],
            },
        ));
        Ok(())
    }

    /// A catalog entry listing only the roster of `class`.
    pub(super) fn roster_only_catalog(
        &mut self,
        class: ClassId,
    ) -> Result<ClassCatalog, SyncError> {
        let roster = DocId::new(class, DocKind::Roster);
        let heads = self.replica.advertised_heads(&roster)?;
        let digest = heads_digest(&heads);
        Ok(ClassCatalog {
            class,
            digest: class_digest(&[(roster, digest)]),
            docs: Some(vec![DocDigest {
                kind: DocKind::Roster,
                digest,
            }]),
        })
    }

    /// Relay, `Hello`: roster-only catalog entries for the classes that removed `device`.
    pub(super) fn removed_catalog(
        &mut self,
        sid: SessionId,
        device: &DeviceId,
    ) -> Result<Vec<ClassCatalog>, SyncError> {
        let classes = self.replica.classes_where_removed(device);
        let mut out = Vec::with_capacity(classes.len());
        for class in classes {
            out.push(self.roster_only_catalog(class)?);
            self.joins.removed.entry(sid).or_default().insert(class);
        }
        Ok(out)
    }

    /// Relay: the session's device was just removed from `class` (it followed the class).
    pub(super) fn mark_removed(&mut self, sid: SessionId, class: ClassId) {
        self.joins.removed.entry(sid).or_default().insert(class);
    }

    /// Relay: the device of `sid` is now enrolled in `class` (its join completed).
    pub(super) fn end_guest(&mut self, sid: SessionId, class: &ClassId) {
        if let Some(s) = self.joins.guest.get_mut(&sid) {
            s.remove(class);
        }
    }

    /// Relay: whether `sid` is a guest (joining) session of `class`.
    pub(super) fn is_guest_of(&self, sid: SessionId, class: &ClassId) -> bool {
        self.joins.is_guest(sid, class)
    }

    /// Relay: may `sid` send changes of `doc` (beyond its roster rights)? Guests write the
    /// roster (their redemption); removed devices may upload anything (it is refused and
    /// audited).
    pub(super) fn join_may_upload(&self, sid: SessionId, doc: &DocId) -> bool {
        (doc.kind == DocKind::Roster && self.joins.is_guest(sid, &doc.class))
            || self.joins.is_removed(sid, &doc.class)
    }

    /// Relay: may `sid` receive `doc`, beyond its roster rights? Only the roster, for guests
    /// and removed devices.
    pub(super) fn join_may_read(&self, sid: SessionId, doc: &DocId) -> bool {
        doc.kind == DocKind::Roster
            && (self.joins.is_guest(sid, &doc.class) || self.joins.is_removed(sid, &doc.class))
    }
}
