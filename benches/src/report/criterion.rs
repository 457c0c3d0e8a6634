//! Reading criterion's saved results.
//!
//! Criterion 0.8 writes, for every benchmark it ran, a directory
//! `<criterion>/<group>/<function>/<parameter>/` whose `new/` holds the
//! latest run (`base/` and named baselines hold older ones, which a report
//! must not mix in):
//!
//! - `benchmark.json`: the id, `{"group_id", "function_id", "value_str",
//!   "throughput": {"Elements": n} | {"Bytes": n} | … | null, …}`;
//! - `estimates.json`: `{"mean", "median", "median_abs_dev", "slope",
//!   "std_dev"}`, each `{"point_estimate", "standard_error",
//!   "confidence_interval": {"confidence_level", "lower_bound",
//!   "upper_bound"}}`, in nanoseconds per iteration.
//!
//! The directory names are made filename-safe (and deduplicated) by
//! criterion, so the report walks the tree for `new/benchmark.json` and
//! takes the names from inside it, as criterion's own report does.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::figures::{by_parameter, model_rank};

/// One benchmark's latest result, in the shape of a `criterion.csv` row.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    pub group: String,
    /// criterion's function id: the model's name in fetchlab's benches.
    pub model: String,
    /// criterion's value string: the concurrency in fetchlab's benches.
    pub parameter: String,
    /// Elements per iteration (`Throughput::Elements`): pages per run.
    pub pages: Option<u64>,
    pub median_ns: f64,
    pub mean_ns: f64,
    /// The confidence interval of the median, which pages/s is built on.
    pub ci_low_ns: f64,
    pub ci_high_ns: f64,
    pub confidence_level: f64,
}

impl BenchRow {
    /// Pages per second at the median time, and at the two ends of its
    /// confidence interval (a longer time is fewer pages per second, so the
    /// bounds swap).
    pub fn pages_per_s(&self) -> Option<(f64, f64, f64)> {
        let pages = self.pages? as f64;
        let rate = |ns: f64| (ns > 0.0).then(|| pages / ns * 1e9);
        Some((
            rate(self.median_ns)?,
            rate(self.ci_high_ns)?,
            rate(self.ci_low_ns)?,
        ))
    }

    /// The parameter as a number, when it is one (a concurrency).
    pub fn parameter_value(&self) -> Option<f64> {
        self.parameter.parse::<f64>().ok()
    }
}

#[derive(Deserialize)]
struct BenchmarkJson {
    group_id: String,
    function_id: Option<String>,
    value_str: Option<String>,
    throughput: Option<Throughput>,
}

/// criterion's `Throughput` enum, `{"Elements": n}`, `{"Bytes": n}`, …, read
/// as a map: only `Elements` means pages, and a variant added by a later
/// criterion is ignored rather than an error.
#[derive(Deserialize)]
struct Throughput {
    #[serde(rename = "Elements")]
    elements: Option<u64>,
}

#[derive(Deserialize)]
struct Interval {
    confidence_level: f64,
    lower_bound: f64,
    upper_bound: f64,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
    confidence_interval: Interval,
}

#[derive(Deserialize)]
struct EstimatesJson {
    mean: Estimate,
    median: Estimate,
}

/// Builds a row from the text of `benchmark.json` and `estimates.json`.
pub fn parse_row(benchmark_json: &str, estimates_json: &str) -> Result<BenchRow> {
    let id: BenchmarkJson =
        serde_json::from_str(benchmark_json).context("parsing benchmark.json")?;
    let est: EstimatesJson =
        serde_json::from_str(estimates_json).context("parsing estimates.json")?;
    Ok(BenchRow {
        group: id.group_id,
        model: id.function_id.unwrap_or_default(),
        parameter: id.value_str.unwrap_or_default(),
        pages: id.throughput.and_then(|t| t.elements),
        median_ns: est.median.point_estimate,
        mean_ns: est.mean.point_estimate,
        ci_low_ns: est.median.confidence_interval.lower_bound,
        ci_high_ns: est.median.confidence_interval.upper_bound,
        confidence_level: est.median.confidence_interval.confidence_level,
    })
}

/// Every `new/benchmark.json` under `dir` with its `estimates.json`, sorted
/// by group, model (in the README's order) and parameter. The HTML report
/// directories are skipped; a benchmark whose files are unreadable is
/// reported on stderr and left out, so one broken run does not hide the
/// others.
pub fn read_dir(dir: &Path) -> Result<Vec<BenchRow>> {
    let mut found = Vec::new();
    walk(dir, &mut found).with_context(|| format!("reading {}", dir.display()))?;
    let read = |bench: &Path| -> Result<BenchRow> {
        let estimates = bench.with_file_name("estimates.json");
        parse_row(&fs::read_to_string(bench)?, &fs::read_to_string(estimates)?)
    };
    let mut rows = Vec::new();
    for bench in found {
        match read(&bench) {
            Ok(row) => rows.push(row),
            Err(e) => eprintln!("bench-report: skipping {}: {e:#}", bench.display()),
        }
    }
    rows.sort_by(|a, b| {
        a.group
            .cmp(&b.group)
            .then_with(|| model_rank(&a.model).cmp(&model_rank(&b.model)))
            .then_with(|| by_parameter(&a.parameter, &b.parameter))
    });
    Ok(rows)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            if entry.file_name() != "report" {
                walk(&path, found)?;
            }
        } else if entry.file_name() == "benchmark.json"
            && path.parent().and_then(Path::file_name) == Some("new".as_ref())
        {
            found.push(path);
        }
    }
    Ok(())
}

/// The pages per run that all of `rows` share, if they do (rows without a
/// page count are not asked).
pub fn common_pages<'a>(rows: impl IntoIterator<Item = &'a BenchRow>) -> Option<u64> {
    let mut pages = rows.into_iter().filter_map(|r| r.pages);
    let first = pages.next()?;
    pages.all(|p| p == first).then_some(first)
}

/// The latency in a group name such as `latency_10ms` (or `…_250us`,
/// `…_1s`), in seconds.
pub fn latency_from_group(group: &str) -> Option<f64> {
    let suffix = group.rsplit('_').next()?;
    let (digits, scale) = if let Some(d) = suffix.strip_suffix("ms") {
        (d, 1e-3)
    } else if let Some(d) = suffix.strip_suffix("us") {
        (d, 1e-6)
    } else if let Some(d) = suffix.strip_suffix('s') {
        (d, 1.0)
    } else {
        return None;
    };
    let value: f64 = digits.parse().ok()?;
    (value > 0.0).then_some(value * scale)
}

/// A line of `criterion.csv`; the field names are its header. Times and
/// rates are text because they are rounded (whole ns, pages/s to three
/// decimals): csv would write an `f64` in full.
#[derive(Serialize)]
struct CsvLine<'a> {
    group: &'a str,
    model: &'a str,
    parameter: &'a str,
    pages: Option<u64>,
    median_ns: String,
    mean_ns: String,
    ci_low_ns: String,
    ci_high_ns: String,
    pages_per_s: String,
    pages_per_s_low: String,
    pages_per_s_high: String,
}

/// `criterion.csv`: one line per benchmark, times in ns per iteration.
/// The header comes with the first line, so no rows give no text.
pub fn to_csv(rows: &[BenchRow]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        let (rate, low, high) = match r.pages_per_s() {
            Some((m, l, h)) => (format!("{m:.3}"), format!("{l:.3}"), format!("{h:.3}")),
            None => Default::default(),
        };
        w.serialize(CsvLine {
            group: &r.group,
            model: &r.model,
            parameter: &r.parameter,
            pages: r.pages,
            median_ns: format!("{:.0}", r.median_ns),
            mean_ns: format!("{:.0}", r.mean_ns),
            ci_low_ns: format!("{:.0}", r.ci_low_ns),
            ci_high_ns: format!("{:.0}", r.ci_high_ns),
            pages_per_s: rate,
            pages_per_s_low: low,
            pages_per_s_high: high,
        })?;
    }
    Ok(w.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copied from a real `cargo bench -p fetchlab-benches -- --quick` run.
    const BENCHMARK: &str = r#"{"group_id":"latency_10ms","function_id":"sequential","value_str":"1","throughput":{"Elements":50},"full_id":"latency_10ms/sequential/1","directory_name":"latency_10ms/sequential/1","title":"latency_10ms/sequential/1"}"#;
    const ESTIMATES: &str = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":568693161.5,"upper_bound":596613103.0},"point_estimate":582653132.25,"standard_error":9867493.87488235},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":560000000.0,"upper_bound":600000000.0},"point_estimate":580000000.0,"standard_error":9867493.87488235},"median_abs_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":0.0,"upper_bound":20697052.26650387},"point_estimate":20697052.26650387,"standard_error":10348575.193921788},"slope":null,"std_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":0.0,"upper_bound":1.0},"point_estimate":0.5,"standard_error":0.1}}"#;

    #[test]
    fn parses_criterion_files() {
        let row = parse_row(BENCHMARK, ESTIMATES).unwrap();
        assert_eq!(row.group, "latency_10ms");
        assert_eq!(row.model, "sequential");
        assert_eq!(row.parameter, "1");
        assert_eq!(row.pages, Some(50));
        assert_eq!(row.median_ns, 580_000_000.0);
        assert_eq!(row.mean_ns, 582_653_132.25);
        assert_eq!((row.ci_low_ns, row.ci_high_ns), (560e6, 600e6));
        assert_eq!(row.confidence_level, 0.95);
    }

    #[test]
    fn pages_per_second_swaps_the_interval() {
        let row = parse_row(BENCHMARK, ESTIMATES).unwrap();
        let (rate, low, high) = row.pages_per_s().unwrap();
        assert!((rate - 50.0 / 0.58).abs() < 1e-9);
        assert!(
            (low - 50.0 / 0.60).abs() < 1e-9,
            "slowest time is the low rate"
        );
        assert!((high - 50.0 / 0.56).abs() < 1e-9);
    }

    #[test]
    fn other_throughputs_and_missing_ids_are_not_pages() {
        let bytes =
            r#"{"group_id":"g","function_id":null,"value_str":null,"throughput":{"Bytes":10}}"#;
        let row = parse_row(bytes, ESTIMATES).unwrap();
        assert_eq!((row.model.as_str(), row.parameter.as_str()), ("", ""));
        assert_eq!(row.pages, None);
        assert_eq!(row.pages_per_s(), None);
        let none = r#"{"group_id":"g","function_id":"m","value_str":"x","throughput":null}"#;
        assert_eq!(parse_row(none, ESTIMATES).unwrap().pages, None);
        let both = r#"{"group_id":"g","throughput":{"ElementsAndBytes":{"elements":5,"bytes":9}}}"#;
        assert_eq!(parse_row(both, ESTIMATES).unwrap().pages, None);
    }

    #[test]
    fn common_pages_are_those_every_row_shares() {
        let mut a = parse_row(BENCHMARK, ESTIMATES).unwrap();
        let b = a.clone();
        assert_eq!(common_pages([&a, &b]), Some(50));
        a.pages = None;
        assert_eq!(
            common_pages([&a, &b]),
            Some(50),
            "a row without a count has no say"
        );
        a.pages = Some(500);
        assert_eq!(common_pages([&a, &b]), None);
        assert_eq!(common_pages([]), None);
    }

    #[test]
    fn truncated_estimates_are_an_error() {
        assert!(parse_row(BENCHMARK, r#"{"mean":{}}"#).is_err());
    }

    #[test]
    fn reads_only_new_results_from_a_tree() {
        let dir = std::env::temp_dir().join(format!("bench-report-tree-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for (sub, group, model, value) in [
            ("latency_10ms/tokio/8/new", "latency_10ms", "tokio", "8"),
            (
                "latency_10ms/sequential/1/new",
                "latency_10ms",
                "sequential",
                "1",
            ),
            ("latency_10ms/tokio/16/new", "latency_10ms", "tokio", "16"),
            ("latency_10ms/tokio/16/base", "latency_10ms", "tokio", "16"),
            ("latency_10ms/report/new", "x", "y", "z"),
        ] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).unwrap();
            let id = format!(
                r#"{{"group_id":"{group}","function_id":"{model}","value_str":"{value}","throughput":{{"Elements":50}}}}"#
            );
            fs::write(d.join("benchmark.json"), id).unwrap();
            fs::write(d.join("estimates.json"), ESTIMATES).unwrap();
        }
        let rows = read_dir(&dir).unwrap();
        let ids: Vec<_> = rows
            .iter()
            .map(|r| format!("{}/{}/{}", r.group, r.model, r.parameter))
            .collect();
        assert_eq!(
            ids,
            [
                "latency_10ms/sequential/1",
                "latency_10ms/tokio/8",
                "latency_10ms/tokio/16"
            ]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn latency_comes_from_the_group_suffix() {
        assert_eq!(latency_from_group("latency_10ms"), Some(0.010));
        assert_eq!(latency_from_group("latency_250us"), Some(0.000_25));
        assert_eq!(latency_from_group("slow_2s"), Some(2.0));
        assert_eq!(latency_from_group("throughput_0ms"), None);
        assert_eq!(latency_from_group("latency"), None);
    }

    #[test]
    fn csv_has_the_documented_columns() {
        let row = parse_row(BENCHMARK, ESTIMATES).unwrap();
        let text = String::from_utf8(to_csv(&[row]).unwrap()).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "group,model,parameter,pages,median_ns,mean_ns,ci_low_ns,ci_high_ns,\
             pages_per_s,pages_per_s_low,pages_per_s_high"
        );
        assert_eq!(
            lines.next().unwrap(),
            "latency_10ms,sequential,1,50,580000000,582653132,560000000,600000000,\
             86.207,83.333,89.286"
        );
    }
}
