//! # cpu-on-the-reactor: parsing on the event loop makes answered requests time out
//!
//! **The point.** Parsing a page is CPU work, and CPU work inside a
//! coroutine stops the event loop: while it runs, nothing else does, and the
//! responses that arrive meanwhile sit unread. The article's fix is
//! `run_in_executor`: the parsing goes to a pool, the loop stays free.
//!
//! **The symptom.** The server answers every request on time, and the
//! client reports timeouts anyway: the responses were read late, after
//! another page's parsing, and by then their deadline had passed.
//!
//! **Why, in Rust.** The same as a blocking call (see `blocking-the-reactor`):
//! a task that computes has no `.await` to yield at, so on its thread no
//! other task runs until it is done, and neither does the reactor, which is
//! what reads sockets and fires timers. A response that arrives during the
//! parsing waits in its socket; the request's deadline passes meanwhile, and
//! when the reactor finally turns it finds both at once: the expired timer
//! and the readable socket. reqwest checks its timer first, so the request
//! fails with a timeout although its answer is right there. (A response
//! the reactor had read before the parsing began is taken when its task
//! next runs, before any timer can fire: late, and never reported.) Here
//! each page takes as long to parse as the timeout, so every response that
//! arrives while another page is parsed is guaranteed to miss its deadline;
//! with lighter pages the same happens as soon as the parsing queued ahead
//! of a response adds up to the timeout's slack.
//!
//! **The fix.** Move the CPU work off the reactor: `spawn_blocking` (or a
//! rayon pool for many cores), and await its result. The reactor stays free
//! to read responses as they arrive.
//!
//! **Sources.** tokio's docs, "CPU-bound tasks and blocking code";
//! `tokio::task::spawn_blocking`; reqwest's `RequestBuilder::timeout` (the
//! deadline covers the whole request, body included); Python's
//! `loop.run_in_executor`.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Client;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::lab::{self, settled_on};
use crate::{Error, Report, Result, Settings};

/// Stands in for parsing a page: `work` of CPU on whatever thread calls it.
fn parse(page: &[u8], work: Duration) -> u64 {
    lab::busy_for(work, page)
}

/// The mistake: C requests in flight, each page parsed inside its task.
pub async fn mistake(
    client: &Client,
    urls: Vec<String>,
    c: usize,
    timeout: Duration,
    work: Duration,
) -> Vec<std::result::Result<u64, Error>> {
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
            let page = client
                .get(&url)
                .timeout(timeout)
                .send()
                .await?
                .bytes()
                .await?;
            // On the reactor's thread: every other task waits until this returns.
            Ok(parse(&page, work))
        });
    }
    tasks.join_all().await
}

/// The fix: the same tasks, with the parsing on the blocking pool.
pub async fn fix(
    client: &Client,
    urls: Vec<String>,
    c: usize,
    timeout: Duration,
    work: Duration,
) -> Vec<std::result::Result<u64, Error>> {
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
            let page = client
                .get(&url)
                .timeout(timeout)
                .send()
                .await?
                .bytes()
                .await?;
            Ok(tokio::task::spawn_blocking(move || parse(&page, work)).await?)
        });
    }
    tasks.join_all().await
}

// ---- measurement ----

/// The request timeout is the slowest page's latency plus this, so that the
/// fix has this much slack for a busy machine before a response is late.
const SLACK: Duration = Duration::from_millis(80);

#[derive(Clone, Debug)]
pub struct Measured {
    pub pages: u64,
    pub concurrency: usize,
    /// The request timeout, and the CPU time each page takes to parse.
    pub timeout: Duration,
    pub work: Duration,
    pub mistake: Side,
    pub fix: Side,
}

#[derive(Clone, Debug)]
pub struct Side {
    /// Requests the client reported as timed out.
    pub timeouts: usize,
    /// Pages fetched and parsed.
    pub parsed: usize,
    /// Requests the server received, and how many of them it never completed.
    pub requests: u64,
    pub unfinished: u64,
}

pub fn measure(settings: &Settings) -> Result<Measured> {
    let rt = lab::runtime()?;
    let client = lab::http_client()?;
    let c = settings.concurrency;
    // Two rounds of C are enough: every round shows it.
    let pages = (2 * c as u64).min(settings.pages.max(1));
    // Within a round of C requests sent together, the k-th answer comes k
    // latencies after they were sent, as a real server's answers spread out:
    // all but the first arrive while the first page is being parsed.
    let latency_of = |id: u64| settings.latency * (1 + (id % c as u64) as u32);
    let timeout = latency_of(c as u64 - 1) + SLACK;
    // As long as the timeout: the first page's parsing ends after the others'
    // deadlines, since its own answer came a latency after they were sent.
    let work = timeout;
    let side = |on_the_reactor: bool| -> Result<Side> {
        let server = lab::server(settings.latency)?;
        let urls: Vec<String> = (0..pages)
            .map(|id| {
                let ms = latency_of(id).as_millis();
                format!("{}?latency_ms={ms}", server.page_url(id))
            })
            .collect();
        let outcomes = if on_the_reactor {
            rt.block_on(mistake(&client, urls, c, timeout, work))
        } else {
            rt.block_on(fix(&client, urls, c, timeout, work))
        };
        let stats = settled_on(&rt, &server);
        Ok(Side {
            timeouts: lab::timeouts(&outcomes),
            parsed: outcomes.iter().filter(|o| o.is_ok()).count(),
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
        work,
        mistake,
        fix,
    })
}

impl Measured {
    /// Timeouts for the mistake, none for the fix, and every request the
    /// fix sent answered.
    pub fn shown(&self) -> bool {
        self.mistake.timeouts >= 1 && self.fix.timeouts == 0 && self.fix.parsed as u64 == self.pages
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
                "with {} ms of parsing per page on the reactor, {} responses the server had \
                 answered within {} ms timed out (timeout {} ms); parsed off the reactor, {}",
                self.work.as_millis(),
                self.mistake.timeouts,
                (self.timeout - SLACK).as_millis(),
                self.timeout.as_millis(),
                self.fix.timeouts
            ),
            shown: self.shown(),
        }
    }
}

pub(crate) fn run(settings: &Settings) -> Result<Report> {
    Ok(measure(settings)?.report())
}
