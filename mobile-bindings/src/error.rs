//! The one error type an app sees, and the conversions into it.

use homeroom_client::ClientError;
use homeroom_core::ModelError;

/// Why a call failed, in terms an app can act on.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// This device is not (or no longer) a member of the class: ask for a new invite.
    #[error("this device is not a member of class {class_id}")]
    NotAMember {
        /// The class.
        class_id: String,
    },
    /// The device's member may not do this (e.g. a parent trying a teacher's action).
    #[error("not allowed: {reason}")]
    NotAllowed {
        /// Why, for the user.
        reason: String,
    },
    /// A field the app passed is invalid: show the reason next to that field.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The parameter's name as this API spells it (e.g. `title`, `class_id`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An id names nothing on this device (an unknown class, entry, event…).
    #[error("unknown {kind} {id}")]
    NotFound {
        /// What kind of thing was looked up.
        kind: String,
        /// The id as given.
        id: String,
    },
    /// The item's current state forbids this (a cancelled event, a closed survey, sync
    /// already running…).
    #[error("{reason}")]
    InvalidState {
        /// Why, for the user.
        reason: String,
    },
    /// The device's local storage failed: the operation did not happen.
    #[error("storage: {detail}")]
    Storage {
        /// What failed.
        detail: String,
    },
    /// The network failed (only from sync set-up, e.g. a port or mDNS that cannot start;
    /// sync itself retries on its own).
    #[error("network: {detail}")]
    Network {
        /// What failed.
        detail: String,
    },
    /// Anything else (a bug or corrupt data): report it.
    #[error("internal: {detail}")]
    Internal {
        /// What failed.
        detail: String,
    },
}

impl ApiError {
    /// An invalid parameter.
    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        ApiError::InvalidInput {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::InvalidInput { field, reason } => ApiError::InvalidInput {
                field: field.to_string(),
                reason,
            },
            ModelError::UnknownId { kind, id } => ApiError::NotFound {
                kind: kind.to_string(),
                id,
            },
            ModelError::NotAllowed(reason) => ApiError::NotAllowed { reason },
            ModelError::InvalidState(reason) => ApiError::InvalidState { reason },
            other => ApiError::Internal {
                detail: other.to_string(),
            },
        }
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Model(m) => m.into(),
            ClientError::NotAMember(c) => ApiError::NotAMember {
                class_id: c.to_hex(),
            },
            ClientError::UnknownClass(c) => ApiError::NotFound {
                kind: "class".into(),
                id: c.to_hex(),
            },
            ClientError::Store(_) | ClientError::Io { .. } => ApiError::Storage {
                detail: e.to_string(),
            },
            ClientError::Transport(_) | ClientError::Lan(_) => ApiError::Network {
                detail: e.to_string(),
            },
            ClientError::SyncState(reason) => ApiError::InvalidState {
                reason: reason.to_string(),
            },
            ClientError::Invite(i) => ApiError::InvalidInput {
                field: "invite_code".into(),
                reason: i.to_string(),
            },
            ClientError::NoRelayKnown | ClientError::ShortCodeNeedsRelay => {
                ApiError::InvalidState {
                    reason: e.to_string(),
                }
            }
            other => ApiError::Internal {
                detail: other.to_string(),
            },
        }
    }
}
