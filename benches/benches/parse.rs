//! The CPU stage alone: fetch-core's streaming parse (lol_html) against the
//! DOM parse it replaced (scraper, html5ever's tree builder), on the mock
//! server's default page (2 KiB, 10 links) and on a 64 KiB page with 1,000
//! links. Both must give the same title and link count before either is
//! timed.
//!
//! What it shows: the cost of reading a title and counting links, per page,
//! on this machine. What it does not: pages from the wild (the corpus check,
//! `scripts/parse-corpus`, compares both parses on thousands of real pages
//! and times them there too), or the cost of the rest of the pipeline.
//!
//! `cargo bench --bench parse`; a smoke pass with `cargo bench --bench parse
//! -- --test`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fetch_core::parse::parse_html;
use fetchlab_benches::dom_parse;

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, links, bytes) in [("default_2KiB", 10, 2048), ("large_64KiB", 1000, 65536)] {
        let page = mock_server::page_html(7, links, bytes);
        let page = page.as_bytes();
        assert_eq!(
            parse_html(page),
            dom_parse(page),
            "{name}: both parses agree"
        );
        group.throughput(Throughput::Bytes(page.len() as u64));
        group.bench_with_input(BenchmarkId::new("stream", name), page, |b, p| {
            b.iter(|| parse_html(p))
        });
        group.bench_with_input(BenchmarkId::new("dom", name), page, |b, p| {
            b.iter(|| dom_parse(p))
        });
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
