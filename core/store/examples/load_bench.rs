//! Measures `Store::load_document` (and rebuilding the Automerge document) for one document
//! with many small signed changes, before and after compaction.
//!
//! ```sh
//! cargo run --release -p homeroom-store --example load_bench -- 30000
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use homeroom_core::automerge::transaction::{CommitOptions, Transactable};
use homeroom_core::automerge::{ActorId, Automerge, ROOT};
use homeroom_core::genesis::genesis_document;
use homeroom_core::identity::actor_for;
use homeroom_core::{ClassId, DeviceKey, DocId, DocKind, SignedChange};
use homeroom_store::{OpenOptions, Store, WriteBatch};

fn median(mut f: impl FnMut() -> Duration) -> Duration {
    let mut runs: Vec<Duration> = (0..7).map(|_| f()).collect();
    runs.sort();
    runs[runs.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(30_000);
    let doc = DocId::new(ClassId([1; 16]), DocKind::Notebook);
    let keys: Vec<DeviceKey> = (1..=3u8).map(|i| DeviceKey::from_secret([i; 32])).collect();
    let actors: Vec<ActorId> = keys
        .iter()
        .map(|k| actor_for(&k.device_id(), [1; 8]))
        .collect();

    // Build the history: small edits by three devices, interleaved.
    let t = Instant::now();
    let mut am = genesis_document(&doc, actors[0].clone());
    let mut changes: Vec<SignedChange> = Vec::with_capacity(n);
    for i in 0..n {
        let who = i % 3;
        am.set_actor(actors[who].clone());
        let mut tx = am.transaction();
        tx.put(ROOT, format!("k{}", i % 500), i as i64).unwrap();
        tx.commit_with(CommitOptions::default().with_time(1_700_000_000_000 + i as i64));
        let change = am.get_last_local_change().unwrap();
        changes.push(SignedChange::sign(&keys[who], &doc, &change));
    }
    let avg_len = changes.iter().map(|c| c.bytes.len()).sum::<usize>() / n;
    println!(
        "built {n} signed changes (avg {avg_len} bytes) in {}",
        ms(t.elapsed())
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.sqlite3");
    {
        let mut store = Store::open(&path).unwrap();
        let t = Instant::now();
        for chunk in changes.chunks(500) {
            let mut b = WriteBatch::new();
            b.put_changes(chunk.iter().map(|c| (doc, c.clone())));
            b.set_heads(doc, vec![chunk[chunk.len() - 1].hash]);
            store.write(&b).unwrap();
        }
        let e = t.elapsed();
        println!(
            "stored in batches of 500: {} ({:.0} changes/s)",
            ms(e),
            n as f64 / e.as_secs_f64()
        );
        // One fsync'd transaction per change (a device saving each edit), on another doc.
        let other = DocId::new(ClassId([1; 16]), DocKind::Roster);
        let mut o = genesis_document(&other, actors[0].clone());
        let t = Instant::now();
        for i in 0..200 {
            let mut tx = o.transaction();
            tx.put(ROOT, "x", i as i64).unwrap();
            tx.commit();
            let c = o.get_last_local_change().unwrap();
            store
                .put_changes(&[(other, SignedChange::sign(&keys[0], &other, &c))])
                .unwrap();
        }
        println!(
            "200 single-change transactions: {} per commit (incl. signing)",
            ms(t.elapsed() / 200)
        );
        store.close().unwrap();
    }
    let size = std::fs::metadata(&path).unwrap().len();
    println!("file size: {:.1} MB", size as f64 / 1e6);

    let t = Instant::now();
    let store = Store::open(&path).unwrap();
    println!("open with quick_check: {}", ms(t.elapsed()));
    drop(store);
    let t = Instant::now();
    let store = Store::open_with(&path, &OpenOptions::new().integrity_check(false)).unwrap();
    println!("open without quick_check: {}", ms(t.elapsed()));

    let load = median(|| {
        let t = Instant::now();
        let loaded = store.load_document(&doc).unwrap().unwrap();
        assert_eq!(loaded.changes.len(), n);
        t.elapsed()
    });
    println!("load_document ({n} changes, no snapshot): {}", ms(load));
    let loaded = store.load_document(&doc).unwrap().unwrap();
    let rebuild = median(|| {
        let t = Instant::now();
        let am = loaded.to_automerge(ActorId::random()).unwrap();
        assert_eq!(am.get_heads(), vec![changes[n - 1].hash]);
        t.elapsed()
    });
    println!("  + LoadedDocument::to_automerge: {}", ms(rebuild));

    // Compact and load again.
    let mut store = store;
    let snapshot = am.save();
    let t = Instant::now();
    store
        .save_snapshot(&doc, &snapshot, &am.get_heads())
        .unwrap();
    println!(
        "save_snapshot ({:.1} KB): {}",
        snapshot.len() as f64 / 1e3,
        ms(t.elapsed())
    );
    let load = median(|| {
        let t = Instant::now();
        let loaded = store.load_document(&doc).unwrap().unwrap();
        assert_eq!(loaded.signatures.len(), n);
        t.elapsed()
    });
    println!("load_document (snapshot + {n} signatures): {}", ms(load));
    let loaded = store.load_document(&doc).unwrap().unwrap();
    let rebuild = median(|| {
        let t = Instant::now();
        let am: Automerge = loaded.to_automerge(ActorId::random()).unwrap();
        assert_eq!(am.get_heads(), vec![changes[n - 1].hash]);
        t.elapsed()
    });
    println!("  + LoadedDocument::to_automerge: {}", ms(rebuild));
}
