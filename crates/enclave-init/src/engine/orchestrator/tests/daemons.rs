//! Requests and messages of daemons: `kill`, `reload NAME`,
//! `NotifyAccess=` and `MAINPID=`.

use super::*;

#[test]
fn notify_access_decides_whose_readiness_counts() {
    use crate::model::spec::NotifyAccess as A;
    // (sender, its pgid, facts): the main process, one of its group, one
    // of its session only, one of its cgroup only, a stranger.
    let senders = |main: Pid| -> Vec<(&str, Pid, Option<Pid>, NotifyFacts)> {
        let facts = |session: Option<Pid>, cgroup: Option<&str>| NotifyFacts {
            session,
            cgroup: cgroup.map(str::to_string),
            claimed: None,
        };
        vec![
            ("main", main, Some(main), facts(Some(main), None)),
            ("group", 900, Some(main), facts(Some(main), None)),
            ("session", 901, Some(901), facts(Some(main), None)),
            ("cgroup", 902, Some(902), facts(Some(902), Some("n"))),
            ("stranger", 903, Some(903), facts(Some(903), Some("other"))),
        ]
    };
    let table: &[(Option<A>, [bool; 5])] = &[
        // main, group, session, cgroup, stranger
        (None, [true, true, false, false, false]),
        (Some(A::None), [false, false, false, false, false]),
        (Some(A::Main), [true, false, false, false, false]),
        (Some(A::Exec), [true, false, false, false, false]),
        (Some(A::All), [true, true, true, true, false]),
    ];
    for (access, row) in table {
        for (i, want) in row.iter().enumerate() {
            let mut s = spec("n");
            s.service_type = ServiceType::Notify;
            s.notify_access = *access;
            let mut w = World::with(Mode::NoBoot, vec![s]);
            let main = w.pid("n").unwrap();
            let (who, pid, pgid, facts) = senders(main).swap_remove(i);
            w.feed(Input::Notify {
                pid,
                pgid,
                fields: Ok(vec![("READY".into(), "1".into())]),
                facts,
            });
            let ready = w.state("n") == "running";
            assert_eq!(ready, *want, "NotifyAccess={access:?}, sender {who}");
        }
    }
}

#[test]
fn mainpid_must_name_a_live_process_of_the_service() {
    let mut s = spec("n");
    s.service_type = ServiceType::Notify;
    let mut w = World::with(Mode::NoBoot, vec![s]);
    let main = w.pid("n").unwrap();
    let claim = |pid: Pid, session: Pid, cgroup: Option<&str>| NotifyFacts {
        session: Some(main),
        cgroup: None,
        claimed: Some(Claimed {
            pid,
            pgid: Some(pid),
            session: Some(session),
            cgroup: cgroup.map(str::to_string),
        }),
    };
    let say = |w: &mut World, value: &str, facts: NotifyFacts| {
        w.feed(Input::Notify {
            pid: main,
            pgid: Some(main),
            fields: Ok(vec![("MAINPID".into(), value.into())]),
            facts,
        });
        w.engine.unit("n").unwrap().life.state.main_pid()
    };
    assert_eq!(
        say(&mut w, "1", claim(1, 1, None)),
        Some(main),
        "never init"
    );
    assert_eq!(
        say(&mut w, "4000", NotifyFacts::default()),
        Some(main),
        "not running"
    );
    assert_eq!(
        say(&mut w, "4001", claim(4001, 4001, None)),
        Some(main),
        "another session"
    );
    assert_eq!(
        say(&mut w, "x", claim(4002, main, None)),
        Some(main),
        "not a number"
    );
    assert_eq!(
        say(&mut w, "4003", claim(4003, main, None)),
        Some(4003),
        "its session"
    );
    assert_eq!(w.engine.owner(4003), Some("n"));
    assert_eq!(
        say(&mut w, "4004", claim(4004, 4004, Some("n"))),
        Some(4003),
        "sender no longer main"
    );
    let want = format!(
        "n: ignoring MAINPID=4001 from pid {main}: that process is not one of the service's"
    );
    assert!(
        w.log
            .iter()
            .any(|e| matches!(e, Effect::Log(_, m) if *m == want)),
        "{:#?}",
        w.log
    );
}

#[test]
fn kill_and_reload_requests_in_every_state() {
    for &(state, _) in STATES {
        let mut w = world_in(state);
        let main = w.engine.unit("svc").unwrap().life.state.main_pid();
        let answer = w.request(Request::Kill {
            name: "svc".into(),
            signal: libc::SIGHUP,
            all: false,
        });
        assert_eq!(
            answer.is_ok(),
            main.is_some(),
            "kill in {state}: {answer:?}"
        );
        let signalled = w.log.iter().any(|e| {
            matches!(e, Effect::Signal { pid, group: false, signal: libc::SIGHUP, .. } if Some(*pid) == main)
        });
        assert_eq!(signalled, main.is_some(), "kill in {state}");
        w.check_invariants();
        // Without ExecReload, never.
        let mut w = world_in(state);
        let answer = w.request(Request::Reload("svc".into()));
        assert_eq!(
            answer,
            Err("svc has no ExecReload= to reload it with".into()),
            "{state}"
        );
        w.check_invariants();
    }
    let mut s = spec("svc");
    s.exec_reload = vec![crate::model::spec::Command::new(vec!["/bin/true".into()])];
    let mut w = World::with(Mode::NoBoot, vec![s]);
    assert_eq!(w.state("svc"), "running");
    assert_eq!(
        w.request(Request::Reload("svc".into())),
        Ok("svc: reloading".into())
    );
    assert!(w.spawns.iter().any(|(_, p, _)| *p == Proc::Reload(0)));
    assert_eq!(
        w.request(Request::Reload("svc".into())),
        Err("svc is reloading, not running".into())
    );
    w.check_invariants();
}
