//! The sync driver: keeps one QUIC connection to a relay, moves frames between it and the
//! engine, and reconnects with exponential backoff and jitter when the link drops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use homeroom_protocol::DEFAULT_MAX_FRAME;
use homeroom_transport::{
    FramedRecv, FramedSend, TransportError, TransportLimits, client_config, exporter,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::device::{Device, DeviceEvent};
use crate::error::ClientError;
use crate::ids::{now_ms, random_bytes};

/// Where and how to sync.
#[derive(Debug, Clone)]
pub struct RelayTarget {
    /// The relay's UDP address.
    pub addr: SocketAddr,
    /// SHA-256 of the relay's certificate (from the invite): the only certificate trusted.
    pub fingerprint: [u8; 32],
}

/// Reconnect policy.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// First delay after a failure.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
        }
    }
}

/// The relay's TLS-over-TCP fallback (docs/relay.md, "TCP fallback"): used when QUIC does
/// not connect within `quic_timeout` (UDP blocked); while on TCP, QUIC is tried again every
/// `quic_retry` and the session moves back to it as soon as it connects.
#[derive(Debug, Clone)]
pub struct TcpFallback {
    /// The relay's TCP address (same port number as QUIC by default).
    pub addr: SocketAddr,
    /// How long QUIC may take to connect before TCP is tried.
    pub quic_timeout: Duration,
    /// How often QUIC is tried again while the session runs over TCP.
    pub quic_retry: Duration,
}

impl TcpFallback {
    /// Fallback to `addr` with the default timings (QUIC: 3 s to connect, retried every 30 s).
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            quic_timeout: Duration::from_secs(3),
            quic_retry: Duration::from_secs(30),
        }
    }
}

/// A running sync task.
#[derive(Debug)]
pub(crate) struct SyncHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    endpoint: quinn::Endpoint,
}

impl Device {
    /// Start syncing with a relay on `runtime` (returns at once; I/O runs on the runtime).
    pub fn start_sync(
        &self,
        runtime: &tokio::runtime::Handle,
        target: RelayTarget,
    ) -> Result<(), ClientError> {
        self.start_sync_with(runtime, target, Backoff::default())
    }

    /// Like [`Device::start_sync`] with an explicit reconnect policy.
    pub fn start_sync_with(
        &self,
        runtime: &tokio::runtime::Handle,
        target: RelayTarget,
        backoff: Backoff,
    ) -> Result<(), ClientError> {
        self.start_sync_with_fallback(runtime, target, backoff, None)
    }

    /// Like [`Device::start_sync_with`], falling back to the relay's TLS-over-TCP listener
    /// when QUIC cannot connect (`fallback`), and moving back to QUIC when it can.
    pub fn start_sync_with_fallback(
        &self,
        runtime: &tokio::runtime::Handle,
        target: RelayTarget,
        backoff: Backoff,
        fallback: Option<TcpFallback>,
    ) -> Result<(), ClientError> {
        let mut slot = self.sync.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return Err(ClientError::SyncState("sync is already running"));
        }
        // Remembered for invites (their code carries the relay address and fingerprint).
        crate::invite::store_relay(&mut self.lock().store, &target)?;
        let cfg = client_config(target.fingerprint, &TransportLimits::default())?;
        let bind: SocketAddr = if target.addr.is_ipv6() {
            SocketAddr::from(([0u16; 8], 0))
        } else {
            SocketAddr::from(([0u8; 4], 0))
        };
        let endpoint = {
            let _guard = runtime.enter();
            let mut ep = quinn::Endpoint::client(bind)
                .map_err(|source| TransportError::Bind { addr: bind, source })?;
            ep.set_default_client_config(cfg);
            ep
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let device = self.clone();
        let ep = endpoint.clone();
        let task =
            runtime.spawn(async move { run(device, ep, target, backoff, fallback, stop_rx).await });
        *slot = Some(SyncHandle {
            stop: stop_tx,
            task,
            endpoint,
        });
        Ok(())
    }

    /// Stop syncing (unsent edits stay in the store and go out on the next start).
    pub async fn stop_sync(&self) {
        let handle = self.sync.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.stop.send(true);
            let _ = h.task.await;
            h.endpoint.close(0u32.into(), b"stopped");
        }
    }

    /// Move the connection to a new local UDP socket (what a phone does when it switches from
    /// Wi-Fi to cellular). QUIC migrates the live connection; no reconnect is needed.
    pub fn rebind(&self) -> Result<(), ClientError> {
        let slot = self.sync.lock().unwrap_or_else(|p| p.into_inner());
        let Some(h) = slot.as_ref() else {
            return Err(ClientError::SyncState("sync is not running"));
        };
        let local = h.endpoint.local_addr().map_err(|source| ClientError::Io {
            path: "udp socket".into(),
            source,
        })?;
        let bind = SocketAddr::new(local.ip(), 0);
        let socket = std::net::UdpSocket::bind(bind)
            .map_err(|source| TransportError::Bind { addr: bind, source })?;
        h.endpoint
            .rebind(socket)
            .map_err(|source| ClientError::Io {
                path: "udp socket".into(),
                source,
            })?;
        drop(slot);
        // Send something now so the relay validates the new path at once, instead of at the
        // next keep-alive.
        let mut g = self.lock();
        let sids: Vec<homeroom_sync::SessionId> = g.outbound.keys().copied().collect();
        for sid in sids {
            g.node.refresh(sid)?;
        }
        g.pump()
    }

    /// The local UDP address sync uses (tests and diagnostics).
    pub fn local_sync_addr(&self) -> Option<SocketAddr> {
        let slot = self.sync.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().and_then(|h| h.endpoint.local_addr().ok())
    }
}

async fn run(
    device: Device,
    endpoint: quinn::Endpoint,
    target: RelayTarget,
    backoff: Backoff,
    fallback: Option<TcpFallback>,
    mut stop: watch::Receiver<bool>,
) {
    let mut delay = backoff.initial;
    loop {
        if *stop.borrow() {
            break;
        }
        let started = tokio::time::Instant::now();
        match session(&device, &endpoint, &target, fallback.as_ref(), &mut stop).await {
            Ok(()) => tracing::info!("relay session ended"),
            Err(e) => tracing::info!(error = %e, "relay session failed"),
        }
        {
            let mut g = device.lock();
            g.status.connected = false;
            g.status.over_tcp = false;
        }
        notify(&device, DeviceEvent::Connection { connected: false });
        if *stop.borrow() {
            break;
        }
        if started.elapsed() > Duration::from_secs(10) {
            delay = backoff.initial;
        }
        let wait = jittered(delay);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => break,
        }
        delay = (delay * 2).min(backoff.max);
    }
}

pub(crate) fn notify(device: &Device, ev: DeviceEvent) {
    let obs = device.lock().observer_clone();
    if let Some(o) = obs {
        o.on_event(ev);
    }
}

/// Half to full `d`, uniformly: reconnects of a whole class after a relay restart spread out.
fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = if random_bytes(&mut b).is_ok() {
        u16::from_le_bytes(b)
    } else {
        0x8000
    };
    let frac = 0.5 + f64::from(r) / f64::from(u16::MAX) / 2.0;
    d.mul_f64(frac)
}

async fn session(
    device: &Device,
    endpoint: &quinn::Endpoint,
    target: &RelayTarget,
    fallback: Option<&TcpFallback>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), ClientError> {
    let timeout = fallback.map_or(Duration::from_secs(10), |f| f.quic_timeout);
    let connected = crate::invite::connect_relay_quic(device, endpoint, target, timeout).await;
    let conn = match (connected, fallback) {
        (Ok(conn), _) => conn,
        (Err(e), None) => return Err(e),
        (Err(e), Some(fb)) => {
            tracing::info!(error = %e, tcp = %fb.addr, "QUIC did not connect: falling back to TCP");
            match crate::fallback::tcp_session(device, endpoint, target, fb, stop).await? {
                Some(conn) => {
                    tracing::info!("QUIC connects again: leaving the TCP fallback");
                    conn
                }
                None => return Ok(()),
            }
        }
    };
    quic_session(device, conn, target, stop).await
}

/// Connect to the relay over QUIC within `timeout`.
pub(crate) async fn connect_quic(
    endpoint: &quinn::Endpoint,
    target: &RelayTarget,
    timeout: Duration,
) -> Result<quinn::Connection, ClientError> {
    let connecting = endpoint
        .connect(target.addr, "homeroom-relay")
        .map_err(TransportError::from)?;
    match tokio::time::timeout(timeout, connecting).await {
        Ok(r) => Ok(r.map_err(TransportError::from)?),
        Err(_) => Err(ClientError::SyncState("connecting to the relay timed out")),
    }
}

async fn quic_session(
    device: &Device,
    conn: quinn::Connection,
    target: &RelayTarget,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), ClientError> {
    let (send, recv) = conn.open_bi().await.map_err(TransportError::from)?;
    let mut send = FramedSend::new(send, DEFAULT_MAX_FRAME);
    let mut recv = FramedRecv::new(recv, DEFAULT_MAX_FRAME);
    let exp = exporter(&conn)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sid = {
        let mut g = device.lock();
        let sid = g.node.connect(now_ms(), exp, target.fingerprint)?;
        g.outbound.insert(sid, tx);
        g.pump()?;
        sid
    };
    let result = drive(device, sid, &conn, &mut send, &mut recv, &mut rx, stop).await;
    {
        let mut g = device.lock();
        g.outbound.remove(&sid);
        g.node.handle_closed(sid, "connection ended");
        let _ = g.pump();
    }
    send.finish();
    conn.close(0u32.into(), b"bye");
    result
}

/// How long received changes may wait for their commit (see `Inner::pump_deferring`): the
/// changes that arrive meanwhile share it, and it runs after the burst of work a fan-out
/// brings (on a classroom hub, after the other sessions took theirs).
const RECEIVED_COMMIT_DELAY: Duration = Duration::from_millis(50);

/// Sleep until `at`, or forever without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub(crate) async fn drive(
    device: &Device,
    sid: homeroom_sync::SessionId,
    conn: &quinn::Connection,
    send: &mut FramedSend,
    recv: &mut FramedRecv,
    rx: &mut mpsc::UnboundedReceiver<homeroom_protocol::Message>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), ClientError> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // When received changes waiting for their commit (see `Inner::pump_deferring`) are
    // committed.
    let mut commit_at: Option<tokio::time::Instant> = None;
    loop {
        // In this order: stopping first, then sending (our answers let the peer go on), then
        // receiving, then the deferred commit.
        tokio::select! {
            biased;
            _ = stop.changed() => return Ok(()),
            e = conn.closed() => return Err(TransportError::from(e).into()),
            out = rx.recv() => {
                match out {
                    Some(m) => send.send(&m).await?,
                    // The engine closed the session.
                    None => return Ok(()),
                }
            }
            msg = recv.recv() => {
                match msg? {
                    Some(m) => {
                        let mut g = device.lock();
                        g.node.handle_message(now_ms(), sid, m)?;
                        g.pump_deferring()?;
                        commit_at = match (g.has_deferred(), commit_at) {
                            (false, _) => None,
                            (true, Some(at)) => Some(at),
                            (true, None) => Some(tokio::time::Instant::now() + RECEIVED_COMMIT_DELAY),
                        };
                    }
                    None => return Ok(()),
                }
            }
            () = sleep_until_some(commit_at) => {
                device.lock().flush_received()?;
                commit_at = None;
            }
            _ = tick.tick() => {
                let mut g = device.lock();
                g.node.handle_timeout(now_ms());
                g.pump()?;
            }
        }
    }
}

impl crate::device::Inner {
    pub(crate) fn observer_clone(&self) -> Option<Arc<dyn crate::device::DeviceObserver>> {
        self.observer_ref().cloned()
    }
}
