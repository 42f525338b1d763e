use serde_json::json;

use super::*;
use crate::routing::parameters::{Parameter, ParameterChange, Policy};

fn policy(name: &str, pattern: &str, apply_to: &str, priority: i64, definition: Value) -> ParameterChange {
    ParameterChange::SetPolicy(Policy {
        vhost: "v".into(),
        name: name.into(),
        pattern: pattern.into(),
        apply_to: apply_to.into(),
        definition,
        priority,
    })
}

fn operator(name: &str, pattern: &str, priority: i64, definition: Value) -> ParameterChange {
    ParameterChange::SetParameter(Parameter {
        vhost: "v".into(),
        component: OPERATOR_POLICY_COMPONENT.into(),
        name: name.into(),
        value: json!({"pattern": pattern, "definition": definition, "priority": priority, "apply-to": "all"}),
    })
}

fn compiled(changes: &[ParameterChange]) -> VhostPolicies {
    let mut parameters = Parameters::default();
    for change in changes {
        parameters.apply(change);
    }
    VhostPolicies::compile(&parameters, "v")
}

const CLASSIC: Target = Target::Queue(QueueType::Classic);

fn names(applied: Applied<'_>) -> (Option<&str>, Option<&str>) {
    (applied.policy.map(|p| p.name.as_str()), applied.operator_policy.map(|p| p.name.as_str()))
}

#[test]
fn the_highest_priority_match_wins_and_ties_go_by_name() {
    let set = compiled(&[
        policy("low", "^q", "all", 1, json!({"max-length": 1})),
        policy("high", "q", "queues", 5, json!({"max-length": 2})),
        policy("b-tie", "^x", "all", 3, json!({"max-length": 3})),
        policy("a-tie", "^x", "all", 3, json!({"max-length": 4})),
    ]);
    assert_eq!(names(set.applied(b"q1", CLASSIC)).0, Some("high"));
    assert_eq!(names(set.applied(b"aq", CLASSIC)).0, Some("high"), "searched, not anchored");
    assert_eq!(names(set.applied(b"q1", Target::Exchange)).0, Some("low"), "apply-to queues skips exchanges");
    assert_eq!(names(set.applied(b"x", CLASSIC)).0, Some("a-tie"));
    assert_eq!(names(set.applied(b"z", CLASSIC)), (None, None));
}

#[test]
fn a_key_the_queue_type_refuses_skips_the_policy() {
    let set = compiled(&[
        policy("limit", ".*", "all", 9, json!({"delivery-limit": 3})),
        policy("plain", ".*", "all", 0, json!({"max-length": 3})),
    ]);
    assert_eq!(names(set.applied(b"q", CLASSIC)).0, Some("plain"));
    assert_eq!(names(set.applied(b"q", Target::Queue(QueueType::Quorum))).0, Some("limit"));
    assert_eq!(names(set.applied(b"x", Target::Exchange)).0, Some("limit"));
}

#[test]
fn operator_values_win_when_smaller() {
    let set = compiled(&[
        policy(
            "user",
            ".*",
            "all",
            0,
            json!({"max-length": 10, "message-ttl": 100, "overflow": "reject-publish"}),
        ),
        operator("op", ".*", 0, json!({"max-length": 5, "message-ttl": 1000, "expires": 7})),
    ]);
    let applied = set.applied(b"q", CLASSIC);
    assert_eq!(names(applied), (Some("user"), Some("op")));
    assert_eq!(
        Value::Object(applied.definition()),
        json!({"max-length": 5, "message-ttl": 100, "overflow": "reject-publish", "expires": 7})
    );
    let fields = applied.management_fields(EntityKind::Queue);
    assert_eq!(fields.get("operator_policy"), Some(&json!("op")));
}

#[test]
fn an_unknown_pattern_matches_nothing() {
    let set = compiled(&[policy("bad", "(", "all", 0, json!({"max-length": 1}))]);
    assert_eq!(names(set.applied(b"(", CLASSIC)), (None, None));
}
