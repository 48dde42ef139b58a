//! The boot heartbeat of Nitro enclaves: connect AF_VSOCK to the parent
//! (CID 3, port 9000), send one byte 0xB7, expect 0xB7 back. nitro-cli waits
//! for it to know the enclave booted. Retried with backoff inside a budget;
//! never fatal: the caller logs the error and the boot goes on.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, VsockAddr};

pub const MAGIC: u8 = 0xB7;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeartbeatError {
    #[error("vsock is not available in this kernel ({0}); is the vsock transport loaded?")]
    NoVsock(String),
    #[error("the parent answered {0:#04x} instead of 0xb7")]
    WrongByte(u8),
    #[error("no answer within {budget:?} after {attempts} attempts; last error: {last}")]
    Deadline {
        budget: Duration,
        attempts: u32,
        last: String,
    },
}

/// The wait before attempt `n` (1-based) is retried: 50 ms doubling to 1 s.
pub fn backoff(attempt: u32) -> Duration {
    let ms = 50u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(5));
    Duration::from_millis(ms.min(1000))
}

/// One attempt's failure: whether trying again may help.
enum Attempt {
    Retry(String),
    Fatal(HeartbeatError),
}

/// Whether waiting `pause` more would pass the deadline (`None`: a budget
/// of `infinity`, never).
fn past(deadline: Option<Instant>, now: Instant, pause: Duration) -> bool {
    deadline.is_some_and(|d| now.checked_add(pause).is_none_or(|t| t >= d))
}

/// Sends the heartbeat; returns the number of attempts it took.
pub fn send(cid: u32, port: u32, budget: Duration) -> Result<u32, HeartbeatError> {
    // `infinity` overflows Instant: no deadline, retry until answered.
    let deadline = Instant::now().checked_add(budget);
    let mut attempts = 0;
    loop {
        attempts += 1;
        // One attempt waits for its answer at most an hour, whatever the budget.
        let remaining = deadline
            .map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_secs(3600));
        let last = match attempt(cid, port, remaining) {
            Ok(()) => return Ok(attempts),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(reason)) => reason,
        };
        crate::host::console::log(
            crate::model::config::Level::Debug,
            &format!("heartbeat attempt {attempts}: {last}"),
        );
        let pause = backoff(attempts);
        if past(deadline, Instant::now(), pause) {
            return Err(HeartbeatError::Deadline {
                budget,
                attempts,
                last,
            });
        }
        std::thread::sleep(pause);
    }
}

/// A failed `connect`: whether trying again may help. ENODEV means the
/// kernel has no vsock transport (no virtio-vsock device, or its module is
/// not loaded): that does not change by waiting, so the budget is not
/// spent on it.
fn connect_failure(cid: u32, port: u32, e: nix::errno::Errno) -> Attempt {
    match e {
        nix::errno::Errno::ENODEV => Attempt::Fatal(HeartbeatError::NoVsock(e.desc().into())),
        other => Attempt::Retry(format!("connect to {cid}:{port}: {}", other.desc())),
    }
}

fn attempt(cid: u32, port: u32, remaining: Duration) -> Result<(), Attempt> {
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| match e {
        nix::errno::Errno::EAFNOSUPPORT | nix::errno::Errno::EINVAL => {
            Attempt::Fatal(HeartbeatError::NoVsock(e.desc().into()))
        }
        other => Attempt::Retry(format!("socket: {}", other.desc())),
    })?;
    connect(fd.as_raw_fd(), &VsockAddr::new(cid, port))
        .map_err(|e| connect_failure(cid, port, e))?;
    // A vsock socket is not a Unix socket, but std's UnixStream only does
    // read, write and SO_RCVTIMEO on it, which every stream socket supports.
    let mut stream = std::os::unix::net::UnixStream::from(fd);
    stream
        .set_read_timeout(Some(remaining.max(Duration::from_millis(1))))
        .map_err(|e| Attempt::Retry(e.to_string()))?;
    stream
        .write_all(&[MAGIC])
        .map_err(|e| Attempt::Retry(format!("send: {e}")))?;
    let mut answer = [0u8; 1];
    match stream.read(&mut answer) {
        Ok(1) if answer[0] == MAGIC => Ok(()),
        Ok(1) => Err(Attempt::Fatal(HeartbeatError::WrongByte(answer[0]))),
        Ok(_) => Err(Attempt::Retry(
            "the parent closed the connection without answering".into(),
        )),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
            Err(Attempt::Retry("no answer in time".into()))
        }
        Err(e) => Err(Attempt::Retry(format!("receive: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_second() {
        let ms: Vec<u128> = (1..=8).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(backoff(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn an_infinite_budget_never_gives_up() {
        let now = Instant::now();
        assert!(!past(None, now, Duration::from_secs(1)));
        let soon = now + Duration::from_millis(500);
        assert!(past(Some(soon), now, Duration::from_secs(1)));
        assert!(!past(Some(soon), now, Duration::from_millis(100)));
        assert_eq!(
            now.checked_add(Duration::MAX),
            None,
            "why the deadline is an Option"
        );
    }

    #[test]
    fn no_vsock_transport_gives_up_at_once() {
        // Before: ENODEV was retried for the whole budget (20 s by default).
        assert!(matches!(
            connect_failure(3, 9000, nix::errno::Errno::ENODEV),
            Attempt::Fatal(HeartbeatError::NoVsock(_))
        ));
        for retried in [
            nix::errno::Errno::ETIMEDOUT,
            nix::errno::Errno::ECONNRESET,
            nix::errno::Errno::ECONNREFUSED,
            nix::errno::Errno::EINTR,
        ] {
            assert!(matches!(
                connect_failure(3, 9000, retried),
                Attempt::Retry(_)
            ));
        }
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            HeartbeatError::WrongByte(0x42).to_string(),
            "the parent answered 0x42 instead of 0xb7"
        );
        let e = HeartbeatError::Deadline {
            budget: Duration::from_secs(20),
            attempts: 9,
            last: "connect to 3:9000: Connection timed out".into(),
        };
        assert_eq!(e.to_string(), "no answer within 20s after 9 attempts; last error: connect to 3:9000: Connection timed out");
    }
}
