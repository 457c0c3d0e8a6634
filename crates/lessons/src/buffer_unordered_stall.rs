//! # buffer-unordered-stall: slow work in the loop starves the buffered requests
//!
//! **The point.** A scraper's pipeline: fetch pages C at a time, and store
//! each one as it arrives. In asyncio the fetches are tasks, and they keep
//! running while one page is stored. Rust's idiom for the same pipeline,
//! `stream::iter(urls).map(fetch).buffer_unordered(C)`, looks equivalent
//! and is not.
//!
//! **The symptom.** The server answers every request on time; the client
//! reports most of them as timed out. With the slow step in the loop body
//! taking longer than the request timeout, every request that was in flight
//! alongside the page being stored times out.
//!
//! **Why, in Rust.** `buffer_unordered` does not spawn anything: it holds C
//! futures and polls them only while the stream itself is polled, inside
//! `next().await`. While the loop body awaits the slow step, nobody polls
//! the buffered fetches. Their responses arrive (hyper's connection tasks
//! read them), but the futures that would take them are asleep, and when
//! they are polled again their deadline has passed: reqwest checks the
//! deadline first, and reports a timeout for a response that is sitting
//! there. This is rust-lang/futures-rs#2387, "Footgun lurking in
//! `FuturesUnordered` and other concurrency-enabling streams"; the same
//! starvation can deadlock a semaphore.
//!
//! **The fix.** Make each fetch a task, so the runtime drives it whatever
//! the loop is doing: `.map(|url| tokio::spawn(fetch(url)))` before
//! `buffer_unordered` (still C at a time), or a `JoinSet`. Or keep the loop
//! body short: hand the slow step to a task or a channel.
//!
//! **Sources.** rust-lang/futures-rs#2387 and the async working group's
//! story built on it, "Barbara battles buffered streams" (wg-async's status
//! quo stories); reqwest's `RequestBuilder::timeout`.

use std::time::Duration;

use futures::stream::{self, StreamExt};
use reqwest::Client;

use crate::lab::{self, settled_on};
use crate::{Error, Report, Result, Settings};

async fn fetch(client: Client, url: String, timeout: Duration) -> reqwest::Result<String> {
    let response = client.get(&url).timeout(timeout).send().await?;
    response.error_for_status()?.text().await
}

/// The slow step of the loop: awaiting something else, a database write,
/// say. Not CPU: the thread is free the whole time.
async fn store(_page: String, slow: Duration) {
    tokio::time::sleep(slow).await;
}

/// The mistake: fetches buffered in the stream, a slow step in the loop.
pub async fn mistake(
    client: &Client,
    urls: Vec<String>,
    c: usize,
    timeout: Duration,
    slow: Duration,
) -> Vec<std::result::Result<(), Error>> {
    let mut pages = stream::iter(urls)
        .map(|url| fetch(client.clone(), url, timeout))
        .buffer_unordered(c);
    let mut outcomes = Vec::new();
    while let Some(page) = pages.next().await {
        match page {
            Ok(page) => {
                // While this runs, the other buffered fetches are not polled.
                store(page, slow).await;
                outcomes.push(Ok(()));
            }
            Err(e) => outcomes.push(Err(e.into())),
        }
    }
    outcomes
}

/// The fix: each fetch spawned, so it runs while the loop is storing.
pub async fn fix(
    client: &Client,
    urls: Vec<String>,
    c: usize,
    timeout: Duration,
    slow: Duration,
) -> Vec<std::result::Result<(), Error>> {
    let mut pages = stream::iter(urls)
        .map(|url| tokio::spawn(fetch(client.clone(), url, timeout)))
        .buffer_unordered(c);
    let mut outcomes = Vec::new();
    while let Some(joined) = pages.next().await {
        match joined {
            Ok(Ok(page)) => {
                store(page, slow).await;
                outcomes.push(Ok(()));
            }
            Ok(Err(e)) => outcomes.push(Err(e.into())),
            // The task panicked (it cannot here), or the runtime is shutting down.
            Err(e) => outcomes.push(Err(e.into())),
        }
    }
    outcomes
}

// ---- measurement ----

/// The request timeout is the latency plus this: the fix's slack for a busy
/// machine before an answer would count as late.
const SLACK: Duration = Duration::from_millis(80);

#[derive(Clone, Debug)]
pub struct Measured {
    pub pages: u64,
    pub concurrency: usize,
    /// The request timeout, and how long storing one page takes.
    pub timeout: Duration,
    pub slow: Duration,
    pub mistake: Side,
    pub fix: Side,
}

#[derive(Clone, Debug)]
pub struct Side {
    /// Requests the client reported as timed out.
    pub timeouts: usize,
    /// Pages stored.
    pub stored: usize,
    /// Requests the server received, and how many of them it never completed.
    pub requests: u64,
    pub unfinished: u64,
}

pub fn measure(settings: &Settings) -> Result<Measured> {
    let rt = lab::runtime()?;
    let client = lab::http_client()?;
    let c = settings.concurrency;
    // Two rounds of C: each round shows it, and the fix stores every page.
    let pages = (2 * c as u64).min(settings.pages.max(1));
    let timeout = settings.latency + SLACK;
    // Longer than the timeout: the fetches buffered beside a stored page
    // cannot be polled before their deadline.
    let slow = timeout + settings.latency;
    let side = |buffered: bool| -> Result<Side> {
        let server = lab::server(settings.latency)?;
        let urls = server.page_urls(pages);
        let outcomes = if buffered {
            rt.block_on(mistake(&client, urls, c, timeout, slow))
        } else {
            rt.block_on(fix(&client, urls, c, timeout, slow))
        };
        let stats = settled_on(&rt, &server);
        Ok(Side {
            timeouts: lab::timeouts(&outcomes),
            stored: outcomes.iter().filter(|o| o.is_ok()).count(),
            requests: stats.total_requests,
            unfinished: stats.unfinished,
        })
    };
    let mistake = side(true)?;
    let fix = side(false)?;
    Ok(Measured {
        pages,
        concurrency: c,
        timeout,
        slow,
        mistake,
        fix,
    })
}

impl Measured {
    /// Timeouts on answered requests for the mistake; none for the fix,
    /// which stores every page.
    pub fn shown(&self) -> bool {
        self.mistake.timeouts >= 1
            && self.mistake.unfinished == 0
            && self.fix.timeouts == 0
            && self.fix.stored as u64 == self.pages
    }

    pub fn report(&self) -> Report {
        let side = |s: &Side| {
            format!(
                "{} of {} timed out; server answered {} of {}",
                s.timeouts,
                self.pages,
                s.requests - s.unfinished,
                s.requests
            )
        };
        Report {
            mistake: side(&self.mistake),
            fix: side(&self.fix),
            verdict: format!(
                "with a {} ms step in the loop, {} requests the server had answered timed out \
                 unpolled in buffer_unordered; spawned, {}",
                self.slow.as_millis(),
                self.mistake.timeouts,
                self.fix.timeouts
            ),
            shown: self.shown(),
        }
    }
}

pub(crate) fn run(settings: &Settings) -> Result<Report> {
    Ok(measure(settings)?.report())
}
