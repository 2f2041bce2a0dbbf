//! # homeroom-protocol
//!
//! Homeroom's wire protocol, specified in `docs/protocol.md`: a stream of length-prefixed
//! frames, each a [`postcard`]-encoded [`Message`]. postcard was chosen over CBOR because the
//! frames are small and frequent (an idle reconnect of a class must fit in ~2 KB) and postcard
//! encodes a struct as its fields' values alone (varint integers, fixed arrays as raw bytes),
//! where CBOR self-describes every value; versioning is explicit (the handshake negotiates a
//! protocol version with [`negotiate_version`], and new message kinds are appended as new
//! enum variants, which an older peer reports as [`FrameError::UnknownMessage`]).
//!
//! [`FrameDecoder`] tells "need more bytes" ([`Decoded::NeedMore`]) from "invalid"
//! ([`FrameError`]) and enforces a hard frame-size limit before buffering a frame's body.
//! [`decode_sync_payload`] checks a `Sync` payload, and [`check_change_chunk`] a change's bytes,
//! before Automerge acts on them.
#![warn(missing_docs, unreachable_pub)]

mod digest;
mod frame;
#[doc(hidden)]
pub mod fuzzing;
mod handshake;
mod message;
mod sync_payload;

pub use digest::{class_digest, heads_digest};
pub use frame::{
    DEFAULT_MAX_FRAME, Decoded, FRAME_HEADER_LEN, FrameDecoder, FrameError, encode_frame,
};
pub use handshake::{
    EXPORTER_LEN, SUPPORTED_VERSIONS, hello_proof, negotiate_version, verify_hello_proof,
};
pub use message::{
    ClassCatalog, ClassDigest, Digest, DocDigest, EXPORTER_LABEL, ErrorCode, HANDSHAKE_DOMAIN,
    Hash32, INVITE_DOMAIN, Message, PROTOCOL_VERSION, RejectReason, Sig64, SignatureEntry,
};
pub use sync_payload::{
    CHUNK_MAGIC, CHUNK_TYPE_CHANGE, CHUNK_TYPE_COMPRESSED, CHUNK_TYPE_DOCUMENT,
    MAX_BLOOM_BITS_PER_ENTRY, MAX_BLOOM_PROBES, SyncPayloadError, check_change_chunk,
    decode_sync_payload,
};
