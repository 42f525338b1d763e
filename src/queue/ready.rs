//! The ready messages of a queue, in delivery order: by priority (highest
//! first) when the queue has `x-max-priority`, then by arrival. A queue
//! without priorities has one level, and every operation is a plain
//! `VecDeque` operation.

use std::collections::VecDeque;

use crate::ids::MsgId;
use crate::message::Message;

/// Largest x-max-priority RabbitMQ accepts.
pub const PRIORITY_MAX: u8 = 255;

/// A message waiting for delivery.
#[derive(Debug)]
pub(super) struct Ready {
    pub(super) id: MsgId,
    pub(super) message: Message,
    pub(super) redelivered: bool,
    /// Times it came back after a delivery (quorum queues count them).
    pub(super) delivery_count: u32,
    /// Queue clock time (ms) at which it expires; `NEVER` if it does not.
    pub(super) expires_at_ms: u64,
    /// Its priority level (0 unless the queue has priorities).
    pub(super) priority: u8,
    /// Its position in the message log ([`crate::storage::NO_LOC`]: not stored).
    pub(super) loc: crate::storage::Loc,
}

/// Spare slots a queue keeps in each of its tables once the shard is idle
/// (see [`super::Queue::shrink_idle`]).
pub const IDLE_SPARE_SLOTS_MAX: usize = 128;

/// Ready messages, by priority level then arrival.
#[derive(Debug)]
pub(super) struct ReadyList {
    /// One FIFO per priority level, lowest first.
    levels: Vec<VecDeque<Ready>>,
    len: usize,
}

impl ReadyList {
    /// A list with priorities `0..=max_priority` (0: no priorities).
    pub(super) fn new(max_priority: u8) -> ReadyList {
        let levels = (0..=max_priority).map(|_| VecDeque::new()).collect();
        ReadyList { levels, len: 0 }
    }

    /// The highest priority level.
    pub(super) fn max_priority(&self) -> u8 {
        u8::try_from(self.levels.len() - 1).unwrap_or(PRIORITY_MAX)
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends at the end of its level.
    pub(super) fn push_back(&mut self, ready: Ready) {
        let level = self.level(ready.priority);
        self.levels[level].push_back(ready);
        self.len += 1;
    }

    /// The next message to deliver.
    pub(super) fn front(&self) -> Option<&Ready> {
        self.levels.iter().rev().find_map(VecDeque::front)
    }

    /// Takes the next message to deliver.
    #[inline(always)]
    pub(super) fn pop_front(&mut self) -> Option<Ready> {
        let ready = self.levels.iter_mut().rev().find_map(VecDeque::pop_front)?;
        self.len -= 1;
        Some(ready)
    }

    /// Puts a requeued message back at its place (by arrival) in its level.
    pub(super) fn insert_in_order(&mut self, ready: Ready) {
        let index = self.level(ready.priority);
        let level = &mut self.levels[index];
        let at = level.partition_point(|x| x.id < ready.id);
        level.insert(at, ready);
        self.len += 1;
    }

    /// Every ready message, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Ready> {
        self.levels.iter().flatten()
    }

    /// Every ready message, mutably, in no particular order.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Ready> {
        self.levels.iter_mut().flatten()
    }

    pub(super) fn clear(&mut self) {
        self.levels.iter_mut().for_each(VecDeque::clear);
        self.len = 0;
    }

    /// Gives back the room a burst left behind: each level keeps at most
    /// `keep` spare slots beyond its messages. For idle moments only (a
    /// queue that empties and refills on every publish must not reallocate
    /// each time).
    pub(super) fn shrink(&mut self, keep: usize) {
        for level in &mut self.levels {
            if level.capacity() > level.len() + keep {
                level.shrink_to(level.len() + keep);
            }
        }
    }

    fn level(&self, priority: u8) -> usize {
        usize::from(priority).min(self.levels.len() - 1)
    }
}

impl super::Queue {
    /// Gives back the room a burst left in the queue's tables (a drained
    /// queue of millions would otherwise keep tens of bytes per message it
    /// once held). Called by the shard when idle, never per operation.
    pub fn shrink_idle(&mut self) {
        let keep = IDLE_SPARE_SLOTS_MAX;
        self.ready.shrink(keep);
        self.unacked.shrink(keep);
        shrink_vec(&mut self.consumers, keep);
        shrink_vec(&mut self.dead, keep);
        shrink_vec(&mut self.credit_requests, keep);
        shrink_vec(&mut self.grant_returns, keep);
    }
}

/// Shrinks `v` to its length plus `keep` spare slots if it has more.
pub(crate) fn shrink_vec<T>(v: &mut Vec<T>, keep: usize) {
    if v.capacity() > v.len() + keep {
        v.shrink_to(v.len() + keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::field::ShortStr;
    use crate::message::Body;

    fn ready(id: u64, priority: u8) -> Ready {
        Ready {
            id: MsgId(id),
            message: Message::new(crate::message::MessageParts {
                exchange: ShortStr::default(),
                routing_key: ShortStr::default(),
                header: bytes::Bytes::new(),
                body: Body::One(bytes::Bytes::new()),
            }),
            redelivered: false,
            delivery_count: 0,
            expires_at_ms: u64::MAX,
            priority,
            loc: crate::storage::NO_LOC,
        }
    }

    fn order(list: &mut ReadyList) -> Vec<u64> {
        std::iter::from_fn(|| list.pop_front().map(|r| r.id.0)).collect()
    }

    #[test]
    fn higher_priorities_first_then_arrival_order() {
        let mut list = ReadyList::new(5);
        for (id, p) in [(0, 1), (1, 5), (2, 9), (3, 0), (4, 5)] {
            list.push_back(ready(id, p));
        }
        assert_eq!(list.len(), 5);
        assert_eq!(list.front().map(|r| r.id.0), Some(1), "9 is capped to 5, behind the first 5");
        assert_eq!(order(&mut list), [1, 2, 4, 0, 3]);
        assert!(list.is_empty());
    }

    #[test]
    fn requeued_messages_go_back_to_their_place_in_their_level() {
        let mut list = ReadyList::new(0);
        for id in [1, 3, 4] {
            list.push_back(ready(id, 7));
        }
        list.insert_in_order(ready(2, 7));
        list.insert_in_order(ready(0, 0));
        assert_eq!(order(&mut list), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn shrink_gives_back_the_room_of_a_burst_and_keeps_the_messages() {
        let mut list = ReadyList::new(0);
        for id in 0..100_000 {
            list.push_back(ready(id, 0));
        }
        for _ in 0..99_990 {
            list.pop_front();
        }
        assert!(list.levels[0].capacity() >= 100_000);
        list.shrink(64);
        assert!(list.levels[0].capacity() <= 10 + 64 * 2, "capacity {}", list.levels[0].capacity());
        assert_eq!(order(&mut list), (99_990..100_000).collect::<Vec<u64>>());
        // A list with no more spare room than allowed is left alone.
        list.push_back(ready(1, 0));
        let before = list.levels[0].capacity();
        list.shrink(before);
        assert_eq!(list.levels[0].capacity(), before);
    }
}
