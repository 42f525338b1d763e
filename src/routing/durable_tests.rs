use super::*;
use crate::ids::{ConnId, ExchangeKind, QueueId};
use crate::routing::topology::{DeclareQueueError, ExchangeSpec, DEFAULT_VHOST};
use crate::storage::definitions;
use crate::storage::DataDir;

fn s(text: &str) -> ShortStr {
    ShortStr::copy_from_str(text)
}

fn queue(registry: &Registry, name: &str, shard: u16, durable: bool, exclusive: bool) -> Arc<QueueMeta> {
    let meta = QueueMeta {
        queue: QueueRef { id: registry.allocate_queue_id(), shard: ShardId(shard) },
        name: s(name),
        durable,
        exclusive_owner: exclusive.then_some(ConnId { shard: ShardId(0), slot: 1, generation: 1 }),
        auto_delete: false,
        arguments: FieldTable::new(),
        stats: QueueStats::default(),
    };
    match registry.declare_queue(DEFAULT_VHOST, meta) {
        Ok(meta) => meta,
        Err(DeclareQueueError::Taken(_) | DeclareQueueError::Refused(_)) => panic!("declare {name}"),
    }
}

fn exchange(registry: &Registry, name: &str, durable: bool, auto_delete: bool) {
    let spec = ExchangeSpec {
        name: s(name),
        kind: ExchangeKind::Direct,
        durable,
        auto_delete,
        internal: false,
        arguments: FieldTable::new(),
    };
    registry.declare_exchange(DEFAULT_VHOST, spec).expect("declare exchange");
}

fn exchange_dest(registry: &Registry, name: &str) -> Destination {
    let topology = registry.load();
    let v = topology.vhosts.get(DEFAULT_VHOST).expect("vhost");
    Destination::Exchange(v.exchanges.get(name.as_bytes()).expect("exchange").id)
}

fn none() -> FieldTable {
    FieldTable::new()
}

/// The names of what the log at `dir` declares, in order, and its epoch.
fn logged(dir: &DataDir) -> (Vec<String>, u32) {
    let read = definitions::read(&dir.definitions_path()).expect("read log");
    let names = read
        .definitions
        .iter()
        .filter_map(|d| match d {
            Definition::ExchangeDeclared { name, .. } => Some(format!("+x {name}")),
            Definition::ExchangeDeleted { name, .. } => Some(format!("-x {name}")),
            Definition::QueueDeclared { name, .. } => Some(format!("+q {name}")),
            Definition::QueueDeleted { name, .. } => Some(format!("-q {name}")),
            Definition::Bound(b) => Some(format!("+b {}->{} {}", b.source, b.destination, b.routing_key)),
            Definition::Unbound(b) => Some(format!("-b {}->{} {}", b.source, b.destination, b.routing_key)),
            // Vhosts, users and parameters: see `routing::access`'s tests.
            _ => None,
        })
        .collect();
    (names, read.epoch_last)
}

#[test]
fn only_durable_changes_are_recorded_and_compaction_keeps_what_is_live() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = DataDir::open(tmp.path()).expect("data dir");
    let registry = Registry::recover(&dir, 2).expect("recover an empty dir");
    exchange(&registry, "dx", true, false);
    exchange(&registry, "tx", false, false);
    exchange(&registry, "auto", true, true);
    let dq = queue(&registry, "dq", 0, true, false);
    let tq = queue(&registry, "tq", 1, false, false);
    let xq = queue(&registry, "xq", 1, true, true);
    let q = |meta: &Arc<QueueMeta>| Destination::Queue(meta.queue);
    for (source, dest) in
        [("dx", q(&dq)), ("dx", q(&tq)), ("dx", q(&xq)), ("tx", q(&dq)), ("amq.direct", q(&dq))]
    {
        registry.bind(DEFAULT_VHOST, &s(source), dest, &s("k"), &none()).expect("bind");
    }
    registry
        .bind(DEFAULT_VHOST, &s("auto"), exchange_dest(&registry, "dx"), &s("e2e"), &none())
        .expect("bind");
    let (names, epoch) = logged(&dir);
    assert_eq!(epoch, 1);
    assert_eq!(names, ["+x dx", "+x auto", "+q dq", "+b dx->dq k", "+b amq.direct->dq k", "+b auto->dx e2e"]);
    // Deleting dx drops the binding auto->dx, so the auto-delete exchange goes too.
    registry.delete_exchange(DEFAULT_VHOST, &s("dx"), false).expect("delete");
    registry.remove_queue(DEFAULT_VHOST, xq.queue.id);
    let (names, _) = logged(&dir);
    assert_eq!(names[6..], ["-x dx", "-x auto"]);
    drop(registry);
    let registry = Registry::recover(&dir, 2).expect("recover");
    assert_eq!(registry.epoch(), 2);
    let (names, epoch) = logged(&dir);
    assert_eq!(names, ["+q dq", "+b amq.direct->dq k"], "compacted");
    assert_eq!(epoch, 2);
}

#[test]
fn queue_ids_never_repeat_and_recovered_queues_keep_theirs_on_shard_modulo_count() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = DataDir::open(tmp.path()).expect("data dir");
    let registry = Registry::recover(&dir, 4).expect("recover");
    assert_eq!(registry.epoch(), 1);
    let kept = queue(&registry, "kept", 3, true, false);
    assert_eq!(kept.queue.id, QueueId((1 << 32) | 1));
    let transient = queue(&registry, "transient", 0, false, false);
    drop(registry);
    // Shard 3 of 4, then 3 % 2, then 1 % 1; the rewritten log records the
    // owner of each run, so a later run with more shards keeps it on shard 0.
    for (epoch, shard_count, owner) in [(2u32, 2usize, 1u16), (3, 1, 0), (4, 4, 0)] {
        let registry = Registry::recover(&dir, shard_count).expect("recover");
        assert_eq!(registry.epoch(), epoch);
        let topology = registry.load();
        let v = topology.vhosts.get(DEFAULT_VHOST).expect("vhost");
        let recovered = v.queues.get(b"kept".as_slice()).expect("kept queue");
        assert_eq!(recovered.queue, QueueRef { id: kept.queue.id, shard: ShardId(owner) });
        assert!(recovered.durable && recovered.exclusive_owner.is_none());
        assert!(!v.queues.contains_key(b"transient".as_slice()));
        let on_owner = registry.recovered_queues(ShardId(owner));
        assert_eq!(on_owner.len(), 1);
        assert_eq!(&*on_owner[0].0, DEFAULT_VHOST);
        let elsewhere = ShardId((owner + 1) % shard_count as u16);
        assert!(shard_count == 1 || registry.recovered_queues(elsewhere).is_empty());
        let fresh = registry.allocate_queue_id();
        assert_eq!(fresh, QueueId((u64::from(epoch) << 32) | 1));
        assert_ne!(fresh, transient.queue.id);
    }
}

#[test]
fn a_registry_without_a_log_allocates_small_ids_and_records_nothing() {
    let registry = Registry::new();
    assert_eq!(registry.epoch(), 0);
    assert_eq!(registry.allocate_queue_id(), QueueId(1));
    let _ = queue(&registry, "q", 0, true, false);
    assert!(registry.recovered_queues(ShardId(0)).is_empty());
}

/// One client-side topology change, over a few names, for
/// [`a_replayed_log_builds_what_the_live_changes_built`].
#[derive(Debug, Clone)]
enum Op {
    DeclareExchange { name: usize, durable: bool, auto_delete: bool },
    DeleteExchange { name: usize },
    DeclareQueue { name: usize, durable: bool, exclusive: bool },
    DeleteQueue { name: usize },
    Bind { source: usize, to_queue: bool, dest: usize, key: usize },
    Unbind { source: usize, to_queue: bool, dest: usize, key: usize },
}

const OP_NAMES: usize = 2;

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    let n = 0..OP_NAMES;
    prop_oneof![
        (n.clone(), any::<bool>(), any::<bool>())
            .prop_map(|(name, durable, auto_delete)| Op::DeclareExchange { name, durable, auto_delete }),
        n.clone().prop_map(|name| Op::DeleteExchange { name }),
        (n.clone(), any::<bool>(), any::<bool>()).prop_map(|(name, durable, exclusive)| Op::DeclareQueue {
            name,
            durable,
            exclusive
        }),
        n.clone().prop_map(|name| Op::DeleteQueue { name }),
        (n.clone(), any::<bool>(), n.clone(), 0..2usize).prop_map(|(source, to_queue, dest, key)| Op::Bind {
            source,
            to_queue,
            dest,
            key
        }),
        (n.clone(), any::<bool>(), n, 0..2usize).prop_map(|(source, to_queue, dest, key)| Op::Unbind {
            source,
            to_queue,
            dest,
            key
        }),
    ]
}

/// Applies `op` as a client's method would; refusals (unknown names,
/// inequivalent redeclares) are part of the game and change nothing.
fn apply_op(registry: &Registry, op: &Op) {
    let vhost = DEFAULT_VHOST;
    let topology = registry.load();
    let v = topology.vhosts.get(vhost).expect("vhost");
    let dest_of = |to_queue: bool, dest: usize| {
        if to_queue {
            v.queues.get(format!("q{dest}").as_bytes()).map(|q| Destination::Queue(q.queue))
        } else {
            v.exchanges.get(format!("x{dest}").as_bytes()).map(|e| Destination::Exchange(e.id))
        }
    };
    match *op {
        Op::DeclareExchange { name, durable, auto_delete } => {
            let spec = ExchangeSpec {
                name: s(&format!("x{name}")),
                kind: ExchangeKind::Direct,
                durable,
                auto_delete,
                internal: false,
                arguments: none(),
            };
            let _ = registry.declare_exchange(vhost, spec);
        }
        Op::DeleteExchange { name } => {
            let _ = registry.delete_exchange(vhost, &s(&format!("x{name}")), false);
        }
        Op::DeclareQueue { name, durable, exclusive } => {
            if !v.queues.contains_key(format!("q{name}").as_bytes()) {
                let _ = queue(registry, &format!("q{name}"), (name % 2) as u16, durable, exclusive);
            }
        }
        Op::DeleteQueue { name } => {
            if let Some(q) = v.queues.get(format!("q{name}").as_bytes()) {
                registry.remove_queue(vhost, q.queue.id);
            }
        }
        Op::Bind { source, to_queue, dest, key } => {
            if let Some(dest) = dest_of(to_queue, dest) {
                let _ =
                    registry.bind(vhost, &s(&format!("x{source}")), dest, &s(&format!("k{key}")), &none());
            }
        }
        Op::Unbind { source, to_queue, dest, key } => {
            if let Some(dest) = dest_of(to_queue, dest) {
                let _ =
                    registry.unbind(vhost, &s(&format!("x{source}")), dest, &s(&format!("k{key}")), &none());
            }
        }
    }
}

/// [`definitions_of`] in a canonical order: a binding table lists its
/// bindings in an order that depends on its history, which a replay does
/// not repeat exactly (a binding removed and added again comes last).
fn sorted_definitions(topology: &Topology) -> Vec<String> {
    let mut all: Vec<String> = definitions_of(topology).iter().map(|d| format!("{d:?}")).collect();
    all.sort();
    all
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Durable changes go through one path: whatever a client did, the
    /// broker that replays its definitions log at the next start has the
    /// same durable exchanges, queues and bindings as the one that ran.
    /// (And a vhost's binding count stays the sum of its tables.)
    #[test]
    fn a_replayed_log_builds_what_the_live_changes_built(ops in proptest::collection::vec(op(), 1..40)) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::open(tmp.path()).expect("data dir");
        let live = Registry::recover(&dir, 2).expect("recover an empty dir");
        for op in &ops {
            apply_op(&live, op);
            let topology = live.load();
            let v = topology.vhosts.get(DEFAULT_VHOST).expect("vhost");
            let counted: usize = v.exchanges.values().map(|e| e.bindings.len()).sum();
            proptest::prop_assert_eq!(v.binding_count, counted, "binding count after {:?}", op);
        }
        let before = sorted_definitions(&live.load());
        drop(live);
        let replayed = Registry::recover(&dir, 2).expect("recover");
        proptest::prop_assert_eq!(sorted_definitions(&replayed.load()), before);
    }
}
