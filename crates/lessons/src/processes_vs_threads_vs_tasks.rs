//! # processes-vs-threads-vs-tasks: what one unit of concurrency costs
//!
//! **The point.** "multiprocessing ate my RAM": a Python process pool gives
//! each worker a whole interpreter, tens of megabytes before it fetches
//! anything; threads are lighter, coroutines lighter still. Here all three
//! are measured, doing the same work.
//!
//! **The symptom.** C worker processes fetching the same pages as C threads
//! or C tasks hold megabytes of resident memory each, where a thread holds
//! tens of kilobytes and a task a few.
//!
//! **Why, in Rust.** A process is a whole program: its own address space,
//! its own copy of the allocator's state, its own client and connection
//! pool, and its own resident pages of the binary and the C library (shared
//! with the other processes in physical memory, but counted in each one's
//! resident set, which is how most tools report it). A thread shares all
//! of that and adds a stack (only the pages it touches become resident) and
//! an allocator arena. A task adds only its future, sized at compile time,
//! and its share of the connection pool. Rust does not change the ranking;
//! it shrinks the first entry, since there is no interpreter to copy.
//!
//! **The fix.** For many requests that mostly wait, tasks (or, for a few
//! dozen, threads). Processes are for isolation (a crash or a leak that
//! must not take the others along), not for I/O concurrency.
//!
//! **How it is measured.** Resident memory from `/proc` (Linux only): for the
//! processes, each worker's peak (`VmHWM`) read while it is still alive,
//! summed; for threads and tasks, the growth of this process's peak after
//! resetting it (`/proc/self/clear_refs`). That growth also includes the mock
//! server's, which runs in this process (a bias against threads and tasks),
//! and memory freed by earlier work is reused (a bias for them): compare the
//! orders of magnitude, not the digits.
//!
//! **Sources.** proc(5): `VmHWM`, `VmRSS`, `/proc/[pid]/clear_refs`; tokio's
//! docs ("tasks are light weight"); Python's `multiprocessing` docs on the
//! start methods (each worker a fresh interpreter with `spawn`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use reqwest::Client;
use tokio::task::JoinSet;

use crate::lab::{self, settled, settled_on};
use crate::{Report, Result, Settings, Worker};

/// Fetches `urls` one after the other with a blocking client; returns how
/// many succeeded. What each process and each thread does.
fn fetch_blocking(agent: &ureq::Agent, urls: &[String]) -> usize {
    let get = |url: &String| -> std::result::Result<Vec<u8>, ureq::Error> {
        agent.get(url).call()?.body_mut().read_to_vec()
    };
    urls.iter().filter(|url| get(url).is_ok()).count()
}

async fn fetch(client: &Client, url: &str) -> reqwest::Result<String> {
    client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await
}

/// The worker process: fetches the URLs it was given, reports how many on
/// stdout, then waits for its stdin to close before it exits, so that its
/// parent can read its memory while it still holds it. (If the parent dies,
/// the pipe closes and the worker exits all the same.) `fetchlab
/// lesson-worker URL...` and the `lessons-worker` binary both run this.
pub fn worker_main(urls: impl IntoIterator<Item = String>) -> Result<()> {
    let urls: Vec<String> = urls.into_iter().collect();
    let fetched = fetch_blocking(&lab::blocking_agent(), &urls);
    let mut out = std::io::stdout().lock();
    writeln!(out, "fetched {fetched}")?;
    out.flush()?;
    drop(out);
    std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink())?;
    Ok(())
}

/// The mistake: C processes, each with its share of the URLs. Returns the
/// pages fetched and the resident memory of all the workers, summed.
pub fn with_processes(worker: &Worker, shares: &[Vec<String>]) -> Result<(usize, u64)> {
    let mut workers = Workers(Vec::new());
    for share in shares {
        let child = worker
            .command()
            .args(share)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        workers.0.push(child);
    }
    let fetched = workers.wait_for_reports(WORKER_PATIENCE)?;
    // Every worker is done and still alive: its peak is final, and readable.
    let mut resident = 0;
    for child in &workers.0 {
        resident += status_bytes(&format!("/proc/{}/status", child.id()), "VmHWM:")
            .ok_or("cannot read a worker's VmHWM from /proc")?;
    }
    workers.release();
    Ok((fetched, resident))
}

/// The middle way: C threads in this process, sharing one blocking client.
pub fn with_threads(agent: &ureq::Agent, shares: &[Vec<String>]) -> Result<usize> {
    thread::scope(|scope| {
        let mut threads = Vec::new();
        for share in shares {
            threads.push(
                thread::Builder::new().spawn_scoped(scope, move || fetch_blocking(agent, share))?,
            );
        }
        // A thread that panicked fetched nothing we can count.
        Ok(threads.into_iter().map(|t| t.join().unwrap_or(0)).sum())
    })
}

/// The fix: C tasks on one thread, sharing one async client.
pub async fn with_tasks(client: &Client, shares: Vec<Vec<String>>) -> usize {
    let mut tasks = JoinSet::new();
    for share in shares {
        let client = client.clone();
        tasks.spawn(async move {
            let mut fetched = 0;
            for url in share {
                if fetch(&client, &url).await.is_ok() {
                    fetched += 1;
                }
            }
            fetched
        });
    }
    tasks.join_all().await.into_iter().sum()
}

// ---- measurement ----

/// The bound on the workers' whole run: far beyond their few pages at a few
/// milliseconds each, and short enough that a stuck worker is reported, not
/// waited for.
const WORKER_PATIENCE: Duration = Duration::from_secs(10);
/// How long a released worker may take to exit before it is killed.
const EXIT_PATIENCE: Duration = Duration::from_secs(2);

/// The workers, killed and reaped on every path out of `with_processes`.
struct Workers(Vec<Child>);

impl Workers {
    /// Waits for each worker's one-line report; returns the pages fetched.
    fn wait_for_reports(&mut self, patience: Duration) -> Result<usize> {
        let (report, reports) = mpsc::channel();
        for child in &mut self.0 {
            let stdout = child.stdout.take().ok_or("a worker has no stdout pipe")?;
            let report = report.clone();
            // Ends at the worker's first line, or at EOF when it exits or is killed.
            thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(stdout).read_line(&mut line);
                let _ = report.send(line);
            });
        }
        let until = Instant::now() + patience;
        let mut fetched = 0;
        for _ in 0..self.0.len() {
            let left = until.saturating_duration_since(Instant::now());
            let line = reports
                .recv_timeout(left)
                .map_err(|_| format!("a worker did not report within {patience:?}"))?;
            let count = line
                .trim()
                .strip_prefix("fetched ")
                .and_then(|n| n.parse::<usize>().ok());
            fetched += count.ok_or_else(|| format!("a worker reported {line:?}"))?;
        }
        Ok(fetched)
    }

    /// Closes every worker's stdin, which tells it to exit, and waits for it.
    fn release(&mut self) {
        for child in &mut self.0 {
            drop(child.stdin.take());
        }
        let until = Instant::now() + EXIT_PATIENCE;
        for child in &mut self.0 {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < until {
                thread::sleep(Duration::from_millis(5));
            }
        }
        // Drop kills and reaps whatever is left.
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // Both fail harmlessly for a worker that has already exited.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `kB` field of a `/proc/.../status` file, in bytes.
fn status_bytes(path: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Resets this process's peak resident set to its current size, and returns
/// that size: the baseline for the growth `peak_growth` reads.
fn reset_peak() -> Result<u64> {
    std::fs::write("/proc/self/clear_refs", "5")
        .map_err(|e| format!("cannot reset the peak resident set (/proc/self/clear_refs): {e}"))?;
    status_bytes("/proc/self/status", "VmHWM:").ok_or_else(|| "cannot read VmHWM".into())
}

fn peak_growth(baseline: u64) -> Result<u64> {
    let peak = status_bytes("/proc/self/status", "VmHWM:").ok_or("cannot read VmHWM")?;
    Ok(peak.saturating_sub(baseline))
}

#[derive(Clone, Debug)]
pub struct Measured {
    /// Units of concurrency of each kind (C).
    pub units: usize,
    /// Pages each kind fetched in all.
    pub pages: u64,
    pub processes: Side,
    pub threads: Side,
    pub tasks: Side,
}

#[derive(Clone, Debug)]
pub struct Side {
    /// Pages fetched, as the units reported them.
    pub fetched: usize,
    /// Requests the server received.
    pub requests: u64,
    /// Resident memory the C units cost together.
    pub resident_bytes: u64,
}

impl Side {
    pub fn per_unit(&self, units: usize) -> u64 {
        self.resident_bytes / units.max(1) as u64
    }
}

pub fn measure(settings: &Settings) -> Result<Measured> {
    let worker = settings
        .worker
        .as_ref()
        .ok_or("no worker executable to start processes with (Settings::worker)")?;
    let units = settings.concurrency.max(1);
    let pages = settings.pages.max(units as u64);
    // The same pages for each kind, dealt out round-robin to the C units.
    let shares = |server: &mock_server::MockServer| -> Vec<Vec<String>> {
        let mut shares = vec![Vec::new(); units];
        for (i, url) in server.page_urls(pages).into_iter().enumerate() {
            shares[i % units].push(url);
        }
        shares
    };

    let server = lab::server(settings.latency)?;
    let (fetched, resident_bytes) = with_processes(worker, &shares(&server))?;
    let processes = Side {
        fetched,
        requests: settled(&server).total_requests,
        resident_bytes,
    };

    let server = lab::server(settings.latency)?;
    let shares_now = shares(&server);
    let agent = lab::blocking_agent();
    let baseline = reset_peak()?;
    let fetched = with_threads(&agent, &shares_now)?;
    let threads = Side {
        fetched,
        requests: settled(&server).total_requests,
        resident_bytes: peak_growth(baseline)?,
    };

    let server = lab::server(settings.latency)?;
    let shares_now = shares(&server);
    let rt = lab::runtime()?;
    let client = lab::http_client()?;
    let baseline = reset_peak()?;
    let fetched = rt.block_on(with_tasks(&client, shares_now));
    let tasks = Side {
        fetched,
        requests: settled_on(&rt, &server).total_requests,
        resident_bytes: peak_growth(baseline)?,
    };

    Ok(Measured {
        units,
        pages,
        processes,
        threads,
        tasks,
    })
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{} KiB", bytes / 1024)
    }
}

impl Measured {
    /// Every kind fetched every page, and a process cost more than a thread
    /// and more than a task.
    pub fn shown(&self) -> bool {
        let per = |s: &Side| s.per_unit(self.units);
        [&self.processes, &self.threads, &self.tasks]
            .iter()
            .all(|s| s.fetched as u64 == self.pages)
            && per(&self.processes) > per(&self.threads)
            && per(&self.processes) > per(&self.tasks)
    }

    pub fn report(&self) -> Report {
        let c = self.units;
        let per = |s: &Side| human(s.per_unit(c));
        Report {
            mistake: format!(
                "{c} processes: {} resident, {} each",
                human(self.processes.resident_bytes),
                per(&self.processes)
            ),
            fix: format!(
                "{c} threads: {} each; {c} tasks: {} each",
                per(&self.threads),
                per(&self.tasks)
            ),
            verdict: format!(
                "resident memory per unit of concurrency, fetching the same {} pages: a process \
                 {}, a thread {}, a task {}",
                self.pages,
                per(&self.processes),
                per(&self.threads),
                per(&self.tasks)
            ),
            shown: self.shown(),
        }
    }
}

pub(crate) fn run(settings: &Settings) -> Result<Report> {
    Ok(measure(settings)?.report())
}
