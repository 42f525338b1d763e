//! Benchmarks of `BindingTable::route` on a consistent-hash exchange (one
//! call per publish): a hash of the routing key and a binary search of the
//! ring, over 3, 100 and 4096 bound queues, beside a direct exchange's one
//! lookup. Run: `flock /work/bench.lock cargo bench --bench consistent_hash`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use lepus::amqp::field::{FieldTable, ShortStr};
use lepus::ids::ExchangeKind;
use lepus::message::RouteProperties;
use lepus::routing::BindingTable;

/// Routing keys as a sharded workload has them: one per customer.
const KEYS: [&str; 4] = ["customer-17", "customer-4711", "order-2026-12-06-000042", "tenant.eu.acme"];

fn table(kind: ExchangeKind, queues: u32, key: impl Fn(u32) -> String) -> BindingTable<u32> {
    let mut t = BindingTable::new(kind);
    for q in 0..queues {
        let added = t.bind(q, &ShortStr::copy_from_str(&key(q)), &FieldTable::new());
        assert!(added.is_ok(), "bind {q}");
    }
    t
}

fn bench_route(c: &mut Criterion) {
    let mut group = c.benchmark_group("BindingTable::route");
    let header = bytes::Bytes::new();
    let properties = RouteProperties::new(&header);
    let mut out: Vec<u32> = Vec::with_capacity(16);
    // Binding the 4096 queues one by one merges each new queue's points into
    // the ring: 8 s in the debug build `cargo test --all-targets` checks
    // benches with (it was 403 s when every bind sorted the whole ring).
    for queues in [3, 100, 4096] {
        let t = table(ExchangeKind::ConsistentHash, queues, |q| (1 + q % 3).to_string());
        group.bench_function(format!("consistent_hash_{queues}_queues"), |b| {
            b.iter(|| {
                for key in KEYS {
                    out.clear();
                    t.route(black_box(key.as_bytes()), &properties, &mut out);
                    black_box(&out);
                }
            })
        });
    }
    let direct = table(ExchangeKind::Direct, 100, |q| format!("customer-{q}"));
    group.bench_function("direct_100_queues", |b| {
        b.iter(|| {
            for key in KEYS {
                out.clear();
                direct.route(black_box(key.as_bytes()), &properties, &mut out);
                black_box(&out);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_route);
criterion_main!(benches);
