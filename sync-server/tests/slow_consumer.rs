//! A device that stops reading is disconnected; the relay's memory for it stays bounded and
//! everyone else is served.

mod support;

use std::time::Duration;

use homeroom_core::roster::{self, Role};
use homeroom_core::{DeviceKey, DocId, DocKind, FamilyId, MemberId};
use homeroom_protocol::Message;
use support::Relay;
use support::device::{Device, device_node, now_ms};

const STEP: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_stops_reading_is_closed_as_too_slow() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, "outbound_queue = 16\n")?;
    let relay = Relay::start(
        &dir.path().join("data"),
        &["--config", &config.to_string_lossy()],
    )?;

    // A teacher founds a class and enrolls one parent's device.
    let parent_secret = [2u8; 32];
    let parent_id = DeviceKey::from_secret(parent_secret).device_id();
    let mut teacher = device_node([1; 32])?;
    let class = teacher.found_class([9; 16], "Class 3B", MemberId([1; 8]), "Ms Li", now_ms())?;
    let roster = DocId::new(class, DocKind::Roster);
    let now = now_ms();
    teacher.edit(&roster, now, |tx, _, _| {
        roster::add_family(tx, FamilyId([7; 8]), "Family 7")?;
        roster::add_member(
            tx,
            MemberId([2; 8]),
            "Parent",
            &[Role::Guardian],
            Some(FamilyId([7; 8])),
        )?;
        roster::add_device(tx, parent_id, MemberId([2; 8]), now)
    })?;
    let mut heads: Vec<[u8; 32]> = teacher
        .document(&roster)?
        .get_heads()
        .iter()
        .map(|h| h.0)
        .collect();
    heads.sort();
    let mut teacher = Device::connect(teacher, relay.addr, relay.fingerprint).await?;
    teacher
        .until(STEP, |m| match m {
            Message::Saved { doc, heads: saved } => {
                let mut saved = saved.clone();
                saved.sort();
                *doc == roster && saved == heads
            }
            _ => false,
        })
        .await?;

    let mut parent =
        Device::connect(device_node(parent_secret)?, relay.addr, relay.fingerprint).await?;
    parent
        .until(STEP, |m| matches!(m, Message::Catalog { classes } if classes.iter().any(|c| c.class == class)))
        .await?;

    // The teacher's device stops reading; the parent floods presence that the relay forwards
    // to it. Its stream window fills, the relay's writes stall, its queue of 16 fills.
    let notebook = DocId::new(class, DocKind::Notebook);
    let payload = vec![0x55u8; 32 * 1024];
    let flood = async {
        for _ in 0..2000 {
            parent
                .send(&Message::Ephemeral {
                    doc: notebook,
                    payload: payload.clone(),
                })
                .await?;
            if teacher.conn.close_reason().is_some() {
                break;
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    tokio::time::timeout(STEP, flood).await??;
    let closed = tokio::time::timeout(STEP, teacher.conn.closed()).await?;
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == quinn::VarInt::from_u32(homeroom_relay::close_code::TOO_SLOW)),
        "{closed:?}"
    );
    assert!(relay.wait_for_log("outbound queue full", Duration::from_secs(5)));

    // The parent's connection is unaffected, and the relay still answers it.
    assert!(parent.conn.close_reason().is_none());
    parent
        .send(&Message::Sync {
            doc: notebook,
            payload: vec![0xff],
            signatures: Vec::new(),
        })
        .await?;
    let answer = parent
        .until(STEP, |m| matches!(m, Message::Error { .. }))
        .await?;
    assert!(
        matches!(answer, Message::Error { fatal: false, .. }),
        "{answer:?}"
    );
    Ok(())
}
