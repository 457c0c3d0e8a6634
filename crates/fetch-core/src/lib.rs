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
//! - [`check_url`] (`input.rs`): every URL checked and normalised once
//!   (WHATWG rules, at most [`MAX_URL_BYTES`]), so every model requests the
//!   same string.
//! - [`Dispatch`] (`dispatch.rs`): hands out URLs as slots free up and keeps
//!   the "exactly one outcome per URL" invariant; with `hosts.rs`, at most
//!   [`Options::max_per_host`] of them to one host, reading ahead past a full
//!   host by at most [`look_ahead`] URLs.
//! - [`Run`] (`run.rs`): the run's options, deadline and cancel token, and
//!   the time budget of the next attempt; [`CancelToken`] (`cancel.rs`);
//!   each host's pace (`pace.rs`: a delay between requests to it,
//!   [`AutoThrottle`], a `Retry-After` pushing it back), which the per-URL
//!   path waits for before every attempt.
//! - [`fetch_one`] and [`fetch_one_blocking`] (`fetch.rs`): the per-URL path
//!   every model calls: attempts, redirects, retries, the panic guard, the
//!   race against cancel and deadline, the CPU stage (one slot per core) and
//!   the outcome.
//! - [`UrlMachine`] (`machine.rs`): the same per-URL path as a sans-IO state
//!   machine, for a model that drives its own event loop (fetch-mio): it
//!   says what to do next (a request, a wait, the CPU stage, the outcome)
//!   and the loop does it.
//! - `robots.rs`: robots.txt (RFC 9309) when [`Options::robots`] is on: each
//!   origin's rules fetched once per run through the model's own `attempt`,
//!   and a URL they disallow recorded as `robots_disallowed`, unrequested.
//! - [`retry`]: which failures are retried, how long to wait, and the loop.
//! - [`parse`]: the CPU stage (a streaming HTML parse with `lol_html`, plus optional
//!   extra work). A copier puts their own processing of a page here.
//! - [`save`]: pages written under [`Options::save_dir`] in the CPU stage, each
//!   atomically, named by the SHA-256 of their final URL.
//! - [`Model`]: the trait the CLI, the benches and the conformance suite use;
//!   [`Cached`] keeps a model's client between runs.
//! - `blocking` (feature `blocking`): the ureq client the blocking models share.
//! - `tls` (feature `rustls`): the rustls configuration of the rustls models.
//!
//! # The names every model crate uses
//!
//! So that `diff` of two model crates shows only the model, the same idea has
//! the same name in each (a test in `crates/conformance` checks it):
//!
//! | name | what |
//! |---|---|
//! | `fetch_all` | the model: its scheduling loop over a [`Dispatch`] |
//! | `build_client` | the client (and runtime) a run shares, from [`Options`] |
//! | `attempt` | one request with that client (no redirect followed: fetch-core follows them), returning [`Fetched`] |
//! | `map_error` | the client's errors into [`ErrorKind`]s |
//! | `in_flight` | the requests (tasks, jobs) started and not yet reported |
//! | `exhausted` | the input has no more URLs |
//! | `max_in_flight` | the limit: [`Options::max_in_flight`], `--concurrency` on the command line |

#[cfg(feature = "blocking")]
pub mod blocking;
mod cached;
mod cancel;
mod dispatch;
mod fetch;
mod hosts;
mod input;
mod machine;
mod model;
mod options;
mod outcome;
mod pace;
pub mod parse;
pub mod response;
pub mod retry;
mod robots;
mod run;
pub mod save;
#[cfg(feature = "rustls")]
pub mod tls;

pub use cached::Cached;
pub use cancel::{CancelToken, OnCancel};
pub use dispatch::{Dispatch, Next};
pub use fetch::{AsyncRuntime, Fetched, fetch_one, fetch_one_blocking};
pub use hosts::{host_key, look_ahead};
pub use input::{MAX_URL_BYTES, check_url, shown_url};
pub use machine::{CpuJob, Step, UrlMachine};
pub use model::Model;
pub use options::{DEFAULT_RETRY_STATUSES, Options, OptionsBuilder, OptionsError};
pub use outcome::{ErrorKind, FetchError, Outcome, Page};
pub use pace::AutoThrottle;
pub use robots::robots_agent;
pub use run::Run;
/// The URL type of fetch-core's API (the `url` crate's), re-exported so a
/// model names it without a dependency of its own.
pub use url::Url;
