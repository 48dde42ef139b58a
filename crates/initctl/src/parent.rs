//! `initctl --vsock ADDRESS ...`: the parent instance's side of the parent
//! channel. ADDRESS is `CID[:PORT]` (AF_VSOCK, port 9001 by default), or
//! `unix:PATH[:PORT]`: the "hybrid vsock" Unix socket that Firecracker,
//! cloud-hypervisor and vhost-device-vsock offer for a local VM, where the
//! client first writes `CONNECT PORT\n` and reads `OK ...`.
//!
//! Exit status: 0 done; 1 refused or failed; 2 usage; 3 cannot connect;
//! 124 the connection ended before its answer (`list`, `status`, `logs`:
//! before the reply or `end`; `wait`, `events`: before the end record).
//! After an end record, `wait` and `events` exit with the status of the
//! service that ended the enclave (0 when none did); scripts that must
//! tell a service's 1, 2, 3 or 124 from initctl's read the end record
//! (`--json`) or stderr.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use initctl_proto::parent::{self, Command, Event, Request};
use initctl_proto::{self as proto, Response};

use crate::{fail, print_response, Failure};

pub const DEFAULT_PORT: u32 = 9001;
/// The connection ended before its answer (like timeout(1)'s 124: not a
/// status a service commonly uses).
pub const LOST: u8 = 124;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Vsock { cid: u32, port: u32 },
    Hybrid { path: PathBuf, port: u32 },
}

/// `16`, `16:9001`, `unix:/run/vm.sock`, `unix:/run/vm.sock:9001`.
pub fn parse_address(text: &str) -> Result<Address, String> {
    if let Some(rest) = text.strip_prefix("unix:") {
        let (path, port) = match rest.rsplit_once(':') {
            Some((path, port)) if port.parse::<u32>().is_ok() => {
                (path, port.parse().unwrap_or(DEFAULT_PORT))
            }
            _ => (rest, DEFAULT_PORT),
        };
        if path.is_empty() {
            return Err(format!("{text:?}: no socket path after unix:"));
        }
        return Ok(Address::Hybrid {
            path: PathBuf::from(path),
            port,
        });
    }
    let (cid, port) = match text.split_once(':') {
        Some((cid, port)) => (cid, Some(port)),
        None => (text, None),
    };
    let cid = cid
        .parse::<u32>()
        .map_err(|_| format!("{text:?}: expected CID[:PORT] or unix:PATH[:PORT]"))?;
    let port = match port {
        Some(p) => p
            .parse::<u32>()
            .map_err(|_| format!("{text:?}: the port is not a number"))?,
        None => DEFAULT_PORT,
    };
    Ok(Address::Vsock { cid, port })
}

/// A connected stream to the enclave's parent channel.
fn connect(address: &Address) -> Result<std::fs::File, String> {
    match address {
        Address::Vsock { cid, port } => {
            use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, VsockAddr};
            let fd = socket(
                AddressFamily::Vsock,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .map_err(|e| format!("vsock socket: {e}"))?;
            connect(fd.as_raw_fd(), &VsockAddr::new(*cid, *port))
                .map_err(|e| format!("vsock {cid}:{port}: {e}"))?;
            Ok(std::fs::File::from(fd))
        }
        Address::Hybrid { path, port } => {
            let mut stream =
                UnixStream::connect(path).map_err(|e| format!("{}: {e}", path.display()))?;
            stream
                .write_all(format!("CONNECT {port}\n").as_bytes())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            // The answer line, one byte at a time: nothing past it is read.
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while line.len() < 128 {
                match stream.read(&mut byte) {
                    Ok(1) if byte[0] == b'\n' => break,
                    Ok(1) => line.push(byte[0]),
                    Ok(_) => break,
                    Err(e) => return Err(format!("{}: {e}", path.display())),
                }
            }
            let answer = String::from_utf8_lossy(&line);
            if !answer.starts_with("OK") {
                return Err(format!(
                    "{}: port {port}: the VM's socket answered {:?} (nothing listens there?)",
                    path.display(),
                    answer.trim()
                ));
            }
            // SAFETY: the descriptor is the stream's, handed over whole.
            let fd = unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(stream)) };
            Ok(std::fs::File::from(fd))
        }
    }
}

/// Sends `command` and prints what comes back.
pub fn run(address: &Address, command: Command, json: bool) -> Result<(), Failure> {
    let mut stream = connect(address).map_err(|e| fail(3, e))?;
    let request = Request {
        version: parent::VERSION,
        command,
    };
    stream
        .write_all(&proto::encode(&request))
        .map_err(|e| fail(3, format!("cannot talk to the enclave: {e}")))?;
    let mut reader = BufReader::new(stream);
    let mut out = std::io::stdout().lock();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => {
                return Err(fail(
                    LOST,
                    "the connection ended before the enclave's whole answer",
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(fail(LOST, format!("the connection was lost: {e}"))),
        }
        let response: Response = serde_json::from_str(&line)
            .map_err(|e| fail(1, format!("unreadable answer from the enclave: {e}")))?;
        match response {
            Response::Error { message } => return Err(fail(1, message)),
            Response::End => return Ok(()),
            Response::Event {
                event: Event::End { end },
            } => {
                print_response(
                    &mut out,
                    Response::Event {
                        event: Event::End { end: end.clone() },
                    },
                    json,
                );
                let _ = out.flush();
                return match end.status {
                    Some(0) | None => Ok(()),
                    Some(status) => Err(fail(u8::try_from(status.clamp(1, 255)).unwrap_or(1), "")),
                };
            }
            Response::Line { .. } | Response::Event { .. } => {
                print_response(&mut out, response, json);
                let _ = out.flush();
            }
            other => {
                print_response(&mut out, other, json);
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        for (text, want) in [
            (
                "16",
                Ok(Address::Vsock {
                    cid: 16,
                    port: 9001,
                }),
            ),
            (
                "16:5005",
                Ok(Address::Vsock {
                    cid: 16,
                    port: 5005,
                }),
            ),
            (
                "unix:/run/vm.sock",
                Ok(Address::Hybrid {
                    path: "/run/vm.sock".into(),
                    port: 9001,
                }),
            ),
            (
                "unix:/run/vm.sock:7",
                Ok(Address::Hybrid {
                    path: "/run/vm.sock".into(),
                    port: 7,
                }),
            ),
            (
                "unix:/run/a:b.sock",
                Ok(Address::Hybrid {
                    path: "/run/a:b.sock".into(),
                    port: 9001,
                }),
            ),
        ] {
            assert_eq!(parse_address(text), want, "{text}");
        }
        for bad in ["", "x", "16:x", "unix:", "unix::9"] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }
}
