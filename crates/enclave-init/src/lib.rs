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
pub mod engine;
pub mod host;
pub mod model;
pub mod parse;
pub mod run;
pub mod runtime;
pub mod sys;

/// The wire types of the control socket (their own crate, which `initctl`
/// uses without linking init).
pub use initctl_proto as proto;
