//! Length-prefixed framing: a 4-byte big-endian body length, then the postcard body.

use crate::message::Message;

/// Bytes in a frame header.
pub const FRAME_HEADER_LEN: usize = 4;

/// The default hard limit on a frame's body (4 MiB): larger than any sync message a class
/// produces in one step, small enough that a hostile peer cannot make us buffer much.
pub const DEFAULT_MAX_FRAME: usize = 4 * 1024 * 1024;

/// Why a frame is invalid. Any of these ends the stream it arrived on.
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

/// Encode one message as a frame. Fails only if the message exceeds `max`.
pub fn encode_frame(msg: &Message, max: usize) -> Result<Vec<u8>, FrameError> {
    let body = postcard::to_stdvec(msg).map_err(|e| FrameError::Malformed {
        reason: e.to_string(),
    })?;
    if body.len() > max {
        return Err(FrameError::TooLarge { len: body.len(), max });
    }
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + body.len());
    // body.len() <= max <= u32::MAX is checked by the limit (max is a usize set by us, and the
    // conversion fails loudly rather than truncating).
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge {
        len: body.len(),
        max,
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The result of one decode step.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A complete message.
    Message(Message),
    /// Not enough bytes yet; at least this many more are needed.
    NeedMore(usize),
}

/// An incremental decoder: push bytes as they arrive, pull messages out.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max: usize,
}

impl FrameDecoder {
    /// A decoder enforcing `max` bytes per frame body.
    pub fn new(max: usize) -> Self {
        Self { buf: Vec::new(), max }
    }

    /// Append received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Decode the next message, if complete. After an error the decoder must be dropped.
    pub fn next_message(&mut self) -> Result<Decoded, FrameError> {
        match decode_one(&self.buf, self.max)? {
            (Decoded::Message(m), used) => {
                self.buf.drain(..used);
                Ok(Decoded::Message(m))
            }
            (need, _) => Ok(need),
        }
    }
}

/// Decode one frame from the front of `buf`: the result and how many bytes it used.
pub(crate) fn decode_one(buf: &[u8], max: usize) -> Result<(Decoded, usize), FrameError> {
    if buf.len() < FRAME_HEADER_LEN {
        return Ok((Decoded::NeedMore(FRAME_HEADER_LEN - buf.len()), 0));
    }
    let mut header = [0u8; FRAME_HEADER_LEN];
    header.copy_from_slice(&buf[..FRAME_HEADER_LEN]);
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let total = FRAME_HEADER_LEN + len;
    if buf.len() < total {
        return Ok((Decoded::NeedMore(total - buf.len()), 0));
    }
    let body = &buf[FRAME_HEADER_LEN..total];
    let (msg, rest) = postcard::take_from_bytes::<Message>(body).map_err(|e| FrameError::Malformed {
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
            Err(FrameError::TooLarge { len: 2048, max: 1024 })
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let mut d = FrameDecoder::new(1024);
        d.push(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_message(), Err(FrameError::Malformed { .. })));
        let mut d = FrameDecoder::new(1024);
        d.push(&[0, 0, 0, 0]);
        assert_eq!(d.next_message(), Err(FrameError::Empty));
    }
}
