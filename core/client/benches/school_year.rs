//! A school year for one class, measured on a real device store.
//!
//! Builds 1,000 entries, 30 families each signing every entry, 2,000 replies, 10 events with
//! slots and 5 surveys answered by every family, writes it into a teacher's and a parent's
//! SQLite store, then measures — each in a fresh child process, so peak memory is that of the
//! operation alone:
//! - open the teacher's device and build the full notebook view, with the view cache warm
//!   (the normal app start) and cold (first start after any change);
//! - peak RSS of each;
//! - a parent signing one entry, including the durable (fsynced) write.
//!
//! `cargo bench -p homeroom-client --bench school_year` (full year);
//! `HOMEROOM_BENCH_QUICK=1` for a small year (used by the test command as a smoke run).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use homeroom_client::Device;
use homeroom_core::automerge::ActorId;
use homeroom_core::entries::{self, Audience, EntryKind, NewEntry, ReplyScope, Urgency};
use homeroom_core::events::{self, EventKind, NewEvent, SlotSpec};
use homeroom_core::roster::{self, Role};
use homeroom_core::surveys::{self, Answer, NewQuestion, NewSurvey, QuestionSpec};
use homeroom_core::{
    Actor, ClassId, DeviceKey, DocId, DocKind, FamilyId, ItemId, MemberId, SeededIds, SignedChange,
};
use homeroom_store::{NodeIdentity, Store, WriteBatch};
use homeroom_sync::{Limits, MemorySource, Replica, SyncNode, WriteKind, materialize};

struct Year {
    families: usize,
    entries: usize,
    replies: usize,
    events: usize,
    surveys: usize,
}

fn drain(node: &mut SyncNode, out: &mut Vec<(DocId, SignedChange)>) {
    while let Some(w) = node.poll_write() {
        if let WriteKind::Changes { changes, .. } = &w.kind {
            out.extend(changes.iter().cloned());
        }
        node.handle_write_done(w.id);
    }
    while node.poll_event().is_some() {}
}

fn source_with(all: &[(DocId, SignedChange)], keep: impl Fn(&DocId) -> bool) -> MemorySource {
    let mut s = MemorySource::default();
    for (d, c) in all {
        if keep(d) {
            s.docs.entry(*d).or_default().push(c.clone());
        }
    }
    s
}

fn write_store(
    path: &Path,
    secret: [u8; 32],
    all: &[(DocId, SignedChange)],
    keep: impl Fn(&DocId) -> bool,
) -> u64 {
    let _ = std::fs::remove_file(path);
    let mut store = Store::open(path).unwrap();
    store
        .set_identity(&NodeIdentity {
            secret,
            actor_suffix: [1; 8],
        })
        .unwrap();
    let mine: Vec<&(DocId, SignedChange)> = all.iter().filter(|(d, _)| keep(d)).collect();
    let mut by_doc: HashMap<DocId, Vec<SignedChange>> = HashMap::new();
    for (d, c) in &mine {
        by_doc.entry(*d).or_default().push(c.clone());
    }
    for chunk in mine.chunks(5000) {
        let mut b = WriteBatch::new();
        for (d, c) in chunk {
            b.put_change(*d, c.clone());
        }
        store.write(&b).unwrap();
    }
    // Cached heads (what the catalog and the view cache read), and everything delivered: the
    // steady state of a device in the middle of the year.
    for (doc, changes) in by_doc {
        let src = source_with(all, |d| *d == doc);
        let stored = homeroom_sync::StoredDocument {
            snapshot: None,
            changes: src.docs.get(&doc).cloned().unwrap_or_default(),
            signatures: HashMap::new(),
        };
        let am = materialize(&doc, ActorId::from(vec![9u8; 8]), &stored).unwrap();
        let heads = am.get_heads();
        store.set_heads(&doc, &heads).unwrap();
        store.mark_delivered(&doc, &heads).unwrap();
        // Compact big documents as a device does periodically.
        if changes.len() > 200 {
            store.save_snapshot(&doc, &am.save(), &heads).unwrap();
        }
    }
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn build(dir: &Path, y: &Year) -> (ClassId, Vec<ItemId>) {
    let t0 = Instant::now();
    let now = 1_760_000_000_000i64;
    let mut ids = SeededIds::new(42);
    let teacher_secret = [1u8; 32];
    let teacher_key = DeviceKey::from_secret(teacher_secret);
    let teacher_dev = teacher_key.device_id();
    let mut teacher = SyncNode::new(
        Replica::device(
            teacher_key,
            [1; 8],
            Box::new(MemorySource::default()),
            Limits::default(),
        )
        .unwrap(),
    );
    let mut all = Vec::new();
    let class = teacher
        .found_class([7; 16], "Class 3B", MemberId([1; 8]), "Ms Li", now)
        .unwrap();
    let roster_id = DocId::new(class, DocKind::Roster);
    let notebook = DocId::new(class, DocKind::Notebook);
    let mut fams: Vec<(FamilyId, [u8; 32])> = Vec::new();
    for i in 0..y.families {
        let fam = FamilyId((i as u64 + 1).to_le_bytes());
        let mut secret = [0u8; 32];
        secret[..8].copy_from_slice(&(i as u64 + 100).to_le_bytes());
        let dev = DeviceKey::from_secret(secret).device_id();
        teacher
            .edit(&roster_id, now, |tx, _, _| {
                roster::add_family(tx, fam, &format!("Family {i}"))?;
                let m = MemberId((i as u64 + 1000).to_le_bytes());
                roster::add_member(tx, m, &format!("Parent {i}"), &[Role::Guardian], Some(fam))?;
                roster::add_device(tx, dev, m, now)
            })
            .unwrap();
        fams.push((fam, secret));
    }
    let mut entry_ids = Vec::new();
    for i in 0..y.entries {
        let t = now + i as i64 * 60_000;
        let (posted, _) = teacher
            .edit(&notebook, t, |tx, roster, device| {
                let actor = Actor::new(roster, device, t);
                entries::post_entry(
                    tx,
                    &actor,
                    &mut ids,
                    &NewEntry {
                        kind: if i % 3 == 0 {
                            EntryKind::Homework
                        } else {
                            EntryKind::DailyNote
                        },
                        urgency: Urgency::Green,
                        audience: Audience::WholeClass,
                        title: "Today",
                        text: "Maths: page 12, exercises 1 to 4. Reading: chapter 3. Bring a coat.",
                        signature_requested: true,
                        consent: None,
                    },
                )
            })
            .unwrap();
        entry_ids.push(posted.entry);
    }
    let mut event_ids = Vec::new();
    for i in 0..y.events {
        let start = now + (i as i64 + 1) * 86_400_000;
        let (ev, _) = teacher
            .edit(&notebook, now, |tx, roster, device| {
                let actor = Actor::new(roster, device, now);
                let slots: Vec<SlotSpec> = (0..6)
                    .map(|k| SlotSpec {
                        start: start + k * 900_000,
                        end: start + (k + 1) * 900_000,
                        capacity: 1,
                    })
                    .collect();
                events::create_event(
                    tx,
                    &actor,
                    &mut ids,
                    &NewEvent {
                        kind: EventKind::Conference,
                        title: "Parent-teacher conference",
                        location: "Room 3",
                        starts_at: start,
                        ends_at: start + 6 * 900_000,
                        waitlist: true,
                    },
                    &slots,
                )
            })
            .unwrap();
        event_ids.push(ev);
    }
    let mut survey_ids = Vec::new();
    for _ in 0..y.surveys {
        let ((s, qs), _) = teacher
            .edit(&notebook, now, |tx, roster, device| {
                let actor = Actor::new(roster, device, now);
                let q = [
                    NewQuestion {
                        prompt: "How clear was the homework?",
                        spec: QuestionSpec::Rating { max: 5 },
                    },
                    NewQuestion {
                        prompt: "Workload",
                        spec: QuestionSpec::Rating { max: 5 },
                    },
                    NewQuestion {
                        prompt: "Comments",
                        spec: QuestionSpec::Text,
                    },
                ];
                surveys::create_survey(
                    tx,
                    &actor,
                    &mut ids,
                    &NewSurvey {
                        title: "Term feedback",
                        anonymous: false,
                        opens_at: now,
                        closes_at: now + 400 * 86_400_000,
                        grace_ms: 86_400_000,
                        questions: &q,
                    },
                )
            })
            .unwrap();
        survey_ids.push((s, qs));
    }
    drain(&mut teacher, &mut all);

    let replies_per_family = y.replies / y.families.max(1);
    for (n, (fam, secret)) in fams.iter().enumerate() {
        let shared = source_with(&all, |d| {
            d.kind == DocKind::Roster || d.kind == DocKind::Notebook
        });
        let mut p = SyncNode::new(
            Replica::device(
                DeviceKey::from_secret(*secret),
                [2; 8],
                Box::new(shared),
                Limits::default(),
            )
            .unwrap(),
        );
        let lane = DocId::new(class, DocKind::Lane(*fam));
        let board = DocId::new(class, DocKind::Board(*fam));
        let mut pids = SeededIds::new(1000 + n as u64);
        for (i, e) in entry_ids.iter().enumerate() {
            let t = now + i as i64 * 60_000 + 3_600_000;
            p.edit_reading(&lane, &notebook, t, |tx, nb, roster, device| {
                let actor = Actor::new(roster, device, t);
                let rev = entries::read_entry(nb, *e)?
                    .latest()
                    .map(|r| r.id)
                    .unwrap_or(*e);
                entries::sign_entry(tx, &actor, &mut pids, nb, *e, rev, None)
            })
            .unwrap();
        }
        for i in 0..replies_per_family {
            let e = entry_ids[(i * 7 + n) % entry_ids.len()];
            p.edit_reading(&board, &notebook, now, |tx, nb, roster, device| {
                let actor = Actor::new(roster, device, now);
                entries::post_reply(
                    tx,
                    &actor,
                    &mut pids,
                    nb,
                    ReplyScope::Public,
                    e,
                    "Thank you, noted!",
                )
            })
            .unwrap();
        }
        for (s, qs) in &survey_ids {
            for q in qs {
                p.edit_reading(&lane, &notebook, now, |tx, nb, roster, device| {
                    let actor = Actor::new(roster, device, now);
                    let a = if qs.last() == Some(q) {
                        Answer::Text("Fine".into())
                    } else {
                        Answer::Rating(4)
                    };
                    surveys::answer(tx, &actor, nb, *fam, *s, *q, &a).map(|_| ())
                })
                .unwrap();
            }
        }
        drain(&mut p, &mut all);
    }
    eprintln!(
        "generated {} changes in {:.1} s",
        all.len(),
        t0.elapsed().as_secs_f64()
    );

    // Saved sizes of each kind of document (Automerge's compressed save).
    let size = |doc: DocId| -> usize {
        let src = source_with(&all, |d| *d == doc);
        let stored = homeroom_sync::StoredDocument {
            snapshot: None,
            changes: src.docs.get(&doc).cloned().unwrap_or_default(),
            signatures: HashMap::new(),
        };
        materialize(&doc, ActorId::from(vec![9u8; 8]), &stored)
            .unwrap()
            .save()
            .len()
    };
    let f0 = fams[0].0;
    println!("saved document sizes (bytes, Automerge save):");
    println!("  roster            {:>10}", size(roster_id));
    println!("  notebook          {:>10}", size(notebook));
    println!(
        "  one family lane   {:>10}",
        size(DocId::new(class, DocKind::Lane(f0)))
    );
    println!(
        "  one family board  {:>10}",
        size(DocId::new(class, DocKind::Board(f0)))
    );

    let teacher_dir = dir.join("teacher");
    std::fs::create_dir_all(&teacher_dir).unwrap();
    let t_size = write_store(
        &teacher_dir.join("device.sqlite3"),
        teacher_secret,
        &all,
        |_| true,
    );
    let parent_dir = dir.join("parent0");
    std::fs::create_dir_all(&parent_dir).unwrap();
    let p_size = write_store(&parent_dir.join("device.sqlite3"), fams[0].1, &all, |d| {
        matches!(
            d.kind,
            DocKind::Roster | DocKind::Notebook | DocKind::Board(_)
        ) || d.kind == DocKind::Lane(f0)
    });
    println!(
        "store files: teacher {:.1} MiB, parent {:.1} MiB",
        t_size as f64 / 1048576.0,
        p_size as f64 / 1048576.0
    );
    let _ = teacher_dev;
    (class, entry_ids)
}

fn vm_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Child: open the device and build the view once; print `ms rss_start_kib peak_kib entries`.
fn measure_open(dir: &Path, class: ClassId, cold: bool) {
    if cold {
        let mut s = Store::open(&dir.join("device.sqlite3")).unwrap();
        s.delete_meta(&format!("view/{class}")).unwrap();
    }
    let rss0 = vm_kib("VmRSS:");
    let t = Instant::now();
    let dev = Device::open(dir).unwrap();
    let view = dev.notebook(class).unwrap();
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    println!("{ms:.2} {rss0} {} {}", vm_kib("VmHWM:"), view.entries.len());
}

/// Child: a parent signs `n` entries, each durable on return; print each latency in ms.
fn measure_sign(dir: &Path, class: ClassId, entries: &[ItemId]) {
    let dev = Device::open(dir).unwrap();
    let _ = dev.notebook(class).unwrap();
    let mut out = Vec::new();
    for e in entries {
        let t = Instant::now();
        dev.sign(class, *e).unwrap();
        out.push(format!("{:.3}", t.elapsed().as_secs_f64() * 1000.0));
    }
    println!("{}", out.join(" "));
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn child(args: &[String]) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--measure-open") {
        measure_open(
            Path::new(&args[1]),
            args[2].parse().unwrap(),
            args[3] == "cold",
        );
        return;
    }
    if args.first().map(String::as_str) == Some("--measure-sign") {
        let ids: Vec<ItemId> = args[3..].iter().map(|s| s.parse().unwrap()).collect();
        measure_sign(Path::new(&args[1]), args[2].parse().unwrap(), &ids);
        return;
    }
    let quick = std::env::var_os("HOMEROOM_BENCH_QUICK").is_some();
    let y = if quick {
        Year {
            families: 5,
            entries: 60,
            replies: 20,
            events: 2,
            surveys: 1,
        }
    } else {
        Year {
            families: 30,
            entries: 1000,
            replies: 2000,
            events: 10,
            surveys: 5,
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().to_path_buf();
    println!(
        "school year: {} entries, {} families signing each, {} replies, {} events, {} surveys",
        y.entries, y.families, y.replies, y.events, y.surveys
    );
    let (class, entries) = build(&dir, &y);
    let teacher = dir.join("teacher");
    let runs = if quick { 2 } else { 7 };
    for (label, cold) in [
        ("cold view cache (first start after a change)", true),
        ("warm view cache (normal start)", false),
    ] {
        if !cold {
            // Populate the cache once.
            child(&[
                "--measure-open".into(),
                teacher.display().to_string(),
                class.to_string(),
                "warm".into(),
            ]);
        }
        let mut ms = Vec::new();
        let mut peak = Vec::new();
        let mut n = 0;
        for _ in 0..runs {
            let line = child(&[
                "--measure-open".into(),
                teacher.display().to_string(),
                class.to_string(),
                if cold { "cold".into() } else { "warm".into() },
            ]);
            let f: Vec<&str> = line.split_whitespace().collect();
            ms.push(f[0].parse::<f64>().unwrap());
            let start: f64 = f[1].parse().unwrap();
            let hwm: f64 = f[2].parse().unwrap();
            peak.push((hwm - start) / 1024.0);
            n = f[3].parse().unwrap();
        }
        println!(
            "open + full notebook view, {label}: median {:.1} ms (min {:.1}), peak memory +{:.1} MiB over process start, {n} entries [{runs} runs]",
            median(&mut ms.clone()),
            ms.iter().cloned().fold(f64::MAX, f64::min),
            median(&mut peak)
        );
    }
    let sample: Vec<String> = entries
        .iter()
        .step_by((entries.len() / 21).max(1))
        .take(21)
        .map(|e| e.to_string())
        .collect();
    let mut args = vec![
        "--measure-sign".into(),
        dir.join("parent0").display().to_string(),
        class.to_string(),
    ];
    args.extend(sample);
    let line = child(&args);
    let mut lat: Vec<f64> = line
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    let n = lat.len();
    println!(
        "sign one entry incl. durable write (parent device): median {:.2} ms over {n} signs",
        median(&mut lat)
    );
}
