//! The one test suite every model must pass.
//!
//! Each case starts its own mock server on `127.0.0.1:0` and checks a model
//! through the server's own counters (requests per page, maximum in flight,
//! connections), which are deterministic, rather than through wall-clock time.
//! A model crate runs the whole suite with one line in `tests/conformance.rs`:
//!
//! ```ignore
//! conformance::suite!(fetch_sequential::Sequential::new());
//! ```
//!
//! which expands to one `#[test]` per case, so `cargo test` names the case
//! that failed. A new model gets every case for free, and a new case reaches
//! every model at once.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use fetch_core::{self, Model};
pub use hosts::*;
pub use robots::*;

mod hosts;
mod robots;
use fetch_core::{CancelToken, ErrorKind, Options, OptionsBuilder, Outcome, Page};
use mock_server::{FaultSet, Latency, MockConfig, MockServer};

/// Expands to one `#[test]` per conformance case for the model `$model`
/// (an expression that builds a value implementing [`Model`]).
#[macro_export]
macro_rules! suite {
    ($model:expr) => {
        $crate::suite!(@cases $model;
            pages_match_the_reference,
            limit_is_respected_and_used,
            failures_are_isolated,
            retries_follow_the_policy,
            hanging_pages_time_out,
            global_deadline_keeps_finished_pages,
            body_cap_stops_reading,
            reset_mid_body_is_a_protocol_error,
            invalid_and_refused_urls,
            keep_alive_reuses_connections,
            cancel_stops_new_requests,
            on_outcome_once_per_url,
            https_with_trusted_root,
            panic_costs_one_url,
            urls_are_pulled_lazily,
            failures_do_not_poison_the_next_request,
            one_url_one_meaning,
            limit_far_above_the_input,
            sends_the_configured_user_agent,
            cancel_interrupts_requests_in_flight,
            https_with_pinned_self_signed_cert,
            redirects_end_the_same_way,
            a_crash_costs_the_urls_in_flight_beside_it,
            per_host_limit_is_respected_and_used,
            global_limit_holds_on_top_of_the_per_host_one,
            a_slow_host_does_not_hold_up_the_others,
            urls_held_back_are_bounded,
            a_delay_spaces_the_requests_to_a_host,
            retry_after_holds_the_host_back,
            auto_throttle_follows_the_latency,
            records_say_where_they_ended_up,
            robots_txt_is_obeyed,
            robots_txt_failures_follow_rfc_9309,
        );
    };
    (@cases $model:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let model = $model;
                $crate::$case(&model);
            }
        )*
    };
}

// ---------------------------------------------------------------- helpers

/// Options for tests: fast backoff so retries cost milliseconds, not seconds.
fn options() -> OptionsBuilder {
    Options::builder()
        .max_in_flight(8)
        .backoff(Duration::from_millis(5), Duration::from_millis(20))
        .request_timeout(Duration::from_secs(10))
}

fn build(b: OptionsBuilder) -> Options {
    b.build().expect("test options are valid")
}

fn server(config: MockConfig) -> MockServer {
    MockServer::start(config).expect("mock server starts on 127.0.0.1:0")
}

fn run(model: &dyn Model, urls: &[String], options: &Options) -> Vec<Outcome> {
    let outcomes = model.run(urls, options, &mut |_| {}, &CancelToken::new());
    assert_one_per_url(urls, &outcomes);
    outcomes
}

/// The invariant of every run: one outcome per URL, in input order, with its
/// own index and URL.
fn assert_one_per_url(urls: &[String], outcomes: &[Outcome]) {
    assert_eq!(outcomes.len(), urls.len(), "one outcome per URL");
    for (i, (o, url)) in outcomes.iter().zip(urls).enumerate() {
        assert_eq!(o.index, i, "outcomes are in input order");
        // The line as given; one over fetch-core's length cap is kept
        // truncated, with a marker.
        assert_eq!(
            o.url,
            fetch_core::shown_url(url),
            "outcome {i} carries its URL"
        );
    }
}

fn kind(o: &Outcome) -> Option<ErrorKind> {
    o.error_kind()
}

fn status(o: &Outcome) -> Option<u16> {
    o.result.as_ref().err().and_then(|e| e.status())
}

fn ids(list: &[u64]) -> FaultSet {
    FaultSet {
        ids: list.iter().copied().collect::<BTreeSet<u64>>(),
        rate: 0.0,
    }
}

/// How many threads of this process have a name starting with `prefix`,
/// read from /proc: a thread started and not yet joined counts whatever it
/// is doing. For a blocking model's own tests, which check that it starts
/// threads for the URLs it has, not for its limit (each model names its
/// threads: `fetch-{n}`, `fetch-rayon-{n}`). Linux only.
#[cfg(target_os = "linux")]
pub fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task lists this process's threads")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

// ------------------------------------------------------------------ cases

/// Case 1: Every page fetched, parsed, and equal to what the mock server served.
pub fn pages_match_the_reference(model: &dyn Model) {
    let config = MockConfig {
        links: 7,
        ..MockConfig::default()
    };
    let srv = server(config.clone());
    let urls = srv.page_urls(300);
    let outcomes = run(model, &urls, &build(options()));
    for (id, o) in outcomes.iter().enumerate() {
        let page = o
            .result
            .as_ref()
            .unwrap_or_else(|e| panic!("page {id}: {e}"));
        // The reference is what the mock server says it served, not another
        // model: the suite depends on no model crate.
        let served = mock_server::page_html(id as u64, config.links, config.body_bytes);
        let expected = Page {
            status: 200,
            bytes: served.len() as u64,
            title: Some(mock_server::page_title(id as u64)),
            links: config.links,
            final_url: urls[id].clone(),
            content_type: Some("text/html; charset=utf-8".to_string()),
            saved: None,
        };
        assert_eq!(page, &expected, "page {id}");
        assert_eq!(o.attempts, 1);
    }
    assert_eq!(srv.stats().requests_per_id.values().sum::<u64>(), 300);
}

/// Case 2: The limit is respected and used: with 20 ms of latency and many more
/// URLs than slots, the server sees exactly the promised number in flight.
pub fn limit_is_respected_and_used(model: &dyn Model) {
    let srv = server(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(20)),
        ..MockConfig::default()
    });
    let opts = build(options().max_in_flight(6));
    let expected = model.concurrency(&opts);
    let urls = srv.page_urls(expected as u64 * 8);
    let outcomes = run(model, &urls, &opts);
    assert!(outcomes.iter().all(Outcome::is_ok));
    let stats = srv.stats();
    assert_eq!(
        stats.max_in_flight, expected as u64,
        "server's maximum in flight must equal the model's limit"
    );
    assert_eq!(stats.in_flight, 0);
}

/// Case 3: A failing page fails alone, with its status; every other page succeeds.
pub fn failures_are_isolated(model: &dyn Model) {
    let mut config = MockConfig::default();
    config.faults.not_found = ids(&[3, 17]);
    config.faults.server_error = ids(&[5, 40]);
    let srv = server(config);
    let urls = srv.page_urls(60);
    let outcomes = run(model, &urls, &build(options().retries(1)));
    for o in &outcomes {
        match o.index {
            3 | 17 => assert_eq!(
                (kind(o), status(o)),
                (Some(ErrorKind::HttpStatus), Some(404))
            ),
            5 | 40 => assert_eq!(
                (kind(o), status(o)),
                (Some(ErrorKind::HttpStatus), Some(500))
            ),
            _ => assert!(o.is_ok(), "page {} should succeed: {:?}", o.index, o.result),
        }
    }
}

/// Case 4: Retries: a page that fails once succeeds on its second attempt; a 429
/// is not retried sooner than its Retry-After; exhausted retries keep the last
/// error; a 404 is not retried at all.
pub fn retries_follow_the_policy(model: &dyn Model) {
    let mut config = MockConfig::default();
    config.faults.fail_once = ids(&[2, 9]);
    config.faults.server_error = ids(&[4]);
    config.faults.not_found = ids(&[6]);
    let srv = server(config);
    let mut urls = srv.page_urls(12);
    urls[7] = format!("{}/page/7?status=429&retry_after=1", srv.base_url());
    let opts = build(options().retries(2));
    let outcomes = run(model, &urls, &opts);
    let per_id = srv.stats().requests_per_id;

    for id in [2usize, 9] {
        assert!(
            outcomes[id].is_ok(),
            "fail-once page {id}: {:?}",
            outcomes[id].result
        );
        assert_eq!(outcomes[id].attempts, 2, "fail-once page {id}");
        assert_eq!(per_id[&(id as u64)], 2);
    }
    // Always 500: three attempts (1 + 2 retries), the last error kept.
    assert_eq!(outcomes[4].attempts, 3);
    assert_eq!(status(&outcomes[4]), Some(500));
    assert_eq!(per_id[&4], 3);
    // 404 is final.
    assert_eq!(outcomes[6].attempts, 1);
    assert_eq!(per_id[&6], 1);
    // 429 with Retry-After: 1 s, against a backoff of at most 20 ms: the two
    // retries cannot both happen before 2 s have passed. A lower bound only:
    // a sleep never ends early, so this cannot flake.
    assert_eq!(outcomes[7].attempts, 3);
    assert_eq!(status(&outcomes[7]), Some(429));
    assert!(
        outcomes[7].elapsed >= Duration::from_secs(2),
        "429 retried after {:?}, sooner than Retry-After allows",
        outcomes[7].elapsed
    );
    for id in [0usize, 1, 3, 5, 8, 10, 11] {
        assert!(outcomes[id].is_ok(), "page {id}");
        assert_eq!(per_id[&(id as u64)], 1);
    }
}

/// Case 5: A page that never answers ends in `timeout` within a small multiple of
/// the timeout, and holds nobody else up.
pub fn hanging_pages_time_out(model: &dyn Model) {
    let mut config = MockConfig::default();
    config.faults.hang = ids(&[1, 6]);
    let srv = server(config);
    let urls = srv.page_urls(20);
    let timeout = Duration::from_millis(300);
    let opts = build(options().request_timeout(timeout).retries(0));
    let outcomes = run(model, &urls, &opts);
    for o in &outcomes {
        if o.index == 1 || o.index == 6 {
            assert_eq!(kind(o), Some(ErrorKind::Timeout), "page {}", o.index);
            // A generous upper bound (10x): the point is "not forever".
            assert!(o.elapsed < timeout * 10, "timed out after {:?}", o.elapsed);
        } else {
            assert!(o.is_ok(), "page {}: {:?}", o.index, o.result);
        }
    }
}

/// Case 6: The global deadline: the run ends soon after it, finished pages are
/// kept, every unfinished URL is `deadline`, and there are still N outcomes.
pub fn global_deadline_keeps_finished_pages(model: &dyn Model) {
    let mut config = MockConfig::default();
    config.faults.hang = FaultSet {
        ids: (10..40).collect(),
        rate: 0.0,
    };
    let srv = server(config);
    let urls = srv.page_urls(40);
    let deadline = Duration::from_millis(500);
    let opts = build(options().max_in_flight(4).deadline(Some(deadline)));
    let started = Instant::now();
    let outcomes = run(model, &urls, &opts);
    let took = started.elapsed();
    assert!(
        took < deadline + Duration::from_secs(5),
        "run took {took:?} after a {deadline:?} deadline"
    );
    let mut ok = 0;
    for o in &outcomes {
        match kind(o) {
            None => ok += 1,
            Some(ErrorKind::Deadline) => {}
            other => panic!("page {}: expected ok or deadline, got {other:?}", o.index),
        }
        if o.index >= 10 {
            assert_eq!(
                kind(o),
                Some(ErrorKind::Deadline),
                "hanging page {}",
                o.index
            );
        }
    }
    assert!(ok >= 1, "pages finished before the deadline are kept");
}

/// Case 7: A body over the cap fails with `body_too_large`, and the client stops
/// reading: the server cannot have sent the whole 64 MiB.
pub fn body_cap_stops_reading(model: &dyn Model) {
    let mut config = MockConfig::default();
    config.faults.oversized = ids(&[2]);
    config.faults.oversized_bytes = 64 << 20;
    let srv = server(config);
    let urls = srv.page_urls(5);
    let outcomes = run(model, &urls, &build(options().max_body_bytes(1 << 20)));
    assert_eq!(kind(&outcomes[2]), Some(ErrorKind::BodyTooLarge));
    assert_eq!(outcomes[2].attempts, 1, "body_too_large is not retried");
    for i in [0, 1, 3, 4] {
        assert!(outcomes[i].is_ok(), "page {i}");
    }
    let sent = srv.stats().bytes_sent;
    assert!(
        sent < 32 << 20,
        "server sent {sent} bytes: the client read the whole body"
    );
}

/// Case 8: A connection reset mid-body is a `protocol` error, not a panic.
pub fn reset_mid_body_is_a_protocol_error(model: &dyn Model) {
    let mut config = MockConfig::default();
    config.faults.reset = ids(&[1, 4]);
    let srv = server(config);
    let urls = srv.page_urls(8);
    let outcomes = run(model, &urls, &build(options().retries(1)));
    for o in &outcomes {
        if o.index == 1 || o.index == 4 {
            assert_eq!(
                kind(o),
                Some(ErrorKind::Protocol),
                "page {}: {:?}",
                o.index,
                o.result
            );
            assert_eq!(o.attempts, 2, "protocol errors are retried");
        } else {
            assert!(o.is_ok(), "page {}: {:?}", o.index, o.result);
        }
    }
}

/// Case 9: A URL that does not parse, one with another scheme, and a refused
/// connection each get their own kind.
pub fn invalid_and_refused_urls(model: &dyn Model) {
    let srv = server(MockConfig::default());
    // A port that was just free: bind, read the port, close.
    let refused_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port();
    let urls = vec![
        "not a url".to_string(),
        "ftp://127.0.0.1/file".to_string(),
        format!("http://127.0.0.1:{refused_port}/page/1"),
        srv.page_url(1),
        String::new(),
    ];
    let outcomes = run(model, &urls, &build(options().retries(0)));
    assert_eq!(kind(&outcomes[0]), Some(ErrorKind::InvalidUrl));
    assert_eq!(kind(&outcomes[1]), Some(ErrorKind::InvalidUrl));
    assert_eq!(
        kind(&outcomes[2]),
        Some(ErrorKind::Connect),
        "{:?}",
        outcomes[2].result
    );
    assert!(outcomes[3].is_ok());
    assert_eq!(kind(&outcomes[4]), Some(ErrorKind::InvalidUrl));
    assert_eq!(outcomes[0].attempts, 0, "an invalid URL is never requested");
}

/// Case 10: Keep-alive: 300 pages reuse connections, at most C plus a little slack.
pub fn keep_alive_reuses_connections(model: &dyn Model) {
    let srv = server(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(1)),
        ..MockConfig::default()
    });
    let urls = srv.page_urls(300);
    let opts = build(options().max_in_flight(8));
    let outcomes = run(model, &urls, &opts);
    assert!(outcomes.iter().all(Outcome::is_ok));
    let c = model.concurrency(&opts) as u64;
    let connections = srv.stats().connections;
    assert!(
        connections <= c + 2,
        "{connections} connections for {c} in flight"
    );
}

/// Case 11: Cancel mid-run: no new requests start, the run returns with N
/// outcomes, and the unfinished ones are `cancelled`.
pub fn cancel_stops_new_requests(model: &dyn Model) {
    let srv = server(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(20)),
        ..MockConfig::default()
    });
    let urls = srv.page_urls(200);
    let opts = build(options().max_in_flight(4));
    let cancel = CancelToken::new();
    let seen = AtomicUsize::new(0);
    let mut on_outcome = |_: &Outcome| {
        if seen.fetch_add(1, Ordering::SeqCst) + 1 == 10 {
            cancel.cancel();
        }
    };
    let outcomes = model.run(&urls, &opts, &mut on_outcome, &cancel);
    assert_one_per_url(&urls, &outcomes);
    let ok = outcomes.iter().filter(|o| o.is_ok()).count();
    let cancelled = outcomes
        .iter()
        .filter(|o| kind(o) == Some(ErrorKind::Cancelled))
        .count();
    assert_eq!(ok + cancelled, 200, "every outcome is a page or cancelled");
    assert!(ok >= 10, "pages finished before the cancel are kept");
    // The server's own count: after the cancel at most the requests already
    // in flight complete (C), plus slack for ones starting in the same instant.
    let requests = srv.stats().total_requests;
    let c = model.concurrency(&opts) as u64;
    assert!(
        requests <= 10 + 2 * c,
        "{requests} requests were made after a cancel at 10"
    );
}

/// Case 12: `on_outcome` sees every URL exactly once, successes and failures alike,
/// with the same record the run returns.
pub fn on_outcome_once_per_url(model: &dyn Model) {
    let mut config = MockConfig::default();
    config.faults.not_found = ids(&[0, 50, 99]);
    let srv = server(config);
    let mut urls = srv.page_urls(100);
    urls[10] = "bogus".to_string();
    let mut seen: Vec<Outcome> = Vec::new();
    let outcomes = model.run(
        &urls,
        &build(options()),
        &mut |o| seen.push(o.clone()),
        &CancelToken::new(),
    );
    assert_one_per_url(&urls, &outcomes);
    let mut counts = vec![0; urls.len()];
    for o in &seen {
        counts[o.index] += 1;
        assert_eq!(o, &outcomes[o.index], "callback saw the returned record");
    }
    assert!(
        counts.iter().all(|&c| c == 1),
        "calls per index: {counts:?}"
    );
}

/// Case 13: HTTPS: with the mock's root trusted through `Options` every page
/// succeeds; without it every page is a `tls` error.
pub fn https_with_trusted_root(model: &dyn Model) {
    let srv = server(MockConfig {
        tls: true,
        ..MockConfig::default()
    });
    assert!(srv.base_url().starts_with("https://"));
    let pem = srv.root_cert_pem().expect("a TLS mock hands out its root");
    let urls = srv.page_urls(40);
    let trusted = build(options().add_root_pem(&pem));
    let outcomes = run(model, &urls, &trusted);
    for o in &outcomes {
        assert!(o.is_ok(), "page {} over TLS: {:?}", o.index, o.result);
    }
    let untrusted = build(options().retries(0));
    let outcomes = run(model, &urls, &untrusted);
    for o in &outcomes {
        assert_eq!(
            kind(o),
            Some(ErrorKind::Tls),
            "page {}: {:?}",
            o.index,
            o.result
        );
    }
}

/// Case 14: a panic while fetching or parsing one URL (injected here in the
/// CPU stage) becomes a `panicked` outcome for that URL alone; the run goes
/// on and every other page succeeds.
pub fn panic_costs_one_url(model: &dyn Model) {
    let srv = server(MockConfig::default());
    let urls = srv.page_urls(40);
    let marker = format!("<title>{}</title>", mock_server::page_title(3));
    let opts = build(options().max_in_flight(4).panic_marker(Some(marker)));
    let outcomes = run(model, &urls, &opts);
    for o in &outcomes {
        if o.index == 3 {
            assert_eq!(kind(o), Some(ErrorKind::Panicked), "{:?}", o.result);
        } else {
            assert!(o.is_ok(), "page {}: {:?}", o.index, o.result);
        }
    }
}

/// Case 15: the streaming form pulls URLs only as slots free up: at no point
/// has the model read more than C URLs (plus one it is about to hand out)
/// beyond those it has reported. A model that collects its input up front,
/// or spawns a task per URL before the earlier ones finish, fails here; this
/// is what keeps memory proportional to the concurrency, not to the input.
pub fn urls_are_pulled_lazily(model: &dyn Model) {
    let srv = server(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(2)),
        ..MockConfig::default()
    });
    let opts = build(options().max_in_flight(4));
    let c = model.concurrency(&opts);
    let n = 120;
    let (pulled, reported, most_ahead) = (Cell::new(0usize), Cell::new(0usize), Cell::new(0));
    let mut urls = (0..n).map(|id| {
        pulled.set(pulled.get() + 1);
        most_ahead.set(most_ahead.get().max(pulled.get() - reported.get()));
        srv.page_url(id as u64)
    });
    let mut indices = BTreeSet::new();
    let read = model.run_iter(
        &mut urls,
        &opts,
        &mut |o| {
            reported.set(reported.get() + 1);
            assert!(o.is_ok(), "page {}: {:?}", o.index, o.result);
            assert!(indices.insert(o.index), "index {} reported twice", o.index);
        },
        &CancelToken::new(),
    );
    assert_eq!(read, n);
    assert_eq!(indices, (0..n).collect(), "one outcome per URL");
    assert!(
        most_ahead.get() <= c + 1,
        "the model read {} URLs ahead of its outcomes with {c} in flight",
        most_ahead.get()
    );
}

/// Case 16: a failure does not poison the connection the next request uses.
/// With one request in flight, every page goes through the same slot: after a
/// timeout, a body cut off at the cap and a reset mid-body, the pages that
/// follow must still succeed. (surf's pool, for one, takes back a connection
/// whatever state its last response left it in.)
pub fn failures_do_not_poison_the_next_request(model: &dyn Model) {
    let mut config = MockConfig::default();
    config.faults.hang = ids(&[1]);
    config.faults.oversized = ids(&[3]);
    config.faults.reset = ids(&[5]);
    let srv = server(config);
    let urls = srv.page_urls(10);
    let opts = build(
        options()
            .max_in_flight(1)
            .retries(0)
            .request_timeout(Duration::from_millis(300))
            .max_body_bytes(64 << 10),
    );
    let outcomes = run(model, &urls, &opts);
    for o in &outcomes {
        let expected = match o.index {
            1 => Some(ErrorKind::Timeout),
            3 => Some(ErrorKind::BodyTooLarge),
            5 => Some(ErrorKind::Protocol),
            _ => None,
        };
        assert_eq!(kind(o), expected, "page {}: {:?}", o.index, o.result);
    }
}

/// Case: One URL, one meaning. fetch-core checks and normalises every URL
/// once (WHATWG rules), and every model requests exactly that URL, so the
/// same input line gives the same record kind in every model, whatever its
/// client would have made of it. The record keeps the line as it was given.
pub fn one_url_one_meaning(model: &dyn Model) {
    let srv = server(MockConfig::default());
    let base = srv.base_url().trim_end_matches('/').to_string();
    let authority = base.trim_start_matches("http://").to_string();
    let long_path = "é".repeat(5000);
    let table: Vec<(String, Option<ErrorKind>)> = vec![
        (format!("{base}/page/1"), None),
        // Trailing blanks and a fragment are not part of the request.
        (format!("  {base}/page/2#section  "), None),
        // A space and non-ASCII in the query: percent-encoded, not refused.
        (format!("{base}/page/3?note=a b&q=ä"), None),
        // Characters some URI parsers refuse, left as WHATWG leaves them.
        (format!("{base}/page/4?x=|^"), None),
        // Scheme and host in capitals.
        (format!("HTTP://{}/page/5", authority.to_uppercase()), None),
        // A space and non-ASCII in the path: requested percent-encoded, and
        // the mock knows no such page.
        (format!("{base}/page/6 x"), Some(ErrorKind::HttpStatus)),
        (format!("{base}/page/ü"), Some(ErrorKind::HttpStatus)),
        // Refused before any request, in every model.
        (
            format!("http:///{authority}/page/7"),
            Some(ErrorKind::InvalidUrl),
        ),
        (
            format!("http:/{authority}/page/8"),
            Some(ErrorKind::InvalidUrl),
        ),
        (
            "http://exa mple/page/9".to_string(),
            Some(ErrorKind::InvalidUrl),
        ),
        (
            format!("{base}/page/10/{long_path}"),
            Some(ErrorKind::InvalidUrl),
        ),
        (
            format!("{base}/page/11\u{FFFD}"),
            Some(ErrorKind::InvalidUrl),
        ),
    ];
    let urls: Vec<String> = table.iter().map(|(u, _)| u.clone()).collect();
    let outcomes = run(model, &urls, &build(options().retries(0)));
    for ((url, expected), o) in table.iter().zip(&outcomes) {
        assert_eq!(kind(o), *expected, "{url:?}: {:?}", o.result);
    }
    let stats = srv.stats();
    for id in 1..=5 {
        assert_eq!(stats.requests_per_id.get(&id), Some(&1), "page {id}");
    }
    assert_eq!(
        stats.total_requests, 7,
        "five pages and two 404s; no request for a refused URL"
    );
    assert_eq!(status(&outcomes[5]), Some(404));
    assert!(outcomes[7..].iter().all(|o| o.attempts == 0));
}

/// Case: the options are a contract, the user agent included. Every request a
/// model sends, retries and redirect hops too, carries exactly the configured
/// `User-Agent`: not its library's default, not a second value beside it.
pub fn sends_the_configured_user_agent(model: &dyn Model) {
    let mut config = MockConfig::default();
    config.faults.fail_once = ids(&[2]);
    let srv = server(config);
    let mut urls = srv.page_urls(4);
    urls.push(format!("{}?redirect=2", srv.page_url(4)));
    let agent = "fetchlab-conformance/1.0 (+https://example.invalid/probe)";
    let outcomes = run(model, &urls, &build(options().user_agent(agent)));
    for o in &outcomes {
        assert!(o.is_ok(), "page {}: {:?}", o.index, o.result);
    }
    let stats = srv.stats();
    assert_eq!(
        stats.total_requests, 8,
        "four pages, the retry of page 2, page 4 and its two redirects"
    );
    let expected = [(agent.to_string(), 8)].into();
    assert_eq!(
        stats.user_agents, expected,
        "requests per User-Agent (\"\" = none)"
    );
}

/// Case: Cancel does not wait for the requests in flight. Every page hangs
/// and the timeout is two minutes, far beyond the bound checked here: once
/// the server holds the model's requests, a cancel from another thread must
/// bring every outcome back well within the bound, each `cancelled`,
/// whatever the request was blocked in (a socket read, for the blocking
/// models). A cancel must not spoil what the model keeps between runs
/// either: a second run with the same model object and options fetches
/// normally.
pub fn cancel_interrupts_requests_in_flight(model: &dyn Model) {
    let hanging = 12;
    let mut config = MockConfig::default();
    config.faults.hang = FaultSet {
        ids: (0..hanging).collect(),
        rate: 0.0,
    };
    let srv = server(config);
    let urls = srv.page_urls(hanging);
    let opts = build(
        options()
            .max_in_flight(4)
            .request_timeout(Duration::from_secs(120)),
    );
    let c = model.concurrency(&opts) as u64;
    // A wide margin against a 120 s timeout: the point is "not the timeout".
    let bound = Duration::from_secs(20);
    let cancel = CancelToken::new();
    let (outcomes, reached, cancelled_at, returned_at) = std::thread::scope(|s| {
        let canceller = s.spawn(|| {
            // Cancel once the server counts the model's C requests, so every
            // slot is blocked in a request that will never be answered. The
            // wait is bounded: a model that never gets there still ends.
            let give_up = Instant::now() + bound;
            let reached = loop {
                if srv.stats().in_flight >= c {
                    break true;
                }
                if Instant::now() >= give_up {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            cancel.cancel();
            (reached, Instant::now())
        });
        let outcomes = model.run(&urls, &opts, &mut |_| {}, &cancel);
        let returned_at = Instant::now();
        let (reached, cancelled_at) = canceller.join().expect("the canceller does not panic");
        (outcomes, reached, cancelled_at, returned_at)
    });
    assert!(reached, "the server never saw {c} requests in flight");
    let took = returned_at.saturating_duration_since(cancelled_at);
    assert!(
        took < bound,
        "the run returned {took:?} after the cancel (request timeout 120 s)"
    );
    assert_one_per_url(&urls, &outcomes);
    for o in &outcomes {
        assert_eq!(
            kind(o),
            Some(ErrorKind::Cancelled),
            "page {}: {:?}",
            o.index,
            o.result
        );
    }
    assert_eq!(
        srv.stats().total_requests,
        c,
        "no request starts after the cancel"
    );

    // The same model object, the same options, a new token: pages that do
    // not hang must succeed.
    let more: Vec<String> = (hanging..hanging + 20).map(|id| srv.page_url(id)).collect();
    let outcomes = run(model, &more, &opts);
    for o in &outcomes {
        assert!(
            o.is_ok(),
            "after a cancelled run, page {}: {:?}",
            o.index,
            o.result
        );
    }
}

/// Case: A limit far above the number of URLs costs nothing: a model starts
/// workers, threads or tasks for the URLs it has, not for the limit. With 50
/// URLs and `max_in_flight` 100,000 every page is fetched and the server
/// never sees more than 50 at once (the blocking models used to start
/// 100,000 threads and abort or hang; smol, 100,000 workers).
pub fn limit_far_above_the_input(model: &dyn Model) {
    let srv = server(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(20)),
        ..MockConfig::default()
    });
    let urls = srv.page_urls(50);
    let outcomes = run(model, &urls, &build(options().max_in_flight(100_000)));
    assert!(outcomes.iter().all(Outcome::is_ok), "every page fetched");
    let stats = srv.stats();
    assert_eq!(stats.total_requests, 50);
    assert!(stats.max_in_flight <= 50, "{}", stats.max_in_flight);
    assert!(stats.connections <= 50 + 2, "{}", stats.connections);
}

/// Case: A self-signed certificate the user passed is pinned. The kind
/// `openssl req -x509` makes (basicConstraints CA:TRUE), passed as a root, is
/// accepted for the name it carries, as curl and OpenSSL accept it (webpki
/// alone refuses it: `CaUsedAsEndEntity`). Another self-signed certificate
/// passed for the same server, a CA:TRUE certificate for another name, and an
/// expired one all fail `tls`, with no request sent.
pub fn https_with_pinned_self_signed_cert(model: &dyn Model) {
    use mock_server::ServerCert;
    let ca = |names: &[&str]| ServerCert::self_signed_ca(names).expect("rcgen makes a certificate");
    let start = |cert: &ServerCert| {
        MockServer::start_with_cert(MockConfig::default(), cert.clone())
            .expect("mock server starts on 127.0.0.1:0")
    };
    let refused = |what: &str, urls: &[String], pem: &str| {
        let outcomes = run(model, urls, &build(options().retries(0).add_root_pem(pem)));
        for o in &outcomes {
            let why = format!("{what}, page {}: {:?}", o.index, o.result);
            assert_eq!(kind(o), Some(ErrorKind::Tls), "{why}");
        }
    };

    let pinned = ca(&["127.0.0.1"]);
    let srv = start(&pinned);
    let urls = srv.page_urls(8);
    let outcomes = run(model, &urls, &build(options().add_root_pem(pinned.pem())));
    for o in &outcomes {
        assert!(o.is_ok(), "pinned, page {}: {:?}", o.index, o.result);
    }
    refused(
        "another certificate passed",
        &urls,
        ca(&["127.0.0.1"]).pem(),
    );
    assert_eq!(
        srv.stats().total_requests,
        8,
        "only the pinned run got through"
    );

    // SAN `localhost` only, fetched as https://127.0.0.1:PORT (curl refuses
    // it too: an IP address must be in an IP SAN).
    let other_name = ca(&["localhost"]);
    let srv = start(&other_name);
    refused("another name", &srv.page_urls(4), other_name.pem());
    assert_eq!(srv.stats().total_requests, 0);

    let expired = ServerCert::expired_self_signed_ca(&["127.0.0.1"]).expect("rcgen makes it");
    let srv = start(&expired);
    refused("expired", &srv.page_urls(4), expired.pem());
    assert_eq!(srv.stats().total_requests, 0);
}

/// Case: a redirect means the same in every model. fetch-core follows
/// redirects for every client, resolving each `Location` against the URL
/// that sent it and checking it like an input URL, so a bad `Location` ends
/// with the same record kind whatever the model's client would have made of
/// it. (Before, `Location: http://` ended as `redirect` in three models and
/// as the 301 itself in tokio's; `ftp://` was `invalid_url` in two.) A
/// chain counts as one attempt, and a retry starts again from the URL.
pub fn redirects_end_the_same_way(model: &dyn Model) {
    let srv = server(MockConfig::default());
    let page = |id: u64, query: &str| format!("{}?{query}", srv.page_url(id));
    let table: Vec<(String, Option<ErrorKind>)> = vec![
        (page(1, "redirect=2"), None),
        (page(2, "redirect_loop=1"), Some(ErrorKind::Redirect)),
        (page(3, "redirect=3"), Some(ErrorKind::Redirect)),
        // No host.
        (page(4, "location=http%3A%2F%2F"), Some(ErrorKind::Redirect)),
        // Not http(s).
        (
            page(5, "location=ftp%3A%2F%2Fexample%2Fx"),
            Some(ErrorKind::Redirect),
        ),
        // Not an absolute URL: a path relative to /page/6, which the mock
        // does not know.
        (
            page(6, "location=%3A%3Anot%20a%20url"),
            Some(ErrorKind::HttpStatus),
        ),
        (page(7, "location=%2Fpage%2F8"), None),
        // A redirect status without a `Location` is the final answer.
        (page(9, "status=302"), Some(ErrorKind::HttpStatus)),
        (page(10, "status=307&location=%2Fpage%2F11"), None),
        // The target fails once: the retry starts from page 12 again.
        (page(12, "location=%2Fpage%2F13%3Ffail_once%3D1"), None),
    ];
    let urls: Vec<String> = table.iter().map(|(u, _)| u.clone()).collect();
    let options = build(options().max_redirects(2).retries(1));
    let outcomes = run(model, &urls, &options);
    for ((url, expected), o) in table.iter().zip(&outcomes) {
        assert_eq!(kind(o), *expected, "{url}: {:?}", o.result);
    }
    let title = |o: &Outcome| o.result.as_ref().ok().and_then(|p| p.title.clone());
    assert_eq!(title(&outcomes[0]).as_deref(), Some("Page 1"));
    assert_eq!(title(&outcomes[6]).as_deref(), Some("Page 8"));
    assert_eq!(title(&outcomes[8]).as_deref(), Some("Page 11"));
    assert_eq!(title(&outcomes[9]).as_deref(), Some("Page 13"));
    assert_eq!(status(&outcomes[5]), Some(404));
    assert_eq!(status(&outcomes[7]), Some(302));
    let attempts: Vec<u32> = outcomes.iter().map(|o| o.attempts).collect();
    assert_eq!(attempts, [1, 1, 1, 1, 1, 1, 1, 1, 1, 2], "attempts per URL");
    let stats = srv.stats();
    let requests = |id| stats.requests_per_id.get(&id).copied().unwrap_or(0);
    let expected = [
        (1, 3),
        (2, 3),
        (3, 3),
        (4, 1),
        (5, 1),
        (6, 1),
        (7, 1),
        (8, 1),
    ];
    let expected = expected
        .into_iter()
        .chain([(9, 1), (10, 1), (11, 1), (12, 2), (13, 2)]);
    for (id, n) in expected {
        assert_eq!(requests(id), n, "requests for page {id}");
    }
}

/// The text a URL carries, in its query string, to crash the process that
/// fetches it: for a model that isolates crashes
/// ([`Model::isolates_crashes`]), whose test build must end the process
/// (an abort, as a segfault in C code would) when it starts a URL
/// containing this text. The mock server ignores the parameter.
pub const CRASH_MARKER: &str = "fetchlab_crash_worker";

/// Case: a crash costs the URLs in flight beside it, not the run. Only for
/// a model that fetches in child processes (`isolates_crashes`); every
/// other model runs in one process, where a crash ends the run, and skips
/// it. One URL crashes its process: that URL and the others that process
/// had in flight (at most C, all near it in the input) are `panicked`,
/// every other URL is fetched, the run goes on past the crash, and none is
/// requested twice: a lost URL is recorded, not retried elsewhere.
pub fn a_crash_costs_the_urls_in_flight_beside_it(model: &dyn Model) {
    if !model.isolates_crashes() {
        eprintln!(
            "skipped: {} runs in one process, which a crash ends (isolates_crashes is false)",
            model.name()
        );
        return;
    }
    let srv = server(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(20)),
        ..MockConfig::default()
    });
    let (n, crash) = (60, 9);
    let mut urls = srv.page_urls(n);
    urls[crash] = format!("{}?{CRASH_MARKER}=1", srv.page_url(crash as u64));
    let opts = build(options().max_in_flight(4).retries(0));
    let c = model.concurrency(&opts);
    let outcomes = run(model, &urls, &opts);
    assert_eq!(
        kind(&outcomes[crash]),
        Some(ErrorKind::Panicked),
        "the URL that crashed: {:?}",
        outcomes[crash].result
    );
    let lost: Vec<&Outcome> = outcomes.iter().filter(|o| !o.is_ok()).collect();
    assert!(lost.len() <= c, "{} URLs lost to one crash", lost.len());
    for o in &lost {
        assert_eq!(
            kind(o),
            Some(ErrorKind::Panicked),
            "page {}: {:?}",
            o.index,
            o.result
        );
        assert!(
            o.index.abs_diff(crash) < c,
            "page {} was lost, far from the crash at {crash}",
            o.index
        );
    }
    let stats = srv.stats();
    for o in &outcomes {
        let requests = stats
            .requests_per_id
            .get(&(o.index as u64))
            .copied()
            .unwrap_or(0);
        if o.is_ok() {
            assert_eq!(requests, 1, "page {} fetched once", o.index);
        } else {
            assert!(
                requests <= 1,
                "lost page {} requested {requests} times",
                o.index
            );
        }
    }
}

/// Case: a record says where it ended up, and a saved page is where its
/// record says. A page's `final_url` is the URL that gave it, after
/// redirects (the normalised request URL when there was none), and its
/// `content_type` the header as the server sent it; an `http_status` error
/// carries the URL that answered it, and an error with no final answer
/// none. Checked twice: with the record built in place (no CPU stage) and
/// with `save_dir` set, where every page is saved, whole, under the name its
/// final URL gives, a non-2xx body is not saved, and a page whose file
/// cannot be written (a file stands where its directory must go) is a
/// `save` error while the run goes on.
pub fn records_say_where_they_ended_up(model: &dyn Model) {
    use fetch_core::save;
    let config = MockConfig::default();
    let srv = server(config.clone());
    let page = |id: u64, query: &str| format!("{}?{query}", srv.page_url(id));
    let html = Some("text/html; charset=utf-8");
    // (the URL, the page id served at the end, its final URL, its type)
    let pages = [
        (srv.page_url(0), 0, srv.page_url(0), html),
        // Two hops by `redirect=N`: the query changes on the way.
        (page(1, "redirect=2"), 1, page(1, "redirect=0"), html),
        // Two hops across pages by `Location`: /page/2, /page/3, /page/4.
        (
            page(2, "location=%2Fpage%2F3%3Flocation%3D%252Fpage%252F4"),
            4,
            srv.page_url(4),
            html,
        ),
        // No redirect: the URL as normalised, not as given.
        (
            page(5, "q=a b").replace("http://", "HTTP://"),
            5,
            page(5, "q=a%20b"),
            html,
        ),
        // Not HTML (the mock's body stays the same HTML).
        (
            page(6, "content_type=application%2Fjson"),
            6,
            page(6, "content_type=application%2Fjson"),
            Some("application/json"),
        ),
        (
            page(7, "content_type=image%2Fpng"),
            7,
            page(7, "content_type=image%2Fpng"),
            Some("image/png"),
        ),
        (srv.page_url(8), 8, srv.page_url(8), html),
    ];
    // (the URL, its error kind, its final URL)
    let errors = [
        (
            page(10, "location=%2Fpage%2F11%3Fstatus%3D404"),
            ErrorKind::HttpStatus,
            Some(page(11, "status=404")),
        ),
        (
            page(12, "status=410"),
            ErrorKind::HttpStatus,
            Some(page(12, "status=410")),
        ),
        (page(13, "redirect_loop=1"), ErrorKind::Redirect, None),
    ];
    let urls: Vec<String> = pages
        .iter()
        .map(|p| p.0.clone())
        .chain(errors.iter().map(|e| e.0.clone()))
        .collect();
    let final_url = |o: &Outcome| match &o.result {
        Ok(page) => Some(page.final_url.clone()),
        Err(e) => e.final_url().map(str::to_string),
    };
    let check_errors = |outcomes: &[Outcome]| {
        for ((url, kind, expected), o) in errors.iter().zip(&outcomes[pages.len()..]) {
            assert_eq!(o.error_kind(), Some(*kind), "{url}: {:?}", o.result);
            assert_eq!(final_url(o), *expected, "{url}");
        }
    };

    // In place: no parse, no save, no CPU stage.
    let outcomes = run(model, &urls, &build(options().parse(false).retries(0)));
    for ((url, _, expected, content_type), o) in pages.iter().zip(&outcomes) {
        let got = o.result.as_ref().unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(&got.final_url, expected, "{url}");
        assert_eq!(got.content_type.as_deref(), *content_type, "{url}");
        assert_eq!(got.saved, None, "{url}: saving is off");
    }
    check_errors(&outcomes);

    // Saved. One page's directory is blocked by a file: that page, and any
    // other whose name falls in the same directory, cannot be saved.
    let dir = tempfile::tempdir().expect("a temp dir");
    let name = |(_, _, final_url, content_type): &(String, u64, String, Option<&str>)| {
        save::relative_path(final_url, *content_type)
    };
    let blocked = name(&pages[6])[..2].to_string();
    std::fs::write(dir.path().join(&blocked), b"a file in the way").expect("write");
    let options = build(
        options()
            .retries(0)
            .save_dir(Some(dir.path().to_path_buf())),
    );
    let outcomes = run(model, &urls, &options);
    let mut expected_files = BTreeSet::from([blocked.clone()]);
    for (p, o) in pages.iter().zip(&outcomes) {
        let (url, id, expected, content_type) = p;
        let name = name(p);
        if name.starts_with(&blocked) {
            assert_eq!(
                o.error_kind(),
                Some(ErrorKind::Save),
                "{url}: {:?}",
                o.result
            );
            assert_eq!(final_url(o).as_ref(), Some(expected), "{url}");
            continue;
        }
        let got = o.result.as_ref().unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(&got.final_url, expected, "{url}");
        assert_eq!(got.content_type.as_deref(), *content_type, "{url}");
        let served = mock_server::page_html(*id, config.links, config.body_bytes);
        assert_eq!(got.bytes, served.len() as u64, "{url}");
        let title = (*content_type == html).then(|| mock_server::page_title(*id));
        assert_eq!(got.title, title, "{url}");
        assert_eq!(got.saved.as_ref(), Some(&name), "{url}");
        let on_disk = std::fs::read(dir.path().join(&name)).expect("the saved file");
        assert!(
            on_disk == served.as_bytes(),
            "{url}: {name} is not the page"
        );
        expected_files.insert(name);
    }
    check_errors(&outcomes);
    // Nothing else: no error body, no temp file.
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(dir.path()).expect("the save dir") {
        let path = entry.expect("an entry").path();
        let top = path.file_name().unwrap_or_default().to_string_lossy();
        if !path.is_dir() {
            found.insert(top.into_owned());
            continue;
        }
        for file in std::fs::read_dir(&path).expect("a directory") {
            let file = file.expect("an entry").file_name();
            found.insert(format!("{top}/{}", file.to_string_lossy()));
        }
    }
    let tmp: BTreeSet<String> = found
        .iter()
        .filter(|f| f.starts_with(save::TMP_DIR))
        .cloned()
        .collect();
    assert!(tmp.is_empty(), "temp files left: {tmp:?}");
    assert_eq!(found, expected_files, "the files under the save dir");
}
