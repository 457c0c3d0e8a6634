//! The counters tests assert on, and the guard that keeps `in_flight` exact.
//!
//! Tests compare these numbers with `==`, so each one has a precise meaning
//! (see the README) and is updated at one place only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use hyper::HeaderMap;
use hyper::header::{ACCEPT_ENCODING, HeaderValue, USER_AGENT};
use serde::Serialize;

/// A snapshot of the server's counters, from [`crate::MockServer::stats`] or `GET /__stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Requests per page id, counted when a `/page/{id}` request starts.
    pub requests_per_id: BTreeMap<u64, u64>,
    /// Requests for `/robots.txt`, counted when they start (and in
    /// `total_requests`).
    pub robots_requests: u64,
    /// Every request on any path except `/__stats`, counted when it starts.
    pub total_requests: u64,
    /// Requests started and not yet finished (see the README for "finished").
    pub in_flight: u64,
    /// The largest `in_flight` seen since start or the last reset.
    pub max_in_flight: u64,
    /// Requests that started and stopped being in flight without their
    /// response being completed: the client closed the connection first (it
    /// gave up, timed out, or dropped the request), a `hang` ended, a `reset`
    /// cut the body, or the server shut down. Counted when the request stops
    /// being in flight, so `total_requests - in_flight - unfinished` is the
    /// number of responses completed.
    pub unfinished: u64,
    /// TCP connections accepted (for TLS too: counted before the handshake).
    pub connections: u64,
    /// Response body bytes handed to hyper for sending (excluding `/__stats`).
    pub bytes_sent: u64,
    /// Requests per `User-Agent` value, counted with `total_requests`; `""`
    /// stands for a request without one, `"a, b"` for one that sent two.
    pub user_agents: BTreeMap<String, u64>,
    /// Requests per `Accept-Encoding` value, the same way.
    pub accept_encodings: BTreeMap<String, u64>,
    /// When each request started (counted with `total_requests`), in
    /// microseconds since the server started or its stats were last reset,
    /// in the order they started; the first [`MAX_REQUEST_STARTS`] only. For
    /// checking the gaps a client leaves between its requests to one host.
    pub request_starts_us: Vec<u64>,
}

/// How many request start times [`Stats::request_starts_us`] keeps: enough
/// for any test, and a bound on the memory of a benchmark's server.
pub const MAX_REQUEST_STARTS: usize = 10_000;

/// The live counters. Plain atomics: each is a single number updated from many
/// tasks, and `SeqCst` everywhere keeps the reasoning simple at no measurable cost
/// next to a network round trip.
#[derive(Default)]
pub(crate) struct Counters {
    total_requests: AtomicU64,
    robots_requests: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    unfinished: AtomicU64,
    connections: AtomicU64,
    bytes_sent: AtomicU64,
    // A std Mutex is right here: held for one map update, never across an `.await`.
    per_id: Mutex<HashMap<u64, u64>>,
    /// Ids whose `fail_once` 503 has been served. Separate from `per_id` so that
    /// "first request" means first request *with fail_once active*.
    fail_once_tripped: Mutex<HashSet<u64>>,
    /// (User-Agent, Accept-Encoding) per request, `""` when absent.
    headers_seen: Mutex<Headers>,
    starts: Mutex<Starts>,
}

/// The start time of each request, from `base`.
struct Starts {
    base: Instant,
    times_us: Vec<u64>,
}

impl Default for Starts {
    fn default() -> Self {
        Starts {
            base: Instant::now(),
            times_us: Vec::new(),
        }
    }
}

#[derive(Clone, Default)]
struct Headers {
    user_agents: BTreeMap<String, u64>,
    accept_encodings: BTreeMap<String, u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these locks are held; if it ever did, a counter map
    // is still valid data, so recovering from poisoning is safe.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Counters {
    pub(crate) fn connection_accepted(&self) {
        self.connections.fetch_add(1, SeqCst);
    }

    pub(crate) fn page_requested(&self, id: u64) {
        *lock(&self.per_id).entry(id).or_insert(0) += 1;
    }

    pub(crate) fn robots_requested(&self) {
        self.robots_requests.fetch_add(1, SeqCst);
    }

    pub(crate) fn add_bytes_sent(&self, n: u64) {
        self.bytes_sent.fetch_add(n, SeqCst);
    }

    /// Records the request headers that clients are asked to get right.
    pub(crate) fn headers_seen(&self, headers: &HeaderMap) {
        // Every value, so that a header sent twice shows as "a, b".
        let value = |name| {
            let values = headers.get_all(name).iter().map(HeaderValue::as_bytes);
            let values: Vec<_> = values.map(String::from_utf8_lossy).collect();
            values.join(", ")
        };
        let mut seen = lock(&self.headers_seen);
        *seen.user_agents.entry(value(USER_AGENT)).or_default() += 1;
        *seen
            .accept_encodings
            .entry(value(ACCEPT_ENCODING))
            .or_default() += 1;
    }

    /// Returns true exactly once per id (until the next reset).
    pub(crate) fn trip_fail_once(&self, id: u64) -> bool {
        lock(&self.fail_once_tripped).insert(id)
    }

    pub(crate) fn snapshot(&self) -> Stats {
        // Cloned first, so no two of these locks are ever held at once.
        let seen = lock(&self.headers_seen).clone();
        Stats {
            requests_per_id: lock(&self.per_id).iter().map(|(&k, &v)| (k, v)).collect(),
            robots_requests: self.robots_requests.load(SeqCst),
            total_requests: self.total_requests.load(SeqCst),
            in_flight: self.in_flight.load(SeqCst),
            max_in_flight: self.max_in_flight.load(SeqCst),
            unfinished: self.unfinished.load(SeqCst),
            connections: self.connections.load(SeqCst),
            bytes_sent: self.bytes_sent.load(SeqCst),
            user_agents: seen.user_agents,
            accept_encodings: seen.accept_encodings,
            request_starts_us: lock(&self.starts).times_us.clone(),
        }
    }

    fn request_started(&self) {
        let mut starts = lock(&self.starts);
        if starts.times_us.len() < MAX_REQUEST_STARTS {
            let us = starts.base.elapsed().as_micros();
            starts.times_us.push(u64::try_from(us).unwrap_or(u64::MAX));
        }
    }

    pub(crate) fn reset(&self) {
        self.total_requests.store(0, SeqCst);
        self.robots_requests.store(0, SeqCst);
        self.unfinished.store(0, SeqCst);
        self.connections.store(0, SeqCst);
        self.bytes_sent.store(0, SeqCst);
        lock(&self.per_id).clear();
        lock(&self.fail_once_tripped).clear();
        *lock(&self.headers_seen) = Headers::default();
        *lock(&self.starts) = Starts::default();
        // in_flight is a level, not a count: requests still running will still
        // decrement it, so it must not be zeroed. The maximum restarts from it.
        self.max_in_flight
            .store(self.in_flight.load(SeqCst), SeqCst);
    }
}

/// One request in flight. Created when the handler starts; `in_flight` goes down
/// exactly once, when this is dropped. The response body drops it just before it
/// yields its last data frame (or its error frame), and hyper drops it with the
/// body if the connection goes away first.
///
/// Whether the response was completed is decided by *how* it goes: through
/// [`InFlight::finish`] (the body handed over its last frame, or an empty
/// response was produced) or by a plain drop, which counts it `unfinished`.
/// A drop is the default so that every path nobody thought of (a connection
/// closed mid-latency, a handler future dropped at shutdown) counts as what it
/// is: a request that started and was never answered in full.
pub(crate) struct InFlight {
    counters: Arc<Counters>,
    finished: bool,
}

impl InFlight {
    pub(crate) fn start(counters: &Arc<Counters>) -> InFlight {
        counters.total_requests.fetch_add(1, SeqCst);
        counters.request_started();
        let now = counters.in_flight.fetch_add(1, SeqCst) + 1;
        counters.max_in_flight.fetch_max(now, SeqCst);
        InFlight {
            counters: Arc::clone(counters),
            finished: false,
        }
    }

    /// The response was completed: stop counting this request as in flight
    /// without counting it as unfinished.
    pub(crate) fn finish(mut self) {
        self.finished = true;
    }

    /// The response is complete although its body will never be polled (a
    /// `HEAD` response): the guard stays until hyper drops the body, as
    /// before, but its drop will not count it as unfinished.
    pub(crate) fn mark_finished(&mut self) {
        self.finished = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // `unfinished` first: a test that waits for `in_flight == 0` and then
        // reads `unfinished` must see this request counted.
        if !self.finished {
            self.counters.unfinished.fetch_add(1, SeqCst);
        }
        self.counters.in_flight.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_counts_and_reset_keeps_level() {
        let c = Arc::new(Counters::default());
        let a = InFlight::start(&c);
        let b = InFlight::start(&c);
        assert_eq!(c.snapshot().max_in_flight, 2);
        drop(a);
        c.reset();
        let s = c.snapshot();
        assert_eq!((s.in_flight, s.max_in_flight, s.total_requests), (1, 1, 0));
        drop(b);
        assert_eq!(c.snapshot().in_flight, 0);
        assert!(c.trip_fail_once(3));
        assert!(!c.trip_fail_once(3));
    }

    #[test]
    fn request_starts_are_kept_in_order_from_the_last_reset() {
        let c = Arc::new(Counters::default());
        InFlight::start(&c).finish();
        std::thread::sleep(std::time::Duration::from_millis(20));
        InFlight::start(&c).finish();
        let starts = c.snapshot().request_starts_us;
        assert_eq!(starts.len(), 2);
        assert!(starts[1] >= starts[0] + 20_000, "{starts:?}");
        c.reset();
        assert!(c.snapshot().request_starts_us.is_empty());
        InFlight::start(&c).finish();
        let starts = c.snapshot().request_starts_us;
        assert!(starts.len() == 1 && starts[0] < 20_000, "{starts:?}");
    }

    #[test]
    fn unfinished_counts_guards_dropped_without_finish() {
        let c = Arc::new(Counters::default());
        InFlight::start(&c).finish();
        drop(InFlight::start(&c));
        let mut head = InFlight::start(&c);
        head.mark_finished();
        drop(head);
        let s = c.snapshot();
        assert_eq!((s.total_requests, s.in_flight, s.unfinished), (3, 0, 1));
        // A request cut off after a reset counts after it: the counter is a
        // count of endings, not of the requests started since the reset.
        let late = InFlight::start(&c);
        c.reset();
        drop(late);
        let s = c.snapshot();
        assert_eq!((s.total_requests, s.in_flight, s.unfinished), (0, 0, 1));
    }
}
