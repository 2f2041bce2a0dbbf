//! Shared fixtures for the coordination tests: a class with two staff devices and three
//! families, replicas built from genesis, and helpers to edit as a device and to merge.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use automerge::Automerge;
use automerge::transaction::Transaction;
use homeroom_core::genesis::genesis_document;
use homeroom_core::identity::actor_for;
use homeroom_core::roster::{self, RosterIndex};
use homeroom_core::{
    Actor, ClassId, DeviceId, DocId, DocKind, FamilyId, MemberId, ModelError, Role, StudentId,
};

/// Monday 2023-11-13 09:00 UTC, roughly: the start of every test timeline.
pub const T0: i64 = 1_700_000_000_000;
pub const MIN: i64 = 60_000;
pub const HOUR: i64 = 60 * MIN;
pub const DAY: i64 = 24 * HOUR;

pub struct Class {
    pub class: ClassId,
    pub roster: RosterIndex,
    /// Head teacher (registrar).
    pub t1: DeviceId,
    /// Second teacher (registrar).
    pub t2: DeviceId,
    /// Two guardians of family 1 (two students).
    pub g1a: DeviceId,
    pub g1b: DeviceId,
    /// Guardian of family 2.
    pub g2: DeviceId,
    /// Guardian of family 3.
    pub g3: DeviceId,
    /// A device nobody enrolled.
    pub stranger: DeviceId,
    pub f1: FamilyId,
    pub f2: FamilyId,
    pub f3: FamilyId,
    pub s1a: StudentId,
    pub s1b: StudentId,
    pub s2: StudentId,
    pub s3: StudentId,
}

fn dev(b: u8) -> DeviceId {
    DeviceId([b; 32])
}

impl Class {
    pub fn new() -> Class {
        let t1 = dev(0x10);
        let nonce = [7u8; 16];
        let class = roster::class_id_for(&t1, &nonce);
        let mut c = Class {
            class,
            roster: RosterIndex::default(),
            t1,
            t2: dev(0x11),
            g1a: dev(0x21),
            g1b: dev(0x22),
            g2: dev(0x31),
            g3: dev(0x41),
            stranger: dev(0x99),
            f1: FamilyId([1; 8]),
            f2: FamilyId([2; 8]),
            f3: FamilyId([3; 8]),
            s1a: StudentId([0x1a; 8]),
            s1b: StudentId([0x1b; 8]),
            s2: StudentId([0x2a; 8]),
            s3: StudentId([0x3a; 8]),
        };
        let mut doc = genesis_document(&DocId::new(class, DocKind::Roster), actor_for(&t1, [0; 8]));
        let mut tx = doc.transaction();
        roster::write_founding(&mut tx, "Class 3B", &t1, MemberId([1; 8]), "Ms Li", 0).unwrap();
        roster::add_member(
            &mut tx,
            MemberId([2; 8]),
            "Mr Zhao",
            &[Role::SubjectTeacher],
            None,
        )
        .unwrap();
        roster::add_device(&mut tx, c.t2, MemberId([2; 8]), 0).unwrap();
        let fams = [
            (
                c.f1,
                "Wang",
                vec![(c.s1a, "Xiaoming"), (c.s1b, "Xiaohong")],
                vec![(0x31u8, c.g1a), (0x32, c.g1b)],
            ),
            (c.f2, "Chen", vec![(c.s2, "Jie")], vec![(0x41, c.g2)]),
            (c.f3, "Liu", vec![(c.s3, "Yang")], vec![(0x51, c.g3)]),
        ];
        for (fid, name, students, guardians) in fams {
            roster::add_family(&mut tx, fid, name).unwrap();
            for (sid, sname) in students {
                roster::add_student(&mut tx, fid, sid, sname).unwrap();
            }
            for (m, d) in guardians {
                roster::add_member(
                    &mut tx,
                    MemberId([m; 8]),
                    "Parent",
                    &[Role::Guardian],
                    Some(fid),
                )
                .unwrap();
                roster::add_device(&mut tx, d, MemberId([m; 8]), 0).unwrap();
            }
        }
        tx.commit_with(roster::founding_commit(&nonce, 0));
        c.roster = RosterIndex::read(&doc).unwrap();
        c
    }

    pub fn notebook(&self) -> DocId {
        DocId::new(self.class, DocKind::Notebook)
    }

    pub fn lane(&self, f: FamilyId) -> DocId {
        DocId::new(self.class, DocKind::Lane(f))
    }

    pub fn ballots(&self) -> DocId {
        DocId::new(self.class, DocKind::Ballots)
    }

    /// A fresh replica of `doc` (genesis only).
    pub fn replica(&self, doc: DocId) -> Automerge {
        genesis_document(&doc, actor_for(&self.stranger, [0xee; 8]))
    }

    pub fn actor(&self, device: DeviceId, now: i64) -> Actor<'_> {
        Actor::new(&self.roster, device, now)
    }
}

/// Run `f` in a transaction on `doc` as `device` at replica `site` (the actor id is the
/// device key plus the site, so no actor is shared between replicas). Commits on success,
/// rolls back on error.
pub fn edit<T>(
    doc: &mut Automerge,
    device: DeviceId,
    site: u8,
    f: impl FnOnce(&mut Transaction<'_>) -> Result<T, ModelError>,
) -> Result<T, ModelError> {
    doc.set_actor(actor_for(&device, [site; 8]));
    let mut tx = doc.transaction();
    match f(&mut tx) {
        Ok(v) => {
            tx.commit();
            Ok(v)
        }
        Err(e) => {
            tx.rollback();
            Err(e)
        }
    }
}

/// Merge both ways.
pub fn sync(a: &mut Automerge, b: &mut Automerge) {
    a.merge(b).unwrap();
    b.merge(a).unwrap();
}

/// A copy of `doc` (all changes), to act as another device's replica.
pub fn fork(doc: &Automerge) -> Automerge {
    let mut d = doc.fork();
    d.set_actor(actor_for(&DeviceId([0xee; 32]), [0xee; 8]));
    d
}
