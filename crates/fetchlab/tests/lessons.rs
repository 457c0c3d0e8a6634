//! `fetchlab lessons` as a user runs it: the list, one quick lesson, the
//! lesson that spawns this binary as its worker processes, and a name that
//! is not a lesson. Every run is bounded; the lessons' own numbers are
//! asserted in crates/lessons/tests.

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Far beyond what any of these takes (a second or two); only a hang gets here.
const PATIENCE: Duration = Duration::from_secs(60);

/// Runs `fetchlab ARGS`, killing it if it outlives `PATIENCE`.
fn fetchlab(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_fetchlab"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fetchlab");
    let pid = child.id();
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(PATIENCE) {
        Ok(output) => output.expect("wait for fetchlab"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("fetchlab {args:?} still running after {PATIENCE:?}");
        }
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn list_names_every_lesson_with_a_summary() {
    let output = fetchlab(&["lessons", "--list"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let expected: Vec<&str> = lessons::all().iter().map(|l| l.name).collect();
    assert_eq!(names, expected);
    for (line, lesson) in text.lines().zip(lessons::all()) {
        assert!(line.ends_with(lesson.summary), "{line:?}");
    }
}

#[test]
fn one_lesson_prints_its_row_and_verdict() {
    let output = fetchlab(&["lessons", "one-by-one"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("lesson"), "{text}");
    assert!(
        header.contains("mistake") && header.ends_with("fix"),
        "{text}"
    );
    let row = lines.next().unwrap_or_default();
    assert!(row.starts_with("one-by-one "), "{text}");
    // The mistake's count is exact: awaited one by one, one in flight.
    assert!(row.contains("max in flight 1 (C="), "{text}");
    assert!(text.contains("\none-by-one: awaited in a loop"), "{text}");
    assert!(!text.contains("NOT REPRODUCED"), "{text}");
    // Exactly one lesson ran.
    assert!(!text.contains("unawaited-future"), "{text}");
}

#[test]
fn the_process_lesson_starts_this_binary_as_its_workers() {
    let output = fetchlab(&["lessons", "processes-vs-threads-vs-tasks"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains(" processes: "), "{text}");
    assert!(!text.contains("error:"), "{text}");
}

#[test]
fn an_unknown_lesson_is_a_usage_error_listing_the_names() {
    let output = fetchlab(&["lessons", "one-by-one", "no-such-lesson"]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("no-such-lesson"), "{err}");
    for lesson in lessons::all() {
        assert!(err.contains(lesson.name), "{err} lacks {}", lesson.name);
    }
    // Nothing ran.
    assert!(stdout(&output).is_empty());
}
