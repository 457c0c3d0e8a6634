//! The dispatcher: URLs handed out as slots free up, at most
//! [`Options::max_per_host`](crate::Options::max_per_host) of them to one
//! host, and exactly one outcome reported per URL.

use std::collections::HashMap;

use url::Url;

use crate::hosts::{self, Held, Hosts, host_key};
use crate::input::{check_url, shown_url};
use crate::{ErrorKind, FetchError, Outcome, Run};

/// What [`Dispatch::next_url`] has for the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// A URL to fetch now, with its input index.
    Url(usize, Url),
    /// Nothing now: every URL read ahead is for a host at its limit
    /// ([`Options::max_per_host`](crate::Options::max_per_host)). Ask again
    /// after the next [`record`](Dispatch::record), which frees a host's
    /// slot. Only ever said while a URL is in flight, so there is always an
    /// outcome to wait for.
    Wait,
    /// The input is exhausted and no URL is held back: nothing more will
    /// come.
    End,
}

/// The caller's side of a run: hands out URLs as slots free up, and reports
/// each outcome exactly once.
///
/// Every model drives its run through one `Dispatch`, on the thread that
/// called it. URLs are pulled from the input only when the model has a free
/// slot, and outcomes go to `on_outcome` by value as they arrive; the only
/// per-URL state kept is the URL of each request in flight, and, with a
/// per-host limit, the URLs read ahead and held back for a host that is full
/// (at most [`look_ahead`](crate::look_ahead) of them: see `hosts.rs`). So a
/// run over ten million URLs holds a multiple of C URLs, not ten million, and
/// the invariant "exactly one outcome per input URL" is kept here once rather
/// than in each model:
/// - a URL that must not start (the run is cancelled or past its deadline, or
///   the URL is invalid) is reported by [`next_url`](Self::next_url) itself;
/// - a second outcome for the same index is ignored;
/// - a URL handed out but never reported (a lost worker), or read and never
///   handed out, still gets a record at [`finish`](Self::finish).
pub struct Dispatch<'a> {
    urls: &'a mut dyn Iterator<Item = String>,
    next_index: usize,
    /// Each URL handed out and not yet reported: the line as given, and the
    /// key of its host when a per-host limit applies.
    in_flight: HashMap<usize, (String, Option<String>)>,
    hosts: Hosts,
    /// The per-host limit that can bind (from the run's options, read by
    /// `next_url`, which comes before any `record`).
    per_host: Option<usize>,
    input_ended: bool,
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
            hosts: Hosts::default(),
            per_host: None,
            input_ended: false,
            on_outcome,
        }
    }

    /// The next URL to fetch and its input index; or [`Next::Wait`] when
    /// every URL read ahead is for a host at its limit; or [`Next::End`]
    /// when the input is exhausted. URLs that must not be fetched are
    /// reported here as untried outcomes and skipped, so they never take a
    /// slot; once the run is cancelled or past its deadline, this drains the
    /// URLs held back and the rest of the input that way.
    ///
    /// A model calls it while it has a free slot, and again after each
    /// outcome it records: that is when a full host gets room. With no URL
    /// in flight it never says `Wait`.
    pub fn next_url(&mut self, run: &Run) -> Next {
        self.per_host = hosts::per_host_limit(run.options());
        let look_ahead = hosts::look_ahead(run.options());
        loop {
            if let Some(stop) = run.stop_reason() {
                return self.drain(&stop);
            }
            if let Some(limit) = self.per_host
                && let Some((key, held)) = self.hosts.next_ready(limit)
            {
                self.in_flight.insert(held.index, (held.input, Some(key)));
                return Next::Url(held.index, held.url);
            }
            let held = self.hosts.held();
            if held > 0 && (held >= look_ahead || self.input_ended) {
                return Next::Wait;
            }
            let Some(url) = self.urls.next() else {
                self.input_ended = true;
                return if held == 0 { Next::End } else { Next::Wait };
            };
            let index = self.next_index;
            self.next_index += 1;
            // The model gets the URL parsed and normalised, to request as it
            // is (parsed once, here); the record keeps the line as it was
            // given, so a user can join records to input.
            let normalised = match check_url(&url) {
                Ok(normalised) => normalised,
                Err(error) => {
                    (self.on_outcome)(Outcome::untried(index, &shown_url(&url), error));
                    continue;
                }
            };
            let key = self.per_host.map(|_| host_key(&normalised));
            if let (Some(limit), Some(key)) = (self.per_host, &key)
                && !self.hosts.try_start(key, limit)
            {
                let held = Held {
                    index,
                    input: url,
                    url: normalised,
                };
                self.hosts.hold(key, held);
                continue;
            }
            self.in_flight.insert(index, (url, key));
            return Next::Url(index, normalised);
        }
    }

    /// Up to `n` URLs at once, fewer when the input ends or every URL read
    /// ahead waits for a full host: the first batch of a run, for a model
    /// that sizes its threads after it (see [`wanted`](Self::wanted)).
    pub fn next_urls(&mut self, run: &Run, n: usize) -> Vec<(usize, Url)> {
        let next = || match self.next_url(run) {
            Next::Url(index, url) => Some((index, url)),
            Next::Wait | Next::End => None,
        };
        std::iter::from_fn(next).take(n).collect()
    }

    /// How many URLs this run can have in flight at once from now on, at
    /// most `limit`: `limit` while the input may go on; once it has ended,
    /// the URLs in flight and those held back, at most the per-host limit of
    /// each host. For a model that sizes its threads once, after its first
    /// batch: 50 URLs at a limit of 100,000 need 50 threads, and 50 URLs of
    /// one host at 8 per host need 8.
    pub fn wanted(&self, limit: usize) -> usize {
        if !self.input_ended {
            return limit;
        }
        let could = match self.per_host {
            Some(per_host) => self.hosts.could_run(per_host),
            None => self.in_flight.len(),
        };
        could.min(limit)
    }

    /// Reports every URL of the input as `error`, untried, and ends the run:
    /// for a model that cannot run at all (no runtime, no client), which
    /// still owes one outcome per URL.
    pub fn refuse_all(mut self, run: &Run, error: &FetchError) -> usize {
        // Each URL is reported before the next is asked for, so no host
        // ever fills up and `Wait` cannot come.
        while let Next::Url(index, url) = self.next_url(run) {
            self.record(Outcome::untried(index, url.as_str(), error.clone()));
        }
        self.finish(run)
    }

    /// How many URLs have been handed out and not yet reported.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Reports one outcome for a URL handed out by [`next_url`](Self::next_url),
    /// and frees its host's slot.
    pub fn record(&mut self, mut outcome: Outcome) {
        if let Some((input, key)) = self.in_flight.remove(&outcome.index) {
            if let (Some(key), Some(limit)) = (key, self.per_host) {
                self.hosts.finished(&key, limit);
            }
            outcome.url = input;
            (self.on_outcome)(outcome);
        } else {
            // Never handed out, or reported twice: a model bug. Dropping it
            // keeps the invariant; the debug assertion finds the bug.
            debug_assert!(false, "outcome {} was not in flight", outcome.index);
        }
    }

    /// The run is over: every URL held back and the rest of the input are
    /// reported with `stop`, untried.
    fn drain(&mut self, stop: &FetchError) -> Next {
        for held in self.hosts.take_held() {
            (self.on_outcome)(Outcome::untried(held.index, &held.input, stop.clone()));
        }
        for url in &mut *self.urls {
            let index = self.next_index;
            self.next_index += 1;
            (self.on_outcome)(Outcome::untried(index, &shown_url(&url), stop.clone()));
        }
        self.input_ended = true;
        Next::End
    }

    /// Ends the run: a URL handed out but never reported, or read and never
    /// handed out, gets the run's stop reason, or a `cancelled` record saying
    /// the model lost it. Returns the number of URLs read, which is the
    /// number of outcomes reported.
    pub fn finish(mut self, run: &Run) -> usize {
        let held = self.hosts.take_held().into_iter();
        let held = held.map(|h| (h.index, h.input, "the model ended before the URL started"));
        let in_flight = self.in_flight.into_iter();
        let in_flight =
            in_flight.map(|(i, (url, _))| (i, url, "the model ended without an outcome"));
        let mut lost: Vec<_> = held.chain(in_flight).collect();
        lost.sort_unstable();
        for (index, url, why) in lost {
            let error = run
                .stop_reason()
                .unwrap_or_else(|| FetchError::new(ErrorKind::Cancelled, why));
            (self.on_outcome)(Outcome::untried(index, &url, error));
        }
        self.next_index
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::{CancelToken, Options};

    fn url(next: Next) -> Option<(usize, String)> {
        match next {
            Next::Url(i, u) => Some((i, u.to_string())),
            Next::Wait | Next::End => None,
        }
    }

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
        assert_eq!(url(d.next_url(&run)), Some((0, "http://h/0".to_string())));
        assert_eq!(url(d.next_url(&run)), Some((2, "http://h/2".to_string())));
        assert_eq!(d.in_flight(), 2);
        d.record(Outcome::untried(
            2,
            "http://h/2",
            FetchError::new(ErrorKind::Connect, "x"),
        ));
        assert_eq!(d.in_flight(), 1);
        cancel.cancel();
        // After the cancel the rest of the input is drained as `cancelled`.
        assert_eq!(d.next_url(&run), Next::End);
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

    /// A limit of `c` in flight, one per host.
    fn one_per_host(c: usize) -> Options {
        Options::builder()
            .max_in_flight(c)
            .max_per_host(Some(1))
            .build()
            .unwrap()
    }

    fn done(index: usize) -> Outcome {
        Outcome::untried(index, "", FetchError::new(ErrorKind::Connect, "x"))
    }

    #[test]
    fn a_full_host_is_skipped_and_served_when_a_slot_frees() {
        let (opts, cancel) = (one_per_host(4), CancelToken::new());
        let run = Run::new(&opts, &cancel);
        let input = [
            "http://a/0",
            "http://a/1",
            "http://b/2",
            "http://a/3",
            "http://b/4",
        ];
        let mut urls = input.iter().map(|s| s.to_string());
        let mut seen = Vec::new();
        let mut on_outcome = |o: Outcome| seen.push((o.index, o.url));
        let mut d = Dispatch::new(&mut urls, &mut on_outcome);
        let index = |next| url(next).map(|(i, _)| i);
        assert_eq!(index(d.next_url(&run)), Some(0));
        // a is full: 1 is held back and b's URL goes first.
        assert_eq!(index(d.next_url(&run)), Some(2));
        // Both full, the input read to its end: wait for an outcome.
        assert_eq!(d.next_url(&run), Next::Wait);
        assert_eq!(d.wanted(10), 2, "one for a, one for b");
        d.record(done(0));
        // a's slot is free: its oldest URL held back comes first.
        assert_eq!(index(d.next_url(&run)), Some(1));
        assert_eq!(d.next_url(&run), Next::Wait);
        d.record(done(2));
        assert_eq!(index(d.next_url(&run)), Some(4));
        d.record(done(1));
        assert_eq!(index(d.next_url(&run)), Some(3));
        d.record(done(4));
        d.record(done(3));
        assert_eq!(d.next_url(&run), Next::End);
        assert_eq!(d.finish(&run), 5);
        // Each record carries its line as given.
        seen.sort();
        let urls: Vec<&str> = seen.iter().map(|(_, u)| u.as_str()).collect();
        assert_eq!(urls, input);
    }

    #[test]
    fn the_look_ahead_is_bounded_by_the_concurrency() {
        // One host, one URL at a time, an endless input: the dispatcher
        // reads the one it hands out and `look_ahead` more, then waits.
        let (opts, cancel) = (one_per_host(40), CancelToken::new());
        let run = Run::new(&opts, &cancel);
        let pulled = Cell::new(0);
        let mut urls = std::iter::repeat_with(|| {
            pulled.set(pulled.get() + 1);
            format!("http://a/{}", pulled.get())
        });
        let mut on_outcome = |_| {};
        let mut d = Dispatch::new(&mut urls, &mut on_outcome);
        assert!(matches!(d.next_url(&run), Next::Url(0, _)));
        assert_eq!(d.next_url(&run), Next::Wait);
        assert_eq!(hosts::look_ahead(&opts), 80);
        assert_eq!(pulled.get(), 1 + 80);
        assert_eq!(d.wanted(40), 40, "the input goes on");
        // Each outcome lets one held URL go and one more be read.
        for i in 0..10 {
            d.record(done(i));
            assert!(matches!(d.next_url(&run), Next::Url(n, _) if n == i + 1));
            assert_eq!(d.next_url(&run), Next::Wait);
        }
        assert_eq!(pulled.get(), 1 + 80 + 10);
        // A cancel reports what is held back; the input is endless, so the
        // test stops here rather than drain it.
        assert_eq!(d.hosts.take_held().len(), 80);
    }

    #[test]
    fn finish_reports_urls_held_back() {
        let (opts, cancel) = (one_per_host(4), CancelToken::new());
        let run = Run::new(&opts, &cancel);
        let mut urls = ["http://a/0", "http://a/1"].iter().map(|s| s.to_string());
        let mut seen = Vec::new();
        let mut on_outcome = |o: Outcome| seen.push((o.index, o.error_kind(), o.url));
        let mut d = Dispatch::new(&mut urls, &mut on_outcome);
        assert!(matches!(d.next_url(&run), Next::Url(0, _)));
        assert_eq!(d.next_url(&run), Next::Wait);
        assert_eq!(d.finish(&run), 2);
        let cancelled = Some(ErrorKind::Cancelled);
        assert_eq!(
            seen,
            [
                (0, cancelled, "http://a/0".to_string()),
                (1, cancelled, "http://a/1".to_string())
            ]
        );
    }

    #[test]
    fn a_cancel_drains_the_urls_held_back() {
        let (opts, cancel) = (one_per_host(4), CancelToken::new());
        let run = Run::new(&opts, &cancel);
        let input = ["http://a/0", "http://a/1", "http://a/2", "http://b/3"];
        let mut urls = input.iter().map(|s| s.to_string());
        let seen = std::cell::RefCell::new(Vec::new());
        let mut on_outcome = |o: Outcome| seen.borrow_mut().push((o.index, o.error_kind()));
        let mut d = Dispatch::new(&mut urls, &mut on_outcome);
        assert!(matches!(d.next_url(&run), Next::Url(0, _)));
        assert!(matches!(d.next_url(&run), Next::Url(3, _)));
        cancel.cancel();
        assert_eq!(d.next_url(&run), Next::End);
        let cancelled = Some(ErrorKind::Cancelled);
        assert_eq!(*seen.borrow(), [(1, cancelled), (2, cancelled)]);
        d.record(done(0));
        d.record(done(3));
        assert_eq!(d.finish(&run), 4);
        assert_eq!(seen.borrow().len(), 4);
    }
}
