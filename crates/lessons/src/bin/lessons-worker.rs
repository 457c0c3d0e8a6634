//! The worker process of the `processes-vs-threads-vs-tasks` lesson, for
//! the lessons crate's own tests: fetches the URLs given as arguments,
//! prints `fetched N`, and exits when its stdin closes. (`fetchlab
//! lesson-worker` is the same program inside the CLI.)

use std::process::ExitCode;

fn main() -> ExitCode {
    match lessons::processes_vs_threads_vs_tasks::worker_main(std::env::args().skip(1)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lessons-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
