//! The orchestrator: every decision about *which* service starts or stops
//! *when*, as one pure state machine, `Engine::handle(input, now) ->
//! effects`. Beside [`lifecycle`] (one service's life) and [`graph`] (who
//! depends on whom), it owns the services' records, which process belongs
//! to which service, the requests waiting for their dependencies, reload
//! diffs, the shutdown and its phases, and the end. No I/O, no clock:
//! the event loop turns the world into [`Input`]s and carries out the
//! [`Effect`]s; it decides nothing.
//!
//! `handle` is total: no input, in any state, can make it panic (the
//! crate denies the panicking shortcuts, and `orchestrator_tests.rs`
//! drives it through every request in every state and through sequences
//! of reloads). A service's own state machine runs on a copy that is kept
//! only if it returns: should it ever panic, that service alone is failed,
//! in a state that is true (its processes are killed), and nothing is
//! left half-applied.
//!
//! [`lifecycle`]: crate::engine::lifecycle
//! [`graph`]: crate::engine::graph

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::engine::graph::{self, DepState, Deps, Gate};
use crate::engine::lifecycle::{Action, Event, Failure, Life, Proc, State};
use crate::model::config::Level;
use crate::model::duration;
use crate::model::spec::{EndAction, ServiceSpec, ServiceType};
pub use crate::model::{Ending, Exit, Mode, Pid};

/// What the engine needs besides the service files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub mode: Mode,
    /// `shutdown.timeout`: the default `TimeoutStopSec`, and how long the
    /// processes left after the services get between SIGTERM and SIGKILL.
    pub stop_timeout: Duration,
    /// `shutdown.final_timeout`: the bound on a whole shutdown.
    pub final_timeout: Duration,
    /// After the services, wait for the processes left (SIGTERM, then
    /// SIGKILL after `stop_timeout`). One-command mode does not: like
    /// dumb-init it sends them SIGTERM and ends at once.
    pub wait_for_leftovers: bool,
}

/// What a service waits for the scheduler to do: the explicit form of
/// "start me once my dependencies are ready" and "stop me once what is
/// ordered after me is down".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    None,
    /// Start once what it waits for is ready (or fail if that failed).
    Start,
    /// Stop once what is ordered after it is down.
    Stop,
    /// Stop (if up) once what is ordered after it is down, then start.
    Restart,
    /// A restart's stop was sent: start once it is down.
    Restarting,
}

/// One service's record.
#[derive(Debug, Clone)]
pub struct Unit {
    pub spec: ServiceSpec,
    /// A changed file, used from the next start on.
    pub next_spec: Option<ServiceSpec>,
    pub life: Life,
    pub deps: Deps,
    pub pending: Pending,
    /// What a pending start waits for, for `initctl status`.
    pub waiting_for: Option<String>,
    /// `STATUS=` of a notify service.
    pub status_text: Option<String>,
    /// Removed from the directory: forgotten once down.
    removed: bool,
}

impl Unit {
    fn new(spec: ServiceSpec, now: Instant) -> Self {
        Self {
            spec,
            next_spec: None,
            life: Life::new(now),
            deps: Deps::default(),
            pending: Pending::None,
            waiting_for: None,
            status_text: None,
            removed: false,
        }
    }

    /// The state `initctl` shows: a queued start is already "starting".
    pub fn state_name(&self) -> &'static str {
        match (self.pending, &self.life.state) {
            (Pending::Start, State::Stopping { .. }) => "stopping",
            (Pending::Start, _) => "starting",
            _ => self.life.state.name(),
        }
    }

    /// Whether a request on it has nothing left to wait for.
    pub fn is_pending(&self) -> bool {
        self.pending != Pending::None
    }

    fn dep_state(&self) -> DepState {
        if self.is_pending() {
            return DepState::Pending;
        }
        match &self.life.state {
            State::Starting { .. } | State::Stopping { .. } | State::Waiting { .. } => {
                DepState::Pending
            }
            State::Running { .. } | State::Reloading { .. } | State::Exited { active: true } => {
                DepState::Ready
            }
            State::Exited { active: false } => DepState::Exited,
            State::Stopped => DepState::Stopped,
            State::Failed { .. } => DepState::Failed,
        }
    }

    /// Stopping, or waiting for the stop gate (what the services ordered
    /// before it wait for).
    fn is_stopping_or_about_to(&self) -> bool {
        matches!(self.life.state, State::Stopping { .. })
            || self.pending == Pending::Stop
            || (self.pending == Pending::Restart && !self.life.state.is_settled())
    }

    /// Up, as a start request sees it: nothing to start.
    fn is_active(&self) -> bool {
        matches!(
            self.life.state,
            State::Running { .. }
                | State::Reloading { .. }
                | State::Starting { .. }
                | State::Exited { active: true }
        )
    }

    /// The spec a next start would use.
    fn effective_spec(&self) -> &ServiceSpec {
        self.next_spec.as_ref().unwrap_or(&self.spec)
    }
}

/// A request of `initctl` (or SIGHUP-free equivalents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Start it and what it requires and wants.
    Start(String),
    /// Stop it and what requires it, dependents first.
    Stop(String),
    /// Stop it and what requires it, then start them all again.
    Restart(String),
    /// Run its `ExecReload` (`initctl reload NAME`).
    Reload(String),
    /// Send `signal` to its main process, or to all of its processes.
    Kill {
        name: String,
        signal: i32,
        all: bool,
    },
}

/// An exit the reaper collected, with what the loop saw of its process
/// group once every zombie of the batch was gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub pid: Pid,
    pub exit: Exit,
    pub group_alive: bool,
}

/// A start that could not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnFailure {
    pub reason: String,
    /// The shell's convention: 127 not found, 126 other.
    pub status: i32,
    /// Out of processes, memory or descriptors: retried with backoff.
    pub transient: bool,
}

/// The service files as read from the directory (plus `main`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceSet {
    pub services: Vec<ServiceSpec>,
    /// Names whose file exists but could not be read: a running service
    /// of that name is left alone by a reload.
    pub broken: BTreeSet<String>,
}

/// Everything the world tells the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The services at start.
    Load(ServiceSet),
    /// The services after `initctl reload` (or SIGHUP).
    Reload(ServiceSet),
    Request(Request),
    /// The result of an [`Effect::Spawn`].
    Spawned {
        service: String,
        result: Result<Pid, SpawnFailure>,
    },
    /// One batch of the reaper (only processes the engine knows), and
    /// whether init still has children.
    Reaped {
        exits: Vec<Reaped>,
        children_left: bool,
    },
    /// The process group of a stopping service has no member left.
    GroupEmpty(String),
    /// A message on the notify socket: the sender's pid (from the kernel),
    /// its process group, and the fields (or why they are garbage).
    Notify {
        pid: Pid,
        pgid: Option<Pid>,
        fields: Result<Vec<(String, String)>, String>,
        facts: NotifyFacts,
    },
    /// The clock reached [`Engine::next_deadline`].
    Tick,
    /// The answer to an [`Effect::FindMainPid`].
    MainPid {
        service: String,
        result: Result<Pid, String>,
    },
    /// SIGTERM/SIGINT/SIGPWR, `initctl poweroff`/`reboot`.
    Shutdown {
        ending: Ending,
        reason: String,
    },
    /// Init lost track of a service (a panic while carrying out its
    /// effects): fail it, killing its processes and `pids`.
    Abandon {
        service: String,
        reason: String,
        pids: Vec<Pid>,
    },
}

/// What the loop found out about a notify message's sender (and about the
/// process a `MAINPID=` names), for `NotifyAccess=` and for checking that
/// a claimed main process belongs to the service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyFacts {
    /// The sender's session.
    pub session: Option<Pid>,
    /// The service whose cgroup holds the sender (cgroup tracking only).
    pub cgroup: Option<String>,
    /// The process `MAINPID=` names, when it is alive.
    pub claimed: Option<Claimed>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    pub pid: Pid,
    pub pgid: Option<Pid>,
    pub session: Option<Pid>,
    pub cgroup: Option<String>,
}

/// Warnings anyone can trigger: the loop rate-limits them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Noise {
    /// A notify datagram from a process of no notify service.
    ForeignNotify { pid: Pid },
    /// A notify datagram that is not sd_notify's format.
    GarbageNotify {
        service: String,
        pid: Pid,
        reason: String,
    },
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

/// Everything the engine asks of the world.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Start a process of the service (its current spec); the result comes
    /// back as [`Input::Spawned`].
    Spawn {
        service: String,
        proc: Proc,
    },
    /// Signal a process of the service, or its whole group (its cgroup
    /// when it has one).
    Signal {
        service: String,
        pid: Pid,
        group: bool,
        signal: i32,
    },
    /// Signal the process group of a command that runs beside the main
    /// process: never the service's cgroup.
    SignalControl {
        service: String,
        pid: Pid,
        signal: i32,
    },
    /// Signal every process init is responsible for.
    SignalRemaining(i32),
    /// Find the main pid of a forking daemon whose start command
    /// (`starter`) ended; the answer comes back as [`Input::MainPid`].
    FindMainPid {
        service: String,
        starter: Pid,
    },
    Log(Level, String),
    Noise(Noise),
    /// The answer to a [`Request`]: refused with a reason, or accepted
    /// (`Ok` holds the service's name: the answer is its state once every
    /// effect, spawns included, has been carried out).
    Answer(Result<String, String>),
    Reloaded(ReloadDiff),
    /// A removed service is gone: drop what the loop keeps for it.
    Forget(String),
    /// The service went down (stopped, ended, failed, or waiting for a
    /// restart): remove what init made for its run, its
    /// `RuntimeDirectory=` entries (below `/run`), and its `PIDFile=`.
    Cleanup {
        service: String,
        runtime_directories: Vec<String>,
        pid_file: Option<std::path::PathBuf>,
    },
    /// Init's end: the loop stops and init ends this way.
    Finish(Ending),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Services are being stopped in order.
    Services,
    /// SIGTERM sent to every remaining process.
    Term,
    /// SIGKILL sent.
    Kill,
}

/// Why init is ending: the first reason given, and the service whose end
/// it is (with its status), if one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndCause {
    pub reason: String,
    pub service: Option<String>,
    pub status: Option<i32>,
}

#[derive(Debug, Clone)]
struct Shutdown {
    ending: Ending,
    cause: EndCause,
    phase: Phase,
    deadline: Option<Instant>,
    /// `final_timeout` after the start; `None`: no bound, or passed.
    final_deadline: Option<Instant>,
}

/// The orchestrator's whole state.
#[derive(Debug)]
pub struct Engine {
    settings: Settings,
    units: BTreeMap<String, Unit>,
    /// Every live process init started, by pid: its service.
    procs: HashMap<Pid, String>,
    shutdown: Option<Shutdown>,
    finished: bool,
    /// Why it finished, kept once the shutdown is over.
    ended_because: Option<EndCause>,
    children_left: bool,
    /// Something changed that the scheduler must look at.
    dirty: bool,
}

type Out = Vec<Effect>;

impl Engine {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            units: BTreeMap::new(),
            procs: HashMap::new(),
            shutdown: None,
            finished: false,
            ended_because: None,
            children_left: true,
            dirty: false,
        }
    }

    // ---- the read-only view ----

    pub fn units(&self) -> impl Iterator<Item = (&String, &Unit)> {
        self.units.iter()
    }

    pub fn unit(&self, name: &str) -> Option<&Unit> {
        self.units.get(name)
    }

    /// The service a live process belongs to.
    pub fn owner(&self, pid: Pid) -> Option<&str> {
        self.procs.get(&pid).map(String::as_str)
    }

    /// The processes of `service` init knows alive.
    pub fn processes_of<'a>(&'a self, service: &'a str) -> impl Iterator<Item = Pid> + 'a {
        self.procs
            .iter()
            .filter(move |(_, s)| s.as_str() == service)
            .map(|(p, _)| *p)
    }

    /// Stopping services whose main process is gone while its group was
    /// last seen alive: the loop looks whether the group still has members.
    pub fn groups_to_watch(&self) -> Vec<(String, Pid)> {
        self.units
            .iter()
            .filter_map(|(name, u)| match u.life.state {
                State::Stopping {
                    main: None,
                    group: Some(g),
                    group_alive: true,
                    ..
                } => Some((name.clone(), g)),
                _ => None,
            })
            .collect()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    /// Why init is ending, once it is.
    pub fn end_cause(&self) -> Option<&EndCause> {
        self.shutdown
            .as_ref()
            .map(|s| &s.cause)
            .or(self.ended_because.as_ref())
    }

    pub fn mode(&self) -> Mode {
        self.settings.mode
    }

    /// The earliest time the engine wants a [`Input::Tick`].
    pub fn next_deadline(&self) -> Option<Instant> {
        let units = self.units.values().filter_map(|u| u.life.deadline());
        let shutdown = self
            .shutdown
            .iter()
            .flat_map(|s| s.deadline.into_iter().chain(s.final_deadline));
        units.chain(shutdown).min()
    }

    // ---- the one transition function ----

    /// Applies one input and settles what follows from it (the scheduler,
    /// the shutdown); returns what the world must do, in order.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        let mut answer_for = None;
        match input {
            Input::Load(set) => self.load(set, now, &mut out),
            Input::Reload(set) => self.reload(set, now, &mut out),
            Input::Request(request) => answer_for = self.request(request, now, &mut out),
            Input::Spawned { service, result } => self.spawned(&service, result, now, &mut out),
            Input::Reaped {
                exits,
                children_left,
            } => self.reaped(exits, children_left, now, &mut out),
            Input::GroupEmpty(service) => self.deliver(&service, Event::GroupEmpty, now, &mut out),
            Input::Notify {
                pid,
                pgid,
                fields,
                facts,
            } => self.notify(pid, pgid, fields, facts, now, &mut out),
            Input::Tick => self.tick(now, &mut out),
            Input::MainPid { service, result } => {
                let forked = self.units.get(&service).is_some_and(|u| {
                    matches!(
                        u.life.state,
                        State::Starting {
                            step: crate::engine::lifecycle::StartStep::Forked(_),
                            ..
                        }
                    )
                });
                // Never another service's process.
                let result = match result {
                    Ok(pid) => match self.procs.get(&pid) {
                        Some(owner) if *owner != service => {
                            Err(format!("pid {pid} is a process of service {owner}"))
                        }
                        _ => Ok(pid),
                    },
                    Err(e) => Err(e),
                };
                if let (Ok(pid), true) = (&result, forked) {
                    self.procs.insert(*pid, service.clone());
                }
                self.deliver(&service, Event::MainPid(result), now, &mut out)
            }
            Input::Shutdown { ending, reason } => {
                self.begin_shutdown(ending, &reason, now, &mut out)
            }
            Input::Abandon {
                service,
                reason,
                pids,
            } => self.abandon(&service, &reason, &pids, now, &mut out),
        }
        self.settle(now, &mut out);
        if let Some(answer) = answer_for {
            out.push(Effect::Answer(answer));
        }
        out
    }

    /// The scheduler until nothing moves, then the shutdown's progress.
    fn settle(&mut self, now: Instant, out: &mut Out) {
        if self.dirty {
            self.schedule(now, out);
        }
        self.progress_shutdown(now, out);
    }

    // ---- loading ----

    fn load(&mut self, set: ServiceSet, now: Instant, out: &mut Out) {
        for mut spec in set.services {
            spec.timeout_stop.get_or_insert(self.settings.stop_timeout);
            self.units.insert(spec.name.clone(), Unit::new(spec, now));
        }
        let n = self.units.len();
        out.push(Effect::Log(
            Level::Info,
            format!("supervising {n} service{}", if n == 1 { "" } else { "s" }),
        ));
        let refused = self.rebuild_graph(out);
        let names: Vec<String> = self.units.keys().cloned().collect();
        for name in names {
            match refused.get(&name) {
                Some(reason) => self.deliver(
                    &name,
                    Event::Refuse {
                        reason: reason.clone(),
                    },
                    now,
                    out,
                ),
                None => {
                    if let Some(u) = self.units.get_mut(&name) {
                        u.pending = Pending::Start;
                    }
                }
            }
        }
        self.dirty = true;
    }

    /// Recomputes every service's edges from the files as they are now (a
    /// changed file's dependencies count at once, though its other
    /// settings wait for its next start); returns the services that cannot
    /// start (cycles, missing requirements) with their reasons.
    fn rebuild_graph(&mut self, out: &mut Out) -> BTreeMap<String, String> {
        let (deps, problems) = graph::build(
            self.units
                .values()
                .filter(|u| !u.removed)
                .map(Unit::effective_spec),
        );
        for (name, missing) in &problems.missing_wants {
            out.push(Effect::Log(
                Level::Warn,
                format!("{name}: wants {missing}, which does not exist"),
            ));
        }
        for (name, unit) in self.units.iter_mut() {
            unit.deps = deps.get(name).cloned().unwrap_or_default();
        }
        problems.failures()
    }

    /// A reload: new services start, removed ones stop and are forgotten,
    /// changed ones apply at their next start. A file changed and changed
    /// back is compared with what the next start would use, so it counts
    /// as changed (back). Broken files keep their running service.
    fn reload(&mut self, set: ServiceSet, now: Instant, out: &mut Out) {
        let mut diff = ReloadDiff::default();
        let mut fresh: BTreeMap<String, ServiceSpec> = set
            .services
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let current: Vec<String> = self.units.keys().cloned().collect();
        for name in &current {
            if fresh.contains_key(name) || set.broken.contains(name) {
                continue;
            }
            diff.removed.push(name.clone());
            let settled = self
                .units
                .get(name)
                .is_some_and(|u| u.life.state.is_settled() && u.pending != Pending::Start);
            if settled {
                self.forget(name, out);
            } else {
                if let Some(u) = self.units.get_mut(name) {
                    u.removed = true;
                }
                self.stop_request(name);
            }
        }
        let mut added = Vec::new();
        for (name, mut spec) in std::mem::take(&mut fresh) {
            spec.timeout_stop.get_or_insert(self.settings.stop_timeout);
            match self.units.get_mut(&name) {
                Some(unit) => {
                    if *unit.effective_spec() != spec {
                        diff.changed.push(name.clone());
                        unit.next_spec = (unit.spec != spec).then_some(spec);
                    }
                }
                None => {
                    diff.added.push(name.clone());
                    self.units.insert(name.clone(), Unit::new(spec, now));
                    added.push(name);
                }
            }
        }
        let refused = self.rebuild_graph(out);
        for name in added {
            match refused.get(&name) {
                Some(reason) => self.deliver(
                    &name,
                    Event::Refuse {
                        reason: reason.clone(),
                    },
                    now,
                    out,
                ),
                None if self.shutdown.is_none() => {
                    if let Some(u) = self.units.get_mut(&name) {
                        u.pending = Pending::Start;
                    }
                }
                None => {}
            }
        }
        self.dirty = true;
        out.push(Effect::Reloaded(diff));
    }

    // ---- requests ----

    /// Marks what the request asks; `Err` refuses it, `Ok(name)` is
    /// answered with the service's state once the scheduler has run.
    fn request(
        &mut self,
        request: Request,
        now: Instant,
        out: &mut Out,
    ) -> Option<Result<String, String>> {
        let (name, allowed_in_shutdown) = match &request {
            Request::Start(n) | Request::Restart(n) | Request::Reload(n) => (n.clone(), false),
            Request::Stop(n) | Request::Kill { name: n, .. } => (n.clone(), true),
        };
        if self.shutdown.is_some() && !allowed_in_shutdown {
            return Some(Err("init is shutting down".into()));
        }
        let Some(unit) = self.units.get(&name) else {
            return Some(Err(format!("no such service: {name}")));
        };
        match request {
            Request::Start(n) => self.start_request(&n),
            Request::Stop(n) => self.stop_request(&n),
            Request::Restart(n) => self.restart_request(&n),
            Request::Reload(n) => {
                if unit.spec.exec_reload.is_empty() {
                    return Some(Err(format!("{n} has no ExecReload= to reload it with")));
                }
                if !matches!(unit.life.state, State::Running { .. }) || unit.is_pending() {
                    return Some(Err(format!("{n} is {}, not running", unit.state_name())));
                }
                self.deliver(&n, Event::Reload, now, out);
            }
            Request::Kill {
                name: n,
                signal,
                all,
            } => {
                let Some(pid) = unit.life.state.main_pid() else {
                    return Some(Err(format!(
                        "{n} is {}: no main process to signal",
                        unit.state_name()
                    )));
                };
                let whom = if all {
                    "every process"
                } else {
                    "the main process"
                };
                out.push(Effect::Log(
                    Level::Info,
                    format!(
                        "{n}: sending {} to {whom} (pid {pid}) on request",
                        crate::model::spec::signal_name(signal)
                    ),
                ));
                out.push(Effect::Signal {
                    service: n,
                    pid,
                    group: all,
                    signal,
                });
            }
        }
        self.dirty = true;
        Some(Ok(name))
    }

    /// The service and what it requires and wants: each that is not up
    /// starts; the target's pending stop or restart is cancelled.
    fn start_request(&mut self, name: &str) {
        self.walk(name, |is_target, unit| {
            if !unit.is_active() {
                unit.pending = Pending::Start;
            } else if is_target {
                unit.pending = Pending::None;
            }
            unit.deps
                .requires
                .iter()
                .chain(&unit.deps.wants)
                .cloned()
                .collect()
        });
    }

    /// The service and what requires it: each that is not down stops.
    fn stop_request(&mut self, name: &str) {
        self.walk(name, |is_target, unit| {
            unit.waiting_for = None;
            unit.pending = if !unit.life.state.is_settled() || is_target {
                Pending::Stop
            } else {
                Pending::None
            };
            unit.deps.required_by.iter().cloned().collect()
        });
    }

    /// The service and what requires it (if up): stop, then start again
    /// through the scheduler, so a changed file and the dependencies apply
    /// as at any start.
    fn restart_request(&mut self, name: &str) {
        self.walk(name, |is_target, unit| {
            let up = !unit.life.state.is_settled() || unit.pending == Pending::Start;
            if !(up || is_target) {
                return Vec::new();
            }
            unit.pending = Pending::Restart;
            unit.deps.required_by.iter().cloned().collect()
        });
    }

    /// Visits `name`, then every service the visit names, once each.
    fn walk(&mut self, name: &str, mut visit: impl FnMut(bool, &mut Unit) -> Vec<String>) {
        let mut todo = vec![name.to_string()];
        let mut seen = BTreeSet::new();
        while let Some(n) = todo.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            if let Some(unit) = self.units.get_mut(&n) {
                todo.extend(visit(n == name, unit));
            }
        }
    }
}

mod notify;
mod schedule;
mod shutdown;

/// A panic's message, from its payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests;
