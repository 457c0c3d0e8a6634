//! What a client adapter does with a response, whatever its client: the
//! status check, the body cap, and where a redirect leads. Every model's
//! `attempt` (ureq, reqwest, surf, hyper) makes the same decisions, and they
//! are the contract, not the model: a non-2xx status is an `http_status`
//! error carrying the server's `Retry-After` and `Location`
//! ([`check_status`]); a body stops being read the moment it passes
//! [`Options::max_body_bytes`](crate::Options::max_body_bytes), and one
//! shorter than its `Content-Length` is a `protocol` error ([`CappedBody`]).
//! Reading the chunks stays with the client, the only one that knows how.
//! (ureq caps the blocking models' bodies itself: see `blocking.rs`.)
//!
//! **Redirects** are followed by the per-URL path (`fetch.rs`), the same way
//! for every model, with [`Redirects`]: no client follows one itself. Each
//! client has its own idea of a bad `Location` (measured before this was
//! shared: `Location: http://` ended as "too many redirects" in ureq, as the
//! 301 itself in reqwest, as "empty host" in surf and hyper; an `ftp://`
//! target was an invalid URL for two clients and followed by the others), so
//! the same page ended with different record kinds in different models. Here
//! the `Location` is resolved against the URL that sent it (WHATWG rules) and
//! checked like an input URL, whatever the client.

use std::io;

use futures_lite::{AsyncBufRead, AsyncBufReadExt};
use url::Url;

use crate::{ErrorKind, FetchError, check_url, retry};

/// A status checked: a 2xx passes; anything else is an `http_status` error
/// with the server's `Retry-After` (its seconds form, see
/// [`retry::parse_retry_after`]), which the retry policy honours, and its
/// `Location`, which the per-URL path follows if the status is a redirect.
pub fn check_status(
    status: u16,
    retry_after: Option<&str>,
    location: Option<&str>,
) -> Result<(), FetchError> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let retry_after = retry_after.and_then(retry::parse_retry_after);
    Err(FetchError::http_status(status, retry_after).with_location(location))
}

/// A response body gathered chunk by chunk under a cap: an endless body costs
/// at most the cap, because [`push`](Self::push) fails as soon as it is
/// passed, and the caller's `?` then drops the response and its connection.
/// (A client's own "read the whole body" call has no cap at all.)
#[derive(Debug)]
pub struct CappedBody {
    bytes: Vec<u8>,
    cap: u64,
    announced: Option<u64>,
}

impl CappedBody {
    /// An empty body for a response that announces `announced` bytes (its
    /// exact length, if the client knows it: a `Content-Length` of a body it
    /// does not decode). A body announced over `cap` is refused before a byte
    /// of it is read.
    pub fn new(cap: u64, announced: Option<u64>) -> Result<Self, FetchError> {
        let body = CappedBody {
            bytes: Vec::new(),
            cap,
            announced,
        };
        match announced {
            Some(len) if len > cap => Err(body.too_large()),
            // Within the cap, so the allocation is bounded too.
            Some(len) => Ok(CappedBody {
                bytes: Vec::with_capacity(usize::try_from(len).unwrap_or(0)),
                ..body
            }),
            None => Ok(body),
        }
    }

    /// Adds one chunk, or fails with `body_too_large` if the body would pass
    /// the cap.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), FetchError> {
        if (self.bytes.len() + chunk.len()) as u64 > self.cap {
            return Err(self.too_large());
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    /// The whole body, once the client has no more chunks: a `protocol`
    /// error if it is shorter than announced, which means the connection
    /// closed mid-response. (hyper reports that itself; async-h1 ends such a
    /// body quietly, as if it were complete.)
    pub fn finish(self) -> Result<Vec<u8>, FetchError> {
        let read = self.bytes.len() as u64;
        match self.announced {
            Some(len) if len != read => Err(FetchError::new(
                ErrorKind::Protocol,
                format!("connection closed after {read} of {len} body bytes"),
            )),
            _ => Ok(self.bytes),
        }
    }

    /// Reads the rest of a body from a buffered async reader (surf's
    /// response is one), chunk by chunk as the connection delivers them,
    /// and [`finish`](Self::finish)es it; `map` turns the reader's I/O
    /// errors into the client's kinds.
    pub async fn read_from<R: AsyncBufRead + Unpin>(
        mut self,
        reader: &mut R,
        map: impl Fn(io::Error) -> FetchError,
    ) -> Result<Vec<u8>, FetchError> {
        loop {
            let chunk = reader.fill_buf().await.map_err(&map)?;
            if chunk.is_empty() {
                return self.finish();
            }
            self.push(chunk)?;
            let read = chunk.len();
            reader.consume(read);
        }
    }

    fn too_large(&self) -> FetchError {
        let message = format!("body over {} bytes", self.cap);
        FetchError::new(ErrorKind::BodyTooLarge, message)
    }
}

/// Redirects followed by hand: the URL to request next, and the hops taken.
///
/// ```text
/// let mut redirects = Redirects::new(url.clone(), options.max_redirects());
/// loop {
///     let result = attempt(redirects.url().clone()).await;
///     match &result {
///         Err(answer) if redirects.follow(answer)? => {} // go on
///         _ => break result,                              // the final answer
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Redirects {
    url: Url,
    followed: u32,
    max: u32,
}

impl Redirects {
    /// Starts at `url` (as [`check_url`] returns it), allowing up to `max`
    /// redirects after it.
    pub fn new(url: Url, max: u32) -> Self {
        Redirects {
            url,
            followed: 0,
            max,
        }
    }

    /// The URL to request next.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The URL requested last, once its answer is final (not a redirect
    /// followed): where the URL ended up, the record's `final_url`.
    pub fn into_url(self) -> Url {
        self.url
    }

    /// Reads a failed request's answer: `true` if it is a redirect (301,
    /// 302, 303, 307 or 308 with a `Location`, from [`check_status`]), and
    /// [`url`](Self::url) is now where it points; `false` if it is the final
    /// answer (a redirect status without a `Location` is one). A redirect
    /// past `max`, or to something other than an http(s) URL, is a
    /// `redirect` error. The `Location` is checked by the same rules as an
    /// input URL ([`check_url`]), so a redirect cannot request what the
    /// input may not.
    pub fn follow(&mut self, answer: &FetchError) -> Result<bool, FetchError> {
        let is_redirect = matches!(answer.status(), Some(301 | 302 | 303 | 307 | 308));
        let Some(location) = answer.location().filter(|_| is_redirect) else {
            return Ok(false);
        };
        let error = |why: String| FetchError::new(ErrorKind::Redirect, why);
        if self.followed == self.max {
            return Err(error(format!("more than {} redirects", self.max)));
        }
        let next = self.url.join(location);
        let next = next.map_err(|e| error(format!("Location {location:?}: {e}")))?;
        self.url = check_url(next.as_str())
            .map_err(|e| error(format!("Location {location:?}: {}", e.message())))?;
        self.followed += 1;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_non_2xx_status_carries_its_retry_after() {
        assert_eq!(check_status(204, Some("5"), None), Ok(()));
        let error = check_status(503, Some(" 7 "), None).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::HttpStatus);
        assert_eq!(error.status(), Some(503));
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
        let error = check_status(302, Some("soon"), Some("/next")).unwrap_err();
        assert_eq!((error.status(), error.retry_after()), (Some(302), None));
        assert_eq!(error.location(), Some("/next"));
    }

    #[test]
    fn a_body_stops_at_the_cap() {
        let mut body = CappedBody::new(5, None).unwrap();
        body.push(b"abc").unwrap();
        body.push(b"de").unwrap();
        let error = body.push(b"f").unwrap_err();
        assert_eq!(error.kind(), ErrorKind::BodyTooLarge);
        assert_eq!(body.finish().unwrap(), b"abcde");

        let announced = CappedBody::new(5, Some(6)).unwrap_err();
        assert_eq!(announced.kind(), ErrorKind::BodyTooLarge);
    }

    #[test]
    fn a_body_shorter_than_announced_is_a_protocol_error() {
        let mut body = CappedBody::new(10, Some(4)).unwrap();
        body.push(b"abc").unwrap();
        assert_eq!(body.finish().unwrap_err().kind(), ErrorKind::Protocol);
        let mut body = CappedBody::new(10, Some(4)).unwrap();
        body.push(b"abcd").unwrap();
        assert_eq!(body.finish().unwrap(), b"abcd");
    }

    #[test]
    fn redirects_are_followed_up_to_the_limit() {
        let answer = |status, location| check_status(status, None, location).unwrap_err();
        let mut redirects = Redirects::new(check_url("http://h/a/b").unwrap(), 2);
        assert!(!redirects.follow(&answer(404, Some("/x"))).unwrap());
        assert!(!redirects.follow(&answer(304, Some("/x"))).unwrap());
        assert!(!redirects.follow(&answer(302, None)).unwrap());
        let timeout = FetchError::new(ErrorKind::Timeout, "slow");
        assert!(!redirects.follow(&timeout).unwrap());
        assert!(redirects.follow(&answer(301, Some("c?d=1"))).unwrap());
        assert_eq!(redirects.url().as_str(), "http://h/a/c?d=1");
        let other = answer(308, Some("https://other:8443/"));
        assert!(redirects.follow(&other).unwrap());
        assert_eq!(redirects.url().as_str(), "https://other:8443/");
        let error = redirects.follow(&answer(307, Some("/again"))).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Redirect);

        // Not an http(s) URL, no host: `redirect`, and the URL stays.
        for location in ["ftp://h/file", "http://", "http://exa mple/"] {
            let mut redirects = Redirects::new(check_url("http://h/").unwrap(), 5);
            let error = redirects.follow(&answer(303, Some(location))).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Redirect, "{location}");
            assert_eq!(redirects.url().as_str(), "http://h/");
        }
        // Not an absolute URL: a path relative to the one that sent it.
        let mut redirects = Redirects::new(check_url("http://h/a/b").unwrap(), 5);
        assert!(redirects.follow(&answer(302, Some("::not a url"))).unwrap());
        assert_eq!(redirects.url().as_str(), "http://h/a/::not%20a%20url");
    }
}
