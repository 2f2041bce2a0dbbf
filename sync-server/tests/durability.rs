//! What the relay acknowledged with `Saved` survives SIGKILL.

mod support;

use std::time::Duration;

use homeroom_core::{DocId, DocKind, MemberId};
use homeroom_protocol::Message;
use support::Relay;
use support::device::{Device, device_node, now_ms};

const STEP: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn founded_class_acknowledged_as_saved_survives_sigkill() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut relay = Relay::start(dir.path(), &[])?;

    // A teacher's device founds a class offline: the roster's founding change is not delivered.
    let mut node = device_node([7; 32])?;
    let class = node.found_class([9; 16], "Class 3B", MemberId([1; 8]), "Ms Li", now_ms())?;
    let roster = DocId::new(class, DocKind::Roster);
    assert!(!node.replica().undelivered().is_empty());

    // Online: the relay does not know the class, the device uploads the roster, and the relay
    // answers `Saved` with exactly the roster's heads.
    let mut device = Device::connect(node, relay.addr, relay.fingerprint).await?;
    device.until_saved(roster, STEP).await?;
    assert!(
        device.node.replica().undelivered().is_empty(),
        "the device counts its founding change as delivered"
    );
    assert!(relay.wait_for_log("session established", Duration::from_secs(5)));

    // Crash: no shutdown, no flush.
    relay.kill9()?;

    let relay = Relay::start(dir.path(), &[])?;
    let node = device_node([7; 32])?; // same key, empty local store
    let mut device = Device::connect(node, relay.addr, relay.fingerprint).await?;
    let catalog = device
        .until(STEP, |m| matches!(m, Message::Catalog { .. }))
        .await?;
    let Message::Catalog { classes } = catalog else {
        unreachable!()
    };
    assert!(
        classes.iter().any(|c| c.class == class),
        "the restarted relay's catalog lists the class: {classes:?}"
    );
    Ok(())
}
