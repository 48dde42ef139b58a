//! Captured output: any bytes, in any chunking, become printable lines no
//! longer than the limit, and nothing is lost but the escaping.
#![no_main]
use enclave_init::output::{LineSplitter, MAX_LINE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(1, |b| *b as usize + 1);
    let mut splitter = LineSplitter::default();
    let mut lines = Vec::new();
    for chunk in data.chunks(cut) {
        splitter.push(chunk, &mut lines);
    }
    splitter.finish(&mut lines);
    for line in &lines {
        assert!(!line.contains('\n'));
        assert!(
            !line.chars().any(|c| c.is_control() && c != '\t'),
            "{line:?}"
        );
        // Escaping grows a byte to at most four ("\xNN").
        assert!(line.len() <= MAX_LINE * 4);
    }
});
