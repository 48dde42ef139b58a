//! Every raw syscall of init: one function each, returning `io::Result`,
//! each `unsafe` block with its `SAFETY:` reasoning. Everything else in the
//! crate is safe code. Where `nix` wraps a call without loss it is used;
//! `waitpid` and `kill` are raw because nix rejects signal numbers outside
//! its enum (real-time signals), and for `waitpid` it would do so after the
//! child was already reaped, losing its exit.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

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

/// Everything the child does between fork and exec. Called only in the
/// forked child; it allocates nothing and calls only async-signal-safe
/// functions (init is single-threaded, so even that is belt and braces).
fn child_setup(
    identity: Option<&Identity>,
    limits: &[Rlimit],
    cgroup_procs: Option<&std::ffi::CStr>,
) -> io::Result<()> {
    if let Some(path) = cgroup_procs {
        // Join the service's cgroup before anything can fork. Writing "0"
        // moves the writer. A failure leaves the process group as the only
        // tracking, which the supervisor still has; not worth a failed start.
        // SAFETY: path is a valid C string; open/write/close are
        // async-signal-safe and the buffer is a static literal.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
        }
    }
    // Own session and process group: stopping the service signals it whole.
    // SAFETY: setsid takes no arguments.
    check(unsafe { libc::setsid() })?;
    // Default dispositions and an empty mask: init blocks everything, and
    // an ignored signal inherited by init would otherwise pass on through
    // exec. The raw syscall, because libc's signal() refuses the signals it
    // reserves for itself (32 and 33 in glibc), which may still arrive
    // ignored from whoever started init.
    for signal in 1..=64 {
        if signal != libc::SIGKILL && signal != libc::SIGSTOP {
            set_default_disposition(signal);
        }
    }
    // SAFETY: `empty` is a valid, initialised sigset.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        check(libc::sigprocmask(
            libc::SIG_SETMASK,
            &empty,
            std::ptr::null_mut(),
        ))?;
    }
    for (resource, soft, hard) in limits {
        let rlim = libc::rlimit {
            rlim_cur: *soft,
            rlim_max: *hard,
        };
        // SAFETY: rlim is a valid struct for the call's duration.
        check(unsafe { libc::setrlimit(*resource, &rlim) })?;
    }
    if let Some(id) = identity {
        // Groups first, then gid, then uid: after setuid we may not.
        // SAFETY: the pointer and length describe `id.groups`.
        check(unsafe { libc::setgroups(id.groups.len(), id.groups.as_ptr()) })?;
        // SAFETY: plain integer arguments.
        check(unsafe { libc::setgid(id.gid) })?;
        // SAFETY: plain integer arguments.
        check(unsafe { libc::setuid(id.uid) })?;
    }
    // Only 0, 1, 2 survive exec: mark the rest close-on-exec. Marking, not
    // closing, keeps std's exec-error pipe working (it is CLOEXEC already).
    // SAFETY: close_range takes plain integers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret != 0 {
        // Kernels before 5.11: walk the descriptor table.
        for fd in 3..4096 {
            // SAFETY: F_SETFD on any number is safe; EBADF is ignored.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    Ok(())
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

/// Installs [`child_setup`] as the command's pre-exec hook.
pub fn set_child_setup(
    command: &mut std::process::Command,
    identity: Option<Identity>,
    limits: Vec<Rlimit>,
    cgroup_procs: Option<std::ffi::CString>,
) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the forked child of a single-threaded
    // process and only makes async-signal-safe calls (see child_setup).
    unsafe {
        command.pre_exec(move || child_setup(identity.as_ref(), &limits, cgroup_procs.as_deref()));
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
