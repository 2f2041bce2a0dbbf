//! Invites: how a new device joins a class without a CA, a domain or a pre-shared account.
//!
//! A staff device creates an invite for a role. The invite is an ed25519 key derived from 16
//! random bytes (the *secret*) with BLAKE3 `derive_key("homeroom invite v1", secret)`; its
//! public key (an [`InviteId`], shaped like a [`DeviceId`]) is written into the roster under
//! `class/invite/<hex>` with the role, the expiry and the creator. The secret travels to the
//! invitee as an [`InviteCode`] — text and QR payload are the same string — together with the
//! class id, the relay address(es) and the SHA-256 fingerprint of the relay's certificate (so
//! a self-signed relay is pinned).
//!
//! Redeeming: the joining device proves the invite key to the relay (which then lets it read
//! that class's roster), syncs the roster and writes **one** roster change *authored by the
//! invite key* that enrolls its own device key (and, for a role invite, adds the new member)
//! and marks the invite used. Every replica accepts such a change only if its effect on the
//! [`RosterIndex`] is exactly that ([`check_redemption`]); a second redemption of the same
//! invite finds it used and is refused ([`InviteError::AlreadyUsed`]).
//!
//! Code layout (version 1), before base32: `version(1) ‖ class(16) ‖ secret(16) ‖
//! fingerprint(32) ‖ expires_at seconds (u32 BE) ‖ relay count(1) ‖ relays ‖ checksum(4)`;
//! a relay is `4 ‖ IPv4(4) ‖ port(2 BE)` or `6 ‖ IPv6(16) ‖ port(2 BE)`; the checksum is the
//! first 4 bytes of BLAKE3 over everything before it. The text is `HR` followed by RFC 4648
//! base32 (uppercase, no padding): only characters of QR alphanumeric mode.
//!
//! The same invite also has a [`ShortCode`] to type (`XXXX-XXXX-XXXX`, 55 random bits and a
//! check character): the secret derives from it, so both forms name one invite key. It carries
//! no class and no relay; the device asks the relay it knows which class holds the invite.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::identity::{DeviceId, DeviceKey};
use crate::ids::{ClassId, FamilyId, MemberId};
use crate::roster::{Role, RosterIndex};

/// The public key of an invite (the author of its redemption change).
pub type InviteId = DeviceId;

/// The code format this build writes and reads.
pub const INVITE_CODE_VERSION: u8 = 1;

/// Prefix of every invite code.
pub const CODE_PREFIX: &str = "HR";

/// At most this many relay addresses in one code.
pub const MAX_RELAYS: usize = 4;

/// Longest accepted code text, in characters (bounds the parser's work on hostile input).
pub const MAX_CODE_CHARS: usize = 512;

/// BLAKE3 key-derivation context of the invite key.
const KEY_CONTEXT: &str = "homeroom invite v1";
/// BLAKE3 key-derivation context of a role invite's new member id.
const MEMBER_CONTEXT: &str = "homeroom invite member v1";
/// BLAKE3 key-derivation context of the code checksum.
const CHECKSUM_CONTEXT: &str = "homeroom invite checksum v1";

/// Most operations a redemption change may contain (it writes a handful of fields).
pub const MAX_REDEMPTION_OPS: usize = 32;

/// What an invite lets its holder become.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InviteRole {
    /// A new guardian member of `family` (several guardians: several invites).
    Guardian {
        /// The family.
        family: FamilyId,
    },
    /// A new parent-committee member (also a guardian) of `family`.
    Committee {
        /// The family.
        family: FamilyId,
    },
    /// A new co-teacher (a subject teacher: staff).
    CoTeacher,
    /// Another device (a second phone) of the existing member `member`.
    AnotherDevice {
        /// The member who gets the device.
        member: MemberId,
    },
}

impl InviteRole {
    /// The roster key of the role kind.
    pub fn kind_str(&self) -> &'static str {
        match self {
            InviteRole::Guardian { .. } => "guardian",
            InviteRole::Committee { .. } => "committee",
            InviteRole::CoTeacher => "co_teacher",
            InviteRole::AnotherDevice { .. } => "another_device",
        }
    }

    /// The roles a new member gets (empty for [`InviteRole::AnotherDevice`]).
    pub fn member_roles(&self) -> Vec<Role> {
        match self {
            InviteRole::Guardian { .. } => vec![Role::Guardian],
            InviteRole::Committee { .. } => vec![Role::Committee],
            InviteRole::CoTeacher => vec![Role::SubjectTeacher],
            InviteRole::AnotherDevice { .. } => Vec::new(),
        }
    }

    /// The family a new member belongs to.
    pub fn family(&self) -> Option<FamilyId> {
        match self {
            InviteRole::Guardian { family } | InviteRole::Committee { family } => Some(*family),
            _ => None,
        }
    }

    /// Rebuild from roster fields (`None` if they do not describe a role).
    pub fn from_parts(
        kind: &str,
        family: Option<FamilyId>,
        member: Option<MemberId>,
    ) -> Option<InviteRole> {
        Some(match kind {
            "guardian" => InviteRole::Guardian { family: family? },
            "committee" => InviteRole::Committee { family: family? },
            "co_teacher" => InviteRole::CoTeacher,
            "another_device" => InviteRole::AnotherDevice { member: member? },
            _ => return None,
        })
    }
}

/// An invite as the roster records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteRecord {
    /// The invite's public key.
    pub id: InviteId,
    /// What it grants.
    pub role: InviteRole,
    /// Expiry, ms since the Unix epoch.
    pub expires_at: i64,
    /// The staff device that created it.
    pub created_by: Option<DeviceId>,
    /// The device enrolled with it, once used.
    pub used_by: Option<DeviceId>,
    /// When it was used (the redemption change's time).
    pub used_at: Option<i64>,
}

/// Why an invite cannot be used. `Display` is a sentence a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InviteError {
    /// The text is not an invite code (wrong prefix, length or characters).
    #[error("this is not a Homeroom invite code: {0}")]
    Malformed(String),
    /// The checksum does not match: most likely a typo.
    #[error("the invite code has a typo (checksum mismatch); check it and try again")]
    BadChecksum,
    /// The code was made by a newer version of the app.
    #[error("this invite code needs a newer version of the app (code version {0})")]
    UnsupportedVersion(u8),
    /// The invite expired.
    #[error("this invite expired (at {expires_at} ms since the Unix epoch); ask for a new one")]
    Expired {
        /// When it expired, ms since the Unix epoch.
        expires_at: i64,
    },
    /// Someone already joined with this invite.
    #[error("this invite was already used; ask for a new one")]
    AlreadyUsed,
    /// The class's roster has no such invite (withdrawn, or the wrong class or relay).
    #[error("the class does not know this invite; ask for a new one")]
    Unknown,
    /// The redemption change does more (or less) than the invite allows.
    #[error("the join request does not match the invite: {0}")]
    Mismatch(String),
}

/// The invite key for a secret.
pub fn invite_key(secret: &[u8; 16]) -> DeviceKey {
    DeviceKey::from_secret(blake3::derive_key(KEY_CONTEXT, secret))
}

/// The member id a role invite's redemption must use: derived from the invite, so two
/// redemptions never pick different ids and nobody can pick an existing member's id.
pub fn member_for_invite(invite: &InviteId) -> MemberId {
    let k = blake3::derive_key(MEMBER_CONTEXT, &invite.0);
    let mut id = [0u8; 8];
    id.copy_from_slice(&k[..8]);
    MemberId(id)
}

/// The decoded content of an invite code.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteCode {
    /// The class.
    pub class: ClassId,
    /// The invite secret (derives the invite key).
    pub secret: [u8; 16],
    /// Relay addresses, in order of preference (at least one).
    pub relays: Vec<SocketAddr>,
    /// SHA-256 of the relay's certificate: the only certificate the device will trust.
    pub fingerprint: [u8; 32],
    /// Expiry, ms since the Unix epoch (whole seconds).
    pub expires_at: i64,
}

impl std::fmt::Debug for InviteCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("InviteCode")
            .field("class", &self.class)
            .field("invite", &self.invite_id())
            .field("relays", &self.relays)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn base32_decode(text: &str) -> Result<Vec<u8>, InviteError> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for (i, c) in text.chars().enumerate() {
        let v = match c {
            'A'..='Z' => c as u32 - 'A' as u32,
            '2'..='7' => c as u32 - '2' as u32 + 26,
            _ => {
                return Err(InviteError::Malformed(format!(
                    "character {c:?} at position {} is not allowed",
                    i + CODE_PREFIX.len() + 1
                )));
            }
        };
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    Ok(out)
}

fn checksum(payload: &[u8]) -> [u8; 4] {
    let mut h = blake3::Hasher::new_derive_key(CHECKSUM_CONTEXT);
    h.update(payload);
    let mut c = [0u8; 4];
    c.copy_from_slice(&h.finalize().as_bytes()[..4]);
    c
}

/// A cursor over the payload that reports truncation as a typed error.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], InviteError> {
        if self.bytes.len() < n {
            return Err(InviteError::Malformed(format!(
                "the code ends inside {what}"
            )));
        }
        let (a, b) = self.bytes.split_at(n);
        self.bytes = b;
        Ok(a)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], InviteError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
}

impl InviteCode {
    /// The invite's public key.
    pub fn invite_id(&self) -> InviteId {
        invite_key(&self.secret).device_id()
    }

    /// The invite's signing key.
    pub fn key(&self) -> DeviceKey {
        invite_key(&self.secret)
    }

    /// The code as text (and QR payload): `HR` + uppercase base32, QR alphanumeric only.
    /// Relays beyond [`MAX_RELAYS`] are left out; the expiry is rounded down to a second.
    pub fn encode(&self) -> String {
        let mut p = Vec::with_capacity(96);
        p.push(INVITE_CODE_VERSION);
        p.extend_from_slice(&self.class.0);
        p.extend_from_slice(&self.secret);
        p.extend_from_slice(&self.fingerprint);
        let secs = u32::try_from(self.expires_at.max(0) / 1000).unwrap_or(u32::MAX);
        p.extend_from_slice(&secs.to_be_bytes());
        let relays: Vec<&SocketAddr> = self.relays.iter().take(MAX_RELAYS).collect();
        p.push(relays.len() as u8);
        for r in relays {
            match r.ip() {
                IpAddr::V4(ip) => {
                    p.push(4);
                    p.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    p.push(6);
                    p.extend_from_slice(&ip.octets());
                }
            }
            p.extend_from_slice(&r.port().to_be_bytes());
        }
        let c = checksum(&p);
        p.extend_from_slice(&c);
        format!("{CODE_PREFIX}{}", base32_encode(&p))
    }

    /// Parse a code a user typed or scanned. Spaces, dashes and lowercase are tolerated.
    /// Does not check the expiry (see [`InviteCode::parse_at`]). Never panics.
    pub fn parse(text: &str) -> Result<InviteCode, InviteError> {
        if text.len() > MAX_CODE_CHARS * 4 {
            return Err(InviteError::Malformed("far too long".into()));
        }
        let cleaned: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if cleaned.chars().count() > MAX_CODE_CHARS {
            return Err(InviteError::Malformed("far too long".into()));
        }
        let Some(body) = cleaned.strip_prefix(CODE_PREFIX) else {
            return Err(InviteError::Malformed(format!(
                "an invite code starts with {CODE_PREFIX}"
            )));
        };
        let bytes = base32_decode(body)?;
        if bytes.len() < 5 {
            return Err(InviteError::Malformed("too short".into()));
        }
        let (payload, sum) = bytes.split_at(bytes.len() - 4);
        if checksum(payload) != sum {
            return Err(InviteError::BadChecksum);
        }
        let mut r = Reader { bytes: payload };
        let version = r.array::<1>("the version")?[0];
        if version != INVITE_CODE_VERSION {
            return Err(InviteError::UnsupportedVersion(version));
        }
        let class = ClassId(r.array("the class id")?);
        let secret = r.array("the secret")?;
        let fingerprint = r.array("the relay fingerprint")?;
        let secs = u32::from_be_bytes(r.array("the expiry")?);
        let n = usize::from(r.array::<1>("the relay count")?[0]);
        if n == 0 || n > MAX_RELAYS {
            return Err(InviteError::Malformed(format!(
                "{n} relay addresses (1 to {MAX_RELAYS} expected)"
            )));
        }
        let mut relays = Vec::with_capacity(n);
        for _ in 0..n {
            let ip = match r.array::<1>("a relay address")?[0] {
                4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>("a relay address")?)),
                6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>("a relay address")?)),
                t => {
                    return Err(InviteError::Malformed(format!(
                        "unknown relay address type {t}"
                    )));
                }
            };
            let port = u16::from_be_bytes(r.array("a relay port")?);
            relays.push(SocketAddr::new(ip, port));
        }
        if !r.bytes.is_empty() {
            return Err(InviteError::Malformed(format!(
                "{} unexpected bytes after the relays",
                r.bytes.len()
            )));
        }
        Ok(InviteCode {
            class,
            secret,
            relays,
            fingerprint,
            expires_at: i64::from(secs) * 1000,
        })
    }

    /// Like [`InviteCode::parse`], and refuse an invite expired at `now_ms`.
    pub fn parse_at(text: &str, now_ms: i64) -> Result<InviteCode, InviteError> {
        let code = Self::parse(text)?;
        if now_ms > code.expires_at {
            return Err(InviteError::Expired {
                expires_at: code.expires_at,
            });
        }
        Ok(code)
    }
}

/// Characters of a short code, without its dashes: 11 data characters and 1 check character.
pub const SHORT_CODE_CHARS: usize = 12;
/// Data characters of a short code (5 bits each: [`SHORT_CODE_BITS`] random bits).
const SHORT_DATA_CHARS: usize = SHORT_CODE_CHARS - 1;
/// Random bits in a short code.
pub const SHORT_CODE_BITS: u32 = 55;
/// BLAKE3 key-derivation context of the secret a short code stands for.
const SHORT_CONTEXT: &str = "homeroom invite short code v1";
/// Extra BLAKE3 hashes between a short code and its secret (2^16: each guess of an offline
/// brute force costs that much more; a few milliseconds on a phone).
pub const SHORT_CODE_STRETCH: u32 = 1 << 16;
/// Crockford's base32 alphabet: digits and uppercase letters without I, L, O and U.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Multiplication in GF(32) = GF(2)[x] / (x^5 + x^2 + 1).
fn gf32_mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    for _ in 0..5 {
        if b & 1 != 0 {
            p ^= a;
        }
        b >>= 1;
        a <<= 1;
        if a & 0x20 != 0 {
            a ^= 0x25;
        }
    }
    p & 31
}

/// The check symbol of 11 data symbols: `Σ w_i · d_i` over GF(32) with the distinct weights
/// `w_i = i + 2` (the check symbol's own weight is 1). A valid code sums to zero, so changing
/// one character, or swapping any two different ones, always breaks the check.
fn short_check(data: &[u8; SHORT_DATA_CHARS]) -> u8 {
    data.iter()
        .enumerate()
        .fold(0u8, |acc, (i, d)| acc ^ gf32_mul(i as u8 + 2, *d))
}

/// A short invite code, for a parent to type: 12 Crockford base32 characters shown as
/// `XXXX-XXXX-XXXX` — 55 random bits and a check character. It stands for an invite secret
/// (BLAKE3 `derive_key("homeroom invite short code v1")`, then [`SHORT_CODE_STRETCH`] hashes),
/// so the invite key, and the [`InviteId`] in the roster, follow from it; the long
/// [`InviteCode`] of the same invite carries that secret. It names neither the class nor the
/// relay: the device asks the relay it already knows which class holds the invite (the
/// protocol's `FindInvite`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShortCode {
    /// The [`SHORT_CODE_BITS`] random bits.
    bits: u64,
}

impl std::fmt::Debug for ShortCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the code itself: it is the secret.
        f.write_str("ShortCode(..)")
    }
}

impl ShortCode {
    /// A short code from random bytes (only [`SHORT_CODE_BITS`] of them are used).
    pub fn from_random(bytes: [u8; 8]) -> ShortCode {
        ShortCode {
            bits: u64::from_be_bytes(bytes) & ((1u64 << SHORT_CODE_BITS) - 1),
        }
    }

    fn data(&self) -> [u8; SHORT_DATA_CHARS] {
        let mut d = [0u8; SHORT_DATA_CHARS];
        for (i, x) in d.iter_mut().enumerate() {
            let shift = 5 * (SHORT_DATA_CHARS - 1 - i);
            *x = ((self.bits >> shift) & 31) as u8;
        }
        d
    }

    /// The code as shown: `XXXX-XXXX-XXXX` (14 characters).
    pub fn encode(&self) -> String {
        let data = self.data();
        let mut chars: Vec<u8> = data.to_vec();
        chars.push(short_check(&data));
        let mut out = String::with_capacity(SHORT_CODE_CHARS + 2);
        for (i, v) in chars.iter().enumerate() {
            if i > 0 && i % 4 == 0 {
                out.push('-');
            }
            out.push(CROCKFORD[usize::from(*v)] as char);
        }
        out
    }

    /// Parse a short code a user typed: case-insensitive, spaces and dashes ignored, `O` read
    /// as `0` and `I`/`L` as `1` (Crockford). Typed errors as for [`InviteCode::parse`]:
    /// `Malformed` (length, characters), `BadChecksum` (a typo). Never panics.
    pub fn parse(text: &str) -> Result<ShortCode, InviteError> {
        if text.len() > 64 {
            return Err(InviteError::Malformed(
                "too long for a short code (a long code starts with HR: scan or paste it)".into(),
            ));
        }
        let cleaned: Vec<char> = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if cleaned.len() != SHORT_CODE_CHARS {
            return Err(InviteError::Malformed(format!(
                "a short code has {SHORT_CODE_CHARS} characters, this has {}",
                cleaned.len()
            )));
        }
        let mut values = [0u8; SHORT_CODE_CHARS];
        for (i, c) in cleaned.iter().enumerate() {
            let c = match c {
                'O' => '0',
                'I' | 'L' => '1',
                c => *c,
            };
            let Some(v) = CROCKFORD.iter().position(|a| char::from(*a) == c) else {
                return Err(InviteError::Malformed(format!(
                    "character {c:?} (number {}) is not allowed",
                    i + 1
                )));
            };
            values[i] = v as u8;
        }
        let mut data = [0u8; SHORT_DATA_CHARS];
        data.copy_from_slice(&values[..SHORT_DATA_CHARS]);
        if short_check(&data) != values[SHORT_DATA_CHARS] {
            return Err(InviteError::BadChecksum);
        }
        let bits = data.iter().fold(0u64, |acc, d| (acc << 5) | u64::from(*d));
        Ok(ShortCode { bits })
    }

    /// The invite secret this code stands for (the long code of the same invite carries it).
    pub fn secret(&self) -> [u8; 16] {
        let mut h = blake3::derive_key(SHORT_CONTEXT, &self.bits.to_be_bytes());
        for _ in 0..SHORT_CODE_STRETCH {
            h = *blake3::hash(&h).as_bytes();
        }
        let mut secret = [0u8; 16];
        secret.copy_from_slice(&h[..16]);
        secret
    }

    /// The invite's public key (what the roster records).
    pub fn invite_id(&self) -> InviteId {
        invite_key(&self.secret()).device_id()
    }
}

/// Whether `invite` can be redeemed now, per `roster` (the relay's check before it lets a
/// joining device read the roster).
pub fn check_redeemable<'a>(
    roster: &'a RosterIndex,
    invite: &InviteId,
    now_ms: i64,
) -> Result<&'a InviteRecord, InviteError> {
    let rec = roster.invites.get(invite).ok_or(InviteError::Unknown)?;
    if rec.used_by.is_some() {
        return Err(InviteError::AlreadyUsed);
    }
    if now_ms > rec.expires_at {
        return Err(InviteError::Expired {
            expires_at: rec.expires_at,
        });
    }
    Ok(rec)
}

/// Verify a redemption: `after` is `before` with one change authored by `invite` applied,
/// made at `change_time` (its signed timestamp). The change must, and may only: mark the invite
/// used by one new device, enroll that device for the invite's member (for a role invite, a
/// new member with id [`member_for_invite`], exactly the invite's roles and family, and a
/// non-empty name). `now_ms` (the receiver's clock) is checked against the expiry when given
/// (the relay); every receiver checks the change's own time against it, with `skew_ms` slack.
pub fn check_redemption(
    before: &RosterIndex,
    after: &RosterIndex,
    invite: &InviteId,
    change_time: i64,
    now_ms: Option<i64>,
    skew_ms: i64,
) -> Result<DeviceId, InviteError> {
    let rec = before.invites.get(invite).ok_or(InviteError::Unknown)?;
    if rec.used_by.is_some() {
        return Err(InviteError::AlreadyUsed);
    }
    let late = now_ms.is_some_and(|n| n > rec.expires_at)
        || change_time > rec.expires_at.saturating_add(skew_ms);
    if late {
        return Err(InviteError::Expired {
            expires_at: rec.expires_at,
        });
    }
    if before.archived_at.is_some() {
        return Err(InviteError::Mismatch("the class is archived".into()));
    }
    let mismatch = |s: &str| InviteError::Mismatch(s.to_string());
    let after_rec = after
        .invites
        .get(invite)
        .ok_or_else(|| mismatch("the invite was removed"))?;
    let device = after_rec
        .used_by
        .ok_or_else(|| mismatch("the invite is not marked used"))?;
    let expected_rec = InviteRecord {
        used_by: Some(device),
        used_at: after_rec.used_at,
        ..rec.clone()
    };
    if *after_rec != expected_rec || after_rec.used_at.is_none() {
        return Err(mismatch("the invite record was altered"));
    }
    if before.devices.contains_key(&device) {
        return Err(mismatch("the device is already enrolled"));
    }
    let new_dev = after
        .devices
        .get(&device)
        .ok_or_else(|| mismatch("no device enrolled"))?;
    if new_dev.revoked_at.is_some() {
        return Err(mismatch("the enrolled device is revoked"));
    }
    let member = match rec.role {
        InviteRole::AnotherDevice { member } => {
            let m = before
                .members
                .get(&member)
                .ok_or_else(|| mismatch("the invite's member is unknown"))?;
            if m.removed_at.is_some() {
                return Err(mismatch("the invite's member was removed"));
            }
            member
        }
        role => {
            let member = member_for_invite(invite);
            if before.members.contains_key(&member) {
                return Err(mismatch("the member already exists"));
            }
            let m = after
                .members
                .get(&member)
                .ok_or_else(|| mismatch("no member added"))?;
            let roles: BTreeSet<Role> = role.member_roles().into_iter().collect();
            if m.roles != roles
                || m.family != role.family()
                || m.removed_at.is_some()
                || m.name.trim().is_empty()
            {
                return Err(mismatch("the new member's roles, family or name"));
            }
            if let Some(f) = role.family()
                && !before.families.contains_key(&f)
            {
                return Err(mismatch("the invite's family is unknown"));
            }
            member
        }
    };
    if new_dev.member != member {
        return Err(mismatch("the device belongs to another member"));
    }
    // Nothing else may differ: undo the expected differences and compare.
    let mut rest = after.clone();
    rest.devices.remove(&device);
    rest.invites.insert(*invite, rec.clone());
    if !matches!(rec.role, InviteRole::AnotherDevice { .. }) {
        rest.members.remove(&member);
    }
    if rest != *before {
        return Err(mismatch("the change touches other parts of the roster"));
    }
    Ok(device)
}

/// Longest validity of an invite a guardian creates for their own second device.
pub const MAX_SELF_INVITE_MS: i64 = 7 * 24 * 3_600_000;

/// Verify a self-service invite: `after` is `before` with one roster change by `author`, an
/// active member who is not staff, applied at `change_time`. The change must, and may only,
/// add one unused [`InviteRole::AnotherDevice`] invite for the author's own member, created by
/// the author, expiring within [`MAX_SELF_INVITE_MS`] of the change.
pub fn check_self_invite(
    before: &RosterIndex,
    after: &RosterIndex,
    author: &DeviceId,
    change_time: i64,
) -> Result<InviteId, InviteError> {
    let mismatch = |s: &str| InviteError::Mismatch(s.to_string());
    let member = before
        .member_of(author)
        .ok_or_else(|| mismatch("the author is not an active member"))?
        .id;
    if before.archived_at.is_some() {
        return Err(mismatch("the class is archived"));
    }
    let added: Vec<&InviteRecord> = after
        .invites
        .values()
        .filter(|i| !before.invites.contains_key(&i.id))
        .collect();
    let [rec] = added.as_slice() else {
        return Err(mismatch("not exactly one new invite"));
    };
    if rec.role != (InviteRole::AnotherDevice { member })
        || rec.created_by != Some(*author)
        || rec.used_by.is_some()
        || rec.used_at.is_some()
        || rec.expires_at > change_time.saturating_add(MAX_SELF_INVITE_MS)
    {
        return Err(mismatch(
            "the invite is not for the author's own new device",
        ));
    }
    let mut rest = after.clone();
    rest.invites.remove(&rec.id);
    if rest != *before {
        return Err(mismatch("the change touches other parts of the roster"));
    }
    Ok(rec.id)
}

/// Invites of a roster, keyed by id (used by [`RosterIndex::read`]).
pub(crate) type Invites = BTreeMap<InviteId, InviteRecord>;

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InviteCode {
        InviteCode {
            class: ClassId([3; 16]),
            secret: [7; 16],
            relays: vec![
                "127.0.0.1:4433".parse().unwrap(),
                "[2001:db8::1]:443".parse().unwrap(),
            ],
            fingerprint: [9; 32],
            expires_at: 1_800_000_000_000,
        }
    }

    #[test]
    fn code_round_trips_and_is_qr_alphanumeric() {
        let c = sample();
        let text = c.encode();
        assert!(text.starts_with("HR"));
        assert!(
            text.chars()
                .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit())
        );
        assert_eq!(InviteCode::parse(&text).unwrap(), c);
        // Lowercase, spaces and dashes are tolerated.
        let sloppy = format!(" {}-{} ", &text[..10].to_lowercase(), &text[10..]);
        assert_eq!(InviteCode::parse(&sloppy).unwrap(), c);
    }

    #[test]
    fn bad_codes_are_typed_errors() {
        let text = sample().encode();
        // One character changed: a checksum error.
        let mut typo: Vec<char> = text.chars().collect();
        typo[20] = if typo[20] == 'A' { 'B' } else { 'A' };
        let typo: String = typo.into_iter().collect();
        assert_eq!(InviteCode::parse(&typo), Err(InviteError::BadChecksum));
        assert!(matches!(
            InviteCode::parse("hello"),
            Err(InviteError::Malformed(_))
        ));
        assert!(matches!(
            InviteCode::parse("HR0189"),
            Err(InviteError::Malformed(_))
        ));
        assert!(matches!(
            InviteCode::parse(&text[..40]),
            Err(InviteError::BadChecksum | InviteError::Malformed(_))
        ));
        // A future version with a valid checksum.
        let mut p = vec![2u8, 1, 2, 3];
        let c = checksum(&p);
        p.extend_from_slice(&c);
        let future = format!("HR{}", base32_encode(&p));
        assert_eq!(
            InviteCode::parse(&future),
            Err(InviteError::UnsupportedVersion(2))
        );
        // Expired.
        let c = sample();
        assert_eq!(
            InviteCode::parse_at(&text, c.expires_at + 1),
            Err(InviteError::Expired {
                expires_at: c.expires_at
            })
        );
        assert!(InviteCode::parse_at(&text, c.expires_at).is_ok());
    }

    /// A founded roster with one family and one invite, and the redeemed fork.
    fn rosters(
        role: InviteRole,
        tamper: impl FnOnce(&mut automerge::transaction::Transaction<'_>),
    ) -> (RosterIndex, RosterIndex, InviteId, DeviceId) {
        use crate::document::{DocId, DocKind};
        use crate::genesis::genesis_document;
        use crate::identity::actor_for;
        use crate::roster;
        let teacher = DeviceKey::from_secret([1; 32]).device_id();
        let class = ClassId([4; 16]);
        let mut doc = genesis_document(
            &DocId::new(class, DocKind::Roster),
            actor_for(&teacher, [1; 8]),
        );
        let invite = invite_key(&[5; 16]).device_id();
        let mut tx = doc.transaction();
        roster::write_founding(&mut tx, "3B", &teacher, MemberId([1; 8]), "Ms Li", 10).unwrap();
        roster::add_family(&mut tx, FamilyId([2; 8]), "Wang").unwrap();
        roster::write_invite(&mut tx, invite, role, 1_000, teacher, 10).unwrap();
        tx.commit();
        let before = RosterIndex::read(&doc).unwrap();
        let joiner = DeviceKey::from_secret([6; 32]).device_id();
        let rec = before.invites[&invite].clone();
        let mut tx = doc.transaction();
        roster::redeem_invite(&mut tx, &rec, joiner, "Mr Wang", 500).unwrap();
        tamper(&mut tx);
        tx.commit();
        (before, RosterIndex::read(&doc).unwrap(), invite, joiner)
    }

    #[test]
    fn a_redemption_does_exactly_what_the_invite_says() {
        let guardian = InviteRole::Guardian {
            family: FamilyId([2; 8]),
        };
        let (before, after, invite, joiner) = rosters(guardian, |_| {});
        assert_eq!(
            check_redemption(&before, &after, &invite, 500, Some(900), 0),
            Ok(joiner)
        );
        let m = after.member_of(&joiner).unwrap();
        assert!(m.is_guardian_of(&FamilyId([2; 8])));
        assert_eq!(m.id, member_for_invite(&invite));
        // Expired by the relay's clock, or by the change's own time.
        assert!(matches!(
            check_redemption(&before, &after, &invite, 500, Some(1_001), 0),
            Err(InviteError::Expired { .. })
        ));
        assert!(matches!(
            check_redemption(&before, &after, &invite, 1_500, None, 0),
            Err(InviteError::Expired { .. })
        ));
        // Used: a second redemption is checked against the roster after the first.
        assert_eq!(
            check_redemption(&after, &after, &invite, 500, None, 0),
            Err(InviteError::AlreadyUsed)
        );
        // Not an invite at all.
        assert_eq!(
            check_redemption(&before, &after, &joiner, 500, None, 0),
            Err(InviteError::Unknown)
        );
    }

    #[test]
    fn a_redemption_that_does_more_is_refused() {
        use crate::roster;
        let guardian = InviteRole::Guardian {
            family: FamilyId([2; 8]),
        };
        let make_staff = |tx: &mut automerge::transaction::Transaction<'_>| {
            let member = member_for_invite(&invite_key(&[5; 16]).device_id());
            roster::add_member(tx, member, "Mr Wang", &[Role::Admin], None).unwrap();
        };
        let extra_device = |tx: &mut automerge::transaction::Transaction<'_>| {
            let member = member_for_invite(&invite_key(&[5; 16]).device_id());
            roster::add_device(tx, DeviceKey::from_secret([7; 32]).device_id(), member, 500)
                .unwrap();
        };
        let remove_teacher = |tx: &mut automerge::transaction::Transaction<'_>| {
            roster::remove_member(tx, MemberId([1; 8]), 500).unwrap();
        };
        let another_family = |tx: &mut automerge::transaction::Transaction<'_>| {
            roster::add_family(tx, FamilyId([9; 8]), "Li").unwrap();
        };
        for tamper in [make_staff, extra_device, remove_teacher, another_family] {
            let (before, after, invite, _) = rosters(guardian, tamper);
            assert!(
                matches!(
                    check_redemption(&before, &after, &invite, 500, None, 0),
                    Err(InviteError::Mismatch(_))
                ),
                "{:?}",
                check_redemption(&before, &after, &invite, 500, None, 0)
            );
        }
        // Another device for an existing member adds no member.
        let (before, after, invite, joiner) = rosters(
            InviteRole::AnotherDevice {
                member: MemberId([1; 8]),
            },
            |_| {},
        );
        assert_eq!(
            check_redemption(&before, &after, &invite, 500, None, 0),
            Ok(joiner)
        );
        assert_eq!(after.member_of(&joiner).unwrap().id, MemberId([1; 8]));
        assert_eq!(after.members.len(), before.members.len());
    }

    #[test]
    fn a_guardian_may_invite_only_their_own_second_device() {
        use crate::document::{DocId, DocKind};
        use crate::genesis::genesis_document;
        use crate::identity::actor_for;
        use crate::roster;
        let teacher = DeviceKey::from_secret([1; 32]).device_id();
        let parent = DeviceKey::from_secret([2; 32]).device_id();
        let (fam, mum) = (FamilyId([2; 8]), MemberId([3; 8]));
        let mut doc = genesis_document(
            &DocId::new(ClassId([4; 16]), DocKind::Roster),
            actor_for(&teacher, [1; 8]),
        );
        let mut tx = doc.transaction();
        roster::write_founding(&mut tx, "3B", &teacher, MemberId([1; 8]), "Ms Li", 10).unwrap();
        roster::add_family(&mut tx, fam, "Wang").unwrap();
        roster::add_member(&mut tx, mum, "Mrs Wang", &[Role::Guardian], Some(fam)).unwrap();
        roster::add_device(&mut tx, parent, mum, 10).unwrap();
        tx.commit();
        let before = RosterIndex::read(&doc).unwrap();
        let with = |role: InviteRole, expires: i64| {
            let mut d = doc.fork();
            let mut tx = d.transaction();
            let id = invite_key(&[9; 16]).device_id();
            roster::write_invite(&mut tx, id, role, expires, parent, 100).unwrap();
            tx.commit();
            RosterIndex::read(&d).unwrap()
        };
        let own = InviteRole::AnotherDevice { member: mum };
        assert!(check_self_invite(&before, &with(own, 1_000), &parent, 100).is_ok());
        // Someone else's device, a role invite, too long, or not a member: refused.
        let other = InviteRole::AnotherDevice {
            member: MemberId([1; 8]),
        };
        for after in [
            with(other, 1_000),
            with(InviteRole::Guardian { family: fam }, 1_000),
            with(own, 100 + MAX_SELF_INVITE_MS + 1),
        ] {
            assert!(check_self_invite(&before, &after, &parent, 100).is_err());
        }
        let stranger = DeviceKey::from_secret([8; 32]).device_id();
        assert!(check_self_invite(&before, &with(own, 1_000), &stranger, 100).is_err());
    }

    #[test]
    fn short_code_round_trips_and_is_typable() {
        for seed in [
            [0u8; 8],
            [0xff; 8],
            [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0],
        ] {
            let c = ShortCode::from_random(seed);
            let text = c.encode();
            assert_eq!(text.len(), 14, "{text}");
            assert_eq!(text.matches('-').count(), 2, "{text}");
            assert!(
                text.chars()
                    .all(|ch| ch == '-' || CROCKFORD.contains(&(ch as u8)))
            );
            assert_eq!(ShortCode::parse(&text), Ok(c));
            // Lowercase, spaces instead of dashes, O for 0 and l for 1 are accepted.
            let sloppy = text
                .to_lowercase()
                .replace('-', " ")
                .replace('0', "o")
                .replace('1', "l");
            assert_eq!(ShortCode::parse(&format!(" {sloppy} ")), Ok(c));
        }
        // Different codes, different secrets; the secret decides the invite key.
        let a = ShortCode::from_random([1; 8]);
        let b = ShortCode::from_random([2; 8]);
        assert_ne!(a.secret(), b.secret());
        assert_eq!(a.secret(), ShortCode::parse(&a.encode()).unwrap().secret());
        assert_eq!(a.invite_id(), invite_key(&a.secret()).device_id());
        assert_eq!(format!("{a:?}"), "ShortCode(..)");
    }

    #[test]
    fn every_single_typo_and_swap_in_a_short_code_is_caught() {
        let text: Vec<char> = ShortCode::from_random([0x5a; 8])
            .encode()
            .chars()
            .filter(|c| *c != '-')
            .collect();
        for i in 0..text.len() {
            for &c in CROCKFORD.iter() {
                let c = char::from(c);
                if c == text[i] {
                    continue;
                }
                let mut typo = text.clone();
                typo[i] = c;
                let typo: String = typo.into_iter().collect();
                assert_eq!(
                    ShortCode::parse(&typo),
                    Err(InviteError::BadChecksum),
                    "{typo}"
                );
            }
            for j in i + 1..text.len() {
                if text[i] == text[j] {
                    continue;
                }
                let mut swapped = text.clone();
                swapped.swap(i, j);
                let swapped: String = swapped.into_iter().collect();
                assert_eq!(
                    ShortCode::parse(&swapped),
                    Err(InviteError::BadChecksum),
                    "{swapped}"
                );
            }
        }
        // Not a short code: length, characters.
        for bad in [
            "",
            "ABCD-EFGH-JKM",
            "ABCD-EFGH-JKMNP",
            "ABCD-EFGH-JKU0",
            "ABCD*EFGH*JKMN",
        ] {
            assert!(
                matches!(ShortCode::parse(bad), Err(InviteError::Malformed(_))),
                "{bad}: {:?}",
                ShortCode::parse(bad)
            );
        }
        let long = sample().encode();
        assert!(matches!(
            ShortCode::parse(&long),
            Err(InviteError::Malformed(_))
        ));
    }

    #[test]
    fn keys_and_members_derive_from_the_secret() {
        let c = sample();
        assert_eq!(c.invite_id(), invite_key(&[7; 16]).device_id());
        assert_ne!(c.invite_id(), invite_key(&[8; 16]).device_id());
        assert_eq!(
            member_for_invite(&c.invite_id()),
            member_for_invite(&c.invite_id())
        );
    }
}
