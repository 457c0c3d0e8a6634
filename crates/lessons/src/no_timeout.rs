//! # no-timeout: a server that never answers holds its slot forever
//!
//! **The point.** Some servers accept the connection and never reply. A
//! crawler without a timeout per request waits for them as long as its
//! client's default allows (aiohttp's: five minutes; reqwest's: forever),
//! and all that time the request holds one of the crawler's slots.
//!
//! **The symptom.** With C slots, each stuck request takes one away until
//! the global deadline, if there is one (or forever). With one slot, as
//! here, the stuck page is the only request the server sees: the pages
//! behind it are not fetched before the deadline.
//!
//! **Why, in Rust.** reqwest sets no timeout by default (neither does ureq,
//! nor hyper). A future that waits on a socket that never becomes readable
//! is pending forever, and the permit it holds with it; nothing in the
//! runtime decides that a wait has gone on too long.
//!
//! **The fix.** A timeout per request, so that a stuck one becomes an error
//! and frees its slot: `tokio::time::timeout(limit, fetch(..))` (or
//! reqwest's `RequestBuilder::timeout`, or `ClientBuilder::timeout` for every
//! request). When the timeout drops the request future, the connection is
//! closed too. Keep a global deadline as well: it bounds the batch, the
//! per-request timeout bounds each slot.
//!
//! **Sources.** The docs of `tokio::time::timeout` and reqwest's
//! `ClientBuilder::timeout` ("Default is no timeout"); aiohttp's
//! `ClientTimeout` (total: 5 minutes).

use std::sync::Arc;
use std::time::Duration;

use reqwest::Client;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::lab::{self, settled_on};
use crate::{Error, Report, Result, Settings};

async fn fetch(client: &Client, url: &str) -> std::result::Result<String, Error> {
    Ok(client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// The mistake: `slots` requests at a time, each allowed to take forever.
pub async fn mistake(
    client: &Client,
    urls: Vec<String>,
    slots: usize,
) -> Vec<std::result::Result<String, Error>> {
    let permits = Arc::new(Semaphore::new(slots));
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

/// The fix: each request gets `limit`, and then gives its slot back.
pub async fn fix(
    client: &Client,
    urls: Vec<String>,
    slots: usize,
    limit: Duration,
) -> Vec<std::result::Result<String, Error>> {
    let permits = Arc::new(Semaphore::new(slots));
    let mut tasks = JoinSet::new();
    for url in urls {
        // Fails only once the semaphore is closed, and nothing closes it.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let client = client.clone();
        tasks.spawn(async move {
            let _permit = permit;
            tokio::time::timeout(limit, fetch(&client, &url)).await?
        });
    }
    tasks.join_all().await
}

// ---- measurement ----

/// The caller's deadline for the whole batch, which both sides run under.
/// (The mistake uses all of it.)
pub const DEADLINE: Duration = Duration::from_secs(1);
/// One slot: with C slots a stuck request costs 1/C of the throughput; with
/// one it costs all of it, which turns the symptom into a count.
const SLOTS: usize = 1;
/// Pages queued behind the stuck one.
const BEHIND: u64 = 8;
/// The fix's per-request limit, in latencies: well above a normal answer.
const LIMIT_LATENCIES: u32 = 5;

#[derive(Clone, Debug)]
pub struct Measured {
    /// Pages behind the stuck one.
    pub behind: u64,
    /// The fix's per-request limit.
    pub limit: Duration,
    pub mistake: Side,
    pub fix: Side,
}

#[derive(Clone, Debug)]
pub struct Side {
    /// Pages behind the stuck one that reached the server before the deadline.
    pub served_behind: u64,
    /// Whether the batch ended before the deadline.
    pub finished: bool,
    /// Timeouts among the outcomes (when the batch finished).
    pub timeouts: usize,
}

pub fn measure(settings: &Settings) -> Result<Measured> {
    let rt = lab::runtime()?;
    let client = lab::http_client()?;
    let limit = settings.latency * LIMIT_LATENCIES;
    let side = |with_timeout: bool| -> Result<Side> {
        let server = lab::server(settings.latency)?;
        // Page 0 never answers; pages 1..=BEHIND are ordinary.
        let mut urls = vec![format!("{}?hang=1", server.page_url(0))];
        urls.extend((1..=BEHIND).map(|id| server.page_url(id)));
        let batch = async {
            if with_timeout {
                fix(&client, urls, SLOTS, limit).await
            } else {
                mistake(&client, urls, SLOTS).await
            }
        };
        let outcomes = rt.block_on(async { tokio::time::timeout(DEADLINE, batch).await });
        let stats = settled_on(&rt, &server);
        let served_behind = (1..=BEHIND)
            .filter(|id| stats.requests_per_id.contains_key(id))
            .count() as u64;
        let (finished, timeouts) = match &outcomes {
            Ok(outcomes) => (true, lab::timeouts(outcomes)),
            Err(_) => (false, 0),
        };
        Ok(Side {
            served_behind,
            finished,
            timeouts,
        })
    };
    let mistake = side(false)?;
    let fix = side(true)?;
    Ok(Measured {
        behind: BEHIND,
        limit,
        mistake,
        fix,
    })
}

impl Measured {
    /// Nothing behind the stuck page before the deadline for the mistake;
    /// everything, and one timeout, for the fix.
    pub fn shown(&self) -> bool {
        self.mistake.served_behind == 0
            && !self.mistake.finished
            && self.fix.finished
            && self.fix.served_behind == self.behind
            && self.fix.timeouts == 1
    }

    pub fn report(&self) -> Report {
        let deadline = DEADLINE.as_secs_f64();
        Report {
            mistake: format!(
                "{} of {} pages behind a hung one in {deadline:.0} s (C={SLOTS})",
                self.mistake.served_behind, self.behind
            ),
            fix: format!(
                "{} of {}; the hung one timed out after {} ms",
                self.fix.served_behind,
                self.behind,
                self.limit.as_millis()
            ),
            verdict: format!(
                "without a timeout the hung request held the only slot until the {deadline:.0} s \
                 deadline ({} pages fetched behind it); with {} ms per request, {}",
                self.mistake.served_behind,
                self.limit.as_millis(),
                self.fix.served_behind
            ),
            shown: self.shown(),
        }
    }
}

pub(crate) fn run(settings: &Settings) -> Result<Report> {
    Ok(measure(settings)?.report())
}
