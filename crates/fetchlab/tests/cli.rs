//! The `fetchlab` binary as a user runs it, against a mock server on
//! 127.0.0.1.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use mock_server::{FaultSet, Faults, Latency, MockConfig, MockServer};
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

/// Generous bound for any one wait on a child: the tests below need well
/// under a second for each step; only a hang (the bug) gets near this.
const PATIENCE: Duration = Duration::from_secs(60);

/// The indices of `records`, which must be exactly `0..n`.
fn assert_every_index(records: &[Value], n: u64) {
    let indices: Vec<u64> = records
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices.len() as u64, n, "one record per URL");
    let unique: BTreeSet<u64> = indices.into_iter().collect();
    assert_eq!(unique, (0..n).collect(), "each index once");
}

/// A `fetchlab` child whose stdout and stderr lines arrive on channels, so
/// that every wait in a test is bounded. Killed on drop if a test fails
/// while it runs.
struct Spawned {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    stdout_seen: Vec<String>,
    stderr_seen: String,
}

impl Spawned {
    fn start(cmd: &mut Command) -> Spawned {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let forward = |r: Box<dyn Read + Send>| {
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                for line in BufReader::new(r).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let stdout = forward(Box::new(child.stdout.take().unwrap()));
        let stderr = forward(Box::new(child.stderr.take().unwrap()));
        Spawned {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            stdout_seen: Vec::new(),
            stderr_seen: String::new(),
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// Waits for the next record on stdout.
    fn next_record(&mut self) -> Value {
        let line = self
            .stdout
            .recv_timeout(PATIENCE)
            .expect("a record on stdout");
        self.stdout_seen.push(line.clone());
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_stderr(&mut self, needle: &str) {
        let until = Instant::now() + PATIENCE;
        while !self.stderr_seen.contains(needle) {
            let left = until.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.stderr_seen.push_str(&line);
                    self.stderr_seen.push('\n');
                }
                Err(_) => panic!("no {needle:?} on stderr: {}", self.stderr_seen),
            }
        }
    }

    /// Waits (at most `bound`) for the exit; returns the exit code, every
    /// record written and all of stderr.
    fn finish(mut self, bound: Duration) -> (Option<i32>, Vec<Value>, String) {
        let until = Instant::now() + bound;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < until,
                "still running after {bound:?}; stderr: {}",
                self.stderr_seen
            );
            thread::sleep(Duration::from_millis(20));
        };
        // The pipes close at exit, so these loops end.
        self.stdout_seen.extend(self.stdout.iter());
        for line in self.stderr.iter() {
            self.stderr_seen.push_str(&line);
            self.stderr_seen.push('\n');
        }
        let records = lines(self.stdout_seen.join("\n").as_bytes());
        (
            status.code(),
            records,
            std::mem::take(&mut self.stderr_seen),
        )
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    assert_eq!(
        out.status.code(),
        Some(0),
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

#[test]
fn a_bom_and_a_line_that_is_not_utf8_do_not_stop_the_run() {
    let srv = MockServer::start(MockConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend(format!("{}\r\n", srv.page_url(0)).as_bytes());
    bytes.extend(b"\xFF\xFEnot utf-8\n");
    // A valid URL but for one byte: fetch-core rejects the U+FFFD that the
    // lossy decoding puts there, so it is never fetched as a mangled path.
    bytes.extend(srv.page_url(1).as_bytes());
    bytes.extend(b"\xFF\n");
    bytes.extend(format!("{}\n", srv.page_url(2)).as_bytes());
    std::fs::write(&list, bytes).unwrap();

    let out = fetchlab()
        .args(["run", "--model", "sequential", "--urls"])
        .arg(&list)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let mut records = lines(&out.stdout);
    records.sort_by_key(|r| r["index"].as_u64());
    assert_every_index(&records, 4);
    assert_eq!(
        records[0]["url"],
        srv.page_url(0),
        "the BOM is not part of it"
    );
    assert_eq!(records[0]["ok"], true, "{}", records[0]);
    assert_eq!(records[1]["error"]["kind"], "invalid_url", "{}", records[1]);
    assert_eq!(records[1]["url"], "\u{FFFD}\u{FFFD}not utf-8");
    assert_eq!(records[2]["error"]["kind"], "invalid_url", "{}", records[2]);
    assert_eq!(records[2]["url"], format!("{}\u{FFFD}", srv.page_url(1)));
    assert_eq!(records[3]["ok"], true, "{}", records[3]);
    assert_eq!(srv.stats().total_requests, 2, "bad lines are never fetched");
}

#[test]
fn every_stop_signal_cancels_and_still_writes_every_record() {
    let srv = MockServer::start(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(20)),
        ..MockConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    std::fs::write(&list, srv.page_urls(300).join("\n")).unwrap();
    // Ctrl-C, then what `timeout`, `docker stop` and a closed terminal send:
    // each stops new requests, and the run still writes a record for every
    // URL and says by its exit code that it was interrupted.
    let signals = [
        ("INT", 130, "sequential"),
        ("TERM", 143, "threads"),
        ("HUP", 129, "threads"),
    ];
    for (signal, code, model) in signals {
        srv.reset_stats();
        let mut child = Spawned::start(
            fetchlab()
                .args(["run", "--model", model, "--concurrency", "2", "--urls"])
                .arg(&list),
        );
        let first = child.next_record();
        assert_eq!(first["ok"], true, "{first}");
        child.signal(signal);
        let (exit, records, stderr) = child.finish(PATIENCE);
        assert_eq!(exit, Some(code), "SIG{signal}: {stderr}");
        assert_every_index(&records, 300);
        let cancelled = records
            .iter()
            .filter(|r| r["error"]["kind"] == "cancelled")
            .count();
        assert!(cancelled > 0, "SIG{signal}: unfinished URLs are cancelled");
        assert!(
            srv.stats().total_requests < 300,
            "SIG{signal}: no new requests"
        );
    }
}

/// A second signal stops waiting for the URLs in flight. Here page 0 is in
/// its CPU stage, given hours of work that no cancel interrupts (in the models
/// that run it inline), and the other pages hang, with a ten-minute timeout.
/// The input stays open, so that whichever model runs and however promptly
/// it cancels, the run cannot end on its own after the first signal.
#[test]
fn a_second_signal_writes_every_remaining_record_and_exits() {
    let n = 20;
    let srv = MockServer::start(MockConfig {
        faults: Faults {
            hang: FaultSet::ids(1..n),
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .unwrap();
    for model in fetchlab::models::names() {
        srv.reset_stats();
        let mut child = Spawned::start(fetchlab().args([
            "run",
            "--model",
            model,
            "--urls",
            "-",
            "--concurrency",
            "4",
            "--timeout-ms",
            "600000",
            "--cpu-work",
            &u32::MAX.to_string(),
        ]));
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}", srv.page_urls(n).join("\n")).unwrap();
        stdin.flush().unwrap();
        let until = Instant::now() + PATIENCE;
        while !srv.stats().requests_per_id.contains_key(&0) {
            assert!(Instant::now() < until, "{model}: page 0 was not requested");
            thread::sleep(Duration::from_millis(10));
        }
        // Time for page 0's body to arrive and its CPU stage to start. Were
        // it cancelled before, the test would pass without testing as much.
        thread::sleep(Duration::from_millis(300));
        child.signal("INT");
        child.wait_stderr("cancelling");
        child.signal("INT");
        let (exit, records, stderr) = child.finish(Duration::from_secs(30));
        drop(stdin);
        assert_every_index(&records, n);
        for r in &records {
            assert_eq!(r["error"]["kind"], "cancelled", "{model}: {r}");
            assert_eq!(r["ok"], false);
        }
        assert_eq!(exit, Some(130), "{model}: {stderr}");
        assert!(stderr.contains("for every URL left"), "{model}: {stderr}");
    }
}

#[test]
fn a_run_cut_short_by_its_deadline_exits_0() {
    let srv = MockServer::start(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(100)),
        ..MockConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    std::fs::write(&list, srv.page_urls(100).join("\n")).unwrap();
    let out = fetchlab()
        .args([
            "run",
            "--model",
            "sequential",
            "--deadline-ms",
            "300",
            "--urls",
        ])
        .arg(&list)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = lines(&out.stdout);
    assert_every_index(&records, 100);
    assert!(records.iter().any(|r| r["error"]["kind"] == "deadline"));
}

/// At a low open-file limit, a concurrency that cannot fit gets one warning
/// at start, with the numbers and the fix, and the run still goes on. The
/// hard limit is lowered too: fetchlab raises the soft limit to the hard one.
#[test]
fn a_concurrency_over_the_open_file_limit_is_warned_about() {
    let srv = MockServer::start(MockConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    std::fs::write(&list, srv.page_urls(3).join("\n")).unwrap();
    let run = |concurrency: &str| {
        Command::new("sh")
            .args([
                "-c",
                r#"ulimit -S -n 200 && ulimit -H -n 200 && exec "$@""#,
                "sh",
                env!("CARGO_BIN_EXE_fetchlab"),
                "run",
                "--model",
                "tokio",
                "--concurrency",
                concurrency,
                "--urls",
            ])
            .arg(&list)
            .output()
            .unwrap()
    };
    let out = run("1000");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "not refused: {stderr}");
    assert_eq!(lines(&out.stdout).len(), 3);
    assert_eq!(stderr.matches("warning").count(), 1, "once: {stderr}");
    for part in ["--concurrency 1000", "1064", "200", "ulimit -n 1064"] {
        assert!(stderr.contains(part), "{part:?} in {stderr}");
    }

    let out = run("16");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("warning"), "16 fits in 200: {stderr}");
}

#[test]
fn run_help_lists_the_models_and_a_wrong_one_is_refused() {
    let out = fetchlab().args(["run", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let names = fetchlab::models::names();
    assert!(
        help.contains(&names.join(", ")),
        "--help lists {names:?}: {help}"
    );
    for topic in ["Exit codes", "130", "143", "129", "invalid_url", "ulimit"] {
        assert!(help.contains(topic), "--help mentions {topic:?}: {help}");
    }

    let out = fetchlab()
        .args(["run", "--model", "nope", "--urls", "-"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("possible values"), "{stderr}");
    assert!(stderr.contains(&names.join(", ")), "{stderr}");
}
