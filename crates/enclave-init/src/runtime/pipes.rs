//! The services' output pipes: read with a budget per wakeup, split into
//! lines, written to the console and kept in each service's ring.

use super::*;

impl Supervisor {
    pub(super) fn watch_pipe(&mut self, fd: OwnedFd, name: &str, pid: Pid) {
        self.next_pipe_serial += 1;
        let token = TOKEN_PIPE | (self.next_pipe_serial & !TOKEN_KIND);
        if let Err(e) = self
            .epoll
            .add(fd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))
        {
            console::log(
                Level::Error,
                &format!("{name}: cannot watch its output: {e}"),
            );
            return;
        }
        self.pipes.insert(
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

    pub(super) fn on_pipe(&mut self, token: u64) {
        // Bounded work per wakeup keeps one chatty service from starving
        // the others; epoll is level-triggered and calls again.
        self.read_pipe(token, 4);
    }

    /// Reads at most `budget` chunks of one output pipe; closes it at EOF.
    pub(super) fn read_pipe(&mut self, token: u64, budget: usize) {
        const CHUNK: usize = 64 * 1024;
        let Some(pipe) = self.pipes.get_mut(&token) else {
            // Closed earlier in the same batch of events.
            return;
        };
        crate::host::fault::point("pipe", &pipe.service);
        let mut buf = std::mem::take(&mut self.read_buf);
        buf.resize(CHUNK, 0);
        let mut lines = std::mem::take(&mut self.lines);
        lines.begin(&pipe.prefix);
        let mut closed = false;
        for _ in 0..budget {
            match sys::read(pipe.fd.as_fd(), &mut buf) {
                Ok(0) => {
                    pipe.splitter.finish(&mut lines);
                    closed = true;
                    break;
                }
                Ok(n) => pipe
                    .splitter
                    .push(buf.get(..n).unwrap_or_default(), &mut lines),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    pipe.splitter.finish(&mut lines);
                    closed = true;
                    break;
                }
            }
        }
        let (service, pid) = (pipe.service.clone(), pipe.pid);
        self.record_lines(&service, pid, &lines);
        self.read_buf = buf;
        self.lines = lines;
        if closed {
            if let Some(pipe) = self.pipes.remove(&token) {
                let _ = self.epoll.delete(pipe.fd.as_fd());
            }
        }
    }

    pub(super) fn record_lines(&mut self, service: &str, pid: Pid, lines: &Lines) {
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
            };
            ctl.pump(Some(service), &view, &self.epoll);
        }
    }

    /// Last words of the services: a process's final lines may still sit in
    /// its pipe after init has reaped it (more than one wakeup's budget in
    /// a pipe enlarged with F_SETPIPE_SZ). Everything is read (up to what a
    /// surviving writer has not written yet), partial lines included.
    pub(super) fn drain_pipes(&mut self) {
        let tokens: Vec<u64> = self.pipes.keys().copied().collect();
        for token in tokens {
            self.read_pipe(token, 1024);
            if let Some(pipe) = self.pipes.get_mut(&token) {
                let mut lines = Lines::default();
                lines.begin(&pipe.prefix);
                pipe.splitter.finish(&mut lines);
                let (service, pid) = (pipe.service.clone(), pipe.pid);
                self.record_lines(&service, pid, &lines);
            }
        }
    }
}
