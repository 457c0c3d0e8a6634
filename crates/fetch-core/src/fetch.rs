//! The per-URL path, written once for every model: time the URL, count its
//! attempts, retry with backoff, catch a panic, race the whole URL against
//! cancel and the deadline, run the CPU stage where it belongs, and build the
//! [`Outcome`].
//!
//! A model supplies only what is its own:
//! - **one attempt** with its client: a closure that gets a URL and the time
//!   left in the attempt's budget, makes one request (following no
//!   redirect), and returns the [`Fetched`] response or a [`FetchError`]
//!   (any non-2xx status is one, from
//!   [`check_status`](crate::response::check_status));
//! - for an async model, its runtime's side ([`AsyncRuntime`]): how it sleeps
//!   (a thread sleep would stall every task on the thread) and how it moves
//!   CPU work off the threads that drive I/O.
//!
//! **Redirects** are followed here, inside one attempt and its budget: a
//! redirect status with a `Location` sends the attempt's next request there
//! ([`Redirects`]), up to [`Options::max_redirects`]. A retry starts again
//! from the URL itself. A redirect's body is not read, so its connection is
//! not reused; redirects are rare enough in a crawl that this costs less
//! than reading bodies nobody wants.
//!
//! **robots.txt**, when [`Options::robots`] is on (`robots.rs`): before the
//! first attempt, the rules of the URL's origin, fetched once per run with
//! the same `attempt`; a URL they disallow ends with no request made.
//!
//! Two flavours, one behaviour: [`fetch_one_blocking`] for a thread that
//! blocks in its client, [`fetch_one`] for a task on any async runtime.
//!
//! **Where a page ended up**: the request URL after the redirects, the
//! page's [`final_url`](Page::final_url), comes from [`Redirects`] at the
//! end of the attempt, moved, not copied; so does an `http_status` error's
//! ([`FetchError::final_url`]): a 404 after a redirect says where it was.
//!
//! **The CPU stage** (HTML parsing, [`crate::parse`], and saving pages,
//! [`crate::save`]) has one cap for every model: at most one page per core is
//! in it at a time. A blocking model with a hundred threads would otherwise
//! parse a hundred pages at once on two cores, and an async model would hand
//! its blocking pool a hundred jobs (tokio's pool grows to 512 threads): the
//! same work, taking turns on the same cores, with more threads and more
//! memory. Pages wait for a slot instead. Without a CPU stage (parsing off,
//! no extra work, no save) the record is built in place: a hop to another
//! thread would cost a cross-thread wake-up per page, which a profile at 0 ms
//! latency showed as a fifth of the CPU time, to move nanoseconds of work.

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use async_lock::Semaphore;
use futures_lite::FutureExt as _;
use futures_lite::future;

use url::Url;

use crate::response::Redirects;
use crate::robots::{self, Hops};
use crate::{ErrorKind, FetchError, Options, Outcome, Page, Run, parse, retry};

/// What one successful attempt brings back: the final status (2xx), the
/// body (within the cap) and its `Content-Type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: Option<String>,
}

/// An async runtime's side of the per-URL path.
pub trait AsyncRuntime {
    /// The runtime's sleep (`tokio::time::sleep`, `smol::Timer::after`, …).
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;

    /// Runs CPU work on a thread that drives no I/O and returns its result
    /// (`spawn_blocking`, `smol::unblock`): the article's `run_in_executor`.
    /// An error only when the runtime lost the job (it was shutting down);
    /// a panic inside `work` is caught before it gets there.
    fn offload<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = Result<T, FetchError>> + Send;
}

/// One CPU-stage slot per core, shared by every model and run in the process
/// (and by `machine.rs`, the per-URL path's third flavour).
pub(crate) static CPU_SLOTS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Arc::new(Semaphore::new(cores))
});

/// One URL on a thread that blocks in its client: retries (backoff sleeps
/// wake on cancel), the CPU stage on this thread once a core's slot is free,
/// and a panic anywhere caught as this URL's `panicked` outcome, so it cannot
/// take down a worker (and the URLs it would fetch next).
///
/// The thread cannot be raced against cancel or the deadline: `attempt` must
/// keep to the time it is given (what is left of the attempt's budget, which
/// [`Run::attempt_timeout`] cuts short at the deadline), and a client that
/// can be interrupted from outside (ureq's `Agent::shutdown`) ends it early
/// on cancel.
pub fn fetch_one_blocking(
    run: &Run,
    index: usize,
    url: Url,
    mut attempt: impl FnMut(Url, Duration) -> Result<Fetched, FetchError>,
) -> Outcome {
    let started = Instant::now();
    // Counted outside the retry loop, so a panic does not lose the count.
    let attempts = AtomicU32::new(0);
    // AssertUnwindSafe: after a panic nothing of this URL is reused; the
    // client drops a connection caught mid-request rather than pooling it.
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        // robots.txt first, when obeyed: a URL it disallows is never requested.
        let rules = robots::admit_blocking(run, &url, |file| {
            retry::with_retries_blocking(run, &file, |budget| {
                follow_blocking(&file, Hops::robots(run.options()), budget, &mut attempt)
            })
        })?;
        let hops = Hops::page(run.options(), rules.as_deref());
        let answer = retry::with_retries_blocking(run, &url, |budget| {
            attempts.fetch_add(1, Ordering::Relaxed);
            follow_blocking(&url, hops, budget, &mut attempt)
        })?;
        if !run.options().has_cpu_stage() {
            return page(answer, run.options());
        }
        let _slot = CPU_SLOTS.acquire_blocking();
        page(answer, run.options())
    }))
    .unwrap_or_else(|panic| Err(FetchError::from_panic(panic.as_ref())));
    outcome(index, url, attempts.into_inner(), started, result)
}

/// One URL as a task on an async runtime: each attempt raced against its
/// budget with the runtime's timer, retries with the runtime's sleep, the CPU
/// stage offloaded once a core's slot is free, a panic caught as this URL's
/// `panicked` outcome, and the whole URL raced against cancel and the
/// deadline. The losing side of a race is dropped, and dropping a future
/// cancels it: its socket and timers go at once.
pub async fn fetch_one<R, A, AF>(
    run: &Run,
    runtime: &R,
    index: usize,
    url: Url,
    attempt: A,
) -> Outcome
where
    R: AsyncRuntime,
    A: Fn(Url, Duration) -> AF,
    AF: Future<Output = Result<Fetched, FetchError>>,
{
    let started = Instant::now();
    // Atomic, not a Cell: the future must be Send to be spawned, and it
    // holds this across `.await`s. Nothing contends for it.
    let attempts = AtomicU32::new(0);
    let attempt = &attempt;
    let work = async {
        // robots.txt first, when obeyed: a URL it disallows is never requested.
        let rules = robots::admit(run, &url, |file| async move {
            let hops = Hops::robots(run.options());
            let get = |budget| within(runtime, budget, follow(&file, hops, budget, attempt));
            retry::with_retries(run, &file, get, |delay| runtime.sleep(delay)).await
        })
        .await?;
        let hops = Hops::page(run.options(), rules.as_deref());
        let answer = retry::with_retries(
            run,
            &url,
            |budget| {
                attempts.fetch_add(1, Ordering::Relaxed);
                within(runtime, budget, follow(&url, hops, budget, attempt))
            },
            |delay| runtime.sleep(delay),
        )
        .await?;
        if !run.options().has_cpu_stage() {
            return page(answer, run.options());
        }
        let _slot = CPU_SLOTS.acquire().await;
        let options = run.shared_options();
        let parsed = runtime.offload(move || {
            panic::catch_unwind(AssertUnwindSafe(|| page(answer, &options)))
                .unwrap_or_else(|panic| Err(FetchError::from_panic(panic.as_ref())))
        });
        parsed.await?
    };
    // A panic in the client or the runtime's glue costs this URL alone.
    let guarded = async {
        AssertUnwindSafe(work)
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(FetchError::from_panic(panic.as_ref())))
    };
    // `or` polls `guarded` first: a page done in the same poll as a cancel
    // is kept.
    let result = guarded.or(stopped(run, runtime)).await;
    outcome(index, url, attempts.into_inner(), started, result)
}

/// One attempt on a blocking client: the request to `url` and to each
/// redirect it leads to (as many as `hops` allows, each on `url`'s origin
/// checked against its robots.txt), all within `budget`.
fn follow_blocking(
    url: &Url,
    hops: Hops<'_>,
    budget: Duration,
    attempt: &mut impl FnMut(Url, Duration) -> Result<Fetched, FetchError>,
) -> Result<Answer, FetchError> {
    let started = Instant::now();
    let mut redirects = hops.start(url);
    loop {
        let left = budget.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(no_answer(budget));
        }
        let result = attempt(redirects.url().clone(), left);
        match &result {
            Err(answer) if redirects.follow(answer)? => hops.check(url, redirects.url())?,
            _ => return answered(result, redirects),
        }
    }
}

/// One attempt on an async client: the request to `url` and to each
/// redirect it leads to (as [`follow_blocking`]). The caller races the whole
/// of it against `budget` ([`within`]).
async fn follow<A, AF>(
    url: &Url,
    hops: Hops<'_>,
    budget: Duration,
    attempt: &A,
) -> Result<Answer, FetchError>
where
    A: Fn(Url, Duration) -> AF,
    AF: Future<Output = Result<Fetched, FetchError>>,
{
    let mut redirects = hops.start(url);
    loop {
        let result = attempt(redirects.url().clone(), budget).await;
        match &result {
            Err(answer) if redirects.follow(answer)? => hops.check(url, redirects.url())?,
            _ => return answered(result, redirects),
        }
    }
}

/// `attempt` raced against `budget` on the runtime's timer: asyncio's
/// `wait_for`. The budget covers connect, headers and body; on expiry the
/// attempt is dropped with its socket.
async fn within<R: AsyncRuntime, T>(
    runtime: &R,
    budget: Duration,
    attempt: impl Future<Output = Result<T, FetchError>>,
) -> Result<T, FetchError> {
    let timed_out = async {
        runtime.sleep(budget).await;
        Err(no_answer(budget))
    };
    attempt.or(timed_out).await
}

/// An attempt's final answer: the page, and the URL that gave it.
pub(crate) type Answer = (Fetched, Url);

/// The end of an attempt's redirect chain, in every flavour of the per-URL
/// path: a page keeps the URL that gave it, and so does an `http_status`
/// error; no other error has a final URL (no answer came, or none was
/// accepted).
pub(crate) fn answered(
    result: Result<Fetched, FetchError>,
    redirects: Redirects,
) -> Result<Answer, FetchError> {
    match result {
        Ok(fetched) => Ok((fetched, redirects.into_url())),
        Err(e) if e.kind() == ErrorKind::HttpStatus => Err(e.with_final_url(redirects.into_url())),
        Err(e) => Err(e),
    }
}

/// The error of an attempt that used up its budget, in every flavour of the
/// per-URL path (`machine.rs` included).
pub(crate) fn no_answer(budget: Duration) -> FetchError {
    FetchError::new(ErrorKind::Timeout, format!("no answer within {budget:?}"))
}

/// Completes when the run is cancelled or its deadline passes, with the reason.
async fn stopped<R: AsyncRuntime>(run: &Run, runtime: &R) -> Result<Page, FetchError> {
    let deadline = async {
        match run.deadline() {
            Some(at) => {
                runtime
                    .sleep(at.saturating_duration_since(Instant::now()))
                    .await
            }
            None => future::pending().await,
        }
    };
    deadline.or(run.cancel_token().cancelled()).await;
    // Either side ending means a stop reason holds; the fallback is only
    // there so that no path can panic.
    Err(run
        .stop_reason()
        .unwrap_or_else(|| FetchError::new(ErrorKind::Deadline, "global deadline passed")))
}

/// The CPU stage of one answer (or, without one, the record built in place).
pub(crate) fn page((fetched, final_url): Answer, options: &Options) -> Result<Page, FetchError> {
    parse::page(fetched, final_url, options)
}

/// The URL's record. `url` is moved in (a `Url` gives up its string without
/// a copy): every flavour has finished with it by now.
pub(crate) fn outcome(
    index: usize,
    url: Url,
    attempts: u32,
    started: Instant,
    result: Result<Page, FetchError>,
) -> Outcome {
    Outcome {
        index,
        url: url.into(),
        attempts,
        elapsed: started.elapsed(),
        result,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn u(url: &str) -> Url {
        crate::check_url(url).unwrap()
    }
    use crate::CancelToken;
    use crate::response::check_status;

    fn ok_page() -> Result<Fetched, FetchError> {
        Ok(Fetched {
            status: 200,
            body: b"<title>T</title><a href=x>x</a>".to_vec(),
            content_type: None,
        })
    }

    fn options() -> Options {
        Options::builder()
            .retries(2)
            .backoff(Duration::from_millis(1), Duration::from_millis(1))
            .build()
            .unwrap()
    }

    /// A runtime for the tests: thread sleeps and inline "offloading", run
    /// under `futures_lite::future::block_on`.
    struct Inline;

    impl AsyncRuntime for Inline {
        async fn sleep(&self, duration: Duration) {
            std::thread::sleep(duration)
        }
        async fn offload<T: Send + 'static>(
            &self,
            work: impl FnOnce() -> T + Send + 'static,
        ) -> Result<T, FetchError> {
            Ok(work())
        }
    }

    #[test]
    fn a_page_after_a_retry_counts_two_attempts() {
        let (opts, cancel) = (options(), CancelToken::new());
        let run = Run::new(&opts, &cancel);
        let calls = Cell::new(0);
        let attempt = |_, _| {
            calls.set(calls.get() + 1);
            if calls.get() == 1 {
                Err(FetchError::http_status(503, None))
            } else {
                ok_page()
            }
        };
        let o = fetch_one_blocking(&run, 7, u("http://h/"), attempt);
        assert_eq!((o.index, o.attempts), (7, 2));
        let page = o.result.unwrap();
        assert_eq!((page.title.as_deref(), page.links), (Some("T"), 1));

        calls.set(0);
        let o = future::block_on(fetch_one(&run, &Inline, 7, u("http://h/"), |_, _| {
            calls.set(calls.get() + 1);
            let result = if calls.get() == 1 {
                Err(FetchError::new(ErrorKind::Connect, "refused"))
            } else {
                ok_page()
            };
            async move { result }
        }));
        assert_eq!(o.attempts, 2);
        assert!(o.is_ok());
    }

    #[test]
    fn a_panic_keeps_the_attempt_count() {
        let (opts, cancel) = (options(), CancelToken::new());
        let run = Run::new(&opts, &cancel);
        let calls = Cell::new(0);
        let o = fetch_one_blocking(&run, 0, u("http://h/"), |_, _| {
            calls.set(calls.get() + 1);
            if calls.get() < 3 {
                return Err(FetchError::new(ErrorKind::Timeout, "slow"));
            }
            panic!("the client broke")
        });
        assert_eq!(o.attempts, 3);
        assert_eq!(o.error_kind(), Some(ErrorKind::Panicked));

        let o = future::block_on(fetch_one(&run, &Inline, 0, u("http://h/"), |_, _| async {
            panic!("the client broke")
        }));
        assert_eq!((o.attempts, o.error_kind()), (1, Some(ErrorKind::Panicked)));
    }

    #[test]
    fn an_attempt_past_its_budget_times_out() {
        let opts = Options::builder()
            .retries(0)
            .request_timeout(Duration::from_millis(20))
            .build()
            .unwrap();
        let cancel = CancelToken::new();
        let run = Run::new(&opts, &cancel);
        let o = future::block_on(fetch_one(&run, &Inline, 0, u("http://h/"), |_, _| {
            future::pending::<Result<Fetched, FetchError>>()
        }));
        assert_eq!(o.error_kind(), Some(ErrorKind::Timeout));
    }

    #[test]
    fn a_cancelled_run_ends_the_url_as_cancelled() {
        let (opts, cancel) = (options(), CancelToken::new());
        let run = Run::new(&opts, &cancel);
        cancel.cancel();
        let o = future::block_on(fetch_one(&run, &Inline, 0, u("http://h/"), |_, _| {
            future::pending::<Result<Fetched, FetchError>>()
        }));
        assert_eq!(o.error_kind(), Some(ErrorKind::Cancelled));
        let o = fetch_one_blocking(&run, 0, u("http://h/"), |_, _| ok_page());
        assert_eq!(
            (o.attempts, o.error_kind()),
            (0, Some(ErrorKind::Cancelled))
        );
    }

    /// A server of two pages: /a redirects to /b, /b answers; /loop
    /// redirects to itself. Records every URL requested.
    fn redirecting(
        requested: &std::cell::RefCell<Vec<String>>,
        url: Url,
    ) -> Result<Fetched, FetchError> {
        requested.borrow_mut().push(url.path().to_string());
        let location = match url.path() {
            "/a" => "b",
            "/loop" => "/loop",
            _ => return ok_page(),
        };
        check_status(302, None, Some(location)).map(|()| unreachable!("a 302 is an error"))
    }

    #[test]
    fn redirects_are_followed_within_one_attempt() {
        let (opts, cancel) = (options(), CancelToken::new());
        let run = Run::new(&opts, &cancel);
        let requested = std::cell::RefCell::new(Vec::new());
        let o = fetch_one_blocking(&run, 0, u("http://h/a"), |url, _| {
            redirecting(&requested, url)
        });
        assert_eq!((o.attempts, o.is_ok()), (1, true));
        assert_eq!(*requested.borrow(), ["/a", "/b"]);
        assert_eq!(o.result.unwrap().final_url, "http://h/b");

        requested.borrow_mut().clear();
        let o = future::block_on(fetch_one(&run, &Inline, 0, u("http://h/a"), |url, _| {
            let result = redirecting(&requested, url);
            async move { result }
        }));
        assert_eq!((o.attempts, o.is_ok()), (1, true));
        assert_eq!(*requested.borrow(), ["/a", "/b"]);
        assert_eq!(o.result.unwrap().final_url, "http://h/b");

        // Past the limit (5): `redirect`, not retried.
        requested.borrow_mut().clear();
        let o = fetch_one_blocking(&run, 0, u("http://h/loop"), |url, _| {
            redirecting(&requested, url)
        });
        assert_eq!((o.attempts, o.error_kind()), (1, Some(ErrorKind::Redirect)));
        assert_eq!(requested.borrow().len(), 6);
        assert_eq!(o.result.unwrap_err().final_url(), None, "no final answer");
    }

    #[test]
    fn a_page_and_an_http_status_say_where_they_ended_up() {
        let opts = Options::builder().retries(0).build().unwrap();
        let cancel = CancelToken::new();
        let run = Run::new(&opts, &cancel);
        // No redirect: the URL as normalised.
        let o = fetch_one_blocking(&run, 0, u("http://H/x y"), |_, _| ok_page());
        assert_eq!(o.result.unwrap().final_url, "http://h/x%20y");
        // A 404 after a redirect says where it was.
        let gone = |url: Url| match url.path() {
            "/a" => check_status(301, None, Some("/gone")),
            _ => check_status(404, None, None),
        };
        let o = fetch_one_blocking(&run, 0, u("http://h/a"), |url, _| {
            gone(url).map(|()| unreachable!("an error status"))
        });
        let error = o.result.unwrap_err();
        assert_eq!(
            (error.status(), error.final_url()),
            (Some(404), Some("http://h/gone"))
        );
        let o = future::block_on(fetch_one(&run, &Inline, 0, u("http://h/a"), |url, _| {
            let result = gone(url).map(|()| unreachable!("an error status"));
            async move { result }
        }));
        let error = o.result.unwrap_err();
        assert_eq!(error.final_url(), Some("http://h/gone"));
        // An error with no answer has none.
        let o = fetch_one_blocking(&run, 0, u("http://h/a"), |_, _| {
            Err(FetchError::new(ErrorKind::Connect, "refused"))
        });
        assert_eq!(o.result.unwrap_err().final_url(), None);
    }

    #[test]
    fn a_retry_starts_again_from_the_url_itself() {
        let (opts, cancel) = (options(), CancelToken::new());
        let run = Run::new(&opts, &cancel);
        let requested = std::cell::RefCell::new(Vec::new());
        let o = fetch_one_blocking(&run, 0, u("http://h/a"), |url, _| {
            let seen = requested.borrow().len();
            if url.path() == "/b" && seen == 1 {
                requested.borrow_mut().push("/b".to_string());
                return Err(FetchError::http_status(503, None));
            }
            redirecting(&requested, url)
        });
        assert_eq!((o.attempts, o.is_ok()), (2, true));
        assert_eq!(*requested.borrow(), ["/a", "/b", "/a", "/b"]);
    }
}
