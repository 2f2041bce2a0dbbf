//! The relay's UDP socket for quinn, with a cap on the datagrams quinn may batch into one send.
//!
//! quinn gives every connection its own send buffer, reserves room in it for a full batch of
//! datagrams (GSO segments: 10 on Linux, ~14.5 KiB) on the connection's first send, and never
//! shrinks it: a quarter of an idle relay connection's memory. One segment per send bounds it
//! to a datagram or two (~3.5 KiB with the MTU probes' growth). The cost is one `sendmsg` per
//! datagram instead of one per batch, which only shows on bulk transfers (a fresh device
//! fetching a school year: ~7,000 datagrams); see docs/benchmarks.md.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, UdpPoller};

/// Datagrams per send on the relay's socket (see the module documentation).
pub const RELAY_SEND_SEGMENTS: usize = 1;

/// The kernel receive buffer the relay asks for on its UDP socket: 4 MiB. With the Linux
/// default (208 KiB) a relay with a few hundred busy devices drops datagrams in bursts (seen:
/// 16 % of them in the W2 bench at 100 classes, each loss a QUIC retransmission after a
/// probe timeout — hundreds of ms of tail latency). Linux caps the request at
/// `net.core.rmem_max`; the relay logs what it got.
pub const RELAY_UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// Ask for a `bytes` kernel receive buffer on `socket`; returns the size the kernel granted
/// (Linux reports twice the usable size, capped by `net.core.rmem_max`).
pub fn set_udp_receive_buffer(socket: &std::net::UdpSocket, bytes: usize) -> io::Result<usize> {
    let state = quinn::udp::UdpSocketState::new(socket.into())?;
    state.set_recv_buffer_size(socket.into(), bytes)?;
    state.recv_buffer_size(socket.into())
}

/// Wrap `socket` for quinn's tokio runtime, sending at most `max_segments` datagrams per
/// system call (at least 1; never more than the platform supports).
pub fn segment_capped_socket(
    socket: std::net::UdpSocket,
    max_segments: usize,
) -> io::Result<Arc<dyn AsyncUdpSocket>> {
    let inner = quinn::TokioRuntime.wrap_udp_socket(socket)?;
    Ok(Arc::new(SegmentCapped {
        inner,
        max_segments: max_segments.max(1),
    }))
}

/// Delegates everything to the runtime's socket except the segment limit.
struct SegmentCapped {
    inner: Arc<dyn AsyncUdpSocket>,
    max_segments: usize,
}

impl fmt::Debug for SegmentCapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentCapped")
            .field("inner", &self.inner)
            .field("max_segments", &self.max_segments)
            .finish()
    }
}

impl AsyncUdpSocket for SegmentCapped {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments().min(self.max_segments)
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_buffer_grows() -> io::Result<()> {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let before = quinn::udp::UdpSocketState::new((&socket).into())?
            .recv_buffer_size((&socket).into())?;
        let granted = set_udp_receive_buffer(&socket, before * 4)?;
        assert!(
            granted > before,
            "asked for {} and got {granted}",
            before * 4
        );
        Ok(())
    }

    #[tokio::test]
    async fn caps_send_segments_and_keeps_the_rest() -> io::Result<()> {
        let plain =
            quinn::TokioRuntime.wrap_udp_socket(std::net::UdpSocket::bind("127.0.0.1:0")?)?;
        let capped = segment_capped_socket(std::net::UdpSocket::bind("127.0.0.1:0")?, 1)?;
        assert_eq!(capped.max_transmit_segments(), 1);
        assert_eq!(capped.max_receive_segments(), plain.max_receive_segments());
        assert_eq!(capped.may_fragment(), plain.may_fragment());
        let zero = segment_capped_socket(std::net::UdpSocket::bind("127.0.0.1:0")?, 0)?;
        assert_eq!(zero.max_transmit_segments(), 1);
        Ok(())
    }
}
