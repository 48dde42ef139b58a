//! The parent channel's requests, which come from the untrusted parent:
//! any bytes give a request or an error, never a panic; what parses is
//! only reading or poweroff, and encodes and parses back to the same.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "stats.rs"]
mod stats;

fuzz_target!(|data: &[u8]| {
    use enclave_init::proto::parent::{parse_request, Command};
    let parsed = parse_request(data);
    if let Ok(request) = &parsed {
        assert!(matches!(
            request.command,
            Command::List
                | Command::Status { .. }
                | Command::Logs { .. }
                | Command::Events
                | Command::Wait
                | Command::Poweroff
        ));
        let line = enclave_init::proto::encode(request);
        let again = parse_request(line.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(&again, request);
    }
    stats::count(parsed.is_ok());
});
