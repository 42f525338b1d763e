//! Cross-shard message passing: bounded SPSC rings, the mesh of rings between
//! shards, and the doorbell that wakes a parked shard.
//!
//! Atomics and memory only: the rings are generic over what they carry
//! (`Mesh<T>`, `spsc::<T>`); what the broker sends through them is
//! `crate::envelope`, a module above this one.
//!
//! # Design
//!
//! Lepus runs one pinned shard thread per core. Shards share nothing except
//! one single-producer/single-consumer ring per *ordered* pair of shards, so
//! for `N` shards there are `N * (N - 1)` rings and every ring has exactly one
//! writer thread and one reader thread. No ring ever needs a CAS loop or a
//! lock, and no cache line is written by more than one core:
//!
//! ```text
//!            shard 0                  shard 1                  shard 2
//!   stage() ─► staging[1] ──ring 0→1──► inbox[0]
//!          └─► staging[2] ──ring 0→2────────────────────────► inbox[0]
//!              inbox[1] ◄──ring 1→0── staging[0] ◄─ stage()
//!              ...                      ...                    ...
//! ```
//!
//! One ring ([`mod@spsc`]) is a power-of-two array of slots plus two monotonically
//! increasing (wrapping) indices, each alone on its own cache-line pair:
//!
//! ```text
//!         head (consumer)         tail (producer)
//!           │                             │
//!    ┌────┬────┬────┬────┬────┬────┬────┬────┐
//!    │ -- │ A  │ B  │ C  │ D  │ E  │ F  │ -- │   slot = index & (cap - 1)
//!    └────┴────┴────┴────┴────┴────┴────┴────┘
//!      0    1    2    3    4    5    6    7
//!    len = tail - head (wrapping)    full: len == cap    empty: head == tail
//! ```
//!
//! Each side keeps a private copy of the *other* side's index and only reloads
//! it (one shared-line read) when the private copy says "full" / "empty", and
//! publishes its own index once per batch ([`spsc::Producer::push_from`],
//! [`spsc::Consumer::drain`]). Sending is therefore two-phase, as in seastar's
//! SMP queues: [`mesh::MeshEndpoint::stage`] appends to a private per-target
//! staging queue (no atomics at all), and [`mesh::MeshEndpoint::flush`], called
//! once per event-loop iteration, moves whatever fits into each ring with a
//! single tail publication and rings the target's [`doorbell::Doorbell`] at
//! most once. The doorbell costs a fence and a load of the target's `parked`
//! flag, plus one `eventfd` write only if the target is actually asleep.
//!
//! # Parking protocol (must be followed exactly; see [`doorbell`])
//!
//! ```text
//!   consumer shard, about to block           producer shard, end of iteration
//!   doorbell().prepare_park()   parked = 1   flush(): publish tails  [Release]
//!   ── fence(SeqCst) ──                      ── fence(SeqCst) ──  (in ring())
//!   if !inboxes_empty() {                    if parked { parked = 0; wake() }
//!       doorbell().unpark(); continue
//!   }
//!   poll(timeout)    // blocks
//!   doorbell().unpark()
//! ```
//!
//! Nothing wakes a shard when a *full* outbound ring gains room, so a shard
//! with `staged_len() > 0` must not block indefinitely: it polls with a short
//! timeout (or spins) and flushes again until its staging queues are empty.

pub mod doorbell;
pub mod mesh;
pub mod spsc;

#[cfg(test)]
#[cfg(lepus_loom)]
mod loom_tests;

pub use doorbell::Doorbell;
pub use mesh::{mesh, Mesh, MeshEndpoint};
pub use spsc::{spsc, Consumer, Producer};

/// Smallest ring accepted by [`spsc::spsc`], in slots.
pub const RING_CAPACITY_SLOTS_MIN: usize = 2;

/// Largest ring accepted by [`spsc::spsc`], in slots (bounds the memory of the
/// `N * (N - 1)` mesh rings and keeps a misconfiguration from allocating
/// gigabytes).
pub const RING_CAPACITY_SLOTS_MAX: usize = 1 << 20;

/// Largest number of shards a mesh can connect (one [`crate::ids::ShardId`] is a `u16`).
pub const MESH_SHARDS_MAX: usize = u16::MAX as usize + 1;

/// Size of the false-sharing guard around each ring index, in bytes: two
/// 64-byte lines because Intel's adjacent-line prefetcher pulls in pairs.
/// The guard is `crossbeam_utils::CachePadded`; `spsc.rs` checks at compile
/// time that it is this wide on x86_64 and aarch64.
pub const CACHE_LINE_PAIR_BYTES: usize = 128;

const _: () = assert!(RING_CAPACITY_SLOTS_MIN.is_power_of_two());
const _: () = assert!(RING_CAPACITY_SLOTS_MAX.is_power_of_two());
const _: () = assert!(MESH_SHARDS_MAX - 1 == u16::MAX as usize);

/// Atomics, `Arc` and `UnsafeCell` from `std`, or from loom's model checker
/// under `--cfg lepus_loom`. Only the ring internals go through this facade.
#[cfg(lepus_loom)]
pub(crate) mod sync {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
    pub(crate) use loom::sync::Arc;
}

/// Atomics, `Arc` and `UnsafeCell` from `std`, or from loom's model checker
/// under `--cfg lepus_loom`. Only the ring internals go through this facade.
#[cfg(not(lepus_loom))]
pub(crate) mod sync {
    pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
    pub(crate) use std::sync::Arc;

    /// `std::cell::UnsafeCell` with loom's closure-based API (zero cost).
    #[derive(Debug)]
    #[repr(transparent)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }

        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}
