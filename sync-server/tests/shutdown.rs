//! SIGTERM: sessions are told, writes are flushed, the process exits 0.

mod support;

use std::time::{Duration, Instant};

use homeroom_protocol::{ErrorCode, Message};
use support::Relay;
use support::device::{Device, device_node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sessions_and_exits_zero() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut relay = Relay::start(dir.path(), &[])?;

    let mut device = Device::connect(device_node([3; 32])?, relay.addr, relay.fingerprint).await?;
    device
        .until(Duration::from_secs(20), |m| {
            matches!(m, Message::Welcome { .. })
        })
        .await?;
    assert!(relay.wait_for_log("session established", Duration::from_secs(5)));

    let started = Instant::now();
    relay.sigterm()?;
    // The device is told why its session ends.
    let bye = device
        .until(Duration::from_secs(10), |m| {
            matches!(m, Message::Error { .. })
        })
        .await?;
    assert!(
        matches!(
            bye,
            Message::Error {
                code: ErrorCode::ShuttingDown,
                fatal: true,
                ..
            }
        ),
        "{bye:?}"
    );
    drop(device);

    let status = tokio::task::spawn_blocking(move || {
        let status = relay.wait(Duration::from_secs(10));
        (status, relay)
    })
    .await?;
    let (status, relay) = status;
    let status = status?;
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let log = relay.stderr();
    for step in [
        "shutdown: signal received",
        "shutdown: no longer accepting connections",
        "shutdown: closing sessions",
        "session closed",
        "shutdown: every write is durable",
        "shutdown: closing the endpoint",
        "shutdown complete",
    ] {
        assert!(log.contains(step), "missing log step {step:?}:\n{log}");
    }
    Ok(())
}
