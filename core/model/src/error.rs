//! Errors of the document layer.

use crate::identity::IdentityError;

/// Why a document operation failed. Each variant names what a caller can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A user-supplied field was empty, too long or otherwise invalid.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The field's name as the API calls it.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An id names nothing in this document.
    #[error("unknown {kind} {id}")]
    UnknownId {
        /// What kind of thing was looked up.
        kind: &'static str,
        /// The id as given.
        id: String,
    },
    /// The acting device's member may not do this.
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// The operation conflicts with the item's current state (e.g. a closed survey).
    #[error("{0}")]
    InvalidState(String),
    /// The document lacks a top-level map its genesis change should have created.
    #[error("document has no genesis map {map:?}")]
    MissingGenesis {
        /// The missing map.
        map: &'static str,
    },
    /// A value inside the document has an unexpected shape.
    #[error("document content is malformed: {what}")]
    Corrupt {
        /// What was malformed.
        what: String,
    },
    /// Automerge refused an operation.
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    /// A signature or key problem.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// Check a user-supplied text field: trimmed non-empty (unless `allow_empty`) and at most
/// `max` characters.
pub fn check_text(
    field: &'static str,
    value: &str,
    max: usize,
    allow_empty: bool,
) -> Result<(), ModelError> {
    if !allow_empty && value.trim().is_empty() {
        return Err(ModelError::InvalidInput {
            field,
            reason: "must not be empty".into(),
        });
    }
    let n = value.chars().count();
    if n > max {
        return Err(ModelError::InvalidInput {
            field,
            reason: format!("{n} characters, at most {max} allowed"),
        });
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ModelError::InvalidInput {
            field,
            reason: "contains control characters".into(),
        });
    }
    Ok(())
}
