//! A class of real devices for the fault and crash tests: a teacher device that founds the
//! class and enrolls one guardian device per family, and the helpers those tests share.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use homeroom_client::core::entries::{Audience, EntryKind, NewEntry, Urgency};
use homeroom_client::core::roster::Role;
use homeroom_client::core::{ClassId, FamilyId};
use homeroom_client::{Device, RelayTarget};

/// One family's guardian device.
pub struct Family {
    /// The family.
    pub id: FamilyId,
    /// Its guardian's device.
    pub device: Device,
}

/// A founded class: the teacher's device and `families` guardian devices, each with its own
/// data folder under `dir` (`teacher`, `parent0`, …). Nothing is synced yet.
pub fn found_class(dir: &Path, families: usize) -> Result<(Device, ClassId, Vec<Family>)> {
    let teacher = Device::open(&dir.join("teacher"))?;
    let class = teacher.create_class("Class 3B", "Ms Li")?;
    let mut fams = Vec::new();
    for i in 0..families {
        let device = Device::open(&dir.join(format!("parent{i}")))?;
        let id = teacher.add_family(class, &format!("Family {i}"))?;
        teacher.add_member(
            class,
            &format!("Parent {i}"),
            &[Role::Guardian],
            Some(id),
            Some(device.device_id()),
        )?;
        fams.push(Family { id, device });
    }
    Ok((teacher, class, fams))
}

/// A homework entry asking for signatures.
pub fn homework<'a>(title: &'a str, text: &'a str) -> NewEntry<'a> {
    NewEntry {
        kind: EntryKind::Homework,
        urgency: Urgency::Green,
        audience: Audience::WholeClass,
        title,
        text,
        signature_requested: true,
        consent: None,
    }
}

/// Where devices sync: `addr` (the relay or a proxy in front of it) with the relay's pin.
pub fn target(addr: std::net::SocketAddr, fingerprint: [u8; 32]) -> RelayTarget {
    RelayTarget { addr, fingerprint }
}

/// Poll `cond` every `every` (for conditions too costly to check every 20 ms) until it holds
/// or `timeout` passes; returns the time it took.
pub async fn wait_slow(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<Duration> {
    let start = std::time::Instant::now();
    loop {
        if cond() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            anyhow::bail!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(every).await;
    }
}
