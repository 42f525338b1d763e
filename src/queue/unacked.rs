//! A queue's unacked deliveries, by message id.
//!
//! Deliveries go out mostly in id order and are mostly settled in that order
//! (a multiple ack settles a run of them), so they are kept in a window: a
//! deque of slots for the ids `base`, `base + 1`, …, where settling the
//! oldest one moves the window on. An insert, a lookup and a settle are an
//! index, with neighbouring deliveries in neighbouring slots, where a hash
//! map put each at a random place in its table.
//!
//! ```text
//!   base                                  base + slots.len()
//!    │ Some │ None │ Some │ Some │ … │ Some │  <- insert(id ≥ base, in reach)
//!    └─ settled: None, and the Nones at the front go
//!   others: ids below `base` (a requeued message delivered again) or
//!           too far ahead, and what thinning moved out of the window
//! ```
//!
//! Bounds: an id is put in the window only within [`GAP_SLOTS_MAX`] empty
//! slots of its end; a window longer than [`SLOTS_MIN`] is kept at least half
//! full by moving its oldest entries to `others` (a delivery nobody acks
//! does not hold the window back). Each slot is pushed and popped once, so
//! thinning costs O(1) per insert on average.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use crate::ids::MsgId;
use crate::message::Message;

use super::{Delivery, IdHasher, Unacked};

/// Empty slots an insert may add before its id (ids skipped by no-ack
/// deliveries, expiry, priorities); further ahead it goes to `others`.
pub const GAP_SLOTS_MAX: u64 = 64;
/// A window up to this many slots is never thinned.
pub const SLOTS_MIN: usize = 1024;

impl Delivery {
    /// Its message, if the channel must hold it until the delivery settles
    /// (the queue did not keep it, [`Delivery::message_kept`]).
    pub fn into_held_message(self) -> Option<Message> {
        (!self.message_kept).then_some(self.message)
    }
}

/// The unacked deliveries of one queue.
#[derive(Debug, Default)]
pub(super) struct UnackedTable {
    /// Slots for the ids `base..base + slots.len()`; the front one is full.
    slots: VecDeque<Option<Unacked>>,
    base: u64,
    /// Full slots.
    in_slots: usize,
    /// Entries outside the window.
    others: HashMap<MsgId, Unacked, BuildHasherDefault<IdHasher>>,
}

impl UnackedTable {
    /// Entries held.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.in_slots + self.others.len()
    }

    /// Holds `entry` under `id`, which it does not hold yet.
    #[inline]
    pub(super) fn insert(&mut self, id: MsgId, entry: Unacked) {
        if self.slots.is_empty() {
            self.base = id.0;
        }
        let Some(offset) = id.0.checked_sub(self.base) else {
            self.others.insert(id, entry);
            return;
        };
        let end = self.slots.len() as u64;
        if offset < end {
            let slot = &mut self.slots[offset as usize];
            debug_assert!(slot.is_none(), "unacked id {} held twice", id.0);
            if slot.replace(entry).is_none() {
                self.in_slots += 1;
            }
            return;
        }
        if offset - end > GAP_SLOTS_MAX {
            self.others.insert(id, entry);
            return;
        }
        for _ in end..offset {
            self.slots.push_back(None);
        }
        self.slots.push_back(Some(entry));
        self.in_slots += 1;
        if self.slots.len() > SLOTS_MIN && self.slots.len() > 2 * self.in_slots {
            self.thin();
        }
    }

    /// Takes the entry held under `id`, if any.
    #[inline]
    pub(super) fn remove(&mut self, id: MsgId) -> Option<Unacked> {
        let in_window = id.0.checked_sub(self.base).filter(|&offset| offset < self.slots.len() as u64);
        if let Some(offset) = in_window {
            if let Some(entry) = self.slots[offset as usize].take() {
                self.in_slots -= 1;
                if offset == 0 {
                    self.trim_front();
                }
                return Some(entry);
            }
        }
        // Also below the window's end: it may have moved on over an id
        // that went to `others` before.
        if self.others.is_empty() {
            return None;
        }
        self.others.remove(&id)
    }

    /// Drops the empty slots at the front.
    #[inline]
    fn trim_front(&mut self) {
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
    }

    /// Moves the oldest entries out of the window until it is half full.
    #[cold]
    fn thin(&mut self) {
        while self.slots.len() > 2 * self.in_slots {
            let Some(front) = self.slots.pop_front() else { break };
            if let Some(entry) = front {
                self.in_slots -= 1;
                self.others.insert(MsgId(self.base), entry);
            }
            self.base += 1;
        }
        self.trim_front();
    }

    /// The entries, in no particular order.
    pub(super) fn values(&self) -> impl Iterator<Item = &Unacked> + '_ {
        self.slots.iter().flatten().chain(self.others.values())
    }

    /// The entries with their ids, in no particular order.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (MsgId, &mut Unacked)> + '_ {
        let base = self.base;
        let in_slots = self.slots.iter_mut().enumerate();
        let in_slots =
            in_slots.filter_map(move |(i, slot)| slot.as_mut().map(|u| (MsgId(base + i as u64), u)));
        in_slots.chain(self.others.iter_mut().map(|(id, u)| (*id, u)))
    }

    /// Gives back the room beyond `keep` spare entries.
    pub(super) fn shrink(&mut self, keep: usize) {
        if self.slots.capacity() > self.slots.len() + keep {
            self.slots.shrink_to(self.slots.len() + keep);
        }
        if self.others.capacity() > self.others.len() + keep {
            self.others.shrink_to(self.others.len() + keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::amqp::field::ShortStr;
    use crate::ids::{ChannelRef, ConnId, ConsumerKey, ShardId};
    use crate::message::{Body, Message, MessageParts};

    /// An entry told apart by its `loc`.
    fn entry(loc: u64) -> Unacked {
        let conn = ConnId { shard: ShardId(0), slot: 0, generation: 0 };
        Unacked {
            message: Some(Message::new(MessageParts {
                exchange: ShortStr::from_static(""),
                routing_key: ShortStr::from_static("q"),
                header: bytes::Bytes::new(),
                body: Body::One(bytes::Bytes::from_static(b"x")),
            })),
            body_bytes: 1,
            consumer: ConsumerKey { channel: ChannelRef { conn, channel: 1 }, consumer: 1 },
            expires_at_ms: 0,
            priority: 0,
            loc,
            delivery_count: 0,
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Deliver the next id after skipping this many.
        Next(u64),
        /// Deliver again an id some way back, if it is not held.
        Back(u64),
        /// Settle the held id at this rank (modulo how many are held).
        Settle(usize),
        /// Settle an id never delivered.
        Unknown(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => prop_oneof![Just(0u64), 0..3u64, 0..200u64].prop_map(Op::Next),
            1 => (0..5_000u64).prop_map(Op::Back),
            5 => any::<usize>().prop_map(Op::Settle),
            1 => any::<u64>().prop_map(Op::Unknown),
        ]
    }

    proptest! {
        /// The table holds exactly what a map would: every insert is found
        /// by its id once, and the window stays at most half empty.
        #[test]
        fn holds_what_a_map_holds(ops in proptest::collection::vec(op(), 1..2_000)) {
            let mut table = UnackedTable::default();
            let mut model: BTreeMap<u64, u64> = BTreeMap::new();
            let mut next = 1_000_000u64;
            for op in ops {
                match op {
                    Op::Next(skip) => {
                        next += skip;
                        table.insert(MsgId(next), entry(next));
                        model.insert(next, next);
                        next += 1;
                    }
                    Op::Back(back) => {
                        let id = next.saturating_sub(back + 1);
                        if let std::collections::btree_map::Entry::Vacant(e) = model.entry(id) {
                            table.insert(MsgId(id), entry(id));
                            e.insert(id);
                        }
                    }
                    Op::Settle(rank) => {
                        if model.is_empty() {
                            continue;
                        }
                        let Some(&id) = model.keys().nth(rank % model.len()) else { continue };
                        let got = table.remove(MsgId(id)).map(|u| u.loc);
                        prop_assert_eq!(got, model.remove(&id));
                    }
                    Op::Unknown(id) => {
                        if !model.contains_key(&id) {
                            prop_assert!(table.remove(MsgId(id)).is_none());
                        }
                    }
                }
                prop_assert_eq!(table.len(), model.len());
                prop_assert!(table.slots.len() <= SLOTS_MIN.max(2 * table.in_slots) + GAP_SLOTS_MAX as usize + 1);
                prop_assert!(table.slots.front().is_none_or(Option::is_some), "the front slot is full");
            }
            let pairs: Vec<(u64, u64)> = table.iter_mut().map(|(id, u)| (id.0, u.loc)).collect();
            prop_assert!(pairs.iter().all(|(id, loc)| id == loc), "an entry under another id");
            let mut held: Vec<u64> = pairs.iter().map(|&(id, _)| id).collect();
            held.sort_unstable();
            prop_assert_eq!(held, model.keys().copied().collect::<Vec<_>>());
            let mut values: Vec<u64> = table.values().map(|u| u.loc).collect();
            values.sort_unstable();
            prop_assert_eq!(values, model.values().copied().collect::<Vec<_>>());
        }
    }

    /// A delivery nobody acks does not hold the window back: the ones after
    /// it come and go in slots that are given back.
    #[test]
    fn an_entry_never_settled_does_not_grow_the_window() {
        let mut table = UnackedTable::default();
        table.insert(MsgId(1), entry(1));
        for id in 2..200_000 {
            table.insert(MsgId(id), entry(id));
            assert_eq!(table.remove(MsgId(id)).map(|u| u.loc), Some(id));
        }
        assert!(table.slots.len() <= SLOTS_MIN + 1, "window of {} slots", table.slots.len());
        assert_eq!(table.len(), 1);
        assert_eq!(table.remove(MsgId(1)).map(|u| u.loc), Some(1));
        assert_eq!(table.len(), 0);
    }
}
