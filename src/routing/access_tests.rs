use super::*;
use crate::access::{
    Access, HashAlgorithm, PasswordHash, Permission, TopicPermission, User, UserLimits, VhostLimits,
};
use crate::amqp::field::FieldTable;
use crate::ids::{ExchangeKind, QueueRef, ShardId};
use crate::queue::{QueueMeta, QueueStats};
use crate::routing::parameters::{Parameters, Policy};
use crate::routing::topology::{ExchangeSpec, DEFAULT_VHOST};
use crate::storage::DataDir;

fn user(name: &str) -> User {
    User {
        name: name.into(),
        password: Some(PasswordHash::with_salt(HashAlgorithm::Sha256, [1, 2, 3, 4], name.as_bytes())),
        tags: vec!["administrator".into(), "custom".into()],
        limits: UserLimits { max_connections: Some(3), max_channels: None },
    }
}

/// The records of the registry's access and parameters (hashes included),
/// and the access itself.
fn access_and_parameters(registry: &Registry) -> (Vec<Definition>, Access, Parameters) {
    let topology = registry.load();
    (access_definitions(&topology), Access::clone(&topology.access), Parameters::clone(&topology.parameters))
}

fn fill(registry: &Registry) {
    let limits = VhostLimits { max_connections: Some(1), max_queues: Some(2) };
    let settings = VhostSettings { limits, description: "d".into(), ..VhostSettings::default() };
    registry.create_vhost("v1", settings).expect("v1");
    registry.create_vhost("v2", VhostSettings::default()).expect("v2");
    for name in ["alice", "bob"] {
        registry.change_access(&AccessChange::PutUser(user(name))).expect("user");
    }
    let all = Permission { configure: ".*".into(), write: ".*".into(), read: ".*".into() };
    for vhost in ["v1", "v2", DEFAULT_VHOST] {
        let change = AccessChange::SetPermission {
            user: "alice".into(),
            vhost: vhost.into(),
            permission: all.clone(),
        };
        registry.change_access(&change).expect("permission");
    }
    let topic = TopicPermission { write: "^w".into(), read: "^r".into() };
    let change = AccessChange::SetTopicPermission {
        user: "bob".into(),
        vhost: "v2".into(),
        exchange: "amq.topic".into(),
        permission: topic,
    };
    registry.change_access(&change).expect("topic permission");
    let policy = Policy {
        vhost: "v2".into(),
        name: "p".into(),
        pattern: ".*".into(),
        apply_to: "queues".into(),
        definition: serde_json::json!({"max-length": 1}),
        priority: 0,
    };
    registry.change_parameters(&ParameterChange::SetPolicy(policy)).expect("policy");
    let global = ParameterChange::SetGlobal { name: "g".into(), value: serde_json::json!([["a", 1]]) };
    registry.change_parameters(&global).expect("global");
    registry.change_access(&AccessChange::DeleteUser("bob".into())).expect("delete bob");
}

#[test]
fn access_vhosts_and_parameters_are_recorded_replayed_and_kept_by_the_rewrite() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = DataDir::open(tmp.path()).expect("data dir");
    let registry = Registry::recover(&dir, 2).expect("recover an empty dir");
    assert!(registry.first_start());
    fill(&registry);
    let spec = ExchangeSpec {
        name: ShortStr::copy_from_str("x"),
        kind: ExchangeKind::Fanout,
        durable: true,
        auto_delete: false,
        internal: false,
        arguments: FieldTable::new(),
    };
    registry.declare_exchange("v2", spec).expect("exchange in v2");
    let meta = QueueMeta {
        queue: QueueRef { id: registry.allocate_queue_id(), shard: ShardId(0) },
        name: ShortStr::copy_from_str("q"),
        durable: true,
        exclusive_owner: None,
        auto_delete: false,
        arguments: FieldTable::new(),
        stats: QueueStats::default(),
    };
    registry.declare_queue("v2", meta).expect("queue in v2");
    registry.delete_vhost("v2").expect("delete v2");
    assert_eq!(registry.delete_vhost("v2"), Err(AccessError::NoVhost("v2".into())));
    let generation = registry.load().control_changes;
    assert_eq!(generation, 1, "a vhost deletion tells the shards to reconcile");
    let before = access_and_parameters(&registry);
    assert!(before.1.topic_permissions.is_empty() && before.2.policies.is_empty(), "v2's went with it");
    assert_eq!(before.2.global.len(), 1);
    drop(registry);
    // Twice: the replay of the appended log, then of the rewritten one.
    for _ in 0..2 {
        let registry = Registry::recover(&dir, 2).expect("recover");
        assert!(!registry.first_start(), "what is stored wins");
        let after = access_and_parameters(&registry);
        assert_eq!((&after.0, &after.2), (&before.0, &before.2));
        assert_eq!(after.1.users.len(), 1, "alice only");
        let topology = registry.load();
        assert!(!topology.vhosts.contains_key("v2"), "the deleted vhost stays deleted");
        assert!(topology.vhosts.contains_key("v1") && topology.vhosts.contains_key(DEFAULT_VHOST));
        assert!(registry.recovered_queues(ShardId(0)).is_empty(), "its queue too");
    }
}

#[test]
fn refused_access_changes_change_nothing_and_record_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = DataDir::open(tmp.path()).expect("data dir");
    let registry = Registry::recover(&dir, 1).expect("recover");
    let bytes = std::fs::metadata(dir.definitions_path()).expect("log").len();
    let no_user = AccessChange::SetPermission {
        user: "nobody".into(),
        vhost: DEFAULT_VHOST.into(),
        permission: Permission { configure: String::new(), write: String::new(), read: String::new() },
    };
    assert_eq!(registry.change_access(&no_user), Err(AccessError::NoUser("nobody".into())));
    let policy = ParameterChange::ClearPolicy { vhost: "missing".into(), name: "p".into() };
    assert_eq!(registry.change_parameters(&policy), Err(AccessError::NoVhost("missing".into())));
    assert!(
        registry.create_vhost(&"x".repeat(256), VhostSettings::default()).is_err(),
        "longer than a shortstr"
    );
    assert_eq!(std::fs::metadata(dir.definitions_path()).expect("log").len(), bytes, "nothing appended");
}

#[test]
fn a_log_from_before_access_was_recorded_keeps_its_vhosts_and_a_recorded_one_refuses_unknown_vhosts() {
    use crate::storage::definitions::DefinitionsLog;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = DataDir::open(tmp.path()).expect("data dir");
    let exchange = |vhost: &str| Definition::ExchangeDeclared {
        vhost: ShortStr::copy_from_str(vhost),
        name: ShortStr::copy_from_str("x"),
        kind: ExchangeKind::Direct,
        auto_delete: false,
        internal: false,
        arguments: FieldTable::new(),
    };
    DefinitionsLog::rewrite(&dir.definitions_path(), &[exchange(DEFAULT_VHOST)]).expect("an old log");
    let registry = Registry::recover(&dir, 1).expect("recover");
    assert!(registry.first_start(), "no access record yet: the defaults are to be made");
    let topology = registry.load();
    assert!(topology.access.vhosts.contains_key(DEFAULT_VHOST), "'/' exists, in access too");
    assert!(topology.vhosts.get(DEFAULT_VHOST).is_some_and(|v| v.exchanges.contains_key(b"x".as_slice())));
    drop(registry);
    // The rewritten log records "/": from now on a record naming a vhost
    // that does not exist is refused, never a vhost made again.
    let mut log = DefinitionsLog::open_append(
        &dir.definitions_path(),
        std::fs::metadata(dir.definitions_path()).expect("log").len(),
    )
    .expect("append");
    log.append(&[
        Definition::VhostDeleted { name: ShortStr::copy_from_str(DEFAULT_VHOST) },
        exchange(DEFAULT_VHOST),
    ])
    .expect("append");
    drop(log);
    let registry = Registry::recover(&dir, 1).expect("recover");
    assert!(!registry.first_start());
    assert!(
        !registry.load().vhosts.contains_key(DEFAULT_VHOST),
        "a deleted vhost is not brought back by a record"
    );
}
