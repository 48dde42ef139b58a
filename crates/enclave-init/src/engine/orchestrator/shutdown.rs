//! The end: `SuccessAction`/`FailureAction`, and the orderly shutdown with
//! its phases (services in reverse order, SIGTERM and then SIGKILL to what
//! remains, the final bound) until the engine finishes.

use std::time::{Duration, Instant};

use super::*;

impl Engine {
    // ---- the end ----

    pub(super) fn end_action(
        &mut self,
        name: &str,
        action: EndAction,
        status: i32,
        now: Instant,
        out: &mut Out,
    ) {
        let ending = match (action, self.settings.mode) {
            (EndAction::None, _) => return,
            (EndAction::Poweroff | EndAction::Exit, Mode::Boot) => Ending::Poweroff,
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
        let reason = format!("service {name} ended: its action is {kind} (status {status})");
        self.begin_shutdown(ending, &reason, now, out);
        if let Some(shutdown) = self.shutdown.as_mut() {
            if shutdown.cause.service.is_none() && shutdown.cause.reason == reason {
                shutdown.cause.service = Some(name.to_string());
                shutdown.cause.status = Some(status);
            }
        }
    }

    /// Starts an orderly shutdown: services in reverse dependency order,
    /// then every remaining process, then the end.
    pub(super) fn begin_shutdown(
        &mut self,
        ending: Ending,
        reason: &str,
        now: Instant,
        out: &mut Out,
    ) {
        if self.shutdown.is_some() {
            out.push(Effect::Log(
                Level::Info,
                format!("already shutting down; ignoring: {reason}"),
            ));
            return;
        }
        out.push(Effect::Log(
            Level::Info,
            format!("shutting down ({}): {reason}", ending.name()),
        ));
        self.shutdown = Some(Shutdown {
            ending,
            cause: EndCause {
                reason: reason.to_string(),
                service: None,
                status: None,
            },
            phase: Phase::Services,
            deadline: None,
            final_deadline: now.checked_add(self.settings.final_timeout),
        });
        self.dirty = true;
    }

    pub(super) fn progress_shutdown(&mut self, now: Instant, out: &mut Out) {
        let Some(shutdown) = self.shutdown.as_ref() else {
            return;
        };
        if shutdown.final_deadline.is_some_and(|d| d <= now) {
            // A service that never dies (TimeoutStopSec=infinity, a process
            // stuck in the kernel) must not keep the end from happening.
            out.push(Effect::Log(
                Level::Warn,
                format!(
                    "shutdown took longer than {}; sending SIGKILL to every remaining process",
                    duration::format(self.settings.final_timeout)
                ),
            ));
            out.push(Effect::SignalRemaining(libc::SIGKILL));
            if let Some(s) = self.shutdown.as_mut() {
                s.final_deadline = None;
                s.phase = Phase::Kill;
                s.deadline = now.checked_add(Duration::from_secs(5));
            }
            return;
        }
        match shutdown.phase {
            Phase::Services => {
                let busy = self
                    .units
                    .values()
                    .any(|u| !u.life.state.is_settled() || u.is_pending());
                if busy {
                    return;
                }
                if !self.children_left {
                    return self.finish(out);
                }
                out.push(Effect::Log(
                    Level::Info,
                    "services stopped; sending SIGTERM to remaining processes".into(),
                ));
                out.push(Effect::SignalRemaining(libc::SIGTERM));
                out.push(Effect::SignalRemaining(libc::SIGCONT));
                if !self.settings.wait_for_leftovers {
                    return self.finish(out);
                }
                let timeout = self.settings.stop_timeout;
                if let Some(s) = self.shutdown.as_mut() {
                    s.phase = Phase::Term;
                    s.deadline = now.checked_add(timeout);
                }
            }
            Phase::Term | Phase::Kill => {
                if !self.children_left {
                    return self.finish(out);
                }
                if shutdown.deadline.is_some_and(|d| d <= now) {
                    if shutdown.phase == Phase::Term {
                        out.push(Effect::Log(
                            Level::Warn,
                            "processes still running; sending SIGKILL".into(),
                        ));
                        out.push(Effect::SignalRemaining(libc::SIGKILL));
                        if let Some(s) = self.shutdown.as_mut() {
                            s.phase = Phase::Kill;
                            s.deadline = now.checked_add(Duration::from_secs(5));
                        }
                    } else {
                        out.push(Effect::Log(
                            Level::Error,
                            "processes survive SIGKILL; ending anyway".into(),
                        ));
                        self.finish(out);
                    }
                }
            }
        }
    }

    pub(super) fn finish(&mut self, out: &mut Out) {
        if let Some(shutdown) = self.shutdown.take() {
            self.finished = true;
            self.ended_because = Some(shutdown.cause);
            out.push(Effect::Finish(shutdown.ending));
        }
    }
}
