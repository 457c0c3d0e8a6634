//! `fetchlab compare`: every model, the same pages, one table.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use fetch_core::{CancelToken, Options, Summary};
use mock_server::{Latency, MockConfig, MockServer};
use serde::Serialize;

use fetchlab::models;

#[derive(Args, Clone, Debug)]
pub struct CompareArgs {
    /// Models to run, comma-separated, or "all".
    #[arg(long, default_value = "all")]
    models: String,
    /// Pages each model fetches.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pages: u64,
    /// Latency the mock server adds to every page, in milliseconds.
    #[arg(long, default_value_t = 10)]
    latency_ms: u64,
    /// Requests in flight (each model's max_in_flight).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    concurrency: u64,
    /// Size of each page body, in bytes.
    #[arg(long, default_value_t = 2048)]
    body_bytes: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Table,
    Json,
}

// The default workload (2,000 pages, 10 ms, 100 in flight) is where the
// models part ways: 20 rounds of 10 ms for the concurrent ones, which the
// blocking pools already miss by a fifth, and 20 s for the sequential one,
// so the whole comparison stays well inside a minute.

/// One model's row, as printed and as `--format json` writes it.
#[derive(Debug, Serialize)]
struct Row {
    model: &'static str,
    pages: usize,
    ok: usize,
    errors: usize,
    wall_s: f64,
    pages_per_s: f64,
    /// Ideal time ceil(N / C) × latency over the measured wall time; `null`
    /// at 0 ms latency, where there is no ideal to compare with.
    efficiency: Option<f64>,
    p50_ms: f64,
    p99_ms: f64,
    max_in_flight: u64,
    connections: u64,
    attempts: u64,
}

pub fn compare(args: &CompareArgs) -> Result<()> {
    let names = models::parse_list(&args.models)?;
    let latency = Duration::from_millis(args.latency_ms);
    let concurrency = usize::try_from(args.concurrency).context("--concurrency")?;
    let server = MockServer::start(MockConfig {
        latency: Latency::Fixed(latency),
        body_bytes: args.body_bytes,
        ..MockConfig::default()
    })
    .context("starting the mock server on 127.0.0.1")?;
    let urls = server.page_urls(args.pages);
    let options = Options::builder()
        .max_in_flight(concurrency)
        .build()
        .context("building options")?;
    if matches!(args.format, Format::Table) {
        eprintln!(
            "fetchlab compare: {} pages, {} ms latency, {} in flight, {} B bodies, mock server at {}",
            args.pages,
            args.latency_ms,
            concurrency,
            args.body_bytes,
            server.base_url()
        );
    }

    let mut rows = Vec::new();
    for name in names {
        let model = models::build(name)?;
        // Fresh counters per model: connections and max in flight are its own.
        server.reset_stats();
        let started = Instant::now();
        let outcomes = model.run(&urls, &options, &mut |_| {}, &CancelToken::new());
        let wall = started.elapsed();
        let stats = server.stats();
        let summary = Summary::new(&outcomes, wall);
        let rounds = args.pages.div_ceil(args.concurrency);
        let ideal = latency.as_secs_f64() * rounds as f64;
        rows.push(Row {
            model: name,
            pages: summary.pages,
            ok: summary.ok,
            errors: summary.errors,
            wall_s: wall.as_secs_f64(),
            pages_per_s: summary.pages_per_s,
            efficiency: (ideal > 0.0).then(|| ideal / wall.as_secs_f64()),
            p50_ms: ms(summary.latency.p50),
            p99_ms: ms(summary.latency.p99),
            max_in_flight: stats.max_in_flight,
            connections: stats.connections,
            attempts: summary.attempts,
        });
        if matches!(args.format, Format::Table) {
            eprintln!("  {name}: done in {:.2} s", wall.as_secs_f64());
        }
    }
    server.shutdown();

    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Table => print_table(&rows),
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_table(rows: &[Row]) {
    println!(
        "| {:<12} | {:>8} | {:>9} | {:>10} | {:>8} | {:>8} | {:>13} | {:>11} | {:>6} |",
        "model",
        "wall s",
        "pages/s",
        "efficiency",
        "p50 ms",
        "p99 ms",
        "max in flight",
        "connections",
        "errors"
    );
    println!(
        "|{:-<14}|{:->10}|{:->11}|{:->12}|{:->10}|{:->10}|{:->15}|{:->13}|{:->8}|",
        "", "", "", "", "", "", "", "", ""
    );
    for r in rows {
        let eff = r
            .efficiency
            .map_or_else(|| "-".to_string(), |e| format!("{:.0}%", e * 100.0));
        println!(
            "| {:<12} | {:>8.3} | {:>9.0} | {:>10} | {:>8.2} | {:>8.2} | {:>13} | {:>11} | {:>6} |",
            r.model,
            r.wall_s,
            r.pages_per_s,
            eff,
            r.p50_ms,
            r.p99_ms,
            r.max_in_flight,
            r.connections,
            r.errors
        );
    }
}
