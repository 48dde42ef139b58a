//! The control socket: `initctl`'s way in. A Unix stream socket, mode 0600,
//! served by init's one event loop. Every client is non-blocking and
//! costs at most a bounded input buffer and a bounded output backlog: a
//! client that sends too much is answered with an error and dropped, one
//! that does not read its replies (a stalled `--follow`) is cut off, and one
//! that sends nothing is closed after [`IDLE_TIMEOUT`]. A `logs` answer is
//! written as the client reads it, so a ring of any size is served within
//! the backlog.
//!
//! Each client is known by a token that is never reused (not by its fd
//! number, which the kernel hands out again as soon as it is closed: an
//! event read for a closed client must not reach the next one).
//!
//! Out of file descriptors, `accept` fails and the connection stays in the
//! backlog, so the listener stays readable: init would spin. It keeps one
//! spare descriptor; then it frees it, takes the connection, tells the
//! client why, closes it and takes the spare back. If even that fails it
//! stops watching the listener for a second. The warning is rate-limited.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};

use crate::engine::lifecycle::State;
use crate::engine::orchestrator::{Engine, Request as EngineRequest, Unit};
use crate::host::console;
use crate::host::output::{LogLine, LogRing};
use crate::host::ratelimit::RateLimit;
use crate::model::config::Level;
use crate::model::spec::ServiceType;
use crate::model::Exit;
pub use crate::proto::ReloadReport;
use crate::proto::{self, BootReport, Command, LastExit, LogEntry, Request, Response, ServiceInfo};
use crate::sys;

/// Connections at once; more are refused at accept.
pub const MAX_CLIENTS: usize = 128;
/// Reply bytes queued for one client before it is cut off.
pub const MAX_BACKLOG: usize = 1024 * 1024;
/// A client that has not sent a whole request in this time is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// `stop`/`start` answer once the service settles, or after this long.
const SETTLE_GRACE: Duration = Duration::from_secs(5);
/// Log lines are queued for a client while its backlog is below this.
const LOW_WATER: usize = 64 * 1024;
/// Log lines taken from a ring at a time.
const CHUNK_LINES: usize = 256;
/// Chunks queued for one client per wakeup.
const PUMP_CHUNKS: usize = 16;
/// How long the listener rests when not even the spare descriptor helps.
const ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// Clients are known by `kind | serial`, serials never reused.
pub type Token = u64;

struct Client {
    stream: UnixStream,
    uid: u32,
    input: Vec<u8>,
    output: VecDeque<u8>,
    /// Idle deadline while no request is being served.
    idle_until: Option<Instant>,
    /// A `logs` answer being written: which lines are still to go.
    logs: Option<LogStream>,
    /// A `start`/`stop`/`restart` waiting for the service to settle.
    waiting: Option<Waiting>,
    /// Close once the output is written.
    closing: bool,
    watching_output: bool,
    /// Log lines remain to be queued once the loop comes back: keeps
    /// `EPOLLOUT` armed even when the backlog is empty.
    more_logs: bool,
}

impl Client {
    fn streaming(&self) -> bool {
        self.logs.is_some() || self.waiting.is_some()
    }
}

/// The lines of one service still to be sent to a client.
struct LogStream {
    service: String,
    /// The number of the next line to send.
    next: u64,
    /// Send up to this line, then `end` (`None`: follow, never end).
    until: Option<u64>,
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
    /// Running again after `ExecReload`.
    Reloaded,
}

pub struct Control {
    listener: UnixListener,
    path: PathBuf,
    clients: HashMap<Token, Client>,
    token_kind: Token,
    next_serial: Token,
    own_uid: u32,
    /// Held to be given up when `accept` runs out of descriptors.
    spare: Option<OwnedFd>,
    /// The listener is not watched until then (out of descriptors).
    paused_until: Option<Instant>,
    /// Warnings about failing accepts.
    accept_warnings: RateLimit,
}

fn spare_fd() -> Option<OwnedFd> {
    std::fs::File::open("/dev/null").ok().map(OwnedFd::from)
}

impl Control {
    /// Binds the socket, replacing a stale one, with mode 0600. Clients'
    /// tokens are `token_kind` with a serial in the low 48 bits.
    pub fn bind(path: &Path, token_kind: Token) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Mode 0600 from the umask at bind: no window in which others could
        // connect, and no chmod by path (which would follow a symlink).
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let listener = bound?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            clients: HashMap::new(),
            token_kind,
            next_serial: 0,
            own_uid: nix::unistd::geteuid().as_raw(),
            spare: spare_fd(),
            paused_until: None,
            accept_warnings: RateLimit::new(Duration::from_secs(10), 1),
        })
    }

    pub fn listener_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    pub fn accept(&mut self, epoll: &Epoll) {
        if self.paused_until.is_some() {
            return;
        }
        // Bounded per wakeup; the listener stays readable if more wait.
        for _ in 0..MAX_CLIENTS {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    if !self.refuse_for_lack_of_fds(&e, epoll) {
                        return;
                    }
                    continue;
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ECONNABORTED | libc::EPERM | libc::EPROTO)
                    ) =>
                {
                    // That one connection is gone; the next may be fine.
                    self.warn_accept(&format!("control socket: accept: {e}"));
                    continue;
                }
                Err(e) => {
                    // ENOMEM, ENOBUFS, ...: the connection stays in the
                    // backlog and the listener readable. Rest rather than spin.
                    self.warn_accept(&format!("control socket: accept: {e}; pausing"));
                    self.pause_listener(epoll);
                    return;
                }
            };
            if self.clients.len() >= MAX_CLIENTS {
                refuse(stream, "too many connections; try again");
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let uid = sys::peer_uid(stream.as_fd()).unwrap_or(u32::MAX);
            self.next_serial += 1;
            let token = self.token_kind | (self.next_serial & 0xffff_ffff_ffff);
            if epoll
                .add(stream.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))
                .is_err()
            {
                continue;
            }
            self.clients.insert(
                token,
                Client {
                    stream,
                    uid,
                    input: Vec::new(),
                    output: VecDeque::new(),
                    idle_until: Instant::now().checked_add(IDLE_TIMEOUT),
                    logs: None,
                    waiting: None,
                    closing: false,
                    watching_output: false,
                    more_logs: false,
                },
            );
        }
    }

    /// Out of descriptors: answers the next waiting connection with the
    /// reason, through the spare descriptor. Whether it did (else the
    /// listener rests for [`ACCEPT_PAUSE`]).
    fn refuse_for_lack_of_fds(&mut self, e: &io::Error, epoll: &Epoll) -> bool {
        self.warn_accept(&format!(
            "control socket: out of file descriptors ({e}); refusing connections"
        ));
        self.spare = None;
        let refused = match self.listener.accept() {
            Ok((stream, _)) => {
                refuse(stream, "init is out of file descriptors; try again later");
                true
            }
            Err(_) => false,
        };
        self.spare = spare_fd();
        if refused && self.spare.is_some() {
            return true;
        }
        // Not even that: stop watching the listener for a while rather
        // than wake up for it again and again.
        self.pause_listener(epoll);
        false
    }

    /// Stops watching the listener for [`ACCEPT_PAUSE`].
    fn pause_listener(&mut self, epoll: &Epoll) {
        if epoll.delete(self.listener.as_fd()).is_ok() {
            self.paused_until = Instant::now().checked_add(ACCEPT_PAUSE);
        }
    }

    fn warn_accept(&mut self, message: &str) {
        if self.accept_warnings.allow(Instant::now()) {
            console::log(Level::Warn, message);
        }
    }

    /// Reads what a client sent; returns its complete requests (or the
    /// reason a line is not one).
    pub fn on_client_event(
        &mut self,
        token: Token,
        flags: EpollFlags,
        epoll: &Epoll,
    ) -> Vec<(Token, Result<Request, String>)> {
        let mut requests = Vec::new();
        if !self.clients.contains_key(&token) {
            // A client closed earlier in the same batch of events.
            return requests;
        }
        if flags.contains(EpollFlags::EPOLLOUT) {
            self.flush(token, epoll);
        }
        let Some(client) = self.clients.get_mut(&token) else {
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
                        if client.streaming() {
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
                                token,
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
                    requests.push((token, parsed));
                }
            }
        }
        if gone && requests.is_empty() {
            self.close(token, epoll);
        }
        requests
    }

    /// Queues a reply; `None` means the request answers later.
    pub fn reply(&mut self, token: Token, response: Option<Response>, epoll: &Epoll) {
        if let Some(response) = response {
            self.send(token, &response, epoll);
        }
        self.flush(token, epoll);
    }

    fn send(&mut self, token: Token, response: &Response, epoll: &Epoll) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        let bytes = proto::encode(response);
        if client.output.len() + bytes.len() > MAX_BACKLOG {
            console::log(
                Level::Warn,
                "control: a client does not read its replies; disconnecting it",
            );
            self.close(token, epoll);
            return;
        }
        client.output.extend(bytes);
    }

    fn flush(&mut self, token: Token, epoll: &Epoll) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        if write_queued(&mut client.stream, &mut client.output).is_err() {
            self.close(token, epoll);
            return;
        }
        if client.output.is_empty() && client.closing && !client.streaming() {
            self.close(token, epoll);
            return;
        }
        let want_out = !client.output.is_empty() || client.more_logs;
        if want_out != client.watching_output {
            let flags = if want_out {
                EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT
            } else {
                EpollFlags::EPOLLIN
            };
            let mut event = EpollEvent::new(flags, token);
            if epoll.modify(client.stream.as_fd(), &mut event).is_ok() {
                client.watching_output = want_out;
            }
        }
    }

    fn close(&mut self, token: Token, epoll: &Epoll) {
        if let Some(client) = self.clients.remove(&token) {
            let _ = epoll.delete(client.stream.as_fd());
        }
    }

    /// Queues the next log lines of every `logs` answer whose client has
    /// room, for one service or all.
    pub fn pump(&mut self, only: Option<&str>, view: &View<'_>, epoll: &Epoll) {
        let tokens: Vec<Token> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                c.logs
                    .as_ref()
                    .is_some_and(|l| only.is_none_or(|name| name == l.service))
            })
            .map(|(t, _)| *t)
            .collect();
        for token in tokens {
            self.pump_one(token, view, epoll);
        }
    }

    /// Queues log lines for one client while its backlog is low, writing
    /// as it goes, for at most [`PUMP_CHUNKS`] chunks per call: a fast
    /// reader of a large ring then asks for the rest through `EPOLLOUT`
    /// (kept armed by `more_logs`), so other events get their turn.
    fn pump_one(&mut self, token: Token, view: &View<'_>, epoll: &Epoll) {
        let mut chunks = 0;
        loop {
            let Some(client) = self.clients.get_mut(&token) else {
                return;
            };
            client.more_logs = false;
            if client.output.len() >= LOW_WATER {
                break;
            }
            let Some(stream) = client.logs.as_mut() else {
                break;
            };
            let Some(ring) = view.logs_of(&stream.service) else {
                // The service was removed: nothing more will come.
                client.logs = None;
                self.send(token, &Response::End, epoll);
                break;
            };
            if stream.until.is_none() && stream.next < ring.first_seq() {
                // A follower whose lines were overwritten before it read
                // them: it does not keep up; cut it off.
                console::log(
                    Level::Warn,
                    "control: a client does not read its replies; disconnecting it",
                );
                self.close(token, epoll);
                return;
            }
            let last = stream.until.unwrap_or(u64::MAX).min(ring.total());
            if stream.next >= last {
                if stream.until.is_some() {
                    client.logs = None;
                    self.send(token, &Response::End, epoll);
                }
                break;
            }
            if chunks == PUMP_CHUNKS {
                client.more_logs = true;
                break;
            }
            chunks += 1;
            let max = CHUNK_LINES.min(usize::try_from(last - stream.next).unwrap_or(CHUNK_LINES));
            let (lines, _) = ring.range(stream.next, max);
            // Bounded in bytes, not lines: a chunk of 4 KiB lines is larger
            // than the whole backlog. Stop at the low-water mark.
            for line in lines {
                let bytes = proto::encode(&Response::Line { line: entry(line) });
                client.output.extend(bytes);
                stream.next += 1;
                if client.output.len() >= LOW_WATER {
                    break;
                }
            }
            self.flush(token, epoll);
        }
        self.flush(token, epoll);
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.clients
            .values()
            .flat_map(|c| {
                c.idle_until
                    .into_iter()
                    .chain(c.waiting.as_ref().and_then(|w| w.deadline))
            })
            .chain(self.paused_until)
            .chain(self.accept_warnings.deadline())
            .min()
    }

    pub fn on_deadline(&mut self, now: Instant, epoll: &Epoll, listener_token: Token) {
        if self.paused_until.is_some_and(|t| t <= now) {
            self.paused_until = None;
            if self.spare.is_none() {
                self.spare = spare_fd();
            }
            if let Err(e) = epoll.add(
                self.listener.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, listener_token),
            ) {
                console::log(Level::Error, &format!("epoll_ctl control socket: {e}"));
            }
        }
        if let Some(n) = self.accept_warnings.take_suppressed(now) {
            console::log(
                Level::Warn,
                &format!(
                    "control socket: {n} more failed accepts in the last {}",
                    crate::model::duration::format(self.accept_warnings.interval())
                ),
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
        let late: Vec<(Token, String, Want)> = self
            .clients
            .iter()
            .filter_map(|(t, c)| {
                c.waiting
                    .as_ref()
                    .filter(|w| w.deadline.is_some_and(|d| d <= now))
                    .map(|w| (*t, w.service.clone(), w.want))
            })
            .collect();
        for (token, service, want) in late {
            if let Some(c) = self.clients.get_mut(&token) {
                c.waiting = None;
            }
            let what = match want {
                Want::Up => "still starting",
                Want::Down => "still stopping",
                Want::Reloaded => "still reloading",
            };
            self.reply(
                token,
                Some(Response::Error {
                    message: format!("{service}: {what}; gave up waiting"),
                }),
                epoll,
            );
        }
    }

    /// Answers the `start`/`stop`/`restart` requests whose service settled.
    pub fn settle_waiting(&mut self, view: &View<'_>, epoll: &Epoll) {
        let ready: Vec<(Token, Response)> = self
            .clients
            .iter()
            .filter_map(|(t, c)| {
                let w = c.waiting.as_ref()?;
                let Some(svc) = view.engine.unit(&w.service) else {
                    return Some((
                        *t,
                        Response::Done {
                            message: format!("{}: removed", w.service),
                        },
                    ));
                };
                settled(svc, w.want).map(|r| (*t, r))
            })
            .collect();
        for (token, response) in ready {
            if let Some(c) = self.clients.get_mut(&token) {
                c.waiting = None;
            }
            self.reply(token, Some(response), epoll);
        }
    }

    pub fn has_waiting(&self) -> bool {
        self.clients.values().any(|c| c.waiting.is_some())
    }

    fn wait_for(&mut self, token: Token, service: &str, want: Want, timeout: Duration) {
        if let Some(c) = self.clients.get_mut(&token) {
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

/// Writes what `queue` holds to a non-blocking `out` until it would block
/// or the queue is empty; the error is the connection's end. Shared by the
/// control socket's and the parent channel's clients.
pub fn write_queued(out: &mut impl Write, queue: &mut VecDeque<u8>) -> io::Result<()> {
    while !queue.is_empty() {
        let (head, _) = queue.as_slices();
        match out.write(head) {
            Ok(0) => break,
            Ok(n) => {
                queue.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Tells a connection why it is not served and closes it.
fn refuse(mut stream: UnixStream, message: &str) {
    let _ = stream.set_nonblocking(true);
    let _ = stream.write_all(&proto::encode(&Response::Error {
        message: message.into(),
    }));
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

mod requests;

pub use requests::{entry, execute, info, Done, Step, Task, View};
use requests::{settled, verb};
