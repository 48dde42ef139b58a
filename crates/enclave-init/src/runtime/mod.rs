//! The imperative shell: one thread, one `epoll` loop over a signalfd, a
//! timerfd armed for the earliest deadline, the console, the control and
//! notify sockets and the services' output pipes. Idle means no wakeups.
//!
//! It decides nothing: it turns the world into [`Input`]s for the
//! [`Engine`] (the orchestrator) and carries out the [`Effect`]s it
//! returns: starting processes, sending signals, logging. It is the only
//! place that waits for children (the one reaper).

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, RawFd};
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
use crate::model::spec;
use crate::model::Level;
pub use crate::model::{Ending, Mode};
use crate::model::{Exit, Pid, Settings};
use crate::proto::{BootReport, ReloadReport, Response};
use crate::sys;
use control::{Control, Step, Task, Token, View};
use notify::NotifySocket;

mod accounts;
pub mod control;
mod daemons;
mod entropy;
pub mod notify;
pub mod parent;
mod pipes;
mod processes;
mod sources;
pub mod spawn;

pub use processes::descendants;

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
const TOKEN_ENTROPY: u64 = 6;
const TOKEN_PID_FILES: u64 = 7;
const TOKEN_PARENT: u64 = 8;
const TOKEN_KIND: u64 = 0xffff << 48;
const TOKEN_PIPE: u64 = 1 << 48;
const TOKEN_CLIENT: u64 = 2 << 48;
const TOKEN_PARENT_CLIENT: u64 = 3 << 48;
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
    pipes: pipes::Pipes,
    notify: Option<NotifySocket>,
    control: Option<Control>,
    finished: Option<Ending>,
    has_children: bool,
    /// Reap before the next wait: the engine waits for the last child,
    /// which may be gone already.
    check_children: bool,
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
    /// The entropy gate, while it holds the services back.
    entropy: Option<entropy::Waiting>,
    /// The services were handed to the engine (once, at start or when
    /// the entropy gate opens).
    services_loaded: bool,
    /// How init came up, for `initctl boot`.
    boot_report: BootReport,
    /// PID files of forking daemons not written yet.
    pid_files: daemons::PidFiles,
    /// The parent channel, when the image's config has `[parent]`.
    parent: Option<parent::Server>,
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
        let settings_mode = settings.mode;
        let engine = Engine::new(crate::engine::orchestrator::Settings {
            mode: settings.mode,
            stop_timeout: settings.config.shutdown.timeout,
            final_timeout: settings.config.shutdown.final_timeout,
            wait_for_leftovers: settings.one_command.is_none(),
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
            pipes: pipes::Pipes::default(),
            notify: None,
            control: None,
            finished: None,
            has_children: true,
            check_children: false,
            is_pid1,
            recovering: false,
            recoveries_in_a_row: 0,
            in_flight: None,
            in_engine: false,
            foreign_notify: RateLimit::new(NOTIFY_WARNINGS.0, NOTIFY_WARNINGS.1),
            garbage_notify: RateLimit::new(NOTIFY_WARNINGS.0, NOTIFY_WARNINGS.1),
            entropy: None,
            services_loaded: false,
            boot_report: BootReport {
                version: env!("CARGO_PKG_VERSION").into(),
                mode: match settings_mode {
                    Mode::Boot => "boot",
                    Mode::NoBoot => "no-boot",
                }
                .into(),
                ..BootReport::default()
            },
            pid_files: daemons::PidFiles::default(),
            parent: None,
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
        Ok(supervisor)
    }

    /// What the boot found (NSM, heartbeat, its duration), for `initctl
    /// boot`; the entropy gate's part is the runtime's own.
    pub fn set_boot_report(&mut self, report: BootReport) {
        let entropy = std::mem::take(&mut self.boot_report.entropy);
        self.boot_report = BootReport { entropy, ..report };
    }

    /// The notify socket, created when the first service that talks on it
    /// appears (`Type=notify`, a watchdog, `NotifyAccess=`): a start
    /// (`-- CMD` above all) makes only what it needs.
    fn ensure_notify_socket(&mut self, set: &ServiceSet) {
        if self.notify.is_some() || !set.services.iter().any(spec::ServiceSpec::uses_notify) {
            return;
        }
        let notify_path = notify_path_for(&self.settings.config.control.socket);
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
    }

    /// The control socket, created once the services have started: their
    /// start does not wait for it.
    fn open_control_socket(&mut self) {
        let socket_path = self.settings.config.control.socket.clone();
        match Control::bind(&socket_path, TOKEN_CLIENT) {
            Ok(ctl) if self.watch(ctl.listener_fd(), TOKEN_CONTROL, "control socket") => {
                self.control = Some(ctl)
            }
            Ok(_) => {}
            Err(e) => console::log(
                // One-command mode is silent but for errors of the command;
                // initctl is an opt-in there (`--verbose` shows this).
                if self.settings.one_command.is_some() {
                    Level::Warn
                } else {
                    Level::Error
                },
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
        let wait = panics::guarded("the entropy gate", || self.begin_entropy_gate());
        if wait.is_none() {
            self.boot_report.entropy.state = "unknown".into();
        }
        if wait != Some(true)
            && panics::guarded("loading the services", || self.load_initial()).is_none()
        {
            self.recovering = true;
        }
        // After the first starts, which do not wait for it; whatever
        // happened to them. (While the entropy gate holds them back, at
        // once: `initctl boot` says what they wait for.)
        self.guard("opening the control socket", Self::open_control_socket);
        self.guard("opening the parent channel", Self::open_parent_channel);
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
        if std::mem::take(&mut self.check_children) {
            self.guard("reaping", Self::reap);
        }
        // Before the answers and the end: what it finds may settle a
        // service someone waits for, or end init.
        self.guard("groups", Self::check_groups);
        if let Some(ending) = self.finished.take() {
            let told = ending.clone();
            self.guard("the end record", |s| s.tell_parent_the_end(told));
            return Some(ending);
        }
        self.guard("control", |s| {
            s.with_control(|ctl, sup| {
                if ctl.has_waiting() {
                    ctl.settle_waiting(&sup.view(), &sup.epoll);
                }
            })
        });
        self.guard("parent channel", Self::observe_for_parent);
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
        // A panic between the entropy gate's opening and the services'
        // load: load them now (once).
        if !self.services_loaded
            && self.entropy.is_none()
            && !self.engine.is_shutting_down()
            && self.finished.is_none()
        {
            self.load_initial();
        }
    }

    fn dispatch(&mut self, token: u64, flags: EpollFlags) {
        match token {
            TOKEN_SIGNAL => self.on_signals(),
            TOKEN_TIMER => self.on_timer(),
            TOKEN_CONSOLE => self.on_console(flags),
            TOKEN_NOTIFY => self.on_notify(),
            TOKEN_CONTROL => self.on_control_accept(),
            TOKEN_ENTROPY => self.on_entropy(),
            TOKEN_PID_FILES => self.on_pid_files(),
            TOKEN_PARENT => self.on_parent_accept(),
            t if t & TOKEN_KIND == TOKEN_PARENT_CLIENT => self.on_parent_client(t, flags),
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
                Effect::FindMainPid { service, starter } => self.find_main_pid(service, starter),
                Effect::SignalControl {
                    service,
                    pid,
                    signal,
                } => processes::signal_process(&service, pid, true, signal),
                Effect::SignalRemaining(signal) => {
                    self.signal_remaining(signal);
                    // With nothing left to signal no SIGCHLD will come:
                    // the next turn asks the kernel before waiting.
                    self.check_children = true;
                }
                Effect::Log(level, message) => console::log(level, &message),
                Effect::Noise(noise) => self.noise(noise),
                Effect::Answer(answer) => fed.answers.push(answer),
                Effect::Reloaded(diff) => fed.reloaded = Some(diff),
                Effect::Cleanup {
                    service,
                    runtime_directories,
                    pid_file,
                } => {
                    for problem in spawn::remove_runtime_directories(&runtime_directories) {
                        console::log(Level::Warn, &format!("{service}: {problem}"));
                    }
                    // A stale PID file would name a pid the next start
                    // could take for its daemon (systemd removes it too).
                    if let Some(file) = pid_file {
                        let _ = std::fs::remove_file(file);
                    }
                }
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
            boot: &self.boot_report,
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
        if self.services_loaded {
            return;
        }
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
        self.ensure_notify_socket(&set);
        if std::mem::replace(&mut self.services_loaded, true) {
            return;
        }
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
        if !self.services_loaded {
            let message = "services wait for the kernel's random pool (the entropy gate, boot.entropy): nothing to reload until they load";
            console::log(Level::Warn, &format!("reload: {message}"));
            return Err(message.into());
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
        self.ensure_notify_socket(&set);
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

fn report_diagnostics(diags: &[crate::parse::diag::Diagnostic]) {
    for d in diags {
        let level = match d.severity {
            crate::parse::diag::Severity::Error => Level::Error,
            crate::parse::diag::Severity::Warning => Level::Warn,
        };
        console::log(level, &d.to_string());
    }
}
