//! Behaviour of the store's operations, with real signed Automerge changes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Writer, batch, doc_id, holds, lane};
use homeroom_core::automerge::{ActorId, ChangeHash, ReadDoc};
use homeroom_core::{ClassId, DeviceId, DocKind, SignedChange};
use homeroom_store::{NodeIdentity, OpenOptions, Store, StoreError, WriteBatch};

fn actor() -> ActorId {
    ActorId::from(vec![0xEE; 40])
}

#[test]
fn put_then_load_returns_changes_in_order_with_signatures() {
    let mut store = Store::open_in_memory().unwrap();
    let doc = lane(1, 2);
    let mut w = Writer::new(1, 1, doc);
    let changes = w.edits(5);
    store.put_changes(&batch(doc, &changes)).unwrap();

    let loaded = store.load_document(&doc).unwrap().unwrap();
    assert!(loaded.snapshot.is_none());
    let hashes: Vec<_> = loaded.changes.iter().map(|c| c.hash).collect();
    assert_eq!(hashes, changes.iter().map(|c| c.hash).collect::<Vec<_>>());
    assert_eq!(
        loaded.changes, changes,
        "bytes, authors and signatures round-trip"
    );
    for c in &changes {
        assert_eq!(loaded.signatures[&c.hash], (c.author, c.signature));
        assert_eq!(
            store.signature(&doc, &c.hash).unwrap(),
            Some((c.author, c.signature))
        );
        // Stored signatures still verify.
        homeroom_core::identity::verify_change(&doc, &c.bytes, &loaded.signatures[&c.hash].1)
            .unwrap();
    }
    let am = loaded.to_automerge(actor()).unwrap();
    assert_eq!(am.get_heads(), w.heads());
    assert_eq!(
        am.keys(homeroom_core::automerge::ROOT).count(),
        w.am.keys(homeroom_core::automerge::ROOT).count()
    );

    assert!(store.load_document(&lane(1, 3)).unwrap().is_none());
    assert_eq!(store.signature(&doc, &ChangeHash([0; 32])).unwrap(), None);
}

#[test]
fn put_is_idempotent_per_hash() {
    let mut store = Store::open_in_memory().unwrap();
    let doc = lane(1, 2);
    let changes = Writer::new(1, 1, doc).edits(3);
    let mut b = WriteBatch::new();
    b.put_changes(batch(doc, &changes));
    let first = store.write(&b).unwrap();
    assert_eq!((first.new_changes, first.duplicate_changes), (3, 0));
    let again = store.write(&b).unwrap();
    assert_eq!((again.new_changes, again.duplicate_changes), (0, 3));
    store.put_changes(&batch(doc, &changes)).unwrap();
    assert_eq!(store.load_document(&doc).unwrap().unwrap().changes.len(), 3);
}

#[test]
fn one_batch_commits_many_documents_heads_and_sync_states() {
    let mut store = Store::open_in_memory().unwrap();
    let peer = DeviceId([7; 32]);
    let mut b = WriteBatch::new();
    let mut writers = Vec::new();
    for (class, family) in [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)] {
        let doc = lane(class, family);
        let mut w = Writer::new(10 + family, family, doc);
        b.put_changes(batch(doc, &w.edits(10)));
        b.set_heads(doc, w.heads());
        b.put_sync_state(peer, doc, vec![class, family]);
        writers.push(w);
    }
    assert_eq!(b.change_count(), 50);
    let summary = store.write(&b).unwrap();
    assert_eq!(summary.new_changes, 50);

    assert_eq!(store.documents().unwrap().len(), 5);
    let class1 = store.documents_of_class(&ClassId([1; 16])).unwrap();
    assert_eq!(class1, vec![lane(1, 1), lane(1, 2), lane(1, 3)]);
    let catalog = store.heads_of_class(&ClassId([2; 16])).unwrap();
    assert_eq!(catalog.len(), 2);
    for w in &writers {
        let mut heads = w.heads();
        heads.sort();
        assert_eq!(store.heads(&w.doc).unwrap(), heads);
        let am = store
            .load_document(&w.doc)
            .unwrap()
            .unwrap()
            .to_automerge(actor())
            .unwrap();
        assert_eq!(am.get_heads(), w.heads());
        assert!(store.sync_state(&peer, &w.doc).unwrap().is_some());
    }
    assert!(store.heads(&lane(9, 9)).unwrap().is_empty());
}

#[test]
fn a_malformed_change_rolls_back_the_whole_batch() {
    let mut store = Store::open_in_memory().unwrap();
    let good_doc = lane(1, 1);
    let good = Writer::new(1, 1, good_doc).edits(2);
    let bad_doc = lane(1, 2);
    let mut garbage = Writer::new(2, 2, bad_doc).edit();
    garbage.bytes = b"definitely not an automerge change".to_vec();
    let mut b = WriteBatch::new();
    b.put_changes(batch(good_doc, &good));
    b.put_change(bad_doc, garbage.clone());
    b.set_heads(good_doc, vec![good[1].hash]);
    let err = store.write(&b).unwrap_err();
    assert!(
        matches!(&err, StoreError::MalformedChange { doc, hash, .. } if *doc == bad_doc && *hash == garbage.hash),
        "{err}"
    );
    assert!(store.load_document(&good_doc).unwrap().is_none());
    assert!(store.heads(&good_doc).unwrap().is_empty());

    // Bytes of one change under another change's hash: refused too.
    let mut lying = good[0].clone();
    lying.hash = good[1].hash;
    let err = store.put_changes(&[(good_doc, lying)]).unwrap_err();
    assert!(err.to_string().contains("hash to"), "{err}");
    assert!(store.documents().unwrap().is_empty());
}

#[test]
fn snapshots_compact_bytes_but_keep_every_signature() {
    let mut store = Store::open_in_memory().unwrap();
    let doc = doc_id(3, DocKind::Notebook);
    let mut w = Writer::new(1, 1, doc);
    let first = w.edits(10);
    store.put_changes(&batch(doc, &first)).unwrap();
    let snap1 = w.am.save();
    let heads1 = w.heads();
    store.save_snapshot(&doc, &snap1, &heads1).unwrap();
    let later = w.edits(10);
    store.put_changes(&batch(doc, &later)).unwrap();

    let loaded = store.load_document(&doc).unwrap().unwrap();
    assert_eq!(loaded.snapshot.as_deref(), Some(&snap1[..]));
    assert_eq!(loaded.snapshot_heads, heads1);
    assert_eq!(
        loaded.changes, later,
        "only the changes after the snapshot carry bytes"
    );
    assert_eq!(loaded.signatures.len(), 20);
    for c in first.iter().chain(&later) {
        assert_eq!(loaded.signatures[&c.hash], (c.author, c.signature));
    }
    let am = loaded.to_automerge(actor()).unwrap();
    assert_eq!(am.get_heads(), w.heads());
    assert!(first.iter().chain(&later).all(|c| holds(&am, &c.hash)));

    // A second snapshot covering everything leaves no change bytes.
    store.save_snapshot(&doc, &w.am.save(), &w.heads()).unwrap();
    let loaded = store.load_document(&doc).unwrap().unwrap();
    assert!(loaded.changes.is_empty());
    assert_eq!(loaded.signatures.len(), 20);
    assert_eq!(loaded.to_automerge(actor()).unwrap().get_heads(), w.heads());
}

#[test]
fn snapshots_that_would_lose_or_invent_changes_are_refused() {
    let mut store = Store::open_in_memory().unwrap();
    let doc = doc_id(3, DocKind::Notebook);
    let mut w = Writer::new(1, 1, doc);
    let first = w.edits(3);
    store.put_changes(&batch(doc, &first)).unwrap();
    let old_snapshot = (w.am.save(), w.heads());
    let more = w.edits(3);
    store.put_changes(&batch(doc, &more)).unwrap();
    store.save_snapshot(&doc, &w.am.save(), &w.heads()).unwrap();
    let before = store.load_document(&doc).unwrap().unwrap();

    let refused = |r: Result<(), StoreError>| match r {
        Err(StoreError::InvalidSnapshot { reason, .. }) => reason,
        other => panic!("expected InvalidSnapshot, got {other:?}"),
    };
    // Garbage.
    let reason = refused(store.save_snapshot(&doc, b"garbage", &[]));
    assert!(reason.contains("does not load"), "{reason}");
    // Heads that are not the snapshot's.
    let reason = refused(store.save_snapshot(&doc, &w.am.save(), &[first[0].hash]));
    assert!(reason.contains("heads"), "{reason}");
    // An older snapshot: would drop compacted changes.
    let reason = refused(store.save_snapshot(&doc, &old_snapshot.0, &old_snapshot.1));
    assert!(reason.contains("previous snapshot"), "{reason}");
    // A snapshot holding a change that was never stored (its signature would be unknown).
    let _unstored = w.edit();
    let reason = refused(store.save_snapshot(&doc, &w.am.save(), &w.heads()));
    assert!(reason.contains("not stored"), "{reason}");

    let after = store.load_document(&doc).unwrap().unwrap();
    assert_eq!(after.snapshot, before.snapshot);
    assert_eq!(after.changes, before.changes);
}

/// A<-B<-C on one device, D concurrent on another, C also depends on D:
/// genesis <- A <- B <- C, genesis <- D <- C.
struct Forked {
    doc: homeroom_core::DocId,
    a: SignedChange,
    b: SignedChange,
    c: SignedChange,
    d: SignedChange,
    all: Vec<SignedChange>,
}

fn forked() -> Forked {
    let doc = lane(4, 4);
    let mut w1 = Writer::new(1, 1, doc);
    let mut w2 = Writer::new(2, 2, doc);
    let a = w1.edit();
    let b = w1.edit();
    let d = w2.edit();
    w1.receive(std::slice::from_ref(&d));
    let c = w1.edit();
    let all = vec![a.clone(), b.clone(), d.clone(), c.clone()];
    Forked {
        doc,
        a,
        b,
        c,
        d,
        all,
    }
}

#[test]
fn rejecting_a_change_removes_its_dependents_and_keeps_an_audit() {
    let f = forked();
    let mut store = Store::open_in_memory().unwrap();
    let peer = DeviceId([3; 32]);
    let mut b = WriteBatch::new();
    b.put_changes(batch(f.doc, &f.all));
    b.set_heads(f.doc, vec![f.c.hash]);
    b.put_sync_state(peer, f.doc, vec![1, 2, 3]);
    store.write(&b).unwrap();

    let removed = store
        .reject_changes(&f.doc, &[f.a.hash], "not a writer")
        .unwrap();
    assert_eq!(removed[0], f.a.hash);
    let removed: HashSet<_> = removed.into_iter().collect();
    assert_eq!(removed, HashSet::from([f.a.hash, f.b.hash, f.c.hash]));

    let loaded = store.load_document(&f.doc).unwrap().unwrap();
    assert_eq!(loaded.changes, vec![f.d.clone()]);
    assert_eq!(loaded.signatures.len(), 1);
    let am = loaded.to_automerge(actor()).unwrap();
    assert_eq!(am.get_heads(), vec![f.d.hash]);
    assert_eq!(
        store.heads(&f.doc).unwrap(),
        vec![f.d.hash],
        "heads recomputed"
    );
    assert_eq!(
        store.sync_state(&peer, &f.doc).unwrap(),
        None,
        "sync states dropped"
    );

    assert!(store.is_rejected(&f.doc, &f.b.hash).unwrap());
    assert!(!store.is_rejected(&f.doc, &f.d.hash).unwrap());
    let audit = store.rejected(&f.doc).unwrap();
    assert_eq!(audit.len(), 3);
    for r in &audit {
        let original = f.all.iter().find(|c| c.hash == r.hash).unwrap();
        assert_eq!(r.bytes.as_deref(), Some(&original.bytes[..]));
        assert_eq!(r.author, Some(original.author));
        assert_eq!(r.signature, Some(original.signature));
        if r.hash == f.a.hash {
            assert_eq!(r.reason, "not a writer");
        } else {
            assert!(
                r.reason.starts_with("depends on rejected change"),
                "{}",
                r.reason
            );
        }
    }
    // Rejecting a hash the store never saw is recorded too.
    let unknown = ChangeHash([0xAB; 32]);
    assert_eq!(
        store
            .reject_changes(&f.doc, &[unknown], "bad signature")
            .unwrap(),
        vec![unknown]
    );
    assert!(store.is_rejected(&f.doc, &unknown).unwrap());
}

#[test]
fn rejecting_a_compacted_change_rebuilds_the_snapshot_without_it() {
    let f = forked();
    let mut store = Store::open_in_memory().unwrap();
    store.put_changes(&batch(f.doc, &f.all)).unwrap();
    // Compact everything.
    let mut w = Writer::new(9, 9, f.doc);
    w.receive(&f.all);
    store
        .save_snapshot(&f.doc, &w.am.save(), &w.heads())
        .unwrap();
    assert!(
        store
            .load_document(&f.doc)
            .unwrap()
            .unwrap()
            .changes
            .is_empty()
    );

    let removed = store
        .reject_changes(&f.doc, &[f.b.hash], "not a writer")
        .unwrap();
    assert_eq!(
        removed.iter().copied().collect::<HashSet<_>>(),
        HashSet::from([f.b.hash, f.c.hash])
    );

    let loaded = store.load_document(&f.doc).unwrap().unwrap();
    let am = loaded.to_automerge(actor()).unwrap();
    assert!(holds(&am, &f.a.hash) && holds(&am, &f.d.hash));
    assert!(!holds(&am, &f.b.hash) && !holds(&am, &f.c.hash));
    let mut heads = vec![f.a.hash, f.d.hash];
    heads.sort();
    assert_eq!(loaded.snapshot_heads, heads);
    assert_eq!(loaded.signatures.len(), 2);
    // The audit kept the bytes, taken from the old snapshot.
    for r in store.rejected(&f.doc).unwrap() {
        let original = f.all.iter().find(|c| c.hash == r.hash).unwrap();
        let restored = homeroom_core::automerge::Change::try_from(&r.bytes.unwrap()[..]).unwrap();
        assert_eq!(restored.hash(), original.hash);
    }
}

#[test]
fn own_changes_are_undelivered_until_a_saved_covers_them() {
    let mut store = Store::open_in_memory().unwrap();
    let identity = NodeIdentity {
        secret: [1; 32],
        actor_suffix: [1; 8],
    };
    store.set_identity(&identity).unwrap();
    let doc = lane(1, 1);
    let other_doc = lane(1, 2);
    // Writer::new(1, 1, ..) uses secret [1; 32]: this node's own key.
    let mut mine = Writer::new(1, 1, doc);
    let mut theirs = Writer::new(2, 2, doc);
    let l1 = mine.edit();
    let l2 = mine.edit();
    store
        .put_changes(&batch(doc, &[l1.clone(), l2.clone()]))
        .unwrap();
    // A remote change on top of l2, then one more local change.
    theirs.receive(&[l1.clone(), l2.clone()]);
    let r1 = theirs.edit();
    store
        .put_changes(&batch(doc, std::slice::from_ref(&r1)))
        .unwrap();
    mine.receive(std::slice::from_ref(&r1));
    let l3 = mine.edit();
    let o1 = Writer::new(1, 1, other_doc).edit();
    store
        .put_changes(&[(doc, l3.clone()), (other_doc, o1.clone())])
        .unwrap();

    assert_eq!(
        store.undelivered(None).unwrap(),
        vec![
            (doc, l1.hash),
            (doc, l2.hash),
            (doc, l3.hash),
            (other_doc, o1.hash)
        ]
    );
    assert!(
        store.is_delivered(&doc, &r1.hash).unwrap(),
        "remote changes are not tracked"
    );
    assert!(!store.is_delivered(&doc, &l1.hash).unwrap());
    assert!(
        !store.is_delivered(&doc, &ChangeHash([5; 32])).unwrap(),
        "unknown: not delivered"
    );

    // The relay saved up to r1: l1 and l2 are its ancestors (through a remote change).
    let delivered = store.mark_delivered(&doc, &[r1.hash]).unwrap();
    assert_eq!(
        delivered.into_iter().collect::<HashSet<_>>(),
        HashSet::from([l1.hash, l2.hash])
    );
    assert!(store.is_delivered(&doc, &l1.hash).unwrap());
    assert_eq!(store.undelivered(Some(&doc)).unwrap(), vec![(doc, l3.hash)]);
    // Idempotent; then the rest.
    assert!(store.mark_delivered(&doc, &[r1.hash]).unwrap().is_empty());
    assert_eq!(
        store.mark_delivered(&doc, &[l3.hash]).unwrap(),
        vec![l3.hash]
    );
    assert_eq!(store.undelivered(None).unwrap(), vec![(other_doc, o1.hash)]);
    // Storing a delivered change again does not make it pending again.
    store
        .put_changes(&batch(doc, std::slice::from_ref(&l1)))
        .unwrap();
    assert!(store.is_delivered(&doc, &l1.hash).unwrap());
    // A rejected local change leaves the list.
    store
        .reject_changes(&other_doc, &[o1.hash], "read-only")
        .unwrap();
    assert!(store.undelivered(None).unwrap().is_empty());
}

#[test]
fn identity_is_kept_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.sqlite3");
    let id = NodeIdentity {
        secret: [7; 32],
        actor_suffix: [1, 2, 3, 4, 5, 6, 7, 8],
    };
    {
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.identity().unwrap(), None);
        store.set_identity(&id).unwrap();
        store.set_identity(&id).unwrap(); // same one: fine
        let other = NodeIdentity {
            secret: [8; 32],
            actor_suffix: [0; 8],
        };
        let err = store.set_identity(&other).unwrap_err();
        assert!(
            matches!(&err, StoreError::IdentityExists { existing, .. } if *existing == id.device_id()),
            "{err}"
        );
        store.close().unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.identity().unwrap(), Some(id.clone()));
    assert!(
        !format!("{id:?}").contains("0707070707"),
        "Debug must not print the secret"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the store holds a secret key: owner-only ({mode:o})"
        );
    }
}

#[test]
fn meta_and_sync_states_round_trip() {
    let mut store = Store::open_in_memory().unwrap();
    assert_eq!(store.meta("relay").unwrap(), None);
    store.set_meta("relay", b"10.0.0.1:4433").unwrap();
    store.set_meta("relay", b"10.0.0.2:4433").unwrap();
    assert_eq!(
        store.meta("relay").unwrap().as_deref(),
        Some(&b"10.0.0.2:4433"[..])
    );
    assert!(store.delete_meta("relay").unwrap());
    assert!(!store.delete_meta("relay").unwrap());

    let (p1, p2) = (DeviceId([1; 32]), DeviceId([2; 32]));
    let (d1, d2) = (lane(1, 1), lane(1, 2));
    store.put_sync_state(&p1, &d1, b"s11").unwrap();
    store.put_sync_state(&p1, &d2, b"s12").unwrap();
    store.put_sync_state(&p2, &d1, b"s21").unwrap();
    store.put_sync_state(&p1, &d1, b"s11-new").unwrap();
    assert_eq!(
        store.sync_state(&p1, &d1).unwrap().as_deref(),
        Some(&b"s11-new"[..])
    );
    assert_eq!(store.sync_state(&p2, &d2).unwrap(), None);
    store.delete_sync_state(&p2, &d1).unwrap();
    assert_eq!(store.sync_state(&p2, &d1).unwrap(), None);
    assert_eq!(store.delete_peer_sync_states(&p1).unwrap(), 2);
    assert_eq!(store.sync_state(&p1, &d2).unwrap(), None);
}

#[test]
fn data_survives_reopen_and_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.sqlite3");
    let doc = lane(1, 1);
    let mut w = Writer::new(1, 1, doc);
    let changes = w.edits(20);
    {
        let mut store = Store::open(&path).unwrap();
        store.put_changes(&batch(doc, &changes)).unwrap();
        // Dropped without close(): WAL still holds the data until checkpoint.
    }
    let store = Store::open(&path).unwrap();
    let backup = dir.path().join("backup.sqlite3");
    store.backup_to(&backup).unwrap();
    for p in [&path, &backup] {
        let s = Store::open(p).unwrap();
        let am = s
            .load_document(&doc)
            .unwrap()
            .unwrap()
            .to_automerge(actor())
            .unwrap();
        assert_eq!(am.get_heads(), w.heads());
    }
}

#[test]
fn a_writer_blocked_past_the_busy_timeout_gets_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite3");
    let mut store = Store::open_with(
        &path,
        &OpenOptions::new().busy_timeout(Duration::from_millis(50)),
    )
    .unwrap();
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = store.set_meta("k", b"v").unwrap_err();
    assert!(matches!(err, StoreError::Busy { .. }), "{err}");
    blocker.execute_batch("ROLLBACK").unwrap();
    store.set_meta("k", b"v").unwrap();
}

#[test]
fn a_store_moves_between_threads_and_several_may_share_a_file() {
    fn assert_send<T: Send>() {}
    assert_send::<Store>();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.sqlite3");
    let mut writer = Store::open(&path).unwrap();
    let reader = Store::open(&path).unwrap();
    let doc = lane(1, 1);
    let mut w = Writer::new(1, 1, doc);
    let first = w.edits(3);
    // The relay's writer thread owns one store; connection handlers read through others.
    let handle = std::thread::spawn(move || {
        writer.put_changes(&batch(doc, &first)).unwrap();
        writer
    });
    let mut writer = handle.join().unwrap();
    assert_eq!(
        reader.load_document(&doc).unwrap().unwrap().changes.len(),
        3
    );
    writer.put_changes(&batch(doc, &w.edits(2))).unwrap();
    assert_eq!(
        reader.load_document(&doc).unwrap().unwrap().changes.len(),
        5
    );
}
