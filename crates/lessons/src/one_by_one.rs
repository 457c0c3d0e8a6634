//! # one-by-one: `.await` in a loop is sequential code
//!
//! **The point.** An "async" scraper that awaits each fetch in a `for` loop
//! is exactly as slow as the synchronous one. `async` lets requests overlap;
//! it does not make them overlap.
//!
//! **The symptom.** The server never has more than 1 request in flight, and
//! the batch takes N latencies.
//!
//! **Why, in Rust.** `.await` means "do not go on until this is done". A loop
//! that awaits each fetch before building the next one has, at any moment,
//! one request in flight, whatever runtime runs it. Concurrency needs more
//! than one future alive at once: spawned tasks, or futures polled together
//! (`join_all`, `buffer_unordered`, `FuturesUnordered`).
//!
//! **The fix.** Spawn one task per URL into a `JoinSet`, taking a semaphore
//! permit *before* each spawn, so that C requests are in flight and no more
//! (the permit goes with the task and is released when it ends). Taking it
//! before the spawn, not inside the task, is the next lesson,
//! `unbounded-spawn`.
//!
//! **Sources.** tokio's `JoinSet` docs; tokio's `Semaphore` docs, whose
//! example limits concurrent work by acquiring an owned permit before
//! `tokio::spawn` and moving it into the task.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Client;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

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

/// The mistake: each URL awaited before the next one starts.
pub async fn mistake(client: &Client, urls: Vec<String>) -> Vec<reqwest::Result<String>> {
    let mut pages = Vec::new();
    for url in urls {
        pages.push(fetch(client, &url).await);
    }
    pages
}

/// The fix: one task per URL, at most `c` at a time.
pub async fn fix(client: &Client, urls: Vec<String>, c: usize) -> Vec<reqwest::Result<String>> {
    let permits = Arc::new(Semaphore::new(c));
    let mut tasks = JoinSet::new();
    for url in urls {
        // Fails only once the semaphore is closed, and nothing closes it.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let client = client.clone();
        tasks.spawn(async move {
            let _permit = permit;
            fetch(&client, &url).await
        });
    }
    tasks.join_all().await
}

// ---- measurement ----

#[derive(Clone, Debug)]
pub struct Measured {
    pub pages: u64,
    pub concurrency: usize,
    pub mistake: Side,
    pub fix: Side,
}

#[derive(Clone, Debug)]
pub struct Side {
    /// The most requests the server had in flight at once.
    pub max_in_flight: u64,
    /// Pages fetched without error.
    pub fetched: usize,
    /// Wall-clock time of the batch (only ever printed as a ratio).
    pub elapsed: Duration,
}

pub fn measure(settings: &Settings) -> Result<Measured> {
    let rt = lab::runtime()?;
    let client = lab::http_client()?;
    let c = settings.concurrency;
    let side = |in_a_loop: bool| -> Result<Side> {
        let server = lab::server(settings.latency)?;
        let urls = server.page_urls(settings.pages);
        let start = Instant::now();
        let pages = if in_a_loop {
            rt.block_on(mistake(&client, urls))
        } else {
            rt.block_on(fix(&client, urls, c))
        };
        let elapsed = start.elapsed();
        Ok(Side {
            max_in_flight: settled_on(&rt, &server).max_in_flight,
            fetched: pages.iter().filter(|p| p.is_ok()).count(),
            elapsed,
        })
    };
    let mistake = side(true)?;
    let fix = side(false)?;
    Ok(Measured {
        pages: settings.pages,
        concurrency: c,
        mistake,
        fix,
    })
}

impl Measured {
    /// One request at a time for the mistake; more than one, and never more
    /// than C, for the fix.
    pub fn shown(&self) -> bool {
        self.mistake.max_in_flight == 1
            && (2..=self.concurrency as u64).contains(&self.fix.max_in_flight)
            && self.mistake.fetched as u64 == self.pages
            && self.fix.fetched as u64 == self.pages
    }

    pub fn report(&self) -> Report {
        let c = self.concurrency;
        Report {
            mistake: format!(
                "max in flight {} (C={c}); {} the fix's time",
                self.mistake.max_in_flight,
                lab::ratio(self.mistake.elapsed, self.fix.elapsed)
            ),
            fix: format!("max in flight {} (C={c})", self.fix.max_in_flight),
            verdict: format!(
                "awaited in a loop, {} request at a time; spawned with a permit each, {}",
                self.mistake.max_in_flight, self.fix.max_in_flight
            ),
            shown: self.shown(),
        }
    }
}

pub(crate) fn run(settings: &Settings) -> Result<Report> {
    Ok(measure(settings)?.report())
}
