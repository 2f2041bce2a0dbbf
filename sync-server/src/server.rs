//! The [`Server`]: binds the QUIC endpoint, starts the hub and writer threads and the accept
//! loop, and shuts them all down in order.
//!
//! Ownership: the server owns the endpoint, the accept-loop task (which owns every connection
//! task in a `JoinSet`), the hub thread and the writer thread. Nothing is detached: shutdown
//! awaits or aborts each of them, and [`Server::failed`] reports a hub or writer that stopped on
//! its own so the process can exit non-zero (and be restarted by its supervisor).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use homeroom_sync::{Replica, SyncError, SyncNode};
use homeroom_transport::{
    RELAY_SEND_SEGMENTS, RELAY_UDP_RECEIVE_BUFFER, RelayCertificate, TransportError,
    TransportLimits, install_crypto_provider, segment_capped_socket, server_config,
    set_udp_receive_buffer, tcp_server_config,
};
use quinn::VarInt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::config::RelaySettings;
use crate::connection::{self, ConnectionBudget, ConnectionSettings, close_code};
use crate::files::KEY_FILE;
use crate::hub::{self, ConnId, HubError, HubInput};
use crate::store::RelayStore;
use crate::{stateless_reset, writer};

/// How long shutdown waits for connection tasks to deliver their last frames.
const CONNECTIONS_GRACE: Duration = Duration::from_secs(5);
/// How long shutdown waits for the endpoint to send its final close frames.
const ENDPOINT_GRACE: Duration = Duration::from_secs(2);

/// Why the relay could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The store could not be read at start (rosters are loaded eagerly).
    #[error("cannot load the store")]
    Load(#[from] SyncError),
    /// The TLS or QUIC configuration could not be built.
    #[error("invalid transport configuration")]
    Transport(#[from] TransportError),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address from the configuration.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate key, from which the QUIC stateless-reset key is derived, could not be
    /// read.
    #[error("cannot read {path}")]
    ResetSecret {
        /// The key file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A thread could not be started.
    #[error("cannot start the {what} thread")]
    Spawn {
        /// Which thread.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The hub stopped on its own.
    #[error(transparent)]
    Hub(#[from] HubError),
}

/// A running relay.
#[derive(Debug)]
pub struct Server {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    stop_accepting: watch::Sender<bool>,
    accept: JoinHandle<JoinSet<()>>,
    /// The TLS-over-TCP fallback listener's address and accept loop, when enabled.
    tcp: Option<(SocketAddr, JoinHandle<JoinSet<()>>)>,
    hub_inbox: mpsc::Sender<HubInput>,
    hub_exited: oneshot::Receiver<Result<(), HubError>>,
    /// Set once `hub_exited` has been received.
    hub_done: bool,
    hub_thread: std::thread::JoinHandle<()>,
    writer_thread: std::thread::JoinHandle<()>,
}

impl Server {
    /// Start the relay: load the rosters through `reader`, start the writer thread over
    /// `writer` and the hub thread, bind the QUIC endpoint with `cert` and start accepting.
    /// `cert` must be the one kept in `settings.data_dir` (see
    /// [`RelayCertificate::load_or_generate`]): the QUIC stateless-reset key is derived from
    /// its key file there, so that devices connected to a previous process of this relay are
    /// told at once to reconnect. Must be called inside a tokio runtime (I/O and time enabled).
    pub fn start<S: RelayStore>(
        settings: &RelaySettings,
        reader: S,
        writer: S,
        cert: &RelayCertificate,
    ) -> Result<Server, ServerError> {
        install_crypto_provider();
        let replica = Replica::relay(Box::new(reader), settings.engine.clone())?;
        tracing::info!(
            classes = replica.classes().len(),
            "store loaded (rosters in memory)"
        );
        let node = SyncNode::new(replica);

        let limits = TransportLimits {
            idle_timeout: settings.idle_timeout,
            ..TransportLimits::default()
        };
        let config = server_config(cert, &limits)?;
        let key_path = settings.data_dir.join(KEY_FILE);
        let reset_secret = std::fs::read(&key_path).map_err(|source| ServerError::ResetSecret {
            path: key_path,
            source,
        })?;
        let bind = |source| ServerError::Bind {
            addr: settings.listen,
            source,
        };
        let socket = std::net::UdpSocket::bind(settings.listen).map_err(bind)?;
        match set_udp_receive_buffer(&socket, RELAY_UDP_RECEIVE_BUFFER) {
            Ok(granted) if granted < RELAY_UDP_RECEIVE_BUFFER => tracing::warn!(
                granted,
                wanted = RELAY_UDP_RECEIVE_BUFFER,
                "the kernel granted a smaller UDP receive buffer than asked: bursts from many \
                 devices may be dropped; raise net.core.rmem_max (docs/operations.md)"
            ),
            Ok(granted) => tracing::info!(granted, "UDP receive buffer"),
            Err(e) => tracing::warn!(error = %e, "could not size the UDP receive buffer"),
        }
        // One datagram per send: bounds quinn's per-connection send buffer (docs/benchmarks.md,
        // "Memory per connected device, profiled").
        let socket = segment_capped_socket(socket, RELAY_SEND_SEGMENTS).map_err(bind)?;
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            stateless_reset::endpoint_config(&reset_secret),
            Some(config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind)?;
        let local_addr = endpoint.local_addr().map_err(bind)?;

        let (durable_tx, durable_rx) = mpsc::unbounded_channel();
        let writer = writer::spawn(writer, durable_tx).map_err(|source| ServerError::Spawn {
            what: "writer",
            source,
        })?;
        let writer_thread = writer.thread;
        let notifier = settings
            .webhook
            .clone()
            .map(crate::webhook::Notifier::spawn);
        let hub = hub::spawn(
            node,
            writer.queue,
            durable_rx,
            settings.outbound_queue,
            notifier,
        )
        .map_err(|source| ServerError::Spawn {
            what: "hub",
            source,
        })?;

        let (stop_accepting, stop_rx) = watch::channel(false);
        let conn_settings = ConnectionSettings {
            max_frame: settings.max_frame_bytes,
            outbound_queue: settings.outbound_queue,
            handshake_timeout: settings.handshake_timeout,
        };
        // One budget for QUIC and TCP together: `max_connections` is the relay's limit.
        let budget = ConnectionBudget::new(settings.max_connections);
        let tcp = if settings.tcp_fallback {
            // The same port number as QUIC, over TCP; any free port if that one is taken
            // (possible only when `listen` asked for port 0). `tcp_addr` says which.
            let wanted = local_addr;
            let listener = match std::net::TcpListener::bind(wanted) {
                Ok(l) => l,
                Err(_) if settings.listen.port() == 0 => {
                    std::net::TcpListener::bind(SocketAddr::new(wanted.ip(), 0)).map_err(bind)?
                }
                Err(source) => {
                    return Err(ServerError::Bind {
                        addr: wanted,
                        source,
                    });
                }
            };
            listener.set_nonblocking(true).map_err(bind)?;
            let listener = tokio::net::TcpListener::from_std(listener).map_err(bind)?;
            let tcp_addr = listener.local_addr().map_err(bind)?;
            let task = tokio::spawn(crate::tcp::accept_loop(
                listener,
                tcp_server_config(cert)?,
                hub.inbox.clone(),
                conn_settings.clone(),
                budget.clone(),
                stop_rx.clone(),
            ));
            Some((tcp_addr, task))
        } else {
            None
        };
        let accept = tokio::spawn(accept_loop(
            endpoint.clone(),
            hub.inbox.clone(),
            conn_settings,
            budget,
            stop_rx,
        ));
        Ok(Server {
            endpoint,
            local_addr,
            stop_accepting,
            accept,
            tcp,
            hub_inbox: hub.inbox,
            hub_exited: hub.exited,
            hub_done: false,
            hub_thread: hub.thread,
            writer_thread,
        })
    }

    /// The address the endpoint is bound to (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The TLS-over-TCP fallback listener's address (`None` when `tcp_fallback` is off).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().map(|(a, _)| *a)
    }

    /// Resolves only if the relay stops on its own (the hub or the writer failed). Cancel-safe:
    /// use it in a `select!` beside the shutdown signal.
    pub async fn failed(&mut self) -> ServerError {
        if self.hub_done {
            return std::future::pending().await;
        }
        let result = (&mut self.hub_exited).await;
        self.hub_done = true;
        match result {
            Ok(Ok(())) => ServerError::Hub(HubError::Stopped),
            Ok(Err(e)) => ServerError::Hub(e),
            Err(_) => ServerError::Hub(HubError::Panicked),
        }
    }

    /// Graceful shutdown: stop accepting, close every session (their sync states are
    /// persisted), make every pending write durable, let connections deliver their last
    /// frames, close the endpoint and join the threads. Each step is logged.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        tracing::info!("shutdown: no longer accepting connections");
        self.endpoint.set_server_config(None);
        let _ = self.stop_accepting.send(true);
        let mut tasks = match self.accept.await {
            Ok(tasks) => tasks,
            Err(e) => {
                tracing::error!(error = %e, "accept loop failed");
                JoinSet::new()
            }
        };
        let mut tcp_tasks = match self.tcp.take() {
            Some((_, accept)) => accept.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "TCP accept loop failed");
                JoinSet::new()
            }),
            None => JoinSet::new(),
        };

        let mut outcome = Ok(());
        if !self.hub_done {
            let (done, done_rx) = oneshot::channel();
            if self
                .hub_inbox
                .send(HubInput::Shutdown { done })
                .await
                .is_ok()
            {
                let _ = done_rx.await;
            }
            match (&mut self.hub_exited).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => outcome = Err(ServerError::Hub(e)),
                Err(_) => outcome = Err(ServerError::Hub(HubError::Panicked)),
            }
        }
        drop(self.hub_inbox);

        tracing::info!(
            connections = tasks.len(),
            "shutdown: waiting for connections to close"
        );
        let drained = tokio::time::timeout(CONNECTIONS_GRACE, async {
            while tasks.join_next().await.is_some() {}
            while tcp_tasks.join_next().await.is_some() {}
        })
        .await;
        tcp_tasks.abort_all();
        while tcp_tasks.join_next().await.is_some() {}
        if drained.is_err() {
            tracing::warn!(
                connections = tasks.len(),
                "shutdown: connections still open after the grace period: aborting them"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }

        tracing::info!("shutdown: closing the endpoint");
        self.endpoint.close(
            VarInt::from_u32(close_code::SHUTTING_DOWN),
            b"relay shutting down",
        );
        let _ = tokio::time::timeout(ENDPOINT_GRACE, self.endpoint.wait_idle()).await;

        let hub_thread = self.hub_thread;
        let writer_thread = self.writer_thread;
        let joined = tokio::task::spawn_blocking(move || {
            let hub = hub_thread.join().is_ok();
            let writer = writer_thread.join().is_ok();
            hub && writer
        })
        .await;
        if !matches!(joined, Ok(true)) {
            tracing::error!("shutdown: the hub or writer thread panicked");
            if outcome.is_ok() {
                outcome = Err(ServerError::Hub(HubError::Panicked));
            }
        }
        if outcome.is_ok() {
            tracing::info!("shutdown complete");
        }
        outcome
    }
}

/// Accept connections until told to stop (or the endpoint closes); return the connection
/// tasks still running so shutdown can wait for them.
async fn accept_loop(
    endpoint: quinn::Endpoint,
    hub: mpsc::Sender<HubInput>,
    settings: ConnectionSettings,
    budget: ConnectionBudget,
    mut stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some(finished) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = finished
                    && e.is_panic()
                {
                    tracing::error!(error = %e, "a connection task panicked");
                }
            }
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Some(slot) = budget.try_take() else {
                    tracing::warn!(
                        peer = %incoming.remote_address(),
                        max_connections = budget.max(),
                        "refusing connection: max_connections reached"
                    );
                    incoming.refuse();
                    continue;
                };
                let addr = incoming.remote_address();
                let connecting = match incoming.accept() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(peer = %addr, error = %e, "incoming connection failed");
                        continue;
                    }
                };
                next_id += 1;
                tasks.spawn(connection::run(
                    connecting,
                    addr,
                    ConnId(next_id),
                    hub.clone(),
                    settings.clone(),
                    slot,
                ));
            }
        }
    }
    tasks
}
