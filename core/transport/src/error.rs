//! Transport errors.

use std::path::PathBuf;

use homeroom_protocol::FrameError;

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The relay's certificate or key file could not be read or written.
    #[error("certificate file {path}: {source}")]
    CertificateFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate could not be generated or parsed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A fingerprint string is not 64 hex characters.
    #[error("invalid certificate fingerprint {0:?}: expected 64 hex characters (SHA-256)")]
    BadFingerprint(String),
    /// TLS configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The connection failed or was closed.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Connecting failed before a connection existed.
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// Writing to the stream failed.
    #[error("write: {0}")]
    Write(#[from] quinn::WriteError),
    /// Reading from the stream failed.
    #[error("read: {0}")]
    Read(#[from] quinn::ReadError),
    /// A frame was invalid (oversized, malformed).
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// The stream ended in the middle of a frame.
    #[error("stream ended in the middle of a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes of the incomplete frame.
        buffered: usize,
    },
    /// The TLS exporter was unavailable.
    #[error("TLS exporter unavailable")]
    Exporter,
    /// I/O on the TLS-over-TCP fallback (or a LAN socket) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done (e.g. "TCP connect 192.0.2.1:4433").
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A socket could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}
