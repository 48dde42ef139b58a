//! The model: leaf types every layer may use, and nothing else. It imports
//! nothing from the rest of init.
//!
//! * [`spec`]: a service ([`spec::ServiceSpec`]), as its file describes it.
//! * [`config`]: the config file's values.
//! * [`duration`]: systemd's time spans, read and written.
//! * Here: processes ([`Pid`], [`Exit`]), how init runs and ends
//!   ([`Mode`], [`Ending`]) and what it is given ([`Settings`]).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

pub mod config;
pub mod duration;
pub mod spec;
pub mod text;

pub use config::{Config, Level};
use spec::{signal_name, ServiceSpec};

pub type Pid = i32;

/// How a process ended, as `waitpid` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The shell's convention: a code as is, a signal as 128 + its number.
    pub fn status(self) -> i32 {
        match self {
            Exit::Code(code) => code,
            Exit::Signal(signal) => 128 + signal,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Exit::Code(code) => format!("exited with status {code}"),
            Exit::Signal(signal) => format!("killed by {}", signal_name(signal)),
        }
    }
}

/// How init was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// PID 1 of an enclave: every end is `reboot(2)`.
    Boot,
    /// `--no-boot`: every end is `exit`.
    NoBoot,
}

/// How init ends, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Poweroff,
    Reboot,
    Exit(i32),
}

impl Ending {
    pub fn name(&self) -> String {
        match self {
            Ending::Poweroff => "poweroff".into(),
            Ending::Reboot => "reboot".into(),
            Ending::Exit(status) => format!("exit {status}"),
        }
    }
}

/// Everything the runtime needs from the outside (from the boot, or from
/// the command line in `--no-boot` mode), so that tests can run it on a
/// temporary tree.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub config: Config,
    /// `/env` in boot mode, init's own environment otherwise; bytes.
    pub base_env: Vec<(OsString, OsString)>,
    /// Root for `/etc/passwd` and `/etc/group` lookups.
    pub root: PathBuf,
    /// `main` of `/cmd` or of `-- CMD`, beside the service files.
    pub extra_services: Vec<ServiceSpec>,
    /// Load the service directory too (not for `-- CMD` without one).
    pub load_service_dir: bool,
    pub proc_path: PathBuf,
    /// A cgroup v2 hierarchy to track `KillMode=control-group` services in
    /// (boot mode with `cgroups = "v2"`); process groups otherwise.
    pub cgroup_root: Option<PathBuf>,
    /// The `RLIMIT_NOFILE` init was given (soft, hard), which services
    /// keep unless `LimitNOFILE` says otherwise; init raised its own.
    pub nofile: Option<(u64, u64)>,
    /// Boot mode: services wait for the kernel's random pool.
    pub entropy_gate: Option<EntropyGate>,
    /// `--no-boot -- CMD`: the command runs as tini and dumb-init run it.
    pub one_command: Option<OneCommand>,
}

/// One-command mode (`--no-boot -- CMD`), whose contract is tini's and
/// dumb-init's (README): init forwards the signals it gets to the command
/// and exits with the command's status, on nobody's clock but the caller's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneCommand {
    /// Forward to the command's whole process group (dumb-init's default)
    /// rather than to the command alone (`--single-child`, tini's).
    pub group: bool,
    /// The signals init's caller left ignored and blocked (bit `n - 1` for
    /// signal `n`), which the command keeps, as with tini.
    pub ignored: u64,
    pub blocked: u64,
}

/// The entropy gate: services start once `device` (the kernel's
/// `/dev/random`, readable once the random pool is initialized) is
/// readable, or after `bound` (`Duration::MAX`: none) with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntropyGate {
    pub device: PathBuf,
    /// The kernel's `rng_current` (its hardware RNG), named in the log.
    pub rng_current: PathBuf,
    pub bound: Duration,
}

impl EntropyGate {
    /// The kernel's own files.
    pub fn kernel(bound: Duration) -> Self {
        Self {
            device: PathBuf::from("/dev/random"),
            rng_current: PathBuf::from("/sys/class/misc/hw_random/rng_current"),
            bound,
        }
    }
}
