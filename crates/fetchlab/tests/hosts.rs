//! `fetchlab run`'s per-host politeness, as a user runs it: several mock
//! servers on 127.0.0.1, one host each (a host is scheme, host and port),
//! checked through each server's own counters.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use mock_server::{Latency, MockConfig, MockServer};
use serde_json::Value;

fn fetchlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fetchlab"))
}

/// A server whose pages take `ms` milliseconds: long enough that the
/// requests a run starts together are in flight together.
fn slow_server(ms: u64) -> MockServer {
    MockServer::start(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(ms)),
        ..MockConfig::default()
    })
    .expect("mock server starts on 127.0.0.1:0")
}

/// Runs `fetchlab run --model MODEL --urls LIST` with `args`, records to stdout.
fn run_model(model: &str, list: &Path, args: &[&str]) -> Output {
    fetchlab()
        .args(["run", "--model", model, "--no-progress", "--urls"])
        .arg(list)
        .args(args)
        .output()
        .expect("fetchlab runs")
}

fn run(list: &Path, args: &[&str]) -> Output {
    run_model("tokio", list, args)
}

fn records(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

#[test]
fn per_host_limits_each_host() {
    let servers = [slow_server(30), slow_server(30)];
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    // Grouped by host: the second host's URLs come after the first's.
    let urls: Vec<String> = servers.iter().flat_map(|s| s.page_urls(20)).collect();
    std::fs::write(&list, urls.join("\n")).unwrap();
    let out = run(&list, &["--concurrency", "8", "--per-host", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = records(&out);
    assert_eq!(records.len(), 40, "one record per URL");
    assert!(records.iter().all(|r| r["ok"] == true));
    for (n, s) in servers.iter().enumerate() {
        let stats = s.stats();
        assert_eq!(stats.total_requests, 20, "host {n}");
        assert_eq!(stats.max_in_flight, 3, "host {n}: --per-host 3");
    }
}

#[test]
fn the_default_is_scrapys_8_per_host() {
    let srv = slow_server(30);
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    std::fs::write(&list, srv.page_urls(48).join("\n")).unwrap();
    let out = run(&list, &["--concurrency", "16"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(records(&out).len(), 48);
    assert_eq!(srv.stats().max_in_flight, 8, "8 per host by default");
    // The summary says why a one-host list did not run at --concurrency.
    let note = "at most 8 requests in flight to one host (--per-host); --concurrency 16";
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(note), "{stderr}");
    // --per-host at --concurrency: no per-host limit, and no such note.
    srv.reset_stats();
    let out = run(&list, &["--concurrency", "16", "--per-host", "16"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(srv.stats().max_in_flight, 16);
    assert!(
        !stderr.contains("requests in flight to one host"),
        "{stderr}"
    );
}

#[test]
fn per_host_zero_is_an_error_that_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    std::fs::write(&list, "http://127.0.0.1:9/\n").unwrap();
    let out = run(&list, &["--per-host", "0"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--per-host must be at least 1"), "{stderr}");
    assert!(stderr.contains("--concurrency value"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing fetched");
}

/// The gaps between consecutive request starts the server saw, in ms.
fn gaps_ms(srv: &MockServer) -> Vec<f64> {
    let mut starts = srv.stats().request_starts_us;
    starts.sort_unstable();
    starts
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1000.0)
        .collect()
}

#[test]
fn delay_ms_spaces_the_requests_to_each_host() {
    let servers = [slow_server(0), slow_server(0)];
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    let urls: Vec<String> = servers.iter().flat_map(|s| s.page_urls(4)).collect();
    std::fs::write(&list, urls.join("\n")).unwrap();
    for model in ["tokio", "threads", "mio"] {
        for s in &servers {
            s.reset_stats();
        }
        let out = run_model(model, &list, &["--delay-ms", "300"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(records(&out).len(), 8);
        for (n, s) in servers.iter().enumerate() {
            let gaps = gaps_ms(s);
            assert_eq!(gaps.len(), 3, "{model}, host {n}");
            // The jitter's lower bound, half the delay, less a margin for
            // a loaded machine (80 ms); without the delay the gaps are a
            // few ms.
            assert!(
                gaps.iter().all(|g| *g >= 70.0),
                "{model}, host {n}: {gaps:?}"
            );
        }
    }
}

#[test]
fn auto_throttle_settings_need_auto_throttle_and_sane_values() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    std::fs::write(&list, "http://127.0.0.1:9/\n").unwrap();
    // A setting of AutoThrottle without it: a usage error.
    let out = run(&list, &["--auto-throttle-max-ms", "1000"]);
    assert_eq!(out.status.code(), Some(2));
    // A target of 0 would divide by zero.
    let out = run(&list, &["--auto-throttle", "--auto-throttle-target", "0"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("target concurrency must be a number above 0"),
        "{stderr}"
    );
    // Its maximum below the delay it may not go under.
    let out = run(
        &list,
        &[
            "--auto-throttle",
            "--auto-throttle-max-ms",
            "100",
            "--delay-ms",
            "500",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("maximum delay must not be below"),
        "{stderr}"
    );
}
