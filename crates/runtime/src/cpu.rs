//! CPU-time accounting for guests.
//!
//! A request's CPU time is the thread CPU time spent inside polls of its
//! guest future: instantiation, guest code and the host calls it makes. Time
//! the future spends pending (waiting on a body, a timer, an outbound fetch)
//! costs nothing. [`Metered`] measures each poll; the epoch deadline callback,
//! which runs on the polling thread in the middle of a poll, adds the time of
//! the poll in progress and interrupts the guest once the budget is spent.
//! Epoch ticks bound the overshoot to one tick; fuel would be exact but costs
//! a counter update in every basic block of every guest.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// Nanoseconds of CPU time the calling thread has used.
pub fn thread_cpu_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is
    // supported on every Linux and macOS this runs on.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The CPU budget of one request and what it has used so far, and whether
/// its guest has moved to the background threads for using much of it.
///
/// Shared between the [`Metered`] wrapper (which accounts each poll) and the
/// store's epoch callback (which checks the budget mid-poll). Every access
/// happens on the thread polling the guest at that moment, so relaxed
/// atomics suffice; they are atomics only because the two sides hold the
/// meter through different owners.
#[derive(Debug)]
pub struct CpuMeter {
    limit_ns: u64,
    used_ns: AtomicU64,
    poll_started_ns: AtomicU64,
    exceeded: AtomicBool,
    background: AtomicBool,
    handover: AtomicBool,
}

impl CpuMeter {
    pub fn new(limit: Duration) -> CpuMeter {
        CpuMeter {
            limit_ns: u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX),
            used_ns: AtomicU64::new(0),
            poll_started_ns: AtomicU64::new(0),
            exceeded: AtomicBool::new(false),
            background: AtomicBool::new(false),
            handover: AtomicBool::new(false),
        }
    }

    /// CPU time used by finished polls.
    pub fn used(&self) -> Duration {
        Duration::from_nanos(self.used_ns.load(Ordering::Relaxed))
    }

    /// The budget.
    pub fn limit(&self) -> Duration {
        Duration::from_nanos(self.limit_ns)
    }

    /// Whether the guest was interrupted for spending its budget.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// Notes that the guest now runs on the background threads.
    pub fn moved_to_background(&self) {
        self.background.store(true, Ordering::Relaxed);
    }

    /// Whether the guest runs on the background threads.
    pub fn in_background(&self) -> bool {
        self.background.load(Ordering::Relaxed)
    }

    /// Notes that the guest, at an epoch tick on the background threads,
    /// gives its turn there over (see `fair::Handover`).
    pub(crate) fn ask_handover(&self) {
        self.handover.store(true, Ordering::Relaxed);
    }

    /// Whether the guest gave its turn over in the poll that just ended.
    pub(crate) fn take_handover(&self) -> bool {
        self.handover.swap(false, Ordering::Relaxed)
    }

    /// Called from the epoch deadline callback, inside a poll: the CPU time
    /// used so far, the poll in progress included, or `None` (remembered)
    /// once the budget is spent.
    pub fn check_in_poll(&self) -> Option<Duration> {
        let running = thread_cpu_now().saturating_sub(self.poll_started_ns.load(Ordering::Relaxed));
        let used = self.used_ns.load(Ordering::Relaxed) + running;
        if used > self.limit_ns {
            self.exceeded.store(true, Ordering::Relaxed);
            None
        } else {
            Some(Duration::from_nanos(used))
        }
    }

    fn begin_poll(&self) -> u64 {
        let now = thread_cpu_now();
        self.poll_started_ns.store(now, Ordering::Relaxed);
        now
    }

    fn end_poll(&self, started: u64) {
        let spent = thread_cpu_now().saturating_sub(started);
        self.used_ns.fetch_add(spent, Ordering::Relaxed);
    }
}

/// A future whose polls are charged to a [`CpuMeter`].
pub struct Metered<F> {
    inner: F,
    meter: Arc<CpuMeter>,
}

impl<F> Metered<F> {
    pub fn new(inner: F, meter: Arc<CpuMeter>) -> Self {
        Metered { inner, meter }
    }
}

impl<F: Future + Unpin> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let started = self.meter.begin_poll();
        let result = Pin::new(&mut self.inner).poll(cx);
        self.meter.end_poll(started);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin_for(d: Duration) {
        let start = thread_cpu_now();
        while thread_cpu_now() - start < d.as_nanos() as u64 {
            std::hint::spin_loop();
        }
    }

    #[tokio::test]
    async fn busy_polls_are_charged_and_waiting_is_not() {
        let meter = Arc::new(CpuMeter::new(Duration::from_millis(50)));
        let fut = Box::pin(async {
            spin_for(Duration::from_millis(5));
            tokio::time::sleep(Duration::from_millis(60)).await;
        });
        Metered::new(fut, meter.clone()).await;
        let used = meter.used();
        assert!(used >= Duration::from_millis(5), "charged {used:?}");
        assert!(
            used < Duration::from_millis(40),
            "sleep was charged: {used:?}"
        );
        assert!(!meter.exceeded());
    }

    #[tokio::test]
    async fn the_check_counts_the_poll_in_progress() {
        let meter = Arc::new(CpuMeter::new(Duration::from_millis(2)));
        let m = meter.clone();
        let fut = Box::pin(async move {
            assert!(m.check_in_poll().is_some());
            spin_for(Duration::from_millis(3));
            m.check_in_poll()
        });
        assert!(Metered::new(fut, meter.clone()).await.is_none());
        assert!(meter.exceeded());
    }
}
