//! `fetchlab compare`: every model, the same pages, one table.
//!
//! The workload is the benches' vocabulary at the command line: a latency
//! distribution, injected faults, the CPU stage on or off (and how heavy),
//! the retry policy. Each model is built fresh for each run, outside the
//! timed part, and the mock server's counters are reset before it starts, so
//! "max in flight" and "connections" are that run's own.
//!
//! `--repeat N` runs every model N times in interleaved rounds (round 1 runs
//! each model once, then round 2, ...), not N times in a row: on a shared
//! machine a slow minute then slows one run of every model instead of every
//! run of one model. The row shows the median of each figure over the N runs
//! and, in a `spread` column that appears only when N > 1, the lowest and
//! highest pages/s. JSON and CSV rows always carry `runs`, `pages_per_s_min`
//! and `pages_per_s_max`, so a script sees the same fields whatever N is.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use fetch_core::{CancelToken, Options};
use fetchlab::summary::Summary;
use mock_server::{Latency, MockConfig, MockServer};
use serde::Serialize;

use crate::mock::{Dist, FaultArgs};
use fetchlab::models;

/// Sigma of `--latency-dist lognormal`: the benches' `tail_lognormal`
/// workload, where 1% of pages take 20 times the median or more
/// (sigma = ln 20 / z(0.99) = 2.996 / 2.326).
const TAIL_SIGMA: f64 = 1.288;

#[derive(Args, Clone, Debug)]
pub struct CompareArgs {
    /// Models to run, comma-separated, or "all".
    #[arg(long, default_value = "all")]
    models: String,
    /// Pages each model fetches.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pages: u64,
    /// Latency the mock server adds to every page, in milliseconds: the
    /// latency of every page (fixed), the mean (uniform) or the median
    /// (lognormal).
    #[arg(long, default_value_t = 10)]
    latency_ms: u64,
    /// How page latencies spread around --latency-ms (L), drawn per page id
    /// and the same in every run: fixed, every page L; uniform, evenly
    /// between 0 and 2L; lognormal, median L with sigma 1.288 (the benches'
    /// tail_lognormal: 1% of pages take 20 L or more).
    #[arg(long, value_enum, default_value_t = Dist::Fixed)]
    latency_dist: Dist,
    /// Requests in flight (each model's max_in_flight).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    concurrency: u64,
    /// Size of each page body, in bytes.
    #[arg(long, default_value_t = 2048)]
    body_bytes: usize,
    #[command(flatten)]
    faults: FaultArgs,
    /// Skip the HTML parse (the CPU stage), leaving only the I/O.
    #[arg(long)]
    no_parse: bool,
    /// Extra CPU work units per page (one unit is about a microsecond).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    cpu_work: u32,
    /// Per-attempt timeout (connect, headers and body), in milliseconds.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    timeout_ms: u64,
    /// Extra attempts for retryable failures (timeouts, connection errors,
    /// 408, 429, 500, 502, 503, 504), after an exponential backoff.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=20))]
    retries: u32,
    /// Runs per model, in interleaved rounds; the table shows medians and,
    /// when more than 1, a spread column (min-max pages/s).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,
    /// Output format. CSV has a header row and the same fields as JSON.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
}

// The default workload (2,000 pages, 10 ms, 100 in flight) is where the
// models part ways: 20 rounds of 10 ms for the concurrent ones, which the
// blocking pools already miss by a fifth, and 20 s for the sequential one,
// so the whole comparison stays well inside a minute.

/// One model's row, as printed and as `--format json` and `csv` write it.
/// With `--repeat N`, every figure is the median over the N runs (for
/// counts, the lower of the two middle runs when N is even, so a count is
/// one that happened).
#[derive(Debug, Serialize)]
struct Row {
    model: &'static str,
    pages: usize,
    ok: usize,
    errors: usize,
    wall_s: f64,
    pages_per_s: f64,
    /// The ideal wall time (see [`ideal_wall`]) over the measured one;
    /// `null` where there is no ideal to compare with: 0 ms latency, any
    /// `--fault`, or a run in which a page failed (a timed-out page is not
    /// work done faster).
    efficiency: Option<f64>,
    p50_ms: f64,
    p99_ms: f64,
    max_in_flight: u64,
    connections: u64,
    attempts: u64,
    runs: usize,
    pages_per_s_min: f64,
    pages_per_s_max: f64,
}

/// What one run of one model measured.
struct Run {
    pages: usize,
    ok: usize,
    errors: usize,
    wall_s: f64,
    pages_per_s: f64,
    efficiency: Option<f64>,
    p50_ms: f64,
    p99_ms: f64,
    max_in_flight: u64,
    connections: u64,
    attempts: u64,
}

pub fn compare(args: &CompareArgs) -> Result<()> {
    let names = models::parse_list(&args.models)?;
    let median_latency = Duration::from_millis(args.latency_ms);
    let latency = match args.latency_dist {
        Dist::Fixed => Latency::Fixed(median_latency),
        Dist::Uniform => Latency::Uniform {
            min: Duration::ZERO,
            max: median_latency.saturating_mul(2),
        },
        Dist::Lognormal => Latency::LogNormal {
            median: median_latency,
            sigma: TAIL_SIGMA,
        },
    };
    let concurrency = usize::try_from(args.concurrency).context("--concurrency")?;
    let mut config = MockConfig {
        latency,
        body_bytes: args.body_bytes,
        ..MockConfig::default()
    };
    args.faults.apply(&mut config.faults);
    let server = MockServer::start(config).context("starting the mock server on 127.0.0.1")?;
    let urls = server.page_urls(args.pages);
    // One host, so a per-host limit equal to the concurrency: every model
    // keeps C in flight to it, as before the per-host limit existed.
    let options = Options::builder()
        .max_in_flight(concurrency)
        .max_per_host(Some(concurrency))
        .request_timeout(Duration::from_millis(args.timeout_ms))
        .retries(args.retries)
        .parse(!args.no_parse)
        .cpu_work(args.cpu_work)
        .build()
        .context("building options")?;
    let ideal = if args.faults.any() {
        None
    } else {
        ideal_wall(server.config(), args.pages, concurrency)
    };
    let human = matches!(args.format, Format::Table);
    if human {
        eprintln!(
            "fetchlab compare: {}, mock server at {}",
            describe(args, &options),
            server.base_url()
        );
        if args.repeat > 1 {
            eprintln!(
                "  {} interleaved rounds; each figure is the median of {} runs, spread is min-max pages/s",
                args.repeat, args.repeat
            );
        }
    }

    let mut runs: Vec<Vec<Run>> = names.iter().map(|_| Vec::new()).collect();
    for round in 1..=args.repeat {
        for (name, model_runs) in names.iter().zip(&mut runs) {
            let run = run_once(name, &server, &urls, &options, ideal)?;
            if human {
                let which = if args.repeat > 1 {
                    format!("round {round}/{}, {name}", args.repeat)
                } else {
                    (*name).to_string()
                };
                eprintln!("  {which}: done in {:.2} s", run.wall_s);
            }
            model_runs.push(run);
        }
    }
    server.shutdown();
    let rows: Vec<Row> = names
        .iter()
        .zip(&runs)
        .map(|(name, runs)| row(name, runs))
        .collect();

    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Csv => {
            let mut out = csv::Writer::from_writer(io::stdout().lock());
            for r in &rows {
                out.serialize(r).context("writing CSV")?;
            }
            out.flush().context("writing CSV")?;
        }
        Format::Table => print!("{}", table(&rows, args.repeat > 1)),
    }
    Ok(())
}

/// Runs model `name` once over `urls`, with the server's counters to itself.
fn run_once(
    name: &str,
    server: &MockServer,
    urls: &[String],
    options: &Options,
    ideal: Option<Duration>,
) -> Result<Run> {
    // Built for every run rather than once per model: a model keeps its
    // client's pooled connections, so a reused one would start round 2 warm
    // and count no connections; and dropping it after its run stops its
    // runtime's threads before the next model takes the cores.
    let model = models::build(name)?;
    server.reset_stats();
    let started = Instant::now();
    let outcomes = model.run(urls, options, &mut |_| {}, &CancelToken::new());
    let wall = started.elapsed();
    let stats = server.stats();
    let summary = Summary::new(&outcomes, wall);
    let efficiency = ideal
        .filter(|ideal| !ideal.is_zero() && summary.errors == 0)
        .map(|ideal| ideal.as_secs_f64() / wall.as_secs_f64());
    Ok(Run {
        pages: summary.pages,
        ok: summary.ok,
        errors: summary.errors,
        wall_s: wall.as_secs_f64(),
        pages_per_s: summary.pages_per_s,
        efficiency,
        p50_ms: ms(summary.latency.p50),
        p99_ms: ms(summary.latency.p99),
        max_in_flight: stats.max_in_flight,
        connections: stats.connections,
        attempts: summary.attempts,
    })
}

/// The wall time of a client with no overhead at all that keeps
/// `concurrency` requests in flight and starts the pages in list order, each
/// as soon as a slot frees: the way every model dispatches. With a fixed
/// latency L that is ceil(N / C) × L; with a distribution, the slowest pages
/// are part of the ideal, so a long tail does not count against a model.
/// The CPU stage (parsing, `--cpu-work`) is not: hiding it is the model's job.
/// `None` at zero latency, where the ideal is zero.
fn ideal_wall(config: &MockConfig, pages: u64, concurrency: usize) -> Option<Duration> {
    let slots = concurrency.min(usize::try_from(pages).unwrap_or(usize::MAX));
    // Each slot's finishing time; the earliest free slot takes the next page.
    let mut free_at: BinaryHeap<Reverse<Duration>> =
        std::iter::repeat_n(Reverse(Duration::ZERO), slots).collect();
    for id in 0..pages {
        // `slots` >= 1 (pages and concurrency both are), and every pop is
        // followed by a push, so the heap is never empty here.
        let Some(Reverse(start)) = free_at.pop() else {
            break;
        };
        free_at.push(Reverse(start.saturating_add(config.latency_for(id))));
    }
    let end = free_at.into_iter().map(|Reverse(t)| t).max()?;
    (!end.is_zero()).then_some(end)
}

/// The workload in words, for the table's header line: the defaults read as
/// they always have, and each changed setting is added.
fn describe(args: &CompareArgs, options: &Options) -> String {
    let l = args.latency_ms;
    let latency = match args.latency_dist {
        Dist::Fixed => format!("{l} ms latency"),
        Dist::Uniform => format!("latency uniform in 0-{} ms", l.saturating_mul(2)),
        Dist::Lognormal => format!("lognormal latency (median {l} ms, sigma {TAIL_SIGMA})"),
    };
    let mut parts = vec![
        format!("{} pages", args.pages),
        latency,
        format!("{} in flight", args.concurrency),
        format!("{} B bodies", args.body_bytes),
    ];
    let defaults = Options::default();
    if !args.faults.describe().is_empty() {
        parts.push(format!("faults {}", args.faults.describe()));
    }
    if !options.parse() {
        parts.push("no parse".to_string());
    }
    if options.cpu_work() > 0 {
        parts.push(format!("cpu work {}", options.cpu_work()));
    }
    if options.request_timeout() != defaults.request_timeout() {
        parts.push(format!("timeout {} ms", args.timeout_ms));
    }
    if options.retries() != defaults.retries() {
        parts.push(format!("{} retries", options.retries()));
    }
    parts.join(", ")
}

/// One row from a model's runs (at least one: `--repeat` starts at 1).
fn row(model: &'static str, runs: &[Run]) -> Row {
    let floats = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let pps: Vec<f64> = runs.iter().map(|r| r.pages_per_s).collect();
    // An efficiency only when every run has one: a median over the runs
    // that happened to have no failed page would hide the ones that did.
    let efficiency = runs
        .iter()
        .map(|r| r.efficiency)
        .collect::<Option<Vec<f64>>>()
        .map(median);
    Row {
        model,
        pages: lower_median(runs.iter().map(|r| r.pages).collect()),
        ok: lower_median(runs.iter().map(|r| r.ok).collect()),
        errors: lower_median(runs.iter().map(|r| r.errors).collect()),
        wall_s: floats(|r| r.wall_s),
        pages_per_s: floats(|r| r.pages_per_s),
        efficiency,
        p50_ms: floats(|r| r.p50_ms),
        p99_ms: floats(|r| r.p99_ms),
        max_in_flight: lower_median(runs.iter().map(|r| r.max_in_flight).collect()),
        connections: lower_median(runs.iter().map(|r| r.connections).collect()),
        attempts: lower_median(runs.iter().map(|r| r.attempts).collect()),
        runs: runs.len(),
        pages_per_s_min: pps.iter().copied().fold(f64::INFINITY, f64::min),
        pages_per_s_max: pps.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    }
}

/// The middle value, or the mean of the two middle values; NaN if empty
/// (never: every model runs at least once).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The lower of the middle values, for counts; the default if empty (never).
fn lower_median<T: Ord + Copy + Default>(mut v: Vec<T>) -> T {
    v.sort_unstable();
    v.get(v.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The table: `| model | wall s | ... |`, with a `spread` column after
/// pages/s when the rows are medians of several runs.
fn table(rows: &[Row], spread: bool) -> String {
    let mut columns = vec![("model", 12), ("wall s", 8), ("pages/s", 9)];
    if spread {
        columns.push(("spread", 13));
    }
    columns.extend([
        ("efficiency", 10),
        ("p50 ms", 8),
        ("p99 ms", 8),
        ("max in flight", 13),
        ("connections", 11),
        ("errors", 6),
    ]);
    let widths: Vec<usize> = columns.iter().map(|(_, w)| *w).collect();
    let titles: Vec<String> = columns.iter().map(|(t, _)| (*t).to_string()).collect();
    let rule: String = widths
        .iter()
        .map(|w| format!("{:-<1$}|", "", w + 2))
        .collect();
    let mut out = format!("{}\n|{rule}\n", table_line(&titles, &widths));
    for r in rows {
        let mut cells = vec![
            r.model.to_string(),
            format!("{:.3}", r.wall_s),
            format!("{:.0}", r.pages_per_s),
        ];
        if spread {
            cells.push(format!("{:.0}-{:.0}", r.pages_per_s_min, r.pages_per_s_max));
        }
        cells.extend([
            r.efficiency
                .map_or_else(|| "-".to_string(), |e| format!("{:.0}%", e * 100.0)),
            format!("{:.2}", r.p50_ms),
            format!("{:.2}", r.p99_ms),
            r.max_in_flight.to_string(),
            r.connections.to_string(),
            r.errors.to_string(),
        ]);
        out.push_str(&table_line(&cells, &widths));
        out.push('\n');
    }
    out
}

/// `| first | second | ... |`: the first cell left-aligned, the rest right.
fn table_line(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::from("|");
    for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
        if i == 0 {
            line.push_str(&format!(" {cell:<w$} |"));
        } else {
            line.push_str(&format!(" {cell:>w$} |"));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(latency: Latency) -> MockConfig {
        MockConfig {
            latency,
            ..MockConfig::default()
        }
    }

    #[test]
    fn fixed_ideal_is_rounds_times_latency() {
        let c = config(Latency::Fixed(Duration::from_millis(10)));
        // 25 pages at 10 in flight: 3 rounds.
        assert_eq!(ideal_wall(&c, 25, 10), Some(Duration::from_millis(30)));
        assert_eq!(ideal_wall(&c, 5, 100), Some(Duration::from_millis(10)));
        assert_eq!(ideal_wall(&c, 3, 1), Some(Duration::from_millis(30)));
        let zero = config(Latency::Fixed(Duration::ZERO));
        assert_eq!(ideal_wall(&zero, 25, 10), None);
    }

    #[test]
    fn distribution_ideal_includes_the_slowest_page() {
        let c = config(Latency::LogNormal {
            median: Duration::from_millis(10),
            sigma: TAIL_SIGMA,
        });
        let slowest = (0..200).map(|id| c.latency_for(id)).max().unwrap();
        let total: Duration = (0..200).map(|id| c.latency_for(id)).sum();
        let ideal = ideal_wall(&c, 200, 20).unwrap();
        // No schedule beats the slowest page or the total work spread evenly.
        assert!(ideal >= slowest);
        assert!(ideal >= total / 20);
        // One slot: the sum of every latency.
        assert_eq!(ideal_wall(&c, 200, 1), Some(total));
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(lower_median(vec![4, 1, 2, 3]), 2);
        assert_eq!(lower_median(vec![7]), 7);
    }

    fn sample_row() -> Row {
        Row {
            model: "tokio",
            pages: 2000,
            ok: 2000,
            errors: 0,
            wall_s: 0.2345,
            pages_per_s: 8530.4,
            efficiency: Some(0.853),
            p50_ms: 10.25,
            p99_ms: 11.5,
            max_in_flight: 100,
            connections: 100,
            attempts: 2000,
            runs: 1,
            pages_per_s_min: 8530.4,
            pages_per_s_max: 8530.4,
        }
    }

    #[test]
    fn one_run_table_is_the_table_it_always_was() {
        // The format strings of the table before --repeat, kept to check
        // that a single run still prints exactly that.
        let r = sample_row();
        let before = format!(
            "| {:<12} | {:>8} | {:>9} | {:>10} | {:>8} | {:>8} | {:>13} | {:>11} | {:>6} |\n\
             |{:-<14}|{:->10}|{:->11}|{:->12}|{:->10}|{:->10}|{:->15}|{:->13}|{:->8}|\n\
             | {:<12} | {:>8.3} | {:>9.0} | {:>10} | {:>8.2} | {:>8.2} | {:>13} | {:>11} | {:>6} |\n",
            "model",
            "wall s",
            "pages/s",
            "efficiency",
            "p50 ms",
            "p99 ms",
            "max in flight",
            "connections",
            "errors",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            r.model,
            r.wall_s,
            r.pages_per_s,
            "85%",
            r.p50_ms,
            r.p99_ms,
            r.max_in_flight,
            r.connections,
            r.errors
        );
        assert_eq!(table(&[r], false), before);
    }

    #[test]
    fn repeated_table_has_a_spread_column() {
        let mut r = sample_row();
        r.pages_per_s_min = 8000.4;
        r.pages_per_s_max = 9001.0;
        let t = table(&[r], true);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].contains(" pages/s |        spread | efficiency |"),
            "{t}"
        );
        assert!(lines[2].contains(" 8000-9001 | "), "{t}");
        assert!(lines.iter().all(|l| l.matches('|').count() == 11), "{t}");
    }
}
