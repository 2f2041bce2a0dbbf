//! Bench-only samod sync server: a samod `Repo` behind an axum WebSocket endpoint, speaking the
//! automerge-repo WebSocket protocol, so the same automerge-repo JS clients drive it as drive
//! `@automerge/automerge-repo-sync-server`.
//!
//! Usage: `samod-bench-server <port> <data-dir|:memory:>`. Prints `Listening on port N` once
//! ready. Like the JS sync server it does not announce documents to peers (peers ask by id) and
//! stores on the filesystem (nodefs-compatible layout) unless `:memory:` is given.

use std::net::SocketAddr;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use samod::{AcceptorHandle, Repo, ShareConfig};

async fn ws_handler(
    ws: WebSocketUpgrade,
    State(acceptor): State<AcceptorHandle>,
) -> axum::response::Response {
    ws.max_message_size(256 << 20)
        .on_upgrade(|socket| async move {
            if let Err(e) = acceptor.accept_axum(socket, None) {
                eprintln!("samod-bench-server: accept failed: {e:?}");
            }
        })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let data = args.next().unwrap_or_else(|| ":memory:".to_owned());
    // Server-like policy: peers may read and write what they ask for by id; no announcing.
    let policy = ShareConfig::read_write().with_announce(false);
    let builder = Repo::build_tokio().with_share_policy(policy);
    let repo = if data == ":memory:" {
        builder.load().await
    } else {
        builder
            .with_storage(samod::storage::TokioFilesystemStorage::new(&data))
            .load()
            .await
    };
    let listener =
        match tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("samod-bench-server: cannot bind port {port}: {e}");
                std::process::exit(1);
            }
        };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
    let url = match url::Url::parse(&format!("ws://127.0.0.1:{port}")) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("samod-bench-server: bad url: {e}");
            std::process::exit(1);
        }
    };
    let acceptor = match repo.make_acceptor(url) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("samod-bench-server: repo stopped: {e:?}");
            std::process::exit(1);
        }
    };
    let app = axum::Router::new()
        .route("/", axum::routing::get(ws_handler))
        .with_state(acceptor);
    println!("Listening on port {port}");
    let serve = axum::serve(listener, app).with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    if let Err(e) = serve.await {
        eprintln!("samod-bench-server: {e}");
    }
    repo.stop().await;
}
