//! The [`Store`]: one SQLite connection and every operation on it.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use homeroom_core::automerge::{Automerge, Change, ChangeHash};
use homeroom_core::genesis::genesis_hash;
use homeroom_core::{ChangeSignature, ClassId, DeviceId, DocId, SignedChange};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};

use crate::schema::{self, APPLICATION_ID, END_VERSION};
use crate::{
    LoadedDocument, NodeIdentity, OpenOptions, RejectedChange, StoreError, WriteBatch, WriteSummary,
};

/// Prepared statements kept per connection (see `Connection::prepare_cached`).
const STATEMENT_CACHE: usize = 64;

/// A Homeroom store: one SQLite database file holding a node's identity, the signed changes
/// and snapshots of its documents, cached heads, per-peer sync states, delivery tracking,
/// rejected changes and small metadata. Devices and the relay use the same store.
///
/// Reads take `&self`, writes `&mut self`; one `Store` is one connection and is `Send` but
/// not `Sync`. Several `Store`s (threads or processes) may open the same file: WAL lets
/// readers proceed during a write, and writers wait up to the busy timeout for each other.
pub struct Store {
    conn: Connection,
    path: Arc<Path>,
    /// The device of the stored identity: changes it authored are tracked for delivery.
    local_device: Option<DeviceId>,
    /// `false` only with [`OpenOptions::fsync`]`(false)` (benchmarks): commits never fsync.
    fsync: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("local_device", &self.local_device)
            .finish_non_exhaustive()
    }
}

/// Map a SQLite error raised during `step` to a [`StoreError`] naming the store's path.
fn sql<'a>(
    path: &'a Arc<Path>,
    step: &'static str,
    doc: Option<&'a DocId>,
) -> impl FnOnce(rusqlite::Error) -> StoreError + 'a {
    move |e| StoreError::sql(path, step, doc, e)
}

fn hashes_to_blob(hashes: &[ChangeHash]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hashes.len() * 32);
    for h in hashes {
        out.extend_from_slice(&h.0);
    }
    out
}

fn blob_to_hashes(
    path: &Arc<Path>,
    table: &'static str,
    doc: &DocId,
    blob: &[u8],
) -> Result<Vec<ChangeHash>, StoreError> {
    if !blob.len().is_multiple_of(32) {
        return Err(StoreError::InvalidData {
            path: Arc::clone(path),
            table,
            doc: Some(*doc),
            what: format!("hash list of {} bytes is not a multiple of 32", blob.len()),
        });
    }
    Ok(blob
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            ChangeHash(h)
        })
        .collect())
}

fn sorted_unique(hashes: &[ChangeHash]) -> Vec<ChangeHash> {
    let mut v = hashes.to_vec();
    v.sort();
    v.dedup();
    v
}

fn parse_doc(path: &Arc<Path>, table: &'static str, text: &str) -> Result<DocId, StoreError> {
    text.parse().map_err(|e| StoreError::InvalidData {
        path: Arc::clone(path),
        table,
        doc: None,
        what: format!("{e}"),
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The row id of `doc`, if the document is known.
fn doc_row(conn: &Connection, path: &Arc<Path>, doc: &DocId) -> Result<Option<i64>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT id FROM documents WHERE doc = ?1")
        .map_err(sql(path, "prepare document lookup", Some(doc)))?;
    stmt.query_row(params![doc.to_string()], |r| r.get(0))
        .optional()
        .map_err(sql(path, "look up document", Some(doc)))
}

/// The row id of `doc`, creating the document row if needed.
fn ensure_doc(conn: &Connection, path: &Arc<Path>, doc: &DocId) -> Result<i64, StoreError> {
    if let Some(id) = doc_row(conn, path, doc)? {
        return Ok(id);
    }
    let mut stmt = conn
        .prepare_cached("INSERT INTO documents (doc, class) VALUES (?1, ?2) RETURNING id")
        .map_err(sql(path, "prepare document insert", Some(doc)))?;
    stmt.query_row(params![doc.to_string(), &doc.class.0[..]], |r| r.get(0))
        .map_err(sql(path, "insert document", Some(doc)))
}

/// Parse a change handed to the store and return its dependencies, refusing bytes that are
/// not a change or that do not hash to the claimed hash.
fn checked_deps(doc: &DocId, change: &SignedChange) -> Result<Vec<u8>, StoreError> {
    let parsed = Change::try_from(&change.bytes[..]).map_err(|e| StoreError::MalformedChange {
        doc: *doc,
        hash: change.hash,
        reason: e.to_string(),
    })?;
    if parsed.hash() != change.hash {
        return Err(StoreError::MalformedChange {
            doc: *doc,
            hash: change.hash,
            reason: format!("the bytes hash to {}", parsed.hash()),
        });
    }
    Ok(hashes_to_blob(parsed.deps()))
}

impl Store {
    /// Open the store at `path`, creating it if the file does not exist or is empty, and
    /// upgrading its schema if it is older than [`END_VERSION`]. Uses [`OpenOptions::default`].
    ///
    /// Errors, all of which leave the file exactly as it was: [`StoreError::Corrupt`] (not
    /// a database, or damaged), [`StoreError::Foreign`] (another application's database),
    /// [`StoreError::TooNew`] (written by a newer Homeroom), [`StoreError::Migration`] (the
    /// upgrade failed and was rolled back), [`StoreError::Open`] (I/O, permissions).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, &OpenOptions::default())
    }

    /// [`Store::open`] with explicit options.
    pub fn open_with(path: &Path, options: &OpenOptions) -> Result<Store, StoreError> {
        create_private(path);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let path: Arc<Path> = Arc::from(path);
        let conn =
            Connection::open_with_flags(&path, flags).map_err(|source| StoreError::Open {
                path: Arc::clone(&path),
                step: "open file",
                source,
            })?;
        Self::configure(conn, path, options)
    }

    /// A store that lives in memory only (tests, simulations). Same schema and behaviour,
    /// without durability.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let path: Arc<Path> = Arc::from(Path::new(":memory:"));
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: Arc::clone(&path),
            step: "open in-memory database",
            source,
        })?;
        Self::configure(conn, path, &OpenOptions::default())
    }

    fn configure(
        mut conn: Connection,
        path: Arc<Path>,
        options: &OpenOptions,
    ) -> Result<Store, StoreError> {
        conn.busy_timeout(options.busy_timeout)
            .map_err(|source| StoreError::Open {
                path: Arc::clone(&path),
                step: "set busy_timeout",
                source,
            })?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);

        // 1. Recognise the file before writing anything to it: a foreign, newer or damaged
        //    file must be left exactly as it was.
        let found = identify(&conn, &path)?;

        // 2. A damaged file is reported now, not in the middle of a sync.
        if options.integrity_check && found.is_some() {
            check(&conn, &path, "quick_check", "integrity check at open")?;
        }

        // 3. Connection settings (not stored in the file).
        //    synchronous=FULL: in WAL mode, NORMAL syncs only at checkpoints, so a commit can
        //    be lost on power failure; FULL fsyncs the WAL at every commit. Homeroom reports a
        //    change as "saved" (device) or sends `Saved` (relay) as soon as a write returns,
        //    so a write that returns must be on disk. The relay pays for it once per batch
        //    (`Store::write`), not once per change.
        conn.pragma_update(
            None,
            "synchronous",
            if options.fsync { "FULL" } else { "OFF" },
        )
        .map_err(sql(&path, "set synchronous", None))?;
        // Negative: a size in KiB. The cache grows only as pages are read, so a small
        // device store never uses it all; a 30k-change document loads ~25% faster when it fits.
        conn.pragma_update(None, "cache_size", -i64::from(options.cache_kib))
            .map_err(sql(&path, "set cache_size", None))?;
        conn.pragma_update(None, "foreign_keys", true).map_err(sql(
            &path,
            "set foreign_keys=ON",
            None,
        ))?;

        // 4. Create or upgrade the schema, in one transaction: a failure or a crash leaves the
        //    file as it was. The file is identified again under the write lock: another
        //    process may have created or upgraded the store since step 1.
        {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql(&path, "begin schema transaction", None))?;
            match identify(&tx, &path)? {
                None => {
                    schema::init(&tx).map_err(sql(&path, "create schema", None))?;
                    tracing::info!(path = %path.display(), version = END_VERSION, "created store");
                }
                Some(version) if version < END_VERSION => {
                    schema::upgrade_from(&tx, version).map_err(|(step, source)| {
                        StoreError::Migration {
                            path: Arc::clone(&path),
                            from: version,
                            step,
                            source: Box::new(StoreError::sql(&path, step, None, source)),
                        }
                    })?;
                    tracing::info!(path = %path.display(), from = version, to = END_VERSION, "upgraded store");
                }
                Some(_) => {}
            }
            tx.commit().map_err(sql(&path, "commit schema", None))?;
        }

        // 5. WAL (persistent, stored in the file header): readers never block the writer and
        //    a commit appends to one file. Switched only once the file is known to be ours.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(sql(&path, "set journal_mode=WAL", None))?;
        if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
            // Still durable (rollback journal + FULL), only slower and without concurrent
            // readers; e.g. a file system without shared memory support.
            tracing::warn!(path = %path.display(), %mode, "store could not switch to WAL mode");
        }

        let mut store = Store {
            conn,
            path,
            local_device: None,
            fsync: options.fsync,
        };
        store.local_device = store.identity()?.map(|i| i.device_id());
        Ok(store)
    }

    /// Whether commits fsync (`synchronous=FULL`, the default) or not (`NORMAL`). Only
    /// [`Store::apply_received_writes`] turns it off, for one batch.
    pub(crate) fn set_fsync_on_commit(&self, fsync: bool) -> Result<(), StoreError> {
        let path = self.path.clone();
        let pragma = match (self.fsync, fsync) {
            (false, _) => "PRAGMA synchronous = OFF",
            (true, true) => "PRAGMA synchronous = FULL",
            (true, false) => "PRAGMA synchronous = NORMAL",
        };
        // A cached statement: a device switches for every batch of received changes, and
        // parsing the pragma each time showed in its profile.
        self.conn
            .prepare_cached(pragma)
            .and_then(|mut st| st.execute([]))
            .map(|_| ())
            .map_err(sql(&path, "set synchronous", None))
    }

    /// The file this store lives in (`":memory:"` for in-memory stores).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open store (always [`END_VERSION`] after a successful open).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        Ok(header(&self.conn, &self.path)?.1)
    }

    /// Run SQLite's full `PRAGMA integrity_check` (slower than the quick check at open: it
    /// also checks that indexes match their tables). For admin tooling.
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        check(&self.conn, &self.path, "integrity_check", "integrity check")
    }

    /// Write a consistent copy of the whole store to `dest` (`VACUUM INTO`), e.g. for a
    /// backup while the store is in use. `dest` must not exist.
    pub fn backup_to(&self, dest: &Path) -> Result<(), StoreError> {
        let dest = dest.to_string_lossy().into_owned();
        self.conn
            .execute("VACUUM INTO ?1", params![dest])
            .map_err(sql(&self.path, "backup (VACUUM INTO)", None))?;
        Ok(())
    }

    /// Close the connection, reporting any error (dropping a `Store` closes it silently).
    pub fn close(self) -> Result<(), StoreError> {
        let path = self.path;
        self.conn
            .close()
            .map_err(|(_, e)| StoreError::sql(&path, "close", None, e))
    }

    // ----------------------------------------------------------------------------------
    // Identity

    /// The node identity kept in this store, if one was set.
    pub fn identity(&self) -> Result<Option<NodeIdentity>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT secret, actor_suffix FROM identity WHERE id = 1")
            .map_err(sql(&self.path, "prepare identity read", None))?;
        stmt.query_row([], |r| {
            Ok(NodeIdentity {
                secret: r.get(0)?,
                actor_suffix: r.get(1)?,
            })
        })
        .optional()
        .map_err(sql(&self.path, "read identity", None))
    }

    /// Keep `id` as this node's identity. Setting the identity that is already stored is a
    /// no-op; a different one is refused with [`StoreError::IdentityExists`] (overwriting it
    /// would orphan every change the old key signed).
    ///
    /// From then on, changes authored by this identity's device are tracked for delivery
    /// ([`Store::undelivered`]).
    pub fn set_identity(&mut self, id: &NodeIdentity) -> Result<(), StoreError> {
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(path, "begin set identity", None))?;
        let existing: Option<([u8; 32], [u8; 8])> = tx
            .query_row(
                "SELECT secret, actor_suffix FROM identity WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql(path, "read identity", None))?;
        match existing {
            Some((secret, suffix)) if secret == id.secret && suffix == id.actor_suffix => {
                return Ok(());
            }
            Some((secret, suffix)) => {
                let existing = NodeIdentity {
                    secret,
                    actor_suffix: suffix,
                };
                return Err(StoreError::IdentityExists {
                    path: Arc::clone(path),
                    existing: existing.device_id(),
                });
            }
            None => {}
        }
        tx.execute(
            "INSERT INTO identity (id, secret, actor_suffix) VALUES (1, ?1, ?2)",
            params![&id.secret[..], &id.actor_suffix[..]],
        )
        .map_err(sql(path, "write identity", None))?;
        tx.commit().map_err(sql(path, "commit identity", None))?;
        self.local_device = Some(id.device_id());
        Ok(())
    }

    // ----------------------------------------------------------------------------------
    // Changes

    /// Store signed changes of any number of documents in one transaction. When this
    /// returns `Ok`, every change is on disk (see the crate docs); on `Err`, none of the
    /// batch was written. Idempotent per (document, hash): a change already stored is
    /// skipped. Changes authored by this store's identity are marked undelivered.
    ///
    /// The store does not verify signatures or write permissions — callers store only
    /// changes they have verified (`homeroom_core::identity::verify_change`). It does parse
    /// every change (to record its dependencies) and refuses, with
    /// [`StoreError::MalformedChange`], bytes that are not a change or do not hash to the
    /// claimed hash.
    pub fn put_changes(&mut self, batch: &[(DocId, SignedChange)]) -> Result<(), StoreError> {
        self.write_parts(batch, &[], &[], &[]).map(|_| ())
    }

    /// Commit a [`WriteBatch`] — changes of many documents, cached heads, sync states and
    /// metadata — as one transaction with one fsync (group commit). Durable when it returns
    /// `Ok`; nothing of it is written on `Err`.
    pub fn write(&mut self, batch: &WriteBatch) -> Result<WriteSummary, StoreError> {
        self.write_parts(
            &batch.changes,
            &batch.heads,
            &batch.sync_states,
            &batch.meta,
        )
    }

    fn write_parts(
        &mut self,
        changes: &[(DocId, SignedChange)],
        heads: &[(DocId, Vec<ChangeHash>)],
        sync_states: &[(DeviceId, DocId, Vec<u8>)],
        meta: &[(String, Vec<u8>)],
    ) -> Result<WriteSummary, StoreError> {
        let mut summary = WriteSummary::default();
        if changes.is_empty() && heads.is_empty() && sync_states.is_empty() && meta.is_empty() {
            return Ok(summary);
        }
        // Parse outside the write lock.
        let deps = changes
            .iter()
            .map(|(doc, c)| checked_deps(doc, c))
            .collect::<Result<Vec<_>, _>>()?;

        let path = &self.path;
        let local = self.local_device;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(path, "begin write", None))?;
        let mut ids: HashMap<DocId, i64> = HashMap::new();
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO changes (doc, hash, author, signature, deps, bytes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (doc, hash) DO NOTHING",
                )
                .map_err(sql(path, "prepare change insert", None))?;
            let mut pending = tx
                .prepare_cached("INSERT OR IGNORE INTO undelivered (doc, hash) VALUES (?1, ?2)")
                .map_err(sql(path, "prepare undelivered insert", None))?;
            for ((doc, change), deps) in changes.iter().zip(&deps) {
                let id = match ids.get(doc) {
                    Some(id) => *id,
                    None => {
                        let id = ensure_doc(&tx, path, doc)?;
                        ids.insert(*doc, id);
                        id
                    }
                };
                let n = insert
                    .execute(params![
                        id,
                        &change.hash.0[..],
                        &change.author.0[..],
                        &change.signature.0[..],
                        deps,
                        &change.bytes,
                    ])
                    .map_err(sql(path, "insert change", Some(doc)))?;
                if n == 0 {
                    summary.duplicate_changes += 1;
                    continue;
                }
                summary.new_changes += 1;
                if local == Some(change.author) {
                    pending
                        .execute(params![id, &change.hash.0[..]])
                        .map_err(sql(path, "mark change undelivered", Some(doc)))?;
                }
            }
        }
        for (doc, heads) in heads {
            write_heads(&tx, path, doc, heads)?;
        }
        for (peer, doc, state) in sync_states {
            write_sync_state(&tx, path, peer, doc, state)?;
        }
        for (key, value) in meta {
            tx.execute(SET_META, params![key, value])
                .map_err(sql(path, "write meta", None))?;
        }
        tx.commit().map_err(sql(path, "commit write", None))?;
        Ok(summary)
    }

    /// The document as stored: snapshot (if any), the changes after it, and every change's
    /// signature. `None` if the store knows nothing of `doc`.
    ///
    /// One indexed range scan over the document's changes (`changes_by_doc`), with cached
    /// statements; see [`LoadedDocument::to_automerge`] to rebuild the Automerge document.
    pub fn load_document(&self, doc: &DocId) -> Result<Option<LoadedDocument>, StoreError> {
        let path = &self.path;
        type DocRow = (i64, Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);
        let row: Option<DocRow> = {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT id, snapshot, snapshot_heads, heads FROM documents WHERE doc = ?1",
                )
                .map_err(sql(path, "prepare document read", Some(doc)))?;
            stmt.query_row(params![doc.to_string()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
            .map_err(sql(path, "read document", Some(doc)))?
        };
        let Some((id, snapshot, snapshot_heads, heads)) = row else {
            return Ok(None);
        };
        // Sized up front (an index-only count): no rehashing or regrowth for 30k changes.
        let count: usize = {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT count(*) FROM changes WHERE doc = ?1")
                .map_err(sql(path, "prepare change count", Some(doc)))?;
            let n: i64 = stmt.query_row(params![id], |r| r.get(0)).map_err(sql(
                path,
                "count changes",
                Some(doc),
            ))?;
            usize::try_from(n).unwrap_or(0)
        };
        let mut changes = Vec::with_capacity(if snapshot.is_some() { 0 } else { count });
        let mut signatures = HashMap::with_capacity(count);
        {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT hash, author, signature, bytes FROM changes
                     WHERE doc = ?1 ORDER BY seq",
                )
                .map_err(sql(path, "prepare change scan", Some(doc)))?;
            let mut rows = stmt
                .query(params![id])
                .map_err(sql(path, "scan changes", Some(doc)))?;
            while let Some(r) = rows.next().map_err(sql(path, "scan changes", Some(doc)))? {
                let read = |r: &rusqlite::Row<'_>| -> rusqlite::Result<_> {
                    Ok((
                        ChangeHash(r.get(0)?),
                        DeviceId(r.get(1)?),
                        ChangeSignature(r.get(2)?),
                        r.get::<_, Option<Vec<u8>>>(3)?,
                    ))
                };
                let (hash, author, signature, bytes) =
                    read(r).map_err(sql(path, "read change row", Some(doc)))?;
                signatures.insert(hash, (author, signature));
                if let Some(bytes) = bytes {
                    changes.push(SignedChange {
                        hash,
                        author,
                        bytes,
                        signature,
                    });
                }
            }
        }
        Ok(Some(LoadedDocument {
            doc: *doc,
            snapshot,
            snapshot_heads: match snapshot_heads {
                Some(b) => blob_to_hashes(path, "documents.snapshot_heads", doc, &b)?,
                None => Vec::new(),
            },
            changes,
            signatures,
            heads: match heads {
                Some(b) => blob_to_hashes(path, "documents.heads", doc, &b)?,
                None => Vec::new(),
            },
        }))
    }

    /// Author and signature of change `hash` of `doc`, whether or not it was compacted into a
    /// snapshot. `None` if the change is not stored (or was rejected).
    pub fn signature(
        &self,
        doc: &DocId,
        hash: &ChangeHash,
    ) -> Result<Option<(DeviceId, ChangeSignature)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT c.author, c.signature FROM changes c JOIN documents d ON d.id = c.doc
                 WHERE d.doc = ?1 AND c.hash = ?2",
            )
            .map_err(sql(&self.path, "prepare signature read", Some(doc)))?;
        stmt.query_row(params![doc.to_string(), &hash.0[..]], |r| {
            Ok((DeviceId(r.get(0)?), ChangeSignature(r.get(1)?)))
        })
        .optional()
        .map_err(sql(&self.path, "read signature", Some(doc)))
    }

    /// Whether change `hash` of `doc` is stored (in a snapshot or not).
    pub fn has_change(&self, doc: &DocId, hash: &ChangeHash) -> Result<bool, StoreError> {
        Ok(self.signature(doc, hash)?.is_some())
    }

    /// Compact `doc`: keep `snapshot` (`Automerge::save()` bytes whose heads are `heads`)
    /// and drop the bytes of every stored change it contains, keeping each change's author
    /// and signature. One transaction: a crash leaves either the old or the new state.
    ///
    /// Refused with [`StoreError::InvalidSnapshot`] (nothing written) if the snapshot does
    /// not load, its heads differ from `heads`, it lacks a change an earlier snapshot held
    /// (that change would be lost), or it holds a change that is not stored (other than the
    /// document's genesis), whose signature would be unknown.
    pub fn save_snapshot(
        &mut self,
        doc: &DocId,
        snapshot: &[u8],
        heads: &[ChangeHash],
    ) -> Result<(), StoreError> {
        let invalid = |reason: String| StoreError::InvalidSnapshot { doc: *doc, reason };
        let am = Automerge::load(snapshot).map_err(|e| invalid(format!("does not load: {e}")))?;
        let want = sorted_unique(heads);
        let got = sorted_unique(&am.get_heads());
        if want != got {
            return Err(invalid(format!(
                "its heads are {got:?}, the caller said {want:?}"
            )));
        }

        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(path, "begin snapshot", Some(doc)))?;
        let id = ensure_doc(&tx, path, doc)?;
        let mut stored = HashSet::new();
        let mut to_compact = Vec::new();
        {
            let mut stmt = tx
                .prepare_cached("SELECT hash, bytes IS NULL FROM changes WHERE doc = ?1")
                .map_err(sql(path, "prepare snapshot scan", Some(doc)))?;
            let rows = stmt
                .query_map(params![id], |r| {
                    Ok((ChangeHash(r.get(0)?), r.get::<_, bool>(1)?))
                })
                .map_err(sql(path, "scan changes for snapshot", Some(doc)))?;
            for row in rows {
                let (hash, compacted) = row.map_err(sql(path, "read change row", Some(doc)))?;
                let in_snapshot = am.get_change_meta_by_hash(&hash).is_some();
                if compacted && !in_snapshot {
                    return Err(invalid(format!(
                        "it lacks change {hash}, which only the previous snapshot holds"
                    )));
                }
                if !compacted && in_snapshot {
                    to_compact.push(hash);
                }
                stored.insert(hash);
            }
        }
        let genesis = genesis_hash(doc);
        if let Some(unknown) = am
            .get_changes_meta(&[])
            .iter()
            .map(|m| m.hash)
            .find(|h| *h != genesis && !stored.contains(h))
        {
            return Err(invalid(format!(
                "it holds change {unknown}, which is not stored (no signature)"
            )));
        }
        tx.execute(
            "UPDATE documents SET snapshot = ?1, snapshot_heads = ?2 WHERE id = ?3",
            params![snapshot, hashes_to_blob(&want), id],
        )
        .map_err(sql(path, "write snapshot", Some(doc)))?;
        {
            let mut stmt = tx
                .prepare_cached("UPDATE changes SET bytes = NULL WHERE doc = ?1 AND hash = ?2")
                .map_err(sql(path, "prepare compaction", Some(doc)))?;
            for h in &to_compact {
                stmt.execute(params![id, &h.0[..]]).map_err(sql(
                    path,
                    "compact change",
                    Some(doc),
                ))?;
            }
        }
        tx.commit()
            .map_err(sql(path, "commit snapshot", Some(doc)))?;
        tracing::debug!(%doc, compacted = to_compact.len(), bytes = snapshot.len(), "saved snapshot");
        Ok(())
    }

    /// Every document the store knows, sorted (`DocId`'s order).
    pub fn documents(&self) -> Result<Vec<DocId>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT doc FROM documents")
            .map_err(sql(&self.path, "prepare document list", None))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(sql(
            &self.path,
            "list documents",
            None,
        ))?;
        let mut out = Vec::new();
        for row in rows {
            let text = row.map_err(sql(&self.path, "list documents", None))?;
            out.push(parse_doc(&self.path, "documents", &text)?);
        }
        out.sort();
        Ok(out)
    }

    /// The documents of one class, sorted (index `documents_by_class`).
    pub fn documents_of_class(&self, class: &ClassId) -> Result<Vec<DocId>, StoreError> {
        Ok(self
            .heads_of_class(class)?
            .into_iter()
            .map(|(d, _)| d)
            .collect())
    }

    /// Replace the cached heads of `doc` (what `Automerge::get_heads` returned after the
    /// last change was applied). The catalog's digests are computed from them without
    /// loading documents. Prefer [`WriteBatch::set_heads`] to commit them with the changes.
    pub fn set_heads(&mut self, doc: &DocId, heads: &[ChangeHash]) -> Result<(), StoreError> {
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(path, "begin set heads", Some(doc)))?;
        write_heads(&tx, path, doc, heads)?;
        tx.commit().map_err(sql(path, "commit heads", Some(doc)))
    }

    /// The cached heads of `doc`, sorted; empty if never set or the document is unknown.
    pub fn heads(&self, doc: &DocId) -> Result<Vec<ChangeHash>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT heads FROM documents WHERE doc = ?1")
            .map_err(sql(&self.path, "prepare heads read", Some(doc)))?;
        let blob: Option<Option<Vec<u8>>> = stmt
            .query_row(params![doc.to_string()], |r| r.get(0))
            .optional()
            .map_err(sql(&self.path, "read heads", Some(doc)))?;
        match blob.flatten() {
            Some(b) => blob_to_hashes(&self.path, "documents.heads", doc, &b),
            None => Ok(Vec::new()),
        }
    }

    /// Every document of `class` with its cached heads, sorted, in one query (for a catalog).
    pub fn heads_of_class(
        &self,
        class: &ClassId,
    ) -> Result<Vec<(DocId, Vec<ChangeHash>)>, StoreError> {
        let path = &self.path;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT doc, heads FROM documents WHERE class = ?1")
            .map_err(sql(path, "prepare class listing", None))?;
        let rows = stmt
            .query_map(params![&class.0[..]], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<Vec<u8>>>(1)?))
            })
            .map_err(sql(path, "list class documents", None))?;
        let mut out = Vec::new();
        for row in rows {
            let (text, heads) = row.map_err(sql(path, "list class documents", None))?;
            let doc = parse_doc(path, "documents", &text)?;
            let heads = match heads {
                Some(b) => blob_to_hashes(path, "documents.heads", &doc, &b)?,
                None => Vec::new(),
            };
            out.push((doc, heads));
        }
        out.sort();
        Ok(out)
    }

    // ----------------------------------------------------------------------------------
    // Sync states

    /// Persist the encoded `automerge::sync::State` of (`peer`, `doc`), replacing any
    /// previous one.
    pub fn put_sync_state(
        &mut self,
        peer: &DeviceId,
        doc: &DocId,
        state: &[u8],
    ) -> Result<(), StoreError> {
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(path, "begin sync state write", Some(doc)))?;
        write_sync_state(&tx, path, peer, doc, state)?;
        tx.commit()
            .map_err(sql(path, "commit sync state", Some(doc)))
    }

    /// The persisted sync state of (`peer`, `doc`), if any.
    pub fn sync_state(&self, peer: &DeviceId, doc: &DocId) -> Result<Option<Vec<u8>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT s.state FROM sync_states s JOIN documents d ON d.id = s.doc
                 WHERE s.peer = ?1 AND d.doc = ?2",
            )
            .map_err(sql(&self.path, "prepare sync state read", Some(doc)))?;
        stmt.query_row(params![&peer.0[..], doc.to_string()], |r| r.get(0))
            .optional()
            .map_err(sql(&self.path, "read sync state", Some(doc)))
    }

    /// Forget the sync state of (`peer`, `doc`); a no-op if there is none.
    pub fn delete_sync_state(&mut self, peer: &DeviceId, doc: &DocId) -> Result<(), StoreError> {
        self.conn
            .execute(
                "DELETE FROM sync_states WHERE peer = ?1
                 AND doc = (SELECT id FROM documents WHERE doc = ?2)",
                params![&peer.0[..], doc.to_string()],
            )
            .map_err(sql(&self.path, "delete sync state", Some(doc)))?;
        Ok(())
    }

    /// Forget every sync state of `peer` (e.g. a revoked device); returns how many.
    pub fn delete_peer_sync_states(&mut self, peer: &DeviceId) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM sync_states WHERE peer = ?1",
                params![&peer.0[..]],
            )
            .map_err(sql(&self.path, "delete peer sync states", None))
    }

    // ----------------------------------------------------------------------------------
    // Delivery tracking

    /// Record that the relay has saved `heads` of `doc` (its `Saved` message): those
    /// changes **and all their ancestors** are delivered. Returns the local changes that
    /// became delivered by this call, for "delivered to school" events.
    ///
    /// The walk from `heads` towards the roots stops at changes stored before the oldest
    /// undelivered one: a local change is stored when it is made, before anything can
    /// depend on it, so no older change can lead to it.
    pub fn mark_delivered(
        &mut self,
        doc: &DocId,
        heads: &[ChangeHash],
    ) -> Result<Vec<ChangeHash>, StoreError> {
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(path, "begin mark delivered", Some(doc)))?;
        let Some(id) = doc_row(&tx, path, doc)? else {
            return Ok(Vec::new());
        };
        let mut pending: HashMap<ChangeHash, i64> = HashMap::new();
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT u.hash, c.seq FROM undelivered u
                     JOIN changes c ON c.doc = u.doc AND c.hash = u.hash WHERE u.doc = ?1",
                )
                .map_err(sql(path, "prepare undelivered scan", Some(doc)))?;
            let rows = stmt
                .query_map(params![id], |r| Ok((ChangeHash(r.get(0)?), r.get(1)?)))
                .map_err(sql(path, "scan undelivered", Some(doc)))?;
            for row in rows {
                let (h, seq) = row.map_err(sql(path, "scan undelivered", Some(doc)))?;
                pending.insert(h, seq);
            }
        }
        let Some(oldest) = pending.values().min().copied() else {
            return Ok(Vec::new());
        };
        let mut delivered = Vec::new();
        {
            let mut lookup = tx
                .prepare_cached("SELECT seq, deps FROM changes WHERE doc = ?1 AND hash = ?2")
                .map_err(sql(path, "prepare ancestor lookup", Some(doc)))?;
            let mut seen = HashSet::new();
            let mut stack: Vec<ChangeHash> = heads.to_vec();
            while let Some(h) = stack.pop() {
                if pending.is_empty() {
                    break;
                }
                if !seen.insert(h) {
                    continue;
                }
                let row: Option<(i64, Vec<u8>)> = lookup
                    .query_row(params![id, &h.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .map_err(sql(path, "look up ancestor", Some(doc)))?;
                let Some((seq, deps)) = row else { continue };
                if seq < oldest {
                    continue;
                }
                if pending.remove(&h).is_some() {
                    delivered.push(h);
                }
                stack.extend(blob_to_hashes(path, "changes.deps", doc, &deps)?);
            }
        }
        {
            let mut del = tx
                .prepare_cached("DELETE FROM undelivered WHERE doc = ?1 AND hash = ?2")
                .map_err(sql(path, "prepare delivered delete", Some(doc)))?;
            for h in &delivered {
                del.execute(params![id, &h.0[..]]).map_err(sql(
                    path,
                    "mark delivered",
                    Some(doc),
                ))?;
            }
        }
        tx.commit()
            .map_err(sql(path, "commit delivered", Some(doc)))?;
        Ok(delivered)
    }

    /// Local changes (authored by this store's identity) that the relay has not yet
    /// confirmed as saved, of one document or of all, in the order they were stored.
    pub fn undelivered(&self, doc: Option<&DocId>) -> Result<Vec<(DocId, ChangeHash)>, StoreError> {
        let path = &self.path;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT d.doc, u.hash FROM undelivered u
                 JOIN documents d ON d.id = u.doc
                 JOIN changes c ON c.doc = u.doc AND c.hash = u.hash
                 WHERE ?1 IS NULL OR d.doc = ?1 ORDER BY c.seq",
            )
            .map_err(sql(path, "prepare undelivered list", doc))?;
        let rows = stmt
            .query_map(params![doc.map(|d| d.to_string())], |r| {
                Ok((r.get::<_, String>(0)?, ChangeHash(r.get(1)?)))
            })
            .map_err(sql(path, "list undelivered", doc))?;
        let mut out = Vec::new();
        for row in rows {
            let (text, hash) = row.map_err(sql(path, "list undelivered", doc))?;
            out.push((parse_doc(path, "documents", &text)?, hash));
        }
        Ok(out)
    }

    /// Whether change `hash` of `doc` is stored and not waiting for the relay's `Saved`.
    /// `false` for a local change still pending, and for a change that is not stored.
    pub fn is_delivered(&self, doc: &DocId, hash: &ChangeHash) -> Result<bool, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT NOT EXISTS (SELECT 1 FROM undelivered u WHERE u.doc = c.doc AND u.hash = c.hash)
                 FROM changes c JOIN documents d ON d.id = c.doc
                 WHERE d.doc = ?1 AND c.hash = ?2",
            )
            .map_err(sql(&self.path, "prepare delivery check", Some(doc)))?;
        let delivered: Option<bool> = stmt
            .query_row(params![doc.to_string(), &hash.0[..]], |r| r.get(0))
            .optional()
            .map_err(sql(&self.path, "check delivery", Some(doc)))?;
        Ok(delivered.unwrap_or(false))
    }

    // ----------------------------------------------------------------------------------
    // Rejected changes

    /// Remove `hashes` and every stored change that depends on them (transitively) from
    /// `doc`, keeping each in the `rejected` audit table with `reason`. Returns every
    /// removed (or recorded) hash: the requested ones first, then their dependents.
    ///
    /// In the same transaction: if a removed change was compacted, the snapshot is rebuilt
    /// without it; cached heads are recomputed; the document's sync states are dropped
    /// (their shared heads may name removed changes; the next sync starts afresh); the
    /// changes leave the undelivered list. Hashes that are not stored are recorded too, so
    /// [`Store::is_rejected`] knows them. The first reason recorded for a hash is kept.
    pub fn reject_changes(
        &mut self,
        doc: &DocId,
        hashes: &[ChangeHash],
        reason: &str,
    ) -> Result<Vec<ChangeHash>, StoreError> {
        struct Node {
            deps: Vec<ChangeHash>,
            compacted: bool,
        }
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(path, "begin reject", Some(doc)))?;
        let id = ensure_doc(&tx, path, doc)?;

        // The document's change graph.
        let mut nodes: HashMap<ChangeHash, Node> = HashMap::new();
        {
            let mut stmt = tx
                .prepare_cached("SELECT hash, deps, bytes IS NULL FROM changes WHERE doc = ?1")
                .map_err(sql(path, "prepare graph scan", Some(doc)))?;
            let rows = stmt
                .query_map(params![id], |r| {
                    Ok((ChangeHash(r.get(0)?), r.get::<_, Vec<u8>>(1)?, r.get(2)?))
                })
                .map_err(sql(path, "scan change graph", Some(doc)))?;
            for row in rows {
                let (hash, deps, compacted) =
                    row.map_err(sql(path, "scan change graph", Some(doc)))?;
                let deps = blob_to_hashes(path, "changes.deps", doc, &deps)?;
                nodes.insert(hash, Node { deps, compacted });
            }
        }
        let mut dependents: HashMap<ChangeHash, Vec<ChangeHash>> = HashMap::new();
        for (h, n) in &nodes {
            for d in &n.deps {
                dependents.entry(*d).or_default().push(*h);
            }
        }

        // Closure: the requested changes and everything that depends on them, each with
        // the reason it is removed for.
        let mut removed: Vec<(ChangeHash, String)> = Vec::new();
        let mut removed_set: HashSet<ChangeHash> = HashSet::new();
        let mut queue: std::collections::VecDeque<(ChangeHash, String)> =
            hashes.iter().map(|h| (*h, reason.to_string())).collect();
        while let Some((h, why)) = queue.pop_front() {
            if !removed_set.insert(h) {
                continue;
            }
            for d in dependents.get(&h).into_iter().flatten() {
                queue.push_back((*d, format!("depends on rejected change {h}: {reason}")));
            }
            removed.push((h, why));
        }

        // Compacted changes can only leave by rebuilding the snapshot without them.
        let mut from_snapshot: HashMap<ChangeHash, Vec<u8>> = HashMap::new();
        if removed
            .iter()
            .any(|(h, _)| nodes.get(h).is_some_and(|n| n.compacted))
        {
            let snapshot: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT snapshot FROM documents WHERE id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .map_err(sql(path, "read snapshot", Some(doc)))?;
            let snapshot = snapshot.ok_or_else(|| StoreError::InvalidData {
                path: Arc::clone(path),
                table: "changes",
                doc: Some(*doc),
                what: "changes are marked compacted but there is no snapshot".into(),
            })?;
            let old = Automerge::load(&snapshot).map_err(|e| StoreError::Automerge {
                doc: *doc,
                step: "loading the snapshot to remove rejected changes",
                source: Box::new(e),
            })?;
            let mut keep = Vec::new();
            for c in old.get_changes(&[]) {
                if removed_set.contains(&c.hash()) {
                    from_snapshot.insert(c.hash(), c.raw_bytes().to_vec());
                } else {
                    keep.push(c);
                }
            }
            let mut rebuilt = Automerge::new();
            rebuilt
                .apply_changes(keep)
                .map_err(|e| StoreError::Automerge {
                    doc: *doc,
                    step: "rebuilding the snapshot without rejected changes",
                    source: Box::new(e),
                })?;
            tx.execute(
                "UPDATE documents SET snapshot = ?1, snapshot_heads = ?2 WHERE id = ?3",
                params![
                    rebuilt.save(),
                    hashes_to_blob(&sorted_unique(&rebuilt.get_heads())),
                    id
                ],
            )
            .map_err(sql(path, "write rebuilt snapshot", Some(doc)))?;
        }

        // Audit, then remove.
        let at = now_ms();
        {
            let mut audit = tx
                .prepare_cached(
                    "INSERT INTO rejected (doc, hash, author, signature, bytes, reason, rejected_at)
                     SELECT ?1, ?2, c.author, c.signature, coalesce(c.bytes, ?3), ?4, ?5
                       FROM (SELECT 1) LEFT JOIN changes c ON c.doc = ?1 AND c.hash = ?2
                      WHERE true
                     ON CONFLICT (doc, hash) DO NOTHING",
                )
                .map_err(sql(path, "prepare audit insert", Some(doc)))?;
            let mut delete = tx
                .prepare_cached("DELETE FROM changes WHERE doc = ?1 AND hash = ?2")
                .map_err(sql(path, "prepare change delete", Some(doc)))?;
            let mut undeliver = tx
                .prepare_cached("DELETE FROM undelivered WHERE doc = ?1 AND hash = ?2")
                .map_err(sql(path, "prepare undelivered delete", Some(doc)))?;
            for (h, why) in &removed {
                audit
                    .execute(params![id, &h.0[..], from_snapshot.get(h), why, at])
                    .map_err(sql(path, "record rejected change", Some(doc)))?;
                delete.execute(params![id, &h.0[..]]).map_err(sql(
                    path,
                    "delete rejected change",
                    Some(doc),
                ))?;
                undeliver.execute(params![id, &h.0[..]]).map_err(sql(
                    path,
                    "drop rejected change from undelivered",
                    Some(doc),
                ))?;
            }
        }

        // Cached heads: removed heads give way to their deps that nothing else needs.
        let old_heads: Option<Vec<u8>> = tx
            .query_row(
                "SELECT heads FROM documents WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .map_err(sql(path, "read heads", Some(doc)))?;
        if let Some(old_heads) = old_heads {
            let old_heads = blob_to_hashes(path, "documents.heads", doc, &old_heads)?;
            let needed: HashSet<ChangeHash> = nodes
                .iter()
                .filter(|(h, _)| !removed_set.contains(*h))
                .flat_map(|(_, n)| n.deps.iter().copied())
                .collect();
            let mut heads: Vec<ChangeHash> = old_heads
                .into_iter()
                .filter(|h| !removed_set.contains(h))
                .collect();
            for (h, _) in &removed {
                for d in nodes.get(h).map(|n| n.deps.as_slice()).unwrap_or_default() {
                    if !removed_set.contains(d) && !needed.contains(d) {
                        heads.push(*d);
                    }
                }
            }
            write_heads(&tx, path, doc, &heads)?;
        }

        tx.execute("DELETE FROM sync_states WHERE doc = ?1", params![id])
            .map_err(sql(path, "drop sync states", Some(doc)))?;
        tx.commit().map_err(sql(path, "commit reject", Some(doc)))?;
        tracing::info!(%doc, removed = removed.len(), reason, "rejected changes");
        Ok(removed.into_iter().map(|(h, _)| h).collect())
    }

    /// Keep changes that were refused on arrival (never applied, never stored in `changes`) in
    /// the `rejected` audit table, with their bytes, author and signature: e.g. edits by a
    /// device or member removed from the class ("removal wins": hidden, kept for audit). The
    /// first record of a hash is kept.
    pub fn audit_refused(
        &mut self,
        doc: &DocId,
        changes: &[SignedChange],
        reason: &str,
    ) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(path, "begin audit", Some(doc)))?;
        let id = ensure_doc(&tx, path, doc)?;
        let at = now_ms();
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO rejected (doc, hash, author, signature, bytes, reason, rejected_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (doc, hash) DO NOTHING",
                )
                .map_err(sql(path, "prepare audit of refused changes", Some(doc)))?;
            for c in changes {
                stmt.execute(params![
                    id,
                    &c.hash.0[..],
                    &c.author.0[..],
                    &c.signature.0[..],
                    &c.bytes[..],
                    reason,
                    at
                ])
                .map_err(sql(path, "record refused change", Some(doc)))?;
            }
        }
        tx.commit().map_err(sql(path, "commit audit", Some(doc)))?;
        Ok(())
    }

    /// Whether change `hash` of `doc` was rejected (the sync engine refuses it if it arrives
    /// again).
    pub fn is_rejected(&self, doc: &DocId, hash: &ChangeHash) -> Result<bool, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM rejected r JOIN documents d ON d.id = r.doc
                 WHERE d.doc = ?1 AND r.hash = ?2)",
            )
            .map_err(sql(&self.path, "prepare rejection check", Some(doc)))?;
        stmt.query_row(params![doc.to_string(), &hash.0[..]], |r| r.get(0))
            .map_err(sql(&self.path, "check rejection", Some(doc)))
    }

    /// The audit trail of `doc`'s rejected changes, oldest first.
    pub fn rejected(&self, doc: &DocId) -> Result<Vec<RejectedChange>, StoreError> {
        let path = &self.path;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT r.hash, r.author, r.signature, r.bytes, r.reason, r.rejected_at
                 FROM rejected r JOIN documents d ON d.id = r.doc WHERE d.doc = ?1
                 ORDER BY r.rejected_at, r.hash",
            )
            .map_err(sql(path, "prepare rejected list", Some(doc)))?;
        let rows = stmt
            .query_map(params![doc.to_string()], |r| {
                Ok(RejectedChange {
                    hash: ChangeHash(r.get(0)?),
                    author: r.get::<_, Option<[u8; 32]>>(1)?.map(DeviceId),
                    signature: r.get::<_, Option<[u8; 64]>>(2)?.map(ChangeSignature),
                    bytes: r.get(3)?,
                    reason: r.get(4)?,
                    rejected_at_ms: r.get(5)?,
                })
            })
            .map_err(sql(path, "list rejected", Some(doc)))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql(path, "list rejected", Some(doc)))
    }

    // ----------------------------------------------------------------------------------
    // Metadata

    /// The value stored under `key`, if any.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .map_err(sql(&self.path, "prepare meta read", None))?;
        stmt.query_row(params![key], |r| r.get(0))
            .optional()
            .map_err(sql(&self.path, "read meta", None))
    }

    /// Store `value` under `key` (config, relay address, per-class secrets), durably.
    pub fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.conn
            .execute(SET_META, params![key, value])
            .map_err(sql(&self.path, "write meta", None))?;
        Ok(())
    }

    /// Remove `key`; returns whether it existed.
    pub fn delete_meta(&mut self, key: &str) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM meta WHERE key = ?1", params![key])
            .map_err(sql(&self.path, "delete meta", None))?;
        Ok(n > 0)
    }

    #[cfg(test)]
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }
}

const SET_META: &str = "INSERT INTO meta (key, value) VALUES (?1, ?2)
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";

fn write_heads(
    tx: &Transaction<'_>,
    path: &Arc<Path>,
    doc: &DocId,
    heads: &[ChangeHash],
) -> Result<(), StoreError> {
    let id = ensure_doc(tx, path, doc)?;
    let mut stmt = tx
        .prepare_cached("UPDATE documents SET heads = ?1 WHERE id = ?2")
        .map_err(sql(path, "prepare heads write", Some(doc)))?;
    stmt.execute(params![hashes_to_blob(&sorted_unique(heads)), id])
        .map_err(sql(path, "write heads", Some(doc)))?;
    Ok(())
}

fn write_sync_state(
    tx: &Transaction<'_>,
    path: &Arc<Path>,
    peer: &DeviceId,
    doc: &DocId,
    state: &[u8],
) -> Result<(), StoreError> {
    let id = ensure_doc(tx, path, doc)?;
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO sync_states (peer, doc, state) VALUES (?1, ?2, ?3)
             ON CONFLICT (peer, doc) DO UPDATE SET state = excluded.state",
        )
        .map_err(sql(path, "prepare sync state write", Some(doc)))?;
    stmt.execute(params![&peer.0[..], id, state]).map_err(sql(
        path,
        "write sync state",
        Some(doc),
    ))?;
    Ok(())
}

/// `(application_id, user_version)` from the database header.
fn header(conn: &Connection, path: &Arc<Path>) -> Result<(i32, u32), StoreError> {
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(sql(path, "read application_id", None))?;
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql(path, "read user_version", None))?;
    Ok((app_id, version))
}

/// Decide, without writing, whether the file is a Homeroom store we can use: `None` for an
/// empty database to initialise, `Some(version)` for a Homeroom store at a schema version
/// this build understands.
fn identify(conn: &Connection, path: &Arc<Path>) -> Result<Option<u32>, StoreError> {
    let (app_id, version) = header(conn, path)?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(sql(path, "read schema", None))?;
    let foreign = |detail: &str| StoreError::Foreign {
        path: Arc::clone(path),
        application_id: app_id,
        user_version: version,
        detail: detail.to_string(),
    };
    if app_id == APPLICATION_ID {
        if version == 0 {
            return Err(foreign(
                "it carries Homeroom's application id but no schema version",
            ));
        }
        if version > END_VERSION {
            return Err(StoreError::TooNew {
                path: Arc::clone(path),
                found: version,
                supported: END_VERSION,
            });
        }
        return Ok(Some(version));
    }
    if app_id == 0 && version == 0 && objects == 0 {
        return Ok(None);
    }
    Err(foreign(if app_id == 0 {
        "it has no application id and is not empty"
    } else {
        "its application id belongs to another application"
    }))
}

/// Run `PRAGMA <pragma>` (`quick_check` or `integrity_check`): `Corrupt` unless it says "ok".
fn check(
    conn: &Connection,
    path: &Arc<Path>,
    pragma: &str,
    step: &'static str,
) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA {pragma}"))
        .map_err(sql(path, step, None))?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(sql(path, step, None))?;
    let mut problems = Vec::new();
    for row in rows {
        problems.push(row.map_err(sql(path, step, None))?);
    }
    if matches!(problems.as_slice(), [ok] if ok == "ok") {
        return Ok(());
    }
    problems.truncate(5);
    Err(StoreError::Corrupt {
        path: Arc::clone(path),
        step,
        detail: problems.join("; "),
    })
}

/// The store holds the node's secret key: create a new file readable by its owner only.
/// Best effort — if the file exists, or the directory does not, SQLite's own open reports
/// what matters.
fn create_private(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
    }
    #[cfg(not(unix))]
    let _ = path;
}
