//! Changes to users, permissions, vhosts and parameters ([`crate::access`],
//! [`crate::routing::parameters`]), made under the registry's writer lock
//! like every topology change, so a shard that sees a snapshot sees the
//! access of the same moment, and recorded in the definitions log before
//! they are published, like durable declares.
//!
//! The replay at start applies the stored records through the same
//! functions ([`apply_record`]), and the log rewrite keeps what is live
//! ([`access_definitions`]).

use std::sync::Arc;

use bytes::Bytes;

use crate::access::{AccessChange, AccessError, VhostSettings};
use crate::amqp::field::ShortStr;
use crate::routing::parameters::ParameterChange;
use crate::routing::policy::{PolicyKind, OPERATOR_POLICY_COMPONENT};
use crate::storage::definitions::Definition;

use super::topology::{Registry, Topology};

impl Registry {
    /// Applies one access change, records it, and publishes the new
    /// snapshot; on error nothing changes.
    pub fn change_access(&self, change: &AccessChange) -> Result<(), AccessError> {
        self.mutate_recorded(|topology, records| {
            apply_access(topology, change)?;
            records.push(Definition::Access(json(change)));
            Ok(())
        })
    }

    /// Creates a vhost with RabbitMQ's standard exchanges and `settings`,
    /// durably; an existing vhost keeps its entities and takes `settings`
    /// (as RabbitMQ's PUT /api/vhosts does).
    pub fn create_vhost(&self, name: &str, settings: VhostSettings) -> Result<(), AccessError> {
        let vhost = vhost_name(name)?;
        self.mutate_recorded(|topology, records| {
            self.put_vhost(topology, name, settings.clone());
            records.push(Definition::VhostCreated { name: vhost, settings: json(&settings) });
            Ok(())
        })
    }

    /// Deletes a vhost with its exchanges, queues, bindings, permissions,
    /// policies and parameters, durably. The shards that own its queues
    /// delete them and their stored messages, and close its connections,
    /// when they see the new snapshot (see [`Topology::control_changes`]),
    /// which the registry wakes them to see (see
    /// [`Registry::set_shard_waker`]).
    pub fn delete_vhost(&self, name: &str) -> Result<(), AccessError> {
        let vhost = vhost_name(name)?;
        self.mutate_recorded(|topology, records| {
            if !topology.vhosts.contains_key(name) && !topology.access.vhosts.contains_key(name) {
                return Err(AccessError::NoVhost(name.to_owned()));
            }
            remove_vhost(topology, name);
            records.push(Definition::VhostDeleted { name: vhost });
            Ok(())
        })?;
        self.wake_shards();
        Ok(())
    }

    /// Records that the first start's defaults were made (or deliberately
    /// not, with `load_definitions`): later starts are not first starts,
    /// whatever is deleted afterwards.
    pub fn mark_initialised(&self) -> Result<(), AccessError> {
        self.mutate_recorded(|_, records| {
            records.push(Definition::AccessInitialised);
            Ok(())
        })
    }

    /// The control plane declared or deleted queues (a definitions import
    /// into a running broker): publishes a snapshot that tells the shards
    /// to reconcile (see [`Topology::control_changes`]) and wakes them.
    pub fn note_control_change(&self) {
        self.mutate(|topology| topology.control_changes += 1);
        self.wake_shards();
    }

    /// Sets or clears a policy or parameter, durably; a vhost-scoped one
    /// needs its vhost, and a policy or operator policy must pass
    /// RabbitMQ's validation ([`AccessError::Invalid`] with its text). A
    /// policy change reaches every queue and exchange it matches: the
    /// vhost's policies are recompiled into the snapshot and the shards
    /// are woken to apply them (see [`Topology::control_changes`]).
    pub fn change_parameters(&self, change: &ParameterChange) -> Result<(), AccessError> {
        if let Some((kind, body)) = policy_body(change) {
            crate::routing::policy::validate_policy(kind, &body)
                .map_err(|e| AccessError::Invalid(e.reason().to_owned()))?;
        }
        let policies = self.mutate_recorded(|topology, records| {
            let policies = apply_parameter(topology, change)?;
            records.push(Definition::Parameter(json(change)));
            Ok(policies)
        })?;
        if policies {
            self.wake_shards();
        }
        Ok(())
    }

    /// Adds vhost `name` (standard exchanges) if it is new, and sets its
    /// settings.
    fn put_vhost(&self, topology: &mut Topology, name: &str, settings: VhostSettings) {
        if !topology.vhosts.contains_key(name) {
            topology.vhosts.insert(name.to_owned(), Arc::new(self.standard_vhost()));
        }
        Arc::make_mut(&mut topology.access).add_vhost(name, settings);
    }
}

/// A vhost name fits AMQP's `shortstr` (connection.open names it in one).
fn vhost_name(name: &str) -> Result<ShortStr, AccessError> {
    ShortStr::from_bytes(Bytes::copy_from_slice(name.as_bytes()))
        .map_err(|_| AccessError::Storage(format!("vhost name longer than 255 bytes: '{name}'")))
}

fn json<T: serde::Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

fn apply_access(topology: &mut Topology, change: &AccessChange) -> Result<(), AccessError> {
    let mut access = crate::access::Access::clone(&topology.access);
    access.apply(change)?;
    topology.access = Arc::new(access);
    Ok(())
}

/// Applies a parameter change; true if it changed a policy or operator
/// policy, which the vhost's compiled policies and its exchanges then
/// follow, and which the shards are told to apply to their queues.
fn apply_parameter(topology: &mut Topology, change: &ParameterChange) -> Result<bool, AccessError> {
    if let Some(vhost) = change.vhost() {
        if !topology.access.vhosts.contains_key(vhost) {
            return Err(AccessError::NoVhost(vhost.to_owned()));
        }
    }
    Arc::make_mut(&mut topology.parameters).apply(change);
    let policy_vhost = match change {
        ParameterChange::SetPolicy(p) => Some(p.vhost.as_str()),
        ParameterChange::ClearPolicy { vhost, .. } => Some(vhost.as_str()),
        ParameterChange::SetParameter(p) if p.component == OPERATOR_POLICY_COMPONENT => {
            Some(p.vhost.as_str())
        }
        ParameterChange::ClearParameter { vhost, component, .. }
            if component == OPERATOR_POLICY_COMPONENT =>
        {
            Some(vhost.as_str())
        }
        _ => None,
    };
    let Some(vhost) = policy_vhost else {
        return Ok(false);
    };
    crate::routing::policy::refresh_vhost(topology, vhost);
    topology.control_changes += 1;
    Ok(true)
}

/// A policy or operator policy change as the management API's PUT body
/// would give it, for validation.
fn policy_body(change: &ParameterChange) -> Option<(PolicyKind, serde_json::Value)> {
    match change {
        ParameterChange::SetPolicy(p) => Some((
            PolicyKind::User,
            serde_json::json!({
                "pattern": p.pattern, "definition": p.definition,
                "apply-to": p.apply_to, "priority": p.priority,
            }),
        )),
        ParameterChange::SetParameter(p) if p.component == OPERATOR_POLICY_COMPONENT => {
            Some((PolicyKind::Operator, p.value.clone()))
        }
        _ => None,
    }
}

/// Removes a vhost from the topology, access and parameters, and tells the
/// shards to reconcile.
fn remove_vhost(topology: &mut Topology, name: &str) {
    topology.vhosts.remove(name);
    Arc::make_mut(&mut topology.access).remove_vhost(name);
    Arc::make_mut(&mut topology.parameters).remove_vhost(name);
    topology.control_changes += 1;
}

/// Replays one control-plane record; `Ok(false)` if it is not one.
pub(crate) fn apply_record(
    registry: &Registry,
    topology: &mut Topology,
    definition: &Definition,
) -> Result<bool, String> {
    match definition {
        Definition::Access(bytes) => {
            let change: AccessChange = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            apply_access(topology, &change).map_err(|e| e.to_string())?;
        }
        Definition::VhostCreated { name, settings } => {
            let settings: VhostSettings = serde_json::from_slice(settings).map_err(|e| e.to_string())?;
            registry.put_vhost(topology, &name.to_string_lossy(), settings);
        }
        Definition::VhostDeleted { name } => remove_vhost(topology, &name.to_string_lossy()),
        Definition::Parameter(bytes) => {
            let change: ParameterChange = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            apply_parameter(topology, &change).map_err(|e| e.to_string())?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The records that recreate `topology`'s vhosts, users, permissions, topic
/// permissions and parameters, in an order that replays (vhosts and users
/// before what names them).
pub(crate) fn access_definitions(topology: &Topology) -> Vec<Definition> {
    let access = &topology.access;
    let mut out = Vec::new();
    for (name, settings) in &access.vhosts {
        if let Ok(vhost) = vhost_name(name) {
            out.push(Definition::VhostCreated { name: vhost, settings: json(settings) });
        }
    }
    let mut changes: Vec<AccessChange> =
        access.users.values().map(|u| AccessChange::PutUser(u.as_ref().clone())).collect();
    changes.extend(access.permissions.iter().map(|((user, vhost), permission)| {
        AccessChange::SetPermission {
            user: user.clone(),
            vhost: vhost.clone(),
            permission: permission.clone(),
        }
    }));
    changes.extend(access.topic_permissions.iter().map(|((user, vhost, exchange), permission)| {
        AccessChange::SetTopicPermission {
            user: user.clone(),
            vhost: vhost.clone(),
            exchange: exchange.clone(),
            permission: permission.clone(),
        }
    }));
    out.extend(changes.iter().map(|c| Definition::Access(json(c))));
    out.extend(topology.parameters.as_changes().iter().map(|c| Definition::Parameter(json(c))));
    out
}

#[cfg(test)]
#[path = "access_tests.rs"]
mod tests;
