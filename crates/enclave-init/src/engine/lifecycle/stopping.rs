//! Stopping: `ExecStop`, then `KillSignal` per `KillMode`, then SIGKILL,
//! each phase bounded by `TimeoutStopSec`; and how a stop ends (stopped,
//! or the ended run's outcome decided).

use std::time::Instant;

use super::*;

impl Life {
    pub(super) fn begin_stop(
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

    pub(super) fn enter_stopping(
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
            State::Running { pid } | State::Reloading { pid, .. } => Some(*pid),
            State::Starting {
                step: StartStep::Forked(starter),
                ..
            } => Some(*starter),
            State::Starting {
                step: StartStep::Post { main: Some(m), .. },
                ..
            } => Some(*m),
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
            | State::Reloading { .. }
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

    /// How the main process's exit counts: systemd's table, and success
    /// whatever it was with the `-` prefix on `ExecStart`.
    pub(super) fn outcome_of_main(&self, spec: &ServiceSpec, exit: Exit) -> Outcome {
        match classify(spec, exit) {
            Outcome::Failure(_) if spec.exec_start.ignore_failure => Outcome::Success(Some(exit)),
            outcome => outcome,
        }
    }

    /// KillSignal (and SIGCONT) to a whole group, whatever `KillMode` says:
    /// what a forking start command left, when no main pid is known.
    pub(super) fn send_group_kill_signal(&self, spec: &ServiceSpec, group: Pid, out: &mut Actions) {
        for signal in [spec.kill_signal, libc::SIGCONT] {
            out.push(Action::Signal {
                pid: group,
                group: true,
                signal,
            });
        }
    }

    /// KillSignal per `KillMode`, with SIGCONT so stopped processes see it.
    pub(super) fn send_kill_signal(&self, spec: &ServiceSpec, pid: Pid, out: &mut Actions) {
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
    pub(super) fn escalate(&mut self, spec: &ServiceSpec, now: Instant, out: &mut Actions) {
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
            out.push(Action::SignalControl {
                pid: c,
                signal: libc::SIGKILL,
            });
        }
        self.enter_stopping(spec, main, control, StopPhase::Kill, then, now);
    }

    /// The main or a control process ended while stopping: finish when
    /// nothing of the service is left.
    pub(super) fn finish_if_done(&mut self, spec: &ServiceSpec, now: Instant, out: &mut Actions) {
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

    pub(super) fn finish_stop(
        &mut self,
        spec: &ServiceSpec,
        then: AfterStop,
        now: Instant,
        out: &mut Actions,
    ) {
        if self.conclude(spec, then.clone(), now, out) {
            return;
        }
        match then {
            AfterStop::Stopped => {
                out.push(Action::Log(Level::Info, "stopped".into()));
                self.set(State::Stopped, now);
            }
            AfterStop::Ended(outcome) => self.settle(spec, outcome, now, out),
        }
    }
}
