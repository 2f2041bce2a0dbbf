//! Test support: the real relay binary as a child process, and a minimal device.
// Each test binary uses a different part of it, and none of it is an API.
#![allow(dead_code, unreachable_pub)]

pub mod device;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

/// How long a relay may take to print its address.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The relay binary with a clean environment (no inherited HOMEROOM_* or RUST_LOG).
pub fn relay_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_homeroom-relay"));
    cmd.env_remove("HOMEROOM_LISTEN")
        .env_remove("HOMEROOM_DATA_DIR")
        .env_remove("HOMEROOM_LOG_FORMAT")
        // HOMEROOM_TEST_RUST_LOG=debug to see more of the relay while debugging a test.
        .env(
            "RUST_LOG",
            std::env::var("HOMEROOM_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null());
    cmd
}

/// Run a short-lived relay command (it must exit by itself) within `limit`.
pub fn run_to_exit(
    mut cmd: Command,
    limit: Duration,
) -> anyhow::Result<(ExitStatus, String, String)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn relay")?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_with_timeout(&mut child, limit)?;
    let out = stdout
        .join()
        .map_err(|_| anyhow!("stdout reader panicked"))?;
    let err = stderr
        .join()
        .map_err(|_| anyhow!("stderr reader panicked"))?;
    Ok((status, out, err))
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut s);
        }
        s
    })
}

/// Wait for `child` to exit; kill it and fail after `limit`.
pub fn wait_with_timeout(child: &mut Child, limit: Duration) -> anyhow::Result<ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            bail!("process did not exit within {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A running relay process on loopback.
pub struct Relay {
    child: Child,
    /// The bound address from the "listening on" line.
    pub addr: SocketAddr,
    /// The certificate fingerprint from the same line.
    pub fingerprint: [u8; 32],
    /// The same, as printed (hex).
    pub fingerprint_hex: String,
    stderr: Arc<Mutex<String>>,
}

impl Relay {
    /// Start `homeroom-relay --listen 127.0.0.1:0 --data-dir DIR ARGS…` and wait for its
    /// "listening on" line.
    pub fn start(data_dir: &Path, args: &[&str]) -> anyhow::Result<Relay> {
        Self::start_on(data_dir, "127.0.0.1:0", args)
    }

    /// Like [`Relay::start`] on a given address.
    pub fn start_on(data_dir: &Path, listen: &str, args: &[&str]) -> anyhow::Result<Relay> {
        let mut cmd = relay_command();
        cmd.arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(data_dir)
            .args(args);
        Self::spawn(cmd)
    }

    /// Spawn a prepared relay command and wait for its "listening on" line.
    pub fn spawn(mut cmd: Command) -> anyhow::Result<Relay> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn relay")?;
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(pipe) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    eprintln!("[relay] {line}");
                    if let Ok(mut s) = sink.lock() {
                        s.push_str(&line);
                        s.push('\n');
                    }
                }
            });
        }
        let (tx, rx) = mpsc::channel();
        if let Some(pipe) = child.stdout.take() {
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let end = Instant::now() + START_TIMEOUT;
        let line = loop {
            let left = end.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("listening on ") => break line,
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = stderr.lock().map(|s| s.clone()).unwrap_or_default();
                    bail!(
                        "relay exited or did not print its address within {START_TIMEOUT:?}; stderr:\n{log}"
                    );
                }
            }
        };
        let (addr, fingerprint_hex) = parse_listening(&line)?;
        let fingerprint = homeroom_transport::parse_fingerprint(&fingerprint_hex)?;
        Ok(Relay {
            child,
            addr,
            fingerprint,
            fingerprint_hex,
            stderr,
        })
    }

    /// Everything the relay logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Wait until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if self.stderr().contains(needle) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Send SIGTERM.
    pub fn sigterm(&self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        Ok(())
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Wait for exit within `limit`.
    pub fn wait(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        wait_with_timeout(&mut self.child, limit)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `listening on ADDR (QUIC/UDP), certificate fingerprint (SHA-256): HEX`
pub fn parse_listening(line: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = line
        .strip_prefix("listening on ")
        .ok_or_else(|| anyhow!("not a listening line: {line}"))?;
    let addr = rest
        .split_whitespace()
        .next()
        .ok_or_else(|| anyhow!("no address in: {line}"))?
        .parse()?;
    let fp = line
        .rsplit("(SHA-256): ")
        .next()
        .ok_or_else(|| anyhow!("no fingerprint in: {line}"))?
        .trim()
        .to_string();
    Ok((addr, fp))
}
