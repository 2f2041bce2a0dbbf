//! Deterministic genesis changes.
//!
//! Two devices that each create a top-level map under the same key concurrently produce two
//! different objects, and Automerge shows only one of them: the other device's items vanish
//! from view. To avoid that, every document starts from one **genesis change** that creates
//! all of its top-level maps. The genesis change is a pure function of the [`DocId`] (fixed
//! actor, time 0, fixed operations), so every device computes the byte-identical change with
//! the same hash. It is unsigned; receivers accept it only by recomputing it
//! ([`is_genesis`]).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ChangeHash, ObjType, ROOT};

use crate::document::{DocId, DocKind};

/// The top-level maps of each kind of document. Changing these changes every genesis hash.
pub fn top_level_maps(kind: &DocKind) -> &'static [&'static str] {
    match kind {
        DocKind::Roster => &["class", "members", "devices", "families"],
        DocKind::Notebook => &[
            "entries",
            "events",
            "decisions",
            "duty",
            "surveys",
            "chains",
            "leave_decisions",
            "homework",
            "moderation",
        ],
        DocKind::Lane(_) => &[
            "signatures",
            "receipts",
            "replies",
            "thread",
            "contacts",
            "requests",
            "answers",
            "chain_lines",
            "leave",
            "homework",
            "claims",
            "swaps",
            "checkins",
            "consents",
        ],
        DocKind::Board(_) => &["replies", "moderation"],
        DocKind::Committee => &["posts"],
        DocKind::Mailbox(_) => &["messages"],
        DocKind::Ballots => &["ballots"],
    }
}

/// The fixed actor id of genesis changes: 32 zero bytes and the first 8 bytes of the document
/// id's BLAKE3 hash. It names no device, so no device can sign as it.
fn genesis_actor(doc: &DocId) -> ActorId {
    let h = blake3::hash(&doc.to_bytes());
    let mut bytes = vec![0u8; 32];
    bytes.extend_from_slice(&h.as_bytes()[..8]);
    ActorId::from(bytes)
}

/// A fresh document holding only the genesis change of `doc`, with `actor` set for local edits.
pub fn genesis_document(doc: &DocId, actor: ActorId) -> Automerge {
    let mut am = Automerge::new().with_actor(genesis_actor(doc));
    let mut tx = am.transaction();
    for key in top_level_maps(&doc.kind) {
        // Writing to a fresh transaction on a fresh document cannot fail; ignore the Result's
        // value but not silently: any error would show as a missing map in tests.
        if tx.put_object(ROOT, *key, ObjType::Map).is_err() {
            debug_assert!(false, "put_object on a fresh document failed");
        }
    }
    tx.commit_with(CommitOptions::default().with_time(0));
    am.set_actor(actor);
    am
}

/// The hash of `doc`'s genesis change.
///
/// A pure function of the document id, asked for on every ingest and every catalog of a
/// never-stored document; building a genesis document each time was the largest single cost
/// of receiving an edit on a device, so hashes are memoised (bounded: the cache is cleared
/// when it reaches [`GENESIS_CACHE_MAX`] entries, ~5 MiB).
pub fn genesis_hash(doc: &DocId) -> ChangeHash {
    static CACHE: OnceLock<Mutex<HashMap<DocId, ChangeHash>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(h) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(doc) {
        return *h;
    }
    let am = genesis_document(doc, ActorId::from(vec![0u8; 1]));
    let hash = am
        .get_heads()
        .first()
        .copied()
        .unwrap_or(ChangeHash([0; 32]));
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= GENESIS_CACHE_MAX {
        map.clear();
    }
    map.insert(*doc, hash);
    hash
}

/// How many genesis hashes [`genesis_hash`] keeps before starting over.
pub const GENESIS_CACHE_MAX: usize = 65_536;

/// Whether `hash` is `doc`'s genesis change.
pub fn is_genesis(doc: &DocId, hash: &ChangeHash) -> bool {
    genesis_hash(doc) == *hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ClassId, FamilyId};

    #[test]
    fn genesis_is_deterministic_and_per_document() {
        let a = DocId::new(ClassId([1; 16]), DocKind::Lane(FamilyId([2; 8])));
        let b = DocId::new(ClassId([1; 16]), DocKind::Lane(FamilyId([3; 8])));
        let x = genesis_document(&a, ActorId::from(vec![7u8; 40]));
        let y = genesis_document(&a, ActorId::from(vec![8u8; 40]));
        assert_eq!(x.get_heads(), y.get_heads());
        assert_eq!(x.get_heads(), vec![genesis_hash(&a)]);
        assert_ne!(genesis_hash(&a), genesis_hash(&b));
        assert!(is_genesis(&a, &genesis_hash(&a)));
        assert!(!is_genesis(&b, &genesis_hash(&a)));
    }
}
