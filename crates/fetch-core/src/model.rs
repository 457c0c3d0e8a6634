//! The one interface every model implements, so the CLI, the benches and the
//! conformance suite drive them all the same way.

use crate::{CancelToken, Options, Outcome};

/// A concurrency model: a way to fetch many URLs.
///
/// Implementations build their runtime and client once (in their constructor,
/// or on first use through [`crate::Cached`]) and reuse them across runs, so a
/// benchmark times the fetching, not the setup.
pub trait Model: Send + Sync {
    /// The model's short name, as `fetchlab --models` and the tables spell it.
    fn name(&self) -> &'static str;

    /// How many requests this model keeps in flight with `options`: the
    /// limit it promises and the conformance suite checks against the mock
    /// server's counter. Every model but the sequential one uses
    /// `max_in_flight`.
    fn concurrency(&self, options: &Options) -> usize {
        options.max_in_flight()
    }

    /// Whether a crash while fetching one URL (an abort, a segfault in C
    /// code) costs only the URLs in flight beside it rather than the whole
    /// run. A panic is caught per URL in every model; a crash ends the
    /// process, so only a model that fetches in child processes survives
    /// one. Such a model records each URL lost with a crash as `panicked`,
    /// with a message saying which process died and how, and fetches the
    /// rest; the conformance suite checks that, and skips the check for the
    /// models that run in one process.
    fn isolates_crashes(&self) -> bool {
        false
    }

    /// The streaming form, which every model implements: fetches every URL
    /// from `urls` and hands each outcome to `on_outcome` as it finishes.
    ///
    /// URLs are pulled only as slots free up and nothing is kept per URL once
    /// it is reported, so memory stays proportional to the concurrency, not
    /// to the length of the input. Blocks until every URL read has had its
    /// outcome, called on the calling thread, exactly once per URL, each
    /// carrying its input index. Cancelling `cancel` stops new requests and
    /// abandons the ones in flight at once (a blocking model shuts its
    /// sockets down; only a DNS lookup or a connect in progress runs on, to
    /// their own timeouts); those and the rest of the input are reported
    /// `cancelled`. Returns the number of URLs read.
    fn run_iter(
        &self,
        urls: &mut dyn Iterator<Item = String>,
        options: &Options,
        on_outcome: &mut dyn FnMut(Outcome),
        cancel: &CancelToken,
    ) -> usize;

    /// The collecting form: one outcome per URL, returned in input order;
    /// `on_outcome` sees each one as it finishes.
    fn run(
        &self,
        urls: &[String],
        options: &Options,
        on_outcome: &mut dyn FnMut(&Outcome),
        cancel: &CancelToken,
    ) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(urls.len());
        self.run_iter(
            &mut urls.iter().cloned(),
            options,
            &mut |o| {
                on_outcome(&o);
                outcomes.push(o);
            },
            cancel,
        );
        outcomes.sort_unstable_by_key(|o| o.index);
        outcomes
    }
}
