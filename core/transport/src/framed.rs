//! Protocol messages over one QUIC bidirectional stream.

use homeroom_protocol::{Decoded, EXPORTER_LABEL, FrameDecoder, Message, encode_frame};

use crate::error::TransportError;

/// The 32-byte TLS exporter value of a connection, which the device signs in `Hello` so a
/// captured `Hello` is useless on any other TLS session.
pub fn exporter(conn: &quinn::Connection) -> Result<[u8; 32], TransportError> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .map_err(|_| TransportError::Exporter)?;
    Ok(out)
}

/// The sending half: encodes and writes frames.
#[derive(Debug)]
pub struct FramedSend {
    stream: quinn::SendStream,
    max_frame: usize,
    /// Bytes written so far (for metrics and benchmarks).
    pub bytes: u64,
}

impl FramedSend {
    /// Wrap a send stream; frames larger than `max_frame` are refused before sending.
    pub fn new(stream: quinn::SendStream, max_frame: usize) -> Self {
        Self {
            stream,
            max_frame,
            bytes: 0,
        }
    }

    /// Encode and send one message.
    pub async fn send(&mut self, msg: &Message) -> Result<(), TransportError> {
        let frame = encode_frame(msg, self.max_frame)?;
        self.stream.write_all(&frame).await?;
        self.bytes += frame.len() as u64;
        Ok(())
    }

    /// Finish the stream (graceful end).
    pub fn finish(&mut self) {
        let _ = self.stream.finish();
    }
}

/// The receiving half: reads and decodes frames, enforcing the size limit before buffering.
#[derive(Debug)]
pub struct FramedRecv {
    stream: quinn::RecvStream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
    /// Bytes read so far.
    pub bytes: u64,
}

impl FramedRecv {
    /// Wrap a receive stream.
    pub fn new(stream: quinn::RecvStream, max_frame: usize) -> Self {
        Self {
            stream,
            decoder: FrameDecoder::new(max_frame),
            buf: vec![0u8; 64 * 1024],
            bytes: 0,
        }
    }

    /// The next message; `Ok(None)` when the peer finished the stream cleanly between frames.
    pub async fn recv(&mut self) -> Result<Option<Message>, TransportError> {
        loop {
            if let Decoded::Message(m) = self.decoder.next_message()? {
                return Ok(Some(m));
            }
            match self.stream.read(&mut self.buf).await? {
                Some(n) => {
                    self.bytes += n as u64;
                    self.decoder.push(&self.buf[..n]);
                }
                None if self.decoder.buffered() == 0 => return Ok(None),
                None => {
                    return Err(TransportError::Truncated {
                        buffered: self.decoder.buffered(),
                    });
                }
            }
        }
    }
}
