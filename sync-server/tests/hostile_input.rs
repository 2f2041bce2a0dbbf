//! Garbage on the wire ends at most the connection that sent it.

mod support;

use std::net::UdpSocket;
use std::time::Duration;

use homeroom_protocol::{DEFAULT_MAX_FRAME, ErrorCode, Message};
use homeroom_transport::FramedRecv;
use support::Relay;
use support::device::{Device, device_node, quic_connect};

const STEP: Duration = Duration::from_secs(15);

/// Open a stream, write `bytes`, and return the first frame the relay answers with and how
/// the connection then ended.
async fn send_raw(
    relay: &Relay,
    bytes: &[u8],
) -> anyhow::Result<(Option<Message>, quinn::ConnectionError, u16)> {
    let (endpoint, conn) = quic_connect(relay.addr, relay.fingerprint).await?;
    let port = endpoint.local_addr()?.port();
    let (mut send, recv) = conn.open_bi().await?;
    send.write_all(bytes).await?;
    let mut recv = FramedRecv::new(recv, DEFAULT_MAX_FRAME);
    let answer = tokio::time::timeout(STEP, recv.recv()).await??;
    let closed = tokio::time::timeout(STEP, conn.closed()).await?;
    Ok((answer, closed, port))
}

fn closed_by_relay_with_protocol_error(e: &quinn::ConnectionError) -> bool {
    matches!(e, quinn::ConnectionError::ApplicationClosed(c)
        if c.error_code == quinn::VarInt::from_u32(homeroom_relay::close_code::PROTOCOL_ERROR))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_close_only_their_connection() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut relay = Relay::start(dir.path(), &[])?;

    // 1. Datagrams that are not QUIC at all (and some that look like long headers).
    let udp = UdpSocket::bind("127.0.0.1:0")?;
    let mut x: u32 = 0x1234_5678;
    for i in 0..300usize {
        let len = 1 + (i * 37) % 1400;
        let mut datagram: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        if i % 3 == 0 {
            datagram[0] = 0xc0; // long header, Initial
        }
        udp.send_to(&datagram, relay.addr)?;
    }

    // 2. A frame header announcing 1 GiB: refused from the header, before any buffering.
    let mut huge = (1u32 << 30).to_be_bytes().to_vec();
    huge.extend_from_slice(&[0u8; 64]);
    let (answer, closed, port) = send_raw(&relay, &huge).await?;
    assert!(
        matches!(
            answer,
            Some(Message::Error {
                code: ErrorCode::FrameTooLarge,
                fatal: true,
                ..
            })
        ),
        "{answer:?}"
    );
    assert!(closed_by_relay_with_protocol_error(&closed), "{closed:?}");
    assert!(
        relay.wait_for_log(&format!("127.0.0.1:{port}"), Duration::from_secs(5))
            && relay.stderr().contains("undecodable frame"),
        "the warning names the peer address"
    );

    // 3. A malformed body.
    let (answer, closed, _) = send_raw(&relay, &[0, 0, 0, 3, 0xff, 0xff, 0xff]).await?;
    assert!(
        matches!(
            answer,
            Some(Message::Error {
                code: ErrorCode::MalformedFrame,
                fatal: true,
                ..
            })
        ),
        "{answer:?}"
    );
    assert!(closed_by_relay_with_protocol_error(&closed), "{closed:?}");

    // 4. The relay still serves a well-behaved device.
    assert!(relay.is_running());
    let mut device = Device::connect(device_node([5; 32])?, relay.addr, relay.fingerprint).await?;
    device
        .until(STEP, |m| matches!(m, Message::Catalog { .. }))
        .await?;
    assert!(matches!(
        device.received.first(),
        Some(Message::Welcome { .. })
    ));
    assert!(relay.is_running());
    Ok(())
}
