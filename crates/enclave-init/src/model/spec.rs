//! A service as init knows it: the [`ServiceSpec`] a service file (or
//! `/cmd`, or `-- CMD`) describes, with systemd's names and defaults. Leaf
//! types every layer may use.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    Simple,
    Oneshot,
    Notify,
    /// The start command forks the daemon and exits; the daemon's pid comes
    /// from `PIDFile=` or is guessed.
    Forking,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    Always,
    OnSuccess,
    OnFailure,
    OnAbnormal,
    OnAbort,
    OnWatchdog,
}

/// `NotifyAccess=`: whose notify messages count for the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyAccess {
    None,
    /// The main process only.
    Main,
    /// The main process and every process init started for the service
    /// (`ExecStartPre`, `ExecReload`, ...).
    Exec,
    /// Any process of the service: its process group, its session, its
    /// cgroup.
    All,
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

/// A command line of a service (`ExecStart`, `ExecStartPre`, ...), with
/// the meanings of systemd's prefixes that apply here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Command {
    pub argv: Vec<OsString>,
    /// `-`: the command's failure is ignored.
    pub ignore_failure: bool,
    /// `@`: the program is `argv[0]`, and this is what it sees as its
    /// `argv[0]`.
    pub argv0: Option<OsString>,
    /// `+`: runs as root, whatever `User=`/`Group=` say.
    pub privileged: bool,
    /// systemd's `$NAME` and `${NAME}` are replaced from the process's
    /// environment when it starts (unit files without the `:` prefix; TOML
    /// files never).
    pub expand: bool,
}

impl Command {
    /// `argv` as it is: no prefix, no expansion.
    pub fn new(argv: Vec<OsString>) -> Self {
        Self {
            argv,
            ..Self::default()
        }
    }
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
    pub exec_start: Command,
    pub exec_start_pre: Vec<Command>,
    pub exec_stop: Vec<Command>,
    /// `ExecReload`: run by `initctl reload NAME`, with `$MAINPID`.
    pub exec_reload: Vec<Command>,
    /// `ExecStartPost`: once the main process is up (started, ready, or
    /// found; a oneshot's: ended), before the service counts as started.
    pub exec_start_post: Vec<Command>,
    /// `ExecStopPost`: after every run, however it ended, with
    /// `$SERVICE_RESULT`, `$EXIT_CODE`, `$EXIT_STATUS`.
    pub exec_stop_post: Vec<Command>,
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
    /// `UMask=`: `None` keeps init's (0022).
    pub umask: Option<u32>,
    /// `RuntimeDirectory=`: under `/run`, made before the start, owned by
    /// `User`/`Group`, removed once the service is down.
    pub runtime_directory: Vec<String>,
    pub runtime_directory_mode: u32,
    /// `StateDirectory=`: under `/var/lib`, made before the start, kept.
    pub state_directory: Vec<String>,
    pub state_directory_mode: u32,
    /// `PIDFile=`: where a `Type=forking` daemon writes its main pid.
    pub pid_file: Option<PathBuf>,
    /// `NotifyAccess=`; `None`: the main process and its process group
    /// (see the README for why that is the default here).
    pub notify_access: Option<NotifyAccess>,
    /// `WatchdogSec=`: `WATCHDOG=1` expected at least this often once
    /// running; `None` (or 0): no watchdog.
    pub watchdog: Option<Duration>,
    /// `WatchdogSignal=` (SIGABRT).
    pub watchdog_signal: i32,
    /// Its exit status is init's result, not an error to report (the
    /// `-- CMD` service): a non-zero exit is logged as information.
    pub exit_is_the_result: bool,
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
            exec_start: Command::new(argv),
            exec_start_pre: Vec::new(),
            exec_stop: Vec::new(),
            exec_reload: Vec::new(),
            exec_start_post: Vec::new(),
            exec_stop_post: Vec::new(),
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
            umask: None,
            runtime_directory: Vec::new(),
            runtime_directory_mode: 0o755,
            state_directory: Vec::new(),
            state_directory_mode: 0o755,
            pid_file: None,
            notify_access: None,
            watchdog: None,
            watchdog_signal: libc::SIGABRT,
            exit_is_the_result: false,
        }
    }

    /// Whether the service talks on the notify socket: `Type=notify`, a
    /// watchdog, or a `NotifyAccess=` other than `none`.
    pub fn uses_notify(&self) -> bool {
        self.service_type == ServiceType::Notify
            || self.watchdog.is_some()
            || self.notify_access.is_some_and(|a| a != NotifyAccess::None)
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
            exit_is_the_result: true,
            // What it leaves behind is init's end's business (SIGTERM,
            // and init goes: dumb-init's way), not a stop to wait for.
            kill_mode: KillMode::Process,
            ..Self::new("main", argv)
        }
    }
}

pub fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(|c: char| c == '=' || c == '\0' || c.is_whitespace())
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

/// Service names: what may stand before `.service` in a file name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@:".contains(c))
}
