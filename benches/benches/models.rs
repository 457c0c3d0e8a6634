//! Criterion benchmarks: every model on the same mock-server workloads.
//!
//! Four groups, one per workload, each benchmark named `model/parameter`:
//! - `latency_10ms/<model>/<C>`: 10 ms per page, C in {1, 10, 100} and enough
//!   pages for several rounds; the model's use of concurrency is what matters.
//!   Little's law caps it at C ÷ 10 ms pages per second.
//! - `throughput_0ms/<model>/32`: no latency, parsing off, 32 in flight; the
//!   per-request overhead of each model and client is what matters.
//! - `cpu_heavy/<model>/10`: 2 ms latency and a CPU stage calibrated on this
//!   machine to cost about as much as the wait (2 ms per page); shows which
//!   models keep I/O moving while pages are parsed.
//! - `tail_lognormal/<model>/50`: lognormal latency (median 5 ms, sigma 1.29,
//!   so 1% of pages take 20 times the median or more); shows how a model
//!   copes with a few very slow pages.
//!
//! What the numbers show: how each model turns a fixed amount of waiting into
//! pages per second on this machine, with the mock server sharing its cores.
//!
//! What they do not show: the internet. Loopback with simulated latency has no
//! packet loss, no bandwidth limit, no DNS, no TLS handshakes to distant hosts
//! and no slow start; a real crawl adds all of those. Nor do they show memory,
//! threads or file descriptors: `scripts/footprint` measures those, one process
//! per model, and `scripts/ceiling` what a load generator reaches on the same
//! server.
//!
//! Method: the mock server, the URL list and each model (with its runtime and
//! client) are built outside the timed closure. Before a model is timed, its
//! pages are checked against the sequential model's pages for the same URLs,
//! so a model that returns wrong results never gets a time. The sequential
//! model runs only where it finishes in reasonable time (one request at a
//! time: 100 pages at 10 ms is a second per iteration).
//!
//! Run it all with `cargo bench` (about 10 minutes on 2 cores), one group with
//! `cargo bench -- latency_10ms`, one model with `cargo bench -- tokio`, and a
//! smoke pass (every benchmark once, untimed) with `cargo bench -- --test`.

use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group};
use fetch_core::{Model, Options};
use fetchlab_benches::{Reference, run_ok};
use mock_server::{Latency, MockConfig, MockServer};

/// Every registered model, built once (runtimes and clients included).
fn models() -> Vec<Box<dyn Model>> {
    fetchlab::models::names()
        .into_iter()
        .map(|name| fetchlab::models::build(name).expect("registered model"))
        .collect()
}

fn server(latency: Latency) -> MockServer {
    MockServer::start(MockConfig {
        latency,
        ..MockConfig::default()
    })
    .expect("mock server starts on 127.0.0.1")
}

/// One host: the per-host limit is the concurrency, so it never binds.
fn options(concurrency: usize) -> fetch_core::OptionsBuilder {
    Options::builder()
        .max_in_flight(concurrency)
        .max_per_host(Some(concurrency))
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    // Ten samples of a few seconds each keep the whole run near 10 minutes;
    // network benchmarks are noisy, so changes under 3% are not reported.
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
    g.noise_threshold(0.03);
    g
}

/// Checks `model` against the reference pages, then times it.
fn bench(
    g: &mut BenchmarkGroup<'_, WallTime>,
    model: &dyn Model,
    parameter: usize,
    reference: &Reference,
    options: &Options,
) {
    reference.verify(model, options).unwrap_or_else(|e| {
        panic!(
            "{} must return the reference pages before it is timed: {e}",
            model.name()
        )
    });
    g.throughput(Throughput::Elements(reference.urls().len() as u64));
    g.bench_with_input(
        BenchmarkId::new(model.name(), parameter),
        options,
        |b, options| {
            b.iter(|| {
                assert_eq!(
                    run_ok(model, reference.urls(), options),
                    reference.urls().len()
                )
            });
        },
    );
}

fn latency_bound(c: &mut Criterion) {
    let srv = server(Latency::Fixed(Duration::from_millis(10)));
    let models = models();
    let mut g = group(c, "latency_10ms");
    for concurrency in [1usize, 10, 100] {
        // Five rounds at C = 10 and C = 100, fifty pages at C = 1.
        let pages = (concurrency * 5).max(50) as u64;
        let opts = options(concurrency).build().expect("valid options");
        let reference = Reference::new(srv.page_urls(pages), &opts);
        for model in &models {
            if model.concurrency(&opts) < concurrency {
                continue; // the sequential model: already measured at C = 1
            }
            bench(&mut g, model.as_ref(), concurrency, &reference, &opts);
        }
    }
    g.finish();
}

fn throughput_bound(c: &mut Criterion) {
    let srv = server(Latency::Fixed(Duration::ZERO));
    let opts = options(32).parse(false).build().expect("valid options");
    let reference = Reference::new(srv.page_urls(2000), &opts);
    let mut g = group(c, "throughput_0ms");
    for model in models() {
        bench(&mut g, model.as_ref(), 32, &reference, &opts);
    }
    g.finish();
}

/// The number of `cpu_work` units that cost about `target` on this machine.
fn calibrate_cpu_work(target: Duration) -> u32 {
    let probe = 2_000;
    let started = Instant::now();
    fetch_core::parse::cpu_work(probe, b"calibration");
    let per_unit = started.elapsed().as_secs_f64() / f64::from(probe);
    ((target.as_secs_f64() / per_unit).round() as u32).max(1)
}

fn cpu_heavy(c: &mut Criterion) {
    let wait = Duration::from_millis(2);
    let srv = server(Latency::Fixed(wait));
    let units = calibrate_cpu_work(wait);
    eprintln!("cpu_heavy: cpu_work = {units} units, about {wait:?} per page on this machine");
    let opts = options(10).cpu_work(units).build().expect("valid options");
    let reference = Reference::new(srv.page_urls(200), &opts);
    let mut g = group(c, "cpu_heavy");
    for model in models() {
        bench(&mut g, model.as_ref(), 10, &reference, &opts);
    }
    g.finish();
}

fn tail(c: &mut Criterion) {
    // P(latency > 20 × median) = 1% when sigma = ln(20) / z(0.99) = 2.996 / 2.326.
    let srv = server(Latency::LogNormal {
        median: Duration::from_millis(5),
        sigma: 1.288,
    });
    let opts = options(50).build().expect("valid options");
    let reference = Reference::new(srv.page_urls(1000), &opts);
    let mut g = group(c, "tail_lognormal");
    for model in models() {
        if model.concurrency(&opts) == 1 {
            continue; // sequential: about 12 s per iteration, the sum of every latency
        }
        bench(&mut g, model.as_ref(), 50, &reference, &opts);
    }
    g.finish();
}

criterion_group!(benches, latency_bound, throughput_bound, cpu_heavy, tail);

/// `criterion_main!`, with one thing first: the processes model starts this
/// program again as its workers, with the argument `process-worker` (as
/// fetchlab does), so that is checked before criterion reads the arguments.
fn main() -> std::process::ExitCode {
    let worker = std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == "process-worker");
    if worker {
        return fetch_processes::worker_main();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    std::process::ExitCode::SUCCESS
}
