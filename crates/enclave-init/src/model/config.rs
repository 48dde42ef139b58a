//! The config file's values (contract §3): `/etc/enclave-init.toml`. Every
//! key is optional and the defaults reproduce the AWS C init.

use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_PATH: &str = "/etc/enclave-init.toml";
pub const DEFAULT_SERVICE_DIR: &str = "/service";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cgroups {
    V1,
    V2,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Legacy {
    /// `/cmd` becomes service `main` only when no service file exists.
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Boot {
    pub modules: Vec<PathBuf>,
    pub cgroups: Cgroups,
    pub loopback: bool,
    pub hostname: String,
    /// How long services wait for the kernel's random pool (the entropy
    /// gate) before they start anyway, with an error (`0` or `infinity`:
    /// no bound).
    pub entropy: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub enabled: bool,
    pub cid: u32,
    pub port: u32,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Services {
    pub dir: PathBuf,
    pub legacy: Legacy,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Control {
    pub socket: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Shutdown {
    /// The default `TimeoutStopSec` (`0` or `infinity`: no timeout).
    pub timeout: Duration,
    /// The bound on a whole shutdown: past it, whatever still runs gets
    /// SIGKILL and the end goes on (`0` or `infinity`: no bound).
    pub final_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub level: Level,
    /// Bytes of captured output kept per service for `initctl logs`.
    pub buffer: usize,
}

/// Which services' captured output the parent may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exported {
    All,
    Only(Vec<String>),
}

impl Exported {
    pub fn includes(&self, service: &str) -> bool {
        match self {
            Exported::All => true,
            Exported::Only(names) => names.iter().any(|n| n == service),
        }
    }
}

/// `[parent]`: what the parent instance may see over vsock (absent: the
/// heartbeat only). The image's configuration, measured into PCR2, decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Parent {
    /// The vsock port init listens on.
    pub port: u32,
    /// The only peer CID accepted.
    pub cid: u32,
    /// Services whose captured output the parent may read (logs may hold
    /// secrets: none by default).
    pub logs: Exported,
    /// The parent may ask for a graceful end (`poweroff`).
    pub allow_poweroff: bool,
}

impl Default for Parent {
    fn default() -> Self {
        Self {
            port: 9001,
            cid: 3,
            logs: Exported::Only(Vec::new()),
            allow_poweroff: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub boot: Boot,
    pub heartbeat: Heartbeat,
    pub services: Services,
    pub control: Control,
    pub shutdown: Shutdown,
    pub log: Log,
    /// `None`: no `[parent]` section, nothing over vsock but the heartbeat.
    pub parent: Option<Parent>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            boot: Boot {
                modules: vec![PathBuf::from("/nsm.ko")],
                cgroups: Cgroups::V1,
                loopback: true,
                hostname: String::new(),
                entropy: Duration::from_secs(30),
            },
            heartbeat: Heartbeat {
                enabled: true,
                cid: 3,
                port: 9000,
                timeout: Duration::from_secs(20),
            },
            services: Services {
                dir: PathBuf::from(DEFAULT_SERVICE_DIR),
                legacy: Legacy::Auto,
            },
            control: Control {
                socket: PathBuf::from("/run/enclave-init.sock"),
            },
            shutdown: Shutdown {
                timeout: Duration::from_secs(10),
                final_timeout: Duration::from_secs(300),
            },
            log: Log {
                level: Level::Info,
                buffer: 64 * 1024,
            },
            parent: None,
        }
    }
}
