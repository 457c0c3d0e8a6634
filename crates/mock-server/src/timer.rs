//! A sub-millisecond async sleep for simulated latency.
//!
//! Why not `tokio::time::sleep`: tokio's timer wheel ticks in whole milliseconds
//! and rounds a deadline *up* to the next tick, so a 10 ms sleep lasts 10–11 ms
//! (+1 ms on average here, +10% at the latencies the benchmarks use). Every model
//! would look 10% slower than the latency it was given.
//!
//! Why not spin for the last millisecond: the machine has two cores shared with
//! the client under test, and thousands of requests may be sleeping at once.
//!
//! So: one dedicated thread keeps the deadlines in a min-heap and sleeps on a
//! condition variable until the earliest one. The kernel's high-resolution timers
//! wake it (we set its timer slack to 1 ns, down from the default 50 µs), it fires
//! every due oneshot channel, and tokio wakes the waiting request tasks. Thousands
//! of sleepers cost one heap entry each and no CPU. A sleep never ends before its
//! deadline.
//!
//! What is left of the overshoot (~0.1–0.15 ms at 10 ms on the 2-core VM) is the
//! time an idle virtual CPU takes to wake up. We also tried a `timerfd` in tokio's
//! reactor, which saves the hop from this thread to a worker: it was ~0.08 ms
//! better for a single client, no better at 50–200 connections and worse when the
//! workers are saturated (the reactor is then polled late), at the cost of unsafe
//! code and a Linux-only path. See the README's "Latency accuracy".

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Handle to the timer thread. Cloning shares the thread.
#[derive(Clone)]
pub(crate) struct PreciseTimer {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    wakeup: Condvar,
}

struct State {
    heap: BinaryHeap<Entry>,
    /// Tie-breaker so that entries with equal deadlines still have a total order.
    next_seq: u64,
    shutdown: bool,
}

struct Entry {
    deadline: Instant,
    seq: u64,
    done: oneshot::Sender<()>,
}

// BinaryHeap is a max-heap; reversing the order makes `peek` the earliest deadline.
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}

/// A std Mutex, not tokio's: it is held for a heap push or pop only, never across
/// an `.await`, and the timer thread is not async at all.
fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // Nothing panics while holding the lock, but if something ever did, the heap
    // is still structurally valid, so carrying on is safe.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PreciseTimer {
    /// Starts the timer thread. Call [`PreciseTimer::shutdown`], then join the
    /// returned handle, to stop it.
    pub(crate) fn start() -> std::io::Result<(PreciseTimer, JoinHandle<()>)> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                heap: BinaryHeap::new(),
                next_seq: 0,
                shutdown: false,
            }),
            wakeup: Condvar::new(),
        });
        let thread_inner = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("mock-server-timer".into())
            .spawn(move || {
                reduce_timer_slack();
                run(&thread_inner);
            })?;
        Ok((PreciseTimer { inner }, thread))
    }

    /// Completes at `deadline` or shortly after (tens of microseconds).
    pub(crate) async fn sleep_until(&self, deadline: Instant) {
        if deadline <= Instant::now() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut state = lock(&self.inner.state);
            if state.shutdown {
                return;
            }
            let seq = state.next_seq;
            state.next_seq += 1;
            state.heap.push(Entry {
                deadline,
                seq,
                done: tx,
            });
            // Only a new earliest deadline shortens the thread's current wait.
            // (Rare: with a fixed latency, deadlines arrive in order.)
            if state.heap.peek().is_some_and(|e| e.seq == seq) {
                self.inner.wakeup.notify_one();
            }
        }
        // An error means the timer shut down (the server is stopping): wake up then.
        let _ = rx.await;
    }

    /// Stops the thread; pending sleeps complete immediately.
    pub(crate) fn shutdown(&self) {
        let mut state = lock(&self.inner.state);
        state.shutdown = true;
        // Dropping the senders wakes every sleeper.
        state.heap.clear();
        self.inner.wakeup.notify_one();
    }
}

fn run(inner: &Inner) {
    let mut due: Vec<oneshot::Sender<()>> = Vec::new();
    let mut state = lock(&inner.state);
    loop {
        if state.shutdown {
            return;
        }
        let now = Instant::now();
        while state.heap.peek().is_some_and(|e| e.deadline <= now) {
            if let Some(entry) = state.heap.pop() {
                due.push(entry.done);
            }
        }
        if !due.is_empty() {
            // Fire outside the lock so request tasks registering new sleeps
            // are not held up by the wakeups.
            drop(state);
            for tx in due.drain(..) {
                // The receiver is gone if the client disconnected mid-sleep: fine.
                let _ = tx.send(());
            }
            state = lock(&inner.state);
            continue;
        }
        state = match state.heap.peek().map(|e| e.deadline) {
            None => inner
                .wakeup
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner),
            Some(deadline) => {
                // Spurious or early wake-ups just go round the loop again, so the
                // "never before the deadline" guarantee does not depend on the OS.
                let wait = deadline.saturating_duration_since(now);
                inner
                    .wakeup
                    .wait_timeout(state, wait.max(Duration::from_micros(1)))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        };
    }
}

/// Linux rounds a sleeping thread's wake-up up by its "timer slack" (50 µs by
/// default) to batch wake-ups. For this one thread, precision is the point.
fn reduce_timer_slack() {
    #[cfg(target_os = "linux")]
    {
        // Best effort: without it the timer is merely ~50 µs less precise.
        let _ = nix::sys::prctl::set_timerslack(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("build runtime")
    }

    #[test]
    fn never_early_and_not_a_millisecond_late() {
        let (timer, thread) = PreciseTimer::start().expect("spawn timer thread");
        let mut elapsed = runtime().block_on(async {
            let mut v = Vec::new();
            for _ in 0..20 {
                let start = Instant::now();
                timer.sleep_until(start + Duration::from_millis(3)).await;
                v.push(start.elapsed());
            }
            v
        });
        elapsed.sort();
        assert!(elapsed[0] >= Duration::from_millis(3));
        // Generous bound (tokio's timer gives 3.5–4 ms): the point is "no
        // millisecond rounding", and CI machines are noisy.
        assert!(elapsed[10] < Duration::from_micros(3_700), "{elapsed:?}");
        timer.shutdown();
        thread.join().expect("timer thread panicked");
    }

    #[test]
    fn many_concurrent_sleepers_in_any_order() {
        let (timer, thread) = PreciseTimer::start().expect("spawn timer thread");
        runtime().block_on(async {
            let start = Instant::now();
            // Deadlines arrive out of order, so the "new earliest" path is exercised.
            let tasks: Vec<_> = (0..500u64)
                .map(|i| {
                    let timer = timer.clone();
                    let deadline = start + Duration::from_micros(1_000 + (i * 7919) % 5_000);
                    tokio::spawn(async move {
                        timer.sleep_until(deadline).await;
                        Instant::now() >= deadline
                    })
                })
                .collect();
            for t in tasks {
                assert!(t.await.expect("sleeper panicked"));
            }
        });
        timer.shutdown();
        thread.join().expect("timer thread panicked");
    }

    #[test]
    fn shutdown_releases_sleepers() {
        let (timer, thread) = PreciseTimer::start().expect("spawn timer thread");
        let start = Instant::now();
        let t2 = timer.clone();
        runtime().block_on(async move {
            let sleeper = tokio::spawn(async move {
                t2.sleep_until(Instant::now() + Duration::from_secs(60))
                    .await;
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
            timer.shutdown();
            sleeper.await.expect("sleeper panicked");
        });
        assert!(start.elapsed() < Duration::from_secs(10));
        thread.join().expect("timer thread panicked");
    }
}
