//! The loop's event sources but the pipes: signals, the timer, the notify
//! socket and the control socket, each turned into inputs for the engine.

use super::*;

/// The service of `-- CMD`.
const ONE_COMMAND: &str = "main";

impl Supervisor {
    /// Every signal the signalfd holds, read in batches; one reap for all
    /// the SIGCHLDs of a batch. A batch that did not fill the buffer took
    /// everything pending (epoll, level-triggered, reports any newcomer),
    /// so no read is spent on learning that nothing is left.
    pub(super) fn on_signals(&mut self) {
        loop {
            let mut batch = [sys::NO_SIGNAL; 16];
            let n = match sys::read_signals(self.signals.as_fd(), &mut batch) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    console::log(Level::Error, &format!("reading signalfd: {e}"));
                    return;
                }
            };
            let got = batch.get(..n).unwrap_or_default();
            if got.iter().any(|(signal, _)| *signal == libc::SIGCHLD) {
                self.reap();
            }
            for (signal, sender) in got {
                self.on_signal(*signal, *sender);
            }
            if n < batch.len() {
                return;
            }
        }
    }

    pub(super) fn on_signal(&mut self, signal: i32, sender: Pid) {
        if signal != libc::SIGCHLD && self.forward_to_command(signal) {
            return;
        }
        match signal {
            // Reaped above, once for the whole batch.
            libc::SIGCHLD => {}
            libc::SIGTERM | libc::SIGINT | libc::SIGPWR => {
                let ending = match self.settings.mode {
                    Mode::Boot => Ending::Poweroff,
                    Mode::NoBoot => Ending::Exit(0),
                };
                self.feed(Input::Shutdown {
                    ending,
                    reason: format!("received {} from pid {sender}", spec::signal_name(signal)),
                });
            }
            libc::SIGHUP => {
                console::log(Level::Info, "received SIGHUP: reloading service files");
                // Errors are logged by reload itself.
                let _ = self.reload();
            }
            other => console::log(
                Level::Debug,
                &format!("ignoring {} from pid {sender}", spec::signal_name(other)),
            ),
        }
    }

    /// One-command mode: every signal init gets goes to the command (its
    /// process group, unless `--single-child`), as tini and dumb-init do;
    /// what it does with it is its business, and its exit status is
    /// init's. A job-control stop is passed on, then init stops itself, as
    /// dumb-init does (the kernel ignores that for PID 1). Whether the
    /// signal went to the command (not when it is not running).
    fn forward_to_command(&mut self, signal: i32) -> bool {
        let Some(one) = &self.settings.one_command else {
            return false;
        };
        let Some(pid) = self
            .engine
            .unit(ONE_COMMAND)
            .and_then(|u| u.life.state.main_pid())
        else {
            return false;
        };
        let target = if one.group { -pid } else { pid };
        match sys::kill(target, signal) {
            Ok(()) => {}
            // The group may be gone (the command exited, not yet reaped).
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => console::log(
                Level::Error,
                &format!("forwarding {} to {target}: {e}", spec::signal_name(signal)),
            ),
        }
        if matches!(signal, libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU) && !self.is_pid1 {
            let _ = sys::kill(sys::getpid(), libc::SIGSTOP);
        }
        true
    }

    pub(super) fn on_timer(&mut self) {
        let mut buf = [0u8; 8];
        let _ = sys::read(self.timer.as_fd(), &mut buf);
        self.timer_armed = None;
        crate::host::fault::point("timer", "");
        let now = Instant::now();
        self.entropy_deadline_passed(now);
        self.feed(Input::Tick);
        self.with_control(|ctl, sup| ctl.on_deadline(now, &sup.epoll, TOKEN_CONTROL));
        self.parent_on_deadline(now);
        for (limit, what) in [
            (
                &mut self.foreign_notify,
                "messages from processes of no Type=notify service",
            ),
            (&mut self.garbage_notify, "garbage messages"),
        ] {
            if let Some(n) = limit.take_suppressed(now) {
                console::log(
                    Level::Warn,
                    &format!(
                        "notify: {n} {what} suppressed in the last {}",
                        duration::format(limit.interval())
                    ),
                );
            }
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let control = self.control.as_ref().and_then(Control::deadline);
        let warnings = [&self.foreign_notify, &self.garbage_notify]
            .into_iter()
            .filter_map(RateLimit::deadline);
        let entropy = self.entropy.as_ref().and_then(entropy::Waiting::deadline);
        self.engine
            .next_deadline()
            .into_iter()
            .chain(self.parent_deadline())
            .chain(control)
            .chain(warnings)
            .chain(entropy)
            .min()
    }

    pub(super) fn arm_timer(&mut self) {
        let next = self.next_deadline();
        if next == self.timer_armed {
            return;
        }
        let result = match next {
            None => self.timer.unset(),
            Some(at) => {
                // A zero expiry would disarm the timer: use 1 ns instead.
                let wait = at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_nanos(1));
                self.timer.set(
                    Expiration::OneShot(TimeSpec::from_duration(wait)),
                    TimerSetTimeFlags::empty(),
                )
            }
        };
        match result {
            Ok(()) => self.timer_armed = next,
            Err(e) => console::log(Level::Error, &format!("timerfd_settime: {e}")),
        }
    }

    pub(super) fn on_notify(&mut self) {
        // Bounded per wakeup; level-triggered epoll brings us back.
        for _ in 0..64 {
            let message = match self.notify.as_ref().map(NotifySocket::recv) {
                Some(Ok(Some(m))) => m,
                Some(Ok(None)) | None => return,
                Some(Err(e)) => {
                    console::log(Level::Error, &format!("notify socket: {e}"));
                    return;
                }
            };
            crate::host::fault::point("notify", "");
            // The engine decides whose message it is: by the sender's pid
            // (from the kernel), or its process group.
            let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(message.pid)))
                .ok()
                .map(|g| g.as_raw());
            let facts = self.notify_facts(message.pid, &message.body);
            self.feed(Input::Notify {
                pid: message.pid,
                pgid,
                fields: message.body.clone(),
                facts,
            });
            // The message (and its barrier fd) is dropped here: the sender
            // learns that init has handled it.
            drop(message);
        }
    }

    // ---- control socket ----

    pub(super) fn on_control_accept(&mut self) {
        self.with_control(|ctl, sup| ctl.accept(&sup.epoll));
    }

    pub(super) fn on_control_client(&mut self, token: Token, flags: EpollFlags) {
        self.with_control(|ctl, sup| {
            let requests = ctl.on_client_event(token, flags, &sup.epoll);
            for (client, request) in requests {
                let what = request.as_ref().map_or_else(
                    |_| "a bad control request".to_string(),
                    |r| format!("control request {}", r.command.name()),
                );
                let step = panics::catch(|| {
                    let step = control::execute(&sup.view(), ctl, client, request);
                    match step {
                        Step::Do(task) => {
                            let result = sup.carry_out(&task);
                            ctl.done(client, &task, result, &sup.view())
                        }
                        other => other,
                    }
                });
                let reply = match step {
                    Ok(Step::Reply(response)) => Some(*response),
                    Ok(Step::Later | Step::Do(_)) => None,
                    Err(text) => {
                        console::log(
                            Level::Error,
                            &format!("internal error while handling {what}: {text}; carrying on"),
                        );
                        sup.recovering = true;
                        Some(Response::Error {
                            message: format!("internal error in init: {text}"),
                        })
                    }
                };
                ctl.reply(client, reply, &sup.epoll);
            }
            ctl.pump(None, &sup.view(), &sup.epoll);
            ctl.settle_waiting(&sup.view(), &sup.epoll);
        });
    }

    /// Carries out what a control request asks of init: an engine request,
    /// a reload, a shutdown. Its result, for the control server to answer.
    pub(super) fn carry_out(&mut self, task: &Task) -> Result<control::Done, String> {
        match task {
            Task::Engine(request) => {
                let fed = self.feed(Input::Request(request.clone()));
                fed.answers
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| Err("no answer".into()))
                    .map(control::Done::Message)
            }
            Task::Reload => self.reload().map(control::Done::Reloaded),
            Task::Shutdown { reboot } => {
                let ending = match (self.settings.mode, reboot) {
                    (Mode::Boot, false) => Ending::Poweroff,
                    (Mode::Boot, true) => Ending::Reboot,
                    (Mode::NoBoot, _) => Ending::Exit(0),
                };
                let what = if *reboot { "reboot" } else { "poweroff" };
                self.feed(Input::Shutdown {
                    ending,
                    reason: format!("initctl {what}"),
                });
                Ok(control::Done::Message(format!("shutting down ({what})")))
            }
        }
    }

    /// Runs `f` with the control server taken out of the supervisor (a
    /// request may change the supervisor) and always puts it back, panic
    /// or not: the control socket outlives any request.
    pub(super) fn with_control(&mut self, f: impl FnOnce(&mut Control, &mut Self)) {
        let Some(mut ctl) = self.control.take() else {
            return;
        };
        let result = panics::catch(|| f(&mut ctl, self));
        self.control = Some(ctl);
        if let Err(text) = result {
            console::log(
                Level::Error,
                &format!("internal error while serving the control socket: {text}; carrying on"),
            );
            self.recovering = true;
        }
    }
}
