//! Service files: any text must give a spec or diagnostics, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (result, diags) =
        enclave_init::spec::parse(std::path::Path::new("/service/fuzz.service"), "fuzz", &text);
    // Every diagnostic renders, and an accepted spec has a command.
    for d in &diags {
        let _ = d.to_string();
    }
    if let Ok(spec) = result {
        assert!(!spec.exec_start.is_empty());
    }
    let _ = enclave_init::words::split(&text);
});
