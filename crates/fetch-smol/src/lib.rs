//! The smol model: up to `max_in_flight` worker tasks on a smol executor,
//! each owning one keep-alive connection, fed URLs through a channel.
//!
//! # How it works
//!
//! The waiting happens in smol's reactor (async-io: epoll on Linux): a worker
//! awaiting a socket or a timer is parked, and its thread runs whichever task
//! the reactor woke. Nothing preempts a task between two `.await`s, so the CPU
//! stage leaves for `smol::unblock`'s thread pool.
//!
//! Who schedules: one `smol::Executor`, run by `available_parallelism() - 1`
//! threads of our own plus the thread awaiting `fetch_all`, which joins in
//! while it waits. (smol's global `smol::spawn` runs on one thread unless the
//! `SMOL_THREADS` environment variable says otherwise.)
//!
//! What caps the requests in flight: the number of workers. `fetch_all`
//! spawns a worker when a URL is ready and every worker it has is busy, up to
//! `max_in_flight` of them, so 200 URLs with a limit of 100,000 start 200
//! workers, not 100,000; each takes one `(index, url)` job at a time from a
//! channel and sends its outcome back. The caller's loop pulls a URL from
//! `Dispatch` only while fewer than `max_in_flight` are unfinished, so memory
//! follows the limit, not the input; and as each worker owns one connection,
//! at most `max_in_flight` are open.
//!
//! smol has no HTTP client. What tokio users get from reqwest, `client.rs`
//! builds on hyper 1's bare `client::conn`: the pool is one connection per
//! worker (handed on to the next run's workers); redirects are followed by
//! hand; TLS is futures-rustls; and every time limit is a race with
//! `smol::Timer`: the connect timeout, the attempt's budget, and here the
//! run's deadline and cancel token, which race every URL.
//!
//! async-std is discontinued and its authors point to smol: this crate is
//! where fetch-async-std migrates to.
//!
//! # When to choose this
//!
//! When you want a small runtime you can read in an afternoon, few
//! dependencies, or code on the runtime-neutral `futures-io` traits; when you
//! already use smol, or are leaving async-std. Not when you need what the tokio
//! ecosystem hands you (reqwest's HTTP/2, proxies, cookies, decompression and
//! pool; tower; tonic; the many crates that assume tokio): here you write that
//! plumbing and keep it working. Not for CPU-bound batches either: that is
//! rayon's job. Measured on the 2-core reference VM
//! (docs/results/2026-11-24-2-core-AMD-EPYC): 97% of wrk's rate at 10 ms and
//! 100 in flight, 39-43% at 0 ms; 10,000 in flight with 9 threads and 317 MiB;
//! 25.5 times the article's Python program, with 3.7 times less memory.
//!
//! # Copying this crate
//!
//! Copy `src/lib.rs`, `src/client.rs` and the dependencies in Cargo.toml;
//! fetch-core supplies the options, retry policy, parse stage and `Dispatch`
//! (depend on it, or replace them with yours). Keep every race in
//! `client.rs`: hyper and async-io time out nothing by themselves, and one
//! server that never answers would hold a worker forever. For HTTP/2, proxies
//! or compressed bodies, put a full client in place of `client.rs`.
//!
//! # Tests and benchmark
//!
//! `cargo test -p fetch-smol` runs the conformance suite (every case the
//! other models pass). `cargo bench -- smol` runs its benchmark rows.

mod client;

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use fetch_core::{
    Cached, CancelToken, Dispatch, ErrorKind, FetchError, Model, Options, Outcome, Page, Run, parse,
};
use smol::channel::{Receiver, Sender, bounded, unbounded};
use smol::future::FutureExt as _;
use smol::lock::Semaphore;
use smol::{Executor, Task, Timer};

use crate::client::{Http, Slot};

/// The executor, its threads, and what every request shares (TLS roots, idle
/// connections, CPU permits), built once per options. Dropping it stops the
/// threads.
pub struct Client {
    executor: Arc<Executor<'static>>,
    http: Http,
    cpu: Semaphore,
    // Each executor thread runs until this sender is dropped with the client.
    _stop: Sender<()>,
}

impl Client {
    pub fn new(options: &Options) -> Self {
        let executor = Arc::new(Executor::new());
        let (stop, stopped) = bounded::<()>(1);
        // One core is the caller's while `fetch_all` runs (see its comment).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for n in 1..cores {
            let (executor, stopped) = (Arc::clone(&executor), stopped.clone());
            // `block_on` also drives the reactor whenever the executor is idle.
            let spawned = std::thread::Builder::new()
                .name(format!("fetch-smol-{n}"))
                .spawn(move || smol::block_on(executor.run(stopped.recv())));
            // Out of threads: run with the ones we have. The calling thread
            // drives the executor too while `fetch_all` runs, so fewer threads
            // make the run slower, never stuck.
            if spawned.is_err() {
                break;
            }
        }
        Client {
            http: Http::new(options, Arc::clone(&executor)),
            cpu: Semaphore::new(cores),
            executor,
            _stop: stop,
        }
    }
}

/// Fetches every URL from `urls` with at most `options.max_in_flight()` in
/// flight, handing each outcome to `on_outcome` as it finishes. Returns the
/// number of URLs read (one outcome each). `client` must be built from the
/// same options; the workers, spawned tasks, each hold a reference to it.
pub async fn fetch_all(
    client: &Arc<Client>,
    urls: &mut dyn Iterator<Item = String>,
    options: &Options,
    on_outcome: &mut dyn FnMut(Outcome),
    cancel: &CancelToken,
) -> usize {
    let run = Arc::new(Run::new(options, cancel));
    let mut dispatch = Dispatch::new(urls, on_outcome);
    let max_in_flight = options.max_in_flight();
    // Unbounded, yet never holding more than `max_in_flight` jobs or outcomes:
    // the loop below keeps no more URLs than that unfinished. A bounded
    // channel would allocate all its slots up front, which at a limit of
    // 100,000 is memory for a run that may have ten URLs.
    let (jobs, job_queue) = unbounded();
    let (done, outcomes) = unbounded();
    // What a new worker is given. Dropped once the input is exhausted, so
    // that only workers hold these ends: if every worker were gone, `recv`
    // would fail rather than wait forever.
    let mut for_workers = Some((job_queue, done));
    let mut workers: Vec<Task<()>> = Vec::new();
    // The awaiting thread runs tasks too while it waits, rather than sleeping
    // until the next outcome: one thread fewer to wake per request, and
    // progress even where the client started no threads (one core).
    let driver = async {
        let mut exhausted = false;
        loop {
            while !exhausted && dispatch.in_flight() < max_in_flight {
                let Some(job) = dispatch.next_url(&run) else {
                    exhausted = true;
                    break;
                };
                // A worker per unfinished URL, spawned when the first URL
                // needs it: every worker is busy whenever this is true.
                if let Some((job_queue, done)) = &for_workers
                    && workers.len() < dispatch.in_flight()
                {
                    let work = worker(
                        Arc::clone(&run),
                        Arc::clone(client),
                        job_queue.clone(),
                        done.clone(),
                    );
                    workers.push(client.executor.spawn(work));
                }
                // Fails only when no worker is left; `finish` reports the URL.
                exhausted = jobs.send(job).await.is_err();
            }
            if exhausted {
                // Workers finish the job in hand, find the queue closed and
                // exit, dropping their senders.
                jobs.close();
                for_workers = None;
            }
            if dispatch.in_flight() == 0 {
                break;
            }
            match outcomes.recv().await {
                Ok(outcome) => dispatch.record(outcome),
                Err(_) => break,
            }
        }
        jobs.close();
        // Every URL is reported, so the workers are idle and exit at once.
        // Waiting for them lets each hand its connection to the next run.
        for task in workers {
            task.await;
        }
    };
    client.executor.run(driver).await;
    dispatch.finish(&run)
}

/// Fetches one job after another on its own connection until the queue
/// closes. Every job gets exactly one outcome, whatever happens to it.
async fn worker(
    run: Arc<Run>,
    client: Arc<Client>,
    jobs: Receiver<(usize, String)>,
    done: Sender<Outcome>,
) {
    let (http, cpu) = (&client.http, &client.cpu);
    let slot = Slot::new(http.idle_conn());
    while let Ok((index, url)) = jobs.recv().await {
        let started = Instant::now();
        let attempts = AtomicU32::new(0);
        // A panic in hyper, rustls or the CPU stage costs this URL, not the
        // worker (nor the URLs it would fetch next). AssertUnwindSafe: what
        // the panic interrupts is dropped with the future, and a connection
        // left mid-response is never reused (see client.rs).
        let guarded = async {
            AssertUnwindSafe(fetch_one(&run, http, &slot, cpu, &attempts, &url))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(FetchError::from_panic(panic.as_ref())))
        };
        // The deadline or a cancel ends the URL wherever it is: in connect, a
        // body read, a backoff sleep or the parse. Dropping the losing future
        // closes its connection.
        let result = guarded.or(async { Err(stopped(&run).await) }).await;
        let attempts = attempts.load(Ordering::Relaxed);
        let outcome = run.outcome(index, &url, attempts, started, result);
        if done.send(outcome).await.is_err() {
            break;
        }
    }
    if let Some(conn) = slot.into_inner().ok().flatten() {
        http.keep_idle(conn);
    }
}

/// One URL: the attempts (through fetch-core's retry loop), then the CPU stage.
async fn fetch_one(
    run: &Arc<Run>,
    http: &Http,
    slot: &Slot,
    cpu: &Semaphore,
    attempts: &AtomicU32,
    url: &str,
) -> Result<Page, FetchError> {
    let options = run.options();
    // The attempt count lives outside the loop because the deadline race may
    // drop the loop before it returns its own.
    let (_, fetched) = run
        .with_retries(
            move |budget| {
                attempts.fetch_add(1, Ordering::Relaxed);
                http.attempt(slot, url, budget, options)
            },
            |delay| async move {
                Timer::after(delay).await;
            },
        )
        .await;
    let fetched = fetched?;
    // The CPU stage leaves the executor threads (below) when there is a CPU stage. Without one (parsing off, no
    // extra work) the record is built in place: the hop would cost a
    // cross-thread wake-up per page, which a profile at 0 ms latency showed
    // as a fifth of the CPU time, to move nanoseconds of work.
    if !run.options().has_cpu_stage() {
        let content_type = fetched.content_type.as_deref();
        return Ok(parse::page(
            fetched.status,
            &fetched.body,
            content_type,
            run.options(),
        ));
    }
    let run = Arc::clone(run);
    // Parsing takes milliseconds of CPU. A 5 ms parse on an executor thread
    // is 5 ms in which no other task there reads its socket or sees its timer
    // fire: a few in a row and responses sit unread and timeouts fire late.
    // But `unblock`'s pool is sized for blocking I/O: it grows to hundreds of
    // threads when hundreds of jobs queue, and hundreds of parsing threads
    // starve the executor threads just the same (the OS shares the cores
    // among all of them). So only as many parses as cores go to it at once.
    let _permit = cpu.acquire().await;
    smol::unblock(move || {
        panic::catch_unwind(AssertUnwindSafe(|| {
            let content_type = fetched.content_type.as_deref();
            parse::page(fetched.status, &fetched.body, content_type, run.options())
        }))
        .map_err(|panic| FetchError::from_panic(panic.as_ref()))
    })
    .await
}

/// Completes when the run is past its deadline or cancelled, with the reason.
async fn stopped(run: &Run) -> FetchError {
    let deadline = async {
        run.deadline().map_or_else(Timer::never, Timer::at).await;
    };
    deadline.or(run.cancel_token().cancelled()).await;
    // Either race arm ending means a stop reason holds; the fallback is only
    // there so no path can panic.
    run.stop_reason()
        .unwrap_or_else(|| FetchError::new(ErrorKind::Deadline, "global deadline passed"))
}

/// The smol model, for the CLI, the benches and the conformance suite. It
/// keeps its executor, threads and idle connections between runs with the
/// same options.
#[derive(Default)]
pub struct Smol {
    client: Cached<Client>,
}

impl Smol {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Model for Smol {
    fn name(&self) -> &'static str {
        "smol"
    }

    fn run_iter(
        &self,
        urls: &mut dyn Iterator<Item = String>,
        options: &Options,
        on_outcome: &mut dyn FnMut(Outcome),
        cancel: &CancelToken,
    ) -> usize {
        let client = self.client.get_or_build(options, Client::new);
        smol::block_on(fetch_all(&client, urls, options, on_outcome, cancel))
    }
}
