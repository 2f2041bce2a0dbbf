//! Entry point of the `relay_session` fuzz target (`fuzz/fuzz_targets/relay_session.rs`),
//! shared with the regression test that replays `fuzz/seeds/relay_session/*` under a plain
//! `cargo test`. Not part of the engine's API.
//!
//! The target is what a hostile, *authenticated* guardian can make a relay's engine do: a
//! relay `SyncNode` holding a class (founded by a teacher device over an in-process session),
//! a second session that completes the handshake as the guardian whose key is
//! [`fuzz_guardian`], and then the fuzz input as that session's frame stream — every message
//! kind, every sync payload, every change and signature reaching [`crate::Replica::ingest`].
//! It must never panic, and (checked after every input) the notebook, which only staff may
//! write, must hold no change by anyone but the teacher.

use std::sync::OnceLock;

use homeroom_core::automerge::transaction::Transactable;
use homeroom_core::automerge::{ActorId, ROOT};
use homeroom_core::identity::actor_for;
use homeroom_core::roster::{self, Role};
use homeroom_core::{ClassId, DeviceId, DeviceKey, DocId, DocKind, FamilyId, MemberId};
use homeroom_protocol::{
    DEFAULT_MAX_FRAME, Decoded, FrameDecoder, FrameError, Message, PROTOCOL_VERSION, hello_proof,
};

use crate::{Limits, MemorySource, Replica, SessionId, SyncNode};

/// The clock of every fuzz run (ms since the Unix epoch): fixed, so runs are reproducible.
pub const NOW: i64 = 1_790_000_000_000;
/// The TLS exporter value of the fuzzed session.
pub const EXPORTER: [u8; 32] = *b"homeroom relay fuzz session 0001";
/// The guardian's family.
pub const FAMILY: FamilyId = FamilyId([0x0f; 8]);
/// Another family of the class (its lane is not the guardian's to read or write).
pub const OTHER_FAMILY: FamilyId = FamilyId([0x0e; 8]);

/// The teacher who founds the class.
pub fn fuzz_teacher() -> DeviceKey {
    DeviceKey::from_secret([0x71; 32])
}

/// The guardian whose session the fuzz input drives.
pub fn fuzz_guardian() -> DeviceKey {
    DeviceKey::from_secret([0x42; 32])
}

/// What the teacher's device sent the relay to found the class, recorded once.
struct Founding {
    class: ClassId,
    /// What the relay stored of it: each run starts a relay on a copy.
    stored: MemorySource,
}

fn ack_all(node: &mut SyncNode) {
    loop {
        let mut progressed = false;
        while let Some(w) = node.poll_write() {
            progressed = true;
            node.handle_write_done(w.id);
        }
        while node.poll_close().is_some() {
            progressed = true;
        }
        while node.poll_event().is_some() {
            progressed = true;
        }
        if !progressed {
            return;
        }
    }
}

fn relay() -> Option<SyncNode> {
    Replica::relay(Box::new(MemorySource::default()), Limits::default())
        .ok()
        .map(SyncNode::new)
}

fn founding() -> Option<&'static Founding> {
    static FOUNDING: OnceLock<Option<Founding>> = OnceLock::new();
    FOUNDING
        .get_or_init(|| {
            let teacher_key = fuzz_teacher();
            let mut teacher = SyncNode::new(
                Replica::device(
                    teacher_key,
                    [0x71; 8],
                    Box::new(MemorySource::default()),
                    Limits::default(),
                )
                .ok()?,
            );
            let class = teacher
                .found_class([0x11; 16], "Class 3B", MemberId([1; 8]), "Ms Li", NOW)
                .ok()?;
            let guardian = fuzz_guardian().device_id();
            teacher
                .edit(&DocId::new(class, DocKind::Roster), NOW, |tx, _, _| {
                    roster::add_family(tx, FAMILY, "Family F")?;
                    roster::add_member(
                        tx,
                        MemberId([2; 8]),
                        "Guardian",
                        &[Role::Guardian],
                        Some(FAMILY),
                    )?;
                    roster::add_device(tx, guardian, MemberId([2; 8]), NOW)?;
                    roster::add_family(tx, OTHER_FAMILY, "Family E")
                })
                .ok()?;
            teacher
                .edit(&DocId::new(class, DocKind::Notebook), NOW, |tx, _, _| {
                    tx.put(ROOT, "teacher", "wrote this")?;
                    Ok(())
                })
                .ok()?;
            let mut relay = relay()?;
            let mut stored = MemorySource::default();
            let rs = relay.accept(NOW, EXPORTER);
            let ts = teacher.connect(NOW, EXPORTER, [0; 32]).ok()?;
            for _ in 0..200 {
                ack_all(&mut teacher);
                let mut moved = false;
                while let Some((_, m)) = teacher.poll_transmit() {
                    moved = true;
                    let _ = relay.handle_message(NOW, rs, m);
                }
                while let Some(w) = relay.poll_write() {
                    stored.apply(&w);
                    relay.handle_write_done(w.id);
                }
                ack_all(&mut relay);
                while let Some((_, m)) = relay.poll_transmit() {
                    moved = true;
                    let _ = teacher.handle_message(NOW, ts, m);
                }
                if !moved {
                    break;
                }
            }
            Some(Founding { class, stored })
        })
        .as_ref()
}

/// A relay that holds the founded class (opened on a copy of what a relay stored when the
/// teacher founded it), with the guardian's session established. `None` only if the fixed
/// setup itself failed.
pub fn relay_with_guardian() -> Option<(SyncNode, SessionId, ClassId)> {
    let f = founding()?;
    let mut relay =
        SyncNode::new(Replica::relay(Box::new(f.stored.clone()), Limits::default()).ok()?);
    let sid = relay.accept(NOW, EXPORTER);
    let key = fuzz_guardian();
    let hello = Message::Hello {
        versions: vec![PROTOCOL_VERSION],
        device: key.device_id(),
        proof: hello_proof(&key, &EXPORTER),
        classes: Vec::new(),
    };
    relay.handle_message(NOW, sid, hello).ok()?;
    ack_all(&mut relay);
    while relay.poll_transmit().is_some() {}
    Some((relay, sid, f.class))
}

/// What the relay did with one input (for the seed tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Messages decoded from the input and handed to the engine.
    pub fed: usize,
    /// Kinds of the messages the relay sent the guardian, in order.
    pub answers: Vec<&'static str>,
    /// Whether the relay closed the guardian's session.
    pub closed: bool,
}

/// `relay_session`: the input as the guardian's frame stream after its `Hello`.
pub fn relay_session(data: &[u8]) {
    let _ = run(data);
}

/// [`relay_session`], reporting what happened; panics if an invariant breaks.
pub fn run(data: &[u8]) -> Outcome {
    let mut out = Outcome::default();
    let Some((mut relay, sid, class)) = relay_with_guardian() else {
        return out;
    };
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    decoder.push(data);
    let mut now = NOW;
    loop {
        match decoder.next_message() {
            Ok(Decoded::Message(m)) => {
                out.fed += 1;
                // Errors are typed refusals; the session may be closed by them.
                let _ = relay.handle_message(now, sid, m);
            }
            Ok(Decoded::NeedMore(_)) => break,
            Err(FrameError::UnknownMessage { .. }) => continue,
            Err(_) => break,
        }
        loop {
            let mut progressed = false;
            while let Some(w) = relay.poll_write() {
                progressed = true;
                relay.handle_write_done(w.id);
            }
            while let Some((to, m)) = relay.poll_transmit() {
                progressed = true;
                if to == sid {
                    out.answers.push(m.kind());
                }
            }
            while let Some((s, _)) = relay.poll_close() {
                progressed = true;
                out.closed |= s == sid;
            }
            while relay.poll_event().is_some() {
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        now += 1_000;
        relay.handle_timeout(now);
    }
    check_notebook_authors(&mut relay, class);
    out
}

/// Invariant: every change of the notebook is the genesis or the teacher's.
fn check_notebook_authors(relay: &mut SyncNode, class: ClassId) {
    let teacher: DeviceId = fuzz_teacher().device_id();
    let notebook = DocId::new(class, DocKind::Notebook);
    let Ok(doc) = relay.document(&notebook) else {
        return;
    };
    let genesis = homeroom_core::genesis::genesis_hash(&notebook);
    for change in doc.get_changes(&[]) {
        if change.hash() == genesis {
            continue;
        }
        let actor = change.actor_id().to_bytes();
        assert!(
            actor.get(..32) == Some(&teacher.0[..]),
            "the relay accepted a notebook change by {}",
            hex::encode(actor)
        );
    }
}

/// The guardian's actor id (for seeds).
pub fn guardian_actor() -> ActorId {
    actor_for(&fuzz_guardian().device_id(), [0x42; 8])
}

/// A V1 sync message carrying one change on top of `doc`'s genesis, by `actor`, at `time`,
/// signed by `signer`, as a `Sync` frame.
fn change_frame(
    doc: DocId,
    actor: ActorId,
    signer: &DeviceKey,
    time: i64,
    key: &str,
) -> Option<Vec<u8>> {
    use homeroom_core::automerge::sync::{ChunkList, Message as AmMessage, MessageVersion};
    use homeroom_core::automerge::transaction::CommitOptions;
    let mut am = homeroom_core::genesis::genesis_document(&doc, actor);
    let mut tx = am.transaction();
    tx.put(ROOT, key, "fuzz").ok()?;
    tx.commit_with(CommitOptions::default().with_time(time));
    let change = am.get_last_local_change()?.clone();
    let hash = change.hash();
    let payload = AmMessage {
        heads: am.get_heads(),
        need: Vec::new(),
        have: Vec::new(),
        changes: ChunkList::from(vec![change.raw_bytes().to_vec()]),
        flags: None,
        version: MessageVersion::V1,
    }
    .encode();
    let msg = Message::Sync {
        doc,
        payload,
        signatures: vec![homeroom_protocol::SignatureEntry {
            hash: hash.0,
            signature: homeroom_protocol::Sig64(signer.sign_change(&doc, &hash).0),
        }],
    };
    homeroom_protocol::encode_frame(&msg, DEFAULT_MAX_FRAME).ok()
}

/// The curated seeds of `fuzz/seeds/relay_session/`: each a frame stream a guardian could
/// send, named for what the relay must do with it.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let Some(f) = founding() else {
        return Vec::new();
    };
    let class = f.class;
    let g = fuzz_guardian();
    let lane = DocId::new(class, DocKind::Lane(FAMILY));
    let other_lane = DocId::new(class, DocKind::Lane(OTHER_FAMILY));
    let notebook = DocId::new(class, DocKind::Notebook);
    let teacher_actor = actor_for(&fuzz_teacher().device_id(), [0x71; 8]);
    let frame = |m: &Message| homeroom_protocol::encode_frame(m, DEFAULT_MAX_FRAME).ok();
    let empty_request = |doc: DocId| {
        let mut state = homeroom_core::automerge::sync::State::new();
        let payload = {
            use homeroom_core::automerge::sync::SyncDoc;
            homeroom_core::automerge::Automerge::new()
                .generate_sync_message(&mut state)
                .map(|m| m.encode())
                .unwrap_or_default()
        };
        frame(&Message::Sync {
            doc,
            payload,
            signatures: Vec::new(),
        })
    };
    let year = 365 * 24 * 3600 * 1000;
    let candidates: Vec<(&'static str, Option<Vec<u8>>)> = vec![
        (
            "lane-edit-accepted.bin",
            change_frame(lane, guardian_actor(), &g, NOW, "signed"),
        ),
        (
            "notebook-edit-not-a-writer.bin",
            change_frame(notebook, guardian_actor(), &g, NOW, "forged"),
        ),
        (
            "teacher-actor-bad-signature.bin",
            change_frame(notebook, teacher_actor, &g, NOW, "as-teacher"),
        ),
        (
            "other-lane-edit.bin",
            change_frame(other_lane, guardian_actor(), &g, NOW, "not-mine"),
        ),
        (
            "future-clock.bin",
            change_frame(lane, guardian_actor(), &g, NOW + year, "later"),
        ),
        ("other-lane-request.bin", empty_request(other_lane)),
        ("notebook-request.bin", empty_request(notebook)),
        (
            "ephemeral.bin",
            frame(&Message::Ephemeral {
                doc: notebook,
                payload: b"typing".to_vec(),
            }),
        ),
        (
            "garbage-payload.bin",
            frame(&Message::Sync {
                doc: notebook,
                payload: vec![0x42, 0xff, 0x00, 0x85, 0x6f, 0x4a, 0x83],
                signatures: Vec::new(),
            }),
        ),
        (
            "second-hello.bin",
            frame(&Message::Hello {
                versions: vec![PROTOCOL_VERSION],
                device: g.device_id(),
                proof: hello_proof(&g, &EXPORTER),
                classes: Vec::new(),
            }),
        ),
    ];
    let mut out: Vec<(&'static str, Vec<u8>)> = candidates
        .into_iter()
        .filter_map(|(n, b)| b.map(|b| (n, b)))
        .collect();
    let all: Vec<u8> = out.iter().flat_map(|(_, b)| b.clone()).collect();
    out.push(("all-in-one-session.bin", all));
    out
}
