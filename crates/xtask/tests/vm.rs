//! End-to-end: the static enclave-init as `/init` of an enclave image
//! under QEMU, with a real vsock heartbeat. Each test is one full boot (or
//! a few) and asserts on the console text and on how the machine ended;
//! every failure message carries the console.
//!
//! The machine is QEMU's `nitro-enclave` (an EIF in nitro-cli's layout,
//! AWS's enclave kernel, Nitro's command line, an emulated NSM), the
//! closest to Nitro outside AWS, unless a test says why it needs the PC
//! machine (Debian's kernel: loading compressed modules).
//!
//! Needs what `cargo xtask setup` installs; fails saying so when it is
//! missing. `cargo xtask test --no-vm` (the README's local shortcut) does
//! not run this file at all and says so; a test here never passes without
//! booting.

use std::path::PathBuf;
use std::time::Duration;

use xtask::assets::{self, Assets};
use xtask::eif::Measurements;
use xtask::enclave::{self, Kind};
use xtask::image::Image;
use xtask::vm::{self, Outcome, Stop};

struct Ctx {
    assets: Assets,
    kind: Kind,
    init: PathBuf,
    initctl: PathBuf,
}

fn ctx() -> Ctx {
    ctx_on(Kind::Nitro)
}

fn ctx_on(kind: Kind) -> Ctx {
    let assets = assets::find().unwrap_or_else(|e| panic!("{e}"));
    let (init, initctl) =
        assets::static_binaries().unwrap_or_else(|e| panic!("building the static binaries: {e}"));
    Ctx {
        assets,
        kind,
        init,
        initctl,
    }
}

impl Ctx {
    /// The Nitro layout with the machine's nsm.ko, busybox and initctl.
    fn image(&self) -> Image {
        enclave::base_image(&self.assets, self.kind, &self.init, &self.initctl)
    }

    /// A config for the harness (CID 2; on the PC, vsock modules) from
    /// `own`.
    fn config(&self, own: &str) -> Option<String> {
        Some(enclave::harness_config(&self.image(), Some(own)).unwrap())
    }

    fn boot(&self, name: &str, image: &Image, opts: vm::Options) -> Outcome {
        self.boot_measured(name, image, opts).0
    }

    /// Boots; the outcome and, on the nitro machine, the EIF's PCRs.
    fn boot_measured(
        &self,
        name: &str,
        image: &Image,
        opts: vm::Options,
    ) -> (Outcome, Option<Measurements>) {
        let work = assets::workspace_root()
            .join("target/vm-tests")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        let booted = enclave::boot(&self.assets, self.kind, image, &work, &opts).unwrap();
        let _ = std::fs::remove_dir_all(&work);
        (booted.outcome, booted.measurements)
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

/// Both seen, the first before the second (a missing one is never
/// "before": `None < Some(_)` would be).
fn before(first: Option<usize>, second: Option<usize>) -> bool {
    matches!((first, second), (Some(a), Some(b)) if a < b)
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
        before(position(&o, "heartbeat: answered by 2:9000"), first),
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
    // The machine's own nsm.ko (Nitro's kernel has vsock built in), the
    // NSM behind it, and the entropy gate opened by the NSM's hwrng before
    // any service.
    let modules = probe
        .iter()
        .find(|l| l.starts_with("MODULES "))
        .cloned()
        .unwrap_or_default();
    check!(
        o,
        modules.split_whitespace().any(|x| x == "nsm"),
        "nsm.ko not loaded: {modules}"
    );
    check!(o, has(&o, "nsm: module "), "init did not read the NSM");
    check!(
        o,
        before(
            position(&o, "entropy: the kernel's random pool is initialized"),
            first
        ),
        "the entropy gate did not open before the services"
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
        before(position(&o, "heartbeat to 2:9000"), position(&o, "after[")),
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
    // The defaults aim at CID 3, the parent; the harness's vsock backend
    // forwards only CID 2: no answer within the default budget, said, and
    // booted on.
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

/// A service whose process leaves its process group and session (setsid)
/// is still stopped whole: it is tracked in a cgroup2 hierarchy, at
/// `unified` (`cgroups = "v1"`, systemd's hybrid layout) or at the root
/// (`cgroups = "v2"`).
fn escaper_is_stopped(tag: &str, config: Option<&str>, cgroup: &str) {
    let ctx = ctx();
    let mut image = ctx
        .image()
        .service(
            "escaper",
            "ExecStart = [\"/bin/sh\", \"-c\", \"(setsid sh -c 'exec sleep 1001' &); echo escaped; exec sleep 1000\"]\n",
        )
        .service(
            "checker",
            &format!(
                r#"Wants = ["escaper"]
ExecStart = ["/bin/sh", "-c", "sleep 2; echo MEMBERS=$(wc -l < {cgroup}/escaper.service/cgroup.procs); echo BEFORE=$(grep -l 'sleep.100[01]' /proc/[0-9]*/cmdline 2>/dev/null | wc -l); initctl stop escaper; echo AFTER=$(grep -l 'sleep.100[01]' /proc/[0-9]*/cmdline 2>/dev/null | wc -l); kill -TERM 1"]
"#
            ),
        );
    if let Some(config) = config {
        image.config = ctx.config(config);
    }
    let o = ctx.boot(tag, &image, opts());
    let out = o.service_output("checker");
    check!(o, has(&o, "escaper["), "boot did not reach the services");
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
fn cgroup_v2_stops_a_service_that_double_forked_out_of_its_group() {
    escaper_is_stopped(
        "cgroupv2",
        Some("[boot]\ncgroups = \"v2\"\n"),
        "/sys/fs/cgroup",
    );
}

#[test]
fn the_default_v1_layout_tracks_services_in_the_unified_hierarchy_too() {
    escaper_is_stopped("cgrouphybrid", None, "/sys/fs/cgroup/unified");
}

#[test]
fn example_enclave_with_oneshot_and_notify() {
    let ctx = ctx();
    let mut image = ctx.image();
    image.rootfs_dir = Some(assets::workspace_root().join("examples/enclave/rootfs"));
    image.config = Some(enclave::harness_config(&image, image.own_config().as_deref()).unwrap());
    image.env = Some(vec![("GREETING".into(), "hello from /env".into())]);
    let o = ctx.boot("example", &image, opts());
    check!(o, o.heartbeat.is_some(), "no heartbeat");
    let at = |t: &str| position(&o, t);
    check!(
        o,
        before(
            at("setup: main process exited with status 0"),
            at("app: started")
        ),
        "app started before its oneshot setup finished"
    );
    check!(
        o,
        before(at("app: ready"), at("report: started")),
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

/// The proof that the image layout is exactly nitro-cli's: the PCRs the
/// NSM reports inside the enclave (which QEMU's machine computed from the
/// EIF, as Nitro does) are the ones `cargo xtask eif` computed with AWS's
/// crate. Also: the boot report shows them, and the entropy gate names
/// the NSM's hwrng.
#[test]
fn the_nsms_pcrs_are_the_images_and_initctl_boot_shows_them() {
    let ctx = ctx();
    let mut image = ctx.image().service(
        "report",
        "Type = \"oneshot\"\nExecStart = \"/usr/bin/initctl boot\"\nSuccessAction = \"poweroff\"\n",
    );
    image.config = ctx.config("");
    let (o, measured) = ctx.boot_measured("pcrs", &image, opts());
    let measured = measured.expect("the nitro machine boots an EIF");
    let logged = enclave::logged_pcrs(&o);
    check!(o, logged.is_some(), "init logged no PCRs");
    let logged = logged.unwrap_or_default();
    for (n, (seen, want)) in logged.iter().zip(measured.pcrs()).enumerate() {
        check!(o, seen.len() == 96, "PCR{n} is not SHA-384: {seen}");
        check!(
            o,
            seen == want,
            "PCR{n}: the NSM says {seen}, the image's measurement is {want}"
        );
    }
    let report = o.service_output("report");
    for (n, want) in measured.pcrs().iter().enumerate() {
        check!(
            o,
            report.iter().any(|l| l.trim() == format!("PCR{n}: {want}")),
            "initctl boot does not show PCR{n}: {report:?}"
        );
    }
    check!(
        o,
        report.iter().any(|l| l.contains("Digest: SHA384")),
        "initctl boot does not show the digest: {report:?}"
    );
    check!(
        o,
        report
            .iter()
            .any(|l| l.trim() == "Entropy: ready, hwrng nsm-hwrng, services waited 0 ms"),
        "initctl boot does not show the entropy gate opened by the NSM's hwrng: {report:?}"
    );
    check!(
        o,
        has(
            &o,
            "entropy: the kernel's random pool is initialized (hwrng: nsm-hwrng)"
        ),
        "the entropy line does not name the NSM's hwrng"
    );
    check!(
        o,
        o.enclave_ended(),
        "the enclave did not end with a machine restart"
    );
}

/// Every way an enclave ends is a machine restart, never a halt: what a
/// service's action asks for, `initctl poweroff` and `reboot`, and SIGTERM
/// to init (the first test) all end with `reboot: machine restart`.
#[test]
fn every_end_of_the_enclave_restarts_the_machine_and_never_halts_it() {
    let ctx = ctx();
    let cases: &[(&str, &str, &str)] = &[
        (
            "initctl-poweroff",
            "ExecStart = \"/bin/sh -c 'echo asking; initctl poweroff'\"\n",
            "shutting down (poweroff): initctl poweroff",
        ),
        (
            "initctl-reboot",
            "ExecStart = \"/bin/sh -c 'echo asking; initctl reboot'\"\n",
            "shutting down (reboot): initctl reboot",
        ),
        (
            "failure-action-exit",
            "ExecStart = \"/bin/sh -c 'echo asking; exit 4'\"\nFailureAction = \"exit\"\n",
            "its action is exit (status 4)",
        ),
        (
            "success-action-reboot",
            "Type = \"oneshot\"\nExecStart = \"/bin/sh -c 'echo asking'\"\nSuccessAction = \"reboot\"\n",
            "its action is reboot (status 0)",
        ),
    ];
    for (name, service, why) in cases {
        let mut image = ctx.image().service("ender", service);
        image.config = ctx.config("");
        let o = ctx.boot(name, &image, opts());
        check!(o, has(&o, why), "{name}: the reason was not logged ({why})");
        check!(
            o,
            has(&o, "ending the enclave (reboot(2) with RB_AUTOBOOT"),
            "{name}: init did not say how it ends the enclave"
        );
        check!(
            o,
            o.stopped == Some(Stop::Restart),
            "{name}: the machine did not restart ({:?})",
            o.stopped
        );
        check!(
            o,
            o.enclave_ended(),
            "{name}: the enclave did not end with a machine restart"
        );
    }
}

/// The PC machine, for what only it has: Debian's kernel takes vsock as
/// modules, which init loads compressed (`.ko.xz`, decompressed by the
/// kernel) before the heartbeat; nsm.ko loads and finds no device, which
/// init reports.
#[test]
fn on_the_pc_machine_init_loads_compressed_modules_before_the_heartbeat() {
    let ctx = ctx_on(Kind::Pc);
    let mut image = ctx.image().service(
        "probe",
        "ExecStart = [\"/bin/sh\", \"-c\", \"echo MODULES $(cut -d' ' -f1 /proc/modules | tr '\\n' ' '); kill -TERM 1\"]\n",
    );
    image.config = ctx.config("");
    let o = ctx.boot("pc-modules", &image, opts());
    let modules = o
        .service_output("probe")
        .into_iter()
        .find(|l| l.starts_with("MODULES "))
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
    check!(
        o,
        o.heartbeat.as_ref().is_some_and(|h| h.byte == 0xB7),
        "no heartbeat over the module-loaded vsock"
    );
    check!(
        o,
        has(&o, "nsm: /dev/nsm: No such file or directory (no Nitro Secure Module: not a Nitro enclave?)"),
        "the missing NSM was not reported"
    );
    check!(
        o,
        o.enclave_ended(),
        "the enclave did not end with a machine restart"
    );
}

/// The harness itself: a machine that halts (what `RB_POWER_OFF` does on
/// Nitro's machine, leaving the enclave up) is stopped and called a
/// failure, never "the enclave ended". Here `/init` is a script that
/// powers off the way the old code did.
#[test]
fn the_harness_calls_a_halted_machine_a_failure() {
    let ctx = ctx();
    let script = assets::workspace_root().join(format!(
        "target/vm-tests/poweroff-init-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
    std::fs::write(
        &script,
        "#!/rootfs/bin/busybox sh\necho powering off the old way\nexec /rootfs/bin/busybox poweroff -f\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut image = ctx.image();
    image.init = script.clone();
    let o = ctx.boot("halt", &image, opts());
    let _ = std::fs::remove_file(&script);
    check!(
        o,
        has(&o, "powering off the old way"),
        "the script did not run"
    );
    check!(
        o,
        o.stopped == Some(Stop::Halted),
        "the halt was not seen ({:?})",
        o.stopped
    );
    check!(o, !o.enclave_ended(), "a halted machine counted as ended");
    check!(o, !o.timed_out, "the harness waited for its timeout");
}

/// `cargo xtask eif` as a user runs it: the same inputs give the same PCRs
/// (`--describe` of the file agrees), `/cmd` moves PCR2 only, and a
/// damaged file is refused. No boot: the PCRs' match with the NSM is
/// `the_nsms_pcrs_are_the_images_and_initctl_boot_shows_them`.
#[test]
fn xtask_eif_is_reproducible_and_describes_what_it_built() {
    // The tools must be there already: a test does not build them.
    assets::find().unwrap_or_else(|e| panic!("{e}"));
    let work =
        assets::workspace_root().join(format!("target/vm-tests/eif-cli-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let root = assets::workspace_root().join("examples/enclave/rootfs");
    let xtask = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "xtask {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let m = &doc["Measurements"];
        assert_eq!(m["HashAlgorithm"], "Sha384 { ... }", "{doc}");
        ["PCR0", "PCR1", "PCR2"].map(|k| m[k].as_str().unwrap().to_string())
    };
    // Same file names: an image's name, in its metadata, is its file's.
    for d in ["a", "b", "c"] {
        std::fs::create_dir_all(work.join(d)).unwrap();
    }
    let path = |name: &str| work.join(name).display().to_string();
    let root = root.display().to_string();
    let build = |dir: &str, cmd: &str| {
        xtask(&[
            "eif",
            &root,
            "-o",
            &path(&format!("{dir}/app.eif")),
            "--cmd",
            cmd,
            "--json",
        ])
    };
    let a = build("a", "/bin/app one");
    let b = build("b", "/bin/app one");
    let c = build("c", "/bin/app two");
    assert_eq!(a, b, "the same inputs gave different PCRs");
    assert!(
        std::fs::read(path("a/app.eif")).unwrap() == std::fs::read(path("b/app.eif")).unwrap(),
        "the same inputs gave different files"
    );
    assert_eq!(
        xtask(&["eif", "--describe", &path("a/app.eif"), "--json"]),
        a
    );
    assert_eq!((a[0] != c[0], &a[1], a[2] != c[2]), (true, &c[1], true));
    // A flipped byte in the customer ramdisk's data: the CRC says so.
    let mut bytes = std::fs::read(path("a/app.eif")).unwrap();
    let at = bytes.len() - 1000;
    bytes[at] ^= 0xff;
    std::fs::write(path("bad.eif"), &bytes).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["eif", "--describe", &path("bad.eif")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("the CRC does not match"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// The entropy gate on the real `/dev/random`. With RDRAND and RDSEED the
/// kernel trusts the CPU (`random.trust_cpu=on`) and its pool is ready
/// long before `/init`. Without them the pool is not ready when init
/// starts: the NSM's hardware RNG (`nsm-hwrng`, registered when init loads
/// `nsm.ko`) initializes it, and no service starts before that.
#[test]
fn without_a_cpu_rng_the_nsms_hwrng_readies_the_pool_before_any_service() {
    let ctx = ctx();
    let mut image = ctx.image().service(
        "reader",
        "Type = \"oneshot\"\nExecStart = \"/bin/sh -c 'head -c 16 /dev/random | wc -c'\"\nSuccessAction = \"poweroff\"\n",
    );
    image.config = ctx.config("[boot]\nentropy = \"2min\"\n");
    let o = ctx.boot(
        "entropy-nordrand",
        &image,
        vm::Options {
            cpu: format!("{},-rdrand,-rdseed", vm::CPU),
            ..opts()
        },
    );
    let line = o
        .lines()
        .find(|l| l.contains("entropy: the kernel's random pool is initialized"))
        .map(str::to_string);
    check!(o, line.is_some(), "the gate never opened");
    let line = line.unwrap_or_default();
    check!(
        o,
        line.contains("(hwrng: nsm-hwrng)"),
        "the RNG is not named: {line}"
    );
    // Without a CPU RNG the pool was not ready when init started ...
    check!(
        o,
        before(
            position(&o, "Run /init as init process"),
            position(&o, "random: crng init done")
        ),
        "the pool was ready before /init: the CPU still offers an RNG?"
    );
    // ... nsm.ko's hwrng made it ready, then the gate opened, then the
    // services started.
    check!(
        o,
        before(
            position(&o, "boot: loaded module /nsm.ko"),
            position(&o, "entropy: the kernel's random pool is initialized")
        ) && before(
            position(&o, "random: crng init done"),
            position(&o, "entropy: the kernel's random pool is initialized")
        ),
        "the gate opened before the pool was ready"
    );
    check!(
        o,
        before(
            position(&o, "entropy: the kernel's random pool is initialized"),
            position(&o, "reader: started")
        ),
        "a service started before the pool was ready"
    );
    check!(
        o,
        o.service_output("reader").iter().any(|l| l.trim() == "16"),
        "the service could not read /dev/random"
    );
    check!(
        o,
        o.enclave_ended(),
        "the enclave did not end with a machine restart"
    );
}

/// The parent channel on the nitro machine, from the host through
/// vhost-device-vsock's hybrid socket: the boot report, the services'
/// states and init's lines; a poweroff the image allows, which stops the
/// services in order (ExecStop runs); and the end record before the
/// machine restarts.
#[test]
fn the_parent_sees_the_enclave_and_its_end_over_vsock() {
    let ctx = ctx();
    let mut image = ctx
        .image()
        .service(
            "app",
            "ExecStart = [\"/bin/sh\", \"-c\", \"echo app-secret-output; exec sleep 1000\"]\nExecStop = \"/bin/sh -c 'echo app-stopping-cleanly'\"\n",
        );
    image.config = ctx.config("[parent]\nallow_poweroff = true\n");
    let mut o = opts();
    o.parent = Some(vm::ParentWatch {
        port: 9001,
        poweroff_after: Some("\"service\":\"app\",\"state\":\"running\"".into()),
        echo: false,
    });
    let o = ctx.boot("parent", &image, o);
    let heard = o.parent.join("\n");
    check!(
        o,
        heard.contains("\"event\":\"boot\""),
        "no boot report on the channel: {heard}"
    );
    check!(
        o,
        heard.contains("\"nsm\":{") && heard.contains("\"pcrs\""),
        "the boot report has no NSM: {heard}"
    );
    check!(
        o,
        heard.contains("poweroff: {\"reply\":\"done\""),
        "the poweroff was not accepted: {heard}"
    );
    check!(
        o,
        has(&o, "app-stopping-cleanly"),
        "ExecStop did not run: a hard stop"
    );
    check!(
        o,
        heard.contains("\"event\":\"end\"") && heard.contains("the parent asked for it"),
        "no end record: {heard}"
    );
    check!(
        o,
        !heard.contains("app-secret-output"),
        "output not exported reached the parent: {heard}"
    );
    check!(
        o,
        o.enclave_ended(),
        "the enclave did not end with a machine restart"
    );
}

/// A parent channel for CID 3 (Nitro's parent) refuses the host here,
/// which vhost-device-vsock shows as CID 2, and says so.
#[test]
fn the_parent_channel_accepts_only_its_cid() {
    let ctx = ctx();
    let mut image = ctx.image().service(
        "checker",
        "ExecStart = [\"/bin/sh\", \"-c\", \"sleep 5; kill -TERM 1\"]\n",
    );
    image.config = ctx.config("[parent]\ncid = 3\n");
    let mut o = opts();
    o.parent = Some(vm::ParentWatch {
        port: 9001,
        poweroff_after: None,
        echo: false,
    });
    let o = ctx.boot("parentcid", &image, o);
    check!(
        o,
        has(
            &o,
            "parent channel: refused a connection from CID 2: only CID 3 is accepted"
        ),
        "the host's connection was not refused: {:?}",
        o.parent
    );
    check!(
        o,
        !o.parent.iter().any(|l| l.contains("\"event\"")),
        "the host heard events: {:?}",
        o.parent
    );
    check!(
        o,
        o.enclave_ended(),
        "the enclave did not end with a machine restart"
    );
}
