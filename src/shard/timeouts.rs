//! The shard's part of the consumer timeout: at housekeeping, each deadline
//! that came due goes to its channel's connection, which closes the channel
//! if its oldest delivery is overdue (see `crate::broker::consumer_timeouts`).

use super::Shard;

impl Shard {
    /// Hands the due consumer-timeout deadlines to their connections; sweeps
    /// stale ones once they pass their bound.
    pub(super) fn expire_consumer_timeouts(&mut self) {
        let mut due = Vec::new();
        self.ctx.take_due_consumer_timeouts(&mut due);
        for deadline in due {
            let Some(index) = self.slot_of(deadline.channel.conn) else {
                continue;
            };
            self.conns[index].conn.handle_consumer_timeout(&deadline, &mut self.ctx);
            self.mark_dirty(index);
        }
        if self.ctx.consumer_timeouts_need_sweep() {
            let conns = &self.conns;
            self.ctx.sweep_consumer_timeouts(|deadline| {
                let id = deadline.channel.conn;
                conns
                    .get(id.slot as usize)
                    .is_some_and(|slot| slot.generation == id.generation && slot.conn.has_armed(deadline))
            });
        }
    }
}
