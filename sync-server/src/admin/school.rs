//! The school's admin device: founds classes and invites their teachers.
//!
//! The admin CLI is a *device* like any phone — its own key and store under
//! `<data_dir>/admin/` — not a special write path into the relay's store: it founds a class
//! (becoming its founding member), adds the teacher as a member, creates the teacher's
//! invite, and syncs those changes to the relay over QUIC, pinning the relay's certificate
//! like every device. The relay checks them like anyone's.
//!
//! "Creating a school" is creating that admin identity with the school's name
//! ([`School::init`]); the name and the admin's display name are kept in
//! `<data_dir>/admin/school.json`.
//!
//! Roles: founding a class makes the founding member its head teacher (the roster's root of
//! trust), so the admin's member holds that role in the classes it founds; the teacher is
//! added as a head teacher too, and enrolls their phone with the invite.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use homeroom_client::core::roster::Role;
use homeroom_client::{Device, Invite, InviteRole, RelayTarget};
use homeroom_core::{ClassId, DeviceId, MemberId};
use serde::{Deserialize, Serialize};

use super::AdminError;

/// Folder of the admin device inside the relay's data folder.
pub const ADMIN_DIR: &str = "admin";
/// The school's name and the admin's display name, inside [`ADMIN_DIR`].
pub const SCHOOL_FILE: &str = "school.json";
/// The admin device's store, inside [`ADMIN_DIR`] (homeroom-client's file name).
pub const DEVICE_STORE: &str = "device.sqlite3";

/// The school's identity as kept by the admin device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchoolInfo {
    /// The school's name.
    pub school: String,
    /// The admin's display name (the founding member of every class it founds).
    pub admin_name: String,
}

/// The admin device of a relay's data folder.
#[derive(Debug)]
pub struct School {
    device: Device,
    info: SchoolInfo,
}

impl School {
    /// Create the admin identity (key and store in `<data_dir>/admin/`) for `school`.
    /// Refuses if one exists (its key is what the classes trust).
    pub fn init(data_dir: &Path, school: &str, admin_name: &str) -> Result<School, AdminError> {
        let dir = data_dir.join(ADMIN_DIR);
        let file = dir.join(SCHOOL_FILE);
        if file.exists() {
            return Err(AdminError::Other(format!(
                "{} exists: this data folder already has a school",
                file.display()
            )));
        }
        if school.trim().is_empty() || admin_name.trim().is_empty() {
            return Err(AdminError::Other(
                "the school name and the admin name must not be empty".into(),
            ));
        }
        let device = Device::open(&dir)?;
        let info = SchoolInfo {
            school: school.trim().to_string(),
            admin_name: admin_name.trim().to_string(),
        };
        let json = serde_json::to_string_pretty(&info)?;
        std::fs::write(&file, json).map_err(super::io("cannot write", &file))?;
        Ok(School { device, info })
    }

    /// Open the admin device created by [`School::init`].
    pub fn open(data_dir: &Path) -> Result<School, AdminError> {
        let dir = data_dir.join(ADMIN_DIR);
        let file = dir.join(SCHOOL_FILE);
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AdminError::Other(format!(
                    "no school in {}: run `homeroom-relay admin init --school NAME --admin-name \
                     NAME` first",
                    data_dir.display()
                )));
            }
            Err(e) => return Err(super::io("cannot read", &file)(e)),
        };
        let info: SchoolInfo = serde_json::from_str(&text)?;
        let device = Device::open(&dir)?;
        Ok(School { device, info })
    }

    /// The school's identity.
    pub fn info(&self) -> &SchoolInfo {
        &self.info
    }

    /// The admin device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The admin device's folder.
    pub fn dir(&self) -> PathBuf {
        self.device.data_dir().to_path_buf()
    }

    /// Found class `name` and add its teacher `teacher` (head teacher, no device yet: the
    /// teacher's invite enrolls their phone). Saved on the admin device; [`School::connect`]
    /// sends it to the relay.
    pub fn create_class(
        &self,
        name: &str,
        teacher: &str,
    ) -> Result<(ClassId, MemberId), AdminError> {
        let class = self.device.create_class(name, &self.info.admin_name)?;
        let member = self
            .device
            .add_member(class, teacher, &[Role::HeadTeacher], None, None)?;
        Ok((class, member))
    }

    /// Revoke `device` in `class` (a lost phone): its sessions are closed by the relay and its
    /// later changes refused.
    pub fn revoke_device(&self, class: ClassId, device: DeviceId) -> Result<(), AdminError> {
        self.device.revoke_device(class, device)?;
        Ok(())
    }

    /// Create an invite for `role` in `class`, valid for `valid_for`. The code carries the
    /// relay target the admin device last synced with (call [`School::connect`] first).
    pub fn invite(
        &self,
        class: ClassId,
        role: InviteRole,
        valid_for: Duration,
    ) -> Result<Invite, AdminError> {
        Ok(self.device.create_invite(class, role, valid_for)?)
    }

    /// Remove `member` from `class` (custody change, left the class).
    pub fn remove_member(&self, class: ClassId, member: MemberId) -> Result<(), AdminError> {
        self.device.remove_member(class, member)?;
        Ok(())
    }

    /// Start syncing with the relay at `target` (remembered: invites carry it). Inside a
    /// tokio runtime.
    pub fn connect(&self, target: RelayTarget) -> Result<(), AdminError> {
        let rt = tokio::runtime::Handle::current();
        self.device.start_sync(&rt, target)?;
        Ok(())
    }

    /// Wait until every local change is acknowledged durable by the relay (or `timeout`
    /// passes), then stop syncing.
    pub async fn finish(&self, timeout: Duration) -> Result<(), AdminError> {
        let start = Instant::now();
        let result = loop {
            let status = self.device.sync_status();
            // Give the session a moment to pull what the relay has even when nothing is
            // pending here.
            if status.pending == 0 && start.elapsed() > Duration::from_millis(500) {
                break Ok(());
            }
            if start.elapsed() > timeout {
                let relay = self
                    .device
                    .relay_target()
                    .map(|t| t.addr.to_string())
                    .unwrap_or_else(|| "?".into());
                break Err(AdminError::Other(format!(
                    "{} change(s) not acknowledged by the relay at {relay} within {timeout:?}: \
                     is it running, and is the address right (--relay)? They stay saved in {} \
                     and go out with the next admin command",
                    status.pending,
                    self.dir().display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.device.stop_sync().await;
        result
    }
}
