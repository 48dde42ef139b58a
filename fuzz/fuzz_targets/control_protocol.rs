//! The initctl protocol: any bytes from a client give a request or an
//! error, never a panic; notify datagrams likewise.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "stats.rs"]
mod stats;

fuzz_target!(|data: &[u8]| {
    let parsed = enclave_init::proto::parse_request(data);
    if let Ok(request) = &parsed {
        // What parses encodes and parses back to the same.
        let line = enclave_init::proto::encode(request);
        let again = enclave_init::proto::parse_request(line.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(&again, request);
    }
    let notify = enclave_init::runtime::notify::parse(data);
    stats::count(parsed.is_ok() || notify.is_ok());
});
