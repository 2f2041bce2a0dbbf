//! Proptest strategies for every protocol type.
#![allow(dead_code, unreachable_pub)]

use homeroom_core::{ClassId, DeviceId, DocId, DocKind, FamilyId};
use homeroom_protocol::{
    ClassCatalog, ClassDigest, DocDigest, ErrorCode, Message, RejectReason, Sig64, SignatureEntry,
};
use proptest::prelude::*;

pub fn class_id() -> impl Strategy<Value = ClassId> {
    any::<[u8; 16]>().prop_map(ClassId)
}

pub fn doc_kind() -> impl Strategy<Value = DocKind> {
    let family = any::<[u8; 8]>().prop_map(FamilyId);
    prop_oneof![
        Just(DocKind::Roster),
        Just(DocKind::Notebook),
        family.clone().prop_map(DocKind::Lane),
        family.clone().prop_map(DocKind::Board),
        Just(DocKind::Committee),
        family.prop_map(DocKind::Mailbox),
        Just(DocKind::Ballots),
    ]
}

pub fn doc_id() -> impl Strategy<Value = DocId> {
    (class_id(), doc_kind()).prop_map(|(class, kind)| DocId { class, kind })
}

pub fn sig() -> impl Strategy<Value = Sig64> {
    prop::collection::vec(any::<u8>(), 64).prop_map(|v| {
        let mut a = [0u8; 64];
        a.copy_from_slice(&v);
        Sig64(a)
    })
}

pub fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

pub fn reject_reason() -> impl Strategy<Value = RejectReason> {
    prop::sample::select(vec![
        RejectReason::BadSignature,
        RejectReason::NotAWriter,
        RejectReason::MalformedChange,
        RejectReason::DependsOnRejected,
        RejectReason::UnknownClass,
        RejectReason::TooLarge,
        RejectReason::ReadOnly,
    ])
}

pub fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(vec![
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
    ])
}

pub fn hello() -> impl Strategy<Value = Message> {
    (
        prop::collection::vec(any::<u16>(), 0..6),
        any::<[u8; 32]>().prop_map(DeviceId),
        sig(),
        prop::collection::vec(
            (class_id(), any::<[u8; 8]>())
                .prop_map(|(class, digest)| ClassDigest { class, digest }),
            0..5,
        ),
    )
        .prop_map(|(versions, device, proof, classes)| Message::Hello {
            versions,
            device,
            proof,
            classes,
        })
}

pub fn welcome() -> impl Strategy<Value = Message> {
    (any::<u16>(), any::<i64>()).prop_map(|(version, relay_time)| Message::Welcome {
        version,
        relay_time,
    })
}

pub fn catalog() -> impl Strategy<Value = Message> {
    let doc = (doc_kind(), any::<[u8; 8]>()).prop_map(|(kind, digest)| DocDigest { kind, digest });
    let class = (
        class_id(),
        any::<[u8; 8]>(),
        prop::option::of(prop::collection::vec(doc, 0..6)),
    )
        .prop_map(|(class, digest, docs)| ClassCatalog {
            class,
            digest,
            docs,
        });
    prop::collection::vec(class, 0..4).prop_map(|classes| Message::Catalog { classes })
}

pub fn sync() -> impl Strategy<Value = Message> {
    let entry =
        (any::<[u8; 32]>(), sig()).prop_map(|(hash, signature)| SignatureEntry { hash, signature });
    (doc_id(), bytes(600), prop::collection::vec(entry, 0..4)).prop_map(
        |(doc, payload, signatures)| Message::Sync {
            doc,
            payload,
            signatures,
        },
    )
}

pub fn saved() -> impl Strategy<Value = Message> {
    (doc_id(), prop::collection::vec(any::<[u8; 32]>(), 0..4))
        .prop_map(|(doc, heads)| Message::Saved { doc, heads })
}

pub fn reject() -> impl Strategy<Value = Message> {
    (
        doc_id(),
        prop::collection::vec(any::<[u8; 32]>(), 0..4),
        reject_reason(),
    )
        .prop_map(|(doc, changes, reason)| Message::Reject {
            doc,
            changes,
            reason,
        })
}

pub fn ephemeral() -> impl Strategy<Value = Message> {
    (doc_id(), bytes(300)).prop_map(|(doc, payload)| Message::Ephemeral { doc, payload })
}

pub fn error() -> impl Strategy<Value = Message> {
    (error_code(), any::<String>(), any::<bool>()).prop_map(|(code, detail, fatal)| {
        Message::Error {
            code,
            detail,
            fatal,
        }
    })
}

/// Any message, every variant equally likely.
pub fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        hello(),
        welcome(),
        catalog(),
        sync(),
        saved(),
        reject(),
        ephemeral(),
        error(),
    ]
}
