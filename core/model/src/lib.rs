//! # homeroom-core
//!
//! The pure core of Homeroom: a class is a small set of Automerge documents (roster, notebook,
//! one private lane and one public board per family, committee board, principal's mailbox,
//! anonymous ballots), and **access is decided per document** from the roster
//! ([`RosterIndex::can_read`], [`RosterIndex::can_write`]). Every change is signed by the
//! device that made it ([`identity`]); any receiver checks the signature and the author's
//! right to write that document before applying it, so enforcement never looks inside a change.
//!
//! Each document starts from a deterministic [`genesis`] change that creates its top-level maps,
//! so concurrent first writers never hide each other's data. The typed activity modules take an
//! explicit `now` and ids from an [`IdSource`]: no clock, randomness or I/O lives here.
#![warn(missing_docs, unreachable_pub)]

pub mod chains;
pub mod committee;
pub mod context;
pub mod document;
pub mod duty;
pub mod entries;
pub mod error;
pub mod events;
pub mod genesis;
pub mod hlc;
pub mod homework;
pub mod identity;
pub mod ids;
pub mod invite;
pub mod leave;
pub mod roster;
pub mod surveys;
pub mod thread;
pub(crate) mod values;
pub mod view;

pub use automerge;
pub use context::Actor;
pub use document::{DocId, DocKind};
pub use error::ModelError;
pub use identity::{ChangeSignature, DeviceId, DeviceKey, SignedChange};
pub use ids::{ClassId, FamilyId, IdSource, ItemId, MemberId, SeededIds, StudentId};
pub use roster::{Role, RosterIndex};
