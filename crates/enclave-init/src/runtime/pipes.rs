//! The services' output pipes: each owned here with its line splitter,
//! read with a budget per wakeup, split into lines in one reused batch;
//! the runtime writes each batch to the console and keeps it in the
//! service's ring.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};

use super::*;

/// An output pipe of one spawned process.
struct Pipe {
    fd: OwnedFd,
    service: String,
    pid: Pid,
    /// `name[pid]: `, the start of its lines on the console.
    prefix: Vec<u8>,
    splitter: LineSplitter,
}

/// Every output pipe, known by a token that is never reused (see
/// [`TOKEN_PIPE`]), and the buffers a read needs, kept from read to read.
#[derive(Default)]
pub(super) struct Pipes {
    open: HashMap<u64, Pipe>,
    next_serial: u64,
    buf: Vec<u8>,
    /// The lines of the last read, in the console's form.
    pub(super) lines: Lines,
}

impl Pipes {
    /// Watches the read end of a new process's output.
    pub(super) fn watch(&mut self, epoll: &Epoll, fd: OwnedFd, name: &str, pid: Pid) {
        self.next_serial += 1;
        let token = TOKEN_PIPE | (self.next_serial & !TOKEN_KIND);
        if let Err(e) = epoll.add(fd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token)) {
            console::log(
                Level::Error,
                &format!("{name}: cannot watch its output: {e}"),
            );
            return;
        }
        self.open.insert(
            token,
            Pipe {
                fd,
                service: name.to_string(),
                pid,
                prefix: format!("{name}[{pid}]: ").into_bytes(),
                splitter: LineSplitter::default(),
            },
        );
    }

    /// Reads at most `budget` chunks of one pipe into [`Pipes::lines`]
    /// (with `finish`, the partial line at its end too); closes it at EOF.
    /// Whose lines they are, if the pipe is still open.
    pub(super) fn read(
        &mut self,
        epoll: &Epoll,
        token: u64,
        budget: usize,
        finish: bool,
    ) -> Option<(String, Pid)> {
        const CHUNK: usize = 64 * 1024;
        // None: closed earlier in the same batch of events.
        let pipe = self.open.get_mut(&token)?;
        crate::host::fault::point("pipe", &pipe.service);
        self.buf.resize(CHUNK, 0);
        self.lines.begin(&pipe.prefix);
        let mut closed = false;
        for _ in 0..budget {
            match sys::read(pipe.fd.as_fd(), &mut self.buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => pipe
                    .splitter
                    .push(self.buf.get(..n).unwrap_or_default(), &mut self.lines),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed || finish {
            pipe.splitter.finish(&mut self.lines);
        }
        let owner = (pipe.service.clone(), pipe.pid);
        if closed {
            if let Some(pipe) = self.open.remove(&token) {
                let _ = epoll.delete(pipe.fd.as_fd());
            }
        }
        Some(owner)
    }

    pub(super) fn tokens(&self) -> Vec<u64> {
        self.open.keys().copied().collect()
    }
}

impl Supervisor {
    pub(super) fn on_pipe(&mut self, token: u64) {
        // Bounded work per wakeup keeps one chatty service from starving
        // the others; epoll is level-triggered and calls again.
        self.read_pipe(token, 4, false);
    }

    fn read_pipe(&mut self, token: u64, budget: usize, finish: bool) {
        if let Some((service, pid)) = self.pipes.read(&self.epoll, token, budget, finish) {
            let lines = std::mem::take(&mut self.pipes.lines);
            self.record_lines(&service, pid, &lines);
            self.pipes.lines = lines;
        }
    }

    fn record_lines(&mut self, service: &str, pid: Pid, lines: &Lines) {
        if lines.is_empty() {
            return;
        }
        console::service_lines(lines);
        // Kept for `initctl logs` while the service exists (a removed
        // service's last lines still reach the console).
        if self.engine.unit(service).is_none() {
            return;
        }
        let cap = self.settings.config.log.buffer;
        self.logs
            .entry(service.to_string())
            .or_insert_with(|| LogRing::new(cap))
            .push_lines(SystemTime::now(), pid, lines);
        if let Some(ctl) = self.control.as_mut() {
            let view = View {
                engine: &self.engine,
                logs: &self.logs,
                boot: &self.boot_report,
            };
            ctl.pump(Some(service), &view, &self.epoll);
        }
    }

    /// Last words of the services: a process's final lines may still sit in
    /// its pipe after init has reaped it (more than one wakeup's budget in
    /// a pipe enlarged with F_SETPIPE_SZ). Everything is read (up to what a
    /// surviving writer has not written yet), partial lines included.
    pub(super) fn drain_pipes(&mut self) {
        for token in self.pipes.tokens() {
            self.read_pipe(token, 1024, true);
        }
    }
}
