//! `fetch-processes-worker`: one worker process of the processes model, on
//! its own. The parent starts it with its stdin and stdout piped (see
//! `fetch_processes::worker_main`); run by hand, it reads the setup line and
//! then one job per line from stdin.

fn main() -> std::process::ExitCode {
    fetch_processes::worker_main()
}
