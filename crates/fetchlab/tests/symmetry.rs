//! The model crates stay siblings: every registered model's `src/lib.rs` has
//! the same `//!` header sections in the same order and uses the same names
//! for the same ideas, so that `diff` of two of them shows the model and
//! nothing else. jimblandy/context-switch's sibling crates drifted apart
//! (one still printed the other's usage text) because nothing checked them;
//! this test is that check. The names are the table in fetch-core's
//! `lib.rs`.

use std::path::PathBuf;

/// The header sections every model crate has, in this order. A crate may add
/// sections after them (async-std's status and migration table).
const SECTIONS: [&str; 4] = [
    "# How it works",
    "# When to choose this",
    "# Copying this crate",
    "# Tests and benchmark",
];

/// Names every model crate uses (fetch-core's table).
const SHARED: [&str; 4] = [
    "fn fetch_all(",
    "Dispatch::new(",
    "dispatch.finish(&run)",
    "impl Model for ",
];

/// Names of the ideas a model with more than one request in flight has:
/// every model but the sequential one, which has no limit to keep and no
/// slots to fill (its loop ends when `next_url` has no more).
const CONCURRENT: [&str; 2] = ["max_in_flight", "exhausted"];
const ONE_AT_A_TIME: [&str; 1] = ["sequential"];

/// What an async model adds: its runtime's side of the per-URL path, and its
/// client adapter.
const ASYNC: [&str; 5] = [
    "impl AsyncRuntime for Runtime",
    "fetch_one(",
    "fn attempt(",
    "fn map_error(",
    "fn build_client(",
];

/// What a blocking model adds: the per-URL path's blocking flavour, and the
/// guard that makes a cancel interrupt requests in flight.
const BLOCKING: [&str; 2] = ["fetch_one_blocking(", "shut_down_on_cancel(&run)"];

/// What a model that runs another model in worker processes adds instead
/// (it is neither: its waiting happens in its workers, whose per-URL path is
/// fetch-core's): it starts the processes, a guard kills and reaps every
/// child however the run ends, a cancel reaches the children, and it
/// promises that a crash costs one worker's URLs.
const IN_PROCESSES: [&str; 4] = [
    "Command::new(",
    "impl Drop for ",
    "on_cancel(",
    "fn isolates_crashes(",
];

/// What an event loop written by hand adds (mio): fetch-core's per-URL path
/// as a sans-IO state machine it drives (`machine.rs`), its own client
/// adapter, and a cancel hook that wakes its poll.
const HAND_DRIVEN: [&str; 5] = [
    "UrlMachine::start(",
    "fn attempt(",
    "fn map_error(",
    "fn build_client(",
    "on_cancel(",
];

/// The per-URL ritual lives in fetch-core (`fetch.rs`); a model that writes
/// its own copy again has drifted. And names an earlier version used for
/// ideas that now have one name.
const NOT_IN_A_MODEL: [&str; 9] = [
    "catch_unwind",
    "has_cpu_stage",
    "async fn stopped(",
    "Outcome {",
    "fn url_task(",
    "fn fetch_page(",
    "fn fetch_body(",
    "input_left",
    "input_done",
];

/// What is wrong with one model crate's teaching file, if anything.
fn problems(model: &str, source: &str) -> Vec<String> {
    let mut found = Vec::new();
    let header: Vec<&str> = source
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| l.trim_start_matches("//!").trim())
        .collect();
    match header.first() {
        Some(first) if !first.is_empty() && !first.starts_with('#') => {}
        _ => found.push(format!(
            "{model}: the header does not open with a summary line"
        )),
    }
    let mut at = 0;
    for section in SECTIONS {
        match header[at..].iter().position(|l| *l == section) {
            Some(i) => at += i + 1,
            None => found.push(format!(
                "{model}: no `//! {section}` section (after the ones before it)"
            )),
        }
    }
    // Names are looked for in the code, not in comments that mention them.
    let code: String = source
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let source = code.as_str();
    let is_async = source.contains("impl AsyncRuntime for");
    let concurrent = if ONE_AT_A_TIME.contains(&model) {
        &[][..]
    } else {
        &CONCURRENT[..]
    };
    let kind = if is_async {
        &ASYNC[..]
    } else if source.contains("UrlMachine::start(") {
        &HAND_DRIVEN[..]
    } else if source.contains("Command::new(") {
        &IN_PROCESSES[..]
    } else {
        &BLOCKING[..]
    };
    let required = SHARED.iter().chain(concurrent).chain(kind);
    for name in required {
        if !source.contains(name) {
            found.push(format!("{model}: does not use `{name}`"));
        }
    }
    for name in NOT_IN_A_MODEL {
        if source.contains(name) {
            found.push(format!(
                "{model}: has `{name}`, which belongs to fetch-core"
            ));
        }
    }
    found
}

fn crates_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The crate a model lives in: `fetch-{model}`, except for a model that is
/// another one with a different parameter (`per-core` is `local` with one
/// loop per core).
fn crate_of(model: &str) -> &str {
    match model {
        "per-core" => "local",
        other => other,
    }
}

#[test]
fn every_model_crate_has_the_same_sections_and_names() {
    let mut all = Vec::new();
    for model in fetchlab::models::names() {
        let path = crates_dir().join(format!("fetch-{}/src/lib.rs", crate_of(model)));
        let source = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{model}: cannot read {}: {e}", path.display()));
        all.extend(problems(model, &source));
    }
    assert!(all.is_empty(), "the siblings drifted:\n{}", all.join("\n"));
}

#[test]
fn the_check_catches_drift() {
    let good = "//! One line.\n//!\n//! # How it works\n//! # When to choose this\n\
        //! # Copying this crate\n//! # Tests and benchmark\n//! # Status\n\n\
        pub fn fetch_all(max_in_flight) { Dispatch::new( exhausted dispatch.finish(&run) \
        fetch_one_blocking( shut_down_on_cancel(&run) }\nimpl Model for X {}\n";
    assert_eq!(problems("good", good), Vec::<String>::new());

    let swapped = good.replace("# When to choose this", "# Tmp").replace(
        "# Copying this crate",
        "# Copying this crate\n//! # When to choose this",
    );
    let swapped = swapped.replace("# Tmp", "# Elsewhere");
    assert_eq!(problems("swapped", &swapped).len(), 1, "{swapped}");

    let renamed = good.replace("exhausted", "input_done");
    assert_eq!(problems("renamed", &renamed).len(), 2);
    // A name in a comment is no use of it.
    let commented = good.replace("exhausted", "\n// exhausted\n");
    assert_eq!(problems("commented", &commented).len(), 1);

    let ritual = format!("{good}\nfn x() {{ std::panic::catch_unwind(|| ()); }}\n");
    assert_eq!(problems("ritual", &ritual).len(), 1);

    let async_without_adapter = good.replace(
        "fetch_one_blocking( shut_down_on_cancel(&run)",
        "impl AsyncRuntime for Runtime fetch_one(",
    );
    assert_eq!(problems("async", &async_without_adapter).len(), 3);

    let processes = good.replace(
        "fetch_one_blocking( shut_down_on_cancel(&run)",
        "Command::new( on_cancel( fn isolates_crashes( }\nimpl Drop for Pool {",
    );
    assert_eq!(problems("processes", &processes), Vec::<String>::new());
    let no_guard = processes.replace("impl Drop for Pool", "impl Pool");
    assert_eq!(problems("no guard", &no_guard).len(), 1);

    let hand_driven = good.replace(
        "fetch_one_blocking( shut_down_on_cancel(&run)",
        "UrlMachine::start( fn attempt( fn map_error( fn build_client( on_cancel(",
    );
    assert_eq!(problems("hand-driven", &hand_driven), Vec::<String>::new());
    let unmapped = hand_driven.replace("fn map_error(", "fn kinds(");
    assert_eq!(problems("unmapped", &unmapped).len(), 1);
}
