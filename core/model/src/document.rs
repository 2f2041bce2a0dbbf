//! Document ids: the unit of sync and of access.
//!
//! A class is a small set of Automerge documents (DESIGN §2). Access is decided per document,
//! never by looking inside a change, so a [`DocId`] plus the class roster is all the relay and
//! every peer need to decide who may read and write.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{ClassId, FamilyId};

/// Which document of a class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DocKind {
    /// Members, roles, families, students, device keys, revocations: the root of trust.
    Roster,
    /// Staff-written, read by every member: entries, events, decisions, rosters, surveys, chains.
    Notebook,
    /// A family's private lane: guardians of the family and staff.
    Lane(FamilyId),
    /// A family's public board: written by its guardians (and staff, to moderate), read by all.
    Board(FamilyId),
    /// The parent committee's board: committee members and staff.
    Committee,
    /// A family's private lane to the principal (admins), not readable by class teachers.
    Mailbox(FamilyId),
    /// Anonymous survey answers, keyed by one-time tokens: written by guardians, read by staff.
    Ballots,
}

impl DocKind {
    /// A one-byte tag used in the binary form.
    fn tag(&self) -> u8 {
        match self {
            DocKind::Roster => 0,
            DocKind::Notebook => 1,
            DocKind::Lane(_) => 2,
            DocKind::Board(_) => 3,
            DocKind::Committee => 4,
            DocKind::Mailbox(_) => 5,
            DocKind::Ballots => 6,
        }
    }

    /// The family this document belongs to, if any.
    pub fn family(&self) -> Option<FamilyId> {
        match self {
            DocKind::Lane(f) | DocKind::Board(f) | DocKind::Mailbox(f) => Some(*f),
            _ => None,
        }
    }
}

/// One document of one class.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DocId {
    /// The class.
    pub class: ClassId,
    /// Which of its documents.
    pub kind: DocKind,
}

impl DocId {
    /// A document id.
    pub fn new(class: ClassId, kind: DocKind) -> Self {
        Self { class, kind }
    }

    /// The binary form: 16 bytes of class id, a tag byte, and 8 bytes of family id when the
    /// kind has one. Used inside signatures, so it must never change.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(25);
        out.extend_from_slice(&self.class.0);
        out.push(self.kind.tag());
        if let Some(f) = self.kind.family() {
            out.extend_from_slice(&f.0);
        }
        out
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            DocKind::Roster => write!(f, "{}/roster", self.class),
            DocKind::Notebook => write!(f, "{}/notebook", self.class),
            DocKind::Lane(x) => write!(f, "{}/lane/{x}", self.class),
            DocKind::Board(x) => write!(f, "{}/board/{x}", self.class),
            DocKind::Committee => write!(f, "{}/committee", self.class),
            DocKind::Mailbox(x) => write!(f, "{}/mailbox/{x}", self.class),
            DocKind::Ballots => write!(f, "{}/ballots", self.class),
        }
    }
}

impl fmt::Debug for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocId({self})")
    }
}

/// A document id string was malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid document id {input:?}: expected CLASS/roster|notebook|committee|ballots or CLASS/lane|board|mailbox/FAMILY"
)]
pub struct ParseDocIdError {
    /// The rejected input (truncated).
    pub input: String,
}

impl FromStr for DocId {
    type Err = ParseDocIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseDocIdError {
            input: s.chars().take(120).collect(),
        };
        let mut parts = s.split('/');
        let class: ClassId = parts.next().ok_or_else(err)?.parse().map_err(|_| err())?;
        let kind = match (parts.next(), parts.next(), parts.next()) {
            (Some("roster"), None, None) => DocKind::Roster,
            (Some("notebook"), None, None) => DocKind::Notebook,
            (Some("committee"), None, None) => DocKind::Committee,
            (Some("ballots"), None, None) => DocKind::Ballots,
            (Some(k), Some(fam), None) => {
                let fam: FamilyId = fam.parse().map_err(|_| err())?;
                match k {
                    "lane" => DocKind::Lane(fam),
                    "board" => DocKind::Board(fam),
                    "mailbox" => DocKind::Mailbox(fam),
                    _ => return Err(err()),
                }
            }
            _ => return Err(err()),
        };
        Ok(DocId { class, kind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_id_string_round_trip() {
        let class = ClassId([0xab; 16]);
        for kind in [
            DocKind::Roster,
            DocKind::Notebook,
            DocKind::Lane(FamilyId([1; 8])),
            DocKind::Board(FamilyId([2; 8])),
            DocKind::Committee,
            DocKind::Mailbox(FamilyId([3; 8])),
            DocKind::Ballots,
        ] {
            let id = DocId::new(class, kind);
            assert_eq!(id.to_string().parse::<DocId>(), Ok(id));
        }
        assert!("abc/roster".parse::<DocId>().is_err());
        assert!(format!("{class}/lane").parse::<DocId>().is_err());
        assert!(
            format!("{class}/lane/0101010101010101/x")
                .parse::<DocId>()
                .is_err()
        );
    }

    #[test]
    fn binary_forms_differ_per_document() {
        let class = ClassId([1; 16]);
        let a = DocId::new(class, DocKind::Lane(FamilyId([1; 8]))).to_bytes();
        let b = DocId::new(class, DocKind::Board(FamilyId([1; 8]))).to_bytes();
        assert_ne!(a, b);
        assert_eq!(a.len(), 25);
        assert_eq!(DocId::new(class, DocKind::Roster).to_bytes().len(), 17);
    }
}
