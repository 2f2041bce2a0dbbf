//! LAN peer sessions: two devices syncing with no relay between them (docs/lan.md).
//!
//! Both ends are devices, so both play both parts of the handshake: each sends `Hello` (its
//! device key's signature over the TLS exporter of this very session, exactly as towards the
//! relay) and each verifies the other's `Hello` against **its own** rosters, then answers
//! `Welcome` and a `Catalog`. The wire messages are those of protocol version 1; only their
//! order differs from a relay session (`Hello` from both ends first).
//!
//! What a device enforces on a peer session, since no relay checked anything before it:
//!
//! - the peer's key must be enrolled (and not revoked) in a class this device holds and is
//!   enrolled in, and must not be this device's own key (a reflected `Hello`);
//! - only documents **both** may read, per this device's roster, are offered or accepted
//!   (`peer_may_sync`), so a parent's phone never receives another family's lane and never
//!   hands out its own lane to another parent;
//! - every change's signature is verified (as always); a change by a device the roster knows
//!   but does not allow is **rejected** once this device has every roster change the peer
//!   announced for that class, and held (never applied) before that (`peer_ingest`);
//! - a peer revoked or removed (per this device's roster) during the session gets that
//!   class's roster and may only upload to it (refused and audited if dated after the
//!   removal); the session closes once no class is shared (`peer_roster_changed`);
//! - `Saved` from a peer is ignored and a peer's catalog marks nothing delivered: only the
//!   relay's disk counts as "delivered to school";
//! - a `Reject` from a peer alone does not make this device drop its changes (the peer is just
//!   another device, possibly one with a lagging roster, possibly a hostile one): it drops
//!   only those its own roster also refuses, as it would on the relay's `Reject`; otherwise
//!   the document is no longer offered to that peer in this session.

use std::collections::{HashMap, HashSet};

use homeroom_core::automerge::sync::{self, ChunkList, MessageVersion};
use homeroom_core::automerge::{ChangeHash, ReadDoc};
use homeroom_core::{ClassId, DocId, DocKind};
use homeroom_protocol::{
    ClassCatalog, ClassDigest, DocDigest, ErrorCode, HANDSHAKE_DOMAIN, Message, PROTOCOL_VERSION,
    Sig64, class_digest, heads_digest,
};

use super::{Phase, Session, SessionId, Side, SyncNode};
use crate::error::SyncError;
use crate::replica::{IncomingChange, IngestOutcome};
use crate::write::NodeEvent;

/// Per-session state of LAN peer sessions.
#[derive(Debug, Default)]
pub(super) struct LanState {
    /// The roster heads each peer last announced (in a roster `Sync`), per class.
    roster_heads: HashMap<SessionId, HashMap<ClassId, Vec<ChangeHash>>>,
    /// Documents a peer refused in this session: no longer offered to it.
    refused: HashMap<SessionId, HashSet<DocId>>,
    /// Classes this device does not hold whose roster the peer offered (joining over the LAN).
    bootstrap: HashMap<SessionId, HashSet<ClassId>>,
    /// Classes whose roster revoked the peer's device or removed its member during the
    /// session: the peer still gets that roster (so it learns of its removal) and may upload,
    /// as on the relay; what it uploads dated after the removal is refused and audited.
    removed: HashMap<SessionId, HashSet<ClassId>>,
}

impl LanState {
    pub(super) fn forget(&mut self, sid: SessionId) {
        self.roster_heads.remove(&sid);
        self.refused.remove(&sid);
        self.bootstrap.remove(&sid);
        self.removed.remove(&sid);
    }
}

impl SyncNode {
    /// LAN: a connection to another device opened (either end: both play the same part).
    /// `exporter` is the TLS session's exported keying material. Queues our `Hello`; the
    /// session is established once the peer's `Hello` verifies against this device's rosters.
    pub fn connect_peer(&mut self, now: i64, exporter: [u8; 32]) -> Result<SessionId, SyncError> {
        let device = self.replica.device_id().ok_or(SyncError::NoDeviceKey)?;
        let proof = self.replica.sign_handshake(&exporter)?;
        let timeout = i64::try_from(self.replica.limits().handshake_timeout_ms).unwrap_or(i64::MAX);
        let mut classes = Vec::new();
        for class in self.replica.classes() {
            let digest = self.local_class_digest(class, &device)?;
            classes.push(ClassDigest { class, digest });
        }
        let id = self.alloc_session();
        self.sessions.insert(
            id,
            Session {
                side: Side::Peer,
                phase: Phase::AwaitHello {
                    deadline: now.saturating_add(timeout),
                },
                exporter,
                peer: homeroom_core::DeviceId([0; 32]),
                classes: Default::default(),
                docs: HashMap::new(),
                new_classes: 0,
            },
        );
        self.transmits.push_back((
            id,
            Message::Hello {
                versions: vec![PROTOCOL_VERSION],
                device,
                proof: Sig64(proof),
                classes,
            },
        ));
        Ok(id)
    }

    /// The authenticated device of an established LAN peer session.
    pub fn lan_peer_of(&self, session: SessionId) -> Option<homeroom_core::DeviceId> {
        self.sessions
            .get(&session)
            .filter(|s| s.side == Side::Peer && s.phase == Phase::Established)
            .map(|s| s.peer)
    }

    /// Whether we offer `doc` to the peer of `sid` (send it sync messages): it may travel
    /// ([`SyncNode::peer_may_sync`]) and the peer has not refused changes of it in this session
    /// (offering them again would only be refused again). What the peer sends of it is still
    /// accepted (and verified).
    pub(super) fn peer_may_offer(&self, sid: SessionId, doc: &DocId) -> bool {
        self.peer_may_sync(sid, doc) && !self.lan.refused.get(&sid).is_some_and(|r| r.contains(doc))
    }

    /// Whether `doc` may travel over peer session `sid`: established, a class both share, a
    /// document both this device and the peer may read per this device's roster.
    pub(super) fn peer_may_sync(&self, sid: SessionId, doc: &DocId) -> bool {
        let Some(s) = self.sessions.get(&sid) else {
            return false;
        };
        if s.side != Side::Peer || s.phase != Phase::Established {
            return false;
        }
        if !s.classes.contains(&doc.class) && self.peer_removed_from(sid, &doc.class) {
            // A peer removed from the class during the session reads its roster only.
            return doc.kind == DocKind::Roster;
        }
        if !s.classes.contains(&doc.class) {
            // Joining over the LAN: the roster of a class we do not hold yet, which the peer
            // offered. It is self-certifying (the founding change commits to the class id; every
            // later change is signed by a member allowed to make it) and verified on arrival.
            let held = self
                .replica
                .roster(&doc.class)
                .is_some_and(|r| !r.members.is_empty());
            return doc.kind == DocKind::Roster
                && !held
                && self
                    .lan
                    .bootstrap
                    .get(&sid)
                    .is_some_and(|b| b.contains(&doc.class));
        }
        let Some(me) = self.replica.device_id() else {
            return false;
        };
        self.replica
            .roster(&doc.class)
            .is_some_and(|r| r.can_read(&me, &doc.kind) && r.can_read(&s.peer, &doc.kind))
    }

    /// Whether the peer of `sid` was removed from `class` (its device revoked or its member
    /// removed) during this session.
    fn peer_removed_from(&self, sid: SessionId, class: &ClassId) -> bool {
        self.lan
            .removed
            .get(&sid)
            .is_some_and(|r| r.contains(class))
    }

    /// Whether the peer of `sid` may upload changes of `doc` without reading it: it was removed
    /// from the class during this session, and this device may read `doc`. Its changes are
    /// verified as any others: those dated after the removal are refused
    /// (`Reject { NotAWriter }`) and kept for audit.
    pub(super) fn peer_may_upload(&self, sid: SessionId, doc: &DocId) -> bool {
        let Some(me) = self.replica.device_id() else {
            return false;
        };
        self.sessions
            .get(&sid)
            .is_some_and(|s| s.side == Side::Peer && s.phase == Phase::Established)
            && self.peer_removed_from(sid, &doc.class)
            && self
                .replica
                .roster(&doc.class)
                .is_some_and(|r| r.can_read(&me, &doc.kind))
    }

    /// Documents of `class` both this device and `peer` may read, with their heads digests.
    fn shared_digests(
        &mut self,
        class: ClassId,
        peer: &homeroom_core::DeviceId,
    ) -> Result<Vec<(DocId, [u8; 8])>, SyncError> {
        let Some(me) = self.replica.device_id() else {
            return Ok(Vec::new());
        };
        let docs: Vec<DocId> = match self.replica.roster(&class) {
            Some(r) => r
                .readable_docs(class, &me)
                .into_iter()
                .filter(|d| r.can_read(peer, &d.kind))
                .collect(),
            None => Vec::new(),
        };
        let mut out = Vec::with_capacity(docs.len());
        for d in docs {
            let heads = self.replica.advertised_heads(&d)?;
            out.push((d, heads_digest(&heads)));
        }
        Ok(out)
    }

    pub(super) fn on_peer_message(
        &mut self,
        now: i64,
        sid: SessionId,
        phase: Phase,
        msg: Message,
    ) -> Result<(), SyncError> {
        match (phase, msg) {
            (
                _,
                Message::Error {
                    code,
                    detail,
                    fatal,
                },
            ) => {
                self.replica.events.push_back(NodeEvent::PeerMisbehaved {
                    session: sid,
                    detail: format!("LAN peer reported {code:?}: {detail}"),
                });
                if fatal {
                    if let Some(s) = self.sessions.get_mut(&sid) {
                        s.phase = Phase::Closed;
                    }
                    self.closes
                        .push_back((sid, format!("peer error {code:?}: {detail}")));
                }
                Ok(())
            }
            (
                Phase::AwaitHello { .. },
                Message::Hello {
                    versions,
                    device,
                    proof,
                    classes,
                },
            ) => self.on_peer_hello(now, sid, &versions, device, &proof, &classes),
            (Phase::AwaitHello { .. }, _) => {
                self.fail(sid, ErrorCode::UnexpectedMessage, "expected Hello", true);
                Ok(())
            }
            (Phase::Established, Message::Welcome { version, .. }) => {
                if version != PROTOCOL_VERSION {
                    self.fail(
                        sid,
                        ErrorCode::UnsupportedVersion,
                        "peer chose an unknown version",
                        true,
                    );
                }
                Ok(())
            }
            (Phase::Established, Message::Catalog { classes }) => {
                self.on_peer_catalog(sid, classes)
            }
            (
                Phase::Established,
                Message::Sync {
                    doc,
                    payload,
                    signatures,
                },
            ) => self.on_sync(now, sid, doc, &payload, &signatures),
            // A peer's disk is not the school's: nothing becomes "delivered" through a peer.
            (Phase::Established, Message::Saved { .. }) => Ok(()),
            (
                Phase::Established,
                Message::Reject {
                    doc,
                    changes,
                    reason,
                },
            ) => {
                // A peer alone never makes this device drop changes: only those this device's
                // own roster also refuses (e.g. a revocation it has since received) are dropped,
                // as on the relay's `Reject`. Otherwise the peer is wrong, lagging or hostile:
                // stop offering it this document in this session.
                let hashes: Vec<ChangeHash> = changes.into_iter().map(ChangeHash).collect();
                let confirmed = if doc.kind == DocKind::Roster {
                    Vec::new()
                } else {
                    self.replica.unauthorized_among(&doc, &hashes)?
                };
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.docs.remove(&doc);
                }
                if confirmed.is_empty() {
                    self.replica.events.push_back(NodeEvent::PeerMisbehaved {
                        session: sid,
                        detail: format!("LAN peer refused changes of {doc}: {reason:?}"),
                    });
                    self.lan.refused.entry(sid).or_default().insert(doc);
                } else {
                    self.replica.drop_rejected(&doc, &confirmed, reason)?;
                    self.generate(sid, &doc)?;
                }
                Ok(())
            }
            (Phase::Established, Message::Ephemeral { doc, payload }) => {
                if self.peer_may_sync(sid, &doc) {
                    self.on_ephemeral(sid, doc, payload);
                }
                Ok(())
            }
            (_, other) => {
                self.fail(
                    sid,
                    ErrorCode::UnexpectedMessage,
                    &format!("unexpected {} message", other.kind()),
                    true,
                );
                Ok(())
            }
        }
    }

    fn on_peer_hello(
        &mut self,
        now: i64,
        sid: SessionId,
        versions: &[u16],
        device: homeroom_core::DeviceId,
        proof: &Sig64,
        classes: &[ClassDigest],
    ) -> Result<(), SyncError> {
        if !versions.contains(&PROTOCOL_VERSION) {
            self.fail(
                sid,
                ErrorCode::UnsupportedVersion,
                "no common protocol version",
                true,
            );
            return Ok(());
        }
        let Some(exporter) = self.sessions.get(&sid).map(|s| s.exporter) else {
            return Ok(());
        };
        if device
            .verify(HANDSHAKE_DOMAIN, &exporter, &proof.0)
            .is_err()
        {
            self.fail(
                sid,
                ErrorCode::AuthenticationFailed,
                "handshake proof does not verify",
                true,
            );
            return Ok(());
        }
        let me = self.replica.device_id().ok_or(SyncError::NoDeviceKey)?;
        if device == me {
            // Both ends sign the same exporter: our own Hello sent back is not a peer.
            self.fail(
                sid,
                ErrorCode::AuthenticationFailed,
                "the peer presented this device's own key",
                true,
            );
            return Ok(());
        }
        let mine = self.replica.classes_of(&me);
        let shared: Vec<ClassId> = self
            .replica
            .classes_of(&device)
            .into_iter()
            .filter(|c| mine.contains(c))
            .collect();
        // No class in common on our rosters is not fatal yet: the peer may hold a class that
        // enrolls us and that we have not received (its catalog then offers the roster).
        let theirs: HashMap<ClassId, [u8; 8]> =
            classes.iter().map(|c| (c.class, c.digest)).collect();
        let mut catalog = Vec::with_capacity(shared.len());
        for class in &shared {
            let digests = self.shared_digests(*class, &device)?;
            let digest = class_digest(&digests);
            let docs = (theirs.get(class) != Some(&digest)).then(|| {
                digests
                    .iter()
                    .map(|(d, g)| DocDigest {
                        kind: d.kind,
                        digest: *g,
                    })
                    .collect()
            });
            catalog.push(ClassCatalog {
                class: *class,
                digest,
                docs,
            });
        }
        self.establish(now, sid, device, &shared, catalog);
        Ok(())
    }

    /// The peer's catalog: start syncing every shared document whose digest differs. Unlike a
    /// relay's catalog, equal digests mark nothing delivered.
    fn on_peer_catalog(
        &mut self,
        sid: SessionId,
        classes: Vec<ClassCatalog>,
    ) -> Result<(), SyncError> {
        let mut useful = self
            .sessions
            .get(&sid)
            .is_some_and(|s| !s.classes.is_empty());
        for cat in classes {
            let following = self
                .sessions
                .get(&sid)
                .is_some_and(|s| s.classes.contains(&cat.class));
            let held = self
                .replica
                .roster(&cat.class)
                .is_some_and(|r| !r.members.is_empty());
            if !following && !held {
                // A class we do not hold, whose roster (per the peer) enrolls us: fetch the
                // roster alone; once it verifies and names us, the rest follows.
                let offers_roster = cat
                    .docs
                    .as_ref()
                    .is_some_and(|d| d.iter().any(|x| x.kind == DocKind::Roster));
                if offers_roster {
                    useful = true;
                    self.lan.bootstrap.entry(sid).or_default().insert(cat.class);
                    self.class_sessions
                        .entry(cat.class)
                        .or_default()
                        .insert(sid);
                    self.generate(sid, &DocId::new(cat.class, DocKind::Roster))?;
                }
                continue;
            }
            let Some(mut docs) = cat.docs.filter(|_| following) else {
                continue;
            };
            // Roster first: it decides what the rest may be.
            docs.sort_by_key(|d| d.kind != DocKind::Roster);
            for dd in docs {
                let doc = DocId::new(cat.class, dd.kind);
                if !self.peer_may_sync(sid, &doc) {
                    continue;
                }
                let heads = self.replica.advertised_heads(&doc)?;
                if heads_digest(&heads) != dd.digest {
                    self.generate(sid, &doc)?;
                }
            }
        }
        if !useful {
            self.fail(
                sid,
                ErrorCode::NotEnrolled,
                "no class in common with this device",
                true,
            );
        }
        Ok(())
    }

    /// Verify and apply a peer's changes: strictly (a known device without the right is
    /// rejected) once this device holds every roster change the peer announced for the class.
    pub(super) fn peer_ingest(
        &mut self,
        sid: SessionId,
        doc: &DocId,
        message: &sync::Message,
        incoming: Vec<IncomingChange>,
        now: i64,
    ) -> Result<IngestOutcome, SyncError> {
        if doc.kind == DocKind::Roster {
            // The peer's roster as it announces it (its heads include these very changes).
            self.lan
                .roster_heads
                .entry(sid)
                .or_default()
                .insert(doc.class, message.heads.clone());
            return self.replica.ingest(doc, incoming, now);
        }
        let announced = self
            .lan
            .roster_heads
            .get(&sid)
            .and_then(|m| m.get(&doc.class))
            .cloned();
        let caught_up = match announced {
            Some(heads) => {
                let roster = self
                    .replica
                    .document(&DocId::new(doc.class, DocKind::Roster))?;
                heads.iter().all(|h| roster.get_change_by_hash(h).is_some())
            }
            None => false,
        };
        if caught_up {
            self.replica.ingest_from_peer(doc, incoming, now)
        } else {
            self.replica.ingest(doc, incoming, now)
        }
    }

    /// After a local edit of `doc`: a roster edit (e.g. this staff device revoking a peer's
    /// device) updates the LAN peer sessions as a received roster change does.
    pub(super) fn after_local_roster_edit(&mut self, doc: &DocId) -> Result<(), SyncError> {
        if doc.kind == DocKind::Roster && !self.replica.is_relay() {
            self.peer_roster_changed(doc.class)?;
        }
        Ok(())
    }

    /// A roster changed: every established peer session of the class starts syncing the
    /// documents both may now read. A session whose peer (or this device) no longer shares the
    /// class — a revoked device, a removed member — stops following it
    /// ([`SyncNode::peer_class_dropped`]): a removed peer gets the roster and may only upload
    /// (what it dated after the removal is refused with `Reject { NotAWriter }` and audited);
    /// a session left with no class in common is closed with `Error { NotEnrolled }`, and a
    /// new handshake from that peer finds no class in common either.
    pub(super) fn peer_roster_changed(&mut self, class: ClassId) -> Result<(), SyncError> {
        let Some(me) = self.replica.device_id() else {
            return Ok(());
        };
        let sids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.side == Side::Peer && s.phase == Phase::Established)
            .map(|(id, _)| *id)
            .collect();
        let mine = self.replica.classes_of(&me).contains(&class);
        for sid in sids {
            let Some(peer) = self.sessions.get(&sid).map(|s| s.peer) else {
                continue;
            };
            // The class is shared now (e.g. its roster just arrived, or enrolled the peer), or
            // no longer (a revocation): follow the roster.
            let shared = mine && self.replica.classes_of(&peer).contains(&class);
            let mut dropped = false;
            if let Some(s) = self.sessions.get_mut(&sid) {
                if shared {
                    s.classes.insert(class);
                } else {
                    dropped = s.classes.remove(&class);
                    s.docs
                        .retain(|d, _| d.class != class || d.kind == DocKind::Roster);
                }
            }
            if shared {
                self.class_sessions.entry(class).or_default().insert(sid);
                if let Some(b) = self.lan.bootstrap.get_mut(&sid) {
                    b.remove(&class);
                }
                if let Some(r) = self.lan.removed.get_mut(&sid) {
                    r.remove(&class);
                }
            } else {
                if dropped {
                    self.peer_class_dropped(sid, class, &peer)?;
                }
                continue;
            }
            let docs: Vec<DocId> = self
                .replica
                .roster(&class)
                .map(|r| {
                    r.readable_docs(class, &me)
                        .into_iter()
                        .filter(|d| r.can_read(&peer, &d.kind))
                        .collect()
                })
                .unwrap_or_default();
            for doc in docs {
                let known = self
                    .sessions
                    .get(&sid)
                    .is_some_and(|s| s.docs.contains_key(&doc));
                if !known {
                    self.generate(sid, &doc)?;
                }
            }
        }
        Ok(())
    }

    /// Session `sid` stopped sharing `class` (the peer's device was revoked or its member
    /// removed, per this device's roster, or this device was): it no longer follows the class.
    /// A removed peer is sent the roster (so it learns of its removal) and may still upload (to
    /// be refused). A session left with no class in common, and none offered to join, is
    /// closed after that roster sync.
    fn peer_class_dropped(
        &mut self,
        sid: SessionId,
        class: ClassId,
        peer: &homeroom_core::DeviceId,
    ) -> Result<(), SyncError> {
        let removed = self
            .replica
            .roster(&class)
            .is_some_and(|r| r.inactive_since(peer).is_some());
        let none_left = self
            .sessions
            .get(&sid)
            .is_some_and(|s| s.classes.is_empty());
        let joining = self.lan.bootstrap.get(&sid).is_some_and(|b| !b.is_empty());
        let closing = none_left && !joining;
        if removed {
            self.lan.removed.entry(sid).or_default().insert(class);
            if closing {
                // No time for the sync protocol's round trips: the changes it lacks, now.
                self.push_roster(sid, class)?;
            } else {
                self.generate(sid, &DocId::new(class, DocKind::Roster))?;
            }
        } else if let Some(set) = self.class_sessions.get_mut(&class) {
            set.remove(&sid);
        }
        if closing {
            self.fail(
                sid,
                ErrorCode::NotEnrolled,
                &format!("no class in common any more (removed from class {class})"),
                true,
            );
        }
        Ok(())
    }

    /// Send the peer of `sid`, in one sync message, the changes of `class`'s roster it lacks
    /// (beyond the heads it last told us): a removed peer learns of its removal before its
    /// session closes.
    fn push_roster(&mut self, sid: SessionId, class: ClassId) -> Result<(), SyncError> {
        let doc = DocId::new(class, DocKind::Roster);
        let theirs: Vec<ChangeHash> = self
            .sessions
            .get(&sid)
            .and_then(|s| s.docs.get(&doc))
            .map(|pd| {
                pd.state
                    .their_heads
                    .clone()
                    .unwrap_or_else(|| pd.state.shared_heads.clone())
            })
            .unwrap_or_default();
        let roster = self.replica.document(&doc)?;
        let known: Vec<ChangeHash> = theirs
            .into_iter()
            .filter(|h| roster.get_change_by_hash(h).is_some())
            .collect();
        let heads = roster.get_heads();
        let changes: Vec<Vec<u8>> = self
            .replica
            .changes_since(&doc, &known)?
            .iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        if changes.is_empty() {
            return Ok(());
        }
        let message = sync::Message {
            heads,
            need: Vec::new(),
            have: Vec::new(),
            changes: ChunkList::from(changes),
            flags: None,
            version: MessageVersion::V1,
        };
        self.queue_sync(sid, &doc, message, false, None)
    }
}
