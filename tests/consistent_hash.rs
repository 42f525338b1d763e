//! The consistent-hash exchange (`x-consistent-hash`) through a real client
//! (lapin): keys spread over the bound queues in proportion to the binding
//! weights (and so over shards), a key keeps its queue while the bindings
//! are the same (across a restart too), `hash-header` and `hash-property`
//! hash what they name, messages without it all go to one queue, binding keys
//! that are no weight are refused with the plugin's texts, and the
//! management API and definitions list, accept and bring back the type.
//!
//! The texts were checked against RabbitMQ 3.10.8 with
//! `rabbitmq_consistent_hash_exchange` enabled; every test here passes
//! against it too.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, ExchangeKind};

fn chx() -> ExchangeKind {
    ExchangeKind::Custom("x-consistent-hash".into())
}

fn args(entries: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(k.to_string()), AMQPValue::LongString(v.to_string().into()));
    }
    t
}

/// Declares `exchange` (consistent hash, with `arguments`) and a queue per
/// weight, bound with that weight as key; each queue is declared on the
/// connection of its index, so with two connections they land on both
/// shards. Returns the queue names.
async fn ring(
    conns: &[&lapin::Connection],
    exchange: &str,
    arguments: FieldTable,
    weights: &[u32],
    durable: bool,
) -> Vec<String> {
    let ch = conns[0].create_channel().await.expect("channel");
    let options = ExchangeDeclareOptions { durable, ..Default::default() };
    ch.exchange_declare(exchange, chx(), options, arguments).await.expect("exchange.declare");
    let mut queues = Vec::new();
    for (i, weight) in weights.iter().enumerate() {
        let qch = conns[i % conns.len()].create_channel().await.expect("channel");
        let q = unique(&format!("chx.q{i}"));
        let options = QueueDeclareOptions { durable, ..Default::default() };
        qch.queue_declare(&q, options, FieldTable::default()).await.expect("queue.declare");
        qch.queue_bind(&q, exchange, &weight.to_string(), QueueBindOptions::default(), FieldTable::default())
            .await
            .expect("queue.bind");
        qch.close(200, "bound").await.expect("close");
        queues.push(q);
    }
    ch.close(200, "declared").await.expect("close");
    queues
}

/// Publishes one message per (key, properties) on a confirm channel and
/// waits for every confirm.
async fn publish_all(ch: &lapin::Channel, exchange: &str, messages: Vec<(String, BasicProperties)>) {
    for (i, (key, props)) in messages.into_iter().enumerate() {
        ch.basic_publish(exchange, &key, BasicPublishOptions::default(), i.to_string().as_bytes(), props)
            .await
            .expect("publish");
    }
    assert!(within("confirms", ch.wait_for_confirms()).await.expect("confirms").is_empty(), "all acked");
}

async fn confirm_channel(conn: &lapin::Connection) -> lapin::Channel {
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    ch
}

/// The queue each body landed in.
async fn where_each_went(ch: &lapin::Channel, queues: &[String]) -> HashMap<String, usize> {
    let mut landed = HashMap::new();
    for (i, q) in queues.iter().enumerate() {
        for body in drain(ch, q).await {
            assert!(landed.insert(body, i).is_none(), "a message routed to two queues");
        }
    }
    landed
}

/// Message `i` belongs to group `i % groups`: every group's messages are in
/// one queue, and the groups are not all in the same one. Returns each
/// group's queue.
fn one_queue_per_group(landed: &HashMap<String, usize>, groups: usize, what: &str) -> HashMap<usize, usize> {
    let mut home: HashMap<usize, usize> = HashMap::new();
    for (body, queue) in landed {
        let group = body.parse::<usize>().expect("index") % groups;
        assert_eq!(*home.entry(group).or_insert(*queue), *queue, "{what} {group} went to two queues");
    }
    assert!(home.values().collect::<HashSet<_>>().len() > 1, "{groups} {what}s all on one queue");
    home
}

/// A message whose header `user` is `u{user}`.
fn from_user(user: usize) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert("user".into(), AMQPValue::LongString(format!("u{user}").into()));
    BasicProperties::default().with_headers(headers)
}

/// Publishes `props` messages as mandatory, each with its own routing key,
/// and checks that none came back and that they all landed in one queue
/// (RabbitMQ 3.10 hashes `undefined` for a message without what is hashed).
async fn all_in_one_queue(
    ch: &lapin::Channel,
    exchange: &str,
    queues: &[String],
    props: Vec<BasicProperties>,
) {
    let n = props.len();
    let options = BasicPublishOptions { mandatory: true, ..Default::default() };
    for (i, p) in props.into_iter().enumerate() {
        let confirm = ch
            .basic_publish(exchange, &format!("key-{i}"), options, i.to_string().as_bytes(), p)
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack(), "confirmed");
        assert!(confirm.take_message().is_none(), "message {i} came back: it should be routed");
    }
    let landed = where_each_went(ch, queues).await;
    assert_eq!(landed.len(), n, "every message routed once");
    let homes: HashSet<_> = landed.values().collect();
    assert_eq!(homes.len(), 1, "all in one queue: {landed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_spread_over_queues_and_shards_by_weight() {
    let b = start_broker();
    let (a, b_conn) = (lapin_conn(&b).await, lapin_conn(&b).await);
    let x = unique("chx.weights");
    let queues = ring(&[&a, &b_conn], &x, FieldTable::default(), &[1, 2, 3], false).await;
    if !external() {
        let shards: HashSet<_> = queues.iter().filter_map(|q| b.queue_shard(q)).collect();
        assert_eq!(shards.len(), 2, "the queues are on both shards");
    }
    let ch = confirm_channel(&a).await;
    let total = 12_000u32;
    let messages = (0..total).map(|i| (format!("order-{i}"), BasicProperties::default())).collect();
    publish_all(&ch, &x, messages).await;
    let mut counts = Vec::new();
    for q in &queues {
        counts.push(queue_len(&a, q).await);
    }
    assert_eq!(counts.iter().sum::<u32>(), total, "every message went to exactly one queue: {counts:?}");
    for (i, weight) in [1u32, 2, 3].iter().enumerate() {
        let expected = f64::from(total * weight) / 6.0;
        let off = (f64::from(counts[i]) - expected).abs() / expected;
        assert!(off < 0.15, "queue of weight {weight} got {} of {total}: {counts:?}", counts[i]);
    }
    a.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_keeps_its_queue_while_the_bindings_stay_and_across_a_restart() {
    let mut b = start_broker();
    let conn = lapin_conn(&b).await;
    let x = unique("chx.stable");
    let queues = ring(&[&conn], &x, FieldTable::default(), &[1, 1, 1, 1], true).await;
    let keys: Vec<String> = (0..40).map(|i| format!("customer-{i}")).collect();
    let ch = confirm_channel(&conn).await;
    // Each key three times: all three copies land together.
    let messages = keys.iter().cycle().take(keys.len() * 3).map(|k| (k.clone(), BasicProperties::default()));
    publish_all(&ch, &x, messages.collect()).await;
    let landed = where_each_went(&ch, &queues).await;
    let home = one_queue_per_group(&landed, keys.len(), "key");
    if external() {
        return;
    }
    conn.close(200, "restart").await.expect("close");
    b.restart();
    let conn = lapin_conn(&b).await;
    let ch = confirm_channel(&conn).await;
    publish_all(&ch, &x, keys.iter().map(|k| (k.clone(), BasicProperties::default())).collect()).await;
    let after = where_each_went(&ch, &queues).await;
    for (body, queue) in after {
        let key = body.parse::<usize>().expect("index");
        assert_eq!(home[&key], queue, "key {key} moved after a restart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_header_groups_by_header_and_sends_messages_without_it_to_one_queue() {
    let b = start_broker();
    let conn = lapin_conn(&b).await;
    let x = unique("chx.header");
    let queues = ring(&[&conn], &x, args(&[("hash-header", "user")]), &[1, 1, 1], false).await;
    let ch = confirm_channel(&conn).await;
    // The routing key changes every time; only the header decides.
    let messages = (0..300).map(|i| (format!("rk-{i}"), from_user(i % 30))).collect();
    publish_all(&ch, &x, messages).await;
    let landed = where_each_went(&ch, &queues).await;
    assert_eq!(landed.len(), 300);
    one_queue_per_group(&landed, 30, "user");

    // No header, or another one: routed, all to the same queue, whatever
    // the routing key.
    let mut other = FieldTable::default();
    other.insert("tenant".into(), AMQPValue::LongString("t1".into()));
    let without = (0..20)
        .map(|i| {
            if i % 2 == 0 {
                BasicProperties::default()
            } else {
                BasicProperties::default().with_headers(other.clone())
            }
        })
        .collect();
    all_in_one_queue(&ch, &x, &queues, without).await;
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_property_uses_message_id_correlation_id_or_timestamp() {
    let b = start_broker();
    let conn = lapin_conn(&b).await;
    type Set = fn(BasicProperties, usize) -> BasicProperties;
    let cases: [(&str, Set); 3] = [
        ("message_id", |p, i| p.with_message_id(format!("m{i}").into())),
        ("correlation_id", |p, i| p.with_correlation_id(format!("c{i}").into())),
        ("timestamp", |p, i| p.with_timestamp(1_700_000_000 + i as u64)),
    ];
    for (property, set) in cases {
        let x = unique("chx.property");
        let queues = ring(&[&conn], &x, args(&[("hash-property", property)]), &[1, 1, 1], false).await;
        let ch = confirm_channel(&conn).await;
        let messages =
            (0..120).map(|i| (format!("rk-{i}"), set(BasicProperties::default(), i % 20))).collect();
        publish_all(&ch, &x, messages).await;
        let landed = where_each_went(&ch, &queues).await;
        assert_eq!(landed.len(), 120, "{property}: every message routed");
        one_queue_per_group(&landed, 20, property);
        // Without the property: all to one queue.
        all_in_one_queue(&ch, &x, &queues, vec![BasicProperties::default(); 20]).await;
        ch.close(200, "next").await.expect("close");
    }
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_keys_must_be_positive_integers_and_arguments_are_checked() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let x = unique("chx.errors");
    ch.exchange_declare(&x, chx(), ExchangeDeclareOptions::default(), FieldTable::default())
        .await
        .expect("declare");
    let q = server_named_queue(&ch).await;
    let refused = [
        ("abc", "PRECONDITION_FAILED - The binding key must be an integer: <<\"abc\">>"),
        (" 3", "PRECONDITION_FAILED - The binding key must be an integer: <<\" 3\">>"),
        ("0", "PRECONDITION_FAILED - The binding key must be greater than 0"),
        ("-1", "PRECONDITION_FAILED - The binding key must be greater than 0"),
    ];
    for (key, text) in refused {
        let ch = conn.create_channel().await.expect("channel");
        let res = ch.queue_bind(&q, &x, key, QueueBindOptions::default(), FieldTable::default()).await;
        assert_channel_error(&conn, res, 406, text).await;
    }
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_bind(&q, &x, "+2", QueueBindOptions::default(), FieldTable::default())
        .await
        .expect("'+2' is a weight, as in Erlang");

    let declares = [
        (
            args(&[("hash-header", "h"), ("hash-property", "message_id")]),
            "PRECONDITION_FAILED - hash-header and hash-property are mutually exclusive",
        ),
        (args(&[("hash-property", "app_id")]), "PRECONDITION_FAILED - Unsupported property: app_id"),
    ];
    for (arguments, text) in declares {
        let ch = conn.create_channel().await.expect("channel");
        let res = ch
            .exchange_declare(&unique("chx.bad"), chx(), ExchangeDeclareOptions::default(), arguments)
            .await;
        assert_channel_error(&conn, res, 406, text).await;
    }
    conn.close(200, "bye").await.expect("close");
}

/// One authenticated GET or PUT on the management API.
fn http(b: &Broker, method: &str, path: &str, body: Option<serde_json::Value>) -> (u16, String) {
    let url = format!("{}{path}", b.management_url().expect("management API"));
    let request = ureq::request(method, &url).set("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=");
    let outcome = match body {
        Some(body) => request.send_json(body),
        None => request.call(),
    };
    match outcome {
        Ok(r) | Err(ureq::Error::Status(_, r)) => (r.status(), r.into_string().expect("body")),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_and_definitions_know_the_type() {
    if external() {
        return;
    }
    let b = start_broker();
    let (status, overview) = http(&b, "GET", "/api/overview", None);
    assert_eq!(status, 200);
    let overview: serde_json::Value = serde_json::from_str(&overview).expect("json");
    let types: Vec<&str> = overview["exchange_types"]
        .as_array()
        .expect("types")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(types.contains(&"x-consistent-hash"), "{types:?}");

    let x = unique("chx.mgmt");
    let put =
        serde_json::json!({"type": "x-consistent-hash", "durable": true, "arguments": {"hash-header": "h"}});
    let (status, body) = http(&b, "PUT", &format!("/api/exchanges/%2F/{x}"), Some(put));
    assert_eq!(status, 201, "{body}");
    let (status, body) = http(&b, "GET", &format!("/api/exchanges/%2F/{x}"), None);
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(listed["type"], "x-consistent-hash");

    let (conn, ch) = lapin_channel(&b).await;
    let q = unique("chx.mgmt.q");
    declare_durable(&ch, &q).await;
    ch.queue_bind(&q, &x, "5", QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    conn.close(200, "bye").await.expect("close");

    // Exported, then imported into another broker, where it routes.
    let doc = b.server().expect("in-process").export_definitions();
    let exported = doc["exchanges"].as_array().expect("exchanges").iter().find(|e| e["name"] == x.as_str());
    assert_eq!(exported.expect("exported")["type"], "x-consistent-hash");
    let binding = doc["bindings"].as_array().expect("bindings").iter().find(|e| e["source"] == x.as_str());
    assert_eq!(binding.expect("binding exported")["routing_key"], "5");

    let other = start_broker();
    let imported = other.server().expect("in-process").import_definitions(&doc);
    assert!(
        imported.applied > 0 && !imported.skipped.iter().any(|s| s.contains(&x)),
        "{:?}",
        imported.skipped
    );
    let (conn, _) = lapin_channel(&other).await;
    let ch = confirm_channel(&conn).await;
    let mut headers = FieldTable::default();
    headers.insert("h".into(), AMQPValue::LongString("v".into()));
    publish_confirmed(&ch, &x, "", "m", BasicProperties::default().with_headers(headers)).await;
    assert_eq!(queue_len(&conn, &q).await, 1, "the imported exchange routes by its header");
    conn.close(200, "bye").await.expect("close");
}

/// Behind an exchange-to-exchange binding the exchange still reads the
/// header, and the channel's route cache (by exchange and routing key)
/// does not hand every message the first one's queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_header_works_behind_an_exchange_to_exchange_binding() {
    let b = start_broker();
    let conn = lapin_conn(&b).await;
    let x = unique("chx.behind");
    let queues = ring(&[&conn], &x, args(&[("hash-header", "user")]), &[1, 1, 1], false).await;
    let ch = confirm_channel(&conn).await;
    let front = unique("chx.front");
    let options = ExchangeDeclareOptions { auto_delete: true, ..Default::default() };
    ch.exchange_declare(&front, ExchangeKind::Direct, options, FieldTable::default()).await.expect("declare");
    ch.exchange_bind(&x, &front, "k", ExchangeBindOptions::default(), FieldTable::default())
        .await
        .expect("exchange.bind");
    // The same exchange and key every time: only the header differs (a
    // cached route would send every user to the first one's queue).
    publish_all(&ch, &front, (0..120).map(|i| ("k".to_string(), from_user(i % 12))).collect()).await;
    let landed = where_each_went(&ch, &queues).await;
    assert_eq!(landed.len(), 120, "every message routed");
    one_queue_per_group(&landed, 12, "user");
    conn.close(200, "bye").await.expect("close");
}
