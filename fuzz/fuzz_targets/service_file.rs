//! Service files: any text must give a spec or diagnostics, never a panic.
//! Half of the inputs get a valid `ExecStart` first, so that the fuzzer
//! spends its time on every other key rather than on finding one command.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "stats.rs"]
mod stats;

fuzz_target!(|data: &[u8]| {
    let (with_command, rest) = match data.split_first() {
        Some((first, rest)) => (first & 1 == 0, rest),
        None => (false, data),
    };
    let mut text = String::new();
    if with_command {
        text.push_str("ExecStart = \"/bin/true\"\n");
    }
    text.push_str(&String::from_utf8_lossy(rest));
    let (result, diags) =
        enclave_init::parse::service::parse(std::path::Path::new("/service/fuzz.service"), "fuzz", &text);
    // Every diagnostic renders, and an accepted spec has a command.
    for d in &diags {
        let _ = d.to_string();
    }
    stats::count(result.is_ok());
    if let Ok(spec) = result {
        assert!(!spec.exec_start.is_empty());
    }
    let _ = enclave_init::parse::words::split(&text);
});
