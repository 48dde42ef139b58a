//! Property tests: sequences of reloads, and of every input, generated
//! from seeds.

use super::*;

/// A deterministic stream of numbers (an LCG), for the sequence tests.
struct Numbers(u64);

impl Numbers {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[test]
fn any_sequence_of_reloads_runs_the_file_as_it_last_was() {
    // Property: whatever the files went through, the next start of each
    // service uses its file as last reloaded, and a reload reports exactly
    // the services whose next start changes.
    for seed in 0..200 {
        let mut n = Numbers(seed);
        let version = |n: &mut Numbers, name: &str| {
            let mut s = spec(name);
            s.exec_start.argv = vec![format!("/bin/{name}-v{}", n.next(3)).into()];
            s
        };
        let names = ["a", "b", "c"];
        let first: Vec<ServiceSpec> = names.iter().map(|m| version(&mut n, m)).collect();
        let mut w = World::with(Mode::NoBoot, first.clone());
        let mut files: BTreeMap<String, ServiceSpec> =
            first.into_iter().map(|s| (s.name.clone(), s)).collect();
        for _ in 0..6 {
            let mut next = files.clone();
            for name in names {
                match n.next(4) {
                    0 => {
                        next.remove(name);
                    }
                    1 | 2 => {
                        next.insert(name.to_string(), version(&mut n, name));
                    }
                    _ => {}
                }
            }
            w.feed(Input::Reload(ServiceSet {
                services: next.values().cloned().collect(),
                broken: BTreeSet::new(),
            }));
            // Whatever was removed goes down (and is forgotten).
            for name in names {
                if !next.contains_key(name) {
                    if let Some(p) = w.pid(name) {
                        w.exit(p, Exit::Signal(15));
                    }
                }
            }
            for (name, file) in &next {
                let unit = w.engine.unit(name).unwrap();
                let mut want = file.clone();
                want.timeout_stop.get_or_insert(Duration::from_secs(10));
                assert_eq!(unit.effective_spec(), &want, "seed {seed}: {name}");
            }
            for name in names {
                if !next.contains_key(name) {
                    assert_eq!(w.state(name), "gone", "seed {seed}: {name}");
                }
            }
            w.check_invariants();
            files = next;
        }
        // A restart of each runs exactly its last file.
        for name in files.keys() {
            let before = w.spawns.len();
            w.request(Request::Restart(name.clone())).unwrap();
            if let Some(p) = w.pid(name) {
                w.exit(p, Exit::Signal(15));
            }
            let argv = &w.engine.unit(name).unwrap().spec.exec_start;
            assert_eq!(argv, &files[name].exec_start, "seed {seed}: {name}");
            assert!(w.spawns.len() > before, "seed {seed}: {name} not restarted");
        }
    }
}

#[test]
fn any_sequence_of_inputs_keeps_the_books_straight() {
    // Totality and the bookkeeping invariant over random inputs: requests,
    // exits of any known process (or of unknown ones), readiness, group
    // news, time passing, reloads and a shutdown, in any order.
    for seed in 0..300 {
        let mut n = Numbers(seed);
        let mut notify = spec("n");
        notify.service_type = ServiceType::Notify;
        notify.restart = crate::model::spec::RestartPolicy::Always;
        let mut oneshot = spec("o");
        oneshot.service_type = ServiceType::Oneshot;
        oneshot.remain_after_exit = true;
        let services = vec![
            requires(spec("a"), &["o"]),
            notify,
            oneshot,
            requires(spec("b"), &["a", "n"]),
        ];
        let mut w = World::with(Mode::NoBoot, services.clone());
        let names = ["a", "b", "n", "o", "zz"];
        for _ in 0..60 {
            let name = names[n.next(5) as usize].to_string();
            match n.next(9) {
                0 => drop(w.request(Request::Start(name))),
                1 => drop(w.request(Request::Stop(name))),
                2 => drop(w.request(Request::Restart(name))),
                3 | 4 => {
                    let pids: Vec<Pid> = w.engine.procs.keys().copied().collect();
                    let pid = if pids.is_empty() || n.next(5) == 0 {
                        9999
                    } else {
                        let mut pids = pids;
                        pids.sort();
                        pids[n.next(pids.len() as u64) as usize]
                    };
                    let exit = if n.next(2) == 0 {
                        Exit::Code(n.next(3) as i32)
                    } else {
                        Exit::Signal(15)
                    };
                    w.feed(Input::Reaped {
                        exits: vec![Reaped {
                            pid,
                            exit,
                            group_alive: n.next(2) == 0,
                        }],
                        children_left: true,
                    });
                }
                5 => {
                    let pid = w.pid("n").unwrap_or(1);
                    w.feed(Input::Notify {
                        pid,
                        pgid: None,
                        facts: Default::default(),
                        fields: Ok(vec![("READY".into(), "1".into())]),
                    });
                }
                6 => w.feed(Input::GroupEmpty(name)),
                7 => w.advance(n.next(20_000)),
                _ => {
                    let mut set = services.clone();
                    set.retain(|_| n.next(4) != 0);
                    w.feed(Input::Reload(ServiceSet {
                        services: set,
                        broken: BTreeSet::new(),
                    }));
                }
            }
            w.check_invariants();
        }
        w.feed(Input::Shutdown {
            ending: Ending::Exit(0),
            reason: "end of the sequence".into(),
        });
        for _ in 0..10 {
            let pids: Vec<Pid> = w.engine.procs.keys().copied().collect();
            for pid in pids {
                w.exit(pid, Exit::Signal(15));
            }
            w.feed(Input::GroupEmpty("a".into()));
            w.advance(10_000);
        }
        w.feed(Input::Reaped {
            exits: vec![],
            children_left: false,
        });
        assert_eq!(w.finished, Some(Ending::Exit(0)), "seed {seed}");
        w.check_invariants();
    }
}
