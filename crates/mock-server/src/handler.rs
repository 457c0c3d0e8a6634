//! Routing, query-string overrides, and the order in which faults are applied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, LOCATION, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use percent_encoding::percent_decode_str;

use crate::body::MockBody;
use crate::config::{Fault, RobotsTxt, fnv1a};
use crate::page::page_html;
use crate::server::Shared;
use crate::stats::InFlight;

/// Largest page a query may ask for with `body_bytes`: pages are rendered into
/// memory, so this keeps one request from allocating without bound.
/// (Use `oversized=1` for huge bodies: those are streamed.)
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Largest `links` a query may ask for.
pub const MAX_LINKS: usize = 100_000;

fn html_type() -> HeaderValue {
    HeaderValue::from_static("text/html; charset=utf-8")
}
fn text_type() -> HeaderValue {
    HeaderValue::from_static("text/plain; charset=utf-8")
}

/// The one entry point hyper calls for every request.
pub(crate) async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Response<MockBody> {
    // Latency is measured from here, so time spent below (parsing, rendering)
    // is part of it rather than added to it.
    let start = Instant::now();
    let path = req.uri().path();
    if path == "/__stats" {
        // Not counted: observing the server must not change what it reports.
        return stats_response(&shared);
    }
    let in_flight = InFlight::start(&shared.counters);
    shared.counters.headers_seen(req.headers());
    let cfg = &shared.config;
    if path == "/robots.txt" {
        return robots(&shared, start, in_flight).await;
    }

    let Some(id) = path
        .strip_prefix("/page/")
        .and_then(|s| s.parse::<u64>().ok())
    else {
        // Unknown paths still get the configured latency (keyed by a hash of the
        // path), so a 404 is not suspiciously faster than a page.
        let delay = cfg.latency.sample(cfg.seed, fnv1a(path));
        shared.timer.sleep_until(start + delay).await;
        return text(StatusCode::NOT_FOUND, in_flight, &shared);
    };
    shared.counters.page_requested(id);

    let q = match Overrides::parse(req.uri().query()) {
        Ok(q) => q,
        Err(msg) => {
            let mut resp = Response::new(MockBody::full(
                Bytes::from(msg + "\n"),
                Some(in_flight),
                Some(Arc::clone(&shared.counters)),
            ));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            resp.headers_mut().insert(CONTENT_TYPE, text_type());
            return resp;
        }
    };
    let fault = cfg.fault_for(id);

    if q.hang || fault == Some(Fault::Hang) {
        // No latency and no answer. The request stays in flight until hyper drops
        // this future: when the client closes the connection (hyper notices the
        // EOF while waiting for us) or when the server shuts down.
        let _held = in_flight;
        return std::future::pending().await;
    }

    let delay = q.latency.unwrap_or_else(|| cfg.latency_for(id));
    shared.timer.sleep_until(start + delay).await;

    if q.redirect_loop || q.redirect > 0 {
        let query = req.uri().query().unwrap_or("");
        let next = if q.redirect_loop {
            query.to_owned()
        } else {
            with_param(query, "redirect", &(q.redirect - 1).to_string())
        };
        let location = format!("{}{path}?{next}", shared.base_url);
        let mut resp = Response::new(MockBody::empty(Some(in_flight)));
        *resp.status_mut() = StatusCode::FOUND;
        match HeaderValue::try_from(location) {
            Ok(v) => {
                resp.headers_mut().insert(LOCATION, v);
            }
            // The path and query came in on a valid request line, so they are valid
            // header bytes; this arm is only here so no input can panic the server.
            Err(_) => *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
        }
        return resp;
    }

    if let Some(location) = &q.location {
        // Sent as given, however malformed: the point is to see what a
        // client makes of it. Only bytes a header cannot carry (a newline)
        // are refused, with a 400 from the query parser.
        let status = q.status.unwrap_or(StatusCode::MOVED_PERMANENTLY);
        let mut resp = text(status, in_flight, &shared);
        match HeaderValue::from_str(location) {
            Ok(v) => {
                resp.headers_mut().insert(LOCATION, v);
            }
            Err(_) => *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
        }
        return resp;
    }

    if let Some(status) = q.status {
        let mut resp = text(status, in_flight, &shared);
        if let Some(secs) = q.retry_after {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        return resp;
    }

    if (q.fail_once || fault == Some(Fault::FailOnce)) && shared.counters.trip_fail_once(id) {
        let mut resp = text(StatusCode::SERVICE_UNAVAILABLE, in_flight, &shared);
        if let Some(secs) = q.retry_after {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        return resp;
    }

    match fault {
        Some(Fault::ServerError) => {
            return text(StatusCode::INTERNAL_SERVER_ERROR, in_flight, &shared);
        }
        Some(Fault::NotFound) => return text(StatusCode::NOT_FOUND, in_flight, &shared),
        Some(Fault::TooMany) => {
            let mut resp = text(StatusCode::TOO_MANY_REQUESTS, in_flight, &shared);
            let secs = q.retry_after.unwrap_or(cfg.faults.retry_after_secs);
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
            return resp;
        }
        _ => {}
    }

    let counters = Arc::clone(&shared.counters);
    let content_type = q.content_type.as_deref();
    if q.oversized || fault == Some(Fault::Oversized) {
        let len = q.oversized_bytes.unwrap_or(cfg.faults.oversized_bytes);
        return page_response(MockBody::oversized(len, in_flight, counters), content_type);
    }

    let html = Bytes::from(page_html(
        id,
        q.links.unwrap_or(cfg.links),
        q.body_bytes.unwrap_or(cfg.body_bytes),
    ));

    if q.reset || fault == Some(Fault::Reset) {
        // Announce the whole length, send half: the client must see a short body.
        let full_len = html.len() as u64;
        let part = html.slice(..html.len() / 2);
        let mut resp = page_response(MockBody::reset(part, in_flight, counters), content_type);
        resp.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(full_len));
        return resp;
    }

    if q.drip || fault == Some(Fault::Drip) {
        let interval = q.drip_interval.unwrap_or(cfg.faults.drip_interval);
        let body = MockBody::drip(html, interval, in_flight, counters);
        return page_response(body, content_type);
    }

    let body = MockBody::full(html, Some(in_flight), Some(counters));
    page_response(body, content_type)
}

/// `/robots.txt`, as [`RobotsTxt`] says: after the latency of its path, as
/// for any path that is not a page, unless it hangs.
async fn robots(shared: &Shared, start: Instant, in_flight: InFlight) -> Response<MockBody> {
    shared.counters.robots_requested();
    let cfg = &shared.config;
    if cfg.robots == RobotsTxt::Hang {
        // Held, never answered, as the `hang` fault is (see `handle`).
        let _held = in_flight;
        return std::future::pending().await;
    }
    let delay = cfg.latency.sample(cfg.seed, fnv1a("/robots.txt"));
    shared.timer.sleep_until(start + delay).await;
    match &cfg.robots {
        RobotsTxt::Text(txt) => {
            let body = Bytes::from(txt.clone().into_bytes());
            let counters = Some(Arc::clone(&shared.counters));
            let mut resp = Response::new(MockBody::full(body, Some(in_flight), counters));
            resp.headers_mut().insert(CONTENT_TYPE, text_type());
            resp
        }
        RobotsTxt::Status(code) => {
            let status = StatusCode::from_u16(*code)
                .ok()
                .filter(|s| !s.is_informational())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            text(status, in_flight, shared)
        }
        RobotsTxt::Redirect(location) => {
            let mut resp = text(StatusCode::MOVED_PERMANENTLY, in_flight, shared);
            match HeaderValue::from_str(location) {
                Ok(v) => {
                    resp.headers_mut().insert(LOCATION, v);
                }
                // A location no header can carry: a 500 says the
                // configuration is wrong, rather than a panic.
                Err(_) => *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
            }
            resp
        }
        RobotsTxt::NotFound | RobotsTxt::Hang => text(StatusCode::NOT_FOUND, in_flight, shared),
    }
}

/// A page: HTML, sent as `text/html` unless the query's `content_type`
/// says otherwise (the body stays the same HTML).
fn page_response(body: MockBody, content_type: Option<&str>) -> Response<MockBody> {
    let mut resp = Response::new(body);
    // Checked to be a header value when the query was parsed.
    let value = content_type.and_then(|ct| HeaderValue::from_str(ct).ok());
    resp.headers_mut()
        .insert(CONTENT_TYPE, value.unwrap_or_else(html_type));
    resp
}

/// A status response with a one-line text body ("503 Service Unavailable"), or an
/// empty body for the statuses that must not have one.
fn text(status: StatusCode, in_flight: InFlight, shared: &Shared) -> Response<MockBody> {
    let body = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        MockBody::empty(Some(in_flight))
    } else {
        let line = format!("{status}\n");
        MockBody::full(
            Bytes::from(line),
            Some(in_flight),
            Some(Arc::clone(&shared.counters)),
        )
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, text_type());
    resp
}

fn stats_response(shared: &Shared) -> Response<MockBody> {
    let (status, body) = match serde_json::to_vec(&shared.counters.snapshot()) {
        Ok(json) => (StatusCode::OK, json),
        // Serialising maps of integers cannot fail; answer rather than panic anyway.
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string().into_bytes(),
        ),
    };
    let mut resp = Response::new(MockBody::full(Bytes::from(body), None, None));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// `query` with `key`'s value replaced by `value` (appended if absent).
fn with_param(query: &str, key: &str, value: &str) -> String {
    let mut found = false;
    let mut parts: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            if p.split_once('=').map_or(p, |(k, _)| k) == key {
                found = true;
                format!("{key}={value}")
            } else {
                p.to_owned()
            }
        })
        .collect();
    if !found {
        parts.push(format!("{key}={value}"));
    }
    parts.join("&")
}

/// Per-request overrides from the query string. Unknown parameters are ignored
/// (so callers can add cache-busters); a known parameter with a bad value is a 400,
/// because a test that misspells a value should fail loudly, not silently get a 200.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Overrides {
    pub latency: Option<Duration>,
    pub status: Option<StatusCode>,
    pub retry_after: Option<u64>,
    pub fail_once: bool,
    pub hang: bool,
    pub reset: bool,
    pub drip: bool,
    pub drip_interval: Option<Duration>,
    pub body_bytes: Option<usize>,
    pub links: Option<usize>,
    pub oversized: bool,
    pub oversized_bytes: Option<u64>,
    pub redirect: u64,
    pub redirect_loop: bool,
    pub location: Option<String>,
    pub content_type: Option<String>,
}

impl Overrides {
    pub(crate) fn parse(query: Option<&str>) -> Result<Overrides, String> {
        let mut o = Overrides::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                // latency_ms and latency_us add up, so `latency_ms=10&latency_us=500` is 10.5 ms.
                "latency_ms" => o.add_latency(Duration::from_millis(number(k, v)?)),
                "latency_us" => o.add_latency(Duration::from_micros(number(k, v)?)),
                "status" => {
                    let code: u16 = number(k, v)?;
                    // 1xx cannot be a final response; hyper would refuse to send it.
                    o.status = Some(
                        StatusCode::from_u16(code)
                            .ok()
                            .filter(|s| !s.is_informational())
                            .ok_or_else(|| format!("status must be 200..=999, got {v:?}"))?,
                    );
                }
                "retry_after" => o.retry_after = Some(number(k, v)?),
                "fail_once" => o.fail_once = flag(k, v)?,
                "hang" => o.hang = flag(k, v)?,
                "reset" => o.reset = flag(k, v)?,
                "drip" => o.drip = flag(k, v)?,
                "drip_ms" => o.drip_interval = Some(Duration::from_millis(number(k, v)?)),
                "body_bytes" => o.body_bytes = Some(at_most(k, number(k, v)?, MAX_BODY_BYTES)?),
                "links" => o.links = Some(at_most(k, number(k, v)?, MAX_LINKS)?),
                "oversized" => o.oversized = flag(k, v)?,
                "oversized_bytes" => o.oversized_bytes = Some(number(k, v)?),
                "redirect" => o.redirect = number(k, v)?,
                "redirect_loop" => o.redirect_loop = flag(k, v)?,
                "location" => {
                    let value = percent_decode_str(v).decode_utf8_lossy();
                    if HeaderValue::from_str(&value).is_err() {
                        return Err(format!("location is not a valid header value: {v:?}"));
                    }
                    o.location = Some(value.into_owned());
                }
                "content_type" => {
                    let value = percent_decode_str(v).decode_utf8_lossy();
                    if HeaderValue::from_str(&value).is_err() {
                        return Err(format!("content_type is not a valid header value: {v:?}"));
                    }
                    o.content_type = Some(value.into_owned());
                }
                _ => {}
            }
        }
        Ok(o)
    }

    fn add_latency(&mut self, d: Duration) {
        self.latency = Some(self.latency.unwrap_or_default().saturating_add(d));
    }
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("bad value for {key}: {value:?}"))
}

fn flag(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "" | "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(format!("bad value for {key}: {value:?} (use 1 or 0)")),
    }
}

fn at_most(key: &str, n: usize, max: usize) -> Result<usize, String> {
    if n <= max {
        Ok(n)
    } else {
        Err(format!("{key} must be at most {max}, got {n}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_overrides() {
        let o = Overrides::parse(Some(
            "latency_ms=10&latency_us=500&status=503&retry_after=2&x=y&hang",
        ))
        .expect("valid query");
        assert_eq!(o.latency, Some(Duration::from_micros(10_500)));
        assert_eq!(o.status, Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(o.retry_after, Some(2));
        assert!(o.hang);
        assert!(Overrides::parse(Some("status=abc")).is_err());
        assert!(Overrides::parse(Some("status=100")).is_err());
        assert!(Overrides::parse(Some("drip=maybe")).is_err());
        let o = Overrides::parse(Some("content_type=application%2Fjson%3B%20x%3D1")).unwrap();
        assert_eq!(o.content_type.as_deref(), Some("application/json; x=1"));
        assert!(Overrides::parse(Some("content_type=a%0Ab")).is_err());
        assert_eq!(Overrides::parse(None), Ok(Overrides::default()));
    }

    #[test]
    fn rewrites_redirect_param() {
        assert_eq!(
            with_param("a=1&redirect=3&b", "redirect", "2"),
            "a=1&redirect=2&b"
        );
        assert_eq!(with_param("", "redirect", "0"), "redirect=0");
    }
}
