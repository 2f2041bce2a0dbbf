//! End-to-end test support: start, kill and restart a real `homeroom-relay` process, and wait
//! for conditions on real devices with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fault_proxy;
pub mod school;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// Path of the relay binary: `HOMEROOM_RELAY_BIN`, or `homeroom-relay` next to the test
/// binary's target directory (built by `cargo build -p homeroom-relay` if missing).
pub fn relay_binary() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("HOMEROOM_RELAY_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("cannot locate target dir from {}", exe.display()))?;
    let bin = dir.join("homeroom-relay");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "homeroom-relay", "--bin", "homeroom-relay"])
            .status()
            .context("building homeroom-relay")?;
        if !status.success() {
            bail!("building homeroom-relay failed");
        }
    }
    Ok(bin)
}

/// A running relay process.
pub struct RelayProcess {
    child: Option<Child>,
    /// Data folder.
    pub data_dir: PathBuf,
    /// UDP address it listens on.
    pub addr: SocketAddr,
    /// Its certificate fingerprint.
    pub fingerprint: [u8; 32],
    /// Log lines seen (stdout and stderr).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RelayProcess {
    /// Start a relay on `listen` (use port 0 for any) with `data_dir`.
    pub fn start(data_dir: &Path, listen: &str) -> Result<Self> {
        Self::start_with_args(data_dir, listen, &[])
    }

    /// [`RelayProcess::start`] with extra arguments (e.g. `--config FILE`).
    pub fn start_with_args(data_dir: &Path, listen: &str, extra: &[&str]) -> Result<Self> {
        let bin = relay_binary()?;
        let mut child = Command::new(bin)
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", listen])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning homeroom-relay")?;
        let (tx, rx) = mpsc::channel::<String>();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut addr, mut fp) = (None, None);
        while addr.is_none() || fp.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .map_err(|_| anyhow!("relay did not report its address and fingerprint"))?;
            for tok in line.split(|c: char| c.is_whitespace() || c == '=' || c == '"' || c == ',') {
                if addr.is_none()
                    && line.contains("listening")
                    && let Ok(a) = tok.parse::<SocketAddr>()
                {
                    addr = Some(a);
                }
                if fp.is_none() && tok.len() == 64 && tok.chars().all(|c| c.is_ascii_hexdigit()) {
                    let mut f = [0u8; 32];
                    if hex::decode_to_slice(tok, &mut f).is_ok() {
                        fp = Some(f);
                    }
                }
            }
        }
        Ok(Self {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            addr: addr.unwrap(),
            fingerprint: fp.unwrap(),
            log,
        })
    }

    /// Whether the process is still running (false once it exited or was killed).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL the relay (no chance to flush anything).
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?; // std's kill sends SIGKILL on Unix
            c.wait()?;
        }
        Ok(())
    }

    /// Start again on the same address and data folder.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9()?;
        let again = Self::start(&self.data_dir, &self.addr.to_string())?;
        assert_eq!(
            again.fingerprint, self.fingerprint,
            "certificate kept across restarts"
        );
        *self = again;
        Ok(())
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let mut c = self.child.take().ok_or_else(|| anyhow!("not running"))?;
        let status = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = c.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                c.kill()?;
                bail!("relay did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// Poll `cond` until it holds or `timeout` passes; the error names `what`.
pub async fn wait_for(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
