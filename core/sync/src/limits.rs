//! Limits that bound what one peer can make this node do.

/// Per-node limits. Each breach is a typed protocol error or reject and a log line.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest single change accepted (bytes). Larger: `Reject(TooLarge)`.
    pub max_change_bytes: usize,
    /// Largest number of changes accepted in one sync message.
    pub max_changes_per_message: usize,
    /// How far ahead of our clock a change's timestamp may be (ms). Further: `Reject(FromTheFuture)`.
    pub max_clock_skew_ms: i64,
    /// How long a relay waits for `Hello` (ms) before closing.
    pub handshake_timeout_ms: u64,
    /// Largest number of documents one session may sync.
    pub max_docs_per_session: usize,
    /// Largest number of classes a device may found per session (open class creation).
    pub max_new_classes_per_session: usize,
    /// Changes held per document while waiting for the roster to name their author.
    pub max_held_changes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_change_bytes: 1024 * 1024,
            max_changes_per_message: 100_000,
            max_clock_skew_ms: 24 * 3600 * 1000,
            handshake_timeout_ms: 10_000,
            max_docs_per_session: 4096,
            max_new_classes_per_session: 8,
            max_held_changes: 10_000,
        }
    }
}
