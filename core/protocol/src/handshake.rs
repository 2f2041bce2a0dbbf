//! The handshake: version negotiation and the device's proof of key possession.
//!
//! The device's first message is [`Message::Hello`](crate::Message::Hello). Its `proof` is the
//! device key's ed25519 signature over `HANDSHAKE_DOMAIN ‖ exporter`, where `exporter` is
//! [`EXPORTER_LEN`] bytes of TLS keying material exported from *this* connection with label
//! [`EXPORTER_LABEL`] and no context (RFC 5705 / RFC 8446 §7.5). Both ends of one TLS session
//! compute the same value and no other session does, so a captured `Hello` is worthless on any
//! other connection.

use homeroom_core::identity::IdentityError;
use homeroom_core::{DeviceId, DeviceKey};

use crate::message::{HANDSHAKE_DOMAIN, PROTOCOL_VERSION, Sig64};

#[cfg(doc)]
use crate::message::EXPORTER_LABEL;

/// Bytes of TLS keying material the proof covers.
pub const EXPORTER_LEN: usize = 32;

/// Every protocol version this build speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[u16] = &[PROTOCOL_VERSION];

/// The relay's choice from the versions a device offers: the highest version both speak, or
/// `None` (answer `Error { code: UnsupportedVersion, fatal: true }`). Order and duplicates in
/// `offered` do not matter.
pub fn negotiate_version(offered: &[u16]) -> Option<u16> {
    offered
        .iter()
        .copied()
        .filter(|v| SUPPORTED_VERSIONS.contains(v))
        .max()
}

/// The device side: the `proof` field of `Hello` for this TLS session's exporter value.
pub fn hello_proof(key: &DeviceKey, exporter: &[u8; EXPORTER_LEN]) -> Sig64 {
    Sig64(key.sign(HANDSHAKE_DOMAIN, exporter))
}

/// The relay side: check a `Hello`'s proof against this TLS session's exporter value
/// ([`DeviceId::verify`] over `HANDSHAKE_DOMAIN ‖ exporter`). Never panics, whatever the bytes.
pub fn verify_hello_proof(
    device: &DeviceId,
    proof: &Sig64,
    exporter: &[u8; EXPORTER_LEN],
) -> Result<(), IdentityError> {
    device.verify(HANDSHAKE_DOMAIN, exporter, &proof.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        assert_eq!(negotiate_version(&[1]), Some(1));
        assert_eq!(negotiate_version(&[9, 1, 7]), Some(1));
        assert_eq!(negotiate_version(&[0, 2, 9]), None);
        assert_eq!(negotiate_version(&[]), None);
    }

    #[test]
    fn proof_is_bound_to_the_session_and_the_key() {
        let key = DeviceKey::from_secret([7; 32]);
        let other = DeviceKey::from_secret([8; 32]);
        let session = [1u8; EXPORTER_LEN];
        let proof = hello_proof(&key, &session);
        assert!(verify_hello_proof(&key.device_id(), &proof, &session).is_ok());
        // Replayed on another TLS session: refused.
        assert!(verify_hello_proof(&key.device_id(), &proof, &[2u8; EXPORTER_LEN]).is_err());
        // Claimed by another device: refused.
        assert!(verify_hello_proof(&other.device_id(), &proof, &session).is_err());
        // A change signature is never a handshake proof (different domain).
        let sig = Sig64(key.sign(b"homeroom/change/v1\0", &session));
        assert!(verify_hello_proof(&key.device_id(), &sig, &session).is_err());
        // Not a curve point: an error, not a panic.
        assert!(verify_hello_proof(&DeviceId([0xff; 32]), &proof, &session).is_err());
    }
}
