//! What a request means: answers from a read-only [`View`] of the engine
//! and the logs (`list`, `status`, `logs`), or a [`Task`] the loop carries
//! out (`start`, `stop`, `restart`, `reload`, `poweroff`, `reboot`), whose
//! result [`Control::done`] turns into an answer, now or once the service
//! has settled.

use super::*;

/// The answer for a waiting request once its service settled; `None`
/// while it has not.
pub(super) fn settled(svc: &Unit, want: Want) -> Option<Response> {
    let name = &svc.spec.name;
    if svc.is_pending() {
        return None;
    }
    match (&svc.life.state, want) {
        (State::Reloading { .. }, _) => None,
        (State::Running { .. }, Want::Reloaded) => Some(match &svc.life.reload_failure {
            Some(reason) => Response::Error {
                message: format!("{name}: reload failed: {reason}"),
            },
            None => Response::Done {
                message: format!("{name}: reloaded"),
            },
        }),
        (state, Want::Reloaded) => Some(Response::Error {
            message: format!("{name}: {} during the reload", state.name()),
        }),
        (State::Running { .. } | State::Exited { .. }, Want::Up)
        | (State::Stopped | State::Exited { .. }, Want::Down) => Some(Response::Done {
            message: format!("{name}: {}", svc.life.state.name()),
        }),
        (State::Failed { reason }, _) => Some(Response::Error {
            message: format!("{name}: failed: {}", reason.describe()),
        }),
        (State::Waiting { .. }, Want::Up) => Some(Response::Error {
            message: format!("{name}: ended; restart pending ({})", last_exit_text(svc)),
        }),
        (State::Stopped, Want::Up) => Some(Response::Error {
            message: format!("{name}: stopped"),
        }),
        (State::Starting { .. } | State::Stopping { .. }, _)
        | (State::Waiting { .. }, Want::Down)
        | (State::Running { .. }, Want::Down) => None,
    }
}

fn last_exit_text(svc: &Unit) -> String {
    svc.life
        .last_exit
        .map_or_else(|| "no exit status".into(), Exit::describe)
}

pub(super) fn verb(command: &Command) -> &'static str {
    match command {
        Command::List => "list",
        Command::Status { .. } => "status",
        Command::Start { .. } => "start services",
        Command::Stop { .. } => "stop services",
        Command::Restart { .. } => "restart services",
        Command::Logs { .. } => "logs",
        Command::Reload { .. } => "reload",
        Command::Kill { .. } => "signal services",
        Command::Poweroff => "power off",
        Command::Reboot => "reboot",
        Command::Boot => "boot",
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub fn entry(line: LogLine) -> LogEntry {
    LogEntry {
        time: unix_seconds(line.time),
        pid: line.pid,
        text: line.text,
    }
}

/// A service as `list` and `status` show it.
pub fn info(svc: &Unit, logs: Option<&LogRing>, recent: usize) -> ServiceInfo {
    let now_instant = Instant::now();
    let since = SystemTime::now()
        .checked_sub(now_instant.saturating_duration_since(svc.life.since))
        .unwrap_or(UNIX_EPOCH);
    let result = match &svc.life.state {
        State::Failed { reason } => Some(reason.describe()),
        _ => None,
    };
    ServiceInfo {
        name: svc.spec.name.clone(),
        state: svc.state_name().to_string(),
        pid: svc.life.state.main_pid(),
        restarts: svc.life.restarts,
        last_exit: svc.life.last_exit.map(|e| match e {
            Exit::Code(c) => LastExit::Code(c),
            Exit::Signal(s) => LastExit::Signal(s),
        }),
        since: unix_seconds(since),
        service_type: match svc.spec.service_type {
            ServiceType::Simple => "simple",
            ServiceType::Oneshot => "oneshot",
            ServiceType::Notify => "notify",
            ServiceType::Forking => "forking",
        }
        .to_string(),
        result,
        waiting_for: if svc.pending == crate::engine::orchestrator::Pending::Start {
            svc.waiting_for.clone()
        } else {
            None
        },
        status_text: svc.status_text.clone(),
        command: svc
            .spec
            .exec_start
            .argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        requires: svc.deps.requires.iter().cloned().collect(),
        wants: svc.deps.wants.iter().cloned().collect(),
        after: svc.deps.after.iter().cloned().collect(),
        recent: logs.map_or_else(Vec::new, |l| {
            l.tail(Some(recent)).into_iter().map(entry).collect()
        }),
    }
}

/// What the control server reads: the engine's services and the logs.
pub struct View<'a> {
    pub engine: &'a Engine,
    pub logs: &'a HashMap<String, LogRing>,
    pub boot: &'a BootReport,
}

impl View<'_> {
    pub(in crate::runtime) fn logs_of(&self, service: &str) -> Option<&LogRing> {
        static EMPTY: std::sync::OnceLock<LogRing> = std::sync::OnceLock::new();
        self.engine.unit(service)?;
        Some(
            self.logs
                .get(service)
                .unwrap_or_else(|| EMPTY.get_or_init(|| LogRing::new(0))),
        )
    }
}

/// What a request asks of the loop beyond an answer from the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    Engine(EngineRequest),
    Reload,
    Shutdown { reboot: bool },
}

/// How a task went, for the answer.
#[derive(Debug)]
pub enum Done {
    Message(String),
    Reloaded(ReloadReport),
}

/// What to do with a request.
#[derive(Debug)]
pub enum Step {
    /// Answer this now.
    Reply(Box<Response>),
    /// The answer comes later (a `logs` stream, a `stop` that waits for
    /// the service to go down).
    Later,
    /// The loop carries this out and hands the result to [`Control::done`].
    Do(Task),
}

fn reply(response: Response) -> Step {
    Step::Reply(Box::new(response))
}

/// Maps one request to an answer from the view, or to a task for the
/// loop. Changes nothing but this client's own state.
pub fn execute(
    view: &View<'_>,
    ctl: &mut Control,
    token: Token,
    request: Result<Request, String>,
) -> Step {
    let request = match request {
        Ok(r) => r,
        Err(message) => return reply(Response::Error { message }),
    };
    crate::host::fault::point("control", request.command.name());
    // While the entropy gate holds them back, no service is loaded yet.
    let waiting = view.boot.entropy.state == "waiting";
    let unknown = |name: &str| {
        let hint = if waiting {
            " (services load once the kernel's random pool is initialized: see initctl boot)"
        } else {
            ""
        };
        reply(Response::Error {
            message: format!("no such service: {name}{hint}"),
        })
    };
    let engine_request = |name: String, request: fn(String) -> EngineRequest| {
        if waiting && view.engine.unit(&name).is_none() {
            unknown(&name)
        } else {
            Step::Do(Task::Engine(request(name)))
        }
    };
    match request.command {
        Command::List => reply(Response::List {
            services: view
                .engine
                .units()
                .map(|(name, u)| info(u, view.logs.get(name), 0))
                .collect(),
        }),
        Command::Status { name } => match view.engine.unit(&name) {
            Some(unit) => reply(Response::Status {
                service: info(unit, view.logs.get(&name), 10),
            }),
            None => unknown(&name),
        },
        Command::Start { name } => engine_request(name, EngineRequest::Start),
        Command::Restart { name } => engine_request(name, EngineRequest::Restart),
        Command::Stop { name } => engine_request(name, EngineRequest::Stop),
        Command::Logs {
            name,
            lines,
            follow,
        } => {
            let Some(ring) = view.logs_of(&name) else {
                return unknown(&name);
            };
            let total = ring.total();
            let kept = ring.len() as u64;
            let from = total - lines.map_or(kept, |n| (n as u64).min(kept));
            if let Some(c) = ctl.clients.get_mut(&token) {
                c.logs = Some(LogStream {
                    service: name,
                    next: from,
                    until: (!follow).then_some(total),
                });
            }
            // Written as the client reads (`pump`), then `end`.
            Step::Later
        }
        Command::Reload { name: None } => Step::Do(Task::Reload),
        Command::Reload { name: Some(name) } => engine_request(name, EngineRequest::Reload),
        Command::Kill { name, signal, all } => {
            let Some(signal) = crate::model::spec::parse_signal(&signal) else {
                return reply(Response::Error {
                    message: format!("unknown signal {signal:?}"),
                });
            };
            if waiting && view.engine.unit(&name).is_none() {
                return unknown(&name);
            }
            Step::Do(Task::Engine(EngineRequest::Kill { name, signal, all }))
        }
        Command::Poweroff => Step::Do(Task::Shutdown { reboot: false }),
        Command::Reboot => Step::Do(Task::Shutdown { reboot: true }),
        Command::Boot => reply(Response::Boot {
            report: view.boot.clone(),
        }),
    }
}

impl Control {
    /// The result of a task: answered now, or (`start`, `stop`, `restart`)
    /// once the service has settled, bounded by how long that may take: a
    /// stop is ExecStop, then the signal, then SIGKILL (three stop
    /// timeouts at most); a start or restart may first wait for the
    /// service to go down.
    pub fn done(
        &mut self,
        token: Token,
        task: &Task,
        result: Result<Done, String>,
        view: &View<'_>,
    ) -> Step {
        let done = match result {
            Ok(done) => done,
            Err(message) => return reply(Response::Error { message }),
        };
        match (task, done) {
            (Task::Engine(EngineRequest::Kill { name, signal, all }), Done::Message(_)) => {
                let whom = if *all {
                    "every process"
                } else {
                    "its main process"
                };
                reply(Response::Done {
                    message: format!(
                        "{name}: {} sent to {whom}",
                        crate::model::spec::signal_name(*signal)
                    ),
                })
            }
            (Task::Engine(request), Done::Message(_)) => {
                let (name, want) = match request {
                    EngineRequest::Start(n) | EngineRequest::Restart(n) => (n, Want::Up),
                    EngineRequest::Stop(n) | EngineRequest::Kill { name: n, .. } => (n, Want::Down),
                    EngineRequest::Reload(n) => (n, Want::Reloaded),
                };
                let timeout = view.engine.unit(name).map_or(Duration::ZERO, |u| {
                    let stop_total = u.spec.stop_timeout().saturating_mul(3);
                    match want {
                        Want::Down => stop_total,
                        Want::Up => stop_total.saturating_add(u.spec.timeout_start),
                        Want::Reloaded => u.spec.timeout_start,
                    }
                });
                self.wait_for(token, name, want, timeout);
                Step::Later
            }
            (_, Done::Reloaded(report)) => reply(Response::Reload { report }),
            (_, Done::Message(message)) => reply(Response::Done { message }),
        }
    }
}
