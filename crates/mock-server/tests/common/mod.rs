//! Helpers shared by the integration tests: a ureq agent that reports every
//! status as data, and a raw TCP client for what a real client library would
//! hide from us (exact headers, truncated bodies, idle closes).

#![allow(dead_code)] // each test file uses a different subset

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// An agent that returns 4xx/5xx as responses (not errors) and never follows
/// redirects, so tests see exactly what the server sent.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// GET `url` with `agent`; panics (failing the test) on a transport error.
pub fn get(agent: &ureq::Agent, url: &str) -> Reply {
    let mut resp = agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = resp
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|e| panic!("GET {url} body: {e}"));
    Reply {
        status,
        headers,
        body,
    }
}

/// What a raw `Connection: close` GET produced, including how the body ended.
pub struct Raw {
    pub head: String,
    pub body: Vec<u8>,
    /// `Some` if reading stopped with an error (e.g. connection reset) rather than EOF.
    pub read_error: Option<io::Error>,
}

impl Raw {
    pub fn status(&self) -> u16 {
        self.head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// Sends `GET path` on a fresh connection and reads until EOF or error.
pub fn raw_get(addr: SocketAddr, path: &str) -> Raw {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let read_error = loop {
        match s.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) => break Some(e),
        }
    };
    let split = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(data.len(), |p| p + 4);
    let body = data.split_off(split);
    Raw {
        head: String::from_utf8_lossy(&data).into_owned(),
        body,
        read_error,
    }
}

/// Polls `cond` every few milliseconds until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Extracts the text of the first `<title>`.
pub fn title(html: &str) -> Option<&str> {
    let start = html.find("<title>")? + "<title>".len();
    let end = html[start..].find("</title>")? + start;
    Some(&html[start..end])
}
