//! Faults init must survive (issue: reliability suite). Each test says
//! what goes wrong and checks that init keeps supervising and answering.
//! RELIABILITY.md lists them.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{children_of, proc_stat, started_pid, status_field, wait_until, As, Builder, Init};

const NOBODY: u32 = 65534;

fn answers(init: &Init) -> bool {
    init.initctl(&["list"]).status.success()
}

/// Lets an unprivileged init write its socket in the test's directory.
fn open_to_all(b: &Builder) {
    for dir in [b.dir().to_path_buf(), b.dir().join("service")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
}

/// Forks sleepers until the process limit, keeps every slot, then tells
/// init it is ready (with its own socket: no fork left for initctl).
const HOG: &str = r#"Type = "notify"
ExecStart = ["python3", "-c", """
import os, socket, time
n = 0
while True:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(1000)
        os._exit(0)
    n += 1
print('hog holds', n, 'processes', flush=True)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])
time.sleep(1000)
"""]
"#;

#[test]
fn fork_failing_at_rlimit_nproc_is_waited_out() {
    // Root ignores RLIMIT_NPROC, which counts every process of a user: run
    // init as a uid of this test's own, limited to 12 processes, and let a
    // hog take what is left.
    const UID: u32 = 54321;
    let b = Builder::new("nproc");
    open_to_all(&b);
    let mut init = b
        .uid(UID)
        .wrapper(&["prlimit", "--nproc=12:12", "--"])
        .service("hog", HOG)
        .service("victim", "After = [\"hog\"]\nExecStart = \"sh -c 'echo victim-ran; exec sleep 1000'\"\nRestartSec = 0.2\n")
        .start();
    init.wait_for("hog: ready");
    init.wait_for("Resource temporarily unavailable; retrying in 200ms");
    init.wait_socket();
    assert!(answers(&init), "init answers while out of processes");
    assert_eq!(init.status("victim")["state"], "waiting");
    // Free the processes: the victim starts at its next try.
    assert!(init.initctl(&["stop", "hog"]).status.success());
    init.wait_for("victim-ran");
    wait_until("victim running", || {
        init.status("victim")["state"] == "running"
    });
    init.signal(libc::SIGTERM);
    init.wait_exit();
}

#[test]
fn sigchld_storm_of_thousands_of_orphans() {
    let init = Builder::new("storm")
        .how(As::Subreaper)
        .service(
            "storm",
            "ExecStart = [\"sh\", \"-c\", \"for i in $(seq 3000); do (true &); done; echo storm-done; exec sleep 1000\"]\nKillMode = \"process\"\n",
        )
        .start();
    init.wait_for("storm-done");
    let pid = init.init_pid();
    let spawner = started_pid(&init, "storm", 1);
    wait_until("every orphan reaped", || {
        let kids = children_of(pid);
        kids.iter().all(|p| *p == spawner)
    });
    assert!(children_of(pid)
        .iter()
        .all(|p| proc_stat(*p).is_some_and(|(s, ..)| s != 'Z')));
    init.wait_socket();
    assert!(answers(&init));
}

#[test]
fn a_console_nobody_reads_costs_lines_not_supervision() {
    let mut init = Builder::new("console")
        .unread_stdout()
        .service("flood", "ExecStart = [\"sh\", \"-c\", \"while true; do echo 'flooding the console with a line of text'; done\"]\n")
        .service("steady", "ExecStart = \"sleep 1000\"\n")
        .start();
    init.wait_socket();
    // The pipe to the console is full: init must still serve and supervise.
    wait_until("steady running", || {
        answers(&init) && init.status("steady")["state"] == "running"
    });
    for _ in 0..5 {
        assert!(answers(&init));
    }
    assert!(init.initctl(&["restart", "steady"]).status.success());
    assert!(init.initctl(&["stop", "flood"]).status.success());
    // Once someone reads, the console says what was lost.
    init.drain_console();
    init.wait_for("console too slow:");
    init.wait_for("lines dropped");
    init.signal(libc::SIGTERM);
    assert_eq!(init.wait_exit().code(), Some(0));
    // Lines are dropped whole: what the console shows is never half a line
    // (a write the full pipe took in part is finished first).
    let flood: Vec<String> = init
        .lines()
        .into_iter()
        .filter(|l| l.contains("flood["))
        .collect();
    assert!(!flood.is_empty());
    for l in flood {
        let whole = l
            .strip_prefix("flood[")
            .and_then(|rest| rest.split_once("]: "))
            .is_some_and(|(pid, text)| {
                pid.parse::<u32>().is_ok() && text == "flooding the console with a line of text"
            });
        assert!(whole, "a mangled console line: {l:?}");
    }
}

#[test]
fn an_unreadable_service_directory_is_reported() {
    // Unreadable for nobody.
    let b = Builder::new("unreadable");
    open_to_all(&b);
    std::fs::set_permissions(
        b.dir().join("service"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let init = b.uid(NOBODY).start();
    init.wait_for("cannot read service directory: Permission denied");
    init.wait_socket();
    assert!(answers(&init));
    // A file where the directory should be: same, for root.
    let b = Builder::new("notadir");
    std::fs::remove_dir(b.dir().join("service")).unwrap();
    std::fs::write(b.dir().join("service"), "not a directory").unwrap();
    let init = b.start();
    init.wait_for("cannot read service directory: Not a directory");
    init.wait_socket();
    assert!(answers(&init));
}

#[test]
fn a_service_directory_that_vanishes_at_reload_changes_nothing() {
    let init = Builder::new("vanish")
        .service("keep", "ExecStart = \"sleep 1000\"\n")
        .start();
    init.wait_for("keep: started");
    init.wait_socket();
    std::fs::remove_dir_all(init.dir.path().join("service")).unwrap();
    let out = init.initctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is missing; nothing changed"));
    assert_eq!(init.status("keep")["state"], "running");
    init.signal(libc::SIGHUP);
    init.wait_count("is missing; nothing changed", 2);
    assert_eq!(init.status("keep")["state"], "running");
}

#[test]
fn a_service_that_closes_its_output_keeps_running() {
    let init = Builder::new("closed")
        .service(
            "quiet",
            "ExecStart = [\"sh\", \"-c\", \"echo last-words; exec >&- 2>&-; exec sleep 1000\"]\n",
        )
        .start();
    init.wait_for("last-words");
    init.wait_socket();
    let pid = init.status("quiet")["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(init.status("quiet")["state"], "running");
    let out = init.initctl(&["stop", "quiet"]);
    assert!(out.status.success());
    assert_eq!(init.status("quiet")["state"], "stopped");
}

#[test]
fn a_process_tree_left_behind_is_handled_per_kill_mode() {
    let tree =
        "ExecStart = [\"sh\", \"-c\", \"(sleep 1000 &); (sleep 1001 &); echo tree-spawned\"]\n";
    let init = Builder::new("tree")
        .how(As::Subreaper)
        .service("group", tree)
        .service("process", &format!("{tree}KillMode = \"process\"\n"))
        .start();
    init.wait_for("group: stopping processes left in its group");
    init.wait_for("group: main process exited with status 0");
    let group_pid = started_pid(&init, "group", 1);
    let process_pid = started_pid(&init, "process", 1);
    wait_until("group's leftovers gone", || {
        all_pids()
            .into_iter()
            .all(|p| proc_stat(p).is_none_or(|(_, _, pgid, _)| pgid != group_pid))
    });
    init.wait_socket();
    assert_eq!(init.status("group")["state"], "exited");
    // KillMode=process leaves them running.
    let left: Vec<i32> = all_pids()
        .into_iter()
        .filter(|p| proc_stat(*p).is_some_and(|(_, _, pgid, _)| pgid == process_pid))
        .collect();
    assert_eq!(left.len(), 2, "KillMode=process keeps the tree: {left:?}");
    for p in left {
        // SAFETY: plain kill(2) on the test's own leftovers.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
}

/// Init's open descriptors as (number, link target), sorted by number.
fn init_fds(pid: i32) -> Vec<(String, String)> {
    let mut fds: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let link = std::fs::read_link(e.path()).ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                link.to_string_lossy().into_owned(),
            ))
        })
        .collect();
    fds.sort_by_key(|(n, _)| n.parse::<u32>().unwrap_or(u32::MAX));
    fds
}

/// The descriptors of `fds` that exist only while something runs: a pipe
/// other than init's stdin/stdout/stderr (and the console's own file
/// description of stdout) is a service's output; a connected Unix socket
/// (state 03 in /proc/net/unix) is an initctl client. Listening and
/// datagram sockets, epoll, signalfd and timerfd stay for init's life.
fn transient(fds: &[(String, String)]) -> Vec<&(String, String)> {
    let stdio: Vec<&String> = fds
        .iter()
        .filter(|(n, _)| matches!(n.as_str(), "0" | "1" | "2"))
        .map(|(_, link)| link)
        .collect();
    fds.iter()
        .filter(|fd| !stdio.contains(&&fd.1) && is_transient(fd))
        .collect()
}

fn is_transient((_, link): &(String, String)) -> bool {
    if link.starts_with("pipe:") {
        return true;
    }
    let Some(inode) = link
        .strip_prefix("socket:[")
        .and_then(|l| l.strip_suffix(']'))
    else {
        return false;
    };
    // Num RefCount Protocol Flags Type St Inode [Path]
    std::fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .any(|f| f.len() >= 7 && f[6] == inode && f[5] == "03")
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

#[test]
fn soak_ten_thousand_crash_restarts_leak_nothing() {
    let init = Builder::new("soak")
        .how(As::Subreaper)
        .service("crash", "ExecStart = \"/bin/false\"\nRestart = \"always\"\nRestartSec = 0\nStartLimitIntervalSec = 0\n")
        .start();
    init.wait_socket();
    let pid = init.init_pid();
    let fds = || init_fds(pid);
    let rss_kib = || {
        status_field(pid, "VmRSS")
            .trim_end_matches(" kB")
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    // Measured at rest (the service stopped, its pipe closed, initctl's
    // connection closed by init), after a warm-up that lets allocator pools
    // and buffers reach their size. The wait is for the transient
    // descriptors to go: a leaked pipe or connection makes it time out.
    let at_rest = || {
        assert!(init.initctl(&["stop", "crash"]).status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let fds = fds();
            let transient = transient(&fds);
            if transient.is_empty() {
                break (fds, rss_kib());
            }
            assert!(
                Instant::now() < deadline,
                "init kept transient descriptors open at rest: {transient:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    // Restarts take ~1 ms each; the bounds allow a machine that is busy.
    let soak_bound = Duration::from_secs(600);
    init.wait_count_within("(restart 1000)", 1, soak_bound);
    let (fds_before, rss_before) = at_rest();
    assert!(init.initctl(&["start", "crash"]).status.success());
    // A start by hand resets the count: 9000 more.
    init.wait_count_within("(restart 9000)", 1, soak_bound);
    let (fds_after, rss_after) = at_rest();
    assert_eq!(
        fds_after.len(),
        fds_before.len(),
        "open fds changed over 9000 restarts: {fds_before:?} -> {fds_after:?}"
    );
    assert!(
        rss_after <= rss_before + 64,
        "RSS grew {} KiB over 9000 restarts ({rss_before} -> {rss_after} KiB)",
        rss_after.saturating_sub(rss_before)
    );
}
