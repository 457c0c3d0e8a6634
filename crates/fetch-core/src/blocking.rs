//! The blocking client shared by the sequential, threads and rayon models:
//! one ureq 3 [`Agent`](ureq::Agent), configured from [`Options`].
//!
//! The three blocking models differ only in how many threads call
//! [`BlockingClient::fetch`] and how those threads are scheduled; the request
//! itself is the same, so it lives here once (feature `blocking`).
//!
//! What ureq leaves to the caller, and how this module handles it:
//! - **Timeouts.** ureq sets none by default: a server that never answers
//!   would hold a thread forever. Each attempt gets `timeout_global` (connect,
//!   headers and body, end to end) from [`Run::attempt_timeout`], so no attempt
//!   outlives the run's deadline, plus `timeout_connect`.
//! - **Status codes.** By default ureq turns a 4xx/5xx into an opaque
//!   `Error::StatusCode`, losing the `Retry-After` header. With
//!   `http_status_as_error(false)` every status comes back as a response and
//!   fetch-core classifies it.
//! - **The body cap.** `with_config().limit(n)` stops reading at the cap, so an
//!   endless body costs at most `n` bytes of memory.
//! - **The pool.** ureq keeps 3 idle connections per host by default; a model
//!   with C threads on one host asks for C, or each extra thread reconnects for
//!   every request.
//! - **Buffers.** 128 KiB each way per connection by default, sized down here
//!   for GET requests (measured by the threads model's author: 180-350 MB of
//!   RSS at a thousand connections with the defaults).

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use ureq::Agent;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use crate::{Dispatch, ErrorKind, FetchError, Options, Outcome, Run, check_url, parse, retry};

/// A ureq agent configured from [`Options`]. Cheap to share by reference
/// across threads: the agent's pool is behind a lock.
#[derive(Debug, Clone)]
pub struct BlockingClient {
    agent: Agent,
}

impl BlockingClient {
    /// An agent for `options`, keeping up to `idle_per_host` idle keep-alive
    /// connections per host (set it to the number of threads that share it).
    pub fn new(options: &Options, idle_per_host: usize) -> Self {
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(options.connect_timeout()))
            .max_redirects(options.max_redirects())
            .max_idle_connections(idle_per_host.max(1) * 4)
            .max_idle_connections_per_host(idle_per_host.max(1))
            .user_agent(options.user_agent())
            // ureq's default buffers are 128 KiB in and 128 KiB out per
            // connection, zero-filled when the connection opens: 200 MiB at a
            // thousand connections. A GET crawler sends a few hundred bytes
            // and needs room for the response head; 32 KiB of headers is
            // more than common servers send (nginx and Apache cap theirs at
            // 8-16 KiB), and the body streams through the buffer.
            .input_buffer_size(32 * 1024)
            .max_response_header_size(32 * 1024)
            .output_buffer_size(8 * 1024)
            .tls_config(TlsConfig::builder().root_certs(root_certs(options)).build())
            .build();
        BlockingClient {
            agent: config.new_agent(),
        }
    }

    /// Fetches one URL, retries included, and runs the CPU stage on the
    /// calling thread. Always returns an outcome: a panic inside ureq or the
    /// CPU stage is caught here and becomes a `panicked` outcome for this URL,
    /// so it cannot take down a worker thread (and with it the URLs that
    /// thread would have fetched next).
    pub fn fetch(&self, run: &Run, index: usize, url: &str) -> Outcome {
        let started = Instant::now();
        // AssertUnwindSafe: after a panic nothing of this attempt is reused; a
        // connection mid-request is dropped, never returned to the pool. The
        // CPU stage holds none of ureq's locks. (A panic inside ureq while it
        // held its pool lock would poison it, and later URLs would end
        // `panicked` too: still one outcome each, never a hang.) The attempt
        // count is lost with the panic; the record says 1.
        panic::catch_unwind(AssertUnwindSafe(|| self.fetch_unguarded(run, index, url)))
            .unwrap_or_else(|payload| {
                run.outcome(
                    index,
                    url,
                    1,
                    started,
                    Err(FetchError::from_panic(payload.as_ref())),
                )
            })
    }

    fn fetch_unguarded(&self, run: &Run, index: usize, url: &str) -> Outcome {
        let started = Instant::now();
        if let Err(err) = check_url(url) {
            return Outcome::untried(index, url, err);
        }
        let (attempts, result) =
            run.with_retries_blocking(|budget| self.attempt(url.trim(), budget, run.options()));
        let result = result.map(|(status, body, content_type)| {
            parse::page(status, &body, content_type.as_deref(), run.options())
        });
        run.outcome(index, url, attempts, started, result)
    }

    /// Fetches every URL `dispatch` hands out, one after another, on the
    /// calling thread: the sequential model, and the fallback of the threads
    /// and rayon models when not one worker thread could be started.
    /// `next_url` checks the cancel token and the deadline before each URL,
    /// so a cancel costs at most the request in flight (bounded by its
    /// timeout), and the rest of the input is reported without a request.
    pub fn fetch_in_turn(&self, run: &Run, dispatch: &mut Dispatch<'_>) {
        while let Some((index, url)) = dispatch.next_url(run) {
            dispatch.record(self.fetch(run, index, &url));
        }
    }

    /// One attempt: the final status, the body (capped) and its content type.
    fn attempt(
        &self,
        url: &str,
        budget: std::time::Duration,
        options: &Options,
    ) -> Result<(u16, Vec<u8>, Option<String>), FetchError> {
        let mut response = self
            .agent
            .get(url)
            .config()
            .timeout_global(Some(budget))
            .build()
            .call()
            .map_err(map_error)?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(retry::parse_retry_after);
            return Err(FetchError::http_status(status, retry_after));
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response
            .body_mut()
            .with_config()
            .limit(options.max_body_bytes())
            .read_to_vec()
            .map_err(map_error)?;
        Ok((status, body, content_type))
    }
}

/// The platform's roots, plus the extra ones from [`Options`] when there are
/// any. ureq takes either the platform verifier or a fixed list, so with extra
/// roots the platform's certificates are loaded into that list.
fn root_certs(options: &Options) -> RootCerts {
    if options.extra_roots().is_empty() {
        return RootCerts::PlatformVerifier;
    }
    // Certificates the platform store fails to load are skipped, as
    // the platform verifier itself would skip them.
    let platform = rustls_native_certs::load_native_certs().certs;
    let certs: Vec<Certificate<'static>> = platform
        .iter()
        .chain(options.extra_roots())
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    RootCerts::from(certs)
}

/// ureq's errors, mapped into fetch-core's kinds.
pub fn map_error(err: ureq::Error) -> FetchError {
    use ureq::Error as E;
    let kind = match &err {
        E::Timeout(_) => ErrorKind::Timeout,
        E::HostNotFound | E::ConnectionFailed => ErrorKind::Connect,
        E::BadUri(_) | E::Http(_) => ErrorKind::InvalidUrl,
        E::Tls(_) | E::Pem(_) | E::Rustls(_) | E::TlsRequired => ErrorKind::Tls,
        E::TooManyRedirects | E::RedirectFailed => ErrorKind::Redirect,
        E::BodyExceedsLimit(_) => ErrorKind::BodyTooLarge,
        E::Io(io) => io_kind(io),
        // StatusCode cannot happen (http_status_as_error is off); everything
        // else is a response we could not make sense of.
        _ => ErrorKind::Protocol,
    };
    FetchError::new(kind, err.to_string())
}

fn io_kind(err: &io::Error) -> ErrorKind {
    use io::ErrorKind as K;
    // rustls reports a failed handshake (an untrusted certificate, say) as an
    // I/O error wrapping a rustls::Error, on the first read or write.
    if err
        .get_ref()
        .is_some_and(|inner| inner.is::<rustls::Error>())
    {
        return ErrorKind::Tls;
    }
    // A failed DNS lookup comes from std's getaddrinfo wrapper as an
    // uncategorised I/O error; its message is the only thing that says so.
    if err
        .to_string()
        .starts_with("failed to lookup address information")
    {
        return ErrorKind::Connect;
    }
    match err.kind() {
        K::ConnectionRefused | K::AddrNotAvailable | K::HostUnreachable | K::NetworkUnreachable => {
            ErrorKind::Connect
        }
        K::TimedOut | K::WouldBlock => ErrorKind::Timeout,
        // Reset, aborted, unexpected EOF: the connection died mid-response.
        _ => ErrorKind::Protocol,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_kinds() {
        let dns =
            io::Error::other("failed to lookup address information: Name or service not known");
        assert_eq!(io_kind(&dns), ErrorKind::Connect);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(io_kind(&refused), ErrorKind::Connect);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(io_kind(&reset), ErrorKind::Protocol);
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(io_kind(&eof), ErrorKind::Protocol);
        let tls = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert_eq!(io_kind(&tls), ErrorKind::Tls);
    }
}
