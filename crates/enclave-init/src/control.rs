//! The control socket: `initctl`'s way in. A Unix stream socket, mode 0600,
//! served by init's one event loop. Every client is non-blocking and
//! costs at most a bounded input buffer and a bounded output backlog: a
//! client that sends too much is answered with an error and dropped, one
//! that does not read its replies (a stalled `--follow`) is cut off, and one
//! that sends nothing is closed after [`IDLE_TIMEOUT`].

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};

use crate::config::Level;
use crate::console;
use crate::lifecycle::{Exit, State};
use crate::output::{LogLine, LogRing};
pub use crate::proto::ReloadReport;
use crate::proto::{self, Command, LastExit, LogEntry, Request, Response, ServiceInfo};
use crate::spec::ServiceType;
use crate::supervisor::{Ending, Mode, Service, Supervisor};
use crate::sys;

/// Connections at once; more are refused at accept.
pub const MAX_CLIENTS: usize = 128;
/// Reply bytes queued for one client before it is cut off.
pub const MAX_BACKLOG: usize = 1024 * 1024;
/// A client that has not sent a whole request in this time is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// `stop`/`start` answer once the service settles, or after this long.
const SETTLE_GRACE: Duration = Duration::from_secs(5);

struct Client {
    stream: UnixStream,
    uid: u32,
    input: Vec<u8>,
    output: VecDeque<u8>,
    /// Idle deadline while no request is being served.
    idle_until: Option<Instant>,
    /// `logs --follow`: the service and how many of its lines were sent.
    follow: Option<(String, u64)>,
    /// A `start`/`stop`/`restart` waiting for the service to settle.
    waiting: Option<Waiting>,
    /// Close once the output is written.
    closing: bool,
    watching_output: bool,
}

struct Waiting {
    service: String,
    want: Want,
    /// `None`: the service's timeouts are infinite; wait as long as it takes.
    deadline: Option<Instant>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Up,
    Down,
}

pub struct Control {
    listener: UnixListener,
    path: PathBuf,
    clients: HashMap<RawFd, Client>,
    token_base: u64,
    own_uid: u32,
}

impl Control {
    /// Binds the socket, replacing a stale one, with mode 0600.
    pub fn bind(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Created under a restrictive umask so that no window exists in
        // which others could connect; chmod makes it exact.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let listener = bound?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            clients: HashMap::new(),
            token_base: 0,
            own_uid: nix::unistd::geteuid().as_raw(),
        })
    }

    pub fn listener_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    pub fn accept(&mut self, epoll: &Epoll, token_base: u64) {
        self.token_base = token_base;
        // Bounded per wakeup; the listener stays readable if more wait.
        for _ in 0..MAX_CLIENTS {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: log, and let the loop come back.
                    console::log(Level::Warn, &format!("control socket accept: {e}"));
                    return;
                }
            };
            if self.clients.len() >= MAX_CLIENTS {
                let mut s = stream;
                let _ = s.set_nonblocking(true);
                let _ = s.write_all(&proto::encode(&Response::Error {
                    message: "too many connections; try again".into(),
                }));
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let uid = sys::peer_uid(stream.as_fd()).unwrap_or(u32::MAX);
            let fd = stream.as_raw_fd();
            if epoll
                .add(
                    stream.as_fd(),
                    EpollEvent::new(EpollFlags::EPOLLIN, self.token_base | fd as u64),
                )
                .is_err()
            {
                continue;
            }
            self.clients.insert(
                fd,
                Client {
                    stream,
                    uid,
                    input: Vec::new(),
                    output: VecDeque::new(),
                    idle_until: Some(Instant::now() + IDLE_TIMEOUT),
                    follow: None,
                    waiting: None,
                    closing: false,
                    watching_output: false,
                },
            );
        }
    }

    /// Reads what a client sent; returns its complete requests (or the
    /// reason a line is not one).
    pub fn on_client_event(
        &mut self,
        fd: RawFd,
        flags: EpollFlags,
        epoll: &Epoll,
    ) -> Vec<(RawFd, Result<Request, String>)> {
        let mut requests = Vec::new();
        if !self.clients.contains_key(&fd) {
            return requests;
        }
        if flags.contains(EpollFlags::EPOLLOUT) {
            self.flush(fd, epoll);
        }
        let Some(client) = self.clients.get_mut(&fd) else {
            return requests;
        };
        let mut gone = flags.intersects(EpollFlags::EPOLLERR);
        if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP) {
            let mut buf = [0u8; 8192];
            // At most a few reads per wakeup: a flood cannot hold the loop.
            for _ in 0..4 {
                match client.stream.read(&mut buf) {
                    Ok(0) => {
                        gone = true;
                        break;
                    }
                    Ok(n) => {
                        if client.follow.is_some() || client.waiting.is_some() {
                            // Nothing more is expected on a streaming
                            // connection; discard without buffering.
                            continue;
                        }
                        client
                            .input
                            .extend_from_slice(buf.get(..n).unwrap_or_default());
                        if client.input.len() > proto::MAX_REQUEST && !client.input.contains(&b'\n')
                        {
                            client.input.clear();
                            requests.push((
                                fd,
                                Err(format!("request longer than {} bytes", proto::MAX_REQUEST)),
                            ));
                            client.closing = true;
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
            // One request per connection at a time, as initctl sends it.
            if !client.closing {
                if let Some(end) = client.input.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = client.input.drain(..=end).collect();
                    client.input.clear();
                    let line = line.strip_suffix(b"\n").unwrap_or(&line);
                    let parsed = proto::parse_request(line).and_then(|r| {
                        if r.command.changes_state()
                            && client.uid != 0
                            && client.uid != self.own_uid
                        {
                            Err(format!(
                                "permission denied: only root may {}; you are uid {}",
                                verb(&r.command),
                                client.uid
                            ))
                        } else if client.uid != 0 && client.uid != self.own_uid {
                            Err(format!(
                                "permission denied: the control socket is for root; you are uid {}",
                                client.uid
                            ))
                        } else {
                            Ok(r)
                        }
                    });
                    client.idle_until = None;
                    client.closing = true;
                    requests.push((fd, parsed));
                }
            }
        }
        if gone && requests.is_empty() {
            self.close(fd, epoll);
        }
        requests
    }

    /// Queues a reply; `None` means the request answers later.
    pub fn reply(&mut self, fd: RawFd, response: Option<Response>, epoll: &Epoll) {
        if let Some(response) = response {
            self.send(fd, &response, epoll);
        }
        self.flush(fd, epoll);
    }

    fn send(&mut self, fd: RawFd, response: &Response, epoll: &Epoll) {
        let Some(client) = self.clients.get_mut(&fd) else {
            return;
        };
        let bytes = proto::encode(response);
        if client.output.len() + bytes.len() > MAX_BACKLOG {
            console::log(
                Level::Warn,
                "control: a client does not read its replies; disconnecting it",
            );
            self.close(fd, epoll);
            return;
        }
        client.output.extend(bytes);
    }

    fn flush(&mut self, fd: RawFd, epoll: &Epoll) {
        let Some(client) = self.clients.get_mut(&fd) else {
            return;
        };
        while !client.output.is_empty() {
            let (head, _) = client.output.as_slices();
            match client.stream.write(head) {
                Ok(0) => break,
                Ok(n) => {
                    client.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(fd, epoll);
                    return;
                }
            }
        }
        let streaming = client.follow.is_some() || client.waiting.is_some();
        if client.output.is_empty() && client.closing && !streaming {
            self.close(fd, epoll);
            return;
        }
        let want_out = !client.output.is_empty();
        if want_out != client.watching_output {
            let flags = if want_out {
                EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT
            } else {
                EpollFlags::EPOLLIN
            };
            let mut event = EpollEvent::new(flags, self.token_base | fd as u64);
            if epoll.modify(client.stream.as_fd(), &mut event).is_ok() {
                client.watching_output = want_out;
            }
        }
    }

    fn close(&mut self, fd: RawFd, epoll: &Epoll) {
        if let Some(client) = self.clients.remove(&fd) {
            let _ = epoll.delete(client.stream.as_fd());
        }
    }

    /// New lines of `service`: sent to the clients that follow it.
    pub fn new_lines(&mut self, service: &str, ring: &LogRing, epoll: &Epoll) {
        let followers: Vec<RawFd> = self
            .clients
            .iter()
            .filter(|(_, c)| c.follow.as_ref().is_some_and(|(s, _)| s == service))
            .map(|(fd, _)| *fd)
            .collect();
        for fd in followers {
            let seen = self
                .clients
                .get(&fd)
                .and_then(|c| c.follow.as_ref())
                .map_or(0, |(_, seen)| *seen);
            let lines: Vec<LogEntry> = ring.since(seen).into_iter().map(entry).collect();
            if let Some((_, seen)) = self.clients.get_mut(&fd).and_then(|c| c.follow.as_mut()) {
                *seen = ring.total();
            }
            for line in lines {
                self.send(fd, &Response::Line { line }, epoll);
            }
            self.flush(fd, epoll);
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.clients
            .values()
            .flat_map(|c| {
                c.idle_until
                    .into_iter()
                    .chain(c.waiting.as_ref().and_then(|w| w.deadline))
            })
            .min()
    }

    pub fn on_deadline(&mut self, now: Instant, epoll: &Epoll) {
        let idle: Vec<RawFd> = self
            .clients
            .iter()
            .filter(|(_, c)| c.idle_until.is_some_and(|d| d <= now))
            .map(|(fd, _)| *fd)
            .collect();
        for fd in idle {
            self.close(fd, epoll);
        }
        let late: Vec<(RawFd, String, Want)> = self
            .clients
            .iter()
            .filter_map(|(fd, c)| {
                c.waiting
                    .as_ref()
                    .filter(|w| w.deadline.is_some_and(|d| d <= now))
                    .map(|w| (*fd, w.service.clone(), w.want))
            })
            .collect();
        for (fd, service, want) in late {
            if let Some(c) = self.clients.get_mut(&fd) {
                c.waiting = None;
            }
            let what = match want {
                Want::Up => "still starting",
                Want::Down => "still stopping",
            };
            self.reply(
                fd,
                Some(Response::Error {
                    message: format!("{service}: {what}; gave up waiting"),
                }),
                epoll,
            );
        }
    }

    /// Answers the `start`/`stop`/`restart` requests whose service settled.
    pub fn settle_waiting(
        &mut self,
        services: &std::collections::BTreeMap<String, Service>,
        epoll: &Epoll,
    ) {
        let ready: Vec<(RawFd, Response)> = self
            .clients
            .iter()
            .filter_map(|(fd, c)| {
                let w = c.waiting.as_ref()?;
                let Some(svc) = services.get(&w.service) else {
                    return Some((
                        *fd,
                        Response::Done {
                            message: format!("{}: removed", w.service),
                        },
                    ));
                };
                settled(svc, w.want).map(|r| (*fd, r))
            })
            .collect();
        for (fd, response) in ready {
            if let Some(c) = self.clients.get_mut(&fd) {
                c.waiting = None;
            }
            self.reply(fd, Some(response), epoll);
        }
    }

    pub fn has_waiting(&self) -> bool {
        self.clients.values().any(|c| c.waiting.is_some())
    }

    fn wait_for(&mut self, fd: RawFd, service: &str, want: Want, timeout: Duration) {
        if let Some(c) = self.clients.get_mut(&fd) {
            // `infinity` timeouts overflow Instant: then no deadline.
            let deadline = Instant::now().checked_add(timeout.saturating_add(SETTLE_GRACE));
            c.waiting = Some(Waiting {
                service: service.to_string(),
                want,
                deadline,
            });
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The answer for a waiting request once its service settled; `None`
/// while it has not.
fn settled(svc: &Service, want: Want) -> Option<Response> {
    let name = &svc.spec.name;
    if svc.start_pending || svc.stop_pending || svc.restart_pending {
        return None;
    }
    match (&svc.life.state, want) {
        (State::Running { .. } | State::Exited { .. }, Want::Up)
        | (State::Stopped | State::Exited { .. }, Want::Down) => Some(Response::Done {
            message: format!("{name}: {}", svc.life.state.name()),
        }),
        (State::Failed { reason }, _) => Some(Response::Error {
            message: format!("{name}: failed: {}", reason.describe()),
        }),
        (State::Waiting { .. }, Want::Up) => Some(Response::Error {
            message: format!("{name}: ended; restart pending ({})", last_exit_text(svc)),
        }),
        (State::Stopped, Want::Up) => Some(Response::Error {
            message: format!("{name}: stopped"),
        }),
        (State::Starting { .. } | State::Stopping { .. }, _)
        | (State::Waiting { .. }, Want::Down)
        | (State::Running { .. }, Want::Down) => None,
    }
}

fn last_exit_text(svc: &Service) -> String {
    svc.life
        .last_exit
        .map_or_else(|| "no exit status".into(), Exit::describe)
}

fn verb(command: &Command) -> &'static str {
    match command {
        Command::List => "list",
        Command::Status { .. } => "status",
        Command::Start { .. } => "start services",
        Command::Stop { .. } => "stop services",
        Command::Restart { .. } => "restart services",
        Command::Logs { .. } => "logs",
        Command::Reload => "reload",
        Command::Poweroff => "power off",
        Command::Reboot => "reboot",
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn entry(line: LogLine) -> LogEntry {
    LogEntry {
        time: unix_seconds(line.time),
        pid: line.pid,
        text: line.text,
    }
}

/// A service as `list` and `status` show it.
pub fn info(svc: &Service, recent: usize) -> ServiceInfo {
    let now_instant = Instant::now();
    let since = SystemTime::now()
        .checked_sub(now_instant.saturating_duration_since(svc.life.since))
        .unwrap_or(UNIX_EPOCH);
    let result = match &svc.life.state {
        State::Failed { reason } => Some(reason.describe()),
        _ => None,
    };
    ServiceInfo {
        name: svc.spec.name.clone(),
        state: svc.state_name().to_string(),
        pid: svc.life.state.main_pid(),
        restarts: svc.life.restarts,
        last_exit: svc.life.last_exit.map(|e| match e {
            Exit::Code(c) => LastExit::Code(c),
            Exit::Signal(s) => LastExit::Signal(s),
        }),
        since: unix_seconds(since),
        service_type: match svc.spec.service_type {
            ServiceType::Simple => "simple",
            ServiceType::Oneshot => "oneshot",
            ServiceType::Notify => "notify",
        }
        .to_string(),
        result,
        waiting_for: if svc.start_pending {
            svc.waiting_for.clone()
        } else {
            None
        },
        status_text: svc.status_text.clone(),
        command: svc.spec.exec_start.clone(),
        requires: svc.deps.requires.iter().cloned().collect(),
        wants: svc.deps.wants.iter().cloned().collect(),
        after: svc.deps.after.iter().cloned().collect(),
        recent: svc.logs.tail(Some(recent)).into_iter().map(entry).collect(),
    }
}

/// `start`, `stop`, `restart`: an error at once, or the answer once the
/// service has settled, bounded by how long that may take: a stop is
/// ExecStop, then the signal, then SIGKILL (three stop timeouts at most);
/// a start or restart may first wait for the service to go down.
fn answer_when_settled(
    sup: &Supervisor,
    ctl: &mut Control,
    fd: RawFd,
    name: &str,
    requested: Result<String, String>,
    want: Want,
) -> Option<Response> {
    if let Err(message) = requested {
        return Some(Response::Error { message });
    }
    let timeout = sup.services.get(name).map_or(Duration::ZERO, |s| {
        let stop_total = s.spec.stop_timeout().saturating_mul(3);
        match want {
            Want::Down => stop_total,
            Want::Up => stop_total.saturating_add(s.spec.timeout_start),
        }
    });
    ctl.wait_for(fd, name, want, timeout);
    None
}

/// Carries out one request. `None`: the answer comes later (a `stop` that
/// waits for the service to go down, a `--follow` stream).
pub fn execute(
    sup: &mut Supervisor,
    ctl: &mut Control,
    fd: RawFd,
    request: Result<Request, String>,
) -> Option<Response> {
    let request = match request {
        Ok(r) => r,
        Err(message) => return Some(Response::Error { message }),
    };
    match request.command {
        Command::List => Some(Response::List {
            services: sup.services.values().map(|s| info(s, 0)).collect(),
        }),
        Command::Status { name } => match sup.services.get(&name) {
            Some(svc) => Some(Response::Status {
                service: info(svc, 10),
            }),
            None => Some(Response::Error {
                message: format!("no such service: {name}"),
            }),
        },
        Command::Start { name } => {
            let requested = sup.request_start(&name);
            answer_when_settled(sup, ctl, fd, &name, requested, Want::Up)
        }
        Command::Restart { name } => {
            let requested = sup.request_restart(&name);
            answer_when_settled(sup, ctl, fd, &name, requested, Want::Up)
        }
        Command::Stop { name } => {
            let requested = sup.request_stop(&name);
            answer_when_settled(sup, ctl, fd, &name, requested, Want::Down)
        }
        Command::Logs {
            name,
            lines,
            follow,
        } => {
            let Some(svc) = sup.services.get(&name) else {
                return Some(Response::Error {
                    message: format!("no such service: {name}"),
                });
            };
            let backlog: Vec<LogEntry> = svc.logs.tail(lines).into_iter().map(entry).collect();
            if !follow {
                return Some(Response::Logs { lines: backlog });
            }
            let total = svc.logs.total();
            if let Some(c) = ctl.clients.get_mut(&fd) {
                c.follow = Some((name, total));
            }
            for line in backlog {
                ctl.send(fd, &Response::Line { line }, sup.epoll());
            }
            None
        }
        Command::Reload => Some(match sup.reload() {
            Ok(report) => Response::Reload { report },
            Err(message) => Response::Error { message },
        }),
        Command::Poweroff | Command::Reboot => {
            let reboot = request.command == Command::Reboot;
            let ending = match (sup.settings.mode, reboot) {
                (Mode::Boot, false) => Ending::Poweroff,
                (Mode::Boot, true) => Ending::Reboot,
                (Mode::NoBoot, _) => Ending::Exit(0),
            };
            let what = if reboot { "reboot" } else { "poweroff" };
            sup.begin_shutdown(ending, &format!("initctl {what}"));
            Some(Response::Done {
                message: format!("shutting down ({what})"),
            })
        }
    }
}
