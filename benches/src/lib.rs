//! Helpers for the criterion benches (the reference pages every model is
//! checked against, and a run that counts successes) and, in [`report`], the
//! `bench-report` tool that turns results into docs/results/.

pub mod report;

use anyhow::{Result, bail};
use fetch_core::{CancelToken, Model, Options, Outcome, Page};

/// The pages of a run, or the first error.
fn pages(outcomes: &[Outcome]) -> Result<Vec<Page>> {
    outcomes
        .iter()
        .map(|o| match &o.result {
            Ok(p) => Ok(p.clone()),
            Err(e) => bail!("{} failed: {e}", o.url),
        })
        .collect()
}

fn run(model: &dyn Model, urls: &[String], options: &Options) -> Vec<Outcome> {
    model.run(urls, options, &mut |_| {}, &CancelToken::new())
}

/// A workload's URLs and the pages the sequential model fetched for them.
///
/// rayon-demo's rule: every variant is checked against the sequential result
/// before it is timed, so a model that returns wrong results never gets a time.
pub struct Reference {
    urls: Vec<String>,
    pages: Vec<Page>,
}

impl Reference {
    /// Fetches `urls` once with the sequential model.
    pub fn new(urls: Vec<String>, options: &Options) -> Reference {
        let outcomes = run(&fetch_sequential::Sequential::new(), &urls, options);
        let pages = pages(&outcomes).unwrap_or_else(|e| panic!("reference run failed: {e}"));
        Reference { urls, pages }
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Runs `model` once and compares every page with the reference.
    pub fn verify(&self, model: &dyn Model, options: &Options) -> Result<()> {
        let got = pages(&run(model, &self.urls, options))?;
        if let Some(i) = (0..got.len()).find(|&i| got[i] != self.pages[i]) {
            bail!(
                "page {i} differs: {:?} against the reference {:?}",
                got[i],
                self.pages[i]
            );
        }
        Ok(())
    }
}

/// Runs `model` over `urls` and returns how many pages succeeded; the bench
/// closure asserts it, so a run that silently fails cannot look fast.
pub fn run_ok(model: &dyn Model, urls: &[String], options: &Options) -> usize {
    run(model, urls, options)
        .iter()
        .filter(|o| o.is_ok())
        .count()
}

/// The CPU stage's parse as fetch-core did it before its streaming parse:
/// a whole DOM (scraper, html5ever's tree builder), then the first `title`'s
/// text and the `a[href]` elements. The reference the parse bench and the
/// corpus check (`examples/parse_corpus.rs`) compare against.
pub fn dom_parse(body: &[u8]) -> (Option<String>, usize) {
    use std::sync::LazyLock;

    use scraper::{Html, Selector};
    // Constant selectors: parsing them cannot fail.
    static TITLE: LazyLock<Selector> =
        LazyLock::new(|| Selector::parse("title").expect("constant selector"));
    static LINKS: LazyLock<Selector> =
        LazyLock::new(|| Selector::parse("a[href]").expect("constant selector"));
    let text = String::from_utf8_lossy(body);
    let doc = Html::parse_document(&text);
    let title = doc
        .select(&TITLE)
        .next()
        .map(|t| t.text().collect::<Vec<_>>().join(" "))
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty());
    (title, doc.select(&LINKS).count())
}
