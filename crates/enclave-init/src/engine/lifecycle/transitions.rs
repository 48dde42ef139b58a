//! The transitions of [`Life::handle`]: one function per event, each
//! matching every state (no `_ =>` arm), and the helpers they share.

use std::time::Instant;

use super::*;

impl Life {
    pub(super) fn on_start(&mut self, spec: &ServiceSpec, now: Instant, out: &mut Actions) {
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
            State::Starting { .. }
            | State::Running { .. }
            | State::Reloading { .. }
            | State::Stopping { .. } => {}
        }
    }

    pub(super) fn on_stop(&mut self, spec: &ServiceSpec, now: Instant, out: &mut Actions) {
        let then = AfterStop::Stopped;
        match self.state.clone() {
            // A failed service stays failed until started, as in systemd.
            State::Failed { .. } => {}
            // A oneshot that remains active: its ExecStop, then ExecStopPost.
            State::Exited { active: true } if !spec.exec_stop.is_empty() => {
                out.push(Action::Spawn(Proc::Stop(0)));
                self.enter_stopping(spec, None, None, StopPhase::ExecStop(0), then, now);
            }
            State::Exited { active: true } => self.finish_stop(spec, then, now, out),
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
            State::Reloading { pid, .. } => {
                self.kill_control(out);
                self.begin_stop(spec, pid, then, now, out);
            }
            // The start command forked and ended; whatever it left is
            // stopped through its group (its cgroup).
            State::Starting {
                step: StartStep::Forked(starter),
                ..
            } => {
                self.send_group_kill_signal(spec, starter, out);
                self.enter_stopping(spec, None, None, StopPhase::Signal, then, now);
            }
            State::Starting {
                step: StartStep::Post { main, .. },
                ..
            } => {
                self.kill_control(out);
                match main {
                    Some(pid) => self.begin_stop(spec, pid, then, now, out),
                    None => self.finish_stop(spec, then, now, out),
                }
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

    pub(super) fn on_spawned(
        &mut self,
        spec: &ServiceSpec,
        new_pid: Pid,
        now: Instant,
        out: &mut Actions,
    ) {
        self.transient_failures = 0;
        match &mut self.state {
            State::Starting {
                step: step @ (StartStep::Pre(_) | StartStep::Main | StartStep::Post { .. }),
                pid: pid @ None,
                deadline,
            } => {
                *pid = Some(new_pid);
                let deadline = *deadline;
                match *step {
                    StartStep::Pre(i) => out.push(Action::Log(
                        Level::Debug,
                        format!("ExecStartPre {} started (pid {new_pid})", i + 1),
                    )),
                    StartStep::Post { index, .. } => out.push(Action::Log(
                        Level::Debug,
                        format!("ExecStartPost {} started (pid {new_pid})", index + 1),
                    )),
                    StartStep::Main => {
                        out.push(Action::Log(Level::Info, format!("started (pid {new_pid})")));
                        if spec.service_type == ServiceType::Simple {
                            self.up(spec, new_pid, deadline, now, out);
                        }
                    }
                    // Excluded by the pattern above.
                    StartStep::Forked(_) => {}
                }
            }
            State::Stopping {
                phase: StopPhase::ExecStop(_) | StopPhase::StopPost(_),
                control: control @ None,
                ..
            }
            | State::Reloading {
                control: control @ None,
                ..
            } => *control = Some(new_pid),
            State::Starting { pid: Some(_), .. }
            | State::Starting {
                step: StartStep::Forked(_),
                ..
            }
            | State::Stopping { .. }
            | State::Reloading { .. }
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

    pub(super) fn on_spawn_failed(
        &mut self,
        spec: &ServiceSpec,
        reason: String,
        status: i32,
        transient: bool,
        now: Instant,
        out: &mut Actions,
    ) {
        match self.state.clone() {
            State::Starting {
                step: StartStep::Post { index, main },
                ..
            } => {
                let failure = Failure::Spawn { reason, status };
                self.start_post_done(spec, index, main, Some(failure), now, out);
            }
            State::Stopping {
                phase: StopPhase::StopPost(index),
                ..
            } => self.stop_post_done(spec, index, Some(reason), now, out),
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
                    let failure = Failure::Spawn { reason, status };
                    let then = AfterStop::Ended(Outcome::Failure(failure));
                    self.finish_stop(spec, then, now, out);
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
            State::Reloading { .. } => self.reload_step_done(spec, Some(reason), now, out),
            State::Stopped
            | State::Running { .. }
            | State::Stopping { .. }
            | State::Waiting { .. }
            | State::Exited { .. }
            | State::Failed { .. } => out.push(Action::Log(Level::Warn, reason)),
        }
    }

    pub(super) fn on_ready(&mut self, spec: &ServiceSpec, now: Instant, out: &mut Actions) {
        match self.state {
            State::Starting {
                step: StartStep::Main,
                pid: Some(pid),
                ..
            } if spec.service_type == ServiceType::Notify => {
                out.push(Action::Log(Level::Info, "ready".into()));
                let deadline = self.state.deadline();
                self.up(spec, pid, deadline, now, out);
            }
            State::Starting { .. }
            | State::Reloading { .. }
            | State::Stopped
            | State::Running { .. }
            | State::Stopping { .. }
            | State::Waiting { .. }
            | State::Exited { .. }
            | State::Failed { .. } => {}
        }
    }

    pub(super) fn on_exited(
        &mut self,
        spec: &ServiceSpec,
        pid: Pid,
        exit: Exit,
        group_alive: bool,
        now: Instant,
        out: &mut Actions,
    ) {
        let failed = |spec: &ServiceSpec| match classify(spec, exit) {
            Outcome::Success(_) => None,
            Outcome::Failure(f) => Some(f),
        };
        match self.state.clone() {
            State::Starting {
                step: StartStep::Post { index, main },
                pid: Some(c),
                ..
            } if c == pid => {
                let failure = failed(spec);
                self.start_post_done(spec, index, main, failure, now, out);
            }
            State::Starting {
                step: StartStep::Post { main: Some(m), .. },
                ..
            } if m == pid => {
                self.kill_control(out);
                self.main_ended(spec, pid, exit, group_alive, now, out);
            }
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
                        self.finish_stop(spec, AfterStop::Ended(Outcome::Failure(f)), now, out);
                        return;
                    }
                }
                let (step, proc) = if i + 1 < spec.exec_start_pre.len() {
                    (StartStep::Pre(i + 1), Proc::Pre(i + 1))
                } else {
                    (StartStep::Main, Proc::Main)
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
            State::Starting {
                step: StartStep::Main,
                pid: Some(p),
                deadline,
            } if p == pid && spec.service_type == ServiceType::Forking => {
                // The start command of a forking daemon is done: the daemon
                // is what it left, found through PIDFile= or a guess.
                self.last_exit = Some(exit);
                if matches!(self.outcome_of_main(spec, exit), Outcome::Success(_)) {
                    out.push(Action::Log(
                        Level::Debug,
                        format!("start command {}", exit.describe()),
                    ));
                    out.push(Action::FindMainPid { starter: pid });
                    self.set(
                        State::Starting {
                            step: StartStep::Forked(pid),
                            pid: None,
                            deadline,
                        },
                        now,
                    );
                } else {
                    self.main_ended(spec, pid, exit, group_alive, now, out);
                }
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
            State::Reloading { pid: p, .. } if p == pid => {
                self.kill_control(out);
                self.main_ended(spec, pid, exit, group_alive, now, out);
            }
            State::Reloading {
                control: Some(c), ..
            } if c == pid => {
                let failure = match classify(spec, exit) {
                    Outcome::Success(_) => None,
                    Outcome::Failure(_) => Some(exit.describe()),
                };
                self.reload_step_done(spec, failure, now, out);
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
                    (StopPhase::ExecStop(i), None) if i + 1 < spec.exec_stop.len() => {
                        out.push(Action::Spawn(Proc::Stop(i + 1)));
                        if let State::Stopping { phase, .. } = &mut self.state {
                            *phase = StopPhase::ExecStop(i + 1);
                        }
                    }
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
                    (StopPhase::StopPost(i), _) => {
                        let failure = failed(spec).map(|f| f.describe());
                        self.stop_post_done(spec, i, failure, now, out);
                    }
                    (StopPhase::ExecStop(_) | StopPhase::Signal | StopPhase::Kill, _) => {
                        self.finish_if_done(spec, now, out)
                    }
                }
            }
            State::Starting { .. }
            | State::Reloading { .. }
            | State::Running { .. }
            | State::Stopping { .. }
            | State::Stopped
            | State::Waiting { .. }
            | State::Exited { .. }
            | State::Failed { .. } => {}
        }
    }

    pub(super) fn on_group_empty(&mut self, spec: &ServiceSpec, now: Instant, out: &mut Actions) {
        match &mut self.state {
            State::Stopping { group_alive, .. } => {
                *group_alive = false;
                self.finish_if_done(spec, now, out);
            }
            State::Reloading { .. }
            | State::Stopped
            | State::Starting { .. }
            | State::Running { .. }
            | State::Waiting { .. }
            | State::Exited { .. }
            | State::Failed { .. } => {}
        }
    }

    pub(super) fn on_deadline(&mut self, spec: &ServiceSpec, now: Instant, out: &mut Actions) {
        if self.watchdog_due.is_some_and(|d| d <= now) {
            self.watchdog_fired(spec, now, out);
            return;
        }
        if self.state.deadline().is_none_or(|d| d > now) {
            return;
        }
        match self.state.clone() {
            State::Stopping {
                phase: StopPhase::StopPost(index),
                control,
                ..
            } => {
                if let Some(c) = control {
                    out.push(Action::SignalControl {
                        pid: c,
                        signal: libc::SIGKILL,
                    });
                }
                let reason = "did not finish in time; killed".to_string();
                self.stop_post_done(spec, index, Some(reason), now, out);
            }
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
                    (StartStep::Post { main, .. }, _) => {
                        self.fail_start(spec, main, Failure::StartTimeout, now, out)
                    }
                    (StartStep::Forked(starter), _) => {
                        self.send_group_kill_signal(spec, starter, out);
                        self.enter_stopping(spec, None, None, StopPhase::Signal, then, now);
                    }
                    (StartStep::Pre(_) | StartStep::Main, None) => {
                        self.finish_stop(spec, then, now, out)
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
                    out.push(Action::SignalControl {
                        pid: c,
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
            State::Reloading { pid, .. } => {
                out.push(Action::Log(
                    Level::Error,
                    format!(
                        "reload failed: ExecReload did not finish within TimeoutStartSec={}",
                        duration::format(spec.timeout_start)
                    ),
                ));
                self.kill_control(out);
                self.reload_failure = Some("ExecReload timed out".into());
                self.set(State::Running { pid }, now);
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

    pub(super) fn on_main_pid(
        &mut self,
        spec: &ServiceSpec,
        found: Result<Pid, String>,
        now: Instant,
        out: &mut Actions,
    ) {
        match self.state.clone() {
            State::Starting {
                step: StartStep::Forked(starter),
                ..
            } => match found {
                Ok(pid) => {
                    out.push(Action::Log(Level::Info, format!("main process {pid}")));
                    let deadline = self.state.deadline();
                    self.up(spec, pid, deadline, now, out);
                }
                Err(reason) => {
                    out.push(Action::Log(Level::Error, reason.clone()));
                    let failure = Failure::Spawn { reason, status: 1 };
                    let then = AfterStop::Ended(Outcome::Failure(failure));
                    self.send_group_kill_signal(spec, starter, out);
                    self.enter_stopping(spec, None, None, StopPhase::Signal, then, now);
                }
            },
            // Stopped or timed out meanwhile: the answer is stale.
            State::Starting { .. }
            | State::Reloading { .. }
            | State::Stopped
            | State::Running { .. }
            | State::Stopping { .. }
            | State::Waiting { .. }
            | State::Exited { .. }
            | State::Failed { .. } => {}
        }
    }

    pub(super) fn on_refuse(
        &mut self,
        spec: &ServiceSpec,
        reason: String,
        now: Instant,
        out: &mut Actions,
    ) {
        match self.state {
            State::Stopped
            | State::Exited { .. }
            | State::Waiting { .. }
            | State::Failed { .. } => {
                self.enter_failed(spec, Failure::Dependency(reason), now, out);
            }
            // Already under way: the supervisor stops it instead.
            State::Starting { .. }
            | State::Running { .. }
            | State::Reloading { .. }
            | State::Stopping { .. } => {}
        }
    }

    // Helpers shared by the transitions above.

    pub(super) fn begin_start(&mut self, spec: &ServiceSpec, now: Instant, out: &mut Actions) {
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
        self.watchdog_interval = spec.watchdog;
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

    /// The main process ended by itself.
    pub(super) fn main_ended(
        &mut self,
        spec: &ServiceSpec,
        pid: Pid,
        exit: Exit,
        group_alive: bool,
        now: Instant,
        out: &mut Actions,
    ) {
        self.last_exit = Some(exit);
        let outcome = self.outcome_of_main(spec, exit);
        let level = match outcome {
            Outcome::Success(_) => Level::Info,
            Outcome::Failure(_) => Level::Warn,
        };
        out.push(Action::Log(
            level,
            format!("main process {}", exit.describe()),
        ));
        // A oneshot that ended well: its ExecStartPost, whatever it left.
        if matches!(outcome, Outcome::Success(_)) && self.oneshot_post(spec, now, out) {
            return;
        }
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
            self.finish_stop(spec, AfterStop::Ended(outcome), now, out);
        }
    }

    /// A run ended by itself: restart, `exited` or `failed`.
    pub(super) fn settle(
        &mut self,
        spec: &ServiceSpec,
        outcome: Outcome,
        now: Instant,
        out: &mut Actions,
    ) {
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

    pub(super) fn enter_failed(
        &mut self,
        spec: &ServiceSpec,
        failure: Failure,
        now: Instant,
        out: &mut Actions,
    ) {
        // A spawn failure was logged as an error already; a command whose
        // exit is init's result (`-- CMD`) did not fail init.
        let level = if spec.exit_is_the_result || matches!(failure, Failure::Spawn { .. }) {
            Level::Info
        } else {
            Level::Error
        };
        out.push(Action::Log(
            level,
            format!("failed: {}", failure.describe()),
        ));
        let status = failure.status();
        self.set(State::Failed { reason: failure }, now);
        if spec.failure_action != EndAction::None {
            out.push(Action::End(spec.failure_action, status));
        }
    }
}
