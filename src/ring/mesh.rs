//! All rings between `N` shards, split into one endpoint per shard.
//!
//! ```text
//!   MeshEndpoint (shard i)
//!   ┌──────────────────────────────────────────────────────────────┐
//!   │ outboxes[j]: staged VecDeque ─push_from─► Producer ring i→j  │
//!   │ pending:     targets j whose staging queue is non-empty      │
//!   │ inboxes:     (j, Consumer ring j→i) for every j != i         │
//!   │ doorbells[j]: wakes shard j; doorbells[i] is our own         │
//!   └──────────────────────────────────────────────────────────────┘
//! ```
//!
//! Sending is two-phase. [`MeshEndpoint::stage`] appends to a private queue
//! (no atomics, never fails), so a shard can emit many envelopes while
//! handling one event-loop iteration. [`MeshEndpoint::flush`], called once per
//! iteration, moves what fits into each ring with one tail publication per
//! ring and rings each target's doorbell once. Envelopes from one source to
//! one target are delivered in staging order; there is no order across
//! different sources or targets.
//!
//! Backpressure: a full ring leaves items staged. Nothing notifies the sender
//! when room appears, so while [`MeshEndpoint::staged_len`] is non-zero the
//! shard must poll with a short timeout (or spin) and retry `flush`, and it
//! should stop producing (stop reading client sockets) once `staged_len`
//! passes its own limit.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use super::doorbell::Doorbell;
use super::spsc::{spsc, Consumer, Producer};
use super::MESH_SHARDS_MAX;
use crate::ids::ShardId;

/// The rings of a whole mesh before they are handed to the shard threads.
pub struct Mesh<T> {
    endpoints: Vec<MeshEndpoint<T>>,
}

/// One shard's view of the mesh: its outbound rings with their staging
/// queues, its inbound rings, and every shard's doorbell. Moved into the
/// shard thread once; `Send`, not `Sync`.
pub struct MeshEndpoint<T> {
    id: ShardId,
    /// Indexed by target shard; `None` at our own index.
    outboxes: Vec<Option<Outbox<T>>>,
    /// Targets with a non-empty staging queue, each listed once.
    pending: Vec<ShardId>,
    /// Sum of the staging queues' lengths.
    staged_total: usize,
    /// One per peer, in ascending source order.
    inboxes: Vec<Inbox<T>>,
    /// Indexed by shard; `doorbells[id]` is ours.
    doorbells: Vec<Arc<Doorbell>>,
    /// Items pushed into the outbound rings since the start (statistics).
    pushed_total: u64,
}

/// Builds the rings for `doorbells.len()` shards: one SPSC ring of
/// `ring_capacity_slots` slots per ordered pair `(i, j)`, `i != j`.
/// `doorbells[i]` wakes shard `i`; element `i` of the result belongs to shard
/// `i`.
///
/// # Panics
///
/// If there are no doorbells or more than [`MESH_SHARDS_MAX`], or if
/// `ring_capacity_slots` is not accepted by [`spsc`].
pub fn mesh<T: Send>(doorbells: Vec<Arc<Doorbell>>, ring_capacity_slots: usize) -> Vec<MeshEndpoint<T>> {
    Mesh::new(doorbells, ring_capacity_slots).into_endpoints()
}

impl<T: Send> Mesh<T> {
    /// Builds the rings; see [`mesh`].
    ///
    /// # Panics
    ///
    /// As [`mesh`].
    pub fn new(doorbells: Vec<Arc<Doorbell>>, ring_capacity_slots: usize) -> Self {
        let shards = doorbells.len();
        assert!(
            (1..=MESH_SHARDS_MAX).contains(&shards),
            "a mesh needs 1..={MESH_SHARDS_MAX} shards, got {shards}"
        );
        let mut outboxes: Vec<Vec<Option<Outbox<T>>>> =
            (0..shards).map(|_| (0..shards).map(|_| None).collect()).collect();
        let mut inboxes: Vec<Vec<Inbox<T>>> = (0..shards).map(|_| Vec::with_capacity(shards - 1)).collect();
        for (from, row) in outboxes.iter_mut().enumerate() {
            for (to, slot) in row.iter_mut().enumerate() {
                if from == to {
                    continue;
                }
                let (producer, consumer) = spsc(ring_capacity_slots);
                *slot = Some(Outbox { ring: producer, staged: VecDeque::new() });
                inboxes[to].push(Inbox { source: shard_id(from), ring: consumer });
            }
        }
        let endpoints = outboxes
            .into_iter()
            .zip(inboxes)
            .enumerate()
            .map(|(index, (outboxes, inboxes))| MeshEndpoint {
                id: shard_id(index),
                outboxes,
                pending: Vec::with_capacity(shards),
                staged_total: 0,
                inboxes,
                doorbells: doorbells.clone(),
                pushed_total: 0,
            })
            .collect();
        Self { endpoints }
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.endpoints.len()
    }

    /// The endpoints; element `i` belongs to shard `i`.
    pub fn into_endpoints(self) -> Vec<MeshEndpoint<T>> {
        self.endpoints
    }
}

impl<T: Send> MeshEndpoint<T> {
    /// This endpoint's shard.
    #[inline]
    pub fn shard_id(&self) -> ShardId {
        self.id
    }

    /// Number of shards in the mesh (including this one).
    #[inline]
    pub fn shard_count(&self) -> usize {
        self.doorbells.len()
    }

    /// Stages `item` for `target` locally (no atomics). Never blocks, never
    /// fails; the staging area is unbounded and the caller bounds it with
    /// [`Self::staged_len`]. Delivered by the next successful [`Self::flush`].
    ///
    /// # Panics
    ///
    /// If `target` is this shard (a caller bug: handle local work locally) or
    /// is not in the mesh.
    #[inline]
    pub fn stage(&mut self, target: ShardId, item: T) {
        debug_assert_ne!(target, self.id, "staging an envelope to ourselves");
        let Some(Some(outbox)) = self.outboxes.get_mut(target.index()) else {
            panic!("{target:?} is not a peer of {:?}", self.id);
        };
        if outbox.staged.is_empty() {
            self.pending.push(target);
        }
        outbox.staged.push_back(item);
        self.staged_total += 1;
    }

    /// Pushes staged items into the rings (one tail publication per ring),
    /// then rings each target's doorbell once if anything was pushed to it.
    /// Returns the number of items still staged because their rings are full.
    ///
    /// # Panics
    ///
    /// If waking a parked target fails (an `eventfd` write error, which only
    /// a closed descriptor could cause). The doorbell is re-armed first.
    pub fn flush(&mut self) -> usize {
        let mut i = 0;
        while let Some(&target) = self.pending.get(i) {
            let Some(Some(outbox)) = self.outboxes.get_mut(target.index()) else {
                unreachable!("pending only lists peers");
            };
            let moved = outbox.ring.push_from(&mut outbox.staged);
            let drained = outbox.staged.is_empty();
            if moved > 0 {
                self.staged_total -= moved;
                self.pushed_total += moved as u64;
                if let Err(error) = self.doorbells[target.index()].ring() {
                    panic!("waking {target:?} failed: {error}");
                }
            }
            if drained {
                self.pending.swap_remove(i);
            } else {
                i += 1;
            }
        }
        self.staged_total
    }

    /// Nothing staged, and the peers have taken everything pushed to them.
    pub fn outboxes_taken(&self) -> bool {
        self.staged_total == 0 && self.outboxes.iter().flatten().all(|outbox| outbox.ring.is_taken())
    }

    /// Items staged and not yet pushed into a ring.
    #[inline]
    pub fn staged_len(&self) -> usize {
        self.staged_total
    }

    /// Drains up to `batch_max` items from each inbound ring, calling
    /// `f(source, item)` in per-source FIFO order. Returns the total drained.
    pub fn drain(&mut self, batch_max: usize, mut f: impl FnMut(ShardId, T)) -> usize {
        let mut total = 0;
        for inbox in &mut self.inboxes {
            let source = inbox.source;
            total += inbox.ring.drain(batch_max, |item| f(source, item));
        }
        total
    }

    /// True if every inbound ring looks empty. To decide whether to block,
    /// call it after our doorbell's `prepare_park()` (see
    /// [`super::doorbell`]); otherwise `true` may be stale.
    pub fn inboxes_empty(&self) -> bool {
        self.inboxes.iter().all(|inbox| inbox.ring.is_empty())
    }

    /// Items pushed into the outbound rings since the start.
    pub fn pushed_total(&self) -> u64 {
        self.pushed_total
    }

    /// Items waiting in each inbound ring, indexed by source shard (0 at our
    /// own index).
    pub fn inbox_occupancy(&self) -> Vec<u32> {
        let mut occupancy = vec![0; self.doorbells.len()];
        for inbox in &self.inboxes {
            if let Some(slot) = occupancy.get_mut(inbox.source.index()) {
                *slot = u32::try_from(inbox.ring.occupancy()).unwrap_or(u32::MAX);
            }
        }
        occupancy
    }

    /// This shard's own doorbell (the one peers ring).
    #[inline]
    pub fn doorbell(&self) -> &Arc<Doorbell> {
        &self.doorbells[self.id.index()]
    }
}

impl<T> fmt::Debug for Mesh<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mesh").field("shards", &self.endpoints.len()).finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for MeshEndpoint<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshEndpoint")
            .field("id", &self.id)
            .field("shards", &self.doorbells.len())
            .field("staged", &self.staged_total)
            .finish_non_exhaustive()
    }
}

/// Outbound half of the ring to one target plus its staging queue.
struct Outbox<T> {
    ring: Producer<T>,
    staged: VecDeque<T>,
}

/// Inbound half of the ring from one source.
struct Inbox<T> {
    source: ShardId,
    ring: Consumer<T>,
}

/// `index` as a `ShardId`; `Mesh::new` has checked the shard count.
fn shard_id(index: usize) -> ShardId {
    match u16::try_from(index) {
        Ok(id) => ShardId(id),
        Err(_) => unreachable!("shard count checked against MESH_SHARDS_MAX"),
    }
}

#[cfg(test)]
#[cfg(not(lepus_loom))]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::time::{Duration, Instant};

    const WAKE: Token = Token(0);
    /// Items drained from one ring per call in these tests (small, so a
    /// drain often stops before a ring is empty).
    const DRAIN_BATCH: usize = 16;

    fn polls_and_doorbells(shards: usize) -> (Vec<Poll>, Vec<Arc<Doorbell>>) {
        (0..shards)
            .map(|_| {
                let poll = Poll::new().unwrap();
                let waker = mio::Waker::new(poll.registry(), WAKE).unwrap();
                (poll, Arc::new(Doorbell::new(waker)))
            })
            .unzip()
    }

    fn drain_all<T: Send>(ep: &mut MeshEndpoint<T>) -> Vec<(ShardId, T)> {
        let mut out = Vec::new();
        while ep.drain(DRAIN_BATCH, |s, v| out.push((s, v))) > 0 {}
        out
    }

    #[test]
    fn endpoints_know_their_place() {
        let (_polls, bells) = polls_and_doorbells(3);
        let eps = mesh::<u32>(bells.clone(), 8);
        assert_eq!(eps.len(), 3);
        for (i, ep) in eps.iter().enumerate() {
            assert_eq!(ep.shard_id(), ShardId(i as u16));
            assert_eq!(ep.shard_count(), 3);
            assert!(Arc::ptr_eq(ep.doorbell(), &bells[i]));
            assert!(ep.inboxes_empty());
            assert_eq!(ep.staged_len(), 0);
        }
    }

    #[test]
    fn single_shard_mesh_has_no_rings() {
        let (_polls, bells) = polls_and_doorbells(1);
        let mut eps = mesh::<u32>(bells, 8);
        assert_eq!(eps[0].flush(), 0);
        assert_eq!(eps[0].drain(16, |_, _| unreachable!()), 0);
        assert!(eps[0].inboxes_empty());
    }

    #[test]
    fn stage_is_invisible_until_flush_and_fifo_per_source() {
        let (_polls, bells) = polls_and_doorbells(3);
        let mut eps = mesh::<u32>(bells, 8);
        for i in 0..3 {
            eps[0].stage(ShardId(1), i);
            eps[0].stage(ShardId(2), 100 + i);
            eps[2].stage(ShardId(1), 200 + i);
        }
        assert_eq!(eps[0].staged_len(), 6);
        assert!(eps[1].inboxes_empty(), "staging publishes nothing");
        assert_eq!(eps[0].flush(), 0);
        assert_eq!(eps[2].flush(), 0);
        assert_eq!(eps[0].staged_len(), 0);
        assert!(!eps[1].inboxes_empty());
        let got = drain_all(&mut eps[1]);
        let from0: Vec<u32> = got.iter().filter(|(s, _)| *s == ShardId(0)).map(|p| p.1).collect();
        let from2: Vec<u32> = got.iter().filter(|(s, _)| *s == ShardId(2)).map(|p| p.1).collect();
        assert_eq!(from0, [0, 1, 2]);
        assert_eq!(from2, [200, 201, 202]);
        assert_eq!(drain_all(&mut eps[2]), [(ShardId(0), 100), (ShardId(0), 101), (ShardId(0), 102)]);
        assert!(eps[0].inboxes_empty());
    }

    #[test]
    fn flush_keeps_what_does_not_fit_and_drain_respects_batch_max() {
        let (_polls, bells) = polls_and_doorbells(2);
        let mut eps = mesh::<u32>(bells, 4);
        for i in 0..10 {
            eps[0].stage(ShardId(1), i);
        }
        assert_eq!(eps[0].flush(), 6);
        assert_eq!(eps[0].flush(), 6, "ring still full");
        let mut got = Vec::new();
        assert_eq!(eps[1].drain(3, |_, v| got.push(v)), 3);
        assert_eq!(eps[0].flush(), 3);
        assert_eq!(eps[1].drain(100, |_, v| got.push(v)), 4);
        assert_eq!(eps[0].flush(), 0);
        assert_eq!(eps[0].staged_len(), 0);
        got.extend(drain_all(&mut eps[1]).into_iter().map(|p| p.1));
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn flush_rings_a_parked_target_once() {
        let (mut polls, bells) = polls_and_doorbells(3);
        let mut eps = mesh::<u32>(bells, 8);
        let mut events = Events::with_capacity(8);
        // Not parked: flushing makes no wake-up.
        eps[0].stage(ShardId(1), 1);
        eps[0].flush();
        polls[1].poll(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(events.is_empty());
        drain_all(&mut eps[1]);
        // Parked: exactly one wake-up event even with two producers.
        eps[1].doorbell().prepare_park();
        assert!(eps[1].inboxes_empty());
        eps[0].stage(ShardId(1), 2);
        eps[2].stage(ShardId(1), 3);
        eps[0].flush();
        eps[2].flush();
        polls[1].poll(&mut events, Some(Duration::from_secs(5))).unwrap();
        eps[1].doorbell().unpark();
        assert_eq!(events.iter().filter(|e| e.token() == WAKE).count(), 1);
        assert_eq!(drain_all(&mut eps[1]).len(), 2);
        polls[1].poll(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(events.is_empty(), "only one wake-up per sleep");
    }

    #[test]
    #[should_panic(expected = "not a peer")]
    fn staging_to_an_unknown_shard_panics() {
        let (_polls, bells) = polls_and_doorbells(2);
        let mut eps = mesh::<u32>(bells, 4);
        eps[0].stage(ShardId(7), 1);
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "ourselves"))]
    #[cfg_attr(not(debug_assertions), should_panic(expected = "not a peer"))]
    fn staging_to_self_panics() {
        let (_polls, bells) = polls_and_doorbells(2);
        let mut eps = mesh::<u32>(bells, 4);
        eps[1].stage(ShardId(1), 1);
    }

    #[test]
    fn endpoint_is_send() {
        fn assert_send<S: Send>() {}
        assert_send::<MeshEndpoint<String>>();
    }

    /// What one shard thread did, for the assertions after the join.
    #[derive(Debug, Default)]
    struct ShardStats {
        received: Vec<u64>,
        parks: u64,
        wakes: u64,
        safety_net_timeouts: u64,
    }

    /// Generous bound that only matters if a wake-up is lost: a shard blocks
    /// this long only when every peer that still owes it items failed to
    /// wake it.
    const SAFETY_NET: Duration = Duration::from_secs(10);
    /// Poll timeout while items are stuck behind a full ring.
    const BACKPRESSURE_RETRY: Duration = Duration::from_micros(50);
    const TEST_DEADLINE: Duration = Duration::from_secs(120);

    /// One shard's event loop following the parking protocol. `step`
    /// stages new work and returns whether it did any; `done` says when to
    /// stop. Returns when `done` holds and nothing is staged.
    fn run_shard(
        mut ep: MeshEndpoint<u64>,
        mut poll: Poll,
        mut step: impl FnMut(&mut MeshEndpoint<u64>, &[u64]) -> bool,
        mut on_item: impl FnMut(ShardId, u64) -> Option<(ShardId, u64)>,
        done: impl Fn(&ShardStats) -> bool,
    ) -> ShardStats {
        let mut stats = ShardStats::default();
        let mut events = Events::with_capacity(8);
        let start = Instant::now();
        let mut replies = Vec::new();
        loop {
            assert!(start.elapsed() < TEST_DEADLINE, "{:?} stuck", ep.shard_id());
            let mut worked = step(&mut ep, &stats.received);
            let drained = ep.drain(DRAIN_BATCH, |source, item| {
                stats.received.push(source.index() as u64);
                stats.received.push(item);
                if let Some(reply) = on_item(source, item) {
                    replies.push(reply);
                }
            });
            for (target, item) in replies.drain(..) {
                ep.stage(target, item);
            }
            let before = ep.staged_len();
            let left = ep.flush();
            worked |= drained > 0 || left < before;
            if done(&stats) && left == 0 {
                return stats;
            }
            if worked {
                continue;
            }
            ep.doorbell().prepare_park();
            if !ep.inboxes_empty() {
                ep.doorbell().unpark();
                continue;
            }
            let timeout = if left > 0 { BACKPRESSURE_RETRY } else { SAFETY_NET };
            stats.parks += 1;
            poll.poll(&mut events, Some(timeout)).unwrap();
            ep.doorbell().unpark();
            if events.iter().any(|e| e.token() == WAKE) {
                stats.wakes += 1;
            } else if timeout == SAFETY_NET {
                stats.safety_net_timeouts += 1;
            }
        }
    }

    /// Splits `received` (pairs of source, item) per source.
    fn per_source(received: &[u64], shards: usize) -> Vec<Vec<u64>> {
        let mut out = vec![Vec::new(); shards];
        for pair in received.chunks_exact(2) {
            out[pair[0] as usize].push(pair[1]);
        }
        out
    }

    /// 3 shards on 3 threads, each streaming numbered items to both others
    /// through tiny rings (so backpressure and parking both happen).
    #[test]
    fn three_shards_stream_to_each_other_fifo_without_lost_wakeups() {
        const SHARDS: usize = 3;
        const ITEMS_PER_PEER: u64 = 200_000;
        const STAGED_LIMIT: usize = 64;
        let (polls, bells) = polls_and_doorbells(SHARDS);
        let eps = mesh::<u64>(bells, 8);
        let start = Instant::now();
        let threads: Vec<_> = eps
            .into_iter()
            .zip(polls)
            .map(|(ep, poll)| {
                std::thread::spawn(move || {
                    let me = ep.shard_id();
                    let mut next = 0u64;
                    let step = move |ep: &mut MeshEndpoint<u64>, _: &[u64]| {
                        let mut staged_any = false;
                        // Bursty: stage at most 24 per peer per iteration, and
                        // only below the staging limit (backpressure).
                        for _ in 0..24 {
                            if next == ITEMS_PER_PEER || ep.staged_len() >= STAGED_LIMIT {
                                break;
                            }
                            for peer in 0..SHARDS as u16 {
                                if ShardId(peer) != me {
                                    ep.stage(ShardId(peer), next);
                                }
                            }
                            next += 1;
                            staged_any = true;
                        }
                        staged_any
                    };
                    let expected = (SHARDS as u64 - 1) * ITEMS_PER_PEER;
                    run_shard(ep, poll, step, |_, _| None, move |s| s.received.len() as u64 == 2 * expected)
                })
            })
            .collect();
        let stats: Vec<ShardStats> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let elapsed = start.elapsed();
        for (me, s) in stats.iter().enumerate() {
            for (source, items) in per_source(&s.received, SHARDS).iter().enumerate() {
                if source == me {
                    assert!(items.is_empty());
                } else {
                    assert!(items.iter().copied().eq(0..ITEMS_PER_PEER), "FIFO from {source} to {me}");
                }
            }
            assert_eq!(s.safety_net_timeouts, 0, "shard {me} missed a wake-up");
        }
        let total = SHARDS as u64 * (SHARDS as u64 - 1) * ITEMS_PER_PEER;
        eprintln!(
            "mesh stream: {total} items in {:.3}s ({:.1} M items/s), parks {:?}, wakes {:?}",
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64() / 1e6,
            stats.iter().map(|s| s.parks).collect::<Vec<_>>(),
            stats.iter().map(|s| s.wakes).collect::<Vec<_>>(),
        );
    }

    /// A token passed around 3 shards: every hop finds the next shard asleep
    /// (or about to sleep), so this hammers the park/ring protocol.
    #[test]
    fn token_ring_every_hop_wakes_a_sleeping_shard() {
        const SHARDS: usize = 3;
        const HOPS: u64 = 30_000;
        let (polls, bells) = polls_and_doorbells(SHARDS);
        let eps = mesh::<u64>(bells, 8);
        let start = Instant::now();
        let threads: Vec<_> = eps
            .into_iter()
            .zip(polls)
            .map(|(ep, poll)| {
                std::thread::spawn(move || {
                    let me = ep.shard_id();
                    let next = ShardId(((me.index() + 1) % SHARDS) as u16);
                    let mut started = me.index() != 0;
                    let step = move |ep: &mut MeshEndpoint<u64>, _: &[u64]| {
                        if started {
                            return false;
                        }
                        started = true;
                        ep.stage(next, 1);
                        true
                    };
                    // Forward the token while hops remain. Shard k receives
                    // every hop h in 1..HOPS with h % SHARDS == k.
                    let on_item = move |_, hop: u64| (hop + 1 < HOPS).then_some((next, hop + 1));
                    let mine = (1..HOPS).filter(|h| h % SHARDS as u64 == me.index() as u64).count();
                    run_shard(ep, poll, step, on_item, move |s| s.received.len() == 2 * mine)
                })
            })
            .collect();
        let stats: Vec<ShardStats> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let elapsed = start.elapsed();
        for (me, s) in stats.iter().enumerate() {
            let hops: Vec<u64> = per_source(&s.received, SHARDS).concat();
            let expected: Vec<u64> = (1..HOPS).filter(|h| h % SHARDS as u64 == me as u64).collect();
            assert!(hops == expected, "shard {me} saw hops out of order");
            assert_eq!(s.safety_net_timeouts, 0, "shard {me} missed a wake-up");
        }
        eprintln!(
            "token ring: {HOPS} hops in {:.3}s ({:.1} us/hop), parks {:?}, wakes {:?}",
            elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1e6 / HOPS as f64,
            stats.iter().map(|s| s.parks).collect::<Vec<_>>(),
            stats.iter().map(|s| s.wakes).collect::<Vec<_>>(),
        );
    }
}
