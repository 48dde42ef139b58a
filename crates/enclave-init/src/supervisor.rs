//! The imperative shell: one thread, one `epoll` loop over a signalfd, a
//! timerfd armed for the earliest deadline, the console, the control and
//! notify sockets and the services' output pipes. Idle means no wakeups.
//!
//! It owns the services' runtime records, turns the world into
//! [`lifecycle::Event`]s and carries out the [`lifecycle::Action`]s. It is
//! the only place that waits for children (the one reaper).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use crate::config::{Config, Level};
use crate::console;
use crate::control::{self, Control, Token};
use crate::duration;
use crate::graph::{self, DepState, Deps, Gate};
use crate::lifecycle::{Action, Event, Exit, Failure, Life, Pid, Proc, State};
use crate::notify::NotifySocket;
use crate::output::{LineSplitter, Lines, LogRing};
use crate::panics;
use crate::proto::Response;
use crate::ratelimit::RateLimit;
use crate::spawn;
use crate::spec::{self, EndAction, ServiceSpec, ServiceType};
use crate::sys;

/// How init was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// PID 1 of an enclave: every end is `reboot(2)`.
    Boot,
    /// `--no-boot`: every end is `exit`.
    NoBoot,
}

/// How init ends, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Poweroff,
    Reboot,
    Exit(i32),
}

/// Everything the supervisor needs from the outside, so that tests can run
/// it on a temporary tree.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub config: Config,
    /// `/env` in boot mode, init's own environment otherwise; bytes.
    pub base_env: Vec<(OsString, OsString)>,
    /// Root for `/etc/passwd` and `/etc/group` lookups.
    pub root: PathBuf,
    /// `main` of `/cmd` or of `-- CMD`, beside the service files.
    pub extra_services: Vec<ServiceSpec>,
    /// Load the service directory too (not for `-- CMD` without one).
    pub load_service_dir: bool,
    pub proc_path: PathBuf,
    /// A cgroup v2 hierarchy to track `KillMode=control-group` services in
    /// (boot mode with `cgroups = "v2"`); process groups otherwise.
    pub cgroup_root: Option<PathBuf>,
    /// The `RLIMIT_NOFILE` init was given (soft, hard), which services
    /// keep unless `LimitNOFILE` says otherwise; init raised its own.
    pub nofile: Option<(u64, u64)>,
}

/// One service's runtime record.
pub struct Service {
    pub spec: ServiceSpec,
    pub life: Life,
    pub logs: LogRing,
    pub deps: Deps,
    /// A start was asked for and waits for its dependencies.
    pub start_pending: bool,
    /// A stop was asked for and waits for the services ordered after it.
    pub stop_pending: bool,
    /// `restart` on request: start again once stopped.
    pub restart_pending: bool,
    /// What the pending start waits for, for `initctl status`.
    pub waiting_for: Option<String>,
    /// A changed file, used from the next start on.
    pub next_spec: Option<ServiceSpec>,
    /// `STATUS=` from a notify service.
    pub status_text: Option<String>,
    /// Removed from the directory: forgotten once stopped.
    pub removed: bool,
}

impl Service {
    fn new(spec: ServiceSpec, now: Instant, log_cap: usize) -> Self {
        Self {
            spec,
            life: Life::new(now),
            logs: LogRing::new(log_cap),
            deps: Deps::default(),
            start_pending: false,
            stop_pending: false,
            restart_pending: false,
            waiting_for: None,
            next_spec: None,
            status_text: None,
            removed: false,
        }
    }

    /// The state `initctl` shows: a queued start is already "starting".
    pub fn state_name(&self) -> &'static str {
        if self.start_pending && !matches!(self.life.state, State::Stopping { .. }) {
            "starting"
        } else {
            self.life.state.name()
        }
    }

    fn dep_state(&self) -> DepState {
        if self.start_pending || self.stop_pending || self.restart_pending {
            return DepState::Pending;
        }
        match &self.life.state {
            State::Starting { .. } | State::Stopping { .. } | State::Waiting { .. } => {
                DepState::Pending
            }
            State::Running { .. } | State::Exited { active: true } => DepState::Ready,
            State::Exited { active: false } => DepState::Exited,
            State::Stopped => DepState::Stopped,
            State::Failed { .. } => DepState::Failed,
        }
    }
}

/// A child reaped and not yet delivered: its pid, how it ended and, once
/// routed, its service and whether its group lives on (`Some(None)`: an
/// orphan).
struct Reaped {
    pid: Pid,
    exit: Exit,
    owner: Option<Option<(String, bool)>>,
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShutdownPhase {
    /// Services are being stopped in order.
    Services,
    /// SIGTERM sent to every remaining process.
    Term,
    /// SIGKILL sent.
    Kill,
}

struct Shutdown {
    ending: Ending,
    phase: ShutdownPhase,
    deadline: Option<Instant>,
    /// `shutdown.final_timeout` after the start; `None`: no bound, or
    /// already past it.
    final_deadline: Option<Instant>,
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

pub struct Supervisor {
    pub settings: Settings,
    epoll: Epoll,
    signals: SignalFd,
    timer: TimerFd,
    timer_armed: Option<Instant>,
    console_fd: Option<RawFd>,
    console_watched: bool,
    pub services: BTreeMap<String, Service>,
    /// Every live process init started, by pid: its service.
    procs: HashMap<Pid, String>,
    /// Children reaped, waiting to be delivered (see [`Supervisor::reap`]).
    reaped: std::collections::VecDeque<Reaped>,
    pipes: HashMap<u64, Pipe>,
    next_pipe_serial: u64,
    /// Scratch space of `read_pipe`, kept from read to read.
    read_buf: Vec<u8>,
    lines: Lines,
    notify: Option<NotifySocket>,
    control: Option<Control>,
    shutdown: Option<Shutdown>,
    finished: Option<Ending>,
    has_children: bool,
    is_pid1: bool,
    /// Something changed that the dependency scheduler must look at.
    dirty: bool,
    /// A handler panicked: check init's view against the world before
    /// going on (see [`Supervisor::recover`]).
    recovering: bool,
    recoveries_in_a_row: u32,
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
        let mut supervisor = Self {
            settings,
            epoll,
            signals,
            timer,
            timer_armed: None,
            console_fd: console::fd(),
            console_watched: false,
            services: BTreeMap::new(),
            procs: HashMap::new(),
            reaped: std::collections::VecDeque::new(),
            pipes: HashMap::new(),
            next_pipe_serial: 0,
            read_buf: Vec::new(),
            lines: Lines::default(),
            notify: None,
            control: None,
            shutdown: None,
            finished: None,
            has_children: true,
            is_pid1,
            dirty: false,
            recovering: false,
            recoveries_in_a_row: 0,
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
    /// anywhere in here is caught: the loop checks its view of services
    /// and processes against the world and goes on.
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

    /// One turn of the loop: settle what changed, wait, handle the events.
    fn turn(&mut self, events: &mut [EpollEvent]) -> Option<Ending> {
        if self.recovering {
            self.recover();
        } else {
            self.recoveries_in_a_row = 0;
        }
        self.guard("scheduling", |s| {
            if s.dirty {
                s.schedule();
            }
            s.progress_shutdown();
        });
        if let Some(ending) = self.finished.take() {
            return Some(ending);
        }
        self.guard("control", |s| {
            if let Some(ctl) = s.control.as_mut() {
                if ctl.has_waiting() {
                    ctl.settle_waiting(&s.services, &s.epoll);
                }
            }
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

    /// Runs one handler; a panic in it is logged, and the next turn checks
    /// init's view before going on.
    fn guard(&mut self, what: &str, f: impl FnOnce(&mut Self)) {
        if panics::guarded(what, || f(self)).is_none() {
            self.recovering = true;
        }
    }

    /// After a panic: whatever the handler left undone is found again from
    /// the world. Exits it had not reaped are reaped; the timer is armed
    /// anew (a deadline it consumed fires again); and every service whose
    /// record no longer names exactly the processes init knows it has
    /// (an exit or a start lost half-way) is put in a state that is true:
    /// its processes are killed and it is `failed`, saying why. If the
    /// recovery itself keeps failing, init ends in order.
    fn recover(&mut self) {
        self.recovering = false;
        self.recoveries_in_a_row += 1;
        if self.recoveries_in_a_row > MAX_RECOVERIES {
            let ending = match self.settings.mode {
                Mode::Boot => Ending::Poweroff,
                Mode::NoBoot => Ending::Exit(70),
            };
            if self.recoveries_in_a_row > 2 * MAX_RECOVERIES {
                console::log(
                    Level::Error,
                    "internal errors keep coming while shutting down; ending now",
                );
                self.finished = Some(ending);
                return;
            }
            self.begin_shutdown(
                ending,
                &format!("{MAX_RECOVERIES} internal errors in a row: init cannot go on safely"),
            );
        }
        self.timer_armed = None;
        self.reap();
        // A service whose state names a process init no longer has (its
        // exit was lost) cannot be trusted. (The converse is fine: a
        // process given up on after SIGKILL stays known while its service
        // has settled.)
        let untrue: Vec<String> = self
            .services
            .iter()
            .filter(|(name, svc)| {
                svc.life
                    .state
                    .pids()
                    .iter()
                    .any(|pid| self.procs.get(pid) != Some(*name))
            })
            .map(|(name, _)| name.clone())
            .collect();
        let strays: Vec<(Pid, String)> = self
            .procs
            .iter()
            .filter(|(_, name)| !self.services.contains_key(name.as_str()))
            .map(|(pid, name)| (*pid, name.clone()))
            .collect();
        for (pid, name) in strays {
            self.procs.remove(&pid);
            signal_process(&name, pid, true, libc::SIGKILL);
        }
        for name in untrue {
            self.quarantine(&name, "its record no longer matched its processes");
        }
        self.dirty = true;
    }

    /// Makes a service whose handling failed true again: its processes
    /// get SIGKILL (they are reaped as orphans), it is `failed` with the
    /// reason, what requires it is stopped, and its `FailureAction` applies.
    fn quarantine(&mut self, name: &str, why: &str) {
        console::log(
            Level::Error,
            &format!("{name}: internal error: {why}; killing its processes; it is failed"),
        );
        // Only processes init still has (alive, or zombies not yet reaped,
        // whose numbers cannot be reused), and a stopping service's group
        // while it lives: a pid the state names but init reaped may belong
        // to someone else by now.
        let mut pids: BTreeSet<Pid> = self
            .procs
            .iter()
            .filter(|(_, n)| n.as_str() == name)
            .map(|(p, _)| *p)
            .collect();
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if let State::Stopping {
            group: Some(g),
            group_alive: true,
            ..
        } = svc.life.state
        {
            pids.insert(g);
        }
        let before = svc.life.state.clone();
        svc.start_pending = false;
        svc.stop_pending = false;
        svc.restart_pending = false;
        svc.waiting_for = None;
        svc.life
            .fail(Failure::Internal(why.to_string()), Instant::now());
        let action = svc.spec.failure_action;
        for pid in pids {
            self.procs.remove(&pid);
            self.signal_service(name, pid, true, libc::SIGKILL);
        }
        self.after_transition(name, &before);
        self.end_action(name, action, 1);
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

    // ---- loading ----

    fn load_initial(&mut self) {
        let now = Instant::now();
        let mut specs = Vec::new();
        let mut broken = Vec::new();
        if self.settings.load_service_dir {
            let dir = &self.settings.config.services.dir;
            let loaded = spec::load_dir(dir);
            report_diagnostics(&loaded.diagnostics);
            // The default directory may be absent when `/cmd` or `-- CMD`
            // gives the command; any other missing one is a mistake to name.
            if loaded.missing
                && (self.settings.extra_services.is_empty()
                    || dir.as_path() != Path::new(crate::config::DEFAULT_SERVICE_DIR))
            {
                console::log(
                    Level::Error,
                    &format!(
                        "service directory {}: No such file or directory",
                        dir.display()
                    ),
                );
            }
            specs = loaded.services;
            broken = loaded.broken;
        }
        for extra in self.settings.extra_services.clone() {
            if specs.iter().any(|s| s.name == extra.name) {
                console::log(
                    Level::Warn,
                    &format!(
                        "{}/{}.service replaces the service {} from the command",
                        self.settings.config.services.dir.display(),
                        extra.name,
                        extra.name
                    ),
                );
            } else {
                specs.push(extra);
            }
        }
        if !broken.is_empty() {
            console::log(
                Level::Error,
                &format!("not loaded (see above): {}", broken.join(", ")),
            );
        }
        let cap = self.settings.config.log.buffer;
        for mut spec in specs {
            spec.timeout_stop
                .get_or_insert(self.settings.config.shutdown.timeout);
            self.services
                .insert(spec.name.clone(), Service::new(spec, now, cap));
        }
        console::log(
            Level::Info,
            &format!(
                "supervising {} service{}",
                self.services.len(),
                if self.services.len() == 1 { "" } else { "s" }
            ),
        );
        let refused = self.rebuild_graph();
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            if let Some(reason) = refused.get(&name) {
                self.deliver(
                    &name,
                    Event::Refuse {
                        reason: reason.clone(),
                    },
                );
            } else if let Some(svc) = self.services.get_mut(&name) {
                svc.start_pending = true;
            }
        }
        self.dirty = true;
        if self.services.is_empty() {
            match self.settings.mode {
                // No shell, no network: nobody could ever give an enclave
                // something to run. It ends, saying why, rather than idle.
                Mode::Boot => self.begin_shutdown(
                    Ending::Poweroff,
                    &format!(
                        "nothing to run: no /cmd (or services.legacy = \"never\") and no service could be loaded from {}",
                        self.settings.config.services.dir.display()
                    ),
                ),
                Mode::NoBoot => console::log(
                    Level::Warn,
                    "no services to supervise; waiting for initctl or a signal",
                ),
            }
        }
    }

    /// Recomputes every service's edges; returns the services that cannot
    /// start (cycles, missing requirements) with their reasons.
    fn rebuild_graph(&mut self) -> BTreeMap<String, String> {
        // From the files as they are now: a changed file's dependencies
        // count at once, though its other settings wait for its next start.
        let (deps, problems) = graph::build(
            self.services
                .values()
                .filter(|s| !s.removed)
                .map(|s| s.next_spec.as_ref().unwrap_or(&s.spec)),
        );
        for (name, missing) in &problems.missing_wants {
            console::log(
                Level::Warn,
                &format!("{name}: wants {missing}, which does not exist"),
            );
        }
        for (name, svc) in self.services.iter_mut() {
            svc.deps = deps.get(name).cloned().unwrap_or_default();
        }
        problems.failures()
    }

    // ---- events to services ----

    /// Hands one event to a service and carries out what it decides. A
    /// panic on the way (in the state machine or in carrying out its
    /// actions) fails that service alone, in a state that is true
    /// ([`Supervisor::quarantine`]).
    fn deliver(&mut self, name: &str, event: Event) {
        let what = event.name();
        if let Err(text) = panics::catch(|| self.deliver_unguarded(name, event)) {
            self.quarantine(name, &format!("a panic while handling {what}: {text}"));
        }
    }

    fn deliver_unguarded(&mut self, name: &str, event: Event) {
        let now = Instant::now();
        let Some(svc) = self.services.get_mut(name) else {
            return;
        };
        if svc.next_spec.is_some()
            && matches!(event, Event::Start | Event::Deadline)
            && (svc.life.state.is_settled() || matches!(svc.life.state, State::Waiting { .. }))
        {
            if let Some(mut next) = svc.next_spec.take() {
                next.timeout_stop
                    .get_or_insert(self.settings.config.shutdown.timeout);
                svc.spec = next;
                console::log(
                    Level::Info,
                    &format!("{name}: using its changed service file"),
                );
            }
        }
        let before = svc.life.state.clone();
        let mut queue: std::collections::VecDeque<Action> =
            svc.life.handle(&svc.spec, event, now).into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Spawn(proc) => {
                    let result = self.spawn(name, proc);
                    crate::fault::point("deliver", name);
                    if let Some(svc) = self.services.get_mut(name) {
                        queue.extend(svc.life.handle(&svc.spec, result, Instant::now()));
                    }
                }
                Action::Signal { pid, group, signal } => {
                    self.signal_service(name, pid, group, signal)
                }
                Action::Log(level, message) => console::log(level, &format!("{name}: {message}")),
                Action::End(action, status) => self.end_action(name, action, status),
            }
        }
        self.after_transition(name, &before);
    }

    /// Reacts to a service's change for the others: dependents of a service
    /// that went down are stopped, and the scheduler looks again.
    fn after_transition(&mut self, name: &str, before: &State) {
        let Some(svc) = self.services.get(name) else {
            return;
        };
        let now_state = &svc.life.state;
        if std::mem::discriminant(before) == std::mem::discriminant(now_state)
            && before == now_state
        {
            return;
        }
        self.dirty = true;
        let went_down = match now_state {
            State::Failed { .. } | State::Stopped => true,
            State::Exited { active: false } => svc.spec.service_type != ServiceType::Oneshot,
            State::Exited { active: true }
            | State::Starting { .. }
            | State::Running { .. }
            | State::Stopping { .. }
            | State::Waiting { .. } => false,
        };
        let was_up = matches!(
            before,
            State::Running { .. }
                | State::Starting { .. }
                | State::Stopping { .. }
                | State::Exited { active: true }
        );
        if went_down && was_up {
            let dependents: Vec<String> = svc.deps.required_by.iter().cloned().collect();
            let why = now_state.name();
            for dep in dependents {
                if let Some(d) = self.services.get_mut(&dep) {
                    if !d.life.state.is_settled()
                        && !d.stop_pending
                        && !d.restart_pending
                        && !matches!(d.life.state, State::Stopping { .. })
                    {
                        console::log(
                            Level::Info,
                            &format!("{dep}: stopping: it requires {name}, which is {why}"),
                        );
                        d.stop_pending = true;
                        d.start_pending = false;
                    }
                }
            }
        }
        if self
            .services
            .get(name)
            .is_some_and(|s| s.removed && s.life.state.is_settled())
        {
            self.services.remove(name);
            console::log(Level::Info, &format!("{name}: removed"));
        }
    }

    /// Starts what may start and stops what may stop, until nothing moves.
    fn schedule(&mut self) {
        self.dirty = false;
        if self.shutdown.is_some() {
            // Whatever still runs or is about to restart must stop.
            for svc in self.services.values_mut() {
                svc.start_pending = false;
                svc.restart_pending = false;
                if !svc.life.state.is_settled()
                    && !svc.stop_pending
                    && !matches!(svc.life.state, State::Stopping { .. })
                {
                    svc.stop_pending = true;
                }
            }
        }
        loop {
            let mut moved = false;
            // Restarts on request: once down, they start like any start.
            for svc in self.services.values_mut() {
                if svc.restart_pending && !svc.stop_pending && svc.life.state.is_settled() {
                    svc.restart_pending = false;
                    svc.start_pending = true;
                }
            }
            let pending: Vec<String> = self
                .services
                .iter()
                .filter(|(_, s)| s.start_pending || s.stop_pending)
                .map(|(n, _)| n.clone())
                .collect();
            for name in pending {
                let Some(svc) = self.services.get(&name) else {
                    continue;
                };
                if svc.stop_pending {
                    let blocker = graph::stop_gate(&svc.deps, |other| {
                        self.services.get(other).is_some_and(|o| {
                            o.stop_pending || matches!(o.life.state, State::Stopping { .. })
                        })
                    });
                    if blocker.is_none() {
                        if let Some(svc) = self.services.get_mut(&name) {
                            svc.stop_pending = false;
                        }
                        self.deliver(&name, Event::Stop);
                        moved = true;
                    }
                } else if svc.start_pending && matches!(svc.life.state, State::Stopping { .. }) {
                    // Started while still stopping: start once it is down.
                } else if svc.start_pending {
                    let gate = graph::start_gate(&svc.deps, |other| {
                        self.services
                            .get(other)
                            .map_or(DepState::Stopped, Service::dep_state)
                    });
                    match gate {
                        Gate::Go => {
                            if let Some(svc) = self.services.get_mut(&name) {
                                svc.start_pending = false;
                                svc.waiting_for = None;
                            }
                            self.deliver(&name, Event::Start);
                            moved = true;
                        }
                        Gate::Fail(reason) => {
                            if let Some(svc) = self.services.get_mut(&name) {
                                svc.start_pending = false;
                                svc.waiting_for = None;
                            }
                            console::log(Level::Error, &format!("{name}: not started: {reason}"));
                            self.deliver(&name, Event::Refuse { reason });
                            moved = true;
                        }
                        Gate::Wait(reason) => {
                            if let Some(svc) = self.services.get_mut(&name) {
                                svc.waiting_for = Some(reason);
                            }
                        }
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }

    // ---- requests (initctl, reload) ----

    /// `initctl start`: the service and what it requires and wants.
    pub fn request_start(&mut self, name: &str) -> Result<String, String> {
        self.known(name, false)?;
        self.walk(name, |is_target, svc| {
            let active = matches!(
                svc.life.state,
                State::Running { .. } | State::Starting { .. } | State::Exited { active: true }
            );
            if !active || is_target {
                svc.stop_pending = false;
                if !active {
                    svc.start_pending = true;
                }
            }
            svc.deps
                .requires
                .iter()
                .chain(&svc.deps.wants)
                .cloned()
                .collect()
        });
        // A start by hand on a refused service retries it: its dependencies
        // are checked again now (a reload may have fixed them).
        self.requested(name)
    }

    /// `initctl stop`: the service and what requires it, dependents first.
    pub fn request_stop(&mut self, name: &str) -> Result<String, String> {
        self.known(name, true)?;
        self.walk(name, |is_target, svc| {
            svc.start_pending = false;
            svc.waiting_for = None;
            if !svc.life.state.is_settled() || is_target {
                svc.stop_pending = true;
            }
            svc.deps.required_by.iter().cloned().collect()
        });
        self.requested(name)
    }

    /// `initctl restart`: stop it and what requires it (dependents first),
    /// then start them all again through the queue, so that a changed
    /// service file and the dependencies apply as at any start.
    pub fn request_restart(&mut self, name: &str) -> Result<String, String> {
        self.known(name, false)?;
        self.walk(name, |is_target, svc| {
            let up = !svc.life.state.is_settled() || svc.start_pending;
            if !(up || is_target) {
                return Vec::new();
            }
            svc.start_pending = false;
            svc.restart_pending = true;
            if !svc.life.state.is_settled() {
                svc.stop_pending = true;
            }
            svc.deps.required_by.iter().cloned().collect()
        });
        self.requested(name)
    }

    /// Refuses requests for unknown services, and starts during shutdown.
    fn known(&self, name: &str, allowed_in_shutdown: bool) -> Result<(), String> {
        if self.shutdown.is_some() && !allowed_in_shutdown {
            return Err("init is shutting down".into());
        }
        if !self.services.contains_key(name) {
            return Err(format!("no such service: {name}"));
        }
        Ok(())
    }

    /// Visits `name`, then every service the visit names, once each.
    fn walk(&mut self, name: &str, mut visit: impl FnMut(bool, &mut Service) -> Vec<String>) {
        let mut todo = vec![name.to_string()];
        let mut seen = std::collections::BTreeSet::new();
        while let Some(n) = todo.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            if let Some(svc) = self.services.get_mut(&n) {
                todo.extend(visit(n == name, svc));
            }
        }
    }

    /// After a request: let the queues move, and say where the service is.
    fn requested(&mut self, name: &str) -> Result<String, String> {
        self.dirty = true;
        self.schedule();
        Ok(format!(
            "{name}: {}",
            self.services.get(name).map_or("gone", Service::state_name)
        ))
    }

    /// Re-reads the service directory (`initctl reload`, SIGHUP).
    pub fn reload(&mut self) -> Result<control::ReloadReport, String> {
        let mut report = control::ReloadReport::default();
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
        let loaded = spec::load_dir(&dir);
        report_diagnostics(&loaded.diagnostics);
        report.errors.extend(
            loaded
                .diagnostics
                .iter()
                .filter(|d| d.severity == crate::diag::Severity::Error)
                .map(ToString::to_string),
        );
        if let Some(dir_error) = loaded.diagnostics.iter().find(|d| {
            d.file == dir && d.line.is_none() && d.severity == crate::diag::Severity::Error
        }) {
            // The directory itself is unreadable: change nothing.
            console::log(
                Level::Error,
                &format!("reload: {dir_error}; services left as they are"),
            );
            return Err(format!("{dir_error}; nothing changed"));
        }
        let now = Instant::now();
        let mut fresh: BTreeMap<String, ServiceSpec> = loaded
            .services
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        for extra in &self.settings.extra_services {
            fresh
                .entry(extra.name.clone())
                .or_insert_with(|| extra.clone());
        }
        let broken: std::collections::BTreeSet<String> = loaded.broken.into_iter().collect();
        // Removed: stop and forget. Broken files keep their running service.
        let current: Vec<String> = self.services.keys().cloned().collect();
        for name in &current {
            if !fresh.contains_key(name) && !broken.contains(name) {
                report.removed.push(name.clone());
                if let Some(svc) = self.services.get_mut(name) {
                    svc.removed = true;
                }
                if self
                    .services
                    .get(name)
                    .is_some_and(|s| s.life.state.is_settled() && !s.start_pending)
                {
                    self.services.remove(name);
                } else {
                    let _ = self.request_stop(name);
                }
            }
        }
        // Half-way: removals applied, additions and changes not yet.
        crate::fault::point("reload", "");
        let cap = self.settings.config.log.buffer;
        let mut added = Vec::new();
        for (name, mut spec) in fresh {
            match self.services.get_mut(&name) {
                Some(svc) => {
                    spec.timeout_stop
                        .get_or_insert(self.settings.config.shutdown.timeout);
                    // Against what the next start would use: a file changed
                    // and changed back is a change too (back to the spec in
                    // use, so nothing is left pending).
                    let effective = svc.next_spec.as_ref().unwrap_or(&svc.spec);
                    if *effective != spec {
                        report.changed.push(name.clone());
                        svc.next_spec = (svc.spec != spec).then_some(spec);
                    }
                }
                None => {
                    spec.timeout_stop
                        .get_or_insert(self.settings.config.shutdown.timeout);
                    report.added.push(name.clone());
                    self.services
                        .insert(name.clone(), Service::new(spec, now, cap));
                    added.push(name);
                }
            }
        }
        let refused = self.rebuild_graph();
        for name in added {
            if let Some(reason) = refused.get(&name) {
                self.deliver(
                    &name,
                    Event::Refuse {
                        reason: reason.clone(),
                    },
                );
            } else if self.shutdown.is_none() {
                if let Some(svc) = self.services.get_mut(&name) {
                    svc.start_pending = true;
                }
            }
        }
        self.dirty = true;
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

    fn spawn(&mut self, name: &str, proc: Proc) -> Event {
        let Some(svc) = self.services.get(name) else {
            return Event::SpawnFailed {
                reason: "service vanished".into(),
                status: 1,
                transient: false,
            };
        };
        let spec = &svc.spec;
        let argv = match proc {
            Proc::Main => Some(&spec.exec_start),
            Proc::Pre(i) => spec.exec_start_pre.get(i).map(|c| &c.argv),
            Proc::Stop(i) => spec.exec_stop.get(i).map(|c| &c.argv),
        };
        let Some(argv) = argv else {
            return Event::SpawnFailed {
                reason: format!("no command for {proc:?}"),
                status: 1,
                transient: false,
            };
        };
        let mut extra: Vec<spawn::Var> = Vec::new();
        if proc == Proc::Main && spec.service_type == ServiceType::Notify {
            if let Some(sock) = &self.notify {
                extra.push(("NOTIFY_SOCKET".into(), sock.path.clone().into_os_string()));
            }
        }
        if let (Proc::Stop(_), Some(pid)) = (proc, svc.life.state.main_pid()) {
            extra.push(("MAINPID".into(), pid.to_string().into()));
        }
        let launch = match spawn::prepare(
            &self.settings.root,
            &self.settings.base_env,
            spec,
            argv,
            &extra,
            self.settings.nofile,
        ) {
            Ok(l) => l,
            Err(e) => {
                return Event::SpawnFailed {
                    reason: e.reason,
                    status: e.status,
                    transient: e.transient,
                }
            }
        };
        let mut launch = launch;
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
        let (stdout, stderr, read) = match spawn::streams(spec) {
            Ok(s) => s,
            Err(e) => {
                let transient = matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)
                );
                return Event::SpawnFailed {
                    reason: format!("output pipe: {e}"),
                    status: 1,
                    transient,
                };
            }
        };
        match spawn::start(launch, stdout, stderr) {
            Ok(started) => {
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
                self.forget_stale_group(pid);
                self.procs.insert(pid, name.to_string());
                self.has_children = true;
                if let Some(fd) = read {
                    self.watch_pipe(fd, name, pid);
                }
                Event::Spawned { pid }
            }
            Err(e) => Event::SpawnFailed {
                reason: e.reason,
                status: e.status,
                transient: e.transient,
            },
        }
    }

    /// A new process got a pid that a stopping service still remembers as
    /// its process group: that group is gone (pids are not reused while a
    /// group of that number exists), so never signal it again.
    fn forget_stale_group(&mut self, pid: Pid) {
        let stale: Vec<String> = self
            .services
            .iter()
            .filter(|(_, s)| matches!(s.life.state, State::Stopping { group: Some(g), group_alive: true, main: None, .. } if g == pid))
            .map(|(n, _)| n.clone())
            .collect();
        for name in stale {
            self.deliver(&name, Event::GroupEmpty);
        }
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
        crate::fault::point("pipe", &pipe.service);
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
        if let Some(svc) = self.services.get_mut(service) {
            svc.logs.push_lines(SystemTime::now(), pid, lines);
            if let Some(ctl) = self.control.as_mut() {
                ctl.pump(Some(service), &self.services, &self.epoll);
            }
        }
    }

    /// The one reaper: every exited child, routed to its service. Exits
    /// wait in `reaped` until delivered, so that a panic on the way loses
    /// none (the recovery calls this again).
    fn reap(&mut self) {
        crate::fault::point("reap", "");
        loop {
            match sys::reap_one() {
                Ok(Some((pid, exit))) => self.reaped.push_back(Reaped {
                    pid,
                    exit,
                    owner: None,
                }),
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
        crate::fault::point("reaped", "");
        // Every reaped pid is routed, and its group looked at, before any
        // exit is delivered: delivering one can start a process at once,
        // and the kernel may give it the pid (and so the process group) of
        // a later exit of this same batch, freed by the reaping above. That
        // exit must still reach its own service, and must not see the new
        // process as its group. (Groups are looked at only after every
        // zombie is gone, so that a group of zombies is not alive.)
        let mut i = 0;
        while let Some(entry) = self.reaped.get(i) {
            if entry.owner.is_none() {
                let pid = entry.pid;
                let owner = self.procs.remove(&pid).map(|name| {
                    let alive = self.group_exists(&name, pid);
                    (name, alive)
                });
                if let Some(entry) = self.reaped.get_mut(i) {
                    entry.owner = Some(owner);
                }
            }
            i += 1;
        }
        while let Some(entry) = self.reaped.pop_front() {
            match entry.owner.flatten() {
                Some((name, group_alive)) => {
                    self.deliver(
                        &name,
                        Event::Exited {
                            pid: entry.pid,
                            exit: entry.exit,
                            group_alive,
                        },
                    );
                }
                // Orphans can come by the thousand: no text unless asked.
                None if console::enabled(Level::Debug) => console::log(
                    Level::Debug,
                    &format!("reaped orphan {} ({})", entry.pid, describe(entry.exit)),
                ),
                None => {}
            }
        }
        let emptied: Vec<String> = self
            .services
            .iter()
            .filter(|(n, s)| match s.life.state {
                State::Stopping {
                    main: None,
                    group: Some(g),
                    group_alive: true,
                    ..
                } => !self.group_exists(n, g),
                _ => false,
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in emptied {
            self.deliver(&name, Event::GroupEmpty);
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
                self.begin_shutdown(
                    ending,
                    &format!("received {} from pid {sender}", spec::signal_name(signal)),
                );
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
        crate::fault::point("timer", "");
        let now = Instant::now();
        let due: Vec<String> = self
            .services
            .iter()
            .filter(|(_, s)| s.life.state.deadline().is_some_and(|d| d <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.deliver(&name, Event::Deadline);
        }
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
        self.progress_shutdown();
    }

    fn next_deadline(&self) -> Option<Instant> {
        let services = self
            .services
            .values()
            .filter_map(|s| s.life.state.deadline());
        let shutdown = self
            .shutdown
            .as_ref()
            .into_iter()
            .flat_map(|s| s.deadline.into_iter().chain(s.final_deadline));
        let control = self.control.as_ref().and_then(Control::deadline);
        let warnings = [&self.foreign_notify, &self.garbage_notify]
            .into_iter()
            .filter_map(RateLimit::deadline);
        services
            .chain(shutdown)
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
            self.on_notify_message(message);
        }
    }

    fn on_notify_message(&mut self, message: crate::notify::Message) {
        let pid = message.pid;
        crate::fault::point("notify", "");
        // Anyone may send to the socket (services run as any user): the
        // warnings are rate-limited, so that a flood costs init neither its
        // CPU nor its own lines on a slow console.
        let Some(name) = self.service_of_process(pid) else {
            if self.foreign_notify.allow(Instant::now()) {
                console::log(Level::Warn, &format!("notify: ignoring a message from pid {pid}: not a process of a Type=notify service"));
            }
            return;
        };
        let fields = match message.body {
            Ok(f) => f,
            Err(reason) => {
                if self.garbage_notify.allow(Instant::now()) {
                    console::log(
                        Level::Warn,
                        &format!("{name}: notify: ignoring garbage from pid {pid}: {reason}"),
                    );
                }
                return;
            }
        };
        for (key, value) in fields {
            match key.as_str() {
                "READY" if value == "1" => self.deliver(&name, Event::Ready),
                "STATUS" => {
                    if let Some(svc) = self.services.get_mut(&name) {
                        svc.status_text = Some(value.chars().take(256).collect());
                    }
                }
                "STOPPING" if value == "1" => {
                    console::log(Level::Info, &format!("{name}: reports it is stopping"))
                }
                _ => console::log(Level::Debug, &format!("{name}: notify: ignoring {key}")),
            }
        }
    }

    /// The notify service a process belongs to: its main process, or a
    /// process in the main process's group.
    fn service_of_process(&self, pid: Pid) -> Option<String> {
        let group = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)))
            .ok()
            .map(|g| g.as_raw());
        self.services
            .iter()
            .filter(|(_, s)| s.spec.service_type == ServiceType::Notify)
            .find(|(_, s)| {
                s.life
                    .state
                    .main_pid()
                    .is_some_and(|main| main == pid || Some(main) == group)
            })
            .map(|(n, _)| n.clone())
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
                let reply = match panics::catch(|| control::execute(sup, ctl, client, request)) {
                    Ok(reply) => reply,
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
            ctl.pump(None, &sup.services, &sup.epoll);
            ctl.settle_waiting(&sup.services, &sup.epoll);
        });
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

    fn end_action(&mut self, name: &str, action: EndAction, status: i32) {
        let ending = match (action, self.settings.mode) {
            (EndAction::None, _) => return,
            (EndAction::Poweroff, Mode::Boot) | (EndAction::Exit, Mode::Boot) => Ending::Poweroff,
            (EndAction::Reboot, Mode::Boot) => Ending::Reboot,
            (EndAction::Poweroff | EndAction::Reboot, Mode::NoBoot) => Ending::Exit(0),
            (EndAction::Exit, Mode::NoBoot) => Ending::Exit(status),
        };
        let kind = match action {
            EndAction::None => "none",
            EndAction::Poweroff => "poweroff",
            EndAction::Reboot => "reboot",
            EndAction::Exit => "exit",
        };
        self.begin_shutdown(
            ending,
            &format!("service {name} ended: its action is {kind} (status {status})"),
        );
    }

    /// Starts an orderly shutdown: services in reverse dependency order,
    /// then every remaining process, then the end.
    pub fn begin_shutdown(&mut self, ending: Ending, reason: &str) {
        if self.shutdown.is_some() {
            console::log(
                Level::Info,
                &format!("already shutting down; ignoring: {reason}"),
            );
            return;
        }
        console::log(
            Level::Info,
            &format!("shutting down ({}): {reason}", ending_name(&ending)),
        );
        let now = Instant::now();
        self.shutdown = Some(Shutdown {
            ending,
            phase: ShutdownPhase::Services,
            deadline: None,
            final_deadline: now.checked_add(self.settings.config.shutdown.final_timeout),
        });
        self.dirty = true;
    }

    fn progress_shutdown(&mut self) {
        let Some(shutdown) = self.shutdown.as_ref() else {
            return;
        };
        let now = Instant::now();
        if shutdown.final_deadline.is_some_and(|d| d <= now) {
            // A service that never dies (TimeoutStopSec=infinity, a process
            // stuck in the kernel) must not keep the enclave from ending.
            console::log(
                Level::Warn,
                &format!(
                    "shutdown took longer than {}; sending SIGKILL to every remaining process",
                    duration::format(self.settings.config.shutdown.final_timeout)
                ),
            );
            self.signal_remaining(libc::SIGKILL);
            if let Some(s) = self.shutdown.as_mut() {
                s.final_deadline = None;
                s.phase = ShutdownPhase::Kill;
                s.deadline = now.checked_add(Duration::from_secs(5));
            }
            self.reap();
            if !self.has_children {
                self.finish();
            }
            return;
        }
        match shutdown.phase {
            ShutdownPhase::Services => {
                let busy = self
                    .services
                    .values()
                    .any(|s| !s.life.state.is_settled() || s.stop_pending);
                if busy {
                    return;
                }
                self.reap();
                if !self.has_children {
                    return self.finish();
                }
                console::log(
                    Level::Info,
                    "services stopped; sending SIGTERM to remaining processes",
                );
                self.signal_remaining(libc::SIGTERM);
                self.signal_remaining(libc::SIGCONT);
                let timeout = self.settings.config.shutdown.timeout;
                if let Some(s) = self.shutdown.as_mut() {
                    s.phase = ShutdownPhase::Term;
                    s.deadline = now.checked_add(timeout);
                }
                self.reap();
                if !self.has_children {
                    self.finish();
                }
            }
            ShutdownPhase::Term | ShutdownPhase::Kill => {
                if !self.has_children {
                    return self.finish();
                }
                if shutdown.deadline.is_some_and(|d| d <= now) {
                    if shutdown.phase == ShutdownPhase::Term {
                        console::log(Level::Warn, "processes still running; sending SIGKILL");
                        self.signal_remaining(libc::SIGKILL);
                        if let Some(s) = self.shutdown.as_mut() {
                            s.phase = ShutdownPhase::Kill;
                            s.deadline = now.checked_add(Duration::from_secs(5));
                        }
                        self.reap();
                        if !self.has_children {
                            self.finish();
                        }
                    } else {
                        console::log(Level::Error, "processes survive SIGKILL; ending anyway");
                        self.finish();
                    }
                }
            }
        }
    }

    /// Signals every process init is responsible for. As PID 1 that is
    /// everyone (`kill(-1)` spares init itself); as a subreaper only our own
    /// descendants, never the rest of the machine.
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

    fn finish(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            self.drain_pipes();
            self.finished = Some(shutdown.ending);
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

    pub fn epoll(&self) -> &Epoll {
        &self.epoll
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_some()
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
        let svc = self.services.get(name)?;
        (svc.spec.kill_mode != crate::spec::KillMode::Process)
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

fn describe(exit: Exit) -> String {
    exit.describe()
}

fn ending_name(ending: &Ending) -> String {
    match ending {
        Ending::Poweroff => "poweroff".into(),
        Ending::Reboot => "reboot".into(),
        Ending::Exit(status) => format!("exit {status}"),
    }
}

fn report_diagnostics(diags: &[crate::diag::Diagnostic]) {
    for d in diags {
        let level = match d.severity {
            crate::diag::Severity::Error => Level::Error,
            crate::diag::Severity::Warning => Level::Warn,
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
