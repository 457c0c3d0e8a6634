//! Event loops that each own a thread: `local` does all its I/O on one
//! current-thread tokio loop, as asyncio does; `per-core` runs one such loop
//! per core, and the loops share nothing.
//!
//! # How it works
//!
//! [`Model::run_iter`] makes the calling thread the dispatcher and gives each
//! loop a thread of its own for the run (`fetch-loop-{n}`): one for `local`,
//! one per core (`available_parallelism`) for `per-core`. A loop is a tokio
//! current-thread runtime running a `LocalSet`: one thread polls every task
//! and the reactor (epoll), so there are no workers to steal from and no
//! other thread to wake. That is asyncio's event loop, the receptionist who
//! never stands still: the waiting happens in the reactor, a task awaiting a
//! socket or a timer is parked, and the thread runs whichever task is ready.
//!
//! What caps the requests in flight is the dispatcher. In rounds, it reads a
//! URL for each free slot from `Dispatch` (the first round: the first
//! `max_in_flight`), hands each to the least-loaded loop, and sends each
//! loop its round as one batch over the loop's own channel; then it sleeps
//! until outcomes come back over one channel and takes every one waiting.
//! That hand-off is the only traffic between threads on the hot path: a
//! wake-up per loop per round, not per URL, and no work stealing, so a loop
//! keeps what it was given. A loop spawns a task per URL of its batch, all
//! before any of them runs; the scheduler then runs them in order, so a
//! large round opens all its connections before the first request goes out,
//! as load generators do (wrk connects all first). Handed out one URL at a
//! time (this file's first version), tasks started as the URLs trickled in
//! and interleaved their connects with earlier tasks' requests: at 10,000
//! in flight and 200 ms the server then never held more than 4,400
//! (`local`) or 5,300 (`per-core`) requests at once. Each task is
//! fetch-core's per-URL path (`fetch_core::fetch_one`: retries, the race of
//! each attempt against its budget and of the URL against cancel and the
//! deadline, the panic guard) on tokio's timer, with one `attempt` on a
//! connection of the loop's pool per try. A task that loses the race to a
//! cancel drops its request, and hyper closes that connection: nothing
//! waits for a server, and the loops end once their tasks have reported.
//!
//! What one thread frees you from: the tasks of a loop never run at the same
//! time, so they share the run through an `Rc` where tokio's tasks need an
//! `Arc`, and the connection pool sits in a `RefCell` where reqwest's (and
//! fetch-smol's) needs a `Mutex`. The compiler checks it: a future holding
//! an `Rc` is not `Send`, `tokio::spawn` refuses it, `spawn_local` takes it.
//! Not even a connection's driver must be `Send`: it is a local task too.
//!
//! The client is hyper's bare `client::conn`, as in oha's fast path: one
//! `SendRequest` per connection, a pool per loop (the most recently used
//! connection first; at most the loop's share of the limit kept idle), TLS
//! with tokio-rustls and fetch-core's rustls configuration, and the connect
//! timeout a race. Connections live for one run. reqwest works too, a client
//! per loop built for that loop's runtime (it passes the same conformance
//! suite), but costs more per page: at 0 ms, 100 in flight, no parsing,
//! `local` fetched 63,267 pages/s with hyper and 39,463 with reqwest,
//! `per-core` 67,040 and 48,089 (medians of 5 interleaved rounds), and the
//! client process spent 26 µs of CPU per page against 35.
//!
//! The CPU stage still leaves the loop: fetch-core's `AsyncRuntime::offload`
//! is `spawn_blocking`, at most one page per core. Parsed on the loop
//! thread, a page would hold up every request of the loop while it is
//! parsed (`fetchlab lessons cpu-on-the-reactor`), as a blocking call would
//! (`blocking-the-reactor`): with one thread, nothing else can run.
//!
//! # When to choose this
//!
//! `local`, when one thread's worth of I/O is enough, and it is a lot: in
//! the first row below its one loop fetched 70,000 pages/s, and in a
//! `fetchlab run` at 43,000 pages/s it was busy 63% of the time (15 µs of
//! CPU per page; fetch-tokio's workers: 27). You get a single-threaded
//! program: `Rc` and `RefCell`, no `Send` bounds, no locks, and tasks that
//! never run at the same time, so a bug has fewer interleavings to hide in.
//! `per-core`, when the client's own CPU is what limits, on a machine with
//! cores to spare: a load generator, a crawler at tens of thousands of pages
//! per second. The loops are not pinned to cores (the OS places them, and
//! pinning needs `sched_setaffinity`). Not `per-core` when the work is
//! uneven (a loop keeps its slow pages; there is no stealing, only the
//! dispatcher's least-loaded hand-off), nor when the CPU stage dominates:
//! the loops then compete with the parsing threads for the same cores. And
//! neither when the program already runs a multi-thread tokio runtime:
//! fetch-tokio needs no threads of its own. Measured on the project's
//! 2-core AMD EPYC VM (2026-12-03, `fetchlab compare`, medians of 5
//! interleaved rounds, the mock server on the same two cores):
//!
//! | workload | tokio | local | per-core |
//! |---|---|---|---|
//! | 0 ms, 100 in flight, no parsing | 51,892 | 69,970 | 76,277 |
//! | 0 ms, 100 in flight, parsing | 25,408 | 26,603 | 24,745 |
//! | 10 ms, 100 in flight, parsing | 9,376 | 9,428 | 9,377 |
//! | 10 ms, 1,000 in flight, no parsing | 20,404 | 24,154 | 28,599 |
//! | 10 ms, 1,000 in flight, parsing | 14,067 | 15,758 | 14,460 |
//!
//! (pages/s). At 10 ms and 100 in flight every model is at 94% of Little's
//! bound. Where one thread saturates, this machine does first: the mock
//! server needs the other core, so a second loop adds 9-18% without
//! parsing and costs 7-8% with it. At 10,000 in flight and 200 ms (parsing,
//! `fetchlab run` and `fetchlab mock` in two processes), the server held
//! 10,000 requests at once in 7 of 8 runs of `local` and 6 of 8 of
//! `per-core` (the others: 7,056 to 8,525; tokio: 2,256). At 10,000 in
//! flight and 100 ms, `local` ran with 28 threads and 257 MiB
//! (`scripts/footprint`; tokio: 22 and 283 MiB).
//!
//! In the project's dated run (docs/results/2026-12-03-2-core-AMD-EPYC,
//! `scripts/ceiling`, parsing off, each model in its own `fetchlab run`
//! process): `local` reached 96% of wrk's rate at 10 ms and C = 100 and 42-48%
//! at 0 ms; `per-core` 102% and 45-51% (tokio: 95%, 45-48%). At C = 10,000
//! held at 1 s latency, both kept exactly 10,000 requests in flight at the
//! server, in 290 and 277 MiB.
//!
//! # Copying this crate
//!
//! `scripts/export-model local DIR` writes this crate and fetch-core, with
//! the conformance suite and the mock server for its tests, as a standalone
//! Cargo project (CI builds and tests each export offline).
//!
//! Copy `src/lib.rs` and the dependencies in `Cargo.toml`, and depend on
//! fetch-core (or copy its `fetch.rs` and what it uses). `Local::new()` and
//! `Local::per_core()` are the two models; the number of loops is their only
//! difference. Without the `Model` trait, build the loops once with
//! [`Loop::new`] and call [`fetch_all`] from a thread that may block (not
//! from async code). Your own processing of a page goes where fetch-core's
//! CPU stage is, `fetch_core::parse::page`, which `fetch_one` runs on the
//! blocking pool. Keep the connect timeout and the per-attempt timeout
//! (`fetch_one` races each attempt against it): hyper times out nothing by
//! itself. For HTTP/2, proxies or compressed bodies, put reqwest in place of
//! `connect` and the pool, one client per loop.
//!
//! # Tests and benchmark
//!
//! `cargo test -p fetch-local` runs the conformance suite twice (every case
//! the other models pass): `tests/conformance.rs` for `local`,
//! `tests/conformance_per_core.rs` for `per-core`; and `tests/loops.rs`,
//! which counts the loop threads each model starts and checks that no I/O
//! leaves them. `cargo bench -- local` and `cargo bench -- per-core` run
//! their benchmark rows.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::error::Error;
use std::future::Future;
use std::io;
use std::iter;
use std::num::NonZero;
use std::rc::Rc;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use fetch_core::response::{CappedBody, check_status};
use fetch_core::tls::{error_chain, is_tls_failure};
use fetch_core::{AsyncRuntime, Cached, CancelToken, Dispatch, ErrorKind, FetchError, Fetched};
use fetch_core::{Model, Next, Options, Outcome, Run, fetch_one};
use http_body_util::{BodyExt as _, Empty};
use hyper::Request;
use hyper::body::{Body as _, Bytes};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{ACCEPT_ENCODING, CONTENT_TYPE, HOST, LOCATION, RETRY_AFTER, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::{self, LocalSet};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use url::{Origin, Position, Url};

/// One event loop, kept between runs: a current-thread runtime, and the
/// client its connections are made with. Nothing in it is shared with
/// another loop.
pub struct Loop {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

/// Fetches every URL from `urls` with at most `options.max_in_flight()`
/// requests in flight over all `loops`, handing each outcome to `on_outcome`
/// as it finishes. Returns the number of URLs read (one outcome each).
/// Blocks: the calling thread is the dispatcher, and each loop runs on a
/// thread of its own for the length of the run.
pub fn fetch_all(
    loops: &[Loop],
    urls: &mut dyn Iterator<Item = String>,
    options: &Options,
    on_outcome: &mut dyn FnMut(Outcome),
    cancel: &CancelToken,
) -> usize {
    // One Arc clone per loop, not per URL: within a loop, tasks share it
    // through an Rc (see `Loop::serve`).
    let run = Arc::new(Run::new(options, cancel));
    let mut dispatch = Dispatch::new(urls, on_outcome);
    let max_in_flight = options.max_in_flight();
    // Handing each URL to the least-loaded loop keeps every loop at or under
    // its share of the limit, so its share also bounds its idle connections.
    let share = max_in_flight.div_ceil(loops.len().max(1));
    // Outcomes come back over one std channel, tagged with their loop: the
    // dispatcher is plain blocking code, asleep in `recv` while the slots are
    // full.
    let (done, outcomes) = mpsc::channel::<(usize, Outcome)>();
    let started = thread::scope(|scope| {
        // A feed per loop: unbounded, yet never holding more than `share`
        // URLs, since no loop is handed more than that unfinished.
        let mut feeds = Vec::new();
        for (n, event_loop) in loops.iter().enumerate() {
            let (feed, jobs) = unbounded_channel();
            let (run, done) = (Arc::clone(&run), done.clone());
            let spawned = thread::Builder::new()
                .name(format!("fetch-loop-{n}"))
                .spawn_scoped(scope, move || event_loop.serve(n, run, share, jobs, done));
            // Out of threads: run with the loops that did start.
            if spawned.is_ok() {
                feeds.push(feed);
            }
        }
        if feeds.is_empty() {
            return false;
        }
        // Only the loops hold senders now: once every task has reported,
        // `recv` fails rather than wait forever.
        drop(done);
        // The requests handed to each loop and not yet reported.
        let mut in_flight = vec![0usize; feeds.len()];
        let mut exhausted = false;
        loop {
            // One round: a URL for each free slot, to the least-loaded loop
            // (the first of equals, so that a run with few URLs stays on few
            // loops and reuses their connections), one batch per loop.
            let mut batches = vec![Vec::new(); feeds.len()];
            while !exhausted && dispatch.in_flight() < max_in_flight {
                let (index, url) = match dispatch.next_url(&run) {
                    Next::Url(index, url) => (index, url),
                    // Every URL read ahead is for a host at its limit: wait
                    // for an outcome, which frees a host's slot.
                    Next::Wait => break,
                    Next::End => {
                        exhausted = true;
                        break;
                    }
                };
                let n = (0..feeds.len()).min_by_key(|&n| in_flight[n]).unwrap_or(0);
                in_flight[n] += 1;
                batches[n].push((index, url));
            }
            for (feed, batch) in feeds.iter().zip(batches) {
                // Fails only if that loop's thread is gone, which nothing in
                // `serve` can cause (tokio catches a task's panic, fetch-core
                // the URL's); `finish` would report the URLs.
                if !batch.is_empty() {
                    let _ = feed.send(batch);
                }
            }
            if exhausted {
                // A loop ends once its feed is closed and its last task has
                // finished.
                feeds.clear();
            }
            // Asleep until an outcome comes back; then every one waiting.
            let Ok(first) = outcomes.recv() else {
                // Every loop has ended, so every task it started is done.
                break;
            };
            for (n, outcome) in iter::once(first).chain(outcomes.try_iter()) {
                in_flight[n] -= 1;
                dispatch.record(outcome);
            }
        }
        true
    });
    if !started {
        let error = FetchError::new(ErrorKind::Connect, "no thread for an event loop");
        return dispatch.refuse_all(&run, &error);
    }
    dispatch.finish(&run)
}

/// What the tasks on one loop share during a run, behind an `Rc`: the
/// tasks of a loop never run at the same time, so the count need not be
/// atomic.
struct Shared {
    n: usize,
    run: Arc<Run>,
    client: Client,
    pool: Pool,
    done: mpsc::Sender<(usize, Outcome)>,
}

impl Loop {
    /// A loop's runtime and client, kept between runs.
    pub fn new(options: &Options) -> Result<Loop, FetchError> {
        // Current-thread: no worker threads and no work stealing; the thread
        // that calls `block_on` runs every task and the reactor. The blocking
        // pool (the CPU stage, DNS lookups) has threads of its own.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("fetch-offload")
            .build()
            // The OS refused an epoll instance: nothing can connect.
            .map_err(|e| FetchError::new(ErrorKind::Connect, format!("no runtime: {e}")))?;
        Ok(Loop {
            runtime,
            client: build_client(options),
        })
    }

    /// Runs this loop on the calling thread until its feed is closed and its
    /// last task has finished: a task for each URL of each batch.
    fn serve(
        &self,
        n: usize,
        run: Arc<Run>,
        share: usize,
        mut jobs: UnboundedReceiver<Vec<(usize, Url)>>,
        done: mpsc::Sender<(usize, Outcome)>,
    ) {
        let shared = Rc::new(Shared {
            n,
            run,
            client: self.client.clone(),
            pool: Pool::new(share),
            done,
        });
        let tasks = LocalSet::new();
        tasks.spawn_local(async move {
            while let Some(batch) = jobs.recv().await {
                // The whole batch is spawned before any of it runs, and the
                // loop runs its tasks in order: a large batch (the first
                // round) opens all its connections before any task, woken
                // by its socket, sends a request.
                for (index, url) in batch {
                    let shared = Rc::clone(&shared);
                    // `spawn_local`: the task holds an `Rc`, so it is not
                    // `Send`, and `tokio::spawn` would refuse it.
                    task::spawn_local(async move {
                        let outcome = fetch_one(&shared.run, &Runtime, index, url, |url, _| {
                            attempt(&shared.client, &shared.pool, url, shared.run.options())
                        })
                        .await;
                        // Fails only once the dispatcher has stopped
                        // listening, which it does after the last outcome.
                        let _ = shared.done.send((shared.n, outcome));
                    });
                }
            }
        });
        // A `LocalSet` awaited runs until every task on it is done: the URLs'
        // and the connections' (which end when the pool drops with the last
        // `Rc<Shared>`).
        self.runtime.block_on(tasks);
    }
}

/// tokio's side of the per-URL path: its timer for the budget race, the
/// backoff and the deadline, and its blocking pool for the CPU stage.
struct Runtime;

impl AsyncRuntime for Runtime {
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        // Not `std::thread::sleep`: that would stall every task on this
        // loop, not just this one.
        tokio::time::sleep(duration)
    }

    fn offload<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = Result<T, FetchError>> + Send {
        // asyncio's `run_in_executor`. Here more than anywhere: the loop is
        // one thread, so a page that takes 5 ms to parse on it holds up every
        // request of the loop, reads and timers included, for 5 ms
        // (`fetchlab lessons cpu-on-the-reactor`).
        let job = task::spawn_blocking(work);
        // `work` cannot panic (fetch-core catches that inside it): the join
        // fails only when the runtime shut down before running it.
        async move {
            let joined = job.await;
            joined.map_err(|join| FetchError::new(ErrorKind::Cancelled, join.to_string()))
        }
    }
}

/// One request on a connection from the loop's pool (or a new one), then
/// the status and the body, frame by frame up to the cap. fetch-core
/// follows redirects.
async fn attempt(
    client: &Client,
    pool: &Pool,
    url: Url,
    options: &Options,
) -> Result<Fetched, FetchError> {
    let mut conn = match pool.take(&url) {
        Some(conn) => conn,
        // Boxed: a TLS handshake's state is about 16 KB; unboxed, it would
        // sit in every task's future for its whole life.
        None => Box::pin(connect(client, &url, options)).await?,
    };
    // Err when the server closed it while idle. A close racing with our
    // request still fails it: `protocol`, which the policy retries.
    if conn.sender.ready().await.is_err() {
        conn = Box::pin(connect(client, &url, options)).await?;
    }
    let request = Request::get(&url[Position::BeforePath..Position::AfterQuery])
        .header(HOST, &url[Position::BeforeHost..Position::BeforePath])
        .header(USER_AGENT, options.user_agent())
        // Bodies are counted and parsed as received: ask for no compression.
        .header(ACCEPT_ENCODING, "identity")
        .body(Empty::new())
        .map_err(|e| FetchError::new(ErrorKind::InvalidUrl, e.to_string()))?;
    let mut response = conn.sender.send_request(request).await.map_err(map_error)?;
    let status = u16::from(response.status());
    let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
    check_status(status, header(RETRY_AFTER), header(LOCATION))?;
    let content_type = header(CONTENT_TYPE).map(str::to_string);
    // Any early return from here drops the connection with its body unread,
    // which closes it: only a connection whose response was read to the end
    // goes back to the pool.
    let mut body = CappedBody::new(options.max_body_bytes(), response.size_hint().exact())?;
    while let Some(frame) = response.frame().await.transpose().map_err(map_error)? {
        // A frame is data or trailers, which are no part of the body.
        body.push(&frame.into_data().unwrap_or_default())?;
    }
    let body = body.finish()?;
    pool.put(conn);
    Ok(Fetched {
        status,
        body,
        content_type,
    })
}

/// One keep-alive HTTP/1.1 connection: hyper's sending half. The other half,
/// the future that drives the socket, is a task of the loop; dropping this
/// ends it, which closes the socket.
struct Conn {
    origin: Origin,
    sender: SendRequest<Empty<Bytes>>,
}

/// A loop's idle connections, for one run: what reqwest's pool does, in a
/// `RefCell` where reqwest (and fetch-smol's client) need a `Mutex`. Only
/// this loop's tasks use it, one at a time, and no borrow is held across an
/// `.await`, so `borrow_mut` cannot fail. The compiler checks the first
/// half: a `RefCell` is not `Sync`, so nothing that holds a reference to it
/// can be `Send` and leave the thread.
struct Pool {
    idle: RefCell<VecDeque<Conn>>,
    /// The loop's share of the limit: at most this many kept idle.
    cap: usize,
}

impl Pool {
    fn new(cap: usize) -> Self {
        Pool {
            idle: RefCell::default(),
            cap,
        }
    }

    /// The most recently used idle connection to the URL's origin.
    fn take(&self, url: &Url) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        let origin = url.origin();
        let at = idle.iter().rposition(|conn| conn.origin == origin)?;
        idle.swap_remove_back(at)
    }

    /// Keeps a connection for the next request, closing the longest idle one
    /// when the pool is full (many hosts each used once would otherwise keep
    /// a socket each until the run ends).
    fn put(&self, conn: Conn) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() >= self.cap {
            idle.pop_front();
        }
        idle.push_back(conn);
    }
}

/// What hyper can speak HTTP/1.1 over: a TCP stream, or TLS over one. No
/// `Send` bound: the connection's task is a local one.
trait Stream: AsyncRead + AsyncWrite + Unpin {}
impl<S: AsyncRead + AsyncWrite + Unpin> Stream for S {}

/// TCP, then TLS for https, then hyper's handshake, within the connect
/// timeout; the connection's driver becomes a task of this loop.
async fn connect(client: &Client, url: &Url, options: &Options) -> Result<Conn, FetchError> {
    // `check_url` lets through only http(s) URLs with a host, so neither
    // default is used. `host_str` keeps an IPv6 literal's brackets; the
    // resolver and `ServerName` want the bare address.
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
    let port = url.port_or_known_default().unwrap_or_default();
    let connecting = async {
        // An IP address connects at once; a name is resolved on the blocking
        // pool (getaddrinfo blocks).
        let tcp = TcpStream::connect((host, port)).await.map_err(map_error)?;
        // A request is one small write; do not let Nagle hold it back.
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if url.scheme() == "https" {
            let name = ServerName::try_from(host.to_owned())
                .map_err(|e| FetchError::new(ErrorKind::Tls, e.to_string()))?;
            let tls = client.tls.as_ref().map_err(Clone::clone)?;
            Box::new(tls.connect(name, tcp).await.map_err(map_error)?)
        } else {
            Box::new(tcp)
        };
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(map_error)?;
        // Its error (a reset, say) reaches the request using the connection:
        // the task's own result goes unread.
        task::spawn_local(connection);
        Ok(Conn {
            origin: url.origin(),
            sender,
        })
    };
    let limit = options.connect_timeout();
    match tokio::time::timeout(limit, connecting).await {
        Ok(connected) => connected,
        Err(_) => Err(FetchError::new(
            ErrorKind::Timeout,
            format!("no connection within {limit:?}"),
        )),
    }
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

/// What a loop's connections are made with: hyper's `client::conn` has no
/// pool, no TLS and no timeouts, so the pool is a `Pool` per run, TLS is
/// tokio-rustls with this connector, and the connect timeout a race in
/// `connect`. Cloning it is cheap (an Arc).
#[derive(Clone)]
pub struct Client {
    /// An error (no root at all, say) fails each https URL with `tls`.
    tls: Result<TlsConnector, FetchError>,
}

/// A loop's client. The rustls configuration is built here once per loop
/// (loading the platform's roots reads files), not per connection; each
/// loop has its own, session cache included, so no lock is shared.
pub fn build_client(options: &Options) -> Client {
    // The configuration every rustls model shares: the platform's roots plus
    // `Options::extra_roots`, and a self-signed certificate the user passed
    // accepted as pinned (see fetch_core::tls).
    let tls = fetch_core::tls::client_config(options)
        .map(|config| TlsConnector::from(Arc::new(config)))
        .map_err(|e| FetchError::new(ErrorKind::Tls, e.to_string()));
    Client { tls }
}

/// `loops` loops, each with its own runtime and client.
fn engine(options: &Options, loops: usize) -> Result<Vec<Loop>, FetchError> {
    (0..loops).map(|_| Loop::new(options)).collect()
}

/// The event-loop models, for the CLI, the benches and the conformance
/// suite: [`Local::new`] is `local` (one loop), [`Local::per_core`] is
/// `per-core` (one loop per core). It keeps its loops' runtimes and clients
/// between runs with the same options. Runs at the same time on one `Local`
/// work, but share those runtimes: their loop threads then take turns at
/// each runtime's reactor, and a loop is no longer one thread.
pub struct Local {
    name: &'static str,
    loops: usize,
    engine: Cached<Result<Vec<Loop>, FetchError>>,
}

impl Local {
    /// One loop: every request of a run on one thread.
    pub fn new() -> Self {
        Local {
            name: "local",
            loops: 1,
            engine: Cached::default(),
        }
    }

    /// One loop per core, as the OS counts them (1 if it cannot say).
    pub fn per_core() -> Self {
        Local {
            name: "per-core",
            loops: thread::available_parallelism().map_or(1, NonZero::get),
            engine: Cached::default(),
        }
    }
}

impl Default for Local {
    fn default() -> Self {
        Self::new()
    }
}

impl Model for Local {
    fn name(&self) -> &'static str {
        self.name
    }

    fn run_iter(
        &self,
        urls: &mut dyn Iterator<Item = String>,
        options: &Options,
        on_outcome: &mut dyn FnMut(Outcome),
        cancel: &CancelToken,
    ) -> usize {
        let build = |options: &Options| engine(options, self.loops);
        match self.engine.get_or_build(options, build).as_ref() {
            Ok(loops) => fetch_all(loops, urls, options, on_outcome, cancel),
            // No runtime: no request, but still one outcome per URL.
            Err(error) => {
                Dispatch::new(urls, on_outcome).refuse_all(&Run::new(options, cancel), error)
            }
        }
    }
}
