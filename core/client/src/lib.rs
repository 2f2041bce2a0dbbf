//! # homeroom-client
//!
//! The device side of Homeroom. A [`Device`] owns the device's key and SQLite store, the
//! classes it belongs to (as Automerge documents inside a sans-IO `SyncNode`), and offers the
//! typed operations an app calls. Every write is signed and on the device's disk before the
//! call returns ("saved on this device"); the relay's `Saved` acknowledgement later turns it
//! into "delivered" ([`DeliveryState`]). [`Device::start_sync`] runs a small tokio task that
//! keeps one QUIC connection to a relay whose certificate is pinned by fingerprint, moves
//! frames between it and the engine, and reconnects with exponential backoff and jitter.
#![warn(missing_docs, unreachable_pub)]

mod connection;
mod device;
mod discovery;
mod error;
mod fallback;
mod ids;
mod invite;
mod lan;

pub use connection::{Backoff, RelayTarget, TcpFallback};
pub use device::{ClassSummary, DeliveryState, Device, DeviceEvent, DeviceObserver, SyncStatus};
pub use discovery::{
    Discovery, DiscoveryEvent, LanAdvert, MdnsDiscovery, SERVICE_TYPE, StaticDiscovery,
};
pub use error::ClientError;
pub use homeroom_core as core;
pub use invite::{Invite, InviteError, InviteRole, JoinFailure, Membership};
pub use lan::LanOptions;
