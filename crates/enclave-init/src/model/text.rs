//! Bytes shown as text: what a service printed, a line of `/env`, a notify
//! message. Printable UTF-8 passes; anything else is escaped, so a log line
//! is always one line of valid text.

/// Appends `bytes` to `out` as printable UTF-8: text as is, except control
/// characters (tab aside) as `\xNN`; invalid UTF-8 bytes as `\xNN` too.
pub fn escape_into(bytes: &[u8], out: &mut Vec<u8>) {
    if printable_ascii(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    let hex = |b: u8, out: &mut Vec<u8>| {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        out.extend_from_slice(b"\\x");
        let digit = |n: u8| DIGITS.get(usize::from(n)).copied().unwrap_or(b'?');
        out.extend_from_slice(&[digit(b >> 4), digit(b & 0xf)]);
    };
    for chunk in bytes.utf8_chunks() {
        let mut buf = [0u8; 4];
        for c in chunk.valid().chars() {
            let encoded = c.encode_utf8(&mut buf).as_bytes();
            if c.is_control() && c != '\t' {
                for b in encoded {
                    hex(*b, out);
                }
            } else {
                out.extend_from_slice(encoded);
            }
        }
        for b in chunk.invalid() {
            hex(*b, out);
        }
    }
}

/// [`escape_into`] as a `String`.
pub fn printable(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    escape_into(bytes, &mut out);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// The position of the first `\n`, eight bytes at a time.
pub fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in words.by_ref() {
        let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
        if has_zero_byte(w ^ (ONES * u64::from(b'\n'))) {
            return word.iter().position(|b| *b == b'\n').map(|i| at + i);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|b| *b == b'\n')
        .map(|i| at + i)
}

/// Whether any byte of `w` is zero (exact: the classic bit trick).
const fn has_zero_byte(w: u64) -> bool {
    w.wrapping_sub(ONES) & !w & HIGHS != 0
}

/// Whether every byte is printable ASCII (0x20..=0x7e) or a tab, eight
/// bytes at a time: the common case of service output.
pub fn printable_ascii(bytes: &[u8]) -> bool {
    let byte_ok = |b: u8| b.wrapping_sub(0x20) < 0x5f || b == b'\t';
    let mut words = bytes.chunks_exact(8);
    for word in words.by_ref() {
        let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
        // Bytes under 0x80 (checked first, which makes the subtraction
        // exact) that are neither below 0x20 nor 0x7f.
        let suspicious = w & HIGHS != 0
            || (w.wrapping_sub(ONES * 0x20) & !w & HIGHS) != 0
            || has_zero_byte(w ^ (ONES * 0x7f));
        // A tab is below 0x20 but allowed: look at such a word closely.
        if suspicious && !word.iter().all(|b| byte_ok(*b)) {
            return false;
        }
    }
    words.remainder().iter().all(|b| byte_ok(*b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_at_a_time_scans_agree_with_byte_by_byte() {
        let naive_ok = |b: u8| (0x20..0x7f).contains(&b) || b == b'\t';
        // Every byte value at every position of lines of several lengths,
        // so that each lands in a whole word and in the remainder.
        for len in [1, 7, 8, 9, 16, 23] {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut line = vec![b'a'; len];
                    line[at] = b;
                    assert_eq!(
                        printable_ascii(&line),
                        naive_ok(b),
                        "byte {b:#x} at {at} of {len}"
                    );
                    assert_eq!(
                        memchr_newline(&line),
                        line.iter().position(|c| *c == b'\n'),
                        "byte {b:#x} at {at} of {len}"
                    );
                }
            }
        }
        // A high byte before a low one must not hide it (borrows).
        assert!(!printable_ascii(b"abcdef\x01\xff"));
        assert!(!printable_ascii(b"\xffabcdefgh"));
        assert_eq!(memchr_newline(b"\x0b\x0a"), Some(1));
        assert!(printable_ascii(b""));
    }
}
