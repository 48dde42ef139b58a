//! Existing daemons from their own unit files, with the real binary (issue:
//! real daemons, Debian's unit files, the classic daemon patterns).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{wait_until, As, Builder};

/// `nobody` of the test machine's `/etc/passwd`: (uid, gid).
fn nobody() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .expect("a nobody user");
    let fields: Vec<&str> = line.split(':').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

#[test]
fn a_unit_file_gets_its_runtime_and_state_directories_and_umask() {
    let tag = format!("ei-dirs-{}", std::process::id());
    let run = Path::new("/run").join(&tag);
    let state = Path::new("/var/lib").join(&tag);
    let unit = format!(
        "[Unit]\nDescription=directories\n\n[Service]\nUser=nobody\nRuntimeDirectory={tag}/sub\n\
         RuntimeDirectoryMode=0750\nStateDirectory={tag}\nUMask=0077\n\
         ExecStart=/bin/sh -c 'echo \"dirs $RUNTIME_DIRECTORY $STATE_DIRECTORY\"; echo \"umask $(umask)\"; \\\n\
           touch $RUNTIME_DIRECTORY/f; stat -c \"file %%a %%U\" $RUNTIME_DIRECTORY/f; exec sleep 1000'\n"
    );
    let init = Builder::new("dirs").service("d", &unit).start();
    init.wait_for(&format!("dirs /run/{tag}/sub /var/lib/{tag}"));
    init.wait_for("umask 0077");
    init.wait_for("file 600 nobody");
    let sub = run.join("sub");
    let meta = std::fs::metadata(&sub).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
    assert_eq!((meta.uid(), meta.gid()), nobody());
    assert_eq!(std::fs::metadata(&state).unwrap().uid(), nobody().0);
    init.wait_socket();
    assert!(init.initctl(&["stop", "d"]).status.success());
    wait_until("the runtime directory removed", || !sub.exists());
    assert!(state.is_dir(), "a state directory is kept");
    let _ = std::fs::remove_dir_all(&run);
    let _ = std::fs::remove_dir_all(&state);
}

/// A classic daemon: the start command forks a child that leaves the
/// session (`setsid`) and exits at once; the child writes its PID file
/// only once `go` exists (after the start command is gone).
fn forking_daemon(dir: &Path, pid_file: &Path, go: &Path) -> std::path::PathBuf {
    let script = dir.join("daemon.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nsetsid sh -c 'while [ ! -e {go} ]; do sleep 0.02; done; echo $$ > {pid}; echo daemon-up $$; exec sleep 1000' </dev/null &\necho starter-done\nexit 0\n",
            go = go.display(),
            pid = pid_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

#[test]
fn a_forking_daemon_is_tracked_through_its_pid_file_written_late() {
    let b = Builder::new("forking").how(As::Subreaper);
    let (pid_file, go) = (b.dir().join("d.pid"), b.dir().join("go"));
    let script = forking_daemon(b.dir(), &pid_file, &go);
    let unit = format!(
        "[Service]\nType=forking\nPIDFile={}\nExecStart={}\n",
        pid_file.display(),
        script.display()
    );
    let init = b.service("d", &unit).start();
    init.wait_for("starter-done");
    init.wait_socket();
    wait_until("the start command reaped", || {
        init.status("d")["state"] == "starting"
            && init.initctl(&["status", "d", "--json"]).status.success()
    });
    assert_eq!(
        init.status("d")["pid"],
        serde_json::Value::Null,
        "no main pid before the PID file"
    );
    std::fs::write(&go, "").unwrap();
    init.wait_for("daemon-up");
    let daemon: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    init.wait_for(&format!("d: main process {daemon}"));
    let status = init.status("d");
    assert_eq!(status["state"], "running");
    assert_eq!(status["pid"], daemon);
    // A stop reaches the daemon that left the start command's session.
    assert!(init.initctl(&["stop", "d"]).status.success());
    init.wait_for("d: stopped");
    assert!(!alive(daemon), "the daemon is gone after a stop");
    assert!(!pid_file.exists(), "its PID file is removed");
    // A start again gives one daemon, not a second copy beside a survivor
    // (`initctl start` returns once it runs: the PID file is read at once).
    assert!(init.initctl(&["start", "d"]).status.success());
    init.wait_count("daemon-up", 2);
    wait_until("running again", || init.status("d")["state"] == "running");
}

#[test]
fn a_forking_daemon_without_a_pid_file_is_guessed_or_fails_saying_why() {
    // It stays in the start command's session: the one process left.
    let unit = "[Service]\nType=forking\nExecStart=/bin/sh -c 'sh -c \"echo kept-in-session; exec sleep 1000\" </dev/null & echo starter-done'\n";
    let init = Builder::new("guess")
        .how(As::Subreaper)
        .service("g", unit)
        .start();
    init.wait_for("starter-done");
    init.wait_socket();
    wait_until("running", || init.status("g")["state"] == "running");
    let pid = init.status("g")["pid"].as_i64().unwrap() as i32;
    assert!(alive(pid));
    assert!(init.initctl(&["stop", "g"]).status.success());
    init.wait_for("g: stopped");
    assert!(!alive(pid));

    // Nothing left: the service fails with a reason that names the fix.
    let unit = "[Service]\nType=forking\nExecStart=/bin/true\n";
    let init = Builder::new("guessnone")
        .how(As::Subreaper)
        .service("n", unit)
        .start();
    init.wait_for("n: the start command (pid ");
    init.wait_for("left no process to supervise: set PIDFile=");
    init.wait_socket();
    wait_until("failed", || init.status("n")["state"] == "failed");
}

/// A daemon that reports the signals it gets, and a child in its group.
const TRAPPING: &str = "[Service]\nExecStart=/bin/sh -c 'trap \"echo got-hup\" HUP; trap \"echo got-usr1\" USR1; \
     sh -c \"trap \\\\\"echo child-usr1\\\\\" USR1; echo child-up; while :; do sleep 0.05; done\" & echo up; while :; do sleep 0.05; done'\n";

#[test]
fn initctl_reload_name_runs_exec_reload_with_mainpid() {
    let unit = format!("{TRAPPING}ExecReload=/bin/kill -HUP $MAINPID\n");
    let init = Builder::new("reloadname")
        .service("d", &unit)
        .service("plain", "ExecStart = \"sleep 1000\"\n")
        .start();
    init.wait_for("child-up");
    init.wait_socket();
    let out = init.initctl(&["reload", "d"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "d: reloaded");
    init.wait_for("got-hup");
    init.wait_for("d: reloaded");
    assert_eq!(init.status("d")["state"], "running");
    // No ExecReload: refused, saying why.
    let out = init.initctl(&["reload", "plain"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("plain has no ExecReload= to reload it with"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A failing ExecReload is an error for initctl; the service runs on.
    let unit = format!("{TRAPPING}ExecReload=/bin/sh -c 'echo bad config; exit 3'\n");
    let init = Builder::new("reloadfail").service("d", &unit).start();
    init.wait_for("child-up");
    init.wait_socket();
    let out = init.initctl(&["reload", "d"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("d: reload failed: ExecReload 1 exited with status 3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(init.status("d")["state"], "running");
}

#[test]
fn initctl_kill_signals_the_main_process_or_all() {
    let init = Builder::new("kill").service("d", TRAPPING).start();
    init.wait_for("child-up");
    init.wait_socket();
    let out = init.initctl(&["kill", "d", "--signal", "USR1", "--main"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "d: SIGUSR1 sent to its main process"
    );
    init.wait_for("got-usr1");
    let out = init.initctl(&["kill", "d", "-s", "SIGUSR1"]);
    assert!(out.status.success());
    init.wait_for("child-usr1");
    init.wait_count("got-usr1", 2);
    assert_eq!(
        init.count("child-usr1"),
        1,
        "--main reached the main process only"
    );
    let out = init.initctl(&["kill", "d", "-s", "SIGNOPE"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown signal \"SIGNOPE\""));
    let out = init.initctl(&["kill", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such service: nope"));
    assert!(init.initctl(&["stop", "d"]).status.success());
    let out = init.initctl(&["kill", "d"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("d is stopped: no main process to signal"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn initctl() -> String {
    common::initctl_bin().display().to_string()
}

#[test]
fn the_watchdog_restarts_a_service_that_stops_pinging() {
    let unit = format!(
        "[Service]\nType=notify\nWatchdogSec=1\nRestart=on-watchdog\nRestartSec=0\n\
         ExecStart=/bin/sh -c 'echo \"usec=$WATCHDOG_USEC\"; {i} notify --ready; \
         for n in 1 2 3; do {i} notify WATCHDOG=1; sleep 0.2; done; echo stopped-pinging; exec sleep 1000'\n",
        i = initctl()
    );
    let init = Builder::new("watchdog").service("w", &unit).start();
    init.wait_for("usec=1000000");
    init.wait_for("stopped-pinging");
    init.wait_for("w: watchdog timeout: sending SIGABRT to its processes");
    init.wait_for("w: main process killed by SIGABRT");
    init.wait_for("w: restarting in");
    init.wait_count("usec=1000000", 2);
}

#[test]
fn mainpid_hands_the_service_to_the_process_its_wrapper_started() {
    let unit = format!(
        "[Service]\nType=notify\nExecStart=/bin/sh -c 'sleep 1000 & echo daemon=$!; {i} notify --ready MAINPID=$!; echo wrapper-done'\n",
        i = initctl()
    );
    let init = Builder::new("mainpid")
        .how(As::Subreaper)
        .service("m", &unit)
        .start();
    let line = init.line_with("daemon=");
    let daemon: i32 = line.rsplit('=').next().unwrap().trim().parse().unwrap();
    init.wait_for(&format!("m: main process is now {daemon} (MAINPID, was "));
    init.wait_for("wrapper-done");
    init.wait_socket();
    wait_until("running with the daemon as its main process", || {
        let s = init.status("m");
        s["state"] == "running" && s["pid"] == daemon
    });
    assert!(init.initctl(&["stop", "m"]).status.success());
    init.wait_for("m: stopped");
    assert!(!alive(daemon));
}

/// A cgroup2 hierarchy for a test: the machine's, or one mounted for it.
fn cgroup2_root(tag: &str) -> (std::path::PathBuf, Option<std::path::PathBuf>) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let existing = mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&"cgroup2"))
        .map(|f| std::path::PathBuf::from(f[1]));
    let (base, mounted) = match existing {
        Some(path) => (path, None),
        None => {
            let dir = std::env::temp_dir().join(format!("ei-cg2-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let ok = std::process::Command::new("mount")
                .args(["-t", "cgroup2", "none"])
                .arg(&dir)
                .status()
                .unwrap()
                .success();
            assert!(ok, "this test needs cgroup2 (mount -t cgroup2 failed)");
            (dir.clone(), Some(dir))
        }
    };
    let root = base.join(format!("ei-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    (root, mounted)
}

#[test]
fn notify_access_all_takes_readiness_from_a_helper_that_left_the_session() {
    let (cgroups, mounted) = cgroup2_root("notify");
    // The helper calls setsid: neither the main process, nor its group,
    // nor its session; only the service's cgroup says it is the service's.
    let unit = |access: &str| {
        format!(
            "[Service]\nType=notify\nNotifyAccess={access}\nTimeoutStartSec=3\n\
             ExecStart=/bin/sh -c 'setsid {i} notify --ready; echo helper-sent; exec sleep 1000'\n",
            i = initctl()
        )
    };
    let init = Builder::new("notifyall")
        .env(
            "ENCLAVE_INIT_TEST_CGROUP_ROOT",
            &cgroups.display().to_string(),
        )
        .service("all", &unit("all"))
        .service("main", &unit("main"))
        .start();
    init.wait_for("all: ready");
    init.wait_for("main: not ready within TimeoutStartSec=3s");
    init.wait_socket();
    assert_eq!(init.status("all")["state"], "running");
    assert!(init.initctl(&["stop", "all"]).status.success());
    drop(init);
    for dir in ["all.service", "main.service", ""] {
        let _ = std::fs::remove_dir(cgroups.join(dir));
    }
    if let Some(dir) = mounted {
        let _ = std::process::Command::new("umount").arg(&dir).status();
        let _ = std::fs::remove_dir(&dir);
    }
}

#[test]
fn exec_start_post_and_exec_stop_post_run_with_what_systemd_gives_them() {
    let unit = |main: &str| {
        format!(
            "[Service]\nExecStart=/bin/sh -c '{main}'\n\
             ExecStartPost=/bin/sh -c 'echo \"post-start main=$MAINPID\"'\n\
             ExecStopPost=/bin/sh -c 'echo \"post-stop $SERVICE_RESULT $EXIT_CODE $EXIT_STATUS\"'\n"
        )
    };
    let init = Builder::new("posts")
        .service("up", &unit("echo main-up; exec sleep 1000"))
        .service("bad", &unit("exit 3"))
        .start();
    let main = common::started_pid(&init, "up", 1);
    init.wait_for(&format!("post-start main={main}"));
    init.wait_for("post-stop exit-code exited 3");
    init.wait_socket();
    wait_until("up running", || init.status("up")["state"] == "running");
    assert_eq!(init.status("bad")["state"], "failed");
    assert!(init.initctl(&["stop", "up"]).status.success());
    // (Its order against init's "stopped" is the lifecycle's, tested
    // there: a service's output and init's own lines are read apart.)
    init.wait_for("post-stop success killed TERM");
    init.wait_for("up: stopped");
}

// ---- review findings ----

#[test]
fn review1_a_forking_start_that_leaves_nothing_fails_at_once_even_without_timeouts() {
    // TimeoutSec=0: no deadline would ever end the wait for the PID file,
    // nor the stop of an already empty group.
    let b = Builder::new("forknothing");
    let pid_file = b.dir().join("never.pid");
    let unit = format!(
        "[Service]\nType=forking\nTimeoutSec=0\nPIDFile={}\nExecStart=-/bin/sh -c 'echo starter; exit 1'\n",
        pid_file.display()
    );
    let init = b.service("f", &unit).start();
    init.wait_for("f: the start command (pid ");
    init.wait_for("was not written and no process is left");
    init.wait_socket();
    wait_until("failed", || init.status("f")["state"] == "failed");
}

#[test]
fn review4_a_pid_file_cannot_hand_another_services_process_to_this_one() {
    let b = Builder::new("pidthief");
    let (victim_pid, thief_pid) = (b.dir().join("victim.pid"), b.dir().join("thief.pid"));
    let victim = format!(
        // `$$$$`: systemd's `$$` is one `$`, so the shell sees `$$`.
        "[Service]\nExecStart=/bin/sh -c 'echo $$$$ > {}; exec sleep 1000'\n",
        victim_pid.display()
    );
    let thief = format!(
        "[Unit]\nAfter=victim.service\n[Service]\nType=forking\nPIDFile={}\n\
         ExecStart=/bin/sh -c 'while [ ! -s {v} ]; do sleep 0.02; done; cp {v} {t}; sleep 1000 & exit 0'\n",
        thief_pid.display(),
        v = victim_pid.display(),
        t = thief_pid.display()
    );
    let init = b
        .service("victim", &victim)
        .service("thief", &thief)
        .start();
    init.wait_for("is a process of service victim");
    init.wait_socket();
    wait_until("thief failed", || init.status("thief")["state"] == "failed");
    assert_eq!(init.status("victim")["state"], "running");
    let victim_main = init.status("victim")["pid"].clone();
    // What the thief left is stopped; the victim is not touched.
    let _ = init.initctl(&["stop", "thief"]);
    assert_eq!(init.status("victim")["state"], "running");
    assert_eq!(init.status("victim")["pid"], victim_main, "untouched");
}

#[test]
fn review6_sigkill_reaches_every_cgroup_member_without_cgroup_kill() {
    // A hierarchy without cgroup.kill (kernels before 5.14): cgroup.procs is
    // a plain file here, so joining it lists the process, as the kernel's
    // would; the escaped process lists itself the same way.
    let cgroups = common::TempDir::new("nokill-cgroups");
    let dir = cgroups.path().join("stubborn.service");
    std::fs::create_dir_all(&dir).unwrap();
    let procs = dir.join("cgroup.procs");
    std::fs::write(&procs, "").unwrap();
    let unit = format!(
        "ExecStart = [\"sh\", \"-c\", \"trap '' TERM; setsid sh -c 'trap \\\"\\\" TERM; printf \\\"\\\\n%s\\\\n\\\" $$ >> {p}; echo escaped; while :; do sleep 0.05; done' & while :; do sleep 0.05; done\"]\nTimeoutStopSec = 0.3\n",
        p = procs.display()
    );
    let init = Builder::new("nokill")
        .how(As::Subreaper)
        .env(
            "ENCLAVE_INIT_TEST_CGROUP_ROOT",
            &cgroups.path().display().to_string(),
        )
        .service("stubborn", &unit)
        .start();
    init.wait_for("escaped");
    let members: Vec<i32> = std::fs::read_to_string(&procs)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(members.len() >= 2, "{members:?}");
    init.wait_socket();
    assert!(init.initctl(&["stop", "stubborn"]).status.success());
    for pid in members {
        wait_until("every member killed", || !alive(pid));
    }
}

#[test]
fn review12_runtime_directories_never_follow_a_link() {
    let tag = format!("ei-link-{}", std::process::id());
    let state = Path::new("/var/lib").join(&tag);
    let target = common::TempDir::new("link-target");
    std::fs::set_permissions(target.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    std::os::unix::fs::symlink(target.path(), state.join("sub")).unwrap();
    let unit = format!(
        "[Service]\nUser=nobody\nStateDirectory={tag}/sub\nStateDirectoryMode=0777\nExecStart=/bin/true\n"
    );
    let init = Builder::new("dirlink").service("l", &unit).start();
    init.wait_for(&format!("StateDirectory /var/lib/{tag}/sub: "));
    init.wait_socket();
    wait_until("failed", || init.status("l")["state"] == "failed");
    let meta = std::fs::metadata(target.path()).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o700,
        "the link's target is untouched"
    );
    assert_eq!(meta.uid(), 0);
    let _ = std::fs::remove_dir_all(&state);
}
