//! Bounded, lock-free single-producer/single-consumer ring.
//!
//! ```text
//!   Shared<T>  (one allocation, owned jointly by the two halves via Arc)
//!   ┌──────────────── 128 B ────────────────┐
//!   │ tail: AtomicUsize   (producer writes) │  ◄─ consumer reads when it
//!   ├──────────────── 128 B ────────────────┤     believes it is empty
//!   │ head: AtomicUsize   (consumer writes) │  ◄─ producer reads when it
//!   ├───────────────────────────────────────┤     believes it is full
//!   │ slots: [MaybeUninit<T>; cap], mask    │  (read-only after creation)
//!   └───────────────────────────────────────┘
//!
//!   Producer { tail, cached_head }          Consumer { head, cached_tail }
//!   (private copies, never shared)          (private copies, never shared)
//! ```
//!
//! Indices grow forever (wrapping at `usize::MAX`, which is fine because the
//! capacity is a power of two and so divides `2^usize::BITS`); the slot of
//! index `i` is `i & mask`. Slots in `[head, tail)` hold initialised items and
//! belong to the consumer; all other slots belong to the producer.
//!
//! Synchronisation is the classic Lamport ring with Release/Acquire index
//! hand-over: the producer writes a slot, then publishes `tail` with Release;
//! the consumer loads `tail` with Acquire before reading slots below it. The
//! consumer moves an item out, then publishes `head` with Release; the producer
//! loads `head` with Acquire before overwriting slots below it. Each side
//! caches the other side's index, so in steady state an operation touches only
//! its own cache line, and the batch operations publish their index once.
//!
//! Dropping: the two halves share the buffer through an `Arc`; whichever half
//! is dropped last drops the items still in `[head, tail)`, each exactly once.

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use super::sync::{Arc, AtomicUsize, Ordering, UnsafeCell};
use super::{RING_CAPACITY_SLOTS_MAX, RING_CAPACITY_SLOTS_MIN};

/// Creates a ring with `capacity_slots` slots and returns its two halves.
///
/// # Panics
///
/// If `capacity_slots` is not a power of two in
/// [`RING_CAPACITY_SLOTS_MIN`]`..=`[`RING_CAPACITY_SLOTS_MAX`].
pub fn spsc<T: Send>(capacity_slots: usize) -> (Producer<T>, Consumer<T>) {
    spsc_starting_at(capacity_slots, 0)
}

/// Sending half of a ring. `Send` (if `T: Send`), neither `Sync` nor `Clone`:
/// exactly one thread may push.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// Next index to write; the published `shared.tail` equals this between
    /// calls (we are its only writer).
    tail: usize,
    /// Last `shared.head` we loaded; the real head is never behind it.
    cached_head: usize,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

/// Receiving half of a ring. `Send` (if `T: Send`), neither `Sync` nor
/// `Clone`: exactly one thread may pop.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    /// Next index to read; the published `shared.head` equals this between
    /// calls (we are its only writer).
    head: usize,
    /// Last `shared.tail` we loaded; the real tail is never behind it.
    cached_tail: usize,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl<T> Producer<T> {
    /// Appends `item` and publishes it at once.
    ///
    /// # Errors
    ///
    /// Gives `item` back if the ring is full.
    #[inline]
    pub fn push(&mut self, item: T) -> Result<(), T> {
        if self.free_slots(1) == 0 {
            return Err(item);
        }
        // SAFETY: `free_slots(1) > 0` means `tail - head < capacity`, so slot
        // `tail` is outside `[head, tail)`: it is ours and holds no live item.
        unsafe { self.shared.write(self.tail, item) };
        self.tail = self.tail.wrapping_add(1);
        // Release: pairs with the consumer's Acquire load of `tail`
        // (`Consumer::available`, `is_empty`) so the slot write above is
        // visible before the consumer can see the new tail.
        self.shared.tail.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Moves items from the front of `staged` into the ring while there is
    /// room, publishing the new tail ONCE at the end. Returns how many moved
    /// (0 if the ring is full or `staged` is empty). Order is preserved.
    #[inline]
    pub fn push_from(&mut self, staged: &mut VecDeque<T>) -> usize {
        if staged.is_empty() {
            return 0;
        }
        let room = self.free_slots(staged.len()).min(staged.len());
        if room == 0 {
            return 0;
        }
        let mut index = self.tail;
        for item in staged.drain(..room) {
            // SAFETY: `room <= free_slots`, so the `room` slots from `tail`
            // on are all outside `[head, tail)`: ours and empty.
            unsafe { self.shared.write(index, item) };
            index = index.wrapping_add(1);
        }
        self.tail = index;
        // Release: pairs with the consumer's Acquire load of `tail`; makes all
        // `room` slot writes visible with one publication.
        self.shared.tail.store(self.tail, Ordering::Release);
        room
    }

    /// Number of slots in the ring.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// True if the consumer has taken every item pushed so far. `false` may
    /// be stale (the consumer may take them right after); `true` is reliable.
    #[inline]
    pub fn is_taken(&self) -> bool {
        // Acquire: pairs with the consumer's Release store of `head`, so what
        // the consumer did before taking the items happens-before our reading
        // `true`.
        self.shared.head.load(Ordering::Acquire) == self.tail
    }

    /// True if the ring is full right now. Racy by nature: the consumer may
    /// free slots immediately after, so `true` can be stale; `false` is
    /// reliable (only this producer fills slots).
    #[inline]
    pub fn is_full(&self) -> bool {
        // Acquire: pairs with the consumer's Release store of `head`; only a
        // hint here (no slot access depends on it), but keeps the reasoning
        // uniform.
        let head = self.shared.head.load(Ordering::Acquire);
        self.tail.wrapping_sub(head) == self.capacity()
    }

    /// Free slots according to our cached head (a lower bound).
    #[inline]
    fn cached_free_slots(&self) -> usize {
        self.capacity() - self.tail.wrapping_sub(self.cached_head)
    }

    /// Free slots, reloading the consumer's head only if the cache shows
    /// fewer than `wanted`.
    #[inline]
    fn free_slots(&mut self, wanted: usize) -> usize {
        let free = self.cached_free_slots();
        if free >= wanted {
            return free;
        }
        // Acquire: pairs with the consumer's Release store of `head` in
        // `pop`/`drain`; the consumer's moves out of the freed slots happen
        // before our overwrites of them.
        self.cached_head = self.shared.head.load(Ordering::Acquire);
        self.cached_free_slots()
    }
}

impl<T> Consumer<T> {
    /// Removes the oldest item, if any, and publishes the new head at once.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.available(1) == 0 {
            return None;
        }
        // SAFETY: `available() > 0` means `head` is in `[head, tail)`, so its
        // slot holds an initialised item published to us; we advance `head`
        // right after, so it is read exactly once.
        let item = unsafe { self.shared.read(self.head) };
        self.head = self.head.wrapping_add(1);
        // Release: pairs with the producer's Acquire load of `head`
        // (`Producer::free_slots`): our move out of the slot happens before
        // the producer may overwrite it.
        self.shared.head.store(self.head, Ordering::Release);
        Some(item)
    }

    /// Pops up to `max` items, calling `f` on each in FIFO order, publishing
    /// the new head ONCE at the end. Returns how many were popped.
    ///
    /// If `f` panics, the items already handed out stay consumed and the rest
    /// stay in the ring (the head is published during unwinding).
    #[inline]
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        let count = self.available(max).min(max);
        if count == 0 {
            return 0;
        }
        let guard = PublishHeadOnDrop { consumer: self };
        for _ in 0..count {
            let consumer = &mut *guard.consumer;
            // SAFETY: `count <= tail - head`, so each `head` visited here is
            // in `[head, tail)` and initialised; `head` advances right after
            // the read, so each item is read exactly once, and the guard
            // publishes that progress even if `f` unwinds.
            let item = unsafe { consumer.shared.read(consumer.head) };
            consumer.head = consumer.head.wrapping_add(1);
            f(item);
        }
        count
    }

    /// True if the ring holds no published item right now.
    ///
    /// A `false` is reliable (only this consumer removes items). A `true` may
    /// be stale: an item published concurrently may not be visible yet. To
    /// decide to sleep, call it only after [`super::Doorbell::prepare_park`]
    /// (whose `SeqCst` fence pairs with the one in `Doorbell::ring`), which
    /// guarantees that a concurrently published item is either seen here or
    /// followed by a wake-up.
    #[inline]
    pub fn is_empty(&self) -> bool {
        // Acquire: pairs with the producer's Release store of `tail`.
        self.shared.tail.load(Ordering::Acquire) == self.head
    }

    /// Number of slots in the ring.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// Items readable now, reloading the producer's tail only if the cache
    /// holds fewer than `wanted`.
    #[inline]
    fn available(&mut self, wanted: usize) -> usize {
        let cached = self.cached_tail.wrapping_sub(self.head);
        if cached >= wanted {
            return cached;
        }
        // Acquire: pairs with the producer's Release store of `tail` in
        // `push`/`push_from`; the producer's slot writes happen before our
        // reads of them.
        self.cached_tail = self.shared.tail.load(Ordering::Acquire);
        self.cached_tail.wrapping_sub(self.head)
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.capacity())
            .field("tail", &self.tail)
            .field("cached_head", &self.cached_head)
            .finish()
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.capacity())
            .field("head", &self.head)
            .field("cached_tail", &self.cached_tail)
            .finish()
    }
}

/// The buffer both halves point to.
struct Shared<T> {
    /// One past the last published item. Written only by the producer.
    tail: CachePadded<AtomicUsize>,
    /// Oldest unconsumed item. Written only by the consumer.
    head: CachePadded<AtomicUsize>,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
}

// SAFETY: `Shared` moves `T`s from the producer thread to the consumer thread
// (hence `T: Send`) and never hands out `&T`, so `T: Sync` is not needed.
// Every slot is accessed by exactly one side at a time, as arbitrated by the
// Release/Acquire index protocol documented on each access.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as above; `&Shared` is only used through `Producer`/`Consumer`,
// which are not `Sync` and of which exactly one of each exists.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    #[inline]
    fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Writes `item` into the slot of `index`.
    ///
    /// # Safety
    ///
    /// The caller is the producer and the slot is outside `[head, tail)`
    /// (uninitialised and not being read).
    #[inline]
    unsafe fn write(&self, index: usize, item: T) {
        let slot = &self.slots[index & self.mask];
        // SAFETY: per this function's contract the producer has exclusive
        // access to this slot.
        slot.with_mut(|ptr| unsafe { (*ptr).write(item) });
    }

    /// Moves the item out of the slot of `index`.
    ///
    /// # Safety
    ///
    /// The caller is the consumer, the slot is in `[head, tail)` (initialised
    /// and published), and the caller advances past `index` so the item is
    /// never read again.
    #[inline]
    unsafe fn read(&self, index: usize) -> T {
        let slot = &self.slots[index & self.mask];
        // SAFETY: per this function's contract the slot is initialised and
        // the consumer has exclusive access to it.
        slot.with_mut(|ptr| unsafe { (*ptr).assume_init_read() })
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        if !std::mem::needs_drop::<T>() {
            return;
        }
        // Relaxed (both): we have `&mut self`, i.e. both halves are gone; the
        // last `Arc` drop's Acquire fence already synchronised with the other
        // half's Release decrement, so its final index store is visible.
        let tail = self.tail.load(Ordering::Relaxed);
        let mut head = self.head.load(Ordering::Relaxed);
        while head != tail {
            // SAFETY: `head` is in `[head, tail)`, so the slot is initialised;
            // nobody else can touch it any more, and `head` advances so each
            // item is dropped exactly once.
            drop(unsafe { self.read(head) });
            head = head.wrapping_add(1);
        }
    }
}

/// Publishes the consumer's local head when dropped (including on unwind), so
/// items already moved out are never dropped again by `Shared::drop`.
struct PublishHeadOnDrop<'a, T> {
    consumer: &'a mut Consumer<T>,
}

impl<T> Drop for PublishHeadOnDrop<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // Release: pairs with the producer's Acquire load of `head`
        // (`Producer::free_slots`): our moves out of the drained slots happen
        // before the producer may overwrite them.
        let head = self.consumer.head;
        self.consumer.shared.head.store(head, Ordering::Release);
    }
}

// `crossbeam_utils::CachePadded` aligns to 128 bytes on these targets (a
// cache-line pair, because of the adjacent-line prefetcher); if a crossbeam
// release ever narrowed that, the two indices could share a prefetched pair
// again and this stops the build. (Elsewhere it picks the target's own line.)
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const _: () = assert!(
    std::mem::align_of::<CachePadded<std::sync::atomic::AtomicUsize>>() == super::CACHE_LINE_PAIR_BYTES
);

/// [`spsc`] with both indices starting at `start_index`, so tests can cross
/// the `usize` wrap-around point.
fn spsc_starting_at<T: Send>(capacity_slots: usize, start_index: usize) -> (Producer<T>, Consumer<T>) {
    assert!(
        capacity_slots.is_power_of_two()
            && (RING_CAPACITY_SLOTS_MIN..=RING_CAPACITY_SLOTS_MAX).contains(&capacity_slots),
        "ring capacity must be a power of two in \
         {RING_CAPACITY_SLOTS_MIN}..={RING_CAPACITY_SLOTS_MAX} slots, got {capacity_slots}"
    );
    let slots = (0..capacity_slots).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect();
    let shared = Arc::new(Shared {
        tail: CachePadded::new(AtomicUsize::new(start_index)),
        head: CachePadded::new(AtomicUsize::new(start_index)),
        slots,
        mask: capacity_slots - 1,
    });
    let producer = Producer {
        shared: Arc::clone(&shared),
        tail: start_index,
        cached_head: start_index,
        _not_sync: PhantomData,
    };
    let consumer = Consumer { shared, head: start_index, cached_tail: start_index, _not_sync: PhantomData };
    (producer, consumer)
}

#[cfg(test)]
#[cfg(not(lepus_loom))]
mod tests {
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
}
