//! Counters shared between a worker thread and the reporter, and the
//! latency histogram.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hdrhistogram::Histogram;

use crate::conn::Result;

/// Highest latency the histogram tracks: one hour, in nanoseconds.
pub const LATENCY_NS_MAX: u64 = 3_600_000_000_000;

/// Per-worker counters, each worker writes only its own (one cache line
/// pair per worker, so workers never share a line).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Counters {
    pub sent: AtomicU64,
    pub confirmed: AtomicU64,
    pub nacked: AtomicU64,
    pub returned: AtomicU64,
    pub received: AtomicU64,
    /// `CLOCK_MONOTONIC` ns when the first delivery was read; 0 = none yet.
    pub first_received_ns: AtomicU64,
    /// Set once setup (declare, bind, consume) is complete.
    pub ready: AtomicBool,
    /// Set when the worker reached its count (or failed).
    pub done: AtomicBool,
}

impl Counters {
    pub fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }
    pub fn set(a: &AtomicU64, v: u64) {
        a.store(v, Ordering::Relaxed)
    }
}

pub fn new_histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)?)
}

/// Records latencies, coalescing runs of equal values into one
/// `record_n` (producers stamp a whole batch with one clock read).
#[derive(Debug)]
pub struct LatencyRecorder {
    pub hist: Histogram<u64>,
    last: u64,
    run: u64,
}

impl LatencyRecorder {
    pub fn new() -> Result<Self> {
        Ok(LatencyRecorder { hist: new_histogram()?, last: 0, run: 0 })
    }

    #[inline]
    pub fn record(&mut self, latency_ns: u64) {
        let v = latency_ns.clamp(1, LATENCY_NS_MAX);
        if v == self.last {
            self.run += 1;
        } else {
            self.flush();
            self.last = v;
            self.run = 1;
        }
    }

    pub fn flush(&mut self) {
        if self.run > 0 {
            self.hist.saturating_record_n(self.last, self.run);
            self.run = 0;
        }
    }

    pub fn finish(mut self) -> Histogram<u64> {
        self.flush();
        self.hist
    }
}

/// User and system CPU seconds of this process so far.
pub fn cpu_seconds() -> (f64, f64) {
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}
