//! What a process buys, and what it must not cost: a worker killed with
//! `kill -9` or one that aborts, hangs, writes garbage or dies mid-line
//! costs the URLs it had in flight, recorded `panicked`, and the run goes
//! on with a replacement; a cancel, a deadline and a panic in `on_outcome`
//! leave no child process behind, zombies included.
//!
//! The workers are this crate's `fetch-processes-worker`, built with the
//! test faults (`fetch_processes::faults`): a marker in a URL's query
//! string makes the worker that starts it misbehave. The tests take turns
//! (one lock), because they count this process's children in /proc.

#![cfg(target_os = "linux")]

use std::collections::BTreeSet;
use std::panic::{self, AssertUnwindSafe};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use fetch_core::{CancelToken, ErrorKind, Model, Options, OptionsBuilder, Outcome};
use fetch_processes::{Processes, WorkerCommand, faults};
use mock_server::{FaultSet, Latency, MockConfig, MockServer};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

fn worker() -> WorkerCommand {
    env!("CARGO_BIN_EXE_fetch-processes-worker").into()
}

fn model() -> Processes {
    Processes::new(worker()).processes(2)
}

/// This process's children, zombies included (a zombie keeps its /proc
/// entry until it is reaped).
fn children() -> Vec<u32> {
    let me = std::process::id();
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid ...": the name may hold spaces and parens.
        let fields = &stat[stat.rfind(')')? + 1..];
        fields.split_whitespace().nth(1)?.parse().ok()
    };
    std::fs::read_dir("/proc")
        .expect("/proc lists processes")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent(pid) == Some(me))
        .collect()
}

fn server(latency_ms: u64) -> MockServer {
    MockServer::start(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(latency_ms)),
        ..MockConfig::default()
    })
    .expect("mock server starts on 127.0.0.1:0")
}

fn options() -> OptionsBuilder {
    Options::builder()
        .max_in_flight(8)
        .retries(0)
        .request_timeout(Duration::from_secs(10))
}

/// Every URL has exactly one outcome, in input order.
fn assert_one_each(n: usize, outcomes: &[Outcome]) {
    let indices: Vec<usize> = outcomes.iter().map(|o| o.index).collect();
    assert_eq!(indices, (0..n).collect::<Vec<_>>(), "one outcome per URL");
}

fn message(o: &Outcome) -> &str {
    o.result.as_ref().err().map_or("", |e| e.message())
}

/// The URLs `outcomes` lost, after checking that each is `panicked` with a
/// message containing `says`, and that the rest are pages.
fn lost_to_a_worker<'a>(outcomes: &'a [Outcome], says: &str) -> Vec<&'a Outcome> {
    let lost: Vec<&Outcome> = outcomes.iter().filter(|o| !o.is_ok()).collect();
    for o in &lost {
        assert_eq!(o.error_kind(), Some(ErrorKind::Panicked), "{:?}", o.result);
        assert!(
            message(o).contains(says),
            "page {}: {}",
            o.index,
            message(o)
        );
    }
    lost
}

/// `page_url(id)` with a fault marker the test worker reacts to.
fn marked(srv: &MockServer, id: u64, marker: &str) -> String {
    format!("{}?{marker}=1", srv.page_url(id))
}

#[test]
fn kill_9_of_a_worker_mid_run_loses_nothing() {
    let _turn = one_at_a_time();
    let srv = server(20);
    let n = 200;
    let urls = srv.page_urls(n as u64);
    let (mut seen, mut victim, mut reported) = (BTreeSet::new(), None, 0);
    let outcomes = model().run(
        &urls,
        &options().build().unwrap(),
        &mut |_| {
            reported += 1;
            seen.extend(children());
            if reported == 30 {
                let pid = children()[0];
                let kill = Command::new("kill").args(["-9", &pid.to_string()]).status();
                assert!(kill.unwrap().success(), "kill -9 {pid}");
                victim = Some(pid);
            }
        },
        &CancelToken::new(),
    );
    assert_one_each(n, &outcomes);
    let victim = victim.expect("a worker was killed");
    let says = format!("worker process {victim} died (signal: 9 (SIGKILL))");
    let lost = lost_to_a_worker(&outcomes, &says);
    // The worker had its share of the 8 in flight: 4 slots.
    assert!((1..=4).contains(&lost.len()), "{} lost", lost.len());
    assert!(seen.len() >= 3, "a replacement was started: {seen:?}");
    assert!(children().is_empty(), "left behind: {:?}", children());
    let stats = srv.stats();
    for o in outcomes.iter().filter(|o| o.is_ok()) {
        assert_eq!(
            stats.requests_per_id[&(o.index as u64)],
            1,
            "page {}",
            o.index
        );
    }
    assert!(stats.total_requests <= n as u64, "no URL fetched twice");
}

#[test]
fn a_cancel_leaves_no_child_behind() {
    let _turn = one_at_a_time();
    let mut config = MockConfig::default();
    config.faults.hang = FaultSet {
        ids: (0..40).collect(),
        rate: 0.0,
    };
    let srv = MockServer::start(config).unwrap();
    let urls = srv.page_urls(40);
    let opts = options()
        .request_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let cancel = CancelToken::new();
    let (outcomes, workers, took) = std::thread::scope(|s| {
        let canceller = s.spawn(|| {
            let give_up = Instant::now() + Duration::from_secs(20);
            while srv.stats().in_flight < 8 && Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(10));
            }
            let workers = children();
            cancel.cancel();
            (workers, Instant::now())
        });
        let outcomes = model().run(&urls, &opts, &mut |_| {}, &cancel);
        let returned = Instant::now();
        let (workers, cancelled) = canceller.join().unwrap();
        (outcomes, workers, returned.duration_since(cancelled))
    });
    assert_eq!(workers.len(), 2, "two workers ran: {workers:?}");
    assert!(children().is_empty(), "left behind: {:?}", children());
    assert!(
        took < Duration::from_secs(5),
        "returned {took:?} after the cancel"
    );
    assert_one_each(40, &outcomes);
    for o in &outcomes {
        assert_eq!(o.error_kind(), Some(ErrorKind::Cancelled), "{:?}", o.result);
    }
}

#[test]
fn a_panic_in_on_outcome_leaves_no_child_behind() {
    let _turn = one_at_a_time();
    let srv = server(20);
    let urls = srv.page_urls(100);
    let mut reported = 0;
    let run = panic::catch_unwind(AssertUnwindSafe(|| {
        model().run(
            &urls,
            &options().build().unwrap(),
            &mut |_| {
                reported += 1;
                assert!(children().len() == 2 || reported < 5);
                assert!(reported < 5, "on_outcome fails at the fifth outcome");
            },
            &CancelToken::new(),
        )
    }));
    assert!(run.is_err(), "the panic reached the caller");
    assert_eq!(reported, 5);
    assert!(children().is_empty(), "left behind: {:?}", children());
}

/// Runs 60 pages, page 10 with `marker`, 8 in flight over 2 workers, and
/// checks what one misbehaving worker may cost: the URLs it had in flight
/// (page 10 among them, at most its 4 slots), each `panicked` with a
/// message containing `says`; every page from 20 on is fetched, by the
/// other worker and a replacement; no child is left. Returns the outcomes
/// and how long the run took.
fn one_bad_worker(marker: &str, options: &Options, says: &str) -> (Vec<Outcome>, Duration) {
    let srv = server(20);
    let mut urls = srv.page_urls(60);
    urls[10] = marked(&srv, 10, marker);
    let started = Instant::now();
    let outcomes = model().run(&urls, options, &mut |_| {}, &CancelToken::new());
    let took = started.elapsed();
    assert_one_each(60, &outcomes);
    let lost = lost_to_a_worker(&outcomes, says);
    assert!(lost.iter().any(|o| o.index == 10), "{lost:?}");
    assert!(lost.len() <= 4, "{} lost", lost.len());
    assert!(outcomes[20..].iter().all(Outcome::is_ok), "the run went on");
    assert!(children().is_empty(), "left behind: {:?}", children());
    (outcomes, took)
}

#[test]
fn a_worker_that_writes_garbage_is_killed_and_replaced() {
    let _turn = one_at_a_time();
    let says = "wrote a line that is not an outcome";
    let (outcomes, _) = one_bad_worker(faults::GARBAGE, &options().build().unwrap(), says);
    assert!(message(&outcomes[10]).contains("this is not an outcome"));
}

#[test]
fn a_worker_that_dies_mid_line_costs_its_urls_only() {
    let _turn = one_at_a_time();
    let says = "died mid-line (signal: 6 (SIGABRT)";
    one_bad_worker(faults::HALF_LINE, &options().build().unwrap(), says);
}

#[test]
fn a_worker_that_hangs_is_killed_once_its_urls_are_overdue() {
    let _turn = one_at_a_time();
    // No URL may take longer than 300 ms (one attempt): the worker's
    // patience is that plus a 2 s grace.
    let options = options().request_timeout(Duration::from_millis(300));
    let says = "stopped answering (nothing for 2.3s) (killed)";
    let (_, took) = one_bad_worker(faults::HANG, &options.build().unwrap(), says);
    assert!(took < Duration::from_secs(8), "the run took {took:?}");
}

#[test]
fn a_hung_worker_holds_the_run_no_longer_than_its_deadline() {
    let _turn = one_at_a_time();
    let srv = server(20);
    let mut urls = srv.page_urls(60);
    urls[10] = marked(&srv, 10, faults::HANG);
    let deadline = Duration::from_secs(1);
    let opts = options()
        .request_timeout(Duration::from_secs(120))
        .deadline(Some(deadline))
        .build()
        .unwrap();
    let started = Instant::now();
    let outcomes = model().run(&urls, &opts, &mut |_| {}, &CancelToken::new());
    let took = started.elapsed();
    assert_one_each(60, &outcomes);
    // The deadline, plus the 2 s grace, plus slack: not the 120 s timeout.
    assert!(took < deadline + Duration::from_secs(5), "took {took:?}");
    assert_eq!(outcomes[10].error_kind(), Some(ErrorKind::Deadline));
    let unfinished = outcomes.iter().filter(|o| !o.is_ok());
    assert!(unfinished.count() <= 4, "only the hung worker's URLs");
    assert!(children().is_empty(), "left behind: {:?}", children());
}

#[test]
fn a_program_that_is_not_a_worker_costs_every_url_not_the_run() {
    let _turn = one_at_a_time();
    let srv = server(0);
    let urls = srv.page_urls(30);
    let opts = options().build().unwrap();
    // Exits at once without a word: three such starts in a row, and the
    // pool stops trying.
    let silent = Processes::new("/bin/true".into()).processes(2);
    let outcomes = silent.run(&urls, &opts, &mut |_| {}, &CancelToken::new());
    assert_one_each(30, &outcomes);
    for o in &outcomes {
        assert_eq!(o.error_kind(), Some(ErrorKind::Panicked), "{:?}", o.result);
        assert!(
            message(o).contains("died (exit status: 0)"),
            "{}",
            message(o)
        );
    }
    let missing = Processes::new("/nonexistent/fetch-processes-worker".into());
    let outcomes = missing.run(&urls, &opts, &mut |_| {}, &CancelToken::new());
    assert_one_each(30, &outcomes);
    for o in &outcomes {
        assert!(message(o).contains("cannot start worker process"), "{o:?}");
    }
    assert_eq!(srv.stats().total_requests, 0);
    assert!(children().is_empty(), "left behind: {:?}", children());
}

#[test]
fn the_test_worker_crashes_on_the_conformance_suites_marker() {
    assert_eq!(faults::CRASH, conformance::CRASH_MARKER);
}
