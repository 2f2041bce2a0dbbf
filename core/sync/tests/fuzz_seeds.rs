//! The `relay_session` fuzz target's regression gate, no fuzzer needed: every file in
//! `fuzz/seeds/relay_session/` (curated seeds and every crasher ever found) is replayed through
//! the entry point the fuzz target uses (`homeroom_sync::fuzzing`), inside `catch_unwind`.
//!
//! `HOMEROOM_WRITE_FUZZ_SEEDS=1 cargo test -p homeroom-sync --test fuzz_seeds` (re)writes the
//! curated seeds from `homeroom_sync::fuzzing::seeds()`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use homeroom_sync::fuzzing::{relay_session, run, seeds};

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/relay_session")
}

#[test]
fn every_relay_session_seed_replays_without_panicking() {
    let dir = seed_dir();
    if std::env::var_os("HOMEROOM_WRITE_FUZZ_SEEDS").is_some() {
        fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds() {
            fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    let mut panicked = Vec::new();
    for file in &files {
        let bytes = fs::read(file).unwrap();
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| relay_session(&bytes))) {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default();
            panicked.push(format!("{}: {why}", file.display()));
        }
    }
    assert!(
        panicked.is_empty(),
        "{} of {} seeds panicked:\n  {}",
        panicked.len(),
        files.len(),
        panicked.join("\n  ")
    );
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    assert!(fuzz.join("fuzz_targets/relay_session.rs").is_file());
    assert!(fuzz.join("relay_session.dict").is_file());
}

/// The curated seeds still reach what they are named for (so the fuzzer starts deep).
#[test]
fn relay_session_seeds_reach_what_they_are_named_for() {
    let by_name = |n: &str| {
        seeds()
            .into_iter()
            .find(|(name, _)| *name == n)
            .map(|(_, b)| b)
            .unwrap_or_else(|| panic!("no seed {n}"))
    };
    let answers = |n: &str| {
        let o = run(&by_name(n));
        assert!(o.fed >= 1, "{n}: nothing decoded");
        o
    };
    assert!(answers("lane-edit-accepted.bin").answers.contains(&"saved"));
    for n in [
        "notebook-edit-not-a-writer.bin",
        "teacher-actor-bad-signature.bin",
        "other-lane-edit.bin",
        "future-clock.bin",
    ] {
        let o = answers(n);
        assert!(
            o.answers.contains(&"reject") || o.answers.contains(&"error"),
            "{n}: {o:?}"
        );
        assert!(!o.answers.contains(&"saved"), "{n}: {o:?}");
    }
    assert!(answers("other-lane-request.bin").answers.contains(&"error"));
    let all = answers("all-in-one-session.bin");
    assert!(all.fed >= 10, "{all:?}");
}
