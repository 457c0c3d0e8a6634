//! Pacing per host: how long to wait between requests to one host (scheme,
//! host and port, as in `hosts.rs`), and when a host may next be asked.
//!
//! Three things set a host's next turn, Scrapy's settings for the first two:
//! - **a delay** ([`Options::host_delay`], Scrapy's `DOWNLOAD_DELAY`): at
//!   least this long between the starts of two attempts to one host,
//!   jittered to between 0.5 and 1.5 times the delay, drawn afresh after
//!   each start, as Scrapy's `RANDOMIZE_DOWNLOAD_DELAY` (on by default) does;
//! - **AutoThrottle** ([`Options::auto_throttle`], Scrapy's `AUTOTHROTTLE_*`):
//!   the delay of each host adjusted after each response it gives, from its
//!   latency ([`AutoThrottle`] has the formula);
//! - **a `Retry-After`** on a 429 or a 503 (capped at
//!   [`Options::retry_after_cap`]): no attempt to that host before it has
//!   passed, whichever URL asks. (Scrapy does not read `Retry-After`.)
//!
//! Without a delay and without AutoThrottle nothing here is on: no state,
//! no lock, and a `Retry-After` delays only its own URL's retry.
//!
//! **Where the waiting happens.** The per-URL path asks for the host's turn
//! before every attempt, retries included ([`Run::host_turn`], called by both
//! retry loops and by `UrlMachine`), and sleeps until then with its own
//! model's timer, as it does for a backoff: a thread sleep that a cancel
//! wakes, the runtime's sleep, or a `Step::Wait` for a hand-written loop. So
//! no model's scheduling loop changes for it. The turn is taken at the
//! moment the attempt starts, with the delay as it is then: AutoThrottle's
//! latest value counts, not the one when the URL was handed out.
//!
//! **What a waiting URL holds.** A URL waiting for its host's turn is in
//! flight as far as the limits go: it holds a global slot and a slot of its
//! host (`hosts.rs`) from the moment it is handed out. Scrapy does the same
//! for the global limit (a request queued in a slot counts towards
//! `CONCURRENT_REQUESTS`) but counts only requests on the wire towards
//! `CONCURRENT_REQUESTS_PER_DOMAIN`. Here one host can thus hold at most
//! `max_per_host` global slots waiting, never all of them: with a long delay,
//! the other hosts keep the rest of the slots.
//!
//! **Memory.** One entry per host asked in the last minute (about a hundred
//! bytes), as Scrapy keeps a slot until it has been idle for 60 s: an
//! AutoThrottle delay is remembered that long. Entries are swept when the
//! table has doubled since the last sweep.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use url::Url;

use crate::hosts::host_key;
use crate::{ErrorKind, FetchError, Options, Run};

/// How long a host's entry is kept after it was last asked for or answered,
/// and its turn has passed: Scrapy's slot garbage collection age.
const IDLE: Duration = Duration::from_secs(60);

/// The table is swept when it reaches this many hosts, or twice its size
/// after the last sweep, whichever is more.
const SWEEP_AT: usize = 64;

/// Scrapy's AutoThrottle: each host's delay follows the latency of its
/// responses, so that about `target_concurrency` requests are in flight to
/// it on average. The defaults are Scrapy's (`AUTOTHROTTLE_START_DELAY` 5 s,
/// `AUTOTHROTTLE_MAX_DELAY` 60 s, `AUTOTHROTTLE_TARGET_CONCURRENCY` 1.0).
///
/// After each response of a host, as in Scrapy's `_adjust_delay`
/// (scrapy/extensions/throttle.py):
///
/// ```text
/// target_delay = latency / target_concurrency
/// new_delay    = max(target_delay, (old_delay + target_delay) / 2)
/// new_delay    = min(max(delay, new_delay), max_delay)   // delay: Options::host_delay
/// if the response is not a success and new_delay <= old_delay: keep old_delay
/// ```
///
/// A host starts at `max(delay, start_delay)`. Two differences from Scrapy:
/// the latency is the attempt's whole time (connect, headers, the body and
/// any redirects it followed), which is what fetch-core measures of every
/// client, where Scrapy takes the time to the response headers; and "not a
/// success" is any status outside 2xx (Scrapy's code says `!= 200`). A
/// failure with no response (a timeout, a refused connection) does not
/// change the delay, in either.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AutoThrottle {
    pub start_delay: Duration,
    pub max_delay: Duration,
    pub target_concurrency: f64,
}

impl Default for AutoThrottle {
    fn default() -> Self {
        AutoThrottle {
            start_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(60),
            target_concurrency: 1.0,
        }
    }
}

impl AutoThrottle {
    /// The delay after a response that took `latency`, from `old`; `ok`
    /// says whether it was a success (2xx). `min` is the run's delay
    /// ([`Options::host_delay`]).
    pub fn adjust(&self, old: Duration, latency: Duration, ok: bool, min: Duration) -> Duration {
        let target = latency.div_f64(self.target_concurrency);
        let new = target.max((old + target) / 2);
        let new = new.max(min).min(self.max_delay);
        if !ok && new <= old { old } else { new }
    }
}

/// One host's pacing.
#[derive(Debug)]
struct Host {
    /// When its last attempt was let go, and the jitter drawn then: the next
    /// may start `jitter × delay` later (the delay as it is by then).
    last: Option<(Instant, f64)>,
    /// Its delay: the run's, or AutoThrottle's for this host.
    delay: Duration,
    /// Not before this: a `Retry-After` it sent.
    not_before: Option<Instant>,
    /// When it was last asked for or answered, for the sweep.
    used: Instant,
}

impl Host {
    /// When the next attempt to this host may start.
    fn next_turn(&self) -> Option<Instant> {
        let after_last = self
            .last
            .map(|(at, jitter)| at + self.delay.mul_f64(jitter));
        after_last.max(self.not_before)
    }
}

/// The pacing of a run's hosts: shared by every task and thread of the run
/// (it lives in [`Run`]), behind one lock held for a map lookup at a time.
#[derive(Debug)]
pub(crate) struct Pace {
    delay: Duration,
    auto_throttle: Option<AutoThrottle>,
    retry_after_cap: Duration,
    hosts: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    hosts: HashMap<String, Host>,
    sweep_at: usize,
}

impl Pace {
    pub(crate) fn new(options: &Options) -> Pace {
        Pace {
            delay: options.host_delay(),
            auto_throttle: options.auto_throttle(),
            retry_after_cap: options.retry_after_cap(),
            hosts: Mutex::new(Table {
                hosts: HashMap::new(),
                sweep_at: SWEEP_AT,
            }),
        }
    }

    /// Whether hosts are paced at all: a delay or AutoThrottle.
    pub(crate) fn is_on(&self) -> bool {
        !self.delay.is_zero() || self.auto_throttle.is_some()
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // Nothing panics while it is held: arithmetic and a map.
        self.hosts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new host's delay: the run's, or AutoThrottle's start delay.
    fn first_delay(&self) -> Duration {
        match self.auto_throttle {
            Some(auto) => auto.start_delay.max(self.delay),
            None => self.delay,
        }
    }

    /// The host of `url` at `now`: `Ok` if an attempt may start now (and the
    /// turn is taken: the next one comes a jittered delay later), or the
    /// instant to ask again.
    pub(crate) fn turn(&self, url: &Url, now: Instant) -> Result<(), Instant> {
        if !self.is_on() {
            return Ok(());
        }
        let mut table = self.table();
        table.sweep(now);
        let first_delay = self.first_delay();
        let host = table.hosts.entry(host_key(url)).or_insert(Host {
            last: None,
            delay: first_delay,
            not_before: None,
            used: now,
        });
        host.used = now;
        match host.next_turn() {
            Some(at) if at > now => Err(at),
            _ => {
                host.last = Some((now, 0.5 + fastrand::f64()));
                Ok(())
            }
        }
    }

    /// What an attempt to `url`'s host saw: `latency`, and whether it was a
    /// success (`Some(true)`), a response with another status
    /// (`Some(false)`, with its `Retry-After` if any) or no response at all
    /// (`None`).
    pub(crate) fn answered(
        &self,
        url: &Url,
        now: Instant,
        latency: Duration,
        response: Option<bool>,
        retry_after: Option<Duration>,
    ) {
        if !self.is_on() {
            return;
        }
        let mut table = self.table();
        let Some(host) = table.hosts.get_mut(&host_key(url)) else {
            // Swept meanwhile (an attempt longer than a minute): the next
            // turn starts it afresh.
            return;
        };
        host.used = now;
        if let (Some(auto), Some(ok)) = (self.auto_throttle, response) {
            host.delay = auto.adjust(host.delay, latency, ok, self.delay);
        }
        if let Some(wait) = retry_after {
            let until = now + wait.min(self.retry_after_cap);
            host.not_before = host.not_before.max(Some(until));
        }
    }

    /// The current delay of `url`'s host, if it has an entry (for tests).
    #[cfg(test)]
    fn delay_of(&self, url: &Url) -> Option<Duration> {
        self.table().hosts.get(&host_key(url)).map(|h| h.delay)
    }
}

impl Table {
    /// Forgets the hosts that have been idle for [`IDLE`] and whose turn
    /// has passed, once the table has grown enough since the last sweep
    /// (so sweeping costs O(1) per call, amortised).
    fn sweep(&mut self, now: Instant) {
        if self.hosts.len() < self.sweep_at {
            return;
        }
        self.hosts.retain(|_, host| {
            let idle = now.saturating_duration_since(host.used) >= IDLE;
            let passed = host.next_turn().is_none_or(|at| at <= now);
            !(idle && passed)
        });
        self.sweep_at = (self.hosts.len() * 2).max(SWEEP_AT);
    }
}

impl Run {
    /// Whether the next attempt of `url` may start now, by its host's pace:
    /// `Ok(None)` if so (the host's turn is then taken), `Ok(Some(at))` if
    /// not before `at` (sleep until then and ask again: another URL may take
    /// the turn first), or the run's end when the deadline passes before the
    /// turn comes.
    pub(crate) fn host_turn(&self, url: &Url) -> Result<Option<Instant>, FetchError> {
        match self.pace().turn(url, Instant::now()) {
            Ok(()) => Ok(None),
            Err(at) if self.deadline().is_some_and(|d| at >= d) => Err(FetchError::new(
                ErrorKind::Deadline,
                "global deadline passes before the host's turn",
            )),
            Err(at) => Ok(Some(at)),
        }
    }

    /// Tells `url`'s host's pace what an attempt that took `latency` ended
    /// in: AutoThrottle's adjustment, and a `Retry-After` on a 429 or 503
    /// pushing the host back. An `Ok` is a success (the per-URL path makes
    /// any other status an error).
    pub(crate) fn host_answered<T>(
        &self,
        url: &Url,
        latency: Duration,
        result: &Result<T, FetchError>,
    ) {
        let (response, retry_after) = match result {
            Ok(_) => (Some(true), None),
            Err(e) => match e.status() {
                Some(429 | 503) => (Some(false), e.retry_after()),
                Some(_) => (Some(false), None),
                // No answer: a timeout, a refused connection, a cut body.
                None => (None, None),
            },
        };
        self.pace()
            .answered(url, Instant::now(), latency, response, retry_after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CancelToken;

    fn u(s: &str) -> Url {
        crate::check_url(s).unwrap()
    }
    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn auto_throttle_follows_scrapys_formula() {
        let auto = AutoThrottle::default();
        let adjust = |old, latency, ok| auto.adjust(ms(old), ms(latency), ok, Duration::ZERO);
        // From the 5 s start, a 100 ms response: the mean, (5000 + 100) / 2.
        assert_eq!(adjust(5000, 100, true), ms(2550));
        // Then again: (2550 + 100) / 2.
        assert_eq!(adjust(2550, 100, true), ms(1325));
        // A latency above the delay: the target itself, not the mean.
        assert_eq!(adjust(1000, 3000, true), ms(3000));
        // Clamped at the maximum delay (60 s) and at the run's delay.
        assert_eq!(adjust(50_000, 90_000, true), ms(60_000));
        assert_eq!(auto.adjust(ms(400), ms(10), true, ms(300)), ms(300));
        // Target concurrency 2: target = latency / 2.
        let two = AutoThrottle {
            target_concurrency: 2.0,
            ..auto
        };
        assert_eq!(
            two.adjust(ms(1000), ms(1000), true, Duration::ZERO),
            ms(750)
        );
        // A non-2xx response may raise the delay, never lower it.
        assert_eq!(adjust(2000, 100, false), ms(2000));
        assert_eq!(adjust(1000, 3000, false), ms(3000));
    }

    fn paced(delay: Duration, auto: Option<AutoThrottle>) -> Pace {
        let options = Options::builder()
            .host_delay(delay)
            .auto_throttle(auto)
            .retry_after_cap(Duration::from_secs(30))
            .build()
            .unwrap();
        Pace::new(&options)
    }

    #[test]
    fn a_delay_spaces_the_turns_of_one_host_with_jitter() {
        let pace = paced(ms(1000), None);
        let t0 = Instant::now();
        let (a, a2, b) = (u("http://a/1"), u("http://a/2"), u("http://b/1"));
        assert_eq!(pace.turn(&a, t0), Ok(()));
        // The next turn of a is 0.5 to 1.5 delays later, whichever URL asks.
        let next = pace.turn(&a2, t0).unwrap_err();
        let gap = next - t0;
        assert!((ms(500)..=ms(1500)).contains(&gap), "{gap:?}");
        assert_eq!(pace.turn(&a2, next - ms(1)), Err(next));
        // Another host is not held up.
        assert_eq!(pace.turn(&b, t0), Ok(()));
        // At the turn, it is taken once.
        assert_eq!(pace.turn(&a2, next), Ok(()));
        assert!(pace.turn(&a, next).is_err());
        // Over many turns, the jitter covers its range.
        let gaps: Vec<f64> = (0..200)
            .map(|_| {
                let pace = paced(ms(1000), None);
                pace.turn(&a, t0).unwrap();
                (pace.turn(&a, t0).unwrap_err() - t0).as_secs_f64()
            })
            .collect();
        assert!(gaps.iter().all(|g| (0.5..=1.5).contains(g)));
        assert!(gaps.iter().any(|g| *g < 0.75) && gaps.iter().any(|g| *g > 1.25));
    }

    #[test]
    fn without_a_delay_or_auto_throttle_nothing_waits() {
        let pace = paced(Duration::ZERO, None);
        assert!(!pace.is_on());
        let (a, t0) = (u("http://a/"), Instant::now());
        for _ in 0..3 {
            assert_eq!(pace.turn(&a, t0), Ok(()));
        }
        pace.answered(&a, t0, ms(10), Some(false), Some(Duration::from_secs(9)));
        assert_eq!(pace.turn(&a, t0), Ok(()), "no per-host Retry-After either");
        assert!(pace.table().hosts.is_empty(), "no state");
    }

    #[test]
    fn retry_after_pushes_the_host_back_capped() {
        let pace = paced(ms(10), None);
        let (a, b, t0) = (u("http://a/1"), u("http://b/1"), Instant::now());
        assert_eq!(pace.turn(&a, t0), Ok(()));
        pace.answered(&a, t0, ms(5), Some(false), Some(Duration::from_secs(2)));
        let t1 = t0 + ms(100);
        assert_eq!(pace.turn(&u("http://a/other"), t1), Err(t0 + ms(2000)));
        assert_eq!(pace.turn(&b, t1), Ok(()), "only that host");
        assert_eq!(pace.turn(&a, t0 + ms(2000)), Ok(()));
        // A server asking for an hour gets the cap (30 s here).
        pace.answered(&b, t1, ms(5), Some(false), Some(Duration::from_secs(3600)));
        assert_eq!(pace.turn(&b, t1), Err(t1 + Duration::from_secs(30)));
    }

    #[test]
    fn run_reads_retry_after_only_from_429_and_503() {
        let options = Options::builder().host_delay(ms(1)).build().unwrap();
        let run = Run::new(&options, &CancelToken::new());
        let a = u("http://a/");
        let wait = Some(Duration::from_secs(5));
        let asked = |status| Err::<(), _>(FetchError::http_status(status, wait));
        assert_eq!(run.host_turn(&a), Ok(None));
        run.host_answered(&a, ms(1), &asked(500));
        std::thread::sleep(ms(5));
        assert_eq!(
            run.host_turn(&a),
            Ok(None),
            "a 500's Retry-After is its URL's only"
        );
        run.host_answered(&a, ms(1), &asked(429));
        let at = run.host_turn(&a).unwrap().expect("pushed back");
        assert!(at >= Instant::now() + Duration::from_secs(4), "{at:?}");
    }

    #[test]
    fn auto_throttle_sets_each_hosts_delay_from_its_responses() {
        let pace = paced(Duration::ZERO, Some(AutoThrottle::default()));
        let (a, b, t0) = (u("http://a/"), u("http://b/"), Instant::now());
        pace.turn(&a, t0).unwrap();
        pace.turn(&b, t0).unwrap();
        assert_eq!(
            pace.delay_of(&a),
            Some(Duration::from_secs(5)),
            "start delay"
        );
        pace.answered(&a, t0, ms(100), Some(true), None);
        assert_eq!(pace.delay_of(&a), Some(ms(2550)));
        // The next turn follows the new delay at once (jitter 0.5 to 1.5).
        let gap = pace.turn(&a, t0).unwrap_err() - t0;
        assert!((ms(1275)..=ms(3825)).contains(&gap), "{gap:?}");
        // An error page may not lower it; no response does not touch it.
        pace.answered(&a, t0, ms(10), Some(false), None);
        pace.answered(&a, t0, ms(10), None, None);
        assert_eq!(pace.delay_of(&a), Some(ms(2550)));
        assert_eq!(
            pace.delay_of(&b),
            Some(Duration::from_secs(5)),
            "b is its own"
        );
    }

    #[test]
    fn a_turn_past_the_deadline_ends_the_url() {
        let options = Options::builder()
            .host_delay(Duration::from_secs(10))
            .deadline(Some(Duration::from_secs(1)))
            .build()
            .unwrap();
        let run = Run::new(&options, &CancelToken::new());
        let a = u("http://a/");
        assert_eq!(run.host_turn(&a), Ok(None));
        let err = run.host_turn(&a).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Deadline);
    }

    #[test]
    fn every_flavour_of_the_per_url_path_waits_for_the_turn() {
        let options = Options::builder()
            .host_delay(ms(200))
            .parse(false)
            .build()
            .unwrap();
        let run = Run::new(&options, &CancelToken::new());
        let ok = || {
            Ok(crate::Fetched {
                status: 200,
                body: Vec::new(),
                content_type: None,
            })
        };
        // The blocking flavour: the second URL of the host sleeps until its
        // turn, at least half the delay after the first.
        let first = crate::fetch_one_blocking(&run, 0, u("http://a/0"), |_, _| ok());
        let second = crate::fetch_one_blocking(&run, 1, u("http://a/1"), |_, _| ok());
        assert!(first.is_ok() && second.is_ok());
        assert!(second.elapsed >= ms(100), "{:?}", second.elapsed);
        // The machine: a wait until the turn, then the request.
        let (mut machine, step) = crate::UrlMachine::start(&run, 2, u("http://a/2"));
        let crate::Step::Wait { until } = step else {
            panic!("the host's turn has not come: {step:?}")
        };
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        let step = machine.on_timer(&run);
        assert!(matches!(step, crate::Step::Request { .. }), "{step:?}");
        // Another host goes at once.
        let (_, step) = crate::UrlMachine::start(&run, 3, u("http://b/3"));
        assert!(matches!(step, crate::Step::Request { .. }), "{step:?}");
    }

    #[test]
    fn idle_hosts_are_swept() {
        let pace = paced(ms(10), None);
        let t0 = Instant::now();
        for n in 0..SWEEP_AT {
            pace.turn(&u(&format!("http://h{n}/")), t0).unwrap();
        }
        assert_eq!(pace.table().hosts.len(), SWEEP_AT);
        // A minute later the next turn sweeps them all but its own.
        pace.turn(&u("http://new/"), t0 + IDLE + ms(20)).unwrap();
        assert_eq!(pace.table().hosts.len(), 1);
        assert_eq!(pace.table().sweep_at, SWEEP_AT);
        // A host pushed back for longer than that is kept until its turn.
        let options = Options::builder()
            .host_delay(ms(10))
            .retry_after_cap(Duration::from_secs(300))
            .build()
            .unwrap();
        let pace = Pace::new(&options);
        let held = u("http://held/");
        pace.turn(&held, t0).unwrap();
        pace.answered(
            &held,
            t0,
            ms(1),
            Some(false),
            Some(Duration::from_secs(200)),
        );
        for n in 0..SWEEP_AT {
            pace.turn(&u(&format!("http://h{n}/")), t0).unwrap();
        }
        let late = t0 + IDLE + ms(20);
        pace.turn(&u("http://new/"), late).unwrap();
        assert!(pace.delay_of(&held).is_some(), "its turn has not passed");
    }
}
