//! Records and enums mirroring the client's view types (ids as hex strings).

use homeroom_client::{
    ClassSummary, DeliveryState as ClientDelivery, JoinFailure, Membership as ClientMembership,
    SyncStatus as ClientStatus,
};
use homeroom_core::entries;
use homeroom_core::roster;
use homeroom_core::view::{EntryView, ReplyView, SignatureView};

/// Whether an item this device wrote has reached the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum DeliveryState {
    /// On this device's disk; not yet acknowledged by the relay.
    SavedLocally,
    /// The relay acknowledged it as durable.
    Delivered,
    /// Written by another device (received from the relay).
    NotLocal,
    /// Refused by the relay (written offline after this device was revoked, say): removed
    /// from this device and never delivered; `change_rejected` reported it.
    Rejected,
}

impl From<ClientDelivery> for DeliveryState {
    fn from(d: ClientDelivery) -> Self {
        match d {
            ClientDelivery::SavedLocally => DeliveryState::SavedLocally,
            ClientDelivery::Delivered => DeliveryState::Delivered,
            ClientDelivery::NotLocal => DeliveryState::NotLocal,
            ClientDelivery::Rejected => DeliveryState::Rejected,
        }
    }
}

/// A member's role in a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Role {
    /// The class's head teacher.
    HeadTeacher,
    /// A subject teacher.
    SubjectTeacher,
    /// A school administrator.
    Admin,
    /// A parent or guardian of a family.
    Guardian,
    /// A member of the parents' committee.
    Committee,
}

impl From<Role> for roster::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::HeadTeacher => roster::Role::HeadTeacher,
            Role::SubjectTeacher => roster::Role::SubjectTeacher,
            Role::Admin => roster::Role::Admin,
            Role::Guardian => roster::Role::Guardian,
            Role::Committee => roster::Role::Committee,
        }
    }
}

impl From<roster::Role> for Role {
    fn from(r: roster::Role) -> Self {
        match r {
            roster::Role::HeadTeacher => Role::HeadTeacher,
            roster::Role::SubjectTeacher => Role::SubjectTeacher,
            roster::Role::Admin => Role::Admin,
            roster::Role::Guardian => Role::Guardian,
            roster::Role::Committee => Role::Committee,
        }
    }
}

/// This device's standing in a class.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum Membership {
    /// Enrolled.
    Member,
    /// Joined with an invite; waiting for the relay to confirm.
    Joining,
    /// The join failed (`reason` for the user: used, expired, unknown invite…).
    JoinFailed {
        /// Why.
        reason: String,
    },
    /// This device was revoked or its member removed.
    Removed,
}

/// A join failure, for the user.
pub(crate) fn join_failure(f: &JoinFailure) -> String {
    match f {
        JoinFailure::AlreadyUsed => "this invite was already used; ask for a new one".into(),
        JoinFailure::Expired => "this invite expired; ask for a new one".into(),
        JoinFailure::Unknown => "the class does not know this invite; ask for a new one".into(),
        JoinFailure::Refused(r) => r.clone(),
    }
}

impl From<&ClientMembership> for Membership {
    fn from(m: &ClientMembership) -> Self {
        match m {
            ClientMembership::Member => Membership::Member,
            ClientMembership::Joining => Membership::Joining,
            ClientMembership::JoinFailed(f) => Membership::JoinFailed {
                reason: join_failure(f),
            },
            ClientMembership::Removed => Membership::Removed,
        }
    }
}

/// A class as listed on this device.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ClassInfo {
    /// The class id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// This device's roles in it.
    pub roles: Vec<Role>,
    /// This device's family, for guardians.
    pub family_id: Option<String>,
    /// Enrolled, joining, join failed or removed.
    pub membership: Membership,
}

impl From<ClassSummary> for ClassInfo {
    fn from(c: ClassSummary) -> Self {
        ClassInfo {
            id: c.id.to_hex(),
            membership: Membership::from(&c.membership),
            name: c.name,
            roles: c.roles.into_iter().map(Role::from).collect(),
            family_id: c.family.map(|f| f.to_hex()),
        }
    }
}

/// The sync status an app shows.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncStatus {
    /// Whether a relay session is established.
    pub connected: bool,
    /// Local changes not yet delivered.
    pub pending: u64,
    /// When the relay last acknowledged something (ms since the Unix epoch).
    pub last_delivered_ms: Option<i64>,
    /// Whether the relay session runs over the TCP fallback (UDP blocked on this network).
    pub over_tcp: bool,
    /// Devices connected directly over the LAN (device ids, hex), authenticated against this
    /// device's rosters.
    pub lan_peers: Vec<String>,
}

impl From<ClientStatus> for SyncStatus {
    fn from(s: ClientStatus) -> Self {
        SyncStatus {
            connected: s.connected,
            pending: s.pending as u64,
            last_delivered_ms: s.last_delivered_ms,
            over_tcp: s.over_tcp,
            lan_peers: s.lan_peers.iter().map(|d| d.to_hex()).collect(),
        }
    }
}

/// Both forms of one invite ([`crate::Homeroom::create_invite_codes`]).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct InviteCodes {
    /// The long code: what the QR code carries; names the class, the relay and its
    /// certificate, so it works on a brand-new phone.
    pub code: String,
    /// The short code (`XXXX-XXXX-XXXX`) to type on a phone that already knows the relay.
    pub short_code: String,
    /// When the invite expires (ms since the Unix epoch).
    pub expires_at_ms: i64,
}

/// What this device announces on the LAN while LAN sync runs: another device that cannot
/// use mDNS reaches it at this device's address and `port` (see `Homeroom.add_lan_peer`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct LanAdvert {
    /// A random token naming this run of LAN sync (fresh at every start).
    pub instance: String,
    /// The UDP port this device's LAN endpoint listens on.
    pub port: u16,
}

impl From<homeroom_client::LanAdvert> for LanAdvert {
    fn from(a: homeroom_client::LanAdvert) -> Self {
        LanAdvert {
            instance: a.instance,
            port: a.port,
        }
    }
}

/// What kind of notebook entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum EntryKind {
    /// The day's note.
    DailyNote,
    /// Homework.
    Homework,
    /// An announcement.
    Announcement,
}

impl From<EntryKind> for entries::EntryKind {
    fn from(k: EntryKind) -> Self {
        match k {
            EntryKind::DailyNote => entries::EntryKind::DailyNote,
            EntryKind::Homework => entries::EntryKind::Homework,
            EntryKind::Announcement => entries::EntryKind::Announcement,
        }
    }
}

impl From<entries::EntryKind> for EntryKind {
    fn from(k: entries::EntryKind) -> Self {
        match k {
            entries::EntryKind::DailyNote => EntryKind::DailyNote,
            entries::EntryKind::Homework => EntryKind::Homework,
            entries::EntryKind::Announcement => EntryKind::Announcement,
        }
    }
}

/// How urgent an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Urgency {
    /// Act today.
    Red,
    /// Soon.
    Amber,
    /// For information.
    Green,
}

impl From<Urgency> for entries::Urgency {
    fn from(u: Urgency) -> Self {
        match u {
            Urgency::Red => entries::Urgency::Red,
            Urgency::Amber => entries::Urgency::Amber,
            Urgency::Green => entries::Urgency::Green,
        }
    }
}

impl From<entries::Urgency> for Urgency {
    fn from(u: entries::Urgency) -> Self {
        match u {
            entries::Urgency::Red => Urgency::Red,
            entries::Urgency::Amber => Urgency::Amber,
            entries::Urgency::Green => Urgency::Green,
        }
    }
}

/// What the app passes to post an entry (to the whole class).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NewEntry {
    /// Kind of entry.
    pub kind: EntryKind,
    /// Urgency.
    pub urgency: Urgency,
    /// Title (non-empty).
    pub title: String,
    /// Body text.
    pub text: String,
    /// Whether families are asked to sign it.
    pub signature_requested: bool,
}

/// One revision of an entry.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RevisionInfo {
    /// The revision id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Text.
    pub text: String,
    /// The device that wrote it.
    pub author: Option<String>,
    /// When (ms since the Unix epoch).
    pub at: i64,
    /// Whether it asked families to sign again.
    pub material: bool,
}

impl From<&entries::Revision> for RevisionInfo {
    fn from(r: &entries::Revision) -> Self {
        RevisionInfo {
            id: r.id.to_hex(),
            title: r.title.clone(),
            text: r.text.clone(),
            author: r.author.map(|a| a.to_hex()),
            at: r.at,
            material: r.material,
        }
    }
}

/// A counted signature under an entry.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SignatureInfo {
    /// The signature's id.
    pub id: String,
    /// The signing family.
    pub family_id: String,
    /// The signing member.
    pub member_id: String,
    /// The signing device.
    pub device_id: String,
    /// The revision signed.
    pub revision_id: String,
    /// When.
    pub at: i64,
    /// Whether it signs the entry's current content.
    pub current: bool,
    /// Delivery of this signature, if this device wrote it.
    pub delivery: DeliveryState,
}

impl SignatureInfo {
    pub(crate) fn new(s: &SignatureView, delivery: DeliveryState) -> Self {
        SignatureInfo {
            id: s.id.to_hex(),
            family_id: s.family.to_hex(),
            member_id: s.member.to_hex(),
            device_id: s.device.to_hex(),
            revision_id: s.revision.to_hex(),
            at: s.at,
            current: s.current,
            delivery,
        }
    }
}

/// A reply under an entry.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ReplyInfo {
    /// The reply's id.
    pub id: String,
    /// The family's thread it is in.
    pub family_id: String,
    /// Whether it is on the family's public board (else private to the family and staff).
    pub public: bool,
    /// The writing device.
    pub author: String,
    /// The writing member.
    pub member_id: String,
    /// Whether a teacher wrote it.
    pub from_staff: bool,
    /// When.
    pub at: i64,
    /// The text, unless hidden or purged.
    pub text: Option<String>,
    /// Delivery of this reply, if this device wrote it.
    pub delivery: DeliveryState,
}

impl ReplyInfo {
    pub(crate) fn new(r: &ReplyView, delivery: DeliveryState) -> Self {
        ReplyInfo {
            id: r.id.to_hex(),
            family_id: r.family.to_hex(),
            public: r.scope == entries::ReplyScope::Public,
            author: r.author.to_hex(),
            member_id: r.member.to_hex(),
            from_staff: r.from_staff,
            at: r.at,
            text: r.text.clone(),
            delivery,
        }
    }
}

/// A notebook entry as this device's member sees it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct EntryInfo {
    /// The entry id.
    pub id: String,
    /// Kind.
    pub kind: EntryKind,
    /// Urgency.
    pub urgency: Urgency,
    /// The latest revision's title.
    pub title: String,
    /// The latest revision's text.
    pub text: String,
    /// The latest revision's id.
    pub revision_id: String,
    /// All revisions, oldest first.
    pub revisions: Vec<RevisionInfo>,
    /// The device that posted it.
    pub author: Option<String>,
    /// When it was posted.
    pub created_at: i64,
    /// Whether families are asked to sign.
    pub signature_requested: bool,
    /// Counted signatures this viewer may see.
    pub signatures: Vec<SignatureInfo>,
    /// Replies on family boards this viewer may see.
    pub public_replies: Vec<ReplyInfo>,
    /// Private replies this viewer may see.
    pub private_replies: Vec<ReplyInfo>,
    /// Delivery of the latest revision, if this device wrote it.
    pub delivery: DeliveryState,
}

impl EntryInfo {
    pub(crate) fn new(
        e: &EntryView,
        delivery: impl Fn(homeroom_core::ItemId) -> DeliveryState,
    ) -> Self {
        let mut d = delivery(e.latest.id);
        if d == DeliveryState::NotLocal {
            d = delivery(e.id);
        }
        EntryInfo {
            id: e.id.to_hex(),
            kind: e.kind.into(),
            urgency: e.urgency.into(),
            title: e.latest.title.clone(),
            text: e.latest.text.clone(),
            revision_id: e.latest.id.to_hex(),
            revisions: e.revisions.iter().map(RevisionInfo::from).collect(),
            author: e.author.map(|a| a.to_hex()),
            created_at: e.created_at,
            signature_requested: e.signature_requested,
            signatures: e
                .signatures
                .iter()
                .map(|s| SignatureInfo::new(s, delivery(s.id)))
                .collect(),
            public_replies: e
                .public_replies
                .iter()
                .map(|r| ReplyInfo::new(r, delivery(r.id)))
                .collect(),
            private_replies: e
                .private_replies
                .iter()
                .map(|r| ReplyInfo::new(r, delivery(r.id)))
                .collect(),
            delivery: d,
        }
    }
}

/// A member of a class.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct MemberInfo {
    /// The member id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Family, for guardians.
    pub family_id: Option<String>,
    /// Whether removed from the class.
    pub removed: bool,
    /// The member's active devices.
    pub device_ids: Vec<String>,
}

/// A family of a class.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FamilyInfo {
    /// The family id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its students: (id, name).
    pub students: Vec<StudentInfo>,
}

/// A student.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct StudentInfo {
    /// The student id.
    pub id: String,
    /// The student's name.
    pub name: String,
}

/// Who is in a class.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RosterInfo {
    /// The class's name.
    pub class_name: String,
    /// Members.
    pub members: Vec<MemberInfo>,
    /// Families.
    pub families: Vec<FamilyInfo>,
    /// Set when the class was rolled over to a new term (read-only archive).
    pub archived: bool,
}

impl From<&roster::RosterIndex> for RosterInfo {
    fn from(r: &roster::RosterIndex) -> Self {
        RosterInfo {
            class_name: r.class_name.clone(),
            members: r
                .members
                .values()
                .map(|m| {
                    let mut device_ids: Vec<String> = r
                        .devices
                        .values()
                        .filter(|d| d.member == m.id && d.revoked_at.is_none())
                        .map(|d| d.id.to_hex())
                        .collect();
                    device_ids.sort();
                    MemberInfo {
                        id: m.id.to_hex(),
                        name: m.name.clone(),
                        roles: m.roles.iter().copied().map(Role::from).collect(),
                        family_id: m.family.map(|f| f.to_hex()),
                        removed: m.removed_at.is_some(),
                        device_ids,
                    }
                })
                .collect(),
            families: r
                .families
                .values()
                .map(|f| FamilyInfo {
                    id: f.id.to_hex(),
                    name: f.name.clone(),
                    students: f
                        .students
                        .iter()
                        .map(|(id, name)| StudentInfo {
                            id: id.to_hex(),
                            name: name.clone(),
                        })
                        .collect(),
                })
                .collect(),
            archived: r.archived_at.is_some(),
        }
    }
}
