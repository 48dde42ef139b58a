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
    /// No `WATCHDOG=1` within `WatchdogSec` (or `WATCHDOG=trigger`).
    Watchdog,
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
            Failure::Watchdog => "watchdog timeout".into(),
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
            | Failure::Watchdog
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
    Watchdog,
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
            Outcome::Failure(Failure::Watchdog) => ExitCause::Watchdog,
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
        (P::Always, C::Clean | C::UncleanCode | C::UncleanSignal | C::Timeout | C::Watchdog) => {
            true
        }
        (P::OnSuccess, C::Clean) => true,
        (P::OnSuccess, C::UncleanCode | C::UncleanSignal | C::Timeout | C::Watchdog) => false,
        (P::OnFailure, C::Clean) => false,
        (P::OnFailure, C::UncleanCode | C::UncleanSignal | C::Timeout | C::Watchdog) => true,
        (P::OnAbnormal, C::Clean | C::UncleanCode) => false,
        (P::OnAbnormal, C::UncleanSignal | C::Timeout | C::Watchdog) => true,
        (P::OnAbort, C::Clean | C::UncleanCode | C::Timeout | C::Watchdog) => false,
        (P::OnAbort, C::UncleanSignal) => true,
        (P::OnWatchdog, C::Watchdog) => true,
        (P::OnWatchdog, C::Clean | C::UncleanCode | C::UncleanSignal | C::Timeout) => false,
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
    Reload(usize),
    StartPost(usize),
    StopPost(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartStep {
    Pre(usize),
    Main,
    /// `Type=forking`: the start command (this pid, and its process group)
    /// exited successfully; the daemon's main pid is being looked for.
    Forked(Pid),
    /// `ExecStartPost` command `index` runs; `main` is the main process
    /// (`None`: a oneshot's, which has ended).
    Post {
        index: usize,
        main: Option<Pid>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopPhase {
    /// `ExecStop` command `n` runs; the main process still does.
    ExecStop(usize),
    /// `KillSignal` sent.
    Signal,
    /// SIGKILL sent.
    Kill,
    /// `ExecStopPost` command `n` runs: the run is over, nothing of it is
    /// left.
    StopPost(usize),
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
    /// `ExecReload` command `step` runs (`control`, once started) beside
    /// the main process; the service stays ready.
    Reloading {
        pid: Pid,
        step: usize,
        control: Option<Pid>,
        deadline: Option<Instant>,
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
            State::Reloading { .. } => "reloading",
            State::Stopping { .. } => "stopping",
            State::Waiting { .. } => "waiting",
            State::Exited { .. } => "exited",
            State::Failed { .. } => "failed",
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        match self {
            State::Starting { deadline, .. }
            | State::Stopping { deadline, .. }
            | State::Reloading { deadline, .. } => *deadline,
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
            State::Running { pid } | State::Reloading { pid, .. } => Some(*pid),
            State::Starting {
                step: StartStep::Post { main, .. },
                ..
            } => *main,
            State::Stopping { main, .. } => *main,
            State::Starting {
                step: StartStep::Pre(_) | StartStep::Forked(_),
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
            State::Starting {
                pid,
                step: StartStep::Post { main, .. },
                ..
            } => main.iter().chain(pid).copied().collect(),
            State::Starting { pid, .. } => pid.iter().copied().collect(),
            State::Running { pid } => vec![*pid],
            State::Reloading { pid, control, .. } => {
                std::iter::once(*pid).chain(*control).collect()
            }
            State::Stopping { main, control, .. } => main.iter().chain(control).copied().collect(),
            State::Stopped
            | State::Waiting { .. }
            | State::Exited { .. }
            | State::Failed { .. } => Vec::new(),
        }
    }

    /// Ready for dependents: running, or a oneshot that remains active.
    pub fn is_ready(&self) -> bool {
        matches!(
            self,
            State::Running { .. } | State::Reloading { .. } | State::Exited { active: true }
        )
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
    /// Signal a process, or its whole process group when `group` (the
    /// service's cgroup too, when it has one).
    Signal {
        pid: Pid,
        group: bool,
        signal: i32,
    },
    /// Signal the process group of a command init runs beside the main
    /// process (`ExecStop`, `ExecReload`, `ExecStartPost`, ...): never the
    /// service's cgroup, which the main process shares.
    SignalControl {
        pid: Pid,
        signal: i32,
    },
    Log(Level, String),
    /// `SuccessAction`/`FailureAction`, with the status `exit` uses.
    End(EndAction, i32),
    /// Find the forked daemon's main pid (`PIDFile=`, or a guess among
    /// what the start command left); the answer comes back as `MainPid`.
    FindMainPid {
        starter: Pid,
    },
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
    /// The forked daemon's main pid, or why it could not be found.
    MainPid(Result<Pid, String>),
    /// `initctl reload NAME`: run `ExecReload` (the orchestrator checked
    /// that it has some and runs).
    Reload,
    /// A notify message beyond `READY=1` from a process allowed to speak
    /// for the service.
    Notice(Notice),
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
            Event::MainPid(_) => "a main pid",
            Event::Reload => "a reload",
            Event::Notice(_) => "a notify message",
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
    /// Why the last `ExecReload` failed (`None`: it succeeded, or none ran).
    pub reload_failure: Option<String>,
    /// The watchdog's interval for this run: `WatchdogSec`, or what
    /// `WATCHDOG_USEC=` set.
    pub watchdog_interval: Option<Duration>,
    /// When the watchdog fires unless `WATCHDOG=1` comes (running only).
    pub watchdog_due: Option<Instant>,
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
            reload_failure: None,
            watchdog_interval: None,
            watchdog_due: None,
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
        let up = |s: &State| matches!(s, State::Running { .. } | State::Reloading { .. });
        // The watchdog runs from the moment the service is up, and only
        // while it is.
        match (up(&self.state), up(&state)) {
            (false, true) => {
                self.watchdog_due = self.watchdog_interval.and_then(|d| now.checked_add(d))
            }
            (_, false) => self.watchdog_due = None,
            (true, true) => {}
        }
        self.state = state;
    }

    /// The earliest time this service wants a `Deadline`: its state's, or
    /// its watchdog's.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.state.deadline(), self.watchdog_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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
            Event::MainPid(found) => self.on_main_pid(spec, found, now, &mut out),
            Event::Reload => self.on_reload(spec, now, &mut out),
            Event::Notice(notice) => self.on_notice(spec, notice, now, &mut out),
            Event::Refuse { reason } => self.on_refuse(spec, reason, now, &mut out),
        }
        out
    }
}

mod notify;
mod post;
mod reload;

pub use notify::Notice;
mod stopping;
mod transitions;

#[cfg(test)]
mod tests;
