//! `fetchlab`: which concurrency model should I use to fetch many URLs?
//!
//! - `fetchlab` (or `fetchlab compare`): runs every model on the same
//!   workload against an in-process mock server and prints a table.
//! - `fetchlab run`: fetches a real URL list with one model, one JSON line
//!   per URL.
//! - `fetchlab enqueue`, `worker`, `results`: many workers share one URL
//!   list on Redis Streams (see `queue.rs`).
//! - `fetchlab mock`: runs the mock server in the foreground.
//! - `fetchlab lessons`: runs the article's mistakes beside their fixes and
//!   prints what the server and the runtime observed.

mod compare;
mod handoff;
mod lessons;
mod mock;
mod queue;
mod resume;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "fetchlab",
    version,
    about = "Compare concurrency models for fetching many URLs",
    long_about = "Compare concurrency models for fetching many URLs.\n\n\
        With no subcommand, runs `compare` on the default workload: every model \
        fetches the same pages from an in-process mock server on 127.0.0.1.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    compare: compare::CompareArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run every model on the same workload against a local mock server and print a table.
    Compare(compare::CompareArgs),
    /// Fetch a list of URLs with one model; one JSON line per URL.
    #[command(after_long_help = run::AFTER_HELP)]
    Run(run::RunArgs),
    /// Add a URL list to a job's Redis stream (again: adds nothing twice).
    Enqueue(queue::EnqueueArgs),
    /// Fetch a job's URLs from its Redis stream with one model, alongside other workers.
    #[command(name = "worker")]
    QueueWorker(queue::WorkerArgs),
    /// Print a job's results as `run`'s JSON lines, in input order, and a status line.
    Results(queue::ResultsArgs),
    /// Run the mock server in the foreground and print its base URL.
    Mock(mock::MockArgs),
    /// List the available models, one name per line (for scripts).
    Models,
    /// One worker process of the `processes` model: jobs on stdin, outcomes on stdout.
    #[command(hide = true, name = "process-worker")]
    Worker,
    /// Run the article's mistakes beside their fixes against a local mock server; print a table.
    Lessons(lessons::LessonsArgs),
    /// One worker process of `lessons processes-vs-threads-vs-tasks`.
    #[command(hide = true)]
    LessonWorker(lessons::WorkerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let done = |()| ExitCode::SUCCESS;
    let result = match cli.command {
        None => compare::compare(&cli.compare).map(done),
        Some(Command::Compare(args)) => compare::compare(&args).map(done),
        // 0, or 128 + the signal that stopped the run.
        Some(Command::Run(args)) => run::run(&args),
        Some(Command::Enqueue(args)) => queue::enqueue(&args),
        Some(Command::QueueWorker(args)) => queue::worker(&args),
        Some(Command::Results(args)) => queue::results(&args),
        Some(Command::Mock(args)) => mock::mock(&args).map(done),
        Some(Command::Models) => {
            fetchlab::models::names()
                .iter()
                .for_each(|n| println!("{n}"));
            Ok(ExitCode::SUCCESS)
        }
        // The processes model starts this program again with `process-worker`.
        Some(Command::Worker) => Ok(fetch_processes::worker_main()),
        Some(Command::Lessons(args)) => lessons::lessons(&args),
        Some(Command::LessonWorker(args)) => lessons::worker(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("fetchlab: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
