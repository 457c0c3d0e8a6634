//! A thread pool: a dedicated rayon pool of `max_in_flight` threads, one
//! blocking request per task.
//!
//! # How it works
//!
//! `fetch_all` hands one URL at a time to a `rayon::ThreadPool` with
//! `pool.spawn`. The task blocks its pool thread inside ureq's `call()` and
//! body read: the waiting happens in the kernel (`connect`, `recv`), one
//! sleeping thread per request in flight, exactly as in the threads model.
//! The kernel wakes the thread when its response lands; rayon only picks
//! which idle thread runs the next task. The calling thread is the
//! dispatcher: it pulls the next URL only while fewer than C tasks are out,
//! and otherwise sleeps on the outcome channel. What caps the requests in
//! flight is that count (the permit is taken before spawning); the pool's
//! size only has to match it, or tasks would queue inside rayon instead.
//!
//! Rayon is built for CPU-bound work: a pool sized to the cores, whose
//! threads split work and steal it from each other. A task that blocks on
//! the network takes part in none of that. Its maintainers say as much
//! (rayon-rs/rayon#779): anything that blocks in a rayon thread for a reason
//! other than rayon (I/O, a mutex) keeps that thread from stealing work, so
//! the pool's capacity is wasted while it waits; if the I/O can be made
//! async, they point to tokio or async-std. So the pool here is sized to the
//! requests in flight, not to the cores, and it is a pool of our own: the
//! global pool has one thread per core (two requests in flight on this VM),
//! and blocking calls on it would starve every other user of rayon in the
//! process (a `par_iter` in a library waits behind our network calls).
//! Used this way, rayon is a plain thread pool that saves the per-run
//! spawning of the threads model, and costs more than it saves once C is
//! large (below).
//!
//! One URL per task, never `urls.par_iter()`: a parallel iterator splits its
//! input into batches, a few per thread, and runs each batch in order on one
//! thread; other threads can steal only the batches not yet started. A slow
//! call holds up every URL behind it in its batch while finished threads sit
//! idle. Measured here (`examples/load.rs --par-iter`, 20 in flight): with
//! every page at 10 ms, both took 2.2 s for 4,000 pages; with a long tail
//! (log-normal latencies, median 10 ms, sigma 2), one task per URL took 9.6
//! to 9.7 s for 2,000 pages in four runs and `par_iter` anywhere from 8.7 to
//! 11.8 s, depending on how the batches happened to be split and stolen. And
//! `par_iter` needs the input collected up front, where the dispatcher reads
//! a URL only when a slot is free.
//!
//! Rayon also charges for idle threads. A worker with nothing to do tries to
//! steal from every other worker's queue, yields, and tries again, for 32
//! rounds before it sleeps; each new task wakes sleepers to do it again. On
//! a pool sized to the cores that is cheap; with C threads blocked on the
//! network it grows with C. Measured with `examples/load.rs` (10 ms latency,
//! 20,000 pages, one run each on a busy machine), against the threads model:
//! at C = 100, 6,729 pages/s against 8,663; at C = 1,000, 1,610 against
//! 6,001, with 14.8 s of client user time against 2.1 s; at C = 2,000, 408
//! against 4,746. At 0 ms latency and C = 100 the process also saw about
//! twice the threads model's involuntary context switches, which fits those
//! yields.
//!
//! One [`BlockingClient`] (a ureq `Agent`) is shared by every task, with C
//! idle connections per host: ureq keeps 3 by default, and with more threads
//! than that, each extra thread would open a new connection per request.
//!
//! # When to choose this
//!
//! When a rayon pool is already part of the program, the requests in flight are
//! few (tens, not hundreds), and you want the blocking fetches on a pool of
//! their own, kept between runs (many small batches pay no spawning). Otherwise
//! the threads model does the same with std only and without rayon's idle
//! search, and for thousands of requests in flight an async runtime is the
//! better tool. Where rayon belongs in a fetch pipeline is the CPU stage:
//! parsing pages on a pool sized to the cores, fed by whatever does the
//! waiting, while the fetching itself stays off it. (Here the CPU stage runs
//! inside `fetch`, on whichever of the C threads fetched the page, and the
//! kernel time-slices C threads over the cores.) Measured on the 2-core
//! reference VM (docs/results/2026-11-24-2-core-AMD-EPYC): 98% of wrk's rate at
//! 10 ms and 32 in flight, 61% at 100 (threads: 71%, the async models: 95-97%),
//! 7% at 0 ms; at 10,000 in flight it fetched nothing in 300 s while burning
//! 580 s of CPU in work-stealing.
//!
//! # Copying this crate
//!
//! Copy `src/lib.rs` and depend on `fetch-core` (features = ["blocking"]) and
//! `rayon`, or replace `BlockingClient::fetch` with your own blocking call. If
//! you copy it, keep the pool dedicated and sized to the requests in flight,
//! keep the timeouts (ureq sets none by default, and a server that never
//! answers would hold a pool thread forever), and keep the panic catching
//! inside `fetch`: a panic that escapes a `pool.spawn` task aborts the
//! process (see `fetch_all`).
//!
//! # Tests and benchmark
//!
//! `cargo test -p fetch-rayon` runs the conformance suite and
//! `cargo bench -- rayon` its benchmark rows. The measurements above:
//! `cargo run --release -p fetch-rayon --example load-rayon` (add
//! `-- --par-iter --latency-ms 10 --in-flight 20 --urls 2000 --sigma 2` for
//! the batching comparison; see the README).

use std::sync::Arc;
use std::sync::mpsc;

use fetch_core::blocking::BlockingClient;
use fetch_core::{Cached, CancelToken, Dispatch, Model, Options, Outcome, Run};
use rayon::{ThreadPool, ThreadPoolBuilder};

/// Fetches `urls` on `pool`, at most `max_in_flight` at a time, handing each
/// outcome to `on_outcome` (on the calling thread) as it finishes. Returns
/// the number of URLs read (one outcome each). Call it from outside `pool`:
/// the dispatcher blocks, and on a pool thread it would hold a slot itself
/// (on a one-thread pool, wait for itself forever).
pub fn fetch_all(
    pool: &ThreadPool,
    client: &BlockingClient,
    urls: &mut dyn Iterator<Item = String>,
    options: &Options,
    on_outcome: &mut dyn FnMut(Outcome),
    cancel: &CancelToken,
) -> usize {
    // `pool.spawn` takes `'static` tasks (the pool outlives this call), so a
    // task cannot borrow from this frame as a scoped thread can: it owns
    // `Arc`s to the run and the client, one reference count per task.
    let run = Arc::new(Run::new(options, cancel));
    let client = Arc::new(client.clone());
    let mut dispatch = Dispatch::new(urls, on_outcome);
    let (done_tx, done_rx) = mpsc::channel::<Outcome>();
    // A permit is a free pool thread. A task spawned with no thread free
    // would wait in rayon's queue, its URL read but not in flight.
    let slots = options.max_in_flight().min(pool.current_num_threads());

    let mut input_left = true;
    loop {
        // Take a slot before reading a URL: the input is pulled only as
        // tasks finish, so memory follows C, not the input's length.
        while input_left && dispatch.in_flight() < slots {
            match dispatch.next_url(&run) {
                Some((index, url)) => {
                    let (client, run, done) = (client.clone(), run.clone(), done_tx.clone());
                    // A panic escaping this task would abort the process:
                    // that is rayon's default for `spawn`, since nobody is
                    // left to receive it. None can: `fetch` catches panics
                    // from ureq and the CPU stage, and `send` reports a
                    // closed channel as a value. A `panic_handler` on the
                    // pool is no better here: the URL's outcome would be
                    // lost and the dispatcher would wait for it forever.
                    pool.spawn(move || {
                        // Fails only if `fetch_all` already returned (the
                        // caller's `on_outcome` panicked): nobody to tell.
                        let _ = done.send(client.fetch(&run, index, &url));
                    });
                }
                None => input_left = false,
            }
        }
        if dispatch.in_flight() == 0 {
            break;
        }
        // Every in-flight request ends by its timeout or the deadline, so
        // this wait is bounded. It cannot fail: `done_tx` lives here.
        match done_rx.recv() {
            Ok(outcome) => dispatch.record(outcome),
            Err(_) => break,
        }
    }
    dispatch.finish(&run)
}

/// A pool of `size` threads, or the largest half, quarter, ... of it the
/// system lets us start: out of threads (EAGAIN from RLIMIT_NPROC,
/// threads-max, a cgroup limit), rayon's `build` fails as a whole, so we ask
/// for fewer. Fewer in flight is slower, never wrong. `None` if not even one
/// thread could be started.
fn build_pool(size: usize) -> Option<ThreadPool> {
    let mut size = size.max(1);
    loop {
        let built = ThreadPoolBuilder::new()
            .num_threads(size)
            .thread_name(|n| format!("fetch-rayon-{n}"))
            .build();
        match built {
            Ok(pool) => return Some(pool),
            Err(_) if size > 1 => size /= 2,
            Err(_) => return None,
        }
    }
}

/// The rayon model, for the CLI, the benches and the conformance suite.
/// It keeps its pool and its agent between runs with the same options.
#[derive(Default)]
pub struct Rayon {
    client: Cached<BlockingClient>,
    pool: Cached<Option<ThreadPool>>,
}

impl Rayon {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Model for Rayon {
    fn name(&self) -> &'static str {
        "rayon"
    }

    fn run_iter(
        &self,
        urls: &mut dyn Iterator<Item = String>,
        options: &Options,
        on_outcome: &mut dyn FnMut(Outcome),
        cancel: &CancelToken,
    ) -> usize {
        // One idle connection per host for each thread that shares the agent.
        let client = self
            .client
            .get_or_build(options, |o| BlockingClient::new(o, o.max_in_flight()));
        let pool = self
            .pool
            .get_or_build(options, |o| build_pool(o.max_in_flight()));
        match pool.as_ref() {
            Some(pool) => fetch_all(pool, &client, urls, options, on_outcome, cancel),
            None => {
                // Not one thread: the calling thread fetches alone.
                let run = Run::new(options, cancel);
                let mut dispatch = Dispatch::new(urls, on_outcome);
                client.fetch_in_turn(&run, &mut dispatch);
                dispatch.finish(&run)
            }
        }
    }
}
