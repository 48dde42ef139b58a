//! Boot mode: the enclave boot of the AWS C init (contract §4), then the
//! supervisor, then `reboot(2)`. PID 1 never returns from here.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::Args;
use crate::config::Level;
use crate::console;
use crate::supervisor::{Ending, Mode, Settings, Supervisor};
use crate::sys;

pub fn boot_and_supervise(args: &Args, mask: &nix::sys::signal::SigSet) -> ExitCode {
    for word in &args.ignored {
        console::log(Level::Info, &format!("ignoring kernel argument {word:?}"));
    }
    console::log(
        Level::Warn,
        "the enclave boot steps are not implemented yet: supervising only",
    );
    let path = crate::run::config_path(args);
    let (config, diags) = crate::run::load_config(&path, args);
    console::set_level(config.log.level);
    if console::install_path(std::path::Path::new("/dev/console")).is_err() {
        let _ = console::install_stdout();
    }
    crate::run::report(&diags);
    let settings = Settings {
        mode: Mode::Boot,
        config,
        base_env: Vec::new(),
        root: PathBuf::from("/"),
        extra_services: Vec::new(),
        load_service_dir: true,
        proc_path: PathBuf::from("/proc"),
    };
    let ending = match Supervisor::new(settings, mask) {
        Ok(mut s) => s.run(),
        Err(e) => {
            console::log(Level::Error, &format!("cannot supervise: {e}"));
            Ending::Poweroff
        }
    };
    end(ending)
}

/// The end of an enclave: sync, then reboot(2). If the kernel refuses, keep
/// reaping forever rather than exit (which would panic the kernel).
pub fn end(ending: Ending) -> ! {
    let restart = ending == Ending::Reboot;
    console::log(
        Level::Info,
        if restart { "rebooting" } else { "powering off" },
    );
    console::drain();
    sys::sync();
    let error = sys::reboot(restart);
    console::log(
        Level::Error,
        &format!("reboot(2): {error}; staying up, reaping"),
    );
    console::drain();
    loop {
        // Blocking wait: nothing else is left to do.
        let _ = nix::sys::wait::wait();
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
