//! Policies, vhost-scoped runtime parameters and global parameters, kept as
//! RabbitMQ's definitions give them: stored, made durable and exported
//! unchanged. Operator policies are runtime parameters of component
//! `operator_policy` (as in RabbitMQ, whose definitions export lists them
//! among the `parameters`), their value `{pattern, definition, priority,
//! apply-to}`; [`ParameterChange::set_operator_policy`] makes one. How
//! policies apply is [`crate::routing::policy`]'s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A policy (RabbitMQ's fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Vhost.
    pub vhost: String,
    /// Name.
    pub name: String,
    /// Regular expression on queue and exchange names.
    pub pattern: String,
    /// `queues`, `exchanges` or `all` (the default).
    #[serde(rename = "apply-to", default = "all")]
    pub apply_to: String,
    /// The keys it sets, as given.
    pub definition: Value,
    /// Highest wins (default 0).
    #[serde(default)]
    pub priority: i64,
}

fn all() -> String {
    "all".to_owned()
}

/// A vhost-scoped runtime parameter (`component`, e.g. `shovel`,
/// `federation-upstream`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parameter {
    /// Vhost.
    pub vhost: String,
    /// Component.
    pub component: String,
    /// Name.
    pub name: String,
    /// As given.
    pub value: Value,
}

/// Everything of this module, as one immutable value in the topology
/// snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parameters {
    /// (vhost, name) → policy.
    pub policies: BTreeMap<(String, String), Policy>,
    /// (vhost, component, name) → parameter.
    pub parameters: BTreeMap<(String, String, String), Parameter>,
    /// name → value.
    pub global: BTreeMap<String, Value>,
}

/// One change to [`Parameters`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ParameterChange {
    /// Sets or replaces a policy.
    SetPolicy(Policy),
    /// Clears a policy.
    ClearPolicy {
        /// Vhost.
        vhost: String,
        /// Name.
        name: String,
    },
    /// Sets or replaces a parameter.
    SetParameter(Parameter),
    /// Clears a parameter.
    ClearParameter {
        /// Vhost.
        vhost: String,
        /// Component.
        component: String,
        /// Name.
        name: String,
    },
    /// Sets or replaces a global parameter.
    SetGlobal {
        /// Name.
        name: String,
        /// Value.
        value: Value,
    },
    /// Clears a global parameter.
    ClearGlobal(String),
}

impl ParameterChange {
    /// Sets operator policy `name` of `vhost` (the management API's
    /// `PUT /api/operator-policies/{vhost}/{name}` body as `value`).
    pub fn set_operator_policy(vhost: &str, name: &str, value: Value) -> ParameterChange {
        ParameterChange::SetParameter(Parameter {
            vhost: vhost.to_owned(),
            component: crate::routing::policy::OPERATOR_POLICY_COMPONENT.to_owned(),
            name: name.to_owned(),
            value,
        })
    }

    /// Clears operator policy `name` of `vhost`.
    pub fn clear_operator_policy(vhost: &str, name: &str) -> ParameterChange {
        ParameterChange::ClearParameter {
            vhost: vhost.to_owned(),
            component: crate::routing::policy::OPERATOR_POLICY_COMPONENT.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The vhost the change is in, if it is vhost-scoped.
    pub fn vhost(&self) -> Option<&str> {
        match self {
            ParameterChange::SetPolicy(p) => Some(&p.vhost),
            ParameterChange::ClearPolicy { vhost, .. } | ParameterChange::ClearParameter { vhost, .. } => {
                Some(vhost)
            }
            ParameterChange::SetParameter(p) => Some(&p.vhost),
            ParameterChange::SetGlobal { .. } | ParameterChange::ClearGlobal(_) => None,
        }
    }
}

impl Parameters {
    /// Applies `change` (the caller has checked its vhost exists).
    pub fn apply(&mut self, change: &ParameterChange) {
        match change {
            ParameterChange::SetPolicy(p) => {
                self.policies.insert((p.vhost.clone(), p.name.clone()), p.clone());
            }
            ParameterChange::ClearPolicy { vhost, name } => {
                self.policies.remove(&(vhost.clone(), name.clone()));
            }
            ParameterChange::SetParameter(p) => {
                self.parameters.insert((p.vhost.clone(), p.component.clone(), p.name.clone()), p.clone());
            }
            ParameterChange::ClearParameter { vhost, component, name } => {
                self.parameters.remove(&(vhost.clone(), component.clone(), name.clone()));
            }
            ParameterChange::SetGlobal { name, value } => {
                self.global.insert(name.clone(), value.clone());
            }
            ParameterChange::ClearGlobal(name) => {
                self.global.remove(name);
            }
        }
    }

    /// Removes every policy and parameter of a deleted vhost.
    pub fn remove_vhost(&mut self, vhost: &str) {
        self.policies.retain(|(v, _), _| v != vhost);
        self.parameters.retain(|(v, _, _), _| v != vhost);
    }

    /// The changes that recreate `self`, for the rewritten log.
    pub fn as_changes(&self) -> Vec<ParameterChange> {
        let policies = self.policies.values().cloned().map(ParameterChange::SetPolicy);
        let parameters = self.parameters.values().cloned().map(ParameterChange::SetParameter);
        let global = self
            .global
            .iter()
            .map(|(name, value)| ParameterChange::SetGlobal { name: name.clone(), value: value.clone() });
        policies.chain(parameters).chain(global).collect()
    }
}
