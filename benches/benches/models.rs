//! Criterion benchmarks: every model on the same mock-server workloads.
//!
//! What the numbers show: how each concurrency model turns a fixed amount of
//! waiting (the mock server's simulated latency) into pages per second on
//! this machine, with the mock server sharing the same cores.
//!
//! What they do not show: the internet. Loopback with simulated latency has
//! no packet loss, no bandwidth limit, no DNS, no TLS handshakes to distant
//! hosts and no slow start; a real crawl adds all of those. Nor do they show
//! memory or thread counts (scripts/ measures those, one process per model).
//!
//! The mock server, the URL list and each model (with its runtime and
//! client) are built outside the timed closure. Before a model is timed, its
//! pages are checked against the sequential model's pages.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fetch_core::Options;
use fetchlab_benches::{run_ok, verify_against_sequential};
use mock_server::{Latency, MockConfig, MockServer};

/// Latency-bound: 10 ms per page; the model's concurrency is what matters.
fn latency_bound(c: &mut Criterion) {
    let server = MockServer::start(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(10)),
        ..MockConfig::default()
    })
    .expect("mock server starts");
    let pages = 50u64;
    let urls = server.page_urls(pages);
    let mut group = c.benchmark_group("latency_10ms");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(6));
    group.noise_threshold(0.03);
    group.throughput(Throughput::Elements(pages));
    for name in fetchlab::models::names() {
        let model = fetchlab::models::build(name).expect("registered model");
        let concurrency = 1;
        let options = Options::builder()
            .max_in_flight(concurrency)
            .build()
            .expect("valid options");
        verify_against_sequential(model.as_ref(), &urls, &options)
            .expect("model returns the reference pages");
        group.bench_with_input(
            BenchmarkId::new(name, concurrency),
            &options,
            |b, options| {
                b.iter(|| assert_eq!(run_ok(model.as_ref(), &urls, options), urls.len()));
            },
        );
    }
    group.finish();
}

/// Throughput-bound: no latency, parsing off; the per-request overhead of
/// each model and client is what matters.
fn throughput_bound(c: &mut Criterion) {
    let server = MockServer::start(MockConfig::default()).expect("mock server starts");
    let pages = 500u64;
    let urls = server.page_urls(pages);
    let mut group = c.benchmark_group("throughput_0ms");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.noise_threshold(0.03);
    group.throughput(Throughput::Elements(pages));
    for name in fetchlab::models::names() {
        let model = fetchlab::models::build(name).expect("registered model");
        let options = Options::builder()
            .max_in_flight(32)
            .parse(false)
            .build()
            .expect("valid options");
        verify_against_sequential(model.as_ref(), &urls, &options)
            .expect("model returns the reference pages");
        group.bench_with_input(BenchmarkId::new(name, 32), &options, |b, options| {
            b.iter(|| assert_eq!(run_ok(model.as_ref(), &urls, options), urls.len()));
        });
    }
    group.finish();
}

criterion_group!(benches, latency_bound, throughput_bound);
criterion_main!(benches);
