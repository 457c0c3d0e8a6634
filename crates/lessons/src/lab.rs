//! Measurement code the lessons share: their server, clients and runtime,
//! and waiting for the server's counters to settle. Nothing here is part of
//! a mistake or a fix; those are written out in full in each lesson's file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mock_server::{Latency, MockConfig, MockServer, Stats};
use tokio::runtime::Runtime;

use crate::Result;

/// A fresh server (fresh counters) answering every page after `latency`.
pub(crate) fn server(latency: Duration) -> Result<MockServer> {
    Ok(MockServer::start(MockConfig {
        latency: Latency::Fixed(latency),
        ..MockConfig::default()
    })?)
}

/// How long the server may take to notice that a client went away. It
/// notices within milliseconds; the bound only keeps a surprise from hanging.
const SETTLE: Duration = Duration::from_secs(2);

/// The server's counters once nothing is in flight (or `SETTLE` later). A
/// request the client dropped ends when the server sees its connection
/// close, a moment after the client's code returned, and only then is it
/// counted `unfinished`. For blocking clients, whose sockets close as the
/// call returns.
pub(crate) fn settled(server: &MockServer) -> Stats {
    let until = Instant::now() + SETTLE;
    loop {
        let stats = server.stats();
        if stats.in_flight == 0 || Instant::now() >= until {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The same, for async clients: waits *inside* `rt`, because a dropped
/// request's connection is closed by hyper's connection task, which runs
/// only while the runtime does. (Outside `block_on`, a current-thread
/// runtime runs nothing, and the server would answer the abandoned request
/// in full.)
pub(crate) fn settled_on(rt: &Runtime, server: &MockServer) -> Stats {
    rt.block_on(async {
        let until = Instant::now() + SETTLE;
        loop {
            let stats = server.stats();
            if stats.in_flight == 0 || Instant::now() >= until {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// A current-thread runtime: one thread, so that "what else could run while
/// this task blocks" has one answer, nothing.
pub(crate) fn runtime() -> Result<Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The async client the lessons' code receives. `no_proxy`: the server is on
/// loopback, and a proxy from the environment must not stand in between.
///
/// The TLS configuration is never used (every URL is `http://127.0.0.1`),
/// but reqwest with `rustls-no-provider` needs one to build, or it panics
/// (see Cargo.toml). If you copy this for `https`, give it real roots.
pub(crate) fn http_client() -> Result<reqwest::Client> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(tls)
        .build()?)
}

/// The blocking client, for the same reason without a proxy. The timeout
/// only bounds the measurement; no lesson's symptom depends on it.
pub(crate) fn blocking_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// Keeps this thread's CPU busy for `work` of wall-clock time: a stand-in
/// for parsing a page that is the same length on a busy machine as on an idle
/// one. Returns a value derived from the loop so it cannot be optimised away.
pub(crate) fn busy_for(work: Duration, page: &[u8]) -> u64 {
    let start = Instant::now();
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    while start.elapsed() < work {
        for &byte in page.iter().take(256) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    std::hint::black_box(hash)
}

/// "4.1x": how many times longer the mistake took than the fix, measured in
/// the same run. The only form in which a lesson prints a time.
pub(crate) fn ratio(mistake: Duration, fix: Duration) -> String {
    let fix = fix.as_secs_f64().max(1e-6);
    format!("{:.1}x", mistake.as_secs_f64() / fix)
}

/// How many of `outcomes` are client timeouts (reqwest's own, or tokio's
/// `timeout` around a request).
pub(crate) fn timeouts<T>(outcomes: &[std::result::Result<T, crate::Error>]) -> usize {
    let is_timeout = |err: &crate::Error| {
        err.downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout)
            || err.is::<tokio::time::error::Elapsed>()
    };
    outcomes
        .iter()
        .filter(|o| o.as_ref().is_err_and(is_timeout))
        .count()
}
