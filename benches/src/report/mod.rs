//! The parts of `bench-report`. The inputs (criterion's results, the
//! scripts' CSVs, the machine) are read by [`criterion`], [`measurements`]
//! and [`machine`]; [`figures`] is the vocabulary everything shares (model
//! order, number formats, latency bounds) and imports none of them; the
//! outputs, [`summary`] and [`plots`], use the inputs and the vocabulary but
//! not each other.

pub mod criterion;
pub mod figures;
pub mod machine;
pub mod measurements;
pub mod plots;
pub mod summary;
