//! The per-URL path's third flavour, for an event loop written by hand: a
//! state machine that does no I/O ("sans-IO"). The loop owns the sockets and
//! the clock; the machine owns the decisions.
//!
//! [`fetch_one_blocking`](crate::fetch_one_blocking) keeps its state on a
//! thread's stack, and [`fetch_one`](crate::fetch_one) in a future that the
//! compiler writes from an `async fn`. A loop with no runtime (the mio model)
//! has neither: it keeps one [`UrlMachine`] per URL in flight and calls it
//! when something happens to that URL. Each call returns the next [`Step`]:
//!
//! ```text
//! let (machine, step) = UrlMachine::start(&run, index, url);
//! // Step::Request { url, budget }: send one GET (no redirect followed),
//! //   answer with machine.on_answer(&run, result), or with
//! //   machine.on_timer(&run) once `budget` has passed without one;
//! // Step::Wait { until }: backoff, the host's turn, or another URL's fetch of
//! //   robots.txt (`robots.rs`); machine.on_timer(&run) at `until`;
//! // Step::Cpu(job): job.run() on a thread that may block; it is the outcome;
//! // Step::Done(outcome): the URL's record.
//! // Cancel or deadline while it waits on anything: machine.stop(&run).
//! ```
//!
//! The policy is the other flavours', called, not copied: retries and the
//! deadline through `retry::next_step` (the step of both retry loops),
//! redirects with [`Redirects`] inside one attempt's budget, the CPU stage
//! behind the one-slot-per-core cap, a panic in it caught as `panicked`, and
//! the record built as `fetch.rs` builds it, with the final URL the redirect
//! chain ended at. What the machine cannot do is catch a panic in the loop's
//! own code: a hand-written loop has no task to unwind, so a bug in its HTTP
//! parsing ends the run.

use std::ops::ControlFlow;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use url::Url;

use crate::fetch::{Answer, CPU_SLOTS, answered, no_answer, outcome, page};
use crate::response::Redirects;
use crate::robots::{self, Claim, Gate, Hops, Rules};
use crate::{ErrorKind, FetchError, Fetched, Options, Outcome, Run, retry};

/// What the loop must do next for one URL.
#[derive(Debug)]
pub enum Step {
    /// Send one GET to `url` and call [`UrlMachine::on_answer`] with the
    /// result (a non-2xx status as [`check_status`](crate::response::check_status)'s
    /// error), or [`UrlMachine::on_timer`] if `budget` passes first.
    Request { url: Url, budget: Duration },
    /// Back off, wait for the host's turn (`pace.rs`), or for another URL's
    /// fetch of robots.txt (`robots.rs`): call [`UrlMachine::on_timer`] at
    /// `until`.
    Wait { until: Instant },
    /// Run [`CpuJob::run`] off the loop; what it returns is the outcome.
    Cpu(CpuJob),
    /// The URL's record.
    Done(Outcome),
}

/// One URL's place in the per-URL path.
#[derive(Debug)]
pub struct UrlMachine {
    index: usize,
    url: Url,
    started: Instant,
    attempts: u32,
    /// When the last attempt started: its latency goes to the host's pace.
    attempt_started: Instant,
    state: State,
    /// robots.txt (`robots.rs`): the rules of the URL's origin once known,
    /// for its redirects; and while this machine fetches them for the run,
    /// its claim: its requests and attempts are robots.txt's then.
    rules: Option<Arc<Rules>>,
    claim: Option<Claim>,
}

#[derive(Debug)]
enum State {
    /// An attempt is out: its redirect chain so far, and its budget.
    Requesting {
        redirects: Redirects,
        since: Instant,
        budget: Duration,
    },
    /// Backing off before the next attempt, or waiting for the host's turn
    /// (a delay between requests to one host, AutoThrottle, a Retry-After).
    Waiting,
    /// Waiting for another URL's fetch of its origin's robots.txt: no event
    /// reaches a hand-written loop, so it asks again every `robots::POLL`.
    Admitting,
    /// The outcome or the CPU job has been handed out.
    Finished,
}

impl UrlMachine {
    /// A URL handed out by [`Dispatch::next_url`](crate::Dispatch::next_url),
    /// and its first step.
    pub fn start(run: &Run, index: usize, url: Url) -> (UrlMachine, Step) {
        let mut machine = UrlMachine {
            index,
            url,
            started: Instant::now(),
            attempts: 0,
            attempt_started: Instant::now(),
            state: State::Finished,
            rules: None,
            claim: None,
        };
        let step = machine.admit(run);
        (machine, step)
    }

    /// The answer to the last [`Step::Request`]: a redirect is followed
    /// within the attempt's budget; anything else ends the attempt.
    pub fn on_answer(&mut self, run: &Run, result: Result<Fetched, FetchError>) -> Step {
        let State::Requesting {
            redirects,
            since,
            budget,
        } = &mut self.state
        else {
            return self.unexpected();
        };
        if let Err(answer) = &result {
            match redirects.follow(answer) {
                Ok(false) => {}
                Ok(true) => {
                    let left = budget.saturating_sub(since.elapsed());
                    if left.is_zero() {
                        let budget = *budget;
                        return self.after_attempt(run, Err(no_answer(budget)));
                    }
                    let hops = Hops::page(run.options(), self.rules.as_deref());
                    if let Err(error) = hops.check(&self.url, redirects.url()) {
                        return self.after_attempt(run, Err(error));
                    }
                    let url = redirects.url().clone();
                    return Step::Request { url, budget: left };
                }
                Err(error) => return self.after_attempt(run, Err(error)),
            }
        }
        // The final answer: the chain ends, and its last URL goes with it.
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Requesting { redirects, .. } => {
                self.after_attempt(run, answered(result, redirects))
            }
            _ => self.unexpected(),
        }
    }

    /// The time of the last step has come: a request's budget ran out (a
    /// `timeout`, or `deadline` if the run's deadline cut it short), or a
    /// backoff is over and the next attempt starts.
    pub fn on_timer(&mut self, run: &Run) -> Step {
        match self.state {
            State::Requesting { budget, .. } => self.after_attempt(run, Err(no_answer(budget))),
            State::Waiting => self.next_attempt(run),
            State::Admitting => self.admit(run),
            State::Finished => self.unexpected(),
        }
    }

    /// The run was cancelled or passed its deadline while this URL waited:
    /// its record, with the run's reason.
    pub fn stop(self, run: &Run) -> Outcome {
        let reason = run
            .stop_reason()
            .unwrap_or_else(|| FetchError::new(ErrorKind::Cancelled, "run cancelled"));
        let attempts = self.url_attempts();
        outcome(self.index, self.url, attempts, self.started, Err(reason))
    }

    /// robots.txt first, when obeyed: the rules of the URL's origin, known,
    /// to fetch (the next attempts are robots.txt's), or being fetched by
    /// another URL of the run.
    fn admit(&mut self, run: &Run) -> Step {
        if !run.options().robots() {
            return self.next_attempt(run);
        }
        if let Some(stop) = run.stop_reason() {
            return self.done(Err(stop));
        }
        match run.robots().gate(&self.url) {
            Gate::Known(rules) => self.admitted(run, rules),
            Gate::Fetch(claim) => {
                self.claim = Some(claim);
                self.next_attempt(run)
            }
            Gate::Wait(_) => {
                self.state = State::Admitting;
                let until = Instant::now() + robots::POLL;
                Step::Wait { until }
            }
        }
    }

    /// The rules are known: the URL's first attempt, or its record.
    fn admitted(&mut self, run: &Run, rules: Arc<Rules>) -> Step {
        if let Err(disallowed) = rules.check(&self.url) {
            return self.done(Err(disallowed));
        }
        self.rules = Some(rules);
        self.next_attempt(run)
    }

    /// What the URL's record counts: robots.txt's attempts are no URL's.
    fn url_attempts(&self) -> u32 {
        if self.claim.is_some() {
            0
        } else {
            self.attempts
        }
    }

    fn next_attempt(&mut self, run: &Run) -> Step {
        // This URL, or its origin's robots.txt while this machine fetches it.
        let (target, hops) = match &self.claim {
            Some(claim) => (claim.url(), Hops::robots(run.options())),
            None => (&self.url, Hops::page(run.options(), None)),
        };
        // The host's turn first: until then, a wait, and the question again.
        match run.host_turn(target) {
            Ok(None) => {}
            Ok(Some(until)) => {
                self.state = State::Waiting;
                return Step::Wait { until };
            }
            Err(stop) => return self.done(Err(stop)),
        }
        let budget = match run.attempt_timeout() {
            Ok(budget) => budget,
            Err(stop) => return self.done(Err(stop)),
        };
        self.attempts += 1;
        self.attempt_started = Instant::now();
        // A retry starts again from the URL itself.
        let redirects = hops.start(target);
        let url = redirects.url().clone();
        self.state = State::Requesting {
            redirects,
            since: Instant::now(),
            budget,
        };
        Step::Request { url, budget }
    }

    fn after_attempt(&mut self, run: &Run, result: Result<Answer, FetchError>) -> Step {
        let latency = self.attempt_started.elapsed();
        let target = self.claim.as_ref().map_or(&self.url, Claim::url);
        match retry::next_step(run, target, self.attempts, latency, result) {
            ControlFlow::Continue(delay) => {
                self.state = State::Waiting;
                Step::Wait {
                    until: Instant::now() + delay,
                }
            }
            ControlFlow::Break(fetched) if self.claim.is_some() => {
                self.robots_fetched(run, fetched)
            }
            ControlFlow::Break(Err(error)) => self.done(Err(error)),
            // The same rule as the other flavours: without a CPU stage the
            // record is built here, a hop to another thread would cost more
            // than the work.
            ControlFlow::Break(Ok(answer)) if !run.options().has_cpu_stage() => {
                let page = page(answer, run.options());
                self.done(page)
            }
            ControlFlow::Break(Ok(answer)) => {
                self.state = State::Finished;
                Step::Cpu(CpuJob {
                    index: self.index,
                    url: self.url.clone(),
                    attempts: self.attempts,
                    started: self.started,
                    answer,
                    options: run.shared_options(),
                })
            }
        }
    }

    /// The end of this machine's fetch of robots.txt: the rules, for the
    /// whole run, and the URL's own first attempt (or its record).
    fn robots_fetched(&mut self, run: &Run, fetched: Result<Answer, FetchError>) -> Step {
        let Some(claim) = self.claim.take() else {
            return self.unexpected();
        };
        self.attempts = 0;
        match run.robots().settle(claim, fetched) {
            Ok(rules) => self.admitted(run, rules),
            Err(stop) => self.done(Err(stop)),
        }
    }

    fn done(&mut self, result: Result<crate::Page, FetchError>) -> Step {
        self.state = State::Finished;
        let attempts = self.url_attempts();
        // A fetch of robots.txt cut short (the run's stop) is given back.
        self.claim = None;
        // The machine lives on (the loop drops it): the record gets a copy.
        Step::Done(outcome(
            self.index,
            self.url.clone(),
            attempts,
            self.started,
            result,
        ))
    }

    /// A call with no step waiting for it: a bug in the loop. A debug build
    /// stops here; a release build ends the URL rather than leave it hanging.
    fn unexpected(&mut self) -> Step {
        debug_assert!(false, "URL {}: an event with no step waiting", self.index);
        self.done(Err(FetchError::new(
            ErrorKind::Cancelled,
            "the loop lost this URL's step",
        )))
    }
}

/// The CPU stage of one page, to run on a thread that may block (never the
/// loop's: a page that takes 5 ms to parse would stall every socket for
/// 5 ms). It waits for one of the per-core slots every model shares.
#[derive(Debug)]
pub struct CpuJob {
    index: usize,
    url: Url,
    attempts: u32,
    started: Instant,
    answer: Answer,
    options: Arc<Options>,
}

impl CpuJob {
    /// Parses (and saves) the page and returns the URL's record; a panic in
    /// the CPU stage is this URL's `panicked` record, never the thread's end.
    pub fn run(self) -> Outcome {
        let result = {
            let _slot = CPU_SLOTS.acquire_blocking();
            // AssertUnwindSafe: nothing the parse touched is used after a panic.
            panic::catch_unwind(AssertUnwindSafe(|| page(self.answer, &self.options)))
                .unwrap_or_else(|panic| Err(FetchError::from_panic(panic.as_ref())))
        };
        outcome(self.index, self.url, self.attempts, self.started, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(url: &str) -> Url {
        crate::check_url(url).unwrap()
    }
    use crate::CancelToken;
    use crate::response::check_status;

    fn options() -> crate::OptionsBuilder {
        Options::builder()
            .retries(2)
            .backoff(Duration::from_millis(1), Duration::from_millis(1))
    }

    fn ok_page() -> Result<Fetched, FetchError> {
        Ok(Fetched {
            status: 200,
            body: b"<title>T</title><a href=x>x</a>".to_vec(),
            content_type: None,
        })
    }

    /// A loop in miniature: answers each request with `server`, fires each
    /// timer at once, runs CPU jobs in place. Returns the outcome and the
    /// paths requested.
    fn drive(
        run: &Run,
        url: &str,
        mut server: impl FnMut(&Url) -> Option<Result<Fetched, FetchError>>,
    ) -> (Outcome, Vec<String>) {
        let mut requested = Vec::new();
        let (mut machine, mut step) = UrlMachine::start(run, 0, u(url));
        loop {
            step = match step {
                Step::Request { url, .. } => {
                    requested.push(url.path().to_string());
                    match server(&url) {
                        Some(answer) => machine.on_answer(run, answer),
                        // No answer: the budget runs out.
                        None => machine.on_timer(run),
                    }
                }
                Step::Wait { .. } => machine.on_timer(run),
                Step::Cpu(job) => return (job.run(), requested),
                Step::Done(outcome) => return (outcome, requested),
            }
        }
    }

    #[test]
    fn retries_are_counted_and_end_with_the_last_error() {
        let (opts, cancel) = (options().build().unwrap(), CancelToken::new());
        let run = Run::new(&opts, &cancel);
        let mut calls = 0;
        let (o, _) = drive(&run, "http://h/", |_| {
            calls += 1;
            Some(if calls == 1 {
                Err(FetchError::http_status(503, None))
            } else {
                ok_page()
            })
        });
        assert_eq!((o.attempts, o.is_ok()), (2, true));
        let page = o.result.unwrap();
        assert_eq!((page.title.as_deref(), page.links), (Some("T"), 1));

        let (o, requested) = drive(&run, "http://h/", |_| None);
        assert_eq!((o.attempts, o.error_kind()), (3, Some(ErrorKind::Timeout)));
        assert_eq!(requested.len(), 3);
        let (o, _) = drive(&run, "http://h/", |_| {
            Some(Err(check_status(404, None, None).unwrap_err()))
        });
        assert_eq!(
            (o.attempts, o.error_kind()),
            (1, Some(ErrorKind::HttpStatus))
        );
    }

    #[test]
    fn redirects_are_followed_within_one_attempt() {
        let (opts, cancel) = (
            options().max_redirects(3).build().unwrap(),
            CancelToken::new(),
        );
        let run = Run::new(&opts, &cancel);
        let redirect = |to: &str| Some(Err(check_status(302, None, Some(to)).unwrap_err()));
        let (o, requested) = drive(&run, "http://h/a", |url| match url.path() {
            "/a" => redirect("b"),
            "/b" => redirect("/c"),
            _ => Some(ok_page()),
        });
        assert_eq!((o.attempts, o.is_ok()), (1, true));
        assert_eq!(requested, ["/a", "/b", "/c"]);
        assert_eq!(o.result.unwrap().final_url, "http://h/c");
        // A 404 at the end of a chain says where it was; a redirect past the
        // limit has no final answer.
        let (o, _) = drive(&run, "http://h/a", |url| match url.path() {
            "/a" => redirect("/gone"),
            _ => Some(Err(check_status(404, None, None).unwrap_err())),
        });
        assert_eq!(o.result.unwrap_err().final_url(), Some("http://h/gone"));

        // Past the limit: `redirect`, not retried.
        let (o, requested) = drive(&run, "http://h/loop", |_| redirect("/loop"));
        assert_eq!((o.attempts, o.error_kind()), (1, Some(ErrorKind::Redirect)));
        assert_eq!(requested.len(), 4);
        assert_eq!(o.result.unwrap_err().final_url(), None);

        // A retry starts again from the URL itself.
        let mut failed = false;
        let (o, requested) = drive(&run, "http://h/a", |url| match url.path() {
            "/a" => redirect("b"),
            _ if !failed => {
                failed = true;
                Some(Err(FetchError::http_status(503, None)))
            }
            _ => Some(ok_page()),
        });
        assert_eq!((o.attempts, o.is_ok()), (2, true));
        assert_eq!(requested, ["/a", "/b", "/a", "/b"]);
    }

    #[test]
    fn a_redirect_keeps_what_is_left_of_the_budget() {
        let opts = options()
            .request_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let cancel = CancelToken::new();
        let run = Run::new(&opts, &cancel);
        let (mut machine, step) = UrlMachine::start(&run, 0, u("http://h/a"));
        assert!(matches!(step, Step::Request { budget, .. } if budget == Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(20));
        let moved = check_status(301, None, Some("/b")).unwrap_err();
        match machine.on_answer(&run, Err(moved)) {
            Step::Request { url, budget } => {
                assert_eq!(url.path(), "/b");
                assert!(budget <= Duration::from_millis(4980), "{budget:?}");
            }
            other => panic!("expected the redirect's request, got {other:?}"),
        }
    }

    #[test]
    fn the_deadline_cuts_the_budget_and_ends_the_url() {
        let opts = options()
            .request_timeout(Duration::from_secs(30))
            .deadline(Some(Duration::from_millis(30)))
            .build()
            .unwrap();
        let cancel = CancelToken::new();
        let run = Run::new(&opts, &cancel);
        let (mut machine, step) = UrlMachine::start(&run, 0, u("http://h/"));
        let Step::Request { budget, .. } = step else {
            panic!("expected a request, got {step:?}")
        };
        assert!(budget <= Duration::from_millis(30), "{budget:?}");
        // The loop's timer fires when the budget is spent.
        std::thread::sleep(budget);
        let Step::Done(o) = machine.on_timer(&run) else {
            panic!("past the deadline the URL ends")
        };
        assert_eq!((o.attempts, o.error_kind()), (1, Some(ErrorKind::Deadline)));
    }

    #[test]
    fn a_stopped_run_ends_the_url_with_its_reason() {
        let (opts, cancel) = (options().build().unwrap(), CancelToken::new());
        let run = Run::new(&opts, &cancel);
        let (mut machine, _) = UrlMachine::start(&run, 4, u("http://h/"));
        let step = machine.on_answer(&run, Err(FetchError::new(ErrorKind::Connect, "refused")));
        assert!(matches!(step, Step::Wait { .. }), "{step:?}");
        cancel.cancel();
        let o = machine.stop(&run);
        assert_eq!((o.index, o.attempts), (4, 1));
        assert_eq!(o.error_kind(), Some(ErrorKind::Cancelled));
        // Cancelled before the first attempt: none is made.
        let (_, step) = UrlMachine::start(&run, 5, u("http://h/"));
        let Step::Done(o) = step else {
            panic!("a cancelled run starts no request")
        };
        assert_eq!(
            (o.attempts, o.error_kind()),
            (0, Some(ErrorKind::Cancelled))
        );
    }

    #[cfg(feature = "fault-injection")]
    #[test]
    fn a_panic_in_the_cpu_job_is_this_urls_record() {
        let opts = options()
            .panic_marker(Some("<title>T".into()))
            .build()
            .unwrap();
        let cancel = CancelToken::new();
        let run = Run::new(&opts, &cancel);
        let (o, _) = drive(&run, "http://h/", |_| Some(ok_page()));
        assert_eq!((o.attempts, o.error_kind()), (1, Some(ErrorKind::Panicked)));
    }

    #[test]
    fn without_a_cpu_stage_the_record_is_built_in_place() {
        let opts = options().parse(false).build().unwrap();
        let cancel = CancelToken::new();
        let run = Run::new(&opts, &cancel);
        let (mut machine, _) = UrlMachine::start(&run, 0, u("http://h/"));
        let step = machine.on_answer(&run, ok_page());
        assert!(matches!(step, Step::Done(ref o) if o.is_ok()), "{step:?}");
    }
}
