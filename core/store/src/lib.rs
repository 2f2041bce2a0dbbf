//! # homeroom-store
//!
//! One SQLite store (rusqlite, bundled SQLite) used by devices **and** the relay: the node's
//! identity, every document's signed changes and compacted snapshots, cached heads, per-peer
//! Automerge sync states, delivery tracking of local changes, an audit of rejected changes and
//! small metadata. `docs/storage.md` describes the schema in detail.
//!
//! ## Schema
//!
//! A document is a row of `documents` (its [`DocId`](homeroom_core::DocId) in text form, its
//! class, cached heads, and the latest snapshot with its heads). Each change is a row of
//! `changes` — hash, author, signature, dependencies and the raw change bytes as a BLOB —
//! numbered in insertion order (`seq`) and indexed by `(doc, seq)` so that
//! [`Store::load_document`] is one range scan, and by `(doc, hash)` for idempotent inserts
//! and signature lookups. Compaction ([`Store::save_snapshot`]) nulls the bytes of changes the
//! snapshot contains but keeps their rows, so every change's signature survives it.
//! `sync_states` holds one encoded `automerge::sync::State` per (peer, document);
//! `undelivered` lists local changes the relay has not yet confirmed as saved; `rejected`
//! keeps refused changes for audit; `identity` and `meta` hold the node key and small
//! settings. The schema is versioned with `PRAGMA user_version` through one initializer
//! ([`schema`]: `init`, `upgrade_from`, [`END_VERSION`]); `PRAGMA application_id` =
//! [`APPLICATION_ID`] marks the file as Homeroom's.
//!
//! ## Durability contract
//!
//! Every write is one SQLite transaction on a connection in WAL mode with
//! `synchronous=FULL`, so **when a write method returns `Ok`, its data is on disk** and
//! survives a process kill or a power cut (on hardware that honours fsync); when it returns
//! `Err`, none of it was written. A device may therefore show an edit as "saved" as soon as
//! [`Store::put_changes`] returns, and the relay may send `Saved` as soon as
//! [`Store::write`] returns — which is why `write` takes a [`WriteBatch`] of many documents'
//! changes, heads and sync states: the relay's writer thread commits the edits of many
//! connections with a single fsync (group commit). After a crash the store holds exactly the
//! batches that were committed, never part of one. Opening never resets or rewrites a file it
//! does not recognise: a foreign, damaged or newer file is a typed [`StoreError`], and the
//! file is left as it was.
#![warn(missing_docs, unreachable_pub)]

mod engine;
mod error;
pub mod schema;
mod store;
mod types;

pub use error::StoreError;
pub use schema::{APPLICATION_ID, END_VERSION};
pub use store::Store;
pub use types::{
    LoadedDocument, NodeIdentity, OpenOptions, RejectedChange, WriteBatch, WriteSummary,
};

#[cfg(test)]
mod tests;
