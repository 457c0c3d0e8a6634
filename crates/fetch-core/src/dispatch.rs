//! The dispatcher: URLs handed out as slots free up, and exactly one
//! outcome reported per URL.

use std::collections::HashMap;

use url::Url;

use crate::input::{check_url, shown_url};
use crate::{ErrorKind, FetchError, Outcome, Run};

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
    pub fn next_url(&mut self, run: &Run) -> Option<(usize, Url)> {
        loop {
            let url = self.urls.next()?;
            let index = self.next_index;
            self.next_index += 1;
            // The model gets the URL parsed and normalised, to request as it
            // is (parsed once, here); the record keeps the line as it was
            // given, so a user can join records to input.
            let checked = match run.stop_reason() {
                Some(stop) => Err(stop),
                None => check_url(&url),
            };
            match checked {
                Err(error) => (self.on_outcome)(Outcome::untried(index, &shown_url(&url), error)),
                Ok(normalised) => {
                    self.in_flight.insert(index, url);
                    return Some((index, normalised));
                }
            }
        }
    }

    /// Up to `n` URLs at once, fewer only when the input ends: the first
    /// batch of a run, for a model that sizes its threads to the URLs it
    /// actually has (50 URLs with a limit of 100,000 need 50 threads).
    pub fn next_urls(&mut self, run: &Run, n: usize) -> Vec<(usize, Url)> {
        std::iter::from_fn(|| self.next_url(run)).take(n).collect()
    }

    /// Reports every URL of the input as `error`, untried, and ends the run:
    /// for a model that cannot run at all (no runtime, no client), which
    /// still owes one outcome per URL.
    pub fn refuse_all(mut self, run: &Run, error: &FetchError) -> usize {
        while let Some((index, url)) = self.next_url(run) {
            self.record(Outcome::untried(index, url.as_str(), error.clone()));
        }
        self.finish(run)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CancelToken, Options};

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
        let next = |d: &mut Dispatch, run| d.next_url(run).map(|(i, u)| (i, u.to_string()));
        assert_eq!(next(&mut d, &run), Some((0, "http://h/0".to_string())));
        assert_eq!(next(&mut d, &run), Some((2, "http://h/2".to_string())));
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
}
