//! The exchange and queues the workers set up, and the arguments they
//! declare and consume with: `--queue-args` in PerfTest's format, what
//! `--quorum-queue` and `--stream-queue` add, `--stream-consumer-offset`.

use lepus::amqp::field::{FieldTable, FieldValue, LongStr, ShortStr};
use lepus::amqp::properties::BasicProperties;
use lepus::amqp::spec::{self, Method};

use crate::conn::{check_short, short, Conn, Result};

/// A stream consumer's prefetch when -q is not given (PerfTest's).
pub const STREAM_PREFETCH_DEFAULT: u16 = 200;
/// `x-max-length-bytes` of a `--stream-queue` (PerfTest's 20 GB).
const STREAM_MAX_LENGTH_BYTES: i64 = 20_000_000_000;
/// `x-stream-max-segment-size-bytes` of a `--stream-queue` (PerfTest's 500 MB).
const STREAM_SEGMENT_BYTES: i64 = 500_000_000;

/// The queue type the command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    /// Whatever --queue-args say (classic by default).
    Given,
    /// --quorum-queue.
    Quorum,
    /// --stream-queue.
    Stream,
}

/// Exchange and queue setup shared by all workers.
#[derive(Debug)]
pub struct Topology {
    pub exchange: String,
    pub exchange_type: String,
    pub routing_key: Option<String>,
    pub predeclared: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    /// Non-matching patterns bound to each queue besides its routing key.
    pub extra_bindings: u32,
    /// queue.declare arguments (--queue-args, --quorum-queue, --stream-queue).
    pub queue_arguments: FieldTable,
    /// basic.consume arguments (--stream-consumer-offset).
    pub consumer_arguments: FieldTable,
}

/// The `i`-th pattern `--extra-bindings` adds for a queue bound with `key`:
/// never matches a key that has no word starting with `nomatch`.
pub fn extra_binding(key: &str, i: u32) -> String {
    let w = key.split('.').next().unwrap_or("");
    match i % 5 {
        0 => format!("{w}.nomatch{i}.*"),
        1 => format!("{w}.*.nomatch{i}"),
        2 => format!("*.nomatch{i}.#"),
        3 => format!("#.nomatch{i}"),
        _ => format!("nomatch{i}.#"),
    }
}

impl Topology {
    pub fn routing_key_for<'a>(&'a self, queue: &'a str) -> &'a str {
        self.routing_key.as_deref().unwrap_or(queue)
    }

    /// Declares the exchange unless it is the default one, an `amq.*` one, or predeclared.
    pub fn declare_exchange(&self, conn: &mut Conn) -> Result<()> {
        if self.predeclared || self.exchange.is_empty() || self.exchange.starts_with("amq.") {
            return Ok(());
        }
        conn.rpc(Method::ExchangeDeclare(spec::ExchangeDeclare {
            exchange: short(&self.exchange),
            kind: short(&self.exchange_type),
            passive: false,
            durable: false,
            auto_delete: false,
            internal: false,
            no_wait: false,
            arguments: Default::default(),
        }))?;
        Ok(())
    }

    /// Declares `queue` and binds it to the exchange (unless predeclared).
    pub fn declare_queue(&self, conn: &mut Conn, queue: &str) -> Result<()> {
        if self.predeclared {
            return Ok(());
        }
        conn.rpc(Method::QueueDeclare(spec::QueueDeclare {
            queue: short(queue),
            passive: false,
            durable: self.durable,
            exclusive: self.exclusive,
            auto_delete: self.auto_delete,
            no_wait: false,
            arguments: self.queue_arguments.clone(),
        }))?;
        if !self.exchange.is_empty() {
            let key = self.routing_key_for(queue);
            let extra = (0..self.extra_bindings).map(|i| extra_binding(key, i));
            for k in std::iter::once(key.to_owned()).chain(extra) {
                check_short("binding key", &k)?;
                conn.rpc(Method::QueueBind(spec::QueueBind {
                    queue: short(queue),
                    exchange: short(&self.exchange),
                    routing_key: short(&k),
                    no_wait: false,
                    arguments: Default::default(),
                }))?;
            }
        }
        Ok(())
    }
}

/// The queue.declare arguments: each `--queue-args` list in order (a later
/// key wins), then what `kind` sets.
pub fn queue_arguments(lists: &[String], kind: QueueKind) -> Result<FieldTable> {
    let mut table = FieldTable::new();
    for list in lists {
        for pair in list.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            check_short("queue argument", key)?;
            table.insert(short(key), perftest_value(key, value));
        }
    }
    let text = |s: &str| FieldValue::LongStr(LongStr::copy_from_str(s));
    match kind {
        QueueKind::Given => {}
        QueueKind::Quorum => table.insert(short("x-queue-type"), text("quorum")),
        QueueKind::Stream => {
            table.insert(short("x-queue-type"), text("stream"));
            table.insert(short("x-max-length-bytes"), FieldValue::I64(STREAM_MAX_LENGTH_BYTES));
            table.insert(short("x-stream-max-segment-size-bytes"), FieldValue::I64(STREAM_SEGMENT_BYTES));
        }
    }
    Ok(table)
}

/// The publishes' properties from `--message-properties` lists as PerfTest
/// takes them (`key=value` pairs separated by commas): the AMQP property
/// names (`content_type`, `content_encoding`, `delivery_mode`, `priority`,
/// `correlation_id`, `reply_to`, `expiration`, `message_id`, `timestamp`,
/// `type`, `user_id`, `app_id`, `cluster_id`) set that property; any other
/// key is a header, its value converted as a `--queue-args` value (so
/// `x-delay=60000` is a long). `persistent` (`-f persistent`) sets
/// delivery mode 2 unless a `delivery_mode` is given.
pub fn message_properties(lists: &[String], persistent: bool) -> Result<BasicProperties> {
    let mut p = BasicProperties { delivery_mode: persistent.then_some(2), ..BasicProperties::default() };
    let mut headers = FieldTable::new();
    for list in lists {
        for pair in list.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let text = || -> Result<Option<ShortStr>> {
                check_short("message property", value)?;
                Ok(Some(short(value)))
            };
            let number =
                |what: &str| value.parse::<u64>().map_err(|_| format!("{what} must be a number: {value:?}"));
            match key {
                "content_type" => p.content_type = text()?,
                "content_encoding" => p.content_encoding = text()?,
                "delivery_mode" => {
                    p.delivery_mode = Some(u8::try_from(number(key)?).map_err(|e| e.to_string())?)
                }
                "priority" => p.priority = Some(u8::try_from(number(key)?).map_err(|e| e.to_string())?),
                "correlation_id" => p.correlation_id = text()?,
                "reply_to" => p.reply_to = text()?,
                "expiration" => p.expiration = text()?,
                "message_id" => p.message_id = text()?,
                "timestamp" => p.timestamp = Some(number(key)?),
                "type" => p.kind = text()?,
                "user_id" => p.user_id = text()?,
                "app_id" => p.app_id = text()?,
                "cluster_id" => p.cluster_id = text()?,
                _ => {
                    check_short("message header", key)?;
                    headers.insert(short(key), perftest_value(key, value));
                }
            }
        }
    }
    if !headers.is_empty() {
        p.headers = Some(headers);
    }
    Ok(p)
}

/// A `--queue-args` value as PerfTest converts it: `true`/`false` a boolean,
/// an integer a long, anything else a string; `x-dead-letter-exchange=amq.default`
/// is the default exchange (""), `x-single-active-consumer` always a boolean.
fn perftest_value(key: &str, value: &str) -> FieldValue {
    if key == "x-single-active-consumer" {
        return FieldValue::Bool(value == "true");
    }
    if key == "x-dead-letter-exchange" && value == "amq.default" {
        return FieldValue::LongStr(LongStr::copy_from_str(""));
    }
    match value {
        "true" => FieldValue::Bool(true),
        "false" => FieldValue::Bool(false),
        _ => match value.parse::<i64>() {
            Ok(n) => FieldValue::I64(n),
            Err(_) => FieldValue::LongStr(LongStr::copy_from_str(value)),
        },
    }
}

/// The basic.consume arguments: `x-stream-offset` from
/// `--stream-consumer-offset` (`first`, `last`, `next`, any case, as a
/// string; an offset as a long). PerfTest also takes an ISO 8601 time,
/// which lepus-perf does not.
pub fn consumer_arguments(stream_offset: Option<&str>) -> Result<FieldTable> {
    let mut table = FieldTable::new();
    let Some(text) = stream_offset else {
        return Ok(table);
    };
    let lower = text.to_ascii_lowercase();
    let value = match lower.as_str() {
        "first" | "last" | "next" => FieldValue::LongStr(LongStr::copy_from_str(&lower)),
        _ => match text.parse::<u64>().ok().and_then(|n| i64::try_from(n).ok()) {
            Some(n) => FieldValue::I64(n),
            None => return Err(format!("'{text}' is not a valid stream offset value").into()),
        },
    };
    table.insert(ShortStr::from_static("x-stream-offset"), value);
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_args_convert_as_perftest_does() {
        let lists =
            ["x-max-length=10,x-queue-type=quorum".to_owned(), "x-overflow=reject-publish,x-x=".to_owned()];
        let t = queue_arguments(&lists, QueueKind::Given).expect("parsed");
        assert_eq!(t.get(b"x-max-length"), Some(&FieldValue::I64(10)));
        assert_eq!(t.get(b"x-queue-type").and_then(FieldValue::as_bytes), Some(&b"quorum"[..]));
        assert_eq!(t.get(b"x-overflow").and_then(FieldValue::as_bytes), Some(&b"reject-publish"[..]));
        assert_eq!(t.get(b"x-x").and_then(FieldValue::as_bytes), Some(&b""[..]));
        let t = queue_arguments(&[], QueueKind::Stream).expect("parsed");
        assert_eq!(t.get(b"x-max-length-bytes"), Some(&FieldValue::I64(STREAM_MAX_LENGTH_BYTES)));
        let sac =
            queue_arguments(&["x-single-active-consumer=yes".to_owned()], QueueKind::Given).expect("ok");
        assert_eq!(sac.get(b"x-single-active-consumer"), Some(&FieldValue::Bool(false)));
    }

    #[test]
    fn message_properties_set_properties_and_other_keys_are_headers() {
        let lists = ["priority=5,x-delay=60000".to_owned(), "message_id=m1,tenant=a".to_owned()];
        let p = message_properties(&lists, true).expect("parsed");
        assert_eq!((p.priority, p.delivery_mode), (Some(5), Some(2)));
        assert_eq!(p.message_id.as_ref().map(|m| m.as_bytes().to_vec()), Some(b"m1".to_vec()));
        let headers = p.headers.expect("headers");
        assert_eq!(headers.get(b"x-delay"), Some(&FieldValue::I64(60_000)));
        assert_eq!(headers.get(b"tenant").and_then(FieldValue::as_bytes), Some(&b"a"[..]));
        let p = message_properties(&["delivery_mode=1".to_owned()], true).expect("parsed");
        assert_eq!((p.delivery_mode, p.headers.is_none()), (Some(1), true));
        assert!(message_properties(&["priority=high".to_owned()], false).is_err());
    }

    #[test]
    fn stream_offsets() {
        let offset = |s| consumer_arguments(Some(s)).map(|t| t.get(b"x-stream-offset").cloned());
        assert_eq!(
            offset("FIRST").ok().flatten().as_ref().and_then(FieldValue::as_bytes),
            Some(&b"first"[..])
        );
        assert_eq!(offset("42").ok().flatten(), Some(FieldValue::I64(42)));
        assert!(offset("soon").is_err());
        assert!(consumer_arguments(None).is_ok_and(|t| t.is_empty()));
    }
}
