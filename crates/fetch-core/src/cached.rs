//! A client (or runtime) kept between runs with the same options.

use std::sync::{Arc, Mutex, PoisonError};

use crate::Options;

/// Keeps one client (or runtime) built for the last options seen, so that
/// repeated runs (benchmark iterations) do not pay for building it again,
/// while a run with different options gets a client that matches them.
pub struct Cached<C> {
    slot: Mutex<Option<(Options, Arc<C>)>>,
}

impl<C> Default for Cached<C> {
    fn default() -> Self {
        Cached {
            slot: Mutex::new(None),
        }
    }
}

impl<C> Cached<C> {
    pub fn get_or_build(&self, options: &Options, build: impl FnOnce(&Options) -> C) -> Arc<C> {
        // A panic while building leaves the slot as it was; nothing to repair.
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some((built_for, client)) if built_for == options => Arc::clone(client),
            _ => {
                let client = Arc::new(build(options));
                *slot = Some((options.clone(), Arc::clone(&client)));
                client
            }
        }
    }

    /// Like [`get_or_build`](Self::get_or_build), for a client that one run
    /// at a time uses and that a run can spoil: the cached client is handed
    /// out only if `usable` accepts it and no other run holds it now;
    /// otherwise a new one is built and cached in its place. The blocking
    /// models need this: a cancel shuts their agent down, for good and for
    /// every run that shares it.
    pub fn get_unshared_or_build(
        &self,
        options: &Options,
        usable: impl FnOnce(&C) -> bool,
        build: impl FnOnce(&Options) -> C,
    ) -> Arc<C> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            // One count is the slot's own: any other is a run in progress
            // (counted under this lock, so two runs cannot both see 1).
            Some((built_for, client))
                if built_for == options && Arc::strong_count(client) == 1 && usable(client) =>
            {
                Arc::clone(client)
            }
            _ => {
                let client = Arc::new(build(options));
                *slot = Some((options.clone(), Arc::clone(&client)));
                client
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[test]
    fn an_unshared_client_is_rebuilt_when_spoiled_or_in_use() {
        let cache: Cached<AtomicBool> = Cached::default();
        let opts = Options::default();
        let usable = |c: &AtomicBool| !c.load(Ordering::SeqCst);
        let first = cache.get_unshared_or_build(&opts, usable, |_| AtomicBool::new(false));
        // Held by a run: a second run gets its own.
        let second = cache.get_unshared_or_build(&opts, usable, |_| AtomicBool::new(false));
        assert!(!Arc::ptr_eq(&first, &second));
        // The slot keeps the second; once no run holds it, it is reused.
        let cached = Arc::as_ptr(&second);
        drop((first, second));
        let third = cache.get_unshared_or_build(&opts, usable, |_| AtomicBool::new(false));
        assert_eq!(Arc::as_ptr(&third), cached, "free and usable: reused");
        third.store(true, Ordering::SeqCst);
        drop(third);
        let fourth = cache.get_unshared_or_build(&opts, usable, |_| AtomicBool::new(false));
        assert!(
            !fourth.load(Ordering::SeqCst),
            "a spoiled client is replaced"
        );
    }
}
