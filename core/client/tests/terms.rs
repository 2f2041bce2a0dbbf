//! Rolling a class over to a new term (domain.md: "new school term").
#![allow(clippy::unwrap_used, clippy::expect_used)]

use homeroom_client::core::entries::{Audience, EntryKind, NewEntry, Urgency};
use homeroom_client::core::roster::Role;
use homeroom_client::core::{DocKind, ModelError};
use homeroom_client::{ClientError, Device};

fn entry() -> NewEntry<'static> {
    NewEntry {
        kind: EntryKind::Announcement,
        urgency: Urgency::Amber,
        audience: Audience::WholeClass,
        title: "Term",
        text: "Last day",
        signature_requested: false,
        consent: None,
    }
}

#[test]
fn a_new_term_is_a_new_class_and_the_old_one_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = Device::open(&dir.path().join("t")).unwrap();
    let staying = Device::open(&dir.path().join("a")).unwrap();
    let leaving = Device::open(&dir.path().join("b")).unwrap();
    let old = teacher.create_class("3B autumn", "Ms Li").unwrap();
    let fa = teacher.add_family(old, "Stays").unwrap();
    let fb = teacher.add_family(old, "Leaves").unwrap();
    teacher
        .add_member(
            old,
            "A",
            &[Role::Guardian],
            Some(fa),
            Some(staying.device_id()),
        )
        .unwrap();
    teacher
        .add_member(
            old,
            "B",
            &[Role::Guardian],
            Some(fb),
            Some(leaving.device_id()),
        )
        .unwrap();
    teacher.post_entry(old, &entry()).unwrap();

    let new = teacher.roll_term(old, "3B spring", Some(&[fa])).unwrap();
    assert_ne!(new, old);
    let old_roster = teacher.roster(old).unwrap();
    let new_roster = teacher.roster(new).unwrap();
    assert_eq!(old_roster.next_term, Some(new));
    assert_eq!(new_roster.previous_term, Some(old));
    assert!(old_roster.archived_at.is_some());
    // Kept family and its guardian device carried over; the leaving family did not.
    assert!(new_roster.families.contains_key(&fa));
    assert!(!new_roster.families.contains_key(&fb));
    assert!(new_roster.can_read(&staying.device_id(), &DocKind::Lane(fa)));
    assert!(new_roster.member_of(&leaving.device_id()).is_none());
    // The archive is read-only for everyone, the teacher included.
    assert!(matches!(
        teacher.post_entry(old, &entry()),
        Err(ClientError::Model(ModelError::NotAllowed(_)))
    ));
    assert!(!old_roster.can_write(&staying.device_id(), &DocKind::Lane(fa)));
    assert!(
        old_roster.can_read(&staying.device_id(), &DocKind::Notebook),
        "archives stay readable"
    );
    // The new term works, and a family that joins it never sees the old term.
    teacher.post_entry(new, &entry()).unwrap();
    let newcomer = Device::open(&dir.path().join("c")).unwrap();
    let fc = teacher.add_family(new, "New").unwrap();
    teacher
        .add_member(
            new,
            "C",
            &[Role::Guardian],
            Some(fc),
            Some(newcomer.device_id()),
        )
        .unwrap();
    let old_roster = teacher.roster(old).unwrap();
    assert!(
        old_roster
            .readable_docs(old, &newcomer.device_id())
            .is_empty()
    );
    // Rolling an archive again is refused.
    assert!(teacher.roll_term(old, "again", None).is_err());
}
