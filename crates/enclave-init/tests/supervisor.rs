//! The real binary, supervising real processes (issue: the supervisor).

mod common;

use std::time::Duration;

use common::{
    children_of, proc_stat, started_pid, status_field, wait_in_epoll, wait_until, As, Builder,
};

#[test]
fn tini_style_exit_codes() {
    for (argv, want) in [
        (vec!["/bin/true"], 0),
        (vec!["sh", "-c", "exit 7"], 7),
        (vec!["sh", "-c", "kill -KILL $$"], 137),
        (vec!["sh", "-c", "kill -TERM $$"], 143),
        (vec!["/nonexistent/program"], 127),
    ] {
        for how in [As::Pid1, As::Subreaper] {
            let mut init = Builder::new("tini").how(how).command(&argv).start();
            let status = init.wait_exit();
            assert_eq!(status.code(), Some(want), "{argv:?}: {}", init.output());
        }
    }
}

#[test]
fn command_output_and_stdin_pass_through() {
    let mut init = Builder::new("passthru")
        .command(&["sh", "-c", "echo plain-output; echo to-stderr >&2"])
        .start();
    init.wait_exit();
    let out = init.lines();
    assert!(out.iter().any(|l| l == "plain-output"), "{out:?}");
    assert!(out.iter().any(|l| l == "to-stderr"), "{out:?}");
}

#[test]
fn output_is_prefixed_with_service_and_pid() {
    let init = Builder::new("prefix")
        .service("talk", "ExecStart = [\"sh\", \"-c\", \"echo one; echo two >&2; printf 'no newline'; exec sleep 1000\"]")
        .start();
    let pid = started_pid(&init, "talk", 1);
    init.wait_for(&format!("talk[{pid}]: one"));
    init.wait_for(&format!("talk[{pid}]: two"));
    drop(init);
    // The partial last line appears when the pipe closes.
    let mut init = Builder::new("prefix2")
        .service(
            "partial",
            "ExecStart = [\"sh\", \"-c\", \"printf 'no newline'\"]",
        )
        .start();
    let pid = started_pid(&init, "partial", 1);
    init.wait_for(&format!("partial[{pid}]: no newline"));
    init.signal(libc::SIGTERM);
    init.wait_exit();
}

#[test]
fn restart_on_failure_waits_restart_sec() {
    // The gaps are measured by the service itself (its own exec times),
    // not by when its lines reach the test: a reader delayed by a loaded
    // machine would shrink them.
    let b = Builder::new("restart");
    let stamps = b.dir().join("stamps");
    let init = b
        .service(
            "crash",
            &format!(
                "ExecStart = [\"sh\", \"-c\", \"date +%s%N >> {}; echo run; exit 3\"]\nRestart = \"on-failure\"\nRestartSec = 0.3\nStartLimitIntervalSec = 0\n",
                stamps.display()
            ),
        )
        .start();
    init.wait_count("crash: started (pid", 4);
    init.wait_count("crash[", 4);
    for gap in exec_gaps(&stamps) {
        assert!(
            gap >= Duration::from_millis(300),
            "restarted after {gap:?}, before RestartSec"
        );
    }
    assert!(init
        .output()
        .contains("crash: restarting in 300ms (restart 1)"));
}

/// The gaps between the exec times a service wrote to `stamps` (one
/// `date +%s%N` a line).
fn exec_gaps(stamps: &std::path::Path) -> Vec<Duration> {
    let times: Vec<u128> = std::fs::read_to_string(stamps)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    times
        .windows(2)
        .map(|w| Duration::from_nanos((w[1] - w[0]) as u64))
        .collect()
}

#[test]
fn restart_policies_follow_the_exit_cause() {
    let init = Builder::new("policies")
        .service("clean-on-failure", "ExecStart = \"/bin/true\"\nRestart = \"on-failure\"\n")
        .service("clean-always", "ExecStart = \"/bin/true\"\nRestart = \"always\"\nRestartSec = 0\nStartLimitBurst = 3\n")
        .service("dirty-on-success", "ExecStart = \"/bin/false\"\nRestart = \"on-success\"\n")
        .service("signal-on-abort", "ExecStart = \"sh -c 'kill -ABRT $$'\"\nRestart = \"on-abort\"\nRestartSec = 0\nStartLimitBurst = 2\n")
        .service("code-on-abnormal", "ExecStart = \"sh -c 'exit 4'\"\nRestart = \"on-abnormal\"\n")
        .start();
    init.wait_for("clean-always: failed: start limit hit");
    init.wait_for("signal-on-abort: failed: start limit hit");
    init.wait_for("clean-on-failure: main process exited with status 0");
    init.wait_for("dirty-on-success: failed: exited with status 1");
    init.wait_for("code-on-abnormal: failed: exited with status 4");
    assert_eq!(init.count("clean-on-failure: started"), 1);
    assert_eq!(init.count("clean-always: started"), 3);
    assert_eq!(init.count("signal-on-abort: started"), 2);
    assert_eq!(init.count("dirty-on-success: started"), 1);
    assert_eq!(init.count("code-on-abnormal: started"), 1);
}

#[test]
fn start_limit_fails_the_service_and_keeps_it_down() {
    let init = Builder::new("limit")
        .service("crash", "ExecStart = \"/bin/false\"\nRestart = \"always\"\nRestartSec = 0\nStartLimitBurst = 4\nStartLimitIntervalSec = 60\n")
        .service(
            "ticker",
            "ExecStart = [\"sh\", \"-c\", \"while true; do echo tick; sleep 0.05; done\"]\n",
        )
        .start();
    init.wait_for("crash: start limit hit: more than 4 starts within 1min");
    init.wait_for("crash: failed: start limit hit");
    assert_eq!(init.count("crash: started"), 4);
    // Still down: ten ticks printed after the failure prove that time
    // passed (far more than RestartSec=0 would need to start it again).
    let mut mark = init.mark();
    for _ in 0..10 {
        mark = init.wait_after(mark, "ticker[") + 1;
    }
    assert_eq!(init.count("crash: started"), 4);
}

#[test]
fn restart_backoff_grows() {
    let b = Builder::new("backoff");
    let stamps = b.dir().join("stamps");
    let init = b
        .service(
            "crash",
            &format!(
                "ExecStart = [\"sh\", \"-c\", \"date +%s%N >> {}; exit 1\"]\nRestart = \"always\"\nRestartSec = 0.1\nRestartSteps = 3\nRestartMaxDelaySec = 0.8\nStartLimitIntervalSec = 0\n",
                stamps.display()
            ),
        )
        .start();
    init.wait_count("crash: started", 6);
    let out = init.output();
    for want in [
        "restarting in 100ms (restart 1)",
        "restarting in 200ms (restart 2)",
        "restarting in 400ms (restart 3)",
        "restarting in 800ms (restart 4)",
    ] {
        assert!(out.contains(want), "missing {want:?}:\n{out}");
    }
    // Exec times as the service saw them (not when lines reached us).
    let gaps = exec_gaps(&stamps);
    for (gap, at_least) in gaps.iter().zip([100, 200, 400, 800]) {
        assert!(
            *gap >= Duration::from_millis(at_least),
            "{gap:?} < {at_least} ms: {gaps:?}"
        );
    }
}

#[test]
fn environment_and_working_directory() {
    let b = Builder::new("env");
    let env_file = b.dir().join("app.env");
    std::fs::write(&env_file, "FROM_FILE=yes\nOVERRIDE=file\n").unwrap();
    let work = b.dir().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let init = b
        .env("BASE_VAR", "from-init")
        .env("OVERRIDE", "base")
        .service(
            "show",
            &format!(
                "ExecStart = [\"sh\", \"-c\", \"echo base=$BASE_VAR file=$FROM_FILE over=$OVERRIDE svc=$SVC pwd=$(pwd) path=$PATH; sleep 1000\"]\nEnvironment = [\"SVC=1\", \"OVERRIDE=svc\"]\nEnvironmentFile = \"{}\"\nWorkingDirectory = \"{}\"\n",
                env_file.display(),
                work.display()
            ),
        )
        .start();
    let line = init.line_with("base=");
    assert!(line.contains("base=from-init"), "{line}");
    assert!(line.contains("file=yes"), "{line}");
    assert!(
        line.contains("over=file"),
        "EnvironmentFile overrides Environment: {line}"
    );
    assert!(line.contains("svc=1"), "{line}");
    assert!(line.contains(&format!("pwd={}", work.display())), "{line}");
}

#[test]
fn default_path_when_the_environment_has_none() {
    let mut init = Builder::new("path")
        .env_remove("PATH")
        .service(
            "p",
            "ExecStart = \"/bin/sh -c 'echo path=$PATH; exec sleep 1000'\"",
        )
        .start();
    let line = init.line_with("path=");
    assert!(
        line.ends_with("path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        "{line}"
    );
    init.signal(libc::SIGTERM);
    init.wait_exit();
}

#[test]
fn user_group_and_rlimits() {
    let init = Builder::new("user")
        .service(
            "limited",
            "ExecStart = \"sh -c 'echo uid=$(id -u) gid=$(id -g) nofile=$(ulimit -n) core=$(ulimit -c) user=$USER home=$HOME; exec sleep 1000'\"\nUser = \"nobody\"\nGroup = \"nogroup\"\nLimitNOFILE = 123\nLimitCORE = \"0:infinity\"\n",
        )
        .service("numeric", "ExecStart = \"sh -c 'echo numeric uid=$(id -u) gid=$(id -g); exec sleep 1000'\"\nUser = 4321\n")
        .start();
    let line = init.line_with("nofile=");
    let nobody = "65534";
    assert!(line.contains(&format!("uid={nobody}")), "{line}");
    assert!(line.contains("nofile=123"), "{line}");
    assert!(line.contains("core=0"), "{line}");
    assert!(line.contains("user=nobody"), "{line}");
    let numeric = init.line_with("numeric uid=");
    assert!(numeric.contains("numeric uid=4321 gid=4321"), "{numeric}");
}

#[test]
fn unknown_user_is_a_failed_start_with_a_reason() {
    let init = Builder::new("nouser")
        .service(
            "ghost",
            "ExecStart = \"/bin/true\"\nUser = \"no-such-user-here\"\n",
        )
        .start();
    init.wait_for("ghost: User no-such-user-here: no such user in /etc/passwd");
    init.wait_for("ghost: failed:");
}

#[test]
fn process_hygiene_seen_from_outside() {
    // A leaked descriptor in init's own environment must not reach services.
    let init = Builder::new("hygiene")
        .how(As::Subreaper)
        .service("h", "ExecStart = \"sleep 1000\"\n")
        .start();
    let pid = started_pid(&init, "h", 1);
    // Exec is done, but the dynamic loader may still hold a library open:
    // look once `sleep` sleeps (x86_64: nanosleep 35, clock_nanosleep 230).
    wait_until("the service to sleep", || {
        let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        matches!(syscall.split_whitespace().next(), Some("35" | "230"))
    });
    let (_, _, pgid, sid) = proc_stat(pid).unwrap();
    assert_eq!((pgid, sid), (pid, pid), "own session and process group");
    assert_eq!(
        status_field(pid, "SigBlk"),
        "0000000000000000",
        "empty signal mask"
    );
    assert_eq!(
        status_field(pid, "SigIgn"),
        "0000000000000000",
        "default dispositions"
    );
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    assert_eq!(fds, ["0", "1", "2"], "only stdin, stdout, stderr");
    let stdin = std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap();
    assert_eq!(stdin, std::path::Path::new("/dev/null"));
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        env.split(|b| *b == 0).any(|v| v.starts_with(b"PATH=")),
        "PATH set"
    );
}

#[test]
fn exec_failures_are_reported_and_others_run() {
    let b = Builder::new("execfail");
    let not_exec = b.dir().join("not-executable");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    let init = b
        .service("missing", "ExecStart = \"/nonexistent/bin/app --flag\"\n")
        .service(
            "noperm",
            &format!("ExecStart = \"{}\"\n", not_exec.display()),
        )
        .service("nopath", "ExecStart = \"no-such-program-anywhere\"\n")
        .service(
            "baddir",
            "ExecStart = \"/bin/true\"\nWorkingDirectory = \"/nonexistent/dir\"\n",
        )
        .service(
            "good",
            "ExecStart = \"sh -c 'echo good-is-running; exec sleep 1000'\"\n",
        )
        .start();
    init.wait_for("missing: exec /nonexistent/bin/app: No such file or directory");
    init.wait_for(&format!(
        "noperm: exec {}: Permission denied",
        not_exec.display()
    ));
    init.wait_for("nopath: exec no-such-program-anywhere: not found in PATH");
    init.wait_for("baddir: WorkingDirectory /nonexistent/dir: No such file or directory");
    init.wait_for("good-is-running");
    for name in ["missing", "noperm", "nopath", "baddir"] {
        init.wait_for(&format!("{name}: failed:"));
    }
}

#[test]
fn bad_service_files_beside_good_ones() {
    let b = Builder::new("badfiles");
    std::fs::create_dir_all(b.dir().join("service/adir.service")).unwrap();
    std::fs::write(b.dir().join("service/binary.service"), b"\x00\x01\x02").unwrap();
    let init = b
        .service("syntax", "ExecStart = \"/bin/true\nRestart = always\n")
        .service(
            "badvalue",
            "ExecStart = \"/bin/true\"\nRestart = \"sometimes\"\n",
        )
        .service(
            "typo",
            "ExecStart = \"sh -c 'echo typo-runs; exec sleep 1000'\"\nRestrat = \"always\"\n",
        )
        .service("empty", "")
        .service(
            "good",
            "ExecStart = \"sh -c 'echo good-runs; exec sleep 1000'\"\n",
        )
        .start();
    init.wait_for("good-runs");
    init.wait_for("typo-runs");
    let out = init.output();
    let svc = init.dir.path().join("service");
    for want in [
        format!(
            "error: {}/badvalue.service:2: key Restart: invalid value \"sometimes\"",
            svc.display()
        ),
        format!(
            "warning: {}/typo.service:2: key Restrat: unknown key, ignored (did you mean Restart?)",
            svc.display()
        ),
        format!("error: {}/empty.service: empty file", svc.display()),
        format!("error: {}/adir.service: is a directory", svc.display()),
        format!("error: {}/binary.service: binary file", svc.display()),
        format!("error: {}/syntax.service:1:", svc.display()),
        "not loaded (see above): adir, badvalue, binary, empty, syntax".to_string(),
    ] {
        assert!(out.contains(&want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn orphans_are_reaped_at_once() {
    // Hundreds of orphans re-parented to init; none may stay a zombie.
    for how in [As::Pid1, As::Subreaper] {
        let init = Builder::new("orphans")
            .how(how)
            .service(
                "spawner",
                "ExecStart = [\"sh\", \"-c\", \"for i in $(seq 300); do (sleep 0.05 &) ; done; echo spawned; exec sleep 1000\"]\nKillMode = \"process\"\n",
            )
            .start();
        init.wait_for("spawned");
        let init_pid = init.init_pid();
        let spawner = started_pid(&init, "spawner", 1);
        let host_spawner = if how == As::Subreaper { spawner } else { 0 };
        wait_until("all orphans reaped", || {
            let kids = children_of(init_pid);
            let zombies = kids
                .iter()
                .filter(|p| proc_stat(**p).is_some_and(|(s, ..)| s == 'Z'))
                .count();
            zombies == 0
                && kids.iter().all(|p| *p == host_spawner || how == As::Pid1)
                && kids.len() <= 1
        });
        let reaped = init.count("reaped orphan");
        assert_eq!(reaped, 0, "orphan reaping is logged at debug level only");
    }
}

#[test]
fn sigterm_stops_everything_with_escalation_and_group_kill() {
    let mut init = Builder::new("shutdown")
        .how(As::Subreaper)
        .service(
            "stubborn",
            "ExecStart = [\"sh\", \"-c\", \"trap 'echo ignoring TERM' TERM; echo ready; while true; do sleep 0.1; done\"]\nTimeoutStopSec = 1\n",
        )
        .service("family", "ExecStart = [\"sh\", \"-c\", \"sleep 1000 & echo child=$!; wait\"]\n")
        .start();
    init.wait_for("ready");
    let child_line = init.line_with("child=");
    let child: i32 = child_line.rsplit("child=").next().unwrap().parse().unwrap();
    assert!(proc_stat(child).is_some());
    init.signal(libc::SIGTERM);
    let status = init.wait_exit();
    assert_eq!(status.code(), Some(0));
    let out = init.output();
    assert!(
        out.contains("shutting down (exit 0): received SIGTERM"),
        "{out}"
    );
    assert!(out.contains("ignoring TERM"), "{out}");
    assert!(
        out.contains("stubborn: still running 1s after SIGTERM; sending SIGKILL"),
        "{out}"
    );
    assert!(
        out.contains("stubborn: main process killed by SIGKILL"),
        "{out}"
    );
    assert!(out.contains("family: stopped"), "{out}");
    assert!(out.contains("exiting with status 0"), "{out}");
    assert!(
        proc_stat(child).is_none_or(|(s, ..)| s == 'Z'),
        "the background child got the signal too"
    );
}

#[test]
fn sigint_and_sigpwr_also_shut_down() {
    for signal in [libc::SIGINT, libc::SIGPWR] {
        let mut init = Builder::new("sigs")
            .service("s", "ExecStart = \"sleep 1000\"\n")
            .start();
        init.wait_for("s: started");
        init.signal(signal);
        assert_eq!(init.wait_exit().code(), Some(0), "{}", init.output());
        assert!(init.output().contains("shutting down"));
    }
}

#[test]
fn kill_signal_is_used() {
    let mut init = Builder::new("killsig")
        .service(
            "usr1",
            "ExecStart = [\"sh\", \"-c\", \"trap 'echo got USR1; exit 0' USR1; trap 'echo got TERM' TERM; echo ready; while true; do sleep 0.1; done\"]\nKillSignal = \"SIGUSR1\"\n",
        )
        .start();
    init.wait_for("ready");
    init.signal(libc::SIGTERM);
    init.wait_exit();
    let out = init.output();
    assert!(out.contains("got USR1"), "{out}");
    assert!(!out.contains("got TERM"), "{out}");
}

#[test]
fn success_and_failure_actions_exit() {
    let mut init = Builder::new("actions")
        .service(
            "job",
            "ExecStart = \"sh -c 'exit 0'\"\nSuccessAction = \"exit\"\n",
        )
        .service("other", "ExecStart = \"sleep 1000\"\n")
        .start();
    assert_eq!(init.wait_exit().code(), Some(0));
    assert!(init
        .output()
        .contains("service job ended: its action is exit (status 0)"));
    let mut init = Builder::new("actions2")
        .service(
            "job",
            "ExecStart = \"sh -c 'exit 9'\"\nFailureAction = \"exit\"\n",
        )
        .service("other", "ExecStart = \"sleep 1000\"\n")
        .start();
    assert_eq!(init.wait_exit().code(), Some(9), "{}", init.output());
    assert!(init.output().contains("other: stopped"));
}

#[test]
fn no_wakeups_when_idle() {
    let mut b = Builder::new("idle").how(As::Subreaper);
    for i in 0..10 {
        b = b.service(&format!("sleeper{i}"), "ExecStart = \"sleep 100000\"\n");
    }
    let init = b.start();
    init.wait_count(": started (pid", 10);
    let pid = init.init_pid();
    let switches = || -> u64 {
        ["voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"]
            .iter()
            .map(|k| status_field(pid, k).parse::<u64>().unwrap())
            .sum()
    };
    // Let the start-up settle: wait until init sleeps in an epoll wait.
    wait_in_epoll(pid);
    let before = switches();
    // A measurement window, not a synchronisation: nothing should happen.
    std::thread::sleep(Duration::from_secs(2));
    let after = switches();
    assert_eq!(
        after - before,
        0,
        "init woke up {} times while idle",
        after - before
    );
}

#[test]
fn last_words_at_shutdown_are_not_lost() {
    // Everything a service says while it stops reaches the console before
    // init exits. The talker enlarges its pipe to 1 MiB (F_SETPIPE_SZ), so
    // that its 6,000 last lines of 100 bytes fit in the pipe at once and it
    // exits without waiting for init to read them: only init's final drain
    // (after the talker is reaped) can bring them all to the console.
    let talker = r#"
import fcntl, os, signal, time
F_SETPIPE_SZ = 1031
fcntl.fcntl(1, F_SETPIPE_SZ, 1 << 20)
lines = "".join("bye-%05d-%090d\n" % (i, 0) for i in range(1, 6001)).encode()
def bye(*_):
    os.write(1, lines)
    os._exit(0)
signal.signal(signal.SIGTERM, bye)
print("armed", flush=True)
while True:
    time.sleep(1)
"#;
    let mut init = Builder::new("lastwords")
        .service(
            "talker",
            &format!("ExecStart = [\"python3\", \"-c\", '''{talker}''']\n"),
        )
        .start();
    init.wait_for("armed");
    init.signal(libc::SIGTERM);
    assert_eq!(init.wait_exit().code(), Some(0));
    let lines = init.lines();
    let seen = lines.iter().filter(|l| l.contains("]: bye-")).count();
    // The console may drop lines when the reader is slow, but says how many.
    let dropped: usize = lines
        .iter()
        .filter_map(|l| l.split("console too slow: ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<usize>().ok())
        .sum();
    assert_eq!(
        seen + dropped,
        6000,
        "{seen} seen + {dropped} dropped: lines lost at shutdown"
    );
}

/// With nothing running, a shutdown has nothing to wait for: it ends at
/// once. (It used to wait for a SIGCHLD that never comes, then SIGKILL
/// nothing and claim that processes survived it, 15 s later.)
#[test]
fn a_shutdown_with_nothing_running_ends_at_once_and_claims_no_survivors() {
    let dir = common::TempDir::new("empty-dir");
    let mut init = Builder::new("shutdown-empty")
        .config(&format!("[services]\ndir = \"{}\"\n", dir.path().display()))
        .start();
    init.wait_for("no services to supervise");
    init.signal(libc::SIGTERM);
    assert_eq!(init.wait_exit().code(), Some(0), "{}", init.output());
    assert_eq!(init.count("still running"), 0, "{}", init.output());
    assert_eq!(init.count("survive SIGKILL"), 0, "{}", init.output());
}
