//! Shell-like splitting of a command string into argv words: whitespace
//! separates words, single quotes are literal, double quotes allow `\"`,
//! `\\`, `\$` and `` \` `` escapes, and a backslash outside quotes escapes the
//! next character. No variables, globs, pipes or redirections: `$HOME` stays
//! `$HOME`, as in systemd's `ExecStart=` without its `$` expansion.

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

#[cfg(test)]
mod tests {
    use super::*;

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
