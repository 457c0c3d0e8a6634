//! Pages, routes and query overrides, checked over real HTTP.

mod common;

use common::{agent, get, raw_get, title};
use mock_server::{MockConfig, MockServer, page_html, page_links, page_title};

fn server() -> MockServer {
    MockServer::start(MockConfig::default()).expect("start server")
}

#[test]
fn page_has_title_links_and_padded_size() {
    let server = server();
    let reply = get(&agent(), &server.page_url(7));
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(reply.header("content-length"), Some("2048"));
    assert_eq!(reply.body.len(), 2048);
    assert_eq!(title(&reply.body), Some(page_title(7).as_str()));
    assert_eq!(page_title(7), "Page 7");
    for target in page_links(7, 10) {
        assert!(reply.body.contains(&format!("<a href=\"/page/{target}\">")));
    }
    assert_eq!(reply.body.matches("<a href=").count(), 10);
    // The served page is exactly the pure function's output.
    assert_eq!(reply.body, page_html(7, 10, 2048));
}

#[test]
fn config_and_query_set_size_and_links() {
    let server = MockServer::start(MockConfig {
        body_bytes: 10_000,
        links: 3,
        ..MockConfig::default()
    })
    .expect("start server");
    let a = agent();
    let reply = get(&a, &server.page_url(1));
    assert_eq!(reply.body.len(), 10_000);
    assert_eq!(reply.body.matches("<a href=").count(), 3);

    let reply = get(
        &a,
        &format!("{}?body_bytes=50000&links=25", server.page_url(1)),
    );
    assert_eq!(reply.body.len(), 50_000);
    assert_eq!(reply.body.matches("<a href=").count(), 25);
}

#[test]
fn status_override_and_retry_after() {
    let server = server();
    let a = agent();
    let reply = get(
        &a,
        &format!("{}?status=503&retry_after=7", server.page_url(2)),
    );
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("7"));

    let reply = get(&a, &format!("{}?status=429", server.page_url(2)));
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), None);

    let reply = get(&a, &format!("{}?status=204", server.page_url(2)));
    assert_eq!(reply.status, 204);
    assert!(reply.body.is_empty());
}

#[test]
fn bad_override_values_are_400_and_unknown_params_ignored() {
    let server = server();
    let a = agent();
    assert_eq!(
        get(&a, &format!("{}?status=abc", server.page_url(1))).status,
        400
    );
    assert_eq!(
        get(&a, &format!("{}?hang=maybe", server.page_url(1))).status,
        400
    );
    assert_eq!(
        get(&a, &format!("{}?cachebust=42", server.page_url(1))).status,
        200
    );
}

#[test]
fn redirect_chain_counts_down_then_serves_the_page() {
    let server = server();
    let raw = raw_get(server.addr(), "/page/3?x=1&redirect=2");
    assert_eq!(raw.status(), 302);
    assert_eq!(
        raw.header("location").as_deref(),
        Some(format!("{}/page/3?x=1&redirect=1", server.base_url()).as_str())
    );

    // A redirect-following agent ends on the page after 3 requests in total.
    let following: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let reply = get(&following, &format!("{}?redirect=2", server.page_url(3)));
    assert_eq!(reply.status, 200);
    assert_eq!(title(&reply.body), Some("Page 3"));
    // 1 raw + 3 followed.
    assert_eq!(server.stats().requests_per_id.get(&3), Some(&4));
}

#[test]
fn redirect_loop_points_at_itself() {
    let server = server();
    let raw = raw_get(server.addr(), "/page/5?redirect_loop=1");
    assert_eq!(raw.status(), 302);
    assert_eq!(
        raw.header("location").as_deref(),
        Some(format!("{}/page/5?redirect_loop=1", server.base_url()).as_str())
    );
}

#[test]
fn unknown_paths_and_non_numeric_ids_are_404() {
    let server = server();
    let a = agent();
    assert_eq!(
        get(&a, &format!("{}/page/abc", server.base_url())).status,
        404
    );
    assert_eq!(get(&a, &format!("{}/nope", server.base_url())).status, 404);
    assert_eq!(get(&a, &format!("{}/page/", server.base_url())).status, 404);
    let stats = server.stats();
    // Counted as requests, but not as page ids.
    assert_eq!(stats.total_requests, 3);
    assert!(stats.requests_per_id.is_empty());
}

#[test]
fn stats_endpoint_is_json_and_not_counted() {
    let server = server();
    let a = agent();
    get(&a, &server.page_url(4));
    get(&a, &server.page_url(4));
    let reply = get(&a, &format!("{}/__stats", server.base_url()));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&reply.body).expect("valid JSON");
    assert_eq!(json["total_requests"], 2);
    assert_eq!(json["requests_per_id"]["4"], 2);
    assert_eq!(json["in_flight"], 0);
    assert_eq!(json["bytes_sent"], 2 * 2048);
    // Asking for stats changed nothing.
    get(&a, &format!("{}/__stats", server.base_url()));
    let stats = server.stats();
    assert_eq!(stats.total_requests, 2);
    assert_eq!(stats.bytes_sent, 2 * 2048);
}

#[test]
fn location_is_sent_as_given() {
    let server = server();
    let raw = raw_get(server.addr(), "/page/5?location=%3A%3Anot%20a%20url");
    assert_eq!(raw.status(), 301);
    assert_eq!(raw.header("location").as_deref(), Some("::not a url"));
    let raw = raw_get(server.addr(), "/page/5?location=http%3A%2F%2F&status=307");
    assert_eq!(raw.status(), 307);
    assert_eq!(raw.header("location").as_deref(), Some("http://"));
    // A newline cannot be sent in a header: a 400, not a panic.
    let raw = raw_get(server.addr(), "/page/5?location=a%0Ab");
    assert_eq!(raw.status(), 400);
}
