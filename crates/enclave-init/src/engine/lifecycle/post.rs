//! `ExecStartPost` and `ExecStopPost`, with systemd's meanings: the
//! first run once the main process is up (started for `simple`, ready for
//! `notify`, found for `forking`, ended well for `oneshot`), and the
//! service is started only when they have succeeded; the second run after
//! every run, however it ended (a failed start included), before the
//! decision about a restart.

use std::time::Instant;

use super::*;

impl Life {
    /// The main process is up: `ExecStartPost`, or running.
    pub(super) fn up(
        &mut self,
        spec: &ServiceSpec,
        main: Pid,
        deadline: Option<Instant>,
        now: Instant,
        out: &mut Actions,
    ) {
        if spec.exec_start_post.is_empty() {
            self.set(State::Running { pid: main }, now);
        } else {
            self.start_post(0, Some(main), deadline, now, out);
        }
    }

    fn start_post(
        &mut self,
        index: usize,
        main: Option<Pid>,
        deadline: Option<Instant>,
        now: Instant,
        out: &mut Actions,
    ) {
        out.push(Action::Spawn(Proc::StartPost(index)));
        self.set(
            State::Starting {
                step: StartStep::Post { index, main },
                pid: None,
                deadline,
            },
            now,
        );
    }

    /// A oneshot's main process ended well: its `ExecStartPost`, if any.
    /// Whether it took over.
    pub(super) fn oneshot_post(
        &mut self,
        spec: &ServiceSpec,
        now: Instant,
        out: &mut Actions,
    ) -> bool {
        let deadline = self.state.deadline();
        if spec.service_type != ServiceType::Oneshot || spec.exec_start_post.is_empty() {
            return false;
        }
        self.start_post(0, None, deadline, now, out);
        true
    }

    /// `ExecStartPost` command `index` ended (`failure`: how it failed, or
    /// could not start).
    pub(super) fn start_post_done(
        &mut self,
        spec: &ServiceSpec,
        index: usize,
        main: Option<Pid>,
        failure: Option<Failure>,
        now: Instant,
        out: &mut Actions,
    ) {
        // The command is gone: never signal its number again.
        if let State::Starting { pid, .. } = &mut self.state {
            *pid = None;
        }
        let deadline = self.state.deadline();
        let ignore = spec
            .exec_start_post
            .get(index)
            .is_some_and(|c| c.ignore_failure);
        match failure {
            Some(failure) if !ignore => {
                // The start's failure is the command's, named as such (not
                // the main process's exit).
                let reason = format!("ExecStartPost {} {}", index + 1, failure.describe());
                out.push(Action::Log(Level::Error, reason.clone()));
                let status = failure.status();
                self.fail_start(spec, main, Failure::Spawn { reason, status }, now, out);
            }
            _ if index + 1 < spec.exec_start_post.len() => {
                self.start_post(index + 1, main, deadline, now, out)
            }
            _ => match main {
                Some(pid) => self.set(State::Running { pid }, now),
                None => self.finish_stop(
                    spec,
                    AfterStop::Ended(Outcome::Success(self.last_exit)),
                    now,
                    out,
                ),
            },
        }
    }

    /// The start failed after the main process came up: it is stopped,
    /// then the run ends with `failure`.
    pub(super) fn fail_start(
        &mut self,
        spec: &ServiceSpec,
        main: Option<Pid>,
        failure: Failure,
        now: Instant,
        out: &mut Actions,
    ) {
        self.kill_control(out);
        let then = AfterStop::Ended(Outcome::Failure(failure));
        match main {
            Some(pid) => {
                self.send_kill_signal(spec, pid, out);
                self.enter_stopping(spec, Some(pid), None, StopPhase::Signal, then, now);
            }
            None => self.finish_stop(spec, then, now, out),
        }
    }

    /// SIGKILL to the command init runs beside the main process (an
    /// `ExecStartPost` or `ExecReload` one).
    pub(super) fn kill_control(&self, out: &mut Actions) {
        let control = match self.state {
            State::Starting {
                step: StartStep::Post { .. },
                pid,
                ..
            } => pid,
            State::Reloading { control, .. } => control,
            State::Starting { .. }
            | State::Stopped
            | State::Running { .. }
            | State::Stopping { .. }
            | State::Waiting { .. }
            | State::Exited { .. }
            | State::Failed { .. } => None,
        };
        if let Some(c) = control {
            out.push(Action::SignalControl {
                pid: c,
                signal: libc::SIGKILL,
            });
        }
    }

    /// The run is over (nothing of it left): `ExecStopPost` first, if any
    /// and not run yet; else what follows (`then`).
    pub(super) fn conclude(
        &mut self,
        spec: &ServiceSpec,
        then: AfterStop,
        now: Instant,
        out: &mut Actions,
    ) -> bool {
        let posts_ran = matches!(
            self.state,
            State::Stopping {
                phase: StopPhase::StopPost(_),
                ..
            }
        );
        // A oneshot that remains active has not ended: its ExecStopPost
        // waits for its stop.
        let remains = spec.remain_after_exit
            && matches!(then, AfterStop::Ended(Outcome::Success(_)))
            && spec.service_type == ServiceType::Oneshot;
        if posts_ran || remains || spec.exec_stop_post.is_empty() {
            return false;
        }
        self.stop_post(spec, 0, then, now, out);
        true
    }

    fn stop_post(
        &mut self,
        spec: &ServiceSpec,
        index: usize,
        then: AfterStop,
        now: Instant,
        out: &mut Actions,
    ) {
        out.push(Action::Spawn(Proc::StopPost(index)));
        self.set(
            State::Stopping {
                main: None,
                group: None,
                group_alive: false,
                control: None,
                phase: StopPhase::StopPost(index),
                deadline: now.checked_add(spec.stop_timeout()),
                then,
            },
            now,
        );
    }

    /// `ExecStopPost` command `index` ended (or could not start, or ran out
    /// of time): the next, or what follows the run. Its failure is logged
    /// and changes nothing, as in systemd.
    pub(super) fn stop_post_done(
        &mut self,
        spec: &ServiceSpec,
        index: usize,
        failure: Option<String>,
        now: Instant,
        out: &mut Actions,
    ) {
        let State::Stopping { then, .. } = self.state.clone() else {
            return;
        };
        if let Some(reason) = failure {
            out.push(Action::Log(
                Level::Warn,
                format!("ExecStopPost {} {reason}", index + 1),
            ));
        }
        if index + 1 < spec.exec_stop_post.len() {
            self.stop_post(spec, index + 1, then, now, out);
        } else {
            self.finish_stop(spec, then, now, out);
        }
    }
}
