//! Hybrid logical clocks: last-writer-wins and deterministic tie-breaks.
//!
//! An [`Hlc`] is a wall-clock time in milliseconds, a counter that orders events within the
//! same millisecond (or while the wall clock lags behind a timestamp already seen), and the
//! device that made the event. The order is total — wall time, then counter, then device — so
//! every replica that sees the same set of stamps picks the same winner.
//!
//! The core keeps no clock state between calls: a write derives its stamp from the stamps it
//! can see at the place it writes ([`Hlc::after`]) and the caller's `now`. That is enough for
//! the properties the activities need: a change made after seeing another change is stamped
//! later than it (even with a lagging wall clock), and concurrent changes are ordered by wall
//! time with a deterministic tie-break.
//!
//! Inside documents a stamp is stored as a fixed-width string ([`Hlc::encode`]) whose byte
//! order is the stamp order.

use std::cmp::Ordering;
use std::fmt;

use automerge::{ObjId, ReadDoc};

use crate::error::ModelError;
use crate::identity::DeviceId;
use crate::values::get_str;

/// A hybrid-logical-clock timestamp. Ordered by `wall_ms`, then `counter`, then `device`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hlc {
    /// Wall-clock milliseconds since the Unix epoch (possibly advanced past the local clock
    /// by a later stamp seen from another device).
    pub wall_ms: i64,
    /// Orders events that share `wall_ms`.
    pub counter: u32,
    /// The device that made the event: the final tie-break.
    pub device: DeviceId,
}

impl Hlc {
    /// A stamp from its parts.
    pub fn new(wall_ms: i64, counter: u32, device: DeviceId) -> Self {
        Self {
            wall_ms,
            counter,
            device,
        }
    }

    /// The clock of `device` before it has seen or made any event: below every real stamp.
    pub fn zero(device: DeviceId) -> Self {
        Self::new(i64::MIN, 0, device)
    }

    /// Advance this clock for a local event at wall time `now` and return the event's stamp.
    /// The result is strictly greater (in wall time and counter) than every stamp this clock
    /// has made or observed.
    pub fn tick(&mut self, now: i64) -> Hlc {
        if now > self.wall_ms {
            self.wall_ms = now;
            self.counter = 0;
        } else if self.counter == u32::MAX {
            self.wall_ms = self.wall_ms.saturating_add(1);
            self.counter = 0;
        } else {
            self.counter += 1;
        }
        *self
    }

    /// Merge a stamp seen from another device, so the next [`tick`](Self::tick) is later than it.
    pub fn observe(&mut self, remote: &Hlc) {
        if (remote.wall_ms, remote.counter) > (self.wall_ms, self.counter) {
            self.wall_ms = remote.wall_ms;
            self.counter = remote.counter;
        }
    }

    /// The stamp of an event by `device` at `now` that follows every stamp in `seen`.
    pub fn after<'a>(device: DeviceId, now: i64, seen: impl IntoIterator<Item = &'a Hlc>) -> Hlc {
        let mut clock = Hlc::zero(device);
        for s in seen {
            clock.observe(s);
        }
        clock.tick(now)
    }

    /// Compare only the time parts (wall time and counter), ignoring the device.
    pub fn cmp_time(&self, other: &Hlc) -> Ordering {
        (self.wall_ms, self.counter).cmp(&(other.wall_ms, other.counter))
    }

    /// The fixed-width string form stored in documents: 16 hex digits of the wall time (sign
    /// bit flipped so negative times sort first), 8 hex digits of counter and the device's 64
    /// hex digits, separated by `-`. Byte order of encodings equals stamp order.
    pub fn encode(&self) -> String {
        let wall = (self.wall_ms as u64) ^ (1 << 63);
        format!("{wall:016x}-{:08x}-{}", self.counter, self.device.to_hex())
    }

    /// Parse [`encode`](Self::encode)'s form.
    pub fn decode(s: &str) -> Result<Hlc, ModelError> {
        let corrupt = || ModelError::Corrupt {
            what: format!(
                "invalid stamp {:?}",
                s.chars().take(100).collect::<String>()
            ),
        };
        let mut parts = s.split('-');
        let (Some(w), Some(c), Some(d), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(corrupt());
        };
        if w.len() != 16 || c.len() != 8 || d.len() != 64 {
            return Err(corrupt());
        }
        let lower = |x: &str| {
            x.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !lower(w) || !lower(c) || !lower(d) {
            return Err(corrupt());
        }
        let wall = u64::from_str_radix(w, 16).map_err(|_| corrupt())? ^ (1 << 63);
        let counter = u32::from_str_radix(c, 16).map_err(|_| corrupt())?;
        let mut dev = [0u8; 32];
        hex::decode_to_slice(d, &mut dev).map_err(|_| corrupt())?;
        Ok(Hlc::new(wall as i64, counter, DeviceId(dev)))
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Hlc({}.{}@{})",
            self.wall_ms,
            self.counter,
            self.device.short()
        )
    }
}

/// The stamp stored at `obj[key]`, if present and well formed. A malformed stamp reads as
/// absent: it can only come from a buggy or hostile writer, and the item is then ignored.
pub(crate) fn read_stamp(
    doc: &impl ReadDoc,
    obj: &ObjId,
    key: &str,
) -> Result<Option<Hlc>, ModelError> {
    Ok(get_str(doc, obj, key)?.and_then(|s| Hlc::decode(&s).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(b: u8) -> DeviceId {
        DeviceId([b; 32])
    }

    #[test]
    fn encoding_round_trips_and_sorts_like_the_stamps() {
        let stamps = [
            Hlc::zero(dev(1)),
            Hlc::new(-5, 3, dev(1)),
            Hlc::new(0, 0, dev(0)),
            Hlc::new(0, 0, dev(9)),
            Hlc::new(0, 1, dev(0)),
            Hlc::new(1_700_000_000_000, 0, dev(2)),
            Hlc::new(1_700_000_000_000, u32::MAX, dev(2)),
            Hlc::new(i64::MAX, u32::MAX, dev(255)),
        ];
        for w in stamps.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].encode() < w[1].encode(), "{:?} vs {:?}", w[0], w[1]);
        }
        for s in stamps {
            assert_eq!(Hlc::decode(&s.encode()).unwrap(), s);
        }
        assert!(Hlc::decode("nonsense").is_err());
        assert!(Hlc::decode(&Hlc::zero(dev(0xab)).encode().to_uppercase()).is_err());
        assert!(Hlc::decode(&format!("{}-x", Hlc::zero(dev(1)).encode())).is_err());
    }

    #[test]
    fn tick_and_observe_move_forward() {
        let mut c = Hlc::zero(dev(1));
        let a = c.tick(100);
        assert_eq!((a.wall_ms, a.counter), (100, 0));
        // Wall clock going backwards still gives a later stamp.
        let b = c.tick(50);
        assert!(b > a);
        assert_eq!((b.wall_ms, b.counter), (100, 1));
        // A remote stamp ahead of us pushes the next tick past it.
        let remote = Hlc::new(500, 7, dev(0));
        c.observe(&remote);
        let d = c.tick(200);
        assert!(d.cmp_time(&remote) == Ordering::Greater);
        assert_eq!(d.device, dev(1));
        // Counter overflow spills into the wall time.
        let mut e = Hlc::new(10, u32::MAX, dev(1));
        let f = e.tick(0);
        assert_eq!((f.wall_ms, f.counter), (11, 0));
        let g = Hlc::after(dev(3), 10, [&remote, &a]);
        assert!(g.cmp_time(&remote) == Ordering::Greater);
    }
}
