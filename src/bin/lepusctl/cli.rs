//! The command line: global connection flags and one subcommand per
//! operation, named as `rabbitmqctl` names it.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::failure::EXIT_CODES_HELP;
use crate::kinds::Kind;
use crate::output::Format;

/// Operate Lepus (or RabbitMQ) through the management HTTP API.
///
/// Connects to http://localhost:15672 as guest/guest unless told otherwise:
/// --host/--port/--https, or LEPUSCTL_URL (e.g. https://broker:15671) when
/// none of those flags is given.
#[derive(Debug, Parser)]
#[command(name = "lepusctl", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub connection: Connection,
    /// How lists and documents are printed.
    #[arg(long, short = 'f', visible_alias = "formatter", global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Print nothing on success but what was asked for.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the management API is and who asks.
#[derive(Debug, Args)]
pub struct Connection {
    /// Host of the management API [default: localhost].
    #[arg(long, short = 'H', global = true)]
    pub host: Option<String>,
    /// Port of the management API [default: 15672].
    #[arg(long, short = 'P', global = true)]
    pub port: Option<u16>,
    /// Talk HTTPS (trusting --cacert, or the webpki roots).
    #[arg(long, global = true)]
    pub https: bool,
    /// PEM file of the CA certificates to trust over HTTPS.
    #[arg(long, global = true, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Base URL, used when no --host/--port/--https is given.
    #[arg(long, global = true, env = "LEPUSCTL_URL", value_name = "URL")]
    pub url: Option<String>,
    #[arg(long, short = 'u', global = true, env = "LEPUSCTL_USERNAME", default_value = "guest")]
    pub username: String,
    #[arg(long, global = true, env = "LEPUSCTL_PASSWORD", default_value = "guest", hide_env_values = true)]
    pub password: String,
    /// The virtual host commands act in.
    #[arg(long, short = 'p', global = true, default_value = "/")]
    pub vhost: String,
    /// Seconds to wait for each HTTP request.
    #[arg(long, global = true, default_value_t = 60, value_name = "SECONDS")]
    pub timeout: u64,
}

/// Names are rabbitmqctl's (`add_user`), set one by one: a `rename_all` on
/// the enum would also rename the flags inside (`--if_exists`).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The broker: product, version, node, listeners, totals, message rates.
    Status,
    /// List objects of one kind (in --vhost, or every vhost with -A).
    List(ListArgs),
    /// Create a user (the password is read from stdin when not given).
    #[command(name = "add_user")]
    AddUser {
        name: String,
        // Its own id: `password` is the global --password.
        #[arg(id = "new_password", value_name = "PASSWORD")]
        password: Option<String>,
        /// Comma-separated tags (administrator, monitoring, management, policymaker).
        #[arg(long, default_value = "")]
        tags: String,
    },
    #[command(name = "delete_user")]
    DeleteUser {
        name: String,
        #[arg(long)]
        if_exists: bool,
    },
    /// Set a user's password (read from stdin when not given), keeping its tags.
    #[command(name = "change_password")]
    ChangePassword {
        name: String,
        #[arg(id = "new_password", value_name = "PASSWORD")]
        password: Option<String>,
    },
    /// Replace a user's tags (none given: no tags), keeping its password.
    #[command(name = "set_user_tags")]
    SetUserTags { name: String, tags: Vec<String> },
    #[command(name = "add_vhost")]
    AddVhost {
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// Comma-separated tags.
        #[arg(long)]
        tags: Option<String>,
        #[arg(long)]
        default_queue_type: Option<String>,
    },
    #[command(name = "delete_vhost")]
    DeleteVhost {
        name: String,
        #[arg(long)]
        if_exists: bool,
    },
    /// Grant USER configure, write and read regexes in --vhost.
    #[command(name = "set_permissions")]
    SetPermissions { user: String, configure: String, write: String, read: String },
    #[command(name = "clear_permissions")]
    ClearPermissions {
        user: String,
        #[arg(long)]
        if_exists: bool,
    },
    /// Grant USER write and read routing-key regexes on EXCHANGE in --vhost.
    #[command(name = "set_topic_permissions")]
    SetTopicPermissions { user: String, exchange: String, write: String, read: String },
    /// Clear all of USER's topic permissions in --vhost.
    #[command(name = "clear_topic_permissions")]
    ClearTopicPermissions {
        user: String,
        #[arg(long)]
        if_exists: bool,
    },
    #[command(name = "set_policy")]
    SetPolicy(PolicyArgs),
    #[command(name = "clear_policy")]
    ClearPolicy(ClearArgs),
    #[command(name = "set_operator_policy")]
    SetOperatorPolicy(PolicyArgs),
    #[command(name = "clear_operator_policy")]
    ClearOperatorPolicy(ClearArgs),
    /// Declare a queue, an exchange or a binding in --vhost.
    Declare {
        #[command(subcommand)]
        object: Declare,
    },
    /// Delete a queue, an exchange or a binding in --vhost.
    Delete {
        #[command(subcommand)]
        object: Delete,
    },
    #[command(name = "purge_queue")]
    PurgeQueue { name: String },
    /// Close a connection by name (as `list connections` shows it).
    #[command(name = "close_connection")]
    CloseConnection {
        name: String,
        #[arg(default_value = "Closed via lepusctl")]
        reason: String,
    },
    /// Write every definition to FILE (default or `-`: stdout).
    #[command(name = "export_definitions")]
    ExportDefinitions { file: Option<PathBuf> },
    /// Merge the definitions in FILE (`-`: stdin) into the broker.
    #[command(name = "import_definitions")]
    ImportDefinitions { file: PathBuf },
    /// Publish one message through the API (payload from stdin when not given).
    Publish(PublishArgs),
    /// Fetch messages from a queue through the API.
    Get(GetArgs),
    /// Print a completion script for SHELL.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    pub kind: Kind,
    /// Columns to show (API field names, dotted for nested ones).
    pub columns: Vec<String>,
    /// Comma-separated columns, as an alternative to listing them.
    #[arg(long = "columns", short = 'c', value_delimiter = ',')]
    pub columns_flag: Vec<String>,
    /// Every vhost, not only --vhost.
    #[arg(long, short = 'A')]
    pub all_vhosts: bool,
    /// Sort on this field (on the broker).
    #[arg(long)]
    pub sort: Option<String>,
    #[arg(long)]
    pub sort_reverse: bool,
    /// No header line in table and TSV output.
    #[arg(long)]
    pub no_headers: bool,
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    pub name: String,
    /// Regex of the names it applies to.
    pub pattern: String,
    /// JSON object, e.g. '{"max-length": 10}'.
    pub definition: String,
    #[arg(long, default_value_t = 0)]
    pub priority: i64,
    /// queues, exchanges, all (and RabbitMQ's classic_queues, quorum_queues, streams).
    #[arg(long, default_value = "all")]
    pub apply_to: String,
}

#[derive(Debug, Args)]
pub struct ClearArgs {
    pub name: String,
    #[arg(long)]
    pub if_exists: bool,
}

#[derive(Debug, Subcommand)]
pub enum Declare {
    Queue {
        name: String,
        #[arg(long, default_value_t = true, action = ArgAction::Set)]
        durable: bool,
        #[arg(long)]
        auto_delete: bool,
        /// classic, quorum or stream (x-queue-type).
        #[arg(long = "type")]
        queue_type: Option<String>,
        /// JSON object of x-arguments.
        #[arg(long)]
        arguments: Option<String>,
    },
    Exchange {
        name: String,
        #[arg(long = "type", default_value = "direct")]
        exchange_type: String,
        #[arg(long, default_value_t = true, action = ArgAction::Set)]
        durable: bool,
        #[arg(long)]
        auto_delete: bool,
        #[arg(long)]
        internal: bool,
        #[arg(long)]
        arguments: Option<String>,
    },
    Binding(BindingArgs),
}

#[derive(Debug, Subcommand)]
pub enum Delete {
    Queue {
        name: String,
        #[arg(long)]
        if_empty: bool,
        #[arg(long)]
        if_unused: bool,
        #[arg(long)]
        if_exists: bool,
    },
    Exchange {
        name: String,
        #[arg(long)]
        if_unused: bool,
        #[arg(long)]
        if_exists: bool,
    },
    Binding {
        #[command(flatten)]
        binding: BindingArgs,
        #[arg(long)]
        if_exists: bool,
    },
}

#[derive(Debug, Args)]
pub struct BindingArgs {
    #[arg(long)]
    pub source: String,
    #[arg(long)]
    pub destination: String,
    #[arg(long, value_enum, default_value_t = DestinationType::Queue)]
    pub destination_type: DestinationType,
    #[arg(long, default_value = "")]
    pub routing_key: String,
    /// JSON object of binding arguments.
    #[arg(long)]
    pub arguments: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DestinationType {
    Queue,
    Exchange,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Exchange; the default exchange when omitted.
    #[arg(long, short = 'e', default_value = "amq.default")]
    pub exchange: String,
    #[arg(long, short = 'k', default_value = "")]
    pub routing_key: String,
    #[arg(long)]
    pub payload: Option<String>,
    /// The payload is base64 (for binary bodies).
    #[arg(long)]
    pub base64: bool,
    /// JSON object of basic properties, e.g. '{"delivery_mode": 2}'.
    #[arg(long)]
    pub properties: Option<String>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    pub queue: String,
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    #[arg(long, value_enum, default_value_t = AckMode::AckRequeueTrue)]
    pub ackmode: AckMode,
    /// auto (text when valid UTF-8, else base64) or base64.
    #[arg(long, default_value = "auto")]
    pub encoding: String,
    /// Truncate payloads to this many bytes.
    #[arg(long)]
    pub truncate: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum AckMode {
    AckRequeueTrue,
    AckRequeueFalse,
    RejectRequeueTrue,
    RejectRequeueFalse,
}

impl AckMode {
    /// As the API spells it.
    pub fn name(self) -> &'static str {
        match self {
            AckMode::AckRequeueTrue => "ack_requeue_true",
            AckMode::AckRequeueFalse => "ack_requeue_false",
            AckMode::RejectRequeueTrue => "reject_requeue_true",
            AckMode::RejectRequeueFalse => "reject_requeue_false",
        }
    }
}
