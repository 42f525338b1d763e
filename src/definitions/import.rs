//! Importing a RabbitMQ definitions document into the registry: every entity
//! through the same registry calls a client or the control plane uses, so
//! each is checked and recorded in the definitions log like those. As with
//! RabbitMQ's import (and `POST /api/definitions`), what exists is kept or
//! updated, and an entity that cannot be imported is reported and skipped.

use serde_json::Value;

use crate::access::{
    AccessChange, HashAlgorithm, PasswordHash, Permission, TopicPermission, User, UserLimits,
};
use crate::access::{VhostLimits, VhostSettings};
use crate::amqp::field::{FieldValue, LongStr, ShortStr};
use crate::ids::{ExchangeKind, QueueRef, ShardId};
use crate::queue::arguments::{self, DeclareFlags};
use crate::queue::{QueueMeta, QueueStats};
use crate::routing::parameters::{Parameter, ParameterChange, Policy};
use crate::routing::topology::{Destination, ExchangeSpec, Registry};

use super::fields::table_from_json;

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Entities applied.
    pub applied: usize,
    /// Entities skipped, each with why (also logged as a warning).
    pub skipped: Vec<String>,
}

impl Imported {
    fn note(&mut self, what: &str, name: &str, result: Result<(), String>) {
        match result {
            Ok(()) => self.applied += 1,
            Err(why) => {
                tracing::warn!(what, name, why = %why, "definitions import: skipped");
                self.skipped.push(format!("{what} '{name}': {why}"));
            }
        }
    }
}

fn list<'d>(doc: &'d Value, key: &str) -> &'d [Value] {
    doc.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn text<'d>(item: &'d Value, key: &str) -> &'d str {
    item.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Imports `doc` into `registry`; queues are placed on shards round-robin
/// over `shard_count`.
pub fn import(registry: &Registry, doc: &Value, shard_count: usize) -> Imported {
    let mut done = Imported::default();
    let version = doc.get("rabbitmq_version").or_else(|| doc.get("rabbit_version")).and_then(Value::as_str);
    for item in list(doc, "users") {
        done.note("user", text(item, "name"), import_user(registry, item, version.unwrap_or("")));
    }
    for item in list(doc, "vhosts") {
        done.note("vhost", text(item, "name"), import_vhost(registry, item));
    }
    for item in list(doc, "permissions") {
        done.note("permission", text(item, "user"), import_permission(registry, item));
    }
    for item in list(doc, "topic_permissions") {
        done.note("topic permission", text(item, "user"), import_topic_permission(registry, item));
    }
    for item in list(doc, "parameters") {
        done.note("parameter", text(item, "name"), import_parameter(registry, item));
    }
    for item in list(doc, "global_parameters") {
        let change = ParameterChange::SetGlobal {
            name: text(item, "name").to_owned(),
            value: item.get("value").cloned().unwrap_or(Value::Null),
        };
        done.note(
            "global parameter",
            text(item, "name"),
            registry.change_parameters(&change).map_err(|e| e.to_string()),
        );
    }
    for item in list(doc, "policies") {
        let result =
            serde_json::from_value::<Policy>(item.clone()).map_err(|e| e.to_string()).and_then(|p| {
                registry.change_parameters(&ParameterChange::SetPolicy(p)).map_err(|e| e.to_string())
            });
        done.note("policy", text(item, "name"), result);
    }
    for item in list(doc, "exchanges") {
        done.note("exchange", text(item, "name"), import_exchange(registry, item));
    }
    for (i, item) in list(doc, "queues").iter().enumerate() {
        let shard = ShardId((i % shard_count.max(1)) as u16);
        done.note("queue", text(item, "name"), import_queue(registry, item, shard));
    }
    for item in list(doc, "bindings") {
        done.note("binding", text(item, "destination"), import_binding(registry, item));
    }
    done
}

/// Tags as a list or as one comma-separated string (older exports).
fn tags(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Some(Value::String(s)) => {
            s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect()
        }
        _ => Vec::new(),
    }
}

/// A limit by name from an object or from RabbitMQ 3.10's list of pairs;
/// negative (RabbitMQ's "no limit") is none.
fn limit(limits: Option<&Value>, name: &str) -> Option<u32> {
    let value = match limits? {
        Value::Object(map) => map.get(name)?,
        Value::Array(pairs) => {
            pairs.iter().find(|p| p.get(0).and_then(Value::as_str) == Some(name))?.get(1)?
        }
        _ => return None,
    };
    value.as_i64().and_then(|n| u32::try_from(n).ok())
}

/// The algorithm of a hash exported without `hashing_algorithm`: MD5 from
/// RabbitMQ before 3.6.0, else the default (SHA-256), as RabbitMQ decides.
fn default_algorithm(version: &str) -> HashAlgorithm {
    let md5_era = ["3.0.", "3.1.", "3.2.", "3.3.", "3.4.", "3.5."];
    if md5_era.iter().any(|prefix| version.starts_with(prefix)) {
        HashAlgorithm::Md5
    } else {
        HashAlgorithm::Sha256
    }
}

fn import_user(registry: &Registry, item: &Value, version: &str) -> Result<(), String> {
    let name = text(item, "name");
    if name.is_empty() {
        return Err("a user needs a name".into());
    }
    let hash = text(item, "password_hash");
    let password = if !hash.is_empty() {
        let algorithm = match item.get("hashing_algorithm").and_then(Value::as_str) {
            Some(name) => name,
            None => default_algorithm(version).name(),
        };
        Some(PasswordHash::parse(hash, algorithm).map_err(|e| e.to_string())?)
    } else {
        item.get("password").and_then(Value::as_str).map(PasswordHash::new_sha256)
    };
    let limits = item.get("limits");
    let user = User {
        name: name.to_owned(),
        password,
        tags: tags(item.get("tags")),
        limits: UserLimits {
            max_connections: limit(limits, "max-connections"),
            max_channels: limit(limits, "max-channels"),
        },
    };
    registry.change_access(&AccessChange::PutUser(user)).map_err(|e| e.to_string())
}

fn import_vhost(registry: &Registry, item: &Value) -> Result<(), String> {
    let name = text(item, "name");
    let metadata = item.get("metadata").unwrap_or(item);
    let limits = item.get("limits");
    let settings = VhostSettings {
        limits: VhostLimits {
            max_connections: limit(limits, "max-connections"),
            max_queues: limit(limits, "max-queues"),
        },
        description: text(metadata, "description").to_owned(),
        tags: tags(metadata.get("tags")),
        default_queue_type: metadata.get("default_queue_type").and_then(Value::as_str).map(str::to_owned),
    };
    registry.create_vhost(name, settings).map_err(|e| e.to_string())
}

fn import_permission(registry: &Registry, item: &Value) -> Result<(), String> {
    let change = AccessChange::SetPermission {
        user: text(item, "user").to_owned(),
        vhost: text(item, "vhost").to_owned(),
        permission: Permission {
            configure: text(item, "configure").to_owned(),
            write: text(item, "write").to_owned(),
            read: text(item, "read").to_owned(),
        },
    };
    registry.change_access(&change).map_err(|e| e.to_string())
}

fn import_topic_permission(registry: &Registry, item: &Value) -> Result<(), String> {
    let change = AccessChange::SetTopicPermission {
        user: text(item, "user").to_owned(),
        vhost: text(item, "vhost").to_owned(),
        exchange: text(item, "exchange").to_owned(),
        permission: TopicPermission {
            write: text(item, "write").to_owned(),
            read: text(item, "read").to_owned(),
        },
    };
    registry.change_access(&change).map_err(|e| e.to_string())
}

/// A parameter; `vhost-limits` sets the vhost's limits (RabbitMQ keeps
/// vhost limits as that parameter).
fn import_parameter(registry: &Registry, item: &Value) -> Result<(), String> {
    let parameter: Parameter = serde_json::from_value(item.clone()).map_err(|e| e.to_string())?;
    if parameter.component != "vhost-limits" {
        return registry
            .change_parameters(&ParameterChange::SetParameter(parameter))
            .map_err(|e| e.to_string());
    }
    let topology = registry.load();
    let mut settings = topology
        .access
        .vhosts
        .get(&parameter.vhost)
        .cloned()
        .ok_or(format!("no vhost '{}'", parameter.vhost))?;
    settings.limits = VhostLimits {
        max_connections: limit(Some(&parameter.value), "max-connections"),
        max_queues: limit(Some(&parameter.value), "max-queues"),
    };
    let change = AccessChange::PutVhostSettings(parameter.vhost, settings);
    registry.change_access(&change).map_err(|e| e.to_string())
}

fn short(name: &str) -> Result<ShortStr, String> {
    ShortStr::from_bytes(bytes::Bytes::copy_from_slice(name.as_bytes()))
        .map_err(|_| format!("name longer than 255 bytes: '{name}'"))
}

fn flag(item: &Value, key: &str, default: bool) -> bool {
    item.get(key).and_then(Value::as_bool).unwrap_or(default)
}

fn import_exchange(registry: &Registry, item: &Value) -> Result<(), String> {
    let name = text(item, "name");
    if crate::routing::durable::is_standard_exchange(name.as_bytes()) {
        return Err("a standard exchange (every vhost has it)".into());
    }
    let kind_name = text(item, "type");
    let kind =
        ExchangeKind::parse(kind_name.as_bytes()).ok_or(format!("unknown exchange type '{kind_name}'"))?;
    let arguments = table_from_json(item.get("arguments").unwrap_or(&Value::Null))?;
    arguments::check_alternate_exchange(&arguments)
        .map_err(|t| format!("invalid type '{t}' for arg 'alternate-exchange'"))?;
    crate::routing::delayed::check_declare(kind, &arguments).map_err(|e| e.text())?;
    let spec = ExchangeSpec {
        name: short(name)?,
        kind,
        durable: flag(item, "durable", true),
        auto_delete: flag(item, "auto_delete", false),
        internal: flag(item, "internal", false),
        arguments,
    };
    registry.declare_exchange(text(item, "vhost"), spec).map_err(|e| e.to_string())
}

fn import_queue(registry: &Registry, item: &Value, shard: ShardId) -> Result<(), String> {
    let (name, vhost) = (text(item, "name"), text(item, "vhost"));
    let mut arguments = table_from_json(item.get("arguments").unwrap_or(&Value::Null))?;
    let kind = text(item, "type");
    if !kind.is_empty() && kind != "classic" && arguments.get(b"x-queue-type").is_none() {
        arguments
            .insert(ShortStr::from_static("x-queue-type"), FieldValue::LongStr(LongStr::copy_from_str(kind)));
    }
    let flags = DeclareFlags {
        durable: flag(item, "durable", true),
        exclusive: false,
        auto_delete: flag(item, "auto_delete", false),
    };
    arguments::check_queue_declare(&arguments, flags).map_err(|e| e.text(&name, vhost))?;
    let topology = registry.load();
    let v = topology.vhosts.get(vhost).ok_or(format!("no vhost '{vhost}'"))?;
    let name = short(name)?;
    if v.queues.contains_key(&name) {
        return Ok(());
    }
    let meta = QueueMeta {
        queue: QueueRef { id: registry.allocate_queue_id(), shard },
        name,
        durable: flags.durable,
        exclusive_owner: None,
        auto_delete: flags.auto_delete,
        arguments,
        stats: QueueStats::default(),
    };
    match registry.declare_queue(vhost, meta) {
        Ok(_) | Err(crate::routing::topology::DeclareQueueError::Taken(_)) => Ok(()),
        Err(crate::routing::topology::DeclareQueueError::Refused(e)) => Err(e.to_string()),
    }
}

fn import_binding(registry: &Registry, item: &Value) -> Result<(), String> {
    let vhost = text(item, "vhost");
    let topology = registry.load();
    let v = topology.vhosts.get(vhost).ok_or(format!("no vhost '{vhost}'"))?;
    let destination = short(text(item, "destination"))?;
    let dest = match text(item, "destination_type") {
        "queue" => v.queues.get(&destination).map(|q| Destination::Queue(q.queue)),
        "exchange" => v.exchanges.get(&destination).map(|x| Destination::Exchange(x.id)),
        other => return Err(format!("unknown destination_type '{other}'")),
    }
    .ok_or(format!("no destination '{destination}' in vhost '{vhost}'"))?;
    let arguments = table_from_json(item.get("arguments").unwrap_or(&Value::Null))?;
    let source = short(text(item, "source"))?;
    let key = short(text(item, "routing_key"))?;
    registry.bind(vhost, &source, dest, &key, &arguments).map_err(|e| e.to_string())
}

#[cfg(test)]
#[path = "import_tests.rs"]
mod tests;
