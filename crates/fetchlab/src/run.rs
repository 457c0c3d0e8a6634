//! `fetchlab run`: fetch a real URL list with one model, one JSON line per URL
//! as it finishes.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use fetch_core::{CancelToken, Options, Outcome, Summary, Tally};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use fetchlab::models;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The model to fetch with (see `fetchlab compare --help` for the list).
    #[arg(long)]
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

pub fn run(args: &RunArgs) -> Result<()> {
    let model = models::build(&args.model)?;
    let options = options(args)?;
    // The progress bar's length: a file is counted first (a quick streaming
    // pass), but only when the bar is shown; standard input can only be read
    // once, so it gets a spinner.
    let show_progress = !args.no_progress && io::stderr().is_terminal();
    let total = if show_progress && !is_stdin(&args.urls) {
        Some(count_urls(open_urls(&args.urls)?).with_context(|| in_file(&args.urls))?)
    } else {
        None
    };
    let mut urls = UrlLines::new(open_urls(&args.urls)?);
    let mut out: Box<dyn Write> = if is_stdin(&args.out) {
        Box::new(BufWriter::new(io::stdout().lock()))
    } else {
        let file = File::create(&args.out)
            .with_context(|| format!("cannot create output file {}", args.out.display()))?;
        Box::new(BufWriter::new(file))
    };

    // Ctrl-C once: stop starting requests, let the ones in flight end (each
    // within its timeout), and still write a record for every URL. Twice:
    // leave at once.
    let cancel = CancelToken::new();
    let presses = AtomicU32::new(0);
    let handler_token = cancel.clone();
    ctrlc::set_handler(move || {
        if presses.fetch_add(1, Ordering::SeqCst) == 0 {
            eprintln!("\nfetchlab: cancelling; press Ctrl-C again to quit at once");
            handler_token.cancel();
        } else {
            std::process::exit(130);
        }
    })
    .context("installing the Ctrl-C handler")?;

    let progress = if show_progress {
        progress_bar(total)
    } else {
        ProgressBar::hidden()
    };
    let mut write_error: Option<io::Error> = None;
    let mut tally = Tally::new();
    let started = Instant::now();
    // Streaming: URLs are read as slots free up and each record is written
    // and dropped as it arrives, so memory does not grow with the list.
    model.run_iter(
        &mut urls,
        &options,
        &mut |o: Outcome| {
            progress.inc(1);
            tally.add(&o);
            if write_error.is_none() {
                // Flushed per line so a consumer of a pipe sees each URL as it
                // finishes, not when a buffer fills.
                let line = record(&o).to_string();
                if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                    // A closed pipe (`| head`) or a full disk: stop fetching.
                    write_error = Some(e);
                    cancel.cancel();
                }
            }
        },
        &cancel,
    );
    let summary = tally.finish(started.elapsed());
    progress.finish_and_clear();
    if let Some(e) = write_error {
        bail!("writing output: {e}");
    }
    if let Some(e) = urls.error {
        bail!(
            "reading URLs from {}: {e} (records were written for the URLs read before it)",
            args.urls.display()
        );
    }
    print_summary(model.name(), &summary);
    Ok(())
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

fn open_urls(path: &Path) -> Result<Box<dyn BufRead>> {
    if is_stdin(path) {
        return Ok(Box::new(BufReader::new(io::stdin())));
    }
    let file =
        File::open(path).with_context(|| format!("cannot read URL file {}", path.display()))?;
    Ok(Box::new(BufReader::new(file)))
}

/// Whether a line of the URL list is a URL to fetch: blank lines and `#`
/// comments are skipped; any other line is kept, so a bad URL becomes an
/// `invalid_url` record instead of vanishing.
fn url_of(line: &str) -> Option<&str> {
    let url = line.trim();
    (!url.is_empty() && !url.starts_with('#')).then_some(url)
}

fn count_urls(reader: impl BufRead) -> io::Result<u64> {
    let mut n = 0;
    for line in reader.lines() {
        n += u64::from(url_of(&line?).is_some());
    }
    Ok(n)
}

/// The URL list as a lazy iterator of trimmed URLs. A read error (a file
/// that is not text, a disk error) ends the list; it is kept in `error` and
/// reported after every URL read so far has its record.
struct UrlLines<R> {
    lines: io::Lines<R>,
    error: Option<io::Error>,
}

impl<R: BufRead> UrlLines<R> {
    fn new(reader: R) -> Self {
        UrlLines {
            lines: reader.lines(),
            error: None,
        }
    }
}

impl<R: BufRead> Iterator for UrlLines<R> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        while self.error.is_none() {
            match self.lines.next()? {
                Ok(line) => {
                    if let Some(url) = url_of(&line) {
                        return Some(url.to_string());
                    }
                }
                Err(e) => self.error = Some(e),
            }
        }
        None
    }
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
fn record(o: &Outcome) -> serde_json::Value {
    let elapsed_ms = o.elapsed.as_secs_f64() * 1000.0;
    match &o.result {
        Ok(page) => json!({
            "index": o.index, "url": o.url, "ok": true, "status": page.status,
            "bytes": page.bytes, "title": page.title, "links": page.links,
            "attempts": o.attempts, "elapsed_ms": elapsed_ms, "error": null,
        }),
        Err(e) => json!({
            "index": o.index, "url": o.url, "ok": false, "status": e.status(),
            "bytes": null, "title": null, "links": null,
            "attempts": o.attempts, "elapsed_ms": elapsed_ms,
            "error": { "kind": e.kind().as_str(), "message": e.message() },
        }),
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

    #[test]
    fn url_lines_skip_blanks_and_comments() {
        let input = "  http://a/1  \n\n# comment\n   # indented comment\nnot a url\n\thttp://b/2\n";
        let urls: Vec<String> = UrlLines::new(input.as_bytes()).collect();
        assert_eq!(urls, ["http://a/1", "not a url", "http://b/2"]);
        assert_eq!(count_urls(input.as_bytes()).unwrap(), 3);
    }

    #[test]
    fn a_read_error_ends_the_list_and_is_kept() {
        let input: &[u8] = b"http://a/1\n\xff\xfe\nhttp://b/2\n";
        let mut urls = UrlLines::new(input);
        assert_eq!(urls.next().as_deref(), Some("http://a/1"));
        assert_eq!(urls.next(), None);
        assert_eq!(
            urls.error.map(|e| e.kind()),
            Some(io::ErrorKind::InvalidData)
        );
    }
}
