//! The two models start the loops their names promise: `local` one thread
//! that does all the I/O, `per-core` one loop per core, and neither moves
//! any I/O to another thread.
//!
//! One test in its own file, so that no other test's threads share the
//! process while this one counts them (`conformance::threads_named` reads
//! /proc, which lists every thread of the process).

#![cfg(target_os = "linux")]

use std::time::Duration;

use conformance::threads_named;
use fetch_core::{CancelToken, Model, Options};
use fetch_local::Local;
use mock_server::{Latency, MockConfig, MockServer};

#[test]
fn local_runs_one_loop_and_per_core_one_loop_per_core() {
    // 20 ms per page and 4 rounds of 16, so every loop has requests in
    // flight while the outcomes come back.
    let srv = MockServer::start(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(20)),
        ..MockConfig::default()
    })
    .expect("mock server starts on 127.0.0.1:0");
    let urls = srv.page_urls(64);
    // No CPU stage: then nothing has a reason to leave the loops.
    let options = Options::builder()
        .max_in_flight(16)
        .parse(false)
        .build()
        .expect("valid options");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    for (model, loops) in [(Local::new(), 1), (Local::per_core(), cores)] {
        let name = model.name();
        assert_eq!(threads_named("fetch-loop-"), 0, "{name}: no loop before");
        // The most loop threads alive at an outcome. The callback runs on
        // the dispatcher, the calling thread, while the loops run; a loop
        // may end before the last outcomes it sent are read, so fewer is
        // no error, more would be.
        let mut most = 0;
        let outcomes = model.run(
            &urls,
            &options,
            &mut |_| most = most.max(threads_named("fetch-loop-")),
            &CancelToken::new(),
        );
        for o in &outcomes {
            assert!(o.is_ok(), "{name}, page {}: {:?}", o.index, o.result);
        }
        assert_eq!(most, loops, "{name}: loop threads");
        // The runtime's blocking pool would run the CPU stage and DNS
        // lookups; with neither, no thread of it was started: every
        // connect, write and read happened on the loops.
        assert_eq!(threads_named("fetch-offload"), 0, "{name}: I/O moved off");
        // The loops are the run's own threads, joined when it returns. A
        // scoped thread counts as joined once its closure has returned; the
        // kernel may list it in /proc for a moment longer, while it exits.
        let joined = std::time::Instant::now();
        while threads_named("fetch-loop-") > 0 && joined.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(threads_named("fetch-loop-"), 0, "{name}: loops joined");
        let stats = srv.stats();
        assert_eq!(stats.max_in_flight, 16, "{name}: the limit is used");
        srv.reset_stats();
    }
}
