//! What each command asks of the management API. Object commands are in
//! `objects.rs`; this file has the connection, `status`, `list`, users,
//! vhosts, permissions and policies.

use std::io::BufRead;
use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::{ClearArgs, Cli, Command, Connection, ListArgs, PolicyArgs};
use crate::failure::{Failure, Outcome, EXIT_SOFTWARE, EXIT_USAGE};
use crate::http::{segment, Api, Target};
use crate::kinds::Scope;
use crate::objects;
use crate::output::{cell, emit, lookup, Format, Listing};

/// The management API's port when none is given (RabbitMQ's).
const PORT_DEFAULT: u16 = 15672;

/// What every command gets: the API, the vhost it acts in, how to print.
pub struct Context {
    pub api: Api,
    pub vhost: String,
    pub format: Format,
    pub quiet: bool,
}

impl Context {
    /// The encoded vhost, for paths.
    pub fn vh(&self) -> String {
        segment(&self.vhost)
    }

    /// A progress line as rabbitmqctl prints it (`Adding user "x" ...`),
    /// unless --quiet.
    pub fn say(&self, line: &str) {
        if !self.quiet {
            emit(&format!("{line}\n"));
        }
    }
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Outcome {
    if let Command::Completions { shell } = cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command, "lepusctl", &mut script);
        emit(&String::from_utf8_lossy(&script));
        return Ok(());
    }
    let target = target(&cli.connection)?;
    let ctx = Context {
        api: Api::new(&target)?,
        vhost: cli.connection.vhost,
        format: cli.format,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Status => status(&ctx),
        Command::List(args) => list(&ctx, &args),
        Command::SetPolicy(args) => set_policy(&ctx, "policies", &args),
        Command::ClearPolicy(args) => clear_policy(&ctx, "policies", &args),
        Command::SetOperatorPolicy(args) => set_policy(&ctx, "operator-policies", &args),
        Command::ClearOperatorPolicy(args) => clear_policy(&ctx, "operator-policies", &args),
        other => access(&ctx, other),
    }
}

/// Users, vhosts, permissions; the rest goes to `objects::run`.
fn access(ctx: &Context, command: Command) -> Outcome {
    match command {
        Command::AddUser { name, password, tags } => add_user(ctx, &name, password, &tags),
        Command::DeleteUser { name, if_exists } => {
            ctx.say(&format!("Deleting user \"{name}\" ..."));
            let deleted = ctx.api.delete(&format!("/api/users/{}", segment(&name)), &[]);
            forgive(deleted.map_err(|f| no_such_user(f, &name)), if_exists)
        }
        Command::ChangePassword { name, password } => change_password(ctx, &name, password),
        Command::SetUserTags { name, tags } => set_user_tags(ctx, &name, &tags),
        Command::AddVhost { name, description, tags, default_queue_type } => {
            ctx.say(&format!("Adding vhost \"{name}\" ..."));
            let mut body = json!({});
            for (key, value) in
                [("description", description), ("tags", tags), ("default_queue_type", default_queue_type)]
            {
                if let Some(value) = value {
                    body[key] = Value::String(value);
                }
            }
            ctx.api.put(&format!("/api/vhosts/{}", segment(&name)), &body)
        }
        Command::DeleteVhost { name, if_exists } => {
            ctx.say(&format!("Deleting vhost \"{name}\" ..."));
            forgive(ctx.api.delete(&format!("/api/vhosts/{}", segment(&name)), &[]), if_exists)
        }
        Command::SetPermissions { user, configure, write, read } => {
            ctx.say(&format!("Setting permissions for user \"{user}\" in vhost \"{}\" ...", ctx.vhost));
            let body = json!({"configure": configure, "write": write, "read": read});
            ctx.api.put(&format!("/api/permissions/{}/{}", ctx.vh(), segment(&user)), &body)
        }
        Command::ClearPermissions { user, if_exists } => {
            ctx.say(&format!("Clearing permissions for user \"{user}\" in vhost \"{}\" ...", ctx.vhost));
            forgive(
                ctx.api.delete(&format!("/api/permissions/{}/{}", ctx.vh(), segment(&user)), &[]),
                if_exists,
            )
        }
        Command::SetTopicPermissions { user, exchange, write, read } => {
            ctx.say(&format!(
                "Setting topic permissions on \"{exchange}\" for user \"{user}\" in vhost \"{}\" ...",
                ctx.vhost
            ));
            let body = json!({"exchange": exchange, "write": write, "read": read});
            ctx.api.put(&format!("/api/topic-permissions/{}/{}", ctx.vh(), segment(&user)), &body)
        }
        Command::ClearTopicPermissions { user, if_exists } => {
            ctx.say(&format!(
                "Clearing topic permissions for user \"{user}\" in vhost \"{}\" ...",
                ctx.vhost
            ));
            let path = format!("/api/topic-permissions/{}/{}", ctx.vh(), segment(&user));
            forgive(ctx.api.delete(&path, &[]), if_exists)
        }
        other => objects::run(ctx, other),
    }
}

/// A 404 is success when the user said `--if-exists`.
pub fn forgive(result: Outcome, if_exists: bool) -> Outcome {
    match result {
        Err(failure) if if_exists && failure.is_missing() => Ok(()),
        other => other,
    }
}

/// Parses a JSON argument (`what` names it in the error).
pub fn json_arg(text: &str, what: &str) -> Outcome<Value> {
    serde_json::from_str(text).map_err(|e| Failure::data(format!("{what} is not valid JSON: {e}")))
}

fn target(c: &Connection) -> Outcome<Target> {
    let explicit = c.host.is_some() || c.port.is_some() || c.https;
    let base_url = match (&c.url, explicit) {
        (Some(url), false) => url.trim_end_matches('/').to_owned(),
        _ => {
            let scheme = if c.https { "https" } else { "http" };
            let host = c.host.as_deref().unwrap_or("localhost");
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host.to_owned()
            };
            format!("{scheme}://{host}:{}", c.port.unwrap_or(PORT_DEFAULT))
        }
    };
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        return Err(Failure::new(EXIT_USAGE, format!("not an http:// or https:// URL: {base_url}")));
    }
    Ok(Target {
        base_url,
        username: c.username.clone(),
        password: c.password.clone(),
        cacert: c.cacert.clone(),
        timeout: Duration::from_secs(c.timeout),
    })
}

fn status(ctx: &Context) -> Outcome {
    let overview = ctx.api.get("/api/overview")?;
    if ctx.format == Format::Json {
        emit(&format!("{}\n", serde_json::to_string_pretty(&overview).unwrap_or_default()));
        return Ok(());
    }
    let field = |path: &str| cell(lookup(&overview, path));
    let node_name = field("node");
    // Needs the monitoring tag; the rest of status does not.
    let node = ctx.api.get(&format!("/api/nodes/{}", segment(&node_name))).unwrap_or(Value::Null);
    let uptime =
        node.get("uptime").and_then(Value::as_u64).map_or_else(String::new, |ms| duration(ms / 1000));
    let listeners: Vec<String> = overview
        .get("listeners")
        .and_then(Value::as_array)
        .map(|all| {
            all.iter()
                .map(|l| {
                    format!(
                        "{} {}:{}",
                        field_of(l, "protocol"),
                        field_of(l, "ip_address"),
                        field_of(l, "port")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let totals = |prefix: &str, keys: &[&str]| {
        keys.iter().map(|k| format!("{k} {}", field(&format!("{prefix}.{k}")))).collect::<Vec<_>>().join(", ")
    };
    let rate = |k: &str| {
        let rate = lookup(&overview, &format!("message_stats.{k}_details.rate")).and_then(Value::as_f64);
        format!("{k} {:.1}/s", rate.unwrap_or(0.0))
    };
    let lines = [
        ("Product", format!("{} {}", field("product_name"), field("product_version"))),
        ("Management", field("management_version")),
        ("Node", node_name.clone()),
        ("Cluster", field("cluster_name")),
        ("Uptime", uptime),
        ("Listeners", listeners.join(", ")),
        (
            "Objects",
            totals("object_totals", &["connections", "channels", "exchanges", "queues", "consumers"]),
        ),
        ("Messages", totals("queue_totals", &["messages_ready", "messages_unacknowledged", "messages"])),
        ("Rates", ["publish", "deliver_get", "ack"].map(rate).join(", ")),
    ];
    let mut text: String = lines.iter().map(|(name, value)| format!("{name:<11} {value}\n")).collect();
    text.push_str(&shards(&node));
    emit(&text);
    Ok(())
}

/// Lepus's per-shard facts (`lepus_shards` of its node), one line each;
/// nothing for a broker without them.
fn shards(node: &Value) -> String {
    let Some(shards) = node.get("lepus_shards").and_then(Value::as_array) else {
        return String::new();
    };
    let number = |shard: &Value, key: &str| shard.get(key).and_then(Value::as_f64).unwrap_or(0.0);
    shards
        .iter()
        .map(|shard| {
            format!(
                "Shard {:<5} busy {:.1}%, {:.0} turns/s, turn p99 {:.0} us, ring {:.0}/{:.0}, \
                 {:.0} connections, {:.0} queues, {:.0} held publishers\n",
                number(shard, "shard"),
                number(shard, "busy_share") * 100.0,
                number(shard, "turns_per_sec"),
                number(shard, "turn_p99_us"),
                number(shard, "ring_occupancy"),
                number(shard, "ring_capacity"),
                number(shard, "connections"),
                number(shard, "queues"),
                number(shard, "held_publishers"),
            )
        })
        .collect()
}

fn field_of(value: &Value, key: &str) -> String {
    cell(value.get(key))
}

/// `93784` → `1d 2h 3m 4s`.
fn duration(seconds: u64) -> String {
    let (d, h, m, s) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m {s}s")
    } else {
        format!("{h}h {m}m {s}s")
    }
}

fn list(ctx: &Context, args: &ListArgs) -> Outcome {
    let kind = args.kind;
    let mut path = match (kind.scope(), args.all_vhosts) {
        (Scope::Vhost(scoped), false) => scoped.replace("{vhost}", &ctx.vh()),
        _ => kind.path().to_owned(),
    };
    if let Some(sort) = &args.sort {
        path.push_str(&format!("?sort={}&sort_reverse={}", segment(sort), args.sort_reverse));
    }
    let mut rows = match ctx.api.get(&path)? {
        Value::Array(rows) => rows,
        // A paginated answer (`page` given by a proxy or a default).
        Value::Object(mut page) => match page.remove("items") {
            Some(Value::Array(rows)) => rows,
            _ => return Err(Failure::new(EXIT_SOFTWARE, format!("{path}: expected a JSON array"))),
        },
        _ => return Err(Failure::new(EXIT_SOFTWARE, format!("{path}: expected a JSON array"))),
    };
    if kind.scope() == Scope::VhostFiltered && !args.all_vhosts {
        rows.retain(|row| row.get("vhost").and_then(Value::as_str) == Some(ctx.vhost.as_str()));
    }
    let mut columns: Vec<String> = args.columns.iter().chain(&args.columns_flag).cloned().collect();
    let columns_chosen = !columns.is_empty();
    if !columns_chosen {
        columns = kind.default_columns().iter().map(|c| (*c).to_owned()).collect();
        if args.all_vhosts && kind.scope() != Scope::Broker && !columns.iter().any(|c| c == "vhost") {
            columns.insert(0, "vhost".to_owned());
        }
    }
    let listing =
        Listing { format: ctx.format, columns, columns_chosen, headers: !args.no_headers, rows: &rows };
    emit(&listing.render());
    Ok(())
}

fn add_user(ctx: &Context, name: &str, password: Option<String>, tags: &str) -> Outcome {
    ctx.say(&format!("Adding user \"{name}\" ..."));
    let path = format!("/api/users/{}", segment(name));
    match ctx.api.get(&path) {
        // rabbitmqctl exits 70 here; an existing user is the caller's data error.
        Ok(_) => return Err(Failure::data(format!("User \"{name}\" already exists"))),
        Err(failure) if failure.is_missing() => {}
        Err(failure) => return Err(failure),
    }
    let password = password_or_stdin(password)?;
    ctx.api.put(&path, &json!({"password": password, "tags": tags}))
}

fn change_password(ctx: &Context, name: &str, password: Option<String>) -> Outcome {
    ctx.say(&format!("Changing password for user \"{name}\" ..."));
    let path = format!("/api/users/{}", segment(name));
    let user = ctx.api.get(&path).map_err(|f| no_such_user(f, name))?;
    let password = password_or_stdin(password)?;
    ctx.api.put(&path, &json!({"password": password, "tags": tags_text(&user)}))
}

fn set_user_tags(ctx: &Context, name: &str, tags: &[String]) -> Outcome {
    let tags = tags.join(",");
    ctx.say(&format!("Setting tags for user \"{name}\" to [{tags}] ..."));
    let path = format!("/api/users/{}", segment(name));
    let user = ctx.api.get(&path).map_err(|f| no_such_user(f, name))?;
    let body = json!({
        "password_hash": user.get("password_hash").cloned().unwrap_or(Value::String(String::new())),
        "hashing_algorithm": user.get("hashing_algorithm").cloned().unwrap_or(Value::Null),
        "tags": tags,
    });
    ctx.api.put(&path, &body)
}

fn no_such_user(failure: Failure, name: &str) -> Failure {
    if failure.is_missing() {
        Failure { message: format!("User \"{name}\" does not exist"), ..failure }
    } else {
        failure
    }
}

/// A user's tags as the comma-separated text PUT takes (3.10 answers a
/// list, older brokers a string).
fn tags_text(user: &Value) -> String {
    match user.get("tags") {
        Some(Value::Array(tags)) => tags.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
        Some(Value::String(tags)) => tags.clone(),
        _ => String::new(),
    }
}

fn password_or_stdin(password: Option<String>) -> Outcome<String> {
    if let Some(password) = password {
        return Ok(password);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| {
        Failure::new(crate::failure::EXIT_NOINPUT, format!("reading the password from stdin: {e}"))
    })?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn set_policy(ctx: &Context, collection: &str, args: &PolicyArgs) -> Outcome {
    ctx.say(&format!(
        "Setting policy \"{}\" for pattern \"{}\" in vhost \"{}\" ...",
        args.name, args.pattern, ctx.vhost
    ));
    let body = json!({
        "pattern": args.pattern,
        "definition": json_arg(&args.definition, "the policy definition")?,
        "priority": args.priority,
        "apply-to": args.apply_to,
    });
    ctx.api.put(&format!("/api/{collection}/{}/{}", ctx.vh(), segment(&args.name)), &body)
}

fn clear_policy(ctx: &Context, collection: &str, args: &ClearArgs) -> Outcome {
    ctx.say(&format!("Clearing policy \"{}\" on vhost \"{}\" ...", args.name, ctx.vhost));
    forgive(
        ctx.api.delete(&format!("/api/{collection}/{}/{}", ctx.vh(), segment(&args.name)), &[]),
        args.if_exists,
    )
}
