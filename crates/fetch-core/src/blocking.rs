//! The blocking client shared by the sequential, threads and rayon models:
//! one ureq 3 [`Agent`](ureq::Agent), configured from [`Options`].
//!
//! The three blocking models differ only in how many threads call
//! [`BlockingClient::attempt`] and how those threads are scheduled; the request
//! itself is the same, so it lives here once (feature `blocking`).
//!
//! What ureq leaves to the caller, and how this module handles it:
//! - **Timeouts.** ureq sets none by default: a server that never answers
//!   would hold a thread forever. Each attempt gets `timeout_global` (connect,
//!   headers and body, end to end) from [`Run::attempt_timeout`], so no attempt
//!   outlives the run's deadline, plus `timeout_connect`.
//! - **Cancel.** A thread blocked in a socket read cannot see a cancel token,
//!   and would wait out its timeout (30 s by default) before the run could
//!   end. [`BlockingClient::shut_down_on_cancel`] has the cancel call
//!   `Agent::shutdown` (ureq 3.5), which shuts down every socket the agent
//!   opened: each blocked read or write fails at once, and the URL is
//!   recorded `cancelled`. A shut-down agent refuses every later request, so
//!   the models keep a client only until a cancel spoils it. What a shutdown
//!   cannot reach: a DNS lookup (getaddrinfo blocks until the resolver
//!   answers) and a TCP connect in progress (bounded by the connect
//!   timeout); those end on their own, then fail `cancelled`.
//! - **Threads.** std aborts the process when a thread it started cannot map
//!   its signal stack; [`thread_budget`] reads the OS limits so the threads
//!   and rayon models never start that many.
//! - **Status codes.** By default ureq turns a 4xx/5xx into an opaque
//!   `Error::StatusCode`, losing the `Retry-After` header. With
//!   `http_status_as_error(false)` every status comes back as a response and
//!   fetch-core classifies it.
//! - **The body cap.** `with_config().limit(n)` stops reading at the cap, so an
//!   endless body costs at most `n` bytes of memory.
//! - **The pool.** ureq keeps 3 idle connections per host by default; a model
//!   with C threads on one host asks for C, or each extra thread reconnects for
//!   every request.
//! - **TLS.** A self-signed certificate the user passed must be accepted as
//!   pinned (see [`crate::tls`]), which takes a verifier of our own, and
//!   ureq's `TlsConfig` takes only root lists: the agent is built with our TLS
//!   connector in ureq's connector chain instead.
//! - **Buffers.** 128 KiB each way per connection by default, sized down here
//!   for GET requests (measured by the threads model's author: 180-350 MB of
//!   RSS at a thousand connections with the defaults).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ureq::Agent;
use ureq::http::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER};
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{ConnectProxyConnector, Connector, TcpConnector};

use crate::OnCancel;
use crate::response::check_status;
use crate::tls::{UreqTls, error_chain, is_tls_failure};
use crate::{Dispatch, ErrorKind, FetchError, Fetched, Next, Options, Run, fetch_one_blocking};
use url::Url;

/// A ureq agent configured from [`Options`]. Cheap to share by reference
/// across threads: the agent's pool is behind a lock. Clones share the agent
/// (and its shutdown).
#[derive(Debug, Clone)]
pub struct BlockingClient {
    agent: Agent,
    /// Set when a cancel shut the agent down: it refuses every request from
    /// then on, so the model builds a new client for its next run.
    shut_down: Arc<AtomicBool>,
}

impl BlockingClient {
    /// An agent for `options`, keeping up to `idle_per_host` idle keep-alive
    /// connections per host (set it to the number of threads that share it).
    pub fn new(options: &Options, idle_per_host: usize) -> Self {
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(options.connect_timeout()))
            // fetch-core follows redirects, the same way for every model.
            .max_redirects(0)
            .max_idle_connections(idle_per_host.max(1) * 4)
            .max_idle_connections_per_host(idle_per_host.max(1))
            .user_agent(options.user_agent())
            // ureq's default buffers are 128 KiB in and 128 KiB out per
            // connection, zero-filled when the connection opens: 200 MiB at a
            // thousand connections. A GET crawler sends a few hundred bytes
            // and needs room for the response head; 32 KiB of headers is
            // more than common servers send (nginx and Apache cap theirs at
            // 8-16 KiB), and the body streams through the buffer.
            .input_buffer_size(32 * 1024)
            .max_response_header_size(32 * 1024)
            .output_buffer_size(8 * 1024)
            .build();
        // ureq's default chain with our TLS step (see **TLS** above) in place
        // of its own: CONNECT proxies, then TCP, which registers each socket
        // for `Agent::shutdown`, then TLS over it.
        let connector =
            ().chain(ConnectProxyConnector::default())
                .chain(TcpConnector::default())
                .chain(UreqTls::new(options));
        BlockingClient {
            agent: Agent::with_parts(config, connector, DefaultResolver::default()),
            shut_down: Arc::default(),
        }
    }

    /// Shuts this client down if `run` is cancelled while the returned guard
    /// lives: every request in flight on it, in any thread, fails at once
    /// (and is recorded `cancelled`) instead of waiting for its timeout. A
    /// model holds the guard for the length of a run; a cancel after the run
    /// has returned does not touch the client.
    pub fn shut_down_on_cancel(&self, run: &Run) -> OnCancel {
        let (agent, shut_down) = (self.agent.clone(), Arc::clone(&self.shut_down));
        run.cancel_token().on_cancel(move || {
            shut_down.store(true, Ordering::SeqCst);
            // Shuts the sockets of every clone of the agent: ureq's TCP
            // connector registers each socket it opens with the agent's pool.
            agent.shutdown();
        })
    }

    /// True once a cancel has shut the agent down: no request can succeed on
    /// it any more, and a model must build a new client for its next run.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::SeqCst)
    }

    /// Fetches `first`, then every URL `dispatch` hands out, one after
    /// another on the calling thread: the fallback of the threads and rayon
    /// models when not one thread could be started. (The sequential model
    /// writes this loop out: there, it is the model.)
    pub fn fetch_in_turn(&self, run: &Run, dispatch: &mut Dispatch<'_>, first: Vec<(usize, Url)>) {
        let mut first = first.into_iter();
        // One URL in flight at a time once `first` is done: no host can be
        // full when the next is asked for, so `Next::Wait` cannot come.
        let next = |dispatch: &mut Dispatch<'_>| match dispatch.next_url(run) {
            Next::Url(index, url) => Some((index, url)),
            Next::Wait | Next::End => None,
        };
        while let Some((index, url)) = first.next().or_else(|| next(dispatch)) {
            let outcome = fetch_one_blocking(run, index, url, |url, budget| {
                self.attempt(run, url, budget)
            });
            dispatch.record(outcome);
        }
    }

    /// One request within `budget` (connect, headers and body, end to end),
    /// following no redirect: the status, the body (capped) and its content
    /// type, or an error (a non-2xx status is one, with its `Location`). What a
    /// blocking model hands to [`fetch_one_blocking`](crate::fetch_one_blocking).
    pub fn attempt(&self, run: &Run, url: Url, budget: Duration) -> Result<Fetched, FetchError> {
        // A request the cancel interrupted fails with whatever its shut-down
        // socket said (an early EOF, a reset, `NotConnected` for one that
        // had not connected yet): the cancel is the cause, so that is the
        // kind recorded. A status the server did send is kept as it is.
        let map = |err: ureq::Error| {
            if run.cancel_token().is_cancelled() {
                FetchError::new(ErrorKind::Cancelled, "run cancelled during the request")
            } else {
                map_error(err)
            }
        };
        let mut response = self
            .agent
            .get(url.as_str())
            .config()
            .timeout_global(Some(budget))
            .build()
            .call()
            .map_err(map)?;
        let status = response.status().as_u16();
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
        check_status(status, header(RETRY_AFTER), header(LOCATION))?;
        let content_type = header(CONTENT_TYPE).map(str::to_string);
        let body = response
            .body_mut()
            .with_config()
            .limit(run.options().max_body_bytes())
            .read_to_vec()
            .map_err(map)?;
        Ok(Fetched {
            status,
            body,
            content_type,
        })
    }
}

/// ureq's errors, mapped into fetch-core's kinds.
pub fn map_error(err: ureq::Error) -> FetchError {
    use ureq::Error as E;
    let kind = match &err {
        E::Timeout(_) => ErrorKind::Timeout,
        E::HostNotFound | E::ConnectionFailed => ErrorKind::Connect,
        E::BadUri(_) | E::Http(_) => ErrorKind::InvalidUrl,
        E::Tls(_) | E::Pem(_) | E::Rustls(_) | E::TlsRequired => ErrorKind::Tls,
        E::BodyExceedsLimit(_) => ErrorKind::BodyTooLarge,
        E::Io(io) => io_kind(io),
        // StatusCode cannot happen (http_status_as_error is off), nor can
        // the redirect errors (max_redirects is 0); everything else is a
        // response we could not make sense of.
        _ => ErrorKind::Protocol,
    };
    FetchError::new(kind, err.to_string())
}

fn io_kind(err: &io::Error) -> ErrorKind {
    use io::ErrorKind as K;
    if is_tls_failure(&error_chain(err)) {
        return ErrorKind::Tls;
    }
    // A failed DNS lookup comes from std's getaddrinfo wrapper as an
    // uncategorised I/O error; its message is the only thing that says so.
    if err
        .to_string()
        .starts_with("failed to lookup address information")
    {
        return ErrorKind::Connect;
    }
    match err.kind() {
        K::ConnectionRefused | K::AddrNotAvailable | K::HostUnreachable | K::NetworkUnreachable => {
            ErrorKind::Connect
        }
        K::TimedOut | K::WouldBlock => ErrorKind::Timeout,
        // Reset, aborted, unexpected EOF: the connection died mid-response.
        _ => ErrorKind::Protocol,
    }
}

// ------------------------------------------------------------ thread budget

/// How many more worker threads this process can start before an OS limit
/// stops it, and which limit that is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadBudget {
    /// Workers that can still be started; `usize::MAX` when no limit is known.
    pub workers: usize,
    /// The limit that sets `workers`, for the message of a capped run.
    pub limit: &'static str,
}

/// Threads one worker may need at once: itself, and the thread ureq starts
/// to resolve the host of each new connection (it does whenever a timeout
/// is set, as here, so that a lookup can be abandoned at the timeout). That
/// one is started with `thread::spawn`, which panics if the OS refuses (the
/// URL then ends `panicked`), so the budget counts it too.
const THREADS_PER_WORKER: usize = 2;
/// Memory maps one thread costs: its stack and the stack's guard page,
/// std's signal stack and its guard page (10,000 idle threads took 40,000
/// maps: crates/fetch-threads/examples/thread_cost.rs).
const MAPS_PER_THREAD: usize = 4;
/// A worker's threads, plus one map for a response body large enough (over
/// 128 KiB) that malloc maps it on its own.
const MAPS_PER_WORKER: usize = THREADS_PER_WORKER * MAPS_PER_THREAD + 1;
/// Maps left to everything else the process maps while it runs: malloc's
/// per-thread arenas, libraries loaded late, the caller's own buffers.
const SPARE_MAPS: usize = 1024;

/// The worker threads this process can still start, read from the OS's
/// limits (Linux; elsewhere no limit is known, and a refused spawn is still
/// handled by the models).
///
/// Past most limits `spawn` fails with `EAGAIN`, and a model runs with the
/// threads it has. One limit is worse: at `vm.max_map_count` a thread can
/// start and then fail to map its signal stack, and std aborts the whole
/// process ("failed to set up alternative stack guard page"). So the threads
/// and rayon models never start more workers than this. It reads:
/// - `vm.max_map_count` minus the maps in use (`/proc/self/maps`), keeping
///   [`SPARE_MAPS`], over [`MAPS_PER_WORKER`];
/// - `kernel.threads-max` and `kernel.pid_max` minus the threads on the
///   system (`/proc/loadavg`);
/// - `RLIMIT_NPROC` (`/proc/self/limits`) minus this process's threads, an
///   upper bound, since the user's other processes count too;
/// - the cgroup's `pids.max` minus its `pids.current`;
///
/// and counts [`THREADS_PER_WORKER`] threads per worker against the last
/// three: the worst case, every worker resolving a host at once. Each figure
/// is a snapshot (other processes start threads too) and a limit that
/// cannot be read is left out, so this avoids the abort and most refusals;
/// it does not replace handling a refused spawn. At the default
/// `vm.max_map_count` (65,530) it allows about 7,000 workers.
pub fn thread_budget() -> ThreadBudget {
    let mut budget = ThreadBudget {
        workers: usize::MAX,
        limit: "no known limit",
    };
    if !cfg!(target_os = "linux") {
        return budget;
    }
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let number = |path: &str| read(path)?.trim().parse::<usize>().ok();
    let maps_in_use = read("/proc/self/maps").map(|maps| maps.lines().count());
    let maps_left = number("/proc/sys/vm/max_map_count")
        .zip(maps_in_use)
        .map(|(max, used)| max.saturating_sub(used + SPARE_MAPS) / MAPS_PER_WORKER);
    lower(&mut budget, maps_left, "vm.max_map_count");
    let kernel_max = [
        number("/proc/sys/kernel/threads-max"),
        number("/proc/sys/kernel/pid_max"),
    ]
    .into_iter()
    .flatten()
    .min();
    let on_system = read("/proc/loadavg").as_deref().and_then(loadavg_threads);
    let kernel_left = kernel_max
        .zip(on_system)
        .map(|(max, n)| max.saturating_sub(n));
    let nproc = read("/proc/self/limits").as_deref().and_then(max_processes);
    let own = read("/proc/self/status")
        .as_deref()
        .and_then(status_threads);
    let nproc_left = nproc.zip(own).map(|(max, n)| max.saturating_sub(n));
    for (threads_left, limit) in [
        (kernel_left, "kernel.threads-max / kernel.pid_max"),
        (nproc_left, "ulimit -u (RLIMIT_NPROC)"),
        (cgroup_pids_left(), "the cgroup's pids.max"),
    ] {
        let workers = threads_left.map(|t| t / THREADS_PER_WORKER);
        lower(&mut budget, workers, limit);
    }
    budget
}

fn lower(budget: &mut ThreadBudget, workers: Option<usize>, limit: &'static str) {
    if let Some(workers) = workers.filter(|&w| w < budget.workers) {
        *budget = ThreadBudget { workers, limit };
    }
}

/// The threads on the system: the total of the "running/total" field of
/// /proc/loadavg ("0.08 0.05 0.01 2/117 4242").
fn loadavg_threads(text: &str) -> Option<usize> {
    text.split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()
}

/// This process's threads: "Threads:" in /proc/self/status.
fn status_threads(text: &str) -> Option<usize> {
    let line = text.lines().find_map(|l| l.strip_prefix("Threads:"))?;
    line.trim().parse().ok()
}

/// The soft limit on the "Max processes" line of /proc/self/limits; `None`
/// when it is "unlimited".
fn max_processes(text: &str) -> Option<usize> {
    let line = text.lines().find_map(|l| l.strip_prefix("Max processes"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// The directory of this process's pids controller, from /proc/self/cgroup:
/// a cgroup v1 line "N:pids:/path", else the v2 line "0::/path".
fn cgroup_pids_dir(text: &str) -> Option<std::path::PathBuf> {
    let v1 = text.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let controllers = fields.nth(1)?;
        let path = fields.next()?;
        controllers
            .split(',')
            .any(|c| c == "pids")
            .then(|| format!("/sys/fs/cgroup/pids{path}"))
    });
    let v2 = || {
        let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        Some(format!("/sys/fs/cgroup{path}"))
    };
    v1.or_else(v2).map(std::path::PathBuf::from)
}

/// `pids.max` minus `pids.current` in this process's cgroup; `None` when
/// the limit is "max" or there is no pids controller to read.
fn cgroup_pids_left() -> Option<usize> {
    let dir = cgroup_pids_dir(&std::fs::read_to_string("/proc/self/cgroup").ok()?)?;
    let number = |file: &str| {
        let text = std::fs::read_to_string(dir.join(file)).ok()?;
        text.trim().parse::<usize>().ok()
    };
    Some(number("pids.max")?.saturating_sub(number("pids.current")?))
}

/// The requests in flight a blocking model may have: `max_in_flight`,
/// capped at `cap` (a model's own ceiling, with the reason; `None` for none)
/// and at the threads the OS lets this process start ([`thread_budget`]:
/// past some limits a started thread aborts the process). The reason comes
/// back with the number when it is capped, for [`say_capped`].
pub fn thread_limit(options: &Options, cap: Option<(usize, &str)>) -> (usize, Option<String>) {
    let asked = options.max_in_flight();
    let budget = thread_budget();
    match cap {
        Some((cap, why)) if cap < asked && cap <= budget.workers => (cap, Some(why.to_string())),
        _ if asked <= budget.workers => (asked, None),
        _ => {
            let why = format!("{} allows no more threads", budget.limit);
            (budget.workers.max(1), Some(why))
        }
    }
}

/// Says on stderr that a model runs fewer requests in flight than
/// `max_in_flight` asked for, and why. Slower is never wrong, but whoever
/// asked for C should learn that C was not what ran; the models say it once
/// per run.
pub fn say_capped(model: &str, asked: usize, running: usize, why: &str) {
    eprintln!(
        "fetch-{model}: {running} requests in flight at most, not the {asked} asked for: {why}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_limits_are_parsed() {
        assert_eq!(loadavg_threads("0.08 0.05 0.01 2/117 4242\n"), Some(117));
        let status = "Name:\tx\nThreads:\t12\nSigQ:\t0/1\n";
        assert_eq!(status_threads(status), Some(12));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             96362                96362                processes\n";
        assert_eq!(max_processes(limits), Some(96362));
        let unlimited =
            "Max processes             unlimited            unlimited            processes\n";
        assert_eq!(max_processes(unlimited), None);
        let v1 = "8:pids:/user.slice\n4:memory:/x\n0::/\n";
        assert_eq!(
            cgroup_pids_dir(v1),
            Some("/sys/fs/cgroup/pids/user.slice".into())
        );
        let v2 = "0::/system.slice/app.service\n";
        assert_eq!(
            cgroup_pids_dir(v2),
            Some("/sys/fs/cgroup/system.slice/app.service".into())
        );
    }

    #[test]
    fn the_budget_leaves_room_for_a_few_threads() {
        // This process runs, so its limits allow the threads it has; a
        // budget of zero here would cap every model to the fallback.
        let budget = thread_budget();
        assert!(budget.workers > 0, "{budget:?}");
    }

    #[test]
    fn io_errors_map_to_kinds() {
        let dns =
            io::Error::other("failed to lookup address information: Name or service not known");
        assert_eq!(io_kind(&dns), ErrorKind::Connect);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(io_kind(&refused), ErrorKind::Connect);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(io_kind(&reset), ErrorKind::Protocol);
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(io_kind(&eof), ErrorKind::Protocol);
        let tls = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert_eq!(io_kind(&tls), ErrorKind::Tls);
    }
}
