//! The wire between the parent and its workers: JSON lines over the child's
//! stdin and stdout, one message a line.
//!
//! ```text
//! parent -> worker   {"protocol":1,"slots":50,"request_timeout":{...},...}   once: the setup
//!                    {"index":7,"url":"http://127.0.0.1:4000/page/7"}        then one per job
//! worker -> parent   {"ready":1}                                             once, after the setup
//!                    {"index":7,"attempts":1,"elapsed_ns":2301554,
//!                     "result":{"Ok":{"status":200,"bytes":2048,"title":"Page 7","links":5,
//!                     "final_url":"http://127.0.0.1:4000/page/7","content_type":"text/html","saved":null}}}
//! ```
//!
//! The shapes are this crate's own, not serde on fetch-core's types: the
//! wire is a detail of this model, and fetch-core stays free of it. JSON,
//! not a binary format, because a line a person can read is worth a lot
//! when a worker misbehaves (`fetchlab process-worker < jobs.jsonl` runs one by
//! hand), and it costs little next to a request: under a microsecond to
//! encode and decode a page's job and outcome (the test `wire_cost`).
//!
//! Every `read_*` function takes a line the other side wrote and returns an
//! error for anything that is not the expected message; the parent treats
//! such a line as a broken worker, never as an outcome.

use std::borrow::Cow;
use std::path::Path;
use std::time::{Duration, Instant};

use fetch_core::{AutoThrottle, ErrorKind, FetchError, Options, Outcome, Page, Run};
use serde::{Deserialize, Serialize};

/// Bumped when a message changes shape: a worker from another build says a
/// different number in its hello and is refused rather than misread.
pub(crate) const PROTOCOL: u32 = 3;

/// The first line to a worker: what its per-URL path needs of the run's
/// options, and its share of the requests in flight (`slots`).
#[derive(Serialize, Deserialize)]
struct Setup<'a> {
    protocol: u32,
    slots: usize,
    /// Not used by a worker (the parent's `Dispatch` holds the limit), sent
    /// so that the options cross unchanged.
    max_per_host: Option<usize>,
    /// The worker paces the hosts it is given (the parent gives each host
    /// to one worker while it is paced: see `Pool::send`).
    host_delay: Duration,
    auto_throttle: Option<WireAutoThrottle>,
    connect_timeout: Duration,
    request_timeout: Duration,
    /// What was left of the parent's deadline when the worker was started:
    /// a worker started mid-run (a replacement) gets the same end.
    deadline: Option<Duration>,
    retries: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    retry_after_cap: Duration,
    retry_statuses: Cow<'a, [u16]>,
    max_redirects: u32,
    max_body_bytes: u64,
    parse: bool,
    cpu_work: u32,
    user_agent: Cow<'a, str>,
    /// DER, as given to the parent's options.
    extra_roots: Vec<Cow<'a, [u8]>>,
    /// The workers save the pages they fetch (their CPU stage does), so
    /// they need the directory; `fetchlab run` passes it absolute. (serde
    /// sends a path as a string: one that is not UTF-8 cannot be sent, and
    /// the worker refuses the empty line that stands for it.)
    save_dir: Option<Cow<'a, Path>>,
    /// Obey robots.txt: each worker keeps its own rules (its own `Run`), so
    /// each fetches an origin's robots.txt once.
    robots: bool,
    /// fetch-core's fault injection, forwarded in test builds only.
    panic_marker: Option<Cow<'a, str>>,
}

/// fetch-core's `AutoThrottle`, as this crate's own shape.
#[derive(Serialize, Deserialize)]
struct WireAutoThrottle {
    start_delay: Duration,
    max_delay: Duration,
    target_concurrency: f64,
}

/// The worker's hello: it read the setup and built its client.
#[derive(Serialize, Deserialize)]
struct Ready {
    ready: u32,
}

#[derive(Serialize, Deserialize)]
struct Job<'a> {
    index: usize,
    url: Cow<'a, str>,
}

/// One outcome. The URL is not sent back: the parent's `Dispatch` puts the
/// input line in the record by its index.
#[derive(Serialize, Deserialize)]
struct Answer<'a> {
    index: usize,
    attempts: u32,
    elapsed_ns: u64,
    result: Result<WirePage<'a>, WireError<'a>>,
}

#[derive(Serialize, Deserialize)]
struct WirePage<'a> {
    status: u16,
    bytes: u64,
    title: Option<Cow<'a, str>>,
    links: usize,
    final_url: Cow<'a, str>,
    content_type: Option<Cow<'a, str>>,
    saved: Option<Cow<'a, str>>,
}

#[derive(Serialize, Deserialize)]
struct WireError<'a> {
    /// `ErrorKind::as_str`, the same names `fetchlab run` writes.
    kind: Cow<'a, str>,
    message: Cow<'a, str>,
    status: Option<u16>,
    retry_after: Option<Duration>,
    location: Option<Cow<'a, str>>,
    final_url: Option<Cow<'a, str>>,
}

/// `value` as one line, newline included.
fn line(value: &impl Serialize) -> String {
    // Cannot fail: plain structs with string keys and derived `Serialize`
    // (serde_json fails only on a map with non-string keys or a failing
    // custom impl). Were it ever to, the empty line would be refused by the
    // other side as not a message, never misread.
    let mut line = serde_json::to_string(value).unwrap_or_default();
    line.push('\n');
    line
}

fn read<'a, T: Deserialize<'a>>(line: &'a [u8], what: &str) -> Result<T, String> {
    serde_json::from_slice(line).map_err(|e| {
        let start = String::from_utf8_lossy(&line[..line.len().min(80)]);
        format!("not {what} ({e}): {:?}", start.trim_end())
    })
}

/// The setup line for a worker started now in `run`.
pub(crate) fn setup(run: &Run, slots: usize) -> String {
    let o = run.options();
    // Not zero: the worker's options builder refuses a zero deadline, and a
    // deadline that passed is the parent's to report anyway.
    let left = |at: Instant| {
        at.saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1))
    };
    #[cfg(feature = "fault-injection")]
    let panic_marker = o.panic_marker().map(Cow::Borrowed);
    #[cfg(not(feature = "fault-injection"))]
    let panic_marker = None;
    line(&Setup {
        protocol: PROTOCOL,
        slots,
        max_per_host: o.max_per_host(),
        host_delay: o.host_delay(),
        auto_throttle: o.auto_throttle().map(|a| WireAutoThrottle {
            start_delay: a.start_delay,
            max_delay: a.max_delay,
            target_concurrency: a.target_concurrency,
        }),
        connect_timeout: o.connect_timeout(),
        request_timeout: o.request_timeout(),
        deadline: run.deadline().map(left),
        retries: o.retries(),
        backoff_base: o.backoff_base(),
        backoff_max: o.backoff_max(),
        retry_after_cap: o.retry_after_cap(),
        retry_statuses: Cow::Borrowed(o.retry_statuses()),
        max_redirects: o.max_redirects(),
        max_body_bytes: o.max_body_bytes(),
        parse: o.parse(),
        cpu_work: o.cpu_work(),
        user_agent: Cow::Borrowed(o.user_agent()),
        extra_roots: o
            .extra_roots()
            .iter()
            .map(|c| Cow::Borrowed(&c[..]))
            .collect(),
        save_dir: o.save_dir().map(Cow::Borrowed),
        robots: o.robots(),
        panic_marker,
    })
}

/// The worker's options (with `max_in_flight` = its slots) from the setup
/// line, checked by the same builder as the parent's.
pub(crate) fn read_setup(line: &[u8]) -> Result<Options, String> {
    let s: Setup = read(line, "a setup")?;
    if s.protocol != PROTOCOL {
        let theirs = s.protocol;
        return Err(format!("protocol {theirs}, this worker speaks {PROTOCOL}"));
    }
    let mut builder = Options::builder()
        .max_in_flight(s.slots)
        .max_per_host(s.max_per_host)
        .host_delay(s.host_delay)
        .auto_throttle(s.auto_throttle.map(|a| AutoThrottle {
            start_delay: a.start_delay,
            max_delay: a.max_delay,
            target_concurrency: a.target_concurrency,
        }))
        .connect_timeout(s.connect_timeout)
        .request_timeout(s.request_timeout)
        .deadline(s.deadline)
        .retries(s.retries)
        .backoff(s.backoff_base, s.backoff_max)
        .retry_after_cap(s.retry_after_cap)
        .retry_statuses(s.retry_statuses.into_owned())
        .max_redirects(s.max_redirects)
        .max_body_bytes(s.max_body_bytes)
        .parse(s.parse)
        .cpu_work(s.cpu_work)
        .user_agent(s.user_agent)
        .save_dir(s.save_dir.map(Cow::into_owned))
        .robots(s.robots);
    for der in s.extra_roots {
        builder = builder.add_root_der(der.into_owned());
    }
    #[cfg(feature = "fault-injection")]
    {
        builder = builder.panic_marker(s.panic_marker.map(Cow::into_owned));
    }
    builder.build().map_err(|e| e.to_string())
}

pub(crate) fn ready() -> String {
    line(&Ready { ready: PROTOCOL })
}

pub(crate) fn read_ready(line: &[u8]) -> Result<(), String> {
    let hello: Ready = read(line, "a worker's hello")?;
    match hello.ready {
        PROTOCOL => Ok(()),
        theirs => Err(format!("worker speaks protocol {theirs}, not {PROTOCOL}")),
    }
}

pub(crate) fn job(index: usize, url: &str) -> String {
    line(&Job {
        index,
        url: Cow::Borrowed(url),
    })
}

pub(crate) fn read_job(line: &[u8]) -> Result<(usize, String), String> {
    let job: Job = read(line, "a job")?;
    Ok((job.index, job.url.into_owned()))
}

pub(crate) fn answer(outcome: &Outcome) -> String {
    let result = match &outcome.result {
        Ok(page) => Ok(WirePage {
            status: page.status,
            bytes: page.bytes,
            title: page.title.as_deref().map(Cow::Borrowed),
            links: page.links,
            final_url: Cow::Borrowed(&page.final_url),
            content_type: page.content_type.as_deref().map(Cow::Borrowed),
            saved: page.saved.as_deref().map(Cow::Borrowed),
        }),
        Err(e) => Err(WireError {
            kind: Cow::Borrowed(e.kind().as_str()),
            message: Cow::Borrowed(e.message()),
            status: e.status(),
            retry_after: e.retry_after(),
            location: e.location().map(Cow::Borrowed),
            final_url: e.final_url().map(Cow::Borrowed),
        }),
    };
    line(&Answer {
        index: outcome.index,
        attempts: outcome.attempts,
        elapsed_ns: u64::try_from(outcome.elapsed.as_nanos()).unwrap_or(u64::MAX),
        result,
    })
}

/// An outcome from a worker's line, with an empty URL: `Dispatch::record`
/// fills in the input line by the index.
pub(crate) fn read_answer(line: &[u8]) -> Result<Outcome, String> {
    let a: Answer = read(line, "an outcome")?;
    let result = match a.result {
        Ok(p) => Ok(Page {
            status: p.status,
            bytes: p.bytes,
            title: p.title.map(Cow::into_owned),
            links: p.links,
            final_url: p.final_url.into_owned(),
            content_type: p.content_type.map(Cow::into_owned),
            saved: p.saved.map(Cow::into_owned),
        }),
        Err(e) => Err(error(e)?),
    };
    Ok(Outcome {
        index: a.index,
        url: String::new(),
        attempts: a.attempts,
        elapsed: Duration::from_nanos(a.elapsed_ns),
        result,
    })
}

/// A `FetchError` as fetch-core builds it: an `http_status` error through
/// its constructor (which sets the message and keeps `Retry-After`), every
/// other kind from its message; the `Location` and final URL on either.
fn error(e: WireError) -> Result<FetchError, String> {
    let kind = ErrorKind::ALL
        .into_iter()
        .find(|k| k.as_str() == e.kind)
        .ok_or_else(|| format!("not an error kind: {:?}", e.kind))?;
    let error = match (kind, e.status) {
        (ErrorKind::HttpStatus, Some(status)) => FetchError::http_status(status, e.retry_after),
        _ => FetchError::new(kind, e.message),
    };
    let error = error.with_location(e.location.as_deref());
    Ok(match e.final_url {
        Some(url) => error.with_final_url(url),
        None => error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fetch_core::CancelToken;

    fn every_option_changed() -> Options {
        let b = Options::builder()
            .max_in_flight(7)
            .max_per_host(Some(2))
            .host_delay(Duration::from_millis(250))
            .auto_throttle(Some(AutoThrottle {
                start_delay: Duration::from_millis(1500),
                max_delay: Duration::from_secs(7),
                target_concurrency: 2.5,
            }))
            .connect_timeout(Duration::from_millis(1234))
            .request_timeout(Duration::from_millis(5678))
            .retries(4)
            .backoff(Duration::from_millis(3), Duration::from_millis(9))
            .retry_after_cap(Duration::from_secs(2))
            .retry_statuses([503, 599])
            .max_redirects(1)
            .max_body_bytes(12345)
            .parse(false)
            .cpu_work(17)
            .user_agent("wire-test/1 (\"quoted\")")
            .add_root_der(vec![0, 1, 2, 255])
            .save_dir(Some("/saved/pages dir".into()))
            .robots(true);
        #[cfg(feature = "fault-injection")]
        let b = b.panic_marker(Some("<title>Page 3</title>".into()));
        b.build().unwrap()
    }

    #[test]
    fn options_cross_the_wire_unchanged() {
        let options = every_option_changed();
        let run = Run::new(&options, &CancelToken::new());
        let mut line = setup(&run, 3).into_bytes();
        assert_eq!(line.pop(), Some(b'\n'), "one line");
        assert!(!line.contains(&b'\n'));
        let back = read_setup(&line).unwrap();
        assert_eq!(back, options.to_builder().max_in_flight(3).build().unwrap());
    }

    #[test]
    fn a_worker_gets_what_is_left_of_the_deadline() {
        let options = Options::builder()
            .deadline(Some(Duration::from_secs(10)))
            .build()
            .unwrap();
        let run = Run::new(&options, &CancelToken::new());
        std::thread::sleep(Duration::from_millis(50));
        let back = read_setup(setup(&run, 1).as_bytes()).unwrap();
        let left = back.deadline().unwrap();
        assert!(left <= Duration::from_millis(9950), "{left:?}");
        assert!(left > Duration::from_secs(5), "{left:?}");
    }

    fn outcome(result: Result<Page, FetchError>) -> Outcome {
        Outcome {
            index: 41,
            url: String::new(),
            attempts: 3,
            elapsed: Duration::new(2, 345_678_901),
            result,
        }
    }

    #[test]
    fn outcomes_cross_the_wire_unchanged() {
        let page = Page {
            status: 203,
            bytes: 99,
            title: Some("A \"title\" with \\ and \u{1} and é".into()),
            links: 12,
            final_url: "http://h/after?redirects=\"2\"".into(),
            content_type: Some("text/html; charset=\"utf-8\"".into()),
            saved: Some("ab/abcd.html".into()),
        };
        let mut cases = vec![
            outcome(Ok(page)),
            outcome(Ok(Page {
                status: 200,
                bytes: 0,
                title: None,
                links: 0,
                final_url: "http://h/".into(),
                content_type: None,
                saved: None,
            })),
            outcome(Err(FetchError::http_status(
                429,
                Some(Duration::from_millis(1500)),
            ))),
            outcome(Err(
                FetchError::http_status(302, None).with_location(Some("/next?a=b"))
            )),
            outcome(Err(
                FetchError::http_status(404, None).with_final_url("http://h/gone")
            )),
            outcome(Err(
                FetchError::new(ErrorKind::Save, "disk full").with_final_url("http://h/")
            )),
        ];
        for kind in ErrorKind::ALL {
            cases.push(outcome(Err(FetchError::new(kind, format!("{kind} here")))));
        }
        for o in cases {
            let line = answer(&o);
            assert_eq!(line.matches('\n').count(), 1, "{line}");
            assert_eq!(read_answer(line.as_bytes()).unwrap(), o, "{line}");
        }
    }

    #[test]
    fn jobs_and_hellos_cross_the_wire() {
        let url = "http://h/page/1?q=\"x\"&é";
        assert_eq!(read_job(job(5, url).as_bytes()).unwrap(), (5, url.into()));
        assert!(read_ready(ready().as_bytes()).is_ok());
    }

    /// What the wire costs per page, in each process: the job line (parent
    /// encodes, worker decodes) and the outcome line (worker encodes,
    /// parent decodes) of a typical page. A measurement, not a check:
    /// `cargo test --release -p fetch-processes --lib wire_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement; run it in release"]
    fn wire_cost() {
        let n = 500_000;
        let url = "http://127.0.0.1:40000/page/123456";
        let page = |i: usize| {
            outcome(Ok(Page {
                status: 200,
                bytes: 2048,
                title: Some(format!("Page {i}")),
                links: 5,
                final_url: url.to_string(),
                content_type: Some("text/html; charset=utf-8".to_string()),
                saved: None,
            }))
        };
        let outcomes: Vec<Outcome> = (0..n).map(page).collect();
        let per_page = |started: Instant| started.elapsed().as_nanos() as f64 / n as f64;

        let started = Instant::now();
        let jobs: Vec<String> = (0..n).map(|i| job(i, url)).collect();
        let job_out = per_page(started);
        let started = Instant::now();
        let read = jobs
            .iter()
            .filter(|j| read_job(j.as_bytes()).is_ok())
            .count();
        let job_in = per_page(started);
        let started = Instant::now();
        let lines: Vec<String> = outcomes.iter().map(answer).collect();
        let answer_out = per_page(started);
        let started = Instant::now();
        let back = lines
            .iter()
            .filter(|l| read_answer(l.as_bytes()).is_ok())
            .count();
        let answer_in = per_page(started);
        assert_eq!((read, back), (n, n));
        println!(
            "per page: job {:.0} B, encode {job_out:.0} ns, decode {job_in:.0} ns; \
             outcome {:.0} B, encode {answer_out:.0} ns, decode {answer_in:.0} ns; \
             total {:.0} ns",
            jobs[n / 2].len(),
            lines[n / 2].len(),
            job_out + job_in + answer_out + answer_in
        );
    }

    #[test]
    fn anything_else_is_refused_with_what_it_was() {
        let err = read_answer(b"this is not an outcome\n").unwrap_err();
        assert!(err.starts_with("not an outcome"), "{err}");
        assert!(err.contains("this is not an outcome"), "{err}");
        // A hello, a job, a cut-off line: none is an outcome.
        assert!(read_answer(ready().as_bytes()).is_err());
        assert!(read_answer(job(1, "http://h/").as_bytes()).is_err());
        let cut = answer(&outcome(Err(FetchError::new(ErrorKind::Connect, "x"))));
        assert!(read_answer(&cut.as_bytes()[..cut.len() / 2]).is_err());
        let unknown = cut.replace("\"connect\"", "\"gremlins\"");
        let err = read_answer(unknown.as_bytes()).unwrap_err();
        assert!(err.contains("gremlins"), "{err}");
        assert!(read_ready(b"{\"ready\":9}").is_err(), "another protocol");
        let other = setup(&Run::new(&Options::default(), &CancelToken::new()), 1)
            .replace(&format!("\"protocol\":{PROTOCOL}"), "\"protocol\":9");
        assert!(
            read_setup(other.as_bytes())
                .unwrap_err()
                .contains("protocol 9")
        );
    }
}
