//! Unit tests of connection settings and query plans; behaviour is tested in `tests/`.

use homeroom_core::automerge::ChangeHash;
use homeroom_core::{ClassId, DocId, DocKind};

use crate::{APPLICATION_ID, END_VERSION, Store};

fn file_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.sqlite3")).unwrap();
    (dir, store)
}

#[test]
fn connection_is_wal_full_sync_with_busy_timeout_and_marked_as_homeroom() {
    let (_dir, store) = file_store();
    let c = store.connection();
    let mode: String = c
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = c
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "synchronous must be FULL (2)");
    let fk: i64 = c
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1);
    let busy: i64 = c
        .pragma_query_value(None, "busy_timeout", |r| r.get(0))
        .unwrap();
    assert_eq!(busy, 5000);
    let app: i32 = c
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .unwrap();
    assert_eq!(app, APPLICATION_ID);
    assert_eq!(store.schema_version().unwrap(), END_VERSION);
}

fn plan(store: &Store, sql: &str) -> String {
    let mut stmt = store
        .connection()
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap();
    let rows = stmt
        .query_map([1i64], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows.join(" | ")
}

#[test]
fn hot_queries_use_their_indexes() {
    let store = Store::open_in_memory().unwrap();
    // load_document: one range scan of changes_by_doc, already in seq order (no sort).
    let p = plan(
        &store,
        "SELECT hash, author, signature, bytes FROM changes WHERE doc = ?1 ORDER BY seq",
    );
    assert!(p.contains("USING INDEX changes_by_doc"), "{p}");
    assert!(!p.contains("TEMP B-TREE"), "{p}");
    // documents_of_class / heads_of_class.
    let p = plan(&store, "SELECT doc, heads FROM documents WHERE class = ?1");
    assert!(p.contains("documents_by_class"), "{p}");
}

#[test]
fn hash_lists_round_trip_sorted() {
    let mut store = Store::open_in_memory().unwrap();
    let doc = DocId::new(ClassId([1; 16]), DocKind::Roster);
    let heads = vec![
        ChangeHash([9; 32]),
        ChangeHash([1; 32]),
        ChangeHash([9; 32]),
    ];
    store.set_heads(&doc, &heads).unwrap();
    assert_eq!(
        store.heads(&doc).unwrap(),
        vec![ChangeHash([1; 32]), ChangeHash([9; 32])]
    );
}

#[test]
fn received_writes_skip_fsync_for_one_batch_only() {
    let (_dir, mut store) = file_store();
    let sync = |s: &Store| -> i64 {
        s.connection()
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap()
    };
    store.apply_received_writes(&[]).unwrap();
    assert_eq!(sync(&store), 2, "back to FULL after a received batch");
    store.set_fsync_on_commit(false).unwrap();
    assert_eq!(sync(&store), 1, "NORMAL while relaxed");
    store.set_fsync_on_commit(true).unwrap();
    assert_eq!(sync(&store), 2);
}

#[test]
fn fsync_off_is_synchronous_off_and_stays_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite3");
    let store = Store::open_with(&path, &crate::OpenOptions::new().fsync(false)).unwrap();
    let sync = |s: &Store| -> i64 {
        s.connection()
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap()
    };
    assert_eq!(sync(&store), 0, "OFF with fsync(false)");
    // A received batch must not turn fsync back on for a store opened without it.
    store.set_fsync_on_commit(true).unwrap();
    assert_eq!(sync(&store), 0);
    // The default stays FULL.
    let other = Store::open(&path).unwrap();
    assert_eq!(sync(&other), 2);
}

/// A change to `doc` signed by a fixed key, made on the document's genesis.
fn signed_change(doc: &DocId, n: i64) -> homeroom_core::SignedChange {
    use homeroom_core::automerge::ROOT;
    use homeroom_core::automerge::transaction::{CommitOptions, Transactable};
    let key = homeroom_core::DeviceKey::from_secret([7; 32]);
    let actor = homeroom_core::identity::actor_for(&key.device_id(), [n as u8; 8]);
    let mut am = homeroom_core::genesis::genesis_document(doc, actor);
    let mut tx = am.transaction();
    tx.put(ROOT, "n", n).unwrap();
    tx.commit_with(CommitOptions::default().with_time(0));
    let change = am.get_last_local_change().unwrap();
    homeroom_core::SignedChange::sign(&key, doc, &change)
}

#[test]
fn metadata_of_apply_writes_with_commits_with_the_changes_or_not_at_all() {
    use homeroom_sync::{StorageWrite, WriteId, WriteKind};

    use crate::WriteBatch;

    let (_dir, mut store) = file_store();
    let doc = DocId::new(ClassId([2; 16]), DocKind::Notebook);
    let write = |c: &homeroom_core::SignedChange| StorageWrite {
        id: WriteId(1),
        kind: WriteKind::Changes {
            changes: vec![(doc, c.clone())],
            heads: vec![(doc, vec![c.hash])],
        },
    };
    let (first, second) = (signed_change(&doc, 1), signed_change(&doc, 2));

    let mut extra = WriteBatch::new();
    extra.set_meta("item/first", b"record".to_vec());
    store.apply_writes_with(&[write(&first)], extra).unwrap();
    assert!(store.has_change(&doc, &first.hash).unwrap());
    assert_eq!(store.meta("item/first").unwrap(), Some(b"record".to_vec()));

    // The record's insert fails (as a crash before it would): the change of the same call
    // must not be on disk without it.
    store
        .connection()
        .execute_batch(
            "CREATE TRIGGER fail_item BEFORE INSERT ON meta WHEN NEW.key = 'item/second'
             BEGIN SELECT RAISE(ABORT, 'simulated failure'); END;",
        )
        .unwrap();
    let mut extra = WriteBatch::new();
    extra.set_meta("item/second", b"record".to_vec());
    assert!(store.apply_writes_with(&[write(&second)], extra).is_err());
    assert!(!store.has_change(&doc, &second.hash).unwrap());
    assert_eq!(store.meta("item/second").unwrap(), None);
    assert_eq!(store.heads(&doc).unwrap(), vec![first.hash]);
    assert_eq!(store.undelivered(None).unwrap(), vec![]);

    // Plain `apply_writes` and `write` are unchanged by an empty or metadata-only batch.
    store.apply_writes(&[write(&second)]).unwrap();
    assert!(store.has_change(&doc, &second.hash).unwrap());
    let mut only_meta = WriteBatch::new();
    only_meta.set_meta("k", b"v".to_vec());
    assert!(!only_meta.is_empty());
    store.write(&only_meta).unwrap();
    assert_eq!(store.meta("k").unwrap(), Some(b"v".to_vec()));
}
