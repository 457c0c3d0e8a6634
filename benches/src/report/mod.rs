//! The parts of `bench-report`: reading criterion's results and the
//! scripts' CSVs, naming the machine, writing the summary and the plots.

pub mod criterion;
pub mod machine;
pub mod measurements;
pub mod plots;
pub mod summary;
