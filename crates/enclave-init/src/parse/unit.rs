//! systemd's unit-file syntax (systemd.syntax(7), systemd.unit(5),
//! systemd.service(5)) as a second input format for service files: a file
//! whose first section is `[Unit]`, `[Service]` or `[Install]` is read here
//! and mapped onto the same [`ServiceSpec`] as TOML, through the same
//! [`Builder`] and its diagnostics.
//!
//! What is systemd's: `Key=value` lines in sections; `#` and `;` comments;
//! a trailing backslash continues a line (comment lines inside are
//! skipped); list keys accumulate and an empty assignment resets them;
//! command lines are split with systemd's quoting and C escapes, with the
//! `-`, `@`, `+`, `:` prefixes and `;` between commands; specifiers (`%i`,
//! `%n`, ...) are replaced; templates (`name@.service`) give instances
//! (`name@inst.service`). Keys of systemd that mean nothing here (sandboxing,
//! `[Install]`) are ignored: with a warning once per key, except
//! `[Install]`'s, since every file of the directory is started.

use std::ffi::OsString;
use std::path::Path;

use crate::model::spec::*;
use crate::parse::diag::Diagnostic;
use crate::parse::service::{suggestion, Builder};

/// One `Key=value` of a section, continuation lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub section: String,
    pub key: String,
    pub value: String,
    /// Where it starts (1-based).
    pub line: usize,
}

/// Whether `text` is in systemd's syntax: its first line that is neither
/// blank nor a comment opens a section (`[Unit]`, `[Service]`,
/// `[Install]`, or a misspelt one, which is then reported as such: a TOML
/// service file has no sections).
pub fn is_unit_syntax(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .is_some_and(|l| l.starts_with('['))
}

/// Splits a unit file into its assignments, in order, and every line that
/// is not one (its number and why): the rest is still read.
pub fn lex_all(text: &str) -> (Vec<Assignment>, Vec<(usize, String)>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut section: Option<String> = None;
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((number, raw)) = lines.next() {
        let mut line = raw.trim().to_string();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        // A trailing backslash joins the next line, with a space; comment
        // lines in between are skipped (systemd.syntax(7)).
        while line.ends_with('\\') {
            line.pop();
            line.push(' ');
            let next = loop {
                match lines.next() {
                    Some((_, l)) if l.trim_start().starts_with(['#', ';']) => continue,
                    other => break other,
                }
            };
            match next {
                Some((_, l)) => line.push_str(l.trim()),
                None => break,
            }
        }
        let line = line.trim();
        if let Some(rest) = line.strip_prefix('[') {
            match rest.strip_suffix(']') {
                Some(name) if !name.is_empty() && !name.contains(['[', ']']) => {
                    section = Some(name.to_string());
                }
                _ => {
                    errors.push((number, format!("invalid section header {line:?}")));
                    // Its keys are not this section's: skipped with it.
                    section = Some(String::new());
                }
            }
            continue;
        }
        let Some(section) = &section else {
            errors.push((
                number,
                "an assignment before the first [section]".to_string(),
            ));
            continue;
        };
        let Some((key, value)) = line.split_once('=') else {
            errors.push((number, format!("expected Key=value, found {line:?}")));
            continue;
        };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            errors.push((number, format!("invalid key {key:?}")));
            continue;
        }
        out.push(Assignment {
            section: section.clone(),
            key: key.to_string(),
            value: value.trim().to_string(),
            line: number,
        });
    }
    (out, errors)
}

/// Splits a unit file into its assignments, in order; the first error (a
/// line and a reason), if any.
pub fn lex(text: &str) -> Result<Vec<Assignment>, (usize, String)> {
    let (out, errors) = lex_all(text);
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// What the file's name says: `name@inst` is an instance of `name@`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UnitName<'a> {
    /// `name`, `name@` or `name@inst`: the service's name.
    full: &'a str,
    prefix: &'a str,
    instance: Option<&'a str>,
}

impl<'a> UnitName<'a> {
    fn new(full: &'a str) -> Self {
        match full.split_once('@') {
            Some((prefix, instance)) => Self {
                full,
                prefix,
                instance: Some(instance),
            },
            None => Self {
                full,
                prefix: full,
                instance: None,
            },
        }
    }
}

/// systemd's unescaping of a unit name part (`%I`, `%P`): `-` is `/`,
/// `\xNN` is that byte.
fn unescape(part: &str) -> String {
    let mut bytes = Vec::with_capacity(part.len());
    let mut rest = part.as_bytes();
    while let Some((&c, tail)) = rest.split_first() {
        if c == b'\\' && tail.first() == Some(&b'x') {
            if let Some(byte) = tail
                .get(1..3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                bytes.push(byte);
                rest = tail.get(3..).unwrap_or_default();
                continue;
            }
        }
        bytes.push(if c == b'-' { b'/' } else { c });
        rest = tail;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Replaces the specifiers of systemd.unit(5) that make sense in an
/// enclave. `user`: `User=`'s value, for `%u`/`%U`/`%h`.
fn specifiers(
    text: &str,
    name: &UnitName,
    path: &Path,
    user: Option<&str>,
) -> Result<String, String> {
    if !text.contains('%') {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let instance = name.instance.unwrap_or("");
        let root = user.is_none_or(|u| u == "root" || u == "0");
        let value = match chars.next() {
            Some('%') => "%".to_string(),
            Some('n') => format!("{}.service", name.full),
            Some('N') => name.full.to_string(),
            Some('p') => name.prefix.to_string(),
            Some('P') => unescape(name.prefix),
            Some('i') => instance.to_string(),
            Some('I') => unescape(instance),
            Some('j') => name.prefix.rsplit('-').next().unwrap_or("").to_string(),
            Some('J') => unescape(name.prefix.rsplit('-').next().unwrap_or("")),
            Some('f') => format!(
                "/{}",
                unescape(if name.instance.is_some() { instance } else { name.prefix })
            ),
            Some('t') => "/run".to_string(),
            Some('S') => "/var/lib".to_string(),
            Some('C') => "/var/cache".to_string(),
            Some('L') => "/var/log".to_string(),
            Some('E') => "/etc".to_string(),
            Some('T') => "/tmp".to_string(),
            Some('V') => "/var/tmp".to_string(),
            Some('y') => path.display().to_string(),
            Some('Y') => path
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            Some('u') => user.unwrap_or("root").to_string(),
            Some('U') if root => "0".to_string(),
            Some('U') if user.is_some_and(|u| u.parse::<u32>().is_ok()) => {
                user.unwrap_or_default().to_string()
            }
            Some('h') if root => "/root".to_string(),
            Some('g') if root && user.is_none() => "root".to_string(),
            Some('G') if root && user.is_none() => "0".to_string(),
            Some(other @ ('U' | 'h' | 'g' | 'G')) => {
                return Err(format!(
                    "specifier %{other} needs the user database, which a unit file is read without; write the value itself"
                ))
            }
            Some(other) => return Err(format!("specifier %{other} is not supported here")),
            None => return Err("a lone % at the end (write %% for a percent sign)".into()),
        };
        out.push_str(&value);
    }
    Ok(out)
}

/// systemd's splitting of a command line or an `Environment=` value into
/// words: whitespace separates, `"..."` and `'...'` group (anywhere in a
/// word), and C escapes (`\n`, `\t`, `\\`, `\"`, `\'`, `\s`, `\xNN`,
/// `\NNN`, `\uNNNN`) are read inside and outside quotes.
pub fn split(text: &str) -> Result<Vec<String>, String> {
    Ok(split_marked(text)?.into_iter().map(|(w, _)| w).collect())
}

/// [`split`], with whether each word was written bare (no quote, no
/// escape): only a bare `;` separates commands.
fn split_marked(text: &str) -> Result<Vec<(String, bool)>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut bare = true;
    let mut quote: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('\\', _) => {
                in_word = true;
                bare = false;
                let e = chars.next().ok_or("a trailing backslash")?;
                let simple = match e {
                    'a' => Some('\x07'),
                    'b' => Some('\x08'),
                    'f' => Some('\x0c'),
                    'n' => Some('\n'),
                    'r' => Some('\r'),
                    't' => Some('\t'),
                    'v' => Some('\x0b'),
                    's' => Some(' '),
                    '\\' | '"' | '\'' | ' ' | ';' | '$' => Some(e),
                    _ => None,
                };
                if let Some(ch) = simple {
                    word.push(ch);
                    continue;
                }
                let (digits, radix) = match e {
                    'x' => (2, 16),
                    'u' => (4, 16),
                    'U' => (8, 16),
                    '0'..='7' => (2, 8),
                    other => return Err(format!("invalid escape \\{other}")),
                };
                let mut code = if radix == 8 {
                    e.to_string()
                } else {
                    String::new()
                };
                for _ in 0..digits {
                    code.push(chars.next().ok_or("an incomplete escape")?);
                }
                let ch = u32::from_str_radix(&code, radix)
                    .ok()
                    .filter(|&n| n != 0)
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("invalid escape \\{e}{code}"))?;
                word.push(ch);
            }
            ('"' | '\'', None) => {
                in_word = true;
                bare = false;
                quote = Some(c);
            }
            (c, Some(q)) if c == q => quote = None,
            (c, None) if c.is_whitespace() => {
                if in_word {
                    words.push((std::mem::take(&mut word), bare));
                    in_word = false;
                    bare = true;
                }
            }
            (c, _) => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("an unterminated {q} quote"));
    }
    if in_word {
        words.push((word, bare));
    }
    Ok(words)
}

/// One command line of an `Exec*=` assignment, or several separated by a
/// bare `;` word. `expand` replaces the specifiers of each word once it
/// is split, as systemd does (an instance name is never re-read as
/// quoting).
fn commands(
    value: &str,
    expand: impl Fn(&str) -> Result<String, String>,
) -> Result<Vec<Command>, String> {
    let mut out = Vec::new();
    let words = split_marked(value)?;
    for line in words.split(|(w, bare)| *bare && w == ";") {
        let line: Vec<String> = line
            .iter()
            .map(|(w, _)| expand(w))
            .collect::<Result<_, _>>()?;
        let Some((first, rest)) = line.split_first() else {
            continue;
        };
        let mut command = Command::default();
        let mut program = first.as_str();
        let mut colon = false;
        while let Some(p) = program.chars().next().filter(|c| "-@+!:|".contains(*c)) {
            match p {
                '-' => command.ignore_failure = true,
                '@' => command.argv0 = Some(OsString::new()),
                '+' => command.privileged = true,
                ':' => colon = true,
                // Ambient capabilities for a User= process: init runs every
                // process with the user's own credentials and no more.
                '!' => {}
                _ => {
                    return Err("the | prefix (a shell) is not supported: write sh -c '...'".into())
                }
            }
            program = &program[1..];
        }
        if program.is_empty() {
            return Err(format!("no program after the prefixes of {first:?}"));
        }
        command.expand = !colon;
        let mut argv: Vec<OsString> = vec![program.into()];
        let mut rest = rest.iter();
        if command.argv0.is_some() {
            command.argv0 = Some(
                rest.next()
                    .ok_or("the @ prefix needs the name the program sees as argv[0]")?
                    .into(),
            );
        }
        argv.extend(rest.map(OsString::from));
        command.argv = argv;
        out.push(command);
    }
    if out.is_empty() {
        return Err("empty command".into());
    }
    Ok(out)
}

/// The keys of the `[Service]` and `[Unit]` sections, and what they are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A value for the TOML reader as it is (a string).
    Text,
    /// `yes`/`no`, `true`/`false`, `on`/`off`, `1`/`0`.
    Bool,
    /// A number.
    Integer,
    /// Words that accumulate; an empty assignment resets.
    Words,
    /// One item per assignment that accumulates (`EnvironmentFile`).
    Each,
    /// Unit names that accumulate.
    Units,
    /// `Environment=`: assignments split with quotes, accumulating.
    Env,
    /// Command lines that accumulate.
    Commands,
    /// Accepted and meaningless here (`Description=`).
    Quiet,
}

const SERVICE_KEYS: &[(&str, Kind)] = &[
    ("ExecStart", Kind::Commands),
    ("ExecStartPre", Kind::Commands),
    ("ExecStop", Kind::Commands),
    ("ExecReload", Kind::Commands),
    ("ExecStartPost", Kind::Commands),
    ("ExecStopPost", Kind::Commands),
    ("Environment", Kind::Env),
    ("EnvironmentFile", Kind::Each),
    ("WorkingDirectory", Kind::Text),
    ("User", Kind::Text),
    ("Group", Kind::Text),
    ("Type", Kind::Text),
    ("RemainAfterExit", Kind::Bool),
    ("TimeoutStartSec", Kind::Text),
    ("TimeoutStopSec", Kind::Text),
    ("TimeoutSec", Kind::Text),
    ("Restart", Kind::Text),
    ("RestartSec", Kind::Text),
    ("RestartSteps", Kind::Integer),
    ("RestartMaxDelaySec", Kind::Text),
    ("StartLimitBurst", Kind::Integer),
    ("StartLimitIntervalSec", Kind::Text),
    ("KillSignal", Kind::Text),
    ("KillMode", Kind::Text),
    ("LimitNOFILE", Kind::Text),
    ("LimitNPROC", Kind::Text),
    ("LimitCORE", Kind::Text),
    ("LimitMEMLOCK", Kind::Text),
    ("SuccessExitStatus", Kind::Words),
    ("SuccessAction", Kind::Text),
    ("FailureAction", Kind::Text),
    ("StandardOutput", Kind::Text),
    ("StandardError", Kind::Text),
    ("UMask", Kind::Text),
    ("RuntimeDirectory", Kind::Words),
    ("RuntimeDirectoryMode", Kind::Text),
    ("StateDirectory", Kind::Words),
    ("StateDirectoryMode", Kind::Text),
    ("PIDFile", Kind::Text),
    ("NotifyAccess", Kind::Text),
    ("WatchdogSec", Kind::Text),
    ("WatchdogSignal", Kind::Text),
];

const UNIT_KEYS: &[(&str, Kind)] = &[
    ("Description", Kind::Quiet),
    ("Documentation", Kind::Quiet),
    ("After", Kind::Units),
    ("Before", Kind::Units),
    ("Requires", Kind::Units),
    ("Wants", Kind::Units),
    ("StartLimitBurst", Kind::Integer),
    ("StartLimitIntervalSec", Kind::Text),
    ("SuccessAction", Kind::Text),
    ("FailureAction", Kind::Text),
];

/// Parses one unit file named `name` (the file's name without
/// `.service`; `prefix@instance` for an instance of a template).
pub fn parse(path: &Path, name: &str, text: &str) -> (Result<ServiceSpec, ()>, Vec<Diagnostic>) {
    let mut b = Builder::new(path, name);
    // Every line that is not an assignment is reported, and the others
    // still read, so that one pass shows every mistake.
    let (assignments, errors) = lex_all(text);
    for (line, reason) in errors {
        b.error(Some(line), None, reason);
    }
    let unit = UnitName::new(name);
    if unit.instance == Some("") {
        b.error(
            None,
            None,
            "a template (name@.service) is not a service: name an instance, name@INSTANCE.service, as a link to it, or in another service's Wants= or Requires=",
        );
        return b.abandon();
    }
    // `%u` and friends need User= before any key is read.
    let user = assignments
        .iter()
        .rev()
        .find(|a| a.section == "Service" && a.key == "User" && !a.value.is_empty())
        .map(|a| a.value.clone());
    let mut lists: Vec<(String, Kind, usize, Vec<String>)> = Vec::new();
    let mut commands_of: Vec<(String, usize, Vec<Command>)> = Vec::new();
    let mut warned: std::collections::HashSet<(String, String)> = Default::default();
    let mut warn_once = |b: &mut Builder, a: &Assignment, reason: String| {
        if warned.insert((a.section.clone(), a.key.clone())) {
            b.warning(Some(a.line), Some(&a.key), reason);
        }
    };
    for a in &assignments {
        let table = match a.section.as_str() {
            "Service" => SERVICE_KEYS,
            "Unit" => UNIT_KEYS,
            // Enabling is having the file in the directory: nothing to do.
            // "": after an invalid header, already reported.
            "Install" | "" => continue,
            s if s.starts_with("X-") => continue,
            s => {
                let hint = ["Unit", "Service", "Install"]
                    .iter()
                    .find(|k| k.eq_ignore_ascii_case(s) || crate::parse::service::similar(k, s))
                    .map(|k| format!(" (did you mean [{k}]?)"))
                    .unwrap_or_default();
                warn_once(
                    &mut b,
                    a,
                    format!("section [{s}] is not read here, key ignored{hint}"),
                );
                continue;
            }
        };
        let Some(&(_, kind)) = table.iter().find(|(k, _)| *k == a.key) else {
            let hint = suggestion(&a.key);
            warn_once(
                &mut b,
                a,
                format!("not supported by enclave-init, ignored{hint}"),
            );
            continue;
        };
        let value = match specifiers(&a.value, &unit, path, user.as_deref()) {
            Ok(v) => v,
            Err(reason) => {
                b.error(Some(a.line), Some(&a.key), reason);
                continue;
            }
        };
        let list = |lists: &mut Vec<(String, Kind, usize, Vec<String>)>| -> usize {
            match lists.iter().position(|(k, ..)| *k == a.key) {
                Some(i) => i,
                None => {
                    lists.push((a.key.clone(), kind, a.line, Vec::new()));
                    lists.len() - 1
                }
            }
        };
        match kind {
            Kind::Quiet => {}
            Kind::Text => {
                let keys: Vec<&str> = if a.key == "TimeoutSec" {
                    vec!["TimeoutStartSec", "TimeoutStopSec"]
                } else {
                    vec![a.key.as_str()]
                };
                for key in keys {
                    let value = text_value(key, &value);
                    b.set(key, a.line, &toml::Value::String(value));
                }
            }
            Kind::Bool => match boolean(&value) {
                Some(v) => b.set(&a.key, a.line, &toml::Value::Boolean(v)),
                None => b.error(
                    Some(a.line),
                    Some(&a.key),
                    format!(
                        "expected a boolean (yes/no, true/false, on/off, 1/0), found {value:?}"
                    ),
                ),
            },
            Kind::Integer => match value.parse::<i64>() {
                Ok(n) => b.set(&a.key, a.line, &toml::Value::Integer(n)),
                Err(_) => b.error(
                    Some(a.line),
                    Some(&a.key),
                    format!("expected a number, found {value:?}"),
                ),
            },
            Kind::Words | Kind::Units | Kind::Env | Kind::Each => {
                let i = list(&mut lists);
                let Some(slot) = lists.get_mut(i) else {
                    continue;
                };
                slot.2 = a.line;
                if value.is_empty() {
                    slot.3.clear();
                    continue;
                }
                match kind {
                    Kind::Each => slot.3.push(value),
                    Kind::Env => match split(&value) {
                        Ok(words) => slot.3.extend(words),
                        Err(reason) => b.error(Some(a.line), Some(&a.key), reason),
                    },
                    Kind::Units => {
                        for unit in value.split_whitespace() {
                            match unit.rsplit_once('.') {
                                Some((_, "service")) => slot.3.push(unit.to_string()),
                                Some((_, kind))
                                    if !unit.contains('/')
                                        && kind.chars().all(|c| c.is_ascii_lowercase()) =>
                                {
                                    warn_once(
                                        &mut b,
                                        a,
                                        format!(
                                            "{unit} ignored: only services exist here (no .{kind} units)"
                                        ),
                                    );
                                }
                                _ => slot.3.push(unit.to_string()),
                            }
                        }
                    }
                    _ => slot.3.extend(value.split_whitespace().map(str::to_string)),
                }
            }
            Kind::Commands => {
                let slot = match commands_of.iter().position(|(k, ..)| *k == a.key) {
                    Some(i) => i,
                    None => {
                        commands_of.push((a.key.clone(), a.line, Vec::new()));
                        commands_of.len() - 1
                    }
                };
                let Some(slot) = commands_of.get_mut(slot) else {
                    continue;
                };
                slot.1 = a.line;
                if value.is_empty() {
                    slot.2.clear();
                    continue;
                }
                let expand = |w: &str| specifiers(w, &unit, path, user.as_deref());
                match commands(&a.value, expand) {
                    Ok(cs) => slot.2.extend(cs),
                    Err(reason) => b.error(Some(a.line), Some(&a.key), reason),
                }
            }
        }
    }
    for (key, _, line, items) in lists {
        let value = toml::Value::Array(items.into_iter().map(toml::Value::String).collect());
        b.set(&key, line, &value);
    }
    for (key, line, cs) in commands_of {
        b.set_with(&key, line, |spec| set_commands(spec, &key, cs));
    }
    b.finish()
}

/// Sets a list of commands; `ExecStart` takes exactly one.
fn set_commands(spec: &mut ServiceSpec, key: &str, mut cs: Vec<Command>) -> Result<(), String> {
    match key {
        "ExecStart" => {
            if cs.len() > 1 {
                return Err(format!(
                    "{} command lines: a service here has one (for a sequence, use ExecStartPre= or a script)",
                    cs.len()
                ));
            }
            spec.exec_start = cs.pop().ok_or("missing: every service needs a command")?;
        }
        "ExecStartPre" => spec.exec_start_pre = cs,
        "ExecStop" => spec.exec_stop = cs,
        "ExecReload" => spec.exec_reload = cs,
        "ExecStartPost" => spec.exec_start_post = cs,
        "ExecStopPost" => spec.exec_stop_post = cs,
        other => return Err(format!("{other} is not a command key")),
    }
    Ok(())
}

/// systemd's spellings of values that the TOML reader knows by another
/// name: `journal` output, `-force` actions, `-` on a directory.
fn text_value(key: &str, value: &str) -> String {
    match key {
        "StandardOutput" | "StandardError" => match value {
            v if v.starts_with("journal") || v.starts_with("kmsg") || v.starts_with("syslog") => {
                "log".into()
            }
            "tty" => "console".into(),
            // stdin's target, which is /dev/null for every service.
            "inherit" if key == "StandardOutput" => "null".into(),
            v => v.into(),
        },
        "SuccessAction" | "FailureAction" => value
            .strip_suffix("-immediate")
            .or_else(|| value.strip_suffix("-force"))
            .unwrap_or(value)
            .into(),
        "WorkingDirectory" => value.strip_prefix('-').unwrap_or(value).into(),
        _ => value.into(),
    }
}

/// systemd's booleans.
fn boolean(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" | "y" | "t" => Some(true),
        "no" | "false" | "off" | "0" | "n" | "f" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
#[path = "unit_tests.rs"]
mod tests;
