//! A queue's consumers and dispatch: attaching and detaching consumers,
//! their credit and channel-wide grants, and the loop that hands ready
//! messages to the next consumer with credit.

use super::quorum::keeps_unacked;
use super::{
    AfterRemove, ConsumerKey, ConsumerSpec, ConsumerState, Delivery, Queue, QueueRefusal, Ready, Unacked,
    NEVER,
};

impl Queue {
    /// Attaches a consumer.
    pub fn add_consumer(&mut self, spec: ConsumerSpec, out: &mut Vec<Delivery>) -> Result<(), QueueRefusal> {
        if !self.consumers.is_empty() && (spec.exclusive || self.consumers.iter().any(|c| c.spec.exclusive)) {
            return Err(QueueRefusal::ExclusiveUse);
        }
        // Keep consumers ordered by priority, highest first; equal priorities keep
        // arrival order so round-robin among them is fair.
        // With a single active consumer, arrival order alone decides who is next.
        let at = if self.single_active {
            self.consumers.len()
        } else {
            self.consumers
                .iter()
                .position(|c| c.spec.priority < spec.priority)
                .unwrap_or(self.consumers.len())
        };
        self.consumers.insert(
            at,
            ConsumerState { spec, unacked: 0, in_flight: 0, in_flight_bytes: 0, grants: 0, requested: false },
        );
        self.had_consumer = true;
        self.dispatch(out);
        Ok(())
    }

    /// Detaches a consumer. Its unacked deliveries stay unacked: the channel may
    /// still ack them, and requeues them when it closes.
    pub fn remove_consumer(&mut self, key: ConsumerKey) -> AfterRemove {
        if let Some(stream) = self.stream.as_deref_mut() {
            stream.remove(key);
            return AfterRemove::Keep;
        }
        if let Some(i) = self.consumers.iter().position(|c| c.spec.key == key) {
            self.consumers.remove(i);
            if self.cursor > i {
                self.cursor -= 1;
            }
        }
        if self.meta.auto_delete && self.had_consumer && self.consumers.is_empty() {
            AfterRemove::AutoDelete
        } else {
            AfterRemove::Keep
        }
    }

    /// The consumers, for cancel notifications when the queue is deleted.
    pub fn consumers(&self) -> impl Iterator<Item = &ConsumerSpec> {
        let streaming = self.stream.as_deref().into_iter().flat_map(super::stream::StreamState::specs);
        self.consumers.iter().map(|c| &c.spec).chain(streaming)
    }

    /// The consumer's connection wrote `count` deliveries to its socket.
    pub fn credit(&mut self, consumer: ConsumerKey, count: u32, bytes: u64, out: &mut Vec<Delivery>) {
        if let Some(c) = self.consumers.iter_mut().find(|c| c.spec.key == consumer) {
            c.in_flight = c.in_flight.saturating_sub(count);
            c.in_flight_bytes = c.in_flight_bytes.saturating_sub(bytes);
        }
        self.dispatch(out);
    }

    /// The consumer's channel allows `count` more deliveries (channel-wide prefetch).
    pub fn grant(&mut self, consumer: ConsumerKey, count: u32, out: &mut Vec<Delivery>) {
        if let Some(c) = self.consumers.iter_mut().find(|c| c.spec.key == consumer) {
            c.grants += count;
            c.requested = false;
        }
        self.dispatch(out);
    }

    /// Credit requests or grant returns are waiting to be sent.
    pub fn has_grant_work(&self) -> bool {
        !self.credit_requests.is_empty() || !self.grant_returns.is_empty()
    }

    /// Consumers whose channel must be asked for a grant.
    pub fn take_credit_requests(&mut self) -> Vec<ConsumerKey> {
        std::mem::take(&mut self.credit_requests)
    }

    /// Grants handed back since the last call.
    pub fn take_grant_returns(&mut self) -> Vec<(ConsumerKey, u32)> {
        std::mem::take(&mut self.grant_returns)
    }

    pub(super) fn dispatch(&mut self, out: &mut Vec<Delivery>) {
        while !self.ready.is_empty() {
            if self.ready.front().is_some_and(|r| r.expires_at_ms != NEVER) {
                // Due *now* is still deliverable: x-message-ttl 0 means
                // "only if a consumer can take it at once".
                self.drop_expired_head_before(self.clock_ms);
                if self.ready.is_empty() {
                    break;
                }
            }
            let Some(index) = self.next_consumer() else {
                break;
            };
            let Some(ready) = self.pop_ready() else {
                break;
            };
            self.deliver_ready(index, ready, out);
        }
        if self.ready.is_empty() {
            self.return_unused_grants();
        } else {
            self.ask_for_grants();
        }
    }

    /// Hands `ready` (out of the ready list, or never in it) to consumer
    /// `index`, which has credit.
    #[inline(always)]
    pub(super) fn deliver_ready(&mut self, index: usize, ready: Ready, out: &mut Vec<Delivery>) {
        self.dispatched += 1;
        let consumer = &mut self.consumers[index];
        consumer.in_flight += 1;
        consumer.in_flight_bytes += ready.message.body_len();
        if consumer.spec.channel_limited {
            consumer.grants -= 1;
        }
        let key = consumer.spec.key;
        let no_ack = consumer.spec.no_ack;
        self.counters.count_deliver(no_ack, ready.redelivered);
        self.journal.deliver(ready.id.0, ready.loc, no_ack);
        let mut message_kept = false;
        let message = if no_ack {
            ready.message
        } else {
            message_kept = keeps_unacked(self.quorum, ready.loc);
            consumer.unacked += 1;
            let body_bytes = ready.message.body_len();
            self.unacked_bytes += body_bytes;
            self.unacked.insert(
                ready.id,
                Unacked {
                    // Most often `None`: a clone here and its drop at the
                    // ack were two atomic operations per message.
                    message: message_kept.then(|| ready.message.clone()),
                    body_bytes,
                    consumer: key,
                    expires_at_ms: ready.expires_at_ms,
                    priority: ready.priority,
                    loc: ready.loc,
                    delivery_count: ready.delivery_count,
                },
            );
            ready.message
        };
        let message = self.as_delivered(message, ready.delivery_count, false);
        out.push(Delivery {
            queue: self.meta.queue,
            msg_id: ready.id,
            consumer: key,
            redelivered: ready.redelivered,
            no_ack,
            message_kept,
            message,
        });
    }

    /// Nothing is ready: grants held for channel-limited consumers go back to
    /// their channels, which may give them to queues that have messages.
    pub(super) fn return_unused_grants(&mut self) {
        for c in &mut self.consumers {
            if c.grants > 0 {
                self.grant_returns.push((c.spec.key, c.grants));
                c.grants = 0;
            }
        }
    }

    /// Messages wait and channel-limited consumers have no grant: ask their
    /// channels (once per grant).
    #[cold]
    pub(super) fn ask_for_grants(&mut self) {
        // With a single active consumer only the active one can use a grant.
        let asking = if self.single_active { 1 } else { self.consumers.len() };
        for c in self.consumers.iter_mut().take(asking) {
            if c.spec.channel_limited && c.grants == 0 && !c.requested {
                c.requested = true;
                self.credit_requests.push(c.spec.key);
            }
        }
    }

    /// The next consumer with credit: round-robin among the highest priority
    /// that has any.
    pub(super) fn next_consumer(&mut self) -> Option<usize> {
        let n = self.consumers.len();
        if n == 0 {
            return None;
        }
        if n == 1 || self.single_active {
            // x-single-active-consumer: only the first consumer attached (the
            // next one takes over when it goes) gets deliveries.
            return self.consumers[0].has_credit().then_some(0);
        }
        let mut best: Option<usize> = None;
        for step in 0..n {
            let i = (self.cursor + step) % n;
            let c = &self.consumers[i];
            if !c.has_credit() {
                continue;
            }
            match best {
                Some(b) if self.consumers[b].spec.priority >= c.spec.priority => {}
                _ => best = Some(i),
            }
        }
        if let Some(i) = best {
            self.cursor = (i + 1) % n;
        }
        best
    }
}
