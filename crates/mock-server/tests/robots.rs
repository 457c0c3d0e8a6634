//! `/robots.txt` answers as `MockConfig::robots` says, and every request for
//! it is counted, in `robots_requests` and with the other requests.

mod common;

use std::time::Duration;

use common::{agent, get};
use mock_server::{MockConfig, MockServer, RobotsTxt};

fn serving(robots: RobotsTxt) -> MockServer {
    MockServer::start(MockConfig {
        robots,
        ..MockConfig::default()
    })
    .expect("start server")
}

fn robots_url(server: &MockServer) -> String {
    format!("{}/robots.txt", server.base_url())
}

#[test]
fn the_file_is_served_as_text_and_counted() {
    let txt = "User-agent: *\nDisallow: /page/1\n";
    let server = serving(RobotsTxt::Text(txt.to_string()));
    let a = agent();
    for _ in 0..2 {
        let reply = get(&a, &robots_url(&server));
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, txt);
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
    }
    get(&a, &server.page_url(1));
    let stats = server.stats();
    assert_eq!(stats.robots_requests, 2);
    assert_eq!(stats.total_requests, 3);
    // The file is no page: it has no page id.
    assert_eq!(stats.requests_per_id.len(), 1);
    server.reset_stats();
    assert_eq!(server.stats().robots_requests, 0);
}

#[test]
fn by_default_there_is_none() {
    let server = MockServer::start(MockConfig::default()).expect("start server");
    assert_eq!(get(&agent(), &robots_url(&server)).status, 404);
    assert_eq!(server.stats().robots_requests, 1);
}

#[test]
fn statuses_and_redirects_are_sent_as_configured() {
    for (code, sent) in [(403, 403), (429, 429), (500, 500), (503, 503), (42, 500)] {
        let server = serving(RobotsTxt::Status(code));
        assert_eq!(get(&agent(), &robots_url(&server)).status, sent, "{code}");
    }
    let target = serving(RobotsTxt::Text("User-agent: *\n".into()));
    let server = serving(RobotsTxt::Redirect(robots_url(&target)));
    let reply = get(&agent(), &robots_url(&server));
    assert_eq!(reply.status, 301);
    assert_eq!(reply.header("location"), Some(robots_url(&target).as_str()));
}

#[test]
fn a_hanging_file_never_answers_and_stays_in_flight() {
    let server = serving(RobotsTxt::Hang);
    let a: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(200)))
        .build()
        .into();
    assert!(a.get(&robots_url(&server)).call().is_err(), "no answer");
    let stats = server.stats();
    assert_eq!(stats.robots_requests, 1);
}
