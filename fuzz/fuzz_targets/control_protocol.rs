//! The initctl protocol: any bytes from a client give a request or an
//! error, never a panic; notify datagrams likewise.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = enclave_init::proto::parse_request(data) {
        // What parses encodes and parses back to the same.
        let line = enclave_init::proto::encode(&request);
        let again = enclave_init::proto::parse_request(line.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(again, request);
    }
    let _ = enclave_init::notify::parse(data);
});
