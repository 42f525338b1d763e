//! Crash trials of a stream queue: two publishers (one on the stream's
//! shard, one across) append with confirms while a consumer reads from
//! `first`; the broker is killed (SIGKILL) at a random moment, restarted,
//! and the whole stream is read again from `first`. The rules:
//!
//! - offsets are 0, 1, 2… with no gap and no repeat (in order, once);
//! - every confirmed message is there, exactly once, and each publisher's
//!   messages are in the order it published them;
//! - what the consumer saw before the kill is what is at those offsets
//!   after it (consumers see only records that are on disk);
//! - every body is intact.
//!
//! Small segments (`x-stream-max-segment-size-bytes`) make the kill land
//! around segment rolls too. Seeds and replay as in `main.rs`.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::publisher_confirm::{Confirmation, PublisherConfirm};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};

use crate::broker::{blocking, restart, Broker};
use crate::load::{connect_retrying, within};
use crate::{base_seed, body_of, parse_body, seq_of, trial_count, Rng, GOLDEN, LOAD_MS_MAX, SAFETY};

const STREAM: &str = "crash.stream";
/// The stream's segment size: many segments per trial.
const STREAM_SEGMENT_BYTES: i64 = 256 * 1024;
/// Messages per publisher at most.
const STREAM_PUBLISH_MAX: u64 = 30_000;
/// How long the reader has to end after the kill.
const READER_END: Duration = Duration::from_secs(10);

fn stream_args() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), AMQPValue::LongString("stream".into()));
    t.insert("x-stream-max-segment-size-bytes".into(), AMQPValue::LongLongInt(STREAM_SEGMENT_BYTES));
    t
}

/// Publishes with up to `window` unconfirmed until the connection fails;
/// returns (published in order, confirmed).
async fn publish(
    ch: Channel,
    publisher: u64,
    window: usize,
    stopping: Arc<AtomicBool>,
) -> (Vec<u64>, Vec<u64>) {
    let (mut published, mut confirmed) = (Vec::new(), Vec::new());
    let mut in_flight: VecDeque<(u64, PublisherConfirm)> = VecDeque::new();
    let settle = |seq: u64, outcome: lapin::Result<Confirmation>, confirmed: &mut Vec<u64>| {
        if let Ok(Confirmation::Ack(_)) = outcome {
            confirmed.push(seq);
        }
    };
    for n in 0..STREAM_PUBLISH_MAX {
        if in_flight.len() >= window {
            if let Some((seq, confirm)) = in_flight.pop_front() {
                settle(seq, confirm.await, &mut confirmed);
            }
        }
        let seq = seq_of(publisher, n);
        published.push(seq);
        let props = BasicProperties::default();
        match ch.basic_publish("", STREAM, BasicPublishOptions::default(), &body_of(seq), props).await {
            Ok(confirm) => in_flight.push_back((seq, confirm)),
            Err(_) => break,
        }
        if stopping.load(Ordering::SeqCst) && n % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for (seq, confirm) in in_flight {
        settle(seq, confirm.await, &mut confirmed);
    }
    (published, confirmed)
}

/// What a reader saw: (offset, body seq) in arrival order, and what was
/// wrong with deliveries.
#[derive(Debug, Default)]
struct Seen {
    got: Vec<(i64, u64)>,
    problems: Vec<String>,
}

/// Reads the stream from `first` with acks into `seen`, each delivery as it
/// arrives, until `limit` deliveries or the connection fails (or, with no
/// limit, fails).
async fn read(ch: &Channel, limit: Option<usize>, seen: &Mutex<Seen>) {
    ch.basic_qos(500, BasicQosOptions::default()).await.expect("qos");
    let mut args = FieldTable::default();
    args.insert("x-stream-offset".into(), AMQPValue::LongString("first".into()));
    let mut consumer =
        within("stream consume", ch.basic_consume(STREAM, "", BasicConsumeOptions::default(), args))
            .await
            .expect("stream consume");
    let mut count = 0;
    while limit.is_none_or(|n| count < n) {
        let next = match limit {
            Some(_) => within("a stream delivery after the restart", consumer.next()).await,
            None => consumer.next().await,
        };
        let Some(Ok(d)) = next else { break };
        count += 1;
        {
            let mut seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let offset = match d.properties.headers().as_ref().and_then(|h| h.inner().get("x-stream-offset"))
            {
                Some(AMQPValue::LongLongInt(n)) => *n,
                other => {
                    seen.problems.push(format!("delivery without an x-stream-offset long: {other:?}"));
                    -1
                }
            };
            match parse_body(&d.data) {
                Ok(seq) => seen.got.push((offset, seq)),
                Err(e) => seen.problems.push(e),
            }
        }
        let _ = d.ack(BasicAckOptions::default()).await;
    }
}

/// The rules of the module doc; returns the violations.
fn check(
    published: &[Vec<u64>],
    confirmed: &HashSet<u64>,
    before: &[(i64, u64)],
    after: &[(i64, u64)],
) -> Vec<String> {
    let mut violations = Vec::new();
    for (i, (offset, _)) in after.iter().enumerate() {
        if *offset != i as i64 {
            violations.push(format!("offset {offset} at position {i}: not 0, 1, 2… in order once"));
            break;
        }
    }
    let mut seen = HashSet::new();
    for (_, seq) in after {
        if !seen.insert(*seq) {
            violations.push(format!("seq {seq:#x} is in the stream twice"));
        }
    }
    let missing: Vec<u64> = confirmed.iter().filter(|s| !seen.contains(s)).copied().collect();
    if !missing.is_empty() {
        violations.push(format!("{} confirmed messages lost, e.g. {:#x}", missing.len(), missing[0]));
    }
    for order in published {
        let rank: BTreeMap<u64, usize> = order.iter().enumerate().map(|(i, s)| (*s, i)).collect();
        let ranks: Vec<usize> = after.iter().filter_map(|(_, s)| rank.get(s).copied()).collect();
        if ranks.windows(2).any(|w| w[0] >= w[1]) {
            violations.push("a publisher's messages are out of its order".into());
        }
    }
    let at: BTreeMap<i64, u64> = after.iter().copied().collect();
    for (offset, seq) in before {
        if at.get(offset) != Some(seq) {
            violations
                .push(format!("offset {offset} was {seq:#x} before the kill, {:?} after", at.get(offset)));
            break;
        }
    }
    violations
}

async fn trial(number: u64, trials: u64, seed: u64) {
    let mut rng = Rng(seed);
    let windows = [1 + rng.below(1000) as usize, 1 + rng.below(1000) as usize];
    let stop_after = Duration::from_millis(100 + rng.below(LOAD_MS_MAX));
    let dir = crate::TrialDir::new("lepus-crash-stream.");
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let mut broker = blocking(|| Broker::start(loopback, dir.path())).expect("lepus starts");
    let addr = broker.addr();
    // Connection k lands on shard k mod 2: the stream on shard 0, one
    // publisher local, one across, the consumer across.
    let local = connect_retrying(addr).await;
    let remote = connect_retrying(addr).await;
    let ch = local.create_channel().await.expect("channel");
    let opts = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare(STREAM, opts, stream_args()).await.expect("stream declare");
    let stopping = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for (p, conn) in [&local, &remote].into_iter().enumerate() {
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
        publishers.push(tokio::spawn(publish(ch, p as u64, windows[p], Arc::clone(&stopping))));
    }
    let reader_ch = remote.create_channel().await.expect("channel");
    let seen_before = Arc::new(Mutex::new(Seen::default()));
    let mut reader = tokio::spawn({
        let seen = Arc::clone(&seen_before);
        async move { read(&reader_ch, None, &seen).await }
    });
    // The random moment of the kill (the point of the test, not a synchronisation).
    tokio::time::sleep(stop_after).await;
    stopping.store(true, Ordering::SeqCst);
    broker.signal(libc::SIGKILL);
    blocking(|| broker.wait_exit()).expect("lepus exits after SIGKILL");
    let mut published = Vec::new();
    let mut confirmed = HashSet::new();
    for p in publishers {
        let (order, acked) = within("a publisher ends", p).await.expect("publisher task");
        published.push(order);
        confirmed.extend(acked);
    }
    // The reader only has to stop; what it saw is recorded as it came. Once
    // in 60 trials lapin left its `next()` or `ack()` unfinished after the
    // broker's process was gone, so a reader that has not ended by then is
    // stopped here rather than failing the trial on the client's hang.
    match tokio::time::timeout(READER_END, &mut reader).await {
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(_) => {}
        Err(_) => {
            println!(
                "crash stream trial {number}: the reader had not ended {READER_END:?} after the kill; stopped"
            );
            reader.abort();
        }
    }
    let Seen { got: before, mut problems } =
        std::mem::take(&mut *seen_before.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let mut restarted = blocking(|| restart(addr, dir.path()));
    let conn = connect_retrying(addr).await;
    // Appends go on after the recovered end.
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let mut more = Vec::new();
    for n in 0..10 {
        let seq = seq_of(2, n);
        let props = BasicProperties::default();
        let body = body_of(seq);
        let confirm = ch.basic_publish("", STREAM, BasicPublishOptions::default(), &body, props);
        more.push(seq);
        let acked = within("a publish after the restart", confirm).await.expect("publish").await;
        if matches!(acked, Ok(Confirmation::Ack(_))) {
            confirmed.insert(seq);
        }
    }
    published.push(more);
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let count = ch.queue_declare(STREAM, passive, FieldTable::default()).await.expect("passive declare");
    let count = count.message_count() as usize;
    let seen_after = Mutex::new(Seen::default());
    read(&ch, Some(count), &seen_after).await;
    let Seen { got: after, problems: more_problems } =
        seen_after.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    problems.extend(more_problems);
    restarted.signal(libc::SIGTERM);
    let _ = blocking(|| restarted.wait_exit());
    println!(
        "crash stream trial {number}/{trials} seed={seed:#x} windows={windows:?} stop_after={}ms: published={} \
         confirmed={} read before={} kept after={count}",
        stop_after.as_millis(),
        published.iter().map(Vec::len).sum::<usize>(),
        confirmed.len(),
        before.len(),
    );
    problems.extend(check(&published, &confirmed, &before, &after));
    if !problems.is_empty() {
        let kept = dir.keep();
        panic!(
            "crash stream trial seed={seed:#x} failed (data dir kept at {}):\n- {}\n--- stderr (tail):\n{}",
            kept.display(),
            problems.join("\n- "),
            broker.tail(30)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_keeps_a_stream_in_order_once() {
    let base = base_seed();
    let trials = trial_count();
    for i in 0..trials {
        let seed = base.wrapping_add(i.wrapping_mul(GOLDEN));
        let run = tokio::time::timeout(SAFETY * 4, trial(i + 1, trials, seed));
        if run.await.is_err() {
            panic!("crash stream trial seed={seed:#x} took too long");
        }
    }
}
