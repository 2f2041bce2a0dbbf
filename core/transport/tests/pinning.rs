//! A device trusts exactly the relay certificate it pinned: over QUIC and over the TCP
//! fallback, another certificate (a relay impostor with its own self-signed certificate) fails
//! the TLS handshake, and the pinned one passes.

use std::time::Duration;

use homeroom_transport::{
    RelayCertificate, TransportLimits, accept_tcp, client_config, connect_tcp, parse_fingerprint,
    server_config, tcp_server_config,
};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Connect over QUIC to a relay serving `cert`, pinning `pinned`.
async fn quic_connects(cert: &RelayCertificate, pinned: [u8; 32]) -> Result<bool, TestError> {
    let limits = TransportLimits::default();
    let server = quinn::Endpoint::server(server_config(cert, &limits)?, "127.0.0.1:0".parse()?)?;
    let addr = server.local_addr()?;
    let accept = tokio::spawn(async move {
        if let Some(incoming) = server.accept().await {
            let _ = incoming.await;
        }
    });
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    client.set_default_client_config(client_config(pinned, &limits)?);
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        client.connect(addr, "homeroom-relay")?,
    )
    .await?;
    accept.abort();
    Ok(result.is_ok())
}

type TestError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::test]
async fn quic_accepts_only_the_pinned_certificate() -> TestResult {
    let relay = RelayCertificate::generate(&[])?;
    let impostor = RelayCertificate::generate(&[])?;
    let pinned = parse_fingerprint(&relay.fingerprint_hex())?;
    assert!(
        quic_connects(&relay, pinned).await?,
        "the pinned relay was refused"
    );
    assert!(
        !quic_connects(&impostor, pinned).await?,
        "a certificate that is not the pinned one was accepted"
    );
    Ok(())
}

#[tokio::test]
async fn tcp_accepts_only_the_pinned_certificate() -> TestResult {
    let relay = RelayCertificate::generate(&[])?;
    let impostor = RelayCertificate::generate(&[])?;
    let pinned = parse_fingerprint(&relay.fingerprint_hex())?;
    for (cert, want) in [(&relay, true), (&impostor, false)] {
        let config = tcp_server_config(cert)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            if let Ok((stream, _)) = listener.accept().await {
                let _ = accept_tcp(config, stream).await;
            }
        });
        let got = connect_tcp(addr, pinned, Duration::from_secs(5))
            .await
            .is_ok();
        server.abort();
        assert_eq!(
            got, want,
            "pinned relay accepted: {want}; got a connection: {got}"
        );
    }
    Ok(())
}
