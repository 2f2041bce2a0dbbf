//! The relay's configuration file (TOML) and the validated settings it turns into.
//!
//! [`RelayConfig`] is the file format: every key is optional and documented with its default,
//! unknown keys are an error (`deny_unknown_fields`), so a typo never silently falls back to a
//! default. [`RelayConfig::into_settings`] checks every value once, naming the offending key,
//! and yields [`RelaySettings`], the only form the rest of the relay accepts. Precedence, lowest
//! first: built-in defaults, the config file, environment variables, command-line flags
//! ([`Overrides`]).
//!
//! `deploy/relay.example.toml` lists every key with its default; a unit test keeps it in step.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use homeroom_core::MemberId;
use homeroom_sync::Limits;
use serde::Deserialize;

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema (an unknown key, a wrong type). The
    /// source error names the key and its position.
    #[error("config file {path} is invalid")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error, which names the key.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// The key, as written in the file (`limits.max_change_bytes` for nested keys).
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// How log lines are written (to standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// The relay's configuration file. Every key is optional; the defaults are documented on each
/// field and are what the relay runs with when started without a file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RelayConfig {
    /// UDP address to listen on for QUIC. Default `"0.0.0.0:4433"`. Port 0 picks a free port
    /// (the bound address is printed at start). Environment: `HOMEROOM_LISTEN`; flag `--listen`.
    pub listen: SocketAddr,
    /// Also accept devices over TLS on TCP, for networks that block UDP: same port number as
    /// `listen` (over TCP), same certificate, same frames and limits (docs/relay.md, "TCP
    /// fallback"). Default `true`.
    pub tcp_fallback: bool,
    /// Folder holding `relay.sqlite3` (the store), `relay-cert.der` and `relay-key.der` (the
    /// certificate devices pin). Created at start if missing. Default `"./homeroom-data"`,
    /// relative to the working directory. Environment: `HOMEROOM_DATA_DIR`; flag `--data-dir`.
    pub data_dir: PathBuf,
    /// DNS names or IP addresses written into the self-signed certificate when it is generated
    /// on first start (devices pin the fingerprint, so names are informative). Default
    /// `["homeroom-relay", "localhost"]`.
    pub certificate_names: Vec<String>,
    /// Log format: `"text"` or `"json"`. Default `"text"`. The level comes from `RUST_LOG`
    /// (default `info`). Environment: `HOMEROOM_LOG_FORMAT`; flag `--log-format`.
    pub log_format: LogFormat,
    /// Whether any device may found a new class by uploading its roster. Default `true`. With
    /// `false`, only classes already in the store are served.
    pub open_class_creation: bool,
    /// Most QUIC connections served at once; further ones are refused. Default `1000`.
    pub max_connections: usize,
    /// Largest protocol frame accepted or sent, in bytes. Default `4194304` (4 MiB). Must be
    /// larger than `limits.max_change_bytes`.
    pub max_frame_bytes: usize,
    /// Messages queued for one connection before it is considered too slow and closed (this
    /// bounds the relay's memory per connection to about this many frames). Default `1024`.
    pub outbound_queue: usize,
    /// Seconds a device has to complete the QUIC handshake, open its stream and send a valid
    /// `Hello`. Default `10`.
    pub handshake_timeout_secs: u64,
    /// Threads moving network bytes (QUIC, TLS, framing). `0` (default): one fewer than the
    /// machine's cores, at least 1 — the sync engine and the store writer have a thread each.
    pub network_threads: usize,
    /// Seconds of silence after which a QUIC connection is dropped (devices send keep-alives).
    /// Default `60`.
    pub idle_timeout_secs: u64,
    /// Limits on what one device may make the sync engine do.
    pub limits: LimitsConfig,
    /// The operations HTTP listener (metrics, health).
    pub http: HttpConfig,
    /// The notification webhook.
    pub webhook: WebhookConfig,
    /// **Benchmarks only — never in production.** `true` opens the store with
    /// `synchronous=OFF`: commits are not fsynced, so a `Saved` the relay sends may be lost (or
    /// the store damaged) on a power cut or OS crash. Default `false`. Exists to measure the
    /// relay with durability off next to servers that acknowledge nothing durably
    /// (`bench/peers/run.sh`).
    pub unsafe_no_fsync: bool,
}

/// The `[http]` table: the Prometheus metrics and health endpoint (`GET /metrics`,
/// `GET /healthz`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct HttpConfig {
    /// Whether to serve it. Default `false`.
    pub enabled: bool,
    /// TCP address to serve it on. Default `"127.0.0.1:9464"` (loopback: scrape it locally).
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// The `[webhook]` table: a POST per recipient when something new arrives for them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct WebhookConfig {
    /// `http://host:port/path` to POST notifications to; empty (the default) turns the hook
    /// off. Plain HTTP only: point it at a forwarder (push gateway) on this host or network.
    pub url: String,
    /// Value of an `Authorization: Bearer …` header sent with every POST; empty (the
    /// default) sends none.
    pub bearer_token: String,
    /// Quiet hours, `"HH:MM-HH:MM"` in the school's local time (may span midnight), during
    /// which non-urgent notifications are held until the window ends. Empty (the default):
    /// none.
    pub quiet_hours: String,
    /// The school's local time as minutes east of UTC (e.g. `60` for CET). Default `0`.
    /// Fixed: adjust it at daylight-saving changes.
    pub utc_offset_minutes: i32,
    /// Attempts per notification before giving up (backoff 1 s doubling up to 5 min between
    /// them). Default `8`.
    pub max_attempts: u32,
    /// Seconds one POST may take. Default `10`.
    pub timeout_secs: u64,
    /// Notifications waiting for delivery (held ones included) before new ones are dropped
    /// and counted. Default `10000`.
    pub queue: usize,
    /// Per-member quiet hours overriding `quiet_hours`: member id (hex, as `admin
    /// list-devices` prints it) → `"HH:MM-HH:MM"`, or `""` for none. Default: empty.
    pub member_quiet_hours: BTreeMap<String, String>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            bearer_token: String::new(),
            quiet_hours: String::new(),
            utc_offset_minutes: 0,
            max_attempts: 8,
            timeout_secs: 10,
            queue: 10_000,
            member_quiet_hours: BTreeMap::new(),
        }
    }
}

/// A validated webhook target (see [`WebhookConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebhookSettings {
    /// Host (name or IP) to connect to.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Request path (with query), starting with `/`.
    pub path: String,
    /// The URL as configured, for logs.
    pub url: String,
    /// Bearer token, if any.
    pub bearer_token: Option<String>,
    /// Quiet hours as (start, end) minutes after local midnight; `None`: no quiet hours.
    pub quiet_hours: Option<(u16, u16)>,
    /// Local time offset east of UTC, in minutes.
    pub utc_offset_minutes: i32,
    /// Attempts per notification (≥ 1).
    pub max_attempts: u32,
    /// Deadline of one POST.
    pub timeout: Duration,
    /// Queue capacity (≥ 1).
    pub queue: usize,
    /// Per-member quiet hours (`None`: none for that member), overriding `quiet_hours`.
    pub member_quiet_hours: HashMap<MemberId, Option<(u16, u16)>>,
}

/// Parse a quiet-hours window `"HH:MM-HH:MM"` (two different times) into minutes after
/// midnight; `Ok(None)` for an empty string.
fn parse_window(key: &'static str, text: &str) -> Result<Option<(u16, u16)>, ConfigError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let parse = |t: &str| -> Option<u16> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m) = (h.parse::<u16>().ok()?, m.parse::<u16>().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    match text
        .split_once('-')
        .and_then(|(a, b)| Some((parse(a)?, parse(b)?)))
    {
        Some((a, b)) if a != b => Ok(Some((a, b))),
        _ => Err(ConfigError::Invalid {
            key,
            reason: format!("{text:?} is not \"HH:MM-HH:MM\" with two different times"),
        }),
    }
}

impl WebhookConfig {
    /// Validate; `Ok(None)` when the hook is off.
    fn into_settings(self) -> Result<Option<WebhookSettings>, ConfigError> {
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid { key, reason };
        if self.url.is_empty() {
            return Ok(None);
        }
        let Some(rest) = self.url.strip_prefix("http://") else {
            return Err(invalid(
                "webhook.url",
                format!(
                    "{:?}: only http:// URLs are supported; point it at a forwarder (see \
                     docs/operations.md, notification webhook)",
                    self.url
                ),
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let bad_url = || {
            invalid(
                "webhook.url",
                format!("{:?} is not http://host[:port]/path", self.url),
            )
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad_url)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse::<u16>().map_err(|_| bad_url())?,
                None if after.is_empty() => 80,
                None => return Err(bad_url()),
            };
            (h, port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad_url())?),
                None => (authority, 80),
            }
        };
        if host.is_empty() || host.contains(['@', ' ']) || path.contains([' ', '\r', '\n']) {
            return Err(bad_url());
        }
        if self.bearer_token.contains(['\r', '\n']) {
            return Err(invalid(
                "webhook.bearer_token",
                "must be one line".to_string(),
            ));
        }
        let quiet_hours = parse_window("webhook.quiet_hours", &self.quiet_hours)?;
        let mut member_quiet_hours = HashMap::new();
        for (member, window) in &self.member_quiet_hours {
            let id = member.parse::<MemberId>().map_err(|_| {
                invalid(
                    "webhook.member_quiet_hours",
                    format!("{member:?} is not a member id (see `admin list-devices`)"),
                )
            })?;
            member_quiet_hours.insert(id, parse_window("webhook.member_quiet_hours", window)?);
        }
        if !(-14 * 60..=14 * 60).contains(&self.utc_offset_minutes) {
            return Err(invalid(
                "webhook.utc_offset_minutes",
                format!("{} is outside -840..=840", self.utc_offset_minutes),
            ));
        }
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return Err(invalid(
                "webhook.max_attempts",
                format!("{} is outside 1..=100", self.max_attempts),
            ));
        }
        if self.timeout_secs == 0 || self.timeout_secs > 300 {
            return Err(invalid(
                "webhook.timeout_secs",
                format!("{} is outside 1..=300", self.timeout_secs),
            ));
        }
        if self.queue == 0 {
            return Err(invalid("webhook.queue", "must be at least 1".to_string()));
        }
        Ok(Some(WebhookSettings {
            host: host.to_string(),
            port,
            path,
            url: self.url.clone(),
            bearer_token: (!self.bearer_token.is_empty()).then_some(self.bearer_token),
            quiet_hours,
            utc_offset_minutes: self.utc_offset_minutes,
            max_attempts: self.max_attempts,
            timeout: Duration::from_secs(self.timeout_secs),
            queue: self.queue,
            member_quiet_hours,
        }))
    }
}

/// The `[limits]` table: a subset of the sync engine's [`Limits`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct LimitsConfig {
    /// Largest single change accepted, in bytes; larger ones are rejected. Default `1048576`.
    pub max_change_bytes: usize,
    /// Most changes accepted in one sync message. Default `100000`.
    pub max_changes_per_message: usize,
    /// Most documents one connection may sync. Default `4096`.
    pub max_docs_per_session: usize,
    /// Most classes one connection may found (when `open_class_creation` is on). Default `8`.
    pub max_new_classes_per_session: usize,
    /// Seconds a change's timestamp may be ahead of the relay's clock. Default `86400`.
    pub max_clock_skew_secs: u64,
    /// Changes held per document while waiting for the roster to name their author.
    /// Default `10000`.
    pub max_held_changes: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 4433)),
            tcp_fallback: true,
            data_dir: PathBuf::from("./homeroom-data"),
            certificate_names: vec!["homeroom-relay".into(), "localhost".into()],
            log_format: LogFormat::Text,
            open_class_creation: true,
            max_connections: 1000,
            max_frame_bytes: homeroom_protocol::DEFAULT_MAX_FRAME,
            outbound_queue: 1024,
            handshake_timeout_secs: 10,
            network_threads: 0,
            idle_timeout_secs: 60,
            limits: LimitsConfig::default(),
            http: HttpConfig::default(),
            webhook: WebhookConfig::default(),
            unsafe_no_fsync: false,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            max_change_bytes: l.max_change_bytes,
            max_changes_per_message: l.max_changes_per_message,
            max_docs_per_session: l.max_docs_per_session,
            max_new_classes_per_session: l.max_new_classes_per_session,
            max_clock_skew_secs: u64::try_from(l.max_clock_skew_ms / 1000).unwrap_or(86_400),
            max_held_changes: l.max_held_changes,
        }
    }
}

/// Values from the environment or the command line, which win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen` / `HOMEROOM_LISTEN`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir` / `HOMEROOM_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--log-format` / `HOMEROOM_LOG_FORMAT`.
    pub log_format: Option<LogFormat>,
}

/// Longest timeout accepted (one day): beyond it a value is almost certainly a unit mistake.
const MAX_TIMEOUT_SECS: u64 = 86_400;
/// Smallest frame limit accepted: a `Hello` and a small sync message must fit.
const MIN_FRAME_BYTES: usize = 4096;

impl RelayConfig {
    /// Parse a TOML document.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// Read and parse a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Apply environment and command-line values.
    pub fn apply(&mut self, overrides: &Overrides) {
        if let Some(listen) = overrides.listen {
            self.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            self.data_dir.clone_from(dir);
        }
        if let Some(format) = overrides.log_format {
            self.log_format = format;
        }
    }

    /// Check every value and produce the settings the relay runs with.
    pub fn into_settings(self) -> Result<RelaySettings, ConfigError> {
        fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                reason: reason.into(),
            }
        }
        fn timeout(key: &'static str, secs: u64) -> Result<Duration, ConfigError> {
            if secs == 0 || secs > MAX_TIMEOUT_SECS {
                return Err(invalid(
                    key,
                    format!("{secs} is outside 1..={MAX_TIMEOUT_SECS} seconds"),
                ));
            }
            Ok(Duration::from_secs(secs))
        }
        fn at_least_one(key: &'static str, value: usize) -> Result<usize, ConfigError> {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
            Ok(value)
        }

        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if let Some(bad) = self
            .certificate_names
            .iter()
            .find(|n| n.trim().is_empty() || n.len() > 253)
        {
            return Err(invalid(
                "certificate_names",
                format!("{bad:?} is not a DNS name or IP address"),
            ));
        }
        let max_connections = at_least_one("max_connections", self.max_connections)?;
        if self.network_threads > 256 {
            return Err(invalid("network_threads", "at most 256 (0: cores - 1)"));
        }
        let outbound_queue = at_least_one("outbound_queue", self.outbound_queue)?;
        let frame_ceiling = usize::try_from(u32::MAX).unwrap_or(usize::MAX);
        if self.max_frame_bytes < MIN_FRAME_BYTES || self.max_frame_bytes > frame_ceiling {
            return Err(invalid(
                "max_frame_bytes",
                format!(
                    "{} is outside {MIN_FRAME_BYTES}..={frame_ceiling}",
                    self.max_frame_bytes
                ),
            ));
        }
        let handshake_timeout = timeout("handshake_timeout_secs", self.handshake_timeout_secs)?;
        let idle_timeout = timeout("idle_timeout_secs", self.idle_timeout_secs)?;

        let l = &self.limits;
        let max_change_bytes = at_least_one("limits.max_change_bytes", l.max_change_bytes)?;
        if max_change_bytes >= self.max_frame_bytes {
            return Err(invalid(
                "limits.max_change_bytes",
                format!(
                    "{max_change_bytes} must be smaller than max_frame_bytes ({}), or no frame \
                     could carry such a change",
                    self.max_frame_bytes
                ),
            ));
        }
        let max_changes_per_message =
            at_least_one("limits.max_changes_per_message", l.max_changes_per_message)?;
        let max_docs_per_session =
            at_least_one("limits.max_docs_per_session", l.max_docs_per_session)?;
        let max_held_changes = l.max_held_changes;
        if l.max_clock_skew_secs > 365 * MAX_TIMEOUT_SECS {
            return Err(invalid(
                "limits.max_clock_skew_secs",
                format!("{} is more than a year", l.max_clock_skew_secs),
            ));
        }
        let max_clock_skew_ms = i64::try_from(l.max_clock_skew_secs.saturating_mul(1000))
            .map_err(|_| invalid("limits.max_clock_skew_secs", "too large"))?;
        let handshake_timeout_ms = u64::try_from(handshake_timeout.as_millis())
            .map_err(|_| invalid("handshake_timeout_secs", "too large"))?;

        let engine = Limits {
            max_change_bytes,
            max_changes_per_message,
            max_clock_skew_ms,
            handshake_timeout_ms,
            max_docs_per_session,
            // Closed class creation: the engine lets a session found no class at all.
            max_new_classes_per_session: if self.open_class_creation {
                l.max_new_classes_per_session
            } else {
                0
            },
            max_held_changes,
        };
        let http = self.http.enabled.then_some(self.http.listen);
        let webhook = self.webhook.into_settings()?;
        Ok(RelaySettings {
            listen: self.listen,
            tcp_fallback: self.tcp_fallback,
            data_dir: self.data_dir,
            certificate_names: self.certificate_names,
            log_format: self.log_format,
            open_class_creation: self.open_class_creation,
            max_connections,
            max_frame_bytes: self.max_frame_bytes,
            outbound_queue,
            handshake_timeout,
            network_threads: if self.network_threads == 0 {
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get().saturating_sub(1))
                    .max(1)
            } else {
                self.network_threads
            },
            idle_timeout,
            engine,
            http,
            webhook,
            store_fsync: !self.unsafe_no_fsync,
        })
    }
}

/// Validated settings: what [`crate::Server::start`] runs with. Built only by
/// [`RelayConfig::into_settings`] (or [`RelaySettings::default`]), so every value is in range.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RelaySettings {
    /// UDP address to bind.
    pub listen: SocketAddr,
    /// Whether the TLS-over-TCP fallback listener runs (same port number, TCP).
    pub tcp_fallback: bool,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Names for a newly generated certificate.
    pub certificate_names: Vec<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Whether devices may found classes.
    pub open_class_creation: bool,
    /// Most connections at once (≥ 1).
    pub max_connections: usize,
    /// Frame size limit in bytes.
    pub max_frame_bytes: usize,
    /// Per-connection outbound queue capacity, in messages (≥ 1).
    pub outbound_queue: usize,
    /// QUIC handshake + first stream + `Hello` deadline.
    pub handshake_timeout: Duration,
    /// Worker threads of the network runtime (≥ 1; `network_threads = 0` resolved).
    pub network_threads: usize,
    /// QUIC idle timeout.
    pub idle_timeout: Duration,
    /// The sync engine's limits.
    pub engine: Limits,
    /// Where to serve `/metrics` and `/healthz`; `None`: not served.
    pub http: Option<SocketAddr>,
    /// The notification webhook; `None`: off.
    pub webhook: Option<WebhookSettings>,
    /// Whether store commits fsync (`false` only with the bench-only `unsafe_no_fsync`).
    pub store_fsync: bool,
}

impl Default for RelaySettings {
    fn default() -> Self {
        // The defaults are valid by construction; the unit tests check it. Should that ever
        // break, fall back to the same values field by field rather than panic.
        match RelayConfig::default().into_settings() {
            Ok(s) => s,
            Err(_) => {
                let c = RelayConfig::default();
                RelaySettings {
                    listen: c.listen,
                    tcp_fallback: c.tcp_fallback,
                    data_dir: c.data_dir,
                    certificate_names: c.certificate_names,
                    log_format: c.log_format,
                    open_class_creation: c.open_class_creation,
                    max_connections: c.max_connections,
                    max_frame_bytes: c.max_frame_bytes,
                    outbound_queue: c.outbound_queue,
                    handshake_timeout: Duration::from_secs(c.handshake_timeout_secs),
                    network_threads: 1,
                    idle_timeout: Duration::from_secs(c.idle_timeout_secs),
                    engine: Limits::default(),
                    http: None,
                    webhook: None,
                    store_fsync: !c.unsafe_no_fsync,
                }
            }
        }
    }
}

impl RelaySettings {
    /// The store file inside the data directory.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join(STORE_FILE)
    }
}

/// Name of the relay's SQLite store inside the data directory.
pub const STORE_FILE: &str = "relay.sqlite3";

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RelayConfig, ConfigError> {
        RelayConfig::from_toml(text, Path::new("test.toml"))
    }

    /// The error and its sources, as the binary prints them.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut next = e.source();
        while let Some(s) = next {
            out.push_str(": ");
            out.push_str(&s.to_string());
            next = s.source();
        }
        out
    }

    #[test]
    fn unsafe_no_fsync_turns_store_fsync_off() {
        assert!(parse("").unwrap().into_settings().unwrap().store_fsync);
        let s = parse("unsafe_no_fsync = true")
            .unwrap()
            .into_settings()
            .unwrap();
        assert!(!s.store_fsync);
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(parse("").unwrap(), RelayConfig::default());
        assert!(RelayConfig::default().into_settings().is_ok());
    }

    #[test]
    fn example_file_lists_every_default() {
        let text = include_str!("../../deploy/relay.example.toml");
        assert_eq!(parse(text).unwrap(), RelayConfig::default());
        // Every key of the schema appears (uncommented) in the example.
        for key in [
            "listen",
            "tcp_fallback",
            "data_dir",
            "certificate_names",
            "log_format",
            "open_class_creation",
            "max_connections",
            "max_frame_bytes",
            "outbound_queue",
            "handshake_timeout_secs",
            "network_threads",
            "idle_timeout_secs",
            "unsafe_no_fsync",
            "[limits]",
            "max_change_bytes",
            "max_changes_per_message",
            "max_docs_per_session",
            "max_new_classes_per_session",
            "max_clock_skew_secs",
            "max_held_changes",
            "[http]",
            "enabled",
            "[webhook]",
            "url",
            "bearer_token",
            "quiet_hours",
            "utc_offset_minutes",
            "max_attempts",
            "timeout_secs",
            "queue",
            "[webhook.member_quiet_hours]",
        ] {
            assert!(
                text.lines().any(|l| l.trim_start().starts_with(key)),
                "{key} missing from the example config"
            );
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("listen = \"127.0.0.1:1\"\nlisten_adress = \"x\"\n").unwrap_err();
        assert!(chain(&err).contains("listen_adress"), "{err}");
        let err = parse("[limits]\nmax_chnage_bytes = 1\n").unwrap_err();
        assert!(chain(&err).contains("max_chnage_bytes"), "{err}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let cases = [
            ("max_connections = 0", "max_connections"),
            ("network_threads = 1000", "network_threads"),
            ("outbound_queue = 0", "outbound_queue"),
            ("idle_timeout_secs = 0", "idle_timeout_secs"),
            (
                "handshake_timeout_secs = 100000000",
                "handshake_timeout_secs",
            ),
            ("max_frame_bytes = 10", "max_frame_bytes"),
            ("max_frame_bytes = 8192", "limits.max_change_bytes"),
            ("certificate_names = [\"\"]", "certificate_names"),
            ("data_dir = \"\"", "data_dir"),
            ("[webhook]\nurl = \"https://x/y\"", "webhook.url"),
            ("[webhook]\nurl = \"http://x:99999/\"", "webhook.url"),
            (
                "[webhook]\nurl = \"http://x/\"\nquiet_hours = \"21:00\"",
                "webhook.quiet_hours",
            ),
            (
                "[webhook]\nurl = \"http://x/\"\nquiet_hours = \"25:00-07:00\"",
                "webhook.quiet_hours",
            ),
            (
                "[webhook]\nurl = \"http://x/\"\nutc_offset_minutes = 9999",
                "webhook.utc_offset_minutes",
            ),
            (
                "[webhook]\nurl = \"http://x/\"\nmax_attempts = 0",
                "webhook.max_attempts",
            ),
            (
                "[webhook]\nurl = \"http://x/\"\n[webhook.member_quiet_hours]\nzz = \"\"",
                "webhook.member_quiet_hours",
            ),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap().into_settings().unwrap_err();
            assert!(
                err.to_string().contains(&format!("`{key}`")),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn overrides_win_and_closed_creation_allows_no_new_class() {
        let mut c = parse("listen = \"127.0.0.1:1\"\nopen_class_creation = false\n").unwrap();
        c.apply(&Overrides {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 2))),
            data_dir: Some(PathBuf::from("/tmp/x")),
            log_format: Some(LogFormat::Json),
        });
        let s = c.into_settings().unwrap();
        assert_eq!(s.listen.port(), 2);
        assert_eq!(s.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.engine.max_new_classes_per_session, 0);
        assert_eq!(s.store_path(), PathBuf::from("/tmp/x/relay.sqlite3"));
    }

    #[test]
    fn webhook_and_http_settings() {
        let s = parse(
            "[http]\nenabled = true\n[webhook]\nurl = \"http://127.0.0.1:8080/notify?x=1\"\n\
             quiet_hours = \"21:30-06:45\"\nutc_offset_minutes = 60\n",
        )
        .unwrap()
        .into_settings()
        .unwrap();
        assert_eq!(s.http, Some(SocketAddr::from(([127, 0, 0, 1], 9464))));
        let w = s.webhook.unwrap();
        assert_eq!(
            (w.host.as_str(), w.port, w.path.as_str()),
            ("127.0.0.1", 8080, "/notify?x=1")
        );
        assert_eq!(w.quiet_hours, Some((21 * 60 + 30, 6 * 60 + 45)));
        let member = "0011223344556677";
        let s = parse(&format!(
            "[webhook]\nurl = \"http://h/\"\n[webhook.member_quiet_hours]\n\"{member}\" = \"\"\n"
        ))
        .unwrap()
        .into_settings()
        .unwrap();
        let id: MemberId = member.parse().unwrap();
        assert_eq!(s.webhook.unwrap().member_quiet_hours.get(&id), Some(&None));
        assert!(RelaySettings::default().webhook.is_none());
        assert!(RelaySettings::default().http.is_none());
    }
}
