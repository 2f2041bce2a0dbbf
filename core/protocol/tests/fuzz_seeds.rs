//! The fuzzing regression gate, no fuzzer needed: every file in `fuzz/seeds/<target>/`
//! (curated seeds and every crasher ever found) is replayed through the same entry point the
//! fuzz target uses (`homeroom_protocol::fuzzing`), inside `catch_unwind`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use homeroom_core::identity::IdentityError;
use homeroom_core::invite::{InviteCode, InviteError};
use homeroom_protocol::fuzzing::{FIXED_DOC, FIXED_EXPORTER, TARGETS, fixed_key};
use homeroom_protocol::{
    CHUNK_TYPE_CHANGE, CHUNK_TYPE_COMPRESSED, DEFAULT_MAX_FRAME, Decoded, FrameDecoder, FrameError,
    INVITE_DOMAIN, Message, SyncPayloadError, check_change_chunk, decode_sync_payload,
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
/// reach deep paths), and every committed crasher still fails with the *typed* error that
/// fixed it: a change of failure mode (a crasher now refused for another reason, or
/// accepted) fails here.
#[test]
fn curated_seeds_reach_what_they_are_named_for() {
    // A Hello whose proof verifies against the fixed exporter, one signed for another session,
    // one whose key is not a curve point, and one whose key is encoded non-canonically (all
    // ones: ed25519-dalek decompresses it, so the signature fails).
    let hello = |name: &str| {
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        d.push(&seed("handshake", name));
        match d.next_message() {
            Ok(Decoded::Message(Message::Hello { device, proof, .. })) => {
                (device, verify_hello_proof(&device, &proof, &FIXED_EXPORTER))
            }
            other => panic!("{name}: {other:?}"),
        }
    };
    assert_eq!(hello("hello-valid.bin").1, Ok(()));
    let (device, other_session) = hello("hello-other-session.bin");
    assert_eq!(other_session, Err(IdentityError::BadSignature { device }));
    assert_eq!(
        hello("hello-bad-key.bin").1,
        Err(IdentityError::InvalidPublicKey)
    );
    let (device, non_canonical) = hello("hello-non-canonical-key.bin");
    assert_eq!(device.0, [0xff; 32]);
    assert_eq!(non_canonical, Err(IdentityError::BadSignature { device }));

    // signature ‖ change, verified for the fixed document.
    let signed = seed("change_import", "signed-change.bin");
    let sig = homeroom_core::ChangeSignature(signed[..64].try_into().unwrap());
    assert!(homeroom_core::identity::verify_change(&FIXED_DOC, &signed[64..], &sig).is_ok());
    let other = seed("change_import", "change-signed-for-another-doc.bin");
    let sig = homeroom_core::ChangeSignature(other[..64].try_into().unwrap());
    assert!(matches!(
        homeroom_core::identity::verify_change(&FIXED_DOC, &other[64..], &sig),
        Err(IdentityError::BadSignature { device }) if device == fixed_key().device_id()
    ));

    // Real sync messages pass the payload check.
    for ok in ["sync-v1.bin", "sync-v2.bin"] {
        assert!(
            decode_sync_payload(&seed("change_import", ok)).is_ok(),
            "{ok}"
        );
    }

    // The invite codes: valid (also typed sloppily), a typo, a truncated code.
    let invite =
        |name: &str| InviteCode::parse(&String::from_utf8(seed("invite_code", name)).unwrap());
    let valid = invite("valid.txt").unwrap();
    assert_eq!(invite("valid-sloppy.txt"), Ok(valid));
    assert_eq!(invite("typo.txt"), Err(InviteError::BadChecksum));
    // Cut short, the code's last characters are read as its checksum: a typo too.
    assert_eq!(invite("truncated.txt"), Err(InviteError::BadChecksum));
}

/// Every crasher committed under `fuzz/seeds/change_import/`, with the exact error that now
/// refuses it. Each was a panic or an unbounded allocation in automerge 0.12 when acted on.
#[test]
fn committed_crashers_fail_with_their_typed_error() {
    use SyncPayloadError::{BadBloom, BadChunk};

    // Found by the fuzzer: a *bundle* chunk (type 3) on which automerge's change parser
    // panics. The change part (bytes 64..) is refused before `verify_change` sees it.
    let bundle = seed("change_import", "crash-bundle-chunk-4c8ee80040714f09.bin");
    assert_eq!(
        check_change_chunk(&bundle[64..]),
        Err(BadChunk {
            index: 0,
            chunk_type: Some(3),
            expected: CHUNK_TYPE_CHANGE,
        })
    );

    // Found by the fuzzer: a `need` naming one hash twice (automerge's generate_sync_message
    // unwrapped `MissingOps`). Not refused: collapsed to a set.
    let raw = seed(
        "change_import",
        "crash-need-duplicates-90c6a756f74f9242.bin",
    );
    let as_sent = homeroom_core::automerge::sync::Message::decode(&raw).unwrap();
    let mut want = as_sent.need.clone();
    want.sort_unstable();
    want.dedup();
    assert!(
        want.len() < as_sent.need.len(),
        "the crasher no longer repeats a hash in `need`: {:?}",
        as_sent.need
    );
    assert_eq!(decode_sync_payload(&raw).unwrap().need, want);

    // Found by review: automerge decodes these, acting on them would crash or blow up; the
    // payload check refuses each for its own reason.
    let refused: [(&str, SyncPayloadError); 3] = [
        // remainder by zero in generate_sync_message
        (
            "crash-bloom-zero-bits.bin",
            BadBloom {
                entries: 1,
                bits_per_entry: 0,
                probes: 7,
            },
        ),
        // 2^32 - 1 probes: unbounded allocation and loop
        (
            "oom-bloom-huge-probes.bin",
            BadBloom {
                entries: 1,
                bits_per_entry: 10,
                probes: u32::MAX,
            },
        ),
        // a deflated change chunk, inflated without limit while parsed
        (
            "compressed-change-chunk.bin",
            BadChunk {
                index: 0,
                chunk_type: Some(CHUNK_TYPE_COMPRESSED),
                expected: CHUNK_TYPE_CHANGE,
            },
        ),
    ];
    for (name, error) in refused {
        let bytes = seed("change_import", name);
        assert!(
            homeroom_core::automerge::sync::Message::decode(&bytes).is_ok(),
            "{name}: automerge itself no longer decodes it"
        );
        assert_eq!(decode_sync_payload(&bytes).err(), Some(error), "{name}");
    }

    // No crasher goes unchecked: every `crash-*` / `oom-*` / `timeout-*` file is one of the
    // above (a new one needs its typed error asserted here).
    let checked = [
        "crash-bundle-chunk-4c8ee80040714f09.bin",
        "crash-need-duplicates-90c6a756f74f9242.bin",
        "crash-bloom-zero-bits.bin",
        "oom-bloom-huge-probes.bin",
    ];
    for target in [
        "change_import",
        "frame_decoder",
        "handshake",
        "invite_code",
        "message",
    ] {
        for file in fs::read_dir(fuzz_dir().join("seeds").join(target)).unwrap() {
            let name = file.unwrap().file_name().to_string_lossy().into_owned();
            let crasher = ["crash-", "oom-", "timeout-", "slow-unit-"]
                .iter()
                .any(|p| name.starts_with(p));
            assert!(
                !crasher || (target == "change_import" && checked.contains(&name.as_str())),
                "fuzz/seeds/{target}/{name}: a crasher whose typed error no test asserts"
            );
        }
    }
}

/// A libFuzzer dictionary: `(name, value)` for every `name="value"` line.
fn dictionary(target: &str) -> Vec<(String, Vec<u8>)> {
    let path = fuzz_dir().join(format!("{target}.dict"));
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut entries = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, quoted) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{target}.dict: {line}"));
        let inner = quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{target}.dict: unquoted value in {line}"));
        let mut value = Vec::new();
        let mut bytes = inner.bytes();
        while let Some(b) = bytes.next() {
            if b != b'\\' {
                value.push(b);
                continue;
            }
            match bytes.next() {
                Some(b'x') => {
                    let hex = [bytes.next().unwrap(), bytes.next().unwrap()];
                    value.push(u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap());
                }
                Some(other) => value.push(other),
                None => panic!("{target}.dict: dangling backslash in {line}"),
            }
        }
        entries.push((name.to_string(), value));
    }
    entries
}

fn varint(mut n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return out;
        }
        out.push(low | 0x80);
    }
}

/// The message kinds this build decodes, by tag: the tags for which a frame holding only the
/// tag is refused as malformed (a known kind missing its fields) rather than unknown.
fn known_tags() -> u32 {
    let kind_of = |tag: u32| {
        let body = varint(tag);
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        d.push(&frame);
        match d.next_message() {
            Err(FrameError::UnknownMessage { tag: t }) => {
                assert_eq!(t, tag);
                false
            }
            Err(FrameError::Malformed { .. }) => true,
            other => panic!("a frame holding only tag {tag}: {other:?}"),
        }
    };
    let known = (0..).find(|&t| !kind_of(t)).unwrap();
    assert!(
        (known..512).all(|t| !kind_of(t)),
        "message tags are not contiguous from 0"
    );
    known
}

/// Every message kind has a seed in `fuzz/seeds/message/` named after it (`join_refused` →
/// `join-refused.bin`), every seed decodes to the kind its name says, the `all-variants.bin`
/// frame stream holds every kind, and the dictionaries name message tags right (`tag_<kind>`
/// is that kind's tag; `tag_unknown_<n>` is a tag no kind has, and the first one is there).
#[test]
fn every_message_kind_has_a_seed_and_its_dictionary_tag() {
    let known = known_tags();
    let dir = fuzz_dir().join("seeds").join("message");
    let mut kinds: Vec<Option<&'static str>> = vec![None; known as usize];
    for file in fs::read_dir(&dir).unwrap() {
        let path = file.unwrap().path();
        let bytes = fs::read(&path).unwrap();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let (msg, rest) = postcard::take_from_bytes::<Message>(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(rest.is_empty(), "{}: trailing bytes", path.display());
        assert_eq!(
            msg.kind().replace('_', "-"),
            name,
            "{} holds a {}",
            path.display(),
            msg.kind()
        );
        let (tag, _) = postcard::take_from_bytes::<u32>(&bytes).unwrap();
        kinds[tag as usize] = Some(msg.kind());
    }
    let missing: Vec<u32> = (0..known)
        .filter(|&t| kinds[t as usize].is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "message tags {missing:?} have no seed in {}: add the kind to `samples()` in \
         core/protocol/examples/fuzz_seeds.rs and run `cargo run -p homeroom-protocol --example fuzz_seeds`",
        dir.display()
    );
    let kinds: Vec<&str> = kinds.into_iter().map(Option::unwrap).collect();
    assert!(kinds.contains(&"join") && kinds.contains(&"join_refused"));

    // The frame stream seed carries every kind, in tag order.
    let all = seed("frame_decoder", "all-variants.bin");
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
    d.push(&all[1..]);
    let mut streamed = Vec::new();
    while let Ok(Decoded::Message(m)) = d.next_message() {
        streamed.push(m.kind());
    }
    assert_eq!(streamed, kinds, "fuzz/seeds/frame_decoder/all-variants.bin");
    assert_eq!(d.buffered(), 0);

    // An unknown kind is skipped and the stream goes on.
    let unknown = seed("frame_decoder", "unknown-tag-then-welcome.bin");
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
    d.push(&unknown[1..]);
    assert!(matches!(
        d.next_message(),
        Err(FrameError::UnknownMessage { tag }) if tag >= known
    ));
    assert!(matches!(
        d.next_message(),
        Ok(Decoded::Message(Message::Welcome { .. }))
    ));

    // The join seed's proof verifies against the fixed exporter under the invite key.
    match postcard::from_bytes::<Message>(&fs::read(dir.join("join.bin")).unwrap()).unwrap() {
        Message::Join { invite, proof, .. } => {
            assert_eq!(
                invite.verify(INVITE_DOMAIN, &FIXED_EXPORTER, &proof.0),
                Ok(())
            );
        }
        other => panic!("join.bin: {other:?}"),
    }

    for target in ["message", "frame_decoder", "relay_session", "handshake"] {
        let dict = dictionary(target);
        let mut first_unknown = false;
        for (name, value) in &dict {
            let Some(what) = name.strip_prefix("tag_") else {
                continue;
            };
            if let Some(n) = what.strip_prefix("unknown_") {
                let n: u32 = n.parse().unwrap();
                assert!(
                    n >= known,
                    "{target}.dict: {name} is the tag of {} now: rename it tag_{} and add \
                     tag_unknown_{known}",
                    kinds[n as usize],
                    kinds[n as usize]
                );
                assert_eq!(value, &varint(n), "{target}.dict: {name}");
                first_unknown |= n == known;
            } else {
                let tag = kinds
                    .iter()
                    .position(|k| *k == what)
                    .unwrap_or_else(|| panic!("{target}.dict: {name} names no message kind"));
                assert_eq!(value, &varint(tag as u32), "{target}.dict: {name}");
            }
        }
        if target != "handshake" {
            for kind in &kinds {
                assert!(
                    dict.iter().any(|(n, _)| *n == format!("tag_{kind}")),
                    "{target}.dict has no tag_{kind}"
                );
            }
            assert!(
                first_unknown,
                "{target}.dict has no tag_unknown_{known} (the first tag no kind has)"
            );
        }
    }
}
