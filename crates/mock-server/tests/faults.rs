//! Faults that break the response itself: reset, oversized, hang, drip.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{agent, raw_get, wait_until};
use mock_server::{FaultSet, Faults, MockConfig, MockServer};

#[test]
fn reset_sends_headers_and_part_of_the_body_then_aborts() {
    let server = MockServer::start(MockConfig {
        faults: Faults {
            reset: FaultSet::ids([4]),
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .expect("start server");
    for path in ["/page/4", "/page/5?reset=1"] {
        let raw = raw_get(server.addr(), path);
        assert_eq!(raw.status(), 200, "{path}");
        let announced: usize = raw
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .expect("content-length");
        assert_eq!(announced, 2048);
        assert!(!raw.body.is_empty(), "{path}: some body arrives");
        assert!(raw.body.len() < announced, "{path}: but not all of it");
    }
    // A real client library reports it as an error, not a clean page.
    let mut resp = agent()
        .get(&server.page_url(4))
        .call()
        .expect("headers arrive");
    assert_eq!(resp.status(), 200);
    assert!(resp.body_mut().read_to_string().is_err());
    assert!(wait_until(Duration::from_secs(2), || server
        .stats()
        .in_flight
        == 0));
}

#[test]
fn oversized_streams_more_than_announced_nothing() {
    const HUGE: u64 = 8 * 1024 * 1024;
    let server = MockServer::start(MockConfig {
        faults: Faults {
            oversized: FaultSet::ids([6]),
            oversized_bytes: HUGE,
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .expect("start server");
    let mut resp = agent().get(&server.page_url(6)).call().expect("response");
    assert_eq!(resp.status(), 200);
    // Chunked: the client cannot reject it up front, it must count while reading.
    assert!(resp.headers().get("content-length").is_none());
    let mut reader = resp.body_mut().as_reader();
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).expect("read body");
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    assert_eq!(total, HUGE);
    assert_eq!(server.stats().bytes_sent, HUGE);

    // A client that gives up early just closes; the server copes and counts it done.
    let raw_addr = server.addr();
    let mut s = TcpStream::connect(raw_addr).expect("connect");
    write!(s, "GET /page/7?oversized=1 HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let mut first = [0u8; 4096];
    let n = s.read(&mut first).expect("read");
    assert!(n > 0);
    drop(s);
    assert!(wait_until(Duration::from_secs(2), || server
        .stats()
        .in_flight
        == 0));
}

#[test]
fn hang_holds_until_the_client_leaves() {
    let server = MockServer::start(MockConfig {
        faults: Faults {
            hang: FaultSet::ids([8]),
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .expect("start server");
    let mut s = TcpStream::connect(server.addr()).expect("connect");
    write!(s, "GET /page/8 HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("set timeout");
    let mut buf = [0u8; 16];
    // No answer...
    assert!(s.read(&mut buf).is_err());
    assert_eq!(server.stats().in_flight, 1);
    // ...until the client goes away, which ends the request.
    drop(s);
    assert!(wait_until(Duration::from_secs(2), || server
        .stats()
        .in_flight
        == 0));
}

#[test]
fn hang_does_not_block_shutdown() {
    let server = MockServer::start(MockConfig::default()).expect("start server");
    let addr = server.addr();
    let clients: Vec<_> = (0..3)
        .map(|i| std::thread::spawn(move || raw_get(addr, &format!("/page/{i}?hang=1"))))
        .collect();
    assert!(wait_until(Duration::from_secs(2), || server
        .stats()
        .in_flight
        == 3));

    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        server.shutdown();
        let _ = done_tx.send(());
    });
    assert!(
        done_rx.recv_timeout(Duration::from_secs(5)).is_ok(),
        "shutdown blocked on hung requests"
    );
    for c in clients {
        let raw = c.join().expect("client thread panicked");
        // The connection was closed without a response.
        assert!(raw.head.is_empty());
    }
    // Nothing listens any more.
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn drip_sends_the_whole_page_slowly() {
    let server = MockServer::start(MockConfig::default()).expect("start server");
    let start = Instant::now();
    // 640 bytes = 10 chunks of 64, 9 pauses of 10 ms between them.
    let raw = raw_get(server.addr(), "/page/1?drip=1&drip_ms=10&body_bytes=640");
    assert!(start.elapsed() >= Duration::from_millis(90));
    assert_eq!(raw.status(), 200);
    assert_eq!(raw.header("content-length").as_deref(), Some("640"));
    assert_eq!(raw.body.len(), 640);
    assert!(raw.read_error.is_none());
}
