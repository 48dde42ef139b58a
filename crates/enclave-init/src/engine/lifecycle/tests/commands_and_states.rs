//! `ExecStartPre`, `ExecStop`, readiness, spawn failures, and every state
//! times every event.

use super::*;

#[test]
fn exec_start_pre_runs_in_order_and_gates_the_start() {
    let mut s = spec();
    s.exec_start_pre = vec![
        Command {
            argv: vec!["/bin/a".into()],
            ignore_failure: false,
            ..Default::default()
        },
        Command {
            argv: vec!["/bin/b".into()],
            ignore_failure: true,
            ..Default::default()
        },
        Command {
            argv: vec!["/bin/c".into()],
            ignore_failure: false,
            ..Default::default()
        },
    ];
    let mut life = Life::new(at(0));
    assert_eq!(
        life.handle(&s, Event::Start, at(0)),
        [Action::Spawn(Proc::Pre(0))]
    );
    life.handle(&s, Event::Spawned { pid: 1 }, at(0));
    assert_eq!(life.state.main_pid(), None);
    assert_eq!(
        effects(&life.handle(&s, exited(1, 0), at(1))),
        [Action::Spawn(Proc::Pre(1))]
    );
    life.handle(&s, Event::Spawned { pid: 2 }, at(1));
    let a = life.handle(&s, exited(2, 5), at(2));
    assert_eq!(effects(&a), [Action::Spawn(Proc::Pre(2))]);
    assert_eq!(logs(&a), ["ExecStartPre 2 exited with status 5 (ignored)"]);
    life.handle(&s, Event::Spawned { pid: 3 }, at(2));
    let a = life.handle(&s, exited(3, 1), at(3));
    assert_eq!(
        logs(&a),
        [
            "ExecStartPre 3 exited with status 1",
            "failed: exited with status 1"
        ]
    );
    assert_eq!(
        life.state,
        State::Failed {
            reason: Failure::Exit(Exit::Code(1))
        }
    );
}

#[test]
fn exec_stop_runs_before_the_kill_signal() {
    let mut s = spec();
    s.exec_stop = vec![Command {
        argv: vec!["/bin/stop".into()],
        ignore_failure: false,
        ..Default::default()
    }];
    let mut life = running(&s, 20);
    assert_eq!(
        effects(&life.handle(&s, Event::Stop, at(0))),
        [Action::Spawn(Proc::Stop(0))]
    );
    life.handle(&s, Event::Spawned { pid: 21 }, at(0));
    let a = life.handle(&s, exited(21, 0), at(100));
    assert_eq!(
        effects(&a),
        [
            Action::Signal {
                pid: 20,
                group: true,
                signal: libc::SIGTERM
            },
            Action::Signal {
                pid: 20,
                group: true,
                signal: libc::SIGCONT
            },
        ]
    );
    assert_eq!(
        life.state.deadline(),
        Some(at(5100)),
        "the signal phase gets its own timeout"
    );
    life.handle(&s, exited(20, 0), at(200));
    assert_eq!(life.state, State::Stopped);
}

#[test]
fn exec_stop_that_hangs_is_killed_and_the_signal_follows() {
    let mut s = spec();
    s.exec_stop = vec![Command {
        argv: vec!["/bin/stop".into()],
        ignore_failure: false,
        ..Default::default()
    }];
    let mut life = running(&s, 20);
    life.handle(&s, Event::Stop, at(0));
    life.handle(&s, Event::Spawned { pid: 21 }, at(0));
    let a = life.handle(&s, Event::Deadline, at(5000));
    assert_eq!(
        effects(&a),
        [
            Action::SignalControl {
                pid: 21,
                signal: libc::SIGKILL
            },
            Action::Signal {
                pid: 20,
                group: true,
                signal: libc::SIGTERM
            },
            Action::Signal {
                pid: 20,
                group: true,
                signal: libc::SIGCONT
            },
        ]
    );
    life.handle(&s, exited(20, 0), at(5001));
    assert_eq!(
        life.state.name(),
        "stopping",
        "waits for the ExecStop process too"
    );
    life.handle(
        &s,
        Event::Exited {
            pid: 21,
            exit: Exit::Signal(9),
            group_alive: false,
        },
        at(5002),
    );
    assert_eq!(life.state, State::Stopped);
}

#[test]
fn notify_is_ready_only_on_ready() {
    let mut s = spec();
    s.service_type = ServiceType::Notify;
    s.timeout_start = Duration::from_secs(2);
    let mut life = Life::new(at(0));
    life.handle(&s, Event::Start, at(0));
    life.handle(&s, Event::Spawned { pid: 5 }, at(0));
    assert_eq!(life.state.name(), "starting");
    assert!(!life.state.is_ready());
    assert_eq!(life.state.main_pid(), Some(5));
    life.handle(&s, Event::Ready, at(10));
    assert_eq!(life.state, State::Running { pid: 5 });
    assert!(life.state.is_ready());
}

#[test]
fn notify_start_timeout_stops_and_fails() {
    let mut s = spec();
    s.service_type = ServiceType::Notify;
    s.timeout_start = Duration::from_secs(2);
    let mut life = Life::new(at(0));
    life.handle(&s, Event::Start, at(0));
    life.handle(&s, Event::Spawned { pid: 5 }, at(0));
    let a = life.handle(&s, Event::Deadline, at(2000));
    assert_eq!(logs(&a), ["not ready within TimeoutStartSec=2s"]);
    assert_eq!(
        effects(&a)[0],
        Action::Signal {
            pid: 5,
            group: true,
            signal: libc::SIGTERM
        }
    );
    let a = life.handle(
        &s,
        Event::Exited {
            pid: 5,
            exit: Exit::Signal(15),
            group_alive: false,
        },
        at(2001),
    );
    assert_eq!(
        life.state,
        State::Failed {
            reason: Failure::StartTimeout
        }
    );
    assert!(logs(&a).contains(&"failed: start timed out"));
}

#[test]
fn oneshot_is_ready_when_it_exits_successfully() {
    let mut s = spec();
    s.service_type = ServiceType::Oneshot;
    let mut life = Life::new(at(0));
    life.handle(&s, Event::Start, at(0));
    life.handle(&s, Event::Spawned { pid: 5 }, at(0));
    assert_eq!(life.state.name(), "starting");
    life.handle(&s, exited(5, 0), at(1));
    assert_eq!(life.state, State::Exited { active: false });
    assert!(!life.state.is_ready());

    s.remain_after_exit = true;
    let mut life = Life::new(at(0));
    life.handle(&s, Event::Start, at(0));
    life.handle(&s, Event::Spawned { pid: 6 }, at(0));
    life.handle(&s, exited(6, 0), at(1));
    assert_eq!(life.state, State::Exited { active: true });
    assert!(life.state.is_ready());
    // Stopping it deactivates it.
    life.handle(&s, Event::Stop, at(2));
    assert_eq!(life.state, State::Stopped);
}

#[test]
fn spawn_failures() {
    let mut s = spec();
    s.restart = RestartPolicy::No;
    let mut life = Life::new(at(0));
    life.handle(&s, Event::Start, at(0));
    let a = life.handle(
        &s,
        Event::SpawnFailed {
            reason: "exec /bin/nope: No such file or directory".into(),
            status: 127,
            transient: false,
        },
        at(0),
    );
    assert_eq!(
        logs(&a),
        [
            "exec /bin/nope: No such file or directory",
            "failed: exec /bin/nope: No such file or directory"
        ]
    );
    assert!(matches!(
        life.state,
        State::Failed {
            reason: Failure::Spawn { status: 127, .. }
        }
    ));

    // Out of processes: wait and retry, whatever the policy, without
    // spending the start limit, backing off while it lasts (100 ms doubling
    // to 10 s) and logging an error only for the first failure of a run.
    s.start_limit_burst = 1;
    let mut life = Life::new(at(0));
    let mut now = 0;
    let mut waits = Vec::new();
    for n in 0..10 {
        let a = life.handle(
            &s,
            if n == 0 {
                Event::Start
            } else {
                Event::Deadline
            },
            at(now),
        );
        assert_eq!(a, [Action::Spawn(Proc::Main)], "try {n}");
        let a = life.handle(
            &s,
            Event::SpawnFailed {
                reason: "fork: Resource temporarily unavailable".into(),
                status: 1,
                transient: true,
            },
            at(now),
        );
        let level = if n == 0 { Level::Error } else { Level::Debug };
        assert!(
            matches!(a.as_slice(), [Action::Log(l, _)] if *l == level),
            "try {n}: {a:?}"
        );
        let State::Waiting { until } = life.state else {
            panic!("try {n}: {:?}", life.state);
        };
        let wait = until.duration_since(at(now)).as_millis() as u64;
        waits.push(wait);
        now += wait;
    }
    assert_eq!(
        waits,
        [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000]
    );
    // A start that works ends the run: the next shortage starts over.
    life.handle(&s, Event::Deadline, at(now));
    life.handle(&s, Event::Spawned { pid: 5 }, at(now));
    life.handle(
        &s,
        Event::Exited {
            pid: 5,
            exit: Exit::Code(0),
            group_alive: false,
        },
        at(now),
    );
    life.handle(&s, Event::Start, at(now + 1));
    let a = life.handle(
        &s,
        Event::SpawnFailed {
            reason: "pipe: Too many open files".into(),
            status: 1,
            transient: true,
        },
        at(now + 1),
    );
    assert!(matches!(a.as_slice(), [Action::Log(Level::Error, _)]));
    assert_eq!(
        life.state,
        State::Waiting {
            until: at(now + 101)
        }
    );
}

#[test]
fn start_while_stopping_waits_and_stop_cancels_a_restart_decision() {
    let s = spec();
    let mut life = running(&s, 8);
    life.handle(&s, Event::Stop, at(0));
    assert!(
        life.handle(&s, Event::Start, at(1)).is_empty(),
        "the supervisor queues it instead"
    );
    life.handle(
        &s,
        Event::Exited {
            pid: 8,
            exit: Exit::Signal(15),
            group_alive: false,
        },
        at(2),
    );
    assert_eq!(life.state, State::Stopped);

    // A service whose main ended and whose leftovers are being stopped
    // would restart; a stop on request in between cancels that.
    let mut s = spec();
    s.restart = RestartPolicy::Always;
    let mut life = running(&s, 9);
    life.handle(
        &s,
        Event::Exited {
            pid: 9,
            exit: Exit::Code(1),
            group_alive: true,
        },
        at(0),
    );
    life.handle(&s, Event::Stop, at(1));
    life.handle(&s, Event::GroupEmpty, at(2));
    assert_eq!(life.state, State::Stopped);
}

#[test]
fn infinite_durations_never_overflow_the_clock() {
    // RestartSec=infinity with a fork failure: no retry, a failed start.
    let mut s = spec();
    s.restart_sec = Duration::MAX;
    let mut life = Life::new(at(0));
    life.handle(&s, Event::Start, at(0));
    life.handle(
        &s,
        Event::SpawnFailed {
            reason: "fork: EAGAIN".into(),
            status: 1,
            transient: true,
        },
        at(0),
    );
    assert!(matches!(
        life.state,
        State::Failed {
            reason: Failure::Spawn { .. }
        }
    ));
    // ... and with Restart=always after an exit: no pending restart.
    s.restart = RestartPolicy::Always;
    let mut life = running(&s, 3);
    life.handle(&s, exited(3, 1), at(1));
    assert_eq!(life.state, State::Stopped);
    // TimeoutStartSec and TimeoutStopSec infinity: no deadlines.
    s.timeout_start = Duration::MAX;
    s.timeout_stop = Some(Duration::MAX);
    s.service_type = ServiceType::Notify;
    let mut life = Life::new(at(0));
    life.handle(&s, Event::Start, at(0));
    assert_eq!(life.state.deadline(), None);
    life.handle(&s, Event::Spawned { pid: 4 }, at(0));
    life.handle(&s, Event::Stop, at(0));
    assert_eq!(life.state.deadline(), None);
}

#[test]
fn refused_start_fails_with_the_reason_and_failure_action() {
    let mut s = spec();
    s.failure_action = EndAction::Poweroff;
    let mut life = Life::new(at(0));
    let a = life.handle(
        &s,
        Event::Refuse {
            reason: "dependency cycle: a -> b -> a".into(),
        },
        at(0),
    );
    assert_eq!(
        life.state,
        State::Failed {
            reason: Failure::Dependency("dependency cycle: a -> b -> a".into())
        }
    );
    assert_eq!(logs(&a), ["failed: dependency cycle: a -> b -> a"]);
    assert_eq!(effects(&a), [Action::End(EndAction::Poweroff, 1)]);
}

#[test]
fn foreign_pids_are_ignored() {
    let s = spec();
    let mut life = running(&s, 8);
    assert!(life.handle(&s, exited(999, 1), at(1)).is_empty());
    assert_eq!(life.state, State::Running { pid: 8 });
}

/// One life in each state, for the exhaustive table below.
fn in_state(name: &str) -> (ServiceSpec, Life) {
    let mut s = spec();
    s.service_type = ServiceType::Notify;
    s.restart = RestartPolicy::OnFailure;
    s.exec_reload = vec![Command::new(vec!["/bin/true".into()])];
    let mut life = Life::new(at(0));
    match name {
        "reloading" => {
            life.handle(&s, Event::Start, at(0));
            life.handle(&s, Event::Spawned { pid: 1 }, at(0));
            life.handle(&s, Event::Ready, at(0));
            life.handle(&s, Event::Reload, at(0));
        }
        "stopped" => {}
        "starting" => {
            life.handle(&s, Event::Start, at(0));
            life.handle(&s, Event::Spawned { pid: 1 }, at(0));
        }
        "running" => {
            life.handle(&s, Event::Start, at(0));
            life.handle(&s, Event::Spawned { pid: 1 }, at(0));
            life.handle(&s, Event::Ready, at(0));
        }
        "stopping" => {
            life.handle(&s, Event::Start, at(0));
            life.handle(&s, Event::Spawned { pid: 1 }, at(0));
            life.handle(&s, Event::Ready, at(0));
            life.handle(&s, Event::Stop, at(0));
        }
        "waiting" => {
            life.handle(&s, Event::Start, at(0));
            life.handle(&s, Event::Spawned { pid: 1 }, at(0));
            life.handle(&s, exited(1, 1), at(0));
        }
        "exited" => {
            life.handle(&s, Event::Start, at(0));
            life.handle(&s, Event::Spawned { pid: 1 }, at(0));
            life.handle(&s, Event::Ready, at(0));
            life.handle(&s, exited(1, 0), at(0));
        }
        "failed" => life.fail(Failure::Dependency("test".into()), at(0)),
        other => panic!("{other}"),
    }
    assert_eq!(life.state.name(), name);
    (s, life)
}

#[test]
fn every_state_times_every_event() {
    let states = [
        "stopped",
        "starting",
        "running",
        "reloading",
        "stopping",
        "waiting",
        "exited",
        "failed",
    ];
    let events: Vec<(&str, Event)> = vec![
        ("Start", Event::Start),
        ("Stop", Event::Stop),
        ("Spawned", Event::Spawned { pid: 2 }),
        (
            "SpawnFailed",
            Event::SpawnFailed {
                reason: "exec x: EACCES".into(),
                status: 126,
                transient: false,
            },
        ),
        ("Ready", Event::Ready),
        (
            "Exited(main)",
            Event::Exited {
                pid: 1,
                exit: Exit::Code(1),
                group_alive: false,
            },
        ),
        (
            "Exited(other)",
            Event::Exited {
                pid: 77,
                exit: Exit::Code(0),
                group_alive: false,
            },
        ),
        ("GroupEmpty", Event::GroupEmpty),
        ("Deadline", Event::Deadline),
        (
            "Refuse",
            Event::Refuse {
                reason: "required service db failed".into(),
            },
        ),
        // Only a forking start waiting for its daemon takes it.
        ("MainPid", Event::MainPid(Ok(5))),
        // Only a running service with ExecReload takes it.
        ("Reload", Event::Reload),
    ];
    // Resulting state names; the deadline is far in the future for
    // "starting" (30 s) and "stopping" (5 s) but due for "waiting" (100 ms).
    let want: &[(&str, [&str; 12])] = &[
        // Start, Stop, Spawned, SpawnFailed, Ready, Exited(main), Exited(other), GroupEmpty, Deadline, Refuse, MainPid, Reload
        (
            "stopped",
            [
                "starting", "stopped", "stopped", "stopped", "stopped", "stopped", "stopped",
                "stopped", "stopped", "failed", "stopped", "stopped",
            ],
        ),
        (
            "starting",
            [
                "starting", "stopping", "starting", "waiting", "running", "waiting", "starting",
                "starting", "starting", "starting", "starting", "starting",
            ],
        ),
        (
            "running",
            [
                "running",
                "stopping",
                "running",
                "running",
                "running",
                "waiting",
                "running",
                "running",
                "running",
                "running",
                "running",
                "reloading",
            ],
        ),
        (
            "reloading",
            [
                "reloading",
                "stopping",
                "reloading",
                "running",
                "reloading",
                "waiting",
                "reloading",
                "reloading",
                "reloading",
                "reloading",
                "reloading",
                "reloading",
            ],
        ),
        (
            "stopping",
            [
                "stopping", "stopping", "stopping", "stopping", "stopping", "stopped", "stopping",
                "stopping", "stopping", "stopping", "stopping", "stopping",
            ],
        ),
        (
            "waiting",
            [
                "starting", "stopped", "waiting", "waiting", "waiting", "waiting", "waiting",
                "waiting", "starting", "failed", "waiting", "waiting",
            ],
        ),
        (
            "exited",
            [
                "starting", "stopped", "exited", "exited", "exited", "exited", "exited", "exited",
                "exited", "failed", "exited", "exited",
            ],
        ),
        (
            "failed",
            [
                "starting", "failed", "failed", "failed", "failed", "failed", "failed", "failed",
                "failed", "failed", "failed", "failed",
            ],
        ),
    ];
    assert_eq!(want.len(), states.len(), "every state has a row");
    for (state, row) in want {
        assert!(states.contains(state));
        assert_eq!(row.len(), events.len(), "{state}: one column per event");
        for ((event_name, event), expected) in events.iter().zip(row) {
            let (s, mut life) = in_state(state);
            // Deadline events are delivered at 1 s: due only for "waiting".
            life.handle(&s, event.clone(), at(1000));
            assert_eq!(life.state.name(), *expected, "{state} × {event_name}");
        }
    }
}
