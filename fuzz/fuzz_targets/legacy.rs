//! nitro-cli's /cmd and /env, and an EnvironmentFile.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let argv = enclave_init::legacy::parse_cmd(&text);
    assert!(argv.iter().all(|a| !a.contains('\n')));
    let (vars, errors) = enclave_init::legacy::parse_env(&text);
    assert!(vars.iter().all(|(k, _)| !k.is_empty() && !k.contains('\n')));
    assert!(errors.iter().all(|e| e.line >= 1));
    let _ = enclave_init::spawn::parse_environment_file(&text);
});
