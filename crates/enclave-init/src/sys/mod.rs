//! Every raw syscall of init: one function each, returning `io::Result`,
//! each `unsafe` block with its `SAFETY:` reasoning. Everything else in the
//! crate is safe code. Where `nix` wraps a call without loss it is used;
//! `waitpid` and `kill` are raw because nix rejects signal numbers outside
//! its enum (real-time signals), and for `waitpid` it would do so after the
//! child was already reaped, losing its exit.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

mod child;

pub use child::{spawn, ChildPlan, ChildStack, Identity, Rlimit, RlimitResource, Session, Started};

/// A process id, as the kernel has it.
pub type Pid = i32;

/// How a child ended, as `waitpid` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    Exited(i32),
    Signaled(i32),
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Reaps one exited child, if any: `Ok(None)` when children exist but none
/// has exited; `Err(ECHILD)` when there are no children at all.
pub fn reap_one() -> io::Result<Option<(Pid, WaitStatus)>> {
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
        WaitStatus::Exited(libc::WEXITSTATUS(status))
    } else {
        WaitStatus::Signaled(libc::WTERMSIG(status))
    };
    Ok(Some((pid, exit)))
}

/// `kill(2)`: `pid` > 0 one process, `pid` < 0 a process group, -1 all.
pub fn kill(pid: Pid, signal: i32) -> io::Result<()> {
    // SAFETY: kill takes plain integers and touches no memory of ours.
    check(unsafe { libc::kill(pid, signal) }).map(drop)
}

/// A non-blocking, close-on-exec inotify instance.
pub fn inotify_init() -> io::Result<OwnedFd> {
    // SAFETY: flags only; the new fd is owned by the OwnedFd made from it.
    let fd = check(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) })?;
    // SAFETY: `fd` was just returned and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Watches `dir` for files created, written and closed, or moved in.
pub fn inotify_watch_dir(fd: BorrowedFd<'_>, dir: &std::path::Path) -> io::Result<()> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mask = libc::IN_CREATE | libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO;
    // SAFETY: a valid fd and C string.
    check(unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) }).map(drop)
}

/// `getrlimit(2)`: (soft, hard) of init itself.
pub fn getrlimit(resource: RlimitResource) -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid pointer to a local.
    check(unsafe { libc::getrlimit(resource, &mut limit) })?;
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Whether init may raise hard resource limits (CAP_SYS_RESOURCE in its
/// effective set): root in an enclave may; root in some sandboxes not.
pub fn may_raise_limits() -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_SYS_RESOURCE: u32 = 24;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget with a version 3 header and room for its two words.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            data.as_mut_ptr(),
        )
    };
    ret == 0
        && data
            .first()
            .is_some_and(|d| d.effective & (1 << CAP_SYS_RESOURCE) != 0)
}

/// A listening vsock stream socket on `port` of any local CID,
/// non-blocking and close-on-exec.
pub fn vsock_listen(port: u32) -> io::Result<OwnedFd> {
    use nix::sys::socket::{
        bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, VsockAddr,
    };
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(fd.as_raw_fd(), &VsockAddr::new(libc::VMADDR_CID_ANY, port))?;
    listen(&fd, Backlog::new(16).map_err(io::Error::from)?)?;
    Ok(fd)
}

/// A connection waiting on a vsock listener (non-blocking, close-on-exec)
/// and its peer's CID.
pub fn vsock_accept(listener: BorrowedFd<'_>) -> io::Result<(OwnedFd, Option<u32>)> {
    use nix::sys::socket::{accept4, getpeername, SockFlag, VsockAddr};
    let raw = accept4(
        listener.as_raw_fd(),
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
    )?;
    // SAFETY: accept4 returned a new descriptor owned by no one else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let cid = getpeername::<VsockAddr>(fd.as_raw_fd())?.cid();
    Ok((fd, Some(cid)))
}

/// `poll(2)` on `fds` for at most `timeout`; how many are ready.
pub fn poll(fds: &mut [libc::pollfd], timeout: std::time::Duration) -> io::Result<usize> {
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the pointer and length describe `fds`.
    let n = check(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) })?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Makes `base/rel` (and the directories on the way) without following a
/// symbolic link anywhere below `base`: each part is opened with
/// `O_NOFOLLOW`, and the last gets `mode` and `owner` through its own
/// descriptor (`fchmod`, `fchown`). Parts made on the way are root's, 0755.
/// A link in the way is `ELOOP` (or `ENOTDIR`).
pub fn make_dir_nofollow(
    base: &std::path::Path,
    rel: &std::path::Path,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    use std::ffi::CString;
    let open = |dir: libc::c_int, name: &CString| -> io::Result<OwnedFd> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: a valid fd (or AT_FDCWD) and C string.
        let fd = check(unsafe { libc::openat(dir, name.as_ptr(), flags) })?;
        // SAFETY: openat returned a new descriptor owned by no one else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let cstr = |p: &std::ffi::OsStr| {
        CString::new(p.as_encoded_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
    };
    let mut dir = open(libc::AT_FDCWD, &cstr(base.as_os_str())?)?;
    let parts: Vec<_> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        let std::path::Component::Normal(name) = part else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        let name = cstr(name)?;
        let last = i + 1 == parts.len();
        // SAFETY: a valid fd and C string.
        let made = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) };
        if made == -1 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
            return Err(io::Error::last_os_error());
        }
        let next = open(dir.as_raw_fd(), &name)?;
        if last {
            // SAFETY: a descriptor of ours and plain integers.
            check(unsafe { libc::fchmod(next.as_raw_fd(), mode) })?;
            if let Some((uid, gid)) = owner {
                // SAFETY: as above.
                check(unsafe { libc::fchown(next.as_raw_fd(), uid, gid) })?;
            }
        }
        dir = next;
    }
    Ok(())
}

/// `getpgid(2)`: the process group of `pid`.
pub fn getpgid(pid: Pid) -> io::Result<Pid> {
    // SAFETY: an integer.
    check(unsafe { libc::getpgid(pid) })
}

pub fn getpid() -> Pid {
    std::process::id() as Pid
}

pub fn set_child_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// Blocks every signal in init; they are read through a signalfd instead.
/// The raw system call: glibc's `sigprocmask` leaves out the two signals
/// it keeps for itself (32 and 33), which would then stay deliverable in
/// init and in a child between clone and exec. Returns the set for the
/// signalfd.
pub fn block_all_signals() -> io::Result<nix::sys::signal::SigSet> {
    check_long(set_signal_mask(u64::MAX))?;
    Ok(nix::sys::signal::SigSet::all())
}

/// `rt_sigprocmask(SIG_SETMASK)` with the kernel's 64-bit mask: no libc
/// filtering, no allocation (the child between clone and exec uses it).
fn set_signal_mask(mask: u64) -> libc::c_long {
    let (new, old) = (&mask as *const u64, std::ptr::null_mut::<u64>());
    // SAFETY: `new` points to a valid 8-byte mask, the kernel's size; the
    // old mask is not asked for.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            new,
            old,
            8usize,
        )
    }
}

/// Sets every signal's disposition to its default. Whoever started init
/// may have left some ignored (an ignored SIGCHLD makes the kernel reap
/// children itself, so init would never learn of an exit), and ignored
/// dispositions survive exec.
pub fn reset_signal_dispositions() {
    for signal in 1..=64 {
        if signal != libc::SIGKILL && signal != libc::SIGSTOP {
            set_default_disposition(signal);
        }
    }
}

/// Raises init's soft `RLIMIT_NOFILE` to its hard limit (a kernel-started
/// PID 1 has 1024 of 4096: one output pipe per logged service would cap
/// init near 1,000 services). Returns the limits init was given, which
/// its services keep (as systemd does: programs that use `select` break
/// above 1024).
pub fn raise_nofile() -> io::Result<(u64, u64)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((soft, hard))
}

/// Marks every descriptor above 2 that init inherited close-on-exec, once
/// at start, so that none can reach a service whatever the kernel: with
/// `close_range` (Linux 5.11+), else through `/proc/self/fd`, else by
/// trying each number below the descriptor limit.
pub fn mark_inherited_fds_cloexec() {
    // SAFETY: integers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret == 0 {
        return;
    }
    let set_cloexec = |fd: libc::c_int| {
        // SAFETY: integers; EBADF for a number not open is harmless.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    };
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<libc::c_int> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|fd| *fd > 2)
            .collect();
        // The directory's own descriptor is among them, closed by now.
        fds.into_iter().for_each(set_cloexec);
        return;
    }
    // Up to the hard limit: descriptors may sit above the soft one.
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(_, hard)| hard)
        .min(1 << 20) as libc::c_int;
    (3..limit).for_each(set_cloexec);
}

fn check_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
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

/// The kernel's `struct sigaction` (x86_64, aarch64): handler, flags,
/// restorer, mask. SIG_DFL needs no restorer.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// What init's caller left: the signals ignored, and the blocked mask
/// (the kernel's 64 bits). Read before init resets and blocks them, for a
/// one-command child, which keeps them as tini's does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InheritedSignals {
    /// Bit `n - 1` set: signal `n` was ignored.
    pub ignored: u64,
    pub blocked: u64,
}

pub fn inherited_signals() -> InheritedSignals {
    let mut out = InheritedSignals::default();
    for signal in 1..=64 {
        let mut old = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: only the old action is asked for, into a valid local of
        // the kernel's layout; the mask size is the kernel's (8 bytes).
        let ret = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                std::ptr::null::<KernelSigaction>(),
                &mut old as *mut KernelSigaction,
                8usize,
            )
        };
        // SIGPIPE: Rust's runtime ignores it before `main`, so what the
        // caller chose is lost; the command gets the default.
        if ret == 0 && old.handler == libc::SIG_IGN && signal != libc::SIGPIPE {
            out.ignored |= 1 << (signal - 1);
        }
    }
    let mut blocked = 0u64;
    // SAFETY: no new mask; the old one is written to a valid 8-byte local.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            std::ptr::null::<u64>(),
            &mut blocked as *mut u64,
            8usize,
        )
    };
    if ret == 0 {
        out.blocked = blocked;
    }
    out
}

/// Ignores `signal` (raw, for the child between clone and exec).
fn set_ignored_disposition(signal: i32) {
    set_disposition(signal, libc::SIG_IGN);
}

fn set_default_disposition(signal: i32) {
    set_disposition(signal, libc::SIG_DFL);
}

/// `rt_sigaction` with `handler` (`SIG_DFL` or `SIG_IGN`), raw: no
/// allocation, no lock, usable in the child before exec.
fn set_disposition(signal: i32, handler: libc::sighandler_t) {
    let action = KernelSigaction {
        handler,
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

/// `reboot(2)` with RB_AUTOBOOT: the end of an enclave. Nitro's machine
/// has no power-off: RB_POWER_OFF there halts the CPUs and keeps the
/// enclave (and its memory) until the parent kills it; a restart, with
/// `reboot=k` on the command line, ends it, as the AWS C init does.
/// Returns only on failure.
pub fn restart_machine() -> io::Error {
    use nix::sys::reboot::{reboot, RebootMode};
    match reboot(RebootMode::RB_AUTOBOOT) {
        Ok(never) => match never {},
        Err(e) => io::Error::from(e),
    }
}

/// Whether this process is the init of the machine, started by the kernel
/// (not the init of a container's PID namespace): only there does
/// `reboot(LINUX_REBOOT_CMD_CAD_OFF)` succeed (EINVAL in a child PID
/// namespace, EPERM without CAP_SYS_BOOT). Its effect, Ctrl-Alt-Del sent
/// to init as SIGINT instead of an immediate reboot, is what an init wants.
pub fn is_machine_init() -> bool {
    nix::sys::reboot::set_cad_enabled(false).is_ok()
}

/// Whether `path` is the root of a cgroup v2 hierarchy.
pub fn is_cgroup2(path: &std::path::Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
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

/// `NSM_IOCTL_RAW` of the kernel's `linux/nsm.h`: `_IOWR(0x0A, 0, struct
/// nsm_raw)`, where `nsm_raw` is two `{u64 addr, u64 len}` vectors.
pub const NSM_IOCTL_RAW: libc::c_ulong = (3 << 30) | (32 << 16) | (0x0A << 8);

#[repr(C)]
struct NsmIovec {
    addr: u64,
    len: u64,
}

#[repr(C)]
struct NsmRaw {
    request: NsmIovec,
    response: NsmIovec,
}

/// One request to the Nitro Secure Module (`/dev/nsm`): the CBOR bytes of
/// `request` in, the CBOR bytes of the answer written into `response`;
/// returns how many. The errno is kept (AWS's driver crate turns every
/// failure into `InternalError`).
pub fn nsm_request(fd: BorrowedFd<'_>, request: &[u8], response: &mut [u8]) -> io::Result<usize> {
    let mut raw = NsmRaw {
        request: NsmIovec {
            addr: request.as_ptr() as u64,
            len: request.len() as u64,
        },
        response: NsmIovec {
            addr: response.as_mut_ptr() as u64,
            len: response.len() as u64,
        },
    };
    // SAFETY: raw describes two live buffers of the lengths given; the
    // driver reads the first and writes at most `len` bytes of the second,
    // then stores the length it wrote in `raw.response.len`.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), NSM_IOCTL_RAW as _, &mut raw) })?;
    Ok(usize::try_from(raw.response.len)
        .unwrap_or(usize::MAX)
        .min(response.len()))
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
    fn nsm_ioctl_number_is_the_kernels() {
        // _IOWR(NSM_MAGIC, 0, struct nsm_raw) in linux/nsm.h.
        assert_eq!(NSM_IOCTL_RAW, 0xC020_0A00);
        assert_eq!(std::mem::size_of::<NsmRaw>(), 32);
    }

    #[test]
    fn nsm_request_on_something_else_keeps_the_errno() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let err = nsm_request(file.as_fd(), b"x", &mut [0u8; 16]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
    }

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
