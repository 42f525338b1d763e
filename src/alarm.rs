//! Resource alarms: a memory budget and a free-disk limit. Control plane only:
//! nothing here touches a queue, a connection or a ring.
//!
//! A monitor thread measures the broker's memory and the free space of the
//! data directory every [`MONITOR_INTERVAL`] and raises or clears an alarm per
//! resource, as RabbitMQ's `vm_memory_high_watermark` and `disk_free_limit`
//! do. The alarms live in one atomic of [`ResourceLimits`], shared by the
//! monitor, the shards and whoever changes the limits at run time:
//!
//! ```text
//!  monitor thread (every MONITOR_INTERVAL, or at once after a setter)
//!    RSS (/proc/self/statm) > memory budget      ─┐
//!    statvfs(data_dir).available < disk limit     ─┴─> alarms (AtomicU8) ─> ring every shard's doorbell
//!                                                            │               when it changed
//!  shard: a content header read while alarms != 0 ─> that connection blocks (connection.blocked)
//!  shard: alarms == 0 again, seen each turn while it has blocked connections ─> unblock
//! ```
//!
//! Memory is the resident set size of the whole process (`/proc/self/statm`),
//! so it counts what the allocator keeps for reuse and every thread's stack;
//! RabbitMQ's default strategy measures its VM's RSS the same way.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use crate::ring::doorbell::Doorbell;

/// The memory budget is this fraction of the machine's RAM by default
/// (RabbitMQ's `vm_memory_high_watermark` 0.4), as numerator / denominator.
pub const MEMORY_BUDGET_FRACTION_DEFAULT: (u64, u64) = (2, 5);
/// RAM assumed when the machine's cannot be read (RabbitMQ assumes 1 GiB too).
pub const MEMORY_TOTAL_BYTES_FALLBACK: u64 = 1024 * 1024 * 1024;
/// Free space below which the disk alarm is raised (RabbitMQ's default 50 MB).
pub const DISK_FREE_LIMIT_BYTES_DEFAULT: u64 = 50_000_000;
/// How often the monitor measures. Each measurement is one small file read and
/// one `statvfs`.
pub const MONITOR_INTERVAL: Duration = Duration::from_millis(250);

/// The memory alarm's bit in [`ResourceLimits::alarms`].
pub const ALARM_MEMORY: u8 = 1;
/// The disk alarm's bit in [`ResourceLimits::alarms`].
pub const ALARM_DISK: u8 = 2;

/// A free-space reading meaning "unknown": never raises the disk alarm.
const DISK_FREE_UNKNOWN: u64 = u64::MAX;

/// The limits, the last measurements and the alarms they give. Shared by the
/// monitor, every shard and the [`crate::Server`]'s owner; every field is an
/// atomic, so limits can be changed while the broker runs (what
/// `rabbitmqctl set_vm_memory_high_watermark` / `set_disk_free_limit` do).
#[derive(Debug)]
pub struct ResourceLimits {
    /// The memory alarm is raised while the RSS is above this, bytes.
    memory_budget_bytes: AtomicU64,
    /// The disk alarm is raised while free space is below this, bytes.
    disk_free_limit_bytes: AtomicU64,
    /// Last measured RSS, bytes.
    memory_used_bytes: AtomicU64,
    /// Last measured free space of the data directory, bytes
    /// (`DISK_FREE_UNKNOWN` before the first reading or if it failed).
    disk_free_bytes: AtomicU64,
    /// Raised alarms: `ALARM_MEMORY | ALARM_DISK`.
    alarms: AtomicU8,
    /// Serialises `evaluate`, so the last evaluation (a setter's or the
    /// monitor's) always saw the latest limits and measurements.
    evaluating: Mutex<()>,
    /// The monitor thread, woken by the setters.
    monitor: OnceLock<Thread>,
}

impl ResourceLimits {
    /// Limits with no measurement yet (no alarm until the monitor runs).
    pub fn new(memory_budget_bytes: u64, disk_free_limit_bytes: u64) -> ResourceLimits {
        ResourceLimits {
            memory_budget_bytes: AtomicU64::new(memory_budget_bytes),
            disk_free_limit_bytes: AtomicU64::new(disk_free_limit_bytes),
            memory_used_bytes: AtomicU64::new(0),
            disk_free_bytes: AtomicU64::new(DISK_FREE_UNKNOWN),
            alarms: AtomicU8::new(0),
            evaluating: Mutex::new(()),
            monitor: OnceLock::new(),
        }
    }

    /// Limits that never raise an alarm (no monitor; tests and benchmarks).
    pub fn unlimited() -> ResourceLimits {
        ResourceLimits::new(u64::MAX, 0)
    }

    /// The raised alarms (`ALARM_MEMORY | ALARM_DISK`; 0 when none). One
    /// relaxed load: shards call it for every content header they read.
    #[inline]
    pub fn alarms(&self) -> u8 {
        // Relaxed: the alarms guard no other data. A shard about to park
        // reads this after the doorbell's SeqCst fence, and the monitor rings
        // after its own fence, so a clear is never slept through (the
        // doorbell's Dekker argument, with `alarms` in place of a ring tail).
        self.alarms.load(Ordering::Relaxed)
    }

    /// The memory budget, bytes.
    pub fn memory_budget_bytes(&self) -> u64 {
        self.memory_budget_bytes.load(Ordering::Relaxed)
    }

    /// The free-disk limit, bytes.
    pub fn disk_free_limit_bytes(&self) -> u64 {
        self.disk_free_limit_bytes.load(Ordering::Relaxed)
    }

    /// The last measured memory use (RSS), bytes.
    pub fn memory_used_bytes(&self) -> u64 {
        self.memory_used_bytes.load(Ordering::Relaxed)
    }

    /// The last measured free space of the data directory, bytes (`None`
    /// before the first measurement or if it failed).
    pub fn disk_free_bytes(&self) -> Option<u64> {
        Some(self.disk_free_bytes.load(Ordering::Relaxed)).filter(|&b| b != DISK_FREE_UNKNOWN)
    }

    /// Sets the memory budget. The alarm follows at once from the last
    /// measurement (so `alarms()` reflects the new budget when this returns)
    /// and again after the monitor's fresh measurement, which this triggers.
    pub fn set_memory_budget_bytes(&self, bytes: u64) {
        // Relaxed: `evaluate` below reads it on this thread; the monitor,
        // woken by `unpark` (which synchronises), reads it after.
        self.memory_budget_bytes.store(bytes, Ordering::Relaxed);
        self.evaluate();
        self.wake_monitor();
    }

    /// Sets the free-disk limit; takes effect as [`Self::set_memory_budget_bytes`].
    pub fn set_disk_free_limit_bytes(&self, bytes: u64) {
        // Relaxed: as in `set_memory_budget_bytes`.
        self.disk_free_limit_bytes.store(bytes, Ordering::Relaxed);
        self.evaluate();
        self.wake_monitor();
    }

    /// Records measurements (`None`: that resource could not be measured) and
    /// evaluates the alarms with them.
    fn record(&self, memory_used_bytes: Option<u64>, disk_free_bytes: Option<u64>) {
        let _evaluating = self.evaluating.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Relaxed: read under the same lock by `evaluate`, and as hints elsewhere.
        if let Some(bytes) = memory_used_bytes {
            self.memory_used_bytes.store(bytes, Ordering::Relaxed);
        }
        self.disk_free_bytes.store(disk_free_bytes.unwrap_or(DISK_FREE_UNKNOWN), Ordering::Relaxed);
        self.evaluate_locked();
    }

    /// Recomputes the alarms from the limits and the last measurements.
    fn evaluate(&self) {
        let _evaluating = self.evaluating.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.evaluate_locked();
    }

    fn evaluate_locked(&self) {
        let mut alarms = 0;
        if self.memory_used_bytes() > self.memory_budget_bytes() {
            alarms |= ALARM_MEMORY;
        }
        if let Some(free) = self.disk_free_bytes() {
            if free < self.disk_free_limit_bytes() {
                alarms |= ALARM_DISK;
            }
        }
        // Relaxed: see `alarms`.
        self.alarms.store(alarms, Ordering::Relaxed);
    }

    fn wake_monitor(&self) {
        if let Some(thread) = self.monitor.get() {
            thread.unpark();
        }
    }
}

/// What `connection.blocked` says for a set of alarms: RabbitMQ's texts
/// ("low on memory", "low on disk", both joined by " & ").
pub fn blocked_reason(alarms: u8) -> &'static str {
    match (alarms & ALARM_MEMORY != 0, alarms & ALARM_DISK != 0) {
        (true, true) => "low on memory & disk",
        (false, true) => "low on disk",
        _ => "low on memory",
    }
}

/// The running monitor thread; stopped by [`Monitor::stop`] or on drop.
#[derive(Debug)]
pub struct Monitor {
    limits: Arc<ResourceLimits>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Starts measuring for `limits`; `data_dir`'s free space is watched (its
    /// nearest existing ancestor while it does not exist yet). Each change of
    /// the alarms rings every doorbell, so parked shards notice a clear.
    pub fn start(
        limits: Arc<ResourceLimits>,
        data_dir: PathBuf,
        doorbells: Vec<Arc<Doorbell>>,
    ) -> std::io::Result<Monitor> {
        // The first measurement before `start` returns: from then on the
        // setters evaluate against a real one.
        let page_bytes = page_size_bytes();
        limits.record(resident_bytes(page_bytes), free_disk_bytes(&data_dir));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let limits = Arc::clone(&limits);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("lepus-monitor".into())
                .spawn(move || monitor(&limits, &data_dir, &doorbells, &stop))?
        };
        let _ = limits.monitor.set(thread.thread().clone());
        Ok(Monitor { limits, stop, thread: Some(thread) })
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        // Relaxed: `unpark` synchronises with the thread's `park_timeout`.
        self.stop.store(true, Ordering::Relaxed);
        self.limits.wake_monitor();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The monitor loop: measure, evaluate, announce changes, sleep.
fn monitor(limits: &ResourceLimits, data_dir: &Path, doorbells: &[Arc<Doorbell>], stop: &AtomicBool) {
    let page_bytes = page_size_bytes();
    let mut announced = 0;
    while !stop.load(Ordering::Relaxed) {
        limits.record(resident_bytes(page_bytes), free_disk_bytes(data_dir));
        let alarms = limits.alarms();
        if alarms != announced {
            log_change(announced, alarms, limits);
            announced = alarms;
            for doorbell in doorbells {
                let _ = doorbell.ring();
            }
        }
        std::thread::park_timeout(MONITOR_INTERVAL);
    }
}

#[cold]
fn log_change(before: u8, after: u8, limits: &ResourceLimits) {
    let changed = before ^ after;
    if changed & ALARM_MEMORY != 0 {
        let (used, budget) = (limits.memory_used_bytes(), limits.memory_budget_bytes());
        if after & ALARM_MEMORY != 0 {
            tracing::warn!(used, budget, "memory alarm set: publishers are blocked");
        } else {
            tracing::info!(used, budget, "memory alarm cleared");
        }
    }
    if changed & ALARM_DISK != 0 {
        let (free, limit) = (limits.disk_free_bytes(), limits.disk_free_limit_bytes());
        if after & ALARM_DISK != 0 {
            tracing::warn!(?free, limit, "disk alarm set: publishers are blocked");
        } else {
            tracing::info!(?free, limit, "disk alarm cleared");
        }
    }
}

/// The default memory budget: [`MEMORY_BUDGET_FRACTION_DEFAULT`] of the RAM.
pub fn memory_budget_bytes_default() -> u64 {
    let total = total_memory_bytes().unwrap_or(MEMORY_TOTAL_BYTES_FALLBACK);
    let (numerator, denominator) = MEMORY_BUDGET_FRACTION_DEFAULT;
    total / denominator * numerator
}

/// The machine's RAM, bytes.
pub fn total_memory_bytes() -> Option<u64> {
    // SAFETY: sysconf reads a system constant; no memory is passed.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    let page_bytes = page_size_bytes();
    u64::try_from(pages).ok().filter(|&p| p > 0).map(|p| p.saturating_mul(page_bytes))
}

fn page_size_bytes() -> u64 {
    // SAFETY: sysconf reads a system constant; no memory is passed.
    let bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(bytes).ok().filter(|&b| b > 0).unwrap_or(4096)
}

/// This process's resident set size, from `/proc/self/statm` (its second
/// field is the resident page count).
pub fn resident_bytes(page_bytes: u64) -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(page_bytes))
}

/// Free space available to the broker (not to root: `f_bavail`, what `df`
/// shows as available) on the file system of `dir`, or of its nearest existing
/// ancestor.
pub fn free_disk_bytes(dir: &Path) -> Option<u64> {
    let mut candidate = Some(dir);
    while let Some(path) = candidate {
        let path = if path.as_os_str().is_empty() { Path::new(".") } else { path };
        if let Some(free) = statvfs_available(path) {
            return Some(free);
        }
        candidate = path.parent();
    }
    None
}

fn statvfs_available(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` points to
    // writable memory of the right type, which statvfs fills on success.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised `stat`.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::useless_conversion)] // the field types differ between targets
    let (blocks, block_bytes) = (u64::from(stat.f_bavail), u64::from(stat.f_frsize));
    Some(blocks.saturating_mul(block_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurements_are_plausible() {
        let rss = resident_bytes(page_size_bytes()).expect("RSS readable on Linux");
        assert!(rss > 0);
        let total = total_memory_bytes().expect("RAM size");
        assert!(rss < total);
        assert!(free_disk_bytes(Path::new(".")).is_some());
        // A directory that does not exist yet is measured on its ancestor.
        let missing = std::env::temp_dir().join("lepus-no-such-dir").join("deeper");
        assert!(free_disk_bytes(&missing).is_some());
        assert!(free_disk_bytes(Path::new("relative-missing-dir")).is_some());
        assert_eq!(memory_budget_bytes_default(), total / 5 * 2);
    }

    #[test]
    fn setters_raise_and_clear_alarms_from_the_last_measurement() {
        let limits = ResourceLimits::new(1000, 10);
        assert_eq!(limits.alarms(), 0, "no alarm before any measurement");
        limits.record(Some(500), Some(100));
        assert_eq!(limits.alarms(), 0);
        limits.set_memory_budget_bytes(499);
        assert_eq!(limits.alarms(), ALARM_MEMORY);
        limits.set_disk_free_limit_bytes(101);
        assert_eq!(limits.alarms(), ALARM_MEMORY | ALARM_DISK);
        limits.set_memory_budget_bytes(500);
        assert_eq!(limits.alarms(), ALARM_DISK, "the budget itself is allowed");
        limits.record(Some(500), None);
        assert_eq!(limits.alarms(), 0, "an unknown free space raises nothing");
        assert_eq!(limits.disk_free_bytes(), None);
    }

    #[test]
    fn reasons_are_rabbitmqs() {
        assert_eq!(blocked_reason(ALARM_MEMORY), "low on memory");
        assert_eq!(blocked_reason(ALARM_DISK), "low on disk");
        assert_eq!(blocked_reason(ALARM_MEMORY | ALARM_DISK), "low on memory & disk");
    }

    #[test]
    fn the_monitor_measures_before_start_returns() {
        let limits = Arc::new(ResourceLimits::new(u64::MAX, 0));
        let dir = std::env::temp_dir();
        let mut monitor = Monitor::start(Arc::clone(&limits), dir, Vec::new()).expect("monitor starts");
        assert!(limits.memory_used_bytes() > 0, "measured before start returns");
        limits.set_memory_budget_bytes(1);
        assert_eq!(limits.alarms(), ALARM_MEMORY);
        limits.set_memory_budget_bytes(u64::MAX);
        assert_eq!(limits.alarms(), 0);
        monitor.stop();
    }
}
