//! `Type=forking`: the main pid a start command left, for the engine. From
//! `PIDFile=` (waited for with inotify when the daemon writes it after its
//! parent exited, as nginx does), or guessed as systemd does: the one
//! process left in the service's cgroup, or in the start command's process
//! group or session, preferring the one whose parent is init.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::*;
use crate::engine::lifecycle::{StartStep, State};

/// PID files not written yet, and the inotify instance that watches their
/// directories.
#[derive(Default)]
pub(super) struct PidFiles {
    inotify: Option<OwnedFd>,
    /// (service, start command's pid, PID file).
    pending: Vec<(String, Pid, PathBuf)>,
}

impl Supervisor {
    /// Carries out [`Effect::FindMainPid`]: answers the engine now, or once
    /// the PID file appears.
    pub(super) fn find_main_pid(&mut self, service: String, starter: Pid) {
        if let Some(result) = self.look_for_main_pid(&service, starter) {
            let more = self.handle(Input::MainPid { service, result });
            self.effects.extend(more);
        }
    }

    /// `None`: the PID file does not exist (or is empty) yet; it is watched.
    fn look_for_main_pid(&mut self, service: &str, starter: Pid) -> Option<Result<Pid, String>> {
        let unit = self.engine.unit(service)?;
        let Some(path) = unit.spec.pid_file.clone() else {
            return Some(self.guess_main_pid(service, starter));
        };
        match read_pid_file(&path) {
            Ok(Some(pid)) => Some(self.check_named_pid(service, starter, &path, pid)),
            Ok(None) if !self.anything_left(service, starter) => Some(Err(format!(
                "the start command (pid {starter}) exited, PIDFile {} was not written and no process is left",
                path.display()
            ))),
            Ok(None) => match self.watch_pid_file(service, starter, &path) {
                Ok(()) => {
                    console::log(
                        Level::Debug,
                        &format!("{service}: waiting for {}", path.display()),
                    );
                    None
                }
                Err(e) => Some(Err(format!(
                    "PIDFile {}: cannot watch: {e}",
                    path.display()
                ))),
            },
            Err(e) => Some(Err(format!("PIDFile {}: {e}", path.display()))),
        }
    }

    fn watch_pid_file(&mut self, service: &str, starter: Pid, path: &Path) -> std::io::Result<()> {
        if self.pid_files.inotify.is_none() {
            let fd = sys::inotify_init()?;
            self.epoll
                .add(
                    fd.as_fd(),
                    EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_PID_FILES),
                )
                .map_err(std::io::Error::from)?;
            self.pid_files.inotify = Some(fd);
        }
        if let Some(fd) = &self.pid_files.inotify {
            sys::inotify_watch_dir(fd.as_fd(), path.parent().unwrap_or(Path::new("/")))?;
        }
        self.pid_files
            .pending
            .retain(|(s, _, _)| s.as_str() != service);
        self.pid_files
            .pending
            .push((service.to_string(), starter, path.to_path_buf()));
        Ok(())
    }

    /// Something changed in a watched directory: look at every PID file
    /// still waited for (a start that ended meanwhile is dropped).
    pub(super) fn on_pid_files(&mut self) {
        if let Some(fd) = &self.pid_files.inotify {
            let mut buf = [0u8; 4096];
            while matches!(sys::read(fd.as_fd(), &mut buf), Ok(n) if n > 0) {}
        }
        let pending = std::mem::take(&mut self.pid_files.pending);
        for (service, starter, path) in pending {
            let waiting = self.engine.unit(&service).is_some_and(|u| {
                matches!(u.life.state, State::Starting { step: StartStep::Forked(s), .. } if s == starter)
            });
            if !waiting {
                continue;
            }
            match read_pid_file(&path) {
                Ok(None) => self.pid_files.pending.push((service, starter, path)),
                _ => self.find_main_pid(service, starter),
            }
        }
        let _ = self.carry_out_effects();
    }

    /// A pid a PID file names may become the service's main process when
    /// it runs, is not init, and is the service's: in its cgroup, in the
    /// start command's session or group, an orphan init adopted, or named
    /// by a file only root could have written (every directory on the way
    /// root's and not writable by others), as systemd requires.
    fn check_named_pid(
        &self,
        service: &str,
        starter: Pid,
        path: &Path,
        pid: Pid,
    ) -> Result<Pid, String> {
        let shown = path.display();
        let Some(st) = self.stat(pid).filter(|st| st.state != 'Z') else {
            return Err(format!(
                "PIDFile {shown} names pid {pid}, which is not running"
            ));
        };
        if pid == sys::getpid() {
            return Err(format!("PIDFile {shown} names init itself"));
        }
        let ours = self.cgroup_service(pid).as_deref() == Some(service)
            || st.session == starter
            || st.pgrp == starter
            || st.ppid == sys::getpid()
            || only_root_could_write(path);
        if ours {
            Ok(pid)
        } else {
            Err(format!(
                "PIDFile {shown} names pid {pid}, which is not a process of this service"
            ))
        }
    }

    /// Whether anything of a forking service is left once its start
    /// command exited: its cgroup; without one, its start command's group
    /// or session, or an orphan init adopted that no service owns (a
    /// daemon that left the session is one: it cannot be told apart).
    fn anything_left(&self, service: &str, starter: Pid) -> bool {
        match self.cgroup_of(service) {
            Some(dir) if dir.is_dir() => !super::processes::cgroup_members(&dir).is_empty(),
            _ => !self.processes_of_session(starter).is_empty() || self.unowned_orphans(),
        }
    }

    /// Whether init has a live child no service owns.
    fn unowned_orphans(&self) -> bool {
        let me = sys::getpid();
        let Ok(entries) = std::fs::read_dir(&self.settings.proc_path) else {
            return true;
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<Pid>().ok())
            .any(|pid| {
                self.engine.owner(pid).is_none()
                    && self
                        .stat(pid)
                        .is_some_and(|st| st.ppid == me && st.state != 'Z')
            })
    }

    /// A PID file waited for whose service has nothing left: the start
    /// failed. Called after each batch of exits (the only way something
    /// can stop being left) and when the file is first looked for.
    pub(super) fn check_pid_files(&mut self) {
        let empty: Vec<(String, Pid)> = self
            .pid_files
            .pending
            .iter()
            .filter(|(s, starter, _)| !self.anything_left(s, *starter))
            .map(|(s, starter, _)| (s.clone(), *starter))
            .collect();
        for (service, starter) in empty {
            self.pid_files.pending.retain(|(s, _, _)| *s != service);
            let waiting = self.engine.unit(&service).is_some_and(|u| {
                matches!(u.life.state, State::Starting { step: StartStep::Forked(s), .. } if s == starter)
            });
            if waiting {
                let result = Err(format!(
                    "the start command (pid {starter}) exited, its PID file was not written and no process is left"
                ));
                let more = self.handle(Input::MainPid { service, result });
                self.effects.extend(more);
            }
        }
        if !self.effects.is_empty() {
            let _ = self.carry_out_effects();
        }
    }

    /// systemd's guess: the one process the start command left.
    fn guess_main_pid(&self, service: &str, starter: Pid) -> Result<Pid, String> {
        let me = sys::getpid();
        let mut candidates: Vec<(Pid, Pid)> = match self.cgroup_of(service) {
            Some(dir) if dir.is_dir() => super::processes::cgroup_members(&dir)
                .into_iter()
                .filter_map(|pid| {
                    let st = self.stat(pid)?;
                    (st.state != 'Z').then_some((pid, st.ppid))
                })
                .collect(),
            _ => self.processes_of_session(starter),
        };
        candidates.retain(|(pid, _)| *pid != me);
        let described = || {
            candidates
                .iter()
                .map(|(p, _)| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match candidates.as_slice() {
            [] => Err(format!(
                "the start command (pid {starter}) left no process to supervise: set PIDFile=, or use boot.cgroups = \"v2\" if the daemon leaves its session"
            )),
            [(pid, _)] => Ok(*pid),
            _ => {
                let orphans: Vec<Pid> = candidates
                    .iter()
                    .filter(|(_, ppid)| *ppid == me)
                    .map(|(p, _)| *p)
                    .collect();
                match orphans.as_slice() {
                    [pid] => Ok(*pid),
                    _ => Err(format!(
                        "cannot tell the daemon's main process among pids {}: set PIDFile=",
                        described()
                    )),
                }
            }
        }
    }

    /// Live processes whose process group or session is `starter`'s, with
    /// their parents.
    fn processes_of_session(&self, starter: Pid) -> Vec<(Pid, Pid)> {
        let Ok(entries) = std::fs::read_dir(&self.settings.proc_path) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<Pid>().ok())
            .filter_map(|pid| {
                let st = self.stat(pid)?;
                (st.state != 'Z' && (st.pgrp == starter || st.session == starter))
                    .then_some((pid, st.ppid))
            })
            .collect()
    }

    /// The service whose cgroup holds `pid` (cgroup tracking only): the
    /// last part of its cgroup2 path, `NAME.service`.
    pub(super) fn cgroup_service(&self, pid: Pid) -> Option<String> {
        self.settings.cgroup_root.as_ref()?;
        let path = self.settings.proc_path.join(format!("{pid}/cgroup"));
        let bytes = crate::host::files::read(&path, 4096).ok()?;
        let text = String::from_utf8_lossy(&bytes);
        let line = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        let last = line.trim().rsplit('/').next()?;
        last.strip_suffix(".service").map(str::to_string)
    }

    /// What the engine needs to know of a notify message's sender, and of
    /// the process its `MAINPID=` names.
    pub(super) fn notify_facts(
        &self,
        sender: Pid,
        fields: &Result<Vec<(String, String)>, String>,
    ) -> crate::engine::orchestrator::NotifyFacts {
        let claimed = fields
            .as_ref()
            .ok()
            .and_then(|f| f.iter().find(|(k, _)| k == "MAINPID"))
            .and_then(|(_, v)| v.parse::<Pid>().ok())
            .filter(|p| *p > 1)
            .and_then(|pid| {
                let st = self.stat(pid).filter(|st| st.state != 'Z')?;
                Some(crate::engine::orchestrator::Claimed {
                    pid,
                    pgid: Some(st.pgrp),
                    session: Some(st.session),
                    cgroup: self.cgroup_service(pid),
                })
            });
        crate::engine::orchestrator::NotifyFacts {
            session: self.stat(sender).map(|st| st.session),
            cgroup: self.cgroup_service(sender),
            claimed,
        }
    }

    pub(super) fn stat(&self, pid: Pid) -> Option<Stat> {
        let path = self.settings.proc_path.join(format!("{pid}/stat"));
        let bytes = crate::host::files::read(&path, 4096).ok()?;
        parse_stat(&String::from_utf8_lossy(&bytes))
    }
}

/// What `/proc/PID/stat` says of a process that matters here.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Stat {
    pub state: char,
    pub ppid: Pid,
    pub pgrp: Pid,
    pub session: Pid,
}

/// Fields after the command name, which may hold spaces and parentheses.
fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let mut number = || fields.next()?.parse::<Pid>().ok();
    Some(Stat {
        state,
        ppid: number()?,
        pgrp: number()?,
        session: number()?,
    })
}

/// Whether only root could have written `path`: it and every directory
/// above it belong to root and are not writable by group or others.
fn only_root_could_write(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    path.ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .all(|p| {
            std::fs::symlink_metadata(p)
                .is_ok_and(|m| m.uid() == 0 && (m.is_symlink() || m.mode() & 0o022 == 0))
        })
}

/// The pid a PID file holds; `Ok(None)` when it does not exist or is
/// still empty.
fn read_pid_file(path: &Path) -> Result<Option<Pid>, String> {
    match crate::host::files::read(path, 64) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim();
            if text.is_empty() {
                return Ok(None);
            }
            match text.parse::<Pid>() {
                Ok(pid) if pid > 1 => Ok(Some(pid)),
                _ => Err(format!("not a process id: {text:?}")),
            }
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_stat_whatever_the_command_name() {
        let line = "4242 (a) b (c)) S 1 4200 4100 0 -1 4194560 96 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: 'S',
                ppid: 1,
                pgrp: 4200,
                session: 4100
            })
        );
        assert_eq!(parse_stat("4242 (x) Z"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn reads_pid_files() {
        let dir = std::env::temp_dir().join(format!("ei-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("d.pid");
        assert_eq!(read_pid_file(&file), Ok(None));
        for (text, want) in [
            ("", Ok(None)),
            ("  \n", Ok(None)),
            ("1234\n", Ok(Some(1234))),
            ("1", Err("not a process id: \"1\"".to_string())),
            ("12ab", Err("not a process id: \"12ab\"".to_string())),
        ] {
            std::fs::write(&file, text).unwrap();
            assert_eq!(read_pid_file(&file), want, "{text:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
