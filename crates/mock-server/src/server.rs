//! The server's own thread and runtime, the accept loop, and shutdown.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use crate::config::MockConfig;
use crate::handler;
use crate::stats::{Counters, Stats};
use crate::timer::PreciseTimer;
use crate::tls::{self, ServerCert};

/// What every request handler needs; one per server, shared by `Arc`.
pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    pub(crate) counters: Arc<Counters>,
    pub(crate) timer: PreciseTimer,
    /// For absolute `Location` headers.
    pub(crate) base_url: String,
}

/// A running mock server. Dropping it (or calling [`MockServer::shutdown`]) stops it.
pub struct MockServer {
    addr: SocketAddr,
    base_url: String,
    shared: Arc<Shared>,
    cert_pem: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Queue of connections the kernel completes before we accept them. The std
/// default (128) overflows when a benchmark opens thousands of connections at
/// once, and an overflowing SYN queue costs the client a 1 s retransmit, which
/// would show up as a latency outlier that has nothing to do with the model.
const LISTEN_BACKLOG: u32 = 4096;

/// A client that connects and never finishes the TLS handshake must not hold a
/// task and a file descriptor forever.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl MockServer {
    /// Starts the server on its own thread with its own two-worker tokio runtime,
    /// so that blocking clients on the caller's thread can use it, and async clients
    /// on another runtime do not share (or starve) its workers.
    ///
    /// Returns once the socket is bound: requests can be sent immediately.
    pub fn start(config: MockConfig) -> io::Result<MockServer> {
        let cert = if config.tls {
            Some(ServerCert::end_entity()?)
        } else {
            None
        };
        Self::start_inner(config, cert)
    }

    /// Starts an HTTPS server (whatever `config.tls` says) that presents
    /// `cert`, such as a self-signed CA certificate or an expired one.
    pub fn start_with_cert(config: MockConfig, cert: ServerCert) -> io::Result<MockServer> {
        Self::start_inner(
            MockConfig {
                tls: true,
                ..config
            },
            Some(cert),
        )
    }

    fn start_inner(config: MockConfig, cert: Option<ServerCert>) -> io::Result<MockServer> {
        raise_fd_limit();

        let rt = tokio::runtime::Builder::new_multi_thread()
            // Two workers: the machine has two cores, and the client under test
            // needs them as much as we do.
            .worker_threads(2)
            .thread_name("mock-server-worker")
            .enable_all()
            .build()?;

        // Bind here, not on the server thread, so that a bind error is returned
        // to the caller instead of being lost in a thread.
        let listener = {
            // The listener registers with the runtime's reactor, which needs the
            // runtime to be "entered".
            let _guard = rt.enter();
            let socket = if config.addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            // Lets tests restart quickly on a fixed port despite TIME_WAIT sockets.
            socket.set_reuseaddr(true)?;
            socket.bind(config.addr)?;
            socket.listen(LISTEN_BACKLOG)?
        };
        let addr = listener.local_addr()?;

        let tls = cert.map(tls::make_acceptor).transpose()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base_url = format!("{scheme}://{addr}");
        let cert_pem = tls.as_ref().map(|t| t.cert_pem.clone());
        let acceptor = tls.map(|t| t.acceptor);

        let (timer, timer_thread) = PreciseTimer::start()?;
        let shared = Arc::new(Shared {
            config,
            counters: Arc::new(Counters::default()),
            timer: timer.clone(),
            base_url: base_url.clone(),
        });

        let (stop_tx, stop_rx) = oneshot::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("mock-server".into())
            .spawn(move || {
                rt.block_on(accept_loop(listener, thread_shared, acceptor, stop_rx));
                // Shutting the runtime down drops every connection task, which closes
                // their sockets and ends hung requests: nothing waits for a client.
                rt.shutdown_timeout(Duration::from_secs(1));
                timer.shutdown();
                // The timer thread only waits on its condvar, which shutdown() signals.
                // A panic there has already been printed; nothing is gained by
                // propagating it into this thread too.
                let _ = timer_thread.join();
            });
        let thread = match thread {
            Ok(thread) => thread,
            Err(e) => {
                shared.timer.shutdown();
                return Err(e);
            }
        };

        Ok(MockServer {
            addr,
            base_url,
            shared,
            cert_pem,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The bound address (with the real port when the config asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `{base_url}/page/{id}`.
    pub fn page_url(&self, id: u64) -> String {
        format!("{}/page/{id}", self.base_url)
    }

    /// The URLs of pages `0..n`.
    pub fn page_urls(&self, n: u64) -> Vec<String> {
        (0..n).map(|id| self.page_url(id)).collect()
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &MockConfig {
        &self.shared.config
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Zeroes every counter, including the `fail_once` memory, and restarts
    /// `max_in_flight` from the current `in_flight`.
    pub fn reset_stats(&self) {
        self.shared.counters.reset();
    }

    /// The self-signed certificate (PEM) when serving TLS, for clients to trust.
    pub fn root_cert_pem(&self) -> Option<String> {
        self.cert_pem.clone()
    }

    /// Stops accepting, closes every connection (hung requests included) and joins
    /// the server thread. Dropping the server does the same.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            // An error means the accept loop already ended; nothing to signal.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on the server thread has already been printed by the panic
            // hook; re-raising it from Drop would abort the process.
            let _ = thread.join();
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    acceptor: Option<TlsAcceptor>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let stream = tokio::select! {
            // Ok: shutdown() was called; Err: the MockServer is gone. Stop either way.
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(_) => {
                    // Typically EMFILE: out of file descriptors. Retrying at once
                    // would spin; a short pause lets some connections close.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        shared.counters.connection_accepted();
        // Responses are written in one or two writes; Nagle would hold the second
        // back for up to 40 ms waiting for an ACK, which would swamp the latency.
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        match &acceptor {
            None => {
                tokio::spawn(serve_connection(stream, shared));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A failed handshake (typically: the client does not trust our
                    // certificate) is the client's test outcome, not a server
                    // problem, so it is dropped silently.
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    if let Ok(Ok(tls_stream)) = handshake.await {
                        serve_connection(tls_stream, shared).await;
                    }
                });
            }
        }
    }
}

/// Serves HTTP/1.1 on one connection (plain TCP or TLS) until it closes.
async fn serve_connection<IO>(io: IO, shared: Arc<Shared>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    // hyper's header read timeout starts when hyper begins waiting for a request
    // head: on a fresh connection, and again after each response is written. It is
    // therefore exactly a keep-alive idle timeout, and hyper closes the connection
    // silently when it fires. `None` disables it: hyper's default (30 s) would
    // otherwise close a benchmark's pooled connections behind its back.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.keep_alive_idle);
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = Arc::clone(&shared);
        // hyper never polls a HEAD response's body, so the body cannot tell
        // the `unfinished` counter that it was sent in full; we tell it here.
        let head = req.method() == Method::HEAD;
        async move {
            let mut resp = handler::handle(req, shared).await;
            if head {
                resp.body_mut().mark_finished();
            }
            Ok::<_, Infallible>(resp)
        }
    });
    // Errors here are the client going away, an idle timeout, or our own reset
    // fault: all expected, none worth reporting.
    let _ = builder.serve_connection(TokioIo::new(io), service).await;
}

/// Best effort: lift the soft RLIMIT_NOFILE to the hard limit, once per process.
/// Thousands of concurrent connections need thousands of descriptors on both the
/// client and the server side of the loopback, and the usual soft limit is 1024.
fn raise_fd_limit() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Failure only means we stay at the current limit; the accept loop copes
        // with EMFILE by pausing.
        let _ = rlimit::increase_nofile_limit(u64::MAX);
    });
}
