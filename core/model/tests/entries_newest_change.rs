//! `entries_in_newest_change`: which entries the newest change wrote to, read from that change
//! alone (the relay's webhook decides "urgent" with it on every notebook change).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod view_support;

use homeroom_core::DocKind;
use homeroom_core::automerge::transaction::CommitOptions;
use homeroom_core::automerge::{Automerge, transaction::Transaction};
use homeroom_core::entries::{self, Urgency, entries_in_newest_change};
use homeroom_core::ids::SeededIds;
use homeroom_core::{ItemId, ModelError};
use view_support::*;

/// Commit `f` as one change stamped `at` (seconds, automerge's change time).
fn write_at<T>(
    doc: &mut Automerge,
    at: i64,
    f: impl FnOnce(&mut Transaction<'_>) -> Result<T, ModelError>,
) -> T {
    let mut tx = doc.transaction();
    let v = f(&mut tx).unwrap();
    tx.commit_with(CommitOptions::default().with_time(at));
    v
}

#[test]
fn posts_edits_and_reflags_name_their_entry_and_nothing_else() {
    let c = Class::new();
    let mut ids = SeededIds::new(1);
    let t = c.actor(c.teacher);
    let mut nb = c.replica(DocKind::Notebook, &c.teacher);
    assert!(entries_in_newest_change(&nb).is_empty(), "genesis only");

    let a = write_at(&mut nb, 1, |tx| {
        entries::post_entry(tx, &t, &mut ids, &whole_class_entry("Trip on Friday"))
    });
    assert_eq!(entries_in_newest_change(&nb), vec![a.entry]);
    let b = write_at(&mut nb, 2, |tx| {
        entries::post_entry(tx, &t, &mut ids, &whole_class_entry("Library books"))
    });
    assert_eq!(
        entries_in_newest_change(&nb),
        vec![b.entry],
        "only the newest post"
    );

    write_at(&mut nb, 3, |tx| {
        entries::edit_entry(
            tx,
            &t,
            &mut ids,
            a.entry,
            "Notice",
            "Trip on Saturday",
            true,
        )
    });
    assert_eq!(
        entries_in_newest_change(&nb),
        vec![a.entry],
        "a new revision"
    );

    write_at(&mut nb, 4, |tx| {
        entries::set_urgency(tx, &t, b.entry, Urgency::Red)
    });
    assert_eq!(entries_in_newest_change(&nb), vec![b.entry], "re-flagged");

    let both = write_at(&mut nb, 5, |tx| {
        let x = entries::post_entry(tx, &t, &mut ids, &whole_class_entry("One"))?;
        let y = entries::post_entry(tx, &t, &mut ids, &whole_class_entry("Two"))?;
        Ok(vec![x.entry, y.entry])
    });
    let mut got = entries_in_newest_change(&nb);
    let mut want: Vec<ItemId> = both;
    got.sort();
    want.sort();
    assert_eq!(got, want, "two posts in one change");
}

#[test]
fn of_concurrent_heads_only_the_newest_counts() {
    let c = Class::new();
    let mut ids = SeededIds::new(2);
    let mut nb_t = c.replica(DocKind::Notebook, &c.teacher);
    let mut nb_t2 = c.replica(DocKind::Notebook, &c.teacher2);
    let older = write_at(&mut nb_t, 10, |tx| {
        entries::post_entry(
            tx,
            &c.actor(c.teacher),
            &mut ids,
            &whole_class_entry("Older"),
        )
    });
    let newer = write_at(&mut nb_t2, 20, |tx| {
        entries::post_entry(
            tx,
            &c.actor(c.teacher2),
            &mut ids,
            &whole_class_entry("Newer"),
        )
    });
    nb_t.merge(&mut nb_t2).unwrap();
    assert_eq!(nb_t.get_heads().len(), 2, "concurrent posts");
    assert_eq!(entries_in_newest_change(&nb_t), vec![newer.entry]);
    assert_ne!(older.entry, newer.entry);
}
