//! `NOTIFY_SOCKET` for `Type=notify` services: one datagram socket owned by
//! init. The sender of each message is identified by the credentials the
//! kernel attaches (`SO_PASSCRED`), never by what the message claims, and
//! only processes of the service the message is about are heard.
//!
//! A message may carry a file descriptor (systemd's `BARRIER=1` protocol):
//! init closes it once the message is handled, which tells a short-lived
//! sender (`initctl notify`) that it may exit. Without that, a sender gone
//! before init reads its message could not be matched to its service.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixAddr};

/// Longest message accepted; longer ones are dropped whole.
pub const MAX_MESSAGE: usize = 4096;

pub struct NotifySocket {
    socket: UnixDatagram,
    pub path: PathBuf,
}

/// One datagram: the sender's pid and its text.
pub struct Message {
    pub pid: i32,
    pub body: Result<Vec<(String, String)>, String>,
    /// Closed when dropped: the barrier for the sender.
    pub _fds: Vec<OwnedFd>,
}

impl NotifySocket {
    pub fn bind(path: &Path) -> io::Result<Self> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Services may run as any user: they must be able to send. The mode
        // comes from the umask at bind (init is single-threaded, so setting
        // it for the call is safe), never from a chmod by path afterwards,
        // which would follow a symlink put in the socket's place.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        let bound = UnixDatagram::bind(path);
        nix::sys::stat::umask(old);
        let socket = bound?;
        socket.set_nonblocking(true)?;
        setsockopt(&socket, sockopt::PassCred, &true)?;
        Ok(Self {
            socket,
            path: path.to_path_buf(),
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Receives one message; `Ok(None)` when none is waiting.
    pub fn recv(&self) -> io::Result<Option<Message>> {
        let mut buf = [0u8; MAX_MESSAGE];
        let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials, [std::os::fd::RawFd; 8]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let (len, truncated, pid, fds) = {
            let msg = match recvmsg::<UnixAddr>(
                std::os::fd::AsRawFd::as_raw_fd(&self.socket),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(m) => m,
                Err(nix::errno::Errno::EAGAIN) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let mut pid = 0;
            let mut fds = Vec::new();
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    match c {
                        ControlMessageOwned::ScmCredentials(creds) => pid = creds.pid(),
                        ControlMessageOwned::ScmRights(raw) => {
                            for fd in raw {
                                // SAFETY: the kernel just installed this fd in
                                // our table for us; nothing else owns it.
                                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                            }
                        }
                        _ => {}
                    }
                }
            }
            let truncated = msg
                .flags
                .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
            (msg.bytes, truncated, pid, fds)
        };
        let body = if truncated {
            Err(format!("message longer than {MAX_MESSAGE} bytes"))
        } else {
            parse(buf.get(..len).unwrap_or_default())
        };
        Ok(Some(Message {
            pid,
            body,
            _fds: fds,
        }))
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `KEY=VALUE` lines (sd_notify's format). Empty lines are skipped; a line
/// without `=` or text that is not UTF-8 makes the message garbage. The
/// error never repeats the message's text: init's own lines may reach the
/// parent channel, and what a service sends is its own business.
pub fn parse(bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "message is not UTF-8".to_string())?;
    let mut out = Vec::new();
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        match line.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_string(), v.to_string())),
            _ => {
                return Err(format!(
                    "line {} is not KEY=VALUE ({} bytes)",
                    text.split('\n')
                        .filter(|l| !l.is_empty())
                        .position(|l| l == line)
                        .map_or(0, |i| i + 1),
                    line.len()
                ))
            }
        }
    }
    if out.is_empty() {
        return Err("empty message".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(
            parse(b"READY=1\n").unwrap(),
            [("READY".to_string(), "1".to_string())]
        );
        assert_eq!(
            parse(b"READY=1\nSTATUS=serving on :80").unwrap(),
            [
                ("READY".to_string(), "1".to_string()),
                ("STATUS".to_string(), "serving on :80".to_string())
            ]
        );
        assert_eq!(
            parse(b"garbage").unwrap_err(),
            "line 1 is not KEY=VALUE (7 bytes)"
        );
        assert_eq!(
            parse(b"=x").unwrap_err(),
            "line 1 is not KEY=VALUE (2 bytes)"
        );
        assert_eq!(parse(b"\xff\xfe").unwrap_err(), "message is not UTF-8");
        assert_eq!(parse(b"").unwrap_err(), "empty message");
        assert_eq!(parse(b"\n\n").unwrap_err(), "empty message");
    }

    #[test]
    fn credentials_and_barrier_round_trip() {
        let path = std::env::temp_dir().join(format!("ei-notify-{}.sock", std::process::id()));
        let socket = NotifySocket::bind(&path).unwrap();
        assert!(socket.recv().unwrap().is_none());
        // As initctl notify sends it: the text and the write end of a pipe,
        // whose read end sees EOF once init has dropped the message.
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        let fds = [std::os::fd::AsRawFd::as_raw_fd(&write)];
        nix::sys::socket::sendmsg(
            std::os::fd::AsRawFd::as_raw_fd(&sender),
            &[io::IoSlice::new(b"READY=1\nSTATUS=ok")],
            &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            Some(&UnixAddr::new(&path).unwrap()),
        )
        .unwrap();
        drop(write);
        let msg = loop {
            if let Some(m) = socket.recv().unwrap() {
                break m;
            }
            std::thread::yield_now();
        };
        assert_eq!(msg.pid, std::process::id() as i32);
        assert_eq!(msg.body.as_ref().unwrap().len(), 2);
        assert_eq!(msg._fds.len(), 1);
        drop(msg);
        let mut buf = [0u8; 1];
        assert_eq!(
            nix::unistd::read(&read, &mut buf).unwrap(),
            0,
            "the barrier is released"
        );
        let plain = UnixDatagram::unbound().unwrap();
        plain.send_to(&vec![b'x'; MAX_MESSAGE + 10], &path).unwrap();
        let msg = socket.recv().unwrap().unwrap();
        assert!(msg.body.unwrap_err().contains("longer than"));
    }
}
