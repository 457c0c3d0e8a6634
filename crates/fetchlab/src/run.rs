//! `fetchlab run`: fetch a real URL list with one model, one JSON line per URL
//! as it finishes.
//!
//! The promise is one record per input URL, whatever happens to the run: a
//! line that is not a URL (not even UTF-8) becomes an `invalid_url` record,
//! and a signal cancels the run without dropping records. Four threads share
//! the input and the output ([`Shared`]):
//! - the calling thread runs the model, which pulls URLs through [`Urls`]
//!   and reports each outcome to [`Shared::write`], both on this thread;
//! - a reader thread reads the input a few lines ahead into a queue
//!   ([`handoff`](crate::handoff)), so that no thread ever blocks on a read
//!   that may never return (a standard input that stays open) while holding
//!   the input's lock;
//! - a flusher thread pushes the records written to the output every
//!   [`FLUSH_EVERY`], so the model's thread does not make a write call per
//!   record;
//! - a signal thread cancels the run on the first SIGINT, SIGTERM or SIGHUP
//!   and, on a second one, writes a record for every URL still unwritten and
//!   exits ([`Shared::stop_now`]).
//!
//! With `--resume` ([`resume`](crate::resume)), [`Source`] skips the input
//! lines that the output file already has a final record for. The model
//! then numbers the URLs it is handed 0, 1, 2... without them, so its index
//! is not the line's: every record is written with the input index kept in
//! [`Pending`] (or, for lines the model never saw, read from [`Source`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use clap::builder::PossibleValuesParser;
use fetch_core::{AutoThrottle, CancelToken, ErrorKind, FetchError, Options, Outcome, shown_url};
use fetchlab::summary::{Summary, Tally};
use indicatif::{ProgressBar, ProgressStyle};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use fetchlab::models;

use crate::handoff::{self, Receiver, RecvTimeoutError};
use crate::resume::{Conflict, Resume};

/// The longest input line taken as a URL: fetch-core's cap on a URL, so
/// that every over-long line gets the same record. A longer line is an
/// `invalid_url` record, and only this much of it is ever held in memory.
const MAX_LINE_BYTES: usize = fetch_core::MAX_URL_BYTES;

/// File descriptors a run needs besides one socket per request in flight:
/// stdio, the runtime's epoll and wakers, the resolver, the output file.
const FD_MARGIN: u64 = 64;

/// Lines read ahead of the model. The point is that a read never blocks a
/// thread holding a lock; the size only sets how often the reader is woken
/// (once per half of it), and 256 lines are a few dozen KiB.
const READ_AHEAD: usize = 256;

/// How long a record may sit in the output's buffer before it is written
/// out: what a consumer of a pipe waits at most, and what a `kill -9` can
/// lose of records already made (never half a record's URL: a resumed run
/// fetches those URLs again).
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// How long the calling thread waits for the next line before it lets go of
/// the input for a moment, so that a second signal can take it.
const INPUT_POLL: Duration = Duration::from_millis(100);

/// How long the second signal waits for a lock, and for one more input line,
/// before it exits without them.
const SECOND_SIGNAL_PATIENCE: Duration = Duration::from_secs(1);

/// `fetchlab run --help`, after the options.
pub const AFTER_HELP: &str = "\
Records:
  One JSON line per input URL, written as each URL finishes (so not in input
  order): index (the URL's position among the URL lines, from 0), url (the
  line as given), ok, status, bytes, title, links, final_url, content_type,
  saved, attempts, elapsed_ms, and error (null, or {kind, message}).
  final_url is the URL that gave the final answer, after redirects (the URL
  as normalised when there was none): set on a page, an http_status error
  (where the error status came from) and a save error, null on the others
  (no answer came). content_type is a page's Content-Type header as sent
  (null when there was none, and on every error). saved is the page's file
  under --save DIR, or null.
  Blank lines and lines starting with '#' are skipped; a UTF-8 byte-order
  mark at the start is ignored. Any other line gets a record: a line that is
  not a URL, is not valid UTF-8 (its text is shown with U+FFFD for the bad
  bytes), or is longer than 8192 bytes (its start is shown) is an
  invalid_url record, and the run goes on.

Signals:
  SIGINT (Ctrl-C), SIGTERM, SIGHUP: no new request starts; requests in flight
  are abandoned at once, in every model, and every URL not finished gets a
  `cancelled` record. The rest of the input is still read to its end, to give
  each line its record.
  A second signal: stop waiting. Requests in flight and the lines not yet
  read get `cancelled` records at once, then fetchlab exits (lines of an input
  that stays open, such as a terminal, get none after a 1 s wait).
  A third signal quits at once, even mid-record.

Saving pages:
  --save DIR writes each page's body to DIR/xy/<sha256 of final_url>.<ext>
  (xy: the hash's first two digits; ext from the Content-Type, bin when it is
  unknown), and the record's saved is that path relative to DIR. Only pages:
  the body of a non-2xx answer is never read. URLs that end at the same
  final_url share one file (the last write wins). Each file is written to
  DIR/.tmp/ and renamed into place before its record is written, so no
  record points at half a page; what a killed run left in DIR/.tmp/ is
  removed when the next run starts (so two runs must not share DIR at once).
  DIR is created if missing; if no page can be written there, fetchlab says
  why and exits 1 before fetching anything. A page that cannot be saved
  (disk full, a file in the way) gets a `save` error record, and the run
  goes on.

Resume:
  --out FILE --resume continues a run that was stopped (a signal, kill -9, a
  crash, --deadline-ms). The records already in FILE are read back; every
  input line that has a final record (any record but `cancelled`, `deadline`
  or `save`) is skipped, with no request, and the other lines are fetched and
  their records appended, with their index in the input. A last line cut off
  mid-write (kill -9) is removed first and its URL fetched again; any other
  line that is not a record is an error naming it. A line's final record is
  the one that is not cancelled/deadline/save: FILE holds at most one per
  line, and exactly one once a run ends on its own (the line's earlier
  cancelled/deadline/save records stay before it). FILE must come from the
  same URL list: a record whose url is not the line at its index, or an index
  past the end of the list, is an error, found before anything is fetched when
  --urls is a file, and as the lines arrive when it is '-'. A FILE that does
  not exist yet starts a fresh run. Memory: 16 bytes per final record.

Shards:
  --shard K/N fetches the input lines whose index (from 0) modulo N is K-1,
  K from 1 to N, and gives each record its index in the whole list: N runs,
  one per shard, with the same --urls, together fetch every line once, each
  writing its own --out file (a batch runner's static split: a Kubernetes
  Indexed Job gives JOB_COMPLETION_INDEX, 0-based, so pass $((I+1))/N; a
  Slurm array's SLURM_ARRAY_TASK_ID as it is, if the array starts at 1).
  For a dynamic split with crash recovery, see `fetchlab worker`.

Exit codes:
  0      the run ended on its own: every URL has its record (a run cut short
         by --deadline-ms included; see the records for failures)
  1      error: bad option value, unreadable URL file, a read error part-way
         (records were written up to it), an output write error, a --resume
         FILE with a line that is not a record or written for another list
  2      usage error (unknown option, unknown model, --resume without --out)
  128+N  stopped by signal N, every record written: 130 SIGINT, 143 SIGTERM,
         129 SIGHUP

Hosts:
  --per-host N (default 8): at most N requests in flight to one host, with
  --concurrency on top. A host is a scheme, host and port, taken from the URL
  as given: its redirects and retries count against it, wherever they lead.
  URLs for a host at its limit are held back and the list is read on, up to
  twice --concurrency (at least 64) URLs ahead, so a slow host does not hold
  up the others and memory still follows --concurrency; when every URL read
  ahead is for a full host, the run waits for one to finish.
  --delay-ms MS (default 0, none): at least MS between the starts of two
  attempts to one host, each gap drawn between 0.5 and 1.5 times MS. Retries
  wait for their turn too. A URL waiting for its host's turn holds its slot
  (of --concurrency and of --per-host) meanwhile, so one slow host never
  takes more than --per-host slots from the others.
  --auto-throttle: each host's delay follows the latency of its responses
  (Scrapy's AutoThrottle: target = latency / target concurrency; new delay =
  max(target, (old + target) / 2), kept within --delay-ms and the maximum;
  a response that is not 2xx may raise the delay, never lower it). A host
  starts at --auto-throttle-start-ms (5000). Latency here is an attempt's
  whole time (connect, headers, body, redirects); Scrapy's is the time to the
  headers.
  With a delay or AutoThrottle, a 429 or 503 with Retry-After (seconds,
  capped at 30 s) also holds back every other request to that host until it
  has passed; without them, only that URL's own retry waits.
  Scrapy's settings: CONCURRENT_REQUESTS is --concurrency (16 in both),
  CONCURRENT_REQUESTS_PER_DOMAIN is --per-host (8 in both), DOWNLOAD_DELAY
  with RANDOMIZE_DOWNLOAD_DELAY is --delay-ms, AUTOTHROTTLE_ENABLED,
  _START_DELAY, _MAX_DELAY and _TARGET_CONCURRENCY are --auto-throttle,
  --auto-throttle-start-ms, --auto-throttle-max-ms and --auto-throttle-target.
  Scrapy counts per host name (http://a and https://a:8443 share a slot);
  fetchlab counts per scheme, host and port. Scrapy ignores Retry-After.

Robots:
  --robots: before a host's first request, its /robots.txt is fetched
  (scheme, host and port: one file per origin, kept for the whole run; in
  the processes model, once per worker), with the same client, user agent,
  timeouts, retries, --delay-ms and redirects (at least 5) as any request. A
  URL it disallows gets a robots_disallowed record (attempts 0) and is never
  requested; so does a URL that redirects, on the same host, to one it
  disallows, before that is requested. A redirect to another host is not
  checked. Its groups are matched with the
  product token of --user-agent (the text before the first '/': fetchlab for
  the default). A 2xx is parsed (the first 500 KiB); a 404 or another 4xx
  means no rules; a 429, a 5xx, a timeout or no connection means every URL of
  the host is disallowed (RFC 9309), and the record says why. robots.txt's
  own requests get no record. robots_disallowed is final for --resume.
  Scrapy's ROBOTSTXT_OBEY; Scrapy parses whatever body a 4xx or 5xx has
  (usually no rules), allows everything when robots.txt cannot be fetched,
  and matches its user agent as a substring.

Limits:
  Each request in flight holds a socket, one file descriptor. At start the
  open-file limit is raised to its hard limit; if --concurrency plus 64 still
  does not fit, a warning says so once, with the numbers, and the run goes on:
  the requests past the limit fail (`connect`, \"Too many open files\"). Raise
  the limit (ulimit -n N; the hard limit may need root) or lower --concurrency.
  Memory stays proportional to --concurrency, not to the length of the list.";

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The model to fetch with.
    #[arg(long, value_parser = PossibleValuesParser::new(models::names()))]
    model: String,
    /// File with one URL per line ("-" for standard input). Blank lines and
    /// lines starting with '#' are skipped.
    #[arg(long)]
    urls: PathBuf,
    /// Where to write the JSON lines ("-" for standard output).
    #[arg(long, default_value = "-")]
    out: PathBuf,
    /// The fetch options, shared with `fetchlab worker`.
    #[command(flatten)]
    pub fetch: FetchArgs,
    /// Fetch only shard K of N: the input lines whose index modulo N is
    /// K - 1 (K from 1 to N; for Kubernetes' 0-based JOB_COMPLETION_INDEX,
    /// give index + 1). Records keep their index in the whole list. See
    /// "Shards" in --help.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    shard: Option<Shard>,
    /// Never show the progress bar (it is shown only when stderr is a terminal).
    #[arg(long)]
    no_progress: bool,
    /// Continue an interrupted run: read the records already in --out FILE,
    /// skip the input lines that have a final one (not cancelled/deadline/save)
    /// and append records for the rest. See "Resume" in --help.
    #[arg(long)]
    resume: bool,
}

/// The options of one fetch, the same for `run` and `worker`.
#[derive(Args, Debug)]
pub struct FetchArgs {
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Requests in flight to one host (scheme, host and port), with
    /// --concurrency on top: Scrapy's CONCURRENT_REQUESTS_PER_DOMAIN (8).
    /// A value of --concurrency or more means no per-host limit. See "Hosts"
    /// in --help.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub per_host: usize,
    /// Least time between two requests to one host, in milliseconds, each
    /// gap drawn between 0.5 and 1.5 times it: Scrapy's DOWNLOAD_DELAY with
    /// RANDOMIZE_DOWNLOAD_DELAY. With --auto-throttle, its lowest delay.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    delay_ms: u64,
    /// Adjust each host's delay to its latency: Scrapy's AutoThrottle (start
    /// 5 s, max 60 s, target concurrency 1, unless set below).
    #[arg(long)]
    auto_throttle: bool,
    /// AutoThrottle's first delay for a host (AUTOTHROTTLE_START_DELAY).
    #[arg(
        long,
        default_value_t = 5_000,
        value_name = "MS",
        requires = "auto_throttle"
    )]
    auto_throttle_start_ms: u64,
    /// AutoThrottle's longest delay (AUTOTHROTTLE_MAX_DELAY).
    #[arg(
        long,
        default_value_t = 60_000,
        value_name = "MS",
        requires = "auto_throttle"
    )]
    auto_throttle_max_ms: u64,
    /// Requests AutoThrottle aims to keep in flight to each host, on average
    /// (AUTOTHROTTLE_TARGET_CONCURRENCY).
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "N",
        requires = "auto_throttle"
    )]
    auto_throttle_target: f64,
    /// Per-attempt timeout (connect, headers and body), in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Connect timeout, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    connect_timeout_ms: u64,
    /// Global deadline for the whole run, in milliseconds (none by default).
    #[arg(long)]
    deadline_ms: Option<u64>,
    /// Extra attempts for retryable failures.
    #[arg(long, default_value_t = 2)]
    retries: u32,
    /// Largest accepted body, in bytes.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    max_body_bytes: u64,
    /// Redirects followed per URL.
    #[arg(long, default_value_t = 5)]
    max_redirects: u32,
    /// Skip the HTML parse (title and links are null).
    #[arg(long)]
    no_parse: bool,
    /// Extra CPU work units per page (one unit is about a microsecond).
    #[arg(long, default_value_t = 0)]
    cpu_work: u32,
    /// User-Agent header.
    #[arg(long)]
    user_agent: Option<String>,
    /// PEM file of extra root certificates to trust (on top of the platform's).
    #[arg(long)]
    root_cert: Option<PathBuf>,
    /// Save each page's body under DIR (created if missing), named by the
    /// SHA-256 of its final URL; the record's `saved` says which file. See
    /// "Saving pages" in --help.
    #[arg(long, value_name = "DIR")]
    save: Option<PathBuf>,
    /// Obey each host's robots.txt (RFC 9309; Scrapy's ROBOTSTXT_OBEY): a URL
    /// it disallows gets a robots_disallowed record and no request. See
    /// "Robots" in --help.
    #[arg(long)]
    robots: bool,
}

/// `--shard K/N`: this run fetches the lines with index % N == K - 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shard {
    /// 1-based, as a person counts shards.
    pub k: usize,
    pub n: usize,
}

impl Shard {
    /// Whether the line at input index `index` is this shard's.
    pub fn owns(self, index: usize) -> bool {
        index % self.n == self.k - 1
    }
}

/// Parses `K/N`, 1 <= K <= N.
pub fn parse_shard(text: &str) -> Result<Shard, String> {
    let (k, n) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not K/N (e.g. 2/4)"))?;
    let k: usize = k
        .trim()
        .parse()
        .map_err(|_| format!("{k:?} is not a number"))?;
    let n: usize = n
        .trim()
        .parse()
        .map_err(|_| format!("{n:?} is not a number"))?;
    if n == 0 || k == 0 || k > n {
        return Err(format!(
            "K/N needs 1 <= K <= N (shards count from 1; for a 0-based index I, give I+1/N), got {k}/{n}"
        ));
    }
    Ok(Shard { k, n })
}

/// Runs the list; `Ok` carries the exit code (0, or 128 + the signal that
/// stopped the run), `Err` is an error (exit code 1).
pub fn run(args: &RunArgs) -> Result<ExitCode> {
    if args.resume && is_stdin(&args.out) {
        return Ok(usage_error(
            "--resume needs --out FILE: it reads back the records already in FILE and appends \
             the rest (standard output cannot be read back)",
        ));
    }
    let model = models::build(&args.model)?;
    let options = options(&args.fetch)?;
    check_fd_limit(args.fetch.concurrency, model.concurrency(&options));
    // Read, checked, but not changed yet: nothing is written to FILE unless
    // the run goes ahead.
    let mut resume = if args.resume {
        open_resume(&args.out)?
    } else {
        None
    };
    // The progress bar's length: a file is counted first (a quick streaming
    // pass), but only when the bar is shown; standard input can only be read
    // once, so it gets a spinner. A resumed run over a file always makes that
    // pass, to check the file against the list before fetching anything.
    let show_progress = !args.no_progress && io::stderr().is_terminal();
    let total = match &mut resume {
        Some((r, _)) if !is_stdin(&args.urls) => {
            let lines = check_input(open_urls(&args.urls)?, r, &args.urls)?;
            let left = lines.saturating_sub(r.done());
            eprintln!(
                "fetchlab: {} of {} lines left to fetch",
                grouped(left),
                grouped(lines)
            );
            Some(left)
        }
        _ if show_progress && !is_stdin(&args.urls) => {
            Some(count_urls(open_urls(&args.urls)?).with_context(|| in_file(&args.urls))?)
        }
        _ => None,
    };
    // A shard's share of the lines, for the progress bar.
    let total = match args.shard {
        Some(s) => total.map(|t| (t + (s.n - s.k) as u64) / s.n as u64),
        None => total,
    };
    let lines = spawn_reader(open_urls(&args.urls)?)?;
    // `Stdout`, not its lock: the signal thread may write the last records.
    let mut resumed = None;
    let out: Box<dyn Write + Send> = if is_stdin(&args.out) {
        Box::new(BufWriter::new(io::stdout()))
    } else if let Some((r, file)) = resume {
        let file = r
            .append_to(file)
            .with_context(|| format!("cannot append to {}", args.out.display()))?;
        resumed = Some(r);
        Box::new(BufWriter::new(file))
    } else {
        let file = File::create(&args.out)
            .with_context(|| format!("cannot create output file {}", args.out.display()))?;
        Box::new(BufWriter::new(file))
    };
    let progress = if show_progress {
        progress_bar(total)
    } else {
        ProgressBar::hidden()
    };
    let shared = Arc::new(Shared::new(lines, out, progress, resumed));
    lock(&shared.source).shard = args.shard;
    let cancel = CancelToken::new();
    watch_signals(&shared, &cancel)?;
    flush_periodically(&shared, &cancel)?;

    let started = Instant::now();
    // Streaming: URLs are read as slots free up and each record is written
    // and dropped as it arrives, so memory does not grow with the list.
    model.run_iter(
        &mut Urls {
            shared: &shared,
            cancel: &cancel,
        },
        &options,
        &mut |o: Outcome| shared.write(o, &cancel),
        &cancel,
    );
    let wall = started.elapsed();
    let (tally, write_error) = {
        let mut sink = lock(&shared.sink);
        sink.progress.finish_and_clear();
        // The flusher may be asleep with records in the buffer.
        let _ = sink.flush();
        (std::mem::take(&mut sink.tally), sink.write_error.take())
    };
    if let Some(e) = write_error {
        bail!("writing output: {e}");
    }
    let (conflict, read_error, skipped) = {
        let mut source = lock(&shared.source);
        let skipped = source.resume.as_ref().map(Resume::skipped);
        (source.conflict.take(), source.error.take(), skipped)
    };
    if let Some(conflict) = conflict {
        // Only with `--urls -`: a file is checked before the run.
        bail!("{conflict} (records were appended for the lines read before it)");
    }
    if let Some(e) = read_error {
        bail!(
            "reading URLs from {}: {e} (records were written for the URLs read before it)",
            args.urls.display()
        );
    }
    let summary = tally.finish(wall);
    print_summary(model.name(), &summary);
    if args.fetch.per_host < args.fetch.concurrency {
        // A list of one host runs at --per-host, not --concurrency: say so,
        // so that `--concurrency 100` on one site is not a silent 8.
        eprintln!(
            "  at most {} requests in flight to one host (--per-host); --concurrency {} is \
             the total across hosts",
            args.fetch.per_host, args.fetch.concurrency
        );
    }
    if let Some(skipped) = skipped {
        eprintln!(
            "  resumed {}: {} lines already done, {} records written now",
            args.out.display(),
            grouped(skipped),
            grouped(summary.pages as u64)
        );
    }
    Ok(match shared.first_signal.load(Ordering::SeqCst) {
        0 => ExitCode::SUCCESS,
        signal => {
            eprintln!(
                "  stopped by {}: exit code {}",
                signal_name(signal),
                128 + signal
            );
            exit_code_for(signal)
        }
    })
}

/// 128 + the signal number, the shell's convention for "ended by signal N".
fn exit_code_for(signal: i32) -> ExitCode {
    u8::try_from(128 + signal).map_or(ExitCode::FAILURE, ExitCode::from)
}

fn signal_name(signal: i32) -> &'static str {
    signal_hook::low_level::signal_name(signal).unwrap_or("a signal")
}

/// Raises the soft open-file limit to the hard one (the default soft limit,
/// often 1024, is far below what a high concurrency needs), and says once if
/// the concurrency still cannot fit. Never refuses: a run over the limit
/// still gives every URL a record, and some of them say why.
pub(crate) fn check_fd_limit(asked: usize, concurrency: usize) {
    let needed = u64::try_from(concurrency)
        .unwrap_or(u64::MAX)
        .saturating_add(FD_MARGIN);
    // Best effort: where the limit cannot be read or raised, a shortage shows
    // up in the records as `connect` errors, as it would without this check.
    let Ok(soft) = rlimit::increase_nofile_limit(u64::MAX) else {
        return;
    };
    if soft >= needed {
        return;
    }
    let hard = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(soft, |(_, hard)| hard);
    let fits = soft.saturating_sub(FD_MARGIN).max(1);
    eprintln!(
        "fetchlab: warning: --concurrency {asked} needs about {needed} open files (one socket per \
         request in flight, plus {FD_MARGIN}), but this process may open only {soft} (hard limit \
         {hard}); requests past the limit will fail with \"Too many open files\". Raise the limit \
         (`ulimit -n {needed}`{}) or use --concurrency {fits} or less.",
        if needed > hard {
            ", which needs the hard limit raised, as root"
        } else {
            ""
        }
    );
}

/// A usage error found after parsing (exit code 2), worded as clap words
/// its own.
fn usage_error(message: &str) -> ExitCode {
    use clap::Args as _;
    let mut cmd = RunArgs::augment_args(clap::Command::new("run").bin_name("fetchlab run"));
    let _ = cmd
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .print();
    ExitCode::from(2)
}

/// `--resume`: reads `path` back, saying on stderr what it found. `None`
/// when it does not exist yet (a fresh run).
fn open_resume(path: &Path) -> Result<Option<(Resume, File)>> {
    let Some((resume, file)) = Resume::open(path)? else {
        eprintln!(
            "fetchlab: --resume: {} does not exist yet; starting a fresh run",
            path.display()
        );
        return Ok(None);
    };
    eprintln!(
        "fetchlab: resuming {}: {} records, {} lines already done (the others, cancelled or \
         not started, are fetched)",
        path.display(),
        grouped(resume.records()),
        grouped(resume.done())
    );
    if let Some(cut) = resume.cut() {
        eprintln!(
            "fetchlab: {} ends in an unfinished record (line {}, {} bytes: the run writing it \
             was killed); it is cut off and its URL fetched again",
            path.display(),
            cut.line,
            cut.bytes
        );
    }
    Ok(Some((resume, file)))
}

/// A resumed run's first pass over a URL file: every line that the output
/// file says is done must be the line its record shows, and no record may
/// be past the end; checked before anything is fetched or written. Returns
/// the number of URL lines.
fn check_input(reader: impl BufRead, resume: &mut Resume, path: &Path) -> Result<u64> {
    let mut lines = LineReader::new(reader);
    let mut n = 0u64;
    while let Some(line) = lines.next_line().with_context(|| in_file(path))? {
        resume.check(n, &record_url(&line))?;
        n += 1;
    }
    resume.finish(n)?;
    resume.rewind();
    Ok(n)
}

/// `12345678` as `12,345,678`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

fn in_file(path: &Path) -> String {
    format!("reading URLs from {}", path.display())
}

fn progress_bar(total: Option<u64>) -> ProgressBar {
    let (bar, template) = match total {
        Some(n) => (
            ProgressBar::new(n),
            "{bar:40} {pos}/{len} {per_sec} eta {eta}",
        ),
        None => (ProgressBar::new_spinner(), "{spinner} {pos} URLs {per_sec}"),
    };
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn open_urls(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    if is_stdin(path) {
        return Ok(Box::new(BufReader::new(io::stdin())));
    }
    let file =
        File::open(path).with_context(|| format!("cannot read URL file {}", path.display()))?;
    Ok(Box::new(BufReader::new(file)))
}

fn count_urls(reader: impl BufRead) -> io::Result<u64> {
    let mut lines = LineReader::new(reader);
    let mut n = 0;
    while lines.next_line()?.is_some() {
        n += 1;
    }
    Ok(n)
}

/// One URL line of the input.
#[derive(Debug, PartialEq)]
pub(crate) enum Line {
    /// A line to hand to the model, trimmed. Bytes that were not UTF-8 are
    /// U+FFFD here; fetch-core rejects such a URL as `invalid_url`, saying why.
    Url(String),
    /// A line over [`MAX_LINE_BYTES`]: its start, and its length in bytes.
    TooLong { start: String, bytes: u64 },
}

/// The `url` of a line's record: the line as given, or the start of one too
/// long (fetch-core shows a line that decodes to more than its limit the same
/// way). A resumed run matches records with lines by it.
fn record_url(line: &Line) -> Cow<'_, str> {
    match line {
        Line::Url(url) if url.len() <= fetch_core::MAX_URL_BYTES => Cow::Borrowed(url),
        Line::Url(url) => Cow::Owned(shown_url(url)),
        Line::TooLong { start, .. } => Cow::Borrowed(start),
    }
}

/// Splits the input into [`Line`]s by bytes, not by `str`: a line that is not
/// UTF-8 is a bad line, not the end of the list (as `BufRead::lines` has it).
pub(crate) struct LineReader<R> {
    reader: R,
    buf: Vec<u8>,
    first: bool,
}

impl<R: BufRead> LineReader<R> {
    pub(crate) fn new(reader: R) -> Self {
        LineReader {
            reader,
            buf: Vec::new(),
            first: true,
        }
    }

    /// The next URL line, skipping blanks and `#` comments; `None` at the end.
    /// An error is a real I/O error, never a decoding one.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<Line>> {
        loop {
            let Some(len) = self.read_line()? else {
                return Ok(None);
            };
            let mut bytes = &self.buf[..];
            if std::mem::take(&mut self.first) {
                // Windows editors start UTF-8 files with a byte-order mark.
                bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            }
            let too_long = len > MAX_LINE_BYTES as u64;
            if !too_long {
                bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
            }
            let text = String::from_utf8_lossy(bytes);
            let text = text.trim();
            if text.starts_with('#') || (text.is_empty() && !too_long) {
                continue;
            }
            return Ok(Some(if too_long {
                Line::TooLong {
                    // fetch-core's marker for a truncated line, so every
                    // over-long line reads the same.
                    start: format!(
                        "{}…[truncated: {len} bytes]",
                        text.chars().take(200).collect::<String>()
                    ),
                    bytes: len,
                }
            } else {
                Line::Url(text.to_string())
            }));
        }
    }

    /// Reads one line into `buf`, keeping at most [`MAX_LINE_BYTES`] of it
    /// (and one byte more, to know it was longer); returns its length without
    /// the newline, or `None` at the end of the input.
    fn read_line(&mut self) -> io::Result<Option<u64>> {
        self.buf.clear();
        let mut len = 0u64;
        let mut any = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(any.then_some(len));
            }
            any = true;
            let (part, newline) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], true),
                None => (available, false),
            };
            let room = (MAX_LINE_BYTES + 1).saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&part[..part.len().min(room)]);
            len += part.len() as u64;
            let used = part.len() + usize::from(newline);
            self.reader.consume(used);
            if newline {
                return Ok(Some(len));
            }
        }
    }
}

/// Reads the input on its own thread, [`READ_AHEAD`] lines ahead. The
/// channel ends (disconnects) at the end of the input; a read error is its
/// last item.
fn spawn_reader(reader: Box<dyn BufRead + Send>) -> Result<Receiver<io::Result<Line>>> {
    let (tx, rx) = handoff::channel(READ_AHEAD);
    thread::Builder::new()
        .name("fetchlab-input".into())
        .spawn(move || {
            let mut lines = LineReader::new(reader);
            while let Some(item) = lines.next_line().transpose() {
                let last = item.is_err();
                // A send fails when the run is over: nothing left to read for.
                if tx.send(item).is_err() || last {
                    break;
                }
            }
        })
        .context("starting the input thread")?;
    Ok(rx)
}

/// What the model's thread and the signal thread share. The lock order is
/// `source`, then `sink`, everywhere, so that handing a URL out (read it,
/// number it, note it pending) is one step that the second signal sees
/// either before or after, never half done.
struct Shared {
    source: Mutex<Source>,
    sink: Mutex<Sink>,
    /// Set by the second signal: the model's thread must not take `source`
    /// again (it would only hand out URLs that can get no record).
    stopping: AtomicBool,
    /// The first signal's number, 0 while none has come.
    first_signal: AtomicI32,
    /// For messages on stderr (the sink's clone counts the records).
    progress: ProgressBar,
}

/// The input side: the lines read, the index the next one gets, and, when
/// resuming, the lines already done, which it skips.
struct Source {
    lines: Receiver<io::Result<Line>>,
    /// The input index of the next line: its position among the URL lines,
    /// from 0, skipped lines included. The index every record is written with.
    next_index: usize,
    /// URLs handed to the model so far. The model's `Dispatch` numbers them
    /// 0, 1, 2... in that order: the input index only when none is skipped.
    handed_out: usize,
    resume: Option<Resume>,
    /// `--shard K/N`: the lines of other shards are skipped, after their
    /// index is counted, so records keep their index in the whole list.
    shard: Option<Shard>,
    done: bool,
    error: Option<io::Error>,
    /// The input is not the list the resumed file was written for.
    conflict: Option<Conflict>,
}

/// The output side: every URL handed out and not yet written, and the writer.
struct Sink {
    out: Box<dyn Write + Send>,
    /// By the model's index of the URL (see [`Source::handed_out`]).
    pending: BTreeMap<usize, Pending>,
    /// Whether records were written since the last flush.
    unflushed: bool,
    /// The record being written, reused from one record to the next.
    line: Vec<u8>,
    tally: Tally,
    progress: ProgressBar,
    write_error: Option<io::Error>,
}

/// A URL handed to the model whose record is not written yet.
struct Pending {
    /// The line's input index, which its record gets.
    index: usize,
    /// The `url` its record shows ([`record_url`]).
    url: String,
    since: Instant,
    /// For a line too long to be a URL, the record to write instead of
    /// whatever the model says about the empty URL it was given.
    replace_with: Option<FetchError>,
}

impl Pending {
    fn new(index: usize, url: String, replace_with: Option<FetchError>) -> Self {
        Pending {
            index,
            url,
            since: Instant::now(),
            replace_with,
        }
    }
}

/// A poisoned lock only means a thread panicked while writing a record; the
/// state is still one line per record, so the run goes on with it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The lock, unless it is held for longer than `patience` (a write blocked on
/// a stopped reader of our output, for one).
fn try_lock_for<T>(mutex: &Mutex<T>, patience: Duration) -> Option<MutexGuard<'_, T>> {
    let until = Instant::now() + patience;
    loop {
        match mutex.try_lock() {
            Ok(guard) => return Some(guard),
            Err(TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(TryLockError::WouldBlock) if Instant::now() < until => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(TryLockError::WouldBlock) => return None,
        }
    }
}

impl Source {
    /// The next line to give a record, with its input index; `Ok(None)` at
    /// the end of the input (or at a read error, kept in `error`, or at a
    /// line that the resumed file does not match, kept in `conflict`), or a
    /// timeout after `wait`. Lines already done are skipped here.
    fn next_line(&mut self, wait: Duration) -> Result<Option<(usize, Line)>, RecvTimeoutError> {
        let until = Instant::now() + wait;
        loop {
            if self.done {
                return Ok(None);
            }
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(Ok(line)) => {
                    let index = self.next_index;
                    self.next_index += 1;
                    let mine = self.shard.is_none_or(|s| s.owns(index));
                    let Some(resume) = &mut self.resume else {
                        if !mine {
                            continue;
                        }
                        return Ok(Some((index, line)));
                    };
                    match resume.check(index as u64, &record_url(&line)) {
                        Ok(true) => continue,
                        Ok(false) if !mine => continue,
                        Ok(false) => return Ok(Some((index, line))),
                        Err(conflict) => {
                            self.conflict = Some(conflict);
                            self.done = true;
                            return Ok(None);
                        }
                    }
                }
                Ok(Err(e)) => {
                    self.error = Some(e);
                    self.done = true;
                    return Ok(None);
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.done = true;
                    if let Some(resume) = &self.resume {
                        self.conflict = resume.finish(self.next_index as u64).err();
                    }
                    return Ok(None);
                }
                Err(RecvTimeoutError::Timeout) => return Err(RecvTimeoutError::Timeout),
            }
        }
    }
}

impl Sink {
    /// Writes one record; on a write error, keeps it and writes no more.
    fn write(&mut self, outcome: &Outcome) -> io::Result<()> {
        self.progress.inc(1);
        self.tally.add(outcome);
        if let Some(e) = &self.write_error {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        // Serialized into a reused line, then handed to the output's buffer
        // in one call: serde_json writes a record in some sixty pieces, and
        // each piece through `dyn Write` cost more than the JSON itself
        // (callgrind: 4,800 instructions a record before, 3,000 after).
        // Serializing plain fields and strings into a Vec cannot fail.
        self.line.clear();
        let result = serde_json::to_writer(&mut self.line, &record(outcome))
            .map_err(io::Error::from)
            .and_then(|()| {
                self.line.push(b'\n');
                self.out.write_all(&self.line)
            });
        self.unflushed = true;
        if let Err(e) = result {
            self.write_error = Some(io::Error::new(e.kind(), e.to_string()));
            return Err(e);
        }
        Ok(())
    }

    /// Writes out the buffer; on a write error, keeps it and writes no more.
    fn flush(&mut self) -> io::Result<()> {
        if let Some(e) = &self.write_error {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        self.unflushed = false;
        self.out.flush().inspect_err(|e| {
            self.write_error = Some(io::Error::new(e.kind(), e.to_string()));
        })
    }
}

impl Shared {
    fn new(
        lines: Receiver<io::Result<Line>>,
        out: Box<dyn Write + Send>,
        progress: ProgressBar,
        resume: Option<Resume>,
    ) -> Self {
        Shared {
            source: Mutex::new(Source {
                lines,
                next_index: 0,
                handed_out: 0,
                resume,
                shard: None,
                done: false,
                error: None,
                conflict: None,
            }),
            sink: Mutex::new(Sink {
                out,
                pending: BTreeMap::new(),
                unflushed: false,
                line: Vec::new(),
                tally: Tally::new(),
                progress: progress.clone(),
                write_error: None,
            }),
            stopping: AtomicBool::new(false),
            first_signal: AtomicI32::new(0),
            progress,
        }
    }

    /// The model's `on_outcome`: writes the record of a URL handed out,
    /// with the line's input index in place of the model's.
    fn write(&self, outcome: Outcome, cancel: &CancelToken) {
        let mut sink = lock(&self.sink);
        let outcome = match sink.pending.remove(&outcome.index) {
            Some(Pending {
                index,
                url,
                replace_with: Some(error),
                ..
            }) => Outcome::untried(index, &url, error),
            Some(Pending { index, .. }) => Outcome { index, ..outcome },
            // Every URL the model has was noted pending before it got it,
            // and `Dispatch` reports each one once.
            None => outcome,
        };
        // Into the buffer only: the flusher thread writes it out within
        // FLUSH_EVERY, and `run` at the end.
        if sink.write(&outcome).is_err() {
            // A closed pipe (`| head`) or a full disk: stop fetching.
            cancel.cancel();
        }
    }

    /// Writes out what the output's buffer holds; on an error, which the
    /// sink keeps, cancels the run as a failed write does.
    fn flush(&self, cancel: &CancelToken) {
        let mut sink = lock(&self.sink);
        if sink.unflushed && sink.flush().is_err() {
            cancel.cancel();
        }
    }

    /// The second signal: write a `cancelled` record for every URL handed
    /// out and not yet written, then for the rest of the input, and exit
    /// with 128 + the first signal's number. Holding both locks to the end
    /// keeps the model's thread from writing anything more.
    fn stop_now(&self, first: i32, second: i32) -> ! {
        self.stopping.store(true, Ordering::SeqCst);
        let code = 128 + first;
        // A third signal quits at once, whatever this is waiting for.
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            let _ = signal_hook::flag::register_conditional_shutdown(
                signal,
                code,
                Arc::new(AtomicBool::new(true)),
            );
        }
        self.progress.finish_and_clear();
        eprintln!(
            "\nfetchlab: {}: writing a `cancelled` record for every URL left, then exiting; \
             a third signal quits at once",
            signal_name(second)
        );
        // The model's thread lets go of the input within INPUT_POLL, unless
        // it is stuck writing (below).
        let mut source = try_lock_for(&self.source, SECOND_SIGNAL_PATIENCE);
        let Some(mut sink) = try_lock_for(&self.sink, SECOND_SIGNAL_PATIENCE) else {
            eprintln!(
                "fetchlab: the output accepts nothing (is its reader stopped?); \
                 exiting without the remaining records"
            );
            std::process::exit(code);
        };
        let rest = write_the_rest(source.as_deref_mut(), &mut sink, SECOND_SIGNAL_PATIENCE);
        let flushed = sink.out.flush();
        match rest.input {
            InputLeft::None => {}
            InputLeft::Silent => eprintln!(
                "fetchlab: no input line came within {SECOND_SIGNAL_PATIENCE:?} (an input that \
                 stays open?); the lines after it get no record"
            ),
            InputLeft::Busy => eprintln!(
                "fetchlab: the input was busy for {SECOND_SIGNAL_PATIENCE:?}; \
                 the lines not yet read get no record"
            ),
        }
        eprintln!(
            "fetchlab: wrote {} `cancelled` records ({} in flight, {} not started)",
            rest.in_flight + rest.unread,
            rest.in_flight,
            rest.unread
        );
        if let Some(e) = sink.write_error.as_ref().or(flushed.as_ref().err()) {
            eprintln!("fetchlab: error: writing output: {e}");
            std::process::exit(1);
        }
        if let Some(source) = source.as_deref_mut() {
            if let Some(conflict) = source.conflict.take() {
                eprintln!("fetchlab: error: {conflict} (records were written up to it)");
                std::process::exit(1);
            }
            if let Some(e) = source.error.take() {
                eprintln!("fetchlab: error: reading URLs: {e} (records were written up to it)");
                std::process::exit(1);
            }
        }
        // `sink` is still locked: the model's thread writes nothing more.
        std::process::exit(code);
    }
}

/// What the second signal wrote.
#[derive(Debug, PartialEq)]
struct Rest {
    in_flight: usize,
    unread: usize,
    input: InputLeft,
}

/// Whether input lines were left without a record.
#[derive(Debug, PartialEq)]
enum InputLeft {
    /// No: the input was read to its end (or to a read error).
    None,
    /// No line came within the patience (a terminal or a pipe left open).
    Silent,
    /// The input's lock could not be had.
    Busy,
}

/// Writes a `cancelled` record for every URL handed out and not written, in
/// index order, then for each line left in `source` (`None`: not reachable)
/// and not already done, each with its input index. Stops reading when no
/// line comes within `patience`.
fn write_the_rest(source: Option<&mut Source>, sink: &mut Sink, patience: Duration) -> Rest {
    let cut_off = |index: usize, url: String, elapsed: Duration, why: &str| Outcome {
        index,
        url,
        attempts: 0,
        elapsed,
        result: Err(FetchError::new(
            ErrorKind::Cancelled,
            format!("run interrupted by a second signal {why}"),
        )),
    };
    let pending = std::mem::take(&mut sink.pending);
    let in_flight = pending.len();
    for p in pending.into_values() {
        let outcome = match p.replace_with {
            Some(error) => Outcome::untried(p.index, &p.url, error),
            None => cut_off(
                p.index,
                p.url,
                p.since.elapsed(),
                "while the URL was in flight",
            ),
        };
        // A write error is kept in the sink; the caller reports it.
        let _ = sink.write(&outcome);
    }
    let mut unread = 0;
    let Some(source) = source else {
        return Rest {
            in_flight,
            unread,
            input: InputLeft::Busy,
        };
    };
    let input = loop {
        match source.next_line(patience) {
            Ok(Some((index, line))) => {
                let url = record_url(&line).into_owned();
                let outcome = cut_off(index, url, Duration::ZERO, "before the URL started");
                let _ = sink.write(&outcome);
                unread += 1;
            }
            Ok(None) => break InputLeft::None,
            Err(_timeout) => break InputLeft::Silent,
        }
    };
    Rest {
        in_flight,
        unread,
        input,
    }
}

/// The URL list as the model sees it: a lazy iterator, on the model's
/// thread, that notes each URL pending before handing it out.
struct Urls<'a> {
    shared: &'a Shared,
    /// Cancelled when the input turns out not to match a resumed file.
    cancel: &'a CancelToken,
}

impl Iterator for Urls<'_> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        loop {
            if self.shared.stopping.load(Ordering::SeqCst) {
                // The second signal is writing the last records and will
                // exit the process; nothing read now could get a record.
                loop {
                    thread::park();
                }
            }
            let mut source = lock(&self.shared.source);
            // Waiting in short turns (the lock is let go in between) so that
            // a second signal can take the input even when it stays silent.
            let Ok(next) = source.next_line(INPUT_POLL) else {
                continue;
            };
            let Some((index, line)) = next else {
                if source.conflict.is_some() {
                    // Nothing more is fetched for a list that is not FILE's.
                    self.cancel.cancel();
                }
                return None;
            };
            // The model's index for this URL, which its outcome will carry.
            let handed = source.handed_out;
            source.handed_out += 1;
            let (url, pending) = match line {
                Line::Url(url) => {
                    let shown = shown_url(&url);
                    (url, Pending::new(index, shown, None))
                }
                // The model gets a URL that it reports as invalid without
                // trying it; `Shared::write` writes this error instead, which
                // says what was wrong with the line.
                Line::TooLong { start, bytes } => {
                    let error = FetchError::new(
                        ErrorKind::InvalidUrl,
                        format!("URL is {bytes} bytes long; the limit is {MAX_LINE_BYTES} bytes"),
                    );
                    (String::new(), Pending::new(index, start, Some(error)))
                }
            };
            lock(&self.shared.sink).pending.insert(handed, pending);
            return Some(url);
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP are handled on a thread of their own: the
/// first cancels the run (no new request; the rest are written `cancelled`
/// as the model reports them), the second calls [`Shared::stop_now`].
fn watch_signals(shared: &Arc<Shared>, cancel: &CancelToken) -> Result<()> {
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).context("installing the signal handlers")?;
    let shared = Arc::clone(shared);
    let cancel = cancel.clone();
    thread::Builder::new()
        .name("fetchlab-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                match shared.first_signal.compare_exchange(
                    0,
                    signal,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(_) => {
                        shared.progress.suspend(|| {
                            eprintln!(
                                "\nfetchlab: {}: cancelling: no new requests; every URL still \
                                 gets its record. Send it again to stop waiting for requests \
                                 in flight",
                                signal_name(signal)
                            );
                        });
                        cancel.cancel();
                    }
                    Err(first) => shared.stop_now(first, signal),
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// Flushes the output every [`FLUSH_EVERY`] while records are waiting in its
/// buffer. The thread lives as long as the process: `run` flushes once more
/// at the end, and a later flush finds nothing to write.
fn flush_periodically(shared: &Arc<Shared>, cancel: &CancelToken) -> Result<()> {
    let shared = Arc::clone(shared);
    let cancel = cancel.clone();
    thread::Builder::new()
        .name("fetchlab-flush".into())
        .spawn(move || {
            loop {
                thread::sleep(FLUSH_EVERY);
                shared.flush(&cancel);
            }
        })
        .context("starting the flush thread")?;
    Ok(())
}

pub(crate) fn options(args: &FetchArgs) -> Result<Options> {
    if args.per_host == 0 {
        bail!(
            "--per-host must be at least 1 (0 would never start a request); for no per-host \
             limit, give it the --concurrency value"
        );
    }
    let auto_throttle = args.auto_throttle.then(|| AutoThrottle {
        start_delay: Duration::from_millis(args.auto_throttle_start_ms),
        max_delay: Duration::from_millis(args.auto_throttle_max_ms),
        target_concurrency: args.auto_throttle_target,
    });
    let mut b = Options::builder()
        .max_in_flight(args.concurrency)
        .max_per_host(Some(args.per_host))
        .host_delay(Duration::from_millis(args.delay_ms))
        .auto_throttle(auto_throttle)
        .request_timeout(Duration::from_millis(args.timeout_ms))
        .connect_timeout(Duration::from_millis(args.connect_timeout_ms))
        .deadline(args.deadline_ms.map(Duration::from_millis))
        .retries(args.retries)
        .max_body_bytes(args.max_body_bytes)
        .max_redirects(args.max_redirects)
        .parse(!args.no_parse)
        .cpu_work(args.cpu_work)
        .robots(args.robots);
    if let Some(ua) = &args.user_agent {
        b = b.user_agent(ua.clone());
    }
    if let Some(path) = &args.root_cert {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read root certificate {}", path.display()))?;
        b = b.add_root_pem(&pem);
    }
    if let Some(dir) = &args.save {
        // Created and tried now, so that a directory that cannot be written
        // stops the run before the first request, not at every page; made
        // absolute, so workers (the processes model) find it too.
        let dir = fetch_core::save::prepare(dir)
            .with_context(|| format!("--save {}: cannot save pages there", dir.display()))?;
        b = b.save_dir(Some(dir));
    }
    Ok(b.build()?)
}

/// The JSON line for one outcome.
/// One JSON line of `fetchlab run`, borrowed from its outcome: serialized
/// straight into the output buffer, with no `serde_json::Value` (a map of
/// owned strings) built per URL on the way. Fields in alphabetical order, as
/// the records have always had them.
#[derive(serde::Serialize)]
pub(crate) struct Record<'a> {
    attempts: u32,
    bytes: Option<u64>,
    content_type: Option<&'a str>,
    elapsed_ms: f64,
    error: Option<RecordError<'a>>,
    final_url: Option<&'a str>,
    index: usize,
    links: Option<usize>,
    ok: bool,
    saved: Option<&'a str>,
    status: Option<u16>,
    title: Option<&'a str>,
    url: &'a str,
}

#[derive(serde::Serialize)]
pub(crate) struct RecordError<'a> {
    kind: &'a str,
    message: &'a str,
}

pub(crate) fn record(o: &Outcome) -> Record<'_> {
    let (page, error) = (o.result.as_ref().ok(), o.result.as_ref().err());
    Record {
        attempts: o.attempts,
        bytes: page.map(|p| p.bytes),
        content_type: page.and_then(|p| p.content_type.as_deref()),
        elapsed_ms: o.elapsed.as_secs_f64() * 1000.0,
        error: error.map(|e| RecordError {
            kind: e.kind().as_str(),
            message: e.message(),
        }),
        final_url: page
            .map(|p| p.final_url.as_str())
            .or_else(|| error.and_then(FetchError::final_url)),
        index: o.index,
        links: page.map(|p| p.links),
        ok: page.is_some(),
        saved: page.and_then(|p| p.saved.as_deref()),
        status: page
            .map(|p| p.status)
            .or_else(|| error.and_then(|e| e.status())),
        title: page.and_then(|p| p.title.as_deref()),
        url: &o.url,
    }
}

fn print_summary(model: &str, s: &Summary) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "fetchlab run ({model}): {} URLs, {} ok, {} errors in {:.2} s ({:.1} pages/s), {} bytes, {} attempts",
        s.pages,
        s.ok,
        s.errors,
        s.wall.as_secs_f64(),
        s.pages_per_s,
        s.bytes,
        s.attempts
    );
    eprintln!(
        "  latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(s.latency.p50),
        ms(s.latency.p90),
        ms(s.latency.p99),
        ms(s.latency.max)
    );
    if !s.by_kind.is_empty() {
        let kinds: Vec<String> = s.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        eprintln!("  errors by kind: {}", kinds.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8]) -> Vec<Line> {
        let mut lines = LineReader::new(input);
        std::iter::from_fn(|| lines.next_line().unwrap()).collect()
    }

    fn url(s: &str) -> Line {
        Line::Url(s.to_string())
    }

    #[test]
    fn the_help_states_the_limits_in_force() {
        assert!(AFTER_HELP.contains(&format!("longer than {MAX_LINE_BYTES} bytes")));
        assert!(AFTER_HELP.contains(&format!("--concurrency plus {FD_MARGIN}")));
    }

    #[test]
    fn url_lines_skip_blanks_and_comments() {
        let input = "  http://a/1  \n\n# comment\n   # indented comment\nnot a url\n\thttp://b/2";
        assert_eq!(
            read_all(input.as_bytes()),
            [url("http://a/1"), url("not a url"), url("http://b/2")]
        );
        assert_eq!(count_urls(input.as_bytes()).unwrap(), 3);
    }

    #[test]
    fn bad_bytes_are_a_bad_line_and_a_leading_bom_is_skipped() {
        let input =
            b"\xEF\xBB\xBFhttp://a/1\r\n\xff\xfe\r\nhttp://b/\xff2\n\xEF\xBB\xBFhttp://c/3\n";
        assert_eq!(
            read_all(input),
            [
                url("http://a/1"),
                url("\u{FFFD}\u{FFFD}"),
                url("http://b/\u{FFFD}2"),
                // Only the input's first bytes can be a byte-order mark.
                url("\u{FEFF}http://c/3"),
            ]
        );
        assert_eq!(
            read_all(b"\xEF\xBB\xBF# a list\nhttp://a/1"),
            [url("http://a/1")]
        );
    }

    #[test]
    fn an_over_long_line_is_cut_and_flagged() {
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        let input = format!("{long}\n#{long}\n{}\nhttp://c/3\n", &long[..MAX_LINE_BYTES]);
        let lines = read_all(input.as_bytes());
        assert_eq!(lines.len(), 3, "the long comment is still a comment");
        assert_eq!(
            lines[0],
            Line::TooLong {
                start: format!(
                    "{}…[truncated: {} bytes]",
                    "x".repeat(200),
                    MAX_LINE_BYTES + 10
                ),
                bytes: (MAX_LINE_BYTES + 10) as u64
            }
        );
        assert_eq!(
            lines[1],
            url(&long[..MAX_LINE_BYTES]),
            "at the limit is fine"
        );
        assert_eq!(lines[2], url("http://c/3"));
    }

    #[test]
    fn a_read_error_ends_the_list() {
        struct Failing(bool);
        impl io::Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if std::mem::replace(&mut self.0, true) {
                    return Err(io::Error::other("disk on fire"));
                }
                buf[..11].copy_from_slice(b"http://a/1\n");
                Ok(11)
            }
        }
        let mut lines = LineReader::new(BufReader::new(Failing(false)));
        assert_eq!(lines.next_line().unwrap(), Some(url("http://a/1")));
        assert_eq!(lines.next_line().unwrap_err().to_string(), "disk on fire");
    }

    /// A writer whose bytes the test can read after handing it to a sink.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_second_signal_writes_the_urls_in_flight_then_the_unread_ones() {
        let (tx, rx) = handoff::channel(READ_AHEAD);
        let captured = Captured::default();
        let shared = Shared::new(rx, Box::new(captured.clone()), ProgressBar::hidden(), None);
        for line in ["http://a/0", "http://a/1", "http://a/2", "http://a/3"] {
            tx.send(Ok(url(line))).unwrap();
        }
        // The model takes three URLs and finishes the second.
        let cancel = CancelToken::new();
        let mut urls = Urls {
            shared: &shared,
            cancel: &cancel,
        };
        let taken: Vec<String> = urls.by_ref().take(3).collect();
        assert_eq!(taken, ["http://a/0", "http://a/1", "http://a/2"]);
        let done = Outcome::untried(1, "http://a/1", FetchError::new(ErrorKind::Connect, "x"));
        shared.write(done, &CancelToken::new());
        tx.send(Ok(url("http://a/4"))).unwrap();

        let mut source = lock(&shared.source);
        let mut sink = lock(&shared.sink);
        let patience = Duration::from_millis(10);
        let rest = write_the_rest(Some(&mut source), &mut sink, patience);
        // The input is still open: the reader waited `patience` for more.
        let expected = Rest {
            in_flight: 2,
            unread: 2,
            input: InputLeft::Silent,
        };
        assert_eq!(rest, expected);
        drop(tx);
        let rest = write_the_rest(Some(&mut source), &mut sink, patience);
        assert_eq!(rest.input, InputLeft::None, "the input ended");

        let text = String::from_utf8(lock(&captured.0).clone()).unwrap();
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let summary: Vec<(u64, &str, &str)> = records
            .iter()
            .map(|r| {
                (
                    r["index"].as_u64().unwrap(),
                    r["url"].as_str().unwrap(),
                    r["error"]["kind"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (1, "http://a/1", "connect"),
                (0, "http://a/0", "cancelled"),
                (2, "http://a/2", "cancelled"),
                (3, "http://a/3", "cancelled"),
                (4, "http://a/4", "cancelled"),
            ]
        );
        assert_eq!(records[1]["ok"], false);
        assert_eq!(records[1].as_object().unwrap().len(), 13, "the usual shape");
    }

    /// `(index, url, error kind)` of every record written to `captured`.
    fn written(captured: &Captured) -> Vec<(u64, String, String)> {
        let text = String::from_utf8(lock(&captured.0).clone()).unwrap();
        text.lines()
            .map(|l| {
                let r: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    r["index"].as_u64().unwrap(),
                    r["url"].as_str().unwrap().to_string(),
                    r["error"]["kind"].as_str().unwrap_or("ok").to_string(),
                )
            })
            .collect()
    }

    fn saved(records: &[(u64, &str, Option<&str>)]) -> Resume {
        let text: String = records
            .iter()
            .map(|(index, url, kind)| {
                let error = kind.map(|k| serde_json::json!({"kind": k, "message": "m"}));
                let r = serde_json::json!({"index": index, "url": url, "error": error});
                format!("{r}\n")
            })
            .collect();
        Resume::from_reader(Path::new("out.jsonl"), text.as_bytes()).unwrap()
    }

    /// Resuming, the model numbers only the lines not done (0, 1, 2...); every
    /// record, the model's, the second signal's for a URL in flight and for a
    /// line not read, carries the line's input index, and done lines get none.
    #[test]
    fn a_resumed_run_writes_input_indexes_and_skips_lines_done() {
        let (tx, rx) = handoff::channel(READ_AHEAD);
        let captured = Captured::default();
        let resume = saved(&[
            (0, "http://a/0", None),
            (2, "http://a/2", Some("http_status")),
            (3, "http://a/3", Some("cancelled")),
            (5, "http://a/5", None),
        ]);
        let shared = Shared::new(
            rx,
            Box::new(captured.clone()),
            ProgressBar::hidden(),
            Some(resume),
        );
        for i in 0..6 {
            tx.send(Ok(url(&format!("http://a/{i}")))).unwrap();
        }
        let cancel = CancelToken::new();
        let mut urls = Urls {
            shared: &shared,
            cancel: &cancel,
        };
        let taken: Vec<String> = urls.by_ref().take(2).collect();
        assert_eq!(taken, ["http://a/1", "http://a/3"], "0 and 2 are done");
        // The model's index 0 is input line 1.
        let done = Outcome::untried(0, "http://a/1", FetchError::new(ErrorKind::Connect, "x"));
        shared.write(done, &cancel);
        assert_eq!(
            written(&captured),
            [(1, "http://a/1".into(), "connect".into())]
        );
        drop(tx);

        let mut source = lock(&shared.source);
        let mut sink = lock(&shared.sink);
        let rest = write_the_rest(Some(&mut source), &mut sink, Duration::from_millis(10));
        let expected = Rest {
            in_flight: 1,
            unread: 1,
            input: InputLeft::None,
        };
        assert_eq!(rest, expected, "line 5 is done: no record");
        assert_eq!(
            written(&captured)[1..],
            [
                (3, "http://a/3".into(), "cancelled".into()),
                (4, "http://a/4".into(), "cancelled".into()),
            ]
        );
        assert_eq!(source.resume.as_ref().unwrap().skipped(), 3);
        assert!(source.conflict.is_none());
        assert!(!cancel.is_cancelled());
    }

    /// A line that is not the one its final record shows stops the input
    /// there, and the run is cancelled: nothing more is fetched.
    #[test]
    fn a_resumed_run_stops_at_a_line_its_file_does_not_match() {
        let (tx, rx) = handoff::channel(READ_AHEAD);
        let captured = Captured::default();
        let resume = saved(&[(1, "http://a/1", None)]);
        let shared = Shared::new(
            rx,
            Box::new(captured.clone()),
            ProgressBar::hidden(),
            Some(resume),
        );
        for line in ["http://a/0", "http://b/1", "http://a/2"] {
            tx.send(Ok(url(line))).unwrap();
        }
        let cancel = CancelToken::new();
        let mut urls = Urls {
            shared: &shared,
            cancel: &cancel,
        };
        assert_eq!(urls.next().as_deref(), Some("http://a/0"));
        assert_eq!(urls.next(), None);
        assert!(cancel.is_cancelled());
        let conflict = lock(&shared.source).conflict.take().unwrap().to_string();
        assert!(
            conflict.starts_with(
                "out.jsonl was written for another URL list: the line at index 1 is \"http://b/1\""
            ),
            "{conflict}"
        );
    }

    #[test]
    fn a_shard_is_k_of_n_from_one() {
        let s = parse_shard("2/3").unwrap();
        assert_eq!(s, Shard { k: 2, n: 3 });
        let mine: Vec<usize> = (0..10).filter(|&i| s.owns(i)).collect();
        assert_eq!(mine, [1, 4, 7]);
        assert!(parse_shard("3/3").unwrap().owns(2));
        for bad in ["0/3", "4/3", "1/0", "3", "a/b"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        let cases = [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (12_345_678, "12,345,678"),
        ];
        for (n, text) in cases {
            assert_eq!(grouped(n), text);
        }
    }

    #[test]
    fn an_over_long_line_gets_an_invalid_url_record() {
        let (tx, rx) = handoff::channel(READ_AHEAD);
        let captured = Captured::default();
        let shared = Shared::new(rx, Box::new(captured.clone()), ProgressBar::hidden(), None);
        tx.send(Ok(Line::TooLong {
            start: "http://x/".into(),
            bytes: 70_000,
        }))
        .unwrap();
        drop(tx);
        let cancel = CancelToken::new();
        let mut urls = Urls {
            shared: &shared,
            cancel: &cancel,
        };
        assert_eq!(urls.next().as_deref(), Some(""), "a URL the model refuses");
        assert_eq!(urls.next(), None);
        // What the model reports for the empty URL is replaced.
        let refused = Outcome::untried(0, "", FetchError::new(ErrorKind::InvalidUrl, "empty"));
        shared.write(refused, &CancelToken::new());
        let text = String::from_utf8(lock(&captured.0).clone()).unwrap();
        let record: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(record["url"], "http://x/");
        assert_eq!(record["error"]["kind"], "invalid_url");
        let message = record["error"]["message"].as_str().unwrap();
        assert!(message.contains("70000 bytes"), "{message}");
    }
}
