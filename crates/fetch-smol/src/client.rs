//! The HTTP client smol leaves us to write, on hyper 1's low-level
//! `client::conn` API: connections, TLS and the connect timeout.
//!
//! tokio users get all of this from reqwest. smol has no HTTP client, and
//! hyper's `client::conn` is deliberately bare: one `SendRequest` per
//! connection, plus a `Connection` future that someone must poll. So:
//! - **Connections.** `Client::connect` opens TCP (and TLS), hands the
//!   `Connection` future to the executor as its own task, and returns a
//!   `Conn`. There is no pool to ask: each worker keeps its `Conn` in a
//!   `Slot` and reuses it while the server keeps it open; between runs,
//!   idle ones wait in the client.
//! - **TLS.** futures-rustls over smol's `TcpStream`, with the rustls
//!   configuration every rustls model shares (`fetch_core::tls`): the
//!   platform's roots plus `Options::extra_roots`, a self-signed certificate
//!   the user passed accepted as pinned, and the `ring` provider passed in
//!   explicitly (no process-wide default to install or to clash with).
//! - **Timeouts.** Nothing in hyper or async-io times out by itself: every
//!   limit is a race, and the loser is dropped. fetch-core races each
//!   attempt against its budget; the connect timeout is raced here, against
//!   a `smol::Timer`. Dropping an HTTP/1 request mid-flight closes its
//!   connection, which is why a connection is taken out of its slot for the
//!   request and put back only once the response head has arrived.
//!
//! The status check and the body cap are fetch-core's (`response.rs`), used
//! by `attempt` in lib.rs as the tokio model uses them; so are redirects,
//! which fetch-core follows for every model.

use fetch_core::{ErrorKind, FetchError};
use futures_rustls::pki_types::ServerName;
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{ACCEPT_ENCODING, HOST, USER_AGENT};
use hyper::{Request, Response};
use smol::future::FutureExt as _;
use smol::io::{AsyncRead, AsyncWrite};
use smol::lock::Mutex;
use smol::net::TcpStream;
use smol::{Task, Timer};
use smol_hyper::rt::FuturesIo;
use url::{Origin, Position, Url};

use crate::{Client, map_error};

/// One keep-alive HTTP/1.1 connection. Dropping it drops the task that
/// drives the socket, which closes it.
pub struct Conn {
    origin: Origin,
    sender: SendRequest<Empty<Bytes>>,
    _driver: Task<hyper::Result<()>>,
}

/// Where a worker keeps its connection between requests. A `Mutex`, not a
/// `Cell`: the worker's future holds a reference to it across `.await`s and
/// must be `Send` to run on a multi-threaded executor. Only that worker
/// touches it, never across an `.await`, so the lock is never contended, and
/// std's would do as well; smol's (async-lock) has no poisoning to handle.
pub type Slot = Mutex<Option<Conn>>;

/// What hyper can speak HTTP/1.1 over: a TCP stream, or TLS over one.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<S: AsyncRead + AsyncWrite + Send + Unpin> Stream for S {}

impl Client {
    /// A new worker's slot, with a connection an earlier run's worker left,
    /// so that repeated runs (benchmark iterations) do not pay a handshake
    /// per worker each time.
    pub async fn slot(&self) -> Slot {
        Mutex::new(self.idle.lock().await.pop())
    }

    /// Keeps a finished worker's connection for the next run.
    pub async fn keep_idle(&self, slot: Slot) {
        self.idle.lock().await.extend(slot.into_inner());
    }

    /// A GET of `url` on the slot's connection when it is to the same
    /// origin and still open, else on a new one: the response's head, its
    /// body still to be read.
    pub async fn get(&self, slot: &Slot, url: &Url) -> Result<Response<Incoming>, FetchError> {
        let reused = slot.lock().await.take();
        let mut conn = match reused {
            Some(conn) if conn.origin == url.origin() => conn,
            // Boxed: a TLS handshake's state is about 16 KB; unboxed, it
            // would sit in every worker's future for its whole life.
            _ => Box::pin(self.connect(url)).await?,
        };
        // Err when the server closed it while idle, or hyper closed it
        // because the last body was abandoned (a failed attempt's body, a
        // redirect's, is left unread). A close racing with our request still
        // fails it: `protocol`, which the policy retries.
        if conn.sender.ready().await.is_err() {
            conn = Box::pin(self.connect(url)).await?;
        }
        let request = Request::get(&url[Position::BeforePath..Position::AfterQuery])
            .header(HOST, &url[Position::BeforeHost..Position::BeforePath])
            .header(USER_AGENT, self.options.user_agent())
            // Bodies are counted and parsed as received: ask for no
            // compression.
            .header(ACCEPT_ENCODING, "identity")
            .body(Empty::new())
            .map_err(|e| FetchError::new(ErrorKind::InvalidUrl, e.to_string()))?;
        let response = conn.sender.send_request(request).await.map_err(map_error)?;
        *slot.lock().await = Some(conn);
        Ok(response)
    }

    /// TCP, then TLS for https, then hyper's handshake, within the connect
    /// timeout.
    async fn connect(&self, url: &Url) -> Result<Conn, FetchError> {
        // `check_url` lets through only http(s) URLs with a host, so neither
        // default is used. `host_str` keeps an IPv6 literal's brackets; the
        // resolver and `ServerName` want the bare address.
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
        let port = url.port_or_known_default().unwrap_or_default();
        let connecting = async {
            // Resolves on smol's blocking pool (getaddrinfo blocks), then
            // tries each address in turn.
            let tcp = TcpStream::connect((host, port)).await.map_err(map_error)?;
            // A request is one small write; do not let Nagle hold it back.
            let _ = tcp.set_nodelay(true);
            let stream: Box<dyn Stream> = if url.scheme() == "https" {
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|e| FetchError::new(ErrorKind::Tls, e.to_string()))?;
                let tls = self.tls.as_ref().map_err(Clone::clone)?;
                Box::new(tls.connect(name, tcp).await.map_err(map_error)?)
            } else {
                Box::new(tcp)
            };
            let handshake = http1::handshake(FuturesIo::new(stream)).await;
            let (sender, connection) = handshake.map_err(map_error)?;
            Ok(Conn {
                origin: url.origin(),
                sender,
                // The connection's own error (a reset, say) reaches the
                // request that was using it: this task's result goes unread.
                _driver: self.executor.spawn(connection),
            })
        };
        let limit = self.options.connect_timeout();
        let timed_out = async {
            Timer::after(limit).await;
            let message = format!("no connection within {limit:?}");
            Err(FetchError::new(ErrorKind::Timeout, message))
        };
        connecting.or(timed_out).await
    }
}
