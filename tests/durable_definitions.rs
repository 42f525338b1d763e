//! Durable definitions: durable exchanges, queues and bindings survive a
//! restart of the broker and route again; transient and exclusive ones do
//! not; deletions stick; the data directory is locked; a damaged definitions
//! log still gives back everything before the damage.
//!
//! Every test here restarts the broker (or looks at its files), so each
//! returns early against an external broker.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..Default::default() }
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions { durable: true, ..Default::default() }
}

fn passive_queue() -> QueueDeclareOptions {
    QueueDeclareOptions { passive: true, ..Default::default() }
}

fn passive_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions { passive: true, ..Default::default() }
}

fn long_str(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

/// A fresh channel in confirm mode on `conn`.
async fn confirm_channel(conn: &lapin::Connection) -> lapin::Channel {
    let ch = within("channel", conn.create_channel()).await.expect("channel opens");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    ch
}

/// Passive declare of `queue` on a fresh channel: its reply code on failure.
async fn queue_exists(conn: &lapin::Connection, queue: &str) -> Result<(), Option<u16>> {
    let ch = within("channel", conn.create_channel()).await.expect("channel opens");
    let res =
        within("passive queue.declare", ch.queue_declare(queue, passive_queue(), FieldTable::default()))
            .await;
    match res {
        Ok(_) => {
            let _ = ch.close(200, "done").await;
            Ok(())
        }
        Err(e) => Err(lapin_reply_code(&e)),
    }
}

/// Passive declare of `exchange` on a fresh channel: its reply code on failure.
async fn exchange_exists(conn: &lapin::Connection, exchange: &str) -> Result<(), Option<u16>> {
    let ch = within("channel", conn.create_channel()).await.expect("channel opens");
    let res = within(
        "passive exchange.declare",
        ch.exchange_declare(exchange, ExchangeKind::Direct, passive_exchange(), FieldTable::default()),
    )
    .await;
    match res {
        Ok(()) => {
            let _ = ch.close(200, "done").await;
            Ok(())
        }
        Err(e) => Err(lapin_reply_code(&e)),
    }
}

/// Names for one test's entities.
struct Names {
    direct: String,
    topic: String,
    headers: String,
    upstream: String,
    dlx: String,
    q_direct: String,
    q_topic: String,
    q_headers: String,
    q_dead: String,
}

impl Names {
    fn new() -> Names {
        Names {
            direct: unique("durable.direct"),
            topic: unique("durable.topic"),
            headers: unique("durable.headers"),
            upstream: unique("durable.upstream"),
            dlx: unique("durable.dlx"),
            q_direct: unique("durable.q-direct"),
            q_topic: unique("durable.q-topic"),
            q_headers: unique("durable.q-headers"),
            q_dead: unique("durable.q-dead"),
        }
    }
}

fn limited_args(dlx: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(2));
    args.insert("x-dead-letter-exchange".into(), long_str(dlx));
    args
}

fn blue_headers() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-match".into(), long_str("all"));
    args.insert("colour".into(), long_str("blue"));
    args
}

/// Declares durable exchanges of every type, durable queues (one with a
/// length limit and a dead-letter exchange) and bindings of every kind.
async fn declare_topology(ch: &lapin::Channel, n: &Names) {
    let none = FieldTable::default;
    for (name, kind) in [
        (&n.direct, ExchangeKind::Direct),
        (&n.topic, ExchangeKind::Topic),
        (&n.headers, ExchangeKind::Headers),
        (&n.upstream, ExchangeKind::Direct),
        (&n.dlx, ExchangeKind::Fanout),
    ] {
        ch.exchange_declare(name, kind, durable_exchange(), none()).await.expect("exchange.declare");
    }
    ch.queue_declare(&n.q_direct, durable_queue(), limited_args(&n.dlx)).await.expect("queue.declare");
    for queue in [&n.q_topic, &n.q_headers, &n.q_dead] {
        ch.queue_declare(queue, durable_queue(), none()).await.expect("queue.declare");
    }
    let bind = QueueBindOptions::default();
    ch.queue_bind(&n.q_direct, &n.direct, "k", bind, none()).await.expect("direct bind");
    ch.queue_bind(&n.q_direct, "amq.direct", &n.q_direct, bind, none()).await.expect("amq.direct bind");
    ch.queue_bind(&n.q_topic, &n.topic, "a.*.c", bind, none()).await.expect("topic bind");
    ch.queue_bind(&n.q_headers, &n.headers, "", bind, blue_headers()).await.expect("headers bind");
    ch.queue_bind(&n.q_dead, &n.dlx, "", bind, none()).await.expect("dlx bind");
    ch.exchange_bind(&n.topic, &n.upstream, "a.x.c", ExchangeBindOptions::default(), none())
        .await
        .expect("exchange-to-exchange bind");
}

/// Publishes through every binding and checks where the messages land.
async fn assert_topology_routes(conn: &lapin::Connection, n: &Names) {
    let ch = confirm_channel(conn).await;
    let props = BasicProperties::default;
    for i in 0..3 {
        publish_confirmed(&ch, &n.direct, "k", &format!("direct-{i}"), props()).await;
    }
    publish_confirmed(&ch, "amq.direct", &n.q_direct, "through amq.direct", props()).await;
    publish_confirmed(&ch, &n.topic, "a.b.c", "topic", props()).await;
    publish_confirmed(&ch, &n.upstream, "a.x.c", "through upstream", props()).await;
    publish_confirmed(&ch, &n.upstream, "a.y.c", "not bound upstream", props()).await;
    let mut blue = FieldTable::default();
    blue.insert("colour".into(), long_str("blue"));
    let mut red = FieldTable::default();
    red.insert("colour".into(), long_str("red"));
    publish_confirmed(&ch, &n.headers, "", "blue", props().with_headers(blue)).await;
    publish_confirmed(&ch, &n.headers, "", "red", props().with_headers(red)).await;
    // x-max-length 2 dropped the two oldest, dead-lettered through the DLX.
    assert_eq!(drain(&ch, &n.q_direct).await, ["direct-2", "through amq.direct"]);
    assert_eq!(drain(&ch, &n.q_dead).await, ["direct-0", "direct-1"]);
    assert_eq!(drain(&ch, &n.q_topic).await, ["topic", "through upstream"]);
    assert_eq!(drain(&ch, &n.q_headers).await, ["blue"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_exchanges_queues_and_bindings_survive_a_restart_and_route_again() {
    if external() {
        return;
    }
    let mut b = start_broker();
    let n = Names::new();
    let (conn, ch) = lapin_channel(&b).await;
    declare_topology(&ch, &n).await;
    assert_topology_routes(&conn, &n).await;
    drop(conn);
    b.restart();
    let conn = lapin_conn(&b).await;
    for exchange in [&n.direct, &n.topic, &n.headers, &n.upstream, &n.dlx] {
        assert_eq!(exchange_exists(&conn, exchange).await, Ok(()), "exchange {exchange} after a restart");
    }
    for queue in [&n.q_direct, &n.q_topic, &n.q_headers, &n.q_dead] {
        assert_eq!(queue_exists(&conn, queue).await, Ok(()), "queue {queue} after a restart");
    }
    assert_topology_routes(&conn, &n).await;
    // And once more: the log rewritten at the first restart is read back.
    drop(conn);
    b.restart();
    let conn = lapin_conn(&b).await;
    assert_topology_routes(&conn, &n).await;
    let _ = conn.close(200, "bye").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_and_exclusive_definitions_are_gone_after_a_restart() {
    if external() {
        return;
    }
    let mut b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let none = FieldTable::default;
    let transient_exchange = unique("transient.exchange");
    let durable_x = unique("transient.durable-exchange");
    let transient_queue = unique("transient.queue");
    let exclusive_durable = unique("transient.exclusive-durable");
    let durable_q = unique("transient.durable-queue");
    ch.exchange_declare(&transient_exchange, ExchangeKind::Fanout, ExchangeDeclareOptions::default(), none())
        .await
        .expect("transient exchange");
    ch.exchange_declare(&durable_x, ExchangeKind::Fanout, durable_exchange(), none())
        .await
        .expect("exchange");
    ch.queue_declare(&transient_queue, QueueDeclareOptions::default(), none())
        .await
        .expect("transient queue");
    ch.queue_declare(
        &exclusive_durable,
        QueueDeclareOptions { exclusive: true, durable: true, ..Default::default() },
        none(),
    )
    .await
    .expect("exclusive durable queue");
    ch.queue_declare(&durable_q, durable_queue(), none()).await.expect("durable queue");
    // Bindings with a transient end are not durable.
    let bind = QueueBindOptions::default();
    ch.queue_bind(&durable_q, &transient_exchange, "", bind, none()).await.expect("bind");
    ch.queue_bind(&transient_queue, &durable_x, "", bind, none()).await.expect("bind");
    ch.queue_bind(&exclusive_durable, &durable_x, "", bind, none()).await.expect("bind");
    ch.queue_bind(&durable_q, &durable_x, "", bind, none()).await.expect("bind");
    drop(conn);
    b.restart();
    let conn = lapin_conn(&b).await;
    assert_eq!(exchange_exists(&conn, &transient_exchange).await, Err(Some(404)));
    assert_eq!(queue_exists(&conn, &transient_queue).await, Err(Some(404)));
    assert_eq!(queue_exists(&conn, &exclusive_durable).await, Err(Some(404)));
    assert_eq!(exchange_exists(&conn, &durable_x).await, Ok(()));
    assert_eq!(queue_exists(&conn, &durable_q).await, Ok(()));
    let ch = confirm_channel(&conn).await;
    publish_confirmed(&ch, &durable_x, "", "fanned out", BasicProperties::default()).await;
    assert_eq!(drain(&ch, &durable_q).await, ["fanned out"], "only the durable binding came back");
    let _ = conn.close(200, "bye").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_definitions_stay_deleted_after_a_restart() {
    if external() {
        return;
    }
    let mut b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let none = FieldTable::default;
    let bind = QueueBindOptions::default();
    let deleted_x = unique("deleted.exchange");
    let deleted_q = unique("deleted.queue");
    let kept_x = unique("deleted.kept-exchange");
    let kept_q = unique("deleted.kept-queue");
    let auto_x = unique("deleted.auto-exchange");
    let auto_x2 = unique("deleted.auto-exchange-2");
    let doomed_q = unique("deleted.doomed-queue");
    let auto_delete = ExchangeDeclareOptions { durable: true, auto_delete: true, ..Default::default() };
    ch.exchange_declare(&deleted_x, ExchangeKind::Direct, durable_exchange(), none()).await.expect("declare");
    ch.exchange_declare(&kept_x, ExchangeKind::Direct, durable_exchange(), none()).await.expect("declare");
    ch.exchange_declare(&auto_x, ExchangeKind::Direct, auto_delete, none()).await.expect("declare");
    ch.exchange_declare(&auto_x2, ExchangeKind::Direct, auto_delete, none()).await.expect("declare");
    for queue in [&deleted_q, &kept_q, &doomed_q] {
        ch.queue_declare(queue, durable_queue(), none()).await.expect("declare");
    }
    ch.queue_bind(&kept_q, &deleted_x, "k", bind, none()).await.expect("bind");
    ch.queue_bind(&deleted_q, &kept_x, "k", bind, none()).await.expect("bind");
    ch.queue_bind(&kept_q, &kept_x, "unbound", bind, none()).await.expect("bind");
    ch.queue_bind(&kept_q, &kept_x, "kept", bind, none()).await.expect("bind");
    ch.queue_bind(&kept_q, &auto_x, "k", bind, none()).await.expect("bind");
    ch.queue_bind(&doomed_q, &auto_x2, "k", bind, none()).await.expect("bind");
    ch.exchange_delete(&deleted_x, ExchangeDeleteOptions::default()).await.expect("exchange.delete");
    ch.queue_delete(&deleted_q, QueueDeleteOptions::default()).await.expect("queue.delete");
    ch.queue_unbind(&kept_q, &kept_x, "unbound", none()).await.expect("unbind");
    // Its last binding gone, an auto-delete exchange goes too: by unbind, and
    // by the deletion of the queue it was bound to.
    ch.queue_unbind(&kept_q, &auto_x, "k", none()).await.expect("unbind");
    ch.queue_delete(&doomed_q, QueueDeleteOptions::default()).await.expect("queue.delete");
    drop(conn);
    b.restart();
    let conn = lapin_conn(&b).await;
    assert_eq!(exchange_exists(&conn, &deleted_x).await, Err(Some(404)));
    assert_eq!(queue_exists(&conn, &deleted_q).await, Err(Some(404)));
    assert_eq!(exchange_exists(&conn, &auto_x).await, Err(Some(404)));
    assert_eq!(exchange_exists(&conn, &auto_x2).await, Err(Some(404)));
    assert_eq!(queue_exists(&conn, &doomed_q).await, Err(Some(404)));
    let ch = confirm_channel(&conn).await;
    publish_confirmed(&ch, &kept_x, "unbound", "to nobody", BasicProperties::default()).await;
    publish_confirmed(&ch, &kept_x, "kept", "to kept", BasicProperties::default()).await;
    assert_eq!(drain(&ch, &kept_q).await, ["to kept"]);
    let _ = conn.close(200, "bye").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_queue_keeps_its_arguments_and_refuses_other_ones_with_406() {
    if external() {
        return;
    }
    let mut b = start_broker();
    let dlx = unique("args.dlx");
    let queue = unique("args.queue");
    let (conn, ch) = lapin_channel(&b).await;
    ch.queue_declare(&queue, durable_queue(), limited_args(&dlx)).await.expect("declare");
    drop(conn);
    b.restart();
    let (conn, ch) = lapin_channel(&b).await;
    ch.queue_declare(&queue, durable_queue(), limited_args(&dlx))
        .await
        .expect("the same arguments redeclare");
    let mut other = limited_args(&dlx);
    other.insert("x-max-length".into(), AMQPValue::LongLongInt(3));
    let res = ch.queue_declare(&queue, durable_queue(), other).await;
    assert_channel_error(&conn, res, 406, "PRECONDITION_FAILED - inequivalent arg 'x-max-length'").await;
    let ch = within("channel", conn.create_channel()).await.expect("channel");
    let res = ch.queue_declare(&queue, QueueDeclareOptions::default(), limited_args(&dlx)).await;
    assert_channel_error(&conn, res, 406, "PRECONDITION_FAILED - inequivalent arg 'durable'").await;
    let _ = conn.close(200, "bye").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_auto_delete_queue_stays_until_a_consumer_comes_and_goes() {
    if external() {
        return;
    }
    let mut b = start_broker();
    let queue = unique("auto-delete.queue");
    let (conn, ch) = lapin_channel(&b).await;
    let options = QueueDeclareOptions { durable: true, auto_delete: true, ..Default::default() };
    ch.queue_declare(&queue, options, FieldTable::default()).await.expect("declare");
    drop(conn);
    b.restart();
    let (conn, ch) = lapin_channel(&b).await;
    assert_eq!(queue_exists(&conn, &queue).await, Ok(()), "recovered: it never had a consumer");
    let consumer = ch
        .basic_consume(&queue, "c", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    ch.basic_cancel(consumer.tag().as_str(), BasicCancelOptions::default()).await.expect("cancel");
    await_queue_gone(&conn, &queue).await;
    drop(conn);
    b.restart();
    let conn = lapin_conn(&b).await;
    assert_eq!(queue_exists(&conn, &queue).await, Err(Some(404)), "its auto-deletion was recorded");
}

#[test]
fn a_second_broker_on_the_same_data_dir_is_refused_with_a_clear_error() {
    if external() {
        return;
    }
    let b = start_broker();
    let path = b.data_dir().expect("in-process broker").to_path_buf();
    let err = lepus::Server::start(in_process_config(&path)).expect_err("the data dir is locked");
    assert!(matches!(err, lepus::StartError::DataDir(_)), "{err:?}");
    let text = err.to_string();
    let expected =
        format!("{} is in use by another Lepus broker (pid {})", path.display(), std::process::id());
    assert!(text.contains(&expected), "{text:?} should contain {expected:?}");
    // The first broker is unharmed.
    let mut raw = Raw::connect(b.addr);
    raw.send_protocol_header();
    raw.read_start();
}

#[test]
fn a_file_in_place_of_the_data_dir_is_refused_with_a_clear_error() {
    if external() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("data");
    std::fs::write(&file, b"not a directory").expect("write");
    let err = lepus::Server::start(in_process_config(&file)).expect_err("a file is not a data dir");
    let text = err.to_string();
    assert!(text.contains(&format!("{} is not a directory", file.display())), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_definitions_log_still_recovers_everything_before_the_damage() {
    if external() {
        return;
    }
    let mut b = start_broker();
    let log = b.data_dir().expect("in-process broker").join("definitions.log");
    let n = Names::new();
    let (conn, ch) = lapin_channel(&b).await;
    declare_topology(&ch, &n).await;
    drop(conn);
    b.shutdown();
    // Garbage after the last record.
    let mut bytes = std::fs::read(&log).expect("definitions.log");
    bytes.extend_from_slice(b"\x17\x00\x00\x00garbage that is no record at all");
    std::fs::write(&log, &bytes).expect("append garbage");
    b.restart();
    let conn = lapin_conn(&b).await;
    assert_topology_routes(&conn, &n).await;
    // A record torn in the middle: the queue declared last is lost, nothing else.
    let last = unique("damaged.last");
    let ch = within("channel", conn.create_channel()).await.expect("channel");
    ch.queue_declare(&last, durable_queue(), FieldTable::default()).await.expect("declare");
    drop(conn);
    b.shutdown();
    let len = std::fs::metadata(&log).expect("definitions.log").len();
    std::fs::OpenOptions::new().write(true).open(&log).expect("open").set_len(len - 3).expect("truncate");
    b.restart();
    let conn = lapin_conn(&b).await;
    assert_eq!(queue_exists(&conn, &last).await, Err(Some(404)), "the torn record is dropped");
    assert_topology_routes(&conn, &n).await;
    let _ = conn.close(200, "bye").await;
}
