//! Captured output: any bytes, in any chunking, become printable lines no
//! longer than the limit, and nothing is lost but the escaping; a small log
//! ring fed those lines keeps exactly the newest ones within its bound.
#![no_main]
use enclave_init::host::output::{
    LineSplitter, Lines, LogRing, LINE_OVERHEAD as LOG_LINE_OVERHEAD, MAX_LINE,
};
use libfuzzer_sys::fuzz_target;

#[path = "stats.rs"]
mod stats;

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(1, |b| *b as usize + 1);
    let cap = data.get(1).map_or(64, |b| *b as usize * 64);
    let mut splitter = LineSplitter::default();
    let mut ring = LogRing::new(cap);
    let mut all: Vec<String> = Vec::new();
    let mut lines = Lines::default();
    let mut chunks = data.chunks(cut).peekable();
    while let Some(chunk) = chunks.next() {
        lines.begin(b"fuzz[1]: ");
        splitter.push(chunk, &mut lines);
        if chunks.peek().is_none() {
            splitter.finish(&mut lines);
        }
        // The console form is each line with its prefix and a newline.
        let console: Vec<u8> = lines
            .iter()
            .flat_map(|l| [&b"fuzz[1]: "[..], l, b"\n"].concat())
            .collect();
        assert_eq!(lines.console_bytes(), console.as_slice());
        ring.push_lines(std::time::SystemTime::UNIX_EPOCH, 1, &lines);
        for line in lines.iter() {
            let line = std::str::from_utf8(line).expect("escaped lines are UTF-8");
            assert!(!line.contains('\n'));
            assert!(
                !line.chars().any(|c| c.is_control() && c != '\t'),
                "{line:?}"
            );
            // Escaping grows a byte to at most four ("\xNN").
            assert!(line.len() <= MAX_LINE * 4);
            all.push(line.to_string());
        }
        assert!(ring.bytes() <= cap);
    }
    // The newest lines, each whole or, when longer than the ring, cut.
    let kept: Vec<String> = ring.tail(None).into_iter().map(|l| l.text).collect();
    for (kept, line) in kept.iter().zip(&all[all.len() - kept.len()..]) {
        assert!(line.starts_with(kept.as_str()), "{kept:?} of {line:?}");
        if line.len() + LOG_LINE_OVERHEAD <= cap {
            assert_eq!(kept, line);
        }
    }
    if let Some(newest) = all.last() {
        assert!(
            cap < LOG_LINE_OVERHEAD || kept.last().is_some_and(|k| newest.starts_with(k.as_str()))
        );
    }
    assert_eq!(ring.total(), all.len() as u64);
    // "Parsed": at least one whole line came out.
    stats::count(!all.is_empty());
});
