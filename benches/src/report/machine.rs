//! Naming the machine and the day a result belongs to.
//!
//! A host name says nothing in CI (every runner is called something like
//! `runner-1234`), so the default name is what matters for the numbers: the
//! core count and the CPU model, e.g. `2-core-AMD-EPYC`.

use std::fs;
use std::time::{SystemTime, UNIX_EPOCH};

/// What the report says about the machine it ran on.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub cores: usize,
    pub cpu: Option<String>,
    pub memory_gib: Option<f64>,
    pub kernel: Option<String>,
    pub rustc: Option<String>,
}

impl Machine {
    /// Reads /proc and asks `rustc --version`; whatever cannot be read is
    /// left out of the report rather than guessed.
    pub fn detect() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu: cpu_model(&cpuinfo),
            memory_gib: mem_total_kib(&meminfo).map(|kib| kib as f64 / (1024.0 * 1024.0)),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_string()),
            rustc: std::process::Command::new("rustc")
                .arg("--version")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()),
        }
    }

    /// The default directory-name part: `<cores>-core-<cpu model>`.
    pub fn slug(&self) -> String {
        let cpu = self
            .cpu
            .as_deref()
            .map(short_cpu)
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        slugify(&format!("{}-core-{cpu}", self.cores))
    }
}

/// The first `model name` in /proc/cpuinfo.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == "model name")
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Drops the marketing words and the clock from a CPU model name:
/// "Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz" becomes "Intel Xeon E5-2686 v4",
/// "AMD EPYC 7763 64-Core Processor" becomes "AMD EPYC 7763".
pub fn short_cpu(model: &str) -> String {
    let model = model.split(" @ ").next().unwrap_or(model);
    let model = model
        .replace("(R)", " ")
        .replace("(r)", " ")
        .replace("(TM)", " ")
        .replace("(tm)", " ");
    model
        .split_whitespace()
        .filter(|w| {
            let lower = w.to_ascii_lowercase();
            lower != "cpu" && lower != "processor" && !lower.ends_with("-core")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Letters, digits, `.` and `_` kept; every other run becomes one `-`.
pub fn slugify(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Today's date in UTC as `YYYY-MM-DD`.
pub fn today_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to a
/// proleptic Gregorian date (no date crate needed for one line of output).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Whether `date` is a plausible `YYYY-MM-DD`.
pub fn is_date(date: &str) -> bool {
    let b = date.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
        && (1..=12).contains(&date[5..7].parse::<u32>().unwrap_or(0))
        && (1..=31).contains(&date[8..10].parse::<u32>().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_names_shorten_to_the_model() {
        assert_eq!(short_cpu("AMD EPYC"), "AMD EPYC");
        assert_eq!(
            short_cpu("AMD EPYC 7763 64-Core Processor"),
            "AMD EPYC 7763"
        );
        assert_eq!(
            short_cpu("Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz"),
            "Intel Xeon E5-2686 v4"
        );
    }

    #[test]
    fn slug_names_cores_and_cpu() {
        let m = Machine {
            cores: 2,
            cpu: cpu_model("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t: fpu\n"),
            ..Machine::default()
        };
        assert_eq!(m.slug(), "2-core-AMD-EPYC");
        assert_eq!(slugify("  a/b (c)  "), "a-b-c");
    }

    #[test]
    fn dates_from_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert!(is_date(&today_utc()));
        assert!(is_date("2026-07-31"));
        assert!(!is_date("2026-7-31"));
        assert!(!is_date("2026-13-01"));
        assert!(!is_date("../../etc"));
    }

    #[test]
    fn memory_from_meminfo() {
        assert_eq!(
            mem_total_kib("MemTotal:       24630056 kB\nMemFree: 1 kB\n"),
            Some(24_630_056)
        );
    }
}
