//! # homeroom-sim
//!
//! A simulated network for Homeroom's sans-IO engine: one relay and many devices exchange
//! real encoded frames over simulated connections, with virtual time and a seeded RNG, so a
//! failing schedule replays exactly from its seed.
//!
//! Faults: latency and jitter per message (a connection stays ordered, like a QUIC stream),
//! random disconnects that lose what was in flight, partitions of chosen devices, crashes of
//! any node that lose every storage write not yet durable (the node restarts from its durable
//! storage only), and — for robustness runs — duplication and reordering inside a connection.
//!
//! Invariants checked while running: a relay never sends `Saved` for heads that are not in its
//! durable storage ([`Sim::violations`]).
#![warn(missing_docs, unreachable_pub)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use homeroom_core::automerge::{ActorId, Automerge, Change, ChangeHash};
use homeroom_core::roster::{self, Role};
use homeroom_core::{ClassId, DeviceId, DeviceKey, DocId, DocKind, FamilyId, MemberId, genesis};
use homeroom_protocol::{DEFAULT_MAX_FRAME, Decoded, FrameDecoder, Message, encode_frame};
use homeroom_sync::{
    Limits, MemorySource, NodeEvent, Replica, SessionId, StorageWrite, SyncNode, WriteId,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Network and disk behaviour of a simulation.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// One-way latency range in ms.
    pub latency_ms: (u64, u64),
    /// Probability that a message's connection breaks just before it (what was in flight is lost).
    pub disconnect_prob: f64,
    /// Probability that a message is delivered twice (robustness runs only).
    pub duplicate_prob: f64,
    /// Whether messages within a connection may overtake each other (robustness runs only).
    pub reorder: bool,
    /// Time for a storage write to become durable, in ms.
    pub fsync_ms: (u64, u64),
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            latency_ms: (5, 50),
            disconnect_prob: 0.0,
            duplicate_prob: 0.0,
            reorder: false,
            fsync_ms: (1, 10),
        }
    }
}

/// Index of a node in the simulation.
pub type NodeIx = usize;

/// A class founded in the simulation by [`Sim::found_class`].
#[derive(Debug, Clone)]
pub struct SimClass {
    /// The class.
    pub id: ClassId,
    /// The founding teacher's device.
    pub teacher: NodeIx,
    /// One guardian device per family, in order.
    pub families: Vec<(FamilyId, NodeIx)>,
}

struct SimNode {
    node: SyncNode,
    disk: MemorySource,
    key_secret: Option<[u8; 32]>,
    suffix: [u8; 8],
    /// Incremented on every crash: pending events of an older life are dropped.
    life: u64,
    up: bool,
    events: Vec<NodeEvent>,
}

#[derive(Debug)]
struct Conn {
    device: NodeIx,
    relay: NodeIx,
    device_sid: SessionId,
    relay_sid: SessionId,
    /// Latest scheduled delivery per direction (to keep order): [to device, to relay].
    last_at: [i64; 2],
    open: bool,
    lives: (u64, u64),
}

enum Ev {
    Deliver {
        conn: usize,
        to_relay: bool,
        frame: Vec<u8>,
    },
    Closed {
        conn: usize,
        to_relay: bool,
    },
    WriteDone {
        node: NodeIx,
        life: u64,
        write: StorageWrite,
    },
}

/// A simulated relay and devices.
pub struct Sim {
    /// The seed (printed by tests so a failure can be replayed).
    pub seed: u64,
    cfg: NetConfig,
    rng: SmallRng,
    now: i64,
    nodes: Vec<SimNode>,
    conns: Vec<Conn>,
    queue: BinaryHeap<Reverse<(i64, u64)>>,
    events: HashMap<u64, Ev>,
    seq: u64,
    partitioned: HashSet<NodeIx>,
    violations: Vec<String>,
    /// Per node, when its last scheduled write completes (writes complete in order, like one
    /// SQLite writer).
    disk_busy_until: HashMap<NodeIx, i64>,
    /// Per relay and document, the relay's disk as a document for the `Saved` check: the hashes
    /// of the stored changes it was built from, in order, and the document. Extended by what was
    /// written since the last check; rebuilt when stored changes were removed.
    disk_docs: HashMap<(NodeIx, DocId), (Vec<ChangeHash>, Automerge)>,
    /// Frames delivered (for cost figures).
    pub frames: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// Print every delivered message to stderr (debugging a seed).
    pub trace: bool,
}

impl Sim {
    /// A simulation starting at a fixed virtual epoch.
    pub fn new(seed: u64, cfg: NetConfig) -> Self {
        Self {
            seed,
            cfg,
            rng: SmallRng::seed_from_u64(seed),
            now: 1_700_000_000_000,
            nodes: Vec::new(),
            conns: Vec::new(),
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            partitioned: HashSet::new(),
            violations: Vec::new(),
            disk_busy_until: HashMap::new(),
            disk_docs: HashMap::new(),
            frames: 0,
            bytes: 0,
            trace: std::env::var_os("HOMEROOM_TRACE").is_some(),
        }
    }

    /// Change the network's behaviour from now on (e.g. a clean network to heal).
    pub fn set_net(&mut self, cfg: NetConfig) {
        self.cfg = cfg;
    }

    /// Virtual now (ms since the Unix epoch).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Invariant violations seen so far.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Add a relay.
    pub fn add_relay(&mut self) -> NodeIx {
        let disk = MemorySource::default();
        let node = build(None, [0; 8], &disk);
        self.nodes.push(SimNode {
            node,
            disk,
            key_secret: None,
            suffix: [0; 8],
            life: 0,
            up: true,
            events: Vec::new(),
        });
        self.nodes.len() - 1
    }

    /// Add a device with a key drawn from the simulation's RNG.
    pub fn add_device(&mut self) -> NodeIx {
        let secret: [u8; 32] = self.rng.random();
        let suffix: [u8; 8] = self.rng.random();
        let disk = MemorySource::default();
        let node = build(Some(secret), suffix, &disk);
        self.nodes.push(SimNode {
            node,
            disk,
            key_secret: Some(secret),
            suffix,
            life: 0,
            up: true,
            events: Vec::new(),
        });
        self.nodes.len() - 1
    }

    /// A new teacher device founds a class offline and enrols `families` families, each with
    /// one guardian and one new device (family `i` is `FamilyId(i + 1)`, its guardian
    /// `MemberId(i + 100)`), one roster change per family; the teacher's writes are settled.
    ///
    /// # Panics
    /// If the engine refuses the founding or an enrolment (a bug in the engine or the model).
    #[allow(clippy::expect_used)]
    pub fn found_class(&mut self, families: usize) -> SimClass {
        let teacher = self.add_device();
        let nonce = self.nonce();
        let now = self.now();
        let id = self
            .node(teacher)
            .found_class(nonce, "Class 3B", MemberId([1; 8]), "Ms Li", now)
            .expect("founding a class");
        let mut fams = Vec::with_capacity(families);
        for i in 0..families {
            let parent = self.add_device();
            let dev = self.device_id(parent).expect("a device has a key");
            let fam = FamilyId((i as u64 + 1).to_le_bytes());
            let member = MemberId((i as u64 + 100).to_le_bytes());
            let now = self.now();
            self.node(teacher)
                .edit(&DocId::new(id, DocKind::Roster), now, |tx, _, _| {
                    roster::add_family(tx, fam, &format!("Family {i}"))?;
                    roster::add_member(
                        tx,
                        member,
                        &format!("Parent {i}"),
                        &[Role::Guardian],
                        Some(fam),
                    )?;
                    roster::add_device(tx, dev, member, now)
                })
                .expect("enrolling a family");
            fams.push((fam, parent));
        }
        self.settle(teacher);
        SimClass {
            id,
            teacher,
            families: fams,
        }
    }

    /// The fan-out workload's post: `teacher` adds notebook entry `entry-{k}` (a title and a
    /// ~130-byte body) to `class` and settles its writes; the caller runs the network.
    ///
    /// # Panics
    /// If the engine refuses the edit (the teacher founded the class: a bug if it does).
    #[allow(clippy::expect_used)]
    pub fn post_homework(&mut self, teacher: NodeIx, class: ClassId, k: usize) {
        use homeroom_core::automerge::transaction::Transactable;
        use homeroom_core::automerge::{ObjType, ROOT, ReadDoc, Value};
        let now = self.now();
        self.node(teacher)
            .edit(
                &DocId::new(class, DocKind::Notebook),
                now,
                move |tx, _, _| {
                    let entries = match tx.get(ROOT, "entries")? {
                        Some((Value::Object(ObjType::Map), id)) => id,
                        _ => {
                            return Err(homeroom_core::ModelError::MissingGenesis {
                                map: "entries",
                            });
                        }
                    };
                    let e = tx.put_object(&entries, format!("entry-{k}"), ObjType::Map)?;
                    tx.put(&e, "title", format!("Homework for day {k}"))?;
                    tx.put(&e, "body", "Read pages 12-14 and sign below. ".repeat(4))?;
                    Ok(())
                },
            )
            .expect("the founding teacher posts to the notebook");
        self.settle(teacher);
    }

    /// A node's engine.
    pub fn node(&mut self, ix: NodeIx) -> &mut SyncNode {
        &mut self.nodes[ix].node
    }

    /// A device's id.
    pub fn device_id(&self, ix: NodeIx) -> Option<DeviceId> {
        self.nodes[ix]
            .key_secret
            .map(|s| DeviceKey::from_secret(s).device_id())
    }

    /// Events a node reported so far.
    pub fn events(&self, ix: NodeIx) -> &[NodeEvent] {
        &self.nodes[ix].events
    }

    /// Durable storage of a node.
    pub fn disk(&self, ix: NodeIx) -> &MemorySource {
        &self.nodes[ix].disk
    }

    /// A fresh random nonce (for founding classes).
    pub fn nonce(&mut self) -> [u8; 16] {
        self.rng.random()
    }

    /// Random bytes (for ids).
    pub fn random_u64(&mut self) -> u64 {
        self.rng.random()
    }

    /// Whether `device` has an open connection.
    pub fn is_connected(&self, device: NodeIx) -> bool {
        self.conns.iter().any(|c| c.open && c.device == device)
    }

    /// Open a connection from `device` to `relay` (if neither is down or partitioned).
    pub fn connect(&mut self, device: NodeIx, relay: NodeIx) -> bool {
        if !self.nodes[device].up || !self.nodes[relay].up || self.partitioned.contains(&device) {
            return false;
        }
        if self.is_connected(device) {
            return true;
        }
        let exporter: [u8; 32] = self.rng.random();
        let now = self.now;
        let relay_sid = self.nodes[relay].node.accept(now, exporter);
        let Ok(device_sid) = self.nodes[device].node.connect(now, exporter, [7; 32]) else {
            return false;
        };
        self.conns.push(Conn {
            device,
            relay,
            device_sid,
            relay_sid,
            last_at: [now, now],
            open: true,
            lives: (self.nodes[device].life, self.nodes[relay].life),
        });
        self.pump(device);
        self.pump(relay);
        true
    }

    /// Break a device's connection (both ends learn after one latency).
    pub fn disconnect(&mut self, device: NodeIx) {
        let ids: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].open && self.conns[i].device == device)
            .collect();
        for i in ids {
            self.break_conn(i, "link down");
        }
    }

    /// Cut a device off the network until [`Sim::heal`].
    pub fn partition(&mut self, device: NodeIx) {
        self.partitioned.insert(device);
        self.disconnect(device);
    }

    /// Undo every partition.
    pub fn heal(&mut self) {
        self.partitioned.clear();
    }

    /// Crash a node: its connections break and every write not yet durable is lost. It
    /// restarts at once from its durable storage.
    pub fn crash(&mut self, ix: NodeIx) {
        let ids: Vec<usize> = (0..self.conns.len())
            .filter(|&i| {
                self.conns[i].open && (self.conns[i].device == ix || self.conns[i].relay == ix)
            })
            .collect();
        for i in ids {
            self.break_conn(i, "peer crashed");
        }
        let n = &mut self.nodes[ix];
        n.life += 1;
        n.node = build(n.key_secret, n.suffix, &n.disk);
        // Re-mark local changes that were never acknowledged, as a device's store would.
        n.events.push(NodeEvent::SessionClosed {
            session: SessionId(0),
            reason: "crashed".into(),
        });
    }

    fn break_conn(&mut self, i: usize, why: &str) {
        if !self.conns[i].open {
            return;
        }
        self.conns[i].open = false;
        let lat = self.latency();
        for to_relay in [true, false] {
            self.schedule(self.now + lat, Ev::Closed { conn: i, to_relay });
        }
        let _ = why;
    }

    fn latency(&mut self) -> i64 {
        let (a, b) = self.cfg.latency_ms;
        i64::try_from(self.rng.random_range(a..=b.max(a))).unwrap_or(0)
    }

    fn schedule(&mut self, at: i64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, ev);
    }

    /// Drain a node's outputs into the simulated world.
    fn pump(&mut self, ix: NodeIx) {
        loop {
            let mut progressed = false;
            while let Some(w) = self.nodes[ix].node.poll_write() {
                progressed = true;
                let (a, b) = self.cfg.fsync_ms;
                let d = i64::try_from(self.rng.random_range(a..=b.max(a))).unwrap_or(0);
                let life = self.nodes[ix].life;
                let busy = self.disk_busy_until.get(&ix).copied().unwrap_or(i64::MIN);
                let at = (self.now + d).max(busy);
                self.disk_busy_until.insert(ix, at);
                self.schedule(
                    at,
                    Ev::WriteDone {
                        node: ix,
                        life,
                        write: w,
                    },
                );
            }
            while let Some((sid, msg)) = self.nodes[ix].node.poll_transmit() {
                progressed = true;
                if let Message::Saved { doc, heads } = &msg {
                    self.check_saved(ix, doc, heads);
                }
                self.send(ix, sid, &msg);
            }
            while let Some((sid, _reason)) = self.nodes[ix].node.poll_close() {
                progressed = true;
                if let Some(i) = self.conn_of(ix, sid) {
                    self.break_conn(i, "closed by engine");
                }
            }
            while let Some(ev) = self.nodes[ix].node.poll_event() {
                self.nodes[ix].events.push(ev);
            }
            if !progressed {
                break;
            }
        }
    }

    fn conn_of(&self, ix: NodeIx, sid: SessionId) -> Option<usize> {
        self.conns.iter().position(|c| {
            c.open
                && ((c.device == ix && c.device_sid == sid)
                    || (c.relay == ix && c.relay_sid == sid))
        })
    }

    fn send(&mut self, from: NodeIx, sid: SessionId, msg: &Message) {
        let Some(i) = self.conn_of(from, sid) else {
            return;
        };
        let to_relay = self.conns[i].device == from;
        if self.cfg.disconnect_prob > 0.0 && self.rng.random_bool(self.cfg.disconnect_prob) {
            self.break_conn(i, "random disconnect");
            return;
        }
        let Ok(frame) = encode_frame(msg, DEFAULT_MAX_FRAME) else {
            self.violations
                .push(format!("message too large to frame: {}", msg.kind()));
            return;
        };
        let lat = self.latency();
        let dir = usize::from(to_relay);
        let mut at = self.now + lat;
        if !self.cfg.reorder {
            at = at.max(self.conns[i].last_at[dir]);
            self.conns[i].last_at[dir] = at;
        }
        if self.cfg.duplicate_prob > 0.0 && self.rng.random_bool(self.cfg.duplicate_prob) {
            self.schedule(
                at + 1,
                Ev::Deliver {
                    conn: i,
                    to_relay,
                    frame: frame.clone(),
                },
            );
        }
        self.schedule(
            at,
            Ev::Deliver {
                conn: i,
                to_relay,
                frame,
            },
        );
    }

    fn check_saved(&mut self, relay: NodeIx, doc: &DocId, heads: &[[u8; 32]]) {
        // The relay's disk as a document (genesis plus every stored change, as `materialize`
        // builds it), kept between checks: rebuilding it for every `Saved` made this check cost
        // more than the engines it checks.
        let stored = self.nodes[relay]
            .disk
            .docs
            .get(doc)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let key = (relay, *doc);
        let reusable = self.disk_docs.get(&key).is_some_and(|(built, _)| {
            built.len() <= stored.len()
                && built
                    .iter()
                    .eq(stored[..built.len()].iter().map(|c| &c.hash))
        });
        if !reusable {
            let am = genesis::genesis_document(doc, ActorId::from(vec![1u8; 8]));
            self.disk_docs.insert(key, (Vec::new(), am));
        }
        let Some((built, am)) = self.disk_docs.get_mut(&key) else {
            return;
        };
        let mut new = Vec::with_capacity(stored.len() - built.len());
        for c in &stored[built.len()..] {
            match Change::try_from(c.bytes.as_slice()) {
                Ok(change) => new.push(change),
                Err(e) => {
                    self.violations
                        .push(format!("relay disk corrupt: stored change {}: {e}", c.hash));
                    self.disk_docs.remove(&key);
                    return;
                }
            }
        }
        built.extend(stored[built.len()..].iter().map(|c| c.hash));
        if let Err(e) = am.apply_changes(new) {
            self.violations.push(format!("relay disk corrupt: {e}"));
            self.disk_docs.remove(&key);
            return;
        }
        for h in heads {
            let h = ChangeHash(*h);
            if h != genesis::genesis_hash(doc) && am.get_change_meta_by_hash(&h).is_none() {
                self.violations.push(format!(
                    "Saved({doc}) names {h} which is not on the relay's disk"
                ));
            }
        }
    }

    /// Process the next scheduled event. Returns false when nothing is left.
    pub fn step(&mut self) -> bool {
        let Some(Reverse((at, seq))) = self.queue.pop() else {
            return false;
        };
        self.now = self.now.max(at);
        let Some(ev) = self.events.remove(&seq) else {
            return true;
        };
        match ev {
            Ev::WriteDone { node, life, write } => {
                if self.nodes[node].life != life {
                    return true; // crashed before the write was durable: lost
                }
                self.nodes[node].disk.apply(&write);
                let id: WriteId = write.id;
                self.nodes[node].node.handle_write_done(id);
                self.pump(node);
            }
            Ev::Deliver {
                conn,
                to_relay,
                frame,
            } => {
                let c = &self.conns[conn];
                if !c.open {
                    return true;
                }
                let (ix, sid) = if to_relay {
                    (c.relay, c.relay_sid)
                } else {
                    (c.device, c.device_sid)
                };
                let (dl, rl) = c.lives;
                let (c_device, c_relay) = (c.device, c.relay);
                if self.nodes[c.device].life != dl || self.nodes[c.relay].life != rl {
                    return true;
                }
                self.frames += 1;
                self.bytes += frame.len() as u64;
                let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
                dec.push(&frame);
                match dec.next_message() {
                    Ok(Decoded::Message(msg)) => {
                        let now = self.now;
                        if self.trace {
                            let from = if to_relay { c_device } else { c_relay };
                            eprintln!("t={} conn{conn} {from} -> {ix} {}", now, describe(&msg));
                        }
                        if let Err(e) = self.nodes[ix].node.handle_message(now, sid, msg) {
                            self.violations
                                .push(format!("engine error at node {ix}: {e}"));
                        }
                    }
                    other => self
                        .violations
                        .push(format!("frame did not decode: {other:?}")),
                }
                self.pump(ix);
            }
            Ev::Closed { conn, to_relay } => {
                let c = &self.conns[conn];
                let (ix, sid, life) = if to_relay {
                    (c.relay, c.relay_sid, c.lives.1)
                } else {
                    (c.device, c.device_sid, c.lives.0)
                };
                if self.nodes[ix].life == life {
                    self.nodes[ix].node.handle_closed(sid, "connection closed");
                    self.pump(ix);
                }
            }
        }
        true
    }

    /// Run until nothing is scheduled or `max_ms` of virtual time passed.
    pub fn run_for(&mut self, max_ms: i64) {
        let end = self.now + max_ms;
        while let Some(Reverse((at, _))) = self.queue.peek() {
            if *at > end {
                break;
            }
            if !self.step() {
                break;
            }
        }
        self.now = self.now.max(end);
    }

    /// Run until quiet (no event left), bounded by `max_ms` of virtual time. Returns whether it
    /// became quiet.
    pub fn run_until_quiet(&mut self, max_ms: i64) -> bool {
        let end = self.now + max_ms;
        while let Some(Reverse((at, _))) = self.queue.peek() {
            if *at > end {
                return false;
            }
            self.step();
        }
        true
    }

    /// Let node `ix` act (e.g. after an edit): drain its outputs.
    pub fn settle(&mut self, ix: NodeIx) {
        self.pump(ix);
    }

    /// Heads of a document on a node (loads it).
    pub fn heads(&mut self, ix: NodeIx, doc: &DocId) -> Vec<ChangeHash> {
        let mut h = self.nodes[ix]
            .node
            .document(doc)
            .map(|d| d.get_heads())
            .unwrap_or_default();
        h.sort();
        h
    }

    /// Whether a change is on a node's durable storage.
    pub fn durable_has(&self, ix: NodeIx, doc: &DocId, hash: &ChangeHash) -> bool {
        self.nodes[ix]
            .disk
            .docs
            .get(doc)
            .is_some_and(|v| v.iter().any(|c| c.hash == *hash))
    }

    /// All documents with changes on a node's disk.
    pub fn durable_docs(&self, ix: NodeIx) -> BTreeMap<DocId, usize> {
        self.nodes[ix]
            .disk
            .docs
            .iter()
            .map(|(d, v)| (*d, v.len()))
            .collect()
    }
}

fn build(secret: Option<[u8; 32]>, suffix: [u8; 8], disk: &MemorySource) -> SyncNode {
    let source = Box::new(disk.clone());
    let replica = match secret {
        Some(s) => Replica::device(DeviceKey::from_secret(s), suffix, source, Limits::default()),
        None => Replica::relay(source, Limits::default()),
    };
    match replica {
        Ok(r) => {
            let mut node = SyncNode::new(r);
            // Restore delivery tracking the way a device store would: everything on the device's
            // disk that the device authored counts as undelivered until the relay says otherwise.
            if let Some(s) = secret {
                let me = DeviceKey::from_secret(s).device_id();
                for (doc, changes) in &disk.docs {
                    let mine: Vec<ChangeHash> = changes
                        .iter()
                        .filter(|c| c.author == me)
                        .map(|c| c.hash)
                        .collect();
                    let _ = node.replica_mut().set_undelivered(doc, mine);
                }
            }
            node
        }
        // A simulation's in-memory disk cannot be unreadable; fail loudly in tests if it is.
        Err(e) => panic!("rebuilding a simulated node failed: {e}"),
    }
}

fn describe(msg: &Message) -> String {
    match msg {
        Message::Sync {
            doc,
            payload,
            signatures,
        } => {
            let detail = homeroom_core::automerge::sync::Message::decode(payload)
                .map(|m| {
                    format!(
                        "heads={} need={} have={} changes={} v={:?}",
                        m.heads.len(),
                        m.need.len(),
                        m.have.len(),
                        m.changes.len(),
                        m.version
                    )
                })
                .unwrap_or_default();
            format!("sync {doc} sigs={} {detail}", signatures.len())
        }
        Message::Saved { doc, heads } => format!("saved {doc} {}", heads.len()),
        Message::Reject {
            doc,
            changes,
            reason,
        } => format!("reject {doc} {} {reason:?}", changes.len()),
        other => other.kind().to_string(),
    }
}
