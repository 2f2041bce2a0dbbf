//! Device identity and signed changes.
//!
//! Each device holds one ed25519 [`DeviceKey`]. Its Automerge actor id is the 32-byte public
//! key followed by an 8-byte random suffix chosen when the device's local store is created
//! ([`actor_for`]), so the author of any change can be read from the change itself
//! ([`author_of`]) and a suffix is never reused after local state is lost.
//!
//! Every change a device makes is signed: the signature covers a domain tag, the document id
//! and the change hash ([`DeviceKey::sign_change`]). [`verify_change`] is the one function that
//! checks a change's signature and returns its author device; relay and peers both use it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use automerge::{ActorId, Change, ChangeHash};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::document::DocId;
use crate::ids::ParseIdError;

/// Domain separation tag for change signatures.
const CHANGE_DOMAIN: &[u8] = b"homeroom/change/v1\0";

/// Length of the random actor-id suffix.
pub const ACTOR_SUFFIX_LEN: usize = 8;

/// A device's public key: the device's identity everywhere.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceId(pub [u8; 32]);

impl DeviceId {
    /// The raw public key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex (64 characters), the form used as a key inside documents.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A short form for logs: the first 8 hex characters.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Check an ed25519 signature made by this device over `domain || message`.
    pub fn verify(
        &self,
        domain: &[u8],
        message: &[u8],
        signature: &[u8; 64],
    ) -> Result<(), IdentityError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| IdentityError::InvalidPublicKey)?;
        verify_with(&key, self, domain, message, signature)
    }
}

fn verify_with(
    key: &VerifyingKey,
    device: &DeviceId,
    domain: &[u8],
    message: &[u8],
    signature: &[u8; 64],
) -> Result<(), IdentityError> {
    let sig = Signature::from_bytes(signature);
    let mut buf = Vec::with_capacity(domain.len() + message.len());
    buf.extend_from_slice(domain);
    buf.extend_from_slice(message);
    key.verify(&buf, &sig)
        .map_err(|_| IdentityError::BadSignature { device: *device })
}

/// Public keys already decompressed, by device, for verifying many signatures by the same few
/// devices (a class's roster): decompressing an ed25519 key costs about a tenth of a
/// verification. Verification itself is unchanged ([`DeviceId::verify`]'s); a key is kept only
/// once a signature verified under it, and the cache is emptied when it reaches
/// [`KeyCache::MAX_KEYS`], so that keys made up by a peer cannot grow it without bound.
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: HashMap<DeviceId, VerifyingKey>,
    /// Signatures [`KeyCache::preverify`] checked and found valid, each skipped (and
    /// forgotten) by the next [`KeyCache::verify_parsed`] of exactly that document, change,
    /// author and signature.
    verified: HashSet<(DocId, ChangeHash, DeviceId, ChangeSignature)>,
}

/// One signature for [`KeyCache::preverify`]: author, change hash, signature.
type Job = (DeviceId, ChangeHash, ChangeSignature);

impl KeyCache {
    /// Keys kept at most (a few classes' devices).
    pub const MAX_KEYS: usize = 4096;

    /// [`KeyCache::preverify`] spreads its work over threads only from this many signatures
    /// on (below, starting threads costs more than they save).
    pub const PARALLEL_MIN: usize = 32;

    /// Check the signatures of a batch of changes for document `doc` up front, on all the
    /// machine's cores (at most 8), when there are at least [`KeyCache::PARALLEL_MIN`] of
    /// them: a fresh device fetching a school year spends three quarters of its time in
    /// signature checks, one after the other. The same single-signature check as
    /// [`DeviceId::verify`] (never batch verification, whose edge cases differ, so every
    /// replica accepts exactly the same changes); valid ones are remembered so that the
    /// caller's [`KeyCache::verify_parsed`] of each returns at once, invalid ones are not, and
    /// fail there as usual. Items without a signature are skipped. Doing nothing is always
    /// correct: this only moves work.
    pub fn preverify<'a>(
        &mut self,
        doc: &DocId,
        items: impl IntoIterator<Item = (&'a Change, Option<&'a ChangeSignature>)>,
    ) {
        self.verified.clear();
        let jobs: Vec<Job> = items
            .into_iter()
            .filter_map(|(c, s)| Some((change_author(c).ok()?, c.hash(), *s?)))
            .collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(8)
            .min(jobs.len() / (Self::PARALLEL_MIN / 2));
        if jobs.len() < Self::PARALLEL_MIN || threads < 2 {
            return;
        }
        let mut keys: HashMap<DeviceId, VerifyingKey> = HashMap::new();
        for (author, _, _) in &jobs {
            if keys.contains_key(author) {
                continue;
            }
            let key = match self.keys.get(author) {
                Some(k) => *k,
                None => match VerifyingKey::from_bytes(&author.0) {
                    Ok(k) => k,
                    Err(_) => continue,
                },
            };
            keys.insert(*author, key);
        }
        let chunk = jobs.len().div_ceil(threads);
        let check = |part: &[Job]| -> Vec<bool> {
            part.iter()
                .map(|(author, hash, sig)| {
                    keys.get(author).is_some_and(|key| {
                        verify_with(
                            key,
                            author,
                            CHANGE_DOMAIN,
                            &change_message(doc, hash),
                            &sig.0,
                        )
                        .is_ok()
                    })
                })
                .collect()
        };
        let results: Vec<bool> = std::thread::scope(|scope| {
            let mut parts = jobs.chunks(chunk);
            let first = parts.next().unwrap_or(&[]);
            // The other chunks on helper threads; a chunk whose thread cannot start counts
            // as unchecked (verified later, one by one).
            let handles: Vec<_> = parts
                .map(|part| {
                    let spawned = std::thread::Builder::new()
                        .name("homeroom-verify".into())
                        .spawn_scoped(scope, || check(part));
                    (part.len(), spawned.ok())
                })
                .collect();
            let mut out = check(first);
            for (len, handle) in handles {
                match handle.map(|h| h.join()) {
                    Some(Ok(part)) => out.extend(part),
                    _ => out.extend(std::iter::repeat_n(false, len)),
                }
            }
            out
        });
        for ((author, hash, sig), ok) in jobs.into_iter().zip(results) {
            if ok {
                if let Some(key) = keys.get(&author)
                    && !self.keys.contains_key(&author)
                {
                    self.remember(author, *key);
                }
                self.verified.insert((*doc, hash, author, sig));
            }
        }
    }

    /// Like [`DeviceId::verify`], reusing the decompressed key of a device seen before.
    pub fn verify(
        &mut self,
        device: &DeviceId,
        domain: &[u8],
        message: &[u8],
        signature: &[u8; 64],
    ) -> Result<(), IdentityError> {
        if let Some(key) = self.keys.get(device) {
            return verify_with(key, device, domain, message, signature);
        }
        let key =
            VerifyingKey::from_bytes(&device.0).map_err(|_| IdentityError::InvalidPublicKey)?;
        verify_with(&key, device, domain, message, signature)?;
        self.remember(*device, key);
        Ok(())
    }

    /// Keep `device`'s key, once a signature verified under it; the cache is emptied when
    /// full, so keys made up by a peer cannot grow it without bound.
    fn remember(&mut self, device: DeviceId, key: VerifyingKey) {
        if self.keys.len() >= Self::MAX_KEYS {
            self.keys.clear();
        }
        self.keys.insert(device, key);
    }

    /// Like [`verify_parsed`], reusing decompressed keys.
    pub fn verify_parsed(
        &mut self,
        doc: &DocId,
        change: Change,
        signature: &ChangeSignature,
    ) -> Result<VerifiedChange, IdentityError> {
        let hash = change.hash();
        let author = change_author(&change)?;
        if !self.verified.remove(&(*doc, hash, author, *signature)) {
            self.verify(
                &author,
                CHANGE_DOMAIN,
                &change_message(doc, &hash),
                &signature.0,
            )?;
        }
        Ok(VerifiedChange {
            change,
            author,
            signature: *signature,
        })
    }

    /// How many keys are kept.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is kept.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.short())
    }
}

impl FromStr for DeviceId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseIdError {
            kind: "device",
            input: s.chars().take(80).collect(),
            len: 64,
        };
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| err())?;
        Ok(Self(out))
    }
}

/// A detached signature over a change (see [`DeviceKey::sign_change`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChangeSignature(#[serde(with = "sig_bytes")] pub [u8; 64]);

impl fmt::Debug for ChangeSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChangeSignature({}…)", hex::encode(&self.0[..6]))
    }
}

mod sig_bytes {
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v: &[u8] = serde_bytes_compat::deserialize(d)?;
        v.try_into()
            .map_err(|_| serde::de::Error::invalid_length(v.len(), &"64 bytes"))
    }

    mod serde_bytes_compat {
        use serde::Deserializer;
        use serde::de::{Error, Visitor};
        use std::fmt;

        struct BytesVisitor;

        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = &'de [u8];

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }

            fn visit_borrowed_bytes<E: Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                Ok(v)
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<&'de [u8], D::Error> {
            d.deserialize_bytes(BytesVisitor)
        }
    }
}

/// A device's secret signing key.
pub struct DeviceKey {
    key: SigningKey,
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKey({})", self.device_id().short())
    }
}

impl DeviceKey {
    /// A key from 32 secret bytes. Callers draw them from the OS (`getrandom`) or, in tests,
    /// from a seeded source; the core never draws randomness itself.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&secret),
        }
    }

    /// The 32 secret bytes, for the device's own store only.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// This device's public identity.
    pub fn device_id(&self) -> DeviceId {
        DeviceId(self.key.verifying_key().to_bytes())
    }

    /// Sign `domain || message` (handshakes, invites).
    pub fn sign(&self, domain: &[u8], message: &[u8]) -> [u8; 64] {
        let mut buf = Vec::with_capacity(domain.len() + message.len());
        buf.extend_from_slice(domain);
        buf.extend_from_slice(message);
        self.key.sign(&buf).to_bytes()
    }

    /// Sign a change of document `doc`.
    pub fn sign_change(&self, doc: &DocId, hash: &ChangeHash) -> ChangeSignature {
        ChangeSignature(self.sign(CHANGE_DOMAIN, &change_message(doc, hash)))
    }
}

fn change_message(doc: &DocId, hash: &ChangeHash) -> Vec<u8> {
    let mut m = doc.to_bytes();
    m.extend_from_slice(&hash.0);
    m
}

/// The Automerge actor id for a device: its public key followed by `suffix`.
pub fn actor_for(device: &DeviceId, suffix: [u8; ACTOR_SUFFIX_LEN]) -> ActorId {
    let mut bytes = Vec::with_capacity(32 + ACTOR_SUFFIX_LEN);
    bytes.extend_from_slice(&device.0);
    bytes.extend_from_slice(&suffix);
    ActorId::from(bytes)
}

/// The device that an actor id belongs to, if the actor id has Homeroom's shape.
pub fn author_of(actor: &ActorId) -> Option<DeviceId> {
    let bytes = actor.to_bytes();
    if bytes.len() != 32 + ACTOR_SUFFIX_LEN {
        return None;
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&bytes[..32]);
    Some(DeviceId(key))
}

/// A change together with its signature, as stored and as sent to peers.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedChange {
    /// The change's hash.
    pub hash: ChangeHash,
    /// The device that authored (and signed) it.
    pub author: DeviceId,
    /// The raw Automerge change bytes.
    pub bytes: Vec<u8>,
    /// The author's signature (see [`DeviceKey::sign_change`]).
    pub signature: ChangeSignature,
}

impl fmt::Debug for SignedChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedChange")
            .field("hash", &self.hash)
            .field("author", &self.author)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl SignedChange {
    /// Sign a change that this device just made.
    pub fn sign(key: &DeviceKey, doc: &DocId, change: &Change) -> Self {
        let hash = change.hash();
        Self {
            hash,
            author: key.device_id(),
            bytes: change.raw_bytes().to_vec(),
            signature: key.sign_change(doc, &hash),
        }
    }
}

/// Why a change or key could not be verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The bytes are not an Automerge change.
    #[error("not a valid Automerge change: {reason}")]
    MalformedChange {
        /// The parser's explanation.
        reason: String,
    },
    /// The change's actor id does not name a Homeroom device.
    #[error("change {hash} has an actor id that names no device (length {len})")]
    ForeignActor {
        /// The change's hash.
        hash: ChangeHash,
        /// The actor id's length in bytes.
        len: usize,
    },
    /// The public key is not a valid ed25519 point.
    #[error("invalid ed25519 public key")]
    InvalidPublicKey,
    /// The signature does not verify under the author's key.
    #[error("signature by device {device:?} does not verify")]
    BadSignature {
        /// The claimed signer.
        device: DeviceId,
    },
}

/// A change whose signature has been checked.
#[derive(Debug, Clone)]
pub struct VerifiedChange {
    /// The parsed change.
    pub change: Change,
    /// Its author device, read from the actor id and proven by the signature.
    pub author: DeviceId,
    /// The signature that proved it.
    pub signature: ChangeSignature,
}

/// Verify a change's signature for document `doc`; returns the parsed change and its author.
pub fn verify_change(
    doc: &DocId,
    bytes: &[u8],
    signature: &ChangeSignature,
) -> Result<VerifiedChange, IdentityError> {
    // Only plain change chunks (type 1): automerge's parser panics on some other chunk types
    // (found by fuzzing), and compressed ones inflate without limit.
    if bytes.len() < 9 || bytes[..4] != [0x85, 0x6f, 0x4a, 0x83] || bytes[8] != 1 {
        return Err(IdentityError::MalformedChange {
            reason: "not an uncompressed change chunk".into(),
        });
    }
    let change = Change::try_from(bytes).map_err(|e| IdentityError::MalformedChange {
        reason: e.to_string(),
    })?;
    verify_parsed(doc, change, signature)
}

/// Like [`verify_change`] for a change that is already parsed.
pub fn verify_parsed(
    doc: &DocId,
    change: Change,
    signature: &ChangeSignature,
) -> Result<VerifiedChange, IdentityError> {
    let hash = change.hash();
    let author = change_author(&change)?;
    author.verify(CHANGE_DOMAIN, &change_message(doc, &hash), &signature.0)?;
    Ok(VerifiedChange {
        change,
        author,
        signature: *signature,
    })
}

/// The device a change's actor id names (its claimed author).
fn change_author(change: &Change) -> Result<DeviceId, IdentityError> {
    author_of(change.actor_id()).ok_or_else(|| IdentityError::ForeignActor {
        hash: change.hash(),
        len: change.actor_id().to_bytes().len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{DocId, DocKind};
    use crate::ids::ClassId;
    use automerge::{Automerge, ROOT, transaction::Transactable};

    fn doc_with_change(key: &DeviceKey) -> (Automerge, Change) {
        let mut doc = Automerge::new().with_actor(actor_for(&key.device_id(), [9; 8]));
        let mut tx = doc.transaction();
        tx.put(ROOT, "k", "v").unwrap();
        tx.commit();
        let change = doc.get_last_local_change().unwrap();
        (doc, change)
    }

    #[test]
    fn preverify_checks_a_batch_on_threads_and_remembers_only_valid_signatures() {
        let key = DeviceKey::from_secret([5; 32]);
        let doc = DocId::new(ClassId([1; 16]), DocKind::Notebook);
        let other = DocId::new(ClassId([2; 16]), DocKind::Notebook);
        let mut am = Automerge::new().with_actor(actor_for(&key.device_id(), [9; 8]));
        let mut changes = Vec::new();
        for i in 0..40_i64 {
            let mut tx = am.transaction();
            tx.put(ROOT, "k", i).unwrap();
            tx.commit();
            changes.push(am.get_last_local_change().unwrap());
        }
        let mut sigs: Vec<ChangeSignature> = changes
            .iter()
            .map(|c| key.sign_change(&doc, &c.hash()))
            .collect();
        sigs[7].0[0] ^= 1;
        let mut cache = KeyCache::default();
        let batch = || changes.iter().zip(&sigs).map(|(c, s)| (c, Some(s)));
        cache.preverify(&doc, batch());
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        if threads >= 2 {
            assert_eq!(cache.verified.len(), 39, "all but the bad one");
            assert_eq!(cache.len(), 1, "the key is kept once a signature verified");
        }
        for (i, (c, s)) in changes.iter().zip(&sigs).enumerate() {
            let r = cache.verify_parsed(&doc, c.clone(), s);
            assert_eq!(r.is_ok(), i != 7, "change {i}: {r:?}");
        }
        assert!(cache.verified.is_empty(), "each memo is used once");

        // A memo is for its document, change, author and signature only.
        cache.preverify(&doc, batch());
        assert!(matches!(
            cache.verify_parsed(&other, changes[0].clone(), &sigs[0]),
            Err(IdentityError::BadSignature { .. })
        ));
        assert!(
            cache
                .verify_parsed(&doc, changes[1].clone(), &sigs[2])
                .is_err()
        );
        // Small batches are left to the caller.
        let mut small = KeyCache::default();
        small.preverify(&doc, batch().take(KeyCache::PARALLEL_MIN - 1));
        assert!(small.verified.is_empty());
    }

    #[test]
    fn signed_change_verifies_and_names_its_author() {
        let key = DeviceKey::from_secret([1; 32]);
        let doc_id = DocId::new(ClassId([3; 16]), DocKind::Notebook);
        let (_, change) = doc_with_change(&key);
        let signed = SignedChange::sign(&key, &doc_id, &change);
        let verified = verify_change(&doc_id, &signed.bytes, &signed.signature).unwrap();
        assert_eq!(verified.author, key.device_id());
        assert_eq!(verified.change.hash(), signed.hash);
    }

    #[test]
    fn the_key_cache_verifies_exactly_as_uncached_verification() {
        let key = DeviceKey::from_secret([1; 32]);
        let other = DeviceKey::from_secret([2; 32]);
        let notebook = DocId::new(ClassId([3; 16]), DocKind::Notebook);
        let roster = DocId::new(ClassId([3; 16]), DocKind::Roster);
        let (_, change) = doc_with_change(&key);
        let signed = SignedChange::sign(&key, &notebook, &change);
        let forged = other.sign_change(&notebook, &change.hash());
        let mut cache = KeyCache::default();
        // A bad signature before any good one: refused, and no key is kept for it.
        assert!(matches!(
            cache.verify_parsed(&notebook, change.clone(), &forged),
            Err(IdentityError::BadSignature { .. })
        ));
        assert!(cache.is_empty());
        let v = cache
            .verify_parsed(&notebook, change.clone(), &signed.signature)
            .unwrap();
        assert_eq!(v.author, key.device_id());
        assert_eq!(cache.len(), 1);
        // With the key cached, everything refused uncached is still refused.
        assert!(matches!(
            cache.verify_parsed(&notebook, change.clone(), &forged),
            Err(IdentityError::BadSignature { .. })
        ));
        assert!(matches!(
            cache.verify_parsed(&roster, change.clone(), &signed.signature),
            Err(IdentityError::BadSignature { .. })
        ));
        // And what verifies uncached verifies cached.
        assert!(
            cache
                .verify_parsed(&notebook, change, &signed.signature)
                .is_ok()
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn signature_is_bound_to_document_and_key() {
        let key = DeviceKey::from_secret([1; 32]);
        let other = DeviceKey::from_secret([2; 32]);
        let notebook = DocId::new(ClassId([3; 16]), DocKind::Notebook);
        let roster = DocId::new(ClassId([3; 16]), DocKind::Roster);
        let (_, change) = doc_with_change(&key);
        let signed = SignedChange::sign(&key, &notebook, &change);
        // Replayed into another document: refused.
        assert!(matches!(
            verify_change(&roster, &signed.bytes, &signed.signature),
            Err(IdentityError::BadSignature { .. })
        ));
        // Signed by a device other than the actor's: refused (forged actor id).
        let forged = other.sign_change(&notebook, &change.hash());
        assert!(matches!(
            verify_change(&notebook, &signed.bytes, &forged),
            Err(IdentityError::BadSignature { .. })
        ));
        // Garbage bytes: typed error, no panic.
        assert!(matches!(
            verify_change(&notebook, b"not a change", &signed.signature),
            Err(IdentityError::MalformedChange { .. })
        ));
    }

    #[test]
    fn foreign_actor_ids_are_refused() {
        let key = DeviceKey::from_secret([1; 32]);
        let doc_id = DocId::new(ClassId([3; 16]), DocKind::Notebook);
        let mut doc = Automerge::new().with_actor(ActorId::from(vec![1u8, 2, 3]));
        let mut tx = doc.transaction();
        tx.put(ROOT, "k", "v").unwrap();
        tx.commit();
        let change = doc.get_last_local_change().unwrap();
        let sig = key.sign_change(&doc_id, &change.hash());
        assert!(matches!(
            verify_change(&doc_id, change.raw_bytes(), &sig),
            Err(IdentityError::ForeignActor { .. })
        ));
    }
}
