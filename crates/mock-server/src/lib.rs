//! A real HTTP/1.1 (and HTTPS) server on 127.0.0.1 that every fetchlab test and
//! benchmark fetches from: deterministic pages, simulated latency, injected
//! faults, and counters exact enough to assert with `==`.
//!
//! # How it works
//! [`MockServer::start`] binds a socket, then runs hyper on its *own* thread with
//! its *own* two-worker tokio runtime. That separation is deliberate: a blocking
//! client in the test thread can use the server, and an async client's runtime
//! never shares (or starves) the server's workers, so every concurrency model
//! meets the same server.
//!
//! Each request goes through one handler (`handler.rs`), in this order: count
//! it (`/robots.txt` answers as [`RobotsTxt`] says), parse query overrides,
//! `hang` (never answers), wait the latency, then
//! redirects (and `location`), `status` overrides, `fail_once`, the configured error faults, and
//! finally the page — whole, dripped, cut off mid-body, or oversized.
//!
//! Latency is waited out on a dedicated timer thread (`timer.rs`) rather than
//! with `tokio::time::sleep`, whose millisecond ticks add about 1 ms to every
//! sleep. The README records the measured accuracy.
//!
//! # Counters
//! [`Stats`] is what tests assert on. `in_flight` goes up when the handler starts
//! and down just *before* the last body bytes are handed to hyper (`body.rs`), so
//! a client that waits for each response before sending the next request is
//! never counted twice: `max_in_flight` is exactly the client's concurrency.
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use mock_server::{Latency, MockConfig, MockServer};
//!
//! let server = MockServer::start(MockConfig {
//!     latency: Latency::Fixed(Duration::from_millis(5)),
//!     ..MockConfig::default()
//! })?;
//! let urls = server.page_urls(3); // http://127.0.0.1:PORT/page/0 ..
//! assert!(urls[2].ends_with("/page/2"));
//! // ... fetch them with the client under test, then:
//! assert_eq!(server.stats().total_requests, 0);
//! server.shutdown();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Copying this crate
//! It depends on nothing else in the workspace. The parts worth lifting on their
//! own are `timer.rs` (precise async sleeps without spinning) and `body.rs` (a
//! hand-written hyper `Body` that knows when its last frame leaves).

mod body;
mod config;
mod handler;
mod page;
mod server;
mod stats;
mod timer;
mod tls;

pub use config::{Fault, FaultSet, Faults, Latency, MockConfig, RobotsTxt};
pub use handler::{MAX_BODY_BYTES, MAX_LINKS};
pub use page::{page_html, page_links, page_title};
pub use server::MockServer;
pub use stats::{MAX_REQUEST_STARTS, Stats};
pub use tls::ServerCert;
