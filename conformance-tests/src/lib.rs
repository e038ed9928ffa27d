//! The conformance suite: readers for HyperDbg's public test files, the model of how their
//! expected values were generated, and the runner that compares hvscript against them.

pub mod generator_model;
pub mod suite_file;
