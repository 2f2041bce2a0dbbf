//! Process-wide counters for the Prometheus endpoint ([`crate::http`]).
//!
//! Counters live where events happen — the accept loop and connection tasks (connections),
//! the hub (sessions, documents, rejected changes), the writer thread (persisted changes,
//! commit latency, failing writes) — and are plain atomics in one process-wide [`Metrics`]
//! ([`global`]), so updating one costs an atomic add and no lock, and none of those threads
//! learns about HTTP. One relay runs per process, so process-wide is relay-wide; tests that
//! start several relays in one process see their sums.
//!
//! [`Metrics::render`] writes the Prometheus text exposition format (version 0.0.4). Rates
//! such as edits per second are computed by Prometheus from the counters
//! (`rate(homeroom_changes_persisted_total[1m])`), as usual.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the commit-latency histogram buckets.
const COMMIT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The relay's counters and gauges. Obtain the process's instance with [`global`].
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    connections_refused: AtomicU64,
    sessions_established: AtomicU64,
    documents_open: AtomicU64,
    classes: AtomicU64,
    changes_persisted: AtomicU64,
    write_batches: AtomicU64,
    write_failures: AtomicU64,
    writer_failing: AtomicBool,
    hub_running: AtomicBool,
    slow_disconnects: AtomicU64,
    commit_buckets: [AtomicU64; COMMIT_BUCKETS.len()],
    commit_count: AtomicU64,
    commit_sum_micros: AtomicU64,
    rejected: Mutex<BTreeMap<String, u64>>,
    webhook_sent: AtomicU64,
    webhook_failed: AtomicU64,
    webhook_dropped: AtomicU64,
    webhook_deferred: AtomicU64,
}

static GLOBAL: std::sync::LazyLock<Metrics> = std::sync::LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

/// Counts one open connection while it lives (also when its task is aborted).
#[derive(Debug)]
pub(crate) struct ConnectionGuard(());

impl ConnectionGuard {
    /// A connection task started.
    pub(crate) fn new() -> Self {
        global().connection_opened();
        Self(())
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        global().connection_closed();
    }
}

/// Whether the relay is healthy, as `GET /healthz` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Serving: the hub runs and the last store commit succeeded.
    Ok,
    /// Not serving correctly; the reason.
    Failing(&'static str),
}

impl Metrics {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            sessions_established: AtomicU64::new(0),
            documents_open: AtomicU64::new(0),
            classes: AtomicU64::new(0),
            changes_persisted: AtomicU64::new(0),
            write_batches: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
            writer_failing: AtomicBool::new(false),
            hub_running: AtomicBool::new(false),
            slow_disconnects: AtomicU64::new(0),
            commit_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            commit_count: AtomicU64::new(0),
            commit_sum_micros: AtomicU64::new(0),
            rejected: Mutex::new(BTreeMap::new()),
            webhook_sent: AtomicU64::new(0),
            webhook_failed: AtomicU64::new(0),
            webhook_dropped: AtomicU64::new(0),
            webhook_deferred: AtomicU64::new(0),
        }
    }

    /// A connection task started.
    pub(crate) fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection task ended.
    pub(crate) fn connection_closed(&self) {
        let _ = self
            .connections_open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }

    /// A connection was refused (`max_connections`).
    pub(crate) fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A device completed the handshake.
    pub(crate) fn session_established(&self) {
        self.sessions_established.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was closed because its outbound queue filled up.
    pub(crate) fn slow_disconnect(&self) {
        self.slow_disconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Documents currently followed by at least one session.
    pub(crate) fn set_documents_open(&self, open: usize) {
        self.documents_open
            .store(u64::try_from(open).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Classes known.
    pub(crate) fn set_classes(&self, classes: usize) {
        self.classes.store(
            u64::try_from(classes).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Changes were refused, for `reason`.
    pub(crate) fn rejected(&self, reason: &str, changes: usize) {
        if let Ok(mut map) = self.rejected.lock() {
            *map.entry(reason.to_string()).or_default() +=
                u64::try_from(changes).unwrap_or(u64::MAX);
        }
    }

    /// A batch was committed durably in `elapsed` (the transaction, including its fsync).
    pub(crate) fn batch_committed(&self, changes: usize, elapsed: Duration) {
        self.write_batches.fetch_add(1, Ordering::Relaxed);
        self.changes_persisted.fetch_add(
            u64::try_from(changes).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.writer_failing.store(false, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        for (bucket, bound) in self.commit_buckets.iter().zip(COMMIT_BUCKETS) {
            if secs <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.commit_count.fetch_add(1, Ordering::Relaxed);
        self.commit_sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// A batch failed to commit (it is retried).
    pub(crate) fn batch_failed(&self) {
        self.write_failures.fetch_add(1, Ordering::Relaxed);
        self.writer_failing.store(true, Ordering::Relaxed);
    }

    /// The hub thread started (`true`) or ended (`false`).
    pub(crate) fn set_hub_running(&self, running: bool) {
        self.hub_running.store(running, Ordering::Relaxed);
    }

    /// A webhook delivery succeeded / failed for good / was dropped (queue full) / was
    /// deferred by quiet hours.
    pub(crate) fn webhook(&self, outcome: WebhookOutcome) {
        let counter = match outcome {
            WebhookOutcome::Sent => &self.webhook_sent,
            WebhookOutcome::Failed => &self.webhook_failed,
            WebhookOutcome::Dropped => &self.webhook_dropped,
            WebhookOutcome::Deferred => &self.webhook_deferred,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Changes persisted so far (for tests and the admin tooling).
    pub fn changes_persisted(&self) -> u64 {
        self.changes_persisted.load(Ordering::Relaxed)
    }

    /// Whether the relay is serving correctly: the hub runs and the store accepts writes.
    pub fn health(&self) -> Health {
        if !self.hub_running.load(Ordering::Relaxed) {
            Health::Failing("the hub is not running")
        } else if self.writer_failing.load(Ordering::Relaxed) {
            Health::Failing("store writes are failing (retrying); see the log")
        } else {
            Health::Ok
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "homeroom_uptime_seconds",
            "gauge",
            "Seconds since the relay process started.",
            format!("{:.3}", self.started.elapsed().as_secs_f64()),
        );
        metric(
            "homeroom_up",
            "gauge",
            "1 when the relay is healthy (hub running, store writes succeeding).",
            u8::from(self.health() == Health::Ok).to_string(),
        );
        metric(
            "homeroom_connections_open",
            "gauge",
            "QUIC connections currently served.",
            get(&self.connections_open).to_string(),
        );
        metric(
            "homeroom_connections_total",
            "counter",
            "QUIC connections accepted since start.",
            get(&self.connections_total).to_string(),
        );
        metric(
            "homeroom_connections_refused_total",
            "counter",
            "Connections refused because max_connections was reached.",
            get(&self.connections_refused).to_string(),
        );
        metric(
            "homeroom_sessions_established_total",
            "counter",
            "Devices that completed the authenticated handshake.",
            get(&self.sessions_established).to_string(),
        );
        metric(
            "homeroom_slow_disconnects_total",
            "counter",
            "Connections closed because their outbound queue filled up.",
            get(&self.slow_disconnects).to_string(),
        );
        metric(
            "homeroom_documents_open",
            "gauge",
            "Documents followed by at least one open session (held in memory).",
            get(&self.documents_open).to_string(),
        );
        metric(
            "homeroom_classes",
            "gauge",
            "Classes known to the relay (rosters in memory).",
            get(&self.classes).to_string(),
        );
        metric(
            "homeroom_changes_persisted_total",
            "counter",
            "Changes (edits) committed durably; edits/s = rate() of this.",
            get(&self.changes_persisted).to_string(),
        );
        metric(
            "homeroom_write_batches_total",
            "counter",
            "Group-commit batches committed (one fsync each).",
            get(&self.write_batches).to_string(),
        );
        metric(
            "homeroom_write_failures_total",
            "counter",
            "Batch commits that failed and were retried.",
            get(&self.write_failures).to_string(),
        );

        let name = "homeroom_commit_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to commit one batch durably (transaction including fsync).\n\
             # TYPE {name} histogram"
        );
        for (bucket, bound) in self.commit_buckets.iter().zip(COMMIT_BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", get(bucket));
        }
        let count = get(&self.commit_count);
        let sum = get(&self.commit_sum_micros) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum:.6}\n{name}_count {count}");

        let name = "homeroom_rejected_changes_total";
        let _ = writeln!(
            out,
            "# HELP {name} Changes refused by the relay, by reason.\n# TYPE {name} counter"
        );
        if let Ok(map) = self.rejected.lock() {
            for (reason, n) in map.iter() {
                let _ = writeln!(out, "{name}{{reason=\"{}\"}} {n}", escape_label(reason));
            }
        }

        let name = "homeroom_webhook_deliveries_total";
        let _ = writeln!(
            out,
            "# HELP {name} Webhook notifications, by outcome.\n# TYPE {name} counter"
        );
        for (outcome, counter) in [
            ("sent", &self.webhook_sent),
            ("failed", &self.webhook_failed),
            ("dropped", &self.webhook_dropped),
            ("deferred", &self.webhook_deferred),
        ] {
            let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {}", get(counter));
        }
        out
    }
}

/// What happened to a webhook notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WebhookOutcome {
    /// Delivered (2xx).
    Sent,
    /// Given up after the last retry.
    Failed,
    /// Not queued: the queue was full.
    Dropped,
    /// Held until the recipient's quiet hours end.
    Deferred,
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_is_prometheus_text_with_every_family() {
        let m = Metrics::new();
        m.set_hub_running(true);
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.batch_committed(7, Duration::from_millis(3));
        m.rejected("NotAWriter", 2);
        let text = m.render();
        assert!(text.contains("homeroom_connections_open 1\n"), "{text}");
        assert!(text.contains("homeroom_connections_total 2\n"), "{text}");
        assert!(
            text.contains("homeroom_changes_persisted_total 7\n"),
            "{text}"
        );
        assert!(text.contains("homeroom_commit_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("homeroom_commit_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("homeroom_commit_seconds_count 1\n"));
        assert!(text.contains("homeroom_rejected_changes_total{reason=\"NotAWriter\"} 2\n"));
        assert!(text.contains("homeroom_up 1\n"));
        // Every sample line is `name{labels} value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        m.batch_failed();
        assert!(matches!(m.health(), Health::Failing(_)));
    }
}
