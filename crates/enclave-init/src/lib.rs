//! enclave-init: PID 1 for AWS Nitro Enclaves.
//!
//! The binary is a thin `main`; everything lives here so that tests drive
//! the real code. See ARCHITECTURE.md for the map.

// PID 1 must never die: no panicking shortcuts in init's own code.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::exit,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod boot;
pub mod cli;
pub mod config;
pub mod console;
pub mod control;
pub mod diag;
pub mod duration;
pub mod fault;
pub mod files;
pub mod graph;
pub mod heartbeat;
pub mod legacy;
pub mod lifecycle;
pub mod notify;
pub mod orchestrator;
pub mod output;
pub mod panics;
pub mod ratelimit;

/// The wire types of the control socket (their own crate, which `initctl`
/// uses without linking init).
pub use initctl_proto as proto;
pub mod run;
pub mod spawn;
pub mod spec;
pub mod supervisor;
pub mod sys;
pub mod toml_keys;
pub mod words;
