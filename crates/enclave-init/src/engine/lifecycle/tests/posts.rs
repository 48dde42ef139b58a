//! `ExecStartPost` and `ExecStopPost`.

use super::*;

fn cmd(name: &str) -> Command {
    Command::new(vec![name.into()])
}

#[test]
fn exec_start_post_runs_once_the_main_process_is_up_and_gates_readiness() {
    let mut s = spec();
    s.exec_start_post = vec![cmd("/bin/a"), cmd("/bin/b")];
    let mut life = Life::new(at(0));
    life.handle(&s, Event::Start, at(0));
    let a = life.handle(&s, Event::Spawned { pid: 7 }, at(0));
    assert_eq!(effects(&a), [Action::Spawn(Proc::StartPost(0))]);
    assert!(!life.state.is_ready() && life.state.main_pid() == Some(7));
    life.handle(&s, Event::Spawned { pid: 20 }, at(1));
    assert_eq!(life.state.pids(), [7, 20]);
    let a = life.handle(&s, exited(20, 0), at(2));
    assert_eq!(effects(&a), [Action::Spawn(Proc::StartPost(1))]);
    life.handle(&s, Event::Spawned { pid: 21 }, at(3));
    life.handle(&s, exited(21, 0), at(4));
    assert_eq!(life.state, State::Running { pid: 7 });
}

#[test]
fn a_failing_exec_start_post_stops_the_main_process_and_fails() {
    let mut s = spec();
    s.exec_start_post = vec![cmd("/bin/a")];
    s.exec_stop_post = vec![cmd("/bin/cleanup")];
    let mut life = Life::new(at(0));
    life.handle(&s, Event::Start, at(0));
    life.handle(&s, Event::Spawned { pid: 7 }, at(0));
    life.handle(&s, Event::Spawned { pid: 20 }, at(1));
    let a = life.handle(&s, exited(20, 2), at(2));
    assert_eq!(logs(&a), ["ExecStartPost 1 exited with status 2"]);
    assert_eq!(
        effects(&a),
        [
            Action::Signal {
                pid: 7,
                group: true,
                signal: libc::SIGTERM
            },
            Action::Signal {
                pid: 7,
                group: true,
                signal: libc::SIGCONT
            },
        ]
    );
    // The main process goes; then ExecStopPost; then failed.
    let a = life.handle(
        &s,
        Event::Exited {
            pid: 7,
            exit: Exit::Signal(libc::SIGTERM),
            group_alive: false,
        },
        at(3),
    );
    assert_eq!(effects(&a), [Action::Spawn(Proc::StopPost(0))]);
    life.handle(&s, Event::Spawned { pid: 30 }, at(4));
    life.handle(&s, exited(30, 0), at(5));
    match &life.state {
        State::Failed { reason } => {
            assert_eq!(reason.describe(), "ExecStartPost 1 exited with status 2")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_oneshot_runs_exec_start_post_after_it_ended_well() {
    let mut s = spec();
    s.service_type = ServiceType::Oneshot;
    s.exec_start_post = vec![cmd("/bin/a")];
    let mut life = Life::new(at(0));
    life.handle(&s, Event::Start, at(0));
    life.handle(&s, Event::Spawned { pid: 7 }, at(0));
    let a = life.handle(&s, exited(7, 0), at(1));
    assert_eq!(effects(&a), [Action::Spawn(Proc::StartPost(0))]);
    assert_eq!(life.state.main_pid(), None);
    life.handle(&s, Event::Spawned { pid: 20 }, at(2));
    life.handle(&s, exited(20, 0), at(3));
    assert_eq!(life.state, State::Exited { active: false });
}

#[test]
fn exec_stop_post_runs_after_every_run_before_the_restart_decision() {
    let mut s = spec();
    s.exec_stop_post = vec![cmd("/bin/a"), cmd("/bin/b")];
    s.restart = RestartPolicy::OnFailure;
    // The main process fails by itself.
    let mut life = running(&s, 7);
    let a = life.handle(&s, exited(7, 3), at(1));
    assert_eq!(effects(&a), [Action::Spawn(Proc::StopPost(0))]);
    assert!(matches!(
        life.state,
        State::Stopping {
            phase: StopPhase::StopPost(0),
            ..
        }
    ));
    life.handle(&s, Event::Spawned { pid: 30 }, at(2));
    // A failing ExecStopPost is logged and changes nothing.
    let a = life.handle(&s, exited(30, 1), at(3));
    assert_eq!(logs(&a), ["ExecStopPost 1 exited with status 1"]);
    assert_eq!(effects(&a), [Action::Spawn(Proc::StopPost(1))]);
    life.handle(&s, Event::Spawned { pid: 31 }, at(4));
    life.handle(&s, exited(31, 0), at(5));
    assert!(
        matches!(life.state, State::Waiting { .. }),
        "{:?}",
        life.state
    );
    // A stop on request: after the main process, ExecStopPost, then stopped.
    let mut life = running(&s, 7);
    life.handle(&s, Event::Stop, at(10));
    let a = life.handle(
        &s,
        Event::Exited {
            pid: 7,
            exit: Exit::Signal(libc::SIGTERM),
            group_alive: false,
        },
        at(11),
    );
    assert_eq!(effects(&a), [Action::Spawn(Proc::StopPost(0))]);
    // A start that cannot even spawn runs it too; one that hangs is killed.
    let mut life = Life::new(at(0));
    life.handle(&s, Event::Start, at(0));
    let a = life.handle(
        &s,
        Event::SpawnFailed {
            reason: "exec: not found".into(),
            status: 127,
            transient: false,
        },
        at(1),
    );
    assert_eq!(effects(&a), [Action::Spawn(Proc::StopPost(0))]);
    life.handle(&s, Event::Spawned { pid: 40 }, at(2));
    let a = life.handle(&s, Event::Deadline, at(10_000));
    assert_eq!(
        effects(&a)[0],
        Action::SignalControl {
            pid: 40,
            signal: libc::SIGKILL
        }
    );
    assert_eq!(logs(&a)[0], "ExecStopPost 1 did not finish in time; killed");
}

// ---- review findings ----

#[test]
fn review2_main_dying_during_exec_start_post_leaves_its_group_watched() {
    let mut s = spec();
    s.exec_start_post = vec![cmd("/bin/wait-for-port")];
    let mut life = Life::new(at(0));
    life.handle(&s, Event::Start, at(0));
    life.handle(&s, Event::Spawned { pid: 7 }, at(0));
    life.handle(&s, Event::Spawned { pid: 20 }, at(1));
    let a = life.handle(
        &s,
        Event::Exited {
            pid: 7,
            exit: Exit::Code(1),
            group_alive: true,
        },
        at(2),
    );
    assert!(
        effects(&a).contains(&Action::SignalControl {
            pid: 20,
            signal: libc::SIGKILL
        }),
        "{a:?}"
    );
    assert!(
        matches!(
            life.state,
            State::Stopping {
                group: Some(7),
                group_alive: true,
                ..
            }
        ),
        "{:?}",
        life.state
    );
    // Its leftovers get SIGKILL when they ignore the signal.
    let a = life.handle(&s, Event::Deadline, at(10_000));
    assert!(
        effects(&a).contains(&Action::Signal {
            pid: 7,
            group: true,
            signal: libc::SIGKILL
        }),
        "{a:?}"
    );
}

#[test]
fn review7_a_remaining_oneshot_runs_exec_stop_then_exec_stop_post_when_stopped() {
    let mut s = spec();
    s.service_type = ServiceType::Oneshot;
    s.remain_after_exit = true;
    s.exec_stop = vec![cmd("/sbin/flush"), cmd("/sbin/flush2")];
    s.exec_stop_post = vec![cmd("/bin/after")];
    let mut life = Life::new(at(0));
    life.handle(&s, Event::Start, at(0));
    life.handle(&s, Event::Spawned { pid: 7 }, at(0));
    let a = life.handle(&s, exited(7, 0), at(1));
    assert!(
        effects(&a).is_empty(),
        "no ExecStopPost while it remains: {a:?}"
    );
    assert_eq!(life.state, State::Exited { active: true });
    let a = life.handle(&s, Event::Stop, at(2));
    assert_eq!(effects(&a), [Action::Spawn(Proc::Stop(0))]);
    life.handle(&s, Event::Spawned { pid: 30 }, at(3));
    let a = life.handle(&s, exited(30, 0), at(4));
    assert_eq!(effects(&a), [Action::Spawn(Proc::Stop(1))]);
    life.handle(&s, Event::Spawned { pid: 31 }, at(5));
    let a = life.handle(&s, exited(31, 0), at(6));
    assert_eq!(effects(&a), [Action::Spawn(Proc::StopPost(0))]);
    life.handle(&s, Event::Spawned { pid: 32 }, at(7));
    life.handle(&s, exited(32, 0), at(8));
    assert_eq!(life.state, State::Stopped);
}

#[test]
fn review9_a_oneshot_that_leaves_a_process_still_runs_exec_start_post() {
    let mut s = spec();
    s.service_type = ServiceType::Oneshot;
    s.exec_start_post = vec![cmd("/bin/a")];
    let mut life = Life::new(at(0));
    life.handle(&s, Event::Start, at(0));
    life.handle(&s, Event::Spawned { pid: 7 }, at(0));
    let a = life.handle(
        &s,
        Event::Exited {
            pid: 7,
            exit: Exit::Code(0),
            group_alive: true,
        },
        at(1),
    );
    assert!(
        effects(&a).contains(&Action::Spawn(Proc::StartPost(0))),
        "{a:?}"
    );
}
