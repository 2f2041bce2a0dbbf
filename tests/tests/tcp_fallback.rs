//! The relay's TLS-over-TCP fallback (docs/relay.md, "TCP fallback"): with UDP to the relay
//! blocked (a loopback UDP proxy that drops everything until told otherwise), devices sync over
//! TCP with the real relay process; when UDP passes again they move back to QUIC.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod lan_support;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use homeroom_e2e::RelayProcess;
use lan_support::DeviceProc;

const T: Duration = Duration::from_secs(30);

/// A UDP forwarder to `upstream` that drops every datagram while `blocked` is set: "UDP to the
/// relay is blocked". One upstream socket per client, so the relay sees distinct peers.
struct UdpGate {
    addr: SocketAddr,
    blocked: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

impl UdpGate {
    fn start(upstream: SocketAddr) -> Result<Self> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0")?);
        let addr = front.local_addr()?;
        let blocked = Arc::new(AtomicBool::new(true));
        let dropped = Arc::new(AtomicU64::new(0));
        let (b, d) = (blocked.clone(), dropped.clone());
        std::thread::spawn(move || {
            let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut buf = [0u8; 65536];
            while let Ok((n, client)) = front.recv_from(&mut buf) {
                if b.load(Ordering::SeqCst) {
                    d.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let back = match backs.get(&client) {
                    Some(s) => s.clone(),
                    None => {
                        let Ok(s) = UdpSocket::bind("127.0.0.1:0") else {
                            continue;
                        };
                        let s = Arc::new(s);
                        backs.insert(client, s.clone());
                        let (front, s2, b2, d2) = (front.clone(), s.clone(), b.clone(), d.clone());
                        std::thread::spawn(move || {
                            let mut buf = [0u8; 65536];
                            while let Ok((n, _)) = s2.recv_from(&mut buf) {
                                if b2.load(Ordering::SeqCst) {
                                    d2.fetch_add(1, Ordering::SeqCst);
                                    continue;
                                }
                                let _ = front.send_to(&buf[..n], client);
                            }
                        });
                        s
                    }
                };
                let _ = back.send_to(&buf[..n], upstream);
            }
        });
        Ok(Self {
            addr,
            blocked,
            dropped,
        })
    }
}

fn tcp_addr_of(relay: &RelayProcess) -> Result<SocketAddr> {
    let deadline = std::time::Instant::now() + T;
    loop {
        let found = relay.log.lock().unwrap().iter().find_map(|l| {
            l.strip_prefix("TCP fallback listening on ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|a| a.parse().ok())
        });
        if let Some(a) = found {
            return Ok(a);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the relay did not report its TCP listener"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn devices_sync_over_tcp_while_udp_is_blocked_and_switch_back() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = RelayProcess::start(&dir.path().join("relay"), "127.0.0.1:0")?;
    let tcp = tcp_addr_of(&relay)?;
    let gate = UdpGate::start(relay.addr)?;
    let fp = hex::encode(relay.fingerprint);

    let mut teacher = DeviceProc::start("teacher", &dir.path().join("teacher"))?;
    let mut parent = DeviceProc::start("parent", &dir.path().join("parent"))?;
    let class = teacher.cmd("create_class 4C")?;
    let fam = teacher.cmd(&format!("add_family {class} Ana"))?;
    teacher.cmd(&format!("add_guardian {class} {fam} {}", parent.id))?;

    // QUIC goes to the gate (blocked), TCP straight to the relay. QUIC gets 1 s to connect,
    // and is retried every 2 s while on TCP.
    let sync = format!("relay {} {fp} {tcp} 1000 2000", gate.addr);
    teacher.cmd(&sync)?;
    parent.cmd(&sync)?;
    for d in [&mut teacher, &mut parent] {
        d.wait("status", T, |s| {
            s.contains("connected=true") && s.contains("over_tcp=true")
        })?;
    }
    let entry = teacher.cmd(&format!("post {class} over-tcp"))?;
    // `Saved` came back over TCP: the relay holds it durably.
    teacher.wait("status", T, |s| s.contains("pending=0"))?;
    parent
        .wait(&format!("titles {class}"), T, |t| t == "over-tcp")
        .context("the entry reached the parent over TCP")?;
    let reply = parent.cmd(&format!("reply {class} {entry} by-tcp"))?;
    parent.wait(&format!("delivery {reply}"), T, |s| s == "Delivered")?;
    assert!(
        gate.dropped.load(Ordering::SeqCst) > 0,
        "QUIC was tried (and dropped)"
    );
    assert!(
        relay
            .log
            .lock()
            .unwrap()
            .iter()
            .all(|l| !l.contains("panicked")),
        "relay log clean"
    );

    // UDP passes again: both move back to QUIC (within a retry period or two).
    gate.blocked.store(false, Ordering::SeqCst);
    for d in [&mut teacher, &mut parent] {
        d.wait("status", T, |s| {
            s.contains("connected=true") && s.contains("over_tcp=false")
        })?;
    }
    teacher.cmd(&format!("post {class} over-quic"))?;
    parent.wait(&format!("titles {class}"), T, |t| t == "over-quic|over-tcp")?;
    teacher.wait("status", T, |s| {
        s.contains("pending=0") && s.contains("over_tcp=false")
    })?;

    teacher.quit()?;
    parent.quit()?;
    Ok(())
}

/// Over TCP the relay applies the same frame limit and the same handshake check as over QUIC.
#[test]
fn tcp_listener_enforces_frame_limit_and_handshake_proof() -> Result<()> {
    use homeroom_protocol::{ErrorCode, Message, Sig64};
    use homeroom_transport::{FrameReader, FrameWriter, connect_tcp};
    use tokio::io::AsyncWriteExt;

    let dir = tempfile::tempdir()?;
    let relay = RelayProcess::start(&dir.path().join("relay"), "127.0.0.1:0")?;
    let tcp = tcp_addr_of(&relay)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // A wrong pin is refused by the TLS handshake itself.
        assert!(
            connect_tcp(tcp, [0; 32], Duration::from_secs(10))
                .await
                .is_err()
        );

        // A header announcing more than max_frame_bytes: a fatal FrameTooLarge, then the end.
        let mut s = connect_tcp(tcp, relay.fingerprint, Duration::from_secs(10)).await?;
        s.write_all(&[0xff, 0xff, 0xff, 0xff]).await?;
        s.flush().await?;
        let mut r = FrameReader::new(s, homeroom_protocol::DEFAULT_MAX_FRAME);
        match r.recv().await? {
            Some(Message::Error {
                code: ErrorCode::FrameTooLarge,
                fatal: true,
                ..
            }) => {}
            other => anyhow::bail!("expected FrameTooLarge, got {other:?}"),
        }
        assert!(
            !matches!(r.recv().await, Ok(Some(_))),
            "nothing after a fatal error"
        );

        // A Hello whose proof does not sign this session's exporter: AuthenticationFailed.
        let s = connect_tcp(tcp, relay.fingerprint, Duration::from_secs(10)).await?;
        let (rd, wr) = tokio::io::split(s);
        let mut w = FrameWriter::new(wr, homeroom_protocol::DEFAULT_MAX_FRAME);
        let mut r = FrameReader::new(rd, homeroom_protocol::DEFAULT_MAX_FRAME);
        w.send(&Message::Hello {
            versions: vec![1],
            device: homeroom_core::DeviceId([7; 32]),
            proof: Sig64([0; 64]),
            classes: Vec::new(),
        })
        .await?;
        match r.recv().await? {
            Some(Message::Error {
                code: ErrorCode::AuthenticationFailed,
                fatal: true,
                ..
            }) => {}
            other => anyhow::bail!("expected AuthenticationFailed, got {other:?}"),
        }
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(())
}

/// A QUIC connection to the relay that completes the handshake and then says nothing.
async fn quic_connect(addr: SocketAddr, fingerprint: [u8; 32]) -> Result<quinn::Connection> {
    use homeroom_transport::{TransportLimits, client_config};
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    endpoint.set_default_client_config(client_config(fingerprint, &TransportLimits::default())?);
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        endpoint.connect(addr, "homeroom-relay")?,
    )
    .await
    .context("QUIC handshake timed out")??;
    Ok(conn)
}

/// Whether the relay turns away a TLS-over-TCP connection: the TLS handshake fails, or the
/// stream ends at once (an accepted one stays open, silent, waiting for `Hello`).
async fn tcp_refused(addr: SocketAddr, fingerprint: [u8; 32]) -> bool {
    use tokio::io::AsyncReadExt;
    match homeroom_transport::connect_tcp(addr, fingerprint, Duration::from_secs(10)).await {
        Err(_) => true,
        Ok(mut s) => {
            let mut byte = [0u8; 1];
            matches!(
                tokio::time::timeout(Duration::from_secs(3), s.read(&mut byte)).await,
                Ok(Ok(0) | Err(_))
            )
        }
    }
}

/// `GET /metrics` from the relay's operations listener on `port`: the body.
fn metrics(port: u16) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// The value of an unlabelled sample in a Prometheus text exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Poll `/metrics` until `homeroom_connections_open` is `n`.
async fn wait_open(port: u16, n: f64) -> Result<String> {
    let deadline = std::time::Instant::now() + T;
    loop {
        let text = metrics(port)?;
        if sample(&text, "homeroom_connections_open") == Some(n) {
            return Ok(text);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "homeroom_connections_open is not {n}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `max_connections` is one budget for QUIC and TCP together (docs/relay.md, "TCP fallback"):
/// with N open over either transport the next is refused over both, a slot freed on one
/// transport serves the other, and TCP sessions count in `homeroom_connections_open`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_is_one_budget_for_quic_and_tcp() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = dir.path().join("relay.toml");
    // A long handshake timeout: the silent connections below hold their slots.
    std::fs::write(
        &config,
        format!(
            "max_connections = 2\nhandshake_timeout_secs = 120\n\
             [http]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    )?;
    let relay = RelayProcess::start_with_args(
        &dir.path().join("relay"),
        "127.0.0.1:0",
        &["--config", config.to_str().context("path")?],
    )?;
    let tcp = tcp_addr_of(&relay)?;
    let fp = relay.fingerprint;
    homeroom_transport::install_crypto_provider();

    // A TCP session counts as an open connection.
    let tcp_held = homeroom_transport::connect_tcp(tcp, fp, Duration::from_secs(10)).await?;
    wait_open(port, 1.0).await?;
    let quic_held = quic_connect(relay.addr, fp).await?;
    wait_open(port, 2.0).await?;

    // Budget spent (one QUIC, one TCP): the third is refused over QUIC and over TCP.
    assert!(
        quic_connect(relay.addr, fp).await.is_err(),
        "a third connection over QUIC was served"
    );
    assert!(
        tcp_refused(tcp, fp).await,
        "a third connection over TCP was served"
    );
    let text = wait_open(port, 2.0).await?;
    assert_eq!(
        sample(&text, "homeroom_connections_refused_total"),
        Some(2.0),
        "{text}"
    );

    // The TCP session ends: its slot serves a QUIC connection, and the budget is full again.
    drop(tcp_held);
    wait_open(port, 1.0).await?;
    let quic_second = quic_connect(relay.addr, fp).await?;
    wait_open(port, 2.0).await?;
    assert!(
        tcp_refused(tcp, fp).await,
        "a third connection over TCP was served"
    );

    // Both QUIC connections close: two TCP sessions are served, and a third is refused.
    quic_held.close(0u32.into(), b"done");
    quic_second.close(0u32.into(), b"done");
    wait_open(port, 0.0).await?;
    let _tcp_a = homeroom_transport::connect_tcp(tcp, fp, Duration::from_secs(10)).await?;
    let _tcp_b = homeroom_transport::connect_tcp(tcp, fp, Duration::from_secs(10)).await?;
    wait_open(port, 2.0).await?;
    assert!(
        quic_connect(relay.addr, fp).await.is_err(),
        "a third connection over QUIC was served"
    );
    let log = relay.log.lock().unwrap().join("\n");
    assert!(
        log.contains("refusing TCP connection: max_connections reached")
            && log.contains("refusing connection: max_connections reached"),
        "refusals logged"
    );
    Ok(())
}
