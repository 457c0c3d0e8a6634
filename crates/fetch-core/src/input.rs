//! What a URL from the input must be before any request: checked and
//! normalised once, here, so that every model requests the same string and
//! the same input line gives the same record kind in every model.
//!
//! Clients disagree on what they accept. ureq (through the `http` crate)
//! refuses a space in a path; reqwest and surf percent-encode it. hyper needs
//! an ASCII host; reqwest runs IDNA itself. And the WHATWG parser reads
//! `http:///page/1` as a request to a host called `page`. Left to each
//! client, one URL file gives `invalid_url` in one model and a 404 in the
//! next. So the check and the normalisation happen once, in
//! [`Dispatch::next_url`](crate::Dispatch::next_url), and a model only ever
//! sees the normalised URL:
//!
//! - parsed by the WHATWG URL standard (the `url` crate): spaces and
//!   non-ASCII characters percent-encoded, an internationalised host turned
//!   into punycode (`bücher.example` → `xn--bcher-kva.example`);
//! - the scheme is `http` or `https`, there is a host, and the scheme is
//!   followed by exactly `//` (`http:///page/1`, `http:/page/1` and
//!   `http:page` are refused rather than guessed at);
//! - at most [`MAX_URL_BYTES`] long, before and after normalisation;
//! - no U+FFFD REPLACEMENT CHARACTER: a line of a URL file that is not valid
//!   UTF-8 reaches the pipeline decoded lossily, and that character is the
//!   mark it leaves. Such a line is reported, never fetched as a guess.

use std::cell::Cell;

use url::{SyntaxViolation, Url};

use crate::{ErrorKind, FetchError};

/// The longest URL fetched, in bytes: 8 KiB, the request-line limit of the
/// common servers (nginx's `large_client_header_buffers` and Apache's
/// `LimitRequestLine` both stop at 8 KiB and answer 414), so a longer URL
/// would fail at the server anyway. Longer input is an `invalid_url` record.
pub const MAX_URL_BYTES: usize = 8 * 1024;

/// How much of an over-long input line a record keeps, in bytes.
const SHOWN_BYTES: usize = 200;

/// Checks a URL before any request and returns it normalised (see the module
/// docs for the rules). Surrounding whitespace is ignored.
pub fn check_url(raw: &str) -> Result<Url, FetchError> {
    let raw = raw.trim();
    let invalid = |why: String| FetchError::new(ErrorKind::InvalidUrl, why);
    if raw.len() > MAX_URL_BYTES {
        return Err(invalid(format!(
            "URL is {} bytes long; the limit is {MAX_URL_BYTES} bytes",
            raw.len()
        )));
    }
    if raw.contains(char::REPLACEMENT_CHARACTER) {
        return Err(invalid(format!(
            "not valid UTF-8 (undecodable bytes shown as U+FFFD): {raw:?}"
        )));
    }
    let missing_slashes = Cell::new(false);
    let on_violation =
        |v| missing_slashes.set(missing_slashes.get() || v == SyntaxViolation::ExpectedDoubleSlash);
    let parsed = Url::options()
        .syntax_violation_callback(Some(&on_violation))
        .parse(raw)
        .map_err(|e| invalid(format!("{e}: {raw:?}")))?;
    match parsed.scheme() {
        "http" | "https" => {}
        other => {
            return Err(invalid(format!(
                "scheme {other:?} is not http or https: {raw:?}"
            )));
        }
    }
    if missing_slashes.get() {
        return Err(invalid(format!(
            "expected exactly \"//\" after \"{}:\": {raw:?}",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format!("URL has no host: {raw:?}")));
    }
    // Percent-encoding can triple a URL's length.
    if parsed.as_str().len() > MAX_URL_BYTES {
        return Err(invalid(format!(
            "URL is {} bytes long once percent-encoded; the limit is {MAX_URL_BYTES} bytes",
            parsed.as_str().len()
        )));
    }
    Ok(parsed)
}

/// The text a record keeps of an input line: the line itself, or for a line
/// over [`MAX_URL_BYTES`], its first bytes and a marker saying how long it
/// was, so that a 50 MB line does not make a 50 MB record.
pub fn shown_url(raw: &str) -> String {
    if raw.len() <= MAX_URL_BYTES {
        return raw.to_string();
    }
    let mut end = SHOWN_BYTES;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[truncated: {} bytes]", &raw[..end], raw.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalised(raw: &str) -> String {
        check_url(raw)
            .map(String::from)
            .unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    fn refused(raw: &str) -> String {
        let err = check_url(raw).expect_err(raw);
        assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{raw}");
        err.message().to_string()
    }

    #[test]
    fn invalid_urls_are_rejected() {
        for bad in [
            "",
            "not a url",
            "ftp://example.com/",
            "http://",
            "mailto:a@b.c",
            "http:///page/1",
            "http:/page/1",
            "https:example.com",
            "http://exa mple.com/",
            "http://[::1/",
        ] {
            refused(bad);
        }
        assert!(check_url("http://127.0.0.1:8080/page/1").is_ok());
        assert!(check_url(" https://example.com ").is_ok());
    }

    #[test]
    fn urls_are_normalised_once() {
        assert_eq!(normalised("http://h/a b"), "http://h/a%20b");
        assert_eq!(
            normalised("http://bücher.example/straße?q=ä"),
            "http://xn--bcher-kva.example/stra%C3%9Fe?q=%C3%A4"
        );
        assert_eq!(normalised("HTTP://H:80/x"), "http://h/x");
        assert_eq!(normalised("http://h"), "http://h/");
    }

    #[test]
    fn a_lossily_decoded_line_is_refused() {
        let line = String::from_utf8_lossy(b"http://h/\xff").into_owned();
        assert!(refused(&line).contains("not valid UTF-8"));
    }

    #[test]
    fn long_urls_are_refused_and_shown_truncated() {
        let at_limit = format!("http://h/{}", "a".repeat(MAX_URL_BYTES - 9));
        assert_eq!(at_limit.len(), MAX_URL_BYTES);
        assert!(check_url(&at_limit).is_ok());
        assert_eq!(shown_url(&at_limit), at_limit);

        let over = format!("{at_limit}a");
        assert!(refused(&over).contains("8193 bytes long"));
        // 3,000 characters of two bytes: 6,000 bytes as text, 18,000 once
        // percent-encoded.
        let wide = format!("http://h/{}", "é".repeat(3000));
        assert!(refused(&wide).contains("once percent-encoded"));

        let huge = format!("http://h/{}", "é".repeat(1_000_000));
        let shown = shown_url(&huge);
        assert!(shown.len() < 300, "{}", shown.len());
        assert!(shown.ends_with("…[truncated: 2000009 bytes]"), "{shown}");
        assert!(refused(&huge).len() < 100);
    }
}
