//! What applying one received notebook entry costs as a school year's notebook grows.
//!
//! Automerge applies a new map key by walking the map's keys that sort before it, so with
//! random item ids the cost of receiving an entry grows with the number of entries already in
//! the notebook. Item ids therefore start with a prefix that counts down in seconds
//! (`IdSource::item_id`): a new entry's key sorts before every older one.
//!
//! The bench posts `HOMEROOM_BENCH_ENTRIES` entries (default 3,000; quick: 600) on a teacher's
//! notebook and applies each change to a second copy (a parent's), timing only that
//! `apply_changes`, in four schedules:
//! - **one post an hour** — how a real notebook fills (ids of later posts sort first);
//! - **a post every 40 ms** — the pace of one class in the relay bench's W2, which compresses
//!   a year into a minute;
//! - **100 posts a second** — a burst: posts of the same second order randomly among
//!   themselves;
//! - **all at one instant** — equal prefixes, so keys order randomly: how every id behaved
//!   before the prefix (and how ids of one minute behaved with the earlier minute prefix).
//!
//! Prints the median apply time of the first and the last 100 posts of each schedule and
//! their ratio. `cargo bench -p homeroom-core --bench map_growth`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use homeroom_core::automerge::Automerge;
use homeroom_core::entries::{self, Audience, EntryKind, NewEntry, Urgency};
use homeroom_core::genesis::genesis_document;
use homeroom_core::identity::{DeviceKey, actor_for};
use homeroom_core::ids::SeededIds;
use homeroom_core::roster;
use homeroom_core::{Actor, DocId, DocKind, MemberId, RosterIndex};

/// 2026-09-01, a school year's start.
const START: i64 = 1_788_220_800_000;

fn main() {
    let quick = std::env::var("HOMEROOM_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let n: usize = std::env::var("HOMEROOM_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 600 } else { 3_000 });
    assert!(n >= 200, "HOMEROOM_BENCH_ENTRIES must be at least 200");
    println!("apply one received entry to a notebook of up to {n} entries (median µs)");
    println!(
        "  {:<22} {:>12} {:>12} {:>8}",
        "schedule", "first 100", "last 100", "ratio"
    );
    for (name, step_ms) in [
        ("one post an hour", 3_600_000),
        ("a post every 40 ms", 40),
        ("100 posts a second", 10),
        ("all at one instant", 0),
    ] {
        let times = run(n, step_ms);
        let first = median(&times[..100]);
        let last = median(&times[n - 100..]);
        println!(
            "  {:<22} {:>12.1} {:>12.1} {:>7.2}×",
            name,
            micros(first),
            micros(last),
            micros(last) / micros(first)
        );
    }
}

/// Post `n` entries, `step_ms` apart, and time applying each to the parent's copy.
fn run(n: usize, step_ms: i64) -> Vec<Duration> {
    let teacher = DeviceKey::from_secret([1; 32]).device_id();
    let nonce = [7u8; 16];
    let class = roster::class_id_for(&teacher, &nonce);
    let mut roster_doc = genesis_document(
        &DocId::new(class, DocKind::Roster),
        actor_for(&teacher, [0; 8]),
    );
    let mut tx = roster_doc.transaction();
    roster::write_founding(
        &mut tx,
        "Class 5A",
        &teacher,
        MemberId([1; 8]),
        "Ms Li",
        START,
    )
    .unwrap();
    tx.commit_with(roster::founding_commit(&nonce, START));
    let roster = RosterIndex::read(&roster_doc).unwrap();

    let notebook = DocId::new(class, DocKind::Notebook);
    let mut teacher_doc = genesis_document(&notebook, actor_for(&teacher, [1; 8]));
    let parent = DeviceKey::from_secret([2; 32]).device_id();
    let mut parent_doc: Automerge = genesis_document(&notebook, actor_for(&parent, [2; 8]));
    let mut ids = SeededIds::new(42);
    let mut times = Vec::with_capacity(n);
    for k in 0..n {
        let actor = Actor::new(&roster, teacher, START + k as i64 * step_ms);
        let text = format!("Entry {k}: bring the signed form and read chapter {k}.");
        let mut tx = teacher_doc.transaction();
        entries::post_entry(
            &mut tx,
            &actor,
            &mut ids,
            &NewEntry {
                kind: EntryKind::Homework,
                urgency: Urgency::Green,
                audience: Audience::WholeClass,
                title: "Homework",
                text: &text,
                signature_requested: true,
                consent: None,
            },
        )
        .unwrap();
        tx.commit();
        let change = teacher_doc.get_last_local_change().unwrap();
        let t0 = Instant::now();
        parent_doc.apply_changes([change]).unwrap();
        times.push(t0.elapsed());
    }
    assert_eq!(parent_doc.get_heads(), teacher_doc.get_heads());
    times
}

fn median(d: &[Duration]) -> Duration {
    let mut v = d.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
