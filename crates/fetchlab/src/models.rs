//! Every model the CLI knows, by name. A new model crate adds one line here.

use anyhow::{Result, bail};
use fetch_core::Model;

type Constructor = fn() -> Box<dyn Model>;

/// (name, constructor), in the order tables list them: blocking models first,
/// then the async ones.
const MODELS: &[(&str, Constructor)] = &[("sequential", || {
    Box::new(fetch_sequential::Sequential::new())
})];

/// Every model's name, in table order.
pub fn names() -> Vec<&'static str> {
    MODELS.iter().map(|(name, _)| *name).collect()
}

/// Builds the model called `name`, or says which names exist.
pub fn build(name: &str) -> Result<Box<dyn Model>> {
    match MODELS.iter().find(|(n, _)| *n == name) {
        Some((_, make)) => Ok(make()),
        None => bail!(
            "unknown model {name:?}; available models: {}",
            names().join(", ")
        ),
    }
}

/// Parses a comma-separated list of model names ("all" for every model).
pub fn parse_list(list: &str) -> Result<Vec<&'static str>> {
    if list.trim() == "all" {
        return Ok(names());
    }
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        build(name)?; // validates the name with a helpful message
        let known = names().into_iter().find(|n| *n == name);
        out.extend(known);
    }
    if out.is_empty() {
        bail!("--models needs at least one model name");
    }
    Ok(out)
}
