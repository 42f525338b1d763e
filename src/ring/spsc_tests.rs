//! Unit and property tests of the SPSC ring (`ring::spsc`).

use super::*;
use proptest::prelude::*;
use std::sync::atomic::AtomicUsize as StdAtomicUsize;
use std::sync::Arc as StdArc;
use std::time::{Duration, Instant};

/// Counts its drops in a shared counter.
struct DropCounter(StdArc<StdAtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn drops(counter: &StdArc<StdAtomicUsize>) -> usize {
    counter.load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn fifo_order_single_items() {
    let (mut p, mut c) = spsc::<u32>(8);
    assert_eq!(c.pop(), None);
    for i in 0..5 {
        p.push(i).unwrap();
    }
    for i in 0..5 {
        assert_eq!(c.pop(), Some(i));
    }
    assert_eq!(c.pop(), None);
}

#[test]
fn full_and_empty_boundaries() {
    let (mut p, mut c) = spsc::<u32>(4);
    assert_eq!(p.capacity(), 4);
    assert_eq!(c.capacity(), 4);
    assert!(c.is_empty());
    assert!(!p.is_full());
    for i in 0..4 {
        p.push(i).unwrap();
        assert!(!c.is_empty());
    }
    assert!(p.is_full());
    assert_eq!(p.push(99), Err(99));
    assert_eq!(c.pop(), Some(0));
    assert!(!p.is_full());
    p.push(4).unwrap();
    assert!(p.is_full());
    for i in 1..5 {
        assert_eq!(c.pop(), Some(i));
    }
    assert!(c.is_empty());
    assert_eq!(c.pop(), None);
}

#[test]
fn wraps_around_many_times() {
    let (mut p, mut c) = spsc::<u64>(4);
    let mut next_in = 0u64;
    let mut next_out = 0u64;
    // Uneven push/pop counts so every slot offset gets exercised.
    for round in 0..10_000u64 {
        for _ in 0..(round % 4 + 1) {
            if p.push(next_in).is_ok() {
                next_in += 1;
            }
        }
        for _ in 0..(round % 3 + 1) {
            if let Some(v) = c.pop() {
                assert_eq!(v, next_out);
                next_out += 1;
            }
        }
    }
    while let Some(v) = c.pop() {
        assert_eq!(v, next_out);
        next_out += 1;
    }
    assert_eq!(next_in, next_out);
    assert!(next_out > 10_000);
}

#[test]
fn index_wraps_past_usize_max() {
    let (mut p, mut c) = spsc_starting_at::<usize>(4, usize::MAX - 5);
    for i in 0..100 {
        p.push(i).unwrap();
        p.push(i + 1000).unwrap();
        assert_eq!(c.pop(), Some(i));
        assert_eq!(c.pop(), Some(i + 1000));
    }
    let mut staged: VecDeque<usize> = (0..6).collect();
    assert_eq!(p.push_from(&mut staged), 4);
    assert!(p.is_full());
    let mut out = Vec::new();
    assert_eq!(c.drain(10, |v| out.push(v)), 4);
    assert_eq!(out, [0, 1, 2, 3]);
}

#[test]
fn push_from_moves_what_fits_and_keeps_the_rest() {
    let (mut p, mut c) = spsc::<u32>(4);
    let mut staged: VecDeque<u32> = VecDeque::new();
    assert_eq!(p.push_from(&mut staged), 0);
    staged.extend(0..6);
    assert_eq!(p.push_from(&mut staged), 4);
    assert_eq!(staged, [4, 5]);
    assert_eq!(p.push_from(&mut staged), 0, "ring is full");
    assert_eq!(staged.len(), 2);
    assert_eq!(c.pop(), Some(0));
    assert_eq!(p.push_from(&mut staged), 1);
    assert_eq!(staged, [5]);
    let mut out = Vec::new();
    c.drain(usize::MAX, |v| out.push(v));
    assert_eq!(out, [1, 2, 3, 4]);
    assert_eq!(p.push_from(&mut staged), 1);
    assert!(staged.is_empty());
    assert_eq!(c.pop(), Some(5));
}

#[test]
fn drain_respects_max() {
    let (mut p, mut c) = spsc::<u32>(16);
    for i in 0..10 {
        p.push(i).unwrap();
    }
    let mut out = Vec::new();
    assert_eq!(c.drain(0, |v| out.push(v)), 0);
    assert_eq!(c.drain(3, |v| out.push(v)), 3);
    assert_eq!(out, [0, 1, 2]);
    assert_eq!(c.drain(100, |v| out.push(v)), 7);
    assert_eq!(out, (0..10).collect::<Vec<_>>());
    assert_eq!(c.drain(100, |v| out.push(v)), 0);
    // Space freed by drain is visible to the producer.
    for i in 0..16 {
        p.push(i).unwrap();
    }
    assert!(p.is_full());
}

#[test]
fn drop_non_empty_ring_drops_each_item_once() {
    for consumer_first in [false, true] {
        let counter = StdArc::new(StdAtomicUsize::new(0));
        let (mut p, mut c) = spsc::<DropCounter>(8);
        for _ in 0..8 {
            assert!(p.push(DropCounter(StdArc::clone(&counter))).is_ok());
        }
        drop(c.pop());
        c.drain(2, drop);
        assert_eq!(drops(&counter), 3);
        // Wrap so the live range straddles the end of the slot array.
        for _ in 0..2 {
            assert!(p.push(DropCounter(StdArc::clone(&counter))).is_ok());
        }
        if consumer_first {
            drop(c);
            assert_eq!(drops(&counter), 3, "items live until both halves are gone");
            drop(p);
        } else {
            drop(p);
            assert_eq!(drops(&counter), 3, "items live until both halves are gone");
            drop(c);
        }
        assert_eq!(drops(&counter), 10);
    }
}

#[test]
fn panic_in_drain_callback_neither_leaks_nor_double_drops() {
    let counter = StdArc::new(StdAtomicUsize::new(0));
    let (mut p, mut c) = spsc::<DropCounter>(8);
    for _ in 0..6 {
        assert!(p.push(DropCounter(StdArc::clone(&counter))).is_ok());
    }
    let mut seen = 0;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.drain(5, |item| {
            seen += 1;
            drop(item);
            assert!(seen < 3, "boom");
        })
    }));
    assert!(result.is_err());
    assert_eq!(drops(&counter), 3);
    // The 3 handed-out items are consumed; 3 remain.
    let mut remaining = 0;
    c.drain(10, |_| remaining += 1);
    assert_eq!(remaining, 3);
    assert_eq!(drops(&counter), 6);
    drop((p, c));
    assert_eq!(drops(&counter), 6);
}

#[test]
fn zero_sized_items() {
    let (mut p, mut c) = spsc::<()>(2);
    p.push(()).unwrap();
    p.push(()).unwrap();
    assert_eq!(p.push(()), Err(()));
    assert_eq!(c.drain(5, |()| {}), 2);
    assert_eq!(c.pop(), None);
}

#[test]
#[should_panic(expected = "power of two")]
fn capacity_must_be_power_of_two() {
    let _ = spsc::<u8>(12);
}

#[test]
#[should_panic(expected = "power of two")]
fn capacity_must_be_at_least_two() {
    let _ = spsc::<u8>(1);
}

#[test]
#[should_panic(expected = "power of two")]
fn capacity_zero_is_rejected() {
    let _ = spsc::<u8>(0);
}

#[test]
#[should_panic(expected = "power of two")]
fn capacity_above_max_is_rejected() {
    let _ = spsc::<u8>(RING_CAPACITY_SLOTS_MAX * 2);
}

#[test]
fn capacity_limits_are_accepted() {
    assert_eq!(spsc::<u8>(RING_CAPACITY_SLOTS_MIN).0.capacity(), 2);
    assert_eq!(spsc::<u8>(RING_CAPACITY_SLOTS_MAX).1.capacity(), RING_CAPACITY_SLOTS_MAX);
}

#[test]
fn halves_are_send_but_not_sync() {
    fn assert_send<S: Send>() {}
    assert_send::<Producer<String>>();
    assert_send::<Consumer<String>>();

    // Compile-time "not Sync" check: if `X: Sync`, both impls apply and
    // the `_` below is ambiguous, which fails to compile.
    trait AmbiguousIfSync<A> {
        fn check() {}
    }
    impl<X: ?Sized> AmbiguousIfSync<()> for X {}
    impl<X: ?Sized + Sync> AmbiguousIfSync<u8> for X {}
    <Producer<String> as AmbiguousIfSync<_>>::check();
    <Consumer<String> as AmbiguousIfSync<_>>::check();
}

/// One ring operation for the model-based test.
#[derive(Clone, Debug)]
enum Op {
    Push(u32),
    PushFrom(usize),
    Pop,
    Drain(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u32>().prop_map(Op::Push),
        (0usize..20).prop_map(Op::PushFrom),
        Just(Op::Pop),
        (0usize..20).prop_map(Op::Drain),
    ]
}

proptest! {
    /// Single-threaded, the ring must behave exactly like a `VecDeque`
    /// bounded at `capacity`, from any starting index (wrap included).
    #[test]
    fn behaves_like_a_bounded_vecdeque(
        capacity_log2 in 1u32..6,
        start in prop_oneof![Just(0usize), Just(usize::MAX - 3), any::<usize>()],
        ops in proptest::collection::vec(op(), 0..200),
    ) {
        let capacity = 1usize << capacity_log2;
        let (mut p, mut c) = spsc_starting_at::<u32>(capacity, start);
        let mut model = VecDeque::new();
        let mut next = 0u32;
        for op in ops {
            match op {
                Op::Push(v) => {
                    let result = p.push(v);
                    if model.len() < capacity {
                        prop_assert_eq!(result, Ok(()));
                        model.push_back(v);
                    } else {
                        prop_assert_eq!(result, Err(v));
                    }
                }
                Op::PushFrom(k) => {
                    let before: VecDeque<u32> = (next..next + k as u32).collect();
                    next += k as u32;
                    let mut staged = before.clone();
                    let moved = p.push_from(&mut staged);
                    prop_assert_eq!(moved, k.min(capacity - model.len()));
                    model.extend(before.iter().take(moved));
                    prop_assert!(staged.iter().eq(before.iter().skip(moved)));
                }
                Op::Pop => prop_assert_eq!(c.pop(), model.pop_front()),
                Op::Drain(k) => {
                    let mut got = Vec::new();
                    let n = c.drain(k, |v| got.push(v));
                    let take = k.min(model.len());
                    prop_assert_eq!(n, take);
                    let expected: Vec<u32> = model.drain(..take).collect();
                    prop_assert_eq!(got, expected);
                }
            }
            prop_assert_eq!(p.is_full(), model.len() == capacity);
            prop_assert_eq!(c.is_empty(), model.is_empty());
        }
    }
}

/// Two threads, a few million `u64`s through a small ring, mixing single
/// and batch operations on both sides. Checks order and sum.
#[test]
fn two_thread_stress_order_and_sum() {
    // Fewer in unoptimised builds to keep `cargo test` quick.
    const ITEMS: u64 = if cfg!(debug_assertions) { 2_000_000 } else { 4_000_000 };
    const TIME_LIMIT: Duration = Duration::from_secs(120);
    let (mut p, mut c) = spsc::<u64>(128);
    let start = Instant::now();
    let producer = std::thread::spawn(move || {
        let mut staged = VecDeque::with_capacity(64);
        let mut next_to_stage = 0u64;
        let mut round = 0u64;
        while next_to_stage < ITEMS || !staged.is_empty() {
            round += 1;
            let progressed = if round % 3 == 0 && staged.is_empty() {
                let ok = p.push(next_to_stage).is_ok();
                next_to_stage += u64::from(ok);
                ok
            } else {
                while staged.len() < 40 && next_to_stage < ITEMS {
                    staged.push_back(next_to_stage);
                    next_to_stage += 1;
                }
                p.push_from(&mut staged) > 0
            };
            if !progressed {
                std::hint::spin_loop();
            }
            if round % 4096 == 0 {
                assert!(start.elapsed() < TIME_LIMIT, "producer timed out");
            }
        }
    });
    let mut expected = 0u64;
    let mut sum = 0u64;
    let mut idle_rounds = 0u64;
    while expected < ITEMS {
        let got = if expected % 2 == 0 {
            c.drain(16, |v| {
                assert_eq!(v, expected);
                expected += 1;
                sum = sum.wrapping_add(v);
            })
        } else {
            match c.pop() {
                Some(v) => {
                    assert_eq!(v, expected);
                    expected += 1;
                    sum = sum.wrapping_add(v);
                    1
                }
                None => 0,
            }
        };
        if got == 0 {
            std::hint::spin_loop();
            idle_rounds += 1;
            if idle_rounds % 4096 == 0 {
                assert!(start.elapsed() < TIME_LIMIT, "consumer timed out");
            }
        }
    }
    producer.join().unwrap();
    assert_eq!(sum, ITEMS * (ITEMS - 1) / 2);
    assert!(c.is_empty());
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "spsc stress: {ITEMS} items in {secs:.3}s = {:.1} M items/s cross-thread",
        ITEMS as f64 / secs / 1e6
    );
}
