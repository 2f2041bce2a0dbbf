//! The relay issues no TLS session tickets, over QUIC or over the TCP fallback: no session can be
//! resumed (so no connection skips the pinned-certificate check) and there is no 0-RTT data to
//! replay (docs/threat-model.md). The client here is a test client that *would* store tickets,
//! with a store that counts them; with rustls' defaults the relay would send it two per
//! connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use homeroom_transport::{
    ALPN, RelayCertificate, TransportLimits, server_config, tcp_server_config,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Resumption};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, NamedGroup, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A session store that counts the TLS 1.3 tickets it is given.
#[derive(Debug)]
struct CountingStore {
    inner: ClientSessionMemoryCache,
    tickets: AtomicUsize,
}

impl ClientSessionStore for CountingStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.inner.set_kx_hint(server_name, group);
    }
    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.inner.kx_hint(server_name)
    }
    fn set_tls12_session(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(server_name, value);
    }
    fn tls12_session(
        &self,
        server_name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(server_name)
    }
    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.inner.remove_tls12_session(server_name);
    }
    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.tickets.fetch_add(1, Ordering::SeqCst);
        self.inner.insert_tls13_ticket(server_name, value);
    }
    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(server_name)
    }
}

/// Accepts any certificate (this test is about tickets, not pinning).
#[derive(Debug)]
struct AnyCertificate(rustls::crypto::WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

fn ticket_keeping_client(store: Arc<CountingStore>) -> Result<rustls::ClientConfig, rustls::Error> {
    homeroom_transport::install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate(provider.signature_verification_algorithms));
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.resumption = Resumption::store(store);
    Ok(tls)
}

fn counting_store() -> Arc<CountingStore> {
    Arc::new(CountingStore {
        inner: ClientSessionMemoryCache::new(8),
        tickets: AtomicUsize::new(0),
    })
}

#[tokio::test]
async fn the_relay_sends_no_session_tickets_over_quic() -> TestResult {
    let cert = RelayCertificate::generate(&[])?;
    let limits = TransportLimits::default();
    let server = quinn::Endpoint::server(server_config(&cert, &limits)?, "127.0.0.1:0".parse()?)?;
    let addr = server.local_addr()?;
    let relay = tokio::spawn(async move {
        let conn = server.accept().await.ok_or("endpoint closed")?.await?;
        let (mut send, mut recv) = conn.accept_bi().await?;
        let mut byte = [0u8; 1];
        recv.read_exact(&mut byte).await?;
        send.write_all(b"done").await?;
        send.finish()?;
        let _ = conn.closed().await;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });

    let store = counting_store();
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(ticket_keeping_client(store.clone())?)?;
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = client.connect(addr, "homeroom-relay")?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&[1]).await?;
    // The relay answers after the handshake is confirmed, when tickets would have been sent.
    let answer = recv.read_to_end(64).await?;
    assert_eq!(answer, b"done");
    conn.close(0u32.into(), b"bye");
    relay.await??;
    assert_eq!(
        store.tickets.load(Ordering::SeqCst),
        0,
        "the relay issued tickets"
    );
    Ok(())
}

#[tokio::test]
async fn the_relay_sends_no_session_tickets_over_tcp() -> TestResult {
    let cert = RelayCertificate::generate(&[])?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tcp_server_config(&cert)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let relay = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        tls.write_all(b"done").await?;
        tls.shutdown().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });

    let store = counting_store();
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(ticket_keeping_client(store.clone())?));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = connector
        .connect(ServerName::try_from("homeroom-relay")?, tcp)
        .await?;
    tls.write_all(&[1]).await?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await?;
    assert_eq!(answer, b"done");
    relay.await??;
    assert_eq!(
        store.tickets.load(Ordering::SeqCst),
        0,
        "the relay issued tickets"
    );
    Ok(())
}

/// The counting store does see tickets from a server configured with rustls' defaults, so the
/// two tests above could fail.
#[tokio::test]
async fn a_default_rustls_server_would_send_tickets() -> TestResult {
    homeroom_transport::install_crypto_provider();
    let ck = rcgen::generate_simple_self_signed(vec!["homeroom-relay".to_string()])?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der())?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_no_client_auth()
    .with_single_cert(vec![CertificateDer::from(ck.cert.der().to_vec())], key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let relay = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        tls.write_all(b"done").await?;
        tls.shutdown().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });
    let store = counting_store();
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(ticket_keeping_client(store.clone())?));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = connector
        .connect(ServerName::try_from("homeroom-relay")?, tcp)
        .await?;
    tls.write_all(&[1]).await?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await?;
    relay.await??;
    assert!(store.tickets.load(Ordering::SeqCst) > 0);
    Ok(())
}
