//! The hub: the one place the relay's [`SyncNode`] lives.
//!
//! The hub runs on a dedicated OS thread (with a small single-threaded tokio runtime for its
//! channels and timer), because the engine does CPU work — Automerge, signature checks — and
//! synchronous SQLite reads that must not stall the network tasks. Everything reaches it as a
//! [`HubInput`] on one bounded channel (connection opened, message received, connection
//! closed, shutdown), plus the writer's "these writes are durable" reports on a channel of
//! their own, served first. After every input it drains the node's outputs in the order the
//! engine documents (`homeroom_sync::SyncNode`):
//!
//! 1. `poll_write` → the writer thread (group commit; `Saved` follows only once durable);
//! 2. `poll_transmit` → the session's bounded outbound queue. A queue that is full means the
//!    device does not read fast enough: that connection is closed at once and logged, so a
//!    slow or hostile client cannot make the relay buffer without bound;
//! 3. `poll_close` → the connection sends what was queued, then closes;
//! 4. `poll_event` → logs (sessions at info with the device's short id, misbehaviour and
//!    rejected changes at warn).
//!
//! It then re-arms its timer from `poll_timeout` (handshake deadlines); `now` is always
//! milliseconds since the Unix epoch.
//!
//! **Memory policy.** A document stays in memory while at least one open session has exchanged
//! sync messages for it; when the last such session closes, the document is evicted
//! ([`homeroom_sync::Replica::evict`]) — at once, or as soon as its in-flight writes are
//! durable. Rosters always stay (they decide every access), so an idle relay holds the rosters
//! and nothing else.
//!
//! **Shutdown.** On [`HubInput::Shutdown`] every session gets `Error { ShuttingDown }` and is
//! closed; closing persists its Automerge sync states (writes like any other). The hub keeps
//! running until every write it handed out is reported durable, then drops the writer's queue
//! (which ends the writer thread) and stops.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use homeroom_core::{DeviceId, DocId, DocKind};
use homeroom_protocol::{ErrorCode, Message};
use homeroom_sync::{NodeEvent, SessionId, StorageWrite, SyncError, SyncNode, WriteId};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::connection::{Kill, Outbound, close_code};

/// Capacity of the hub's input channel. A connection task waits for room before forwarding a
/// frame, so a busy hub slows readers down (QUIC flow control then slows the devices) rather
/// than buffering: at most this many decoded frames wait for the hub.
const INBOX_CAPACITY: usize = 256;

/// Identifies a connection task (assigned by the accept loop, before the engine's session id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnId(pub(crate) u64);

/// What connection tasks and the server tell the hub.
#[derive(Debug)]
pub(crate) enum HubInput {
    /// A connection completed its QUIC handshake and opened its stream.
    Opened {
        /// The connection.
        conn: ConnId,
        /// The peer's address, for logs.
        addr: SocketAddr,
        /// The TLS exporter value the device must sign in `Hello`.
        exporter: [u8; 32],
        /// Where to queue messages for this connection.
        outbound: mpsc::Sender<Outbound>,
        /// Closes the connection immediately when used.
        kill: oneshot::Sender<Kill>,
    },
    /// A decoded message from a connection.
    Received {
        /// The connection.
        conn: ConnId,
        /// The message.
        msg: Message,
    },
    /// A connection ended (for any reason).
    Closed {
        /// The connection.
        conn: ConnId,
        /// Why, for logs.
        reason: String,
    },
    /// Close every session, make every write durable, then stop; `done` is answered then.
    Shutdown {
        /// Answered once every write is durable.
        done: oneshot::Sender<()>,
    },
}

/// Why the hub stopped other than by a requested shutdown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The writer thread ended while writes were expected: acknowledgements cannot be given.
    #[error("the storage writer stopped unexpectedly")]
    WriterStopped,
    /// The hub stopped although no shutdown was requested.
    #[error("the hub stopped unexpectedly")]
    Stopped,
    /// The hub's runtime could not be built.
    #[error("cannot start the hub runtime")]
    Runtime(#[source] std::io::Error),
    /// The hub thread panicked (a bug); acknowledged data is on disk, restart the relay.
    #[error("the hub thread panicked")]
    Panicked,
}

/// The server's end of the hub.
#[derive(Debug)]
pub(crate) struct HubHandle {
    /// Inputs for the hub.
    pub(crate) inbox: mpsc::Sender<HubInput>,
    /// Answered when the hub thread ends, with how it ended.
    pub(crate) exited: oneshot::Receiver<Result<(), HubError>>,
    /// The hub thread.
    pub(crate) thread: JoinHandle<()>,
}

/// Start the hub thread around `node`. `writes` is the writer's queue; `durable` its reports.
pub(crate) fn spawn(
    node: SyncNode,
    writes: std::sync::mpsc::Sender<StorageWrite>,
    durable: mpsc::UnboundedReceiver<Vec<WriteId>>,
    outbound_queue: usize,
    notifier: Option<crate::webhook::Notifier>,
) -> std::io::Result<HubHandle> {
    let (inbox, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
    let (exit_tx, exited) = oneshot::channel();
    let (ready_tx, ready) = std::sync::mpsc::sync_channel::<()>(1);
    let thread = thread::Builder::new()
        .name("homeroom-hub".into())
        .spawn(move || {
            let result = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => {
                    let mut hub = Hub::new(node, writes, outbound_queue);
                    hub.notifier = notifier;
                    let metrics = crate::metrics::global();
                    metrics.set_classes(hub.node.replica().classes().len());
                    metrics.set_hub_running(true);
                    let _ = ready_tx.send(());
                    let result = rt.block_on(hub.run(inbox_rx, durable));
                    metrics.set_hub_running(false);
                    result
                }
                Err(e) => Err(HubError::Runtime(e)),
            };
            let _ = exit_tx.send(result);
        })?;
    // Return once the hub runs, so that a relay that reports "listening" also reports healthy
    // (`/healthz`). If the hub could not start, its sender is gone and the error waits in
    // `exited`.
    let _ = ready.recv();
    Ok(HubHandle {
        inbox,
        exited,
        thread,
    })
}

/// Milliseconds since the Unix epoch: the engine's `now`.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One registered connection.
#[derive(Debug)]
struct Peer {
    conn: ConnId,
    addr: SocketAddr,
    /// The authenticated device, once the handshake completed.
    device: Option<DeviceId>,
    outbound: mpsc::Sender<Outbound>,
    kill: Option<oneshot::Sender<Kill>>,
    /// Documents this session exchanged sync messages for (eviction policy).
    docs: HashSet<DocId>,
}

impl Peer {
    fn device_short(&self) -> String {
        self.device.map_or_else(|| "-".to_string(), |d| d.short())
    }
}

/// The queue was full: the connection must be closed as too slow.
struct QueueFull;

impl Peer {
    /// Queue `item`. A connection whose task already ended counts as sent: its `Closed` input
    /// is on its way.
    fn push(&self, item: Outbound) -> Result<(), QueueFull> {
        match self.outbound.try_send(item) {
            Ok(()) | Err(TrySendError::Closed(_)) => Ok(()),
            Err(TrySendError::Full(_)) => Err(QueueFull),
        }
    }
}

struct Hub {
    node: SyncNode,
    writes: std::sync::mpsc::Sender<StorageWrite>,
    outbound_queue: usize,
    peers: HashMap<SessionId, Peer>,
    by_conn: HashMap<ConnId, SessionId>,
    /// Sessions that exchanged sync messages per document.
    followers: HashMap<DocId, HashSet<SessionId>>,
    /// Documents nobody follows that could not be evicted yet (writes in flight).
    evict_later: HashSet<DocId>,
    /// Set once shutdown began; answered when every write is durable.
    stopping: Option<Option<oneshot::Sender<()>>>,
    /// The notification webhook, when configured.
    notifier: Option<crate::webhook::Notifier>,
    /// The device whose message is being handled (the author of `DocumentChanged`).
    sender: Option<DeviceId>,
}

impl Hub {
    fn new(
        node: SyncNode,
        writes: std::sync::mpsc::Sender<StorageWrite>,
        outbound_queue: usize,
    ) -> Self {
        Self {
            node,
            writes,
            outbound_queue,
            peers: HashMap::new(),
            by_conn: HashMap::new(),
            followers: HashMap::new(),
            evict_later: HashSet::new(),
            stopping: None,
            notifier: None,
            sender: None,
        }
    }

    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<HubInput>,
        mut durable: mpsc::UnboundedReceiver<Vec<WriteId>>,
    ) -> Result<(), HubError> {
        let mut inbox_open = true;
        loop {
            let wake = self.node.poll_timeout().map(deadline);
            tokio::select! {
                biased;
                ids = durable.recv() => match ids {
                    Some(ids) => self.on_durable(&ids),
                    None => {
                        tracing::error!(
                            pending = self.node.replica().has_pending_writes(),
                            "storage writer stopped: no further change can be acknowledged"
                        );
                        return Err(HubError::WriterStopped);
                    }
                },
                input = inbox.recv(), if inbox_open => match input {
                    Some(input) => self.on_input(input),
                    None => {
                        // Every sender is gone: nobody can ask for a shutdown any more.
                        inbox_open = false;
                        self.begin_shutdown(None);
                    }
                },
                () = sleep_until(wake), if wake.is_some() => self.node.handle_timeout(now_ms()),
            }
            self.drain();
            self.sender = None;
            if self.stopping.is_some() && !self.node.replica().has_pending_writes() {
                tracing::info!("shutdown: every write is durable");
                if let Some(Some(done)) = self.stopping.take() {
                    let _ = done.send(());
                }
                return Ok(());
            }
        }
    }

    fn on_input(&mut self, input: HubInput) {
        let now = now_ms();
        match input {
            HubInput::Opened {
                conn,
                addr,
                exporter,
                outbound,
                kill,
            } => {
                if self.stopping.is_some() {
                    let _ = outbound.try_send(Outbound::Message(Box::new(shutting_down())));
                    let _ = outbound.try_send(Outbound::Close(close_code::SHUTTING_DOWN));
                    return;
                }
                let sid = self.node.accept(now, exporter);
                tracing::debug!(session = %sid, conn = conn.0, peer = %addr, "session opened");
                self.by_conn.insert(conn, sid);
                self.peers.insert(
                    sid,
                    Peer {
                        conn,
                        addr,
                        device: None,
                        outbound,
                        kill: Some(kill),
                        docs: HashSet::new(),
                    },
                );
            }
            HubInput::Received { conn, msg } => {
                let Some(&sid) = self.by_conn.get(&conn) else {
                    return;
                };
                if let Message::Sync { doc, .. } = &msg {
                    self.follow(sid, *doc);
                }
                self.sender = self.peers.get(&sid).and_then(|p| p.device);
                match self.node.handle_message(now, sid, msg) {
                    Ok(()) | Err(SyncError::NoSuchSession(_)) => {}
                    Err(e) => {
                        tracing::error!(session = %sid, error = %e, "engine failed on a message");
                        let msg = Message::Error {
                            code: ErrorCode::Internal,
                            detail: "internal error; retry later".into(),
                            fatal: true,
                        };
                        self.close_session(sid, close_code::INTERNAL, Some(msg), &e.to_string());
                    }
                }
            }
            HubInput::Closed { conn, reason } => {
                let Some(sid) = self.by_conn.get(&conn).copied() else {
                    return;
                };
                self.finish_session(sid, &reason);
            }
            HubInput::Shutdown { done } => self.begin_shutdown(Some(done)),
        }
    }

    fn begin_shutdown(&mut self, done: Option<oneshot::Sender<()>>) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(done);
        tracing::info!(sessions = self.peers.len(), "shutdown: closing sessions");
        let sids: Vec<SessionId> = self.peers.keys().copied().collect();
        for sid in sids {
            self.close_session(
                sid,
                close_code::SHUTTING_DOWN,
                Some(shutting_down()),
                "relay shutting down",
            );
        }
        // The sync states of the closed sessions are now queued: `drain` hands them over.
        tracing::info!("shutdown: flushing pending writes");
    }

    fn on_durable(&mut self, ids: &[WriteId]) {
        for id in ids {
            self.node.handle_write_done(*id);
        }
        if !self.evict_later.is_empty() {
            let docs: Vec<DocId> = self.evict_later.drain().collect();
            for doc in docs {
                if !self.followers.contains_key(&doc) {
                    self.try_evict(doc);
                }
            }
        }
    }

    /// Drain the node's outputs in the documented order until it has nothing more.
    fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(write) = self.node.poll_write() {
                progressed = true;
                if self.writes.send(write).is_err() {
                    // The writer thread is gone; the `durable` channel reports it and the hub
                    // stops. The write is not acknowledged (it never will be).
                    tracing::error!("storage writer unavailable: write not queued");
                }
            }
            while let Some((sid, msg)) = self.node.poll_transmit() {
                progressed = true;
                self.route(sid, msg);
            }
            while let Some((sid, reason)) = self.node.poll_close() {
                progressed = true;
                let code = if reason.starts_with("NotEnrolled") {
                    close_code::REMOVED
                } else {
                    close_code::PROTOCOL_ERROR
                };
                self.close_session(sid, code, None, &reason);
            }
            while let Some(event) = self.node.poll_event() {
                self.log_event(event);
            }
            if !progressed {
                break;
            }
        }
        crate::metrics::global().set_documents_open(self.followers.len());
    }

    fn route(&mut self, sid: SessionId, msg: Message) {
        let doc = match &msg {
            Message::Sync { doc, .. } => Some(*doc),
            _ => None,
        };
        let Some(peer) = self.peers.get(&sid) else {
            tracing::trace!(session = %sid, kind = msg.kind(), "message for a closed session dropped");
            return;
        };
        if peer.push(Outbound::Message(Box::new(msg))).is_err() {
            self.too_slow(sid);
            return;
        }
        if let Some(doc) = doc {
            self.follow(sid, doc);
        }
    }

    /// The session's outbound queue is full: close its connection at once.
    fn too_slow(&mut self, sid: SessionId) {
        let Some(mut peer) = self.remove_peer(sid) else {
            return;
        };
        crate::metrics::global().slow_disconnect();
        tracing::warn!(
            session = %sid,
            device = %peer.device_short(),
            peer = %peer.addr,
            queue = self.outbound_queue,
            "outbound queue full: closing slow connection"
        );
        if let Some(kill) = peer.kill.take() {
            let _ = kill.send(Kill {
                code: close_code::TOO_SLOW,
                reason: "too slow: outbound queue full".into(),
            });
        }
        self.node.handle_closed(sid, "outbound queue full");
        self.release(sid, &peer);
    }

    /// Close a session from the relay's side: queue `last` (if any), then the close order;
    /// the engine forgets the session now (persisting its sync states).
    fn close_session(&mut self, sid: SessionId, code: u32, last: Option<Message>, reason: &str) {
        let Some(peer) = self.peers.get(&sid) else {
            return;
        };
        let queued = match last {
            Some(msg) => peer.push(Outbound::Message(Box::new(msg))),
            None => Ok(()),
        }
        .and_then(|()| peer.push(Outbound::Close(code)));
        if queued.is_err() {
            self.too_slow(sid);
            return;
        }
        self.finish_session(sid, reason);
    }

    /// The session is over: tell the engine, log, release its documents.
    fn finish_session(&mut self, sid: SessionId, reason: &str) {
        let Some(peer) = self.remove_peer(sid) else {
            return;
        };
        self.node.handle_closed(sid, reason);
        tracing::info!(
            session = %sid,
            device = %peer.device_short(),
            peer = %peer.addr,
            %reason,
            "session closed"
        );
        self.release(sid, &peer);
    }

    fn remove_peer(&mut self, sid: SessionId) -> Option<Peer> {
        let peer = self.peers.remove(&sid)?;
        self.by_conn.remove(&peer.conn);
        Some(peer)
    }

    fn follow(&mut self, sid: SessionId, doc: DocId) {
        if let Some(peer) = self.peers.get_mut(&sid) {
            peer.docs.insert(doc);
            self.followers.entry(doc).or_default().insert(sid);
            self.evict_later.remove(&doc);
        }
    }

    /// Forget `peer`'s documents; evict those nobody else follows.
    fn release(&mut self, sid: SessionId, peer: &Peer) {
        for doc in &peer.docs {
            let unfollowed = match self.followers.get_mut(doc) {
                Some(set) => {
                    set.remove(&sid);
                    set.is_empty()
                }
                None => true,
            };
            if unfollowed {
                self.followers.remove(doc);
                self.try_evict(*doc);
            }
        }
    }

    fn try_evict(&mut self, doc: DocId) {
        if doc.kind == DocKind::Roster {
            return;
        }
        self.node.replica_mut().evict(&doc);
        if self.node.replica().is_loaded(&doc) {
            // Writes of it are in flight; retried when writes become durable.
            self.evict_later.insert(doc);
        } else {
            tracing::debug!(%doc, "document evicted from memory");
        }
    }

    fn log_event(&mut self, event: NodeEvent) {
        match event {
            NodeEvent::SessionEstablished { session, peer } => {
                let Some(p) = self.peers.get_mut(&session) else {
                    return;
                };
                p.device = peer;
                crate::metrics::global().session_established();
                tracing::info!(
                    session = %session,
                    device = %p.device_short(),
                    peer = %p.addr,
                    "session established"
                );
            }
            NodeEvent::SessionClosed { session, reason } => {
                tracing::debug!(session = %session, %reason, "engine closed session");
            }
            NodeEvent::PeerMisbehaved { session, detail } => {
                let (device, addr) = self.peers.get(&session).map_or_else(
                    || ("-".to_string(), "-".to_string()),
                    |p| (p.device_short(), p.addr.to_string()),
                );
                tracing::warn!(
                    session = %session,
                    %device,
                    peer = %addr,
                    %detail,
                    "peer misbehaved"
                );
            }
            NodeEvent::Rejected {
                doc,
                hashes,
                reason,
                ..
            } => {
                crate::metrics::global().rejected(&format!("{reason:?}"), hashes.len());
                tracing::warn!(%doc, changes = hashes.len(), ?reason, "changes rejected");
            }
            NodeEvent::ClassAdded { class } => {
                crate::metrics::global().set_classes(self.node.replica().classes().len());
                tracing::info!(%class, "class added");
            }
            NodeEvent::RosterChanged { class } => tracing::info!(%class, "roster changed"),
            NodeEvent::JoinRefused { class, reason } => {
                crate::metrics::global().rejected(&format!("{reason:?}"), 1);
                tracing::warn!(%class, ?reason, "join refused");
            }
            NodeEvent::InviteNotFound { invite } => {
                // A short code no roster holds (a typo past the check, a withdrawn invite, or
                // someone guessing): logged and counted like a refused join.
                crate::metrics::global().rejected("InviteUnknown", 1);
                tracing::warn!(%invite, "invite lookup found no class");
            }
            NodeEvent::DocumentChanged { doc } => {
                tracing::debug!(%doc, "document changed");
                if let Some(notifier) = &self.notifier {
                    let replica = self.node.replica();
                    if let Some(roster) = replica.roster(&doc.class) {
                        let content = replica.loaded_document(&doc);
                        notifier.document_changed(roster, doc, content, self.sender, now_ms());
                    }
                }
            }
            other => tracing::debug!(event = ?other, "engine event"),
        }
    }
}

/// The `Error` sent to every device when the relay stops.
fn shutting_down() -> Message {
    Message::Error {
        code: ErrorCode::ShuttingDown,
        detail: "relay shutting down; reconnect later".into(),
        fatal: true,
    }
}

/// The instant at which the engine's deadline `at` (ms since the Unix epoch) falls.
fn deadline(at: i64) -> Instant {
    // Capped at a day so a clock jump cannot overflow the instant.
    let wait = u64::try_from(at.saturating_sub(now_ms()))
        .unwrap_or(0)
        .min(86_400_000);
    Instant::now() + Duration::from_millis(wait)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use homeroom_core::automerge::transaction::Transactable;
    use homeroom_core::automerge::{ObjType, ROOT, ReadDoc, Value};
    use homeroom_core::{ClassId, DeviceKey, MemberId, ModelError};
    use homeroom_sync::{Limits, MemorySource, Replica};

    use super::*;

    const ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 9);

    /// A hub over an in-memory relay, with nobody draining what it produces.
    fn hub(queue: usize) -> (Hub, std::sync::mpsc::Receiver<StorageWrite>) {
        hub_with(queue, Limits::default())
    }

    fn hub_with(queue: usize, limits: Limits) -> (Hub, std::sync::mpsc::Receiver<StorageWrite>) {
        let relay = Replica::relay(Box::new(MemorySource::default()), limits).unwrap();
        let (writes, rx) = std::sync::mpsc::channel();
        (Hub::new(SyncNode::new(relay), writes, queue), rx)
    }

    fn device(secret: u8) -> SyncNode {
        let key = DeviceKey::from_secret([secret; 32]);
        let replica = Replica::device(
            key,
            [secret; 8],
            Box::new(MemorySource::default()),
            Limits::default(),
        )
        .unwrap();
        SyncNode::new(replica)
    }

    /// A connection registered with the hub: its outbound queue and kill switch.
    fn open(
        hub: &mut Hub,
        conn: u64,
        queue: usize,
    ) -> (mpsc::Receiver<Outbound>, oneshot::Receiver<Kill>) {
        let (outbound, out_rx) = mpsc::channel(queue);
        let (kill, kill_rx) = oneshot::channel();
        hub.on_input(HubInput::Opened {
            conn: ConnId(conn),
            addr: SocketAddr::from(ADDR),
            exporter: [conn as u8; 32],
            outbound,
            kill,
        });
        hub.drain();
        (out_rx, kill_rx)
    }

    /// Exchange messages between `dev` and the hub (connection `conn`) until both are quiet,
    /// making every relay write durable as the writer would.
    fn exchange(
        hub: &mut Hub,
        writes: &std::sync::mpsc::Receiver<StorageWrite>,
        conn: u64,
        dev: &mut SyncNode,
        dsid: SessionId,
        out: &mut mpsc::Receiver<Outbound>,
    ) {
        loop {
            let mut progressed = false;
            while let Some((_, msg)) = dev.poll_transmit() {
                progressed = true;
                hub.on_input(HubInput::Received {
                    conn: ConnId(conn),
                    msg,
                });
                hub.drain();
            }
            while let Some(w) = dev.poll_write() {
                progressed = true;
                dev.handle_write_done(w.id);
            }
            while let Ok(w) = writes.try_recv() {
                progressed = true;
                hub.on_durable(&[w.id]);
                hub.drain();
            }
            while let Ok(Outbound::Message(msg)) = out.try_recv() {
                progressed = true;
                dev.handle_message(now_ms(), dsid, *msg).unwrap();
            }
            if !progressed {
                return;
            }
        }
    }

    #[test]
    fn a_full_outbound_queue_closes_only_that_connection() {
        let (mut hub, _writes) = hub(1);
        let (mut slow_out, mut slow_kill) = open(&mut hub, 1, 1);
        let (mut ok_out, mut ok_kill) = open(&mut hub, 2, 8);

        // Each device says Hello; the relay answers Welcome + Catalog (two messages).
        for (conn, secret) in [(1u64, 1u8), (2, 2)] {
            let mut dev = device(secret);
            dev.connect(now_ms(), [conn as u8; 32], [0; 32]).unwrap();
            let (_, hello) = dev.poll_transmit().unwrap();
            hub.on_input(HubInput::Received {
                conn: ConnId(conn),
                msg: hello,
            });
            hub.drain();
        }

        // The queue of one took the Welcome; the Catalog did not fit: killed as too slow.
        assert!(matches!(
            slow_out.try_recv(),
            Ok(Outbound::Message(m)) if matches!(*m, Message::Welcome { .. })
        ));
        let kill = slow_kill.try_recv().unwrap();
        assert_eq!(kill.code, close_code::TOO_SLOW);
        // The other connection is untouched.
        assert!(matches!(
            ok_out.try_recv(),
            Ok(Outbound::Message(m)) if matches!(*m, Message::Welcome { .. })
        ));
        assert!(matches!(
            ok_out.try_recv(),
            Ok(Outbound::Message(m)) if matches!(*m, Message::Catalog { .. })
        ));
        assert!(ok_kill.try_recv().is_err());
        assert_eq!(hub.node.session_count(), 1);
        assert_eq!(hub.peers.len(), 1);
        // A late message from the killed connection is ignored.
        hub.on_input(HubInput::Closed {
            conn: ConnId(1),
            reason: "gone".into(),
        });
        assert_eq!(hub.node.session_count(), 1);
    }

    fn top(tx: &impl ReadDoc, key: &str) -> Result<homeroom_core::automerge::ObjId, ModelError> {
        match tx.get(ROOT, key)? {
            Some((Value::Object(ObjType::Map), id)) => Ok(id),
            _ => Err(ModelError::MissingGenesis { map: "test" }),
        }
    }

    #[test]
    fn documents_nobody_follows_are_evicted_rosters_stay() {
        let (mut hub, writes) = hub(64);
        let mut dev = device(7);
        let class: ClassId = dev
            .found_class([9; 16], "Class 3B", MemberId([1; 8]), "Ms Li", now_ms())
            .unwrap();
        let notebook = DocId::new(class, DocKind::Notebook);
        let roster = DocId::new(class, DocKind::Roster);
        dev.edit(&notebook, now_ms(), |tx, _, _| {
            let entries = top(tx, "entries")?;
            tx.put(&entries, "e1", "homework: page 12")?;
            Ok(())
        })
        .unwrap();

        let (mut out, _kill) = open(&mut hub, 1, 64);
        let dsid = dev.connect(now_ms(), [1; 32], [0; 32]).unwrap();
        exchange(&mut hub, &writes, 1, &mut dev, dsid, &mut out);
        assert!(
            dev.replica().undelivered().is_empty(),
            "roster and notebook are durable on the relay"
        );
        assert!(hub.node.replica().is_loaded(&notebook));

        hub.on_input(HubInput::Closed {
            conn: ConnId(1),
            reason: "bye".into(),
        });
        hub.drain();
        // The closed session's sync states are a write: make it durable.
        while let Ok(w) = writes.try_recv() {
            hub.on_durable(&[w.id]);
        }
        assert_eq!(hub.node.session_count(), 0);
        assert!(!hub.node.replica().is_loaded(&notebook), "notebook evicted");
        assert!(hub.node.replica().is_loaded(&roster), "roster kept");
        assert!(hub.followers.is_empty() && hub.evict_later.is_empty());
    }

    #[test]
    fn closed_class_creation_refuses_new_classes() {
        let settings = crate::RelayConfig::from_toml(
            "open_class_creation = false",
            std::path::Path::new("t.toml"),
        )
        .unwrap()
        .into_settings()
        .unwrap();
        let (mut hub, writes) = hub_with(64, settings.engine);
        let mut dev = device(7);
        dev.found_class([9; 16], "Class 3B", MemberId([1; 8]), "Ms Li", now_ms())
            .unwrap();
        let (mut out, _kill) = open(&mut hub, 1, 64);
        let dsid = dev.connect(now_ms(), [1; 32], [0; 32]).unwrap();
        // Capture what the relay sends before the device consumes it.
        let mut seen = Vec::new();
        for _ in 0..10 {
            while let Some((_, msg)) = dev.poll_transmit() {
                hub.on_input(HubInput::Received {
                    conn: ConnId(1),
                    msg,
                });
                hub.drain();
            }
            while let Ok(Outbound::Message(msg)) = out.try_recv() {
                seen.push((*msg).clone());
                dev.handle_message(now_ms(), dsid, *msg).unwrap();
            }
        }
        assert!(writes.try_recv().is_err(), "nothing was written");
        assert!(hub.node.replica().classes().is_empty());
        assert!(seen.iter().any(|m| matches!(
            m,
            Message::Error {
                code: ErrorCode::LimitExceeded,
                fatal: false,
                ..
            }
        )));
        assert!(!seen.iter().any(|m| matches!(m, Message::Saved { .. })));
        assert!(!dev.replica().undelivered().is_empty());
    }

    /// Exchange messages between `dev` and the hub without making any relay write durable;
    /// the writes are returned in order.
    fn exchange_holding_writes(
        hub: &mut Hub,
        writes: &std::sync::mpsc::Receiver<StorageWrite>,
        dev: &mut SyncNode,
        dsid: SessionId,
        out: &mut mpsc::Receiver<Outbound>,
    ) -> Vec<WriteId> {
        let mut held = Vec::new();
        loop {
            let mut progressed = false;
            while let Some((_, msg)) = dev.poll_transmit() {
                progressed = true;
                hub.on_input(HubInput::Received {
                    conn: ConnId(1),
                    msg,
                });
                hub.drain();
            }
            while let Some(w) = dev.poll_write() {
                progressed = true;
                dev.handle_write_done(w.id);
            }
            held.extend(writes.try_iter().map(|w| w.id));
            while let Ok(Outbound::Message(msg)) = out.try_recv() {
                progressed = true;
                dev.handle_message(now_ms(), dsid, *msg).unwrap();
            }
            if !progressed {
                return held;
            }
        }
    }

    #[test]
    fn every_durable_write_releases_saved_even_when_writes_overlap() {
        let (mut hub, writes) = hub(64);
        let mut dev = device(7);
        let class = dev
            .found_class([9; 16], "Class 3B", MemberId([1; 8]), "Ms Li", now_ms())
            .unwrap();
        let roster = DocId::new(class, DocKind::Roster);
        let (mut out, _kill) = open(&mut hub, 1, 64);
        let dsid = dev.connect(now_ms(), [1; 32], [0; 32]).unwrap();

        // The founding change reaches the relay; its write is not durable yet.
        let mut held = exchange_holding_writes(&mut hub, &writes, &mut dev, dsid, &mut out);
        // A second roster change reaches the relay while the first write is still in flight.
        dev.edit(&roster, now_ms(), |tx, _, _| {
            homeroom_core::roster::add_family(tx, homeroom_core::FamilyId([3; 8]), "Family 3")
        })
        .unwrap();
        held.extend(exchange_holding_writes(
            &mut hub, &writes, &mut dev, dsid, &mut out,
        ));
        assert!(held.len() >= 2, "two writes in flight: {held:?}");
        assert_eq!(dev.replica().undelivered().len(), 2);

        // The writer reports them durable one after the other.
        for id in held {
            hub.on_durable(&[id]);
            hub.drain();
        }
        exchange(&mut hub, &writes, 1, &mut dev, dsid, &mut out);
        assert!(
            dev.replica().undelivered().is_empty(),
            "both changes acknowledged: {:?}",
            dev.replica().undelivered()
        );
    }
}
