//! The corpus check of the CPU stage: fetch-core's streaming parse against
//! the DOM parse it replaced, on every HTML file given (or listed, one path
//! per line, in a file given as `@LIST`). Prints each page where the two
//! differ in title or link count, then the totals and the time each parse
//! took over the whole corpus (three passes, in one process).
//!
//!   cargo run --release -p fetchlab-benches --example parse-corpus -- FILE... | @LIST
//!
//! `scripts/parse-corpus` installs a corpus nobody here wrote (the HTML
//! documentation Debian ships) and runs this on it. Exit status 1 if any
//! page differs, 2 on a usage error.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use fetch_core::parse::parse_html;
use fetchlab_benches::dom_parse;

fn main() -> ExitCode {
    let mut paths = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.strip_prefix('@') {
            Some(list) => match std::fs::read_to_string(list) {
                Ok(text) => paths.extend(text.lines().filter(|l| !l.is_empty()).map(String::from)),
                Err(e) => {
                    eprintln!("parse-corpus: cannot read the list {list}: {e}");
                    return ExitCode::from(2);
                }
            },
            None => paths.push(arg),
        }
    }
    if paths.is_empty() {
        eprintln!("usage: parse-corpus FILE... | @LIST");
        return ExitCode::from(2);
    }
    let mut pages = Vec::new();
    for path in paths {
        match std::fs::read(&path) {
            Ok(body) => pages.push((path, body)),
            Err(e) => eprintln!("parse-corpus: skipped {path}: {e}"),
        }
    }
    let mut differ = 0;
    for (path, body) in &pages {
        let (stream, dom) = (parse_html(body), dom_parse(body));
        if stream != dom {
            differ += 1;
            println!("differs: {path}\n  stream {stream:?}\n  dom    {dom:?}");
        }
    }
    let bytes: usize = pages.iter().map(|(_, b)| b.len()).sum();
    println!(
        "{} pages ({:.1} MiB): {differ} differ in title or link count",
        pages.len(),
        bytes as f64 / (1 << 20) as f64
    );
    let time = |parse: fn(&[u8]) -> (Option<String>, usize)| {
        let started = Instant::now();
        for _ in 0..3 {
            for (_, body) in &pages {
                std::hint::black_box(parse(body));
            }
        }
        started.elapsed()
    };
    let (dom, stream) = (time(dom_parse), time(parse_html));
    let secs = Duration::as_secs_f64;
    println!(
        "three passes: dom {:.2} s, stream {:.2} s ({:.1} times faster)",
        secs(&dom),
        secs(&stream),
        secs(&dom) / secs(&stream)
    );
    if differ == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
