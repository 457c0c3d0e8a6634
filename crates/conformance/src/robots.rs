//! Cases for robots.txt (`Options::robots`, RFC 9309): each mock server is
//! a host of its own with its own `/robots.txt`, and counts the requests for
//! it (`robots_requests`) apart from those for its pages.

use std::time::Duration;

use fetch_core::{ErrorKind, Model, Outcome};
use mock_server::{Latency, MockConfig, MockServer, RobotsTxt};

use crate::{build, kind, options, run, server};

/// The agent of these cases; its product token, `fetchlab-conformance`, is
/// the name the robots.txt groups are matched with.
const AGENT: &str = "fetchlab-conformance/1.0 (+https://example.invalid/probe)";

fn serving(robots: RobotsTxt) -> MockServer {
    server(MockConfig {
        robots,
        ..MockConfig::default()
    })
}

/// How many times one host's robots.txt may be requested in a run of
/// `model`: once, for a model whose URLs share one run; once per worker,
/// for a model that runs them in child processes (`isolates_crashes`), each
/// with its rules of its own, at most one per request in flight.
fn assert_fetched_once(model: &dyn Model, srv: &MockServer, concurrency: usize, what: &str) {
    let n = srv.stats().robots_requests;
    if model.isolates_crashes() {
        assert!(
            (1..=concurrency as u64).contains(&n),
            "{what}: robots.txt requested {n} times, at most once per worker ({concurrency} slots)"
        );
    } else {
        assert_eq!(n, 1, "{what}: robots.txt requested once for the run");
    }
}

/// Case: robots.txt is obeyed. Its group for this agent disallows some
/// pages (a prefix, an `Allow` that is longer, a `$`, a `*`), the `*` group
/// disallows everything (so a model reading the wrong group fails); 20 ms
/// of latency keeps the first C URLs in flight together while the first of
/// them fetches robots.txt. A disallowed URL is `robots_disallowed` and
/// never requested; a redirect to a disallowed page is stopped before it is
/// requested; every other page is fetched; robots.txt is requested once for
/// the run, with the configured agent, whatever the concurrency. Then the
/// same URLs with robots.txt not obeyed: all fetched, robots.txt never
/// requested.
pub fn robots_txt_is_obeyed(model: &dyn Model) {
    let txt = "User-agent: *\nDisallow: /\n\n\
               User-agent: fetchlab-conformance\nDisallow: /page/1\nAllow: /page/15\n\
               Disallow: /page/3$\nDisallow: /*?private\n";
    let srv = server(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(20)),
        robots: RobotsTxt::Text(txt.to_string()),
        ..MockConfig::default()
    });
    let mut urls = srv.page_urls(40);
    urls.push(format!("{}?private=1", srv.page_url(40)));
    // A redirect on the same host, to a page the rules disallow.
    urls.push(format!("{}?location=%2Fpage%2F12", srv.page_url(41)));
    // And one to a page they allow.
    urls.push(format!("{}?location=%2Fpage%2F44", srv.page_url(42)));
    let disallowed =
        |id: usize| matches!(id, 1 | 3 | 40 | 41) || ((10..=19).contains(&id) && id != 15);
    let opts = build(options().user_agent(AGENT).robots(true).retries(0));
    let outcomes = run(model, &urls, &opts);
    for o in &outcomes {
        if disallowed(o.index) {
            assert_eq!(
                kind(o),
                Some(ErrorKind::RobotsDisallowed),
                "page {}: {:?}",
                o.index,
                o.result
            );
            let made = u32::from(o.index == 41);
            assert_eq!(o.attempts, made, "page {}: requests made", o.index);
        } else {
            assert!(o.is_ok(), "page {}: {:?}", o.index, o.result);
            assert_eq!(o.attempts, 1, "page {}", o.index);
        }
    }
    let title = |o: &Outcome| o.result.as_ref().ok().and_then(|p| p.title.clone());
    assert_eq!(title(&outcomes[42]).as_deref(), Some("Page 44"));
    let stats = srv.stats();
    for id in 0..45u64 {
        let requests = stats.requests_per_id.get(&id).copied().unwrap_or(0);
        let expected = match id as usize {
            // Requested; its redirect, to page 12, was not.
            41 => 1,
            // Not in the list; page 44 is page 42's redirect.
            43 => 0,
            id if disallowed(id) => 0,
            _ => 1,
        };
        assert_eq!(requests, expected, "requests for page {id}");
    }
    assert_fetched_once(model, &srv, model.concurrency(&opts), "obeyed");
    assert_eq!(
        stats.user_agents.keys().collect::<Vec<_>>(),
        [AGENT],
        "every request, robots.txt's too, with the configured agent"
    );

    // Not obeyed: every page fetched, robots.txt never asked for.
    srv.reset_stats();
    let outcomes = run(model, &urls, &build(options().user_agent(AGENT).retries(0)));
    for o in &outcomes {
        assert!(o.is_ok(), "robots off, page {}: {:?}", o.index, o.result);
    }
    assert_eq!(srv.stats().robots_requests, 0, "robots off");
}

/// Case: what a robots.txt that cannot be read means (RFC 9309 section
/// 2.3.1), one host per answer, all in one run. A 404 or a 403: no rules,
/// every page fetched. A 500, a 429, or no answer within the timeout: every
/// page `robots_disallowed`, none requested. A redirect to another host's
/// robots.txt: that file's rules, for the host that redirected. Each
/// robots.txt requested once (retries off, so each answer is final).
pub fn robots_txt_failures_follow_rfc_9309(model: &dyn Model) {
    let target = serving(RobotsTxt::Text(
        "User-agent: *\nDisallow: /page/2\n".to_string(),
    ));
    let hosts = [
        ("404", serving(RobotsTxt::NotFound), Some(vec![])),
        ("403", serving(RobotsTxt::Status(403)), Some(vec![])),
        ("500", serving(RobotsTxt::Status(500)), None),
        ("429", serving(RobotsTxt::Status(429)), None),
        ("hang", serving(RobotsTxt::Hang), None),
        (
            "redirect",
            serving(RobotsTxt::Redirect(format!(
                "{}/robots.txt",
                target.base_url()
            ))),
            Some(vec![2]),
        ),
    ];
    let per_host = 4;
    let urls: Vec<String> = hosts
        .iter()
        .flat_map(|(_, srv, _)| srv.page_urls(per_host))
        .collect();
    let opts = build(
        options()
            .user_agent(AGENT)
            .robots(true)
            .retries(0)
            .request_timeout(Duration::from_millis(500)),
    );
    let outcomes = run(model, &urls, &opts);
    for (n, (what, srv, rules)) in hosts.iter().enumerate() {
        for o in &outcomes[n * per_host as usize..(n + 1) * per_host as usize] {
            let page = o.index % per_host as usize;
            let expected = match rules {
                Some(disallowed) if !disallowed.contains(&page) => None,
                _ => Some(ErrorKind::RobotsDisallowed),
            };
            assert_eq!(kind(o), expected, "{what}, page {page}: {:?}", o.result);
            if expected.is_some() {
                assert_eq!(o.attempts, 0, "{what}, page {page}");
            }
        }
        let stats = srv.stats();
        let pages: u64 = stats.requests_per_id.values().sum();
        let fetched = match rules {
            Some(disallowed) => per_host - disallowed.len() as u64,
            None => 0,
        };
        assert_eq!(pages, fetched, "{what}: pages requested");
        assert_fetched_once(model, srv, model.concurrency(&opts), what);
    }
    let message = outcomes[2 * per_host as usize]
        .result
        .as_ref()
        .expect_err("disallowed");
    assert!(
        message.message().contains("could not be fetched"),
        "{message}"
    );
    // The redirect was followed to the other host's file.
    let followed = target.stats();
    assert!(followed.robots_requests >= 1);
    assert_eq!(followed.requests_per_id.len(), 0, "no page of its own");
}
