//! Dependencies, readiness and one-shot jobs, with the real binary
//! (issue: dependencies, readiness and one-shot jobs).

mod common;

use std::os::unix::net::UnixDatagram;

use common::{initctl_bin, wait_until, Builder, Init};

fn notify_cmd(extra: &str) -> String {
    format!("{} notify {extra}", initctl_bin().display())
}

fn at(init: &Init, needle: &str) -> usize {
    init.wait_for(needle);
    init.lines()
        .iter()
        .position(|l| l.contains(needle))
        .unwrap()
}

#[test]
fn oneshot_setup_gates_the_server() {
    let init = Builder::new("oneshot")
        .service("setup", "Type = \"oneshot\"\nRemainAfterExit = true\nExecStart = \"sh -c 'sleep 0.3; echo setup-done'\"\n")
        .service("server", "Requires = [\"setup\"]\nExecStart = \"sh -c 'echo server-up; exec sleep 1000'\"\n")
        .start();
    assert!(at(&init, "setup-done") < at(&init, "server-up"));
    assert!(at(&init, "setup: main process exited with status 0") < at(&init, "server: started"));
    init.wait_socket();
    let setup = init.status("setup");
    assert_eq!(setup["state"], "exited");
    assert_eq!(init.status("server")["state"], "running");
}

#[test]
fn a_failing_oneshot_keeps_its_dependent_down() {
    let init = Builder::new("oneshotfail")
        .service(
            "setup",
            "Type = \"oneshot\"\nExecStart = \"sh -c 'exit 4'\"\n",
        )
        .service(
            "server",
            "Requires = [\"setup\"]\nExecStart = \"sleep 1000\"\n",
        )
        .start();
    init.wait_for("server: not started: required service setup failed");
    init.wait_socket();
    let server = init.status("server");
    assert_eq!(server["state"], "failed");
    assert_eq!(server["result"], "required service setup failed");
    assert_eq!(init.count("server: started"), 0);
}

#[test]
fn notify_dependent_starts_only_after_ready() {
    let b = Builder::new("notify");
    let go = b.dir().join("go");
    let init = b
        .service(
            "db",
            &format!(
                "Type = \"notify\"\nExecStart = [\"sh\", \"-c\", \"echo db-booting; while [ ! -e {} ]; do sleep 0.05; done; {}; echo db-notified; exec sleep 1000\"]\n",
                go.display(),
                notify_cmd("--ready --status 'accepting connections'")
            ),
        )
        .service("client", "Requires = [\"db\"]\nExecStart = \"sh -c 'echo client-up; exec sleep 1000'\"\n")
        .start();
    init.wait_for("db-booting");
    init.wait_socket();
    let db = init.status("db");
    assert_eq!(db["state"], "starting", "not ready before READY=1");
    let client = init.status("client");
    assert_eq!(client["state"], "starting");
    assert_eq!(client["waiting_for"], "waiting for db: not ready");
    let text = String::from_utf8_lossy(&init.initctl(&["status", "client"]).stdout).into_owned();
    assert!(
        text.contains("Waiting: waiting for db: not ready"),
        "{text}"
    );
    assert_eq!(init.count("client: started"), 0);
    std::fs::write(&go, "").unwrap();
    assert!(at(&init, "db: ready") < at(&init, "client-up"));
    wait_until("db running", || init.status("db")["state"] == "running");
    assert_eq!(init.status("db")["status_text"], "accepting connections");
}

#[test]
fn notify_that_never_reports_times_out() {
    let init = Builder::new("notifytimeout")
        .service(
            "mute",
            "Type = \"notify\"\nExecStart = \"sleep 1000\"\nTimeoutStartSec = 0.5\n",
        )
        .service(
            "after-mute",
            "Requires = [\"mute\"]\nExecStart = \"sleep 1000\"\n",
        )
        .start();
    init.wait_for("mute: not ready within TimeoutStartSec=500ms");
    init.wait_for("mute: failed: start timed out");
    init.wait_for("after-mute: not started: required service mute failed");
}

#[test]
fn notify_messages_from_foreign_processes_and_garbage_are_ignored() {
    let init = Builder::new("foreign")
        .service(
            "svc",
            "Type = \"notify\"\nExecStart = \"sleep 1000\"\nTimeoutStartSec = 60\n",
        )
        .start();
    init.wait_for("svc: started");
    let socket = init.dir.path().join("ctl.notify");
    wait_until("notify socket", || socket.exists());
    let me = UnixDatagram::unbound().unwrap();
    me.send_to(b"READY=1\n", &socket).unwrap();
    init.wait_for("notify: ignoring a message from pid");
    init.wait_socket();
    assert_eq!(
        init.status("svc")["state"],
        "starting",
        "a foreign READY=1 must not count"
    );
    // From the service's own process, but garbage: logged, ignored.
    drop(init);
    let init = Builder::new("garbage")
        .service(
            "svc",
            "Type = \"notify\"\nExecStart = [\"python3\", \"-c\", \"import os, socket, time; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b'this is garbage', os.environ['NOTIFY_SOCKET']); s.sendto(b'\\\\xff\\\\xfe', os.environ['NOTIFY_SOCKET']); print('sent', flush=True); time.sleep(1000)\"]\n",
        )
        .start();
    init.wait_for("svc: notify: ignoring garbage from pid");
    init.wait_for("is not KEY=VALUE (15 bytes)");
    assert_eq!(
        init.count("this is garbage"),
        0,
        "a service's text is not repeated"
    );
    init.wait_for("message is not UTF-8");
    init.wait_socket();
    assert_eq!(init.status("svc")["state"], "starting");
}

#[test]
fn required_service_stopping_later_stops_the_dependent() {
    let init = Builder::new("reqstop")
        .service("db", "ExecStart = \"sleep 1000\"\n")
        .service("app", "Requires = [\"db\"]\nExecStart = \"sleep 1000\"\n")
        .service("side", "Wants = [\"db\"]\nExecStart = \"sleep 1000\"\n")
        .start();
    init.wait_for("app: started");
    init.wait_for("side: started");
    init.wait_socket();
    let out = init.initctl(&["stop", "db"]);
    assert!(out.status.success());
    // Dependents first, then db.
    assert!(at(&init, "app: stopped") < at(&init, "db: stopped"));
    assert_eq!(
        init.status("side")["state"],
        "running",
        "Wants does not stop with it"
    );
    // db dying by itself (not stopped by hand) stops app too.
    assert!(init.initctl(&["start", "app"]).status.success());
    wait_until("app running", || init.status("app")["state"] == "running");
    let db_pid = init.status("db")["pid"].as_i64().unwrap();
    // The pid is inside init's PID namespace; kill it from inside.
    let kill = std::process::Command::new("nsenter")
        .args([
            "-t",
            &init.init_pid().to_string(),
            "-p",
            "-m",
            "kill",
            "-KILL",
            &db_pid.to_string(),
        ])
        .status()
        .unwrap();
    assert!(kill.success());
    init.wait_for("db: failed: killed by SIGKILL");
    init.wait_for("app: stopping: it requires db, which is failed");
    wait_until("app stopped", || init.status("app")["state"] == "stopped");
}

#[test]
fn initctl_start_brings_requirements_along() {
    let init = Builder::new("startdeps")
        .service("db", "ExecStart = \"sleep 1000\"\n")
        .service("cache", "ExecStart = \"sleep 1000\"\n")
        .service(
            "app",
            "Requires = [\"db\"]\nWants = [\"cache\"]\nExecStart = \"sleep 1000\"\n",
        )
        .start();
    init.wait_for("app: started");
    init.wait_socket();
    assert!(init.initctl(&["stop", "db"]).status.success());
    assert!(init.initctl(&["stop", "cache"]).status.success());
    assert_eq!(init.status("app")["state"], "stopped");
    let out = init.initctl(&["start", "app"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["db", "cache", "app"] {
        assert_eq!(init.status(name)["state"], "running", "{name}");
    }
}

#[test]
fn independent_services_start_together() {
    // Ten services that each wait for all the others to have started: only
    // a parallel start lets any of them finish.
    let b = Builder::new("parallel");
    let flags = b.dir().join("flags");
    std::fs::create_dir_all(&flags).unwrap();
    let mut b = b;
    for i in 0..10 {
        b = b.service(
            &format!("s{i}"),
            &format!(
                "Type = \"oneshot\"\nExecStart = [\"sh\", \"-c\", \"touch {dir}/{i}; while [ $(ls {dir} | wc -l) -lt 10 ]; do sleep 0.05; done; echo all-up\"]\nTimeoutStartSec = 60\n",
                dir = flags.display()
            ),
        );
    }
    let init = b.start();
    init.wait_count("all-up", 10);
}

#[test]
fn shutdown_stops_in_reverse_start_order() {
    let mut init = Builder::new("order")
        .service("a", "ExecStart = \"sleep 1000\"\n")
        .service("b", "After = [\"a\"]\nExecStart = \"sleep 1000\"\n")
        .service("c", "Requires = [\"b\"]\nExecStart = \"sleep 1000\"\n")
        .service("z", "Before = [\"a\"]\nExecStart = \"sleep 1000\"\n")
        .start();
    assert!(at(&init, "z: started") < at(&init, "a: started"));
    assert!(at(&init, "a: started") < at(&init, "b: started"));
    assert!(at(&init, "b: started") < at(&init, "c: started"));
    init.signal(libc::SIGTERM);
    init.wait_exit();
    assert!(at(&init, "c: stopped") < at(&init, "b: stopped"));
    assert!(at(&init, "b: stopped") < at(&init, "a: stopped"));
    assert!(at(&init, "a: stopped") < at(&init, "z: stopped"));
}

#[test]
fn a_cycle_beside_healthy_services() {
    let init = Builder::new("cycle")
        .service("a", "After = [\"b\"]\nExecStart = \"sleep 1000\"\n")
        .service("b", "Requires = [\"c\"]\nExecStart = \"sleep 1000\"\n")
        .service("c", "Wants = [\"a\"]\nExecStart = \"sleep 1000\"\n")
        .service(
            "healthy",
            "ExecStart = \"sh -c 'echo healthy-up; exec sleep 1000'\"\n",
        )
        .service(
            "orphan",
            "Requires = [\"ghost\"]\nWants = [\"phantom\"]\nExecStart = \"sleep 1000\"\n",
        )
        .start();
    init.wait_for("healthy-up");
    for name in ["a", "b", "c"] {
        init.wait_for(&format!(
            "{name}: failed: dependency cycle: a -> b -> c -> a"
        ));
    }
    init.wait_for("orphan: failed: requires ghost, which does not exist");
    init.wait_for("warning: orphan: wants phantom, which does not exist");
    init.wait_socket();
    assert_eq!(init.status("b")["state"], "failed");
    assert_eq!(init.status("healthy")["state"], "running");
}

#[test]
fn exec_start_pre_and_exec_stop() {
    let mut init = Builder::new("prestop")
        .service(
            "svc",
            "ExecStartPre = [\"sh -c 'echo pre-one'\", \"-sh -c 'echo pre-two-fails; exit 1'\", \"sh -c 'echo pre-three'\"]\nExecStart = \"sh -c 'trap \\\"echo main-got-term; exit 0\\\" TERM; echo main-up; while true; do sleep 0.1; done'\"\nExecStop = [\"sh -c 'echo stopping $MAINPID'\"]\n",
        )
        .service("gated", "ExecStartPre = [\"sh -c 'exit 3'\"]\nExecStart = \"sh -c 'echo never'\"\n")
        .start();
    assert!(at(&init, "pre-one") < at(&init, "pre-two-fails"));
    assert!(at(&init, "pre-two-fails") < at(&init, "pre-three"));
    assert!(at(&init, "pre-three") < at(&init, "main-up"));
    init.wait_for("svc: ExecStartPre 2 exited with status 1 (ignored)");
    init.wait_for("gated: ExecStartPre 1 exited with status 3");
    init.wait_for("gated: failed: exited with status 3");
    let main_pid = common::started_pid(&init, "svc", 1);
    init.signal(libc::SIGTERM);
    init.wait_exit();
    assert!(
        at(&init, &format!("stopping {main_pid}")) < at(&init, "main-got-term"),
        "ExecStop before KillSignal"
    );
    assert_eq!(init.count("never"), 0);
}
