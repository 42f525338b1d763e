//! A queue's settings from its declare arguments and its policy, resolved
//! key by key as RabbitMQ 3.10 resolves them
//! (`rabbit_amqqueue_process:process_args_policy`, with
//! `rabbit_queue_type_util:args_policy_lookup`):
//!
//! | key | both set |
//! |---|---|
//! | `expires`, `message-ttl`, `max-length`, `max-length-bytes` | the smaller wins |
//! | `dead-letter-exchange`, `dead-letter-routing-key`, `dead-letter-strategy` | the argument wins |
//! | `overflow`, `queue-mode` | the argument wins |
//! | `consumer-timeout`, `delivery-limit` | the smaller wins (RabbitMQ 3.12, quorum queues) |
//! | `max-age` (streams) | the shorter wins (`rabbit_stream_queue`) |
//!
//! A policy applied to a queue with messages acts at once, as RabbitMQ's
//! does: a lower length limit drops (or dead-letters) the head, the next
//! dead-lettering uses the new exchange, an expiry restarts its clock. A
//! new `message-ttl` holds for messages published from then on: RabbitMQ
//! fixes a message's expiry when it is published, so messages already in
//! the queue keep theirs (none, if it had no TTL then).

use serde_json::{Map, Value};

use crate::amqp::field::{FieldTable, FieldValue, ShortStr};

use super::dead_letter::DeadLetterTarget;
use super::discards::DeadLetterStrategy;
use super::limits::{Limits, Overflow};
use super::Queue;

/// `queue-mode` (`x-queue-mode`): recorded only, since every Lepus queue
/// pages its backlog out of memory anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueMode {
    /// `default`.
    #[default]
    Default,
    /// `lazy`.
    Lazy,
}

/// What a queue's policy and operator policy give it, merged (see
/// `crate::routing::policy`), as typed values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySettings {
    /// Which compilation of the vhost's policies this came from (0: none).
    pub version: u64,
    /// `message-ttl`, ms.
    pub message_ttl_ms: Option<u64>,
    /// `expires`, ms.
    pub expires_ms: Option<u64>,
    /// `max-length`.
    pub max_length: Option<u64>,
    /// `max-length-bytes`.
    pub max_length_bytes: Option<u64>,
    /// `overflow`.
    pub overflow: Option<Overflow>,
    /// `dead-letter-exchange`.
    pub dead_letter_exchange: Option<ShortStr>,
    /// `dead-letter-routing-key`.
    pub dead_letter_routing_key: Option<ShortStr>,
    /// `dead-letter-strategy`.
    pub dead_letter_strategy: Option<DeadLetterStrategy>,
    /// `queue-mode`.
    pub queue_mode: Option<QueueMode>,
    /// `consumer-timeout`, ms.
    pub consumer_timeout_ms: Option<u64>,
    /// `delivery-limit`.
    pub delivery_limit: Option<u64>,
    /// `max-age` (streams), ms.
    pub max_age_ms: Option<u64>,
}

impl PolicySettings {
    /// Reads an effective definition (validated when it was set; a value
    /// of the wrong kind counts as absent).
    pub fn from_definition(version: u64, definition: &Map<String, Value>) -> PolicySettings {
        let number = |key: &str| definition.get(key).and_then(Value::as_u64);
        let name = |key: &str| {
            let text = definition.get(key)?.as_str()?;
            ShortStr::from_bytes(bytes::Bytes::copy_from_slice(text.as_bytes())).ok()
        };
        PolicySettings {
            version,
            message_ttl_ms: number("message-ttl"),
            expires_ms: number("expires").filter(|&ms| ms > 0),
            max_length: number("max-length"),
            max_length_bytes: number("max-length-bytes"),
            overflow: definition.get("overflow").and_then(Value::as_str).and_then(|s| overflow(s.as_bytes())),
            dead_letter_exchange: name("dead-letter-exchange"),
            dead_letter_routing_key: name("dead-letter-routing-key"),
            dead_letter_strategy: definition
                .get("dead-letter-strategy")
                .and_then(Value::as_str)
                .and_then(|s| DeadLetterStrategy::parse(s.as_bytes())),
            queue_mode: definition.get("queue-mode").and_then(Value::as_str).and_then(|s| mode(s.as_bytes())),
            consumer_timeout_ms: number("consumer-timeout"),
            delivery_limit: number("delivery-limit"),
            max_age_ms: definition
                .get("max-age")
                .and_then(Value::as_str)
                .and_then(|s| super::arguments::max_age_ms(s.as_bytes())),
        }
    }
}

fn overflow(text: &[u8]) -> Option<Overflow> {
    match text {
        b"drop-head" => Some(Overflow::DropHead),
        b"reject-publish" => Some(Overflow::RejectPublish),
        b"reject-publish-dlx" => Some(Overflow::RejectPublishDlx),
        _ => None,
    }
}

fn mode(text: &[u8]) -> Option<QueueMode> {
    match text {
        b"default" => Some(QueueMode::Default),
        b"lazy" => Some(QueueMode::Lazy),
        _ => None,
    }
}

/// A queue's effective settings.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) message_ttl_ms: Option<u64>,
    pub(super) expires_after_ms: Option<u64>,
    pub(super) limits: Limits,
    pub(super) dead_letter: Option<DeadLetterTarget>,
    pub(super) dead_letter_strategy: DeadLetterStrategy,
    pub(super) queue_mode: QueueMode,
    pub(super) consumer_timeout_ms: Option<u64>,
    pub(super) delivery_limit: Option<u64>,
    pub(super) max_age_ms: Option<u64>,
}

impl Settings {
    /// `arguments` and `policy` combined, key by key (see the module doc).
    pub(super) fn resolve(arguments: &FieldTable, policy: &PolicySettings) -> Settings {
        let argument =
            |key: &[u8]| arguments.get(key).and_then(FieldValue::as_i64).and_then(|v| u64::try_from(v).ok());
        let smaller = |arg: Option<u64>, pol: Option<u64>| match (arg, pol) {
            (Some(a), Some(p)) => Some(a.min(p)),
            (a, p) => a.or(p),
        };
        let from_arguments = Limits::from_arguments(arguments);
        let limits = Limits {
            max_length: smaller(from_arguments.max_length, policy.max_length),
            max_bytes: smaller(from_arguments.max_bytes, policy.max_length_bytes),
            overflow: match arguments.get(b"x-overflow") {
                Some(_) => from_arguments.overflow,
                None => policy.overflow.unwrap_or(Overflow::DropHead),
            },
        };
        let text = |key: &[u8]| match arguments.get(key) {
            Some(FieldValue::LongStr(s)) => {
                Some(ShortStr::from_bytes(bytes::Bytes::copy_from_slice(s.as_bytes())).ok())
            }
            _ => None,
        };
        // Each key on its own: an argument's exchange with a policy's key,
        // or the other way round.
        let exchange = match text(b"x-dead-letter-exchange") {
            Some(arg) => arg,
            None => policy.dead_letter_exchange.clone(),
        };
        let routing_key = match text(b"x-dead-letter-routing-key") {
            Some(arg) => arg,
            None => policy.dead_letter_routing_key.clone(),
        };
        let dead_letter = exchange.map(|exchange| DeadLetterTarget { exchange, routing_key });
        // The argument wins, as for RabbitMQ's quorum queues.
        let dead_letter_strategy =
            match arguments.get(b"x-dead-letter-strategy").and_then(FieldValue::as_bytes) {
                Some(text) => DeadLetterStrategy::parse(text),
                None => policy.dead_letter_strategy,
            }
            .unwrap_or_default();
        let queue_mode = match arguments.get(b"x-queue-mode").and_then(FieldValue::as_bytes) {
            Some(text) => mode(text).unwrap_or_default(),
            None => policy.queue_mode.unwrap_or_default(),
        };
        Settings {
            message_ttl_ms: smaller(argument(b"x-message-ttl"), policy.message_ttl_ms),
            expires_after_ms: smaller(argument(b"x-expires").filter(|&v| v > 0), policy.expires_ms),
            limits,
            dead_letter,
            dead_letter_strategy,
            queue_mode,
            consumer_timeout_ms: smaller(argument(b"x-consumer-timeout"), policy.consumer_timeout_ms),
            delivery_limit: smaller(argument(b"x-delivery-limit"), policy.delivery_limit),
            max_age_ms: smaller(
                match arguments.get(b"x-max-age") {
                    Some(FieldValue::LongStr(s)) => super::arguments::max_age_ms(s.as_bytes()),
                    _ => None,
                },
                policy.max_age_ms,
            ),
        }
    }
}

impl Queue {
    /// Applies the queue's policy (its arguments stay): the new settings
    /// hold at once; a lower length limit drops (or dead-letters) the head
    /// now, and expired heads go. Dead letters wait for the shard
    /// ([`Queue::has_dead_letters`]).
    pub fn apply_policy(&mut self, policy: &PolicySettings) {
        let settings = Settings::resolve(&self.meta.arguments, policy);
        self.policy_version = policy.version;
        self.message_ttl_ms = settings.message_ttl_ms;
        if settings.expires_after_ms.is_some() {
            // RabbitMQ restarts the expiry timer whenever a policy is applied.
            self.last_used_ms = self.clock_ms;
        }
        self.expires_after_ms = settings.expires_after_ms;
        self.dead_letter = settings.dead_letter;
        self.limits = settings.limits;
        self.set_dead_letter_strategy(settings.dead_letter_strategy);
        self.queue_mode = settings.queue_mode;
        self.consumer_timeout_ms = settings.consumer_timeout_ms;
        self.delivery_limit = settings.delivery_limit;
        if let Some(stream) = self.stream.as_mut() {
            stream.max_age_ms = settings.max_age_ms;
        }
        self.drop_expired_head();
        if self.limits.overflow == Overflow::DropHead {
            self.drop_head_over_limit();
        }
    }

    /// The policy version last applied (0: none).
    pub fn policy_version(&self) -> u64 {
        self.policy_version
    }

    /// The effective `consumer-timeout`, ms (the queue's part of what
    /// `ShardCtx::consumer_timeout_ms` resolves for its consumers).
    pub fn consumer_timeout_ms(&self) -> Option<u64> {
        self.consumer_timeout_ms
    }

    /// The effective `delivery-limit` (quorum queues dead-letter past it,
    /// see `quorum`; classic queues have none in RabbitMQ 3.10).
    pub fn delivery_limit(&self) -> Option<u64> {
        self.delivery_limit
    }

    /// The effective `queue-mode`.
    pub fn queue_mode(&self) -> QueueMode {
        self.queue_mode
    }

    /// The effective length limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The effective `message-ttl`, ms.
    pub fn message_ttl_ms(&self) -> Option<u64> {
        self.message_ttl_ms
    }

    /// The effective `expires`, ms.
    pub fn expires_after_ms(&self) -> Option<u64> {
        self.expires_after_ms
    }

    /// Where it dead-letters to.
    pub fn dead_letter_target(&self) -> Option<&DeadLetterTarget> {
        self.dead_letter.as_ref()
    }
}
