//! Every raw syscall of init: one function each, returning `io::Result`,
//! each `unsafe` block with its `SAFETY:` reasoning. Everything else in the
//! crate is safe code. Where `nix` wraps a call without loss it is used;
//! `waitpid` and `kill` are raw because nix rejects signal numbers outside
//! its enum (real-time signals), and for `waitpid` it would do so after the
//! child was already reaped, losing its exit.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::lifecycle::{Exit, Pid};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Reaps one exited child, if any: `Ok(None)` when children exist but none
/// has exited; `Err(ECHILD)` when there are no children at all.
pub fn reap_one() -> io::Result<Option<(Pid, Exit)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid writes only to `status`, a valid local.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    if pid == -1 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        return Ok(None);
    }
    let exit = if libc::WIFEXITED(status) {
        Exit::Code(libc::WEXITSTATUS(status))
    } else {
        Exit::Signal(libc::WTERMSIG(status))
    };
    Ok(Some((pid, exit)))
}

/// `kill(2)`: `pid` > 0 one process, `pid` < 0 a process group, -1 all.
pub fn kill(pid: Pid, signal: i32) -> io::Result<()> {
    // SAFETY: kill takes plain integers and touches no memory of ours.
    check(unsafe { libc::kill(pid, signal) }).map(drop)
}

pub fn getpid() -> Pid {
    std::process::id() as Pid
}

pub fn set_child_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// Blocks every signal in init; they are read through a signalfd instead.
pub fn block_all_signals() -> io::Result<nix::sys::signal::SigSet> {
    let all = nix::sys::signal::SigSet::all();
    nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&all), None)?;
    Ok(all)
}

/// Opens `path` for writing without ever blocking (console output).
pub fn open_nonblocking_writer(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    Ok(OwnedFd::from(file))
}

pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// A pipe whose ends are both close-on-exec; the read end is non-blocking.
pub fn output_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    set_nonblocking(std::os::fd::AsFd::as_fd(&read))?;
    Ok((read, write))
}

pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    nix::unistd::read(fd, buf).map_err(io::Error::from)
}

pub fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    nix::unistd::write(fd, buf).map_err(io::Error::from)
}

/// `send(MSG_DONTWAIT)`: a non-blocking write to a socket whose file
/// description others share (so O_NONBLOCK cannot be set on it).
pub fn send_nonblocking(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid slice for its length; send only reads it.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A signal read from a signalfd: its number and the sender's pid.
pub type SignalInfo = (i32, Pid);

/// The filler of a [`read_signals`] buffer.
pub const NO_SIGNAL: SignalInfo = (0, 0);

/// Reads up to `out.len()` pending signals from a non-blocking signalfd in
/// one `read`; how many. `WouldBlock` when none is pending.
pub fn read_signals(fd: BorrowedFd<'_>, out: &mut [SignalInfo]) -> io::Result<usize> {
    const SIZE: usize = std::mem::size_of::<libc::signalfd_siginfo>();
    let mut raw = [0u8; SIZE * 16];
    let want = (out.len() * SIZE).min(raw.len());
    let n = read(fd, raw.get_mut(..want).unwrap_or_default())?;
    let mut count = 0;
    for (chunk, slot) in raw
        .get(..n)
        .unwrap_or_default()
        .chunks_exact(SIZE)
        .zip(out.iter_mut())
    {
        // signalfd_siginfo starts with ssi_signo (u32), ssi_errno (i32),
        // ssi_code (i32), ssi_pid (u32), in native byte order.
        let field = |at: usize| {
            chunk
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u32::from_ne_bytes)
        };
        *slot = (field(0) as i32, field(12) as Pid);
        count += 1;
    }
    Ok(count)
}

pub fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

pub fn sync() {
    nix::unistd::sync();
}

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
}

impl ChildPlan {
    /// Fails (EINVAL) when a string holds a NUL byte, which exec cannot
    /// pass, or when a descriptor cannot be moved above 2.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        program: &std::path::Path,
        argv: &[String],
        env: &[(String, String)],
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
            .map(|a| c(a.clone().into_bytes()))
            .collect::<io::Result<_>>()?;
        let vars: Vec<CString> = env
            .iter()
            .map(|(k, v)| c(format!("{k}={v}").into_bytes()))
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
const STEPS: [&str; 10] = [
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
];

/// Shared between init and its child, which runs in init's memory until it
/// execs: the plan, and where it failed (a step of [`STEPS`] and errno).
struct Shared {
    plan: *const ChildPlan,
    step: usize,
    errno: i32,
}

/// Starts the process: `clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn`
/// does, so that init's page tables are not copied for every start (the
/// cost of `fork` grows with init's memory). Init is suspended until the
/// child execs or exits. Returns its pid once exec succeeded; when a step
/// failed, the child has exited and been reaped here, and the error names
/// the step (`"exec"`, `"chdir"`, ...).
pub fn spawn(plan: &ChildPlan) -> Result<i32, (&'static str, io::Error)> {
    const STACK: usize = 64 * 1024;
    // Uninitialised: a stack needs no zeroing (and a start no 64 KiB memset).
    let mut stack: Vec<u8> = Vec::with_capacity(STACK);
    let mut shared = Shared {
        plan,
        step: 0,
        errno: 0,
    };
    // The stack grows down: pass its top, 16-byte aligned.
    let top = stack.as_mut_ptr().wrapping_add(STACK) as usize & !15;
    // SAFETY: the child runs `child_main` on its own stack (`stack`, alive
    // until clone returns, which CLONE_VFORK makes after the child's exec
    // or exit) and, sharing init's memory, only reads `plan` and writes
    // `shared.step`/`shared.errno` while init is suspended. It makes raw
    // system calls only: no allocation, no locks, no libc state (errno
    // aside, which init does not rely on across this call). Signals are
    // blocked in init, so none is handled in the child before it resets
    // their dispositions.
    let pid = unsafe {
        libc::clone(
            child_main,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut shared as *mut Shared).cast(),
        )
    };
    drop(stack);
    if pid == -1 {
        return Err(("fork", io::Error::last_os_error()));
    }
    if shared.step == 0 {
        return Ok(pid);
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
    let step = child_steps(plan);
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
fn child_steps(plan: &ChildPlan) -> usize {
    if let Some(path) = &plan.cgroup_procs {
        // Join the service's cgroup before anything can fork. Writing "0"
        // moves the writer. A failure leaves the process group as the only
        // tracking, which the supervisor still has; not worth a failed start.
        let flags = libc::O_WRONLY | libc::O_CLOEXEC;
        // SAFETY: path is a valid C string.
        let fd = unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), flags) };
        if fd >= 0 {
            // SAFETY: a static one-byte buffer; then closing our own fd.
            unsafe {
                libc::syscall(libc::SYS_write, fd, b"0".as_ptr(), 1usize);
                libc::syscall(libc::SYS_close, fd);
            }
        }
    }
    // Own session and process group: stopping the service signals it whole.
    // SAFETY: no arguments.
    if !ok(unsafe { libc::syscall(libc::SYS_setsid) }) {
        return 1;
    }
    // Default dispositions: an ignored signal inherited by init would
    // otherwise pass on through exec. The raw syscall, because libc's
    // signal() refuses the signals it reserves for itself (32 and 33 in
    // glibc), which may still arrive ignored from whoever started init.
    for signal in 1..=64 {
        if signal != libc::SIGKILL && signal != libc::SIGSTOP {
            set_default_disposition(signal);
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
    // Only 0, 1, 2 survive exec. Kernels before 5.11 lack close_range:
    // then walk the descriptor table.
    let cloexec = libc::CLOSE_RANGE_CLOEXEC;
    // SAFETY: integers.
    if !ok(unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, cloexec) }) {
        for fd in 3..4096 {
            // SAFETY: integers; EBADF for numbers not open is harmless.
            unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    // Init blocks every signal; the service starts with an empty mask, set
    // last so that no signal is handled before exec.
    let (empty, old) = (&0u64 as *const u64, std::ptr::null_mut::<u64>());
    // SAFETY: `empty` points to a valid 8-byte mask, the kernel's size.
    if !ok(unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            empty,
            old,
            8usize,
        )
    }) {
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

/// The kernel's `struct sigaction` (x86_64, aarch64): handler, flags,
/// restorer, mask. SIG_DFL needs no restorer.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

fn set_default_disposition(signal: i32) {
    let action = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: `action` is a valid kernel sigaction for the call; the old
    // action is not asked for; the mask size is the kernel's (8 bytes).
    // Errors (a number the kernel does not know) are harmless and ignored.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            signal,
            &action as *const KernelSigaction,
            std::ptr::null_mut::<KernelSigaction>(),
            8usize,
        );
    }
}

/// `reboot(2)` with POWER_OFF or RESTART. Returns only on failure.
pub fn reboot(restart: bool) -> io::Error {
    use nix::sys::reboot::{reboot, RebootMode};
    let mode = if restart {
        RebootMode::RB_AUTOBOOT
    } else {
        RebootMode::RB_POWER_OFF
    };
    match reboot(mode) {
        Ok(never) => match never {},
        Err(e) => io::Error::from(e),
    }
}

/// `initctl`'s caller check: the peer's credentials on a Unix socket.
pub fn peer_uid(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let creds = nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::PeerCredentials)?;
    Ok(creds.uid())
}

/// `mount(2)`. `fstype`/`data` may be absent (bind and move mounts).
pub fn mount(
    source: &str,
    target: &std::path::Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    nix::mount::mount(
        Some(source),
        target,
        fstype,
        nix::mount::MsFlags::from_bits_truncate(flags),
        data,
    )
    .map_err(io::Error::from)
}

pub fn chroot(path: &std::path::Path) -> io::Result<()> {
    nix::unistd::chroot(path).map_err(io::Error::from)
}

/// `finit_module(2)`; `compressed` asks the kernel to decompress
/// (MODULE_INIT_COMPRESSED_FILE, Linux 5.17+).
pub fn finit_module(fd: BorrowedFd<'_>, compressed: bool) -> io::Result<()> {
    const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;
    let flags: libc::c_uint = if compressed {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    let params = c"";
    // SAFETY: fd is open for the call; params is a valid C string.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            fd.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets IFF_UP on a network interface (`ip link set NAME up`).
pub fn interface_up(name: &str) -> io::Result<()> {
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (slot, byte) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    // SAFETY: req is a valid ifreq with a NUL-terminated name; the ioctl
    // writes the flags into it.
    check(unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) })?;
    // SAFETY: reading the union member the previous ioctl filled.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: as above; the kernel reads the flags.
    check(unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) })?;
    Ok(())
}

pub fn sethostname(name: &str) -> io::Result<()> {
    nix::unistd::sethostname(name).map_err(io::Error::from)
}

/// Puts fds 0, 1, 2 on `fd` (the console).
pub fn attach_stdio(fd: BorrowedFd<'_>) -> io::Result<()> {
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors, which init owns.
        check(unsafe { libc::dup2(fd.as_raw_fd(), target) })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use std::os::fd::AsFd;

    #[test]
    fn signals_are_read_in_one_batch_with_their_sender() {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGUSR1);
        mask.add(Signal::SIGUSR2);
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).unwrap();
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK).unwrap();
        let mut batch = [NO_SIGNAL; 16];
        assert_eq!(
            read_signals(fd.as_fd(), &mut batch).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        // Directed at this thread, which blocks them: both stay pending.
        for signal in [libc::SIGUSR1, libc::SIGUSR2] {
            // SAFETY: tgkill on our own thread with a blocked signal.
            unsafe {
                libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::gettid(), signal);
            }
        }
        let n = read_signals(fd.as_fd(), &mut batch).unwrap();
        let me = std::process::id() as Pid;
        let mut got = batch[..n].to_vec();
        got.sort();
        assert_eq!(got, [(libc::SIGUSR1, me), (libc::SIGUSR2, me)]);
        // A buffer of one takes one at a time.
        for signal in [libc::SIGUSR1, libc::SIGUSR2] {
            // SAFETY: as above.
            unsafe {
                libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::gettid(), signal);
            }
        }
        let mut one = [NO_SIGNAL; 1];
        assert_eq!(read_signals(fd.as_fd(), &mut one).unwrap(), 1);
        assert_eq!(read_signals(fd.as_fd(), &mut one).unwrap(), 1);
        assert!(read_signals(fd.as_fd(), &mut one).is_err());
    }
}
