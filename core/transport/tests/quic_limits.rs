//! QUIC limits of the transport configuration, checked over a real loopback connection.

use std::sync::Arc;

use homeroom_transport::{
    RelayCertificate, TransportLimits, client_config, parse_fingerprint, server_config,
};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The relay does not advertise QUIC datagrams, so a peer cannot make it buffer unread ones
/// (quinn's default would keep up to 1.25 MB per connection).
#[tokio::test]
async fn the_relay_refuses_quic_datagrams() -> TestResult {
    let cert = RelayCertificate::generate(&[])?;
    let limits = TransportLimits::default();
    let server = quinn::Endpoint::server(server_config(&cert, &limits)?, "127.0.0.1:0".parse()?)?;
    let addr = server.local_addr()?;
    let accept = tokio::spawn(async move {
        let incoming = server.accept().await.ok_or("endpoint closed")?;
        let conn = incoming.await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((server, conn))
    });

    // A client that would accept datagrams itself (quinn's default transport), so that what it
    // sees is only what the relay advertised.
    let mut client_cfg = client_config(parse_fingerprint(&cert.fingerprint_hex())?, &limits)?;
    client_cfg.transport_config(Arc::new(quinn::TransportConfig::default()));
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    client.set_default_client_config(client_cfg);
    let conn = client.connect(addr, "homeroom-relay")?.await?;
    let (_server, relay_side) = accept.await??;

    // `max_datagram_size` is what the *peer* advertised: `None` means the relay did not.
    assert_eq!(conn.max_datagram_size(), None, "relay advertised datagrams");
    drop(relay_side);
    conn.close(0u32.into(), b"done");
    Ok(())
}
