//! The mistakes of the article fetchlab grew from, each beside its fix, and
//! both measured.
//!
//! The article taught asyncio scraping through its mistakes: the coroutine
//! that was never awaited, the blocking call inside a coroutine, `gather`
//! without `return_exceptions`, the request without a timeout. Rust has the
//! same mistakes, a few of its own (a `std` mutex held across `.await`,
//! `buffer_unordered` starving its futures), and a compiler that catches
//! some of them. Each lesson here is one file: a `//!` header (the point, the
//! symptom, why it happens in Rust, the fix, the canonical source), then
//! **the mistake** and **the fix** as a reader would write them (plain tokio,
//! reqwest, ureq and futures code, nothing of fetchlab's), then the code that
//! measures both.
//!
//! # How a lesson is measured
//! Each side runs against its own [`mock_server::MockServer`] on 127.0.0.1
//! port 0, so the counters start at zero, and the verdict is read from what
//! the server and the runtime observed: requests started, the maximum in
//! flight, requests never completed, tasks alive, timeouts the client
//! reported. Those are counts, and the tests assert them. Times are only
//! printed, and only as a ratio between the mistake and the fix of the same
//! run: a shared 2-core machine makes absolute times noise.
//!
//! Where a mistake can hang by design (a deadlock, a server that never
//! answers), a deadline catches it; every loop is bounded in count and time.
//!
//! # Running them
//! `fetchlab lessons` runs all ten and prints one table; `fetchlab lessons
//! NAME...` runs some; `fetchlab lessons --list` names them. From code:
//! [`all`], [`by_name`], then `(lesson.run)(&Settings::default())`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub mod blocking_the_reactor;
pub mod buffer_unordered_stall;
pub mod cpu_on_the_reactor;
pub mod gather_without_return_exceptions;
mod lab;
pub mod lock_across_await;
pub mod no_timeout;
pub mod one_by_one;
pub mod processes_vs_threads_vs_tasks;
pub mod unawaited_future;
pub mod unbounded_spawn;

/// Any failure to run a lesson: the server did not start, a runtime could
/// not be built, a worker process could not be spawned. A boxed error is
/// enough (mini-redis makes the same choice): nobody matches on the cause, it
/// is printed next to the lesson's name. The *mistakes'* failures are not
/// errors: they are what a lesson measures.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// The workload every lesson scales from. The defaults keep all ten under
/// ten seconds on a 2-core machine; lessons whose symptom needs a particular
/// ratio of times (a timeout shorter than some work) derive it from
/// `latency` and say how in their file.
#[derive(Clone, Debug)]
pub struct Settings {
    /// URLs per batch (lessons that need fewer take fewer).
    pub pages: u64,
    /// The concurrency the reader meant to have: permits, slots, workers.
    pub concurrency: usize,
    /// The mock server's latency for every page.
    pub latency: Duration,
    /// How to start one worker process for `processes-vs-threads-vs-tasks`;
    /// without it, that lesson returns an error.
    pub worker: Option<Worker>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            pages: 24,
            concurrency: 4,
            latency: Duration::from_millis(20),
            worker: None,
        }
    }
}

/// A program that runs [`processes_vs_threads_vs_tasks::worker_main`] with
/// the arguments it is given after `args`: the lessons crate's own
/// `lessons-worker` binary in its tests, `fetchlab lesson-worker` in the CLI.
/// A program path and arguments rather than a [`Command`], so that settings
/// can be cloned and printed.
#[derive(Clone, Debug)]
pub struct Worker {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl Worker {
    pub fn new(program: impl Into<PathBuf>) -> Worker {
        Worker {
            program: program.into(),
            args: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Worker {
        self.args.push(arg.into());
        self
    }

    /// A fresh command for one worker.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        command
    }
}

/// What a lesson prints: one cell per side, and the verdict. Each lesson
/// module also has a `measure` function returning its numbers as typed
/// fields, which is what the tests assert on.
#[derive(Clone, Debug)]
pub struct Report {
    /// What was measured for the mistake, e.g. "max in flight 1; 2.9x the fix's time".
    pub mistake: String,
    /// What was measured for the fix.
    pub fix: String,
    /// One sentence: what the numbers show.
    pub verdict: String,
    /// True when the mistake showed its symptom and the fix did not. False
    /// means this run did not reproduce the lesson (the verdict says how).
    pub shown: bool,
}

/// One lesson: its name on the command line, one line about it, and how to run it.
pub struct Lesson {
    /// The name `fetchlab lessons NAME` takes, e.g. `one-by-one`.
    pub name: &'static str,
    /// One line: the mistake, and what the counters show.
    pub summary: &'static str,
    /// Runs the mistake and the fix and reports both.
    pub run: fn(&Settings) -> Result<Report>,
}

impl std::fmt::Debug for Lesson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lesson").field("name", &self.name).finish()
    }
}

static LESSONS: [Lesson; 10] = [
    Lesson {
        name: "unawaited-future",
        summary: "a future called but never awaited sends nothing; a dropped JoinHandle still runs",
        run: unawaited_future::run,
    },
    Lesson {
        name: "blocking-the-reactor",
        summary: "a blocking HTTP call inside a task serialises every task: max in flight 1",
        run: blocking_the_reactor::run,
    },
    Lesson {
        name: "cpu-on-the-reactor",
        summary: "CPU work on the reactor thread: responses answered on time time out",
        run: cpu_on_the_reactor::run,
    },
    Lesson {
        name: "one-by-one",
        summary: "awaiting each URL in a loop: max in flight 1 instead of C",
        run: one_by_one::run,
    },
    Lesson {
        name: "unbounded-spawn",
        summary: "one task per URL up front, semaphore inside: N tasks alive instead of C",
        run: unbounded_spawn::run,
    },
    Lesson {
        name: "gather-without-return-exceptions",
        summary: "try_join_all with one failing URL: no outcomes, requests cut off",
        run: gather_without_return_exceptions::run,
    },
    Lesson {
        name: "no-timeout",
        summary: "a server that never answers holds its slot until the deadline",
        run: no_timeout::run,
    },
    Lesson {
        name: "buffer-unordered-stall",
        summary: "slow work in a buffer_unordered loop: answered requests time out (futures-rs#2387)",
        run: buffer_unordered_stall::run,
    },
    Lesson {
        name: "lock-across-await",
        summary: "a std Mutex guard held across .await on one thread: deadlock",
        run: lock_across_await::run,
    },
    Lesson {
        name: "processes-vs-threads-vs-tasks",
        summary: "resident memory per unit of concurrency: C processes, C threads, C tasks",
        run: processes_vs_threads_vs_tasks::run,
    },
];

/// Every lesson, in the order of the article (and of `fetchlab lessons`).
pub fn all() -> &'static [Lesson] {
    &LESSONS
}

/// The lesson called `name`, if there is one.
pub fn by_name(name: &str) -> Option<&'static Lesson> {
    LESSONS.iter().find(|lesson| lesson.name == name)
}
