//! Fuzz target `message`: Arbitrary bytes decoded as a postcard `Message` body; anything accepted must round-trip.
//! Shared with the seed replay test: `homeroom_protocol::fuzzing::message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| homeroom_protocol::fuzzing::message(data));
