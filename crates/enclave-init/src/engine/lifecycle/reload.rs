//! `ExecReload`: the state `Reloading` and its transitions. The main
//! process runs on and the service stays ready; the commands run in
//! order, each bounded by `TimeoutStartSec` as in systemd. A failed
//! reload is reported (`reload_failure`) and changes nothing else.

use std::time::Instant;

use super::*;

impl Life {
    pub(super) fn on_reload(&mut self, spec: &ServiceSpec, now: Instant, out: &mut Actions) {
        match self.state {
            State::Running { pid } if !spec.exec_reload.is_empty() => {
                self.reload_failure = None;
                out.push(Action::Log(Level::Info, "reloading".into()));
                out.push(Action::Spawn(Proc::Reload(0)));
                let deadline = now.checked_add(spec.timeout_start);
                self.set(
                    State::Reloading {
                        pid,
                        step: 0,
                        control: None,
                        deadline,
                    },
                    now,
                );
            }
            // Refused by the orchestrator before it comes here.
            State::Running { .. }
            | State::Reloading { .. }
            | State::Stopped
            | State::Starting { .. }
            | State::Stopping { .. }
            | State::Waiting { .. }
            | State::Exited { .. }
            | State::Failed { .. } => {}
        }
    }

    /// A reload command ended (or could not start): the next one, or back
    /// to running.
    pub(super) fn reload_step_done(
        &mut self,
        spec: &ServiceSpec,
        failure: Option<String>,
        now: Instant,
        out: &mut Actions,
    ) {
        let State::Reloading {
            pid,
            step,
            deadline,
            ..
        } = self.state
        else {
            return;
        };
        let ignore = spec.exec_reload.get(step).is_some_and(|c| c.ignore_failure);
        match failure {
            Some(reason) if !ignore => {
                out.push(Action::Log(
                    Level::Error,
                    format!("reload failed: ExecReload {} {reason}", step + 1),
                ));
                self.reload_failure = Some(format!("ExecReload {} {reason}", step + 1));
                self.set(State::Running { pid }, now);
            }
            _ if step + 1 < spec.exec_reload.len() => {
                out.push(Action::Spawn(Proc::Reload(step + 1)));
                self.set(
                    State::Reloading {
                        pid,
                        step: step + 1,
                        control: None,
                        deadline,
                    },
                    now,
                );
            }
            _ => {
                out.push(Action::Log(Level::Info, "reloaded".into()));
                self.set(State::Running { pid }, now);
            }
        }
    }
}
