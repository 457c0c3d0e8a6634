//! `max_in_flight` far above the number of URLs: the pool is sized to the
//! URLs there are to fetch (and never above the crate's cap), so 50 URLs at
//! C = 100,000 get a pool of at most 50 threads. (Before, the pool was built
//! with C threads before the first URL was read: at C = 100,000 nothing was
//! fetched in minutes.)
//!
//! One test in its own file, so that no other test's threads share the
//! process while this one counts them.

#![cfg(target_os = "linux")]

use std::time::Duration;

use fetch_core::{CancelToken, Model, Options};
use fetch_rayon::Rayon;
use mock_server::{Latency, MockConfig, MockServer};

/// The pool's threads alive now (the model names them `fetch-rayon-{n}`).
fn pool_threads() -> usize {
    conformance::threads_named("fetch-rayon")
}

#[test]
fn fifty_urls_at_c_100000_get_a_pool_of_at_most_fifty() {
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
    let model = Rayon::new();
    // What the model promises must be what it can do: the conformance
    // suite checks the server's maximum in flight against this number.
    assert!(model.concurrency(&options) < 100_000);
    assert_eq!(pool_threads(), 0);
    let mut most = 0;
    let outcomes = model.run(
        &urls,
        &options,
        &mut |_| most = most.max(pool_threads()),
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
    // The pool outlives the run (it is kept for the next one).
    let after = pool_threads();
    assert!(most >= 1, "the run used the pool");
    assert!(
        most <= 50 && after <= 50,
        "a pool of {} threads for 50 URLs",
        most.max(after)
    );
}
