//! nitro-cli's `/cmd` and `/env`: the Docker image's `CMD`/`ENTRYPOINT` and
//! `ENV`, written by `nitro-cli build-enclave` into the customer ramdisk.
//!
//! `/cmd` holds one argv element a line (an empty line is an empty argument,
//! the last newline may be missing); `/env` one `KEY=VALUE` a line (empty
//! lines skipped). Both are read exactly as the AWS C init reads them.

/// Parses `/cmd`. The C init reads lines up to the end of the file; a final
/// newline does not add an empty argument.
pub fn parse_cmd(text: &str) -> Vec<String> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    if body.is_empty() && text.is_empty() {
        return Vec::new();
    }
    body.split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line).to_string())
        .collect()
}

/// One line of `/env` that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvLineError {
    pub line: usize,
    pub reason: String,
}

/// Parses `/env` into ordered pairs; bad lines are returned beside the good
/// ones so that the caller reports them and keeps the rest.
pub fn parse_env(text: &str) -> (Vec<(String, String)>, Vec<EnvLineError>) {
    let mut vars = Vec::new();
    let mut errors = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        match line.split_once('=') {
            Some(("", _)) => errors.push(EnvLineError {
                line: index + 1,
                reason: format!("empty variable name in {line:?}"),
            }),
            Some((key, value)) => vars.push((key.to_string(), value.to_string())),
            None => errors.push(EnvLineError {
                line: index + 1,
                reason: format!("no '=' in {line:?}"),
            }),
        }
    }
    (vars, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmd_lines_are_argv() {
        assert_eq!(
            parse_cmd("/bin/app\n--flag\nvalue\n"),
            ["/bin/app", "--flag", "value"]
        );
        assert_eq!(parse_cmd("/bin/app\n--flag"), ["/bin/app", "--flag"]);
        assert_eq!(parse_cmd("/bin/echo\n\nx\n"), ["/bin/echo", "", "x"]);
        assert_eq!(parse_cmd("/bin/echo\n\n"), ["/bin/echo", ""]);
        assert_eq!(parse_cmd("a b c\n"), ["a b c"]);
        assert_eq!(parse_cmd(""), Vec::<String>::new());
        assert_eq!(parse_cmd("\n"), [""]);
    }

    #[test]
    fn env_lines_are_pairs() {
        let (vars, errors) = parse_env("PATH=/bin\n\nA=b=c\nEMPTY=\nbogus\n=x\nLAST=1");
        assert_eq!(
            vars,
            [
                ("PATH".to_string(), "/bin".to_string()),
                ("A".to_string(), "b=c".to_string()),
                ("EMPTY".to_string(), String::new()),
                ("LAST".to_string(), "1".to_string()),
            ]
        );
        assert_eq!(
            errors,
            [
                EnvLineError {
                    line: 5,
                    reason: "no '=' in \"bogus\"".into()
                },
                EnvLineError {
                    line: 6,
                    reason: "empty variable name in \"=x\"".into()
                },
            ]
        );
        assert_eq!(parse_env(""), (vec![], vec![]));
    }
}
