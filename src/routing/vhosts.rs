//! Vhosts as the registry makes them: each with RabbitMQ's standard
//! exchanges, and its settings in [`crate::access::Access`].

use std::sync::Arc;

use crate::access::VhostSettings;
use crate::amqp::field::{FieldTable, ShortStr};
use crate::ids::ExchangeKind;

use super::table::BindingTable;
use super::topology::{Exchange, Registry, Vhost};

impl Registry {
    /// Creates a vhost with RabbitMQ's standard exchanges.
    pub fn add_vhost(&self, name: &str) {
        self.mutate(|topo| {
            topo.vhosts.insert(name.to_owned(), Arc::new(self.standard_vhost()));
            Arc::make_mut(&mut topo.access).add_vhost(name, VhostSettings::default());
        });
    }

    /// A vhost holding only RabbitMQ's standard exchanges (durable, always
    /// created, never recorded).
    pub(crate) fn standard_vhost(&self) -> Vhost {
        let mut vhost = Vhost::default();
        let standard: [(&'static str, ExchangeKind, bool); 8] = [
            ("", ExchangeKind::Direct, false),
            ("amq.direct", ExchangeKind::Direct, false),
            ("amq.fanout", ExchangeKind::Fanout, false),
            ("amq.topic", ExchangeKind::Topic, false),
            ("amq.headers", ExchangeKind::Headers, false),
            ("amq.match", ExchangeKind::Headers, false),
            ("amq.rabbitmq.trace", ExchangeKind::Topic, true),
            ("amq.rabbitmq.log", ExchangeKind::Topic, true),
        ];
        for (exchange_name, kind, internal) in standard {
            let id = self.allocate_exchange_id();
            let exchange = Exchange {
                id,
                name: ShortStr::from_static(exchange_name),
                kind,
                durable: true,
                auto_delete: false,
                internal,
                arguments: FieldTable::default(),
                bindings: BindingTable::new(kind),
                dedup: None,
            };
            vhost.exchange_names.insert(id, exchange.name.clone());
            vhost.exchanges.insert(exchange.name.clone(), Arc::new(exchange));
        }
        vhost
    }
}
