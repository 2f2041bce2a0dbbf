//! Opening files that are not (usable) Homeroom stores: each is a typed `StoreError`, never a
//! panic, and the file is left byte-for-byte as it was (no reset, no overwrite, no WAL switch).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use homeroom_core::DocKind;
use homeroom_core::IdSource;
use homeroom_store::{APPLICATION_ID, END_VERSION, OpenOptions, Store, StoreError};

/// Open `path` and return the error, checking that the file did not change.
fn open_fails(path: &Path) -> StoreError {
    let before = std::fs::read(path).unwrap();
    let result = std::panic::catch_unwind(|| Store::open(path).err());
    let err = match result {
        Ok(None) => panic!("{} opened but should not have", path.display()),
        Ok(Some(e)) => e,
        Err(_) => panic!("opening {} panicked", path.display()),
    };
    assert_eq!(
        std::fs::read(path).unwrap(),
        before,
        "a failed open modified {}",
        path.display()
    );
    err
}

/// A real store with some data, closed cleanly (WAL checkpointed into the main file).
fn real_store(dir: &Path) -> PathBuf {
    let path = dir.join("store.sqlite3");
    let mut store = Store::open(&path).unwrap();
    let doc = common::doc_id(1, DocKind::Notebook);
    let mut w = common::Writer::new(1, 1, doc);
    // Enough changes for the file to span many pages.
    for _ in 0..20 {
        store
            .put_changes(&common::batch(doc, &w.edits(25)))
            .unwrap();
    }
    store.set_meta("padding", &vec![0x55; 64 * 1024]).unwrap();
    store.close().unwrap();
    assert!(
        !dir.join("store.sqlite3-wal").exists(),
        "clean close removes the WAL"
    );
    path
}

#[test]
fn random_bytes_are_corrupt_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random.bin");
    let mut bytes = vec![0u8; 8192];
    homeroom_core::SeededIds::new(3).fill(&mut bytes);
    std::fs::write(&path, &bytes).unwrap();
    let err = open_fails(&path);
    assert!(matches!(&err, StoreError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("random.bin"),
        "error names the file: {err}"
    );
}

#[test]
fn a_text_file_and_a_tiny_file_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        (
            "notes.txt",
            &b"this is a text file, not a database\n".repeat(40)[..],
        ),
        ("tiny", &b"SQLite"[..]),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let err = open_fails(&path);
        assert!(matches!(&err, StoreError::Corrupt { .. }), "{name}: {err}");
    }
}

#[test]
fn a_truncated_store_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = real_store(dir.path());
    let full = std::fs::read(&path).unwrap();
    assert!(
        full.len() > 16 * 4096,
        "store too small for the test: {}",
        full.len()
    );
    for keep in [full.len() / 2, 4096 + 100, 60] {
        std::fs::write(&path, &full[..keep]).unwrap();
        let err = open_fails(&path);
        assert!(
            matches!(&err, StoreError::Corrupt { .. }),
            "truncated to {keep}: {err}"
        );
    }
}

#[test]
fn a_store_with_damaged_pages_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = real_store(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // Overwrite pages 3..6 (b-tree pages of the schema) with noise.
    let mut noise = vec![0u8; 3 * 4096];
    homeroom_core::SeededIds::new(9).fill(&mut noise);
    bytes[2 * 4096..5 * 4096].copy_from_slice(&noise);
    std::fs::write(&path, &bytes).unwrap();
    let err = open_fails(&path);
    assert!(matches!(&err, StoreError::Corrupt { .. }), "{err}");
}

#[test]
fn foreign_sqlite_files_are_recognised() {
    let dir = tempfile::tempdir().unwrap();
    // Another application's database without an application id.
    let plain = dir.path().join("plain.sqlite3");
    {
        let c = rusqlite::Connection::open(&plain).unwrap();
        c.execute_batch("CREATE TABLE contacts (name TEXT); INSERT INTO contacts VALUES ('x');")
            .unwrap();
    }
    let err = open_fails(&plain);
    assert!(
        matches!(
            &err,
            StoreError::Foreign {
                application_id: 0,
                ..
            }
        ),
        "{err}"
    );
    // One with someone else's application id (and a schema version).
    let other = dir.path().join("other.sqlite3");
    {
        let c = rusqlite::Connection::open(&other).unwrap();
        c.execute_batch(
            "PRAGMA application_id = 1234; PRAGMA user_version = 1; CREATE TABLE t (x);",
        )
        .unwrap();
    }
    let err = open_fails(&other);
    assert!(
        matches!(
            &err,
            StoreError::Foreign {
                application_id: 1234,
                user_version: 1,
                ..
            }
        ),
        "{err}"
    );
    // Homeroom's id but no version: not something Homeroom wrote.
    let odd = dir.path().join("odd.sqlite3");
    {
        let c = rusqlite::Connection::open(&odd).unwrap();
        c.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
    }
    let err = open_fails(&odd);
    assert!(matches!(&err, StoreError::Foreign { .. }), "{err}");
}

#[test]
fn a_store_from_a_newer_homeroom_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = real_store(dir.path());
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", END_VERSION + 1)
            .unwrap();
        // Leave it in rollback-journal mode so the file alone holds everything.
        c.pragma_update(None, "journal_mode", "DELETE").unwrap();
    }
    let err = open_fails(&path);
    assert!(
        matches!(&err, StoreError::TooNew { found, supported, .. } if *found == END_VERSION + 1 && *supported == END_VERSION),
        "{err}"
    );
}

#[test]
fn an_empty_file_becomes_a_store_and_a_missing_directory_is_an_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.sqlite3");
    std::fs::write(&empty, b"").unwrap();
    let store = Store::open(&empty).unwrap();
    assert_eq!(store.schema_version().unwrap(), END_VERSION);
    drop(store);

    let missing = dir.path().join("no/such/dir/store.sqlite3");
    let err = Store::open(&missing).unwrap_err();
    assert!(matches!(&err, StoreError::Open { .. }), "{err}");
}

#[test]
fn skipping_the_integrity_check_still_refuses_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random.bin");
    let mut bytes = vec![0u8; 4096];
    homeroom_core::SeededIds::new(5).fill(&mut bytes);
    std::fs::write(&path, &bytes).unwrap();
    let err = Store::open_with(&path, &OpenOptions::new().integrity_check(false)).unwrap_err();
    assert!(matches!(&err, StoreError::Corrupt { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}
