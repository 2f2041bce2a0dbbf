//! W2 with storage-less clients: the same closed-loop writers and fan-out as W2, but every
//! device is a hand-driven `SyncNode` over a `MemorySource` (no SQLite, no fsync, no `Device`
//! threads) on one shared client QUIC endpoint — the shape of the peers' W2 clients, which
//! keep nothing on disk. Devices still sign every change and verify every change they
//! receive; the relay is unchanged (fsynced `Saved`). This measures the relay, where the
//! `Device` version of W2 mostly measures 400 durable devices sharing the relay's 2 cores.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use homeroom_client::core::entries::{self};
use homeroom_client::core::roster::{self, Role};
use homeroom_client::core::{
    Actor, ClassId, DeviceKey, DocId, DocKind, FamilyId, MemberId, SeededIds,
};
use homeroom_protocol::{DEFAULT_MAX_FRAME, Message};
use homeroom_sync::{Limits, MemorySource, NodeEvent, Replica, SessionId, SyncNode};
use homeroom_transport::{FramedRecv, FramedSend, exporter};

use super::{Relay, Usage, client_endpoint, entry, now_ms, usage};

/// One W2-light run.
pub(crate) struct W2Light {
    pub classes: usize,
    pub parents_per_class: usize,
    pub edits: usize,
    pub secs: f64,
    /// Post → `Delivered` (the relay's `Saved`, after its fsync), sorted.
    pub lat: Vec<Duration>,
    /// The relay process over the timed run.
    pub usage: Usage,
    /// Writers that saw no `Delivered` within 10 s and stopped.
    pub stuck: usize,
    /// Parents that ended the run without every entry their teacher had delivered.
    pub parents_behind: usize,
}

/// A storage-less device on a live relay session.
struct Light {
    node: SyncNode,
    sid: SessionId,
    send: FramedSend,
    recv: FramedRecv,
    conn: quinn::Connection,
}

impl Light {
    fn node(secret: [u8; 32]) -> Result<SyncNode> {
        let replica = Replica::device(
            DeviceKey::from_secret(secret),
            secret[..8].try_into()?,
            Box::new(MemorySource::default()),
            Limits::default(),
        )?;
        Ok(SyncNode::new(replica))
    }

    async fn connect(
        mut node: SyncNode,
        ep: &quinn::Endpoint,
        addr: SocketAddr,
        fp: [u8; 32],
    ) -> Result<Self> {
        let conn =
            tokio::time::timeout(Duration::from_secs(20), ep.connect(addr, "homeroom-relay")?)
                .await
                .context("QUIC handshake timed out")??;
        let (s, r) = conn.open_bi().await?;
        let sid = node.connect(now_ms(), exporter(&conn)?, fp)?;
        Ok(Self {
            node,
            sid,
            send: FramedSend::new(s, DEFAULT_MAX_FRAME),
            recv: FramedRecv::new(r, DEFAULT_MAX_FRAME),
            conn,
        })
    }

    /// Complete the engine's writes (in memory: at once), send its messages; returns the
    /// events.
    async fn pump(&mut self, events: &mut Vec<NodeEvent>) -> Result<()> {
        loop {
            let mut busy = false;
            while let Some(w) = self.node.poll_write() {
                self.node.handle_write_done(w.id);
                busy = true;
            }
            while let Some((_, m)) = self.node.poll_transmit() {
                self.send.send(&m).await?;
                busy = true;
            }
            if let Some((_, reason)) = self.node.poll_close() {
                bail!("engine closed the session: {reason}");
            }
            while let Some(e) = self.node.poll_event() {
                events.push(e);
                busy = true;
            }
            if !busy {
                return Ok(());
            }
        }
    }

    /// Handle one incoming message (or time out after `wait`); `Ok(false)` on a timeout.
    async fn step(&mut self, wait: Duration, events: &mut Vec<NodeEvent>) -> Result<bool> {
        match tokio::time::timeout(wait, self.recv.recv()).await {
            Err(_) => {
                self.node.handle_timeout(now_ms());
                self.pump(events).await?;
                Ok(false)
            }
            Ok(Ok(Some(m))) => {
                if let Message::Error { detail, .. } = &m {
                    bail!("relay error: {detail}");
                }
                self.node.handle_message(now_ms(), self.sid, m)?;
                self.pump(events).await?;
                Ok(true)
            }
            Ok(Ok(None)) => bail!("relay finished the stream"),
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// Sync until nothing arrives for `quiet`.
    async fn settle(&mut self, quiet: Duration) -> Result<()> {
        let mut ev = Vec::new();
        self.pump(&mut ev).await?;
        let start = Instant::now();
        while self.step(quiet, &mut ev).await? {
            if start.elapsed() > Duration::from_secs(60) {
                bail!("no quiet moment within 60 s");
            }
        }
        Ok(())
    }

    fn entries(&mut self, class: ClassId) -> usize {
        use homeroom_client::core::automerge::{ROOT, ReadDoc, Value};
        match self.node.document(&DocId::new(class, DocKind::Notebook)) {
            Ok(am) => match am.get(ROOT, "entries") {
                Ok(Some((Value::Object(_), obj))) => am.keys(&obj).count(),
                _ => 0,
            },
            Err(_) => 0,
        }
    }
}

fn secret(run: u64, class: usize, i: usize) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"w2-light");
    h.update(&run.to_le_bytes());
    h.update(&(class as u64).to_le_bytes());
    h.update(&(i as u64).to_le_bytes());
    *h.finalize().as_bytes()
}

/// Found a class on a storage-less teacher, enrol `parents` keys, upload it all.
async fn setup_class(
    ep: &quinn::Endpoint,
    addr: SocketAddr,
    fp: [u8; 32],
    run: u64,
    c: usize,
    parents: usize,
) -> Result<(Light, ClassId, Vec<Light>)> {
    let mut node = Light::node(secret(run, c, 0))?;
    let now = now_ms();
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&run.to_le_bytes());
    nonce[8..].copy_from_slice(&(c as u64).to_le_bytes());
    let class = node.found_class(
        nonce,
        &format!("W2L class {c}"),
        MemberId([1; 8]),
        "Teacher",
        now,
    )?;
    let keys: Vec<_> = (1..=parents)
        .map(|i| DeviceKey::from_secret(secret(run, c, i)).device_id())
        .collect();
    node.edit(&DocId::new(class, DocKind::Roster), now, |tx, _, _| {
        for (i, key) in keys.iter().enumerate() {
            let fam = FamilyId((i as u64 + 1).to_le_bytes());
            let member = MemberId((i as u64 + 100).to_le_bytes());
            roster::add_family(tx, fam, &format!("Family {i}"))?;
            roster::add_member(
                tx,
                member,
                &format!("Parent {i}"),
                &[Role::Guardian],
                Some(fam),
            )?;
            roster::add_device(tx, *key, member, now)?;
        }
        Ok(())
    })?;
    let mut teacher = Light::connect(node, ep, addr, fp).await?;
    teacher.settle(Duration::from_millis(300)).await?;
    let mut ps = Vec::with_capacity(parents);
    for i in 1..=parents {
        let mut p = Light::connect(Light::node(secret(run, c, i))?, ep, addr, fp).await?;
        p.settle(Duration::from_millis(300)).await?;
        if p.node
            .document(&DocId::new(class, DocKind::Notebook))
            .is_err()
        {
            bail!("parent {i} of class {c} has no notebook after its first sync");
        }
        ps.push(p);
    }
    Ok((teacher, class, ps))
}

/// The closed-loop writer: post, wait for `Delivered`, repeat until `deadline`.
async fn write_loop(
    t: &mut Light,
    class: ClassId,
    seed: u64,
    deadline: Instant,
) -> Result<(Vec<Duration>, bool)> {
    let notebook = DocId::new(class, DocKind::Notebook);
    let mut ids = SeededIds::new(seed);
    let mut lat = Vec::new();
    let mut ev = Vec::new();
    let mut k = 0;
    while Instant::now() < deadline {
        k += 1;
        let t0 = Instant::now();
        let title = format!("Edit {k}");
        let now = now_ms();
        let (_, hash) = t.node.edit(&notebook, now, |tx, roster, device| {
            let actor = Actor::new(roster, device, now);
            entries::post_entry(tx, &actor, &mut ids, &entry(&title))
        })?;
        let Some(hash) = hash else {
            bail!("the post made no change");
        };
        ev.clear();
        t.pump(&mut ev).await?;
        let delivered = |ev: &[NodeEvent]| {
            ev.iter().any(|e| {
                matches!(e, NodeEvent::Delivered { doc, hashes } if *doc == notebook && hashes.contains(&hash))
            })
        };
        let limit = t0 + Duration::from_secs(10);
        while !delivered(&ev) {
            if Instant::now() > limit {
                return Ok((lat, true));
            }
            t.step(Duration::from_millis(100), &mut ev).await?;
        }
        lat.push(t0.elapsed());
    }
    Ok((lat, false))
}

/// A receiving parent: handle what arrives until `stop`.
async fn read_loop(p: &mut Light, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<()> {
    let mut ev = Vec::new();
    loop {
        tokio::select! {
            m = p.recv.recv() => match m? {
                Some(m) => {
                    p.node.handle_message(now_ms(), p.sid, m)?;
                    ev.clear();
                    p.pump(&mut ev).await?;
                }
                None => bail!("relay finished the stream"),
            },
            _ = stop.changed() => return Ok(()),
        }
    }
}

/// Run W2 with storage-less devices: `n` classes of one writer and `parents` readers each.
pub(crate) fn w2_light(
    rt: &tokio::runtime::Runtime,
    base: &Path,
    n: usize,
    parents: usize,
    secs: u64,
) -> Result<W2Light> {
    let relay = Relay::start(&base.join("relay"), None)?;
    let (addr, fp) = (relay.addr, relay.fingerprint);
    let run = now_ms() as u64;
    rt.block_on(async {
        let ep = client_endpoint(fp)?;
        // Classes are set up 16 at a time (each waits for quiet moments).
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
        let mut setups = tokio::task::JoinSet::new();
        for c in 0..n {
            let (ep, sem) = (ep.clone(), sem.clone());
            setups.spawn(async move {
                let _permit = sem.acquire_owned().await?;
                setup_class(&ep, addr, fp, run, c, parents).await
            });
        }
        let mut classes = Vec::with_capacity(n);
        while let Some(j) = setups.join_next().await {
            classes.push(j??);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = relay.snapshot();
        // Profilers attach at this line (docs/benchmarks.md, "Where Homeroom is behind").
        eprintln!("W2 light {n}: timed run of {secs} s starts");
        let start = Instant::now();
        let deadline = start + Duration::from_secs(secs);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut writers = tokio::task::JoinSet::new();
        let mut readers = tokio::task::JoinSet::new();
        for (c, (mut t, class, ps)) in classes.into_iter().enumerate() {
            writers.spawn(async move {
                let r = write_loop(&mut t, class, run ^ c as u64, deadline).await;
                (t, class, r)
            });
            for mut p in ps {
                let stop = stop_rx.clone();
                readers.spawn(async move {
                    let r = read_loop(&mut p, stop).await;
                    (p, class, r)
                });
            }
        }
        let mut lat = Vec::new();
        let mut stuck = 0;
        let mut expected = std::collections::HashMap::new();
        let mut teachers = Vec::new();
        while let Some(j) = writers.join_next().await {
            let (t, class, r) = j?;
            let (l, s) = r?;
            expected.insert(class, l.len());
            lat.extend(l);
            stuck += usize::from(s);
            teachers.push(t);
        }
        let elapsed = start.elapsed().as_secs_f64();
        let after = relay.snapshot();
        // Let the last fan-out land, then check every parent has what its teacher delivered.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = stop_tx.send(true);
        let mut parents_behind = 0;
        while let Some(j) = readers.join_next().await {
            let (mut p, class, r) = j?;
            r?;
            p.settle(Duration::from_millis(200)).await?;
            if p.entries(class) < expected.get(&class).copied().unwrap_or(0) {
                parents_behind += 1;
            }
            p.conn.close(0u32.into(), b"done");
        }
        for t in &teachers {
            t.conn.close(0u32.into(), b"done");
        }
        lat.sort();
        ep.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(5), ep.wait_idle()).await;
        Ok(W2Light {
            classes: n,
            parents_per_class: parents,
            edits: lat.len(),
            secs: elapsed,
            lat,
            usage: usage(before, after),
            stuck,
            parents_behind,
        })
    })
}
