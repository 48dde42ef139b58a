//! Boot mode: the enclave boot of the AWS C init (contract §4), then the
//! supervisor, then `reboot(2)`. PID 1 never returns from here.
//!
//! Every step logs its failure with the step and the errno and the boot
//! goes on: an enclave that boots half-way and says why is better than a
//! kernel panic. The mounts after the root switch are a data table, as the
//! C init's `ops[]`.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::host::console;
use crate::host::load;
use crate::model::config::{Cgroups, Config, Legacy, Level};
use crate::model::spec::ServiceSpec;
use crate::model::{Ending, EntropyGate, Mode, Settings};
use crate::parse::cli::Args;
use crate::parse::legacy;
use crate::proto::BootReport;
use crate::sys;

pub mod heartbeat;
pub mod nsm;

const NODEV: libc::c_ulong = libc::MS_NODEV;
const NOSUID: libc::c_ulong = libc::MS_NOSUID;
const NOEXEC: libc::c_ulong = libc::MS_NOEXEC;

/// One step of the filesystem table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Mount {
        source: &'static str,
        target: &'static str,
        fstype: &'static str,
        flags: libc::c_ulong,
        data: Option<&'static str>,
    },
    Mkdir {
        path: &'static str,
        mode: u32,
    },
    Symlink {
        link: &'static str,
        target: &'static str,
    },
}

/// A step and the errnos that mean "already done" rather than failure.
#[derive(Debug, Clone, Copy)]
pub struct BootStep {
    pub step: Step,
    pub tolerate: &'static [i32],
}

const fn mount(
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: libc::c_ulong,
    data: Option<&'static str>,
) -> BootStep {
    BootStep {
        step: Step::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        },
        tolerate: &[libc::EBUSY],
    }
}

const fn mkdir(path: &'static str, mode: u32) -> BootStep {
    BootStep {
        step: Step::Mkdir { path, mode },
        tolerate: &[libc::EEXIST],
    }
}

const fn symlink(link: &'static str, target: &'static str) -> BootStep {
    BootStep {
        step: Step::Symlink { link, target },
        tolerate: &[libc::EEXIST],
    }
}

/// The C init's table after the root switch, with its flags: devtmpfs on
/// the new `/dev`, `/proc`, the `/dev` symlinks, tmpfs on `/run` and
/// `/tmp`, `/dev/shm`, devpts, sysfs, and the tmpfs `cgroup_root`.
pub const FILESYSTEMS: &[BootStep] = &[
    mount("dev", "/dev", "devtmpfs", NOSUID | NOEXEC, None),
    mount("proc", "/proc", "proc", NODEV | NOSUID | NOEXEC, None),
    symlink("/dev/fd", "/proc/self/fd"),
    symlink("/dev/stdin", "/proc/self/fd/0"),
    symlink("/dev/stdout", "/proc/self/fd/1"),
    symlink("/dev/stderr", "/proc/self/fd/2"),
    mount(
        "tmpfs",
        "/run",
        "tmpfs",
        NODEV | NOSUID | NOEXEC,
        Some("mode=0755"),
    ),
    mount("tmpfs", "/tmp", "tmpfs", NODEV | NOSUID | NOEXEC, None),
    mkdir("/dev/shm", 0o755),
    mount("shm", "/dev/shm", "tmpfs", NODEV | NOSUID | NOEXEC, None),
    mkdir("/dev/pts", 0o755),
    mount("devpts", "/dev/pts", "devpts", NOSUID | NOEXEC, None),
    mount("sysfs", "/sys", "sysfs", NODEV | NOSUID | NOEXEC, None),
];

/// `/sys/fs/cgroup` as the C init mounts it, before the v1 hierarchies.
pub const CGROUP_ROOT_V1: BootStep = mount(
    "cgroup_root",
    "/sys/fs/cgroup",
    "tmpfs",
    NODEV | NOSUID | NOEXEC,
    Some("mode=0755"),
);
/// The unified hierarchy beside the v1 ones, where systemd's hybrid layout
/// has it: services are tracked there with `cgroups = "v1"` too (it holds
/// no controllers; tracking and `cgroup.kill` need none).
pub const CGROUP_UNIFIED_DIR: BootStep = mkdir("/sys/fs/cgroup/unified", 0o755);
pub const CGROUP_UNIFIED: BootStep = mount(
    "cgroup2",
    "/sys/fs/cgroup/unified",
    "cgroup2",
    NODEV | NOSUID | NOEXEC,
    None,
);
/// The unified hierarchy, for `cgroups = "v2"`.
pub const CGROUP_ROOT_V2: BootStep = mount(
    "cgroup2",
    "/sys/fs/cgroup",
    "cgroup2",
    NODEV | NOSUID | NOEXEC,
    None,
);

impl Step {
    pub fn describe(&self) -> String {
        match self {
            Step::Mount { target, fstype, .. } => format!("mount {fstype} on {target}"),
            Step::Mkdir { path, .. } => format!("mkdir {path}"),
            Step::Symlink { link, target } => format!("symlink {link} -> {target}"),
        }
    }
}

/// Carries out one step under `root`; a tolerated errno is success.
pub fn run_step(root: &Path, step: &BootStep) -> std::io::Result<()> {
    let under = |p: &str| root.join(p.trim_start_matches('/'));
    let result = match step.step {
        Step::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => sys::mount(source, &under(target), Some(fstype), flags, data),
        Step::Mkdir { path, mode } => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(mode).create(under(path))
        }
        Step::Symlink { link, target } => std::os::unix::fs::symlink(target, under(link)),
    };
    match result {
        Err(e) if e.raw_os_error().is_some_and(|n| step.tolerate.contains(&n)) => Ok(()),
        other => other,
    }
}

/// Runs one step, logging its failure; whether it succeeded.
fn run_logged(root: &Path, step: &BootStep) -> bool {
    let what = step.step.describe();
    match guarded_step(&what, || run_step(root, step)) {
        Some(Ok(())) => {
            console::log(Level::Debug, &format!("boot: {what}"));
            true
        }
        Some(Err(e)) => {
            console::log(Level::Error, &format!("boot: {what}: {e}"));
            false
        }
        None => false,
    }
}

/// Runs one boot step under a guard: a panic in it (in init's code or a
/// crate's) is logged with the step's name and the boot goes on, as after
/// any failed step. `None` when it panicked.
pub fn guarded_step<R>(step: &str, f: impl FnOnce() -> R) -> Option<R> {
    crate::host::panics::guarded(&format!("boot step {step}"), || {
        crate::host::fault::point("boot", step);
        f()
    })
}

/// Enabled controllers of `/proc/cgroups` (`name hierarchy count enabled`).
pub fn enabled_controllers(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [name, _, _, "1", ..] => Some(name.to_string()),
                _ => None,
            }
        })
        .collect()
}

/// The C init's `init_cgroups`: one v1 hierarchy per enabled controller.
fn mount_cgroups_v1(root: &Path) {
    run_logged(root, &CGROUP_ROOT_V1);
    let text = match std::fs::read_to_string(root.join("proc/cgroups")) {
        Ok(t) => t,
        Err(e) => {
            console::log(Level::Error, &format!("boot: read /proc/cgroups: {e}"));
            return;
        }
    };
    for name in enabled_controllers(&text) {
        let path = root.join("sys/fs/cgroup").join(&name);
        if let Err(e) = std::fs::create_dir(&path) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                console::log(
                    Level::Error,
                    &format!("boot: mkdir {}: {e}", path.display()),
                );
                continue;
            }
        }
        match sys::mount(
            &name,
            &path,
            Some("cgroup"),
            NODEV | NOSUID | NOEXEC,
            Some(&name),
        ) {
            Ok(()) => console::log(Level::Debug, &format!("boot: mount cgroup {name}")),
            // Kernels built without a controller's v1 interface (cpuset and
            // memory on Debian's 6.12) list it as enabled, for v2, and refuse
            // it here. Expected; not an error.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let _ = std::fs::remove_dir(&path);
                console::log(
                    Level::Warn,
                    &format!("boot: cgroup v1 {name}: not supported by this kernel; skipped"),
                );
            }
            Err(e) => console::log(
                Level::Error,
                &format!("boot: mount cgroup {name} on {}: {e}", path.display()),
            ),
        }
    }
}

/// `/env` and `/cmd` as nitro-cli writes them, read and then unlinked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LegacyInput {
    pub env: Vec<(OsString, OsString)>,
    pub cmd: Option<Vec<OsString>>,
}

pub fn read_legacy(root: &Path) -> LegacyInput {
    let mut input = LegacyInput::default();
    let env_path = root.join("env");
    match crate::host::files::read(&env_path, crate::host::files::MAX) {
        Ok(bytes) => {
            let (vars, errors) = legacy::parse_env(&bytes);
            for e in errors {
                console::log(
                    Level::Error,
                    &format!("/env:{}: {}; line ignored", e.line, e.reason),
                );
            }
            input.env = vars;
            unlink_logged(&env_path, "/env");
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => console::log(Level::Error, &format!("read /env: {e}")),
    }
    let cmd_path = root.join("cmd");
    match crate::host::files::read(&cmd_path, crate::host::files::MAX) {
        Ok(bytes) => {
            let argv = legacy::parse_cmd(&bytes);
            if argv.first().is_none_or(|a| a.is_empty()) {
                console::log(Level::Error, "/cmd is empty: no command to run from it");
            } else if let Some(i) = argv.iter().position(|a| a.as_encoded_bytes().contains(&0)) {
                // exec takes C strings: say which line instead of failing
                // every start with a vague error.
                console::log(
                    Level::Error,
                    &format!("/cmd:{}: a NUL byte; no command to run from it", i + 1),
                );
            } else {
                input.cmd = Some(argv);
            }
            unlink_logged(&cmd_path, "/cmd");
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => console::log(Level::Error, &format!("read /cmd: {e}")),
    }
    input
}

fn unlink_logged(path: &Path, name: &str) {
    if let Err(e) = std::fs::remove_file(path) {
        console::log(Level::Warn, &format!("unlink {name}: {e}"));
    }
}

/// Whether `/cmd` becomes service `main` (contract §3 `services.legacy`).
pub fn legacy_main(
    policy: Legacy,
    has_service_files: bool,
    cmd: Option<Vec<OsString>>,
) -> Option<ServiceSpec> {
    let argv = cmd?;
    match policy {
        Legacy::Never => None,
        Legacy::Auto if has_service_files => None,
        Legacy::Auto | Legacy::Always => Some(ServiceSpec::legacy_main(argv)),
    }
}

/// The hierarchy to track services in with `cgroups = "v2"`: only when
/// `root` really is a cgroup v2 mount (mounting it may have failed, or
/// the kernel may lack cgroup2). Else services are tracked by process group.
pub fn cgroup_v2_root(root: &Path) -> Option<PathBuf> {
    if crate::sys::is_cgroup2(root) {
        Some(root.to_path_buf())
    } else {
        console::log(
            Level::Error,
            &format!(
                "boot: {} is not a cgroup v2 hierarchy; tracking services by process group",
                root.display()
            ),
        );
        None
    }
}

pub fn has_service_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(".service") && !n.starts_with('.'))
        })
    })
}

/// The minimal `/etc/hosts` for an image that has none.
pub fn hosts_file(hostname: &str) -> String {
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if !hostname.is_empty() {
        text.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    text
}

/// Loads one kernel module with `finit_module`. `/nsm.ko` is optional and
/// unlinked after loading, as the C init does.
fn load_module(root: &Path, module: &Path) {
    let path = root.join(module.strip_prefix("/").unwrap_or(module));
    let is_nsm = module == Path::new("/nsm.ko");
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && is_nsm => return,
        Err(e) => {
            console::log(
                Level::Warn,
                &format!("boot: module {}: {e}", module.display()),
            );
            return;
        }
    };
    let name = module.to_string_lossy();
    let compressed = [".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|ext| name.ends_with(ext));
    match sys::finit_module(file.as_fd(), compressed) {
        Ok(()) => console::log(
            Level::Info,
            &format!("boot: loaded module {}", module.display()),
        ),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => console::log(
            Level::Debug,
            &format!("boot: module {} already loaded", module.display()),
        ),
        Err(e) => console::log(
            Level::Error,
            &format!("boot: load module {}: {e}", module.display()),
        ),
    }
    drop(file);
    if is_nsm {
        unlink_logged(&path, "/nsm.ko");
    }
}

/// The config file as seen from the final root, read before the switch.
fn read_config(
    args: &Args,
    has_rootfs: bool,
) -> (Config, Vec<crate::parse::diag::Diagnostic>, PathBuf) {
    let final_path = load::config_path(args);
    let before_switch = if has_rootfs {
        Path::new("/rootfs").join(final_path.strip_prefix("/").unwrap_or(&final_path))
    } else {
        final_path.clone()
    };
    let (config, diags) = load::config_for(&before_switch, args);
    (config, diags, before_switch)
}

/// The root switch of the C init: bind-mount `/rootfs` on itself, enter
/// it, move it onto `/`, chroot into it.
fn switch_root() -> Result<(), String> {
    let rootfs = Path::new("/rootfs");
    sys::mount("/rootfs", rootfs, None, libc::MS_BIND, None)
        .map_err(|e| format!("bind-mount /rootfs: {e}"))?;
    std::env::set_current_dir(rootfs).map_err(|e| format!("chdir /rootfs: {e}"))?;
    sys::mount(".", Path::new("/"), None, libc::MS_MOVE, None)
        .map_err(|e| format!("move-mount /rootfs to /: {e}"))?;
    sys::chroot(Path::new(".")).map_err(|e| format!("chroot: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

fn network_and_names(config: &Config) {
    if config.boot.loopback {
        match sys::interface_up("lo") {
            Ok(()) => console::log(Level::Debug, "boot: lo up"),
            Err(e) => console::log(Level::Error, &format!("boot: bring up lo: {e}")),
        }
    }
    if !config.boot.hostname.is_empty() {
        match sys::sethostname(&config.boot.hostname) {
            Ok(()) => console::log(
                Level::Info,
                &format!("boot: hostname {}", config.boot.hostname),
            ),
            Err(e) => console::log(
                Level::Error,
                &format!("boot: sethostname {}: {e}", config.boot.hostname),
            ),
        }
    }
    let hosts = Path::new("/etc/hosts");
    if !hosts.exists() {
        let _ = std::fs::create_dir_all("/etc");
        if let Err(e) = std::fs::write(hosts, hosts_file(&config.boot.hostname)) {
            console::log(Level::Error, &format!("boot: write /etc/hosts: {e}"));
        }
    }
}

/// The enclave boot (contract §4), steps 2 to 9: what the runtime needs
/// to supervise, in boot mode, and what the boot found (for `initctl
/// boot`). Every step logs its failure and the boot goes on. (Step 1,
/// blocking signals, is `run::start`'s, before anything.)
pub fn boot(args: &Args, nofile: Option<(u64, u64)>) -> (Settings, BootReport) {
    let started = Instant::now();
    let mut report = BootReport {
        version: env!("CARGO_PKG_VERSION").into(),
        mode: "boot".into(),
        ..BootReport::default()
    };
    let root = Path::new("/");
    // Step 2: a console. devtmpfs may already be mounted when the kernel has
    // CONFIG_DEVTMPFS_MOUNT set: EBUSY is fine.
    run_logged(
        root,
        &mount("dev", "/dev", "devtmpfs", NOSUID | NOEXEC, None),
    );
    guarded_step("console", || {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/console")
        {
            Ok(console_file) => {
                if let Err(e) = sys::attach_stdio(console_file.as_fd()) {
                    console::log(
                        Level::Error,
                        &format!("boot: attach stdio to /dev/console: {e}"),
                    );
                }
            }
            Err(e) => console::log(Level::Error, &format!("boot: open /dev/console: {e}")),
        }
        if let Err(e) = console::install_path(Path::new("/dev/console")) {
            console::log(
                Level::Warn,
                &format!("boot: console: {e}; writing to stderr"),
            );
        }
    });
    console::log(
        Level::Info,
        &format!("enclave-init {} booting", env!("CARGO_PKG_VERSION")),
    );
    for word in &args.ignored {
        console::log(
            Level::Info,
            &format!("ignoring kernel argument {:?}", word.to_string_lossy()),
        );
    }
    // Step 3: the config, from the final root.
    let has_rootfs = Path::new("/rootfs").is_dir();
    let (config, diags, config_path) = guarded_step("config", || read_config(args, has_rootfs))
        .unwrap_or_else(|| (Config::default(), Vec::new(), load::config_path(args)));
    console::set_level(config.log.level);
    load::report(&diags);
    if config_path.exists() {
        console::log(Level::Info, &format!("config {}", config_path.display()));
    } else {
        console::log(
            Level::Info,
            &format!("no {}: Nitro defaults", config_path.display()),
        );
    }
    console::flush();
    // Step 4: kernel modules, before the heartbeat (vsock may be one).
    for module in &config.boot.modules {
        guarded_step(&format!("module {}", module.display()), || {
            load_module(root, module)
        });
    }
    console::flush();
    // Step 5: tell the parent we are up; nothing of the services before.
    if config.heartbeat.enabled {
        let hb = &config.heartbeat;
        report.heartbeat = guarded_step("heartbeat", || {
            match crate::boot::heartbeat::send(hb.cid, hb.port, hb.timeout) {
                Ok(attempts) => {
                    let text = format!("answered by {}:{} (attempt {attempts})", hb.cid, hb.port);
                    console::log(Level::Info, &format!("heartbeat: {text}"));
                    text
                }
                Err(e) => {
                    let text = format!("to {}:{}: {e}", hb.cid, hb.port);
                    console::log(Level::Error, &format!("heartbeat {text}; booting on"));
                    text
                }
            }
        });
    }
    console::flush();
    // The NSM, which nsm.ko made appear: its PCRs are the image's. After
    // the heartbeat: the driver waits up to two minutes for an answer,
    // and the parent must not wait for that.
    match guarded_step("nsm", || nsm::describe(Path::new(nsm::DEVICE))) {
        Some(Ok(found)) => {
            console::log(Level::Info, &nsm::line(&found));
            report.nsm = Some(found);
        }
        Some(Err(e)) => {
            console::log(
                Level::Warn,
                &format!("nsm: {e} (no Nitro Secure Module: not a Nitro enclave?)"),
            );
            report.nsm_error = Some(e);
        }
        None => report.nsm_error = Some("a panic while reading it (see the log)".into()),
    }
    console::flush();
    // Step 6: /env and /cmd.
    let legacy_input = guarded_step("/env and /cmd", || read_legacy(root)).unwrap_or_default();
    // Step 7: the root switch.
    if has_rootfs {
        match guarded_step("switch root", switch_root) {
            Some(Ok(())) => console::log(Level::Debug, "boot: switched root to /rootfs"),
            Some(Err(e)) => console::log(
                Level::Error,
                &format!("boot: switch root: {e}; staying on the initramfs"),
            ),
            None => {}
        }
    }
    // Step 8: the filesystem table, then cgroups.
    for step in FILESYSTEMS {
        run_logged(root, step);
    }
    let cgroup_root = match config.boot.cgroups {
        Cgroups::V1 => {
            guarded_step("cgroups", || mount_cgroups_v1(root));
            run_logged(root, &CGROUP_UNIFIED_DIR);
            run_logged(root, &CGROUP_UNIFIED);
            cgroup_v2_root(Path::new("/sys/fs/cgroup/unified"))
        }
        Cgroups::V2 => {
            run_logged(root, &CGROUP_ROOT_V2);
            cgroup_v2_root(Path::new("/sys/fs/cgroup"))
        }
        Cgroups::None => None,
    };
    // Step 9: loopback, hostname, /etc/hosts.
    guarded_step("network and names", || network_and_names(&config));
    // Step 10: services.
    let main = legacy_main(
        config.services.legacy,
        has_service_files(&config.services.dir),
        legacy_input.cmd,
    );
    let boot_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    console::log(Level::Info, &format!("boot: done in {boot_ms} ms"));
    report.boot_ms = Some(boot_ms);
    let entropy_gate = Some(EntropyGate::kernel(config.boot.entropy));
    let settings = Settings {
        mode: Mode::Boot,
        config,
        base_env: legacy_input.env,
        root: PathBuf::from("/"),
        extra_services: main.into_iter().collect(),
        load_service_dir: true,
        proc_path: PathBuf::from("/proc"),
        cgroup_root,
        nofile,
        entropy_gate,
        one_command: None,
    };
    (settings, report)
}

/// The end of an enclave: sync, then `reboot(RB_AUTOBOOT)`, whatever was
/// asked for. Nitro's machine has no power-off: `RB_POWER_OFF` halts the
/// CPUs and the enclave stays up, holding its CPUs and memory, until the
/// parent kills it; with `reboot=k` on Nitro's command line a restart ends
/// it, which is what the AWS C init does. The log line still says what was
/// asked for (the reason was logged when the shutdown began). If the kernel
/// refuses, keep reaping forever rather than exit (which would panic the
/// kernel).
pub fn end(ending: Ending) -> ! {
    console::log(Level::Info, &end_line(&ending));
    console::drain();
    sys::sync();
    let error = sys::restart_machine();
    console::log(
        Level::Error,
        &format!("reboot(2): {error}; staying up, reaping"),
    );
    console::drain();
    loop {
        // Blocking wait: nothing else is left to do.
        if nix::sys::wait::wait().is_err() {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

/// The last line of a booted enclave.
pub fn end_line(ending: &Ending) -> String {
    let asked = match ending {
        Ending::Poweroff => "power-off".to_string(),
        Ending::Reboot => "reboot".to_string(),
        Ending::Exit(status) => format!("exit (status {status})"),
    };
    format!("{asked}: ending the enclave (reboot(2) with RB_AUTOBOOT, as Nitro has no power-off)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_the_c_init() {
        let find = |target: &str| {
            FILESYSTEMS.iter().find_map(|s| match s.step {
                Step::Mount {
                    target: t,
                    fstype,
                    flags,
                    data,
                    ..
                } if t == target => Some((fstype, flags, data)),
                _ => None,
            })
        };
        assert_eq!(find("/proc"), Some(("proc", NODEV | NOSUID | NOEXEC, None)));
        assert_eq!(
            find("/run"),
            Some(("tmpfs", NODEV | NOSUID | NOEXEC, Some("mode=0755")))
        );
        assert_eq!(find("/tmp"), Some(("tmpfs", NODEV | NOSUID | NOEXEC, None)));
        assert_eq!(
            find("/dev/shm"),
            Some(("tmpfs", NODEV | NOSUID | NOEXEC, None))
        );
        assert_eq!(find("/dev/pts"), Some(("devpts", NOSUID | NOEXEC, None)));
        assert_eq!(find("/sys"), Some(("sysfs", NODEV | NOSUID | NOEXEC, None)));
        assert_eq!(find("/dev"), Some(("devtmpfs", NOSUID | NOEXEC, None)));
        // The new /dev comes first: everything else lands on it.
        assert!(matches!(
            FILESYSTEMS[0].step,
            Step::Mount { target: "/dev", .. }
        ));
        let pos = |t: &str| {
            FILESYSTEMS
                .iter()
                .position(|s| matches!(s.step, Step::Mount { target, .. } if target == t))
                .unwrap()
        };
        let mkdir_pos = |p: &str| {
            FILESYSTEMS
                .iter()
                .position(|s| matches!(s.step, Step::Mkdir { path, .. } if path == p))
                .unwrap()
        };
        assert!(mkdir_pos("/dev/shm") < pos("/dev/shm"));
        assert!(mkdir_pos("/dev/pts") < pos("/dev/pts"));
        assert!(pos("/proc") < pos("/sys"));
    }

    #[test]
    fn mkdir_and_symlink_steps_on_a_tree() {
        let root = std::env::temp_dir().join(format!("ei-boot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("dev")).unwrap();
        for step in FILESYSTEMS
            .iter()
            .filter(|s| !matches!(s.step, Step::Mount { .. }))
        {
            run_step(&root, step).unwrap();
            // Twice: "already there" is tolerated.
            run_step(&root, step).unwrap();
        }
        assert_eq!(
            std::fs::read_link(root.join("dev/fd")).unwrap(),
            Path::new("/proc/self/fd")
        );
        assert_eq!(
            std::fs::read_link(root.join("dev/stderr")).unwrap(),
            Path::new("/proc/self/fd/2")
        );
        assert!(root.join("dev/shm").is_dir() && root.join("dev/pts").is_dir());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn cgroup_controllers() {
        let text = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t0\t1\t1\ncpu\t0\t1\t1\nmemory\t0\t1\t0\npids\t0\t1\t1\n";
        assert_eq!(enabled_controllers(text), ["cpuset", "cpu", "pids"]);
        assert!(enabled_controllers("").is_empty());
    }

    #[test]
    fn legacy_files_are_read_and_unlinked() {
        let root = std::env::temp_dir().join(format!("ei-legacy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("env"), "A=1\nbroken\n\nPATH=/bin\n").unwrap();
        std::fs::write(root.join("cmd"), "/bin/app\n--flag\n\n").unwrap();
        let input = read_legacy(&root);
        assert_eq!(
            input.env,
            [("A".into(), "1".into()), ("PATH".into(), "/bin".into())]
        );
        assert_eq!(
            input.cmd,
            Some(vec!["/bin/app".into(), "--flag".into(), OsString::new()])
        );
        assert!(!root.join("env").exists() && !root.join("cmd").exists());
        assert_eq!(
            read_legacy(&root),
            LegacyInput::default(),
            "absent files: nothing"
        );
        std::fs::write(root.join("cmd"), "").unwrap();
        assert_eq!(read_legacy(&root).cmd, None, "an empty /cmd runs nothing");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn legacy_policy() {
        let cmd = || Some(vec![OsString::from("/bin/app")]);
        assert!(legacy_main(Legacy::Auto, false, cmd()).is_some());
        assert!(legacy_main(Legacy::Auto, true, cmd()).is_none());
        assert!(legacy_main(Legacy::Always, true, cmd()).is_some());
        assert!(legacy_main(Legacy::Never, false, cmd()).is_none());
        assert!(legacy_main(Legacy::Always, false, None).is_none());
        let main = legacy_main(Legacy::Auto, false, cmd()).unwrap();
        assert_eq!(main.name, "main");
        assert_eq!(main.success_action, crate::model::spec::EndAction::Poweroff);
        assert_eq!(main.failure_action, crate::model::spec::EndAction::Poweroff);
        assert_eq!(main.stdout, crate::model::spec::Output::Console);
        assert_eq!(main.restart, crate::model::spec::RestartPolicy::No);
    }

    #[test]
    fn cgroup_tracking_needs_a_real_cgroup2_mount() {
        // Before: /sys/fs/cgroup was used even when mounting cgroup2 on it
        // had failed. A plain directory is no hierarchy.
        let dir = std::env::temp_dir().join(format!("ei-cg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(cgroup_v2_root(&dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_end_of_an_enclave_says_what_was_asked() {
        assert_eq!(
            end_line(&Ending::Poweroff),
            "power-off: ending the enclave (reboot(2) with RB_AUTOBOOT, as Nitro has no power-off)"
        );
        assert!(end_line(&Ending::Reboot).starts_with("reboot: "));
        assert!(end_line(&Ending::Exit(3)).starts_with("exit (status 3): "));
    }

    #[test]
    #[allow(clippy::panic)]
    fn a_panicking_boot_step_is_logged_and_the_boot_goes_on() {
        let mut ran = Vec::new();
        for step in ["one", "two", "three"] {
            let done = guarded_step(step, || {
                if step == "two" {
                    panic!("a bug in step two");
                }
                ran.push(step);
            });
            assert_eq!(done.is_some(), step != "two");
        }
        assert_eq!(ran, ["one", "three"]);
    }

    #[test]
    fn hosts() {
        assert_eq!(
            hosts_file(""),
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        );
        assert!(hosts_file("enclave").ends_with("127.0.1.1\tenclave\n"));
    }
}
