//! Thread per request: `max_in_flight` OS threads, each blocked in one request.
//!
//! # How it works
//!
//! `fetch_all` spawns `max_in_flight` scoped worker threads. Each takes a job
//! `(index, url)` from a shared queue and blocks inside ureq's `call()` and
//! body read until the page arrives: the waiting happens in the kernel
//! (`connect`, `recv`), one sleeping thread per request in flight. The kernel
//! is the scheduler: when a response lands, it wakes that thread, at the
//! price of a context switch. The calling thread is the dispatcher: it pulls
//! the next URL from the input only while fewer than C requests are in
//! flight, and otherwise sleeps on the outcome channel. So what caps the
//! requests in flight is the dispatcher's count, not the number of threads:
//! a URL is read only when a worker is free to take it.
//!
//! A blocking client has no other way to overlap requests: `call()` holds its
//! thread until the response is in, so C requests at once need C threads.
//! Each is a kernel task with its own stack: 2 MiB of address space by
//! default (`thread::Builder::stack_size`, or the `RUST_MIN_STACK`
//! variable), of which only the pages touched become resident. Memory is not
//! what runs out first: on this 2-core VM (`examples/thread_cost.rs`), 1,000
//! idle threads took 3 GiB of address space but 9 MiB resident, and 10,000
//! took 21 GiB, 93 MiB and 40,000 memory maps (four per thread: the stack and
//! std's signal stack, each with a guard page). The limits that bite are
//! counts: `ulimit -u` (`RLIMIT_NPROC`, per user, across processes),
//! `kernel.threads-max`, `kernel.pid_max`, a cgroup's `pids.max`, and
//! `vm.max_map_count` (65,530 by default: spawning failed at about 16,370
//! threads here). Past a limit `spawn` fails with `EAGAIN`, and this crate
//! runs with the threads it got. Do not lean on that: at the map limit, a
//! thread that did start can abort the whole process when std cannot map
//! its signal stack. What a request in flight does cost in memory is its
//! connection's: ureq zero-fills a 128 KiB input and a 128 KiB output buffer
//! per connection, 200 MiB for the 800 connections a run at C = 1,000
//! opened, of the 180 to 350 MB resident measured in such runs.
//!
//! The cost per request is kernel time. At 0 ms latency, where only overhead
//! is left, `examples/load.rs` (30,000 pages, C = 100) spent about twice as
//! much system time as user time on the client side (four runs: 1.6 to 2.0 s
//! user, 3.3 to 4.4 s system), and the same split with C = 10: it comes with
//! each request, not with the number of threads. Every request is a blocking
//! `send` and `recv` plus wake-ups: the worker sleeps on its socket, then on
//! the job queue; the dispatcher sleeps on the outcome channel. An async
//! client learns of many ready sockets from one `epoll_wait` and runs them
//! on the thread it already has; here each response wakes a thread of its
//! own.
//!
//! One [`BlockingClient`] (a ureq `Agent`) is shared by every thread, with C
//! idle connections per host: ureq keeps 3 by default, and with more threads
//! than that, each extra thread would open a new connection per request.
//!
//! # When to choose this
//!
//! When the concurrency is modest (tens to a few hundred requests in flight),
//! the code around the fetch is blocking anyway (a blocking database driver, a
//! synchronous library), and you want no runtime at all: it is std only, every
//! stack trace is readable, and a debugger shows one thread per request. Not
//! for thousands of connections: threads cost kernel resources and limits that
//! an async task does not touch. Not for high request rates either: with
//! nothing to wait for, two thirds of the CPU time here went to the kernel, in
//! wake-ups and blocking calls rather than in fetching. Measured on the 2-core
//! reference VM (docs/results/2026-11-24-2-core-AMD-EPYC): 98% of wrk's rate at
//! 10 ms and 32 in flight, 71% at 100 in flight (the async models: 95-97%), 8%
//! at 0 ms (async: 30-43%); at 10,000 in flight it finished with 13,759 threads
//! and 565 MiB of RSS.
//!
//! # Copying this crate
//!
//! Copy `src/lib.rs` and depend on `fetch-core` (features = ["blocking"]), or
//! replace `BlockingClient::fetch` with your own blocking call. If you copy
//! it, keep the timeouts (ureq sets none by default, and a server that never
//! answers would hold a thread forever), keep the idle pool sized to the
//! threads, and keep the panic catching inside `fetch`: a panic that escaped
//! a worker would lose the URLs that worker would have fetched next.
//!
//! # Tests and benchmark
//!
//! `cargo test -p fetch-threads` runs the conformance suite and
//! `cargo bench -- threads` its benchmark rows. The measurements above:
//! `cargo run --release -p fetch-threads --example load-threads` and
//! `--example thread-cost -- 10000` (see the README).

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, PoisonError};
use std::thread;

use fetch_core::blocking::BlockingClient;
use fetch_core::{Cached, CancelToken, Dispatch, Model, Options, Outcome, Run};

/// Fetches `urls` on `max_in_flight` threads, handing each outcome to
/// `on_outcome` (on the calling thread) as it finishes. Returns the number
/// of URLs read (one outcome each).
pub fn fetch_all(
    client: &BlockingClient,
    urls: &mut dyn Iterator<Item = String>,
    options: &Options,
    on_outcome: &mut dyn FnMut(Outcome),
    cancel: &CancelToken,
) -> usize {
    let run = Run::new(options, cancel);
    let mut dispatch = Dispatch::new(urls, on_outcome);
    // std's mpsc receiver has one consumer, so the workers share it behind a
    // mutex: the idle worker holding the lock waits on the channel, the
    // others wait on the lock. The lock is taken once per job, a cost lost in
    // a network request; a multi-consumer channel (crossbeam-channel) would
    // save it at the price of a dependency this std-only model does without.
    let (job_tx, job_rx) = mpsc::channel::<(usize, String)>();
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<Outcome>();

    // Scoped threads borrow the client, the run and the queue, and are all
    // joined before `scope` returns: no `Arc`, no thread outlives the call.
    thread::scope(|scope| {
        // Moved into the scope so that if `on_outcome` panics, unwinding
        // drops it: idle workers see the queue closed and exit, and the scope
        // can join them instead of waiting forever.
        let jobs = job_tx;
        // One slot per worker that started.
        let mut slots = 0;
        for n in 0..options.max_in_flight() {
            let (job_rx, done_tx, run) = (&job_rx, done_tx.clone(), &run);
            let spawned = thread::Builder::new()
                .name(format!("fetch-{n}"))
                .spawn_scoped(scope, move || worker(client, run, job_rx, done_tx));
            // Out of threads (EAGAIN from RLIMIT_NPROC, threads-max, a cgroup
            // limit, or memory for the stack): run with the workers we have.
            // Fewer in flight is slower, never wrong.
            if spawned.is_err() {
                break;
            }
            slots += 1;
        }
        // Only the workers hold senders now, so `recv` fails only if every
        // one of them is gone.
        drop(done_tx);
        if slots == 0 {
            // Not one thread: the calling thread fetches alone.
            client.fetch_in_turn(&run, &mut dispatch);
            return;
        }

        let mut input_left = true;
        loop {
            // Take a slot before reading a URL: the input is pulled only as
            // workers free up, so memory follows C, not the input's length.
            while input_left && dispatch.in_flight() < slots {
                match dispatch.next_url(&run) {
                    // Cannot fail while `job_rx` lives (outside the scope).
                    Some(job) => {
                        if jobs.send(job).is_err() {
                            return;
                        }
                    }
                    None => input_left = false,
                }
            }
            if dispatch.in_flight() == 0 {
                break;
            }
            // Every in-flight request ends by its timeout or the deadline, so
            // this wait is bounded. It fails only if every worker is gone;
            // `finish` then reports the URLs they held.
            match done_rx.recv() {
                Ok(outcome) => dispatch.record(outcome),
                Err(_) => break,
            }
        }
        // `jobs` drops here: workers waiting for a job see the queue closed
        // and return, and the scope joins them.
    });
    dispatch.finish(&run)
}

/// One worker: take a job, fetch it, send the outcome back, until the queue
/// closes. Nothing here can panic: `fetch` catches panics from ureq and the
/// CPU stage, and the channels report errors as values.
fn worker(
    client: &BlockingClient,
    run: &Run,
    jobs: &Mutex<Receiver<(usize, String)>>,
    done: Sender<Outcome>,
) {
    loop {
        // The guard is a temporary of this `let`, released at the `;`, so no
        // worker fetches while holding the lock. (`while let Ok(job) =
        // jobs.lock()...recv()` would keep it for the whole loop body and
        // fetch one URL at a time.) A poisoned lock still guards a valid
        // receiver: nothing panics while holding it.
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok((index, url)) = job else { return };
        if done.send(client.fetch(run, index, &url)).is_err() {
            return;
        }
    }
}

/// The threads model, for the CLI, the benches and the conformance suite.
/// It keeps its agent between runs with the same options; the threads live
/// for one run, so each run pays for spawning and joining C of them (the
/// load example prints that cost: small against a crawl, not against a
/// batch of a few pages; the rayon model keeps its pool to avoid it).
#[derive(Default)]
pub struct Threads {
    client: Cached<BlockingClient>,
}

impl Threads {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Model for Threads {
    fn name(&self) -> &'static str {
        "threads"
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
        fetch_all(&client, urls, options, on_outcome, cancel)
    }
}
