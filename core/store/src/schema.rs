//! The schema and its versions, application-services style: one initializer creates the newest
//! schema (`init`); older files are brought up to date one version at a time
//! (`upgrade_from`). The version lives in `PRAGMA user_version`, the Homeroom marker in
//! `PRAGMA application_id`; both are in the database header and change in the same
//! transaction as the schema, so a crash mid-upgrade leaves the old version intact.
//!
//! History:
//! - **v1**: `meta`, `identity`, `documents` (cached heads, snapshot), `changes` (hash,
//!   author, signature, deps, bytes), `sync_states`.
//! - **v2**: `undelivered` (local changes the relay has not confirmed as saved), `rejected`
//!   (audit of refused changes), index `documents_by_class`. Upgrading marks every change
//!   authored by the store's own device as undelivered: whether the relay has it is unknown,
//!   and the next `Saved` from the relay clears it.

use homeroom_core::DeviceKey;
use rusqlite::{Transaction, params};

/// `PRAGMA application_id` of every Homeroom store: ASCII "HmRm".
pub const APPLICATION_ID: i32 = 0x486D_526D;

/// The newest schema version this build creates and understands.
pub const END_VERSION: u32 = 2;

/// Tables of schema version 1, unchanged since. Also frozen in
/// `tests/fixtures/v1_schema.sql`, which builds the v1 fixture.
const V1_TABLES: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE identity (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    secret       BLOB NOT NULL CHECK (length(secret) = 32),
    actor_suffix BLOB NOT NULL CHECK (length(actor_suffix) = 8)
);

CREATE TABLE documents (
    id             INTEGER PRIMARY KEY,
    doc            TEXT NOT NULL UNIQUE,
    class          BLOB NOT NULL CHECK (length(class) = 16),
    heads          BLOB,
    snapshot       BLOB,
    snapshot_heads BLOB
);

CREATE TABLE changes (
    seq       INTEGER PRIMARY KEY,
    doc       INTEGER NOT NULL REFERENCES documents(id),
    hash      BLOB NOT NULL CHECK (length(hash) = 32),
    author    BLOB NOT NULL CHECK (length(author) = 32),
    signature BLOB NOT NULL CHECK (length(signature) = 64),
    deps      BLOB NOT NULL,
    bytes     BLOB
);
CREATE UNIQUE INDEX changes_by_hash ON changes(doc, hash);
CREATE INDEX changes_by_doc ON changes(doc, seq);

CREATE TABLE sync_states (
    peer  BLOB NOT NULL CHECK (length(peer) = 32),
    doc   INTEGER NOT NULL REFERENCES documents(id),
    state BLOB NOT NULL,
    PRIMARY KEY (peer, doc)
) WITHOUT ROWID;
";

/// What version 2 adds to version 1.
const V2_ADDITIONS: &str = "
CREATE INDEX documents_by_class ON documents(class);

CREATE TABLE undelivered (
    doc  INTEGER NOT NULL REFERENCES documents(id),
    hash BLOB NOT NULL,
    PRIMARY KEY (doc, hash)
) WITHOUT ROWID;

CREATE TABLE rejected (
    doc         INTEGER NOT NULL REFERENCES documents(id),
    hash        BLOB NOT NULL,
    author      BLOB,
    signature   BLOB,
    bytes       BLOB,
    reason      TEXT NOT NULL,
    rejected_at INTEGER NOT NULL,
    PRIMARY KEY (doc, hash)
) WITHOUT ROWID;
";

/// Create the newest schema in an empty database (inside the caller's transaction).
pub(crate) fn init(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(V1_TABLES)?;
    tx.execute_batch(V2_ADDITIONS)?;
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.pragma_update(None, "user_version", END_VERSION)?;
    Ok(())
}

/// Bring a database at schema `version` (`1 <= version < END_VERSION`) up to
/// [`END_VERSION`], inside the caller's transaction. Returns the step that failed.
pub(crate) fn upgrade_from(
    tx: &Transaction<'_>,
    version: u32,
) -> Result<(), (&'static str, rusqlite::Error)> {
    let mut v = version;
    while v < END_VERSION {
        match v {
            1 => upgrade_1_to_2(tx)?,
            _ => {
                return Err((
                    "unknown schema version",
                    rusqlite::Error::InvalidParameterName(format!("user_version {v}")),
                ));
            }
        }
        v += 1;
    }
    tx.pragma_update(None, "user_version", END_VERSION)
        .map_err(|e| ("set user_version", e))?;
    Ok(())
}

fn upgrade_1_to_2(tx: &Transaction<'_>) -> Result<(), (&'static str, rusqlite::Error)> {
    tx.execute_batch(V2_ADDITIONS)
        .map_err(|e| ("v2: create undelivered, rejected, documents_by_class", e))?;
    // Which changes are "ours" needs the public key, which SQL cannot derive from the secret.
    let secret: Option<[u8; 32]> = {
        use rusqlite::OptionalExtension;
        tx.query_row("SELECT secret FROM identity WHERE id = 1", [], |r| r.get(0))
            .optional()
            .map_err(|e| ("v2: read identity", e))?
    };
    if let Some(secret) = secret {
        let device = DeviceKey::from_secret(secret).device_id();
        tx.execute(
            "INSERT INTO undelivered (doc, hash) SELECT doc, hash FROM changes WHERE author = ?1",
            params![&device.0[..]],
        )
        .map_err(|e| ("v2: mark own changes undelivered", e))?;
    }
    Ok(())
}
