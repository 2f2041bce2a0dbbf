//! Crashes: kill -9 of the relay process at random points under load (50 times in one run),
//! and kill -9 of a device process in the middle of its writes.
//!
//! - Relay: after every kill, while the relay is down, its SQLite file is opened and every edit
//!   some device had seen acknowledged (`Delivered`, i.e. the relay's `Saved`) before the kill
//!   must be in it. Devices keep writing the whole time; at the end everything converges.
//! - Device: a child process (this test binary, re-run with `HOMEROOM_CRASH_CHILD_DIR` set)
//!   posts entries and prints each one once `post_entry` returned (saved on the device); it is
//!   SIGKILLed at a random moment; the reopened device must hold every printed entry.
//!
//! Short run (the test command): 50 relay kills, 10 device kills.
//! Long run: `HOMEROOM_CHAOS_LONG=1 cargo test -p homeroom-e2e --test crashes -- --nocapture`
//! (500 relay kills, 50 device kills; or `HOMEROOM_RELAY_KILLS=N`, `HOMEROOM_DEVICE_KILLS=N`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use homeroom_client::core::automerge::ActorId;
use homeroom_client::core::entries::{read_entries, read_signatures};
use homeroom_client::core::{ClassId, DocId, DocKind, ItemId};
use homeroom_client::{Backoff, DeliveryState, Device};
use homeroom_e2e::fault_proxy::SplitMix;
use homeroom_e2e::school::{Family, found_class, homework, target, wait_slow};
use homeroom_e2e::{RelayProcess, wait_for};
use homeroom_store::Store;

fn long() -> bool {
    std::env::var_os("HOMEROOM_CHAOS_LONG").is_some()
}

fn count(var: &str, short: usize, long_run: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if long() { long_run } else { short })
}

/// An edit some device wrote: which device (0 = teacher, i + 1 = guardian i), which document,
/// which item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Edit {
    device: usize,
    doc: DocId,
    item: ItemId,
}

fn device_of<'a>(teacher: &'a Device, families: &'a [Family], i: usize) -> &'a Device {
    if i == 0 {
        teacher
    } else {
        &families[i - 1].device
    }
}

/// Whether the relay's store (the relay being down) holds `edit`.
// The entry API cannot propagate the store's errors with `?` from inside its closure.
#[allow(clippy::map_entry)]
fn relay_has(
    store: &Store,
    cache: &mut BTreeMap<DocId, BTreeSet<ItemId>>,
    e: &Edit,
) -> Result<bool> {
    if !cache.contains_key(&e.doc) {
        let mut items = BTreeSet::new();
        if let Some(loaded) = store.load_document(&e.doc)? {
            let am = loaded.to_automerge(ActorId::random())?;
            match e.doc.kind {
                DocKind::Notebook => {
                    for entry in read_entries(&am)? {
                        items.insert(entry.id);
                    }
                }
                DocKind::Lane(_) => {
                    for s in read_signatures(&am)? {
                        items.insert(s.id);
                    }
                }
                other => bail!("unexpected document kind {other:?}"),
            }
        }
        cache.insert(e.doc, items);
    }
    Ok(cache[&e.doc].contains(&e.item))
}

/// The teacher posts an entry every 150 ms; each guardian signs the newest entry it has not
/// signed about every 600 ms. Every returned write is recorded.
fn write_until(
    teacher: &Device,
    class: ClassId,
    families: &[Family],
    stop: &AtomicBool,
    written: &Mutex<Vec<Edit>>,
) -> Result<()> {
    let mut rng = SplitMix::new(0xc7a5);
    let notebook = DocId::new(class, DocKind::Notebook);
    let mut signed: Vec<BTreeSet<ItemId>> = vec![BTreeSet::new(); families.len()];
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let posted =
            teacher.post_entry(class, &homework(&format!("Entry {n}"), "under kill -9"))?;
        n += 1;
        written.lock().unwrap().push(Edit {
            device: 0,
            doc: notebook,
            item: posted.entry,
        });
        for (i, f) in families.iter().enumerate() {
            if rng.below(4) != 0 {
                continue;
            }
            // A guardian may not have the class yet.
            let Ok(view) = f.device.notebook(class) else {
                continue;
            };
            if let Some(e) = view.entries.iter().find(|e| !signed[i].contains(&e.id)) {
                let sig = f.device.sign(class, e.id)?;
                signed[i].insert(e.id);
                written.lock().unwrap().push(Edit {
                    device: i + 1,
                    doc: DocId::new(class, DocKind::Lane(f.id)),
                    item: sig,
                });
            }
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_50_times_under_load_loses_no_acknowledged_edit() -> Result<()> {
    let kills = count("HOMEROOM_RELAY_KILLS", 50, 500);
    let dir = tempfile::tempdir()?;
    let mut relay = RelayProcess::start(&dir.path().join("relay"), "127.0.0.1:0")?;
    let store_path = relay.data_dir.join("relay.sqlite3");
    let rt = tokio::runtime::Handle::current();
    let (teacher, class, families) = found_class(dir.path(), 9)?;
    let (teacher, families) = (Arc::new(teacher), Arc::new(families));
    // Reconnect fast: 50 restarts must fit the short run (the default policy starts at 250 ms
    // and doubles up to 30 s).
    let fast = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    let to = target(relay.addr, relay.fingerprint);
    teacher.start_sync_with(&rt, to.clone(), fast.clone())?;
    wait_for("roster delivered", Duration::from_secs(60), || {
        teacher.sync_status().pending == 0
    })
    .await?;
    for f in families.iter() {
        f.device.start_sync_with(&rt, to.clone(), fast.clone())?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(Mutex::new(Vec::<Edit>::new()));
    let writer = {
        let (t, fs, s, w) = (
            Arc::clone(&teacher),
            Arc::clone(&families),
            Arc::clone(&stop),
            Arc::clone(&written),
        );
        tokio::task::spawn_blocking(move || write_until(&t, class, &fs, &s, &w))
    };

    let mut rng = SplitMix::new(0x9_c1a5);
    let mut acked: BTreeSet<Edit> = BTreeSet::new();
    let mut checked_total = 0usize;
    let mut restart_time = Duration::ZERO;
    let started = Instant::now();
    for k in 0..kills {
        // A random point: 100–1500 ms after the relay came back.
        tokio::time::sleep(Duration::from_millis(100 + rng.below(1400))).await;
        if writer.is_finished() {
            bail!("the writer stopped early");
        }
        // Everything acknowledged up to now must survive this kill.
        let snapshot: Vec<Edit> = written.lock().unwrap().clone();
        for e in snapshot {
            if !acked.contains(&e)
                && device_of(&teacher, &families, e.device).delivery_state(e.item)?
                    == DeliveryState::Delivered
            {
                acked.insert(e);
            }
        }
        relay.kill9()?;
        let store = Store::open(&store_path).context("opening the killed relay's store")?;
        let mut cache = BTreeMap::new();
        let mut lost = Vec::new();
        for e in &acked {
            if !relay_has(&store, &mut cache, e)? {
                lost.push(*e);
            }
        }
        store.close()?;
        ensure!(
            lost.is_empty(),
            "kill {k}: {} acknowledged edits missing from the relay's store: {lost:?}",
            lost.len()
        );
        checked_total += acked.len();
        let t = Instant::now();
        relay.restart()?;
        restart_time += t.elapsed();
    }
    let kill_time = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    writer.await??;
    let written = written.lock().unwrap().clone();
    println!(
        "RELAY KILLS: {kills} kill -9 in {:.1} s under load (mean restart to listening {:.0?}); {} edits written, {} acknowledged before the last kill; {checked_total} acknowledged-edit checks against the killed relay's store, 0 lost",
        kill_time.as_secs_f64(),
        restart_time / kills as u32,
        written.len(),
        acked.len()
    );

    // Full convergence, and every edit delivered.
    let t = wait_slow(
        "every device converges after the last restart",
        Duration::from_secs(120),
        Duration::from_millis(300),
        || {
            teacher.sync_status().pending == 0
                && families.iter().all(|f| f.device.sync_status().pending == 0)
                && teacher.notebook(class).is_ok_and(|v| {
                    v.entries.iter().map(|e| e.signatures.len()).sum::<usize>()
                        == written.iter().filter(|e| e.device != 0).count()
                })
        },
    )
    .await?;
    println!("converged {:.1} s after the last restart", t.as_secs_f64());
    for e in &written {
        assert_eq!(
            device_of(&teacher, &families, e.device).delivery_state(e.item)?,
            DeliveryState::Delivered,
            "{e:?}"
        );
    }
    let entries = written.iter().filter(|e| e.device == 0).count();
    for (i, f) in families.iter().enumerate() {
        wait_for("guardian has every entry", Duration::from_secs(60), || {
            f.device
                .notebook(class)
                .is_ok_and(|v| v.entries.len() == entries)
        })
        .await
        .with_context(|| format!("guardian {i}"))?;
    }
    for f in families.iter() {
        f.device.stop_sync().await;
    }
    teacher.stop_sync().await;
    Ok(())
}

/// The child side of [`device_killed_mid_write_keeps_every_saved_edit`]: does nothing unless
/// `HOMEROOM_CRASH_CHILD_DIR` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child_device_writer() -> Result<()> {
    let Some(dir) = std::env::var_os("HOMEROOM_CRASH_CHILD_DIR") else {
        return Ok(());
    };
    let device = Device::open(std::path::Path::new(&dir))?;
    let class = device
        .classes()
        .first()
        .map(|c| c.id)
        .context("the child's device has no class")?;
    if let (Ok(addr), Ok(fp)) = (
        std::env::var("HOMEROOM_CRASH_RELAY"),
        std::env::var("HOMEROOM_CRASH_FP"),
    ) {
        let mut f = [0u8; 32];
        hex::decode_to_slice(fp, &mut f)?;
        device.start_sync(&tokio::runtime::Handle::current(), target(addr.parse()?, f))?;
    }
    let mut n = 0u64;
    loop {
        let posted = device.post_entry(class, &homework(&format!("Child {n}"), "mid-write"))?;
        // Saved on this device: tell the parent.
        println!("SAVED {}", posted.entry.to_hex());
        n += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_killed_mid_write_keeps_every_saved_edit() -> Result<()> {
    let rounds = count("HOMEROOM_DEVICE_KILLS", 10, 50);
    let dir = tempfile::tempdir()?;
    let relay = RelayProcess::start(&dir.path().join("relay"), "127.0.0.1:0")?;
    let teacher_dir = dir.path().join("teacher");
    let (class, family) = {
        let (_teacher, class, families) = found_class(dir.path(), 1)?;
        (class, families.into_iter().next().map(|f| f.device))
    };
    let guardian = family.context("one guardian")?;
    let mut rng = SplitMix::new(0xdead);
    let mut saved: Vec<String> = Vec::new();
    let exe = std::env::current_exe()?;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args(["crash_child_device_writer", "--exact", "--nocapture"])
            .env("HOMEROOM_CRASH_CHILD_DIR", &teacher_dir)
            .env("HOMEROOM_CRASH_RELAY", relay.addr.to_string())
            .env("HOMEROOM_CRASH_FP", hex::encode(relay.fingerprint))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(id) = line.strip_prefix("SAVED ") {
                    let _ = tx.send(id.to_string());
                }
            }
        });
        // Kill after 5–40 saved writes, at a random moment within the next write.
        let target_writes = 5 + rng.below(36) as usize;
        let mut this_round = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while this_round.len() < target_writes {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(id) => this_round.push(id),
                Err(_) => {
                    let _ = child.kill();
                    bail!(
                        "round {round}: the child wrote only {} entries",
                        this_round.len()
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(20_000)));
        child.kill()?; // SIGKILL
        child.wait()?;
        reader.join().ok();
        // Lines printed before the kill (the reader saw them after).
        this_round.extend(rx.try_iter());
        saved.extend(this_round);

        // Reopen: every entry the child reported saved is there.
        let device = Device::open(&teacher_dir)?;
        let have: BTreeSet<String> = device
            .notebook(class)?
            .entries
            .iter()
            .map(|e| e.id.to_hex())
            .collect();
        let missing: Vec<&String> = saved.iter().filter(|s| !have.contains(*s)).collect();
        ensure!(
            missing.is_empty(),
            "round {round}: {} saved entries lost: {missing:?}",
            missing.len()
        );
        drop(device);
    }
    println!(
        "DEVICE KILLS: {rounds} kill -9 of a writing device, {} saved entries, 0 lost",
        saved.len()
    );

    // Everything then reaches the relay and the guardian.
    let rt = tokio::runtime::Handle::current();
    let device = Device::open(&teacher_dir)?;
    device.start_sync(&rt, target(relay.addr, relay.fingerprint))?;
    guardian.start_sync(&rt, target(relay.addr, relay.fingerprint))?;
    wait_for(
        "the teacher's device delivers everything",
        Duration::from_secs(60),
        || device.sync_status().pending == 0,
    )
    .await?;
    let all = device.notebook(class)?.entries.len();
    ensure!(
        all >= saved.len(),
        "{all} entries for {} saved",
        saved.len()
    );
    wait_for(
        "the guardian has every entry",
        Duration::from_secs(60),
        || {
            guardian
                .notebook(class)
                .is_ok_and(|v| v.entries.len() == all)
        },
    )
    .await?;
    // Every entry reported saved ends delivered.
    let reported: BTreeSet<&String> = saved.iter().collect();
    let mut unmapped = 0;
    for e in device.notebook(class)?.entries {
        let state = device.delivery_state(e.id)?;
        if reported.contains(&e.id.to_hex()) {
            assert_eq!(state, DeliveryState::Delivered, "entry {}", e.id);
        } else if state == DeliveryState::NotLocal {
            // Committed by a child killed before `post_entry` returned: the change and the
            // item → change record are one transaction, so it must still be known as a local
            // edit (it once read NotLocal when the record was a second transaction).
            unmapped += 1;
        }
    }
    println!(
        "entries committed by a killed writer but never reported saved, whose delivery state reads NotLocal: {unmapped}"
    );
    ensure!(
        unmapped == 0,
        "{unmapped} local entries read NotLocal after a kill -9"
    );
    device.stop_sync().await;
    guardian.stop_sync().await;
    Ok(())
}
