//! End-to-end: the static enclave-init as `/init` of a Debian 6.12 kernel
//! under QEMU, in nitro-cli's image layout, with a real virtio-vsock
//! heartbeat. Each test is one full boot and asserts on the console text
//! and QEMU's exit; every failure message carries the console.
//!
//! Needs what `cargo xtask setup` installs; fails saying so when it is
//! missing. `cargo xtask test --no-vm` (the README's local shortcut) does
//! not run this file at all and says so; a test here never passes without
//! booting.

use std::path::PathBuf;
use std::time::Duration;

use xtask::assets::{self, Assets};
use xtask::image::{self, Image};
use xtask::vm::{self, Outcome};

struct Ctx {
    assets: Assets,
    init: PathBuf,
    initctl: PathBuf,
}

fn ctx() -> Ctx {
    let assets = assets::find().unwrap_or_else(|e| panic!("{e}"));
    let (init, initctl) =
        assets::static_binaries().unwrap_or_else(|e| panic!("building the static binaries: {e}"));
    Ctx {
        assets,
        init,
        initctl,
    }
}

impl Ctx {
    /// The Nitro layout with the real nsm.ko, busybox and initctl.
    fn image(&self) -> Image {
        Image {
            init: self.init.clone(),
            initctl: Some(self.initctl.clone()),
            nsm: Some(self.assets.nsm.clone()),
            vm_modules: self.assets.vsock_modules.clone(),
            busybox: Some(self.assets.busybox.clone()),
            ..Image::default()
        }
    }

    /// A config for QEMU (vsock modules, CID 2) from `own`.
    fn config(&self, own: &str) -> Option<String> {
        Some(image::vm_config(Some(own), &self.assets.vsock_modules).unwrap())
    }

    fn boot(&self, name: &str, image: &Image, opts: vm::Options) -> Outcome {
        let work = assets::workspace_root()
            .join("target/vm-tests")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        let initramfs = work.join("initramfs.cpio");
        image.build(&initramfs).unwrap();
        let outcome = vm::boot(&self.assets, &initramfs, &work, &opts).unwrap();
        let _ = std::fs::remove_dir_all(&work);
        outcome
    }
}

fn opts() -> vm::Options {
    vm::Options {
        timeout: Duration::from_secs(240),
        ..vm::Options::default()
    }
}

/// Asserts, with the whole console in the message.
macro_rules! check {
    ($outcome:expr, $cond:expr, $($what:tt)+) => {
        if !$cond {
            panic!("{}\n--- console ---\n{}\n--- end (qemu {:?}, timed out: {}) ---", format!($($what)+), $outcome.console, $outcome.status, $outcome.timed_out);
        }
    };
}

fn has(o: &Outcome, text: &str) -> bool {
    o.console.contains(text)
}

fn position(o: &Outcome, text: &str) -> Option<usize> {
    o.console.find(text)
}

/// A line a service printed through init: `name[pid]: text`.
fn is_service_line(line: &str) -> bool {
    let Some((head, _)) = line.split_once("]: ") else {
        return false;
    };
    let Some((name, pid)) = head.split_once('[') else {
        return false;
    };
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@:".contains(c))
        && !pid.is_empty()
        && pid.chars().all(|c| c.is_ascii_digit())
}

fn first_service_output(o: &Outcome) -> Option<usize> {
    let mut offset = 0;
    for line in o.console.split_inclusive('\n') {
        if is_service_line(line.trim_end()) {
            return Some(offset);
        }
        offset += line.len();
    }
    None
}

#[test]
fn services_boot_with_heartbeat_mounts_modules_network_and_shutdown() {
    let ctx = ctx();
    let mut image = ctx
        .image()
        .service(
            "probe",
            r#"Type = "oneshot"
RemainAfterExit = true
ExecStart = ["/bin/sh", "-c", "cat /proc/mounts; echo MODULES $(cut -d' ' -f1 /proc/modules | tr '\n' ' '); ip addr show lo; ping -c1 -W5 127.0.0.1 >/dev/null && echo PING4 ok; ping6 -c1 -W5 ::1 >/dev/null && echo PING6 ok; echo HOSTNAME $(hostname); cat /etc/hosts; echo ENV=$FROM_ENV"]
"#,
        )
        .service("crash", "ExecStart = \"/bin/sh -c 'echo crash-run; exit 2'\"\nRestart = \"on-failure\"\nRestartSec = 0.2\nStartLimitBurst = 3\n")
        .service(
            "stubborn",
            "ExecStart = [\"/bin/sh\", \"-c\", \"trap '' TERM; echo stubborn-armed; while true; do sleep 1; done\"]\nTimeoutStopSec = 1\n",
        )
        .service("killer", "Requires = [\"probe\", \"stubborn\"]\nExecStart = \"/bin/sh -c 'sleep 3; echo killer: kill -TERM 1; kill -TERM 1; sleep 100'\"\n");
    image.config = ctx.config("[boot]\nhostname = \"e2e-enclave\"\n");
    image.env = Some(vec![("FROM_ENV".into(), "hello-env".into())]);
    let o = ctx.boot("services", &image, opts());

    // The heartbeat: 0xB7 reached the host before any service printed.
    let hb = o.heartbeat.clone();
    check!(
        o,
        hb.as_ref().is_some_and(|h| h.byte == 0xB7),
        "the host got no 0xB7: {hb:?}"
    );
    let first = first_service_output(&o);
    check!(o, first.is_some(), "no service output at all");
    check!(
        o,
        hb.as_ref()
            .is_some_and(|h| h.console_len <= first.unwrap_or(0)),
        "service output came before the heartbeat"
    );
    check!(
        o,
        position(&o, "heartbeat: answered by 2:9000") < first,
        "init did not log the answered heartbeat before the services"
    );
    check!(
        o,
        has(&o, "ignoring kernel argument \"nomodules\""),
        "the kernel's bare word was not ignored"
    );

    // Every mount of the C init's table, with its flags, and the cgroups.
    let probe = o.service_output("probe");
    let mount = |target: &str| {
        probe
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(target))
            .cloned()
    };
    for (target, fstype, flags) in [
        ("/dev", "devtmpfs", &["nosuid", "noexec"][..]),
        ("/proc", "proc", &["nosuid", "nodev", "noexec"][..]),
        (
            "/run",
            "tmpfs",
            &["nosuid", "nodev", "noexec", "mode=755"][..],
        ),
        ("/tmp", "tmpfs", &["nosuid", "nodev", "noexec"][..]),
        ("/dev/shm", "tmpfs", &["nosuid", "nodev", "noexec"][..]),
        ("/dev/pts", "devpts", &["nosuid", "noexec"][..]),
        ("/sys", "sysfs", &["nosuid", "nodev", "noexec"][..]),
        (
            "/sys/fs/cgroup",
            "tmpfs",
            &["nosuid", "nodev", "noexec", "mode=755"][..],
        ),
        (
            "/sys/fs/cgroup/pids",
            "cgroup",
            &["nosuid", "nodev", "noexec", "pids"][..],
        ),
        (
            "/sys/fs/cgroup/cpu",
            "cgroup",
            &["nosuid", "nodev", "noexec", "cpu"][..],
        ),
    ] {
        let line = mount(target);
        check!(o, line.is_some(), "{target} is not mounted");
        let line = line.unwrap_or_default();
        let fields: Vec<&str> = line.split_whitespace().collect();
        check!(o, fields.get(2) == Some(&fstype), "{target}: {line}");
        let options: Vec<&str> = fields
            .get(3)
            .map(|f| f.split(',').collect())
            .unwrap_or_default();
        for flag in flags {
            check!(o, options.contains(flag), "{target} lacks {flag}: {line}");
        }
    }
    // The real nsm.ko and the compressed vsock modules.
    let modules = probe
        .iter()
        .find(|l| l.starts_with("MODULES "))
        .cloned()
        .unwrap_or_default();
    for m in [
        "nsm",
        "vsock",
        "vmw_vsock_virtio_transport_common",
        "vmw_vsock_virtio_transport",
    ] {
        check!(
            o,
            modules.split_whitespace().any(|x| x == m),
            "module {m} not loaded: {modules}"
        );
    }
    check!(
        o,
        has(&o, "boot: loaded module /vm/vsock.ko.xz"),
        "compressed module not loaded by init"
    );
    // Loopback, hostname, /etc/hosts, /env.
    check!(
        o,
        probe.iter().any(|l| l.contains("inet 127.0.0.1/8")),
        "lo has no 127.0.0.1/8"
    );
    check!(
        o,
        probe.iter().any(|l| l.contains("inet6 ::1/128")),
        "lo has no ::1"
    );
    check!(
        o,
        probe.iter().any(|l| l == "PING4 ok") && probe.iter().any(|l| l == "PING6 ok"),
        "loopback not reachable"
    );
    check!(
        o,
        probe.iter().any(|l| l == "HOSTNAME e2e-enclave"),
        "hostname not set"
    );
    check!(
        o,
        probe
            .iter()
            .any(|l| l.contains("127.0.0.1") && l.contains("localhost")),
        "no /etc/hosts"
    );
    check!(
        o,
        probe.iter().any(|l| l.contains("e2e-enclave")),
        "/etc/hosts lacks the hostname"
    );
    check!(
        o,
        probe.iter().any(|l| l == "ENV=hello-env"),
        "/env did not reach the service"
    );
    // A crashing service is restarted, then given up on.
    check!(
        o,
        o.service_output("crash").len() == 3,
        "crash did not run three times"
    );
    check!(
        o,
        has(&o, "crash: restarting in 200ms (restart 1)"),
        "crash not restarted"
    );
    check!(
        o,
        has(&o, "crash: failed: start limit hit"),
        "crash not stopped by its start limit"
    );
    // kill -TERM 1 from a service: orderly shutdown, SIGKILL for the stubborn one.
    check!(
        o,
        has(&o, "shutting down (poweroff): received SIGTERM from pid"),
        "SIGTERM to init did not start the shutdown"
    );
    check!(
        o,
        has(
            &o,
            "stubborn: still running 1s after SIGTERM; sending SIGKILL"
        ),
        "stubborn not escalated"
    );
    check!(
        o,
        has(&o, "stubborn: main process killed by SIGKILL"),
        "stubborn not killed"
    );
    // Every end of an enclave is a machine restart (Nitro has no
    // power-off: RB_POWER_OFF would halt it and leave it up); the line
    // says what was asked for.
    check!(
        o,
        has(
            &o,
            "enclave-init: power-off: ending the enclave (reboot(2) with RB_AUTOBOOT"
        ),
        "init did not say how it ends the enclave"
    );
    check!(
        o,
        o.enclave_ended(),
        "the enclave did not end with a machine restart"
    );
}

#[test]
fn legacy_cmd_and_env_only() {
    let ctx = ctx();
    let mut image = ctx.image();
    image.config = ctx.config("");
    image.cmd = Some(vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo legacy says $GREETING; exit 3".into(),
    ]);
    image.env = Some(vec![("GREETING".into(), "hi from env".into())]);
    let o = ctx.boot("legacy", &image, opts());
    check!(o, o.heartbeat.is_some(), "no heartbeat");
    // StandardOutput=console: the program's own line, unprefixed.
    check!(
        o,
        o.lines().any(|l| l == "legacy says hi from env"),
        "the /cmd program did not run with /env"
    );
    check!(
        o,
        has(&o, "main: failed: exited with status 3"),
        "main's exit not seen"
    );
    check!(
        o,
        has(
            &o,
            "shutting down (poweroff): service main ended: its action is poweroff (status 3)"
        ),
        "main's exit did not power off"
    );
    check!(
        o,
        o.enclave_ended(),
        "the enclave did not end with a machine restart"
    );
}

#[test]
fn heartbeat_without_a_listener_fails_within_its_budget_and_boot_goes_on() {
    let ctx = ctx();
    let mut image = ctx.image().service(
        "after",
        "ExecStart = \"/bin/sh -c 'echo booted on; kill -TERM 1'\"\n",
    );
    image.config = ctx.config("[heartbeat]\ntimeout = \"5s\"\n");
    let o = ctx.boot(
        "nolistener",
        &image,
        vm::Options {
            listener: false,
            ..opts()
        },
    );
    check!(
        o,
        o.heartbeat.is_none(),
        "a heartbeat arrived with no listener?"
    );
    check!(
        o,
        has(&o, "error: heartbeat to 2:9000: no answer within 5s"),
        "the heartbeat failure was not logged"
    );
    check!(
        o,
        position(&o, "heartbeat to 2:9000") < position(&o, "after["),
        "services started before the heartbeat gave up"
    );
    check!(
        o,
        o.service_output("after").iter().any(|l| l == "booted on"),
        "boot did not go on"
    );
    check!(
        o,
        o.enclave_ended(),
        "the enclave did not end with a machine restart"
    );
}

#[test]
fn no_config_file_means_nitro_defaults() {
    let ctx = ctx();
    let mut image = ctx.image();
    // No /rootfs/etc/enclave-init.toml at all: the C init's behaviour.
    image.config = None;
    image.cmd = Some(vec![
        "/bin/sh".into(),
        "-c".into(),
        "grep -c ' cgroup ' /proc/mounts; echo defaults-main-ran".into(),
    ]);
    image.env = Some(vec![]);
    let o = ctx.boot("defaults", &image, opts());
    check!(
        o,
        has(&o, "no /rootfs/etc/enclave-init.toml: Nitro defaults"),
        "defaults not announced"
    );
    check!(
        o,
        has(&o, "boot: loaded module /nsm.ko"),
        "/nsm.ko not loaded by default"
    );
    // The defaults aim at CID 3; without the vsock modules (built into
    // Nitro's kernel, not Debian's) there is no vsock: said, and booted on.
    check!(
        o,
        has(&o, "heartbeat to 3:9000"),
        "the default heartbeat target is not 3:9000"
    );
    check!(
        o,
        o.lines().any(|l| l == "defaults-main-ran"),
        "main did not run"
    );
    check!(
        o,
        o.lines().any(|l| l.parse::<u32>().is_ok_and(|n| n >= 2)),
        "cgroup v1 hierarchies not mounted by default"
    );
    check!(
        o,
        has(&o, "service main ended: its action is poweroff (status 0)"),
        "main's end did not power off"
    );
    check!(
        o,
        o.enclave_ended(),
        "the enclave did not end with a machine restart"
    );
}

#[test]
fn a_boot_step_that_panics_is_logged_and_the_boot_goes_on() {
    // The init built with its fault points; the kernel hands the unknown
    // `key=value` word of its command line to init as environment.
    let ctx = ctx();
    let mut image = ctx.image().service(
        "after",
        "ExecStart = \"/bin/sh -c 'echo booted on; kill -TERM 1'\"\n",
    );
    image.init = assets::static_fault_binary().unwrap();
    image.config = ctx.config("");
    let o = ctx.boot(
        "bootfault",
        &image,
        vm::Options {
            append: "ENCLAVE_INIT_FAULTS=boot:heartbeat".into(),
            ..opts()
        },
    );
    check!(
        o,
        has(
            &o,
            "internal error while handling boot step heartbeat: injected fault at boot (heartbeat)"
        ),
        "the panicking boot step was not logged"
    );
    check!(
        o,
        o.service_output("after").iter().any(|l| l == "booted on"),
        "the boot did not go on"
    );
    check!(o, !has(&o, "Kernel panic"), "PID 1 died");
    check!(
        o,
        o.enclave_ended(),
        "the enclave did not end with a machine restart"
    );
}

#[test]
fn an_enclave_with_nothing_to_run_ends_saying_why() {
    // No /cmd, and the only service file is broken.
    let ctx = ctx();
    let mut image = ctx.image().service("broken", "ExecStart = 5\n");
    image.config = ctx.config("");
    image.cmd = None;
    image.env = Some(vec![]);
    let o = ctx.boot("nothing", &image, opts());
    check!(
        o,
        has(
            &o,
            "shutting down (poweroff): nothing to run: no /cmd (or services.legacy = \"never\") and no service could be loaded from /service"
        ),
        "an enclave with nothing to run did not say so"
    );
    check!(
        o,
        o.enclave_ended(),
        "the enclave did not end with a machine restart"
    );
}

#[test]
fn cgroup_v2_stops_a_service_that_double_forked_out_of_its_group() {
    let ctx = ctx();
    let mut image = ctx
        .image()
        .service(
            "escaper",
            "ExecStart = [\"/bin/sh\", \"-c\", \"(setsid sh -c 'exec sleep 1001' &); echo escaped; exec sleep 1000\"]\n",
        )
        .service(
            "checker",
            r#"Wants = ["escaper"]
ExecStart = ["/bin/sh", "-c", "sleep 2; echo MEMBERS=$(wc -l < /sys/fs/cgroup/escaper.service/cgroup.procs); echo BEFORE=$(grep -l 'sleep.100[01]' /proc/[0-9]*/cmdline 2>/dev/null | wc -l); initctl stop escaper; echo AFTER=$(grep -l 'sleep.100[01]' /proc/[0-9]*/cmdline 2>/dev/null | wc -l); kill -TERM 1"]
"#,
        );
    image.config = ctx.config("[boot]\ncgroups = \"v2\"\n");
    let o = ctx.boot("cgroupv2", &image, opts());
    let out = o.service_output("checker");
    check!(
        o,
        o.lines()
            .any(|l| l.contains("/sys/fs/cgroup") && l.contains("cgroup2"))
            || has(&o, "escaper["),
        "boot did not reach the services"
    );
    check!(
        o,
        out.iter().any(|l| l == "MEMBERS=2"),
        "the escaped process is not in the service's cgroup: {out:?}"
    );
    check!(
        o,
        out.iter().any(|l| l == "BEFORE=2"),
        "both sleeps should run before the stop: {out:?}"
    );
    check!(
        o,
        out.iter().any(|l| l == "AFTER=0"),
        "a process survived the stop: {out:?}"
    );
    check!(
        o,
        o.enclave_ended(),
        "the enclave did not end with a machine restart"
    );
}

#[test]
fn example_enclave_with_oneshot_and_notify() {
    let ctx = ctx();
    let mut image = ctx.image();
    image.rootfs_dir = Some(assets::workspace_root().join("examples/enclave/rootfs"));
    image.config =
        Some(image::vm_config(image.own_config().as_deref(), &image.vm_modules).unwrap());
    image.env = Some(vec![("GREETING".into(), "hello from /env".into())]);
    let o = ctx.boot("example", &image, opts());
    check!(o, o.heartbeat.is_some(), "no heartbeat");
    let at = |t: &str| position(&o, t);
    check!(
        o,
        at("setup: main process exited with status 0") < at("app: started"),
        "app started before its oneshot setup finished"
    );
    check!(
        o,
        at("app: ready") < at("report: started"),
        "report started before app was ready"
    );
    check!(o, at("app: ready").is_some(), "app never became ready");
    check!(
        o,
        o.service_output("report")
            .iter()
            .any(|l| l.contains("Status: serving requests")),
        "STATUS= not shown by initctl status"
    );
    check!(
        o,
        has(&o, "flaky: restarting in 500ms (restart 2)"),
        "flaky not restarted twice"
    );
    check!(
        o,
        o.service_output("setup")
            .iter()
            .any(|l| l.contains("hello from /env")),
        "/env did not reach setup"
    );
    check!(
        o,
        has(
            &o,
            "service report ended: its action is poweroff (status 0)"
        ),
        "the job's success did not power off"
    );
    check!(
        o,
        o.enclave_ended(),
        "the enclave did not end with a machine restart"
    );
}
