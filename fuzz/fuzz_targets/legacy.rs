//! nitro-cli's /cmd and /env, and an EnvironmentFile: bytes in, bytes out.
#![no_main]
use std::os::unix::ffi::OsStrExt;

use libfuzzer_sys::fuzz_target;

#[path = "stats.rs"]
mod stats;

fuzz_target!(|data: &[u8]| {
    let argv = enclave_init::parse::legacy::parse_cmd(data);
    assert!(argv.iter().all(|a| !a.as_bytes().contains(&b'\n')));
    // Nothing is lost but the newlines (and a final \r of a line).
    let kept: usize = argv.iter().map(|a| a.len()).sum();
    assert!(kept <= data.len());
    let (vars, errors) = enclave_init::parse::legacy::parse_env(data);
    assert!(vars.iter().all(|(k, _)| {
        !k.is_empty() && !k.as_bytes().contains(&b'\n') && !k.as_bytes().contains(&b'=')
    }));
    assert!(errors.iter().all(|e| e.line >= 1));
    if let Ok(file) = enclave_init::runtime::spawn::parse_environment_file(data) {
        assert!(file
            .iter()
            .all(|(k, _)| enclave_init::model::spec::valid_env_name(&k.to_string_lossy())));
    }
    stats::count(!vars.is_empty() && errors.is_empty());
});
