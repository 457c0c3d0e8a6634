//! What a run is allowed to do: limits, timeouts, retries, TLS roots.
//!
//! `Options` is built through [`OptionsBuilder`], which checks every value, so a
//! model never sees a configuration that would hang (zero requests in flight) or
//! fail every request before it starts (a zero timeout). The fields are private
//! for that reason; read them through the accessor methods.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::AutoThrottle;

/// The statuses retried by default: request timeout, rate limiting, and the
/// server-side errors that usually mean "try again" rather than "you asked for
/// something wrong".
pub const DEFAULT_RETRY_STATUSES: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// Limits and policies shared by every model. Built with [`Options::builder`];
/// [`Options::default`] is a configuration a user would expect for a batch crawl.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    max_in_flight: usize,
    max_per_host: Option<usize>,
    host_delay: Duration,
    auto_throttle: Option<AutoThrottle>,
    connect_timeout: Duration,
    request_timeout: Duration,
    deadline: Option<Duration>,
    retries: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    retry_after_cap: Duration,
    retry_statuses: Vec<u16>,
    max_redirects: u32,
    max_body_bytes: u64,
    parse: bool,
    cpu_work: u32,
    user_agent: String,
    extra_roots: Vec<CertificateDer<'static>>,
    save_dir: Option<PathBuf>,
    robots: bool,
    #[cfg(feature = "fault-injection")]
    panic_marker: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_in_flight: 16,
            max_per_host: None,
            host_delay: Duration::ZERO,
            auto_throttle: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            deadline: None,
            retries: 2,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            retry_after_cap: Duration::from_secs(30),
            retry_statuses: DEFAULT_RETRY_STATUSES.to_vec(),
            max_redirects: 5,
            max_body_bytes: 8 * 1024 * 1024,
            parse: true,
            cpu_work: 0,
            user_agent: concat!("fetchlab/", env!("CARGO_PKG_VERSION")).to_string(),
            extra_roots: Vec::new(),
            save_dir: None,
            robots: false,
            #[cfg(feature = "fault-injection")]
            panic_marker: None,
        }
    }
}

impl Options {
    /// A builder starting from the defaults.
    pub fn builder() -> OptionsBuilder {
        OptionsBuilder {
            options: Options::default(),
            pem_error: None,
        }
    }

    /// A builder starting from these options, to change a few of them.
    pub fn to_builder(&self) -> OptionsBuilder {
        OptionsBuilder {
            options: self.clone(),
            pem_error: None,
        }
    }

    /// How many requests may be in flight at once. Every model enforces it; the
    /// conformance suite checks it against the mock server's own counter.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }
    /// How many requests may be in flight to one host (scheme, host and
    /// port), with [`max_in_flight`](Self::max_in_flight) on top: Scrapy's
    /// `CONCURRENT_REQUESTS_PER_DOMAIN`. `None`, the default, is no per-host
    /// limit. [`Dispatch`](crate::Dispatch) enforces it for every model
    /// (`hosts.rs` says how).
    pub fn max_per_host(&self) -> Option<usize> {
        self.max_per_host
    }
    /// The least time between the starts of two attempts to one host,
    /// jittered to 0.5 to 1.5 times itself: Scrapy's `DOWNLOAD_DELAY` with
    /// `RANDOMIZE_DOWNLOAD_DELAY`. Zero, the default, is none. With
    /// AutoThrottle it is the least delay AutoThrottle may set. See `pace.rs`.
    pub fn host_delay(&self) -> Duration {
        self.host_delay
    }
    /// Scrapy's AutoThrottle: each host's delay adjusted to the latency of
    /// its responses ([`AutoThrottle`] has the formula). `None`, the
    /// default, is off.
    pub fn auto_throttle(&self) -> Option<AutoThrottle> {
        self.auto_throttle
    }
    /// Time allowed to open a connection (TCP and TLS handshake).
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
    /// Time allowed for one attempt: connect, headers and the whole body.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }
    /// Time allowed for the whole run, counted from its start.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }
    /// Extra attempts after the first one, for retryable failures.
    pub fn retries(&self) -> u32 {
        self.retries
    }
    /// The first backoff delay; it doubles for each further retry.
    pub fn backoff_base(&self) -> Duration {
        self.backoff_base
    }
    /// The longest backoff delay, before jitter.
    pub fn backoff_max(&self) -> Duration {
        self.backoff_max
    }
    /// The longest `Retry-After` a run will honour.
    pub fn retry_after_cap(&self) -> Duration {
        self.retry_after_cap
    }
    /// HTTP statuses that are worth another attempt.
    pub fn retry_statuses(&self) -> &[u16] {
        &self.retry_statuses
    }
    /// Redirects followed before the URL fails with `redirect`.
    pub fn max_redirects(&self) -> u32 {
        self.max_redirects
    }
    /// The largest body accepted; a longer one fails with `body_too_large`.
    pub fn max_body_bytes(&self) -> u64 {
        self.max_body_bytes
    }
    /// Whether fetched pages go through the CPU stage (HTML parse).
    pub fn parse(&self) -> bool {
        self.parse
    }
    /// Extra CPU work units per page (see [`crate::parse::cpu_work`]).
    pub fn cpu_work(&self) -> u32 {
        self.cpu_work
    }
    /// Whether the CPU stage does any work: parsing, extra CPU work, saving
    /// the page or an injected panic. When it does not,
    /// [`crate::parse::page`] only fills in the record, and async models run
    /// it in place rather than paying a hop to a blocking pool (a
    /// cross-thread wake-up per page). Saving needs the hop: a disk write
    /// must not block an event loop.
    pub fn has_cpu_stage(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        if self.panic_marker.is_some() {
            return true;
        }
        self.parse || self.cpu_work > 0 || self.save_dir.is_some()
    }
    /// The `User-Agent` header sent with every request.
    pub fn user_agent(&self) -> &str {
        &self.user_agent
    }
    /// Certificates trusted in addition to the platform's roots (DER).
    pub fn extra_roots(&self) -> &[CertificateDer<'static>] {
        &self.extra_roots
    }
    /// Where the CPU stage saves each page's body (see [`crate::save`]);
    /// `None`, the default, saves nothing.
    pub fn save_dir(&self) -> Option<&Path> {
        self.save_dir.as_deref()
    }
    /// Whether each URL's origin's robots.txt is obeyed (RFC 9309; Scrapy's
    /// `ROBOTSTXT_OBEY`): fetched once per origin for the run, through the
    /// model's own client, and a URL it disallows is a `robots_disallowed`
    /// record with no request. Off by default. See `robots.rs`.
    pub fn robots(&self) -> bool {
        self.robots
    }
    /// Fault injection for tests (feature `fault-injection`, which only the
    /// conformance suite turns on): the CPU stage panics on a body containing
    /// this text.
    #[cfg(feature = "fault-injection")]
    pub fn panic_marker(&self) -> Option<&str> {
        self.panic_marker.as_deref()
    }
}

/// Builds an [`Options`], checking every value in [`OptionsBuilder::build`].
#[derive(Clone, Debug)]
pub struct OptionsBuilder {
    options: Options,
    pem_error: Option<String>,
}

impl OptionsBuilder {
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.options.max_in_flight = n;
        self
    }
    pub fn max_per_host(mut self, n: Option<usize>) -> Self {
        self.options.max_per_host = n;
        self
    }
    pub fn host_delay(mut self, d: Duration) -> Self {
        self.options.host_delay = d;
        self
    }
    pub fn auto_throttle(mut self, auto: Option<AutoThrottle>) -> Self {
        self.options.auto_throttle = auto;
        self
    }
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.options.connect_timeout = d;
        self
    }
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.options.request_timeout = d;
        self
    }
    pub fn deadline(mut self, d: Option<Duration>) -> Self {
        self.options.deadline = d;
        self
    }
    pub fn retries(mut self, n: u32) -> Self {
        self.options.retries = n;
        self
    }
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.options.backoff_base = base;
        self.options.backoff_max = max;
        self
    }
    pub fn retry_after_cap(mut self, d: Duration) -> Self {
        self.options.retry_after_cap = d;
        self
    }
    pub fn retry_statuses(mut self, statuses: impl Into<Vec<u16>>) -> Self {
        self.options.retry_statuses = statuses.into();
        self
    }
    pub fn max_redirects(mut self, n: u32) -> Self {
        self.options.max_redirects = n;
        self
    }
    pub fn max_body_bytes(mut self, n: u64) -> Self {
        self.options.max_body_bytes = n;
        self
    }
    pub fn parse(mut self, parse: bool) -> Self {
        self.options.parse = parse;
        self
    }
    pub fn cpu_work(mut self, units: u32) -> Self {
        self.options.cpu_work = units;
        self
    }
    pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
        self.options.user_agent = ua.into();
        self
    }
    /// Trusts every certificate in `pem` in addition to the platform's roots.
    /// A malformed PEM is reported by [`build`](Self::build).
    pub fn add_root_pem(mut self, pem: &str) -> Self {
        let before = self.options.extra_roots.len();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            match cert {
                Ok(cert) => self.options.extra_roots.push(cert),
                Err(err) => {
                    self.pem_error = Some(err.to_string());
                    return self;
                }
            }
        }
        if self.options.extra_roots.len() == before {
            self.pem_error = Some("no CERTIFICATE block found".to_string());
        }
        self
    }
    /// Trusts one DER-encoded certificate in addition to the platform's roots.
    pub fn add_root_der(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.options
            .extra_roots
            .push(CertificateDer::from(der.into()));
        self
    }

    /// Saves every page's body under `dir` (see [`crate::save`]; the
    /// directory and its parents are created as needed, and
    /// [`crate::save::prepare`] checks it before a run).
    pub fn save_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.options.save_dir = dir;
        self
    }

    /// Obeys robots.txt (see [`Options::robots`]).
    pub fn robots(mut self, obey: bool) -> Self {
        self.options.robots = obey;
        self
    }

    /// Fault injection for tests: makes the CPU stage panic on any body that
    /// contains `marker`, so a test can check that a panic costs one URL, not
    /// the batch. Only with feature `fault-injection`, which the conformance
    /// suite turns on, so that no real run checks a page for it.
    #[cfg(feature = "fault-injection")]
    pub fn panic_marker(mut self, marker: Option<String>) -> Self {
        self.options.panic_marker = marker.filter(|m| !m.is_empty());
        self
    }

    /// Checks every value and returns the options, or says which value is wrong.
    pub fn build(self) -> Result<Options, OptionsError> {
        let o = self.options;
        if let Some(err) = self.pem_error {
            return Err(OptionsError::new(format!("extra root certificate: {err}")));
        }
        if o.max_in_flight == 0 {
            return Err(OptionsError::new(
                "max_in_flight must be at least 1 (0 would never start a request)",
            ));
        }
        if o.max_per_host == Some(0) {
            return Err(OptionsError::new(
                "max_per_host must be at least 1 (0 would never start a request; leave it \
                 unset for no per-host limit)",
            ));
        }
        if let Some(auto) = o.auto_throttle {
            if !(auto.target_concurrency.is_finite() && auto.target_concurrency > 0.0) {
                return Err(OptionsError::new(
                    "AutoThrottle's target concurrency must be a number above 0",
                ));
            }
            if auto.max_delay < o.host_delay {
                return Err(OptionsError::new(
                    "AutoThrottle's maximum delay must not be below the host delay",
                ));
            }
        }
        if o.connect_timeout.is_zero() {
            return Err(OptionsError::new("connect timeout must be greater than 0"));
        }
        if o.request_timeout.is_zero() {
            return Err(OptionsError::new("request timeout must be greater than 0"));
        }
        if o.deadline.is_some_and(|d| d.is_zero()) {
            return Err(OptionsError::new(
                "global deadline must be greater than 0 (leave it unset for none)",
            ));
        }
        if o.backoff_base > o.backoff_max {
            return Err(OptionsError::new(
                "backoff base must not exceed the maximum backoff",
            ));
        }
        if o.save_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err(OptionsError::new(
                "save directory must not be empty (leave it unset to save nothing)",
            ));
        }
        if o.max_body_bytes == 0 {
            return Err(OptionsError::new("max body bytes must be at least 1"));
        }
        if let Some(bad) = o.retry_statuses.iter().find(|s| !(100..=599).contains(*s)) {
            return Err(OptionsError::new(format!(
                "retry status {bad} is not an HTTP status (100-599)"
            )));
        }
        // Header values are ASCII on the wire; some clients (http-types,
        // under surf) reject anything else, so every model gets the same rule.
        let visible = |c: char| c == ' ' || c.is_ascii_graphic();
        if o.user_agent.is_empty() || !o.user_agent.chars().all(visible) {
            return Err(OptionsError::new(
                "user agent must be non-empty visible ASCII (a header value)",
            ));
        }
        Ok(o)
    }
}

/// A value in [`OptionsBuilder`] that cannot work, with a message saying which.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionsError(String);

impl OptionsError {
    fn new(msg: impl Into<String>) -> Self {
        OptionsError(msg.into())
    }
}

impl fmt::Display for OptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid options: {}", self.0)
    }
}

impl std::error::Error for OptionsError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let o = Options::builder().build().expect("defaults are valid");
        assert_eq!(o.max_in_flight(), 16);
        assert_eq!(o.request_timeout(), Duration::from_secs(30));
        assert_eq!(o.retries(), 2);
        assert_eq!(o.max_redirects(), 5);
        assert_eq!(o.max_body_bytes(), 8 * 1024 * 1024);
        assert_eq!(o.retry_statuses(), &DEFAULT_RETRY_STATUSES);
        assert_eq!(o, Options::default());
    }

    #[test]
    fn zero_values_are_rejected_with_a_message() {
        let err = Options::builder().max_in_flight(0).build().unwrap_err();
        assert!(err.to_string().contains("max_in_flight"), "{err}");
        let err = Options::builder().max_per_host(Some(0)).build();
        assert!(err.unwrap_err().to_string().contains("max_per_host"));
        let err = Options::builder()
            .request_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("request timeout"), "{err}");
        let err = Options::builder()
            .connect_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("connect timeout"), "{err}");
        let err = Options::builder()
            .deadline(Some(Duration::ZERO))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("deadline"), "{err}");
        assert!(Options::builder().max_body_bytes(0).build().is_err());
        let no_dir = Options::builder().save_dir(Some("".into())).build();
        assert!(no_dir.unwrap_err().to_string().contains("save directory"));
        let saving = Options::builder().parse(false).save_dir(Some("d".into()));
        assert!(
            saving.build().unwrap().has_cpu_stage(),
            "a save is no work for a loop"
        );
        assert!(Options::builder().retry_statuses([99]).build().is_err());
        assert!(Options::builder().user_agent("").build().is_err());
        assert!(
            Options::builder()
                .user_agent("caf\u{e9}/1")
                .build()
                .is_err()
        );
        assert!(
            Options::builder()
                .user_agent("a\r\nX-Injected: 1")
                .build()
                .is_err()
        );
        assert!(
            Options::builder()
                .user_agent("fetchlab/1 (+x)")
                .build()
                .is_ok()
        );
        assert!(
            Options::builder()
                .backoff(Duration::from_secs(2), Duration::from_secs(1))
                .build()
                .is_err()
        );
    }

    #[test]
    fn bad_pem_is_reported() {
        let err = Options::builder()
            .add_root_pem("not a certificate")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("root certificate"), "{err}");
    }
}
