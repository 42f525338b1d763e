use super::*;

#[test]
fn older_exports_import_tags_as_a_comma_string_md5_hashes_and_limits_as_objects() {
    let registry = Registry::new();
    let doc = serde_json::json!({
        "rabbit_version": "3.5.7",
        "users": [{"name": "old", "password_hash": "kI3GChNpte2FApYFXScl+0dIluk=",
                   "tags": "administrator, policymaker,custom"}],
        "vhosts": [{"name": "v", "limits": {"max-connections": 4, "max-queues": -1}}],
        "permissions": [{"user": "old", "vhost": "v", "configure": ".*", "write": "", "read": "^r"},
                        {"user": "nobody", "vhost": "v", "configure": "", "write": "", "read": ""}],
        "policies": [{"vhost": "v", "name": "p", "pattern": "^q", "definition": {"max-length": 1}}],
        "queues": [{"name": "q", "vhost": "v", "durable": true, "auto_delete": false,
                    "arguments": {"x-max-length": 3, "x-queue-mode": "lazy"}},
                   {"name": "bad", "vhost": "v", "durable": true, "arguments": {"x-max-length": "many"}}],
    });
    let done = import(&registry, &doc, 2);
    assert_eq!(done.skipped.len(), 2, "the unknown user's permission and the bad queue: {:?}", done.skipped);
    let topology = registry.load();
    let old = topology.access.users.get("old").expect("user");
    assert_eq!(old.tags, ["administrator", "policymaker", "custom"]);
    assert_eq!(
        old.password.as_ref().map(|h| h.algorithm),
        Some(HashAlgorithm::Md5),
        "3.5 exported MD5 hashes"
    );
    let v = topology.access.vhosts.get("v").expect("vhost");
    assert_eq!((v.limits.max_connections, v.limits.max_queues), (Some(4), None), "a negative limit is none");
    let policy = topology.parameters.policies.get(&("v".into(), "p".into())).expect("policy");
    assert_eq!((policy.apply_to.as_str(), policy.priority), ("all", 0), "RabbitMQ's defaults");
    let queue = topology.vhosts.get("v").and_then(|v| v.queues.get(b"q".as_slice())).expect("queue");
    assert_eq!(queue.arguments.get(b"x-max-length"), Some(&FieldValue::I64(3)));
    assert!(topology.vhosts.get("v").is_some_and(|v| !v.queues.contains_key(b"bad".as_slice())));
}
