//! The parent channel with the real binary (issue: the parent channel).
//! In these tests init listens on a Unix socket instead of vsock
//! (`ENCLAVE_INIT_TEST_PARENT_SOCKET`, debug builds only); the rest of the
//! path is the one an enclave runs.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{initctl_bin, wait_until, Builder, Init};

const SLEEPER: &str = "ExecStart = \"sleep 1000\"\n";

fn with_parent(b: Builder, config: &str) -> (Init, PathBuf) {
    let socket = b.dir().join("parent.sock");
    let init = b
        .config(&format!("[parent]\n{config}"))
        .env(
            "ENCLAVE_INIT_TEST_PARENT_SOCKET",
            &socket.display().to_string(),
        )
        .start();
    wait_until("the parent channel", || socket.exists());
    (init, socket)
}

/// One request, and every line of the answer until the connection closes.
fn ask(socket: &Path, request: &str) -> Vec<serde_json::Value> {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(b"\n").unwrap();
    BufReader::new(stream)
        .lines()
        .map_while(Result::ok)
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect()
}

/// A connection that stays open: its lines as they come.
struct Stream {
    lines: std::io::Lines<BufReader<UnixStream>>,
}

impl Stream {
    fn open(socket: &Path, request: &str) -> Self {
        let mut stream = UnixStream::connect(socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(format!("{request}\n").as_bytes()).unwrap();
        Self {
            lines: BufReader::new(stream).lines(),
        }
    }

    fn next(&mut self) -> Option<serde_json::Value> {
        let line = self.lines.next()?.ok()?;
        Some(serde_json::from_str(&line).unwrap())
    }

    /// Reads until an item satisfies `f`; returns it.
    fn until(&mut self, what: &str, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        loop {
            match self.next() {
                Some(v) if f(&v) => return v,
                Some(_) => {}
                None => panic!("the stream ended before {what}"),
            }
        }
    }
}

fn event(v: &serde_json::Value) -> &serde_json::Value {
    &v["event"]
}

#[test]
fn without_a_parent_section_nothing_listens() {
    let b = Builder::new("noparent");
    let socket = b.dir().join("parent.sock");
    let init = b
        .env(
            "ENCLAVE_INIT_TEST_PARENT_SOCKET",
            &socket.display().to_string(),
        )
        .service("s", SLEEPER)
        .start();
    init.wait_for("s: started");
    init.wait_socket();
    assert!(!socket.exists());
    assert_eq!(init.count("parent channel"), 0);
}

#[test]
fn list_and_status_show_states_and_only_exported_output() {
    let b = Builder::new("parentlist")
        .service("open", "ExecStart = \"sh -c 'echo open-line; echo secret=42 > /dev/null; exec sleep 1000'\"\n")
        .service("closed", "ExecStart = [\"sh\", \"-c\", \"echo secret-line; exec sleep 1000\", \"token-hunter2\"]\n");
    let (init, socket) = with_parent(b, "logs = [\"open\"]\n");
    init.wait_for("open-line");
    init.wait_for("secret-line");
    let list = ask(&socket, r#"{"version":1,"command":"list"}"#);
    let services = list[0]["services"].as_array().unwrap();
    let names: Vec<&str> = services
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["closed", "open"]);
    assert!(services.iter().all(|s| s["state"] == "running"));
    assert!(
        services
            .iter()
            .all(|s| s["command"].as_array().unwrap().is_empty()),
        "command lines may hold secrets: never sent"
    );
    assert!(!format!("{list:?}").contains("hunter2"));
    let open = ask(&socket, r#"{"version":1,"command":"status","name":"open"}"#);
    assert_eq!(open[0]["service"]["recent"][0]["text"], "open-line");
    let closed = ask(
        &socket,
        r#"{"version":1,"command":"status","name":"closed"}"#,
    );
    assert!(closed[0]["service"].get("recent").is_none(), "{closed:?}");
    assert_eq!(closed[0]["service"]["state"], "running");
}

#[test]
fn logs_are_sent_only_when_exported() {
    let b = Builder::new("parentlogs")
        .service(
            "open",
            "ExecStart = \"sh -c 'echo one; echo two; exec sleep 1000'\"\n",
        )
        .service(
            "closed",
            "ExecStart = \"sh -c 'echo the-secret; exec sleep 1000'\"\n",
        );
    let (init, socket) = with_parent(b, "logs = [\"open\"]\n");
    init.wait_for("the-secret");
    init.wait_for("two");
    let lines = ask(&socket, r#"{"version":1,"command":"logs","name":"open"}"#);
    let texts: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["line"]["text"].as_str())
        .collect();
    assert_eq!(texts, ["one", "two"]);
    assert_eq!(lines.last().unwrap()["reply"], "end");
    let refused = ask(&socket, r#"{"version":1,"command":"logs","name":"closed"}"#);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["reply"], "error");
    assert_eq!(
        refused[0]["message"],
        "refused: the image does not export the logs of closed"
    );
    assert!(!format!("{refused:?}").contains("the-secret"));
    init.wait_for("parent channel: refused logs of closed: not exported");
}

#[test]
fn every_request_but_reading_is_refused_and_logged_and_changes_nothing() {
    let b = Builder::new("parentrefuse").service("s", SLEEPER);
    let (init, socket) = with_parent(b, "logs = \"all\"\n");
    init.wait_for("s: started");
    init.wait_socket();
    let pid = init.status("s")["pid"].clone();
    for command in [
        "start", "stop", "restart", "reload", "kill", "reboot", "boot", "notify", "poweroff",
    ] {
        let line = format!(r#"{{"version":1,"command":"{command}","name":"s","signal":"KILL"}}"#);
        let answer = ask(&socket, &line);
        assert_eq!(answer.len(), 1, "{command}: {answer:?}");
        assert_eq!(answer[0]["reply"], "error", "{command}: {answer:?}");
        assert!(
            answer[0]["message"]
                .as_str()
                .unwrap()
                .starts_with("refused"),
            "{command}: {answer:?}"
        );
    }
    for garbage in ["", "{}", "not json", r#"{"version":9,"command":"list"}"#] {
        let answer = ask(&socket, garbage);
        assert_eq!(answer[0]["reply"], "error", "{garbage:?}: {answer:?}");
    }
    init.wait_for("parent channel: refused: \"start\" is not something the parent may ask");
    // Logged, and rate-limited: a hostile parent cannot flood the console.
    assert!(init.count("parent channel: refused") <= 5);
    let s = init.status("s");
    assert_eq!(
        (s["state"].clone(), s["pid"].clone()),
        ("running".into(), pid)
    );
}

#[test]
fn events_give_a_late_client_what_it_missed_then_every_change() {
    let b = Builder::new("parentevents")
        .service("s", SLEEPER)
        .service("t", SLEEPER);
    let (init, socket) = with_parent(b, "");
    init.wait_for("t: started");
    init.wait_socket();
    let mut events = Stream::open(&socket, r#"{"version":1,"command":"events"}"#);
    let boot = events.next().unwrap();
    assert_eq!(event(&boot)["event"], "boot");
    assert_eq!(event(&boot)["report"]["mode"], "no-boot");
    events.until("s running", |v| {
        event(v)["event"] == "state" && event(v)["service"] == "s" && event(v)["state"] == "running"
    });
    // Init's own lines from before the client came.
    events.until("the missed line", |v| {
        event(v)["event"] == "init"
            && event(v)["line"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("s: started"))
    });
    assert!(init.initctl(&["stop", "t"]).status.success());
    events.until("t stopped", |v| {
        event(v)["event"] == "state" && event(v)["service"] == "t" && event(v)["state"] == "stopped"
    });
}

#[test]
fn the_end_record_reaches_every_client_before_init_ends() {
    let b = Builder::new("parentend").service(
        "app",
        "ExecStart = \"sh -c 'read x < /dev/null; sleep 0.1; exit 7'\"\nFailureAction = \"exit\"\n",
    );
    let socket = b.dir().join("parent.sock");
    let b = b.config("[parent]\n").env(
        "ENCLAVE_INIT_TEST_PARENT_SOCKET",
        &socket.display().to_string(),
    );
    let mut init = b.start();
    wait_until("the parent channel", || socket.exists());
    let mut wait = Stream::open(&socket, r#"{"version":1,"command":"wait"}"#);
    let mut events = Stream::open(&socket, r#"{"version":1,"command":"events"}"#);
    let end = wait.until("the end", |v| event(v)["event"] == "end");
    assert_eq!(event(&end)["end"]["service"], "app");
    assert_eq!(event(&end)["end"]["status"], 7);
    assert_eq!(event(&end)["end"]["action"], "exit");
    assert!(event(&end)["end"]["reason"]
        .as_str()
        .unwrap()
        .contains("service app ended"));
    events.until("the end on events too", |v| event(v)["event"] == "end");
    assert_eq!(init.wait_exit().code(), Some(7));
}

/// A hybrid-vsock endpoint as Firecracker's or vhost-device-vsock's: a
/// client writes `CONNECT PORT`, gets `OK 1`, then talks to the port, here
/// init's test socket.
fn hybrid_endpoint(dir: &Path, target: PathBuf) -> PathBuf {
    let path = dir.join("vm.vsock");
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let target = target.clone();
            std::thread::spawn(move || {
                let mut line = Vec::new();
                let mut byte = [0u8; 1];
                while client.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
                    line.push(byte[0]);
                }
                if line != b"CONNECT 9001" {
                    let _ = client.write_all(b"FAILURE\n");
                    return;
                }
                let Ok(server) = UnixStream::connect(&target) else {
                    return;
                };
                let _ = client.write_all(b"OK 1073741824\n");
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                });
                let (mut server, mut client) = (server, client);
                let _ = std::io::copy(&mut server, &mut client);
            });
        }
    });
    path
}

fn initctl_vsock(address: &str, args: &[&str]) -> std::process::Child {
    std::process::Command::new(initctl_bin())
        .arg("--vsock")
        .arg(address)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn initctl_vsock_over_hybrid_vsock_lists_waits_and_exits_with_the_status() {
    let b = Builder::new("parentctl")
        .service("keep", SLEEPER)
        .service(
            "app",
            "ExecStart = \"sh -c 'while [ ! -e go ]; do sleep 0.05; done; exit 7'\"\nWorkingDirectory = \"DIR\"\nFailureAction = \"exit\"\n",
        );
    let dir = b.dir().to_path_buf();
    let app = std::fs::read_to_string(dir.join("service/app.service"))
        .unwrap()
        .replace("DIR", &dir.display().to_string());
    std::fs::write(dir.join("service/app.service"), app).unwrap();
    let (mut init, socket) = with_parent(b, "allow_poweroff = false\n[log]\nlevel = \"debug\"\n");
    let endpoint = hybrid_endpoint(&dir, socket);
    let address = format!("unix:{}", endpoint.display());
    let list = initctl_vsock(&address, &["list"])
        .wait_with_output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("keep") && text.contains("running"), "{text}");
    // Not over vsock: what changes the enclave.
    let stop = initctl_vsock(&address, &["stop", "keep"])
        .wait_with_output()
        .unwrap();
    assert_eq!(stop.status.code(), Some(2));
    let off = initctl_vsock(&address, &["poweroff"])
        .wait_with_output()
        .unwrap();
    assert_eq!(
        off.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&off.stderr)
    );
    // `wait` gives scripts the status of the service that ended it.
    let waiter = initctl_vsock(&address, &["wait"]);
    init.wait_for("parent channel: serving wait");
    std::fs::write(dir.join("go"), "").unwrap();
    let waited = waiter.wait_with_output().unwrap();
    assert_eq!(
        waited.status.code(),
        Some(7),
        "{}{}",
        String::from_utf8_lossy(&waited.stdout),
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(String::from_utf8_lossy(&waited.stdout).contains("END: exit (service app ended"));
    assert_eq!(init.wait_exit().code(), Some(7));
    // And a lost connection is its own status.
    let lost = initctl_vsock(&address, &["wait"])
        .wait_with_output()
        .unwrap();
    assert_eq!(
        lost.status.code(),
        Some(3),
        "nothing to connect to: cannot connect"
    );
}

#[test]
fn a_parent_allowed_to_may_power_the_enclave_off() {
    let b = Builder::new("parentoff").service("s", SLEEPER);
    let (mut init, socket) = with_parent(b, "allow_poweroff = true\n");
    init.wait_for("s: started");
    let answer = ask(&socket, r#"{"version":1,"command":"poweroff"}"#);
    assert_eq!(answer[0]["reply"], "done");
    init.wait_for("the parent asked for it (allow_poweroff)");
    assert_eq!(init.wait_exit().code(), Some(0));
}

#[test]
fn a_stalled_parent_costs_init_nothing_and_is_told_what_it_missed() {
    // A service that crashes and restarts without end: init's own lines
    // pour out. One client asks for events and does not read.
    let b = Builder::new("parentstall").service(
        "crash",
        "ExecStart = \"false\"\nRestart = \"always\"\nRestartSec = 0\nStartLimitIntervalSec = 0\n",
    );
    let (init, socket) = with_parent(b, "");
    let mut stalled = UnixStream::connect(&socket).unwrap();
    stalled
        .write_all(b"{\"version\":1,\"command\":\"events\"}\n")
        .unwrap();
    init.wait_socket();
    // Well past what the backlog and the socket buffers hold.
    init.wait_count("crash: restarting in", 1500);
    let t = std::time::Instant::now();
    let list = init.initctl(&["list"]);
    assert!(list.status.success());
    eprintln!("initctl list while the parent stalls: {:?}", t.elapsed());
    // Reading again: a `dropped` notice says how much it missed.
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stalled);
    let mut line = String::new();
    let mut dropped = None;
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event(&v)["event"] == "dropped" {
            dropped = event(&v)["count"].as_u64();
            break;
        }
        line.clear();
    }
    assert!(dropped.is_some_and(|n| n > 0), "no dropped notice");
}

// ---- review findings ----

#[test]
fn review1_a_caught_up_follower_costs_no_wakeups() {
    let b = Builder::new("parentidle")
        .how(common::As::Subreaper)
        .service(
            "app",
            "ExecStart = \"sh -c 'echo one; exec sleep 100000'\"\n",
        );
    let (init, socket) = with_parent(b, "logs = [\"app\"]\n");
    init.wait_for("one");
    let mut follow = Stream::open(
        &socket,
        r#"{"version":1,"command":"logs","name":"app","follow":true}"#,
    );
    follow.until("the line", |v| v["line"]["text"] == "one");
    let pid = init.init_pid();
    let switches = || -> u64 {
        ["voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"]
            .iter()
            .map(|k| common::status_field(pid, k).parse::<u64>().unwrap())
            .sum()
    };
    common::wait_in_epoll(pid);
    let before = switches();
    // A measurement window, not a synchronisation: nothing should happen.
    std::thread::sleep(Duration::from_secs(2));
    let after = switches();
    assert!(after - before <= 2, "init woke up {} times", after - before);
}

#[test]
fn review3_a_client_that_closes_its_side_still_gets_its_stream() {
    let b = Builder::new("parenthalf").service("s", SLEEPER);
    let (init, socket) = with_parent(b, "");
    init.wait_for("s: started");
    let mut stream = UnixStream::connect(&socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"{\"version\":1,\"command\":\"events\"}\n")
        .unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    init.wait_socket();
    assert!(init.initctl(&["stop", "s"]).status.success());
    let mut lines = BufReader::new(stream).lines();
    let stopped = lines.any(|l| {
        l.is_ok_and(|l| l.contains("\"service\":\"s\"") && l.contains("\"state\":\"stopped\""))
    });
    assert!(stopped, "the stream ended at the half-close");
}

#[test]
fn review4_a_client_that_talks_after_its_request_is_cut_off() {
    let b = Builder::new("parenttalk").service("s", SLEEPER);
    let (init, socket) = with_parent(b, "");
    init.wait_for("s: started");
    let mut stream = UnixStream::connect(&socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"{\"version\":1,\"command\":\"wait\"}\nmore and more\n")
        .unwrap();
    let mut rest = Vec::new();
    let n = stream.read_to_end(&mut rest).unwrap();
    assert_eq!(n, 0, "closed, not read forever");
}

#[test]
fn review5_the_last_changes_and_lines_go_before_the_end_record() {
    let b = Builder::new("parentlast");
    let go = b.dir().join("go");
    let b = b.service(
        "app",
        &format!(
            "ExecStart = \"sh -c 'while [ ! -e {} ]; do sleep 0.02; done; echo last-words; exit 3'\"\nFailureAction = \"exit\"\n",
            go.display()
        ),
    );
    let (mut init, socket) = with_parent(b, "logs = [\"app\"]\n[log]\nlevel = \"debug\"\n");
    let mut events = Stream::open(&socket, r#"{"version":1,"command":"events"}"#);
    init.wait_for("parent channel: serving events");
    std::fs::write(&go, "").unwrap();
    let mut seen = Vec::new();
    loop {
        let v = events
            .next()
            .expect("the stream ended before the end record");
        if event(&v)["event"] == "end" {
            break;
        }
        seen.push(v);
    }
    assert!(
        seen.iter()
            .any(|v| event(v)["service"] == "app" && event(v)["state"] == "failed"),
        "the failure before the end: {seen:?}"
    );
    assert!(
        seen.iter().any(|v| event(v)["line"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("shutting down"))),
        "init's last lines before the end"
    );
    assert_eq!(init.wait_exit().code(), Some(3));
}
