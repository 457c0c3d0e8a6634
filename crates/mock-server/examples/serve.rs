//! Runs the mock server in the foreground, for load tools such as `wrk`.
//!
//! ```text
//! cargo run --release -p mock-server --example serve -- --latency-ms 10
//! wrk -t2 -c50 -d5s --latency http://127.0.0.1:PORT/page/1
//! ```
//!
//! Prints the base URL on the first line of stdout (scripts read it from there),
//! then serves until the process is killed. If you copy this, note that it exits
//! only by signal: the server thread is never joined, which is fine for a process
//! that is about to die anyway.

use std::net::SocketAddr;
use std::time::Duration;

use mock_server::{Latency, MockConfig, MockServer};

const USAGE: &str = "usage: serve [--addr IP:PORT] [--latency-ms MS] [--latency-us US] \
[--body-bytes N] [--links N] [--keep-alive-idle-ms MS] [--tls]";

fn main() {
    match parse(std::env::args().skip(1)) {
        Ok(config) => match MockServer::start(config) {
            Ok(server) => {
                println!("{}", server.base_url());
                loop {
                    std::thread::park();
                }
            }
            Err(e) => {
                eprintln!("serve: cannot start: {e}");
                std::process::exit(1);
            }
        },
        Err(msg) => {
            eprintln!("serve: {msg}\n{USAGE}");
            std::process::exit(2);
        }
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<MockConfig, String> {
    let mut config = MockConfig::default();
    let mut latency = Duration::ZERO;
    while let Some(flag) = args.next() {
        if flag == "--tls" {
            config.tls = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = || format!("bad value for {flag}: {value:?}");
        match flag.as_str() {
            "--addr" => config.addr = value.parse::<SocketAddr>().map_err(|_| bad())?,
            "--latency-ms" => {
                let ms: f64 = value.parse().map_err(|_| bad())?;
                latency += Duration::try_from_secs_f64(ms / 1000.0).map_err(|_| bad())?;
            }
            "--latency-us" => {
                latency += Duration::from_micros(value.parse().map_err(|_| bad())?);
            }
            "--body-bytes" => config.body_bytes = value.parse().map_err(|_| bad())?,
            "--links" => config.links = value.parse().map_err(|_| bad())?,
            "--keep-alive-idle-ms" => {
                config.keep_alive_idle =
                    Some(Duration::from_millis(value.parse().map_err(|_| bad())?));
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    config.latency = Latency::Fixed(latency);
    Ok(config)
}
