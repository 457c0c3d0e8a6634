//! An event loop written by hand on mio: one thread waits on every socket at
//! once, with readiness events, a slab of keep-alive connections and a timer
//! heap, and no runtime and no futures.
//!
//! # How it works
//!
//! The waiting happens in `Poll::poll` (epoll on Linux), on the thread that
//! called [`fetch_all`]: one system call waits for every socket, for the
//! `Waker` and for the soonest timer at once. Nobody schedules but the loop
//! itself, in the order events come. There are no tasks: each URL in flight
//! is a row in a `Slab` (fetch-core's `UrlMachine`, and the connection
//! carrying its request), each connection a row in another `Slab`, whose key
//! is the mio `Token` its events carry, and each timer (an attempt's budget,
//! the connect timeout, a backoff) an entry in a `BinaryHeap`. A turn: poll,
//! with a timeout until the soonest timer; for each ready socket,
//! `Conn::ready` (`conn.rs`) connects, writes, reads and parses until the
//! kernel says `WouldBlock`; then the CPU stage's results and the name
//! lookups; then the timers that are due. What caps the requests in flight:
//! the loop pulls a URL from `Dispatch` only while fewer than `max_in_flight`
//! are in the slab; connections are reused per origin, so at most that many
//! are busy, and at most that many idle.
//!
//! The per-URL path (retries with backoff, redirects within one attempt's
//! budget, the deadline, the CPU stage, the outcome) is fetch-core's, in its
//! third flavour: `UrlMachine` (fetch-core's `machine.rs`), a state machine
//! that does no I/O. The loop calls it when an answer comes or a timer
//! fires, and it says what to do next: send a request, wait, parse, or
//! record. Off the loop go the CPU stage (one thread per core: a page parsed
//! on the loop would stall every socket for as long as it takes) and name
//! lookups (four threads: `getaddrinfo` blocks; the addresses are kept for
//! the run). Each sends its result back through a channel and rings the
//! `Waker`, and so does a cancel, through a `CancelToken::on_cancel` hook.
//!
//! What `async`/`await` and a runtime do for the other models is written
//! out here: the state of each request across its waits (`Conn`'s fields and
//! `UrlMachine`, where the compiler builds a future), interest and wake-ups
//! (tokens into a slab, where a future holds a waker), timers (a heap whose
//! entries are cancelled by forgetting their number, where a runtime has a
//! timer wheel), the end of a request that lost a race (its socket closed
//! and its timer forgotten, where a future is dropped), and the HTTP client
//! (`conn.rs`, where hyper parses). The cost is lines: this file and
//! `conn.rs` are 1,450 lines, 1,056 of them code, where the tokio model is
//! 293 (147 of code) and the smol model 464 with its `client.rs` (252 of
//! code); and fetch-core's `machine.rs` (177 lines of code) is the per-URL
//! path that the async models get from the compiler.
//!
//! # When to choose this
//!
//! When you want no runtime at all: a small dependency tree (mio, slab,
//! httparse, rustls: no tokio, no hyper, no futures), every system call and
//! every byte in plain sight, and the least work per request. Measured on the
//! project's 2-core AMD EPYC VM on 2026-12-03, a shared and noisy machine, so
//! as ratios within one run of `fetchlab compare --models tokio,smol,mio`: at
//! 0 ms latency, 32 in flight and no parse (30,000 pages, the median of 3
//! rounds; four runs), this loop fetched 1.5 to 2.2 times tokio's pages per
//! second, and 1.4 to 1.7 times smol's in three runs (0.94 in the fourth), with
//! a third to a half of tokio's user CPU (`fetchlab run` under `/usr/bin/time`:
//! 0.14 to 0.22 s for 30,000 pages, against 0.45 to 0.48 s). At 10 ms and 100
//! in flight the latency sets the pace, and the three were within noise of each
//! other (88 to 93% of the 10,000 pages/s it allows, on the quieter runs). With
//! 10,000 in flight (200 ms, 20,000 pages) the mock server saw 9,989 to 9,994
//! requests at once (tokio's: 2,800), though 6,694 on a run with the machine
//! busy. In one process with the mock, whose sockets share this VM's limit of
//! 20,000 open files, a few connections then wait in its accept queue until the
//! 30 s attempt timeout, as smol's do (31 s; tokio, which opens fewer at once,
//! 3 s). It is also how tokio works inside (its reactor is mio), so it is the
//! file to read to see what a runtime does.
//!
//! Not when the program will grow: every feature (HTTP/2, proxies, cookies,
//! compression, a second protocol) is new states and transitions written by
//! hand, and a bug in the loop ends the run, as no task boundary catches a
//! panic. Not in a program that already has a runtime (use the tokio model
//! there), and not for CPU-bound work (rayon). One thread does all the I/O:
//! past what one core can parse and encrypt, run one loop per core (the
//! `per-core` model's layout).
//!
//! In the project's dated run (docs/results/2026-12-03-2-core-AMD-EPYC,
//! `scripts/ceiling`, parsing off, each model in its own `fetchlab run`
//! process): 104% of wrk's rate at 10 ms and C = 100, 45-47% at 0 ms (tokio:
//! 95%, 45-48%; there the run's own per-record work levels the models). At
//! C = 10,000 held at 1 s latency it kept exactly 10,000 requests in flight at
//! the server in 27 MiB, where the runtime-based models took 277-344 MiB.
//!
//! # Copying this crate
//!
//! `scripts/export-model mio DIR` writes this crate and fetch-core, with
//! the conformance suite and the mock server for its tests, as a standalone
//! Cargo project (CI builds and tests each export offline).
//!
//! Copy `src/lib.rs`, `src/conn.rs` and the dependencies in `Cargo.toml`,
//! and depend on fetch-core (or copy its `machine.rs` and what it uses:
//! `retry.rs`, `response.rs`, the CPU stage of `fetch.rs`). `fetch_all`
//! blocks the calling thread, which is the loop; give it a thread of its own
//! in a program that has other work. Your own processing of a page goes
//! where fetch-core's CPU stage is, `fetch_core::parse::page`, which runs on
//! the CPU threads. Keep what nothing else does for you here: the attempt and
//! connect timers (no socket times out by itself), reading and writing until
//! `WouldBlock` (the events are edge-triggered: a byte left unread is never
//! reported again), the body cap, the cap on idle connections, and the Waker
//! (the loop checks no flag while it sleeps in `poll`). For HTTP/2, proxies
//! or compressed bodies, use a full client and another model.
//!
//! # Tests and benchmark
//!
//! `cargo test -p fetch-mio` runs the conformance suite (every case the
//! other models pass) and `tests/http1.rs` (the framings the mock server
//! never sends). `cargo bench -- mio` runs its benchmark rows.

mod conn;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use fetch_core::{Cached, CancelToken, CpuJob, Dispatch, ErrorKind, FetchError};
use fetch_core::{Model, Next, Options, Outcome, Run, Step, UrlMachine};
use mio::{Events, Poll, Token, Waker};
use rustls::ClientConfig;
use slab::Slab;
use url::{Host, Position, Url};

use crate::conn::{Conn, Failure, Progress, SCRATCH_BYTES};

/// The token of the `Waker`: a cancel, a parsed page or a resolved name
/// wakes the loop through it. Connections' tokens are their slab keys.
const WAKER: Token = Token(usize::MAX);
/// Readiness events taken per `poll`; more wait for the next turn.
const EVENTS: usize = 1024;
/// Threads for name lookups: `getaddrinfo` blocks, and on the loop's thread
/// one slow lookup would stall every socket.
const RESOLVERS: usize = 4;

/// Fetches every URL from `urls` with at most `options.max_in_flight()` in
/// flight, handing each outcome to `on_outcome` as it finishes. Returns the
/// number of URLs read (one outcome each). Blocks: the calling thread is the
/// event loop.
pub fn fetch_all(
    client: &mut Client,
    urls: &mut dyn Iterator<Item = String>,
    options: &Options,
    on_outcome: &mut dyn FnMut(Outcome),
    cancel: &CancelToken,
) -> usize {
    let run = Run::new(options, cancel);
    let mut dispatch = Dispatch::new(urls, on_outcome);
    let max_in_flight = options.max_in_flight();
    // The loop sleeps in `poll`, where no flag is ever checked: a cancel
    // from another thread wakes it through the Waker, as a socket would.
    let waker = Arc::clone(&client.waker);
    let _wake_on_cancel = cancel.on_cancel(move || {
        let _ = waker.wake();
    });
    let mut event_loop = Loop {
        client,
        run: &run,
        in_flight: Slab::new(),
        timers: BinaryHeap::new(),
        next_timer: 1,
        lookups: HashMap::new(),
        finished: Vec::new(),
    };
    let mut events = Events::with_capacity(EVENTS);
    // Connections the last run left idle may have been closed since: a look
    // at the poll, without waiting, drops them before any is reused.
    event_loop.turn(&mut events, Some(Duration::ZERO));
    let mut exhausted = false;
    loop {
        // Outcomes first, then new URLs: the input is never read further
        // ahead of the outcomes than the free slots.
        for outcome in event_loop.finished.drain(..) {
            dispatch.record(outcome);
        }
        while !exhausted && event_loop.in_flight.len() < max_in_flight {
            match dispatch.next_url(&run) {
                Next::Url(index, url) => event_loop.start(index, url),
                // Every URL read ahead is for a host at its limit: wait for
                // an outcome, which frees a host's slot.
                Next::Wait => break,
                Next::End => exhausted = true,
            }
            for outcome in event_loop.finished.drain(..) {
                dispatch.record(outcome);
            }
        }
        if exhausted && event_loop.in_flight.is_empty() {
            break;
        }
        event_loop.turn(&mut events, None);
    }
    dispatch.finish(&run)
}

/// One URL in flight: fetch-core's machine, and where the loop has put its
/// current step.
struct Fetch {
    /// Unique in the client's life: a CPU result for a URL stopped meanwhile
    /// (its slab key since reused) is recognised and dropped.
    id: u64,
    machine: UrlMachine,
    /// The connection carrying its request.
    conn: Option<usize>,
    /// The number of its armed step timer (0: none). A heap entry with
    /// another number is stale: the heap cannot remove, so a timer is
    /// disarmed by forgetting its number.
    timer: u64,
    /// The number of the connect timeout of the connection opened for it.
    connect_timer: u64,
}

/// A host name and port, as the resolver threads look them up.
type Name = (String, u16);

/// A name lookup: waiting on a resolver thread, or its addresses, kept for
/// the rest of the run (TTLs are not honoured within a run).
enum Lookup {
    Pending(Vec<Waiter>),
    Ready(Vec<SocketAddr>),
}

/// A URL waiting for a lookup, and the connect timer it armed: if that is
/// no longer its timer, the URL has moved on and the answer is not for it.
struct Waiter {
    key: usize,
    connect_timer: u64,
    url: Url,
}

/// One run's state around the client: what `async` and a runtime keep in
/// futures and wakers, kept here in plain tables.
struct Loop<'a> {
    client: &'a mut Client,
    run: &'a Run,
    in_flight: Slab<Fetch>,
    /// (when, number, URL): the soonest first.
    timers: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    next_timer: u64,
    lookups: HashMap<Name, Lookup>,
    finished: Vec<Outcome>,
}

impl Loop<'_> {
    fn start(&mut self, index: usize, url: Url) {
        let (machine, step) = UrlMachine::start(self.run, index, url);
        let id = self.client.next_id;
        self.client.next_id += 1;
        let key = self.in_flight.insert(Fetch {
            id,
            machine,
            conn: None,
            timer: 0,
            connect_timer: 0,
        });
        self.apply(key, step);
    }

    /// One turn: sleep until a socket is ready, the Waker is woken or the
    /// soonest timer is due (or `limit` has passed); then handle all of it.
    fn turn(&mut self, events: &mut Events, limit: Option<Duration>) {
        let soonest = self.timers.peek().map(|Reverse((at, ..))| *at);
        // mio rounds a timeout up to whole milliseconds, so a timer never
        // wakes the loop before it is due: no busy turns.
        let timeout = soonest.map(|at| at.saturating_duration_since(Instant::now()));
        let timeout = match (timeout, limit) {
            (Some(t), Some(l)) => Some(t.min(l)),
            (t, l) => t.or(l),
        };
        match self.client.poll.poll(events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            // Only a bug gets here (EBADF, EINVAL): end what is in flight
            // rather than spin on the same error.
            Err(e) => {
                return self.end_all(Some(FetchError::new(
                    ErrorKind::Protocol,
                    format!("poll: {e}"),
                )));
            }
        }
        for event in events.iter() {
            if event.token() != WAKER {
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                self.on_ready(event.token().0, readable);
            }
        }
        // Before anything else can start a request.
        if self.run.cancel_token().is_cancelled() {
            return self.end_all(None);
        }
        while let Ok((key, id, outcome)) = self.client.cpu.results.try_recv() {
            if self.in_flight.get(key).is_some_and(|fetch| fetch.id == id) {
                self.in_flight.remove(key);
                self.finished.push(outcome);
            }
        }
        while let Ok((lookup, result)) = self.client.resolver.results.try_recv() {
            self.on_lookup(lookup, result);
        }
        self.fire_timers();
    }

    /// Carries out a machine's step, and the steps that follow at once.
    fn apply(&mut self, key: usize, mut step: Step) {
        let run = self.run;
        loop {
            step = match step {
                Step::Request { url, budget } => {
                    self.arm(key, Instant::now() + budget, false);
                    match self.attempt(key, &url) {
                        Ok(()) => return,
                        Err(failure) => match self.detach(key) {
                            Some(machine) => machine.on_answer(run, Err(map_error(failure))),
                            None => return,
                        },
                    }
                }
                Step::Wait { until } => {
                    self.arm(key, until, false);
                    return;
                }
                Step::Cpu(job) => {
                    // The CPU stage leaves the loop: parsing here would stall
                    // every socket for as long as a page takes.
                    let Some(fetch) = self.in_flight.get_mut(key) else {
                        return;
                    };
                    fetch.timer = 0;
                    match self.client.cpu.jobs.send((key, fetch.id, job)) {
                        Ok(()) => return,
                        // Every CPU thread gone, which only dropping the
                        // client does: run it here rather than lose the URL.
                        Err(mpsc::SendError((_, _, job))) => Step::Done(job.run()),
                    }
                }
                Step::Done(outcome) => {
                    if let Some(conn) = self.in_flight.try_remove(key).and_then(|f| f.conn) {
                        self.client.close(conn);
                    }
                    return self.finished.push(outcome);
                }
            }
        }
    }

    /// One request on its way: on an idle connection to the same origin if
    /// the pool has one, else on a new one, once its name is resolved.
    fn attempt(&mut self, key: usize, url: &Url) -> Result<(), Failure> {
        let options = self.run.options();
        if let Some(conn_key) = self.client.take_idle(&url[..Position::BeforePath]) {
            // `apply` calls this for a URL in the slab.
            self.in_flight[key].conn = Some(conn_key);
            // In the pool, so in the slab.
            let conn = &mut self.client.conns[conn_key];
            conn.owner = Some(key);
            return conn.send(url, options.user_agent(), options.max_body_bytes());
        }
        let connect_timer = self.arm(key, Instant::now() + options.connect_timeout(), true);
        let port = url.port_or_known_default().unwrap_or_default();
        let name = match url.host() {
            Some(Host::Ipv4(ip)) => return self.connect(key, url, vec![(ip, port).into()]),
            Some(Host::Ipv6(ip)) => return self.connect(key, url, vec![(ip, port).into()]),
            Some(Host::Domain(name)) => (name.to_string(), port),
            // `check_url` lets no URL without a host through.
            None => return Err(Failure::Malformed("no host".into())),
        };
        let waiter = Waiter {
            key,
            connect_timer,
            url: url.clone(),
        };
        match self.lookups.get_mut(&name) {
            Some(Lookup::Ready(addrs)) => {
                let addrs = addrs.clone();
                self.connect(key, url, addrs)
            }
            Some(Lookup::Pending(waiting)) => {
                waiting.push(waiter);
                Ok(())
            }
            None => {
                let gone = |_| io::Error::other("no resolver thread");
                self.client
                    .resolver
                    .jobs
                    .send(name.clone())
                    .map_err(gone)
                    .map_err(Failure::Connect)?;
                self.lookups.insert(name, Lookup::Pending(vec![waiter]));
                Ok(())
            }
        }
    }

    /// A new connection for `key`'s request to `url`, which it queues.
    fn connect(&mut self, key: usize, url: &Url, addrs: Vec<SocketAddr>) -> Result<(), Failure> {
        let client = &mut *self.client;
        // `host_str` keeps an IPv6 literal's brackets; a server name has none.
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
        let tls = match url.scheme() {
            "https" => Some((
                client.tls.as_ref().map_err(|e| Failure::Fetch(e.clone()))?,
                host,
            )),
            _ => None,
        };
        let origin = url[..Position::BeforePath].to_string();
        let entry = client.conns.vacant_entry();
        let token = Token(entry.key());
        let mut conn = Conn::open(addrs, tls, origin, client.poll.registry(), token)?;
        conn.owner = Some(key);
        let options = self.run.options();
        conn.send(url, options.user_agent(), options.max_body_bytes())?;
        // Called for a URL in the slab (a waiter is checked first).
        self.in_flight[key].conn = Some(entry.key());
        entry.insert(conn);
        Ok(())
    }

    /// A readiness event for a connection.
    fn on_ready(&mut self, conn_key: usize, readable: bool) {
        let run = self.run;
        let client = &mut *self.client;
        // Closed earlier in this turn.
        let Some(conn) = client.conns.get_mut(conn_key) else {
            return;
        };
        let Some(key) = conn.owner else {
            if readable && !conn.still_idle(&mut client.scratch) {
                client.close_idle(conn_key);
            }
            return;
        };
        let registry = client.poll.registry();
        if let Progress::Done(result) =
            conn.ready(registry, Token(conn_key), readable, &mut client.scratch)
            && let Some(machine) = self.detach(key)
        {
            let step = machine.on_answer(run, result.map_err(map_error));
            self.apply(key, step);
        }
    }

    /// A lookup's answer, for the URLs that still wait for it.
    fn on_lookup(&mut self, name: Name, result: io::Result<Vec<SocketAddr>>) {
        let run = self.run;
        // Not pending: an answer for an earlier run, or a repeat.
        let Some(Lookup::Pending(waiting)) = self.lookups.remove(&name) else {
            return;
        };
        // A failure is not kept: a retry asks again.
        if let Ok(addrs) = &result {
            self.lookups
                .insert(name.clone(), Lookup::Ready(addrs.clone()));
        }
        for Waiter {
            key,
            connect_timer,
            url,
        } in waiting
        {
            let waits = |f: &Fetch| f.connect_timer == connect_timer && f.conn.is_none();
            if !self.in_flight.get(key).is_some_and(waits) {
                continue;
            }
            let connected = match &result {
                Ok(addrs) => self.connect(key, &url, addrs.clone()),
                Err(e) => Err(Failure::Connect(io::Error::new(
                    e.kind(),
                    format!("{}: {e}", name.0),
                ))),
            };
            if let Err(failure) = connected
                && let Some(machine) = self.detach(key)
            {
                let step = machine.on_answer(run, Err(map_error(failure)));
                self.apply(key, step);
            }
        }
    }

    /// Arms a timer for `key` (its step's, or its connect timeout), and
    /// returns its number.
    fn arm(&mut self, key: usize, at: Instant, connect: bool) -> u64 {
        let number = self.next_timer;
        self.next_timer += 1;
        if let Some(fetch) = self.in_flight.get_mut(key) {
            *(if connect {
                &mut fetch.connect_timer
            } else {
                &mut fetch.timer
            }) = number;
        }
        self.timers.push(Reverse((at, number, key)));
        // Most timers are disarmed, not fired (a request answered in time),
        // and stay in the heap until their time: past two stale entries per
        // live one, drop the stale, so the heap follows the slots.
        if self.timers.len() > 4 * self.in_flight.len() + 64 {
            let in_flight = &self.in_flight;
            self.timers.retain(|Reverse((_, number, key))| {
                let live = |f: &Fetch| f.timer == *number || f.connect_timer == *number;
                in_flight.get(*key).is_some_and(live)
            });
        }
        number
    }

    /// Fires the timers that are due.
    fn fire_timers(&mut self) {
        let run = self.run;
        let now = Instant::now();
        while let Some(&Reverse((at, number, key))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(fetch) = self.in_flight.get_mut(key) else {
                continue;
            };
            if fetch.timer == number {
                // A request's budget spent (abandoned with its connection,
                // which closes), or a backoff over.
                fetch.timer = 0;
                if let Some(machine) = self.detach(key) {
                    let step = machine.on_timer(run);
                    self.apply(key, step);
                }
            } else if fetch.connect_timer == number {
                let conns = &self.client.conns;
                let up = fetch
                    .conn
                    .and_then(|c| conns.get(c))
                    .is_some_and(Conn::is_connected);
                fetch.connect_timer = 0;
                if !up && let Some(machine) = self.detach(key) {
                    let limit = run.options().connect_timeout();
                    let step =
                        machine.on_answer(run, Err(map_error(Failure::ConnectTimeout(limit))));
                    self.apply(key, step);
                }
            }
        }
    }

    /// Takes `key`'s request off its connection (back to the pool if it can
    /// carry another, else closed) and hands back its machine to step.
    fn detach(&mut self, key: usize) -> Option<&mut UrlMachine> {
        let fetch = self.in_flight.get_mut(key)?;
        fetch.connect_timer = 0;
        if let Some(conn) = fetch.conn.take() {
            self.client.release(conn);
        }
        Some(&mut fetch.machine)
    }

    /// Ends every URL in flight: with the run's stop reason (a cancel), or
    /// with `error`. Their connections close; the idle ones stay pooled.
    fn end_all(&mut self, error: Option<FetchError>) {
        for fetch in self.in_flight.drain() {
            if let Some(conn) = fetch.conn {
                self.client.close(conn);
            }
            let mut outcome = fetch.machine.stop(self.run);
            if let Some(error) = &error {
                outcome.result = Err(error.clone());
            }
            self.finished.push(outcome);
        }
        self.timers.clear();
        self.lookups.clear();
    }
}

/// The connection's failures, mapped into fetch-core's kinds. Where it
/// failed decides, since this crate wrote every step: before the connection
/// was up is `connect`, rustls's refusal `tls`, anything after `protocol`.
fn map_error(failure: Failure) -> FetchError {
    let (kind, message) = match failure {
        Failure::Connect(e) => (ErrorKind::Connect, e.to_string()),
        Failure::ConnectTimeout(limit) => (
            ErrorKind::Timeout,
            format!("no connection within {limit:?}"),
        ),
        Failure::Tls(e) => (ErrorKind::Tls, e.to_string()),
        Failure::Io(e) => (ErrorKind::Protocol, e.to_string()),
        Failure::Malformed(why) => (ErrorKind::Protocol, why),
        Failure::Fetch(error) => return error,
    };
    FetchError::new(kind, message)
}

/// Threads that do blocking work for the loop: jobs in through a channel,
/// results back through another, and a wake-up of the loop for each.
struct Pool<J, R> {
    jobs: mpsc::Sender<J>,
    results: mpsc::Receiver<R>,
}

impl<J: Send + 'static, R: Send + 'static> Pool<J, R> {
    fn start(name: &str, threads: usize, waker: &Arc<Waker>, work: fn(J) -> R) -> io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<J>();
        let (done, results) = mpsc::channel();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let (queue, done, waker) = (Arc::clone(&queue), done.clone(), Arc::clone(waker));
            // Ends when the client, and with it `jobs`, is dropped.
            let thread = move || {
                while let Ok(job) = queue.lock().unwrap_or_else(PoisonError::into_inner).recv() {
                    if done.send(work(job)).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            };
            let spawned = thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(thread);
            // Fewer threads are slower, never stuck; none at all would be.
            if let Err(e) = spawned {
                if n == 0 {
                    return Err(e);
                }
                break;
            }
        }
        Ok(Pool { jobs, results })
    }
}

/// What runs share: the poll, the connections (busy and idle, kept between
/// runs so a benchmark's repeats do not reconnect), the TLS configuration
/// (loading the platform's roots reads files) and the helper threads.
pub struct Client {
    poll: Poll,
    waker: Arc<Waker>,
    /// An error (no root at all, say) fails each https URL with `tls`.
    tls: Result<Arc<ClientConfig>, FetchError>,
    conns: Slab<Conn>,
    /// Idle connections by origin, at most `max_in_flight` in all.
    idle: HashMap<String, Vec<usize>>,
    idle_count: usize,
    cpu: Pool<(usize, u64, CpuJob), (usize, u64, Outcome)>,
    resolver: Pool<Name, (Name, io::Result<Vec<SocketAddr>>)>,
    /// The one buffer every read goes through.
    scratch: Box<[u8]>,
    next_id: u64,
    options: Options,
}

impl Client {
    fn take_idle(&mut self, origin: &str) -> Option<usize> {
        let keys = self.idle.get_mut(origin)?;
        let key = keys.pop();
        if keys.is_empty() {
            self.idle.remove(origin);
        }
        self.idle_count -= usize::from(key.is_some());
        key
    }

    /// A connection whose request is over: pooled for its origin if it can
    /// carry another and the pool has room, else closed.
    fn release(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.owner = None;
        if !conn.reusable() || self.idle_count >= self.options.max_in_flight() {
            return self.close(key);
        }
        self.idle_count += 1;
        match self.idle.get_mut(&conn.origin) {
            Some(keys) => keys.push(key),
            None => {
                self.idle.insert(conn.origin.clone(), vec![key]);
            }
        }
    }

    /// Closes a connection: dropping the socket closes it, which also takes
    /// it out of the poll.
    fn close(&mut self, key: usize) {
        self.conns.try_remove(key);
    }

    /// Closes an idle connection the server closed (or spoke on unasked).
    fn close_idle(&mut self, key: usize) {
        let Some(conn) = self.conns.try_remove(key) else {
            return;
        };
        if let Some(keys) = self.idle.get_mut(&conn.origin) {
            let before = keys.len();
            keys.retain(|&k| k != key);
            self.idle_count -= before - keys.len();
            if keys.is_empty() {
                self.idle.remove(&conn.origin);
            }
        }
    }
}

/// The client a run uses, from `options`: the poll and its Waker, one CPU
/// thread per core, the resolver threads and the TLS configuration. Fails
/// only when the OS refuses an epoll instance or every thread.
pub fn build_client(options: &Options) -> Result<Client, FetchError> {
    let no_loop = |e: io::Error| FetchError::new(ErrorKind::Connect, format!("no event loop: {e}"));
    let poll = Poll::new().map_err(no_loop)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(no_loop)?);
    // One per core: fetch-core lets no more pages than that into the CPU
    // stage at once anyway.
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = Pool::start(
        "fetch-mio-cpu",
        cores,
        &waker,
        |(key, id, job): (usize, u64, CpuJob)| (key, id, job.run()),
    );
    let resolver = Pool::start("fetch-mio-dns", RESOLVERS, &waker, |name: Name| {
        let addrs = (name.0.as_str(), name.1)
            .to_socket_addrs()
            .map(Iterator::collect);
        (name, addrs)
    });
    let tls = fetch_core::tls::client_config(options)
        .map(Arc::new)
        .map_err(|e| FetchError::new(ErrorKind::Tls, e.to_string()));
    Ok(Client {
        poll,
        waker,
        tls,
        conns: Slab::new(),
        idle: HashMap::new(),
        idle_count: 0,
        cpu: cpu.map_err(no_loop)?,
        resolver: resolver.map_err(no_loop)?,
        scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
        next_id: 0,
        options: options.clone(),
    })
}

/// The mio model, for the CLI, the benches and the conformance suite. It
/// keeps its client (poll, threads, idle connections) between runs with the
/// same options; a run that finds it in use by another builds its own.
#[derive(Default)]
pub struct Mio {
    client: Cached<Result<Mutex<Client>, FetchError>>,
}

impl Mio {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Model for Mio {
    fn name(&self) -> &'static str {
        "mio"
    }

    fn run_iter(
        &self,
        urls: &mut dyn Iterator<Item = String>,
        options: &Options,
        on_outcome: &mut dyn FnMut(Outcome),
        cancel: &CancelToken,
    ) -> usize {
        // A panic in the loop (a bug) poisons the lock and may leave
        // connections owned by URLs that are gone: the next run builds anew.
        let usable = |client: &Result<Mutex<Client>, FetchError>| {
            client.as_ref().is_ok_and(|client| !client.is_poisoned())
        };
        let build = |options: &Options| build_client(options).map(Mutex::new);
        let client = self.client.get_unshared_or_build(options, usable, build);
        match client.as_ref() {
            Ok(client) => {
                // Unshared: nobody else holds the lock.
                let mut client = client.lock().unwrap_or_else(PoisonError::into_inner);
                fetch_all(&mut client, urls, options, on_outcome, cancel)
            }
            // No poll, no threads: no request, but still one outcome per URL.
            Err(error) => {
                Dispatch::new(urls, on_outcome).refuse_all(&Run::new(options, cancel), error)
            }
        }
    }
}
