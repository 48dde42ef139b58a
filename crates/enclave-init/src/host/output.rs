//! Captured service output: bytes from a pipe become lines
//! ([`LineSplitter`] into a [`Lines`] batch), and the newest lines of each
//! service are kept, bounded in bytes, for `initctl logs` ([`LogRing`]).
//!
//! This is the one path every byte a service prints goes through, so it
//! allocates nothing per line: a batch is one buffer of console lines and
//! a list of where each line's text is, and the ring is one byte queue and
//! a list of line records.

use std::collections::VecDeque;

use crate::model::text::memchr_newline;
pub use crate::model::text::{escape_into, printable};
use std::time::SystemTime;

/// Longer lines are cut into pieces of this many bytes.
pub const MAX_LINE: usize = 4096;

/// Lines of one read, escaped ([`escape_into`]), in the form the console
/// shows them, back to back in one buffer: `prefix text\n` each (the
/// prefix is `name[pid]: `). Reused from read to read, so capture allocates
/// nothing per line.
#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
    /// Where each line's text starts and ends in `buf`.
    spans: Vec<(usize, usize)>,
    prefix: Vec<u8>,
}

impl Lines {
    /// An empty batch whose lines will carry `prefix`.
    pub fn begin(&mut self, prefix: &[u8]) {
        self.buf.clear();
        self.spans.clear();
        self.prefix.clear();
        self.prefix.extend_from_slice(prefix);
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Each line's text: printable UTF-8, without prefix or newline.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.spans
            .iter()
            .map(|(a, b)| self.buf.get(*a..*b).unwrap_or_default())
    }

    /// Every line as the console shows it.
    pub fn console_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Where each line ends in [`Self::console_bytes`] (after its newline).
    pub fn console_ends(&self) -> impl Iterator<Item = usize> + '_ {
        self.spans.iter().map(|(_, end)| end + 1)
    }

    fn push(&mut self, raw: &[u8]) {
        self.buf.extend_from_slice(&self.prefix);
        let start = self.buf.len();
        escape_into(raw, &mut self.buf);
        self.spans.push((start, self.buf.len()));
        self.buf.push(b'\n');
    }
}

/// Turns a byte stream into printable lines: `\n` ends a line (a `\r`
/// before it is dropped), lines longer than [`MAX_LINE`] are cut, and bytes
/// that are not printable UTF-8 are escaped so that a service cannot send
/// terminal control sequences to the console.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Lines) {
        while !bytes.is_empty() {
            match memchr_newline(bytes) {
                // A whole line in this chunk: no copy through `partial`.
                Some(end) if self.partial.is_empty() && end <= MAX_LINE => {
                    let line = bytes.get(..end).unwrap_or_default();
                    out.push(line.strip_suffix(b"\r").unwrap_or(line));
                    bytes = bytes.get(end + 1..).unwrap_or_default();
                }
                Some(end) => {
                    let (line, rest) = bytes.split_at(end);
                    self.append(line, out);
                    if self.partial.last() == Some(&b'\r') {
                        self.partial.pop();
                    }
                    out.push(&self.partial);
                    self.partial.clear();
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
    pub fn finish(&mut self, out: &mut Lines) {
        if !self.partial.is_empty() {
            out.push(&self.partial);
            self.partial.clear();
        }
    }

    fn append(&mut self, mut bytes: &[u8], out: &mut Lines) {
        while self.partial.len() + bytes.len() > MAX_LINE {
            let room = MAX_LINE - self.partial.len();
            let (head, tail) = bytes.split_at(room.min(bytes.len()));
            self.partial.extend_from_slice(head);
            out.push(&self.partial);
            self.partial.clear();
            bytes = tail;
        }
        self.partial.extend_from_slice(bytes);
    }
}

/// The largest length up to `at` that cuts UTF-8 `text` between characters.
fn char_floor(text: &[u8], at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    (0..=at)
        .rev()
        .find(|i| text.get(*i).is_some_and(|b| b & 0xc0 != 0x80))
        .unwrap_or(0)
}

/// One kept line, as `initctl logs` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: SystemTime,
    pub pid: i32,
    pub text: String,
}

/// Where a kept line's text is in the ring, and what came with it.
#[derive(Debug, Clone, Copy)]
struct Record {
    time: SystemTime,
    pid: i32,
    len: u32,
    /// Where its text starts, counted over every byte ever kept: a read
    /// from any line finds its text at once, however long the ring.
    start: u64,
}

/// The newest lines of one service, at most `cap` bytes: their text in one
/// byte queue, plus a fixed per-line overhead (its record) so that many
/// empty lines are bounded too. Lines become `String`s only when read.
#[derive(Debug)]
pub struct LogRing {
    text: VecDeque<u8>,
    records: VecDeque<Record>,
    cap: usize,
    /// Every line ever pushed: lets `--follow` readers resume by number.
    total: u64,
    /// Bytes evicted so far: where `text` starts, in `Record::start` terms.
    base: u64,
}

/// What a line costs in the ring beyond its text.
pub const LINE_OVERHEAD: usize = 32;

impl LogRing {
    pub fn new(cap: usize) -> Self {
        Self {
            text: VecDeque::new(),
            records: VecDeque::new(),
            cap,
            total: 0,
            base: 0,
        }
    }

    /// Keeps every line of a batch, all read at `time` from process `pid`.
    pub fn push_lines(&mut self, time: SystemTime, pid: i32, lines: &Lines) {
        for text in lines.iter() {
            self.push(time, pid, text);
        }
    }

    /// Keeps one line (printable UTF-8), evicting the oldest to make room.
    /// A line longer than the whole ring is cut to fit, at a character
    /// boundary; a ring too small for any line keeps none.
    pub fn push(&mut self, time: SystemTime, pid: i32, text: &[u8]) {
        self.total += 1;
        let Some(room) = self.cap.checked_sub(LINE_OVERHEAD) else {
            self.base += self.text.len() as u64;
            self.text.clear();
            self.records.clear();
            return;
        };
        let text = text.get(..char_floor(text, room)).unwrap_or_default();
        let size = text.len() + LINE_OVERHEAD;
        while self.bytes() + size > self.cap && self.pop_front() {}
        let start = self.base + self.text.len() as u64;
        self.text.extend(text);
        self.records.push_back(Record {
            time,
            pid,
            len: text.len() as u32,
            start,
        });
    }

    fn pop_front(&mut self) -> bool {
        let Some(old) = self.records.pop_front() else {
            return false;
        };
        let len = (old.len as usize).min(self.text.len());
        self.text.drain(..len);
        self.base += len as u64;
        true
    }

    /// The newest `n` lines (all when `None`), oldest first.
    pub fn tail(&self, n: Option<usize>) -> Vec<LogLine> {
        let skip = n.map_or(0, |n| self.records.len().saturating_sub(n));
        self.lines_from(skip, usize::MAX)
    }

    /// Lines pushed after the first `seen` ever pushed (for `--follow`).
    pub fn since(&self, seen: u64) -> Vec<LogLine> {
        self.lines_from(seen.saturating_sub(self.first_seq()) as usize, usize::MAX)
    }

    /// The number (counted from 0 over every line ever pushed) of the
    /// oldest line still kept.
    pub fn first_seq(&self) -> u64 {
        self.total - self.records.len() as u64
    }

    /// At most `max` kept lines from number `from` on (from the oldest
    /// kept when `from` was evicted), and the number after the last one.
    pub fn range(&self, from: u64, max: usize) -> (Vec<LogLine>, u64) {
        let from = from.max(self.first_seq());
        let lines = self.lines_from((from - self.first_seq()) as usize, max);
        let next = from + lines.len() as u64;
        (lines, next)
    }

    /// At most `max` kept lines from the `skip`th on.
    fn lines_from(&self, skip: usize, max: usize) -> Vec<LogLine> {
        self.records
            .range(skip.min(self.records.len())..)
            .take(max)
            .map(|r| {
                // Records and text always agree; clamped all the same, as
                // `range` would panic past the end.
                let start =
                    usize::try_from(r.start.saturating_sub(self.base)).unwrap_or(usize::MAX);
                let end = start.saturating_add(r.len as usize).min(self.text.len());
                let bytes: Vec<u8> = self.text.range(start.min(end)..end).copied().collect();
                LogLine {
                    time: r.time,
                    pid: r.pid,
                    // Escaped on the way in: always UTF-8.
                    text: String::from_utf8(bytes)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                }
            })
            .collect()
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes counted against the bound.
    pub fn bytes(&self) -> usize {
        self.text.len() + self.records.len() * LINE_OVERHEAD
    }

    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
        while self.bytes() > self.cap && self.pop_front() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::default();
        let mut out = Lines::default();
        for c in chunks {
            s.push(c, &mut out);
        }
        s.finish(&mut out);
        out.iter()
            .map(|l| String::from_utf8(l.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn a_batch_holds_the_console_form_of_its_lines() {
        let mut lines = Lines::default();
        lines.begin(b"web[7]: ");
        LineSplitter::default().push(b"one\n\x1b\ntwo\n", &mut lines);
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines.console_bytes(),
            b"web[7]: one\nweb[7]: \\x1b\nweb[7]: two\n"
        );
        let texts: Vec<&[u8]> = lines.iter().collect();
        assert_eq!(texts, [&b"one"[..], b"\\x1b", b"two"]);
        let ends: Vec<usize> = lines.console_ends().collect();
        assert_eq!(ends, [12, 25, 37]);
        lines.begin(b"x: ");
        assert!(lines.is_empty() && lines.console_bytes().is_empty());
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

    fn texts(lines: &[LogLine]) -> Vec<&str> {
        lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn ring_keeps_the_newest_within_its_bound() {
        let time = SystemTime::UNIX_EPOCH;
        let mut ring = LogRing::new(10 * (LINE_OVERHEAD + 2));
        for i in 0..25 {
            ring.push(time, i, format!("{i:02}").as_bytes());
        }
        assert_eq!(ring.len(), 10);
        assert!(ring.bytes() <= 10 * (LINE_OVERHEAD + 2));
        assert_eq!(texts(&ring.tail(Some(3))), ["22", "23", "24"]);
        assert_eq!(ring.tail(Some(3))[0].pid, 22);
        assert_eq!(ring.tail(None).len(), 10);
        assert_eq!(ring.tail(Some(100)).len(), 10);
        assert_eq!(ring.total(), 25);
        assert_eq!(texts(&ring.since(23)), ["23", "24"]);
        assert_eq!(ring.since(0).len(), 10, "lines already evicted are skipped");
        assert!(ring.since(25).is_empty());
        // Read in chunks, as a long `initctl logs` is served.
        assert_eq!(ring.first_seq(), 15);
        let (chunk, next) = ring.range(0, 4);
        assert_eq!((texts(&chunk), next), (vec!["15", "16", "17", "18"], 19));
        let (chunk, next) = ring.range(next, 100);
        assert_eq!(chunk.len(), 6);
        assert_eq!(next, 25);
        assert_eq!(ring.range(25, 10), (vec![], 25));
        // A line larger than the whole ring is cut to fit, alone, at a
        // character boundary.
        ring.push(time, 1, "é".repeat(1000).as_bytes());
        assert_eq!(ring.total(), 26);
        let kept = ring.tail(None);
        assert_eq!(
            texts(&kept),
            ["é".repeat((10 * 2 + 9 * LINE_OVERHEAD) / 2).as_str()]
        );
        assert!(ring.bytes() <= 10 * (LINE_OVERHEAD + 2));
        ring.set_cap(0);
        assert!(ring.is_empty());
        assert_eq!(ring.bytes(), 0);
        // Too small for any line: none kept.
        ring.push(time, 1, b"");
        assert!(ring.is_empty());
        assert_eq!(ring.total(), 27);
    }

    #[test]
    fn cuts_fall_between_characters() {
        let text = "aé✓".as_bytes(); // 1 + 2 + 3 bytes
        let cuts: Vec<usize> = (0..8).map(|at| char_floor(text, at)).collect();
        assert_eq!(cuts, [0, 1, 1, 3, 3, 3, 6, 6]);
    }

    #[test]
    fn ring_of_lines_of_every_length_reads_back_what_was_kept() {
        // Lines of varying lengths (empty ones too) through many evictions:
        // what is read back is always the newest lines, whole.
        let time = SystemTime::UNIX_EPOCH;
        let cap = 300;
        let mut ring = LogRing::new(cap);
        let mut all: Vec<String> = Vec::new();
        for i in 0..500usize {
            let text = "abcdefghij".repeat(i % 7) + &i.to_string();
            let text = if i % 11 == 0 { String::new() } else { text };
            let mut batch = Lines::default();
            batch.push(text.as_bytes());
            ring.push_lines(time, 7, &batch);
            all.push(text);
            assert!(ring.bytes() <= cap);
            let kept = ring.tail(None);
            let newest = &all[all.len() - kept.len()..];
            assert_eq!(
                texts(&kept),
                newest.iter().map(String::as_str).collect::<Vec<_>>()
            );
        }
    }
}
