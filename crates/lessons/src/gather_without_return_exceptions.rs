//! # gather-without-return-exceptions: one failure must not cost the batch
//!
//! **The point.** `asyncio.gather(*tasks)` raises the first exception, and
//! every other result is lost to the caller; `return_exceptions=True` makes
//! each failure one result among the others. In a crawl, a failing URL is
//! data, not a reason to lose the batch.
//!
//! **The symptom.** One URL of N fails, and the batch returns no outcome at
//! all. The other requests are cut off mid-flight: the server counts them
//! started and never completed (its `unfinished` counter).
//!
//! **Why, in Rust.** `futures::future::try_join_all` (and `?` on a joined
//! batch, and `tokio::try_join!`) returns the first `Err` at once and drops
//! the futures still running. Dropping a future cancels it; reqwest drops
//! the request, and hyper closes its connection, which is where the server
//! sees it end. Rust is stricter than asyncio here: asyncio's `gather`
//! leaves the other tasks running unobserved, while a dropped Rust future
//! is gone, its work and its result with it.
//!
//! **The fix.** Collect a `Result` per URL: `futures::future::join_all`
//! (or a `JoinSet`, as in `one-by-one`) and decide per outcome. N URLs, N
//! outcomes, whatever fails.
//!
//! **Sources.** The docs of `futures::future::try_join_all` ("If any future
//! returns an error then all other futures will be canceled and an error
//! will be returned immediately") and `join_all`; Python's
//! `asyncio.gather(..., return_exceptions=True)`.

use futures::future::{join_all, try_join_all};
use reqwest::Client;

use crate::lab::{self, settled_on};
use crate::{Report, Result, Settings};

async fn fetch(client: &Client, url: &str) -> reqwest::Result<String> {
    client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await
}

/// The mistake: the batch is one `Result`, and the first error is all of it.
pub async fn mistake(client: &Client, urls: &[String]) -> reqwest::Result<Vec<String>> {
    try_join_all(urls.iter().map(|url| fetch(client, url))).await
}

/// The fix: one `Result` per URL.
pub async fn fix(client: &Client, urls: &[String]) -> Vec<reqwest::Result<String>> {
    join_all(urls.iter().map(|url| fetch(client, url))).await
}

// ---- measurement ----

/// The other pages take this many times the failing page's latency, so
/// that they are all in flight, started and not answered, when it fails.
const SLOW: u32 = 5;

#[derive(Clone, Debug)]
pub struct Measured {
    pub urls: u64,
    pub mistake: Side,
    pub fix: Side,
}

#[derive(Clone, Debug)]
pub struct Side {
    /// Outcomes the caller got back (successes and failures).
    pub outcomes: usize,
    /// Requests the server received.
    pub requests: u64,
    /// Requests the server never completed: the client went away first.
    pub unfinished: u64,
}

pub fn measure(settings: &Settings) -> Result<Measured> {
    let rt = lab::runtime()?;
    let client = lab::http_client()?;
    let n = settings.pages.max(2);
    let failing = n / 2;
    let urls = |server: &mock_server::MockServer| -> Vec<String> {
        (0..n)
            .map(|id| {
                if id == failing {
                    // Answered first, with a 500.
                    let fast = settings.latency.as_millis();
                    format!("{}?status=500&latency_ms={fast}", server.page_url(id))
                } else {
                    server.page_url(id)
                }
            })
            .collect()
    };

    let server = lab::server(settings.latency * SLOW)?;
    let outcomes = match rt.block_on(mistake(&client, &urls(&server))) {
        Ok(pages) => pages.len(),
        Err(_) => 0,
    };
    let stats = settled_on(&rt, &server);
    let mistake = Side {
        outcomes,
        requests: stats.total_requests,
        unfinished: stats.unfinished,
    };

    let server = lab::server(settings.latency * SLOW)?;
    let outcomes = rt.block_on(fix(&client, &urls(&server))).len();
    let stats = settled_on(&rt, &server);
    let fix = Side {
        outcomes,
        requests: stats.total_requests,
        unfinished: stats.unfinished,
    };
    Ok(Measured {
        urls: n,
        mistake,
        fix,
    })
}

impl Measured {
    /// Fewer outcomes than URLs and requests cut off for the mistake; one
    /// outcome per URL and none cut off for the fix.
    pub fn shown(&self) -> bool {
        (self.mistake.outcomes as u64) < self.urls
            && self.mistake.unfinished >= 1
            && self.fix.outcomes as u64 == self.urls
            && self.fix.unfinished == 0
    }

    pub fn report(&self) -> Report {
        let n = self.urls;
        let side = |s: &Side| {
            format!(
                "{} outcomes of {n}; {} of {} requests cut off",
                s.outcomes, s.unfinished, s.requests
            )
        };
        Report {
            mistake: side(&self.mistake),
            fix: side(&self.fix),
            verdict: format!(
                "one 500 among {n} URLs: try_join_all returned {} outcomes and dropped {} \
                 requests mid-flight; join_all returned {}",
                self.mistake.outcomes, self.mistake.unfinished, self.fix.outcomes
            ),
            shown: self.shown(),
        }
    }
}

pub(crate) fn run(settings: &Settings) -> Result<Report> {
    Ok(measure(settings)?.report())
}
