//! Processes: starting one for the engine, the one reaper, signalling a
//! service (its cgroup, its process group) or everything left at the end.

use std::path::{Path, PathBuf};

use super::*;

impl Supervisor {
    /// Starts a process of `name` (its current spec).
    pub(super) fn spawn(&mut self, name: &str, proc: Proc) -> Result<Pid, SpawnFailure> {
        let failure = |reason: String, status: i32, transient: bool| SpawnFailure {
            reason,
            status,
            transient,
        };
        let Some(unit) = self.engine.unit(name) else {
            return Err(failure("service vanished".into(), 1, false));
        };
        let spec = &unit.spec;
        let command = match proc {
            Proc::Main => Some(&spec.exec_start),
            Proc::Pre(i) => spec.exec_start_pre.get(i),
            Proc::Stop(i) => spec.exec_stop.get(i),
            Proc::Reload(i) => spec.exec_reload.get(i),
            Proc::StartPost(i) => spec.exec_start_post.get(i),
            Proc::StopPost(i) => spec.exec_stop_post.get(i),
        };
        let Some(command) = command else {
            return Err(failure(format!("no command for {proc:?}"), 1, false));
        };
        let mut extra: Vec<spawn::Var> = Vec::new();
        let control_may_notify = matches!(
            spec.notify_access,
            Some(spec::NotifyAccess::Exec | spec::NotifyAccess::All)
        );
        if spec.uses_notify() && (proc == Proc::Main || control_may_notify) {
            if let Some(sock) = &self.notify {
                extra.push(("NOTIFY_SOCKET".into(), sock.path.clone().into_os_string()));
            }
        }
        if let (Proc::Main, Some(interval)) = (proc, spec.watchdog) {
            extra.push((
                "WATCHDOG_USEC".into(),
                interval.as_micros().to_string().into(),
            ));
        }
        if let Proc::StopPost(_) = proc {
            extra.extend(run_result(&unit.life));
        }
        if let (Proc::Stop(_) | Proc::Reload(_) | Proc::StartPost(_), Some(pid)) =
            (proc, unit.life.state.main_pid())
        {
            extra.push(("MAINPID".into(), pid.to_string().into()));
        }
        if matches!(proc, Proc::Pre(_) | Proc::Main) {
            spawn::make_directories(&self.settings.root, spec)
                .map_err(|e| failure(e.reason, e.status, e.transient))?;
        }
        // A PID file left from before names no daemon of this start.
        if let (Proc::Main, spec::ServiceType::Forking, Some(file)) =
            (proc, spec.service_type, &spec.pid_file)
        {
            let _ = std::fs::remove_file(file);
        }
        let mut launch = spawn::prepare(
            &self.settings.root,
            &self.settings.base_env,
            spec,
            command,
            &extra,
            self.settings.nofile,
        )
        .map_err(|e| failure(e.reason, e.status, e.transient))?;
        if let (Some(one), Proc::Main, true) =
            (&self.settings.one_command, proc, spec.exit_is_the_result)
        {
            // The one command: on a terminal, its foreground (tini's way);
            // the caller's ignored and blocked signals kept.
            use std::io::IsTerminal;
            if std::io::stdin().is_terminal() {
                launch.session = sys::Session::ForegroundOfStdin;
            }
            launch.signals = sys::InheritedSignals {
                ignored: one.ignored,
                blocked: one.blocked,
            };
        }
        for warning in std::mem::take(&mut launch.warnings) {
            console::log(Level::Warn, &format!("{name}: {warning}"));
        }
        let streams = spawn::streams(spec);
        if let Some(dir) = self.cgroup_of(name) {
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => console::log(
                    Level::Warn,
                    &format!(
                        "{name}: cgroup {}: {e}; tracking by process group",
                        dir.display()
                    ),
                ),
            }
            if dir.is_dir() {
                launch.cgroup_procs = Some(dir.join("cgroup.procs"));
            }
        }
        let (stdout, stderr, read) = streams.map_err(|e| {
            let transient = matches!(
                e.raw_os_error(),
                Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)
            );
            failure(format!("output pipe: {e}"), 1, transient)
        })?;
        let started = spawn::start(launch, stdout, stderr)
            .map_err(|e| failure(e.reason, e.status, e.transient))?;
        let pid = started.pid;
        if let Some(e) = started.cgroup_error {
            console::log(
                Level::Warn,
                &format!(
                    "{name}: could not join cgroup {}: {e}; pid {pid} is tracked by its process group",
                    self.cgroup_of(name).unwrap_or_default().display()
                ),
            );
        }
        self.has_children = true;
        if let Some(fd) = read {
            self.pipes.watch(&self.epoll, fd, name, pid);
        }
        Ok(pid)
    }

    /// The one reaper: every exited child, handed to the engine in one
    /// batch. Exits wait in `reaped` until handed over, so that a panic on
    /// the way loses none (the recovery calls this again).
    pub(super) fn reap(&mut self) {
        crate::host::fault::point("reap", "");
        loop {
            match sys::reap_one() {
                Ok(Some((pid, status))) => self.reaped.push_back((
                    pid,
                    match status {
                        sys::WaitStatus::Exited(code) => Exit::Code(code),
                        sys::WaitStatus::Signaled(signal) => Exit::Signal(signal),
                    },
                )),
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                    self.has_children = false;
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    console::log(Level::Error, &format!("waitpid: {e}"));
                    break;
                }
            }
        }
        crate::host::fault::point("reaped", "");
        // Each process's group is looked at once every zombie of the batch
        // is gone (a group of zombies is not alive), and before the engine
        // sees any exit: delivering one may start a process, which the
        // kernel may give the pid, and so the group number, of a later
        // exit of this same batch.
        let mut exits = Vec::new();
        for (pid, exit) in &self.reaped {
            match self.engine.owner(*pid) {
                Some(name) => exits.push(Reaped {
                    pid: *pid,
                    exit: *exit,
                    group_alive: self.group_exists(name, *pid),
                }),
                // Orphans can come by the thousand: no text unless asked.
                None if console::enabled(Level::Debug) => console::log(
                    Level::Debug,
                    &format!("reaped orphan {pid} ({})", exit.describe()),
                ),
                None => {}
            }
        }
        self.reaped.clear();
        if !exits.is_empty() || !self.has_children {
            self.feed(Input::Reaped {
                exits,
                children_left: self.has_children,
            });
        }
        self.check_groups();
        // Only an exit can leave a forking start with nothing (its scan of
        // /proc stays off the loop's every turn).
        self.check_pid_files();
    }

    /// A stopping service whose main process is gone waits for its group
    /// (or cgroup) to empty: checked after each batch of exits, and at each
    /// turn of the loop, since a group may be empty already when the stop
    /// begins (then no exit will come to say so).
    pub(super) fn check_groups(&mut self) {
        for (name, group) in self.engine.groups_to_watch() {
            if !self.group_exists(&name, group) {
                self.feed(Input::GroupEmpty(name));
            }
        }
    }

    pub(super) fn signal_remaining(&self, signal: i32) {
        if self.is_pid1 {
            if let Err(e) = sys::kill(-1, signal) {
                if e.raw_os_error() != Some(libc::ESRCH) {
                    console::log(
                        Level::Error,
                        &format!("kill(-1, {}): {e}", spec::signal_name(signal)),
                    );
                }
            }
            return;
        }
        for pid in descendants(&self.settings.proc_path, sys::getpid()) {
            let _ = sys::kill(pid, signal);
        }
    }

    /// The cgroup tracking `name`, when cgroup v2 tracking is on for it.
    pub(super) fn cgroup_of(&self, name: &str) -> Option<PathBuf> {
        let root = self.settings.cgroup_root.as_ref()?;
        let unit = self.engine.unit(name)?;
        (unit.spec.kill_mode != crate::model::spec::KillMode::Process)
            .then(|| root.join(format!("{name}.service")))
    }

    /// Signals a service's process or its whole group: its cgroup when it
    /// has one (which also holds processes that left the process group),
    /// else its process group.
    pub(super) fn signal_service(&self, name: &str, pid: Pid, group: bool, signal: i32) {
        let pid = if group { self.group_of(name, pid) } else { pid };
        if let (true, Some(dir)) = (group, self.cgroup_of(name)) {
            if dir.is_dir() {
                if signal == libc::SIGKILL {
                    if kill_cgroup(&dir).is_ok() {
                        console::log(
                            Level::Debug,
                            &format!("{name}: killed cgroup {}", dir.display()),
                        );
                    } else {
                        for _ in 0..16 {
                            let members = cgroup_members(&dir);
                            if members.is_empty() {
                                break;
                            }
                            for member in members {
                                let _ = sys::kill(member, libc::SIGKILL);
                            }
                        }
                    }
                } else {
                    for member in cgroup_members(&dir) {
                        let _ = sys::kill(member, signal);
                    }
                }
                // Processes that could not join the cgroup (a failed join is
                // logged at start) are still in the process group: it gets
                // the signal too.
                signal_process(name, pid, true, signal);
                return;
            }
        }
        signal_process(name, pid, group, signal);
    }

    /// The process group to signal for `pid`: its own number, since every
    /// process init starts leads its group (setsid), except a main process
    /// init did not start (a forking daemon, a `MAINPID=`), which may live
    /// on in its starter's group. Its group is asked for only while it is
    /// the service's live main process; never init's own.
    fn group_of(&self, name: &str, pid: Pid) -> Pid {
        let is_main = self
            .engine
            .unit(name)
            .is_some_and(|u| u.life.state.main_pid() == Some(pid));
        if !is_main {
            return pid;
        }
        sys::getpgid(pid)
            .ok()
            .filter(|g| *g > 1 && sys::getpgid(0).ok() != Some(*g))
            .unwrap_or(pid)
    }

    pub(super) fn group_exists(&self, name: &str, pgid: Pid) -> bool {
        match self.cgroup_of(name) {
            Some(dir) if dir.is_dir() => cgroup_populated(&dir) || group_exists(pgid),
            _ => group_exists(pgid),
        }
    }
}

/// How the run ended, for `ExecStopPost` (systemd.exec(5)):
/// `SERVICE_RESULT`, and `EXIT_CODE`/`EXIT_STATUS` when the main process
/// ran and ended.
fn run_result(life: &crate::engine::lifecycle::Life) -> Vec<spawn::Var> {
    use crate::engine::lifecycle::{AfterStop, Failure, Outcome, State};
    let result = match &life.state {
        State::Stopping { then, .. } => match then {
            AfterStop::Stopped | AfterStop::Ended(Outcome::Success(_)) => "success",
            AfterStop::Ended(Outcome::Failure(f)) => match f {
                Failure::Exit(Exit::Code(_)) | Failure::Spawn { .. } => "exit-code",
                Failure::Exit(Exit::Signal(_)) => "signal",
                Failure::StartTimeout => "timeout",
                Failure::Watchdog => "watchdog",
                Failure::StartLimit => "start-limit-hit",
                Failure::Dependency(_) | Failure::Internal(_) => "resources",
            },
        },
        State::Stopped
        | State::Starting { .. }
        | State::Running { .. }
        | State::Reloading { .. }
        | State::Waiting { .. }
        | State::Exited { .. }
        | State::Failed { .. } => "success",
    };
    let mut vars: Vec<spawn::Var> = vec![("SERVICE_RESULT".into(), result.into())];
    match life.last_exit {
        Some(Exit::Code(code)) => {
            vars.push(("EXIT_CODE".into(), "exited".into()));
            vars.push(("EXIT_STATUS".into(), code.to_string().into()));
        }
        Some(Exit::Signal(signal)) => {
            let name = spec::signal_name(signal);
            vars.push(("EXIT_CODE".into(), "killed".into()));
            vars.push((
                "EXIT_STATUS".into(),
                name.strip_prefix("SIG").unwrap_or(&name).into(),
            ));
        }
        None => {}
    }
    vars
}

/// `cgroup.kill` (Linux 5.14+): never created, only written if there.
/// Without it, SIGKILL goes to each member, again until none is left
/// (a member may fork while it is being killed), a bounded number of times.
fn kill_cgroup(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.kill"))?
        .write_all(b"1")
}

/// The pids of a cgroup. Never 0, 1 or init itself, whatever the file
/// says: `kill(0)` would signal init's own process group.
pub(super) fn cgroup_members(dir: &Path) -> Vec<Pid> {
    let me = sys::getpid();
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|p: &Pid| *p > 1 && *p != me)
        .collect()
}

fn cgroup_populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|t| t.lines().any(|l| l.trim() == "populated 1"))
        .unwrap_or(false)
}

pub(super) fn signal_process(name: &str, pid: Pid, group: bool, signal: i32) {
    let target = if group { -pid } else { pid };
    match sys::kill(target, signal) {
        Ok(()) => {
            if signal != libc::SIGCONT {
                let whom = if group {
                    format!("process group {pid}")
                } else {
                    format!("pid {pid}")
                };
                console::log(
                    Level::Debug,
                    &format!("{name}: sent {} to {whom}", spec::signal_name(signal)),
                );
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
        Err(e) => console::log(
            Level::Warn,
            &format!("{name}: kill({target}, {}): {e}", spec::signal_name(signal)),
        ),
    }
}

fn group_exists(pgid: Pid) -> bool {
    match sys::kill(-pgid, 0) {
        Ok(()) => true,
        Err(e) => e.raw_os_error() == Some(libc::EPERM),
    }
}

/// Every descendant of `root` by walking `/proc/*/stat` parent links.
pub fn descendants(proc_path: &Path, root: Pid) -> Vec<Pid> {
    let mut parent_of: HashMap<Pid, Pid> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir(proc_path) {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<Pid>().ok())
            else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) {
                // The command name may hold spaces and parentheses: parse
                // after the last ')'.
                if let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) {
                    if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok())
                    {
                        parent_of.insert(pid, ppid);
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (child, parent) in &parent_of {
            if *parent == p && *child != root {
                out.push(*child);
                frontier.push(*child);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_from_proc() {
        let proc = std::env::temp_dir().join(format!("ei-proc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&proc);
        for (pid, ppid) in [(10, 1), (11, 10), (12, 11), (13, 1), (14, 99)] {
            std::fs::create_dir_all(proc.join(pid.to_string())).unwrap();
            std::fs::write(
                proc.join(format!("{pid}/stat")),
                format!("{pid} (a (weird) name) S {ppid} 1 1 0"),
            )
            .unwrap();
        }
        let mut found = descendants(&proc, 10);
        found.sort();
        assert_eq!(found, [11, 12]);
        let mut all = descendants(&proc, 1);
        all.sort();
        assert_eq!(all, [10, 11, 12, 13]);
        std::fs::remove_dir_all(&proc).unwrap();
    }
}
