//! The dependency graph of the loaded services: who starts after whom, who
//! requires and wants whom, and the load-time problems (cycles, missing
//! services). Pure: built from specs, tested without processes.
//!
//! Ordering: `After=b` on `a`, `Before=a` on `b`, and — unlike systemd but
//! as users of compose and s6 expect — `Requires=b` and `Wants=b` on `a`
//! all make `a` start after `b` is ready (or, for `Wants`/`After`, has at
//! least finished trying) and stop before `b`.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::spec::ServiceSpec;

/// One service's edges, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deps {
    /// Services that must finish starting before this one starts.
    pub after: BTreeSet<String>,
    pub requires: BTreeSet<String>,
    pub wants: BTreeSet<String>,
    /// Services ordered after this one (stopped before it).
    pub before: BTreeSet<String>,
    /// Services that require this one (stopped with it).
    pub required_by: BTreeSet<String>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Problems {
    /// Each cycle as a path that returns to its start: `a -> b -> a`.
    pub cycles: Vec<Vec<String>>,
    /// (service, the missing service it requires).
    pub missing_requires: Vec<(String, String)>,
    /// (service, the missing service it wants).
    pub missing_wants: Vec<(String, String)>,
}

impl Problems {
    /// The services that cannot start, with the reason each shows.
    pub fn failures(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for cycle in &self.cycles {
            let path = cycle.join(" -> ");
            for name in cycle {
                out.entry(name.clone())
                    .or_insert_with(|| format!("dependency cycle: {path}"));
            }
        }
        for (name, missing) in &self.missing_requires {
            out.entry(name.clone())
                .or_insert_with(|| format!("requires {missing}, which does not exist"));
        }
        out
    }
}

pub fn build<'a>(
    specs: impl IntoIterator<Item = &'a ServiceSpec>,
) -> (BTreeMap<String, Deps>, Problems) {
    let specs: Vec<&ServiceSpec> = specs.into_iter().collect();
    let mut deps: BTreeMap<String, Deps> = specs
        .iter()
        .map(|s| (s.name.clone(), Deps::default()))
        .collect();
    let mut problems = Problems::default();
    for spec in &specs {
        for target in &spec.requires {
            if !deps.contains_key(target) {
                problems
                    .missing_requires
                    .push((spec.name.clone(), target.clone()));
            }
        }
        for target in &spec.wants {
            if !deps.contains_key(target) {
                problems
                    .missing_wants
                    .push((spec.name.clone(), target.clone()));
            }
        }
        let mut edge = |first: &str, then: &str| {
            if deps.contains_key(first) && deps.contains_key(then) {
                if let Some(d) = deps.get_mut(then) {
                    d.after.insert(first.to_string());
                }
                if let Some(d) = deps.get_mut(first) {
                    d.before.insert(then.to_string());
                }
            }
        };
        for first in spec.after.iter().chain(&spec.requires).chain(&spec.wants) {
            edge(first, &spec.name);
        }
        for then in &spec.before {
            edge(&spec.name, then);
        }
    }
    for spec in &specs {
        for target in &spec.requires {
            if deps.contains_key(target) {
                if let Some(d) = deps.get_mut(&spec.name) {
                    d.requires.insert(target.clone());
                }
                if let Some(d) = deps.get_mut(target) {
                    d.required_by.insert(spec.name.clone());
                }
            }
        }
        for target in &spec.wants {
            if deps.contains_key(target) {
                if let Some(d) = deps.get_mut(&spec.name) {
                    d.wants.insert(target.clone());
                }
            }
        }
    }
    problems.cycles = cycles(&deps);
    (deps, problems)
}

/// Every strongly connected component with a cycle, each reported as one
/// cycle path through it (Tarjan's algorithm, iterative: no recursion
/// depth to worry about in PID 1).
fn cycles(deps: &BTreeMap<String, Deps>) -> Vec<Vec<String>> {
    let names: Vec<&String> = deps.keys().collect();
    let index: BTreeMap<&String, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let edges: Vec<Vec<usize>> = names
        .iter()
        .map(|n| {
            deps.get(*n).map_or_else(Vec::new, |d| {
                d.after
                    .iter()
                    .filter_map(|a| index.get(a).copied())
                    .collect()
            })
        })
        .collect();
    let n = names.len();
    let mut order = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut counter = 0;
    let mut components = Vec::new();
    for root in 0..n {
        if order.get(root) != Some(&usize::MAX) {
            continue;
        }
        // (node, next edge to look at)
        let mut work = vec![(root, 0usize)];
        while let Some(&mut (v, ref mut next)) = work.last_mut() {
            if *next == 0 && order.get(v) == Some(&usize::MAX) {
                set(&mut order, v, counter);
                set(&mut low, v, counter);
                counter += 1;
                stack.push(v);
                set(&mut on_stack, v, true);
            }
            let succ = edges.get(v).and_then(|e| e.get(*next)).copied();
            *next += 1;
            match succ {
                Some(w) if get(&order, w) == usize::MAX => work.push((w, 0)),
                Some(w) if get(&on_stack, w) => {
                    let value = get(&low, v).min(get(&order, w));
                    set(&mut low, v, value);
                }
                Some(_) => {}
                None => {
                    work.pop();
                    if let Some(&(parent, _)) = work.last() {
                        let value = get(&low, parent).min(get(&low, v));
                        set(&mut low, parent, value);
                    }
                    if get(&low, v) == get(&order, v) {
                        let mut component = Vec::new();
                        while let Some(w) = stack.pop() {
                            set(&mut on_stack, w, false);
                            component.push(w);
                            if w == v {
                                break;
                            }
                        }
                        let self_loop = edges.get(v).is_some_and(|e| e.contains(&v));
                        if component.len() > 1 || self_loop {
                            components.push(component);
                        }
                    }
                }
            }
        }
    }
    let mut out: Vec<Vec<String>> = components
        .into_iter()
        .map(|c| {
            cycle_path(&c, &edges)
                .into_iter()
                .filter_map(|i| names.get(i).map(|s| s.to_string()))
                .collect()
        })
        .collect();
    out.sort();
    out
}

fn get<T: Copy + Default>(v: &[T], i: usize) -> T {
    v.get(i).copied().unwrap_or_default()
}

fn set<T>(v: &mut [T], i: usize, value: T) {
    if let Some(slot) = v.get_mut(i) {
        *slot = value;
    }
}

/// A cycle through a strongly connected component, from its first member
/// back to it, in the "waits for" direction: `a -> b` means a starts
/// after b. Breadth-first, so the cycle shown is a shortest one.
fn cycle_path(component: &[usize], edges: &[Vec<usize>]) -> Vec<usize> {
    let members: BTreeSet<usize> = component.iter().copied().collect();
    let Some(&start) = members.iter().next() else {
        return Vec::new();
    };
    let mut parent: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in edges.get(v).into_iter().flatten() {
            if !members.contains(&w) {
                continue;
            }
            if w == start {
                // Walk back from v to start, then read it forwards.
                let mut path = vec![v];
                let mut cur = v;
                while cur != start {
                    cur = parent.get(&cur).copied().unwrap_or(start);
                    path.push(cur);
                }
                path.reverse();
                path.push(start);
                return path;
            }
            if let std::collections::btree_map::Entry::Vacant(e) = parent.entry(w) {
                e.insert(v);
                queue.push_back(w);
            }
        }
    }
    vec![start, start]
}

/// A dependency's state as the start gate sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepState {
    /// Queued, starting, restarting or stopping: not decided yet.
    Pending,
    /// Running, or a oneshot that remains active.
    Ready,
    /// Ended cleanly (a oneshot that did its job).
    Exited,
    Stopped,
    Failed,
}

/// Whether a queued service may start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Go,
    Wait(String),
    Fail(String),
}

/// The start gate: required services must be ready (or a oneshot that
/// exited successfully); wanted and ordered-before ones must only have
/// finished trying.
pub fn start_gate(deps: &Deps, state_of: impl Fn(&str) -> DepState) -> Gate {
    for name in &deps.requires {
        match state_of(name) {
            DepState::Ready | DepState::Exited => {}
            DepState::Pending => return Gate::Wait(format!("waiting for {name}: not ready")),
            DepState::Failed => return Gate::Fail(format!("required service {name} failed")),
            DepState::Stopped => return Gate::Fail(format!("required service {name} is stopped")),
        }
    }
    for name in deps.after.iter().filter(|n| !deps.requires.contains(*n)) {
        match state_of(name) {
            DepState::Pending => return Gate::Wait(format!("waiting for {name}: not started yet")),
            DepState::Ready | DepState::Exited | DepState::Stopped | DepState::Failed => {}
        }
    }
    Gate::Go
}

/// The stop gate: services ordered after this one stop first, when they
/// are being stopped too. `stopping(name)` says whether that one is
/// queued for stopping or still stopping.
pub fn stop_gate(deps: &Deps, stopping: impl Fn(&str) -> bool) -> Option<String> {
    deps.before
        .iter()
        .find(|n| stopping(n))
        .map(|n| format!("waiting for {n} to stop"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::spec::ServiceSpec;

    fn svc(
        name: &str,
        after: &[&str],
        requires: &[&str],
        wants: &[&str],
        before: &[&str],
    ) -> ServiceSpec {
        let mut s = ServiceSpec::new(name, vec!["/bin/true".into()]);
        let v = |l: &[&str]| l.iter().map(|x| x.to_string()).collect();
        s.after = v(after);
        s.requires = v(requires);
        s.wants = v(wants);
        s.before = v(before);
        s
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn edges_in_both_directions() {
        let specs = [
            svc("db", &[], &[], &[], &["app"]),
            svc("proxy", &[], &[], &[], &[]),
            svc("app", &["proxy"], &["db"], &["metrics"], &[]),
            svc("metrics", &[], &[], &[], &[]),
            svc("lonely", &["ghost"], &[], &[], &[]),
        ];
        let (deps, problems) = build(&specs);
        assert_eq!(problems, Problems::default());
        let app = &deps["app"];
        assert_eq!(app.after, set(&["db", "metrics", "proxy"]));
        assert_eq!(app.requires, set(&["db"]));
        assert_eq!(app.wants, set(&["metrics"]));
        assert_eq!(deps["db"].before, set(&["app"]));
        assert_eq!(deps["db"].required_by, set(&["app"]));
        assert_eq!(deps["proxy"].before, set(&["app"]));
        assert!(
            deps["lonely"].after.is_empty(),
            "After on a missing service is ignored"
        );
    }

    #[test]
    fn missing_services() {
        let specs = [svc("app", &[], &["db"], &["metrics"], &[])];
        let (_, problems) = build(&specs);
        assert_eq!(
            problems.missing_requires,
            [("app".to_string(), "db".to_string())]
        );
        assert_eq!(
            problems.missing_wants,
            [("app".to_string(), "metrics".to_string())]
        );
        assert_eq!(
            problems.failures()["app"],
            "requires db, which does not exist"
        );
    }

    #[test]
    fn cycles_of_every_length() {
        // 2-cycle a <-> b, 3-cycle x -> y -> z -> x, and a Before-made
        // 1-step loop p/q; healthy services beside them.
        let specs = [
            svc("a", &["b"], &[], &[], &[]),
            svc("b", &[], &["a"], &[], &[]),
            svc("x", &["y"], &[], &[], &[]),
            svc("y", &[], &[], &["z"], &[]),
            svc("z", &["x"], &[], &[], &[]),
            svc("p", &["q"], &[], &[], &[]),
            svc("q", &[], &[], &[], &["p"]),
            svc("r", &[], &[], &[], &["s"]),
            svc("s", &[], &[], &[], &["r"]),
            svc("healthy", &["a"], &[], &[], &[]),
            svc("fine", &[], &[], &[], &[]),
        ];
        let (_, problems) = build(&specs);
        assert_eq!(
            problems.cycles,
            [
                vec!["a", "b", "a"],
                vec!["r", "s", "r"],
                vec!["x", "y", "z", "x"],
            ]
        );
        let failures = problems.failures();
        assert_eq!(failures["a"], "dependency cycle: a -> b -> a");
        assert_eq!(failures["b"], "dependency cycle: a -> b -> a");
        assert_eq!(failures["z"], "dependency cycle: x -> y -> z -> x");
        assert!(
            !failures.contains_key("healthy"),
            "depending on a cycle is not being in it"
        );
        assert!(!failures.contains_key("fine"));
        assert!(
            !failures.contains_key("p"),
            "p after q, q before p: the same edge, no cycle"
        );
    }

    #[test]
    fn start_gate_decisions() {
        let specs = [
            svc("db", &[], &[], &[], &[]),
            svc("cache", &[], &[], &[], &[]),
            svc("log", &[], &[], &[], &[]),
            svc("app", &["log"], &["db"], &["cache"], &[]),
        ];
        let (deps, _) = build(&specs);
        let app = &deps["app"];
        let gate = |db: DepState, cache: DepState, log: DepState| {
            start_gate(app, |n| match n {
                "db" => db,
                "cache" => cache,
                "log" => log,
                other => panic!("{other}"),
            })
        };
        use DepState::*;
        assert_eq!(gate(Ready, Ready, Ready), Gate::Go);
        assert_eq!(
            gate(Exited, Failed, Stopped),
            Gate::Go,
            "wanted and ordered ones may fail"
        );
        assert_eq!(
            gate(Pending, Ready, Ready),
            Gate::Wait("waiting for db: not ready".into())
        );
        assert_eq!(
            gate(Ready, Pending, Ready),
            Gate::Wait("waiting for cache: not started yet".into())
        );
        assert_eq!(
            gate(Ready, Ready, Pending),
            Gate::Wait("waiting for log: not started yet".into())
        );
        assert_eq!(
            gate(Failed, Ready, Ready),
            Gate::Fail("required service db failed".into())
        );
        assert_eq!(
            gate(Stopped, Ready, Ready),
            Gate::Fail("required service db is stopped".into())
        );
        assert_eq!(
            start_gate(&deps["db"], |_| Pending),
            Gate::Go,
            "no dependencies: go"
        );
    }

    #[test]
    fn stop_gate_waits_for_later_services() {
        let specs = [
            svc("db", &[], &[], &[], &[]),
            svc("app", &[], &["db"], &[], &[]),
        ];
        let (deps, _) = build(&specs);
        assert_eq!(
            stop_gate(&deps["db"], |n| n == "app"),
            Some("waiting for app to stop".into())
        );
        assert_eq!(stop_gate(&deps["db"], |_| false), None);
        assert_eq!(stop_gate(&deps["app"], |_| true), None);
    }

    #[test]
    fn long_chain_has_no_cycle_and_deep_cycle_is_found() {
        let mut specs: Vec<ServiceSpec> = (0..2000)
            .map(|i| svc(&format!("s{i:04}"), &[], &[], &[], &[]))
            .collect();
        for (i, spec) in specs.iter_mut().enumerate().skip(1) {
            spec.after = vec![format!("s{:04}", i - 1)];
        }
        let (_, problems) = build(&specs);
        assert!(problems.cycles.is_empty());
        specs[0].after = vec!["s1999".into()];
        let (_, problems) = build(&specs);
        assert_eq!(problems.cycles.len(), 1);
        assert_eq!(problems.cycles[0].len(), 2001);
    }
}
