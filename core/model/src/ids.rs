//! Identifiers that travel in documents and on the wire.
//!
//! Every id is a fixed number of random bytes chosen by the caller (the core never draws
//! randomness itself) and shown as lowercase hex, which is also its key inside documents.
//! Item ids start with a descending count of seconds instead, so that newer items sort first
//! as map keys ([`IdSource::item_id`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An id was not the expected hex string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id {input:?}: expected {len} lowercase hex characters")]
pub struct ParseIdError {
    /// Which kind of id was being parsed.
    pub kind: &'static str,
    /// The rejected input (truncated to 80 characters).
    pub input: String,
    /// The expected number of hex characters.
    pub len: usize,
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $len:expr, $kind:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Lowercase hex, the form used as a key inside documents.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let err = || ParseIdError {
                    kind: $kind,
                    input: s.chars().take(80).collect(),
                    len: $len * 2,
                };
                if s.len() != $len * 2 || s.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(err());
                }
                let mut out = [0u8; $len];
                hex::decode_to_slice(s, &mut out).map_err(|_| err())?;
                Ok(Self(out))
            }
        }
    };
}

hex_id!(
    /// A class: derived from its founding device key and a nonce (see [`crate::roster`]).
    ClassId, 16, "class"
);
hex_id!(
    /// A family (household) within a class: random, chosen by the staff device that adds it.
    FamilyId, 8, "family"
);
hex_id!(
    /// A member (teacher, guardian, admin) of a class.
    MemberId, 8, "member"
);
hex_id!(
    /// A student within a family.
    StudentId, 8, "student"
);
hex_id!(
    /// Any item inside a document: an entry, a revision, a reply, an event, a slot, a request…
    /// Made by [`IdSource::item_id`]: a descending count of seconds, then random bytes.
    ItemId, 8, "item"
);

/// Start of [`ItemId::time_prefix`]'s count: 2024-01-01T00:00:00Z, in ms since the epoch.
const ITEM_EPOCH_MS: i64 = 1_704_067_200_000;

impl ItemId {
    /// The first four bytes of an item id made at `now_ms`: `0xFFFFFFFF` minus the seconds
    /// since 2024-01-01, so later items sort first (byte order and hex order agree). Clamped:
    /// clocks before 2024 give `ffffffff`, and from 2160 on (2³² seconds) it stays `00000000`
    /// — ids then order randomly again, which costs speed, never correctness.
    pub fn time_prefix(now_ms: i64) -> [u8; 4] {
        let seconds = now_ms.saturating_sub(ITEM_EPOCH_MS).max(0) / 1_000;
        let down = 0xFFFF_FFFF_i64.saturating_sub(seconds).max(0);
        let b = down.to_be_bytes();
        [b[4], b[5], b[6], b[7]]
    }
}

/// A source of fresh random ids, supplied by the caller so the core stays deterministic in tests.
pub trait IdSource {
    /// Fill `out` with fresh random bytes.
    fn fill(&mut self, out: &mut [u8]);

    /// A fresh [`ItemId`] for an item created at `now_ms` (ms since the Unix epoch): four
    /// bytes that count *down* in seconds ([`ItemId::time_prefix`]), then four random bytes.
    ///
    /// Why not all random: items are keys of large maps (a year's entries, a lane's
    /// signatures), and Automerge applies a new map key by walking the map's keys that sort
    /// before it — linear in the map's size for a random key. Newest-first keys sort before
    /// all older ones, so the walk stops at once and applying stays flat over a school year,
    /// and also through a burst (items made in the same second order randomly among
    /// themselves only). Four random bytes keep ids of the same second apart (a collision
    /// among 100 items made in one second: about 1 in 10⁶).
    fn item_id(&mut self, now_ms: i64) -> ItemId {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&ItemId::time_prefix(now_ms));
        self.fill(&mut b[4..]);
        ItemId(b)
    }

    /// A fresh [`FamilyId`].
    fn family_id(&mut self) -> FamilyId {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        FamilyId(b)
    }

    /// A fresh [`MemberId`].
    fn member_id(&mut self) -> MemberId {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        MemberId(b)
    }

    /// A fresh [`StudentId`].
    fn student_id(&mut self) -> StudentId {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        StudentId(b)
    }
}

impl<T: IdSource + ?Sized> IdSource for &mut T {
    fn fill(&mut self, out: &mut [u8]) {
        (**self).fill(out)
    }
}

/// A deterministic [`IdSource`] (splitmix64) for tests and simulations. Not for production ids.
#[derive(Debug, Clone)]
pub struct SeededIds(u64);

impl SeededIds {
    /// A source seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
}

impl IdSource for SeededIds {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_bad_input() {
        let id = FamilyId([1, 2, 3, 4, 5, 6, 7, 0xff]);
        let s = id.to_hex();
        assert_eq!(s, "01020304050607ff");
        assert_eq!(s.parse::<FamilyId>(), Ok(id));
        assert!("01020304050607FF".parse::<FamilyId>().is_err());
        assert!("0102".parse::<FamilyId>().is_err());
        assert!("zz020304050607ff".parse::<FamilyId>().is_err());
    }

    #[test]
    fn seeded_ids_are_deterministic_and_distinct() {
        let mut a = SeededIds::new(7);
        let mut b = SeededIds::new(7);
        let x = a.item_id(0);
        assert_eq!(x, b.item_id(0));
        assert_ne!(x, a.item_id(0));
    }

    #[test]
    fn later_items_sort_first_and_the_prefix_is_clamped() {
        let mut ids = SeededIds::new(3);
        let jan = ITEM_EPOCH_MS + 365 * 86_400_000; // 2025
        let earlier = ids.item_id(jan);
        let same_second = ids.item_id(jan + 999); // `jan` starts a second
        let later = ids.item_id(jan + 1_000);
        let much_later = ids.item_id(jan + 200 * 86_400_000);
        assert!(later < earlier && much_later < later, "newest first");
        assert!(
            later.to_hex() < earlier.to_hex(),
            "hex keys order like the bytes"
        );
        assert_eq!(earlier.0[..4], same_second.0[..4]);
        assert_ne!(earlier, same_second, "the random part tells them apart");
        assert_eq!(ItemId::time_prefix(0), [0xff; 4], "clocks before 2024");
        assert_eq!(ItemId::time_prefix(ITEM_EPOCH_MS), [0xff; 4]);
        assert_eq!(
            ItemId::time_prefix(ITEM_EPOCH_MS + 1_000),
            [0xff, 0xff, 0xff, 0xfe]
        );
        assert_eq!(ItemId::time_prefix(i64::MAX), [0; 4], "after 2160");
        assert_eq!(ItemId::time_prefix(i64::MIN), [0xff; 4]);
    }
}
