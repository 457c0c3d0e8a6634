//! Async tasks on a tokio runtime: one task per URL in flight, all sharing
//! one reqwest client.
//!
//! # How it works
//!
//! [`Model::run_iter`] blocks the calling thread on a multi-thread tokio
//! runtime running [`fetch_all`]. The waiting happens in the runtime's reactor
//! (epoll on Linux): a task that awaits a socket or a timer is parked as a
//! small state machine, not a sleeping thread, and tokio schedules the tasks
//! that are ready onto one worker thread per core, stealing work between them.
//! What caps the requests in flight is the driver loop in `fetch_all`: it
//! pulls a URL and spawns its task only while fewer than `max_in_flight` run,
//! so the permit (asyncio's `Semaphore`) is taken before the task exists. The
//! client cannot do it: reqwest has no per-host connection cap
//! (seanmonstar/reqwest#1517), and without this loop a long list would open
//! as many sockets as the OS allows. Each task races its URL against the
//! cancel token and the deadline, and each attempt against its budget; the CPU
//! stage leaves the I/O workers for tokio's blocking pool.
//!
//! # When to choose this
//!
//! Many URLs that mostly wait: a request in flight costs a task, not a thread,
//! and timeouts and cancellation are futures you race, not flags every thread
//! must check. It is also where the ecosystem is (hyper, reqwest, axum, tonic
//! run on tokio): in a program that already has a runtime, copy this model. Not
//! when the list is short and the program is otherwise synchronous (the threads
//! model needs no runtime and no async code), not for CPU-bound work (rayon),
//! and not where build time matters: tokio, hyper, reqwest and rustls (with
//! ring's C and assembly) are a large dependency tree to compile. Measured on the
//! 2-core reference VM (docs/results/2026-11-24-2-core-AMD-EPYC): 95% of wrk's
//! rate at 10 ms and 100 in flight, 39-42% at 0 ms (the blocking models: 7-8%);
//! 10,000 in flight with 6 threads and 280 MiB; 25.5 times the article's Python
//! program on the same 12,000 pages, with 3.4 times less memory.
//!
//! # Copying this crate
//!
//! Copy `src/lib.rs` and the dependencies in `Cargo.toml`. In a program that
//! already runs tokio, call `fetch_all(&client, ..).await` with a client from
//! [`build_client`], as `examples/in_your_runtime.rs` does: [`Model::run_iter`]
//! calls `block_on`, which panics inside a runtime. Keep the per-attempt
//! timeout (reqwest sets none by default: a server that never answers would
//! hold its slot forever), the body cap, and `pool_max_idle_per_host`.
//!
//! # Tests and benchmark
//!
//! `cargo test -p fetch-tokio` runs the conformance suite (every case the
//! other models pass). `cargo bench -- tokio` runs its benchmark rows.

use std::error::Error;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fetch_core::{Cached, CancelToken, Dispatch, ErrorKind, FetchError, Model, Options, Outcome};
use fetch_core::{Page, Run, parse, retry};
use futures_util::FutureExt as _;
use reqwest::Client;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

/// How long a pooled connection may sit idle. Below the shortest keep-alive
/// timeout common servers use (5 s: Apache, Node.js): when the server closes
/// first, a request can go out on a connection whose FIN is still in flight,
/// and hyper reports "connection closed before message completed" (or a
/// reset): a `protocol` error, which fetch-core retries, costing an attempt.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Fetches every URL from `urls` with at most `options.max_in_flight()`
/// requests in flight, handing each outcome to `on_outcome` as it finishes.
/// Returns the number of URLs read (one outcome each). Runs inside tokio.
pub async fn fetch_all(
    client: &Client,
    urls: &mut dyn Iterator<Item = String>,
    options: &Options,
    on_outcome: &mut dyn FnMut(Outcome),
    cancel: &CancelToken,
) -> usize {
    // Spawned tasks own what they use ('static): the run through an Arc, and
    // a clone of the client each (an Arc inside: one shared connection pool).
    let run = Arc::new(Run::new(options, cancel));
    let mut dispatch = Dispatch::new(urls, on_outcome);
    // A JoinSet, not `stream::iter(urls).map(fetch).buffer_unordered(C)`: a
    // buffered stream polls its futures only while this loop polls it, so
    // while the loop body waits (a slow `on_outcome` or input), responses
    // sit unread and their timers run out (rust-lang/futures-rs#2387).
    // Spawned tasks run on the workers whatever this loop is doing. Dropping
    // the JoinSet aborts them: dropping `fetch_all` cancels the whole batch.
    let mut in_flight = JoinSet::new();
    let mut exhausted = false;
    loop {
        // The permit is taken before spawning. A task per URL spawned up
        // front would cost memory per URL (about 1 KB each, measured on a
        // prototype), not per slot. And awaiting each URL in turn, with no
        // spawn, would be the sequential model in async syntax.
        while !exhausted && in_flight.len() < options.max_in_flight() {
            match dispatch.next_url(&run) {
                Some((index, url)) => {
                    in_flight.spawn(url_task(client.clone(), Arc::clone(&run), index, url));
                }
                None => exhausted = true,
            }
        }
        match in_flight.join_next().await {
            Some(Ok(outcome)) => dispatch.record(outcome),
            // Only a panic or an abort: panics are caught in the task and
            // nothing aborts one, but if it happened `finish` reports the URL.
            Some(Err(_)) => {}
            None => break,
        }
    }
    dispatch.finish(&run)
}

/// One URL as one task. It always returns an outcome with the URL's index:
/// `gather(return_exceptions=True)`, made a type.
async fn url_task(client: Client, run: Arc<Run>, index: usize, url: String) -> Outcome {
    let started = Instant::now();
    // Counted here, not taken from `with_retries`, so a URL cut short by the
    // race below still reports its attempts. Atomic because a spawned future
    // must be Send; nothing contends for it.
    let attempts = AtomicU32::new(0);
    // A panic in reqwest or hyper would end the task with a JoinError that
    // does not say which URL it ran; caught here it costs this URL alone.
    // AssertUnwindSafe: nothing of the request outlives the panic.
    let work = AssertUnwindSafe(fetch_one(&run, &client, &attempts, url.trim())).catch_unwind();
    // The losing branch is dropped, and dropping a future cancels it: its
    // socket and timers go at once. `biased`: a page done in the same poll
    // as a cancel is kept.
    let result = tokio::select! {
        biased;
        caught = work => caught.unwrap_or_else(|panic| Err(FetchError::from_panic(panic.as_ref()))),
        stop = stopped(&run) => Err(stop),
    };
    let attempts = attempts.load(Ordering::Relaxed);
    run.outcome(index, &url, attempts, started, result)
}

/// The attempts (retries and backoff through fetch-core), then the CPU stage.
async fn fetch_one(
    run: &Arc<Run>,
    client: &Client,
    attempts: &AtomicU32,
    url: &str,
) -> Result<Page, FetchError> {
    let max_body = run.options().max_body_bytes();
    let attempt = |budget| {
        attempts.fetch_add(1, Ordering::Relaxed);
        // asyncio's `wait_for`: the budget covers connect, headers and body;
        // on expiry the attempt is dropped, and its connection closed.
        let timed = tokio::time::timeout(budget, fetch_body(client, url, max_body));
        timed.map(move |r| r.unwrap_or_else(|_| Err(timed_out(budget))))
    };
    // The backoff is the runtime's sleep: a thread sleep would stall every
    // task on this worker.
    let (_, fetched) = run.with_retries(attempt, tokio::time::sleep).await;
    let (status, body, content_type) = fetched?;
    // asyncio's `run_in_executor`: on a worker, a page that takes 5 ms to
    // parse holds up every task on that worker, reads and timers included,
    // for 5 ms ("blocking the event loop"). A panic there is a JoinError.
    // That is, when there is a CPU stage. Without one (parsing off, no
    // extra work) the record is built in place: the hop would cost a
    // cross-thread wake-up per page, which a profile at 0 ms latency showed
    // as a fifth of the CPU time, to move nanoseconds of work.
    if !run.options().has_cpu_stage() {
        return Ok(parse::page(
            status,
            &body,
            content_type.as_deref(),
            run.options(),
        ));
    }
    let run = Arc::clone(run);
    let page = move || parse::page(status, &body, content_type.as_deref(), run.options());
    let parsed = tokio::task::spawn_blocking(page).await;
    parsed.map_err(|join| match join.try_into_panic() {
        Ok(panic) => FetchError::from_panic(panic.as_ref()),
        Err(join) => FetchError::new(ErrorKind::Cancelled, join.to_string()),
    })
}

/// What one attempt brings back: the final status, the body, its type.
type Fetched = (u16, Vec<u8>, Option<String>);

/// One attempt, reading the body up to the cap.
async fn fetch_body(client: &Client, url: &str, max_body: u64) -> Result<Fetched, FetchError> {
    // Futures are lazy: `send()` does nothing until awaited, and a future
    // dropped unawaited never runs (they are `#[must_use]`: the compiler warns).
    let mut response = client.get(url).send().await.map_err(map_error)?;
    let status = response.status().as_u16();
    let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
    if !response.status().is_success() {
        let retry_after = header(RETRY_AFTER).and_then(retry::parse_retry_after);
        return Err(FetchError::http_status(status, retry_after));
    }
    let content_type = header(CONTENT_TYPE).map(str::to_string);
    // Chunk by chunk: an endless body costs at most the cap, and the response
    // (with its connection) is dropped as soon as the cap is passed.
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(map_error)? {
        if (body.len() + chunk.len()) as u64 > max_body {
            let message = format!("body longer than {max_body} bytes");
            return Err(FetchError::new(ErrorKind::BodyTooLarge, message));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body, content_type))
}

/// Completes when the run is cancelled or its deadline passes, with the reason.
async fn stopped(run: &Run) -> FetchError {
    let deadline = async {
        match run.deadline() {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = deadline => {}
        () = run.cancel_token().cancelled() => {}
    }
    run.stop_reason()
        .unwrap_or_else(|| FetchError::new(ErrorKind::Deadline, "global deadline passed"))
}

/// An attempt that ran out of its budget.
fn timed_out(budget: Duration) -> FetchError {
    FetchError::new(ErrorKind::Timeout, format!("no answer within {budget:?}"))
}

/// reqwest's errors, mapped into fetch-core's kinds.
fn map_error(err: reqwest::Error) -> FetchError {
    // rustls's handshake errors (an untrusted certificate) come wrapped in
    // io::Errors, whose `source()` skips the error they wrap: step into them.
    let causes: Vec<_> =
        std::iter::successors(err.source(), |&e| match e.downcast_ref::<io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn Error + 'static)),
            None => e.source(),
        })
        .collect();
    // Order matters: a connect timeout is also a connect error, and so is a
    // failed TLS handshake.
    let kind = if err.is_timeout() {
        ErrorKind::Timeout
    } else if err.is_redirect() {
        ErrorKind::Redirect
    } else if err.is_builder() {
        ErrorKind::InvalidUrl
    } else if causes.iter().any(|e| e.is::<rustls::Error>()) {
        ErrorKind::Tls
    } else if err.is_connect() {
        ErrorKind::Connect
    } else {
        // Closed or reset mid-response, or a response hyper cannot parse.
        ErrorKind::Protocol
    };
    // reqwest's own message is only "error sending request": add the root cause.
    let root = causes.last().map(|e| format!(": {e}")).unwrap_or_default();
    FetchError::new(kind, format!("{err}{root}"))
}

/// The client a run shares: clones are cheap (an Arc) and share one pool, so
/// keep-alive connections are reused across URLs. With options that
/// `OptionsBuilder` accepted, only the TLS setup can fail (an extra root that
/// does not parse, no platform roots at all).
pub fn build_client(options: &Options) -> Result<Client, FetchError> {
    // The rustls configuration every rustls model shares: the platform's
    // roots plus `Options::extra_roots`, and a self-signed certificate the
    // user passed accepted as pinned, which reqwest's own TLS options cannot
    // express (see fetch_core::tls).
    let tls = fetch_core::tls::client_config(options)
        .map_err(|e| FetchError::new(ErrorKind::Tls, e.to_string()))?;
    let max_redirects = options.max_redirects() as usize;
    Client::builder()
        .user_agent(options.user_agent())
        .connect_timeout(options.connect_timeout())
        .redirect(reqwest::redirect::Policy::limited(max_redirects))
        // An idle connection kept for each task that may want one: with fewer,
        // the surplus is closed after each response and reopened for the next.
        .pool_max_idle_per_host(options.max_in_flight())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| FetchError::new(ErrorKind::Tls, map_error(e).message()))
}

/// The runtime and the client, built and kept together: a pooled connection
/// is driven by a task on the runtime that opened it, so the client used with
/// another runtime would find its idle connections dead.
fn engine(options: &Options) -> Result<(Runtime, Client), FetchError> {
    // One worker per core (the default): workers only poll, and the waiting is
    // done by the reactor, so more threads would not wait any faster.
    // The blocking pool runs the CPU stage. Its default cap is 512 threads:
    // with a hundred pages parsed at once on two cores, tokio would start a
    // thread for each (measured: 68-242 threads at 1,000 in flight), and they
    // would only take turns on the same cores. One per core keeps the threads
    // few; parses queue instead, which is the same work in the same time.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(cores)
        .thread_name("fetch-tokio")
        .build()
        // The OS refused threads or an epoll instance: nothing can connect.
        .map_err(|e| FetchError::new(ErrorKind::Connect, format!("no runtime: {e}")))?;
    Ok((runtime, build_client(options)?))
}

/// The tokio model, for the CLI, the benches and the conformance suite. It
/// keeps its runtime and client between runs with the same options.
#[derive(Default)]
pub struct Tokio {
    engine: Cached<Result<(Runtime, Client), FetchError>>,
}

impl Tokio {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Model for Tokio {
    fn name(&self) -> &'static str {
        "tokio"
    }

    fn run_iter(
        &self,
        urls: &mut dyn Iterator<Item = String>,
        options: &Options,
        on_outcome: &mut dyn FnMut(Outcome),
        cancel: &CancelToken,
    ) -> usize {
        // The driver is not spawned: Dispatch borrows `on_outcome` and the
        // input, which need not be Send, so it runs on the calling thread
        // while the URLs' tasks run on the workers.
        match self.engine.get_or_build(options, engine).as_ref() {
            Ok((runtime, client)) => {
                runtime.block_on(fetch_all(client, urls, options, on_outcome, cancel))
            }
            // No runtime or client: no request, but still one outcome per URL.
            Err(error) => {
                let run = Run::new(options, cancel);
                let mut dispatch = Dispatch::new(urls, on_outcome);
                while let Some((index, url)) = dispatch.next_url(&run) {
                    dispatch.record(Outcome::untried(index, &url, error.clone()));
                }
                dispatch.finish(&run)
            }
        }
    }
}
