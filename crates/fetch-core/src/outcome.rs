//! The record every URL ends with, whatever happened to it.
//!
//! A failure is data here, never a reason to stop the batch: the lesson of
//! Python's `gather(return_exceptions=True)`, made a type. A model returns one
//! [`Outcome`] per input URL, carrying the URL's input index.

use std::fmt;
use std::time::Duration;

/// Why a URL failed: one kind per cause. The names returned by
/// [`ErrorKind::as_str`] are stable; `fetchlab run` writes them in its JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The URL does not parse, or its scheme is not http or https.
    InvalidUrl,
    /// No connection: refused, unreachable, or the host name did not resolve.
    Connect,
    /// The TLS handshake failed, or the server's certificate is not trusted.
    Tls,
    /// One attempt took longer than the per-attempt request timeout.
    Timeout,
    /// The final response had a non-2xx status; [`FetchError::status`] has it.
    HttpStatus,
    /// The body was longer than the configured cap; reading stopped there.
    BodyTooLarge,
    /// A malformed response, or the connection closed or reset mid-response.
    Protocol,
    /// More redirects than the configured maximum.
    Redirect,
    /// The URL was not finished when the run's global deadline passed.
    Deadline,
    /// The run was cancelled before the URL finished.
    Cancelled,
    /// The code fetching or parsing this URL panicked (a bug in the client or
    /// the CPU stage). The panic is caught where the model runs the URL, so it
    /// costs this URL alone, never the batch. A crash that no catch can
    /// stop ends the same way: the processes model's worker process dying
    /// with the URL in flight, or `fetchlab worker` giving up on a URL whose
    /// workers died (or stopped) with it more than `--max-deliveries` times.
    Panicked,
    /// The client cannot read what the server sent, e.g. an HTTP/1.0
    /// response to async-h1 (surf's h1 client). A limit of the client, not a
    /// fault of the server or the network, so it is never retried.
    Unsupported,
    /// The page was fetched (a 2xx) but could not be written under
    /// [`Options::save_dir`](crate::Options::save_dir): the disk is full, the
    /// directory is not writable, a file is where a directory must go. The
    /// message names the file and the cause. Not retried (the server did
    /// nothing wrong, and fetching again would not free the disk), and not
    /// final for `fetchlab run --resume`, which fetches the URL again.
    Save,
    /// With [`Options::robots`](crate::Options::robots) on, the robots.txt
    /// of the URL's origin disallows it (or could not be fetched, which
    /// RFC 9309 reads as "disallow all"; the message says which), or
    /// disallows a redirect on that origin that the URL led to. The URL
    /// itself is never requested (`attempts` 0; a disallowed redirect
    /// counts the requests made before it). A decision, not a failure:
    /// never retried, and final for `fetchlab run --resume`.
    RobotsDisallowed,
}

impl ErrorKind {
    /// Every kind, in declaration order (for tables and counters).
    pub const ALL: [ErrorKind; 14] = [
        ErrorKind::InvalidUrl,
        ErrorKind::Connect,
        ErrorKind::Tls,
        ErrorKind::Timeout,
        ErrorKind::HttpStatus,
        ErrorKind::BodyTooLarge,
        ErrorKind::Protocol,
        ErrorKind::Redirect,
        ErrorKind::Deadline,
        ErrorKind::Cancelled,
        ErrorKind::Panicked,
        ErrorKind::Unsupported,
        ErrorKind::Save,
        ErrorKind::RobotsDisallowed,
    ];

    /// The stable snake_case name: `invalid_url`, `connect`, `tls`, `timeout`,
    /// `http_status`, `body_too_large`, `protocol`, `redirect`, `deadline`,
    /// `cancelled`, `panicked`, `unsupported`, `save`, `robots_disallowed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidUrl => "invalid_url",
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Timeout => "timeout",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Redirect => "redirect",
            ErrorKind::Deadline => "deadline",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Panicked => "panicked",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Save => "save",
            ErrorKind::RobotsDisallowed => "robots_disallowed",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one URL failed: a kind, a human message, and for HTTP statuses the code,
/// any `Retry-After` the server sent and, for a redirect, its `Location`; for
/// a failure that came with a final answer, the URL that gave it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct FetchError {
    kind: ErrorKind,
    message: String,
    status: Option<u16>,
    retry_after: Option<Duration>,
    location: Option<String>,
    final_url: Option<String>,
}

impl FetchError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        FetchError {
            kind,
            message: message.into(),
            status: None,
            retry_after: None,
            location: None,
            final_url: None,
        }
    }

    /// A non-2xx final status. `retry_after` is the server's `Retry-After`, if
    /// any, already parsed (see [`crate::retry::parse_retry_after`]).
    pub fn http_status(status: u16, retry_after: Option<Duration>) -> Self {
        FetchError {
            kind: ErrorKind::HttpStatus,
            message: format!("HTTP status {status}"),
            status: Some(status),
            retry_after,
            location: None,
            final_url: None,
        }
    }

    /// The same error carrying the `Location` its response sent: for a
    /// redirect status, where the per-URL path goes next (see
    /// [`crate::response::Redirects`]).
    pub fn with_location(self, location: Option<&str>) -> Self {
        FetchError {
            location: location.map(str::to_owned),
            ..self
        }
    }

    /// The same error carrying the URL whose answer it is, after any
    /// redirects: set by the per-URL path on an `http_status` error (the
    /// URL that answered with that status) and on a `save` error (the page
    /// that could not be saved). Every other kind has none: no final answer
    /// came (a timeout, a refused connection) or none was accepted (a
    /// redirect past the limit).
    pub fn with_final_url(self, url: impl Into<String>) -> Self {
        FetchError {
            final_url: Some(url.into()),
            ..self
        }
    }

    /// A caught panic, with its message when the payload is a string (as it
    /// is for `panic!("...")`, `unwrap` and `expect`).
    pub fn from_panic(payload: &(dyn std::any::Any + Send)) -> Self {
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_string());
        FetchError::new(ErrorKind::Panicked, format!("panicked: {text}"))
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    /// The HTTP status, for [`ErrorKind::HttpStatus`].
    pub fn status(&self) -> Option<u16> {
        self.status
    }
    /// The server's `Retry-After`, when it sent one with an error status.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
    /// The `Location` the server sent with a redirect status.
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }
    /// The URL that gave the final answer, after redirects (see
    /// [`with_final_url`](Self::with_final_url)).
    pub fn final_url(&self) -> Option<&str> {
        self.final_url.as_deref()
    }
}

/// A fetched page, after the CPU stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The final (2xx) status.
    pub status: u16,
    /// Body length in bytes, as received (after any content decoding).
    pub bytes: u64,
    /// The `<title>` text, whitespace-collapsed; `None` when the page has none,
    /// is not HTML, or parsing is turned off.
    pub title: Option<String>,
    /// Number of `<a href>` links (0 when not parsed).
    pub links: usize,
    /// The URL that gave this page, after redirects: the normalised request
    /// URL ([`check_url`](crate::check_url)) when there was none. (The
    /// [`Outcome::url`] is the input line as given.)
    pub final_url: String,
    /// The response's `Content-Type` header as sent, if it sent one.
    pub content_type: Option<String>,
    /// Where the body was saved, relative to
    /// [`Options::save_dir`](crate::Options::save_dir) and always with `/`
    /// (see [`crate::save`]); `None` when saving is off.
    pub saved: Option<String>,
}

/// The one record a URL ends with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The URL's position in the input.
    pub index: usize,
    pub url: String,
    /// Attempts made (0 when the URL was never tried: invalid, cancelled or past
    /// the deadline before its turn).
    pub attempts: u32,
    /// From the first attempt's start to the final result, backoff included.
    pub elapsed: Duration,
    pub result: Result<Page, FetchError>,
}

impl Outcome {
    /// An outcome for a URL that was never tried.
    pub fn untried(index: usize, url: &str, error: FetchError) -> Self {
        Outcome {
            index,
            url: url.to_string(),
            attempts: 0,
            elapsed: Duration::ZERO,
            result: Err(error),
        }
    }

    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    /// The error kind, or `None` for a page.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        self.result.as_ref().err().map(FetchError::kind)
    }
}
