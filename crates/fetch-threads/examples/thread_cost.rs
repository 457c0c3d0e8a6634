//! What N idle threads cost this process: spawn time, address space,
//! resident memory and memory mappings, next to the kernel's limits.
//!
//! ```text
//! cargo run --release -p fetch-threads --example thread-cost -- 1000
//! cargo run --release -p fetch-threads --example thread-cost -- 10000
//! ```
//!
//! The threads only sleep on a lock, so this measures the floor: a worker
//! in `fetch_all` also touches stack in ureq and the parser. Linux only (it
//! reads `/proc`). Do not push N to the limits on a shared machine: near
//! `vm.max_map_count`, std aborts the whole process when a thread that did
//! start cannot map its signal stack, and spawn failures hit every process
//! of the same user.

use std::error::Error;
use std::sync::RwLock;
use std::thread;
use std::time::Instant;

fn main() -> Result<(), Box<dyn Error>> {
    let n: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 1000,
    };
    for (name, path) in [
        ("vm.max_map_count", "/proc/sys/vm/max_map_count"),
        ("kernel.threads-max", "/proc/sys/kernel/threads-max"),
        ("kernel.pid_max", "/proc/sys/kernel/pid_max"),
    ] {
        let value = std::fs::read_to_string(path).unwrap_or_default();
        println!("{name} = {}", value.trim());
    }

    let before = footprint();
    // Every thread blocks on this lock until `closed` drops, so all of them
    // are alive when the footprint is read.
    let gate = RwLock::new(());
    let started = Instant::now();
    thread::scope(|scope| {
        let closed = gate.write();
        let mut spawned = 0;
        for _ in 0..n {
            let gate = &gate;
            let result = thread::Builder::new().spawn_scoped(scope, move || {
                drop(gate.read());
            });
            if let Err(e) = result {
                println!("spawn {spawned} failed: {e}");
                break;
            }
            spawned += 1;
        }
        let spawn_time = started.elapsed();
        let after = footprint();
        println!(
            "{spawned} threads: spawned in {:.1} ms; address space +{} MiB, \
             resident +{} MiB, memory maps +{}",
            spawn_time.as_secs_f64() * 1e3,
            (after.0 - before.0) / 1024,
            (after.1 - before.1) / 1024,
            after.2 - before.2,
        );
        drop(closed);
    });
    println!(
        "spawn and join: {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

/// (VmSize KiB, VmRSS KiB, number of mappings) of this process.
fn footprint() -> (u64, u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    (kib("VmSize:"), kib("VmRSS:"), maps.lines().count() as u64)
}
