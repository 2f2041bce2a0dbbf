//! [`SyncNode`]: a replica plus one protocol session per connected peer.
//!
//! The node is a pure state machine. Drivers (the relay, the device client, the simulator)
//! call it in this order, repeatedly:
//!
//! 1. inputs: [`SyncNode::accept`] / [`SyncNode::connect`] when a connection opens,
//!    [`SyncNode::handle_message`] for each decoded frame, [`SyncNode::handle_closed`] when a
//!    connection ends, [`SyncNode::handle_write_done`] when a storage write is durable,
//!    [`SyncNode::handle_timeout`] when the deadline from `poll_timeout` passes, and local
//!    edits through [`SyncNode::edit`];
//! 2. outputs, drained until `None`: [`SyncNode::poll_write`] (persist, then report done),
//!    [`SyncNode::poll_transmit`] (encode and send), [`SyncNode::poll_close`] (close after
//!    sending what was queued for that session), [`SyncNode::poll_event`];
//! 3. [`SyncNode::poll_timeout`] for the next deadline.
//!
//! Every `now` is milliseconds since the Unix epoch, supplied by the driver.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use homeroom_core::automerge::sync::{self, ChunkList, MessageVersion, SyncDoc};
use homeroom_core::automerge::transaction::Transaction;
use homeroom_core::automerge::{Automerge, Change, ChangeHash, ReadDoc};
use homeroom_core::roster::RosterIndex;
use homeroom_core::{
    ChangeSignature, ClassId, DeviceId, DocId, DocKind, MemberId, ModelError, roster,
};
use homeroom_protocol::{
    ClassCatalog, ClassDigest, DocDigest, ErrorCode, HANDSHAKE_DOMAIN, Message, PROTOCOL_VERSION,
    Sig64, SignatureEntry, class_digest, heads_digest,
};

use crate::error::SyncError;
use crate::replica::{IncomingChange, Replica};
use crate::write::{NodeEvent, StorageWrite, WriteId};

mod join;
mod peer;

/// How many changes received from a peer may go unanswered, on average, before we answer with
/// our heads (see `SyncNode::receive`). 1 is automerge's own behaviour (answer every message
/// that carried changes); more trades staleness of the peer's sync state (its per-message cost
/// grows with the unanswered changes) for fewer messages. The count that triggers each answer
/// is drawn afresh after every message we send, between half and one and a half times this,
/// from a sequence seeded by the device key and the document ([`PeerDoc::next_answer`]): a
/// fixed count would let the 30 parents of a class, who all sent their last message at the
/// same moment (the initial sync), answer the same later post together — measured as every
/// eighth W1 post arriving ~3 ms later than the others.
const ACK_AFTER_CHANGES: usize = 8;

/// Distinct sync states a fan-out remembers the generated message for ([`FanOutMemo`]): the
/// sessions of a class fall into at most ~[`ACK_AFTER_CHANGES`] groups.
const FAN_OUT_MEMOS: usize = 2 * ACK_AFTER_CHANGES;

/// Identifies one session (one connected peer) within a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// Which end of the protocol this node plays in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// We are the relay; the peer is a device.
    Relay,
    /// We are a device; the peer is a relay (or a hub device).
    Device,
    /// LAN: we are a device and so is the peer; each authenticates and checks the other
    /// (see `node/peer.rs`).
    Peer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitHello { deadline: i64 },
    AwaitWelcome { deadline: i64 },
    Established,
    Closed,
}

/// Per-document state of one session.
#[derive(Debug)]
struct PeerDoc {
    state: sync::State,
    /// Heads last reported to the peer in `Saved`.
    last_saved: Vec<ChangeHash>,
    /// Changes applied from this peer's messages since we last sent it a sync message (see
    /// [`ACK_AFTER_CHANGES`]).
    applied_since_sent: usize,
    /// Answer once `applied_since_sent` reaches this.
    answer_after: usize,
    /// State of the sequence `answer_after` is drawn from.
    answer_seed: u64,
}

impl PeerDoc {
    /// A peer document whose answer counts follow a sequence seeded by `key` (this device's,
    /// or on a relay the peer's) and the document.
    fn new(state: sync::State, key: &DeviceId, doc: &DocId) -> PeerDoc {
        use std::hash::{DefaultHasher, Hash, Hasher};
        // `DefaultHasher::new()` has fixed keys: the same inputs give the same sequence, so
        // simulations stay reproducible from their seed.
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        doc.hash(&mut h);
        let mut pd = PeerDoc {
            state,
            last_saved: Vec::new(),
            applied_since_sent: 0,
            answer_after: ACK_AFTER_CHANGES,
            answer_seed: h.finish(),
        };
        pd.next_answer();
        pd
    }

    /// Start counting towards the next answer, drawing its count (splitmix64 steps).
    fn next_answer(&mut self) {
        self.applied_since_sent = 0;
        self.answer_seed = self.answer_seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.answer_seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let spread = u64::try_from(ACK_AFTER_CHANGES).unwrap_or(8);
        self.answer_after = ACK_AFTER_CHANGES / 2 + usize::try_from(z % spread).unwrap_or(0);
    }
}

#[derive(Debug)]
struct Session {
    side: Side,
    phase: Phase,
    exporter: [u8; 32],
    /// The authenticated device (relay side), or the relay's key (device side).
    peer: DeviceId,
    classes: BTreeSet<ClassId>,
    docs: HashMap<DocId, PeerDoc>,
    new_classes: usize,
}

/// A replica and its sessions: the whole sans-IO engine of one relay or device.
pub struct SyncNode {
    replica: Replica,
    sessions: BTreeMap<SessionId, Session>,
    class_sessions: HashMap<ClassId, BTreeSet<SessionId>>,
    next_session: u64,
    transmits: VecDeque<(SessionId, Message)>,
    closes: VecDeque<(SessionId, String)>,
    /// Sessions that sent changes to a document and await `Saved` once they are durable.
    awaiting_saved: HashMap<DocId, BTreeSet<SessionId>>,
    /// State of LAN peer sessions.
    lan: peer::LanState,
    /// Relay: guest (joining) and removed sessions' extra rights.
    joins: join::JoinState,
    /// Device: invites being redeemed, by class.
    pending_joins: BTreeMap<ClassId, PendingJoin>,
    /// The last change chunk whose hash `signatures_for` computed, and that hash: a fan-out
    /// sends the same change to every session.
    last_chunk: Option<(Vec<u8>, ChangeHash)>,
    /// Fan-out sync messages generated / reused from an equal state ([`FanOutMemo`]).
    fan_out_counts: (u64, u64),
}

/// Device side: an invite this device is redeeming.
struct PendingJoin {
    /// The invite secret (derives the invite key).
    secret: [u8; 16],
    /// The new member's display name.
    name: String,
    /// The redemption change, once written.
    redeemed: Option<ChangeHash>,
    /// When the relay first answered "unknown invite" (the roster may not have reached the
    /// relay yet: the teacher's device uploads it), and when to ask again.
    unknown_since: Option<i64>,
    retry_at: Option<i64>,
}

impl std::fmt::Debug for SyncNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncNode")
            .field("replica", &self.replica)
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

impl SyncNode {
    /// A node over `replica`.
    pub fn new(replica: Replica) -> Self {
        Self {
            replica,
            sessions: BTreeMap::new(),
            class_sessions: HashMap::new(),
            next_session: 1,
            transmits: VecDeque::new(),
            closes: VecDeque::new(),
            awaiting_saved: HashMap::new(),
            lan: peer::LanState::default(),
            joins: join::JoinState::default(),
            pending_joins: BTreeMap::new(),
            last_chunk: None,
            fan_out_counts: (0, 0),
        }
    }

    /// Sync messages this node's fan-outs asked automerge for, and how many of those it took
    /// from another session's equal sync state instead ([`FanOutMemo`]).
    pub fn fan_out_counts(&self) -> (u64, u64) {
        self.fan_out_counts
    }

    /// The replica (read-only).
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The replica, for reads that may load documents.
    pub fn replica_mut(&mut self) -> &mut Replica {
        &mut self.replica
    }

    /// Number of open sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The authenticated peer of an established relay-side session.
    pub fn peer_of(&self, session: SessionId) -> Option<DeviceId> {
        self.sessions
            .get(&session)
            .filter(|s| s.side == Side::Relay && s.phase == Phase::Established)
            .map(|s| s.peer)
    }

    /// Whether the session completed its handshake.
    pub fn is_established(&self, session: SessionId) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|s| s.phase == Phase::Established)
    }

    fn alloc_session(&mut self) -> SessionId {
        let id = SessionId(self.next_session);
        self.next_session += 1;
        id
    }

    /// Relay side: a device connected. `exporter` is the TLS session's exported keying material
    /// (label `EXPORTER_LABEL`), which the device must sign in its `Hello`.
    pub fn accept(&mut self, now: i64, exporter: [u8; 32]) -> SessionId {
        let id = self.alloc_session();
        let timeout = i64::try_from(self.replica.limits().handshake_timeout_ms).unwrap_or(i64::MAX);
        self.sessions.insert(
            id,
            Session {
                side: Side::Relay,
                phase: Phase::AwaitHello {
                    deadline: now.saturating_add(timeout),
                },
                exporter,
                peer: DeviceId([0; 32]),
                classes: BTreeSet::new(),
                docs: HashMap::new(),
                new_classes: 0,
            },
        );
        id
    }

    /// Device side: connected to a relay whose key (e.g. a hash of its pinned certificate) is
    /// `relay_key`. Queues the `Hello`.
    pub fn connect(
        &mut self,
        now: i64,
        exporter: [u8; 32],
        relay_key: [u8; 32],
    ) -> Result<SessionId, SyncError> {
        let device = self.replica.device_id().ok_or(SyncError::NoDeviceKey)?;
        let proof = self.replica.sign_handshake(&exporter)?;
        let id = self.alloc_session();
        let timeout = i64::try_from(self.replica.limits().handshake_timeout_ms).unwrap_or(i64::MAX);
        let mut classes = Vec::new();
        for class in self.replica.classes() {
            let digest = self.local_class_digest(class, &device)?;
            classes.push(ClassDigest { class, digest });
        }
        self.sessions.insert(
            id,
            Session {
                side: Side::Device,
                phase: Phase::AwaitWelcome {
                    deadline: now.saturating_add(timeout),
                },
                exporter,
                peer: DeviceId(relay_key),
                classes: BTreeSet::new(),
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

    /// Digests of every document `device` may read in `class`, per the local roster.
    fn doc_digests(
        &mut self,
        class: ClassId,
        device: &DeviceId,
    ) -> Result<Vec<(DocId, [u8; 8])>, SyncError> {
        let docs = match self.replica.roster(&class) {
            Some(r) => r.readable_docs(class, device),
            None => Vec::new(),
        };
        let mut out = Vec::with_capacity(docs.len());
        for d in docs {
            let heads = self.replica.advertised_heads(&d)?;
            out.push((d, heads_digest(&heads)));
        }
        Ok(out)
    }

    fn local_class_digest(
        &mut self,
        class: ClassId,
        device: &DeviceId,
    ) -> Result<[u8; 8], SyncError> {
        let digests = self.doc_digests(class, device)?;
        Ok(class_digest(&digests))
    }

    /// The connection of `session` ended (by either side or the network).
    pub fn handle_closed(&mut self, session: SessionId, reason: &str) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        self.lan.forget(session);
        self.joins.forget(session);
        for class in &s.classes {
            if let Some(set) = self.class_sessions.get_mut(class) {
                set.remove(&session);
            }
        }
        let states: Vec<(DeviceId, DocId, Vec<u8>)> = s
            .docs
            .iter()
            .map(|(doc, pd)| (s.peer, *doc, pd.state.encode()))
            .collect();
        if s.phase == Phase::Established && !states.is_empty() {
            self.replica.queue_sync_states(states);
        }
        self.replica.events.push_back(NodeEvent::SessionClosed {
            session,
            reason: reason.to_string(),
        });
    }

    /// Deadlines passed: close sessions whose handshake did not complete in time.
    pub fn handle_timeout(&mut self, now: i64) {
        self.retry_joins(now);
        let expired: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| match s.phase {
                Phase::AwaitHello { deadline } | Phase::AwaitWelcome { deadline } => {
                    now >= deadline
                }
                _ => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.fail(
                id,
                ErrorCode::UnexpectedMessage,
                "handshake timed out",
                true,
            );
        }
    }

    /// The next deadline, if any.
    pub fn poll_timeout(&self) -> Option<i64> {
        self.sessions
            .values()
            .filter_map(|s| match s.phase {
                Phase::AwaitHello { deadline } | Phase::AwaitWelcome { deadline } => Some(deadline),
                _ => None,
            })
            .chain(self.pending_joins.values().filter_map(|j| j.retry_at))
            .min()
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<(SessionId, Message)> {
        self.transmits.pop_front()
    }

    /// A session the engine wants closed (after its queued messages are sent).
    pub fn poll_close(&mut self) -> Option<(SessionId, String)> {
        self.closes.pop_front()
    }

    /// The next storage write.
    pub fn poll_write(&mut self) -> Option<StorageWrite> {
        self.replica.poll_write()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.replica.events.pop_front()
    }

    /// A storage write is durable. On a relay this releases `Saved` for the documents it
    /// covered; on a device it completes "saved on this device".
    pub fn handle_write_done(&mut self, id: WriteId) {
        let advanced = self.replica.handle_write_done(id);
        for doc in advanced {
            // Later writes of this document (changes a session sent while this one was being
            // written) release their own `Saved`: keep their sessions waiting until the last.
            let waiting = if self.replica.has_changes_in_flight(&doc) {
                self.awaiting_saved.get(&doc).cloned()
            } else {
                self.awaiting_saved.remove(&doc)
            };
            let Some(waiting) = waiting else {
                continue;
            };
            for sid in waiting {
                self.send_saved(sid, &doc, true);
            }
        }
    }

    fn send_saved(&mut self, sid: SessionId, doc: &DocId, force: bool) {
        if !self.replica.is_relay() {
            return;
        }
        let heads = match self.replica.advertised_heads(doc) {
            Ok(h) => h,
            Err(_) => return,
        };
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.phase != Phase::Established {
            return;
        }
        let peer = s.peer;
        let pd = s
            .docs
            .entry(*doc)
            .or_insert_with(|| PeerDoc::new(sync::State::new(), &peer, doc));
        if !force && pd.last_saved == heads {
            return;
        }
        pd.last_saved = heads.clone();
        self.transmits.push_back((
            sid,
            Message::Saved {
                doc: *doc,
                heads: heads.iter().map(|h| h.0).collect(),
            },
        ));
    }

    fn fail(&mut self, sid: SessionId, code: ErrorCode, detail: &str, fatal: bool) {
        self.transmits.push_back((
            sid,
            Message::Error {
                code,
                detail: detail.to_string(),
                fatal,
            },
        ));
        self.replica.events.push_back(NodeEvent::PeerMisbehaved {
            session: sid,
            detail: format!("{code:?}: {detail}"),
        });
        if fatal {
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.phase = Phase::Closed;
            }
            self.closes.push_back((sid, format!("{code:?}: {detail}")));
        }
    }

    /// Handle one decoded message from a session's peer.
    pub fn handle_message(
        &mut self,
        now: i64,
        sid: SessionId,
        msg: Message,
    ) -> Result<(), SyncError> {
        let Some(s) = self.sessions.get(&sid) else {
            return Err(SyncError::NoSuchSession(sid.0));
        };
        let (side, phase) = (s.side, s.phase);
        match (side, phase, msg) {
            (_, Phase::Closed, _) => Ok(()),
            (Side::Peer, _, msg) => self.on_peer_message(now, sid, phase, msg),
            (
                Side::Relay,
                Phase::AwaitHello { .. },
                Message::Hello {
                    versions,
                    device,
                    proof,
                    classes,
                },
            ) => self.on_hello(now, sid, &versions, device, &proof, &classes),
            (Side::Relay, Phase::AwaitHello { .. }, _) => {
                self.fail(sid, ErrorCode::UnexpectedMessage, "expected Hello", true);
                Ok(())
            }
            (Side::Device, Phase::AwaitWelcome { .. }, Message::Welcome { version, .. }) => {
                if version != PROTOCOL_VERSION {
                    self.fail(
                        sid,
                        ErrorCode::UnsupportedVersion,
                        "relay chose an unknown version",
                        true,
                    );
                } else if let Some(s) = self.sessions.get_mut(&sid) {
                    s.phase = Phase::Established;
                    self.replica
                        .events
                        .push_back(NodeEvent::SessionEstablished {
                            session: sid,
                            peer: None,
                        });
                    self.send_joins(sid);
                }
                Ok(())
            }
            (
                _,
                _,
                Message::Error {
                    code,
                    detail,
                    fatal,
                },
            ) => {
                self.replica.events.push_back(NodeEvent::PeerMisbehaved {
                    session: sid,
                    detail: format!("peer reported {code:?}: {detail}"),
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
            (Side::Device, Phase::AwaitWelcome { .. }, _) => {
                self.fail(sid, ErrorCode::UnexpectedMessage, "expected Welcome", true);
                Ok(())
            }
            (
                Side::Relay,
                Phase::Established,
                Message::Join {
                    class,
                    invite,
                    proof,
                },
            ) => self.on_join(now, sid, class, invite, &proof),
            (Side::Device, Phase::Established, Message::JoinRefused { class, reason }) => {
                self.on_join_refused(now, class, reason);
                Ok(())
            }
            (Side::Relay, Phase::Established, Message::FindInvite { invite, proof }) => {
                self.on_find_invite(sid, invite, &proof);
                Ok(())
            }
            (Side::Device, Phase::Established, Message::InviteClass { invite, class }) => {
                self.on_invite_class(now, invite, class);
                Ok(())
            }
            (Side::Device, Phase::Established, Message::Catalog { classes }) => {
                self.on_catalog(now, sid, classes)
            }
            (
                _,
                Phase::Established,
                Message::Sync {
                    doc,
                    payload,
                    signatures,
                },
            ) => self.on_sync(now, sid, doc, &payload, &signatures),
            (Side::Device, Phase::Established, Message::Saved { doc, heads }) => {
                let heads: Vec<ChangeHash> = heads.into_iter().map(ChangeHash).collect();
                self.replica.mark_delivered_up_to(&doc, &heads)?;
                Ok(())
            }
            (
                Side::Device,
                Phase::Established,
                Message::Reject {
                    doc,
                    changes,
                    reason,
                },
            ) => {
                let hashes: Vec<ChangeHash> = changes.into_iter().map(ChangeHash).collect();
                self.replica.drop_rejected(&doc, &hashes, reason)?;
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.docs.remove(&doc);
                }
                self.generate(sid, &doc)?;
                Ok(())
            }
            (Side::Relay, Phase::Established, Message::Reject { doc, reason, .. }) => {
                self.replica.events.push_back(NodeEvent::PeerMisbehaved {
                    session: sid,
                    detail: format!("device refused changes of {doc}: {reason:?}"),
                });
                Ok(())
            }
            (_, Phase::Established, Message::Ephemeral { doc, payload }) => {
                self.on_ephemeral(sid, doc, payload);
                Ok(())
            }
            (_, _, other) => {
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

    fn on_hello(
        &mut self,
        _now: i64,
        sid: SessionId,
        versions: &[u16],
        device: DeviceId,
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
        let exporter = match self.sessions.get(&sid) {
            Some(s) => s.exporter,
            None => return Ok(()),
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
        let enrolled = self.replica.classes_of(&device);
        let theirs: HashMap<ClassId, [u8; 8]> =
            classes.iter().map(|c| (c.class, c.digest)).collect();
        let mut catalog = Vec::with_capacity(enrolled.len());
        for class in &enrolled {
            catalog.push(self.class_catalog(*class, &device, theirs.get(class))?);
        }
        catalog.extend(self.removed_catalog(sid, &device)?);
        self.establish(_now, sid, device, &enrolled, catalog);
        for class in &enrolled {
            self.push_not_yet_durable(sid, *class, &device)?;
        }
        Ok(())
    }

    /// Answer an accepted `Hello` (from a device to a relay, or between LAN peers): the
    /// session follows `classes`, and `Welcome` then `catalog` go out.
    pub(super) fn establish(
        &mut self,
        now: i64,
        sid: SessionId,
        device: DeviceId,
        classes: &[ClassId],
        catalog: Vec<ClassCatalog>,
    ) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.peer = device;
            s.phase = Phase::Established;
            s.classes = classes.iter().copied().collect();
        }
        for class in classes {
            self.class_sessions.entry(*class).or_default().insert(sid);
        }
        self.transmits.push_back((
            sid,
            Message::Welcome {
                version: PROTOCOL_VERSION,
                relay_time: now,
            },
        ));
        self.transmits
            .push_back((sid, Message::Catalog { classes: catalog }));
        self.replica
            .events
            .push_back(NodeEvent::SessionEstablished {
                session: sid,
                peer: Some(device),
            });
    }

    /// The catalog entry of `class` for `device`: the class digest, and the per-document
    /// digests unless the device's own class digest (`theirs`) already matches.
    fn class_catalog(
        &mut self,
        class: ClassId,
        device: &DeviceId,
        theirs: Option<&[u8; 8]>,
    ) -> Result<ClassCatalog, SyncError> {
        let digests = self.doc_digests(class, device)?;
        let digest = class_digest(&digests);
        let docs = (theirs != Some(&digest)).then(|| {
            digests
                .iter()
                .map(|(d, g)| DocDigest {
                    kind: d.kind,
                    digest: *g,
                })
                .collect()
        });
        Ok(ClassCatalog {
            class,
            digest,
            docs,
        })
    }

    /// The catalog describes durable heads (that is what lets a device mark its edits
    /// delivered). Documents whose in-memory heads are ahead of disk would look "equal" to a
    /// device that lacks the newer changes: start their sync now instead of waiting.
    fn push_not_yet_durable(
        &mut self,
        sid: SessionId,
        class: ClassId,
        device: &DeviceId,
    ) -> Result<(), SyncError> {
        let docs = self.replica.docs_ahead_of_disk(class);
        for doc in docs {
            let readable = self
                .replica
                .roster(&class)
                .is_some_and(|r| r.can_read(device, &doc.kind));
            if readable {
                self.generate(sid, &doc)?;
            }
        }
        Ok(())
    }

    fn on_catalog(
        &mut self,
        _now: i64,
        sid: SessionId,
        classes: Vec<ClassCatalog>,
    ) -> Result<(), SyncError> {
        let device = self.replica.device_id().ok_or(SyncError::NoDeviceKey)?;
        let mut listed = BTreeSet::new();
        for cat in classes {
            self.on_catalog_entry(cat.class, cat.docs.as_deref());
            listed.insert(cat.class);
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.classes.insert(cat.class);
            }
            self.class_sessions
                .entry(cat.class)
                .or_default()
                .insert(sid);
            // A joining device fetches the roster whatever the digests say: the relay's
            // digest covers only what is durable there, and a class that has just arrived may
            // still be at its genesis heads on the relay's disk — "equal" would leave the
            // joiner waiting for a roster nobody sends (guests get no fan-out).
            let joining = self
                .pending_joins
                .get(&cat.class)
                .is_some_and(|j| j.redeemed.is_none());
            let local = self.doc_digests(cat.class, &device)?;
            if !joining && class_digest(&local) == cat.digest {
                for (doc, _) in &local {
                    self.replica.mark_all_delivered(doc)?;
                }
                continue;
            }
            let Some(docs) = cat.docs else {
                // The relay saw our Hello digest as equal; we changed since: edits sync anyway.
                for (doc, _) in &local {
                    self.generate(sid, doc)?;
                }
                continue;
            };
            // Roster first: it decides whether the rest may be verified.
            // Local edits of documents the relay does not list (this device was removed from
            // the class, or its roster lags): offer them anyway; the relay decides (a removed
            // author's edits are refused there and kept for audit).
            let mut unlisted: Vec<DocId> = self
                .replica
                .undelivered()
                .into_iter()
                .map(|(d, _)| d)
                .filter(|d| d.class == cat.class && !docs.iter().any(|x| x.kind == d.kind))
                .collect();
            unlisted.dedup();
            let mut order: Vec<DocDigest> = docs;
            order.sort_by_key(|d| d.kind != DocKind::Roster);
            for dd in order {
                let doc = DocId::new(cat.class, dd.kind);
                let heads = self.replica.advertised_heads(&doc)?;
                let fetch = joining && dd.kind == DocKind::Roster;
                if !fetch && heads_digest(&heads) == dd.digest {
                    self.replica.mark_all_delivered(&doc)?;
                } else {
                    // The relay says we differ: whatever was in flight was lost or refused.
                    if let Some(pd) = self
                        .sessions
                        .get_mut(&sid)
                        .and_then(|s| s.docs.get_mut(&doc))
                    {
                        pd.state.in_flight = false;
                    }
                    self.generate(sid, &doc)?;
                }
            }
            for doc in unlisted {
                self.generate(sid, &doc)?;
            }
        }
        // Classes the relay does not list: if we founded them, upload the roster.
        for class in self.replica.classes() {
            if listed.contains(&class) {
                continue;
            }
            let roster_id = DocId::new(class, DocKind::Roster);
            let founder = roster::founding_of(self.replica.document(&roster_id)?).map(|(d, _)| d);
            if founder == Some(device) {
                // Not yet in `classes`: only the roster syncs until the relay lists the class.
                self.class_sessions.entry(class).or_default().insert(sid);
                self.generate(sid, &roster_id)?;
            }
        }
        Ok(())
    }

    fn may_access(&self, sid: SessionId, doc: &DocId) -> bool {
        let Some(s) = self.sessions.get(&sid) else {
            return false;
        };
        if s.side == Side::Peer {
            return self.peer_may_sync(sid, doc) || self.peer_may_upload(sid, doc);
        }
        if s.side == Side::Device {
            // A device syncs only documents of classes it holds; the relay decides the rest.
            return true;
        }
        if self.join_may_upload(sid, doc) {
            return true;
        }
        match self.replica.roster(&doc.class) {
            Some(r) if !r.members.is_empty() => {
                r.can_read(&s.peer, &doc.kind) || r.can_write(&s.peer, &doc.kind)
            }
            _ => doc.kind == DocKind::Roster,
        }
    }

    fn on_sync(
        &mut self,
        now: i64,
        sid: SessionId,
        doc: DocId,
        payload: &[u8],
        signatures: &[SignatureEntry],
    ) -> Result<(), SyncError> {
        if !self.may_access(sid, &doc) {
            self.fail(
                sid,
                ErrorCode::NoSuchDocument,
                &format!("no document {doc}"),
                false,
            );
            return Ok(());
        }
        let side = self.sessions.get(&sid).map(|s| s.side);
        let class_known = self
            .replica
            .roster(&doc.class)
            .is_some_and(|r| !r.members.is_empty());
        if side == Some(Side::Relay) && !class_known {
            let s = self
                .sessions
                .get_mut(&sid)
                .ok_or(SyncError::NoSuchSession(sid.0))?;
            if !s.docs.contains_key(&doc) {
                if s.new_classes >= self.replica.limits().max_new_classes_per_session {
                    self.fail(
                        sid,
                        ErrorCode::LimitExceeded,
                        "too many new classes in one session",
                        false,
                    );
                    return Ok(());
                }
                s.new_classes += 1;
            }
        }
        if let Some(s) = self.sessions.get(&sid)
            && !s.docs.contains_key(&doc)
            && s.docs.len() >= self.replica.limits().max_docs_per_session
        {
            self.fail(
                sid,
                ErrorCode::LimitExceeded,
                "too many documents in one session",
                false,
            );
            return Ok(());
        }
        // Never sync::Message::decode directly: some decodable messages crash or exhaust
        // automerge later (see homeroom_protocol::decode_sync_payload).
        let mut message = match homeroom_protocol::decode_sync_payload(payload) {
            Ok(m) if m.version == MessageVersion::V1 => m,
            Ok(_) => {
                self.fail(
                    sid,
                    ErrorCode::MalformedFrame,
                    "V2 sync messages are not accepted",
                    false,
                );
                return Ok(());
            }
            Err(e) => {
                self.fail(
                    sid,
                    ErrorCode::MalformedFrame,
                    &format!("bad automerge sync message: {e}"),
                    false,
                );
                return Ok(());
            }
        };
        let incoming = match extract_changes(
            &message,
            signatures,
            self.replica.limits().max_changes_per_message,
        ) {
            Ok(v) => v,
            Err(detail) => {
                self.fail(sid, ErrorCode::MalformedFrame, &detail, false);
                return Ok(());
            }
        };
        let had_changes = !incoming.is_empty();
        let outcome = match side {
            Some(Side::Peer) => self.peer_ingest(sid, &doc, &message, incoming, now)?,
            // A device's session with its relay: see `Replica::ingest_from_relay`.
            Some(Side::Device) => self.replica.ingest_from_relay(&doc, incoming, now)?,
            _ => self.replica.ingest(&doc, incoming, now)?,
        };
        // We applied (or refused) the changes ourselves: hand automerge the rest of the message.
        // Without the peer's flags automerge never learns it "supports V2", so we only ever
        // send V1 messages (individual, signed changes; no whole-document chunks to inflate).
        message.changes = ChunkList::empty();
        message.version = MessageVersion::V1;
        message.flags = None;
        self.ensure_peer_doc(sid, &doc)?;
        let rejected = !outcome.rejected.is_empty();
        let (their_heads, they_need) = (message.heads.clone(), !message.need.is_empty());
        self.receive(sid, &doc, message, outcome.applied.len())?;
        if rejected {
            let reason = outcome.rejected[0].1;
            self.transmits.push_back((
                sid,
                Message::Reject {
                    doc,
                    changes: outcome.rejected.iter().map(|(h, _)| h.0).collect(),
                    reason,
                },
            ));
            if let Some(pd) = self
                .sessions
                .get_mut(&sid)
                .and_then(|s| s.docs.get_mut(&doc))
            {
                pd.state = sync::State::new();
            }
        }
        if !outcome.applied.is_empty() {
            if self.replica.is_relay() {
                self.awaiting_saved.entry(doc).or_default().insert(sid);
            }
            self.fan_out(Some(sid), &doc)?;
            if doc.kind == DocKind::Roster {
                self.on_roster_changed(doc.class)?;
                if !self.replica.is_relay() {
                    self.try_redeem(now, doc.class)?;
                }
            }
        } else if !had_changes && self.replica.is_relay() {
            // Nothing new: tell a reconnecting device what is durable here.
            self.send_saved(sid, &doc, false);
        }
        if outcome.applied.is_empty()
            && !outcome.held.is_empty()
            && self.replica.held_missing_deps(&doc).is_empty()
            // Our own unsent changes (e.g. an invite redemption racing another) must still go.
            && !self.replica.undelivered().iter().any(|(d, _)| *d == doc)
        {
            // We cannot use these changes until the roster names their author. Replying now would
            // only ask for them again; the roster change re-triggers this document's sync.
            return Ok(());
        }
        if !had_changes
            && self.upload_only(sid, &doc)
            && self
                .sessions
                .get(&sid)
                .and_then(|s| s.docs.get(&doc))
                .is_some_and(|pd| !pd.state.last_sent_heads.is_empty())
        {
            // An upload-only session never gets our changes, so its heads never match ours
            // and each heads-only message would be answered by another, forever (a removed
            // phone did ~1,800 a second). It has our heads already; it hears again when they
            // change (fan-out) or when it uploads.
            return Ok(());
        }
        if !had_changes && !they_need && self.replica.heads_refused_here(&doc, &their_heads)? {
            // The peer keeps changes we refused: our heads never match, and answering would
            // only start another round of the same heads-only messages, forever.
            return Ok(());
        }
        self.generate(sid, &doc)?;
        Ok(())
    }

    fn ensure_peer_doc(&mut self, sid: SessionId, doc: &DocId) -> Result<(), SyncError> {
        let Some(s) = self.sessions.get(&sid) else {
            return Ok(());
        };
        if s.docs.contains_key(doc) {
            return Ok(());
        }
        let peer = s.peer;
        let mut state = match self.replica.persisted_sync_state(&peer, doc)? {
            Some(bytes) => sync::State::decode(&bytes).unwrap_or_else(|_| sync::State::new()),
            None => sync::State::new(),
        };
        // A persisted state may claim heads this node no longer has (e.g. it was written before
        // a crash lost later changes): trusting it would make the peer skip what we lack.
        let am = self.replica.document(doc)?;
        if state
            .shared_heads
            .iter()
            .any(|h| am.get_change_by_hash(h).is_none())
        {
            state = sync::State::new();
        }
        // The answer counts (see ACK_AFTER_CHANGES): seeded by this device's key, or on a relay
        // the peer's.
        let seed_key = self.replica.device_id().unwrap_or(peer);
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.docs.insert(*doc, PeerDoc::new(state, &seed_key, doc));
        }
        Ok(())
    }

    /// Hand automerge the rest of a peer's message (its changes already went through
    /// [`Replica::ingest`]; `applied` of them were applied).
    ///
    /// Automerge, applying changes itself, would answer them with our new heads: that answer
    /// is what lets the peer advance its shared heads, and without it the peer's every later
    /// sync message (its bloom filter, its `get_hashes` walk) covers everything it sent us
    /// since — a cost that grows with every post of a long session. As we apply the changes
    /// before automerge sees the message, automerge takes its unchanged heads for "already
    /// told them" and stays silent; so once [`ACK_AFTER_CHANGES`] changes from this peer went
    /// unanswered we restore the heads it last sent, and it answers as it would have.
    fn receive(
        &mut self,
        sid: SessionId,
        doc: &DocId,
        message: sync::Message,
        applied: usize,
    ) -> Result<(), SyncError> {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return Ok(());
        };
        let Some(pd) = s.docs.get_mut(doc) else {
            return Ok(());
        };
        let am = self.replica.document_mut(doc)?;
        let last_sent = (applied > 0).then(|| pd.state.last_sent_heads.clone());
        if let Err(e) = am.receive_sync_message(&mut pd.state, message) {
            self.replica.events.push_back(NodeEvent::PeerMisbehaved {
                session: sid,
                detail: format!("sync message for {doc} refused by automerge: {e}"),
            });
            pd.state = sync::State::new();
            pd.next_answer();
        } else if let Some(last_sent) = last_sent {
            pd.applied_since_sent = pd.applied_since_sent.saturating_add(applied);
            if pd.applied_since_sent >= pd.answer_after {
                pd.state.last_sent_heads = last_sent;
            }
        }
        Ok(())
    }

    /// Whether session `sid` (on a relay) may upload to `doc` but not read it: a guest, a
    /// joining device, or a removed one. It gets sync messages without changes.
    fn upload_only(&self, sid: SessionId, doc: &DocId) -> bool {
        match self.sessions.get(&sid) {
            Some(s) => {
                s.side == Side::Relay
                    && (self.join_may_upload(sid, doc) || self.is_guest_of(sid, &doc.class))
                    && !self.join_may_read(sid, doc)
                    && !self
                        .replica
                        .roster(&doc.class)
                        .is_some_and(|r| r.can_read(&s.peer, &doc.kind))
            }
            None => false,
        }
    }

    /// Generate and queue the next sync message for `doc` to session `sid`, if any.
    fn generate(&mut self, sid: SessionId, doc: &DocId) -> Result<(), SyncError> {
        self.generate_with(sid, doc, None)
    }

    /// [`Self::generate`], reusing what an earlier session of the same fan-out got when its
    /// sync state was the same as this one's (`memo`, up to [`FAN_OUT_MEMOS`] distinct states;
    /// see [`FanOutMemo`]).
    fn generate_with(
        &mut self,
        sid: SessionId,
        doc: &DocId,
        mut memo: Option<&mut Vec<FanOutMemo>>,
    ) -> Result<(), SyncError> {
        // A guest or removed device reads only the roster of such a class: for its other
        // documents it gets sync messages without changes (heads and bloom filter only), so
        // that it can upload (and the relay refuse and audit) but never read.
        let upload_only = self.upload_only(sid, doc);
        match self.sessions.get(&sid) {
            // A device syncs a class's other documents only once the relay has listed the
            // class: before that the relay would answer "no such document" and the
            // document's sync would wait for a reply that never comes.
            Some(s)
                if s.side == Side::Device
                    && doc.kind != DocKind::Roster
                    && !s.classes.contains(&doc.class) =>
            {
                return Ok(());
            }
            Some(s) if s.side == Side::Peer && !self.peer_may_offer(sid, doc) => return Ok(()),
            Some(s) if s.phase == Phase::Established => {}
            _ => return Ok(()),
        }
        self.ensure_peer_doc(sid, doc)?;
        let Some(s) = self.sessions.get_mut(&sid) else {
            return Ok(());
        };
        let Some(pd) = s.docs.get_mut(doc) else {
            return Ok(());
        };
        // The same state as an earlier session of this fan-out: the same message and next state.
        if let Some(memos) = memo.as_deref_mut()
            && let Some(at) = memos.iter().position(|m| m.before == pd.state)
        {
            let m = &memos[at];
            pd.state.clone_from(&m.after);
            self.fan_out_counts.0 += 1;
            self.fan_out_counts.1 += 1;
            let Some(message) = &m.message else {
                return Ok(());
            };
            pd.next_answer();
            if !upload_only && let Some((payload, signatures)) = &m.encoded {
                self.transmits.push_back((
                    sid,
                    Message::Sync {
                        doc: *doc,
                        payload: payload.clone(),
                        signatures: signatures.clone(),
                    },
                ));
                return Ok(());
            }
            let message = message.clone();
            return self.queue_sync(sid, doc, message, upload_only, memo.map(|v| &mut v[at]));
        }
        if memo.is_some() {
            self.fan_out_counts.0 += 1;
        }
        let memo = memo.filter(|v| v.len() < FAN_OUT_MEMOS);
        let before = memo.is_some().then(|| pd.state.clone());
        let missing = self.replica.held_missing_deps(doc);
        let am = self.replica.document_mut(doc)?;
        let message = match am.generate_sync_message(&mut pd.state) {
            Some(mut m) => {
                for h in &missing {
                    if !m.need.contains(h) {
                        m.need.push(*h);
                    }
                }
                // The wire format requires sorted hash lists.
                m.need.sort();
                Some(m)
            }
            // Nothing automerge wants to say, but held changes lack dependencies: ask for them.
            None if !missing.is_empty() => Some(sync::Message {
                heads: am.get_heads(),
                need: missing,
                have: Vec::new(),
                changes: ChunkList::empty(),
                flags: None,
                version: MessageVersion::V1,
            }),
            None => None,
        };
        let memo = match (memo, before) {
            (Some(memos), Some(before)) => {
                memos.push(FanOutMemo {
                    before,
                    after: pd.state.clone(),
                    message: message.clone(),
                    encoded: None,
                });
                memos.last_mut()
            }
            _ => None,
        };
        let Some(message) = message else {
            return Ok(());
        };
        pd.next_answer();
        self.queue_sync(sid, doc, message, upload_only, memo)
    }

    /// Queue `message` for `doc` to session `sid` with the signatures of the changes it
    /// carries (none for an upload-only session: see [`Self::generate_with`]); a fan-out's
    /// `memo` keeps the encoding for the sessions after this one.
    fn queue_sync(
        &mut self,
        sid: SessionId,
        doc: &DocId,
        mut message: sync::Message,
        upload_only: bool,
        memo: Option<&mut FanOutMemo>,
    ) -> Result<(), SyncError> {
        if upload_only {
            message.changes = ChunkList::empty();
        }
        let signatures = self.signatures_for(doc, &message);
        let payload = message.encode();
        if !upload_only && let Some(m) = memo {
            m.encoded = Some((payload.clone(), signatures.clone()));
        }
        self.transmits.push_back((
            sid,
            Message::Sync {
                doc: *doc,
                payload,
                signatures,
            },
        ));
        Ok(())
    }

    /// Signatures of the changes a (V1) message carries; we never produce V2 (see `on_sync`).
    fn signatures_for(&mut self, doc: &DocId, message: &sync::Message) -> Vec<SignatureEntry> {
        let mut out = Vec::with_capacity(message.changes.len());
        for chunk in message.changes.iter() {
            // Fast path: a plain change chunk's hash is SHA-256 over its bytes after the
            // magic and checksum. A wrong guess only misses the lookup (SHA-256 does not
            // collide), and then the chunk is parsed — parsing every change for every
            // session was a visible share of a relay's fan-out.
            let hash = self
                .chunk_hash(chunk)
                .filter(|h| self.replica.signature(doc, h).is_some())
                .or_else(|| Change::try_from(chunk).ok().map(|c| c.hash()));
            let Some((hash, sig)) = hash.and_then(|h| Some((h, self.replica.signature(doc, &h)?)))
            else {
                continue;
            };
            out.push(SignatureEntry {
                hash: hash.0,
                signature: Sig64(sig.0),
            });
        }
        out
    }

    /// [`chunk_hash_guess`], remembering the last chunk (compared byte for byte): a fan-out
    /// hashes the same change for every session otherwise.
    fn chunk_hash(&mut self, chunk: &[u8]) -> Option<ChangeHash> {
        if let Some((bytes, hash)) = &self.last_chunk
            && bytes.as_slice() == chunk
        {
            return Some(*hash);
        }
        let hash = chunk_hash_guess(chunk)?;
        self.last_chunk = Some((chunk.to_vec(), hash));
        Some(hash)
    }

    /// After `doc` changed, send sync messages to every other session that may read it.
    fn fan_out(&mut self, except: Option<SessionId>, doc: &DocId) -> Result<(), SyncError> {
        let targets: Vec<SessionId> = self
            .class_sessions
            .get(&doc.class)
            .map(|s| s.iter().copied().filter(|x| Some(*x) != except).collect())
            .unwrap_or_default();
        // With a single target there is nothing to reuse: skip the memo's copies.
        let reuse = targets.len() > 1;
        let mut memo = Vec::new();
        for sid in targets {
            let readable = match self.sessions.get(&sid) {
                Some(s) if s.side == Side::Relay => self
                    .replica
                    .roster(&doc.class)
                    .is_some_and(|r| r.can_read(&s.peer, &doc.kind)),
                Some(_) => true,
                None => false,
            };
            if readable {
                self.generate_with(sid, doc, reuse.then_some(&mut memo))?;
            }
        }
        Ok(())
    }

    /// A class roster changed: update which sessions follow the class, close revoked ones, and
    /// give newly enrolled devices the class's catalog.
    fn on_roster_changed(&mut self, class: ClassId) -> Result<(), SyncError> {
        if !self.replica.is_relay() {
            // Held changes may have become verifiable: resume every document of the class.
            let sids: Vec<SessionId> = self
                .class_sessions
                .get(&class)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
            for sid in sids {
                let docs: Vec<DocId> = self
                    .sessions
                    .get(&sid)
                    .map(|s| {
                        s.docs
                            .keys()
                            .filter(|d| d.class == class && d.kind != DocKind::Roster)
                            .copied()
                            .collect()
                    })
                    .unwrap_or_default();
                for doc in docs {
                    self.generate(sid, &doc)?;
                }
            }
            // LAN peers: documents both may now read start syncing.
            self.peer_roster_changed(class)?;
            return Ok(());
        }
        let sids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.side == Side::Relay && s.phase == Phase::Established)
            .map(|(id, _)| *id)
            .collect();
        for sid in sids {
            let Some(s) = self.sessions.get(&sid) else {
                continue;
            };
            let peer = s.peer;
            let enrolled = self.replica.classes_of(&peer).contains(&class);
            let following = s.classes.contains(&class);
            let founded_here = s.docs.contains_key(&DocId::new(class, DocKind::Roster));
            if enrolled && !following {
                let entry = self.class_catalog(class, &peer, None)?;
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.classes.insert(class);
                }
                self.class_sessions.entry(class).or_default().insert(sid);
                self.transmits.push_back((
                    sid,
                    Message::Catalog {
                        classes: vec![entry],
                    },
                ));
                self.push_not_yet_durable(sid, class, &peer)?;
                // A guest whose invite was just redeemed is now a member.
                self.end_guest(sid, &class);
            } else if !enrolled && self.is_guest_of(sid, &class) {
                // Joining: keeps reading the roster until its redemption lands.
                continue;
            } else if !enrolled && (following || founded_here) {
                let removed = following
                    && self
                        .replica
                        .roster(&class)
                        .is_some_and(|r| r.devices.contains_key(&peer));
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.classes.remove(&class);
                    s.docs.retain(|d, _| d.class != class);
                }
                if let Some(set) = self.class_sessions.get_mut(&class) {
                    set.remove(&sid);
                }
                let none_left = self
                    .sessions
                    .get(&sid)
                    .is_some_and(|s| s.classes.is_empty());
                if removed {
                    // Revoked device or removed member: send it the roster (so it learns of
                    // its removal), then close the connection. What it uploads afterwards is
                    // refused and kept for audit.
                    self.mark_removed(sid, class);
                    self.generate(sid, &DocId::new(class, DocKind::Roster))?;
                    self.fail(
                        sid,
                        ErrorCode::NotEnrolled,
                        &format!("this device was removed from class {class}"),
                        true,
                    );
                } else if none_left && !founded_here {
                    self.fail(
                        sid,
                        ErrorCode::NotEnrolled,
                        "this device is no longer enrolled",
                        true,
                    );
                }
            }
        }
        Ok(())
    }

    fn on_ephemeral(&mut self, sid: SessionId, doc: DocId, payload: Vec<u8>) {
        if !self.replica.is_relay() {
            self.replica
                .events
                .push_back(NodeEvent::DocumentChanged { doc });
            return;
        }
        let readable = |node: &Self, s: SessionId| -> bool {
            node.sessions.get(&s).is_some_and(|x| {
                node.replica
                    .roster(&doc.class)
                    .is_some_and(|r| r.can_read(&x.peer, &doc.kind))
            })
        };
        if !readable(self, sid) {
            self.fail(
                sid,
                ErrorCode::NoSuchDocument,
                &format!("no document {doc}"),
                false,
            );
            return;
        }
        let targets: Vec<SessionId> = self
            .class_sessions
            .get(&doc.class)
            .map(|s| s.iter().copied().filter(|x| *x != sid).collect())
            .unwrap_or_default();
        for t in targets {
            if readable(self, t) {
                self.transmits.push_back((
                    t,
                    Message::Ephemeral {
                        doc,
                        payload: payload.clone(),
                    },
                ));
            }
        }
    }

    /// Make a local edit (device) and sync it to every connected peer that follows the class.
    pub fn edit<T>(
        &mut self,
        doc: &DocId,
        now: i64,
        f: impl FnOnce(&mut Transaction<'_>, &RosterIndex, DeviceId) -> Result<T, ModelError>,
    ) -> Result<(T, Option<ChangeHash>), SyncError> {
        let (value, hash) = self.replica.edit(doc, now, f)?;
        if hash.is_some() {
            self.fan_out(None, doc)?;
            self.after_local_roster_edit(doc)?;
        }
        Ok((value, hash))
    }

    /// Like [`SyncNode::edit`], reading a second document of the class (see
    /// [`Replica::edit_reading`]).
    pub fn edit_reading<T>(
        &mut self,
        doc: &DocId,
        read: &DocId,
        now: i64,
        f: impl FnOnce(
            &mut Transaction<'_>,
            &Automerge,
            &RosterIndex,
            DeviceId,
        ) -> Result<T, ModelError>,
    ) -> Result<(T, Option<ChangeHash>), SyncError> {
        let (value, hash) = self.replica.edit_reading(doc, read, now, f)?;
        if hash.is_some() {
            self.fan_out(None, doc)?;
            self.after_local_roster_edit(doc)?;
        }
        Ok((value, hash))
    }

    /// Like [`SyncNode::edit`] without the local write-right check (tests of enforcement).
    #[cfg(feature = "test-support")]
    pub fn edit_unchecked<T>(
        &mut self,
        doc: &DocId,
        now: i64,
        f: impl FnOnce(&mut Transaction<'_>, &RosterIndex, DeviceId) -> Result<T, ModelError>,
    ) -> Result<(T, Option<ChangeHash>), SyncError> {
        let (value, hash) = self.replica.edit_unchecked(doc, now, f)?;
        if hash.is_some() {
            self.fan_out(None, doc)?;
            self.after_local_roster_edit(doc)?;
        }
        Ok((value, hash))
    }

    /// Found a class (device) and offer its roster to connected relays.
    pub fn found_class(
        &mut self,
        nonce: [u8; 16],
        class_name: &str,
        member: MemberId,
        teacher_name: &str,
        now: i64,
    ) -> Result<ClassId, SyncError> {
        let class = self
            .replica
            .found_class(nonce, class_name, member, teacher_name, now)?;
        let roster_id = DocId::new(class, DocKind::Roster);
        let sids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.side == Side::Device && s.phase == Phase::Established)
            .map(|(id, _)| *id)
            .collect();
        for sid in sids {
            // Only the roster syncs until the relay lists the class in a catalog.
            self.class_sessions.entry(class).or_default().insert(sid);
            self.generate(sid, &roster_id)?;
        }
        Ok(class)
    }

    /// Start syncing every document of a class with every connected relay (e.g. after joining).
    pub fn sync_class(&mut self, class: ClassId) -> Result<(), SyncError> {
        let Some(device) = self.replica.device_id() else {
            return Ok(());
        };
        let docs = self
            .replica
            .roster(&class)
            .map(|r| r.readable_docs(class, &device))
            .unwrap_or_default();
        let sids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.side == Side::Device && s.phase == Phase::Established)
            .map(|(id, _)| *id)
            .collect();
        for sid in sids {
            self.class_sessions.entry(class).or_default().insert(sid);
            for doc in &docs {
                self.generate(sid, doc)?;
            }
        }
        Ok(())
    }

    /// Re-check every roster this session follows with a fresh sync exchange. The peer always
    /// answers, so traffic flows at once — e.g. after the device moved to a new network path,
    /// so the relay learns the new address now rather than at the next keep-alive.
    pub fn refresh(&mut self, sid: SessionId) -> Result<(), SyncError> {
        let rosters: Vec<DocId> = self
            .sessions
            .get(&sid)
            .map(|s| {
                s.classes
                    .iter()
                    .map(|c| DocId::new(*c, DocKind::Roster))
                    .collect()
            })
            .unwrap_or_default();
        for doc in rosters {
            if let Some(pd) = self
                .sessions
                .get_mut(&sid)
                .and_then(|s| s.docs.get_mut(&doc))
            {
                pd.state = sync::State::new();
            }
            self.generate(sid, &doc)?;
        }
        Ok(())
    }

    /// Read a document as this node currently holds it.
    pub fn document(&mut self, doc: &DocId) -> Result<&Automerge, SyncError> {
        self.replica.document(doc)
    }
}

/// Pull the changes out of a (V1) automerge sync message and pair them with their signatures.
/// The hash a plain Automerge change chunk has if its header is canonical: SHA-256 over
/// everything after the 4 magic bytes and the 4 checksum bytes (chunk type, LEB128 length,
/// data). `None` if the chunk is too short to be one.
fn chunk_hash_guess(chunk: &[u8]) -> Option<ChangeHash> {
    use sha2::{Digest, Sha256};
    let body = chunk.get(8..)?;
    if body.is_empty() {
        return None;
    }
    Some(ChangeHash(Sha256::digest(body).into()))
}

fn extract_changes(
    message: &sync::Message,
    signatures: &[SignatureEntry],
    max_changes: usize,
) -> Result<Vec<IncomingChange>, String> {
    let sigs: HashMap<[u8; 32], ChangeSignature> = signatures
        .iter()
        .map(|e| (e.hash, ChangeSignature(e.signature.0)))
        .collect();
    if message.changes.len() > max_changes {
        return Err(format!("more than {max_changes} changes in one message"));
    }
    let mut out = Vec::with_capacity(message.changes.len());
    for chunk in message.changes.iter() {
        homeroom_protocol::check_change_chunk(chunk)
            .map_err(|e| format!("refused change chunk: {e}"))?;
        let change = Change::try_from(chunk).map_err(|e| format!("malformed change: {e}"))?;
        let signature = sigs.get(&change.hash().0).copied();
        out.push(IncomingChange { change, signature });
    }
    Ok(out)
}

/// One sync message generated during a fan-out, kept for the fan-out's other sessions.
///
/// A post to a class is fanned out to every session that follows the class, and their sync
/// states fall into a few groups (they differ only by how many changes each device has
/// acknowledged; `PeerDoc::next_answer` spreads the acknowledgements). automerge's
/// `generate_sync_message` is a function of the document and the state, and a fan-out does not
/// change the document, so a session whose state equals `before` gets `message` and moves to
/// `after` without automerge building the same changes again; `encoded` keeps the frame
/// payload and signatures for sessions that may read the document.
struct FanOutMemo {
    before: sync::State,
    after: sync::State,
    message: Option<sync::Message>,
    encoded: Option<(Vec<u8>, Vec<SignatureEntry>)>,
}

#[cfg(test)]
mod fan_out_memo_tests {
    use homeroom_core::automerge::sync::{self, SyncDoc};
    use homeroom_core::automerge::transaction::Transactable;
    use homeroom_core::automerge::{Automerge, ROOT};

    /// `FanOutMemo` rests on automerge's `generate_sync_message` being a function of the
    /// document and the sync state: two equal states must give equal messages and equal next
    /// states, in every phase of a session (first contact, steady state, after changes).
    #[test]
    fn equal_sync_states_give_equal_messages() {
        let mut relay = Automerge::new();
        let mut peers: Vec<Automerge> = (0..3).map(|_| Automerge::new()).collect();
        let mut relay_states: Vec<sync::State> = vec![sync::State::new(); peers.len()];
        let mut peer_states: Vec<sync::State> = vec![sync::State::new(); peers.len()];
        let mut checked = 0;
        for round in 0..12i64 {
            if round % 3 == 0 {
                let mut tx = relay.transaction();
                tx.put(ROOT, format!("entry{round}"), round).unwrap();
                tx.commit();
            }
            for (i, peer) in peers.iter_mut().enumerate() {
                // The peers answer at different rounds, so their states drift apart.
                if (round + i as i64) % 2 == 0
                    && let Some(m) = peer.generate_sync_message(&mut peer_states[i])
                {
                    relay.receive_sync_message(&mut relay_states[i], m).unwrap();
                }
                let mut twin = relay_states[i].clone();
                let a = relay.generate_sync_message(&mut relay_states[i]);
                let b = relay.generate_sync_message(&mut twin);
                assert_eq!(a, b, "round {round}, peer {i}: messages differ");
                assert_eq!(
                    relay_states[i], twin,
                    "round {round}, peer {i}: states differ"
                );
                checked += usize::from(a.is_some());
                if let Some(m) = a {
                    peer.receive_sync_message(&mut peer_states[i], m).unwrap();
                }
            }
        }
        assert!(checked > 10, "too few messages compared: {checked}");
        for peer in &mut peers {
            assert_eq!(peer.get_heads(), relay.get_heads());
        }
    }
}

#[cfg(test)]
mod chunk_hash_tests {
    use super::*;
    use homeroom_core::automerge::transaction::Transactable;
    use homeroom_core::automerge::{ROOT, ScalarValue};

    #[test]
    fn the_guessed_hash_of_a_plain_change_chunk_is_its_hash() {
        let mut am = Automerge::new();
        for i in 0..3i64 {
            let mut tx = am.transaction();
            tx.put(ROOT, "k", ScalarValue::Int(i)).unwrap();
            // A long value so that automerge would consider compressing the change.
            tx.put(ROOT, format!("long{i}"), "x".repeat(600)).unwrap();
            tx.commit();
        }
        for c in am.get_changes(&[]) {
            let bytes = c.raw_bytes().to_vec();
            assert_eq!(chunk_hash_guess(&bytes), Some(c.hash()));
        }
        assert_eq!(chunk_hash_guess(&[0u8; 8]), None);
    }
}
