//! The storage seam: what the relay needs from a store, implemented for SQLite.
//!
//! The relay uses storage through two handles of the same database:
//!
//! - a **read handle**, owned by the hub and handed to the sync engine as its
//!   [`DocSource`]: loads documents, rosters, cached heads and sync states. Reads are local
//!   and never acknowledge anything;
//! - a **write handle**, owned by the writer thread: [`RelayStore::apply_writes`] commits a
//!   whole batch of the engine's [`StorageWrite`]s durably, in one transaction, before the
//!   relay reports them done (and only then sends `Saved`).
//!
//! With SQLite both are connections to `relay.sqlite3` in WAL mode, so the reader never waits
//! for the writer's fsync. A PostgreSQL store for several relay processes would implement the
//! same trait (a connection each, the batch in one transaction with `synchronous_commit = on`);
//! nothing else in the relay would change.

use std::path::Path;

use homeroom_store::{OpenOptions, Store, StoreError};
use homeroom_sync::{DocSource, StorageWrite};

/// A relay's storage: the engine's reads ([`DocSource`]) plus durable group commits.
///
/// Implementations must be `Send` (each handle lives on its own thread) and must honour the
/// durability contract of [`apply_writes`](RelayStore::apply_writes).
pub trait RelayStore: DocSource + Send + 'static {
    /// Why a batch could not be written.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Write every change, head and sync state of `writes` in order. When this returns `Ok`,
    /// all of it is on disk (fsynced) and survives a crash; when it returns `Err`, the caller
    /// must assume none of the batch is durable and retry it. Applying a write twice must be
    /// harmless (changes are keyed by hash), so a retry after an ambiguous failure is safe.
    fn apply_writes(&mut self, writes: &[StorageWrite]) -> Result<(), Self::Error>;
}

impl RelayStore for Store {
    type Error = StoreError;

    fn apply_writes(&mut self, writes: &[StorageWrite]) -> Result<(), StoreError> {
        Store::apply_writes(self, writes)
    }
}

/// Open (creating if needed) the relay's SQLite store at `path` twice: a read handle for the
/// engine and a write handle for the writer thread. The first open creates or upgrades the
/// schema and runs SQLite's quick check, so a damaged or foreign file is reported at start.
///
/// The error is boxed: [`StoreError`] is large and this is called once.
pub fn open_sqlite(path: &Path) -> Result<(Store, Store), Box<StoreError>> {
    open_sqlite_with(path, true)
}

/// [`open_sqlite`], choosing whether the writer's commits fsync. `fsync = false` is for
/// benchmarks only (config `unsafe_no_fsync`): acknowledged writes may be lost on a crash.
pub fn open_sqlite_with(path: &Path, fsync: bool) -> Result<(Store, Store), Box<StoreError>> {
    let reader = Store::open(path)?;
    let writer = Store::open_with(
        path,
        &OpenOptions::new().integrity_check(false).fsync(fsync),
    )?;
    Ok((reader, writer))
}
