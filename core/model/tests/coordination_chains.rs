//! Sign-up chains: "concurrent sign-up chain lines" — a set of lines, one writer each, keyed
//! by student when one-per-student; numbering rendered; beyond capacity → waitlist.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod coordination_support;

use automerge::Automerge;
use coordination_support::*;
use homeroom_core::chains::{self, ChainPlace, LineKey, NewChain};
use homeroom_core::{FamilyId, ItemId, ModelError, SeededIds};

fn setup(one_per_student: bool, capacity: Option<u32>) -> (Class, SeededIds, Automerge, ItemId) {
    let c = Class::new();
    let mut ids = SeededIds::new(31);
    let mut nb = c.replica(c.notebook());
    let chain = NewChain {
        title: "Spring outing",
        description: "Name and number of people",
        one_per_student,
        capacity,
        closes_at: Some(T0 + DAY),
    };
    let id = edit(&mut nb, c.t1, 1, |tx| {
        chains::create_chain(tx, &c.actor(c.t1, T0), &mut ids, &chain)
    })
    .unwrap();
    (c, ids, nb, id)
}

fn places(view: &chains::ChainView) -> Vec<(FamilyId, String, ChainPlace)> {
    view.lines
        .iter()
        .map(|l| (l.family, l.text.clone(), l.place))
        .collect()
}

#[test]
fn concurrent_lines_are_never_overwritten_and_numbering_is_rendered() {
    let (c, mut ids, nb, chain) = setup(false, None);
    // Two guardians of family 1 on their own phones, and family 2, all offline.
    let mut a = c.replica(c.lane(c.f1));
    let mut b = c.replica(c.lane(c.f1));
    let mut f2 = c.replica(c.lane(c.f2));
    edit(&mut a, c.g1a, 2, |tx| {
        chains::add_line(
            tx,
            &c.actor(c.g1a, T0 + 30),
            &nb,
            &mut ids,
            c.f1,
            chain,
            None,
            "Wang: 2",
        )
    })
    .unwrap();
    edit(&mut b, c.g1b, 3, |tx| {
        chains::add_line(
            tx,
            &c.actor(c.g1b, T0 + 10),
            &nb,
            &mut ids,
            c.f1,
            chain,
            None,
            "Wang grandma: 1",
        )
    })
    .unwrap();
    edit(&mut f2, c.g2, 4, |tx| {
        chains::add_line(
            tx,
            &c.actor(c.g2, T0 + 20),
            &nb,
            &mut ids,
            c.f2,
            chain,
            None,
            "Chen: 3",
        )
    })
    .unwrap();
    sync(&mut a, &mut b);
    let view = chains::chain_view(&nb, &[(c.f1, &a), (c.f2, &f2)], &c.roster, chain).unwrap();
    assert_eq!(
        places(&view),
        vec![
            (
                c.f1,
                "Wang grandma: 1".into(),
                ChainPlace::Placed { number: 1 }
            ),
            (c.f2, "Chen: 3".into(), ChainPlace::Placed { number: 2 }),
            (c.f1, "Wang: 2".into(), ChainPlace::Placed { number: 3 }),
        ]
    );
    // Same result whichever replica of the lane is read, and lanes in any order.
    assert_eq!(
        view,
        chains::chain_view(&nb, &[(c.f2, &f2), (c.f1, &b)], &c.roster, chain).unwrap()
    );
}

#[test]
fn one_line_per_student_collapses_concurrent_lines_deterministically() {
    let (c, mut ids, nb, chain) = setup(true, None);
    let mut a = c.replica(c.lane(c.f1));
    let mut b = c.replica(c.lane(c.f1));
    edit(&mut a, c.g1a, 2, |tx| {
        chains::add_line(
            tx,
            &c.actor(c.g1a, T0 + 10),
            &nb,
            &mut ids,
            c.f1,
            chain,
            Some(c.s1a),
            "Xiaoming, with dad",
        )
    })
    .unwrap();
    edit(&mut b, c.g1b, 3, |tx| {
        chains::add_line(
            tx,
            &c.actor(c.g1b, T0 + 20),
            &nb,
            &mut ids,
            c.f1,
            chain,
            Some(c.s1a),
            "Xiaoming, with mum",
        )
    })
    .unwrap();
    edit(&mut b, c.g1b, 3, |tx| {
        chains::add_line(
            tx,
            &c.actor(c.g1b, T0 + 21),
            &nb,
            &mut ids,
            c.f1,
            chain,
            Some(c.s1b),
            "Xiaohong",
        )
    })
    .unwrap();
    let mut f2 = c.replica(c.lane(c.f2));
    edit(&mut f2, c.g2, 4, |tx| {
        chains::add_line(
            tx,
            &c.actor(c.g2, T0 + 15),
            &nb,
            &mut ids,
            c.f2,
            chain,
            Some(c.s2),
            "Jie",
        )
    })
    .unwrap();
    sync(&mut a, &mut b);
    let view = chains::chain_view(&nb, &[(c.f1, &a), (c.f2, &f2)], &c.roster, chain).unwrap();
    let lines: Vec<_> = view
        .lines
        .iter()
        .map(|l| (l.key, l.text.as_str(), l.place))
        .collect();
    assert_eq!(
        lines,
        vec![
            // Xiaoming's line keeps the place of its first version and the text of the latest.
            (
                LineKey::Student(c.s1a),
                "Xiaoming, with mum",
                ChainPlace::Placed { number: 1 }
            ),
            (
                LineKey::Student(c.s2),
                "Jie",
                ChainPlace::Placed { number: 2 }
            ),
            (
                LineKey::Student(c.s1b),
                "Xiaohong",
                ChainPlace::Placed { number: 3 }
            ),
        ]
    );
    assert_eq!(
        view,
        chains::chain_view(&nb, &[(c.f1, &b), (c.f2, &f2)], &c.roster, chain).unwrap()
    );
    // A student line needs a student of the family.
    let r = edit(&mut a, c.g1a, 2, |tx| {
        chains::add_line(
            tx,
            &c.actor(c.g1a, T0),
            &nb,
            &mut ids,
            c.f1,
            chain,
            None,
            "x",
        )
    });
    assert!(matches!(
        r,
        Err(ModelError::InvalidInput {
            field: "student",
            ..
        })
    ));
    let r = edit(&mut a, c.g1a, 2, |tx| {
        chains::add_line(
            tx,
            &c.actor(c.g1a, T0),
            &nb,
            &mut ids,
            c.f1,
            chain,
            Some(c.s2),
            "x",
        )
    });
    assert!(matches!(
        r,
        Err(ModelError::UnknownId {
            kind: "student",
            ..
        })
    ));
}

#[test]
fn beyond_capacity_lines_are_waitlisted_and_move_up_when_a_line_is_withdrawn() {
    let (c, mut ids, mut nb, chain) = setup(false, Some(2));
    let mut lanes: Vec<Automerge> = vec![
        c.replica(c.lane(c.f1)),
        c.replica(c.lane(c.f2)),
        c.replica(c.lane(c.f3)),
    ];
    let who = [(c.g1a, c.f1), (c.g2, c.f2), (c.g3, c.f3)];
    let mut keys = Vec::new();
    for (i, (g, f)) in who.into_iter().enumerate() {
        let k = edit(&mut lanes[i], g, 2 + i as u8, |tx| {
            chains::add_line(
                tx,
                &c.actor(g, T0 + 10 * (3 - i as i64)),
                &nb,
                &mut ids,
                f,
                chain,
                None,
                "me",
            )
        })
        .unwrap();
        keys.push(k);
    }
    fn all<'a>(
        who: &[(homeroom_core::DeviceId, FamilyId)],
        lanes: &'a [Automerge],
    ) -> Vec<(FamilyId, &'a Automerge)> {
        who.iter().map(|w| w.1).zip(lanes.iter()).collect()
    }
    let view = chains::chain_view(&nb, &all(&who, &lanes), &c.roster, chain).unwrap();
    let got: Vec<_> = view.lines.iter().map(|l| (l.family, l.place)).collect();
    assert_eq!(
        got,
        vec![
            (c.f3, ChainPlace::Placed { number: 1 }),
            (c.f2, ChainPlace::Placed { number: 2 }),
            (c.f1, ChainPlace::Waitlisted { position: 1 }),
        ]
    );
    // Family 2 withdraws: family 1 moves up; the withdrawn line is kept as such.
    edit(&mut lanes[1], c.g2, 3, |tx| {
        chains::withdraw_line(tx, &c.actor(c.g2, T0 + 100), c.f2, chain, keys[1])
    })
    .unwrap();
    let view = chains::chain_view(&nb, &all(&who, &lanes), &c.roster, chain).unwrap();
    let got: Vec<_> = view.lines.iter().map(|l| (l.family, l.place)).collect();
    assert_eq!(
        got,
        vec![
            (c.f3, ChainPlace::Placed { number: 1 }),
            (c.f1, ChainPlace::Placed { number: 2 }),
            (c.f2, ChainPlace::Withdrawn),
        ]
    );
    // After the chain closes, no more lines.
    edit(&mut nb, c.t1, 1, |tx| {
        chains::close_chain(tx, &c.actor(c.t1, T0 + 200), chain)
    })
    .unwrap();
    let r = edit(&mut lanes[1], c.g2, 3, |tx| {
        chains::add_line(
            tx,
            &c.actor(c.g2, T0 + 300),
            &nb,
            &mut ids,
            c.f2,
            chain,
            None,
            "again",
        )
    });
    assert!(matches!(r, Err(ModelError::InvalidState(_))), "{r:?}");
}

#[test]
fn bad_chain_input_is_a_typed_error() {
    let (c, mut ids, mut nb, chain) = setup(false, None);
    let staff = c.actor(c.t1, T0);
    let base = NewChain {
        title: "x",
        description: "",
        one_per_student: false,
        capacity: None,
        closes_at: None,
    };
    let r = edit(&mut nb, c.t1, 1, |tx| {
        chains::create_chain(
            tx,
            &staff,
            &mut ids,
            &NewChain {
                capacity: Some(0),
                ..base
            },
        )
    });
    assert!(matches!(
        r,
        Err(ModelError::InvalidInput {
            field: "capacity",
            ..
        })
    ));
    let r = edit(&mut nb, c.t1, 1, |tx| {
        chains::create_chain(tx, &staff, &mut ids, &NewChain { title: "", ..base })
    });
    assert!(matches!(
        r,
        Err(ModelError::InvalidInput { field: "title", .. })
    ));
    let r = edit(&mut nb, c.t1, 1, |tx| {
        chains::create_chain(
            tx,
            &staff,
            &mut ids,
            &NewChain {
                closes_at: Some(T0),
                ..base
            },
        )
    });
    assert!(matches!(
        r,
        Err(ModelError::InvalidInput {
            field: "closes_at",
            ..
        })
    ));
    let r = edit(&mut nb, c.g1a, 2, |tx| {
        chains::create_chain(tx, &c.actor(c.g1a, T0), &mut ids, &base)
    });
    assert!(matches!(r, Err(ModelError::NotAllowed(_))));
    let mut lane = c.replica(c.lane(c.f1));
    let r = edit(&mut lane, c.g1a, 2, |tx| {
        chains::add_line(
            tx,
            &c.actor(c.g1a, T0),
            &nb,
            &mut ids,
            c.f1,
            chain,
            None,
            "",
        )
    });
    assert!(matches!(
        r,
        Err(ModelError::InvalidInput { field: "text", .. })
    ));
    let r = edit(&mut lane, c.g1a, 2, |tx| {
        chains::add_line(
            tx,
            &c.actor(c.g1a, T0),
            &nb,
            &mut ids,
            c.f1,
            ItemId([5; 8]),
            None,
            "x",
        )
    });
    assert!(matches!(
        r,
        Err(ModelError::UnknownId { kind: "chain", .. })
    ));
    let r = edit(&mut lane, c.g1a, 2, |tx| {
        chains::withdraw_line(
            tx,
            &c.actor(c.g1a, T0),
            c.f1,
            chain,
            LineKey::Line(ItemId([5; 8])),
        )
    });
    assert!(matches!(r, Err(ModelError::UnknownId { kind: "line", .. })));
    let r = edit(&mut lane, c.g2, 3, |tx| {
        chains::add_line(
            tx,
            &c.actor(c.g2, T0),
            &nb,
            &mut ids,
            c.f1,
            chain,
            None,
            "x",
        )
    });
    assert!(matches!(r, Err(ModelError::NotAllowed(_))));
}
