//! nitro-cli's `/cmd` and `/env`: the Docker image's `CMD`/`ENTRYPOINT` and
//! `ENV`, written by `nitro-cli build-enclave` into the customer ramdisk.
//!
//! `/cmd` holds one argv element a line (an empty line is an empty argument,
//! the last newline may be missing); `/env` one `KEY=VALUE` a line (empty
//! lines skipped). Both are read exactly as the AWS C init reads them.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

/// Parses `/cmd`. The C init reads lines up to the end of the file; a final
/// newline does not add an empty argument. Bytes, not text: an argument
/// that is not UTF-8 passes through unchanged.
pub fn parse_cmd(bytes: &[u8]) -> Vec<OsString> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    body.split(|b| *b == b'\n')
        .map(|line| OsString::from_vec(line.strip_suffix(b"\r").unwrap_or(line).to_vec()))
        .collect()
}

/// One line of `/env` that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvLineError {
    pub line: usize,
    pub reason: String,
}

/// Parses `/env` into ordered pairs; bad lines are returned beside the good
/// ones so that the caller reports them and keeps the rest. Values (and
/// names) are bytes and pass through unchanged.
pub fn parse_env(bytes: &[u8]) -> (Vec<(OsString, OsString)>, Vec<EnvLineError>) {
    let mut vars = Vec::new();
    let mut errors = Vec::new();
    for (index, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        let shown = || crate::model::text::printable(line);
        match line.iter().position(|b| *b == b'=') {
            // No process can get it (exec takes C strings): say which line.
            _ if line.contains(&0) => errors.push(EnvLineError {
                line: index + 1,
                reason: format!("a NUL byte in \"{}\"", shown()),
            }),
            Some(0) => errors.push(EnvLineError {
                line: index + 1,
                reason: format!("empty variable name in \"{}\"", shown()),
            }),
            Some(at) => {
                let (key, value) = line.split_at(at);
                vars.push((
                    OsString::from_vec(key.to_vec()),
                    OsString::from_vec(value.get(1..).unwrap_or_default().to_vec()),
                ));
            }
            None => errors.push(EnvLineError {
                line: index + 1,
                reason: format!("no '=' in \"{}\"", shown()),
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
            parse_cmd(b"/bin/app\n--flag\nvalue\n"),
            ["/bin/app", "--flag", "value"]
        );
        assert_eq!(parse_cmd(b"/bin/app\n--flag"), ["/bin/app", "--flag"]);
        assert_eq!(parse_cmd(b"/bin/echo\n\nx\n"), ["/bin/echo", "", "x"]);
        assert_eq!(parse_cmd(b"/bin/echo\n\n"), ["/bin/echo", ""]);
        assert_eq!(parse_cmd(b"a b c\n"), ["a b c"]);
        assert_eq!(parse_cmd(b""), Vec::<OsString>::new());
        assert_eq!(parse_cmd(b"\n"), [""]);
    }

    #[test]
    fn bytes_that_are_not_utf8_pass_through() {
        assert_eq!(
            parse_cmd(b"/bin/echo\ncaf\xe9\n"),
            [
                OsString::from("/bin/echo"),
                OsString::from_vec(b"caf\xe9".to_vec())
            ]
        );
        let (vars, errors) = parse_env(b"NAME=na\xefve\n\xff=1\nbad\xfe\n");
        assert_eq!(
            vars,
            [
                ("NAME".into(), OsString::from_vec(b"na\xefve".to_vec())),
                (OsString::from_vec(vec![0xff]), "1".into()),
            ]
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].reason, "no '=' in \"bad\\xfe\"");
        let (vars, errors) = parse_env(b"A=1\nB=x\x00y\n");
        assert_eq!(vars.len(), 1);
        assert_eq!(
            errors,
            [EnvLineError {
                line: 2,
                reason: "a NUL byte in \"B=x\\x00y\"".into()
            }]
        );
    }

    #[test]
    fn env_lines_are_pairs() {
        let (vars, errors) = parse_env(b"PATH=/bin\n\nA=b=c\nEMPTY=\nbogus\n=x\nLAST=1");
        let pair = |k: &str, v: &str| (OsString::from(k), OsString::from(v));
        assert_eq!(
            vars,
            [
                pair("PATH", "/bin"),
                pair("A", "b=c"),
                pair("EMPTY", ""),
                pair("LAST", "1"),
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
        assert_eq!(parse_env(b""), (vec![], vec![]));
    }
}
