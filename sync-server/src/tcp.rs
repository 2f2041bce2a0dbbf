//! The TLS-over-TCP fallback listener (docs/relay.md, "TCP fallback"): for networks that block
//! UDP. Each accepted connection completes a TLS 1.3 handshake with the relay's certificate,
//! computes the same TLS exporter value as a QUIC connection, registers with the hub exactly
//! like a QUIC connection, and then carries the very same length-prefixed frames, under the
//! same frame size limit, outbound queue bound and handshake deadline. The hub and the engine
//! cannot tell the two transports apart.

use std::net::SocketAddr;
use std::sync::Arc;

use homeroom_protocol::{ErrorCode, FrameError, Message};
use homeroom_transport::{
    FrameReader, FrameWriter, TcpTlsStream, TransportError, accept_tcp, tcp_exporter,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::connection::{ConnectionBudget, ConnectionSettings, ConnectionSlot, Kill, Outbound};
use crate::hub::{ConnId, HubInput};

/// TCP connection ids live in the upper half of the id space, QUIC ones in the lower half.
const TCP_CONN_ID_BASE: u64 = 1 << 63;

/// Accept TCP connections until told to stop; return the connection tasks still running.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    hub: mpsc::Sender<HubInput>,
    settings: ConnectionSettings,
    budget: ConnectionBudget,
    mut stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let mut next_id: u64 = TCP_CONN_ID_BASE;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some(finished) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = finished
                    && e.is_panic()
                {
                    tracing::error!(error = %e, "a TCP connection task panicked");
                }
            }
            accepted = listener.accept() => {
                let (tcp, addr) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // E.g. EMFILE: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "TCP accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // The same budget as QUIC connections: `max_connections` in all.
                let Some(slot) = budget.try_take() else {
                    tracing::warn!(
                        peer = %addr,
                        max_connections = budget.max(),
                        "refusing TCP connection: max_connections reached"
                    );
                    drop(tcp);
                    continue;
                };
                next_id += 1;
                let id = ConnId(next_id);
                let span = tracing::info_span!("tcp", id = id.0 - TCP_CONN_ID_BASE, peer = %addr);
                tasks.spawn(
                    serve(tcp, addr, id, tls.clone(), hub.clone(), settings.clone(), slot)
                        .instrument(span),
                );
            }
        }
    }
    tasks
}

async fn serve(
    tcp: tokio::net::TcpStream,
    addr: SocketAddr,
    id: ConnId,
    tls: Arc<rustls::ServerConfig>,
    hub: mpsc::Sender<HubInput>,
    settings: ConnectionSettings,
    slot: ConnectionSlot,
) {
    // Held until the session ends: the connection's slot and its count in the metrics.
    let _slot = slot;
    // Boxed, and the TLS stream split inside it: the handshake's state (rustls's whole
    // handshake machine) and the unsplit stream would otherwise stay part of this task's
    // future — its size — for the connection's whole life (an async fn keeps a slot for a
    // local even once moved out of it). The task's future: 2,288 → 1,072 bytes.
    let Some((exporter, r, w)) = Box::pin(establish(tcp, tls, settings.handshake_timeout)).await
    else {
        return;
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
    if Box::pin(hub.send(opened)).await.is_err() {
        return;
    }
    tracing::debug!("TCP connection registered");
    let mut send = FrameWriter::new(w, settings.max_frame);
    let mut recv = FrameReader::new(r, settings.max_frame);
    let reason = pump(&mut send, &mut recv, &hub, id, addr, out_rx, kill_rx).await;
    let _ = Box::pin(hub.send(HubInput::Closed {
        conn: id,
        reason: reason.clone(),
    }))
    .await;
    Box::pin(send.finish()).await;
    tracing::debug!(%reason, "TCP connection closed");
}

/// The TLS handshake (within `timeout`) and the session's exporter; the stream comes back
/// split into its read and write halves. `None` (logged) if the handshake fails.
async fn establish(
    tcp: tokio::net::TcpStream,
    tls: Arc<rustls::ServerConfig>,
    timeout: std::time::Duration,
) -> Option<([u8; 32], Half<TcpTlsStream>, WHalf<TcpTlsStream>)> {
    let stream = match tokio::time::timeout(timeout, accept_tcp(tls, tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::info!("TLS handshake timed out");
            return None;
        }
    };
    let exporter = match tcp_exporter(&stream) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "TLS exporter unavailable: closing");
            return None;
        }
    };
    let (r, w) = tokio::io::split(stream);
    Some((exporter, r, w))
}

type Half<T> = tokio::io::ReadHalf<T>;
type WHalf<T> = tokio::io::WriteHalf<T>;

async fn pump(
    send: &mut FrameWriter<WHalf<TcpTlsStream>>,
    recv: &mut FrameReader<Half<TcpTlsStream>>,
    hub: &mpsc::Sender<HubInput>,
    id: ConnId,
    addr: SocketAddr,
    mut outbound: mpsc::Receiver<Outbound>,
    kill: oneshot::Receiver<Kill>,
) -> String {
    let mut kill = Some(kill);
    loop {
        tokio::select! {
            biased;
            k = next_kill(&mut kill) => {
                tracing::warn!(reason = %k.reason, "closing TCP connection immediately");
                return k.reason;
            }
            out = outbound.recv() => match out {
                Some(Outbound::Message(msg)) => {
                    let sent = tokio::select! {
                        biased;
                        k = next_kill(&mut kill) => return k.reason,
                        sent = send.send(&msg) => sent,
                    };
                    if let Err(e) = sent {
                        return format!("send failed: {e}");
                    }
                }
                Some(Outbound::Close(_)) | None => return "session closed".into(),
            },
            received = recv.recv() => match received {
                Ok(Some(msg)) => {
                    let input = HubInput::Received { conn: id, msg };
                    // Usually the hub's inbox has room; waiting for room is the rare case
                    // (boxed, so this task's future stays small while idle).
                    let sent = match hub.try_send(input) {
                        Ok(()) => Ok(()),
                        Err(mpsc::error::TrySendError::Full(input)) => {
                            Box::pin(hub.send(input)).await.map_err(drop)
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
                    };
                    if sent.is_err() {
                        return "relay shutting down".into();
                    }
                }
                Ok(None) => return "peer finished".into(),
                Err(TransportError::Frame(FrameError::UnknownMessage { tag })) => {
                    tracing::warn!(peer = %addr, tag, "skipping a frame of unknown message kind");
                    let _ = Box::pin(send.send(&Message::Error {
                        code: ErrorCode::UnexpectedMessage,
                        detail: format!("unknown message tag {tag}"),
                        fatal: false,
                    })).await;
                }
                Err(e) => {
                    let code = match &e {
                        TransportError::Frame(FrameError::TooLarge { .. }) => ErrorCode::FrameTooLarge,
                        TransportError::Frame(_) | TransportError::Truncated { .. } => ErrorCode::MalformedFrame,
                        other => return format!("connection lost: {other}"),
                    };
                    tracing::warn!(peer = %addr, error = %e, "undecodable frame: closing this TCP connection");
                    let _ = Box::pin(tokio::time::timeout(
                        std::time::Duration::from_secs(1),
                        send.send(&Message::Error { code, detail: e.to_string(), fatal: true }),
                    )).await;
                    return e.to_string();
                }
            },
        }
    }
}

async fn next_kill(kill: &mut Option<oneshot::Receiver<Kill>>) -> Kill {
    if let Some(rx) = kill.as_mut() {
        if let Ok(k) = rx.await {
            return k;
        }
        *kill = None;
    }
    std::future::pending().await
}
