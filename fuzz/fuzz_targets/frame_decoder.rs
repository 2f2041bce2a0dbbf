//! Fuzz target `frame_decoder`: Byte 0 picks the frame limit and the chunk sizes; the rest is pushed into a FrameDecoder
//! whole and in chunks, and both runs must agree.
//! Shared with the seed replay test: `homeroom_protocol::fuzzing::frame_decoder`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| homeroom_protocol::fuzzing::frame_decoder(data));
