//! The HTML the server serves, as pure functions so tests and benchmarks can
//! build the expected page without a network round trip.

use std::fmt::Write as _;

/// The exact `<title>` text of page `id`.
pub fn page_title(id: u64) -> String {
    format!("Page {id}")
}

/// The page ids page `id` links to, in document order: `id+1 ..= id+links`.
/// Chosen so that a crawler's expected frontier is easy to compute by hand.
pub fn page_links(id: u64, links: usize) -> Vec<u64> {
    (1..=links as u64).map(|k| id.wrapping_add(k)).collect()
}

/// Text used to pad pages. Plain ASCII, so slicing it at any byte is valid UTF-8.
const FILLER: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod \
tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud \
exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. ";

const TAIL: &str = "</body></html>\n";

/// The full HTML of page `id`: a `<title>` of [`page_title`], `links` anchors
/// `<a href="/page/N">` (see [`page_links`]), then padding. The result is exactly
/// `body_bytes` long, or its natural length if that is larger.
pub fn page_html(id: u64, links: usize, body_bytes: usize) -> String {
    let title = page_title(id);
    let mut html = String::with_capacity(body_bytes.max(128 + 48 * links));
    // `write!` into a String cannot fail; the Result is only there for io-like sinks.
    let _ = write!(
        html,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n<body>\n<h1>{title}</h1>\n<ul>\n"
    );
    for target in page_links(id, links) {
        let _ = writeln!(
            html,
            "<li><a href=\"/page/{target}\">Page {target}</a></li>"
        );
    }
    html.push_str("</ul>\n");

    const P_OPEN: &str = "<p>";
    const P_CLOSE: &str = "</p>\n";
    let missing = body_bytes.saturating_sub(html.len() + TAIL.len());
    if missing >= P_OPEN.len() + P_CLOSE.len() {
        // Real text inside a <p>, so an HTML parser does realistic work on it.
        let mut text = missing - P_OPEN.len() - P_CLOSE.len();
        html.push_str(P_OPEN);
        while text > 0 {
            let n = text.min(FILLER.len());
            html.push_str(&FILLER[..n]);
            text -= n;
        }
        html.push_str(P_CLOSE);
    } else {
        // Too little room for a paragraph: whitespace is still valid HTML.
        html.extend(std::iter::repeat_n('\n', missing));
    }
    html.push_str(TAIL);
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_size_title_and_links() {
        for size in [0, 10, 500, 501, 502, 503, 504, 505, 506, 507, 2048, 100_000] {
            let html = page_html(7, 3, size);
            assert_eq!(
                html.len(),
                size.max(page_html(7, 3, 0).len()),
                "size {size}"
            );
            assert!(html.contains("<title>Page 7</title>"));
            assert!(html.contains("<a href=\"/page/8\">"));
            assert!(html.contains("<a href=\"/page/10\">"));
            assert!(!html.contains("<a href=\"/page/11\">"));
            assert_eq!(html.matches("<a href=").count(), 3);
        }
    }
}
