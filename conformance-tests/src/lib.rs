//! The conformance suite: readers for HyperDbg's public test files, the model of how their
//! expected values were generated, HyperDbg's harness context, and the runner that compares
//! hvscript against them and against its own cases (`cases/`).

pub mod cases;
pub mod exec;
pub mod generator_model;
pub mod harness;
pub mod report;
pub mod runner;
pub mod suite_file;
pub mod vm_backend;

pub use exec::Backend;
pub use report::Report;
pub use runner::run_dir;
