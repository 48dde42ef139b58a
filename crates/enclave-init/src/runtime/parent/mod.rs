//! The parent channel: what the parent instance may see of the enclave,
//! over vsock, when the image's configuration has a `[parent]` section
//! (measured into PCR2 with the rest of the image). The parent is
//! untrusted: it may read the services' states, init's own lines, the boot
//! report and the end record; a service's captured output only when the
//! image exports it (`logs`); and the one thing it may ever ask for is a
//! graceful end (`poweroff`), only with `allow_poweroff = true`. Every
//! other request does not even parse ([`proto::parent`]); it is refused
//! and logged.
//!
//! Only connections from the configured CID are accepted. A parent that
//! is slow, stalled or hostile never delays init: connections, input and
//! each client's backlog are capped; what does not fit is dropped and the
//! count is told to that client once it reads again; a client that sends
//! no request in time is closed. When the enclave ends, every client gets
//! the end record, with a short bounded wait for it to be written.
//!
//! The listener is vsock in an enclave; in debug builds a test may give a
//! Unix socket instead (`host::fault::parent_socket`): the same code serves
//! both.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};

use super::control::{entry, info, write_queued, View};
use crate::engine::orchestrator::EndCause;
use crate::host::console;
use crate::host::ratelimit::RateLimit;
use crate::model::config::{Level, Parent};
use crate::model::{Ending, Pid};
use crate::proto::parent::{self, Command, EndRecord, Event};
use crate::proto::{self, Response};

/// Parent connections at once.
pub const MAX_CLIENTS: usize = 16;
/// Bytes queued for one client; what does not fit is dropped and counted.
pub const MAX_BACKLOG: usize = 256 * 1024;
/// A client that has not sent its request in this time is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the end record may take to be written, for all clients.
pub const END_WAIT: Duration = Duration::from_secs(1);
/// Lines taken from a ring at a time while a client has room.
const CHUNK_LINES: usize = 256;
/// Room kept in a backlog for the `dropped` notice and the end record.
const RESERVE: usize = 4096;

pub type Token = u64;

enum Listener {
    Vsock(OwnedFd),
    Unix(UnixListener),
}

/// What a client is being served.
enum Serving {
    /// Its request has not come yet.
    Request,
    /// A service's lines from `next`; `until`: up to there, then `end`.
    Logs {
        service: String,
        next: u64,
        until: Option<u64>,
    },
    /// Everything, as it happens; `init_next`: the next own line.
    Events { init_next: u64 },
    /// The end record only.
    Wait,
    /// Answered: closed once written.
    Done,
}

struct Client {
    file: File,
    input: Vec<u8>,
    output: VecDeque<u8>,
    serving: Serving,
    /// Items not sent for lack of room, told to the client when it reads.
    dropped: u64,
    idle_until: Option<Instant>,
    /// The epoll interest last set (`None`: none yet beyond the first).
    interest: EpollFlags,
    /// The client closed its side (after its request): no more reading.
    read_closed: bool,
    /// A `logs` client has lines left that did not fit its backlog.
    more_logs: bool,
}

/// What the loop must do for the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    Poweroff,
}

pub struct Server {
    config: Parent,
    listener: Listener,
    token_kind: Token,
    next_serial: u64,
    clients: HashMap<Token, Client>,
    /// The services' states as `events` clients were last told.
    states: BTreeMap<String, (String, Option<Pid>)>,
    warnings: RateLimit,
}

impl Server {
    /// Listens on vsock `config.port` (or, in tests, on the Unix socket
    /// `unix`). Clients' tokens are `token_kind` with a serial.
    pub fn bind(config: &Parent, unix: Option<&Path>, token_kind: Token) -> io::Result<Self> {
        let listener = match unix {
            Some(path) => {
                let _ = std::fs::remove_file(path);
                let l = UnixListener::bind(path)?;
                l.set_nonblocking(true)?;
                Listener::Unix(l)
            }
            None => Listener::Vsock(crate::sys::vsock_listen(config.port)?),
        };
        Ok(Self {
            config: config.clone(),
            listener,
            token_kind,
            next_serial: 0,
            clients: HashMap::new(),
            states: BTreeMap::new(),
            warnings: RateLimit::new(Duration::from_secs(10), 5),
        })
    }

    pub fn listener_fd(&self) -> BorrowedFd<'_> {
        match &self.listener {
            Listener::Vsock(fd) => fd.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }

    /// A refusal or a problem the parent can cause: logged, rate-limited.
    fn warn(&mut self, message: &str) {
        if self.warnings.allow(Instant::now()) {
            console::log(Level::Warn, &format!("parent channel: {message}"));
        }
    }

    pub fn accept(&mut self, epoll: &Epoll) {
        for _ in 0..MAX_CLIENTS {
            let accepted = match &self.listener {
                Listener::Vsock(fd) => crate::sys::vsock_accept(fd.as_fd()),
                Listener::Unix(l) => l.accept().and_then(|(s, _)| {
                    s.set_nonblocking(true)?;
                    // A test's stand-in for the parent: its peer is the parent.
                    Ok((OwnedFd::from(s), None))
                }),
            };
            let (fd, cid) = match accepted {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.warn(&format!("accept: {e}"));
                    return;
                }
            };
            let mut file = File::from(fd);
            if let Some(cid) = cid.filter(|c| *c != self.config.cid) {
                let only = self.config.cid;
                let _ = file.write_all(&proto::encode(&Response::Error {
                    message: format!("refused: CID {cid} may not connect"),
                }));
                self.warn(&format!(
                    "refused a connection from CID {cid}: only CID {only} is accepted"
                ));
                continue;
            }
            if self.clients.len() >= MAX_CLIENTS {
                let _ = file.write_all(&proto::encode(&Response::Error {
                    message: "too many connections".into(),
                }));
                self.warn("too many connections; refused one");
                continue;
            }
            self.next_serial += 1;
            let token = self.token_kind | (self.next_serial & 0xffff_ffff_ffff);
            if epoll
                .add(file.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))
                .is_err()
            {
                continue;
            }
            self.clients.insert(
                token,
                Client {
                    file,
                    input: Vec::new(),
                    output: VecDeque::new(),
                    serving: Serving::Request,
                    dropped: 0,
                    idle_until: Instant::now().checked_add(IDLE_TIMEOUT),
                    interest: EpollFlags::EPOLLIN,
                    read_closed: false,
                    more_logs: false,
                },
            );
        }
    }

    /// Reads a client's request, or writes what is queued for it.
    pub fn on_client_event(
        &mut self,
        token: Token,
        flags: EpollFlags,
        view: &View<'_>,
        epoll: &Epoll,
    ) -> Option<Ask> {
        if flags.contains(EpollFlags::EPOLLOUT) {
            self.pump(token, view);
            self.flush(token, epoll);
        }
        let client = self.clients.get_mut(&token)?;
        let mut gone = flags.intersects(EpollFlags::EPOLLERR)
            || (flags.contains(EpollFlags::EPOLLHUP) && client.read_closed);
        let mut line = None;
        if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP) && !client.read_closed {
            let mut buf = [0u8; 2048];
            for _ in 0..4 {
                match client.file.read(&mut buf) {
                    // Before its request: gone. After it: the client only
                    // closed its side (it still reads what comes).
                    Ok(0) if matches!(client.serving, Serving::Request) => {
                        gone = true;
                        break;
                    }
                    Ok(0) => {
                        client.read_closed = true;
                        break;
                    }
                    // After its request a client has nothing to say: one
                    // that talks on is cut off rather than read forever.
                    Ok(_) if !matches!(client.serving, Serving::Request) => {
                        gone = true;
                        break;
                    }
                    Ok(n) => {
                        client
                            .input
                            .extend_from_slice(buf.get(..n).unwrap_or_default());
                        if let Some(end) = client.input.iter().position(|b| *b == b'\n') {
                            line = Some(client.input.get(..end).unwrap_or_default().to_vec());
                            // One request per connection: more after it is
                            // a client that talks on (cut off below).
                            gone = client.input.len() > end + 1;
                            client.input.clear();
                            break;
                        }
                        if client.input.len() > parent::MAX_REQUEST {
                            line = Some(std::mem::take(&mut client.input));
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        gone = true;
                        break;
                    }
                }
            }
        }
        let ask = line.and_then(|line| self.serve(token, &line, view));
        if gone {
            self.close(token, epoll);
        } else {
            self.pump(token, view);
            self.flush(token, epoll);
        }
        ask
    }

    /// Answers one request line.
    fn serve(&mut self, token: Token, line: &[u8], view: &View<'_>) -> Option<Ask> {
        let request = match parent::parse_request(line) {
            Ok(r) => r,
            Err(reason) => {
                self.warn(&reason);
                self.answer(token, Response::Error { message: reason });
                return None;
            }
        };
        if let Some(c) = self.clients.get_mut(&token) {
            c.idle_until = None;
        }
        console::log(
            Level::Debug,
            &format!("parent channel: serving {}", request.command.name()),
        );
        let exported = |name: &str| self.config.logs.includes(name);
        match request.command {
            Command::List => {
                let services = view
                    .engine
                    .units()
                    .map(|(name, u)| shown(info(u, None, 0), exported(name)))
                    .collect();
                self.answer(token, Response::List { services });
            }
            Command::Status { name } => match view.engine.unit(&name) {
                Some(unit) => {
                    let logs = view.logs.get(&name).filter(|_| exported(&name));
                    let service = shown(info(unit, logs, 10), exported(&name));
                    self.answer(token, Response::Status { service });
                }
                None => self.answer(
                    token,
                    Response::Error {
                        message: format!("no such service: {name}"),
                    },
                ),
            },
            Command::Logs {
                name,
                lines,
                follow,
            } => {
                let ring = view.logs_of(&name);
                match (ring, exported(&name)) {
                    (Some(ring), true) => {
                        let kept = ring.len() as u64;
                        let from = ring.total() - lines.map_or(kept, |n| (n as u64).min(kept));
                        if let Some(c) = self.clients.get_mut(&token) {
                            c.serving = Serving::Logs {
                                service: name,
                                next: from,
                                until: (!follow).then_some(ring.total()),
                            };
                        }
                    }
                    (None, _) => self.answer(
                        token,
                        Response::Error {
                            message: format!("no such service: {name}"),
                        },
                    ),
                    (Some(_), false) => {
                        let message =
                            format!("refused: the image does not export the logs of {name}");
                        self.warn(&format!("refused logs of {name}: not exported"));
                        self.answer(token, Response::Error { message });
                    }
                }
            }
            Command::Events => {
                self.join_events(token, view);
            }
            Command::Wait => {
                if let Some(c) = self.clients.get_mut(&token) {
                    c.serving = Serving::Wait;
                }
            }
            Command::Poweroff if self.config.allow_poweroff => {
                console::log(
                    Level::Info,
                    "parent channel: the parent asks for a poweroff",
                );
                self.answer(
                    token,
                    Response::Done {
                        message: "powering off".into(),
                    },
                );
                return Some(Ask::Poweroff);
            }
            Command::Poweroff => {
                self.warn("refused poweroff: allow_poweroff is not set");
                self.answer(
                    token,
                    Response::Error {
                        message: "refused: the image does not allow the parent to power it off"
                            .into(),
                    },
                );
            }
        }
        None
    }

    /// One reply, then the connection closes.
    fn answer(&mut self, token: Token, response: Response) {
        if let Some(c) = self.clients.get_mut(&token) {
            c.output.extend(proto::encode(&response));
            c.serving = Serving::Done;
        }
    }

    /// `events`: the boot report, every service's state, the kept own
    /// lines; then changes as they come ([`Server::observe`]).
    fn join_events(&mut self, token: Token, view: &View<'_>) {
        let first = !self
            .clients
            .values()
            .any(|c| matches!(c.serving, Serving::Events { .. }));
        let now = current(view);
        if first {
            self.states = now.clone();
        }
        let (_, first_kept) = console::own_lines(0, 0);
        let Some(c) = self.clients.get_mut(&token) else {
            return;
        };
        push(
            c,
            &Event::Boot {
                report: view.boot.clone(),
            },
        );
        for (service, (state, pid)) in &self.states {
            push(c, &state_event(service, state, *pid));
        }
        c.serving = Serving::Events {
            init_next: first_kept,
        };
    }

    /// After each turn of the loop: state changes and init's new lines to
    /// `events` clients; more lines to `logs` clients with room.
    pub fn observe(&mut self, view: &View<'_>, epoll: &Epoll) {
        if self.clients.is_empty() {
            return;
        }
        let listening = self
            .clients
            .values()
            .any(|c| matches!(c.serving, Serving::Events { .. }));
        if listening {
            let now = current(view);
            let mut changes = Vec::new();
            for (service, (state, pid)) in &now {
                if self.states.get(service) != Some(&(state.clone(), *pid)) {
                    changes.push(state_event(service, state, *pid));
                }
            }
            for service in self.states.keys().filter(|s| !now.contains_key(*s)) {
                changes.push(state_event(service, "removed", None));
            }
            self.states = now;
            let total = console::own_total();
            for c in self.clients.values_mut() {
                let Serving::Events { init_next } = c.serving else {
                    continue;
                };
                let mut next = init_next;
                for event in &changes {
                    push(c, event);
                }
                while next < total {
                    let (lines, first_kept) = console::own_lines(next, CHUNK_LINES);
                    if first_kept > next {
                        c.dropped += first_kept - next;
                        next = first_kept;
                    }
                    if lines.is_empty() {
                        break;
                    }
                    for line in lines {
                        push(c, &Event::Init { line: entry(line) });
                        next += 1;
                    }
                }
                c.serving = Serving::Events { init_next: next };
            }
        }
        let tokens: Vec<Token> = self.clients.keys().copied().collect();
        for token in tokens {
            self.pump(token, view);
            self.flush(token, epoll);
        }
    }

    /// Queues a `logs` client's next lines while it has room; a follower
    /// that fell behind the ring is told how many it missed.
    fn pump(&mut self, token: Token, view: &View<'_>) {
        let Some(c) = self.clients.get_mut(&token) else {
            return;
        };
        let Serving::Logs {
            service,
            next,
            until,
        } = &mut c.serving
        else {
            return;
        };
        let Some(ring) = view.logs_of(service) else {
            c.output.extend(proto::encode(&Response::End));
            c.serving = Serving::Done;
            return;
        };
        if *next < ring.first_seq() {
            c.dropped += ring.first_seq() - *next;
            *next = ring.first_seq();
        }
        let last = until.unwrap_or(u64::MAX).min(ring.total());
        'fill: while *next < last && c.output.len() + RESERVE < MAX_BACKLOG {
            let max = CHUNK_LINES.min(usize::try_from(last - *next).unwrap_or(CHUNK_LINES));
            let (lines, _) = ring.range(*next, max);
            if lines.is_empty() {
                break;
            }
            for line in lines {
                // Room is checked for each line: one can be kilobytes.
                if c.output.len() + RESERVE >= MAX_BACKLOG {
                    break 'fill;
                }
                c.output
                    .extend(proto::encode(&Response::Line { line: entry(line) }));
                *next += 1;
            }
        }
        c.more_logs = *next < last;
        if c.dropped > 0 {
            let count = std::mem::take(&mut c.dropped);
            c.output.extend(proto::encode(&Response::Event {
                event: Event::Dropped { count },
            }));
        }
        if until.is_some() && *next >= last {
            c.output.extend(proto::encode(&Response::End));
            c.serving = Serving::Done;
        }
    }

    fn flush(&mut self, token: Token, epoll: &Epoll) {
        let Some(c) = self.clients.get_mut(&token) else {
            return;
        };
        if write_queued(&mut c.file, &mut c.output).is_err() {
            self.close(token, epoll);
            return;
        }
        if c.output.is_empty() && c.dropped > 0 && matches!(c.serving, Serving::Events { .. }) {
            let count = std::mem::take(&mut c.dropped);
            c.output.extend(proto::encode(&Response::Event {
                event: Event::Dropped { count },
            }));
        }
        if c.output.is_empty() && matches!(c.serving, Serving::Done) {
            self.close(token, epoll);
            return;
        }
        // Writable matters only while something waits to be written (a
        // caught-up follower has nothing: watching then would spin).
        let want_out = !c.output.is_empty() || c.more_logs;
        let mut flags = EpollFlags::empty();
        if want_out {
            flags |= EpollFlags::EPOLLOUT;
        }
        if !c.read_closed {
            flags |= EpollFlags::EPOLLIN;
        }
        if flags != c.interest {
            let mut event = EpollEvent::new(flags, token);
            if epoll.modify(c.file.as_fd(), &mut event).is_ok() {
                c.interest = flags;
            }
        }
    }

    fn close(&mut self, token: Token, epoll: &Epoll) {
        if let Some(c) = self.clients.remove(&token) {
            let _ = epoll.delete(c.file.as_fd());
        }
    }

    /// Closes every client (after an internal error).
    pub fn drop_clients(&mut self, epoll: &Epoll) {
        let tokens: Vec<Token> = self.clients.keys().copied().collect();
        for token in tokens {
            self.close(token, epoll);
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.clients
            .values()
            .filter_map(|c| c.idle_until)
            .chain(self.warnings.deadline())
            .min()
    }

    pub fn on_deadline(&mut self, now: Instant, epoll: &Epoll) {
        if let Some(n) = self.warnings.take_suppressed(now) {
            console::log(
                Level::Warn,
                &format!("parent channel: {n} more refusals or problems not shown"),
            );
        }
        let idle: Vec<Token> = self
            .clients
            .iter()
            .filter(|(_, c)| c.idle_until.is_some_and(|d| d <= now))
            .map(|(t, _)| *t)
            .collect();
        for token in idle {
            self.close(token, epoll);
        }
    }
}

/// Queues an event for a client, or counts it as dropped when its backlog
/// is full; the count goes first once there is room again.
fn push(c: &mut Client, event: &Event) {
    let bytes = proto::encode(&Response::Event {
        event: event.clone(),
    });
    if c.output.len() + bytes.len() + RESERVE > MAX_BACKLOG {
        c.dropped += 1;
        return;
    }
    if c.dropped > 0 {
        let count = std::mem::take(&mut c.dropped);
        c.output.extend(proto::encode(&Response::Event {
            event: Event::Dropped { count },
        }));
    }
    c.output.extend(bytes);
}

/// A service as the parent may see it: no command line (arguments may
/// hold secrets), and its `STATUS=` text only when its output is exported.
fn shown(mut service: crate::proto::ServiceInfo, exported: bool) -> crate::proto::ServiceInfo {
    service.command.clear();
    if !exported {
        service.status_text = None;
        service.recent.clear();
    }
    service
}

fn current(view: &View<'_>) -> BTreeMap<String, (String, Option<Pid>)> {
    view.engine
        .units()
        .map(|(name, u)| {
            (
                name.clone(),
                (u.state_name().to_string(), u.life.state.main_pid()),
            )
        })
        .collect()
}

fn state_event(service: &str, state: &str, pid: Option<Pid>) -> Event {
    Event::State {
        service: service.to_string(),
        state: state.to_string(),
        pid,
        time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    }
}

fn end_record(ending: Ending, cause: Option<&EndCause>) -> EndRecord {
    let action = match ending {
        Ending::Poweroff => "poweroff",
        Ending::Reboot => "reboot",
        Ending::Exit(_) => "exit",
    };
    EndRecord {
        action: action.into(),
        reason: cause.map_or_else(|| "init is ending".into(), |c| c.reason.clone()),
        service: cause.and_then(|c| c.service.clone()),
        status: cause.and_then(|c| c.status),
    }
}

mod end;
mod glue;
