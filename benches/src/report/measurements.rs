//! Reading the measurement scripts' CSVs.
//!
//! The scripts and this report are written separately, so the only contract
//! is the column names (listed in [`FILES`]): columns are looked up by header
//! name, never by position, extra columns are ignored, and an empty or
//! missing cell is "not measured" rather than an error. Each file is
//! optional; a missing one drops its section of the report.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use anyhow::{Context, Result};
use csv::StringRecord;

/// A measurement file the report knows.
pub struct File {
    /// Its name in the measurements directory and in the results.
    pub name: &'static str,
    /// Other names the scripts may give it; the first found is read and
    /// copied under its own name.
    pub also: &'static [&'static str],
    /// The columns the report uses, comma-separated as in a header (others
    /// are kept in the copy).
    pub columns: &'static str,
    /// The standard command that makes it, for the summary.
    pub made_by: &'static str,
}

/// The measurement files, in the order of the summary's sections.
pub const FILES: [File; 4] = [
    File {
        name: "footprint.csv",
        made_by: "scripts/footprint",
        also: &[],
        columns: "model,concurrency,pages,latency_ms,wall_s,pages_per_s,ok,errors,\
                  peak_rss_kb,max_threads,max_fds,user_s,sys_s,exit_status,note",
    },
    File {
        name: "ceiling.csv",
        made_by: "scripts/ceiling",
        also: &[],
        columns: "kind,name,concurrency,latency_ms,requests_or_pages,wall_s,per_s,\
                  share_of_ceiling",
    },
    File {
        name: "peer.csv",
        made_by: "scripts/peer/run",
        also: &[],
        columns: "program,pages,concurrency,latency_ms,wall_s,pages_per_s,peak_rss_kb,ok,errors",
    },
    File {
        name: "rss_scaling.csv",
        made_by: "scripts/footprint --rss-scaling",
        // What `scripts/footprint --rss-scaling` writes.
        also: &["footprint-rss-scaling.csv"],
        columns: "model,pages,concurrency,peak_rss_kb,wall_s,ratio_to_12k",
    },
];

impl File {
    /// The first of its names present in `dir`, with its table; `None`
    /// when there is none.
    pub fn read(&self, dir: &Path) -> Result<Option<(&'static str, Table)>> {
        for name in std::iter::once(self.name).chain(self.also.iter().copied()) {
            if let Some(table) = Table::read(&dir.join(name))? {
                return Ok(Some((name, table)));
            }
        }
        Ok(None)
    }
}

/// A CSV file as text cells under its header.
#[derive(Debug)]
pub struct Table {
    headers: StringRecord,
    rows: Vec<StringRecord>,
}

impl Table {
    /// Parses CSV text with a header line. Rows may be shorter or longer
    /// than the header (the missing cells are empty); cells are trimmed.
    pub fn parse(text: &str) -> Result<Table> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let headers = reader.headers()?.clone();
        let mut rows = reader.records().collect::<Result<Vec<_>, _>>()?;
        // A row of empty cells carries nothing.
        rows.retain(|r| r.iter().any(|c| !c.is_empty()));
        Ok(Table { headers, rows })
    }

    /// Reads `path`, or `None` if it does not exist.
    pub fn read(path: &Path) -> Result<Option<Table>> {
        match fs::read_to_string(path) {
            Ok(text) => Table::parse(&text)
                .map(Some)
                .with_context(|| format!("parsing {}", path.display())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Where `column` is, whatever its case.
    fn index(&self, column: &str) -> Option<usize> {
        self.headers
            .iter()
            .position(|h| h.eq_ignore_ascii_case(column))
    }

    pub fn records(&self) -> impl Iterator<Item = Record<'_>> {
        self.rows
            .iter()
            .map(move |cells| Record { table: self, cells })
    }

    /// The columns of `expected` (comma-separated) this file lacks, for a
    /// warning.
    pub fn missing<'a>(&self, expected: &'a str) -> Vec<&'a str> {
        expected
            .split(',')
            .filter(|c| self.index(c).is_none())
            .collect()
    }
}

/// One row, read by column name.
pub struct Record<'a> {
    table: &'a Table,
    cells: &'a StringRecord,
}

impl<'a> Record<'a> {
    /// The cell under `column`, or `None` if the column is absent or the
    /// cell empty.
    pub fn text(&self, column: &str) -> Option<&'a str> {
        let cell = self.cells.get(self.table.index(column)?)?;
        (!cell.is_empty()).then_some(cell)
    }

    /// The cell as a number; a cell that is not one counts as empty.
    pub fn num(&self, column: &str) -> Option<f64> {
        self.text(column)?
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
    }
}

/// A row of `ceiling.csv` whose kind is not `ceiling` (a model), with its
/// share of the ceiling.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    pub name: String,
    pub concurrency: Option<f64>,
    pub latency_ms: Option<f64>,
    pub per_s: Option<f64>,
    /// A fraction: 1.0 is the ceiling.
    pub share: Option<f64>,
    /// The ceiling this row was measured against, when one matches.
    pub ceiling_per_s: Option<f64>,
}

/// The model rows of `ceiling.csv` with their shares. The script's own
/// `share_of_ceiling` is used when present: as a fraction, or as a percent
/// if any value in the column is above 1.5 (no model runs at 150% of what
/// the server can serve). An empty share is computed as `per_s` over the
/// mean of the `ceiling` rows with the same concurrency and latency, or
/// over the only ceiling row if there is just one.
pub fn ceiling_shares(table: &Table) -> Vec<Share> {
    let is_ceiling = |r: &Record| r.text("kind") == Some("ceiling");
    let ceilings: Vec<Record> = table.records().filter(is_ceiling).collect();
    let percent = shares_in_percent(table);
    let same = |a: Option<f64>, b: Option<f64>| a.is_none() || b.is_none() || a == b;
    table
        .records()
        .filter(|r| !is_ceiling(r))
        .filter_map(|r| {
            let name = r.text("name")?.to_string();
            let (concurrency, latency_ms) = (r.num("concurrency"), r.num("latency_ms"));
            // The mean of the matching ceiling rows (a script may measure
            // the ceiling before and after the models, as scripts/ceiling
            // does), or the only ceiling row there is.
            let matching: Vec<f64> = ceilings
                .iter()
                .filter(|c| {
                    same(c.num("concurrency"), concurrency) && same(c.num("latency_ms"), latency_ms)
                })
                .filter_map(|c| c.num("per_s"))
                .collect();
            let ceiling = if !matching.is_empty() {
                Some(matching.iter().sum::<f64>() / matching.len() as f64)
            } else if ceilings.len() == 1 {
                ceilings[0].num("per_s")
            } else {
                None
            };
            let per_s = r.num("per_s");
            let share = match r.num("share_of_ceiling") {
                Some(s) if percent => Some(s / 100.0),
                Some(s) => Some(s),
                None => per_s
                    .zip(ceiling)
                    .filter(|(_, c)| *c > 0.0)
                    .map(|(p, c)| p / c),
            };
            Some(Share {
                name,
                concurrency,
                latency_ms,
                per_s,
                share,
                ceiling_per_s: ceiling,
            })
        })
        .collect()
}

/// Whether `share_of_ceiling` is written in percent rather than as a
/// fraction: some model's share is above 1.5.
pub fn shares_in_percent(table: &Table) -> bool {
    table
        .records()
        .filter(|r| r.text("kind") != Some("ceiling"))
        .filter_map(|r| r.num("share_of_ceiling"))
        .any(|s| s > 1.5)
}

/// The article's own figure: 12,000 pages in 23 minutes, over the internet.
pub const ARTICLE_PAGES_PER_S: f64 = 12_000.0 / (23.0 * 60.0);

/// Which `peer.csv` program stands for the article's: the one named by
/// `--article-program`, else the first whose name contains "article", else
/// one that contains "python", "asyncio" or "aiohttp".
pub fn article_program(table: &Table, named: Option<&str>) -> Option<String> {
    let programs: Vec<&str> = table.records().filter_map(|r| r.text("program")).collect();
    if let Some(named) = named {
        return programs
            .into_iter()
            .find(|p| *p == named)
            .map(str::to_string);
    }
    let containing = |words: &[&str]| {
        programs
            .iter()
            .find(|p| {
                let p = p.to_ascii_lowercase();
                words.iter().any(|w| p.contains(w))
            })
            .map(|p| p.to_string())
    };
    containing(&["article"]).or_else(|| containing(&["python", "asyncio", "aiohttp"]))
}

/// How many times faster each `peer.csv` row is than the article's
/// program on the same workload (same pages, concurrency and latency when
/// it was run on them; else its fastest row), or than the article's
/// published figure when peer.csv has no row for the article's program.
pub fn peer_speedups(table: &Table, article: Option<&str>) -> Vec<Option<f64>> {
    let baseline_rows: Vec<Record> = table
        .records()
        .filter(|r| article.is_some() && r.text("program") == article)
        .collect();
    let best = baseline_rows
        .iter()
        .filter_map(|r| r.num("pages_per_s"))
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    table
        .records()
        .map(|r| {
            let rate = r.num("pages_per_s")?;
            let base = if article.is_none() {
                Some(ARTICLE_PAGES_PER_S)
            } else {
                baseline_rows
                    .iter()
                    .find(|b| {
                        ["pages", "concurrency", "latency_ms"]
                            .iter()
                            .all(|c| b.num(c) == r.num(c))
                    })
                    .and_then(|b| b.num("pages_per_s"))
                    .or(best)
            }?;
            (base > 0.0).then(|| rate / base)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_found_by_name_whatever_their_order() {
        let t = Table::parse("pages,model,extra,concurrency\n50,tokio,x,8\n").unwrap();
        let r = t.records().next().unwrap();
        assert_eq!(r.text("model"), Some("tokio"));
        assert_eq!(r.num("concurrency"), Some(8.0));
        assert_eq!(r.num("pages"), Some(50.0));
        assert_eq!(r.text("peak_rss_kb"), None, "a missing column is empty");
        assert_eq!(t.missing("model,peak_rss_kb"), ["peak_rss_kb"]);
    }

    #[test]
    fn empty_short_and_long_rows_are_tolerated() {
        let text = "model,concurrency,peak_rss_kb,note\n\
                    threads,,2048,\n\
                    rayon,16\n\
                    smol,4,1000,\"a, quoted note\",surplus\n\
                    \n";
        let t = Table::parse(text).unwrap();
        assert_eq!(t.records().count(), 3);
        let rows: Vec<_> = t.records().collect();
        assert_eq!(rows[0].num("concurrency"), None);
        assert_eq!(rows[0].num("peak_rss_kb"), Some(2048.0));
        assert_eq!(rows[0].text("note"), None);
        assert_eq!(rows[1].num("concurrency"), Some(16.0));
        assert_eq!(rows[1].num("peak_rss_kb"), None);
        assert_eq!(rows[2].text("note"), Some("a, quoted note"));
    }

    #[test]
    fn headers_and_cells_are_trimmed_and_case_insensitive() {
        let t = Table::parse(" Model , Pages_Per_S \n tokio , 12.5 \n").unwrap();
        let r = t.records().next().unwrap();
        assert_eq!(r.text("model"), Some("tokio"));
        assert_eq!(r.num("pages_per_s"), Some(12.5));
    }

    #[test]
    fn non_numbers_are_not_measured() {
        let t = Table::parse("model,wall_s\ntokio,n/a\nsmol,NaN\n").unwrap();
        assert!(t.records().all(|r| r.num("wall_s").is_none()));
    }

    #[test]
    fn a_missing_file_is_none() {
        let path = std::env::temp_dir().join("bench-report-no-such-file.csv");
        assert!(Table::read(&path).unwrap().is_none());
    }

    #[test]
    fn shares_come_from_the_column_or_the_matching_ceiling() {
        let text = "kind,name,concurrency,latency_ms,requests_or_pages,wall_s,per_s,share_of_ceiling\n\
                    ceiling,wrk,50,10,10000,2,4900,\n\
                    ceiling,wrk,200,10,10000,1,19000,\n\
                    model,tokio,50,10,1000,0.25,4000,\n\
                    model,smol,200,10,1000,0.1,9500,\n\
                    model,rayon,50,10,1000,0.5,2000,0.5\n";
        let shares = ceiling_shares(&Table::parse(text).unwrap());
        assert_eq!(shares.len(), 3);
        assert!((shares[0].share.unwrap() - 4000.0 / 4900.0).abs() < 1e-12);
        assert_eq!(shares[0].ceiling_per_s, Some(4900.0));
        assert!((shares[1].share.unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(shares[2].share, Some(0.5), "the script's own share wins");
    }

    #[test]
    fn the_ceiling_measured_around_the_models_is_their_mean() {
        // The shape scripts/ceiling writes: wrk before and after the models.
        let text = "kind,name,concurrency,latency_ms,requests_or_pages,wall_s,per_s,share_of_ceiling,note\n\
                    ceiling,wrk-before,32,0,1,1,1100,1.048,\n\
                    model,tokio,32,0,1,1,700,,\n\
                    ceiling,wrk-after,32,0,1,1,1000,0.952,\n";
        let shares = ceiling_shares(&Table::parse(text).unwrap());
        assert_eq!(shares.len(), 1);
        assert_eq!(shares[0].ceiling_per_s, Some(1050.0));
        assert!((shares[0].share.unwrap() - 700.0 / 1050.0).abs() < 1e-12);
    }

    #[test]
    fn a_file_is_found_under_its_other_name() {
        let dir = std::env::temp_dir().join(format!("bench-report-alias-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("footprint-rss-scaling.csv"),
            "model,pages\ntokio,12000\n",
        )
        .unwrap();
        let (name, table) = FILES[3].read(&dir).unwrap().unwrap();
        assert_eq!(name, "footprint-rss-scaling.csv");
        assert_eq!(table.records().next().unwrap().num("pages"), Some(12000.0));
        assert!(FILES[0].read(&dir).unwrap().is_none());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn percent_shares_are_recognised() {
        let text =
            "kind,name,per_s,share_of_ceiling\nceiling,wrk,100,\nmodel,a,80,80\nmodel,b,,12.5\n";
        let shares = ceiling_shares(&Table::parse(text).unwrap());
        assert_eq!(shares[0].share, Some(0.8));
        assert_eq!(shares[1].share, Some(0.125));
    }

    #[test]
    fn peers_are_compared_with_the_article_program_on_the_same_workload() {
        let text = "program,pages,concurrency,latency_ms,pages_per_s\n\
                    python-article,1000,50,10,400\n\
                    python-article,1000,200,10,800\n\
                    fetchlab-tokio,1000,50,10,4000\n\
                    fetchlab-tokio,1000,100,10,4800\n\
                    fetchlab-smol,1000,50,10,\n";
        let t = Table::parse(text).unwrap();
        let article = article_program(&t, None);
        assert_eq!(article.as_deref(), Some("python-article"));
        let x = peer_speedups(&t, article.as_deref());
        assert_eq!(x, [Some(1.0), Some(1.0), Some(10.0), Some(6.0), None]);
        assert_eq!(article_program(&t, Some("nope")), None);
        let published = peer_speedups(&t, None);
        assert!((published[2].unwrap() - 4000.0 / ARTICLE_PAGES_PER_S).abs() < 1e-9);
    }
}
