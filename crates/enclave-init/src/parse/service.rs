//! Service files (contract §5): `<dir>/<name>.service`, TOML with systemd's
//! key names and meanings. [`parse`] turns one file into a [`ServiceSpec`]
//! or the reasons it cannot be loaded (`host::load` reads a directory of
//! them, where one broken file never keeps the others from loading).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::spec::*;
use crate::parse::diag::{Diagnostic, Severity};
use crate::parse::toml_keys;
use crate::parse::words;

/// Every key a service file may have, for the unknown-key warning.
pub const KEYS: &[&str] = &[
    "ExecStart",
    "ExecStartPre",
    "ExecStop",
    "ExecReload",
    "ExecStartPost",
    "ExecStopPost",
    "Environment",
    "EnvironmentFile",
    "WorkingDirectory",
    "User",
    "Group",
    "Type",
    "RemainAfterExit",
    "TimeoutStartSec",
    "Restart",
    "RestartSec",
    "RestartSteps",
    "RestartMaxDelaySec",
    "StartLimitBurst",
    "StartLimitIntervalSec",
    "TimeoutStopSec",
    "KillSignal",
    "KillMode",
    "LimitNOFILE",
    "LimitNPROC",
    "LimitCORE",
    "LimitMEMLOCK",
    "SuccessExitStatus",
    "SuccessAction",
    "FailureAction",
    "After",
    "Before",
    "Requires",
    "Wants",
    "StandardOutput",
    "StandardError",
    "UMask",
    "RuntimeDirectory",
    "RuntimeDirectoryMode",
    "StateDirectory",
    "StateDirectoryMode",
    "PIDFile",
    "NotifyAccess",
    "WatchdogSec",
    "WatchdogSignal",
    "TimeoutSec",
];

const TYPES: &[(&str, ServiceType)] = &[
    ("simple", ServiceType::Simple),
    ("oneshot", ServiceType::Oneshot),
    ("notify", ServiceType::Notify),
    ("forking", ServiceType::Forking),
    // systemd's exec: ready once exec succeeded, which is what a start
    // here always waits for.
    ("exec", ServiceType::Simple),
];
const RESTARTS: &[(&str, RestartPolicy)] = &[
    ("no", RestartPolicy::No),
    ("always", RestartPolicy::Always),
    ("on-success", RestartPolicy::OnSuccess),
    ("on-failure", RestartPolicy::OnFailure),
    ("on-abnormal", RestartPolicy::OnAbnormal),
    ("on-abort", RestartPolicy::OnAbort),
    ("on-watchdog", RestartPolicy::OnWatchdog),
];
const NOTIFY_ACCESS: &[(&str, NotifyAccess)] = &[
    ("none", NotifyAccess::None),
    ("main", NotifyAccess::Main),
    ("exec", NotifyAccess::Exec),
    ("all", NotifyAccess::All),
];
const KILL_MODES: &[(&str, KillMode)] = &[
    ("control-group", KillMode::ControlGroup),
    ("mixed", KillMode::Mixed),
    ("process", KillMode::Process),
];
const END_ACTIONS: &[(&str, EndAction)] = &[
    ("none", EndAction::None),
    ("poweroff", EndAction::Poweroff),
    ("reboot", EndAction::Reboot),
    ("exit", EndAction::Exit),
];
const OUTPUTS: &[(&str, Output)] = &[
    ("log", Output::Log),
    ("journal", Output::Log),
    ("console", Output::Console),
    ("null", Output::Null),
];

/// Parses one service file: TOML, or systemd's own syntax when its first
/// section is `[Unit]`, `[Service]` or `[Install]` (see [`super::unit`]).
/// `Err` holds the errors that keep it from loading; warnings (unknown
/// keys) come back in both cases.
pub fn parse(path: &Path, name: &str, text: &str) -> (Result<ServiceSpec, ()>, Vec<Diagnostic>) {
    if text.trim().is_empty() {
        let diag = Diagnostic::error(path, None, None, "empty file: ExecStart is required");
        return (Err(()), vec![diag]);
    }
    if super::unit::is_unit_syntax(text) {
        return super::unit::parse(path, name, text);
    }
    let mut b = Builder::new(path, name);
    match toml_keys::parse_flat(text) {
        Ok(entries) => {
            for entry in &entries {
                b.set(&entry.key, entry.line, &entry.value);
            }
        }
        Err(e) => {
            let diag = Diagnostic::error(path, e.line, None, e.message);
            return (Err(()), vec![diag]);
        }
    }
    b.finish()
}

/// A [`ServiceSpec`] being built from a file's keys, whatever its syntax,
/// with the diagnostics so far. The checks that span keys are in
/// [`Builder::finish`].
pub(super) struct Builder<'a> {
    path: &'a Path,
    name: &'a str,
    pub spec: ServiceSpec,
    stderr_inherits: bool,
    /// The line of each key that was set.
    lines: BTreeMap<String, usize>,
    failed: bool,
    diags: Vec<Diagnostic>,
}

impl<'a> Builder<'a> {
    pub fn new(path: &'a Path, name: &'a str) -> Self {
        Self {
            path,
            name,
            spec: ServiceSpec::new(name, Vec::new()),
            stderr_inherits: true,
            lines: BTreeMap::new(),
            failed: false,
            diags: Vec::new(),
        }
    }

    /// Sets a key from its value; an unknown key is a warning naming it.
    pub fn set(&mut self, key: &str, line: usize, value: &toml::Value) {
        match apply(&mut self.spec, key, value, &mut self.stderr_inherits) {
            Ok(true) => {
                self.lines.insert(key.to_string(), line);
            }
            Ok(false) => {
                let hint = suggestion(key);
                self.warning(Some(line), Some(key), format!("unknown key, ignored{hint}"));
            }
            Err(reason) => self.error(Some(line), Some(key), reason),
        }
    }

    /// Sets a key through `f`, for values the caller has already read.
    pub fn set_with(
        &mut self,
        key: &str,
        line: usize,
        f: impl FnOnce(&mut ServiceSpec) -> Result<(), String>,
    ) {
        match f(&mut self.spec) {
            Ok(()) => {
                self.lines.insert(key.to_string(), line);
            }
            Err(reason) => self.error(Some(line), Some(key), reason),
        }
    }

    /// An error: the file will not load.
    pub fn error(&mut self, line: Option<usize>, key: Option<&str>, reason: impl Into<String>) {
        self.failed = true;
        self.diags
            .push(Diagnostic::error(self.path, line, key, reason));
    }

    pub fn warning(&mut self, line: Option<usize>, key: Option<&str>, reason: impl Into<String>) {
        self.diags
            .push(Diagnostic::warning(self.path, line, key, reason));
    }

    /// The file cannot be read at all: its diagnostics so far, and no
    /// checks that span keys.
    pub fn abandon(self) -> (Result<ServiceSpec, ()>, Vec<Diagnostic>) {
        (Err(()), self.diags)
    }

    /// The checks that span keys, then the result.
    pub fn finish(mut self) -> (Result<ServiceSpec, ()>, Vec<Diagnostic>) {
        if self.stderr_inherits {
            self.spec.stderr = self.spec.stdout;
        }
        let spec = &self.spec;
        let mut errors: Vec<(Option<usize>, &str, String)> = Vec::new();
        if !self.lines.contains_key("ExecStart")
            && self
                .diags
                .iter()
                // An invalid ExecStart was said already; a warning about
                // one (a misspelt section) is no command.
                .all(|d| d.key.as_deref() != Some("ExecStart") || d.severity != Severity::Error)
        {
            errors.push((
                None,
                "ExecStart",
                "missing: every service needs a command".into(),
            ));
        }
        if spec.service_type == ServiceType::Oneshot
            && matches!(
                spec.restart,
                RestartPolicy::Always | RestartPolicy::OnSuccess
            )
        {
            errors.push((
                self.lines.get("Restart").copied(),
                "Restart",
                "always and on-success are not allowed for Type=oneshot (systemd refuses them too)"
                    .into(),
            ));
        }
        if let Some(max) = spec.restart_max_delay {
            if max < spec.restart_sec {
                errors.push((
                    self.lines.get("RestartMaxDelaySec").copied(),
                    "RestartMaxDelaySec",
                    "must not be shorter than RestartSec".into(),
                ));
            }
        }
        for (key, list) in [
            ("After", &spec.after),
            ("Before", &spec.before),
            ("Requires", &spec.requires),
            ("Wants", &spec.wants),
        ] {
            if list.iter().any(|n| n == self.name) {
                errors.push((
                    self.lines.get(key).copied(),
                    key,
                    format!("service {} cannot depend on itself", self.name),
                ));
            }
        }
        for (line, key, reason) in errors {
            self.failed = true;
            self.diags
                .push(Diagnostic::error(self.path, line, Some(key), reason));
        }
        if self.failed {
            (Err(()), self.diags)
        } else {
            (Ok(self.spec), self.diags)
        }
    }
}

/// " (did you mean Restart?)" for a key one typo away from a known one.
pub(super) fn suggestion(key: &str) -> String {
    KEYS.iter()
        .find(|k| k.eq_ignore_ascii_case(key) || similar(k, key))
        .map(|k| format!(" (did you mean {k}?)"))
        .unwrap_or_default()
}

/// Sets one key. `Ok(false)`: the key is unknown.
fn apply(
    spec: &mut ServiceSpec,
    key: &str,
    v: &toml::Value,
    stderr_inherits: &mut bool,
) -> Result<bool, String> {
    match key {
        "ExecStart" => spec.exec_start = Command::new(exec_start(v)?),
        "ExecStartPre" => spec.exec_start_pre = commands(v)?,
        "ExecStop" => spec.exec_stop = commands(v)?,
        "ExecReload" => spec.exec_reload = commands(v)?,
        "ExecStartPost" => spec.exec_start_post = commands(v)?,
        "ExecStopPost" => spec.exec_stop_post = commands(v)?,
        "Environment" => spec.environment = environment(v)?,
        "EnvironmentFile" => {
            spec.environment_files = toml_keys::strings(v)?
                .into_iter()
                .map(|s| {
                    let (optional, path) = match s.strip_prefix('-') {
                        Some(rest) => (true, rest.to_string()),
                        None => (false, s),
                    };
                    if path.starts_with('/') {
                        Ok(EnvironmentFile {
                            path: PathBuf::from(path),
                            optional,
                        })
                    } else {
                        Err(format!("path {path:?} is not absolute"))
                    }
                })
                .collect::<Result<_, _>>()?;
        }
        "WorkingDirectory" => {
            let dir = toml_keys::string(v)?;
            if !dir.starts_with('/') {
                return Err(format!("path {dir:?} is not absolute"));
            }
            spec.working_directory = Some(PathBuf::from(dir));
        }
        "User" => spec.user = Some(user_or_group(v)?),
        "Group" => spec.group = Some(user_or_group(v)?),
        "Type" => spec.service_type = toml_keys::choice(v, TYPES)?,
        "RemainAfterExit" => spec.remain_after_exit = toml_keys::boolean(v)?,
        "TimeoutStartSec" => spec.timeout_start = zero_is_infinity(toml_keys::duration(v)?),
        "Restart" => spec.restart = toml_keys::choice(v, RESTARTS)?,
        "RestartSec" => spec.restart_sec = toml_keys::duration(v)?,
        "RestartSteps" => spec.restart_steps = toml_keys::unsigned(v, 3000)?,
        "RestartMaxDelaySec" => spec.restart_max_delay = Some(toml_keys::duration(v)?),
        "StartLimitBurst" => spec.start_limit_burst = toml_keys::unsigned(v, i64::from(u32::MAX))?,
        "StartLimitIntervalSec" => spec.start_limit_interval = toml_keys::duration(v)?,
        "TimeoutStopSec" => spec.timeout_stop = Some(zero_is_infinity(toml_keys::duration(v)?)),
        "KillSignal" => spec.kill_signal = signal(v)?,
        "KillMode" => spec.kill_mode = toml_keys::choice(v, KILL_MODES)?,
        "LimitNOFILE" => set_limit(spec, Resource::NoFile, v)?,
        "LimitNPROC" => set_limit(spec, Resource::NProc, v)?,
        "LimitCORE" => set_limit(spec, Resource::Core, v)?,
        "LimitMEMLOCK" => set_limit(spec, Resource::MemLock, v)?,
        "SuccessExitStatus" => spec.success_exit_status = success_statuses(v)?,
        "SuccessAction" => spec.success_action = toml_keys::choice(v, END_ACTIONS)?,
        "FailureAction" => spec.failure_action = toml_keys::choice(v, END_ACTIONS)?,
        "After" => spec.after = service_names(v)?,
        "Before" => spec.before = service_names(v)?,
        "Requires" => spec.requires = service_names(v)?,
        "Wants" => spec.wants = service_names(v)?,
        "StandardOutput" => spec.stdout = toml_keys::choice(v, OUTPUTS)?,
        "StandardError" => {
            if toml_keys::string(v)? == "inherit" {
                *stderr_inherits = true;
            } else {
                spec.stderr = toml_keys::choice(v, OUTPUTS)?;
                *stderr_inherits = false;
            }
        }
        "UMask" => spec.umask = Some(mode(v, 0o777)?),
        "NotifyAccess" => spec.notify_access = Some(toml_keys::choice(v, NOTIFY_ACCESS)?),
        "WatchdogSec" => {
            let d = toml_keys::duration(v)?;
            spec.watchdog = (!d.is_zero() && d != Duration::MAX).then_some(d);
        }
        "WatchdogSignal" => spec.watchdog_signal = signal(v)?,
        // systemd: both start and stop timeouts at once.
        "TimeoutSec" => {
            let d = zero_is_infinity(toml_keys::duration(v)?);
            spec.timeout_start = d;
            spec.timeout_stop = Some(d);
        }
        "RuntimeDirectory" => spec.runtime_directory = directories(v)?,
        "RuntimeDirectoryMode" => spec.runtime_directory_mode = mode(v, 0o7777)?,
        "StateDirectory" => spec.state_directory = directories(v)?,
        "StateDirectoryMode" => spec.state_directory_mode = mode(v, 0o7777)?,
        "PIDFile" => {
            // systemd: a relative path is below /run.
            let file = toml_keys::string(v)?;
            if file.is_empty() || file.contains('\0') {
                return Err(format!("invalid path {file:?}"));
            }
            spec.pid_file = Some(Path::new("/run").join(file));
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// An octal mode, `"0027"` or TOML's `0o027`, at most `max`.
fn mode(value: &toml::Value, max: u32) -> Result<u32, String> {
    let parsed = match value {
        toml::Value::String(s) => u32::from_str_radix(s.trim(), 8).ok(),
        toml::Value::Integer(n) => u32::try_from(*n).ok(),
        other => {
            return Err(format!(
                "expected an octal mode such as \"0755\", found {}",
                other.type_str()
            ))
        }
    };
    parsed.filter(|m| *m <= max).ok_or_else(|| {
        let shown = match value {
            toml::Value::String(s) => format!("{s:?}"),
            toml::Value::Integer(n) => format!("{n:o} (octal)"),
            other => other.type_str().to_string(),
        };
        format!("invalid mode {shown}: expected octal digits, at most {max:o}")
    })
}

/// `RuntimeDirectory=`/`StateDirectory=`: relative paths, no `..`.
fn directories(value: &toml::Value) -> Result<Vec<String>, String> {
    let items = match value {
        toml::Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        _ => toml_keys::strings(value)?,
    };
    for dir in &items {
        let bad = dir.is_empty()
            || dir.starts_with('/')
            || dir.contains('\0')
            || dir
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..");
        if bad {
            return Err(format!(
                "invalid directory {dir:?}: a relative path without . or .. parts"
            ));
        }
    }
    Ok(items)
}

/// systemd's timeouts: `0` disables the timeout, as `infinity` does
/// (systemd.service(5), `TimeoutStartSec=`, `TimeoutStopSec=`). Debian's
/// own redis unit sets `TimeoutStopSec=0`: read as "SIGKILL at once", redis
/// would be killed before it saves.
pub fn zero_is_infinity(d: Duration) -> Duration {
    if d.is_zero() {
        Duration::MAX
    } else {
        d
    }
}

/// A string is split like a shell splits words; an array is argv as is.
fn exec_start(value: &toml::Value) -> Result<Vec<OsString>, String> {
    let argv = match value {
        toml::Value::String(s) => words::split(s)?,
        toml::Value::Array(_) => toml_keys::strings(value)?,
        other => {
            return Err(format!(
                "expected a command string or an array of strings, found {}",
                other.type_str()
            ))
        }
    };
    no_nul(&argv)?;
    match argv.first() {
        None => Err("empty command".into()),
        Some(program) if program.is_empty() => Err("empty program name".into()),
        Some(_) => Ok(argv.into_iter().map(OsString::from).collect()),
    }
}

/// exec takes C strings: an argument with a NUL byte can never run.
fn no_nul(argv: &[String]) -> Result<(), String> {
    match argv.iter().enumerate().find(|(_, a)| a.contains('\0')) {
        Some((i, a)) => Err(format!("a NUL byte in argument {}: {a:?}", i + 1)),
        None => Ok(()),
    }
}

fn commands(value: &toml::Value) -> Result<Vec<Command>, String> {
    toml_keys::strings(value)?
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let (ignore_failure, text) = match text.trim_start().strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, text.as_str()),
            };
            let argv = words::split(text).map_err(|e| format!("command {}: {e}", i + 1))?;
            no_nul(&argv).map_err(|e| format!("command {}: {e}", i + 1))?;
            if argv.first().is_none_or(String::is_empty) {
                return Err(format!("command {}: empty command", i + 1));
            }
            Ok(Command {
                ignore_failure,
                ..Command::new(argv.into_iter().map(OsString::from).collect())
            })
        })
        .collect()
}

/// `["KEY=VALUE", ...]`, or one string of space-separated assignments
/// (quotes allowed), as systemd's `Environment=` line.
fn environment(value: &toml::Value) -> Result<Vec<(String, String)>, String> {
    let items = match value {
        toml::Value::String(s) => words::split(s)?,
        _ => toml_keys::strings(value)?,
    };
    items
        .iter()
        .map(|item| match item.split_once('=') {
            _ if item.contains('\0') => Err(format!("a NUL byte in {item:?}")),
            Some((key, val)) if valid_env_name(key) => Ok((key.to_string(), val.to_string())),
            Some((key, _)) => Err(format!("invalid variable name {key:?} in {item:?}")),
            None => Err(format!("expected KEY=VALUE, found {item:?}")),
        })
        .collect()
}

fn user_or_group(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::Integer(n) if *n >= 0 && *n < i64::from(u32::MAX) => Ok(n.to_string()),
        toml::Value::Integer(n) => Err(format!("id {n} is out of range")),
        toml::Value::String(s)
            if !s.is_empty() && !s.contains(|c: char| c == ':' || c.is_whitespace()) =>
        {
            Ok(s.clone())
        }
        toml::Value::String(s) => Err(format!("invalid name {s:?}")),
        other => Err(format!(
            "expected a name or a number, found {}",
            other.type_str()
        )),
    }
}

fn signal(value: &toml::Value) -> Result<i32, String> {
    let parsed = match value {
        toml::Value::Integer(n) => i32::try_from(*n).ok().filter(|n| (1..=64).contains(n)),
        toml::Value::String(s) => parse_signal(s),
        other => {
            return Err(format!(
                "expected a signal name or number, found {}",
                other.type_str()
            ))
        }
    };
    let signal = parsed.ok_or_else(|| match value {
        toml::Value::String(s) => format!("unknown signal {s:?}"),
        other => format!("unknown signal {}", other.as_integer().unwrap_or_default()),
    })?;
    if signal == libc::SIGSTOP {
        // SIGSTOP would leave the service stopped, not ended.
        return Err("SIGSTOP cannot stop a service".into());
    }
    Ok(signal)
}

fn set_limit(
    spec: &mut ServiceSpec,
    resource: Resource,
    value: &toml::Value,
) -> Result<(), String> {
    let one = |text: &str| -> Result<u64, String> {
        match text.trim() {
            "infinity" => Ok(u64::MAX),
            t => t
                .parse::<u64>()
                .map_err(|_| format!("invalid limit {t:?}: expected a number or infinity")),
        }
    };
    let (soft, hard) = match value {
        toml::Value::Integer(n) => {
            let n = u64::try_from(*n)
                .map_err(|_| format!("invalid limit {n}: must not be negative"))?;
            (n, n)
        }
        toml::Value::String(s) => match s.split_once(':') {
            Some((soft, hard)) => (one(soft)?, one(hard)?),
            None => {
                let n = one(s)?;
                (n, n)
            }
        },
        other => {
            return Err(format!(
                "expected a number, \"infinity\" or \"soft:hard\", found {}",
                other.type_str()
            ))
        }
    };
    if soft > hard {
        return Err(format!("soft limit {soft} is above hard limit {hard}"));
    }
    spec.limits.retain(|l| l.resource != resource);
    spec.limits.push(Limit {
        resource,
        soft,
        hard,
    });
    Ok(())
}

fn success_statuses(value: &toml::Value) -> Result<Vec<SuccessStatus>, String> {
    let items: Vec<toml::Value> = match value {
        toml::Value::Array(items) => items.clone(),
        toml::Value::String(s) => s
            .split_whitespace()
            .map(|w| toml::Value::String(w.to_string()))
            .collect(),
        toml::Value::Integer(_) => vec![value.clone()],
        other => {
            return Err(format!(
                "expected an array of exit codes or signal names, found {}",
                other.type_str()
            ))
        }
    };
    items
        .iter()
        .map(|item| match item {
            toml::Value::Integer(n) if (0..=255).contains(n) => Ok(SuccessStatus::Code(*n as i32)),
            toml::Value::Integer(n) => Err(format!("exit code {n} is out of range 0..=255")),
            toml::Value::String(s) => match s.parse::<i64>() {
                Ok(n) if (0..=255).contains(&n) => Ok(SuccessStatus::Code(n as i32)),
                Ok(n) => Err(format!("exit code {n} is out of range 0..=255")),
                Err(_) => parse_signal(s)
                    .map(SuccessStatus::Signal)
                    .ok_or_else(|| format!("{s:?} is neither an exit code nor a signal name")),
            },
            other => Err(format!(
                "expected an exit code or a signal name, found {}",
                other.type_str()
            )),
        })
        .collect()
}

fn service_names(value: &toml::Value) -> Result<Vec<String>, String> {
    toml_keys::strings(value)?
        .into_iter()
        .map(|n| {
            let n = n.strip_suffix(".service").unwrap_or(&n).to_string();
            if valid_name(&n) {
                Ok(n)
            } else {
                Err(format!("invalid service name {n:?}"))
            }
        })
        .collect()
}

/// Two key names one typo apart (a swap, an extra, a missing or a wrong letter).
pub(super) fn similar(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let longest = a.len().max(b.len());
    if prefix + suffix + 1 >= longest {
        return true;
    }
    // One transposition: "Restrat" for "Restart".
    a.len() == b.len()
        && prefix + suffix + 2 == a.len()
        && a.get(prefix) == b.get(prefix + 1)
        && a.get(prefix + 1) == b.get(prefix)
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
