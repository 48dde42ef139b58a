//! Captured service output: bytes from a pipe become lines
//! ([`LineSplitter`]), and the newest lines of each service are kept,
//! bounded in bytes, for `initctl logs` ([`LogRing`]).

use std::collections::VecDeque;
use std::time::SystemTime;

/// Longer lines are cut into pieces of this many bytes.
pub const MAX_LINE: usize = 4096;

/// Turns a byte stream into printable lines: `\n` ends a line (a `\r`
/// before it is dropped), lines longer than [`MAX_LINE`] are cut, and bytes
/// that are not printable UTF-8 are escaped so that a service cannot send
/// terminal control sequences to the console.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<String>) {
        while !bytes.is_empty() {
            match bytes.iter().position(|b| *b == b'\n') {
                // A whole line in this chunk: no copy through `partial`.
                Some(end) if self.partial.is_empty() && end <= MAX_LINE => {
                    let line = bytes.get(..end).unwrap_or_default();
                    out.push(printable(line.strip_suffix(b"\r").unwrap_or(line)));
                    bytes = bytes.get(end + 1..).unwrap_or_default();
                }
                Some(end) => {
                    let (line, rest) = bytes.split_at(end);
                    self.append(line, out);
                    let mut done = std::mem::take(&mut self.partial);
                    if done.last() == Some(&b'\r') {
                        done.pop();
                    }
                    out.push(printable(&done));
                    bytes = rest.get(1..).unwrap_or_default();
                }
                None => {
                    self.append(bytes, out);
                    bytes = &[];
                }
            }
        }
    }

    /// End of stream: a last line without its newline.
    pub fn finish(&mut self, out: &mut Vec<String>) {
        if !self.partial.is_empty() {
            let done = std::mem::take(&mut self.partial);
            out.push(printable(&done));
        }
    }

    fn append(&mut self, mut bytes: &[u8], out: &mut Vec<String>) {
        while self.partial.len() + bytes.len() > MAX_LINE {
            let room = MAX_LINE - self.partial.len();
            let (head, tail) = bytes.split_at(room.min(bytes.len()));
            self.partial.extend_from_slice(head);
            let done = std::mem::take(&mut self.partial);
            out.push(printable(&done));
            bytes = tail;
        }
        self.partial.extend_from_slice(bytes);
    }
}

/// UTF-8 text as is, except control characters (tab aside) as `\xNN`;
/// invalid UTF-8 bytes as `\xNN` too.
pub fn printable(bytes: &[u8]) -> String {
    // The common case, checked in one pass over the bytes: valid UTF-8
    // without C0 controls (tab aside), DEL, or C1 controls (U+0080..U+009F,
    // encoded 0xC2 0x80..0x9F).
    // Printable ASCII, checked without early exits so that it vectorizes.
    let ascii = bytes.iter().fold(true, |ok, &b| {
        ok & (b.wrapping_sub(0x20) < 0x5f || b == b'\t')
    });
    let clean = ascii
        || (!bytes.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
            && !bytes.windows(2).any(|w| matches!(w, [0xC2, 0x80..=0x9F])));
    if clean {
        if let Ok(text) = std::str::from_utf8(bytes) {
            return text.to_owned();
        }
    }
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() && c != '\t' {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: SystemTime,
    pub pid: i32,
    pub text: String,
}

/// The newest lines of one service, at most `cap` bytes of text (plus a
/// fixed per-line overhead so that many empty lines are bounded too).
#[derive(Debug)]
pub struct LogRing {
    lines: VecDeque<LogLine>,
    bytes: usize,
    cap: usize,
    /// Every line ever pushed: lets `--follow` readers resume by number.
    total: u64,
}

const LINE_OVERHEAD: usize = 32;

impl LogRing {
    pub fn new(cap: usize) -> Self {
        Self {
            lines: VecDeque::new(),
            bytes: 0,
            cap,
            total: 0,
        }
    }

    pub fn push(&mut self, line: LogLine) {
        let size = line.text.len() + LINE_OVERHEAD;
        self.total += 1;
        if size > self.cap {
            return;
        }
        while self.bytes + size > self.cap {
            match self.lines.pop_front() {
                Some(old) => self.bytes -= old.text.len() + LINE_OVERHEAD,
                None => break,
            }
        }
        self.bytes += size;
        self.lines.push_back(line);
    }

    /// The newest `n` lines (all when `None`), oldest first.
    pub fn tail(&self, n: Option<usize>) -> impl Iterator<Item = &LogLine> {
        let skip = n.map_or(0, |n| self.lines.len().saturating_sub(n));
        self.lines.iter().skip(skip)
    }

    /// Lines pushed after the first `seen` ever pushed (for `--follow`).
    pub fn since(&self, seen: u64) -> impl Iterator<Item = &LogLine> {
        let first_kept = self.total - self.lines.len() as u64;
        let skip = seen.saturating_sub(first_kept) as usize;
        self.lines.iter().skip(skip)
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
        while self.bytes > self.cap {
            match self.lines.pop_front() {
                Some(old) => self.bytes -= old.text.len() + LINE_OVERHEAD,
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn lines_across_chunks() {
        assert_eq!(split(&[b"hel", b"lo\nwor", b"ld\n"]), ["hello", "world"]);
        assert_eq!(split(&[b"a\n\nb"]), ["a", "", "b"]);
        assert_eq!(split(&[b"dos\r\n"]), ["dos"]);
        assert_eq!(split(&[b"no newline"]), ["no newline"]);
        assert_eq!(split(&[b""]), Vec::<String>::new());
    }

    #[test]
    fn long_lines_are_cut() {
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let out = split(&[&long, b"\n"]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].len(), MAX_LINE);
        assert_eq!(out[1].len(), MAX_LINE);
        assert_eq!(out[2].len(), 10);
        // Cut in the middle of several chunks too.
        let out = split(&[&long[..100], &long[100..]]);
        assert_eq!(out.iter().map(String::len).sum::<usize>(), long.len());
    }

    #[test]
    fn binary_and_control_bytes_are_escaped() {
        assert_eq!(split(&[b"\x1b[31mred\x1b[0m\n"]), ["\\x1b[31mred\\x1b[0m"]);
        assert_eq!(split(&[b"a\x00b\xffc\tz\n"]), ["a\\x00b\\xffc\tz"]);
        assert_eq!(split(&["héllo ✓\n".as_bytes()]), ["héllo ✓"]);
        // C1 controls are escaped too (the fast path must not pass them).
        assert_eq!(split(&["a\u{9b}31mb\n".as_bytes()]), ["a\\xc2\\x9b31mb"]);
        assert_eq!(printable(b"plain ascii\twith tab"), "plain ascii\twith tab");
    }

    fn line(text: &str) -> LogLine {
        LogLine {
            time: SystemTime::UNIX_EPOCH,
            pid: 1,
            text: text.into(),
        }
    }

    #[test]
    fn ring_keeps_the_newest_within_its_bound() {
        let mut ring = LogRing::new(10 * (LINE_OVERHEAD + 2));
        for i in 0..25 {
            ring.push(line(&format!("{i:02}")));
        }
        assert_eq!(ring.len(), 10);
        assert!(ring.bytes() <= 10 * (LINE_OVERHEAD + 2));
        let texts: Vec<&str> = ring.tail(Some(3)).map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["22", "23", "24"]);
        assert_eq!(ring.tail(None).count(), 10);
        assert_eq!(ring.tail(Some(100)).count(), 10);
        assert_eq!(ring.total(), 25);
        let after: Vec<&str> = ring.since(23).map(|l| l.text.as_str()).collect();
        assert_eq!(after, ["23", "24"]);
        assert_eq!(
            ring.since(0).count(),
            10,
            "lines already evicted are skipped"
        );
        // A line larger than the whole ring is not kept.
        ring.push(line(&"y".repeat(1000)));
        assert_eq!(ring.len(), 10);
        ring.set_cap(0);
        assert!(ring.is_empty());
    }
}
