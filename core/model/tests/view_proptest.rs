//! Random interleavings of notebook operations on three devices (a teacher and two guardians
//! of one family), with random partial syncs and a final merge in random orders: every
//! replica must compose the same view, and no signature, reply or moderation is lost.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod view_support;

use std::collections::{BTreeSet, HashMap};

use homeroom_core::automerge::Automerge;
use homeroom_core::entries::{
    self, ConsentAnswer, ConsentPolicy, Moderation, ReplyScope, Visibility,
};
use homeroom_core::ids::SeededIds;
use homeroom_core::view::{ConsentOutcome, NotebookView, SignatureStatus};
use homeroom_core::{DeviceId, DocKind, ItemId, ModelError};
use proptest::prelude::*;
use view_support::*;

#[derive(Debug, Clone)]
enum Op {
    Post {
        consent: bool,
    },
    Edit {
        entry: usize,
        material: bool,
    },
    Sign {
        guardian: usize,
        entry: usize,
        allow: bool,
    },
    Read {
        guardian: usize,
        entry: usize,
    },
    Reply {
        guardian: usize,
        entry: usize,
        public: bool,
    },
    EditReply {
        guardian: usize,
        reply: usize,
    },
    HideReply {
        guardian: usize,
        reply: usize,
    },
    Moderate {
        reply: usize,
        purge: bool,
    },
    Sync {
        from: usize,
        to: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let g = 1usize..3;
    prop_oneof![
        2 => any::<bool>().prop_map(|consent| Op::Post { consent }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(entry, material)| Op::Edit { entry, material }),
        4 => (g.clone(), any::<usize>(), any::<bool>()).prop_map(|(guardian, entry, allow)| Op::Sign { guardian, entry, allow }),
        1 => (g.clone(), any::<usize>()).prop_map(|(guardian, entry)| Op::Read { guardian, entry }),
        2 => (g.clone(), any::<usize>(), any::<bool>()).prop_map(|(guardian, entry, public)| Op::Reply { guardian, entry, public }),
        1 => (g.clone(), any::<usize>()).prop_map(|(guardian, reply)| Op::EditReply { guardian, reply }),
        1 => (g, any::<usize>()).prop_map(|(guardian, reply)| Op::HideReply { guardian, reply }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(reply, purge)| Op::Moderate { reply, purge }),
        3 => (0usize..3, 0usize..3).prop_map(|(from, to)| Op::Sync { from, to }),
    ]
}

/// One device's replicas.
#[derive(Clone)]
struct Replicas {
    device: DeviceId,
    notebook: Automerge,
    lane: Automerge,
    board: Automerge,
}

impl Replicas {
    fn merge_from(&mut self, other: &Replicas) {
        sync(&mut self.notebook, &other.notebook);
        sync(&mut self.lane, &other.lane);
        sync(&mut self.board, &other.board);
    }

    fn view(&self, c: &Class, viewer: &DeviceId) -> NotebookView {
        c.view(
            viewer,
            &self.notebook,
            &[(c.fam_a, &self.lane)],
            &[(c.fam_a, &self.board)],
        )
    }
}

/// What the run created, to check nothing is lost.
#[derive(Default)]
struct Ledger {
    signatures: BTreeSet<ItemId>,
    replies: BTreeSet<ItemId>,
    /// The least visibility each reply must end with.
    floor: HashMap<ItemId, Visibility>,
}

fn ok_or_invalid_state<T>(r: Result<T, ModelError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(ModelError::InvalidState(_)) => None,
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

fn apply(
    c: &Class,
    devs: &mut [Replicas],
    ids: &mut [SeededIds],
    ledger: &mut Ledger,
    op: &Op,
    now: i64,
) {
    match *op {
        Op::Post { consent } => {
            let d = &mut devs[0];
            let new = if consent {
                consent_entry("consent?", ConsentPolicy::DeclineWins)
            } else {
                whole_class_entry("note")
            };
            write(&mut d.notebook, |tx| {
                entries::post_entry(tx, &c.actor_at(d.device, now), &mut ids[0], &new)
            })
            .unwrap();
        }
        Op::Edit { entry, material } => {
            let d = &mut devs[0];
            let list = entries::read_entries(&d.notebook).unwrap();
            if list.is_empty() {
                return;
            }
            let e = list[entry % list.len()].id;
            let text = format!("edit at {now}");
            write(&mut d.notebook, |tx| {
                entries::edit_entry(
                    tx,
                    &c.actor_at(d.device, now),
                    &mut ids[0],
                    e,
                    "",
                    &text,
                    material,
                )
            })
            .unwrap();
        }
        Op::Sign {
            guardian,
            entry,
            allow,
        } => {
            let d = &mut devs[guardian];
            let list = entries::read_entries(&d.notebook).unwrap();
            if list.is_empty() {
                return;
            }
            let e = &list[entry % list.len()];
            let answer = e.consent.map(|_| {
                if allow {
                    ConsentAnswer::Allow
                } else {
                    ConsentAnswer::Decline
                }
            });
            let rev = e.latest().unwrap().id;
            let nb = &d.notebook;
            let id = write(&mut d.lane, |tx| {
                entries::sign_entry(
                    tx,
                    &c.actor_at(d.device, now),
                    &mut ids[guardian],
                    nb,
                    e.id,
                    rev,
                    answer,
                )
            })
            .unwrap();
            ledger.signatures.insert(id);
        }
        Op::Read { guardian, entry } => {
            let d = &mut devs[guardian];
            let list = entries::read_entries(&d.notebook).unwrap();
            if list.is_empty() {
                return;
            }
            let e = list[entry % list.len()].id;
            let nb = &d.notebook;
            write(&mut d.lane, |tx| {
                entries::mark_read(tx, &c.actor_at(d.device, now), nb, e)
            })
            .unwrap();
        }
        Op::Reply {
            guardian,
            entry,
            public,
        } => {
            let d = &mut devs[guardian];
            let list = entries::read_entries(&d.notebook).unwrap();
            if list.is_empty() {
                return;
            }
            let e = list[entry % list.len()].id;
            let (scope, doc) = if public {
                (ReplyScope::Public, &mut d.board)
            } else {
                (ReplyScope::Private, &mut d.lane)
            };
            let nb = &d.notebook;
            let id = write(doc, |tx| {
                entries::post_reply(
                    tx,
                    &c.actor_at(d.device, now),
                    &mut ids[guardian],
                    nb,
                    scope,
                    e,
                    "reply",
                )
            })
            .unwrap();
            ledger.replies.insert(id);
        }
        Op::EditReply { guardian, reply } | Op::HideReply { guardian, reply } => {
            let d = &mut devs[guardian];
            let mut own = Vec::new();
            for (public, doc) in [(true, &d.board), (false, &d.lane)] {
                for r in entries::read_replies(doc, &c.roster).unwrap() {
                    if r.author == Some(d.device) {
                        own.push((public, r.id));
                    }
                }
            }
            if own.is_empty() {
                return;
            }
            let (public, id) = own[reply % own.len()];
            let doc = if public { &mut d.board } else { &mut d.lane };
            let actor = c.actor_at(d.device, now);
            if matches!(op, Op::EditReply { .. }) {
                let text = format!("edited at {now}");
                ok_or_invalid_state(write(doc, |tx| entries::edit_reply(tx, &actor, id, &text)));
            } else {
                write(doc, |tx| entries::hide_own_reply(tx, &actor, id)).unwrap();
                let f = ledger.floor.entry(id).or_default();
                *f = (*f).max(Visibility::HiddenByAuthor);
            }
        }
        Op::Moderate { reply, purge } => {
            let d = &mut devs[0];
            let mut known = Vec::new();
            for (public, doc) in [(true, &d.board), (false, &d.lane)] {
                for r in entries::read_replies(doc, &c.roster).unwrap() {
                    known.push((public, r.id));
                }
            }
            if known.is_empty() {
                return;
            }
            let (public, id) = known[reply % known.len()];
            let replies_doc = if public { &d.board } else { &d.lane };
            let m = if purge {
                Moderation::Purge
            } else {
                Moderation::Hide
            };
            let level = write(&mut d.notebook, |tx| {
                entries::moderate_reply(tx, &c.actor_at(d.device, now), replies_doc, id, m)
            })
            .unwrap();
            assert!(level >= m.visibility());
            let f = ledger.floor.entry(id).or_default();
            *f = (*f).max(m.visibility());
        }
        Op::Sync { from, to } => {
            if from != to {
                let source = devs[from].clone();
                devs[to].merge_from(&source);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_and_nothing_is_lost(
        ops in proptest::collection::vec(op(), 1..40),
        orders in proptest::collection::vec(Just(vec![0usize, 1, 2]).prop_shuffle(), 3),
    ) {
        let c = Class::new();
        let mut devs: Vec<Replicas> = [c.teacher, c.a1, c.a2]
            .into_iter()
            .map(|device| Replicas {
                device,
                notebook: c.replica(DocKind::Notebook, &device),
                lane: c.replica(DocKind::Lane(c.fam_a), &device),
                board: c.replica(DocKind::Board(c.fam_a), &device),
            })
            .collect();
        let mut ids: Vec<SeededIds> = (0..3).map(|i| SeededIds::new(1000 + i)).collect();
        let mut ledger = Ledger::default();
        for (step, op) in ops.iter().enumerate() {
            apply(&c, &mut devs, &mut ids, &mut ledger, op, NOW + step as i64);
        }

        // Final merge: each device takes the others' state in its own random order.
        let before = devs.clone();
        for (i, order) in orders.iter().enumerate() {
            for &j in order {
                if j != i {
                    devs[i].merge_from(&before[j]);
                }
            }
        }
        for d in &devs[1..] {
            prop_assert_eq!(d.notebook.get_heads(), devs[0].notebook.get_heads());
            prop_assert_eq!(d.lane.get_heads(), devs[0].lane.get_heads());
            prop_assert_eq!(d.board.get_heads(), devs[0].board.get_heads());
        }

        let staff: Vec<NotebookView> = devs.iter().map(|d| d.view(&c, &c.teacher)).collect();
        let parent: Vec<NotebookView> = devs.iter().map(|d| d.view(&c, &c.a1)).collect();
        prop_assert_eq!(&staff[0], &staff[1]);
        prop_assert_eq!(&staff[0], &staff[2]);
        prop_assert_eq!(&parent[0], &parent[1]);
        prop_assert_eq!(&parent[0], &parent[2]);

        let view = &staff[0];
        let mut signatures = BTreeSet::new();
        let mut replies = HashMap::new();
        for e in view.entries.iter() {
            let state = &e.families[&c.fam_a];
            let sigs = e.signatures_of(&c.fam_a);
            prop_assert_eq!(sigs.len(), state.signature_count);
            signatures.extend(sigs.iter().map(|s| s.id));
            for r in e.public_replies.iter().chain(e.private_replies.iter()) {
                replies.insert(r.id, r.visibility);
            }
            // A signature of the latest revision means "signed", with nothing to carry forward.
            if sigs.iter().any(|s| s.revision == e.latest.id) {
                prop_assert_eq!(state.status, SignatureStatus::Signed { revision: e.latest.id, carried_forward: false });
            }
            // Independent oracle: a signature is current unless a material revision follows
            // the one it names.
            let position = |rev: ItemId| e.revisions.iter().position(|r| r.id == rev).unwrap();
            let current = |rev: ItemId| !e.revisions[position(rev) + 1..].iter().any(|r| r.material);
            for s in sigs {
                prop_assert_eq!(s.current, current(s.revision));
            }
            let newest = |want: bool| sigs.iter().filter(|s| current(s.revision) == want).map(|s| position(s.revision)).max();
            let expected = match (newest(true), newest(false)) {
                (Some(p), _) => SignatureStatus::Signed { revision: e.revisions[p].id, carried_forward: p + 1 < e.revisions.len() },
                (None, Some(p)) => SignatureStatus::Superseded { revision: e.revisions[p].id },
                (None, None) => SignatureStatus::Unsigned,
            };
            prop_assert_eq!(state.status, expected);
            if let Some(consent) = &state.consent {
                // Each guardian's latest current answer; decline wins.
                let mut latest: HashMap<_, (i64, ItemId, ConsentAnswer)> = HashMap::new();
                for s in sigs.iter().filter(|s| current(s.revision)) {
                    if let Some(a) = s.consent {
                        let slot = latest.entry(s.member).or_insert((s.at, s.id, a));
                        if (s.at, s.id) >= (slot.0, slot.1) {
                            *slot = (s.at, s.id, a);
                        }
                    }
                }
                let answers: BTreeSet<_> = latest.values().map(|v| v.2).collect();
                prop_assert_eq!(consent.answers.len(), latest.len());
                prop_assert_eq!(consent.conflict, answers.len() == 2);
                let outcome = if answers.contains(&ConsentAnswer::Decline) {
                    ConsentOutcome::Declined
                } else if answers.is_empty() {
                    ConsentOutcome::Pending
                } else {
                    ConsentOutcome::Allowed
                };
                prop_assert_eq!(consent.outcome, outcome);
            }
        }
        prop_assert_eq!(&signatures, &ledger.signatures, "no signature lost or invented");
        prop_assert_eq!(replies.keys().copied().collect::<BTreeSet<_>>(), ledger.replies.clone(), "no reply lost");
        for (id, floor) in &ledger.floor {
            prop_assert!(replies[id] >= *floor, "visibility of {:?} moved down", id);
        }
    }
}
