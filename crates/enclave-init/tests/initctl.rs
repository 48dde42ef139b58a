//! initctl against the real init (issue: initctl, control socket, logs, reload).

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{started_pid, wait_until, Builder, Init};

fn json(init: &Init, args: &[&str]) -> serde_json::Value {
    let out = init.initctl(args);
    assert!(
        out.status.success(),
        "initctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn wait_state(init: &Init, name: &str, state: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_until(&format!("{name} {state}"), || {
        last = init.status(name);
        last["state"] == state
    });
    last
}

fn basic() -> Init {
    let init = Builder::new("ctl")
        .service("web", "ExecStart = \"sh -c 'echo web-up; exec sleep 1000'\"\n")
        .service("crash", "ExecStart = \"sh -c 'exit 3'\"\nRestart = \"on-failure\"\nRestartSec = 0\nStartLimitBurst = 2\n")
        .start();
    init.wait_for("web-up");
    init.wait_for("crash: failed: start limit hit");
    init.wait_socket();
    init
}

#[test]
fn list_and_status_json_fields() {
    let init = basic();
    let list = json(&init, &["list", "--json"]);
    let services = list.as_array().unwrap();
    assert_eq!(services.len(), 2);
    let web = services.iter().find(|s| s["name"] == "web").unwrap();
    assert_eq!(web["state"], "running");
    assert!(web["pid"].as_i64().unwrap() > 1);
    assert_eq!(web["restarts"], 0);
    assert!(web["last_exit"].is_null());
    let crash = services.iter().find(|s| s["name"] == "crash").unwrap();
    assert_eq!(crash["state"], "failed");
    assert!(crash["pid"].is_null());
    assert_eq!(
        crash["restarts"], 1,
        "the restart the limit refused does not count"
    );
    assert_eq!(crash["last_exit"], serde_json::json!({"code": 3}));
    assert_eq!(crash["result"], "start limit hit");
    let status = init.status("web");
    for key in [
        "name",
        "state",
        "pid",
        "restarts",
        "last_exit",
        "since",
        "type",
        "command",
    ] {
        assert!(status.get(key).is_some(), "status lacks {key}: {status}");
    }
    assert_eq!(status["recent"][0]["text"], "web-up");
    // Human forms.
    let text = stdout(&init.initctl(&["list"]));
    assert!(text.starts_with("NAME"), "{text}");
    assert!(
        text.contains("crash") && text.contains("failed") && text.contains("code 3"),
        "{text}"
    );
    let text = stdout(&init.initctl(&["status", "crash"]));
    assert!(text.contains("crash - failed"), "{text}");
    assert!(text.contains("Result: start limit hit"), "{text}");
    assert!(
        text.contains("Last exit: exited with status 3 (failure)"),
        "{text}"
    );
}

#[test]
fn stop_start_restart_change_pids() {
    let init = basic();
    let first = init.status("web")["pid"].as_i64().unwrap();
    let out = init.initctl(&["stop", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "web: stopped",
        "stop answers once the service is down"
    );
    assert_eq!(init.status("web")["state"], "stopped");
    let out = init.initctl(&["start", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let second = wait_state(&init, "web", "running")["pid"].as_i64().unwrap();
    assert_ne!(first, second);
    let out = init.initctl(&["restart", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let third = wait_state(&init, "web", "running")["pid"].as_i64().unwrap();
    assert_ne!(second, third);
    // Unknown names are errors naming them.
    let out = init.initctl(&["start", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).trim(), "initctl: no such service: nope");
}

#[test]
fn stop_reports_a_service_that_will_not_die_until_sigkill() {
    let init = Builder::new("ctlstop")
        .service("stubborn", "ExecStart = [\"sh\", \"-c\", \"trap '' TERM; echo armed; while true; do sleep 0.1; done\"]\nTimeoutStopSec = 0.5\n")
        .start();
    init.wait_for("armed");
    init.wait_socket();
    let out = init.initctl(&["stop", "stubborn"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "stubborn: stopped");
    // The reply can overtake init's log line on its way to the test.
    init.wait_for("stubborn: still running 500ms after SIGTERM; sending SIGKILL");
}

#[test]
fn start_clears_failed() {
    let init = basic();
    assert_eq!(init.status("crash")["state"], "failed");
    let out = init.initctl(&["start", "crash"]);
    // Started (a simple service is up once exec'd), then it fails again:
    // two more runs, so the start limit was fresh.
    assert!(out.status.success(), "{}", stderr(&out));
    init.wait_count("crash: started", 4);
    init.wait_count("crash: failed: start limit hit", 2);
}

#[test]
fn logs_with_n_and_follow() {
    let b = Builder::new("ctllogs");
    let trigger = b.dir().join("more");
    let init = b
        .service(
            "chatty",
            &format!(
                "ExecStart = [\"sh\", \"-c\", \"for i in 1 2 3 4 5; do echo line$i; done; while [ ! -e {} ]; do sleep 0.05; done; echo after-follow; exec sleep 1000\"]\n",
                trigger.display()
            ),
        )
        .start();
    init.wait_for("line5");
    init.wait_socket();
    let out = init.initctl(&["logs", "chatty", "-n", "2"]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].ends_with("line4") && lines[1].ends_with("line5"),
        "{text}"
    );
    assert!(
        lines[0].contains('T') && lines[0].contains('Z'),
        "timestamped: {text}"
    );
    let all = stdout(&init.initctl(&["logs", "chatty"]));
    assert_eq!(all.lines().count(), 5);
    // --follow: the backlog, then new lines as they come.
    let mut follower = std::process::Command::new(common::initctl_bin())
        .args([
            "--socket",
            init.socket.to_str().unwrap(),
            "logs",
            "chatty",
            "-n",
            "1",
            "--follow",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(follower.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut reader, &mut first).unwrap();
    assert!(first.trim_end().ends_with("line5"), "{first}");
    std::fs::write(&trigger, "").unwrap();
    let mut next = String::new();
    std::io::BufRead::read_line(&mut reader, &mut next).unwrap();
    assert!(next.trim_end().ends_with("after-follow"), "{next}");
    follower.kill().unwrap();
    follower.wait().unwrap();
    // The follower going away costs init nothing: it still answers.
    assert!(init.initctl(&["list"]).status.success());
}

#[test]
fn reload_adds_removes_and_changes() {
    let init = Builder::new("reload")
        .service(
            "keep",
            "ExecStart = \"sh -c 'echo keep-v1; exec sleep 1000'\"\n",
        )
        .service(
            "old",
            "ExecStart = \"sh -c 'echo old-up; exec sleep 1000'\"\n",
        )
        .start();
    init.wait_for("keep-v1");
    init.wait_for("old-up");
    init.wait_socket();
    let svc = init.dir.path().join("service");
    std::fs::remove_file(svc.join("old.service")).unwrap();
    std::fs::write(
        svc.join("new.service"),
        "ExecStart = \"sh -c 'echo new-up; exec sleep 1000'\"\n",
    )
    .unwrap();
    std::fs::write(
        svc.join("keep.service"),
        "ExecStart = \"sh -c 'echo keep-v2; exec sleep 1000'\"\n",
    )
    .unwrap();
    std::fs::write(svc.join("broken.service"), "ExecStart = 5\n").unwrap();
    let out = init.initctl(&["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains("added: broken"), "{text}");
    assert!(text.contains("added: new"), "{text}");
    assert!(text.contains("removed: old"), "{text}");
    assert!(
        text.contains("changed (used from their next start): keep"),
        "{text}"
    );
    assert!(text.contains("broken.service:1: key ExecStart"), "{text}");
    init.wait_for("new-up");
    init.wait_for("old: stopped");
    wait_until("old forgotten", || {
        init.initctl(&["status", "old"]).status.code() == Some(1)
    });
    // The changed file is used at the next start, not before.
    assert_eq!(init.count("keep-v2"), 0);
    assert!(init.initctl(&["restart", "keep"]).status.success());
    init.wait_for("keep-v2");
}

#[test]
fn sighup_reloads() {
    let init = Builder::new("sighup")
        .service("a", "ExecStart = \"sleep 1000\"\n")
        .start();
    init.wait_for("a: started");
    init.dir.write(
        "service/b.service",
        "ExecStart = \"sh -c 'echo b-after-hup; exec sleep 1000'\"\n",
    );
    init.signal(libc::SIGHUP);
    init.wait_for("received SIGHUP: reloading service files");
    init.wait_for("b-after-hup");
}

#[test]
fn socket_is_root_only_and_others_are_refused() {
    let init = basic();
    let mode = std::fs::metadata(&init.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Through the file mode an unprivileged user cannot even connect.
    let as_nobody = |args: &[&str]| {
        std::os::unix::process::CommandExt::uid(
            std::process::Command::new(common::initctl_bin())
                .arg("--socket")
                .arg(&init.socket)
                .args(args),
            65534,
        )
        .output()
        .unwrap()
    };
    let out = as_nobody(&["list"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("root-only"), "{}", stderr(&out));
    // Should the mode be loosened, init itself still refuses by credentials.
    std::fs::set_permissions(init.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&init.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    for args in [vec!["stop", "web"], vec!["list"], vec!["poweroff"]] {
        let out = as_nobody(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("permission denied"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(init.status("web")["state"], "running");
}

#[test]
fn exit_codes_for_usage_and_unreachable() {
    let init = basic();
    assert_eq!(init.initctl(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(init.initctl(&["status"]).status.code(), Some(2));
    assert_eq!(
        init.initctl(&["logs", "web", "-n", "x"]).status.code(),
        Some(2)
    );
    let out = std::process::Command::new(common::initctl_bin())
        .args(["--socket", "/nonexistent/ctl.sock", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let out = std::process::Command::new(common::initctl_bin())
        .env("INITCTL_SOCKET", &init.socket)
        .arg("list")
        .output()
        .unwrap();
    assert!(out.status.success(), "INITCTL_SOCKET is used");
}

#[test]
fn stalled_connections_do_not_delay_others() {
    let init = basic();
    // Twenty clients that connect and send nothing, and one with half a line.
    let mut stalled: Vec<UnixStream> = (0..20)
        .map(|_| UnixStream::connect(&init.socket).unwrap())
        .collect();
    stalled[0].write_all(b"{\"version\":2,\"comm").unwrap();
    let out = init.initctl(&["list", "--json"]);
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    drop(stalled);
}

#[test]
fn garbage_and_huge_requests_are_refused_and_init_lives() {
    let init = basic();
    let ask = |bytes: &[u8]| -> String {
        let mut s = UnixStream::connect(&init.socket).unwrap();
        s.set_read_timeout(Some(common::WAIT)).unwrap();
        let _ = s.write_all(bytes);
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        reply
    };
    let reply = ask(b"this is not json\n");
    assert!(
        reply.contains("\"reply\":\"error\"") && reply.contains("not JSON"),
        "{reply}"
    );
    let reply = ask(b"{\"version\":9,\"command\":\"list\"}\n");
    assert!(
        reply.contains("protocol version 9 is not supported"),
        "{reply}"
    );
    let reply = ask(b"\x00\xff\xfe\n");
    assert!(reply.contains("error"), "{reply}");
    // 8 MiB without a newline: refused once past the cap, connection closed.
    let blob = vec![b'A'; 8 << 20];
    let reply = ask(&blob);
    assert!(
        reply.contains("request longer than 4096 bytes"),
        "{}",
        &reply[..reply.len().min(200)]
    );
    let out = init.initctl(&["list"]);
    assert!(out.status.success(), "init still answers");
}

#[test]
fn a_hundred_concurrent_lists() {
    let init = basic();
    let socket = init.socket.clone();
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let out = std::process::Command::new(common::initctl_bin())
                    .args(["--socket", socket.to_str().unwrap(), "list", "--json"])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                serde_json::from_slice::<serde_json::Value>(&out.stdout)
                    .unwrap()
                    .as_array()
                    .unwrap()
                    .len()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 2);
    }
}

#[test]
fn poweroff_ends_init() {
    let mut init = basic();
    let pid = started_pid(&init, "web", 1);
    assert!(pid > 0);
    let out = init.initctl(&["poweroff"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), "shutting down (poweroff)");
    assert_eq!(init.wait_exit().code(), Some(0));
    assert!(init
        .output()
        .contains("shutting down (exit 0): initctl poweroff"));
    let _ = Duration::ZERO;
}

#[test]
fn a_follower_that_stops_reading_is_cut_off() {
    let init = Builder::new("slowfollow")
        .service("flood", "ExecStart = [\"sh\", \"-c\", \"while true; do echo 'a line of output for the follower to ignore'; done\"]\n")
        .start();
    init.wait_for("flood[");
    init.wait_socket();
    // Ask to follow, then never read: init may queue at most its backlog.
    let mut stalled = UnixStream::connect(&init.socket).unwrap();
    stalled
        .write_all(b"{\"version\":2,\"command\":\"logs\",\"name\":\"flood\",\"follow\":true}\n")
        .unwrap();
    init.wait_for("control: a client does not read its replies; disconnecting it");
    assert!(
        init.initctl(&["list"]).status.success(),
        "init still answers"
    );
    // The connection was closed by init: reading drains what was queued, then EOF.
    stalled.set_read_timeout(Some(common::WAIT)).unwrap();
    let mut sink = Vec::new();
    let _ = stalled.read_to_end(&mut sink);
    assert!(
        sink.len() <= enclave_init::runtime::control::MAX_BACKLOG + (1 << 20),
        "bounded: {} bytes",
        sink.len()
    );
}
