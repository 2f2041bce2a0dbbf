//! The device: its key and store, its classes, the typed operations an app calls, and what is
//! saved on this device vs. delivered to the relay.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use homeroom_core::automerge::transaction::Transaction;
use homeroom_core::automerge::{Automerge, ChangeHash};
use homeroom_core::entries::{self, NewEntry, PostedEntry, ReplyScope};
use homeroom_core::roster::{self, Role, RosterIndex};
use homeroom_core::view::{ClassDocs, NotebookView, Viewer};
use homeroom_core::{
    Actor, ClassId, DeviceId, DocId, DocKind, FamilyId, IdSource, ItemId, MemberId, ModelError,
};
use homeroom_protocol::Message;
use homeroom_store::{NodeIdentity, Store, WriteBatch};
use homeroom_sync::{Limits, NodeEvent, Replica, SessionId, StorageWrite, SyncNode, WriteKind};
use tokio::sync::mpsc;

use crate::error::ClientError;
use crate::ids::{OsIds, now_ms, random_bytes};

/// Whether a local edit is only on this device or acknowledged durable by the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// On this device's disk; not yet acknowledged by the relay.
    SavedLocally,
    /// The relay acknowledged it as durable (`Saved`).
    Delivered,
    /// Not a local edit of this device (or unknown).
    NotLocal,
    /// The relay refused it (e.g. written offline after this device was revoked): it was
    /// removed from this device's documents and kept in its audit table; it will never
    /// arrive. [`DeviceEvent::Rejected`] said so when it happened.
    Rejected,
}

/// What the app is told, through [`DeviceObserver`].
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceEvent {
    /// A class's documents changed (remote edits arrived).
    ClassChanged(ClassId),
    /// Local edits were acknowledged by the relay.
    Delivered {
        /// The class.
        class: ClassId,
        /// How many changes.
        count: usize,
    },
    /// Edits were refused by the relay and removed here.
    Rejected {
        /// The class.
        class: ClassId,
        /// Why, for the user.
        reason: String,
    },
    /// Connected to, or disconnected from, the relay.
    Connection {
        /// Whether connected now.
        connected: bool,
    },
    /// A join (see [`Device::join`]) completed: the relay enrolled this device.
    Joined {
        /// The class.
        class: ClassId,
    },
    /// A join failed (invite already used, expired, unknown…).
    JoinFailed {
        /// The class.
        class: ClassId,
        /// Why.
        reason: crate::invite::JoinFailure,
    },
    /// This device was revoked, or its member removed, in a class.
    Removed {
        /// The class.
        class: ClassId,
    },
    /// A short code (see [`Device::join_with_short_code`]) was resolved: the relay named its
    /// class, whose join is now pending (then `Joined` or `JoinFailed` as for a long code).
    InviteFound {
        /// The invite (as `join_with_short_code` returned it).
        invite: DeviceId,
        /// The class.
        class: ClassId,
    },
    /// A short code failed: the relay knows no class with that invite (a mistyped code that
    /// passed the check character, a withdrawn invite, or another relay's code).
    InviteNotFound {
        /// The invite (as `join_with_short_code` returned it).
        invite: DeviceId,
    },
}

/// Receives [`DeviceEvent`]s (called on the sync thread: return quickly).
pub trait DeviceObserver: Send + Sync {
    /// Something happened.
    fn on_event(&self, event: DeviceEvent);
}

/// The sync status an app shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// Whether a relay session is established.
    pub connected: bool,
    /// Local changes not yet delivered.
    pub pending: usize,
    /// When the relay last acknowledged something (ms since the Unix epoch).
    pub last_delivered_ms: Option<i64>,
    /// Whether the relay session runs over the TLS-over-TCP fallback (UDP blocked).
    pub over_tcp: bool,
    /// Devices connected directly over the LAN (authenticated against this device's rosters).
    pub lan_peers: Vec<DeviceId>,
}

/// A class as listed on this device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassSummary {
    /// The class id.
    pub id: ClassId,
    /// Its name.
    pub name: String,
    /// This device's roles in it.
    pub roles: Vec<Role>,
    /// This device's family, for guardians.
    pub family: Option<FamilyId>,
    /// Member, joining, join failed, or removed.
    pub membership: crate::invite::Membership,
}

/// At most this many received writes wait for [`Inner::flush_received`]; more are committed
/// at once (bounds the memory a long burst of received changes holds twice).
const MAX_DEFERRED_WRITES: usize = 64;

pub(crate) struct Inner {
    pub(crate) node: SyncNode,
    pub(crate) store: Store,
    ids: OsIds,
    /// Outbound queues of live sessions (driven by the connection task).
    pub(crate) outbound: HashMap<SessionId, mpsc::UnboundedSender<Message>>,
    observer: Option<Arc<dyn DeviceObserver>>,
    pub(crate) status: SyncStatus,
    /// Which change created an item (for its delivery state).
    items: HashMap<ItemId, (DocId, ChangeHash)>,
    /// Joins that failed, by class (shown by `classes()` until a new join).
    pub(crate) join_failures: HashMap<ClassId, crate::invite::JoinFailure>,
    /// Classes whose removal of this device was already reported.
    pub(crate) removed_notified: std::collections::HashSet<ClassId>,
    /// LAN peer sessions, with the peer once authenticated (see `lan.rs`).
    pub(crate) lan_sessions: HashMap<SessionId, Option<DeviceId>>,
    /// Writes holding only changes received from peers (and sync states), applied in memory
    /// and reported to the app but not yet committed: see [`Inner::pump_deferring`].
    deferred: Vec<StorageWrite>,
}

impl Inner {
    /// Drain the engine's outputs: durable writes first (fsync), then messages, closes, events.
    /// Writes deferred by [`Inner::pump_deferring`] are committed first, in the same
    /// transaction.
    pub(crate) fn pump(&mut self) -> Result<(), ClientError> {
        self.pump_with(WriteBatch::new(), false)
    }

    /// Like [`Inner::pump`], but writes holding only received changes are kept for
    /// [`Inner::flush_received`] instead of committed now: the changes are already applied in
    /// memory, answered and reported to the app, and their commit — the largest part of a
    /// device's cost per received change — moves off the path from the relay to the app, and
    /// is shared by the changes that arrive meanwhile. The sync driver calls this for each
    /// message and flushes once no message is waiting; every other `pump`, and every read of
    /// the store that depends on it, flushes first. A crash in between loses only changes
    /// that are durable on the relay (their sync states are in the same deferred writes, so
    /// nothing on disk claims them): the next session fetches them again.
    pub(crate) fn pump_deferring(&mut self) -> Result<(), ClientError> {
        self.pump_with(WriteBatch::new(), true)
    }

    /// Whether received writes wait for [`Inner::flush_received`].
    pub(crate) fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Commit the writes [`Inner::pump_deferring`] kept (one transaction, no fsync), then
    /// drain what reporting them done releases.
    pub(crate) fn flush_received(&mut self) -> Result<(), ClientError> {
        if self.deferred.is_empty() {
            return Ok(());
        }
        self.pump()
    }

    /// Like [`Inner::pump`], committing `extra` in the same transaction (fsynced) as the first
    /// batch of engine writes — the local edit just made — or on its own if there is none.
    fn pump_with(&mut self, mut extra: WriteBatch, defer: bool) -> Result<(), ClientError> {
        loop {
            let mut progressed = false;
            let mut writes = Vec::new();
            while let Some(w) = self.node.poll_write() {
                writes.push(w);
            }
            // This device's own edits are fsynced before anything reports them saved.
            // Changes received from the relay are already durable there: commit them
            // without an fsync (a power cut may lose them here; they are fetched again).
            let me = self.node.replica().device_id();
            let own = writes.iter().any(|w| match &w.kind {
                WriteKind::Changes { changes, .. } => {
                    changes.iter().any(|(_, c)| Some(c.author) == me)
                }
                WriteKind::Rejected { .. } => true,
                _ => false,
            });
            if defer
                && !own
                && extra.is_empty()
                && self.deferred.len() + writes.len() <= MAX_DEFERRED_WRITES
            {
                if !writes.is_empty() {
                    progressed = true;
                    self.deferred.append(&mut writes);
                }
            } else if !writes.is_empty() || !self.deferred.is_empty() {
                progressed = true;
                // Deferred writes go first: later writes may depend on their changes.
                let mut all = std::mem::take(&mut self.deferred);
                all.append(&mut writes);
                if own || !extra.is_empty() {
                    self.store
                        .apply_writes_with(&all, std::mem::take(&mut extra))?;
                } else {
                    self.store.apply_received_writes(&all)?;
                }
                for w in &all {
                    self.node.handle_write_done(w.id);
                }
            }
            while let Some((sid, msg)) = self.node.poll_transmit() {
                progressed = true;
                if let Some(tx) = self.outbound.get(&sid) {
                    let _ = tx.send(msg);
                }
            }
            while let Some((sid, reason)) = self.node.poll_close() {
                progressed = true;
                tracing::info!(%sid, %reason, "engine closed the session");
                self.outbound.remove(&sid);
            }
            while let Some(ev) = self.node.poll_event() {
                self.on_node_event(ev);
            }
            if !progressed {
                break;
            }
        }
        if !extra.is_empty() {
            self.store.write(&extra)?;
        }
        self.status.pending = self.node.replica().undelivered_count();
        Ok(())
    }

    pub(crate) fn observer_ref(&self) -> Option<&Arc<dyn DeviceObserver>> {
        self.observer.as_ref()
    }

    pub(crate) fn notify(&self, event: DeviceEvent) {
        if let Some(o) = &self.observer {
            o.on_event(event);
        }
    }

    fn on_node_event(&mut self, ev: NodeEvent) {
        self.on_join_event(&ev);
        match ev {
            NodeEvent::DocumentChanged { doc } => self.notify(DeviceEvent::ClassChanged(doc.class)),
            NodeEvent::Delivered { doc, hashes } => {
                self.status.last_delivered_ms = Some(now_ms());
                self.notify(DeviceEvent::Delivered {
                    class: doc.class,
                    count: hashes.len(),
                });
            }
            NodeEvent::Rejected {
                doc,
                reason,
                ours: true,
                ..
            } => {
                tracing::warn!(%doc, ?reason, "the relay refused local edits; they were removed");
                self.notify(DeviceEvent::Rejected {
                    class: doc.class,
                    reason: format!("{reason:?}"),
                });
            }
            NodeEvent::SessionEstablished { session, peer }
                if self.lan_sessions.contains_key(&session) =>
            {
                // A LAN peer, not the relay: nothing is "connected" or "delivered" by it.
                self.lan_sessions.insert(session, peer);
                self.status.lan_peers = self.lan_sessions.values().flatten().copied().collect();
            }
            NodeEvent::SessionClosed { session, .. }
                if self.lan_sessions.contains_key(&session) =>
            {
                self.lan_sessions.remove(&session);
                self.status.lan_peers = self.lan_sessions.values().flatten().copied().collect();
            }
            NodeEvent::SessionEstablished { .. } => {
                self.status.connected = true;
                self.notify(DeviceEvent::Connection { connected: true });
            }
            NodeEvent::SessionClosed { .. } => {
                self.status.connected = !self.outbound.is_empty() && self.status.connected;
            }
            NodeEvent::PeerMisbehaved { detail, .. } => {
                tracing::warn!(%detail, "relay reported a problem")
            }
            NodeEvent::ClassAdded { class } | NodeEvent::RosterChanged { class } => {
                self.notify(DeviceEvent::ClassChanged(class));
            }
            _ => {}
        }
    }

    /// The cache key of a class's view: the viewer and the heads of every stored document of
    /// the class (one query; no document is loaded).
    fn view_key(&mut self, class: ClassId, device: &DeviceId) -> Result<[u8; 32], ClientError> {
        // The key reads the stored heads: commit what was received first.
        self.flush_received()?;
        let mut h = blake3::Hasher::new();
        h.update(b"homeroom/view-cache/v1\0");
        h.update(&device.0);
        for (doc, heads) in self.store.heads_of_class(&class)? {
            h.update(&doc.to_bytes());
            for head in heads {
                h.update(&head.0);
            }
        }
        Ok(*h.finalize().as_bytes())
    }

    fn build_notebook(
        &mut self,
        class: ClassId,
        device: &DeviceId,
    ) -> Result<NotebookView, ClientError> {
        let roster = self
            .node
            .replica()
            .roster(&class)
            .ok_or(ClientError::UnknownClass(class))?;
        // A non-member is refused before any document is loaded (the viewer is made again
        // below, where it can borrow the roster beside the documents).
        Viewer::of_device(roster, device).map_err(|_| ClientError::NotAMember(class))?;
        let families: Vec<FamilyId> = roster.families.keys().copied().collect();
        let lane_ids: Vec<FamilyId> = families
            .iter()
            .copied()
            .filter(|f| roster.can_read(device, &DocKind::Lane(*f)))
            .collect();
        // Load every document first, then borrow them and the roster immutably (no copy of
        // the roster: views are built on every read an app makes).
        let notebook_id = DocId::new(class, DocKind::Notebook);
        self.node.document(&notebook_id)?;
        for f in &lane_ids {
            self.node.document(&DocId::new(class, DocKind::Lane(*f)))?;
        }
        for f in &families {
            self.node.document(&DocId::new(class, DocKind::Board(*f)))?;
        }
        let replica = self.node.replica();
        let roster = replica
            .roster(&class)
            .ok_or(ClientError::UnknownClass(class))?;
        let viewer =
            Viewer::of_device(roster, device).map_err(|_| ClientError::NotAMember(class))?;
        let get = |d: DocId| replica.loaded_document(&d);
        let notebook = get(notebook_id).ok_or(ClientError::UnknownClass(class))?;
        let lanes = lane_ids
            .iter()
            .filter_map(|f| get(DocId::new(class, DocKind::Lane(*f))).map(|d| (*f, d)))
            .collect();
        let boards = families
            .iter()
            .filter_map(|f| get(DocId::new(class, DocKind::Board(*f))).map(|d| (*f, d)))
            .collect();
        let docs = ClassDocs {
            notebook,
            lanes,
            boards,
        };
        Ok(NotebookView::build(roster, &viewer, &docs)?)
    }

    /// Write the engine's queued writes of a local edit of `doc` that made change `hash`
    /// (fsynced), together with — in the **same** transaction — the record that `item` was
    /// created by that change (for [`Device::delivery_state`]). Separate transactions would
    /// let a crash between them keep the edit with its state reading `NotLocal` forever.
    fn commit_edit(
        &mut self,
        doc: DocId,
        item: Option<ItemId>,
        hash: Option<ChangeHash>,
    ) -> Result<(), ClientError> {
        let mut extra = WriteBatch::new();
        let record = item.zip(hash);
        if let Some((item, h)) = record {
            let mut v = doc.to_string().into_bytes();
            v.push(b'#');
            v.extend_from_slice(&h.0);
            extra.set_meta(item_key(item), v);
        }
        self.pump_with(extra, false)?;
        if let Some((item, h)) = record {
            self.items.insert(item, (doc, h));
        }
        Ok(())
    }
}

/// The metadata key of the record of which change created `item` (value: the document id
/// in text form, `#`, the 32-byte change hash).
impl Drop for Inner {
    /// Commit received changes still deferred (see [`Inner::pump_deferring`]); if that fails
    /// they are fetched again by the next session.
    fn drop(&mut self) {
        if let Err(e) = self.flush_received() {
            tracing::warn!(error = %e, "could not store received changes at close; they will be fetched again");
        }
    }
}

fn item_key(item: ItemId) -> String {
    format!("item/{item}")
}

/// A Homeroom device: open it on a data folder, act on classes, sync with a relay.
///
/// Every write returns only after the change is on this device's disk (SQLite, WAL,
/// `synchronous=FULL`): "saved on this device" is literal. Cloning is cheap (shared state).
#[derive(Clone)]
pub struct Device {
    pub(crate) inner: Arc<Mutex<Inner>>,
    device_id: DeviceId,
    data_dir: PathBuf,
    pub(crate) sync: Arc<Mutex<Option<crate::connection::SyncHandle>>>,
    /// The LAN sync task, when running (`lan.rs`).
    pub(crate) lan: Arc<Mutex<Option<crate::lan::LanHandle>>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("device", &self.device_id)
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

const STORE_FILE: &str = "device.sqlite3";

impl Device {
    /// Open (or create) the device in `data_dir`: its store, key and documents.
    pub fn open(data_dir: &Path) -> Result<Device, ClientError> {
        std::fs::create_dir_all(data_dir).map_err(|source| ClientError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join(STORE_FILE);
        let mut store = Store::open(&path)?;
        let identity = match store.identity()? {
            Some(id) => id,
            None => {
                let mut secret = [0u8; 32];
                let mut suffix = [0u8; 8];
                random_bytes(&mut secret)?;
                random_bytes(&mut suffix)?;
                let id = NodeIdentity {
                    secret,
                    actor_suffix: suffix,
                };
                store.set_identity(&id)?;
                id
            }
        };
        let reader = Store::open(&path)?;
        let key = identity.device_key();
        let device_id = key.device_id();
        let replica = Replica::device(
            key,
            identity.actor_suffix,
            Box::new(reader),
            Limits::default(),
        )?;
        let mut node = SyncNode::new(replica);
        let mut by_doc: HashMap<DocId, Vec<ChangeHash>> = HashMap::new();
        for (doc, hash) in store.undelivered(None)? {
            by_doc.entry(doc).or_default().push(hash);
        }
        for (doc, hashes) in by_doc {
            node.replica_mut().set_undelivered(&doc, hashes)?;
        }
        crate::invite::restore_joins(&store, &mut node)?;
        let pending = node.replica().undelivered_count();
        let inner = Inner {
            node,
            store,
            ids: OsIds::new(),
            outbound: HashMap::new(),
            observer: None,
            status: SyncStatus {
                pending,
                ..SyncStatus::default()
            },
            items: HashMap::new(),
            join_failures: HashMap::new(),
            removed_notified: std::collections::HashSet::new(),
            lan_sessions: HashMap::new(),
            deferred: Vec::new(),
        };
        Ok(Device {
            inner: Arc::new(Mutex::new(inner)),
            device_id,
            data_dir: data_dir.to_path_buf(),
            sync: Arc::new(Mutex::new(None)),
            lan: Arc::new(Mutex::new(None)),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would leave the engine in an unknown state; the store
        // on disk is still consistent (every write is one transaction), so continue with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This device's id (its public key).
    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }

    /// The data folder.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Receive events (replaces any earlier observer).
    pub fn set_observer(&self, observer: Arc<dyn DeviceObserver>) {
        self.lock().observer = Some(observer);
    }

    /// The current sync status.
    pub fn sync_status(&self) -> SyncStatus {
        self.lock().status.clone()
    }

    /// Found a class with this device as head teacher.
    pub fn create_class(&self, name: &str, teacher_name: &str) -> Result<ClassId, ClientError> {
        let mut nonce = [0u8; 16];
        random_bytes(&mut nonce)?;
        let mut g = self.lock();
        let member = g.ids.member_id();
        let class = g
            .node
            .found_class(nonce, name, member, teacher_name, now_ms())?;
        g.pump()?;
        Ok(class)
    }

    /// The classes on this device, including classes being joined (name empty until their
    /// roster arrives) and joins that failed.
    pub fn classes(&self) -> Vec<ClassSummary> {
        let g = self.lock();
        let mut ids = g.node.replica().classes();
        ids.extend(g.node.pending_joins());
        ids.extend(g.join_failures.keys().copied());
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .map(|c| {
                let r = g.node.replica().roster(&c);
                let m = r.and_then(|r| r.member_of(&self.device_id));
                ClassSummary {
                    id: c,
                    name: r.map(|r| r.class_name.clone()).unwrap_or_default(),
                    roles: m
                        .map(|m| m.roles.iter().copied().collect())
                        .unwrap_or_default(),
                    family: m.and_then(|m| m.family),
                    membership: g.membership(&c, &self.device_id),
                }
            })
            .collect()
    }

    /// The roster of a class.
    pub fn roster(&self, class: ClassId) -> Result<RosterIndex, ClientError> {
        self.lock()
            .node
            .replica()
            .roster(&class)
            .cloned()
            .ok_or(ClientError::UnknownClass(class))
    }

    /// Make a change to a document of a class with a typed operation. The change is signed,
    /// on disk when this returns, and queued for every connected relay.
    pub fn edit<T>(
        &self,
        doc: DocId,
        f: impl FnOnce(&mut Transaction<'_>, &Actor<'_>, &mut dyn IdSource) -> Result<T, ModelError>,
    ) -> Result<(T, Option<ChangeHash>), ClientError> {
        self.edit_item(doc, |_| None, f)
    }

    /// Like [`Device::edit`]; `item` names the item the edit created, which is recorded in
    /// the same transaction as the change (see [`Inner::commit_edit`]).
    fn edit_item<T>(
        &self,
        doc: DocId,
        item: impl FnOnce(&T) -> Option<ItemId>,
        f: impl FnOnce(&mut Transaction<'_>, &Actor<'_>, &mut dyn IdSource) -> Result<T, ModelError>,
    ) -> Result<(T, Option<ChangeHash>), ClientError> {
        let mut g = self.lock();
        let now = now_ms();
        let Inner { node, ids, .. } = &mut *g;
        let r = node.edit(&doc, now, |tx, roster, device| {
            let actor = Actor::new(roster, device, now);
            f(tx, &actor, ids)
        });
        let r = map_edit_error(r)?;
        g.commit_edit(doc, item(&r.0), r.1)?;
        Ok(r)
    }

    /// Like [`Device::edit`] without the local write-right check: for tests that receivers
    /// (the relay, LAN peers) refuse what a misbehaving device signs.
    #[cfg(feature = "test-support")]
    pub fn edit_unchecked<T>(
        &self,
        doc: DocId,
        f: impl FnOnce(&mut Transaction<'_>, &Actor<'_>, &mut dyn IdSource) -> Result<T, ModelError>,
    ) -> Result<(T, Option<ChangeHash>), ClientError> {
        let mut g = self.lock();
        let now = now_ms();
        let Inner { node, ids, .. } = &mut *g;
        let r = node.edit_unchecked(&doc, now, |tx, roster, device| {
            let actor = Actor::new(roster, device, now);
            f(tx, &actor, ids)
        });
        let r = map_edit_error(r)?;
        g.pump()?;
        Ok(r)
    }

    /// Like [`Device::edit`], reading a second document of the class.
    pub fn edit_reading<T>(
        &self,
        doc: DocId,
        read: DocId,
        f: impl FnOnce(
            &mut Transaction<'_>,
            &Automerge,
            &Actor<'_>,
            &mut dyn IdSource,
        ) -> Result<T, ModelError>,
    ) -> Result<(T, Option<ChangeHash>), ClientError> {
        self.edit_reading_item(doc, read, |_| None, f)
    }

    /// Like [`Device::edit_reading`]; `item` names the item the edit created, which is
    /// recorded in the same transaction as the change (see [`Inner::commit_edit`]).
    fn edit_reading_item<T>(
        &self,
        doc: DocId,
        read: DocId,
        item: impl FnOnce(&T) -> Option<ItemId>,
        f: impl FnOnce(
            &mut Transaction<'_>,
            &Automerge,
            &Actor<'_>,
            &mut dyn IdSource,
        ) -> Result<T, ModelError>,
    ) -> Result<(T, Option<ChangeHash>), ClientError> {
        let mut g = self.lock();
        let now = now_ms();
        let Inner { node, ids, .. } = &mut *g;
        let r = node.edit_reading(&doc, &read, now, |tx, other, roster, device| {
            let actor = Actor::new(roster, device, now);
            f(tx, other, &actor, ids)
        });
        let r = map_edit_error(r)?;
        g.commit_edit(doc, item(&r.0), r.1)?;
        Ok(r)
    }

    /// Read a document (as this device holds it) with a typed read.
    pub fn read<T>(
        &self,
        doc: DocId,
        f: impl FnOnce(&Automerge, &RosterIndex) -> Result<T, ModelError>,
    ) -> Result<T, ClientError> {
        let mut g = self.lock();
        if g.node.replica().roster(&doc.class).is_none() {
            return Err(ClientError::UnknownClass(doc.class));
        }
        // Load the document, then borrow it and the roster together (no copy of the roster).
        g.node.document(&doc)?;
        let replica = g.node.replica();
        match (replica.loaded_document(&doc), replica.roster(&doc.class)) {
            (Some(am), Some(roster)) => Ok(f(am, roster)?),
            _ => Err(ClientError::UnknownClass(doc.class)),
        }
    }

    /// Add a family to a class (staff).
    pub fn add_family(&self, class: ClassId, name: &str) -> Result<FamilyId, ClientError> {
        let (fam, _) = self.edit(DocId::new(class, DocKind::Roster), |tx, actor, ids| {
            actor.require_staff()?;
            let fam = ids.family_id();
            roster::add_family(tx, fam, name)?;
            Ok(fam)
        })?;
        Ok(fam)
    }

    /// Add a member (staff), optionally enrolling one device for them.
    pub fn add_member(
        &self,
        class: ClassId,
        name: &str,
        roles: &[Role],
        family: Option<FamilyId>,
        device: Option<DeviceId>,
    ) -> Result<MemberId, ClientError> {
        let (member, _) = self.edit(DocId::new(class, DocKind::Roster), |tx, actor, ids| {
            actor.require_staff()?;
            if let Some(f) = family
                && !actor.roster.families.contains_key(&f)
            {
                return Err(ModelError::UnknownId {
                    kind: "family",
                    id: f.to_hex(),
                });
            }
            let member = ids.member_id();
            roster::add_member(tx, member, name, roles, family)?;
            if let Some(d) = device {
                roster::add_device(tx, d, member, actor.now)?;
            }
            Ok(member)
        })?;
        Ok(member)
    }

    /// Enroll another device for an existing member (staff).
    pub fn enroll_device(
        &self,
        class: ClassId,
        member: MemberId,
        device: DeviceId,
    ) -> Result<(), ClientError> {
        self.edit(DocId::new(class, DocKind::Roster), |tx, actor, _| {
            actor.require_staff()?;
            if !actor.roster.members.contains_key(&member) {
                return Err(ModelError::UnknownId {
                    kind: "member",
                    id: member.to_hex(),
                });
            }
            roster::add_device(tx, device, member, actor.now)
        })?;
        Ok(())
    }

    /// Revoke a device (staff): its future changes are refused everywhere.
    pub fn revoke_device(&self, class: ClassId, device: DeviceId) -> Result<(), ClientError> {
        self.edit(DocId::new(class, DocKind::Roster), |tx, actor, _| {
            actor.require_staff()?;
            roster::revoke_device(tx, device, actor.now)
        })?;
        Ok(())
    }

    /// Roll a class over to a new term (staff): a new class — a new set of documents — with the
    /// same teachers and the families in `keep` (all families if `None`), their guardians and
    /// devices; the old class becomes a read-only archive that points to the new one. History
    /// stays bounded this way, and families who join the new term never see the old one.
    pub fn roll_term(
        &self,
        old: ClassId,
        new_name: &str,
        keep: Option<&[FamilyId]>,
    ) -> Result<ClassId, ClientError> {
        let roster = self.roster(old)?;
        if !roster.is_staff(&self.device_id) {
            return Err(ClientError::Model(ModelError::NotAllowed(
                "only teachers and admins may start a new term".into(),
            )));
        }
        if roster.archived_at.is_some() {
            return Err(ClientError::Model(ModelError::InvalidState(format!(
                "class {old} is already archived"
            ))));
        }
        let me = roster
            .member_of(&self.device_id)
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let new = self.create_class(new_name, &me)?;
        let kept = |f: &FamilyId| keep.is_none_or(|k| k.contains(f));
        self.edit(DocId::new(new, DocKind::Roster), |tx, actor, _| {
            roster::link_previous_term(tx, old)?;
            for fam in roster.families.values().filter(|f| kept(&f.id)) {
                roster::add_family(tx, fam.id, &fam.name)?;
                for (sid, name) in &fam.students {
                    roster::add_student(tx, fam.id, *sid, name)?;
                }
            }
            for m in roster.members.values() {
                if m.removed_at.is_some() || m.family.as_ref().is_some_and(|f| !kept(f)) {
                    continue;
                }
                let devices: Vec<&roster::Device> = roster
                    .devices
                    .values()
                    .filter(|d| {
                        d.member == m.id && d.revoked_at.is_none() && d.id != self.device_id
                    })
                    .collect();
                if devices.is_empty() && m.roles.iter().all(|r| !r.is_staff()) {
                    continue;
                }
                if roster
                    .member_of(&self.device_id)
                    .is_some_and(|me| me.id == m.id)
                {
                    continue; // the founder is already head teacher of the new class
                }
                let roles: Vec<Role> = m.roles.iter().copied().collect();
                roster::add_member(tx, m.id, &m.name, &roles, m.family)?;
                for d in devices {
                    roster::add_device(tx, d.id, m.id, actor.now)?;
                }
            }
            Ok(())
        })?;
        self.edit(DocId::new(old, DocKind::Roster), |tx, actor, _| {
            roster::archive(tx, new, actor.now)
        })?;
        Ok(new)
    }

    /// Post a notebook entry (staff).
    pub fn post_entry(
        &self,
        class: ClassId,
        entry: &NewEntry<'_>,
    ) -> Result<PostedEntry, ClientError> {
        let doc = DocId::new(class, DocKind::Notebook);
        let (posted, _) = self.edit_item(
            doc,
            |p: &PostedEntry| Some(p.entry),
            |tx, actor, mut ids| entries::post_entry(tx, actor, &mut ids, entry),
        )?;
        Ok(posted)
    }

    /// Edit an entry (staff); `material` asks families to sign again.
    pub fn edit_entry(
        &self,
        class: ClassId,
        entry: ItemId,
        title: &str,
        text: &str,
        material: bool,
    ) -> Result<ItemId, ClientError> {
        let doc = DocId::new(class, DocKind::Notebook);
        let (rev, _) = self.edit_item(
            doc,
            |rev: &ItemId| Some(*rev),
            |tx, actor, mut ids| {
                entries::edit_entry(tx, actor, &mut ids, entry, title, text, material)
            },
        )?;
        Ok(rev)
    }

    fn my_family(&self, class: ClassId) -> Result<FamilyId, ClientError> {
        let g = self.lock();
        let r = g
            .node
            .replica()
            .roster(&class)
            .ok_or(ClientError::UnknownClass(class))?;
        let m = r
            .member_of(&self.device_id)
            .ok_or(ClientError::NotAMember(class))?;
        m.family.filter(|f| m.is_guardian_of(f)).ok_or_else(|| {
            ClientError::Model(ModelError::NotAllowed("only guardians may do this".into()))
        })
    }

    /// Sign the latest revision of an entry (guardian).
    pub fn sign(&self, class: ClassId, entry: ItemId) -> Result<ItemId, ClientError> {
        let family = self.my_family(class)?;
        let lane = DocId::new(class, DocKind::Lane(family));
        let notebook = DocId::new(class, DocKind::Notebook);
        let (sig, _) = self.edit_reading_item(
            lane,
            notebook,
            |sig: &ItemId| Some(*sig),
            |tx, nb, actor, mut ids| {
                let e = entries::read_entry(nb, entry)?;
                let latest = e
                    .latest()
                    .map(|r| r.id)
                    .ok_or_else(|| ModelError::UnknownId {
                        kind: "entry",
                        id: entry.to_hex(),
                    })?;
                entries::sign_entry(tx, actor, &mut ids, nb, entry, latest, None)
            },
        )?;
        Ok(sig)
    }

    /// Reply under an entry: public (the family's board) or private (the family's lane).
    pub fn reply(
        &self,
        class: ClassId,
        entry: ItemId,
        text: &str,
        public: bool,
    ) -> Result<ItemId, ClientError> {
        let family = self.my_family(class)?;
        let doc = DocId::new(
            class,
            if public {
                DocKind::Board(family)
            } else {
                DocKind::Lane(family)
            },
        );
        let notebook = DocId::new(class, DocKind::Notebook);
        let scope = if public {
            ReplyScope::Public
        } else {
            ReplyScope::Private
        };
        let (id, _) = self.edit_reading_item(
            doc,
            notebook,
            |id: &ItemId| Some(*id),
            |tx, nb, actor, mut ids| {
                entries::post_reply(tx, actor, &mut ids, nb, scope, entry, text)
            },
        )?;
        Ok(id)
    }

    /// The notebook as this device's member sees it: entries with revisions, signatures and
    /// replies composed across the documents this device holds.
    ///
    /// The composed view is cached in the store, keyed by the heads of every document of the
    /// class and the viewer: while nothing changed, opening the notebook loads no Automerge
    /// document at all. Any change to the class gives a new key and a rebuild.
    pub fn notebook(&self, class: ClassId) -> Result<NotebookView, ClientError> {
        let mut g = self.lock();
        let key = g.view_key(class, &self.device_id)?;
        let meta_key = format!("view/{class}");
        if let Some(bytes) = g.store.meta(&meta_key)?
            && bytes.len() > 32
            && bytes[..32] == key
            && let Ok(view) = postcard::from_bytes::<NotebookView>(&bytes[32..])
        {
            return Ok(view);
        }
        let view = g.build_notebook(class, &self.device_id)?;
        if let Ok(encoded) = postcard::to_stdvec(&view) {
            let mut v = key.to_vec();
            v.extend_from_slice(&encoded);
            // A cache: failing to store it costs a rebuild next time, nothing else.
            if let Err(e) = g.store.set_meta(&meta_key, &v) {
                tracing::warn!(error = %e, "could not cache the notebook view");
            }
        }
        Ok(view)
    }

    /// Whether a local item (entry, revision, signature, reply…) is delivered to the relay.
    pub fn delivery_state(&self, item: ItemId) -> Result<DeliveryState, ClientError> {
        let mut g = self.lock();
        let known = g.items.get(&item).copied();
        let found = match known {
            Some(x) => Some(x),
            None => match g.store.meta(&item_key(item))? {
                Some(v) if v.len() > 33 => {
                    let (doc, hash) = v.split_at(v.len() - 33);
                    let doc: Option<DocId> =
                        std::str::from_utf8(doc).ok().and_then(|s| s.parse().ok());
                    let mut h = [0u8; 32];
                    h.copy_from_slice(&hash[1..]);
                    doc.map(|d| (d, ChangeHash(h)))
                }
                _ => None,
            },
        };
        let Some((doc, hash)) = found else {
            return Ok(DeliveryState::NotLocal);
        };
        g.items.insert(item, (doc, hash));
        if g.node.replica().is_delivered(&doc, &hash) {
            return Ok(DeliveryState::Delivered);
        }
        // Not delivered: still waiting, or refused (then it is in the audit table).
        g.flush_received()?;
        if g.store.rejected(&doc)?.iter().any(|r| r.hash == hash) {
            return Ok(DeliveryState::Rejected);
        }
        Ok(DeliveryState::SavedLocally)
    }
}

fn map_edit_error<T>(r: Result<T, homeroom_sync::SyncError>) -> Result<T, ClientError> {
    match r {
        Ok(v) => Ok(v),
        Err(homeroom_sync::SyncError::UnknownClass(c)) => Err(ClientError::UnknownClass(c)),
        Err(homeroom_sync::SyncError::NotAllowed { reason, .. }) => {
            Err(ClientError::Model(ModelError::NotAllowed(reason)))
        }
        Err(homeroom_sync::SyncError::Model(m)) => Err(ClientError::Model(m)),
        Err(e) => Err(ClientError::from(e)),
    }
}
