//! Test harness: the real `enclave-init` binary as PID 1 of a new PID
//! namespace (`unshare --pid --fork --mount-proc`) or as a child subreaper,
//! on a temporary service directory. Tests wait for events (a console
//! line, a socket, a file) with generous bounds, never for fixed sleeps.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const WAIT: Duration = Duration::from_secs(30);

pub fn init_bin() -> &'static str {
    env!("CARGO_BIN_EXE_enclave-init")
}

pub fn initctl_bin() -> PathBuf {
    // initctl is a sibling package's binary in the same target directory;
    // `cargo build --workspace` (which the test command runs first) makes it.
    let exe = PathBuf::from(init_bin()).with_file_name("initctl");
    assert!(
        exe.exists(),
        "{} is missing: run `cargo build --workspace` first (cargo xtask test does)",
        exe.display()
    );
    exe
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("ei-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum As {
    /// PID 1 of a new PID namespace.
    Pid1,
    /// A plain child of the test: init makes itself a subreaper.
    Subreaper,
}

/// Every line init printed, with when it arrived.
type Lines = Arc<(Mutex<Vec<(Instant, String)>>, Condvar)>;

/// A running init and everything it printed.
pub struct Init {
    pub child: Child,
    pub dir: TempDir,
    pub socket: PathBuf,
    lines: Lines,
    pub exit: Option<std::process::ExitStatus>,
    /// The threads reading init's stdout and stderr; they end at EOF.
    readers: Vec<std::thread::JoinHandle<()>>,
}

pub struct Builder {
    dir: TempDir,
    how: As,
    extra_args: Vec<String>,
    command: Vec<OsString>,
    config: Option<String>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<String>,
    uid: Option<u32>,
    wrapper: Vec<String>,
    unread_stdout: bool,
    ignored_signals: Vec<i32>,
    stray_fd: Option<i32>,
    no_close_range: bool,
}

impl Builder {
    pub fn new(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        std::fs::create_dir_all(dir.path().join("service")).unwrap();
        Self {
            dir,
            how: As::Pid1,
            extra_args: Vec::new(),
            command: Vec::new(),
            config: None,
            env: Vec::new(),
            env_remove: Vec::new(),
            uid: None,
            wrapper: Vec::new(),
            unread_stdout: false,
            ignored_signals: Vec::new(),
            stray_fd: None,
            no_close_range: false,
        }
    }

    pub fn service(self, name: &str, text: &str) -> Self {
        self.dir.write(&format!("service/{name}.service"), text);
        self
    }

    pub fn how(mut self, how: As) -> Self {
        self.how = how;
        self
    }

    pub fn command(mut self, argv: &[&str]) -> Self {
        self.command = argv.iter().map(OsString::from).collect();
        self
    }

    /// `-- CMD` as raw bytes (arguments that are not UTF-8).
    pub fn command_bytes(mut self, argv: &[&[u8]]) -> Self {
        self.command = argv
            .iter()
            .map(|a| OsString::from_vec(a.to_vec()))
            .collect();
        self
    }

    pub fn config(mut self, text: &str) -> Self {
        self.config = Some(text.to_string());
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_string());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// An environment variable whose value is raw bytes.
    pub fn env_bytes(mut self, key: &str, value: &[u8]) -> Self {
        self.env
            .push((key.into(), OsString::from_vec(value.to_vec())));
        self
    }

    /// Init starts with these signals ignored (a parent's choice that
    /// survives exec).
    pub fn ignore_signals(mut self, signals: &[i32]) -> Self {
        self.ignored_signals.extend_from_slice(signals);
        self
    }

    /// Init starts with `/dev/null` open as descriptor `fd`, not
    /// close-on-exec (a careless parent's leak).
    pub fn stray_fd(mut self, fd: i32) -> Self {
        self.stray_fd = Some(fd);
        self
    }

    /// Init runs as on a kernel before 5.11: `close_range` fails with
    /// ENOSYS (a seccomp filter, inherited by everything init starts).
    pub fn without_close_range(mut self) -> Self {
        self.no_close_range = true;
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.env_remove.push(key.into());
        self
    }

    /// Runs init as this user (as a subreaper: PID namespaces need root).
    pub fn uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self.how = As::Subreaper;
        self
    }

    /// Runs init under a command, e.g. `prlimit --nproc=...`.
    pub fn wrapper(mut self, argv: &[&str]) -> Self {
        self.wrapper = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Init's stdout and stderr go to a pipe nobody reads (until
    /// `Init::drain_console`).
    pub fn unread_stdout(mut self) -> Self {
        self.unread_stdout = true;
        self
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn start(self) -> Init {
        let socket = self.dir.path().join("ctl.sock");
        let config = self
            .dir
            .write("enclave-init.toml", self.config.as_deref().unwrap_or(""));
        let mut args: Vec<OsString> = vec![
            "--no-boot".into(),
            "--config".into(),
            config.into(),
            "--service-dir".into(),
            self.dir.path().join("service").into(),
            "--control-socket".into(),
            socket.clone().into(),
        ];
        args.extend(self.extra_args.iter().map(OsString::from));
        if !self.command.is_empty() {
            args.push("--".into());
            args.extend(self.command);
        }
        let mut cmd = match self.how {
            As::Pid1 => {
                let mut c = Command::new("unshare");
                c.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
                    .arg(init_bin())
                    .args(&args);
                c
            }
            As::Subreaper => {
                let mut c = Command::new(init_bin());
                c.args(&args);
                c
            }
        };
        if !self.wrapper.is_empty() {
            let inner = cmd;
            let mut c = Command::new(&self.wrapper[0]);
            c.args(&self.wrapper[1..])
                .arg(inner.get_program())
                .args(inner.get_args());
            cmd = c;
        }
        if let Some(uid) = self.uid {
            std::os::unix::process::CommandExt::uid(&mut cmd, uid);
            std::os::unix::process::CommandExt::gid(&mut cmd, uid);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Init starts with fds 0-2 only, as the kernel starts PID 1: not with
        // the descriptors the test runner leaves open (cargo's jobserver).
        let ignored = self.ignored_signals.clone();
        let stray = self.stray_fd.map(|fd| {
            let null = std::fs::File::open("/dev/null").unwrap();
            (std::os::fd::OwnedFd::from(null), fd)
        });
        let no_close_range = self.no_close_range;
        // SAFETY: between fork and exec only async-signal-safe system calls
        // on integers and on memory prepared before the fork.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                // Marking (not closing) keeps std's exec-error pipe working.
                libc::syscall(
                    libc::SYS_close_range,
                    3u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                );
                for &signal in &ignored {
                    libc::signal(signal, libc::SIG_IGN);
                }
                if let Some((null, target)) = &stray {
                    // dup2 leaves the copy without close-on-exec.
                    if libc::dup2(std::os::fd::AsRawFd::as_raw_fd(null), *target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if no_close_range {
                    deny_close_range()?;
                }
                Ok(())
            });
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for k in &self.env_remove {
            cmd.env_remove(k);
        }
        let mut child = cmd
            .spawn()
            .expect("start enclave-init (is unshare installed? run as root)");
        let lines: Lines = Arc::default();
        if self.unread_stdout {
            return Init {
                child,
                dir: self.dir,
                socket,
                lines,
                exit: None,
                readers: Vec::new(),
            };
        }
        let mut readers = Vec::new();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if std::env::var_os("EI_TEST_ECHO").is_some() {
                        eprintln!("| {line}");
                    }
                    let (lock, cv) = &*lines;
                    lock.lock().unwrap().push((Instant::now(), line));
                    cv.notify_all();
                }
            }));
        }
        Init {
            child,
            dir: self.dir,
            socket,
            lines,
            exit: None,
            readers,
        }
    }
}

impl Init {
    /// Starts reading init's output (after `Builder::unread_stdout`).
    pub fn drain_console(&mut self) {
        let streams: Vec<Box<dyn std::io::Read + Send>> = [
            self.child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            self.child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        for stream in streams {
            let lines = self.lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let (lock, cv) = &*lines;
                    lock.lock().unwrap().push((Instant::now(), line));
                    cv.notify_all();
                }
            });
        }
    }

    pub fn output(&self) -> String {
        let (lock, _) = &*self.lines;
        lock.lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn lines(&self) -> Vec<String> {
        let (lock, _) = &*self.lines;
        lock.lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Waits until `count` lines contain `needle`; returns when each came.
    pub fn wait_count(&self, needle: &str, count: usize) -> Vec<Instant> {
        self.wait_count_within(needle, count, WAIT)
    }

    /// `wait_count` with a bound of its own (soaks on a loaded machine).
    pub fn wait_count_within(&self, needle: &str, count: usize, bound: Duration) -> Vec<Instant> {
        let (lock, cv) = &*self.lines;
        let deadline = Instant::now() + bound;
        let mut guard = lock.lock().unwrap();
        loop {
            let hits: Vec<Instant> = guard
                .iter()
                .filter(|(_, l)| l.contains(needle))
                .map(|(t, _)| *t)
                .collect();
            if hits.len() >= count {
                return hits;
            }
            let now = Instant::now();
            if now >= deadline {
                drop(guard);
                panic!(
                    "timed out waiting for {count} lines containing {needle:?}; output:\n{}",
                    self.output()
                );
            }
            guard = cv.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    pub fn wait_for(&self, needle: &str) -> Instant {
        self.wait_count(needle, 1)[0]
    }

    /// How many lines init has printed so far: a point to wait after.
    pub fn mark(&self) -> usize {
        let (lock, _) = &*self.lines;
        lock.lock().unwrap().len()
    }

    /// Waits for a line containing `needle` printed after `mark`; returns
    /// its index among every line.
    pub fn wait_after(&self, mark: usize, needle: &str) -> usize {
        let (lock, cv) = &*self.lines;
        let deadline = Instant::now() + WAIT;
        let mut guard = lock.lock().unwrap();
        loop {
            if let Some(i) = guard
                .iter()
                .skip(mark)
                .position(|(_, l)| l.contains(needle))
            {
                return mark + i;
            }
            let now = Instant::now();
            if now >= deadline {
                drop(guard);
                panic!(
                    "timed out waiting for a line containing {needle:?} after line {mark}; output:\n{}",
                    self.output()
                );
            }
            guard = cv.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// The line containing `needle` (waiting for it).
    pub fn line_with(&self, needle: &str) -> String {
        self.wait_for(needle);
        self.lines()
            .into_iter()
            .find(|l| l.contains(needle))
            .unwrap()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// The host pid of the init process itself.
    pub fn init_pid(&self) -> i32 {
        let outer = self.child.id() as i32;
        // Under unshare, init is unshare's only child.
        match std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children")) {
            Ok(children) if !children.trim().is_empty() && is_unshare(outer) => {
                children.split_whitespace().next().unwrap().parse().unwrap()
            }
            _ => outer,
        }
    }

    pub fn signal(&self, signal: i32) {
        let pid = self.init_pid();
        // SAFETY: plain kill(2) on a pid we started.
        unsafe { libc::kill(pid, signal) };
    }

    /// Waits for init to exit; returns its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Every line init wrote is in once its readers hit EOF.
                wait_until("init's output to end", || {
                    self.readers.iter().all(|r| r.is_finished())
                });
                self.exit = Some(status);
                return status;
            }
            if Instant::now() > deadline {
                panic!("init did not exit; output:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs initctl against this init.
    pub fn initctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(initctl_bin())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run initctl")
    }

    /// `initctl status NAME --json`.
    pub fn status(&self, name: &str) -> serde_json::Value {
        let out = self.initctl(&["status", name, "--json"]);
        assert!(
            out.status.success(),
            "initctl status {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn wait_socket(&self) {
        wait_until("control socket", || self.socket.exists());
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        // A subreaper's services outlive it; a PID namespace's do not.
        // Either way nothing of a test may stay behind.
        let pid = self.init_pid();
        for p in descendants(pid) {
            // SAFETY: plain kill(2) on processes this test started.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        if self.exit.is_none() {
            // SAFETY: plain kill(2) on processes we started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Installs a seccomp filter that makes `close_range(2)` fail with ENOSYS,
/// as on kernels before 5.11. Called between fork and exec: no allocation.
fn deny_close_range() -> std::io::Result<()> {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    let stmt = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u16, k: u32, jt: u8, jf: u8| libc::sock_filter { code, jt, jf, k };
    let (ld, jeq, ret) = (
        (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        (libc::BPF_RET | libc::BPF_K) as u16,
    );
    let program = [
        // seccomp_data: nr at offset 0, arch at offset 4.
        stmt(ld, 4),
        jump(jeq, AUDIT_ARCH_X86_64, 0, 3),
        stmt(ld, 0),
        jump(jeq, libc::SYS_close_range as u32, 0, 1),
        stmt(ret, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        stmt(ret, SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points to a valid filter for the duration of the call.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Every descendant of `root`, from /proc's parent links.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for child in children_of(p) {
            out.push(child);
            frontier.push(child);
        }
    }
    out
}

fn is_unshare(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "unshare")
}

/// Polls `f` until true, with the generous bound; for state that has no
/// line to wait on (a file appearing, a process gone).
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Fields of /proc/<pid>/status as (key, value).
pub fn proc_status(pid: i32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        })
        .collect()
}

pub fn status_field(pid: i32, key: &str) -> String {
    proc_status(pid)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// (state, ppid, pgid, sid) from /proc/<pid>/stat.
pub fn proc_stat(pid: i32) -> Option<(char, i32, i32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((
        f[0].chars().next()?,
        f[1].parse().ok()?,
        f[2].parse().ok()?,
        f[3].parse().ok()?,
    ))
}

/// Host pids whose parent is `ppid`.
pub fn children_of(ppid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() {
            if proc_stat(pid).is_some_and(|(_, p, _, _)| p == ppid) {
                out.push(pid);
            }
        }
    }
    out
}

/// The pid in `started (pid N)` for `service`.
pub fn started_pid(init: &Init, service: &str, nth: usize) -> i32 {
    let needle = format!("{service}: started (pid ");
    init.wait_count(&needle, nth);
    let line = init
        .lines()
        .into_iter()
        .filter(|l| l.contains(&needle))
        .nth(nth - 1)
        .unwrap();
    line.rsplit("(pid ")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .parse()
        .unwrap()
}

/// utime + stime of a process, in clock ticks (usually 10 ms).
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from "state" as 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Waits until the process sleeps in an epoll wait.
pub fn wait_in_epoll(pid: i32) {
    let waits = [
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_pwait2,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_epoll_wait,
    ]
    .map(|n| n.to_string());
    wait_until("init asleep in epoll_wait", || {
        let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        syscall
            .split_whitespace()
            .next()
            .is_some_and(|n| waits.iter().any(|w| w == n))
    });
}

/// The CPU time `pid` spends over a one-second window. A measurement
/// window, not a synchronisation: a process that waits for events spends
/// about nothing; one that spins spends the whole second (100 ticks).
pub fn cpu_ticks_over_a_second(pid: i32) -> u64 {
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    cpu_ticks(pid) - before
}
