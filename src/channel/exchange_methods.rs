//! Handlers of the exchange class: declare, delete, bind and unbind.

use super::ConnShared;
use crate::access::{Grants, Perm, Resource};
use crate::amqp::field::FieldValue;
use crate::amqp::field::ShortStr;
use crate::amqp::spec::{self, Method};
use crate::broker::ShardCtx;
use crate::channel::methods::{denied, not_found_vhost, reserved_name, topology_error};
use crate::channel::{Channel, ChannelError, Outcome};
use crate::ids::ExchangeKind;
use crate::queue::arguments;
use crate::routing::delayed::{self, DelayedTypeError};
use crate::routing::topology::{self, Destination, ExchangeSpec, TopologyError};

impl Channel {
    pub(super) fn handle_exchange_declare(
        &mut self,
        m: spec::ExchangeDeclare,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        let no_wait = m.no_wait;
        if m.passive {
            check_exchange_exists(&m.exchange, shared, ctx)?;
        } else {
            declare_exchange(m, &self.grants, shared, ctx)?;
        }
        if !no_wait {
            shared.out.method(self.me.channel, &Method::ExchangeDeclareOk(Default::default()));
        }
        Ok(Outcome::Continue)
    }

    pub(super) fn handle_exchange_delete(
        &mut self,
        m: spec::ExchangeDelete,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        if m.exchange.is_empty() {
            return Err(default_exchange_refused());
        }
        if m.exchange.as_bytes().starts_with(b"amq.") {
            return Err(ChannelError::new(
                spec::reply_code::ACCESS_REFUSED,
                format!(
                    "deletion of system exchange '{}' in vhost '{}' not allowed",
                    m.exchange, shared.vhost
                ),
            ));
        }
        self.allow_exchange(Perm::Configure, &m.exchange)?;
        match ctx.registry().delete_exchange(&shared.vhost, &m.exchange, m.if_unused) {
            Ok(()) | Err(TopologyError::NotFound(_)) => {}
            Err(e) => return Err(topology_error(e)),
        }
        ctx.refresh_topology();
        if !m.no_wait {
            shared.out.method(self.me.channel, &Method::ExchangeDeleteOk(Default::default()));
        }
        Ok(Outcome::Continue)
    }

    pub(super) fn handle_exchange_bind(
        &mut self,
        m: spec::ExchangeBind,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        self.check_exchange_binding(&m.destination, &m.source, &m.routing_key, shared, ctx)?;
        let dest = exchange_destination(&m.destination, shared, ctx)?;
        ctx.registry()
            .bind(&shared.vhost, &m.source, dest, &m.routing_key, &m.arguments)
            .map_err(|e| missing_source(e, &m.source, shared))?;
        ctx.refresh_topology();
        if !m.no_wait {
            shared.out.method(self.me.channel, &Method::ExchangeBindOk(Default::default()));
        }
        Ok(Outcome::Continue)
    }

    pub(super) fn handle_exchange_unbind(
        &mut self,
        m: spec::ExchangeUnbind,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        self.check_exchange_binding(&m.destination, &m.source, &m.routing_key, shared, ctx)?;
        let dest = exchange_destination(&m.destination, shared, ctx)?;
        ctx.registry()
            .unbind(&shared.vhost, &m.source, dest, &m.routing_key, &m.arguments)
            .map_err(|e| missing_source(e, &m.source, shared))?;
        ctx.refresh_topology();
        if !m.no_wait {
            shared.out.method(self.me.channel, &Method::ExchangeUnbindOk(Default::default()));
        }
        Ok(Outcome::Continue)
    }
}

impl Channel {
    /// exchange.bind/unbind's checks, in RabbitMQ's order: write on the
    /// destination, the default exchange refused, read on the source, and
    /// on a topic source read on the binding key.
    fn check_exchange_binding(
        &self,
        destination: &ShortStr,
        source: &ShortStr,
        key: &ShortStr,
        shared: &ConnShared,
        ctx: &ShardCtx,
    ) -> Result<(), ChannelError> {
        self.allow_exchange(Perm::Write, destination)?;
        if destination.is_empty() || source.is_empty() {
            return Err(default_exchange_refused());
        }
        self.allow_exchange(Perm::Read, source)?;
        self.allow_topic(Perm::Read, source, key, shared, ctx)
    }
}

/// exchange.declare passive=true: the exchange must exist.
fn check_exchange_exists(name: &ShortStr, shared: &ConnShared, ctx: &ShardCtx) -> Result<(), ChannelError> {
    if name.is_empty() {
        return Err(default_exchange_refused());
    }
    let vhost = ctx.vhost(&shared.vhost).ok_or_else(|| not_found_vhost(shared))?;
    if !vhost.exchanges.contains_key(name.as_bytes()) {
        return Err(topology_error(topology::not_found_exchange(&shared.vhost, name)));
    }
    Ok(())
}

/// exchange.declare passive=false: creates the exchange, or checks that the
/// existing one is equivalent.
fn declare_exchange(
    m: spec::ExchangeDeclare,
    grants: &Grants,
    shared: &ConnShared,
    ctx: &mut ShardCtx,
) -> Result<(), ChannelError> {
    let Some(kind) = ExchangeKind::parse(m.kind.as_bytes()) else {
        return Err(ChannelError::new(
            spec::reply_code::COMMAND_INVALID,
            format!("unknown exchange type '{}'", m.kind),
        ));
    };
    if m.exchange.is_empty() {
        return Err(default_exchange_refused());
    }
    grants.check(Perm::Configure, Resource::Exchange, m.exchange.as_bytes()).map_err(denied)?;
    let exists = ctx.vhost(&shared.vhost).is_some_and(|v| v.exchanges.contains_key(m.exchange.as_bytes()));
    if !exists && m.exchange.as_bytes().starts_with(b"amq.") {
        return Err(reserved_name("exchange", &m.exchange));
    }
    if !exists {
        arguments::check_alternate_exchange(&m.arguments).map_err(|type_name| {
            ChannelError::new(
                spec::reply_code::PRECONDITION_FAILED,
                format!(
                    "invalid type '{type_name}' for arg 'alternate-exchange' in exchange '{}' in vhost '{}'",
                    m.exchange, shared.vhost
                ),
            )
        })?;
        if let Some(FieldValue::LongStr(ae)) = m.arguments.get(b"alternate-exchange") {
            // Publishing to the exchange may end in the alternate one.
            grants.check(Perm::Read, Resource::Exchange, m.exchange.as_bytes()).map_err(denied)?;
            grants.check(Perm::Write, Resource::Exchange, ae.as_bytes()).map_err(denied)?;
        }
        // As RabbitMQ, the type's own check runs for a new exchange only (a
        // redeclare's x-delayed-type is not compared either).
        delayed::check_declare(kind, &m.arguments).map_err(|e| {
            let code = match e {
                DelayedTypeError::Unknown(_) => spec::reply_code::COMMAND_INVALID,
                _ => spec::reply_code::PRECONDITION_FAILED,
            };
            ChannelError::new(code, e.text())
        })?;
    }
    let spec = ExchangeSpec {
        name: m.exchange,
        kind,
        durable: m.durable,
        auto_delete: m.auto_delete,
        internal: m.internal,
        arguments: m.arguments,
    };
    ctx.registry().declare_exchange(&shared.vhost, spec).map_err(topology_error)?;
    ctx.refresh_topology();
    Ok(())
}

/// The destination exchange of exchange.bind/unbind.
fn exchange_destination(
    name: &ShortStr,
    shared: &ConnShared,
    ctx: &ShardCtx,
) -> Result<Destination, ChannelError> {
    if name.is_empty() {
        return Err(default_exchange_refused());
    }
    let vhost = ctx.vhost(&shared.vhost).ok_or_else(|| not_found_vhost(shared))?;
    match vhost.exchanges.get(name.as_bytes()) {
        Some(e) => Ok(Destination::Exchange(e.id)),
        None => Err(topology_error(topology::not_found_exchange(&shared.vhost, name))),
    }
}

/// A 404 from binding names the missing exchange the way RabbitMQ does.
pub(super) fn missing_source(e: TopologyError, source: &ShortStr, shared: &ConnShared) -> ChannelError {
    match e {
        TopologyError::NotFound(_) => topology_error(topology::not_found_exchange(&shared.vhost, source)),
        other => topology_error(other),
    }
}

fn default_exchange_refused() -> ChannelError {
    ChannelError::new(
        spec::reply_code::ACCESS_REFUSED,
        "operation not permitted on the default exchange".into(),
    )
}
