//! Both ends of a TLS-over-TCP fallback connection probe a silent peer (TCP keep-alive), so a
//! device that vanished without closing is dropped by the relay, and a lost relay noticed by
//! the device. Loopback cannot lose a peer silently (its kernel answers the probes), so this
//! checks the socket options each end sets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use homeroom_transport::{
    RelayCertificate, TCP_KEEPALIVE_IDLE, TCP_KEEPALIVE_INTERVAL, TcpTlsStream, accept_tcp,
    connect_tcp, tcp_server_config,
};

fn tcp_of(stream: &TcpTlsStream) -> &tokio::net::TcpStream {
    match stream {
        tokio_rustls::TlsStream::Client(s) => s.get_ref().0,
        tokio_rustls::TlsStream::Server(s) => s.get_ref().0,
    }
}

fn keepalive_of(stream: &TcpTlsStream) -> (bool, Duration, Duration) {
    let sock = socket2::SockRef::from(tcp_of(stream));
    (
        sock.keepalive().unwrap(),
        sock.tcp_keepalive_time().unwrap(),
        sock.tcp_keepalive_interval().unwrap(),
    )
}

#[tokio::test]
async fn both_ends_of_a_fallback_connection_probe_a_silent_peer() {
    let cert = RelayCertificate::generate(&[]).unwrap();
    let config = tcp_server_config(&cert).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        accept_tcp(config, tcp).await.unwrap()
    });
    let client = connect_tcp(addr, cert.fingerprint, Duration::from_secs(10))
        .await
        .unwrap();
    let server = server.await.unwrap();
    for (end, stream) in [("device", &client), ("relay", &server)] {
        assert_eq!(
            keepalive_of(stream),
            (true, TCP_KEEPALIVE_IDLE, TCP_KEEPALIVE_INTERVAL),
            "{end} end"
        );
    }
    #[cfg(target_os = "linux")]
    for stream in [&client, &server] {
        assert_eq!(
            socket2::SockRef::from(tcp_of(stream))
                .tcp_keepalive_retries()
                .unwrap(),
            homeroom_transport::TCP_KEEPALIVE_RETRIES
        );
    }
}
