//! The baseline: one loop, one request at a time, on the calling thread.
//!
//! # How it works
//!
//! `fetch_all` walks the URL list in order. Each fetch blocks the calling
//! thread inside ureq's `call()` and body read: the waiting happens in the
//! kernel (`connect`, `recv`), with the thread asleep. Nobody schedules
//! anything; the limit in flight is 1 by construction, whatever
//! `max_in_flight` says, because the next request starts only when the
//! previous one has finished. Wall time is the sum of every latency. What
//! happens to one URL (retries, the CPU stage, the outcome) is
//! `fetch_core::fetch_one_blocking`, the same for the three blocking models;
//! fetch-core's `fetch.rs` explains it.
//!
//! One [`BlockingClient`] (a ureq `Agent`) is shared by every request so the
//! keep-alive connection to each host is reused: without it, every page would
//! pay a TCP (and TLS) handshake. Its configuration (explicit timeouts, status
//! codes returned rather than raised, a body cap enforced while reading) is in
//! `fetch_core::blocking`, because the threads and rayon models use the same
//! client.
//!
//! A cancel cannot wake a thread blocked in `recv`, so for the length of a
//! run the cancel token holds a hook that shuts the agent's sockets down
//! (`BlockingClient::shut_down_on_cancel`): the request in flight fails at
//! once and is recorded `cancelled`, instead of the cancel waiting out its
//! timeout (against a server that never answers, with a 30 s timeout, Ctrl-C
//! took 30.6 s before this hook and under 0.01 s with it, as in the async
//! models). A shut-down agent refuses every later request, so the model
//! builds a new one for its next run. A DNS lookup or a TCP connect in
//! progress is not interrupted; it ends by its own timeout.
//!
//! # When to choose this
//!
//! When the list is short, or the server must never see more than one request
//! at a time (a polite crawl of one fragile host), or as the reference other
//! models are checked against. Not for throughput: at 10 ms of latency it
//! cannot exceed 100 pages/s, however many cores there are. The article's
//! "awaiting one by one" mistake is this model written with `async` syntax.
//! Measured on the 2-core reference VM
//! (docs/results/2026-11-24-2-core-AMD-EPYC): 93 pages/s at 10 ms (1% of what
//! wrk reaches with 100 in flight), yet 0.3 times the article's Python program
//! only because that one keeps 100 in flight.
//!
//! # Copying this crate
//!
//! `scripts/export-model sequential DIR` writes this crate and fetch-core, with
//! the conformance suite and the mock server for its tests, as a standalone
//! Cargo project (CI builds and tests each export offline).
//!
//! Copy `src/lib.rs` and depend on `fetch-core` (features = ["blocking"]), or
//! put your own ureq call where `client.attempt` is. If you copy it, keep the
//! timeouts: ureq sets none by default, and one server that never answers
//! would stop the whole loop. Keep the shutdown on cancel too, or a Ctrl-C
//! waits for the request in flight. Your own processing of a page replaces
//! fetch-core's CPU stage, `fetch_core::parse::page`, which
//! `fetch_one_blocking` runs on the calling thread once the page is in.
//!
//! # Tests and benchmark
//!
//! `cargo test -p fetch-sequential` runs the conformance suite (every case the
//! other models pass). `cargo bench -- sequential` runs its benchmark rows.

use fetch_core::blocking::BlockingClient;
use fetch_core::fetch_one_blocking;
use fetch_core::{Cached, CancelToken, Dispatch, Model, Next, Options, Outcome, Run};

/// Fetches `urls` one after another, handing each outcome to `on_outcome` as
/// it finishes. Returns the number of URLs read (one outcome each).
pub fn fetch_all(
    client: &BlockingClient,
    urls: &mut dyn Iterator<Item = String>,
    options: &Options,
    on_outcome: &mut dyn FnMut(Outcome),
    cancel: &CancelToken,
) -> usize {
    let run = Run::new(options, cancel);
    // The calling thread spends the run blocked in socket reads, where the
    // cancel token cannot reach it: while this guard lives, a cancel shuts
    // the agent's sockets down, so the read fails at once.
    let _interrupt = client.shut_down_on_cancel(&run);
    let mut dispatch = Dispatch::new(urls, on_outcome);
    // The whole model: take the next URL, fetch it, record it, repeat, until
    // the input is exhausted. `next_url` checks the cancel token and the
    // deadline before handing out each URL, so after a cancel the rest of
    // the input is reported `cancelled` without a request. With nothing in
    // flight no host is at its limit, so `Next::Wait` never comes here.
    while let Next::Url(index, url) = dispatch.next_url(&run) {
        dispatch.record(fetch_one_blocking(&run, index, url, |url, budget| {
            client.attempt(&run, url, budget)
        }));
    }
    dispatch.finish(&run)
}

/// The sequential model, for the CLI, the benches and the conformance suite.
/// It keeps its agent between runs with the same options, until a cancel
/// shuts it down.
#[derive(Default)]
pub struct Sequential {
    client: Cached<BlockingClient>,
}

impl Sequential {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Model for Sequential {
    fn name(&self) -> &'static str {
        "sequential"
    }

    fn concurrency(&self, _options: &Options) -> usize {
        1
    }

    fn run_iter(
        &self,
        urls: &mut dyn Iterator<Item = String>,
        options: &Options,
        on_outcome: &mut dyn FnMut(Outcome),
        cancel: &CancelToken,
    ) -> usize {
        // One request at a time needs one idle connection per host. A client
        // that a cancel shut down is replaced, and so is one that another
        // run holds now (a cancel of that run would shut this one's down).
        let client = self.client.get_unshared_or_build(
            options,
            |c| !c.is_shut_down(),
            |o| BlockingClient::new(o, 1),
        );
        fetch_all(&client, urls, options, on_outcome, cancel)
    }
}
