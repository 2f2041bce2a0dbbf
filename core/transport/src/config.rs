//! QUIC and TLS configuration for both ends.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::ALPN;
use crate::certificate::RelayCertificate;
use crate::error::TransportError;

/// Transport limits: what one peer can make the other hold. quinn's defaults let one client
/// pin ~100 MiB of relay memory with unread streams; these do not.
#[derive(Debug, Clone)]
pub struct TransportLimits {
    /// Bidirectional streams a peer may have open at once (the protocol uses one).
    pub max_bidi_streams: u32,
    /// Unidirectional streams a peer may open (the protocol uses none).
    pub max_uni_streams: u32,
    /// Bytes a peer may have in flight on one stream before we read them.
    pub stream_receive_window: u32,
    /// Bytes a peer may have in flight on the whole connection.
    pub connection_receive_window: u32,
    /// Close a connection silent for this long.
    pub idle_timeout: Duration,
    /// Send keep-alives this often (devices behind NAT).
    pub keep_alive: Option<Duration>,
}

impl Default for TransportLimits {
    fn default() -> Self {
        Self {
            max_bidi_streams: 2,
            max_uni_streams: 0,
            stream_receive_window: 1024 * 1024,
            connection_receive_window: 2 * 1024 * 1024,
            idle_timeout: Duration::from_secs(60),
            keep_alive: Some(Duration::from_secs(20)),
        }
    }
}

impl TransportLimits {
    pub(crate) fn transport(&self) -> Result<TransportConfig, TransportError> {
        let mut t = TransportConfig::default();
        t.max_concurrent_bidi_streams(VarInt::from_u32(self.max_bidi_streams));
        t.max_concurrent_uni_streams(VarInt::from_u32(self.max_uni_streams));
        t.stream_receive_window(VarInt::from_u32(self.stream_receive_window));
        t.receive_window(VarInt::from_u32(self.connection_receive_window));
        t.send_window(u64::from(self.connection_receive_window) * 2);
        let idle = IdleTimeout::try_from(self.idle_timeout)
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        t.max_idle_timeout(Some(idle));
        t.keep_alive_interval(self.keep_alive);
        // The protocol sends no QUIC datagrams and neither end reads them: refuse them (quinn
        // would otherwise buffer up to 1.25 MB of unread datagrams per connection for a peer).
        t.datagram_receive_buffer_size(None);
        t.datagram_send_buffer_size(0);
        // No path MTU discovery: packets stay at QUIC's 1,200-byte minimum. Each probe is a
        // padded datagram of up to 1,452 bytes (four per side per connection with quinn's
        // defaults, repeated every 10 min where the path drops them): 11 of the ~16 KB a
        // parent's idle reconnect cost on metered mobile data. Larger packets would save ~0.5 %
        // of a fresh device's whole-year download (docs/benchmarks.md, W4).
        t.mtu_discovery_config(None);
        Ok(t)
    }
}

/// The relay's QUIC server configuration.
pub fn server_config(
    cert: &RelayCertificate,
    limits: &TransportLimits,
) -> Result<quinn::ServerConfig, TransportError> {
    crate::install_crypto_provider();
    let (chain, key) = cert.rustls_parts();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    // No session tickets, so no resumption and no 0-RTT: every connection is a full handshake
    // that checks the pinned certificate. Resumption would save no bytes (the relay's whole
    // first flight, certificate included, fits in the 1,200-byte Initial datagram QUIC pads to
    // anyway) while the tickets themselves cost ~170 B per connection (docs/protocol.md).
    tls.send_tls13_tickets = 0;
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(limits.transport()?));
    cfg.migration(true);
    // No NEW_TOKEN address-validation tokens: the relay never asks for address validation
    // (no Retry) and its handshake flight is within the 3x anti-amplification limit, so they
    // would be ~70 B per connection for nothing.
    let mut tokens = quinn::ValidationTokenConfig::default();
    tokens.sent(0);
    cfg.validation_token_config(tokens);
    Ok(cfg)
}

/// A device's QUIC client configuration that trusts exactly the relay certificate whose
/// SHA-256 is `pinned` (no CA, no name check: the invite carries the fingerprint).
pub fn client_config(
    pinned: [u8; 32],
    limits: &TransportLimits,
) -> Result<quinn::ClientConfig, TransportError> {
    // The same TLS as over TCP: TLS 1.3, the pinned certificate checked on every connection
    // (no resumption, so no 0-RTT either — see `server_config`).
    let tls = crate::tcp::tls_client(Some(pinned))?;
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(limits.transport()?));
    Ok(cfg)
}
