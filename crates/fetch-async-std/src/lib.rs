//! The legacy row: one async-std task per URL in flight, on surf clients (both unmaintained).
//!
//! # How it works
//!
//! [`Model::run_iter`] blocks the calling thread on async-std's global
//! runtime running [`fetch_all`]. The waiting happens in async-std's reactor
//! (an async-io thread on epoll), which wakes a task when its socket or timer
//! is ready; the global executor (a thread per core) schedules the tasks.
//! What caps the requests in flight is the driver loop in `fetch_all`: it
//! pulls a URL and spawns its task only while fewer than `max_in_flight` run,
//! so the permit is taken before the task exists. Each task is fetch-core's
//! per-URL path (`fetch_core::fetch_one`, in fetch-core's `fetch.rs`: retries,
//! the race of each attempt against its budget and of the URL against cancel
//! and the deadline, the panic guard) on async-std's timer, with one surf
//! request per hop of an attempt; the CPU stage leaves the executor
//! for `spawn_blocking`.
//!
//! surf 2.3.2 and its http-client 6.5 leave four things to the caller:
//! - **The pool takes back dirty connections**, whatever state their response
//!   was left in: after a timeout or an unread body, every later request on
//!   that connection fails. So each attempt takes a surf client of its own
//!   from [`Client`] and gives it back only if it ends clean; a failed,
//!   timed-out or cancelled attempt drops it, and its connection with it.
//! - **No connect timeout**: only the request and the response head are
//!   timed. `fetch_one`'s race of the whole attempt (connect, TLS, head,
//!   body) against its budget, on async-std's timer, is the only timeout.
//! - **Redirects**: surf's `Redirect` middleware sends the final request twice
//!   and returns the last 3xx when it runs out. It is not used: fetch-core
//!   follows redirects for every model.
//! - **Default headers**: `Config`'s headers (User-Agent, Accept-Encoding)
//!   are not sent with a `Request` handed to `Client::send`, so `attempt`
//!   copies them onto each request.
//!
//! # When to choose this
//!
//! Not for new code (see Status below). Read it if you maintain an
//! async-std/surf codebase: for what the stack costs next to the others, what
//! to fix while you are still on it (above), and how each piece maps to smol
//! (Migrating to smol, below).
//!
//! Not for HTTP/1.0 servers (Python's `http.server`, many embedded devices):
//! async-h1, surf's h1 client, rejects every response that is not HTTP/1.1,
//! so those URLs end `unsupported` after one attempt, where every other model
//! fetches them. surf's other backends read HTTP/1.0 but change the model:
//! `curl-client` (isahc) waits on its own curl thread, not on async-std's
//! reactor, and `hyper-client` runs hyper 0.13 on tokio 0.2.
//!
//! Two costs the loopback benchmark cannot show: OpenSSL's connector builds a
//! TLS context for every handshake, and http-client resolves host names with a
//! blocking call on an executor thread. Measured on the 2-core reference VM
//! (docs/results/2026-11-24-2-core-AMD-EPYC): 96% of wrk's rate at 10 ms and
//! 100 in flight, like tokio and smol; 30-32% at 0 ms, behind tokio (39-42%)
//! and smol (39-43%).
//!
//! # Copying this crate
//!
//! `scripts/export-model async-std DIR` writes this crate and fetch-core, with
//! the conformance suite and the mock server for its tests, as a standalone
//! Cargo project (CI builds and tests each export offline).
//!
//! Don't start a project from it: copy `fetch-smol`. To harden a surf
//! codebase you cannot move yet, lift [`Client`] (a surf client per attempt,
//! dropped when it fails) and `attempt` (the default headers copied, the cap
//! enforced while reading, and the short body async-h1 does not report).
//! Your own processing of a page goes where fetch-core's CPU stage is,
//! `fetch_core::parse::page`, which `fetch_one` runs on `spawn_blocking`.
//! Building needs OpenSSL's headers (Debian: `pkg-config`, `libssl-dev`).
//!
//! # Tests and benchmark
//!
//! `cargo test -p fetch-async-std` runs the conformance suite, and
//! `tests/surf_workarounds.rs` for what the suite cannot see (an HTTP/1.0
//! server, the Accept-Encoding sent). `cargo bench -- async-std` runs its
//! benchmark rows; criterion 0.8 has no async-std executor, so the benches
//! drive this model through its blocking `Model::run`, which `block_on`s
//! `fetch_all`.
//!
//! # Status
//!
//! async-std is discontinued and its authors point to smol
//! (RUSTSEC-2025-0052). surf's last release is 2.3.2, from 2021, and it is
//! flagged unmaintained (RUSTSEC-2025-0036, filed again as RUSTSEC-2026-0169).
//! This crate is the comparison's legacy row and a migration guide to
//! `fetch-smol` (the same model on maintained crates), not a recommendation.
//!
//! # Migrating to smol
//!
//! | async-std / surf | smol world (`fetch-smol`) |
//! |---|---|
//! | `task::block_on` | `smol::block_on` |
//! | `task::spawn` (dropping the handle detaches) | `smol::spawn` (dropping the `Task` cancels it) |
//! | `task::spawn_blocking` | `smol::unblock` (the `blocking` crate) |
//! | `task::sleep` | `smol::Timer::after` |
//! | `surf::Client`, http-client's pool | hyper 1 connections over `smol::net::TcpStream`, via smol-hyper |
//! | `async-native-tls` (OpenSSL) | futures-rustls, trusting the platform's roots |

use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_std::task;
use fetch_core::response::{CappedBody, check_status};
use fetch_core::{AsyncRuntime, Cached, CancelToken, Dispatch, ErrorKind, FetchError, Fetched};
use fetch_core::{Model, Next, Options, Outcome, Run, fetch_one};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use surf::Url;
use surf::http::Method;
use surf::http::headers::{self, CONTENT_TYPE, LOCATION, RETRY_AFTER};

/// Fetches every URL from `urls` with at most `options.max_in_flight()`
/// requests in flight, handing each outcome to `on_outcome` as it finishes.
/// Returns the number of URLs read (one outcome each). Runs on async-std.
pub async fn fetch_all(
    client: &Client,
    urls: &mut dyn Iterator<Item = String>,
    options: &Options,
    on_outcome: &mut dyn FnMut(Outcome),
    cancel: &CancelToken,
) -> usize {
    // Spawned tasks own what they use ('static): the run through an Arc, and
    // a clone of the client each (Arcs inside: one shared list of idle surf
    // clients).
    let run = Arc::new(Run::new(options, cancel));
    let mut dispatch = Dispatch::new(urls, on_outcome);
    let max_in_flight = options.max_in_flight();
    // The tasks' handles, collected as they finish. The spawned tasks run on
    // the executor's threads whether or not this loop polls the set, so the
    // stall of rust-lang/futures-rs#2387 (a `buffer_unordered` stream whose
    // futures make no progress while its consumer awaits something else)
    // cannot happen here. Unlike tokio's JoinSet, dropping a handle detaches
    // its task: dropping `fetch_all` leaves the batch running to its end.
    let mut in_flight = FuturesUnordered::new();
    let mut exhausted = false;
    loop {
        // The permit is taken before spawning: a URL is read only when a slot
        // is free, so memory follows `max_in_flight`, not the input's length.
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
            // budget, so surf needs no timeout of its own.
            let work = async move {
                fetch_one(&run, &Runtime, index, url, |url, _budget| {
                    attempt(&client, url, run.options())
                })
                .await
            };
            in_flight.push(task::spawn(work));
        }
        // A panic in a task would resurface here and end the run, but
        // `fetch_one` catches panics: each task returns its URL's outcome.
        match in_flight.next().await {
            Some(outcome) => dispatch.record(outcome),
            None => break,
        }
    }
    dispatch.finish(&run)
}

/// async-std's side of the per-URL path: its timer for the budget race, the
/// backoff and the deadline, and its blocking pool for the CPU stage.
struct Runtime;

impl AsyncRuntime for Runtime {
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        // Not `std::thread::sleep`: that would stall an executor thread and
        // every task queued on it.
        task::sleep(duration)
    }

    fn offload<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = Result<T, FetchError>> + Send {
        // The CPU stage leaves the executor: a 5 ms parse on one of its
        // threads (two on a 2-core machine) would hold up every task queued
        // there, their reads and their timeouts included.
        let job = task::spawn_blocking(work);
        // async-std's handle yields the result itself: its pool never drops
        // a job, and `work` cannot panic (fetch-core catches that inside it).
        async move {
            let joined = job.await;
            Ok(joined)
        }
    }
}

/// One request on a surf client of its own, reading the body up to the cap.
/// A success has read every body to its end, so it leaves its connection
/// clean for the next request.
async fn attempt(client: &Client, url: Url, options: &Options) -> Result<Fetched, FetchError> {
    // Given back only when the attempt ends clean (see `Client`): an error
    // returns early and drops it, and so does `fetch_one` dropping this
    // future at the budget or a cancel.
    let surf_client = client.checkout();
    // Built from a parsed `Url`: `Client::get(&str)` panics on a malformed
    // one. surf documents `Config`'s headers as sent with every request, but
    // only `get(&str)` and its siblings add them; `Client::send` of a built
    // `Request` skips them: without this loop no User-Agent went out at all.
    let mut request = surf::Request::new(Method::Get, url);
    for (name, values) in &surf_client.config().headers {
        request.insert_header(name, values);
    }
    let mut response = surf_client.send(request).await.map_err(map_error)?;
    let status = u16::from(response.status());
    let header = |name| response.header(name).map(|v| v.last().as_str());
    // A failure leaves the body unread: its connection goes with it.
    check_status(status, header(RETRY_AFTER), header(LOCATION))?;
    let content_type = header(CONTENT_TYPE).map(str::to_string);
    // Chunk by chunk as the connection delivers them: surf's `body_bytes()`
    // has no cap at all. async-h1 ends a Content-Length body quietly at the
    // connection's end: `finish` compares what was read with what was
    // announced.
    let announced = response.len().map(|len| len as u64);
    let body = CappedBody::new(options.max_body_bytes(), announced)?;
    let body = body
        .read_from(&mut response, |e| map_error(e.into()))
        .await?;
    client.checkin(surf_client);
    Ok(Fetched {
        status,
        body,
        content_type,
    })
}

/// surf's errors, mapped into fetch-core's kinds. `surf::Error` (http-types'
/// error) is no `std::error::Error`; it wraps an anyhow-style cause, which is
/// an `io::Error` for socket failures and often only text otherwise.
fn map_error(err: surf::Error) -> FetchError {
    use io::ErrorKind as Io;
    let message = err.to_string();
    // async-h1 accepts an HTTP/1.1 response head only (decode.rs: `ensure_eq!(
    // version, 1, ..)`), and httparse reads no other version than 1.0 and
    // 1.1. Nothing changes on a second try, so this is no `protocol` error.
    if message == "Unsupported HTTP version" {
        let message = "the server answered HTTP/1.0, which surf's h1 client \
                       (async-h1) cannot read; every other model can";
        return FetchError::new(ErrorKind::Unsupported, message);
    }
    let io = err.downcast_ref::<io::Error>().map(io::Error::kind);
    // http-client's pool reports a failed connect or TLS handshake as text
    // only (`Error::from_str(400, e.to_string())`): the type is gone.
    let pool_failure = message.contains("creating a new object");
    let tls_words = ["SSL", "TLS", "certificate", "handshake"];
    // Order matters: a failed TLS handshake is also a pool failure.
    let kind = if io == Some(Io::TimedOut) {
        ErrorKind::Timeout
    } else if pool_failure && tls_words.iter().any(|w| message.contains(w)) {
        ErrorKind::Tls
    } else if pool_failure
        // A failed DNS lookup (getaddrinfo) has no io::ErrorKind of its own.
        || message.contains("failed to lookup address")
        || matches!(io, Some(Io::ConnectionRefused | Io::AddrNotAvailable))
        || matches!(io, Some(Io::HostUnreachable | Io::NetworkUnreachable))
    {
        ErrorKind::Connect
    } else {
        // Reset, aborted, unexpected EOF, bad chunk framing: the connection
        // died mid-response. Or async-h1 found a malformed head, or none.
        ErrorKind::Protocol
    };
    FetchError::new(kind, message)
}

/// The client a run shares: one surf configuration, and the surf clients
/// that ended their last attempt clean. Clones are cheap (Arcs) and share
/// both, like reqwest's.
///
/// Why not one shared surf client: http-client's pool takes a connection
/// back whatever state its response was left in. An attempt takes a surf
/// client for itself (with one connection per host) and gives it back only
/// if it ended clean, so a failure drops that client, closing its connection,
/// and touches no one else's. At most `max_in_flight` are in use at once, so
/// at most that many are ever built; those that end clean wait here,
/// connections open, for the next URL or run. (Across many hosts, each keeps
/// one idle connection per host it has seen: http-client closes idle
/// connections only when they fail.)
#[derive(Clone)]
pub struct Client {
    config: Arc<surf::Config>,
    idle: Arc<Mutex<Vec<surf::Client>>>,
}

impl Client {
    fn checkout(&self) -> surf::Client {
        // Nothing panics while this lock is held (a pop, a push, building a
        // surf client), so a poisoned lock still holds a consistent list.
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // With the h1 client, building a surf client cannot fail (Infallible).
        idle.pop()
            .unwrap_or_else(|| match surf::Client::try_from((*self.config).clone()) {
                Ok(surf_client) => surf_client,
            })
    }

    fn checkin(&self, surf_client: surf::Client) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.push(surf_client);
    }
}

/// The client a run shares, from `options`: surf clients are built from its
/// configuration as attempts need them.
pub fn build_client(options: &Options) -> Client {
    // OpenSSL's connector trusts the system's roots; these come on top.
    let mut tls = async_native_tls::TlsConnector::new();
    for der in options.extra_roots() {
        // A root OpenSSL cannot parse is left out: hosts that needed it
        // then fail with `tls`, as with any untrusted certificate.
        if let Ok(cert) = async_native_tls::Certificate::from_der(der) {
            tls = tls.add_root_certificate(cert);
        }
    }
    // http-types takes only ASCII header values, and fetch-core's Options
    // accept only a visible-ASCII user agent, so this cannot fail.
    let config = surf::Config::new()
        .add_header(headers::USER_AGENT, options.user_agent())
        .expect("fetch-core validates the user agent as visible ASCII")
        // Nothing under surf's h1 client decodes gzip or brotli (surf's
        // `encoding` feature is about charsets), and a request without
        // Accept-Encoding lets the server pick any coding: ask for none.
        .add_header(headers::ACCEPT_ENCODING, "identity")
        .expect("a constant ASCII header value")
        // `fetch_one`'s budget covers the whole attempt; surf's would cover less.
        .set_timeout(None)
        .set_max_connections_per_host(1)
        // A GET is one small write, then a wait: Nagle only delays it.
        .set_tcp_no_delay(true)
        .set_tls_config(Some(Arc::new(tls)));
    Client {
        config: Arc::new(config),
        idle: Arc::default(),
    }
}

/// The async-std model, for the CLI, the benches and the conformance suite.
/// It keeps its client between runs with the same options; async-std's
/// runtime is global and starts on first use, so there is none to keep.
#[derive(Default)]
pub struct AsyncStd {
    client: Cached<Client>,
}

impl AsyncStd {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Model for AsyncStd {
    fn name(&self) -> &'static str {
        "async-std"
    }

    fn run_iter(
        &self,
        urls: &mut dyn Iterator<Item = String>,
        options: &Options,
        on_outcome: &mut dyn FnMut(Outcome),
        cancel: &CancelToken,
    ) -> usize {
        let client = self.client.get_or_build(options, build_client);
        task::block_on(fetch_all(&client, urls, options, on_outcome, cancel))
    }
}
