//! enclave-init's own command line and environment, as the kernel or a
//! container runtime hands them over: any bytes (arguments separated by
//! NUL, which no argument can hold). A parse error is a usage error; what
//! parses becomes the `-- CMD` service, whose environment (any bytes from
//! init's own) and exec plan are built as for a real start.
#![no_main]
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use libfuzzer_sys::fuzz_target;

#[path = "stats.rs"]
mod stats;

fuzz_target!(|data: &[u8]| {
    let (args, env) = match data.iter().position(|b| *b == 0xff) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let argv: Vec<OsString> = args
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    let parsed = enclave_init::parse::cli::parse(argv.clone());
    stats::count(parsed.is_ok());
    let Ok(parsed) = parsed else { return };
    if parsed.command.is_empty() {
        return;
    }
    // The command is what follows a `--` (not one taken as an option's
    // value, as in `--config --`), byte for byte.
    assert!(argv.ends_with(&parsed.command));
    let dash = argv.len() - parsed.command.len() - 1;
    assert_eq!(argv[dash].as_bytes(), b"--");
    let base: Vec<(OsString, OsString)> = env
        .split(|b| *b == 0)
        .filter_map(|v| {
            let at = v.iter().position(|b| *b == b'=')?;
            Some((
                OsString::from_vec(v[..at].to_vec()),
                OsString::from_vec(v[at + 1..].to_vec()),
            ))
        })
        .collect();
    let spec = enclave_init::model::spec::ServiceSpec::command_main(parsed.command.clone());
    let env = enclave_init::runtime::spawn::environment(&base, &spec, None, &[]).unwrap();
    assert!(env.iter().any(|(k, _)| k == "PATH"));
    // The exec plan takes the bytes as they are (a NUL is refused, not a panic).
    let _ = enclave_init::sys::ChildPlan::new(
        std::path::Path::new("/bin/true"),
        &parsed.command,
        &env,
        std::path::Path::new("/"),
        [None, None, None],
        None,
        Vec::new(),
        None,
    );
});
