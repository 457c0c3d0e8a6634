//! `max_in_flight` far above the number of URLs: the model starts a thread
//! per URL of its first batch, the URLs it actually has, so 50 URLs cost at
//! most 50 threads, however large C is. (Before, it spawned C threads up
//! front: at C = 100,000 the process aborted when the kernel's map limit
//! left std no room for a thread's signal stack.)
//!
//! One test in its own file, so that no other test's threads share the
//! process while this one counts them.

#![cfg(target_os = "linux")]

use std::time::Duration;

use fetch_core::{CancelToken, Model, Options};
use fetch_threads::Threads;
use mock_server::{Latency, MockConfig, MockServer};

/// The workers alive now (the model names them `fetch-{n}`).
fn workers_alive() -> usize {
    conformance::threads_named("fetch-")
}

#[test]
fn fifty_urls_at_c_100000_start_at_most_fifty_threads() {
    // 50 ms per page, so that the 50 requests overlap and the model has a
    // reason to start a worker for each.
    let srv = MockServer::start(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(50)),
        ..MockConfig::default()
    })
    .expect("mock server starts on 127.0.0.1:0");
    let urls = srv.page_urls(50);
    let options = Options::builder()
        .max_in_flight(100_000)
        .build()
        .expect("valid options");
    assert_eq!(workers_alive(), 0);
    // Workers are joined only when the run ends, so every worker the run
    // ever started is alive at its last outcome: the maximum seen from the
    // callback is the number started.
    let mut most = 0;
    let outcomes = Threads::new().run(
        &urls,
        &options,
        &mut |_| most = most.max(workers_alive()),
        &CancelToken::new(),
    );
    assert_eq!(outcomes.len(), 50);
    for o in &outcomes {
        assert!(o.is_ok(), "page {}: {:?}", o.index, o.result);
    }
    let stats = srv.stats();
    assert!(
        stats.max_in_flight <= 50,
        "{} in flight",
        stats.max_in_flight
    );
    assert!(most >= 1, "the run used worker threads");
    assert!(most <= 50, "{most} threads started for 50 URLs");

    // The same 50 URLs, all of one host, at 4 per host: 4 can be in flight,
    // so 4 threads are started, not 50. (The last run's workers are joined;
    // the kernel may list one for a moment longer while it exits.)
    let joined = std::time::Instant::now();
    while workers_alive() > 0 && joined.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let per_host = options.to_builder().max_per_host(Some(4)).build().unwrap();
    let mut most = 0;
    let outcomes = Threads::new().run(
        &urls,
        &per_host,
        &mut |_| most = most.max(workers_alive()),
        &CancelToken::new(),
    );
    assert!(outcomes.iter().all(|o| o.is_ok()));
    // Twice 4: a thread ureq starts to resolve a new connection's host
    // inherits its worker's name while it lives (see `thread_budget`).
    assert!(most <= 2 * 4, "{most} threads started for 4 per host");
}
