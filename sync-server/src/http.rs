//! The operations HTTP listener: `GET /metrics` (Prometheus text) and `GET /healthz`.
//!
//! A deliberately tiny HTTP/1.1 responder on a tokio `TcpListener` — two read-only routes,
//! one request per connection (`Connection: close`), no keep-alive, no body parsing — so the
//! relay needs no HTTP framework. Its bounds: requests headers up to 8 KiB, 5 s to send
//! them, at most 32 connections served at once (further ones wait in the kernel's backlog).
//! It is off by default and meant for a loopback address (`[http] listen =
//! "127.0.0.1:9464"`): scrape it locally or through a reverse proxy; it serves no secret,
//! but there is no reason to expose it.
//!
//! - `GET /metrics` → 200, `text/plain; version=0.0.4`, [`crate::metrics::Metrics::render`].
//! - `GET /healthz` → 200 `ok` while the hub runs and store writes succeed, otherwise 503
//!   with the reason (for a load balancer, Docker `HEALTHCHECK` or a systemd watchdog
//!   script).
//! - anything else → 404 (or 405 for a method other than `GET`/`HEAD`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::metrics::{self, Health};

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
const MAX_CONCURRENT: usize = 32;

/// Why the HTTP listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for HTTP on {addr} (key `http.listen`)")]
pub struct HttpError {
    /// The configured address.
    pub addr: SocketAddr,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// A running HTTP listener; dropping it does not stop it, [`HttpServer::stop`] does.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Bind `addr` and serve until stopped. Must be called inside a tokio runtime.
    pub async fn start(addr: SocketAddr) -> Result<HttpServer, HttpError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| HttpError { addr, source })?;
        let task = tokio::spawn(accept_loop(listener));
        Ok(HttpServer { addr: bound, task })
    }

    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting and abort requests in progress.
    pub fn stop(self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = serve(stream).await {
                        tracing::debug!(error = %e, "http request failed");
                    }
                });
            }
            Err(e) => {
                // E.g. EMFILE: wait a little instead of spinning.
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(true);
            }
            if head.len() > MAX_HEAD {
                return Ok(false);
            }
        }
    })
    .await;
    let complete = matches!(read, Ok(Ok(true)));
    let (status, content_type, body, head_only) = if complete {
        respond(&head)
    } else {
        (400, "text/plain", "bad request\n".to_string(), false)
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(&body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

/// Status, content type, body, and whether only the head is sent (HEAD).
fn respond(head: &[u8]) -> (u16, &'static str, String, bool) {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default();
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return (405, "text/plain", "only GET\n".into(), false);
    }
    match path {
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics::global().render(),
            head_only,
        ),
        "/healthz" | "/health" => match metrics::global().health() {
            Health::Ok => (200, "text/plain", "ok\n".into(), head_only),
            Health::Failing(why) => (503, "text/plain", format!("failing: {why}\n"), head_only),
        },
        _ => (404, "text/plain", "not found\n".into(), head_only),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(respond(b"GET /nope HTTP/1.1\r\n\r\n").0, 404);
        assert_eq!(respond(b"POST /metrics HTTP/1.1\r\n\r\n").0, 405);
        let (status, ctype, body, _) = respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status, 200);
        assert!(ctype.starts_with("text/plain; version=0.0.4"));
        assert!(body.contains("# TYPE homeroom_connections_open gauge"));
        assert!(respond(b"HEAD /metrics HTTP/1.1\r\n\r\n").3);
    }
}
