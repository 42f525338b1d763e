//! Benchmarks of `BindingTable::route` on a topic exchange (one call per
//! publish on the hot path), over a few bindings and over 1,000, plus the
//! reference matcher `topic_matches` for comparison.
//!
//! Needs in Cargo.toml: `[dev-dependencies] criterion = "0.5"` and
//! `[[bench]] name = "topic_match" harness = false`.
//! Run: `cargo bench --bench topic_match`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use lepus::amqp::field::{FieldTable, ShortStr};
use lepus::ids::ExchangeKind;
use lepus::routing::topic::topic_matches;
use lepus::routing::BindingTable;

/// Routing keys every benchmark publishes with (a mix of hits and misses).
const KEYS: [&str; 4] = ["stock.nyse.ibm", "stock.nasdaq.aapl.trade", "weather.eu.paris", "audit.none.here"];

/// 1,000 patterns in the shapes real topic users bind: mostly literal
/// prefixes with a trailing wildcard, some `*` in the middle, a few `#`.
fn many_patterns() -> Vec<String> {
    let mut patterns = Vec::with_capacity(1000);
    for i in 0..1000 {
        let p = match i % 5 {
            0 => format!("stock.ex{}.sym{}", i % 37, i),
            1 => format!("stock.*.sym{i}"),
            2 => format!("weather.region{}.#", i % 50),
            3 => format!("audit.user{i}.*"),
            _ => format!("#.tag{i}"),
        };
        patterns.push(p);
    }
    // A few that hit the benchmark keys.
    patterns.extend(["stock.#", "stock.nyse.*", "*.eu.#"].map(String::from));
    patterns
}

fn few_patterns() -> Vec<String> {
    ["stock.nyse.*", "stock.#", "weather.*.paris", "#.trade"].map(String::from).to_vec()
}

fn table_of(patterns: &[String]) -> BindingTable<u32> {
    let mut t = BindingTable::new(ExchangeKind::Topic);
    let args = FieldTable::new();
    for (i, p) in patterns.iter().enumerate() {
        let queue = (i % 400) as u32; // several bindings per queue
        let added = t.bind(queue, &ShortStr::copy_from_str(p), &args);
        assert!(added.is_ok(), "bind {p}");
    }
    t
}

fn bench_route(c: &mut Criterion) {
    let mut group = c.benchmark_group("BindingTable::route");
    for (name, patterns) in [("topic_4_bindings", few_patterns()), ("topic_1000_bindings", many_patterns())] {
        let table = table_of(&patterns);
        let mut out: Vec<u32> = Vec::with_capacity(1024);
        // Topic routing never reads the properties.
        let header = bytes::Bytes::new();
        let properties = lepus::message::RouteProperties::new(&header);
        group.bench_function(name, |b| {
            b.iter(|| {
                for key in KEYS {
                    out.clear();
                    table.route(black_box(key.as_bytes()), &properties, &mut out);
                    black_box(&out);
                }
            })
        });
    }
    group.finish();
}

fn bench_reference(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic_matches");
    let patterns = many_patterns();
    group.bench_function("linear_scan_1000_bindings", |b| {
        b.iter(|| {
            let mut hits = 0usize;
            for key in KEYS {
                for p in &patterns {
                    hits += usize::from(topic_matches(p.as_bytes(), black_box(key.as_bytes())));
                }
            }
            black_box(hits)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_route, bench_reference);
criterion_main!(benches);
