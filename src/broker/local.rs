//! What a shard sends itself: envelopes, and deliveries of its queues to
//! its own channels, handled by the event loop right after the frame that
//! produced them. Deliveries wait unwrapped in a deque of their own, a
//! count of them in the list in their place, so they keep their order with
//! the envelopes without being moved into one.

use std::collections::VecDeque;

use crate::envelope::Envelope;
use crate::ids::ShardId;
use crate::queue::Delivery;

use super::ShardCtx;

/// What a shard sent itself (see [`ShardCtx::pop_local`]).
#[derive(Debug)]
pub enum Local {
    /// An envelope, as another shard would have sent it.
    Envelope(Envelope),
    /// The next this many deliveries of local queues to local channels
    /// ([`ShardCtx::pop_local_delivery`]).
    Deliveries(u32),
}

impl ShardCtx {
    /// Sends an envelope to a shard (this one included).
    pub fn send(&mut self, target: ShardId, envelope: Envelope) {
        if target == self.shard {
            self.local.push_back(Local::Envelope(envelope));
        } else {
            self.mesh.stage(target, envelope);
        }
    }

    /// Hands the deliveries decided by local queues to their channels.
    pub fn route_deliveries(&mut self) {
        if self.deliveries.is_empty() {
            return;
        }
        let me = self.shard;
        let all_here = self.local_deliveries.is_empty()
            && self.deliveries.iter().all(|d| d.consumer.channel.conn.shard == me);
        if let Some(count) = all_here.then(|| u32::try_from(self.deliveries.len()).ok()).flatten() {
            // All for this shard, none waiting before them: the batch
            // becomes the deque as it is (no delivery moved), and the
            // empty deque's buffer the next batch's.
            let empty = Vec::from(std::mem::take(&mut self.local_deliveries));
            self.local_deliveries = VecDeque::from(std::mem::replace(&mut self.deliveries, empty));
            self.local.push_back(Local::Deliveries(count));
            return;
        }
        let mut deliveries = std::mem::take(&mut self.deliveries);
        for delivery in deliveries.drain(..) {
            let target = delivery.consumer.channel.conn.shard;
            if target != me {
                self.mesh.stage(target, Envelope::Deliver(delivery));
                continue;
            }
            // Not wrapped in an envelope: moving a delivery into one and the
            // envelope into the queue cost two copies of it per message.
            self.local_deliveries.push_back(delivery);
            match self.local.back_mut() {
                Some(Local::Deliveries(count)) if *count < u32::MAX => *count += 1,
                _ => self.local.push_back(Local::Deliveries(1)),
            }
        }
        // Keep the allocation for the next batch.
        self.deliveries = deliveries;
    }

    /// What this shard sent itself next, handled after the current frame: an
    /// envelope, or a count of deliveries to take with
    /// [`ShardCtx::pop_local_delivery`] before the next call.
    #[inline]
    pub fn pop_local(&mut self) -> Option<Local> {
        self.local.pop_front()
    }

    /// The next delivery of a local queue to a local channel.
    #[inline]
    pub fn pop_local_delivery(&mut self) -> Option<Delivery> {
        self.local_deliveries.pop_front()
    }

    /// For the sans-IO tests: what [`ShardCtx::pop_local`] yields, a
    /// delivery at a time as the envelope another shard would send.
    #[cfg(test)]
    pub(crate) fn pop_local_envelope(&mut self) -> Option<Envelope> {
        match self.local.pop_front()? {
            Local::Envelope(envelope) => Some(envelope),
            Local::Deliveries(count) => {
                if count > 1 {
                    self.local.push_front(Local::Deliveries(count - 1));
                }
                self.local_deliveries.pop_front().map(Envelope::Deliver)
            }
        }
    }
}
