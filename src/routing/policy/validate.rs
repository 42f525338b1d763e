//! A policy's fields and definition checked as RabbitMQ 3.10.8 checks them
//! (`rabbit_policy:policy_validation/0`, `rabbit_policies:validate_policy0/2`,
//! `rabbit_mirror_queue_misc:validate_policy/1`,
//! `rabbit_queue_location_validator`), with its texts: every error of the
//! four fields, in RabbitMQ's order (definition, apply-to, pattern,
//! priority), one a line; values rendered as Erlang terms (`<<"abc">>`,
//! `[{<<"foo">>,1}]`).
//!
//! Known differences: a pattern this regex engine refuses is reported with
//! its reason, not PCRE's; a non-integer priority (RabbitMQ takes `1.5`) is
//! refused, as Lepus stores priorities as integers; `consumer-timeout` is
//! taken (RabbitMQ 3.12 added it; 3.10 refuses it as unrecognised).

use serde_json::{Map, Value};

use super::{ApplyTo, PolicyKind};

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    reason: String,
}

impl PolicyError {
    fn new(reason: String) -> PolicyError {
        PolicyError { reason }
    }

    /// RabbitMQ's text for the error, as its management API puts it in the
    /// `reason` of its 400 answer (`Validation failed\n\n…\n`, or
    /// `[{key_missing,pattern}]`), before its HTML escaping.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The `reason` as RabbitMQ's management API sends it for a policy of
    /// `kind`: `PUT /api/policies` escapes `<`, `>` and `&` as HTML
    /// (`&lt;&lt;\"abc\"&gt;&gt;`), `PUT /api/operator-policies` does not.
    pub fn http_reason(&self, kind: PolicyKind) -> String {
        match kind {
            PolicyKind::User => self.reason.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;"),
            PolicyKind::Operator => self.reason.clone(),
        }
    }
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason.trim_end())
    }
}

impl std::error::Error for PolicyError {}

/// Checks a policy (`kind` User) or operator policy as the management API's
/// PUT body gives it: `pattern` and `definition` required, `priority`
/// (default 0) and `apply-to` (default `all`) optional.
pub fn validate_policy(kind: PolicyKind, body: &Value) -> Result<(), PolicyError> {
    let missing: Vec<&str> =
        ["pattern", "definition"].into_iter().filter(|k| body.get(k).is_none()).collect();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|k| format!("{{key_missing,{k}}}")).collect();
        return Err(PolicyError::new(format!("[{}]", list.join(","))));
    }
    let mut errors = Vec::new();
    if let Some(definition) = body.get("definition") {
        if let Err(e) = validate_definition(kind, definition) {
            errors.push(e);
        }
    }
    if let Some(apply_to) = body.get("apply-to").filter(|v| !v.is_null()) {
        if ApplyTo::parse(apply_to).is_none() {
            errors.push(match apply_to {
                Value::String(s) => {
                    format!("apply-to '{s}' unrecognised; should be 'queues', 'exchanges' or 'all'")
                }
                other => format!(
                    "apply-to '{}' unrecognised; should be 'queues', 'exchanges' or 'all'",
                    term(other)
                ),
            });
        }
    }
    if let Some(pattern) = body.get("pattern") {
        match pattern {
            Value::String(p) => {
                if let Err(e) = super::compile_pattern(p) {
                    errors.push(format!("pattern should be regular expression but is invalid: {e}"));
                }
            }
            other => errors.push(format!("pattern should be a binary but was {}", term(other))),
        }
    }
    match body.get("priority") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.is_i64() => {}
        Some(Value::Number(n)) => errors.push(format!("priority should be an integer, actually was {n}")),
        Some(other) => errors.push(format!("priority should be a number, actually was {}", term(other))),
    }
    if errors.is_empty() {
        return Ok(());
    }
    Err(PolicyError::new(format!("Validation failed\n\n{}\n", errors.join("\n"))))
}

/// One of RabbitMQ's validator modules over a whole definition.
type Validator = fn(&Map<String, Value>) -> Result<(), String>;

/// The error text of one definition (without `Validation failed`).
fn validate_definition(kind: PolicyKind, definition: &Value) -> Result<(), String> {
    let Value::Object(terms) = definition else {
        return Err(format!("definition must be a dictionary: {}", term(definition)));
    };
    if terms.is_empty() {
        return Err("no policy provided".to_owned());
    }
    // RabbitMQ runs each validator module over the keys it registered, in
    // this order, and stops at the first error; keys no module took are
    // reported last.
    let modules: &[Validator] = match kind {
        PolicyKind::User => &[queue_master_locator, built_in, mirroring],
        PolicyKind::Operator => &[operator_built_in],
    };
    for module in modules {
        module(terms)?;
    }
    let known = |key: &str| match kind {
        PolicyKind::User => {
            BUILT_IN_KEYS.contains(&key) || MIRRORING_KEYS.contains(&key) || key == "queue-master-locator"
        }
        PolicyKind::Operator => OPERATOR_KEYS.contains(&key),
    };
    let unknown: Vec<String> = terms
        .iter()
        .filter(|(k, _)| !known(k))
        .map(|(k, v)| format!("{{{},{}}}", binary(k), term(v)))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(format!("[{}] are not recognised policy settings", unknown.join(",")))
    }
}

/// The keys `rabbit_policies` validates for policies (and `consumer-timeout`).
const BUILT_IN_KEYS: [&str; 19] = [
    "alternate-exchange",
    "consumer-timeout",
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "dead-letter-strategy",
    "delivery-limit",
    "expires",
    "initial-cluster-size",
    "max-age",
    "max-in-memory-bytes",
    "max-in-memory-length",
    "max-length",
    "max-length-bytes",
    "message-ttl",
    "overflow",
    "queue-leader-locator",
    "queue-mode",
    "queue-version",
    "stream-max-segment-size-bytes",
];

/// The keys operator policies may set (`operator_policy_validator`).
pub(super) const OPERATOR_KEYS: [&str; 7] = [
    "delivery-limit",
    "expires",
    "max-in-memory-bytes",
    "max-in-memory-length",
    "max-length",
    "max-length-bytes",
    "message-ttl",
];

const MIRRORING_KEYS: [&str; 6] = [
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-sync-batch-size",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
];

/// `rabbit_queue_location_validator`.
fn queue_master_locator(terms: &Map<String, Value>) -> Result<(), String> {
    match terms.get("queue-master-locator") {
        None => Ok(()),
        Some(Value::String(s)) if matches!(s.as_str(), "client-local" | "min-masters" | "random") => Ok(()),
        Some(other) => Err(format!("{} invalid queue-master-locator value", term(other))),
    }
}

fn built_in(terms: &Map<String, Value>) -> Result<(), String> {
    // Keys in the definition's (sorted) order, as RabbitMQ folds over them.
    for (key, value) in terms {
        if BUILT_IN_KEYS.contains(&key.as_str()) {
            built_in_one(key, value)?;
        }
    }
    Ok(())
}

fn operator_built_in(terms: &Map<String, Value>) -> Result<(), String> {
    for (key, value) in terms {
        if OPERATOR_KEYS.contains(&key.as_str()) {
            built_in_one(key, value)?;
        }
    }
    Ok(())
}

/// `rabbit_policies:validate_policy0/2` for one key.
fn built_in_one(key: &str, value: &Value) -> Result<(), String> {
    let int_at_least = |min: i64| value.as_i64().is_some_and(|n| n >= min) && !value.is_f64();
    let one_of = |allowed: &[&str]| value.as_str().is_some_and(|s| allowed.contains(&s));
    let (ok, what) = match key {
        "alternate-exchange" => (value.is_string(), "is not a valid alternate exchange name"),
        "dead-letter-exchange" => (value.is_string(), "is not a valid dead letter exchange name"),
        "dead-letter-routing-key" => (value.is_string(), "is not a valid dead letter routing key"),
        "dead-letter-strategy" => {
            (one_of(&["at-most-once", "at-least-once"]), "is not a valid dead letter strategy")
        }
        "message-ttl" => (int_at_least(0), "is not a valid message TTL"),
        "expires" => (int_at_least(1), "is not a valid queue expiry"),
        "max-length" => (int_at_least(0), "is not a valid maximum length"),
        "max-length-bytes" => (int_at_least(0), "is not a valid maximum length in bytes"),
        "max-in-memory-length" | "max-in-memory-bytes" => {
            (int_at_least(0), "is not a valid maximum memory in bytes")
        }
        "queue-mode" => (one_of(&["default", "lazy"]), "is not a valid queue-mode value"),
        "queue-version" => (matches!(value.as_i64(), Some(1 | 2)), "is not a valid queue-version value"),
        "overflow" => {
            (one_of(&["drop-head", "reject-publish", "reject-publish-dlx"]), "is not a valid overflow value")
        }
        "delivery-limit" => (int_at_least(0), "is not a valid delivery limit"),
        "consumer-timeout" => (int_at_least(0), "is not a valid consumer timeout"),
        "max-age" => (
            value.as_str().is_some_and(|s| crate::queue::arguments::max_age_ms(s.as_bytes()).is_some()),
            "is not a valid max age",
        ),
        "queue-leader-locator" => (
            one_of(&["client-local", "balanced", "random", "least-leaders"]),
            "is not a valid queue leader locator value",
        ),
        "initial-cluster-size" => (int_at_least(0), "is not a valid cluster size"),
        "stream-max-segment-size-bytes" => (
            int_at_least(0) && value.as_i64().is_some_and(|n| n <= STREAM_MAX_SEGMENT_SIZE_BYTES_MAX),
            "is not a valid segment size",
        ),
        _ => (true, ""),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{} {what}", term(value)))
    }
}

/// RabbitMQ's `?MAX_STREAM_MAX_SEGMENT_SIZE` (3 GB).
const STREAM_MAX_SEGMENT_SIZE_BYTES_MAX: i64 = 3_000_000_000;

/// `rabbit_mirror_queue_misc:validate_policy/1` (mirroring does not exist
/// on one node, but definitions exported from RabbitMQ carry these keys).
fn mirroring(terms: &Map<String, Value>) -> Result<(), String> {
    let get = |k: &str| terms.get(k);
    let mode = get("ha-mode");
    if MIRRORING_KEYS.iter().all(|k| get(k).is_none()) {
        return Ok(());
    }
    let Some(mode) = mode else {
        return Err(
            "ha-mode must be specified to specify ha-params, ha-sync-mode or ha-promote-on-shutdown".into()
        );
    };
    let params = get("ha-params");
    let none = |v: Option<&Value>| v.map_or_else(|| "none".to_owned(), term);
    match mode.as_str() {
        Some("all") if params.is_some() => return Err("ha-mode=\"all\" does not take parameters".into()),
        Some("all") => {}
        Some("exactly") => {
            if params.and_then(Value::as_i64).is_none_or(|n| n <= 0) {
                return Err(format!("ha-mode=\"exactly\" takes an integer, {} given", none(params)));
            }
        }
        Some("nodes") => match params {
            Some(Value::Array(nodes)) if nodes.is_empty() => {
                return Err("ha-mode=\"nodes\" list must be non-empty".into())
            }
            Some(Value::Array(nodes)) => {
                let bad: Vec<String> = nodes.iter().filter(|n| !n.is_string()).map(term).collect();
                if !bad.is_empty() {
                    return Err(format!(
                        "ha-mode=\"nodes\" takes a list of strings, [{}] was not a string",
                        bad.join(",")
                    ));
                }
            }
            other => return Err(format!("ha-mode=\"nodes\" takes a list, {} given", none(other))),
        },
        _ => return Err(format!("{} is not a valid ha-mode value", term(mode))),
    }
    let either = |key: &str, a: &str, b: &str, text: &str| match get(key) {
        None => Ok(()),
        Some(Value::String(s)) if s == a || s == b => Ok(()),
        Some(other) => Err(format!("{text}, got {}", term(other))),
    };
    either("ha-sync-mode", "automatic", "manual", "ha-sync-mode must be \"manual\" or \"automatic\"")?;
    if let Some(size) = get("ha-sync-batch-size") {
        if size.as_i64().is_none_or(|n| n <= 0) {
            return Err(format!("ha-sync-batch-size takes an integer greater than 0, {} given", term(size)));
        }
    }
    either(
        "ha-promote-on-shutdown",
        "always",
        "when-synced",
        "ha-promote-on-shutdown must be \"always\" or \"when-synced\"",
    )?;
    either(
        "ha-promote-on-failure",
        "always",
        "when-synced",
        "ha-promote-on-failure must be \"always\" or \"when-synced\"",
    )
}

/// A JSON value as Erlang's `~p` prints the term RabbitMQ decoded it to
/// (on one line).
pub(super) fn term(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if n.is_f64() => erlang_float(n.as_f64().unwrap_or(0.0)),
        Value::Number(n) => n.to_string(),
        Value::String(s) => binary(s),
        Value::Array(items) => format!("[{}]", items.iter().map(term).collect::<Vec<_>>().join(",")),
        Value::Object(map) => format!(
            "#{{{}}}",
            map.iter().map(|(k, v)| format!("{} => {}", binary(k), term(v))).collect::<Vec<_>>().join(",")
        ),
    }
}

/// `<<"text">>`, with `"` and `\` escaped.
fn binary(s: &str) -> String {
    format!("<<\"{}\">>", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Erlang's shortest float form: `1.5`, `1.0e3`.
fn erlang_float(f: f64) -> String {
    let plain = format!("{f}");
    if f.fract() == 0.0 && f.abs() >= 1.0 {
        let exponent = f.abs().log10().floor() as i32;
        let mantissa = f / 10f64.powi(exponent);
        return format!("{mantissa:?}e{exponent}");
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reason(kind: PolicyKind, body: Value) -> String {
        validate_policy(kind, &body).err().map(|e| e.reason().to_owned()).unwrap_or_default()
    }

    /// A body with pattern `.*` and `definition`.
    fn d(definition: Value) -> Value {
        json!({"pattern": ".*", "definition": definition})
    }

    fn failed(text: &str) -> String {
        format!("Validation failed\n\n{text}\n")
    }

    #[test]
    fn texts_match_rabbitmq() {
        // Each expectation is RabbitMQ 3.10.8's `reason` for the same PUT
        // /api/policies (before its HTML escaping).
        use PolicyKind::{Operator, User};
        let cases: Vec<(PolicyKind, Value, String)> = vec![
            (User, d(json!({"max-length": -1})), failed("-1 is not a valid maximum length")),
            (
                User,
                d(json!({"message-ttl": "abc"})),
                failed("<<\"abc\">> is not a valid message TTL"),
            ),
            (User, d(json!({"max-length": 1.5})), failed("1.5 is not a valid maximum length")),
            (User, d(json!({})), failed("no policy provided")),
            (
                User,
                d(json!({"foo": 1, "bar": 2})),
                failed("[{<<\"bar\">>,2},{<<\"foo\">>,1}] are not recognised policy settings"),
            ),
            (
                User,
                json!({"pattern": ".*", "apply-to": "classic_queues", "definition": {"max-length": 1}}),
                failed("apply-to 'classic_queues' unrecognised; should be 'queues', 'exchanges' or 'all'"),
            ),
            (
                User,
                json!({"pattern": ".*", "priority": "x", "definition": {"max-length": 1}}),
                failed("priority should be a number, actually was <<\"x\">>"),
            ),
            (User, json!({"definition": {"max-length": 1}}), "[{key_missing,pattern}]".into()),
            (User, json!({"pattern": ".*"}), "[{key_missing,definition}]".into()),
            (User, d(json!({"expires": 0, "max-length": -1})), failed("0 is not a valid queue expiry")),
            (
                User,
                d(json!({"max-length": 5, "message-ttl": -1})),
                failed("-1 is not a valid message TTL"),
            ),
            (User, d(json!({"alternate-exchange": 5})), failed("5 is not a valid alternate exchange name")),
            (
                User,
                d(json!({"dead-letter-exchange": true})),
                failed("true is not a valid dead letter exchange name"),
            ),
            (User, d(json!({"message-ttl": null})), failed("null is not a valid message TTL")),
            (
                User,
                d(json!({"message-ttl": [1, "a"]})),
                failed("[1,<<\"a\">>] is not a valid message TTL"),
            ),
            (
                User,
                d(json!({"message-ttl": {"a": 1}})),
                failed("#{<<\"a\">> => 1} is not a valid message TTL"),
            ),
            (
                User,
                json!({"pattern": 5, "definition": {"message-ttl": 1}}),
                failed("pattern should be a binary but was 5"),
            ),
            (User, d(json!({"ha-mode": "all"})), String::new()),
            (
                User,
                d(json!({"message-ttl": 1000, "ha-mode": "bad"})),
                failed("<<\"bad\">> is not a valid ha-mode value"),
            ),
            (
                User,
                d(json!({"max-length": 1, "ha-mode": "exactly"})),
                failed("ha-mode=\"exactly\" takes an integer, none given"),
            ),
            (
                User,
                d(json!({"ha-params": 1})),
                failed("ha-mode must be specified to specify ha-params, ha-sync-mode or ha-promote-on-shutdown"),
            ),
            (
                User,
                d(json!({"queue-master-locator": "x", "max-length": -1})),
                failed("<<\"x\">> invalid queue-master-locator value"),
            ),
            (User, d(json!({"ha-mode": "x", "max-length": -1})), failed("-1 is not a valid maximum length")),
            (User, d(json!({"message-ttl": 99_999_999_999_999_i64})), String::new()),
            (
                User,
                json!({"pattern": ".*", "definition": {}, "apply-to": "x", "priority": "a"}),
                failed(
                    "no policy provided\napply-to 'x' unrecognised; should be 'queues', 'exchanges' or 'all'\n\
                     priority should be a number, actually was <<\"a\">>",
                ),
            ),
            (
                Operator,
                d(json!({"dead-letter-exchange": "x"})),
                failed("[{<<\"dead-letter-exchange\">>,<<\"x\">>}] are not recognised policy settings"),
            ),
            (
                Operator,
                d(json!({"queue-mode": "lazy", "overflow": "drop-head"})),
                failed(concat!(
                    "[{<<\"overflow\">>,<<\"drop-head\">>},{<<\"queue-mode\">>,<<\"lazy\">>}]",
                    " are not recognised policy settings"
                )),
            ),
            (Operator, d(json!({"max-length": -5})), failed("-5 is not a valid maximum length")),
            (
                Operator,
                d(json!({"ha-mode": "all"})),
                failed("[{<<\"ha-mode\">>,<<\"all\">>}] are not recognised policy settings"),
            ),
            (
                Operator,
                d(json!({"delivery-limit": 5, "expires": 1000, "max-in-memory-length": 4, "max-in-memory-bytes": 5})),
                String::new(),
            ),
        ];
        for (kind, body, want) in cases {
            assert_eq!(reason(kind, body.clone()), want, "{body}");
        }
    }

    #[test]
    fn only_the_policies_endpoint_escapes_html() {
        let body = d(json!({"overflow": "foo"}));
        let user = validate_policy(PolicyKind::User, &body).expect_err("refused");
        assert_eq!(
            user.http_reason(PolicyKind::User),
            failed("&lt;&lt;\"foo\"&gt;&gt; is not a valid overflow value")
        );
        let body = d(json!({"queue-mode": "lazy"}));
        let operator = validate_policy(PolicyKind::Operator, &body).expect_err("refused");
        assert_eq!(
            operator.http_reason(PolicyKind::Operator),
            failed("[{<<\"queue-mode\">>,<<\"lazy\">>}] are not recognised policy settings")
        );
    }

    #[test]
    fn erlang_floats() {
        assert_eq!(term(&json!(1.5)), "1.5");
        assert_eq!(term(&json!(1e3)), "1.0e3");
        assert_eq!(term(&json!("a\"b")), "<<\"a\\\"b\">>");
    }
}
