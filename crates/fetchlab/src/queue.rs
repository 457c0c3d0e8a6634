//! `fetchlab enqueue | worker | results`: many workers, on one machine or
//! many, share one URL frontier on Redis Streams, and nothing is lost when a
//! worker dies.
//!
//! The job NAME has three keys (see [`Keys`]):
//! - `fetchlab:NAME:urls`, a stream: one entry per input line, its ID
//!   `<index + 1>-0` and its fields `i` (the input index) and `u` (the URL).
//!   Explicit IDs make `enqueue` idempotent: Redis refuses an ID not greater
//!   than the stream's last, so `enqueue` starts after the last entry and a
//!   second run over the same file adds nothing.
//! - `fetchlab:NAME:results`, a hash: input index -> the JSON line `run`
//!   writes for it. Written with HSETNX in the same MULTI/EXEC as the
//!   entry's XACK, so the first final outcome wins and a URL delivered twice
//!   still has exactly one result.
//! - `fetchlab:NAME:meta`, a hash: `total` (set when `enqueue` finishes),
//!   `claimed` and `failed` counters.
//!
//! A worker reads with a consumer group (`fetchlab`): an entry read stays
//! pending, owned by the worker, until it is acknowledged. A worker that dies
//! leaves its entries pending; the others take them over with XAUTOCLAIM
//! once they have been idle for [`claim_idle`]. The stream is the model's
//! URL iterator ([`StreamUrls`]), on the model's calling thread, and the
//! outcomes are written from `on_outcome`, on that same thread: the sync
//! Redis client is enough, and one connection serves both.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use clap::builder::PossibleValuesParser;
use fetch_core::{CancelToken, ErrorKind, FetchError, Options, Outcome};
use fetchlab::models;
use redis::Value;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::run::{self, FetchArgs, Line, LineReader};

/// The consumer group every worker of a job reads with.
const GROUP: &str = "fetchlab";

/// XADDs sent in one pipeline by `enqueue`, and result indexes asked in one
/// HMGET by `results`: one round trip per this many URLs.
const CHUNK: usize = 1000;

/// How long one XREADGROUP waits for new entries: short, so a worker notices
/// a signal, the end of the job and claimable entries soon.
const READ_BLOCK_MS: u64 = 200;

/// The longest a finished URL's record waits to be sent with others: the
/// records are sent in batches, one round trip each, as `run` flushes its
/// file.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Added to the longest time a URL can take, in [`claim_idle`].
const CLAIM_MARGIN: Duration = Duration::from_secs(10);

#[derive(Args, Debug)]
pub struct EnqueueArgs {
    /// Redis URL, e.g. redis://127.0.0.1:6379/0.
    #[arg(long)]
    redis: String,
    /// The job's name: its keys are fetchlab:NAME:*.
    #[arg(long)]
    job: String,
    /// File with one URL per line ("-" for standard input), read as `run` reads it.
    #[arg(long)]
    urls: PathBuf,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Redis URL, e.g. redis://127.0.0.1:6379/0.
    #[arg(long)]
    redis: String,
    /// The job's name: its keys are fetchlab:NAME:*.
    #[arg(long)]
    job: String,
    /// The model to fetch with.
    #[arg(long, value_parser = PossibleValuesParser::new(models::names()))]
    model: String,
    /// This worker's consumer name in the group (default: host name and pid).
    #[arg(long)]
    consumer: Option<String>,
    /// Take over entries another worker has held this long without
    /// finishing them. Default: (retries + 1) x (timeout + backoff max) +
    /// 10 s, the longest a live worker can take over one URL.
    #[arg(long, value_name = "MS")]
    claim_idle_ms: Option<u64>,
    /// An entry delivered more than this many times (its workers died or
    /// stopped before finishing it) gets a `panicked` result and is
    /// acknowledged, so a URL that kills workers cannot loop forever.
    #[arg(long, default_value_t = 3, value_name = "N")]
    max_deliveries: u64,
    #[command(flatten)]
    fetch: FetchArgs,
}

#[derive(Args, Debug)]
pub struct ResultsArgs {
    /// Redis URL, e.g. redis://127.0.0.1:6379/0.
    #[arg(long)]
    redis: String,
    /// The job's name: its keys are fetchlab:NAME:*.
    #[arg(long)]
    job: String,
    /// Where to write the JSON lines ("-" for standard output).
    #[arg(long, default_value = "-")]
    out: PathBuf,
}

/// A job's keys.
pub struct Keys {
    pub stream: String,
    pub results: String,
    pub meta: String,
}

impl Keys {
    pub fn new(job: &str) -> Keys {
        Keys {
            stream: format!("fetchlab:{job}:urls"),
            results: format!("fetchlab:{job}:results"),
            meta: format!("fetchlab:{job}:meta"),
        }
    }
}

fn connect(url: &str) -> Result<redis::Connection> {
    let client = redis::Client::open(url).with_context(|| format!("--redis {url}"))?;
    client
        .get_connection()
        .with_context(|| format!("cannot connect to Redis at {url}"))
}

/// Creates the group at the stream's start (and the stream), unless it exists.
fn ensure_group(con: &mut redis::Connection, keys: &Keys) -> Result<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&keys.stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query(con);
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other.context("XGROUP CREATE"),
    }
}

/// The idle time after which a pending entry is taken over: the longest a
/// live worker can spend on one URL, every attempt timing out after the
/// longest backoff, plus a margin. Shorter would fetch URLs twice that a
/// live, slow worker still holds; longer only delays the recovery.
pub fn claim_idle(options: &Options) -> Duration {
    (options.request_timeout() + options.backoff_max()) * (options.retries() + 1) + CLAIM_MARGIN
}

// ---------------------------------------------------------------- enqueue

pub fn enqueue(args: &EnqueueArgs) -> Result<ExitCode> {
    let mut con = connect(&args.redis)?;
    let keys = Keys::new(&args.job);
    ensure_group(&mut con, &keys)?;
    // Entries already there (an earlier enqueue, whole or cut short) are
    // the lines before the last ID: start after it.
    let last: Vec<(String, Value)> = redis::cmd("XREVRANGE")
        .arg(&keys.stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(&mut con)
        .context("XREVRANGE")?;
    let already = last.first().map_or(0, |(id, _)| id_index(id) + 1);
    let reader: Box<dyn BufRead> = if args.urls.as_os_str() == "-" {
        Box::new(BufReader::new(io::stdin()))
    } else {
        let file = File::open(&args.urls)
            .with_context(|| format!("cannot read URL file {}", args.urls.display()))?;
        Box::new(BufReader::new(file))
    };
    let mut lines = LineReader::new(reader);
    let mut pipe = redis::pipe();
    let (mut index, mut added) = (0usize, 0usize);
    while let Some(line) = lines.next_line().context("reading URLs")? {
        if index >= already {
            let id = format!("{}-0", index + 1);
            let cmd = pipe
                .cmd("XADD")
                .arg(&keys.stream)
                .arg(&id)
                .arg("i")
                .arg(index);
            match line {
                Line::Url(url) => cmd.arg("u").arg(url),
                // A line too long to be a URL: its start, and why.
                Line::TooLong { start, bytes } => cmd.arg("u").arg(start).arg("bad").arg(format!(
                    "URL is {bytes} bytes long; the limit is {} bytes",
                    fetch_core::MAX_URL_BYTES
                )),
            }
            .ignore();
            added += 1;
            if added.is_multiple_of(CHUNK) {
                pipe.exec(&mut con).context("XADD")?;
                pipe = redis::pipe();
            }
        }
        index += 1;
    }
    if !added.is_multiple_of(CHUNK) {
        pipe.exec(&mut con).context("XADD")?;
    }
    // Set last: a worker takes a job without a total as not finished.
    let total: Option<usize> = redis::cmd("HGET")
        .arg(&keys.meta)
        .arg("total")
        .query(&mut con)?;
    if let Some(total) = total
        && total != index
    {
        bail!(
            "job {} was enqueued with {total} URLs, this list has {index}: use another --job",
            args.job
        );
    }
    redis::cmd("HSET")
        .arg(&keys.meta)
        .arg("total")
        .arg(index)
        .exec(&mut con)?;
    eprintln!(
        "fetchlab enqueue: job {}: {added} URLs added, {} already enqueued, {index} in all",
        args.job,
        index.min(already)
    );
    Ok(ExitCode::SUCCESS)
}

/// The input index of entry ID `<index + 1>-0`.
fn id_index(id: &str) -> usize {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse::<usize>().ok())
        .map_or(0, |n| n.saturating_sub(1))
}

// ---------------------------------------------------------------- worker

/// One stream entry: a URL of the job.
#[derive(Debug)]
struct Entry {
    id: String,
    index: usize,
    url: String,
    /// Set for a line that is not a URL: the `invalid_url` message.
    bad: Option<String>,
    deliveries: u64,
}

/// Parses an entry `[id, [field, value, ...]]`; `None` for one deleted.
fn parse_entry(v: &Value, deliveries: u64) -> Option<Entry> {
    let Value::Array(parts) = v else { return None };
    let id = text(parts.first()?)?;
    let Some(Value::Array(fields)) = parts.get(1) else {
        return None;
    };
    let mut map = HashMap::new();
    for pair in fields.chunks(2) {
        if let [k, v] = pair {
            map.insert(text(k)?, text(v)?);
        }
    }
    Some(Entry {
        index: map.get("i")?.parse().ok()?,
        url: map.remove("u")?,
        bad: map.remove("bad"),
        id,
        deliveries,
    })
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A record waiting to be sent, with its entry's ID.
struct Unsent {
    index: usize,
    id: String,
    line: Vec<u8>,
    gave_up: bool,
}

/// The worker's state, shared by the URL iterator and `on_outcome` (both run
/// on the model's calling thread, one after the other, never nested).
struct Worker {
    con: redis::Connection,
    keys: Keys,
    consumer: String,
    batch: usize,
    claim_idle: Duration,
    max_deliveries: u64,
    /// Entries read, not yet handed to the model.
    buffer: VecDeque<Entry>,
    /// By the model's index (0, 1, 2... in the order handed out, over every
    /// pass of `run_iter`): what its outcome's record needs.
    in_flight: HashMap<usize, Entry>,
    ids_in_flight: HashSet<String>,
    handed_out: usize,
    last_claim: Option<Instant>,
    /// Every index of the job has a result.
    finished: bool,
    error: Option<anyhow::Error>,
    /// Records not yet sent, with their acknowledgements.
    unsent: Vec<Unsent>,
    unsent_since: Option<Instant>,
    written: u64,
    duplicates: u64,
    abandoned: u64,
    claimed: u64,
    gave_up: u64,
}

impl Worker {
    /// Reads more entries: first the ones a dead worker left (XAUTOCLAIM),
    /// then new ones (XREADGROUP). Whether any came.
    fn refill(&mut self) -> Result<bool> {
        let claim_every = (self.claim_idle / 4).max(Duration::from_millis(100));
        if self.last_claim.is_none_or(|at| at.elapsed() >= claim_every) {
            self.last_claim = Some(Instant::now());
            if self.claim()? {
                return Ok(true);
            }
        }
        // The read may block: send the records waiting first.
        self.flush()?;
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(self.batch)
            .arg("BLOCK")
            .arg(READ_BLOCK_MS)
            .arg("STREAMS")
            .arg(&self.keys.stream)
            .arg(">")
            .query(&mut self.con)
            .context("XREADGROUP")?;
        // [[stream, [entry, ...]]], or nil after BLOCK with nothing new.
        let mut any = false;
        if let Value::Array(streams) = reply {
            for stream in streams {
                let Value::Array(parts) = stream else {
                    continue;
                };
                let Some(Value::Array(entries)) = parts.get(1) else {
                    continue;
                };
                for e in entries.iter().filter_map(|e| parse_entry(e, 1)) {
                    self.buffer.push_back(e);
                    any = true;
                }
            }
        }
        Ok(any)
    }

    /// XAUTOCLAIM: takes over entries idle longer than `claim_idle`.
    fn claim(&mut self) -> Result<bool> {
        let reply: Vec<Value> = redis::cmd("XAUTOCLAIM")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(self.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(self.batch)
            .query(&mut self.con)
            .context("XAUTOCLAIM")?;
        let Some(Value::Array(entries)) = reply.get(1) else {
            return Ok(false);
        };
        let mut any = false;
        for e in entries {
            let Some(mut entry) = parse_entry(e, 0) else {
                continue;
            };
            // One of ours, still in flight (a slow URL): not a new delivery.
            if self.ids_in_flight.contains(&entry.id) {
                continue;
            }
            // XAUTOCLAIM counted this delivery; XPENDING says how many.
            let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                .arg(&self.keys.stream)
                .arg(GROUP)
                .arg(&entry.id)
                .arg(&entry.id)
                .arg(1)
                .query(&mut self.con)
                .context("XPENDING")?;
            entry.deliveries = pending.first().map_or(1, |p| p.3);
            self.claimed += 1;
            redis::cmd("HINCRBY")
                .arg(&self.keys.meta)
                .arg("claimed")
                .arg(1)
                .exec(&mut self.con)?;
            self.buffer.push_back(entry);
            any = true;
        }
        Ok(any)
    }

    /// The job is done when every index has a result.
    fn job_done(&mut self) -> Result<bool> {
        let (total, done): (Option<usize>, usize) = redis::pipe()
            .cmd("HGET")
            .arg(&self.keys.meta)
            .arg("total")
            .cmd("HLEN")
            .arg(&self.keys.results)
            .query(&mut self.con)?;
        Ok(total.is_some_and(|t| done >= t))
    }

    /// Queues the entry's record and its acknowledgement, and sends what is
    /// queued once it is a batch or [`FLUSH_EVERY`] old ([`Worker::flush`]).
    fn write_final(&mut self, entry: &Entry, outcome: &Outcome, gave_up: bool) -> Result<()> {
        let mut line = Vec::with_capacity(512);
        serde_json::to_writer(&mut line, &run::record(outcome))?;
        self.unsent.push(Unsent {
            index: entry.index,
            id: entry.id.clone(),
            line,
            gave_up,
        });
        let since = *self.unsent_since.get_or_insert_with(Instant::now);
        if self.unsent.len() >= self.batch || since.elapsed() >= FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes each queued record unless its index has one (HSETNX: the first
    /// final record wins), and acknowledges its entry, all in one MULTI/EXEC:
    /// a record is never written without its XACK or the other way round,
    /// and the batch costs one round trip. A worker killed before this
    /// leaves the entries pending, to be fetched again by another worker.
    fn flush(&mut self) -> Result<()> {
        if self.unsent.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for u in &self.unsent {
            pipe.cmd("HSETNX")
                .arg(&self.keys.results)
                .arg(u.index)
                .arg(&u.line);
        }
        for u in &self.unsent {
            pipe.cmd("XACK")
                .arg(&self.keys.stream)
                .arg(GROUP)
                .arg(&u.id)
                .ignore();
        }
        let failed = self.unsent.iter().filter(|u| u.gave_up).count();
        if failed > 0 {
            pipe.cmd("HINCRBY")
                .arg(&self.keys.meta)
                .arg("failed")
                .arg(failed)
                .ignore();
        }
        let set: Vec<i64> = pipe.query(&mut self.con).context("HSETNX + XACK")?;
        let written = set.iter().filter(|&&n| n == 1).count() as u64;
        self.written += written;
        // Another worker finished those first (it claimed them from us, or we
        // claimed them from a worker that was only slow).
        self.duplicates += set.len() as u64 - written;
        self.unsent.clear();
        self.unsent_since = None;
        Ok(())
    }

    /// `on_outcome`: the record, with the input index, unless the worker is
    /// stopping (cancelled, deadline): those entries stay pending for
    /// another worker.
    fn finish(&mut self, outcome: Outcome, cancel: &CancelToken) {
        let Some(entry) = self.in_flight.remove(&outcome.index) else {
            return;
        };
        self.ids_in_flight.remove(&entry.id);
        if let Err(e) = &outcome.result
            && matches!(e.kind(), ErrorKind::Cancelled | ErrorKind::Deadline)
        {
            self.abandoned += 1;
            return;
        }
        let outcome = Outcome {
            index: entry.index,
            ..outcome
        };
        if let Err(e) = self.write_final(&entry, &outcome, false) {
            self.error.get_or_insert(e);
            cancel.cancel();
        }
    }

    /// Writes the record of an entry the model is not given: a line that is
    /// not a URL, or one delivered too many times.
    fn settle(&mut self, entry: Entry) -> Result<()> {
        let (error, gave_up) = match &entry.bad {
            Some(why) => (FetchError::new(ErrorKind::InvalidUrl, why.clone()), false),
            None => (
                FetchError::new(
                    ErrorKind::Panicked,
                    format!(
                        "delivered {} times (--max-deliveries {}): the workers that took it \
                         died or stopped before finishing it",
                        entry.deliveries, self.max_deliveries
                    ),
                ),
                true,
            ),
        };
        let outcome = Outcome::untried(entry.index, &entry.url, error);
        if gave_up {
            self.gave_up += 1;
        }
        self.write_final(&entry, &outcome, gave_up)
    }
}

/// The stream as the model's URL list.
struct StreamUrls<'a> {
    worker: &'a RefCell<Worker>,
    cancel: &'a CancelToken,
}

impl Iterator for StreamUrls<'_> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let mut w = self.worker.borrow_mut();
        loop {
            if self.cancel.is_cancelled() || w.error.is_some() {
                return None;
            }
            if w.unsent_since.is_some_and(|at| at.elapsed() >= FLUSH_EVERY)
                && let Err(e) = w.flush()
            {
                w.error = Some(e);
                continue;
            }
            if let Some(entry) = w.buffer.pop_front() {
                if entry.bad.is_some() || entry.deliveries > w.max_deliveries {
                    if let Err(e) = w.settle(entry) {
                        w.error = Some(e);
                    }
                    continue;
                }
                let handed = w.handed_out;
                w.handed_out += 1;
                let url = entry.url.clone();
                w.ids_in_flight.insert(entry.id.clone());
                w.in_flight.insert(handed, entry);
                return Some(url);
            }
            match w.refill() {
                Ok(true) => continue,
                // Nothing new and nothing to claim. With URLs in flight, end
                // this pass so that their outcomes are written and acked (the
                // model reports them only once the iterator returns); the
                // worker starts another pass.
                Ok(false) if !w.in_flight.is_empty() => return None,
                Ok(false) => match w.job_done() {
                    Ok(true) => {
                        w.finished = true;
                        return None;
                    }
                    // Another worker holds the rest: wait for it to finish
                    // them, or to be claimable (it died).
                    Ok(false) => continue,
                    Err(e) => w.error = Some(e),
                },
                Err(e) => w.error = Some(e),
            }
        }
    }
}

fn consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}-{}", std::process::id())
}

pub fn worker(args: &WorkerArgs) -> Result<ExitCode> {
    let model = models::build(&args.model)?;
    let options = run::options(&args.fetch)?;
    run::check_fd_limit(args.fetch.concurrency, model.concurrency(&options));
    let mut con = connect(&args.redis)?;
    let keys = Keys::new(&args.job);
    ensure_group(&mut con, &keys)?;
    let claim_idle = args
        .claim_idle_ms
        .map_or_else(|| claim_idle(&options), Duration::from_millis);
    let consumer = args.consumer.clone().unwrap_or_else(consumer_name);
    eprintln!(
        "fetchlab worker {consumer} ({}): job {}, claiming entries idle for {} ms",
        model.name(),
        args.job,
        claim_idle.as_millis()
    );
    let worker = RefCell::new(Worker {
        con,
        keys,
        consumer,
        batch: model.concurrency(&options).clamp(1, 1000),
        claim_idle,
        max_deliveries: args.max_deliveries,
        buffer: VecDeque::new(),
        in_flight: HashMap::new(),
        ids_in_flight: HashSet::new(),
        handed_out: 0,
        last_claim: None,
        finished: false,
        error: None,
        unsent: Vec::new(),
        unsent_since: None,
        written: 0,
        duplicates: 0,
        abandoned: 0,
        claimed: 0,
        gave_up: 0,
    });
    let cancel = CancelToken::new();
    let signal = watch_signals(&cancel)?;
    let started = Instant::now();
    loop {
        model.run_iter(
            &mut StreamUrls {
                worker: &worker,
                cancel: &cancel,
            },
            &options,
            &mut |o: Outcome| worker.borrow_mut().finish(o, &cancel),
            &cancel,
        );
        let mut w = worker.borrow_mut();
        // The records of the pass's last outcomes.
        if let Err(e) = w.flush() {
            w.error.get_or_insert(e);
        }
        if w.finished || w.error.is_some() || cancel.is_cancelled() {
            break;
        }
    }
    let mut w = worker.into_inner();
    // Read but never handed out (a signal came): they stay pending too.
    w.abandoned += w.buffer.len() as u64;
    let wall = started.elapsed().as_secs_f64();
    eprintln!(
        "fetchlab worker {}: {} results written ({:.1}/s), {} already written by another worker, \
         {} claimed from others, {} given up after --max-deliveries, {} left pending (stopped)",
        w.consumer,
        w.written,
        w.written as f64 / wall.max(1e-9),
        w.duplicates,
        w.claimed,
        w.gave_up,
        w.abandoned
    );
    if let Some(e) = w.error {
        return Err(e);
    }
    Ok(match signal.load(Ordering::SeqCst) {
        0 => ExitCode::SUCCESS,
        n => {
            eprintln!("  stopped by a signal: exit code {}", 128 + n);
            u8::try_from(128 + n).map_or(ExitCode::FAILURE, ExitCode::from)
        }
    })
}

/// The first SIGINT, SIGTERM or SIGHUP stops reading and abandons the URLs
/// in flight (their entries stay pending, for another worker); a second one
/// exits at once, which loses nothing either: what was not acknowledged is
/// still pending.
fn watch_signals(cancel: &CancelToken) -> Result<Arc<AtomicI32>> {
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).context("installing the signal handlers")?;
    let first = Arc::new(AtomicI32::new(0));
    let (seen, cancel) = (Arc::clone(&first), cancel.clone());
    thread::Builder::new()
        .name("fetchlab-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if seen
                    .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    eprintln!(
                        "fetchlab worker: signal {signal}: stopping; the URLs in flight stay \
                         pending for another worker. Send it again to exit at once"
                    );
                    cancel.cancel();
                } else {
                    std::process::exit(128 + signal);
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(first)
}

// ---------------------------------------------------------------- results

/// The job's counts, for the status line.
#[derive(Debug, PartialEq)]
pub struct Status {
    pub enqueued: usize,
    pub done: usize,
    pub pending: usize,
    pub claimed: usize,
    pub failed: usize,
}

pub fn results(args: &ResultsArgs) -> Result<ExitCode> {
    let mut con = connect(&args.redis)?;
    let keys = Keys::new(&args.job);
    let mut out: Box<dyn Write> = if args.out.as_os_str() == "-" {
        Box::new(BufWriter::new(io::stdout().lock()))
    } else {
        let file = File::create(&args.out)
            .with_context(|| format!("cannot create {}", args.out.display()))?;
        Box::new(BufWriter::new(file))
    };
    let (total, xlen): (Option<usize>, usize) = redis::pipe()
        .cmd("HGET")
        .arg(&keys.meta)
        .arg("total")
        .cmd("XLEN")
        .arg(&keys.stream)
        .query(&mut con)?;
    let enqueued = total.unwrap_or(xlen);
    let mut start = 0;
    while start < enqueued {
        let end = (start + CHUNK).min(enqueued);
        let lines: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(&keys.results)
            .arg((start..end).collect::<Vec<_>>())
            .query(&mut con)
            .context("HMGET")?;
        for line in lines.into_iter().flatten() {
            out.write_all(&line)?;
            out.write_all(b"\n")?;
        }
        start = end;
    }
    out.flush().context("writing results")?;
    let status = status(&mut con, &keys, enqueued)?;
    eprintln!(
        "fetchlab results: job {}: enqueued {}, done {}, pending {}, claimed {}, failed {}{}",
        args.job,
        status.enqueued,
        status.done,
        status.pending,
        status.claimed,
        status.failed,
        if total.is_none() {
            " (enqueue not finished)"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn status(con: &mut redis::Connection, keys: &Keys, enqueued: usize) -> Result<Status> {
    let (done, claimed, failed): (usize, Option<usize>, Option<usize>) = redis::pipe()
        .cmd("HLEN")
        .arg(&keys.results)
        .cmd("HGET")
        .arg(&keys.meta)
        .arg("claimed")
        .cmd("HGET")
        .arg(&keys.meta)
        .arg("failed")
        .query(con)?;
    // XPENDING's summary: [count, first id, last id, consumers]; an error
    // when there is no stream or group yet.
    let pending = redis::cmd("XPENDING")
        .arg(&keys.stream)
        .arg(GROUP)
        .query::<Vec<Value>>(con)
        .ok()
        .and_then(|v| v.first().and_then(text))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Ok(Status {
        enqueued,
        done,
        pending,
        claimed: claimed.unwrap_or(0),
        failed: failed.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_carry_the_input_index() {
        assert_eq!(id_index("1-0"), 0);
        assert_eq!(id_index("5000-0"), 4999);
    }

    #[test]
    fn the_claim_idle_time_covers_every_attempt() {
        let options = Options::builder()
            .request_timeout(Duration::from_secs(30))
            .retries(2)
            .build()
            .unwrap();
        let expected = (Duration::from_secs(30) + options.backoff_max()) * 3 + CLAIM_MARGIN;
        assert_eq!(claim_idle(&options), expected);
        assert!(claim_idle(&options) > Duration::from_secs(100));
    }

    #[test]
    fn an_entry_is_parsed_and_a_deleted_one_skipped() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = Value::Array(vec![
            bulk("8-0"),
            Value::Array(vec![bulk("i"), bulk("7"), bulk("u"), bulk("http://a/7")]),
        ]);
        let e = parse_entry(&entry, 2).unwrap();
        assert_eq!(
            (e.id.as_str(), e.index, e.url.as_str()),
            ("8-0", 7, "http://a/7")
        );
        assert_eq!((e.bad, e.deliveries), (None, 2));
        assert!(parse_entry(&Value::Array(vec![bulk("9-0"), Value::Nil]), 1).is_none());
    }
}
