//! The top of init: parse the command line, set up, supervise, end.
//! Every way init can end is here, each after a log line saying why.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::host::console;
use crate::host::load;
use crate::model::config::Level;
use crate::model::spec::ServiceSpec;
use crate::model::{Ending, Mode, Settings};
use crate::parse::cli::{self, Args};
use crate::runtime::Supervisor;
use crate::sys;

pub fn main() -> ExitCode {
    crate::host::panics::install_hook();
    // Every handler is guarded on its own, so nothing should reach this
    // catch. If something does, end in order: the enclave by a machine
    // restart, `--no-boot` with a status that says so.
    match crate::host::panics::catch(start) {
        Ok(code) => code,
        Err(text) => {
            console::log(
                Level::Error,
                &format!("internal error outside every handler: {text}; ending"),
            );
            if sys::getpid() == 1 && sys::is_machine_init() {
                crate::boot::end(Ending::Poweroff)
            }
            console::drain();
            ExitCode::from(70)
        }
    }
}

fn start() -> ExitCode {
    let is_pid1 = sys::getpid() == 1;
    // What the caller left ignored and blocked, before init changes it: a
    // one command keeps it.
    let inherited = sys::inherited_signals();
    // Whatever dispositions the parent left (an ignored SIGCHLD would make
    // the kernel reap children behind init's back), then every signal
    // blocked: from here on they wait in the signalfd.
    sys::reset_signal_dispositions();
    let mask = match sys::block_all_signals() {
        Ok(m) => m,
        Err(e) => {
            console::log(Level::Error, &format!("sigprocmask: {e}"));
            nix::sys::signal::SigSet::all()
        }
    };
    sys::mark_inherited_fds_cloexec();
    let nofile = sys::raise_nofile();
    let args = match cli::parse(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            // As PID 1 too: an argument that looks like an option was meant
            // for init, and guessing would do something nobody asked for.
            say(
                &mut std::io::stderr(),
                &format!("enclave-init: {e}\n\n{}", cli::USAGE),
            );
            return answered(is_pid1, 2);
        }
    };
    if args.version || args.help {
        let text = if args.help {
            cli::USAGE.to_string()
        } else {
            format!("enclave-init {}\n", env!("CARGO_PKG_VERSION"))
        };
        say(&mut std::io::stdout(), &text);
        return answered(is_pid1, 0);
    }
    let boot = !args.no_boot;
    if boot && is_pid1 && !sys::is_machine_init() {
        // PID 1 of a container, not of a machine: there is no enclave to
        // boot, and the boot would mount over the container's /dev, take
        // its console and wait for a heartbeat. What was meant is a
        // command, which is missing (tini and dumb-init say so too).
        say(
            &mut std::io::stderr(),
            &format!(
                "enclave-init: no command: in a container use --no-boot -- CMD [ARG...] (boot mode is for the init a kernel starts)\n\n{}",
                cli::USAGE
            ),
        );
        return ExitCode::from(2);
    }
    if boot && !is_pid1 {
        say(
            &mut std::io::stderr(),
            "enclave-init: boot mode needs PID 1 (it mounts, switches root and reboots); use --no-boot to supervise only\n",
        );
        return ExitCode::from(2);
    }
    let nofile = match nofile {
        Ok(limits) => Some(limits),
        Err(e) => {
            console::log(
                Level::Warn,
                &format!("raising RLIMIT_NOFILE: {e}; services get init's limits"),
            );
            None
        }
    };
    if boot {
        let (settings, report) = crate::boot::boot(&args, nofile);
        crate::boot::end(supervise(settings, report, &mask))
    } else {
        no_boot(&args, &mask, nofile, inherited)
    }
}

/// Writes all of `text`, ignoring errors (`print!` would panic on EPIPE).
fn say(out: &mut impl std::io::Write, text: &str) {
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Ends after a usage error, `--help` or `--version` with `status`. The
/// init of a machine (an enclave's kernel passed it an option) must not
/// exit, which would panic the kernel: it ends the enclave in order
/// instead, the message already on the console.
fn answered(is_pid1: bool, status: u8) -> ExitCode {
    if is_pid1 && sys::is_machine_init() {
        crate::boot::end(Ending::Exit(i32::from(status)))
    }
    ExitCode::from(status)
}

/// Boot mode's supervision, until the enclave must end. A runtime that
/// cannot even start (no epoll, no signalfd) ends the enclave, saying why.
fn supervise(
    settings: Settings,
    report: crate::proto::BootReport,
    mask: &nix::sys::signal::SigSet,
) -> Ending {
    match Supervisor::new(settings, mask) {
        Ok(mut s) => {
            s.set_boot_report(report);
            s.run()
        }
        Err(e) => {
            console::log(Level::Error, &format!("cannot supervise: {e}"));
            Ending::Poweroff
        }
    }
}

fn no_boot(
    args: &Args,
    mask: &nix::sys::signal::SigSet,
    nofile: Option<(u64, u64)>,
    inherited: sys::InheritedSignals,
) -> ExitCode {
    let path = load::config_path(args);
    let (config, diags) = load::config_for(&path, args);
    // One-command mode is silent but for errors, on stderr: stdout is the
    // command's (tini's and dumb-init's contract).
    let one_command = (!args.command.is_empty()).then_some(crate::model::OneCommand {
        group: !args.single_child,
        ignored: inherited.ignored,
        blocked: inherited.blocked,
    });
    let level = match (&one_command, args.verbose) {
        (Some(_), false) => Level::Error,
        _ => config.log.level,
    };
    console::set_level(level);
    let installed = if one_command.is_some() {
        console::install_stderr()
    } else {
        console::install_stdout()
    };
    if let Err(e) = installed {
        console::log(
            Level::Warn,
            &format!("console: {e}; writing to stderr, which may block"),
        );
    }
    load::report(&diags);
    let extra = if args.command.is_empty() {
        Vec::new()
    } else {
        let mut main = ServiceSpec::command_main(args.command.clone());
        // The command starts where init was started (Docker's WORKDIR).
        main.working_directory = std::env::current_dir().ok();
        vec![main]
    };
    // No gate: a container's or a host's pool is long initialized.
    // (Debug builds: the tests' stand-in files.)
    let entropy_gate = crate::host::fault::entropy_dir().map(|dir| crate::model::EntropyGate {
        device: dir.join("random"),
        rng_current: dir.join("rng_current"),
        bound: config.boot.entropy,
    });
    let settings = Settings {
        mode: Mode::NoBoot,
        config,
        // Bytes as they are: `std::env::vars` would panic on a value that
        // is not UTF-8.
        base_env: std::env::vars_os()
            .filter(|(k, _)| {
                k != "ENCLAVE_INIT_CONFIG" && !crate::host::fault::VARIABLES.iter().any(|v| k == v)
            })
            .collect(),
        root: PathBuf::from("/"),
        extra_services: extra,
        load_service_dir: true,
        proc_path: PathBuf::from("/proc"),
        cgroup_root: crate::host::fault::cgroup_root(),
        nofile,
        entropy_gate,
        one_command,
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
