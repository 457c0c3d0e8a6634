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
//! at most `max_in_flight` are open. Each job is fetch-core's per-URL path
//! (`fetch_core::fetch_one`, in fetch-core's `fetch.rs`: retries, the race of
//! each attempt against its budget and of the URL against cancel and the
//! deadline, the panic guard) on smol's timer, with one `attempt` on the
//! worker's connection per try.
//!
//! smol has no HTTP client. What tokio users get from reqwest, `client.rs`
//! builds on hyper 1's bare `client::conn`: the pool is one connection per
//! worker (handed on to the next run's workers); TLS is futures-rustls; and
//! the connect timeout is a race with `smol::Timer`. (Redirects are
//! fetch-core's, for every model.)
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
//! `scripts/export-model smol DIR` writes this crate and fetch-core, with
//! the conformance suite and the mock server for its tests, as a standalone
//! Cargo project (CI builds and tests each export offline).
//!
//! Copy `src/lib.rs`, `src/client.rs` and the dependencies in Cargo.toml, and
//! depend on fetch-core (or copy its `fetch.rs` and what it uses). From your
//! own smol code, call `fetch_all(&client, ..).await` with a client built
//! once, `Arc::new(build_client(&options))`. Your own processing of a page
//! goes where fetch-core's CPU stage is, `fetch_core::parse::page`, which
//! `fetch_one` runs on `smol::unblock`'s pool. Keep the connect timeout in
//! `client.rs` and the per-attempt timeout (`fetch_one` races each attempt
//! against it): hyper and async-io time out nothing by themselves, and one
//! server that never answers would hold a worker forever. For HTTP/2,
//! proxies or compressed bodies, put a full client in place of `client.rs`.
//!
//! # Tests and benchmark
//!
//! `cargo test -p fetch-smol` runs the conformance suite (every case the
//! other models pass). `cargo bench -- smol` runs its benchmark rows.

mod client;

use std::error::Error;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use fetch_core::response::{CappedBody, check_status};
use fetch_core::tls::{error_chain, is_tls_failure};
use fetch_core::{AsyncRuntime, Cached, CancelToken, Dispatch, ErrorKind, FetchError, Fetched};
use fetch_core::{Model, Next, Options, Outcome, Run, fetch_one};
use futures_rustls::TlsConnector;
use http_body_util::BodyExt as _;
use hyper::body::Body as _;
use hyper::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER};
use smol::channel::{Sender, bounded, unbounded};
use smol::lock::Mutex;
use smol::{Executor, Timer};
use url::Url;

use crate::client::{Conn, Slot};

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
    let (jobs, job_queue) = unbounded::<(usize, Url)>();
    let (done, outcomes) = unbounded();
    // What a new worker is given. Dropped once the input is exhausted, so
    // that only workers hold these ends: if every worker were gone, `recv`
    // would fail rather than wait forever.
    let mut for_workers = Some((job_queue, done));
    let mut workers = Vec::new();
    let executor = &client.executor;
    // The awaiting thread runs tasks too while it waits, rather than sleeping
    // until the next outcome: one thread fewer to wake per request, and
    // progress even where the client started no threads (one core).
    let driver = async {
        let mut exhausted = false;
        loop {
            while !exhausted && dispatch.in_flight() < max_in_flight {
                let (index, url) = match dispatch.next_url(&run) {
                    Next::Url(index, url) => (index, url),
                    // Every URL read ahead is for a host at its limit: wait
                    // for an outcome, which frees a host's slot.
                    Next::Wait => break,
                    Next::End => {
                        exhausted = true;
                        // Workers finish the jobs queued, find the queue
                        // closed and exit, dropping their senders.
                        jobs.close();
                        for_workers = None;
                        break;
                    }
                };
                // A worker per unfinished URL, spawned when the first URL
                // needs it: every worker is busy whenever this is true.
                if workers.len() < dispatch.in_flight()
                    && let Some((job_queue, done)) = for_workers.clone()
                {
                    let (run, client) = (Arc::clone(&run), client.clone());
                    // Fetches one job after another on its own connection
                    // until the queue closes, then leaves the connection for
                    // the next run.
                    let work = async move {
                        let slot = client.slot().await;
                        while let Ok((index, url)) = job_queue.recv().await {
                            let outcome = fetch_one(&run, &Runtime, index, url, |url, _budget| {
                                attempt(&client, &slot, url)
                            })
                            .await;
                            // Fails only if `fetch_all` was dropped, which
                            // cancels this task anyway.
                            let _ = done.try_send(outcome);
                        }
                        client.keep_idle(slot).await;
                    };
                    workers.push(executor.spawn(work));
                }
                // Unbounded, and open: `for_workers` holds a receiver.
                let _ = jobs.try_send((index, url));
            }
            // An error once every worker has exited, which they do only
            // when the input is exhausted and their outcomes are sent, each
            // leaving its connection for the next run.
            match outcomes.recv().await {
                Ok(outcome) => dispatch.record(outcome),
                Err(_) => break,
            }
        }
    };
    executor.run(driver).await;
    dispatch.finish(&run)
}

/// smol's side of fetch-core's per-URL path.
struct Runtime;

impl AsyncRuntime for Runtime {
    async fn sleep(&self, duration: Duration) {
        Timer::after(duration).await;
    }

    /// `unblock`'s pool is sized for blocking I/O: it grows to hundreds of
    /// threads when hundreds of jobs queue, and hundreds of parsing threads
    /// would starve the executor threads (the OS shares the cores among all
    /// of them). fetch-core hands it at most one page per core.
    fn offload<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = Result<T, FetchError>> + Send {
        let job = smol::unblock(work);
        async move { Ok(job.await) }
    }
}

/// One request on the worker's connection (`client.rs`), then the status
/// and the body, frame by frame up to the cap.
async fn attempt(client: &Client, slot: &Slot, url: Url) -> Result<Fetched, FetchError> {
    let mut response = client.get(slot, &url).await?;
    let status = u16::from(response.status());
    let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
    check_status(status, header(RETRY_AFTER), header(LOCATION))?;
    let content_type = header(CONTENT_TYPE).map(str::to_string);
    let cap = client.options.max_body_bytes();
    let mut body = CappedBody::new(cap, response.size_hint().exact())?;
    while let Some(frame) = response.frame().await.transpose().map_err(map_error)? {
        // A frame is data or trailers, which are no part of the body.
        let chunk = frame.into_data().unwrap_or_default();
        body.push(&chunk)?;
    }
    let body = body.finish()?;
    Ok(Fetched {
        status,
        body,
        content_type,
    })
}

/// hyper's and the socket's errors, mapped into fetch-core's kinds. Timeouts
/// never get here (they are races: fetch-core's and the connect timeout), so
/// the error's type decides: an `io::Error` comes from connecting (refused,
/// unreachable, DNS), a `hyper::Error` from the exchange after it (reset,
/// closed early, malformed), unless rustls is in the chain of causes: `tls`.
fn map_error(err: impl Error + 'static) -> FetchError {
    let err: &(dyn Error + 'static) = &err;
    let chain = error_chain(err);
    let kind = if is_tls_failure(&chain) {
        ErrorKind::Tls
    } else if err.is::<io::Error>() {
        ErrorKind::Connect
    } else {
        ErrorKind::Protocol
    };
    // hyper's own message is often only "connection error": add the root cause.
    let root = chain[1..].last().map(|e| format!(": {e}"));
    FetchError::new(kind, format!("{err}{}", root.unwrap_or_default()))
}

/// What every request shares: the executor that runs the workers and drives
/// the connections, the TLS configuration (loading the platform's roots reads
/// files; done once per options), and the connections idle between runs.
/// Its methods, the HTTP plumbing, are in `client.rs`.
pub struct Client {
    executor: Arc<Executor<'static>>,
    /// An error (no root at all, say) fails each https URL with `tls`.
    tls: Result<TlsConnector, FetchError>,
    idle: Mutex<Vec<Conn>>,
    options: Options,
    // Each executor thread runs until this sender is dropped with the client.
    _stop: Sender<()>,
}

/// The client a run shares, on an executor run by threads of our own. Built
/// once per options and kept: dropping it stops the threads.
pub fn build_client(options: &Options) -> Client {
    let tls = fetch_core::tls::client_config(options)
        .map(|config| TlsConnector::from(Arc::new(config)))
        .map_err(|e| FetchError::new(ErrorKind::Tls, e.to_string()));
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
        executor,
        tls,
        idle: Mutex::default(),
        options: options.clone(),
        _stop: stop,
    }
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
        let client = self.client.get_or_build(options, build_client);
        smol::block_on(fetch_all(&client, urls, options, on_outcome, cancel))
    }
}
