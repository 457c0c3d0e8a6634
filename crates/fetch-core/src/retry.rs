//! Retries: the policy, as pure functions (which failures are worth another
//! attempt, and how long to wait first), and beside it the loop that applies
//! it, once for blocking clients and once for async ones. Models only supply
//! the waiting, each with its own clock (a thread sleep, `tokio::time::sleep`,
//! `smol::Timer`). The loops also wait, before every attempt, for the turn of
//! the URL's host (`pace.rs`: a delay between requests to one host,
//! AutoThrottle, a `Retry-After`), and tell the host's pace what each attempt
//! saw.

use std::future::Future;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use url::Url;

use crate::{ErrorKind, FetchError, Options, Run};

/// Whether a failure is worth another attempt.
///
/// Transient transport failures (`timeout`, `connect`, `protocol`) and the
/// configured statuses (by default 408, 429, 500, 502, 503, 504) are retried.
/// Everything else would fail the same way again: a bad URL, an untrusted
/// certificate, a 404, a body over the cap, a redirect loop, a response the
/// client cannot read (`unsupported`); and `deadline` and `cancelled` mean the
/// run itself is over.
pub fn is_retryable(error: &FetchError, options: &Options) -> bool {
    match error.kind() {
        ErrorKind::Timeout | ErrorKind::Connect | ErrorKind::Protocol => true,
        ErrorKind::HttpStatus => error
            .status()
            .is_some_and(|s| options.retry_statuses().contains(&s)),
        _ => false,
    }
}

/// The backoff before retry number `retry` (1 for the first retry), given a
/// `jitter` sample in `[0, 1)`.
///
/// Exponential (base, 2 × base, 4 × base … up to the maximum) with "equal
/// jitter": half of the delay is fixed, so a retry never comes back at once,
/// and half is random, so a thousand URLs that failed together (a server
/// restart) do not all come back in the same millisecond.
pub fn backoff_delay(options: &Options, retry: u32, jitter: f64) -> Duration {
    let doubling = 2u32.saturating_pow(retry.saturating_sub(1));
    let exp = options
        .backoff_base()
        .saturating_mul(doubling)
        .min(options.backoff_max());
    let half = exp / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// What to wait before the next attempt, after `attempts_made` attempts ended
/// in `error`; `None` when the error is final (not retryable, or no retries
/// left).
///
/// A server's `Retry-After` is honoured, capped by
/// [`Options::retry_after_cap`]: the retry never comes sooner than the server
/// asked, but a server cannot park a worker for an hour either.
pub fn retry_delay(
    options: &Options,
    attempts_made: u32,
    error: &FetchError,
    jitter: f64,
) -> Option<Duration> {
    if attempts_made > options.retries() || !is_retryable(error, options) {
        return None;
    }
    let backoff = backoff_delay(options, attempts_made, jitter);
    let asked = error
        .retry_after()
        .map(|d| d.min(options.retry_after_cap()))
        .unwrap_or_default();
    Some(backoff.max(asked))
}

/// Parses a `Retry-After` header in its seconds form (`Retry-After: 120`).
/// The HTTP-date form is not honoured (it needs a trusted clock; the
/// exponential backoff applies instead), and neither is garbage.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// After attempt number `attempts` of `url`, which took `latency`, ended in
/// `result`: either the final result, or the delay before the next attempt.
/// (Also the step of `machine.rs`, which drives the same policy by hand.)
pub(crate) fn next_step<T>(
    run: &Run,
    url: &Url,
    attempts: u32,
    latency: Duration,
    result: Result<T, FetchError>,
) -> ControlFlow<Result<T, FetchError>, Duration> {
    // Its host's pace hears of every attempt: AutoThrottle's latency, a
    // Retry-After that holds the whole host back.
    run.host_answered(url, latency, &result);
    let error = match result {
        Ok(v) => return ControlFlow::Break(Ok(v)),
        Err(e) => run.explain(e),
    };
    let Some(delay) = retry_delay(run.options(), attempts, &error, fastrand::f64()) else {
        return ControlFlow::Break(Err(error));
    };
    // A retry that could only start after the deadline is not worth the
    // wait: end the URL now, saying what it last failed with.
    if run.deadline().is_some_and(|d| Instant::now() + delay >= d) {
        return ControlFlow::Break(Err(FetchError::new(
            ErrorKind::Deadline,
            format!("global deadline passes before the next retry (last error: {error})"),
        )));
    }
    ControlFlow::Continue(delay)
}

/// The retry loop for blocking clients, for `url`. `attempt` gets the time
/// budget of one attempt; the wait for the host's turn and backoff sleeps
/// wake early on cancel. Returns the final result; `attempt` counts its own
/// calls, so that the count survives a panic.
pub fn with_retries_blocking<T>(
    run: &Run,
    url: &Url,
    mut attempt: impl FnMut(Duration) -> Result<T, FetchError>,
) -> Result<T, FetchError> {
    let mut attempts = 0;
    loop {
        while let Some(turn) = run.host_turn(url)? {
            if run
                .cancel_token()
                .wait_timeout(turn.saturating_duration_since(Instant::now()))
            {
                return Err(FetchError::new(ErrorKind::Cancelled, "run cancelled"));
            }
        }
        let budget = run.attempt_timeout()?;
        attempts += 1;
        let started = Instant::now();
        let result = attempt(budget);
        match next_step(run, url, attempts, started.elapsed(), result) {
            ControlFlow::Break(result) => return result,
            ControlFlow::Continue(delay) => {
                if run.cancel_token().wait_timeout(delay) {
                    return Err(FetchError::new(ErrorKind::Cancelled, "run cancelled"));
                }
            }
        }
    }
}

/// The retry loop for async clients, for `url`, runtime-agnostic: `attempt`
/// gets the time budget of one attempt; `sleep` is the runtime's sleep,
/// never a thread sleep (for backoff, and for the host's turn).
/// Cancellation and the deadline are the caller's race around the whole
/// URL, so this loop does not watch them while it sleeps.
pub async fn with_retries<T, A, AF, S, SF>(
    run: &Run,
    url: &Url,
    mut attempt: A,
    mut sleep: S,
) -> Result<T, FetchError>
where
    A: FnMut(Duration) -> AF,
    AF: Future<Output = Result<T, FetchError>>,
    S: FnMut(Duration) -> SF,
    SF: Future<Output = ()>,
{
    let mut attempts = 0;
    loop {
        while let Some(turn) = run.host_turn(url)? {
            sleep(turn.saturating_duration_since(Instant::now())).await;
        }
        let budget = run.attempt_timeout()?;
        attempts += 1;
        let started = Instant::now();
        let result = attempt(budget).await;
        match next_step(run, url, attempts, started.elapsed(), result) {
            ControlFlow::Break(result) => return result,
            ControlFlow::Continue(delay) => sleep(delay).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CancelToken;

    fn url() -> Url {
        crate::check_url("http://h/").unwrap()
    }

    fn opts() -> Options {
        Options::builder()
            .retries(3)
            .backoff(Duration::from_millis(100), Duration::from_millis(1000))
            .retry_after_cap(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    #[test]
    fn retryable_kinds_and_statuses() {
        let o = opts();
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_retryable(&FetchError::http_status(s, None), &o), "{s}");
        }
        for s in [400, 401, 403, 404, 410, 501] {
            assert!(!is_retryable(&FetchError::http_status(s, None), &o), "{s}");
        }
        for k in [ErrorKind::Timeout, ErrorKind::Connect, ErrorKind::Protocol] {
            assert!(is_retryable(&FetchError::new(k, "x"), &o), "{k}");
        }
        for k in [
            ErrorKind::InvalidUrl,
            ErrorKind::Tls,
            ErrorKind::BodyTooLarge,
            ErrorKind::Redirect,
            ErrorKind::Deadline,
            ErrorKind::Cancelled,
            ErrorKind::Unsupported,
        ] {
            assert!(!is_retryable(&FetchError::new(k, "x"), &o), "{k}");
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let o = opts();
        // With jitter 0 the delay is half the exponential step, with jitter ~1 the whole step.
        assert_eq!(backoff_delay(&o, 1, 0.0), Duration::from_millis(50));
        assert_eq!(backoff_delay(&o, 2, 0.0), Duration::from_millis(100));
        assert_eq!(backoff_delay(&o, 3, 0.0), Duration::from_millis(200));
        assert_eq!(backoff_delay(&o, 1, 1.0), Duration::from_millis(100));
        assert_eq!(backoff_delay(&o, 10, 1.0), Duration::from_millis(1000));
        assert_eq!(backoff_delay(&o, 60, 0.5), Duration::from_millis(750));
    }

    #[test]
    fn retries_run_out() {
        let o = opts();
        let e = FetchError::http_status(503, None);
        assert!(retry_delay(&o, 1, &e, 0.0).is_some());
        assert!(retry_delay(&o, 3, &e, 0.0).is_some());
        assert_eq!(retry_delay(&o, 4, &e, 0.0), None);
        assert_eq!(
            retry_delay(&o, 1, &FetchError::http_status(404, None), 0.0),
            None
        );
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let o = opts();
        let asked = FetchError::http_status(429, Some(Duration::from_secs(2)));
        assert_eq!(
            retry_delay(&o, 1, &asked, 0.9),
            Some(Duration::from_secs(2))
        );
        let greedy = FetchError::http_status(429, Some(Duration::from_secs(3600)));
        assert_eq!(
            retry_delay(&o, 1, &greedy, 0.9),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn retry_after_seconds_form_only() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
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
        let mut calls = 0;
        let result = with_retries_blocking(&run, &url(), |_| -> Result<(), _> {
            calls += 1;
            Err(FetchError::http_status(503, None))
        });
        assert_eq!(calls, 3);
        assert_eq!(result.unwrap_err().status(), Some(503));

        let mut calls = 0;
        let result = with_retries_blocking(&run, &url(), |_| {
            calls += 1;
            if calls == 1 {
                Err(FetchError::new(ErrorKind::Timeout, "t"))
            } else {
                Ok(calls)
            }
        });
        assert_eq!((calls, result), (2, Ok(2)));
    }

    #[test]
    fn cancelled_run_starts_no_attempt() {
        let opts = Options::default();
        let cancel = CancelToken::new();
        cancel.cancel();
        let run = Run::new(&opts, &cancel);
        let result = with_retries_blocking(&run, &url(), |_| -> Result<(), _> {
            panic!("no attempt may start after cancel")
        });
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Cancelled);
    }
}
