//! # homeroom-protocol
//!
//! Homeroom's wire protocol, specified in `docs/protocol.md`: a stream of length-prefixed
//! frames, each a [`postcard`]-encoded [`Message`]. postcard was chosen over CBOR because the
//! frames are small and frequent (an idle reconnect of a class must fit in ~2 KB) and postcard's
//! varint encoding is several times smaller than CBOR's self-describing maps; versioning is
//! explicit (the handshake negotiates a protocol version, and new message kinds are appended
//! as new enum variants, which an older peer reports as a typed "unknown message" error).
//!
//! [`FrameDecoder`] tells "need more bytes" ([`Decoded::NeedMore`]) from "invalid"
//! ([`FrameError`]) and enforces a hard frame-size limit before buffering a frame's body.
#![warn(missing_docs, unreachable_pub)]

mod digest;
mod frame;
mod message;

pub use digest::{class_digest, heads_digest};
pub use frame::{Decoded, FrameDecoder, FrameError, encode_frame, DEFAULT_MAX_FRAME, FRAME_HEADER_LEN};
pub use message::{
    ClassCatalog, ClassDigest, DocDigest, Digest, ErrorCode, Hash32, Message, RejectReason,
    SignatureEntry, Sig64, PROTOCOL_VERSION, HANDSHAKE_DOMAIN, EXPORTER_LABEL,
};
