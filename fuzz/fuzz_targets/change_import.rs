//! Fuzz target `change_import`: Bytes 0..64 are a signature, the rest a change: `homeroom_core::identity::verify_change` for a
//! fixed DocId. The whole input is also an automerge sync message: `sync::Message::decode`, then
//! `decode_sync_payload` and, if accepted, receive + generate on a small document.
//! Shared with the seed replay test: `homeroom_protocol::fuzzing::change_import`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| homeroom_protocol::fuzzing::change_import(data));
