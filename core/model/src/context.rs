//! Who is acting, and when: passed to every typed write so it can check the acting device's
//! role and stamp items, without the core reading a clock.

use crate::error::ModelError;
use crate::identity::DeviceId;
use crate::ids::FamilyId;
use crate::roster::{Member, RosterIndex};

/// The acting device, its roster, and the current time (milliseconds since the Unix epoch).
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// The class roster as this device currently sees it.
    pub roster: &'a RosterIndex,
    /// The device making the change.
    pub device: DeviceId,
    /// Now, in milliseconds since the Unix epoch, supplied by the caller.
    pub now: i64,
}

impl<'a> Actor<'a> {
    /// An acting device.
    pub fn new(roster: &'a RosterIndex, device: DeviceId, now: i64) -> Self {
        Self {
            roster,
            device,
            now,
        }
    }

    /// The active member behind the device, or `NotAllowed` if it is not (or no longer) one.
    pub fn member(&self) -> Result<&'a Member, ModelError> {
        self.roster.member_of(&self.device).ok_or_else(|| {
            ModelError::NotAllowed("this device is not an active member of the class".into())
        })
    }

    /// Require an active staff member.
    pub fn require_staff(&self) -> Result<&'a Member, ModelError> {
        let m = self.member()?;
        if m.is_active_staff() {
            Ok(m)
        } else {
            Err(ModelError::NotAllowed(
                "only teachers and admins may do this".into(),
            ))
        }
    }

    /// Require an active guardian of `family`.
    pub fn require_guardian_of(&self, family: &FamilyId) -> Result<&'a Member, ModelError> {
        let m = self.member()?;
        if m.is_guardian_of(family) {
            Ok(m)
        } else {
            Err(ModelError::NotAllowed(format!(
                "only guardians of family {family} may do this"
            )))
        }
    }

    /// The family of an active guardian.
    pub fn guardian_family(&self) -> Result<FamilyId, ModelError> {
        let m = self.member()?;
        match m.family {
            Some(f) if m.is_guardian_of(&f) => Ok(f),
            _ => Err(ModelError::NotAllowed("only guardians may do this".into())),
        }
    }
}
