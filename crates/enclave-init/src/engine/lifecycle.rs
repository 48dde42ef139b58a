//! A service's life as a pure state machine: `(state, event, now) ->
//! (state, actions)`. No I/O, no clock, no processes: the supervisor carries
//! out the [`Action`]s and feeds back [`Event`]s. Every state × event pair
//! is handled explicitly, so a new state or event fails to compile until
//! each combination has been decided.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::model::config::Level;
use crate::model::duration;
use crate::model::spec::{
    signal_name, EndAction, KillMode, RestartPolicy, ServiceSpec, ServiceType, SuccessStatus,
};
use crate::model::{Exit, Pid};

/// Why a service is `failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The main process (or a start command) ended unsuccessfully.
    Exit(Exit),
    /// A command could not be started; `status` is the shell's 126/127.
    Spawn { reason: String, status: i32 },
    /// Not ready within `TimeoutStartSec`.
    StartTimeout,
    /// More starts than `StartLimitBurst` within `StartLimitIntervalSec`.
    StartLimit,
    /// Set by the supervisor for reasons outside the service itself
    /// (a dependency cycle, a missing required service).
    Dependency(String),
    /// Init lost track of the service (a panic while handling it); its
    /// processes were killed.
    Internal(String),
}

impl Failure {
    pub fn describe(&self) -> String {
        match self {
            Failure::Exit(exit) => exit.describe(),
            Failure::Spawn { reason, .. } => reason.clone(),
            Failure::StartTimeout => "start timed out".into(),
            Failure::StartLimit => "start limit hit".into(),
            Failure::Dependency(reason) => reason.clone(),
            Failure::Internal(reason) => format!("internal error: {reason}"),
        }
    }

    /// The status `exit` actions end init with.
    pub fn status(&self) -> i32 {
        match self {
            Failure::Exit(exit) => exit.status(),
            Failure::Spawn { status, .. } => *status,
            Failure::StartTimeout
            | Failure::StartLimit
            | Failure::Dependency(_)
            | Failure::Internal(_) => 1,
        }
    }
}

/// How one run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success(Option<Exit>),
    Failure(Failure),
}

/// The exit causes of systemd's `Restart=` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCause {
    Clean,
    UncleanCode,
    UncleanSignal,
    Timeout,
    /// Start limit or an outside reason: never restarted automatically.
    Final,
}

impl Outcome {
    pub fn cause(&self) -> ExitCause {
        match self {
            Outcome::Success(_) => ExitCause::Clean,
            Outcome::Failure(Failure::Exit(Exit::Code(_)) | Failure::Spawn { .. }) => {
                ExitCause::UncleanCode
            }
            Outcome::Failure(Failure::Exit(Exit::Signal(_))) => ExitCause::UncleanSignal,
            Outcome::Failure(Failure::StartTimeout) => ExitCause::Timeout,
            Outcome::Failure(
                Failure::StartLimit | Failure::Dependency(_) | Failure::Internal(_),
            ) => ExitCause::Final,
        }
    }
}

/// systemd's table: which exit causes each `Restart=` value restarts on.
pub fn restarts_on(policy: RestartPolicy, cause: ExitCause) -> bool {
    use ExitCause as C;
    use RestartPolicy as P;
    match (policy, cause) {
        (_, C::Final) | (P::No, _) => false,
        (P::Always, C::Clean | C::UncleanCode | C::UncleanSignal | C::Timeout) => true,
        (P::OnSuccess, C::Clean) => true,
        (P::OnSuccess, C::UncleanCode | C::UncleanSignal | C::Timeout) => false,
        (P::OnFailure, C::Clean) => false,
        (P::OnFailure, C::UncleanCode | C::UncleanSignal | C::Timeout) => true,
        (P::OnAbnormal, C::Clean | C::UncleanCode) => false,
        (P::OnAbnormal, C::UncleanSignal | C::Timeout) => true,
        (P::OnAbort, C::Clean | C::UncleanCode | C::Timeout) => false,
        (P::OnAbort, C::UncleanSignal) => true,
    }
}

/// systemd's meaning of success: status 0, `SuccessExitStatus`, and for
/// services other than oneshot the "clean" signals HUP, INT, TERM, PIPE.
pub fn classify(spec: &ServiceSpec, exit: Exit) -> Outcome {
    let listed = match exit {
        Exit::Code(code) => {
            code == 0
                || spec
                    .success_exit_status
                    .contains(&SuccessStatus::Code(code))
        }
        Exit::Signal(signal) => {
            spec.success_exit_status
                .contains(&SuccessStatus::Signal(signal))
                || (spec.service_type != ServiceType::Oneshot
                    && matches!(
                        signal,
                        libc::SIGHUP | libc::SIGINT | libc::SIGTERM | libc::SIGPIPE
                    ))
        }
    };
    if listed {
        Outcome::Success(Some(exit))
    } else {
        Outcome::Failure(Failure::Exit(exit))
    }
}

/// The delay before automatic restart number `n` (0-based): `RestartSec`,
/// growing exponentially to `RestartMaxDelaySec` over `RestartSteps` steps.
pub fn restart_delay(spec: &ServiceSpec, n: u32) -> Duration {
    let base = spec.restart_sec;
    let Some(max) = spec.restart_max_delay else {
        return base;
    };
    if spec.restart_steps == 0 || max <= base || max == Duration::MAX {
        return base;
    }
    let step = n.min(spec.restart_steps);
    if step == spec.restart_steps {
        return max;
    }
    // systemd: base * (max / base) ^ (step / steps), with a 1 ms floor so
    // that RestartSec=0 still grows.
    let base_s = base.as_secs_f64().max(0.001);
    let ratio = max.as_secs_f64() / base_s;
    let secs = base_s * ratio.powf(f64::from(step) / f64::from(spec.restart_steps));
    if step == 0 {
        return base;
    }
    Duration::try_from_secs_f64(secs).unwrap_or(max).min(max)
}

/// The wait before retrying a start that failed for lack of resources,
/// after `failures` such failures in a row: `RestartSec` (at least 100 ms),
/// doubling up to 10 s.
pub fn transient_delay(spec: &ServiceSpec, failures: u32) -> Duration {
    const MAX: Duration = Duration::from_secs(10);
    let base = spec.restart_sec.max(Duration::from_millis(100));
    if base >= MAX {
        return base;
    }
    base.saturating_mul(1u32 << failures.min(10)).min(MAX)
}

/// Which command of the service a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proc {
    Pre(usize),
    Main,
    Stop(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartStep {
    Pre(usize),
    Main,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopPhase {
    /// `ExecStop` command `n` runs; the main process still does.
    ExecStop(usize),
    /// `KillSignal` sent.
    Signal,
    /// SIGKILL sent.
    Kill,
}

/// What follows once a stop completes. (A restart on request is a stop
/// followed by a start, both through the supervisor's dependency queue.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterStop {
    /// Stopped on request: `stopped`.
    Stopped,
    /// The service ended by itself (or timed out) and its leftovers were
    /// cleaned up: decide with its outcome.
    Ended(Outcome),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Stopped,
    Starting {
        step: StartStep,
        /// `None` between the spawn action and its result.
        pid: Option<Pid>,
        deadline: Option<Instant>,
    },
    Running {
        pid: Pid,
    },
    Stopping {
        /// The main process while it lives.
        main: Option<Pid>,
        /// The process group of the main process, for leftovers.
        group: Option<Pid>,
        /// Members of `group` are still alive (as far as last seen).
        group_alive: bool,
        /// An `ExecStop` command or an interrupted `ExecStartPre`.
        control: Option<Pid>,
        phase: StopPhase,
        deadline: Option<Instant>,
        then: AfterStop,
    },
    /// A restart is pending.
    Waiting {
        until: Instant,
    },
    /// Ended cleanly; `active` with `RemainAfterExit`.
    Exited {
        active: bool,
    },
    Failed {
        reason: Failure,
    },
}

impl State {
    /// The name `initctl` shows (contract §8).
    pub fn name(&self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting { .. } => "starting",
            State::Running { .. } => "running",
            State::Stopping { .. } => "stopping",
            State::Waiting { .. } => "waiting",
            State::Exited { .. } => "exited",
            State::Failed { .. } => "failed",
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        match self {
            State::Starting { deadline, .. } | State::Stopping { deadline, .. } => *deadline,
            State::Waiting { until } => Some(*until),
            State::Stopped
            | State::Running { .. }
            | State::Exited { .. }
            | State::Failed { .. } => None,
        }
    }

    /// The main process, when one runs.
    pub fn main_pid(&self) -> Option<Pid> {
        match self {
            State::Starting {
                step: StartStep::Main,
                pid,
                ..
            } => *pid,
            State::Running { pid } => Some(*pid),
            State::Stopping { main, .. } => *main,
            State::Starting {
                step: StartStep::Pre(_),
                ..
            }
            | State::Stopped
            | State::Waiting { .. }
            | State::Exited { .. }
            | State::Failed { .. } => None,
        }
    }

    /// Every process the state names (main, `ExecStartPre`, `ExecStop`):
    /// exactly those init must know as this service's.
    pub fn pids(&self) -> Vec<Pid> {
        match self {
            State::Starting { pid, .. } => pid.iter().copied().collect(),
            State::Running { pid } => vec![*pid],
            State::Stopping { main, control, .. } => main.iter().chain(control).copied().collect(),
            State::Stopped
            | State::Waiting { .. }
            | State::Exited { .. }
            | State::Failed { .. } => Vec::new(),
        }
    }

    /// Ready for dependents: running, or a oneshot that remains active.
    pub fn is_ready(&self) -> bool {
        matches!(self, State::Running { .. } | State::Exited { active: true })
    }

    /// Down for good until someone starts it: nothing runs, nothing pending.
    pub fn is_settled(&self) -> bool {
        matches!(
            self,
            State::Stopped | State::Exited { .. } | State::Failed { .. }
        )
    }
}

/// What the supervisor must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a process; the result comes back as `Spawned` or `SpawnFailed`.
    Spawn(Proc),
    /// Signal a process, or its whole process group when `group`.
    Signal {
        pid: Pid,
        group: bool,
        signal: i32,
    },
    Log(Level, String),
    /// `SuccessAction`/`FailureAction`, with the status `exit` uses.
    End(EndAction, i32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Start on request (boot, `initctl start`): clears `failed` and the start limit.
    Start,
    Stop,
    Spawned {
        pid: Pid,
    },
    /// `transient`: fork failed for lack of resources (EAGAIN); retried.
    SpawnFailed {
        reason: String,
        status: i32,
        transient: bool,
    },
    /// `READY=1` from a notify service.
    Ready,
    /// A process of this service was reaped; `group_alive` tells whether
    /// its process group still has members.
    Exited {
        pid: Pid,
        exit: Exit,
        group_alive: bool,
    },
    /// The process group of a stopping service became empty.
    GroupEmpty,
    /// `now` reached the state's deadline.
    Deadline,
    /// The supervisor will not start it: a dependency failed, is missing,
    /// or is part of a cycle.
    Refuse {
        reason: String,
    },
}

impl Event {
    /// What the event is, for log lines.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Start => "a start",
            Event::Stop => "a stop",
            Event::Spawned { .. } => "a started process",
            Event::SpawnFailed { .. } => "a failed start",
            Event::Ready => "readiness",
            Event::Exited { .. } => "an exit",
            Event::GroupEmpty => "an emptied process group",
            Event::Deadline => "a deadline",
            Event::Refuse { .. } => "a refused start",
        }
    }
}

/// A service's runtime record: its state and the history its decisions need.
#[derive(Debug, Clone)]
pub struct Life {
    pub state: State,
    /// When `state` last changed.
    pub since: Instant,
    /// Automatic restarts since the last start on request.
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    /// Start times inside the start-limit window.
    starts: VecDeque<Instant>,
    /// Starts in a row that failed for lack of resources (EAGAIN, EMFILE):
    /// their retries back off and only the first is logged as an error.
    transient_failures: u32,
}

type Actions = Vec<Action>;

impl Life {
    pub fn new(now: Instant) -> Self {
        Self {
            state: State::Stopped,
            since: now,
            restarts: 0,
            last_exit: None,
            starts: VecDeque::new(),
            transient_failures: 0,
        }
    }

    /// Puts the service in `failed` for a reason found outside it (load time).
    pub fn fail(&mut self, reason: Failure, now: Instant) {
        self.set(State::Failed { reason }, now);
    }

    fn set(&mut self, state: State, now: Instant) {
        if std::mem::discriminant(&state) != std::mem::discriminant(&self.state) {
            self.since = now;
        }
        self.state = state;
    }

    /// The one transition function.
    pub fn handle(&mut self, spec: &ServiceSpec, event: Event, now: Instant) -> Actions {
        let mut out = Vec::new();
        match event {
            Event::Start => self.on_start(spec, now, &mut out),
            Event::Stop => self.on_stop(spec, now, &mut out),
            Event::Spawned { pid } => self.on_spawned(spec, pid, now, &mut out),
            Event::SpawnFailed {
                reason,
                status,
                transient,
            } => self.on_spawn_failed(spec, reason, status, transient, now, &mut out),
            Event::Ready => self.on_ready(spec, now, &mut out),
            Event::Exited {
                pid,
                exit,
                group_alive,
            } => self.on_exited(spec, pid, exit, group_alive, now, &mut out),
            Event::GroupEmpty => self.on_group_empty(spec, now, &mut out),
            Event::Deadline => self.on_deadline(spec, now, &mut out),
            Event::Refuse { reason } => self.on_refuse(spec, reason, now, &mut out),
        }
        out
    }

    fn on_start(&mut self, spec: &ServiceSpec, now: Instant, out: &mut Actions) {
        match &mut self.state {
            State::Stopped
            | State::Exited { .. }
            | State::Failed { .. }
            | State::Waiting { .. } => {
                self.starts.clear();
                self.transient_failures = 0;
                self.restarts = 0;
                self.begin_start(spec, now, out);
            }
            // Under way, or still stopping: the supervisor queues the start
            // until the stop is over.
            State::Starting { .. } | State::Running { .. } | State::Stopping { .. } => {}
        }
    }

    fn on_stop(&mut self, spec: &ServiceSpec, now: Instant, out: &mut Actions) {
        let then = AfterStop::Stopped;
        match self.state.clone() {
            // A failed service stays failed until started, as in systemd.
            State::Failed { .. } => {}
            State::Stopped | State::Exited { .. } | State::Waiting { .. } => {
                self.set(State::Stopped, now)
            }
            State::Starting {
                step: StartStep::Pre(_),
                pid: Some(pid),
                ..
            } => {
                out.push(Action::Signal {
                    pid,
                    group: true,
                    signal: spec.kill_signal,
                });
                self.enter_stopping(spec, None, Some(pid), StopPhase::Signal, then, now);
            }
            State::Starting {
                step: StartStep::Main,
                pid: Some(pid),
                ..
            }
            | State::Running { pid } => {
                self.begin_stop(spec, pid, then, now, out);
            }
            State::Starting { pid: None, .. } => self.set(State::Stopped, now),
            State::Stopping { .. } => {
                // A stop on request overrides a pending decision about an
                // ended run: no restart after it.
                if let State::Stopping { then, .. } = &mut self.state {
                    *then = AfterStop::Stopped;
                }
            }
        }
    }

    fn on_spawned(&mut self, spec: &ServiceSpec, new_pid: Pid, now: Instant, out: &mut Actions) {
        self.transient_failures = 0;
        match &mut self.state {
            State::Starting {
                step,
                pid: pid @ None,
                ..
            } => {
                *pid = Some(new_pid);
                match step {
                    StartStep::Pre(i) => out.push(Action::Log(
                        Level::Debug,
                        format!("ExecStartPre {} started (pid {new_pid})", *i + 1),
                    )),
                    StartStep::Main => {
                        out.push(Action::Log(Level::Info, format!("started (pid {new_pid})")));
                        if spec.service_type == ServiceType::Simple {
                            self.set(State::Running { pid: new_pid }, now);
                        }
                    }
                }
            }
            State::Stopping {
                phase: StopPhase::ExecStop(_),
                control: control @ None,
                ..
            } => *control = Some(new_pid),
            State::Starting { pid: Some(_), .. }
            | State::Stopping { .. }
            | State::Stopped
            | State::Running { .. }
            | State::Waiting { .. }
            | State::Exited { .. }
            | State::Failed { .. } => {
                out.push(Action::Log(
                    Level::Warn,
                    format!(
                        "unexpected process {new_pid} in state {}",
                        self.state.name()
                    ),
                ));
            }
        }
    }

    fn on_spawn_failed(
        &mut self,
        spec: &ServiceSpec,
        reason: String,
        status: i32,
        transient: bool,
        now: Instant,
        out: &mut Actions,
    ) {
        match self.state.clone() {
            State::Starting { .. } => {
                // Out of processes or descriptors is the system's state,
                // not the service's fault: retry without spending the start
                // limit (unless RestartSec is infinity, which retries never),
                // backing off while it lasts, and say so once, not at every
                // retry: a shortage must not become a flood of lines.
                let delay = transient_delay(spec, self.transient_failures);
                let retry_at = if transient {
                    now.checked_add(delay)
                } else {
                    None
                };
                if let Some(until) = retry_at {
                    self.starts.pop_back();
                    let level = if self.transient_failures == 0 {
                        Level::Error
                    } else {
                        Level::Debug
                    };
                    self.transient_failures = self.transient_failures.saturating_add(1);
                    out.push(Action::Log(
                        level,
                        format!("{reason}; retrying in {}", duration::format(delay)),
                    ));
                    self.set(State::Waiting { until }, now);
                } else {
                    self.transient_failures = 0;
                    out.push(Action::Log(Level::Error, reason.clone()));
                    self.settle(
                        spec,
                        Outcome::Failure(Failure::Spawn { reason, status }),
                        now,
                        out,
                    );
                }
            }
            State::Stopping {
                phase: StopPhase::ExecStop(_),
                main,
                then,
                ..
            } => {
                out.push(Action::Log(Level::Warn, format!("ExecStop: {reason}")));
                match main {
                    Some(pid) => {
                        self.send_kill_signal(spec, pid, out);
                        self.enter_stopping(spec, Some(pid), None, StopPhase::Signal, then, now);
                    }
                    None => self.finish_if_done(spec, now, out),
                }
            }
            State::Stopped
            | State::Running { .. }
            | State::Stopping { .. }
            | State::Waiting { .. }
            | State::Exited { .. }
            | State::Failed { .. } => out.push(Action::Log(Level::Warn, reason)),
        }
    }

    fn on_ready(&mut self, spec: &ServiceSpec, now: Instant, out: &mut Actions) {
        match self.state {
            State::Starting {
                step: StartStep::Main,
                pid: Some(pid),
                ..
            } if spec.service_type == ServiceType::Notify => {
                out.push(Action::Log(Level::Info, "ready".into()));
                self.set(State::Running { pid }, now);
            }
            State::Starting { .. }
            | State::Stopped
            | State::Running { .. }
            | State::Stopping { .. }
            | State::Waiting { .. }
            | State::Exited { .. }
            | State::Failed { .. } => {}
        }
    }

    fn on_exited(
        &mut self,
        spec: &ServiceSpec,
        pid: Pid,
        exit: Exit,
        group_alive: bool,
        now: Instant,
        out: &mut Actions,
    ) {
        match self.state.clone() {
            State::Starting {
                step: StartStep::Pre(i),
                pid: Some(p),
                deadline,
            } if p == pid => {
                let command = spec.exec_start_pre.get(i);
                let ignore = command.is_some_and(|c| c.ignore_failure);
                match classify(spec, exit) {
                    Outcome::Success(_) => {}
                    Outcome::Failure(_) if ignore => {
                        out.push(Action::Log(
                            Level::Info,
                            format!("ExecStartPre {} {} (ignored)", i + 1, exit.describe()),
                        ));
                    }
                    Outcome::Failure(f) => {
                        out.push(Action::Log(
                            Level::Error,
                            format!("ExecStartPre {} {}", i + 1, exit.describe()),
                        ));
                        self.last_exit = Some(exit);
                        self.settle(spec, Outcome::Failure(f), now, out);
                        return;
                    }
                }
                let step = if i + 1 < spec.exec_start_pre.len() {
                    StartStep::Pre(i + 1)
                } else {
                    StartStep::Main
                };
                out.push(Action::Spawn(match step {
                    StartStep::Pre(n) => Proc::Pre(n),
                    StartStep::Main => Proc::Main,
                }));
                self.set(
                    State::Starting {
                        step,
                        pid: None,
                        deadline,
                    },
                    now,
                );
            }
            State::Starting {
                step: StartStep::Main,
                pid: Some(p),
                ..
            }
            | State::Running { pid: p }
                if p == pid =>
            {
                self.main_ended(spec, pid, exit, group_alive, now, out);
            }
            State::Stopping { main: Some(p), .. } if p == pid => {
                self.last_exit = Some(exit);
                out.push(Action::Log(
                    Level::Info,
                    format!("main process {}", exit.describe()),
                ));
                if let State::Stopping {
                    main,
                    group_alive: alive,
                    ..
                } = &mut self.state
                {
                    *main = None;
                    *alive = group_alive;
                }
                self.finish_if_done(spec, now, out);
            }
            State::Stopping {
                control: Some(c),
                phase,
                main,
                then,
                ..
            } if c == pid => {
                if let State::Stopping { control, .. } = &mut self.state {
                    *control = None;
                }
                match (phase, main) {
                    (StopPhase::ExecStop(i), Some(main)) => {
                        if !matches!(classify(spec, exit), Outcome::Success(_)) {
                            out.push(Action::Log(
                                Level::Warn,
                                format!("ExecStop {} {}", i + 1, exit.describe()),
                            ));
                        }
                        if i + 1 < spec.exec_stop.len() {
                            out.push(Action::Spawn(Proc::Stop(i + 1)));
                            if let State::Stopping { phase, .. } = &mut self.state {
                                *phase = StopPhase::ExecStop(i + 1);
                            }
                        } else {
                            self.send_kill_signal(spec, main, out);
                            self.enter_stopping(
                                spec,
                                Some(main),
                                None,
                                StopPhase::Signal,
                                then,
                                now,
                            );
                        }
                    }
                    (StopPhase::ExecStop(_) | StopPhase::Signal | StopPhase::Kill, _) => {
                        self.finish_if_done(spec, now, out)
                    }
                }
            }
            State::Starting { .. }
            | State::Running { .. }
            | State::Stopping { .. }
            | State::Stopped
            | State::Waiting { .. }
            | State::Exited { .. }
            | State::Failed { .. } => {}
        }
    }

    fn on_group_empty(&mut self, spec: &ServiceSpec, now: Instant, out: &mut Actions) {
        match &mut self.state {
            State::Stopping { group_alive, .. } => {
                *group_alive = false;
                self.finish_if_done(spec, now, out);
            }
            State::Stopped
            | State::Starting { .. }
            | State::Running { .. }
            | State::Waiting { .. }
            | State::Exited { .. }
            | State::Failed { .. } => {}
        }
    }

    fn on_deadline(&mut self, spec: &ServiceSpec, now: Instant, out: &mut Actions) {
        if self.state.deadline().is_none_or(|d| d > now) {
            return;
        }
        match self.state.clone() {
            State::Starting { step, pid, .. } => {
                out.push(Action::Log(
                    Level::Error,
                    format!(
                        "not ready within TimeoutStartSec={}",
                        duration::format(spec.timeout_start)
                    ),
                ));
                let then = AfterStop::Ended(Outcome::Failure(Failure::StartTimeout));
                match (step, pid) {
                    (StartStep::Main, Some(pid)) => {
                        self.send_kill_signal(spec, pid, out);
                        self.enter_stopping(spec, Some(pid), None, StopPhase::Signal, then, now);
                    }
                    (StartStep::Pre(_), Some(pid)) => {
                        out.push(Action::Signal {
                            pid,
                            group: true,
                            signal: spec.kill_signal,
                        });
                        self.enter_stopping(spec, None, Some(pid), StopPhase::Signal, then, now);
                    }
                    (StartStep::Pre(_) | StartStep::Main, None) => {
                        self.settle(spec, Outcome::Failure(Failure::StartTimeout), now, out)
                    }
                }
            }
            State::Stopping {
                phase: StopPhase::ExecStop(_),
                main,
                control,
                then,
                ..
            } => {
                out.push(Action::Log(
                    Level::Warn,
                    "ExecStop did not finish in time".into(),
                ));
                if let Some(c) = control {
                    out.push(Action::Signal {
                        pid: c,
                        group: true,
                        signal: libc::SIGKILL,
                    });
                }
                match main {
                    Some(pid) => {
                        self.send_kill_signal(spec, pid, out);
                        self.enter_stopping(spec, Some(pid), control, StopPhase::Signal, then, now);
                    }
                    None => self.escalate(spec, now, out),
                }
            }
            State::Stopping {
                phase: StopPhase::Signal,
                ..
            } => {
                out.push(Action::Log(
                    Level::Warn,
                    format!(
                        "still running {} after {}; sending SIGKILL",
                        duration::format(spec.stop_timeout()),
                        signal_name(spec.kill_signal)
                    ),
                ));
                self.escalate(spec, now, out);
            }
            State::Stopping {
                phase: StopPhase::Kill,
                main,
                then,
                ..
            } => {
                out.push(Action::Log(
                    Level::Error,
                    format!(
                        "processes survive SIGKILL (pid {}); giving up on them",
                        main.map_or("-".into(), |p| p.to_string())
                    ),
                ));
                self.finish_stop(spec, then, now, out);
            }
            State::Waiting { .. } => {
                self.begin_start(spec, now, out);
                if matches!(self.state, State::Starting { .. }) {
                    self.restarts = self.restarts.saturating_add(1);
                }
            }
            State::Stopped
            | State::Running { .. }
            | State::Exited { .. }
            | State::Failed { .. } => {}
        }
    }

    fn on_refuse(&mut self, spec: &ServiceSpec, reason: String, now: Instant, out: &mut Actions) {
        match self.state {
            State::Stopped
            | State::Exited { .. }
            | State::Waiting { .. }
            | State::Failed { .. } => {
                self.enter_failed(spec, Failure::Dependency(reason), now, out);
            }
            // Already under way: the supervisor stops it instead.
            State::Starting { .. } | State::Running { .. } | State::Stopping { .. } => {}
        }
    }

    // Helpers shared by the transitions above.

    fn begin_start(&mut self, spec: &ServiceSpec, now: Instant, out: &mut Actions) {
        let interval = spec.start_limit_interval;
        if !interval.is_zero() && spec.start_limit_burst > 0 {
            while self
                .starts
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= interval)
            {
                self.starts.pop_front();
            }
            if self.starts.len() >= spec.start_limit_burst as usize {
                out.push(Action::Log(
                    Level::Error,
                    format!(
                        "start limit hit: more than {} starts within {}; not starting again until started by hand",
                        spec.start_limit_burst,
                        duration::format(interval)
                    ),
                ));
                self.enter_failed(spec, Failure::StartLimit, now, out);
                return;
            }
            self.starts.push_back(now);
        }
        let deadline = match spec.timeout_start {
            d if d.is_zero() => None,
            d => now.checked_add(d),
        };
        let (step, proc) = if spec.exec_start_pre.is_empty() {
            (StartStep::Main, Proc::Main)
        } else {
            (StartStep::Pre(0), Proc::Pre(0))
        };
        out.push(Action::Spawn(proc));
        self.set(
            State::Starting {
                step,
                pid: None,
                deadline,
            },
            now,
        );
    }

    fn begin_stop(
        &mut self,
        spec: &ServiceSpec,
        pid: Pid,
        then: AfterStop,
        now: Instant,
        out: &mut Actions,
    ) {
        if spec.exec_stop.is_empty() {
            self.send_kill_signal(spec, pid, out);
            self.enter_stopping(spec, Some(pid), None, StopPhase::Signal, then, now);
        } else {
            out.push(Action::Spawn(Proc::Stop(0)));
            self.enter_stopping(spec, Some(pid), None, StopPhase::ExecStop(0), then, now);
        }
    }

    fn enter_stopping(
        &mut self,
        spec: &ServiceSpec,
        main: Option<Pid>,
        control: Option<Pid>,
        phase: StopPhase,
        then: AfterStop,
        now: Instant,
    ) {
        let group = match &self.state {
            State::Stopping { group, .. } => *group,
            State::Starting {
                step: StartStep::Main,
                pid,
                ..
            } => *pid,
            State::Running { pid } => Some(*pid),
            State::Starting { .. }
            | State::Stopped
            | State::Waiting { .. }
            | State::Exited { .. }
            | State::Failed { .. } => main,
        };
        let group_alive = match &self.state {
            State::Stopping { group_alive, .. } => *group_alive,
            State::Starting { .. }
            | State::Running { .. }
            | State::Stopped
            | State::Waiting { .. }
            | State::Exited { .. }
            | State::Failed { .. } => group.is_some(),
        };
        let deadline = now.checked_add(spec.stop_timeout());
        self.set(
            State::Stopping {
                main,
                group,
                group_alive,
                control,
                phase,
                deadline,
                then,
            },
            now,
        );
    }

    /// KillSignal per `KillMode`, with SIGCONT so stopped processes see it.
    fn send_kill_signal(&self, spec: &ServiceSpec, pid: Pid, out: &mut Actions) {
        let group = spec.kill_mode == KillMode::ControlGroup;
        out.push(Action::Signal {
            pid,
            group,
            signal: spec.kill_signal,
        });
        if spec.kill_signal != libc::SIGKILL {
            out.push(Action::Signal {
                pid,
                group,
                signal: libc::SIGCONT,
            });
        }
    }

    /// SIGKILL to what is left, then wait once more for it to be reaped.
    fn escalate(&mut self, spec: &ServiceSpec, now: Instant, out: &mut Actions) {
        let State::Stopping {
            main,
            group,
            control,
            then,
            ..
        } = self.state.clone()
        else {
            return;
        };
        match (spec.kill_mode, group, main) {
            (KillMode::ControlGroup | KillMode::Mixed, Some(g), _) => out.push(Action::Signal {
                pid: g,
                group: true,
                signal: libc::SIGKILL,
            }),
            (KillMode::ControlGroup | KillMode::Mixed, None, Some(m))
            | (KillMode::Process, _, Some(m)) => out.push(Action::Signal {
                pid: m,
                group: false,
                signal: libc::SIGKILL,
            }),
            (KillMode::ControlGroup | KillMode::Mixed, None, None)
            | (KillMode::Process, _, None) => {}
        }
        if let Some(c) = control {
            out.push(Action::Signal {
                pid: c,
                group: true,
                signal: libc::SIGKILL,
            });
        }
        self.enter_stopping(spec, main, control, StopPhase::Kill, then, now);
    }

    /// The main or a control process ended while stopping: finish when
    /// nothing of the service is left.
    fn finish_if_done(&mut self, spec: &ServiceSpec, now: Instant, out: &mut Actions) {
        let State::Stopping {
            main,
            control,
            group_alive,
            then,
            ..
        } = self.state.clone()
        else {
            return;
        };
        let leftovers_matter = spec.kill_mode != KillMode::Process;
        if main.is_none() && control.is_none() && !(group_alive && leftovers_matter) {
            self.finish_stop(spec, then, now, out);
        }
    }

    fn finish_stop(
        &mut self,
        spec: &ServiceSpec,
        then: AfterStop,
        now: Instant,
        out: &mut Actions,
    ) {
        match then {
            AfterStop::Stopped => {
                out.push(Action::Log(Level::Info, "stopped".into()));
                self.set(State::Stopped, now);
            }
            AfterStop::Ended(outcome) => self.settle(spec, outcome, now, out),
        }
    }

    /// The main process ended by itself.
    fn main_ended(
        &mut self,
        spec: &ServiceSpec,
        pid: Pid,
        exit: Exit,
        group_alive: bool,
        now: Instant,
        out: &mut Actions,
    ) {
        self.last_exit = Some(exit);
        let outcome = classify(spec, exit);
        let level = match outcome {
            Outcome::Success(_) => Level::Info,
            Outcome::Failure(_) => Level::Warn,
        };
        out.push(Action::Log(
            level,
            format!("main process {}", exit.describe()),
        ));
        if group_alive && spec.kill_mode != KillMode::Process {
            // systemd stops what the main process left behind before it
            // decides about a restart; so do we.
            out.push(Action::Log(
                Level::Info,
                "stopping processes left in its group".into(),
            ));
            out.push(Action::Signal {
                pid,
                group: true,
                signal: spec.kill_signal,
            });
            out.push(Action::Signal {
                pid,
                group: true,
                signal: libc::SIGCONT,
            });
            // From Running or Starting, the group is the main pid's.
            self.enter_stopping(
                spec,
                None,
                None,
                StopPhase::Signal,
                AfterStop::Ended(outcome),
                now,
            );
        } else {
            self.settle(spec, outcome, now, out);
        }
    }

    /// A run ended by itself: restart, `exited` or `failed`.
    fn settle(&mut self, spec: &ServiceSpec, outcome: Outcome, now: Instant, out: &mut Actions) {
        if restarts_on(spec.restart, outcome.cause()) {
            // Counted when the restart happens, not when it is planned: a
            // restart the start limit refuses is no restart.
            let delay = restart_delay(spec, self.restarts);
            out.push(Action::Log(
                Level::Info,
                format!(
                    "restarting in {} (restart {})",
                    duration::format(delay),
                    self.restarts.saturating_add(1)
                ),
            ));
            match now.checked_add(delay) {
                Some(until) => self.set(State::Waiting { until }, now),
                None => self.set(State::Stopped, now),
            }
            return;
        }
        match outcome {
            Outcome::Success(exit) => {
                let active = spec.remain_after_exit;
                self.set(State::Exited { active }, now);
                if spec.success_action != EndAction::None {
                    out.push(Action::End(
                        spec.success_action,
                        exit.map_or(0, Exit::status),
                    ));
                }
            }
            Outcome::Failure(failure) => self.enter_failed(spec, failure, now, out),
        }
    }

    fn enter_failed(
        &mut self,
        spec: &ServiceSpec,
        failure: Failure,
        now: Instant,
        out: &mut Actions,
    ) {
        out.push(Action::Log(
            Level::Error,
            format!("failed: {}", failure.describe()),
        ));
        let status = failure.status();
        self.set(State::Failed { reason: failure }, now);
        if spec.failure_action != EndAction::None {
            out.push(Action::End(spec.failure_action, status));
        }
    }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
