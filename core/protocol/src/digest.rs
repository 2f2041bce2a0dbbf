//! Short digests of document heads, used by the catalog so an idle reconnect costs one round
//! trip: equal digests mean equal heads (with overwhelming probability), so nothing to sync.

use homeroom_core::DocId;
use homeroom_core::automerge::ChangeHash;

use crate::message::Digest;

/// An 8-byte digest of a document's heads (order-independent).
pub fn heads_digest(heads: &[ChangeHash]) -> Digest {
    let mut sorted: Vec<&ChangeHash> = heads.iter().collect();
    sorted.sort();
    let mut h = blake3::Hasher::new();
    h.update(b"homeroom/heads/v1\0");
    for head in sorted {
        h.update(&head.0);
    }
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    out
}

/// An 8-byte digest over a set of documents and their head digests (order-independent): the
/// one value a device and the relay compare per class on reconnect.
pub fn class_digest(docs: &[(DocId, Digest)]) -> Digest {
    let mut sorted: Vec<&(DocId, Digest)> = docs.iter().collect();
    sorted.sort_by_key(|d| d.0);
    let mut h = blake3::Hasher::new();
    h.update(b"homeroom/class/v1\0");
    for (doc, digest) in sorted {
        h.update(&doc.to_bytes());
        h.update(digest);
    }
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    out
}
