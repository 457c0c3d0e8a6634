//! The contract every fetchlab model shares.
//!
//! fetchlab implements one fetch pipeline (bounded concurrency, a timeout per
//! attempt, a global deadline, retries with backoff, a CPU parse stage, one
//! outcome per URL) once per concurrency model. Everything that is *not* the
//! concurrency model lives here, so that `diff` between two model crates shows
//! only how each one waits:
//!
//! - [`Options`]: limits, timeouts, retries and TLS roots, checked when built.
//! - [`Outcome`], [`Page`], [`FetchError`] and [`ErrorKind`]: the one record
//!   every URL ends with, and one error kind per cause.
//! - [`retry`]: which failures are retried and how long to wait first.
//! - [`check_url`]: every URL checked and normalised once (WHATWG rules,
//!   at most [`MAX_URL_BYTES`]), so every model requests the same string.
//! - [`Run`]: the run's deadline, cancellation and the retry loop;
//!   [`Dispatch`] hands out URLs as slots free up and keeps the "exactly one
//!   outcome per URL" invariant.
//! - [`parse`]: the CPU stage (HTML parsing with `scraper`, plus optional
//!   extra work).
//! - [`Summary`]: counts, throughput and latency percentiles.
//! - [`Model`]: the trait the CLI, the benches and the conformance suite use.
//! - `blocking` (feature `blocking`): the ureq client the blocking models share.

#[cfg(feature = "blocking")]
pub mod blocking;
mod input;
mod model;
mod options;
mod outcome;
pub mod parse;
pub mod retry;
mod run;
mod summary;
#[cfg(feature = "rustls")]
pub mod tls;

pub use input::{MAX_URL_BYTES, check_url, shown_url};
pub use model::Model;
pub use options::{DEFAULT_RETRY_STATUSES, Options, OptionsBuilder, OptionsError};
pub use outcome::{ErrorKind, FetchError, Outcome, Page};
pub use run::{Cached, CancelToken, Dispatch, OnCancel, Run};
pub use summary::{Percentiles, Summary, Tally};
