//! robots.txt (RFC 9309), when [`Options::robots`] is on (Scrapy's
//! `ROBOTSTXT_OBEY`): before a URL's first request, the rules of its origin;
//! a URL they disallow ends as [`ErrorKind::RobotsDisallowed`], and no
//! request is made for it.
//!
//! **Once per origin, for the run.** An origin is a scheme, host and port,
//! as for the per-host limit ([`host_key`]). Its rules live in the [`Run`],
//! which every task and thread of a run shares: the first URL of an origin
//! fetches its robots.txt, and the URLs of that origin that come while it
//! does wait for its result instead of fetching it again. Each flavour of
//! the per-URL path waits its own way: a task awaits an event, a thread
//! blocks on the same event, and a [`UrlMachine`](crate::UrlMachine), which
//! its loop can wake only with a timer, asks again every [`POLL`]
//! (`Step::Wait`). The rules are kept for the rest of the run, one entry per
//! origin it has seen (Scrapy also keeps one per host for the whole crawl).
//! A worker process of fetch-processes has a run of its own, so each worker
//! fetches an origin's robots.txt once.
//!
//! **Through the model's own client.** `scheme://host:port/robots.txt` is
//! requested with the model's `attempt`, as a page is: its client, TLS
//! roots, user agent and per-attempt timeout; with the run's retries (a 503
//! is tried again, its `Retry-After` honoured) and the host's pace (a delay
//! before it, as before any request to that host); its redirects followed,
//! at least five (RFC 9309 section 2.3.1.2), to another host too. These
//! requests belong to no URL: no record shows them and no `attempts` counts
//! them; only the server sees them.
//!
//! **What the answer means** (RFC 9309 section 2.3.1):
//!
//! | the answer (after retries) | the rules |
//! |---|---|
//! | 2xx | the file, its first 500 KiB parsed |
//! | a redirect past the limit, or to no valid URL | none: every URL may be fetched |
//! | a 4xx but 429, 404 included ("unavailable"); a 3xx without `Location` | none: every URL may be fetched |
//! | a 429 or a 5xx ("unreachable") | every URL disallowed |
//! | no answer (`connect`, `tls`, `timeout`, `protocol`, `unsupported`), or a body over [`Options::max_body_bytes`] | every URL disallowed |
//! | the run cancelled or past its deadline | none kept: the URL ends `cancelled` or `deadline`, and the origin's next URL tries again |
//!
//! A 429 counts as "unreachable", where RFC 9309 makes every 4xx
//! "unavailable": a server that asks for fewer requests has not said that it
//! has no rules (Google reads a 429 the same way).
//!
//! **Whose rules.** Those of the product token of [`Options::user_agent`],
//! its text before the first `/` or space ([`robots_agent`]:
//! `fetchlab/0.1.0` is `fetchlab`), matched with each group's `User-agent`
//! lines without regard to case (RFC 9309 section 2.2.1); the groups that
//! match are merged; without one, the `*` group; without that, no rules.
//! Scrapy's `ROBOTSTXT_USER_AGENT` is always this token here.
//!
//! **Redirects of a page.** A URL is checked before its first request, and
//! each redirect it leads to on its own origin is checked against the same
//! rules before it is requested: a disallowed one ends the URL
//! `robots_disallowed`, its `attempts` counting the requests made. A
//! redirect to another origin is not checked: that origin's robots.txt would
//! have to be fetched inside the attempt's time budget, and whether a slow
//! one ended the URL as a `timeout` or as disallowed would depend on the
//! model's timer. (Scrapy sends a redirect back through its scheduler as a
//! new request, so it checks every hop.)
//!
//! **The parser** is the `robotxt` crate: RFC 9309's matching (the longest
//! matching pattern decides, `Allow` wins a tie, `*` matches any run of
//! characters and a final `$` the end), paths and patterns compared
//! percent-normalised, and `/robots.txt` itself always allowed.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use event_listener::{Event, EventListener, Listener};
use robotxt::{AccessResult, Robots};
use url::{Position, Url};

use crate::fetch::Answer;
use crate::hosts::host_key;
use crate::response::Redirects;
use crate::{ErrorKind, FetchError, Options, Run};

/// How often a [`UrlMachine`](crate::UrlMachine) waiting for another URL's
/// fetch of its origin's robots.txt asks again.
pub(crate) const POLL: Duration = Duration::from_millis(5);

/// The fewest redirects followed to a robots.txt (RFC 9309 section 2.3.1.2).
const MIN_REDIRECTS: u32 = 5;

/// The name robots.txt groups are matched with, from a `User-Agent` value:
/// its product token, the text before the first `/` or space
/// (`fetchlab/0.1.0 (+https://example.org)` is `fetchlab`).
pub fn robots_agent(user_agent: &str) -> &str {
    let token = user_agent.trim_start().split(['/', ' ', '\t']).next();
    // `split` yields at least one piece, if only an empty one.
    token.unwrap_or_default()
}

/// One origin's rules, for the run's agent.
#[derive(Debug)]
pub(crate) struct Rules {
    robots: Robots,
    /// Where they come from (robots.txt's URL), for a record's message.
    source: String,
    /// Why every URL is disallowed, when robots.txt could not be fetched.
    unreachable: Option<String>,
}

impl Rules {
    /// The rules a robots.txt fetch ended with (the table in the module's
    /// header), or the run's stop, which leaves none.
    fn from_fetch(
        agent: &str,
        source: &Url,
        fetched: Result<Answer, FetchError>,
    ) -> Result<Rules, FetchError> {
        let (access, unreachable) = match &fetched {
            Ok((file, _)) => (AccessResult::Successful(&file.body), None),
            Err(e) => match (e.kind(), e.status()) {
                (ErrorKind::Deadline | ErrorKind::Cancelled, _) => return Err(e.clone()),
                (ErrorKind::Redirect, _) => (AccessResult::TooManyRedirects, None),
                (ErrorKind::HttpStatus, Some(status)) if status < 500 && status != 429 => {
                    (AccessResult::Unavailable, None)
                }
                _ => (AccessResult::Unreachable, Some(e.to_string())),
            },
        };
        Ok(Rules {
            robots: Robots::from_access(access, agent),
            source: source.to_string(),
            unreachable,
        })
    }

    /// `Ok` if `url` may be fetched, else its `robots_disallowed` error,
    /// saying which rule (or that robots.txt could not be fetched).
    pub(crate) fn check(&self, url: &Url) -> Result<(), FetchError> {
        if self.robots.is_url_allowed(url) {
            return Ok(());
        }
        let path = &url[Position::BeforePath..Position::AfterQuery];
        let source = &self.source;
        let message = match (&self.unreachable, self.robots.matching_rule(path)) {
            (Some(why), _) => {
                format!("{source} could not be fetched ({why}): RFC 9309 disallows every URL then")
            }
            (None, Some(rule)) => format!(
                "{source} disallows {path} (User-agent: {}, Disallow: {})",
                self.robots.user_agent(),
                rule.pattern()
            ),
            (None, None) => format!("{source} disallows {path}"),
        };
        Err(FetchError::new(ErrorKind::RobotsDisallowed, message))
    }
}

/// The redirect policy of one attempt: how many redirects it follows, and
/// the rules its hops on its own origin are checked against.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hops<'a> {
    max: u32,
    rules: Option<&'a Rules>,
}

impl<'a> Hops<'a> {
    /// A page's: [`Options::max_redirects`], and `rules` (none when
    /// robots.txt is not obeyed).
    pub(crate) fn page(options: &Options, rules: Option<&'a Rules>) -> Self {
        Hops {
            max: options.max_redirects(),
            rules,
        }
    }

    /// A robots.txt's: at least five redirects, none checked.
    pub(crate) fn robots(options: &Options) -> Self {
        Hops {
            max: options.max_redirects().max(MIN_REDIRECTS),
            rules: None,
        }
    }

    /// The redirect chain of an attempt starting at `url`.
    pub(crate) fn start(&self, url: &Url) -> Redirects {
        Redirects::new(url.clone(), self.max)
    }

    /// A redirect from `from` (the attempt's first URL) to `to`, before it is
    /// requested: `robots_disallowed` if `to` is on `from`'s origin and the
    /// rules disallow it.
    pub(crate) fn check(&self, from: &Url, to: &Url) -> Result<(), FetchError> {
        match self.rules {
            Some(rules) if from.origin() == to.origin() => rules.check(to),
            _ => Ok(()),
        }
    }
}

/// Every origin's rules in one run (it lives in [`Run`]), and who is
/// fetching which.
#[derive(Debug)]
pub(crate) struct RobotsCache {
    /// The product token groups are matched with.
    agent: String,
    /// One slot per origin, never removed during the run. A std Mutex: held
    /// for a map lookup, never across a wait.
    origins: Mutex<HashMap<String, Arc<Slot>>>,
}

/// One origin's rules: not known yet, being fetched, or known; and the
/// event that says the state changed, for the URLs that wait.
#[derive(Debug, Default)]
struct Slot {
    state: Mutex<State>,
    changed: Event,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Unknown,
    Fetching,
    Known(Arc<Rules>),
}

/// What a URL does about its origin's rules, from [`RobotsCache::gate`].
pub(crate) enum Gate {
    /// Here they are.
    Known(Arc<Rules>),
    /// Fetch them, for the whole run: the claim says where, and gives the
    /// slot back if it is dropped unfilled (a cancel, a panic).
    Fetch(Claim),
    /// Another URL is fetching them: wait for this, then ask again.
    Wait(EventListener),
}

/// The right, and the duty, to fetch one origin's robots.txt for the run.
#[derive(Debug)]
pub(crate) struct Claim {
    slot: Arc<Slot>,
    url: Url,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these locks are held: a map lookup, a swap.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RobotsCache {
    pub(crate) fn new(options: &Options) -> Self {
        RobotsCache {
            agent: robots_agent(options.user_agent()).to_owned(),
            origins: Mutex::new(HashMap::new()),
        }
    }

    /// What `url` does about its origin's rules now.
    pub(crate) fn gate(&self, url: &Url) -> Gate {
        let slot = Arc::clone(lock(&self.origins).entry(host_key(url)).or_default());
        let mut state = lock(&slot.state);
        match &*state {
            State::Known(rules) => return Gate::Known(Arc::clone(rules)),
            // Listening before the lock is let go: a change made after it
            // cannot be missed.
            State::Fetching => return Gate::Wait(slot.changed.listen()),
            State::Unknown => *state = State::Fetching,
        }
        drop(state);
        Gate::Fetch(Claim {
            url: robots_url(url),
            slot,
        })
    }

    /// Fills `claim`'s slot with the rules its fetch ended with, for every
    /// URL of the run, and returns them; or returns the run's stop, and the
    /// slot is left for the origin's next URL to fetch.
    pub(crate) fn settle(
        &self,
        claim: Claim,
        fetched: Result<Answer, FetchError>,
    ) -> Result<Arc<Rules>, FetchError> {
        let rules = Arc::new(Rules::from_fetch(&self.agent, &claim.url, fetched)?);
        *lock(&claim.slot.state) = State::Known(Arc::clone(&rules));
        // Dropping the claim wakes the URLs that wait.
        Ok(rules)
    }
}

impl Claim {
    /// The robots.txt to fetch.
    pub(crate) fn url(&self) -> &Url {
        &self.url
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut state = lock(&self.slot.state);
        if matches!(*state, State::Fetching) {
            *state = State::Unknown;
        }
        drop(state);
        // Every waiter asks again: the rules are there, or one of them
        // takes the fetch over.
        self.slot.changed.notify(usize::MAX);
    }
}

/// `url`'s origin's `/robots.txt` (no credentials, query or fragment).
fn robots_url(url: &Url) -> Url {
    let mut robots = url.clone();
    robots.set_path("/robots.txt");
    robots.set_query(None);
    robots.set_fragment(None);
    // Cannot fail on an http(s) URL with a host, which every URL here is.
    let _ = robots.set_username("");
    let _ = robots.set_password(None);
    robots
}

/// The per-URL path's first step, on a task: `url` admitted by its origin's
/// robots.txt, with the rules its redirects are checked against (`None`
/// when robots.txt is not obeyed); or why not: `robots_disallowed`, or the
/// run's stop. `fetch` gets a robots.txt, when this URL is the first of its
/// origin to need it; while another URL fetches it, this waits.
pub(crate) async fn admit<F, Fut>(
    run: &Run,
    url: &Url,
    mut fetch: F,
) -> Result<Option<Arc<Rules>>, FetchError>
where
    F: FnMut(Url) -> Fut,
    Fut: Future<Output = Result<Answer, FetchError>>,
{
    if !run.options().robots() {
        return Ok(None);
    }
    let rules = loop {
        match run.robots().gate(url) {
            Gate::Known(rules) => break rules,
            Gate::Wait(listener) => listener.await,
            Gate::Fetch(claim) => {
                let fetched = fetch(claim.url().clone()).await;
                break run.robots().settle(claim, fetched)?;
            }
        }
    };
    rules.check(url)?;
    Ok(Some(rules))
}

/// [`admit`] on a thread that blocks: the same, waiting on the same event.
/// (No cancel wakes the wait: the URL that fetches does wake, since its
/// request is cut off, and its claim then wakes this one.)
pub(crate) fn admit_blocking(
    run: &Run,
    url: &Url,
    mut fetch: impl FnMut(Url) -> Result<Answer, FetchError>,
) -> Result<Option<Arc<Rules>>, FetchError> {
    if !run.options().robots() {
        return Ok(None);
    }
    let rules = loop {
        match run.robots().gate(url) {
            Gate::Known(rules) => break rules,
            Gate::Wait(listener) => listener.wait(),
            Gate::Fetch(claim) => {
                let fetched = fetch(claim.url().clone());
                break run.robots().settle(claim, fetched)?;
            }
        }
    };
    rules.check(url)?;
    Ok(Some(rules))
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_lite::future;

    use super::*;
    use crate::response::check_status;
    use crate::{
        AsyncRuntime, CancelToken, Fetched, Outcome, Step, UrlMachine, fetch_one,
        fetch_one_blocking,
    };

    fn u(url: &str) -> Url {
        crate::check_url(url).unwrap()
    }

    fn parsed(txt: &str, agent: &str) -> Rules {
        let file = Fetched {
            status: 200,
            body: txt.as_bytes().to_vec(),
            content_type: None,
        };
        let source = u("http://h/robots.txt");
        Rules::from_fetch(agent, &source, Ok((file, source.clone()))).unwrap()
    }

    fn allowed(rules: &Rules, path: &str) -> bool {
        rules.check(&u(&format!("http://h{path}"))).is_ok()
    }

    /// RFC 9309 section 5.1, the simple example, for each of its agents.
    #[test]
    fn the_rfcs_simple_example() {
        let txt = "User-Agent: *\nDisallow: *.gif$\nDisallow: /example/\n\
                   Allow: /publications/\n\n\
                   User-Agent: foobot\nDisallow:/\nAllow:/example/page.html\n\
                   Allow:/example/allowed.gif\n\n\
                   User-Agent: barbot\nUser-Agent: bazbot\nDisallow: /example/page.html\n\n\
                   User-Agent: quxbot\n\nEOF\n";
        let foobot = parsed(txt, "foobot");
        assert!(allowed(&foobot, "/example/page.html"));
        assert!(allowed(&foobot, "/example/allowed.gif"));
        assert!(!allowed(&foobot, "/"));
        assert!(!allowed(&foobot, "/publications/"));
        for bot in ["barbot", "BazBot"] {
            let rules = parsed(txt, bot);
            assert!(!allowed(&rules, "/example/page.html"), "{bot}");
            assert!(allowed(&rules, "/example/other.html"), "{bot}");
            assert!(allowed(&rules, "/a.gif"), "{bot}: not the * group");
        }
        // An empty group: every URL.
        let quxbot = parsed(txt, "quxbot");
        assert!(allowed(&quxbot, "/example/page.html") && allowed(&quxbot, "/a.gif"));
        // No group of its own: the * group.
        let other = parsed(txt, "otherbot");
        assert!(!allowed(&other, "/images/a.gif"));
        assert!(allowed(&other, "/images/a.gif?size=2"), "$ ends the URL");
        assert!(!allowed(&other, "/example/x"));
        assert!(allowed(&other, "/publications/x"));
        assert!(allowed(&other, "/"));
    }

    /// RFC 9309 section 5.2: the longest match decides; section 2.2.2: an
    /// Allow and a Disallow of the same length, Allow.
    #[test]
    fn the_longest_match_wins_and_allow_wins_a_tie() {
        let txt = "User-Agent: foobot\nAllow: /example/page/\n\
                   Disallow: /example/page/disallowed.gif\n\
                   Disallow: /tie\nAllow: /tie\n";
        let rules = parsed(txt, "foobot");
        assert!(allowed(&rules, "/example/page/"));
        assert!(allowed(&rules, "/example/page/other.gif"));
        assert!(!allowed(&rules, "/example/page/disallowed.gif"));
        assert!(allowed(&rules, "/tie"));
    }

    /// RFC 9309 section 2.2.3: `*` and `$`; section 2.2.2: paths compared
    /// percent-encoded, so a rule in UTF-8 matches the URL as requested.
    #[test]
    fn wildcards_anchors_and_encodings() {
        let txt = "User-agent: *\nDisallow: /*.php$\nDisallow: /private*/x\n\
                   Disallow: /foo/bar/\u{30c4}\nDisallow: /q?*secret\n";
        let rules = parsed(txt, "fetchlab");
        assert!(!allowed(&rules, "/a/index.php"));
        assert!(allowed(&rules, "/a/index.php?id=1"));
        assert!(allowed(&rules, "/a/index.php5"));
        assert!(!allowed(&rules, "/private-area/y/x"));
        assert!(allowed(&rules, "/private-area/y"));
        assert!(!allowed(&rules, "/foo/bar/%E3%83%84"));
        assert!(!allowed(&rules, "/foo/bar/\u{30c4}/more"));
        assert!(!allowed(&rules, "/q?a=1&secret=2"));
        assert!(allowed(&rules, "/q?a=1"));
        // The file itself is never disallowed.
        assert!(allowed(
            &parsed("User-agent: *\nDisallow: /\n", "x"),
            "/robots.txt"
        ));
    }

    /// RFC 9309 section 2.2.1: the product token, case-insensitive; the
    /// groups that match merged; the * group otherwise; no rules without it.
    #[test]
    fn the_group_is_the_product_tokens() {
        assert_eq!(robots_agent("fetchlab/0.1.0"), "fetchlab");
        assert_eq!(
            robots_agent("fetchlab-conformance/1.0 (+https://example.invalid/probe)"),
            "fetchlab-conformance"
        );
        assert_eq!(robots_agent("curl"), "curl");
        assert_eq!(robots_agent("my bot"), "my");
        let txt = "User-agent: FetchLab\nDisallow: /a\n\nUser-agent: *\nDisallow: /\n\n\
                   User-agent: fetchlab\nDisallow: /b\n";
        let rules = parsed(txt, robots_agent("fetchlab/0.1.0"));
        assert!(!allowed(&rules, "/a") && !allowed(&rules, "/b"), "merged");
        assert!(allowed(&rules, "/c"), "not the * group");
        // A longer name is another agent (exact match, not a prefix).
        let rules = parsed(txt, "fetchlabs");
        assert!(!allowed(&rules, "/c"), "the * group");
        let rules = parsed("User-agent: other\nDisallow: /\n", "fetchlab");
        assert!(allowed(&rules, "/c"), "no group, no rules");
    }

    #[test]
    fn what_an_answer_means() {
        let source = u("http://h/robots.txt");
        let rules = |fetched| Rules::from_fetch("fetchlab", &source, fetched);
        let status = |s| Err(FetchError::http_status(s, None));
        // Unavailable: every URL may be fetched.
        let redirects = Err(FetchError::new(
            ErrorKind::Redirect,
            "more than 5 redirects",
        ));
        for fetched in [
            status(404),
            status(403),
            status(401),
            status(410),
            redirects,
        ] {
            let why = format!("{fetched:?}");
            assert!(allowed(&rules(fetched).unwrap(), "/x"), "{why}");
        }
        // Unreachable: none may, and the record says why.
        let unreachable = [
            status(500),
            status(503),
            status(429),
            Err(FetchError::new(ErrorKind::Timeout, "slow")),
            Err(FetchError::new(ErrorKind::Connect, "refused")),
            Err(FetchError::new(ErrorKind::Tls, "untrusted")),
            Err(FetchError::new(ErrorKind::BodyTooLarge, "big")),
        ];
        for fetched in unreachable {
            let why = format!("{fetched:?}");
            let error = rules(fetched).unwrap().check(&u("http://h/x")).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::RobotsDisallowed, "{why}");
            assert!(error.message().contains("could not be fetched"), "{why}");
        }
        // The run's end: no rules at all.
        for kind in [ErrorKind::Deadline, ErrorKind::Cancelled] {
            let error = rules(Err(FetchError::new(kind, "stop"))).unwrap_err();
            assert_eq!(error.kind(), kind);
        }
        // A parsed rule names itself.
        let error = parsed("User-agent: *\nDisallow: /x\n", "fetchlab")
            .check(&u("http://h/x/y?z"))
            .unwrap_err();
        let expected = "http://h/robots.txt disallows /x/y?z (User-agent: *, Disallow: /x)";
        assert_eq!(error.message(), expected);
    }

    #[test]
    fn a_redirect_on_the_same_origin_is_checked() {
        let options = Options::default();
        let rules = parsed("User-agent: *\nDisallow: /no\n", "fetchlab");
        let hops = Hops::page(&options, Some(&rules));
        let from = u("http://h/a");
        assert!(hops.check(&from, &u("http://h/yes")).is_ok());
        let error = hops.check(&from, &u("http://h/no")).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::RobotsDisallowed);
        // Another origin (port, scheme or host) is not this file's.
        for other in ["http://h:81/no", "https://h/no", "http://g/no"] {
            assert!(hops.check(&from, &u(other)).is_ok(), "{other}");
        }
        assert!(
            Hops::page(&options, None)
                .check(&from, &u("http://h/no"))
                .is_ok()
        );
        let few = Options::builder().max_redirects(1).build().unwrap();
        assert_eq!(Hops::robots(&few).max, 5, "RFC 9309: at least five");
        assert_eq!(Hops::page(&few, None).max, 1);
    }

    #[test]
    fn the_url_of_the_file() {
        let url = u("https://user:pw@Example.org:8443/a/b?c=d#e");
        assert_eq!(
            robots_url(&url).as_str(),
            "https://example.org:8443/robots.txt"
        );
    }

    #[test]
    fn one_claim_per_origin_and_a_dropped_claim_is_given_back() {
        let run_options = Options::builder().robots(true).build().unwrap();
        let cache = RobotsCache::new(&run_options);
        let (a1, a2, b) = (u("http://a/1"), u("http://a/2"), u("http://b/1"));
        let Gate::Fetch(claim) = cache.gate(&a1) else {
            panic!("the first URL of an origin fetches")
        };
        assert_eq!(claim.url().as_str(), "http://a/robots.txt");
        assert!(matches!(cache.gate(&a2), Gate::Wait(_)));
        assert!(matches!(cache.gate(&b), Gate::Fetch(_)), "another origin");
        // Dropped unfilled (a cancel): the next URL fetches.
        let waiting = match cache.gate(&a2) {
            Gate::Wait(listener) => listener,
            _ => panic!("still fetching"),
        };
        drop(claim);
        assert!(
            waiting.wait_timeout(Duration::from_secs(5)).is_some(),
            "woken"
        );
        let Gate::Fetch(claim) = cache.gate(&a2) else {
            panic!("taken over")
        };
        let rules = cache.settle(claim, Err(FetchError::http_status(404, None)));
        assert!(rules.unwrap().check(&a1).is_ok());
        assert!(matches!(cache.gate(&a1), Gate::Known(_)));
    }

    // ------------------------------------------- the three flavours

    /// A server for the per-URL path's flavours: robots.txt (counted)
    /// disallows /no and redirects /hop to /no; every other path is a page.
    #[derive(Default)]
    struct Site {
        robots: AtomicUsize,
        pages: Mutex<Vec<String>>,
    }

    impl Site {
        fn get(&self, url: &Url) -> Result<Fetched, FetchError> {
            let ok = |body: &str| {
                Ok(Fetched {
                    status: 200,
                    body: body.as_bytes().to_vec(),
                    content_type: None,
                })
            };
            if url.path() == "/robots.txt" {
                self.robots.fetch_add(1, Ordering::SeqCst);
                return ok("User-agent: fetchlab\nDisallow: /no\n");
            }
            lock(&self.pages).push(url.path().to_string());
            match url.path() {
                "/hop" => check_status(302, None, Some("/no")).map(|()| unreachable!()),
                _ => ok("<title>T</title>"),
            }
        }
        fn pages(&self) -> Vec<String> {
            lock(&self.pages).clone()
        }
    }

    fn robots_run() -> (Options, CancelToken) {
        let options = Options::builder().robots(true).retries(0).build().unwrap();
        (options, CancelToken::new())
    }

    fn kinds(outcomes: &[Outcome]) -> Vec<Option<ErrorKind>> {
        outcomes.iter().map(Outcome::error_kind).collect()
    }

    const PATHS: [&str; 3] = ["/yes", "/no", "/hop"];
    const DISALLOWED: Option<ErrorKind> = Some(ErrorKind::RobotsDisallowed);

    #[test]
    fn threads_fetch_the_file_once_and_skip_what_it_disallows() {
        let (options, cancel) = robots_run();
        let run = Run::new(&options, &cancel);
        let site = Site::default();
        let outcomes: Vec<Outcome> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..12)
                .map(|i| {
                    let (run, site) = (&run, &site);
                    s.spawn(move || {
                        let url = u(&format!("http://h{}", PATHS[i % 3]));
                        fetch_one_blocking(run, i, url, |url, _| site.get(&url))
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert_eq!(site.robots.load(Ordering::SeqCst), 1, "once for the run");
        for o in &outcomes {
            let expected = match PATHS[o.index % 3] {
                "/yes" => (None, 1),
                "/no" => (DISALLOWED, 0),
                _ => (DISALLOWED, 1),
            };
            assert_eq!((o.error_kind(), o.attempts), expected, "{o:?}");
        }
        let pages = site.pages();
        assert_eq!(pages.iter().filter(|p| *p == "/yes").count(), 4);
        assert_eq!(pages.iter().filter(|p| *p == "/hop").count(), 4);
        assert!(!pages.contains(&"/no".to_string()), "never requested");

        // Off: no robots.txt, every page requested.
        let off = Options::default();
        let run = Run::new(&off, &cancel);
        let site = Site::default();
        let o = fetch_one_blocking(&run, 0, u("http://h/no"), |url, _| site.get(&url));
        assert!(o.is_ok());
        assert_eq!(site.robots.load(Ordering::SeqCst), 0);
    }

    /// A runtime whose timers never fire (no timeout, no backoff here) and
    /// whose offloading is inline, under `future::block_on`.
    struct Inline;

    impl AsyncRuntime for Inline {
        async fn sleep(&self, _: Duration) {
            future::pending().await
        }
        async fn offload<T: Send + 'static>(
            &self,
            work: impl FnOnce() -> T + Send + 'static,
        ) -> Result<T, FetchError> {
            Ok(work())
        }
    }

    #[test]
    fn tasks_wait_for_the_one_that_fetches() {
        let (options, cancel) = robots_run();
        let run = Run::new(&options, &cancel);
        let site = Site::default();
        // The first task's robots.txt answers only when the test says so:
        // meanwhile the other tasks of its origin must wait, not fetch.
        let (release, released) = (Event::new(), Cell::new(false));
        let tasks = PATHS.iter().enumerate().map(|(i, path)| {
            let (run, site, release, released) = (&run, &site, &release, &released);
            fetch_one(
                run,
                &Inline,
                i,
                u(&format!("http://h{path}")),
                move |url, _| {
                    let waited =
                        (url.path() == "/robots.txt" && !released.get()).then(|| release.listen());
                    async move {
                        if let Some(listener) = waited {
                            listener.await;
                        }
                        site.get(&url)
                    }
                },
            )
        });
        let mut tasks: Vec<_> = tasks.map(Box::pin).collect();
        let outcomes = future::block_on(async {
            // Every task polled once: the first fetches, the others wait.
            for task in &mut tasks {
                assert!(future::poll_once(task.as_mut()).await.is_none());
            }
            released.set(true);
            release.notify(usize::MAX);
            let mut outcomes = Vec::new();
            for task in tasks {
                outcomes.push(task.await);
            }
            outcomes
        });
        assert_eq!(site.robots.load(Ordering::SeqCst), 1);
        assert_eq!(kinds(&outcomes), [None, DISALLOWED, DISALLOWED]);
        assert_eq!(site.pages(), ["/yes", "/hop"]);
    }

    #[test]
    fn machines_wait_in_short_steps_for_the_one_that_fetches() {
        let (options, cancel) = robots_run();
        let run = Run::new(&options, &cancel);
        let site = Site::default();
        let started: Vec<(UrlMachine, Step)> = PATHS
            .iter()
            .enumerate()
            .map(|(i, path)| UrlMachine::start(&run, i, u(&format!("http://h{path}"))))
            .collect();
        let mut machines = Vec::new();
        let mut steps = Vec::new();
        for (machine, step) in started {
            machines.push(machine);
            steps.push(step);
        }
        // The first asks for robots.txt; the others wait, briefly.
        assert!(matches!(&steps[0], Step::Request { url, .. } if url.path() == "/robots.txt"));
        for step in &steps[1..] {
            let Step::Wait { until } = step else {
                panic!("expected a short wait, got {step:?}")
            };
            assert!(*until <= std::time::Instant::now() + POLL);
        }
        // A loop in miniature: answer requests, fire timers at once.
        let requested = RefCell::new(Vec::new());
        let mut outcomes: Vec<Option<Outcome>> = vec![None, None, None];
        while outcomes.iter().any(Option::is_none) {
            for (i, machine) in machines.iter_mut().enumerate() {
                let step = std::mem::replace(
                    &mut steps[i],
                    Step::Wait {
                        until: std::time::Instant::now(),
                    },
                );
                steps[i] = match step {
                    Step::Request { url, .. } => {
                        requested.borrow_mut().push(url.path().to_string());
                        machine.on_answer(&run, site.get(&url))
                    }
                    Step::Wait { .. } if outcomes[i].is_none() => machine.on_timer(&run),
                    Step::Cpu(job) => {
                        outcomes[i] = Some(job.run());
                        Step::Wait {
                            until: std::time::Instant::now(),
                        }
                    }
                    Step::Done(outcome) => {
                        outcomes[i] = Some(outcome);
                        Step::Wait {
                            until: std::time::Instant::now(),
                        }
                    }
                    other => other,
                };
            }
        }
        let outcomes: Vec<Outcome> = outcomes.into_iter().flatten().collect();
        assert_eq!(site.robots.load(Ordering::SeqCst), 1);
        assert_eq!(kinds(&outcomes), [None, DISALLOWED, DISALLOWED]);
        let attempts: Vec<u32> = outcomes.iter().map(|o| o.attempts).collect();
        assert_eq!(attempts, [1, 0, 1], "robots.txt's request is no URL's");
        assert!(!requested.borrow().contains(&"/no".to_string()));
    }

    #[test]
    fn a_stopped_run_keeps_no_rules() {
        let (options, cancel) = robots_run();
        let run = Run::new(&options, &cancel);
        cancel.cancel();
        let site = Site::default();
        let o = fetch_one_blocking(&run, 0, u("http://h/yes"), |url, _| site.get(&url));
        assert_eq!(
            (o.error_kind(), o.attempts),
            (Some(ErrorKind::Cancelled), 0)
        );
        assert_eq!(site.robots.load(Ordering::SeqCst), 0, "nothing requested");
        assert!(matches!(run.robots().gate(&u("http://h/")), Gate::Fetch(_)));
    }
}
