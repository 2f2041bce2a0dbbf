//! The relay session over the TLS-over-TCP fallback, for networks that block UDP
//! (docs/relay.md, "TCP fallback"). Same frames, same handshake (the `Hello` proof signs this
//! TLS session's exporter), same pinned certificate. While it runs, QUIC is tried again every
//! `quic_retry`; when it connects, the TCP session ends and the caller continues on QUIC.

use std::future::Future;
use std::pin::Pin;

use homeroom_protocol::{DEFAULT_MAX_FRAME, Message};
use homeroom_transport::{FrameReader, FrameWriter, connect_tcp, tcp_exporter};
use tokio::sync::{mpsc, watch};

use crate::connection::{RelayTarget, TcpFallback, connect_quic};
use crate::device::Device;
use crate::error::ClientError;
use crate::ids::now_ms;

type Probe = Pin<Box<dyn Future<Output = Result<quinn::Connection, ClientError>> + Send>>;

/// Run one relay session over TCP. `Ok(Some(conn))`: QUIC connected meanwhile and the TCP
/// session was closed: continue on `conn`. `Ok(None)`: the session ended (stop, or the relay
/// closed it).
pub(crate) async fn tcp_session(
    device: &Device,
    endpoint: &quinn::Endpoint,
    target: &RelayTarget,
    fallback: &TcpFallback,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<quinn::Connection>, ClientError> {
    let stream = connect_tcp(
        fallback.addr,
        target.fingerprint,
        std::time::Duration::from_secs(10),
    )
    .await?;
    let exp = tcp_exporter(&stream)?;
    let (r, w) = tokio::io::split(stream);
    let mut send = FrameWriter::new(w, DEFAULT_MAX_FRAME);
    let mut recv = FrameReader::new(r, DEFAULT_MAX_FRAME);
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let sid = {
        let mut g = device.lock();
        let sid = g.node.connect(now_ms(), exp, target.fingerprint)?;
        g.outbound.insert(sid, tx);
        g.status.over_tcp = true;
        g.pump()?;
        sid
    };
    tracing::info!(addr = %fallback.addr, "relay session over TCP");
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut retry = tokio::time::interval_at(
        tokio::time::Instant::now() + fallback.quic_retry,
        fallback.quic_retry,
    );
    let mut probe: Option<Probe> = None;
    let result: Result<Option<quinn::Connection>, ClientError> = loop {
        tokio::select! {
            msg = recv.recv() => match msg {
                Ok(Some(m)) => {
                    let mut g = device.lock();
                    if let Err(e) = g.node.handle_message(now_ms(), sid, m) {
                        break Err(e.into());
                    }
                    if let Err(e) = g.pump() {
                        break Err(e);
                    }
                }
                Ok(None) => break Ok(None),
                Err(e) => break Err(e.into()),
            },
            out = rx.recv() => match out {
                Some(m) => {
                    if let Err(e) = send.send(&m).await {
                        break Err(e.into());
                    }
                }
                None => break Ok(None),
            },
            _ = tick.tick() => {
                let mut g = device.lock();
                g.node.handle_timeout(now_ms());
                if let Err(e) = g.pump() {
                    break Err(e);
                }
            }
            _ = retry.tick(), if probe.is_none() => {
                let endpoint = endpoint.clone();
                let target = target.clone();
                let timeout = fallback.quic_timeout;
                probe = Some(Box::pin(async move { connect_quic(&endpoint, &target, timeout).await }));
            }
            done = async { match probe.as_mut() { Some(p) => p.await, None => std::future::pending().await } } => {
                probe = None;
                match done {
                    Ok(conn) => break Ok(Some(conn)),
                    Err(e) => tracing::debug!(error = %e, "QUIC still unavailable; staying on TCP"),
                }
            }
            _ = stop.changed() => break Ok(None),
        }
    };
    {
        let mut g = device.lock();
        g.outbound.remove(&sid);
        g.node.handle_closed(sid, "TCP connection ended");
        g.status.over_tcp = false;
        let _ = g.pump();
    }
    send.finish().await;
    result
}
