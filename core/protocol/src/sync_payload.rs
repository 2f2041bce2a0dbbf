//! Checking a `Sync` payload before it reaches Automerge.
//!
//! `Message::Sync::payload` holds `automerge::sync::Message::encode()` bytes from a peer that
//! may be hostile. automerge 0.12 decodes such bytes safely, but acting on some decoded
//! messages is not safe (the bloom and inflate cases found by review and confirmed by the tests
//! below, the bundle and `need` panics by the `change_import` fuzz target):
//!
//! - a `have` bloom filter with entries but zero bits per entry makes the *next*
//!   `generate_sync_message` divide by zero (a panic) — a 10-byte payload;
//! - a bloom filter announcing ~2³² probes makes it allocate and loop without bound (12 GB
//!   and over a minute for a 16-byte payload);
//! - a *compressed* change chunk (chunk type 2) is inflated without a size limit while it is
//!   parsed, before any signature can be checked: 1 MB of deflate became 3 GB of memory;
//! - some *bundle* chunks (type 3) make the parser panic (`Change::try_from`, hence
//!   `verify_change`, parses any chunk type before refusing non-changes);
//! - a `need` list naming a change the receiver has *twice* makes the next
//!   `generate_sync_message` panic (`unwrap` on `MissingOps` in automerge's change collector).
//!
//! [`decode_sync_payload`] decodes the payload, refuses the first four and deduplicates the
//! hash lists, so a receiver calls it
//! instead of `sync::Message::decode` and hands only its result to `receive_sync_message`.
//! Automerge's own sync never sends compressed change chunks (it sends `Change::raw_bytes`),
//! so honest peers are never refused.
//!
//! Not covered here: a V2 sync message (first byte `0x43`) carries a whole *document* chunk,
//! whose columns may be deflated and would be inflated without limit by
//! `receive_sync_message`; this function decodes it, and the sync engine refuses every V2
//! message before automerge acts on it. See `docs/protocol.md` ("Sync payload rules").

use homeroom_core::automerge::ChangeHash;
use homeroom_core::automerge::sync;

/// Automerge's storage chunk magic bytes.
pub const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// Chunk type byte of a whole document.
pub const CHUNK_TYPE_DOCUMENT: u8 = 0;
/// Chunk type byte of one uncompressed change.
pub const CHUNK_TYPE_CHANGE: u8 = 1;
/// Chunk type byte of one deflate-compressed change (refused).
pub const CHUNK_TYPE_COMPRESSED: u8 = 2;

/// The most bloom-filter probes accepted (automerge uses 7).
pub const MAX_BLOOM_PROBES: u32 = 32;
/// The most bloom-filter bits per entry accepted (automerge uses 10).
pub const MAX_BLOOM_BITS_PER_ENTRY: u32 = 64;

/// Why a sync payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncPayloadError {
    /// Not an Automerge sync message at all.
    #[error("not an automerge sync message: {reason}")]
    Decode {
        /// automerge's explanation.
        reason: String,
    },
    /// A `have` bloom filter with parameters Automerge cannot use safely.
    #[error(
        "bloom filter with {entries} entries, {bits_per_entry} bits per entry and {probes} probes"
    )]
    BadBloom {
        /// Announced entries.
        entries: u32,
        /// Announced bits per entry.
        bits_per_entry: u32,
        /// Announced probes per lookup.
        probes: u32,
    },
    /// A chunk in `changes` is not what this message version may carry (a V1 message carries
    /// uncompressed change chunks, a V2 message document chunks).
    #[error("chunk {index} of the sync message has type {chunk_type:?}, expected {expected}")]
    BadChunk {
        /// Its position in `changes`.
        index: usize,
        /// The chunk type byte found, or `None` when the chunk header is not even well formed.
        chunk_type: Option<u8>,
        /// The chunk type the message version allows.
        expected: u8,
    },
}

/// Decode a peer's sync payload and refuse what would make Automerge panic or blow up.
pub fn decode_sync_payload(payload: &[u8]) -> Result<sync::Message, SyncPayloadError> {
    let mut msg = sync::Message::decode(payload).map_err(|e| SyncPayloadError::Decode {
        reason: e.to_string(),
    })?;
    // Hash lists are sets (automerge sends them sorted); a repeated `need` makes automerge's
    // next generate_sync_message panic, so each list is sorted and deduplicated.
    normalize(&mut msg.heads);
    normalize(&mut msg.need);
    for have in &mut msg.have {
        normalize(&mut have.last_sync);
        check_bloom(&have.bloom.to_bytes())?;
    }
    let expected = match msg.version {
        sync::MessageVersion::V1 => CHUNK_TYPE_CHANGE,
        sync::MessageVersion::V2 => CHUNK_TYPE_DOCUMENT,
    };
    for (index, chunk) in msg.changes.iter().enumerate() {
        let chunk_type = single_chunk_type(chunk);
        if chunk_type != Some(expected) {
            return Err(SyncPayloadError::BadChunk {
                index,
                chunk_type,
                expected,
            });
        }
    }
    Ok(msg)
}

fn normalize(hashes: &mut Vec<ChangeHash>) {
    hashes.sort_unstable();
    hashes.dedup();
}

/// Check that `bytes` are exactly one plain (uncompressed) Automerge change chunk before they
/// go to `Change::try_from` / `homeroom_core::identity::verify_change`.
///
/// automerge 0.12 panics while parsing some *bundle* chunks (type 3: an `unwrap` in hexane's
/// LEB128 decoder, found by the `change_import` fuzz target) and inflates *compressed* ones
/// (type 2) without limit, and `Change::try_from` parses any chunk type before it refuses the
/// ones that are not changes. Only type 1 is ever a signed change on the wire.
pub fn check_change_chunk(bytes: &[u8]) -> Result<(), SyncPayloadError> {
    match single_chunk_type(bytes) {
        Some(CHUNK_TYPE_CHANGE) => Ok(()),
        chunk_type => Err(SyncPayloadError::BadChunk {
            index: 0,
            chunk_type,
            expected: CHUNK_TYPE_CHANGE,
        }),
    }
}

/// A bloom filter's wire form is empty (no entries) or `leb128(entries) leb128(bits per
/// entry) leb128(probes) bits…`.
fn check_bloom(bytes: &[u8]) -> Result<(), SyncPayloadError> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mut rest = bytes;
    let mut field = || -> Option<u32> {
        let (v, used) = leb128_u64(rest)?;
        rest = rest.get(used..)?;
        u32::try_from(v).ok()
    };
    let (Some(entries), Some(bits_per_entry), Some(probes)) = (field(), field(), field()) else {
        // automerge re-encodes what it parsed, so this cannot happen; refuse anyway.
        return Err(SyncPayloadError::BadBloom {
            entries: 0,
            bits_per_entry: 0,
            probes: 0,
        });
    };
    let ok = entries == 0
        || ((1..=MAX_BLOOM_BITS_PER_ENTRY).contains(&bits_per_entry)
            && (1..=MAX_BLOOM_PROBES).contains(&probes));
    if ok {
        Ok(())
    } else {
        Err(SyncPayloadError::BadBloom {
            entries,
            bits_per_entry,
            probes,
        })
    }
}

/// The type byte of `chunk` if it is exactly one well-formed chunk header plus its data:
/// magic (4), checksum (4), type (1), leb128 data length, data.
fn single_chunk_type(chunk: &[u8]) -> Option<u8> {
    if chunk.get(..4)? != CHUNK_MAGIC {
        return None;
    }
    let chunk_type = *chunk.get(8)?;
    let after_type = chunk.get(9..)?;
    let (len, used) = leb128_u64(after_type)?;
    let data_len = usize::try_from(len).ok()?;
    (after_type.len().checked_sub(used)? == data_len).then_some(chunk_type)
}

/// An unsigned LEB128 value and the bytes it took (at most 10; overlong or overflowing
/// encodings are refused).
fn leb128_u64(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7f);
        if i == 9 && part > 1 {
            return None;
        }
        value |= part << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// heads=[], need=[], have=[{last_sync: [], bloom}], changes=[].
    fn with_bloom(bloom: &[u8]) -> Vec<u8> {
        let mut raw = vec![0x42, 0, 0, 1, 0, bloom.len() as u8];
        raw.extend_from_slice(bloom);
        raw.push(0);
        raw
    }

    #[test]
    fn bloom_filters_automerge_cannot_use_are_refused() {
        // Zero bits per entry: automerge's generate_sync_message would divide by zero.
        assert!(sync::Message::decode(&with_bloom(&[1, 0, 7])).is_ok());
        assert!(matches!(
            decode_sync_payload(&with_bloom(&[1, 0, 7])),
            Err(SyncPayloadError::BadBloom {
                bits_per_entry: 0,
                ..
            })
        ));
        // 2^32 - 1 probes: unbounded allocation and loop.
        let huge = [1, 10, 0xff, 0xff, 0xff, 0xff, 0x0f, 0xff, 0xff];
        assert!(matches!(
            decode_sync_payload(&with_bloom(&huge)),
            Err(SyncPayloadError::BadBloom {
                probes: u32::MAX,
                ..
            })
        ));
        // What automerge itself sends: accepted.
        assert!(decode_sync_payload(&with_bloom(&[1, 10, 7, 0, 0])).is_ok());
        assert!(decode_sync_payload(&with_bloom(&[])).is_ok());
    }

    #[test]
    fn only_plain_change_chunks_travel_in_v1_messages() {
        // changes = [chunk]
        let msg = |chunk: &[u8]| {
            let mut raw = vec![0x42, 0, 0, 0, 1, chunk.len() as u8];
            raw.extend_from_slice(chunk);
            raw
        };
        let mut compressed = CHUNK_MAGIC.to_vec();
        compressed.extend_from_slice(&[0, 0, 0, 0, CHUNK_TYPE_COMPRESSED, 1, 0]);
        assert!(matches!(
            decode_sync_payload(&msg(&compressed)),
            Err(SyncPayloadError::BadChunk {
                index: 0,
                chunk_type: Some(CHUNK_TYPE_COMPRESSED),
                expected: CHUNK_TYPE_CHANGE,
            })
        ));
        assert!(matches!(
            decode_sync_payload(&msg(b"garbage")),
            Err(SyncPayloadError::BadChunk {
                chunk_type: None,
                ..
            })
        ));
        // Two chunks glued into one element are refused too.
        let mut change = CHUNK_MAGIC.to_vec();
        change.extend_from_slice(&[0, 0, 0, 0, CHUNK_TYPE_CHANGE, 1, 0]);
        assert_eq!(single_chunk_type(&change), Some(CHUNK_TYPE_CHANGE));
        let mut glued = change.clone();
        glued.extend_from_slice(&change);
        assert_eq!(single_chunk_type(&glued), None);
    }

    #[test]
    fn repeated_needs_are_collapsed_so_automerge_does_not_panic() {
        use homeroom_core::automerge::sync::SyncDoc;
        use homeroom_core::automerge::transaction::Transactable;
        use homeroom_core::automerge::{Automerge, ROOT};

        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        tx.put(ROOT, "k", "v").unwrap();
        tx.commit();
        let head = doc.get_heads()[0];
        // heads=[], need=[head, head], have=[], changes=[]
        let mut raw = vec![0x42, 0, 2];
        raw.extend_from_slice(&head.0);
        raw.extend_from_slice(&head.0);
        raw.extend_from_slice(&[0, 0]);
        let msg = decode_sync_payload(&raw).unwrap();
        assert_eq!(msg.need, vec![head]);
        let mut state = sync::State::new();
        doc.receive_sync_message(&mut state, msg).unwrap();
        let answer = doc.generate_sync_message(&mut state).unwrap();
        assert_eq!(answer.changes.len(), 1);
    }

    #[test]
    fn leb128_reader() {
        assert_eq!(leb128_u64(&[0]), Some((0, 1)));
        assert_eq!(leb128_u64(&[0xe5, 0x8e, 0x26]), Some((624_485, 3)));
        assert_eq!(leb128_u64(&[0x80]), None);
        assert_eq!(leb128_u64(&[0xff; 10]), None);
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(leb128_u64(&max), Some((u64::MAX, 10)));
    }
}
