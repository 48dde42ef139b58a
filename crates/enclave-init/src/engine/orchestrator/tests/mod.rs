//! The orchestrator over its inputs, without processes or clocks: a small
//! simulated world (`World`) carries out the effects the way the event loop
//! does (a spawn gets the next fake pid and is handed back at once) and
//! records what was asked of it.

use super::*;
use crate::engine::lifecycle::StartStep;

fn at(ms: u64) -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now) + Duration::from_millis(ms)
}

fn settings(mode: Mode) -> Settings {
    Settings {
        mode,
        stop_timeout: Duration::from_secs(10),
        final_timeout: Duration::from_secs(300),
        wait_for_leftovers: true,
    }
}

fn spec(name: &str) -> ServiceSpec {
    ServiceSpec::new(name, vec![format!("/bin/{name}").into()])
}

fn requires(mut s: ServiceSpec, names: &[&str]) -> ServiceSpec {
    s.requires = names.iter().map(|n| n.to_string()).collect();
    s
}

/// The event loop, simulated: spawns succeed with increasing pids (unless
/// told to fail), every effect is recorded.
struct World {
    engine: Engine,
    now: Instant,
    next_pid: Pid,
    /// Every effect but spawns, in order.
    log: Vec<Effect>,
    /// Every spawn: (service, proc, pid).
    spawns: Vec<(String, Proc, Pid)>,
    answers: Vec<Result<String, String>>,
    finished: Option<Ending>,
    fail_spawns: bool,
}

impl World {
    fn new(mode: Mode) -> Self {
        Self {
            engine: Engine::new(settings(mode)),
            now: at(0),
            next_pid: 100,
            log: Vec::new(),
            spawns: Vec::new(),
            answers: Vec::new(),
            finished: None,
            fail_spawns: false,
        }
    }

    fn with(mode: Mode, services: Vec<ServiceSpec>) -> Self {
        let mut w = Self::new(mode);
        w.feed(Input::Load(ServiceSet {
            services,
            broken: BTreeSet::new(),
        }));
        w
    }

    fn feed(&mut self, input: Input) {
        let mut queue: std::collections::VecDeque<Effect> =
            self.engine.handle(input, self.now).into();
        while let Some(effect) = queue.pop_front() {
            match effect {
                Effect::Spawn { service, proc } => {
                    let result = if self.fail_spawns {
                        Err(SpawnFailure {
                            reason: "exec: not found".into(),
                            status: 127,
                            transient: false,
                        })
                    } else {
                        self.next_pid += 1;
                        self.spawns.push((service.clone(), proc, self.next_pid));
                        Ok(self.next_pid)
                    };
                    queue.extend(
                        self.engine
                            .handle(Input::Spawned { service, result }, self.now),
                    );
                }
                Effect::Answer(a) => self.answers.push(a),
                Effect::Finish(e) => self.finished = Some(e),
                other => self.log.push(other),
            }
        }
    }

    fn request(&mut self, r: Request) -> Result<String, String> {
        self.feed(Input::Request(r));
        let answer = self.answers.pop().expect("every request is answered");
        answer.map(|name| format!("{name}: {}", self.state(&name)))
    }

    fn exit(&mut self, pid: Pid, exit: Exit) {
        self.feed(Input::Reaped {
            exits: vec![Reaped {
                pid,
                exit,
                group_alive: false,
            }],
            children_left: true,
        });
    }

    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.feed(Input::Tick);
    }

    fn state(&self, name: &str) -> &'static str {
        self.engine.unit(name).map_or("gone", Unit::state_name)
    }

    fn pid(&self, name: &str) -> Option<Pid> {
        self.engine.unit(name).and_then(|u| u.life.state.main_pid())
    }

    fn spawned(&self, name: &str) -> Vec<Pid> {
        self.spawns
            .iter()
            .filter(|(s, _, _)| s == name)
            .map(|(_, _, p)| *p)
            .collect()
    }

    /// Signals sent to `name`, as (pid, signal).
    fn signals(&self, name: &str) -> Vec<(Pid, i32)> {
        self.log
            .iter()
            .filter_map(|e| match e {
                Effect::Signal {
                    service,
                    pid,
                    signal,
                    ..
                } if service == name => Some((*pid, *signal)),
                _ => None,
            })
            .collect()
    }

    fn logged(&self, needle: &str) -> bool {
        self.log
            .iter()
            .any(|e| matches!(e, Effect::Log(_, m) if m.contains(needle)))
    }

    /// Every process a service's state names is one the engine knows as
    /// that service's: the invariant a lost exit or start would break.
    fn check_invariants(&self) {
        for (name, unit) in self.engine.units() {
            for pid in unit.life.state.pids() {
                assert_eq!(
                    self.engine.owner(pid),
                    Some(name.as_str()),
                    "{name} names pid {pid} the engine does not know as its"
                );
            }
        }
        for (pid, owner) in &self.engine.procs {
            assert!(
                self.engine.unit(owner).is_some(),
                "pid {pid} belongs to {owner}, which does not exist"
            );
        }
    }
}

#[test]
fn requirements_start_first_and_independent_services_together() {
    let w = World::with(
        Mode::NoBoot,
        vec![requires(spec("web"), &["db"]), spec("db"), spec("cron")],
    );
    // db and cron start at once; web only once db runs (Type=simple: at
    // its exec), in the same settling.
    let order: Vec<&str> = w.spawns.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(order, ["cron", "db", "web"]);
    for name in ["web", "db", "cron"] {
        assert_eq!(w.state(name), "running");
    }
    w.check_invariants();
    assert!(w.logged("supervising 3 services"));
}

#[test]
fn a_start_waits_for_a_notify_requirement_to_be_ready() {
    let mut db = spec("db");
    db.service_type = ServiceType::Notify;
    let mut w = World::with(Mode::NoBoot, vec![requires(spec("web"), &["db"]), db]);
    assert_eq!(w.spawned("web"), Vec::<Pid>::new());
    assert_eq!(w.state("web"), "starting");
    assert_eq!(
        w.engine.unit("web").unwrap().waiting_for.as_deref(),
        Some("waiting for db: not ready")
    );
    let db_pid = w.pid("db").unwrap();
    // Readiness from a process of db's group counts; from anyone else not.
    w.feed(Input::Notify {
        pid: 999,
        pgid: Some(999),
        facts: Default::default(),
        fields: Ok(vec![("READY".into(), "1".into())]),
    });
    assert_eq!(
        w.log.last(),
        Some(&Effect::Noise(Noise::ForeignNotify { pid: 999 }))
    );
    w.feed(Input::Notify {
        pid: 555,
        pgid: Some(db_pid),
        facts: Default::default(),
        fields: Ok(vec![
            ("STATUS".into(), "warming up".into()),
            ("READY".into(), "1".into()),
        ]),
    });
    assert_eq!(w.state("db"), "running");
    assert_eq!(
        w.engine.unit("db").unwrap().status_text.as_deref(),
        Some("warming up")
    );
    assert_eq!(w.state("web"), "running");
    w.feed(Input::Notify {
        pid: db_pid,
        pgid: None,
        facts: Default::default(),
        fields: Err("not UTF-8".into()),
    });
    assert!(matches!(
        w.log.last(),
        Some(Effect::Noise(Noise::GarbageNotify { service, .. })) if service == "db"
    ));
}

#[test]
fn a_failed_requirement_refuses_its_dependent() {
    let mut w = World::new(Mode::NoBoot);
    w.fail_spawns = true;
    w.feed(Input::Load(ServiceSet {
        services: vec![requires(spec("web"), &["db"]), spec("db")],
        broken: BTreeSet::new(),
    }));
    assert_eq!(w.state("db"), "failed");
    assert_eq!(w.state("web"), "failed");
    assert!(w.logged("web: not started: required service db failed"));
}

#[test]
fn cycles_and_missing_requirements_are_refused_at_load() {
    let w = World::with(
        Mode::NoBoot,
        vec![
            requires(spec("a"), &["b"]),
            requires(spec("b"), &["a"]),
            requires(spec("c"), &["nope"]),
            spec("ok"),
        ],
    );
    for name in ["a", "b", "c"] {
        assert_eq!(w.state(name), "failed", "{name}");
    }
    assert_eq!(w.state("ok"), "running");
    let reason = |n: &str| match &w.engine.unit(n).unwrap().life.state {
        State::Failed { reason } => reason.describe(),
        other => panic!("{other:?}"),
    };
    assert_eq!(reason("a"), "dependency cycle: a -> b -> a");
    assert_eq!(reason("c"), "requires nope, which does not exist");
}

#[test]
fn stop_propagates_along_requires_dependents_first() {
    let mut w = World::with(
        Mode::NoBoot,
        vec![requires(spec("web"), &["db"]), spec("db")],
    );
    let (db, web) = (w.pid("db").unwrap(), w.pid("web").unwrap());
    assert_eq!(
        w.request(Request::Stop("db".into())),
        Ok("db: running".into())
    );
    // web is signalled first; db waits for it.
    assert_eq!(
        w.signals("web"),
        [(web, libc::SIGTERM), (web, libc::SIGCONT)]
    );
    assert_eq!(w.signals("db"), []);
    assert_eq!(w.state("db"), "running");
    w.exit(web, Exit::Signal(libc::SIGTERM));
    assert_eq!(w.state("web"), "stopped");
    assert_eq!(w.signals("db"), [(db, libc::SIGTERM), (db, libc::SIGCONT)]);
    w.exit(db, Exit::Signal(libc::SIGTERM));
    assert_eq!(w.state("db"), "stopped");
    w.check_invariants();
}

#[test]
fn a_requirement_that_dies_stops_its_dependent() {
    let mut w = World::with(
        Mode::NoBoot,
        vec![requires(spec("web"), &["db"]), spec("db")],
    );
    let (db, web) = (w.pid("db").unwrap(), w.pid("web").unwrap());
    w.exit(db, Exit::Code(1));
    assert_eq!(w.state("db"), "failed");
    assert!(w.logged("web: stopping: it requires db, which is failed"));
    assert_eq!(
        w.signals("web"),
        [(web, libc::SIGTERM), (web, libc::SIGCONT)]
    );
}

#[test]
fn start_brings_requirements_along_and_restart_stops_then_starts() {
    let mut w = World::with(
        Mode::NoBoot,
        vec![requires(spec("web"), &["db"]), spec("db")],
    );
    let (db, web) = (w.pid("db").unwrap(), w.pid("web").unwrap());
    w.request(Request::Stop("db".into())).unwrap();
    w.exit(web, Exit::Signal(15));
    w.exit(db, Exit::Signal(15));
    assert_eq!(
        w.request(Request::Start("web".into())),
        Ok("web: running".into())
    );
    assert_eq!(w.state("db"), "running");
    let db2 = w.pid("db").unwrap();
    let web2 = w.pid("web").unwrap();
    assert!(db2 != db && web2 != web);
    // restart db: web (requires db) goes down first and comes back after.
    assert_eq!(
        w.request(Request::Restart("db".into())),
        Ok("db: running".into())
    );
    assert_eq!(w.signals("web").last(), Some(&(web2, libc::SIGCONT)));
    w.exit(web2, Exit::Signal(15));
    w.exit(db2, Exit::Signal(15));
    assert_eq!(w.state("db"), "running");
    assert_eq!(w.state("web"), "running");
    assert!(w.pid("db").unwrap() != db2 && w.pid("web").unwrap() != web2);
    w.check_invariants();
}

#[test]
fn requests_for_unknown_services_or_during_shutdown_are_refused() {
    let mut w = World::with(Mode::NoBoot, vec![spec("a")]);
    assert_eq!(
        w.request(Request::Start("nope".into())),
        Err("no such service: nope".into())
    );
    w.feed(Input::Shutdown {
        ending: Ending::Exit(0),
        reason: "test".into(),
    });
    assert_eq!(
        w.request(Request::Restart("a".into())),
        Err("init is shutting down".into())
    );
    assert!(w.request(Request::Stop("a".into())).is_ok());
}

/// Puts `svc` of a fresh world into each state a request can meet.
fn world_in(state: &str) -> World {
    let mut s = spec("svc");
    s.restart = crate::model::spec::RestartPolicy::OnFailure;
    let mut pre = s.clone();
    pre.exec_start_pre = vec![crate::model::spec::Command {
        argv: vec!["/bin/pre".into()],
        ignore_failure: false,
        ..Default::default()
    }];
    let mut notify = s.clone();
    notify.service_type = ServiceType::Notify;
    let mut oneshot = s.clone();
    oneshot.service_type = ServiceType::Oneshot;
    oneshot.restart = crate::model::spec::RestartPolicy::No;
    oneshot.remain_after_exit = state == "exited-active";
    let chosen = match state {
        "starting-pre" => pre,
        "starting-main" => notify,
        "exited" | "exited-active" => oneshot,
        _ => s,
    };
    let mut w = World::with(Mode::NoBoot, vec![chosen]);
    let pid = |w: &World| *w.spawned("svc").last().unwrap();
    match state {
        "running" | "starting-pre" | "starting-main" => {}
        "stopping" => {
            w.request(Request::Stop("svc".into())).unwrap();
        }
        "waiting" => {
            let p = pid(&w);
            w.exit(p, Exit::Code(1));
        }
        "failed" => {
            let p = pid(&w);
            w.engine.units.get_mut("svc").unwrap().spec.restart =
                crate::model::spec::RestartPolicy::No;
            w.exit(p, Exit::Code(1));
        }
        "exited" | "exited-active" => {
            let p = pid(&w);
            w.exit(p, Exit::Code(0));
        }
        "stopped" => {
            w.request(Request::Stop("svc".into())).unwrap();
            let p = pid(&w);
            w.exit(p, Exit::Signal(15));
        }
        other => panic!("{other}"),
    }
    w
}

const STATES: &[(&str, &str)] = &[
    ("running", "running"),
    ("starting-pre", "starting"),
    ("starting-main", "starting"),
    ("stopping", "stopping"),
    ("waiting", "waiting"),
    ("failed", "failed"),
    ("exited", "exited"),
    ("exited-active", "exited"),
    ("stopped", "stopped"),
];

/// Lets the world settle: every live process of svc exits when signalled,
/// pre commands and oneshots succeed, notify services report ready,
/// restart delays pass.
fn settle(w: &mut World) {
    for _ in 0..20 {
        let Some(unit) = w.engine.unit("svc") else {
            return;
        };
        match unit.life.state.clone() {
            State::Stopping { main, control, .. } => {
                if let Some(p) = control.or(main) {
                    w.exit(p, Exit::Signal(15));
                } else {
                    w.feed(Input::GroupEmpty("svc".into()));
                }
            }
            State::Starting {
                step: StartStep::Pre(_),
                pid: Some(p),
                ..
            } => w.exit(p, Exit::Code(0)),
            State::Starting {
                step: StartStep::Main,
                pid: Some(p),
                ..
            } => {
                if unit.spec.service_type == ServiceType::Oneshot {
                    w.exit(p, Exit::Code(0));
                } else {
                    w.feed(Input::Notify {
                        pid: p,
                        pgid: Some(p),
                        facts: Default::default(),
                        fields: Ok(vec![("READY".into(), "1".into())]),
                    });
                }
            }
            State::Waiting { .. } => w.advance(60_000),
            _ => return,
        }
    }
}

#[test]
fn every_request_in_every_state_ends_where_it_says() {
    for &(state, shown) in STATES {
        let w = world_in(state);
        assert_eq!(w.state("svc"), shown, "setting up {state}");
        w.check_invariants();
        for request in ["start", "stop", "restart"] {
            let mut w = world_in(state);
            let before: Vec<Pid> = w.spawned("svc");
            let r = match request {
                "start" => Request::Start("svc".into()),
                "stop" => Request::Stop("svc".into()),
                _ => Request::Restart("svc".into()),
            };
            let answer = w.request(r);
            assert!(answer.is_ok(), "{request} in {state}: {answer:?}");
            settle(&mut w);
            w.check_invariants();
            let unit = w.engine.unit("svc").unwrap();
            assert!(!unit.is_pending(), "{request} in {state}: still pending");
            let after = w.state("svc");
            match request {
                "stop" => assert!(
                    matches!(after, "stopped" | "failed"),
                    "stop in {state}: {after}"
                ),
                _ => assert!(
                    matches!(after, "running" | "exited"),
                    "{request} in {state}: {after}"
                ),
            }
            if request == "restart" && !matches!(state, "stopped" | "failed" | "exited") {
                assert!(
                    w.spawned("svc").len() > before.len(),
                    "restart in {state} started nothing new"
                );
            }
        }
    }
}

#[test]
fn reload_adds_removes_and_changes_and_a_revert_is_a_change_back() {
    let v = |n: u32| {
        let mut s = spec("app");
        s.exec_start.argv = vec![format!("/bin/app-v{n}").into()];
        s
    };
    let reload = |w: &mut World, services: Vec<ServiceSpec>| {
        w.feed(Input::Reload(ServiceSet {
            services,
            broken: BTreeSet::new(),
        }));
        w.log
            .iter()
            .rev()
            .find_map(|e| match e {
                Effect::Reloaded(d) => Some(d.clone()),
                _ => None,
            })
            .unwrap()
    };
    let mut w = World::with(Mode::NoBoot, vec![v(1), spec("old")]);
    let d = reload(&mut w, vec![v(2), spec("new")]);
    assert_eq!(d.added, ["new"]);
    assert_eq!(d.removed, ["old"]);
    assert_eq!(d.changed, ["app"]);
    assert_eq!(w.state("new"), "running");
    // "old" stops, then is forgotten.
    let old = w.pid("old").unwrap();
    w.exit(old, Exit::Signal(15));
    assert_eq!(w.state("old"), "gone");
    assert!(w.log.contains(&Effect::Forget("old".into())));
    // Changed back: a change (back to what runs), nothing left pending.
    let d = reload(&mut w, vec![v(1), spec("new")]);
    assert_eq!(d.changed, ["app"]);
    assert!(w.engine.unit("app").unwrap().next_spec.is_none());
    let d = reload(&mut w, vec![v(1), spec("new")]);
    assert_eq!(d, ReloadDiff::default());
}

#[test]
fn a_pid_reused_within_one_batch_goes_to_its_new_owner() {
    // a's ExecStartPre and b's main end in one batch. Delivering the first
    // starts a's main process, which the kernel gives b's freed pid.
    let mut a = spec("a");
    a.exec_start_pre = vec![crate::model::spec::Command {
        argv: vec!["/bin/pre".into()],
        ignore_failure: false,
        ..Default::default()
    }];
    let mut w = World::with(Mode::NoBoot, vec![a, spec("b")]);
    let pre = w.spawned("a")[0];
    let b = w.pid("b").unwrap();
    w.next_pid = b - 1;
    w.feed(Input::Reaped {
        exits: vec![
            Reaped {
                pid: pre,
                exit: Exit::Code(0),
                group_alive: false,
            },
            Reaped {
                pid: b,
                exit: Exit::Signal(9),
                group_alive: false,
            },
        ],
        children_left: true,
    });
    assert_eq!(w.pid("a"), Some(b), "a's main got b's old pid");
    assert_eq!(w.state("a"), "running");
    assert_eq!(w.state("b"), "failed");
    assert_eq!(w.engine.owner(b), Some("a"));
    w.check_invariants();
}

#[test]
fn a_new_process_with_a_stopping_groups_number_forgets_that_group() {
    let mut w = World::with(Mode::NoBoot, vec![spec("old"), spec("other")]);
    let old = w.pid("old").unwrap();
    w.request(Request::Stop("old".into())).unwrap();
    // The main process exits; its group was alive, then.
    w.feed(Input::Reaped {
        exits: vec![Reaped {
            pid: old,
            exit: Exit::Signal(15),
            group_alive: true,
        }],
        children_left: true,
    });
    assert_eq!(w.state("old"), "stopping");
    assert_eq!(w.engine.groups_to_watch(), [("old".to_string(), old)]);
    // A new process gets the group's number: the group is gone.
    w.next_pid = old - 1;
    w.request(Request::Restart("other".into())).unwrap();
    let other = w.pid("other").unwrap();
    w.exit(other, Exit::Signal(15));
    assert_eq!(w.pid("other"), Some(old));
    assert_eq!(w.state("old"), "stopped");
    assert!(w.engine.groups_to_watch().is_empty());
}

#[test]
fn shutdown_stops_in_reverse_order_then_signals_what_remains_then_ends() {
    let mut w = World::with(Mode::Boot, vec![requires(spec("web"), &["db"]), spec("db")]);
    let (db, web) = (w.pid("db").unwrap(), w.pid("web").unwrap());
    w.feed(Input::Shutdown {
        ending: Ending::Poweroff,
        reason: "received SIGTERM from pid 1".into(),
    });
    assert!(w.logged("shutting down (poweroff): received SIGTERM"));
    assert_eq!(w.signals("db"), []);
    w.exit(web, Exit::Signal(15));
    w.exit(db, Exit::Signal(15));
    // Services down, children left: SIGTERM to what remains, then SIGKILL
    // after shutdown.timeout, then the end.
    assert!(w.log.contains(&Effect::SignalRemaining(libc::SIGTERM)));
    assert_eq!(w.finished, None);
    w.advance(10_000);
    assert!(w.log.contains(&Effect::SignalRemaining(libc::SIGKILL)));
    w.feed(Input::Reaped {
        exits: vec![],
        children_left: false,
    });
    assert_eq!(w.finished, Some(Ending::Poweroff));
    // Finished: nothing more happens.
    assert!(w.engine.handle(Input::Tick, at(999_999)).is_empty());
}

/// One-command mode, as dumb-init: when the command has exited, what it
/// left behind gets SIGTERM and init ends at once, on no clock of its own.
#[test]
fn without_waiting_for_leftovers_the_end_follows_their_sigterm_at_once() {
    let mut main = spec("main");
    main.success_action = EndAction::Exit;
    main.failure_action = EndAction::Exit;
    let mut w = World::new(Mode::NoBoot);
    w.engine = Engine::new(Settings {
        wait_for_leftovers: false,
        ..settings(Mode::NoBoot)
    });
    w.feed(Input::Load(ServiceSet {
        services: vec![main],
        broken: BTreeSet::new(),
    }));
    let pid = w.pid("main").unwrap();
    w.exit(pid, Exit::Code(7));
    assert!(w.log.contains(&Effect::SignalRemaining(libc::SIGTERM)));
    assert!(!w.log.contains(&Effect::SignalRemaining(libc::SIGKILL)));
    assert_eq!(w.finished, Some(Ending::Exit(7)));
}

#[test]
fn a_service_that_never_dies_cannot_keep_the_end_from_coming() {
    let mut s = spec("stubborn");
    s.timeout_stop = Some(Duration::MAX);
    let mut w = World::with(Mode::Boot, vec![s]);
    w.feed(Input::Shutdown {
        ending: Ending::Poweroff,
        reason: "test".into(),
    });
    w.advance(299_000);
    assert!(!w.log.contains(&Effect::SignalRemaining(libc::SIGKILL)));
    w.advance(1_000);
    assert!(w.logged("shutdown took longer than 5min"));
    assert!(w.log.contains(&Effect::SignalRemaining(libc::SIGKILL)));
    w.feed(Input::Reaped {
        exits: vec![],
        children_left: false,
    });
    assert_eq!(w.finished, Some(Ending::Poweroff));
}

#[test]
fn end_actions_per_mode() {
    let cases = [
        (Mode::Boot, EndAction::Poweroff, 0, Ending::Poweroff),
        (Mode::Boot, EndAction::Exit, 3, Ending::Poweroff),
        (Mode::Boot, EndAction::Reboot, 0, Ending::Reboot),
        (Mode::NoBoot, EndAction::Poweroff, 0, Ending::Exit(0)),
        (Mode::NoBoot, EndAction::Exit, 3, Ending::Exit(3)),
    ];
    for (mode, action, code, ending) in cases {
        let mut s = spec("job");
        s.success_action = action;
        s.failure_action = action;
        s.success_exit_status = vec![crate::model::spec::SuccessStatus::Code(3)];
        let mut w = World::with(mode, vec![s]);
        let pid = w.pid("job").unwrap();
        w.exit(pid, Exit::Code(code));
        w.feed(Input::Reaped {
            exits: vec![],
            children_left: false,
        });
        assert_eq!(w.finished, Some(ending.clone()), "{mode:?} {action:?}");
    }
}

#[test]
fn an_abandoned_service_is_failed_its_processes_killed_its_dependents_stopped() {
    let mut w = World::with(
        Mode::NoBoot,
        vec![requires(spec("web"), &["db"]), spec("db")],
    );
    let (db, web) = (w.pid("db").unwrap(), w.pid("web").unwrap());
    w.feed(Input::Abandon {
        service: "db".into(),
        reason: "a panic".into(),
        pids: vec![4242],
    });
    assert_eq!(w.state("db"), "failed");
    let mut killed = w.signals("db");
    killed.sort();
    assert_eq!(killed, [(db, libc::SIGKILL), (4242, libc::SIGKILL)]);
    assert_eq!(w.engine.owner(db), None);
    assert!(w.logged("db: internal error: a panic"));
    assert_eq!(
        w.signals("web"),
        [(web, libc::SIGTERM), (web, libc::SIGCONT)]
    );
    w.check_invariants();
}

mod sequences;

mod daemons;
