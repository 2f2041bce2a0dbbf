//! Storage writes requested by the engine, and the events it reports.

use homeroom_core::automerge::ChangeHash;
use homeroom_core::{ClassId, DeviceId, DocId, SignedChange};
use homeroom_protocol::RejectReason;

/// Identifies a write so the driver can report it durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriteId(pub u64);

/// A write the driver must perform, then report with `handle_write_done`.
#[derive(Debug, Clone)]
pub struct StorageWrite {
    /// Its id.
    pub id: WriteId,
    /// What to write.
    pub kind: WriteKind,
}

/// What a [`StorageWrite`] writes.
#[derive(Debug, Clone)]
pub enum WriteKind {
    /// Verified changes. **Must be on disk (fsynced) before `handle_write_done`**: the engine
    /// sends `Saved` (relay) or reports "saved on this device" only after that.
    Changes {
        /// The changes, in an order that respects their dependencies.
        changes: Vec<(DocId, SignedChange)>,
        /// The heads each touched document will have once this write is durable (for the
        /// cached heads used by catalog digests).
        heads: Vec<(DocId, Vec<ChangeHash>)>,
    },
    /// Automerge sync states to persist for later sessions (best effort).
    SyncStates(Vec<(DeviceId, DocId, Vec<u8>)>),
    /// Changes a peer refused (or we refused): remove them from the document, keep an audit
    /// record.
    Rejected {
        /// The document.
        doc: DocId,
        /// The refused changes and everything that depended on them.
        hashes: Vec<ChangeHash>,
        /// Why.
        reason: RejectReason,
    },
    /// Changes refused on arrival that must be kept for audit (not applied): e.g. edits by a
    /// removed member or a revoked device. Stored with their bytes in the audit table.
    Audit {
        /// The document.
        doc: DocId,
        /// The refused changes, signed as received.
        changes: Vec<SignedChange>,
        /// Why.
        reason: RejectReason,
    },
    /// Local changes the relay acknowledged as durable.
    Delivered {
        /// The document.
        doc: DocId,
        /// The delivered changes.
        hashes: Vec<ChangeHash>,
    },
}

/// Something the application (or the relay's logs and metrics) should know.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeEvent {
    /// Changes from a peer were applied to a document.
    DocumentChanged {
        /// The document.
        doc: DocId,
    },
    /// Local changes are on this device's disk.
    SavedLocally {
        /// The document.
        doc: DocId,
        /// The changes.
        hashes: Vec<ChangeHash>,
    },
    /// Local changes were acknowledged by the relay as durable.
    Delivered {
        /// The document.
        doc: DocId,
        /// The changes.
        hashes: Vec<ChangeHash>,
    },
    /// Changes were refused (by the peer, or by us when received).
    Rejected {
        /// The document.
        doc: DocId,
        /// The refused changes.
        hashes: Vec<ChangeHash>,
        /// Why.
        reason: RejectReason,
        /// Whether these were this device's own changes that a peer refused.
        ours: bool,
    },
    /// Device: the relay enrolled this device in `class` (a pending join completed: the relay
    /// lists the class's documents, not just its roster).
    Joined {
        /// The class.
        class: ClassId,
    },
    /// Device: the relay refused to let this device join `class` with its invite (or refused
    /// the redemption). Relay: it refused a `Join` (bad proof, unknown, used or expired invite).
    JoinRefused {
        /// The class.
        class: ClassId,
        /// Why (`InviteUsed`, `InviteExpired`, `InviteUnknown`, …).
        reason: RejectReason,
    },
    /// Device: the relay named the class that holds the invite of a short code (see
    /// [`crate::SyncNode::add_find`]); the join of that class is now pending.
    InviteFound {
        /// The invite's public key.
        invite: DeviceId,
        /// The class that holds it.
        class: ClassId,
    },
    /// Device: the relay knows no class with this invite (asked again for a minute). Relay: it
    /// answered a `FindInvite` with no class (unknown invite or bad proof; logged).
    InviteNotFound {
        /// The invite's public key.
        invite: DeviceId,
    },
    /// A class became known on this node (first roster seen).
    ClassAdded {
        /// The class.
        class: ClassId,
    },
    /// A class roster changed (membership or rights).
    RosterChanged {
        /// The class.
        class: ClassId,
    },
    /// A session completed its handshake.
    SessionEstablished {
        /// The session.
        session: crate::SessionId,
        /// The authenticated peer device (for a device-side session: the relay has no key and
        /// this is `None`).
        peer: Option<DeviceId>,
    },
    /// A session ended.
    SessionClosed {
        /// The session.
        session: crate::SessionId,
        /// Why, for logs.
        reason: String,
    },
    /// A protocol violation by a peer (logged by the driver; the session may go on).
    PeerMisbehaved {
        /// The session.
        session: crate::SessionId,
        /// What happened.
        detail: String,
    },
}
