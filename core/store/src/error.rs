//! The store's one error type.

use std::path::Path;
use std::sync::Arc;

use homeroom_core::DeviceId;
use homeroom_core::DocId;
use homeroom_core::automerge::{AutomergeError, ChangeHash};
use rusqlite::ErrorCode;

/// Why a store operation failed.
///
/// Every variant names the store file (`path`, `":memory:"` for in-memory stores) and, where
/// one is involved, the document and the step that failed, so a log line alone is enough to
/// tell what happened.
///
/// What a failure means for durability: a failed write never leaves part of its batch behind
/// (every write is one transaction, rolled back on error), so the caller may simply retry it
/// or report the data as **not** saved. A failed open never modifies the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file could not be opened or configured (missing directory, permissions, I/O).
    #[error("cannot open store {path}: {step}: {source}")]
    Open {
        /// The store file.
        path: Arc<Path>,
        /// What was being done.
        step: &'static str,
        /// The underlying SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The file is not a SQLite database at all (random bytes, a truncated header) or SQLite
    /// found it damaged. The file was left untouched.
    #[error("store {path} is corrupt or not a SQLite database ({step}): {detail}")]
    Corrupt {
        /// The store file.
        path: Arc<Path>,
        /// What was being done when the damage was found.
        step: &'static str,
        /// SQLite's description (error message or integrity-check report).
        detail: String,
    },
    /// A valid SQLite database that is not a Homeroom store (another application's file, or
    /// one that was never initialised by Homeroom). The file was left untouched.
    #[error(
        "{path} is a SQLite database but not a Homeroom store \
         (application_id {application_id:#010x}, user_version {user_version}): {detail}"
    )]
    Foreign {
        /// The file.
        path: Arc<Path>,
        /// The file's `PRAGMA application_id`.
        application_id: i32,
        /// The file's `PRAGMA user_version`.
        user_version: u32,
        /// Why it was not recognised.
        detail: String,
    },
    /// The store was written by a newer Homeroom whose schema this build does not know.
    /// The file was left untouched; upgrade the application instead.
    #[error(
        "store {path} has schema version {found}, newer than the newest this build \
         understands ({supported}); upgrade Homeroom"
    )]
    TooNew {
        /// The store file.
        path: Arc<Path>,
        /// The schema version found in the file.
        found: u32,
        /// [`crate::END_VERSION`].
        supported: u32,
    },
    /// Upgrading the schema failed; the upgrade was rolled back and the file is unchanged
    /// (still at schema version `from`).
    #[error("cannot upgrade store {path} from schema version {from}: {step}: {source}")]
    Migration {
        /// The store file.
        path: Arc<Path>,
        /// The version the upgrade started from.
        from: u32,
        /// The upgrade step that failed.
        step: &'static str,
        /// The underlying error.
        #[source]
        source: Box<StoreError>,
    },
    /// Another connection held the database lock for longer than the busy timeout.
    #[error("store {path} is busy during {step} (locked by another connection): {source}")]
    Busy {
        /// The store file.
        path: Arc<Path>,
        /// What was being done.
        step: &'static str,
        /// The underlying SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The disk (or the database's size limit) is full; nothing of the write was kept.
    #[error("store {path} is full during {step}{}: {source}", for_doc(doc))]
    DiskFull {
        /// The store file.
        path: Arc<Path>,
        /// What was being done.
        step: &'static str,
        /// The document concerned, if any.
        doc: Option<DocId>,
        /// The underlying SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// Any other SQLite failure.
    #[error("store {path}: {step} failed{}: {source}", for_doc(doc))]
    Sqlite {
        /// The store file.
        path: Arc<Path>,
        /// What was being done.
        step: &'static str,
        /// The document concerned, if any.
        doc: Option<DocId>,
        /// The underlying SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// [`crate::Store::set_identity`] was called on a store that already has a different
    /// identity. Overwriting it would orphan every change the old key signed.
    #[error(
        "store {path} already holds the identity of device {existing:?}; refusing to overwrite it"
    )]
    IdentityExists {
        /// The store file.
        path: Arc<Path>,
        /// The device whose identity is stored.
        existing: DeviceId,
    },
    /// A change handed to the store is not a valid Automerge change, or its bytes do not hash
    /// to the hash it claims. Nothing of the batch was written.
    #[error("change {hash} of {doc} is malformed: {reason}")]
    MalformedChange {
        /// The document.
        doc: DocId,
        /// The hash the change claimed.
        hash: ChangeHash,
        /// What is wrong with it.
        reason: String,
    },
    /// A snapshot handed to [`crate::Store::save_snapshot`] was refused (unreadable, heads
    /// differ, or it would lose or add changes). Nothing was written.
    #[error("snapshot of {doc} refused: {reason}")]
    InvalidSnapshot {
        /// The document.
        doc: DocId,
        /// Why.
        reason: String,
    },
    /// A row read back from the store does not have the expected shape (a hash of the wrong
    /// length, an unparsable document id): the file was damaged or written by something else.
    #[error("store {path} holds invalid data in {table}{}: {what}", for_doc(doc))]
    InvalidData {
        /// The store file.
        path: Arc<Path>,
        /// The table.
        table: &'static str,
        /// The document concerned, if any.
        doc: Option<DocId>,
        /// What is wrong.
        what: String,
    },
    /// Automerge failed while the store rebuilt a document (loading a stored snapshot or
    /// applying stored changes).
    #[error("automerge failed while {step} for {doc}: {source}")]
    Automerge {
        /// The document.
        doc: DocId,
        /// What was being done.
        step: &'static str,
        /// The Automerge error.
        #[source]
        source: Box<AutomergeError>,
    },
}

fn for_doc(doc: &Option<DocId>) -> String {
    match doc {
        Some(d) => format!(" for {d}"),
        None => String::new(),
    }
}

impl StoreError {
    /// Classify a SQLite error raised during `step` on the store at `path`.
    pub(crate) fn sql(
        path: &Arc<Path>,
        step: &'static str,
        doc: Option<&DocId>,
        source: rusqlite::Error,
    ) -> StoreError {
        let path = Arc::clone(path);
        match source.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt {
                path,
                step,
                detail: source.to_string(),
            },
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                StoreError::Busy { path, step, source }
            }
            Some(ErrorCode::DiskFull) => StoreError::DiskFull {
                path,
                step,
                doc: doc.copied(),
                source,
            },
            _ => StoreError::Sqlite {
                path,
                step,
                doc: doc.copied(),
                source,
            },
        }
    }

    /// Whether this error means the file is damaged or not a database.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, StoreError::Corrupt { .. })
    }
}
