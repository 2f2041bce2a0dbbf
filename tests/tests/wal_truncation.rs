//! Power-loss style damage: a copy of a data folder whose SQLite write-ahead log is cut at
//! random points (what a disk that lost the tail of its writes leaves behind) must open to a
//! consistent state or fail with a typed error — never panic, and never lose what had been
//! checkpointed into the main file.
//!
//! For a device folder: entries A were written and checkpointed (the device was closed, which
//! folds the WAL into the main file), then entries B were written and are only in the WAL. For
//! every cut, opening gives either a `ClientError`, or a notebook holding all of A and a
//! *prefix* of B (each write is one transaction; WAL replay stops at the first incomplete
//! commit). The same for the relay's store with `homeroom_store::Store` (exactly the
//! checkpointed changes plus a prefix of the WAL's, by hash), and for the data folder of a
//! real relay process killed with SIGKILL under load (everything checkpointed kept, nothing
//! beyond the uncut WAL, a prefix of the stored order, never less for a longer cut; the uncut
//! WAL holds every change the devices saw acknowledged).
//!
//! `HOMEROOM_WAL_CUTS=N` for more cuts (default 40 per folder).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use homeroom_client::Device;
use homeroom_client::core::automerge::ChangeHash;
use homeroom_client::core::{ClassId, DocId, DocKind, ItemId, SignedChange};
use homeroom_e2e::fault_proxy::SplitMix;
use homeroom_e2e::school::{found_class, homework, target};
use homeroom_e2e::{RelayProcess, wait_for};
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

    // `first`: one transaction per change, then checkpointed (closing the last connection
    // folds the WAL into the main file). `second`: one transaction per change, in the WAL only.
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

    // SQLite replays a WAL frame by frame while the salts and running checksums match, and
    // applies a transaction only once its commit frame is replayed: a cut WAL yields the
    // checkpointed state plus the first k transactions. Each `put_changes` above was one
    // transaction, so the store must hold exactly `first` and `second[..k]`, and k can only
    // grow with the cut offset.
    let hashes = |cs: &[SignedChange]| cs.iter().map(|c| c.hash).collect::<Vec<_>>();
    let (first, second) = (hashes(first), hashes(second));
    let (mut opened, mut refused, mut kept) = (0, 0, Vec::new());
    for (k, cut) in cut_points(wal_len, cuts(), 2).into_iter().enumerate() {
        let copy = tmp.path().join(format!("cut{k}"));
        copy_cut(&snap, &copy, cut)?;
        let outcome = catch_unwind(AssertUnwindSafe(|| stored_changes(&copy)));
        let Ok(result) = outcome else {
            panic!("opening a relay store with its WAL cut at {cut} of {wal_len} panicked");
        };
        match result {
            Ok(stored) => {
                opened += 1;
                let have = stored.hashes.get(&notebook).cloned().unwrap_or_default();
                for h in &first {
                    ensure!(
                        have.contains(h),
                        "cut at {cut}: checkpointed change {h} lost"
                    );
                }
                let n = second.iter().take_while(|h| have.contains(*h)).count();
                let want: BTreeSet<ChangeHash> =
                    first.iter().chain(&second[..n]).copied().collect();
                ensure!(
                    have == want,
                    "cut at {cut}: not the checkpointed changes plus a prefix of the WAL's \
                     ({} stored; {} checkpointed + the first {n} of {} in the WAL expected)",
                    have.len(),
                    first.len(),
                    second.len()
                );
                ensure!(
                    stored.order.get(&notebook).map(Vec::as_slice)
                        == Some(&[&first[..], &second[..n]].concat()[..]),
                    "cut at {cut}: stored order is not the write order"
                );
                if let Some(&(prev_cut, prev)) = kept.last() {
                    ensure!(
                        n >= prev,
                        "cut at {cut} kept {n} WAL writes, the shorter cut at {prev_cut} kept {prev}"
                    );
                }
                kept.push((cut, n));
            }
            Err(e) => {
                refused += 1;
                println!("cut at {cut}: typed error: {e}");
            }
        }
        fs::remove_dir_all(&copy)?;
    }
    let distinct: BTreeSet<usize> = kept.iter().map(|&(_, n)| n).collect();
    println!(
        "relay store: {opened} cuts opened consistently (WAL writes kept: {distinct:?} of {}, never fewer for a longer cut), {refused} refused with a typed error, 0 panics, 0 checkpointed changes lost",
        second.len()
    );
    ensure!(
        distinct.contains(&second.len()),
        "the uncut WAL keeps every write"
    );
    ensure!(
        distinct.contains(&0),
        "a WAL cut before its first commit keeps none"
    );
    Ok(())
}

/// What a store holds: per document, every stored change hash (compacted ones too) and the
/// uncompacted ones in the order they were stored.
#[derive(Default, PartialEq, Eq)]
struct Stored {
    hashes: BTreeMap<DocId, BTreeSet<ChangeHash>>,
    order: BTreeMap<DocId, Vec<ChangeHash>>,
}

impl Stored {
    fn all(&self) -> BTreeSet<(DocId, ChangeHash)> {
        self.hashes
            .iter()
            .flat_map(|(d, hs)| hs.iter().map(move |h| (*d, *h)))
            .collect()
    }
}

/// Open the relay store in `dir` (a copy) and read every document's changes.
fn stored_changes(dir: &Path) -> Result<Stored, Box<homeroom_store::StoreError>> {
    let s = Store::open(&dir.join("relay.sqlite3"))?;
    let mut stored = Stored::default();
    for doc in s.documents()? {
        if let Some(loaded) = s.load_document(&doc)? {
            stored
                .hashes
                .insert(doc, loaded.signatures.keys().copied().collect());
            stored
                .order
                .insert(doc, loaded.changes.iter().map(|c| c.hash).collect());
        }
    }
    Ok(stored)
}

/// Every change a device authored and holds as delivered (the relay's `Saved` arrived).
fn acknowledged(device_dir: &Path) -> Result<BTreeSet<(DocId, ChangeHash)>> {
    let s = Store::open(&device_dir.join("device.sqlite3"))?;
    let me = s
        .identity()?
        .context("a device store has an identity")?
        .device_id();
    let mut out = BTreeSet::new();
    for doc in s.documents()? {
        let Some(loaded) = s.load_document(&doc)? else {
            continue;
        };
        for (hash, (author, _)) in &loaded.signatures {
            if *author == me && s.is_delivered(&doc, hash)? {
                out.insert((doc, *hash));
            }
        }
    }
    Ok(out)
}

/// The real thing: a relay *process* under load from a teacher and three guardians is
/// stopped cleanly once (its WAL checkpointed), restarted, and killed with SIGKILL under the
/// same load; copies of its data folder get the WAL cut at random points.
///
/// Every cut must open (or fail typed) to: everything in the main file (the WAL cut to 0),
/// nothing beyond what the uncut WAL holds, per document a prefix of the stored order, and
/// never less for a longer cut (WAL replay keeps the longest run of whole transactions). The
/// uncut WAL must hold every change a device had seen acknowledged before the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_relay_data_folder_with_a_cut_wal_keeps_a_prefix_of_its_commits() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut relay = RelayProcess::start(&tmp.path().join("relay"), "127.0.0.1:0")?;
    let rt = tokio::runtime::Handle::current();
    let (teacher, class, families) = found_class(tmp.path(), 3)?;
    let to = target(relay.addr, relay.fingerprint);
    teacher.start_sync(&rt, to.clone())?;
    wait_for("roster delivered", Duration::from_secs(60), || {
        teacher.sync_status().pending == 0
    })
    .await?;
    for f in &families {
        f.device.start_sync(&rt, to.clone())?;
    }
    let (teacher, families) = (Arc::new(teacher), Arc::new(families));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (teacher, families, stop) = (
            Arc::clone(&teacher),
            Arc::clone(&families),
            Arc::clone(&stop),
        );
        tokio::task::spawn_blocking(move || -> Result<usize> {
            let mut written = 0;
            let mut signed: Vec<BTreeSet<ItemId>> = vec![BTreeSet::new(); families.len()];
            while !stop.load(Ordering::SeqCst) {
                teacher.post_entry(class, &homework(&format!("Load {written}"), "kill -9"))?;
                written += 1;
                for (i, f) in families.iter().enumerate() {
                    let Ok(view) = f.device.notebook(class) else {
                        continue;
                    };
                    if let Some(e) = view.entries.iter().find(|e| !signed[i].contains(&e.id)) {
                        f.device.sign(class, e.id)?;
                        signed[i].insert(e.id);
                        written += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(written)
        })
    };
    // A first phase ends with a clean stop (SIGTERM: the relay closes its store, which
    // checkpoints the WAL into the main file), so the folder has checkpointed changes to lose.
    let mut rng = SplitMix::new(0x3a1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = relay.terminate()?;
    ensure!(
        status.success(),
        "the relay exited with {status} on SIGTERM"
    );
    relay.restart()?;
    // Under load: 2–4 s of writes after the restart, then SIGKILL.
    tokio::time::sleep(Duration::from_millis(2000 + rng.below(2000))).await;
    relay.kill9()?;
    stop.store(true, Ordering::SeqCst);
    let written = writer.await??;
    // What the devices saw acknowledged is fixed now: the relay is dead.
    teacher.stop_sync().await;
    for f in families.iter() {
        f.device.stop_sync().await;
    }
    drop((teacher, families));
    let mut acked = BTreeSet::new();
    for name in ["teacher", "parent0", "parent1", "parent2"] {
        acked.extend(acknowledged(&tmp.path().join(name))?);
    }

    let snap = tmp.path().join("snapshot");
    let wal_len = snapshot_with_wal(&relay.data_dir, &snap)?;
    ensure!(wal_len > 0, "the killed relay left a WAL");
    let full = stored_changes(&{
        let copy = tmp.path().join("uncut");
        copy_cut(&snap, &copy, wal_len)?;
        copy
    })
    .map_err(|e| anyhow::anyhow!("the uncut copy: {e}"))?;
    let full_all = full.all();
    let lost: Vec<_> = acked.difference(&full_all).collect();
    ensure!(
        lost.is_empty(),
        "{} acknowledged changes missing from the killed relay's folder: {lost:?}",
        lost.len()
    );
    let checkpointed = stored_changes(&{
        let copy = tmp.path().join("no-wal");
        copy_cut(&snap, &copy, 0)?;
        copy
    })
    .map_err(|e| anyhow::anyhow!("the copy without its WAL: {e}"))?
    .all();
    ensure!(
        !checkpointed.is_empty(),
        "the relay stopped by SIGTERM left no change in its main file"
    );
    println!(
        "killed relay: {written} edits written, {} changes acknowledged to devices; its folder holds {} changes, {} of them checkpointed, WAL {wal_len} bytes",
        acked.len(),
        full_all.len(),
        checkpointed.len()
    );

    let (mut opened, mut refused) = (0, 0);
    let mut prev: Option<(u64, BTreeSet<(DocId, ChangeHash)>)> = None;
    let mut sizes = BTreeSet::new();
    for (k, cut) in cut_points(wal_len, cuts(), 3).into_iter().enumerate() {
        let copy = tmp.path().join(format!("cut{k}"));
        copy_cut(&snap, &copy, cut)?;
        let outcome = catch_unwind(AssertUnwindSafe(|| stored_changes(&copy)));
        let Ok(result) = outcome else {
            panic!(
                "opening a killed relay's folder with its WAL cut at {cut} of {wal_len} panicked"
            );
        };
        match result {
            Ok(stored) => {
                opened += 1;
                let all = stored.all();
                let lost: Vec<_> = checkpointed.difference(&all).collect();
                ensure!(
                    lost.is_empty(),
                    "cut at {cut}: checkpointed changes lost: {lost:?}"
                );
                let extra: Vec<_> = all.difference(&full_all).collect();
                ensure!(
                    extra.is_empty(),
                    "cut at {cut}: changes the uncut WAL does not hold: {extra:?}"
                );
                for (doc, order) in &stored.order {
                    let whole = full.order.get(doc).map_or(&[][..], Vec::as_slice);
                    ensure!(
                        whole.starts_with(order),
                        "cut at {cut}: {doc}'s changes are not a prefix of what was stored"
                    );
                }
                if let Some((prev_cut, prev_all)) = &prev {
                    ensure!(
                        prev_all.is_subset(&all),
                        "cut at {cut} lost changes the shorter cut at {prev_cut} kept"
                    );
                }
                sizes.insert(all.len());
                prev = Some((cut, all));
            }
            Err(e) => {
                refused += 1;
                println!("cut at {cut}: typed error: {e}");
            }
        }
        fs::remove_dir_all(&copy)?;
    }
    println!(
        "killed relay's folder: {opened} cuts opened consistently ({} distinct states between {} and {} changes), {refused} refused with a typed error, 0 panics, 0 checkpointed changes lost",
        sizes.len(),
        checkpointed.len(),
        full_all.len()
    );
    ensure!(opened > 0, "no cut opened");
    Ok(())
}
