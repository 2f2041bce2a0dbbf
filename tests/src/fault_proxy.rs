//! A fault-injecting UDP proxy on loopback, for running real devices and a real relay over a
//! bad network without root or netem (the kernel here has none; see `docs/testing.md`).
//!
//! Devices connect to [`FaultProxy::addr`] instead of the relay. The proxy keeps one upstream
//! socket per client address (so the relay sees one peer per device, as through a NAT) and
//! forwards every datagram after applying, per direction and from a seeded RNG: a fixed
//! one-way latency plus uniform jitter (which reorders datagrams by itself), loss, duplication,
//! and an extra delay for a fraction of datagrams (more reordering). [`FaultProxy::set_link`]
//! takes the whole link down (every datagram dropped, including those already in flight when
//! they would arrive) and up again; [`FaultProxy::flap`] does it on a schedule.
//!
//! Everything is bounded: at most [`MAX_IN_FLIGHT`] delayed datagrams at once (beyond that
//! they are dropped, like a full router queue) and at most [`MAX_CLIENTS`] client addresses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Delayed datagrams the proxy holds at once, over both directions and all clients.
pub const MAX_IN_FLIGHT: usize = 50_000;
/// Client addresses the proxy serves.
pub const MAX_CLIENTS: usize = 4096;

/// Faults applied to the datagrams of one direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Fixed one-way delay.
    pub latency: Duration,
    /// Each datagram is delayed by a further uniform 0..=jitter.
    pub jitter: Duration,
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Probability that a datagram is sent twice (the copy with its own delay).
    pub duplicate: f64,
    /// Probability that a datagram is held back by a further `reorder_delay`.
    pub reorder: f64,
    /// The hold-back of reordered datagrams.
    pub reorder_delay: Duration,
}

impl Faults {
    /// A perfect link.
    pub const NONE: Faults = Faults {
        latency: Duration::ZERO,
        jitter: Duration::ZERO,
        loss: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        reorder_delay: Duration::ZERO,
    };

    /// Half of a round trip `rtt` each way, with `loss`, ±10 % jitter, 1 % duplicates and 5 %
    /// of datagrams held back by a further quarter RTT.
    pub fn wan(rtt: Duration, loss: f64) -> Faults {
        Faults {
            latency: rtt / 2 - rtt / 20,
            jitter: rtt / 10,
            loss,
            duplicate: 0.01,
            reorder: 0.05,
            reorder_delay: rtt / 4,
        }
    }
}

/// What the proxy did, for the test's report.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Datagrams received from either side.
    pub received: AtomicU64,
    /// Datagrams forwarded (duplicates included).
    pub forwarded: AtomicU64,
    /// Dropped by the loss probability.
    pub lost: AtomicU64,
    /// Dropped because the link was down.
    pub dropped_link_down: AtomicU64,
    /// Extra copies sent.
    pub duplicated: AtomicU64,
    /// Held back for reordering.
    pub reordered: AtomicU64,
    /// Dropped because [`MAX_IN_FLIGHT`] were already queued.
    pub dropped_queue_full: AtomicU64,
}

impl ProxyStats {
    /// One line for the test output.
    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "received {}, forwarded {}, lost {}, dropped while down {}, duplicated {}, reordered {}, queue-full drops {}",
            g(&self.received),
            g(&self.forwarded),
            g(&self.lost),
            g(&self.dropped_link_down),
            g(&self.duplicated),
            g(&self.reordered),
            g(&self.dropped_queue_full)
        )
    }
}

/// A deterministic RNG (SplitMix64): the proxy's fault decisions follow from its seed (the
/// timing of the tasks that consume them does not).
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..=max.
    pub fn duration(&mut self, max: Duration) -> Duration {
        max.mul_f64(self.unit())
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

struct Shared {
    link_up: AtomicBool,
    to_relay: Mutex<Faults>,
    to_client: Mutex<Faults>,
    rng: Mutex<SplitMix>,
    in_flight: AtomicUsize,
    stats: ProxyStats,
}

impl Shared {
    /// The delays at which to deliver one datagram (empty: dropped).
    fn plan(&self, to_relay: bool) -> Vec<Duration> {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        if !self.link_up.load(Ordering::Relaxed) {
            self.stats.dropped_link_down.fetch_add(1, Ordering::Relaxed);
            return Vec::new();
        }
        let f = *if to_relay {
            &self.to_relay
        } else {
            &self.to_client
        }
        .lock()
        .unwrap_or_else(|p| p.into_inner());
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        if rng.unit() < f.loss {
            self.stats.lost.fetch_add(1, Ordering::Relaxed);
            return Vec::new();
        }
        let copies = if rng.unit() < f.duplicate {
            self.stats.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                let mut d = f.latency + rng.duration(f.jitter);
                if rng.unit() < f.reorder {
                    self.stats.reordered.fetch_add(1, Ordering::Relaxed);
                    d += f.reorder_delay;
                }
                d
            })
            .collect()
    }
}

/// A running proxy (stops when dropped).
pub struct FaultProxy {
    /// Where devices connect.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl FaultProxy {
    /// Listen on a free loopback port and forward to `relay` with `faults` both ways, from
    /// `seed`. Must be called inside a tokio runtime.
    pub async fn start(relay: SocketAddr, faults: Faults, seed: u64) -> Result<FaultProxy> {
        let listen = Arc::new(
            UdpSocket::bind("127.0.0.1:0")
                .await
                .context("binding the proxy socket")?,
        );
        let addr = listen.local_addr()?;
        let shared = Arc::new(Shared {
            link_up: AtomicBool::new(true),
            to_relay: Mutex::new(faults),
            to_client: Mutex::new(faults),
            rng: Mutex::new(SplitMix::new(seed)),
            in_flight: AtomicUsize::new(0),
            stats: ProxyStats::default(),
        });
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let main = tokio::spawn(accept_loop(
            listen,
            relay,
            Arc::clone(&shared),
            Arc::clone(&tasks),
        ));
        tasks.lock().unwrap_or_else(|p| p.into_inner()).push(main);
        Ok(FaultProxy {
            addr,
            shared,
            tasks,
        })
    }

    /// Take the link down (`false`: every datagram dropped) or up.
    pub fn set_link(&self, up: bool) {
        self.shared.link_up.store(up, Ordering::SeqCst);
    }

    /// Whether the link is up.
    pub fn link_up(&self) -> bool {
        self.shared.link_up.load(Ordering::SeqCst)
    }

    /// Change the faults of both directions (e.g. [`Faults::NONE`] to heal the network).
    pub fn set_faults(&self, faults: Faults) {
        *self
            .shared
            .to_relay
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = faults;
        *self
            .shared
            .to_client
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = faults;
    }

    /// Change the faults of one direction.
    pub fn set_direction(&self, to_relay: bool, faults: Faults) {
        let slot = if to_relay {
            &self.shared.to_relay
        } else {
            &self.shared.to_client
        };
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = faults;
    }

    /// Counters so far.
    pub fn stats(&self) -> &ProxyStats {
        &self.shared.stats
    }

    /// Take the link down for `down` at the end of every `period`, starting one `period -
    /// down` from now, until `until` has passed (then it is left up).
    pub fn flap(&self, period: Duration, down: Duration, until: Duration) {
        let shared = Arc::clone(&self.shared);
        let task = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let end = start + until;
            loop {
                let up_for = period.saturating_sub(down);
                tokio::time::sleep(up_for).await;
                if tokio::time::Instant::now() >= end {
                    break;
                }
                shared.link_up.store(false, Ordering::SeqCst);
                tokio::time::sleep(down.min(end - tokio::time::Instant::now())).await;
                shared.link_up.store(true, Ordering::SeqCst);
                if tokio::time::Instant::now() >= end {
                    break;
                }
            }
            shared.link_up.store(true, Ordering::SeqCst);
        });
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

/// Send `data` on `socket` (to `to`, or connected) after each delay of the plan, unless the
/// link is down by then.
fn deliver(
    shared: &Arc<Shared>,
    socket: &Arc<UdpSocket>,
    to: Option<SocketAddr>,
    data: &[u8],
    to_relay: bool,
) {
    for delay in shared.plan(to_relay) {
        if shared.in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
            shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            shared
                .stats
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let shared = Arc::clone(shared);
        let socket = Arc::clone(socket);
        let data = data.to_vec();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if shared.link_up.load(Ordering::Relaxed) {
                let sent = match to {
                    Some(addr) => socket.send_to(&data, addr).await,
                    None => socket.send(&data).await,
                };
                if sent.is_ok() {
                    shared.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                shared
                    .stats
                    .dropped_link_down
                    .fetch_add(1, Ordering::Relaxed);
            }
            shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

async fn accept_loop(
    listen: Arc<UdpSocket>,
    relay: SocketAddr,
    shared: Arc<Shared>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, client)) = listen.recv_from(&mut buf).await else {
            continue;
        };
        let up = match upstreams.get(&client) {
            Some(s) => Arc::clone(s),
            None => {
                if upstreams.len() >= MAX_CLIENTS {
                    continue;
                }
                let Ok(sock) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                if sock.connect(relay).await.is_err() {
                    continue;
                }
                let sock = Arc::new(sock);
                upstreams.insert(client, Arc::clone(&sock));
                // Relay → client for this client.
                let back = tokio::spawn(return_loop(
                    Arc::clone(&sock),
                    Arc::clone(&listen),
                    client,
                    Arc::clone(&shared),
                ));
                tasks.lock().unwrap_or_else(|p| p.into_inner()).push(back);
                sock
            }
        };
        deliver(&shared, &up, None, &buf[..n], true);
    }
}

async fn return_loop(
    upstream: Arc<UdpSocket>,
    listen: Arc<UdpSocket>,
    client: SocketAddr,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match upstream.recv(&mut buf).await {
            Ok(n) => deliver(&shared, &listen, Some(client), &buf[..n], false),
            // ICMP port unreachable while the relay is down surfaces as an error on a
            // connected socket: keep going.
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn forwards_delays_drops_and_flaps() -> Result<()> {
        let echo = UdpSocket::bind("127.0.0.1:0").await?;
        let echo_addr = echo.local_addr()?;
        tokio::spawn(async move {
            let mut b = [0u8; 2048];
            while let Ok((n, from)) = echo.recv_from(&mut b).await {
                let _ = echo.send_to(&b[..n], from).await;
            }
        });
        let faults = Faults {
            latency: Duration::from_millis(40),
            ..Faults::NONE
        };
        let proxy = FaultProxy::start(echo_addr, faults, 7).await?;
        let client = UdpSocket::bind("127.0.0.1:0").await?;
        client.connect(proxy.addr).await?;
        let mut b = [0u8; 64];

        // Latency both ways: ≥ 80 ms round trip.
        let t = tokio::time::Instant::now();
        client.send(b"ping").await?;
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut b)).await??;
        assert_eq!(&b[..n], b"ping");
        assert!(
            t.elapsed() >= Duration::from_millis(80),
            "{:?}",
            t.elapsed()
        );

        // Link down: nothing comes back.
        proxy.set_link(false);
        client.send(b"lost").await?;
        assert!(
            tokio::time::timeout(Duration::from_millis(300), client.recv(&mut b))
                .await
                .is_err()
        );
        proxy.set_link(true);

        // 100 % loss one way.
        proxy.set_direction(
            true,
            Faults {
                loss: 1.0,
                ..Faults::NONE
            },
        );
        client.send(b"gone").await?;
        assert!(
            tokio::time::timeout(Duration::from_millis(300), client.recv(&mut b))
                .await
                .is_err()
        );

        // Duplication: two copies back.
        proxy.set_direction(
            true,
            Faults {
                duplicate: 1.0,
                ..Faults::NONE
            },
        );
        proxy.set_direction(false, Faults::NONE);
        client.send(b"twice").await?;
        for _ in 0..2 {
            let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut b)).await??;
            assert_eq!(&b[..n], b"twice");
        }
        let s = proxy.stats();
        assert!(s.lost.load(Ordering::Relaxed) >= 1);
        assert!(s.dropped_link_down.load(Ordering::Relaxed) >= 1);
        assert!(s.duplicated.load(Ordering::Relaxed) >= 1);

        // A scheduled flap takes it down and brings it back.
        proxy.set_faults(Faults::NONE);
        proxy.flap(
            Duration::from_millis(200),
            Duration::from_millis(100),
            Duration::from_secs(1),
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!proxy.link_up());
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(proxy.link_up());
        Ok(())
    }

    #[test]
    fn rng_is_seeded() {
        let a: Vec<u64> = {
            let mut r = SplitMix::new(1);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let mut r = SplitMix::new(1);
        assert_eq!(a, (0..4).map(|_| r.next_u64()).collect::<Vec<_>>());
        assert!((0..1000).all(|_| (0.0..1.0).contains(&r.unit())));
    }
}
