//! Exchange-level deduplication on this shard: one [`Deduper`] per exchange
//! declared with `x-message-deduplication: true`, made at the first publish
//! to it through this shard. Shards do not share them (that would take a
//! lock or a hop per publish), so a duplicate is caught when it comes
//! through a connection of the same shard as the first copy; queue-level
//! deduplication (`queue::dedup`) is exact.

use crate::message::Message;
use crate::queue::dedup::Deduper;
use crate::routing::topology::Exchange;

use super::ShardCtx;

impl ShardCtx {
    /// True if `message` repeats an identifier `exchange` has seen through
    /// this shard (it is then not routed); otherwise it is remembered.
    /// False for an exchange without deduplication.
    pub fn exchange_duplicate(&mut self, exchange: &Exchange, message: &Message) -> bool {
        let Some(settings) = &exchange.dedup else {
            return false;
        };
        let now_ms = self.clock;
        if !self.exchange_dedup.contains_key(&exchange.id) {
            self.forget_deleted_exchanges();
        }
        let deduper =
            self.exchange_dedup.entry(exchange.id).or_insert_with(|| Deduper::new(settings.clone()));
        deduper.is_duplicate(message, now_ms)
    }

    /// Drops the caches of exchanges the topology no longer has (ids are
    /// never reused): done when a cache is made, so there are never more
    /// caches than exchanges with deduplication plus that new one.
    #[cold]
    fn forget_deleted_exchanges(&mut self) {
        let topology = self.topology();
        let live = |id| topology.vhosts.values().any(|v| v.exchange_names.contains_key(id));
        let gone: Vec<_> = self.exchange_dedup.keys().filter(|id| !live(id)).copied().collect();
        for id in gone {
            self.exchange_dedup.remove(&id);
        }
    }
}
