//! Shell-like splitting of a command string into argv words: whitespace
//! separates words, single quotes are literal, double quotes allow `\"`,
//! `\\`, `\$` and `` \` `` escapes, and a backslash outside quotes escapes the
//! next character. No variables, globs, pipes or redirections: `$HOME` stays
//! `$HOME`. [`expand`] is systemd's `$` expansion, for unit files' command
//! lines when a process starts.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Splits `text` into words; the error says what is wrong with it.
pub fn split(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err("trailing backslash".into()),
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// systemd's variable expansion of a command line (systemd.service(5),
/// "Command lines"), applied to words already split: a word that is
/// exactly `$NAME` becomes the variable's value split at whitespace (no
/// word when it is unset or blank); `${NAME}` inside any word becomes the
/// value as it is (nothing when unset); `$$` is one `$`. Any other `$`
/// stays. Bytes, not text: values pass through unchanged.
pub fn expand(argv: &[OsString], lookup: impl Fn(&[u8]) -> Option<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(argv.len());
    for word in argv {
        let bytes = word.as_bytes();
        if let Some(name) = bytes.strip_prefix(b"$").filter(|n| is_name(n)) {
            if let Some(value) = lookup(name) {
                out.extend(
                    value
                        .as_bytes()
                        .split(u8::is_ascii_whitespace)
                        .filter(|w| !w.is_empty())
                        .map(|w| OsString::from_vec(w.to_vec())),
                );
            }
            continue;
        }
        let mut expanded = Vec::with_capacity(bytes.len());
        let mut rest = bytes;
        while let Some((&first, tail)) = rest.split_first() {
            if first == b'$' && tail.first() == Some(&b'$') {
                expanded.push(b'$');
                rest = tail.get(1..).unwrap_or_default();
                continue;
            }
            if first == b'$' && tail.first() == Some(&b'{') {
                if let Some(end) = tail.iter().position(|&b| b == b'}') {
                    let name = tail.get(1..end).unwrap_or_default();
                    if is_name(name) {
                        if let Some(value) = lookup(name) {
                            expanded.extend_from_slice(value.as_bytes());
                        }
                        rest = tail.get(end + 1..).unwrap_or_default();
                        continue;
                    }
                }
            }
            expanded.push(first);
            rest = tail;
        }
        out.push(OsString::from_vec(expanded));
    }
    out
}

/// A variable name: a letter or `_`, then letters, digits and `_`.
fn is_name(name: &[u8]) -> bool {
    matches!(name.first(), Some(c) if c.is_ascii_alphabetic() || *c == b'_')
        && name.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_as_systemd_does() {
        let env = |name: &[u8]| match name {
            b"MAINPID" => Some(OsString::from("42")),
            b"OPTS" => Some(OsString::from("  -a  -b c ")),
            b"EMPTY" => Some(OsString::new()),
            _ => None,
        };
        let cases: &[(&[&str], &[&str])] = &[
            (
                &["/bin/kill", "-HUP", "$MAINPID"],
                &["/bin/kill", "-HUP", "42"],
            ),
            (&["d", "$OPTS", "x"], &["d", "-a", "-b", "c", "x"]),
            (&["d", "${OPTS}"], &["d", "  -a  -b c "]),
            (&["d", "--pid=${MAINPID}!"], &["d", "--pid=42!"]),
            (&["d", "$UNSET", "${UNSET}", "$EMPTY"], &["d", ""]),
            (
                &["d", "$$MAINPID", "a$$b", "cost$5", "${", "${1x}"],
                &["d", "$MAINPID", "a$b", "cost$5", "${", "${1x}"],
            ),
            (&["d", "$MAINPID-x"], &["d", "$MAINPID-x"]),
        ];
        for (argv, want) in cases {
            let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
            let want: Vec<OsString> = want.iter().map(OsString::from).collect();
            assert_eq!(expand(&argv, env), want, "{argv:?}");
        }
        let raw = [OsString::from_vec(b"\xff${MAINPID}".to_vec())];
        assert_eq!(expand(&raw, env), [OsString::from_vec(b"\xff42".to_vec())]);
    }

    #[test]
    fn splits_like_a_shell() {
        let cases: &[(&str, &[&str])] = &[
            ("/bin/echo hello world", &["/bin/echo", "hello", "world"]),
            ("  a   b\tc\n", &["a", "b", "c"]),
            ("echo 'a b' \"c d\"", &["echo", "a b", "c d"]),
            ("echo a'b c'd", &["echo", "ab cd"]),
            (
                r#"echo "say \"hi\"" \$HOME"#,
                &["echo", "say \"hi\"", "$HOME"],
            ),
            (r#"echo "a\nb""#, &["echo", "a\\nb"]),
            (r"echo a\ b", &["echo", "a b"]),
            ("echo '' \"\"", &["echo", "", ""]),
            (
                "echo $HOME *.txt | cat",
                &["echo", "$HOME", "*.txt", "|", "cat"],
            ),
            ("sh -c 'exit 7'", &["sh", "-c", "exit 7"]),
            ("", &[]),
        ];
        for (text, want) in cases {
            assert_eq!(split(text).unwrap(), *want, "{text}");
        }
    }

    #[test]
    fn rejects_unbalanced_input() {
        assert_eq!(split("echo 'abc"), Err("unterminated single quote".into()));
        assert_eq!(split("echo \"abc"), Err("unterminated double quote".into()));
        assert_eq!(
            split("echo \"abc\\"),
            Err("unterminated double quote".into())
        );
        assert_eq!(split("echo abc\\"), Err("trailing backslash".into()));
    }
}
