//! `summary.md`: the lab report beside the raw data.
//!
//! Every number in it is read from a file in the same directory, so a
//! reader can check any cell against `criterion.csv` or the scripts' CSVs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::criterion::{BenchRow, latency_from_group, model_rank, parameter_key};
use super::machine::Machine;
use super::measurements::{
    ARTICLE_PAGES_PER_S, Record, Table, ceiling_shares, peer_speedups, shares_in_percent,
};
use super::plots::short;

/// Everything the summary is made from.
pub struct Inputs<'a> {
    pub date: &'a str,
    pub machine_name: &'a str,
    pub machine: &'a Machine,
    pub commands: &'a [String],
    pub bench: &'a [BenchRow],
    /// The latency-bound group and its latency in seconds, if any.
    pub latency: Option<(&'a str, f64)>,
    pub footprint: Option<&'a Table>,
    pub ceiling: Option<&'a Table>,
    pub peer: Option<&'a Table>,
    pub rss_scaling: Option<&'a Table>,
    /// The peer.csv program that stands for the article's, if any.
    pub article: Option<&'a str>,
    /// The plots written, by file name.
    pub plots: &'a [&'a str],
}

/// A number as a table shows it: grouped thousands for large values, a
/// few significant digits for small ones.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || (v.fract() == 0.0 && a < 1e15) {
        group_thousands(v.round() as i64)
    } else if a >= 10.0 {
        trim_zeros(format!("{v:.1}"))
    } else if a >= 1.0 {
        trim_zeros(format!("{v:.2}"))
    } else {
        trim_zeros(format!("{v:.3}"))
    }
}

fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn group_thousands(v: i64) -> String {
    let digits = v.unsigned_abs().to_string();
    let lead = match digits.len() % 3 {
        0 => 3,
        r => r,
    };
    let (head, rest) = digits.split_at(lead.min(digits.len()));
    let mut out = head.to_string();
    for group in rest.as_bytes().chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).unwrap_or_default());
    }
    if v < 0 { format!("-{out}") } else { out }
}

/// The most pages/s a run of `pages` can reach with `c` in flight when
/// each request takes `latency_s`: ⌈pages ÷ C⌉ rounds of one latency.
pub fn batch_bound(pages: f64, c: f64, latency_s: f64) -> f64 {
    pages / ((pages / c.floor().max(1.0)).ceil() * latency_s)
}

/// A rate with its interval: `4,812 (4,790–4,830)`.
fn rate_cell(rate: f64, low: f64, high: f64) -> String {
    format!("{} ({}–{})", num(rate), num(low), num(high))
}

/// A cell as it stands in the CSV, or a dash when empty.
fn cell(r: &Record, column: &str) -> String {
    r.text(column).map_or_else(|| "–".to_string(), escape)
}

/// A numeric cell reformatted, or the raw text if it is not a number.
fn num_cell(r: &Record, column: &str) -> String {
    r.num(column).map_or_else(|| cell(r, column), num)
}

/// Kilobytes in the CSV, MiB in the table.
fn mib_cell(r: &Record, column: &str) -> String {
    r.num(column)
        .map_or_else(|| cell(r, column), |kb| format!("{:.1}", kb / 1024.0))
}

fn escape(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// Columns of words, aligned left; numbers align right.
const TEXT_COLUMNS: [&str; 6] = ["model", "program", "kind", "name", "exit", "note"];

fn table(out: &mut String, header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(
        out,
        "|{}",
        header
            .iter()
            .enumerate()
            .map(|(i, h)| if i == 0 || TEXT_COLUMNS.contains(h) {
                "---|"
            } else {
                "---:|"
            })
            .collect::<String>()
    );
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out.push('\n');
}

fn plot(out: &mut String, plots: &[&str], file: &str, alt: &str) {
    if plots.contains(&file) {
        let _ = writeln!(out, "![{alt}]({file})\n");
    }
}

/// The whole of `summary.md`.
pub fn render(x: &Inputs) -> String {
    let mut out = String::new();
    let m = x.machine;
    let _ = writeln!(out, "# fetchlab results: {}, {}\n", x.date, x.machine_name);
    let mut machine = format!("- **Machine:** {} cores", m.cores);
    if let Some(cpu) = &m.cpu {
        let _ = write!(machine, ", {cpu}");
    }
    if let Some(gib) = m.memory_gib {
        let _ = write!(machine, ", {gib:.0} GiB of memory");
    }
    let _ = writeln!(out, "{machine}");
    if let Some(k) = &m.kernel {
        let _ = writeln!(out, "- **Kernel:** Linux {k}");
    }
    if let Some(r) = &m.rustc {
        let _ = writeln!(out, "- **Compiler:** {r}");
    }
    let _ = writeln!(out, "- **Date:** {}\n", x.date);

    out.push_str("## How these numbers were made\n\n```sh\n");
    for c in x.commands {
        let _ = writeln!(out, "{c}");
    }
    out.push_str("```\n\n");
    out.push_str(
        "Raw data beside this file: `criterion.csv` (one line per criterion benchmark, \
         times in ns per run) and the measurement scripts' CSVs, copied as they were.\n\n",
    );

    bench_section(&mut out, x);
    footprint_section(&mut out, x);
    ceiling_section(&mut out, x);
    peer_section(&mut out, x);
    rss_section(&mut out, x);
    caveats(&mut out, x);
    out
}

fn bench_section(out: &mut String, x: &Inputs) {
    if x.bench.is_empty() {
        return;
    }
    out.push_str("## Criterion benchmarks\n\n");
    let level = x.bench[0].confidence_level * 100.0;
    let _ = writeln!(
        out,
        "Pages per second at criterion's median time per run, with the {level:.0}% \
         confidence interval of that median in brackets. Each column is the \
         benchmark's parameter: the concurrency (requests in flight).\n"
    );
    let mut groups: BTreeMap<&str, Vec<&BenchRow>> = BTreeMap::new();
    for r in x.bench {
        groups.entry(&r.group).or_default().push(r);
    }
    for (group, rows) in groups {
        let mut params: Vec<&str> = rows.iter().map(|r| r.parameter.as_str()).collect();
        params.sort_by(|a, b| {
            let (ka, kb) = (parameter_key(a), parameter_key(b));
            ka.0.cmp(&kb.0)
                .then(ka.1.total_cmp(&kb.1))
                .then_with(|| ka.2.cmp(&kb.2))
        });
        params.dedup();
        // Pages per run: in the heading when the whole group shares them,
        // else in each column's header (a bench may size the list to C).
        let pages_of = |p: Option<&str>| -> Option<u64> {
            let mut pages: Vec<u64> = rows
                .iter()
                .filter(|r| p.is_none_or(|p| r.parameter == p))
                .filter_map(|r| r.pages)
                .collect();
            pages.sort_unstable();
            pages.dedup();
            match pages.as_slice() {
                [n] => Some(*n),
                _ => None,
            }
        };
        let group_pages = pages_of(None);
        let column_pages: Vec<Option<u64>> = params.iter().map(|p| pages_of(Some(p))).collect();
        match group_pages {
            Some(n) => {
                let _ = writeln!(out, "### `{group}`, {n} pages per run\n");
            }
            None => {
                let _ = writeln!(out, "### `{group}`\n");
            }
        }
        let mut models: Vec<&str> = rows.iter().map(|r| r.model.as_str()).collect();
        models.sort_by_key(|m| model_rank(m));
        models.dedup();
        let header: Vec<String> = std::iter::once("model".to_string())
            .chain(
                params
                    .iter()
                    .zip(&column_pages)
                    .map(|(p, n)| match (group_pages, n) {
                        (None, Some(n)) => format!("C={p} ({n} pages)"),
                        _ => format!("C={p}"),
                    }),
            )
            .collect();
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        let mut lines: Vec<Vec<String>> = models
            .iter()
            .map(|model| {
                std::iter::once(model.to_string())
                    .chain(params.iter().map(|p| {
                        rows.iter()
                            .find(|r| r.model == *model && r.parameter == *p)
                            .and_then(|r| r.pages_per_s())
                            .map_or_else(|| "–".to_string(), |(m, l, h)| rate_cell(m, l, h))
                    }))
                    .collect()
            })
            .collect();
        // The bound from Little's law, for a group whose name gives its
        // latency: C requests in flight, each lasting the latency.
        if let Some(latency) = latency_from_group(group) {
            let ms = short(latency * 1e3);
            let cs: Vec<Option<f64>> = params
                .iter()
                .map(|p| p.parse::<f64>().ok().filter(|c| *c >= 1.0))
                .collect();
            let little: Vec<Option<f64>> = cs.iter().map(|c| c.map(|c| c / latency)).collect();
            // A run of N pages also takes at least ⌈N ÷ C⌉ rounds of one
            // latency, whatever C: the tighter bound when N is not a
            // multiple of C, or is smaller than C.
            let batch: Vec<Option<f64>> = cs
                .iter()
                .zip(&column_pages)
                .map(|(c, n)| Some(batch_bound((*n)? as f64, (*c)?, latency)))
                .collect();
            let italic = |v: &[Option<f64>]| -> Vec<String> {
                v.iter()
                    .map(|v| v.map_or_else(|| "–".to_string(), |v| format!("*{}*", num(v))))
                    .collect()
            };
            let mut row = vec![format!("*Little's law: C ÷ {ms} ms*")];
            row.extend(italic(&little));
            lines.push(row);
            let tighter = batch
                .iter()
                .zip(&little)
                .any(|(b, l)| matches!((b, l), (Some(b), Some(l)) if *b < l * 0.999));
            if tighter {
                let mut row = vec![format!("*one run: pages ÷ (⌈pages ÷ C⌉ × {ms} ms)*")];
                row.extend(italic(&batch));
                lines.push(row);
            }
        }
        table(out, &header, lines);
        if x.latency.is_some_and(|(g, _)| g == group) {
            plot(
                out,
                x.plots,
                "latency_bound.svg",
                "pages/s against concurrency per model, with Little's law",
            );
        }
    }
}

fn footprint_section(out: &mut String, x: &Inputs) {
    let Some(t) = x.footprint else { return };
    out.push_str("## Footprint (`footprint.csv`)\n\n");
    out.push_str("One process per model and workload; peak RSS in MiB (the CSV has kB).\n\n");
    table(
        out,
        &[
            "model",
            "C",
            "pages",
            "latency (ms)",
            "wall (s)",
            "pages/s",
            "ok",
            "errors",
            "peak RSS (MiB)",
            "max threads",
            "max fds",
            "user (s)",
            "sys (s)",
            "exit",
            "note",
        ],
        t.records().map(|r| {
            vec![
                cell(&r, "model"),
                num_cell(&r, "concurrency"),
                num_cell(&r, "pages"),
                num_cell(&r, "latency_ms"),
                num_cell(&r, "wall_s"),
                num_cell(&r, "pages_per_s"),
                num_cell(&r, "ok"),
                num_cell(&r, "errors"),
                mib_cell(&r, "peak_rss_kb"),
                num_cell(&r, "max_threads"),
                num_cell(&r, "max_fds"),
                num_cell(&r, "user_s"),
                num_cell(&r, "sys_s"),
                cell(&r, "exit_status"),
                cell(&r, "note"),
            ]
        }),
    );
    plot(
        out,
        x.plots,
        "footprint_rss.svg",
        "peak RSS against concurrency per model",
    );
}

fn ceiling_section(out: &mut String, x: &Inputs) {
    let Some(t) = x.ceiling else { return };
    out.push_str("## Ceiling (`ceiling.csv`)\n\n");
    out.push_str(
        "The `ceiling` rows are the reference rate the script measured on the same \
         server, concurrency and latency (see the script's header for how). A model's \
         share is its rate over that ceiling: the script's `share_of_ceiling`, or, where \
         that cell is empty, computed here against the mean of the matching ceiling rows. \
         A ceiling row's own share shows how far it drifted from that mean.\n\n",
    );
    let shares = ceiling_shares(t);
    let scale = if shares_in_percent(t) { 1.0 } else { 100.0 };
    let mut models = shares.iter();
    let percent = |s: f64| format!("{s:.1}%");
    table(
        out,
        &[
            "kind",
            "name",
            "C",
            "latency (ms)",
            "requests or pages",
            "wall (s)",
            "per s",
            "share of ceiling",
            "note",
        ],
        t.records()
            .filter(|r| r.text("name").is_some() || r.text("kind") == Some("ceiling"))
            .map(|r| {
                let share = if r.text("kind") == Some("ceiling") {
                    r.num("share_of_ceiling")
                        .map(|s| s * scale)
                        .map_or_else(|| "(ceiling)".to_string(), percent)
                } else {
                    models
                        .next()
                        .and_then(|s| s.share)
                        .map_or_else(|| "–".to_string(), |s| percent(s * 100.0))
                };
                vec![
                    cell(&r, "kind"),
                    cell(&r, "name"),
                    num_cell(&r, "concurrency"),
                    num_cell(&r, "latency_ms"),
                    num_cell(&r, "requests_or_pages"),
                    num_cell(&r, "wall_s"),
                    num_cell(&r, "per_s"),
                    share,
                    cell(&r, "note"),
                ]
            }),
    );
    plot(
        out,
        x.plots,
        "ceiling_share.svg",
        "each model's share of the ceiling",
    );
}

fn peer_section(out: &mut String, x: &Inputs) {
    let Some(t) = x.peer else { return };
    out.push_str("## Peer programs (`peer.csv`)\n\n");
    let speedups = peer_speedups(t, x.article);
    match x.article {
        Some(a) => {
            let _ = writeln!(
                out,
                "The article's program is `{a}` here, run on the same mock server. Each \
                 row is compared with its run on the same pages, concurrency and \
                 latency, or with its fastest run where there is none.\n"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "peer.csv has no run of the article's program, so the last column \
                 compares with the article's published figure, 12,000 pages in 23 minutes \
                 ({} pages/s). That figure was measured over the internet, so the ratio \
                 mixes the network in with the program: an upper bound on the gap, not a \
                 like-for-like comparison.\n",
                num(ARTICLE_PAGES_PER_S)
            );
        }
    }
    table(
        out,
        &[
            "program",
            "pages",
            "C",
            "latency (ms)",
            "wall (s)",
            "pages/s",
            "peak RSS (MiB)",
            "ok",
            "errors",
            "× faster than the article's program",
            "note",
        ],
        t.records().zip(speedups).map(|(r, x)| {
            vec![
                cell(&r, "program"),
                num_cell(&r, "pages"),
                num_cell(&r, "concurrency"),
                num_cell(&r, "latency_ms"),
                num_cell(&r, "wall_s"),
                num_cell(&r, "pages_per_s"),
                mib_cell(&r, "peak_rss_kb"),
                num_cell(&r, "ok"),
                num_cell(&r, "errors"),
                x.map_or_else(|| "–".to_string(), |x| format!("{}×", num(x))),
                cell(&r, "note"),
            ]
        }),
    );
}

fn rss_section(out: &mut String, x: &Inputs) {
    let Some(t) = x.rss_scaling else { return };
    out.push_str("## Memory against the number of pages\n\n");
    out.push_str(
        "Peak RSS as the URL list grows at a fixed concurrency; `ratio to 12k pages` is the \
         ratio to the 12,000-page run. A ratio near 1 means memory is bounded by the \
         concurrency, not by the list.\n\n",
    );
    table(
        out,
        &[
            "model",
            "pages",
            "C",
            "peak RSS (MiB)",
            "wall (s)",
            "ratio to 12k pages",
            "note",
        ],
        t.records().map(|r| {
            vec![
                cell(&r, "model"),
                num_cell(&r, "pages"),
                num_cell(&r, "concurrency"),
                mib_cell(&r, "peak_rss_kb"),
                num_cell(&r, "wall_s"),
                num_cell(&r, "ratio_to_12k"),
                cell(&r, "note"),
            ]
        }),
    );
}

fn caveats(out: &mut String, x: &Inputs) {
    out.push_str("## What these numbers do not show\n\n");
    out.push_str(
        "- **The internet.** The server is a local mock on loopback with a simulated, \
         fixed latency: no packet loss, no bandwidth limit, no DNS, no distant TLS \
         handshakes, no congestion control, no server that slows down under load. The \
         numbers compare how the models wait, not what a real crawl reaches.\n\
         - **A quiet machine.** The mock server shares the machine's cores with the model \
         under test, so a model that burns CPU also slows the server it is measured \
         against.\n\
         - **Variation between runs, machines or days.** Each figure comes from one run on \
         one machine. Criterion's confidence intervals are bootstrapped from the samples of \
         that run: they bound its noise, not the next run's.\n",
    );
    if x.latency.is_some() {
        out.push_str(
            "- **A bound that real servers keep.** Little's law (C ÷ latency) is what C \
             requests in flight allow when every request takes exactly the latency; on the \
             internet latency grows with load and varies per host.\n",
        );
    }
    if x.footprint.is_some() || x.rss_scaling.is_some() {
        out.push_str(
            "- **Memory per request.** Peak RSS is the measured process's high-water mark: \
             it includes the runtime, the client's buffers and whatever the allocator kept, \
             and says little about memory at a concurrency that was not run.\n",
        );
    }
    if x.peer.is_some() {
        out.push_str(
            "- **Which language is faster.** The peer programs differ in client library, \
             parser and runtime as well as language; a ratio between them is the ratio \
             between those programs on this workload.\n",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: &str, parameter: &str, median_ms: f64) -> BenchRow {
        BenchRow {
            group: "latency_10ms".into(),
            model: model.into(),
            parameter: parameter.into(),
            pages: Some(50),
            median_ns: median_ms * 1e6,
            mean_ns: median_ms * 1e6,
            ci_low_ns: median_ms * 0.9e6,
            ci_high_ns: median_ms * 1.1e6,
            confidence_level: 0.95,
        }
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(4812.4), "4,812");
        assert_eq!(num(1_234_567.0), "1,234,567");
        assert_eq!(num(123_456.0), "123,456");
        assert_eq!(num(-1500.0), "-1,500");
        assert_eq!(num(87.06), "87.1");
        assert_eq!(num(8.695), "8.7");
        assert_eq!(num(2.25), "2.25");
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(0.1234), "0.123");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(8.0), "8");
    }

    #[test]
    fn a_group_is_a_model_by_parameter_table_with_the_bound() {
        let bench = [
            row("tokio", "8", 62.5),
            row("sequential", "8", 500.0),
            row("tokio", "16", 31.25),
        ];
        let footprint =
            Table::parse("model,concurrency,peak_rss_kb,note\ntokio,8,10240,a|b\n").unwrap();
        let md = render(&Inputs {
            date: "2026-01-01",
            machine_name: "2-core-AMD-EPYC",
            machine: &Machine::default(),
            commands: &["cargo bench -p fetchlab-benches".to_string()],
            bench: &bench,
            latency: Some(("latency_10ms", 0.01)),
            footprint: Some(&footprint),
            ceiling: None,
            peer: None,
            rss_scaling: None,
            article: None,
            plots: &["latency_bound.svg"],
        });
        assert!(md.contains("| model | C=8 | C=16 |"), "{md}");
        assert!(md.contains("| sequential | 100 (90.9–111) | – |"), "{md}");
        assert!(
            md.contains("| tokio | 800 (727–889) | 1,600 (1,455–1,778) |"),
            "{md}"
        );
        assert!(
            md.contains("| *Little's law: C ÷ 10 ms* | *800* | *1,600* |"),
            "{md}"
        );
        assert!(md.contains("![pages/s against concurrency"), "{md}");
        assert!(
            md.contains("| tokio | 8 | – | – | – | – | – | – | 10.0 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
            ),
            "{md}"
        );
        assert!(md.contains("a\\|b"), "pipes in a note are escaped: {md}");
        assert!(!md.contains("## Ceiling"), "a missing CSV has no section");
        assert!(md.contains("## What these numbers do not show"));
    }
}
