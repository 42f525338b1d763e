//! Publisher-confirm bookkeeping: which publishes are unsettled, and how
//! long each one waited for its basic.ack / basic.nack (confirm latency).
//!
//! The publisher registers the send time of every publish before it goes
//! out (`sent`), in sequence order; acks and nacks, single or `multiple`
//! and possibly out of order, settle them (`settle`) and record
//! now − send time into a histogram for every publish they cover. With a
//! confirm reader thread the publisher hands its send times over through
//! `SendTimes`, one lock per batch.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

use crate::conn::Result;
use crate::stats::LatencyRecorder;

/// Send time of a publish whose send time was never registered.
const UNKNOWN: u64 = 0;
/// A settled publish (still in the window because an older one is not).
const SETTLED: u64 = u64::MAX;

/// Runs of (send time in ns, publishes) in sequence order, from the
/// publisher to the confirm reader thread.
pub type SendTimes = Arc<Mutex<Vec<(u64, u64)>>>;

#[derive(Debug)]
pub struct ConfirmTracker {
    /// Lowest sequence number not yet settled (tags start at 1).
    pub base: u64,
    /// Per sequence number from `base`: its send time in ns, or `SETTLED`.
    sends: VecDeque<u64>,
    /// Next sequence number `sent` registers.
    registered: u64,
    pub confirmed: u64,
    pub nacked: u64,
    latency: LatencyRecorder,
}

impl ConfirmTracker {
    pub fn new() -> Result<Self> {
        Ok(ConfirmTracker {
            base: 1,
            sends: VecDeque::new(),
            registered: 1,
            confirmed: 0,
            nacked: 0,
            latency: LatencyRecorder::new()?,
        })
    }

    /// Registers the next `n` publishes as sent at `send_ns`.
    pub fn sent(&mut self, send_ns: u64, n: u64) {
        let send_ns = send_ns.clamp(1, SETTLED - 1);
        if self.registered == self.base + self.sends.len() as u64 {
            self.sends.extend(std::iter::repeat_n(send_ns, n as usize));
            self.registered += n;
            return;
        }
        // A confirm arrived before its send time (not with push-before-send,
        // but keep the window aligned anyway).
        for _ in 0..n {
            let seq = self.registered;
            self.registered += 1;
            if seq < self.base {
                continue;
            }
            let idx = (seq - self.base) as usize;
            match self.sends.get_mut(idx) {
                Some(s) if *s == UNKNOWN => *s = send_ns,
                Some(_) => {}
                None => self.sends.push_back(send_ns),
            }
        }
    }

    /// Takes every run the publisher handed over.
    pub fn take_sent(&mut self, shared: &SendTimes, spare: &mut Vec<(u64, u64)>) {
        {
            let Ok(mut runs) = shared.lock() else {
                return;
            };
            if runs.is_empty() {
                return;
            }
            std::mem::swap(&mut *runs, spare);
        }
        for &(ts, n) in spare.iter() {
            self.sent(ts, n);
        }
        spare.clear();
    }

    /// basic.ack (`nack` false) or basic.nack for `tag`, received at `now_ns`.
    pub fn settle(&mut self, tag: u64, multiple: bool, nack: bool, now_ns: u64) {
        if tag < self.base {
            return;
        }
        let idx = (tag - self.base) as usize;
        if idx >= self.sends.len() {
            self.sends.resize(idx + 1, UNKNOWN);
        }
        let from = if multiple { 0 } else { idx };
        let mut newly = 0;
        for s in self.sends.range_mut(from..=idx) {
            if *s != SETTLED {
                if *s != UNKNOWN {
                    self.latency.record(now_ns.saturating_sub(*s));
                }
                *s = SETTLED;
                newly += 1;
            }
        }
        if nack {
            self.nacked += newly;
        } else {
            self.confirmed += newly;
        }
        while self.sends.front() == Some(&SETTLED) {
            self.sends.pop_front();
            self.base += 1;
        }
    }

    /// The confirm latencies recorded so far.
    pub fn finish(self) -> Histogram<u64> {
        self.latency.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(t: ConfirmTracker) -> Vec<(u64, u64)> {
        let h = t.finish();
        h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
    }

    #[test]
    fn single_multiple_and_out_of_order() {
        let mut t = ConfirmTracker::new().unwrap();
        t.sent(100, 5); // tags 1..=5
        t.settle(3, false, false, 130);
        assert_eq!((t.confirmed, t.base), (1, 1));
        t.settle(2, false, true, 150);
        assert_eq!((t.confirmed, t.nacked), (1, 1));
        t.settle(5, true, false, 200);
        assert_eq!((t.confirmed, t.nacked, t.base), (4, 1, 6));
        t.settle(4, false, false, 300); // already settled
        t.settle(5, true, false, 300);
        assert_eq!(t.confirmed, 4);
        // 30 (tag 3), 50 (tag 2, nack), 100 x3 (tags 1, 4, 5 by the multiple ack)
        assert_eq!(samples(t), vec![(30, 1), (50, 1), (100, 3)]);
    }

    #[test]
    fn multiple_covers_only_what_is_unsettled_and_nacks_count() {
        let mut t = ConfirmTracker::new().unwrap();
        t.sent(1_000, 2); // tags 1, 2
        t.sent(2_000, 3); // tags 3, 4, 5
        t.settle(4, false, false, 2_500);
        t.settle(5, true, true, 3_000); // nacks 1, 2, 3, 5
        assert_eq!((t.confirmed, t.nacked, t.base), (1, 4, 6));
        assert_eq!(samples(t), vec![(500, 1), (1_000, 2), (2_000, 2)]);
    }

    #[test]
    fn confirm_before_send_time_stays_aligned() {
        let mut t = ConfirmTracker::new().unwrap();
        t.sent(10, 1); // tag 1
        t.settle(2, false, false, 50); // tag 2 before its send time: no sample
        t.sent(20, 2); // tags 2 (settled), 3
        t.settle(3, true, false, 70); // tag 1 (60) and tag 3 (50)
        assert_eq!((t.confirmed, t.base), (3, 4));
        t.sent(80, 1); // tag 4
        t.settle(4, false, false, 90);
        assert_eq!(samples(t), vec![(10, 1), (50, 1), (60, 1)]);
    }

    #[test]
    fn runs_handed_over_from_the_publisher() {
        let shared: SendTimes = Arc::default();
        shared.lock().unwrap().extend([(5, 2), (7, 1)]);
        let mut t = ConfirmTracker::new().unwrap();
        let mut spare = Vec::new();
        t.take_sent(&shared, &mut spare);
        assert!(shared.lock().unwrap().is_empty());
        t.settle(3, true, false, 10);
        assert_eq!(samples(t), vec![(3, 1), (5, 2)]);
    }
}
