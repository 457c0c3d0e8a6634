//! The CPU stage: what a crawler does with a page once it has it.
//!
//! Parsing HTML is real CPU work (a tokenizer and a tree builder), which is
//! the point: it is what an async model must keep off the threads that drive
//! I/O, and what the article moved to a process pool. [`cpu_work`] adds a
//! fixed, tunable amount on top, so benchmarks can make the CPU stage as heavy
//! as the wait.

use std::sync::LazyLock;

use scraper::{Html, Selector};

use crate::{Options, Page};

// Constant selectors: `Selector::parse` can only fail on invalid syntax, and
// these two are checked by the tests below, so the `expect`s cannot fire.
static TITLE: LazyLock<Selector> =
    LazyLock::new(|| Selector::parse("title").expect("constant selector"));
static LINKS: LazyLock<Selector> =
    LazyLock::new(|| Selector::parse("a[href]").expect("constant selector"));

/// The title and link count of an HTML document.
///
/// Never fails: HTML parsers recover from any input, and bytes that are not
/// UTF-8 are replaced rather than rejected, so a page in Latin-1 or a binary
/// body still yields a record.
pub fn parse_html(body: &[u8]) -> (Option<String>, usize) {
    let text = String::from_utf8_lossy(body);
    let doc = Html::parse_document(&text);
    let title = doc
        .select(&TITLE)
        .next()
        .map(|t| t.text().collect::<Vec<_>>().join(" "))
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty());
    let links = doc.select(&LINKS).count();
    (title, links)
}

/// Whether a response with this `Content-Type` is parsed as HTML. A missing
/// header is treated as HTML (many servers omit it); `application/json`,
/// images and the like are not parsed, and still count as fetched pages.
pub fn is_html(content_type: Option<&str>) -> bool {
    content_type.is_none_or(|ct| {
        let ct = ct.to_ascii_lowercase();
        ct.contains("html") || ct.starts_with("text/plain")
    })
}

/// A fixed amount of CPU work: `units` × 1,000 rounds of an integer mixing
/// function seeded from the body, so the compiler cannot skip it. One unit
/// costs about a microsecond on the 2-core reference machine (see
/// docs/results); the cost scales with the core, not with the body size.
pub fn cpu_work(units: u32, body: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in body.iter().take(64) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    for _ in 0..u64::from(units) * 1_000 {
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 29;
    }
    std::hint::black_box(h)
}

/// The CPU stage for one fetched body: parse (when enabled and the body is
/// HTML), then the configured extra work. This is the function async models
/// send to a blocking pool.
pub fn page(status: u16, body: &[u8], content_type: Option<&str>, options: &Options) -> Page {
    #[cfg(feature = "fault-injection")]
    if let Some(marker) = options.panic_marker() {
        let hit = body.windows(marker.len()).any(|w| w == marker.as_bytes());
        assert!(!hit, "injected panic: body contains {marker:?}");
    }
    let (title, links) = if options.parse() && is_html(content_type) {
        parse_html(body)
    } else {
        (None, 0)
    };
    if options.cpu_work() > 0 {
        cpu_work(options.cpu_work(), body);
    }
    Page {
        status,
        bytes: body.len() as u64,
        title,
        links,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_and_links() {
        let html = b"<html><head><title>  Page\n 7 </title></head><body>\
            <a href='/a'>a</a><a>no href</a><a href=\"/b\">b</a></body></html>";
        assert_eq!(parse_html(html), (Some("Page 7".to_string()), 2));
    }

    #[test]
    fn garbage_does_not_fail() {
        assert_eq!(parse_html(&[0xff, 0xfe, 0x00, 0x80]), (None, 0));
        assert_eq!(parse_html(b""), (None, 0));
        let latin1 = b"<title>Caf\xe9</title>";
        assert_eq!(parse_html(latin1).0.as_deref(), Some("Caf\u{fffd}"));
    }

    #[test]
    fn non_html_is_counted_not_parsed() {
        let opts = Options::default();
        let p = page(200, b"<title>x</title>", Some("application/json"), &opts);
        assert_eq!((p.title, p.links, p.bytes), (None, 0, 16));
        let p = page(200, b"<title>x</title>", None, &opts);
        assert_eq!(p.title.as_deref(), Some("x"));
        let off = Options::builder().parse(false).build().unwrap();
        assert_eq!(page(200, b"<title>x</title>", None, &off).title, None);
    }

    #[test]
    #[cfg(feature = "fault-injection")]
    fn panic_marker_panics_only_on_a_match() {
        let opts = Options::builder()
            .panic_marker(Some("<title>Page 3</title>".into()))
            .build()
            .unwrap();
        assert!(
            page(200, b"<title>Page 4</title>", None, &opts)
                .title
                .is_some()
        );
        let hit = std::panic::catch_unwind(|| page(200, b"<title>Page 3</title>", None, &opts));
        let payload = hit.unwrap_err();
        let err = crate::FetchError::from_panic(payload.as_ref());
        assert_eq!(err.kind(), crate::ErrorKind::Panicked);
        assert!(err.message().contains("injected panic"), "{err}");
    }

    #[test]
    fn cpu_work_depends_on_units() {
        assert_ne!(cpu_work(1, b"a"), cpu_work(2, b"a"));
        assert_eq!(cpu_work(3, b"a"), cpu_work(3, b"a"));
    }
}
