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

use std::collections::{BTreeMap, BTreeSet, HashMap};

use homeroom_core::invite::{self, InviteError};
use homeroom_core::{ClassId, DeviceId, DocId, DocKind};
use homeroom_protocol::{
    ClassCatalog, DocDigest, ErrorCode, INVITE_DOMAIN, Message, RejectReason, Sig64, class_digest,
    heads_digest,
};

use super::{PendingJoin, Phase, SessionId, Side, SyncNode};
use crate::error::SyncError;
use crate::write::NodeEvent;

/// How long a device keeps asking when the relay does not know its invite yet.
pub(super) const JOIN_UNKNOWN_GRACE_MS: i64 = 60_000;
/// How often it asks again meanwhile.
pub(super) const JOIN_RETRY_MS: i64 = 1_000;
/// How often a device asks again which class holds a short code's invite (a minute, like a
/// `Join`, but fewer lookups: the relay counts them).
pub(super) const FIND_RETRY_MS: i64 = 5_000;
/// Relay: most distinct invites one connection may look up with `FindInvite` (a parent types
/// one short code; a guesser gets 8 guesses per connection).
pub(crate) const MAX_INVITE_LOOKUPS: usize = 8;
/// Relay: most `FindInvite` messages on one connection (repeats of the same invite included).
pub(crate) const MAX_INVITE_LOOKUP_MESSAGES: u32 = 64;

/// Per-session invite state on a relay.
#[derive(Debug, Default)]
pub(super) struct JoinState {
    /// Classes each session may read the roster of to redeem an invite.
    guest: HashMap<SessionId, BTreeSet<ClassId>>,
    /// Classes where the session's device is known but removed.
    removed: HashMap<SessionId, BTreeSet<ClassId>>,
    /// Relay: the invites each session looked up (`FindInvite`), and how many lookups it made.
    lookups: HashMap<SessionId, (BTreeSet<DeviceId>, u32)>,
    /// Device: short codes whose class is being asked for, by invite.
    finding: BTreeMap<DeviceId, PendingFind>,
}

/// Device: a short code whose class the relay has not named yet.
#[derive(Debug)]
struct PendingFind {
    /// The invite secret (derived from the short code).
    secret: [u8; 16],
    /// The new member's display name.
    name: String,
    /// When the relay first answered "no class", and when to ask again.
    unknown_since: Option<i64>,
    retry_at: Option<i64>,
}

impl JoinState {
    pub(super) fn forget(&mut self, sid: SessionId) {
        self.guest.remove(&sid);
        self.removed.remove(&sid);
        self.lookups.remove(&sid);
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

    /// Device: join with a short code's invite `secret`, whose class is not known yet: ask the
    /// relay which class holds the invite (`FindInvite`, on every established relay session
    /// now and later). When the relay names it, [`NodeEvent::InviteFound`] is reported and
    /// the join continues as [`SyncNode::add_join`]; if it names none for a minute,
    /// [`NodeEvent::InviteNotFound`]. Returns the invite's public key.
    pub fn add_find(&mut self, secret: [u8; 16], name: &str) -> DeviceId {
        let invite = invite::invite_key(&secret).device_id();
        self.joins.finding.insert(
            invite,
            PendingFind {
                secret,
                name: name.to_string(),
                unknown_since: None,
                retry_at: None,
            },
        );
        for sid in self.established_relay_sessions() {
            self.send_find(sid, &invite);
        }
        invite
    }

    /// Device: forget a pending short-code lookup.
    pub fn remove_find(&mut self, invite: &DeviceId) {
        self.joins.finding.remove(invite);
    }

    /// Device: the invites of short codes whose class is still being asked for.
    pub fn pending_finds(&self) -> Vec<DeviceId> {
        self.joins.finding.keys().copied().collect()
    }

    fn established_relay_sessions(&self) -> Vec<SessionId> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.side == Side::Device && s.phase == Phase::Established)
            .map(|(id, _)| *id)
            .collect()
    }

    fn send_find(&mut self, sid: SessionId, invite: &DeviceId) {
        let Some(find) = self.joins.finding.get(invite) else {
            return;
        };
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let key = invite::invite_key(&find.secret);
        let proof = Sig64(key.sign(INVITE_DOMAIN, &s.exporter));
        self.transmits.push_back((
            sid,
            Message::FindInvite {
                invite: *invite,
                proof,
            },
        ));
    }

    /// Device: the relay answered a `FindInvite`. A class: the join of that class starts (and
    /// is reported, so the client records it). None: asked again every [`FIND_RETRY_MS`] for
    /// [`JOIN_UNKNOWN_GRACE_MS`] (the inviting device may not have uploaded the invite yet),
    /// then reported as not found.
    pub(super) fn on_invite_class(&mut self, now: i64, invite: DeviceId, class: Option<ClassId>) {
        match class {
            Some(class) => {
                let Some(find) = self.joins.finding.remove(&invite) else {
                    return;
                };
                self.replica
                    .events
                    .push_back(NodeEvent::InviteFound { invite, class });
                self.add_join(class, find.secret, &find.name);
            }
            None => {
                let Some(find) = self.joins.finding.get_mut(&invite) else {
                    return;
                };
                let since = *find.unknown_since.get_or_insert(now);
                if now.saturating_sub(since) < JOIN_UNKNOWN_GRACE_MS {
                    find.retry_at = Some(now.saturating_add(FIND_RETRY_MS));
                    return;
                }
                self.joins.finding.remove(&invite);
                self.replica
                    .events
                    .push_back(NodeEvent::InviteNotFound { invite });
            }
        }
    }

    /// Relay: a device asks which class holds `invite` (a short code names no class). Answered
    /// with the class only for a proof by the invite key on this connection; at most
    /// [`MAX_INVITE_LOOKUPS`] distinct invites and [`MAX_INVITE_LOOKUP_MESSAGES`] lookups per
    /// connection (then the connection is closed: online guessing costs a handshake per 8
    /// guesses). Nothing but the class id is revealed.
    pub(super) fn on_find_invite(&mut self, sid: SessionId, invite: DeviceId, proof: &Sig64) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let proof_ok = invite.verify(INVITE_DOMAIN, &s.exporter, &proof.0).is_ok();
        let (seen, count) = self.joins.lookups.entry(sid).or_default();
        *count = count.saturating_add(1);
        let new = !seen.contains(&invite);
        if *count > MAX_INVITE_LOOKUP_MESSAGES || (new && seen.len() >= MAX_INVITE_LOOKUPS) {
            self.replica
                .events
                .push_back(NodeEvent::InviteNotFound { invite });
            self.fail(
                sid,
                ErrorCode::LimitExceeded,
                "too many invite lookups on one connection",
                true,
            );
            return;
        }
        seen.insert(invite);
        let class = if proof_ok {
            self.replica.classes().into_iter().find(|c| {
                self.replica
                    .roster(c)
                    .is_some_and(|r| r.invites.contains_key(&invite))
            })
        } else {
            None
        };
        if class.is_none() {
            // Logged by the relay (guessing short codes shows in its log and metrics).
            self.replica
                .events
                .push_back(NodeEvent::InviteNotFound { invite });
        }
        self.transmits
            .push_back((sid, Message::InviteClass { invite, class }));
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
        let finds: Vec<DeviceId> = self.joins.finding.keys().copied().collect();
        for invite in finds {
            self.send_find(sid, &invite);
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
        let finds_due: Vec<DeviceId> = self
            .joins
            .finding
            .iter()
            .filter(|(_, f)| f.retry_at.is_some_and(|t| now >= t))
            .map(|(i, _)| *i)
            .collect();
        if !finds_due.is_empty() {
            let sids = self.established_relay_sessions();
            for invite in finds_due {
                if let Some(f) = self.joins.finding.get_mut(&invite) {
                    f.retry_at = None;
                }
                for sid in &sids {
                    self.send_find(*sid, &invite);
                }
            }
        }
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

#[cfg(test)]
mod short_code_tests {
    #![allow(clippy::unwrap_used)] // test code

    use homeroom_core::identity::DeviceKey;
    use homeroom_protocol::hello_proof;

    use super::*;
    use crate::{Limits, MemorySource, Replica};

    const EXPORTER: [u8; 32] = [7; 32];

    fn drain(node: &mut SyncNode) -> Vec<Message> {
        std::iter::from_fn(|| node.poll_transmit().map(|(_, m)| m)).collect()
    }

    /// A relay with no class, and an established session of a device unknown to it.
    fn relay_session() -> (SyncNode, SessionId) {
        let replica = Replica::relay(Box::new(MemorySource::default()), Limits::default()).unwrap();
        let mut relay = SyncNode::new(replica);
        let sid = relay.accept(0, EXPORTER);
        let key = DeviceKey::from_secret([1; 32]);
        relay
            .handle_message(
                0,
                sid,
                Message::Hello {
                    versions: vec![homeroom_protocol::PROTOCOL_VERSION],
                    device: key.device_id(),
                    proof: hello_proof(&key, &EXPORTER),
                    classes: vec![],
                },
            )
            .unwrap();
        assert!(relay.is_established(sid));
        drain(&mut relay);
        (relay, sid)
    }

    fn find(secret: u8) -> Message {
        let key = invite::invite_key(&[secret; 16]);
        Message::FindInvite {
            invite: key.device_id(),
            proof: Sig64(key.sign(INVITE_DOMAIN, &EXPORTER)),
        }
    }

    #[test]
    fn the_relay_bounds_invite_lookups_per_connection() {
        let (mut relay, sid) = relay_session();
        // Unknown invites: answered "no class", and reported for the log.
        for secret in 0..MAX_INVITE_LOOKUPS as u8 {
            relay.handle_message(0, sid, find(secret)).unwrap();
            let out = drain(&mut relay);
            assert!(
                matches!(out.as_slice(), [Message::InviteClass { class: None, .. }]),
                "{out:?}"
            );
        }
        let events: Vec<NodeEvent> = std::iter::from_fn(|| relay.poll_event()).collect();
        let not_found = events
            .iter()
            .filter(|e| matches!(e, NodeEvent::InviteNotFound { .. }))
            .count();
        assert_eq!(not_found, MAX_INVITE_LOOKUPS);
        // Asking again about one already asked is allowed (the device retries)…
        relay.handle_message(0, sid, find(0)).unwrap();
        assert!(matches!(
            drain(&mut relay).as_slice(),
            [Message::InviteClass { class: None, .. }]
        ));
        // …a ninth distinct invite closes the connection.
        relay.handle_message(0, sid, find(200)).unwrap();
        assert!(matches!(
            drain(&mut relay).as_slice(),
            [Message::Error {
                code: ErrorCode::LimitExceeded,
                fatal: true,
                ..
            }]
        ));
        assert!(relay.poll_close().is_some());
    }

    #[test]
    fn a_lookup_with_a_proof_for_another_connection_finds_nothing() {
        let (mut relay, sid) = relay_session();
        let key = invite::invite_key(&[3; 16]);
        let replayed = Message::FindInvite {
            invite: key.device_id(),
            proof: Sig64(key.sign(INVITE_DOMAIN, &[0; 32])),
        };
        relay.handle_message(0, sid, replayed).unwrap();
        assert!(matches!(
            drain(&mut relay).as_slice(),
            [Message::InviteClass { class: None, .. }]
        ));
    }

    #[test]
    fn a_device_asks_for_the_class_then_joins_it_or_gives_up_after_a_minute() {
        let replica = Replica::device(
            DeviceKey::from_secret([2; 32]),
            [0; homeroom_core::identity::ACTOR_SUFFIX_LEN],
            Box::new(MemorySource::default()),
            Limits::default(),
        )
        .unwrap();
        let mut device = SyncNode::new(replica);
        let sid = device.connect(0, EXPORTER, [9; 32]).unwrap();
        device
            .handle_message(
                0,
                sid,
                Message::Welcome {
                    version: homeroom_protocol::PROTOCOL_VERSION,
                    relay_time: 0,
                },
            )
            .unwrap();
        drain(&mut device);
        // Found: the join of that class starts at once.
        let invite = device.add_find([4; 16], "Mrs Wang");
        assert!(matches!(
            drain(&mut device).as_slice(),
            [Message::FindInvite { invite: i, proof }]
                if *i == invite && i.verify(INVITE_DOMAIN, &EXPORTER, &proof.0).is_ok()
        ));
        let class = ClassId([5; 16]);
        device
            .handle_message(
                0,
                sid,
                Message::InviteClass {
                    invite,
                    class: Some(class),
                },
            )
            .unwrap();
        assert!(matches!(
            drain(&mut device).as_slice(),
            [Message::Join { class: c, invite: i, .. }] if *c == class && *i == invite
        ));
        assert_eq!(device.pending_joins(), [class]);
        assert!(device.pending_finds().is_empty());
        let events: Vec<NodeEvent> = std::iter::from_fn(|| device.poll_event()).collect();
        assert!(events.contains(&NodeEvent::InviteFound { invite, class }));
        // Not found: asked again every few seconds for a minute, then reported.
        let other = device.add_find([6; 16], "Mr Li");
        drain(&mut device);
        let none = Message::InviteClass {
            invite: other,
            class: None,
        };
        device.handle_message(0, sid, none.clone()).unwrap();
        device.handle_timeout(FIND_RETRY_MS - 1);
        assert!(drain(&mut device).is_empty());
        device.handle_timeout(FIND_RETRY_MS);
        assert!(matches!(
            drain(&mut device).as_slice(),
            [Message::FindInvite { invite: i, .. }] if *i == other
        ));
        device
            .handle_message(JOIN_UNKNOWN_GRACE_MS, sid, none)
            .unwrap();
        assert!(device.pending_finds().is_empty());
        let events: Vec<NodeEvent> = std::iter::from_fn(|| device.poll_event()).collect();
        assert!(events.contains(&NodeEvent::InviteNotFound { invite: other }));
    }
}
