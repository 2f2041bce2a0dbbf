//! The certificate is generated on first start, kept, and reported the same way everywhere.

mod support;

use std::time::Duration;

use homeroom_transport::fingerprint_of;
use support::{Relay, relay_command, run_to_exit};

#[test]
fn first_start_generates_the_certificate_and_later_starts_keep_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;

    let mut first = Relay::start(dir.path(), &[])?;
    assert!(first.wait_for_log(
        "generated a new self-signed certificate",
        Duration::from_secs(5)
    ));
    first.sigterm()?;
    assert!(first.wait(Duration::from_secs(15))?.success());

    // The kept file is what the relay announced.
    let der = std::fs::read(dir.path().join("relay-cert.der"))?;
    assert_eq!(fingerprint_of(&der), first.fingerprint);

    let mut second = Relay::start(dir.path(), &[])?;
    assert_eq!(
        second.fingerprint_hex, first.fingerprint_hex,
        "fingerprint changed on restart"
    );
    assert!(second.wait_for_log("loaded the kept certificate", Duration::from_secs(5)));
    assert!(!second.stderr().contains("generated a new"));
    second.sigterm()?;
    assert!(second.wait(Duration::from_secs(15))?.success());

    // `homeroom-relay fingerprint` prints the same value, and nothing else on stdout.
    let mut cmd = relay_command();
    cmd.arg("fingerprint").arg("--data-dir").arg(dir.path());
    let (status, out, err) = run_to_exit(cmd, Duration::from_secs(15))?;
    assert!(status.success(), "fingerprint failed: {err}");
    assert_eq!(out.trim(), first.fingerprint_hex);
    Ok(())
}

#[test]
fn fingerprint_without_a_certificate_is_an_error_not_a_new_certificate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cmd = relay_command();
    cmd.arg("fingerprint").arg("--data-dir").arg(dir.path());
    let (status, out, err) = run_to_exit(cmd, Duration::from_secs(15))?;
    assert!(!status.success());
    assert!(out.is_empty());
    assert!(err.contains("no certificate"), "{err}");
    assert!(!dir.path().join("relay-cert.der").exists());
    Ok(())
}
