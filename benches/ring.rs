//! The cross-shard SPSC ring (`lepus::ring::spsc`) beside two well-kept
//! crates that do the same job, on the same workloads:
//!
//! - `rtrb`: a bounded SPSC ring with chunked reads and writes (one index
//!   publication per chunk, like our `push_from`/`drain`);
//! - crossbeam's `ArrayQueue`: a bounded MPMC queue, one compare-and-swap per
//!   push and per pop, and no batch API (so its "batched" rows are loops of
//!   single operations).
//!
//! Run with `cargo bench --bench ring`. The single-thread rows are the cost of
//! the queue operations alone (no cache line changes core). In the
//! cross-thread rows the producer runs pinned to core [`PRODUCER_CORE`] and
//! the consumer to core [`CONSUMER_CORE`], so the index and slot lines really
//! move between two cores, as they do between two shards; with both threads
//! on one core they would measure context switches, not the queue.
//!
//! Every wait is bounded: a thread that finds nothing to do spins
//! [`SPINS_BEFORE_YIELD`] times, then yields its core on each further miss
//! (so a peer that shares the core with another process still runs), and
//! panics after [`STALL_MAX`] without progress instead of hanging the run.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use core_affinity::CoreId;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use lepus::config::RING_CAPACITY_SLOTS_DEFAULT;
use lepus::envelope::ENVELOPE_BYTES_MAX;
use lepus::ring::spsc;
use lepus::shard::RING_DRAIN_BATCH_MAX;

/// Batch sizes: a small turn's worth (seastar's batch), and the most a shard
/// drains from one ring per turn.
const BATCH_SIZES: [usize; 2] = [16, RING_DRAIN_BATCH_MAX];

/// Core of the producer (and of the side that times a ping-pong).
const PRODUCER_CORE: usize = 0;

/// Core of the consumer (and of the echo side of a ping-pong).
const CONSUMER_CORE: usize = 1;

/// Consecutive empty polls a waiting thread spins through before it starts
/// yielding its core (about a few milliseconds of `pause`).
const SPINS_BEFORE_YIELD: u32 = 1 << 16;

/// Longest a benchmark thread waits for its peer without any progress before
/// it panics (a bug or a starved core must fail the run, not hang it).
const STALL_MAX: Duration = Duration::from_secs(10);

/// Time criterion spends warming up each cross-thread benchmark.
const CROSS_THREAD_WARM_UP: Duration = Duration::from_secs(1);

/// Time criterion spends measuring each cross-thread benchmark.
const CROSS_THREAD_MEASUREMENT: Duration = Duration::from_secs(5);

/// One queue implementation under test: makes a bounded queue and hands out
/// its sending and receiving halves.
trait Contender {
    /// Name of the implementation in the benchmark ids.
    const NAME: &'static str;
    type Tx<T: Item>: Tx<T>;
    type Rx<T: Item>: Rx<T>;
    fn bounded<T: Item>(capacity_slots: usize) -> (Self::Tx<T>, Self::Rx<T>);
}

/// The sending half of a queue, used as a shard uses a ring.
trait Tx<T>: Send {
    /// Pushes one item and publishes it; gives it back if the queue is full.
    fn push_one(&mut self, item: T) -> Result<(), T>;

    /// Moves as many items from the front of `staged` as fit, publishing
    /// once where the queue can. Returns how many moved.
    fn push_staged(&mut self, staged: &mut VecDeque<T>) -> usize;
}

/// The receiving half of a queue, used as a shard uses a ring.
trait Rx<T>: Send {
    /// Takes the oldest item, if any.
    fn pop_one(&mut self) -> Option<T>;

    /// Takes up to `max` items in FIFO order, calling `f` on each and
    /// freeing their slots once where the queue can. Returns how many.
    fn drain_up_to(&mut self, max: usize, f: impl FnMut(T)) -> usize;
}

/// An item of a stream: a sequence number, alone or padded to the size of
/// the broker's envelopes.
trait Item: Copy + Send + 'static {
    fn with_seq(seq: u64) -> Self;
    fn seq(&self) -> u64;
}

impl Item for u64 {
    #[inline]
    fn with_seq(seq: u64) -> Self {
        seq
    }

    #[inline]
    fn seq(&self) -> u64 {
        *self
    }
}

/// An item as large as the largest `lepus::envelope::Envelope`, so the copy
/// into and out of a slot costs what it costs in the broker.
#[derive(Clone, Copy)]
struct EnvelopeSized {
    seq: u64,
    _rest: [u64; ENVELOPE_BYTES_MAX / 8 - 1],
}

const _: () = assert!(std::mem::size_of::<EnvelopeSized>() == ENVELOPE_BYTES_MAX);

impl Item for EnvelopeSized {
    #[inline]
    fn with_seq(seq: u64) -> Self {
        Self { seq, _rest: [seq; ENVELOPE_BYTES_MAX / 8 - 1] }
    }

    #[inline]
    fn seq(&self) -> u64 {
        self.seq
    }
}

/// Ours: `lepus::ring::spsc`.
struct LepusSpsc;

impl Contender for LepusSpsc {
    const NAME: &'static str = "lepus_spsc";
    type Tx<T: Item> = spsc::Producer<T>;
    type Rx<T: Item> = spsc::Consumer<T>;

    fn bounded<T: Item>(capacity_slots: usize) -> (Self::Tx<T>, Self::Rx<T>) {
        spsc::spsc(capacity_slots)
    }
}

impl<T: Item> Tx<T> for spsc::Producer<T> {
    #[inline]
    fn push_one(&mut self, item: T) -> Result<(), T> {
        self.push(item)
    }

    #[inline]
    fn push_staged(&mut self, staged: &mut VecDeque<T>) -> usize {
        self.push_from(staged)
    }
}

impl<T: Item> Rx<T> for spsc::Consumer<T> {
    #[inline]
    fn pop_one(&mut self) -> Option<T> {
        self.pop()
    }

    #[inline]
    fn drain_up_to(&mut self, max: usize, f: impl FnMut(T)) -> usize {
        self.drain(max, f)
    }
}

/// `rtrb::RingBuffer`, batches through its chunk API.
struct Rtrb;

impl Contender for Rtrb {
    const NAME: &'static str = "rtrb";
    type Tx<T: Item> = rtrb::Producer<T>;
    type Rx<T: Item> = rtrb::Consumer<T>;

    fn bounded<T: Item>(capacity_slots: usize) -> (Self::Tx<T>, Self::Rx<T>) {
        rtrb::RingBuffer::new(capacity_slots)
    }
}

impl<T: Item> Tx<T> for rtrb::Producer<T> {
    #[inline]
    fn push_one(&mut self, item: T) -> Result<(), T> {
        self.push(item).map_err(|rtrb::PushError::Full(item)| item)
    }

    #[inline]
    fn push_staged(&mut self, staged: &mut VecDeque<T>) -> usize {
        // Ask for all of it; if fewer slots are free, `TooFewSlots` says how
        // many are (rtrb reloads the consumer's index only then).
        let chunk = match self.write_chunk_uninit(staged.len()) {
            Ok(chunk) => chunk,
            Err(rtrb::chunks::ChunkError::TooFewSlots(0)) => return 0,
            Err(rtrb::chunks::ChunkError::TooFewSlots(free)) => match self.write_chunk_uninit(free) {
                Ok(chunk) => chunk,
                Err(_) => return 0,
            },
        };
        let room = chunk.len();
        chunk.fill_from_iter(staged.drain(..room))
    }
}

impl<T: Item> Rx<T> for rtrb::Consumer<T> {
    #[inline]
    fn pop_one(&mut self) -> Option<T> {
        self.pop().ok()
    }

    #[inline]
    fn drain_up_to(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        let chunk = match self.read_chunk(max) {
            Ok(chunk) => chunk,
            Err(rtrb::chunks::ChunkError::TooFewSlots(0)) => return 0,
            Err(rtrb::chunks::ChunkError::TooFewSlots(available)) => match self.read_chunk(available) {
                Ok(chunk) => chunk,
                Err(_) => return 0,
            },
        };
        let count = chunk.len();
        // The iterator moves the items out and frees their slots when dropped.
        for item in chunk {
            f(item);
        }
        count
    }
}

/// `crossbeam_queue::ArrayQueue`, both halves sharing it through an `Arc`.
struct CrossbeamArrayQueue;

/// One half of an [`ArrayQueue`] (the queue itself does not split).
struct ArrayQueueHalf<T>(Arc<ArrayQueue<T>>);

impl Contender for CrossbeamArrayQueue {
    const NAME: &'static str = "crossbeam_array_queue";
    type Tx<T: Item> = ArrayQueueHalf<T>;
    type Rx<T: Item> = ArrayQueueHalf<T>;

    fn bounded<T: Item>(capacity_slots: usize) -> (Self::Tx<T>, Self::Rx<T>) {
        let queue = Arc::new(ArrayQueue::new(capacity_slots));
        (ArrayQueueHalf(Arc::clone(&queue)), ArrayQueueHalf(queue))
    }
}

impl<T: Item> Tx<T> for ArrayQueueHalf<T> {
    #[inline]
    fn push_one(&mut self, item: T) -> Result<(), T> {
        self.0.push(item)
    }

    #[inline]
    fn push_staged(&mut self, staged: &mut VecDeque<T>) -> usize {
        let mut moved = 0;
        while let Some(item) = staged.pop_front() {
            if let Err(item) = self.0.push(item) {
                staged.push_front(item);
                break;
            }
            moved += 1;
        }
        moved
    }
}

impl<T: Item> Rx<T> for ArrayQueueHalf<T> {
    #[inline]
    fn pop_one(&mut self) -> Option<T> {
        self.0.pop()
    }

    #[inline]
    fn drain_up_to(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        let mut taken = 0;
        while taken < max {
            match self.0.pop() {
                Some(item) => f(item),
                None => break,
            }
            taken += 1;
        }
        taken
    }
}

/// What a thread does when it finds nothing to do: spin a while, then yield
/// its core on every miss, and panic once it has had no progress for
/// [`STALL_MAX`].
struct Idle {
    who: &'static str,
    misses: u32,
    yielding_since: Option<Instant>,
}

impl Idle {
    fn new(who: &'static str) -> Self {
        Self { who, misses: 0, yielding_since: None }
    }

    #[inline]
    fn progressed(&mut self) {
        self.misses = 0;
        self.yielding_since = None;
    }

    #[inline]
    fn wait(&mut self) {
        if self.misses < SPINS_BEFORE_YIELD {
            self.misses += 1;
            std::hint::spin_loop();
        } else {
            self.yield_or_give_up();
        }
    }

    #[cold]
    fn yield_or_give_up(&mut self) {
        let since = *self.yielding_since.get_or_insert_with(Instant::now);
        assert!(since.elapsed() < STALL_MAX, "{}: no progress for {STALL_MAX:?}", self.who);
        thread::yield_now();
    }
}

/// Pins the calling thread to `core`. If the machine refuses (fewer cores),
/// says so once and goes on unpinned: the numbers then include scheduling.
fn pin_to(core: usize) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    // Relaxed: only keeps the warning from repeating.
    if !core_affinity::set_for_current(CoreId { id: core }) && !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!("could not pin a benchmark thread to core {core}; cross-thread numbers include scheduling");
    }
}

/// Joins a scoped thread, passing its panic on.
fn join<R>(handle: thread::ScopedJoinHandle<'_, R>) -> R {
    match handle.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// One thread: `push_one` N items, then `pop_one` N.
fn push_then_pop_single_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("push_then_pop_single_thread");
    for batch in BATCH_SIZES {
        group.throughput(Throughput::Elements(batch as u64));
        push_then_pop::<LepusSpsc>(&mut group, batch);
        push_then_pop::<Rtrb>(&mut group, batch);
        push_then_pop::<CrossbeamArrayQueue>(&mut group, batch);
    }
    group.finish();
}

fn push_then_pop<C: Contender>(group: &mut BenchmarkGroup<'_, WallTime>, batch: usize) {
    group.bench_with_input(BenchmarkId::new(C::NAME, batch), &batch, |b, &batch| {
        let (mut tx, mut rx) = C::bounded::<u64>(RING_CAPACITY_SLOTS_DEFAULT);
        b.iter(|| {
            for i in 0..batch as u64 {
                let _ = tx.push_one(black_box(i));
            }
            for _ in 0..batch {
                black_box(rx.pop_one());
            }
        });
    });
}

/// One thread: push a staged batch of N (one publication where the queue
/// can), then drain N.
fn push_staged_then_drain_single_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("push_staged_then_drain_single_thread");
    for batch in BATCH_SIZES {
        group.throughput(Throughput::Elements(batch as u64));
        push_staged_then_drain::<LepusSpsc>(&mut group, batch);
        push_staged_then_drain::<Rtrb>(&mut group, batch);
        push_staged_then_drain::<CrossbeamArrayQueue>(&mut group, batch);
    }
    group.finish();
}

fn push_staged_then_drain<C: Contender>(group: &mut BenchmarkGroup<'_, WallTime>, batch: usize) {
    group.bench_with_input(BenchmarkId::new(C::NAME, batch), &batch, |b, &batch| {
        let (mut tx, mut rx) = C::bounded::<u64>(RING_CAPACITY_SLOTS_DEFAULT);
        let mut staged = VecDeque::with_capacity(batch);
        b.iter(|| {
            staged.extend(0..batch as u64);
            black_box(tx.push_staged(&mut staged));
            black_box(rx.drain_up_to(batch, |v| {
                black_box(v);
            }));
        });
    });
}

/// Two pinned threads: one item goes to an echo thread and comes back
/// through a second queue; the time is one round trip (two hand-overs).
fn ping_pong_round_trip_cross_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("ping_pong_round_trip_cross_thread");
    group.warm_up_time(CROSS_THREAD_WARM_UP).measurement_time(CROSS_THREAD_MEASUREMENT);
    ping_pong::<LepusSpsc>(&mut group);
    ping_pong::<Rtrb>(&mut group);
    ping_pong::<CrossbeamArrayQueue>(&mut group);
    group.finish();
}

fn ping_pong<C: Contender>(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.bench_function(C::NAME, |b| b.iter_custom(ping_pong_round_trips::<C>));
}

/// Runs `round_trips` round trips on two pinned threads; returns the time
/// the pinging side took, from the common start to the last reply.
fn ping_pong_round_trips<C: Contender>(round_trips: u64) -> Duration {
    let (mut ping_tx, mut ping_rx) = C::bounded::<u64>(RING_CAPACITY_SLOTS_DEFAULT);
    let (mut pong_tx, mut pong_rx) = C::bounded::<u64>(RING_CAPACITY_SLOTS_DEFAULT);
    let start_line = &Barrier::new(2);
    thread::scope(|s| {
        s.spawn(move || {
            pin_to(CONSUMER_CORE);
            start_line.wait();
            let mut idle = Idle::new("ping-pong echo");
            for _ in 0..round_trips {
                let mut item = loop {
                    match ping_rx.pop_one() {
                        Some(item) => break item,
                        None => idle.wait(),
                    }
                };
                idle.progressed();
                while let Err(back) = pong_tx.push_one(item) {
                    item = back;
                    idle.wait();
                }
            }
        });
        let pinger = s.spawn(move || {
            pin_to(PRODUCER_CORE);
            start_line.wait();
            let mut idle = Idle::new("ping-pong pinger");
            let start = Instant::now();
            for i in 0..round_trips {
                let mut item = i;
                while let Err(back) = ping_tx.push_one(item) {
                    item = back;
                    idle.wait();
                }
                let reply = loop {
                    match pong_rx.pop_one() {
                        Some(reply) => break reply,
                        None => idle.wait(),
                    }
                };
                idle.progressed();
                assert_eq!(reply, i, "{}: wrong reply", C::NAME);
            }
            start.elapsed()
        });
        join(pinger)
    })
}

/// Two pinned threads: a stream of `u64`s staged and pushed in batches of N,
/// drained in batches of N; time per item, end to end.
fn stream_batched_cross_thread(c: &mut Criterion) {
    stream_group::<u64>(c, "stream_batched_cross_thread");
}

/// As [`stream_batched_cross_thread`], with items the size of an envelope.
fn stream_envelope_sized_cross_thread(c: &mut Criterion) {
    stream_group::<EnvelopeSized>(c, "stream_envelope_sized_cross_thread");
}

fn stream_group<T: Item>(c: &mut Criterion, name: &str) {
    let mut group = c.benchmark_group(name);
    group.warm_up_time(CROSS_THREAD_WARM_UP).measurement_time(CROSS_THREAD_MEASUREMENT);
    group.throughput(Throughput::Elements(1));
    for batch in BATCH_SIZES {
        stream::<LepusSpsc, T>(&mut group, batch);
        stream::<Rtrb, T>(&mut group, batch);
        stream::<CrossbeamArrayQueue, T>(&mut group, batch);
    }
    group.finish();
}

fn stream<C: Contender, T: Item>(group: &mut BenchmarkGroup<'_, WallTime>, batch: usize) {
    group.bench_with_input(BenchmarkId::new(C::NAME, batch), &batch, |b, &batch| {
        b.iter_custom(|items| stream_items::<C, T>(items, batch));
    });
}

/// Sends `items` items through a fresh queue from a producer on
/// [`PRODUCER_CORE`] to a consumer on [`CONSUMER_CORE`], both in batches of
/// `batch` as a shard stages and drains; returns the consumer's time from the
/// common start to the last item.
fn stream_items<C: Contender, T: Item>(items: u64, batch: usize) -> Duration {
    let (mut tx, mut rx) = C::bounded::<T>(RING_CAPACITY_SLOTS_DEFAULT);
    let start_line = &Barrier::new(2);
    thread::scope(|s| {
        s.spawn(move || {
            pin_to(PRODUCER_CORE);
            start_line.wait();
            let mut staged = VecDeque::with_capacity(batch);
            let mut next = 0u64;
            let mut idle = Idle::new("stream producer");
            while next < items || !staged.is_empty() {
                while staged.len() < batch && next < items {
                    staged.push_back(T::with_seq(next));
                    next += 1;
                }
                if tx.push_staged(&mut staged) == 0 {
                    idle.wait();
                } else {
                    idle.progressed();
                }
            }
        });
        let consumer = s.spawn(move || {
            pin_to(CONSUMER_CORE);
            start_line.wait();
            let start = Instant::now();
            let mut expected = 0u64;
            let mut out_of_order = 0u64;
            let mut idle = Idle::new("stream consumer");
            while expected < items {
                let taken = rx.drain_up_to(batch, |item| {
                    out_of_order += u64::from(item.seq() != expected);
                    expected += 1;
                    black_box(item);
                });
                if taken == 0 {
                    idle.wait();
                } else {
                    idle.progressed();
                }
            }
            let elapsed = start.elapsed();
            assert_eq!(out_of_order, 0, "{}: items out of order", C::NAME);
            elapsed
        });
        join(consumer)
    })
}

criterion_group!(
    benches,
    push_then_pop_single_thread,
    push_staged_then_drain_single_thread,
    ping_pong_round_trip_cross_thread,
    stream_batched_cross_thread,
    stream_envelope_sized_cross_thread
);
criterion_main!(benches);
