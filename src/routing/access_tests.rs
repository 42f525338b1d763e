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
    registry.mark_initialised().expect("as the server does once the defaults are made");
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
    let changes_before = registry.load().control_changes;
    registry.delete_vhost("v2").expect("delete v2");
    assert_eq!(registry.delete_vhost("v2"), Err(AccessError::NoVhost("v2".into())));
    let changes = registry.load().control_changes;
    assert_eq!(changes, changes_before + 1, "a vhost deletion tells the shards to reconcile");
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
    registry.mark_initialised().expect("as the server does once the defaults are made");
    drop(registry);
    // The log records "/" and is initialised: from now on a record naming a
    // vhost that does not exist is refused, never a vhost made again.
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

/// One control-plane or client change, over small name spaces so that
/// changes meet (a permission for a user deleted before, a queue in a
/// vhost deleted after).
#[derive(Debug, Clone)]
enum Op {
    CreateVhost(u8),
    DeleteVhost(u8),
    PutUser(u8),
    DeleteUser(u8),
    SetPermission(u8, u8),
    ClearPermission(u8, u8),
    DeclareQueue(u8, u8),
    SetPolicy(u8),
    SetGlobal(u8),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        (0..3u8).prop_map(Op::CreateVhost),
        (0..3u8).prop_map(Op::DeleteVhost),
        (0..2u8).prop_map(Op::PutUser),
        (0..2u8).prop_map(Op::DeleteUser),
        (0..2u8, 0..3u8).prop_map(|(u, v)| Op::SetPermission(u, v)),
        (0..2u8, 0..3u8).prop_map(|(u, v)| Op::ClearPermission(u, v)),
        (0..3u8, 0..2u8).prop_map(|(v, q)| Op::DeclareQueue(v, q)),
        (0..3u8).prop_map(Op::SetPolicy),
        (0..2u8).prop_map(Op::SetGlobal),
    ]
}

/// Vhost 0 is "/" (which a deletion may remove too).
fn vhost(i: u8) -> String {
    if i == 0 {
        DEFAULT_VHOST.to_owned()
    } else {
        format!("v{i}")
    }
}

/// Applies `op`; refusals (no such user or vhost) are part of the test.
fn apply_op(registry: &Registry, op: &Op) {
    let all = Permission { configure: ".*".into(), write: "w".into(), read: "r".into() };
    let _ = match op {
        Op::CreateVhost(v) => registry.create_vhost(&vhost(*v), VhostSettings::default()),
        Op::DeleteVhost(v) => registry.delete_vhost(&vhost(*v)),
        Op::PutUser(u) => registry.change_access(&AccessChange::PutUser(user(&format!("u{u}")))),
        Op::DeleteUser(u) => registry.change_access(&AccessChange::DeleteUser(format!("u{u}"))),
        Op::SetPermission(u, v) => registry.change_access(&AccessChange::SetPermission {
            user: format!("u{u}"),
            vhost: vhost(*v),
            permission: all,
        }),
        Op::ClearPermission(u, v) => {
            registry.change_access(&AccessChange::ClearPermission { user: format!("u{u}"), vhost: vhost(*v) })
        }
        Op::DeclareQueue(v, q) => {
            let meta = QueueMeta {
                queue: QueueRef { id: registry.allocate_queue_id(), shard: ShardId(0) },
                name: ShortStr::copy_from_str(&format!("q{q}")),
                durable: true,
                exclusive_owner: None,
                auto_delete: false,
                arguments: FieldTable::new(),
                stats: QueueStats::default(),
            };
            let _ = registry.declare_queue(&vhost(*v), meta);
            Ok(())
        }
        Op::SetPolicy(v) => registry.change_parameters(&ParameterChange::SetPolicy(Policy {
            vhost: vhost(*v),
            name: "p".into(),
            pattern: ".*".into(),
            apply_to: "all".into(),
            definition: serde_json::json!({"max-length": v}),
            priority: i64::from(*v),
        })),
        Op::SetGlobal(g) => registry.change_parameters(&ParameterChange::SetGlobal {
            name: format!("g{g}"),
            value: serde_json::json!(g),
        }),
    };
}

/// Each vhost's queue names.
type QueueNames = Vec<(String, Vec<String>)>;

/// What must come back: access and parameters as records, and each
/// vhost's queue names.
fn state(registry: &Registry) -> (Vec<Definition>, Parameters, QueueNames) {
    let topology = registry.load();
    let mut queues: QueueNames = topology
        .vhosts
        .iter()
        .map(|(name, v)| {
            let mut names: Vec<String> = v.queues.keys().map(|q| q.to_string_lossy().into_owned()).collect();
            names.sort();
            (name.clone(), names)
        })
        .collect();
    queues.sort();
    (access_definitions(&topology), Parameters::clone(&topology.parameters), queues)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// Whatever the control plane did, the broker that replays its log at
    /// the next start (and the one after, from the rewritten log) has the
    /// same users, permissions, vhosts, parameters and queues.
    #[test]
    fn a_replayed_log_rebuilds_access_vhosts_and_their_queues(ops in proptest::collection::vec(op(), 1..30)) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::open(tmp.path()).expect("data dir");
        let live = Registry::recover(&dir, 1).expect("recover an empty dir");
        live.mark_initialised().expect("as the server does once the defaults are made");
        for op in &ops {
            apply_op(&live, op);
        }
        let before = state(&live);
        drop(live);
        for _ in 0..2 {
            let replayed = Registry::recover(&dir, 1).expect("recover");
            proptest::prop_assert_eq!(&state(&replayed), &before);
        }
    }
}

#[test]
fn deleting_every_vhost_and_user_is_not_a_first_start_but_an_unfinished_first_start_is() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = DataDir::open(tmp.path()).expect("data dir");
    let registry = Registry::recover(&dir, 1).expect("recover");
    registry.change_access(&AccessChange::PutUser(user("guest"))).expect("a default user");
    drop(registry);
    // Cut short before the defaults were marked made: a first start again.
    let registry = Registry::recover(&dir, 1).expect("recover");
    assert!(registry.first_start(), "an unfinished first start is done again");
    registry.mark_initialised().expect("initialised");
    registry.delete_vhost(DEFAULT_VHOST).expect("delete /");
    registry.change_access(&AccessChange::DeleteUser("guest".into())).expect("delete guest");
    drop(registry);
    for _ in 0..2 {
        let registry = Registry::recover(&dir, 1).expect("recover");
        assert!(!registry.first_start(), "nothing left, yet not a first start");
        let topology = registry.load();
        assert!(
            topology.vhosts.is_empty()
                && topology.access.users.is_empty()
                && topology.access.vhosts.is_empty()
        );
    }
}
