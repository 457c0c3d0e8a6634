//! Every model the CLI and the benches know, by name. A new model crate adds
//! one line to `MODELS` and one dependency to this crate's Cargo.toml.

use anyhow::{Result, bail};
use fetch_core::Model;

type Constructor = fn() -> Box<dyn Model>;

/// (name, constructor), in the order tables list them: the blocking models
/// first, then the async ones.
const MODELS: &[(&str, Constructor)] = &[
    ("sequential", || {
        Box::new(fetch_sequential::Sequential::new())
    }),
    ("threads", || Box::new(fetch_threads::Threads::new())),
    ("rayon", || Box::new(fetch_rayon::Rayon::new())),
    ("tokio", || Box::new(fetch_tokio::Tokio::new())),
    ("async-std", || Box::new(fetch_async_std::AsyncStd::new())),
    ("smol", || Box::new(fetch_smol::Smol::new())),
    ("mio", || Box::new(fetch_mio::Mio::new())),
    ("local", || Box::new(fetch_local::Local::new())),
    ("per-core", || Box::new(fetch_local::Local::per_core())),
    // Its workers are this program again, with the hidden `process-worker` subcommand.
    ("processes", || {
        let worker = fetch_processes::WorkerCommand::this_program(["process-worker"]);
        Box::new(fetch_processes::Processes::new(worker))
    }),
];

/// Every model's name, in table order.
pub fn names() -> Vec<&'static str> {
    MODELS.iter().map(|(name, _)| *name).collect()
}

/// Builds the model called `name`, or says which names exist.
pub fn build(name: &str) -> Result<Box<dyn Model>> {
    lookup(name).map(|(_, make)| make())
}

/// Parses a comma-separated list of model names ("all" for every model).
pub fn parse_list(list: &str) -> Result<Vec<&'static str>> {
    if list.trim() == "all" {
        return Ok(names());
    }
    let out = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| lookup(name).map(|(known, _)| *known))
        .collect::<Result<Vec<_>>>()?;
    if out.is_empty() {
        bail!("--models needs at least one model name");
    }
    Ok(out)
}

/// The registry entry called `name`, or an error listing the names.
fn lookup(name: &str) -> Result<&'static (&'static str, Constructor)> {
    match MODELS.iter().find(|(n, _)| *n == name) {
        Some(entry) => Ok(entry),
        None => bail!(
            "unknown model {name:?}; available models: {}",
            names().join(", ")
        ),
    }
}
