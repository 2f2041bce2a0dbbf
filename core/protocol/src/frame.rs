//! Length-prefixed framing: a 4-byte big-endian body length, then the postcard body.

use crate::message::{MESSAGE_TAGS, Message};

/// Bytes in a frame header.
pub const FRAME_HEADER_LEN: usize = 4;

/// The default hard limit on a frame's body (4 MiB): larger than any sync message a class
/// produces in one step, small enough that a hostile peer cannot make us buffer much.
pub const DEFAULT_MAX_FRAME: usize = 4 * 1024 * 1024;

/// Why a frame is invalid.
///
/// After [`FrameError::UnknownMessage`] the offending frame has been consumed and the decoder
/// may go on (the frame boundary is intact). After any other error the stream is unusable: the
/// decoder keeps returning the same error and must be dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The header announces a body over the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced body length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// A zero-length body.
    #[error("empty frame")]
    Empty,
    /// The body starts with a message tag this build does not know (a newer peer sent a kind
    /// of message that the negotiated version does not define). The frame was consumed.
    #[error("unknown message tag {tag}")]
    UnknownMessage {
        /// The tag (postcard variant index) that was read.
        tag: u32,
    },
    /// The body is not a valid message.
    #[error("malformed message: {reason}")]
    Malformed {
        /// The decoder's explanation.
        reason: String,
    },
    /// The body decoded but left bytes unread.
    #[error("{extra} trailing bytes after the message")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
}

/// Encode one message as a frame. Fails only if the body exceeds `max` (or `u32::MAX`).
pub fn encode_frame(msg: &Message, max: usize) -> Result<Vec<u8>, FrameError> {
    let body = postcard::to_stdvec(msg).map_err(|e| FrameError::Malformed {
        reason: e.to_string(),
    })?;
    if body.len() > max {
        return Err(FrameError::TooLarge {
            len: body.len(),
            max,
        });
    }
    // The header has 32 bits: a `max` above u32::MAX does not let a larger body through.
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge {
        len: body.len(),
        max,
    })?;
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The result of one decode step.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A complete message.
    Message(Message),
    /// Not enough bytes yet; exactly this many more complete the header (if it is not yet
    /// complete) or the frame (if it is). Always at least 1.
    NeedMore(usize),
}

/// An incremental decoder: push bytes as they arrive, pull messages out.
///
/// Decoded bytes are released lazily (on the next [`push`](Self::push)), so pulling many small
/// frames out of one large read costs one buffer compaction, not one per frame.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` before this offset are already decoded.
    start: usize,
    max: usize,
}

impl FrameDecoder {
    /// A decoder enforcing `max` bytes per frame body.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max,
        }
    }

    /// Append received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read received bytes into, in place, with room for at least `want` more
    /// (decoded bytes are released first). A reader must only **append** to it (e.g. tokio's
    /// `read_buf`); this saves a separate read buffer and its copy. Give `want` from
    /// [`Decoded::NeedMore`] (capped by the caller) so an idle connection, waiting for the next
    /// header, holds a few bytes rather than a read buffer's worth.
    pub fn read_buffer(&mut self, want: usize) -> &mut Vec<u8> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(want);
        &mut self.buf
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Decode the next message, if complete. See [`FrameError`] for what an error leaves.
    pub fn next_message(&mut self) -> Result<Decoded, FrameError> {
        let pending = &self.buf[self.start..];
        match decode_one(pending, self.max) {
            Ok((Decoded::Message(m), used)) => {
                self.consume(used);
                Ok(Decoded::Message(m))
            }
            Ok((need, _)) => Ok(need),
            Err(FrameError::UnknownMessage { tag }) => {
                // decode_one only reports an unknown tag once the whole frame is buffered.
                let used = frame_len(pending).unwrap_or(0);
                self.consume(used);
                Err(FrameError::UnknownMessage { tag })
            }
            Err(e) => Err(e),
        }
    }

    fn consume(&mut self, used: usize) {
        self.start = (self.start + used).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }
}

/// Header length plus announced body length, if the header is complete.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let header: [u8; FRAME_HEADER_LEN] = buf.get(..FRAME_HEADER_LEN)?.try_into().ok()?;
    let len = usize::try_from(u32::from_be_bytes(header)).ok()?;
    FRAME_HEADER_LEN.checked_add(len)
}

/// Decode one frame from the front of `buf`: the result and how many bytes it used.
pub(crate) fn decode_one(buf: &[u8], max: usize) -> Result<(Decoded, usize), FrameError> {
    let Some(header) = buf.get(..FRAME_HEADER_LEN) else {
        return Ok((Decoded::NeedMore(FRAME_HEADER_LEN - buf.len()), 0));
    };
    let mut raw = [0u8; FRAME_HEADER_LEN];
    raw.copy_from_slice(header);
    let announced = u32::from_be_bytes(raw);
    // On a 16/32-bit target a length that does not fit usize is over any limit.
    let len = usize::try_from(announced).map_err(|_| FrameError::TooLarge {
        len: usize::MAX,
        max,
    })?;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let total = FRAME_HEADER_LEN
        .checked_add(len)
        .ok_or(FrameError::TooLarge { len, max })?;
    let Some(body) = buf.get(FRAME_HEADER_LEN..total) else {
        return Ok((Decoded::NeedMore(total - buf.len()), 0));
    };
    // The message tag is the body's first varint (postcard's enum variant index). Tell an
    // unknown kind of message from a malformed one.
    if let Ok((tag, _)) = postcard::take_from_bytes::<u32>(body)
        && tag >= MESSAGE_TAGS
    {
        return Err(FrameError::UnknownMessage { tag });
    }
    let (msg, rest) =
        postcard::take_from_bytes::<Message>(body).map_err(|e| FrameError::Malformed {
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(FrameError::TrailingBytes { extra: rest.len() });
    }
    Ok((Decoded::Message(msg), total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ErrorCode, Message};

    #[test]
    fn read_buffer_keeps_undecoded_bytes_and_makes_room() {
        let msg = |detail: &str| Message::Error {
            code: ErrorCode::Internal,
            detail: detail.into(),
            fatal: false,
        };
        let first = encode_frame(&msg("one"), DEFAULT_MAX_FRAME).unwrap();
        let second = encode_frame(&msg("two"), DEFAULT_MAX_FRAME).unwrap();
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        d.push(&first);
        d.push(&second[..3]);
        assert_eq!(d.next_message().unwrap(), Decoded::Message(msg("one")));
        // What the reader appends lands after the undecoded part of the second frame.
        let buf = d.read_buffer(100);
        assert_eq!(buf.as_slice(), &second[..3]);
        assert!(buf.capacity() - buf.len() >= 100);
        buf.extend_from_slice(&second[3..]);
        assert_eq!(d.next_message().unwrap(), Decoded::Message(msg("two")));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn round_trip_split_anywhere() {
        let msg = Message::Error {
            code: ErrorCode::LimitExceeded,
            detail: "too many".into(),
            fatal: false,
        };
        let frame = encode_frame(&msg, DEFAULT_MAX_FRAME).unwrap();
        for split in 0..frame.len() {
            let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
            d.push(&frame[..split]);
            assert!(matches!(d.next_message().unwrap(), Decoded::NeedMore(_)));
            d.push(&frame[split..]);
            assert_eq!(d.next_message().unwrap(), Decoded::Message(msg.clone()));
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn oversize_header_rejected_before_body_arrives() {
        let mut d = FrameDecoder::new(1024);
        d.push(&(2048u32).to_be_bytes());
        assert_eq!(
            d.next_message(),
            Err(FrameError::TooLarge {
                len: 2048,
                max: 1024
            })
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let mut d = FrameDecoder::new(1024);
        d.push(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
        assert!(matches!(
            d.next_message(),
            Err(FrameError::Malformed { .. })
        ));
        let mut d = FrameDecoder::new(1024);
        d.push(&[0, 0, 0, 0]);
        assert_eq!(d.next_message(), Err(FrameError::Empty));
    }
}
