//! The documents a node holds, and the rules for letting changes into them.
//!
//! A [`Replica`] owns the in-memory Automerge documents, every change's signature, the class
//! rosters derived from them, and which heads are durable. Changes enter only through
//! [`Replica::ingest`] (from a peer) or [`Replica::edit`] (local), both of which check the
//! signature and the author's write right against the roster before applying anything.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use homeroom_core::automerge::transaction::{CommitOptions, Transaction};
use homeroom_core::automerge::{ActorId, Automerge, Change, ChangeHash, ReadDoc};
use homeroom_core::identity::{self, KeyCache, actor_for};
use homeroom_core::invite::{self, InviteError};
use homeroom_core::roster::{self, RosterIndex};
use homeroom_core::{
    ChangeSignature, ClassId, DeviceId, DeviceKey, DocId, DocKind, MemberId, ModelError,
    SignedChange, genesis,
};
use homeroom_protocol::RejectReason;

use crate::depth::{BatchDepths, MAX_OBJECT_DEPTH};
use crate::error::SyncError;
use crate::limits::Limits;
use crate::source::{DocSource, materialize};
use crate::write::{NodeEvent, StorageWrite, WriteId, WriteKind};

/// A change received from a peer, with the signature that came with it.
#[derive(Debug, Clone)]
pub struct IncomingChange {
    /// The parsed change.
    pub change: Change,
    /// Its signature, if the peer sent one.
    pub signature: Option<ChangeSignature>,
}

/// What [`Replica::ingest`] did with a batch.
#[derive(Debug, Default, Clone)]
pub struct IngestOutcome {
    /// Changes verified and applied.
    pub applied: Vec<ChangeHash>,
    /// Changes refused for good, with the reason.
    pub rejected: Vec<(ChangeHash, RejectReason)>,
    /// Changes held until the roster names their author.
    pub held: Vec<ChangeHash>,
}

/// Counters describing one document in memory (for logs, metrics and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocStats {
    /// Changes applied.
    pub changes: usize,
    /// Signatures known.
    pub signatures: usize,
    /// Changes held until the roster names their author.
    pub held: usize,
    /// Changes refused for good.
    pub rejected: usize,
    /// Local changes not yet delivered.
    pub undelivered: usize,
    /// Dependencies referenced but missing (changes queued by Automerge).
    pub missing_deps: usize,
}

/// A held change waiting for the roster.
#[derive(Debug, Clone)]
struct Held {
    change: Change,
    signature: ChangeSignature,
}

/// One document in memory.
#[derive(Debug)]
pub(crate) struct DocState {
    pub(crate) doc: Automerge,
    pub(crate) signatures: HashMap<ChangeHash, (DeviceId, ChangeSignature)>,
    /// Heads known to be on disk.
    pub(crate) durable_heads: Vec<ChangeHash>,
    /// Changes refused for good: never accepted again.
    rejected: HashSet<ChangeHash>,
    /// Changes waiting for the roster to name their author.
    held: Vec<Held>,
    /// This device's own changes not yet acknowledged by the relay.
    pub(crate) undelivered: BTreeSet<ChangeHash>,
}

/// Who this node is.
#[derive(Debug)]
enum Identity {
    /// A relay: verifies strictly, has no device key, makes no edits.
    Relay,
    /// A device with its key and actor id.
    Device { key: Box<DeviceKey>, actor: ActorId },
}

/// The documents of one node (relay or device) and the rules for changing them.
pub struct Replica {
    identity: Identity,
    source: Box<dyn DocSource + Send>,
    docs: HashMap<DocId, DocState>,
    rosters: HashMap<ClassId, RosterIndex>,
    enrollments: HashMap<DeviceId, BTreeSet<ClassId>>,
    /// Decompressed public keys of the authors whose signatures verified here.
    keys: KeyCache,
    limits: Limits,
    writes: VecDeque<StorageWrite>,
    /// Writes handed out and not yet durable, in order.
    in_flight: VecDeque<InFlightWrite>,
    done_early: HashSet<WriteId>,
    next_write: u64,
    pub(crate) events: VecDeque<NodeEvent>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("identity", &self.identity)
            .field("docs", &self.docs.len())
            .field("classes", &self.rosters.len())
            .finish()
    }
}

impl Replica {
    /// A relay replica: loads every roster from `source`.
    pub fn relay(source: Box<dyn DocSource + Send>, limits: Limits) -> Result<Self, SyncError> {
        Self::new(Identity::Relay, source, limits)
    }

    /// A device replica with its key and actor-id suffix. Rosters load at once; every other
    /// document loads when first used (opening a device stays fast however big a year gets).
    pub fn device(
        key: DeviceKey,
        actor_suffix: [u8; identity::ACTOR_SUFFIX_LEN],
        source: Box<dyn DocSource + Send>,
        limits: Limits,
    ) -> Result<Self, SyncError> {
        let actor = actor_for(&key.device_id(), actor_suffix);
        Self::new(
            Identity::Device {
                key: Box::new(key),
                actor,
            },
            source,
            limits,
        )
    }

    fn new(
        identity: Identity,
        source: Box<dyn DocSource + Send>,
        limits: Limits,
    ) -> Result<Self, SyncError> {
        let mut r = Self {
            identity,
            source,
            docs: HashMap::new(),
            rosters: HashMap::new(),
            enrollments: HashMap::new(),
            keys: KeyCache::default(),
            limits,
            writes: VecDeque::new(),
            in_flight: VecDeque::new(),
            done_early: HashSet::new(),
            next_write: 1,
            events: VecDeque::new(),
        };
        for roster in r.source.rosters()? {
            r.doc_state(&roster)?;
            r.reindex(roster.class)?;
        }
        Ok(r)
    }

    /// The local device, if this node is a device.
    pub fn device_id(&self) -> Option<DeviceId> {
        match &self.identity {
            Identity::Device { key, .. } => Some(key.device_id()),
            Identity::Relay => None,
        }
    }

    /// Whether this node is a relay (strict verification, durable acknowledgements).
    pub fn is_relay(&self) -> bool {
        matches!(self.identity, Identity::Relay)
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The roster index of a class, if the class is known.
    pub fn roster(&self, class: &ClassId) -> Option<&RosterIndex> {
        self.rosters.get(class)
    }

    /// Every class known on this node.
    pub fn classes(&self) -> Vec<ClassId> {
        let mut v: Vec<ClassId> = self.rosters.keys().copied().collect();
        v.sort();
        v
    }

    /// The classes a device is enrolled in (active device of an active member).
    pub fn classes_of(&self, device: &DeviceId) -> Vec<ClassId> {
        self.enrollments
            .get(device)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The classes whose roster knows `device` but no longer lets it act (device revoked or
    /// member removed).
    pub fn classes_where_removed(&self, device: &DeviceId) -> Vec<ClassId> {
        let mut v: Vec<ClassId> = self
            .rosters
            .iter()
            .filter(|(_, r)| r.devices.contains_key(device) && r.member_of(device).is_none())
            .map(|(c, _)| *c)
            .collect();
        v.sort();
        v
    }

    /// Whether `device` appears in the roster of `class` at all (even revoked): used to tell a
    /// definitive "not a writer" from "roster not caught up yet".
    fn is_known_device(&self, class: &ClassId, device: &DeviceId) -> bool {
        self.rosters
            .get(class)
            .is_some_and(|r| r.devices.contains_key(device))
    }

    /// The in-memory document, loading it (or creating it from genesis) if needed.
    pub fn document(&mut self, id: &DocId) -> Result<&Automerge, SyncError> {
        Ok(&self.doc_state(id)?.doc)
    }

    /// A document already in memory (see [`Replica::document`] to load one).
    pub fn loaded_document(&self, id: &DocId) -> Option<&Automerge> {
        self.docs.get(id).map(|s| &s.doc)
    }

    /// Whether the document is in memory.
    pub fn is_loaded(&self, id: &DocId) -> bool {
        self.docs.contains_key(id)
    }

    /// Drop a document from memory (relay eviction). Durable state stays on disk.
    pub fn evict(&mut self, id: &DocId) {
        if id.kind != DocKind::Roster && !self.has_changes_in_flight(id) {
            self.docs.remove(id);
        }
    }

    /// Whether a handed-out write carrying changes of `id` is not yet durable.
    pub(crate) fn has_changes_in_flight(&self, id: &DocId) -> bool {
        self.in_flight
            .iter()
            .any(|w| w.heads.iter().any(|(d, _)| d == id))
    }

    pub(crate) fn doc_state(&mut self, id: &DocId) -> Result<&mut DocState, SyncError> {
        if !self.docs.contains_key(id) {
            let actor = self.actor();
            let state = match self.source.load(id)? {
                Some(stored) => {
                    let doc = materialize(id, actor, &stored)?;
                    let heads = doc.get_heads();
                    DocState {
                        doc,
                        signatures: stored.signatures,
                        durable_heads: heads,
                        rejected: HashSet::new(),
                        held: Vec::new(),
                        undelivered: BTreeSet::new(),
                    }
                }
                None => {
                    let doc = genesis::genesis_document(id, actor);
                    let heads = doc.get_heads();
                    DocState {
                        doc,
                        signatures: HashMap::new(),
                        durable_heads: heads,
                        rejected: HashSet::new(),
                        held: Vec::new(),
                        undelivered: BTreeSet::new(),
                    }
                }
            };
            self.docs.insert(*id, state);
        }
        self.docs.get_mut(id).ok_or_else(|| SyncError::Storage {
            what: id.to_string(),
            reason: "document vanished from memory".into(),
        })
    }

    /// Mark stored changes as not yet delivered (device start-up, from the store's records).
    pub fn set_undelivered(
        &mut self,
        doc: &DocId,
        hashes: impl IntoIterator<Item = ChangeHash>,
    ) -> Result<(), SyncError> {
        let ds = self.doc_state(doc)?;
        ds.undelivered.extend(hashes);
        Ok(())
    }

    /// This device's changes not yet acknowledged by the relay, per document.
    pub fn undelivered(&self) -> Vec<(DocId, ChangeHash)> {
        let mut v: Vec<(DocId, ChangeHash)> = self
            .docs
            .iter()
            .flat_map(|(d, s)| s.undelivered.iter().map(move |h| (*d, *h)))
            .collect();
        v.sort();
        v
    }

    /// How many of this device's changes are not yet acknowledged by the relay.
    pub fn undelivered_count(&self) -> usize {
        self.docs.values().map(|s| s.undelivered.len()).sum()
    }

    /// Whether a local change has been acknowledged by the relay.
    pub fn is_delivered(&self, doc: &DocId, hash: &ChangeHash) -> bool {
        self.docs.get(doc).is_some_and(|s| {
            s.doc.get_change_by_hash(hash).is_some() && !s.undelivered.contains(hash)
        })
    }

    fn actor(&self) -> ActorId {
        match &self.identity {
            Identity::Device { actor, .. } => actor.clone(),
            // The relay never commits; any fixed actor will do.
            Identity::Relay => ActorId::from(vec![0xffu8; 16]),
        }
    }

    /// Heads to advertise for a document: durable heads on a relay; all heads on a device
    /// (a device's own edits are on its disk before they are synced).
    pub fn advertised_heads(&mut self, id: &DocId) -> Result<Vec<ChangeHash>, SyncError> {
        if let Some(ds) = self.docs.get(id) {
            return Ok(if self.is_relay() {
                ds.durable_heads.clone()
            } else {
                ds.doc.get_heads()
            });
        }
        if let Some(h) = self.source.stored_heads(id)? {
            return Ok(h);
        }
        // Never stored: the document is just its genesis change (not loaded, to save memory).
        Ok(vec![genesis::genesis_hash(id)])
    }

    /// The signature of a change, if known.
    pub(crate) fn signature(&self, doc: &DocId, hash: &ChangeHash) -> Option<ChangeSignature> {
        self.docs.get(doc)?.signatures.get(hash).map(|(_, s)| *s)
    }

    fn queue_write(&mut self, kind: WriteKind) -> WriteId {
        self.queue_write_local(kind, Vec::new())
    }

    fn queue_write_local(&mut self, kind: WriteKind, local: Vec<(DocId, ChangeHash)>) -> WriteId {
        let id = WriteId(self.next_write);
        self.next_write += 1;
        let heads = match &kind {
            WriteKind::Changes { heads, .. } => heads.clone(),
            _ => Vec::new(),
        };
        self.in_flight.push_back(InFlightWrite { id, heads, local });
        self.writes.push_back(StorageWrite { id, kind });
        id
    }

    /// The next storage write to perform.
    pub fn poll_write(&mut self) -> Option<StorageWrite> {
        self.writes.pop_front()
    }

    /// A write is durable. Returns the documents whose durable heads advanced.
    pub fn handle_write_done(&mut self, id: WriteId) -> Vec<DocId> {
        self.done_early.insert(id);
        let mut advanced = Vec::new();
        while let Some(front) = self.in_flight.front() {
            if !self.done_early.remove(&front.id) {
                break;
            }
            let Some(write) = self.in_flight.pop_front() else {
                break;
            };
            for (doc, hash) in write.local {
                self.events.push_back(NodeEvent::SavedLocally {
                    doc,
                    hashes: vec![hash],
                });
            }
            for (doc, h) in write.heads {
                if let Some(ds) = self.docs.get_mut(&doc) {
                    ds.durable_heads = h;
                }
                if !advanced.contains(&doc) {
                    advanced.push(doc);
                }
            }
        }
        advanced
    }

    /// Whether any write is still waiting to be made durable.
    pub fn has_pending_writes(&self) -> bool {
        !self.in_flight.is_empty() || !self.writes.is_empty()
    }

    /// Verify and apply changes received from a peer.
    ///
    /// Each change must carry a valid signature by the device named in its actor id, and that
    /// device must be allowed to write the document by the class roster (in an archived class,
    /// a change dated at or before the archive is judged by the right its author had then:
    /// [`RosterIndex::can_write_dated`]). On a relay, a change
    /// by a device the roster knows but does not allow is rejected for good; a change by a
    /// device the roster does not (yet) name is held until a roster change names it. A device
    /// holds every unauthorized change (its roster may lag the relay's) and rejects only bad
    /// signatures and malformed changes.
    pub fn ingest(
        &mut self,
        doc_id: &DocId,
        incoming: Vec<IncomingChange>,
        now_ms: i64,
    ) -> Result<IngestOutcome, SyncError> {
        self.ingest_checked(doc_id, incoming, now_ms, false, true)
    }

    /// [`Replica::ingest`] on a device, for changes its relay sent: the same checks except
    /// the nesting depth, which the relay enforced before accepting them (the relay is
    /// trusted for availability, not for content: signatures and writer sets are still
    /// checked here). Decoding every change's operations for the depth walk was ~3.5 % of
    /// the engines' cost per post (31 replicas each; `cargo bench -p homeroom-sim --bench
    /// fanout` under callgrind); the relay and LAN peers' changes keep the check.
    pub fn ingest_from_relay(
        &mut self,
        doc_id: &DocId,
        incoming: Vec<IncomingChange>,
        now_ms: i64,
    ) -> Result<IngestOutcome, SyncError> {
        let check_depth = self.is_relay();
        self.ingest_checked(doc_id, incoming, now_ms, false, check_depth)
    }

    /// Like [`Replica::ingest`] on a device, for changes from a LAN peer whose roster this
    /// device has caught up with: a change by a device the roster knows but does not allow is
    /// rejected for good (as the relay does), not held — no relay checked it before us.
    pub fn ingest_from_peer(
        &mut self,
        doc_id: &DocId,
        incoming: Vec<IncomingChange>,
        now_ms: i64,
    ) -> Result<IngestOutcome, SyncError> {
        self.ingest_checked(doc_id, incoming, now_ms, true, true)
    }

    fn ingest_checked(
        &mut self,
        doc_id: &DocId,
        incoming: Vec<IncomingChange>,
        now_ms: i64,
        refuse_denied: bool,
        check_depth: bool,
    ) -> Result<IngestOutcome, SyncError> {
        let strict = self.is_relay();
        let limits = self.limits.clone();
        let class = doc_id.class;
        let mut outcome = IngestOutcome::default();
        let genesis_hash = genesis::genesis_hash(doc_id);
        let is_roster = doc_id.kind == DocKind::Roster;
        let batch = order_by_deps(incoming);
        // Large batches (a fresh device's first sync, a week offline) check their signatures
        // on every core first; the loop below then finds each one done. Changes already
        // here or already refused are left out: the loop skips them without a check.
        if batch.len() >= KeyCache::PARALLEL_MIN {
            let ds = self.doc_state(doc_id)?;
            let fresh = batch
                .iter()
                .filter(|inc| {
                    let hash = inc.change.hash();
                    !ds.rejected.contains(&hash) && ds.doc.get_change_meta_by_hash(&hash).is_none()
                })
                .map(|inc| (&inc.change, inc.signature.as_ref()))
                .collect::<Vec<_>>();
            self.keys.preverify(doc_id, fresh);
        }

        let mut accepted: Vec<(Change, DeviceId, ChangeSignature)> = Vec::new();
        let mut audited: Vec<SignedChange> = Vec::new();
        let mut batch_rejected: HashSet<ChangeHash> = HashSet::new();
        let mut depths = BatchDepths::default();
        for inc in batch {
            let hash = inc.change.hash();
            let ds = self.doc_state(doc_id)?;
            if hash == genesis_hash || ds.doc.get_change_by_hash(&hash).is_some() {
                continue;
            }
            if ds.rejected.contains(&hash) {
                outcome
                    .rejected
                    .push((hash, RejectReason::DependsOnRejected));
                batch_rejected.insert(hash);
                continue;
            }
            if inc
                .change
                .deps()
                .iter()
                .any(|d| batch_rejected.contains(d) || ds.rejected.contains(d))
            {
                outcome
                    .rejected
                    .push((hash, RejectReason::DependsOnRejected));
                batch_rejected.insert(hash);
                continue;
            }
            if inc.change.raw_bytes().len() > limits.max_change_bytes {
                outcome.rejected.push((hash, RejectReason::TooLarge));
                batch_rejected.insert(hash);
                continue;
            }
            if strict && inc.change.timestamp() > now_ms.saturating_add(limits.max_clock_skew_ms) {
                outcome.rejected.push((hash, RejectReason::FromTheFuture));
                batch_rejected.insert(hash);
                continue;
            }
            let Some(signature) = inc.signature else {
                outcome.rejected.push((hash, RejectReason::BadSignature));
                batch_rejected.insert(hash);
                continue;
            };
            let verified = match self.keys.verify_parsed(doc_id, inc.change, &signature) {
                Ok(v) => v,
                Err(_) => {
                    outcome.rejected.push((hash, RejectReason::BadSignature));
                    batch_rejected.insert(hash);
                    continue;
                }
            };
            let author = verified.author;
            let change = verified.change;
            match self.authorize(doc_id, &change, &author, now_ms) {
                Authorization::Refused(reason) => {
                    outcome.rejected.push((hash, reason));
                    batch_rejected.insert(hash);
                }
                Authorization::Audit(reason) => {
                    // Removal wins: refused for good, kept (bytes and signature) for audit.
                    audited.push(SignedChange {
                        hash,
                        author,
                        bytes: change.raw_bytes().to_vec(),
                        signature,
                    });
                    outcome.rejected.push((hash, reason));
                    batch_rejected.insert(hash);
                }
                Authorization::Allowed => {
                    // A deeply nested change (a document bomb) is refused before it is applied.
                    if check_depth {
                        let ds = self.doc_state(doc_id)?;
                        if let Err(reason) = depths.check(&ds.doc, &change, MAX_OBJECT_DEPTH) {
                            outcome.rejected.push((hash, reason));
                            batch_rejected.insert(hash);
                            continue;
                        }
                    }
                    if is_roster {
                        // Apply roster changes one by one: each may grant the next its right.
                        let was_founded = self
                            .rosters
                            .get(&class)
                            .is_none_or(|r| r.members.is_empty());
                        let ds = self.doc_state(doc_id)?;
                        ds.doc.apply_changes([change.clone()]).map_err(|e| {
                            SyncError::CorruptDocument {
                                doc: *doc_id,
                                reason: e.to_string(),
                            }
                        })?;
                        ds.signatures.insert(hash, (author, signature));
                        self.reindex(class)?;
                        if was_founded
                            && self
                                .rosters
                                .get(&class)
                                .is_some_and(|r| !r.members.is_empty())
                        {
                            self.events.push_back(NodeEvent::ClassAdded { class });
                        }
                    }
                    accepted.push((change, author, signature));
                    outcome.applied.push(hash);
                }
                Authorization::Denied
                    if (strict || refuse_denied) && self.is_known_device(&class, &author) =>
                {
                    let archived = self
                        .rosters
                        .get(&class)
                        .is_some_and(|r| r.archived_at.is_some());
                    let reason = if archived {
                        RejectReason::ReadOnly
                    } else {
                        RejectReason::NotAWriter
                    };
                    outcome.rejected.push((hash, reason));
                    batch_rejected.insert(hash);
                }
                Authorization::Denied | Authorization::Unknown => {
                    let ds = self.doc_state(doc_id)?;
                    if ds.held.len() < limits.max_held_changes
                        && !ds.held.iter().any(|h| h.change.hash() == hash)
                    {
                        ds.held.push(Held { change, signature });
                    }
                    outcome.held.push(hash);
                }
            }
        }

        if !accepted.is_empty() {
            let ds = self.doc_state(doc_id)?;
            if !is_roster {
                ds.doc
                    .apply_changes(accepted.iter().map(|(c, _, _)| c.clone()))
                    .map_err(|e| SyncError::CorruptDocument {
                        doc: *doc_id,
                        reason: e.to_string(),
                    })?;
                for (c, a, s) in &accepted {
                    ds.signatures.insert(c.hash(), (*a, *s));
                }
            }
            let heads = ds.doc.get_heads();
            let changes = accepted
                .into_iter()
                .map(|(c, author, signature)| {
                    (
                        *doc_id,
                        SignedChange {
                            hash: c.hash(),
                            author,
                            bytes: c.raw_bytes().to_vec(),
                            signature,
                        },
                    )
                })
                .collect();
            self.queue_write(WriteKind::Changes {
                changes,
                heads: vec![(*doc_id, heads)],
            });
            self.events
                .push_back(NodeEvent::DocumentChanged { doc: *doc_id });
            if is_roster {
                self.events.push_back(NodeEvent::RosterChanged { class });
                self.recheck_held(class, now_ms)?;
            }
        }
        if let Some((_, reason)) = outcome
            .rejected
            .iter()
            .find(|(h, _)| audited.iter().any(|a| a.hash == *h))
        {
            let reason = *reason;
            self.queue_write(WriteKind::Audit {
                doc: *doc_id,
                changes: audited,
                reason,
            });
        }
        if !outcome.rejected.is_empty() {
            let ds = self.doc_state(doc_id)?;
            for (h, _) in &outcome.rejected {
                ds.rejected.insert(*h);
            }
            let reason = outcome.rejected[0].1;
            self.events.push_back(NodeEvent::Rejected {
                doc: *doc_id,
                hashes: outcome.rejected.iter().map(|(h, _)| *h).collect(),
                reason,
                ours: false,
            });
        }
        Ok(outcome)
    }

    /// Re-verify held changes of every document of `class` after its roster changed.
    fn recheck_held(&mut self, class: ClassId, now_ms: i64) -> Result<(), SyncError> {
        let docs: Vec<DocId> = self
            .docs
            .iter()
            .filter(|(d, s)| d.class == class && !s.held.is_empty())
            .map(|(d, _)| *d)
            .collect();
        for doc in docs {
            let held = match self.docs.get_mut(&doc) {
                Some(ds) => std::mem::take(&mut ds.held),
                None => continue,
            };
            let incoming = held
                .into_iter()
                .map(|h| IncomingChange {
                    change: h.change,
                    signature: Some(h.signature),
                })
                .collect();
            self.ingest(&doc, incoming, now_ms)?;
        }
        Ok(())
    }

    fn authorize(
        &self,
        doc_id: &DocId,
        change: &Change,
        author: &DeviceId,
        now_ms: i64,
    ) -> Authorization {
        let class = doc_id.class;
        let index = self.rosters.get(&class);
        if doc_id.kind == DocKind::Roster && index.is_none_or(|r| r.members.is_empty()) {
            // The founding change: its author and nonce must commit to the class id.
            let founded = change
                .message()
                .and_then(roster::founding_nonce)
                .is_some_and(|nonce| roster::class_id_for(author, &nonce) == class);
            return if founded {
                Authorization::Allowed
            } else {
                Authorization::Unknown
            };
        }
        let Some(r) = index else {
            return Authorization::Unknown;
        };
        // In an archived class, an edit dated at or before the archive is judged by the right
        // its author had then (docs/invites.md §4): it may reach us after the archive change.
        if r.can_write_dated(author, &doc_id.kind, change.timestamp()) {
            if doc_id.kind == DocKind::Roster && r.archived_at.is_some() {
                return self.authorize_archived_roster(doc_id, r, change);
            }
            return Authorization::Allowed;
        }
        if doc_id.kind == DocKind::Roster && r.invites.contains_key(author) {
            return self.authorize_redemption(doc_id, r, change, author, now_ms);
        }
        if doc_id.kind == DocKind::Roster && r.member_of(author).is_some() {
            // A guardian's roster change: only "an invite for my own second device" is allowed.
            return self.authorize_self_invite(doc_id, r, change, author);
        }
        if let Some(since) = r.inactive_since(author) {
            // A revoked device or a removed member. The relay refuses everything it receives
            // from them once it knows (it forwarded nothing of theirs after that); a device
            // applies what they wrote before the removal and refuses what is dated after it.
            let before = !self.is_relay()
                && roster::dated_at_or_before(change.timestamp(), since)
                && Self::could_write_when_active(r, author, &doc_id.kind, change.timestamp());
            return if before {
                Authorization::Allowed
            } else {
                Authorization::Audit(if r.archived_at.is_some() {
                    RejectReason::ReadOnly
                } else {
                    RejectReason::NotAWriter
                })
            };
        }
        if r.devices.contains_key(author) {
            Authorization::Denied
        } else {
            Authorization::Unknown
        }
    }

    /// Whether `author` could write `kind`, in a change dated `time`, if its device and member
    /// were still active.
    fn could_write_when_active(
        r: &RosterIndex,
        author: &DeviceId,
        kind: &DocKind,
        time: i64,
    ) -> bool {
        let mut r = r.clone();
        let Some(d) = r.devices.get_mut(author) else {
            return false;
        };
        d.revoked_at = None;
        let member = d.member;
        if let Some(m) = r.members.get_mut(&member) {
            m.removed_at = None;
        }
        r.can_write_dated(author, kind, time)
    }

    /// A staff roster change dated at or before the archive of its class that reaches us after
    /// it: allowed only if the class stays archived as it was, so a backdated change cannot
    /// lift or move the archive (and with it the "dated at or before" window).
    fn authorize_archived_roster(
        &self,
        doc_id: &DocId,
        before: &RosterIndex,
        change: &Change,
    ) -> Authorization {
        match self.roster_with(doc_id, change) {
            Ok(Some(after))
                if after.archived_at == before.archived_at
                    && after.next_term == before.next_term =>
            {
                Authorization::Allowed
            }
            Ok(_) => Authorization::Refused(RejectReason::ReadOnly),
            Err(a) => a,
        }
    }

    /// A roster change authored by an invite key: allowed only if its effect is exactly a
    /// redemption of that invite (see [`invite::check_redemption`]).
    fn authorize_redemption(
        &self,
        doc_id: &DocId,
        before: &RosterIndex,
        change: &Change,
        author: &DeviceId,
        now_ms: i64,
    ) -> Authorization {
        if change.len() > invite::MAX_REDEMPTION_OPS {
            return Authorization::Refused(RejectReason::InviteMismatch);
        }
        let after = match self.roster_with(doc_id, change) {
            Ok(Some(after)) => after,
            Ok(None) => return Authorization::Refused(RejectReason::InviteMismatch),
            Err(a) => return a,
        };
        let now = self.is_relay().then_some(now_ms);
        let checked = invite::check_redemption(
            before,
            &after,
            author,
            change.timestamp(),
            now,
            self.limits.max_clock_skew_ms,
        );
        if checked.is_err() && !self.is_relay() {
            // The relay arbitrates: a device holds a redemption it cannot verify yet (e.g. it
            // redeemed the same invite itself and the relay will refuse its own).
            return Authorization::Denied;
        }
        match checked {
            Ok(_) => Authorization::Allowed,
            Err(InviteError::AlreadyUsed) => Authorization::Refused(RejectReason::InviteUsed),
            Err(InviteError::Expired { .. }) => Authorization::Refused(RejectReason::InviteExpired),
            Err(InviteError::Unknown) => Authorization::Refused(RejectReason::InviteUnknown),
            Err(_) => Authorization::Refused(RejectReason::InviteMismatch),
        }
    }

    /// A roster change by an active non-staff member: allowed only if it just adds an invite
    /// for the author's own second device ([`invite::check_self_invite`]).
    fn authorize_self_invite(
        &self,
        doc_id: &DocId,
        before: &RosterIndex,
        change: &Change,
        author: &DeviceId,
    ) -> Authorization {
        let refused = if self.is_relay() {
            Authorization::Refused(RejectReason::NotAWriter)
        } else {
            Authorization::Denied
        };
        if change.len() > invite::MAX_REDEMPTION_OPS {
            return refused;
        }
        match self.roster_with(doc_id, change) {
            Ok(Some(after))
                if invite::check_self_invite(before, &after, author, change.timestamp())
                    .is_ok() =>
            {
                Authorization::Allowed
            }
            Ok(_) => refused,
            Err(a) => a,
        }
    }

    /// The roster index `doc_id` would have with `change` applied, computed on a fork (nothing
    /// here changes): the one way every effect-checked roster change (invite redemption,
    /// self-invite, a backdated edit of an archived class) is judged. `Err(Unknown)` when the
    /// change builds on roster changes not held yet (wait for them); `Err(Refused(
    /// MalformedChange))` when automerge refuses it; `Ok(None)` when the result does not read
    /// as a roster.
    fn roster_with(
        &self,
        doc_id: &DocId,
        change: &Change,
    ) -> Result<Option<RosterIndex>, Authorization> {
        let Some(ds) = self.docs.get(doc_id) else {
            return Err(Authorization::Unknown);
        };
        if change
            .deps()
            .iter()
            .any(|d| ds.doc.get_change_by_hash(d).is_none())
        {
            return Err(Authorization::Unknown);
        }
        let mut fork = ds.doc.fork();
        if fork.apply_changes([change.clone()]).is_err() {
            return Err(Authorization::Refused(RejectReason::MalformedChange));
        }
        Ok(RosterIndex::read(&fork).ok())
    }

    /// Guardian: write an invite for this device's member's own second device (no staff
    /// right needed; every replica checks the change is exactly that).
    pub fn write_self_invite(
        &mut self,
        class: ClassId,
        invite_id: DeviceId,
        expires_at: i64,
        now_ms: i64,
    ) -> Result<ChangeHash, SyncError> {
        let me = self.device_id().ok_or(SyncError::NoDeviceKey)?;
        let doc = DocId::new(class, DocKind::Roster);
        let (_, hash) = self.edit_inner(&doc, now_ms, false, |tx, roster, device| {
            let member = roster
                .member_of(&device)
                .ok_or_else(|| ModelError::NotAllowed("not an active member".into()))?
                .id;
            roster::write_invite(
                tx,
                invite_id,
                invite::InviteRole::AnotherDevice { member },
                expires_at,
                me,
                now_ms,
            )
        })?;
        hash.ok_or_else(|| SyncError::CorruptDocument {
            doc,
            reason: "the invite change is empty".into(),
        })
    }

    /// Redeem an invite of `class` (device): one roster change authored and signed by the
    /// invite key that enrolls this device — for a role invite as a new member named `name` —
    /// and marks the invite used. The roster must already hold the invite (sync it first).
    pub fn redeem_invite(
        &mut self,
        class: ClassId,
        invite_key: &DeviceKey,
        name: &str,
        now_ms: i64,
    ) -> Result<ChangeHash, SyncError> {
        let me = self.device_id().ok_or(SyncError::NoDeviceKey)?;
        let roster_index = self
            .rosters
            .get(&class)
            .ok_or(SyncError::UnknownClass(class))?;
        let invite_id = invite_key.device_id();
        let record = invite::check_redeemable(roster_index, &invite_id, now_ms)?.clone();
        let doc_id = DocId::new(class, DocKind::Roster);
        let mut suffix = [0u8; identity::ACTOR_SUFFIX_LEN];
        suffix.copy_from_slice(&blake3::hash(&me.0).as_bytes()[..identity::ACTOR_SUFFIX_LEN]);
        let invite_actor = actor_for(&invite_id, suffix);
        let ds = self.doc_state(&doc_id)?;
        let own_actor = ds.doc.get_actor().clone();
        ds.doc.set_actor(invite_actor);
        let mut tx = ds.doc.transaction();
        let written = roster::redeem_invite(&mut tx, &record, me, name, now_ms);
        let hash = match written {
            Ok(_) => tx.commit_with(CommitOptions::default().with_time(now_ms)).0,
            Err(e) => {
                tx.rollback();
                ds.doc.set_actor(own_actor);
                return Err(e.into());
            }
        };
        ds.doc.set_actor(own_actor);
        let hash = hash.ok_or_else(|| SyncError::CorruptDocument {
            doc: doc_id,
            reason: "the redemption change is empty".into(),
        })?;
        let change =
            ds.doc
                .get_change_by_hash(&hash)
                .ok_or_else(|| SyncError::CorruptDocument {
                    doc: doc_id,
                    reason: "committed change not found".into(),
                })?;
        let signed = SignedChange::sign(invite_key, &doc_id, &change);
        ds.signatures
            .insert(hash, (signed.author, signed.signature));
        // Tracked like an own edit, so the relay's `Saved` reports it delivered.
        ds.undelivered.insert(hash);
        let heads = ds.doc.get_heads();
        self.queue_write_local(
            WriteKind::Changes {
                changes: vec![(doc_id, signed)],
                heads: vec![(doc_id, heads)],
            },
            vec![(doc_id, hash)],
        );
        self.reindex(class)?;
        self.events.push_back(NodeEvent::RosterChanged { class });
        Ok(hash)
    }

    fn reindex(&mut self, class: ClassId) -> Result<(), SyncError> {
        let id = DocId::new(class, DocKind::Roster);
        let ds = self.doc_state(&id)?;
        let index = RosterIndex::read(&ds.doc)?;
        for set in self.enrollments.values_mut() {
            set.remove(&class);
        }
        for dev in index.devices.keys() {
            if index.member_of(dev).is_some() {
                self.enrollments.entry(*dev).or_default().insert(class);
            }
        }
        self.enrollments.retain(|_, s| !s.is_empty());
        self.rosters.insert(class, index);
        Ok(())
    }

    /// Of `hashes`, the changes of `doc_id` held here whose author may not write the document
    /// per this replica's current roster (an edit dated at or before the archive of the class
    /// is judged by the right its author had then): what a device confirms itself before acting
    /// on a LAN peer's `Reject` (a peer alone cannot make it drop anything).
    pub fn unauthorized_among(
        &mut self,
        doc_id: &DocId,
        hashes: &[ChangeHash],
    ) -> Result<Vec<ChangeHash>, SyncError> {
        let ds = self.doc_state(doc_id)?;
        let authored: Vec<(ChangeHash, DeviceId, i64)> = hashes
            .iter()
            .filter_map(|h| {
                let (author, _) = ds.signatures.get(h)?;
                // A change we cannot date counts as made after any archive.
                let time = ds
                    .doc
                    .get_change_by_hash(h)
                    .map_or(i64::MAX, |c| c.timestamp());
                Some((*h, *author, time))
            })
            .collect();
        let Some(roster) = self.rosters.get(&doc_id.class) else {
            return Ok(Vec::new());
        };
        Ok(authored
            .into_iter()
            .filter(|(_, author, time)| !roster.can_write_dated(author, &doc_id.kind, *time))
            .map(|(h, _, _)| h)
            .collect())
    }

    /// Drop changes a peer refused (and everything built on them) from a document, rebuild it
    /// from the remaining changes, and pick a fresh actor id so no sequence number is reused.
    pub fn drop_rejected(
        &mut self,
        doc_id: &DocId,
        hashes: &[ChangeHash],
        reason: RejectReason,
    ) -> Result<Vec<ChangeHash>, SyncError> {
        let is_relay = self.is_relay();
        let ds = self.doc_state(doc_id)?;
        let all = ds.doc.get_changes(&[]);
        let mut dropped: HashSet<ChangeHash> = hashes
            .iter()
            .filter(|h| ds.doc.get_change_by_hash(h).is_some())
            .copied()
            .collect();
        if dropped.is_empty() {
            return Ok(Vec::new());
        }
        // get_changes returns a causal order, so one pass finds every descendant.
        let mut keep = Vec::with_capacity(all.len());
        for c in all {
            if dropped.contains(&c.hash()) || c.deps().iter().any(|d| dropped.contains(d)) {
                dropped.insert(c.hash());
            } else {
                keep.push(c);
            }
        }
        let actor = ds.doc.get_actor().clone();
        let mut rebuilt = Automerge::new();
        rebuilt
            .apply_changes(keep)
            .map_err(|e| SyncError::CorruptDocument {
                doc: *doc_id,
                reason: e.to_string(),
            })?;
        // Rotate the actor suffix deterministically: the dropped sequence numbers may exist
        // elsewhere, and an actor must never reuse one.
        let new_actor = if is_relay {
            actor
        } else {
            let mut h = blake3::Hasher::new();
            h.update(actor.to_bytes());
            for d in &dropped {
                h.update(&d.0);
            }
            let bytes = actor.to_bytes();
            let mut suffix = [0u8; identity::ACTOR_SUFFIX_LEN];
            suffix.copy_from_slice(&h.finalize().as_bytes()[..identity::ACTOR_SUFFIX_LEN]);
            let mut device = [0u8; 32];
            device.copy_from_slice(&bytes[..32.min(bytes.len())]);
            actor_for(&DeviceId(device), suffix)
        };
        rebuilt.set_actor(new_actor.clone());
        ds.doc = rebuilt;
        for h in &dropped {
            ds.signatures.remove(h);
            ds.undelivered.remove(h);
            ds.rejected.insert(*h);
        }
        ds.durable_heads.retain(|h| !dropped.contains(h));
        if let Identity::Device { actor, .. } = &mut self.identity {
            *actor = new_actor;
        }
        let dropped: Vec<ChangeHash> = dropped.into_iter().collect();
        self.queue_write(WriteKind::Rejected {
            doc: *doc_id,
            hashes: dropped.clone(),
            reason,
        });
        self.events.push_back(NodeEvent::Rejected {
            doc: *doc_id,
            hashes: dropped.clone(),
            reason,
            ours: true,
        });
        if doc_id.kind == DocKind::Roster {
            self.reindex(doc_id.class)?;
        }
        Ok(dropped)
    }

    /// The relay acknowledged `heads` of a document as durable: mark this device's changes
    /// that those heads cover as delivered.
    pub fn mark_delivered_up_to(
        &mut self,
        doc_id: &DocId,
        heads: &[ChangeHash],
    ) -> Result<Vec<ChangeHash>, SyncError> {
        let ds = self.doc_state(doc_id)?;
        if ds.undelivered.is_empty() {
            return Ok(Vec::new());
        }
        // Metadata only: rebuilding each change (`get_change_by_hash`) just to see that it
        // exists cost a visible share of every `Saved` a device handles.
        let known: Vec<ChangeHash> = heads
            .iter()
            .filter(|h| ds.doc.get_change_meta_by_hash(h).is_some())
            .copied()
            .collect();
        if known.is_empty() {
            return Ok(Vec::new());
        }
        let not_covered: HashSet<ChangeHash> = ds
            .doc
            .get_changes(&known)
            .iter()
            .map(|c| c.hash())
            .collect();
        let delivered: Vec<ChangeHash> = ds
            .undelivered
            .iter()
            .filter(|h| !not_covered.contains(h))
            .copied()
            .collect();
        self.record_delivered(doc_id, delivered.clone())?;
        Ok(delivered)
    }

    /// Mark every local change of a document delivered (its digest matched the relay's durable
    /// digest).
    pub fn mark_all_delivered(&mut self, doc_id: &DocId) -> Result<Vec<ChangeHash>, SyncError> {
        let ds = self.doc_state(doc_id)?;
        let delivered: Vec<ChangeHash> = ds.undelivered.iter().copied().collect();
        self.record_delivered(doc_id, delivered.clone())?;
        Ok(delivered)
    }

    fn record_delivered(
        &mut self,
        doc_id: &DocId,
        delivered: Vec<ChangeHash>,
    ) -> Result<(), SyncError> {
        if delivered.is_empty() {
            return Ok(());
        }
        let ds = self.doc_state(doc_id)?;
        for h in &delivered {
            ds.undelivered.remove(h);
        }
        self.queue_write(WriteKind::Delivered {
            doc: *doc_id,
            hashes: delivered.clone(),
        });
        self.events.push_back(NodeEvent::Delivered {
            doc: *doc_id,
            hashes: delivered,
        });
        Ok(())
    }

    /// Make a local edit as this device: checks the write right, commits with `now_ms` as the
    /// change time, signs the change and queues it for a durable local write.
    pub fn edit<T>(
        &mut self,
        doc_id: &DocId,
        now_ms: i64,
        f: impl FnOnce(&mut Transaction<'_>, &RosterIndex, DeviceId) -> Result<T, ModelError>,
    ) -> Result<(T, Option<ChangeHash>), SyncError> {
        self.edit_inner(doc_id, now_ms, true, f)
    }

    /// Like [`Replica::edit`], with read access to a second document of the same class (e.g.
    /// signing in a family lane checks the entry in the notebook).
    pub fn edit_reading<T>(
        &mut self,
        doc_id: &DocId,
        read_id: &DocId,
        now_ms: i64,
        f: impl FnOnce(
            &mut Transaction<'_>,
            &Automerge,
            &RosterIndex,
            DeviceId,
        ) -> Result<T, ModelError>,
    ) -> Result<(T, Option<ChangeHash>), SyncError> {
        if doc_id == read_id {
            return Err(SyncError::NotAllowed {
                doc: *doc_id,
                reason: "an edit cannot read the document it writes through a second handle".into(),
            });
        }
        self.doc_state(read_id)?;
        let read = self
            .docs
            .remove(read_id)
            .ok_or(SyncError::UnknownClass(read_id.class))?;
        let result = self.edit_inner(doc_id, now_ms, true, |tx, roster, device| {
            f(tx, &read.doc, roster, device)
        });
        self.docs.insert(*read_id, read);
        result
    }

    /// Like [`Replica::edit`] without the local write-right check: what a modified or buggy
    /// client would do. Only for tests of the receivers' enforcement.
    #[cfg(feature = "test-support")]
    pub fn edit_unchecked<T>(
        &mut self,
        doc_id: &DocId,
        now_ms: i64,
        f: impl FnOnce(&mut Transaction<'_>, &RosterIndex, DeviceId) -> Result<T, ModelError>,
    ) -> Result<(T, Option<ChangeHash>), SyncError> {
        self.edit_inner(doc_id, now_ms, false, f)
    }

    fn edit_inner<T>(
        &mut self,
        doc_id: &DocId,
        now_ms: i64,
        checked: bool,
        f: impl FnOnce(&mut Transaction<'_>, &RosterIndex, DeviceId) -> Result<T, ModelError>,
    ) -> Result<(T, Option<ChangeHash>), SyncError> {
        let device = self.device_id().ok_or(SyncError::NoDeviceKey)?;
        let roster = self
            .rosters
            .get(&doc_id.class)
            .cloned()
            .ok_or(SyncError::UnknownClass(doc_id.class))?;
        if checked && !roster.can_write(&device, &doc_id.kind) {
            return Err(SyncError::NotAllowed {
                doc: *doc_id,
                reason: "this device may not write this document".into(),
            });
        }
        self.doc_state(doc_id)?;
        let ds = self
            .docs
            .get_mut(doc_id)
            .ok_or(SyncError::UnknownClass(doc_id.class))?;
        let mut tx = ds.doc.transaction();
        let value = match f(&mut tx, &roster, device) {
            Ok(v) => v,
            Err(e) => {
                tx.rollback();
                return Err(e.into());
            }
        };
        let (hash, _) = tx.commit_with(CommitOptions::default().with_time(now_ms));
        let hash = self.sign_and_queue(doc_id, hash)?;
        Ok((value, hash))
    }

    fn sign_and_queue(
        &mut self,
        doc_id: &DocId,
        hash: Option<ChangeHash>,
    ) -> Result<Option<ChangeHash>, SyncError> {
        let Some(hash) = hash else { return Ok(None) };
        let Identity::Device { key, .. } = &self.identity else {
            return Err(SyncError::NoDeviceKey);
        };
        let ds = self
            .docs
            .get_mut(doc_id)
            .ok_or(SyncError::UnknownClass(doc_id.class))?;
        let change =
            ds.doc
                .get_change_by_hash(&hash)
                .ok_or_else(|| SyncError::CorruptDocument {
                    doc: *doc_id,
                    reason: "committed change not found".into(),
                })?;
        let signed = SignedChange::sign(key, doc_id, &change);
        ds.signatures
            .insert(hash, (signed.author, signed.signature));
        ds.undelivered.insert(hash);
        let heads = ds.doc.get_heads();
        self.queue_write_local(
            WriteKind::Changes {
                changes: vec![(*doc_id, signed)],
                heads: vec![(*doc_id, heads)],
            },
            vec![(*doc_id, hash)],
        );
        if doc_id.kind == DocKind::Roster {
            self.reindex(doc_id.class)?;
            self.events.push_back(NodeEvent::RosterChanged {
                class: doc_id.class,
            });
        }
        Ok(Some(hash))
    }

    /// Found a new class with this device as head teacher. `nonce` comes from the caller's
    /// randomness; the class id commits to it and to this device's key.
    pub fn found_class(
        &mut self,
        nonce: [u8; 16],
        class_name: &str,
        member: MemberId,
        teacher_name: &str,
        now_ms: i64,
    ) -> Result<ClassId, SyncError> {
        let device = self.device_id().ok_or(SyncError::NoDeviceKey)?;
        let class = roster::class_id_for(&device, &nonce);
        let doc_id = DocId::new(class, DocKind::Roster);
        self.doc_state(&doc_id)?;
        let ds = self
            .docs
            .get_mut(&doc_id)
            .ok_or(SyncError::UnknownClass(class))?;
        let mut tx = ds.doc.transaction();
        if let Err(e) =
            roster::write_founding(&mut tx, class_name, &device, member, teacher_name, now_ms)
        {
            tx.rollback();
            return Err(e.into());
        }
        let (hash, _) = tx.commit_with(roster::founding_commit(&nonce, now_ms));
        self.sign_and_queue(&doc_id, hash)?;
        self.events.push_back(NodeEvent::ClassAdded { class });
        Ok(class)
    }

    /// Sign the handshake proof over the TLS exporter value.
    pub(crate) fn sign_handshake(&self, exporter: &[u8; 32]) -> Result<[u8; 64], SyncError> {
        match &self.identity {
            Identity::Device { key, .. } => {
                Ok(key.sign(homeroom_protocol::HANDSHAKE_DOMAIN, exporter))
            }
            Identity::Relay => Err(SyncError::NoDeviceKey),
        }
    }

    /// Queue sync states for persistence (best effort; losing them costs only bandwidth).
    pub(crate) fn queue_sync_states(&mut self, states: Vec<(DeviceId, DocId, Vec<u8>)>) {
        self.queue_write(WriteKind::SyncStates(states));
    }

    /// A persisted sync state for `peer` and `doc`.
    pub(crate) fn persisted_sync_state(
        &mut self,
        peer: &DeviceId,
        doc: &DocId,
    ) -> Result<Option<Vec<u8>>, SyncError> {
        self.source.sync_state(peer, doc)
    }

    /// The in-memory document, mutable (for the automerge sync protocol's bookkeeping only:
    /// changes enter through `ingest` and `edit`).
    pub(crate) fn document_mut(&mut self, id: &DocId) -> Result<&mut Automerge, SyncError> {
        Ok(&mut self.doc_state(id)?.doc)
    }

    /// Dependencies of held changes that are neither in the document nor held themselves: what
    /// to ask the peer for (automerge cannot, as held changes are invisible to it).
    pub(crate) fn held_missing_deps(&self, doc: &DocId) -> Vec<ChangeHash> {
        let Some(ds) = self.docs.get(doc) else {
            return Vec::new();
        };
        if ds.held.is_empty() {
            return Vec::new();
        }
        let held: HashSet<ChangeHash> = ds.held.iter().map(|h| h.change.hash()).collect();
        let mut out: Vec<ChangeHash> = ds
            .held
            .iter()
            .flat_map(|h| h.change.deps().iter().copied())
            .filter(|d| !held.contains(d) && ds.doc.get_change_by_hash(d).is_none())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Loaded documents of `class` whose in-memory heads are ahead of their durable heads.
    pub(crate) fn docs_ahead_of_disk(&self, class: ClassId) -> Vec<DocId> {
        self.docs
            .iter()
            .filter(|(d, s)| {
                d.class == class && {
                    let mut a = s.doc.get_heads();
                    let mut b = s.durable_heads.clone();
                    a.sort();
                    b.sort();
                    a != b
                }
            })
            .map(|(d, _)| *d)
            .collect()
    }

    /// Counters for one document (loads it).
    pub fn doc_stats(&mut self, id: &DocId) -> Result<DocStats, SyncError> {
        let ds = self.doc_state(id)?;
        Ok(DocStats {
            changes: ds.doc.get_changes(&[]).len(),
            signatures: ds.signatures.len(),
            held: ds.held.len(),
            rejected: ds.rejected.len(),
            undelivered: ds.undelivered.len(),
            missing_deps: ds.doc.get_missing_deps(&[]).len(),
        })
    }

    /// Whether every one of a peer's `heads` of `doc_id` is here or was refused here, and at
    /// least one was refused: the peer keeps changes this replica refused (e.g. a relay that
    /// applied a removed author's change before it learned of the removal, docs/invites.md
    /// §3), so the two will never reach the same heads.
    pub(crate) fn heads_refused_here(
        &mut self,
        doc_id: &DocId,
        heads: &[ChangeHash],
    ) -> Result<bool, SyncError> {
        let ds = self.doc_state(doc_id)?;
        let mut refused = false;
        for h in heads {
            if ds.rejected.contains(h) {
                refused = true;
            } else if ds.doc.get_change_meta_by_hash(h).is_none() {
                return Ok(false);
            }
        }
        Ok(refused)
    }

    /// Changes of a document not covered by `heads` (for building messages and tests).
    pub fn changes_since(
        &mut self,
        doc: &DocId,
        heads: &[ChangeHash],
    ) -> Result<Vec<Change>, SyncError> {
        Ok(self.doc_state(doc)?.doc.get_changes(heads))
    }
}

/// A write handed to the driver and not yet reported durable.
#[derive(Debug)]
struct InFlightWrite {
    id: WriteId,
    /// Heads each document will have on disk once this write is durable.
    heads: Vec<(DocId, Vec<ChangeHash>)>,
    /// This device's own new changes in the write ("saved on this device" once durable).
    local: Vec<(DocId, ChangeHash)>,
}

enum Authorization {
    Allowed,
    Denied,
    Unknown,
    /// Refused for good on every replica, with this reason.
    Refused(RejectReason),
    /// Refused for good and kept in the audit table (a removed author).
    Audit(RejectReason),
}

/// Order a batch so each change comes after those of its dependencies that are in the batch.
fn order_by_deps(batch: Vec<IncomingChange>) -> Vec<IncomingChange> {
    let in_batch: HashMap<ChangeHash, usize> = batch
        .iter()
        .enumerate()
        .map(|(i, c)| (c.change.hash(), i))
        .collect();
    let mut indegree = vec![0usize; batch.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); batch.len()];
    for (i, c) in batch.iter().enumerate() {
        for d in c.change.deps() {
            if let Some(&j) = in_batch.get(d) {
                indegree[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    let mut ready: VecDeque<usize> = (0..batch.len()).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(batch.len());
    while let Some(i) = ready.pop_front() {
        order.push(i);
        for &k in &dependents[i] {
            indegree[k] -= 1;
            if indegree[k] == 0 {
                ready.push_back(k);
            }
        }
    }
    // A cycle is impossible for valid hashes; keep any leftovers at the end anyway.
    if order.len() < batch.len() {
        let seen: HashSet<usize> = order.iter().copied().collect();
        order.extend((0..batch.len()).filter(|i| !seen.contains(i)));
    }
    let mut slots: Vec<Option<IncomingChange>> = batch.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}
