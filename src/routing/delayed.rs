//! The `x-delayed-message` exchange's rules (RabbitMQ's delayed message
//! plugin, `rabbitmq-delayed-message-exchange`): which binding table its
//! `x-delayed-type` argument gives it, what a declare must carry, and how
//! long a message's `x-delay` header holds it. Holding and releasing the
//! messages is the shard's (`broker::delayed`).
//!
//! As the plugin: `x-delayed-type` is required and names an exchange type;
//! a message is held when `x-delay` is an integer (or a numeric string, or
//! a float, truncated) in `1..=DELAY_MS_MAX`; absent, zero, negative or past
//! that, it is routed at once. On release, `x-delay` is replaced by its
//! negation, so a consumer can tell the message was delayed and an
//! exchange further on does not hold it again.

use crate::amqp::field::{FieldTable, FieldValue, ShortStr};
use crate::ids::ExchangeKind;

/// The declare argument naming how a delayed exchange routes.
pub const DELAYED_TYPE_ARG: &[u8] = b"x-delayed-type";
/// The message header with the delay in ms.
pub const DELAY_HEADER: &str = "x-delay";
/// The longest delay (ms) that holds a message; a longer one routes at once
/// (the plugin's bound: Erlang's timer limit, 2^32 - 1 ms, about 49.7 days).
pub const DELAY_MS_MAX: u64 = u32::MAX as u64;

/// Why a delayed exchange's `x-delayed-type` is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DelayedTypeError {
    /// Absent or not a long string (406, the plugin's text).
    Missing,
    /// Not an exchange type this broker has (503, RabbitMQ's
    /// `unknown exchange type` text).
    Unknown(String),
    /// `x-delayed-message` itself: the plugin would route through itself
    /// forever; Lepus refuses it (406).
    Nested,
}

impl DelayedTypeError {
    /// The reply text (the plugin's own for a missing type, misspelling
    /// included, since clients may match on it).
    pub fn text(&self) -> String {
        match self {
            DelayedTypeError::Missing => {
                "Invalid argument, 'x-delayed-type' must bean existing exchnage type".into()
            }
            DelayedTypeError::Unknown(name) => format!("unknown exchange type '{name}'"),
            DelayedTypeError::Nested => {
                "Invalid argument, 'x-delayed-type' may not be 'x-delayed-message'".into()
            }
        }
    }
}

/// The type a delayed exchange routes as (its `x-delayed-type`).
pub fn delayed_type(arguments: &FieldTable) -> Result<ExchangeKind, DelayedTypeError> {
    let Some(FieldValue::LongStr(name)) = arguments.get(DELAYED_TYPE_ARG) else {
        return Err(DelayedTypeError::Missing);
    };
    match ExchangeKind::parse(name.as_bytes()) {
        Some(ExchangeKind::DelayedMessage) => Err(DelayedTypeError::Nested),
        Some(kind) => Ok(kind),
        None => Err(DelayedTypeError::Unknown(name.to_string_lossy().into_owned())),
    }
}

/// Checks a declare of an exchange of `kind`: only delayed ones have a rule.
pub fn check_declare(kind: ExchangeKind, arguments: &FieldTable) -> Result<(), DelayedTypeError> {
    if kind == ExchangeKind::DelayedMessage {
        delayed_type(arguments)?;
    }
    Ok(())
}

/// The kind an exchange's binding table is built for: its own, or a
/// delayed exchange's `x-delayed-type` (checked at declare; direct if not).
pub fn table_kind(kind: ExchangeKind, arguments: &FieldTable) -> ExchangeKind {
    match kind {
        ExchangeKind::DelayedMessage => delayed_type(arguments).unwrap_or(ExchangeKind::Direct),
        other => other,
    }
}

/// [`table_kind`] for a stored declare, checked as a client's is (the text
/// of the refusal if it fails).
pub fn checked_table_kind(kind: ExchangeKind, arguments: &FieldTable) -> Result<ExchangeKind, String> {
    check_declare(kind, arguments).map_err(|e| e.text())?;
    Ok(table_kind(kind, arguments))
}

/// How long a message with these headers is held (ms), `None` if it is
/// routed at once.
pub fn delay_ms(headers: &FieldTable) -> Option<u64> {
    let value = headers.get(DELAY_HEADER.as_bytes())?;
    let delay: i128 = match value {
        _ if value.as_i64().is_some() => value.as_i64().map(i128::from)?,
        // Floats are truncated, as the plugin does (NaN and infinities
        // saturate, then fall outside the range).
        FieldValue::F32(v) => *v as i128,
        FieldValue::F64(v) => *v as i128,
        FieldValue::Decimal { scale, value } => i128::from(*value) / 10i128.checked_pow(u32::from(*scale))?,
        // The plugin reads a string as an integer (and fails the publish
        // when it is not one); Lepus routes such a message at once.
        FieldValue::LongStr(s) => std::str::from_utf8(s.as_bytes()).ok()?.trim().parse::<i128>().ok()?,
        _ => return None,
    };
    u64::try_from(delay).ok().filter(|&d| d > 0 && d <= DELAY_MS_MAX)
}

/// The headers a released message carries: `x-delay` negated (as an `I`
/// when it fits, else an `l`).
pub fn released_headers(headers: &mut FieldTable, delay_ms: u64) {
    let negated = -i64::try_from(delay_ms).unwrap_or(i64::MAX);
    let value = i32::try_from(negated).map_or(FieldValue::I64(negated), FieldValue::I32);
    headers.insert(ShortStr::from_static(DELAY_HEADER), value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::field::LongStr;

    fn with(key: &str, value: FieldValue) -> FieldTable {
        let mut t = FieldTable::new();
        t.insert(ShortStr::copy_from_str(key), value);
        t
    }

    #[test]
    fn delayed_type_is_required_and_must_exist() {
        assert_eq!(delayed_type(&FieldTable::new()), Err(DelayedTypeError::Missing));
        assert_eq!(delayed_type(&with("x-delayed-type", FieldValue::I32(1))), Err(DelayedTypeError::Missing));
        let named = |n: &str| with("x-delayed-type", FieldValue::LongStr(LongStr::copy_from_str(n)));
        assert_eq!(delayed_type(&named("topic")), Ok(ExchangeKind::Topic));
        assert_eq!(delayed_type(&named("nope")), Err(DelayedTypeError::Unknown("nope".into())));
        assert_eq!(delayed_type(&named("x-delayed-message")), Err(DelayedTypeError::Nested));
        assert_eq!(table_kind(ExchangeKind::DelayedMessage, &named("fanout")), ExchangeKind::Fanout);
        assert_eq!(table_kind(ExchangeKind::Headers, &FieldTable::new()), ExchangeKind::Headers);
    }

    #[test]
    fn delays_in_range_hold_others_route_at_once() {
        let d = |v: FieldValue| delay_ms(&with("x-delay", v));
        assert_eq!(d(FieldValue::I32(1500)), Some(1500));
        assert_eq!(d(FieldValue::I64(-5)), None);
        assert_eq!(d(FieldValue::I32(0)), None);
        assert_eq!(d(FieldValue::I64(DELAY_MS_MAX as i64)), Some(DELAY_MS_MAX));
        assert_eq!(d(FieldValue::I64(DELAY_MS_MAX as i64 + 1)), None);
        assert_eq!(d(FieldValue::F64(20.9)), Some(20));
        assert_eq!(d(FieldValue::LongStr(LongStr::copy_from_str("250"))), Some(250));
        assert_eq!(d(FieldValue::LongStr(LongStr::copy_from_str("soon"))), None);
        assert_eq!(d(FieldValue::Decimal { scale: 1, value: 105 }), Some(10));
        assert_eq!(d(FieldValue::Bool(true)), None);
        assert_eq!(delay_ms(&FieldTable::new()), None);
    }

    #[test]
    fn released_messages_carry_the_negated_delay() {
        let mut h = with("x-delay", FieldValue::I32(300));
        released_headers(&mut h, 300);
        assert_eq!(h.get(b"x-delay"), Some(&FieldValue::I32(-300)));
        released_headers(&mut h, DELAY_MS_MAX);
        assert_eq!(h.get(b"x-delay"), Some(&FieldValue::I64(-(DELAY_MS_MAX as i64))));
    }
}
