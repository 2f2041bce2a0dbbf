//! # homeroom-relay
//!
//! Homeroom's self-hostable relay: one binary that devices reach over QUIC. It authenticates
//! each device (the `Hello` proof bound to the TLS session), serves each one only the
//! documents the class rosters let it read, verifies and persists every change durably before
//! acknowledging it with `Saved`, and forwards changes to the other devices of the class.
//! All protocol logic lives in the sans-IO engine (`homeroom_sync::SyncNode`); this crate is
//! its driver.
//!
//! ## Shape
//!
//! ```text
//!   QUIC endpoint ── accept loop ── connection task (one per device) ─┐ frames in
//!                                        ▲ outbound queue (bounded)   ▼
//!                                        └──────────────────────  hub thread: SyncNode
//!                                                                  │ reads: Store (reader)
//!                                                  StorageWrite ▼  ▲ "durable"
//!                                                      writer thread: Store (writer),
//!                                                      group commit, one fsync per batch
//! ```
//!
//! - [`config`]: the TOML file ([`RelayConfig`]), environment/CLI overrides, validation into
//!   [`RelaySettings`].
//! - `connection`: one task per QUIC connection; decodes frames (size-limited) into hub inputs,
//!   writes the hub's messages; a bad frame closes only that connection.
//! - `hub`: the single owner of the [`homeroom_sync::SyncNode`]; routes its outputs (writes to
//!   the writer, messages to bounded per-connection queues, closes, events to logs), drives its
//!   timer, evicts documents nobody follows.
//! - `writer`: the thread that commits everything queued in one transaction and reports it
//!   durable; `Saved` is only ever sent after that.
//! - [`store`]: the [`RelayStore`] seam (SQLite today, PostgreSQL later).
//! - [`Server`]: wires it together and shuts it down gracefully (stop accepting, close
//!   sessions, flush every write, close the endpoint).
//! - [`metrics`] and [`http`]: process-wide counters updated where events happen, served as
//!   Prometheus text with a health check on an optional loopback HTTP listener.
//! - [`webhook`]: the notification hook (a POST per recipient, quiet hours, retries), fed by
//!   the hub without ever blocking it.
//! - [`admin`]: the `homeroom-relay admin` operations — online backup and restore, listing,
//!   class export, and the school's admin device that founds classes through the relay.
//! - `stateless_reset`: QUIC reset key derived from the kept certificate key, so devices
//!   connected to a crashed or restarted relay learn it at their next packet and reconnect,
//!   instead of waiting out the idle timeout.
//!
//! ## Guarantees
//!
//! - Nothing is acknowledged before it is on disk; a write that fails is retried, never
//!   reported durable.
//! - Memory is bounded per connection: frames by `max_frame_bytes` (checked from the header,
//!   before buffering), queued outbound messages by `outbound_queue` (a slow reader is
//!   disconnected), QUIC stream windows by the transport limits, connections by
//!   `max_connections`.
//! - Hostile input ends at most the connection that sent it.
#![warn(missing_docs, unreachable_pub)]

pub mod admin;
pub mod config;
mod connection;
pub mod http;
mod hub;
pub mod metrics;
mod server;
mod stateless_reset;
pub mod store;
mod tcp;
pub mod webhook;
mod writer;

pub use config::{ConfigError, LogFormat, Overrides, RelayConfig, RelaySettings};
pub use connection::close_code;
pub use hub::HubError;
pub use server::{Server, ServerError};
pub use store::{RelayStore, open_sqlite, open_sqlite_with};

/// File names inside the data directory.
pub mod files {
    pub use crate::config::STORE_FILE;
    /// The relay's DER certificate (what devices pin, by SHA-256).
    pub const CERTIFICATE_FILE: &str = "relay-cert.der";
    /// The certificate's private key (mode 0600).
    pub const KEY_FILE: &str = "relay-key.der";
}
