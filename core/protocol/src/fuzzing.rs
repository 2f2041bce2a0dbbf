//! Entry points of the fuzz targets in `fuzz/`, shared with the regression test that replays
//! `fuzz/seeds/*` under a plain `cargo test`. Not part of the protocol's API.
//!
//! Every function takes arbitrary bytes and must return without panicking. They assert
//! invariants (a decoded message re-encodes within the limit and decodes to itself; feeding a
//! stream in pieces gives what feeding it whole gives), so a violated invariant is a crash too.

use std::sync::OnceLock;

use homeroom_core::automerge::sync::{self, SyncDoc};
use homeroom_core::automerge::transaction::{CommitOptions, Transactable};
use homeroom_core::automerge::{Automerge, ROOT};
use homeroom_core::identity::{actor_for, verify_change};
use homeroom_core::{ChangeSignature, ClassId, DeviceKey, DocId, DocKind};

use crate::frame::{DEFAULT_MAX_FRAME, Decoded, FrameDecoder, FrameError, encode_frame};
use crate::handshake::{EXPORTER_LEN, negotiate_version, verify_hello_proof};
use crate::message::Message;
use crate::sync_payload::{check_change_chunk, decode_sync_payload};

/// A fuzz target: its name (as in `fuzz/fuzz_targets/<name>.rs`) and its entry point.
pub type Target = (&'static str, fn(&[u8]));

/// Every fuzz target.
pub const TARGETS: &[Target] = &[
    ("frame_decoder", frame_decoder),
    ("message", message),
    ("handshake", handshake),
    ("change_import", change_import),
    ("invite_code", invite_code),
];

/// The TLS exporter value the `handshake` target verifies proofs against.
pub const FIXED_EXPORTER: [u8; EXPORTER_LEN] = *b"homeroom fuzz exporter: 32 bytes";

/// The document the `change_import` target verifies signatures for.
pub const FIXED_DOC: DocId = DocId {
    class: ClassId([0x11; 16]),
    kind: DocKind::Notebook,
};

/// The device key whose signatures the seeds carry.
pub fn fixed_key() -> DeviceKey {
    DeviceKey::from_secret([0x42; 32])
}

/// The frame body limit used when the first input byte has its high bit set: small, so the
/// fuzzer reaches the size checks cheaply.
pub const SMALL_MAX_FRAME: usize = 256;

/// `frame_decoder`: byte 0 picks the limit (high bit: [`SMALL_MAX_FRAME`]) and seeds the chunk
/// sizes; the rest is a byte stream pushed into a [`FrameDecoder`] once whole and once in
/// pieces. Both runs must yield the same messages and end the same way.
pub fn frame_decoder(data: &[u8]) {
    let Some((&ctl, stream)) = data.split_first() else {
        return;
    };
    let max = if ctl & 0x80 != 0 {
        SMALL_MAX_FRAME
    } else {
        DEFAULT_MAX_FRAME
    };
    let whole = feed(max, std::iter::once(stream));
    let chunked = feed(max, Chunks::new(stream, ctl));
    assert_eq!(whole, chunked, "chunking changed the decoder's output");
    let in_place = feed_in_place(max, stream);
    assert_eq!(
        whole, in_place,
        "reading in place changed the decoder's output"
    );
}

/// Feed `stream` the way the TCP fallback's `FrameReader` does: ask the decoder what the frame
/// in progress still needs (64 B .. 64 KiB), start a fresh decoder whenever nothing is pending,
/// and append at most that much to [`FrameDecoder::read_buffer`].
fn feed_in_place(max: usize, mut stream: &[u8]) -> Outcome {
    let mut decoder = FrameDecoder::new(max);
    let mut events = Vec::new();
    loop {
        let want = match decoder.next_message() {
            Ok(Decoded::Message(msg)) => {
                events.push(Event::Message(Box::new(msg)));
                continue;
            }
            Ok(Decoded::NeedMore(n)) => n.clamp(64, 64 * 1024),
            Err(FrameError::UnknownMessage { tag }) => {
                events.push(Event::Unknown(tag));
                continue;
            }
            Err(e) => {
                return Outcome {
                    events,
                    end: Some(e),
                    buffered: 0,
                };
            }
        };
        if stream.is_empty() {
            return Outcome {
                events,
                end: None,
                buffered: decoder.buffered(),
            };
        }
        if decoder.buffered() == 0 {
            decoder = FrameDecoder::new(max);
        }
        let buf = decoder.read_buffer(want);
        assert!(
            buf.capacity() - buf.len() >= want,
            "read_buffer made too little room"
        );
        let (now, rest) = stream.split_at(want.min(stream.len()));
        buf.extend_from_slice(now);
        stream = rest;
    }
}

/// `invite_code`: the bytes (lossily as UTF-8) as an invite code a user typed or scanned
/// (`homeroom_core::invite::InviteCode::parse`). A code that parses re-encodes to a code that
/// parses to the same value; `parse_at` agrees with `parse` on everything but the expiry.
pub fn invite_code(data: &[u8]) {
    use homeroom_core::invite::{InviteCode, InviteError};
    let text = String::from_utf8_lossy(data);
    match InviteCode::parse(&text) {
        Ok(code) => {
            let again = InviteCode::parse(&code.encode());
            assert_eq!(again.as_ref(), Ok(&code), "re-encoding changed the code");
            assert!(matches!(
                InviteCode::parse_at(&text, code.expires_at.saturating_add(1)),
                Err(InviteError::Expired { .. })
            ));
            assert!(InviteCode::parse_at(&text, code.expires_at).is_ok());
        }
        Err(e) => {
            let _ = e.to_string();
            assert_eq!(InviteCode::parse_at(&text, 0).err(), Some(e));
        }
    }
}

/// `message`: the bytes as a postcard `Message` body.
pub fn message(data: &[u8]) {
    let Ok((msg, _rest)) = postcard::take_from_bytes::<Message>(data) else {
        return;
    };
    let _ = msg.kind();
    check_round_trip(&msg, DEFAULT_MAX_FRAME);
}

/// `handshake`: the bytes as a frame stream; a `Hello` in it has its versions negotiated and
/// its proof verified against [`FIXED_EXPORTER`].
pub fn handshake(data: &[u8]) {
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    decoder.push(data);
    while let Ok(Decoded::Message(msg)) = decoder.next_message() {
        if let Message::Hello {
            versions,
            device,
            proof,
            classes,
        } = msg
        {
            let _ = negotiate_version(&versions);
            let _ = verify_hello_proof(&device, &proof, &FIXED_EXPORTER);
            let _ = classes.len();
        }
    }
}

/// `change_import`: bytes 0..64 (zero-padded) are a signature and the rest a change, verified
/// for [`FIXED_DOC`] when [`check_change_chunk`] lets it through; the whole input is also decoded as a sync payload and, if accepted,
/// received into a small document that then generates its answer.
pub fn change_import(data: &[u8]) {
    let mut sig = [0u8; 64];
    let split = data.len().min(64);
    sig[..split].copy_from_slice(&data[..split]);
    let signature = ChangeSignature(sig);
    let change = &data[split..];
    // verify_change parses any chunk type, and automerge 0.12 panics on some bundle chunks
    // (seed crash-4c8ee800…): receivers check the chunk type first, and so does this target.
    if check_change_chunk(change).is_ok() {
        let _ = verify_change(&FIXED_DOC, change, &signature);
    }

    // automerge's own decoder must cope with anything…
    let _ = sync::Message::decode(data);
    // …and what our check lets through must be safe to act on.
    let Ok(msg) = decode_sync_payload(data) else {
        return;
    };
    for chunk in msg.changes.iter() {
        if check_change_chunk(chunk).is_ok() {
            let _ = verify_change(&FIXED_DOC, chunk, &signature);
        }
    }
    if let Some(base) = base_doc() {
        let mut doc = base.clone();
        let mut state = sync::State::new();
        if doc.receive_sync_message(&mut state, msg).is_ok() {
            let _ = doc.generate_sync_message(&mut state);
        }
    }
}

/// A small document with changes by two Homeroom devices, so that a received bloom filter
/// is probed when the answer is generated.
fn base_doc() -> Option<&'static Automerge> {
    static DOC: OnceLock<Option<Automerge>> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = Automerge::new();
        for (i, secret) in [[0x42u8; 32], [0x43; 32]].into_iter().enumerate() {
            let device = DeviceKey::from_secret(secret).device_id();
            doc.set_actor(actor_for(&device, [i as u8; 8]));
            let mut tx = doc.transaction();
            tx.put(ROOT, format!("k{i}"), i as i64).ok()?;
            tx.commit_with(CommitOptions::default().with_time(0));
        }
        Some(doc)
    })
    .as_ref()
}

/// What a decoder made of a stream.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    events: Vec<Event>,
    end: Option<FrameError>,
    /// Bytes left undecoded (after a clean end only).
    buffered: usize,
}

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Message(Box<Message>),
    Unknown(u32),
}

fn feed<'a>(max: usize, chunks: impl Iterator<Item = &'a [u8]>) -> Outcome {
    let mut decoder = FrameDecoder::new(max);
    let mut events = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        loop {
            match decoder.next_message() {
                Ok(Decoded::Message(msg)) => {
                    check_round_trip(&msg, max);
                    events.push(Event::Message(Box::new(msg)));
                }
                Ok(Decoded::NeedMore(n)) => {
                    assert!(n > 0, "NeedMore(0)");
                    break;
                }
                Err(FrameError::UnknownMessage { tag }) => events.push(Event::Unknown(tag)),
                Err(e) => {
                    // The decoder is stuck on this error: asking again gives it again.
                    assert_eq!(decoder.next_message(), Err(e.clone()));
                    // What is still buffered depends on how much was pushed before the error.
                    return Outcome {
                        events,
                        end: Some(e),
                        buffered: 0,
                    };
                }
            }
        }
    }
    Outcome {
        events,
        end: None,
        buffered: decoder.buffered(),
    }
}

/// A decoded message re-encodes within the limit it was decoded under and decodes to itself.
fn check_round_trip(msg: &Message, max: usize) {
    let frame = match encode_frame(msg, max) {
        Ok(frame) => frame,
        Err(e) => panic!("decoded {} does not re-encode: {e}", msg.kind()),
    };
    let mut decoder = FrameDecoder::new(max);
    decoder.push(&frame);
    match decoder.next_message() {
        Ok(Decoded::Message(again)) => assert_eq!(&again, msg, "re-encoding changed the message"),
        other => panic!("re-encoded {} does not decode: {other:?}", msg.kind()),
    }
    assert_eq!(decoder.buffered(), 0);
}

/// Pseudo-random chunk sizes (xorshift seeded by the control byte): often 1 byte, sometimes
/// a few, sometimes large.
struct Chunks<'a> {
    rest: &'a [u8],
    state: u32,
}

impl<'a> Chunks<'a> {
    fn new(stream: &'a [u8], seed: u8) -> Self {
        Self {
            rest: stream,
            state: 0x9E37_79B9 ^ u32::from(seed),
        }
    }
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        let r = self.state as usize;
        let n = match r % 4 {
            0 => 1,
            1 => 1 + (r >> 8) % 8,
            2 => 1 + (r >> 8) % 64,
            _ => 1 + (r >> 8) % 4096,
        };
        let (chunk, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        Some(chunk)
    }
}
