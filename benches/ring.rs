//! Throughput and latency of the cross-shard SPSC ring (`lepus::ring::spsc`).
//!
//! Run with `cargo bench --bench ring`. Single-threaded numbers are the cost
//! of the ring operations alone (no cache-line transfer); the cross-thread
//! ones include moving the index and slot lines between two cores, which is
//! what dominates in the broker.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lepus::config::RING_CAPACITY_SLOTS_DEFAULT;
use lepus::ring::spsc;
use lepus::shard::RING_DRAIN_BATCH_MAX;

/// Batch sizes to time: what a shard drains from one ring per turn, and a
/// whole default ring.
const BATCH_SIZES: [usize; 2] = [RING_DRAIN_BATCH_MAX, RING_CAPACITY_SLOTS_DEFAULT];

/// One thread: `push` N items one by one, then `pop` them one by one.
fn push_then_pop_single_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("push_then_pop_single_thread");
    for batch in BATCH_SIZES {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            let (mut producer, mut consumer) = spsc::<u64>(RING_CAPACITY_SLOTS_DEFAULT);
            b.iter(|| {
                for i in 0..batch as u64 {
                    let _ = producer.push(black_box(i));
                }
                for _ in 0..batch {
                    black_box(consumer.pop());
                }
            });
        });
    }
    group.finish();
}

/// One thread: `push_from` a staged batch of N (one tail publication), then
/// `drain` N (one head publication).
fn push_from_then_drain_single_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("push_from_then_drain_single_thread");
    for batch in BATCH_SIZES {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            let (mut producer, mut consumer) = spsc::<u64>(RING_CAPACITY_SLOTS_DEFAULT);
            let mut staged = VecDeque::with_capacity(batch);
            b.iter(|| {
                staged.extend(0..batch as u64);
                black_box(producer.push_from(&mut staged));
                black_box(consumer.drain(batch, |v| {
                    black_box(v);
                }));
            });
        });
    }
    group.finish();
}

/// Two threads: one item goes to an echo thread and comes back through a
/// second ring; the time is one full round trip (two one-way hand-overs).
fn ping_pong_round_trip_cross_thread(c: &mut Criterion) {
    let (mut ping_tx, mut ping_rx) = spsc::<u64>(RING_CAPACITY_SLOTS_DEFAULT);
    let (mut pong_tx, mut pong_rx) = spsc::<u64>(RING_CAPACITY_SLOTS_DEFAULT);
    let stop = Arc::new(AtomicBool::new(false));
    let echo_stop = Arc::clone(&stop);
    let echo = thread::spawn(move || {
        // Relaxed: only ends the loop; no data is handed over through it.
        while !echo_stop.load(Ordering::Relaxed) {
            match ping_rx.pop() {
                Some(v) => {
                    while pong_tx.push(v).is_err() {
                        std::hint::spin_loop();
                    }
                }
                None => std::hint::spin_loop(),
            }
        }
    });
    c.bench_function("ping_pong_round_trip_cross_thread", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                while ping_tx.push(i).is_err() {
                    std::hint::spin_loop();
                }
                loop {
                    if let Some(v) = pong_rx.pop() {
                        debug_assert_eq!(v, i);
                        break;
                    }
                    std::hint::spin_loop();
                }
            }
            start.elapsed()
        });
    });
    // Relaxed: see above.
    stop.store(true, Ordering::Relaxed);
    if echo.join().is_err() {
        eprintln!("echo thread panicked");
    }
}

/// Two threads: a stream of items in `push_from` batches of N, drained in
/// batches of N on the other thread; time per item, end to end.
fn stream_batched_cross_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("stream_batched_cross_thread");
    group.measurement_time(Duration::from_secs(5));
    for batch in BATCH_SIZES {
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter_custom(|iters| {
                let (mut producer, mut consumer) = spsc::<u64>(RING_CAPACITY_SLOTS_DEFAULT);
                let start = Instant::now();
                let sender = thread::spawn(move || {
                    let mut staged = VecDeque::with_capacity(batch);
                    let mut next = 0u64;
                    while next < iters || !staged.is_empty() {
                        while staged.len() < batch && next < iters {
                            staged.push_back(next);
                            next += 1;
                        }
                        if producer.push_from(&mut staged) == 0 {
                            std::hint::spin_loop();
                        }
                    }
                });
                let mut received = 0u64;
                while received < iters {
                    let n = consumer.drain(batch, |v| {
                        black_box(v);
                    });
                    if n == 0 {
                        std::hint::spin_loop();
                    }
                    received += n as u64;
                }
                let elapsed = start.elapsed();
                if sender.join().is_err() {
                    eprintln!("sender thread panicked");
                }
                elapsed
            });
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    push_then_pop_single_thread,
    push_from_then_drain_single_thread,
    ping_pong_round_trip_cross_thread,
    stream_batched_cross_thread
);
criterion_main!(benches);
