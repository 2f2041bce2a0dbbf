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

/// The most bytes taken from quinn's receive buffer in one read.
const READ_CHUNK: usize = 64 * 1024;

/// The receiving half: reads and decodes frames, enforcing the size limit before buffering.
///
/// Memory: it owns no read buffer (it takes quinn's received chunks as they are) and, while no
/// partial frame is buffered, no decode buffer either: an idle connection holds nothing here,
/// whatever size its earlier frames had.
#[derive(Debug)]
pub struct FramedRecv {
    stream: quinn::RecvStream,
    decoder: FrameDecoder,
    max_frame: usize,
    /// Bytes read so far.
    pub bytes: u64,
}

impl FramedRecv {
    /// Wrap a receive stream.
    pub fn new(stream: quinn::RecvStream, max_frame: usize) -> Self {
        Self {
            stream,
            decoder: FrameDecoder::new(max_frame),
            max_frame,
            bytes: 0,
        }
    }

    /// The next message; `Ok(None)` when the peer finished the stream cleanly between frames.
    pub async fn recv(&mut self) -> Result<Option<Message>, TransportError> {
        loop {
            if let Decoded::Message(m) = self.decoder.next_message()? {
                return Ok(Some(m));
            }
            if self.decoder.buffered() == 0 {
                // Nothing pending: release the decode buffer (it keeps the capacity of the
                // largest frame seen, up to `max_frame`) before waiting, maybe for hours.
                self.decoder = FrameDecoder::new(self.max_frame);
            }
            match self.stream.read_chunk(READ_CHUNK, true).await? {
                Some(chunk) => {
                    self.bytes += chunk.bytes.len() as u64;
                    self.decoder.push(&chunk.bytes);
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
