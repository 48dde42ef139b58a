use super::*;
use crate::model::spec::Command;

fn base() -> Instant {
    // One fixed origin per test run: all times are offsets from it.
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn at(ms: u64) -> Instant {
    base() + Duration::from_millis(ms)
}

fn spec() -> ServiceSpec {
    let mut s = ServiceSpec::new("web", vec!["/bin/app".into()]);
    s.timeout_stop = Some(Duration::from_secs(5));
    s
}

fn logs(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Log(_, m) => Some(m.as_str()),
            _ => None,
        })
        .collect()
}

fn effects(actions: &[Action]) -> Vec<Action> {
    actions
        .iter()
        .filter(|a| !matches!(a, Action::Log(..)))
        .cloned()
        .collect()
}

fn running(spec: &ServiceSpec, pid: Pid) -> Life {
    let mut life = Life::new(at(0));
    life.handle(spec, Event::Start, at(0));
    life.handle(spec, Event::Spawned { pid }, at(0));
    assert_eq!(life.state, State::Running { pid });
    life
}

fn exited(pid: Pid, code: i32) -> Event {
    Event::Exited {
        pid,
        exit: Exit::Code(code),
        group_alive: false,
    }
}

#[test]
fn restart_table_is_systemds() {
    use ExitCause::*;
    use RestartPolicy::*;
    // Rows: clean, unclean code, unclean signal, timeout, watchdog
    // (systemd.service(5), Table 2).
    let table: &[(RestartPolicy, [bool; 5])] = &[
        (No, [false, false, false, false, false]),
        (Always, [true, true, true, true, true]),
        (OnSuccess, [true, false, false, false, false]),
        (OnFailure, [false, true, true, true, true]),
        (OnAbnormal, [false, false, true, true, true]),
        (OnAbort, [false, false, true, false, false]),
        (OnWatchdog, [false, false, false, false, true]),
    ];
    for (policy, row) in table {
        for (cause, want) in [Clean, UncleanCode, UncleanSignal, Timeout, Watchdog]
            .iter()
            .zip(row)
        {
            assert_eq!(
                restarts_on(*policy, *cause),
                *want,
                "{policy:?} × {cause:?}"
            );
        }
        assert!(
            !restarts_on(*policy, Final),
            "{policy:?} never restarts a final failure"
        );
    }
}

#[test]
fn exit_classification() {
    let mut s = spec();
    assert_eq!(
        classify(&s, Exit::Code(0)),
        Outcome::Success(Some(Exit::Code(0)))
    );
    assert_eq!(
        classify(&s, Exit::Code(3)),
        Outcome::Failure(Failure::Exit(Exit::Code(3)))
    );
    for clean in [libc::SIGHUP, libc::SIGINT, libc::SIGTERM, libc::SIGPIPE] {
        assert_eq!(classify(&s, Exit::Signal(clean)).cause(), ExitCause::Clean);
    }
    assert_eq!(
        classify(&s, Exit::Signal(libc::SIGKILL)).cause(),
        ExitCause::UncleanSignal
    );
    assert_eq!(
        classify(&s, Exit::Signal(libc::SIGSEGV)).cause(),
        ExitCause::UncleanSignal
    );
    s.success_exit_status = vec![SuccessStatus::Code(3), SuccessStatus::Signal(libc::SIGUSR1)];
    assert_eq!(classify(&s, Exit::Code(3)).cause(), ExitCause::Clean);
    assert_eq!(
        classify(&s, Exit::Signal(libc::SIGUSR1)).cause(),
        ExitCause::Clean
    );
    s.service_type = ServiceType::Oneshot;
    assert_eq!(
        classify(&s, Exit::Signal(libc::SIGTERM)).cause(),
        ExitCause::UncleanSignal
    );
    assert_eq!(
        Outcome::Failure(Failure::Spawn {
            reason: "x".into(),
            status: 127
        })
        .cause(),
        ExitCause::UncleanCode
    );
    assert_eq!(
        Outcome::Failure(Failure::StartTimeout).cause(),
        ExitCause::Timeout
    );
    assert_eq!(
        Outcome::Failure(Failure::StartLimit).cause(),
        ExitCause::Final
    );
}

#[test]
fn exit_status_convention() {
    assert_eq!(Exit::Code(7).status(), 7);
    assert_eq!(Exit::Signal(9).status(), 137);
    assert_eq!(Exit::Signal(15).status(), 143);
}

#[test]
fn backoff_grows_from_restart_sec_to_max_in_steps() {
    let mut s = spec();
    s.restart_sec = Duration::from_secs(1);
    assert_eq!(restart_delay(&s, 0), Duration::from_secs(1));
    assert_eq!(
        restart_delay(&s, 9),
        Duration::from_secs(1),
        "no steps: constant"
    );
    s.restart_steps = 3;
    s.restart_max_delay = Some(Duration::from_secs(8));
    let delays: Vec<u128> = (0..6).map(|n| restart_delay(&s, n).as_millis()).collect();
    assert_eq!(delays, [1000, 2000, 4000, 8000, 8000, 8000]);
    s.restart_sec = Duration::ZERO;
    s.restart_max_delay = Some(Duration::from_secs(1));
    assert_eq!(restart_delay(&s, 0), Duration::ZERO);
    assert!(restart_delay(&s, 1) > Duration::ZERO);
    assert_eq!(restart_delay(&s, 3), Duration::from_secs(1));
}

#[test]
fn simple_service_runs_and_fails() {
    let mut s = spec();
    s.failure_action = EndAction::Exit;
    let mut life = Life::new(at(0));
    assert_eq!(
        life.handle(&s, Event::Start, at(0)),
        [Action::Spawn(Proc::Main)]
    );
    assert!(matches!(
        life.state,
        State::Starting {
            step: StartStep::Main,
            pid: None,
            ..
        }
    ));
    let a = life.handle(&s, Event::Spawned { pid: 42 }, at(1));
    assert_eq!(logs(&a), ["started (pid 42)"]);
    assert_eq!(life.state, State::Running { pid: 42 });
    assert_eq!(life.state.main_pid(), Some(42));
    let a = life.handle(&s, exited(42, 3), at(5));
    assert_eq!(
        life.state,
        State::Failed {
            reason: Failure::Exit(Exit::Code(3))
        }
    );
    assert_eq!(effects(&a), [Action::End(EndAction::Exit, 3)]);
    assert_eq!(
        logs(&a),
        [
            "main process exited with status 3",
            "failed: exited with status 3"
        ]
    );
    assert_eq!(life.last_exit, Some(Exit::Code(3)));
    assert_eq!(life.since, at(5));
}

#[test]
fn clean_end_is_exited_with_success_action() {
    let mut s = spec();
    s.success_action = EndAction::Poweroff;
    let mut life = running(&s, 7);
    let a = life.handle(&s, exited(7, 0), at(1));
    assert_eq!(life.state, State::Exited { active: false });
    assert_eq!(effects(&a), [Action::End(EndAction::Poweroff, 0)]);
}

#[test]
fn restart_waits_then_starts_again() {
    let mut s = spec();
    s.restart = RestartPolicy::Always;
    s.restart_sec = Duration::from_millis(200);
    let mut life = running(&s, 10);
    let a = life.handle(
        &s,
        Event::Exited {
            pid: 10,
            exit: Exit::Signal(libc::SIGKILL),
            group_alive: false,
        },
        at(1000),
    );
    assert_eq!(life.state, State::Waiting { until: at(1200) });
    assert_eq!(
        logs(&a),
        [
            "main process killed by SIGKILL",
            "restarting in 200ms (restart 1)"
        ]
    );
    assert_eq!(life.state.deadline(), Some(at(1200)));
    // An early timer does nothing.
    assert!(life.handle(&s, Event::Deadline, at(1199)).is_empty());
    assert_eq!(
        life.handle(&s, Event::Deadline, at(1200)),
        [Action::Spawn(Proc::Main)]
    );
    life.handle(&s, Event::Spawned { pid: 11 }, at(1200));
    assert_eq!(life.state, State::Running { pid: 11 });
    assert_eq!(life.restarts, 1);
}

#[test]
fn start_limit_fails_the_service_and_manual_start_clears_it() {
    let mut s = spec();
    s.restart = RestartPolicy::Always;
    s.restart_sec = Duration::ZERO;
    s.start_limit_burst = 3;
    s.start_limit_interval = Duration::from_secs(10);
    s.failure_action = EndAction::Reboot;
    let mut life = Life::new(at(0));
    life.handle(&s, Event::Start, at(0));
    for n in 0..3 {
        let pid = 100 + n as Pid;
        life.handle(&s, Event::Spawned { pid }, at(n * 10));
        life.handle(&s, exited(pid, 1), at(n * 10 + 1));
        let a = life.handle(&s, Event::Deadline, at(n * 10 + 1));
        if n < 2 {
            assert_eq!(a, [Action::Spawn(Proc::Main)], "start {}", n + 2);
        } else {
            assert_eq!(effects(&a), [Action::End(EndAction::Reboot, 1)]);
            assert_eq!(
                logs(&a),
                [
                    "start limit hit: more than 3 starts within 10s; not starting again until started by hand",
                    "failed: start limit hit"
                ]
            );
        }
    }
    assert_eq!(
        life.state,
        State::Failed {
            reason: Failure::StartLimit
        }
    );
    assert_eq!(
        life.state.deadline(),
        None,
        "a failed service is not retried"
    );
    // By hand: starts again, with a fresh window and restart count.
    assert_eq!(
        life.handle(&s, Event::Start, at(40)),
        [Action::Spawn(Proc::Main)]
    );
    assert_eq!(life.restarts, 0);
}

#[test]
fn start_limit_window_slides() {
    let mut s = spec();
    s.start_limit_burst = 2;
    s.start_limit_interval = Duration::from_secs(1);
    s.restart = RestartPolicy::Always;
    s.restart_sec = Duration::from_millis(600);
    let mut life = running(&s, 1);
    // Starts at 0, 600, 1200, ...: never more than 2 within one second.
    for n in 1..6u64 {
        life.handle(&s, exited(n as Pid, 1), at(n * 600 - 600));
        assert_eq!(
            life.handle(&s, Event::Deadline, at(n * 600)),
            [Action::Spawn(Proc::Main)]
        );
        life.handle(&s, Event::Spawned { pid: n as Pid + 1 }, at(n * 600));
    }
}

#[test]
fn zero_interval_disables_the_limit() {
    let mut s = spec();
    s.restart = RestartPolicy::Always;
    s.restart_sec = Duration::ZERO;
    s.start_limit_interval = Duration::ZERO;
    let mut life = running(&s, 1);
    for pid in 1..100 {
        life.handle(&s, exited(pid, 0), at(0));
        assert_eq!(
            life.handle(&s, Event::Deadline, at(0)),
            [Action::Spawn(Proc::Main)]
        );
        life.handle(&s, Event::Spawned { pid: pid + 1 }, at(0));
    }
    assert_eq!(life.restarts, 99);
}

#[test]
fn stop_signals_the_group_and_waits() {
    let s = spec();
    let mut life = running(&s, 50);
    let a = life.handle(&s, Event::Stop, at(1000));
    assert_eq!(
        effects(&a),
        [
            Action::Signal {
                pid: 50,
                group: true,
                signal: libc::SIGTERM
            },
            Action::Signal {
                pid: 50,
                group: true,
                signal: libc::SIGCONT
            },
        ]
    );
    assert_eq!(life.state.name(), "stopping");
    assert_eq!(life.state.deadline(), Some(at(6000)));
    let a = life.handle(
        &s,
        Event::Exited {
            pid: 50,
            exit: Exit::Signal(libc::SIGTERM),
            group_alive: false,
        },
        at(1100),
    );
    assert_eq!(life.state, State::Stopped);
    assert_eq!(logs(&a), ["main process killed by SIGTERM", "stopped"]);
    assert!(
        effects(&a).is_empty(),
        "a requested stop triggers no SuccessAction"
    );
}

#[test]
fn stop_escalates_to_sigkill_then_gives_up() {
    let mut s = spec();
    s.kill_signal = libc::SIGINT;
    let mut life = running(&s, 50);
    life.handle(&s, Event::Stop, at(0));
    let a = life.handle(&s, Event::Deadline, at(5000));
    assert_eq!(
        effects(&a),
        [Action::Signal {
            pid: 50,
            group: true,
            signal: libc::SIGKILL
        }]
    );
    assert_eq!(logs(&a), ["still running 5s after SIGINT; sending SIGKILL"]);
    assert!(matches!(
        life.state,
        State::Stopping {
            phase: StopPhase::Kill,
            ..
        }
    ));
    let a = life.handle(&s, Event::Deadline, at(10000));
    assert_eq!(
        logs(&a),
        [
            "processes survive SIGKILL (pid 50); giving up on them",
            "stopped"
        ]
    );
    assert_eq!(life.state, State::Stopped);
}

#[test]
fn kill_modes_choose_whom_to_signal() {
    let mut s = spec();
    s.kill_mode = KillMode::Process;
    let mut life = running(&s, 9);
    let a = life.handle(&s, Event::Stop, at(0));
    assert_eq!(
        effects(&a)[0],
        Action::Signal {
            pid: 9,
            group: false,
            signal: libc::SIGTERM
        }
    );
    let a = life.handle(&s, Event::Deadline, at(5000));
    assert_eq!(
        effects(&a),
        [Action::Signal {
            pid: 9,
            group: false,
            signal: libc::SIGKILL
        }]
    );

    s.kill_mode = KillMode::Mixed;
    let mut life = running(&s, 9);
    let a = life.handle(&s, Event::Stop, at(0));
    assert_eq!(
        effects(&a)[0],
        Action::Signal {
            pid: 9,
            group: false,
            signal: libc::SIGTERM
        }
    );
    let a = life.handle(&s, Event::Deadline, at(5000));
    assert_eq!(
        effects(&a),
        [Action::Signal {
            pid: 9,
            group: true,
            signal: libc::SIGKILL
        }]
    );
}

#[test]
fn infinite_stop_timeout_never_escalates() {
    let mut s = spec();
    s.timeout_stop = Some(Duration::MAX);
    let mut life = running(&s, 9);
    life.handle(&s, Event::Stop, at(0));
    assert_eq!(life.state.deadline(), None);
}

#[test]
fn leftovers_of_an_ended_main_are_stopped_before_deciding() {
    let mut s = spec();
    s.restart = RestartPolicy::OnFailure;
    let mut life = running(&s, 30);
    let a = life.handle(
        &s,
        Event::Exited {
            pid: 30,
            exit: Exit::Code(1),
            group_alive: true,
        },
        at(0),
    );
    assert_eq!(
        effects(&a),
        [
            Action::Signal {
                pid: 30,
                group: true,
                signal: libc::SIGTERM
            },
            Action::Signal {
                pid: 30,
                group: true,
                signal: libc::SIGCONT
            },
        ]
    );
    assert_eq!(life.state.name(), "stopping");
    let a = life.handle(&s, Event::GroupEmpty, at(10));
    assert_eq!(logs(&a), ["restarting in 100ms (restart 1)"]);
    assert_eq!(life.state, State::Waiting { until: at(110) });

    // KillMode=process leaves them alone.
    s.kill_mode = KillMode::Process;
    let mut life = running(&s, 31);
    let a = life.handle(
        &s,
        Event::Exited {
            pid: 31,
            exit: Exit::Code(1),
            group_alive: true,
        },
        at(0),
    );
    assert!(effects(&a).is_empty());
    assert_eq!(life.state.name(), "waiting");
}

#[test]
fn leftovers_that_ignore_the_signal_get_sigkill() {
    let s = spec();
    let mut life = running(&s, 30);
    life.handle(&s, Event::Stop, at(0));
    // Main ends, a background child holds on.
    life.handle(
        &s,
        Event::Exited {
            pid: 30,
            exit: Exit::Signal(15),
            group_alive: true,
        },
        at(10),
    );
    assert_eq!(life.state.name(), "stopping");
    let a = life.handle(&s, Event::Deadline, at(5000));
    assert_eq!(
        effects(&a),
        [Action::Signal {
            pid: 30,
            group: true,
            signal: libc::SIGKILL
        }]
    );
    life.handle(&s, Event::GroupEmpty, at(5001));
    assert_eq!(life.state, State::Stopped);
}

mod commands_and_states;
mod daemons;
mod posts;
