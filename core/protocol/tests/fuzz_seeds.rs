//! The fuzzing regression gate, no fuzzer needed: every file in `fuzz/seeds/<target>/`
//! (curated seeds and every crasher ever found) is replayed through the same entry point the
//! fuzz target uses (`homeroom_protocol::fuzzing`), inside `catch_unwind`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use homeroom_protocol::fuzzing::{FIXED_DOC, FIXED_EXPORTER, TARGETS};
use homeroom_protocol::{
    DEFAULT_MAX_FRAME, Decoded, FrameDecoder, Message, check_change_chunk, decode_sync_payload,
    verify_hello_proof,
};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = fuzz_dir().join("seeds").join(target).join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Fuzz targets whose entry points live in `homeroom-sync` (it depends on this crate), with
/// their own replay gate: `core/sync/tests/fuzz_seeds.rs`.
const ENGINE_TARGETS: &[&str] = &["relay_session"];

#[test]
fn every_fuzz_seed_replays_without_panicking() {
    let seeds = fuzz_dir().join("seeds");
    let mut panicked = Vec::new();
    let mut replayed = 0;
    let mut dirs: Vec<_> = fs::read_dir(&seeds)
        .unwrap_or_else(|e| panic!("{}: {e}", seeds.display()))
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if ENGINE_TARGETS.contains(&name.as_str()) {
            continue;
        }
        let Some((_, entry)) = TARGETS.iter().find(|(t, _)| *t == name) else {
            panic!("fuzz/seeds/{name} names no fuzz target (known: {TARGETS:?})");
        };
        let mut files: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "fuzz/seeds/{name} is empty");
        for file in files {
            let bytes = fs::read(&file).unwrap();
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| entry(&bytes))) {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(non-string panic)");
                panicked.push(format!("{}: {why}", file.display()));
            }
            replayed += 1;
        }
    }
    assert!(
        panicked.is_empty(),
        "{} of {replayed} fuzz seeds panicked:\n  {}",
        panicked.len(),
        panicked.join("\n  ")
    );
    // Every target has seeds, and every target has its cargo-fuzz binary and dictionary.
    for (target, _) in TARGETS {
        assert!(seeds.join(target).is_dir(), "no fuzz/seeds/{target}");
        let source = fuzz_dir().join("fuzz_targets").join(format!("{target}.rs"));
        assert!(source.is_file(), "no {}", source.display());
        let dict = fuzz_dir().join(format!("{target}.dict"));
        assert!(dict.is_file(), "no {}", dict.display());
    }
}

/// The curated seeds still mean what their names say (so the fuzzer starts from inputs that
/// reach deep paths).
#[test]
fn curated_seeds_reach_what_they_are_named_for() {
    // A Hello whose proof verifies against the fixed exporter, and one that does not.
    let hello = |name: &str| {
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        d.push(&seed("handshake", name));
        match d.next_message() {
            Ok(Decoded::Message(Message::Hello { device, proof, .. })) => {
                verify_hello_proof(&device, &proof, &FIXED_EXPORTER)
            }
            other => panic!("{name}: {other:?}"),
        }
    };
    assert!(hello("hello-valid.bin").is_ok());
    assert!(hello("hello-other-session.bin").is_err());
    assert!(hello("hello-bad-key.bin").is_err());

    // signature ‖ change, verified for the fixed document.
    let signed = seed("change_import", "signed-change.bin");
    let sig = homeroom_core::ChangeSignature(signed[..64].try_into().unwrap());
    assert!(homeroom_core::identity::verify_change(&FIXED_DOC, &signed[64..], &sig).is_ok());
    let other = seed("change_import", "change-signed-for-another-doc.bin");
    let sig = homeroom_core::ChangeSignature(other[..64].try_into().unwrap());
    assert!(homeroom_core::identity::verify_change(&FIXED_DOC, &other[64..], &sig).is_err());

    // Real sync messages pass the payload check; the crashers decode but are refused.
    for ok in ["sync-v1.bin", "sync-v2.bin"] {
        assert!(
            decode_sync_payload(&seed("change_import", ok)).is_ok(),
            "{ok}"
        );
    }
    // A bundle chunk on which automerge's parser panics: never handed to verify_change.
    let bundle = seed("change_import", "crash-bundle-chunk-4c8ee80040714f09.bin");
    assert!(check_change_chunk(&bundle[64..]).is_err());
    // A `need` that repeats a hash (automerge's generate_sync_message panicked): collapsed.
    let need = decode_sync_payload(&seed(
        "change_import",
        "crash-need-duplicates-90c6a756f74f9242.bin",
    ))
    .unwrap()
    .need;
    assert!(need.windows(2).all(|w| w[0] < w[1]));
    for refused in [
        "crash-bloom-zero-bits.bin",
        "oom-bloom-huge-probes.bin",
        "compressed-change-chunk.bin",
    ] {
        let bytes = seed("change_import", refused);
        assert!(
            homeroom_core::automerge::sync::Message::decode(&bytes).is_ok(),
            "{refused}"
        );
        assert!(decode_sync_payload(&bytes).is_err(), "{refused}");
    }
}
