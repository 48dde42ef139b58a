//! What the boot and the runtime share of the host, below both: init's
//! console, bounded file reads, the panic guard, rate limits, test-only
//! fault points, captured output's lines and rings, and reading the config
//! and the service directory.

pub mod console;
pub mod fault;
pub mod files;
pub mod load;
pub mod output;
pub mod panics;
pub mod ratelimit;
