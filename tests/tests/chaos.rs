//! Network chaos: a real relay process and 30 real devices (a teacher and 29 guardians), every
//! datagram through the fault-injecting UDP proxy (`homeroom_e2e::fault_proxy`): 300 ms RTT
//! with jitter, 10 % loss each way, 1 % duplicates, 5 % reordered, and the link down 20 s in
//! every minute. Everyone keeps writing through it. Then the network heals, and every edit
//! written must converge everywhere within a bound, exactly once, with every delivery state
//! ending `Delivered`.
//!
//! Short run (the test command): one minute of chaos with one 20 s outage (the link is down
//! from 40 s to 60 s; the network heals at 60 s).
//! Long run: `HOMEROOM_CHAOS_LONG=1 cargo test -p homeroom-e2e --test chaos -- --nocapture`
//! (ten minutes, ten outages; `HOMEROOM_CHAOS_MINUTES=N` for another length).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use homeroom_client::core::ClassId;
use homeroom_client::core::ids::ItemId;
use homeroom_client::{DeliveryState, Device};
use homeroom_e2e::fault_proxy::{FaultProxy, Faults, SplitMix};
use homeroom_e2e::school::{Family, found_class, homework, target, wait_slow};
use homeroom_e2e::{RelayProcess, wait_for};

/// A teacher and 29 guardians.
const DEVICES: usize = 30;
/// Convergence after the network heals must take less than this (the measured time is
/// printed).
const CONVERGENCE_BOUND: Duration = Duration::from_secs(90);

fn minutes() -> u64 {
    if let Some(m) = std::env::var("HOMEROOM_CHAOS_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return m;
    }
    if std::env::var_os("HOMEROOM_CHAOS_LONG").is_some() {
        10
    } else {
        1
    }
}

/// Every edit written during the run.
#[derive(Default)]
struct Written {
    /// Entries the teacher posted.
    entries: Vec<ItemId>,
    /// (family index, entry) → the signature items written for it.
    signatures: BTreeMap<(usize, ItemId), Vec<ItemId>>,
}

/// The writers: the teacher posts an entry every 3 s; each guardian, about every 2 s, signs
/// the newest entry it has not signed yet. Runs on a plain thread (device writes fsync).
fn write_until(
    teacher: &Device,
    class: ClassId,
    families: &[Family],
    stop: &AtomicBool,
    seed: u64,
) -> Result<Written> {
    let mut rng = SplitMix::new(seed);
    let mut w = Written::default();
    let mut signed: Vec<BTreeSet<ItemId>> = vec![BTreeSet::new(); families.len()];
    let mut next_post = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if Instant::now() >= next_post {
            let n = w.entries.len();
            let posted =
                teacher.post_entry(class, &homework(&format!("Entry {n}"), "during chaos"))?;
            w.entries.push(posted.entry);
            next_post += Duration::from_secs(3);
        }
        for (i, f) in families.iter().enumerate() {
            if rng.below(4) != 0 {
                continue;
            }
            // A guardian may not have the class yet.
            let Ok(view) = f.device.notebook(class) else {
                continue;
            };
            // Newest first.
            if let Some(e) = view.entries.iter().find(|e| !signed[i].contains(&e.id)) {
                let sig = f.device.sign(class, e.id)?;
                signed[i].insert(e.id);
                w.signatures.entry((i, e.id)).or_default().push(sig);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_devices_converge_after_loss_latency_and_link_flaps() -> Result<()> {
    let minutes = minutes();
    let seed = std::env::var("HOMEROOM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0005_eedc_4a05_u64);
    println!("chaos: {DEVICES} devices, {minutes} min, seed {seed}");
    let dir = tempfile::tempdir()?;
    let relay = RelayProcess::start(&dir.path().join("relay"), "127.0.0.1:0")?;
    let rt = tokio::runtime::Handle::current();
    let chaos = Faults::wan(Duration::from_millis(300), 0.10);
    let proxy = FaultProxy::start(relay.addr, chaos, seed).await?;
    let via_proxy = target(proxy.addr, relay.fingerprint);

    let (teacher, class, families) = found_class(dir.path(), DEVICES - 1)?;
    let teacher = Arc::new(teacher);
    let families = Arc::new(families);
    // The roster reaches the relay first (through the bad network), then the guardians
    // connect.
    teacher.start_sync(&rt, via_proxy.clone())?;
    let t = wait_for(
        "the roster reaches the relay",
        Duration::from_secs(120),
        || teacher.sync_status().pending == 0,
    )
    .await?;
    println!("setup: roster delivered through the faulty link in {t:.1?}");
    for f in families.iter() {
        f.device.start_sync(&rt, via_proxy.clone())?;
    }

    // Chaos: writes flow while the link flaps (down the last 20 s of every minute).
    let run = Duration::from_secs(60 * minutes);
    proxy.flap(Duration::from_secs(60), Duration::from_secs(20), run);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (teacher, families, stop) = (
            Arc::clone(&teacher),
            Arc::clone(&families),
            Arc::clone(&stop),
        );
        tokio::task::spawn_blocking(move || write_until(&teacher, class, &families, &stop, seed))
    };
    let started = Instant::now();
    let mut was_up = true;
    while started.elapsed() < run {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if proxy.link_up() != was_up {
            was_up = proxy.link_up();
            println!(
                "t={:>5.1}s link {}",
                started.elapsed().as_secs_f64(),
                if was_up { "up" } else { "DOWN" }
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    let written = writer.await??;

    // Heal the network.
    proxy.set_faults(Faults::NONE);
    proxy.set_link(true);
    let healed = Instant::now();
    let sig_count: usize = written.signatures.values().map(Vec::len).sum();
    println!(
        "chaos over: {} entries and {sig_count} signatures written; proxy: {}",
        written.entries.len(),
        proxy.stats().summary()
    );
    ensure!(
        written.entries.len() >= 10 * minutes as usize,
        "too few writes"
    );

    // Converged: nothing pending anywhere, the teacher sees every signature, every guardian
    // every entry.
    let converged = wait_slow(
        "every device converges after the network heals",
        CONVERGENCE_BOUND,
        Duration::from_millis(500),
        || converged(&teacher, class, &families, &written),
    )
    .await;
    let took = healed.elapsed();
    if let Err(e) = converged {
        for (i, f) in families.iter().enumerate() {
            let s = f.device.sync_status();
            if s.pending > 0 || !s.connected {
                println!("guardian {i}: {s:?}");
            }
        }
        println!("teacher: {:?}", teacher.sync_status());
        return Err(e);
    }
    println!(
        "CONVERGED {:.1} s after the network healed (bound {CONVERGENCE_BOUND:?}); {} edits on {DEVICES} devices",
        took.as_secs_f64(),
        written.entries.len() + sig_count
    );

    // Nothing duplicated, every delivery state right.
    let view = teacher.notebook(class)?;
    let ids: BTreeSet<ItemId> = view.entries.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), view.entries.len(), "an entry is listed twice");
    assert_eq!(
        ids,
        written.entries.iter().copied().collect(),
        "the teacher's notebook holds exactly the entries written"
    );
    for e in &view.entries {
        for (i, f) in families.iter().enumerate() {
            let want = written.signatures.get(&(i, e.id)).map_or(0, Vec::len);
            let got = e.signatures_of(&f.id);
            assert_eq!(got.len(), want, "family {i}, entry {}: signatures", e.id);
            if let Some(sigs) = written.signatures.get(&(i, e.id)) {
                let got: BTreeSet<ItemId> = got.iter().map(|s| s.id).collect();
                assert_eq!(got, sigs.iter().copied().collect());
            }
        }
    }
    // Every guardian holds exactly the entries written (by id, none twice), and sees exactly
    // the signatures its own family wrote on each.
    let written_ids: BTreeSet<ItemId> = written.entries.iter().copied().collect();
    for (i, f) in families.iter().enumerate() {
        let v = f.device.notebook(class)?;
        let ids: BTreeSet<ItemId> = v.entries.iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), v.entries.len(), "guardian {i}: duplicate entry");
        assert_eq!(
            ids, written_ids,
            "guardian {i}: the entries held are not the entries written"
        );
        for e in &v.entries {
            let got: Vec<ItemId> = e.signatures_of(&f.id).iter().map(|s| s.id).collect();
            let got_set: BTreeSet<ItemId> = got.iter().copied().collect();
            assert_eq!(
                got_set.len(),
                got.len(),
                "guardian {i}, entry {}: duplicate signature",
                e.id
            );
            let want: BTreeSet<ItemId> = written
                .signatures
                .get(&(i, e.id))
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
            assert_eq!(
                got_set, want,
                "guardian {i}, entry {}: its own signatures",
                e.id
            );
        }
    }
    for id in &written.entries {
        assert_eq!(teacher.delivery_state(*id)?, DeliveryState::Delivered);
    }
    for ((i, _), sigs) in &written.signatures {
        for s in sigs {
            assert_eq!(
                families[*i].device.delivery_state(*s)?,
                DeliveryState::Delivered,
                "guardian {i}'s signature"
            );
        }
    }
    // The relay kept serving throughout (the same process).
    assert!(
        relay
            .log
            .lock()
            .unwrap()
            .iter()
            .all(|l| !l.contains("panicked")),
        "the relay panicked"
    );
    for f in families.iter() {
        f.device.stop_sync().await;
    }
    teacher.stop_sync().await;
    Ok(())
}

fn converged(teacher: &Device, class: ClassId, families: &[Family], w: &Written) -> bool {
    if teacher.sync_status().pending != 0
        || families.iter().any(|f| f.device.sync_status().pending != 0)
    {
        return false;
    }
    let Ok(view) = teacher.notebook(class) else {
        return false;
    };
    let entries: BTreeSet<ItemId> = w.entries.iter().copied().collect();
    if view.entries.iter().map(|e| e.id).collect::<BTreeSet<_>>() != entries {
        return false;
    }
    let have: BTreeSet<ItemId> = view
        .entries
        .iter()
        .flat_map(|e| e.signatures.iter().map(|s| s.id))
        .collect();
    let want: BTreeSet<ItemId> = w.signatures.values().flatten().copied().collect();
    if have != want {
        return false;
    }
    families.iter().all(|f| {
        f.device
            .notebook(class)
            .is_ok_and(|v| v.entries.iter().map(|e| e.id).collect::<BTreeSet<_>>() == entries)
    })
}
