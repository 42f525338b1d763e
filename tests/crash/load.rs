//! The load of one trial: two publishers in confirm mode and a consumer with
//! manual acks, each running until its connection fails; and the client
//! helpers (connect, bounded awaits).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::publisher_confirm::{Confirmation, PublisherConfirm};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::{mpsc, oneshot};

use crate::check::{Got, History};
use crate::{
    body_of, parse_body, persistent, queue_of, seq_of, Rng, LOAD_MS_MAX, PUBLISH_MAX, QUEUES, SAFETY,
    WINDOW_MAX,
};

fn uri(addr: SocketAddr) -> String {
    format!("amqp://guest:guest@{addr}/%2f")
}

async fn connect(addr: SocketAddr) -> Connection {
    let uri = uri(addr);
    let connecting = Connection::connect(&uri, ConnectionProperties::default());
    match tokio::time::timeout(SAFETY, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!("lapin connect to {addr}: {e}"),
        Err(_) => panic!("lapin connect to {addr}: no answer within {SAFETY:?}"),
    }
}

/// Connects, retrying until the broker accepts (bounded).
pub async fn connect_retrying(addr: SocketAddr) -> Connection {
    let deadline = Instant::now() + SAFETY;
    let uri = uri(addr);
    loop {
        let connecting = Connection::connect(&uri, ConnectionProperties::default());
        let error = match tokio::time::timeout(Duration::from_secs(5), connecting).await {
            Ok(Ok(conn)) => return conn,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 5s".to_owned(),
        };
        assert!(Instant::now() < deadline, "lapin cannot connect to the restarted broker at {addr}: {error}");
        // Polling for the port: pacing, not a synchronisation.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Awaits `fut` for at most [`SAFETY`].
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(SAFETY, fut).await.unwrap_or_else(|_| panic!("{what}: nothing within {SAFETY:?}"))
}

// ---------------------------------------------------------------------------
// The load: two publishers and a consumer
// ---------------------------------------------------------------------------

/// One trial's random choices.
#[derive(Debug)]
pub struct Params {
    /// Unconfirmed publishes in flight, per publisher.
    pub windows: [usize; 2],
    /// Per-consumer prefetch.
    pub prefetch: u16,
    /// How long the load runs before the stop.
    pub stop_after: Duration,
    /// When the consumer starts, after the publishers: half the trials at
    /// once, the others later (or after the stop), so a backlog builds up.
    pub consume_after: Duration,
    /// Publisher 1 commits transactions of `windows[1]` messages instead of
    /// using confirms (a third of the trials).
    pub tx: bool,
}

impl Params {
    pub fn draw(rng: &mut Rng) -> Params {
        let mut window = || (1usize << rng.below(11)).min(WINDOW_MAX);
        let windows = [window(), window()];
        let prefetch = 1 << rng.below(10);
        let stop_after = 20 + rng.below(LOAD_MS_MAX - 20);
        let consume_after = if rng.one_in(2) { 0 } else { rng.below(stop_after * 3 / 2) };
        Params {
            windows,
            prefetch,
            stop_after: Duration::from_millis(stop_after),
            consume_after: Duration::from_millis(consume_after),
            tx: rng.one_in(3),
        }
    }
}

/// What one publisher observed.
#[derive(Default)]
struct PublisherLog {
    published: Vec<u64>,
    confirmed: Vec<u64>,
    nacked: Vec<u64>,
    problems: Vec<String>,
}

impl PublisherLog {
    fn settle(&mut self, seq: u64, outcome: lapin::Result<Confirmation>, stopping: &AtomicBool) {
        match outcome {
            Ok(Confirmation::Ack(_)) => self.confirmed.push(seq),
            Ok(Confirmation::Nack(_)) => self.nacked.push(seq),
            Ok(Confirmation::NotRequested) => {
                self.problems.push(format!("seq {seq:#x}: confirm not requested"))
            }
            // The broker stopped before confirming: unconfirmed.
            Err(_) if stopping.load(Ordering::SeqCst) => {}
            Err(e) => self.problems.push(format!("confirm of seq {seq:#x} failed before the stop: {e}")),
        }
    }
}

/// Publishes persistent messages with up to `window` unconfirmed, until the
/// connection fails (the stop) or `PUBLISH_MAX`; then awaits every confirm
/// still in flight (each resolves: acked before the stop, or failed).
async fn publish(ch: Channel, publisher: u64, window: usize, stopping: Arc<AtomicBool>) -> PublisherLog {
    let mut log = PublisherLog::default();
    let mut in_flight: VecDeque<(u64, PublisherConfirm)> = VecDeque::new();
    for n in 0..PUBLISH_MAX {
        if in_flight.len() >= window {
            if let Some((seq, confirm)) = in_flight.pop_front() {
                log.settle(seq, confirm.await, &stopping);
            }
        }
        let seq = seq_of(publisher, n);
        // Recorded before the call: the publish may reach the broker even if
        // the call then fails.
        log.published.push(seq);
        let options = BasicPublishOptions::default();
        match ch.basic_publish("", QUEUES[queue_of(seq)], options, &body_of(seq), persistent()).await {
            Ok(confirm) => in_flight.push_back((seq, confirm)),
            Err(e) => {
                if !stopping.load(Ordering::SeqCst) {
                    log.problems.push(format!("publisher {publisher} failed before the stop: {e}"));
                }
                break;
            }
        }
    }
    for (seq, confirm) in in_flight {
        log.settle(seq, confirm.await, &stopping);
    }
    log
}

/// Publishes persistent messages in transactions of `batch` until the
/// connection fails (the stop) or `PUBLISH_MAX`: a message counts as
/// confirmed once its transaction's commit-ok is back.
async fn publish_tx(ch: Channel, publisher: u64, batch: usize, stopping: Arc<AtomicBool>) -> PublisherLog {
    let mut log = PublisherLog::default();
    let mut uncommitted = Vec::new();
    for n in 0..PUBLISH_MAX {
        let seq = seq_of(publisher, n);
        log.published.push(seq);
        let options = BasicPublishOptions::default();
        let published =
            ch.basic_publish("", QUEUES[queue_of(seq)], options, &body_of(seq), persistent()).await;
        let committed = match published {
            Ok(_) => {
                uncommitted.push(seq);
                if uncommitted.len() < batch {
                    continue;
                }
                ch.tx_commit().await
            }
            Err(e) => Err(e),
        };
        match committed {
            Ok(()) => log.confirmed.append(&mut uncommitted),
            Err(e) => {
                if !stopping.load(Ordering::SeqCst) {
                    log.problems
                        .push(format!("transactional publisher {publisher} failed before the stop: {e}"));
                }
                break;
            }
        }
    }
    log
}

/// What the consumer observed.
#[derive(Default)]
struct ConsumerLog {
    got: Vec<Got>,
    /// Seqs whose ack was written (a single ack, or a multiple ack covering it).
    acked: BTreeSet<u64>,
    problems: Vec<String>,
}

/// What a consumer stream forwards: a delivery (its body already checked)
/// or the stream's error.
enum Event {
    Delivery { queue: usize, tag: u64, redelivered: bool, seq: Result<u64, String> },
    Failed(usize, String),
}

/// A request for a synchronous round trip on the consumer's channel; answered
/// with the seqs acked before it.
type SyncRequest = oneshot::Sender<Result<BTreeSet<u64>, String>>;

/// Consumes both queues on one channel (each queue's deliveries arrive on its
/// own stream, forwarded here) and acks: mostly one by one, sometimes a few
/// deferred and then acked with multiple=true. A multiple ack covers every
/// tag up to it on the channel, including deliveries from the other stream
/// not handled yet: those are known to be acked when they arrive.
async fn consume(
    ch: Channel,
    prefetch: u16,
    mut rng: Rng,
    stopping: Arc<AtomicBool>,
    mut events: mpsc::UnboundedReceiver<Event>,
    mut syncs: mpsc::Receiver<SyncRequest>,
) -> ConsumerLog {
    let mut log = ConsumerLog::default();
    // Delivered, not acked yet: tag → seq.
    let mut pending: BTreeMap<u64, u64> = BTreeMap::new();
    let mut acked_through = 0u64;
    let mut defer = 0u64;
    let mut acking = true;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                None => break,
                Some(Event::Failed(queue, e)) => {
                    if !stopping.load(Ordering::SeqCst) {
                        log.problems.push(format!("consumer of {} failed before the stop: {e}", QUEUES[queue]));
                    }
                }
                Some(Event::Delivery { queue, tag, redelivered, seq }) => {
                    let seq = match seq {
                        Ok(seq) => seq,
                        Err(e) => {
                            log.problems.push(e);
                            continue;
                        }
                    };
                    log.got.push(Got { seq, queue, redelivered });
                    if tag <= acked_through {
                        log.acked.insert(seq);
                        continue;
                    }
                    pending.insert(tag, seq);
                    if !acking {
                        continue;
                    }
                    if defer > 0 {
                        defer -= 1;
                        continue;
                    }
                    let multiple = pending.len() > 1 || rng.one_in(16);
                    let ack_tag = if multiple { pending.keys().next_back().copied().unwrap_or(tag) } else { tag };
                    match ch.basic_ack(ack_tag, BasicAckOptions { multiple }).await {
                        Ok(()) if multiple => {
                            acked_through = acked_through.max(ack_tag);
                            let rest = pending.split_off(&(ack_tag + 1));
                            log.acked.extend(std::mem::replace(&mut pending, rest).into_values());
                        }
                        Ok(()) => {
                            pending.remove(&tag);
                            log.acked.insert(seq);
                        }
                        Err(e) => {
                            acking = false;
                            if !stopping.load(Ordering::SeqCst) {
                                log.problems.push(format!("basic.ack failed before the stop: {e}"));
                            }
                        }
                    }
                    // Defer fewer than prefetch acks, so the consumer never stalls.
                    if rng.one_in(8) {
                        defer = rng.below(u64::from(prefetch).min(32));
                    }
                }
            },
            Some(reply) = syncs.recv() => {
                // Any synchronous method will do: once its -ok is back, the
                // broker has read every ack written before it.
                let passive = QueueDeclareOptions { passive: true, ..Default::default() };
                let answer = ch.queue_declare(QUEUES[0], passive, FieldTable::default()).await;
                let _ = reply.send(answer.map(|_| log.acked.clone()).map_err(|e| e.to_string()));
            }
        }
    }
    log
}

/// After `delay` (load shape, not a synchronisation), consumes both queues on
/// `ch` and forwards every delivery and stream error to `events`, until the
/// connection fails: every delivery the broker wrote before it died is
/// forwarded.
async fn subscribe(ch: Channel, delay: Duration, events: mpsc::UnboundedSender<Event>) {
    tokio::time::sleep(delay).await;
    for (queue, name) in QUEUES.iter().enumerate().take(2) {
        let consume = ch.basic_consume(name, "", BasicConsumeOptions::default(), FieldTable::default());
        let mut deliveries = match tokio::time::timeout(SAFETY, consume).await {
            Ok(Ok(deliveries)) => deliveries,
            failed => {
                let _ = events.send(Event::Failed(queue, format!("basic.consume: {failed:?}")));
                return;
            }
        };
        let events = events.clone();
        tokio::spawn(async move {
            while let Some(item) = deliveries.next().await {
                let event = match item {
                    Ok(d) => Event::Delivery {
                        queue,
                        tag: d.delivery_tag,
                        redelivered: d.redelivered,
                        seq: parse_body(&d.data),
                    },
                    Err(e) => Event::Failed(queue, e.to_string()),
                };
                if events.send(event).is_err() {
                    break;
                }
            }
        });
    }
}

/// The running load of one trial.
pub struct Load {
    stopping: Arc<AtomicBool>,
    publishers: Vec<tokio::task::JoinHandle<PublisherLog>>,
    consumer: tokio::task::JoinHandle<ConsumerLog>,
    syncs: mpsc::Sender<SyncRequest>,
    _connections: Vec<Connection>,
}

impl Load {
    pub async fn start(addr: SocketAddr, params: &Params, rng: &mut Rng) -> Load {
        // Connection k lands on shard k mod 2: publisher 0 on shard 0,
        // publisher 1 on shard 1, the consumer on shard 0.
        let mut connections = Vec::new();
        for _ in 0..3 {
            connections.push(connect(addr).await);
        }
        let mut channels = Vec::new();
        for (p, conn) in connections[..2].iter().enumerate() {
            let ch = within("channel.open", conn.create_channel()).await.expect("publisher channel");
            // Publisher p declares queue p: that places it on shard p.
            let durable = QueueDeclareOptions { durable: true, ..Default::default() };
            within("queue.declare", ch.queue_declare(QUEUES[p], durable, FieldTable::default()))
                .await
                .expect("durable queue.declare");
            if p == 0 {
                within("queue.declare", ch.queue_declare(QUEUES[2], durable, FieldTable::default()))
                    .await
                    .expect("durable queue.declare");
            }
            if p == 1 && params.tx {
                within("tx.select", ch.tx_select()).await.expect("tx.select");
            } else {
                within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default()))
                    .await
                    .expect("confirm.select");
            }
            channels.push(ch);
        }
        let ch = within("channel.open", connections[2].create_channel()).await.expect("consumer channel");
        within("basic.qos", ch.basic_qos(params.prefetch, BasicQosOptions { global: false }))
            .await
            .expect("basic.qos");
        let stopping = Arc::new(AtomicBool::new(false));
        let (events_tx, events) = mpsc::unbounded_channel();
        tokio::spawn(subscribe(ch.clone(), params.consume_after, events_tx));
        let (syncs_tx, syncs) = mpsc::channel(1);
        let consumer =
            tokio::spawn(consume(ch, params.prefetch, rng.fork(), stopping.clone(), events, syncs));
        let publishers = channels
            .into_iter()
            .enumerate()
            .map(|(p, ch)| {
                let (publisher, window, stopping) = (p as u64, params.windows[p], stopping.clone());
                if p == 1 && params.tx {
                    tokio::spawn(publish_tx(ch, publisher, window, stopping))
                } else {
                    tokio::spawn(publish(ch, publisher, window, stopping))
                }
            })
            .collect();
        Load { stopping, publishers, consumer, syncs: syncs_tx, _connections: connections }
    }

    /// A round trip on the consumer's channel; the seqs acked before it.
    pub async fn sync(&self) -> Result<BTreeSet<u64>, String> {
        let (reply, answer) = oneshot::channel();
        self.syncs.send(reply).await.map_err(|_| "the consumer has ended".to_owned())?;
        within("consumer sync", answer).await.map_err(|_| "the consumer has ended".to_owned())?
    }

    /// From now on, client errors are expected.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Waits for every task to notice the stop and merges what they saw.
    pub async fn finish(self, history: &mut History) {
        for publisher in self.publishers {
            let log = within("a publisher to notice the stop", publisher).await.expect("publisher task");
            history.published.extend(log.published);
            history.confirmed.extend(log.confirmed);
            history.nacked.extend(log.nacked);
            history.problems.extend(log.problems);
        }
        drop(self.syncs);
        let log = within("the consumer to notice the stop", self.consumer).await.expect("consumer task");
        history.before = log.got;
        history.problems.extend(log.problems);
    }
}

/// Publishes messages `0..max` on a channel it puts in confirm mode, each
/// with `publish(seq)`, keeping at most `window` unconfirmed, until
/// `stopping` or the connection fails; returns the confirmed sequence
/// numbers (a confirm still out when the publisher stops is awaited,
/// bounded).
pub async fn publish_confirmed_window<F, Fut>(
    ch: &Channel,
    (window, max): (usize, u64),
    stopping: &AtomicBool,
    mut publish: F,
) -> Vec<u64>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = lapin::Result<PublisherConfirm>>,
{
    let mut confirmed = Vec::new();
    let mut in_flight = VecDeque::new();
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await.expect("confirms");
    for seq in 0..max {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(confirm) = publish(seq).await else {
            break;
        };
        in_flight.push_back((seq, confirm));
        if in_flight.len() >= window {
            if let Some((seq, confirm)) = in_flight.pop_front() {
                if let Ok(c) = within("a confirm", confirm).await {
                    if c.is_ack() {
                        confirmed.push(seq);
                    }
                }
            }
        }
    }
    for (seq, confirm) in in_flight {
        if let Ok(Ok(c)) = tokio::time::timeout(crate::SAFETY, confirm).await {
            if c.is_ack() {
                confirmed.push(seq);
            }
        }
    }
    confirmed
}
