//! Stateless resets that survive a relay restart.
//!
//! When the relay process dies (crash, SIGKILL, upgrade), devices still hold QUIC connections
//! to it. Without help they notice only when the idle timeout expires (a minute by default),
//! so every device of a school stays offline that long after a restart. QUIC's remedy is the
//! *stateless reset* (RFC 9000 §10.3): a server receiving a packet for a connection it does not
//! know answers with a token that only the original server could compute, and the device
//! drops the connection at once and reconnects.
//!
//! For the new process to compute the old process's tokens, and to recognise the old
//! connection ids as its own (quinn only resets ids that its generator validates), both keys
//! are derived from a secret kept across restarts: the certificate's private key file. They
//! are as secret as the TLS key, and change only when the certificate does (at which point
//! devices need a new invite anyway).

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::{CryptoError, HmacKey};
use quinn::{ConnectionId, ConnectionIdGenerator, EndpointConfig};

/// The endpoint configuration with a restart-stable reset key derived from `secret`.
pub(crate) fn endpoint_config(secret: &[u8]) -> EndpointConfig {
    let reset = blake3::derive_key("homeroom-relay v1 QUIC stateless reset key", secret);
    let mut config = EndpointConfig::new(Arc::new(ResetKey(reset)));
    config.cid_generator(|| Box::new(RandomCids));
    config
}

/// HMAC for reset tokens: keyed BLAKE3.
struct ResetKey([u8; 32]);

impl HmacKey for ResetKey {
    fn sign(&self, data: &[u8], signature_out: &mut [u8]) {
        let tag = blake3::keyed_hash(&self.0, data);
        let n = signature_out.len().min(blake3::OUT_LEN);
        signature_out[..n].copy_from_slice(&tag.as_bytes()[..n]);
    }

    fn signature_len(&self) -> usize {
        blake3::OUT_LEN
    }

    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        let tag = blake3::keyed_hash(&self.0, data);
        // `blake3::Hash` equality is constant-time; compare whole tags only.
        match <[u8; blake3::OUT_LEN]>::try_from(signature) {
            Ok(sig) if tag == blake3::Hash::from_bytes(sig) => Ok(()),
            _ => Err(CryptoError),
        }
    }
}

/// Connection ids: 8 random bytes. quinn answers a short-header packet for an id it does not
/// know with a stateless reset (never larger than the packet, at most one per 20 ms), so the
/// ids of connections from before a restart are reset at once.
struct RandomCids;

/// Connection-id length in bytes.
const CID_LEN: usize = 8;

impl ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        if getrandom::fill(&mut bytes).is_err() {
            // No OS randomness (practically impossible once the TLS stack is up): fall back to
            // a hash of the time and a counter; ids must be unique, not secret, to work.
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let mut hasher = blake3::Hasher::new();
            hasher.update(&now.to_le_bytes());
            hasher.update(&n.to_le_bytes());
            bytes.copy_from_slice(&hasher.finalize().as_bytes()[..CID_LEN]);
        }
        ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_tokens_are_stable_across_instances_and_verify() {
        let a = ResetKey(blake3::derive_key("t", b"secret"));
        let b = ResetKey(blake3::derive_key("t", b"secret"));
        let other = ResetKey(blake3::derive_key("t", b"other"));
        let (mut sa, mut sb, mut so) = ([0u8; 32], [0u8; 32], [0u8; 32]);
        a.sign(b"cid", &mut sa);
        b.sign(b"cid", &mut sb);
        other.sign(b"cid", &mut so);
        assert_eq!(sa, sb);
        assert_ne!(sa, so);
        assert!(b.verify(b"cid", &sa).is_ok());
        assert!(other.verify(b"cid", &sa).is_err());
        assert!(a.verify(b"cid", &sa[..16]).is_err());
    }

    #[test]
    fn connection_ids_are_random_and_full_length() {
        let mut g = RandomCids;
        let (x, y) = (g.generate_cid(), g.generate_cid());
        assert_eq!(x.len(), CID_LEN);
        assert_ne!(x, y);
    }
}
