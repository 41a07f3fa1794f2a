//! Turns on the background threads, shared fairly between workers.
//!
//! Guests that compute for long run on the background threads (see
//! `Runtime::background`), yielding at every epoch tick. Left to tokio, every
//! runnable task gets a turn in order, so a worker with eight looping
//! requests would get eight times the CPU of a worker with one. The [`Gate`]
//! hands out turns by worker instead: at most one guest per background
//! thread holds a turn (for one poll: until its next tick, or until it waits
//! on I/O), and a freed turn goes to the waiting worker that has had the
//! least CPU on these threads. This is stride scheduling with equal weights,
//! as a CPU scheduler shares a core between groups of processes: the guests
//! of one worker take turns among themselves in arrival order, and workers
//! take turns by CPU received.
//!
//! A worker's CPU is counted as virtual time. One that comes back after a
//! pause (a guest waiting on I/O, or between two requests) starts no lower
//! than [`CREDIT`] below the least virtual time among the workers that kept
//! busy (the floor): a short pause keeps what the worker was owed, a long
//! one earns no more than that, and CPU it had ahead of the others is
//! remembered.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::cpu::CpuMeter;

/// Names a worker to the gate; all versions of a worker share one.
pub(crate) type WorkerId = u64;

/// The most CPU a worker back from a pause can be owed. It covers the
/// pause between two requests of a worker that loops (the next one's first
/// millisecond runs on a serving thread), while others take the turns.
const CREDIT: u64 = 10_000_000;

/// Idle workers are forgotten once their virtual time is where a newcomer's
/// would be; the accounts are swept for them after this many turns.
const SWEEP_EVERY: u64 = 1024;

/// The turns of the background threads.
pub(crate) struct Gate {
    state: Mutex<Turns>,
}

/// A guest waiting for a turn.
#[derive(Debug)]
struct Ticket {
    /// Arrival order, which breaks ties between workers.
    seq: u64,
    granted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Ticket {
    fn wake(&self) {
        let waker = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The gate's bookkeeping, free of threads and wakers' effects, so that the
/// order of turns can be tested as a plain value.
struct Turns {
    free: usize,
    accounts: HashMap<WorkerId, Account>,
    /// The least virtual time among busy workers, never decreasing.
    floor: u64,
    released: u64,
    tickets: u64,
}

#[derive(Default)]
struct Account {
    /// Nanoseconds of CPU the worker's guests had in their turns.
    vtime: u64,
    running: usize,
    waiting: VecDeque<Arc<Ticket>>,
}

impl Account {
    fn idle(&self) -> bool {
        self.running == 0 && self.waiting.is_empty()
    }
}

impl Turns {
    fn new(slots: usize) -> Turns {
        Turns {
            free: slots.max(1),
            accounts: HashMap::new(),
            floor: 0,
            released: 0,
            tickets: 0,
        }
    }

    /// Takes a turn for `worker` if one is free (no other guest can be
    /// waiting then: a freed turn goes straight to a waiting one); otherwise
    /// queues a ticket and returns it.
    fn acquire(&mut self, worker: WorkerId, waker: &Waker) -> Result<(), Arc<Ticket>> {
        let least = self.floor.saturating_sub(CREDIT);
        let account = self.accounts.entry(worker).or_default();
        if account.idle() {
            account.vtime = account.vtime.max(least);
        }
        if self.free > 0 {
            self.free -= 1;
            account.running += 1;
            return Ok(());
        }
        Err(self.queue(worker, waker))
    }

    /// Ends a turn of `worker` that used `spent_ns` of CPU; the ticket given
    /// the turn, to be woken.
    fn release(&mut self, worker: WorkerId, spent_ns: u64) -> Option<Arc<Ticket>> {
        if let Some(account) = self.accounts.get_mut(&worker) {
            account.running = account.running.saturating_sub(1);
            // At least a nanosecond, so that turns move a worker forward.
            account.vtime = account.vtime.saturating_add(spent_ns.max(1));
        }
        self.free += 1;
        self.released += 1;
        let granted = self.grant();
        self.raise_floor();
        if self.accounts.values().all(Account::idle) {
            // Nobody to be fair to: what each had is of no more use.
            self.accounts.clear();
        } else if self.released.is_multiple_of(SWEEP_EVERY) {
            let least = self.floor.saturating_sub(CREDIT);
            self.accounts.retain(|_, a| !(a.idle() && a.vtime <= least));
        }
        granted
    }

    /// Ends a turn of `worker` that used `spent_ns` of CPU and queues its
    /// guest for another, in one step so that it competes for the turn it
    /// frees: `Ok` if that turn is its own again, else its ticket; and the
    /// ticket given the turn instead, to be woken.
    fn requeue(
        &mut self,
        worker: WorkerId,
        spent_ns: u64,
        waker: &Waker,
    ) -> (Result<(), Arc<Ticket>>, Option<Arc<Ticket>>) {
        let ticket = self.queue(worker, waker);
        match self.release(worker, spent_ns) {
            Some(granted) if Arc::ptr_eq(&granted, &ticket) => (Ok(()), None),
            granted => (Err(ticket), granted),
        }
    }

    /// Queues a new ticket behind `worker`'s waiting guests.
    fn queue(&mut self, worker: WorkerId, waker: &Waker) -> Arc<Ticket> {
        self.tickets += 1;
        let ticket = Arc::new(Ticket {
            seq: self.tickets,
            granted: AtomicBool::new(false),
            waker: Mutex::new(Some(waker.clone())),
        });
        let account = self.accounts.entry(worker).or_default();
        account.waiting.push_back(ticket.clone());
        ticket
    }

    /// Gives a free turn to the first guest of the waiting worker with the
    /// least virtual time (of two even ones, the one waiting longer).
    fn grant(&mut self) -> Option<Arc<Ticket>> {
        if self.free == 0 {
            return None;
        }
        let account = self
            .accounts
            .values_mut()
            .filter_map(|a| Some((a.vtime, a.waiting.front()?.seq, a)))
            .min_by_key(|(vtime, seq, _)| (*vtime, *seq))?
            .2;
        let ticket = account.waiting.pop_front()?;
        account.running += 1;
        self.free -= 1;
        ticket.granted.store(true, Ordering::Release);
        Some(ticket)
    }

    fn raise_floor(&mut self) {
        if let Some(least) = self
            .accounts
            .values()
            .filter(|a| !a.idle())
            .map(|a| a.vtime)
            .min()
        {
            self.floor = self.floor.max(least);
        }
    }

    /// Withdraws a ticket whose guest is gone (stopped at its wall deadline,
    /// or its client left); a turn it was given is passed on.
    fn cancel(&mut self, worker: WorkerId, ticket: &Arc<Ticket>) -> Option<Arc<Ticket>> {
        if ticket.granted.load(Ordering::Acquire) {
            return self.release(worker, 0);
        }
        if let Some(account) = self.accounts.get_mut(&worker) {
            account.waiting.retain(|t| !Arc::ptr_eq(t, ticket));
        }
        None
    }
}

impl Gate {
    /// A gate with `slots` turns: one per background thread.
    pub(crate) fn new(slots: usize) -> Gate {
        Gate {
            state: Mutex::new(Turns::new(slots)),
        }
    }

    fn turns(&self) -> MutexGuard<'_, Turns> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self, worker: WorkerId, spent_ns: u64) {
        let next = self.turns().release(worker, spent_ns);
        if let Some(ticket) = next {
            ticket.wake();
        }
    }
}

/// A guest future that runs only in turns given by a [`Gate`], its CPU
/// (from its meter) charged to its worker.
///
/// A turn is held from the start of a poll until the guest waits on I/O
/// (the poll returns pending), or until an epoch tick, where the guest gives
/// the turn over ([`Handover`]): the turn goes to the waiting worker owed
/// most, perhaps this guest's own again, and meanwhile the guest waits in
/// the gate, not in tokio's run queue, which would serve it in turn with
/// every other task.
pub(crate) struct Fair<F> {
    inner: F,
    gate: Arc<Gate>,
    worker: WorkerId,
    meter: Arc<CpuMeter>,
    /// Holding a turn between polls: given it back at a tick, the guest is
    /// woken to run on.
    holding: bool,
    ticket: Option<Arc<Ticket>>,
}

impl<F> Fair<F> {
    pub(crate) fn new(inner: F, gate: Arc<Gate>, worker: WorkerId, meter: Arc<CpuMeter>) -> Self {
        Fair {
            inner,
            gate,
            worker,
            meter,
            holding: false,
            ticket: None,
        }
    }

    /// Whether the guest holds a turn now, waiting for one if not.
    fn take_turn(&mut self, cx: &mut Context<'_>) -> bool {
        if self.holding {
            return true;
        }
        if let Some(ticket) = &self.ticket {
            if !ticket.granted.load(Ordering::Acquire) {
                *ticket.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
                // A grant between the check and the store found the old
                // waker; look again rather than miss it.
                if !ticket.granted.load(Ordering::Acquire) {
                    return false;
                }
            }
            self.ticket = None;
            self.holding = true;
            return true;
        }
        match self.gate.turns().acquire(self.worker, cx.waker()) {
            Ok(()) => self.holding = true,
            Err(ticket) => self.ticket = Some(ticket),
        }
        self.holding
    }
}

/// Gives the turn back if a poll unwinds.
struct Unwinding<'a> {
    gate: &'a Gate,
    worker: WorkerId,
}

impl Drop for Unwinding<'_> {
    fn drop(&mut self) {
        self.gate.release(self.worker, 0);
    }
}

impl<F: Future + Unpin> Future for Fair<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        if !this.take_turn(cx) {
            return Poll::Pending;
        }
        // Held by this poll now; given back below, or by `unwinding`.
        this.holding = false;
        let started = this.meter.used();
        let unwinding = Unwinding {
            gate: &this.gate,
            worker: this.worker,
        };
        let result = Pin::new(&mut this.inner).poll(cx);
        std::mem::forget(unwinding);
        let spent = this.meter.used().saturating_sub(started).as_nanos() as u64;
        if result.is_ready() || !this.meter.take_handover() {
            this.gate.release(this.worker, spent);
            return result;
        }
        let (mine, granted) = this.gate.turns().requeue(this.worker, spent, cx.waker());
        if let Some(granted) = granted {
            granted.wake();
        }
        match mine {
            // Its own turn again: it runs on once tokio has run what else
            // is ready on this thread.
            Ok(()) => {
                this.holding = true;
                cx.waker().wake_by_ref();
            }
            Err(ticket) => this.ticket = Some(ticket),
        }
        Poll::Pending
    }
}

impl<F> Drop for Fair<F> {
    fn drop(&mut self) {
        if self.holding {
            self.gate.release(self.worker, 0);
        }
        if let Some(ticket) = self.ticket.take() {
            let next = self.gate.turns().cancel(self.worker, &ticket);
            if let Some(next) = next {
                next.wake();
            }
        }
    }
}

/// What a guest on the background threads awaits at an epoch tick: pending
/// once, without waking its task, after telling [`Fair`] (through the
/// meter) to give its turn over; ready when polled again, in its next turn.
pub(crate) struct Handover {
    meter: Option<Arc<CpuMeter>>,
}

impl Handover {
    pub(crate) fn new(meter: Arc<CpuMeter>) -> Handover {
        Handover { meter: Some(meter) }
    }
}

impl Future for Handover {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        match self.meter.take() {
            Some(meter) => {
                meter.ask_handover();
                Poll::Pending
            }
            None => Poll::Ready(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// A gate of one slot whose guests each take turns of a millisecond and
    /// queue again after each, as looping requests do.
    struct Sim {
        turns: Turns,
        queued: Vec<(Arc<Ticket>, WorkerId)>,
        holder: WorkerId,
        stopped: Option<WorkerId>,
    }

    impl Sim {
        /// `first` holds the turn.
        fn new(first: WorkerId) -> Sim {
            let mut turns = Turns::new(1);
            turns.acquire(first, Waker::noop()).unwrap();
            Sim {
                turns,
                queued: Vec::new(),
                holder: first,
                stopped: None,
            }
        }

        fn queue(&mut self, worker: WorkerId, guests: usize) {
            if self.stopped == Some(worker) {
                self.stopped = None;
            }
            for _ in 0..guests {
                let ticket = queue(&mut self.turns, worker);
                self.queued.push((ticket, worker));
            }
        }

        /// Worker `worker`'s guests stop queueing (they wait on I/O).
        fn stop(&mut self, worker: WorkerId) {
            self.stopped = Some(worker);
            for (ticket, _) in self.queued.extract_if(.., |(_, w)| *w == worker) {
                assert!(self.turns.cancel(worker, &ticket).is_none());
            }
        }

        /// The worker of each of the next `count` turns: at the end of each
        /// the holder gives its turn over, as at an epoch tick.
        fn run(&mut self, count: usize) -> Vec<WorkerId> {
            let mut order = Vec::new();
            for _ in 0..count {
                let granted = if self.stopped == Some(self.holder) {
                    self.turns.release(self.holder, MS)
                } else {
                    match self.turns.requeue(self.holder, MS, Waker::noop()) {
                        (Ok(()), granted) => {
                            assert!(granted.is_none());
                            order.push(self.holder);
                            continue;
                        }
                        (Err(ticket), granted) => {
                            self.queued.push((ticket, self.holder));
                            granted
                        }
                    }
                };
                let next = granted.expect("a waiting guest");
                assert!(next.granted.load(Ordering::Acquire));
                let at = self
                    .queued
                    .iter()
                    .position(|(t, _)| Arc::ptr_eq(t, &next))
                    .expect("a queued ticket");
                let (_, worker) = self.queued.remove(at);
                self.holder = worker;
                order.push(worker);
            }
            order
        }
    }

    fn queue(turns: &mut Turns, worker: WorkerId) -> Arc<Ticket> {
        turns
            .acquire(worker, Waker::noop())
            .expect_err("no turn should be free")
    }

    fn count(order: &[WorkerId], worker: WorkerId) -> usize {
        order.iter().filter(|w| **w == worker).count()
    }

    #[test]
    fn workers_share_turns_equally_whatever_their_number_of_guests() {
        // Worker 1 has eight guests looping (one of them running), worker 2 one.
        let mut sim = Sim::new(1);
        sim.queue(1, 7);
        sim.queue(2, 1);
        let order = sim.run(40);
        assert!((19..=21).contains(&count(&order, 2)), "{order:?}");
    }

    #[test]
    fn a_worker_arriving_late_is_owed_little_for_its_absence() {
        let mut sim = Sim::new(1);
        sim.queue(1, 3);
        assert_eq!(count(&sim.run(100), 1), 100);
        // Worker 2 comes with three guests after 100 ms of worker 1 alone:
        // it is owed the credit (10 ms) and no more, then the two alternate.
        sim.queue(2, 3);
        let order = sim.run(40);
        assert!(count(&order[..10], 2) >= 9, "{order:?}");
        assert!((14..=16).contains(&count(&order[10..], 2)), "{order:?}");
    }

    #[test]
    fn a_worker_back_from_a_short_pause_keeps_its_place() {
        let mut sim = Sim::new(1);
        sim.queue(1, 3);
        sim.queue(2, 2);
        let order = sim.run(20);
        assert_eq!(count(&order[10..], 2), 5, "{order:?}");
        // Worker 2's guests wait on I/O for 4 ms of worker 1's turns...
        sim.stop(2);
        assert_eq!(sim.run(5)[1..], [1, 1, 1, 1]);
        // ...and catch up when they are back, then the two alternate.
        sim.queue(2, 2);
        let order = sim.run(12);
        assert!(count(&order[..5], 2) >= 4, "{order:?}");
        assert_eq!(count(&order[8..], 2), 2, "{order:?}");
    }

    #[test]
    fn a_guest_gone_while_waiting_passes_its_turn_on() {
        let mut turns = Turns::new(1);
        turns.acquire(1, Waker::noop()).unwrap();
        let gone = queue(&mut turns, 2);
        let next = queue(&mut turns, 3);
        // Worker 2's guest (first to wait) is given the turn, then stopped
        // before it runs.
        let granted = turns.release(1, MS).unwrap();
        assert!(Arc::ptr_eq(&granted, &gone));
        let passed = turns.cancel(2, &gone).expect("the turn is passed on");
        assert!(Arc::ptr_eq(&passed, &next));
        // A guest stopped while still queued leaves the queue.
        let queued = queue(&mut turns, 1);
        assert!(turns.cancel(1, &queued).is_none());
        assert!(turns.release(3, 1_000).is_none());
        assert_eq!(turns.free, 1);
    }

    #[test]
    fn idle_workers_are_forgotten() {
        let mut turns = Turns::new(2);
        // Worker 0 stays busy while a thousand others come and go.
        turns.acquire(0, Waker::noop()).unwrap();
        turns.acquire(0, Waker::noop()).unwrap();
        for worker in 1..=SWEEP_EVERY {
            turns.release(0, MS);
            turns.acquire(worker, Waker::noop()).unwrap();
            turns.release(worker, 10);
            turns.acquire(0, Waker::noop()).unwrap();
        }
        assert!(
            turns.accounts.len() < 20,
            "{} accounts",
            turns.accounts.len()
        );
        // With nobody busy, nothing is kept.
        turns.release(0, MS);
        turns.release(0, MS);
        assert!(turns.accounts.is_empty());
    }
}
