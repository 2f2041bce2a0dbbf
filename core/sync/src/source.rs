//! The read side of storage, as the engine sees it.
//!
//! Reads are synchronous calls on a [`DocSource`] (a local SQLite file or, in simulations, a
//! map): they are fast, local and cannot acknowledge anything. Writes never go through this
//! trait: they leave the engine as [`crate::StorageWrite`] requests so the driver can group
//! them into one fsync and tell the engine when they are durable.

use std::collections::HashMap;

use homeroom_core::automerge::{ActorId, Automerge, Change, ChangeHash};
use homeroom_core::{ChangeSignature, DeviceId, DocId, SignedChange, genesis};

use crate::error::SyncError;

/// A document as read from storage.
#[derive(Debug, Clone, Default)]
pub struct StoredDocument {
    /// A compacted snapshot (`Automerge::save()` bytes), if one was taken.
    pub snapshot: Option<Vec<u8>>,
    /// Changes not covered by the snapshot.
    pub changes: Vec<SignedChange>,
    /// The signature of every change of the document, snapshot included.
    pub signatures: HashMap<ChangeHash, (DeviceId, ChangeSignature)>,
}

/// The engine's read access to storage.
pub trait DocSource {
    /// The stored document, or `None` if nothing was ever stored for it.
    fn load(&mut self, doc: &DocId) -> Result<Option<StoredDocument>, SyncError>;
    /// Every roster document in storage (loaded eagerly: they decide all access).
    fn rosters(&mut self) -> Result<Vec<DocId>, SyncError>;
    /// Every document in storage.
    fn documents(&mut self) -> Result<Vec<DocId>, SyncError>;
    /// The stored heads of a document without loading it (for catalog digests).
    fn stored_heads(&mut self, doc: &DocId) -> Result<Option<Vec<ChangeHash>>, SyncError>;
    /// The persisted Automerge sync state for `peer` and `doc`.
    fn sync_state(&mut self, peer: &DeviceId, doc: &DocId) -> Result<Option<Vec<u8>>, SyncError>;
}

/// Build an in-memory document from what storage returned, starting from the genesis change.
pub fn materialize(
    id: &DocId,
    actor: ActorId,
    stored: &StoredDocument,
) -> Result<Automerge, SyncError> {
    let mut doc = match &stored.snapshot {
        Some(bytes) => {
            let mut d = Automerge::load(bytes).map_err(|e| SyncError::CorruptDocument {
                doc: *id,
                reason: e.to_string(),
            })?;
            d.set_actor(actor);
            d
        }
        None => genesis::genesis_document(id, actor),
    };
    let mut changes = Vec::with_capacity(stored.changes.len());
    for c in &stored.changes {
        let change =
            Change::try_from(c.bytes.as_slice()).map_err(|e| SyncError::CorruptDocument {
                doc: *id,
                reason: format!("stored change {}: {e}", c.hash),
            })?;
        changes.push(change);
    }
    doc.apply_changes(changes)
        .map_err(|e| SyncError::CorruptDocument {
            doc: *id,
            reason: e.to_string(),
        })?;
    Ok(doc)
}

/// A [`DocSource`] kept in memory, for tests and simulations.
#[derive(Debug, Default, Clone)]
pub struct MemorySource {
    /// Durable changes per document, in the order they were written.
    pub docs: HashMap<DocId, Vec<SignedChange>>,
    /// Persisted sync states.
    pub sync_states: HashMap<(DeviceId, DocId), Vec<u8>>,
}

impl MemorySource {
    /// Apply a write (what a driver does with [`crate::StorageWrite`]).
    pub fn apply(&mut self, write: &crate::StorageWrite) {
        use crate::WriteKind;
        match &write.kind {
            WriteKind::Changes { changes, .. } => {
                for (doc, c) in changes {
                    let list = self.docs.entry(*doc).or_default();
                    if !list.iter().any(|x| x.hash == c.hash) {
                        list.push(c.clone());
                    }
                }
            }
            WriteKind::SyncStates(states) => {
                for (peer, doc, bytes) in states {
                    self.sync_states.insert((*peer, *doc), bytes.clone());
                }
            }
            WriteKind::Rejected { doc, hashes, .. } => {
                if let Some(list) = self.docs.get_mut(doc) {
                    list.retain(|c| !hashes.contains(&c.hash));
                }
            }
            WriteKind::Delivered { .. } | WriteKind::Audit { .. } => {}
        }
    }
}

impl DocSource for MemorySource {
    fn load(&mut self, doc: &DocId) -> Result<Option<StoredDocument>, SyncError> {
        Ok(self.docs.get(doc).map(|changes| StoredDocument {
            snapshot: None,
            changes: changes.clone(),
            signatures: changes
                .iter()
                .map(|c| (c.hash, (c.author, c.signature)))
                .collect(),
        }))
    }

    fn rosters(&mut self) -> Result<Vec<DocId>, SyncError> {
        Ok(self
            .docs
            .keys()
            .filter(|d| d.kind == homeroom_core::DocKind::Roster)
            .copied()
            .collect())
    }

    fn documents(&mut self) -> Result<Vec<DocId>, SyncError> {
        Ok(self.docs.keys().copied().collect())
    }

    fn stored_heads(&mut self, doc: &DocId) -> Result<Option<Vec<ChangeHash>>, SyncError> {
        // A memory source caches no heads: rebuild the document to read them.
        match self.load(doc)? {
            Some(stored) => Ok(Some(
                materialize(doc, ActorId::from(vec![0u8; 16]), &stored)?.get_heads(),
            )),
            None => Ok(None),
        }
    }

    fn sync_state(&mut self, peer: &DeviceId, doc: &DocId) -> Result<Option<Vec<u8>>, SyncError> {
        Ok(self.sync_states.get(&(*peer, *doc)).cloned())
    }
}
