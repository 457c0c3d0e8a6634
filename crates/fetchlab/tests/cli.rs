//! The `fetchlab` binary as a user runs it, against a mock server on
//! 127.0.0.1.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use mock_server::{FaultSet, Latency, MockConfig, MockServer};
use serde_json::Value;

fn fetchlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fetchlab"))
}

fn lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

#[test]
fn run_writes_one_record_per_url() {
    let mut config = MockConfig::default();
    config.faults.not_found = FaultSet::ids([2]);
    let srv = MockServer::start(config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    let mut text = String::from("# a comment\n\n");
    for id in 0..5 {
        text.push_str(&format!("  {}  \n", srv.page_url(id)));
    }
    text.push_str("not a url\n");
    std::fs::write(&list, text).unwrap();

    let out = fetchlab()
        .args(["run", "--model", "sequential", "--urls"])
        .arg(&list)
        .args(["--retries", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = lines(&out.stdout);
    assert_eq!(records.len(), 6);
    let indices: BTreeSet<u64> = records
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, (0..6).collect());
    for r in &records {
        for key in [
            "index",
            "url",
            "ok",
            "status",
            "bytes",
            "title",
            "links",
            "attempts",
            "elapsed_ms",
            "error",
        ] {
            assert!(r.get(key).is_some(), "record lacks {key}: {r}");
        }
        match r["index"].as_u64().unwrap() {
            2 => {
                assert_eq!(r["ok"], false);
                assert_eq!(r["status"], 404);
                assert_eq!(r["error"]["kind"], "http_status");
            }
            5 => {
                assert_eq!(r["url"], "not a url");
                assert_eq!(r["error"]["kind"], "invalid_url");
                assert_eq!(r["attempts"], 0);
            }
            i => {
                assert_eq!(r["ok"], true, "{r}");
                assert_eq!(r["title"], mock_server::page_title(i));
                assert_eq!(r["error"], Value::Null);
            }
        }
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("6 URLs, 4 ok, 2 errors"),
        "summary on stderr: {stderr}"
    );
}

#[test]
fn run_reads_stdin_and_writes_a_file() {
    let srv = MockServer::start(MockConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.jsonl");
    let mut child = fetchlab()
        .args(["run", "--model", "sequential", "--urls", "-", "--out"])
        .arg(&out_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}\n{}", srv.page_url(1), srv.page_url(2)).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "records go to --out, not stdout");
    let records = lines(&std::fs::read(&out_path).unwrap());
    assert_eq!(records.len(), 2);
}

#[test]
fn bad_input_is_a_clear_error() {
    let out = fetchlab()
        .args([
            "run",
            "--model",
            "sequential",
            "--urls",
            "/nonexistent/urls.txt",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read URL file /nonexistent/urls.txt"),
        "{stderr}"
    );

    let out = fetchlab()
        .args(["run", "--model", "nope", "--urls", "-"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("available models: sequential,"));

    let out = fetchlab()
        .args([
            "run",
            "--model",
            "sequential",
            "--urls",
            "-",
            "--concurrency",
            "0",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_in_flight must be at least 1"));

    let out = fetchlab().args(["run", "--bogus-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
}

#[test]
fn ctrl_c_cancels_and_still_writes_every_record() {
    let srv = MockServer::start(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(20)),
        ..MockConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    std::fs::write(&list, srv.page_urls(300).join("\n")).unwrap();
    let mut child = fetchlab()
        .args(["run", "--model", "sequential", "--urls"])
        .arg(&list)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("\"ok\":true"), "{first}");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "a cancelled run still completes: {status:?}"
    );
    let records = lines(format!("{first}{rest}").as_bytes());
    assert_eq!(records.len(), 300, "a record for every URL");
    let cancelled = records
        .iter()
        .filter(|r| r["error"]["kind"] == "cancelled")
        .count();
    assert!(cancelled > 0, "unfinished URLs are cancelled");
    assert!(
        srv.stats().total_requests < 300,
        "no new requests after Ctrl-C"
    );
}

#[test]
fn compare_json_has_a_row_per_model() {
    let out = fetchlab()
        .args([
            "compare",
            "--pages",
            "40",
            "--latency-ms",
            "1",
            "--concurrency",
            "4",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), fetchlab::models::names().len());
    for row in &rows {
        for key in [
            "model",
            "pages",
            "ok",
            "errors",
            "wall_s",
            "pages_per_s",
            "efficiency",
            "p50_ms",
            "p99_ms",
            "max_in_flight",
            "connections",
        ] {
            assert!(row.get(key).is_some(), "row lacks {key}: {row}");
        }
        assert_eq!(row["pages"], 40);
        assert_eq!(row["ok"], 40);
    }
    let seq = rows.iter().find(|r| r["model"] == "sequential").unwrap();
    assert_eq!(seq["max_in_flight"], 1);

    let out = fetchlab().args(["--models", "nope"]).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn mock_serves_pages_and_stats() {
    let mut child = fetchlab()
        .args(["mock", "--links", "3", "--fault", "not_found=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut base = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut base)
        .unwrap();
    let base = base.trim().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let get = |path: &str| -> (u16, String) {
        let addr = base.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let code = resp[9..12].parse().unwrap();
        (code, resp)
    };
    let (code, body) = get("/page/0");
    assert_eq!(code, 200);
    assert_eq!(body.matches("<a href").count(), 3);
    assert_eq!(get("/page/1").0, 404);
    let (code, stats) = get("/__stats");
    assert_eq!(code, 200);
    assert!(stats.contains("\"total_requests\":2"), "{stats}");
    let _ = child.kill();
    let _ = child.wait();
}
