//! Fuzz target `handshake`: Arbitrary bytes as a frame stream; every `Hello` has its versions negotiated and its proof
//! verified (`DeviceId::verify`) against a fixed TLS exporter value.
//! Shared with the seed replay test: `homeroom_protocol::fuzzing::handshake`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| homeroom_protocol::fuzzing::handshake(data));
