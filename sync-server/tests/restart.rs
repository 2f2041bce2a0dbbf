//! Devices connected to a relay that crashed learn it at their next packet once it restarts
//! (QUIC stateless reset with a key kept across restarts), instead of after the idle timeout.

mod support;

use std::time::{Duration, Instant};

use homeroom_core::{DocId, DocKind, MemberId};
use homeroom_protocol::Message;
use support::Relay;
use support::device::{Device, device_node, now_ms};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_a_killed_relay_are_reset_by_its_successor() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut relay = Relay::start(dir.path(), &[])?;
    let addr = relay.addr;

    let mut node = device_node([4; 32])?;
    let class = node.found_class([1; 16], "Class 1A", MemberId([1; 8]), "Mr Ito", now_ms())?;
    let mut device = Device::connect(node, relay.addr, relay.fingerprint).await?;
    device
        .until_saved(DocId::new(class, DocKind::Roster), Duration::from_secs(20))
        .await?;

    relay.kill9()?;
    let restarted = Relay::start_on(dir.path(), &addr.to_string(), &[])?;
    assert_eq!(restarted.addr, addr);

    // The device's next packet reaches the new process, which answers with a stateless reset
    // the device can authenticate: the connection ends now, not after the 60 s idle timeout.
    let started = Instant::now();
    device
        .send(&Message::Ephemeral {
            doc: DocId::new(class, DocKind::Notebook),
            payload: vec![1; 64],
        })
        .await?;
    let closed = tokio::time::timeout(Duration::from_secs(10), device.conn.closed()).await?;
    assert!(
        matches!(closed, quinn::ConnectionError::Reset),
        "{closed:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // And it reconnects to the same pinned certificate.
    let mut again =
        Device::connect(device_node([4; 32])?, restarted.addr, restarted.fingerprint).await?;
    again
        .until(Duration::from_secs(20), |m| matches!(m, Message::Catalog { classes } if classes.iter().any(|c| c.class == class)))
        .await?;
    Ok(())
}
