//! What the notification webhook costs the hub per document change: `Notifier::document_changed`
//! (recipients from the roster, urgency from the entries the newest change wrote to, a
//! `try_send` per recipient) on a class of 30 families, for a notebook of 100 and 1,000
//! entries, and for a family lane.
//!
//! `cargo bench -p homeroom-relay --bench webhook` (full) or with `HOMEROOM_BENCH_QUICK=1`
//! (smoke run: 50 entries, few samples). Prints medians.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use homeroom_client::Device;
use homeroom_client::core::entries::{Audience, EntryKind, NewEntry, Urgency};
use homeroom_client::core::roster::Role;
use homeroom_client::core::{DocId, DocKind};
use homeroom_relay::RelayConfig;
use homeroom_relay::webhook::Notifier;

fn main() -> Result<()> {
    let quick = std::env::var("HOMEROOM_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let sizes: &[usize] = if quick { &[50] } else { &[100, 1000] };
    let samples = if quick { 5 } else { 201 };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Deliveries go to a closed port (refused at once) and wait out their backoff: the queue
    // only has to take what the hub hands it.
    let config = RelayConfig::from_toml(
        "[webhook]\nurl = \"http://127.0.0.1:9/\"\nqueue = 10000000\n",
        Path::new("bench.toml"),
    )?;
    let settings = config.into_settings()?.webhook.expect("webhook configured");
    let notifier = rt.block_on(async { Notifier::spawn(settings) });

    for &n in sizes {
        let dir = tempfile::tempdir()?;
        let teacher = Device::open(dir.path())?;
        let class = teacher.create_class("Class 3B", "Ms Li")?;
        for i in 0..30 {
            let fam = teacher.add_family(class, &format!("Family {i}"))?;
            let parent = Device::open(&dir.path().join(format!("p{i}")))?;
            teacher.add_member(
                class,
                &format!("Parent {i}"),
                &[Role::Guardian],
                Some(fam),
                Some(parent.device_id()),
            )?;
        }
        let built = Instant::now();
        for i in 0..n {
            let title = format!("Entry {i}");
            teacher.post_entry(
                class,
                &NewEntry {
                    kind: EntryKind::Homework,
                    urgency: if i % 10 == 0 {
                        Urgency::Red
                    } else {
                        Urgency::Green
                    },
                    audience: Audience::WholeClass,
                    title: &title,
                    text: "Page 12, exercises 1-4",
                    signature_requested: true,
                    consent: None,
                },
            )?;
        }
        let doc = DocId::new(class, DocKind::Notebook);
        let mut times: Vec<Duration> = Vec::with_capacity(samples);
        let sender = Some(teacher.device_id());
        for _ in 0..samples {
            let t = teacher.read(doc, |am, roster| {
                let start = Instant::now();
                notifier.document_changed(roster, doc, Some(am), sender, 0);
                Ok(start.elapsed())
            })?;
            times.push(t);
        }
        times.sort();
        let median = times[times.len() / 2];
        // A family's lane (a parent's reply or signature): recipients only, no entry scan.
        let roster = teacher.roster(class)?;
        let fam = *roster.families.keys().next().expect("a family");
        let lane = DocId::new(class, DocKind::Lane(fam));
        let mut lane_times: Vec<Duration> = (0..samples)
            .map(|_| {
                let start = Instant::now();
                notifier.document_changed(&roster, lane, None, None, 0);
                start.elapsed()
            })
            .collect();
        lane_times.sort();
        println!(
            "webhook document_changed, a family lane, 30 families: median {:.3} ms over {samples} \
             calls",
            lane_times[lane_times.len() / 2].as_secs_f64() * 1e3
        );
        println!(
            "webhook document_changed, notebook of {n} entries, 30 families: median {:.3} ms \
             over {samples} calls (min {:.3} ms, max {:.3} ms; notebook built in {:.1} s)",
            median.as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3,
            built.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
