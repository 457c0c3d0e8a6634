//! Helpers for the criterion benches: build the workload once, and refuse to
//! time a model whose pages differ from the sequential model's.

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

/// Runs `model` once and checks that every page equals the sequential
/// model's page for the same URL (rayon-demo's rule: a variant that returns
/// wrong results must not get a time).
pub fn verify_against_sequential(
    model: &dyn Model,
    urls: &[String],
    options: &Options,
) -> Result<()> {
    let run = |m: &dyn Model| m.run(urls, options, &mut |_| {}, &CancelToken::new());
    let reference = pages(&run(&fetch_sequential::Sequential::new()))?;
    let got = pages(&run(model))?;
    if got != reference {
        bail!("{}: pages differ from the sequential model's", model.name());
    }
    Ok(())
}

/// Runs `model` over `urls` and returns how many pages succeeded; the bench
/// closure asserts it, so a run that silently fails cannot look fast.
pub fn run_ok(model: &dyn Model, urls: &[String], options: &Options) -> usize {
    model
        .run(urls, options, &mut |_| {}, &CancelToken::new())
        .iter()
        .filter(|o| o.is_ok())
        .count()
}
