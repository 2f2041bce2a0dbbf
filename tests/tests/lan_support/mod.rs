//! A device as a separate process (`src/bin/lan_device.rs`), driven over stdin/stdout.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// One device process.
pub struct DeviceProc {
    pub name: &'static str,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    /// The device id (hex).
    pub id: String,
}

impl DeviceProc {
    pub fn start(name: &'static str, dir: &Path) -> Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lan_device"))
            .arg(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning lan_device")?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| anyhow!("{name}: no READY line"))?;
        let id = first
            .strip_prefix("READY ")
            .ok_or_else(|| anyhow!("{name}: unexpected first line {first:?}"))?
            .to_string();
        Ok(Self {
            name,
            child,
            stdin,
            lines,
            id,
        })
    }

    /// Run one command; its `OK` result, or an error with the `ERR` text.
    pub fn cmd(&mut self, line: &str) -> Result<String> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        let reply = self
            .lines
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| anyhow!("{}: no answer to {line:?}", self.name))?;
        match reply.strip_prefix("OK") {
            Some(r) => Ok(r.trim_start().to_string()),
            None => bail!("{}: {line:?} failed: {reply}", self.name),
        }
    }

    /// Poll `line` until `pred` holds on its result, within `timeout`.
    pub fn wait(
        &mut self,
        line: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let start = Instant::now();
        loop {
            // An error (e.g. the class has not arrived yet) means "not yet".
            let r = self.cmd(line).unwrap_or_else(|e| format!("ERR {e:#}"));
            if pred(&r) {
                return Ok(r);
            }
            if start.elapsed() > timeout {
                bail!(
                    "{}: {line:?} still {r:?} after {:?}",
                    self.name,
                    start.elapsed()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ask the process to stop cleanly and wait for it.
    pub fn quit(mut self) -> Result<()> {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                bail!("{} did not exit", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DeviceProc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
