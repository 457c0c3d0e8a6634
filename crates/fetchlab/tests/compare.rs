//! `fetchlab compare` with the benches' workloads: output formats, repeated
//! runs, faults, retries, the CPU stage and latency distributions. Each test
//! runs the built binary, whose in-process mock server listens on 127.0.0.1,
//! on a few dozen pages; none asserts how fast anything is.

use std::process::{Command, Output};
use std::time::Duration;

use mock_server::Latency;
use serde_json::Value;

/// `fetchlab compare ARGS`, checked to succeed.
fn compare(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_fetchlab"))
        .arg("compare")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fetchlab compare {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The rows of `fetchlab compare ARGS --format json`.
fn json_rows(args: &[&str]) -> Vec<Value> {
    let mut args = args.to_vec();
    args.extend(["--format", "json"]);
    serde_json::from_slice(&compare(&args).stdout).unwrap()
}

/// The row of `model`.
fn row<'a>(rows: &'a [Value], model: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["model"] == model)
        .unwrap_or_else(|| panic!("no row for {model}: {rows:?}"))
}

const SMALL: [&str; 8] = [
    "--models",
    "tokio,threads",
    "--pages",
    "50",
    "--latency-ms",
    "0",
    "--concurrency",
    "10",
];

#[test]
fn csv_has_a_header_and_the_json_fields_one_row_per_model() {
    let mut args = SMALL.to_vec();
    args.extend(["--format", "csv"]);
    let out = compare(&args);
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 2, "{}", String::from_utf8_lossy(&out.stdout));
    let field = |rec: &csv::StringRecord, name: &str| -> String {
        let i = header.iter().position(|h| h == name).unwrap();
        rec[i].to_string()
    };
    assert_eq!(field(&records[0], "model"), "tokio");
    assert_eq!(field(&records[1], "model"), "threads");
    for rec in &records {
        assert_eq!(field(rec, "pages"), "50");
        assert_eq!(field(rec, "ok"), "50");
        assert_eq!(field(rec, "runs"), "1");
        // 0 ms latency: no ideal, so no efficiency (an empty field, JSON's null).
        assert_eq!(field(rec, "efficiency"), "");
        let pps: f64 = field(rec, "pages_per_s").parse().unwrap();
        assert!(pps > 0.0);
    }

    // Same fields, same order, as the JSON rows.
    let rows = json_rows(&SMALL);
    let keys: Vec<String> = rows[0].as_object().unwrap().keys().cloned().collect();
    let mut sorted_header = header.clone();
    sorted_header.sort();
    let mut sorted_keys = keys;
    sorted_keys.sort();
    assert_eq!(sorted_header, sorted_keys);
}

#[test]
fn repeat_runs_models_in_interleaved_rounds_and_reports_medians() {
    // sequential beside tokio: if the counters were not reset for every run,
    // sequential's later runs would inherit tokio's 4 requests in flight.
    let args = [
        "--models",
        "sequential,tokio",
        "--pages",
        "40",
        "--latency-ms",
        "1",
        "--concurrency",
        "4",
        "--repeat",
        "3",
    ];
    let out = compare(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let done: Vec<&str> = stderr.lines().filter(|l| l.contains("done in")).collect();
    let expected = [
        "round 1/3, sequential",
        "round 1/3, tokio",
        "round 2/3, sequential",
        "round 2/3, tokio",
        "round 3/3, sequential",
        "round 3/3, tokio",
    ];
    assert_eq!(done.len(), expected.len(), "{stderr}");
    for (line, want) in done.iter().zip(expected) {
        assert!(line.contains(want), "{line:?} is not {want:?}:\n{stderr}");
    }

    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "header, rule, one row per model:\n{table}");
    assert!(lines[0].contains("spread"), "{table}");
    // The spread cell is "min-max" pages/s, min <= max.
    let spread_col = lines[0]
        .split('|')
        .position(|c| c.trim() == "spread")
        .unwrap();
    for line in &lines[2..] {
        let cell = line.split('|').nth(spread_col).unwrap().trim();
        let (min, max) = cell.split_once('-').unwrap();
        let (min, max): (f64, f64) = (min.parse().unwrap(), max.parse().unwrap());
        assert!(0.0 < min && min <= max, "{cell}");
    }

    let rows = json_rows(&args);
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(r["runs"], 3);
        assert_eq!(r["ok"], 40);
        let (min, med, max) = (
            r["pages_per_s_min"].as_f64().unwrap(),
            r["pages_per_s"].as_f64().unwrap(),
            r["pages_per_s_max"].as_f64().unwrap(),
        );
        assert!(min <= med && med <= max, "{r}");
    }
    assert_eq!(row(&rows, "sequential")["max_in_flight"], 1);
    assert_eq!(row(&rows, "tokio")["max_in_flight"], 4);
}

#[test]
fn one_run_has_no_spread_column() {
    let out = compare(&SMALL);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("| model "), "{table}");
    assert!(!table.contains("spread"), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");
}

#[test]
fn every_page_failing_counts_as_errors_and_retries_as_attempts() {
    // 50 in flight: one round of requests, so the backoff before each retry
    // is waited once, not once per round.
    let args = vec![
        "--models",
        "tokio,threads",
        "--pages",
        "50",
        "--latency-ms",
        "0",
        "--concurrency",
        "50",
        "--fault",
        "server_error=100%",
    ];

    let mut no_retries = args.clone();
    no_retries.extend(["--retries", "0"]);
    for r in &json_rows(&no_retries) {
        assert_eq!(r["errors"], 50, "{r}");
        assert_eq!(r["ok"], 0, "{r}");
        assert_eq!(r["attempts"], 50, "{r}");
        assert!(r["efficiency"].is_null(), "no ideal with faults: {r}");
    }

    let mut two_retries = args.clone();
    two_retries.extend(["--retries", "2"]);
    for r in &json_rows(&two_retries) {
        assert_eq!(r["errors"], 50, "{r}");
        assert_eq!(r["attempts"], 150, "{r}");
    }
}

#[test]
fn a_fault_on_listed_ids_fails_only_those_pages() {
    let mut args = SMALL.to_vec();
    args.extend(["--fault", "not_found=3,7,9", "--retries", "2"]);
    for r in &json_rows(&args) {
        // 404 is not retried: three failures, one attempt each.
        assert_eq!(r["errors"], 3, "{r}");
        assert_eq!(r["ok"], 47, "{r}");
        assert_eq!(r["attempts"], 50, "{r}");
    }
}

#[test]
fn timeout_reaches_every_model() {
    // Every page waits 300 ms at the server; a 20 ms timeout fails them all,
    // where the default 30 s would let every one through.
    let args = [
        "--models",
        "tokio,threads,sequential",
        "--pages",
        "5",
        "--latency-ms",
        "300",
        "--concurrency",
        "5",
        "--timeout-ms",
        "20",
        "--retries",
        "0",
    ];
    let rows = json_rows(&args);
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(r["errors"], 5, "{r}");
        assert_eq!(r["attempts"], 5, "{r}");
        assert!(r["efficiency"].is_null(), "failed pages have no ideal: {r}");
    }
}

#[test]
fn no_parse_and_cpu_work_reach_the_run() {
    let mut args = SMALL.to_vec();
    args.extend(["--no-parse", "--cpu-work", "5"]);
    let out = compare(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let header = stderr.lines().next().unwrap();
    assert!(header.contains("no parse"), "{header}");
    assert!(header.contains("cpu work 5"), "{header}");
    let rows = json_rows(&args);
    for r in &rows {
        assert_eq!(r["ok"], 50, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
    }
}

#[test]
fn bad_values_are_rejected_with_a_clear_error() {
    let cases: [(&[&str], &str); 6] = [
        (
            &["--fault", "status500=100%"],
            "unknown fault \"status500\"",
        ),
        (&["--fault", "server_error"], "expected NAME=P%"),
        (&["--fault", "hang=x"], "is not a page id"),
        (&["--fault", "hang=120%"], "between 0 and 100"),
        (&["--repeat", "0"], "--repeat"),
        (&["--repeat", "101"], "--repeat"),
    ];
    for (args, message) in cases {
        for command in ["compare", "mock"] {
            if command == "mock" && args[0] != "--fault" {
                continue;
            }
            let out = Command::new(env!("CARGO_BIN_EXE_fetchlab"))
                .arg(command)
                .args(args)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{command} {args:?} succeeded");
            assert!(
                stderr.contains(message),
                "{command} {args:?}: {stderr:?} lacks {message:?}"
            );
            // The message lists the real names, so the fix is in the error.
            if message.starts_with("unknown fault") {
                assert!(stderr.contains("server_error"), "{stderr}");
            }
            assert!(
                out.stdout.is_empty(),
                "nothing ran: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

/// The `rank`-th smallest (0-based) latency the server gives pages
/// 0..pages under seed 0, in milliseconds.
fn configured_ms(latency: &Latency, pages: u64, rank: usize) -> f64 {
    let mut v: Vec<Duration> = (0..pages).map(|id| latency.sample(0, id)).collect();
    v.sort();
    v[rank].as_secs_f64() * 1000.0
}

#[test]
fn latency_distributions_reach_the_server() {
    // Every request waits at least its page's configured latency, so the
    // measured p99 is at least the configured 90th percentile: a lower
    // bound from the server's own schedule, not a claim about speed.
    let cases = [
        (
            "lognormal",
            Latency::LogNormal {
                median: Duration::from_millis(2),
                sigma: 1.288,
            },
        ),
        (
            "uniform",
            Latency::Uniform {
                min: Duration::ZERO,
                max: Duration::from_millis(4),
            },
        ),
    ];
    for (dist, latency) in cases {
        let args = [
            "--models",
            "tokio,threads",
            "--pages",
            "50",
            "--latency-ms",
            "2",
            "--latency-dist",
            dist,
            "--concurrency",
            "50",
        ];
        let p90 = configured_ms(&latency, 50, 44);
        // The check below means something only if the tail is above the
        // median: a fixed 2 ms would not pass it.
        assert!(p90 > 3.0, "{dist}: configured p90 {p90} ms");
        for r in &json_rows(&args) {
            assert_eq!(r["ok"], 50, "{r}");
            let p99 = r["p99_ms"].as_f64().unwrap();
            assert!(p99 >= p90 * 0.99, "{dist}: p99 {p99} ms < {p90} ms: {r}");
            // An ideal exists for a distribution without faults.
            assert!(r["efficiency"].as_f64().unwrap() > 0.0, "{r}");
        }
    }
}
