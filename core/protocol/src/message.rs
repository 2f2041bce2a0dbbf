//! The protocol's messages.

use homeroom_core::{ClassId, DeviceId, DocId, DocKind};
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// Domain tag of the handshake proof: the device signs `HANDSHAKE_DOMAIN ‖ exporter` where
/// `exporter` is 32 bytes of TLS keying material exported with [`EXPORTER_LABEL`].
pub const HANDSHAKE_DOMAIN: &[u8] = b"homeroom/hello/v1\0";

/// Domain tag of an invite proof ([`Message::Join`]): the *invite* key signs
/// `INVITE_DOMAIN ‖ exporter` (the same TLS exporter value as the `Hello` proof).
pub const INVITE_DOMAIN: &[u8] = b"homeroom/join/v1\0";

/// TLS exporter label for the handshake proof (RFC 5705 / RFC 8446 §7.5).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-homeroom-hello-v1";

/// An 8-byte digest (see [`crate::heads_digest`]).
pub type Digest = [u8; 8];

/// A 32-byte change hash as it travels.
pub type Hash32 = [u8; 32];

/// A 64-byte ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Sig64(pub [u8; 64]);

impl Serialize for Sig64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Sig64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Sig64;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Sig64, E> {
                let arr: [u8; 64] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Sig64(arr))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// A class and the digest of all its documents that the sender holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassDigest {
    /// The class.
    pub class: ClassId,
    /// [`crate::class_digest`] over the sender's documents of that class.
    pub digest: Digest,
}

/// One document's head digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocDigest {
    /// Which document of the class.
    pub kind: DocKind,
    /// [`crate::heads_digest`] of its heads on the sender.
    pub digest: Digest,
}

/// The relay's view of one class for this device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassCatalog {
    /// The class.
    pub class: ClassId,
    /// Digest over every document of the class the device may read.
    pub digest: Digest,
    /// Per-document digests, sent only when `digest` differs from the device's.
    pub docs: Option<Vec<DocDigest>>,
}

/// A change's signature, carried beside the Automerge sync message that carries the change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureEntry {
    /// The change hash.
    pub hash: Hash32,
    /// The author's signature over it (see `homeroom_core::identity`).
    pub signature: Sig64,
}

/// Why changes were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// The signature is missing or does not verify.
    BadSignature,
    /// The author may not write this document (per the roster).
    NotAWriter,
    /// The bytes are not a valid Automerge change.
    MalformedChange,
    /// The change depends on a change that was itself rejected.
    DependsOnRejected,
    /// The roster's founding change does not commit to the class id, or the class is unknown.
    UnknownClass,
    /// The change or document exceeds the relay's size limits.
    TooLarge,
    /// The document is a read-only archive.
    ReadOnly,
    /// The change's timestamp is too far ahead of the receiver's clock.
    FromTheFuture,
    /// An invite redemption: the invite was already used.
    InviteUsed,
    /// An invite redemption (or join request): the invite expired.
    InviteExpired,
    /// A join request: the class's roster has no such invite.
    InviteUnknown,
    /// An invite redemption change does more (or other) than the invite allows.
    InviteMismatch,
    /// The change nests objects deeper than the receiver's limit (a document bomb).
    TooDeep,
}

/// Errors a peer reports before (usually) closing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// No protocol version in common.
    UnsupportedVersion,
    /// The handshake proof did not verify.
    AuthenticationFailed,
    /// The device is not enrolled in any class, or was revoked.
    NotEnrolled,
    /// A message arrived out of order (e.g. Sync before Hello).
    UnexpectedMessage,
    /// A frame could not be decoded.
    MalformedFrame,
    /// A frame exceeded the size limit.
    FrameTooLarge,
    /// Too many documents, streams or messages.
    LimitExceeded,
    /// The peer asked for a document it may not read (or that does not exist: the two are not
    /// told apart, so existence does not leak).
    NoSuchDocument,
    /// The relay failed internally; the device should retry later.
    Internal,
    /// The relay is shutting down; reconnect later.
    ShuttingDown,
}

/// How many kinds of [`Message`] this build knows: their postcard tags are `0..MESSAGE_TAGS`.
/// A new kind is only ever appended (never inserted or reordered), so tags stay stable.
pub(crate) const MESSAGE_TAGS: u32 = 12;

/// Every message of the protocol.
///
/// On the wire (postcard): the variant's index as a varint tag (`Hello` = 0 … `Error` = 7),
/// then the fields in declaration order. See `docs/protocol.md` for every field's encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Device → relay, first message: versions, key, proof of possession bound to the TLS
    /// session, and a digest per class the device holds.
    Hello {
        /// Protocol versions the device speaks.
        versions: Vec<u16>,
        /// The device key.
        device: DeviceId,
        /// Signature over `HANDSHAKE_DOMAIN ‖ TLS exporter(EXPORTER_LABEL, 32 bytes)`.
        proof: Sig64,
        /// What the device holds.
        classes: Vec<ClassDigest>,
    },
    /// Relay → device: the handshake succeeded.
    Welcome {
        /// The chosen protocol version.
        version: u16,
        /// The relay's clock (ms since the Unix epoch), for the device's information.
        relay_time: i64,
    },
    /// Relay → device: the classes and documents the device may read.
    Catalog {
        /// One entry per class.
        classes: Vec<ClassCatalog>,
    },
    /// Either way: one Automerge sync message for one document, with the signatures of the
    /// changes it carries.
    Sync {
        /// The document.
        doc: DocId,
        /// `automerge::sync::Message::encode()` bytes.
        payload: Vec<u8>,
        /// Signatures of the changes in `payload`.
        signatures: Vec<SignatureEntry>,
    },
    /// Relay → device: these heads of `doc` are now durable on the relay's disk.
    Saved {
        /// The document.
        doc: DocId,
        /// Heads that are on disk (every ancestor is too).
        heads: Vec<Hash32>,
    },
    /// Either way: these changes were refused and will never be accepted; drop them.
    Reject {
        /// The document.
        doc: DocId,
        /// The refused changes (and those that depend on them).
        changes: Vec<Hash32>,
        /// Why.
        reason: RejectReason,
    },
    /// Either way: transient data (presence, typing) relayed to current readers, never stored.
    Ephemeral {
        /// The document it concerns.
        doc: DocId,
        /// Opaque application bytes.
        payload: Vec<u8>,
    },
    /// Either way: an error; `fatal` means the sender closes the connection.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// Human-readable detail for logs.
        detail: String,
        /// Whether the sender is closing the connection.
        fatal: bool,
    },
    /// Device → relay, after `Welcome`: "I hold invite `invite` of `class`; let me read its
    /// roster so I can redeem it". Tag 8.
    Join {
        /// The class of the invite.
        class: ClassId,
        /// The invite's public key.
        invite: DeviceId,
        /// The invite key's signature over `INVITE_DOMAIN ‖ TLS exporter` (as `Hello.proof`).
        proof: Sig64,
    },
    /// Relay → device: a `Join` was refused (`InviteUsed`, `InviteExpired`, `InviteUnknown`,
    /// or `BadSignature` for a proof that does not verify). Tag 9.
    JoinRefused {
        /// The class of the invite.
        class: ClassId,
        /// Why.
        reason: RejectReason,
    },
    /// Device → relay, after `Welcome`: "which class holds invite `invite`?" — for a short
    /// invite code, which names no class (docs/invites.md). Tag 10.
    FindInvite {
        /// The invite's public key (derived from the short code).
        invite: DeviceId,
        /// The invite key's signature over `INVITE_DOMAIN ‖ TLS exporter` (as `Join.proof`).
        proof: Sig64,
    },
    /// Relay → device: the answer to `FindInvite`: the class whose roster holds the invite,
    /// or `None` (no such invite, a proof that does not verify, or too many lookups on this
    /// connection). Tag 11.
    InviteClass {
        /// The invite asked about.
        invite: DeviceId,
        /// The class that holds it.
        class: Option<ClassId>,
    },
}

impl Message {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Welcome { .. } => "welcome",
            Message::Catalog { .. } => "catalog",
            Message::Sync { .. } => "sync",
            Message::Saved { .. } => "saved",
            Message::Reject { .. } => "reject",
            Message::Ephemeral { .. } => "ephemeral",
            Message::Error { .. } => "error",
            Message::Join { .. } => "join",
            Message::JoinRefused { .. } => "join_refused",
            Message::FindInvite { .. } => "find_invite",
            Message::InviteClass { .. } => "invite_class",
        }
    }
}
