//! `fetchlab lessons`: the mistakes of the article fetchlab grew from, each
//! run beside its fix against a mock server on 127.0.0.1, in one table.
//! The lessons themselves are the `lessons` crate (crates/lessons): one file
//! each, mistake and fix side by side.
//!
//! `fetchlab lesson-worker URL...` (hidden) is the worker process that
//! `processes-vs-threads-vs-tasks` starts C of: this binary spawns itself,
//! so the lesson needs no second executable.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use clap::builder::{PossibleValue, PossibleValuesParser};

#[derive(Args, Debug)]
pub struct LessonsArgs {
    /// Lessons to run, in the order given; all ten when none is named.
    #[arg(value_name = "NAME", value_parser = lesson_names())]
    names: Vec<String>,
    /// Print each lesson's name and what it shows, one per line, and exit.
    #[arg(long, conflicts_with = "names")]
    list: bool,
}

/// The names clap accepts: an unknown one is a usage error (exit 2) that
/// lists these.
fn lesson_names() -> PossibleValuesParser {
    PossibleValuesParser::new(
        ::lessons::all()
            .iter()
            .map(|lesson| PossibleValue::new(lesson.name).help(lesson.summary)),
    )
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The URLs this worker fetches.
    urls: Vec<String>,
}

pub fn lessons(args: &LessonsArgs) -> Result<ExitCode> {
    if args.list {
        let width = ::lessons::all()
            .iter()
            .map(|l| l.name.len())
            .max()
            .unwrap_or(0);
        let mut out = io::stdout().lock();
        for lesson in ::lessons::all() {
            writeln!(out, "{:width$}  {}", lesson.name, lesson.summary)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let chosen: Vec<&::lessons::Lesson> = if args.names.is_empty() {
        ::lessons::all().iter().collect()
    } else {
        // clap has checked every name against the list already.
        args.names
            .iter()
            .filter_map(|name| ::lessons::by_name(name))
            .collect()
    };

    let exe = std::env::current_exe().context("finding this executable, to start workers")?;
    let settings = ::lessons::Settings {
        worker: Some(::lessons::Worker::new(exe).arg("lesson-worker")),
        ..::lessons::Settings::default()
    };

    let mut rows = Vec::new();
    let mut failed = false;
    for (i, lesson) in chosen.iter().enumerate() {
        eprintln!("[{}/{}] {}", i + 1, chosen.len(), lesson.name);
        let row = match (lesson.run)(&settings) {
            Ok(report) => Row::from_report(lesson.name, report),
            Err(err) => {
                failed = true;
                Row::error(lesson.name, &err.to_string())
            }
        };
        rows.push(row);
    }
    print_table(&mut io::stdout().lock(), &rows)?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub fn worker(args: WorkerArgs) -> Result<ExitCode> {
    ::lessons::processes_vs_threads_vs_tasks::worker_main(args.urls)
        .map_err(|e| anyhow::anyhow!(e))
        .context("lesson worker")?;
    Ok(ExitCode::SUCCESS)
}

struct Row {
    name: &'static str,
    mistake: String,
    fix: String,
    verdict: String,
}

impl Row {
    fn from_report(name: &'static str, report: ::lessons::Report) -> Row {
        let verdict = if report.shown {
            report.verdict
        } else {
            // A measurement, not a failure of fetchlab: say so, show the numbers.
            format!("NOT REPRODUCED in this run: {}", report.verdict)
        };
        Row {
            name,
            mistake: report.mistake,
            fix: report.fix,
            verdict,
        }
    }

    fn error(name: &'static str, err: &str) -> Row {
        Row {
            name,
            mistake: format!("error: {err}"),
            fix: String::new(),
            verdict: format!("could not run: {err}"),
        }
    }
}

/// The table (lesson, what the mistake measured, what the fix measured),
/// then one verdict line per lesson. Written, not printed: a closed pipe
/// (`| head`) is an error to report, not a panic.
fn print_table(out: &mut impl Write, rows: &[Row]) -> io::Result<()> {
    let width = |header: &str, cell: fn(&Row) -> &str| {
        rows.iter()
            .map(|r| cell(r).chars().count())
            .chain([header.len()])
            .max()
            .unwrap_or(0)
    };
    let name_w = width("lesson", |r| r.name);
    let mistake_w = width("mistake", |r| &r.mistake);
    writeln!(out, "{:name_w$}  {:mistake_w$}  fix", "lesson", "mistake")?;
    for row in rows {
        writeln!(
            out,
            "{:name_w$}  {:mistake_w$}  {}",
            row.name, row.mistake, row.fix
        )?;
    }
    writeln!(out)?;
    for row in rows {
        writeln!(out, "{}: {}", row.name, row.verdict)?;
    }
    Ok(())
}
