//! Model-checked tests of the ring and the doorbell protocol.
//!
//! Run: `RUSTFLAGS="--cfg lepus_loom" cargo test --release --lib loom`. Under
//! `--cfg lepus_loom` the ring's atomics, `Arc` and `UnsafeCell` come from loom
//! (see `super::sync`), so loom explores every interleaving and every value a
//! load may legally return, and flags unsynchronised slot accesses as races.

use std::collections::VecDeque;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use super::doorbell::ParkFlag;
use super::spsc::spsc;

/// Pushes into a 2-slot ring from one thread while another pops: FIFO, no
/// loss, no duplication, no data race on slots, across a wrap-around.
#[test]
fn loom_push_pop_fifo_across_wrap() {
    loom::model(|| {
        let (mut producer, mut consumer) = spsc::<u32>(2);
        let sender = thread::spawn(move || {
            for i in 0..3 {
                let mut item = i;
                while let Err(back) = producer.push(item) {
                    item = back;
                    thread::yield_now();
                }
            }
        });
        for expected in 0..3 {
            loop {
                if let Some(got) = consumer.pop() {
                    assert_eq!(got, expected);
                    break;
                }
                thread::yield_now();
            }
        }
        assert_eq!(consumer.pop(), None);
        sender.join().unwrap();
    });
}

/// The batch operations: `push_from` publishes several slots with one tail
/// store and `drain` frees several with one head store.
#[test]
fn loom_push_from_and_drain_batches() {
    loom::model(|| {
        let (mut producer, mut consumer) = spsc::<u32>(2);
        let sender = thread::spawn(move || {
            let mut staged: VecDeque<u32> = (0..3).collect();
            while !staged.is_empty() {
                if producer.push_from(&mut staged) == 0 {
                    thread::yield_now();
                }
            }
        });
        let mut received = Vec::new();
        while received.len() < 3 {
            if consumer.drain(2, |v| received.push(v)) == 0 {
                thread::yield_now();
            }
        }
        assert_eq!(received, [0, 1, 2]);
        sender.join().unwrap();
    });
}

/// Counts its drops.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        // Relaxed: read only after both threads are joined.
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Both halves dropped concurrently on different threads, with items still
/// in the ring: every item is dropped exactly once, whichever half goes last.
#[test]
fn loom_items_left_in_ring_drop_exactly_once() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut producer, mut consumer) = spsc::<Counted>(2);
        let counter = Arc::clone(&drops);
        let sender = thread::spawn(move || {
            for _ in 0..2 {
                assert!(producer.push(Counted(Arc::clone(&counter))).is_ok());
            }
            drop(producer);
        });
        drop(consumer.pop());
        drop(consumer);
        sender.join().unwrap();
        assert_eq!(drops.load(Ordering::Relaxed), 2);
    });
}

/// The park/ring protocol cannot lose a wake-up: if the consumer decides to
/// sleep (inbox empty after `prepare_park`), the producer's `ring` after
/// publishing must wake it.
#[test]
fn loom_doorbell_never_loses_a_wakeup() {
    loom::model(|| {
        let flag = Arc::new(ParkFlag::new());
        let wakes = Arc::new(AtomicUsize::new(0));
        let (mut producer, mut consumer) = spsc::<u32>(2);

        let producer_flag = Arc::clone(&flag);
        let producer_wakes = Arc::clone(&wakes);
        let sender = thread::spawn(move || {
            assert!(producer.push(7).is_ok());
            producer_flag
                .ring_with(|| {
                    // Relaxed: read only after the join.
                    producer_wakes.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                })
                .unwrap();
        });

        flag.prepare_park();
        let sleeps = consumer.is_empty();
        if !sleeps {
            flag.unpark();
        }
        sender.join().unwrap();

        // Relaxed: the join synchronised with the producer thread.
        let woken = wakes.load(Ordering::Relaxed);
        if sleeps {
            assert_eq!(woken, 1, "consumer slept through a published item");
        }
        assert!(woken <= 1);
        assert_eq!(consumer.pop(), Some(7));
    });
}

/// Two producers ring the same parked consumer: it is woken, and only once
/// per sleep (the swap lets exactly one producer pay for the syscall).
#[test]
fn loom_doorbell_two_producers_wake_at_most_once() {
    loom::model(|| {
        let flag = Arc::new(ParkFlag::new());
        let wakes = Arc::new(AtomicUsize::new(0));
        let (mut producer_a, mut consumer_a) = spsc::<u32>(2);
        let (mut producer_b, mut consumer_b) = spsc::<u32>(2);

        let spawn_sender = |mut push: Box<dyn FnMut() + Send>| {
            let flag = Arc::clone(&flag);
            let wakes = Arc::clone(&wakes);
            thread::spawn(move || {
                push();
                flag.ring_with(|| {
                    // Relaxed: read only after the joins.
                    wakes.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                })
                .unwrap();
            })
        };
        let a = spawn_sender(Box::new(move || assert!(producer_a.push(1).is_ok())));
        let b = spawn_sender(Box::new(move || assert!(producer_b.push(2).is_ok())));

        flag.prepare_park();
        let sleeps = consumer_a.is_empty() && consumer_b.is_empty();
        if !sleeps {
            flag.unpark();
        }
        a.join().unwrap();
        b.join().unwrap();

        // Relaxed: the joins synchronised with both producers.
        let woken = wakes.load(Ordering::Relaxed);
        if sleeps {
            assert_eq!(woken, 1, "parked consumer not woken exactly once");
        }
        assert!(woken <= 1);
        assert_eq!(consumer_a.pop(), Some(1));
        assert_eq!(consumer_b.pop(), Some(2));
    });
}
