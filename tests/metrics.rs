//! The Prometheus endpoint over real HTTP: its text passes Prometheus's own
//! parser and linter (`promtool check metrics`, from Debian's `prometheus`
//! package), it has every series the RabbitMQ-Overview Grafana dashboard
//! queries (tests/data/grafana-10991-metrics.txt), its values follow what
//! real clients do (publish N, see N), and it carries Lepus's per-shard
//! series.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures_lite::StreamExt as _;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;

const PROMTOOL: &str = "/usr/bin/promtool";

/// Series the dashboard queries that Lepus does not have.
const NOT_KEPT: &[&str] = &[];

fn scrape(url: &str) -> (u16, String, String) {
    tokio::task::block_in_place(|| match ureq::get(url).call() {
        Ok(r) => {
            let kind = r.header("content-type").unwrap_or("").to_owned();
            (r.status(), kind, r.into_string().unwrap_or_default())
        }
        Err(ureq::Error::Status(code, r)) => (code, String::new(), r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {url}: {e}"),
    })
}

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the text format's samples (comments skipped).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("a sample line: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("a number in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("labels in {line}"));
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("a label in {line}"));
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        out.push((name, labels, value));
    }
    out
}

/// The value of `name` with exactly these `labels` (None: no such sample).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> =
        labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    samples.iter().find(|(n, l, _)| n == name && *l == want).map(|s| s.2)
}

/// Scrapes `url` until `ok` holds, or panics with the last text.
fn wait_for(url: &str, what: &str, ok: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, text) = scrape(url);
        let samples = parse(&text);
        if ok(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what} in {url}:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `promtool check metrics` on `text`: (exit code, what it printed).
fn promtool(text: &str) -> Option<(i32, String)> {
    if !std::path::Path::new(PROMTOOL).exists() {
        eprintln!("SKIPPED the promtool check: {PROMTOOL} is missing (apt-get install prometheus)");
        return None;
    }
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("text written");
    let out = child.wait_with_output().expect("promtool finishes");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Some((out.status.code().unwrap_or(-1), said))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_what_clients_do_and_pass_promtool() {
    if external() {
        return;
    }
    let b = start_broker_with(fast_stats);
    let base = b.prometheus_url().expect("Prometheus endpoint");
    let metrics = format!("{base}/metrics");
    let per_object = format!("{base}/metrics/per-object");
    let queue = unique("mgr-metrics.q");
    let (conn, ch) = lapin_channel(&b).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    ch.queue_declare(&queue, QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    const N: f64 = 9.0;
    for _ in 0..N as usize {
        let confirm = ch
            .basic_publish("", &queue, BasicPublishOptions::default(), b"body", BasicProperties::default())
            .await
            .expect("publish");
        confirm.await.expect("confirmed");
    }
    let amqp = [("protocol", "amqp091")];
    let samples = wait_for(&metrics, "N published", |s| {
        value(s, "rabbitmq_channel_messages_published_total", &[]) == Some(N)
            && value(s, "rabbitmq_queue_messages_ready", &[]) == Some(N)
    });
    assert_eq!(value(&samples, "rabbitmq_global_messages_received_total", &amqp), Some(N));
    assert_eq!(value(&samples, "rabbitmq_global_messages_received_confirm_total", &amqp), Some(N));
    assert_eq!(value(&samples, "rabbitmq_global_messages_routed_total", &amqp), Some(N));
    assert_eq!(value(&samples, "rabbitmq_channel_messages_confirmed_total", &[]), Some(N));
    assert_eq!(value(&samples, "rabbitmq_queue_messages", &[]), Some(N));
    assert_eq!(value(&samples, "rabbitmq_queue_messages_ready_bytes", &[]), Some(4.0 * N));
    assert_eq!(value(&samples, "rabbitmq_queues", &[]), Some(1.0));
    // Nine 4-byte bodies: all in the first bucket (up to 100 bytes).
    let small = [("protocol", "amqp091"), ("le", "100.0")];
    assert_eq!(value(&samples, "rabbitmq_message_size_bytes_bucket", &small), Some(N));
    assert_eq!(value(&samples, "rabbitmq_message_size_bytes_sum", &amqp), Some(4.0 * N));
    assert_eq!(value(&samples, "rabbitmq_connections", &[]), Some(1.0));
    assert_eq!(value(&samples, "rabbitmq_channels", &[]), Some(1.0));
    let per = wait_for(&per_object, "the queue's series", |s| {
        value(s, "rabbitmq_queue_messages_ready", &[("vhost", "/"), ("queue", &queue)]) == Some(N)
    });
    assert_eq!(
        value(&per, "rabbitmq_queue_messages_published_total", &[("vhost", "/"), ("queue", &queue)]),
        Some(N)
    );
    let channel_published: Vec<&Sample> = per
        .iter()
        .filter(|(n, l, _)| n == "rabbitmq_channel_messages_published_total" && l.contains_key("channel"))
        .collect();
    assert_eq!(channel_published.len(), 1, "one channel");
    assert_eq!(channel_published[0].2, N);

    // Consume and ack them all.
    let mut consumer = ch
        .basic_consume(&queue, "m", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    for _ in 0..N as usize {
        let delivery = within("delivery", consumer.next()).await.expect("delivery").expect("ok");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    let samples =
        wait_for(&metrics, "N acked", |s| value(s, "rabbitmq_channel_messages_acked_total", &[]) == Some(N));
    assert_eq!(value(&samples, "rabbitmq_channel_messages_delivered_ack_total", &[]), Some(N));
    assert_eq!(value(&samples, "rabbitmq_global_messages_delivered_total", &amqp), Some(N));
    assert_eq!(
        value(&samples, "rabbitmq_global_messages_delivered_consume_manual_ack_total", &amqp),
        Some(N)
    );
    assert_eq!(value(&samples, "rabbitmq_global_messages_acknowledged_total", &amqp), Some(N));
    assert_eq!(value(&samples, "rabbitmq_channel_consumers", &[]), Some(1.0));

    // Node identity and resources.
    let server = b.server().expect("in-process");
    let node = samples.iter().find(|(n, _, _)| n == "rabbitmq_identity_info").expect("identity");
    assert!(node.1.contains_key("rabbitmq_node") && node.1.contains_key("rabbitmq_cluster"), "{:?}", node.1);
    assert_eq!(
        value(&samples, "rabbitmq_resident_memory_limit_bytes", &[]),
        Some(server.resource_limits().memory_budget_bytes() as f64)
    );
    assert!(value(&samples, "rabbitmq_process_resident_memory_bytes", &[]) > Some(0.0));
    assert!(value(&samples, "rabbitmq_process_open_fds", &[]) > Some(0.0));
    assert_eq!(value(&samples, "rabbitmq_alarms_memory_used_watermark", &[]), Some(0.0));

    // Lepus's shards: both, with a histogram whose +Inf bucket is its count.
    for shard in ["0", "1"] {
        let l = [("shard", shard)];
        assert!(value(&samples, "lepus_shard_turns_total", &l) > Some(0.0), "shard {shard} turns");
        let busy = value(&samples, "lepus_shard_busy_ratio", &l).expect("busy ratio");
        assert!((0.0..=1.0).contains(&busy));
        let count = value(&samples, "lepus_shard_turn_duration_seconds_count", &l).expect("histogram count");
        let inf =
            value(&samples, "lepus_shard_turn_duration_seconds_bucket", &[("shard", shard), ("le", "+Inf")]);
        assert_eq!(inf, Some(count));
        assert!(count > 0.0);
        for series in ["lepus_shard_connections", "lepus_shard_queues", "lepus_shard_held_publishers"] {
            assert!(value(&samples, series, &l).is_some(), "{series} of shard {shard}");
        }
        let other = if shard == "0" { "1" } else { "0" };
        assert!(value(&samples, "lepus_shard_ring_occupancy", &[("shard", shard), ("from", other)]).is_some());
    }
    let queues_on_shards: f64 =
        ["0", "1"].iter().filter_map(|s| value(&samples, "lepus_shard_queues", &[("shard", s)])).sum();
    assert_eq!(queues_on_shards, 1.0);

    // Prometheus's own parser and linter accept both pages as they are.
    for url in [&metrics, &per_object] {
        let (status, kind, text) = scrape(url);
        assert_eq!(status, 200, "no credentials needed");
        assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
        if let Some((code, said)) = promtool(&text) {
            assert_eq!((code, said.trim()), (0, ""), "promtool check metrics on {url}");
        }
    }
    let _ = conn.close(200, "bye").await;
}

/// The delay store's series: how many messages it holds, and how late after
/// their due time it routed them (not how long they were held).
#[tokio::test(flavor = "multi_thread")]
async fn delayed_release_lateness_counts_from_the_due_time() {
    if external() {
        return;
    }
    let b = start_broker_with(fast_stats);
    let metrics = format!("{}/metrics", b.prometheus_url().expect("Prometheus endpoint"));
    let (conn, ch) = lapin_channel(&b).await;
    let exchange = unique("metrics.delayed");
    let mut args = FieldTable::default();
    args.insert("x-delayed-type".into(), lapin::types::AMQPValue::LongString("direct".into()));
    ch.exchange_declare(
        &exchange,
        lapin::ExchangeKind::Custom("x-delayed-message".into()),
        ExchangeDeclareOptions::default(),
        args,
    )
    .await
    .expect("x-delayed-message declares");
    let queue = unique("metrics.delayed.q");
    ch.queue_declare(&queue, QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    ch.queue_bind(&queue, &exchange, "k", QueueBindOptions::default(), FieldTable::default())
        .await
        .expect("bind");
    const DELAY_MS: i32 = 600;
    let mut headers = FieldTable::default();
    headers.insert("x-delay".into(), lapin::types::AMQPValue::LongInt(DELAY_MS));
    let properties = BasicProperties::default().with_headers(headers);
    ch.basic_publish(&exchange, "k", BasicPublishOptions::default(), b"later", properties)
        .await
        .expect("publish");
    let sum_over = |s: &[Sample], name: &str| -> f64 {
        s.iter().filter(|(n, l, _)| n == name && !l.contains_key("le")).map(|x| x.2).sum()
    };
    wait_for(&metrics, "one held", |s| sum_over(s, "lepus_delayed_messages") == 1.0);
    let mut consumer = ch
        .basic_consume(
            &queue,
            "d",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    within("the delayed delivery", consumer.next()).await.expect("delivery").expect("ok");
    let samples = wait_for(&metrics, "one release", |s| {
        sum_over(s, "lepus_delayed_release_lateness_seconds_count") == 1.0
            && sum_over(s, "lepus_delayed_messages") == 0.0
    });
    // Routed on time give or take a turn: far less than the delay itself,
    // which a lateness counted from the publish would include.
    let late = sum_over(&samples, "lepus_delayed_release_lateness_seconds_sum");
    assert!(late < f64::from(DELAY_MS) / 1e3 / 2.0, "lateness {late} s");
    for shard in ["0", "1"] {
        let count = value(&samples, "lepus_delayed_release_lateness_seconds_count", &[("shard", shard)]);
        let inf = value(
            &samples,
            "lepus_delayed_release_lateness_seconds_bucket",
            &[("shard", shard), ("le", "+Inf")],
        );
        assert_eq!(inf, count, "shard {shard}: the +Inf bucket is the count");
    }
    let _ = conn.close(200, "bye").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_series_the_overview_dashboard_queries_is_there() {
    if external() {
        return;
    }
    let b = start_broker_with(fast_stats);
    let base = b.prometheus_url().expect("Prometheus endpoint");
    let (status, _, text) = scrape(&format!("{base}/metrics"));
    assert_eq!(status, 200);
    let samples = parse(&text);
    let wanted =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/grafana-10991-metrics.txt"))
            .expect("the dashboard's list");
    let mut missing = Vec::new();
    for name in wanted.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if NOT_KEPT.contains(&name) {
            continue;
        }
        let found = samples.iter().any(|(n, _, _)| n == name || n.strip_suffix("_bucket") == Some(name));
        if !found {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "series the dashboard needs, missing: {missing:?}");
    let (status, _, _) = scrape(&format!("{base}/no-such-page"));
    assert_eq!(status, 404);
}
