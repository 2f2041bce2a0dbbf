//! The writer thread: group commit of the engine's storage writes.
//!
//! One OS thread owns the store's write handle. It blocks for the next [`StorageWrite`], then
//! takes **everything else already queued** (writes produced by many connections while the
//! previous batch was being fsynced), commits the batch with one
//! [`RelayStore::apply_writes`] — one transaction, one fsync — and reports every write id
//! durable to the hub, which releases `Saved` for the documents they covered. Durability costs
//! one fsync per batch, not per change, so it does not cost throughput.
//!
//! A failed batch is logged at error level and retried, with backoff (50 ms doubling to 5 s),
//! until it succeeds: nothing is ever reported durable that is not, and the writer never
//! panics. While it retries, later writes wait in the queue (the engine keeps their documents
//! in memory and sends no `Saved`). The thread ends when the hub drops its sender, after the
//! batch in hand is durable.

use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use homeroom_sync::{StorageWrite, WriteId, WriteKind};
use tokio::sync::mpsc::UnboundedSender;

use crate::store::RelayStore;

/// First delay before retrying a failed batch.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest delay between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The hub's end of the writer: a queue of writes and the thread to join at shutdown.
#[derive(Debug)]
pub(crate) struct WriterHandle {
    /// Writes to commit, in the order the engine produced them.
    pub(crate) queue: mpsc::Sender<StorageWrite>,
    /// The writer thread; it ends once `queue` (every clone) is dropped.
    pub(crate) thread: JoinHandle<()>,
}

/// Start the writer thread over `store`. Durable write ids are sent to `durable`, batch by
/// batch, in the order the writes were queued.
pub(crate) fn spawn<S: RelayStore>(
    store: S,
    durable: UnboundedSender<Vec<WriteId>>,
) -> std::io::Result<WriterHandle> {
    let (queue, rx) = mpsc::channel();
    let thread = thread::Builder::new()
        .name("homeroom-writer".into())
        .spawn(move || run(store, &rx, &durable))?;
    Ok(WriterHandle { queue, thread })
}

fn run<S: RelayStore>(
    mut store: S,
    rx: &mpsc::Receiver<StorageWrite>,
    durable: &UnboundedSender<Vec<WriteId>>,
) {
    tracing::debug!("writer started");
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        commit(&mut store, &batch);
        let ids: Vec<WriteId> = batch.iter().map(|w| w.id).collect();
        if durable.send(ids).is_err() {
            // The hub is gone (it stopped abnormally): nobody waits for these acknowledgements,
            // and the data is on disk anyway.
            tracing::debug!(
                writes = batch.len(),
                "durable writes not reported: hub stopped"
            );
        }
    }
    tracing::debug!("writer stopped: every queued write is durable");
}

/// Commit `batch`, retrying until it is durable.
fn commit<S: RelayStore>(store: &mut S, batch: &[StorageWrite]) {
    let started = Instant::now();
    let mut delay = FIRST_BACKOFF;
    let mut attempt: u32 = 1;
    loop {
        let attempt_started = Instant::now();
        match store.apply_writes(batch) {
            Ok(()) => {
                let took = attempt_started.elapsed();
                let changes: usize = batch
                    .iter()
                    .map(|w| match &w.kind {
                        WriteKind::Changes { changes, .. } => changes.len(),
                        _ => 0,
                    })
                    .sum();
                crate::metrics::global().batch_committed(changes, took);
                if attempt > 1 {
                    tracing::info!(
                        attempt,
                        writes = batch.len(),
                        "store write succeeded after retrying"
                    );
                }
                tracing::debug!(
                    writes = batch.len(),
                    changes,
                    elapsed_ms = started.elapsed().as_millis(),
                    "batch durable"
                );
                return;
            }
            Err(err) => {
                crate::metrics::global().batch_failed();
                tracing::error!(
                    error = %err,
                    attempt,
                    writes = batch.len(),
                    retry_in_ms = delay.as_millis(),
                    "store write failed; nothing of this batch is acknowledged, retrying"
                );
                thread::sleep(delay);
                delay = (delay * 2).min(MAX_BACKOFF);
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use homeroom_core::automerge::ChangeHash;
    use homeroom_core::{DeviceId, DocId};
    use homeroom_sync::{DocSource, MemorySource, SyncError};

    use super::*;

    /// A store that fails its first `failures` batches and records the batches it commits.
    struct Flaky {
        failures: usize,
        inner: MemorySource,
        report: std::sync::mpsc::Sender<Vec<WriteId>>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("disk on fire")]
    struct Fire;

    impl DocSource for Flaky {
        fn load(&mut self, d: &DocId) -> Result<Option<homeroom_sync::StoredDocument>, SyncError> {
            self.inner.load(d)
        }
        fn rosters(&mut self) -> Result<Vec<DocId>, SyncError> {
            self.inner.rosters()
        }
        fn documents(&mut self) -> Result<Vec<DocId>, SyncError> {
            self.inner.documents()
        }
        fn stored_heads(&mut self, d: &DocId) -> Result<Option<Vec<ChangeHash>>, SyncError> {
            self.inner.stored_heads(d)
        }
        fn sync_state(&mut self, p: &DeviceId, d: &DocId) -> Result<Option<Vec<u8>>, SyncError> {
            self.inner.sync_state(p, d)
        }
    }

    impl RelayStore for Flaky {
        type Error = Fire;
        fn apply_writes(&mut self, writes: &[StorageWrite]) -> Result<(), Fire> {
            if self.failures > 0 {
                self.failures -= 1;
                return Err(Fire);
            }
            let ids: Vec<WriteId> = writes.iter().map(|w| w.id).collect();
            let _ = self.report.send(ids);
            Ok(())
        }
    }

    fn write(id: u64) -> StorageWrite {
        StorageWrite {
            id: WriteId(id),
            kind: WriteKind::SyncStates(Vec::new()),
        }
    }

    #[test]
    fn failed_batches_are_retried_and_reported_only_once_durable() {
        let (durable_tx, mut durable_rx) = tokio::sync::mpsc::unbounded_channel();
        let (report_tx, report_rx) = std::sync::mpsc::channel();
        let store = Flaky {
            failures: 2,
            inner: MemorySource::default(),
            report: report_tx,
        };
        let handle = spawn(store, durable_tx).unwrap();
        for id in 1..=3 {
            handle.queue.send(write(id)).unwrap();
        }
        drop(handle.queue);
        handle.thread.join().unwrap();
        let mut reported: VecDeque<WriteId> = VecDeque::new();
        while let Ok(ids) = durable_rx.try_recv() {
            reported.extend(ids);
        }
        let committed: Vec<WriteId> = report_rx.try_iter().flatten().collect();
        // Everything reported durable was committed, in order, and nothing was reported twice.
        assert_eq!(Vec::from(reported), committed);
        assert_eq!(committed, vec![WriteId(1), WriteId(2), WriteId(3)]);
    }
}
