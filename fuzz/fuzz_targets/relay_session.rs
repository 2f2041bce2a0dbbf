//! Fuzz target `relay_session`: the bytes are the frame stream of an authenticated guardian's
//! session with a relay engine that holds a class (`homeroom_sync::fuzzing`): every message
//! kind, sync payload, change and signature reaches `Replica::ingest`. Never panics; the
//! staff-only notebook never takes a change by anyone but the teacher.
//! Shared with the seed replay test: `homeroom_sync::fuzzing::relay_session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| homeroom_sync::fuzzing::relay_session(data));
