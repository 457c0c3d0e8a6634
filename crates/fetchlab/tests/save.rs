//! `fetchlab run --save DIR` as a user runs it, against a mock server on
//! 127.0.0.1: where records say their pages ended up, and the files they
//! point at.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use fetch_core::save;
use mock_server::{FaultSet, MockConfig, MockServer};
use serde_json::Value;

fn fetchlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fetchlab"))
}

fn records(text: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(text)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `fetchlab run --model MODEL --urls LIST --save DIR` plus `extra`.
fn run_saving(model: &str, list: &Path, dir: &Path, extra: &[&str]) -> Output {
    fetchlab()
        .args(["run", "--model", model, "--retries", "0", "--urls"])
        .arg(list)
        .arg("--save")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap()
}

/// Every file under `dir`, relative, with `/`, sorted.
fn files_under(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                let parts: Vec<_> = rel.iter().map(|p| p.to_string_lossy()).collect();
                out.insert(parts.join("/"));
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// Every model: one file per page, each record's `saved` pointing at a file
/// whose length is its `bytes`; `final_url` and `content_type` after
/// redirects and for a page that is not HTML; no file for an error, and no
/// temp file left (not even the one planted as a killed run's leftover).
#[test]
fn save_writes_one_file_per_page_where_its_record_says() {
    let mut config = MockConfig::default();
    config.faults.not_found = FaultSet::ids([3]);
    let srv = MockServer::start(config).unwrap();
    let page = |id: u64, query: &str| format!("{}?{query}", srv.page_url(id));
    let html = Some("text/html; charset=utf-8");
    // (the URL, its final URL, its Content-Type; None for an error)
    let table = [
        (srv.page_url(0), srv.page_url(0), html),
        (srv.page_url(1), srv.page_url(1), html),
        (page(2, "redirect=2"), page(2, "redirect=0"), html),
        (srv.page_url(3), srv.page_url(3), None),
        (
            page(4, "content_type=text%2Fplain"),
            page(4, "content_type=text%2Fplain"),
            Some("text/plain"),
        ),
        (page(5, "location=%2Fpage%2F6"), srv.page_url(6), html),
        (
            page(7, "location=%2Fpage%2F8%3Fstatus%3D404"),
            page(8, "status=404"),
            None,
        ),
    ];
    let urls: Vec<&str> = table.iter().map(|(url, _, _)| url.as_str()).collect();
    let tmp = tempfile::tempdir().unwrap();
    let list = tmp.path().join("urls.txt");
    std::fs::write(&list, urls.join("\n")).unwrap();
    let models = fetchlab().arg("models").output().unwrap();
    let models = String::from_utf8(models.stdout).unwrap();
    for model in models.lines() {
        // Not there yet: --save creates it, parents included.
        let dir = tmp.path().join(model).join("pages");
        std::fs::create_dir_all(dir.join(".tmp")).unwrap();
        std::fs::write(dir.join(".tmp/99999-0"), b"half a pa").unwrap();
        let out = run_saving(model, &list, &dir, &[]);
        assert_eq!(out.status.code(), Some(0), "{model}: {}", stderr(&out));
        let mut records = records(&out.stdout);
        records.sort_by_key(|r| r["index"].as_u64());
        assert_eq!(records.len(), urls.len(), "{model}");
        let mut saved = BTreeSet::new();
        for (r, (_, final_url, content_type)) in records.iter().zip(&table) {
            let why = format!("{model}, {r}");
            assert_eq!(r["final_url"], final_url.as_str(), "{why}");
            let Some(content_type) = content_type else {
                assert_eq!(r["error"]["kind"], "http_status", "{why}");
                assert_eq!(r["saved"], Value::Null, "{why}");
                assert_eq!(r["content_type"], Value::Null, "{why}");
                continue;
            };
            assert_eq!(r["content_type"], *content_type, "{why}");
            let name = r["saved"].as_str().unwrap_or_else(|| panic!("{why}"));
            assert_eq!(
                name,
                save::relative_path(final_url, Some(content_type)),
                "{why}"
            );
            let len = std::fs::metadata(dir.join(name)).unwrap().len();
            assert_eq!(Some(len), r["bytes"].as_u64(), "{why}");
            saved.insert(name.to_string());
        }
        assert_eq!(saved.len(), 5, "{model}: one file per page");
        assert_eq!(files_under(&dir), saved, "{model}: those files, no other");
    }
}

/// A DIR that cannot be written stops the run before it fetches anything:
/// exit 1, a message naming it, no record.
#[test]
fn a_save_dir_that_cannot_be_written_is_a_clear_error() {
    let srv = MockServer::start(MockConfig::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let list = tmp.path().join("urls.txt");
    std::fs::write(&list, srv.page_urls(3).join("\n")).unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    // (Root writes through permission bits, so the test uses a file in the
    // way, which stops root too.)
    for bad in [file.clone(), file.join("pages")] {
        let out = run_saving("sequential", &list, &bad, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let message = stderr(&out);
        let expected = format!("--save {}: cannot save pages there", bad.display());
        assert!(message.contains(&expected), "{message}");
        assert!(out.stdout.is_empty(), "no record");
    }
    assert_eq!(srv.stats().total_requests, 0, "nothing fetched");
}

/// A page that cannot be saved mid-run (a file stands where its directory
/// must go) is a `save` record saying where the page was; the run goes on
/// and ends with 0. `--resume` fetches that page again, and only it, once
/// the way is clear.
#[test]
fn a_page_that_cannot_be_saved_is_a_save_record_and_resume_fetches_it_again() {
    let srv = MockServer::start(MockConfig::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (list, out_file) = (tmp.path().join("urls.txt"), tmp.path().join("out.jsonl"));
    let urls = srv.page_urls(12);
    std::fs::write(&list, urls.join("\n")).unwrap();
    let dir = tmp.path().join("pages");
    std::fs::create_dir(&dir).unwrap();
    let html = Some("text/html; charset=utf-8");
    let blocked = save::relative_path(&urls[5], html)[..2].to_string();
    std::fs::write(dir.join(&blocked), b"in the way").unwrap();
    // Every page whose file would go in that directory fails.
    let unsaved: BTreeSet<u64> = (0..12)
        .filter(|&i| save::relative_path(&urls[i as usize], html).starts_with(&blocked))
        .collect();
    let out_arg = ["--out", out_file.to_str().unwrap()];

    let out = run_saving("tokio", &list, &dir, &out_arg);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let first = records(&std::fs::read(&out_file).unwrap());
    assert_eq!(first.len(), 12);
    for r in &first {
        let index = r["index"].as_u64().unwrap();
        if unsaved.contains(&index) {
            assert_eq!(r["error"]["kind"], "save", "{r}");
            assert_eq!(r["ok"], false, "{r}");
            assert_eq!(r["final_url"], urls[index as usize].as_str(), "{r}");
            let message = r["error"]["message"].as_str().unwrap();
            assert!(message.contains("cannot save the page"), "{message}");
        } else {
            assert_eq!(r["ok"], true, "{r}");
        }
    }
    assert!(stderr(&out).contains("save"), "{}", stderr(&out));

    std::fs::remove_file(dir.join(&blocked)).unwrap();
    srv.reset_stats();
    let mut resume = out_arg.to_vec();
    resume.push("--resume");
    let out = run_saving("tokio", &list, &dir, &resume);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let requested: BTreeSet<u64> = srv.stats().requests_per_id.keys().copied().collect();
    assert_eq!(
        requested, unsaved,
        "only the pages not saved are fetched again"
    );
    let all = records(&std::fs::read(&out_file).unwrap());
    let again: Vec<&Value> = all[first.len()..].iter().collect();
    assert_eq!(again.len(), unsaved.len());
    for r in again {
        let name = r["saved"].as_str().unwrap_or_else(|| panic!("{r}"));
        let len = std::fs::metadata(dir.join(name)).unwrap().len();
        assert_eq!(Some(len), r["bytes"].as_u64(), "{r}");
    }
    assert_eq!(files_under(&dir).len(), 12, "every page saved now");
}
