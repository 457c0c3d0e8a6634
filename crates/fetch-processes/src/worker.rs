//! The worker side: what runs in each child process.
//!
//! A worker is the threads model cut down to what a share of the run needs:
//! it reads the setup line, builds one blocking client, says it is ready,
//! then reads jobs from stdin and hands each to a thread of its own, started
//! on demand (never more than its slots, nor than the OS allows). Each
//! thread runs fetch-core's `fetch_one_blocking`, so retries, redirects,
//! timeouts, the deadline and the CPU stage are exactly what every model
//! does, and writes the outcome as one line to stdout. There is no
//! dispatcher here: the parent's `Dispatch` keeps "one outcome per URL",
//! and it sends a job only when this worker has a free slot.
//!
//! A worker exits as soon as its stdin closes: the parent is gone (or is
//! killing it), and nobody is left to answer to. It does not wait for its
//! threads, so a thread stuck in a page does not keep it alive; the OS
//! closes its sockets. A write to a closed stdout ends it too.

use std::io::{self, BufRead, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use fetch_core::blocking::{BlockingClient, thread_limit};
use fetch_core::{CancelToken, Outcome, Run, check_url, fetch_one_blocking};

use crate::wire;

/// The worker's entry point: reads the setup and then jobs from stdin,
/// writes one line per outcome to stdout, and returns as soon as stdin
/// closes, without waiting for its threads: return its exit code from
/// `main`, and the process's exit ends them. Call it from a `main` (the
/// `fetch-processes-worker` binary) or from a subcommand of your own
/// program (`fetchlab process-worker`) before anything else writes to stdout. Exit
/// code 2, with the reason on stderr, when the setup or a job line is not
/// one.
pub fn worker_main() -> ExitCode {
    match serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("fetch-processes worker {}: {why}", std::process::id());
            ExitCode::from(2)
        }
    }
}

/// What the worker's threads share.
struct Shared {
    client: BlockingClient,
    run: Run,
    jobs: Mutex<Receiver<(usize, String)>>,
    /// Jobs received and not yet answered: a new thread starts only when
    /// every thread started so far has one.
    busy: AtomicUsize,
}

fn serve() -> Result<(), String> {
    let mut input = io::stdin().lock();
    let mut line = Vec::new();
    input
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("reading the setup: {e}"))?;
    let options = wire::read_setup(&line)?;
    let (threads, _) = thread_limit(&options, None);
    let (job_tx, jobs) = mpsc::channel();
    let shared = Arc::new(Shared {
        // One agent for the worker's threads, one idle connection per
        // slot: the threads model's client, with this worker's share as C.
        client: BlockingClient::new(&options, options.max_in_flight()),
        // Never cancelled: a cancel is the parent's, which kills this
        // process.
        run: Run::new(&options, &CancelToken::new()),
        jobs: Mutex::new(jobs),
        busy: AtomicUsize::new(0),
    });
    say(&wire::ready()).map_err(|e| format!("saying ready: {e}"))?;
    let mut started = 0;
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            // Stdin closed: the parent is gone, or is killing this worker.
            // What is in flight is abandoned, not fetched for nobody.
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
        let job = wire::read_job(&line)?;
        if shared.busy.fetch_add(1, Ordering::SeqCst) >= started && started < threads {
            let shared = Arc::clone(&shared);
            let spawned = thread::Builder::new()
                .name(format!("fetch-{started}"))
                .spawn(move || fetch(&shared));
            match spawned {
                Ok(_) => started += 1,
                // Fewer threads is slower, never wrong; none is a worker
                // that cannot work, which the parent learns by its exit.
                Err(e) if started == 0 => return Err(format!("no thread: {e}")),
                Err(_) => {}
            }
        }
        // Cannot fail: `shared` holds the receiver.
        let _ = job_tx.send(job);
    }
}

/// One of the worker's threads: a job at a time, through fetch-core's
/// per-URL path, its outcome written as one line.
fn fetch(shared: &Shared) {
    let Shared { client, run, .. } = shared;
    // The lock is held only to take a job (see fetch-threads). A poisoned
    // lock still guards a valid receiver.
    let next_job = || {
        shared
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv()
    };
    while let Ok((index, url)) = next_job() {
        #[cfg(feature = "fault-injection")]
        faults::inject(&url);
        // The parent checked the URL; parsing it again is the price of
        // passing it across a process boundary as text.
        let outcome = match check_url(&url) {
            Ok(url) => fetch_one_blocking(run, index, url, |url, budget| {
                client.attempt(run, url, budget)
            }),
            Err(error) => Outcome::untried(index, &url, error),
        };
        if say(&wire::answer(&outcome)).is_err() {
            // Nobody reads the answers any more: the parent is gone.
            std::process::exit(1);
        }
        shared.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Writes one line (newline included) to stdout in one piece: the lock
/// keeps the threads' lines whole, and stdout, line-buffered, hands the
/// whole line to a single `write`.
fn say(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.flush()
}

/// Test-only faults (feature `fault-injection`): a worker that starts a URL
/// containing one of these markers misbehaves as a real worker might. The
/// tests put a marker in a URL's query string, which the mock server
/// ignores.
#[cfg(feature = "fault-injection")]
pub mod faults {
    use super::*;

    /// Aborts the worker: a segfault in a C parser, an `abort()` in a
    /// library, the OOM killer. The same text as
    /// `conformance::CRASH_MARKER`, which the conformance suite puts in a
    /// URL for every model that isolates crashes.
    pub const CRASH: &str = "fetchlab_crash_worker";
    /// Writes a line that is not an outcome, then goes on.
    pub const GARBAGE: &str = "fetch_processes_garbage";
    /// Writes the first half of an outcome line, then aborts.
    pub const HALF_LINE: &str = "fetch_processes_half_line";
    /// Stops answering: holds stdout for ever, so no thread of this worker
    /// writes another line, while the process stays alive.
    pub const HANG: &str = "fetch_processes_hang";

    pub(crate) fn inject(url: &str) {
        if url.contains(CRASH) {
            std::process::abort();
        }
        if url.contains(GARBAGE) {
            let _ = say("this is not an outcome\n");
        }
        if url.contains(HALF_LINE) {
            let mut out = io::stdout().lock();
            let _ = out.write_all(b"{\"index\":");
            let _ = out.flush();
            std::process::abort();
        }
        if url.contains(HANG) {
            let _out = io::stdout().lock();
            loop {
                thread::park();
            }
        }
    }
}
