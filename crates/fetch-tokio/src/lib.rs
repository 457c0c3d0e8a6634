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
//! as many sockets as the OS allows. Each task is fetch-core's per-URL path
//! (`fetch_core::fetch_one`, in fetch-core's `fetch.rs`: retries, the race of
//! each attempt against its budget and of the URL against cancel and the
//! deadline, the panic guard) on tokio's timer, with one reqwest request per
//! attempt; the CPU stage leaves the I/O workers for tokio's blocking pool.
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
//! `scripts/export-model tokio DIR` writes this crate and fetch-core, with
//! the conformance suite and the mock server for its tests, as a standalone
//! Cargo project (CI builds and tests each export offline).
//!
//! Copy `src/lib.rs` and the dependencies in `Cargo.toml`, and depend on
//! fetch-core (or copy its `fetch.rs` and what it uses). In a program that
//! already runs tokio, call `fetch_all(&client, ..).await` with a client from
//! [`build_client`], as `examples/in_your_runtime.rs` does: [`Model::run_iter`]
//! calls `block_on`, which panics inside a runtime. Your own processing of a
//! page goes where fetch-core's CPU stage is, `fetch_core::parse::page`,
//! which `fetch_one` runs on tokio's blocking pool. Keep the per-attempt
//! timeout (reqwest sets none by default: a server that never answers would
//! hold its slot forever; `fetch_one` races each attempt against it), the
//! body cap, and `pool_max_idle_per_host`.
//!
//! # Tests and benchmark
//!
//! `cargo test -p fetch-tokio` runs the conformance suite (every case the
//! other models pass). `cargo bench -- tokio` runs its benchmark rows.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fetch_core::response::{CappedBody, check_status};
use fetch_core::tls::{error_chain, is_tls_failure};
use fetch_core::{AsyncRuntime, Cached, CancelToken, Dispatch, ErrorKind, FetchError, Fetched};
use fetch_core::{Model, Next, Options, Outcome, Run, fetch_one};
use reqwest::Client;
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER};
use tokio::task::{self, JoinSet};

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
    let max_in_flight = options.max_in_flight();
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
        while !exhausted && in_flight.len() < max_in_flight {
            let (index, url) = match dispatch.next_url(&run) {
                Next::Url(index, url) => (index, url),
                // Every URL read ahead is for a host at its limit: wait for
                // an outcome, which frees a host's slot.
                Next::Wait => break,
                Next::End => {
                    exhausted = true;
                    break;
                }
            };
            let (run, client) = (Arc::clone(&run), client.clone());
            // Futures are lazy: `attempt(..)` sends nothing until `fetch_one`
            // awaits it, and `fetch_one` races it against the attempt's
            // budget, so reqwest needs no request timeout of its own.
            let work = async move {
                fetch_one(&run, &Runtime, index, url, |url, _budget| {
                    attempt(&client, url, run.options())
                })
                .await
            };
            in_flight.spawn(work);
        }
        match in_flight.join_next().await {
            Some(Ok(outcome)) => dispatch.record(outcome),
            // Only a panic or an abort: `fetch_one` catches panics and
            // nothing aborts a task, but if it happened `finish` reports the
            // URL.
            Some(Err(_)) => {}
            None => break,
        }
    }
    dispatch.finish(&run)
}

/// tokio's side of the per-URL path: its timer for the budget race, the
/// backoff and the deadline, and its blocking pool for the CPU stage.
struct Runtime;

impl AsyncRuntime for Runtime {
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        // Not `std::thread::sleep`: that would stall every task on this
        // worker, not just this one.
        tokio::time::sleep(duration)
    }

    fn offload<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = Result<T, FetchError>> + Send {
        // asyncio's `run_in_executor`: on a worker, a page that takes 5 ms to
        // parse holds up every task on that worker, reads and timers
        // included, for 5 ms ("blocking the event loop").
        let job = task::spawn_blocking(work);
        // `work` cannot panic (fetch-core catches that inside it): the join
        // fails only when the runtime shut down before running it.
        async move {
            let joined = job.await;
            joined.map_err(|join| FetchError::new(ErrorKind::Cancelled, join.to_string()))
        }
    }
}

/// One request with the shared client, reading the body up to the cap.
/// fetch-core follows redirects (see `build_client`).
async fn attempt(client: &Client, url: Url, options: &Options) -> Result<Fetched, FetchError> {
    let mut response = client.get(url).send().await.map_err(map_error)?;
    let status = u16::from(response.status());
    let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
    check_status(status, header(RETRY_AFTER), header(LOCATION))?;
    let content_type = header(CONTENT_TYPE).map(str::to_string);
    // Chunk by chunk: an endless body costs at most the cap, and the response
    // (with its connection) is dropped as soon as the cap is passed. Its
    // length is known only for a body reqwest does not decompress.
    let mut body = CappedBody::new(options.max_body_bytes(), response.content_length())?;
    while let Some(chunk) = response.chunk().await.map_err(map_error)? {
        body.push(&chunk)?;
    }
    let body = body.finish()?;
    Ok(Fetched {
        status,
        body,
        content_type,
    })
}

/// reqwest's errors, mapped into fetch-core's kinds.
fn map_error(err: reqwest::Error) -> FetchError {
    let chain = error_chain(&err);
    // Order matters: a connect timeout is also a connect error, and so is a
    // failed TLS handshake.
    let kind = if err.is_timeout() {
        ErrorKind::Timeout
    } else if err.is_builder() {
        ErrorKind::InvalidUrl
    } else if is_tls_failure(&chain) {
        ErrorKind::Tls
    } else if err.is_connect() {
        ErrorKind::Connect
    } else {
        // Closed or reset mid-response, or a response hyper cannot parse.
        ErrorKind::Protocol
    };
    // reqwest's own message is only "error sending request": add the root cause.
    let root = chain[1..].last().map(|e| format!(": {e}"));
    FetchError::new(kind, format!("{err}{}", root.unwrap_or_default()))
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
    Client::builder()
        .user_agent(options.user_agent())
        .connect_timeout(options.connect_timeout())
        // fetch-core follows redirects, the same way for every model: reqwest
        // would resolve a bad `Location` its own way.
        .redirect(reqwest::redirect::Policy::none())
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
fn engine(options: &Options) -> Result<(tokio::runtime::Runtime, Client), FetchError> {
    // One worker per core (the default): workers only poll, and the waiting is
    // done by the reactor, so more threads would not wait any faster.
    // The blocking pool keeps tokio's default cap (512 threads). It runs the
    // CPU stage, but fetch-core lets only one page per core into that stage
    // at a time, so parses never crowd it. And it also runs reqwest's DNS
    // lookups (getaddrinfo blocks): capped at one thread per core, as it
    // used to be, a new connection's lookup would queue behind the parses.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
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
    engine: Cached<Result<(tokio::runtime::Runtime, Client), FetchError>>,
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
                Dispatch::new(urls, on_outcome).refuse_all(&Run::new(options, cancel), error)
            }
        }
    }
}
