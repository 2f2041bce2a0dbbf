//! Fuzz target `invite_code`: arbitrary bytes as an invite code a user typed or scanned
//! (`homeroom_core::invite::InviteCode::parse`); a parsed code must re-encode to itself.
//! Shared with the seed replay test: `homeroom_protocol::fuzzing::invite_code`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| homeroom_protocol::fuzzing::invite_code(data));
