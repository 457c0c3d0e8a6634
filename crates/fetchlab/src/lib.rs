//! The library half of the `fetchlab` binary: the registry of models by name,
//! shared with the benches so both run exactly the same set.

pub mod models;
