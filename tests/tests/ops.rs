//! Running a relay: the admin CLI (school, class, backup under load, restore, export), the
//! metrics and health endpoint, and the notification webhook against a real local HTTP
//! listener. Real relay processes, real devices over QUIC on loopback, real SQLite files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use homeroom_client::core::automerge::ROOT;
use homeroom_client::core::automerge::transaction::Transactable;
use homeroom_client::core::committee::send_to_mailbox;
use homeroom_client::core::entries::{Audience, EntryKind, NewEntry, Urgency};
use homeroom_client::core::events::{self, EventKind, NewEvent, SlotSpec};
use homeroom_client::core::roster::Role;
use homeroom_client::core::thread::{ContactKind, NewContact, record_contact};
use homeroom_client::core::{ClassId, DocId, DocKind, FamilyId, ItemId};
use homeroom_client::{DeliveryState, Device, Membership, RelayTarget};
use homeroom_e2e::{RelayProcess, relay_binary, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(60);

fn entry<'a>(title: &'a str, urgency: Urgency) -> NewEntry<'a> {
    NewEntry {
        kind: EntryKind::Homework,
        urgency,
        audience: Audience::WholeClass,
        title,
        text: "text",
        signature_requested: true,
        consent: None,
    }
}

struct Family {
    id: FamilyId,
    device: Device,
}

fn setup(dir: &Path, families: usize) -> Result<(Device, ClassId, Vec<Family>)> {
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

/// Run `homeroom-relay ARGS --data-dir DIR` to completion; its stdout, or an error with both
/// streams.
fn admin(data_dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(relay_binary()?)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("HOMEROOM_LISTEN")
        .env_remove("HOMEROOM_DATA_DIR")
        .output()
        .context("running homeroom-relay")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "homeroom-relay {args:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// A free loopback TCP port (bound then released).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// GET `path` from `port`: status code and body.
fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status")?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_string()))
}

/// Now, in ms since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The value of an unlabelled sample in a Prometheus text exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Sets its flag when dropped: a failing test stops its load tasks instead of leaving the
/// runtime waiting for them.
struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_restored_into_a_fresh_folder_holds_every_acknowledged_edit() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("relay");
    let relay = RelayProcess::start(&data, "127.0.0.1:0")?;
    let rt = tokio::runtime::Handle::current();
    let (teacher, class, families) = setup(dir.path(), 2)?;
    teacher.start_sync(&rt, target(&relay))?;
    for f in &families {
        f.device.start_sync(&rt, target(&relay))?;
    }

    // Load: the teacher posts (one task) and the families sign (another), continuously,
    // until told to stop (also when the test fails: `_stop_load`). Each post is recorded with
    // when it began and when it was saved.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _stop_load = StopOnDrop(stop.clone());
    let posted: Arc<Mutex<Vec<ItemId>>> = Arc::default();
    let posted_at: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let signed: Arc<Mutex<Vec<(usize, ItemId, ItemId)>>> = Arc::default();
    let posting = {
        let (stop, posted, posted_at) = (stop.clone(), posted.clone(), posted_at.clone());
        let teacher = teacher.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let title = format!("Entry {i}");
                let began = Instant::now();
                let p = teacher.post_entry(class, &entry(&title, Urgency::Green))?;
                posted.lock().unwrap().push(p.entry);
                posted_at.lock().unwrap().push((began, Instant::now()));
                i += 1;
                std::thread::sleep(Duration::from_millis(15));
            }
            Ok(())
        })
    };
    let signing = {
        let (stop, signed) = (stop.clone(), signed.clone());
        let fams: Vec<Device> = families.iter().map(|f| f.device.clone()).collect();
        tokio::task::spawn_blocking(move || -> Result<()> {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                // Each family signs an earlier entry it has received by now.
                for (k, f) in fams.iter().enumerate() {
                    let have: Vec<ItemId> = f
                        .notebook(class)
                        .map(|v| v.entries.iter().map(|e| e.id).collect())
                        .unwrap_or_default();
                    let done: Vec<ItemId> = signed
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|(who, _, _)| *who == k)
                        .map(|(_, e, _)| *e)
                        .collect();
                    if let Some(e) = have.iter().find(|e| !done.contains(e)) {
                        let sig = f.sign(class, *e)?;
                        signed.lock().unwrap().push((k, *e, sig));
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        })
    };

    // Once a fair amount is acknowledged, note exactly what is, then back up while the load
    // goes on.
    wait_for("20 entries and 6 signatures acknowledged", T, || {
        let entries = posted
            .lock()
            .unwrap()
            .iter()
            .filter(|e| teacher.delivery_state(**e).ok() == Some(DeliveryState::Delivered))
            .count();
        let sigs = signed
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _, sig)| {
                families[*k].device.delivery_state(*sig).ok() == Some(DeliveryState::Delivered)
            })
            .count();
        entries >= 20 && sigs >= 6
    })
    .await?;
    // Back up while the load goes on, noting first exactly what is acknowledged. A backup
    // takes ~20 ms: if no post happened to be under way during it (the posting thread may not
    // get a turn on a loaded machine), take another, up to ten.
    let mut attempt = 0;
    let (acked_entries, acked_sigs, backup_dir, out, started, backup_took, posted_during) = loop {
        let acked_entries: Vec<ItemId> = posted
            .lock()
            .unwrap()
            .iter()
            .copied()
            .filter(|e| teacher.delivery_state(*e).ok() == Some(DeliveryState::Delivered))
            .collect();
        let acked_sigs: Vec<(usize, ItemId)> = signed
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _, sig)| {
                families[*k].device.delivery_state(*sig).ok() == Some(DeliveryState::Delivered)
            })
            .map(|(k, e, _)| (*k, *e))
            .collect();
        let backup_dir = dir.path().join(format!("backup-{attempt}"));
        let started = Instant::now();
        let out = {
            let (data, backup_dir) = (data.clone(), backup_dir.clone());
            tokio::task::spawn_blocking(move || {
                admin(
                    &data,
                    &["admin", "backup", "--to", backup_dir.to_str().unwrap()],
                )
            })
            .await??
        };
        let ended = Instant::now();
        // Posts under way while the backup ran (begun before it ended, saved after it began).
        let posted_during = posted_at
            .lock()
            .unwrap()
            .iter()
            .filter(|(began, saved)| *began < ended && *saved > started)
            .count();
        attempt += 1;
        if posted_during > 0 || attempt == 10 {
            break (
                acked_entries,
                acked_sigs,
                backup_dir,
                out,
                started,
                ended - started,
                posted_during,
            );
        }
    };
    assert!(
        posted_during >= 1,
        "no entry was being posted during any of {attempt} backups: the load had stopped"
    );
    let posted_by_end = posted.lock().unwrap().len();
    // The load did not stop before the backup: an entry posted after the backup started is
    // acknowledged by the relay (the test fails if the load stops; the load stops only
    // after this).
    wait_for("an entry posted after the backup started", T, || {
        posted_at
            .lock()
            .unwrap()
            .iter()
            .any(|(began, _)| *began > started)
    })
    .await?;
    let after_start = || -> Vec<ItemId> {
        let (ids, times) = (posted.lock().unwrap(), posted_at.lock().unwrap());
        ids.iter()
            .zip(times.iter())
            .filter(|(_, (began, _))| *began > started)
            .map(|(id, _)| *id)
            .collect()
    };
    wait_for(
        "an entry posted after the backup started acknowledged",
        T,
        || {
            after_start()
                .iter()
                .any(|e| teacher.delivery_state(*e).ok() == Some(DeliveryState::Delivered))
        },
    )
    .await?;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    posting.await??;
    signing.await??;
    assert!(out.contains("certificate and key included"), "{out}");
    println!(
        "backup under load: {backup_took:?}; {} entries / {} signatures acknowledged before it, \
         {posted_during} entries posted during it (attempt {attempt}), {posted_by_end} by its end",
        acked_entries.len(),
        acked_sigs.len()
    );

    // Restore into a fresh folder and serve it: same certificate, every acknowledged edit.
    let fresh = dir.path().join("restored");
    let out = admin(
        &fresh,
        &["admin", "restore", "--from", backup_dir.to_str().unwrap()],
    )?;
    assert!(out.contains("restored"), "{out}");
    // A second restore into the now-used folder is refused.
    assert!(
        admin(
            &fresh,
            &["admin", "restore", "--from", backup_dir.to_str().unwrap()]
        )
        .is_err()
    );
    let restored = RelayProcess::start(&fresh, "127.0.0.1:0")?;
    assert_eq!(
        restored.fingerprint, relay.fingerprint,
        "certificate restored"
    );
    let json = admin(
        &fresh,
        &[
            "admin",
            "export",
            "--class",
            &class.to_string(),
            "--format",
            "json",
        ],
    )?;
    let export: serde_json::Value = serde_json::from_str(&json)?;
    let entries = export["entries"].as_array().context("entries")?;
    for id in &acked_entries {
        assert!(
            entries.iter().any(|e| e["id"] == id.to_string()),
            "acknowledged entry {id} missing from the restored relay"
        );
    }
    for (k, e) in &acked_sigs {
        let fam = families[*k].id.to_string();
        let state = entries
            .iter()
            .find(|x| x["id"] == e.to_string())
            .map(|x| x["families"][&fam]["status"].clone());
        assert_eq!(
            state,
            Some(serde_json::Value::from("signed")),
            "acknowledged signature of family {k} on {e} missing after restore"
        );
    }

    // A parent syncing with the restored relay sees every acknowledged entry.
    let newcomer = &families[0].device;
    newcomer.stop_sync().await;
    newcomer.start_sync(&rt, target(&restored))?;
    wait_for("parent converges with the restored relay", T, || {
        newcomer.notebook(class).is_ok_and(|v| {
            acked_entries
                .iter()
                .all(|id| v.entries.iter().any(|e| e.id == *id))
        })
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_cli_founds_a_class_through_the_relay_lists_and_exports_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("relay");
    let relay = RelayProcess::start(&data, "127.0.0.1:0")?;
    let addr = relay.addr.to_string();

    let out = admin(
        &data,
        &[
            "admin",
            "init",
            "--school",
            "Riverside Primary",
            "--admin-name",
            "Principal Okafor",
        ],
    )?;
    assert!(out.contains("Riverside Primary"), "{out}");
    let out = admin(
        &data,
        &[
            "admin",
            "create-class",
            "Class 1A",
            "--teacher",
            "Ms Diaz",
            "--relay",
            &addr,
        ],
    )?;
    let class_id = out
        .lines()
        .find_map(|l| l.strip_prefix("class \"Class 1A\" created: "))
        .context("class id printed")?
        .trim()
        .to_string();
    let code = out
        .lines()
        .find_map(|l| l.strip_prefix("invite code: "))
        .context("invite code printed")?
        .trim()
        .to_string();
    assert!(
        out.contains('█') || out.contains('▀'),
        "a QR code is printed:\n{out}"
    );

    // The teacher's phone joins with the printed code and can post.
    let rt = tokio::runtime::Handle::current();
    let teacher = Device::open(&dir.path().join("teacher"))?;
    let class: ClassId = teacher.join(&code, "Ms Diaz")?;
    assert_eq!(class.to_string(), class_id);
    teacher.start_sync(&rt, teacher.relay_target().context("target from the code")?)?;
    wait_for("teacher joined", T, || {
        teacher
            .classes()
            .iter()
            .any(|c| c.id == class && c.membership == Membership::Member)
    })
    .await?;
    let posted = teacher.post_entry(class, &entry("Welcome", Urgency::Green))?;
    wait_for("teacher's entry delivered", T, || {
        teacher.delivery_state(posted.entry).ok() == Some(DeliveryState::Delivered)
    })
    .await?;

    // The relay holds it (read from its store while it runs), with the teacher as a member.
    let list = admin(&data, &["admin", "list-classes", "--json"])?;
    let classes: serde_json::Value = serde_json::from_str(&list)?;
    let c = classes
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == class_id.as_str()))
        .context("class listed")?;
    assert_eq!(c["name"], "Class 1A");
    assert_eq!(c["members"], 2, "admin and teacher");
    let devices = admin(
        &data,
        &["admin", "list-devices", "--class", &class_id, "--json"],
    )?;
    assert!(devices.contains("Principal Okafor"), "{devices}");
    let listed: serde_json::Value = serde_json::from_str(&devices)?;
    let teacher_key = teacher.device_id().to_string();
    let row = listed
        .as_array()
        .and_then(|a| a.iter().find(|d| d["device"] == teacher_key.as_str()))
        .context("teacher's phone listed")?;
    assert_eq!(row["name"], "Ms Diaz");
    assert_eq!(row["revoked_at"], serde_json::Value::Null);

    // Two families: family A's guardian has a phone and signs; family B's never does. The
    // teacher records two phone calls and a home visit with family A.
    let fam_a = teacher.add_family(class, "Family A")?;
    let fam_b = teacher.add_family(class, "Family B")?;
    let parent_a = Device::open(&dir.path().join("parent-a"))?;
    teacher.add_member(
        class,
        "Parent A",
        &[Role::Guardian],
        Some(fam_a),
        Some(parent_a.device_id()),
    )?;
    teacher.add_member(class, "Parent B", &[Role::Guardian], Some(fam_b), None)?;
    let slip = teacher.post_entry(class, &entry("Trip slip", Urgency::Amber))?;
    let lane_a = DocId::new(class, DocKind::Lane(fam_a));
    let now = now_ms();
    for (kind, minutes) in [
        (ContactKind::PhoneCall, 10),
        (ContactKind::PhoneCall, 5),
        (ContactKind::HomeVisit, 45),
    ] {
        teacher.edit(lane_a, |tx, actor, mut ids| {
            record_contact(
                tx,
                actor,
                &mut ids,
                &NewContact {
                    kind,
                    occurred_at: now - 86_400_000,
                    duration_minutes: Some(minutes),
                    notes: "",
                },
            )
        })?;
    }
    parent_a.start_sync(&rt, teacher.relay_target().context("relay target")?)?;
    wait_for("parent A receives the slip", T, || {
        parent_a
            .notebook(class)
            .is_ok_and(|v| v.entries.iter().any(|e| e.id == slip.entry))
    })
    .await?;
    let sig = parent_a.sign(class, slip.entry)?;
    wait_for("signature and contacts acknowledged", T, || {
        parent_a.delivery_state(sig).ok() == Some(DeliveryState::Delivered)
            && teacher.sync_status().pending == 0
    })
    .await?;

    // Export, JSON: every entry with each family's signature state; contacts per family.
    let json = admin(&data, &["admin", "export", "--class", &class_id])?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    assert_eq!(v["name"], "Class 1A");
    let (a, b) = (fam_a.to_string(), fam_b.to_string());
    assert_eq!(v["families"][&a], "Family A");
    let entries = v["entries"].as_array().context("entries")?;
    assert!(entries.iter().any(|e| e["title"] == "Welcome"), "{json}");
    let slip_json = entries
        .iter()
        .find(|e| e["id"] == slip.entry.to_string())
        .context("the slip exported")?;
    assert_eq!(slip_json["title"], "Trip slip");
    assert_eq!(slip_json["families"][&a]["status"], "signed", "{slip_json}");
    assert_eq!(slip_json["families"][&a]["signatures"], 1);
    assert!(slip_json["families"][&a]["last_signed_at"].is_i64());
    assert_eq!(
        slip_json["families"][&b]["status"], "unsigned",
        "{slip_json}"
    );
    assert_eq!(slip_json["families"][&b]["signatures"], 0);
    assert_eq!(
        slip_json["families"][&b]["last_signed_at"],
        serde_json::Value::Null
    );
    let contacts = v["contacts"].as_array().context("contacts")?;
    let contact = |f: &str| {
        contacts
            .iter()
            .find(|c| c["family"] == f)
            .cloned()
            .unwrap_or_default()
    };
    let ca = contact(&a);
    assert_eq!(
        (
            &ca["name"],
            &ca["phone_calls"],
            &ca["home_visits"],
            &ca["meetings"],
            &ca["total"]
        ),
        (
            &"Family A".into(),
            &2.into(),
            &1.into(),
            &0.into(),
            &3.into()
        ),
        "{contacts:?}"
    );
    let cb = contact(&b);
    assert_eq!(cb["total"], 0, "family B had no contact: {contacts:?}");
    assert_eq!(cb["phone_calls"], 0);

    // Export, CSV: one row per (entry, family) with its status, then the contact section.
    let csv = admin(
        &data,
        &["admin", "export", "--class", &class_id, "--format", "csv"],
    )?;
    let (signatures, contact_rows) = csv.split_once("\n\n").context("two CSV sections")?;
    let mut rows = signatures.lines();
    assert_eq!(
        rows.next(),
        Some(
            "entry_id,created_at,kind,urgency,title,signature_requested,family_id,family,\
             status,signatures,read,last_signed_at"
        ),
        "{csv}"
    );
    let row_of = |fam: &str| -> Vec<String> {
        signatures
            .lines()
            .map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>())
            .find(|r| r[0] == slip.entry.to_string() && r[6] == fam)
            .unwrap_or_default()
    };
    let ra = row_of(&a);
    assert_eq!(ra.len(), 12, "{csv}");
    assert_eq!(
        ra[2..6],
        ["homework", "amber", "Trip slip", "true"],
        "{csv}"
    );
    assert_eq!(ra[7..11], ["Family A", "signed", "1", "true"], "{csv}");
    assert!(ra[11].parse::<i64>().is_ok(), "last_signed_at: {csv}");
    let rb = row_of(&b);
    assert_eq!(
        [&rb[7], &rb[8], &rb[9], &rb[11]],
        ["Family B", "unsigned", "0", ""],
        "{csv}"
    );
    let mut contact_lines: Vec<&str> = contact_rows.lines().collect();
    assert_eq!(
        contact_lines.first().copied(),
        Some("family_id,family,home_visits,phone_calls,meetings,total"),
        "{csv}"
    );
    contact_lines.remove(0);
    contact_lines.sort_unstable();
    let mut expected = vec![
        format!("{a},Family A,1,2,0,3"),
        format!("{b},Family B,0,0,0,0"),
    ];
    expected.sort_unstable();
    assert_eq!(contact_lines, expected, "{csv}");

    // Unknown class: a clear error, not a panic.
    let err = admin(
        &data,
        &["admin", "export", "--class", &"0".repeat(class_id.len())],
    )
    .unwrap_err()
    .to_string();
    ensure!(err.contains("is not on this relay"), "{err}");

    // Revoke the teacher's phone: the relay's roster records it.
    admin(
        &data,
        &[
            "admin",
            "revoke",
            "--class",
            &class_id,
            "--device",
            &teacher_key,
            "--relay",
            &addr,
        ],
    )?;
    let devices = admin(
        &data,
        &["admin", "list-devices", "--class", &class_id, "--json"],
    )?;
    let listed: serde_json::Value = serde_json::from_str(&devices)?;
    let row = listed
        .as_array()
        .and_then(|a| a.iter().find(|d| d["device"] == teacher_key.as_str()))
        .context("teacher's phone still listed")?;
    assert!(row["revoked_at"].is_i64(), "revoked: {row}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_endpoints_report_real_traffic() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!("[http]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n"),
    )?;
    let relay = RelayProcess::start_with_args(
        &dir.path().join("relay"),
        "127.0.0.1:0",
        &["--config", config.to_str().unwrap()],
    )?;
    let (status, body) = http_get(port, "/healthz")?;
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    let rt = tokio::runtime::Handle::current();
    let (teacher, class, families) = setup(dir.path(), 1)?;
    teacher.post_entry(class, &entry("Maths", Urgency::Green))?;
    teacher.start_sync(&rt, target(&relay))?;
    wait_for("delivered", T, || teacher.sync_status().pending == 0).await?;

    // A parent signs a change to the notebook, which only staff may write (the device's own
    // check skipped): the relay refuses it and counts the reason.
    let parent = &families[0].device;
    parent.start_sync(&rt, target(&relay))?;
    wait_for("parent receives the entry", T, || {
        parent.notebook(class).is_ok_and(|v| v.entries.len() == 1)
    })
    .await?;
    let rejected = "homeroom_rejected_changes_total{reason=\"NotAWriter\"}";
    let (_, text) = http_get(port, "/metrics")?;
    assert_eq!(
        sample(&text, rejected),
        None,
        "nothing rejected yet: {text}"
    );
    parent.edit_unchecked(DocId::new(class, DocKind::Notebook), |tx, _, _| {
        tx.put(ROOT, "parent-wrote", "overwritten by a parent")?;
        Ok(())
    })?;
    wait_for("the parent's notebook edit rejected", T, || {
        http_get(port, "/metrics")
            .ok()
            .and_then(|(_, t)| sample(&t, rejected))
            .is_some_and(|n| n >= 1.0)
    })
    .await?;

    let (status, text) = http_get(port, "/metrics")?;
    assert_eq!(status, 200);
    assert!(
        sample(&text, "homeroom_changes_persisted_total").unwrap() >= 3.0,
        "{text}"
    );
    assert!(sample(&text, "homeroom_sessions_established_total").unwrap() >= 2.0);
    assert_eq!(
        sample(&text, "homeroom_connections_open"),
        Some(2.0),
        "teacher and parent: {text}"
    );
    assert!(
        sample(&text, "homeroom_documents_open").unwrap() >= 1.0,
        "{text}"
    );
    // The commit (fsync) latency histogram saw real commits that took real time.
    assert!(sample(&text, "homeroom_commit_seconds_count").unwrap() >= 1.0);
    assert!(
        sample(&text, "homeroom_commit_seconds_sum").unwrap() > 0.0,
        "{text}"
    );
    assert!(sample(&text, rejected).unwrap() >= 1.0, "{text}");
    assert_eq!(sample(&text, "homeroom_classes"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "homeroom_up"), Some(1.0));
    assert_eq!(http_get(port, "/nothing")?.0, 404);
    Ok(())
}

/// A webhook receiver: records every request (when, and its body) and the bodies it
/// accepted; answers 503 to the first `fail_first` POSTs of each notification (the same
/// recipient and document), 204 after.
#[derive(Clone, Default)]
struct Hook {
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    requests: Arc<std::sync::atomic::AtomicUsize>,
    log: Arc<Mutex<Vec<(Instant, serde_json::Value)>>>,
}

impl Hook {
    async fn start(fail_first: usize) -> Result<(Hook, u16)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let hook = Hook::default();
        let h = hook.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let h = h.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let body = loop {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).into_owned();
                        if let Some((head, body)) = text.split_once("\r\n\r\n") {
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("Content-Length: "))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if body.len() >= len {
                                break body[..len].to_string();
                            }
                        }
                    };
                    h.requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    let earlier = {
                        let mut log = h.log.lock().unwrap();
                        let earlier = log
                            .iter()
                            .filter(|(_, b)| {
                                b["member"] == body["member"] && b["doc"] == body["doc"]
                            })
                            .count();
                        log.push((Instant::now(), body.clone()));
                        earlier
                    };
                    let reply: &[u8] = if earlier < fail_first {
                        b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"
                    } else {
                        h.bodies.lock().unwrap().push(body);
                        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
                    };
                    let _ = s.write_all(reply).await;
                });
            }
        });
        Ok((hook, port))
    }

    /// A receiver that accepts connections, reads, and never answers; the connections it
    /// accepted (kept open).
    async fn start_silent() -> Result<(Arc<std::sync::atomic::AtomicUsize>, u16)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let a = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(s);
            }
        });
        Ok((accepted, port))
    }

    fn delivered(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().unwrap().clone()
    }
}

fn webhook_relay(dir: &Path, port: u16, extra: &str) -> Result<RelayProcess> {
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        format!("[webhook]\nurl = \"http://127.0.0.1:{port}/notify\"\n{extra}"),
    )?;
    RelayProcess::start_with_args(
        &dir.join("relay"),
        "127.0.0.1:0",
        &["--config", config.to_str().unwrap()],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_notifies_each_recipient_and_retries_with_backoff() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Every notification is refused twice (503) before it is accepted.
    let (hook, port) = Hook::start(2).await?;
    let relay = webhook_relay(dir.path(), port, "")?;
    let rt = tokio::runtime::Handle::current();
    let (teacher, class, families) = setup(dir.path(), 2)?;
    teacher.start_sync(&rt, target(&relay))?;
    for f in &families {
        f.device.start_sync(&rt, target(&relay))?;
    }
    wait_for("roster delivered", T, || teacher.sync_status().pending == 0).await?;
    let before = hook.delivered().len();

    teacher.post_entry(class, &entry("Trip on Friday", Urgency::Green))?;
    // One POST per parent (the first two fail with 503: retried after ~1 s, then ~2 s).
    wait_for("both parents notified", T, || {
        let d = hook.delivered();
        families.iter().all(|f| {
            d[before..].iter().any(|b| {
                b["event"] == "notebook"
                    && b["devices"]
                        .as_array()
                        .is_some_and(|a| a.contains(&f.device.device_id().to_string().into()))
            })
        })
    })
    .await?;
    let d = hook.delivered();
    assert!(
        d[before..]
            .iter()
            .all(|b| b["urgent"] == false && b["class"] == class.to_string())
    );
    assert!(
        d[before..].iter().all(|b| !b["devices"]
            .as_array()
            .unwrap()
            .contains(&teacher.device_id().to_string().into())),
        "the author is not notified of their own entry"
    );
    // Backoff: each parent's notification was POSTed three times, 1 s then 2 s apart.
    for name in ["Parent 0", "Parent 1"] {
        let times: Vec<Instant> = hook
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, b)| b["event"] == "notebook" && b["member_name"] == name)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(times.len(), 3, "{name}: two refusals and a success");
        let (first, second) = (times[1] - times[0], times[2] - times[1]);
        println!("{name}: retried after {first:?}, then {second:?}");
        assert!(
            first >= Duration::from_millis(900) && first < Duration::from_secs(4),
            "{name}: first retry after {first:?}, expected ~1 s"
        );
        assert!(
            second >= Duration::from_millis(1800) && second < Duration::from_secs(6),
            "{name}: second retry after {second:?}, expected ~2 s"
        );
    }

    // A private reply in family 0's lane: the teacher is notified, family 1 is not.
    let entry_id = families[0]
        .device
        .notebook(class)?
        .entries
        .first()
        .map(|e| e.id)
        .context("entry received")?;
    wait_for("lane notifications settle", T, || {
        families.iter().all(|f| f.device.sync_status().pending == 0)
    })
    .await?;
    let before = hook.delivered().len();
    families[0]
        .device
        .reply(class, entry_id, "Can she bring a friend?", false)?;
    let teacher_key = serde_json::Value::from(teacher.device_id().to_string());
    wait_for("teacher notified of the private reply", T, || {
        hook.delivered()[before..].iter().any(|b| {
            b["event"] == "lane" && b["devices"].as_array().unwrap().contains(&teacher_key)
        })
    })
    .await?;
    let other = serde_json::Value::from(families[1].device.device_id().to_string());
    assert!(
        hook.delivered()[before..]
            .iter()
            .all(|b| !b["devices"].as_array().unwrap().contains(&other)),
        "another family is never notified of a family's lane"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_holds_notifications_in_quiet_hours_but_not_urgent_ones() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (hook, port) = Hook::start(0).await?;
    // Quiet hours from an hour ago to an hour from now (UTC).
    let now_min = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        / 60
        % 1440;
    let hhmm = |m: u64| format!("{:02}:{:02}", m / 60, m % 60);
    let window = format!(
        "{}-{}",
        hhmm((now_min + 1380) % 1440),
        hhmm((now_min + 60) % 1440)
    );
    // Parent 1's own window, set by the admin: two to three hours from now.
    let own_window = format!(
        "{}-{}",
        hhmm((now_min + 120) % 1440),
        hhmm((now_min + 180) % 1440)
    );
    // Three families, set up offline. Parent 0 keeps the school's window; Parent 1 has a
    // per-member window that does not cover now; Parent 2 has none at all.
    let (teacher, class, families) = setup(dir.path(), 3)?;
    let member_named = |name: &str| {
        teacher
            .roster(class)
            .ok()
            .and_then(|r| r.members.values().find(|m| m.name == name).map(|m| m.id))
            .context("member")
    };
    let (parent1, parent2) = (member_named("Parent 1")?, member_named("Parent 2")?);
    let relay = webhook_relay(
        dir.path(),
        port,
        &format!(
            "quiet_hours = \"{window}\"\n[webhook.member_quiet_hours]\n\
             \"{parent1}\" = \"{own_window}\"\n\"{parent2}\" = \"\"\n"
        ),
    )?;
    let rt = tokio::runtime::Handle::current();
    teacher.start_sync(&rt, target(&relay))?;
    for f in &families {
        f.device.start_sync(&rt, target(&relay))?;
    }
    let notebook_for = |name: &str| -> Vec<serde_json::Value> {
        hook.delivered()
            .into_iter()
            .filter(|b| b["event"] == "notebook" && b["member_name"] == name)
            .collect()
    };

    // A green entry in the school's quiet hours: every parent receives it; Parent 1 (own
    // window, not now) and Parent 2 (none) are notified at once, Parent 0 is held.
    teacher.post_entry(class, &entry("Reading", Urgency::Green))?;
    for f in &families {
        wait_for("parent receives the entry", T, || {
            f.device.notebook(class).is_ok_and(|v| v.entries.len() == 1)
        })
        .await?;
    }
    wait_for("Parents 1 and 2 notified at once", T, || {
        !notebook_for("Parent 1").is_empty() && !notebook_for("Parent 2").is_empty()
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        hook.delivered()
            .iter()
            .all(|b| b["member_name"] != "Parent 0"),
        "Parent 0 is held in quiet hours: {:?}",
        hook.delivered()
    );

    // A red entry overrides quiet hours at once, and carries the held notification with it.
    teacher.post_entry(class, &entry("School closed tomorrow", Urgency::Red))?;
    wait_for("urgent notification sent in quiet hours", T, || {
        notebook_for("Parent 0").iter().any(|b| b["urgent"] == true)
    })
    .await?;
    let d = notebook_for("Parent 0");
    assert_eq!(
        d.len(),
        1,
        "the held notification was merged into the urgent one: {d:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_notifies_the_family_when_its_booking_is_decided() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (hook, port) = Hook::start(0).await?;
    let relay = webhook_relay(dir.path(), port, "")?;
    let rt = tokio::runtime::Handle::current();
    let (teacher, class, families) = setup(dir.path(), 2)?;
    let notebook = DocId::new(class, DocKind::Notebook);
    let (fam, parent) = (families[0].id, &families[0].device);
    let lane = DocId::new(class, DocKind::Lane(fam));

    // The teacher offers a conference with one 15-minute slot tomorrow.
    let day = 86_400_000;
    let start = now_ms() + day;
    let ((event, slots), _) = teacher.edit(notebook, |tx, actor, mut ids| {
        events::create_event(
            tx,
            actor,
            &mut ids,
            &NewEvent {
                kind: EventKind::Conference,
                title: "Conferences",
                location: "Room 3",
                starts_at: start,
                ends_at: start + 3_600_000,
                waitlist: true,
            },
            &[SlotSpec {
                start,
                end: start + 900_000,
                capacity: 1,
            }],
        )
    })?;
    teacher.start_sync(&rt, target(&relay))?;
    for f in &families {
        f.device.start_sync(&rt, target(&relay))?;
    }
    wait_for("parent sees the event", T, || {
        parent
            .read(notebook, events::read_events)
            .is_ok_and(|e| e.iter().any(|e| e.id == event))
    })
    .await?;

    // Family 0 asks for the slot: the teacher is notified of the lane change.
    let before = hook.delivered().len();
    let (request, _) = parent.edit_reading(lane, notebook, |tx, nb, actor, mut ids| {
        events::request_booking(tx, actor, nb, &mut ids, fam, event, slots[0], None, "")
    })?;
    wait_for("teacher notified of the request", T, || {
        hook.delivered()[before..]
            .iter()
            .any(|b| b["event"] == "lane" && b["member_name"] == "Ms Li")
    })
    .await?;
    wait_for("teacher holds the request", T, || {
        let Ok(nb) = teacher.read(notebook, |nb, _| Ok(nb.clone())) else {
            return false;
        };
        teacher
            .read(lane, |lane, roster| {
                events::family_bookings(&nb, lane, roster, fam)
            })
            .is_ok_and(|b| b.iter().any(|b| b.request == request))
    })
    .await?;
    wait_for("lane notifications settle", T, || {
        families.iter().all(|f| f.device.sync_status().pending == 0)
    })
    .await?;

    // The teacher (registrar) decides: the requesting family's guardian gets a POST.
    let before = hook.delivered().len();
    let (decided, _) = teacher.edit_reading(notebook, lane, |tx, lane, actor, mut ids| {
        events::decide_bookings(tx, actor, &mut ids, &[(fam, lane)])
    })?;
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0].outcome, events::Outcome::Confirmed);
    wait_for("the family notified of the decision", T, || {
        hook.delivered()[before..]
            .iter()
            .any(|b| b["event"] == "notebook" && b["member_name"] == "Parent 0")
    })
    .await?;
    let parent_key = serde_json::Value::from(parent.device_id().to_string());
    let posted: Vec<serde_json::Value> = hook.delivered()[before..]
        .iter()
        .filter(|b| b["member_name"] == "Parent 0")
        .cloned()
        .collect();
    assert!(
        posted.iter().all(|b| b["devices"]
            .as_array()
            .is_some_and(|d| d.contains(&parent_key))
            && b["class"] == class.to_string()
            && b["doc"] == notebook.to_string()),
        "{posted:?}"
    );
    assert!(
        hook.delivered()[before..]
            .iter()
            .all(|b| b["member_name"] != "Ms Li"),
        "the registrar is not notified of their own decision"
    );
    // And the phone that was pinged finds the booking confirmed when it syncs.
    wait_for("the family sees its booking confirmed", T, || {
        let Ok(nb) = parent.read(notebook, |nb, _| Ok(nb.clone())) else {
            return false;
        };
        parent
            .read(lane, |lane, roster| {
                events::family_bookings(&nb, lane, roster, fam)
            })
            .is_ok_and(|b| {
                b.iter()
                    .any(|b| b.request == request && b.status == events::BookingStatus::Confirmed)
            })
    })
    .await?;
    // A decision is news for the family that asked, not for the whole class: the other
    // family is not pinged (it was, before: every member got a notebook POST).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let others: Vec<serde_json::Value> = hook.delivered()[before..]
        .iter()
        .filter(|b| b["member_name"] == "Parent 1")
        .cloned()
        .collect();
    assert!(
        others.is_empty(),
        "another family was notified of the decision: {others:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_notifies_the_principal_and_co_guardians_of_a_mailbox_message() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (hook, port) = Hook::start(0).await?;
    let relay = webhook_relay(dir.path(), port, "")?;
    let rt = tokio::runtime::Handle::current();
    let (teacher, class, families) = setup(dir.path(), 2)?;
    // Family 0 has a second guardian; the school has a principal (admin). Their phones are
    // enrolled but offline: a notification is for the phones that are not syncing.
    let co_guardian = Device::open(&dir.path().join("co-guardian"))?;
    teacher.add_member(
        class,
        "Co-guardian 0",
        &[Role::Guardian],
        Some(families[0].id),
        Some(co_guardian.device_id()),
    )?;
    let principal = Device::open(&dir.path().join("principal"))?;
    teacher.add_member(
        class,
        "Principal",
        &[Role::Admin],
        None,
        Some(principal.device_id()),
    )?;
    teacher.start_sync(&rt, target(&relay))?;
    for f in &families {
        f.device.start_sync(&rt, target(&relay))?;
    }
    wait_for("roster delivered", T, || teacher.sync_status().pending == 0).await?;
    let parent = &families[0].device;
    wait_for("parent holds the roster", T, || {
        parent
            .roster(class)
            .is_ok_and(|r| r.members.values().any(|m| m.name == "Principal"))
    })
    .await?;

    let before = hook.delivered().len();
    let mailbox = DocId::new(class, DocKind::Mailbox(families[0].id));
    let fam = families[0].id;
    parent.edit(mailbox, |tx, actor, mut ids| {
        send_to_mailbox(tx, actor, &mut ids, fam, "May we talk about the bus route?")
    })?;
    wait_for("principal and co-guardian notified", T, || {
        let d = &hook.delivered()[before..];
        ["Principal", "Co-guardian 0"].iter().all(|name| {
            d.iter()
                .any(|b| b["event"] == "mailbox" && b["member_name"] == *name)
        })
    })
    .await?;
    // Give any wrong POST time to arrive, then check who got one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = hook.delivered()[before..].to_vec();
    let principal_key = serde_json::Value::from(principal.device_id().to_string());
    assert!(
        d.iter().any(|b| b["member_name"] == "Principal"
            && b["devices"] == serde_json::Value::Array(vec![principal_key.clone()])
            && b["doc"] == mailbox.to_string()
            && b["urgent"] == false),
        "{d:?}"
    );
    let mut named: Vec<&str> = d.iter().filter_map(|b| b["member_name"].as_str()).collect();
    named.sort_unstable();
    named.dedup();
    assert_eq!(
        named,
        ["Co-guardian 0", "Principal"],
        "only the principal and the family's other guardian: not the sender, the class \
         teacher (who may not read the mailbox) or another family: {d:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_never_answers_does_not_block_sync() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (accepted, port) = Hook::start_silent().await?;
    let http = free_port()?;
    // One queued notification at most; each POST waits five minutes for an answer.
    let relay = webhook_relay(
        dir.path(),
        port,
        &format!(
            "queue = 1\ntimeout_secs = 300\n[http]\nenabled = true\nlisten = \"127.0.0.1:{http}\"\n"
        ),
    )?;
    let rt = tokio::runtime::Handle::current();
    let (teacher, class, families) = setup(dir.path(), 2)?;
    teacher.start_sync(&rt, target(&relay))?;
    for f in &families {
        f.device.start_sync(&rt, target(&relay))?;
    }
    wait_for("roster delivered", T, || teacher.sync_status().pending == 0).await?;

    let started = Instant::now();
    let mut posted = Vec::new();
    for i in 0..20 {
        posted.push(
            teacher
                .post_entry(class, &entry(&format!("Entry {i}"), Urgency::Green))?
                .entry,
        );
    }
    let limit = Duration::from_secs(30);
    wait_for("all 20 entries delivered", limit, || {
        posted
            .iter()
            .all(|e| teacher.delivery_state(*e).ok() == Some(DeliveryState::Delivered))
    })
    .await?;
    for f in &families {
        wait_for("parent receives all 20", limit, || {
            f.device
                .notebook(class)
                .is_ok_and(|v| v.entries.len() == 20)
        })
        .await?;
    }
    let took = started.elapsed();
    println!("20 entries delivered and received in {took:?} with a stuck webhook");
    assert!(
        took < limit,
        "sync waited for the webhook: {took:?} for 20 entries"
    );
    assert!(
        accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the relay did try the webhook"
    );
    let (_, text) = http_get(http, "/metrics")?;
    let dropped = sample(
        &text,
        "homeroom_webhook_deliveries_total{outcome=\"dropped\"}",
    )
    .unwrap_or(0.0);
    assert!(dropped >= 1.0, "a full queue drops, counted: {text}");
    assert_eq!(
        sample(&text, "homeroom_webhook_deliveries_total{outcome=\"sent\"}"),
        Some(0.0),
        "{text}"
    );
    Ok(())
}
