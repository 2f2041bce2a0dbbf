//! The notebook end to end: a real relay process, real devices, real QUIC on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use homeroom_client::core::entries::{Audience, EntryKind, NewEntry, Urgency};
use homeroom_client::core::roster::Role;
use homeroom_client::core::view::SignatureStatus;
use homeroom_client::core::{ClassId, DocKind, FamilyId};
use homeroom_client::{DeliveryState, Device, RelayTarget};
use homeroom_e2e::{RelayProcess, wait_for};

const T: Duration = Duration::from_secs(60);

fn entry<'a>(title: &'a str, text: &'a str) -> NewEntry<'a> {
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

struct Family {
    id: FamilyId,
    device: Device,
}

fn setup(dir: &std::path::Path, families: usize) -> Result<(Device, ClassId, Vec<Family>)> {
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

fn target(relay: &RelayProcess) -> RelayTarget {
    RelayTarget {
        addr: relay.addr,
        fingerprint: relay.fingerprint,
    }
}

fn entry_count(d: &Device, class: ClassId) -> usize {
    d.notebook(class).map(|v| v.entries.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_posts_reach_parents_signatures_reach_teacher_and_survive_kill9() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut relay = RelayProcess::start(&dir.path().join("relay"), "127.0.0.1:0")?;
    let rt = tokio::runtime::Handle::current();

    // The teacher creates the class and posts while offline.
    let (teacher, class, families) = setup(dir.path(), 3)?;
    let first = teacher.post_entry(class, &entry("Maths", "Page 12, exercises 1-4"))?;
    let second = teacher.post_entry(class, &entry("Reading", "Chapter 3"))?;
    assert_eq!(
        teacher.delivery_state(first.entry)?,
        DeliveryState::SavedLocally
    );
    assert!(teacher.sync_status().pending > 0);

    // Online: everything is acknowledged durable by the relay.
    teacher.start_sync(&rt, target(&relay))?;
    wait_for("teacher's offline edits delivered", T, || {
        teacher.sync_status().pending == 0
    })
    .await?;
    assert_eq!(
        teacher.delivery_state(second.entry)?,
        DeliveryState::Delivered
    );

    // Parents connect later and receive both entries.
    for f in &families {
        f.device.start_sync(&rt, target(&relay))?;
    }
    for f in &families {
        wait_for("parent receives both entries", T, || {
            entry_count(&f.device, class) == 2
        })
        .await?;
    }

    // Each parent signs; every signature is delivered and the teacher sees them all.
    for f in &families {
        let sig = f.device.sign(class, second.entry)?;
        wait_for("signature delivered", T, || {
            f.device.delivery_state(sig).ok() == Some(DeliveryState::Delivered)
        })
        .await?;
    }
    wait_for("teacher sees every signature", T, || {
        teacher.notebook(class).is_ok_and(|v| {
            v.entries
                .iter()
                .find(|e| e.id == second.entry)
                .is_some_and(|e| {
                    families.iter().all(|f| {
                        e.families
                            .get(&f.id)
                            .is_some_and(|s| matches!(s.status, SignatureStatus::Signed { .. }))
                    })
                })
        })
    })
    .await?;

    // kill -9 the relay while edits are flowing, then restart it on the same address.
    let third = teacher.post_entry(class, &entry("Art", "Bring crayons"))?;
    let late_sig = families[0].device.sign(class, first.entry)?;
    relay.kill9()?;
    let fourth = teacher.post_entry(class, &entry("Music", "Recorder practice"))?;
    relay.restart()?;
    wait_for("all edits delivered after the restart", T, || {
        teacher.sync_status().pending == 0
            && families.iter().all(|f| f.device.sync_status().pending == 0)
    })
    .await?;
    for id in [third.entry, fourth.entry] {
        assert_eq!(teacher.delivery_state(id)?, DeliveryState::Delivered);
    }
    assert_eq!(
        families[0].device.delivery_state(late_sig)?,
        DeliveryState::Delivered
    );
    for f in &families {
        wait_for("every parent converges", T, || {
            entry_count(&f.device, class) == 4
        })
        .await?;
    }

    // A parent never receives another family's lane, nor learns it exists.
    for f in &families {
        let roster = f.device.roster(class)?;
        for other in roster.families.keys().filter(|o| **o != f.id) {
            let lane = homeroom_client::core::DocId::new(class, DocKind::Lane(*other));
            assert!(
                f.device
                    .read(lane, |doc, _| Ok(doc.get_heads().len()))
                    .is_ok_and(|n| n <= 1),
                "only the genesis of another family's lane"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_keeps_syncing_across_an_address_change() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = RelayProcess::start(&dir.path().join("relay"), "127.0.0.1:0")?;
    let rt = tokio::runtime::Handle::current();
    let (teacher, class, families) = setup(dir.path(), 1)?;
    teacher.start_sync(&rt, target(&relay))?;
    families[0].device.start_sync(&rt, target(&relay))?;
    wait_for("both connected", T, || {
        teacher.sync_status().connected && families[0].device.sync_status().connected
    })
    .await?;

    // The phone moves to another network: a new local UDP socket, same QUIC connection.
    let drops = Arc::new(DropCounter::default());
    families[0].device.set_observer(drops.clone());
    let before = families[0].device.local_sync_addr().unwrap();
    families[0].device.rebind()?;
    let after = families[0].device.local_sync_addr().unwrap();
    assert_ne!(before.port(), after.port(), "the socket changed");
    let posted = teacher.post_entry(class, &entry("After the move", "Still here"))?;
    wait_for("entry arrives over the migrated path", T, || {
        entry_count(&families[0].device, class) == 1
    })
    .await?;
    let sig = families[0].device.sign(class, posted.entry)?;
    wait_for("signature delivered over the migrated path", T, || {
        families[0].device.delivery_state(sig).ok() == Some(DeliveryState::Delivered)
    })
    .await?;
    assert!(families[0].device.sync_status().connected);
    assert_eq!(
        drops.0.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "migrated, not reconnected"
    );
    Ok(())
}

#[derive(Default)]
struct DropCounter(std::sync::atomic::AtomicUsize);

impl homeroom_client::DeviceObserver for DropCounter {
    fn on_event(&self, event: homeroom_client::DeviceEvent) {
        if event == (homeroom_client::DeviceEvent::Connection { connected: false }) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// A device commits received changes a little after applying them (see
/// `Inner::pump_deferring` in homeroom-client): the app must still read them at once, through
/// every read path, and they must be on disk once sync stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_entries_are_readable_at_once_and_kept_when_sync_stops() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = RelayProcess::start(&dir.path().join("relay"), "127.0.0.1:0")?;
    let rt = tokio::runtime::Handle::current();
    let (teacher, class, families) = setup(dir.path(), 1)?;
    let parent = &families[0].device;
    teacher.start_sync(&rt, target(&relay))?;
    parent.start_sync(&rt, target(&relay))?;
    wait_for("the parent has the class", T, || {
        parent.notebook(class).is_ok()
    })
    .await?;

    for k in 1..=5 {
        // The notebook view is cached by the stored heads: read it before each post, so that
        // a read after the post finds a cached view if the stored heads lag behind.
        let before = entry_count(parent, class);
        let title = format!("Post {k}");
        teacher.post_entry(class, &entry(&title, "text"))?;
        // The document in memory has it as soon as it arrives…
        wait_for("the post arrives", T, || {
            parent
                .read(
                    homeroom_client::core::DocId::new(class, DocKind::Notebook),
                    |doc, _| {
                        use homeroom_client::core::automerge::{ROOT, ReadDoc, Value};
                        Ok(match doc.get(ROOT, "entries") {
                            Ok(Some((Value::Object(_), obj))) => doc.keys(&obj).count(),
                            _ => 0,
                        })
                    },
                )
                .is_ok_and(|n| n == before + 1)
        })
        .await?;
        // …and so, at once, does the notebook view the app shows.
        let view = parent.notebook(class)?;
        assert_eq!(view.entries.len(), before + 1, "the view lags the document");
        assert!(view.entries.iter().any(|e| e.latest.title == title));
    }

    // Stopping sync commits what was received; a reopened device has all of it.
    parent.stop_sync().await;
    teacher.stop_sync().await;
    let parent_dir = parent.data_dir().to_path_buf();
    drop(families);
    let reopened = Device::open(&parent_dir)?;
    assert_eq!(entry_count(&reopened, class), 5);
    Ok(())
}
