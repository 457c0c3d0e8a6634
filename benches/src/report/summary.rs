//! `summary.md`: the lab report beside the raw data.
//!
//! Every number in it is read from a file in the same directory, so a
//! reader can check any cell against `criterion.csv` or the scripts' CSVs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::criterion::{BenchRow, common_pages, latency_from_group};
use super::figures::{batch_bound, by_parameter, little_bound, model_rank, num, short, tighter};
use super::machine::Machine;
use super::measurements::{
    ARTICLE_PAGES_PER_S, Record, Table, ceiling_shares, peer_speedups, shares_in_percent,
};

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

/// A rate with its interval: `4,812 (4,790–4,830)`.
fn rate_cell(rate: f64, low: f64, high: f64) -> String {
    format!("{} ({}–{})", num(rate), num(low), num(high))
}

/// A time per run in microseconds with its interval: `8.59 (8.40–8.75)`.
fn time_cell(r: &BenchRow) -> String {
    let us = |ns: f64| num(ns / 1e3);
    format!(
        "{} ({}–{})",
        us(r.median_ns),
        us(r.ci_low_ns),
        us(r.ci_high_ns)
    )
}

/// A cell as it stands in the CSV, or a dash when empty.
fn cell(r: &Record, column: &str) -> String {
    r.text(column).map_or_else(|| "–".to_string(), escape)
}

fn escape(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// How a column of the scripts' CSVs is shown.
#[derive(Clone, Copy)]
enum Show {
    /// As it stands.
    Text,
    /// Reformatted with [`num`].
    Num,
    /// Kilobytes in the CSV, MiB in the table.
    Mib,
}
use Show::{Mib, Num, Text};

/// A table column: its header, the CSV column under it, how it is shown.
type Column = (&'static str, &'static str, Show);

fn headers(columns: &[Column]) -> Vec<&'static str> {
    columns.iter().map(|c| c.0).collect()
}

/// A row's cells under `columns`; a cell that should be a number and is
/// not is shown as it stands.
fn cells(r: &Record, columns: &[Column]) -> Vec<String> {
    columns
        .iter()
        .map(|&(_, column, show)| match (show, r.num(column)) {
            (Num, Some(v)) => num(v),
            (Mib, Some(kb)) => format!("{:.1}", kb / 1024.0),
            _ => cell(r, column),
        })
        .collect()
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
         benchmark's parameter: the concurrency (requests in flight). A group \
         that fetches no pages (the `parse` bench: the CPU stage alone) shows \
         microseconds per run instead, one column per input.\n"
    );
    let mut groups: BTreeMap<&str, Vec<&BenchRow>> = BTreeMap::new();
    for r in x.bench {
        groups.entry(&r.group).or_default().push(r);
    }
    for (group, rows) in groups {
        let mut params: Vec<&str> = rows.iter().map(|r| r.parameter.as_str()).collect();
        params.sort_by(|a, b| by_parameter(a, b));
        params.dedup();
        // Pages per run: in the heading when the whole group shares them,
        // else in each column's header (a bench may size the list to C).
        let group_pages = common_pages(rows.iter().copied());
        let column_pages: Vec<Option<u64>> = params
            .iter()
            .map(|p| common_pages(rows.iter().copied().filter(|r| r.parameter == *p)))
            .collect();
        // A group that fetches nothing is timed per run, by input.
        let timed = rows.iter().all(|r| r.pages.is_none());
        let pages = match group_pages {
            Some(n) => format!(", {n} pages per run"),
            None if timed => ", µs per run".to_string(),
            None => String::new(),
        };
        let _ = writeln!(out, "### `{group}`{pages}\n");
        let mut models: Vec<&str> = rows.iter().map(|r| r.model.as_str()).collect();
        models.sort_by_key(|m| model_rank(m));
        models.dedup();
        let header: Vec<String> = std::iter::once("model".to_string())
            .chain(
                params
                    .iter()
                    .zip(&column_pages)
                    .map(|(p, n)| match (group_pages, n) {
                        _ if timed => p.to_string(),
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
                        let row = rows.iter().find(|r| r.model == *model && r.parameter == *p);
                        match row {
                            Some(r) if timed => time_cell(r),
                            _ => row
                                .and_then(|r| r.pages_per_s())
                                .map_or_else(|| "–".to_string(), |(m, l, h)| rate_cell(m, l, h)),
                        }
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
            let little: Vec<Option<f64>> = cs
                .iter()
                .map(|c| c.map(|c| little_bound(c, latency)))
                .collect();
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
            let show_batch = batch
                .iter()
                .zip(&little)
                .any(|(b, l)| matches!((b, l), (Some(b), Some(l)) if tighter(*b, *l)));
            if show_batch {
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

const FOOTPRINT: [Column; 15] = [
    ("model", "model", Text),
    ("C", "concurrency", Num),
    ("pages", "pages", Num),
    ("latency (ms)", "latency_ms", Num),
    ("wall (s)", "wall_s", Num),
    ("pages/s", "pages_per_s", Num),
    ("ok", "ok", Num),
    ("errors", "errors", Num),
    ("peak RSS (MiB)", "peak_rss_kb", Mib),
    ("max threads", "max_threads", Num),
    ("max fds", "max_fds", Num),
    ("user (s)", "user_s", Num),
    ("sys (s)", "sys_s", Num),
    ("exit", "exit_status", Text),
    ("note", "note", Text),
];

fn footprint_section(out: &mut String, x: &Inputs) {
    let Some(t) = x.footprint else { return };
    out.push_str("## Footprint (`footprint.csv`)\n\n");
    out.push_str("One process per model and workload; peak RSS in MiB (the CSV has kB).\n\n");
    table(
        out,
        &headers(&FOOTPRINT),
        t.records().map(|r| cells(&r, &FOOTPRINT)),
    );
    plot(
        out,
        x.plots,
        "footprint_rss.svg",
        "peak RSS against concurrency per model",
    );
}

/// Followed by the share of the ceiling and the note.
const CEILING: [Column; 7] = [
    ("kind", "kind", Text),
    ("name", "name", Text),
    ("C", "concurrency", Num),
    ("latency (ms)", "latency_ms", Num),
    ("requests or pages", "requests_or_pages", Num),
    ("wall (s)", "wall_s", Num),
    ("per s", "per_s", Num),
];

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
        &[&headers(&CEILING)[..], &["share of ceiling", "note"]].concat(),
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
                let mut row = cells(&r, &CEILING);
                row.extend([share, cell(&r, "note")]);
                row
            }),
    );
    plot(
        out,
        x.plots,
        "ceiling_share.svg",
        "each model's share of the ceiling",
    );
}

/// Followed by the speed-up over the article's program and the note.
const PEER: [Column; 9] = [
    ("program", "program", Text),
    ("pages", "pages", Num),
    ("C", "concurrency", Num),
    ("latency (ms)", "latency_ms", Num),
    ("wall (s)", "wall_s", Num),
    ("pages/s", "pages_per_s", Num),
    ("peak RSS (MiB)", "peak_rss_kb", Mib),
    ("ok", "ok", Num),
    ("errors", "errors", Num),
];

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
            &headers(&PEER)[..],
            &["× faster than the article's program", "note"],
        ]
        .concat(),
        t.records().zip(speedups).map(|(r, x)| {
            let mut row = cells(&r, &PEER);
            row.extend([
                x.map_or_else(|| "–".to_string(), |x| format!("{}×", num(x))),
                cell(&r, "note"),
            ]);
            row
        }),
    );
}

const RSS_SCALING: [Column; 7] = [
    ("model", "model", Text),
    ("pages", "pages", Num),
    ("C", "concurrency", Num),
    ("peak RSS (MiB)", "peak_rss_kb", Mib),
    ("wall (s)", "wall_s", Num),
    ("ratio to 12k pages", "ratio_to_12k", Num),
    ("note", "note", Text),
];

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
        &headers(&RSS_SCALING),
        t.records().map(|r| cells(&r, &RSS_SCALING)),
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
    fn a_group_without_pages_is_timed_per_run_by_input() {
        let parse = |model: &str, input: &str, median_us: f64| BenchRow {
            group: "parse".into(),
            pages: None,
            ..row(model, input, median_us / 1e3)
        };
        let bench = [
            parse("dom", "default_2KiB", 27.2),
            parse("stream", "default_2KiB", 8.6),
            parse("stream", "large_64KiB", 581.0),
        ];
        let md = render(&Inputs {
            date: "2026-01-01",
            machine_name: "m",
            machine: &Machine::default(),
            commands: &[],
            bench: &bench,
            latency: None,
            footprint: None,
            ceiling: None,
            peer: None,
            rss_scaling: None,
            article: None,
            plots: &[],
        });
        assert!(md.contains("### `parse`, µs per run"), "{md}");
        assert!(
            md.contains("| model | default_2KiB | large_64KiB |"),
            "{md}"
        );
        assert!(md.contains("| dom | 27.2 (24.5–29.9) | – |"), "{md}");
        assert!(
            md.contains("| stream | 8.6 (7.74–9.46) | 581 (523–639) |"),
            "{md}"
        );
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
