//! `homeroom-relay`: the relay binary. See the library's crate documentation for the design
//! and `deploy/relay.example.toml` for the configuration.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use homeroom_relay::files::CERTIFICATE_FILE;
use homeroom_relay::{LogFormat, Overrides, RelayConfig, RelaySettings, Server, open_sqlite_with};
use homeroom_transport::{RelayCertificate, fingerprint_of};
use tracing_subscriber::EnvFilter;

mod admin_cli;

/// Homeroom relay: syncs class notebooks between devices over QUIC and keeps them durably.
///
/// With no arguments it serves on the built-in defaults: UDP 0.0.0.0:4433, data in
/// ./homeroom-data (store relay.sqlite3, and a self-signed certificate generated on first
/// start and kept; devices pin its SHA-256 fingerprint). Settings come from, lowest first:
/// defaults, --config FILE, environment variables, flags. Log level: RUST_LOG (default info).
#[derive(Debug, Parser)]
#[command(name = "homeroom-relay", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML configuration file (every key optional; see deploy/relay.example.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// UDP address to listen on [default: 0.0.0.0:4433; port 0 picks a free port].
    #[arg(long, global = true, env = "HOMEROOM_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Data directory holding the store and the certificate [default: ./homeroom-data].
    #[arg(long, global = true, env = "HOMEROOM_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log format on standard error [default: text].
    #[arg(long, global = true, env = "HOMEROOM_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Subcommand)]
enum Command {
    /// Run the relay until SIGTERM or SIGINT (the default).
    Serve,
    /// Print the SHA-256 fingerprint of the kept certificate (hex) and exit.
    Fingerprint,
    /// Administer the school: classes, invites, devices, exports, backup and restore.
    #[command(subcommand)]
    Admin(admin_cli::AdminCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut logging = false;
    match run(cli, &mut logging) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if logging {
                tracing::error!("{e:#}");
            } else {
                eprintln!("homeroom-relay: error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, logging: &mut bool) -> anyhow::Result<()> {
    let mut config = match &cli.config {
        Some(path) => RelayConfig::load(path)?,
        None => RelayConfig::default(),
    };
    config.apply(&Overrides {
        listen: cli.listen,
        data_dir: cli.data_dir,
        log_format: cli.log_format,
    });
    let settings = config.into_settings()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Fingerprint => print_fingerprint(&settings.data_dir),
        Command::Admin(cmd) => admin_cli::run(cmd, &settings),
        Command::Serve => {
            init_logging(settings.log_format);
            *logging = true;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(settings.network_threads)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let result = runtime.block_on(serve(settings));
            // Do not wait for blocking tasks: after a second signal, shutdown may still be
            // joining threads that wait for the disk.
            runtime.shutdown_background();
            result
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

fn print_fingerprint(data_dir: &Path) -> anyhow::Result<()> {
    let path = data_dir.join(CERTIFICATE_FILE);
    if !path.exists() {
        bail!(
            "no certificate at {}: start the relay once (homeroom-relay serve) to generate it",
            path.display()
        );
    }
    let der = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    println!("{}", hex_of(&fingerprint_of(&der)));
    Ok(())
}

fn hex_of(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

async fn serve(settings: RelaySettings) -> anyhow::Result<()> {
    let dir = &settings.data_dir;
    create_private_dir(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let store_path = settings.store_path();
    let (reader, writer) = open_sqlite_with(&store_path, settings.store_fsync)
        .with_context(|| format!("cannot open the store {}", store_path.display()))?;
    if !settings.store_fsync {
        tracing::warn!(
            "unsafe_no_fsync is on: store commits are not fsynced; acknowledged changes can be lost on a crash (benchmarks only)"
        );
    }
    let (cert, generated) = RelayCertificate::load_or_generate(dir, &settings.certificate_names)
        .context("cannot load or generate the certificate")?;
    let fingerprint = cert.fingerprint_hex();
    if generated {
        tracing::info!(dir = %dir.display(), "generated a new self-signed certificate (kept; devices pin its fingerprint)");
    } else {
        tracing::info!(dir = %dir.display(), "loaded the kept certificate");
    }

    // Install the handlers before announcing the address, so no signal is missed.
    let mut signals = Signals::new().context("cannot install signal handlers")?;
    // The operations listener first: a bad `http.listen` fails before devices are served.
    let _http = match settings.http {
        Some(http_addr) => {
            let http = homeroom_relay::http::HttpServer::start(http_addr).await?;
            let bound = http.local_addr();
            println!("metrics on http://{bound}/metrics, health on http://{bound}/healthz");
            tracing::info!(addr = %bound, "serving /metrics and /healthz");
            Some(http)
        }
        None => None,
    };
    if let Some(w) = &settings.webhook {
        tracing::info!(url = %w.url, quiet_hours = ?w.quiet_hours, "notification webhook on");
    }
    let mut server = Server::start(&settings, reader, writer, &cert)?;
    let addr = server.local_addr();
    println!("listening on {addr} (QUIC/UDP), certificate fingerprint (SHA-256): {fingerprint}");
    if let Some(tcp) = server.tcp_addr() {
        println!("TCP fallback listening on {tcp} (TLS/TCP)");
        tracing::info!(%tcp, "TCP fallback listening on {tcp} (TLS/TCP)");
    }
    tracing::info!(%addr, %fingerprint, "listening on {addr}, certificate fingerprint (SHA-256): {fingerprint}");

    let failure = tokio::select! {
        signal = signals.recv() => {
            tracing::info!(signal, "shutdown: signal received");
            None
        }
        err = server.failed() => Some(err),
    };
    if let Some(err) = failure {
        let err = anyhow::Error::from(err);
        tracing::error!("relay failed, shutting down: {err:#}");
        if let Err(e) = server.shutdown().await {
            tracing::error!("shutdown after failure: {:#}", anyhow::Error::from(e));
        }
        return Err(err.context("the relay stopped abnormally"));
    }
    tokio::select! {
        result = server.shutdown() => result?,
        signal = signals.recv() => {
            bail!("{signal} received again during shutdown: exiting before it finished");
        }
    }
    Ok(())
}

/// Create `dir` (and its parents) readable by the owner only: it holds the certificate key.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// SIGTERM and SIGINT (Ctrl-C).
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// The next signal's name.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
