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
use fetch_core::{CancelToken, ErrorKind, FetchError, Options, Outcome};
use fetchlab::summary::{Summary, Tally};
use indicatif::{ProgressBar, ProgressStyle};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use fetchlab::models;

use crate::handoff::{self, Receiver, RecvTimeoutError};

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
  order): index (the URL's position among the URL lines, from 0), url, ok,
  status, bytes, title, links, attempts, elapsed_ms, and error (null, or
  {kind, message}). Blank lines and lines starting with '#' are skipped; a
  UTF-8 byte-order mark at the start is ignored. Any other line gets a record:
  a line that is not a URL, is not valid UTF-8 (its text is shown with U+FFFD
  for the bad bytes), or is longer than 8192 bytes (its start is shown) is an
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

Exit codes:
  0      the run ended on its own: every URL has its record (a run cut short
         by --deadline-ms included; see the records for failures)
  1      error: bad option value, unreadable URL file, a read error part-way
         (records were written up to it), an output write error
  2      usage error (unknown option, unknown model)
  128+N  stopped by signal N, every record written: 130 SIGINT, 143 SIGTERM,
         129 SIGHUP

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
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
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
    /// Never show the progress bar (it is shown only when stderr is a terminal).
    #[arg(long)]
    no_progress: bool,
}

/// Runs the list; `Ok` carries the exit code (0, or 128 + the signal that
/// stopped the run), `Err` is an error (exit code 1).
pub fn run(args: &RunArgs) -> Result<ExitCode> {
    let model = models::build(&args.model)?;
    let options = options(args)?;
    check_fd_limit(args.concurrency, model.concurrency(&options));
    // The progress bar's length: a file is counted first (a quick streaming
    // pass), but only when the bar is shown; standard input can only be read
    // once, so it gets a spinner.
    let show_progress = !args.no_progress && io::stderr().is_terminal();
    let total = if show_progress && !is_stdin(&args.urls) {
        Some(count_urls(open_urls(&args.urls)?).with_context(|| in_file(&args.urls))?)
    } else {
        None
    };
    let lines = spawn_reader(open_urls(&args.urls)?)?;
    // `Stdout`, not its lock: the signal thread may write the last records.
    let out: Box<dyn Write + Send> = if is_stdin(&args.out) {
        Box::new(BufWriter::new(io::stdout()))
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
    let shared = Arc::new(Shared::new(lines, out, progress));
    let cancel = CancelToken::new();
    watch_signals(&shared, &cancel)?;
    flush_periodically(&shared, &cancel)?;

    let started = Instant::now();
    // Streaming: URLs are read as slots free up and each record is written
    // and dropped as it arrives, so memory does not grow with the list.
    model.run_iter(
        &mut Urls { shared: &shared },
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
    if let Some(e) = lock(&shared.source).error.take() {
        bail!(
            "reading URLs from {}: {e} (records were written for the URLs read before it)",
            args.urls.display()
        );
    }
    print_summary(model.name(), &tally.finish(wall));
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
fn check_fd_limit(asked: usize, concurrency: usize) {
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
enum Line {
    /// A line to hand to the model, trimmed. Bytes that were not UTF-8 are
    /// U+FFFD here; fetch-core rejects such a URL as `invalid_url`, saying why.
    Url(String),
    /// A line over [`MAX_LINE_BYTES`]: its start, and its length in bytes.
    TooLong { start: String, bytes: u64 },
}

/// Splits the input into [`Line`]s by bytes, not by `str`: a line that is not
/// UTF-8 is a bad line, not the end of the list (as `BufRead::lines` has it).
struct LineReader<R> {
    reader: R,
    buf: Vec<u8>,
    first: bool,
}

impl<R: BufRead> LineReader<R> {
    fn new(reader: R) -> Self {
        LineReader {
            reader,
            buf: Vec::new(),
            first: true,
        }
    }

    /// The next URL line, skipping blanks and `#` comments; `None` at the end.
    /// An error is a real I/O error, never a decoding one.
    fn next_line(&mut self) -> io::Result<Option<Line>> {
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

/// The input side: the lines read, and the index the next one gets, the
/// same numbering as the model's `Dispatch` (0, 1, 2, ... in input order).
struct Source {
    lines: Receiver<io::Result<Line>>,
    next_index: usize,
    done: bool,
    error: Option<io::Error>,
}

/// The output side: every URL handed out and not yet written, and the writer.
struct Sink {
    out: Box<dyn Write + Send>,
    pending: BTreeMap<usize, Pending>,
    /// Whether records were written since the last flush.
    unflushed: bool,
    tally: Tally,
    progress: ProgressBar,
    write_error: Option<io::Error>,
}

/// A URL handed to the model whose record is not written yet.
struct Pending {
    url: String,
    since: Instant,
    /// For a line too long to be a URL, the record to write instead of
    /// whatever the model says about the empty URL it was given.
    replace_with: Option<FetchError>,
}

impl Pending {
    fn new(url: String, replace_with: Option<FetchError>) -> Self {
        Pending {
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
    /// The next line with its index, `Ok(None)` at the end of the input (or
    /// at a read error, kept in `error`), or a timeout after `wait`.
    fn next_line(&mut self, wait: Duration) -> Result<Option<(usize, Line)>, RecvTimeoutError> {
        if self.done {
            return Ok(None);
        }
        match self.lines.recv_timeout(wait) {
            Ok(Ok(line)) => {
                let index = self.next_index;
                self.next_index += 1;
                Ok(Some((index, line)))
            }
            Ok(Err(e)) => {
                self.error = Some(e);
                self.done = true;
                Ok(None)
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.done = true;
                Ok(None)
            }
            Err(RecvTimeoutError::Timeout) => Err(RecvTimeoutError::Timeout),
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
        // Into the output's buffer, then one newline: serializing a record
        // of plain fields and strings cannot fail except on the write itself.
        let result = serde_json::to_writer(&mut self.out, &record(outcome))
            .map_err(io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
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
    ) -> Self {
        Shared {
            source: Mutex::new(Source {
                lines,
                next_index: 0,
                done: false,
                error: None,
            }),
            sink: Mutex::new(Sink {
                out,
                pending: BTreeMap::new(),
                unflushed: false,
                tally: Tally::new(),
                progress: progress.clone(),
                write_error: None,
            }),
            stopping: AtomicBool::new(false),
            first_signal: AtomicI32::new(0),
            progress,
        }
    }

    /// The model's `on_outcome`: writes the record of a URL handed out.
    fn write(&self, outcome: Outcome, cancel: &CancelToken) {
        let mut sink = lock(&self.sink);
        let outcome = match sink.pending.remove(&outcome.index) {
            Some(Pending {
                url,
                replace_with: Some(error),
                ..
            }) => Outcome::untried(outcome.index, &url, error),
            _ => outcome,
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
        if let Some(e) = source.and_then(|mut s| s.error.take()) {
            eprintln!("fetchlab: error: reading URLs: {e} (records were written up to it)");
            std::process::exit(1);
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
/// index order, then for each line left in `source` (`None`: not reachable),
/// numbering them on. Stops reading when no line comes within `patience`.
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
    for (index, p) in pending {
        let outcome = match p.replace_with {
            Some(error) => Outcome::untried(index, &p.url, error),
            None => cut_off(
                index,
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
                let url = match line {
                    Line::Url(url) => url,
                    Line::TooLong { start, .. } => start,
                };
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
            let (index, line) = next?;
            let (url, pending) = match line {
                Line::Url(url) => (url.clone(), Pending::new(url, None)),
                // The model gets a URL that it reports as invalid without
                // trying it; `Shared::write` writes this error instead, which
                // says what was wrong with the line.
                Line::TooLong { start, bytes } => {
                    let error = FetchError::new(
                        ErrorKind::InvalidUrl,
                        format!("URL is {bytes} bytes long; the limit is {MAX_LINE_BYTES} bytes"),
                    );
                    (String::new(), Pending::new(start, Some(error)))
                }
            };
            lock(&self.shared.sink).pending.insert(index, pending);
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

fn options(args: &RunArgs) -> Result<Options> {
    let mut b = Options::builder()
        .max_in_flight(args.concurrency)
        .request_timeout(Duration::from_millis(args.timeout_ms))
        .connect_timeout(Duration::from_millis(args.connect_timeout_ms))
        .deadline(args.deadline_ms.map(Duration::from_millis))
        .retries(args.retries)
        .max_body_bytes(args.max_body_bytes)
        .max_redirects(args.max_redirects)
        .parse(!args.no_parse)
        .cpu_work(args.cpu_work);
    if let Some(ua) = &args.user_agent {
        b = b.user_agent(ua.clone());
    }
    if let Some(path) = &args.root_cert {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read root certificate {}", path.display()))?;
        b = b.add_root_pem(&pem);
    }
    Ok(b.build()?)
}

/// The JSON line for one outcome.
/// One JSON line of `fetchlab run`, borrowed from its outcome: serialized
/// straight into the output buffer, with no `serde_json::Value` (a map of
/// owned strings) built per URL on the way. Fields in alphabetical order, as
/// the records have always had them.
#[derive(serde::Serialize)]
struct Record<'a> {
    attempts: u32,
    bytes: Option<u64>,
    elapsed_ms: f64,
    error: Option<RecordError<'a>>,
    index: usize,
    links: Option<usize>,
    ok: bool,
    status: Option<u16>,
    title: Option<&'a str>,
    url: &'a str,
}

#[derive(serde::Serialize)]
struct RecordError<'a> {
    kind: &'a str,
    message: &'a str,
}

fn record(o: &Outcome) -> Record<'_> {
    let (page, error) = (o.result.as_ref().ok(), o.result.as_ref().err());
    Record {
        attempts: o.attempts,
        bytes: page.map(|p| p.bytes),
        elapsed_ms: o.elapsed.as_secs_f64() * 1000.0,
        error: error.map(|e| RecordError {
            kind: e.kind().as_str(),
            message: e.message(),
        }),
        index: o.index,
        links: page.map(|p| p.links),
        ok: page.is_some(),
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
        let shared = Shared::new(rx, Box::new(captured.clone()), ProgressBar::hidden());
        for line in ["http://a/0", "http://a/1", "http://a/2", "http://a/3"] {
            tx.send(Ok(url(line))).unwrap();
        }
        // The model takes three URLs and finishes the second.
        let mut urls = Urls { shared: &shared };
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
        assert_eq!(records[1].as_object().unwrap().len(), 10, "the usual shape");
    }

    #[test]
    fn an_over_long_line_gets_an_invalid_url_record() {
        let (tx, rx) = handoff::channel(READ_AHEAD);
        let captured = Captured::default();
        let shared = Shared::new(rx, Box::new(captured.clone()), ProgressBar::hidden());
        tx.send(Ok(Line::TooLong {
            start: "http://x/".into(),
            bytes: 70_000,
        }))
        .unwrap();
        drop(tx);
        let mut urls = Urls { shared: &shared };
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
