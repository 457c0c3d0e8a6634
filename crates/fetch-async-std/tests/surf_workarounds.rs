//! Tests for what this crate does about surf 2.3.2 beyond the conformance
//! suite (see "What surf 2.3.2 gets wrong" in the README).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use fetch_async_std::AsyncStd;
use fetch_core::{CancelToken, ErrorKind, Model, Options};
use mock_server::{MockConfig, MockServer};

const PAGE: &str = "<html><head><title>One point zero</title></head><body></body></html>";

/// A server that speaks HTTP/1.0 only, as Python's `http.server` does by
/// default: it reads one request per connection, answers and closes. Returns
/// its address and the number of requests it has read.
fn http_1_0_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&requests);
    // Left blocked in `accept` when the test ends; it holds only its port.
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let (mut head, mut byte) = (Vec::new(), [0u8; 1]);
            while !head.ends_with(b"\r\n\r\n") && matches!(stream.read(&mut byte), Ok(1)) {
                head.push(byte[0]);
            }
            // Counted before answering, so the count is final by the time
            // the client has its answer.
            seen.fetch_add(1, SeqCst);
            let response = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{PAGE}",
                PAGE.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (addr, requests)
}

fn run(urls: &[String], options: &Options) -> Vec<fetch_core::Outcome> {
    AsyncStd::new().run(urls, options, &mut |_| {}, &CancelToken::new())
}

/// async-h1 rejects any response head that is not HTTP/1.1. That cannot
/// change on a second try, so it is `unsupported`, tried once, and says why.
#[test]
fn an_http_1_0_answer_is_unsupported_and_not_retried() {
    let (addr, requests) = http_1_0_server();
    let options = Options::builder()
        .retries(2)
        .backoff(Duration::from_millis(5), Duration::from_millis(20))
        .build()
        .expect("valid options");
    let outcomes = run(&[format!("http://{addr}/")], &options);
    let error = outcomes[0]
        .result
        .as_ref()
        .expect_err("surf cannot read HTTP/1.0");
    assert_eq!(error.kind(), ErrorKind::Unsupported, "{error}");
    assert!(error.message().contains("HTTP/1.0"), "{error}");
    assert_eq!(outcomes[0].attempts, 1);
    assert_eq!(requests.load(SeqCst), 1, "requests the server read");
}

/// Nothing under surf's h1 client decodes a compressed body, so the model
/// must not let the server choose one: without `Accept-Encoding` any coding
/// is acceptable (RFC 9110, 12.5.3).
#[test]
fn asks_for_uncompressed_bodies() {
    let srv = MockServer::start(MockConfig::default()).expect("mock server starts");
    let outcomes = run(&srv.page_urls(3), &Options::default());
    assert!(outcomes.iter().all(|o| o.is_ok()), "{outcomes:?}");
    let expected = [("identity".to_string(), 3)].into();
    assert_eq!(srv.stats().accept_encodings, expected);
}
