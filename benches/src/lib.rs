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
