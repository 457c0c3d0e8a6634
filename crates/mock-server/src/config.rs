//! What the server simulates: latency distributions and fault selection.
//!
//! Everything here is a pure function of `(seed, page id)`, so a test can ask
//! [`MockConfig::latency_for`] or [`MockConfig::fault_for`] what the server will do
//! for a page before it requests it, and two runs with the same seed see the same
//! world. That determinism is why we hash instead of drawing from a shared RNG:
//! a shared RNG would make page 7's latency depend on how many pages were served
//! before it, i.e. on the client's scheduling, which is the very thing under test.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// How the server is set up. Every field has a default; override with struct update
/// syntax: `MockConfig { latency: Latency::Fixed(ms(20)), ..Default::default() }`.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Where to listen. Default `127.0.0.1:0` (the OS picks a free port).
    pub addr: SocketAddr,
    /// Delay before the response headers of every request (except `hang`).
    pub latency: Latency,
    /// The HTML page is padded to exactly this many bytes (or left at its natural
    /// size when that is larger). Default 2048.
    pub body_bytes: usize,
    /// Number of `<a href>` links in each page. Default 10.
    pub links: usize,
    /// Which page ids misbehave, and how. Default: none.
    pub faults: Faults,
    /// `Some(d)`: a connection that has no request for `d` is closed by the server.
    pub keep_alive_idle: Option<Duration>,
    /// Serve HTTPS with a self-signed certificate made at start.
    pub tls: bool,
    /// Seeds the latency distributions and the fault rates.
    pub seed: u64,
    /// What `GET /robots.txt` answers. Default: 404, as for any unknown path.
    pub robots: RobotsTxt,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            latency: Latency::Fixed(Duration::ZERO),
            body_bytes: 2048,
            links: 10,
            faults: Faults::default(),
            keep_alive_idle: None,
            tls: false,
            seed: 0,
            robots: RobotsTxt::default(),
        }
    }
}

impl MockConfig {
    /// The latency the server applies to `/page/{id}` (without query overrides).
    pub fn latency_for(&self, id: u64) -> Duration {
        self.latency.sample(self.seed, id)
    }

    /// The configured fault for page `id`, if any (without query overrides).
    /// When several fault sets select the same id, the first in [`Fault`]'s
    /// declaration order wins, which is also the order the server checks them.
    pub fn fault_for(&self, id: u64) -> Option<Fault> {
        let f = &self.faults;
        let seed = self.seed;
        [
            (Fault::Hang, &f.hang),
            (Fault::ServerError, &f.server_error),
            (Fault::NotFound, &f.not_found),
            (Fault::TooMany, &f.too_many),
            (Fault::FailOnce, &f.fail_once),
            (Fault::Oversized, &f.oversized),
            (Fault::Reset, &f.reset),
            (Fault::Drip, &f.drip),
        ]
        .into_iter()
        .find(|(fault, set)| set.contains(seed, fault.name(), id))
        .map(|(fault, _)| fault)
    }
}

/// What the server answers to `GET /robots.txt`: the file, or one of the
/// ways fetching it can go wrong, for testing a crawler against RFC 9309's
/// rules (section 2.3.1: a 4xx means every URL may be fetched, a 5xx or no
/// answer that none may). Served after the latency of its path, like any
/// path that is not a page, and counted in [`Stats::robots_requests`](crate::Stats::robots_requests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RobotsTxt {
    /// 404 Not Found, as for any unknown path: no robots.txt.
    #[default]
    NotFound,
    /// 200 with this text as `text/plain; charset=utf-8`.
    Text(String),
    /// This status with a one-line text body (`403`, `429`, `500`, ...).
    /// A code that cannot be a final HTTP status (not 200-999) is sent as 500.
    Status(u16),
    /// 301 with this `Location` (sent as given; absolute for another server).
    Redirect(String),
    /// Never answers, like the `hang` fault.
    Hang,
}

/// The delay the server waits before sending response headers.
#[derive(Clone, Debug)]
pub enum Latency {
    /// The same delay for every page.
    Fixed(Duration),
    /// Uniform in `[min, max]`, drawn per page id.
    Uniform { min: Duration, max: Duration },
    /// Log-normal with the given median, drawn per page id: `median * exp(sigma * Z)`
    /// with `Z` standard normal. A long right tail, like real servers have.
    LogNormal { median: Duration, sigma: f64 },
}

/// Upper bound for any sampled latency: a log-normal tail (or a silly sigma) must
/// not turn into a sleep longer than any test or benchmark would wait for.
const MAX_LATENCY: Duration = Duration::from_secs(3600);

impl Latency {
    /// The latency of page `id` under `seed`: the same inputs always give the same value.
    pub fn sample(&self, seed: u64, id: u64) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => {
                let (lo, hi) = if min <= max { (min, max) } else { (max, min) };
                lo + (hi - lo).mul_f64(unit(seed, SALT_LATENCY_A, id))
            }
            Latency::LogNormal { median, sigma } => {
                // Box-Muller: two independent uniforms give one standard normal.
                // `1 - u` keeps the logarithm's argument in (0, 1].
                let u1 = 1.0 - unit(seed, SALT_LATENCY_A, id);
                let u2 = unit(seed, SALT_LATENCY_B, id);
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                let secs = median.as_secs_f64() * (sigma * z).exp();
                Duration::try_from_secs_f64(secs)
                    .unwrap_or(MAX_LATENCY)
                    .min(MAX_LATENCY)
            }
        }
    }
}

/// A set of page ids selected for one fault: listed explicitly, drawn at a rate, or both.
#[derive(Clone, Debug, Default)]
pub struct FaultSet {
    /// These ids are always selected.
    pub ids: BTreeSet<u64>,
    /// Any other id is selected with this probability, decided by a hash of
    /// `(seed, fault name, id)` so the choice is deterministic.
    pub rate: f64,
}

impl FaultSet {
    /// Exactly these ids.
    pub fn ids(ids: impl IntoIterator<Item = u64>) -> FaultSet {
        FaultSet {
            ids: ids.into_iter().collect(),
            rate: 0.0,
        }
    }

    /// A deterministic fraction `rate` (0.0..=1.0) of all ids.
    pub fn rate(rate: f64) -> FaultSet {
        FaultSet {
            ids: BTreeSet::new(),
            rate,
        }
    }

    /// Whether `id` is selected. `name` is the fault's name (see [`Fault::name`]);
    /// it is part of the hash so that two faults at the same rate pick different ids.
    pub fn contains(&self, seed: u64, name: &str, id: u64) -> bool {
        self.ids.contains(&id) || (self.rate > 0.0 && unit(seed, fnv1a(name), id) < self.rate)
    }
}

/// The faults the server injects, each selecting page ids with a [`FaultSet`].
/// See the crate README for exactly what each one sends.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Respond 500.
    pub server_error: FaultSet,
    /// Respond 404.
    pub not_found: FaultSet,
    /// Respond 429 with `Retry-After: retry_after_secs`.
    pub too_many: FaultSet,
    /// The `Retry-After` value for `too_many`. Default 1.
    pub retry_after_secs: u64,
    /// The first request for the id gets 503, later ones succeed.
    pub fail_once: FaultSet,
    /// Never answer; the request is held until the client goes away or the server stops.
    pub hang: FaultSet,
    /// Send the headers and part of the body, then abort the connection.
    pub reset: FaultSet,
    /// Send the body in 64-byte chunks, `drip_interval` apart.
    pub drip: FaultSet,
    /// Default 50 ms.
    pub drip_interval: Duration,
    /// Send an `oversized_bytes` body (chunked, generated lazily).
    pub oversized: FaultSet,
    /// Default 64 MiB.
    pub oversized_bytes: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            server_error: FaultSet::default(),
            not_found: FaultSet::default(),
            too_many: FaultSet::default(),
            retry_after_secs: 1,
            fail_once: FaultSet::default(),
            hang: FaultSet::default(),
            reset: FaultSet::default(),
            drip: FaultSet::default(),
            drip_interval: Duration::from_millis(50),
            oversized: FaultSet::default(),
            oversized_bytes: 64 * 1024 * 1024,
        }
    }
}

/// One configured fault, as reported by [`MockConfig::fault_for`]. The declaration
/// order is the precedence order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    Hang,
    ServerError,
    NotFound,
    TooMany,
    FailOnce,
    Oversized,
    Reset,
    Drip,
}

impl Fault {
    /// The name hashed into the rate selection; it matches the [`Faults`] field name.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Hang => "hang",
            Fault::ServerError => "server_error",
            Fault::NotFound => "not_found",
            Fault::TooMany => "too_many",
            Fault::FailOnce => "fail_once",
            Fault::Reset => "reset",
            Fault::Oversized => "oversized",
            Fault::Drip => "drip",
        }
    }
}

// Salts keep the latency draws independent of each other and of the fault draws
// (which are salted with the hash of the fault's name).
const SALT_LATENCY_A: u64 = 0x6c61_7465_6e63_7941;
const SALT_LATENCY_B: u64 = 0x6c61_7465_6e63_7942;

/// SplitMix64's finaliser: a cheap, well-mixed 64-bit hash. Good enough for
/// simulation (not for anything adversarial) and needs no dependency.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A deterministic uniform number in `[0, 1)` for `(seed, salt, id)`.
fn unit(seed: u64, salt: u64, id: u64) -> f64 {
    let h = mix(mix(mix(seed) ^ salt) ^ id);
    // The top 53 bits fill an f64 mantissa exactly, so every value is representable.
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// FNV-1a, to turn a fault name into a salt (and a path into a pseudo page id).
pub(crate) fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_deterministic_and_in_range() {
        let l = Latency::Uniform {
            min: Duration::from_millis(10),
            max: Duration::from_millis(20),
        };
        for id in 0..1000 {
            let d = l.sample(42, id);
            assert_eq!(d, l.sample(42, id));
            assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(20));
        }
        // A different seed gives a different world.
        assert!((0..100).any(|id| l.sample(1, id) != l.sample(2, id)));
    }

    #[test]
    fn lognormal_median_is_close() {
        let l = Latency::LogNormal {
            median: Duration::from_millis(10),
            sigma: 0.5,
        };
        let mut v: Vec<Duration> = (0..10_001).map(|id| l.sample(7, id)).collect();
        v.sort();
        let median = v[v.len() / 2].as_secs_f64();
        assert!((median - 0.010).abs() < 0.0005, "median {median}");
    }

    #[test]
    fn fault_rate_is_roughly_the_rate_and_names_differ() {
        let set = FaultSet::rate(0.1);
        let a: Vec<u64> = (0..10_000).filter(|&id| set.contains(0, "a", id)).collect();
        let b: Vec<u64> = (0..10_000).filter(|&id| set.contains(0, "b", id)).collect();
        assert!((900..1100).contains(&a.len()), "{}", a.len());
        assert_ne!(a, b);
        assert!(FaultSet::ids([3]).contains(0, "a", 3));
        assert!(!FaultSet::ids([3]).contains(0, "a", 4));
    }

    #[test]
    fn fault_precedence() {
        let cfg = MockConfig {
            faults: Faults {
                drip: FaultSet::ids([1, 2]),
                hang: FaultSet::ids([2]),
                ..Faults::default()
            },
            ..MockConfig::default()
        };
        assert_eq!(cfg.fault_for(1), Some(Fault::Drip));
        assert_eq!(cfg.fault_for(2), Some(Fault::Hang));
        assert_eq!(cfg.fault_for(3), None);
    }
}
