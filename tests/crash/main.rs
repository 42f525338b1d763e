//! Crash tests: the real `lepus` binary is stopped under load — by SIGKILL, or
//! gracefully by SIGTERM — restarted on the same data directory and port, and
//! what clients observed before the stop is checked against what comes back.
//!
//! One trial:
//! - a broker with `--shards 2` and a fresh `--data-dir`; two durable queues,
//!   one declared on each shard (the connection that declares a queue places
//!   it, and connection *k* lands on shard *k mod 2*);
//! - two publishers (one per shard) in confirm mode publish persistent
//!   messages with a window of unconfirmed publishes, each message to one of
//!   the queues, so both publish locally and across shards; the body carries a
//!   sequence number and padding derived from it, so a corrupt body is caught;
//!   in a third of the trials the second publisher commits transactions
//!   instead (a message counts as confirmed once its commit-ok is back);
//! - one consumer with manual acks and a prefetch consumes both queues on one
//!   channel and acks, some acks deferred and then given with multiple=true;
//! - one message in [`STUCK_ONE_IN`] goes to a third queue nobody consumes
//!   before the stop; with small segments ([`SEGMENT_BYTES`]) the broker
//!   compacts the segments those messages keep alive, under load;
//! - after a random delay the broker is stopped; every client task runs until
//!   its connection fails, so everything the broker sent before it died is
//!   recorded;
//! - the broker is restarted, everything left in the queues is consumed, and
//!   [`check::check`] compares the two halves (see there for the rules).
//!
//! Every random choice (windows, prefetch, ack pattern, the stop moment) comes
//! from the trial's seed, printed in the trial's summary line. Knobs:
//! - `LEPUS_CRASH_TRIALS` — trials per test (default 3, `scripts/crash.sh` runs hundreds);
//! - `LEPUS_CRASH_SEED` — seed of the first trial (decimal or `0x` hex), to
//!   replay a failure: `LEPUS_CRASH_SEED=0x.. LEPUS_CRASH_TRIALS=1 cargo test
//!   --test crash kill -- --nocapture`. Timing is not replayed, only choices.
//!
//! A failing trial keeps its data directory and prints its path.
//! Waits are event-driven (confirms, deliveries, stream ends, the start line
//! on stderr, the exit of the process) and each is bounded.

mod broker;
mod check;
#[path = "../common/child.rs"]
mod child;
mod dead_letters;
mod delayed;
mod load;
mod stream;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;

use broker::{blocking, restart, Broker};
use check::{check, some, Got, History};
use load::{connect_retrying, within, Load, Params};

/// Bound on every single wait (a start, an exit, a delivery, a connection
/// noticing its broker died). Generous: CI machines are slow.
const SAFETY: Duration = Duration::from_secs(30);
/// Bound on a whole trial.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(180);
/// The stop comes at a random moment up to this long after the load starts.
const LOAD_MS_MAX: u64 = 2_000;
/// Largest publisher window (unconfirmed publishes in flight).
const WINDOW_MAX: usize = 1_000;
/// Messages per publisher per trial, at most: bounds the drain after restart.
const PUBLISH_MAX: u64 = 40_000;
/// The consumed queues, one per shard, then one nobody consumes before the
/// stop: its messages stay live in segments that are otherwise acked, so
/// those segments are compacted during the trial.
const QUEUES: [&str; 3] = ["crash.q0", "crash.q1", "crash.stuck"];
/// One message in this many goes to the unconsumed queue.
const STUCK_ONE_IN: u64 = 64;
/// The broker's message-log segment size (`--segment-size`).
const SEGMENT_BYTES: u32 = 64 * 1024;

// ---------------------------------------------------------------------------
// Randomness: a seeded splitmix64
// ---------------------------------------------------------------------------

/// The splitmix64 finaliser: a good 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix(self.0)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability 1/n.
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// A new generator for a task, independent of this one's later draws.
    fn fork(&mut self) -> Rng {
        Rng(self.next())
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={value:?} is not a number: {e}")))
}

/// A trial's data directory: removed when the trial ends, kept (and its path
/// printed) when the trial panics (a restart that never comes up, a failed
/// check), so the failure can be examined and replayed.
pub struct TrialDir(Option<tempfile::TempDir>);

impl TrialDir {
    pub fn new(prefix: &str) -> TrialDir {
        TrialDir(Some(tempfile::Builder::new().prefix(prefix).tempdir().expect("temporary data dir")))
    }

    pub fn path(&self) -> &std::path::Path {
        self.0.as_ref().expect("present until the trial ends").path()
    }

    pub fn keep(mut self) -> std::path::PathBuf {
        self.0.take().expect("present until the trial ends").keep()
    }
}

impl Drop for TrialDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            if std::thread::panicking() {
                eprintln!("the failed trial's data dir is kept at {}", dir.keep().display());
            }
        }
    }
}

fn base_seed() -> u64 {
    env_u64("LEPUS_CRASH_SEED").unwrap_or_else(|| {
        let mut bytes = [0u8; 8];
        getrandom::getrandom(&mut bytes).expect("getrandom");
        u64::from_le_bytes(bytes)
    })
}

fn trial_count() -> u64 {
    env_u64("LEPUS_CRASH_TRIALS").unwrap_or(3)
}

// ---------------------------------------------------------------------------
// Messages: everything about one is a function of its sequence number
// ---------------------------------------------------------------------------

/// Publisher `p`'s `n`-th message.
fn seq_of(publisher: u64, n: u64) -> u64 {
    publisher << 40 | n
}

/// The queue (index into [`QUEUES`]) a message is published to.
fn queue_of(seq: u64) -> usize {
    let h = mix(seq);
    if (h >> 8) % STUCK_ONE_IN == 0 {
        2
    } else {
        (h >> 32) as usize & 1
    }
}

/// 8 bytes of sequence number, then padding derived from it; one message in
/// 64 is larger than a frame of the default size.
fn body_of(seq: u64) -> Vec<u8> {
    let h = mix(seq ^ GOLDEN);
    let len = if h % 64 == 0 { 9_000 + (h >> 8) % 140_000 } else { 8 + (h >> 8) % 300 } as usize;
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(&seq.to_be_bytes());
    while body.len() < len {
        let i = body.len();
        body.push((h >> (8 * (i % 8))) as u8 ^ i as u8);
    }
    body
}

/// The sequence number in `body`, if the whole body is what was published.
fn parse_body(body: &[u8]) -> Result<u64, String> {
    let head: [u8; 8] = body
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| format!("body of {} bytes has no sequence number", body.len()))?;
    let seq = u64::from_be_bytes(head);
    let expected = body_of(seq);
    if body == expected.as_slice() {
        Ok(seq)
    } else {
        Err(format!("body of seq {seq:#x} is corrupt: {} bytes, expected {}", body.len(), expected.len()))
    }
}

/// Persistent (delivery-mode 2).
fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

// ---------------------------------------------------------------------------
// After the restart: consume everything left
// ---------------------------------------------------------------------------

/// Records a delivery after the restart.
fn record_after(history: &mut History, queue: usize, body: &[u8], redelivered: bool) {
    match parse_body(body) {
        Ok(seq) => history.after.push(Got { seq, queue, redelivered }),
        Err(e) => history.problems.push(e),
    }
}

/// Consumes what the restarted broker holds: as many deliveries as the
/// passive declare counts, then whatever still comes after basic.cancel, then
/// basic.get until the queue is empty (more than counted is a violation).
async fn drain(addr: SocketAddr, history: &mut History) {
    let conn = connect_retrying(addr).await;
    for (queue, name) in QUEUES.iter().enumerate() {
        let ch = within("channel.open", conn.create_channel()).await.expect("drain channel");
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let ready =
            match within("passive declare", ch.queue_declare(name, passive, FieldTable::default())).await {
                Ok(q) => q.message_count(),
                Err(e) => {
                    history.problems.push(format!("durable queue {name} is gone after the restart: {e}"));
                    continue;
                }
            };
        let extra_from = history.after.len() + ready as usize;
        within("basic.qos", ch.basic_qos(1000, BasicQosOptions::default())).await.expect("basic.qos");
        let consume = ch.basic_consume(name, "drain", BasicConsumeOptions::default(), FieldTable::default());
        let mut deliveries = within("basic.consume", consume).await.expect("basic.consume");
        for n in 1..=ready {
            let d = match within("a delivery after the restart", deliveries.next()).await {
                Some(Ok(d)) => d,
                other => {
                    let e = other.map(|r| r.err());
                    history
                        .problems
                        .push(format!("{name}: consumer ended after {n} of {ready} messages: {e:?}"));
                    break;
                }
            };
            record_after(history, queue, &d.data, d.redelivered);
            if n % 256 == 0 || n == ready {
                within("basic.ack", ch.basic_ack(d.delivery_tag, BasicAckOptions { multiple: true }))
                    .await
                    .expect("basic.ack");
            }
        }
        within("basic.cancel", ch.basic_cancel("drain", BasicCancelOptions::default()))
            .await
            .expect("basic.cancel");
        // Deliveries written before cancel-ok are buffered; the stream ends after them.
        while let Some(Ok(d)) = within("the cancelled consumer's end", deliveries.next()).await {
            record_after(history, queue, &d.data, d.redelivered);
        }
        while let Some(m) = within("basic.get", ch.basic_get(name, BasicGetOptions { no_ack: true }))
            .await
            .expect("basic.get")
        {
            record_after(history, queue, &m.delivery.data, m.delivery.redelivered);
        }
        if history.after.len() > extra_from {
            let extra = history.after[extra_from..].iter().map(|g| g.seq);
            let extra = some(extra);
            history
                .problems
                .push(format!("{name}: {ready} messages counted after the restart, {extra} more came"));
        }
        let _ = ch.close(200, "drained").await;
    }
    let _ = conn.close(200, "drained").await;
}

// ---------------------------------------------------------------------------
// Trials
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGKILL: nothing gets a chance to be written.
    Kill,
    /// SIGTERM: the broker shuts down (closes connections with 320) and exits 0.
    Graceful,
}

async fn trial(stop: Stop, number: u64, trials: u64, seed: u64) {
    let started = Instant::now();
    let mut rng = Rng(seed);
    let params = Params::draw(&mut rng);
    let dir = TrialDir::new("lepus-crash.");
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut broker = blocking(|| Broker::start(loopback, dir.path()))
        .unwrap_or_else(|e| panic!("lepus does not start with --data-dir: {e}"));
    let addr = broker.addr();
    let load = Load::start(addr, &params, &mut rng).await;
    // The random moment of the stop (the point of the test, not a synchronisation).
    tokio::time::sleep(params.stop_after).await;
    let mut history = History::default();
    match stop {
        Stop::Kill => {
            load.stopping();
            broker.signal(libc::SIGKILL);
        }
        Stop::Graceful => {
            match load.sync().await {
                Ok(acked) => history.acked_before_stop = Some(acked),
                Err(e) => history.problems.push(format!("no round trip on the consumer's channel: {e}")),
            }
            load.stopping();
            broker.signal(libc::SIGTERM);
        }
    }
    let status = blocking(|| broker.wait_exit()).unwrap_or_else(|e| panic!("lepus after {stop:?}: {e}"));
    if stop == Stop::Graceful && status.code() != Some(0) {
        history.problems.push(format!("exit status after SIGTERM: {status}"));
    }
    load.finish(&mut history).await;
    let mut restarted = blocking(|| restart(addr, dir.path()));
    drain(addr, &mut history).await;
    restarted.signal(libc::SIGTERM);
    match blocking(|| restarted.wait_exit()) {
        Ok(status) if status.code() == Some(0) => {}
        other => history.problems.push(format!("restarted broker, exit after SIGTERM: {other:?}")),
    }
    let redelivered = history.after.iter().filter(|g| g.redelivered).count();
    let acked = history
        .acked_before_stop
        .as_ref()
        .map_or(String::new(), |a| format!(" acked_before_stop={}", a.len()));
    println!(
        "crash {stop:?} trial {number}/{trials} seed={seed:#x} windows={:?} tx={} prefetch={} consume_after={}ms \
         stop_after={}ms: published={} confirmed={} nacked={} delivered before={} after={} \
         (redelivered {redelivered}){acked} in {}ms",
        params.windows,
        params.tx,
        params.prefetch,
        params.consume_after.as_millis(),
        params.stop_after.as_millis(),
        history.published.len(),
        history.confirmed.len(),
        history.nacked.len(),
        history.before.len(),
        history.after.len(),
        started.elapsed().as_millis(),
    );
    let violations = check(&history);
    if !violations.is_empty() {
        let kept = dir.keep();
        panic!(
            "crash {stop:?} trial seed={seed:#x} failed (replay: LEPUS_CRASH_SEED={seed:#x} LEPUS_CRASH_TRIALS=1; \
             data dir kept at {}):\n- {}\n--- first broker's stderr (tail):\n{}\n--- restarted broker's stderr \
             (tail):\n{}",
            kept.display(),
            violations.join("\n- "),
            broker.tail(30),
            restarted.tail(30),
        );
    }
}

async fn trials(stop: Stop) {
    let base = base_seed();
    let trials = trial_count();
    println!("crash {stop:?}: {trials} trial(s), first seed {base:#x}");
    for i in 0..trials {
        let seed = base.wrapping_add(i.wrapping_mul(GOLDEN));
        if tokio::time::timeout(TRIAL_TIMEOUT, trial(stop, i + 1, trials, seed)).await.is_err() {
            panic!("crash {stop:?} trial seed={seed:#x} took longer than {TRIAL_TIMEOUT:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_no_confirmed_message() {
    trials(Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_stop_under_load_loses_nothing_and_forgets_no_ack() {
    trials(Stop::Graceful).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_keeps_delayed_messages_in_order_once() {
    let (base, trials) = (base_seed(), trial_count());
    for i in 0..trials {
        let seed = base.wrapping_add(i.wrapping_mul(GOLDEN));
        let trial = delayed::trial(i + 1, trials, seed);
        if tokio::time::timeout(TRIAL_TIMEOUT, trial).await.is_err() {
            panic!("crash delayed trial seed={seed:#x} took longer than {TRIAL_TIMEOUT:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_no_dead_letter_of_an_at_least_once_queue() {
    let (base, trials) = (base_seed(), trial_count());
    for i in 0..trials {
        let seed = base.wrapping_add(i.wrapping_mul(GOLDEN));
        let trial = dead_letters::trial(i + 1, trials, seed);
        if tokio::time::timeout(TRIAL_TIMEOUT, trial).await.is_err() {
            panic!("crash dead-letter trial seed={seed:#x} took longer than {TRIAL_TIMEOUT:?}");
        }
    }
}
