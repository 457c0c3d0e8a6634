//! Cases for the per-host limit (`Options::max_per_host`), run against
//! several mock servers: each one listens on its own port of 127.0.0.1, so
//! each is a host of its own (a host is scheme, host and port), and each
//! counts what it sees in flight.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use fetch_core::{CancelToken, ErrorKind, Model, Outcome};
use mock_server::{FaultSet, Latency, MockConfig, MockServer};

use crate::{assert_one_per_url, build, kind, options, run, server};

/// `n` servers with the same configuration: `n` hosts.
fn hosts(n: usize, config: &MockConfig) -> Vec<MockServer> {
    (0..n).map(|_| server(config.clone())).collect()
}

/// Every page of every server hangs: it never answers.
fn hanging() -> MockConfig {
    let mut config = MockConfig::default();
    config.faults.hang = FaultSet::rate(1.0);
    config
}

/// `per_host` URLs of each server in turn: `a0 a1 .. b0 b1 .. c0 c1 ..`.
/// Grouped, not interleaved, so that a model that gives up at the first
/// full host (no look-ahead) would fetch one host at a time.
fn grouped(servers: &[MockServer], per_host: u64) -> Vec<String> {
    servers.iter().flat_map(|s| s.page_urls(per_host)).collect()
}

/// Case: the per-host limit is respected and used. Three hosts, their URLs
/// grouped by host, 20 ms of latency, a global limit of 6 and 2 per host:
/// every server sees exactly 2 in flight at most (fewer for a model that
/// keeps fewer in flight altogether), every page is fetched, one outcome
/// per URL.
pub fn per_host_limit_is_respected_and_used(model: &dyn Model) {
    let config = MockConfig {
        latency: Latency::Fixed(Duration::from_millis(20)),
        ..MockConfig::default()
    };
    let servers = hosts(3, &config);
    let urls = grouped(&servers, 12);
    let opts = build(options().max_in_flight(6).max_per_host(Some(2)));
    let outcomes = run(model, &urls, &opts);
    for o in &outcomes {
        assert!(o.is_ok(), "page {}: {:?}", o.index, o.result);
    }
    let expected = model.concurrency(&opts).min(2) as u64;
    for (n, s) in servers.iter().enumerate() {
        let stats = s.stats();
        assert_eq!(stats.total_requests, 12, "host {n}");
        assert_eq!(
            stats.max_in_flight, expected,
            "host {n}: the server's maximum in flight must equal the per-host limit"
        );
    }
}

/// Case: the global limit holds on top of the per-host one, and both are
/// used at once. Every page of three hosts hangs, so a request once started
/// stays in flight: with 2 per host (6 in all) and a global limit of 5, the
/// servers must come to 5 requests in flight together, none with more than
/// 2, and no request may start after that. Then a cancel ends the run: one
/// `cancelled` outcome per URL.
pub fn global_limit_holds_on_top_of_the_per_host_one(model: &dyn Model) {
    let servers = hosts(3, &hanging());
    let urls = grouped(&servers, 4);
    let opts = build(
        options()
            .max_in_flight(5)
            .max_per_host(Some(2))
            .request_timeout(Duration::from_secs(60))
            .retries(0),
    );
    let expected = model.concurrency(&opts).min(5) as u64;
    let in_flight = || servers.iter().map(|s| s.stats().in_flight).sum::<u64>();
    let cancel = CancelToken::new();
    let outcomes = thread::scope(|scope| {
        let fetching = scope.spawn(|| model.run(&urls, &opts, &mut |_| {}, &cancel));
        // A level that, once reached, stays: nothing ever answers. The
        // patience is for a loaded machine, not a timing assumption.
        let started = Instant::now();
        while in_flight() < expected && started.elapsed() < Duration::from_secs(20) {
            thread::sleep(Duration::from_millis(5));
        }
        let reached = in_flight();
        // Time for a model that breaks a limit to start one more request.
        thread::sleep(Duration::from_millis(200));
        let stats: Vec<_> = servers.iter().map(MockServer::stats).collect();
        cancel.cancel();
        let outcomes = fetching.join().expect("the run does not panic");
        assert_eq!(reached, expected, "requests in flight together");
        let total: u64 = stats.iter().map(|s| s.total_requests).sum();
        assert_eq!(total, expected, "no request starts past the global limit");
        for (n, s) in stats.iter().enumerate() {
            assert!(
                s.max_in_flight <= 2,
                "host {n}: {} in flight",
                s.max_in_flight
            );
        }
        outcomes
    });
    assert_one_per_url(&urls, &outcomes);
    for o in &outcomes {
        assert_eq!(kind(o), Some(ErrorKind::Cancelled), "page {}", o.index);
    }
}

/// Case: a slow host does not hold up the others. The first 6 URLs are for
/// a host that never answers; with 2 per host, 2 of them hang and the other
/// 4 wait, and the dispatcher reads on past them: the 20 URLs of a second
/// host are all fetched while the first two still hang (a model without
/// look-ahead would wait for their timeouts, 10 s each). Counters, not
/// timing: when the 20th page arrives, the slow host has seen exactly 2
/// requests, both still in flight. Skipped by a model that keeps fewer than
/// 3 requests in flight (it has no slot to spare for the second host).
pub fn a_slow_host_does_not_hold_up_the_others(model: &dyn Model) {
    let opts = build(
        options()
            .max_in_flight(4)
            .max_per_host(Some(2))
            .request_timeout(Duration::from_secs(10))
            .retries(0),
    );
    if model.concurrency(&opts) < 3 {
        eprintln!(
            "skipped: {} keeps {} request(s) in flight, none to spare past a full host",
            model.name(),
            model.concurrency(&opts)
        );
        return;
    }
    let slow = server(hanging());
    let fast = server(MockConfig::default());
    let mut urls = slow.page_urls(6);
    urls.extend(fast.page_urls(20));
    let cancel = CancelToken::new();
    let fast_done = AtomicUsize::new(0);
    let slow_when_done = Cell::new(None);
    let mut on_outcome = |o: &Outcome| {
        if o.index >= 6 && o.is_ok() && fast_done.fetch_add(1, Ordering::SeqCst) + 1 == 20 {
            slow_when_done.set(Some(slow.stats()));
            cancel.cancel();
        }
    };
    let outcomes = model.run(&urls, &opts, &mut on_outcome, &cancel);
    assert_one_per_url(&urls, &outcomes);
    for o in &outcomes[6..] {
        assert!(
            o.is_ok(),
            "page {} of the fast host: {:?}",
            o.index,
            o.result
        );
    }
    let slow_stats = slow_when_done
        .take()
        .expect("every page of the fast host arrived");
    assert_eq!(
        (slow_stats.total_requests, slow_stats.in_flight),
        (2, 2),
        "the slow host when the fast one was done: requests made, in flight"
    );
    for o in &outcomes[..6] {
        assert_eq!(kind(o), Some(ErrorKind::Cancelled), "page {}", o.index);
    }
}

/// Case: URLs held back for a full host cost memory proportional to the
/// concurrency, not to the input. One host, one request at a time, 300
/// URLs: the model never has more URLs read and unreported than C in
/// flight plus fetch-core's `look_ahead` (plus the one being handed out),
/// every page is fetched once, and the server never sees two at once.
pub fn urls_held_back_are_bounded(model: &dyn Model) {
    let srv = server(MockConfig::default());
    let opts = build(options().max_in_flight(4).max_per_host(Some(1)));
    let bound = model.concurrency(&opts) + fetch_core::look_ahead(&opts) + 1;
    let n = 300;
    let (pulled, reported, most_ahead) = (Cell::new(0usize), Cell::new(0usize), Cell::new(0));
    let mut urls = (0..n).map(|id| {
        pulled.set(pulled.get() + 1);
        most_ahead.set(most_ahead.get().max(pulled.get() - reported.get()));
        srv.page_url(id as u64)
    });
    let read = model.run_iter(
        &mut urls,
        &opts,
        &mut |o| {
            reported.set(reported.get() + 1);
            assert!(o.is_ok(), "page {}: {:?}", o.index, o.result);
        },
        &CancelToken::new(),
    );
    assert_eq!((read, reported.get()), (n, n));
    assert!(
        most_ahead.get() <= bound,
        "the model read {} URLs ahead of its outcomes (bound {bound})",
        most_ahead.get()
    );
    let stats = srv.stats();
    assert_eq!((stats.total_requests, stats.max_in_flight), (n as u64, 1));
}

/// The gaps between the starts of consecutive requests to `srv`, from the
/// server's own timestamps, in milliseconds, from the `from`th request on.
fn gaps_ms(srv: &MockServer, from: usize) -> Vec<f64> {
    let mut starts = srv.stats().request_starts_us;
    starts.sort_unstable();
    let gaps = starts.windows(2).map(|w| (w[1] - w[0]) as f64 / 1000.0);
    gaps.skip(from.saturating_sub(1)).collect()
}

/// How much closer together than the client's turns the server may see two
/// requests start: the pace spaces the turns, and the time from a turn to
/// the server's handler differs between two requests (a new connection, a
/// thread descheduled on a loaded machine). Generous: the lower bounds below
/// still sit far above what a model that ignores the pace shows (gaps of a
/// few milliseconds).
const MARGIN_MS: f64 = 80.0;

/// Case: a delay between requests to one host (`Options::host_delay`,
/// Scrapy's `DOWNLOAD_DELAY`, jittered 0.5 to 1.5 times as
/// `RANDOMIZE_DOWNLOAD_DELAY` does). Two hosts, 5 URLs each, all in flight
/// at once: each server sees its requests start at least half the delay
/// apart (the jitter's lower bound, less a margin), whatever the model.
/// Lower bounds only: a sleep never ends early, so this cannot flake.
pub fn a_delay_spaces_the_requests_to_a_host(model: &dyn Model) {
    let delay = Duration::from_millis(400);
    let servers = hosts(2, &MockConfig::default());
    let urls = grouped(&servers, 5);
    let opts = build(options().max_in_flight(10).host_delay(delay));
    let outcomes = run(model, &urls, &opts);
    for o in &outcomes {
        assert!(o.is_ok(), "page {}: {:?}", o.index, o.result);
    }
    let least = delay.as_secs_f64() * 1000.0 * 0.5 - MARGIN_MS;
    for (n, srv) in servers.iter().enumerate() {
        let gaps = gaps_ms(srv, 1);
        assert_eq!(gaps.len(), 4, "host {n}: five requests");
        for gap in &gaps {
            assert!(
                *gap >= least,
                "host {n}: a gap of {gap} ms, below {least} ms: {gaps:?}"
            );
        }
    }
}

/// Case: a `Retry-After` on a 429 holds its whole host back, not only its
/// own URL. One host, one URL at a time, a delay of 1 ms (which turns the
/// pacing on): the first URL gets a 429 asking for 1 s (and is not retried);
/// the next URL may not start before that second has passed.
pub fn retry_after_holds_the_host_back(model: &dyn Model) {
    let srv = server(MockConfig::default());
    let mut urls = srv.page_urls(3);
    urls[0] = format!("{}/page/0?status=429&retry_after=1", srv.base_url());
    let opts = build(
        options()
            .max_in_flight(4)
            .max_per_host(Some(1))
            .host_delay(Duration::from_millis(1))
            .retries(0),
    );
    let outcomes = run(model, &urls, &opts);
    assert_eq!(
        (kind(&outcomes[0]), outcomes[0].attempts),
        (Some(ErrorKind::HttpStatus), 1),
        "{:?}",
        outcomes[0].result
    );
    assert!(outcomes[1..].iter().all(Outcome::is_ok));
    let gaps = gaps_ms(&srv, 1);
    assert!(
        gaps[0] >= 1000.0 - MARGIN_MS,
        "the host was asked again {} ms after its 429 asked for 1 s",
        gaps[0]
    );
}

/// Case: AutoThrottle (Scrapy's algorithm) follows the host's latency. The
/// host takes 400 ms per page and AutoThrottle starts at 10 ms: once a
/// response has come back, the host's delay is at least its latency (the
/// target delay is latency / target concurrency, and the new delay is at
/// least the target), so every request after the first C starts at least
/// half of 400 ms after the one before it (the jitter's lower bound). Before
/// any response, the first C start 10 ms or so apart.
pub fn auto_throttle_follows_the_latency(model: &dyn Model) {
    let srv = server(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(400)),
        ..MockConfig::default()
    });
    let urls = srv.page_urls(5);
    let auto = fetch_core::AutoThrottle {
        start_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(2),
        target_concurrency: 1.0,
    };
    let opts = build(options().max_in_flight(2).auto_throttle(Some(auto)));
    let c = model.concurrency(&opts);
    let outcomes = run(model, &urls, &opts);
    for o in &outcomes {
        assert!(o.is_ok(), "page {}: {:?}", o.index, o.result);
    }
    let least = 400.0 * 0.5 - MARGIN_MS;
    let gaps = gaps_ms(&srv, c);
    assert_eq!(gaps.len(), 5 - c, "the gaps after the first {c}");
    for gap in &gaps {
        assert!(
            *gap >= least,
            "a gap of {gap} ms, below {least} ms: {gaps:?}"
        );
    }
}
