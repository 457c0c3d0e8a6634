//! # lock-across-await: a `std` mutex guard held over `.await` deadlocks one thread
//!
//! **The point.** asyncio code shares state between coroutines (results, a
//! progress record) without a lock, and gets away with it: one coroutine
//! runs at a time, and only an `await` can interrupt it. In Rust shared
//! state needs a mutex, and where its guard lives matters.
//!
//! **The symptom.** The batch never finishes, and nothing fails: the server
//! answers the first C requests, then sees none. A deadline is the only way
//! out (here: one second, and the stuck thread is left parked).
//!
//! **Why, in Rust.** The first step to get its page locks the
//! `std::sync::Mutex`, records the page, and awaits a checkpoint while still
//! holding the guard. The next step on the same thread calls `lock()`, and a
//! `std` mutex blocks the *thread* until the guard is released. But the
//! guard's owner is a future that only this thread can resume, so it never
//! is: deadlock, with the thread asleep in the kernel. `tokio::spawn` would
//! have refused to compile this (a `std` `MutexGuard` is not `Send`, so
//! neither is the future), but `join_all`, `select!`, `buffer_unordered` and
//! `spawn_local` ask for no `Send`, and there it compiles. Clippy's
//! `await_holding_lock` lint flags it; the mistake below silences that lint
//! to exist at all.
//!
//! **The fix.** Keep the guard's scope free of `.await`: lock, update, copy
//! out what the checkpoint needs, and let the guard go before awaiting. A
//! `std` mutex is the right lock for data touched briefly, tokio's own docs
//! say so; an async mutex (`tokio::sync::Mutex`) is for when the lock really
//! must be held across an `.await`, and it costs more.
//!
//! **Sources.** Clippy's `await_holding_lock`; tokio's `Mutex` docs ("Which
//! kind of mutex should you use?"); the tokio tutorial, "Shared state"
//! (holding a `MutexGuard` across an `.await`).

use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use reqwest::Client;

use crate::lab::{self, settled};
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

/// Saves progress somewhere that takes a moment (a file, a database); the
/// lesson's stand-in is a pause.
async fn checkpoint(sizes: &[usize], pause: Duration) {
    let _ = sizes;
    tokio::time::sleep(pause).await;
}

/// The mistake's step: the guard is still held while the checkpoint is awaited.
// The mistake this lesson measures; clippy's lint would (rightly) refuse it.
#[allow(clippy::await_holding_lock)]
async fn record_holding_the_lock(
    client: &Client,
    url: &str,
    sizes: &Mutex<Vec<usize>>,
    pause: Duration,
) -> reqwest::Result<()> {
    let page = fetch(client, url).await?;
    // Nothing panics while this lock is held, so it cannot be poisoned; if it
    // were, the sizes would still be valid data.
    let mut sizes = sizes.lock().unwrap_or_else(PoisonError::into_inner);
    sizes.push(page.len());
    checkpoint(&sizes, pause).await;
    Ok(())
}

/// The fix's step: lock, update, copy out, and let the guard go before the `.await`.
async fn record(
    client: &Client,
    url: &str,
    sizes: &Mutex<Vec<usize>>,
    pause: Duration,
) -> reqwest::Result<()> {
    let page = fetch(client, url).await?;
    let snapshot = {
        let mut sizes = sizes.lock().unwrap_or_else(PoisonError::into_inner);
        sizes.push(page.len());
        sizes.clone()
    };
    checkpoint(&snapshot, pause).await;
    Ok(())
}

/// The mistake: C steps at a time, all polled by this one task.
pub async fn mistake(
    client: &Client,
    urls: &[String],
    c: usize,
    pause: Duration,
) -> Vec<reqwest::Result<()>> {
    let sizes = Mutex::new(Vec::new());
    stream::iter(urls)
        .map(|url| record_holding_the_lock(client, url, &sizes, pause))
        .buffer_unordered(c)
        .collect()
        .await
}

/// The fix: the same, with the guard scoped.
pub async fn fix(
    client: &Client,
    urls: &[String],
    c: usize,
    pause: Duration,
) -> Vec<reqwest::Result<()>> {
    let sizes = Mutex::new(Vec::new());
    stream::iter(urls)
        .map(|url| record(client, url, &sizes, pause))
        .buffer_unordered(c)
        .collect()
        .await
}

// ---- measurement ----

/// How long a side may run before it is declared deadlocked. The fix needs
/// two latencies (a fetch and a checkpoint) per round of C: a quarter of
/// this with the default settings.
pub const DEADLINE: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct Measured {
    pub urls: u64,
    pub mistake: Side,
    pub fix: Side,
}

#[derive(Clone, Debug)]
pub struct Side {
    /// The batch ended before the deadline.
    pub finished: bool,
    /// The thread running it panicked (std allows relocking to panic
    /// instead of deadlocking; on Linux it deadlocks).
    pub panicked: bool,
    /// Pages recorded, if it finished.
    pub recorded: usize,
    /// Requests the server received before the deadline.
    pub requests: u64,
}

pub fn measure(settings: &Settings) -> Result<Measured> {
    let client = lab::http_client()?;
    let n = settings.pages;
    let c = settings.concurrency;
    // As long as a response takes: the next response in the batch arrives
    // while the first checkpoint still holds the guard.
    let pause = settings.latency;
    let side = |hold_the_lock: bool| -> Result<Side> {
        let server = lab::server(settings.latency)?;
        let urls = server.page_urls(n);
        let rt = lab::runtime()?;
        let client = client.clone();
        // On a thread of its own, so that a deadlocked runtime blocks that
        // thread and not this one.
        let (done, ended) = mpsc::channel();
        thread::Builder::new()
            .name("lesson-lock-across-await".into())
            .spawn(move || {
                let outcomes = if hold_the_lock {
                    rt.block_on(mistake(&client, &urls, c, pause))
                } else {
                    rt.block_on(fix(&client, &urls, c, pause))
                };
                let recorded = outcomes.iter().filter(|o| o.is_ok()).count();
                // The receiver may have stopped waiting; then nobody needs this.
                let _ = done.send(recorded);
            })?;
        let side = match ended.recv_timeout(DEADLINE) {
            Ok(recorded) => Side {
                finished: true,
                panicked: false,
                recorded,
                requests: settled(&server).total_requests,
            },
            // The thread is deadlocked for good: nothing can release the
            // guard it waits for. It is left parked (it costs no CPU, and ends
            // with the process); the server's shutdown closes its connection.
            Err(mpsc::RecvTimeoutError::Timeout) => Side {
                finished: false,
                panicked: false,
                recorded: 0,
                requests: server.stats().total_requests,
            },
            Err(mpsc::RecvTimeoutError::Disconnected) => Side {
                finished: false,
                panicked: true,
                recorded: 0,
                requests: server.stats().total_requests,
            },
        };
        Ok(side)
    };
    let mistake = side(true)?;
    let fix = side(false)?;
    Ok(Measured {
        urls: n,
        mistake,
        fix,
    })
}

impl Measured {
    /// Stuck before the last request for the mistake; every page recorded
    /// for the fix.
    pub fn shown(&self) -> bool {
        !self.mistake.finished
            && self.mistake.requests < self.urls
            && self.fix.finished
            && self.fix.recorded as u64 == self.urls
    }

    pub fn report(&self) -> Report {
        let n = self.urls;
        let deadline = DEADLINE.as_secs_f64();
        let mistake = if self.mistake.finished {
            format!("finished: {} of {n} recorded", self.mistake.recorded)
        } else if self.mistake.panicked {
            format!("panicked after {} of {n} requests", self.mistake.requests)
        } else {
            format!(
                "deadlocked: {} of {n} requests, then none for {deadline:.0} s",
                self.mistake.requests
            )
        };
        let fix = if self.fix.finished {
            format!("{} of {n} recorded", self.fix.recorded)
        } else {
            format!("stuck after {} of {n} requests", self.fix.requests)
        };
        Report {
            mistake,
            fix,
            verdict: format!(
                "a std MutexGuard held across .await on one thread stopped the batch after {} \
                 request(s); scoped to one statement, {} of {n} pages recorded",
                self.mistake.requests, self.fix.recorded
            ),
            shown: self.shown(),
        }
    }
}

pub(crate) fn run(settings: &Settings) -> Result<Report> {
    Ok(measure(settings)?.report())
}
