//! Messages on the notify socket: whose they are (`NotifyAccess=`) and
//! what they say (`READY=1`, `STATUS=`, `STOPPING=1`, `MAINPID=`,
//! `EXTEND_TIMEOUT_USEC=`, `WATCHDOG=1`, `WATCHDOG=trigger`,
//! `WATCHDOG_USEC=`), with systemd's meanings.

use std::time::{Duration, Instant};

use super::*;
use crate::engine::lifecycle::Notice;
use crate::model::spec::NotifyAccess;

/// A notify field's text in init's own lines (which the parent channel may
/// carry): shown only when it is short and plain (`MAINPID` values, key
/// names), never a service's arbitrary text.
fn shown(text: &str) -> &str {
    let plain = !text.is_empty()
        && text.len() <= 32
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        text
    } else {
        "(not shown)"
    }
}

impl Engine {
    pub(super) fn notify(
        &mut self,
        pid: Pid,
        pgid: Option<Pid>,
        fields: Result<Vec<(String, String)>, String>,
        facts: NotifyFacts,
        now: Instant,
        out: &mut Out,
    ) {
        let Some(name) = self.speaker(pid, pgid, &facts) else {
            out.push(Effect::Noise(Noise::ForeignNotify { pid }));
            return;
        };
        let fields = match fields {
            Ok(f) => f,
            Err(reason) => {
                out.push(Effect::Noise(Noise::GarbageNotify {
                    service: name,
                    pid,
                    reason,
                }));
                return;
            }
        };
        for (key, value) in fields {
            let number = || value.parse::<u64>().ok();
            let notice = match (key.as_str(), value.as_str()) {
                ("READY", "1") => {
                    self.deliver(&name, Event::Ready, now, out);
                    continue;
                }
                ("STATUS", _) => {
                    if let Some(u) = self.units.get_mut(&name) {
                        u.status_text = Some(value.chars().take(256).collect());
                    }
                    continue;
                }
                ("STOPPING", "1") => {
                    out.push(Effect::Log(
                        Level::Info,
                        format!("{name}: reports it is stopping"),
                    ));
                    continue;
                }
                ("MAINPID", _) => match self.claimed_main(&name, &value, pid, &facts) {
                    Ok(new) => {
                        self.procs.insert(new, name.clone());
                        Notice::MainPid(new)
                    }
                    Err(reason) => {
                        out.push(Effect::Log(
                            Level::Warn,
                            format!(
                                "{name}: ignoring MAINPID={} from pid {pid}: {reason}",
                                shown(&value)
                            ),
                        ));
                        continue;
                    }
                },
                ("EXTEND_TIMEOUT_USEC", _) if number().is_some() => {
                    Notice::ExtendTimeout(Duration::from_micros(number().unwrap_or(0)))
                }
                ("WATCHDOG", "1") => Notice::WatchdogPing,
                ("WATCHDOG", "trigger") => Notice::WatchdogTrigger,
                ("WATCHDOG_USEC", _) if number().is_some() => {
                    Notice::WatchdogInterval(Duration::from_micros(number().unwrap_or(0)))
                }
                _ => {
                    out.push(Effect::Log(
                        Level::Debug,
                        format!("{name}: notify: ignoring {}", shown(&key)),
                    ));
                    continue;
                }
            };
            self.deliver(&name, Event::Notice(notice), now, out);
        }
    }

    /// The service `pid` may speak for, by its `NotifyAccess=`: `main`, the
    /// main process; `exec`, also any process init started for it; `all`,
    /// also its process group, session and cgroup. Unset: the main process
    /// and its process group.
    fn speaker(&self, pid: Pid, pgid: Option<Pid>, facts: &NotifyFacts) -> Option<String> {
        self.units
            .iter()
            .filter(|(_, u)| {
                u.spec.service_type == ServiceType::Notify
                    || u.spec.watchdog.is_some()
                    || u.spec.notify_access.is_some()
            })
            .find(|(name, u)| {
                let Some(main) = u.life.state.main_pid() else {
                    return false;
                };
                let started_by_init = self.procs.get(&pid) == Some(*name);
                match u.spec.notify_access {
                    Some(NotifyAccess::None) => false,
                    Some(NotifyAccess::Main) => pid == main,
                    Some(NotifyAccess::Exec) => pid == main || started_by_init,
                    Some(NotifyAccess::All) => {
                        pid == main
                            || started_by_init
                            || pgid == Some(main)
                            || facts.session == Some(main)
                            || facts.cgroup.as_deref() == Some(name.as_str())
                    }
                    None => pid == main || pgid == Some(main),
                }
            })
            .map(|(n, _)| n.clone())
    }

    /// `MAINPID=`: a live process of the service (the sender's session, the
    /// main process's group, or the service's cgroup), never init.
    fn claimed_main(
        &self,
        name: &str,
        value: &str,
        sender: Pid,
        facts: &NotifyFacts,
    ) -> Result<Pid, String> {
        let new: Pid = value.parse().map_err(|_| "not a process id".to_string())?;
        if new <= 1 {
            return Err("not a process id".into());
        }
        let claimed = facts
            .claimed
            .as_ref()
            .filter(|c| c.pid == new)
            .ok_or("no such process")?;
        let main = self.units.get(name).and_then(|u| u.life.state.main_pid());
        let ours = new == sender
            || (claimed.session.is_some() && claimed.session == facts.session)
            || (main.is_some() && claimed.pgid == main)
            || claimed.cgroup.as_deref() == Some(name);
        if ours {
            Ok(new)
        } else {
            Err("that process is not one of the service's".into())
        }
    }
}
