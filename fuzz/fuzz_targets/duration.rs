//! Durations: parse, and what parses formats without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "stats.rs"]
mod stats;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = enclave_init::model::duration::parse(&text);
    stats::count(parsed.is_ok());
    if let Ok(d) = parsed {
        let _ = enclave_init::model::duration::format(d);
    }
    if data.len() >= 8 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&data[..8]);
        let _ = enclave_init::model::duration::from_secs_f64(f64::from_le_bytes(b));
        let _ = enclave_init::model::duration::from_secs_i64(i64::from_le_bytes(b));
    }
});
