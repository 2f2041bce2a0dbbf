//! Every message survives `encode_frame` + `FrameDecoder` whatever the chunking; truncated
//! frames are "need more", never an error; arbitrary bytes never panic.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use homeroom_core::{ClassId, DeviceId, DocId, DocKind, FamilyId};
use homeroom_protocol::{
    DEFAULT_MAX_FRAME, Decoded, ErrorCode, FRAME_HEADER_LEN, FrameDecoder, FrameError, Message,
    RejectReason, Sig64, encode_frame,
};
use proptest::prelude::*;

/// Push `stream` in pieces of the given sizes (cycled), collecting every message.
fn decode_chunked(stream: &[u8], sizes: &[usize]) -> Vec<Message> {
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut out = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        d.push(&rest[..n]);
        rest = &rest[n..];
        loop {
            match d.next_message().expect("valid frames never error") {
                Decoded::Message(m) => out.push(m),
                Decoded::NeedMore(n) => {
                    assert!(n >= 1);
                    break;
                }
            }
        }
    }
    assert_eq!(d.buffered(), 0, "bytes left over");
    out
}

fn round_trip(msgs: &[Message], sizes: &[usize]) {
    let mut stream = Vec::new();
    for m in msgs {
        stream.extend(encode_frame(m, DEFAULT_MAX_FRAME).expect("encodes"));
    }
    assert_eq!(decode_chunked(&stream, sizes), msgs);
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![Just(1usize), 1..8usize, 1..64usize, 1..2048usize],
        1..16,
    )
}

macro_rules! round_trip_tests {
    ($($name:ident => $strategy:expr),* $(,)?) => {
        proptest! {
            $(
                #[test]
                fn $name(msg in $strategy, sizes in chunk_sizes()) {
                    round_trip(std::slice::from_ref(&msg), &sizes);
                }
            )*
        }
    };
}

round_trip_tests! {
    round_trip_hello => common::hello(),
    round_trip_welcome => common::welcome(),
    round_trip_catalog => common::catalog(),
    round_trip_sync => common::sync(),
    round_trip_saved => common::saved(),
    round_trip_reject => common::reject(),
    round_trip_ephemeral => common::ephemeral(),
    round_trip_error => common::error(),
}

proptest! {
    /// Several frames back to back in one stream, split anywhere.
    #[test]
    fn round_trip_streams_of_mixed_messages(
        msgs in prop::collection::vec(common::message(), 1..8),
        sizes in chunk_sizes(),
    ) {
        round_trip(&msgs, &sizes);
    }

    /// Every strict prefix of a valid frame is NeedMore with the exact shortfall (to finish
    /// the header first, then the frame) — never an error, never a panic.
    #[test]
    fn every_truncation_needs_more(msg in common::message()) {
        let frame = encode_frame(&msg, DEFAULT_MAX_FRAME).unwrap();
        for cut in 0..frame.len() {
            let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
            d.push(&frame[..cut]);
            let expected = if cut < FRAME_HEADER_LEN {
                FRAME_HEADER_LEN - cut
            } else {
                frame.len() - cut
            };
            prop_assert_eq!(d.next_message(), Ok(Decoded::NeedMore(expected)));
            prop_assert_eq!(d.buffered(), cut);
        }
    }

    /// A complete frame followed by a truncated one: the first decodes, the rest needs more.
    #[test]
    fn truncation_after_a_complete_frame(a in common::message(), b in common::message(), cut in any::<prop::sample::Index>()) {
        let fa = encode_frame(&a, DEFAULT_MAX_FRAME).unwrap();
        let fb = encode_frame(&b, DEFAULT_MAX_FRAME).unwrap();
        let cut = cut.index(fb.len());
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        d.push(&fa);
        d.push(&fb[..cut]);
        prop_assert_eq!(d.next_message(), Ok(Decoded::Message(a)));
        prop_assert!(matches!(d.next_message(), Ok(Decoded::NeedMore(_))));
        d.push(&fb[cut..]);
        prop_assert_eq!(d.next_message(), Ok(Decoded::Message(b)));
        prop_assert_eq!(d.buffered(), 0);
    }

    /// Arbitrary bytes: any result but a panic, under either limit.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), small in any::<bool>()) {
        let mut d = FrameDecoder::new(if small { 64 } else { DEFAULT_MAX_FRAME });
        d.push(&bytes);
        for _ in 0..bytes.len() + 1 {
            match d.next_message() {
                Ok(Decoded::Message(_)) | Err(FrameError::UnknownMessage { .. }) => {}
                Ok(Decoded::NeedMore(_)) | Err(_) => break,
            }
        }
    }

    /// Random bodies behind a correct header reach postcard: still no panic, and anything
    /// accepted re-encodes to a frame that decodes to the same message.
    #[test]
    fn random_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 1..512)) {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        d.push(&frame);
        if let Ok(Decoded::Message(m)) = d.next_message() {
            let again = encode_frame(&m, DEFAULT_MAX_FRAME).unwrap();
            let mut d2 = FrameDecoder::new(DEFAULT_MAX_FRAME);
            d2.push(&again);
            prop_assert_eq!(d2.next_message(), Ok(Decoded::Message(m)));
        }
    }

    /// The fuzz targets' entry points, on proptest's inputs too.
    #[test]
    fn fuzz_entry_points_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        for (_, target) in homeroom_protocol::fuzzing::TARGETS {
            target(&bytes);
        }
    }
}

fn doc() -> DocId {
    DocId::new(ClassId([1; 16]), DocKind::Lane(FamilyId([2; 8])))
}

/// One sample of each variant, with its expected tag. The exhaustive match makes adding a
/// variant without extending this list (and docs/protocol.md) a compile error.
fn one_of_each() -> Vec<(u8, Message)> {
    let all = vec![
        Message::Hello {
            versions: vec![1],
            device: DeviceId([3; 32]),
            proof: Sig64([4; 64]),
            classes: vec![],
        },
        Message::Welcome {
            version: 1,
            relay_time: 0,
        },
        Message::Catalog { classes: vec![] },
        Message::Sync {
            doc: doc(),
            payload: vec![],
            signatures: vec![],
        },
        Message::Saved {
            doc: doc(),
            heads: vec![],
        },
        Message::Reject {
            doc: doc(),
            changes: vec![],
            reason: RejectReason::BadSignature,
        },
        Message::Ephemeral {
            doc: doc(),
            payload: vec![],
        },
        Message::Error {
            code: ErrorCode::Internal,
            detail: String::new(),
            fatal: true,
        },
        Message::Join {
            class: ClassId([1; 16]),
            invite: DeviceId([5; 32]),
            proof: Sig64([6; 64]),
        },
        Message::JoinRefused {
            class: ClassId([1; 16]),
            reason: RejectReason::InviteUsed,
        },
        Message::FindInvite {
            invite: DeviceId([5; 32]),
            proof: Sig64([6; 64]),
        },
        Message::InviteClass {
            invite: DeviceId([5; 32]),
            class: Some(ClassId([1; 16])),
        },
    ];
    all.into_iter()
        .map(|m| {
            let tag = match m {
                Message::Hello { .. } => 0,
                Message::Welcome { .. } => 1,
                Message::Catalog { .. } => 2,
                Message::Sync { .. } => 3,
                Message::Saved { .. } => 4,
                Message::Reject { .. } => 5,
                Message::Ephemeral { .. } => 6,
                Message::Error { .. } => 7,
                Message::Join { .. } => 8,
                Message::JoinRefused { .. } => 9,
                Message::FindInvite { .. } => 10,
                Message::InviteClass { .. } => 11,
            };
            (tag, m)
        })
        .collect()
}

#[test]
fn message_tags_are_stable() {
    for (tag, m) in one_of_each() {
        let frame = encode_frame(&m, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(frame[FRAME_HEADER_LEN], tag, "{}", m.kind());
    }
}

#[test]
fn nested_enum_tags_are_stable() {
    let kinds = [
        (DocKind::Roster, 0u8),
        (DocKind::Notebook, 1),
        (DocKind::Lane(FamilyId([0; 8])), 2),
        (DocKind::Board(FamilyId([0; 8])), 3),
        (DocKind::Committee, 4),
        (DocKind::Mailbox(FamilyId([0; 8])), 5),
        (DocKind::Ballots, 6),
    ];
    for (kind, tag) in kinds {
        assert_eq!(postcard::to_stdvec(&kind).unwrap()[0], tag, "{kind:?}");
    }
    let reasons = [
        RejectReason::BadSignature,
        RejectReason::NotAWriter,
        RejectReason::MalformedChange,
        RejectReason::DependsOnRejected,
        RejectReason::UnknownClass,
        RejectReason::TooLarge,
        RejectReason::ReadOnly,
        RejectReason::FromTheFuture,
        RejectReason::InviteUsed,
        RejectReason::InviteExpired,
        RejectReason::InviteUnknown,
        RejectReason::InviteMismatch,
        RejectReason::TooDeep,
    ];
    for (tag, r) in reasons.into_iter().enumerate() {
        assert_eq!(postcard::to_stdvec(&r).unwrap(), [tag as u8], "{r:?}");
    }
    let codes = [
        ErrorCode::UnsupportedVersion,
        ErrorCode::AuthenticationFailed,
        ErrorCode::NotEnrolled,
        ErrorCode::UnexpectedMessage,
        ErrorCode::MalformedFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::LimitExceeded,
        ErrorCode::NoSuchDocument,
        ErrorCode::Internal,
        ErrorCode::ShuttingDown,
    ];
    for (tag, c) in codes.into_iter().enumerate() {
        assert_eq!(postcard::to_stdvec(&c).unwrap(), [tag as u8], "{c:?}");
    }
}

#[test]
fn unknown_message_tag_is_typed_and_skippable() {
    // Tag 12 (one past InviteClass), then a valid Welcome: the decoder reports the unknown
    // kind, consumes that frame, and goes on.
    let mut stream = vec![0, 0, 0, 3, 12, 0xaa, 0xbb];
    let welcome = Message::Welcome {
        version: 1,
        relay_time: -1,
    };
    stream.extend(encode_frame(&welcome, DEFAULT_MAX_FRAME).unwrap());
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
    d.push(&stream);
    assert_eq!(
        d.next_message(),
        Err(FrameError::UnknownMessage { tag: 12 })
    );
    assert_eq!(d.next_message(), Ok(Decoded::Message(welcome)));
    assert_eq!(d.buffered(), 0);
    // A multi-byte varint tag too (300 = ac 02).
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
    d.push(&[0, 0, 0, 2, 0xac, 0x02]);
    assert_eq!(
        d.next_message(),
        Err(FrameError::UnknownMessage { tag: 300 })
    );
    assert_eq!(d.buffered(), 0);
}

#[test]
fn fatal_errors_stick() {
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
    // Welcome with a trailing byte.
    d.push(&[0, 0, 0, 4, 1, 1, 0, 0xff]);
    let e = d.next_message();
    assert_eq!(e, Err(FrameError::TrailingBytes { extra: 1 }));
    d.push(&[0; 16]);
    assert_eq!(d.next_message(), e);
}

#[test]
fn limits_hold_on_both_sides() {
    let msg = Message::Ephemeral {
        doc: doc(),
        payload: vec![7; 100],
    };
    let frame = encode_frame(&msg, 1000).unwrap();
    let body = frame.len() - FRAME_HEADER_LEN;
    // Encoding refuses over the limit; exactly at the limit is fine.
    assert!(encode_frame(&msg, body).is_ok());
    assert_eq!(
        encode_frame(&msg, body - 1),
        Err(FrameError::TooLarge {
            len: body,
            max: body - 1
        })
    );
    let mut d = FrameDecoder::new(body);
    d.push(&frame);
    assert_eq!(d.next_message(), Ok(Decoded::Message(msg)));
    let mut d = FrameDecoder::new(body - 1);
    d.push(&frame[..FRAME_HEADER_LEN]);
    assert!(matches!(d.next_message(), Err(FrameError::TooLarge { .. })));
    // The largest header possible is refused from its 4 bytes alone.
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
    d.push(&[0xff; 4]);
    assert!(matches!(d.next_message(), Err(FrameError::TooLarge { .. })));
}
