//! The object kinds `lepusctl list` knows: where the API lists them and
//! which columns are shown by default (rabbitmqctl's `list_*` defaults,
//! named as the API's JSON fields).

use clap::ValueEnum;

/// An object kind, spelt as rabbitmqctl's `list_<kind>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Queues,
    Exchanges,
    Bindings,
    Connections,
    Channels,
    Consumers,
    Users,
    Vhosts,
    Permissions,
    #[value(name = "topic_permissions", alias = "topic-permissions")]
    TopicPermissions,
    Policies,
    #[value(name = "operator_policies", alias = "operator-policies")]
    OperatorPolicies,
    Parameters,
    #[value(name = "vhost_limits", alias = "vhost-limits")]
    VhostLimits,
    #[value(name = "user_limits", alias = "user-limits")]
    UserLimits,
    Nodes,
}

/// Where a kind is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One list for the broker (users, connections, ...).
    Broker,
    /// Per vhost: `{vhost}` in the path is replaced by the encoded vhost;
    /// the broker-wide path lists every vhost.
    Vhost(&'static str),
    /// Per vhost, but the API has no per-vhost path: the broker-wide list
    /// is filtered on its `vhost` field.
    VhostFiltered,
}

impl Kind {
    /// The broker-wide path.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Queues => "/api/queues",
            Kind::Exchanges => "/api/exchanges",
            Kind::Bindings => "/api/bindings",
            Kind::Connections => "/api/connections",
            Kind::Channels => "/api/channels",
            Kind::Consumers => "/api/consumers",
            Kind::Users => "/api/users",
            Kind::Vhosts => "/api/vhosts",
            Kind::Permissions => "/api/permissions",
            Kind::TopicPermissions => "/api/topic-permissions",
            Kind::Policies => "/api/policies",
            Kind::OperatorPolicies => "/api/operator-policies",
            Kind::Parameters => "/api/parameters",
            Kind::VhostLimits => "/api/vhost-limits",
            Kind::UserLimits => "/api/user-limits",
            Kind::Nodes => "/api/nodes",
        }
    }

    pub fn scope(self) -> Scope {
        match self {
            Kind::Queues => Scope::Vhost("/api/queues/{vhost}"),
            Kind::Exchanges => Scope::Vhost("/api/exchanges/{vhost}"),
            Kind::Bindings => Scope::Vhost("/api/bindings/{vhost}"),
            Kind::Consumers => Scope::Vhost("/api/consumers/{vhost}"),
            Kind::Permissions => Scope::Vhost("/api/vhosts/{vhost}/permissions"),
            Kind::TopicPermissions => Scope::Vhost("/api/vhosts/{vhost}/topic-permissions"),
            Kind::Policies => Scope::Vhost("/api/policies/{vhost}"),
            Kind::OperatorPolicies => Scope::Vhost("/api/operator-policies/{vhost}"),
            Kind::VhostLimits => Scope::Vhost("/api/vhost-limits/{vhost}"),
            Kind::Parameters => Scope::VhostFiltered,
            Kind::Connections
            | Kind::Channels
            | Kind::Users
            | Kind::Vhosts
            | Kind::UserLimits
            | Kind::Nodes => Scope::Broker,
        }
    }

    /// The columns shown when none are chosen.
    pub fn default_columns(self) -> &'static [&'static str] {
        match self {
            Kind::Queues => &["name", "messages"],
            Kind::Exchanges => &["name", "type"],
            Kind::Bindings => &["source", "destination", "destination_type", "routing_key", "arguments"],
            Kind::Connections => &["name", "user", "peer_host", "peer_port", "state"],
            Kind::Channels => &["name", "user", "consumer_count", "messages_unacknowledged"],
            Kind::Consumers => &[
                "queue.name",
                "channel_details.name",
                "consumer_tag",
                "ack_required",
                "prefetch_count",
                "active",
                "arguments",
            ],
            Kind::Users => &["name", "tags"],
            Kind::Vhosts => &["name"],
            Kind::Permissions => &["user", "configure", "write", "read"],
            Kind::TopicPermissions => &["user", "exchange", "write", "read"],
            Kind::Policies | Kind::OperatorPolicies => {
                &["vhost", "name", "pattern", "apply-to", "definition", "priority"]
            }
            Kind::Parameters => &["component", "name", "value"],
            Kind::VhostLimits => &["vhost", "value"],
            Kind::UserLimits => &["user", "value"],
            Kind::Nodes => &["name", "type", "running", "uptime", "mem_used"],
        }
    }
}
