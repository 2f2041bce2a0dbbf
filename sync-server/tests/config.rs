//! Configuration errors stop the relay with a message naming the key; overrides apply.

mod support;

use std::time::Duration;

use support::{Relay, relay_command, run_to_exit};

const LIMIT: Duration = Duration::from_secs(15);

#[test]
fn unknown_key_exits_non_zero_naming_the_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("relay.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nmax_conections = 10\n")?;
    let mut cmd = relay_command();
    cmd.arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("data"));
    let (status, out, err) = run_to_exit(cmd, LIMIT)?;
    assert!(!status.success());
    assert!(err.contains("max_conections"), "stderr: {err}");
    assert!(!out.contains("listening on"));
    assert!(!dir.path().join("data").exists(), "nothing was created");
    Ok(())
}

#[test]
fn out_of_range_value_exits_non_zero_naming_the_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("relay.toml");
    std::fs::write(&file, "[limits]\nmax_docs_per_session = 0\n")?;
    let mut cmd = relay_command();
    cmd.arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("data"));
    let (status, _, err) = run_to_exit(cmd, LIMIT)?;
    assert!(!status.success());
    assert!(err.contains("limits.max_docs_per_session"), "stderr: {err}");
    Ok(())
}

#[test]
fn example_config_is_accepted_and_environment_overrides_the_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/relay.example.toml");
    let mut cmd = relay_command();
    // The example says 0.0.0.0:4433 and ./homeroom-data; the environment wins over the file.
    cmd.arg("--config")
        .arg(example)
        .env("HOMEROOM_LISTEN", "127.0.0.1:0")
        .env("HOMEROOM_DATA_DIR", dir.path())
        .env("HOMEROOM_LOG_FORMAT", "json");
    let mut relay = Relay::spawn(cmd)?;
    assert_eq!(relay.addr.ip().to_string(), "127.0.0.1");
    assert_ne!(relay.addr.port(), 4433);
    assert!(dir.path().join("relay.sqlite3").exists());
    assert!(
        relay.wait_for_log("\"level\":\"INFO\"", Duration::from_secs(5)),
        "JSON logs"
    );
    relay.sigterm()?;
    assert!(relay.wait(LIMIT)?.success());
    Ok(())
}
