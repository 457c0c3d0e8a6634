//! The library half of the `fetchlab` binary, shared with the benches: the
//! registry of models by name (so both run exactly the same set) and the
//! summary statistics both print.

pub mod models;
pub mod summary;
