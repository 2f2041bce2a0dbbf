//! A minimal device over real QUIC: a device-side `SyncNode` pumped by hand. Just enough to
//! drive the relay in tests (the real device client lives in `core/client`).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use homeroom_core::{DeviceKey, DocId};
use homeroom_protocol::{DEFAULT_MAX_FRAME, Message};
use homeroom_store::Store;
use homeroom_sync::{Limits, Replica, SessionId, SyncNode};
use homeroom_transport::{FramedRecv, FramedSend, TransportLimits, client_config, exporter};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A device node with the key derived from `secret` and an in-memory store.
pub fn device_node(secret: [u8; 32]) -> anyhow::Result<SyncNode> {
    let replica = Replica::device(
        DeviceKey::from_secret(secret),
        [secret[0]; 8],
        Box::new(Store::open_in_memory()?),
        Limits::default(),
    )?;
    Ok(SyncNode::new(replica))
}

/// A QUIC connection to the relay, pinning its certificate.
pub async fn quic_connect(
    addr: SocketAddr,
    fingerprint: [u8; 32],
) -> anyhow::Result<(quinn::Endpoint, quinn::Connection)> {
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    endpoint.set_default_client_config(client_config(fingerprint, &TransportLimits::default())?);
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        endpoint.connect(addr, "homeroom-relay")?,
    )
    .await
    .context("QUIC handshake timed out")??;
    Ok((endpoint, conn))
}

/// A device session with the relay.
pub struct Device {
    /// The device's engine.
    pub node: SyncNode,
    /// Its session with the relay.
    pub sid: SessionId,
    /// Every message received from the relay, in order.
    pub received: Vec<Message>,
    /// The QUIC connection.
    pub conn: quinn::Connection,
    send: FramedSend,
    recv: FramedRecv,
    _endpoint: quinn::Endpoint,
}

impl Device {
    /// Connect `node` to the relay and send its `Hello`.
    pub async fn connect(
        mut node: SyncNode,
        addr: SocketAddr,
        fingerprint: [u8; 32],
    ) -> anyhow::Result<Device> {
        let (endpoint, conn) = quic_connect(addr, fingerprint).await?;
        let (send, recv) = conn.open_bi().await?;
        let exporter = exporter(&conn)?;
        let sid = node.connect(now_ms(), exporter, [0; 32])?;
        let mut device = Device {
            node,
            sid,
            received: Vec::new(),
            conn,
            send: FramedSend::new(send, DEFAULT_MAX_FRAME),
            recv: FramedRecv::new(recv, DEFAULT_MAX_FRAME),
            _endpoint: endpoint,
        };
        device.flush().await?;
        Ok(device)
    }

    /// Drain the node: acknowledge its writes at once (an in-memory device), send its messages.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        loop {
            let mut progressed = false;
            while let Some(write) = self.node.poll_write() {
                progressed = true;
                self.node.handle_write_done(write.id);
            }
            while let Some((_, msg)) = self.node.poll_transmit() {
                progressed = true;
                self.send.send(&msg).await?;
            }
            while self.node.poll_close().is_some() {}
            while self.node.poll_event().is_some() {}
            if !progressed {
                return Ok(());
            }
        }
    }

    /// Receive and process messages until one satisfies `pred` (returned), within `limit`.
    pub async fn until(
        &mut self,
        limit: Duration,
        mut pred: impl FnMut(&Message) -> bool,
    ) -> anyhow::Result<Message> {
        let work = async {
            loop {
                let msg = self
                    .recv
                    .recv()
                    .await?
                    .ok_or_else(|| anyhow!("relay finished the stream"))?;
                self.received.push(msg.clone());
                let hit = pred(&msg);
                self.node.handle_message(now_ms(), self.sid, msg.clone())?;
                self.flush().await?;
                if hit {
                    return Ok::<Message, anyhow::Error>(msg);
                }
            }
        };
        tokio::time::timeout(limit, work).await.map_err(|_| {
            anyhow!(
                "no matching message within {limit:?}; received: {:?}",
                self.kinds()
            )
        })?
    }

    /// Wait for the relay's `Saved` covering exactly this device's current heads of `doc`.
    pub async fn until_saved(&mut self, doc: DocId, limit: Duration) -> anyhow::Result<()> {
        let mut heads: Vec<[u8; 32]> = self
            .node
            .document(&doc)?
            .get_heads()
            .iter()
            .map(|h| h.0)
            .collect();
        heads.sort();
        self.until(limit, |m| match m {
            Message::Saved {
                doc: d,
                heads: saved,
            } => {
                let mut saved = saved.clone();
                saved.sort();
                *d == doc && saved == heads
            }
            _ => false,
        })
        .await?;
        Ok(())
    }

    /// Send a message directly (bypassing the node), e.g. presence.
    pub async fn send(&mut self, msg: &Message) -> anyhow::Result<()> {
        self.send.send(msg).await?;
        Ok(())
    }

    fn kinds(&self) -> Vec<&'static str> {
        self.received.iter().map(Message::kind).collect()
    }
}
