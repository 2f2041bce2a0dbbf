//! Randomness for a device: keys, nonces and item ids from the operating system.

use homeroom_core::IdSource;

use crate::error::ClientError;

/// Fill `out` from the OS random source.
pub(crate) fn random_bytes(out: &mut [u8]) -> Result<(), ClientError> {
    getrandom::fill(out).map_err(|e| ClientError::Randomness(e.to_string()))
}

/// An [`IdSource`] backed by the OS random source. If the OS source ever fails, ids come from
/// BLAKE3 over a per-source seed and counter (still unique; never a panic).
#[derive(Debug)]
pub(crate) struct OsIds {
    fallback_seed: [u8; 32],
    counter: u64,
}

impl OsIds {
    pub(crate) fn new() -> Self {
        let mut seed = [0u8; 32];
        if getrandom::fill(&mut seed).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            seed = *blake3::hash(&t.to_le_bytes()).as_bytes();
        }
        Self {
            fallback_seed: seed,
            counter: 0,
        }
    }
}

impl IdSource for OsIds {
    fn fill(&mut self, out: &mut [u8]) {
        if getrandom::fill(out).is_ok() {
            return;
        }
        self.counter += 1;
        let mut h = blake3::Hasher::new();
        h.update(&self.fallback_seed);
        h.update(&self.counter.to_le_bytes());
        let mut reader = h.finalize_xof();
        reader.fill(out);
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
