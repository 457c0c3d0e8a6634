//! The response body: whole, dripped, cut off, or huge — and the moment a
//! request stops counting as "in flight".
//!
//! We implement hyper's `Body` trait by hand rather than use `Full`/`StreamBody`
//! because the in-flight guard must be released at one precise point: just
//! *before* the last data frame is handed to hyper. After that point the client
//! can receive the end of the response and send its next request; if the guard
//! were released later (say, when hyper drops the body after writing it), a
//! sequential client's next request could start while the previous one still
//! counted, and `max_in_flight` would read 2 for a client that never had two
//! requests open.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::stats::{Counters, InFlight};

/// Size of each drip chunk.
pub(crate) const DRIP_CHUNK: usize = 64;

/// Filler for oversized bodies. A static buffer means a 64 MiB body costs no
/// allocation at all: each frame is a `Bytes` pointing into this array.
static OVERSIZED_CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

pub(crate) struct MockBody {
    kind: Kind,
    /// Released just before the last data frame (or the error frame) is returned.
    in_flight: Option<InFlight>,
    /// `None` for `/__stats`, whose bytes are not counted.
    counters: Option<Arc<Counters>>,
}

enum Kind {
    Empty,
    /// One frame; `None` once it has been sent.
    Full(Option<Bytes>),
    /// `DRIP_CHUNK`-byte frames, `interval` apart; the first goes out at once.
    Drip {
        rest: Bytes,
        interval: Duration,
        pause: Option<Pin<Box<Sleep>>>,
    },
    /// Part of the body, then an error, which makes hyper abort the connection.
    Reset {
        part: Option<Bytes>,
        flushed: bool,
    },
    /// `remaining` bytes of filler, never allocated.
    Oversized {
        remaining: u64,
    },
}

impl MockBody {
    /// An empty body: the request stops counting now, as the response is produced.
    pub(crate) fn empty(in_flight: Option<InFlight>) -> MockBody {
        if let Some(guard) = in_flight {
            guard.finish();
        }
        MockBody {
            kind: Kind::Empty,
            in_flight: None,
            counters: None,
        }
    }

    pub(crate) fn full(
        data: Bytes,
        in_flight: Option<InFlight>,
        counters: Option<Arc<Counters>>,
    ) -> MockBody {
        if data.is_empty() {
            return MockBody::empty(in_flight);
        }
        MockBody {
            kind: Kind::Full(Some(data)),
            in_flight,
            counters,
        }
    }

    pub(crate) fn drip(
        data: Bytes,
        interval: Duration,
        in_flight: InFlight,
        counters: Arc<Counters>,
    ) -> MockBody {
        if data.is_empty() {
            return MockBody::empty(Some(in_flight));
        }
        MockBody {
            kind: Kind::Drip {
                rest: data,
                interval,
                pause: None,
            },
            in_flight: Some(in_flight),
            counters: Some(counters),
        }
    }

    /// `part` should be shorter than the Content-Length the caller announces.
    pub(crate) fn reset(part: Bytes, in_flight: InFlight, counters: Arc<Counters>) -> MockBody {
        MockBody {
            kind: Kind::Reset {
                part: (!part.is_empty()).then_some(part),
                flushed: false,
            },
            in_flight: Some(in_flight),
            counters: Some(counters),
        }
    }

    pub(crate) fn oversized(len: u64, in_flight: InFlight, counters: Arc<Counters>) -> MockBody {
        if len == 0 {
            return MockBody::empty(Some(in_flight));
        }
        MockBody {
            kind: Kind::Oversized { remaining: len },
            in_flight: Some(in_flight),
            counters: Some(counters),
        }
    }
}

impl MockBody {
    fn finish(&mut self) {
        if let Some(guard) = self.in_flight.take() {
            guard.finish();
        }
    }

    /// For a response whose body hyper never polls (`HEAD`): it is complete
    /// once its head is written, so the guard, still released when hyper drops
    /// the body, must not count it as unfinished.
    pub(crate) fn mark_finished(&mut self) {
        if let Some(guard) = &mut self.in_flight {
            guard.mark_finished();
        }
    }
}

/// What the body produces next.
enum Step {
    Data { bytes: Bytes, last: bool },
    Abort,
    End,
}

impl Kind {
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        match self {
            Kind::Empty | Kind::Full(None) => Poll::Ready(Step::End),
            Kind::Full(data @ Some(_)) => Poll::Ready(match data.take() {
                Some(bytes) => Step::Data { bytes, last: true },
                None => Step::End,
            }),
            Kind::Drip {
                rest,
                interval,
                pause,
            } => {
                if rest.is_empty() {
                    return Poll::Ready(Step::End);
                }
                if let Some(sleep) = pause {
                    ready!(sleep.as_mut().poll(cx));
                    *pause = None;
                }
                let bytes = rest.split_to(rest.len().min(DRIP_CHUNK));
                let last = rest.is_empty();
                if !last {
                    // tokio's millisecond timer is fine here: drip tests slowness,
                    // not precision.
                    *pause = Some(Box::pin(tokio::time::sleep(*interval)));
                }
                Poll::Ready(Step::Data { bytes, last })
            }
            Kind::Reset { part, flushed } => {
                if let Some(bytes) = part.take() {
                    return Poll::Ready(Step::Data { bytes, last: false });
                }
                if !*flushed {
                    // Returning Pending once makes hyper flush what it has buffered
                    // (headers and the partial body) before we fail; otherwise the
                    // error could discard them and the client would see no response
                    // at all instead of a truncated one.
                    *flushed = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Step::Abort)
            }
            Kind::Oversized { remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(Step::End);
                }
                let n = (*remaining).min(OVERSIZED_CHUNK.len() as u64);
                *remaining -= n;
                // n <= OVERSIZED_CHUNK.len(), so the cast and the slice are in range.
                let bytes = Bytes::from_static(&OVERSIZED_CHUNK[..n as usize]);
                Poll::Ready(Step::Data {
                    bytes,
                    last: *remaining == 0,
                })
            }
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        // MockBody is Unpin (the Sleep is boxed), so we can work on `&mut Self`.
        let this = self.get_mut();
        match ready!(this.kind.poll_step(cx)) {
            Step::Data { bytes, last } => {
                if let Some(c) = &this.counters {
                    c.add_bytes_sent(bytes.len() as u64);
                }
                if last {
                    // Before returning the frame: see the module comment.
                    this.finish();
                }
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Step::Abort => {
                // Dropped, not finished: a body cut off is an unfinished response.
                this.in_flight = None;
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "mock-server: reset fault",
                ))))
            }
            Step::End => {
                this.finish();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty | Kind::Full(None) => true,
            Kind::Drip { rest, .. } => rest.is_empty(),
            Kind::Oversized { remaining } => *remaining == 0,
            Kind::Full(Some(_)) | Kind::Reset { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty | Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            // An exact hint makes hyper send Content-Length: a dripped body is slow,
            // not malformed.
            Kind::Drip { rest, .. } => SizeHint::with_exact(rest.len() as u64),
            // Unknown sizes make hyper use chunked encoding: an oversized body must
            // be caught by the client's limit while streaming, not by a header.
            // For Reset the handler sets a Content-Length header itself.
            Kind::Reset { .. } | Kind::Oversized { .. } => SizeHint::default(),
        }
    }
}
