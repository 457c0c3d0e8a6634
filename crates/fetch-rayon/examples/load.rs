//! Load measurement: this model against the in-process mock server, with no
//! latency and parsing off, so what is left is each request's overhead.
//!
//! ```text
//! cargo build --release -p fetch-rayon --example load-rayon
//! /usr/bin/time -v target/release/examples/load-rayon --urls 30000 --concurrency 100
//! perf stat -e task-clock,context-switches,cpu-migrations target/release/examples/load-rayon
//! ```
//!
//! With `--par-iter` it runs the same URLs the way this crate does not:
//! collected up front into `urls.par_iter()` on a pool of the same size, to
//! compare against one task per URL (try `--latency-ms 10 --concurrency 20`,
//! and `--sigma 1` for log-normal latencies with that median).
//!
//! The mock server runs in this process, on its own 2-thread tokio runtime,
//! so `time` and `perf` count its CPU time and context switches too. On Linux
//! the example splits the timed run's CPU time itself: the mock server's
//! threads (named `mock-server*`) read from `/proc/self/task`, the rest
//! (dispatcher and workers, including exited ones) is the process total
//! minus the server. It measures one machine's loopback, not the internet.
//! If you copy this, keep the warm-up run: it builds the agent and opens the
//! connections, which a long crawl pays once.

use std::error::Error;
use std::time::{Duration, Instant};

use fetch_core::blocking::BlockingClient;
use fetch_core::{CancelToken, Model, Options, Outcome, Run, check_url, fetch_one_blocking};
use mock_server::{Latency, MockConfig, MockServer};
use rayon::prelude::*;

const USAGE: &str = "usage: load-rayon [--urls N] [--concurrency C] [--latency-ms MS] [--parse] [--par-iter] [--sigma S]";

fn main() -> Result<(), Box<dyn Error>> {
    let (mut urls, mut max_in_flight, mut latency_ms, mut parse) =
        (30_000u64, 100usize, 0u64, false);
    let (mut par_iter, mut sigma) = (false, 0.0f64);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--urls" => urls = value()?.parse()?,
            "--concurrency" => max_in_flight = value()?.parse()?,
            "--latency-ms" => latency_ms = value()?.parse()?,
            "--parse" => parse = true,
            "--par-iter" => par_iter = true,
            "--sigma" => sigma = value()?.parse()?,
            _ => return Err(format!("unknown flag {flag}\n{USAGE}").into()),
        }
    }

    // With a sigma, latencies are log-normal around the median: a long tail
    // of slow pages, as real servers have.
    let median = Duration::from_millis(latency_ms);
    let latency = if sigma > 0.0 {
        Latency::LogNormal { median, sigma }
    } else {
        Latency::Fixed(median)
    };
    let server = MockServer::start(MockConfig {
        latency,
        ..MockConfig::default()
    })?;
    let options = Options::builder()
        .max_in_flight(max_in_flight)
        .parse(parse)
        .build()?;
    let model = fetch_rayon::Rayon::new();
    let cancel = CancelToken::new();
    if par_iter {
        return compare_par_iter(&server, urls, &options);
    }

    // Warm-up (not timed): builds the pool and the agent, fills its idle pool.
    let warm = server.page_urls(max_in_flight as u64 * 4);
    model.run(&warm, &options, &mut |_| {}, &cancel);
    // An empty run costs what the model pays per run besides the requests:
    // here, nothing much, since the pool is kept between runs.
    let started = Instant::now();
    model.run_iter(&mut std::iter::empty(), &options, &mut |_| {}, &cancel);
    let empty_run = started.elapsed();

    let cpu_before = cpu_times();
    let (mut ok, mut failed) = (0u64, 0u64);
    let started = Instant::now();
    let read = model.run_iter(
        &mut (0..urls).map(|id| server.page_url(id)),
        &options,
        &mut |o| if o.is_ok() { ok += 1 } else { failed += 1 },
        &cancel,
    );
    let wall = started.elapsed();
    let cpu_after = cpu_times();

    let secs = wall.as_secs_f64();
    println!(
        "{}: {read} URLs in {secs:.2} s = {:.0} pages/s ({ok} ok, {failed} failed; \
         C={max_in_flight}, {latency_ms} ms latency, parse {})",
        model.name(),
        ok as f64 / secs,
        if parse { "on" } else { "off" },
    );
    println!(
        "empty run (the pool is kept between runs): {:.2} ms",
        empty_run.as_secs_f64() * 1e3
    );
    println!(
        "connections opened (warm-up included): {}",
        server.stats().connections
    );
    match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => println!(
            "CPU during the timed run: client user {:.2} s, sys {:.2} s; \
             mock server user {:.2} s, sys {:.2} s",
            (a.process.0 - a.server.0) - (b.process.0 - b.server.0),
            (a.process.1 - a.server.1) - (b.process.1 - b.server.1),
            a.server.0 - b.server.0,
            a.server.1 - b.server.1,
        ),
        _ => println!("CPU split: /proc not readable (Linux only)"),
    }
    Ok(())
}

/// The same URLs two ways on two equal pools: `fetch_all` (one task per URL,
/// pulled as slots free up) and `par_iter` (the list split into batches).
fn compare_par_iter(
    server: &MockServer,
    urls: u64,
    options: &Options,
) -> Result<(), Box<dyn Error>> {
    let list = server.page_urls(urls);
    let c = options.max_in_flight();
    let client = BlockingClient::new(options, c);
    let cancel = CancelToken::new();
    // Two pools of c threads: `fetch_all` builds its own in `pools` (the
    // warm-up's first batch is c URLs), `par_iter` runs on this one through
    // `install`.
    let pools = fetch_rayon::Pool::default();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(c).build()?;
    let warm = server.page_urls(c as u64 * 4);
    let time = |name: &str, fetch: &dyn Fn() -> Vec<Outcome>| {
        let started = Instant::now();
        let outcomes = fetch();
        let ok = outcomes.iter().filter(|o| o.is_ok()).count();
        println!(
            "{name}: {ok}/{urls} ok in {:.2} s",
            started.elapsed().as_secs_f64()
        );
    };
    let per_task = |list: &[String]| {
        let mut outcomes = Vec::new();
        let mut on_outcome = |o| outcomes.push(o);
        fetch_rayon::fetch_all(
            &pools,
            &client,
            &mut list.iter().cloned(),
            options,
            &mut on_outcome,
            &cancel,
        );
        outcomes
    };
    let batched = |list: &[String]| {
        let run = Run::new(options, &cancel);
        pool.install(|| {
            list.par_iter()
                .enumerate()
                .map(|(index, url)| {
                    // What `Dispatch` does for fetch_all: parse and check.
                    let url = check_url(url).expect("the mock's URLs are valid");
                    fetch_one_blocking(&run, index, url, |url, budget| {
                        client.attempt(&run, url, budget)
                    })
                })
                .collect::<Vec<_>>()
        })
    };
    per_task(&warm);
    time("one task per URL (fetch_all)", &|| per_task(&list));
    time("par_iter", &|| batched(&list));
    time("one task per URL (fetch_all)", &|| per_task(&list));
    time("par_iter", &|| batched(&list));
    Ok(())
}

/// (user, system) seconds of the whole process and of the mock server's
/// threads.
struct CpuTimes {
    process: (f64, f64),
    server: (f64, f64),
}

fn cpu_times() -> Option<CpuTimes> {
    let process = stat_times(&std::fs::read_to_string("/proc/self/stat").ok()?)?.1;
    let mut server = (0.0, 0.0);
    // A thread that exits while we look has its times in the process total
    // already: skip it.
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        if let Some((name, (user, sys))) = stat_times(&stat)
            && name.starts_with("mock-server")
        {
            server = (server.0 + user, server.1 + sys);
        }
    }
    Some(CpuTimes { process, server })
}

/// The name and (utime, stime) in seconds from a `/proc/.../stat` line.
/// Clock ticks are USER_HZ, 100 on Linux (`getconf CLK_TCK`).
fn stat_times(stat: &str) -> Option<(String, (f64, f64))> {
    // The name is in parentheses and may itself contain spaces or ')'.
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok().map(|t| t / 100.0);
    // Fields 14 and 15 of stat(5); `fields[0]` is field 3.
    Some((name, (ticks(11)?, ticks(12)?)))
}
