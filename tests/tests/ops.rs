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
use homeroom_client::core::entries::{Audience, EntryKind, NewEntry, Urgency};
use homeroom_client::core::roster::Role;
use homeroom_client::core::{ClassId, FamilyId, ItemId};
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

/// The value of an unlabelled sample in a Prometheus text exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
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

    // Load: the teacher posts and the families sign, continuously, until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let posted: Arc<Mutex<Vec<ItemId>>> = Arc::default();
    let signed: Arc<Mutex<Vec<(usize, ItemId, ItemId)>>> = Arc::default();
    let load = {
        let (stop, posted, signed) = (stop.clone(), posted.clone(), signed.clone());
        let teacher = teacher.clone();
        let fams: Vec<Device> = families.iter().map(|f| f.device.clone()).collect();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let title = format!("Entry {i}");
                let p = teacher.post_entry(class, &entry(&title, Urgency::Green))?;
                posted.lock().unwrap().push(p.entry);
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
                i += 1;
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
    let backup_dir = dir.path().join("backup");
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
    let backup_took = started.elapsed();
    let posted_during = posted.lock().unwrap().len();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    load.await??;
    assert!(out.contains("certificate and key included"), "{out}");
    println!(
        "backup under load: {backup_took:?}; {} entries / {} signatures acknowledged before it, \
         {posted_during} entries posted by its end",
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

    // Export: JSON and CSV, with the teacher's entry.
    let json = admin(&data, &["admin", "export", "--class", &class_id])?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    assert_eq!(v["name"], "Class 1A");
    assert_eq!(v["entries"][0]["title"], "Welcome");
    let csv = admin(
        &data,
        &["admin", "export", "--class", &class_id, "--format", "csv"],
    )?;
    assert!(csv.starts_with("entry_id,created_at,kind"), "{csv}");

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
    let (teacher, class, _families) = setup(dir.path(), 1)?;
    teacher.post_entry(class, &entry("Maths", Urgency::Green))?;
    teacher.start_sync(&rt, target(&relay))?;
    wait_for("delivered", T, || teacher.sync_status().pending == 0).await?;

    let (status, text) = http_get(port, "/metrics")?;
    assert_eq!(status, 200);
    assert!(
        sample(&text, "homeroom_changes_persisted_total").unwrap() >= 3.0,
        "{text}"
    );
    assert!(sample(&text, "homeroom_sessions_established_total").unwrap() >= 1.0);
    assert_eq!(
        sample(&text, "homeroom_connections_open"),
        Some(1.0),
        "{text}"
    );
    assert!(sample(&text, "homeroom_commit_seconds_count").unwrap() >= 1.0);
    assert_eq!(sample(&text, "homeroom_classes"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "homeroom_up"), Some(1.0));
    assert_eq!(http_get(port, "/nothing")?.0, 404);
    Ok(())
}

/// A webhook receiver: records every request body; answers 503 to the first `fail_first`.
#[derive(Clone, Default)]
struct Hook {
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    requests: Arc<std::sync::atomic::AtomicUsize>,
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
                    let n = h.requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let reply: &[u8] = if n < fail_first {
                        b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"
                    } else {
                        h.bodies
                            .lock()
                            .unwrap()
                            .push(serde_json::from_str(&body).unwrap_or_default());
                        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
                    };
                    let _ = s.write_all(reply).await;
                });
            }
        });
        Ok((hook, port))
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
    let (hook, port) = Hook::start(1).await?;
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
    // One POST per parent (the first one fails with 503 and is retried after ~1 s).
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
    assert!(
        hook.requests.load(std::sync::atomic::Ordering::SeqCst) > d.len(),
        "the refused POST was retried"
    );

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
    // Two families, set up offline; Parent 1 has a per-member override: no quiet hours.
    let (teacher, class, families) = setup(dir.path(), 2)?;
    let parent1 = teacher
        .roster(class)?
        .members
        .values()
        .find(|m| m.name == "Parent 1")
        .map(|m| m.id)
        .context("Parent 1")?;
    let relay = webhook_relay(
        dir.path(),
        port,
        &format!(
            "quiet_hours = \"{window}\"\n[webhook.member_quiet_hours]\n\"{parent1}\" = \"\"\n"
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

    // A green entry in quiet hours: both parents receive it; only Parent 1 (no quiet hours)
    // is notified.
    teacher.post_entry(class, &entry("Reading", Urgency::Green))?;
    for f in &families {
        wait_for("parent receives the entry", T, || {
            f.device.notebook(class).is_ok_and(|v| v.entries.len() == 1)
        })
        .await?;
    }
    wait_for("Parent 1 notified at once", T, || {
        !notebook_for("Parent 1").is_empty()
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
