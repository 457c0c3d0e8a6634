//! `bench-report`: turns fetchlab's measurements into a results directory.
//!
//! ```sh
//! cargo bench -p fetchlab-benches                      # criterion → target/criterion
//! cargo run --release -p fetchlab-benches --bin bench-report -- \
//!     [--criterion target/criterion] [--measurements target/measurements] \
//!     [--out docs/results] [--machine NAME] [--date YYYY-MM-DD] [--command TEXT]...
//! ```
//!
//! It writes `<out>/<date>-<machine>/`:
//!
//! - `criterion.csv`: one line per criterion benchmark (`new/` results only):
//!   `group,model,parameter,pages,median_ns,mean_ns,ci_low_ns,ci_high_ns,
//!   pages_per_s,pages_per_s_low,pages_per_s_high`, where the interval is the
//!   confidence interval of the median and pages/s = pages ÷ median × 1e9;
//! - `footprint.csv`, `ceiling.csv`, `peer.csv`, `rss_scaling.csv` (or
//!   `footprint-rss-scaling.csv`, as `scripts/footprint --rss-scaling`
//!   names it): copies of those in `--measurements`, each optional, read by
//!   column name;
//! - `summary.md`: machine, date, the commands, one table per criterion
//!   group, one per measurement file, and what the numbers do not show;
//! - `latency_bound.svg`, `footprint_rss.svg`, `ceiling_share.svg`: the plots
//!   whose data is there.
//!
//! A missing input drops its section and plot, never the whole report; files
//! of an earlier report in the same directory that this run did not produce
//! are removed, so the directory never mixes two runs. It prints the
//! directory it wrote.
//!
//! The machine name defaults to the core count and CPU model
//! (`2-core-AMD-EPYC`): a host name means nothing on a CI runner.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;

use fetchlab_benches::report::criterion::{self as crit, BenchRow};
use fetchlab_benches::report::machine::{self, Machine};
use fetchlab_benches::report::measurements::{self, Table};
use fetchlab_benches::report::{plots, summary};

#[derive(Parser, Debug)]
#[command(
    about = "Writes docs/results/<date>-<machine>/ from criterion's results and the scripts' CSVs"
)]
struct Args {
    /// criterion's output directory [default: $CRITERION_HOME, else
    /// $CARGO_TARGET_DIR/criterion, else the workspace's target/criterion]
    #[arg(long)]
    criterion: Option<PathBuf>,
    /// Where the scripts put footprint.csv, ceiling.csv, peer.csv and
    /// rss_scaling.csv (or footprint-rss-scaling.csv) [default: the
    /// workspace's target/measurements]
    #[arg(long)]
    measurements: Option<PathBuf>,
    /// The results directory [default: the workspace's docs/results]
    #[arg(long)]
    out: Option<PathBuf>,
    /// The machine's name in the directory name [default: cores and CPU
    /// model, e.g. 2-core-AMD-EPYC]
    #[arg(long)]
    machine: Option<String>,
    /// The date in the directory name, YYYY-MM-DD [default: today, UTC]
    #[arg(long)]
    date: Option<String>,
    /// The criterion group whose parameter is the concurrency, for
    /// latency_bound.svg [default: latency_10ms, else the first latency_* group]
    #[arg(long)]
    latency_group: Option<String>,
    /// The latency of that group in ms [default: from its name, `_10ms`]
    #[arg(long)]
    latency_ms: Option<f64>,
    /// The peer.csv program that is the article's [default: the first whose
    /// name contains "article", else "python", "asyncio" or "aiohttp"]
    #[arg(long)]
    article_program: Option<String>,
    /// A command that made the data, for summary.md (repeat for several;
    /// default: the standard ones)
    #[arg(long = "command", value_name = "TEXT")]
    commands: Vec<String>,
}

/// The workspace root, for defaults that do not depend on where the
/// command is run from.
fn workspace() -> PathBuf {
    let benches = Path::new(env!("CARGO_MANIFEST_DIR"));
    benches.parent().unwrap_or(benches).to_path_buf()
}

/// Where cargo puts its output, as criterion finds it.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// The plots, in the order they are drawn.
const PLOTS: [&str; 3] = [
    "latency_bound.svg",
    "footprint_rss.svg",
    "ceiling_share.svg",
];

fn main() -> Result<()> {
    let args = Args::parse();
    let criterion_dir = args.criterion.clone().unwrap_or_else(|| {
        std::env::var_os("CRITERION_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| target_dir().join("criterion"))
    });
    let measurements_dir = args
        .measurements
        .clone()
        .unwrap_or_else(|| target_dir().join("measurements"));
    let out_root = args
        .out
        .clone()
        .unwrap_or_else(|| workspace().join("docs/results"));

    let host = Machine::detect();
    // The name becomes a directory name: slugify it whatever its source.
    let machine_name = machine::slugify(args.machine.as_deref().unwrap_or(&host.slug()));
    if machine_name.is_empty() {
        bail!("--machine must contain letters or digits");
    }
    let date = args.date.clone().unwrap_or_else(machine::today_utc);
    if !machine::is_date(&date) {
        bail!("--date must be YYYY-MM-DD, not {date:?}");
    }

    let bench = if criterion_dir.is_dir() {
        crit::read_dir(&criterion_dir)?
    } else {
        eprintln!(
            "bench-report: no criterion results in {} (run `cargo bench -p fetchlab-benches`)",
            criterion_dir.display()
        );
        Vec::new()
    };
    // Each measurement file with the name it was found under.
    let mut found: Vec<Option<(&str, Table)>> = Vec::new();
    for file in &measurements::FILES {
        let table = file.read(&measurements_dir)?;
        if let Some((name, t)) = &table {
            let missing = t.missing(file.columns);
            if !missing.is_empty() {
                eprintln!("bench-report: {name} has no column {}", missing.join(", "));
            }
        }
        found.push(table);
    }
    let table = |i: usize| found[i].as_ref().map(|(_, t)| t);
    let (footprint, ceiling, peer, rss_scaling) = (table(0), table(1), table(2), table(3));
    if bench.is_empty() && found.iter().all(Option::is_none) {
        bail!(
            "nothing to report: no criterion results in {} and no CSV in {}",
            criterion_dir.display(),
            measurements_dir.display()
        );
    }

    let dir = out_root.join(format!("{date}-{machine_name}"));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written: Vec<&str> = Vec::new();

    if !bench.is_empty() {
        write(&dir, "criterion.csv", &crit::to_csv(&bench)?)?;
        written.push("criterion.csv");
    }
    // The raw data goes beside the summary as the scripts wrote it.
    for (name, _) in found.iter().flatten() {
        fs::copy(measurements_dir.join(name), dir.join(name))
            .with_context(|| format!("copying {name}"))?;
        written.push(name);
    }

    let latency = latency_group(&args, &bench);
    if let Some((group, latency_s)) = &latency {
        match plots::latency_bound(&dir.join(PLOTS[0]), group, &bench, *latency_s) {
            Ok(()) => written.push(PLOTS[0]),
            Err(e) => eprintln!("bench-report: no {}: {e:#}", PLOTS[0]),
        }
    }
    // `match`, not a let chain: the workspace still builds with Rust 1.85.
    let drew = match footprint {
        Some(t) => plots::footprint_rss(&dir.join(PLOTS[1]), t)?,
        None => false,
    };
    if drew {
        written.push(PLOTS[1]);
    }
    let drew = match ceiling {
        Some(t) => plots::ceiling_share(&dir.join(PLOTS[2]), &measurements::ceiling_shares(t))?,
        None => false,
    };
    if drew {
        written.push(PLOTS[2]);
    }

    let article = peer.and_then(|t| {
        let found = measurements::article_program(t, args.article_program.as_deref());
        if found.is_none() {
            eprintln!(
                "bench-report: peer.csv has no {}; comparing with the article's published rate",
                args.article_program
                    .as_deref()
                    .map_or("program that looks like the article's".to_string(), |p| {
                        format!("program {p:?}")
                    })
            );
        }
        found
    });
    let commands = commands(
        &args,
        (!bench.is_empty()).then_some(criterion_dir.as_path()),
        &measurements_dir,
        &found,
    );
    let md = summary::render(&summary::Inputs {
        date: &date,
        machine_name: &machine_name,
        machine: &host,
        commands: &commands,
        bench: &bench,
        latency: latency.as_ref().map(|(g, l)| (g.as_str(), *l)),
        footprint,
        ceiling,
        peer,
        rss_scaling,
        article: article.as_deref(),
        plots: &written,
    });
    write(&dir, "summary.md", md.as_bytes())?;
    written.push("summary.md");

    // Files of an earlier report here that this run did not make would
    // describe different data; only this program's own file names go.
    let ours = ["criterion.csv"]
        .into_iter()
        .chain(
            measurements::FILES
                .iter()
                .flat_map(|f| std::iter::once(f.name).chain(f.also.iter().copied())),
        )
        .chain(PLOTS);
    for stale in ours.filter(|f| !written.contains(f)) {
        let path = dir.join(stale);
        if path.exists() {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }

    println!("{}", dir.display());
    Ok(())
}

fn write(dir: &Path, file: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(file);
    fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// The group for latency_bound.svg and its latency in seconds.
fn latency_group(args: &Args, bench: &[BenchRow]) -> Option<(String, f64)> {
    let has = |g: &str| bench.iter().any(|r| r.group == g);
    let group = match &args.latency_group {
        Some(g) if has(g) => g.clone(),
        Some(g) => {
            eprintln!("bench-report: no criterion group {g:?}; no latency_bound.svg");
            return None;
        }
        None if has("latency_10ms") => "latency_10ms".to_string(),
        None => bench
            .iter()
            .map(|r| &r.group)
            .find(|g| g.starts_with("latency_"))?
            .clone(),
    };
    let latency = match args.latency_ms {
        Some(ms) if ms > 0.0 => ms / 1e3,
        Some(_) => {
            eprintln!("bench-report: --latency-ms must be positive; no latency_bound.svg");
            return None;
        }
        None => match crit::latency_from_group(&group) {
            Some(s) => s,
            None => {
                eprintln!(
                    "bench-report: no latency in the name {group:?}; pass --latency-ms for latency_bound.svg"
                );
                return None;
            }
        },
    };
    Some((group, latency))
}

/// The commands for summary.md: those given, or the standard ones, then
/// this program's own invocation.
fn commands(
    args: &Args,
    criterion: Option<&Path>,
    measurements: &Path,
    found: &[Option<(&str, Table)>],
) -> Vec<String> {
    let mut out = args.commands.clone();
    if out.is_empty() {
        if let Some(criterion) = criterion {
            out.push(format!(
                "cargo bench -p fetchlab-benches      # criterion: {}",
                relative(criterion).display()
            ));
        }
        for (file, found) in measurements::FILES.iter().zip(found) {
            if let Some((name, _)) = found {
                out.push(format!(
                    "{:<35}  # {}",
                    file.made_by,
                    relative(&measurements.join(name)).display()
                ));
            }
        }
    }
    let argv: Vec<String> = std::env::args().skip(1).map(|a| shell_quote(&a)).collect();
    out.push(
        format!(
            "cargo run --release -p fetchlab-benches --bin bench-report -- {}",
            argv.join(" ")
        )
        .trim_end()
        .to_string(),
    );
    out
}

/// A path under the workspace as the reader's checkout would have it.
fn relative(path: &Path) -> &Path {
    path.strip_prefix(workspace()).unwrap_or(path)
}

/// Quotes an argument for a POSIX shell when it needs it.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("--out"), "--out");
        assert_eq!(shell_quote("/tmp/x y"), "'/tmp/x y'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn the_latency_group_and_its_latency() {
        let row = |group: &str| BenchRow {
            group: group.into(),
            model: "sequential".into(),
            parameter: "1".into(),
            pages: Some(50),
            median_ns: 1.0,
            mean_ns: 1.0,
            ci_low_ns: 1.0,
            ci_high_ns: 1.0,
            confidence_level: 0.95,
        };
        let bench = [row("throughput_0ms"), row("latency_20ms")];
        let args = Args::parse_from(["bench-report"]);
        assert_eq!(
            latency_group(&args, &bench),
            Some(("latency_20ms".into(), 0.02))
        );
        let args = Args::parse_from(["bench-report", "--latency-group", "throughput_0ms"]);
        assert_eq!(latency_group(&args, &bench), None, "0 ms gives no bound");
        let args = Args::parse_from([
            "bench-report",
            "--latency-group",
            "throughput_0ms",
            "--latency-ms",
            "5",
        ]);
        assert_eq!(
            latency_group(&args, &bench),
            Some(("throughput_0ms".into(), 0.005))
        );
    }
}
