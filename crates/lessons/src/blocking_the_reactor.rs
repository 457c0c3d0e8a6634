//! # blocking-the-reactor: a blocking call inside a task stops every task
//!
//! **The point.** A blocking call (`requests.get`, `time.sleep`) inside an
//! `async def` looks concurrent, and the event loop runs it one request at a
//! time: a blocking call never gives control back to the loop.
//!
//! **The symptom.** C tasks are meant to run at once, and the server never
//! sees more than 1 request in flight; the batch takes N latencies instead
//! of N/C.
//!
//! **Why, in Rust.** A task gives its thread back to the runtime only at an
//! `.await` that is not ready. A blocking call (`ureq`'s `call()`, a
//! `std::thread::sleep`, a `std::fs` read) has no `.await`: it holds the
//! worker thread until it returns. On a current-thread runtime that thread is
//! the only one, so every other task, and the reactor that would tell them
//! their sockets are ready, waits for it. On a multi-thread runtime the same
//! mistake costs one worker per blocking call, which hides it until there
//! are more blocking calls than cores.
//!
//! **The fix.** Give blocking code a thread of its own:
//! `tokio::task::spawn_blocking` runs it on the runtime's blocking pool and
//! returns a future to await (asyncio's `run_in_executor`). Better still,
//! use an async client (reqwest), whose waiting is an `.await`.
//!
//! **Sources.** tokio's docs, "CPU-bound tasks and blocking code" (crate
//! root) and `tokio::task::spawn_blocking`; Alice Ryhl, "Async: What is
//! blocking?" (ryhl.io, 2020).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::lab::{self, settled};
use crate::{Report, Result, Settings};

/// One page with the blocking client: returns once the whole body is read.
fn get_blocking(agent: &ureq::Agent, url: &str) -> std::result::Result<usize, ureq::Error> {
    Ok(agent.get(url).call()?.body_mut().read_to_vec()?.len())
}

/// The mistake: C tasks at a time, each making a blocking call.
pub async fn mistake(
    agent: &ureq::Agent,
    urls: Vec<String>,
    c: usize,
) -> Vec<std::result::Result<usize, ureq::Error>> {
    let permits = Arc::new(Semaphore::new(c));
    let mut tasks = JoinSet::new();
    for url in urls {
        // Fails only once the semaphore is closed, and nothing closes it.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let agent = agent.clone();
        tasks.spawn(async move {
            let _permit = permit;
            // Holds the runtime's thread until the response is in: no other
            // task runs, so no other request is even sent.
            get_blocking(&agent, &url)
        });
    }
    tasks.join_all().await
}

/// The fix: the same tasks, with the blocking call on the blocking pool.
pub async fn fix(
    agent: &ureq::Agent,
    urls: Vec<String>,
    c: usize,
) -> Vec<std::result::Result<usize, ureq::Error>> {
    let permits = Arc::new(Semaphore::new(c));
    let mut tasks = JoinSet::new();
    for url in urls {
        // Fails only once the semaphore is closed, and nothing closes it.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let agent = agent.clone();
        tasks.spawn_blocking(move || {
            let _permit = permit;
            get_blocking(&agent, &url)
        });
    }
    tasks.join_all().await
}

// ---- measurement ----

/// What the server saw of each side.
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
    let agent = lab::blocking_agent();
    let c = settings.concurrency;
    let side = |blocking_on_the_reactor: bool| -> Result<Side> {
        let server = lab::server(settings.latency)?;
        let urls = server.page_urls(settings.pages);
        let start = Instant::now();
        let outcomes = if blocking_on_the_reactor {
            rt.block_on(mistake(&agent, urls, c))
        } else {
            rt.block_on(fix(&agent, urls, c))
        };
        let elapsed = start.elapsed();
        Ok(Side {
            max_in_flight: settled(&server).max_in_flight,
            fetched: outcomes.iter().filter(|o| o.is_ok()).count(),
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
    /// One request at a time for the mistake, more than one for the fix.
    pub fn shown(&self) -> bool {
        self.mistake.max_in_flight == 1
            && self.fix.max_in_flight >= 2
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
                "blocking calls on the reactor ran one at a time (max in flight {}); \
                 on the blocking pool, {} at once",
                self.mistake.max_in_flight, self.fix.max_in_flight
            ),
            shown: self.shown(),
        }
    }
}

pub(crate) fn run(settings: &Settings) -> Result<Report> {
    Ok(measure(settings)?.report())
}
