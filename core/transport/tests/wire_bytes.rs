//! Bytes on the wire for a short connection (a parent's idle reconnect is one: handshake,
//! `Hello`, `Welcome` + `Catalog`, close), over a real loopback QUIC connection with the
//! configurations the relay and devices use. The figures themselves come from the relay bench
//! (`HOMEROOM_BENCH_ONLY=w4`); these tests keep the choices that set them from regressing.

use std::time::Duration;

use homeroom_transport::{
    RelayCertificate, TransportLimits, client_config, parse_fingerprint, server_config,
};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Connect, exchange one small message each way (as large as a `Hello` and a
/// `Welcome` + `Catalog`), let the connection sit for a moment, and return both ends' stats.
async fn short_connection() -> Result<
    (quinn::ConnectionStats, quinn::ConnectionStats),
    Box<dyn std::error::Error + Send + Sync>,
> {
    let cert = RelayCertificate::generate(&[])?;
    let limits = TransportLimits::default();
    let server = quinn::Endpoint::server(server_config(&cert, &limits)?, "127.0.0.1:0".parse()?)?;
    let addr = server.local_addr()?;
    let relay = tokio::spawn(async move {
        let incoming = server.accept().await.ok_or("endpoint closed")?;
        let conn = incoming.await?;
        let (mut send, mut recv) = conn.accept_bi().await?;
        let mut hello = [0u8; 129];
        recv.read_exact(&mut hello).await?;
        send.write_all(&[0u8; 43]).await?;
        send.finish()?;
        // Stay up until the device closes, as the relay does.
        let _ = conn.closed().await;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(conn.stats())
    });

    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    client.set_default_client_config(client_config(
        parse_fingerprint(&cert.fingerprint_hex())?,
        &limits,
    )?);
    let conn = client.connect(addr, "homeroom-relay")?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&[0u8; 129]).await?;
    let mut answer = [0u8; 43];
    recv.read_exact(&mut answer).await?;
    // Long enough for path MTU discovery to probe if it were on (it starts right after the
    // handshake and, on loopback, every probe is answered within a millisecond).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let device = conn.stats();
    conn.close(0u32.into(), b"bye");
    let relay = tokio::time::timeout(Duration::from_secs(5), relay).await???;
    client.wait_idle().await;
    Ok((device, relay))
}

/// Neither end probes the path MTU: on a 1,200-byte-MTU start each probe is a padded datagram of
/// up to 1,452 bytes plus its acknowledgement, four per side with quinn's defaults — 11 of the
/// ~16 KB an idle reconnect used to cost (docs/benchmarks.md, W4).
#[tokio::test]
async fn no_path_mtu_probes_on_either_end() -> TestResult {
    let (device, relay) = short_connection().await?;
    assert_eq!(
        device.path.sent_plpmtud_probes, 0,
        "device probed the path MTU"
    );
    assert_eq!(
        relay.path.sent_plpmtud_probes, 0,
        "relay probed the path MTU"
    );
    assert_eq!(device.path.current_mtu, 1200);
    Ok(())
}

/// A short connection costs the device less than 5 KB of UDP payload both ways: two padded
/// 1,200-byte Initial datagrams from the device, one from the relay (its whole first flight,
/// certificate included, fits in it), and a few hundred bytes of 1-RTT packets.
#[tokio::test]
async fn a_short_connection_stays_under_5_kb() -> TestResult {
    let (device, _relay) = short_connection().await?;
    let total = device.udp_tx.bytes + device.udp_rx.bytes;
    println!(
        "short connection: {} B sent in {} datagrams, {} B received in {}",
        device.udp_tx.bytes, device.udp_tx.datagrams, device.udp_rx.bytes, device.udp_rx.datagrams
    );
    assert!(
        total < 5_000,
        "{total} B of UDP for a short connection ({} sent in {} datagrams, {} received in {})",
        device.udp_tx.bytes,
        device.udp_tx.datagrams,
        device.udp_rx.bytes,
        device.udp_rx.datagrams
    );
    Ok(())
}
