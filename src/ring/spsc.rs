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

    /// Items waiting in the ring now (statistics: stale as soon as read).
    pub fn occupancy(&self) -> usize {
        // Acquire: pairs with the producer's Release store of `tail`, as
        // `is_empty`; only a count is read, no slot.
        self.shared.tail.load(Ordering::Acquire).wrapping_sub(self.head)
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
#[path = "spsc_tests.rs"]
mod tests;
