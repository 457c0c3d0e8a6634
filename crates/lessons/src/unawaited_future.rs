//! # unawaited-future: calling an async function does not run it
//!
//! **The point.** Calling a coroutine function without `await` returns a
//! coroutine object and runs none of it. Python says so late, if at all
//! ("coroutine ... was never awaited", when the object is collected).
//!
//! **The symptom.** The loop returns at once and nothing happened: the
//! server sees 0 requests, no outcome exists, and no error says why.
//!
//! **Why, in Rust.** An `async fn` call only builds a future, a state machine
//! that does nothing until something polls it; dropping it at the `;` drops
//! the work it describes. The compiler warns (`unused_must_use`: "futures do
//! nothing unless you `.await` or poll them"), and with
//! `#![deny(unused_must_use)]` the mistake does not compile at all, which
//! `tests/compile_fail.rs` checks. The warning is silenced by `let _ =`,
//! which is the same mistake spelled differently: clippy's
//! `let_underscore_future` catches that one.
//!
//! A *spawned* task is different. `tokio::spawn` hands the future to the
//! runtime, which polls it whether or not anyone keeps the `JoinHandle`:
//! dropping the handle detaches the task, it does not cancel it. The request
//! goes out; what is lost is its result and its error. (That is asyncio's
//! `create_task` without keeping a reference, minus asyncio's habit of
//! garbage-collecting such tasks.)
//!
//! **The fix.** `.await` the future (or spawn it, and keep the handle if the
//! result matters).
//!
//! **Sources.** The `#[must_use]` message on `std::future::Future`; tokio's
//! `JoinHandle` docs ("A `JoinHandle` *detaches* the associated task when it
//! is dropped"); clippy's `let_underscore_future`.

use std::time::{Duration, Instant};

use reqwest::Client;

use crate::lab::{self, settled_on};
use crate::{Report, Result, Settings};

/// Fetches one page and records its outcome: the side effect both loops want.
async fn save(client: &Client, url: &str, outcomes: &mut Vec<reqwest::Result<String>>) {
    let page = async {
        client
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await
    };
    outcomes.push(page.await);
}

/// The mistake: `save(...)` builds a future, and the `;` drops it.
pub async fn mistake(client: &Client, urls: &[String]) -> Vec<reqwest::Result<String>> {
    let mut outcomes = Vec::new();
    for url in urls {
        // The mistake itself, so the lint that would catch it is allowed here.
        #[allow(unused_must_use)]
        save(client, url, &mut outcomes);
    }
    outcomes
}

/// The fix: the same loop, awaited.
pub async fn fix(client: &Client, urls: &[String]) -> Vec<reqwest::Result<String>> {
    let mut outcomes = Vec::new();
    for url in urls {
        save(client, url, &mut outcomes).await;
    }
    outcomes
}

/// Not a mistake, and often taken for one: the task is spawned and its
/// handle dropped at the `;`. The runtime still runs it.
pub fn detached(client: Client, url: String) {
    tokio::spawn(async move {
        let mut outcomes = Vec::new();
        save(&client, &url, &mut outcomes).await;
    });
}

// ---- measurement ----

/// What the server and the caller saw.
#[derive(Clone, Debug)]
pub struct Measured {
    /// URLs in the batch.
    pub urls: u64,
    /// Requests the server saw from the mistake's batch.
    pub mistake_requests: u64,
    /// Outcomes the mistake returned.
    pub mistake_outcomes: usize,
    /// Requests the server saw from the fix's batch.
    pub fix_requests: u64,
    /// Outcomes the fix returned.
    pub fix_outcomes: usize,
    /// Requests the server saw from one spawned task whose handle was dropped.
    pub detached_requests: u64,
}

/// How long the mistake is given to send something after it returned, in
/// case anything of it still ran: nothing does, and no wait would change that.
const GRACE_LATENCIES: u32 = 3;
/// The bound on waiting for the detached task's request.
const DETACHED_PATIENCE: Duration = Duration::from_secs(2);

pub fn measure(settings: &Settings) -> Result<Measured> {
    // Eight are enough to show it; the fix fetches them one by one.
    let urls = settings.pages.min(8);
    let rt = lab::runtime()?;
    let client = lab::http_client()?;

    let server = lab::server(settings.latency)?;
    let outcomes = rt.block_on(async {
        let outcomes = mistake(&client, &server.page_urls(urls)).await;
        tokio::time::sleep(settings.latency * GRACE_LATENCIES).await;
        outcomes
    });
    let (mistake_requests, mistake_outcomes) =
        (settled_on(&rt, &server).total_requests, outcomes.len());

    let server = lab::server(settings.latency)?;
    let outcomes = rt.block_on(fix(&client, &server.page_urls(urls)));
    let (fix_requests, fix_outcomes) = (settled_on(&rt, &server).total_requests, outcomes.len());

    let server = lab::server(settings.latency)?;
    rt.block_on(async {
        detached(client.clone(), server.page_url(0));
        // The runtime must keep running for the task to run: wait here,
        // asleep, until the server has answered it (or the bound passes).
        let until = Instant::now() + DETACHED_PATIENCE;
        loop {
            let stats = server.stats();
            let answered = stats.total_requests > 0 && stats.in_flight == 0;
            if answered || Instant::now() >= until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let detached_requests = settled_on(&rt, &server).total_requests;

    Ok(Measured {
        urls,
        mistake_requests,
        mistake_outcomes,
        fix_requests,
        fix_outcomes,
        detached_requests,
    })
}

impl Measured {
    /// The mistake sent nothing and returned nothing; the fix sent and
    /// returned one per URL; the detached task still sent its request.
    pub fn shown(&self) -> bool {
        self.mistake_requests == 0
            && self.mistake_outcomes == 0
            && self.fix_requests == self.urls
            && self.fix_outcomes as u64 == self.urls
            && self.detached_requests == 1
    }

    pub fn report(&self) -> Report {
        let n = self.urls;
        Report {
            mistake: format!(
                "{} of {n} requests sent, {} outcomes",
                self.mistake_requests, self.mistake_outcomes
            ),
            fix: format!(
                "{} of {n} sent, {} outcomes; dropped JoinHandle: {} of 1 sent",
                self.fix_requests, self.fix_outcomes, self.detached_requests
            ),
            verdict: format!(
                "never awaited, the futures never ran: the server saw {} requests; awaited, {}. \
                 A spawned task runs without its handle: {} request.",
                self.mistake_requests, self.fix_requests, self.detached_requests
            ),
            shown: self.shown(),
        }
    }
}

pub(crate) fn run(settings: &Settings) -> Result<Report> {
    Ok(measure(settings)?.report())
}
