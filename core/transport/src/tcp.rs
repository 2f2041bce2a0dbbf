//! TLS over TCP, the fallback where UDP is blocked (docs/relay.md, "TCP fallback"), and the
//! frame reader/writer it shares with any byte stream.
//!
//! The TCP connection carries one TLS 1.3 session (rustls, *ring*, ALPN `homeroom/1`, the
//! relay's certificate pinned by fingerprint exactly as over QUIC) and, inside it, exactly the
//! frames a QUIC stream carries: `u32` big-endian length + postcard `Message`, with the same
//! size limit enforced before any body is buffered. The handshake proof signs the TLS exporter
//! of this session (same label, no context), so authentication is identical.
//!
//! Also here: the certificate check for LAN peers ([`lan_client_config`]), which accepts any
//! certificate because peers authenticate each other by their device keys in the protocol
//! handshake (docs/lan.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use homeroom_protocol::{Decoded, EXPORTER_LABEL, FrameDecoder, Message, encode_frame};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::certificate::{RelayCertificate, fingerprint_of};
use crate::config::TransportLimits;
use crate::error::TransportError;
use crate::{ALPN, install_crypto_provider};

/// A TLS session over TCP (either end).
pub type TcpTlsStream = tokio_rustls::TlsStream<TcpStream>;

/// TCP keep-alive on both ends of a fallback connection: the first probe after this much
/// silence (QUIC's keep-alive interval, `TransportLimits::keep_alive`)…
pub const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(20);
/// …then a probe this often…
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// …and the connection fails after this many unanswered probes: a peer that vanished without
/// closing (a phone that lost its network) is noticed ~35 s after its last packet, about when
/// QUIC's 30 s idle timeout would notice it. The protocol sends nothing while a class is idle,
/// so without this a relay would hold such connections, and their buffers, forever; the probes
/// also keep a NAT's mapping for the device, as QUIC's keep-alive does.
pub const TCP_KEEPALIVE_RETRIES: u32 = 3;

/// Turn on [`TCP_KEEPALIVE_IDLE`] keep-alive probes for `tcp`.
pub fn set_tcp_keepalive(tcp: &TcpStream) -> std::io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_IDLE)
        .with_interval(TCP_KEEPALIVE_INTERVAL);
    #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
    let keepalive = keepalive.with_retries(TCP_KEEPALIVE_RETRIES);
    socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive)
}

/// The relay's TLS-over-TCP server configuration: TLS 1.3 only (so exporter values are unique
/// per session), the relay certificate, ALPN `homeroom/1`, no 0-RTT.
pub fn tcp_server_config(
    cert: &RelayCertificate,
) -> Result<Arc<rustls::ServerConfig>, TransportError> {
    install_crypto_provider();
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
    // No session tickets, no resumption: every connection is a full handshake (as over QUIC,
    // `server_config`).
    tls.send_tls13_tickets = 0;
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(tls))
}

/// A device's TLS client (QUIC and TCP): TLS 1.3 only, the certificate checked by
/// [`CertificateCheck`] on every connection (no resumption).
pub(crate) fn tls_client(pinned: Option<[u8; 32]>) -> Result<rustls::ClientConfig, TransportError> {
    install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(CertificateCheck {
        pinned,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // Never resume: the certificate check above runs on every connection.
    tls.resumption = rustls::client::Resumption::disabled();
    Ok(tls)
}

/// A LAN peer's QUIC client configuration: any certificate is accepted (the server must still
/// prove possession of its key in the TLS 1.3 handshake). Peers cannot pin each other's
/// certificates in advance; they authenticate by their device keys in the protocol handshake,
/// which signs this TLS session's exporter, so a machine in the middle learns nothing it could
/// use (docs/lan.md).
pub fn lan_client_config(limits: &TransportLimits) -> Result<quinn::ClientConfig, TransportError> {
    let tls = tls_client(None)?;
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(limits.transport()?));
    Ok(cfg)
}

/// Connect to a relay's TLS-over-TCP listener at `addr`, trusting exactly the certificate
/// whose SHA-256 is `pinned`, within `timeout` (TCP and TLS handshakes together).
pub async fn connect_tcp(
    addr: SocketAddr,
    pinned: [u8; 32],
    timeout: Duration,
) -> Result<TcpTlsStream, TransportError> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_client(Some(pinned))?));
    let what = format!("TCP/TLS connect {addr}");
    let fut = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| TransportError::Io {
                what: what.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        if let Err(e) = set_tcp_keepalive(&tcp) {
            tracing::warn!(error = %e, "TCP keep-alive unavailable: a lost relay is noticed late");
        }
        let name = ServerName::try_from("homeroom-relay")
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|source| TransportError::Io {
                what: what.clone(),
                source,
            })?;
        Ok(tokio_rustls::TlsStream::Client(tls))
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(TransportError::Io {
            what,
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
        }),
    }
}

/// Complete the TLS handshake of an accepted TCP connection.
pub async fn accept_tcp(
    config: Arc<rustls::ServerConfig>,
    tcp: TcpStream,
) -> Result<TcpTlsStream, TransportError> {
    let _ = tcp.set_nodelay(true);
    if let Err(e) = set_tcp_keepalive(&tcp) {
        tracing::warn!(error = %e, "TCP keep-alive unavailable: a vanished device is noticed late");
    }
    let tls = tokio_rustls::TlsAcceptor::from(config)
        .accept(tcp)
        .await
        .map_err(|source| TransportError::Io {
            what: "TLS handshake".into(),
            source,
        })?;
    Ok(tokio_rustls::TlsStream::Server(tls))
}

/// The 32-byte TLS exporter value of a TCP/TLS session: the same label and (empty) context as
/// over QUIC, so the `Hello` proof is computed identically.
pub fn tcp_exporter(stream: &TcpTlsStream) -> Result<[u8; 32], TransportError> {
    let out = [0u8; 32];
    let r = match stream {
        tokio_rustls::TlsStream::Client(s) => {
            s.get_ref()
                .1
                .export_keying_material(out, EXPORTER_LABEL, None)
        }
        tokio_rustls::TlsStream::Server(s) => {
            s.get_ref()
                .1
                .export_keying_material(out, EXPORTER_LABEL, None)
        }
    };
    r.map_err(|_| TransportError::Exporter)
}

/// Writes frames to any byte stream (the TCP fallback's TLS stream).
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    max_frame: usize,
    /// Bytes written so far.
    pub bytes: u64,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Wrap a writer; frames larger than `max_frame` are refused before sending.
    pub fn new(inner: W, max_frame: usize) -> Self {
        Self {
            inner,
            max_frame,
            bytes: 0,
        }
    }

    /// Encode and send one message (flushed: TLS buffers otherwise).
    pub async fn send(&mut self, msg: &Message) -> Result<(), TransportError> {
        let frame = encode_frame(msg, self.max_frame)?;
        let io = |source| TransportError::Io {
            what: "write frame".into(),
            source,
        };
        self.inner.write_all(&frame).await.map_err(io)?;
        self.inner.flush().await.map_err(io)?;
        self.bytes += frame.len() as u64;
        Ok(())
    }

    /// End the stream gracefully (TLS close_notify, then TCP FIN).
    pub async fn finish(&mut self) {
        let _ = self.inner.shutdown().await;
    }
}

/// Reads frames from any byte stream, enforcing the size limit before buffering a body.
///
/// Memory: it reads straight into its decoder's buffer, asking for no more than the frame in
/// progress still needs (at most 64 KiB per read), and drops that buffer whenever no partial
/// frame is pending — an idle connection waiting for the next header holds a few bytes here,
/// not a read buffer (as [`FramedRecv`](crate::FramedRecv) over QUIC).
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    decoder: FrameDecoder,
    max_frame: usize,
    /// Bytes read so far.
    pub bytes: u64,
}

/// The most room a [`FrameReader`] asks for in one read: a large frame grows its buffer in steps
/// of up to this size as its bytes arrive, not by its announced length up front.
const READ_AHEAD_MAX: usize = 64 * 1024;

/// The least a [`FrameReader`] asks for: small frames that follow each other in one TLS record
/// are read together rather than header by header.
const READ_AT_LEAST: usize = 64;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wrap a reader.
    pub fn new(inner: R, max_frame: usize) -> Self {
        Self {
            inner,
            decoder: FrameDecoder::new(max_frame),
            max_frame,
            bytes: 0,
        }
    }

    /// The next message; `Ok(None)` when the peer ended the stream cleanly between frames.
    /// Cancel-safe: bytes read are kept in the decoder (`read_buf` appends only what one poll
    /// read).
    pub async fn recv(&mut self) -> Result<Option<Message>, TransportError> {
        loop {
            let want = match self.decoder.next_message()? {
                Decoded::Message(m) => return Ok(Some(m)),
                Decoded::NeedMore(n) => n.clamp(READ_AT_LEAST, READ_AHEAD_MAX),
            };
            if self.decoder.buffered() == 0 {
                // Nothing pending: release the decode buffer (it keeps the capacity of the
                // largest frame seen) before waiting, maybe for hours.
                self.decoder = FrameDecoder::new(self.max_frame);
            }
            let n = self
                .inner
                .read_buf(self.decoder.read_buffer(want))
                .await
                .map_err(|source| TransportError::Io {
                    what: "read frame".into(),
                    source,
                })?;
            if n == 0 {
                if self.decoder.buffered() == 0 {
                    return Ok(None);
                }
                return Err(TransportError::Truncated {
                    buffered: self.decoder.buffered(),
                });
            }
            self.bytes += n as u64;
        }
    }
}

/// Accepts the one certificate pinned (relay over TCP) or, with no pin, any certificate (LAN
/// peers); either way the server must prove possession of the certificate's key.
#[derive(Debug)]
struct CertificateCheck {
    pinned: Option<[u8; 32]>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for CertificateCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.pinned {
            Some(p) if fingerprint_of(end_entity.as_ref()) != p => {
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
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
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use homeroom_protocol::{FrameError, Message};

    use super::{FrameReader, FrameWriter};
    use crate::error::TransportError;

    #[tokio::test]
    async fn frames_round_trip_over_a_byte_stream() {
        let msgs = vec![
            Message::Welcome {
                version: 1,
                relay_time: 7,
            },
            Message::Error {
                code: homeroom_protocol::ErrorCode::Internal,
                detail: "x".repeat(300),
                fatal: false,
            },
        ];
        round_trip(msgs, 64, 1024).await;
    }

    /// Send `msgs` through a pipe of `pipe` bytes with frame limit `max`; the reader must give
    /// back exactly them, then the end of the stream.
    async fn round_trip(msgs: Vec<Message>, pipe: usize, max: usize) {
        let (a, b) = tokio::io::duplex(pipe);
        let mut w = FrameWriter::new(a, max);
        let mut r = FrameReader::new(b, max);
        let sent = msgs.clone();
        let writer = tokio::spawn(async move {
            for m in &sent {
                w.send(m).await.unwrap();
            }
            w.finish().await;
        });
        for m in msgs {
            assert_eq!(r.recv().await.unwrap(), Some(m));
        }
        assert_eq!(r.recv().await.unwrap(), None);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn an_oversized_header_is_refused_before_any_body() {
        use tokio::io::AsyncWriteExt;
        let (mut a, b) = tokio::io::duplex(64);
        let mut r = FrameReader::new(b, 1024);
        a.write_all(&[0, 0, 4, 1]).await.unwrap(); // 1025 bytes announced
        let err = r.recv().await.unwrap_err();
        assert!(
            matches!(err, TransportError::Frame(FrameError::TooLarge { .. })),
            "{err}"
        );
        // And a writer refuses to produce one.
        let mut w = FrameWriter::new(a, 8);
        let big = Message::Error {
            code: homeroom_protocol::ErrorCode::Internal,
            detail: "too long for eight bytes".into(),
            fatal: false,
        };
        assert!(matches!(
            w.send(&big).await,
            Err(TransportError::Frame(FrameError::TooLarge { .. }))
        ));
    }

    #[tokio::test]
    async fn a_frame_larger_than_one_read_ahead_arrives_whole() {
        // 200 KB: more than the reader's 64 KiB read-ahead, through a 1 KiB pipe.
        let big = Message::Error {
            code: homeroom_protocol::ErrorCode::Internal,
            detail: "x".repeat(200_000),
            fatal: false,
        };
        let small = Message::Welcome {
            version: 1,
            relay_time: 9,
        };
        round_trip(vec![big, small], 1024, 512 * 1024).await;
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_frame_is_truncated() {
        use tokio::io::AsyncWriteExt;
        let (mut a, b) = tokio::io::duplex(64);
        let mut r = FrameReader::new(b, 1024);
        a.write_all(&[0, 0, 0, 10, 1, 2]).await.unwrap();
        drop(a);
        assert!(matches!(
            r.recv().await,
            Err(TransportError::Truncated { buffered: 6 })
        ));
    }
}
