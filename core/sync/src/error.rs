//! Errors of the sync engine.

use homeroom_core::{DocId, ModelError};

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// Storage could not be read.
    #[error("storage read failed for {what}: {reason}")]
    Storage {
        /// What was being read.
        what: String,
        /// The storage layer's explanation.
        reason: String,
    },
    /// A stored document could not be rebuilt.
    #[error("stored document {doc} is corrupt: {reason}")]
    CorruptDocument {
        /// The document.
        doc: DocId,
        /// What failed.
        reason: String,
    },
    /// A local edit failed in the document layer.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// This node has no device key (a relay cannot make local edits).
    #[error("this node has no device key")]
    NoDeviceKey,
    /// The local device may not write this document.
    #[error("not allowed to write {doc}: {reason}")]
    NotAllowed {
        /// The document.
        doc: DocId,
        /// Why.
        reason: String,
    },
    /// The class is not known on this node.
    #[error("unknown class {0}")]
    UnknownClass(homeroom_core::ClassId),
    /// An invite cannot be redeemed (expired, used, unknown).
    #[error(transparent)]
    Invite(#[from] homeroom_core::invite::InviteError),
    /// The session does not exist (already closed).
    #[error("no such session {0}")]
    NoSuchSession(u64),
}
