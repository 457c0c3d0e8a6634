//! Worker processes: one child process per core, each fetching its share of
//! the URLs in flight on threads, fed over its stdin and answering over its
//! stdout, one JSON line per URL.
//!
//! # How it works
//!
//! `fetch_all` is the dispatcher, on the calling thread, as in the threads
//! model; what it hands URLs to is W worker processes (one per core by
//! default, never more than the requests in flight), each with
//! `max_in_flight / W` slots. A worker is started when a URL needs one and
//! no running worker is idle, so a run of one URL starts one process. Each
//! worker is a program the caller names ([`WorkerCommand`]: fetchlab runs
//! itself again with its hidden `process-worker` subcommand, the tests run this
//! crate's `fetch-processes-worker` binary), which calls [`worker_main`]:
//! the threads model over its share (`src/worker.rs`), one thread blocked
//! in each request, running fetch-core's `fetch_one_blocking`, so retries,
//! redirects, timeouts and the CPU stage are those of every model. The
//! waiting happens in the workers' threads, in the kernel; the parent waits
//! on one channel that its reader threads (one per worker, reading its
//! stdout) feed with outcomes, and its writer threads (one per worker)
//! write jobs to the workers' stdin, so that a worker that stops reading
//! cannot block the dispatcher. What caps the requests in flight is the
//! dispatcher's count, as in every model: a URL is read from the input only
//! when a worker has a free slot, and it goes to the least busy one. The
//! first line to each worker is the run's options (`src/wire.rs`), with
//! what is left of the deadline, so a replacement started mid-run ends
//! with the others. When hosts are paced (a delay between requests to one
//! host, or AutoThrottle: fetch-core's `pace.rs`), the pace lives in the
//! per-URL path, so in a worker: every URL of a host then goes to the same
//! worker (chosen by a hash of the host), or two workers would each keep
//! their own pace and ask the host twice as often.
//!
//! A process buys isolation: a crash (a segfault in a C parser, an
//! `abort`, the OOM killer) ends one worker, not the run. Its reader sees
//! the pipe close; the parent reaps the process and records each URL it had
//! in flight as `panicked`, with the exit status in the message ("worker
//! process 4242 died (signal: 6 (SIGABRT) (core dumped))"): the same kind
//! as a caught panic, since the cause is the same (our code, not the URL,
//! failed), and never retried elsewhere, since a URL that crashes its
//! worker would crash the next one too. The next URL then starts a
//! replacement. A worker that writes a line that is not an outcome, or
//! answers for a URL it was not given, is killed and treated the same way;
//! one that says nothing at all for longer than its URLs could take
//! (`patience`: every attempt's timeout and every backoff, plus a grace) is
//! killed too, so a hung worker holds the run no longer than its timeouts.
//! A cancel kills every worker at once, from the cancelling thread (there is
//! no socket here to shut down, and a process dies faster than it could be
//! asked to stop); what was in flight is recorded `cancelled`, and at the
//! deadline (plus the grace) `deadline`. Every child is killed and reaped
//! when `fetch_all` ends, also when `on_outcome` panics: the pool's `Drop`
//! does it, so no run leaves a zombie or an orphan behind. Workers run in a
//! process group of their own, so a Ctrl-C at the terminal reaches the
//! parent alone, which cancels cleanly; a worker whose parent died sees its
//! stdin close and exits at once.
//!
//! # When to choose this
//!
//! When one page can take the process down: a parser written in C (a
//! segfault), a library that calls `abort`, a page that makes memory
//! explode (the OOM killer then picks a worker, not the run). Python's
//! multiprocessing buys two things, every core past the GIL and this
//! isolation; Rust's threads already use every core, so here only the
//! isolation is bought. Its price, measured on the 2-core reference VM
//! (2026-12-03, medians of six interleaved runs of `fetchlab run`, with
//! the machine shared: load average 8 to 33; the README has the commands,
//! the tables and the raw data):
//! - **Memory.** An idle worker is 8.5 MiB resident, of which 1.4 MiB is
//!   its own: the rest is the executable's pages, shared with the parent
//!   and every other worker. A sum of RSS counts those again and again
//!   (35 MiB for the tree at C = 100); PSS does not: 18 MiB for the parent
//!   and its two workers at C = 100 (threads 15, tokio 10), 99 MiB at
//!   C = 1,000 (threads 85, tokio 42). Not the article's "ate my RAM": a
//!   Rust process is cheap, and what grows with C is what the threads model
//!   pays too, a thread and a connection per request in flight.
//! - **Serialisation.** 0.8 µs of CPU per page to encode and decode its
//!   job line (60 bytes) and its outcome line (126 bytes), against 180 to
//!   250 µs of CPU per page for the whole fetch at 0 ms latency. It does
//!   not show: at 0 ms (C = 100, 20,000 pages) processes fetched 6,634
//!   pages/s with 4.1 s of CPU, threads 5,689 with 5.0 s, tokio 11,958
//!   with 1.6 s. (That processes beat threads is likely contention: each
//!   worker's threads share a job queue and an agent with half as many
//!   others. Not profiled.) At 10 ms, C = 100, the three are latency
//!   bound: tokio 9,089 pages/s, threads 7,384, processes 7,283.
//! - **Start.** 14 to 39 ms from spawn to ready per worker (the binary is
//!   loaded, the platform's TLS roots read), paid by every run: a short
//!   run shows it (criterion's `latency_10ms/*/100`, 500 pages: processes
//!   117 ms, threads 106, tokio 66).
//! - **What it buys.** A crash costs the URLs in flight on that worker, at
//!   most C / W of them, each recorded `panicked` with the exit status; the
//!   run goes on (tests check it with `abort`, `kill -9`, a hang and
//!   garbage on the pipe).
//!
//! Not for anything else: a panic is already caught per URL in every
//! model, and an async model does the same work with a third of the CPU.
//!
//! In the project's dated run (docs/results/2026-12-03-2-core-AMD-EPYC):
//! 90% of wrk's rate at 10 ms and C = 32, 72% at C = 100, 8-13% at 0 ms
//! (`scripts/ceiling`, parsing off; threads: 96%, 86%, 9-10%); 38.7 MiB for
//! the tree at C = 100 and 621 MiB at C = 10,000 (`scripts/footprint`, summed
//! over the parent and its workers); against the article's Python program,
//! 21.8 times as fast with 1.4 times less memory (`scripts/peer/run`).
//!
//! # Copying this crate
//!
//! `scripts/export-model processes DIR` writes this crate and fetch-core,
//! with the conformance suite and the mock server for its tests, as a
//! standalone Cargo project (CI builds and tests each export offline).
//!
//! Copy `src/` and the dependencies in `Cargo.toml`. Your program must be
//! able to run a worker: give it a subcommand that calls [`worker_main`]
//! (check for it first thing in `main`, before anything writes to stdout)
//! and use [`WorkerCommand::this_program`], or ship `src/main.rs` as a
//! second executable and name its path. If you copy it, keep the pool's
//! `Drop` (or a panic in `on_outcome` leaves workers running), the writer
//! threads (or a stopped worker blocks the dispatcher), the `patience`
//! check (or a hung worker hangs the run), and the length cap on a line
//! (or a worker spewing bytes fills the parent's memory). Your own
//! processing of a page replaces fetch-core's CPU stage,
//! `fetch_core::parse::page`, which runs in the worker that fetched the
//! page: put the code that may crash there.
//!
//! # Tests and benchmark
//!
//! `cargo test -p fetch-processes` runs the conformance suite (with its
//! crash case, which this model does not skip) against the
//! `fetch-processes-worker` binary built with the test faults, and
//! `tests/worker_faults.rs`: a worker killed with `kill -9` mid-run, a
//! cancel and a panicking `on_outcome` that must leave no child behind, a
//! worker that writes garbage, dies mid-line or hangs, and a worker program
//! that cannot start. `cargo bench -- processes` runs its benchmark rows,
//! `cargo test --release -p fetch-processes --lib wire_cost -- --ignored
//! --nocapture` measures the wire format, and `measurements/tree-rss.sh`
//! the memory of the process tree (see the README).

mod wire;
mod worker;

#[cfg(feature = "fault-injection")]
pub use worker::faults;
pub use worker::worker_main;

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use fetch_core::{CancelToken, Dispatch, ErrorKind, FetchError, Model, OnCancel, Options};
use fetch_core::{Next, Outcome, Run, Url};

/// Set in every worker's environment. A program that is itself a worker
/// refuses to start workers: a host that runs the model without handling
/// the worker's subcommand would otherwise start copies of itself that
/// start copies of themselves.
pub const WORKER_ENV: &str = "FETCH_PROCESSES_WORKER";

/// Added to every limit the parent sets a worker (its URLs' timeouts, the
/// deadline): time to start a process, build its client, and parse a page.
const GRACE: Duration = Duration::from_secs(2);

/// Workers in a row that may die before saying ready (a missing program,
/// one that is not a worker) before the pool stops starting them.
const MAX_FAILED_STARTS: usize = 3;

/// The program a worker runs: it must call [`worker_main`].
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    program: PathBuf,
    args: Vec<OsString>,
}

impl WorkerCommand {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        WorkerCommand {
            program: program.into(),
            args: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// This program again, with `args` (`["process-worker"]` for fetchlab), for a
    /// program that runs [`worker_main`] when it gets them: multiprocessing's
    /// "spawn", with no second executable to ship.
    pub fn this_program<A: Into<OsString>>(args: impl IntoIterator<Item = A>) -> Self {
        // `current_exe` fails only where the OS cannot say (no /proc);
        // argv[0] is the next best guess, and a worker that cannot start is
        // recorded per URL, never a panic.
        let program = std::env::current_exe()
            .unwrap_or_else(|_| std::env::args_os().next().unwrap_or_default().into());
        let command = WorkerCommand::new(program);
        args.into_iter().fold(command, WorkerCommand::arg)
    }
}

impl From<&str> for WorkerCommand {
    /// A program to run with no arguments.
    fn from(program: &str) -> Self {
        WorkerCommand::new(program)
    }
}

/// Fetches `urls` with up to `max_in_flight` requests in flight, shared by
/// up to `processes` worker processes running `worker`, handing each outcome
/// to `on_outcome` (on the calling thread) as it arrives. Returns the number
/// of URLs read (one outcome each).
pub fn fetch_all(
    worker: &WorkerCommand,
    processes: usize,
    urls: &mut dyn Iterator<Item = String>,
    options: &Options,
    on_outcome: &mut dyn FnMut(Outcome),
    cancel: &CancelToken,
) -> usize {
    let run = Run::new(options, cancel);
    let mut dispatch = Dispatch::new(urls, on_outcome);
    if std::env::var_os(WORKER_ENV).is_some() {
        let why = "this process is a worker; it does not start workers of its own";
        return dispatch.refuse_all(&run, &FetchError::new(ErrorKind::Panicked, why));
    }
    let max_in_flight = options.max_in_flight();
    let processes = processes.clamp(1, max_in_flight);
    let (events_tx, events) = mpsc::channel();
    let mut pool = Pool::new(worker, &run, processes, events_tx);
    // The cancel kills every worker from the cancelling thread, and wakes
    // the dispatcher below to record what they had in flight.
    let _stop = pool.stop_on_cancel();
    let mut exhausted = false;
    loop {
        // A URL is read only when a worker can take it: memory follows C,
        // not the length of the input.
        while !exhausted && dispatch.in_flight() < max_in_flight && pool.has_room() {
            let (index, url) = match dispatch.next_url(&run) {
                Next::Url(index, url) => (index, url),
                // Every URL read ahead is for a host at its limit: wait for
                // an outcome, which frees a host's slot.
                Next::Wait => break,
                Next::End => {
                    exhausted = true;
                    break;
                }
            };
            if let Err(error) = pool.send(index, &url) {
                dispatch.record(Outcome::untried(index, url.as_str(), error));
            }
        }
        if dispatch.in_flight() == 0 {
            if exhausted {
                break;
            }
            if !pool.has_room() {
                // No worker left and none will start: every URL left gets
                // the reason (the last start's error) rather than a hang.
                let error = pool.broken();
                // Each recorded at once: no host fills up, no `Next::Wait`.
                while let Next::Url(index, url) = dispatch.next_url(&run) {
                    dispatch.record(Outcome::untried(index, url.as_str(), error.clone()));
                }
                break;
            }
            continue;
        }
        // Bounded: the next check (a silent worker's patience, the
        // deadline) wakes it if no worker says anything first.
        match events.recv_timeout(pool.until_next_check()) {
            Ok(Event::Ready(id)) => pool.ready(id),
            Ok(Event::Answer(id, outcome)) => pool.answer(id, outcome, &mut dispatch),
            Ok(Event::Exited(id, why)) => pool.bury(id, &why, true, &mut dispatch),
            Ok(Event::Broken(id, why)) => pool.bury(id, &why, false, &mut dispatch),
            Ok(Event::Stop) => pool.stop(&mut dispatch),
            // The timeout; never disconnected, since the pool holds a sender.
            Err(_) => pool.check(&mut dispatch),
        }
    }
    // Kills and reaps whatever is left (idle workers, at the end of a run).
    drop(pool);
    dispatch.finish(&run)
}

/// What the workers' reader threads and the cancel hook tell the dispatcher.
enum Event {
    /// Worker `id` read its setup and built its client.
    Ready(u64),
    Answer(u64, Outcome),
    /// Worker `id` closed its stdout: it is exiting. Its reader has stopped.
    Exited(u64, String),
    /// Worker `id` wrote something that is not an answer. Its reader has
    /// stopped.
    Broken(u64, String),
    /// The run was cancelled; the hook has killed every worker.
    Stop,
}

/// One running worker, as the dispatcher sees it; its `Child` is in the
/// pool's `children`, where the cancel hook can reach it.
struct Worker {
    id: u64,
    pid: u32,
    /// Its place among the W: a replacement takes the seat of the worker
    /// it replaces, and a paced host always goes to the same seat.
    seat: usize,
    /// Lines for its writer thread. Dropping it closes the worker's stdin.
    jobs: Sender<String>,
    in_flight: HashSet<usize>,
    /// The last sign of progress: its last answer, or when it was handed a
    /// job while it had none.
    heard: Instant,
    ready: bool,
}

type Children = Arc<Mutex<HashMap<u64, Child>>>;

fn lock(children: &Children) -> MutexGuard<'_, HashMap<u64, Child>> {
    // Nothing panics while holding it (kill and wait return errors).
    children.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Pool<'a> {
    worker: &'a WorkerCommand,
    run: &'a Run,
    /// W: the most workers running at once.
    size: usize,
    /// Whether hosts are paced (a delay or AutoThrottle): then each host's
    /// URLs all go to one worker, whose per-URL path keeps that host's pace.
    paced: bool,
    slots: usize,
    live: Vec<Worker>,
    children: Children,
    events: Sender<Event>,
    next_id: u64,
    failed_starts: usize,
    last_failure: Option<FetchError>,
    /// How long a worker with URLs in flight may say nothing.
    patience: Duration,
    /// The longest line a worker may write: a page's title at most the whole
    /// body, every byte of it escaped (`\u0001` is six), plus the rest.
    max_line: usize,
}

impl<'a> Pool<'a> {
    fn new(worker: &'a WorkerCommand, run: &'a Run, size: usize, events: Sender<Event>) -> Self {
        let o = run.options();
        let wait = o.backoff_max().max(o.retry_after_cap());
        let patience = o
            .request_timeout()
            .saturating_mul(o.retries().saturating_add(1))
            .saturating_add(wait.saturating_mul(o.retries()))
            .saturating_add(GRACE);
        let paced = !o.host_delay().is_zero() || o.auto_throttle().is_some();
        // A paced URL may wait for its host's turn before each attempt:
        // behind every other URL of its worker, a jittered delay (up to 1.5
        // times the longest) or a Retry-After each.
        let longest_delay = (o.auto_throttle().map(|a| a.max_delay))
            .unwrap_or_default()
            .max(o.host_delay());
        let turn = longest_delay
            .mul_f64(1.5)
            .saturating_add(o.retry_after_cap());
        // Paced, a worker may be given every URL in flight (they may all be
        // for its hosts); it starts threads for them as they come.
        let slots = if paced {
            o.max_in_flight()
        } else {
            o.max_in_flight().div_ceil(size)
        };
        let turns = u32::try_from(slots).unwrap_or(u32::MAX);
        let attempts = o.retries().saturating_add(1);
        let patience = if paced {
            patience.saturating_add(turn.saturating_mul(turns).saturating_mul(attempts))
        } else {
            patience
        };
        let body = usize::try_from(o.max_body_bytes()).unwrap_or(usize::MAX);
        Pool {
            worker,
            run,
            size,
            paced,
            slots,
            live: Vec::new(),
            children: Children::default(),
            events,
            next_id: 0,
            failed_starts: 0,
            last_failure: None,
            patience,
            max_line: body.saturating_mul(6).saturating_add(64 * 1024),
        }
    }

    fn stop_on_cancel(&self) -> OnCancel {
        let (children, events) = (Arc::clone(&self.children), self.events.clone());
        self.run.cancel_token().on_cancel(move || {
            for child in lock(&children).values_mut() {
                let _ = child.kill();
            }
            let _ = events.send(Event::Stop);
        })
    }

    /// Whether a URL read now would find a worker: a running one with a
    /// free slot, or room to start one.
    fn has_room(&self) -> bool {
        self.live.iter().any(|w| w.in_flight.len() < self.slots) || self.may_start()
    }

    /// Fewer than W running, and starts have not failed too often in a row.
    fn may_start(&self) -> bool {
        self.live.len() < self.size && self.failed_starts < MAX_FAILED_STARTS
    }

    /// Hands URL `index` to a worker: an idle one, else a new one while
    /// fewer than W run, else the least busy one with a free slot. When
    /// hosts are paced, a host's URLs all go to the worker in its seat
    /// (started if need be; each worker then has all C slots): two workers
    /// would each keep their own pace for the host, and ask it twice as
    /// often. A worker that replaces a dead one starts its hosts' pace
    /// afresh.
    fn send(&mut self, index: usize, url: &Url) -> Result<(), FetchError> {
        let mut at = None;
        if self.paced {
            let seat = seat_of(url, self.size);
            at = self.live.iter().position(|w| w.seat == seat);
            if at.is_none() && self.may_start() {
                at = self.start(seat).map_err(|e| self.failed(e)).ok();
            }
        }
        if at.is_none() {
            at = self.live.iter().position(|w| w.in_flight.is_empty());
        }
        if at.is_none() && self.may_start() {
            let seat = (0..self.size).find(|&s| self.live.iter().all(|w| w.seat != s));
            at = self
                .start(seat.unwrap_or(0))
                .map_err(|e| self.failed(e))
                .ok();
        }
        let at = at
            .or_else(|| {
                let free = self.live.iter().enumerate();
                let free = free.filter(|(_, w)| w.in_flight.len() < self.slots);
                free.min_by_key(|(_, w)| w.in_flight.len())
                    .map(|(at, _)| at)
            })
            .ok_or_else(|| self.broken())?;
        let worker = &mut self.live[at];
        if worker.in_flight.is_empty() {
            worker.heard = Instant::now();
        }
        worker.in_flight.insert(index);
        // Fails only when its writer has stopped, on a broken pipe: the
        // worker is gone, and its reader will say so; this URL is then
        // recorded with the others it had.
        let _ = worker.jobs.send(wire::job(index, url.as_str()));
        Ok(())
    }

    /// Starts a worker in `seat`, with a reader and a writer thread for its
    /// pipes.
    fn start(&mut self, seat: usize) -> Result<usize, FetchError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut command = Command::new(&self.worker.program);
        command
            .args(&self.worker.args)
            .env(WORKER_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // Its own process group: a Ctrl-C at the terminal goes to the
        // parent alone, which cancels; otherwise every worker would die of
        // it first, and its URLs would be recorded as crashes.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let program = self.worker.program.display();
        let mut child = command
            .spawn()
            .map_err(|e| failure(format!("cannot start worker process {program}: {e}")))?;
        let pid = child.id();
        let (jobs, job_rx) = mpsc::channel();
        let _ = jobs.send(wire::setup(self.run, self.slots));
        let (events, max_line) = (self.events.clone(), self.max_line);
        let threads = match (child.stdin.take(), child.stdout.take()) {
            (Some(stdin), Some(stdout)) => thread::Builder::new()
                .name(format!("worker-{pid}-in"))
                .spawn(move || write_jobs(stdin, job_rx))
                .and_then(|_| {
                    thread::Builder::new()
                        .name(format!("worker-{pid}-out"))
                        .spawn(move || read_answers(id, stdout, max_line, events))
                })
                .map_err(|e| e.to_string()),
            // Both were asked for (`Stdio::piped`), so both are there.
            _ => Err("no pipes".to_string()),
        };
        if let Err(e) = threads {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failure(format!("worker process {pid}: {e}")));
        }
        lock(&self.children).insert(id, child);
        self.live.push(Worker {
            id,
            pid,
            seat,
            jobs,
            in_flight: HashSet::new(),
            heard: Instant::now(),
            ready: false,
        });
        Ok(self.live.len() - 1)
    }

    fn failed(&mut self, error: FetchError) -> FetchError {
        self.failed_starts += 1;
        self.last_failure = Some(error.clone());
        error
    }

    /// Why a URL cannot be fetched when no worker can take it.
    fn broken(&self) -> FetchError {
        self.last_failure
            .clone()
            .unwrap_or_else(|| failure("no worker process could take the URL".into()))
    }

    fn ready(&mut self, id: u64) {
        if let Some(worker) = self.live.iter_mut().find(|w| w.id == id) {
            worker.ready = true;
            self.failed_starts = 0;
        }
    }

    fn answer(&mut self, id: u64, outcome: Outcome, dispatch: &mut Dispatch<'_>) {
        // A worker already buried: its URLs were recorded then.
        let Some(worker) = self.live.iter_mut().find(|w| w.id == id) else {
            return;
        };
        if worker.in_flight.remove(&outcome.index) {
            worker.heard = Instant::now();
            dispatch.record(outcome);
        } else {
            let why = format!("answered URL {}, which it was not given", outcome.index);
            self.bury(id, &why, false, dispatch);
        }
    }

    /// Removes worker `id`, reaps it (if it is `exiting`, it gets a moment
    /// to, so that its own exit status is what the record says), and records
    /// each URL it had in flight.
    fn bury(&mut self, id: u64, why: &str, exiting: bool, dispatch: &mut Dispatch<'_>) {
        let Some(at) = self.live.iter().position(|w| w.id == id) else {
            return;
        };
        let worker = self.live.swap_remove(at);
        let exited = self.reap(id, exiting);
        let how = exited.map_or("killed".to_string(), |status| status.to_string());
        // A worker the cancel killed is the run's stop, not a crash.
        let error = self
            .run
            .stop_reason()
            .unwrap_or_else(|| failure(format!("worker process {} {why} ({how})", worker.pid)));
        if !worker.ready {
            self.failed(error.clone());
        }
        for index in worker.in_flight {
            // `record` puts the input line in place of the empty URL.
            dispatch.record(Outcome::untried(index, "", error.clone()));
        }
    }

    /// Kills and reaps worker `id`, waiting up to 100 ms first if
    /// `exiting`; its exit status when it ended on its own.
    fn reap(&self, id: u64, exiting: bool) -> Option<ExitStatus> {
        // Taken out of the map, so the lock is not held while waiting.
        let mut child = lock(&self.children).remove(&id)?;
        let until = Instant::now() + Duration::from_millis(100);
        while exiting && Instant::now() < until {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => thread::sleep(Duration::from_millis(1)),
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Kills every worker and records what each had in flight with the
    /// run's stop reason: on cancel, and when the deadline's grace is over.
    fn stop(&mut self, dispatch: &mut Dispatch<'_>) {
        let error = self
            .run
            .stop_reason()
            .unwrap_or_else(|| FetchError::new(ErrorKind::Cancelled, "run stopped"));
        for worker in std::mem::take(&mut self.live) {
            self.reap(worker.id, false);
            for index in worker.in_flight {
                dispatch.record(Outcome::untried(index, "", error.clone()));
            }
        }
    }

    /// Kills the workers that have said nothing for longer than their URLs
    /// could take, or all of them once the deadline's grace is over.
    fn check(&mut self, dispatch: &mut Dispatch<'_>) {
        let now = Instant::now();
        let past_deadline = self.run.deadline().is_some_and(|d| now >= d + GRACE);
        if past_deadline {
            return self.stop(dispatch);
        }
        let silent: Vec<u64> = (self.live.iter())
            .filter(|w| !w.in_flight.is_empty() && now.duration_since(w.heard) >= self.patience)
            .map(|w| w.id)
            .collect();
        let why = format!("stopped answering (nothing for {:?})", self.patience);
        for id in silent {
            self.bury(id, &why, false, dispatch);
        }
    }

    /// How long the dispatcher may wait for an event before [`check`](Self::check).
    fn until_next_check(&self) -> Duration {
        let busy = self.live.iter().filter(|w| !w.in_flight.is_empty());
        let silent_at = busy
            .filter_map(|w| w.heard.checked_add(self.patience))
            .min();
        let deadline_at = self.run.deadline().map(|d| d + GRACE);
        let at = silent_at.into_iter().chain(deadline_at).min();
        at.map_or(self.patience, |at| {
            at.saturating_duration_since(Instant::now())
        })
        .max(Duration::from_millis(1))
    }
}

impl Drop for Pool<'_> {
    /// Every child is killed and reaped when the run ends, however it ends
    /// (a panic in `on_outcome` included). Idle workers at the end of a run
    /// are killed too: they hold nothing, and a kill needs no reply.
    fn drop(&mut self) {
        let children: Vec<Child> = lock(&self.children).drain().map(|(_, c)| c).collect();
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The seat of the worker that fetches `url` when hosts are paced: its
/// host's, the same for the whole run.
fn seat_of(url: &Url, seats: usize) -> usize {
    let mut hasher = std::hash::DefaultHasher::new();
    fetch_core::host_key(url).hash(&mut hasher);
    (hasher.finish() % seats.max(1) as u64) as usize
}

/// A worker failure as a URL's record: `panicked`, as a caught panic is.
fn failure(message: String) -> FetchError {
    FetchError::new(ErrorKind::Panicked, message)
}

/// A worker's writer thread: jobs to its stdin, those queued meanwhile in
/// one write. Ends when the dispatcher drops the sender or the pipe breaks.
fn write_jobs(stdin: ChildStdin, jobs: Receiver<String>) {
    let mut out = BufWriter::new(stdin);
    while let Ok(first) = jobs.recv() {
        let mut lines = std::iter::once(first).chain(jobs.try_iter());
        let wrote = lines.try_for_each(|line| out.write_all(line.as_bytes()));
        if wrote.and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

/// A worker's reader thread: its hello, then outcome lines, each decoded
/// here, off the dispatcher's thread. Ends at the first thing that is not
/// one: `Exited` at the end of the pipe, `Broken` for anything else.
fn read_answers(id: u64, stdout: ChildStdout, max_line: usize, events: Sender<Event>) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    let mut ready = false;
    let gone = loop {
        line.clear();
        let limit = max_line as u64 + 1;
        match (&mut reader).take(limit).read_until(b'\n', &mut line) {
            Ok(0) => break Event::Exited(id, "died".into()),
            Ok(_) if line.last() != Some(&b'\n') && line.len() > max_line => {
                break Event::Broken(id, format!("wrote a line over {max_line} bytes"));
            }
            Ok(_) if line.last() != Some(&b'\n') => {
                break Event::Exited(id, "died mid-line".into());
            }
            Ok(_) => {}
            Err(e) => break Event::Broken(id, format!("could not be read: {e}")),
        }
        let event = if ready {
            wire::read_answer(&line).map(|outcome| Event::Answer(id, outcome))
        } else {
            wire::read_ready(&line).map(|()| Event::Ready(id))
        };
        match event {
            Ok(event) => {
                ready = true;
                if events.send(event).is_err() {
                    return; // the run is over
                }
            }
            Err(e) => break Event::Broken(id, format!("wrote a line that is {e}")),
        }
    };
    let _ = events.send(gone);
}

/// The processes model, for the CLI, the benches and the conformance suite.
/// Nothing is kept between runs: each run starts its workers and kills them
/// at its end (a few milliseconds each; the README has the figure).
#[derive(Clone, Debug)]
pub struct Processes {
    worker: WorkerCommand,
    processes: usize,
}

impl Processes {
    /// One worker process per core, each running `worker`.
    pub fn new(worker: WorkerCommand) -> Self {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        Processes {
            worker,
            processes: cores,
        }
    }

    /// At most `n` worker processes (at least one).
    pub fn processes(self, n: usize) -> Self {
        Processes {
            processes: n.max(1),
            ..self
        }
    }
}

impl Model for Processes {
    fn name(&self) -> &'static str {
        "processes"
    }

    fn isolates_crashes(&self) -> bool {
        true
    }

    fn run_iter(
        &self,
        urls: &mut dyn Iterator<Item = String>,
        options: &Options,
        on_outcome: &mut dyn FnMut(Outcome),
        cancel: &CancelToken,
    ) -> usize {
        fetch_all(
            &self.worker,
            self.processes,
            urls,
            options,
            on_outcome,
            cancel,
        )
    }
}
