//! The scheduler and what reaches one service: starts and stops as their
//! gates open, events handed to a service's state machine (on a copy kept
//! only if it returns), what follows for the others, processes started and
//! reaped, time passing, readiness, and abandonment.

use std::collections::BTreeSet;
use std::time::Instant;

use super::*;

impl Engine {
    // ---- the scheduler ----

    /// Starts what may start and stops what may stop, until nothing moves.
    pub(super) fn schedule(&mut self, now: Instant, out: &mut Out) {
        self.dirty = false;
        if self.shutdown.is_some() {
            // Whatever still runs or is about to restart must stop.
            for unit in self.units.values_mut() {
                unit.pending = if unit.life.state.is_settled()
                    || matches!(unit.life.state, State::Stopping { .. })
                {
                    Pending::None
                } else {
                    Pending::Stop
                };
            }
        }
        loop {
            let mut moved = false;
            let pending: Vec<String> = self
                .units
                .iter()
                .filter(|(_, u)| u.is_pending())
                .map(|(n, _)| n.clone())
                .collect();
            for name in pending {
                moved |= self.advance(&name, now, out);
            }
            if !moved {
                break;
            }
        }
    }

    /// Moves one pending service if its gate allows; whether it moved.
    pub(super) fn advance(&mut self, name: &str, now: Instant, out: &mut Out) -> bool {
        let Some(unit) = self.units.get(name) else {
            return false;
        };
        let stopping = matches!(unit.life.state, State::Stopping { .. });
        let settled = unit.life.state.is_settled();
        match unit.pending {
            Pending::None => false,
            // Started while still stopping: start once it is down.
            Pending::Start if stopping => false,
            Pending::Start => {
                let gate = graph::start_gate(&unit.deps, |other| {
                    self.units
                        .get(other)
                        .map_or(DepState::Stopped, Unit::dep_state)
                });
                match gate {
                    Gate::Go => {
                        self.set_pending(name, Pending::None, None);
                        self.deliver(name, Event::Start, now, out);
                        true
                    }
                    Gate::Fail(reason) => {
                        self.set_pending(name, Pending::None, None);
                        out.push(Effect::Log(
                            Level::Error,
                            format!("{name}: not started: {reason}"),
                        ));
                        self.deliver(name, Event::Refuse { reason }, now, out);
                        true
                    }
                    Gate::Wait(reason) => {
                        if let Some(u) = self.units.get_mut(name) {
                            u.waiting_for = Some(reason);
                        }
                        false
                    }
                }
            }
            // Down already: a restart is a start from here on.
            Pending::Restart | Pending::Restarting if settled => {
                self.set_pending(name, Pending::Start, None);
                true
            }
            // The stop was sent (and overrides any decision to restart on
            // its own): wait until it is down.
            Pending::Restarting => false,
            Pending::Stop | Pending::Restart => {
                // What is ordered after it and stops too stops first.
                let blocked = graph::stop_gate(&unit.deps, |other| {
                    self.units
                        .get(other)
                        .is_some_and(Unit::is_stopping_or_about_to)
                });
                if blocked.is_some() {
                    return false;
                }
                let next = if unit.pending == Pending::Stop {
                    Pending::None
                } else {
                    Pending::Restarting
                };
                self.set_pending(name, next, None);
                self.deliver(name, Event::Stop, now, out);
                true
            }
        }
    }

    pub(super) fn set_pending(
        &mut self,
        name: &str,
        pending: Pending,
        waiting_for: Option<String>,
    ) {
        if let Some(u) = self.units.get_mut(name) {
            u.pending = pending;
            u.waiting_for = waiting_for;
        }
    }

    // ---- events to services ----

    /// Hands one event to a service's state machine and turns its actions
    /// into effects. The machine runs on a copy kept only if it returns:
    /// a panic in it fails that service alone ([`Engine::abandon`]).
    pub(super) fn deliver(&mut self, name: &str, event: Event, now: Instant, out: &mut Out) {
        let Some(unit) = self.units.get_mut(name) else {
            return;
        };
        if unit.next_spec.is_some()
            && matches!(event, Event::Start | Event::Deadline)
            && (unit.life.state.is_settled() || matches!(unit.life.state, State::Waiting { .. }))
        {
            if let Some(mut next) = unit.next_spec.take() {
                next.timeout_stop.get_or_insert(self.settings.stop_timeout);
                unit.spec = next;
                out.push(Effect::Log(
                    Level::Info,
                    format!("{name}: using its changed service file"),
                ));
            }
        }
        let before = unit.life.state.clone();
        let what = event.name();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut life = unit.life.clone();
            let actions = life.handle(&unit.spec, event, now);
            (life, actions)
        }));
        let actions = match result {
            Ok((life, actions)) => {
                unit.life = life;
                actions
            }
            Err(payload) => {
                let text = panic_text(payload.as_ref());
                self.abandon(
                    name,
                    &format!("a panic while handling {what}: {text}"),
                    &[],
                    now,
                    out,
                );
                return;
            }
        };
        for action in actions {
            match action {
                Action::Spawn(proc) => out.push(Effect::Spawn {
                    service: name.to_string(),
                    proc,
                }),
                Action::Signal { pid, group, signal } => out.push(Effect::Signal {
                    service: name.to_string(),
                    pid,
                    group,
                    signal,
                }),
                Action::Log(level, message) => {
                    out.push(Effect::Log(level, format!("{name}: {message}")))
                }
                Action::End(action, status) => self.end_action(name, action, status, now, out),
                Action::SignalControl { pid, signal } => out.push(Effect::SignalControl {
                    service: name.to_string(),
                    pid,
                    signal,
                }),
                Action::FindMainPid { starter } => out.push(Effect::FindMainPid {
                    service: name.to_string(),
                    starter,
                }),
            }
        }
        self.after_transition(name, &before, out);
    }

    /// Reacts to a service's change for the others: what requires a
    /// service that went down is stopped, a removed service that is down is
    /// forgotten, and the scheduler looks again.
    pub(super) fn after_transition(&mut self, name: &str, before: &State, out: &mut Out) {
        let Some(unit) = self.units.get(name) else {
            return;
        };
        let now_state = &unit.life.state;
        if before == now_state {
            return;
        }
        self.dirty = true;
        let went_down = match now_state {
            State::Failed { .. } | State::Stopped => true,
            State::Exited { active: false } => unit.spec.service_type != ServiceType::Oneshot,
            State::Exited { active: true }
            | State::Starting { .. }
            | State::Running { .. }
            | State::Reloading { .. }
            | State::Stopping { .. }
            | State::Waiting { .. } => false,
        };
        let was_up = matches!(
            before,
            State::Running { .. }
                | State::Reloading { .. }
                | State::Starting { .. }
                | State::Stopping { .. }
                | State::Exited { active: true }
        );
        let down = matches!(
            now_state,
            State::Failed { .. }
                | State::Stopped
                | State::Exited { active: false }
                | State::Waiting { .. }
        );
        if down && (!unit.spec.runtime_directory.is_empty() || unit.spec.pid_file.is_some()) {
            out.push(Effect::Cleanup {
                service: name.to_string(),
                runtime_directories: unit.spec.runtime_directory.clone(),
                pid_file: unit.spec.pid_file.clone(),
            });
        }
        if went_down && was_up {
            let why = now_state.name();
            let dependents: Vec<String> = unit.deps.required_by.iter().cloned().collect();
            for dep in dependents {
                if let Some(d) = self.units.get_mut(&dep) {
                    if !d.life.state.is_settled()
                        && !matches!(
                            d.pending,
                            Pending::Stop | Pending::Restart | Pending::Restarting
                        )
                        && !matches!(d.life.state, State::Stopping { .. })
                    {
                        out.push(Effect::Log(
                            Level::Info,
                            format!("{dep}: stopping: it requires {name}, which is {why}"),
                        ));
                        d.pending = Pending::Stop;
                    }
                }
            }
        }
        if self
            .units
            .get(name)
            .is_some_and(|u| u.removed && u.life.state.is_settled())
        {
            out.push(Effect::Log(Level::Info, format!("{name}: removed")));
            self.forget(name, out);
        }
    }

    /// Drops a removed service. A process of it init gave up on (it
    /// survived SIGKILL) becomes an orphan: reaped, owned by no one.
    pub(super) fn forget(&mut self, name: &str, out: &mut Out) {
        self.units.remove(name);
        self.procs.retain(|_, owner| owner != name);
        out.push(Effect::Forget(name.to_string()));
    }

    pub(super) fn spawned(
        &mut self,
        service: &str,
        result: Result<Pid, SpawnFailure>,
        now: Instant,
        out: &mut Out,
    ) {
        let event = match result {
            Ok(pid) => {
                // A new process got a pid that a stopping service still
                // remembers as its process group: that group is gone (pids
                // are not reused while a group of that number exists), so
                // it must never be signalled again.
                let stale: Vec<String> = self
                    .units
                    .iter()
                    .filter(|(_, u)| {
                        matches!(u.life.state, State::Stopping { group: Some(g), group_alive: true, main: None, .. } if g == pid)
                    })
                    .map(|(n, _)| n.clone())
                    .collect();
                for name in stale {
                    self.deliver(&name, Event::GroupEmpty, now, out);
                }
                self.procs.insert(pid, service.to_string());
                self.children_left = true;
                Event::Spawned { pid }
            }
            Err(f) => Event::SpawnFailed {
                reason: f.reason,
                status: f.status,
                transient: f.transient,
            },
        };
        self.deliver(service, event, now, out);
    }

    /// One batch of exits: every pid leaves `procs` before any exit is
    /// delivered, since delivering one can start a process at once, which
    /// the kernel may give the pid of a later exit of the same batch.
    pub(super) fn reaped(
        &mut self,
        exits: Vec<Reaped>,
        children_left: bool,
        now: Instant,
        out: &mut Out,
    ) {
        self.children_left = children_left;
        let routed: Vec<(String, Reaped)> = exits
            .into_iter()
            .filter_map(|r| self.procs.remove(&r.pid).map(|name| (name, r)))
            .collect();
        for (name, r) in routed {
            self.deliver(
                &name,
                Event::Exited {
                    pid: r.pid,
                    exit: r.exit,
                    group_alive: r.group_alive,
                },
                now,
                out,
            );
        }
        self.dirty = true;
    }

    pub(super) fn tick(&mut self, now: Instant, out: &mut Out) {
        let due: Vec<String> = self
            .units
            .iter()
            .filter(|(_, u)| u.life.deadline().is_some_and(|d| d <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.deliver(&name, Event::Deadline, now, out);
        }
    }

    // ---- failures outside a service ----

    /// Fails a service init lost track of: SIGKILL to every process init
    /// still has of it (and `extra`, processes started but never handed
    /// in; and a stopping group while it lives), `failed` with the reason,
    /// what requires it stopped, its `FailureAction` applied. Only pids
    /// init still has are signalled: one it reaped may be someone else's.
    pub(super) fn abandon(
        &mut self,
        name: &str,
        why: &str,
        extra: &[Pid],
        now: Instant,
        out: &mut Out,
    ) {
        out.push(Effect::Log(
            Level::Error,
            format!("{name}: internal error: {why}; killing its processes; it is failed"),
        ));
        let mut pids: BTreeSet<Pid> = self.processes_of(name).collect();
        pids.extend(extra);
        let Some(unit) = self.units.get_mut(name) else {
            return;
        };
        if let State::Stopping {
            group: Some(g),
            group_alive: true,
            ..
        } = unit.life.state
        {
            pids.insert(g);
        }
        let before = unit.life.state.clone();
        unit.pending = Pending::None;
        unit.waiting_for = None;
        unit.life.fail(Failure::Internal(why.to_string()), now);
        let action = unit.spec.failure_action;
        for pid in pids {
            self.procs.remove(&pid);
            out.push(Effect::Signal {
                service: name.to_string(),
                pid,
                group: true,
                signal: libc::SIGKILL,
            });
        }
        self.after_transition(name, &before, out);
        self.end_action(name, action, 1, now, out);
    }
}
