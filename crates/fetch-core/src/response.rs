//! What an async client adapter does with a response, whatever its client:
//! the status check and the body cap. Every async model's `attempt` (reqwest,
//! surf, hyper) makes the same decisions, and they are the contract, not the
//! model: a non-2xx status is an `http_status` error carrying the server's
//! `Retry-After` ([`check_status`]); a body stops being read the moment it
//! passes [`Options::max_body_bytes`](crate::Options::max_body_bytes), and
//! one shorter than its `Content-Length` is a `protocol` error
//! ([`CappedBody`]). Reading the chunks stays with the client, the only one
//! that knows how. (ureq caps the blocking models' bodies itself: see
//! `blocking.rs`.)
//!
//! A client that follows no redirects itself (hyper's bare `client::conn` in
//! the smol model, surf in async-std's) follows them with [`Redirects`]:
//! which responses redirect, where to, and how many hops.

use std::io;

use futures_lite::{AsyncBufRead, AsyncBufReadExt};
use url::Url;

use crate::{ErrorKind, FetchError, check_url, retry};

/// A final status checked: a 2xx passes; anything else is an `http_status`
/// error with the server's `Retry-After` (its seconds form, see
/// [`retry::parse_retry_after`]), which the retry policy honours.
pub fn check_status(status: u16, retry_after: Option<&str>) -> Result<(), FetchError> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let retry_after = retry_after.and_then(retry::parse_retry_after);
    Err(FetchError::http_status(status, retry_after))
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
/// let mut redirects = Redirects::new(url, options.max_redirects())?;
/// loop {
///     let response = send(redirects.url()).await?;
///     if !redirects.follow(status, location)? {
///         break response; // the final response
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
    /// Starts at `url`, allowing up to `max` redirects after it.
    pub fn new(url: &str, max: u32) -> Result<Self, FetchError> {
        let url = check_url(url)?;
        Ok(Redirects {
            url,
            followed: 0,
            max,
        })
    }

    /// The URL to request next.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Reads a response's head: `true` if it is a redirect (301, 302, 303,
    /// 307 or 308 with a `Location`), and [`url`](Self::url) is now where it
    /// points; `false` if it is the response to read (a redirect status
    /// without a `Location` is one: [`check_status`] fails it). A redirect
    /// past `max`, or to something other than an http(s) URL, is a
    /// `redirect` error. The `Location` is checked by the same rules as an
    /// input URL ([`check_url`]), so a redirect cannot request what the
    /// input may not.
    pub fn follow(&mut self, status: u16, location: Option<&str>) -> Result<bool, FetchError> {
        let is_redirect = matches!(status, 301 | 302 | 303 | 307 | 308);
        let Some(location) = location.filter(|_| is_redirect) else {
            return Ok(false);
        };
        let error = |why: String| FetchError::new(ErrorKind::Redirect, why);
        if self.followed == self.max {
            return Err(error(format!("more than {} redirects", self.max)));
        }
        let next = self.url.join(location);
        let next = next.map_err(|e| error(format!("Location {location:?}: {e}")))?;
        self.url = check_url(next.as_str()).map_err(|e| error(e.message().to_owned()))?;
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
        assert_eq!(check_status(204, Some("5")), Ok(()));
        let error = check_status(503, Some(" 7 ")).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::HttpStatus);
        assert_eq!(error.status(), Some(503));
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
        let error = check_status(302, Some("soon")).unwrap_err();
        assert_eq!((error.status(), error.retry_after()), (Some(302), None));
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
        let mut redirects = Redirects::new("http://h/a/b", 2).unwrap();
        assert!(!redirects.follow(200, Some("/x")).unwrap());
        assert!(!redirects.follow(302, None).unwrap());
        assert!(redirects.follow(301, Some("c?d=1")).unwrap());
        assert_eq!(redirects.url().as_str(), "http://h/a/c?d=1");
        assert!(redirects.follow(308, Some("https://other:8443/")).unwrap());
        assert_eq!(redirects.url().as_str(), "https://other:8443/");
        let error = redirects.follow(307, Some("/again")).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Redirect);

        let mut redirects = Redirects::new("http://h/", 5).unwrap();
        let error = redirects.follow(303, Some("ftp://h/file")).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Redirect);
        assert_eq!(redirects.url().as_str(), "http://h/");
    }
}
