//! The store as the sync engine's storage: reads through [`DocSource`], writes by applying the
//! engine's [`StorageWrite`] requests — many at once in one transaction (group commit).

use homeroom_core::automerge::ChangeHash;
use homeroom_core::{DeviceId, DocId, DocKind};
use homeroom_sync::{DocSource, StorageWrite, StoredDocument, SyncError, WriteKind};

use crate::error::StoreError;
use crate::store::Store;
use crate::types::WriteBatch;

fn read_err(what: impl Into<String>, e: StoreError) -> SyncError {
    SyncError::Storage {
        what: what.into(),
        reason: e.to_string(),
    }
}

impl DocSource for Store {
    fn load(&mut self, doc: &DocId) -> Result<Option<StoredDocument>, SyncError> {
        let loaded = self
            .load_document(doc)
            .map_err(|e| read_err(doc.to_string(), e))?;
        Ok(loaded.map(|l| StoredDocument {
            snapshot: l.snapshot,
            changes: l.changes,
            signatures: l.signatures,
        }))
    }

    fn rosters(&mut self) -> Result<Vec<DocId>, SyncError> {
        Ok(Store::documents(self)
            .map_err(|e| read_err("document list", e))?
            .into_iter()
            .filter(|d| d.kind == DocKind::Roster)
            .collect())
    }

    fn documents(&mut self) -> Result<Vec<DocId>, SyncError> {
        Store::documents(self).map_err(|e| read_err("document list", e))
    }

    fn stored_heads(&mut self, doc: &DocId) -> Result<Option<Vec<ChangeHash>>, SyncError> {
        let heads = self.heads(doc).map_err(|e| read_err(doc.to_string(), e))?;
        Ok(if heads.is_empty() { None } else { Some(heads) })
    }

    fn sync_state(&mut self, peer: &DeviceId, doc: &DocId) -> Result<Option<Vec<u8>>, SyncError> {
        Store::sync_state(self, peer, doc).map_err(|e| read_err(doc.to_string(), e))
    }
}

impl Store {
    /// Like [`Store::apply_writes`] for writes that hold **only changes received from a peer**
    /// (plus sync states): they are committed without an fsync (`synchronous=NORMAL`; WAL keeps
    /// the file consistent, a power cut may drop the last such commits). Use it only on a device
    /// and only when every change in `writes` is already durable elsewhere — the relay
    /// acknowledged it — so losing it locally costs a re-fetch, never data. Local edits and
    /// everything on a relay go through `apply_writes` (fsync before return).
    pub fn apply_received_writes(&mut self, writes: &[StorageWrite]) -> Result<(), StoreError> {
        self.set_fsync_on_commit(false)?;
        let result = self.apply_writes(writes);
        let restored = self.set_fsync_on_commit(true);
        result.and(restored)
    }

    /// Perform the engine's storage writes. Changes, heads and sync states of all `writes` go
    /// into **one** transaction (one fsync): when this returns `Ok`, every one of them is on
    /// disk and the caller may report each write done to the engine.
    pub fn apply_writes(&mut self, writes: &[StorageWrite]) -> Result<(), StoreError> {
        self.apply_writes_with(writes, WriteBatch::new())
    }

    /// Like [`Store::apply_writes`], committing `extra` (e.g. metadata set with
    /// [`WriteBatch::set_meta`]) in the **same** transaction as the writes' changes, heads and
    /// sync states: after a crash either all of them are on disk or none. A device records which
    /// change created an item this way, so that an edit is never kept without its record.
    pub fn apply_writes_with(
        &mut self,
        writes: &[StorageWrite],
        extra: WriteBatch,
    ) -> Result<(), StoreError> {
        let mut batch = extra;
        for w in writes {
            match &w.kind {
                WriteKind::Changes { changes, heads } => {
                    for (doc, c) in changes {
                        batch.put_change(*doc, c.clone());
                    }
                    for (doc, h) in heads {
                        batch.set_heads(*doc, h.clone());
                    }
                }
                WriteKind::SyncStates(states) => {
                    for (peer, doc, bytes) in states {
                        batch.put_sync_state(*peer, *doc, bytes.clone());
                    }
                }
                WriteKind::Rejected { .. }
                | WriteKind::Delivered { .. }
                | WriteKind::Audit { .. } => {}
            }
        }
        if !batch.is_empty() {
            self.write(&batch)?;
        }
        for w in writes {
            match &w.kind {
                WriteKind::Rejected {
                    doc,
                    hashes,
                    reason,
                } => {
                    self.reject_changes(doc, hashes, &format!("{reason:?}"))?;
                }
                WriteKind::Delivered { doc, hashes } => {
                    self.mark_delivered(doc, hashes)?;
                }
                WriteKind::Audit {
                    doc,
                    changes,
                    reason,
                } => {
                    self.audit_refused(doc, changes, &format!("{reason:?}"))?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}
