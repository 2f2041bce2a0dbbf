//! Power-loss style damage: a copy of a data folder whose SQLite write-ahead log is cut at
//! random points (what a disk that lost the tail of its writes leaves behind) must open to a
//! consistent state or fail with a typed error — never panic, and never lose what had been
//! checkpointed into the main file.
//!
//! For a device folder: entries A were written and checkpointed (the device was closed, which
//! folds the WAL into the main file), then entries B were written and are only in the WAL. For
//! every cut, opening gives either a `ClientError`, or a notebook holding all of A and a
//! *prefix* of B (each write is one transaction; WAL replay stops at the first incomplete
//! commit). The same for the relay's store with `homeroom_store::Store`.
//!
//! `HOMEROOM_WAL_CUTS=N` for more cuts (default 40 per folder).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use homeroom_client::Device;
use homeroom_client::core::{ClassId, DocId, DocKind, ItemId};
use homeroom_e2e::fault_proxy::SplitMix;
use homeroom_e2e::school::homework;
use homeroom_store::Store;

fn cuts() -> usize {
    std::env::var("HOMEROOM_WAL_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

/// Copy every file of `from` into `to`, the `-wal` file cut to `wal_len` bytes (the `-shm`
/// index is not copied: it is rebuilt from the WAL, as after a reboot).
fn copy_cut(from: &Path, to: &Path, wal_len: u64) -> Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let p = e?.path();
        let name = p
            .file_name()
            .context("file name")?
            .to_string_lossy()
            .into_owned();
        if name.ends_with("-shm") || p.is_dir() {
            continue;
        }
        let dest = to.join(&name);
        fs::copy(&p, &dest)?;
        if name.ends_with("-wal") {
            fs::OpenOptions::new()
                .write(true)
                .open(&dest)?
                .set_len(wal_len)?;
        }
    }
    Ok(())
}

/// Cut points: 0, the whole log, every few frames' boundaries and random byte offsets.
fn cut_points(wal_len: u64, n: usize, seed: u64) -> Vec<u64> {
    let mut rng = SplitMix::new(seed);
    let mut v: BTreeSet<u64> = [0, 32, wal_len].into_iter().collect();
    while v.len() < n {
        v.insert(rng.below(wal_len + 1));
    }
    v.into_iter().collect()
}

fn snapshot_with_wal(dir: &Path, snap: &Path) -> Result<u64> {
    fs::create_dir_all(snap)?;
    let mut wal_len = 0;
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            continue;
        }
        let name = p.file_name().context("file name")?;
        fs::copy(&p, snap.join(name))?;
        if name.to_string_lossy().ends_with("-wal") {
            wal_len = fs::metadata(&p)?.len();
        }
    }
    Ok(wal_len)
}

#[test]
fn device_folder_with_a_cut_wal_opens_consistently_or_fails_typed() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("device");
    // A: written, then checkpointed by closing the device.
    let (class, a) = {
        let d = Device::open(&dir)?;
        let class = d.create_class("Class 3B", "Ms Li")?;
        let mut a = Vec::new();
        for i in 0..20 {
            a.push(
                d.post_entry(class, &homework(&format!("A{i}"), "checkpointed"))?
                    .entry,
            );
        }
        (class, a)
    };
    let wal = dir.join("device.sqlite3-wal");
    ensure!(
        fs::metadata(&wal).map_or(0, |m| m.len()) == 0,
        "closing the device checkpointed the WAL"
    );
    // B: only in the WAL (the device is still open when its folder is copied, as if the power
    // went out).
    let snap = tmp.path().join("snapshot");
    let (b, wal_len) = {
        let d = Device::open(&dir)?;
        let mut b = Vec::new();
        for i in 0..20 {
            b.push(
                d.post_entry(class, &homework(&format!("B{i}"), "in the WAL only"))?
                    .entry,
            );
        }
        let wal_len = snapshot_with_wal(&dir, &snap)?;
        (b, wal_len)
    };
    ensure!(wal_len > 0, "B is in the WAL");
    println!("device WAL: {wal_len} bytes for {} entries", b.len());

    let (mut opened, mut refused, mut b_seen) = (0, 0, BTreeSet::new());
    for (k, cut) in cut_points(wal_len, cuts(), 1).into_iter().enumerate() {
        let copy = tmp.path().join(format!("cut{k}"));
        copy_cut(&snap, &copy, cut)?;
        let outcome = catch_unwind(AssertUnwindSafe(|| open_device(&copy, class)));
        let Ok(result) = outcome else {
            panic!("opening a device folder with its WAL cut at {cut} of {wal_len} panicked");
        };
        match result {
            Ok(ids) => {
                opened += 1;
                for id in &a {
                    ensure!(
                        ids.contains(id),
                        "cut at {cut}: checkpointed entry {id} lost"
                    );
                }
                let present: Vec<bool> = b.iter().map(|id| ids.contains(id)).collect();
                let n = present.iter().take_while(|p| **p).count();
                ensure!(
                    present[n..].iter().all(|p| !p),
                    "cut at {cut}: not a prefix of the WAL's writes: {present:?}"
                );
                ensure!(
                    ids.len() == a.len() + n,
                    "cut at {cut}: {} entries, expected {}",
                    ids.len(),
                    a.len() + n
                );
                b_seen.insert(n);
            }
            Err(e) => {
                refused += 1;
                println!("cut at {cut}: typed error: {e}");
            }
        }
        fs::remove_dir_all(&copy)?;
    }
    println!(
        "device: {opened} cuts opened consistently (WAL writes kept: {b_seen:?} of {}), {refused} refused with a typed error, 0 panics, 0 checkpointed entries lost",
        b.len()
    );
    ensure!(b_seen.contains(&b.len()), "the uncut WAL keeps every write");
    ensure!(
        b_seen.contains(&0),
        "a WAL cut before its first commit keeps none"
    );
    Ok(())
}

fn open_device(
    dir: &Path,
    class: ClassId,
) -> Result<BTreeSet<ItemId>, homeroom_client::ClientError> {
    let d = Device::open(dir)?;
    Ok(d.notebook(class)?.entries.iter().map(|e| e.id).collect())
}

#[test]
fn relay_store_with_a_cut_wal_opens_consistently_or_fails_typed() -> Result<()> {
    // The relay's store is the same crate; build one directly from a device's signed changes.
    let tmp = tempfile::tempdir()?;
    let dev_dir = tmp.path().join("device");
    let d = Device::open(&dev_dir)?;
    let class = d.create_class("Class 3B", "Ms Li")?;
    for i in 0..30 {
        d.post_entry(class, &homework(&format!("E{i}"), "x"))?;
    }
    drop(d);
    let notebook = DocId::new(class, DocKind::Notebook);
    let source = Store::open(&dev_dir.join("device.sqlite3"))?;
    let changes = source
        .load_document(&notebook)?
        .context("the device stored its notebook")?
        .changes;
    drop(source);
    ensure!(changes.len() >= 30);

    let dir = tmp.path().join("relay");
    fs::create_dir_all(&dir)?;
    let path: PathBuf = dir.join("relay.sqlite3");
    let (first, second) = changes.split_at(changes.len() / 2);
    {
        let mut s = Store::open(&path)?;
        for c in first {
            s.put_changes(&[(notebook, c.clone())])?;
        }
        s.close()?;
    }
    let snap = tmp.path().join("snapshot");
    let wal_len = {
        let mut s = Store::open(&path)?;
        for c in second {
            s.put_changes(&[(notebook, c.clone())])?;
        }
        let n = snapshot_with_wal(&dir, &snap)?;
        s.close()?;
        n
    };
    ensure!(wal_len > 0);
    let (mut opened, mut refused) = (0, 0);
    for (k, cut) in cut_points(wal_len, cuts(), 2).into_iter().enumerate() {
        let copy = tmp.path().join(format!("cut{k}"));
        copy_cut(&snap, &copy, cut)?;
        let outcome = catch_unwind(AssertUnwindSafe(|| open_store(&copy, &notebook)));
        let Ok(result) = outcome else {
            panic!("opening a relay store with its WAL cut at {cut} of {wal_len} panicked");
        };
        match result {
            Ok(n) => {
                opened += 1;
                ensure!(
                    (first.len()..=changes.len()).contains(&n),
                    "cut at {cut}: {n} changes, checkpointed {}",
                    first.len()
                );
            }
            Err(e) => {
                refused += 1;
                println!("cut at {cut}: typed error: {e}");
            }
        }
        fs::remove_dir_all(&copy)?;
    }
    println!(
        "relay store: {opened} cuts opened consistently, {refused} refused with a typed error, 0 panics, 0 checkpointed changes lost"
    );
    Ok(())
}

/// Open a relay store copy and count the notebook's changes.
fn open_store(dir: &Path, notebook: &DocId) -> Result<usize, Box<homeroom_store::StoreError>> {
    let s = Store::open(&dir.join("relay.sqlite3"))?;
    Ok(s.load_document(notebook)?.map_or(0, |l| l.changes.len()))
}
