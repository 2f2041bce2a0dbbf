//! Hostile peers against a real relay process: one test per named attack. Each asserts the
//! exact typed rejection, the relay's log line for it, that the relay still serves a
//! well-behaved device, and — where the attack carries data — that nothing was stored or leaked.
//!
//! The attacker is a real QUIC client pinned to the relay's certificate, either speaking raw
//! frames or driving a device-side `SyncNode` (`sync-server/tests/support/device.rs`, shared
//! here as a module), and forging what a modified client would send. Related tests elsewhere:
//! garbage UDP, oversize and malformed frames (`sync-server/tests/hostile_input.rs`), a reader
//! that stops reading (`sync-server/tests/slow_consumer.rs`), notebook edits by a parent
//! under simulation (`core/sim/tests/engine.rs`), decoder robustness (`fuzz/`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../sync-server/tests/support/device.rs"]
#[allow(dead_code, unreachable_pub)]
mod device;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use device::{Device, device_node, now_ms, quic_connect};
use homeroom_core::automerge::sync::{ChunkList, Message as AmMessage, MessageVersion, SyncDoc};
use homeroom_core::automerge::transaction::{CommitOptions, Transactable};
use homeroom_core::automerge::{ActorId, Automerge, ChangeHash, ROOT, ReadDoc};
use homeroom_core::identity::actor_for;
use homeroom_core::roster::{self, Role};
use homeroom_core::{ClassId, DeviceKey, DocId, DocKind, FamilyId, MemberId};
use homeroom_e2e::RelayProcess;
use homeroom_protocol::{
    DEFAULT_MAX_FRAME, EXPORTER_LEN, ErrorCode, Message, PROTOCOL_VERSION, RejectReason, Sig64,
    SignatureEntry, encode_frame, hello_proof,
};
use homeroom_store::Store;
use homeroom_transport::{FramedRecv, exporter};

const STEP: Duration = Duration::from_secs(20);
const TEACHER: [u8; 32] = [1; 32];
/// Guardian of family A.
const PARENT_A: [u8; 32] = [2; 32];
/// Guardian of family B.
const PARENT_B: [u8; 32] = [3; 32];
/// Enrolled as a guardian of family A, then revoked.
const REVOKED: [u8; 32] = [4; 32];
/// Never enrolled.
const STRANGER: [u8; 32] = [5; 32];
const FAMILY_A: FamilyId = FamilyId([0xa; 8]);
const FAMILY_B: FamilyId = FamilyId([0xb; 8]);

fn id(secret: [u8; 32]) -> homeroom_core::DeviceId {
    DeviceKey::from_secret(secret).device_id()
}

/// A relay with one class: a teacher, families A and B with one guardian each, a revoked
/// device, and a notebook with one teacher edit — all acknowledged durable.
struct School {
    relay: RelayProcess,
    class: ClassId,
    /// The teacher's notebook as the relay holds it (forged changes build on it).
    notebook: Automerge,
    /// The class roster as the relay holds it.
    roster: Automerge,
    _dir: tempfile::TempDir,
}

impl School {
    async fn start() -> Result<School> {
        Self::start_with("").await
    }

    async fn start_with(config: &str) -> Result<School> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("relay");
        std::fs::create_dir_all(&data)?;
        let relay = if config.is_empty() {
            RelayProcess::start(&data, "127.0.0.1:0")?
        } else {
            let cfg = dir.path().join("relay.toml");
            std::fs::write(&cfg, config)?;
            RelayProcess::start_with_args(
                &data,
                "127.0.0.1:0",
                &["--config", &cfg.to_string_lossy()],
            )?
        };
        let mut teacher = device_node(TEACHER)?;
        let now = now_ms();
        let class = teacher.found_class([9; 16], "Class 3B", MemberId([1; 8]), "Ms Li", now)?;
        let roster_doc = DocId::new(class, DocKind::Roster);
        teacher.edit(&roster_doc, now, |tx, _, _| {
            for (fam, member, secret) in [
                (FAMILY_A, MemberId([2; 8]), PARENT_A),
                (FAMILY_B, MemberId([3; 8]), PARENT_B),
            ] {
                roster::add_family(tx, fam, "Family")?;
                roster::add_member(tx, member, "Parent", &[Role::Guardian], Some(fam))?;
                roster::add_device(tx, id(secret), member, now)?;
            }
            roster::add_device(tx, id(REVOKED), MemberId([2; 8]), now)?;
            roster::revoke_device(tx, id(REVOKED), now)
        })?;
        let notebook = DocId::new(class, DocKind::Notebook);
        teacher.edit(&notebook, now, |tx, _, _| {
            tx.put(ROOT, "teacher-wrote", "hello")?;
            Ok(())
        })?;
        let mut t = Device::connect(teacher, relay.addr, relay.fingerprint).await?;
        t.until_saved(roster_doc, STEP).await?;
        t.until_saved(notebook, STEP).await?;
        let nb = t.node.document(&notebook)?.clone();
        let roster = t.node.document(&roster_doc)?.clone();
        Ok(School {
            relay,
            class,
            notebook: nb,
            roster,
            _dir: dir,
        })
    }

    fn doc(&self, kind: DocKind) -> DocId {
        DocId::new(self.class, kind)
    }

    /// A guardian's session, established (its `Catalog` received).
    async fn parent(&self, secret: [u8; 32]) -> Result<Device> {
        let mut d = Device::connect(
            device_node(secret)?,
            self.relay.addr,
            self.relay.fingerprint,
        )
        .await?;
        d.until(STEP, |m| matches!(m, Message::Catalog { .. }))
            .await?;
        Ok(d)
    }

    /// The relay still serves: a fresh session of guardian B is established and receives the
    /// teacher's notebook; and the relay process is alive.
    async fn still_serving(&mut self) -> Result<()> {
        ensure!(self.relay.is_running(), "the relay process exited");
        let mut d = Device::connect(
            device_node(PARENT_B)?,
            self.relay.addr,
            self.relay.fingerprint,
        )
        .await?;
        let notebook = self.doc(DocKind::Notebook);
        let want = self.notebook.get_heads();
        let deadline = Instant::now() + STEP;
        loop {
            if d.node
                .document(&notebook)
                .is_ok_and(|doc| doc.get_heads() == want)
            {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "guardian B was not served the notebook"
            );
            let _ = d.until(Duration::from_millis(500), |_| true).await;
        }
    }

    /// Wait for a relay log line containing every needle.
    fn logged(&self, needles: &[&str]) -> bool {
        relay_logged(&self.relay, needles)
    }

    /// Whether the relay's store holds the change `hash` of `doc` (the relay keeps running:
    /// a second reader of its WAL-mode SQLite file).
    fn stored(&self, doc: &DocId, hash: &ChangeHash) -> Result<bool> {
        let store = Store::open(&self.relay.data_dir.join("relay.sqlite3"))?;
        Ok(store.has_change(doc, hash)?)
    }
}

/// Wait (up to 5 s) for a log line of `relay` containing every needle.
fn relay_logged(relay: &RelayProcess, needles: &[&str]) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if relay
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| needles.iter().all(|n| l.contains(n)))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Whether no line of `relay`'s log so far reports a panic.
fn never_panicked(relay: &RelayProcess) -> bool {
    relay
        .log
        .lock()
        .unwrap()
        .iter()
        .all(|l| !l.contains("panicked"))
}

/// A change on top of `base` by `actor`, signed by `signer` for `doc`, as one `Sync` message
/// (a V1 payload carrying exactly that change chunk). `time_ms` overrides its timestamp.
fn forged_sync(
    base: &Automerge,
    doc: DocId,
    actor: ActorId,
    signer: &DeviceKey,
    time_ms: Option<i64>,
    edit: impl FnOnce(&mut homeroom_core::automerge::transaction::Transaction<'_>),
) -> Result<(Message, ChangeHash)> {
    let mut fork = base.fork().with_actor(actor);
    let time = time_ms.unwrap_or_else(now_ms);
    fork.transact_with::<_, _, homeroom_core::automerge::AutomergeError, _>(
        |_| CommitOptions::default().with_time(time),
        |tx| {
            edit(tx);
            Ok(())
        },
    )
    .map_err(|e| anyhow!("{e:?}"))?;
    let change = fork
        .get_last_local_change()
        .context("the forged change")?
        .clone();
    let hash = change.hash();
    let payload = AmMessage {
        heads: fork.get_heads(),
        need: Vec::new(),
        have: Vec::new(),
        changes: ChunkList::from(vec![change.raw_bytes().to_vec()]),
        flags: None,
        version: MessageVersion::V1,
    }
    .encode();
    let sig = signer.sign_change(&doc, &hash);
    Ok((
        Message::Sync {
            doc,
            payload,
            signatures: vec![SignatureEntry {
                hash: hash.0,
                signature: Sig64(sig.0),
            }],
        },
        hash,
    ))
}

/// Send `msg` on `d` and wait for the relay's `Reject` of `hash`.
async fn expect_reject(d: &mut Device, msg: Message, hash: ChangeHash) -> Result<RejectReason> {
    d.send(&msg).await?;
    let m = d
        .until(
            STEP,
            |m| matches!(m, Message::Reject { changes, .. } if changes.contains(&hash.0)),
        )
        .await?;
    match m {
        Message::Reject { reason, .. } => Ok(reason),
        other => Err(anyhow!("unexpected {other:?}")),
    }
}

/// A raw session: QUIC to the relay, one stream, frames written by hand.
struct Raw {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: FramedRecv,
    exporter: [u8; EXPORTER_LEN],
    _endpoint: quinn::Endpoint,
}

impl Raw {
    async fn open(addr: SocketAddr, fp: [u8; 32]) -> Result<Raw> {
        let (endpoint, conn) = quic_connect(addr, fp).await?;
        let (send, recv) = conn.open_bi().await?;
        let exporter = exporter(&conn)?;
        Ok(Raw {
            conn,
            send,
            recv: FramedRecv::new(recv, DEFAULT_MAX_FRAME),
            exporter,
            _endpoint: endpoint,
        })
    }

    /// Write one whole frame.
    async fn frame(&mut self, msg: &Message) -> Result<()> {
        self.send
            .write_all(&encode_frame(msg, DEFAULT_MAX_FRAME)?)
            .await?;
        Ok(())
    }

    fn hello(device: homeroom_core::DeviceId, proof: Sig64) -> Message {
        Message::Hello {
            versions: vec![PROTOCOL_VERSION],
            device,
            proof,
            classes: Vec::new(),
        }
    }

    /// The first message the relay answers, and then how the connection ended.
    async fn answer_and_close(&mut self) -> Result<(Option<Message>, quinn::ConnectionError)> {
        let answer = tokio::time::timeout(STEP, self.recv.recv()).await??;
        let closed = tokio::time::timeout(STEP, self.conn.closed()).await?;
        Ok((answer, closed))
    }
}

fn fatal_error(answer: &Option<Message>, want: ErrorCode) -> bool {
    matches!(answer, Some(Message::Error { code, fatal: true, .. }) if *code == want)
}

fn closed_for_protocol_error(e: &quinn::ConnectionError) -> bool {
    matches!(e, quinn::ConnectionError::ApplicationClosed(c)
        if c.error_code == quinn::VarInt::from_u32(homeroom_relay_codes::PROTOCOL_ERROR))
}

/// The relay's QUIC close codes (`homeroom_relay::close_code`; the relay crate is not a
/// dependency of this one, so the values are pinned here and by `docs/relay.md`).
mod homeroom_relay_codes {
    pub(crate) const PROTOCOL_ERROR: u32 = 1;
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connect_is_refused() -> Result<()> {
    let mut s = School::start().await?;
    // A session that skips Hello and asks for the notebook straight away.
    let mut raw = Raw::open(s.relay.addr, s.relay.fingerprint).await?;
    raw.frame(&Message::Sync {
        doc: s.doc(DocKind::Notebook),
        payload: vec![0x42, 0, 0, 0, 0],
        signatures: Vec::new(),
    })
    .await?;
    let (answer, closed) = raw.answer_and_close().await?;
    ensure!(
        fatal_error(&answer, ErrorCode::UnexpectedMessage),
        "{answer:?}"
    );
    ensure!(closed_for_protocol_error(&closed), "{closed:?}");
    ensure!(
        s.logged(&["UnexpectedMessage", "expected Hello"]),
        "log line"
    );
    s.still_serving().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_or_failed_proof_is_refused() -> Result<()> {
    let mut s = School::start().await?;
    // Claims guardian A's device id, proves with another key.
    let mut raw = Raw::open(s.relay.addr, s.relay.fingerprint).await?;
    let proof = hello_proof(&DeviceKey::from_secret(STRANGER), &raw.exporter);
    raw.frame(&Raw::hello(id(PARENT_A), proof)).await?;
    let (answer, closed) = raw.answer_and_close().await?;
    ensure!(
        fatal_error(&answer, ErrorCode::AuthenticationFailed),
        "{answer:?}"
    );
    ensure!(closed_for_protocol_error(&closed), "{closed:?}");
    // A proof of the right key over the wrong bytes.
    let mut raw = Raw::open(s.relay.addr, s.relay.fingerprint).await?;
    let proof = hello_proof(&DeviceKey::from_secret(PARENT_A), &[0u8; EXPORTER_LEN]);
    raw.frame(&Raw::hello(id(PARENT_A), proof)).await?;
    let (answer, _) = raw.answer_and_close().await?;
    ensure!(
        fatal_error(&answer, ErrorCode::AuthenticationFailed),
        "{answer:?}"
    );
    ensure!(s.logged(&["AuthenticationFailed", "handshake proof does not verify"]));
    s.still_serving().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_handshake_is_refused() -> Result<()> {
    let mut s = School::start().await?;
    // A Hello captured from guardian A's real session…
    let first = Raw::open(s.relay.addr, s.relay.fingerprint).await?;
    let captured = Raw::hello(
        id(PARENT_A),
        hello_proof(&DeviceKey::from_secret(PARENT_A), &first.exporter),
    );
    // …replayed on another TLS session: its exporter differs, the proof does not verify.
    let mut replay = Raw::open(s.relay.addr, s.relay.fingerprint).await?;
    ensure!(replay.exporter != first.exporter);
    replay.frame(&captured).await?;
    let (answer, closed) = replay.answer_and_close().await?;
    ensure!(
        fatal_error(&answer, ErrorCode::AuthenticationFailed),
        "{answer:?}"
    );
    ensure!(closed_for_protocol_error(&closed), "{closed:?}");
    ensure!(
        s.logged(&[
            "peer misbehaved",
            "AuthenticationFailed: handshake proof does not verify"
        ]),
        "log line"
    );
    // The original session, which the capture came from, still authenticates.
    let mut first = first;
    first.frame(&captured).await?;
    let welcome = tokio::time::timeout(STEP, first.recv.recv()).await??;
    ensure!(
        matches!(welcome, Some(Message::Welcome { .. })),
        "{welcome:?}"
    );
    s.still_serving().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_actor_id_is_rejected() -> Result<()> {
    let mut s = School::start().await?;
    let mut a = s.parent(PARENT_A).await?;
    let notebook = s.doc(DocKind::Notebook);
    // A change that names the teacher's key as its author, signed by guardian A.
    let (msg, hash) = forged_sync(
        &s.notebook,
        notebook,
        actor_for(&id(TEACHER), [1; 8]),
        &DeviceKey::from_secret(PARENT_A),
        None,
        |tx| {
            tx.put(ROOT, "forged", "as the teacher").unwrap();
        },
    )?;
    let reason = expect_reject(&mut a, msg, hash).await?;
    ensure!(reason == RejectReason::BadSignature, "{reason:?}");
    ensure!(s.logged(&["changes rejected", "BadSignature"]));
    ensure!(!s.stored(&notebook, &hash)?, "the forged change was stored");
    s.still_serving().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_signature_by_a_non_writer_is_rejected() -> Result<()> {
    let mut s = School::start().await?;
    let mut a = s.parent(PARENT_A).await?;
    // Guardian A may read the roster (every member does) but not write it: a roster change
    // enrolling a stranger's device into family A, correctly signed by A's own key.
    let roster_doc = s.doc(DocKind::Roster);
    let now = now_ms();
    let (msg, hash) = forged_sync(
        &s.roster,
        roster_doc,
        actor_for(&id(PARENT_A), [2; 8]),
        &DeviceKey::from_secret(PARENT_A),
        None,
        |tx| {
            roster::add_device(tx, id(STRANGER), MemberId([2; 8]), now).unwrap();
        },
    )?;
    let reason = expect_reject(&mut a, msg, hash).await?;
    ensure!(reason == RejectReason::NotAWriter, "{reason:?}");
    ensure!(
        s.logged(&["changes rejected", "NotAWriter", &roster_doc.to_string()]),
        "log line"
    );
    ensure!(
        !s.stored(&roster_doc, &hash)?,
        "the roster change was stored"
    );
    ensure!(a.conn.close_reason().is_none(), "a reject is not fatal");
    // The same signed change for family B's lane, which A may neither read nor write: the
    // relay does not even look at it (`NoSuchDocument`, the answer for any unreadable lane).
    let lane_b = s.doc(DocKind::Lane(FAMILY_B));
    let genesis = homeroom_core::genesis::genesis_document(&lane_b, ActorId::random());
    let (msg, hash) = forged_sync(
        &genesis,
        lane_b,
        actor_for(&id(PARENT_A), [2; 8]),
        &DeviceKey::from_secret(PARENT_A),
        None,
        |tx| {
            tx.put(ROOT, "signed-for-b", true).unwrap();
        },
    )?;
    a.send(&msg).await?;
    let m = a
        .until(STEP, |m| {
            matches!(m, Message::Reject { .. } | Message::Error { .. })
        })
        .await?;
    ensure!(
        matches!(
            &m,
            Message::Error {
                code: ErrorCode::NoSuchDocument,
                fatal: false,
                ..
            }
        ),
        "{m:?}"
    );
    ensure!(!s.stored(&lane_b, &hash)?, "stored in B's lane");
    ensure!(
        s.logged(&["peer misbehaved", "NoSuchDocument", &lane_b.to_string()]),
        "log line"
    );
    s.still_serving().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_editing_the_notebook_is_rejected() -> Result<()> {
    let mut s = School::start().await?;
    let mut a = s.parent(PARENT_A).await?;
    let notebook = s.doc(DocKind::Notebook);
    let (msg, hash) = forged_sync(
        &s.notebook,
        notebook,
        actor_for(&id(PARENT_A), [2; 8]),
        &DeviceKey::from_secret(PARENT_A),
        None,
        |tx| {
            tx.put(ROOT, "teacher-wrote", "overwritten by a parent")
                .unwrap();
        },
    )?;
    let reason = expect_reject(&mut a, msg, hash).await?;
    ensure!(reason == RejectReason::NotAWriter, "{reason:?}");
    ensure!(s.logged(&["changes rejected", "NotAWriter"]));
    ensure!(
        !s.stored(&notebook, &hash)?,
        "the parent's notebook edit was stored"
    );
    // The session goes on: guardian A is still served.
    ensure!(a.conn.close_reason().is_none(), "a reject is not fatal");
    s.still_serving().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_familys_lane_is_refused_without_leaking_its_existence() -> Result<()> {
    let mut s = School::start().await?;
    let mut a = s.parent(PARENT_A).await?;
    // Ask for B's lane (it exists) and for the lane of a family that does not.
    let mut answers = Vec::new();
    for fam in [FAMILY_B, FamilyId([0xee; 8])] {
        let doc = s.doc(DocKind::Lane(fam));
        let payload = Automerge::new()
            .generate_sync_message(&mut homeroom_core::automerge::sync::State::new())
            .context("a first sync message")?
            .encode();
        a.send(&Message::Sync {
            doc,
            payload,
            signatures: Vec::new(),
        })
        .await?;
        let m = a
            .until(STEP, |m| {
                matches!(m, Message::Error { .. })
                    || matches!(m, Message::Sync { doc: d, .. } if *d == doc)
            })
            .await?;
        match m {
            Message::Error {
                code,
                detail,
                fatal,
            } => answers.push((code, fatal, detail.replace(&fam.to_string(), "FAMILY"))),
            other => anyhow::bail!("the relay answered a lane request with {other:?}"),
        }
    }
    ensure!(answers[0].0 == ErrorCode::NoSuchDocument, "{answers:?}");
    ensure!(!answers[0].1, "not fatal");
    ensure!(
        answers[0] == answers[1],
        "existing and missing lanes answered differently: {answers:?}"
    );
    ensure!(
        s.logged(&[
            "peer misbehaved",
            "NoSuchDocument",
            &s.doc(DocKind::Lane(FAMILY_B)).to_string()
        ]),
        "log line"
    );
    ensure!(
        a.node
            .document(&s.doc(DocKind::Lane(FAMILY_B)))
            .map_or(true, |d| d.get_heads().len() <= 1),
        "B's lane reached A"
    );
    s.still_serving().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_refused() -> Result<()> {
    let mut s = School::start().await?;
    let mut d = Device::connect(device_node(REVOKED)?, s.relay.addr, s.relay.fingerprint).await?;
    // As designed (docs/invites.md §3): the handshake succeeds and the catalog lists the class
    // with its roster only, so the device learns that it was removed and reads nothing else.
    let first = d
        .until(STEP, |m| {
            matches!(m, Message::Catalog { .. } | Message::Error { .. })
        })
        .await?;
    let Message::Catalog { classes } = first else {
        anyhow::bail!("a revoked device's Hello was answered with {first:?}");
    };
    let entry = classes
        .iter()
        .find(|c| c.class == s.class)
        .context("the class is not in the revoked device's catalog")?;
    let kinds: Vec<DocKind> = entry.docs.iter().flatten().map(|d| d.kind).collect();
    ensure!(
        kinds == vec![DocKind::Roster],
        "the revoked device is offered {kinds:?}"
    );
    // Every upload is refused and audited.
    let notebook = s.doc(DocKind::Notebook);
    let (msg, hash) = forged_sync(
        &s.notebook,
        notebook,
        actor_for(&id(REVOKED), [4; 8]),
        &DeviceKey::from_secret(REVOKED),
        None,
        |tx| {
            tx.put(ROOT, "revoked", true).unwrap();
        },
    )?;
    let reason = expect_reject(&mut d, msg, hash).await?;
    ensure!(reason == RejectReason::NotAWriter, "{reason:?}");
    ensure!(
        !s.stored(&notebook, &hash)?,
        "the revoked device's change was stored"
    );
    ensure!(
        s.logged(&["changes rejected", "NotAWriter", &notebook.to_string()]),
        "log line"
    );
    // It is never sent the notebook's content: for a document it may no longer read, the
    // relay's sync messages carry heads and a bloom filter only (so that it can still upload,
    // and be refused and audited), no change and no signature.
    let _ = d.until(Duration::from_secs(1), |_| false).await;
    let mut notebook_syncs = 0;
    for m in &d.received {
        if let Message::Sync {
            doc,
            payload,
            signatures,
        } = m
            && *doc == notebook
        {
            notebook_syncs += 1;
            let p = homeroom_protocol::decode_sync_payload(payload)?;
            ensure!(
                p.changes.is_empty() && signatures.is_empty(),
                "the revoked device was sent notebook changes"
            );
        }
    }
    println!("revoked device: {notebook_syncs} change-less notebook sync messages in 1 s");
    // Its heads never match the relay's, so answering each heads-only message with another
    // would go on forever (it did: ~1,800 a second); the relay answers once.
    ensure!(
        (1..=3).contains(&notebook_syncs),
        "{notebook_syncs} notebook sync messages in 1 s: the relay and a removed device ping-pong"
    );
    ensure!(
        d.node
            .document(&notebook)
            .map_or(true, |doc| doc.get_heads() != s.notebook.get_heads()),
        "the revoked device holds the notebook"
    );
    s.still_serving().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frames_are_refused_before_buffering() -> Result<()> {
    let mut s = School::start().await?;
    let mut raw = Raw::open(s.relay.addr, s.relay.fingerprint).await?;
    let mut bytes = (1u32 << 30).to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 64]);
    raw.send.write_all(&bytes).await?;
    let (answer, closed) = raw.answer_and_close().await?;
    ensure!(fatal_error(&answer, ErrorCode::FrameTooLarge), "{answer:?}");
    ensure!(closed_for_protocol_error(&closed), "{closed:?}");
    ensure!(s.logged(&["undecodable frame"]));
    s.still_serving().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_and_truncated_streams_end_only_their_connection() -> Result<()> {
    let mut s = School::start().await?;
    // A body that is not a message.
    let mut raw = Raw::open(s.relay.addr, s.relay.fingerprint).await?;
    raw.send.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await?;
    let (answer, closed) = raw.answer_and_close().await?;
    ensure!(
        fatal_error(&answer, ErrorCode::MalformedFrame),
        "{answer:?}"
    );
    ensure!(closed_for_protocol_error(&closed), "{closed:?}");
    ensure!(
        s.logged(&["undecodable frame: closing this connection"]),
        "log line (malformed body)"
    );
    // Half of a valid Hello frame, then the stream ends.
    let mut raw = Raw::open(s.relay.addr, s.relay.fingerprint).await?;
    let hello = Raw::hello(
        id(PARENT_A),
        hello_proof(&DeviceKey::from_secret(PARENT_A), &raw.exporter),
    );
    let frame = encode_frame(&hello, DEFAULT_MAX_FRAME)?;
    raw.send.write_all(&frame[..frame.len() / 2]).await?;
    raw.send.finish()?;
    let ended = tokio::time::timeout(STEP, raw.conn.closed()).await;
    ensure!(ended.is_ok(), "a truncated stream is not left open");
    ensure!(
        s.logged(&[
            "undecodable frame: closing this connection",
            "stream ended in the middle of a frame"
        ]),
        "log line (truncated stream)"
    );
    s.still_serving().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_flood_is_refused_and_the_session_survives() -> Result<()> {
    let mut s = School::start().await?;
    let mut a = s.parent(PARENT_A).await?;
    // Open 100 more streams on the same connection, each with a frame header: the relay
    // refuses every one (stream reset, `STREAM_REFUSED`) without touching the first.
    let mut refused = 0;
    for _ in 0..100 {
        let (mut send, mut recv) = tokio::time::timeout(STEP, a.conn.open_bi()).await??;
        let _ = send.write_all(&[0, 0, 0, 1, 0]).await;
        let mut buf = [0u8; 16];
        match tokio::time::timeout(STEP, recv.read(&mut buf)).await? {
            Err(quinn::ReadError::Reset(code)) if code == quinn::VarInt::from_u32(5) => {
                refused += 1;
            }
            other => anyhow::bail!("an extra stream was not refused: {other:?}"),
        }
    }
    println!("stream flood: {refused} of 100 extra streams refused");
    ensure!(s.logged(&["refusing a second stream"]));
    // The first stream's session is unaffected.
    ensure!(
        a.conn.close_reason().is_none(),
        "the flood closed the connection"
    );
    a.send(&Message::Ephemeral {
        doc: s.doc(DocKind::Notebook),
        payload: b"still here".to_vec(),
    })
    .await?;
    s.still_serving().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_is_bounded_and_others_are_served() -> Result<()> {
    let mut s = School::start_with("max_connections = 20\nhandshake_timeout_secs = 3\n").await?;
    // 60 connections that never say Hello.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..60 {
        match quic_connect(s.relay.addr, s.relay.fingerprint).await {
            Ok(c) => held.push(c),
            // Beyond the limit the relay refuses the QUIC handshake itself
            // (`Incoming::refuse`): the transport error CONNECTION_REFUSED, nothing else.
            Err(e) => {
                ensure!(
                    matches!(
                        e.downcast_ref::<quinn::ConnectionError>(),
                        Some(quinn::ConnectionError::ConnectionClosed(close))
                            if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED
                    ),
                    "a flood connection failed otherwise than refused: {e:#}"
                );
                refused += 1;
            }
        }
    }
    println!(
        "connection flood: {} accepted, {refused} refused",
        held.len()
    );
    ensure!(held.len() <= 20, "{} connections accepted", held.len());
    ensure!(refused > 0, "no connection limit");
    ensure!(
        s.logged(&[
            "refusing connection: max_connections reached",
            "max_connections=20"
        ]),
        "log line"
    );
    // The relay drops the silent ones at the handshake timeout; then it serves again.
    let dropped = tokio::time::timeout(Duration::from_secs(15), async {
        for (_, c) in &held {
            c.closed().await;
        }
    })
    .await;
    ensure!(dropped.is_ok(), "silent connections were not closed");
    drop(held);
    s.still_serving().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_handshake_is_cut_at_the_timeout() -> Result<()> {
    let mut s = School::start_with("handshake_timeout_secs = 2\n").await?;
    let raw = Raw::open(s.relay.addr, s.relay.fingerprint).await?;
    let hello = Raw::hello(
        id(PARENT_A),
        hello_proof(&DeviceKey::from_secret(PARENT_A), &raw.exporter),
    );
    let frame = encode_frame(&hello, DEFAULT_MAX_FRAME)?;
    let Raw {
        conn,
        mut send,
        mut recv,
        _endpoint,
        ..
    } = raw;
    // The relay's answer is read while the Hello is dribbled.
    let answer = tokio::spawn(async move { tokio::time::timeout(STEP, recv.recv()).await });
    let started = Instant::now();
    // One byte every 300 ms: the full Hello would take ~40 s.
    for b in &frame {
        if conn.close_reason().is_some() || answer.is_finished() {
            break;
        }
        let _ = send.write_all(&[*b]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        ensure!(started.elapsed() < STEP, "never cut");
    }
    let answer = answer.await??;
    let closed = tokio::time::timeout(STEP, conn.closed()).await?;
    let took = started.elapsed();
    println!("slowloris: cut after {took:.1?} ({closed})");
    // The engine's Hello deadline (the same timeout again after the stream opened).
    ensure!(took < Duration::from_secs(6), "cut after {took:?}");
    let answer = answer?;
    ensure!(
        matches!(
            &answer,
            Some(Message::Error { code: ErrorCode::UnexpectedMessage, detail, fatal: true })
                if detail == "handshake timed out"
        ),
        "{answer:?}"
    );
    ensure!(closed_for_protocol_error(&closed), "{closed:?}");
    ensure!(
        s.logged(&["peer misbehaved", "UnexpectedMessage: handshake timed out"]),
        "log line"
    );
    s.still_serving().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_bombs_are_rejected() -> Result<()> {
    let mut s = School::start().await?;
    let mut b = s.parent(PARENT_B).await?;
    let lane = s.doc(DocKind::Lane(FAMILY_B));
    let base = homeroom_core::genesis::genesis_document(&lane, ActorId::random());
    // A huge change (over the 1 MiB change limit): incompressible text.
    let mut x: u64 = 0x1234_5678_9abc_def0;
    let text: String = (0..1_500_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    let (msg, hash) = forged_sync(
        &base,
        lane,
        actor_for(&id(PARENT_B), [3; 8]),
        &DeviceKey::from_secret(PARENT_B),
        None,
        |tx| {
            tx.put(ROOT, "bomb", text.as_str()).unwrap();
        },
    )?;
    let reason = expect_reject(&mut b, msg, hash).await?;
    ensure!(reason == RejectReason::TooLarge, "{reason:?}");
    ensure!(!s.stored(&lane, &hash)?);
    ensure!(s.logged(&["changes rejected", "TooLarge"]));
    // A deeply nested change: 5,000 maps inside each other, well within the size limit.
    // Every replica refuses objects more than `MAX_OBJECT_DEPTH` (32) levels deep.
    let (msg, hash) = forged_sync(
        &base,
        lane,
        actor_for(&id(PARENT_B), [3; 8]),
        &DeviceKey::from_secret(PARENT_B),
        None,
        |tx| {
            let mut obj = ROOT;
            for _ in 0..5000 {
                obj = tx
                    .put_object(&obj, "n", homeroom_core::automerge::ObjType::Map)
                    .unwrap();
            }
        },
    )?;
    let reason = expect_reject(&mut b, msg, hash).await?;
    ensure!(reason == RejectReason::TooDeep, "{reason:?}");
    ensure!(!s.stored(&lane, &hash)?, "the nested change was stored");
    ensure!(
        s.logged(&["changes rejected", "TooDeep", &lane.to_string()]),
        "log line"
    );
    // Nesting up to the limit is an ordinary edit.
    let (msg, ok) = forged_sync(
        &base,
        lane,
        actor_for(&id(PARENT_B), [3; 8]),
        &DeviceKey::from_secret(PARENT_B),
        None,
        |tx| {
            let mut obj = ROOT;
            for _ in 0..homeroom_sync::MAX_OBJECT_DEPTH {
                obj = tx
                    .put_object(&obj, "m", homeroom_core::automerge::ObjType::Map)
                    .unwrap();
            }
        },
    )?;
    b.send(&msg).await?;
    b.until(
        STEP,
        |m| matches!(m, Message::Saved { heads, .. } if heads.contains(&ok.0)),
    )
    .await?;
    ensure!(s.stored(&lane, &ok)?);
    // The readers of the lane are unaffected: a fresh session of guardian B is served the lane
    // with the honest edit and without either bomb.
    ensure!(b.conn.close_reason().is_none(), "a reject is not fatal");
    let mut reader = s.parent(PARENT_B).await?;
    let deadline = Instant::now() + STEP;
    loop {
        let heads = reader
            .node
            .document(&lane)
            .map(|d| d.get_heads())
            .unwrap_or_default();
        if heads.contains(&ok) {
            let doc = reader.node.document(&lane)?;
            ensure!(
                doc.get_change_by_hash(&hash).is_none(),
                "the bomb reached a reader"
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the reader was not served the lane"
        );
        let _ = reader.until(Duration::from_millis(500), |_| true).await;
    }
    s.still_serving().await
}

/// The relay's answer to one refused `Sync` payload: a non-fatal `Error { MalformedFrame }`
/// whose detail starts with `detail` (the session goes on).
async fn expect_malformed(d: &mut Device, detail_prefix: &str) -> Result<String> {
    let m = d
        .until(STEP, |m| {
            matches!(m, Message::Error { .. } | Message::Reject { .. })
        })
        .await?;
    match m {
        Message::Error {
            code: ErrorCode::MalformedFrame,
            detail,
            fatal: false,
        } if detail.starts_with(detail_prefix) => Ok(detail),
        other => Err(anyhow!(
            "expected MalformedFrame ({detail_prefix}…), got {other:?}"
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_automerge_bytes_are_refused() -> Result<()> {
    let mut s = School::start().await?;
    let mut a = s.parent(PARENT_A).await?;
    let notebook = s.doc(DocKind::Notebook);
    let mut x: u32 = 0xfeed_beef;
    for len in [1usize, 7, 64, 1000] {
        let mut payload: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        payload[0] = 0x42; // looks like a V1 sync message
        a.send(&Message::Sync {
            doc: notebook,
            payload,
            signatures: Vec::new(),
        })
        .await?;
        let detail = expect_malformed(&mut a, "bad automerge sync message").await?;
        println!("{len} garbage bytes: {detail}");
    }
    // A change chunk with a valid header but garbage inside.
    let mut chunk = vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3, 4, 1, 20];
    chunk.extend_from_slice(&[0xab; 20]);
    let payload = AmMessage {
        heads: Vec::new(),
        need: Vec::new(),
        have: Vec::new(),
        changes: ChunkList::from(vec![chunk]),
        flags: None,
        version: MessageVersion::V1,
    }
    .encode();
    a.send(&Message::Sync {
        doc: notebook,
        payload,
        signatures: Vec::new(),
    })
    .await?;
    let detail = expect_malformed(&mut a, "malformed change").await?;
    println!("garbage change chunk: {detail}");
    ensure!(
        a.conn.close_reason().is_none(),
        "garbage closed the session"
    );
    ensure!(
        s.logged(&[
            "peer misbehaved",
            "MalformedFrame: bad automerge sync message"
        ]),
        "log line (garbage payload)"
    );
    ensure!(
        s.logged(&["peer misbehaved", "MalformedFrame: malformed change"]),
        "log line (garbage chunk)"
    );
    // Guardian B is served the notebook with the teacher's heads exactly: nothing was added.
    s.still_serving().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_sync_messages_are_refused() -> Result<()> {
    let mut s = School::start().await?;
    let mut b = s.parent(PARENT_B).await?;
    // A V2 sync message (first byte 0x43) carries a whole document chunk, whose columns
    // automerge would inflate without a bound: refused whatever it holds. This one holds an
    // honest, correctly signed edit of B's own lane.
    let lane = s.doc(DocKind::Lane(FAMILY_B));
    let base = homeroom_core::genesis::genesis_document(&lane, ActorId::random());
    let mut doc = base.fork().with_actor(actor_for(&id(PARENT_B), [3; 8]));
    doc.transact_with::<_, _, homeroom_core::automerge::AutomergeError, _>(
        |_| CommitOptions::default().with_time(now_ms()),
        |tx| {
            tx.put(ROOT, "sent-as-v2", true)?;
            Ok(())
        },
    )
    .map_err(|e| anyhow!("{e:?}"))?;
    let hash = doc.get_last_local_change().context("the change")?.hash();
    let signatures = vec![SignatureEntry {
        hash: hash.0,
        signature: Sig64(DeviceKey::from_secret(PARENT_B).sign_change(&lane, &hash).0),
    }];
    let payload = AmMessage {
        heads: doc.get_heads(),
        need: Vec::new(),
        have: Vec::new(),
        changes: ChunkList::from(vec![doc.save()]),
        flags: None,
        version: MessageVersion::V2,
    }
    .encode();
    ensure!(payload[0] == 0x43, "not a V2 message");
    b.send(&Message::Sync {
        doc: lane,
        payload,
        signatures,
    })
    .await?;
    expect_malformed(&mut b, "V2 sync messages are not accepted").await?;
    ensure!(b.conn.close_reason().is_none(), "the session was closed");
    ensure!(
        !s.stored(&lane, &hash)?,
        "the V2 message's change was stored"
    );
    ensure!(
        s.logged(&[
            "peer misbehaved",
            "MalformedFrame: V2 sync messages are not accepted"
        ]),
        "log line"
    );
    s.still_serving().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_far_in_the_future_is_rejected() -> Result<()> {
    let mut s = School::start().await?;
    let mut b = s.parent(PARENT_B).await?;
    let lane = s.doc(DocKind::Lane(FAMILY_B));
    let base = homeroom_core::genesis::genesis_document(&lane, ActorId::random());
    let year_ms = 365 * 24 * 3600 * 1000i64;
    let (msg, hash) = forged_sync(
        &base,
        lane,
        actor_for(&id(PARENT_B), [3; 8]),
        &DeviceKey::from_secret(PARENT_B),
        Some(now_ms() + year_ms),
        |tx| {
            tx.put(ROOT, "from-the-future", true).unwrap();
        },
    )?;
    let reason = expect_reject(&mut b, msg, hash).await?;
    ensure!(reason == RejectReason::FromTheFuture, "{reason:?}");
    ensure!(!s.stored(&lane, &hash)?);
    ensure!(s.logged(&["changes rejected", "FromTheFuture"]));
    // The same edit with an honest clock is accepted.
    let (msg, hash) = forged_sync(
        &base,
        lane,
        actor_for(&id(PARENT_B), [3; 8]),
        &DeviceKey::from_secret(PARENT_B),
        None,
        |tx| {
            tx.put(ROOT, "from-now", true).unwrap();
        },
    )?;
    b.send(&msg).await?;
    b.until(
        STEP,
        |m| matches!(m, Message::Saved { heads, .. } if heads.contains(&hash.0)),
    )
    .await?;
    ensure!(s.stored(&lane, &hash)?);
    s.still_serving().await
}

// Invites (docs/invites.md). The client refuses an expired code before it touches the network,
// and `tests/tests/invites.rs` covers the honest device's view of both refusals; here a hostile
// peer skips the client and sends `Join` on the wire.

/// A teacher device (the real client) with a class and one family, synced with a fresh relay.
async fn invite_school(
    dir: &Path,
) -> Result<(RelayProcess, homeroom_client::Device, ClassId, FamilyId)> {
    let relay = RelayProcess::start(&dir.join("relay"), "127.0.0.1:0")?;
    let teacher = homeroom_client::Device::open(&dir.join("teacher"))?;
    let class = teacher.create_class("Class 3B", "Ms Li")?;
    let family = teacher.add_family(class, "Wang")?;
    teacher.start_sync(
        &tokio::runtime::Handle::current(),
        homeroom_client::RelayTarget {
            addr: relay.addr,
            fingerprint: relay.fingerprint,
        },
    )?;
    Ok((relay, teacher, class, family))
}

/// Hello as an unenrolled device, then `Join` with `invite_key`: the relay's answer. Fails if
/// anything of the class (a catalog entry, a document) reaches the stranger first.
async fn raw_join(relay: &RelayProcess, class: ClassId, invite_key: &DeviceKey) -> Result<Message> {
    let mut raw = Raw::open(relay.addr, relay.fingerprint).await?;
    let me = DeviceKey::from_secret(STRANGER);
    raw.frame(&Raw::hello(me.device_id(), hello_proof(&me, &raw.exporter)))
        .await?;
    let proof = Sig64(invite_key.sign(homeroom_protocol::INVITE_DOMAIN, &raw.exporter));
    raw.frame(&Message::Join {
        class,
        invite: invite_key.device_id(),
        proof,
    })
    .await?;
    loop {
        let m = tokio::time::timeout(STEP, raw.recv.recv())
            .await??
            .context("stream ended")?;
        match &m {
            Message::JoinRefused { .. } | Message::Error { .. } => return Ok(m),
            Message::Welcome { .. } => {}
            Message::Catalog { classes } => ensure!(
                classes.iter().all(|c| c.class != class),
                "the stranger's catalog lists the class: {m:?}"
            ),
            other => anyhow::bail!("the stranger was sent {other:?} before the refusal"),
        }
    }
}

/// The invite-test relay still serves: the relay process is alive and the teacher's next
/// roster edit is acknowledged durable by it.
async fn invite_relay_still_serves(
    relay: &mut RelayProcess,
    teacher: &homeroom_client::Device,
    class: ClassId,
) -> Result<()> {
    ensure!(relay.is_running(), "the relay process exited");
    teacher.add_family(class, "Li")?;
    homeroom_e2e::wait_for("the teacher's edit is acknowledged", STEP, || {
        teacher.sync_status().pending == 0
    })
    .await?;
    Ok(())
}

/// For `for_how_long`, the teacher's roster (kept in sync with the relay) never names the
/// stranger's device.
async fn stranger_stays_out(
    teacher: &homeroom_client::Device,
    class: ClassId,
    for_how_long: Duration,
) -> Result<()> {
    let end = Instant::now() + for_how_long;
    loop {
        ensure!(
            teacher.roster(class)?.member_of(&id(STRANGER)).is_none(),
            "the stranger was enrolled"
        );
        if Instant::now() >= end {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn invite_key_of(code: &str) -> Result<DeviceKey> {
    Ok(homeroom_core::invite::InviteCode::parse(code)
        .map_err(|e| anyhow!("{e}"))?
        .key())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_invite_is_refused_on_the_wire() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut relay, teacher, class, family) = invite_school(dir.path()).await?;
    let invite = teacher.create_invite(
        class,
        homeroom_client::InviteRole::Guardian { family },
        Duration::from_secs(1),
    )?;
    homeroom_e2e::wait_for("the invite reaches the relay", STEP, || {
        teacher.sync_status().pending == 0
    })
    .await?;
    // Past its expiry (whole seconds, plus the relay's clock-skew slack if any is applied to
    // the relay's own clock — it is not: the relay checks its own clock strictly).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let answer = raw_join(&relay, class, &invite_key_of(&invite.code)?).await?;
    ensure!(
        matches!(
            answer,
            Message::JoinRefused {
                reason: RejectReason::InviteExpired,
                ..
            }
        ),
        "{answer:?}"
    );
    ensure!(
        relay_logged(
            &relay,
            &["join refused", "InviteExpired", &class.to_string()]
        ),
        "log line"
    );
    // Nothing was added to the roster, then or later.
    stranger_stays_out(&teacher, class, Duration::from_secs(3)).await?;
    ensure!(never_panicked(&relay), "the relay panicked");
    invite_relay_still_serves(&mut relay, &teacher, class).await?;
    teacher.stop_sync().await;
    relay.kill9()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_invite_is_refused_on_the_wire() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut relay, teacher, class, family) = invite_school(dir.path()).await?;
    let rt = tokio::runtime::Handle::current();
    let invite = teacher.create_invite(
        class,
        homeroom_client::InviteRole::Guardian { family },
        Duration::from_secs(600),
    )?;
    homeroom_e2e::wait_for("the invite reaches the relay", STEP, || {
        teacher.sync_status().pending == 0
    })
    .await?;
    // An honest phone redeems it.
    let phone = homeroom_client::Device::open(&dir.path().join("phone"))?;
    phone.join(&invite.code, "Mrs Wang")?;
    phone.start_sync(&rt, phone.relay_target().context("the code's relay")?)?;
    homeroom_e2e::wait_for("the phone is a member", Duration::from_secs(120), || {
        phone
            .classes()
            .iter()
            .any(|c| c.id == class && c.membership == homeroom_client::Membership::Member)
    })
    .await?;
    // Someone who saw the code (a photo of the QR) tries it again.
    let answer = raw_join(&relay, class, &invite_key_of(&invite.code)?).await?;
    ensure!(
        matches!(
            answer,
            Message::JoinRefused {
                reason: RejectReason::InviteUsed,
                ..
            }
        ),
        "{answer:?}"
    );
    // The refusal is in the relay's log (and its rejects metric).
    ensure!(
        relay_logged(&relay, &["join refused", "InviteUsed", &class.to_string()]),
        "log line"
    );
    // Nothing was added to the roster, then or later.
    stranger_stays_out(&teacher, class, Duration::from_secs(3)).await?;
    ensure!(never_panicked(&relay), "the relay panicked");
    invite_relay_still_serves(&mut relay, &teacher, class).await?;
    phone.stop_sync().await;
    teacher.stop_sync().await;
    Ok(())
}
