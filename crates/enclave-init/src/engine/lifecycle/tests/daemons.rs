//! `Type=forking`, and the `-` prefix of `ExecStart`.

use super::*;

fn forking() -> ServiceSpec {
    let mut s = spec();
    s.service_type = ServiceType::Forking;
    s
}

/// Started, the start command (pid 10) exited with `code`.
fn forked(spec: &ServiceSpec, code: i32) -> (Life, Actions) {
    let mut life = Life::new(at(0));
    life.handle(spec, Event::Start, at(0));
    let a = life.handle(spec, Event::Spawned { pid: 10 }, at(0));
    assert!(
        matches!(life.state, State::Starting { pid: Some(10), .. }),
        "{a:?}"
    );
    let a = life.handle(spec, exited(10, code), at(5));
    (life, a)
}

#[test]
fn the_daemon_left_by_the_start_command_becomes_the_main_process() {
    let s = forking();
    let (mut life, a) = forked(&s, 0);
    assert_eq!(effects(&a), [Action::FindMainPid { starter: 10 }]);
    assert!(matches!(
        life.state,
        State::Starting {
            step: StartStep::Forked(10),
            pid: None,
            ..
        }
    ));
    assert!(!life.state.is_ready() && life.state.main_pid().is_none());
    let a = life.handle(&s, Event::MainPid(Ok(42)), at(6));
    assert_eq!(logs(&a), ["main process 42"]);
    assert_eq!(life.state, State::Running { pid: 42 });
    // Its end is the service's end.
    let a = life.handle(&s, exited(42, 3), at(7));
    assert!(
        logs(&a).contains(&"main process exited with status 3"),
        "{a:?}"
    );
    assert!(matches!(life.state, State::Failed { .. }));
}

#[test]
fn a_failing_start_command_fails_the_service_unless_prefixed_with_a_dash() {
    let s = forking();
    let (life, a) = forked(&s, 1);
    assert!(effects(&a).is_empty(), "{a:?}");
    assert!(matches!(life.state, State::Failed { .. }));
    let mut s = forking();
    s.exec_start.ignore_failure = true;
    let (life, a) = forked(&s, 1);
    assert_eq!(effects(&a), [Action::FindMainPid { starter: 10 }]);
    assert!(matches!(
        life.state,
        State::Starting {
            step: StartStep::Forked(10),
            ..
        }
    ));
    // For a simple service too: exit 1 is success with `-`.
    let mut s = spec();
    s.exec_start.ignore_failure = true;
    let mut life = running(&s, 7);
    life.handle(&s, exited(7, 1), at(1));
    assert_eq!(life.state, State::Exited { active: false });
}

#[test]
fn no_main_pid_stops_what_the_start_command_left_and_fails() {
    let s = forking();
    let (mut life, _) = forked(&s, 0);
    let a = life.handle(&s, Event::MainPid(Err("no PID file".into())), at(6));
    assert_eq!(
        effects(&a),
        [
            Action::Signal {
                pid: 10,
                group: true,
                signal: libc::SIGTERM
            },
            Action::Signal {
                pid: 10,
                group: true,
                signal: libc::SIGCONT
            },
        ]
    );
    assert!(matches!(
        life.state,
        State::Stopping {
            main: None,
            group: Some(10),
            group_alive: true,
            ..
        }
    ));
    life.handle(&s, Event::GroupEmpty, at(7));
    match &life.state {
        State::Failed { reason } => assert_eq!(reason.describe(), "no PID file"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_stop_or_a_timeout_while_the_main_pid_is_looked_for() {
    let s = forking();
    let (mut life, _) = forked(&s, 0);
    let a = life.handle(&s, Event::Stop, at(6));
    assert_eq!(
        effects(&a)[0],
        Action::Signal {
            pid: 10,
            group: true,
            signal: libc::SIGTERM
        }
    );
    life.handle(&s, Event::GroupEmpty, at(7));
    assert_eq!(life.state, State::Stopped);
    // A late answer changes nothing.
    life.handle(&s, Event::MainPid(Ok(42)), at(8));
    assert_eq!(life.state, State::Stopped);

    let mut s = forking();
    s.timeout_start = Duration::from_secs(1);
    let (mut life, _) = forked(&s, 0);
    let a = life.handle(&s, Event::Deadline, at(2000));
    assert_eq!(
        effects(&a)[0],
        Action::Signal {
            pid: 10,
            group: true,
            signal: libc::SIGTERM
        }
    );
    life.handle(&s, Event::GroupEmpty, at(2001));
    assert_eq!(
        life.state,
        State::Failed {
            reason: Failure::StartTimeout
        }
    );
}

fn reloadable() -> ServiceSpec {
    let mut s = spec();
    s.exec_reload = vec![
        Command::new(vec!["/bin/kill".into(), "-HUP".into(), "$MAINPID".into()]),
        Command::new(vec!["/bin/check".into()]),
    ];
    s.timeout_start = Duration::from_secs(2);
    s
}

#[test]
fn exec_reload_runs_its_commands_in_order_and_stays_ready() {
    let s = reloadable();
    let mut life = running(&s, 7);
    let a = life.handle(&s, Event::Reload, at(1));
    assert_eq!(effects(&a), [Action::Spawn(Proc::Reload(0))]);
    assert!(life.state.is_ready() && life.state.main_pid() == Some(7));
    life.handle(&s, Event::Spawned { pid: 20 }, at(2));
    assert_eq!(life.state.pids(), [7, 20]);
    let a = life.handle(&s, exited(20, 0), at(3));
    assert_eq!(effects(&a), [Action::Spawn(Proc::Reload(1))]);
    life.handle(&s, Event::Spawned { pid: 21 }, at(4));
    let a = life.handle(&s, exited(21, 0), at(5));
    assert_eq!(logs(&a), ["reloaded"]);
    assert_eq!(life.state, State::Running { pid: 7 });
    assert_eq!(life.reload_failure, None);
}

#[test]
fn a_failed_or_late_reload_is_reported_and_the_service_runs_on() {
    let s = reloadable();
    let mut life = running(&s, 7);
    life.handle(&s, Event::Reload, at(1));
    life.handle(&s, Event::Spawned { pid: 20 }, at(2));
    let a = life.handle(&s, exited(20, 1), at(3));
    assert_eq!(
        logs(&a),
        ["reload failed: ExecReload 1 exited with status 1"]
    );
    assert_eq!(life.state, State::Running { pid: 7 });
    assert_eq!(
        life.reload_failure.as_deref(),
        Some("ExecReload 1 exited with status 1")
    );
    // Too slow: killed at TimeoutStartSec.
    life.handle(&s, Event::Reload, at(10));
    assert_eq!(
        life.reload_failure, None,
        "a new reload clears the last failure"
    );
    life.handle(&s, Event::Spawned { pid: 22 }, at(11));
    let a = life.handle(&s, Event::Deadline, at(2011));
    assert_eq!(
        effects(&a),
        [Action::SignalControl {
            pid: 22,
            signal: libc::SIGKILL
        }]
    );
    assert_eq!(life.state, State::Running { pid: 7 });
    assert_eq!(life.reload_failure.as_deref(), Some("ExecReload timed out"));
}

#[test]
fn a_stop_or_the_main_process_ending_during_a_reload() {
    let s = reloadable();
    let mut life = running(&s, 7);
    life.handle(&s, Event::Reload, at(1));
    life.handle(&s, Event::Spawned { pid: 20 }, at(2));
    let a = life.handle(&s, Event::Stop, at(3));
    assert_eq!(
        effects(&a)[..2],
        [
            Action::SignalControl {
                pid: 20,
                signal: libc::SIGKILL
            },
            Action::Signal {
                pid: 7,
                group: true,
                signal: libc::SIGTERM
            },
        ]
    );
    assert!(matches!(life.state, State::Stopping { main: Some(7), .. }));

    let mut life = running(&s, 7);
    life.handle(&s, Event::Reload, at(1));
    life.handle(&s, Event::Spawned { pid: 20 }, at(2));
    let a = life.handle(&s, exited(7, 0), at(3));
    assert_eq!(
        effects(&a),
        [Action::SignalControl {
            pid: 20,
            signal: libc::SIGKILL
        }]
    );
    assert_eq!(life.state, State::Exited { active: false });
}

fn watched(interval_ms: u64) -> ServiceSpec {
    let mut s = spec();
    s.watchdog = Some(Duration::from_millis(interval_ms));
    s.restart = RestartPolicy::OnWatchdog;
    s
}

#[test]
fn the_watchdog_fires_without_pings_and_restart_on_watchdog_restarts() {
    let s = watched(500);
    let mut life = running(&s, 7);
    assert_eq!(life.deadline(), Some(at(500)), "armed once running");
    life.handle(&s, Event::Notice(Notice::WatchdogPing), at(400));
    assert_eq!(life.deadline(), Some(at(900)), "a ping postpones it");
    let a = life.handle(&s, Event::Deadline, at(900));
    assert_eq!(
        logs(&a),
        ["watchdog timeout: sending SIGABRT to its processes"]
    );
    assert_eq!(
        effects(&a),
        [Action::Signal {
            pid: 7,
            group: true,
            signal: libc::SIGABRT
        }]
    );
    assert!(matches!(life.state, State::Stopping { .. }));
    let a = life.handle(
        &s,
        Event::Exited {
            pid: 7,
            exit: Exit::Signal(libc::SIGABRT),
            group_alive: false,
        },
        at(901),
    );
    assert!(
        logs(&a).iter().any(|l| l.starts_with("restarting in")),
        "{a:?}"
    );
    assert!(matches!(life.state, State::Waiting { .. }));
    // Not for on-failure's neighbours that exclude it.
    for (policy, restarts) in [
        (RestartPolicy::OnAbort, false),
        (RestartPolicy::OnAbnormal, true),
        (RestartPolicy::OnSuccess, false),
    ] {
        assert_eq!(
            restarts_on(policy, ExitCause::Watchdog),
            restarts,
            "{policy:?}"
        );
    }
}

#[test]
fn watchdog_trigger_and_a_new_interval() {
    let mut s = watched(500);
    s.restart = RestartPolicy::No;
    s.watchdog_signal = libc::SIGUSR2;
    let mut life = running(&s, 7);
    life.handle(
        &s,
        Event::Notice(Notice::WatchdogInterval(Duration::from_secs(2))),
        at(100),
    );
    assert_eq!(life.deadline(), Some(at(2100)));
    life.handle(
        &s,
        Event::Notice(Notice::WatchdogInterval(Duration::ZERO)),
        at(200),
    );
    assert_eq!(life.deadline(), None, "WATCHDOG_USEC=0 turns it off");
    let a = life.handle(&s, Event::Notice(Notice::WatchdogTrigger), at(300));
    assert_eq!(
        effects(&a),
        [Action::Signal {
            pid: 7,
            group: true,
            signal: libc::SIGUSR2
        }]
    );
    life.handle(&s, exited(7, 0), at(301));
    assert_eq!(
        life.state,
        State::Failed {
            reason: Failure::Watchdog
        }
    );
    // A next run starts with WatchdogSec again.
    life.handle(&s, Event::Start, at(400));
    life.handle(&s, Event::Spawned { pid: 8 }, at(400));
    assert_eq!(life.deadline(), Some(at(900)));
}

#[test]
fn mainpid_and_extend_timeout_usec() {
    let mut s = spec();
    s.service_type = ServiceType::Notify;
    s.timeout_start = Duration::from_secs(1);
    let mut life = Life::new(at(0));
    life.handle(&s, Event::Start, at(0));
    life.handle(&s, Event::Spawned { pid: 7 }, at(0));
    assert_eq!(life.deadline(), Some(at(1000)));
    life.handle(
        &s,
        Event::Notice(Notice::ExtendTimeout(Duration::from_secs(5))),
        at(500),
    );
    assert_eq!(life.deadline(), Some(at(5500)));
    life.handle(
        &s,
        Event::Notice(Notice::ExtendTimeout(Duration::from_secs(1))),
        at(600),
    );
    assert_eq!(life.deadline(), Some(at(5500)), "never shortened");
    let a = life.handle(&s, Event::Notice(Notice::MainPid(9)), at(700));
    assert_eq!(logs(&a), ["main process is now 9 (MAINPID, was 7)"]);
    life.handle(&s, Event::Ready, at(800));
    assert_eq!(life.state, State::Running { pid: 9 });
    // The old main's end is no longer the service's.
    life.handle(&s, exited(7, 0), at(900));
    assert_eq!(life.state, State::Running { pid: 9 });
    life.handle(&s, exited(9, 0), at(1000));
    assert_eq!(life.state, State::Exited { active: false });
}

// ---- review findings ----

#[test]
fn review5_the_watchdog_signal_follows_kill_mode() {
    let s = watched(500);
    let mut life = running(&s, 7);
    let a = life.handle(&s, Event::Deadline, at(500));
    assert_eq!(
        effects(&a),
        [Action::Signal {
            pid: 7,
            group: true,
            signal: libc::SIGABRT
        }],
        "KillMode=control-group: the whole service"
    );
}

#[test]
fn review3_commands_beside_the_main_process_are_killed_alone() {
    let s = reloadable();
    let mut life = running(&s, 7);
    life.handle(&s, Event::Reload, at(1));
    life.handle(&s, Event::Spawned { pid: 22 }, at(2));
    let a = life.handle(&s, Event::Deadline, at(3000));
    assert_eq!(
        effects(&a),
        [Action::SignalControl {
            pid: 22,
            signal: libc::SIGKILL
        }],
        "never the service's cgroup: the main process runs on"
    );
}

#[test]
fn review11_mainpid_does_not_replace_a_forking_start_command() {
    let s = forking();
    let mut life = Life::new(at(0));
    life.handle(&s, Event::Start, at(0));
    life.handle(&s, Event::Spawned { pid: 10 }, at(0));
    life.handle(&s, Event::Notice(Notice::MainPid(42)), at(1));
    assert!(
        matches!(life.state, State::Starting { pid: Some(10), .. }),
        "{:?}",
        life.state
    );
    let a = life.handle(&s, exited(10, 0), at(2));
    assert_eq!(effects(&a), [Action::FindMainPid { starter: 10 }]);
}
