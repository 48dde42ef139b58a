//! The config file: any text gives a config (defaults where invalid).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "stats.rs"]
mod stats;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (_config, diags) =
        enclave_init::parse::config::parse(std::path::Path::new("/etc/enclave-init.toml"), &text);
    for d in &diags {
        let _ = d.to_string();
    }
    // Parsed: read with no error (warnings about unknown keys allowed).
    stats::count(
        !diags
            .iter()
            .any(|d| d.severity == enclave_init::parse::diag::Severity::Error),
    );
});
