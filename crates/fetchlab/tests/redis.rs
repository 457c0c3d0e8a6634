//! `fetchlab enqueue | worker | results` against a real Redis, and `run
//! --shard`. Each test starts its own `redis-server` on a free loopback port
//! with persistence off, and stops it when done; without `redis-server`
//! installed (`apt-get install redis-server`; `.ci/run` installs it), the
//! Redis tests say so and pass without checking anything.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use mock_server::{Latency, MockConfig, MockServer};
use serde_json::Value;

fn fetchlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fetchlab"))
}

/// A `redis-server` of this test's own, killed on drop.
struct Redis {
    child: Child,
    url: String,
}

impl Redis {
    /// `None` (and a message) when `redis-server` is not installed.
    fn start() -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            // `.ci/run` installs it and sets FETCHLAB_REQUIRE_REDIS: there, a
            // missing server is a failure, not a skip that tests nothing.
            assert!(
                std::env::var_os("FETCHLAB_REQUIRE_REDIS").is_none(),
                "FETCHLAB_REQUIRE_REDIS is set but redis-server is not installed"
            );
            eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let redis = Redis {
            child,
            url: format!("redis://127.0.0.1:{port}/"),
        };
        let until = Instant::now() + Duration::from_secs(10);
        while redis.try_con().is_none() {
            assert!(Instant::now() < until, "redis-server did not start");
            thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }

    fn try_con(&self) -> Option<redis::Connection> {
        let mut con = redis::Client::open(self.url.as_str())
            .ok()?
            .get_connection()
            .ok()?;
        redis::cmd("PING").query::<String>(&mut con).ok()?;
        Some(con)
    }

    fn con(&self) -> redis::Connection {
        self.try_con().expect("connect to the test's redis-server")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hlen(con: &mut redis::Connection, job: &str) -> usize {
    redis::cmd("HLEN")
        .arg(format!("fetchlab:{job}:results"))
        .query(con)
        .unwrap()
}

/// XPENDING's count, for the whole group or for one consumer.
fn pending(con: &mut redis::Connection, job: &str, consumer: Option<&str>) -> usize {
    let mut cmd = redis::cmd("XPENDING");
    cmd.arg(format!("fetchlab:{job}:urls")).arg("fetchlab");
    match consumer {
        None => {
            let summary: (usize, Option<String>, Option<String>, redis::Value) =
                cmd.query(con).unwrap();
            summary.0
        }
        Some(c) => {
            let entries: Vec<(String, String, u64, u64)> = cmd
                .arg("-")
                .arg("+")
                .arg(100_000)
                .arg(c)
                .query(con)
                .unwrap();
            entries.len()
        }
    }
}

fn write_list(dir: &Path, urls: &[String]) -> std::path::PathBuf {
    let path = dir.join("urls.txt");
    let mut f = std::fs::File::create(&path).unwrap();
    for u in urls {
        writeln!(f, "{u}").unwrap();
    }
    path
}

fn enqueue(redis: &Redis, job: &str, list: &Path) -> Output {
    let out = fetchlab()
        .args(["enqueue", "--redis", &redis.url, "--job", job, "--urls"])
        .arg(list)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn worker(redis: &Redis, job: &str, model: &str, consumer: &str, extra: &[&str]) -> Child {
    fetchlab()
        .args([
            "worker", "--redis", &redis.url, "--job", job, "--model", model,
        ])
        .args(["--consumer", consumer, "--no-parse", "--retries", "0"])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(child: &mut Child, patience: Duration) -> ExitStatus {
    let until = Instant::now() + patience;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("a worker did not finish within {patience:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn results(redis: &Redis, job: &str) -> (Vec<Value>, String) {
    let out = fetchlab()
        .args(["results", "--redis", &redis.url, "--job", job])
        .output()
        .unwrap();
    assert!(out.status.success());
    let records = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (records, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Enqueuing the same list twice adds nothing; one worker fetches each URL
/// once; `results` prints them in input order, a bad line included, with a
/// status line.
#[test]
fn enqueue_twice_then_results_in_input_order() {
    let Some(redis) = Redis::start() else { return };
    let server = MockServer::start(MockConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut urls = server.page_urls(30);
    urls[5] = "not a url".into();
    let list = write_list(dir.path(), &urls);
    enqueue(&redis, "twice", &list);
    let second = enqueue(&redis, "twice", &list);
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("0 URLs added, 30 already enqueued"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let mut con = redis.con();
    let xlen: usize = redis::cmd("XLEN")
        .arg("fetchlab:twice:urls")
        .query(&mut con)
        .unwrap();
    assert_eq!(xlen, 30);

    let mut w = worker(&redis, "twice", "tokio", "w1", &[]);
    assert!(wait_for(&mut w, Duration::from_secs(30)).success());
    let stats = server.stats();
    assert_eq!(stats.requests_per_id.len(), 29);
    assert!(stats.requests_per_id.values().all(|&n| n == 1), "{stats:?}");

    let (records, status) = results(&redis, "twice");
    let indexes: Vec<u64> = records
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, (0..30).collect::<Vec<_>>());
    for (r, url) in records.iter().zip(&urls) {
        assert_eq!(r["url"].as_str(), Some(url.as_str()));
    }
    assert_eq!(records[5]["error"]["kind"], "invalid_url");
    assert_eq!(records[6]["ok"], true);
    assert_eq!(
        records[0].as_object().unwrap().len(),
        13,
        "run's record shape"
    );
    assert!(
        status.contains("enqueued 30, done 30, pending 0, claimed 0, failed 0"),
        "{status}"
    );
}

/// The proof: 5,000 URLs, three workers with different models, one
/// killed with SIGKILL mid-run. The others claim what it held and finish:
/// every URL has exactly one result, nothing is pending, and the URLs
/// fetched twice are at most the ones the killed worker held.
#[test]
fn a_worker_killed_mid_run_loses_nothing() {
    let Some(redis) = Redis::start() else { return };
    let config = MockConfig {
        latency: Latency::Fixed(Duration::from_millis(20)),
        ..MockConfig::default()
    };
    let server = MockServer::start(config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let urls = server.page_urls(5000);
    let list = write_list(dir.path(), &urls);
    enqueue(&redis, "kill", &list);
    let opts = [
        "--concurrency",
        "8",
        "--per-host",
        "8",
        "--claim-idle-ms",
        "1500",
    ];
    let mut survivors = [
        worker(&redis, "kill", "tokio", "tokio", &opts),
        worker(&redis, "kill", "mio", "mio", &opts),
    ];
    let mut victim = worker(&redis, "kill", "threads", "victim", &opts);
    let mut con = redis.con();
    let until = Instant::now() + Duration::from_secs(30);
    while hlen(&mut con, "kill") < 1000 {
        assert!(Instant::now() < until, "no progress");
        thread::sleep(Duration::from_millis(10));
    }
    victim.kill().unwrap();
    victim.wait().unwrap();
    let held = pending(&mut con, "kill", Some("victim"));
    assert!(held > 0, "the victim held nothing when killed");

    for w in &mut survivors {
        assert!(wait_for(w, Duration::from_secs(60)).success());
    }
    assert_eq!(hlen(&mut con, "kill"), 5000);
    assert_eq!(pending(&mut con, "kill", None), 0);
    let (records, status) = results(&redis, "kill");
    assert_eq!(records.len(), 5000);
    for (i, (r, url)) in records.iter().zip(&urls).enumerate() {
        assert_eq!(r["index"].as_u64(), Some(i as u64));
        assert_eq!(r["url"].as_str(), Some(url.as_str()));
        assert_eq!(r["ok"], true, "{r}");
    }
    let stats = server.stats();
    assert_eq!(stats.requests_per_id.len(), 5000, "every URL was fetched");
    let twice = stats.requests_per_id.values().filter(|&&n| n > 1).count();
    assert!(
        twice <= held,
        "{twice} URLs fetched twice, the victim held {held}"
    );
    assert!(status.contains("pending 0"), "{status}");
    eprintln!("victim held {held}, fetched twice {twice}; {status}");
}

/// SIGTERM: the worker stops reading, abandons what is in flight (those
/// entries stay pending) and exits 143; another worker claims them and
/// finishes the job.
#[test]
fn sigterm_leaves_the_urls_in_flight_pending() {
    let Some(redis) = Redis::start() else { return };
    let config = MockConfig {
        latency: Latency::Fixed(Duration::from_millis(200)),
        ..MockConfig::default()
    };
    let server = MockServer::start(config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let list = write_list(dir.path(), &server.page_urls(100));
    enqueue(&redis, "term", &list);
    let opts = ["--concurrency", "10", "--claim-idle-ms", "500"];
    let mut first = worker(&redis, "term", "tokio", "first", &opts);
    let mut con = redis.con();
    let until = Instant::now() + Duration::from_secs(30);
    while hlen(&mut con, "term") < 10 {
        assert!(Instant::now() < until, "no progress");
        thread::sleep(Duration::from_millis(10));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_for(&mut first, Duration::from_secs(10));
    assert_eq!(status.code(), Some(143));
    let done = hlen(&mut con, "term");
    let held = pending(&mut con, "term", Some("first"));
    assert!(done < 100, "it stopped before the end");
    assert!(held > 0, "the URLs in flight stay pending");

    let mut second = worker(&redis, "term", "threads", "second", &opts);
    assert!(wait_for(&mut second, Duration::from_secs(30)).success());
    assert_eq!(hlen(&mut con, "term"), 100);
    assert_eq!(pending(&mut con, "term", None), 0);
}

/// `run --shard K/N`: the lines with index % N == K - 1, with their index in
/// the whole list; the N shards together cover every line once.
#[test]
fn run_shard_takes_every_nth_line_and_keeps_the_index() {
    let server = MockServer::start(MockConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let list = write_list(dir.path(), &server.page_urls(10));
    let mut all = BTreeSet::new();
    for k in 1..=3 {
        let out = fetchlab()
            .args([
                "run",
                "--model",
                "threads",
                "--shard",
                &format!("{k}/3"),
                "--urls",
            ])
            .arg(&list)
            .output()
            .unwrap();
        assert!(out.status.success());
        let indexes: BTreeSet<u64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["index"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        let expected: BTreeSet<u64> = (0..10).filter(|i| i % 3 == k - 1).collect();
        assert_eq!(indexes, expected);
        all.extend(indexes);
    }
    assert_eq!(all.len(), 10);
    for bad in ["0/3", "4/3", "1/0", "x"] {
        let out = fetchlab()
            .args(["run", "--model", "threads", "--shard", bad, "--urls"])
            .arg(&list)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--shard {bad}");
    }
}

/// Every model fetches from the stream through the same `Model` interface:
/// one job per model, every URL one record, nothing pending, each page
/// served once.
#[test]
fn every_model_works_as_a_worker() {
    let Some(redis) = Redis::start() else { return };
    let server = MockServer::start(MockConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let list = write_list(dir.path(), &server.page_urls(40));
    let models = fetchlab().arg("models").output().unwrap();
    let models = String::from_utf8(models.stdout).unwrap();
    let mut con = redis.con();
    for model in models.lines() {
        server.reset_stats();
        enqueue(&redis, model, &list);
        let mut w = worker(&redis, model, model, model, &["--concurrency", "4"]);
        let status = wait_for(&mut w, Duration::from_secs(60));
        assert!(status.success(), "{model}: {status}");
        assert_eq!(hlen(&mut con, model), 40, "{model}");
        assert_eq!(pending(&mut con, model, None), 0, "{model}");
        let stats = server.stats();
        assert_eq!(stats.requests_per_id.len(), 40, "{model}");
        assert!(stats.requests_per_id.values().all(|&n| n == 1), "{model}");
        let (records, _) = results(&redis, model);
        assert!(records.iter().all(|r| r["ok"] == true), "{model}");
    }
}
