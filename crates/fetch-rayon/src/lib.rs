//! A thread pool: a dedicated rayon pool of up to `max_in_flight` threads
//! (never more than 512), one blocking request per task.
//!
//! # How it works
//!
//! `fetch_all` hands one URL at a time to a `rayon::ThreadPool`, as a task
//! spawned into a scope (`pool.in_place_scope`) that the calling thread runs
//! and that ends only once every task has: the tasks borrow the client and
//! the run, as the threads model's scoped threads do. The task blocks its
//! pool thread inside ureq's `call()` and body read: the waiting happens in
//! the kernel (`connect`, `recv`), one sleeping thread per request in
//! flight, exactly as in the threads model.
//! The kernel wakes the thread when its response lands; rayon only picks
//! which idle thread runs the next task. The calling thread is the
//! dispatcher: it pulls the next URL only while fewer than C tasks are out,
//! and otherwise sleeps on the outcome channel. What caps the requests in
//! flight is that count (the permit is taken before spawning); the pool's
//! size only has to match it, or tasks would queue inside rayon instead.
//! What happens to one URL (retries, the CPU stage, the outcome) is
//! `fetch_core::fetch_one_blocking`, the same for the three blocking models;
//! fetch-core's `fetch.rs` explains it.
//!
//! A rayon pool cannot grow once built, so its size is chosen before the
//! first task: `fetch_all` reads the first C URLs (it would read them anyway
//! to fill the slots) and asks for a pool of as many threads as URLs can be
//! in flight (`Dispatch::wanted`: the batch, or C while the input goes on). 50 URLs at
//! C = 100,000 get 50 threads; before, the pool was built with C threads up
//! front, and that run fetched nothing in 150 s. The pool is kept between
//! runs (fetch-core's `Cached`, as the agent is) and replaced by a larger one
//! when a run needs more threads, or when the options change. C itself is capped at
//! [`MAX_POOL_THREADS`] (512, measured below) and at the threads the OS lets
//! this process start (`fetch_core::blocking::thread_budget`; past some
//! limits a started thread aborts the process), with a line on stderr when
//! a run is capped. [`Model::concurrency`] reports the capped figure.
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
//! Hence the cap. At 0 ms latency (20,000 pages, uncapped pools, one or two
//! runs each on a shared machine), rayon against the threads model:
//!
//! | C | rayon pages/s | rayon client user / sys | threads pages/s | threads user / sys |
//! |---|---|---|---|---|
//! | 256 | 4,252; 3,925 | 3.2 / 4.4 s; 3.4 / 4.6 s | 4,392 | 2.4 / 4.2 s |
//! | 512 | 3,183; 2,776 | 6.4 / 4.5 s; 7.3 / 4.7 s | 3,620 | 2.1 / 5.2 s |
//! | 1,024 | 1,004 | 19.1 / 4.0 s | 3,254 | 4.1 / 5.4 s |
//! | 2,048 | 390 | 55.9 / 4.9 s | 2,734 | 3.3 / 7.2 s |
//!
//! Up to 512 threads rayon keeps three quarters or more of the threads
//! model's rate; past it the search for work takes over (user time triples
//! from 512 to 1,024 threads and again to 2,048), and at C = 10,000 a run
//! fetched nothing in 300 s. So 512 is the cap: C = 2,048 now runs on 512
//! threads at 3,367 pages/s, C = 10,000 at 4,481. Past 512 requests in
//! flight, use the threads model or an async one.
//!
//! A cancel cannot wake a pool thread blocked in `recv`. For the length of a
//! run the cancel token holds a hook that shuts the agent's sockets down
//! (`BlockingClient::shut_down_on_cancel`): every blocked read fails at once
//! and its URL is recorded `cancelled` (against a server that never answers,
//! with a 30 s timeout: 30 s before, under 0.01 s now). A shut-down agent
//! refuses every later request, so the model builds a new one for its next
//! run. A DNS lookup or a TCP connect in progress is not interrupted; it
//! ends by its own timeout.
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
//! inside `fetch_one_blocking`, on whichever of the C threads fetched the page, and the
//! kernel time-slices C threads over the cores.) Measured on the 2-core
//! reference VM (docs/results/2026-11-24-2-core-AMD-EPYC): 98% of wrk's rate at
//! 10 ms and 32 in flight, 61% at 100 (threads: 71%, the async models: 95-97%),
//! 7% at 0 ms; at 10,000 in flight (before the cap) it fetched nothing in
//! 300 s while burning 580 s of CPU in work-stealing.
//!
//! # Copying this crate
//!
//! `scripts/export-model rayon DIR` writes this crate and fetch-core, with
//! the conformance suite and the mock server for its tests, as a standalone
//! Cargo project (CI builds and tests each export offline).
//!
//! Copy `src/lib.rs` and depend on `fetch-core` (features = ["blocking"]) and
//! `rayon`, or put your own blocking call where `client.attempt` is. If you
//! copy it, keep the pool dedicated, sized to the requests in flight and
//! capped (measure the cap on your machine), keep the timeouts (ureq sets
//! none by default, and a server that never answers would hold a pool thread
//! forever), keep the shutdown on cancel (or a Ctrl-C waits for every
//! request in flight), and keep `fetch_one_blocking` (or its panic
//! catching): a task that panicked would never send its outcome, and the
//! dispatcher would wait for it forever (see `fetch_all`). Your own
//! processing of a page replaces fetch-core's CPU stage,
//! `fetch_core::parse::page`, which `fetch_one_blocking` runs on the pool
//! thread that fetched the page.
//!
//! # Tests and benchmark
//!
//! `cargo test -p fetch-rayon` runs the conformance suite and
//! `tests/more_slots_than_urls.rs` (the pool sized to the input);
//! `cargo bench -- rayon` runs its benchmark rows. The measurements above:
//! `cargo run --release -p fetch-rayon --example load-rayon` (the cap table:
//! `-- --urls 20000 --concurrency C`, built without the cap; add
//! `-- --par-iter --latency-ms 10 --concurrency 20 --urls 2000 --sigma 2` for
//! the batching comparison; see the README).

use std::sync::mpsc::{self, Sender};

use fetch_core::blocking::{BlockingClient, say_capped, thread_limit};
use fetch_core::fetch_one_blocking;
use fetch_core::{Cached, CancelToken, Dispatch, Model, Next, Options, Outcome, Run, Url};
use rayon::{ThreadPool, ThreadPoolBuilder};

/// The most threads a pool gets, whatever `max_in_flight` asks: past this,
/// rayon's idle workers spend the CPU searching each other's queues instead
/// of fetching (measured in the crate header).
pub const MAX_POOL_THREADS: usize = 512;

/// The pool's cap, with the reason a capped run prints.
const POOL_CAP: (usize, &str) = (
    MAX_POOL_THREADS,
    "the pool is capped at 512 threads (see fetch-rayon)",
);

/// The pool a run uses, kept between runs with the same options and
/// replaced when a run needs more threads than it has (runs of 4 and then
/// 50 URLs build two pools, runs of 50 and then 4 build one); `None` if not
/// one thread could be started.
pub type Pool = Cached<Option<ThreadPool>>;

/// Fetches `urls` on a pool from `pool`, at most `max_in_flight` at a time
/// (capped at [`MAX_POOL_THREADS`] and at what the OS lets this process
/// start), handing each outcome to `on_outcome` (on the calling thread) as
/// it finishes. Returns the number of URLs read (one outcome each). Call it
/// from outside the pool: the dispatcher blocks, and on a pool thread it
/// would hold a slot itself (on a one-thread pool, wait for itself forever).
pub fn fetch_all(
    pool: &Pool,
    client: &BlockingClient,
    urls: &mut dyn Iterator<Item = String>,
    options: &Options,
    on_outcome: &mut dyn FnMut(Outcome),
    cancel: &CancelToken,
) -> usize {
    let run = Run::new(options, cancel);
    // The pool's threads spend their time blocked in socket reads, where the
    // cancel token cannot reach them: while this guard lives, a cancel shuts
    // the agent's sockets down, so each read fails at once, the URL is
    // recorded `cancelled`, and the scope below ends promptly.
    let _interrupt = client.shut_down_on_cancel(&run);
    let mut dispatch = Dispatch::new(urls, on_outcome);
    let (done_tx, done_rx) = mpsc::channel::<Outcome>();
    // Never more threads than the OS can start, nor than the pool's cap.
    let (max_in_flight, capped_by) = thread_limit(options, Some(POOL_CAP));
    // A rayon pool cannot grow, so the first batch decides its size: one
    // thread per URL that can be in flight, so 50 URLs at a limit of 100,000
    // get 50.
    let first = dispatch.next_urls(&run, max_in_flight);
    let wanted = dispatch.wanted(max_in_flight);
    if let (true, Some(why)) = (wanted == max_in_flight, capped_by) {
        say_capped("rayon", options.max_in_flight(), max_in_flight, &why);
    }
    if first.is_empty() {
        return dispatch.finish(&run);
    }
    // One URL, start to end, on the pool thread that runs it. A panic in a
    // task would reach the caller only when the scope ends, and its URL's
    // outcome would never come, so the dispatcher would wait for it forever.
    // None can: `fetch_one_blocking` catches panics from ureq and the CPU
    // stage, and the channel reports errors as values.
    let fetch = |(index, url): (usize, Url), done: &Sender<Outcome>| {
        let outcome = fetch_one_blocking(&run, index, url, |url, budget| {
            client.attempt(&run, url, budget)
        });
        // Cannot fail: the outcome channel outlives the scope.
        let _ = done.send(outcome);
    };
    // The pool kept from an earlier run if it is large enough, else a new
    // one (the old one's threads exit once idle).
    let large_enough = |p: &Option<ThreadPool>| {
        p.as_ref()
            .is_some_and(|p| p.current_num_threads() >= wanted)
    };
    let pool = pool.get_unshared_or_build(options, large_enough, |_| build_pool(wanted));

    // A scope's tasks borrow the client, the run and the channel, and all
    // end before `in_place_scope` returns: no `Arc`, as with scoped
    // threads. The closure runs on this thread; only the tasks go to the
    // pool.
    let Some(pool) = pool.as_ref() else {
        // Not one thread: the calling thread fetches alone.
        client.fetch_in_turn(&run, &mut dispatch, first);
        return dispatch.finish(&run);
    };
    pool.in_place_scope(|scope| {
        // A slot is a free pool thread. A task spawned with no thread free
        // would wait in rayon's queue, its URL read but not in flight. (Only
        // the URLs read above can end up there, if the OS refused some
        // threads.)
        let max_in_flight = max_in_flight.min(pool.current_num_threads());
        let start = |job| {
            let done = done_tx.clone();
            scope.spawn(move |_| fetch(job, &done));
        };
        first.into_iter().for_each(&start);
        let mut exhausted = false;
        loop {
            // Take a slot before reading a URL: the input is pulled only as
            // tasks finish, so memory follows C, not the input's length.
            while !exhausted && dispatch.in_flight() < max_in_flight {
                let job = match dispatch.next_url(&run) {
                    Next::Url(index, url) => (index, url),
                    // Every URL read ahead is for a host at its limit: wait
                    // for an outcome, which frees a host's slot.
                    Next::Wait => break,
                    Next::End => {
                        exhausted = true;
                        break;
                    }
                };
                start(job);
            }
            if dispatch.in_flight() == 0 {
                break;
            }
            // Every in-flight request ends by its timeout, the deadline or a
            // cancel's shutdown, so this wait is bounded. It cannot fail:
            // `done_tx` lives here.
            match done_rx.recv() {
                Ok(outcome) => dispatch.record(outcome),
                Err(_) => break,
            }
        }
    });
    dispatch.finish(&run)
}

/// A pool of up to `count` threads: the largest half, quarter, ... of it
/// the OS lets us start, said once on stderr if fewer. Out of threads
/// (EAGAIN from RLIMIT_NPROC, threads-max, a cgroup limit), rayon's `build`
/// fails as a whole, so we ask for fewer. Fewer in flight is slower, never
/// wrong. `None` if not even one thread could be started.
fn build_pool(count: usize) -> Option<ThreadPool> {
    let mut size = count.max(1);
    loop {
        let built = ThreadPoolBuilder::new()
            .num_threads(size)
            .thread_name(|n| format!("fetch-rayon-{n}"))
            .build();
        match built {
            Ok(pool) if size < count => {
                let why = "the OS refused some of the pool's threads";
                say_capped("rayon", count, size, why);
                return Some(pool);
            }
            Ok(pool) => return Some(pool),
            Err(_) if size > 1 => size /= 2,
            Err(_) => return None,
        }
    }
}

/// The rayon model, for the CLI, the benches and the conformance suite.
/// It keeps its pool between runs with the same options (growing it when a
/// run needs more threads), and its agent until a cancel shuts it down.
#[derive(Default)]
pub struct Rayon {
    client: Cached<BlockingClient>,
    pool: Pool,
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

    /// `max_in_flight`, capped at [`MAX_POOL_THREADS`] and at the threads the
    /// OS lets this process start: what the conformance suite checks the
    /// server's maximum in flight against.
    fn concurrency(&self, options: &Options) -> usize {
        thread_limit(options, Some(POOL_CAP)).0
    }

    fn run_iter(
        &self,
        urls: &mut dyn Iterator<Item = String>,
        options: &Options,
        on_outcome: &mut dyn FnMut(Outcome),
        cancel: &CancelToken,
    ) -> usize {
        // One idle connection per host for each thread that shares the agent.
        // A client that a cancel shut down is replaced, and so is one that
        // another run holds now (a cancel of that run would shut this one's
        // down).
        let client = self.client.get_unshared_or_build(
            options,
            |c| !c.is_shut_down(),
            |o| BlockingClient::new(o, o.max_in_flight().min(MAX_POOL_THREADS)),
        );
        fetch_all(&self.pool, &client, urls, options, on_outcome, cancel)
    }
}
