//! Values passed to and returned by the [`Store`](crate::Store).

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use homeroom_core::automerge::{ActorId, Automerge, Change, ChangeHash};
use homeroom_core::genesis::genesis_document;
use homeroom_core::identity::{ACTOR_SUFFIX_LEN, actor_for};
use homeroom_core::{ChangeSignature, DeviceId, DeviceKey, DocId, SignedChange};

use crate::StoreError;

/// The identity of the node that owns a store: its ed25519 secret and the random suffix of
/// its Automerge actor id (see [`homeroom_core::identity`]). Devices keep theirs in their
/// store; the relay may keep one for the changes it writes itself.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The ed25519 secret key bytes.
    pub secret: [u8; 32],
    /// The actor-id suffix chosen when the store was created.
    pub actor_suffix: [u8; ACTOR_SUFFIX_LEN],
}

impl NodeIdentity {
    /// The signing key.
    pub fn device_key(&self) -> DeviceKey {
        DeviceKey::from_secret(self.secret)
    }

    /// The public identity.
    pub fn device_id(&self) -> DeviceId {
        self.device_key().device_id()
    }

    /// The Automerge actor id this node writes with.
    pub fn actor_id(&self) -> ActorId {
        actor_for(&self.device_id(), self.actor_suffix)
    }
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("NodeIdentity")
            .field("device", &self.device_id())
            .field("actor_suffix", &hex_bytes(&self.actor_suffix))
            .finish_non_exhaustive()
    }
}

fn hex_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A document as stored: the latest compacted snapshot (if any), every change stored after
/// it, and the signature of every change the document holds (compacted or not).
#[derive(Clone, Debug)]
pub struct LoadedDocument {
    /// The document.
    pub doc: DocId,
    /// `Automerge::save()` bytes of the last snapshot, if the document was ever compacted.
    pub snapshot: Option<Vec<u8>>,
    /// The heads of `snapshot` (empty without one).
    pub snapshot_heads: Vec<ChangeHash>,
    /// Changes not contained in the snapshot, in the order they were stored (which is causal
    /// order whenever they were stored as they arrived).
    pub changes: Vec<SignedChange>,
    /// Author and signature of every change of the document, including those folded into
    /// the snapshot, so the document can be forwarded with its signatures after compaction.
    pub signatures: HashMap<ChangeHash, (DeviceId, ChangeSignature)>,
    /// The cached heads last set with [`Store::set_heads`](crate::Store::set_heads) (empty
    /// if never set).
    pub heads: Vec<ChangeHash>,
}

impl LoadedDocument {
    /// Rebuild the Automerge document: the snapshot, or the document's deterministic genesis
    /// when there is none, plus every stored change after it; local edits will use `actor`.
    ///
    /// Signatures are not re-verified: the store holds only changes that were verified
    /// before they were stored. A stored change whose dependencies are missing stays queued
    /// inside Automerge (see `Automerge::get_missing_deps`), exactly as if it had arrived
    /// over the network.
    pub fn to_automerge(&self, actor: ActorId) -> Result<Automerge, StoreError> {
        let mut am = match &self.snapshot {
            Some(bytes) => Automerge::load(bytes)
                .map_err(|e| StoreError::Automerge {
                    doc: self.doc,
                    step: "loading the stored snapshot",
                    source: Box::new(e),
                })?
                .with_actor(actor),
            None => genesis_document(&self.doc, actor),
        };
        let mut parsed = Vec::with_capacity(self.changes.len());
        for c in &self.changes {
            let change =
                Change::try_from(&c.bytes[..]).map_err(|e| StoreError::MalformedChange {
                    doc: self.doc,
                    hash: c.hash,
                    reason: e.to_string(),
                })?;
            parsed.push(change);
        }
        am.apply_changes(parsed)
            .map_err(|e| StoreError::Automerge {
                doc: self.doc,
                step: "applying stored changes",
                source: Box::new(e),
            })?;
        Ok(am)
    }
}

/// A change removed by [`Store::reject_changes`](crate::Store::reject_changes), as kept in
/// the audit table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedChange {
    /// The change's hash.
    pub hash: ChangeHash,
    /// Its author, if the change was stored when it was rejected.
    pub author: Option<DeviceId>,
    /// Its signature, if the change was stored when it was rejected.
    pub signature: Option<ChangeSignature>,
    /// Its bytes, if the change was stored when it was rejected.
    pub bytes: Option<Vec<u8>>,
    /// Why it was rejected (the caller's words; for a change removed because it depends on
    /// a rejected one, the same reason prefixed with `depends on rejected change <hash>: `).
    pub reason: String,
    /// When, in milliseconds since the Unix epoch (the store's clock).
    pub rejected_at_ms: i64,
}

/// Writes committed together by [`Store::write`](crate::Store::write): one transaction and
/// one fsync for the whole batch, however many documents and peers it touches. The relay's
/// writer thread collects the edits of many connections into one batch (group commit).
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    pub(crate) changes: Vec<(DocId, SignedChange)>,
    pub(crate) heads: Vec<(DocId, Vec<ChangeHash>)>,
    pub(crate) sync_states: Vec<(DeviceId, DocId, Vec<u8>)>,
    pub(crate) meta: Vec<(String, Vec<u8>)>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Store `change` in `doc` (idempotent per hash).
    pub fn put_change(&mut self, doc: DocId, change: SignedChange) -> &mut Self {
        self.changes.push((doc, change));
        self
    }

    /// Store several changes.
    pub fn put_changes(
        &mut self,
        changes: impl IntoIterator<Item = (DocId, SignedChange)>,
    ) -> &mut Self {
        self.changes.extend(changes);
        self
    }

    /// Replace the cached heads of `doc` (applied after the batch's changes).
    pub fn set_heads(&mut self, doc: DocId, heads: Vec<ChangeHash>) -> &mut Self {
        self.heads.push((doc, heads));
        self
    }

    /// Replace the persisted `automerge::sync::State` of (`peer`, `doc`).
    pub fn put_sync_state(&mut self, peer: DeviceId, doc: DocId, state: Vec<u8>) -> &mut Self {
        self.sync_states.push((peer, doc, state));
        self
    }

    /// Store `value` under the metadata `key` (as [`Store::set_meta`](crate::Store::set_meta)),
    /// in the same transaction as the batch's changes: e.g. a device's record of which change
    /// created an item, which must never be on disk without the change or the change without it.
    pub fn set_meta(&mut self, key: impl Into<String>, value: Vec<u8>) -> &mut Self {
        self.meta.push((key.into(), value));
        self
    }

    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.heads.is_empty()
            && self.sync_states.is_empty()
            && self.meta.is_empty()
    }

    /// Number of changes in the batch.
    pub fn change_count(&self) -> usize {
        self.changes.len()
    }
}

/// What [`Store::write`](crate::Store::write) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteSummary {
    /// Changes that were not stored before.
    pub new_changes: usize,
    /// Changes that were already stored (skipped, idempotent).
    pub duplicate_changes: usize,
}

/// How to open a store file.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    pub(crate) busy_timeout: Duration,
    pub(crate) integrity_check: bool,
    pub(crate) cache_kib: u32,
    pub(crate) fsync: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(5),
            integrity_check: true,
            cache_kib: 16 * 1024,
            fsync: true,
        }
    }
}

impl OpenOptions {
    /// Defaults: a 5 s busy timeout, `PRAGMA quick_check` before the store is used, and a
    /// page cache of up to 16 MiB.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a statement waits for another connection's lock before failing with
    /// [`StoreError::Busy`].
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The most memory SQLite's page cache may use, in KiB (default 16 MiB). It fills only
    /// as pages are read, so small stores use less.
    pub fn cache_kib(mut self, kib: u32) -> Self {
        self.cache_kib = kib;
        self
    }

    /// Whether to run `PRAGMA quick_check` when opening (default: yes). It reads every page
    /// once, so that a damaged file is reported at open as [`StoreError::Corrupt`] instead of
    /// failing later in the middle of sync. A relay with a multi-gigabyte store may turn it
    /// off and run [`Store::integrity_check`](crate::Store::integrity_check) from its admin
    /// tooling instead.
    pub fn integrity_check(mut self, check: bool) -> Self {
        self.integrity_check = check;
        self
    }

    /// **Unsafe for production; benchmarks only.** With `false`, commits never fsync
    /// (`synchronous=OFF`): a write that returned `Ok` may be lost — or the file damaged — on a
    /// power cut or OS crash, so "saved" no longer means on disk. Default `true`
    /// (`synchronous=FULL`). Exists to measure the relay with durability off against servers
    /// that acknowledge nothing durably.
    pub fn fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }
}
