//! Errors of the device client.

use homeroom_core::{ClassId, ModelError};
use homeroom_store::StoreError;
use homeroom_sync::SyncError;
use homeroom_transport::TransportError;

/// Why a device operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The local store failed (the operation did not happen, or is not on disk).
    #[error("local storage: {0}")]
    Store(Box<StoreError>),
    /// A document-level rule refused the operation (bad input, wrong role, unknown id).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The sync engine refused the operation.
    #[error(transparent)]
    Sync(Box<SyncError>),
    /// The network failed.
    #[error("network: {0}")]
    Transport(Box<TransportError>),
    /// The class is not on this device.
    #[error("class {0} is not on this device")]
    UnknownClass(ClassId),
    /// The device is not an active member of the class.
    #[error("this device is not a member of class {0}")]
    NotAMember(ClassId),
    /// The operating system's random source failed.
    #[error("random source unavailable: {0}")]
    Randomness(String),
    /// A filesystem operation on the data folder failed.
    #[error("data folder {path}: {source}")]
    Io {
        /// The path.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An invite code cannot be used (malformed, typo, unsupported version, expired).
    #[error(transparent)]
    Invite(#[from] homeroom_core::invite::InviteError),
    /// No relay is known to this device (start sync once, or join with a code, first).
    #[error("no relay known: start syncing with a relay (or join with an invite code) first")]
    NoRelayKnown,
    /// A short invite code names no relay, and this device knows none: the long code (the QR)
    /// must be used.
    #[error(
        "this device does not know the school's relay yet, and a short code does not say where \
         it is: scan the invite's QR code (or paste its long code) instead"
    )]
    ShortCodeNeedsRelay,
    /// Sync is already running, or not running.
    #[error("{0}")]
    SyncState(&'static str),
    /// LAN sync could not start (discovery, socket, certificate).
    #[error("LAN sync: {0}")]
    Lan(String),
}

impl From<StoreError> for ClientError {
    fn from(e: StoreError) -> Self {
        ClientError::Store(Box::new(e))
    }
}

impl From<SyncError> for ClientError {
    fn from(e: SyncError) -> Self {
        ClientError::Sync(Box::new(e))
    }
}

impl From<TransportError> for ClientError {
    fn from(e: TransportError) -> Self {
        ClientError::Transport(Box::new(e))
    }
}
