//! # homeroom-sync
//!
//! The sans-IO sync engine shared by the relay, devices and the simulator. A [`SyncNode`] is a
//! [`Replica`] (the documents, their signatures, the rosters that decide access, and which
//! heads are durable) plus one protocol session per connected peer. It takes inputs
//! (`handle_*`, each with an explicit `now`) and produces outputs (`poll_*`: messages to send,
//! storage writes to perform, sessions to close, events, the next deadline). It opens no
//! socket, reads no clock and spawns no task, so a simulated network with virtual time can
//! drive it deterministically. (One exception, for speed only: a large batch's signature
//! checks run on scoped threads that end before the call returns; the outputs do not depend
//! on them — `homeroom_core::identity::KeyCache::preverify`.)
//!
//! Documents sync with `automerge::sync` (one `sync::State` per peer and document, persisted
//! when a session closes). Around it: every change is verified (signature, author's write right
//! per the roster) before it is applied — [`Replica::ingest`]; the relay acknowledges heads
//! with `Saved` only after the storage write carrying them is reported durable
//! ([`SyncNode::handle_write_done`]); refused changes produce a `Reject`, after which the
//! sender drops them and everything built on them ([`Replica::drop_rejected`]) and sync goes on.
#![warn(missing_docs, unreachable_pub)]

mod depth;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod limits;
mod node;
mod replica;
mod source;
mod write;

pub use depth::MAX_OBJECT_DEPTH;
pub use error::SyncError;
pub use limits::Limits;
pub use node::{SessionId, SyncNode};
pub use replica::{DocStats, IncomingChange, IngestOutcome, Replica};
pub use source::{DocSource, MemorySource, StoredDocument, materialize};
pub use write::{NodeEvent, StorageWrite, WriteId, WriteKind};
