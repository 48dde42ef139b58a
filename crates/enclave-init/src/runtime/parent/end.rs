//! The end record: what the parent hears last, before init restarts the
//! machine.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::Instant;

use nix::sys::epoll::Epoll;

use super::*;

impl Server {
    /// The enclave ends: what happened last first (states, init's last
    /// lines, a follower's last output), then the end record to every
    /// client. A client whose backlog is long loses it (counted) rather
    /// than the record. Written, then each client's side is shut and its
    /// reading awaited (its EOF says the record arrived), all within
    /// [`END_WAIT`]; then the connections close.
    pub fn end(
        &mut self,
        ending: Ending,
        cause: Option<&EndCause>,
        view: &View<'_>,
        epoll: &Epoll,
    ) {
        self.observe(view, epoll);
        let record = end_record(ending, cause);
        let event = proto::encode(&Response::Event {
            event: Event::End { end: record },
        });
        for c in self.clients.values_mut() {
            if c.output.len() > MAX_BACKLOG / 4 {
                // Keep the line being written, drop the rest.
                let keep = c
                    .output
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(0, |i| i + 1);
                let dropped = c.output.iter().skip(keep).filter(|b| **b == b'\n').count();
                c.output.truncate(keep);
                c.dropped += dropped as u64;
            }
            if c.dropped > 0 {
                let count = std::mem::take(&mut c.dropped);
                c.output.extend(proto::encode(&Response::Event {
                    event: Event::Dropped { count },
                }));
            }
            c.output.extend(event.iter().copied());
            c.more_logs = false;
        }
        let deadline = Instant::now() + END_WAIT;
        // Phase per client: writing, then waiting for its EOF.
        let mut shut: Vec<Token> = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Every client left is still writing or awaiting its EOF.
            let tokens: Vec<Token> = self.clients.keys().copied().collect();
            if tokens.is_empty() || left.is_zero() {
                break;
            }
            let mut fds: Vec<libc::pollfd> = tokens
                .iter()
                .filter_map(|t| self.clients.get(t).map(|c| (t, c)))
                .map(|(t, c)| libc::pollfd {
                    fd: c.file.as_raw_fd(),
                    events: if c.output.is_empty() && shut.contains(t) {
                        libc::POLLIN
                    } else {
                        libc::POLLOUT
                    },
                    revents: 0,
                })
                .collect();
            if crate::sys::poll(&mut fds, left).is_err() {
                break;
            }
            for (token, pfd) in tokens.iter().zip(&fds) {
                let Some(c) = self.clients.get_mut(token) else {
                    continue;
                };
                if pfd.revents == 0 {
                    continue;
                }
                if pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
                    self.clients.remove(token);
                    continue;
                }
                if !c.output.is_empty() {
                    if write_queued(&mut c.file, &mut c.output).is_err() {
                        self.clients.remove(token);
                        continue;
                    }
                    if c.output.is_empty() {
                        // SAFETY: shutdown on a descriptor of ours.
                        unsafe { libc::shutdown(c.file.as_raw_fd(), libc::SHUT_WR) };
                        shut.push(*token);
                    }
                } else if shut.contains(token) {
                    // Its EOF (or anything: it is reading): delivered.
                    let mut buf = [0u8; 256];
                    match c.file.read(&mut buf) {
                        Ok(0) | Err(_) => {
                            self.clients.remove(token);
                        }
                        Ok(_) => {}
                    }
                    if pfd.revents & libc::POLLHUP != 0 {
                        self.clients.remove(token);
                    }
                }
            }
        }
        self.clients.clear();
    }
}
