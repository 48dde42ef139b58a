//! Service files (contract §5): `<dir>/<name>.service`, TOML with systemd's
//! key names and meanings. [`parse`] turns one file into a [`ServiceSpec`]
//! or the reasons it cannot be loaded (`host::load` reads a directory of
//! them, where one broken file never keeps the others from loading).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::spec::*;
use crate::parse::diag::Diagnostic;
use crate::parse::toml_keys::{self, KeyValue};
use crate::parse::words;

/// Every key a service file may have, for the unknown-key warning.
pub const KEYS: &[&str] = &[
    "ExecStart",
    "ExecStartPre",
    "ExecStop",
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
];

const TYPES: &[(&str, ServiceType)] = &[
    ("simple", ServiceType::Simple),
    ("oneshot", ServiceType::Oneshot),
    ("notify", ServiceType::Notify),
];
const RESTARTS: &[(&str, RestartPolicy)] = &[
    ("no", RestartPolicy::No),
    ("always", RestartPolicy::Always),
    ("on-success", RestartPolicy::OnSuccess),
    ("on-failure", RestartPolicy::OnFailure),
    ("on-abnormal", RestartPolicy::OnAbnormal),
    ("on-abort", RestartPolicy::OnAbort),
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

/// Parses one service file. `Err` holds the errors that keep it from
/// loading; warnings (unknown keys) come back in both cases.
pub fn parse(path: &Path, name: &str, text: &str) -> (Result<ServiceSpec, ()>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    if text.trim().is_empty() {
        diags.push(Diagnostic::error(
            path,
            None,
            None,
            "empty file: ExecStart is required",
        ));
        return (Err(()), diags);
    }
    let entries = match toml_keys::parse_flat(text) {
        Ok(e) => e,
        Err(e) => {
            diags.push(Diagnostic::error(path, e.line, None, e.message));
            return (Err(()), diags);
        }
    };
    let mut spec = ServiceSpec::new(name, Vec::new());
    let mut stderr_inherits = true;
    let mut lines = BTreeMap::new();
    let mut failed = false;
    for entry in &entries {
        lines.insert(entry.key.as_str(), entry.line);
        match apply(&mut spec, entry, &mut stderr_inherits) {
            Ok(true) => {}
            Ok(false) => {
                let hint = KEYS
                    .iter()
                    .find(|k| k.eq_ignore_ascii_case(&entry.key) || similar(k, &entry.key))
                    .map(|k| format!(" (did you mean {k}?)"))
                    .unwrap_or_default();
                diags.push(Diagnostic::warning(
                    path,
                    Some(entry.line),
                    Some(&entry.key),
                    format!("unknown key, ignored{hint}"),
                ));
            }
            Err(reason) => {
                failed = true;
                diags.push(Diagnostic::error(
                    path,
                    Some(entry.line),
                    Some(&entry.key),
                    reason,
                ));
            }
        }
    }
    if stderr_inherits {
        spec.stderr = spec.stdout;
    }
    if !lines.contains_key("ExecStart") {
        failed = true;
        diags.push(Diagnostic::error(
            path,
            None,
            Some("ExecStart"),
            "missing: every service needs a command",
        ));
    }
    if spec.service_type == ServiceType::Oneshot
        && matches!(
            spec.restart,
            RestartPolicy::Always | RestartPolicy::OnSuccess
        )
    {
        failed = true;
        diags.push(Diagnostic::error(
            path,
            lines.get("Restart").copied(),
            Some("Restart"),
            "always and on-success are not allowed for Type=oneshot (systemd refuses them too)",
        ));
    }
    if let Some(max) = spec.restart_max_delay {
        if max < spec.restart_sec {
            failed = true;
            diags.push(Diagnostic::error(
                path,
                lines.get("RestartMaxDelaySec").copied(),
                Some("RestartMaxDelaySec"),
                "must not be shorter than RestartSec",
            ));
        }
    }
    for (key, list) in [
        ("After", &spec.after),
        ("Before", &spec.before),
        ("Requires", &spec.requires),
        ("Wants", &spec.wants),
    ] {
        if list.iter().any(|n| n == name) {
            failed = true;
            diags.push(Diagnostic::error(
                path,
                lines.get(key).copied(),
                Some(key),
                format!("service {name} cannot depend on itself"),
            ));
        }
    }
    if failed {
        (Err(()), diags)
    } else {
        (Ok(spec), diags)
    }
}

/// Sets one key. `Ok(false)`: the key is unknown.
fn apply(
    spec: &mut ServiceSpec,
    entry: &KeyValue,
    stderr_inherits: &mut bool,
) -> Result<bool, String> {
    let v = &entry.value;
    match entry.key.as_str() {
        "ExecStart" => spec.exec_start = exec_start(v)?,
        "ExecStartPre" => spec.exec_start_pre = commands(v)?,
        "ExecStop" => spec.exec_stop = commands(v)?,
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
        _ => return Ok(false),
    }
    Ok(true)
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
                argv: argv.into_iter().map(OsString::from).collect(),
                ignore_failure,
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
fn similar(a: &str, b: &str) -> bool {
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
