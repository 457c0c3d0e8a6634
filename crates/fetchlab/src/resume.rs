//! `fetchlab run --out FILE --resume`: what an earlier run already wrote to
//! FILE, and which input lines it leaves to fetch.
//!
//! A line's *final* record is the one whose `error.kind` is none of
//! `cancelled`, `deadline` and `save` (a page, or a failure that fetching
//! again would not change, such as a 404 or an `invalid_url`, or a decision
//! such as `robots_disallowed`; a page that
//! could not be saved is fetched again, once the disk has room). A resumed
//! run skips every input line that has one and appends records for the
//! rest, so FILE ends with at most one final record per line, and with
//! exactly one once a run ends on its own. The older `cancelled`, `deadline` and `save` records of
//! a line stay where they are, before its final one.
//!
//! FILE is read once, before anything is fetched:
//! - a last line without its newline is the record a killed run was writing
//!   (a `kill -9`, a power cut). It is cut off, even when it happens to parse,
//!   so its URL is fetched again and gets one complete record;
//! - a complete line that is not a record is an error naming the file and
//!   the line: the file was edited, or is not fetchlab's, and guessing which
//!   lines count could fetch a URL twice or never;
//! - two final records for one index are an error too (one run never writes
//!   them).
//!
//! Memory: 16 bytes per final record (its index and a hash of its URL), in a
//! vector sorted by index, which the run walks in input order. The URL's
//! hash is how a record is matched with its input line, so that a file
//! written for another URL list is refused instead of being "completed"
//! with the wrong pages; the record itself is read again from FILE only to
//! word that error.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The error kinds whose records are not final: the line was not finished
/// (or its page not saved), and a resumed run fetches it again.
pub const NOT_FINAL: [&str; 3] = ["cancelled", "deadline", "save"];

/// A record's fields that resume reads; the others are ignored.
#[derive(Deserialize)]
struct Saved {
    index: u64,
    url: String,
    /// Required, `null` included: a line without it is not a record
    /// (`deserialize_with` turns off serde's "a missing `Option` is `None`").
    #[serde(deserialize_with = "Option::deserialize")]
    error: Option<SavedError>,
}

#[derive(Deserialize)]
struct SavedError {
    kind: String,
}

impl Saved {
    fn is_final(&self) -> bool {
        self.error
            .as_ref()
            .is_none_or(|e| !NOT_FINAL.contains(&e.kind.as_str()))
    }
}

/// An unfinished last line: what a killed run was writing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cut {
    /// Its line number, from 1.
    pub line: u64,
    /// Its length in bytes.
    pub bytes: u64,
}

/// What reading a file of records found, besides the records themselves.
#[derive(Debug, PartialEq)]
struct Scanned {
    /// Where the last complete line ends: the file's length once cut.
    valid_len: u64,
    cut: Option<Cut>,
}

/// A complete line that is not a record.
#[derive(Debug)]
enum ScanError {
    Io(io::Error),
    Malformed { line: u64, why: String },
}

/// Reads `reader` record by record, calling `each` with the line number
/// (from 1) and the record of every complete line; a last line without a
/// newline is reported as cut, not parsed.
fn scan(
    mut reader: impl BufRead,
    mut each: impl FnMut(u64, Saved) -> Result<(), ScanError>,
) -> Result<Scanned, ScanError> {
    let mut buf = Vec::new();
    let mut valid_len = 0u64;
    let mut line = 0u64;
    loop {
        buf.clear();
        let n = match reader.read_until(b'\n', &mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ScanError::Io(e)),
        };
        if n == 0 {
            return Ok(Scanned {
                valid_len,
                cut: None,
            });
        }
        line += 1;
        if buf.last() != Some(&b'\n') {
            return Ok(Scanned {
                valid_len,
                cut: Some(Cut {
                    line,
                    bytes: n as u64,
                }),
            });
        }
        let saved = serde_json::from_slice::<Saved>(&buf).map_err(|e| ScanError::Malformed {
            line,
            why: format!("{e}: {}", shown(&buf)),
        })?;
        each(line, saved)?;
        valid_len += n as u64;
    }
}

/// The start of a bad line, for an error message.
fn shown(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    match text.char_indices().nth(120) {
        Some((end, _)) => format!("{:?}…", &text[..end]),
        None => format!("{text:?}"),
    }
}

fn url_hash(url: &str) -> u64 {
    // SipHash with fixed keys: the same in the whole process, which is all
    // that is needed (hashes are never stored).
    let mut h = DefaultHasher::new();
    url.hash(&mut h);
    h.finish()
}

/// The records of an earlier run, and the walk of the input against them.
#[derive(Debug)]
pub struct Resume {
    path: PathBuf,
    /// (index, hash of the URL) of every final record, sorted by index.
    done: Vec<(u64, u64)>,
    /// The next entry of `done` that the input walk has not reached.
    pos: usize,
    /// The highest index of any record, final or not.
    max_index: Option<u64>,
    records: u64,
    scanned: Scanned,
    /// Input lines skipped so far as already done.
    skipped: u64,
}

/// The input does not match FILE: it was written for another URL list.
#[derive(Debug)]
pub struct Conflict(String);

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Conflict {}

impl Resume {
    /// Opens FILE to resume it: `None` when it does not exist yet. Reads it
    /// and leaves it untouched; [`append_to`](Self::append_to) cuts an
    /// unfinished last line once the run is sure to go ahead.
    pub fn open(path: &Path) -> Result<Option<(Resume, File)>> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot open {} to resume", path.display()));
            }
        };
        let meta = file
            .metadata()
            .with_context(|| format!("cannot open {} to resume", path.display()))?;
        if !meta.is_file() {
            bail!(
                "cannot resume {}: not a regular file (--resume reads the records back, then \
                 appends)",
                path.display()
            );
        }
        let resume = Resume::from_reader(path, BufReader::new(&file))?;
        Ok(Some((resume, file)))
    }

    /// Reads the records of `reader`, the contents of `path`.
    pub fn from_reader(path: &Path, reader: impl BufRead) -> Result<Resume> {
        let mut done = Vec::new();
        let mut max_index = None::<u64>;
        let mut records = 0;
        let scanned = scan(reader, |_, saved| {
            records += 1;
            max_index = Some(max_index.map_or(saved.index, |m| m.max(saved.index)));
            if saved.is_final() {
                done.push((saved.index, url_hash(&saved.url)));
            }
            Ok(())
        })
        .map_err(|e| match e {
            ScanError::Io(e) => {
                anyhow::Error::new(e).context(format!("reading {} to resume", path.display()))
            }
            ScanError::Malformed { line, why } => anyhow::anyhow!(
                "cannot resume {}: line {line} is not a fetchlab record ({why}); fix or remove \
                 that line (resume does not guess which lines are done)",
                path.display()
            ),
        })?;
        // Records are written as URLs finish, not in input order.
        done.sort_unstable();
        if let Some(w) = done.windows(2).find(|w| w[0].0 == w[1].0) {
            let index = w[0].0;
            let lines = find_records(path, index, true)
                .iter()
                .map(|(line, _)| line.to_string())
                .collect::<Vec<_>>()
                .join(" and ");
            bail!(
                "cannot resume {}: it holds two final records for index {index} (lines {lines}); \
                 a run writes at most one per input line, so the file was edited or joined \
                 from two runs: keep one of them",
                path.display()
            );
        }
        done.shrink_to_fit();
        Ok(Resume {
            path: path.to_path_buf(),
            done,
            pos: 0,
            max_index,
            records,
            scanned,
            skipped: 0,
        })
    }

    /// Cuts an unfinished last line off `file` (this resume's FILE) and
    /// places the cursor at the end, ready to append records.
    pub fn append_to(&self, mut file: File) -> io::Result<File> {
        if self.scanned.cut.is_some() {
            file.set_len(self.scanned.valid_len)?;
        }
        file.seek(SeekFrom::Start(self.scanned.valid_len))?;
        Ok(file)
    }

    /// The unfinished last line that [`append_to`](Self::append_to) cuts.
    pub fn cut(&self) -> Option<Cut> {
        self.scanned.cut
    }

    /// Complete records read.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Input lines with a final record.
    pub fn done(&self) -> u64 {
        self.done.len() as u64
    }

    /// Input lines skipped so far by [`check`](Self::check).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Whether the input line at `index` is already done (skip it), to be
    /// called for every input index in turn, from 0. `url` is the line as
    /// its record shows it; a final record with another URL is a
    /// [`Conflict`].
    pub fn check(&mut self, index: u64, url: &str) -> Result<bool, Conflict> {
        while self.done.get(self.pos).is_some_and(|&(i, _)| i < index) {
            self.pos += 1;
        }
        match self.done.get(self.pos) {
            Some(&(i, hash)) if i == index => {
                if hash != url_hash(url) {
                    return Err(self.another_list(index, url));
                }
                self.pos += 1;
                self.skipped += 1;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// At the end of an input of `lines` URL lines: a record for an index
    /// past it is a [`Conflict`].
    pub fn finish(&self, lines: u64) -> Result<(), Conflict> {
        match self.max_index {
            Some(max) if max >= lines => {
                let at = find_records(&self.path, max, false)
                    .first()
                    .map_or(String::new(), |(line, _)| format!(" (line {line})"));
                Err(Conflict(format!(
                    "{} was written for another URL list: it has a record for index {max}{at}, \
                     but the input has {lines} URL lines (indexes 0 to {})",
                    self.path.display(),
                    lines.saturating_sub(1)
                )))
            }
            _ => Ok(()),
        }
    }

    /// Starts the input walk again (after a first pass that checked it).
    pub fn rewind(&mut self) {
        self.pos = 0;
        self.skipped = 0;
    }

    fn another_list(&self, index: u64, url: &str) -> Conflict {
        let said = find_records(&self.path, index, true)
            .into_iter()
            .next()
            .map_or("another URL".to_string(), |(line, url)| {
                format!("{url:?} (line {line})")
            });
        Conflict(format!(
            "{} was written for another URL list: the line at index {index} is {url:?}, the \
             record says {said}; use another --out file, or the URL list it was written for",
            self.path.display()
        ))
    }
}

/// The (line number, URL) of the records for `index` in `path` (only the
/// final ones if `final_only`): read again to word an error, so that the
/// run keeps no URLs in memory. Empty if the file cannot be read.
fn find_records(path: &Path, index: u64, final_only: bool) -> Vec<(u64, String)> {
    let Ok(file) = File::open(path) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let _ = scan(BufReader::new(file), |line, saved| {
        if saved.index == index && (saved.is_final() || !final_only) {
            found.push((line, saved.url));
        }
        Ok(())
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(index: u64, url: &str, kind: Option<&str>) -> String {
        let error = kind.map_or(
            serde_json::Value::Null,
            |k| serde_json::json!({"kind": k, "message": "m"}),
        );
        let r = serde_json::json!({
            "attempts": 1, "bytes": null, "elapsed_ms": 1.0, "error": error, "index": index,
            "links": null, "ok": kind.is_none(), "status": null, "title": null, "url": url,
        });
        format!("{r}\n")
    }

    fn read(text: &str) -> Result<Resume> {
        Resume::from_reader(Path::new("out.jsonl"), text.as_bytes())
    }

    #[test]
    fn final_records_are_done_and_cancelled_or_deadline_ones_are_not() {
        let text = [
            rec(0, "http://a/0", None),
            rec(1, "http://a/1", Some("cancelled")),
            rec(2, "http://a/2", Some("deadline")),
            rec(3, "http://a/3", Some("http_status")),
            rec(4, "not a url", Some("invalid_url")),
            // A line cancelled once, then done by a resumed run.
            rec(1, "http://a/1", Some("timeout")),
        ]
        .concat();
        let mut r = read(&text).unwrap();
        assert_eq!((r.records(), r.done(), r.cut()), (6, 4, None));
        assert_eq!(r.scanned.valid_len, text.len() as u64);
        let walk: Vec<bool> = ["http://a/0", "http://a/1", "http://a/2", "http://a/3"]
            .iter()
            .enumerate()
            .map(|(i, url)| r.check(i as u64, url).unwrap())
            .collect();
        assert_eq!(walk, [true, true, false, true]);
        assert!(r.check(4, "not a url").unwrap());
        assert!(!r.check(5, "http://a/5").unwrap(), "past the records");
        assert_eq!(r.skipped(), 4);
        r.finish(6).unwrap();
        r.rewind();
        assert_eq!(r.skipped(), 0);
        assert!(
            r.check(0, "http://a/0").unwrap(),
            "walked again from the start"
        );
    }

    #[test]
    fn a_page_that_could_not_be_saved_is_fetched_again() {
        let text = [
            rec(0, "http://a/0", Some("save")),
            rec(1, "http://a/1", None),
        ]
        .concat();
        let mut r = read(&text).unwrap();
        assert_eq!((r.records(), r.done()), (2, 1));
        assert!(
            !r.check(0, "http://a/0").unwrap(),
            "not saved: fetched again"
        );
        assert!(r.check(1, "http://a/1").unwrap());
    }

    #[test]
    fn an_unfinished_last_line_is_cut_even_if_it_parses() {
        let complete = rec(0, "http://a/0", None);
        let half = &rec(1, "http://a/1", None)[..30];
        let r = read(&format!("{complete}{half}")).unwrap();
        assert_eq!(r.records(), 1);
        assert_eq!(r.cut(), Some(Cut { line: 2, bytes: 30 }));
        assert_eq!(r.scanned.valid_len, complete.len() as u64);

        // A whole record, but its newline never made it: cut all the same.
        let whole = rec(1, "http://a/1", None);
        let r = read(&format!("{complete}{}", whole.trim_end())).unwrap();
        assert_eq!((r.records(), r.done()), (1, 1));
        assert_eq!(r.cut().unwrap().bytes, whole.len() as u64 - 1);

        let r = read("").unwrap();
        assert_eq!((r.records(), r.cut(), r.scanned.valid_len), (0, None, 0));
    }

    #[test]
    fn a_complete_line_that_is_not_a_record_is_an_error_naming_it() {
        let good = rec(0, "http://a/0", None);
        for bad in [
            "{\"index\": 1, \"url\": \"x\", \"er",
            "not json at all",
            "",
            "{\"index\": 1, \"url\": \"x\"}",
            "{\"index\": -1, \"url\": \"x\", \"error\": null}",
            "{\"index\": 1, \"url\": \"x\", \"error\": {\"message\": \"no kind\"}}",
        ] {
            let err = read(&format!("{good}{bad}\n{good}"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("cannot resume out.jsonl: line 2 is not a fetchlab record"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn two_final_records_for_one_line_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let text = [
            rec(0, "http://a/0", None),
            rec(1, "http://a/1", Some("cancelled")),
            rec(1, "http://a/1", None),
            rec(1, "http://a/1", Some("connect")),
        ]
        .concat();
        std::fs::write(&path, text).unwrap();
        let err = Resume::open(&path).unwrap_err().to_string();
        assert!(
            err.contains("two final records for index 1 (lines 3 and 4)"),
            "{err}"
        );
    }

    #[test]
    fn another_url_list_is_a_conflict_naming_both_urls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let text = [rec(0, "http://a/0", None), rec(1, "http://a/1", None)].concat();
        std::fs::write(&path, &text).unwrap();
        let (mut r, _) = Resume::open(&path).unwrap().unwrap();
        assert!(r.check(0, "http://a/0").unwrap());
        let err = r.check(1, "http://b/1").unwrap_err().to_string();
        let expected = format!(
            "{} was written for another URL list: the line at index 1 is \"http://b/1\", the \
             record says \"http://a/1\" (line 2)",
            path.display()
        );
        assert!(err.starts_with(&expected), "{err}");

        // A record past the end of the input.
        r.finish(2).unwrap();
        let err = r.finish(1).unwrap_err().to_string();
        assert!(
            err.contains("a record for index 1 (line 2), but the input has 1 URL lines"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_file_starts_fresh_and_a_cut_is_made_only_on_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        assert!(Resume::open(&path).unwrap().is_none());

        let complete = rec(0, "http://a/0", None);
        let text = format!("{complete}{{\"index\":1,\"ur");
        std::fs::write(&path, &text).unwrap();
        let (r, file) = Resume::open(&path).unwrap().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "reading leaves the file as it was"
        );
        let mut file = r.append_to(file).unwrap();
        io::Write::write_all(&mut file, b"next\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{complete}next\n")
        );
    }
}
