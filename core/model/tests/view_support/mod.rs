//! Shared fixture for the entries_* and view_* tests: a class with two teachers, a principal,
//! three families (A with two guardians, B and C with one each; C's guardian is on the
//! committee), and helpers to open replicas and write through typed functions.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use std::collections::BTreeSet;

use homeroom_core::automerge::Automerge;
use homeroom_core::automerge::transaction::Transaction;
use homeroom_core::entries::{Audience, ConsentPolicy, EntryKind, NewEntry, Urgency};
use homeroom_core::genesis::genesis_document;
use homeroom_core::identity::{DeviceKey, actor_for};
use homeroom_core::roster::{self, Role};
use homeroom_core::view::{ClassDocs, NotebookView, Viewer};
use homeroom_core::{
    Actor, ClassId, DeviceId, DocId, DocKind, FamilyId, MemberId, ModelError, RosterIndex,
    StudentId,
};

pub const NOW: i64 = 1_700_000_000_000;

pub struct Class {
    pub class: ClassId,
    pub roster_doc: Automerge,
    pub roster: RosterIndex,
    pub teacher: DeviceId,
    pub teacher2: DeviceId,
    pub principal: DeviceId,
    pub a1: DeviceId,
    pub a2: DeviceId,
    pub b1: DeviceId,
    pub c1: DeviceId,
    pub fam_a: FamilyId,
    pub fam_b: FamilyId,
    pub fam_c: FamilyId,
    pub student_a: StudentId,
    pub student_b: StudentId,
    pub student_c: StudentId,
    pub member_a1: MemberId,
    pub member_a2: MemberId,
    pub member_b1: MemberId,
}

pub fn device(n: u8) -> DeviceId {
    DeviceKey::from_secret([n; 32]).device_id()
}

impl Class {
    pub fn new() -> Self {
        let teacher = device(1);
        let nonce = [7u8; 16];
        let class = roster::class_id_for(&teacher, &nonce);
        let mut doc = genesis_document(
            &DocId::new(class, DocKind::Roster),
            actor_for(&teacher, [0; 8]),
        );
        let (fam_a, fam_b, fam_c) = (FamilyId([0xa; 8]), FamilyId([0xb; 8]), FamilyId([0xc; 8]));
        let (student_a, student_b, student_c) = (
            StudentId([0xa1; 8]),
            StudentId([0xb1; 8]),
            StudentId([0xc1; 8]),
        );
        let c = Class {
            class,
            roster_doc: Automerge::new(),
            roster: RosterIndex::default(),
            teacher,
            teacher2: device(2),
            principal: device(3),
            a1: device(10),
            a2: device(11),
            b1: device(20),
            c1: device(30),
            fam_a,
            fam_b,
            fam_c,
            student_a,
            student_b,
            student_c,
            member_a1: MemberId([10; 8]),
            member_a2: MemberId([11; 8]),
            member_b1: MemberId([20; 8]),
        };
        let mut tx = doc.transaction();
        roster::write_founding(
            &mut tx,
            "Class 3B",
            &teacher,
            MemberId([1; 8]),
            "Ms Li",
            NOW,
        )
        .unwrap();
        roster::add_member(
            &mut tx,
            MemberId([2; 8]),
            "Mr Zhao",
            &[Role::SubjectTeacher],
            None,
        )
        .unwrap();
        roster::add_device(&mut tx, c.teacher2, MemberId([2; 8]), NOW).unwrap();
        roster::add_member(
            &mut tx,
            MemberId([3; 8]),
            "Principal Wu",
            &[Role::Admin],
            None,
        )
        .unwrap();
        roster::add_device(&mut tx, c.principal, MemberId([3; 8]), NOW).unwrap();
        for (fam, name, student) in [
            (fam_a, "Wang", student_a),
            (fam_b, "Chen", student_b),
            (fam_c, "Liu", student_c),
        ] {
            roster::add_family(&mut tx, fam, name).unwrap();
            roster::add_student(&mut tx, fam, student, "Kid").unwrap();
        }
        roster::add_member(
            &mut tx,
            c.member_a1,
            "Mother Wang",
            &[Role::Guardian],
            Some(fam_a),
        )
        .unwrap();
        roster::add_device(&mut tx, c.a1, c.member_a1, NOW).unwrap();
        roster::add_member(
            &mut tx,
            c.member_a2,
            "Father Wang",
            &[Role::Guardian],
            Some(fam_a),
        )
        .unwrap();
        roster::add_device(&mut tx, c.a2, c.member_a2, NOW).unwrap();
        roster::add_member(
            &mut tx,
            c.member_b1,
            "Mother Chen",
            &[Role::Guardian],
            Some(fam_b),
        )
        .unwrap();
        roster::add_device(&mut tx, c.b1, c.member_b1, NOW).unwrap();
        roster::add_member(
            &mut tx,
            MemberId([30; 8]),
            "Father Liu",
            &[Role::Guardian, Role::Committee],
            Some(fam_c),
        )
        .unwrap();
        roster::add_device(&mut tx, c.c1, MemberId([30; 8]), NOW).unwrap();
        tx.commit_with(roster::founding_commit(&nonce, NOW));
        let roster = RosterIndex::read(&doc).unwrap();
        Class {
            roster_doc: doc,
            roster,
            ..c
        }
    }

    /// Apply a roster change (e.g. revoke a device) and re-read the index.
    pub fn change_roster(
        &mut self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<(), ModelError>,
    ) {
        let mut tx = self.roster_doc.transaction();
        f(&mut tx).unwrap();
        tx.commit();
        self.roster = RosterIndex::read(&self.roster_doc).unwrap();
    }

    pub fn doc_id(&self, kind: DocKind) -> DocId {
        DocId::new(self.class, kind)
    }

    /// A fresh replica of document `kind` on `device`.
    pub fn replica(&self, kind: DocKind, device: &DeviceId) -> Automerge {
        genesis_document(&self.doc_id(kind), actor_for(device, [1; 8]))
    }

    pub fn actor(&self, device: DeviceId) -> Actor<'_> {
        Actor::new(&self.roster, device, NOW)
    }

    pub fn actor_at(&self, device: DeviceId, now: i64) -> Actor<'_> {
        Actor::new(&self.roster, device, now)
    }

    pub fn families(&self) -> [FamilyId; 3] {
        [self.fam_a, self.fam_b, self.fam_c]
    }

    /// The view for `device` over a notebook, lanes and boards.
    pub fn view(
        &self,
        device: &DeviceId,
        notebook: &Automerge,
        lanes: &[(FamilyId, &Automerge)],
        boards: &[(FamilyId, &Automerge)],
    ) -> NotebookView {
        let viewer = Viewer::of_device(&self.roster, device).unwrap();
        let docs = ClassDocs {
            notebook,
            lanes: lanes.to_vec(),
            boards: boards.to_vec(),
        };
        NotebookView::build(&self.roster, &viewer, &docs).unwrap()
    }
}

/// Run `f` in a transaction on `doc`: commit on success, roll back on error.
pub fn write<T>(
    doc: &mut Automerge,
    f: impl FnOnce(&mut Transaction<'_>) -> Result<T, ModelError>,
) -> Result<T, ModelError> {
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

/// Merge `from` into `to` (a copy of `from` is consumed, `from` is unchanged).
pub fn sync(to: &mut Automerge, from: &Automerge) {
    let mut copy = from.clone();
    to.merge(&mut copy).unwrap();
}

pub fn whole_class_entry(text: &str) -> NewEntry<'_> {
    NewEntry {
        kind: EntryKind::Announcement,
        urgency: Urgency::Amber,
        audience: Audience::WholeClass,
        title: "Notice",
        text,
        signature_requested: true,
        consent: None,
    }
}

pub fn consent_entry(text: &str, policy: ConsentPolicy) -> NewEntry<'_> {
    NewEntry {
        consent: Some(policy),
        ..whole_class_entry(text)
    }
}

pub fn students(ids: &[StudentId]) -> Audience {
    Audience::Students(ids.iter().copied().collect::<BTreeSet<_>>())
}
