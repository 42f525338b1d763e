//! How a producer wakes a parked consumer shard, at most once per batch.
//!
//! A shard blocks in `mio::Poll::poll` when it has nothing to do. Producers
//! must wake it when they publish into one of its inbound rings, but an
//! `eventfd` write per message (or even per batch) would cost a syscall on the
//! hot path while the consumer is busy anyway. So each shard owns a `parked`
//! flag that is set only while it is about to sleep, and producers make the
//! syscall only when they see it set, clearing it so that only one of them
//! (per sleep) pays for it.
//!
//! The danger is the lost wake-up: the consumer checks its inboxes, finds them
//! empty, and goes to sleep just as a producer publishes and decides nobody
//! is asleep. This is the store-buffering (Dekker) pattern, prevented by one
//! `SeqCst` fence on each side:
//!
//! ```text
//!   consumer (prepare_park + caller)        producer (after publishing; ring)
//!   parked.store(true)                      ring.tail.store(new)   [Release]
//!   fence(SeqCst)  ◄──── total order S ───► fence(SeqCst)
//!   ring.tail.load() for every inbox        parked.load() / swap(false)
//! ```
//!
//! Whichever fence comes first in `S`, the other thread's load after its own
//! fence sees the store before the first fence: either the consumer sees the
//! new tail (and does not sleep) or the producer sees `parked == true` (and
//! wakes it). Both can happen; that only costs a spurious wake-up.
//!
//! Consumer protocol, every time it wants to block:
//!
//! 1. [`Doorbell::prepare_park`];
//! 2. re-check every inbox (`MeshEndpoint::inboxes_empty`); if any holds an
//!    item, call [`Doorbell::unpark`] and go back to work instead of blocking;
//! 3. otherwise block in `poll` (a waker event may already be pending: then
//!    `poll` returns at once);
//! 4. after `poll` returns, for whatever reason, call [`Doorbell::unpark`].

use std::fmt;
use std::io;

use super::sync::{fence, AtomicBool, Ordering};

/// A shard's wake-up line: a `parked` flag plus the `mio::Waker` of the
/// shard's `Poll`. Shared (in an `Arc`) by the owning shard and every peer.
pub struct Doorbell {
    flag: ParkFlag,
    /// `None`: the shard never blocks (see [`Doorbell::without_waker`]).
    waker: Option<mio::Waker>,
}

impl Doorbell {
    /// Wraps the `Waker` registered with the owning shard's `Poll`.
    pub fn new(waker: mio::Waker) -> Self {
        Self { flag: ParkFlag::new(), waker: Some(waker) }
    }

    /// A doorbell with no OS object behind it, for a consumer that never
    /// blocks in `poll` (a unit test or simulation driving connections and
    /// rings by hand): the flag works as usual, ringing wakes nobody.
    pub fn without_waker() -> Self {
        Self { flag: ParkFlag::new(), waker: None }
    }

    /// Consumer side, before blocking in poll: marks the shard parked, then
    /// issues a `SeqCst` fence. The caller MUST then re-check its inboxes and
    /// not block if any is non-empty (calling [`Self::unpark`] instead).
    #[inline]
    pub fn prepare_park(&self) {
        self.flag.prepare_park();
    }

    /// Consumer side, after waking (or after deciding not to block): clears
    /// the parked flag so producers stop paying for wake-ups.
    #[inline]
    pub fn unpark(&self) {
        self.flag.unpark();
    }

    /// Producer side, after publishing a batch: if the consumer is parked,
    /// clears the flag and wakes it (one `eventfd` write); otherwise does
    /// nothing but a fence and a load.
    ///
    /// # Errors
    ///
    /// If the `eventfd` write fails; the flag is then re-armed, so the next
    /// `ring` retries the wake-up.
    #[inline]
    pub fn ring(&self) -> io::Result<()> {
        self.flag.ring_with(|| self.waker.as_ref().map_or(Ok(()), mio::Waker::wake))
    }
}

impl fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Doorbell").field("parked", &self.flag.is_parked()).finish_non_exhaustive()
    }
}

/// The wake-up decision logic of a [`Doorbell`], without the `Waker`, so loom
/// can model it with a closure in place of the syscall.
pub(crate) struct ParkFlag {
    parked: AtomicBool,
}

impl ParkFlag {
    pub(crate) fn new() -> Self {
        Self { parked: AtomicBool::new(false) }
    }

    #[inline]
    pub(crate) fn prepare_park(&self) {
        // Relaxed: the fence below orders this store before the caller's
        // inbox loads; that is all it needs.
        self.parked.store(true, Ordering::Relaxed);
        // SeqCst: pairs with the SeqCst fence in `ring_with` (Dekker): either
        // the producer's load there sees `true`, or our inbox loads after this
        // fence see the tail it published before its fence.
        fence(Ordering::SeqCst);
    }

    #[inline]
    pub(crate) fn unpark(&self) {
        // Relaxed: a hint only; a producer that still sees `true` merely makes
        // a spurious wake-up. Items are handed over by the rings' own
        // Release/Acquire indices, never through this flag.
        self.parked.store(false, Ordering::Relaxed);
    }

    /// Calls `wake` iff the consumer was parked, and clears the flag so other
    /// producers ringing the same doorbell skip the syscall.
    #[inline]
    pub(crate) fn ring_with(&self, wake: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        // SeqCst: pairs with the SeqCst fence in `prepare_park` (Dekker),
        // ordering the caller's earlier tail publication before the load below.
        fence(Ordering::SeqCst);
        // Relaxed (load and swap): ordering comes from the fences. The load
        // first keeps the common not-parked case read-only, so the line stays
        // shared instead of bouncing between producers; the swap makes exactly
        // one producer pay for the wake-up of one sleep.
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::Relaxed) {
            if let Err(error) = wake() {
                // Re-arm so the next ring() retries instead of the consumer
                // sleeping through our item.
                // Relaxed: a hint, like `unpark`.
                self.parked.store(true, Ordering::Relaxed);
                return Err(error);
            }
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn is_parked(&self) -> bool {
        // Relaxed: diagnostics only.
        self.parked.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
#[cfg(not(lepus_loom))]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::time::Duration;

    const WAKE: Token = Token(0);

    fn poll_and_doorbell() -> (Poll, Doorbell) {
        let poll = Poll::new().unwrap();
        let waker = mio::Waker::new(poll.registry(), WAKE).unwrap();
        (poll, Doorbell::new(waker))
    }

    fn woken(poll: &mut Poll) -> bool {
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
        events.iter().any(|e| e.token() == WAKE)
    }

    #[test]
    fn ring_does_nothing_unless_parked() {
        let (mut poll, bell) = poll_and_doorbell();
        bell.ring().unwrap();
        assert!(!woken(&mut poll));
        bell.prepare_park();
        bell.unpark();
        bell.ring().unwrap();
        assert!(!woken(&mut poll));
    }

    #[test]
    fn ring_wakes_parked_consumer_once() {
        let (mut poll, bell) = poll_and_doorbell();
        bell.prepare_park();
        assert!(bell.flag.is_parked());
        bell.ring().unwrap();
        assert!(!bell.flag.is_parked(), "ring clears the flag");
        // Further rings in the same sleep make no syscall.
        bell.ring().unwrap();
        bell.ring().unwrap();
        assert!(woken(&mut poll));
        bell.unpark();
        assert!(!woken(&mut poll));
    }

    #[test]
    fn failed_wake_rearms_the_flag() {
        let flag = ParkFlag::new();
        flag.prepare_park();
        let result = flag.ring_with(|| Err(io::Error::other("no")));
        assert!(result.is_err());
        assert!(flag.is_parked());
        let mut calls = 0;
        flag.ring_with(|| {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, 1);
    }

    #[test]
    fn doorbell_is_send_and_sync() {
        fn assert_send_sync<S: Send + Sync>() {}
        assert_send_sync::<Doorbell>();
    }
}
