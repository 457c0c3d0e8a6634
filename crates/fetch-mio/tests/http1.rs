//! The HTTP/1.1 this crate parses by hand, against responses the mock
//! server (hyper) never sends: a chunked body cut into many reads, with
//! extensions and trailers; a 103 before the real head; an HTTP/1.0 body
//! read to close; and malformed framing, which must be `protocol`. A raw TCP
//! server on 127.0.0.1:0 writes each response a few bytes at a time and
//! counts its connections.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fetch_core::{CancelToken, ErrorKind, Model, Options, Outcome};
use fetch_mio::Mio;

const PAGE: &str = "<title>Chunked</title><a href=/a>a</a><a href=/b>b</a>";

/// The response for a path, and whether the server closes after it.
fn response(path: &str) -> (String, bool) {
    let chunked = {
        let (a, b) = PAGE.split_at(17);
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n\
             {:x};name=value\r\n{a}\r\n{:X}\r\n{b}\r\n0\r\nX-Checksum: none\r\n\r\n",
            a.len(),
            b.len()
        )
    };
    match path {
        "/chunked" => (chunked, false),
        "/early-hints" => (
            format!(
                "HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n\
                 HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{PAGE}",
                PAGE.len()
            ),
            false,
        ),
        "/http10" => (format!("HTTP/1.0 200 OK\r\n\r\n{PAGE}"), true),
        "/bad-chunk" => (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n".into(),
            true,
        ),
        "/two-lengths" => (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".into(),
            true,
        ),
        "/cut-chunk" => (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nonly 9 b".into(),
            true,
        ),
        _ => (
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
            false,
        ),
    }
}

/// Serves one connection: each request's response, written in pieces.
fn serve(stream: TcpStream) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split(' ').nth(1).unwrap_or("/").to_string();
        // The rest of the head.
        while reader.read_line(&mut line)? > 2 {
            line.clear();
        }
        let (text, close) = response(&path);
        for piece in text.as_bytes().chunks(7) {
            writer.write_all(piece)?;
            writer.flush()?;
            std::thread::sleep(Duration::from_micros(200));
        }
        if close {
            return Ok(());
        }
    }
}

/// A raw server on 127.0.0.1:0: its base URL and its connection count.
fn server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let base = format!("http://{}", listener.local_addr().expect("a bound address"));
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || serve(stream));
        }
    });
    (base, connections)
}

fn fetch(paths: &[&str], base: &str) -> Vec<Outcome> {
    let urls: Vec<String> = paths.iter().map(|p| format!("{base}{p}")).collect();
    // One at a time, no retries: each failure shows as it is, and every
    // request goes on the same connection while the server keeps it.
    let options = Options::builder()
        .max_in_flight(1)
        .retries(0)
        .request_timeout(Duration::from_secs(10))
        .build()
        .expect("valid options");
    Mio::new().run(&urls, &options, &mut |_| {}, &CancelToken::new())
}

#[test]
fn chunked_interim_and_read_to_close_bodies_are_read_whole() {
    let (base, connections) = server();
    let outcomes = fetch(&["/chunked", "/early-hints", "/chunked", "/http10"], &base);
    for o in &outcomes {
        let page = o
            .result
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", o.url));
        assert_eq!(page.bytes, PAGE.len() as u64, "{}", o.url);
        assert_eq!(page.links, 2, "{}", o.url);
    }
    let title = outcomes[0].result.as_ref().map(|p| p.title.clone());
    assert_eq!(title, Ok(Some("Chunked".to_string())));
    // All four on one keep-alive connection (the HTTP/1.0 answer ends it).
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[test]
fn malformed_framing_is_a_protocol_error() {
    let (base, connections) = server();
    let outcomes = fetch(
        &["/bad-chunk", "/two-lengths", "/cut-chunk", "/chunked"],
        &base,
    );
    let kinds: Vec<_> = outcomes.iter().map(Outcome::error_kind).collect();
    let protocol = Some(ErrorKind::Protocol);
    assert_eq!(kinds, [protocol, protocol, protocol, None], "{outcomes:#?}");
    // Each malformed response closed its connection; the last page got a new one.
    assert_eq!(connections.load(Ordering::SeqCst), 4);
}
