//! Writes the curated fuzz seeds into `fuzz/seeds/<target>/` (deterministic: rerunning it
//! rewrites the same bytes). Crashers found by the fuzzer are added beside them by hand or by
//! `scripts/fuzz.sh`, never by this program.
//!
//! ```sh
//! cargo run -p homeroom-protocol --example fuzz_seeds
//! ```

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use homeroom_core::automerge::sync::{self, SyncDoc};
use homeroom_core::automerge::transaction::{CommitOptions, Transactable};
use homeroom_core::automerge::{Automerge, ROOT};
use homeroom_core::identity::actor_for;
use homeroom_core::{ClassId, DeviceId, DocId, DocKind, FamilyId, SignedChange};
use homeroom_protocol::fuzzing::{FIXED_DOC, FIXED_EXPORTER, fixed_key};
use homeroom_protocol::{
    CHUNK_MAGIC, CHUNK_TYPE_COMPRESSED, ClassCatalog, ClassDigest, DEFAULT_MAX_FRAME, DocDigest,
    ErrorCode, INVITE_DOMAIN, Message, RejectReason, Sig64, SignatureEntry, encode_frame,
    hello_proof,
};

type Res<T> = Result<T, Box<dyn Error>>;

/// The message tag of the `unknown-tag-then-welcome.bin` frame seed: one no build defines.
const UNKNOWN_TAG: u8 = 127;

/// The invite secret of the `invite_code` seeds; its invite key signs the `Join` seed.
const INVITE_SECRET: [u8; 16] = [0x22; 16];

fn main() -> Res<()> {
    let root = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds"),
    };
    let mut written = 0;
    let mut put = |target: &str, name: &str, bytes: &[u8]| -> Res<()> {
        let dir = root.join(target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(name), bytes)?;
        written += 1;
        Ok(())
    };

    let (doc, change) = document_with_changes()?;
    let messages = samples(&doc)?;

    // message: one postcard body per variant, named after its kind (`join_refused` →
    // `join-refused.bin`).
    for m in &messages {
        put(
            "message",
            &format!("{}.bin", m.kind().replace('_', "-")),
            &postcard::to_stdvec(m)?,
        )?;
    }

    // frame_decoder: control byte, then a stream.
    let mut all = vec![0x00];
    for m in &messages {
        all.extend(encode_frame(m, DEFAULT_MAX_FRAME)?);
    }
    put("frame_decoder", "all-variants.bin", &all)?;
    let mut small = vec![0x81];
    small.extend(encode_frame(&messages[1], DEFAULT_MAX_FRAME)?);
    small.extend(encode_frame(&messages[4], DEFAULT_MAX_FRAME)?);
    put("frame_decoder", "small-limit.bin", &small)?;
    // Tag 127: far above every kind this build knows (new kinds are appended at the end).
    let mut unknown = vec![0x02, 0, 0, 0, 3, UNKNOWN_TAG, 0xaa, 0xbb];
    unknown.extend(encode_frame(&messages[1], DEFAULT_MAX_FRAME)?);
    put("frame_decoder", "unknown-tag-then-welcome.bin", &unknown)?;
    put(
        "frame_decoder",
        "oversize-header.bin",
        &[0x80, 0, 0, 1, 1, 0],
    )?;
    put("frame_decoder", "empty-frame.bin", &[0x00, 0, 0, 0, 0])?;

    // handshake: a Hello whose proof verifies, one whose proof is for another session, one
    // from a key that is not a curve point and one from a non-canonically encoded key.
    let key = fixed_key();
    let hello = |device: DeviceId, proof: Sig64| Message::Hello {
        versions: vec![1, 2, 0xffff],
        device,
        proof,
        classes: vec![ClassDigest {
            class: ClassId([0x11; 16]),
            digest: [1, 2, 3, 4, 5, 6, 7, 8],
        }],
    };
    let good = hello(key.device_id(), hello_proof(&key, &FIXED_EXPORTER));
    put(
        "handshake",
        "hello-valid.bin",
        &encode_frame(&good, DEFAULT_MAX_FRAME)?,
    )?;
    let replayed = hello(key.device_id(), hello_proof(&key, &[0; 32]));
    put(
        "handshake",
        "hello-other-session.bin",
        &encode_frame(&replayed, DEFAULT_MAX_FRAME)?,
    )?;
    let bad_key = hello(not_a_point()?, Sig64([0; 64]));
    put(
        "handshake",
        "hello-bad-key.bin",
        &encode_frame(&bad_key, DEFAULT_MAX_FRAME)?,
    )?;
    // All ones: a non-canonical encoding (y = 2^255 - 1 ≥ p) that ed25519-dalek still
    // decompresses, so it fails on the signature, not the key.
    let non_canonical = hello(DeviceId([0xff; 32]), Sig64([0; 64]));
    put(
        "handshake",
        "hello-non-canonical-key.bin",
        &encode_frame(&non_canonical, DEFAULT_MAX_FRAME)?,
    )?;

    // change_import: signature ‖ change (a correctly signed one, and the same bytes with the
    // signature of another document), then whole sync messages.
    let signed = SignedChange::sign(&key, &FIXED_DOC, &change);
    let mut valid = signed.signature.0.to_vec();
    valid.extend_from_slice(&signed.bytes);
    put("change_import", "signed-change.bin", &valid)?;
    let other_doc = DocId::new(ClassId([0x11; 16]), DocKind::Roster);
    let mut wrong_doc = key.sign_change(&other_doc, &signed.hash).0.to_vec();
    wrong_doc.extend_from_slice(&signed.bytes);
    put(
        "change_import",
        "change-signed-for-another-doc.bin",
        &wrong_doc,
    )?;
    let (v1, v2) = sync_messages(&doc)?;
    put("change_import", "sync-v1.bin", &v1)?;
    put("change_import", "sync-v2.bin", &v2)?;
    // Payloads that crash or exhaust automerge 0.12 if acted on (decode_sync_payload refuses
    // them): a bloom filter with 0 bits per entry (division by zero in generate), one with
    // 2^32-1 probes (unbounded allocation), a compressed change chunk (unbounded inflate).
    put(
        "change_import",
        "crash-bloom-zero-bits.bin",
        &sync_with_bloom(&[1, 0, 7]),
    )?;
    let huge = [1, 10, 0xff, 0xff, 0xff, 0xff, 0x0f, 0xff, 0xff];
    put(
        "change_import",
        "oom-bloom-huge-probes.bin",
        &sync_with_bloom(&huge),
    )?;
    let mut compressed = CHUNK_MAGIC.to_vec();
    compressed.extend_from_slice(&[0, 0, 0, 0, CHUNK_TYPE_COMPRESSED, 4, 0x63, 0, 0x02, 0]);
    let mut msg = vec![0x42, 0, 0, 0, 1, compressed.len() as u8];
    msg.extend_from_slice(&compressed);
    put("change_import", "compressed-change-chunk.bin", &msg)?;

    // invite_code: a valid code (one IPv4 and one IPv6 relay), the same code typed sloppily,
    // one with a typo, and a truncated one.
    let code = homeroom_core::invite::InviteCode {
        class: ClassId([0x11; 16]),
        secret: INVITE_SECRET,
        relays: vec!["192.0.2.1:4433".parse()?, "[2001:db8::1]:443".parse()?],
        fingerprint: [0x33; 32],
        expires_at: 1_900_000_000_000,
    }
    .encode();
    put("invite_code", "valid.txt", code.as_bytes())?;
    let sloppy = format!("{} - {}", code[..20].to_lowercase(), &code[20..]);
    put("invite_code", "valid-sloppy.txt", sloppy.as_bytes())?;
    let mut typo = code.clone().into_bytes();
    typo[25] = if typo[25] == b'A' { b'B' } else { b'A' };
    put("invite_code", "typo.txt", &typo)?;
    put("invite_code", "truncated.txt", &code.as_bytes()[..60])?;

    println!("wrote {written} seeds under {}", root.display());
    Ok(())
}

/// A document of [`FIXED_DOC`] with changes by the fixed key, and its last change.
fn document_with_changes() -> Res<(Automerge, homeroom_core::automerge::Change)> {
    let key = fixed_key();
    let mut doc = Automerge::new().with_actor(actor_for(&key.device_id(), [1; 8]));
    for i in 0..3i64 {
        let mut tx = doc.transaction();
        tx.put(ROOT, "title", format!("Homework {i}"))?;
        tx.put(ROOT, "n", i)?;
        tx.commit_with(CommitOptions::default().with_time(0));
    }
    let change = doc.get_last_local_change().ok_or("no change")?;
    Ok((doc, change))
}

/// A realistic value of every variant.
fn samples(doc: &Automerge) -> Res<Vec<Message>> {
    let key = fixed_key();
    let invite = homeroom_core::invite::invite_key(&INVITE_SECRET);
    let class = ClassId([0x11; 16]);
    let lane = DocId::new(class, DocKind::Lane(FamilyId([0x22; 8])));
    let change = doc.get_last_local_change().ok_or("no change")?;
    let (v1, _) = sync_messages(doc)?;
    Ok(vec![
        Message::Hello {
            versions: vec![1],
            device: key.device_id(),
            proof: hello_proof(&key, &FIXED_EXPORTER),
            classes: vec![ClassDigest {
                class,
                digest: [9; 8],
            }],
        },
        Message::Welcome {
            version: 1,
            relay_time: 1_760_000_000_000,
        },
        Message::Catalog {
            classes: vec![ClassCatalog {
                class,
                digest: [7; 8],
                docs: Some(vec![
                    DocDigest {
                        kind: DocKind::Notebook,
                        digest: [1; 8],
                    },
                    DocDigest {
                        kind: DocKind::Lane(FamilyId([0x22; 8])),
                        digest: [2; 8],
                    },
                ]),
            }],
        },
        Message::Sync {
            doc: FIXED_DOC,
            payload: v1,
            signatures: vec![SignatureEntry {
                hash: change.hash().0,
                signature: Sig64(key.sign_change(&FIXED_DOC, &change.hash()).0),
            }],
        },
        Message::Saved {
            doc: FIXED_DOC,
            heads: vec![change.hash().0],
        },
        Message::Reject {
            doc: lane,
            changes: vec![[0xcc; 32]],
            reason: RejectReason::NotAWriter,
        },
        Message::Ephemeral {
            doc: lane,
            payload: b"typing".to_vec(),
        },
        Message::Error {
            code: ErrorCode::NoSuchDocument,
            detail: "no such document".into(),
            fatal: false,
        },
        // A join request whose proof verifies against the fixed exporter under the invite key
        // of the `invite_code` seeds.
        Message::Join {
            class,
            invite: invite.device_id(),
            proof: Sig64(invite.sign(INVITE_DOMAIN, &FIXED_EXPORTER)),
        },
        Message::JoinRefused {
            class,
            reason: RejectReason::InviteExpired,
        },
        // A short code's class lookup, proven like the `Join` seed, and the relay's answer.
        Message::FindInvite {
            invite: invite.device_id(),
            proof: Sig64(invite.sign(INVITE_DOMAIN, &FIXED_EXPORTER)),
        },
        Message::InviteClass {
            invite: invite.device_id(),
            class: Some(class),
        },
    ])
}

/// What automerge sends to an empty peer: a V1 message with changes (the peer did not
/// advertise V2) and a V2 message with the whole document (it did).
fn sync_messages(doc: &Automerge) -> Res<(Vec<u8>, Vec<u8>)> {
    // V1: answer a peer that has nothing and sent no capability flags.
    let mut state = sync::State::new();
    let first = doc
        .generate_sync_message(&mut state)
        .ok_or("nothing to say")?;
    let mut empty = Automerge::new();
    let mut peer = sync::State::new();
    empty.receive_sync_message(&mut peer, first)?;
    let mut reply = empty
        .generate_sync_message(&mut peer)
        .ok_or("peer silent")?;
    let mut v2_reply = reply.clone();
    reply.flags = None;
    let mut doc_v1 = doc.clone();
    doc_v1.receive_sync_message(&mut state, reply)?;
    let v1 = doc_v1
        .generate_sync_message(&mut state)
        .ok_or("no changes")?
        .encode();
    // V2: the same, with the peer's flags kept.
    let mut state = sync::State::new();
    let mut doc_v2 = doc.clone();
    let _ = doc_v2.generate_sync_message(&mut state);
    v2_reply.heads.clear();
    doc_v2.receive_sync_message(&mut state, v2_reply)?;
    let v2 = doc_v2
        .generate_sync_message(&mut state)
        .ok_or("no changes")?
        .encode();
    if v1.first() != Some(&0x42) || v2.first() != Some(&0x43) {
        return Err(format!(
            "unexpected sync message versions {:?} / {:?}",
            v1.first(),
            v2.first()
        )
        .into());
    }
    Ok((v1, v2))
}

/// The first 32-byte string `[n, 0, …, 0]` that does not decompress to an ed25519 point.
fn not_a_point() -> Res<DeviceId> {
    (2..=u8::MAX)
        .map(|n| {
            let mut key = [0u8; 32];
            key[0] = n;
            DeviceId(key)
        })
        .find(|d| {
            d.verify(b"", b"", &[0; 64])
                == Err(homeroom_core::identity::IdentityError::InvalidPublicKey)
        })
        .ok_or_else(|| "every candidate is a curve point".into())
}

/// A V1 sync message whose only `have` carries the given bloom filter bytes.
fn sync_with_bloom(bloom: &[u8]) -> Vec<u8> {
    let mut raw = vec![0x42, 0, 0, 1, 0, bloom.len() as u8];
    raw.extend_from_slice(bloom);
    raw.push(0);
    raw
}
