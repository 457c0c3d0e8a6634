//! What every model needs around the fetch itself: the run's clock and
//! deadline, cancellation, the retry loop, and the collector that guarantees
//! one outcome per URL.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use event_listener::{Event, Listener};

use crate::input::{check_url, shown_url};
use crate::{ErrorKind, FetchError, Options, Outcome, Page, retry};

/// Stops a run: no new requests start, and unfinished URLs end `cancelled`.
///
/// Cheap to clone (clones share one flag). Blocking code waits on it with
/// [`CancelToken::wait_timeout`], async code with [`CancelToken::cancelled`],
/// so one token serves every model. A wait the token cannot wake (a thread
/// blocked reading a socket) registers a hook with
/// [`CancelToken::on_cancel`] that ends it from outside.
#[derive(Clone, Debug, Default)]
pub struct CancelToken {
    inner: Arc<CancelInner>,
}

#[derive(Debug, Default)]
struct CancelInner {
    cancelled: AtomicBool,
    event: Event,
    hooks: Mutex<Hooks>,
}

/// The hooks [`CancelToken::on_cancel`] registered, each with the id its
/// guard removes it by.
#[derive(Default)]
struct Hooks {
    next_id: u64,
    pending: Vec<(u64, Box<dyn FnOnce() + Send>)>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels the run; every waiter wakes up, and every hook registered
    /// with [`on_cancel`](Self::on_cancel) runs, once, on this thread.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        self.inner.event.notify(usize::MAX);
        // Taken out of the lock before they run: a hook may take a while
        // (shutting sockets down), and a guard dropped meanwhile on another
        // thread must not wait for it. A second cancel finds none left.
        let hooks = std::mem::take(&mut self.hooks().pending);
        for (_, hook) in hooks {
            hook();
        }
    }

    /// Runs `hook` when the token is cancelled, on the thread that cancels
    /// it, or at once on this thread if it already is; never more than once.
    /// Dropping the returned guard unregisters the hook, so a run registers
    /// one for as long as it lasts and a later cancel does not reach it.
    ///
    /// For waits that neither [`wait_timeout`](Self::wait_timeout) nor
    /// [`cancelled`](Self::cancelled) can end: the blocking models shut
    /// their client's sockets down from here, which wakes every thread
    /// blocked reading them. A hook should be quick and must not block on
    /// the run it cancels.
    #[must_use = "dropping the guard unregisters the hook at once"]
    pub fn on_cancel(&self, hook: impl FnOnce() + Send + 'static) -> OnCancel {
        let mut hooks = self.hooks();
        // Checked under the lock that `cancel` takes after setting the flag:
        // either this sees the flag, or `cancel` sees the hook. Never neither.
        if self.is_cancelled() {
            drop(hooks);
            hook();
            return OnCancel { token: None, id: 0 };
        }
        let id = hooks.next_id;
        hooks.next_id += 1;
        hooks.pending.push((id, Box::new(hook)));
        OnCancel {
            token: Some(self.clone()),
            id,
        }
    }

    fn hooks(&self) -> MutexGuard<'_, Hooks> {
        // A hook runs outside the lock, so a panic cannot poison it while a
        // list is half changed; a poisoned list is still a valid list.
        self.inner
            .hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Blocks for `timeout` or until cancelled; returns true if cancelled.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_cancelled() {
                return true;
            }
            // Listen first, then re-check: a cancel between the check and the
            // listen would otherwise be missed until the timeout.
            let listener = self.inner.event.listen();
            if self.is_cancelled() {
                return true;
            }
            if listener.wait_deadline(deadline).is_none() {
                return self.is_cancelled();
            }
        }
    }

    /// Completes when the token is cancelled (runtime-agnostic).
    pub async fn cancelled(&self) {
        loop {
            if self.is_cancelled() {
                return;
            }
            let listener = self.inner.event.listen();
            if self.is_cancelled() {
                return;
            }
            listener.await;
        }
    }
}

/// Keeps a hook registered with [`CancelToken::on_cancel`]; dropping it
/// unregisters the hook (if it has not run yet).
#[derive(Debug)]
pub struct OnCancel {
    /// `None` when the hook already ran at registration.
    token: Option<CancelToken>,
    id: u64,
}

impl Drop for OnCancel {
    fn drop(&mut self) {
        if let Some(token) = &self.token {
            token.hooks().pending.retain(|(id, _)| *id != self.id);
        }
    }
}

/// One run of a model over a URL list: its options, its deadline and its
/// cancel token. Models create it at the start of a run; it owns
/// copies of both, so async models can share it with spawned tasks through
/// an `Arc`.
#[derive(Debug)]
pub struct Run {
    options: Options,
    cancel: CancelToken,
    deadline: Option<Instant>,
}

impl Run {
    pub fn new(options: &Options, cancel: &CancelToken) -> Self {
        Run {
            options: options.clone(),
            cancel: cancel.clone(),
            deadline: options.deadline().map(|d| Instant::now() + d),
        }
    }

    pub fn options(&self) -> &Options {
        &self.options
    }
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }
    /// The instant the global deadline passes, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Why no new request may start, or `None` while the run goes on.
    pub fn stop_reason(&self) -> Option<FetchError> {
        if self.cancel.is_cancelled() {
            Some(FetchError::new(ErrorKind::Cancelled, "run cancelled"))
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Some(FetchError::new(
                ErrorKind::Deadline,
                "global deadline passed before the URL finished",
            ))
        } else {
            None
        }
    }

    /// The time the next attempt may take: the per-attempt timeout, cut short
    /// so that no attempt outlives the global deadline. An error when the run
    /// is cancelled or past its deadline.
    pub fn attempt_timeout(&self) -> Result<Duration, FetchError> {
        if let Some(stop) = self.stop_reason() {
            return Err(stop);
        }
        let timeout = self.options.request_timeout();
        Ok(match self.deadline {
            Some(d) => timeout.min(d.saturating_duration_since(Instant::now())),
            None => timeout,
        })
    }

    /// An attempt that timed out because the deadline cut its budget short is
    /// a `deadline` outcome, not a `timeout`: the URL did nothing wrong.
    pub fn explain(&self, error: FetchError) -> FetchError {
        if error.kind() == ErrorKind::Timeout && self.deadline.is_some_and(|d| Instant::now() >= d)
        {
            FetchError::new(
                ErrorKind::Deadline,
                "global deadline passed during the request",
            )
        } else {
            error
        }
    }

    /// After attempt number `attempts` ended in `result`: either the final
    /// result, or the delay before the next attempt.
    fn next_step<T>(
        &self,
        attempts: u32,
        result: Result<T, FetchError>,
    ) -> ControlFlow<Result<T, FetchError>, Duration> {
        let error = match result {
            Ok(v) => return ControlFlow::Break(Ok(v)),
            Err(e) => self.explain(e),
        };
        let Some(delay) = retry::retry_delay(&self.options, attempts, &error, fastrand::f64())
        else {
            return ControlFlow::Break(Err(error));
        };
        // A retry that could only start after the deadline is not worth the
        // wait: end the URL now, saying what it last failed with.
        if self.deadline.is_some_and(|d| Instant::now() + delay >= d) {
            return ControlFlow::Break(Err(FetchError::new(
                ErrorKind::Deadline,
                format!("global deadline passes before the next retry (last error: {error})"),
            )));
        }
        ControlFlow::Continue(delay)
    }

    /// The retry loop for blocking clients. `attempt` gets the time budget of
    /// one attempt; backoff sleeps wake early on cancel. Returns the number of
    /// attempts made and the final result.
    pub fn with_retries_blocking<T>(
        &self,
        mut attempt: impl FnMut(Duration) -> Result<T, FetchError>,
    ) -> (u32, Result<T, FetchError>) {
        let mut attempts = 0;
        loop {
            let budget = match self.attempt_timeout() {
                Ok(b) => b,
                Err(stop) => return (attempts, Err(stop)),
            };
            attempts += 1;
            match self.next_step(attempts, attempt(budget)) {
                ControlFlow::Break(result) => return (attempts, result),
                ControlFlow::Continue(delay) => {
                    if self.cancel.wait_timeout(delay) {
                        return (
                            attempts,
                            Err(FetchError::new(ErrorKind::Cancelled, "run cancelled")),
                        );
                    }
                }
            }
        }
    }

    /// The retry loop for async clients, runtime-agnostic: `attempt` gets the
    /// time budget of one attempt and must enforce it itself (a race with the
    /// runtime's timer); `sleep` is the runtime's sleep, never a thread sleep.
    /// Cancellation and the deadline are the caller's race around the whole
    /// URL, so this loop does not watch them while it sleeps.
    pub async fn with_retries<T, A, AF, S, SF>(
        &self,
        mut attempt: A,
        mut sleep: S,
    ) -> (u32, Result<T, FetchError>)
    where
        A: FnMut(Duration) -> AF,
        AF: Future<Output = Result<T, FetchError>>,
        S: FnMut(Duration) -> SF,
        SF: Future<Output = ()>,
    {
        let mut attempts = 0;
        loop {
            let budget = match self.attempt_timeout() {
                Ok(b) => b,
                Err(stop) => return (attempts, Err(stop)),
            };
            attempts += 1;
            match self.next_step(attempts, attempt(budget).await) {
                ControlFlow::Break(result) => return (attempts, result),
                ControlFlow::Continue(delay) => sleep(delay).await,
            }
        }
    }

    /// The outcome record for a URL whose first attempt started at `started`.
    pub fn outcome(
        &self,
        index: usize,
        url: &str,
        attempts: u32,
        started: Instant,
        result: Result<Page, FetchError>,
    ) -> Outcome {
        Outcome {
            index,
            url: url.to_string(),
            attempts,
            elapsed: started.elapsed(),
            result,
        }
    }
}

/// The caller's side of a run: hands out URLs as slots free up, and reports
/// each outcome exactly once.
///
/// Every model drives its run through one `Dispatch`, on the thread that
/// called it. URLs are pulled from the input only when the model has a free
/// slot, and outcomes go to `on_outcome` by value as they arrive; the only
/// per-URL state kept is the URL of each request in flight. So a run over ten
/// million URLs holds C URLs, not ten million, and the invariant "exactly one
/// outcome per input URL" is kept here once rather than in each model:
/// - a URL that must not start (the run is cancelled or past its deadline, or
///   the URL is invalid) is reported by [`next_url`](Self::next_url) itself;
/// - a second outcome for the same index is ignored;
/// - a URL handed out but never reported (a lost worker) still gets a record
///   at [`finish`](Self::finish).
pub struct Dispatch<'a> {
    urls: &'a mut dyn Iterator<Item = String>,
    next_index: usize,
    in_flight: HashMap<usize, String>,
    on_outcome: &'a mut dyn FnMut(Outcome),
}

impl<'a> Dispatch<'a> {
    pub fn new(
        urls: &'a mut dyn Iterator<Item = String>,
        on_outcome: &'a mut dyn FnMut(Outcome),
    ) -> Self {
        Dispatch {
            urls,
            next_index: 0,
            in_flight: HashMap::new(),
            on_outcome,
        }
    }

    /// The next URL to fetch and its input index, or `None` when the input
    /// is exhausted. URLs that must not be fetched are reported here as
    /// untried outcomes and skipped, so they never take a slot; once the run
    /// is cancelled or past its deadline, this drains the rest of the input
    /// that way.
    pub fn next_url(&mut self, run: &Run) -> Option<(usize, String)> {
        loop {
            let url = self.urls.next()?;
            let index = self.next_index;
            self.next_index += 1;
            // The model gets the normalised URL to request; the record keeps
            // the line as it was given, so a user can join records to input.
            let checked = match run.stop_reason() {
                Some(stop) => Err(stop),
                None => check_url(&url),
            };
            match checked {
                Err(error) => (self.on_outcome)(Outcome::untried(index, &shown_url(&url), error)),
                Ok(normalised) => {
                    self.in_flight.insert(index, url);
                    return Some((index, normalised.into()));
                }
            }
        }
    }

    /// How many URLs have been handed out and not yet reported.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Reports one outcome for a URL handed out by [`next_url`](Self::next_url).
    pub fn record(&mut self, mut outcome: Outcome) {
        if let Some(input) = self.in_flight.remove(&outcome.index) {
            outcome.url = input;
            (self.on_outcome)(outcome);
        } else {
            // Never handed out, or reported twice: a model bug. Dropping it
            // keeps the invariant; the debug assertion finds the bug.
            debug_assert!(false, "outcome {} was not in flight", outcome.index);
        }
    }

    /// Ends the run: a URL handed out but never reported gets the run's stop
    /// reason, or a `cancelled` record saying the model lost it. Returns the
    /// number of URLs read, which is the number of outcomes reported.
    pub fn finish(self, run: &Run) -> usize {
        let mut lost: Vec<(usize, String)> = self.in_flight.into_iter().collect();
        lost.sort_unstable();
        for (index, url) in lost {
            let error = run.stop_reason().unwrap_or_else(|| {
                FetchError::new(ErrorKind::Cancelled, "the model ended without an outcome")
            });
            (self.on_outcome)(Outcome::untried(index, &url, error));
        }
        self.next_index
    }
}

/// Keeps one client (or runtime) built for the last options seen, so that
/// repeated runs (benchmark iterations) do not pay for building it again,
/// while a run with different options gets a client that matches them.
pub struct Cached<C> {
    slot: Mutex<Option<(Options, Arc<C>)>>,
}

impl<C> Default for Cached<C> {
    fn default() -> Self {
        Cached {
            slot: Mutex::new(None),
        }
    }
}

impl<C> Cached<C> {
    pub fn get_or_build(&self, options: &Options, build: impl FnOnce(&Options) -> C) -> Arc<C> {
        // A panic while building leaves the slot as it was; nothing to repair.
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some((built_for, client)) if built_for == options => Arc::clone(client),
            _ => {
                let client = Arc::new(build(options));
                *slot = Some((options.clone(), Arc::clone(&client)));
                client
            }
        }
    }

    /// Like [`get_or_build`](Self::get_or_build), for a client that one run
    /// at a time uses and that a run can spoil: the cached client is handed
    /// out only if `usable` accepts it and no other run holds it now;
    /// otherwise a new one is built and cached in its place. The blocking
    /// models need this: a cancel shuts their agent down, for good and for
    /// every run that shares it.
    pub fn get_unshared_or_build(
        &self,
        options: &Options,
        usable: impl FnOnce(&C) -> bool,
        build: impl FnOnce(&Options) -> C,
    ) -> Arc<C> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            // One count is the slot's own: any other is a run in progress
            // (counted under this lock, so two runs cannot both see 1).
            Some((built_for, client))
                if built_for == options && Arc::strong_count(client) == 1 && usable(client) =>
            {
                Arc::clone(client)
            }
            _ => {
                let client = Arc::new(build(options));
                *slot = Some((options.clone(), Arc::clone(&client)));
                client
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_reports_every_url_once() {
        let (opts, cancel) = (Options::default(), CancelToken::new());
        let run = Run::new(&opts, &cancel);
        let input = ["http://h/0", "bogus", "http://h/2", "http://h/3"];
        let mut urls = input.iter().map(|s| s.to_string());
        let mut seen = Vec::new();
        let mut on_outcome = |o: Outcome| seen.push((o.index, o.error_kind()));
        let mut d = Dispatch::new(&mut urls, &mut on_outcome);
        // The invalid URL is reported while looking for the next valid one.
        assert_eq!(d.next_url(&run), Some((0, "http://h/0".to_string())));
        assert_eq!(d.next_url(&run), Some((2, "http://h/2".to_string())));
        assert_eq!(d.in_flight(), 2);
        d.record(Outcome::untried(
            2,
            "http://h/2",
            FetchError::new(ErrorKind::Connect, "x"),
        ));
        assert_eq!(d.in_flight(), 1);
        cancel.cancel();
        // After the cancel the rest of the input is drained as `cancelled`.
        assert_eq!(d.next_url(&run), None);
        // Index 0 was never reported: finish reports it.
        assert_eq!(d.finish(&run), 4);
        seen.sort();
        assert_eq!(
            seen,
            [
                (0, Some(ErrorKind::Cancelled)),
                (1, Some(ErrorKind::InvalidUrl)),
                (2, Some(ErrorKind::Connect)),
                (3, Some(ErrorKind::Cancelled)),
            ]
        );
    }

    #[test]
    fn cancel_runs_each_registered_hook_once() {
        use std::sync::atomic::AtomicUsize;
        let token = CancelToken::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let hook = |runs: &Arc<AtomicUsize>| {
            let runs = Arc::clone(runs);
            move || {
                runs.fetch_add(1, Ordering::SeqCst);
            }
        };
        let kept = token.on_cancel(hook(&runs));
        // Unregistered before the cancel: must not run.
        drop(token.on_cancel(|| panic!("an unregistered hook ran")));
        token.clone().cancel();
        token.cancel();
        assert_eq!(runs.load(Ordering::SeqCst), 1, "once, however many cancels");
        drop(kept);
        // Registered after the cancel: runs at once.
        let _late = token.on_cancel(hook(&runs));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn an_unshared_client_is_rebuilt_when_spoiled_or_in_use() {
        let cache: Cached<AtomicBool> = Cached::default();
        let opts = Options::default();
        let usable = |c: &AtomicBool| !c.load(Ordering::SeqCst);
        let first = cache.get_unshared_or_build(&opts, usable, |_| AtomicBool::new(false));
        // Held by a run: a second run gets its own.
        let second = cache.get_unshared_or_build(&opts, usable, |_| AtomicBool::new(false));
        assert!(!Arc::ptr_eq(&first, &second));
        // The slot keeps the second; once no run holds it, it is reused.
        let cached = Arc::as_ptr(&second);
        drop((first, second));
        let third = cache.get_unshared_or_build(&opts, usable, |_| AtomicBool::new(false));
        assert_eq!(Arc::as_ptr(&third), cached, "free and usable: reused");
        third.store(true, Ordering::SeqCst);
        drop(third);
        let fourth = cache.get_unshared_or_build(&opts, usable, |_| AtomicBool::new(false));
        assert!(
            !fourth.load(Ordering::SeqCst),
            "a spoiled client is replaced"
        );
    }

    #[test]
    fn cancel_wakes_a_blocked_waiter() {
        let token = CancelToken::new();
        let t2 = token.clone();
        let waiter = std::thread::spawn(move || t2.wait_timeout(Duration::from_secs(60)));
        token.cancel();
        assert!(waiter.join().unwrap());
        assert!(!CancelToken::new().wait_timeout(Duration::from_millis(1)));
    }

    #[test]
    fn retries_stop_at_the_limit_and_count_attempts() {
        let opts = Options::builder()
            .retries(2)
            .backoff(Duration::from_millis(1), Duration::from_millis(1))
            .build()
            .unwrap();
        let cancel = CancelToken::new();
        let run = Run::new(&opts, &cancel);
        let (attempts, result) = run.with_retries_blocking(|_| -> Result<(), _> {
            Err(FetchError::http_status(503, None))
        });
        assert_eq!(attempts, 3);
        assert_eq!(result.unwrap_err().status(), Some(503));

        let mut calls = 0;
        let (attempts, result) = run.with_retries_blocking(|_| {
            calls += 1;
            if calls == 1 {
                Err(FetchError::new(ErrorKind::Timeout, "t"))
            } else {
                Ok(calls)
            }
        });
        assert_eq!((attempts, result), (2, Ok(2)));
    }

    #[test]
    fn cancelled_run_starts_no_attempt() {
        let opts = Options::default();
        let cancel = CancelToken::new();
        cancel.cancel();
        let run = Run::new(&opts, &cancel);
        let (attempts, result) = run.with_retries_blocking(|_| -> Result<(), _> {
            panic!("no attempt may start after cancel")
        });
        assert_eq!(attempts, 0);
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Cancelled);
    }
}
