//! Crash trials of at-least-once dead-lettering: a quorum queue hands its
//! dead letters to their queue across a `kill -9` without losing one.
//!
//! One trial: a broker with 2 shards and a short dead-letter retry
//! ([`RETRY_MS`]); a durable quorum queue on shard 0 (`SOURCE`) with
//! `x-message-ttl` 0, `x-overflow: reject-publish` and at-least-once
//! dead-lettering to a fanout exchange (`EXCHANGE`) that does not exist
//! yet, so every message expires at once and is held. One publisher on
//! shard 0 in confirm mode publishes persistent messages; at a random
//! moment the exchange is declared and bound to a durable queue on shard 1
//! (`TARGET`), and the held messages begin to cross shards with confirms;
//! at another, the broker is killed (so some are held, some in flight, some
//! delivered). After the restart the exchange and binding are declared
//! again and the target is consumed until every confirmed message came
//! (each wait bounded). The rules: every confirmed message is in the target
//! (duplicates are allowed: at least once), each with `x-death` reason
//! `expired` from the source; and nothing is left ready in the source.

use std::collections::{HashMap, HashSet};
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
use crate::{body_of, parse_body, Rng};

const SOURCE: &str = "crash.alo.source";
const EXCHANGE: &str = "crash.alo.x";
const TARGET: &str = "crash.alo.target";
/// The broker's `--dead-letter-retry-ms`.
pub const RETRY_MS: u64 = 200;
/// Messages per trial, at most.
const PUBLISH_MAX: u64 = 20_000;

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

async fn declare_source(ch: &Channel) {
    let mut args = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(s.into());
    args.insert("x-queue-type".into(), text("quorum"));
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(0));
    args.insert("x-overflow".into(), text("reject-publish"));
    args.insert("x-dead-letter-exchange".into(), text(EXCHANGE));
    args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    within("queue.declare", ch.queue_declare(SOURCE, durable, args)).await.expect("source");
}

async fn declare_target(ch: &Channel) {
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    within("queue.declare", ch.queue_declare(TARGET, durable, FieldTable::default())).await.expect("target");
}

/// The exchange the source dead-letters to, bound to the target.
async fn declare_route(ch: &Channel) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    ch.exchange_declare(EXCHANGE, ExchangeKind::Fanout, durable, FieldTable::default()).await?;
    ch.queue_bind(TARGET, EXCHANGE, "", QueueBindOptions::default(), FieldTable::default()).await
}

/// Publishes until `stopping` or the connection fails; returns the
/// confirmed sequence numbers.
async fn publish(ch: Channel, window: usize, stopping: Arc<AtomicBool>) -> Vec<u64> {
    publish_confirmed_window(&ch, (window, PUBLISH_MAX), &stopping, |seq| {
        let ch = ch.clone();
        async move { ch.basic_publish("", SOURCE, Default::default(), &body_of(seq), persistent()).await }
    })
    .await
}

/// One message as the target has it: its sequence number, and whether its
/// newest `x-death` entry says `expired` in the source.
fn read(data: &[u8], properties: &BasicProperties) -> Result<u64, String> {
    let seq = parse_body(data)?;
    let death = properties.headers().as_ref().and_then(|h| match h.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().first().cloned(),
        _ => None,
    });
    let Some(AMQPValue::FieldTable(death)) = death else {
        return Err(format!("{seq}: no x-death"));
    };
    let field = |k: &str| match death.inner().get(k) {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        _ => String::new(),
    };
    if field("reason") != "expired" || field("queue") != SOURCE {
        return Err(format!("{seq}: x-death {death:?}"));
    }
    Ok(seq)
}

/// After the restart: the route again, then the target's messages until
/// every one of `confirmed` came (or a wait for the next one ran out), and
/// the source's ready count at the end.
async fn drain(addr: SocketAddr, confirmed: &[u64]) -> Result<(Vec<u64>, u32), String> {
    let conn = connect_retrying(addr).await;
    let ch = within("channel.open", conn.create_channel()).await.expect("channel");
    within("declare the route", declare_route(&ch)).await.map_err(|e| format!("route: {e}"))?;
    let options = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let consume = ch.basic_consume(TARGET, "", options, FieldTable::default());
    let mut consumer = within("basic.consume", consume).await.expect("consume");
    let mut missing: HashSet<u64> = confirmed.iter().copied().collect();
    let mut got = Vec::new();
    while !missing.is_empty() {
        let d = match tokio::time::timeout(crate::SAFETY, consumer.next()).await {
            Ok(Some(Ok(d))) => d,
            Err(_) => break,
            Ok(other) => return Err(format!("{TARGET}: consumer ended: {:?}", other.map(|r| r.err()))),
        };
        let seq = read(&d.data, &d.properties)?;
        missing.remove(&seq);
        got.push(seq);
    }
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let left = within("passive declare", ch.queue_declare(SOURCE, passive, FieldTable::default()))
        .await
        .map_err(|e| format!("passive declare of the source: {e}"))?
        .message_count();
    let _ = conn.close(200, "drained").await;
    Ok((got, left))
}

/// The rules: every confirmed message in the target; the source empty.
/// Returns the problems and how many came twice or more.
fn violations(confirmed: &[u64], got: &[u64], source_left: u32) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    let mut times: HashMap<u64, usize> = HashMap::new();
    for &seq in got {
        *times.entry(seq).or_default() += 1;
    }
    let lost: Vec<u64> = confirmed.iter().copied().filter(|s| !times.contains_key(s)).collect();
    if !lost.is_empty() {
        problems.push(format!(
            "{} confirmed messages lost, first {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        ));
    }
    if source_left != 0 {
        problems.push(format!("{source_left} messages left ready in the source"));
    }
    let again = times.values().filter(|&&n| n > 1).count();
    (problems, again)
}

pub async fn trial(number: u64, trials: u64, seed: u64) {
    let started = Instant::now();
    let mut rng = Rng(seed);
    let window = 1usize << rng.below(9);
    let stop_after = Duration::from_millis(50 + rng.below(1500));
    let dir = crate::TrialDir::new("lepus-crash-alo.");
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut broker =
        blocking(|| Broker::start(loopback, dir.path())).unwrap_or_else(|e| panic!("lepus: {e}"));
    let addr = broker.addr();
    // Connection k lands on shard k mod 2: the publisher (first) on shard 0.
    let publisher = connect_retrying(addr).await;
    let other = connect_retrying(addr).await;
    let other_ch = within("channel.open", other.create_channel()).await.expect("channel");
    declare_target(&other_ch).await;
    let ch = within("channel.open", publisher.create_channel()).await.expect("channel");
    declare_source(&ch).await;
    let stopping = Arc::new(AtomicBool::new(false));
    let publishing = tokio::spawn(publish(ch, window, Arc::clone(&stopping)));
    // The random moments of the route and the kill (the point of the test,
    // not a synchronisation).
    let route_after = Duration::from_millis(rng.below(stop_after.as_millis() as u64));
    tokio::time::sleep(route_after).await;
    let routed = declare_route(&other_ch).await.is_ok();
    tokio::time::sleep(stop_after.saturating_sub(route_after)).await;
    stopping.store(true, Ordering::SeqCst);
    broker.signal(libc::SIGKILL);
    blocking(|| broker.wait_exit()).unwrap_or_else(|e| panic!("lepus after SIGKILL: {e}"));
    let confirmed = publishing.await.expect("publisher task");
    let mut restarted = blocking(|| restart(addr, dir.path()));
    let got = drain(addr, &confirmed).await;
    restarted.signal(libc::SIGTERM);
    let exit = blocking(|| restarted.wait_exit());
    let (problems, again) = match &got {
        Ok((got, left)) => violations(&confirmed, got, *left),
        Err(e) => (vec![e.clone()], 0),
    };
    println!(
        "crash dead-letter trial {number}/{trials} seed={seed:#x} window={window} route_after={}ms{} \
         stop_after={}ms: confirmed={} in target after restart={} (twice or more: {again}) in {}ms",
        route_after.as_millis(),
        if routed { "" } else { " (failed)" },
        stop_after.as_millis(),
        confirmed.len(),
        got.as_ref().map_or(0, |(g, _)| g.len()),
        started.elapsed().as_millis(),
    );
    if !problems.is_empty() || !matches!(exit, Ok(ref s) if s.code() == Some(0)) {
        let kept = dir.keep();
        panic!(
            "crash dead-letter trial seed={seed:#x} failed (replay: LEPUS_CRASH_SEED={seed:#x} LEPUS_CRASH_TRIALS=1; \
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
fn the_rules_catch_loss_and_a_source_not_emptied() {
    let confirmed: Vec<u64> = (0..10).collect();
    let all: Vec<u64> = (0..10).chain([3]).collect();
    assert_eq!(violations(&confirmed, &all, 0), (Vec::new(), 1));
    let (lost, _) = violations(&confirmed, &all[1..], 0);
    assert!(lost.iter().any(|p| p.contains("lost")));
    let (left, _) = violations(&confirmed, &all, 2);
    assert!(left.iter().any(|p| p.contains("left ready")));
}
