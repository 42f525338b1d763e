//! Headers-exchange matching: `x-match` parsing and the per-binding match.
//!
//! # What it owns
//! Pure functions only: [`parse_x_match`] validates a binding's arguments
//! (the 406 check RabbitMQ does in `validate_binding`) and [`headers_match`]
//! decides whether one binding matches one message. The list of bindings is
//! owned by [`super::table::BindingTable`], which evaluates them one by one
//! — like RabbitMQ, a headers exchange has no index: every binding is a
//! conjunction/disjunction over arbitrary keys and typed values, and real
//! deployments have few headers bindings per exchange.
//!
//! # Semantics (RabbitMQ 4.x `rabbit_exchange_type_headers.erl`,
//! `mc_amqpl.erl` `routing_headers/2`)
//! * `x-match` is `all` (the default when absent), `any`, `all-with-x` or
//!   `any-with-x`, and must be a long string; anything else is refused at
//!   bind time with 406 PRECONDITION_FAILED.
//! * The binding argument `x-match` is never a match condition. With `all`
//!   and `any`, every binding argument whose key starts with `x-` is ignored
//!   too; with the `-with-x` variants they are conditions like any other.
//! * `all` with no condition left matches every message (even one without
//!   headers); `any` with no condition matches none.
//! * A condition of type void matches when the message has that header, with
//!   any value (presence test).
//! * Otherwise the message header must exist and its value equal the
//!   binding's, compared the way Erlang's `=:=` compares the decoded terms —
//!   the AMQP type tag itself is *not* compared at the top level:
//!   - all integer types compare by numeric value (`I8(1)` = `I64(1)`),
//!   - `F32`/`F64` compare as the same 64-bit float (`F32(1.5)` = `F64(1.5)`,
//!     but `F32(0.1)` ≠ `F64(0.1)`), and a float never equals an integer,
//!   - long strings and byte arrays compare by bytes (`S"a"` = `x"a"`),
//!   - bool, decimal (scale and value, no normalisation) compare exactly,
//!   - arrays and tables compare element-wise *with* their nested type tags,
//!     in order; an empty array equals an empty table (both are `[]`),
//!   - a message header of type void never equals a non-void value,
//!   - a message header of type timestamp is compared as its value × 1000
//!     (RabbitMQ 4.x converts it to milliseconds in `routing_headers/2`),
//!     while the binding's value is taken as is; so a timestamp condition
//!     only matches a message timestamp of a thousandth of its value.
//! * Message headers with the same key several times: the last one counts
//!   (RabbitMQ folds them into a map). Binding arguments are evaluated all.

use std::fmt::{self, Write as _};

use crate::amqp::field::{FieldTable, FieldValue};

/// Binding argument naming the match mode.
pub const X_MATCH: &[u8] = b"x-match";

/// Prefix of the header keys that `all`/`any` bindings leave out.
pub const X_PREFIX: &[u8] = b"x-";

/// AMQP reply code RabbitMQ closes the channel with for a refused binding.
pub const PRECONDITION_FAILED: u16 = 406;

/// A binding RabbitMQ would refuse. Recoverable: the caller refuses the
/// bind and closes the *channel* with [`BindError::reply_code`] (406
/// PRECONDITION_FAILED) and reply text `"PRECONDITION_FAILED - {error}"`, as
/// RabbitMQ does; the connection and other bindings are unaffected. The
/// `Display` text is RabbitMQ's wording.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindError {
    /// `x-match` is a long string but not one of the four modes.
    InvalidXMatchValue { value: Vec<u8> },
    /// `x-match` is not a long string. `value` is rendered as RabbitMQ
    /// renders the decoded term.
    InvalidXMatchType { type_name: &'static str, value: String },
    /// Consistent-hash exchange: the binding key is not an integer.
    WeightNotInteger { key: Vec<u8> },
    /// Consistent-hash exchange: the binding key is 0 or negative.
    WeightNotPositive,
    /// Consistent-hash exchange: its ring has as many destinations as it
    /// may have (not a RabbitMQ limit).
    RingFull { members_max: usize },
}

impl BindError {
    /// Always 406 PRECONDITION_FAILED.
    pub fn reply_code(&self) -> u16 {
        PRECONDITION_FAILED
    }
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::InvalidXMatchValue { value } => write!(
                f,
                "Invalid x-match field value {}; expected all, any, all-with-x, or any-with-x",
                erl_binary(value)
            ),
            BindError::InvalidXMatchType { type_name, value } => {
                write!(f, "Invalid x-match field type {type_name} (value {value}); expected longstr")
            }
            BindError::WeightNotInteger { key } => {
                write!(f, "The binding key must be an integer: {}", erl_binary(key))
            }
            BindError::WeightNotPositive => f.write_str("The binding key must be greater than 0"),
            BindError::RingFull { members_max } => {
                write!(f, "a consistent hash exchange may have at most {members_max} destinations")
            }
        }
    }
}

impl std::error::Error for BindError {}

/// How a headers binding combines its conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XMatch {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

impl XMatch {
    pub fn as_str(&self) -> &'static str {
        match self {
            XMatch::All => "all",
            XMatch::Any => "any",
            XMatch::AllWithX => "all-with-x",
            XMatch::AnyWithX => "any-with-x",
        }
    }

    fn requires_all(self) -> bool {
        matches!(self, XMatch::All | XMatch::AllWithX)
    }

    fn with_x(self) -> bool {
        matches!(self, XMatch::AllWithX | XMatch::AnyWithX)
    }
}

/// Reads and validates `x-match` in a headers binding's arguments.
/// Absent means `all`. The error message is RabbitMQ's.
pub fn parse_x_match(args: &FieldTable) -> Result<XMatch, BindError> {
    // First occurrence, like rabbit_misc:table_lookup on the sorted args.
    let Some((_, value)) = args.iter().find(|(k, _)| k.as_bytes() == X_MATCH) else {
        return Ok(XMatch::All);
    };
    match value {
        FieldValue::LongStr(s) => match s.as_bytes() {
            b"all" => Ok(XMatch::All),
            b"any" => Ok(XMatch::Any),
            b"all-with-x" => Ok(XMatch::AllWithX),
            b"any-with-x" => Ok(XMatch::AnyWithX),
            other => Err(BindError::InvalidXMatchValue { value: other.to_vec() }),
        },
        other => Err(BindError::InvalidXMatchType { type_name: other.type_name(), value: erl_value(other) }),
    }
}

/// Does a headers binding with arguments `binding_args` and mode `x_match`
/// match a message with `message_headers`? No allocation.
pub fn headers_match(
    binding_args: &FieldTable,
    x_match: XMatch,
    message_headers: Option<&FieldTable>,
) -> bool {
    let all = x_match.requires_all();
    let with_x = x_match.with_x();
    for (key, expected) in binding_args.iter() {
        let key = key.as_bytes();
        if key == X_MATCH || (!with_x && key.starts_with(X_PREFIX)) {
            continue;
        }
        let found = message_headers.and_then(|h| last_value(h, key));
        let ok = match (expected, found) {
            (_, None) => false,
            (FieldValue::Void, Some(_)) => true,
            (expected, Some(actual)) => routing_value_eq(expected, actual),
        };
        if ok != all {
            // `all` and one failed, or `any` and one held.
            return ok;
        }
    }
    all
}

/// The value of the last header named `key`.
fn last_value<'a>(headers: &'a FieldTable, key: &[u8]) -> Option<&'a FieldValue> {
    let mut found = None;
    for (k, v) in headers.iter() {
        if k.as_bytes() == key {
            found = Some(v);
        }
    }
    found
}

/// A field value as the Erlang term RabbitMQ compares (type tag dropped).
#[derive(Debug, PartialEq)]
enum Term<'a> {
    Bool(bool),
    Int(i128),
    /// IEEE bits of the value widened to f64 (Erlang floats are doubles;
    /// `=:=` distinguishes 0.0 from -0.0).
    Float(u64),
    Decimal(u8, u32),
    Binary(&'a [u8]),
    Array(&'a [FieldValue]),
    Table(&'a FieldTable),
    Undefined,
}

fn term(v: &FieldValue, timestamp_factor: i128) -> Term<'_> {
    match v {
        FieldValue::Bool(b) => Term::Bool(*b),
        FieldValue::I8(n) => Term::Int((*n).into()),
        FieldValue::U8(n) => Term::Int((*n).into()),
        FieldValue::I16(n) => Term::Int((*n).into()),
        FieldValue::U16(n) => Term::Int((*n).into()),
        FieldValue::I32(n) => Term::Int((*n).into()),
        FieldValue::U32(n) => Term::Int((*n).into()),
        FieldValue::I64(n) => Term::Int((*n).into()),
        FieldValue::Timestamp(t) => Term::Int(i128::from(*t) * timestamp_factor),
        FieldValue::F32(x) => Term::Float(f64::from(*x).to_bits()),
        FieldValue::F64(x) => Term::Float(x.to_bits()),
        FieldValue::Decimal { scale, value } => Term::Decimal(*scale, *value),
        FieldValue::LongStr(s) | FieldValue::ByteArray(s) => Term::Binary(s.as_bytes()),
        FieldValue::Array(a) => Term::Array(a),
        FieldValue::Table(t) => Term::Table(t),
        FieldValue::Void => Term::Undefined,
    }
}

/// RabbitMQ 4.x hands the headers exchange message timestamps in
/// milliseconds (`mc_amqpl:routing_value/2`), binding values unchanged.
const MESSAGE_TIMESTAMP_FACTOR: i128 = 1000;

/// `binding =:= routing_value(message)` as in RabbitMQ (see module docs).
fn routing_value_eq(binding: &FieldValue, message: &FieldValue) -> bool {
    match (term(binding, 1), term(message, MESSAGE_TIMESTAMP_FACTOR)) {
        // Nested values keep their type tags: compare them exactly.
        (Term::Array(a), Term::Array(b)) => a == b,
        (Term::Table(a), Term::Table(b)) => a == b,
        (Term::Array(a), Term::Table(t)) | (Term::Table(t), Term::Array(a)) => a.is_empty() && t.is_empty(),
        (a, b) => a == b,
    }
}

/// Best-effort rendering of a value the way Erlang's `~tp` prints the
/// decoded term (for error messages only).
fn erl_value(v: &FieldValue) -> String {
    let mut s = String::new();
    write_erl_value(&mut s, v);
    s
}

fn write_erl_value(out: &mut String, v: &FieldValue) {
    // Writing to a String cannot fail.
    let _ = match v {
        FieldValue::Bool(b) => write!(out, "{b}"),
        FieldValue::I8(n) => write!(out, "{n}"),
        FieldValue::U8(n) => write!(out, "{n}"),
        FieldValue::I16(n) => write!(out, "{n}"),
        FieldValue::U16(n) => write!(out, "{n}"),
        FieldValue::I32(n) => write!(out, "{n}"),
        FieldValue::U32(n) => write!(out, "{n}"),
        FieldValue::I64(n) => write!(out, "{n}"),
        FieldValue::Timestamp(n) => write!(out, "{n}"),
        FieldValue::F32(x) => write!(out, "{:?}", f64::from(*x)),
        FieldValue::F64(x) => write!(out, "{x:?}"),
        FieldValue::Decimal { scale, value } => write!(out, "{{{scale},{value}}}"),
        FieldValue::LongStr(b) | FieldValue::ByteArray(b) => {
            out.push_str(&erl_binary(b.as_bytes()));
            Ok(())
        }
        FieldValue::Void => write!(out, "undefined"),
        FieldValue::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{{{},", item.type_name());
                write_erl_value(out, item);
                out.push('}');
            }
            out.push(']');
            Ok(())
        }
        FieldValue::Table(t) => {
            out.push('[');
            for (i, (k, item)) in t.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{{{},{},", erl_binary(k.as_bytes()), item.type_name());
                write_erl_value(out, item);
                out.push('}');
            }
            out.push(']');
            Ok(())
        }
    };
}

/// `<<"text">>`, `<<"tëxt"/utf8>>` or `<<1,2,3>>`, as `~tp` prints binaries.
fn erl_binary(b: &[u8]) -> String {
    let text = std::str::from_utf8(b).ok().filter(|s| !s.chars().any(char::is_control));
    match text {
        Some(s) => {
            let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
            let suffix = if s.is_ascii() { "" } else { "/utf8" };
            format!("<<\"{escaped}\"{suffix}>>")
        }
        None => {
            let bytes: Vec<String> = b.iter().map(u8::to_string).collect();
            format!("<<{}>>", bytes.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::field::{LongStr, ShortStr};

    fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
        let mut t = FieldTable::new();
        for (k, v) in entries {
            t.insert(ShortStr::copy_from_str(k), v.clone());
        }
        t
    }

    fn long(v: &str) -> LongStr {
        LongStr::copy_from_str(v)
    }

    fn s(v: &str) -> FieldValue {
        FieldValue::LongStr(long(v))
    }

    fn matches(args: &[(&str, FieldValue)], msg: Option<&[(&str, FieldValue)]>) -> bool {
        let args = table(args);
        let x = parse_x_match(&args).expect("valid x-match");
        let msg = msg.map(table);
        headers_match(&args, x, msg.as_ref())
    }

    #[test]
    fn x_match_values_and_errors() {
        // rabbit_exchange_type_headers.erl validate_binding/2.
        assert_eq!(parse_x_match(&table(&[])), Ok(XMatch::All));
        for (v, x) in [
            ("all", XMatch::All),
            ("any", XMatch::Any),
            ("all-with-x", XMatch::AllWithX),
            ("any-with-x", XMatch::AnyWithX),
        ] {
            assert_eq!(parse_x_match(&table(&[("x-match", s(v))])), Ok(x));
            assert_eq!(x.as_str(), v);
        }
        let e = parse_x_match(&table(&[("x-match", s("ALL"))])).expect_err("case-sensitive");
        assert_eq!(e.reply_code(), 406);
        assert_eq!(
            e.to_string(),
            "Invalid x-match field value <<\"ALL\">>; expected all, any, all-with-x, or any-with-x"
        );
        let e = parse_x_match(&table(&[("x-match", FieldValue::I32(1))])).expect_err("type");
        assert_eq!(e.to_string(), "Invalid x-match field type signedint (value 1); expected longstr");
        let bin = FieldValue::ByteArray(long("all"));
        let e = parse_x_match(&table(&[("x-match", bin)])).expect_err("bytes are not longstr");
        assert!(e.to_string().starts_with("Invalid x-match field type binary (value <<\"all\">>)"));
    }

    #[test]
    fn all_and_any_basics() {
        let args = [("x-match", s("all")), ("a", s("1")), ("b", s("2"))];
        assert!(matches(&args, Some(&[("b", s("2")), ("a", s("1")), ("c", s("3"))])));
        assert!(!matches(&args, Some(&[("a", s("1"))])));
        assert!(!matches(&args, Some(&[("a", s("1")), ("b", s("3"))])));
        assert!(!matches(&args, None));
        let args = [("x-match", s("any")), ("a", s("1")), ("b", s("2"))];
        assert!(matches(&args, Some(&[("b", s("2"))])));
        assert!(!matches(&args, Some(&[("a", s("2")), ("b", s("1"))])));
        assert!(!matches(&args, None));
        // No x-match means all.
        assert!(matches(&[("a", s("1"))], Some(&[("a", s("1"))])));
    }

    #[test]
    fn empty_condition_sets() {
        // all over nothing holds, any over nothing fails, with or without headers.
        assert!(matches(&[], None));
        assert!(matches(&[("x-match", s("all")), ("x-foo", s("1"))], None));
        assert!(!matches(&[("x-match", s("any"))], Some(&[("a", s("1"))])));
        assert!(!matches(&[("x-match", s("any")), ("x-foo", s("1"))], None));
    }

    #[test]
    fn x_prefixed_keys_only_count_with_x_variants() {
        let msg: &[(&str, FieldValue)] = &[("x-tenant", s("t1")), ("a", s("1"))];
        // all/any ignore x- arguments (so x-tenant=t2 does not block).
        assert!(matches(&[("x-tenant", s("t2")), ("a", s("1"))], Some(msg)));
        assert!(!matches(&[("x-match", s("any")), ("x-tenant", s("t1"))], Some(msg)));
        // -with-x variants test them, against x- message headers too.
        assert!(!matches(&[("x-match", s("all-with-x")), ("x-tenant", s("t2")), ("a", s("1"))], Some(msg)));
        assert!(matches(&[("x-match", s("all-with-x")), ("x-tenant", s("t1")), ("a", s("1"))], Some(msg)));
        assert!(matches(&[("x-match", s("any-with-x")), ("x-tenant", s("t1")), ("a", s("9"))], Some(msg)));
        // x-match itself is never a condition, and the prefix is case-sensitive.
        assert!(matches(&[("x-match", s("all-with-x"))], None));
        assert!(!matches(&[("X-tenant", s("t1"))], Some(msg)));
    }

    #[test]
    fn void_means_presence() {
        let args = [("flag", FieldValue::Void)];
        assert!(matches(&args, Some(&[("flag", s("anything"))])));
        assert!(matches(&args, Some(&[("flag", FieldValue::Void)])));
        assert!(!matches(&args, Some(&[("other", s("x"))])));
        assert!(!matches(&args, None));
        // A void message header does not equal a valued condition.
        assert!(!matches(&[("flag", s(""))], Some(&[("flag", FieldValue::Void)])));
    }

    #[test]
    fn comparison_drops_type_tags_like_erlang() {
        use FieldValue::*;
        let eq = |b: FieldValue, m: FieldValue| matches(&[("k", b)], Some(&[("k", m)]));
        assert!(eq(I32(7), I64(7)));
        assert!(eq(U8(7), I16(7)));
        assert!(eq(U32(u32::MAX), I64(i64::from(u32::MAX))));
        assert!(!eq(I32(-1), U32(u32::MAX)));
        assert!(!eq(I32(1), F64(1.0)));
        assert!(!eq(Bool(true), I8(1)));
        assert!(eq(F32(1.5), F64(1.5)));
        assert!(!eq(F32(0.1), F64(0.1)));
        assert!(!eq(F64(0.0), F64(-0.0)));
        assert!(eq(s("abc"), ByteArray(long("abc"))));
        assert!(!eq(s("abc"), s("ABC")));
        assert!(eq(Decimal { scale: 2, value: 100 }, Decimal { scale: 2, value: 100 }));
        assert!(!eq(Decimal { scale: 2, value: 100 }, Decimal { scale: 1, value: 10 }));
        // Nested values keep their tags.
        assert!(eq(Array(vec![I32(1), s("a")]), Array(vec![I32(1), s("a")])));
        assert!(!eq(Array(vec![I32(1)]), Array(vec![I64(1)])));
        assert!(eq(Array(vec![]), Table(FieldTable::new())));
        let t = table(&[("n", I32(1))]);
        assert!(eq(Table(t.clone()), Table(t.clone())));
        assert!(!eq(Table(t), Table(table(&[("n", I64(1))]))));
    }

    #[test]
    fn message_timestamps_are_milliseconds() {
        use FieldValue::*;
        let eq = |b: FieldValue, m: FieldValue| matches(&[("t", b)], Some(&[("t", m)]));
        // mc_amqpl:routing_value(timestamp, V) -> V * 1000.
        assert!(!eq(Timestamp(5), Timestamp(5)));
        assert!(eq(Timestamp(5000), Timestamp(5)));
        assert!(eq(I64(5000), Timestamp(5)));
        assert!(eq(Timestamp(0), Timestamp(0)));
        // Binding timestamps are not scaled.
        assert!(eq(Timestamp(5), I64(5)));
    }

    #[test]
    fn erl_rendering() {
        assert_eq!(erl_binary(b"a\"b"), "<<\"a\\\"b\">>");
        assert_eq!(erl_binary("é".as_bytes()), "<<\"é\"/utf8>>");
        assert_eq!(erl_binary(&[0, 255]), "<<0,255>>");
        let v = FieldValue::Array(vec![FieldValue::I64(1), s("x")]);
        assert_eq!(erl_value(&v), "[{long,1},{longstr,<<\"x\">>}]");
        let t = FieldValue::Table(table(&[("k", FieldValue::Bool(true))]));
        assert_eq!(erl_value(&t), "[{<<\"k\">>,bool,true}]");
    }
}
