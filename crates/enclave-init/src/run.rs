//! The top of init: parse the command line, set up, supervise, end.
//! Every way init can end is here, each after a log line saying why.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::{self, Args};
use crate::config::{self, Config, Level};
use crate::console;
use crate::diag::{Diagnostic, Severity};
use crate::spec::ServiceSpec;
use crate::supervisor::{Ending, Mode, Settings, Supervisor};
use crate::sys;

pub fn main() -> ExitCode {
    let is_pid1 = sys::getpid() == 1;
    // Signals first: from here on they wait in the signalfd.
    let mask = match sys::block_all_signals() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("enclave-init: error: sigprocmask: {e}");
            nix::sys::signal::SigSet::all()
        }
    };
    let args = match cli::parse(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) if is_pid1 => {
            // Nothing on the command line may make PID 1 exit.
            console::log(Level::Error, &format!("command line: {e}; ignoring it"));
            Args::default()
        }
        Err(e) => {
            eprintln!("enclave-init: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    if args.version || args.help {
        if args.help {
            print!("{}", cli::USAGE);
        } else {
            println!("enclave-init {}", env!("CARGO_PKG_VERSION"));
        }
        if !is_pid1 {
            return ExitCode::SUCCESS;
        }
    }
    if args.no_boot {
        no_boot(&args, &mask)
    } else if is_pid1 {
        crate::boot::boot_and_supervise(&args, &mask)
    } else {
        eprintln!("enclave-init: boot mode needs PID 1 (it mounts, switches root and reboots); use --no-boot to supervise only");
        ExitCode::from(2)
    }
}

/// The config file: `--config`, else `$ENCLAVE_INIT_CONFIG`, else the default.
pub fn config_path(args: &Args) -> PathBuf {
    args.config
        .clone()
        .or_else(|| std::env::var_os("ENCLAVE_INIT_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH))
}

/// Reads the config and applies the command line's overrides.
pub fn load_config(path: &Path, args: &Args) -> (Config, Vec<Diagnostic>) {
    let (mut config, diags) = config::load(path);
    if let Some(dir) = &args.service_dir {
        config.services.dir = dir.clone();
    }
    if let Some(socket) = &args.control_socket {
        config.control.socket = socket.clone();
    }
    (config, diags)
}

pub fn report(diags: &[Diagnostic]) {
    for d in diags {
        let level = match d.severity {
            Severity::Error => Level::Error,
            Severity::Warning => Level::Warn,
        };
        console::log(level, &d.to_string());
    }
}

fn no_boot(args: &Args, mask: &nix::sys::signal::SigSet) -> ExitCode {
    let path = config_path(args);
    let (config, diags) = load_config(&path, args);
    console::set_level(config.log.level);
    if let Err(e) = console::install_stdout() {
        console::log(
            Level::Warn,
            &format!("console: {e}; writing to stderr, which may block"),
        );
    }
    report(&diags);
    for word in &args.ignored {
        console::log(Level::Warn, &format!("ignoring argument {word:?}"));
    }
    let extra = if args.command.is_empty() {
        Vec::new()
    } else {
        vec![ServiceSpec::command_main(args.command.clone())]
    };
    let settings = Settings {
        mode: Mode::NoBoot,
        config,
        base_env: std::env::vars()
            .filter(|(k, _)| k != "ENCLAVE_INIT_CONFIG")
            .collect(),
        root: PathBuf::from("/"),
        extra_services: extra,
        load_service_dir: true,
        proc_path: PathBuf::from("/proc"),
        cgroup_root: None,
    };
    let mut supervisor = match Supervisor::new(settings, mask) {
        Ok(s) => s,
        Err(e) => {
            console::log(Level::Error, &format!("cannot supervise: {e}"));
            console::drain();
            return ExitCode::from(1);
        }
    };
    let ending = supervisor.run();
    drop(supervisor);
    let status = match ending {
        Ending::Exit(status) => status,
        Ending::Poweroff | Ending::Reboot => 0,
    };
    console::log(Level::Info, &format!("exiting with status {status}"));
    console::drain();
    ExitCode::from((status & 0xff) as u8)
}
