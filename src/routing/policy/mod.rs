//! Policies applied, as RabbitMQ 3.10 applies them (`rabbit_policy`): which
//! policy and operator policy a queue or exchange gets, and the definition
//! they give it together.
//!
//! - **Matching**: `pattern` is searched (not anchored, like Erlang's
//!   `re:run`) in the entity's name within its vhost; `apply-to` is `all`,
//!   `queues` or `exchanges`; a policy with a key the queue's type does not
//!   support (`delivery-limit` on a classic queue, `queue-mode` on a quorum
//!   one: RabbitMQ 3.10's `unsupported_policies`) does not match that queue
//!   at all. Of the matching policies the highest `priority` wins; on a tie
//!   RabbitMQ takes whichever its parameter table lists first, an order of
//!   hashes (seen on 3.10.8: of `a-tie`/`b-tie` `b-tie` wins, of `p1`/`p2`
//!   `p1`, whichever was set first); Lepus takes the name that sorts first.
//! - **Operator policies** (runtime parameters of component
//!   `operator_policy`) match the same way, independently; the two
//!   definitions are merged key by key, and where both set a key (only the
//!   seven numeric keys operator policies may set) the smaller value wins
//!   (`merge_operator_definitions`).
//!
//! Each vhost's policies are compiled (regexes and all) once per change
//! into a [`VhostPolicies`] that the topology snapshot carries
//! ([`super::topology::Vhost::policies`]); shards match their queues against
//! it when it changes, never per message. How a queue's own arguments and
//! the policy combine is `crate::queue::policy`'s.

mod validate;

use std::sync::atomic::{AtomicU64, Ordering};

use regex::bytes::{Regex, RegexBuilder};
use serde_json::{Map, Value};

use crate::amqp::field::ShortStr;
use crate::queue::arguments::QueueType;

use super::parameters::Parameters;
use super::topology::{Topology, Vhost};

pub use validate::{validate_policy, PolicyError};

/// The most memory one compiled policy pattern may use, bytes.
pub const PATTERN_BYTES_MAX: usize = 1 << 20;

/// The runtime-parameter component RabbitMQ stores operator policies under
/// (its definitions export lists them among the `parameters`).
pub const OPERATOR_POLICY_COMPONENT: &str = "operator_policy";

/// A policy or an operator policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// `policies`: any key.
    User,
    /// `operator-policies`: the numeric limits only; stricter values win.
    Operator,
}

/// What a policy is matched against, for the management API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    /// A queue.
    Queue,
    /// An exchange.
    Exchange,
}

/// A queue of a type, or an exchange: what decides which policies apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A queue of this type.
    Queue(QueueType),
    /// An exchange.
    Exchange,
}

/// `apply-to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ApplyTo {
    All,
    Queues,
    Exchanges,
}

impl ApplyTo {
    /// RabbitMQ 3.10's three values (later versions add queue types).
    fn parse(value: &Value) -> Option<ApplyTo> {
        match value.as_str()? {
            "all" => Some(ApplyTo::All),
            "queues" => Some(ApplyTo::Queues),
            "exchanges" => Some(ApplyTo::Exchanges),
            _ => None,
        }
    }
}

/// Compiles a policy pattern (also what validation checks).
fn compile_pattern(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern).size_limit(PATTERN_BYTES_MAX).build().map_err(|e| e.to_string())
}

/// One policy, ready to match.
#[derive(Debug)]
pub struct CompiledPolicy {
    /// Its name.
    pub name: String,
    /// `None`: stored before validation and not compilable here; matches nothing.
    pattern: Option<Regex>,
    apply_to: ApplyTo,
    priority: i64,
    /// Its definition, as given.
    pub definition: Map<String, Value>,
}

impl CompiledPolicy {
    fn new(name: &str, pattern: &str, apply_to: &Value, priority: i64, definition: &Value) -> CompiledPolicy {
        let compiled = compile_pattern(pattern)
            .inspect_err(|e| {
                tracing::warn!(policy = name, pattern, error = %e, "policy pattern does not compile; matches nothing")
            })
            .ok();
        CompiledPolicy {
            name: name.to_owned(),
            pattern: compiled,
            apply_to: ApplyTo::parse(apply_to).unwrap_or(ApplyTo::All),
            priority,
            definition: definition.as_object().cloned().unwrap_or_default(),
        }
    }

    fn matches(&self, name: &[u8], target: Target) -> bool {
        let kind = match (self.apply_to, target) {
            (ApplyTo::All, _)
            | (ApplyTo::Queues, Target::Queue(_))
            | (ApplyTo::Exchanges, Target::Exchange) => true,
            (ApplyTo::Queues, Target::Exchange) | (ApplyTo::Exchanges, Target::Queue(_)) => false,
        };
        kind && self.applicable(target) && self.pattern.as_ref().is_some_and(|p| p.is_match(name))
    }

    /// RabbitMQ's `is_policy_applicable`: no key the queue type refuses.
    fn applicable(&self, target: Target) -> bool {
        let Target::Queue(queue_type) = target else {
            return true;
        };
        let unsupported = unsupported_keys(queue_type);
        !self.definition.keys().any(|k| unsupported.contains(&k.as_str()))
    }
}

/// RabbitMQ 3.10.8's `unsupported_policies` of each queue type (plus
/// `consumer-timeout` on streams, which Lepus takes as RabbitMQ 3.12 does).
fn unsupported_keys(queue_type: QueueType) -> &'static [&'static str] {
    match queue_type {
        QueueType::Classic => &[
            "max-age",
            "stream-max-segment-size-bytes",
            "queue-leader-locator",
            "initial-cluster-size",
            "delivery-limit",
            "dead-letter-strategy",
        ],
        QueueType::Quorum => &[
            "max-priority",
            "queue-mode",
            "single-active-consumer",
            "ha-mode",
            "ha-params",
            "ha-sync-mode",
            "ha-promote-on-shutdown",
            "ha-promote-on-failure",
            "queue-master-locator",
            "max-age",
            "stream-max-segment-size-bytes",
            "initial-cluster-size",
        ],
        QueueType::Stream => &[
            "expires",
            "message-ttl",
            "dead-letter-exchange",
            "dead-letter-routing-key",
            "max-length",
            "max-in-memory-length",
            "max-in-memory-bytes",
            "max-priority",
            "overflow",
            "queue-mode",
            "single-active-consumer",
            "delivery-limit",
            "ha-mode",
            "ha-params",
            "ha-sync-mode",
            "ha-promote-on-shutdown",
            "ha-promote-on-failure",
            "queue-master-locator",
            "dead-letter-strategy",
            "consumer-timeout",
        ],
    }
}

/// Versions of compiled policy sets, process-wide, so a queue can tell
/// whether what it applied is current.
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

/// One vhost's policies and operator policies, compiled, best first.
#[derive(Debug, Default)]
pub struct VhostPolicies {
    /// Unique per compilation (0: the empty set every vhost starts with).
    version: u64,
    user: Vec<CompiledPolicy>,
    operator: Vec<CompiledPolicy>,
}

impl VhostPolicies {
    /// Compiles `vhost`'s policies and operator policies of `parameters`.
    pub fn compile(parameters: &Parameters, vhost: &str) -> VhostPolicies {
        let mut user: Vec<CompiledPolicy> = parameters
            .policies
            .range((vhost.to_owned(), String::new())..)
            .take_while(|((v, _), _)| v == vhost)
            .map(|(_, p)| {
                CompiledPolicy::new(
                    &p.name,
                    &p.pattern,
                    &Value::String(p.apply_to.clone()),
                    p.priority,
                    &p.definition,
                )
            })
            .collect();
        let mut operator: Vec<CompiledPolicy> = parameters
            .parameters
            .iter()
            .filter(|((v, component, _), _)| v == vhost && component == OPERATOR_POLICY_COMPONENT)
            .map(|((_, _, name), p)| {
                let field = |k: &str| p.value.get(k).cloned().unwrap_or(Value::Null);
                CompiledPolicy::new(
                    name,
                    field("pattern").as_str().unwrap_or_default(),
                    &field("apply-to"),
                    field("priority").as_i64().unwrap_or(0),
                    &field("definition"),
                )
            })
            .collect();
        // Highest priority first; on a tie, the name that sorts first.
        for list in [&mut user, &mut operator] {
            list.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.name.cmp(&b.name)));
        }
        let version = if user.is_empty() && operator.is_empty() {
            0
        } else {
            NEXT_VERSION.fetch_add(1, Ordering::Relaxed)
        };
        VhostPolicies { version, user, operator }
    }

    /// Which compilation this is (0: no policies at all).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// No policy and no operator policy.
    pub fn is_empty(&self) -> bool {
        self.user.is_empty() && self.operator.is_empty()
    }

    /// The policy and the operator policy that apply to `name`.
    pub fn applied(&self, name: &[u8], target: Target) -> Applied<'_> {
        Applied {
            policy: self.user.iter().find(|p| p.matches(name, target)),
            operator_policy: self.operator.iter().find(|p| p.matches(name, target)),
        }
    }
}

/// What applies to one queue or exchange.
#[derive(Debug, Clone, Copy, Default)]
pub struct Applied<'a> {
    /// The winning policy, if any.
    pub policy: Option<&'a CompiledPolicy>,
    /// The winning operator policy, if any.
    pub operator_policy: Option<&'a CompiledPolicy>,
}

impl Applied<'_> {
    /// The effective definition: the two definitions merged, the smaller
    /// value winning where both set a numeric key.
    pub fn definition(&self) -> Map<String, Value> {
        let mut merged = self.policy.map(|p| p.definition.clone()).unwrap_or_default();
        for (key, op_value) in self.operator_policy.iter().flat_map(|p| p.definition.iter()) {
            let value = match merged.get(key) {
                Some(Value::Bool(_)) if op_value.is_boolean() => op_value.clone(),
                Some(user) => match (user.as_f64(), op_value.as_f64()) {
                    (Some(u), Some(o)) if u <= o => user.clone(),
                    _ => op_value.clone(),
                },
                None => op_value.clone(),
            };
            merged.insert(key.clone(), value);
        }
        merged
    }

    /// RabbitMQ's management fields for a queue or exchange: `policy` and
    /// `operator_policy` (names, or null), `effective_policy_definition`.
    /// Exchanges show `policy` only when one applies, as RabbitMQ does.
    pub fn management_fields(&self, kind: EntityKind) -> Map<String, Value> {
        let name = |p: Option<&CompiledPolicy>| p.map_or(Value::Null, |p| Value::String(p.name.clone()));
        let mut fields = Map::new();
        match kind {
            EntityKind::Queue => {
                fields.insert("policy".into(), name(self.policy));
                fields.insert("operator_policy".into(), name(self.operator_policy));
                fields.insert("effective_policy_definition".into(), Value::Object(self.definition()));
            }
            EntityKind::Exchange => {
                if let Some(p) = self.policy {
                    fields.insert("policy".into(), Value::String(p.name.clone()));
                }
            }
        }
        fields
    }
}

/// For the management API: the policy fields of queue or exchange `name` in
/// `vhost` (see [`Applied::management_fields`]); `None` if there is no such
/// entity.
pub fn management_fields(
    topology: &Topology,
    vhost: &str,
    name: &str,
    kind: EntityKind,
) -> Option<Map<String, Value>> {
    let v = topology.vhosts.get(vhost)?;
    let target = match kind {
        EntityKind::Queue => Target::Queue(QueueType::of(&v.queues.get(name.as_bytes())?.arguments)),
        EntityKind::Exchange => {
            v.exchanges.get(name.as_bytes())?;
            Target::Exchange
        }
    };
    Some(v.policies.applied(name.as_bytes(), target).management_fields(kind))
}

/// The `alternate-exchange` a policy gives exchange `name` (never the
/// default exchange, which RabbitMQ routes without one).
pub(super) fn policy_alternate(policies: &VhostPolicies, name: &ShortStr) -> Option<ShortStr> {
    if name.is_empty() || policies.is_empty() {
        return None;
    }
    let definition = policies.applied(name.as_bytes(), Target::Exchange).definition();
    let alternate = definition.get("alternate-exchange")?.as_str()?;
    ShortStr::from_bytes(bytes::Bytes::copy_from_slice(alternate.as_bytes())).ok()
}

/// Recompiles `vhost`'s policies into the snapshot and gives each of its
/// exchanges its policy's alternate exchange (called under the writer lock
/// after every policy change and replayed record).
pub(super) fn refresh_vhost(topology: &mut Topology, vhost: &str) {
    let policies = std::sync::Arc::new(VhostPolicies::compile(&topology.parameters, vhost));
    let Some(v) = topology.vhosts.get_mut(vhost) else {
        return;
    };
    let v: &mut Vhost = std::sync::Arc::make_mut(v);
    v.policies = policies;
    v.policy_alternates.clear();
    let names: Vec<ShortStr> = v.exchanges.keys().cloned().collect();
    for name in names {
        if let Some(alternate) = policy_alternate(&v.policies, &name) {
            v.policy_alternates.insert(name, alternate);
        }
    }
}

#[cfg(test)]
mod tests;
