//! Finding other devices on the LAN (docs/lan.md): mDNS/DNS-SD through `mdns-sd`
//! ([`MdnsDiscovery`]), or a fixed, injected list ([`StaticDiscovery`]) for tests and for
//! networks where multicast is filtered.
//!
//! An advertisement carries nothing but a random instance token (fresh at every start) and the
//! UDP port: no name, no device key. Who a peer is gets established by the protocol handshake
//! (its device key signs the TLS session), never by what it announces.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::error::ClientError;

/// The DNS-SD service type devices announce and browse.
pub const SERVICE_TYPE: &str = "_homeroom._udp.local.";

/// What this device announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanAdvert {
    /// A random token identifying this run of LAN sync (lowercase hex). Of two devices that
    /// find each other, the one with the smaller token connects.
    pub instance: String,
    /// The UDP port its QUIC endpoint listens on.
    pub port: u16,
}

/// What discovery reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// A device announced itself (or changed its addresses).
    Found {
        /// Its instance token.
        instance: String,
        /// Where it listens.
        addrs: Vec<SocketAddr>,
    },
    /// A device withdrew its announcement.
    Lost {
        /// Its instance token.
        instance: String,
    },
}

/// A way to find other devices. `start` announces `me` and reports peers on `events` until
/// `stop`; it must never report `me` itself (the LAN task ignores it anyway).
pub trait Discovery: Send + Sync {
    /// Start announcing and browsing.
    fn start(
        &self,
        me: &LanAdvert,
        events: mpsc::UnboundedSender<DiscoveryEvent>,
    ) -> Result<(), ClientError>;
    /// Stop announcing and browsing.
    fn stop(&self);
}

/// Peers given by the caller: deterministic discovery for tests, or a manual "connect to this
/// address" where multicast is filtered.
#[derive(Debug, Default)]
pub struct StaticDiscovery {
    state: Mutex<StaticState>,
}

#[derive(Debug, Default)]
struct StaticState {
    peers: Vec<(String, SocketAddr)>,
    events: Option<mpsc::UnboundedSender<DiscoveryEvent>>,
}

impl StaticDiscovery {
    /// Discovery that reports exactly `peers` (instance token, address).
    pub fn new(peers: Vec<(String, SocketAddr)>) -> Self {
        Self {
            state: Mutex::new(StaticState {
                peers,
                events: None,
            }),
        }
    }

    /// Report another peer (now, if started).
    pub fn add(&self, instance: &str, addr: SocketAddr) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.peers.push((instance.to_string(), addr));
        if let Some(tx) = &st.events {
            let _ = tx.send(DiscoveryEvent::Found {
                instance: instance.to_string(),
                addrs: vec![addr],
            });
        }
    }

    /// Withdraw a peer.
    pub fn remove(&self, instance: &str) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.peers.retain(|(i, _)| i != instance);
        if let Some(tx) = &st.events {
            let _ = tx.send(DiscoveryEvent::Lost {
                instance: instance.to_string(),
            });
        }
    }
}

impl Discovery for StaticDiscovery {
    fn start(
        &self,
        me: &LanAdvert,
        events: mpsc::UnboundedSender<DiscoveryEvent>,
    ) -> Result<(), ClientError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for (instance, addr) in &st.peers {
            if *instance != me.instance {
                let _ = events.send(DiscoveryEvent::Found {
                    instance: instance.clone(),
                    addrs: vec![*addr],
                });
            }
        }
        st.events = Some(events);
        Ok(())
    }

    fn stop(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).events = None;
    }
}

/// mDNS/DNS-SD discovery (`_homeroom._udp.local.`) with `mdns-sd`, which runs its own thread
/// and needs no async runtime.
#[derive(Default)]
pub struct MdnsDiscovery {
    running: Mutex<Option<MdnsRunning>>,
}

struct MdnsRunning {
    daemon: mdns_sd::ServiceDaemon,
    fullname: String,
    forward: std::thread::JoinHandle<()>,
}

impl std::fmt::Debug for MdnsDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MdnsDiscovery").finish_non_exhaustive()
    }
}

impl MdnsDiscovery {
    /// Discovery over mDNS on every interface the host has.
    pub fn new() -> Self {
        Self::default()
    }
}

fn mdns_error(what: &'static str) -> impl Fn(mdns_sd::Error) -> ClientError {
    move |e| ClientError::Lan(format!("mDNS {what}: {e}"))
}

/// The instance token of a DNS-SD full name (`<token>._homeroom._udp.local.`).
fn instance_of(fullname: &str) -> Option<String> {
    fullname
        .strip_suffix(SERVICE_TYPE)
        .and_then(|s| s.strip_suffix('.'))
        .map(str::to_string)
}

impl Discovery for MdnsDiscovery {
    fn start(
        &self,
        me: &LanAdvert,
        events: mpsc::UnboundedSender<DiscoveryEvent>,
    ) -> Result<(), ClientError> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.is_some() {
            return Err(ClientError::SyncState("mDNS discovery is already running"));
        }
        let daemon = mdns_sd::ServiceDaemon::new().map_err(mdns_error("start"))?;
        let host = format!("{}.local.", me.instance);
        let info = mdns_sd::ServiceInfo::new(
            SERVICE_TYPE,
            &me.instance,
            &host,
            "",
            me.port,
            None::<std::collections::HashMap<String, String>>,
        )
        .map_err(mdns_error("advertisement"))?
        .enable_addr_auto();
        let fullname = info.get_fullname().to_string();
        daemon.register(info).map_err(mdns_error("register"))?;
        let browse = daemon.browse(SERVICE_TYPE).map_err(mdns_error("browse"))?;
        let mine = me.instance.clone();
        let forward = std::thread::Builder::new()
            .name("homeroom-mdns".into())
            .spawn(move || {
                // Ends when the daemon shuts down (the channel closes) or nobody listens.
                while let Ok(ev) = browse.recv() {
                    let out = match ev {
                        mdns_sd::ServiceEvent::ServiceResolved(r) => {
                            let Some(instance) = instance_of(&r.fullname) else {
                                continue;
                            };
                            let addrs: Vec<SocketAddr> = r
                                .addresses
                                .iter()
                                .map(|a| a.to_ip_addr())
                                .filter(|ip: &IpAddr| !ip.is_unspecified())
                                .map(|ip| SocketAddr::new(ip, r.port))
                                .collect();
                            if instance == mine || addrs.is_empty() {
                                continue;
                            }
                            DiscoveryEvent::Found { instance, addrs }
                        }
                        mdns_sd::ServiceEvent::ServiceRemoved(_, fullname) => {
                            match instance_of(&fullname) {
                                Some(instance) if instance != mine => {
                                    DiscoveryEvent::Lost { instance }
                                }
                                _ => continue,
                            }
                        }
                        _ => continue,
                    };
                    if events.send(out).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| ClientError::Lan(format!("cannot start the mDNS thread: {e}")))?;
        *running = Some(MdnsRunning {
            daemon,
            fullname,
            forward,
        });
        Ok(())
    }

    fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(r) = running {
            let _ = r.daemon.unregister(&r.fullname);
            let _ = r.daemon.stop_browse(SERVICE_TYPE);
            let _ = r.daemon.shutdown();
            // The browse channel closes with the daemon; the thread then ends on its own.
            drop(r.forward);
        }
    }
}
