//! kill -9 of a device in the middle of its writes must never leave a local edit whose item
//! the device no longer knows as its own.
//!
//! A child process (this test binary, re-run with `HOMEROOM_ITEM_CHILD_DIR` set) posts
//! entries in a loop and prints each one once `post_entry` returned; it is SIGKILLed at a
//! random moment. On the reopened device every entry printed must be there, and **every**
//! entry in the notebook — including one whose `post_entry` was cut short by the kill — must
//! have a delivery state other than `NotLocal`: the change and the item → change record are
//! committed in one transaction, so neither is ever on disk without the other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use homeroom_client::core::entries::{Audience, EntryKind, NewEntry, Urgency};
use homeroom_client::{DeliveryState, Device};

const CHILD_DIR: &str = "HOMEROOM_ITEM_CHILD_DIR";
const TEST_NAME: &str = "a_killed_device_keeps_every_entry_known_as_its_own";
const PREFIX: &str = "POSTED ";

fn entry() -> NewEntry<'static> {
    NewEntry {
        kind: EntryKind::Announcement,
        urgency: Urgency::Green,
        audience: Audience::WholeClass,
        title: "Trip",
        text: "Bring a packed lunch",
        signature_requested: false,
        consent: None,
    }
}

/// The child: post entries forever, printing each id once it is saved.
fn child(dir: &Path) -> ! {
    let device = Device::open(dir).unwrap();
    let class = device.classes()[0].id;
    loop {
        let posted = device.post_entry(class, &entry()).unwrap();
        println!("{PREFIX}{}", posted.entry.to_hex());
    }
}

/// xorshift64*, seeded from the clock (printed, to replay a failure).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[test]
fn a_killed_device_keeps_every_entry_known_as_its_own() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        child(Path::new(&dir));
    }
    let seed = std::env::var("HOMEROOM_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    println!("HOMEROOM_KILL_SEED={seed}");
    let mut rng = Rng(seed);
    let rounds: usize = std::env::var("HOMEROOM_ITEM_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("teacher");
    let class = {
        let device = Device::open(&dir).unwrap();
        device.create_class("4A", "Mr Okafor").unwrap()
    };

    let mut saved: BTreeSet<String> = BTreeSet::new();
    let mut unreported = 0;
    for round in 0..rounds {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Not `strip_prefix`: libtest prints `test <name> ... ` without a newline
                // before the test runs, so the first line is `test <name> ... POSTED <id>`.
                if let Some((_, id)) = line.split_once(PREFIX) {
                    let _ = tx.send(id.trim().to_string());
                }
            }
        });
        let target = 2 + rng.below(15) as usize;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut this_round = Vec::new();
        while this_round.len() < target {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(id) => this_round.push(id),
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "round {round}: the child wrote only {} entries",
                        this_round.len()
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(8_000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        this_round.extend(rx.try_iter());
        saved.extend(this_round);

        let device = Device::open(&dir).unwrap();
        let entries = device.notebook(class).unwrap().entries;
        let have: BTreeSet<String> = entries.iter().map(|e| e.id.to_hex()).collect();
        let lost: Vec<&String> = saved.difference(&have).collect();
        assert!(
            lost.is_empty(),
            "round {round}: saved entries lost: {lost:?}"
        );
        for e in &entries {
            let state = device.delivery_state(e.id).unwrap();
            assert_eq!(
                state,
                DeliveryState::SavedLocally,
                "round {round}: entry {} (reported saved: {}) is on disk but its delivery \
                 state is {state:?}",
                e.id,
                saved.contains(&e.id.to_hex()),
            );
        }
        unreported = entries.len() - saved.len();
    }
    println!(
        "{rounds} kill -9 of a posting device: {} entries reported saved, {unreported} more \
         committed by a killed post_entry; all known as local edits",
        saved.len()
    );
}
