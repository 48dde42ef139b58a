//! How much of what a target ran got past its parser: printed when the
//! fuzzer exits (`fuzz-stats: P of N inputs parsed`), so that a run shows
//! whether it reached the code behind the parser at all. `cargo xtask
//! fuzz` collects the line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

static RUNS: AtomicU64 = AtomicU64::new(0);
static PARSED: AtomicU64 = AtomicU64::new(0);
static AT_EXIT: Once = Once::new();

extern "C" fn report() {
    let runs = RUNS.load(Ordering::Relaxed);
    let parsed = PARSED.load(Ordering::Relaxed);
    let share = if runs == 0 {
        0.0
    } else {
        100.0 * parsed as f64 / runs as f64
    };
    eprintln!("fuzz-stats: {parsed} of {runs} inputs parsed ({share:.1}%)");
}

/// Counts one input, and whether it parsed.
pub fn count(parsed: bool) {
    AT_EXIT.call_once(|| {
        // SAFETY: registering a plain extern "C" function with no state.
        unsafe { libc::atexit(report) };
    });
    RUNS.fetch_add(1, Ordering::Relaxed);
    if parsed {
        PARSED.fetch_add(1, Ordering::Relaxed);
    }
}
