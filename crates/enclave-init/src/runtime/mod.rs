//! The imperative shell: one thread, one `epoll` loop over a signalfd, a
//! timerfd armed for the earliest deadline, the console, the control and
//! notify sockets and the services' output pipes. Idle means no wakeups.
//!
//! It decides nothing: it turns the world into [`Input`]s for the
//! [`Engine`] (the orchestrator) and carries out the [`Effect`]s it
//! returns: starting processes, sending signals, logging. It is the only
//! place that waits for children (the one reaper).

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use crate::engine::lifecycle::Proc;
use crate::engine::orchestrator::{
    Effect, Engine, Input, Noise, Reaped, ReloadDiff, ServiceSet, SpawnFailure,
};
use crate::host::console;
use crate::host::output::{LineSplitter, Lines, LogRing};
use crate::host::panics;
use crate::host::ratelimit::RateLimit;
use crate::model::duration;
use crate::model::spec::{self, ServiceType};
use crate::model::Level;
pub use crate::model::{Ending, Mode};
use crate::model::{Exit, Pid, Settings};
use crate::proto::{ReloadReport, Response};
use crate::sys;
use control::{Control, Step, Task, Token, View};
use notify::NotifySocket;

pub mod control;
pub mod notify;
pub mod spawn;

/// An output pipe of one spawned process. Known by a token that is never
/// reused (see [`TOKEN_PIPE`]).
struct Pipe {
    fd: OwnedFd,
    service: String,
    pid: Pid,
    /// `name[pid]: `, the start of its lines on the console.
    prefix: Vec<u8>,
    splitter: LineSplitter,
}

// epoll tokens. The loop's own fds have fixed ones; pipes and control
// clients have their kind in the top 16 bits and a serial that is never
// reused below it. Not fd numbers: the kernel reuses a number as soon as
// it is closed, so an event read in the same batch for a pipe closed a
// moment before would reach whatever got its number.
const TOKEN_SIGNAL: u64 = 1;
const TOKEN_TIMER: u64 = 2;
const TOKEN_CONSOLE: u64 = 3;
const TOKEN_NOTIFY: u64 = 4;
const TOKEN_CONTROL: u64 = 5;
const TOKEN_KIND: u64 = 0xffff << 48;
const TOKEN_PIPE: u64 = 1 << 48;
const TOKEN_CLIENT: u64 = 2 << 48;
/// Notify warnings: a few per interval, then a count.
const NOTIFY_WARNINGS: (Duration, u32) = (Duration::from_secs(5), 5);
/// Recoveries in a row (each after a panic) before init gives up on
/// going on and ends in order.
const MAX_RECOVERIES: u32 = 10;

/// What one input led to, for the requests that fed it.
#[derive(Debug, Default)]
struct Fed {
    /// Each request's answer: its service's state once everything it
    /// started was carried out, or why it was refused.
    answers: Vec<Result<String, String>>,
    reloaded: Option<ReloadDiff>,
}

pub struct Supervisor {
    pub settings: Settings,
    engine: Engine,
    /// The captured output of each service, for `initctl logs`.
    logs: HashMap<String, LogRing>,
    epoll: Epoll,
    signals: SignalFd,
    timer: TimerFd,
    timer_armed: Option<Instant>,
    console_fd: Option<RawFd>,
    console_watched: bool,
    /// Children reaped, waiting to be handed to the engine.
    reaped: VecDeque<(Pid, Exit)>,
    /// Effects of the engine not yet carried out.
    effects: VecDeque<Effect>,
    pipes: HashMap<u64, Pipe>,
    next_pipe_serial: u64,
    /// Scratch space of `read_pipe`, kept from read to read.
    read_buf: Vec<u8>,
    lines: Lines,
    notify: Option<NotifySocket>,
    control: Option<Control>,
    finished: Option<Ending>,
    has_children: bool,
    is_pid1: bool,
    /// A handler panicked: re-derive what can be from the world before
    /// going on (see [`Supervisor::recover`]).
    recovering: bool,
    recoveries_in_a_row: u32,
    /// A process started and not yet handed to the engine: if a panic
    /// comes in between, the engine learns of it as abandoned.
    in_flight: Option<(String, Option<Pid>)>,
    /// Inside `Engine::handle` (which never panics): if a panic ever came
    /// from there, the engine's state could not be trusted.
    in_engine: bool,
    /// Warnings about datagrams from processes of no notify service.
    foreign_notify: RateLimit,
    /// Warnings about notify messages that are not sd_notify's format.
    garbage_notify: RateLimit,
}

/// Builds the error of a failed setup step: `epoll_create: ...`.
fn setup_error(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

impl Supervisor {
    /// Sets up the loop's descriptors. Signals must already be blocked.
    pub fn new(settings: Settings, signal_mask: &nix::sys::signal::SigSet) -> Result<Self, String> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| setup_error("epoll_create", e))?;
        let signals =
            SignalFd::with_flags(signal_mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
                .map_err(|e| setup_error("signalfd", e))?;
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(|e| setup_error("timerfd_create", e))?;
        epoll
            .add(
                signals.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_SIGNAL),
            )
            .map_err(|e| setup_error("epoll_ctl signalfd", e))?;
        epoll
            .add(
                timer.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_TIMER),
            )
            .map_err(|e| setup_error("epoll_ctl timerfd", e))?;
        let is_pid1 = sys::getpid() == 1;
        if !is_pid1 {
            // Orphans of the services must come to us, not to the real init.
            if let Err(e) = sys::set_child_subreaper() {
                console::log(
                    Level::Error,
                    &format!(
                        "prctl(PR_SET_CHILD_SUBREAPER): {e}; orphans will not be reaped by init"
                    ),
                );
            }
        }
        let engine = Engine::new(crate::engine::orchestrator::Settings {
            mode: settings.mode,
            stop_timeout: settings.config.shutdown.timeout,
            final_timeout: settings.config.shutdown.final_timeout,
        });
        let mut supervisor = Self {
            settings,
            engine,
            logs: HashMap::new(),
            epoll,
            signals,
            timer,
            timer_armed: None,
            console_fd: console::fd(),
            console_watched: false,
            reaped: VecDeque::new(),
            effects: VecDeque::new(),
            pipes: HashMap::new(),
            next_pipe_serial: 0,
            read_buf: Vec::new(),
            lines: Lines::default(),
            notify: None,
            control: None,
            finished: None,
            has_children: true,
            is_pid1,
            recovering: false,
            recoveries_in_a_row: 0,
            in_flight: None,
            in_engine: false,
            foreign_notify: RateLimit::new(NOTIFY_WARNINGS.0, NOTIFY_WARNINGS.1),
            garbage_notify: RateLimit::new(NOTIFY_WARNINGS.0, NOTIFY_WARNINGS.1),
        };
        if let Some(fd) = supervisor.console_fd {
            // EPERM for regular files: those never block, no need to watch.
            let borrowed = console_borrow(fd);
            if supervisor
                .epoll
                .add(
                    borrowed,
                    EpollEvent::new(EpollFlags::empty(), TOKEN_CONSOLE),
                )
                .is_err()
            {
                supervisor.console_fd = None;
            }
        }
        supervisor.open_sockets();
        Ok(supervisor)
    }

    fn open_sockets(&mut self) {
        let socket_path = self.settings.config.control.socket.clone();
        let notify_path = notify_path_for(&socket_path);
        match NotifySocket::bind(&notify_path) {
            Ok(sock) if self.watch(sock.fd(), TOKEN_NOTIFY, "notify socket") => {
                self.notify = Some(sock)
            }
            Ok(_) => {}
            Err(e) => console::log(
                Level::Error,
                &format!(
                    "notify socket {}: {e}; Type=notify services will not become ready",
                    notify_path.display()
                ),
            ),
        }
        match Control::bind(&socket_path, TOKEN_CLIENT) {
            Ok(ctl) if self.watch(ctl.listener_fd(), TOKEN_CONTROL, "control socket") => {
                self.control = Some(ctl)
            }
            Ok(_) => {}
            Err(e) => console::log(
                Level::Error,
                &format!(
                    "control socket {}: {e}; initctl will not reach init",
                    socket_path.display()
                ),
            ),
        }
    }

    /// Adds a readable fd to the loop; logs and says so when it cannot.
    fn watch(&self, fd: std::os::fd::BorrowedFd<'_>, token: u64, what: &str) -> bool {
        match self
            .epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))
        {
            Ok(()) => true,
            Err(e) => {
                console::log(Level::Error, &format!("epoll_ctl {what}: {e}"));
                false
            }
        }
    }

    /// Loads the services and supervises until init must end. A panic
    /// anywhere in here is caught: the loop re-derives what it can from
    /// the world and goes on.
    pub fn run(&mut self) -> Ending {
        if panics::guarded("loading the services", || self.load_initial()).is_none() {
            self.recovering = true;
        }
        let mut events = vec![EpollEvent::empty(); 64];
        loop {
            match panics::catch(|| self.turn(&mut events)) {
                Ok(Some(ending)) => return ending,
                Ok(None) => {}
                Err(text) => {
                    console::log(
                        Level::Error,
                        &format!("internal error in the event loop: {text}; carrying on"),
                    );
                    self.recovering = true;
                }
            }
        }
    }

    /// One turn of the loop: wait, handle the events.
    fn turn(&mut self, events: &mut [EpollEvent]) -> Option<Ending> {
        if self.recovering {
            self.recover();
        } else {
            self.recoveries_in_a_row = 0;
        }
        if let Some(ending) = self.finished.take() {
            return Some(ending);
        }
        self.guard("control", |s| {
            s.with_control(|ctl, sup| {
                if ctl.has_waiting() {
                    ctl.settle_waiting(&sup.view(), &sup.epoll);
                }
            })
        });
        self.guard("console", Self::flush_console);
        self.arm_timer();
        let n = match self.epoll.wait(events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => return None,
            Err(e) => {
                // Nothing sensible to do but try again; never spin hard.
                console::log(Level::Error, &format!("epoll_wait: {e}"));
                std::thread::sleep(Duration::from_millis(100));
                return None;
            }
        };
        for event in events.iter().take(n) {
            let (token, flags) = (event.data(), event.events());
            self.guard("event", |s| s.dispatch(token, flags));
        }
        None
    }

    /// Runs one handler; a panic in it is logged, and the next turn
    /// recovers before going on.
    fn guard(&mut self, what: &str, f: impl FnOnce(&mut Self)) {
        if panics::guarded(what, || f(self)).is_none() {
            self.recovering = true;
        }
    }

    /// After a panic: what the handler left undone is found again from the
    /// world. A process started and not yet handed to the engine is
    /// abandoned (killed, its service failed); the engine's effects not yet
    /// carried out are; exits it had not reaped are reaped; the timer is
    /// armed anew (a deadline it consumed fires again). The engine itself never panics (its state changes only in
    /// its total `handle`); if it ever did, init ends in order, as it does
    /// when recoveries keep failing.
    fn recover(&mut self) {
        self.recovering = false;
        self.recoveries_in_a_row += 1;
        let broken = std::mem::take(&mut self.in_engine);
        if broken || self.recoveries_in_a_row > MAX_RECOVERIES {
            let ending = match self.settings.mode {
                Mode::Boot => Ending::Poweroff,
                Mode::NoBoot => Ending::Exit(70),
            };
            if broken || self.recoveries_in_a_row > 2 * MAX_RECOVERIES {
                console::log(
                    Level::Error,
                    "init cannot trust its own state after an internal error; ending now",
                );
                self.finished = Some(ending);
                return;
            }
            self.feed(Input::Shutdown {
                ending,
                reason: format!(
                    "{MAX_RECOVERIES} internal errors in a row: init cannot go on safely"
                ),
            });
        }
        self.timer_armed = None;
        if let Some((service, pid)) = self.in_flight.take() {
            self.feed(Input::Abandon {
                service,
                reason: "a panic while starting its process".into(),
                pids: pid.into_iter().collect(),
            });
        }
        self.carry_out_effects();
        self.reap();
    }

    fn dispatch(&mut self, token: u64, flags: EpollFlags) {
        match token {
            TOKEN_SIGNAL => self.on_signals(),
            TOKEN_TIMER => self.on_timer(),
            TOKEN_CONSOLE => self.on_console(flags),
            TOKEN_NOTIFY => self.on_notify(),
            TOKEN_CONTROL => self.on_control_accept(),
            t if t & TOKEN_KIND == TOKEN_CLIENT => self.on_control_client(t, flags),
            t if t & TOKEN_KIND == TOKEN_PIPE => self.on_pipe(t),
            other => console::log(Level::Warn, &format!("event for unknown token {other}")),
        }
    }

    /// The console became writable, or its reader is gone for good.
    fn on_console(&mut self, flags: EpollFlags) {
        if flags.intersects(EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP) {
            if let Some(fd) = self.console_fd.take() {
                let _ = self.epoll.delete(console_borrow(fd));
            }
            console::mark_gone();
            self.console_watched = false;
            return;
        }
        self.flush_console();
    }

    // ---- the engine ----

    /// Hands one input to the engine and carries out every effect that
    /// follows, in order.
    fn feed(&mut self, input: Input) -> Fed {
        let effects = self.handle(input);
        self.effects.extend(effects);
        self.carry_out_effects()
    }

    /// Carries out the queued effects, in order (a spawn's result goes
    /// back to the engine at once, and what it leads to joins the queue).
    /// The queue outlives a panic: the recovery carries out the rest.
    fn carry_out_effects(&mut self) -> Fed {
        let mut fed = Fed::default();
        while let Some(effect) = self.effects.pop_front() {
            match effect {
                Effect::Spawn { service, proc } => {
                    let result = self.spawn(&service, proc);
                    self.in_flight = Some((service.clone(), result.as_ref().ok().copied()));
                    crate::host::fault::point("deliver", &service);
                    let more = self.handle(Input::Spawned { service, result });
                    self.in_flight = None;
                    self.effects.extend(more);
                }
                Effect::Signal {
                    service,
                    pid,
                    group,
                    signal,
                } => self.signal_service(&service, pid, group, signal),
                Effect::SignalRemaining(signal) => self.signal_remaining(signal),
                Effect::Log(level, message) => console::log(level, &message),
                Effect::Noise(noise) => self.noise(noise),
                Effect::Answer(answer) => fed.answers.push(answer),
                Effect::Reloaded(diff) => fed.reloaded = Some(diff),
                Effect::Forget(name) => {
                    self.logs.remove(&name);
                }
                Effect::Finish(ending) => {
                    self.drain_pipes();
                    self.finished = Some(ending);
                }
            }
        }
        let engine = &self.engine;
        fed.answers = std::mem::take(&mut fed.answers)
            .into_iter()
            .map(|a| {
                a.map(|name| {
                    let state = engine.unit(&name).map_or("gone", |u| u.state_name());
                    format!("{name}: {state}")
                })
            })
            .collect();
        fed
    }

    fn handle(&mut self, input: Input) -> Vec<Effect> {
        self.in_engine = true;
        let effects = self.engine.handle(input, Instant::now());
        self.in_engine = false;
        effects
    }

    /// A warning anyone can trigger, rate-limited: a flood costs init
    /// neither its CPU nor its own lines on a slow console.
    fn noise(&mut self, noise: Noise) {
        let now = Instant::now();
        match noise {
            Noise::ForeignNotify { pid } => {
                if self.foreign_notify.allow(now) {
                    console::log(Level::Warn, &format!("notify: ignoring a message from pid {pid}: not a process of a Type=notify service"));
                }
            }
            Noise::GarbageNotify {
                service,
                pid,
                reason,
            } => {
                if self.garbage_notify.allow(now) {
                    console::log(
                        Level::Warn,
                        &format!("{service}: notify: ignoring garbage from pid {pid}: {reason}"),
                    );
                }
            }
        }
    }

    /// What the control server shows: the engine and the logs, read-only.
    fn view(&self) -> View<'_> {
        View {
            engine: &self.engine,
            logs: &self.logs,
        }
    }

    // ---- loading ----

    /// Reads the service directory (diagnostics logged) and merges the
    /// services of the command line.
    fn read_services(&self) -> (ServiceSet, Vec<crate::parse::diag::Diagnostic>, bool) {
        let mut set = ServiceSet::default();
        let mut diagnostics = Vec::new();
        let mut missing = false;
        if self.settings.load_service_dir {
            let loaded = crate::host::load::load_dir(&self.settings.config.services.dir);
            set.services = loaded.services;
            set.broken = loaded.broken.into_iter().collect();
            diagnostics = loaded.diagnostics;
            missing = loaded.missing;
        }
        for extra in &self.settings.extra_services {
            if set.services.iter().any(|s| s.name == extra.name) {
                continue;
            }
            set.services.push(extra.clone());
        }
        (set, diagnostics, missing)
    }

    fn load_initial(&mut self) {
        let (set, diagnostics, missing) = self.read_services();
        report_diagnostics(&diagnostics);
        let dir = &self.settings.config.services.dir;
        // The default directory may be absent when `/cmd` or `-- CMD`
        // gives the command; any other missing one is a mistake to name.
        if missing
            && (self.settings.extra_services.is_empty()
                || dir.as_path() != Path::new(crate::model::config::DEFAULT_SERVICE_DIR))
        {
            console::log(
                Level::Error,
                &format!(
                    "service directory {}: No such file or directory",
                    dir.display()
                ),
            );
        }
        for extra in &self.settings.extra_services {
            if self.settings.load_service_dir
                && set
                    .services
                    .iter()
                    .any(|s| s.name == extra.name && s != extra)
            {
                console::log(
                    Level::Warn,
                    &format!(
                        "{}/{}.service replaces the service {} from the command",
                        dir.display(),
                        extra.name,
                        extra.name
                    ),
                );
            }
        }
        if !set.broken.is_empty() {
            let names: Vec<&str> = set.broken.iter().map(String::as_str).collect();
            console::log(
                Level::Error,
                &format!("not loaded (see above): {}", names.join(", ")),
            );
        }
        let empty = set.services.is_empty();
        self.feed(Input::Load(set));
        if empty {
            match self.settings.mode {
                // No shell, no network: nobody could ever give an enclave
                // something to run. It ends, saying why, rather than idle.
                Mode::Boot => {
                    self.feed(Input::Shutdown {
                        ending: Ending::Poweroff,
                        reason: format!(
                            "nothing to run: no /cmd (or services.legacy = \"never\") and no service could be loaded from {}",
                            self.settings.config.services.dir.display()
                        ),
                    });
                }
                Mode::NoBoot => console::log(
                    Level::Warn,
                    "no services to supervise; waiting for initctl or a signal",
                ),
            }
        }
    }

    /// Re-reads the service directory (`initctl reload`, SIGHUP).
    pub fn reload(&mut self) -> Result<ReloadReport, String> {
        if !self.settings.load_service_dir {
            return Err("no service directory in use (--no-boot -- CMD)".into());
        }
        let dir = self.settings.config.services.dir.clone();
        if !dir.is_dir() {
            // Gone (an unmount, a mistake): not the same as every file
            // removed. Stopping everything on that would be worse.
            let message = format!(
                "service directory {} is missing; nothing changed (remove the files, not the directory, to remove services)",
                dir.display()
            );
            console::log(Level::Error, &format!("reload: {message}"));
            return Err(message);
        }
        let (set, diagnostics, _) = self.read_services();
        report_diagnostics(&diagnostics);
        if let Some(dir_error) = diagnostics.iter().find(|d| {
            d.file == dir && d.line.is_none() && d.severity == crate::parse::diag::Severity::Error
        }) {
            // The directory itself is unreadable: change nothing.
            console::log(
                Level::Error,
                &format!("reload: {dir_error}; services left as they are"),
            );
            return Err(format!("{dir_error}; nothing changed"));
        }
        // A panic before the engine takes the files changes nothing; the
        // engine applies a reload whole, in its total `handle`.
        crate::host::fault::point("reload", "");
        let diff = self.feed(Input::Reload(set)).reloaded.unwrap_or_default();
        let report = ReloadReport {
            added: diff.added,
            removed: diff.removed,
            changed: diff.changed,
            errors: diagnostics
                .iter()
                .filter(|d| d.severity == crate::parse::diag::Severity::Error)
                .map(ToString::to_string)
                .collect(),
        };
        console::log(
            Level::Info,
            &format!(
                "reloaded {}: {} added, {} removed, {} changed, {} errors",
                dir.display(),
                report.added.len(),
                report.removed.len(),
                report.changed.len(),
                report.errors.len()
            ),
        );
        Ok(report)
    }

    // ---- processes ----

    /// Starts a process of `name` (its current spec).
    fn spawn(&mut self, name: &str, proc: Proc) -> Result<Pid, SpawnFailure> {
        let failure = |reason: String, status: i32, transient: bool| SpawnFailure {
            reason,
            status,
            transient,
        };
        let Some(unit) = self.engine.unit(name) else {
            return Err(failure("service vanished".into(), 1, false));
        };
        let spec = &unit.spec;
        let argv = match proc {
            Proc::Main => Some(&spec.exec_start),
            Proc::Pre(i) => spec.exec_start_pre.get(i).map(|c| &c.argv),
            Proc::Stop(i) => spec.exec_stop.get(i).map(|c| &c.argv),
        };
        let Some(argv) = argv else {
            return Err(failure(format!("no command for {proc:?}"), 1, false));
        };
        let mut extra: Vec<spawn::Var> = Vec::new();
        if proc == Proc::Main && spec.service_type == ServiceType::Notify {
            if let Some(sock) = &self.notify {
                extra.push(("NOTIFY_SOCKET".into(), sock.path.clone().into_os_string()));
            }
        }
        if let (Proc::Stop(_), Some(pid)) = (proc, unit.life.state.main_pid()) {
            extra.push(("MAINPID".into(), pid.to_string().into()));
        }
        let mut launch = spawn::prepare(
            &self.settings.root,
            &self.settings.base_env,
            spec,
            argv,
            &extra,
            self.settings.nofile,
        )
        .map_err(|e| failure(e.reason, e.status, e.transient))?;
        let streams = spawn::streams(spec);
        if let Some(dir) = self.cgroup_of(name) {
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => console::log(
                    Level::Warn,
                    &format!(
                        "{name}: cgroup {}: {e}; tracking by process group",
                        dir.display()
                    ),
                ),
            }
            if dir.is_dir() {
                launch.cgroup_procs = Some(dir.join("cgroup.procs"));
            }
        }
        let (stdout, stderr, read) = streams.map_err(|e| {
            let transient = matches!(
                e.raw_os_error(),
                Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)
            );
            failure(format!("output pipe: {e}"), 1, transient)
        })?;
        let started = spawn::start(launch, stdout, stderr)
            .map_err(|e| failure(e.reason, e.status, e.transient))?;
        let pid = started.pid;
        if let Some(e) = started.cgroup_error {
            console::log(
                Level::Warn,
                &format!(
                    "{name}: could not join cgroup {}: {e}; pid {pid} is tracked by its process group",
                    self.cgroup_of(name).unwrap_or_default().display()
                ),
            );
        }
        self.has_children = true;
        if let Some(fd) = read {
            self.watch_pipe(fd, name, pid);
        }
        Ok(pid)
    }

    fn watch_pipe(&mut self, fd: OwnedFd, name: &str, pid: Pid) {
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

    fn on_pipe(&mut self, token: u64) {
        // Bounded work per wakeup keeps one chatty service from starving
        // the others; epoll is level-triggered and calls again.
        self.read_pipe(token, 4);
    }

    /// Reads at most `budget` chunks of one output pipe; closes it at EOF.
    fn read_pipe(&mut self, token: u64, budget: usize) {
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
            };
            ctl.pump(Some(service), &view, &self.epoll);
        }
    }

    /// The one reaper: every exited child, handed to the engine in one
    /// batch. Exits wait in `reaped` until handed over, so that a panic on
    /// the way loses none (the recovery calls this again).
    fn reap(&mut self) {
        crate::host::fault::point("reap", "");
        loop {
            match sys::reap_one() {
                Ok(Some((pid, status))) => self.reaped.push_back((
                    pid,
                    match status {
                        sys::WaitStatus::Exited(code) => Exit::Code(code),
                        sys::WaitStatus::Signaled(signal) => Exit::Signal(signal),
                    },
                )),
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                    self.has_children = false;
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    console::log(Level::Error, &format!("waitpid: {e}"));
                    break;
                }
            }
        }
        crate::host::fault::point("reaped", "");
        // Each process's group is looked at once every zombie of the batch
        // is gone (a group of zombies is not alive), and before the engine
        // sees any exit: delivering one may start a process, which the
        // kernel may give the pid, and so the group number, of a later
        // exit of this same batch.
        let mut exits = Vec::new();
        for (pid, exit) in &self.reaped {
            match self.engine.owner(*pid) {
                Some(name) => exits.push(Reaped {
                    pid: *pid,
                    exit: *exit,
                    group_alive: self.group_exists(name, *pid),
                }),
                // Orphans can come by the thousand: no text unless asked.
                None if console::enabled(Level::Debug) => console::log(
                    Level::Debug,
                    &format!("reaped orphan {pid} ({})", exit.describe()),
                ),
                None => {}
            }
        }
        self.reaped.clear();
        if !exits.is_empty() || !self.has_children {
            self.feed(Input::Reaped {
                exits,
                children_left: self.has_children,
            });
        }
        // A stopping service whose main process is gone waits for its
        // group (or cgroup) to empty.
        for (name, group) in self.engine.groups_to_watch() {
            if !self.group_exists(&name, group) {
                self.feed(Input::GroupEmpty(name));
            }
        }
    }

    // ---- signals, timers, notifications ----

    /// Every signal the signalfd holds, read in batches; one reap for all
    /// the SIGCHLDs of a batch. A batch that did not fill the buffer took
    /// everything pending (epoll, level-triggered, reports any newcomer),
    /// so no read is spent on learning that nothing is left.
    fn on_signals(&mut self) {
        loop {
            let mut batch = [sys::NO_SIGNAL; 16];
            let n = match sys::read_signals(self.signals.as_fd(), &mut batch) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    console::log(Level::Error, &format!("reading signalfd: {e}"));
                    return;
                }
            };
            let got = batch.get(..n).unwrap_or_default();
            if got.iter().any(|(signal, _)| *signal == libc::SIGCHLD) {
                self.reap();
            }
            for (signal, sender) in got {
                self.on_signal(*signal, *sender);
            }
            if n < batch.len() {
                return;
            }
        }
    }

    fn on_signal(&mut self, signal: i32, sender: Pid) {
        match signal {
            // Reaped above, once for the whole batch.
            libc::SIGCHLD => {}
            libc::SIGTERM | libc::SIGINT | libc::SIGPWR => {
                let ending = match self.settings.mode {
                    Mode::Boot => Ending::Poweroff,
                    Mode::NoBoot => Ending::Exit(0),
                };
                self.feed(Input::Shutdown {
                    ending,
                    reason: format!("received {} from pid {sender}", spec::signal_name(signal)),
                });
            }
            libc::SIGHUP => {
                console::log(Level::Info, "received SIGHUP: reloading service files");
                // Errors are logged by reload itself.
                let _ = self.reload();
            }
            other => console::log(
                Level::Debug,
                &format!("ignoring {} from pid {sender}", spec::signal_name(other)),
            ),
        }
    }

    fn on_timer(&mut self) {
        let mut buf = [0u8; 8];
        let _ = sys::read(self.timer.as_fd(), &mut buf);
        self.timer_armed = None;
        crate::host::fault::point("timer", "");
        let now = Instant::now();
        self.feed(Input::Tick);
        self.with_control(|ctl, sup| ctl.on_deadline(now, &sup.epoll, TOKEN_CONTROL));
        for (limit, what) in [
            (
                &mut self.foreign_notify,
                "messages from processes of no Type=notify service",
            ),
            (&mut self.garbage_notify, "garbage messages"),
        ] {
            if let Some(n) = limit.take_suppressed(now) {
                console::log(
                    Level::Warn,
                    &format!(
                        "notify: {n} {what} suppressed in the last {}",
                        duration::format(limit.interval())
                    ),
                );
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let control = self.control.as_ref().and_then(Control::deadline);
        let warnings = [&self.foreign_notify, &self.garbage_notify]
            .into_iter()
            .filter_map(RateLimit::deadline);
        self.engine
            .next_deadline()
            .into_iter()
            .chain(control)
            .chain(warnings)
            .min()
    }

    fn arm_timer(&mut self) {
        let next = self.next_deadline();
        if next == self.timer_armed {
            return;
        }
        let result = match next {
            None => self.timer.unset(),
            Some(at) => {
                // A zero expiry would disarm the timer: use 1 ns instead.
                let wait = at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_nanos(1));
                self.timer.set(
                    Expiration::OneShot(TimeSpec::from_duration(wait)),
                    TimerSetTimeFlags::empty(),
                )
            }
        };
        match result {
            Ok(()) => self.timer_armed = next,
            Err(e) => console::log(Level::Error, &format!("timerfd_settime: {e}")),
        }
    }

    fn on_notify(&mut self) {
        // Bounded per wakeup; level-triggered epoll brings us back.
        for _ in 0..64 {
            let message = match self.notify.as_ref().map(NotifySocket::recv) {
                Some(Ok(Some(m))) => m,
                Some(Ok(None)) | None => return,
                Some(Err(e)) => {
                    console::log(Level::Error, &format!("notify socket: {e}"));
                    return;
                }
            };
            crate::host::fault::point("notify", "");
            // The engine decides whose message it is: by the sender's pid
            // (from the kernel), or its process group.
            let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(message.pid)))
                .ok()
                .map(|g| g.as_raw());
            self.feed(Input::Notify {
                pid: message.pid,
                pgid,
                fields: message.body.clone(),
            });
            // The message (and its barrier fd) is dropped here: the sender
            // learns that init has handled it.
            drop(message);
        }
    }

    // ---- control socket ----

    fn on_control_accept(&mut self) {
        self.with_control(|ctl, sup| ctl.accept(&sup.epoll));
    }

    fn on_control_client(&mut self, token: Token, flags: EpollFlags) {
        self.with_control(|ctl, sup| {
            let requests = ctl.on_client_event(token, flags, &sup.epoll);
            for (client, request) in requests {
                let what = request.as_ref().map_or_else(
                    |_| "a bad control request".to_string(),
                    |r| format!("control request {}", r.command.name()),
                );
                let step = panics::catch(|| {
                    let step = control::execute(&sup.view(), ctl, client, request);
                    match step {
                        Step::Do(task) => {
                            let result = sup.carry_out(&task);
                            ctl.done(client, &task, result, &sup.view())
                        }
                        other => other,
                    }
                });
                let reply = match step {
                    Ok(Step::Reply(response)) => Some(*response),
                    Ok(Step::Later | Step::Do(_)) => None,
                    Err(text) => {
                        console::log(
                            Level::Error,
                            &format!("internal error while handling {what}: {text}; carrying on"),
                        );
                        sup.recovering = true;
                        Some(Response::Error {
                            message: format!("internal error in init: {text}"),
                        })
                    }
                };
                ctl.reply(client, reply, &sup.epoll);
            }
            ctl.pump(None, &sup.view(), &sup.epoll);
            ctl.settle_waiting(&sup.view(), &sup.epoll);
        });
    }

    /// Carries out what a control request asks of init: an engine request,
    /// a reload, a shutdown. Its result, for the control server to answer.
    fn carry_out(&mut self, task: &Task) -> Result<control::Done, String> {
        match task {
            Task::Engine(request) => {
                let fed = self.feed(Input::Request(request.clone()));
                fed.answers
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| Err("no answer".into()))
                    .map(control::Done::Message)
            }
            Task::Reload => self.reload().map(control::Done::Reloaded),
            Task::Shutdown { reboot } => {
                let ending = match (self.settings.mode, reboot) {
                    (Mode::Boot, false) => Ending::Poweroff,
                    (Mode::Boot, true) => Ending::Reboot,
                    (Mode::NoBoot, _) => Ending::Exit(0),
                };
                let what = if *reboot { "reboot" } else { "poweroff" };
                self.feed(Input::Shutdown {
                    ending,
                    reason: format!("initctl {what}"),
                });
                Ok(control::Done::Message(format!("shutting down ({what})")))
            }
        }
    }

    /// Runs `f` with the control server taken out of the supervisor (a
    /// request may change the supervisor) and always puts it back, panic
    /// or not: the control socket outlives any request.
    fn with_control(&mut self, f: impl FnOnce(&mut Control, &mut Self)) {
        let Some(mut ctl) = self.control.take() else {
            return;
        };
        let result = panics::catch(|| f(&mut ctl, self));
        self.control = Some(ctl);
        if let Err(text) = result {
            console::log(
                Level::Error,
                &format!("internal error while serving the control socket: {text}; carrying on"),
            );
            self.recovering = true;
        }
    }

    // ---- ends ----

    fn signal_remaining(&self, signal: i32) {
        if self.is_pid1 {
            if let Err(e) = sys::kill(-1, signal) {
                if e.raw_os_error() != Some(libc::ESRCH) {
                    console::log(
                        Level::Error,
                        &format!("kill(-1, {}): {e}", spec::signal_name(signal)),
                    );
                }
            }
            return;
        }
        for pid in descendants(&self.settings.proc_path, sys::getpid()) {
            let _ = sys::kill(pid, signal);
        }
    }

    /// Last words of the services: a process's final lines may still sit in
    /// its pipe after init has reaped it (more than one wakeup's budget in
    /// a pipe enlarged with F_SETPIPE_SZ). Everything is read (up to what a
    /// surviving writer has not written yet), partial lines included.
    fn drain_pipes(&mut self) {
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

    fn flush_console(&mut self) {
        let pending = console::flush();
        if let Some(fd) = self.console_fd {
            if pending != self.console_watched {
                let flags = if pending {
                    EpollFlags::EPOLLOUT
                } else {
                    EpollFlags::empty()
                };
                let mut event = EpollEvent::new(flags, TOKEN_CONSOLE);
                if self.epoll.modify(console_borrow(fd), &mut event).is_ok() {
                    self.console_watched = pending;
                }
            }
        }
    }

    /// The control socket path's notify sibling (for tests and status).
    pub fn notify_path(&self) -> Option<&Path> {
        self.notify.as_ref().map(|n| n.path.as_path())
    }
}

/// The console fd lives in the console module's static.
fn console_borrow(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: the fd belongs to the console module's static. It is closed
    // only by `console::mark_gone`, after `on_console` has removed it from
    // epoll and forgotten it (`console_fd = None`): no borrow outlives it.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

/// `<socket>.notify` beside the control socket, e.g.
/// `/run/enclave-init.notify`.
pub fn notify_path_for(control_socket: &Path) -> PathBuf {
    control_socket.with_extension("notify")
}

impl Supervisor {
    /// The cgroup tracking `name`, when cgroup v2 tracking is on for it.
    fn cgroup_of(&self, name: &str) -> Option<PathBuf> {
        let root = self.settings.cgroup_root.as_ref()?;
        let unit = self.engine.unit(name)?;
        (unit.spec.kill_mode != crate::model::spec::KillMode::Process)
            .then(|| root.join(format!("{name}.service")))
    }

    /// Signals a service's process or its whole group: its cgroup when it
    /// has one (which also holds processes that left the process group),
    /// else its process group.
    fn signal_service(&self, name: &str, pid: Pid, group: bool, signal: i32) {
        if let (true, Some(dir)) = (group, self.cgroup_of(name)) {
            if dir.is_dir() {
                if signal == libc::SIGKILL {
                    if kill_cgroup(&dir).is_ok() {
                        console::log(
                            Level::Debug,
                            &format!("{name}: killed cgroup {}", dir.display()),
                        );
                    }
                } else {
                    for member in cgroup_members(&dir) {
                        let _ = sys::kill(member, signal);
                    }
                }
                // Processes that could not join the cgroup (a failed join is
                // logged at start) are still in the process group: it gets
                // the signal too.
                signal_process(name, pid, true, signal);
                return;
            }
        }
        signal_process(name, pid, group, signal);
    }

    fn group_exists(&self, name: &str, pgid: Pid) -> bool {
        match self.cgroup_of(name) {
            Some(dir) if dir.is_dir() => cgroup_populated(&dir) || group_exists(pgid),
            _ => group_exists(pgid),
        }
    }
}

/// `cgroup.kill` (Linux 5.14+): never created, only written if there.
fn kill_cgroup(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.kill"))?
        .write_all(b"1")
}

fn cgroup_members(dir: &Path) -> Vec<Pid> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn cgroup_populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|t| t.lines().any(|l| l.trim() == "populated 1"))
        .unwrap_or(false)
}

fn signal_process(name: &str, pid: Pid, group: bool, signal: i32) {
    let target = if group { -pid } else { pid };
    match sys::kill(target, signal) {
        Ok(()) => {
            if signal != libc::SIGCONT {
                let whom = if group {
                    format!("process group {pid}")
                } else {
                    format!("pid {pid}")
                };
                console::log(
                    Level::Debug,
                    &format!("{name}: sent {} to {whom}", spec::signal_name(signal)),
                );
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
        Err(e) => console::log(
            Level::Warn,
            &format!("{name}: kill({target}, {}): {e}", spec::signal_name(signal)),
        ),
    }
}

fn group_exists(pgid: Pid) -> bool {
    match sys::kill(-pgid, 0) {
        Ok(()) => true,
        Err(e) => e.raw_os_error() == Some(libc::EPERM),
    }
}

fn report_diagnostics(diags: &[crate::parse::diag::Diagnostic]) {
    for d in diags {
        let level = match d.severity {
            crate::parse::diag::Severity::Error => Level::Error,
            crate::parse::diag::Severity::Warning => Level::Warn,
        };
        console::log(level, &d.to_string());
    }
}

/// Every descendant of `root` by walking `/proc/*/stat` parent links.
pub fn descendants(proc_path: &Path, root: Pid) -> Vec<Pid> {
    let mut parent_of: HashMap<Pid, Pid> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir(proc_path) {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<Pid>().ok())
            else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) {
                // The command name may hold spaces and parentheses: parse
                // after the last ')'.
                if let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) {
                    if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok())
                    {
                        parent_of.insert(pid, ppid);
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (child, parent) in &parent_of {
            if *parent == p && *child != root {
                out.push(*child);
                frontier.push(*child);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_from_proc() {
        let proc = std::env::temp_dir().join(format!("ei-proc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&proc);
        for (pid, ppid) in [(10, 1), (11, 10), (12, 11), (13, 1), (14, 99)] {
            std::fs::create_dir_all(proc.join(pid.to_string())).unwrap();
            std::fs::write(
                proc.join(format!("{pid}/stat")),
                format!("{pid} (a (weird) name) S {ppid} 1 1 0"),
            )
            .unwrap();
        }
        let mut found = descendants(&proc, 10);
        found.sort();
        assert_eq!(found, [11, 12]);
        let mut all = descendants(&proc, 1);
        all.sort();
        assert_eq!(all, [10, 11, 12, 13]);
        std::fs::remove_dir_all(&proc).unwrap();
    }
}
