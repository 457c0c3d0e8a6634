//! Numbers for a finished run: counts per outcome kind, bytes, throughput and
//! latency percentiles. Measurement, not pipeline: it lives with the code
//! that measures (this binary and the benches), so a copier of a model crate
//! does not take a histogram library along.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use fetch_core::{ErrorKind, Outcome};

/// Latency percentiles of a run's outcomes (first attempt to final result).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// What a run did, from its outcomes and its wall time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Outcomes (one per input URL).
    pub pages: usize,
    /// Outcomes that are pages.
    pub ok: usize,
    /// Outcomes that are errors.
    pub errors: usize,
    /// Error outcomes per kind; kinds that did not occur are absent.
    pub by_kind: BTreeMap<ErrorKind, usize>,
    /// Body bytes of the pages.
    pub bytes: u64,
    /// Attempts over all URLs (retries included).
    pub attempts: u64,
    pub wall: Duration,
    /// Successful pages per second of wall time.
    pub pages_per_s: f64,
    /// Over every outcome that made at least one attempt, failures included:
    /// a URL that timed out took that long too.
    pub latency: Percentiles,
}

impl Summary {
    /// The summary of a finished run's outcomes.
    pub fn new(outcomes: &[Outcome], wall: Duration) -> Summary {
        let mut tally = Tally::new();
        outcomes.iter().for_each(|o| tally.add(o));
        tally.finish(wall)
    }
}

/// Builds a [`Summary`] one outcome at a time, for streaming runs that keep
/// no outcomes: a few counters and a histogram, whatever the number of URLs.
pub struct Tally {
    summary: Summary,
    latency: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

impl Tally {
    pub fn new() -> Self {
        Tally {
            summary: Summary::default(),
            // Microsecond resolution up to an hour, 3 significant digits (0.1%
            // error) in a few tens of KB. Only inverted bounds make this fail.
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid constant bounds"),
        }
    }

    pub fn add(&mut self, o: &Outcome) {
        let s = &mut self.summary;
        s.pages += 1;
        s.attempts += u64::from(o.attempts);
        match &o.result {
            Ok(page) => {
                s.ok += 1;
                s.bytes += page.bytes;
            }
            Err(e) => {
                s.errors += 1;
                *s.by_kind.entry(e.kind()).or_default() += 1;
            }
        }
        if o.attempts > 0 {
            let us = u64::try_from(o.elapsed.as_micros()).unwrap_or(u64::MAX);
            self.latency.saturating_record(us.max(1));
        }
    }

    pub fn finish(self, wall: Duration) -> Summary {
        let mut s = self.summary;
        let hist = self.latency;
        s.wall = wall;
        if !hist.is_empty() {
            let at = |q: f64| Duration::from_micros(hist.value_at_quantile(q));
            s.latency = Percentiles {
                p50: at(0.50),
                p90: at(0.90),
                p99: at(0.99),
                max: Duration::from_micros(hist.max()),
            };
        }
        let secs = wall.as_secs_f64();
        s.pages_per_s = if secs > 0.0 { s.ok as f64 / secs } else { 0.0 };
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fetch_core::{FetchError, Page};

    fn ok(index: usize, ms: u64) -> Outcome {
        Outcome {
            index,
            url: String::new(),
            attempts: 1,
            elapsed: Duration::from_millis(ms),
            result: Ok(Page {
                status: 200,
                bytes: 10,
                title: None,
                links: 0,
                final_url: String::new(),
                content_type: None,
                saved: None,
            }),
        }
    }

    #[test]
    fn counts_and_percentiles() {
        let mut outcomes: Vec<Outcome> = (0..100).map(|i| ok(i, i as u64 + 1)).collect();
        outcomes.push(Outcome::untried(
            100,
            "",
            FetchError::new(ErrorKind::Cancelled, "c"),
        ));
        outcomes[5].result = Err(FetchError::http_status(404, None));
        let s = Summary::new(&outcomes, Duration::from_secs(2));
        assert_eq!(
            (s.pages, s.ok, s.errors, s.bytes, s.attempts),
            (101, 99, 2, 990, 100)
        );
        assert_eq!(s.by_kind[&ErrorKind::HttpStatus], 1);
        assert_eq!(s.by_kind[&ErrorKind::Cancelled], 1);
        assert!((s.pages_per_s - 49.5).abs() < 1e-9);
        let near = |d: Duration, ms: u64| d.as_micros().abs_diff(u128::from(ms) * 1000) < 200;
        assert!(near(s.latency.p50, 50), "{:?}", s.latency);
        assert!(near(s.latency.p99, 99), "{:?}", s.latency);
        assert!(near(s.latency.max, 100), "{:?}", s.latency);
    }

    #[test]
    fn empty_run() {
        let s = Summary::new(&[], Duration::ZERO);
        assert_eq!((s.pages, s.pages_per_s), (0, 0.0));
    }
}
