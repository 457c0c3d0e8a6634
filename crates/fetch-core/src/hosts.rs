//! The per-host limit: at most [`Options::max_per_host`] URLs of one host in
//! flight, with the global limit ([`Options::max_in_flight`]) on top, and the
//! URLs held back meanwhile for a host at its limit.
//!
//! What "one host" is: the URL's origin, scheme, host and port
//! (`http://example.com`, `https://example.com` and `http://example.com:8080`
//! are three), taken from the URL of the input, never from where its
//! redirects lead. A URL counts against its host from the moment
//! [`Dispatch`](crate::Dispatch) hands it out until its outcome is recorded:
//! its retries, its backoff and its redirects included, so a host never has
//! more URLs started and unfinished than its limit. Scrapy does the same in
//! effect: its downloader picks a request's slot once and stores the key in
//! the request's `meta`, which a redirect or a retry copies. (Scrapy's slot
//! key is the host name alone, so `http://a` and `https://a:8443` share one;
//! here they do not.)
//!
//! **Look-ahead.** A URL whose host is full is held back, and the dispatcher
//! reads on: a list that starts with 10,000 URLs of one slow host does not
//! keep the other hosts waiting. It reads at most [`look_ahead`] URLs ahead
//! (twice the global limit, at least 64), so memory stays proportional to
//! the concurrency, not to the input; when every URL held back waits for a
//! full host, the model waits for an outcome. Held URLs of a host are handed
//! out in input order, oldest host first.
//!
//! The bookkeeping lives here and in `Dispatch`, on the dispatcher's thread,
//! and costs nothing when there is no per-host limit, or when it is at least
//! the global one (then it can never bind).

use std::collections::{HashMap, VecDeque};

use url::Url;

use crate::Options;

/// The key a URL's host is counted under: its origin, `scheme://host` with
/// the port when it is not the scheme's default (`http://127.0.0.1:8080`).
/// Two mock servers on 127.0.0.1 with two ports are two hosts.
pub fn host_key(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// The per-host limit that can bind: `None` when there is none, or when it
/// is at least the global limit (no host can then reach it).
pub(crate) fn per_host_limit(options: &Options) -> Option<usize> {
    options
        .max_per_host()
        .filter(|&n| n < options.max_in_flight())
}

/// How many URLs a run may read ahead of those it hands out, held back
/// because their host is at its limit: twice the global limit, at least 64,
/// or none without a per-host limit that can bind. A run holds at most this
/// many URLs besides those in flight.
pub fn look_ahead(options: &Options) -> usize {
    match per_host_limit(options) {
        Some(_) => options.max_in_flight().saturating_mul(2).max(64),
        None => 0,
    }
}

/// A URL read from the input and held back until its host has room.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) index: usize,
    /// The line as given, for the record.
    pub(crate) input: String,
    /// The normalised URL, to hand out.
    pub(crate) url: Url,
}

/// One host with URLs in flight or held back.
#[derive(Debug, Default)]
struct Host {
    in_flight: usize,
    held: VecDeque<Held>,
}

/// Every host with a URL in flight or held back (a host with neither is
/// dropped at once, so this holds at most C + [`look_ahead`] hosts).
#[derive(Debug, Default)]
pub(crate) struct Hosts {
    hosts: HashMap<String, Host>,
    /// The hosts that have URLs held back *and* a free slot, in the order
    /// they got the slot: exactly those, so the next URL to hand out is
    /// found without a scan.
    ready: VecDeque<String>,
    held: usize,
}

impl Hosts {
    /// Takes a slot of `key`'s host for a new URL if it has one and no URL
    /// of its own waits before it; false if the URL must be held back.
    pub(crate) fn try_start(&mut self, key: &str, limit: usize) -> bool {
        match self.hosts.get_mut(key) {
            Some(host) if host.in_flight >= limit || !host.held.is_empty() => false,
            Some(host) => {
                host.in_flight += 1;
                true
            }
            None => {
                let host = Host {
                    in_flight: 1,
                    held: VecDeque::new(),
                };
                self.hosts.insert(key.to_owned(), host);
                true
            }
        }
    }

    /// Holds `url` back until `key`'s host has room (after a
    /// [`try_start`](Self::try_start) that said no).
    pub(crate) fn hold(&mut self, key: &str, url: Held) {
        self.hosts
            .entry(key.to_owned())
            .or_default()
            .held
            .push_back(url);
        self.held += 1;
    }

    /// The oldest URL held back for a host that has room now, with its key;
    /// its slot is taken.
    pub(crate) fn next_ready(&mut self, limit: usize) -> Option<(String, Held)> {
        let key = self.ready.pop_front()?;
        let Some(host) = self.hosts.get_mut(&key) else {
            debug_assert!(false, "a ready host is known");
            return None;
        };
        let Some(url) = host.held.pop_front() else {
            debug_assert!(false, "a ready host has a URL held back");
            return None;
        };
        self.held -= 1;
        host.in_flight += 1;
        if host.in_flight < limit && !host.held.is_empty() {
            // Still room and still URLs: it stays first in line.
            self.ready.push_front(key.clone());
        }
        Some((key, url))
    }

    /// A URL of `key`'s host has its outcome: its slot is free.
    pub(crate) fn finished(&mut self, key: &str, limit: usize) {
        let Some(host) = self.hosts.get_mut(key) else {
            debug_assert!(false, "a host with a URL in flight is known");
            return;
        };
        let was_full = host.in_flight >= limit;
        host.in_flight = host.in_flight.saturating_sub(1);
        if host.held.is_empty() {
            if host.in_flight == 0 {
                self.hosts.remove(key);
            }
        } else if was_full {
            // Had URLs held back and no room: it has room now.
            self.ready.push_back(key.to_owned());
        }
    }

    /// How many URLs could be in flight at once, with what is in flight and
    /// held back now: each host's, up to `limit`.
    pub(crate) fn could_run(&self, limit: usize) -> usize {
        let each = self.hosts.values();
        each.map(|host| (host.in_flight + host.held.len()).min(limit))
            .sum()
    }

    /// How many URLs are held back.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Every URL held back, taken out (the run is over, or cut short), in
    /// input order; the hosts' counts of URLs in flight stay.
    pub(crate) fn take_held(&mut self) -> Vec<Held> {
        let mut taken: Vec<Held> = self
            .hosts
            .values_mut()
            .flat_map(|host| host.held.drain(..))
            .collect();
        self.hosts.retain(|_, host| host.in_flight > 0);
        self.ready.clear();
        self.held = 0;
        taken.sort_unstable_by_key(|held| held.index);
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(index: usize, url: &str) -> Held {
        Held {
            index,
            input: url.to_owned(),
            url: crate::check_url(url).unwrap(),
        }
    }

    #[test]
    fn the_key_is_the_origin() {
        let key = |s: &str| host_key(&crate::check_url(s).unwrap());
        assert_eq!(key("http://Example.com/a?b"), "http://example.com");
        assert_eq!(key("http://example.com:80/"), "http://example.com");
        assert_eq!(key("http://example.com:8080/"), "http://example.com:8080");
        assert_eq!(key("https://example.com/"), "https://example.com");
        assert_eq!(
            key("http://bücher.example/"),
            "http://xn--bcher-kva.example"
        );
        assert_ne!(key("http://127.0.0.1:1/"), key("http://127.0.0.1:2/"));
    }

    #[test]
    fn a_limit_at_or_above_the_global_one_never_binds() {
        let options = |c, h| {
            Options::builder()
                .max_in_flight(c)
                .max_per_host(h)
                .build()
                .unwrap()
        };
        assert_eq!(per_host_limit(&options(16, None)), None);
        assert_eq!(per_host_limit(&options(16, Some(16))), None);
        assert_eq!(per_host_limit(&options(16, Some(8))), Some(8));
        assert_eq!(look_ahead(&options(16, Some(16))), 0);
        assert_eq!(look_ahead(&options(16, Some(8))), 64);
        assert_eq!(look_ahead(&options(100, Some(8))), 200);
    }

    #[test]
    fn a_full_host_holds_urls_back_and_hands_them_out_in_order() {
        let mut hosts = Hosts::default();
        let (a, b) = ("http://a", "http://b");
        assert!(hosts.try_start(a, 2));
        assert!(hosts.try_start(a, 2));
        assert!(!hosts.try_start(a, 2), "a is full");
        hosts.hold(a, held(2, "http://a/2"));
        hosts.hold(a, held(3, "http://a/3"));
        assert!(hosts.try_start(b, 2), "b is not a");
        assert_eq!(hosts.held(), 2);
        assert_eq!(hosts.could_run(2), 2 + 1, "a: 2 of 4, b: 1");
        assert!(hosts.next_ready(2).is_none(), "a has no room yet");
        hosts.finished(a, 2);
        // A new URL of a does not jump the queue of a's held URLs.
        assert!(!hosts.try_start(a, 2));
        let (key, url) = hosts.next_ready(2).unwrap();
        assert_eq!((key.as_str(), url.index), (a, 2));
        assert!(hosts.next_ready(2).is_none(), "a is full again");
        hosts.finished(a, 2);
        hosts.finished(a, 2);
        assert_eq!(hosts.next_ready(2).unwrap().1.index, 3);
        assert_eq!(hosts.held(), 0);
        // Every host with nothing in flight and nothing held is forgotten.
        hosts.finished(a, 2);
        hosts.finished(b, 2);
        assert!(hosts.hosts.is_empty() && hosts.ready.is_empty());
    }

    #[test]
    fn held_urls_are_taken_out_in_input_order() {
        let mut hosts = Hosts::default();
        assert!(hosts.try_start("http://a", 1));
        assert!(hosts.try_start("http://b", 1));
        hosts.hold("http://b", held(3, "http://b/3"));
        hosts.hold("http://a", held(2, "http://a/2"));
        let taken: Vec<usize> = hosts.take_held().iter().map(|h| h.index).collect();
        assert_eq!(taken, [2, 3]);
        assert_eq!(hosts.held(), 0);
        // The URLs in flight still count until their outcomes.
        assert!(!hosts.try_start("http://a", 1));
        hosts.finished("http://a", 1);
        hosts.finished("http://b", 1);
        assert!(hosts.hosts.is_empty());
    }
}
