//! The memory floor of one idle QUIC connection on a bare quinn server: what any server on
//! quinn + rustls pays per connected device before it holds a byte of application state.
//!
//! `cargo bench -p homeroom-transport --bench quic_floor` starts this binary again as a child
//! (`--serve`): a quinn server with the relay's transport settings (`server_config` with the
//! default `TransportLimits`, TLS 1.3 with the *ring* provider, one datagram per send, the
//! relay's UDP receive buffer) and nothing else — every accepted connection gets one task that
//! answers a single bidirectional stream and then waits for the close. This process opens
//! `HOMEROOM_BENCH_CONNS` connections (default 1,000) from one client endpoint, each sending
//! 64 bytes and reading the answer, and reads the child's RSS from `/proc` before and after.
//! Three rounds (fresh servers); the median is the figure. `HOMEROOM_BENCH_QUICK=1`: 100
//! connections, one round (the test command's smoke run). Compare with the relay's W6
//! (`HOMEROOM_BENCH_ONLY=w6 cargo bench -p homeroom-e2e --bench relay`) to see what
//! Homeroom adds on top (docs/benchmarks.md, "Memory per connected device, profiled").

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use homeroom_transport::{
    RELAY_SEND_SEGMENTS, RELAY_UDP_RECEIVE_BUFFER, RelayCertificate, TransportLimits,
    client_config, install_crypto_provider, parse_fingerprint, segment_capped_socket,
    server_config, set_udp_receive_buffer,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--serve") {
        return serve();
    }
    // The test command runs every bench once with HOMEROOM_BENCH_QUICK=1: 100 connections,
    // one round.
    let quick = std::env::var("HOMEROOM_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let conns: usize = match std::env::var("HOMEROOM_BENCH_CONNS") {
        Ok(v) => v.parse()?,
        Err(_) if quick => 100,
        Err(_) => 1000,
    };
    let rounds = if quick { 1 } else { 3 };
    println!(
        "QUIC floor — a bare quinn server with the relay's transport settings, {conns} idle connections"
    );
    let mut per_conn = Vec::new();
    for round in 1..=rounds {
        let (kib, base_mib) = round_once(conns)?;
        println!(
            "  round {round}: server RSS empty {base_mib:.1} MiB, +{kib:.1} KiB per connection"
        );
        per_conn.push(kib);
    }
    per_conn.sort_by(f64::total_cmp);
    println!(
        "  median: {:.1} KiB of server RSS per idle QUIC connection (one answered stream each)",
        per_conn[per_conn.len() / 2]
    );
    Ok(())
}

/// One server child, `conns` connections: (KiB of RSS per connection, empty RSS in MiB).
fn round_once(conns: usize) -> Result<(f64, f64), BoxError> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().ok_or("no child stdout")?).lines();
    let ready = lines.next().ok_or("server child exited before READY")??;
    let mut words = ready.split_whitespace().skip(1);
    let addr: SocketAddr = words.next().ok_or("no address")?.parse()?;
    let fp = parse_fingerprint(words.next().ok_or("no fingerprint")?)?;
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(pid)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let held = rt.block_on(async {
        let socket = std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        set_udp_receive_buffer(&socket, RELAY_UDP_RECEIVE_BUFFER)?;
        let mut ep = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        ep.set_default_client_config(client_config(fp, &TransportLimits::default())?);
        let mut held = Vec::with_capacity(conns);
        for _ in 0..conns {
            let conn = ep.connect(addr, "homeroom-relay")?.await?;
            let (mut send, mut recv) = conn.open_bi().await?;
            send.write_all(&[7u8; 64]).await?;
            let mut answer = [0u8; 64];
            recv.read_exact(&mut answer).await?;
            held.push((conn, send, recv));
        }
        Ok::<_, BoxError>((ep, held))
    })?;
    std::thread::sleep(Duration::from_millis(1500));
    let after = rss_kib(pid)?;
    drop(held);
    drop(rt);
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"stop\n");
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok((
        (after.saturating_sub(before)) as f64 / conns as f64,
        before as f64 / 1024.0,
    ))
}

fn rss_kib(pid: u32) -> Result<u64, BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("no VmRSS value")?
        .parse()?)
}

/// The child: a bare quinn server, until stdin closes.
fn serve() -> Result<(), BoxError> {
    install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let cert = RelayCertificate::generate(&["homeroom-relay".to_owned()])?;
        let config = server_config(&cert, &TransportLimits::default())?;
        let socket = std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        set_udp_receive_buffer(&socket, RELAY_UDP_RECEIVE_BUFFER)?;
        let addr = socket.local_addr()?;
        let socket = segment_capped_socket(socket, RELAY_SEND_SEGMENTS)?;
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        println!("READY {addr} {}", cert.fingerprint_hex());
        std::io::stdout().flush()?;
        let accept = tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else {
                        return;
                    };
                    if let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        let mut buf = [0u8; 64];
                        if recv.read_exact(&mut buf).await.is_ok() {
                            let _ = send.write_all(&buf).await;
                        }
                        conn.closed().await;
                    }
                });
            }
        });
        // Until the parent closes stdin (or kills us).
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        })
        .await?;
        accept.abort();
        Ok(())
    })
}
