//! # homeroom-mobile
//!
//! The app-facing API of Homeroom, exported with uniffi to Kotlin, Swift and Python. It is a
//! thin layer over [`homeroom_client::Device`]: a [`Homeroom`] object owns one device (its key
//! and SQLite store in a data folder) and its own tokio runtime thread, on which all network
//! I/O runs. No exported call blocks on the network; writes return once they are on this
//! device's disk ("saved locally"), and become "delivered" when the relay acknowledges them.
//!
//! Ids cross the boundary as lowercase hex strings; a malformed one is an
//! [`ApiError::InvalidInput`] naming the parameter.

mod activities;
mod classroom;
mod error;
mod homeroom;
mod ids;
mod observer;
mod types;

pub use activities::*;
pub use classroom::Classroom;
pub use error::ApiError;
pub use homeroom::Homeroom;
pub use observer::Observer;
pub use types::*;

uniffi::setup_scaffolding!();
