//! `fetchlab run --robots` as a user runs it: robots.txt obeyed end to end,
//! against the mock server in this process (its counters say what was
//! requested) and against `fetchlab mock --robots*` in another.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use mock_server::{MockConfig, MockServer, RobotsTxt};
use serde_json::Value;

fn fetchlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fetchlab"))
}

/// `fetchlab run --model MODEL --urls LIST` with `args`.
fn run(model: &str, list: &Path, args: &[&str]) -> Output {
    fetchlab()
        .args(["run", "--model", model, "--no-progress", "--urls"])
        .arg(list)
        .args(args)
        .output()
        .expect("fetchlab runs")
}

fn records(text: &[u8]) -> Vec<Value> {
    let mut records: Vec<Value> = String::from_utf8_lossy(text)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    records.sort_by_key(|r| r["index"].as_u64());
    records
}

fn succeeded(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The default user agent is `fetchlab/VERSION`: its product token,
/// `fetchlab`, picks its group; the `*` group would disallow everything.
const ROBOTS: &str = "User-agent: *\nDisallow: /\n\n\
                      User-agent: fetchlab\nDisallow: /page/1\nDisallow: /page/7$\n";

/// Pages 1, 10..=19 (the prefix /page/1) and 7 (anchored) are disallowed.
fn disallowed(index: usize) -> bool {
    index == 1 || index == 7 || (10..20).contains(&index)
}

#[test]
fn robots_is_obeyed_once_per_host_and_its_records_are_final() {
    let srv = MockServer::start(MockConfig {
        robots: RobotsTxt::Text(ROBOTS.to_string()),
        ..MockConfig::default()
    })
    .expect("mock server starts on 127.0.0.1:0");
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    std::fs::write(&list, srv.page_urls(30).join("\n")).unwrap();
    // The blocking client, the hand-written loop and the worker processes:
    // fetch-core's three flavours of the per-URL path, and the wire.
    for model in ["threads", "mio", "processes"] {
        srv.reset_stats();
        let out_file = dir.path().join(format!("{model}.jsonl"));
        let out = &out_file;
        let args = ["--robots", "--out", out.to_str().unwrap()];
        succeeded(&run(model, &list, &args));
        let written = records(&std::fs::read(&out_file).unwrap());
        assert_eq!(written.len(), 30, "{model}: one record per URL");
        for (i, r) in written.iter().enumerate() {
            if disallowed(i) {
                assert_eq!(r["error"]["kind"], "robots_disallowed", "{model}: {r}");
                assert_eq!(r["attempts"], 0, "{model}: {r}");
                assert_eq!(r["ok"], false, "{model}: {r}");
                let message = r["error"]["message"].as_str().unwrap();
                assert!(message.contains("/robots.txt disallows"), "{message}");
            } else {
                assert_eq!(r["ok"], true, "{model}: {r}");
            }
        }
        let stats = srv.stats();
        let robots = stats.robots_requests;
        if model == "processes" {
            // One set of rules per worker process.
            assert!((1..=16).contains(&robots), "{model}: {robots}");
        } else {
            assert_eq!(robots, 1, "{model}: robots.txt once for the run");
        }
        for i in 0..30 {
            let expected = u64::from(!disallowed(i));
            let got = stats.requests_per_id.get(&(i as u64)).copied().unwrap_or(0);
            assert_eq!(got, expected, "{model}: requests for page {i}");
        }

        // robots_disallowed is final: a resumed run has nothing left to
        // fetch, and asks for nothing, robots.txt included.
        srv.reset_stats();
        let args = ["--robots", "--resume", "--out", out.to_str().unwrap()];
        succeeded(&run(model, &list, &args));
        assert_eq!(records(&std::fs::read(&out_file).unwrap()).len(), 30);
        assert_eq!(srv.stats().total_requests, 0, "{model}: resumed");
    }

    // Without --robots, robots.txt is never asked for.
    srv.reset_stats();
    let out = run("tokio", &list, &[]);
    succeeded(&out);
    assert!(records(&out.stdout).iter().all(|r| r["ok"] == true));
    let stats = srv.stats();
    assert_eq!((stats.robots_requests, stats.total_requests), (0, 30));
}

/// `fetchlab mock` with `args`, and its base URL.
fn mock(args: &[&str]) -> (Child, String) {
    let mut child = fetchlab()
        .arg("mock")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("fetchlab mock starts");
    let mut base = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut base)
        .expect("the base URL");
    (child, base.trim().to_string())
}

#[test]
fn the_mock_serves_the_robots_txt_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("robots.txt");
    std::fs::write(&file, ROBOTS).unwrap();
    let list = dir.path().join("urls.txt");
    let file_flag = ["--robots", file.to_str().unwrap()];
    // The flags, and for each page what its record's message says when it
    // is disallowed.
    type Expected = fn(usize) -> Option<&'static str>;
    let cases: [(&[&str], Expected); 4] = [
        (&file_flag, |i| disallowed(i).then_some("disallows")),
        (&["--robots-txt", ROBOTS], |i| {
            disallowed(i).then_some("disallows")
        }),
        (&["--robots-status", "404"], |_| None),
        (&["--robots-status", "503"], |_| Some("HTTP status 503")),
    ];
    for (flags, expected) in cases {
        let (mut child, base) = mock(flags);
        let urls: Vec<String> = (0..20).map(|i| format!("{base}/page/{i}")).collect();
        std::fs::write(&list, urls.join("\n")).unwrap();
        let out = run("smol", &list, &["--robots", "--retries", "0"]);
        let _ = child.kill();
        let _ = child.wait();
        succeeded(&out);
        for (i, r) in records(&out.stdout).iter().enumerate() {
            match expected(i) {
                Some(why) => {
                    assert_eq!(r["error"]["kind"], "robots_disallowed", "{flags:?}: {r}");
                    let message = r["error"]["message"].as_str().unwrap();
                    assert!(message.contains(why), "{flags:?}: {message}");
                }
                None => assert_eq!(r["ok"], true, "{flags:?}: {r}"),
            }
        }
    }
    // One answer at a time.
    let out = fetchlab()
        .args(["mock", "--robots-status", "500", "--robots-hang"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
}
