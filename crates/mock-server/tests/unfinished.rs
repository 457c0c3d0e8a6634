//! The `unfinished` counter: requests that started and ended without a
//! complete response. Every way a request can end, checked over real sockets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{agent, get, raw_get, wait_until};
use mock_server::{MockConfig, MockServer};

/// Waits until no request is in flight, so that every ending has been counted.
fn settled(server: &MockServer) -> mock_server::Stats {
    assert!(
        wait_until(Duration::from_secs(5), || server.stats().in_flight == 0),
        "requests still in flight: {:?}",
        server.stats()
    );
    server.stats()
}

#[test]
fn completed_responses_are_not_unfinished() {
    let server = MockServer::start(MockConfig::default()).expect("start server");
    let agent = agent();
    assert_eq!(get(&agent, &server.page_url(1)).status, 200);
    assert_eq!(
        get(&agent, &format!("{}?status=503", server.page_url(2))).status,
        503
    );
    assert_eq!(
        get(&agent, &format!("{}?redirect=1", server.page_url(3))).status,
        302
    );
    assert_eq!(
        get(&agent, &format!("{}/nowhere", server.base_url())).status,
        404
    );
    assert_eq!(raw_get(server.addr(), "/page/4?status=204").status(), 204);
    // HEAD: hyper never polls the body, and the response is still complete.
    let mut s = TcpStream::connect(server.addr()).expect("connect");
    write!(
        s,
        "HEAD /page/5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set timeout");
    let mut head = String::new();
    s.read_to_string(&mut head).expect("read the head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head:?}");

    let stats = settled(&server);
    assert_eq!(
        (stats.total_requests, stats.unfinished),
        (6, 0),
        "{stats:?}"
    );
}

#[test]
fn requests_cut_off_are_unfinished() {
    let server = MockServer::start(MockConfig::default()).expect("start server");
    // A client that gives up while the server is still waiting its latency,
    // and one that gives up on a hang. Each is dropped only once the server
    // has started its request, and counted once the server has seen it go.
    for (n, path) in [(1, "/page/1?latency_ms=10000"), (2, "/page/2?hang=1")] {
        let mut s = TcpStream::connect(server.addr()).expect("connect");
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
        assert!(wait_until(Duration::from_secs(5), || server
            .stats()
            .total_requests
            == n));
        drop(s);
        assert_eq!(settled(&server).unfinished, n);
    }
    // A body the server cuts off itself.
    let raw = raw_get(server.addr(), "/page/3?reset=1");
    assert_eq!(raw.status(), 200);
    let announced: usize = raw
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(raw.body.len() < announced, "the reset body is cut short");

    let stats = settled(&server);
    assert_eq!(
        (stats.total_requests, stats.unfinished),
        (3, 3),
        "{stats:?}"
    );
}
