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

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// Seconds of silence after which a QUIC connection is dropped (devices send keep-alives).
    /// Default `60`.
    pub idle_timeout_secs: u64,
    /// Limits on what one device may make the sync engine do.
    pub limits: LimitsConfig,
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
            data_dir: PathBuf::from("./homeroom-data"),
            certificate_names: vec!["homeroom-relay".into(), "localhost".into()],
            log_format: LogFormat::Text,
            open_class_creation: true,
            max_connections: 1000,
            max_frame_bytes: homeroom_protocol::DEFAULT_MAX_FRAME,
            outbound_queue: 1024,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 60,
            limits: LimitsConfig::default(),
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
        Ok(RelaySettings {
            listen: self.listen,
            data_dir: self.data_dir,
            certificate_names: self.certificate_names,
            log_format: self.log_format,
            open_class_creation: self.open_class_creation,
            max_connections,
            max_frame_bytes: self.max_frame_bytes,
            outbound_queue,
            handshake_timeout,
            idle_timeout,
            engine,
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
    /// QUIC idle timeout.
    pub idle_timeout: Duration,
    /// The sync engine's limits.
    pub engine: Limits,
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
                    data_dir: c.data_dir,
                    certificate_names: c.certificate_names,
                    log_format: c.log_format,
                    open_class_creation: c.open_class_creation,
                    max_connections: c.max_connections,
                    max_frame_bytes: c.max_frame_bytes,
                    outbound_queue: c.outbound_queue,
                    handshake_timeout: Duration::from_secs(c.handshake_timeout_secs),
                    idle_timeout: Duration::from_secs(c.idle_timeout_secs),
                    engine: Limits::default(),
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
            "data_dir",
            "certificate_names",
            "log_format",
            "open_class_creation",
            "max_connections",
            "max_frame_bytes",
            "outbound_queue",
            "handshake_timeout_secs",
            "idle_timeout_secs",
            "[limits]",
            "max_change_bytes",
            "max_changes_per_message",
            "max_docs_per_session",
            "max_new_classes_per_session",
            "max_clock_skew_secs",
            "max_held_changes",
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
}
