//! How deep a change nests objects: the bound that stops a "deeply nested" document bomb.
//!
//! Automerge walks nested objects recursively in places (hydrating, diffing, reading paths),
//! so a change of a few hundred kilobytes that puts maps thousands of levels deep would cost
//! every replica that applies it. Homeroom's own documents are shallow: the model's deepest
//! paths are about five objects below the root (a survey question's options:
//! `surveys/<id>/questions/<qid>/options`), so [`MAX_OBJECT_DEPTH`] leaves ample room and every
//! replica refuses a change that goes deeper (`Reject { TooDeep }`).

use std::collections::HashMap;

use homeroom_core::automerge::legacy::{ObjectId, OpId, OpType};
use homeroom_core::automerge::{Automerge, Change, ReadDoc};
use homeroom_protocol::RejectReason;

/// The deepest an object may sit below the document root (an object put in the root is at
/// depth 1). A change creating an object deeper than this is refused with `TooDeep`.
pub const MAX_OBJECT_DEPTH: usize = 32;

/// Depths of the objects created by the changes of one batch accepted so far: a batch's
/// changes are applied to the document only after all of them are checked, so a change that
/// builds on an object made earlier in the batch finds its depth here.
#[derive(Debug, Default)]
pub(crate) struct BatchDepths {
    created: HashMap<OpId, usize>,
}

impl BatchDepths {
    /// Whether `change` keeps every object it creates within `max` levels of the root:
    /// `Err(TooDeep)` if not, `Err(MalformedChange)` if its operations cannot be read. On `Ok`
    /// the depths of the objects it creates are remembered for the rest of the batch.
    ///
    /// Cheap for the usual change: only its `make` operations are looked at, and only the
    /// parent of a chain (an object not made in this batch) is looked up in `doc`, walking at
    /// most `max + 1` levels up. A parent that is not in `doc` yet (the change arrived before
    /// the changes it builds on) counts as the root.
    pub(crate) fn check(
        &mut self,
        doc: &Automerge,
        change: &Change,
        max: usize,
    ) -> Result<(), RejectReason> {
        // automerge's op expansion `unwrap`s an operation's actor index, which its change
        // parser does not check against the change's actor table: a peer's bytes must not
        // take the node down with it.
        let expanded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| change.decode()))
            .map_err(|_| RejectReason::MalformedChange)?;
        let start = u64::from(expanded.start_op);
        let mut made: HashMap<OpId, usize> = HashMap::new();
        for (i, op) in expanded.operations.iter().enumerate() {
            if !matches!(op.action, OpType::Make(_)) {
                continue;
            }
            let parent = match &op.obj {
                ObjectId::Root => 0,
                ObjectId::Id(id) => match made.get(id).or_else(|| self.created.get(id)) {
                    Some(d) => *d,
                    None => {
                        let d = depth_in(doc, id, max);
                        made.insert(id.clone(), d);
                        d
                    }
                },
            };
            let depth = parent.saturating_add(1);
            if depth > max {
                return Err(RejectReason::TooDeep);
            }
            let counter = start.saturating_add(i as u64);
            made.insert(OpId::new(counter, &expanded.actor_id), depth);
        }
        self.created.extend(made);
        Ok(())
    }
}

/// The depth of object `id` in `doc` (counting at most `max + 1` levels), or 0 when `doc` does
/// not hold it.
fn depth_in(doc: &Automerge, id: &OpId, max: usize) -> usize {
    let Ok(obj) = doc.import_obj(&format!("{}@{}", id.counter(), id.actor())) else {
        return 0;
    };
    match doc.parents(&obj) {
        Ok(parents) => parents.take(max.saturating_add(1)).count(),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use homeroom_core::automerge::transaction::Transactable;
    use homeroom_core::automerge::{ActorId, Automerge, ObjType, ROOT};

    use super::*;

    /// A change on `doc` nesting `levels` maps below the deepest `n` chain (or the root).
    fn nest(doc: &mut Automerge, levels: usize) -> Change {
        let mut tx = doc.transaction();
        let mut obj = ROOT;
        // Continue below the deepest "n" chain already there.
        while let Ok(Some((_, next))) = tx.get(&obj, "n") {
            obj = next;
        }
        for _ in 0..levels {
            obj = tx.put_object(&obj, "n", ObjType::Map).unwrap();
        }
        tx.commit();
        doc.get_last_local_change().unwrap().clone()
    }

    #[test]
    fn a_chain_at_the_limit_passes_and_one_more_level_is_refused() {
        let mut doc = Automerge::new().with_actor(ActorId::random());
        let ok = nest(&mut doc.clone(), MAX_OBJECT_DEPTH);
        assert_eq!(
            BatchDepths::default().check(&doc, &ok, MAX_OBJECT_DEPTH),
            Ok(())
        );
        let bomb = nest(&mut doc, MAX_OBJECT_DEPTH + 1);
        assert_eq!(
            BatchDepths::default().check(&Automerge::new(), &bomb, MAX_OBJECT_DEPTH),
            Err(RejectReason::TooDeep)
        );
    }

    #[test]
    fn depth_counts_from_where_the_chain_starts_in_the_document() {
        let mut doc = Automerge::new().with_actor(ActorId::random());
        nest(&mut doc, 20);
        // 12 more levels below depth 20: 32, allowed.
        let mut fork = doc.fork();
        let ok = nest(&mut fork, 12);
        assert_eq!(
            BatchDepths::default().check(&doc, &ok, MAX_OBJECT_DEPTH),
            Ok(())
        );
        // 13 more: 33, refused, though the change alone nests only 13 levels.
        let mut fork = doc.fork();
        let bomb = nest(&mut fork, 13);
        assert_eq!(
            BatchDepths::default().check(&doc, &bomb, MAX_OBJECT_DEPTH),
            Err(RejectReason::TooDeep)
        );
    }

    #[test]
    fn depth_carries_across_the_changes_of_one_batch() {
        let before = Automerge::new().with_actor(ActorId::random());
        let mut doc = before.clone();
        let first = nest(&mut doc, 30);
        let second = nest(&mut doc, 3);
        let mut batch = BatchDepths::default();
        // Neither is applied to `before` while the batch is checked.
        assert_eq!(batch.check(&before, &first, MAX_OBJECT_DEPTH), Ok(()));
        assert_eq!(
            batch.check(&before, &second, MAX_OBJECT_DEPTH),
            Err(RejectReason::TooDeep)
        );
    }

    #[test]
    fn changes_that_make_no_objects_pass() {
        let mut doc = Automerge::new().with_actor(ActorId::random());
        nest(&mut doc, MAX_OBJECT_DEPTH);
        let mut fork = doc.fork();
        let mut tx = fork.transaction();
        tx.put(ROOT, "plain", 1).unwrap();
        tx.commit();
        let plain = fork.get_last_local_change().unwrap().clone();
        assert_eq!(
            BatchDepths::default().check(&doc, &plain, MAX_OBJECT_DEPTH),
            Ok(())
        );
    }
}
