//! Service files (contract §5): `<dir>/<name>.service`, TOML with systemd's
//! key names and meanings. [`parse`] turns one file into a [`ServiceSpec`]
//! or the reasons it cannot be loaded; [`load_dir`] reads a directory, where
//! one broken file never keeps the others from loading.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diag::Diagnostic;
use crate::toml_keys::{self, KeyValue};
use crate::words;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    Simple,
    Oneshot,
    Notify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    Always,
    OnSuccess,
    OnFailure,
    OnAbnormal,
    OnAbort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillMode {
    ControlGroup,
    Mixed,
    Process,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndAction {
    None,
    Poweroff,
    Reboot,
    Exit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Log,
    Console,
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    NoFile,
    NProc,
    Core,
    MemLock,
}

/// `u64::MAX` stands for `infinity` (RLIM_INFINITY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub resource: Resource,
    pub soft: u64,
    pub hard: u64,
}

/// One exit status counted as success besides 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuccessStatus {
    Code(i32),
    Signal(i32),
}

/// A command of `ExecStartPre`/`ExecStop`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub argv: Vec<OsString>,
    /// A leading `-`: the command's failure is ignored.
    pub ignore_failure: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentFile {
    pub path: PathBuf,
    /// A leading `-`: a missing file is fine.
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    /// Bytes, not text: `/cmd` and `-- CMD` pass through unchanged.
    pub exec_start: Vec<OsString>,
    pub exec_start_pre: Vec<Command>,
    pub exec_stop: Vec<Command>,
    pub environment: Vec<(String, String)>,
    pub environment_files: Vec<EnvironmentFile>,
    pub working_directory: Option<PathBuf>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub service_type: ServiceType,
    pub remain_after_exit: bool,
    pub timeout_start: Duration,
    pub restart: RestartPolicy,
    pub restart_sec: Duration,
    pub restart_steps: u32,
    pub restart_max_delay: Option<Duration>,
    pub start_limit_burst: u32,
    pub start_limit_interval: Duration,
    /// `None`: the config's `shutdown.timeout`.
    pub timeout_stop: Option<Duration>,
    pub kill_signal: i32,
    pub kill_mode: KillMode,
    pub limits: Vec<Limit>,
    pub success_exit_status: Vec<SuccessStatus>,
    pub success_action: EndAction,
    pub failure_action: EndAction,
    pub after: Vec<String>,
    pub before: Vec<String>,
    pub requires: Vec<String>,
    pub wants: Vec<String>,
    pub stdout: Output,
    pub stderr: Output,
    /// Keep init's stdin (the `-- CMD` service); others get `/dev/null`.
    pub inherit_stdin: bool,
}

impl ServiceSpec {
    /// `TimeoutStopSec`, or the contract's default when neither the file
    /// nor the config set it (the supervisor fills in the config's).
    pub fn stop_timeout(&self) -> Duration {
        self.timeout_stop.unwrap_or(Duration::from_secs(10))
    }

    /// A service with systemd's defaults running `argv`.
    pub fn new(name: &str, argv: Vec<OsString>) -> Self {
        Self {
            name: name.to_string(),
            exec_start: argv,
            exec_start_pre: Vec::new(),
            exec_stop: Vec::new(),
            environment: Vec::new(),
            environment_files: Vec::new(),
            working_directory: None,
            user: None,
            group: None,
            service_type: ServiceType::Simple,
            remain_after_exit: false,
            timeout_start: Duration::from_secs(30),
            restart: RestartPolicy::No,
            restart_sec: Duration::from_millis(100),
            restart_steps: 0,
            restart_max_delay: None,
            start_limit_burst: 5,
            start_limit_interval: Duration::from_secs(10),
            timeout_stop: None,
            kill_signal: libc::SIGTERM,
            kill_mode: KillMode::ControlGroup,
            limits: Vec::new(),
            success_exit_status: Vec::new(),
            success_action: EndAction::None,
            failure_action: EndAction::None,
            after: Vec::new(),
            before: Vec::new(),
            requires: Vec::new(),
            wants: Vec::new(),
            stdout: Output::Log,
            stderr: Output::Log,
            inherit_stdin: false,
        }
    }

    /// The service `main` of nitro-cli's `/cmd`: exactly the C init's single
    /// child, whose end ends the enclave.
    pub fn legacy_main(argv: Vec<OsString>) -> Self {
        Self {
            stdout: Output::Console,
            stderr: Output::Console,
            success_action: EndAction::Poweroff,
            failure_action: EndAction::Poweroff,
            ..Self::new("main", argv)
        }
    }

    /// The service `main` of `enclave-init --no-boot -- CMD`: tini-style.
    pub fn command_main(argv: Vec<OsString>) -> Self {
        Self {
            stdout: Output::Console,
            stderr: Output::Console,
            success_action: EndAction::Exit,
            failure_action: EndAction::Exit,
            inherit_stdin: true,
            ..Self::new("main", argv)
        }
    }
}

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

pub fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(|c: char| c == '=' || c == '\0' || c.is_whitespace())
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

/// A signal by name (`SIGTERM`, `TERM`) or number.
pub fn parse_signal(text: &str) -> Option<i32> {
    if let Ok(n) = text.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = text.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::iterator()
        .find(|s| s.as_str() == full)
        .map(|s| s as i32)
}

pub fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
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

/// Service names: what may stand before `.service` in a file name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@:".contains(c))
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

/// What loading a service directory gave.
#[derive(Debug, Default)]
pub struct Loaded {
    pub services: Vec<ServiceSpec>,
    /// Names whose file exists but could not be loaded.
    pub broken: Vec<String>,
    pub diagnostics: Vec<Diagnostic>,
    /// The directory does not exist (the caller decides whether that is
    /// an error: the default one may be absent when `/cmd` gives the
    /// command).
    pub missing: bool,
}

/// Reads every `*.service` of `dir`, sorted by name. A missing directory is
/// an empty result; entries that cannot be used are reported.
pub fn load_dir(dir: &Path) -> Loaded {
    let mut loaded = Loaded::default();
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            loaded.missing = true;
            return loaded;
        }
        Err(e) => {
            loaded.diagnostics.push(Diagnostic::error(
                dir,
                None,
                None,
                format!("cannot read service directory: {e}"),
            ));
            return loaded;
        }
    };
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for entry in read {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                loaded.diagnostics.push(Diagnostic::error(
                    dir,
                    None,
                    None,
                    format!("cannot list service directory: {e}"),
                ));
                continue;
            }
        };
        let path = entry.path();
        let Some(file_name) = entry.file_name().to_str().map(str::to_string) else {
            loaded.diagnostics.push(Diagnostic::warning(
                &path,
                None,
                None,
                "file name is not UTF-8, ignored",
            ));
            continue;
        };
        let Some(name) = file_name.strip_suffix(".service") else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        if !valid_name(name) {
            loaded.diagnostics.push(Diagnostic::error(
                &path,
                None,
                None,
                format!("invalid service name {name:?}: use letters, digits and -_.@:"),
            ));
            continue;
        }
        files.push((name.to_string(), path));
    }
    files.sort();
    for (name, path) in files {
        // A panic in the parser (or in a crate it uses) costs this one
        // file, never the others nor init.
        let result = crate::panics::catch(|| {
            crate::fault::point("load", &name);
            read_file(&path).map(|text| parse(&path, &name, &text))
        });
        match result {
            Ok(Ok((result, diags))) => {
                loaded.diagnostics.extend(diags);
                match result {
                    Ok(spec) => loaded.services.push(spec),
                    Err(()) => loaded.broken.push(name),
                }
            }
            Ok(Err(reason)) => {
                loaded
                    .diagnostics
                    .push(Diagnostic::error(&path, None, None, reason));
                loaded.broken.push(name);
            }
            Err(panic) => {
                loaded.diagnostics.push(Diagnostic::error(
                    &path,
                    None,
                    None,
                    format!("internal error while reading it: {panic}"),
                ));
                loaded.broken.push(name);
            }
        }
    }
    loaded
}

/// Reads a service file: bounded, never blocking (see [`crate::files`]);
/// the error is the reason.
fn read_file(path: &Path) -> Result<String, String> {
    let bytes = crate::files::read(path, crate::files::MAX).map_err(|e| match e {
        crate::files::ReadError::NotRegular("a directory") => {
            "is a directory, not a service file".to_string()
        }
        crate::files::ReadError::Io(e) => format!("cannot read: {e}"),
        other => other.to_string(),
    })?;
    if bytes.contains(&0) {
        return Err("binary file (contains NUL bytes), not a service file".into());
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".into())
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
