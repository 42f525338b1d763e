//! A new exchange from its declare: the checks of the arguments its type
//! and features read, and what is built from them once (the binding table
//! of its type, its deduplication settings). A client's declare, a
//! definitions import and the replay of the definitions log all build
//! exchanges here, so a stored exchange passes the checks a client's does.

use super::table::BindingTable;
use super::topology::{Exchange, ExchangeId, ExchangeSpec};
use crate::queue::dedup::{self, DedupSettings};

impl Exchange {
    /// The exchange `spec` declares in `vhost`, with a fresh table; the
    /// error is the 406 text for arguments refused (consistent hash:
    /// `hash-header`/`hash-property`; deduplication: `x-cache-size` and the
    /// others, rendered like RabbitMQ's argument errors).
    pub fn declared(id: ExchangeId, vhost: &str, spec: &ExchangeSpec) -> Result<Exchange, String> {
        // A delayed exchange's table is that of its `x-delayed-type`.
        let table_kind = super::delayed::checked_table_kind(spec.kind, &spec.arguments)?;
        let bindings = BindingTable::for_exchange(table_kind, &spec.arguments)?;
        dedup::check_arguments(&spec.arguments).map_err(|(key, reason)| {
            format!("invalid arg '{key}' for exchange '{}' in vhost '{vhost}': {reason}", spec.name)
        })?;
        Ok(Exchange {
            id,
            // Detached: the name and arguments outlive the frame they came in.
            name: spec.name.detached(),
            kind: spec.kind,
            durable: spec.durable,
            auto_delete: spec.auto_delete,
            internal: spec.internal,
            dedup: DedupSettings::from_arguments(&spec.arguments),
            arguments: spec.arguments.detached(),
            bindings,
        })
    }
}
