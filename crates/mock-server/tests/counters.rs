//! The counters tests elsewhere assert with `==`: each must be exact.

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{agent, get, wait_until};
use mock_server::{FaultSet, Faults, Latency, MockConfig, MockServer};

#[test]
fn max_in_flight_is_exactly_the_client_concurrency() {
    const K: usize = 8;
    let server = MockServer::start(MockConfig::default()).expect("start server");
    let barrier = Arc::new(Barrier::new(K));
    let threads: Vec<_> = (0..K)
        .map(|i| {
            let url = format!("{}?latency_ms=50", server.page_url(i as u64));
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let a = agent();
                barrier.wait();
                // Several sequential requests per client: a client that overlaps
                // its own requests with nothing must never count twice.
                for _ in 0..3 {
                    assert_eq!(get(&a, &url).status, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread panicked");
    }
    let stats = server.stats();
    assert_eq!(stats.max_in_flight, K as u64);
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.total_requests, 3 * K as u64);
}

#[test]
fn sequential_client_never_has_two_in_flight() {
    let server = MockServer::start(MockConfig::default()).expect("start server");
    let a = agent();
    // Zero latency on a keep-alive connection is the tightest case: the next
    // request goes out the instant the previous body is read.
    for id in 0..200 {
        assert_eq!(get(&a, &server.page_url(id % 5)).status, 200);
    }
    for id in 0..5 {
        get(&a, &format!("{}?latency_ms=5", server.page_url(id)));
    }
    let stats = server.stats();
    assert_eq!(stats.max_in_flight, 1);
    assert_eq!(stats.total_requests, 205);
    assert_eq!(stats.requests_per_id.get(&0), Some(&41));
    // ureq keeps one pooled connection for a sequential client.
    assert_eq!(stats.connections, 1);
}

#[test]
fn connections_are_counted_per_tcp_connection() {
    let server = MockServer::start(MockConfig::default()).expect("start server");
    for i in 0..3 {
        // A fresh agent has an empty pool, so each one opens a new connection.
        get(&agent(), &server.page_url(i));
    }
    let raw = common::raw_get(server.addr(), "/page/9");
    assert_eq!(raw.status(), 200);
    assert_eq!(server.stats().connections, 4);
}

#[test]
fn fail_once_gives_503_then_200() {
    let server = MockServer::start(MockConfig {
        faults: Faults {
            fail_once: FaultSet::ids([1]),
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .expect("start server");
    let a = agent();
    assert_eq!(get(&a, &server.page_url(1)).status, 503);
    assert_eq!(get(&a, &server.page_url(1)).status, 200);
    assert_eq!(get(&a, &server.page_url(1)).status, 200);
    assert_eq!(server.stats().requests_per_id.get(&1), Some(&3));

    // The query flag works for any id, and reset_stats re-arms it.
    let url = format!("{}?fail_once=1", server.page_url(2));
    assert_eq!(get(&a, &url).status, 503);
    assert_eq!(get(&a, &url).status, 200);
    assert_eq!(server.stats().requests_per_id.get(&2), Some(&2));
    server.reset_stats();
    assert_eq!(get(&a, &url).status, 503);
    assert_eq!(get(&a, &server.page_url(1)).status, 503);
}

#[test]
fn configured_faults_by_id() {
    let server = MockServer::start(MockConfig {
        faults: Faults {
            server_error: FaultSet::ids([1]),
            not_found: FaultSet::ids([2]),
            too_many: FaultSet::ids([3]),
            retry_after_secs: 4,
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .expect("start server");
    let a = agent();
    assert_eq!(get(&a, &server.page_url(0)).status, 200);
    assert_eq!(get(&a, &server.page_url(1)).status, 500);
    assert_eq!(get(&a, &server.page_url(2)).status, 404);
    let reply = get(&a, &server.page_url(3));
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("4"));
    // Query overrides win over configured faults.
    assert_eq!(
        get(&a, &format!("{}?status=200", server.page_url(1))).status,
        200
    );
}

#[test]
fn fault_rate_matches_fault_for() {
    let config = MockConfig {
        seed: 3,
        faults: Faults {
            server_error: FaultSet::rate(0.3),
            ..Faults::default()
        },
        ..MockConfig::default()
    };
    let server = MockServer::start(config.clone()).expect("start server");
    let a = agent();
    let mut failed = 0;
    for id in 0..40 {
        let expected = if config.fault_for(id).is_some() {
            500
        } else {
            200
        };
        let status = get(&a, &server.page_url(id)).status;
        assert_eq!(status, expected, "page {id}");
        failed += u32::from(status == 500);
    }
    // 30% of 40, give or take: the hash is deterministic, so this cannot flake.
    assert!((4..=20).contains(&failed), "{failed}");
}

#[test]
fn reset_stats_zeroes_counters_and_restarts_max_from_current() {
    let server = MockServer::start(MockConfig::default()).expect("start server");
    let a = agent();
    get(&a, &server.page_url(1));
    // Hold one request in flight across the reset.
    let hang_addr = server.addr();
    let hung = std::thread::spawn(move || common::raw_get(hang_addr, "/page/2?hang=1"));
    assert!(wait_until(Duration::from_secs(2), || server
        .stats()
        .in_flight
        == 1));
    server.reset_stats();
    let stats = server.stats();
    assert_eq!(stats.total_requests, 0);
    assert_eq!(stats.connections, 0);
    assert_eq!(stats.bytes_sent, 0);
    assert!(stats.requests_per_id.is_empty());
    assert_eq!(stats.in_flight, 1);
    assert_eq!(stats.max_in_flight, 1);
    get(&a, &server.page_url(1));
    assert_eq!(server.stats().max_in_flight, 2);
    drop(server);
    // Shutdown closed the hung connection.
    let raw = hung.join().expect("client thread panicked");
    assert!(raw.head.is_empty());
}

#[test]
fn latency_is_applied_before_headers() {
    let server = MockServer::start(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(30)),
        ..MockConfig::default()
    })
    .expect("start server");
    let a = agent();
    let start = Instant::now();
    get(&a, &server.page_url(1));
    assert!(start.elapsed() >= Duration::from_millis(30));
    // Error responses wait too, and query latency replaces the configured one.
    let start = Instant::now();
    get(
        &a,
        &format!("{}?status=500&latency_ms=60", server.page_url(1)),
    );
    assert!(start.elapsed() >= Duration::from_millis(60));
}

#[test]
fn user_agents_and_accept_encodings_are_counted_per_value() {
    let server = MockServer::start(MockConfig::default()).expect("start server");
    let a = agent();
    for id in 0..3 {
        let reply = a
            .get(server.page_url(id))
            .header("User-Agent", "probe/1")
            .header("Accept-Encoding", "identity")
            .call()
            .expect("GET with headers");
        assert_eq!(reply.status(), 200);
    }
    // A request without either header (the raw client sends neither), on a
    // path that is not a page: every counted request is recorded.
    assert_eq!(common::raw_get(server.addr(), "/nowhere").status(), 404);
    let stats = server.stats();
    let expected = |value: &str| [(value.to_owned(), 3), (String::new(), 1)].into();
    assert_eq!(stats.user_agents, expected("probe/1"));
    assert_eq!(stats.accept_encodings, expected("identity"));
    server.reset_stats();
    assert!(server.stats().user_agents.is_empty());
}
