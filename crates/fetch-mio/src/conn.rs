//! One HTTP/1.1 connection, written by hand: the part of an HTTP client that
//! the other models get from hyper, reqwest or ureq.
//!
//! A [`Conn`] never blocks and never waits: the loop calls [`Conn::ready`]
//! when mio says its socket may have changed, and each call goes as far as
//! the socket lets it (connect, write the request, read and parse what has
//! come) and stops at the first `WouldBlock`. mio's readiness is
//! edge-triggered: an event says "something changed", once, so each call
//! reads and writes until the kernel says `WouldBlock`, or the next change
//! may never be reported. A wake-up with nothing to do (a stale event for a
//! token since reused) costs one `WouldBlock` and nothing else.
//! - **Connect.** A non-blocking `connect`, then mio's recipe to learn that
//!   it is done: a writable event, `take_error`, `peer_addr`. A refused
//!   address gives way to the next one the name resolved to.
//! - **TLS.** rustls is sans-IO too: `read_tls` feeds it bytes from the
//!   socket, `process_new_packets` decrypts (and runs the handshake),
//!   `reader()` hands out plaintext, `write_tls` sends what it has queued.
//!   The request is written into rustls before the handshake is done; it
//!   goes out as soon as it may.
//! - **The response.** The head with httparse (no allocation, at most
//!   `MAX_HEAD` bytes), then the body framed as HTTP/1.1 says: chunked,
//!   `Content-Length`, or read to close. Bytes are parsed from one scratch
//!   buffer the loop owns; a connection keeps only an unfinished head or
//!   chunk line, so 10,000 idle connections cost 10,000 small structs.
//! - **Keep-alive.** A connection whose response ended cleanly, exactly at
//!   its end, and without `Connection: close`, goes back to the loop's pool.
//!
//! What it leaves out, and a copier may want: HTTP/2, proxies, compressed
//! bodies (`Accept-Encoding: identity` asks for none), a request body.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fetch_core::response::{CappedBody, check_status};
use fetch_core::{ErrorKind, FetchError, Fetched};
use httparse::Status;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use url::{Position, Url};

/// The largest response head (status line and headers) read; a longer one
/// is `protocol`, as is one with more than `MAX_HEADERS` headers.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;
/// The longest chunk-size or trailer line of a chunked body.
const MAX_LINE: usize = 4 * 1024;
/// The loop's one read buffer, shared by every connection.
pub const SCRATCH_BYTES: usize = 16 * 1024;

/// Why an exchange failed, by where it failed: `map_error` in lib.rs turns
/// each into one of fetch-core's kinds.
#[derive(Debug)]
pub enum Failure {
    /// Opening the connection: TCP, or I/O during the TLS handshake.
    Connect(io::Error),
    /// No connection within the connect timeout (the lookup included).
    ConnectTimeout(Duration),
    /// rustls refused: the handshake, the certificate, a bad record.
    Tls(rustls::Error),
    /// The connection failed once open: reset, or closed mid-response.
    Io(io::Error),
    /// The response is not HTTP/1.1 this parser reads.
    Malformed(String),
    /// fetch-core's verdict: a non-2xx status, a body over the cap.
    Fetch(FetchError),
}

impl From<FetchError> for Failure {
    fn from(error: FetchError) -> Self {
        Failure::Fetch(error)
    }
}

/// What a call to [`Conn::ready`] came to.
pub enum Progress {
    /// Waiting for the socket again.
    Pending,
    /// The request is over; [`Conn::reusable`] says what the connection is
    /// good for now.
    Done(Result<Fetched, Failure>),
}

/// One HTTP/1.1 connection, plain or TLS, registered with the loop's `Poll`
/// under the token of its slab key.
pub struct Conn {
    stream: TcpStream,
    /// Addresses still to try, last first, if this connect is refused.
    fallback: Vec<SocketAddr>,
    tls: Option<Box<ClientConnection>>,
    /// `scheme://host:port`: the key of the loop's pool of idle connections.
    pub origin: String,
    /// The slab key of the URL whose request this is; `None` while idle.
    pub owner: Option<usize>,
    tcp_connected: bool,
    /// Request bytes not written yet (plain TCP; rustls queues its own).
    out: Vec<u8>,
    written: usize,
    /// An unfinished head, or an unfinished chunk line.
    partial: Vec<u8>,
    reading: Reading,
    keep_alive: bool,
    max_body: u64,
}

enum Reading {
    /// No request out: idle, or done.
    Nothing,
    Head,
    Body(Body),
}

struct Body {
    status: u16,
    content_type: Option<String>,
    framing: Framing,
    bytes: CappedBody,
}

enum Framing {
    /// `Content-Length`: the bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Neither: the body ends when the server closes the connection.
    Close,
}

enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last (empty) chunk: trailer lines up to an empty one.
    Trailers,
}

impl Conn {
    /// Starts a non-blocking connect to the first address that takes one,
    /// registered for both readiness kinds once: with edge-triggered events
    /// that costs nothing while nothing happens, and saves a `reregister`
    /// system call at every turn between writing and reading.
    pub fn open(
        addrs: Vec<SocketAddr>,
        tls: Option<(&Arc<ClientConfig>, &str)>,
        origin: String,
        registry: &Registry,
        token: Token,
    ) -> Result<Conn, Failure> {
        let tls = match tls {
            Some((config, host)) => {
                let name = ServerName::try_from(host.to_owned()).map_err(|e| {
                    let message = format!("TLS server name {host:?}: {e}");
                    Failure::Fetch(FetchError::new(ErrorKind::Tls, message))
                })?;
                let conn = ClientConnection::new(Arc::clone(config), name);
                Some(Box::new(conn.map_err(Failure::Tls)?))
            }
            None => None,
        };
        let mut fallback: Vec<SocketAddr> = addrs.into_iter().rev().collect();
        let stream = connect_next(&mut fallback, registry, token)?;
        Ok(Conn {
            stream,
            fallback,
            tls,
            origin,
            owner: None,
            tcp_connected: false,
            out: Vec::new(),
            written: 0,
            partial: Vec::new(),
            reading: Reading::Nothing,
            keep_alive: true,
            max_body: 0,
        })
    }

    /// Queues a GET of `url` and writes what the socket takes now (nothing
    /// yet on a connection still connecting: its writable event will come).
    pub fn send(&mut self, url: &Url, user_agent: &str, max_body: u64) -> Result<(), Failure> {
        // `check_url` has percent-encoded the path and query, and
        // `OptionsBuilder` lets only visible ASCII into the user agent: no
        // byte here can break the request's framing.
        self.out.clear();
        self.written = 0;
        write!(
            self.out,
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {user_agent}\r\n\
             Accept-Encoding: identity\r\nConnection: keep-alive\r\n\r\n",
            &url[Position::BeforePath..Position::AfterQuery],
            &url[Position::BeforeHost..Position::BeforePath],
        )
        .map_err(Failure::Io)?;
        // rustls encrypts and queues it (before the handshake is done, too).
        if let Some(tls) = &mut self.tls {
            tls.writer().write_all(&self.out).map_err(Failure::Io)?;
            self.out.clear();
        }
        self.reading = Reading::Head;
        self.max_body = max_body;
        if self.tcp_connected {
            self.flush()?;
        }
        Ok(())
    }

    /// Open and past the TLS handshake: what the connect timeout waits for.
    pub fn is_connected(&self) -> bool {
        self.tcp_connected && !self.tls.as_ref().is_some_and(|tls| tls.is_handshaking())
    }

    /// Whether the connection can carry another request: its last response
    /// ended where its framing said, and neither side asked to close.
    pub fn reusable(&self) -> bool {
        self.keep_alive && matches!(self.reading, Reading::Nothing) && self.partial.is_empty()
    }

    /// An event on an idle connection: still usable only if there is
    /// nothing to read. Bytes nobody asked for, or the server closing it
    /// (a keep-alive timeout), mean the pool must drop it.
    pub fn still_idle(&mut self, scratch: &mut [u8]) -> bool {
        matches!(self.read(scratch), Ok(None))
    }

    /// Drives the request after an event (see the module's documentation).
    /// `readable`: the event says there may be something to read; after a
    /// writable-only event (a connect done, room to write) a read would
    /// only find `WouldBlock`, a system call per connection for nothing.
    pub fn ready(
        &mut self,
        registry: &Registry,
        token: Token,
        readable: bool,
        scratch: &mut [u8],
    ) -> Progress {
        match self.drive(registry, token, readable, scratch) {
            Ok(None) => Progress::Pending,
            Ok(Some(fetched)) => Progress::Done(Ok(fetched)),
            Err(failure) => {
                // A response left half read cannot be followed by another.
                self.keep_alive &= matches!(self.reading, Reading::Nothing);
                Progress::Done(Err(failure))
            }
        }
    }

    fn drive(
        &mut self,
        registry: &Registry,
        token: Token,
        readable: bool,
        scratch: &mut [u8],
    ) -> Result<Option<Fetched>, Failure> {
        if !self.tcp_connected && !self.check_connect(registry, token)? {
            return Ok(None);
        }
        self.flush()?;
        if !readable {
            return Ok(None);
        }
        loop {
            match self.read(scratch)? {
                None => return Ok(None),
                Some(0) => return self.closed().map(Some),
                Some(n) => {
                    if let Some(fetched) = self.parse(&scratch[..n])? {
                        return Ok(Some(fetched));
                    }
                }
            }
        }
    }

    /// mio's recipe for a non-blocking connect: `Ok(true)` once connected.
    fn check_connect(&mut self, registry: &Registry, token: Token) -> Result<bool, Failure> {
        let error = match self.stream.take_error() {
            Ok(None) => match self.stream.peer_addr() {
                Ok(_) => {
                    self.tcp_connected = true;
                    // A plain request is one small write, which Nagle never
                    // holds (nothing is unacknowledged before it). Over TLS
                    // the handshake's last flight and the request may be
                    // two: without this the second could wait for an ACK.
                    if self.tls.is_some() {
                        let _ = self.stream.set_nodelay(true);
                    }
                    return Ok(true);
                }
                // A wake-up before the connect finished: wait for the next.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
                Err(e) => e,
            },
            Ok(Some(e)) | Err(e) => e,
        };
        if self.fallback.is_empty() {
            return Err(Failure::Connect(error));
        }
        // The old socket closes as it is replaced, which also takes it out
        // of the poll; the new one is registered under the same token.
        self.stream = connect_next(&mut self.fallback, registry, token)?;
        Ok(false)
    }

    /// Writes what is queued until it is all gone or the socket is full.
    fn flush(&mut self) -> Result<(), Failure> {
        let connected = self.is_connected();
        let failure = |e| io_failure(connected, e);
        if let Some(tls) = &mut self.tls {
            return write_tls(tls, &mut self.stream).map_err(failure);
        }
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return Err(failure(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(failure(e)),
            }
        }
        Ok(())
    }

    /// Plaintext into `scratch`: `Some(n)` bytes, `Some(0)` at the end of
    /// the stream, `None` when nothing more has come for now.
    fn read(&mut self, scratch: &mut [u8]) -> Result<Option<usize>, Failure> {
        let connected = self.is_connected();
        let Some(tls) = &mut self.tls else {
            loop {
                return match self.stream.read(scratch) {
                    Ok(n) => Ok(Some(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(io_failure(connected, e)),
                };
            }
        };
        loop {
            match tls.reader().read(scratch) {
                Ok(n) => return Ok(Some(n)),
                // Closed without a close_notify: many servers do that; the
                // framing decides whether the body was whole.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Some(0)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Failure::Io(e)),
            }
            // No plaintext left: feed rustls what the socket has. A TCP EOF
            // (`Ok(0)`) is noted by rustls, and its reader says so above.
            match tls.read_tls(&mut self.stream) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_failure(connected, e)),
            }
            if let Err(e) = tls.process_new_packets() {
                // Best effort: tell the server why (the alert rustls queued).
                let _ = write_tls(tls, &mut self.stream);
                return Err(Failure::Tls(e));
            }
            // The handshake's replies, and the request once it is done.
            write_tls(tls, &mut self.stream).map_err(|e| io_failure(connected, e))?;
        }
    }

    /// New plaintext: the head, then the body. The whole response once it
    /// is complete.
    fn parse(&mut self, mut data: &[u8]) -> Result<Option<Fetched>, Failure> {
        loop {
            match &mut self.reading {
                Reading::Head => {
                    let Some((head, used)) = self.head(data)? else {
                        return Ok(None);
                    };
                    data = &data[used..];
                    // 1xx (100 Continue, 103 Early Hints): the real head follows.
                    if !head.interim {
                        self.start_body(head, data.is_empty())?;
                    }
                }
                Reading::Body(body) => {
                    let Some(used) = body.feed(data, &mut self.partial)? else {
                        return Ok(None);
                    };
                    // Bytes past the end of the response: not a server to
                    // trust with the next request.
                    self.keep_alive &= used == data.len();
                    return self.finish().map(Some);
                }
                Reading::Nothing => {
                    return Err(Failure::Malformed("bytes with no request out".into()));
                }
            }
        }
    }

    /// The head, from what came before and `data`: once it is complete, it
    /// and the number of bytes of `data` it took (the body begins after).
    fn head(&mut self, data: &[u8]) -> Result<Option<(Head, usize)>, Failure> {
        let before = self.partial.len();
        if before > 0 {
            self.partial.extend_from_slice(data);
        }
        let buf = if before > 0 { &self.partial[..] } else { data };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let parsed = match response.parse(buf) {
            Ok(Status::Complete(len)) => Some((Head::read(&response)?, len.saturating_sub(before))),
            Ok(Status::Partial) => None,
            Err(e) => return Err(Failure::Malformed(format!("response head: {e}"))),
        };
        if parsed.is_some() {
            self.partial.clear();
        } else if before == 0 {
            self.partial.extend_from_slice(data);
        }
        if self.partial.len() > MAX_HEAD {
            return Err(Failure::Malformed(format!("head over {MAX_HEAD} bytes")));
        }
        Ok(parsed)
    }

    /// After a final head: the status checked by fetch-core, and the body's
    /// reader. The body of an error or a redirect is not read: a connection
    /// is kept only if that body is empty, with nothing after it.
    fn start_body(&mut self, head: Head, nothing_after: bool) -> Result<(), Failure> {
        self.keep_alive = head.keep_alive;
        let location = head.location.as_deref();
        if let Err(error) = check_status(head.status, head.retry_after.as_deref(), location) {
            if matches!(head.framing, Framing::Length(0)) {
                self.reading = Reading::Nothing;
                self.keep_alive &= nothing_after;
            }
            return Err(error.into());
        }
        let announced = match head.framing {
            Framing::Length(len) => Some(len),
            _ => None,
        };
        // Refused at once if the announced length is over the cap.
        let bytes = CappedBody::new(self.max_body, announced)?;
        self.reading = Reading::Body(Body {
            status: head.status,
            content_type: head.content_type,
            framing: head.framing,
            bytes,
        });
        Ok(())
    }

    fn finish(&mut self) -> Result<Fetched, Failure> {
        let Reading::Body(body) = std::mem::replace(&mut self.reading, Reading::Nothing) else {
            return Err(Failure::Malformed("no response to finish".into()));
        };
        Ok(Fetched {
            status: body.status,
            // A `protocol` error if it is shorter than its Content-Length.
            body: body.bytes.finish()?,
            content_type: body.content_type,
        })
    }

    /// The server closed the connection: the end of a body read to close,
    /// too early for anything else.
    fn closed(&mut self) -> Result<Fetched, Failure> {
        self.keep_alive = false;
        let early = |what: &str| Failure::Io(io::Error::new(io::ErrorKind::UnexpectedEof, what));
        match &self.reading {
            Reading::Body(body) if !matches!(body.framing, Framing::Chunked(_)) => self.finish(),
            Reading::Body(_) => Err(early("connection closed in a chunked body")),
            _ => Err(early("connection closed before the response")),
        }
    }
}

/// What a response head says, owned (httparse's borrows the buffer).
struct Head {
    status: u16,
    interim: bool,
    keep_alive: bool,
    framing: Framing,
    content_type: Option<String>,
    location: Option<String>,
    retry_after: Option<String>,
}

impl Head {
    /// RFC 9112: the framing (chunked wins over a length; neither means
    /// read to close) and whether the connection stays open.
    fn read(response: &httparse::Response<'_, '_>) -> Result<Head, Failure> {
        let malformed = |what: &str| Failure::Malformed(what.to_string());
        let status = response.code.unwrap_or_default();
        let (mut length, mut chunked, mut close, mut keep) = (None, None, false, false);
        let (mut content_type, mut location, mut retry_after) = (None, None, None);
        for header in response.headers.iter() {
            let value = std::str::from_utf8(header.value).ok().map(str::trim);
            let is = |name: &str| header.name.eq_ignore_ascii_case(name);
            if is("content-length") {
                let len = value.and_then(|v| v.parse::<u64>().ok());
                let len = len.ok_or_else(|| malformed("bad Content-Length"))?;
                if length.is_some_and(|before| before != len) {
                    return Err(malformed("two different Content-Lengths"));
                }
                length = Some(len);
            } else if is("transfer-encoding") {
                let last = value.and_then(|v| v.rsplit(',').next()).map(str::trim);
                chunked = Some(last.is_some_and(|e| e.eq_ignore_ascii_case("chunked")));
            } else if is("connection") {
                for option in value.unwrap_or_default().split(',').map(str::trim) {
                    close |= option.eq_ignore_ascii_case("close");
                    keep |= option.eq_ignore_ascii_case("keep-alive");
                }
            } else if is("content-type") {
                content_type = value.map(str::to_string);
            } else if is("location") {
                location = value.map(str::to_string);
            } else if is("retry-after") {
                retry_after = value.map(str::to_string);
            }
        }
        let framing = match (status, chunked, length) {
            (100..200 | 204 | 304, _, _) => Framing::Length(0),
            (_, Some(true), _) => Framing::Chunked(Chunk::Size),
            (_, Some(false), _) | (_, None, None) => Framing::Close,
            (_, None, Some(len)) => Framing::Length(len),
        };
        // HTTP/1.1 keeps a connection unless told otherwise, HTTP/1.0 only
        // if asked. Both framings at once is how request smuggling starts:
        // read this response, but send nothing more on the connection.
        let keep_alive = !close
            && (response.version == Some(1) || keep)
            && !matches!(framing, Framing::Close)
            && !(chunked.is_some() && length.is_some());
        Ok(Head {
            status,
            interim: (100..200).contains(&status) && status != 101,
            keep_alive,
            framing,
            content_type,
            location,
            retry_after,
        })
    }
}

impl Body {
    /// Takes the body's bytes from `data` into the capped body; once the
    /// body is complete, how many bytes of `data` it took. `line` keeps a
    /// chunk line cut in two by the reads.
    fn feed(&mut self, data: &[u8], line: &mut Vec<u8>) -> Result<Option<usize>, Failure> {
        let mut at = 0;
        loop {
            let rest = &data[at..];
            match &mut self.framing {
                Framing::Close => {
                    self.bytes.push(rest)?;
                    return Ok(None);
                }
                Framing::Length(left) => {
                    let n = take(rest, left);
                    self.bytes.push(&rest[..n])?;
                    return Ok((*left == 0).then_some(at + n));
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    let n = take(rest, left);
                    self.bytes.push(&rest[..n])?;
                    at += n;
                    if *left > 0 {
                        return Ok(None);
                    }
                    self.framing = Framing::Chunked(Chunk::DataEnd);
                }
                Framing::Chunked(state) => {
                    let Some(text) = take_line(line, rest, &mut at)? else {
                        return Ok(None);
                    };
                    let bad = |what: &str| Err(Failure::Malformed(format!("chunked body: {what}")));
                    match state {
                        Chunk::Size => match httparse::parse_chunk_size(text) {
                            Ok(Status::Complete((_, 0))) => *state = Chunk::Trailers,
                            Ok(Status::Complete((_, size))) => *state = Chunk::Data(size),
                            _ => return bad("bad chunk size"),
                        },
                        Chunk::DataEnd if text == b"\r\n" => *state = Chunk::Size,
                        Chunk::DataEnd => return bad("no CRLF after a chunk"),
                        Chunk::Trailers if text == b"\r\n" => {
                            line.clear();
                            return Ok(Some(at));
                        }
                        // A trailer field: not part of the body.
                        Chunk::Trailers | Chunk::Data(_) => {}
                    }
                    line.clear();
                }
            }
        }
    }
}

/// How many bytes of `rest` belong to a count of `left`, taken off it.
fn take(rest: &[u8], left: &mut u64) -> usize {
    let n = rest.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
    *left -= n as u64;
    n
}

/// One line (up to and with its LF) from `rest`, joined to what came before
/// it in `line`; `None` until its end has come.
fn take_line<'a>(
    line: &'a mut Vec<u8>,
    rest: &[u8],
    at: &mut usize,
) -> Result<Option<&'a [u8]>, Failure> {
    let end = rest.iter().position(|&b| b == b'\n');
    let taken = end.map_or(rest.len(), |i| i + 1);
    line.extend_from_slice(&rest[..taken]);
    *at += taken;
    if line.len() > MAX_LINE {
        return Err(Failure::Malformed(format!(
            "chunked body: a line over {MAX_LINE} bytes"
        )));
    }
    Ok(end.map(|_| &line[..]))
}

/// The next address that accepts a non-blocking `connect`, registered.
fn connect_next(
    fallback: &mut Vec<SocketAddr>,
    registry: &Registry,
    token: Token,
) -> Result<TcpStream, Failure> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address");
    while let Some(addr) = fallback.pop() {
        match TcpStream::connect(addr) {
            Ok(mut stream) => {
                let interest = Interest::READABLE | Interest::WRITABLE;
                registry
                    .register(&mut stream, token, interest)
                    .map_err(Failure::Connect)?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(Failure::Connect(last))
}

/// Sends what rustls has queued, until it is all gone or the socket is full.
fn write_tls(tls: &mut ClientConnection, stream: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(stream) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// An I/O error before the connection was up is a failure to connect;
/// after, a failure of the exchange.
fn io_failure(connected: bool, error: io::Error) -> Failure {
    if connected {
        Failure::Io(error)
    } else {
        Failure::Connect(error)
    }
}
