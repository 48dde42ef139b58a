//! One-command mode (`enclave-init --no-boot -- CMD`) against the contract
//! of tini and dumb-init (README, "One command"), run as PID 1 of a new PID
//! namespace and as a subreaper. Each test waits for events (a line, an
//! exit), never for time; the command is a small Python program that
//! reports every signal it gets.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// Reports each signal as `command got N` (and `grandchild got N` from a child of
/// its own in its process group, with `GRANDCHILD=1`); `EXIT_ON=N:S`
/// exits with status S on signal N; `LINGER_ON=N` says `still here` one
/// second after signal N, then exits 3.
const REPORTER: &str = r#"
import os, signal, sys, time
who = "command"
if os.environ.get("GRANDCHILD") and os.fork() == 0:
    who = "grandchild"
exit_on = os.environ.get("EXIT_ON", "")
linger_on = os.environ.get("LINGER_ON", "")
def handler(n, frame):
    print(who + " got %d" % n, flush=True)
    if who == "command" and exit_on and int(exit_on.split(":")[0]) == n:
        sys.exit(int(exit_on.split(":")[1]))
    if who == "command" and linger_on and int(linger_on) == n:
        time.sleep(1)
        print("still here", flush=True)
        sys.exit(3)
for s in signal.valid_signals():
    if s in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
        continue
    try:
        signal.signal(s, handler)
    except (OSError, ValueError):
        pass
print(who + " ready", flush=True)
while True:
    signal.pause()
"#;

/// Leaves two processes behind and exits 4: `left PID` (killed by
/// SIGTERM) and `stubborn PID` (ignores it; started before the exit).
const LEAVER: &str = r#"
import os, signal, subprocess, sys
left = subprocess.Popen(["sleep", "1000"])
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.write(w, b"x")
    os.execvp("sleep", ["sleep", "1001"])
os.read(r, 1)
print("left %d" % left.pid, flush=True)
print("stubborn %d" % pid, flush=True)
sys.exit(4)
"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum As {
    Pid1,
    Subreaper,
}

const BOTH: [As; 2] = [As::Pid1, As::Subreaper];

type Lines = Arc<(Mutex<Vec<String>>, Condvar)>;

/// A running `enclave-init --no-boot [OPTS] -- CMD`, its stdout and stderr
/// kept apart.
struct Run {
    child: Child,
    out: Lines,
    err: Lines,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn init_bin() -> &'static str {
    env!("CARGO_BIN_EXE_enclave-init")
}

fn command(how: As, opts: &[&str], cmd: &[&str]) -> Command {
    let mut args: Vec<&str> = vec!["--no-boot"];
    args.extend(opts);
    args.push("--");
    args.extend(cmd);
    let mut c = match how {
        As::Pid1 => {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
                .arg(init_bin());
            c
        }
        As::Subreaper => Command::new(init_bin()),
    };
    c.args(args);
    c
}

fn start(how: As, opts: &[&str], cmd: &[&str]) -> Run {
    start_with(command(how, opts, cmd))
}

fn reporter(how: As, opts: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = command(how, opts, &["python3", "-c", REPORTER]);
    for (k, v) in env {
        c.env(k, v);
    }
    let run = start_with(c);
    run.wait_out("command ready");
    run
}

fn start_with(mut c: Command) -> Run {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("start enclave-init (root, unshare)");
    let mut readers = Vec::new();
    let mut read = |stream: Box<dyn Read + Send>| {
        let lines: Lines = Arc::default();
        let l = lines.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let (lock, cv) = &*l;
                lock.lock().unwrap().push(line);
                cv.notify_all();
            }
        }));
        lines
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    Run {
        child,
        out,
        err,
        readers,
    }
}

fn wait_line(lines: &Lines, needle: &str, what: &str) {
    let (lock, cv) = &**lines;
    let deadline = Instant::now() + WAIT;
    let mut guard = lock.lock().unwrap();
    while !guard.iter().any(|l| l.contains(needle)) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {needle:?} on {what}: {:?}", *guard);
        guard = cv.wait_timeout(guard, left).unwrap().0;
    }
}

impl Run {
    fn wait_out(&self, needle: &str) {
        wait_line(&self.out, needle, "stdout");
    }

    fn out(&self) -> Vec<String> {
        self.out.0.lock().unwrap().clone()
    }

    fn err(&self) -> Vec<String> {
        self.err.0.lock().unwrap().clone()
    }

    /// Init's pid (under unshare, unshare's only child).
    fn init_pid(&self) -> i32 {
        let outer = self.child.id() as i32;
        let children = std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children"))
            .unwrap_or_default();
        let comm = std::fs::read_to_string(format!("/proc/{outer}/comm")).unwrap_or_default();
        match children.split_whitespace().next() {
            Some(pid) if comm.trim() == "unshare" => pid.parse().unwrap(),
            _ => outer,
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the init this test started.
        assert_eq!(unsafe { libc::kill(self.init_pid(), signal) }, 0);
    }

    /// Waits for the exit, then for the readers to see EOF: every line
    /// written is in.
    fn wait(&mut self) -> Option<i32> {
        let code = self.wait_exit();
        // EOF comes once every holder of the pipes is gone.
        wait_until("the end of init's output", || {
            self.readers.iter().all(|r| r.is_finished())
        });
        code
    }

    /// Waits for init's exit only (a process it left may hold its pipes).
    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "init did not exit: {:?}",
                self.out()
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        status.code()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The catchable signals a command can be sent through init: all but
/// SIGKILL and SIGSTOP (not catchable), SIGCHLD (init's own), the
/// job-control stops (tested apart: init stops itself after them) and 32
/// and 33 (the C library's own).
fn catchable() -> Vec<i32> {
    (1..=64)
        .filter(|&s| {
            ![
                libc::SIGKILL,
                libc::SIGSTOP,
                libc::SIGCHLD,
                libc::SIGTSTP,
                libc::SIGTTIN,
                libc::SIGTTOU,
                32,
                33,
            ]
            .contains(&s)
        })
        .collect()
}

#[test]
fn every_catchable_signal_reaches_the_command() {
    for how in BOTH {
        let run = reporter(how, &[], &[]);
        for signal in catchable() {
            run.signal(signal);
            run.wait_out(&format!("command got {signal}"));
        }
        assert!(run.err().is_empty(), "{how:?}: init spoke: {:?}", run.err());
    }
}

#[test]
fn the_exit_status_is_the_commands_after_a_forwarded_signal() {
    for how in BOTH {
        // docker stop: SIGTERM to init, the command handles it, exits 7.
        let mut run = reporter(how, &[], &[("EXIT_ON", "15:7")]);
        run.signal(libc::SIGTERM);
        run.wait_out("command got 15");
        assert_eq!(run.wait(), Some(7), "{how:?}");
        // Ctrl-C in a shell: SIGINT reaches the command as SIGINT and kills
        // it; init says so the shell's way, 128 + 2.
        let mut run = start(how, &[], &["sleep", "100"]);
        wait_for_process(&run, "sleep");
        run.signal(libc::SIGINT);
        assert_eq!(run.wait(), Some(130), "{how:?}");
        assert!(run.err().is_empty(), "{how:?}: {:?}", run.err());
    }
}

/// The orchestrator owns the grace period: after SIGTERM init kills on no
/// clock of its own (here `shutdown.timeout` is 100 ms, which used to be
/// its SIGKILL deadline).
#[test]
fn init_never_kills_the_command_on_its_own_clock() {
    let dir = std::env::temp_dir().join(format!("ei-onecmd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("c.toml");
    std::fs::write(&config, "[shutdown]\ntimeout = \"100ms\"\n").unwrap();
    for how in BOTH {
        let mut run = reporter(
            how,
            &["--config", config.to_str().unwrap()],
            &[("LINGER_ON", "15")],
        );
        run.signal(libc::SIGTERM);
        run.wait_out("command got 15");
        run.wait_out("still here");
        assert_eq!(run.wait(), Some(3), "{how:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn init_is_silent_and_stdout_is_the_commands() {
    for how in BOTH {
        let mut run = start(how, &[], &["sh", "-c", "echo out; echo err >&2; exit 3"]);
        assert_eq!(run.wait(), Some(3), "{how:?}");
        run.wait_out("out");
        wait_line(&run.err, "err", "stderr");
        assert_eq!(run.out(), ["out"], "{how:?}");
        assert_eq!(run.err(), ["err"], "{how:?}");
    }
}

#[test]
fn exec_failures_are_127_or_126_with_a_message_on_stderr() {
    let dir = std::env::temp_dir().join(format!("ei-noexec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plain = dir.join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    for how in BOTH {
        for (program, status) in [("/doesnotexist", 127), (plain.to_str().unwrap(), 126)] {
            let mut run = start(how, &[], &[program]);
            assert_eq!(run.wait(), Some(status), "{how:?} {program}");
            wait_line(&run.err, program, "stderr");
            assert!(run.out().is_empty(), "{how:?}: {:?}", run.out());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_command_starts_in_inits_working_directory() {
    let dir = std::env::temp_dir().join(format!("ei-cwd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for how in BOTH {
        let mut c = command(how, &[], &["pwd"]);
        c.current_dir(&dir);
        let mut run = start_with(c);
        assert_eq!(run.wait(), Some(0));
        run.wait_out("/");
        assert_eq!(run.out(), [dir.to_str().unwrap()], "{how:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// tini keeps what its caller ignored or blocked for the command.
#[test]
fn signals_the_caller_ignored_or_blocked_stay_so_for_the_command() {
    for how in BOTH {
        let mut c = command(
            how,
            &[],
            &["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"],
        );
        // SAFETY: signal(2) and sigprocmask(2) between fork and exec.
        unsafe {
            c.pre_exec(|| {
                libc::signal(libc::SIGUSR2, libc::SIG_IGN);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGUSR1);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                Ok(())
            });
        }
        let mut run = start_with(c);
        assert_eq!(run.wait(), Some(0));
        run.wait_out("SigIgn");
        let field = |name: &str| {
            let line = run.out().into_iter().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        let bit = |s: i32| 1u64 << (s - 1);
        assert_ne!(field("SigIgn:") & bit(libc::SIGUSR2), 0, "{how:?}");
        assert_ne!(field("SigBlk:") & bit(libc::SIGUSR1), 0, "{how:?}");
        // Init's own (it blocks every signal; Rust's runtime ignores
        // SIGPIPE) are not passed on.
        assert_eq!(field("SigBlk:") & bit(libc::SIGTERM), 0, "{how:?}");
        assert_eq!(field("SigIgn:") & bit(libc::SIGPIPE), 0, "{how:?}");
    }
}

/// When the command ends, init ends with it: what the command left behind
/// gets SIGTERM (dumb-init), and init does not wait for it, whatever
/// `shutdown.timeout` says (an hour here: it used to wait that long for a
/// leftover that ignores SIGTERM).
#[test]
fn init_ends_with_the_command_and_terms_what_it_left() {
    let dir = std::env::temp_dir().join(format!("ei-left-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("c.toml");
    std::fs::write(&config, "[shutdown]\ntimeout = \"1h\"\n").unwrap();
    let mut run = start(
        As::Subreaper,
        &["--config", config.to_str().unwrap()],
        &["python3", "-c", LEAVER],
    );
    assert_eq!(run.wait_exit(), Some(4));
    run.wait_out("stubborn ");
    let pid = |tag: &str| -> i32 {
        run.out()
            .iter()
            .find_map(|l| l.strip_prefix(tag))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (left, stubborn) = (pid("left "), pid("stubborn "));
    wait_until("the leftover to be gone", || !alive(left));
    assert!(alive(stubborn), "it ignores SIGTERM, and init did not wait");
    // SAFETY: kill(2) on a process of this test.
    unsafe { libc::kill(stubborn, libc::SIGKILL) };
    let _ = std::fs::remove_dir_all(&dir);
}

/// dumb-init's default: the whole process group; `--single-child`
/// (tini's default): the command alone.
#[test]
fn signals_go_to_the_group_or_with_single_child_to_the_command_alone() {
    for how in BOTH {
        let run = reporter(how, &[], &[("GRANDCHILD", "1")]);
        run.wait_out("grandchild ready");
        run.signal(libc::SIGUSR1);
        run.wait_out("grandchild got 10");
        run.wait_out("command got 10");

        let run = reporter(how, &["--single-child"], &[("GRANDCHILD", "1")]);
        run.wait_out("grandchild ready");
        run.signal(libc::SIGUSR1);
        run.wait_out("command got 10");
        // A signal to the grandchild itself, sent after: had init's USR1
        // reached it, it would have come first (lower numbers first).
        let grandchild = descendants(run.init_pid())
            .into_iter()
            .filter(|&p| comm(p) == "python3")
            .max()
            .unwrap();
        // SAFETY: kill(2) on a process of this test.
        unsafe { libc::kill(grandchild, libc::SIGUSR2) };
        run.wait_out("grandchild got 12");
        assert!(
            !run.out().iter().any(|l| l == "grandchild got 10"),
            "{how:?}: {:?}",
            run.out()
        );
    }
}

/// dumb-init's job control: a stop init gets is passed on, then init stops
/// itself (so a shell sees the job stopped); SIGCONT is passed on too.
#[test]
fn job_control_stops_are_passed_on_and_stop_init_too() {
    let run = reporter(As::Subreaper, &[], &[]);
    let init = run.init_pid();
    run.signal(libc::SIGTSTP);
    run.wait_out("command got 20");
    wait_until("init stopped", || state(init) == 'T');
    run.signal(libc::SIGCONT);
    run.wait_out("command got 18");
    wait_until("init running", || state(init) != 'T');
}

/// On a terminal the command is the foreground process group (tini's
/// hand-off): its keys reach it. Ctrl-C kills it with SIGINT, and init
/// exits 130, as the peers do.
#[test]
fn on_a_terminal_the_command_is_in_the_foreground() {
    for how in BOTH {
        let (master, slave) = openpty();
        let mut c = command(
            how,
            &[],
            &["sh", "-c", "read line; echo read: $line; exec sleep 100"],
        );
        let slave_fd = slave.as_raw_fd();
        // SAFETY: setsid, ioctl and dup2 on integers between fork and exec:
        // init gets the terminal as its controlling one, as under
        // `docker run -t`.
        unsafe {
            c.pre_exec(move || {
                libc::setsid();
                libc::ioctl(slave_fd, libc::TIOCSCTTY, 0);
                for fd in 0..3 {
                    libc::dup2(slave_fd, fd);
                }
                Ok(())
            });
        }
        c.stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        let mut child = c.spawn().unwrap();
        drop(slave);
        let screen = read_terminal(&master);
        let mut writer = std::fs::File::from(master.try_clone().unwrap());
        writer.write_all(b"hello\n").unwrap();
        wait_line(&screen, "read: hello", "the terminal");
        // Ctrl-C: the terminal's SIGINT goes to its foreground group.
        wait_until("sleep to run", || {
            descendants(child.id() as i32)
                .iter()
                .any(|&p| comm(p) == "sleep")
        });
        writer.write_all(&[0x03]).unwrap();
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "{how:?}: init did not end");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(
            status.code(),
            Some(130),
            "{how:?}: {:?}",
            screen.0.lock().unwrap()
        );
    }
}

// ---- helpers ----

fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two fds; the other arguments may be null.
    let ret = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(ret, 0);
    // SAFETY: fresh fds owned by no one else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Everything the terminal shows, line by line (read on a thread).
fn read_terminal(master: &OwnedFd) -> Lines {
    let lines: Lines = Arc::default();
    let l = lines.clone();
    let file = std::fs::File::from(master.try_clone().unwrap());
    std::thread::spawn(move || {
        for line in BufReader::new(file).lines() {
            let Ok(line) = line else { break };
            let (lock, cv) = &*l;
            lock.lock().unwrap().push(line);
            cv.notify_all();
        }
    });
    lines
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "waited too long for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_for_process(run: &Run, name: &str) {
    wait_until(name, || {
        descendants(run.init_pid()).iter().any(|&p| comm(p) == name)
    });
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

fn state(pid: i32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()))
        .unwrap_or('?')
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn descendants(root: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

/// As PID 1 of a container (not a kernel's init), no arguments mean no
/// command: a usage error on stderr, as tini and dumb-init give, not an
/// enclave boot (which would mount over the container's /dev, take its
/// console and wait for a heartbeat).
#[test]
fn as_pid1_of_a_container_without_a_command_init_says_how_to_use_it() {
    let mut c = Command::new("unshare");
    c.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(init_bin());
    let mut run = start_with(c);
    assert_eq!(run.wait(), Some(2));
    assert!(run.out().is_empty(), "{:?}", run.out());
    let err = run.err().join("\n");
    assert!(err.contains("--no-boot -- CMD"), "{err}");
}

/// A container without `/run` (distroless, scratch): the control socket
/// cannot be made, which is no error of the command's: init stays silent.
#[test]
fn without_a_place_for_the_control_socket_init_stays_silent() {
    let mut run = start(
        As::Subreaper,
        &["--control-socket", "/dev/null/ctl.sock"],
        &["true"],
    );
    assert_eq!(run.wait(), Some(0));
    assert!(run.err().is_empty(), "{:?}", run.err());
    assert!(run.out().is_empty(), "{:?}", run.out());
}
