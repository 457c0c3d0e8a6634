//! One run of a model: its options, its clock and deadline, its cancel
//! token, and what they mean for the next attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pace::Pace;
use crate::robots::RobotsCache;
use crate::{CancelToken, ErrorKind, FetchError, Options};

/// One run of a model over a URL list: its options, its deadline and its
/// cancel token. Models create it at the start of a run; it owns
/// copies of both, so async models can share it with spawned tasks through
/// an `Arc`.
#[derive(Debug)]
pub struct Run {
    // Behind an Arc so the CPU stage, which runs on another thread, can take
    // the options along without copying them per page.
    options: Arc<Options>,
    cancel: CancelToken,
    deadline: Option<Instant>,
    /// Each host's pace: when it may next be asked (`pace.rs`).
    pace: Pace,
    /// Each origin's robots.txt rules, fetched once for the run (`robots.rs`).
    robots: RobotsCache,
}

impl Run {
    pub fn new(options: &Options, cancel: &CancelToken) -> Self {
        Run {
            options: Arc::new(options.clone()),
            cancel: cancel.clone(),
            deadline: options.deadline().map(|d| Instant::now() + d),
            pace: Pace::new(options),
            robots: RobotsCache::new(options),
        }
    }

    pub fn options(&self) -> &Options {
        &self.options
    }
    /// The options, shared, for work that leaves this thread.
    pub fn shared_options(&self) -> Arc<Options> {
        Arc::clone(&self.options)
    }
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }
    /// The instant the global deadline passes, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
    /// Each host's pace, shared by every task and thread of the run.
    pub(crate) fn pace(&self) -> &Pace {
        &self.pace
    }
    /// Each origin's robots.txt rules, shared by every task and thread of the run.
    pub(crate) fn robots(&self) -> &RobotsCache {
        &self.robots
    }

    /// Why no new request may start, or `None` while the run goes on.
    pub fn stop_reason(&self) -> Option<FetchError> {
        if self.cancel.is_cancelled() {
            Some(FetchError::new(ErrorKind::Cancelled, "run cancelled"))
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Some(FetchError::new(
                ErrorKind::Deadline,
                "global deadline passed before the URL finished",
            ))
        } else {
            None
        }
    }

    /// The time the next attempt may take: the per-attempt timeout, cut short
    /// so that no attempt outlives the global deadline. An error when the run
    /// is cancelled or past its deadline.
    pub fn attempt_timeout(&self) -> Result<Duration, FetchError> {
        if let Some(stop) = self.stop_reason() {
            return Err(stop);
        }
        let timeout = self.options.request_timeout();
        Ok(match self.deadline {
            Some(d) => timeout.min(d.saturating_duration_since(Instant::now())),
            None => timeout,
        })
    }

    /// An attempt that timed out because the deadline cut its budget short is
    /// a `deadline` outcome, not a `timeout`: the URL did nothing wrong.
    pub fn explain(&self, error: FetchError) -> FetchError {
        if error.kind() == ErrorKind::Timeout && self.deadline.is_some_and(|d| Instant::now() >= d)
        {
            FetchError::new(
                ErrorKind::Deadline,
                "global deadline passed during the request",
            )
        } else {
            error
        }
    }
}
