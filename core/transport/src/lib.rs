//! # homeroom-transport
//!
//! The QUIC transport shared by the relay and devices: TLS 1.3 through rustls with the *ring*
//! provider only, the relay's self-signed certificate (generated once, kept, identified by its
//! SHA-256 fingerprint), certificate **pinning** on devices (the fingerprint travels in the
//! invite, so no CA or domain name is needed), transport limits that bound what one peer can
//! make the relay hold, the TLS exporter value the handshake proof is bound to, and a framed
//! message stream over one QUIC bidirectional stream.
#![warn(missing_docs, unreachable_pub)]

mod certificate;
mod config;
mod error;
mod framed;
mod socket;
mod tcp;

pub use certificate::{RelayCertificate, fingerprint_of, parse_fingerprint};
pub use config::{TransportLimits, client_config, server_config};
pub use error::TransportError;
pub use framed::{FramedRecv, FramedSend, exporter};
pub use socket::{
    RELAY_SEND_SEGMENTS, RELAY_UDP_RECEIVE_BUFFER, segment_capped_socket, set_udp_receive_buffer,
};
pub use tcp::{
    FrameReader, FrameWriter, TCP_KEEPALIVE_IDLE, TCP_KEEPALIVE_INTERVAL, TCP_KEEPALIVE_RETRIES,
    TcpTlsStream, accept_tcp, connect_tcp, lan_client_config, set_tcp_keepalive, tcp_exporter,
    tcp_server_config,
};

/// The ALPN protocol id: a relay refuses TLS clients that do not speak it.
pub const ALPN: &[u8] = b"homeroom/1";

/// Install ring as the process-wide rustls provider (idempotent). Quinn's and rcgen's defaults
/// use ring; pinning one provider avoids rustls's "cannot determine the CryptoProvider" panic.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
