//! The config file: any text gives a config (defaults where invalid).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (_config, diags) =
        enclave_init::config::parse(std::path::Path::new("/etc/enclave-init.toml"), &text);
    for d in &diags {
        let _ = d.to_string();
    }
});
