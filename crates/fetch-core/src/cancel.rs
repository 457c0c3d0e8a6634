//! Cancellation that every model can wait on: a flag, an event for
//! blocking and async waiters alike, and hooks for waits neither can end.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use event_listener::{Event, Listener};

/// Stops a run: no new requests start, and unfinished URLs end `cancelled`.
///
/// Cheap to clone (clones share one flag). Blocking code waits on it with
/// [`CancelToken::wait_timeout`], async code with [`CancelToken::cancelled`],
/// so one token serves every model. A wait the token cannot wake (a thread
/// blocked reading a socket) registers a hook with
/// [`CancelToken::on_cancel`] that ends it from outside.
#[derive(Clone, Debug, Default)]
pub struct CancelToken {
    inner: Arc<CancelInner>,
}

#[derive(Debug, Default)]
struct CancelInner {
    cancelled: AtomicBool,
    event: Event,
    hooks: Mutex<Hooks>,
}

/// The hooks [`CancelToken::on_cancel`] registered, each with the id its
/// guard removes it by.
#[derive(Default)]
struct Hooks {
    next_id: u64,
    pending: Vec<(u64, Box<dyn FnOnce() + Send>)>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels the run; every waiter wakes up, and every hook registered
    /// with [`on_cancel`](Self::on_cancel) runs, once, on this thread.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        self.inner.event.notify(usize::MAX);
        // Taken out of the lock before they run: a hook may take a while
        // (shutting sockets down), and a guard dropped meanwhile on another
        // thread must not wait for it. A second cancel finds none left.
        let hooks = std::mem::take(&mut self.hooks().pending);
        for (_, hook) in hooks {
            hook();
        }
    }

    /// Runs `hook` when the token is cancelled, on the thread that cancels
    /// it, or at once on this thread if it already is; never more than once.
    /// Dropping the returned guard unregisters the hook, so a run registers
    /// one for as long as it lasts and a later cancel does not reach it.
    ///
    /// For waits that neither [`wait_timeout`](Self::wait_timeout) nor
    /// [`cancelled`](Self::cancelled) can end: the blocking models shut
    /// their client's sockets down from here, which wakes every thread
    /// blocked reading them. A hook should be quick and must not block on
    /// the run it cancels.
    #[must_use = "dropping the guard unregisters the hook at once"]
    pub fn on_cancel(&self, hook: impl FnOnce() + Send + 'static) -> OnCancel {
        let mut hooks = self.hooks();
        // Checked under the lock that `cancel` takes after setting the flag:
        // either this sees the flag, or `cancel` sees the hook. Never neither.
        if self.is_cancelled() {
            drop(hooks);
            hook();
            return OnCancel { token: None, id: 0 };
        }
        let id = hooks.next_id;
        hooks.next_id += 1;
        hooks.pending.push((id, Box::new(hook)));
        OnCancel {
            token: Some(self.clone()),
            id,
        }
    }

    fn hooks(&self) -> MutexGuard<'_, Hooks> {
        // A hook runs outside the lock, so a panic cannot poison it while a
        // list is half changed; a poisoned list is still a valid list.
        self.inner
            .hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Blocks for `timeout` or until cancelled; returns true if cancelled.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_cancelled() {
                return true;
            }
            // Listen first, then re-check: a cancel between the check and the
            // listen would otherwise be missed until the timeout.
            let listener = self.inner.event.listen();
            if self.is_cancelled() {
                return true;
            }
            if listener.wait_deadline(deadline).is_none() {
                return self.is_cancelled();
            }
        }
    }

    /// Completes when the token is cancelled (runtime-agnostic).
    pub async fn cancelled(&self) {
        loop {
            if self.is_cancelled() {
                return;
            }
            let listener = self.inner.event.listen();
            if self.is_cancelled() {
                return;
            }
            listener.await;
        }
    }
}

/// Keeps a hook registered with [`CancelToken::on_cancel`]; dropping it
/// unregisters the hook (if it has not run yet).
#[derive(Debug)]
pub struct OnCancel {
    /// `None` when the hook already ran at registration.
    token: Option<CancelToken>,
    id: u64,
}

impl Drop for OnCancel {
    fn drop(&mut self) {
        if let Some(token) = &self.token {
            token.hooks().pending.retain(|(id, _)| *id != self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_runs_each_registered_hook_once() {
        use std::sync::atomic::AtomicUsize;
        let token = CancelToken::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let hook = |runs: &Arc<AtomicUsize>| {
            let runs = Arc::clone(runs);
            move || {
                runs.fetch_add(1, Ordering::SeqCst);
            }
        };
        let kept = token.on_cancel(hook(&runs));
        // Unregistered before the cancel: must not run.
        drop(token.on_cancel(|| panic!("an unregistered hook ran")));
        token.clone().cancel();
        token.cancel();
        assert_eq!(runs.load(Ordering::SeqCst), 1, "once, however many cancels");
        drop(kept);
        // Registered after the cancel: runs at once.
        let _late = token.on_cancel(hook(&runs));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn cancel_wakes_a_blocked_waiter() {
        let token = CancelToken::new();
        let t2 = token.clone();
        let waiter = std::thread::spawn(move || t2.wait_timeout(Duration::from_secs(60)));
        token.cancel();
        assert!(waiter.join().unwrap());
        assert!(!CancelToken::new().wait_timeout(Duration::from_millis(1)));
    }
}
