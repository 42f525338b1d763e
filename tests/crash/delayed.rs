//! Crash trials of the `x-delayed-message` exchange: persistent messages
//! held by a durable delayed exchange survive `kill -9` and come back in
//! order, once.
//!
//! One trial: a broker with 2 shards; a durable delayed exchange (direct)
//! with a durable queue on each shard (`DELAYED_QUEUES`); one publisher on
//! shard 0 in confirm mode publishes persistent messages, all with the same
//! `x-delay` (so due order is publish order), each to one of the queues (the
//! one on shard 1 is reached across shards). Releases begin while it
//! publishes; at a random moment the broker is killed, restarted, and both
//! queues are consumed until a marker, published after the restart with a
//! longer delay, comes out of each (so everything the recovered delay store
//! releases is in before it). The rules: every confirmed message comes
//! back; in each queue the messages come in publish order and none twice.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

use crate::broker::{blocking, restart, Broker};
use crate::load::{connect_retrying, publish_confirmed_window, within};
use crate::{body_of, mix, parse_body, Rng};

const EXCHANGE: &str = "crash.delayed";
/// One queue per shard: declared by the first connection (shard 0) and the
/// second (shard 1).
const DELAYED_QUEUES: [&str; 2] = ["crash.delayed.q0", "crash.delayed.q1"];
/// The marker's body (not a sequence-numbered body).
const MARKER: &[u8] = b"marker";
/// Messages per trial, at most.
const DELAYED_PUBLISH_MAX: u64 = 20_000;

fn delayed_props(delay_ms: u64) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert("x-delay".into(), AMQPValue::LongLongInt(delay_ms as i64));
    BasicProperties::default().with_delivery_mode(2).with_headers(headers)
}

/// The queue (index) message `seq` is routed to.
fn delayed_queue_of(seq: u64) -> usize {
    (mix(seq) >> 32) as usize & 1
}

async fn declare(ch: &Channel, queue: usize, exchange: bool) {
    if exchange {
        let mut args = FieldTable::default();
        args.insert("x-delayed-type".into(), AMQPValue::LongString("direct".into()));
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        let kind = ExchangeKind::Custom("x-delayed-message".into());
        within("exchange.declare", ch.exchange_declare(EXCHANGE, kind, durable, args))
            .await
            .expect("declare");
    }
    let name = DELAYED_QUEUES[queue];
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    within("queue.declare", ch.queue_declare(name, durable, FieldTable::default())).await.expect("queue");
    let bind = ch.queue_bind(name, EXCHANGE, name, QueueBindOptions::default(), FieldTable::default());
    within("queue.bind", bind).await.expect("bind");
}

/// Publishes until `stopping` or the connection fails; returns the
/// confirmed sequence numbers.
async fn publish(ch: Channel, window: usize, delay_ms: u64, stopping: Arc<AtomicBool>) -> Vec<u64> {
    publish_confirmed_window(&ch, (window, DELAYED_PUBLISH_MAX), &stopping, |seq| {
        let ch = ch.clone();
        async move {
            let key = DELAYED_QUEUES[delayed_queue_of(seq)];
            ch.basic_publish(EXCHANGE, key, Default::default(), &body_of(seq), delayed_props(delay_ms)).await
        }
    })
    .await
}

/// After the restart: each queue's messages up to its marker, in order.
async fn drain(addr: SocketAddr, marker_delay_ms: u64) -> Result<[Vec<u64>; 2], String> {
    let conn = connect_retrying(addr).await;
    let ch = within("channel.open", conn.create_channel()).await.expect("channel");
    let mut got: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    let mut consumers = Vec::new();
    for name in DELAYED_QUEUES {
        let options = BasicConsumeOptions { no_ack: true, ..Default::default() };
        let consume = ch.basic_consume(name, "", options, FieldTable::default());
        consumers.push(within("basic.consume", consume).await.expect("consume"));
    }
    for name in DELAYED_QUEUES {
        let props = delayed_props(marker_delay_ms);
        let publish = ch.basic_publish(EXCHANGE, name, Default::default(), MARKER, props);
        within("marker", publish).await.expect("marker publish");
    }
    for (queue, consumer) in consumers.iter_mut().enumerate() {
        loop {
            let d = match within("a delivery after the restart", consumer.next()).await {
                Some(Ok(d)) => d,
                other => {
                    return Err(format!(
                        "{}: consumer ended: {:?}",
                        DELAYED_QUEUES[queue],
                        other.map(|r| r.err())
                    ))
                }
            };
            if d.data == MARKER {
                break;
            }
            got[queue].push(parse_body(&d.data)?);
        }
    }
    let _ = conn.close(200, "drained").await;
    Ok(got)
}

/// The rules: each queue in publish order, none twice; every confirmed one back.
fn violations(confirmed: &[u64], got: &[Vec<u64>; 2]) -> Vec<String> {
    let mut problems = Vec::new();
    for (queue, seqs) in got.iter().enumerate() {
        let mut seen = std::collections::HashSet::new();
        let mut last = None;
        for &seq in seqs {
            let name = DELAYED_QUEUES[queue];
            if !seen.insert(seq) {
                problems.push(format!("{name}: {seq} twice"));
            } else if last.is_some_and(|last| seq < last) {
                problems.push(format!("{name}: {seq} after {last:?} (out of order)"));
            }
            last = last.max(Some(seq));
        }
        if let Some(&wrong) = seqs.iter().find(|&&s| delayed_queue_of(s) != queue) {
            problems.push(format!("{}: {wrong} was routed here", DELAYED_QUEUES[queue]));
        }
    }
    let mut all: Vec<u64> = got.iter().flatten().copied().collect();
    all.sort_unstable();
    let lost: Vec<u64> = confirmed.iter().copied().filter(|s| all.binary_search(s).is_err()).collect();
    if !lost.is_empty() {
        problems.push(format!(
            "{} confirmed messages lost, first {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        ));
    }
    problems
}

pub async fn trial(number: u64, trials: u64, seed: u64) {
    let started = Instant::now();
    let mut rng = Rng(seed);
    let delay_ms = 100 + rng.below(900);
    let window = 1usize << rng.below(9);
    let stop_after = Duration::from_millis(50 + rng.below(1500));
    let dir = crate::TrialDir::new("lepus-crash-delayed.");
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut broker =
        blocking(|| Broker::start(loopback, dir.path())).unwrap_or_else(|e| panic!("lepus: {e}"));
    let addr = broker.addr();
    // Connection k lands on shard k mod 2: the publisher (first) on shard 0.
    let publisher = connect_retrying(addr).await;
    let other = connect_retrying(addr).await;
    let ch = within("channel.open", publisher.create_channel()).await.expect("channel");
    declare(&ch, 0, true).await;
    declare(&within("channel.open", other.create_channel()).await.expect("channel"), 1, false).await;
    let stopping = Arc::new(AtomicBool::new(false));
    let publishing = tokio::spawn(publish(ch, window, delay_ms, Arc::clone(&stopping)));
    // The random moment of the kill (the point of the test, not a synchronisation).
    tokio::time::sleep(stop_after).await;
    stopping.store(true, Ordering::SeqCst);
    broker.signal(libc::SIGKILL);
    blocking(|| broker.wait_exit()).unwrap_or_else(|e| panic!("lepus after SIGKILL: {e}"));
    let confirmed = publishing.await.expect("publisher task");
    let mut restarted = blocking(|| restart(addr, dir.path()));
    let got = drain(addr, delay_ms + 50).await;
    restarted.signal(libc::SIGTERM);
    let exit = blocking(|| restarted.wait_exit());
    let problems = match &got {
        Ok(got) => violations(&confirmed, got),
        Err(e) => vec![e.clone()],
    };
    let counts = got.as_ref().map(|g| [g[0].len(), g[1].len()]).unwrap_or_default();
    println!(
        "crash delayed trial {number}/{trials} seed={seed:#x} delay={delay_ms}ms window={window} stop_after={}ms: \
         confirmed={} after restart={counts:?} in {}ms",
        stop_after.as_millis(),
        confirmed.len(),
        started.elapsed().as_millis(),
    );
    if !problems.is_empty() || !matches!(exit, Ok(ref s) if s.code() == Some(0)) {
        let kept = dir.keep();
        panic!(
            "crash delayed trial seed={seed:#x} failed (replay: LEPUS_CRASH_SEED={seed:#x} LEPUS_CRASH_TRIALS=1; \
             data dir kept at {}; exit after SIGTERM {exit:?}):\n- {}\n--- first broker (tail):\n{}\n--- restarted \
             (tail):\n{}",
            kept.display(),
            problems.join("\n- "),
            broker.tail(30),
            restarted.tail(30),
        );
    }
}

#[test]
fn the_rules_catch_loss_duplicates_and_disorder() {
    let route = |s: u64| delayed_queue_of(s);
    let mut seqs: Vec<u64> = (0..40).collect();
    seqs.sort_by_key(|&s| (route(s), s));
    let split = seqs.iter().position(|&s| route(s) == 1).unwrap_or(seqs.len());
    let good = [seqs[..split].to_vec(), seqs[split..].to_vec()];
    assert!(violations(&seqs, &good).is_empty());
    let mut twice = good.clone();
    twice[0].push(*twice[0].last().expect("some"));
    assert!(violations(&seqs, &twice).iter().any(|p| p.contains("twice")));
    let mut lost = good.clone();
    lost[1].pop();
    assert!(violations(&seqs, &lost).iter().any(|p| p.contains("lost")));
    let mut disorder = good.clone();
    disorder[0].swap(0, 1);
    assert!(violations(&seqs, &disorder).iter().any(|p| p.contains("out of order")));
}
