//! Commands on queues, exchanges, bindings, connections, definitions and
//! messages.

use std::io::Read;
use std::path::Path;

use serde_json::{json, Value};

use crate::cli::{BindingArgs, Command, Declare, Delete, DestinationType, GetArgs, PublishArgs};
use crate::commands::{forgive, json_arg, Context};
use crate::failure::{Failure, Outcome, EXIT_CANTCREAT, EXIT_NOINPUT, EXIT_SOFTWARE};
use crate::http::segment;
use crate::output::{emit, Format, Listing};

/// The largest definitions file or payload read from a file or stdin.
const INPUT_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// The columns `get` prints in a table (rabbitmqadmin's).
const GET_COLUMNS: [&str; 7] = [
    "routing_key",
    "exchange",
    "message_count",
    "payload",
    "payload_bytes",
    "payload_encoding",
    "redelivered",
];

/// Runs the commands on objects (everything `commands::run` does not).
pub fn run(ctx: &Context, command: Command) -> Outcome {
    match command {
        Command::Declare { object } => declare(ctx, object),
        Command::Delete { object } => delete(ctx, object),
        Command::PurgeQueue { name } => {
            ctx.say(&format!("Purging queue \"{name}\" in vhost \"{}\" ...", ctx.vhost));
            ctx.api.delete(&format!("/api/queues/{}/{}/contents", ctx.vh(), segment(&name)), &[])
        }
        Command::CloseConnection { name, reason } => {
            ctx.say(&format!("Closing connection \"{name}\", reason: {reason} ..."));
            ctx.api.delete(&format!("/api/connections/{}", segment(&name)), &[("X-Reason", &reason)])
        }
        Command::ExportDefinitions { file } => export_definitions(ctx, file.as_deref()),
        Command::ImportDefinitions { file } => {
            let body = read_input(&file)?;
            json_arg(&body, "the definitions file")?;
            ctx.say(&format!("Importing definitions from \"{}\" ...", file.display()));
            ctx.api.post("/api/definitions", &body).map(drop)
        }
        Command::Publish(args) => publish(ctx, &args),
        Command::Get(args) => get(ctx, &args),
        other => Err(Failure::new(EXIT_SOFTWARE, format!("not an object command: {other:?}"))),
    }
}

fn arguments(text: Option<&str>) -> Outcome<Value> {
    match text {
        Some(text) => json_arg(text, "--arguments"),
        None => Ok(json!({})),
    }
}

fn declare(ctx: &Context, object: Declare) -> Outcome {
    match object {
        Declare::Queue { name, durable, auto_delete, queue_type, arguments: args } => {
            ctx.say(&format!("Declaring queue \"{name}\" in vhost \"{}\" ...", ctx.vhost));
            let mut args = arguments(args.as_deref())?;
            if let (Some(queue_type), Some(map)) = (queue_type, args.as_object_mut()) {
                map.insert("x-queue-type".to_owned(), Value::String(queue_type));
            }
            let body = json!({"durable": durable, "auto_delete": auto_delete, "arguments": args});
            ctx.api.put(&format!("/api/queues/{}/{}", ctx.vh(), segment(&name)), &body)
        }
        Declare::Exchange { name, exchange_type, durable, auto_delete, internal, arguments: args } => {
            ctx.say(&format!(
                "Declaring exchange \"{name}\" of type \"{exchange_type}\" in vhost \"{}\" ...",
                ctx.vhost
            ));
            let body = json!({
                "type": exchange_type, "durable": durable, "auto_delete": auto_delete,
                "internal": internal, "arguments": arguments(args.as_deref())?,
            });
            ctx.api.put(&format!("/api/exchanges/{}/{}", ctx.vh(), segment(&name)), &body)
        }
        Declare::Binding(binding) => {
            ctx.say(&format!(
                "Binding \"{}\" to \"{}\" with routing key \"{}\" in vhost \"{}\" ...",
                binding.source, binding.destination, binding.routing_key, ctx.vhost
            ));
            let arguments = arguments(binding.arguments.as_deref())?;
            let body = json!({"routing_key": binding.routing_key, "arguments": arguments});
            ctx.api.post(&bindings_path(ctx, &binding), &body.to_string()).map(drop)
        }
    }
}

/// `/api/bindings/{vhost}/e/{source}/q|e/{destination}`.
fn bindings_path(ctx: &Context, binding: &BindingArgs) -> String {
    let letter = match binding.destination_type {
        DestinationType::Queue => "q",
        DestinationType::Exchange => "e",
    };
    format!(
        "/api/bindings/{}/e/{}/{letter}/{}",
        ctx.vh(),
        segment(&binding.source),
        segment(&binding.destination)
    )
}

fn delete(ctx: &Context, object: Delete) -> Outcome {
    match object {
        Delete::Queue { name, if_empty, if_unused, if_exists } => {
            ctx.say(&format!("Deleting queue \"{name}\" in vhost \"{}\" ...", ctx.vhost));
            let mut path = format!("/api/queues/{}/{}", ctx.vh(), segment(&name));
            let conditions: Vec<&str> = [(if_empty, "if-empty=true"), (if_unused, "if-unused=true")]
                .iter()
                .filter(|c| c.0)
                .map(|c| c.1)
                .collect();
            if !conditions.is_empty() {
                path.push('?');
                path.push_str(&conditions.join("&"));
            }
            forgive(ctx.api.delete(&path, &[]), if_exists)
        }
        Delete::Exchange { name, if_unused, if_exists } => {
            ctx.say(&format!("Deleting exchange \"{name}\" in vhost \"{}\" ...", ctx.vhost));
            let mut path = format!("/api/exchanges/{}/{}", ctx.vh(), segment(&name));
            if if_unused {
                path.push_str("?if-unused=true");
            }
            forgive(ctx.api.delete(&path, &[]), if_exists)
        }
        Delete::Binding { binding, if_exists } => {
            ctx.say(&format!(
                "Unbinding \"{}\" from \"{}\" with routing key \"{}\" in vhost \"{}\" ...",
                binding.destination, binding.source, binding.routing_key, ctx.vhost
            ));
            forgive(unbind(ctx, &binding), if_exists)
        }
    }
}

/// A binding is deleted by its `properties_key`: find the one with this
/// routing key (and arguments, when given) among the source's bindings to
/// the destination.
fn unbind(ctx: &Context, binding: &BindingArgs) -> Outcome {
    let path = bindings_path(ctx, binding);
    let wanted_arguments = match &binding.arguments {
        Some(text) => Some(json_arg(text, "--arguments")?),
        None => None,
    };
    let existing = ctx.api.get(&path)?;
    let found = existing.as_array().into_iter().flatten().find(|b| {
        b.get("routing_key").and_then(Value::as_str) == Some(binding.routing_key.as_str())
            && wanted_arguments.as_ref().is_none_or(|args| b.get("arguments") == Some(args))
    });
    let Some(key) = found.and_then(|b| b.get("properties_key")).and_then(Value::as_str) else {
        let mut failure = Failure::data(format!(
            "no binding from \"{}\" to \"{}\" with routing key \"{}\" in vhost \"{}\"",
            binding.source, binding.destination, binding.routing_key, ctx.vhost
        ));
        failure.status = Some(404);
        return Err(failure);
    };
    ctx.api.delete(&format!("{path}/{}", segment(key)), &[])
}

fn export_definitions(ctx: &Context, file: Option<&Path>) -> Outcome {
    let text = ctx.api.get_text("/api/definitions")?;
    match file {
        None => emit(&text),
        Some(path) if path == Path::new("-") => emit(&text),
        Some(path) => {
            ctx.say(&format!("Exporting definitions to \"{}\" ...", path.display()));
            std::fs::write(path, text.as_bytes())
                .map_err(|e| Failure::new(EXIT_CANTCREAT, format!("{}: {e}", path.display())))?;
        }
    }
    Ok(())
}

/// The text of FILE, or of stdin for `-`.
fn read_input(file: &Path) -> Outcome<String> {
    let unreadable = |e: std::io::Error| Failure::new(EXIT_NOINPUT, format!("{}: {e}", file.display()));
    let mut text = String::new();
    if file == Path::new("-") {
        std::io::stdin().lock().take(INPUT_BYTES_MAX).read_to_string(&mut text).map_err(unreadable)?;
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(INPUT_BYTES_MAX).read_to_string(&mut text))
            .map_err(unreadable)?;
    }
    Ok(text)
}

fn publish(ctx: &Context, args: &PublishArgs) -> Outcome {
    let payload = match &args.payload {
        Some(payload) => payload.clone(),
        None => read_input(Path::new("-"))?,
    };
    let properties = match &args.properties {
        Some(text) => json_arg(text, "--properties")?,
        None => json!({}),
    };
    let exchange = if args.exchange.is_empty() { "amq.default" } else { args.exchange.as_str() };
    let body = json!({
        "properties": properties,
        "routing_key": args.routing_key,
        "payload": payload,
        "payload_encoding": if args.base64 { "base64" } else { "string" },
    });
    let path = format!("/api/exchanges/{}/{}/publish", ctx.vh(), segment(exchange));
    let answer = ctx.api.post(&path, &body.to_string())?;
    match answer.get("routed").and_then(Value::as_bool) {
        Some(true) => ctx.say("Message published"),
        // Not an error: AMQP accepts unroutable publishes too (rabbitmqadmin says the same).
        Some(false) => ctx.say("Message published but NOT routed"),
        None => return Err(Failure::new(EXIT_SOFTWARE, format!("unexpected answer: {answer}"))),
    }
    Ok(())
}

fn get(ctx: &Context, args: &GetArgs) -> Outcome {
    let mut body = json!({
        "count": args.count,
        "ackmode": args.ackmode.name(),
        "encoding": args.encoding,
    });
    if let Some(truncate) = args.truncate {
        body["truncate"] = json!(truncate);
    }
    let path = format!("/api/queues/{}/{}/get", ctx.vh(), segment(&args.queue));
    let answer = ctx.api.post(&path, &body.to_string())?;
    let Value::Array(messages) = answer else {
        return Err(Failure::new(EXIT_SOFTWARE, format!("unexpected answer: {answer}")));
    };
    let columns = GET_COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    let listing = Listing {
        format: ctx.format,
        columns,
        columns_chosen: ctx.format != Format::Json,
        headers: true,
        rows: &messages,
    };
    emit(&listing.render());
    Ok(())
}
