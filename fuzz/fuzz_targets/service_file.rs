//! Service files, TOML or systemd's syntax: any text must give a spec or
//! diagnostics, never a panic. The first byte picks a valid `ExecStart`
//! first (TOML's or a unit file's), so that the fuzzer spends its time on
//! every other key rather than on finding one command, and whether the
//! file is an instance of a template (specifiers).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "stats.rs"]
mod stats;

fuzz_target!(|data: &[u8]| {
    let (first, rest) = match data.split_first() {
        Some((first, rest)) => (*first, rest),
        None => (0, data),
    };
    let mut text = String::new();
    match first & 3 {
        1 => text.push_str("ExecStart = \"/bin/true\"\n"),
        2 => text.push_str("[Service]\nExecStart=/bin/true\n"),
        _ => {}
    }
    let name = if first & 4 == 0 { "fuzz" } else { "fuzz@a-b\\x2dc" };
    text.push_str(&String::from_utf8_lossy(rest));
    let (result, diags) =
        enclave_init::parse::service::parse(std::path::Path::new("/service/fuzz.service"), name, &text);
    // Every diagnostic renders, and an accepted spec has a command.
    for d in &diags {
        let _ = d.to_string();
    }
    stats::count(result.is_ok());
    if let Ok(spec) = result {
        assert!(!spec.exec_start.argv.is_empty());
    }
    let _ = enclave_init::parse::words::split(&text);
    let _ = enclave_init::parse::unit::split(&text);
});
