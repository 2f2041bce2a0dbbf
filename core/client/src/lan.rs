//! LAN sync: devices on the same network sync directly over QUIC, with no relay and no
//! internet (docs/lan.md).
//!
//! Each device runs one QUIC endpoint that both accepts and dials, with a certificate it
//! generates at every start. Peers cannot pin each other's certificates in advance, so the
//! TLS layer accepts any certificate (the server still proves possession of its key) and the
//! *protocol* handshake authenticates: each end signs this TLS session's exporter with its
//! device key, and each end checks the other's key against its own rosters
//! (`SyncNode::connect_peer`). A machine in the middle holds two TLS sessions with two
//! different exporters, so it can forward neither signature.
//!
//! Discovery ([`crate::Discovery`]) finds peers; of two peers, the one with the smaller
//! instance token dials, so one connection serves a pair. Peers are redialled while discovery
//! still lists them, with a delay that doubles after failed or short sessions.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use homeroom_protocol::DEFAULT_MAX_FRAME;
use homeroom_transport::{
    FramedRecv, FramedSend, RelayCertificate, TransportError, TransportLimits, exporter,
    lan_client_config, server_config,
};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::device::Device;
use crate::discovery::{Discovery, DiscoveryEvent, LanAdvert, MdnsDiscovery};
use crate::error::ClientError;
use crate::ids::{now_ms, random_bytes};

/// How often peers are considered for a redial, and the first redial delay; it doubles after
/// each short-lived or failed attempt (a peer with no class in common), up to `REDIAL_MAX`.
const REDIAL: Duration = Duration::from_secs(3);
/// The longest redial delay.
const REDIAL_MAX: Duration = Duration::from_secs(60);
/// A session that lasted this long resets the redial delay.
const SESSION_OK: Duration = Duration::from_secs(10);

/// Dialling state per peer instance.
#[derive(Default)]
struct Dials {
    /// Instances with a live dial task.
    live: HashSet<String>,
    /// Not before when, and the current delay.
    backoff: HashMap<String, (tokio::time::Instant, Duration)>,
}
/// How long a dial may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// How to run LAN sync.
#[derive(Clone)]
pub struct LanOptions {
    /// The local UDP address to listen on. Default `0.0.0.0:0` (any free port).
    pub bind: SocketAddr,
    /// How peers are found. Default: mDNS.
    pub discovery: Arc<dyn Discovery>,
    /// This run's instance token; random when `None` (the normal case).
    pub instance: Option<String>,
}

impl std::fmt::Debug for LanOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanOptions")
            .field("bind", &self.bind)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Default for LanOptions {
    fn default() -> Self {
        Self::with_discovery(Arc::new(MdnsDiscovery::new()))
    }
}

impl LanOptions {
    /// LAN sync with the given discovery, on any free port.
    pub fn with_discovery(discovery: Arc<dyn Discovery>) -> Self {
        Self {
            bind: SocketAddr::from(([0u8; 4], 0)),
            discovery,
            instance: None,
        }
    }
}

/// A running LAN task.
pub(crate) struct LanHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    endpoint: quinn::Endpoint,
    discovery: Arc<dyn Discovery>,
    advert: LanAdvert,
}

impl std::fmt::Debug for LanHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanHandle")
            .field("advert", &self.advert)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// Start syncing with devices on the same LAN (no relay, no internet needed). Returns at
    /// once with what this device announces (its instance token and UDP port); I/O runs on
    /// `runtime`. Only documents this device and the peer may both read travel, each way;
    /// every change is verified here against this device's rosters. Peers are listed in
    /// [`Device::sync_status`]`().lan_peers`. Edits become "delivered" only when the relay
    /// acknowledges them, never through a peer.
    pub fn start_lan_sync(
        &self,
        runtime: &tokio::runtime::Handle,
        options: LanOptions,
    ) -> Result<LanAdvert, ClientError> {
        let mut slot = self.lan.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return Err(ClientError::SyncState("LAN sync is already running"));
        }
        let limits = TransportLimits::default();
        // A fresh certificate per start: nobody pins it (see the module docs).
        let cert = RelayCertificate::generate(&["homeroom-device".to_string()])?;
        let server = server_config(&cert, &limits)?;
        let client = lan_client_config(&limits)?;
        let endpoint = {
            let _guard = runtime.enter();
            let mut ep = quinn::Endpoint::server(server, options.bind).map_err(|source| {
                TransportError::Bind {
                    addr: options.bind,
                    source,
                }
            })?;
            ep.set_default_client_config(client);
            ep
        };
        let port = endpoint
            .local_addr()
            .map_err(|source| ClientError::Io {
                path: "LAN UDP socket".into(),
                source,
            })?
            .port();
        let instance = match options.instance {
            Some(i) => i,
            None => {
                let mut b = [0u8; 8];
                random_bytes(&mut b)?;
                b.iter().map(|x| format!("{x:02x}")).collect()
            }
        };
        let advert = LanAdvert { instance, port };
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        options.discovery.start(&advert, events_tx)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let device = self.clone();
        let ep = endpoint.clone();
        let me = advert.instance.clone();
        let task = runtime.spawn(async move { run(device, ep, me, events_rx, stop_rx).await });
        *slot = Some(LanHandle {
            stop: stop_tx,
            task,
            endpoint,
            discovery: options.discovery,
            advert: advert.clone(),
        });
        Ok(advert)
    }

    /// Stop LAN sync: withdraw the announcement and close every peer session.
    pub async fn stop_lan_sync(&self) {
        let handle = self.lan.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            h.discovery.stop();
            let _ = h.stop.send(true);
            let _ = h.task.await;
            h.endpoint.close(0u32.into(), b"stopped");
        }
    }

    /// What this device announces on the LAN, while LAN sync runs.
    pub fn lan_advert(&self) -> Option<LanAdvert> {
        self.lan
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|h| h.advert.clone())
    }
}

async fn run(
    device: Device,
    endpoint: quinn::Endpoint,
    me: String,
    mut events: mpsc::UnboundedReceiver<DiscoveryEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    // Peers we dial: their addresses; `dialing` holds those with a live task.
    let mut known: HashMap<String, Vec<SocketAddr>> = HashMap::new();
    let dialing: Arc<Mutex<Dials>> = Arc::new(Mutex::new(Dials::default()));
    let mut redial = tokio::time::interval(REDIAL);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let device = device.clone();
                let stop = stop.clone();
                tasks.spawn(async move {
                    let peer = incoming.remote_address();
                    match accept(&device, incoming, stop).await {
                        Ok(()) => tracing::info!(%peer, "LAN session ended"),
                        Err(e) => tracing::info!(%peer, error = %e, "LAN session failed"),
                    }
                });
            }
            ev = events.recv() => match ev {
                Some(DiscoveryEvent::Found { instance, addrs }) => {
                    // Of two peers, the smaller token dials: one connection per pair.
                    if instance != me && me < instance {
                        known.insert(instance.clone(), addrs);
                        spawn_dial(&mut tasks, &device, &endpoint, &dialing, &instance, &known, &stop);
                    }
                }
                Some(DiscoveryEvent::Lost { instance }) => {
                    known.remove(&instance);
                }
                None => {
                    // Discovery ended; keep serving incoming peers until stopped.
                    let _ = stop.changed().await;
                    break;
                }
            },
            _ = redial.tick() => {
                let instances: Vec<String> = known.keys().cloned().collect();
                for instance in instances {
                    spawn_dial(&mut tasks, &device, &endpoint, &dialing, &instance, &known, &stop);
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // Sessions watch `stop` and end on their own; give them a moment to say goodbye.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
}

fn spawn_dial(
    tasks: &mut JoinSet<()>,
    device: &Device,
    endpoint: &quinn::Endpoint,
    dialing: &Arc<Mutex<Dials>>,
    instance: &str,
    known: &HashMap<String, Vec<SocketAddr>>,
    stop: &watch::Receiver<bool>,
) {
    let Some(addrs) = known.get(instance).cloned() else {
        return;
    };
    {
        let mut d = dialing.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        if d.live.contains(instance) || d.backoff.get(instance).is_some_and(|(at, _)| *at > now) {
            return; // connected, connecting, or waiting to retry
        }
        d.live.insert(instance.to_string());
    }
    let device = device.clone();
    let endpoint = endpoint.clone();
    let dialing = dialing.clone();
    let instance = instance.to_string();
    let stop = stop.clone();
    tasks.spawn(async move {
        let started = tokio::time::Instant::now();
        for addr in addrs {
            match dial(&device, &endpoint, addr, stop.clone()).await {
                Ok(()) => {
                    tracing::info!(%addr, "LAN session ended");
                    break;
                }
                Err(e) => tracing::info!(%addr, error = %e, "LAN peer unreachable or refused"),
            }
        }
        let mut d = dialing.lock().unwrap_or_else(|p| p.into_inner());
        d.live.remove(&instance);
        let delay = match d.backoff.get(&instance) {
            Some((_, prev)) if started.elapsed() < SESSION_OK => (*prev * 2).min(REDIAL_MAX),
            _ => REDIAL,
        };
        d.backoff
            .insert(instance, (tokio::time::Instant::now() + delay, delay));
    });
}

async fn dial(
    device: &Device,
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    stop: watch::Receiver<bool>,
) -> Result<(), ClientError> {
    let connecting = endpoint
        .connect(addr, "homeroom-device")
        .map_err(TransportError::from)?;
    let conn = match tokio::time::timeout(DIAL_TIMEOUT, connecting).await {
        Ok(r) => r.map_err(TransportError::from)?,
        Err(_) => return Err(ClientError::SyncState("connecting to a LAN peer timed out")),
    };
    let (send, recv) = conn.open_bi().await.map_err(TransportError::from)?;
    peer_session(device, conn, send, recv, stop).await
}

async fn accept(
    device: &Device,
    incoming: quinn::Incoming,
    stop: watch::Receiver<bool>,
) -> Result<(), ClientError> {
    let connecting = incoming.accept().map_err(TransportError::from)?;
    let conn = match tokio::time::timeout(DIAL_TIMEOUT, connecting).await {
        Ok(r) => r.map_err(TransportError::from)?,
        Err(_) => return Err(ClientError::SyncState("LAN handshake timed out")),
    };
    let streams = tokio::time::timeout(DIAL_TIMEOUT, conn.accept_bi()).await;
    let (send, recv) = match streams {
        Ok(r) => r.map_err(TransportError::from)?,
        Err(_) => return Err(ClientError::SyncState("LAN peer opened no stream")),
    };
    peer_session(device, conn, send, recv, stop).await
}

/// One peer session over an open stream: both ends send `Hello` and verify the other's.
async fn peer_session(
    device: &Device,
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ClientError> {
    let mut send = FramedSend::new(send, DEFAULT_MAX_FRAME);
    let mut recv = FramedRecv::new(recv, DEFAULT_MAX_FRAME);
    let exp = exporter(&conn)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sid = {
        let mut g = device.lock();
        let sid = g.node.connect_peer(now_ms(), exp)?;
        g.lan_sessions.insert(sid, None);
        g.outbound.insert(sid, tx);
        g.pump()?;
        sid
    };
    let result =
        crate::connection::drive(device, sid, &conn, &mut send, &mut recv, &mut rx, &mut stop)
            .await;
    {
        let mut g = device.lock();
        g.outbound.remove(&sid);
        g.node.handle_closed(sid, "LAN connection ended");
        let _ = g.pump();
        g.lan_sessions.remove(&sid);
        g.status.lan_peers = g.lan_sessions.values().flatten().copied().collect();
    }
    send.finish();
    // Let the peer read our last frames before the connection goes.
    let _ = tokio::time::timeout(Duration::from_millis(200), conn.closed()).await;
    conn.close(0u32.into(), b"bye");
    result
}
