//! The legacy row: async-std tasks and the surf client, `max_in_flight` URLs at a time.
//!
//! **Status.** async-std is discontinued and its authors point to smol
//! (RUSTSEC-2025-0052). surf's last release is 2.3.2, from 2021, and it is
//! flagged unmaintained (RUSTSEC-2025-0036, filed again as RUSTSEC-2026-0169).
//! This crate is the comparison's legacy row and a migration guide to
//! `fetch-smol` (the same model on maintained crates), not a recommendation.
//!
//! # How it works
//!
//! `fetch_all`, `block_on`'d on the calling thread, pulls a URL from
//! `Dispatch::next_url` only while fewer than `max_in_flight` tasks run, and
//! spawns one task per URL with `async_std::task::spawn`. The waiting happens
//! in async-std's reactor (an async-io thread on epoll), which wakes a task
//! when its socket or timer is ready; the global executor (a thread per core)
//! schedules the tasks. Each task races its URL against cancel and the
//! deadline, bounds each attempt with async-std's timer, sleeps between
//! retries on it, and parses on `spawn_blocking`.
//!
//! surf 2.3.2 and its http-client 6.5 leave four things to the caller:
//! - **The pool takes back dirty connections**, whatever state their response
//!   was left in: after a timeout or an unread body, every later request on
//!   that connection fails. So each slot owns its own client ([`Clients`]),
//!   and a failed attempt replaces it.
//! - **No connect timeout**: only the request and the response head are
//!   timed. One `async_std::future::timeout` around the whole attempt
//!   (connect, TLS, head, body) enforces the attempt's budget.
//! - **Redirects**: surf's `Redirect` middleware sends the final request twice
//!   and returns the last 3xx when it runs out, so `attempt` follows them.
//! - **Default headers**: `Config`'s headers (User-Agent, Accept-Encoding)
//!   are not sent with a `Request` handed to `Client::send`, so `attempt`
//!   copies them onto each request.
//!
//! # When to choose this
//!
//! Not for new code. Read it if you maintain an async-std/surf codebase: for
//! what the stack costs next to the others, what to fix while you are still on
//! it (above), and how each piece maps to smol.
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
//! # Migrating to smol
//!
//! | async-std / surf | smol world (`fetch-smol`) |
//! |---|---|
//! | `task::block_on` | `smol::block_on` |
//! | `task::spawn` (dropping the handle detaches) | `smol::spawn` (dropping the `Task` cancels it) |
//! | `task::spawn_blocking` | `smol::unblock` (the `blocking` crate) |
//! | `future::timeout`, `task::sleep` | a race with `smol::Timer::after` (`futures_lite::FutureExt::or`) |
//! | `surf::Client`, http-client's pool | hyper 1 connections over `smol::net::TcpStream`, via smol-hyper |
//! | `async-native-tls` (OpenSSL) | futures-rustls, trusting the platform's roots |
//!
//! # Copying this crate
//!
//! Don't start a project from it: copy `fetch-smol`. To harden a surf
//! codebase you cannot move yet, lift [`Clients`], `read_body` (the cap
//! enforced while reading) and the redirect loop in `attempt`. Building needs
//! OpenSSL's headers (Debian: `pkg-config`, `libssl-dev`).
//!
//! # Tests and benchmark
//!
//! `cargo test -p fetch-async-std` runs the conformance suite, and
//! `tests/surf_workarounds.rs` for what the suite cannot see (an HTTP/1.0
//! server, the Accept-Encoding sent). `cargo bench -- async-std` runs its
//! benchmark rows; criterion 0.8 has no async-std executor, so the benches
//! drive this model through its blocking `Model::run`, which `block_on`s
//! `fetch_all`.

use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use async_std::task;
use fetch_core::{Cached, CancelToken, Dispatch, ErrorKind, FetchError, Model, Options, Outcome};
use fetch_core::{Page, Run, check_url, parse, retry};
use futures::future::{self, Either};
use futures::stream::FuturesUnordered;
use futures::{AsyncBufReadExt, FutureExt, StreamExt};
use surf::http::{Method, headers};

/// Fetches every URL from `urls`, at most `options.max_in_flight()` at a
/// time, handing each outcome to `on_outcome` as it finishes. Returns the
/// number of URLs read (one outcome each). Runs on async-std's runtime.
pub async fn fetch_all(
    clients: &Arc<Clients>,
    urls: &mut dyn Iterator<Item = String>,
    options: &Options,
    on_outcome: &mut dyn FnMut(Outcome),
    cancel: &CancelToken,
) -> usize {
    // Spawned tasks must own what they use: the run is shared through an Arc.
    let run = Arc::new(Run::new(options, cancel));
    let mut dispatch = Dispatch::new(urls, on_outcome);
    // The spawned tasks run on the executor's threads whether or not this
    // driver polls the set, which only collects finished outcomes. So the
    // stall of futures-rs issue 2387 (a `buffer_unordered` stream whose
    // futures make no progress while its consumer awaits something else)
    // cannot happen here.
    let mut running = FuturesUnordered::new();
    let mut input_done = false;
    loop {
        // The permit is taken before spawning: a URL is read only when a slot
        // is free, so memory follows `max_in_flight`, not the input's length.
        while !input_done && running.len() < options.max_in_flight() {
            match dispatch.next_url(&run) {
                Some((index, url)) => {
                    let job = fetch_url(Arc::clone(&run), Arc::clone(clients), index, url);
                    running.push(task::spawn(job));
                }
                None => input_done = true,
            }
        }
        match running.next().await {
            Some(outcome) => dispatch.record(outcome),
            None => break, // nothing in flight, nothing left to read
        }
    }
    dispatch.finish(&run)
}

/// One URL, from its first attempt to its outcome: the body of a task.
async fn fetch_url(run: Arc<Run>, clients: Arc<Clients>, index: usize, url: String) -> Outcome {
    let started = Instant::now();
    // Counted here, not taken from `with_retries`, so that a URL cut short by
    // cancel, the deadline or a panic still says how many attempts it made.
    let attempts = AtomicU32::new(0);
    // A panic in a spawned async-std task resurfaces where its JoinHandle is
    // awaited, in the driver, and would end the run: it is caught here so it
    // costs this URL alone. AssertUnwindSafe: nothing of this URL is used
    // after a panic; the client it held is dropped, never checked back in.
    let work = AssertUnwindSafe(fetch_page(&run, &clients, &url, &attempts)).catch_unwind();
    let result = match future::select(pin!(work), pin!(stopped(&run))).await {
        Either::Left((Ok(result), _)) => result,
        Either::Left((Err(panic), _)) => Err(FetchError::from_panic(panic.as_ref())),
        // Dropping the unfinished fetch drops its client and so its connection.
        Either::Right((stop, _)) => Err(stop),
    };
    let attempts = attempts.load(Ordering::Relaxed);
    run.outcome(index, &url, attempts, started, result)
}

/// Completes when the run is cancelled or its deadline passes, with why.
async fn stopped(run: &Run) -> FetchError {
    let deadline = async {
        match run.deadline() {
            Some(at) => task::sleep(at.saturating_duration_since(Instant::now())).await,
            None => future::pending().await,
        }
    };
    future::select(pin!(run.cancel_token().cancelled()), pin!(deadline)).await;
    // The token is cancelled or the deadline has passed (a timer never fires
    // early), so there is a stop reason; the fallback only avoids an unwrap.
    run.stop_reason()
        .unwrap_or_else(|| FetchError::new(ErrorKind::Deadline, "global deadline passed"))
}

/// Fetches one URL with retries, then runs the CPU stage.
async fn fetch_page(
    run: &Arc<Run>,
    clients: &Clients,
    url: &str,
    attempts: &AtomicU32,
) -> Result<Page, FetchError> {
    let options = run.options();
    // This URL's client. A std Mutex because each attempt's future reaches
    // it by reference; no lock is held across an await.
    let slot = Mutex::new(clients.checkout());
    let (_, fetched) = run
        .with_retries(
            |budget| {
                attempts.fetch_add(1, Ordering::Relaxed);
                let (client, slot) = (lock(&slot).clone(), &slot);
                async move {
                    let result = async_std::future::timeout(budget, attempt(&client, url, options))
                        .await
                        .unwrap_or_else(|_| {
                            let message = format!("no complete response within {budget:?}");
                            Err(FetchError::new(ErrorKind::Timeout, message))
                        });
                    // A failed attempt may have left its connection
                    // mid-response (see `Clients`): its slot starts afresh.
                    if result.is_err() {
                        *lock(slot) = clients.fresh();
                    }
                    result
                }
            },
            // Backoff on the runtime's timer: a thread sleep would stall an
            // executor thread and every task queued on it.
            task::sleep,
        )
        .await;
    clients.checkin(slot.into_inner().unwrap_or_else(PoisonError::into_inner));
    let (status, body, content_type) = fetched?;
    // The CPU stage leaves the executor: a 5 ms parse on one of its threads
    // (two on a 2-core machine) would hold up every task queued there, their
    // reads and their timeouts included. That is, when there is a CPU stage. Without one (parsing off, no
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
    let parse = move || parse::page(status, &body, content_type.as_deref(), run.options());
    Ok(task::spawn_blocking(parse).await)
}

/// One attempt: follows up to `max_redirects` redirects and returns the final
/// 2xx status, its body and its content type. A success has read every body
/// to its end, so it leaves its connection clean for the next request.
async fn attempt(
    client: &surf::Client,
    url: &str,
    options: &Options,
) -> Result<(u16, Vec<u8>, Option<String>), FetchError> {
    // `Client::get(&str)` panics on a malformed URL; a parsed one cannot.
    let mut url = check_url(url)?;
    let cap = options.max_body_bytes();
    for _ in 0..=options.max_redirects() {
        let mut request = surf::Request::new(Method::Get, url.clone());
        // surf documents `Config`'s headers as sent with every request, but
        // only `client.get(&str)` and its siblings add them, and those panic
        // on a malformed URL. `Client::send` of a built `Request` skips them:
        // without this loop no User-Agent went out at all.
        for (name, values) in &client.config().headers {
            request.insert_header(name, values);
        }
        let mut response = client.send(request).await.map_err(map_error)?;
        let status = u16::from(response.status());
        let header = |r: &surf::Response, name: headers::HeaderName| {
            r.header(name).map(|v| v.last().as_str().to_owned())
        };
        let location = header(&response, headers::LOCATION);
        match location {
            Some(location) if matches!(status, 301 | 302 | 303 | 307 | 308) => {
                // Read, so the connection is clean for the next hop.
                read_body(&mut response, cap).await?;
                let next = url.join(&location).map_err(|e| {
                    FetchError::new(ErrorKind::Protocol, format!("Location {location:?}: {e}"))
                })?;
                url = check_url(next.as_str())?;
            }
            _ if !(200..300).contains(&status) => {
                // The body is left unread: the failure retires the connection.
                let retry_after = header(&response, headers::RETRY_AFTER)
                    .and_then(|v| retry::parse_retry_after(&v));
                return Err(FetchError::http_status(status, retry_after));
            }
            _ => {
                let content_type = header(&response, headers::CONTENT_TYPE);
                let body = read_body(&mut response, cap).await?;
                return Ok((status, body, content_type));
            }
        }
    }
    let message = format!("more than {} redirects", options.max_redirects());
    Err(FetchError::new(ErrorKind::Redirect, message))
}

/// Reads a body to its end in the chunks the connection delivers, and stops
/// as soon as it exceeds `cap` (surf's `body_bytes()` has no cap at all).
async fn read_body(response: &mut surf::Response, cap: u64) -> Result<Vec<u8>, FetchError> {
    let too_large = || FetchError::new(ErrorKind::BodyTooLarge, format!("body over {cap} bytes"));
    let declared = response.len();
    if declared.is_some_and(|len| len as u64 > cap) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        let chunk = response.fill_buf().await.map_err(|e| map_error(e.into()))?;
        if chunk.is_empty() {
            break;
        }
        if (body.len() + chunk.len()) as u64 > cap {
            return Err(too_large());
        }
        body.extend_from_slice(chunk);
        let read = chunk.len();
        response.consume_unpin(read);
    }
    // async-h1 ends a Content-Length body quietly at the connection's end: a
    // short body means the connection closed mid-response.
    match declared {
        Some(len) if len != body.len() => Err(FetchError::new(
            ErrorKind::Protocol,
            format!("connection closed after {} of {len} body bytes", body.len()),
        )),
        _ => Ok(body),
    }
}

/// surf's errors, mapped into fetch-core's kinds. `surf::Error` (http-types'
/// error) is no `std::error::Error`; it wraps an anyhow-style cause, which is
/// an `io::Error` for socket failures and often only text otherwise.
fn map_error(err: surf::Error) -> FetchError {
    use io::ErrorKind as Io;
    let message = err.to_string();
    let pool_failure = message.contains("creating a new object");
    let tls_words = ["SSL", "TLS", "certificate", "handshake"];
    // async-h1 accepts an HTTP/1.1 response head only (decode.rs: `ensure_eq!(
    // version, 1, ..)`), and httparse reads no other version than 1.0 and
    // 1.1. Nothing changes on a second try, so this is no `protocol` error.
    if message == "Unsupported HTTP version" {
        let message = "the server answered HTTP/1.0, which surf's h1 client \
                       (async-h1) cannot read; every other model can";
        return FetchError::new(ErrorKind::Unsupported, message);
    }
    let kind = match err.downcast_ref::<io::Error>().map(io::Error::kind) {
        Some(Io::ConnectionRefused | Io::AddrNotAvailable)
        | Some(Io::HostUnreachable | Io::NetworkUnreachable) => ErrorKind::Connect,
        Some(Io::TimedOut) => ErrorKind::Timeout,
        // A failed DNS lookup (getaddrinfo) has no io::ErrorKind of its own.
        Some(_) if message.contains("failed to lookup address") => ErrorKind::Connect,
        // Reset, aborted, unexpected EOF, bad chunk framing: the connection
        // died mid-response.
        Some(_) => ErrorKind::Protocol,
        // http-client's pool reports a failed connect or TLS handshake as
        // text only (`Error::from_str(400, e.to_string())`): the type is gone.
        None if pool_failure && tls_words.iter().any(|w| message.contains(w)) => ErrorKind::Tls,
        None if pool_failure => ErrorKind::Connect,
        // async-h1's parse errors: a malformed head, or no head at all.
        None => ErrorKind::Protocol,
    };
    FetchError::new(kind, message)
}

/// One `surf::Client` per slot, built from one configuration.
///
/// Why not one shared client: http-client's pool takes a connection back
/// whatever state its response was left in. A slot's client is used by one
/// task at a time and keeps one connection per host, so a slot whose attempt
/// failed drops its client, closing that connection, and touches no one
/// else's. Clients that end clean wait here, connections open, for the next
/// URL or run. (Across many hosts, each keeps one idle connection per host
/// it has seen: http-client closes idle connections only when they fail.)
pub struct Clients {
    config: surf::Config,
    idle: Mutex<Vec<surf::Client>>,
}

impl Clients {
    pub fn new(options: &Options) -> Self {
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
            // Our timeout covers the whole attempt; surf's would cover less.
            .set_timeout(None)
            .set_max_connections_per_host(1)
            // A GET is one small write, then a wait: Nagle only delays it.
            .set_tcp_no_delay(true)
            .set_tls_config(Some(Arc::new(tls)));
        Clients {
            config,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn fresh(&self) -> surf::Client {
        // With the h1 client, building a surf client cannot fail (Infallible).
        let Ok(client) = surf::Client::try_from(self.config.clone());
        client
    }

    fn checkout(&self) -> surf::Client {
        lock(&self.idle).pop().unwrap_or_else(|| self.fresh())
    }

    fn checkin(&self, client: surf::Client) {
        lock(&self.idle).push(client);
    }
}

/// Nothing panics while one of these locks is held (a push, a pop, a clone),
/// so a poisoned lock still holds consistent data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The async-std model, for the CLI, the benches and the conformance suite.
/// It keeps its clients between runs with the same options; async-std's
/// runtime is global and starts on first use, so there is none to keep.
#[derive(Default)]
pub struct AsyncStd {
    clients: Cached<Clients>,
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
        let clients = self.clients.get_or_build(options, Clients::new);
        task::block_on(fetch_all(&clients, urls, options, on_outcome, cancel))
    }
}
