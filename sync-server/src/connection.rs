//! One task per QUIC connection: the bridge between a device's stream and the hub.
//!
//! The task completes the QUIC handshake, accepts the device's bidirectional stream (the
//! protocol uses exactly one), computes the TLS exporter value the device must sign in its
//! `Hello`, and registers with the hub. It then loops over two sources: frames decoded from the
//! stream go to the hub, and messages the hub queued for this connection ([`Outbound`]) are
//! encoded and written. It holds no protocol state of its own.
//!
//! A frame that cannot be decoded (over `max_frame_bytes`, malformed, cut short) means the
//! stream is unusable: the task answers `Error { FrameTooLarge | MalformedFrame, fatal: true }`
//! as best it can, logs a warning naming the peer address and closes this connection only.
//! A frame of an unknown message kind is skipped with a non-fatal `Error`. Further streams the
//! peer opens are refused at once, so they cannot hold relay memory.
//!
//! However it ends, the task tells the hub the connection closed. The QUIC application close
//! codes it uses are listed in [`close_code`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use homeroom_protocol::{ErrorCode, FrameError, Message};
use homeroom_transport::{FramedRecv, FramedSend, TransportError, exporter};
use quinn::VarInt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::Instrument;

use crate::hub::{ConnId, HubInput};
use crate::metrics::ConnectionGuard;

/// QUIC application error codes the relay closes connections with.
pub mod close_code {
    /// Normal end of the session.
    pub const NORMAL: u32 = 0;
    /// The peer broke the protocol (bad frame, failed handshake, timeout).
    pub const PROTOCOL_ERROR: u32 = 1;
    /// The peer did not read fast enough: its outbound queue filled up.
    pub const TOO_SLOW: u32 = 2;
    /// The relay is shutting down; reconnect later.
    pub const SHUTTING_DOWN: u32 = 3;
    /// The relay failed internally; reconnect later.
    pub const INTERNAL: u32 = 4;
    /// A second stream was refused (stream-level reset code, not a connection close).
    pub const STREAM_REFUSED: u32 = 5;
    /// The device was revoked or its member removed from a class it followed (the relay
    /// sent `Error { NotEnrolled }` and the roster change first).
    pub const REMOVED: u32 = 6;
}

/// How long the relay waits, after its last frame, for the peer to close the connection
/// before closing it itself (so the last frame, e.g. a fatal `Error`, is read rather than
/// discarded by the peer's QUIC stack on a premature close).
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// How long a best-effort `Error` frame may take to write to a peer that is not reading.
const ERROR_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// What the hub sends a connection task.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Encode and send this message. Boxed: a queue slot is then 16 bytes rather than the
    /// size of the largest `Message` variant, and tokio allocates each connection's queue 32
    /// slots at a time up front (4.5 KiB per idle connection unboxed, measured).
    Message(Box<Message>),
    /// The session is over: send nothing more, let the peer read what was sent, then close
    /// with this QUIC application code.
    Close(u32),
}

/// An immediate close ordered by the hub (no linger): the connection is too slow or broken.
#[derive(Debug)]
pub(crate) struct Kill {
    /// QUIC application close code.
    pub(crate) code: u32,
    /// Reason, sent in the CONNECTION_CLOSE frame and logged.
    pub(crate) reason: String,
}

/// Settings a connection task needs.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionSettings {
    /// Frame size limit (both directions).
    pub(crate) max_frame: usize,
    /// Capacity of the outbound queue, in messages.
    pub(crate) outbound_queue: usize,
    /// Deadline for the QUIC handshake and the first stream.
    pub(crate) handshake_timeout: Duration,
}

/// The relay's one budget of open connections (`max_connections`), shared by the QUIC and the
/// TLS-over-TCP accept loops: a connection over either transport takes a slot, and a
/// connection that finds none is refused, so at most `max_connections` are served in all.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionBudget {
    slots: Arc<Semaphore>,
    max: usize,
}

impl ConnectionBudget {
    /// A budget of `max` connections.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max,
        }
    }

    /// The configured limit (for log lines).
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// A slot for one more connection, or `None` when `max_connections` are open; a refusal
    /// is counted in the metrics.
    pub(crate) fn try_take(&self) -> Option<ConnectionSlot> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Some(ConnectionSlot {
                _permit: permit,
                _open: ConnectionGuard::new(),
            }),
            Err(_) => {
                crate::metrics::global().connection_refused();
                None
            }
        }
    }
}

/// One open connection (QUIC or TCP): holds its slot of the [`ConnectionBudget`] and counts in
/// `homeroom_connections_open` while it lives; both are released when the connection's task
/// ends or is aborted.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    _open: ConnectionGuard,
}

/// How a connection's loop ended.
enum End {
    /// The hub closed the session; the code to close with.
    ClosedByRelay(u32),
    /// The hub ordered an immediate close.
    Killed(Kill),
    /// The peer finished its stream.
    PeerFinished,
    /// The connection failed or the peer closed it.
    Lost(String),
    /// The peer sent an undecodable frame.
    ProtocolError(String),
    /// The hub is gone (relay stopping abnormally).
    HubGone,
}

/// Serve one incoming connection until it ends. Never panics on peer input; every exit path
/// reports `Closed` to the hub once registered.
///
/// It takes the accepted [`quinn::Connecting`] from `addr`, not the `quinn::Incoming`: an async
/// fn keeps its arguments' space for its whole life, and an `Incoming` (the first packet, its
/// keys) is several hundred bytes an idle connection's task would carry for nothing.
pub(crate) async fn run(
    connecting: quinn::Connecting,
    addr: SocketAddr,
    id: ConnId,
    hub: mpsc::Sender<HubInput>,
    settings: ConnectionSettings,
    slot: ConnectionSlot,
) {
    let span = tracing::info_span!("conn", id = id.0, peer = %addr);
    let _slot = slot;
    serve(connecting, id, addr, hub, settings)
        .instrument(span)
        .await;
}

async fn serve(
    connecting: quinn::Connecting,
    id: ConnId,
    addr: SocketAddr,
    hub: mpsc::Sender<HubInput>,
    settings: ConnectionSettings,
) {
    // Futures not live while the connection idles are boxed (here and below), and the
    // handshake's results are built into `Io` inside the boxed `establish`: an async fn keeps
    // a slot for each of its locals, moved-from ones too, so the task's own future — which
    // lives as long as the connection — then holds little more than the idle loop.
    let Some((mut io, out_rx, kill_rx)) =
        Box::pin(establish(connecting, id, addr, hub, &settings)).await
    else {
        return;
    };
    let end = io.pump(out_rx, kill_rx).await;
    let (code, reason) = match end {
        End::ClosedByRelay(code) => {
            io.send.finish();
            Box::pin(linger(&io.conn)).await;
            (code, "session closed".to_string())
        }
        End::Killed(kill) => {
            tracing::warn!(reason = %kill.reason, "closing connection immediately");
            (kill.code, kill.reason)
        }
        End::PeerFinished => {
            io.send.finish();
            (close_code::NORMAL, "peer finished".to_string())
        }
        End::Lost(reason) => (close_code::NORMAL, reason),
        End::ProtocolError(reason) => {
            io.send.finish();
            Box::pin(linger(&io.conn)).await;
            (close_code::PROTOCOL_ERROR, reason)
        }
        End::HubGone => (close_code::SHUTTING_DOWN, "relay shutting down".to_string()),
    };
    let _ = Box::pin(io.hub.send(HubInput::Closed {
        conn: id,
        reason: reason.clone(),
    }))
    .await;
    close(&io.conn, code, &reason);
    tracing::debug!(code, %reason, "connection closed");
}

/// The QUIC handshake, the device's stream, the TLS exporter and the registration with the
/// hub: the connection ready for [`Io::pump`], with its outbound queue and kill order. `None`
/// (logged, and the connection closed where there is one) if any step fails.
async fn establish(
    connecting: quinn::Connecting,
    id: ConnId,
    addr: SocketAddr,
    hub: mpsc::Sender<HubInput>,
    settings: &ConnectionSettings,
) -> Option<(Io, mpsc::Receiver<Outbound>, oneshot::Receiver<Kill>)> {
    // One deadline for the QUIC handshake and the first stream; the engine then gives the
    // device the same time again to send a valid `Hello`.
    let deadline = tokio::time::Instant::now() + settings.handshake_timeout;
    let conn = match tokio::time::timeout_at(deadline, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "QUIC handshake failed");
            return None;
        }
        Err(_) => {
            tracing::info!("QUIC handshake timed out");
            return None;
        }
    };
    let (send, recv) = match tokio::time::timeout_at(deadline, conn.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "connection ended before opening its stream");
            return None;
        }
        Err(_) => {
            tracing::info!("no stream opened in time: closing");
            close(&conn, close_code::PROTOCOL_ERROR, "no stream opened");
            return None;
        }
    };
    let exporter = match exporter(&conn) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "TLS exporter unavailable: closing");
            close(&conn, close_code::INTERNAL, "internal error");
            return None;
        }
    };
    let (out_tx, out_rx) = mpsc::channel(settings.outbound_queue);
    let (kill_tx, kill_rx) = oneshot::channel();
    let opened = HubInput::Opened {
        conn: id,
        addr,
        exporter,
        outbound: out_tx,
        kill: kill_tx,
    };
    if hub.send(opened).await.is_err() {
        close(&conn, close_code::SHUTTING_DOWN, "relay shutting down");
        return None;
    }
    tracing::debug!("connection registered");
    let io = Io {
        conn,
        send: FramedSend::new(send, settings.max_frame),
        recv: FramedRecv::new(recv, settings.max_frame),
        hub,
        id,
        addr,
    };
    Some((io, out_rx, kill_rx))
}

/// The connection's I/O while registered with the hub.
struct Io {
    conn: quinn::Connection,
    send: FramedSend,
    recv: FramedRecv,
    hub: mpsc::Sender<HubInput>,
    id: ConnId,
    addr: SocketAddr,
}

impl Io {
    async fn pump(
        &mut self,
        mut outbound: mpsc::Receiver<Outbound>,
        kill: oneshot::Receiver<Kill>,
    ) -> End {
        let mut kill = Some(kill);
        loop {
            tokio::select! {
                biased;
                k = next_kill(&mut kill) => return End::Killed(k),
                out = outbound.recv() => match out {
                    Some(Outbound::Message(msg)) => {
                        // A peer that does not read stalls this write (flow control): the hub
                        // then fills the queue and orders a kill, which must win over the write.
                        let sent = tokio::select! {
                            biased;
                            k = next_kill(&mut kill) => return End::Killed(k),
                            sent = self.send.send(&msg) => sent,
                        };
                        if let Err(e) = sent {
                            return self.send_failed(&msg, e);
                        }
                    }
                    Some(Outbound::Close(code)) => return End::ClosedByRelay(code),
                    None => return End::ClosedByRelay(close_code::NORMAL),
                },
                received = self.recv.recv() => match received {
                    Ok(Some(msg)) => {
                        let input = HubInput::Received { conn: self.id, msg };
                        // Usually the hub's inbox has room; waiting for room is the rare case.
                        let sent = match self.hub.try_send(input) {
                            Ok(()) => Ok(()),
                            Err(mpsc::error::TrySendError::Full(input)) => {
                                Box::pin(self.hub.send(input)).await.map_err(drop)
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
                        };
                        if sent.is_err() {
                            return End::HubGone;
                        }
                    }
                    Ok(None) => return End::PeerFinished,
                    Err(e) => {
                        if let Some(end) = Box::pin(self.receive_failed(e)).await {
                            return end;
                        }
                    }
                },
                extra = self.conn.accept_bi() => match extra {
                    Ok((mut s, mut r)) => {
                        tracing::warn!(peer = %self.addr, "refusing a second stream");
                        let _ = r.stop(VarInt::from_u32(close_code::STREAM_REFUSED));
                        let _ = s.reset(VarInt::from_u32(close_code::STREAM_REFUSED));
                    }
                    Err(e) => return End::Lost(e.to_string()),
                },
            }
        }
    }

    fn send_failed(&self, msg: &Message, e: TransportError) -> End {
        match e {
            TransportError::Frame(fe) => {
                // A message of ours does not fit a frame: a relay-side limit mismatch, not the
                // peer's fault. The stream cannot skip it, so the session ends.
                tracing::error!(error = %fe, kind = msg.kind(), "cannot frame an outbound message");
                End::Killed(Kill {
                    code: close_code::INTERNAL,
                    reason: format!("outbound {} message too large", msg.kind()),
                })
            }
            other => End::Lost(other.to_string()),
        }
    }

    /// A receive error: `None` to go on (unknown message kind), or how the loop ends.
    async fn receive_failed(&mut self, e: TransportError) -> Option<End> {
        let (code, what) = match &e {
            TransportError::Frame(FrameError::UnknownMessage { tag }) => {
                tracing::warn!(peer = %self.addr, tag, "skipping a frame of unknown message kind");
                self.best_effort(Message::Error {
                    code: ErrorCode::UnexpectedMessage,
                    detail: format!("unknown message tag {tag}"),
                    fatal: false,
                })
                .await;
                return None;
            }
            TransportError::Frame(FrameError::TooLarge { .. }) => {
                (ErrorCode::FrameTooLarge, e.to_string())
            }
            TransportError::Frame(_) | TransportError::Truncated { .. } => {
                (ErrorCode::MalformedFrame, e.to_string())
            }
            other => return Some(End::Lost(other.to_string())),
        };
        tracing::warn!(peer = %self.addr, error = %what, "undecodable frame: closing this connection");
        self.best_effort(Message::Error {
            code,
            detail: what.clone(),
            fatal: true,
        })
        .await;
        Some(End::ProtocolError(what))
    }

    /// Send `msg` if the peer takes it within [`ERROR_SEND_TIMEOUT`].
    async fn best_effort(&mut self, msg: Message) {
        match tokio::time::timeout(ERROR_SEND_TIMEOUT, self.send.send(&msg)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "could not send error frame"),
            Err(_) => tracing::debug!("peer not reading: error frame not sent"),
        }
    }
}

/// The hub's kill order, if it sends one. Pending forever once the hub dropped the sender
/// unused (the session then ends through the outbound queue instead).
async fn next_kill(kill: &mut Option<oneshot::Receiver<Kill>>) -> Kill {
    if let Some(rx) = kill.as_mut() {
        if let Ok(k) = rx.await {
            return k;
        }
        *kill = None;
    }
    std::future::pending().await
}

/// Wait for the peer to close the connection, at most [`CLOSE_LINGER`].
async fn linger(conn: &quinn::Connection) {
    let _ = tokio::time::timeout(CLOSE_LINGER, conn.closed()).await;
}

fn close(conn: &quinn::Connection, code: u32, reason: &str) {
    // Keep the reason well under one packet.
    let reason: String = reason.chars().take(200).collect();
    conn.close(VarInt::from_u32(code), reason.as_bytes());
}
