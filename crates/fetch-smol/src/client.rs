//! The HTTP plumbing smol leaves to us: connections, TLS, redirects, timeouts
//! and the body cap, on hyper 1's low-level `client::conn` API.
//!
//! tokio users get all of this from reqwest. smol has no HTTP client, and
//! hyper's `client::conn` is deliberately bare: one `SendRequest` per
//! connection, plus a `Connection` future that someone must poll. So:
//! - **Connections.** [`Http::connect`] opens TCP (and TLS), hands the
//!   `Connection` future to the executor as its own task, and returns a
//!   [`Conn`]. There is no pool to ask: each worker keeps its `Conn` in a
//!   [`Slot`] and reuses it while the server keeps it open.
//! - **TLS.** futures-rustls over smol's `TcpStream`, with the rustls
//!   configuration every rustls model shares (`fetch_core::tls`): the
//!   platform's roots plus `Options::extra_roots`, a self-signed certificate
//!   the user passed accepted as pinned, and the `ring` provider passed in
//!   explicitly (no process-wide default to install or to clash with).
//! - **Redirects.** Followed by hand, up to `max_redirects`.
//! - **Timeouts.** Nothing in hyper or async-io times out by itself: every
//!   limit is a race between the work and a `smol::Timer`, and the loser is
//!   dropped. Dropping an HTTP/1 request mid-flight closes its connection,
//!   which is why a connection is taken out of its slot for the request and
//!   put back only once the response head has arrived.

use std::error::Error;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use fetch_core::{ErrorKind, FetchError, Options, retry};
use futures_rustls::TlsConnector;
use futures_rustls::pki_types::ServerName;
use futures_rustls::rustls;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{ACCEPT_ENCODING, CONTENT_TYPE, HOST, LOCATION, RETRY_AFTER, USER_AGENT};
use hyper::{Request, Response};
use smol::future::FutureExt as _;
use smol::io::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;
use smol::{Executor, Task, Timer};
use smol_hyper::rt::FuturesIo;
use url::{Origin, Url};

/// A response that passed every check: a 2xx status and a body within the cap.
pub struct Fetched {
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: Option<String>,
}

/// One keep-alive HTTP/1.1 connection. Dropping it drops the task that
/// drives the socket, which closes it.
pub struct Conn {
    origin: Origin,
    sender: SendRequest<Empty<Bytes>>,
    _driver: Task<()>,
}

/// Where a worker keeps its connection between requests. A `Mutex`, not a
/// `Cell`: the worker's future holds a reference to it across `.await`s and
/// must be `Send` to run on a multi-threaded executor. Only that worker
/// touches it, never across an `.await`, so the lock is never contended.
pub type Slot = Mutex<Option<Conn>>;

fn take(slot: &Slot) -> Option<Conn> {
    // Nothing panics while the lock is held; a poisoned slot is still sound.
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

fn put(slot: &Slot, conn: Conn) {
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn);
}

/// What every request needs and nothing per-request: the TLS configuration
/// (loading the platform's roots reads files; done once per options), the
/// executor that drives connections, and idle connections between runs.
pub struct Http {
    /// An error (no root at all, say) fails each https URL with `tls`.
    tls: Result<TlsConnector, FetchError>,
    executor: Arc<Executor<'static>>,
    idle: Mutex<Vec<Conn>>,
}

impl Http {
    pub fn new(options: &Options, executor: Arc<Executor<'static>>) -> Self {
        // Offers HTTP/1.1 only by ALPN: what this client speaks.
        let tls = fetch_core::tls::client_config(options)
            .map(|config| TlsConnector::from(Arc::new(config)))
            .map_err(|e| FetchError::new(ErrorKind::Tls, e.to_string()));
        Http {
            tls,
            executor,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A connection left by an earlier run's worker, so that repeated runs
    /// (benchmark iterations) do not pay a handshake per worker each time.
    pub fn idle_conn(&self) -> Option<Conn> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    pub fn keep_idle(&self, conn: Conn) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
    }

    /// One attempt, redirects included, within `budget` (connect, headers and
    /// the whole body). A non-2xx final status is an error carrying it.
    pub async fn attempt(
        &self,
        slot: &Slot,
        url: &str,
        budget: Duration,
        options: &Options,
    ) -> Result<Fetched, FetchError> {
        within(budget, "the request", self.follow(slot, url, options)).await
    }

    async fn follow(
        &self,
        slot: &Slot,
        url: &str,
        options: &Options,
    ) -> Result<Fetched, FetchError> {
        let mut url = Url::parse(url.trim())
            .map_err(|e| FetchError::new(ErrorKind::InvalidUrl, e.to_string()))?;
        for _ in 0..=options.max_redirects() {
            let response = self.exchange(slot, &url, options).await?;
            let status = response.status().as_u16();
            let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                // A redirect without a usable Location is reported as its status.
                if let Some(next) = header(LOCATION).and_then(|l| url.join(l).ok()) {
                    if !matches!(next.scheme(), "http" | "https") {
                        let msg = format!("redirect to a non-HTTP URL: {next}");
                        return Err(FetchError::new(ErrorKind::Redirect, msg));
                    }
                    url = next;
                    continue;
                }
            }
            if !(200..300).contains(&status) {
                let retry_after = header(RETRY_AFTER).and_then(retry::parse_retry_after);
                return Err(FetchError::http_status(status, retry_after));
            }
            let content_type = header(CONTENT_TYPE).map(str::to_owned);
            let body = read_body(response.into_body(), options.max_body_bytes()).await?;
            return Ok(Fetched {
                status,
                body,
                content_type,
            });
        }
        let msg = format!("more than {} redirects", options.max_redirects());
        Err(FetchError::new(ErrorKind::Redirect, msg))
    }

    /// Sends one GET and waits for the response head, on the slot's connection
    /// when it is to the same origin and still open, else on a new one.
    async fn exchange(
        &self,
        slot: &Slot,
        url: &Url,
        options: &Options,
    ) -> Result<Response<Incoming>, FetchError> {
        let origin = url.origin();
        let mut reused = take(slot).filter(|c| c.origin == origin);
        if let Some(conn) = reused.as_mut() {
            // Err when the server closed it while idle, or hyper closed it
            // because the last body was abandoned. A close racing with our
            // request still fails it: `protocol`, which the policy retries.
            if conn.sender.ready().await.is_err() {
                reused = None;
            }
        }
        let mut conn = match reused {
            Some(conn) => conn,
            // Boxed: a TLS handshake's state is about 16 KB; unboxed, it would
            // sit in every worker's future for the worker's whole life.
            None => Box::pin(self.connect(url, origin, options)).await?,
        };
        let host = &url[url::Position::BeforeHost..url::Position::BeforePath];
        let request = Request::get(&url[url::Position::BeforePath..url::Position::AfterQuery])
            .header(HOST, host)
            .header(USER_AGENT, options.user_agent())
            // Bodies are counted and parsed as received: ask for no compression.
            .header(ACCEPT_ENCODING, "identity")
            .body(Empty::new())
            .map_err(|e| FetchError::new(ErrorKind::InvalidUrl, e.to_string()))?;
        let response = conn.sender.send_request(request).await;
        let response = response.map_err(|e| map_error(Stage::Exchange, &e))?;
        put(slot, conn);
        Ok(response)
    }

    /// TCP, then TLS for https, then hyper's handshake, within the connect
    /// timeout.
    async fn connect(
        &self,
        url: &Url,
        origin: Origin,
        options: &Options,
    ) -> Result<Conn, FetchError> {
        let invalid = |msg: &str| FetchError::new(ErrorKind::InvalidUrl, msg.to_owned());
        // `host_str` keeps an IPv6 literal's brackets; both the resolver and
        // `ServerName` want the bare address.
        let host = url.host_str().ok_or_else(|| invalid("URL has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = url
            .port_or_known_default()
            .ok_or_else(|| invalid("no port"))?;
        let connecting = async {
            // Resolves on smol's blocking pool (getaddrinfo blocks), then
            // tries each address in turn.
            let tcp = TcpStream::connect((host, port)).await;
            let tcp = tcp.map_err(|e| map_error(Stage::Connect, &e))?;
            // A request is one small write; do not let Nagle hold it back.
            let _ = tcp.set_nodelay(true);
            if url.scheme() == "https" {
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|e| FetchError::new(ErrorKind::Tls, e.to_string()))?;
                let tls = self.tls.as_ref().map_err(Clone::clone)?;
                let tls = tls.connect(name, tcp).await;
                let tls = tls.map_err(|e| map_error(Stage::Connect, &e))?;
                self.handshake(tls, origin).await
            } else {
                self.handshake(tcp, origin).await
            }
        };
        within(options.connect_timeout(), "connecting", connecting).await
    }

    async fn handshake<S>(&self, stream: S, origin: Origin) -> Result<Conn, FetchError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, connection) = http1::handshake(FuturesIo::new(stream))
            .await
            .map_err(|e| map_error(Stage::Connect, &e))?;
        // The connection's own error (a reset, say) reaches the request that
        // was using it; nothing is left to report here.
        let driver = self.executor.spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            origin,
            sender,
            _driver: driver,
        })
    }
}

/// Reads a body frame by frame and stops as soon as it exceeds `cap`, so an
/// endless body costs at most `cap` bytes (and hyper closes the connection).
async fn read_body(mut body: Incoming, cap: u64) -> Result<Vec<u8>, FetchError> {
    let too_large = || FetchError::new(ErrorKind::BodyTooLarge, format!("body over {cap} bytes"));
    // A Content-Length over the cap is refused before a byte is read.
    let announced = body.size_hint().lower();
    if announced > cap {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(announced).unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| map_error(Stage::Exchange, &e))?;
        if let Ok(data) = frame.into_data() {
            if (bytes.len() + data.len()) as u64 > cap {
                return Err(too_large());
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// `work`, or a `timeout` error if it takes longer than `limit`. The loser of
/// the race is dropped, which is how a request is cancelled in async Rust.
async fn within<T>(
    limit: Duration,
    what: &str,
    work: impl Future<Output = Result<T, FetchError>>,
) -> Result<T, FetchError> {
    let timer = async {
        Timer::after(limit).await;
        let msg = format!("{what} took longer than {limit:?}");
        Err(FetchError::new(ErrorKind::Timeout, msg))
    };
    work.or(timer).await
}

#[derive(Clone, Copy)]
enum Stage {
    Connect,
    Exchange,
}

/// The client's errors, mapped into fetch-core's kinds. Timeouts never get
/// here (they are our own races, see [`within`]), so the stage decides the
/// rest: failing to connect is `connect` (refused, unreachable, DNS), failing
/// after that is `protocol` (reset, closed early, malformed), unless rustls is
/// somewhere in the chain of causes: then it is `tls`.
fn map_error(stage: Stage, err: &(dyn Error + 'static)) -> FetchError {
    let mut kind = match stage {
        Stage::Connect => ErrorKind::Connect,
        Stage::Exchange => ErrorKind::Protocol,
    };
    let mut message = err.to_string();
    let mut cause = Some(err);
    while let Some(e) = cause {
        // An io::Error's `source()` skips the error it wraps, so look inside.
        let io_inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        if e.is::<rustls::Error>() || io_inner.is_some_and(|inner| inner.is::<rustls::Error>()) {
            kind = ErrorKind::Tls;
        }
        cause = e.source();
        if let Some(next) = cause {
            message = format!("{message}: {next}");
        }
    }
    FetchError::new(kind, message)
}
