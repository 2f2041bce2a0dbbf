//! Schema migrations, tested by upgrading a committed v1 store (`tests/fixtures/v1.sqlite3`).
//!
//! The fixture is built by [`regenerate_v1_fixture`] (ignored; run it only to rebuild the file):
//! `cargo test -p homeroom-store --test migration -- --ignored regenerate_v1_fixture`.
//! It writes the frozen v1 DDL (`tests/fixtures/v1_schema.sql`) and v1 rows with plain SQL —
//! not through today's `Store` — from deterministic signed changes ([`fixture_contents`]),
//! which the upgrade test rebuilds to know exactly what the file must still hold.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{Writer, doc_id, holds, lane};
use homeroom_core::automerge::{ActorId, Change, ChangeHash};
use homeroom_core::{ClassId, DeviceId, DocId, DocKind, SignedChange};
use homeroom_store::{APPLICATION_ID, END_VERSION, NodeIdentity, Store, StoreError};
use rusqlite::{Connection, params};

const V1_SCHEMA: &str = include_str!("fixtures/v1_schema.sql");

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1.sqlite3")
}

/// One document of the fixture.
struct FixtureDoc {
    doc: DocId,
    /// Every change, in insertion order.
    changes: Vec<SignedChange>,
    /// How many of the first changes are folded into a snapshot (bytes NULL in v1).
    compacted: usize,
    snapshot: Option<(Vec<u8>, Vec<ChangeHash>)>,
    heads: Vec<ChangeHash>,
}

struct Fixture {
    identity: NodeIdentity,
    meta: Vec<(&'static str, Vec<u8>)>,
    docs: Vec<FixtureDoc>,
    sync_states: Vec<(DeviceId, DocId, Vec<u8>)>,
}

const OWN: u8 = 7; // the fixture device's secret byte
const OTHER: u8 = 8; // another device

/// The fixture's contents, deterministically (fixed keys, actor suffixes and timestamps).
fn fixture_contents() -> Fixture {
    let identity = NodeIdentity {
        secret: [OWN; 32],
        actor_suffix: [OWN; 8],
    };
    let mut docs = Vec::new();

    // A lane: three own changes, then two by another device on top.
    let a = lane(1, 1);
    let mut mine = Writer::new(OWN, OWN, a);
    let mut theirs = Writer::new(OTHER, OTHER, a);
    let mut changes = mine.edits(3);
    theirs.receive(&changes);
    changes.extend(theirs.edits(2));
    docs.push(FixtureDoc {
        doc: a,
        changes,
        compacted: 0,
        snapshot: None,
        heads: sorted(theirs.heads()),
    });

    // The notebook: six changes by the other device, the first four compacted.
    let b = doc_id(1, DocKind::Notebook);
    let mut w = Writer::new(OTHER, OTHER, b);
    let mut changes = w.edits(4);
    let snapshot = (w.am.save(), sorted(w.heads()));
    changes.extend(w.edits(2));
    docs.push(FixtureDoc {
        doc: b,
        changes,
        compacted: 4,
        snapshot: Some(snapshot),
        heads: sorted(w.heads()),
    });

    // Another class's roster: two own changes.
    let c = doc_id(2, DocKind::Roster);
    let mut w = Writer::new(OWN, OWN, c);
    docs.push(FixtureDoc {
        doc: c,
        changes: w.edits(2),
        compacted: 0,
        snapshot: None,
        heads: sorted(w.heads()),
    });

    Fixture {
        identity,
        meta: vec![
            ("relay.address", b"192.0.2.10:4433".to_vec()),
            ("relay.cert_sha256", vec![0xC3; 32]),
            (
                "class.01010101010101010101010101010101.secret",
                vec![0x5A; 32],
            ),
        ],
        sync_states: vec![
            (DeviceId([9; 32]), a, b"sync-state-a".to_vec()),
            (DeviceId([9; 32]), b, b"sync-state-b".to_vec()),
        ],
        docs,
    }
}

fn sorted(mut v: Vec<ChangeHash>) -> Vec<ChangeHash> {
    v.sort();
    v
}

fn hashes_blob(hashes: &[ChangeHash]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.0).collect()
}

/// Write a v1 database at `path` with plain SQL. `with_data` false: schema only.
fn write_v1(path: &Path, with_data: bool) {
    let c = Connection::open(path).unwrap();
    c.pragma_update(None, "journal_mode", "DELETE").unwrap();
    c.execute_batch("BEGIN").unwrap();
    c.execute_batch(V1_SCHEMA).unwrap();
    c.pragma_update(None, "application_id", APPLICATION_ID)
        .unwrap();
    c.pragma_update(None, "user_version", 1).unwrap();
    if with_data {
        let f = fixture_contents();
        c.execute(
            "INSERT INTO identity (id, secret, actor_suffix) VALUES (1, ?1, ?2)",
            params![&f.identity.secret[..], &f.identity.actor_suffix[..]],
        )
        .unwrap();
        for (k, v) in &f.meta {
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                params![k, v],
            )
            .unwrap();
        }
        for d in &f.docs {
            c.execute(
                "INSERT INTO documents (doc, class, heads, snapshot, snapshot_heads)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    d.doc.to_string(),
                    &d.doc.class.0[..],
                    hashes_blob(&d.heads),
                    d.snapshot.as_ref().map(|s| s.0.clone()),
                    d.snapshot.as_ref().map(|s| hashes_blob(&s.1)),
                ],
            )
            .unwrap();
            let id = c.last_insert_rowid();
            for (i, ch) in d.changes.iter().enumerate() {
                let deps = Change::try_from(&ch.bytes[..]).unwrap().deps().to_vec();
                let bytes = (i >= d.compacted).then(|| ch.bytes.clone());
                c.execute(
                    "INSERT INTO changes (doc, hash, author, signature, deps, bytes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        id,
                        &ch.hash.0[..],
                        &ch.author.0[..],
                        &ch.signature.0[..],
                        hashes_blob(&deps),
                        bytes
                    ],
                )
                .unwrap();
            }
        }
        for (peer, doc, state) in &f.sync_states {
            c.execute(
                "INSERT INTO sync_states (peer, doc, state)
                 VALUES (?1, (SELECT id FROM documents WHERE doc = ?2), ?3)",
                params![&peer.0[..], doc.to_string(), state],
            )
            .unwrap();
        }
    }
    c.execute_batch("COMMIT").unwrap();
    c.execute_batch("VACUUM").unwrap();
}

/// Rebuild the committed fixture. Run only when it must change (it never should: v1 is
/// frozen), then commit `tests/fixtures/v1.sqlite3`.
#[test]
#[ignore = "writes tests/fixtures/v1.sqlite3; run by hand"]
fn regenerate_v1_fixture() {
    let path = fixture_path();
    let _ = std::fs::remove_file(&path);
    write_v1(&path, true);
    println!("wrote {}", path.display());
}

fn copy_fixture(dir: &Path) -> PathBuf {
    let path = dir.join("v1.sqlite3");
    std::fs::copy(fixture_path(), &path).unwrap();
    path
}

#[test]
fn the_v1_fixture_upgrades_and_keeps_all_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_fixture(dir.path());
    {
        let raw = Connection::open(&path).unwrap();
        let v: u32 = raw
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, 1, "the fixture is a v1 store");
    }
    let f = fixture_contents();
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), END_VERSION);

    assert_eq!(store.identity().unwrap(), Some(f.identity.clone()));
    for (k, v) in &f.meta {
        assert_eq!(store.meta(k).unwrap().as_ref(), Some(v), "meta {k}");
    }
    let mut expected_docs: Vec<DocId> = f.docs.iter().map(|d| d.doc).collect();
    expected_docs.sort();
    assert_eq!(store.documents().unwrap(), expected_docs);
    assert_eq!(
        store.documents_of_class(&ClassId([1; 16])).unwrap().len(),
        2
    );
    for (peer, doc, state) in &f.sync_states {
        assert_eq!(store.sync_state(peer, doc).unwrap().as_ref(), Some(state));
    }

    let own = f.identity.device_id();
    let mut expected_undelivered = Vec::new();
    for d in &f.docs {
        assert_eq!(store.heads(&d.doc).unwrap(), d.heads, "{}", d.doc);
        let loaded = store.load_document(&d.doc).unwrap().unwrap();
        assert_eq!(loaded.changes, d.changes[d.compacted..], "{}", d.doc);
        assert_eq!(loaded.signatures.len(), d.changes.len());
        for c in &d.changes {
            assert_eq!(loaded.signatures[&c.hash], (c.author, c.signature));
        }
        if let Some((_, heads)) = &d.snapshot {
            assert_eq!(&loaded.snapshot_heads, heads);
        }
        let am = loaded.to_automerge(ActorId::from(vec![1u8; 40])).unwrap();
        assert!(d.changes.iter().all(|c| holds(&am, &c.hash)), "{}", d.doc);
        assert_eq!(sorted(am.get_heads()), d.heads);
        // v2 migration: the device's own changes await the relay's Saved.
        for c in &d.changes {
            if c.author == own {
                expected_undelivered.push((d.doc, c.hash));
            }
            assert_eq!(
                store.is_delivered(&d.doc, &c.hash).unwrap(),
                c.author != own
            );
        }
    }
    let mut undelivered = store.undelivered(None).unwrap();
    undelivered.sort();
    expected_undelivered.sort();
    assert_eq!(undelivered, expected_undelivered);
    assert_eq!(expected_undelivered.len(), 5);

    // The upgraded store works: v2 tables are usable, and it reopens as v2.
    let a = &f.docs[0];
    let mut w = Writer::new(OWN, 0x70, a.doc);
    w.receive(&a.changes);
    let next = w.edit();
    store.put_changes(&[(a.doc, next.clone())]).unwrap();
    assert!(
        store
            .undelivered(Some(&a.doc))
            .unwrap()
            .contains(&(a.doc, next.hash))
    );
    store.reject_changes(&a.doc, &[next.hash], "test").unwrap();
    assert!(store.is_rejected(&a.doc, &next.hash).unwrap());
    store.close().unwrap();
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), END_VERSION);
}

/// `sqlite_schema` rows, sorted, as text.
fn schema_of(path: &Path) -> Vec<(String, String, String, Option<String>)> {
    let c = Connection::open(path).unwrap();
    let mut stmt = c
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn an_upgraded_schema_is_identical_to_a_fresh_one() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.sqlite3");
    write_v1(&old, false);
    Store::open(&old).unwrap().close().unwrap();
    let fresh = dir.path().join("fresh.sqlite3");
    Store::open(&fresh).unwrap().close().unwrap();
    let (a, b) = (schema_of(&old), schema_of(&fresh));
    assert!(a.len() >= 10, "{a:?}");
    assert_eq!(a, b);
}

#[test]
fn the_committed_fixture_matches_its_generator() {
    // Guards against editing v1_schema.sql or the generator without rebuilding (or, worse,
    // rebuilding the fixture with a changed v1): same schema, same rows.
    let dir = tempfile::tempdir().unwrap();
    let regenerated = dir.path().join("regenerated.sqlite3");
    write_v1(&regenerated, true);
    assert_eq!(schema_of(&fixture_path()), schema_of(&regenerated));
    let count = |p: &Path, table: &str| -> i64 {
        Connection::open(p)
            .unwrap()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    for table in ["meta", "identity", "documents", "changes", "sync_states"] {
        assert_eq!(
            count(&fixture_path(), table),
            count(&regenerated, table),
            "{table}"
        );
    }
}

#[test]
fn a_failed_upgrade_rolls_back_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_fixture(dir.path());
    // Sabotage: a v1 file that already has a table v2 wants to create.
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE undelivered (x)").unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file is unchanged"
    );
    match &err {
        StoreError::Migration { from: 1, step, .. } => assert!(step.starts_with("v2"), "{err}"),
        other => panic!("expected a migration error, got {other}"),
    }
    let c = Connection::open(&path).unwrap();
    let v: u32 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, 1, "the failed upgrade was rolled back");
    let changes: i64 = c
        .query_row("SELECT count(*) FROM changes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(changes, 13);
}
