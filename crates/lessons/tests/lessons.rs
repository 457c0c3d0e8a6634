//! Every lesson, run once against its own mock servers: the mistake shows
//! its symptom and the fix does not. The assertions are on counts (requests
//! the server saw, in flight at once, never completed; tasks alive; client
//! timeouts), with margins a busy 2-core machine cannot cross. No test
//! asserts a duration, except that a deadlock is caught within a wide bound.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use lessons::{Settings, Worker};

/// The lessons measure the machine (threads, timeouts, memory); two at once
/// would be each other's noise, so the tests take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn turn() -> MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next one may still run.
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn settings() -> Settings {
    Settings {
        worker: Some(Worker::new(env!("CARGO_BIN_EXE_lessons-worker"))),
        ..Settings::default()
    }
}

#[test]
fn unawaited_future_sends_nothing_and_a_detached_task_still_runs() {
    let _turn = turn();
    let m = lessons::unawaited_future::measure(&settings()).unwrap();
    assert_eq!((m.mistake_requests, m.mistake_outcomes), (0, 0), "{m:?}");
    assert_eq!(m.fix_requests, m.urls, "{m:?}");
    assert_eq!(m.fix_outcomes as u64, m.urls, "{m:?}");
    assert_eq!(m.detached_requests, 1, "{m:?}");
    assert!(m.shown());
}

#[test]
fn blocking_the_reactor_serialises_the_tasks() {
    let _turn = turn();
    let s = settings();
    let m = lessons::blocking_the_reactor::measure(&s).unwrap();
    assert_eq!(m.mistake.max_in_flight, 1, "{m:?}");
    assert!(
        (2..=s.concurrency as u64).contains(&m.fix.max_in_flight),
        "{m:?}"
    );
    assert_eq!(m.mistake.fetched as u64, s.pages, "{m:?}");
    assert_eq!(m.fix.fetched as u64, s.pages, "{m:?}");
    assert!(m.shown());
}

#[test]
fn cpu_on_the_reactor_times_out_answered_requests() {
    let _turn = turn();
    let s = settings();
    let m = lessons::cpu_on_the_reactor::measure(&s).unwrap();
    // The other C - 1 answers of each round arrive while its first page is
    // parsed, and time out (C - 1 per round, unless a stalled machine reads
    // some of them in the same turn as the first: at least one, then).
    assert!(m.mistake.timeouts >= 1, "{m:?}");
    // ... although the server answered every request it received.
    assert_eq!(m.mistake.unfinished, 0, "{m:?}");
    assert_eq!(m.fix.timeouts, 0, "{m:?}");
    assert_eq!(m.fix.parsed as u64, m.pages, "{m:?}");
    assert!(m.shown());
}

#[test]
fn one_by_one_has_one_request_in_flight() {
    let _turn = turn();
    let s = settings();
    let m = lessons::one_by_one::measure(&s).unwrap();
    assert_eq!(m.mistake.max_in_flight, 1, "{m:?}");
    assert!(
        (2..=s.concurrency as u64).contains(&m.fix.max_in_flight),
        "{m:?}"
    );
    assert!(m.shown());
}

#[test]
fn unbounded_spawn_keeps_a_task_per_url_alive() {
    let _turn = turn();
    let s = settings();
    let (n, c) = (s.pages as usize, s.concurrency);
    let m = lessons::unbounded_spawn::measure(&s).unwrap();
    // N tasks alive at once (see `Measured::shown` for the margin)...
    assert!(m.mistake.peak_tasks >= n - c, "{m:?}");
    // ...against C of ours plus hyper's connection tasks for the fix.
    assert!(
        m.fix.peak_tasks <= lessons::unbounded_spawn::fix_task_bound(c),
        "{m:?}"
    );
    // The server cannot tell them apart: both stay within C.
    assert!(m.mistake.max_in_flight <= c as u64, "{m:?}");
    assert!(m.fix.max_in_flight <= c as u64, "{m:?}");
    assert!(m.shown());
}

#[test]
fn gather_without_return_exceptions_loses_the_batch() {
    let _turn = turn();
    let m = lessons::gather_without_return_exceptions::measure(&settings()).unwrap();
    assert_eq!(m.mistake.outcomes, 0, "{m:?}");
    assert!(m.mistake.unfinished >= 1, "{m:?}");
    assert_eq!(m.fix.outcomes as u64, m.urls, "{m:?}");
    assert_eq!(m.fix.unfinished, 0, "{m:?}");
    assert!(m.shown());
}

#[test]
fn no_timeout_holds_the_slot_until_the_deadline() {
    let _turn = turn();
    let m = lessons::no_timeout::measure(&settings()).unwrap();
    assert_eq!(m.mistake.served_behind, 0, "{m:?}");
    assert!(!m.mistake.finished, "{m:?}");
    assert!(m.fix.finished, "{m:?}");
    assert_eq!(m.fix.served_behind, m.behind, "{m:?}");
    assert_eq!(m.fix.timeouts, 1, "{m:?}");
    assert!(m.shown());
}

#[test]
fn buffer_unordered_stall_times_out_answered_requests() {
    let _turn = turn();
    let s = settings();
    let m = lessons::buffer_unordered_stall::measure(&s).unwrap();
    // The C - 1 fetches buffered beside the first stored page, at least.
    assert!(m.mistake.timeouts >= s.concurrency - 1, "{m:?}");
    assert_eq!(m.mistake.unfinished, 0, "{m:?}");
    assert_eq!(m.fix.timeouts, 0, "{m:?}");
    assert_eq!(m.fix.stored as u64, m.pages, "{m:?}");
    assert!(m.shown());
}

#[test]
fn lock_across_await_deadlocks_and_the_deadline_catches_it() {
    let _turn = turn();
    let start = Instant::now();
    let m = lessons::lock_across_await::measure(&settings()).unwrap();
    // Both sides together are bounded by two deadlines; this bound is wide.
    assert!(start.elapsed() < Duration::from_secs(20), "{m:?}");
    assert!(!m.mistake.finished, "{m:?}");
    assert!(m.mistake.requests < m.urls, "{m:?}");
    assert!(m.fix.finished, "{m:?}");
    assert_eq!(m.fix.recorded as u64, m.urls, "{m:?}");
    assert!(m.shown());
}

#[test]
fn a_process_costs_more_than_a_thread_or_a_task() {
    let _turn = turn();
    let m = lessons::processes_vs_threads_vs_tasks::measure(&settings()).unwrap();
    for side in [&m.processes, &m.threads, &m.tasks] {
        assert_eq!(side.fetched as u64, m.pages, "{m:?}");
        assert_eq!(side.requests, m.pages, "{m:?}");
    }
    let per = |s: &lessons::processes_vs_threads_vs_tasks::Side| s.per_unit(m.units);
    assert!(per(&m.processes) > per(&m.threads), "{m:?}");
    assert!(per(&m.processes) > per(&m.tasks), "{m:?}");
    assert!(m.shown());
}

#[test]
fn the_process_lesson_without_a_worker_is_an_error() {
    let settings = Settings::default();
    assert!(lessons::processes_vs_threads_vs_tasks::measure(&settings).is_err());
}

#[test]
fn every_lesson_is_listed_once_and_found_by_name() {
    let names: Vec<_> = lessons::all().iter().map(|l| l.name).collect();
    assert_eq!(names.len(), 10);
    for name in &names {
        assert_eq!(lessons::by_name(name).map(|l| l.name), Some(*name));
        assert_eq!(
            names.iter().filter(|n| *n == name).count(),
            1,
            "{name} twice"
        );
    }
    assert!(lessons::by_name("no-such-lesson").is_none());
}

/// The header sections every lesson file has, in this order: the check that
/// keeps ten sibling files from drifting apart.
#[test]
fn every_lesson_file_opens_with_the_same_header() {
    const SECTIONS: [&str; 5] = [
        "**The point.**",
        "**The symptom.**",
        "**Why, in Rust.**",
        "**The fix.**",
        "**Sources.**",
    ];
    for lesson in lessons::all() {
        let file = format!(
            "{}/src/{}.rs",
            env!("CARGO_MANIFEST_DIR"),
            lesson.name.replace('-', "_")
        );
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            text.starts_with(&format!("//! # {}: ", lesson.name)),
            "{file} must open with `//! # {}: ...`",
            lesson.name
        );
        let header: String = text
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut from = 0;
        for section in SECTIONS {
            let at = header[from..]
                .find(section)
                .unwrap_or_else(|| panic!("{file}: no {section} after byte {from} of its header"));
            from += at + section.len();
        }
        for marker in ["pub async fn mistake(", "pub async fn fix("] {
            let has_async = text.contains(marker);
            let has_sync = text.contains(&marker.replace("async ", ""));
            if lesson.name != "processes-vs-threads-vs-tasks" {
                assert!(has_async || has_sync, "{file}: no {marker}");
            }
        }
    }
}
