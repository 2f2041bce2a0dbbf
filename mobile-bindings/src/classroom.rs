//! The [`Classroom`] object: one class on this device — its roster and notebook.

use homeroom_client::Device;
use homeroom_core::entries::{Audience, NewEntry as CoreEntry};
use homeroom_core::roster::{self as core_roster};
use homeroom_core::{ClassId, DeviceId, DocId, DocKind, FamilyId, ItemId, MemberId, ModelError};

use crate::error::ApiError;
use crate::ids::{parse, parse_opt};
use crate::types::{DeliveryState, EntryInfo, NewEntry, Role, RosterInfo};

/// What posting an entry created.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PostedEntry {
    /// The entry id.
    pub entry_id: String,
    /// Its first revision's id.
    pub revision_id: String,
}

/// One class on this device. Obtain it with `Homeroom.classroom(class_id)`.
#[derive(Debug, uniffi::Object)]
pub struct Classroom {
    pub(crate) device: Device,
    pub(crate) class: ClassId,
}

impl Classroom {
    pub(crate) fn new(device: Device, class: ClassId) -> Self {
        Classroom { device, class }
    }

    pub(crate) fn doc(&self, kind: DocKind) -> DocId {
        DocId::new(self.class, kind)
    }

    pub(crate) fn state_of(&self, item: ItemId) -> DeliveryState {
        match self.device.delivery_state(item) {
            Ok(d) => d.into(),
            Err(e) => {
                tracing::warn!(%item, error = %e, "delivery state unavailable");
                DeliveryState::SavedLocally
            }
        }
    }
}

#[uniffi::export]
impl Classroom {
    /// The class id.
    pub fn class_id(&self) -> String {
        self.class.to_hex()
    }

    /// Who is in the class.
    pub fn roster(&self) -> Result<RosterInfo, ApiError> {
        Ok(RosterInfo::from(&self.device.roster(self.class)?))
    }

    /// Add a family (staff); returns the family id.
    pub fn add_family(&self, name: String) -> Result<String, ApiError> {
        Ok(self.device.add_family(self.class, &name)?.to_hex())
    }

    /// Add a student to a family (staff); returns the student id.
    pub fn add_student(&self, family_id: String, name: String) -> Result<String, ApiError> {
        let family: FamilyId = parse("family_id", &family_id)?;
        let (student, _) = self
            .device
            .edit(self.doc(DocKind::Roster), |tx, actor, ids| {
                actor.require_staff()?;
                if !actor.roster.families.contains_key(&family) {
                    return Err(ModelError::UnknownId {
                        kind: "family",
                        id: family.to_hex(),
                    });
                }
                let s = ids.student_id();
                core_roster::add_student(tx, family, s, &name)?;
                Ok(s)
            })?;
        Ok(student.to_hex())
    }

    /// Add a member (staff), optionally in a family and with one device; returns the member id.
    pub fn add_member(
        &self,
        name: String,
        role: Role,
        family_id: Option<String>,
        device_id: Option<String>,
    ) -> Result<String, ApiError> {
        let family: Option<FamilyId> = parse_opt("family_id", family_id.as_deref())?;
        let device: Option<DeviceId> = parse_opt("device_id", device_id.as_deref())?;
        let member = self
            .device
            .add_member(self.class, &name, &[role.into()], family, device)?;
        Ok(member.to_hex())
    }

    /// Enroll another device for an existing member (staff).
    pub fn enroll_device(&self, member_id: String, device_id: String) -> Result<(), ApiError> {
        let member: MemberId = parse("member_id", &member_id)?;
        let device: DeviceId = parse("device_id", &device_id)?;
        Ok(self.device.enroll_device(self.class, member, device)?)
    }

    /// Revoke a device (staff; a lost phone): its later changes are refused everywhere.
    pub fn revoke_device(&self, device_id: String) -> Result<(), ApiError> {
        let device: DeviceId = parse("device_id", &device_id)?;
        Ok(self.device.revoke_device(self.class, device)?)
    }

    /// Remove a member (staff; e.g. a custody change): their devices are refused from now on.
    pub fn remove_member(&self, member_id: String) -> Result<(), ApiError> {
        let member: MemberId = parse("member_id", &member_id)?;
        Ok(self.device.remove_member(self.class, member)?)
    }

    /// Post an entry to the whole class (staff).
    pub fn post_entry(&self, entry: NewEntry) -> Result<PostedEntry, ApiError> {
        let e = CoreEntry {
            kind: entry.kind.into(),
            urgency: entry.urgency.into(),
            audience: Audience::WholeClass,
            title: &entry.title,
            text: &entry.text,
            signature_requested: entry.signature_requested,
            consent: None,
        };
        let posted = self.device.post_entry(self.class, &e)?;
        Ok(PostedEntry {
            entry_id: posted.entry.to_hex(),
            revision_id: posted.revision.to_hex(),
        })
    }

    /// Edit an entry (staff); `material` asks families to sign again. Returns the revision id.
    pub fn edit_entry(
        &self,
        entry_id: String,
        title: String,
        text: String,
        material: bool,
    ) -> Result<String, ApiError> {
        let entry: ItemId = parse("entry_id", &entry_id)?;
        Ok(self
            .device
            .edit_entry(self.class, entry, &title, &text, material)?
            .to_hex())
    }

    /// The notebook as this device's member sees it, newest last.
    pub fn entries(&self) -> Result<Vec<EntryInfo>, ApiError> {
        let view = self.device.notebook(self.class)?;
        Ok(view
            .entries
            .iter()
            .map(|e| EntryInfo::new(e, |id| self.state_of(id)))
            .collect())
    }

    /// Sign the latest revision of an entry (guardian); returns the signature id.
    pub fn sign(&self, entry_id: String) -> Result<String, ApiError> {
        let entry: ItemId = parse("entry_id", &entry_id)?;
        Ok(self.device.sign(self.class, entry)?.to_hex())
    }

    /// Reply under an entry (guardian): `public` on the family's board, else privately to
    /// the teachers. Returns the reply id.
    pub fn reply(&self, entry_id: String, text: String, public: bool) -> Result<String, ApiError> {
        let entry: ItemId = parse("entry_id", &entry_id)?;
        Ok(self
            .device
            .reply(self.class, entry, &text, public)?
            .to_hex())
    }

    /// Whether an item this device wrote (entry, revision, signature, reply…) has reached the
    /// relay.
    pub fn delivery_state(&self, item_id: String) -> Result<DeliveryState, ApiError> {
        let item: ItemId = parse("item_id", &item_id)?;
        Ok(self.device.delivery_state(item)?.into())
    }
}
