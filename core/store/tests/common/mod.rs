//! Helpers shared by the integration tests: real Automerge changes signed with real keys.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use homeroom_core::automerge::transaction::{CommitOptions, Transactable};
use homeroom_core::automerge::{Automerge, ChangeHash, ROOT};
use homeroom_core::genesis::genesis_document;
use homeroom_core::identity::actor_for;
use homeroom_core::{ClassId, DeviceKey, DocId, DocKind, FamilyId, SignedChange};

/// A document id of class `class` (all bytes equal) and the given kind.
pub(crate) fn doc_id(class: u8, kind: DocKind) -> DocId {
    DocId::new(ClassId([class; 16]), kind)
}

/// A family's private lane.
pub(crate) fn lane(class: u8, family: u8) -> DocId {
    doc_id(class, DocKind::Lane(FamilyId([family; 8])))
}

/// A device editing one document: its key and its replica.
pub(crate) struct Writer {
    pub(crate) key: DeviceKey,
    pub(crate) doc: DocId,
    pub(crate) am: Automerge,
    counter: u64,
}

impl Writer {
    /// A writer with secret `[secret; 32]` and actor suffix `[suffix; 8]`, starting from the
    /// document's genesis.
    pub(crate) fn new(secret: u8, suffix: u8, doc: DocId) -> Self {
        let key = DeviceKey::from_secret([secret; 32]);
        let am = genesis_document(&doc, actor_for(&key.device_id(), [suffix; 8]));
        Self {
            key,
            doc,
            am,
            counter: 0,
        }
    }

    /// A writer continuing an existing replica.
    pub(crate) fn with_doc(key: DeviceKey, doc: DocId, am: Automerge) -> Self {
        Self {
            key,
            doc,
            am,
            counter: 0,
        }
    }

    /// Make one small change (deterministic: time 0) and sign it.
    pub(crate) fn edit(&mut self) -> SignedChange {
        self.counter += 1;
        // A key unique to this actor: writing a value a key already has is no change at all.
        let key = format!("{}:{}", self.am.get_actor().to_hex_string(), self.counter);
        let mut tx = self.am.transaction();
        tx.put(ROOT, key.as_str(), self.counter as i64).unwrap();
        let (hash, _) = tx.commit_with(CommitOptions::default().with_time(0));
        let change = self.am.get_last_local_change().unwrap();
        assert_eq!(Some(change.hash()), hash);
        SignedChange::sign(&self.key, &self.doc, &change)
    }

    /// `n` changes, each depending on the previous one.
    pub(crate) fn edits(&mut self, n: usize) -> Vec<SignedChange> {
        (0..n).map(|_| self.edit()).collect()
    }

    /// Receive changes made elsewhere.
    pub(crate) fn receive(&mut self, changes: &[SignedChange]) {
        let parsed: Vec<_> = changes
            .iter()
            .map(|c| homeroom_core::automerge::Change::try_from(&c.bytes[..]).unwrap())
            .collect();
        self.am.apply_changes(parsed).unwrap();
    }

    /// The replica's heads.
    pub(crate) fn heads(&self) -> Vec<ChangeHash> {
        self.am.get_heads()
    }
}

/// Pair every change with its document, as `Store::put_changes` takes them.
pub(crate) fn batch(doc: DocId, changes: &[SignedChange]) -> Vec<(DocId, SignedChange)> {
    changes.iter().map(|c| (doc, c.clone())).collect()
}

/// Whether `am` holds change `hash`.
pub(crate) fn holds(am: &Automerge, hash: &ChangeHash) -> bool {
    am.get_change_meta_by_hash(hash).is_some()
}
