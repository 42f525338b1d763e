//! Compaction of the message log: segments whose messages are mostly acked
//! are removed once their few live messages are copied on, and those
//! messages come back after a restart once each, in order, with their
//! redelivered flags.
//!
//! The broker runs with small segments (64 KiB) so a few thousand messages
//! span dozens of them. Restarts need the in-process broker, so each test
//! returns early against an external one (LEPUS_TEST_EXTERNAL).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;

const SEGMENT_BYTES: u32 = 64 * 1024;
/// Messages of the busy queue between two of the stuck queue's.
const BUSY_PER_STUCK: usize = 300;
const STUCK: usize = 10;

fn small_segments(config: &mut lepus::Config) {
    config.message_log_segment_bytes = SEGMENT_BYTES;
}

/// Segment files in the data directory, all shards.
fn segment_files(data_dir: &Path) -> usize {
    let Ok(shards) = std::fs::read_dir(data_dir.join("messages")) else {
        return 0;
    };
    shards
        .flatten()
        .filter_map(|shard| std::fs::read_dir(shard.path()).ok())
        .flat_map(|files| files.flatten())
        .filter(|f| f.path().extension().is_some_and(|e| e == "seg"))
        .count()
}

/// Polls the data directory until at most `n` segment files are left (the
/// broker compacts on its own schedule; nothing announces it).
fn await_segments_at_most(data_dir: &Path, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let count = segment_files(data_dir);
        if count <= n {
            return count;
        }
        assert!(Instant::now() < deadline, "still {count} segment files, expected at most {n}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Publishes [`STUCK`] messages `{prefix}-{i}` to `stuck`, each followed by a
/// run of [`BUSY_PER_STUCK`] to `busy`, all persistent and confirmed: the
/// stuck queue's messages end up one in every few segments.
async fn publish_interleaved(ch: &lapin::Channel, (stuck, prefix): (&str, &str), busy: &str) {
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let persistent = BasicProperties::default().with_delivery_mode(2);
    let body = vec![b'x'; 1024];
    for i in 0..STUCK {
        let text = format!("{prefix}-{i}");
        ch.basic_publish("", stuck, BasicPublishOptions::default(), text.as_bytes(), persistent.clone())
            .await
            .expect("publish");
        for _ in 0..BUSY_PER_STUCK {
            ch.basic_publish("", busy, BasicPublishOptions::default(), &body, persistent.clone())
                .await
                .expect("publish");
        }
    }
    let nacked = within("confirms", ch.wait_for_confirms()).await.expect("confirms");
    assert!(nacked.is_empty(), "{} nacked", nacked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mostly_acked_segments_are_compacted_and_their_live_messages_survive() {
    if external() {
        return;
    }
    let mut broker = start_broker_with(small_segments);
    let data_dir = broker.data_dir().expect("in-process").to_path_buf();
    let (stuck, busy) = (unique("compaction-stuck"), unique("compaction-busy"));
    let (conn, ch) = lapin_channel(&broker).await;
    declare_durable(&ch, &stuck).await;
    declare_durable(&ch, &busy).await;
    publish_interleaved(&ch, (&stuck, "stuck"), &busy).await;
    let before = segment_files(&data_dir);
    let busy_bytes = STUCK * BUSY_PER_STUCK * 1024;
    assert!(before * SEGMENT_BYTES as usize >= busy_bytes, "{before} segments hold {busy_bytes} bytes");

    // The first stuck message is delivered and held unacked.
    let holder = conn.create_channel().await.expect("channel");
    holder.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
    let mut held = holder
        .basic_consume(&stuck, "holder", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let first = next_delivery(&mut held).await;
    assert_eq!(first.data, b"stuck-0");

    // Every busy message is consumed and acked.
    let drained = drain(&ch, &busy).await;
    assert_eq!(drained.len(), STUCK * BUSY_PER_STUCK);
    assert_eq!(queue_len(&conn, &busy).await, 0);

    // What is left is a few live messages per segment: compaction copies
    // them on, and the segments go.
    let after = await_segments_at_most(&data_dir, 8);
    println!("segment files: {before} after publishing, {after} after compaction");
    assert!(after < before / 4, "{before} segments before, {after} after");

    // They all come back after a restart, in order, once each; the one held
    // unacked is flagged redelivered.
    drop(held);
    broker.restart();
    let (conn, ch) = lapin_channel(&broker).await;
    assert_eq!(queue_len(&conn, &busy).await, 0, "no acked message came back");
    let got = get_all(&ch, &stuck).await;
    let want: Vec<(String, bool)> = (0..STUCK).map(|i| (format!("stuck-{i}"), i == 0)).collect();
    assert_eq!(got, want);
}

fn small_segments_short_retry(config: &mut lepus::Config) {
    small_segments(config);
    config.dead_letter_retry_ms = 100;
}

/// The held dead letters of an at-least-once quorum queue keep their
/// segments alive like any live message: compaction copies them on, and
/// after a restart they are still held (not ready), forwarded once each,
/// in order, when their exchange appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_dead_letters_are_compacted_and_stay_held() {
    use lapin::types::{AMQPValue, ShortString};
    if external() {
        return;
    }
    let mut broker = start_broker_with(small_segments_short_retry);
    let data_dir = broker.data_dir().expect("in-process").to_path_buf();
    let (source, busy) = (unique("compaction-alo"), unique("compaction-alo-busy"));
    let (exchange, target) = (unique("compaction-alo-x"), unique("compaction-alo-dlq"));
    let (conn, ch) = lapin_channel(&broker).await;
    let mut args = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(s.into());
    for (k, v) in [
        ("x-queue-type", text("quorum")),
        ("x-message-ttl", AMQPValue::LongInt(0)),
        ("x-overflow", text("reject-publish")),
        ("x-dead-letter-exchange", text(&exchange)),
        ("x-dead-letter-strategy", text("at-least-once")),
    ] {
        args.insert(ShortString::from(k), v);
    }
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare(&source, durable, args).await.expect("declare the source");
    declare_durable(&ch, &busy).await;
    publish_interleaved(&ch, (&source, "held"), &busy).await;
    assert_eq!(queue_len(&conn, &source).await, 0, "expired at once, held");
    let before = segment_files(&data_dir);
    assert_eq!(drain(&ch, &busy).await.len(), STUCK * BUSY_PER_STUCK);
    let after = await_segments_at_most(&data_dir, 8);
    println!("segment files: {before} after publishing, {after} after compaction");

    broker.restart();
    let (conn, ch) = lapin_channel(&broker).await;
    assert_eq!(queue_len(&conn, &source).await, 0, "still held, not ready");
    ch.exchange_declare(
        &exchange,
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange.declare");
    declare_durable(&ch, &target).await;
    ch.queue_bind(&target, &exchange, "", QueueBindOptions::default(), FieldTable::default())
        .await
        .expect("bind");
    let mut consumer = ch
        .basic_consume(
            &target,
            "",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    for i in 0..STUCK {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(String::from_utf8_lossy(&d.data), format!("held-{i}"));
    }
    assert_eq!(queue_len(&conn, &source).await, 0);
}
