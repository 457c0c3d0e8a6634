//! # unbounded-spawn: a semaphore inside the task bounds requests, not tasks
//!
//! **The point.** The usual asyncio cure for "too many open connections" is
//! `async with semaphore:` inside the coroutine, with one task per URL
//! created up front by `gather`. It caps the requests in flight; it does
//! nothing for the million tasks, each holding its state until its turn.
//!
//! **The symptom.** The server sees at most C requests in flight, as
//! intended, but the runtime has N tasks alive: memory grows with the length
//! of the URL list, not with the concurrency.
//!
//! **Why, in Rust.** `tokio::spawn` allocates the whole future (its state
//! machine, sized for its largest suspension point, with the client handle
//! and URL it captured) when it is called. A task that starts by awaiting a
//! permit is alive, and allocated, from its spawn to its end. The loop that
//! spawns never waits, so all N exist at once.
//!
//! **The fix.** Take the permit *before* spawning and move it into the task:
//! the spawning loop waits for a free slot, so at most C of our tasks exist
//! at any moment (plus one per open connection: hyper drives each connection
//! in a task of its own).
//!
//! **Sources.** tokio's `Semaphore` docs (the owned permit acquired before
//! `tokio::spawn`); `tokio::runtime::RuntimeMetrics::num_alive_tasks`, which
//! is what is counted here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::thread;
use std::time::Duration;

use reqwest::Client;
use tokio::runtime::Handle;
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

/// The mistake: every task spawned at once, each waiting inside for a permit.
pub async fn mistake(client: &Client, urls: Vec<String>, c: usize) -> Vec<reqwest::Result<String>> {
    let permits = Arc::new(Semaphore::new(c));
    let mut tasks = JoinSet::new();
    for url in urls {
        let (client, permits) = (client.clone(), permits.clone());
        tasks.spawn(async move {
            // Held to the end of the task. (An `Err` here would mean the
            // semaphore was closed, and nothing closes it.)
            let _permit = permits.acquire().await;
            fetch(&client, &url).await
        });
    }
    tasks.join_all().await
}

/// The fix: the permit is taken before the spawn.
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
    /// The most tasks the runtime had alive at once (ours, and hyper's
    /// connection tasks).
    pub peak_tasks: usize,
    /// The most requests the server had in flight at once.
    pub max_in_flight: u64,
    /// Heap growth at its peak during the batch, from glibc's `mallinfo2`
    /// (process-wide, so it includes the mock server's own allocations);
    /// `None` where there is no glibc.
    pub peak_heap_bytes: Option<u64>,
    /// Pages fetched without error.
    pub fetched: usize,
}

pub fn measure(settings: &Settings) -> Result<Measured> {
    let rt = lab::runtime()?;
    let client = lab::http_client()?;
    let c = settings.concurrency;
    let side = |all_up_front: bool| -> Result<Side> {
        let server = lab::server(settings.latency)?;
        let urls = server.page_urls(settings.pages);
        let sampler = Sampler::start(rt.handle().clone())?;
        let pages = if all_up_front {
            rt.block_on(mistake(&client, urls, c))
        } else {
            rt.block_on(fix(&client, urls, c))
        };
        let (peak_tasks, peak_heap_bytes) = sampler.stop();
        Ok(Side {
            peak_tasks,
            max_in_flight: settled_on(&rt, &server).max_in_flight,
            peak_heap_bytes,
            fetched: pages.iter().filter(|p| p.is_ok()).count(),
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

/// Samples the runtime's alive tasks and the heap every millisecond, from a
/// thread of its own, so that the lesson's code carries no probe. A task
/// spawned up front stays alive at least one latency, many samples long.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak_tasks: Arc<AtomicUsize>,
    peak_heap: Arc<AtomicU64>,
    baseline_heap: Option<u64>,
    thread: thread::JoinHandle<()>,
}

const SAMPLE_EVERY: Duration = Duration::from_millis(1);

impl Sampler {
    fn start(runtime: Handle) -> Result<Sampler> {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_tasks = Arc::new(AtomicUsize::new(0));
        let baseline_heap = heap_in_use();
        let peak_heap = Arc::new(AtomicU64::new(baseline_heap.unwrap_or(0)));
        let thread = {
            let (stop, peak_tasks, peak_heap) =
                (stop.clone(), peak_tasks.clone(), peak_heap.clone());
            thread::Builder::new()
                .name("lesson-sampler".into())
                .spawn(move || {
                    // Ends when `stop` is set; `Sampler::stop` always sets it.
                    while !stop.load(Relaxed) {
                        peak_tasks.fetch_max(runtime.metrics().num_alive_tasks(), Relaxed);
                        if let Some(heap) = heap_in_use() {
                            peak_heap.fetch_max(heap, Relaxed);
                        }
                        thread::sleep(SAMPLE_EVERY);
                    }
                })?
        };
        Ok(Sampler {
            stop,
            peak_tasks,
            peak_heap,
            baseline_heap,
            thread,
        })
    }

    /// The peak number of alive tasks, and the peak heap growth.
    fn stop(self) -> (usize, Option<u64>) {
        self.stop.store(true, Relaxed);
        // The loop above cannot panic; if it somehow did, its peaks so far stand.
        let _ = self.thread.join();
        let heap = self
            .baseline_heap
            .map(|base| self.peak_heap.load(Relaxed).saturating_sub(base));
        (self.peak_tasks.load(Relaxed), heap)
    }
}

/// Bytes the allocator has handed out and not taken back, over all its
/// arenas: glibc's `mallinfo2`. Exact for the heap, where an RSS delta of a
/// few kilobytes would be lost in page rounding.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_in_use() -> Option<u64> {
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct by
    // value; it only reads the allocator's state, under the allocator's locks.
    let info = unsafe { libc::mallinfo2() };
    Some(info.uordblks as u64 + info.hblkhd as u64)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_in_use() -> Option<u64> {
    None
}

impl Measured {
    /// N tasks alive for the mistake, at most C (plus the connections'
    /// tasks) for the fix; the server saw at most C in flight both times.
    pub fn shown(&self) -> bool {
        let (n, c) = (self.pages as usize, self.concurrency);
        // The mistake's N tasks stay at least one latency; a sampler delayed
        // through all of it would still see the N - C that wait a second one.
        self.mistake.peak_tasks >= n.saturating_sub(c)
            && self.fix.peak_tasks <= fix_task_bound(c)
            && self.mistake.max_in_flight <= c as u64
            && self.fix.max_in_flight <= c as u64
            && self.mistake.fetched == n
            && self.fix.fetched == n
    }

    pub fn report(&self) -> Report {
        let kib = |b: u64| b as f64 / 1024.0;
        let heap = |s: &Side| match s.peak_heap_bytes {
            Some(b) => format!(", heap +{:.0} KiB", kib(b)),
            None => String::new(),
        };
        // What the extra tasks cost: the two sides differ only in how many
        // of our tasks wait at once (N against C), so the difference in
        // their heap, shared out over the N - C extra tasks, is what one
        // costs. Process-wide noise cancels out in the difference.
        let per_url = match (self.mistake.peak_heap_bytes, self.fix.peak_heap_bytes) {
            (Some(m), Some(f)) => {
                let extra = (self.pages as usize)
                    .saturating_sub(self.concurrency)
                    .max(1);
                format!(
                    ", {:.1} KiB per URL",
                    kib(m.saturating_sub(f)) / extra as f64
                )
            }
            _ => String::new(),
        };
        Report {
            mistake: format!(
                "{} tasks alive for {} URLs{}{per_url}",
                self.mistake.peak_tasks,
                self.pages,
                heap(&self.mistake)
            ),
            fix: format!(
                "{} tasks alive (C={}){}",
                self.fix.peak_tasks,
                self.concurrency,
                heap(&self.fix)
            ),
            verdict: format!(
                "both kept the server at {} and {} in flight, but spawning first kept {} tasks \
                 alive (one per URL, and hyper's, one per connection); taking the permit first, {}",
                self.mistake.max_in_flight,
                self.fix.max_in_flight,
                self.mistake.peak_tasks,
                self.fix.peak_tasks
            ),
            shown: self.shown(),
        }
    }
}

/// The most tasks the fix can have alive: C of ours, one per connection
/// (hyper's), and reqwest's connection-pool idle timer.
pub fn fix_task_bound(c: usize) -> usize {
    2 * c + 1
}

pub(crate) fn run(settings: &Settings) -> Result<Report> {
    Ok(measure(settings)?.report())
}
