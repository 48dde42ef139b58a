//! Starting a process the way `posix_spawn` does: `clone(CLONE_VM |
//! CLONE_VFORK)` on a stack of its own, the child making raw system calls
//! only until it execs.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{
    check, reset_signal_dispositions, set_ignored_disposition, set_signal_mask, InheritedSignals,
};

/// The user and groups a service runs as, resolved before fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

#[cfg(target_env = "gnu")]
pub type RlimitResource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
pub type RlimitResource = libc::c_int;

/// One rlimit to set in the child: (resource, soft, hard).
pub type Rlimit = (RlimitResource, u64, u64);

/// How the child stands towards sessions and terminals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// A session of its own (`setsid`): no terminal, its own process
    /// group. Services.
    New,
    /// A process group of its own in init's session, made the foreground
    /// group of the terminal on fd 0 (`tcsetpgrp`), as tini does: the
    /// one command when init's stdin is a terminal. Its keys (Ctrl-C) and
    /// reads reach it.
    ForegroundOfStdin,
}

/// A process to start, as C data prepared in init: the child only reads
/// it and makes raw system calls.
pub struct ChildPlan {
    program: CString,
    /// Keep the strings that `argv` and `envp` point into alive.
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: CString,
    /// What becomes fd 0, 1 and 2 (`None`: init's own, inherited). Each
    /// is 3 or above, so that one `dup3` cannot overwrite another's source.
    stdio: [Option<OwnedFd>; 3],
    identity: Option<Identity>,
    limits: Vec<Rlimit>,
    cgroup_procs: Option<CString>,
    session: Session,
    /// What the child starts with: signals ignored and blocked (by default
    /// none; the one command keeps what init's caller left).
    signals: InheritedSignals,
    /// `UMask=`; `None`: init's own.
    umask: Option<u32>,
}

impl ChildPlan {
    /// The session and the signals of the one command (`new` gives a
    /// service's: a session of its own, nothing ignored or blocked).
    pub fn with(mut self, session: Session, signals: InheritedSignals) -> Self {
        self.session = session;
        self.signals = signals;
        self
    }

    /// The file mode creation mask the child execs with.
    pub fn with_umask(mut self, umask: Option<u32>) -> Self {
        self.umask = umask;
        self
    }

    /// Fails (EINVAL) when a string holds a NUL byte, which exec cannot
    /// pass, or when a descriptor cannot be moved above 2.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        program: &std::path::Path,
        argv: &[std::ffi::OsString],
        env: &[(std::ffi::OsString, std::ffi::OsString)],
        cwd: &std::path::Path,
        stdio: [Option<OwnedFd>; 3],
        identity: Option<Identity>,
        limits: Vec<Rlimit>,
        cgroup_procs: Option<&std::path::Path>,
    ) -> io::Result<Self> {
        let c = |bytes: Vec<u8>| {
            CString::new(bytes).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a NUL byte in the command or environment",
                )
            })
        };
        let path = |p: &std::path::Path| c(p.as_os_str().as_encoded_bytes().to_vec());
        let args: Vec<CString> = argv
            .iter()
            .map(|a| c(a.as_encoded_bytes().to_vec()))
            .collect::<io::Result<_>>()?;
        let vars: Vec<CString> = env
            .iter()
            .map(|(k, v)| {
                let mut var = k.as_encoded_bytes().to_vec();
                var.push(b'=');
                var.extend_from_slice(v.as_encoded_bytes());
                c(var)
            })
            .collect::<io::Result<_>>()?;
        let pointers = |strings: &[CString]| {
            strings
                .iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let (argv, envp) = (pointers(&args), pointers(&vars));
        let [a, b, c2] = stdio;
        let stdio = [above_stdio(a)?, above_stdio(b)?, above_stdio(c2)?];
        Ok(Self {
            program: path(program)?,
            _strings: args.into_iter().chain(vars).collect(),
            argv,
            envp,
            cwd: path(cwd)?,
            stdio,
            identity,
            limits,
            cgroup_procs: cgroup_procs.map(path).transpose()?,
            session: Session::New,
            signals: InheritedSignals::default(),
            umask: None,
        })
    }
}

/// `fd`, moved to a number above 2 if it is one of 0, 1, 2.
fn above_stdio(fd: Option<OwnedFd>) -> io::Result<Option<OwnedFd>> {
    match fd {
        Some(fd) if fd.as_raw_fd() < 3 => {
            // SAFETY: F_DUPFD_CLOEXEC on an open descriptor; the new one is
            // owned by the OwnedFd made from it.
            let raw = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
            // SAFETY: `raw` was just returned by fcntl and is owned by no one.
            Ok(Some(unsafe { OwnedFd::from_raw_fd(raw) }))
        }
        other => Ok(other),
    }
}

/// The child's steps, for the error message when one fails.
const STEPS: [&str; 11] = [
    "",
    "setsid",
    "setrlimit",
    "dup3",
    "chdir",
    "setgroups",
    "setgid",
    "setuid",
    "sigprocmask",
    "exec",
    "tcsetpgrp",
];

/// Shared between init and its child, which runs in init's memory until it
/// execs: the plan, and where it failed (a step of [`STEPS`] and errno).
struct Shared {
    plan: *const ChildPlan,
    step: usize,
    errno: i32,
    /// Joining the service's cgroup failed with this errno (0: it did not).
    cgroup_errno: i32,
}

/// A started process.
#[derive(Debug)]
pub struct Started {
    pub pid: i32,
    /// Why it could not join its cgroup, when it could not: it is then
    /// tracked by its process group only.
    pub cgroup_error: Option<io::Error>,
}

/// The stack the child runs on between clone and exec: its own mapping,
/// with a guard page below it, so that an overflow faults instead of
/// writing over init's heap.
pub struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    const SIZE: usize = 64 * 1024;

    pub fn new() -> io::Result<Self> {
        // SAFETY: sysconf takes an integer.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = Self::SIZE + page;
        // SAFETY: a fresh anonymous private mapping; no memory of ours is
        // touched. Not populated: only the pages the child uses are faulted in.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Self { base, len };
        // The lowest page: the guard (the stack grows down towards it).
        // SAFETY: the first page of the mapping just made.
        check(unsafe { libc::mprotect(base, page, libc::PROT_NONE) })?;
        Ok(stack)
    }

    /// The top of the stack, 16-byte aligned, for clone.
    fn top(&self) -> *mut libc::c_void {
        let top = (self.base as usize + self.len) & !15;
        top as *mut libc::c_void
    }

    /// The mapping's address range, guard page included.
    pub fn range(&self) -> (usize, usize) {
        (self.base as usize, self.base as usize + self.len)
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping `new` made, once.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Starts the process: `clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn`
/// does, so that init's page tables are not copied for every start (the
/// cost of `fork` grows with init's memory). Init is suspended until the
/// child execs or exits. Returns its pid once exec succeeded; when a step
/// failed, the child has exited and been reaped here, and the error names
/// the step (`"exec"`, `"chdir"`, ...).
pub fn spawn(plan: &ChildPlan) -> Result<Started, (&'static str, io::Error)> {
    let stack = ChildStack::new().map_err(|e| ("fork", e))?;
    let mut shared = Shared {
        plan,
        step: 0,
        errno: 0,
        cgroup_errno: 0,
    };
    // SAFETY: the child runs `child_main` on its own stack (`stack`, alive
    // until clone returns, which CLONE_VFORK makes after the child's exec
    // or exit) and, sharing init's memory, only reads `plan` and writes
    // `shared`'s fields while init is suspended. It makes raw system calls
    // only: no allocation, no locks, no libc state (errno aside, which init
    // does not rely on across this call). Every signal is blocked in init
    // (by the raw system call, libc's own signals included), so none is
    // handled in the child before it resets their dispositions.
    let pid = unsafe {
        libc::clone(
            child_main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut shared as *mut Shared).cast(),
        )
    };
    drop(stack);
    if pid == -1 {
        return Err(("fork", io::Error::last_os_error()));
    }
    if shared.step == 0 {
        return Ok(Started {
            pid,
            cgroup_error: (shared.cgroup_errno != 0)
                .then(|| io::Error::from_raw_os_error(shared.cgroup_errno)),
        });
    }
    // The child exited before exec: reap it here, before init's reaper
    // could mistake it for a service's process.
    let mut status = 0;
    // SAFETY: waitpid on our own exited child; writes only to `status`.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let step = STEPS.get(shared.step).copied().unwrap_or("spawn");
    Err((step, io::Error::from_raw_os_error(shared.errno)))
}

/// The child, between clone and exec. Raw system calls only (see
/// [`spawn`]); nothing here may panic, allocate or take a lock.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    let shared = arg.cast::<Shared>();
    // SAFETY: `arg` is the `Shared` of `spawn`, alive and not touched by
    // the suspended parent until this child execs or exits; its plan too.
    let plan = unsafe { &*(*shared).plan };
    // SAFETY: as above; `cgroup_errno` is this child's to write.
    let step = child_steps(plan, unsafe { &mut (*shared).cgroup_errno });
    // Only reached when a step failed (exec does not return on success).
    // SAFETY: as above; errno is read from this thread's (init's) TLS,
    // which only this child uses while init is suspended.
    unsafe {
        (*shared).step = step;
        (*shared).errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL);
        libc::syscall(libc::SYS_exit, 127);
    }
    127
}

/// Whether a raw system call succeeded.
fn ok(ret: libc::c_long) -> bool {
    ret != -1
}

/// The child's work in order; returns the index in [`STEPS`] of the step
/// that failed (exec returning is a failure). Every call is a raw system
/// call whose arguments are integers, or pointers into `plan` or to locals
/// that stay valid for the call.
fn child_steps(plan: &ChildPlan, cgroup_errno: &mut i32) -> usize {
    if let Some(path) = &plan.cgroup_procs {
        // Join the service's cgroup before anything can fork. Writing "0"
        // moves the writer. A failure leaves the process group as the only
        // tracking: init logs it and signals the group as well.
        let flags = libc::O_WRONLY | libc::O_CLOEXEC;
        // SAFETY: path is a valid C string.
        let fd = unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), flags) };
        // SAFETY: a static one-byte buffer; then closing our own fd.
        let written =
            fd >= 0 && unsafe { libc::syscall(libc::SYS_write, fd, b"0".as_ptr(), 1usize) } == 1;
        if !written {
            *cgroup_errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
        }
        if fd >= 0 {
            // SAFETY: closing our own fd.
            unsafe { libc::syscall(libc::SYS_close, fd) };
        }
    }
    match plan.session {
        // Own session and process group: stopping the service signals it
        // whole.
        Session::New => {
            // SAFETY: no arguments.
            if !ok(unsafe { libc::syscall(libc::SYS_setsid) }) {
                return 1;
            }
        }
        Session::ForegroundOfStdin => {
            // SAFETY: integers: this process becomes its own group.
            if !ok(unsafe { libc::syscall(libc::SYS_setpgid, 0, 0) }) {
                return 1;
            }
            // SAFETY: no arguments.
            let pgrp = unsafe { libc::syscall(libc::SYS_getpid) } as libc::pid_t;
            // The foreground group of the terminal. Every signal is still
            // blocked here, SIGTTOU included, so a background group may
            // do this. A stdin that stopped being a terminal is no error:
            // there is nothing to hand over.
            // SAFETY: fd 0 and a pointer to a valid local pid.
            let ret = unsafe { libc::ioctl(0, libc::TIOCSPGRP, &pgrp as *const libc::pid_t) };
            if ret == -1 && io::Error::last_os_error().raw_os_error() != Some(libc::ENOTTY) {
                return 10;
            }
        }
    }
    // Default dispositions: init reset its own at start, but one it set
    // since (none today) must not reach a service. Raw syscalls, because
    // libc's signal() refuses the signals it keeps (32 and 33 in glibc).
    // The one command keeps what init's caller ignored, as tini does.
    reset_signal_dispositions();
    for signal in 1..=64 {
        if plan.signals.ignored & (1 << (signal - 1)) != 0 {
            set_ignored_disposition(signal);
        }
    }
    for (resource, soft, hard) in &plan.limits {
        let rlim = libc::rlimit {
            rlim_cur: *soft,
            rlim_max: *hard,
        };
        let (resource, new, old) = (
            *resource as libc::c_int,
            &rlim as *const libc::rlimit,
            std::ptr::null_mut::<libc::rlimit>(),
        );
        // SAFETY: `new` points to a valid local; no old value is asked for.
        if !ok(unsafe { libc::syscall(libc::SYS_prlimit64, 0, resource, new, old) }) {
            return 2;
        }
    }
    for (target, source) in plan.stdio.iter().enumerate() {
        if let Some(source) = source {
            let (source, target) = (source.as_raw_fd(), target as libc::c_int);
            // SAFETY: integers; dup3 clears close-on-exec on the copy.
            if !ok(unsafe { libc::syscall(libc::SYS_dup3, source, target, 0) }) {
                return 3;
            }
        }
    }
    if let Some(mask) = plan.umask {
        // SAFETY: an integer; umask cannot fail.
        unsafe { libc::syscall(libc::SYS_umask, mask) };
    }
    // SAFETY: a valid C string.
    if !ok(unsafe { libc::syscall(libc::SYS_chdir, plan.cwd.as_ptr()) }) {
        return 4;
    }
    if let Some(id) = &plan.identity {
        // Groups first, then gid, then uid: after setuid we may not. Raw:
        // libc's wrappers would try to change every thread of init.
        let (count, groups) = (id.groups.len(), id.groups.as_ptr());
        // SAFETY: pointer and length describe `id.groups`.
        if !ok(unsafe { libc::syscall(libc::SYS_setgroups, count, groups) }) {
            return 5;
        }
        // SAFETY: an integer.
        if !ok(unsafe { libc::syscall(libc::SYS_setgid, id.gid) }) {
            return 6;
        }
        // SAFETY: an integer.
        if !ok(unsafe { libc::syscall(libc::SYS_setuid, id.uid) }) {
            return 7;
        }
    }
    // Only 0, 1, 2 survive exec. Init marked what it inherited
    // close-on-exec at start and opens everything close-on-exec, so this
    // is a second line only; kernels before 5.11 lack close_range and
    // skip it.
    let cloexec = libc::CLOSE_RANGE_CLOEXEC;
    // SAFETY: integers.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, cloexec) };
    // Init blocks every signal; the service starts with an empty mask (the
    // one command: its caller's), set last so that no signal is handled
    // before exec.
    if !ok(set_signal_mask(plan.signals.blocked)) {
        return 8;
    }
    let (program, argv, envp) = (
        plan.program.as_ptr(),
        plan.argv.as_ptr(),
        plan.envp.as_ptr(),
    );
    // SAFETY: a C string and two null-terminated arrays of C strings, all
    // owned by `plan`.
    unsafe { libc::syscall(libc::SYS_execve, program, argv, envp) };
    9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_stack_has_a_guard_page_below_it() {
        let stack = ChildStack::new().unwrap();
        let (start, end) = stack.range();
        // SAFETY: sysconf takes an integer.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        // /proc/self/maps: "start-end perms ...", in hex. A neighbour with
        // the same permissions may have merged into either region.
        let region_at = |addr: usize| {
            maps.lines()
                .filter_map(|l| {
                    let mut f = l.split_whitespace();
                    let (a, b) = f.next()?.split_once('-')?;
                    Some((
                        usize::from_str_radix(a, 16).ok()?,
                        usize::from_str_radix(b, 16).ok()?,
                        f.next()?.to_string(),
                    ))
                })
                .find(|(a, b, _)| *a <= addr && addr < *b)
                .unwrap()
        };
        let guard = region_at(start);
        assert_eq!(guard.2, "---p", "the lowest page is the guard: {guard:?}");
        assert_eq!(guard.1, start + page, "{guard:?}");
        let usable = region_at(start + page);
        assert_eq!(usable.2, "rw-p", "{usable:?}");
        assert_eq!(usable.0, start + page, "{usable:?}");
        assert!(usable.1 >= end, "{usable:?}");
        assert_eq!(stack.top() as usize % 16, 0);
    }
}
