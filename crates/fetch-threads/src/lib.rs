//! Thread per request: up to `max_in_flight` OS threads, each blocked in one
//! request.
//!
//! # How it works
//!
//! `fetch_all` reads the first batch of up to `max_in_flight` URLs and starts
//! one scoped worker thread per URL that can be in flight (`Dispatch::wanted`:
//! the batch, or C while the input goes on), so a run never has more threads
//! than requests it can have in flight (50 URLs at C = 100,000 start at most
//! 50). Each worker takes a job
//! `(index, url)` from a shared queue and blocks inside ureq's `call()` and
//! body read until the page arrives: the waiting happens in the kernel
//! (`connect`, `recv`), one sleeping thread per request in flight. The kernel
//! is the scheduler: when a response lands, it wakes that thread, at the
//! price of a context switch. The calling thread is the dispatcher: it pulls
//! the next URL from the input only while fewer than C requests are in
//! flight, and otherwise sleeps on the outcome channel. So what caps the
//! requests in flight is the dispatcher's count, not the number of threads:
//! a URL is read only when a worker is free to take it. What happens to one
//! URL (retries, the CPU stage, the outcome) is
//! `fetch_core::fetch_one_blocking`, the same for the three blocking models;
//! fetch-core's `fetch.rs` explains it.
//!
//! Why workers that take one job after another, and not a new thread for
//! each URL (the literal thread per request, and a diff against the rayon
//! model of a few lines)? Starting and joining a thread costs more than a
//! request to a near server. Measured with both versions of this file
//! (`fetchlab compare --models threads`, 10,000 pages, C = 100, parsing on,
//! three interleaved rounds, 2026-12-03): workers 6,346 to 7,912 pages/s at
//! 0 ms latency and 6,407 to 7,976 at 10 ms; a thread per URL 3,730 to
//! 5,039 and 3,541 to 4,292.
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
//! threads here). Past most limits `spawn` fails with `EAGAIN`, and this
//! crate runs with the threads it got. The map limit is worse: a thread that
//! did start can abort the whole process when std cannot map its signal
//! stack (before this crate counted, C = 100,000 over 200 URLs ended that
//! way: exit 134, not one record). So it never starts more workers than
//! `fetch_core::blocking::thread_budget` reads from the OS limits, counting
//! each worker twice (ureq resolves each new connection's host on a thread
//! of its own): about 7,000 at the default map limit. A capped run says so
//! on stderr, once. What a request in flight does cost in memory is its
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
//! A cancel cannot wake a thread blocked in `recv`. For the length of a run
//! the cancel token holds a hook that shuts the agent's sockets down
//! (`BlockingClient::shut_down_on_cancel`): every blocked read fails at once,
//! its URL is recorded `cancelled`, and the workers are joined promptly
//! (against a server that never answers, with a 30 s timeout: 30 s before,
//! under 0.01 s now). A shut-down agent refuses every later request, so the
//! model builds a new one for its next run. A DNS lookup or a TCP connect in
//! progress is not interrupted; it ends by its own timeout.
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
//! and 565 MiB of RSS (with the thread budget, that run now gets about 7,000
//! workers at the default map limit). Cancel is as prompt as in the async
//! models, since a cancel shuts the sockets down.
//!
//! # Copying this crate
//!
//! `scripts/export-model threads DIR` writes this crate and fetch-core, with
//! the conformance suite and the mock server for its tests, as a standalone
//! Cargo project (CI builds and tests each export offline).
//!
//! Copy `src/lib.rs` and depend on `fetch-core` (features = ["blocking"]), or
//! put your own blocking call where `client.attempt` is. If you copy it, keep
//! the timeouts (ureq sets none by default, and a server that never answers
//! would hold a thread forever), keep the idle pool sized to the threads,
//! keep the shutdown on cancel (or a Ctrl-C waits for every request in
//! flight), keep the thread budget (or a large C can abort the process), and
//! keep `fetch_one_blocking` (or its panic catching): a panic that escaped a
//! worker would lose the URLs that worker would have fetched next. Your own
//! processing of a page replaces fetch-core's CPU stage,
//! `fetch_core::parse::page`, which `fetch_one_blocking` runs on the worker
//! that fetched the page.
//!
//! # Tests and benchmark
//!
//! `cargo test -p fetch-threads` runs the conformance suite and
//! `tests/more_slots_than_urls.rs` (threads started on demand);
//! `cargo bench -- threads` runs its benchmark rows. The measurements above:
//! `cargo run --release -p fetch-threads --example load-threads` and
//! `--example thread-cost -- 10000` (see the README).

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, PoisonError};
use std::thread::{self, Scope};

use fetch_core::blocking::{BlockingClient, say_capped, thread_limit};
use fetch_core::fetch_one_blocking;
use fetch_core::{Cached, CancelToken, Dispatch, Model, Next, Options, Outcome, Run, Url};

/// Fetches `urls` with up to `max_in_flight` threads (capped at what the OS
/// lets this process start), handing each outcome to `on_outcome` (on the
/// calling thread) as it finishes. Returns the number of URLs read (one
/// outcome each).
pub fn fetch_all(
    client: &BlockingClient,
    urls: &mut dyn Iterator<Item = String>,
    options: &Options,
    on_outcome: &mut dyn FnMut(Outcome),
    cancel: &CancelToken,
) -> usize {
    let run = Run::new(options, cancel);
    // Every worker spends its time blocked in socket reads, where the cancel
    // token cannot reach it: while this guard lives, a cancel shuts the
    // agent's sockets down, so each read fails at once, the URL is recorded
    // `cancelled`, and the scope below joins its workers promptly.
    let _interrupt = client.shut_down_on_cancel(&run);
    let mut dispatch = Dispatch::new(urls, on_outcome);
    let (done_tx, done_rx) = mpsc::channel::<Outcome>();
    // Never more threads than the OS can start: near `vm.max_map_count` a
    // started thread that cannot map its signal stack aborts the process,
    // which no error handling here could catch.
    let (max_in_flight, capped_by) = thread_limit(options, None);
    // The first batch decides how many threads to start: one per URL that
    // can be in flight, so 50 URLs at a limit of 100,000 start 50 threads.
    let first = dispatch.next_urls(&run, max_in_flight);
    let wanted = dispatch.wanted(max_in_flight);
    if let (true, Some(why)) = (wanted == max_in_flight, capped_by) {
        say_capped("threads", options.max_in_flight(), max_in_flight, &why);
    }
    if first.is_empty() {
        return dispatch.finish(&run);
    }
    // One URL, start to end, on the thread that takes it. Nothing here can
    // panic: `fetch_one_blocking` catches panics from ureq and the CPU
    // stage, and the channel reports errors as values. (A thread that did
    // panic would take its URL's outcome with it, and the dispatcher would
    // wait for it forever.)
    let fetch = |(index, url): (usize, Url), done: &Sender<Outcome>| {
        let outcome = fetch_one_blocking(&run, index, url, |url, budget| {
            client.attempt(&run, url, budget)
        });
        // Cannot fail: the outcome channel outlives the scope.
        let _ = done.send(outcome);
    };
    // std's mpsc receiver has one consumer, so the workers share it behind a
    // mutex: the idle worker holding the lock waits on the channel, the
    // others wait on the lock. The lock is taken once per job, a cost lost in
    // a network request; a multi-consumer channel (crossbeam-channel) would
    // save it at the price of a dependency this std-only model does without.
    let (job_tx, job_rx) = mpsc::channel::<(usize, Url)>();
    let job_rx = Mutex::new(job_rx);

    // Scoped threads borrow the client, the run and the queues, and are all
    // joined before `scope` returns: no `Arc`, no thread outlives the call.
    thread::scope(|scope| {
        let workers = start_workers(scope, wanted, &job_rx, &done_tx, &fetch);
        if workers == 0 {
            // Not one thread: the calling thread fetches alone.
            return client.fetch_in_turn(&run, &mut dispatch, first);
        }
        let max_in_flight = max_in_flight.min(workers);
        // Moved into the closure so that if `on_outcome` panics, unwinding
        // drops it: idle workers see the queue closed and exit, and the scope
        // can join them instead of waiting forever. Sending cannot fail:
        // `job_rx` outlives the scope.
        let start = move |job| {
            let _ = job_tx.send(job);
        };
        first.into_iter().for_each(&start);
        let mut exhausted = false;
        loop {
            // Take a slot before reading a URL: the input is pulled only as
            // workers free up, so memory follows C, not the input's length.
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
        // The queue's sender drops here: workers waiting for a job see the
        // queue closed and return, and the scope joins them.
    });
    dispatch.finish(&run)
}

/// Starts up to `count` workers in `scope`, each taking jobs from `jobs`
/// and fetching them with `fetch` until the queue closes. Returns how many
/// started: fewer if the OS refuses a thread (EAGAIN from RLIMIT_NPROC,
/// threads-max, a cgroup limit, or no memory for the stack), which is said
/// once on stderr. Fewer in flight is slower, never wrong.
fn start_workers<'scope, F>(
    scope: &'scope Scope<'scope, '_>,
    count: usize,
    jobs: &'scope Mutex<Receiver<(usize, Url)>>,
    done: &Sender<Outcome>,
    fetch: &'scope F,
) -> usize
where
    F: Fn((usize, Url), &Sender<Outcome>) + Sync,
{
    for n in 0..count {
        let done = done.clone();
        // The lock is held only inside `next_job`, so no worker fetches
        // while holding it. (`while let Ok(job) = jobs.lock()...recv()`
        // would keep the guard, a temporary of the condition, for the whole
        // loop body, and the workers would fetch one URL at a time.) A
        // poisoned lock still guards a valid receiver: nothing panics while
        // holding it.
        let next_job = move || jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let spawned = thread::Builder::new()
            .name(format!("fetch-{n}"))
            .spawn_scoped(scope, move || {
                while let Ok(job) = next_job() {
                    fetch(job, &done);
                }
            });
        if let Err(e) = spawned {
            let why = format!("the OS refused a thread ({e})");
            say_capped("threads", count, n, &why);
            return n;
        }
    }
    count
}

/// The threads model, for the CLI, the benches and the conformance suite.
/// It keeps its agent between runs with the same options, until a cancel
/// shuts it down; the threads live for one run, so each run pays for
/// spawning and joining up to C of them (the load example prints that cost:
/// small against a crawl, not against a batch of a few pages; the rayon
/// model keeps its pool to avoid it).
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

    /// `max_in_flight`, or fewer if the OS would not let this process start
    /// that many threads (see `fetch_core::blocking::thread_budget`).
    fn concurrency(&self, options: &Options) -> usize {
        thread_limit(options, None).0
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
            |o| BlockingClient::new(o, o.max_in_flight()),
        );
        fetch_all(&client, urls, options, on_outcome, cancel)
    }
}
