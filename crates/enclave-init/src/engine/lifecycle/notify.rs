//! What a service says on the notify socket beyond `READY=1`: a new main
//! pid (`MAINPID=`), more time (`EXTEND_TIMEOUT_USEC=`), and the watchdog
//! (`WATCHDOG=1`, `WATCHDOG=trigger`, `WATCHDOG_USEC=`), with systemd's
//! meanings. The orchestrator has checked the sender (`NotifyAccess=`) and,
//! for `MAINPID=`, that the process belongs to the service.

use std::time::{Duration, Instant};

use super::*;

/// One notify message the lifecycle acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    MainPid(Pid),
    ExtendTimeout(Duration),
    WatchdogPing,
    WatchdogTrigger,
    /// `WATCHDOG_USEC=`: a new interval for this run (0: off).
    WatchdogInterval(Duration),
}

impl Life {
    pub(super) fn on_notice(
        &mut self,
        spec: &ServiceSpec,
        notice: Notice,
        now: Instant,
        out: &mut Actions,
    ) {
        match notice {
            Notice::MainPid(new) => self.new_main_pid(spec, new, out),
            Notice::ExtendTimeout(more) => {
                let wanted = now.checked_add(more);
                match &mut self.state {
                    State::Starting { deadline, .. }
                    | State::Stopping { deadline, .. }
                    | State::Reloading { deadline, .. } => {
                        if let (Some(d), Some(w)) = (deadline.as_mut(), wanted) {
                            if w > *d {
                                *d = w;
                                out.push(Action::Log(
                                    Level::Debug,
                                    format!("timeout extended by {}", duration::format(more)),
                                ));
                            }
                        }
                    }
                    State::Stopped
                    | State::Running { .. }
                    | State::Waiting { .. }
                    | State::Exited { .. }
                    | State::Failed { .. } => {}
                }
            }
            Notice::WatchdogPing => {
                if self.watchdog_due.is_some() {
                    self.watchdog_due = self.watchdog_interval.and_then(|d| now.checked_add(d));
                }
            }
            Notice::WatchdogTrigger => {
                if matches!(self.state, State::Running { .. } | State::Reloading { .. }) {
                    out.push(Action::Log(
                        Level::Error,
                        "the service asked for its watchdog (WATCHDOG=trigger)".into(),
                    ));
                    self.watchdog_fired(spec, now, out);
                }
            }
            Notice::WatchdogInterval(interval) => {
                self.watchdog_interval = (!interval.is_zero()).then_some(interval);
                if matches!(self.state, State::Running { .. } | State::Reloading { .. }) {
                    self.watchdog_due = self.watchdog_interval.and_then(|d| now.checked_add(d));
                }
            }
        }
    }

    fn new_main_pid(&mut self, spec: &ServiceSpec, new: Pid, out: &mut Actions) {
        // A forking service's main process is what its start command
        // leaves: the start command must end first.
        let forking_start = spec.service_type == ServiceType::Forking
            && matches!(self.state, State::Starting { .. });
        if forking_start {
            return;
        }
        let slot = match &mut self.state {
            State::Starting {
                step: StartStep::Main,
                pid: Some(pid),
                ..
            }
            | State::Running { pid }
            | State::Reloading { pid, .. } => pid,
            State::Starting { .. }
            | State::Stopped
            | State::Stopping { .. }
            | State::Waiting { .. }
            | State::Exited { .. }
            | State::Failed { .. } => return,
        };
        if *slot != new {
            out.push(Action::Log(
                Level::Info,
                format!("main process is now {new} (MAINPID, was {slot})"),
            ));
            *slot = new;
        }
    }

    /// No ping in time: `WatchdogSignal` to the main process, then the
    /// service stops as failed (`Restart=on-watchdog` and the others of
    /// systemd's table decide about a restart).
    pub(super) fn watchdog_fired(&mut self, spec: &ServiceSpec, now: Instant, out: &mut Actions) {
        let Some(pid) = self.state.main_pid() else {
            return;
        };
        self.kill_control(out);
        self.watchdog_due = None;
        let whom = if spec.kill_mode == KillMode::ControlGroup {
            "its processes"
        } else {
            "the main process"
        };
        out.push(Action::Log(
            Level::Error,
            format!(
                "watchdog timeout: sending {} to {whom}",
                signal_name(spec.watchdog_signal)
            ),
        ));
        out.push(Action::Signal {
            pid,
            group: spec.kill_mode == KillMode::ControlGroup,
            signal: spec.watchdog_signal,
        });
        let then = AfterStop::Ended(Outcome::Failure(Failure::Watchdog));
        self.enter_stopping(spec, Some(pid), None, StopPhase::Signal, then, now);
    }
}
