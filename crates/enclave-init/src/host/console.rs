//! Init's console: its own log lines and the captured output of services,
//! in one ordered, bounded queue written without ever blocking the loop.
//!
//! When the console is slower than the output (a serial port at 115200
//! baud, a pipe nobody reads), whole lines are dropped rather than the loop
//! stalled, and the number dropped is reported once the console drains.
//! Before [`install`], lines go straight to stderr (boot messages, tests).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

use crate::model::config::Level;
use crate::sys;

/// Bytes queued for the console at most.
pub const QUEUE_CAP: usize = 256 * 1024;
/// The end of the queue kept for init's own lines.
pub const RESERVE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    /// A pipe or a tty reopened with O_NONBLOCK: its own file description.
    Nonblocking,
    /// A socket shared with others: `send(MSG_DONTWAIT)`.
    Socket,
    /// A regular file: writes do not block.
    File,
}

/// Bytes waiting for the console: appended at the end (a memcpy), written
/// from `head` on.
struct Queue {
    buf: Vec<u8>,
    head: usize,
}

impl Queue {
    const fn new() -> Self {
        Self {
            buf: Vec::new(),
            head: 0,
        }
    }

    fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn pending(&self) -> &[u8] {
        self.buf.get(self.head..).unwrap_or_default()
    }

    fn consume(&mut self, n: usize) {
        self.head = (self.head + n).min(self.buf.len());
        if self.head == self.buf.len() {
            self.clear();
        } else if self.head > QUEUE_CAP {
            // Keep the buffer from growing: move the rest to the front.
            self.buf.drain(..self.head);
            self.head = 0;
        }
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.head = 0;
    }
}

struct Console {
    fd: Option<(OwnedFd, Sink)>,
    level: Level,
    queue: Queue,
    dropped: u64,
    /// Nobody can read the console any more (its reader closed the pipe,
    /// the tty hung up): every line is dropped and counted.
    gone: bool,
    /// Init's own lines, kept for the parent channel (made at the first).
    own: Option<crate::host::output::LogRing>,
}

/// Bytes of init's own lines kept for the parent channel.
pub const OWN_LINES_KEPT: usize = 64 * 1024;

static CONSOLE: Mutex<Console> = Mutex::new(Console {
    fd: None,
    level: Level::Info,
    queue: Queue::new(),
    dropped: 0,
    gone: false,
    own: None,
});

fn with<R>(f: impl FnOnce(&mut Console) -> R) -> R {
    // A panic while holding the lock must not silence init for good.
    let mut guard = CONSOLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut guard)
}

pub fn set_level(level: Level) {
    with(|c| c.level = level);
}

pub fn enabled(level: Level) -> bool {
    with(|c| level <= c.level)
}

/// Takes over init's stdout for non-blocking writes, keeping its file
/// description blocking for services with `StandardOutput=console`.
pub fn install_stdout() -> io::Result<()> {
    install_std(io::stdout().as_fd(), "/proc/self/fd/1")
}

/// The same with stderr: one-command mode keeps stdout for the command,
/// as tini and dumb-init do.
pub fn install_stderr() -> io::Result<()> {
    install_std(io::stderr().as_fd(), "/proc/self/fd/2")
}

fn install_std(fd: std::os::fd::BorrowedFd<'_>, reopen: &str) -> io::Result<()> {
    let meta = nix::sys::stat::fstat(fd)?;
    let kind = meta.st_mode & libc::S_IFMT;
    let sink = if kind == libc::S_IFREG {
        (sys::dup(fd)?, Sink::File)
    } else if kind == libc::S_IFSOCK {
        (sys::dup(fd)?, Sink::Socket)
    } else {
        // Reopening gives a new file description, so O_NONBLOCK on it does
        // not leak to the services sharing fd 1.
        (
            sys::open_nonblocking_writer(std::path::Path::new(reopen))?,
            Sink::Nonblocking,
        )
    };
    with(|c| c.fd = Some(sink));
    Ok(())
}

/// Uses `path` (a tty such as `/dev/console`) as the console.
pub fn install_path(path: &std::path::Path) -> io::Result<()> {
    let fd = sys::open_nonblocking_writer(path)?;
    with(|c| c.fd = Some((fd, Sink::Nonblocking)));
    Ok(())
}

/// The console reported an error or a hang-up (`EPOLLERR`, `EPOLLHUP`):
/// its reader is gone for good. From now on lines are only counted; the
/// loop stops watching the fd, which would otherwise report the error at
/// every wait (epoll is level-triggered) and spin.
pub fn mark_gone() {
    with(|c| {
        c.gone = true;
        c.dropped = c.dropped.saturating_add(c.queue.len() as u64 / 64);
        c.queue.clear();
        c.fd = None;
    });
}

/// The console's fd, for the event loop to watch for writability.
pub fn fd() -> Option<std::os::fd::RawFd> {
    use std::os::fd::AsRawFd;
    with(|c| {
        c.fd.as_ref()
            .filter(|(_, s)| *s != Sink::File)
            .map(|(fd, _)| fd.as_raw_fd())
    })
}

/// Init's own line: `enclave-init: warning: ...`.
pub fn log(level: Level, message: &str) {
    if !enabled(level) {
        return;
    }
    let message = without_os_error_suffix(message);
    let prefix = match level {
        Level::Error => "enclave-init: error: ",
        Level::Warn => "enclave-init: warning: ",
        Level::Info => "enclave-init: ",
        Level::Debug => "enclave-init: debug: ",
    };
    line(&[prefix.as_bytes(), message.as_bytes()]);
    let kept = [
        prefix
            .strip_prefix("enclave-init: ")
            .unwrap_or(prefix)
            .as_bytes(),
        message.as_bytes(),
    ]
    .concat();
    with(|c| {
        c.own
            .get_or_insert_with(|| crate::host::output::LogRing::new(OWN_LINES_KEPT))
            .push(
                std::time::SystemTime::now(),
                std::process::id() as i32,
                &kept,
            )
    });
}

/// Init's own lines kept, from number `from` (at most `max`), and the
/// number of the first one still kept (a reader behind it missed some).
pub fn own_lines(from: u64, max: usize) -> (Vec<crate::host::output::LogLine>, u64) {
    with(|c| match &c.own {
        Some(ring) => (ring.range(from, max).0, ring.first_seq()),
        None => (Vec::new(), 0),
    })
}

/// How many of init's own lines there have been.
pub fn own_total() -> u64 {
    with(|c| {
        c.own
            .as_ref()
            .map_or(0, crate::host::output::LogRing::total)
    })
}

/// std's `io::Error` reads "Permission denied (os error 13)"; log lines
/// read "mount /proc: Permission denied". Every message passes here, so
/// this is the one place that trims it.
fn without_os_error_suffix(message: &str) -> std::borrow::Cow<'_, str> {
    if !message.contains(" (os error ") {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(" (os error ") {
        let (head, tail) = rest.split_at(start);
        out.push_str(head);
        match tail.find(')') {
            Some(end)
                if tail
                    .get(11..end)
                    .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit())) =>
            {
                rest = tail.get(end + 1..).unwrap_or_default();
            }
            _ => {
                out.push_str(tail.get(..1).unwrap_or_default());
                rest = tail.get(1..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// A service's output lines (`web[42]: text` each), one lock and at most a
/// few copies for the batch. When nothing waits in the queue they go
/// straight to the console. They may fill the queue only up to [`RESERVE`]
/// short of its end, so that a flooding service cannot crowd out init's own
/// lines; whole lines that do not fit are dropped and counted.
pub fn service_lines(lines: &crate::host::output::Lines) {
    let bytes = lines.console_bytes();
    if bytes.is_empty() {
        return;
    }
    with(|c| {
        if c.gone {
            c.dropped = c.dropped.saturating_add(lines.len() as u64);
            return;
        }
        let Some((fd, sink)) = c.fd.as_ref() else {
            let _ = io::Write::write_all(&mut io::stderr(), bytes);
            return;
        };
        let mut done = 0;
        if c.queue.is_empty() && c.dropped == 0 {
            match write_to(fd.as_fd(), *sink, bytes) {
                Ok(n) => done = n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => {
                    // The console is gone: as in `write_queue`.
                    c.dropped = c.dropped.saturating_add(lines.len() as u64);
                    return;
                }
            }
        }
        let written = done;
        let mut ends = lines.console_ends().filter(|end| *end > written).peekable();
        // A line the console took in part is finished whatever the bound,
        // so that the console never shows half a line followed by another.
        if done > 0 {
            if let Some(end) = ends.next() {
                c.queue.push(bytes.get(done..end).unwrap_or_default());
                done = end;
            }
        }
        let limit = QUEUE_CAP - RESERVE;
        let mut console_stuck = false;
        while let Some(&next) = ends.peek() {
            // The longest run of whole lines that fits, in one copy.
            let room = limit.saturating_sub(c.queue.len());
            let mut run_end = done;
            while let Some(end) = ends.next_if(|end| end - done <= room) {
                run_end = end;
            }
            if run_end > done {
                c.queue.push(bytes.get(done..run_end).unwrap_or_default());
                done = run_end;
                continue;
            }
            // The next line does not fit: write to make room, once.
            if !console_stuck {
                let before = c.queue.len();
                write_queue(c);
                console_stuck = c.queue.len() >= before;
                continue;
            }
            c.dropped += 1;
            done = next;
            ends.next();
        }
    });
}

fn line(parts: &[&[u8]]) {
    with(|c| push_line(c, parts, QUEUE_CAP));
}

/// Queues one line if it fits under `limit`, writing to the console first
/// when it does not; a line that still does not fit is dropped and counted.
fn push_line(c: &mut Console, parts: &[&[u8]], limit: usize) {
    if c.gone {
        c.dropped = c.dropped.saturating_add(1);
        return;
    }
    if c.fd.is_none() {
        // Not installed yet: plain blocking stderr, nothing to queue.
        let mut text = parts.concat();
        text.push(b'\n');
        let _ = io::Write::write_all(&mut io::stderr(), &text);
        return;
    }
    let len: usize = parts.iter().map(|p| p.len()).sum::<usize>() + 1;
    if c.queue.len() + len > limit {
        write_queue(c);
    }
    if c.queue.len() + len > limit {
        c.dropped += 1;
        return;
    }
    for part in parts {
        c.queue.push(part);
    }
    c.queue.push(b"\n");
}

/// Writes as much of the queue as the console takes now. Returns whether
/// bytes remain (the loop then waits for the console to be writable).
pub fn flush() -> bool {
    with(write_queue)
}

/// Writes what the console takes now (and the dropped-lines note once the
/// queue is empty); whether bytes remain.
fn write_queue(c: &mut Console) -> bool {
    {
        loop {
            let Some((fd, sink)) = c.fd.as_ref() else {
                return false;
            };
            if c.queue.is_empty() {
                if c.dropped == 0 {
                    return false;
                }
                let note = format!(
                    "enclave-init: warning: console too slow: {} lines dropped\n",
                    c.dropped
                );
                c.dropped = 0;
                c.queue.push(note.as_bytes());
            }
            match write_to(fd.as_fd(), *sink, c.queue.pending()) {
                Ok(0) => return true,
                Ok(n) => c.queue.consume(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => {
                    // The console is gone (EIO on a hung-up tty, EPIPE):
                    // drop what is queued rather than grow forever.
                    let n = c.queue.len();
                    c.queue.clear();
                    c.dropped = c.dropped.saturating_add(n as u64 / 64);
                    return false;
                }
            }
        }
    }
}

/// Last words before init exits or reboots: write everything, waiting up
/// to a few seconds for a slow console.
pub fn drain() {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while flush() && std::time::Instant::now() < deadline {
        with(|c| {
            if let Some((fd, _)) = c.fd.as_ref() {
                let mut fds = [nix::poll::PollFd::new(
                    fd.as_fd(),
                    nix::poll::PollFlags::POLLOUT,
                )];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
            }
        });
    }
}

fn write_to(fd: BorrowedFd<'_>, sink: Sink, buf: &[u8]) -> io::Result<usize> {
    match sink {
        Sink::Socket => sys::send_nonblocking(fd, buf),
        Sink::Nonblocking | Sink::File => sys::write(fd, buf),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn os_error_suffixes_are_trimmed() {
        use super::without_os_error_suffix as trim;
        assert_eq!(
            trim("mount /proc: Permission denied (os error 13)"),
            "mount /proc: Permission denied"
        );
        assert_eq!(trim("a (os error 2); b (os error 22) end"), "a; b end");
        assert_eq!(trim("nothing to trim"), "nothing to trim");
        assert_eq!(trim("odd (os error x) text"), "odd (os error x) text");
    }
}
