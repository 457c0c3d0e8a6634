//! `fetchlab mock`: the mock server in the foreground, for wrk, curl, another
//! client, or `fetchlab run` in a second terminal.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use mock_server::{FaultSet, Faults, Latency, MockConfig, MockServer};

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
    /// A fault: NAME=P% (a seeded share of page ids) or NAME=ID,ID,... (those ids).
    /// Names: server_error, not_found, too_many, fail_once, hang, reset, drip,
    /// oversized. Repeat the flag for several faults.
    #[arg(long = "fault", value_name = "NAME=SPEC")]
    faults: Vec<String>,
    /// Retry-After sent with too_many (429) responses, in seconds.
    #[arg(long, default_value_t = 1)]
    retry_after_secs: u64,
    /// Interval between dripped body chunks, in milliseconds.
    #[arg(long, default_value_t = 50)]
    drip_ms: u64,
    /// Body size of oversized pages, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    oversized_bytes: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Dist {
    Fixed,
    Uniform,
    Lognormal,
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
        "fetchlab mock: serving /page/{{id}} and /__stats at {}; Ctrl-C to stop",
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
    for spec in &args.faults {
        let (name, set) = parse_fault(spec)?;
        let slot = match name {
            "server_error" => &mut faults.server_error,
            "not_found" => &mut faults.not_found,
            "too_many" => &mut faults.too_many,
            "fail_once" => &mut faults.fail_once,
            "hang" => &mut faults.hang,
            "reset" => &mut faults.reset,
            "drip" => &mut faults.drip,
            "oversized" => &mut faults.oversized,
            other => bail!(
                "unknown fault {other:?}; faults: server_error, not_found, too_many, \
                 fail_once, hang, reset, drip, oversized"
            ),
        };
        *slot = set;
    }
    Ok(MockConfig {
        addr: args.addr,
        latency,
        body_bytes: args.body_bytes,
        links: args.links,
        faults,
        keep_alive_idle: args.keep_alive_idle_ms.map(Duration::from_millis),
        tls: args.tls,
        seed: args.seed,
    })
}

/// `hang=1.5%` or `not_found=3,7,9`.
fn parse_fault(spec: &str) -> Result<(&str, FaultSet)> {
    let Some((name, value)) = spec.split_once('=') else {
        bail!("--fault {spec:?}: expected NAME=P% or NAME=ID,ID,...");
    };
    let value = value.trim();
    if let Some(pct) = value.strip_suffix('%') {
        let pct: f64 = pct
            .trim()
            .parse()
            .with_context(|| format!("--fault {spec:?}: {pct:?} is not a percentage"))?;
        if !(0.0..=100.0).contains(&pct) {
            bail!("--fault {spec:?}: a percentage is between 0 and 100");
        }
        return Ok((name.trim(), FaultSet::rate(pct / 100.0)));
    }
    let ids = value
        .split(',')
        .map(|id| {
            id.trim()
                .parse::<u64>()
                .with_context(|| format!("--fault {spec:?}: {id:?} is not a page id"))
        })
        .collect::<Result<Vec<u64>>>()?;
    Ok((name.trim(), FaultSet::ids(ids)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs() {
        let (name, set) = parse_fault("hang=2.5%").unwrap();
        assert_eq!(name, "hang");
        assert!((set.rate - 0.025).abs() < 1e-12);
        let (name, set) = parse_fault("not_found=3, 7,9").unwrap();
        assert_eq!(name, "not_found");
        assert_eq!(set.ids.into_iter().collect::<Vec<_>>(), [3, 7, 9]);
        assert!(parse_fault("hang").is_err());
        assert!(parse_fault("hang=x").is_err());
        assert!(parse_fault("hang=120%").is_err());
    }
}
