//! Healthy bystander connections for the error tests.
//!
//! [`Healthy::start`] opens two well-behaved lapin connections, one after the
//! other, before the test's own misbehaving connection: on a fresh 2-shard
//! Lepus they are connections 0 and 1, so one bystander sits on each shard,
//! and the misbehaving connection opened next (connection 2) shares shard 0
//! with the first (each bystander's shard is asserted, in-process). An error
//! must disturb neither.

use super::{Broker, Placement, SAFETY};
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How many bystander connections [`Healthy::start`] opens: one per shard.
const BYSTANDERS: usize = 2;

/// Well-behaved lapin connections that each publish (with confirms) to their
/// own queue and consume back, in a loop on their own thread and runtime,
/// while the test misbehaves elsewhere. [`Healthy::finish`] asserts they never
/// saw an error and that one more round trip works after the misbehaviour.
pub struct Healthy {
    stop: Arc<AtomicBool>,
    round_trips: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Result<u64, String>>>,
}

impl Healthy {
    /// Opens the bystander connections (in order, each fully open before the
    /// next) and waits until each has made a first round trip.
    pub fn start(b: &Broker) -> Healthy {
        let addr = b.addr;
        let placement = b.placement();
        let stop = Arc::new(AtomicBool::new(false));
        let round_trips = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let (stop2, rt2) = (stop.clone(), round_trips.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(healthy_loop(addr, placement, stop2, rt2, ready_tx))
        });
        if ready_rx.recv_timeout(SAFETY).is_err() {
            // The loop failed before its first round trips: surface its error.
            match thread.join() {
                Ok(Err(e)) => panic!("healthy bystander failed to start: {e}"),
                Ok(Ok(_)) => panic!("healthy bystander stopped before its first round trip"),
                Err(_) => panic!("healthy bystander panicked"),
            }
        }
        Healthy { stop, round_trips, thread: Some(thread) }
    }

    /// Stops the loop after one last round trip on every bystander and
    /// asserts nothing went wrong.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take().expect("finish called once");
        match thread.join() {
            Ok(Ok(n)) => assert!(n >= 2 * BYSTANDERS as u64, "healthy bystanders made only {n} round trips"),
            Ok(Err(e)) => panic!("a healthy bystander connection was disturbed: {e}"),
            Err(_) => panic!("healthy bystander panicked"),
        }
    }

    /// Round trips completed so far, over all bystanders.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::SeqCst)
    }
}

impl Drop for Healthy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One bystander: its connection, a confirm-mode channel, its own queue and
/// a consumer on it.
struct Bystander {
    conn: lapin::Connection,
    ch: lapin::Channel,
    queue: String,
    consumer: lapin::Consumer,
}

fn err(what: &'static str) -> impl Fn(lapin::Error) -> String {
    move |e| format!("{what}: {e}")
}

fn timed_out<T>(what: &'static str) -> impl Fn(T) -> String {
    move |_| format!("{what}: timed out")
}

impl Bystander {
    async fn open(addr: SocketAddr) -> Result<Bystander, String> {
        let uri = format!("amqp://guest:guest@{addr}/%2f");
        let conn = tokio::time::timeout(
            SAFETY,
            lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()),
        )
        .await
        .map_err(timed_out("connect"))?
        .map_err(err("connect"))?;
        let ch = conn.create_channel().await.map_err(err("channel"))?;
        ch.confirm_select(ConfirmSelectOptions::default()).await.map_err(err("confirm.select"))?;
        let queue = ch
            .queue_declare(
                "",
                QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .map_err(err("queue.declare"))?
            .name()
            .to_string();
        let consumer = ch
            .basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(err("basic.consume"))?;
        Ok(Bystander { conn, ch, queue, consumer })
    }

    /// Publish one message, wait for its confirm, consume it, ack it.
    async fn round_trip(&mut self, body: &str) -> Result<(), String> {
        let confirm = self
            .ch
            .basic_publish(
                "",
                &self.queue,
                BasicPublishOptions::default(),
                body.as_bytes(),
                lapin::BasicProperties::default(),
            )
            .await
            .map_err(err("basic.publish"))?;
        let confirmation = tokio::time::timeout(SAFETY, confirm)
            .await
            .map_err(timed_out("confirm"))?
            .map_err(err("confirm"))?;
        if !confirmation.is_ack() {
            return Err(format!("publish {body} was not acked: {confirmation:?}"));
        }
        let d = tokio::time::timeout(SAFETY, self.consumer.next())
            .await
            .map_err(timed_out("delivery"))?
            .ok_or_else(|| "consumer ended".to_string())?
            .map_err(err("delivery"))?;
        if d.data != body.as_bytes() {
            return Err(format!("expected {body:?}, got {:?}", String::from_utf8_lossy(&d.data)));
        }
        d.acker.ack(BasicAckOptions::default()).await.map_err(err("basic.ack"))
    }
}

async fn healthy_loop(
    addr: SocketAddr,
    placement: Option<Placement>,
    stop: Arc<AtomicBool>,
    round_trips: Arc<AtomicU64>,
    ready: std::sync::mpsc::Sender<()>,
) -> Result<u64, String> {
    // Opened one after the other: bystander k is connection k, on shard k % 2.
    let mut bystanders = Vec::with_capacity(BYSTANDERS);
    for k in 0..BYSTANDERS {
        let before = placement.as_ref().map(Placement::opened);
        bystanders.push(Bystander::open(addr).await?);
        if let (Some(placement), Some(before)) = (&placement, before) {
            let shard = placement.landed_since(&before);
            if shard != k % 2 {
                return Err(format!("bystander {k} landed on shard {shard}, not {}", k % 2));
            }
        }
    }
    let mut n: u64 = 0;
    let mut round = 0u64;
    loop {
        let last = stop.load(Ordering::SeqCst) || round >= 50_000;
        for (k, b) in bystanders.iter_mut().enumerate() {
            b.round_trip(&format!("healthy-{k}-{round}"))
                .await
                .map_err(|e| format!("bystander {k} (shard {}): {e}", k % 2))?;
            n += 1;
        }
        round += 1;
        round_trips.store(n, Ordering::SeqCst);
        if round == 1 {
            let _ = ready.send(());
        }
        if last {
            break;
        }
        // Pacing only (keeps a shared broker from being hammered); not synchronisation.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (k, b) in bystanders.into_iter().enumerate() {
        b.conn.close(200, "bye").await.map_err(|e| format!("bystander {k}: connection.close: {e}"))?;
        drop(b.ch);
    }
    Ok(n)
}
