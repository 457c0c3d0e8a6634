//! The CPU stage: what a crawler does with a page once it has it.
//!
//! Reading a page's title and counting its links is real CPU work, which is
//! the point: it is what an async model must keep off the threads that drive
//! I/O, and what the article moved to a process pool. [`cpu_work`] adds a
//! fixed, tunable amount on top, so benchmarks can make the CPU stage as heavy
//! as the wait.
//!
//! The parse streams: lol_html (Cloudflare's streaming HTML rewriter)
//! tokenizes the page once and calls back on `<title>` text and on `<a
//! href>` start tags; no tree is built. The earlier version built a whole
//! DOM with scraper (html5ever's tree builder) to read the same two facts.
//! `scripts/parse-corpus` compares both on real pages nobody here wrote: the
//! 1,699 pages of Debian's python3.11-doc and postgresql-doc-15 gave the same
//! title and link count in both on every page, and took 0.82 s to stream
//! against 4.49 s for the DOM (5.5 times faster); so did 1,644 other pages on
//! the development VM (the Rust book, other Debian docs; 7.1 times faster).
//! The one difference known is made up (see the tests): a link opened inside
//! another and never closed, which the tree builder repairs by cloning.
//! `cargo bench --bench parse` times both on the mock server's pages: 6.3 µs
//! against 18.5 µs for its default 2 KiB page, 0.39 ms against 1.35 ms for
//! a 64 KiB page with 1,000 links (2026-12-03, the 2-core development VM).

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::sync::LazyLock;

use lol_html::html_content::{Element, TextChunk};
use lol_html::{ElementContentHandlers, HandlerResult, HtmlRewriter, Selector, Settings};
use url::Url;

use crate::{FetchError, Fetched, Options, Page, save};

// Constant selectors, parsed once: `Selector::parse` can only fail on invalid
// syntax, and these two are checked by the tests below, so the `expect`s
// cannot fire.
static TITLE: LazyLock<Selector> = LazyLock::new(|| "title".parse().expect("constant selector"));
static LINKS: LazyLock<Selector> = LazyLock::new(|| "a[href]".parse().expect("constant selector"));

/// The title and link count of an HTML document: the text of its first
/// `<title>` (character references decoded, whitespace collapsed; `None`
/// when it has none or it is blank) and the number of `<a>` elements with an
/// `href`.
///
/// Never fails: the tokenizer recovers from any input as browsers do, and
/// bytes that are not UTF-8 are replaced rather than rejected, so a page in
/// Latin-1 or a binary body still yields a record.
pub fn parse_html(body: &[u8]) -> (Option<String>, usize) {
    let links = Cell::new(0usize);
    let titles = Cell::new(0u32);
    let title = RefCell::new(String::new());
    // (The `element!` and `text!` macros would parse the selectors again
    // for every page.)
    let on_link = |_: &mut Element<'_, '_>| -> HandlerResult {
        links.set(links.get() + 1);
        Ok(())
    };
    let on_title = |_: &mut Element<'_, '_>| -> HandlerResult {
        titles.set(titles.get() + 1);
        Ok(())
    };
    // Text comes in chunks, as the input does; only the first title's.
    let on_title_text = |chunk: &mut TextChunk<'_>| -> HandlerResult {
        if titles.get() == 1 {
            title.borrow_mut().push_str(chunk.as_str());
        }
        Ok(())
    };
    let handlers = vec![
        (
            Cow::Borrowed(&*LINKS),
            ElementContentHandlers::default().element(on_link),
        ),
        (
            Cow::Borrowed(&*TITLE),
            ElementContentHandlers::default()
                .element(on_title)
                .text(on_title_text),
        ),
    ];
    let settings = Settings {
        element_content_handlers: handlers,
        // Strict mode refuses markup whose meaning depends on the tree
        // (`<select><xmp>`): a rewriter must not guess, a reader may.
        strict: false,
        ..Settings::new()
    };
    // The rewritten output is not wanted: the sink drops it.
    let mut rewriter = HtmlRewriter::new(settings, |_: &[u8]| {});
    // With no memory limit set and handlers that cannot fail, neither call
    // returns an error; if one ever did, what was read so far is the answer.
    let _ = rewriter.write(body).and_then(|()| rewriter.end());
    // The stream hands over the title's text as written; the tree builder
    // decoded `&mdash;` and `&#8212;`, so this does too.
    let title = htmlize::unescape(title.into_inner());
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    (Some(title).filter(|t| !t.is_empty()), links.get())
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

/// The CPU stage for one fetched page, from `final_url` (after redirects):
/// parse (when enabled and the body is HTML), the configured extra work,
/// then the save under [`Options::save_dir`] (see [`crate::save`]), whose
/// failure is the URL's `save` error. The per-URL path runs this off the
/// threads that drive I/O (a blocking pool, a CPU slot), the disk write
/// included.
pub fn page(fetched: Fetched, final_url: Url, options: &Options) -> Result<Page, FetchError> {
    let Fetched {
        status,
        body,
        content_type,
    } = fetched;
    #[cfg(feature = "fault-injection")]
    if let Some(marker) = options.panic_marker() {
        let hit = body.windows(marker.len()).any(|w| w == marker.as_bytes());
        assert!(!hit, "injected panic: body contains {marker:?}");
    }
    let (title, links) = if options.parse() && is_html(content_type.as_deref()) {
        parse_html(&body)
    } else {
        (None, 0)
    };
    if options.cpu_work() > 0 {
        cpu_work(options.cpu_work(), &body);
    }
    let saved = match options.save_dir() {
        Some(dir) => match save::save(dir, final_url.as_str(), content_type.as_deref(), &body) {
            Ok(saved) => Some(saved),
            Err(error) => return Err(error.with_final_url(final_url)),
        },
        None => None,
    };
    Ok(Page {
        status,
        bytes: body.len() as u64,
        title,
        links,
        // The URL's own string, moved: no copy per page.
        final_url: final_url.into(),
        content_type,
        saved,
    })
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
    fn what_the_tree_builder_did_the_stream_does() {
        // Each expectation is what the earlier parse (scraper's DOM) gave.
        let cases: [(&[u8], Option<&str>, usize); 8] = [
            // Only the first title; references decoded.
            (
                b"<title>A &amp; B &mdash; C&#8212;D</title><title>2</title>",
                Some("A & B \u{2014} C\u{2014}D"),
                0,
            ),
            // Tags inside a title are its text (RCDATA).
            (b"<title>a <b>bold</b></title>", Some("a <b>bold</b>"), 0),
            // A link inside a comment, a script or a style is no link.
            (
                b"<!-- <a href=x> --><script>'<a href=y>'</script><style><a href=z></style>",
                None,
                0,
            ),
            // Unquoted, empty and upper-case attributes still count.
            (
                b"<A HREF=/a>a</A><a href>b</a><a href=''>c</a><a name=x>d</a>",
                None,
                3,
            ),
            // An unclosed title runs to the end of the document.
            (
                b"<title>never closed<a href=x>",
                Some("never closed<a href=x>"),
                0,
            ),
            // A title in the body still counts.
            (
                b"<body><p>text</p><title>late</title></body>",
                Some("late"),
                0,
            ),
            (b"<title>   </title>", None, 0),
            // Foster parenting moves the link out of the table; still one.
            (
                b"<table><a href=1>x<tr><td>y</td></tr></a></table>",
                None,
                1,
            ),
        ];
        for (html, title, links) in cases {
            let text = String::from_utf8_lossy(html);
            assert_eq!(
                parse_html(html),
                (title.map(str::to_string), links),
                "{text}"
            );
        }
    }

    /// The one difference found: a link opened inside another and never
    /// closed. The tree builder's adoption agency algorithm repairs it by
    /// cloning the outer `<a>` (with its `href`) around the inner content, so
    /// the DOM had 3 links where the page has 2 `<a href>` tags; the stream
    /// counts the tags the page has. None of the 2,257 corpus pages has it.
    #[test]
    fn misnested_links_are_counted_as_written() {
        let html = b"<a href=1><p><a href=2>x</a></p>";
        assert_eq!(parse_html(html), (None, 2));
    }

    #[test]
    fn garbage_does_not_fail() {
        assert_eq!(parse_html(&[0xff, 0xfe, 0x00, 0x80]), (None, 0));
        assert_eq!(parse_html(b""), (None, 0));
        let latin1 = b"<title>Caf\xe9</title>";
        assert_eq!(parse_html(latin1).0.as_deref(), Some("Caf\u{fffd}"));
    }

    /// The CPU stage of a 200 with this body and `Content-Type` from
    /// `http://h/`.
    fn stage(body: &[u8], content_type: Option<&str>, options: &Options) -> Page {
        let fetched = Fetched {
            status: 200,
            body: body.to_vec(),
            content_type: content_type.map(str::to_string),
        };
        let url = crate::check_url("http://h/").unwrap();
        page(fetched, url, options).unwrap()
    }

    #[test]
    fn non_html_is_counted_not_parsed() {
        let opts = Options::default();
        let p = stage(b"<title>x</title>", Some("application/json"), &opts);
        assert_eq!((p.title, p.links, p.bytes), (None, 0, 16));
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
        assert_eq!((p.final_url.as_str(), p.saved), ("http://h/", None));
        let p = stage(b"<title>x</title>", None, &opts);
        assert_eq!(p.title.as_deref(), Some("x"));
        let off = Options::builder().parse(false).build().unwrap();
        assert_eq!(stage(b"<title>x</title>", None, &off).title, None);
    }

    #[test]
    fn a_saved_page_says_where_and_a_failed_save_is_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options::builder()
            .save_dir(Some(dir.path().to_path_buf()))
            .build()
            .unwrap();
        let p = stage(b"<title>x</title>", Some("text/html"), &opts);
        let saved = p.saved.unwrap();
        assert_eq!(saved, save::relative_path("http://h/", Some("text/html")));
        assert_eq!(
            std::fs::read(dir.path().join(saved)).unwrap(),
            b"<title>x</title>"
        );

        let file = dir.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let opts = opts.to_builder().save_dir(Some(file)).build().unwrap();
        let fetched = Fetched {
            status: 200,
            body: b"x".to_vec(),
            content_type: None,
        };
        let url = crate::check_url("http://h/x").unwrap();
        let error = page(fetched, url, &opts).unwrap_err();
        assert_eq!(error.kind(), crate::ErrorKind::Save);
        assert_eq!(error.final_url(), Some("http://h/x"));
    }

    #[test]
    #[cfg(feature = "fault-injection")]
    fn panic_marker_panics_only_on_a_match() {
        let opts = Options::builder()
            .panic_marker(Some("<title>Page 3</title>".into()))
            .build()
            .unwrap();
        assert!(stage(b"<title>Page 4</title>", None, &opts).title.is_some());
        let hit = std::panic::catch_unwind(|| stage(b"<title>Page 3</title>", None, &opts));
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
