//! The parsers: text (or bytes) in, values of the model and diagnostics
//! out. Pure: no files, no processes, no clock; every bad input is a
//! diagnostic naming file, line and key, never a panic (they are fuzzed).

pub mod cli;
pub mod config;
pub mod diag;
pub mod legacy;
pub mod service;
pub mod toml_keys;
pub mod unit;
pub mod words;
