//! `fetchlab mock`: the mock server in the foreground, for wrk, curl, another
//! client, or `fetchlab run` in a second terminal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use mock_server::{Fault, FaultSet, Faults, Latency, MockConfig, MockServer, RobotsTxt};

#[derive(Args, Debug)]
pub struct MockArgs {
    /// Address to listen on. Loopback by default; the mock is a test fixture,
    /// not a server to expose.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Latency before each response: the fixed value, or the median for
    /// lognormal, or the minimum for uniform (milliseconds, fractions allowed).
    #[arg(long, default_value_t = 0.0)]
    latency_ms: f64,
    /// Latency distribution (deterministic per page id and seed).
    #[arg(long, value_enum, default_value_t = Dist::Fixed)]
    latency_dist: Dist,
    /// Uniform: the maximum latency, in milliseconds.
    #[arg(long)]
    latency_max_ms: Option<f64>,
    /// Lognormal: sigma of the underlying normal (1.3 puts 1% of pages ~20x the median).
    #[arg(long, default_value_t = 1.0)]
    latency_sigma: f64,
    /// Page body size in bytes.
    #[arg(long, default_value_t = 2048)]
    body_bytes: usize,
    /// Links per page.
    #[arg(long, default_value_t = 10)]
    links: usize,
    /// Seed for latency distributions and fault rates.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Serve HTTPS with a self-signed certificate (its PEM is printed to stderr).
    #[arg(long)]
    tls: bool,
    /// Close keep-alive connections idle for this long (milliseconds).
    #[arg(long)]
    keep_alive_idle_ms: Option<u64>,
    #[command(flatten)]
    faults: FaultArgs,
    /// Retry-After sent with too_many (429) responses, in seconds.
    #[arg(long, default_value_t = 1)]
    retry_after_secs: u64,
    /// Interval between dripped body chunks, in milliseconds.
    #[arg(long, default_value_t = 50)]
    drip_ms: u64,
    /// Body size of oversized pages, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    oversized_bytes: u64,
    #[command(flatten)]
    robots: RobotsArgs,
}

/// What `/robots.txt` answers: at most one of these; without any, a 404
/// (no robots.txt, so a crawler may fetch everything).
#[derive(Args, Debug)]
#[group(multiple = false)]
struct RobotsArgs {
    /// Serve FILE's text as /robots.txt (200, text/plain).
    #[arg(long = "robots", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Serve TEXT as /robots.txt (200, text/plain); in a shell,
    /// $'User-agent: *\nDisallow: /private' puts each line on its own.
    #[arg(long = "robots-txt", value_name = "TEXT")]
    text: Option<String>,
    /// Answer /robots.txt with this status and a one-line body: 404 or 403
    /// mean every URL may be fetched, 500 or 503 none (RFC 9309).
    #[arg(long = "robots-status", value_name = "CODE",
          value_parser = clap::value_parser!(u16).range(200..=999))]
    status: Option<u16>,
    /// Never answer /robots.txt (RFC 9309: unreachable, so no URL may be fetched).
    #[arg(long = "robots-hang")]
    hang: bool,
}

impl RobotsArgs {
    fn robots(&self) -> Result<RobotsTxt> {
        Ok(if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--robots {}: cannot read it", path.display()))?;
            RobotsTxt::Text(text)
        } else if let Some(text) = &self.text {
            RobotsTxt::Text(text.clone())
        } else if let Some(code) = self.status {
            RobotsTxt::Status(code)
        } else if self.hang {
            RobotsTxt::Hang
        } else {
            RobotsTxt::NotFound
        })
    }
}

/// The latency distributions, for `mock` and `compare`. Each command says in
/// its help what `--latency-ms` means for each one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Dist {
    Fixed,
    Uniform,
    Lognormal,
}

/// `--fault NAME=SPEC`, repeatable: one definition, flattened into both `mock`
/// and `compare`, so the two commands take the same faults with the same
/// words and reject the same mistakes (at parse time, naming the flag).
#[derive(Args, Clone, Debug, Default)]
pub struct FaultArgs {
    /// A fault: NAME=P% (a seeded share of page ids) or NAME=ID,ID,... (those ids).
    /// Names: hang, server_error, not_found, too_many, fail_once, oversized,
    /// reset, drip (see crates/mock-server/README.md). Repeat the flag for
    /// several faults; a name given twice keeps the last.
    #[arg(long = "fault", value_name = "NAME=SPEC", value_parser = parse_fault)]
    faults: Vec<FaultSpec>,
}

/// One parsed `--fault` flag.
#[derive(Clone, Debug)]
struct FaultSpec {
    fault: Fault,
    set: FaultSet,
    /// As typed, for headers that echo the workload.
    spec: String,
}

/// Every fault, in mock-server's precedence order (the order it checks them).
const FAULTS: [Fault; 8] = [
    Fault::Hang,
    Fault::ServerError,
    Fault::NotFound,
    Fault::TooMany,
    Fault::FailOnce,
    Fault::Oversized,
    Fault::Reset,
    Fault::Drip,
];

impl FaultArgs {
    /// Sets the page set of every named fault in `faults`; the rest of
    /// `faults` (Retry-After, drip interval, oversized size) is left alone.
    pub fn apply(&self, faults: &mut Faults) {
        for spec in &self.faults {
            *slot(faults, spec.fault) = spec.set.clone();
        }
    }

    /// Whether any page can be hit by a fault (a `NAME=0%` flag selects none).
    pub fn any(&self) -> bool {
        self.faults
            .iter()
            .any(|s| s.set.rate > 0.0 || !s.set.ids.is_empty())
    }

    /// The flags as typed, comma-separated: `server_error=5%, hang=3`.
    pub fn describe(&self) -> String {
        let specs: Vec<&str> = self.faults.iter().map(|s| s.spec.as_str()).collect();
        specs.join(", ")
    }
}

/// The field of `faults` that holds `fault`'s page set.
fn slot(faults: &mut Faults, fault: Fault) -> &mut FaultSet {
    match fault {
        Fault::Hang => &mut faults.hang,
        Fault::ServerError => &mut faults.server_error,
        Fault::NotFound => &mut faults.not_found,
        Fault::TooMany => &mut faults.too_many,
        Fault::FailOnce => &mut faults.fail_once,
        Fault::Oversized => &mut faults.oversized,
        Fault::Reset => &mut faults.reset,
        Fault::Drip => &mut faults.drip,
    }
}

pub fn mock(args: &MockArgs) -> Result<()> {
    let config = config(args)?;
    if !config.addr.ip().is_loopback() {
        eprintln!(
            "fetchlab mock: warning: listening on {}, not loopback",
            config.addr
        );
    }
    let server = MockServer::start(config).context("starting the mock server")?;
    if let Some(pem) = server.root_cert_pem() {
        eprintln!("root certificate (trust it with `fetchlab run --root-cert FILE`):\n{pem}");
    }
    // The base URL alone on stdout, so scripts can read it with one `read`.
    println!("{}", server.base_url());
    eprintln!(
        "fetchlab mock: serving /page/{{id}}, /robots.txt and /__stats at {}; Ctrl-C to stop",
        server.base_url()
    );
    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("installing the Ctrl-C handler")?;
    // Blocks until Ctrl-C (or the handler is dropped, which cannot happen here).
    let _ = rx.recv();
    eprintln!(
        "fetchlab mock: stopping; stats: {}",
        serde_json::to_string(&server.stats())?
    );
    server.shutdown();
    Ok(())
}

fn config(args: &MockArgs) -> Result<MockConfig> {
    let ms = |v: f64, flag: &str| -> Result<Duration> {
        if !v.is_finite() || v < 0.0 {
            bail!("--{flag} must be a non-negative number of milliseconds");
        }
        Ok(Duration::from_secs_f64(v / 1000.0))
    };
    let base = ms(args.latency_ms, "latency-ms")?;
    let latency = match args.latency_dist {
        Dist::Fixed => Latency::Fixed(base),
        Dist::Uniform => {
            let max = ms(
                args.latency_max_ms
                    .context("--latency-dist uniform needs --latency-max-ms")?,
                "latency-max-ms",
            )?;
            if max < base {
                bail!("--latency-max-ms must be at least --latency-ms");
            }
            Latency::Uniform { min: base, max }
        }
        Dist::Lognormal => {
            if !(args.latency_sigma.is_finite() && args.latency_sigma >= 0.0) {
                bail!("--latency-sigma must be a non-negative number");
            }
            Latency::LogNormal {
                median: base,
                sigma: args.latency_sigma,
            }
        }
    };
    let mut faults = Faults {
        retry_after_secs: args.retry_after_secs,
        drip_interval: Duration::from_millis(args.drip_ms),
        oversized_bytes: args.oversized_bytes,
        ..Faults::default()
    };
    args.faults.apply(&mut faults);
    Ok(MockConfig {
        addr: args.addr,
        latency,
        body_bytes: args.body_bytes,
        links: args.links,
        faults,
        keep_alive_idle: args.keep_alive_idle_ms.map(Duration::from_millis),
        tls: args.tls,
        seed: args.seed,
        robots: args.robots.robots()?,
    })
}

/// `hang=1.5%` or `not_found=3,7,9`. The error is a bare message: clap
/// prefixes it with the flag and the value.
fn parse_fault(spec: &str) -> Result<FaultSpec, String> {
    let Some((name, value)) = spec.split_once('=') else {
        return Err("expected NAME=P% or NAME=ID,ID,...".to_string());
    };
    let name = name.trim();
    let Some(fault) = FAULTS.into_iter().find(|f| f.name() == name) else {
        let names: Vec<&str> = FAULTS.iter().map(|f| f.name()).collect();
        return Err(format!(
            "unknown fault {name:?}; faults: {}",
            names.join(", ")
        ));
    };
    let value = value.trim();
    let set = if let Some(pct) = value.strip_suffix('%') {
        let pct: f64 = pct
            .trim()
            .parse()
            .map_err(|_| format!("{pct:?} is not a percentage"))?;
        if !(0.0..=100.0).contains(&pct) {
            return Err("a percentage is between 0 and 100".to_string());
        }
        FaultSet::rate(pct / 100.0)
    } else {
        let ids = value
            .split(',')
            .map(|id| {
                id.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{id:?} is not a page id (or end it with % for a rate)"))
            })
            .collect::<Result<Vec<u64>, String>>()?;
        FaultSet::ids(ids)
    };
    Ok(FaultSpec {
        fault,
        set,
        spec: format!("{name}={value}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs() {
        let spec = parse_fault("hang=2.5%").unwrap();
        assert_eq!(spec.fault, Fault::Hang);
        assert!((spec.set.rate - 0.025).abs() < 1e-12);
        let spec = parse_fault("not_found=3, 7,9").unwrap();
        assert_eq!(spec.fault, Fault::NotFound);
        assert_eq!(spec.set.ids.into_iter().collect::<Vec<_>>(), [3, 7, 9]);
        assert!(parse_fault("hang").is_err());
        assert!(parse_fault("hang=x").is_err());
        assert!(parse_fault("hang=120%").is_err());
        let err = parse_fault("status500=1%").unwrap_err();
        assert!(err.contains("server_error"), "{err}");
    }

    #[test]
    fn every_fault_has_its_own_slot() {
        // A fault parsed into the wrong field of `Faults` would make the
        // server send a different fault for the page than the one named.
        for fault in FAULTS {
            let args = FaultArgs {
                faults: vec![parse_fault(&format!("{}=1", fault.name())).unwrap()],
            };
            let mut faults = Faults::default();
            args.apply(&mut faults);
            let config = MockConfig {
                faults,
                ..MockConfig::default()
            };
            assert_eq!(config.fault_for(1), Some(fault));
            assert_eq!(config.fault_for(2), None);
        }
    }
}
