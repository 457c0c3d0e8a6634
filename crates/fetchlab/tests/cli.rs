//! The `fetchlab` binary as a user runs it, against a mock server on
//! 127.0.0.1.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
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

// ---- `run --out FILE --resume` ----

/// Whether a record is its line's final one (`--resume` skips such lines).
fn is_final(record: &Value) -> bool {
    !matches!(
        record["error"]["kind"].as_str(),
        Some("cancelled" | "deadline")
    )
}

/// The complete records of an output file; a last line without its newline
/// (a run killed mid-write) is left out, and returned as the second value.
fn file_records(path: &std::path::Path) -> (Vec<Value>, String) {
    let text = String::from_utf8(std::fs::read(path).unwrap()).unwrap();
    let (complete, partial) = match text.rfind('\n') {
        Some(i) => text.split_at(i + 1),
        None => ("", text.as_str()),
    };
    (lines(complete.as_bytes()), partial.to_string())
}

/// The indexes that have a final record.
fn final_indexes(records: &[Value]) -> BTreeSet<u64> {
    records
        .iter()
        .filter(|r| is_final(r))
        .map(|r| r["index"].as_u64().unwrap())
        .collect()
}

/// Exactly one final record for each index of `0..n`, and no other index.
fn assert_one_final_per_index(records: &[Value], n: u64) {
    let finals: Vec<u64> = records
        .iter()
        .filter(|r| is_final(r))
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    let unique: BTreeSet<u64> = finals.iter().copied().collect();
    assert_eq!(
        finals.len(),
        unique.len(),
        "at most one final record per line"
    );
    assert_eq!(unique, (0..n).collect(), "a final record for every line");
    assert!(
        records.iter().all(|r| r["index"].as_u64().unwrap() < n),
        "no index past the input"
    );
}

/// Waits (bounded) until `path` holds at least `n` lines.
fn wait_for_lines(path: &std::path::Path, n: usize) {
    let until = Instant::now() + PATIENCE;
    loop {
        let written = std::fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
        if written >= n {
            return;
        }
        assert!(Instant::now() < until, "{written} lines after {PATIENCE:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// `fetchlab run --resume` over `list` into `out`, run to its end.
fn resume_run(model: &str, list: &std::path::Path, out: &std::path::Path) -> (i32, String) {
    let output = fetchlab()
        .args(["run", "--model", model, "--concurrency", "4", "--urls"])
        .arg(list)
        .arg("--out")
        .arg(out)
        .arg("--resume")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The server's requests per page id since its last reset, as a set of the
/// ids, each of which must have been requested exactly once.
fn requested_once(srv: &MockServer) -> BTreeSet<u64> {
    let stats = srv.stats();
    for (id, n) in &stats.requests_per_id {
        assert_eq!(*n, 1, "page {id} requested {n} times");
    }
    stats.requests_per_id.keys().copied().collect()
}

/// A run of `n` pages at 20 ms, 2 in flight, with `model`, writing to a
/// file, once it has written 50 records: the start of the resume tests.
struct Interrupted {
    srv: MockServer,
    dir: tempfile::TempDir,
    list: PathBuf,
    out: PathBuf,
    child: Spawned,
}

fn start_a_run_to_interrupt(model: &str, n: u64) -> Interrupted {
    let srv = MockServer::start(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(20)),
        ..MockConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (list, out) = (dir.path().join("urls.txt"), dir.path().join("out.jsonl"));
    std::fs::write(&list, srv.page_urls(n).join("\n")).unwrap();
    let child = Spawned::start(
        fetchlab()
            .args(["run", "--model", model, "--concurrency", "2", "--urls"])
            .arg(&list)
            .arg("--out")
            .arg(&out),
    );
    wait_for_lines(&out, 50);
    Interrupted {
        srv,
        dir,
        list,
        out,
        child,
    }
}

/// SIGTERM part-way, then `--resume`: the file ends with exactly one final
/// record per line, and the resumed run requested exactly the lines the
/// first one left without a final record, each once. A third run finds
/// nothing left to do.
#[test]
fn a_run_stopped_by_sigterm_resumes_where_it_stopped() {
    let n = 400;
    let Interrupted {
        srv,
        dir: _dir,
        list,
        out,
        child,
    } = start_a_run_to_interrupt("tokio", n);
    child.signal("TERM");
    let (exit, _, stderr) = child.finish(PATIENCE);
    assert_eq!(exit, Some(143), "{stderr}");
    let (first, partial) = file_records(&out);
    assert_eq!(partial, "", "a signal leaves whole records");
    assert_every_index(&first, n);
    let done = final_indexes(&first);
    assert!(
        done.len() >= 50 && done.len() < n as usize,
        "{} done",
        done.len()
    );

    srv.reset_stats();
    let (code, stderr) = resume_run("threads", &list, &out);
    assert_eq!(code, 0, "{stderr}");
    let (records, _) = file_records(&out);
    assert_one_final_per_index(&records, n);
    assert_eq!(
        &records[..first.len()],
        &first[..],
        "appended, not rewritten"
    );
    let left: BTreeSet<u64> = (0..n).filter(|i| !done.contains(i)).collect();
    assert_eq!(requested_once(&srv), left, "only the lines left, once each");
    let new_indexes: BTreeSet<u64> = records[first.len()..]
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(new_indexes, left);
    for r in &records[first.len()..] {
        let index = r["index"].as_u64().unwrap();
        assert_eq!(r["url"], srv.page_url(index), "the input index: {r}");
        assert_eq!(r["title"], mock_server::page_title(index), "{r}");
    }
    assert!(
        stderr.contains(&format!("{} of {n} lines left to fetch", left.len())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{} lines already done, {} records written now",
            done.len(),
            left.len()
        )),
        "{stderr}"
    );

    srv.reset_stats();
    let before = std::fs::read(&out).unwrap();
    let (code, stderr) = resume_run("mio", &list, &out);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read(&out).unwrap(), before, "nothing left to do");
    assert_eq!(srv.stats().total_requests, 0);
    assert!(
        stderr.contains("400 lines already done, 0 records written now"),
        "{stderr}"
    );
}

/// `kill -9` part-way (records in the buffer are lost, the last line may
/// be cut), then `--resume`: exactly one final record per line, and only the
/// lines without a complete final record are requested again.
#[test]
fn a_run_killed_with_sigkill_resumes_where_its_records_stop() {
    let n = 400;
    let Interrupted {
        srv,
        dir: _dir,
        list,
        out,
        child,
    } = start_a_run_to_interrupt("threads", n);
    child.signal("KILL");
    let (exit, _, _) = child.finish(PATIENCE);
    assert_eq!(exit, None, "killed by a signal");
    let (first, partial) = file_records(&out);
    let done = final_indexes(&first);
    assert_eq!(done.len(), first.len(), "a run killed wrote no `cancelled`");
    assert!(done.len() >= 50 && done.len() < n as usize);

    srv.reset_stats();
    let (code, stderr) = resume_run("tokio", &list, &out);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stderr.contains("unfinished record"),
        !partial.is_empty(),
        "{stderr}"
    );
    // Every line of the file is whole now: a cut line was removed.
    let (records, partial) = file_records(&out);
    assert_eq!(partial, "");
    assert_one_final_per_index(&records, n);
    let left: BTreeSet<u64> = (0..n).filter(|i| !done.contains(i)).collect();
    assert_eq!(requested_once(&srv), left);
}

/// The cut last line made deterministic: a file whose last record stops
/// mid-line (and one whose last record lacks only its newline) is cut at
/// the last complete line, and that line's URL is fetched again.
#[test]
fn an_unfinished_last_line_is_cut_off_and_its_url_fetched_again() {
    let n = 20;
    let srv = MockServer::start(MockConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (list, out) = (dir.path().join("urls.txt"), dir.path().join("out.jsonl"));
    std::fs::write(&list, srv.page_urls(n).join("\n")).unwrap();
    let (code, stderr) = resume_run("sequential", &list, &out);
    assert!(
        stderr.contains("does not exist yet; starting a fresh run"),
        "{stderr}"
    );
    assert_eq!(code, 0, "{stderr}");
    let complete = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = complete.lines().collect();
    assert_eq!(lines.len(), n as usize);
    let index_of = |line: &str| -> u64 {
        serde_json::from_str::<Value>(line).unwrap()["index"]
            .as_u64()
            .unwrap()
    };

    // Kept: the first 10 records; then half of the 11th, or the 11th
    // without its newline.
    let kept: String = lines[..10].iter().map(|l| format!("{l}\n")).collect();
    let cut_line = lines[10];
    for last in [&cut_line[..cut_line.len() / 2], cut_line] {
        std::fs::write(&out, format!("{kept}{last}")).unwrap();
        srv.reset_stats();
        let (code, stderr) = resume_run("smol", &list, &out);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stderr.contains(&format!(
                "ends in an unfinished record (line 11, {} bytes",
                last.len()
            )),
            "{stderr}"
        );
        let (records, partial) = file_records(&out);
        assert_eq!(partial, "");
        assert_eq!(records.len(), n as usize, "the cut line is gone");
        assert_one_final_per_index(&records, n);
        let expected: BTreeSet<u64> = lines[10..].iter().map(|l| index_of(l)).collect();
        assert_eq!(requested_once(&srv), expected);
        assert!(expected.contains(&index_of(cut_line)));
    }
}

/// The input index survives skipping: a list with comments, blank lines
/// and a line that is not a URL, resumed from a file with some lines done
/// and one cancelled, here read from standard input (lines checked as they
/// arrive) where the first runs read a file.
#[test]
fn resumed_records_keep_their_input_index() {
    let srv = MockServer::start(MockConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (list, out) = (dir.path().join("urls.txt"), dir.path().join("out.jsonl"));
    // Indexes: page 10 → 0, "not a url" → 1, page 11 → 2, page 12 → 3,
    // page 13 → 4.
    let text = format!(
        "# a list\n\n{}\nnot a url\n\n# more\n{}\n  {}  \n{}\n",
        srv.page_url(10),
        srv.page_url(11),
        srv.page_url(12),
        srv.page_url(13)
    );
    std::fs::write(&list, &text).unwrap();
    let (code, stderr) = resume_run("sequential", &list, &out);
    assert_eq!(code, 0, "{stderr}");
    let (all, _) = file_records(&out);
    let by_index = |i: u64| -> Value {
        all.iter()
            .find(|r| r["index"] == i)
            .unwrap_or_else(|| panic!("no record {i}"))
            .clone()
    };
    // Done: 0 (a page) and 3 (a page); 2 was cancelled; 1 and 4 never
    // written.
    let mut cancelled = by_index(2);
    cancelled["ok"] = Value::Bool(false);
    cancelled["error"] = serde_json::json!({"kind": "cancelled", "message": "run interrupted"});
    let kept = [by_index(0), cancelled, by_index(3)];
    let kept_text: String = kept.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&out, &kept_text).unwrap();

    srv.reset_stats();
    let mut child = fetchlab()
        .args(["run", "--model", "tokio", "--urls", "-", "--out"])
        .arg(&out)
        .arg("--resume")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("2 lines already done, 3 records written now"),
        "{stderr}"
    );

    let (records, _) = file_records(&out);
    assert_eq!(&records[..3], &kept[..], "the old records stay, in place");
    assert_one_final_per_index(&records, 5);
    let new: Vec<(u64, String, Value)> = {
        let mut new: Vec<_> = records[3..]
            .iter()
            .map(|r| {
                (
                    r["index"].as_u64().unwrap(),
                    r["url"].as_str().unwrap().to_string(),
                    r["error"]["kind"].clone(),
                )
            })
            .collect();
        new.sort_by_key(|(i, ..)| *i);
        new
    };
    assert_eq!(
        new,
        [
            (1, "not a url".to_string(), Value::from("invalid_url")),
            (2, srv.page_url(11), Value::Null),
            (4, srv.page_url(13), Value::Null),
        ]
    );
    assert_eq!(
        requested_once(&srv),
        BTreeSet::from([11, 13]),
        "pages 10 and 12 are done; the invalid line is never requested"
    );
}

/// A file written for another list is refused before anything is fetched
/// or written, whether a line differs or the list is shorter; with `--urls -`
/// as soon as the differing line arrives.
#[test]
fn a_file_written_for_another_list_is_refused() {
    let srv = MockServer::start(MockConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (list, out) = (dir.path().join("urls.txt"), dir.path().join("out.jsonl"));
    std::fs::write(&list, srv.page_urls(5).join("\n")).unwrap();
    let (code, stderr) = resume_run("sequential", &list, &out);
    assert_eq!(code, 0, "{stderr}");
    let before = std::fs::read(&out).unwrap();

    let other = dir.path().join("other.txt");
    let mut urls = srv.page_urls(5);
    urls[2] = format!("{}/page/99", srv.base_url());
    std::fs::write(&other, urls.join("\n")).unwrap();
    srv.reset_stats();
    let (code, stderr) = resume_run("tokio", &other, &out);
    assert_eq!(code, 1, "{stderr}");
    let expected = format!(
        "{} was written for another URL list: the line at index 2 is \"{}\", the record says \
         \"{}\" (line ",
        out.display(),
        urls[2],
        srv.page_url(2)
    );
    assert!(stderr.contains(&expected), "{stderr}");

    // A shorter list: the file has records past its end.
    let shorter = dir.path().join("shorter.txt");
    std::fs::write(&shorter, srv.page_urls(3).join("\n")).unwrap();
    let (code, stderr) = resume_run("tokio", &shorter, &out);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("was written for another URL list: it has a record for index 4"),
        "{stderr}"
    );
    assert!(stderr.contains("but the input has 3 URL lines"), "{stderr}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "the file is untouched"
    );
    assert_eq!(srv.stats().total_requests, 0, "nothing fetched");

    // From standard input, the lines are checked as they arrive.
    let output = fetchlab()
        .args(["run", "--model", "tokio", "--urls", "-", "--out"])
        .arg(&out)
        .arg("--resume")
        .stdin(std::fs::File::open(&other).unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&expected), "{stderr}");
    assert_eq!(srv.stats().total_requests, 0, "nothing fetched");
}

/// `--resume` needs a file to read back (a usage error otherwise), and a
/// complete line that is not a record is an error naming the line.
#[test]
fn resume_needs_an_output_file_of_records() {
    for out in [&["--out", "-"][..], &[]] {
        let output = fetchlab()
            .args(["run", "--model", "tokio", "--urls", "-", "--resume"])
            .args(out)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{out:?}: {stderr}");
        assert!(stderr.contains("--resume needs --out FILE"), "{stderr}");
    }

    let srv = MockServer::start(MockConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (list, out) = (dir.path().join("urls.txt"), dir.path().join("out.jsonl"));
    std::fs::write(&list, srv.page_urls(3).join("\n")).unwrap();
    let (code, stderr) = resume_run("sequential", &list, &out);
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(1, "{\"index\": 7, \"url\": \"edited by hand\"");
    let edited = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    std::fs::write(&out, &edited).unwrap();
    srv.reset_stats();
    let (code, stderr) = resume_run("sequential", &list, &out);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot resume {}: line 2 is not a fetchlab record",
            out.display()
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), edited, "untouched");
    assert_eq!(srv.stats().total_requests, 0);

    let output = fetchlab().args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for topic in ["--resume", "Resume:", "final record"] {
        assert!(help.contains(topic), "--help mentions {topic:?}: {help}");
    }
}
