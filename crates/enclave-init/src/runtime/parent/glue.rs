//! The loop's side of the parent channel: opening it, its events, its
//! deadlines, the end.

use std::time::Instant;

use nix::sys::epoll::EpollFlags;

use super::*;
use crate::runtime::Supervisor;

impl Supervisor {
    /// Listens when the image's config has `[parent]`; a failure is logged
    /// and init goes on without the channel.
    pub(in crate::runtime) fn open_parent_channel(&mut self) {
        let Some(config) = self.settings.config.parent.clone() else {
            return;
        };
        // The tests' stand-in for vsock, never in an enclave (boot mode),
        // whatever the build.
        let unix = match self.settings.mode {
            crate::model::Mode::NoBoot => crate::host::fault::parent_socket(),
            crate::model::Mode::Boot => None,
        };
        match Server::bind(
            &config,
            unix.as_deref(),
            crate::runtime::TOKEN_PARENT_CLIENT,
        ) {
            Ok(server)
                if self.watch(
                    server.listener_fd(),
                    crate::runtime::TOKEN_PARENT,
                    "parent channel",
                ) =>
            {
                let exported = match &config.logs {
                    crate::model::config::Exported::All => "all".to_string(),
                    crate::model::config::Exported::Only(names) if names.is_empty() => {
                        "none".to_string()
                    }
                    crate::model::config::Exported::Only(names) => names.join(", "),
                };
                console::log(
                    Level::Info,
                    &format!(
                        "parent channel: vsock port {} for CID {}; logs exported: {exported}; poweroff {}",
                        config.port,
                        config.cid,
                        if config.allow_poweroff { "allowed" } else { "refused" }
                    ),
                );
                self.parent = Some(server);
            }
            Ok(_) => {}
            Err(e) => console::log(
                Level::Error,
                &format!(
                    "parent channel: vsock port {}: {e}; the parent will not see this enclave",
                    config.port
                ),
            ),
        }
    }

    /// Runs `f` with the parent server taken out of the supervisor, and
    /// always puts it back, panic or not.
    fn with_parent(&mut self, f: impl FnOnce(&mut Server, &mut Self)) {
        let Some(mut server) = self.parent.take() else {
            return;
        };
        let result = crate::host::panics::catch(|| f(&mut server, self));
        if let Err(text) = result {
            // The channel holds no state of the services: its clients are
            // dropped (their output may be half written), the listener
            // stays, and the loop needs no recovery, so that a parent can
            // never make init end by holding a connection open.
            console::log(
                Level::Error,
                &format!(
                    "internal error while serving the parent channel: {text}; its clients are closed"
                ),
            );
            server.drop_clients(&self.epoll);
        }
        self.parent = Some(server);
    }

    pub(in crate::runtime) fn on_parent_accept(&mut self) {
        self.with_parent(|p, s| p.accept(&s.epoll));
    }

    pub(in crate::runtime) fn on_parent_client(&mut self, token: Token, flags: EpollFlags) {
        let mut ask = None;
        self.with_parent(|p, s| ask = p.on_client_event(token, flags, &s.view(), &s.epoll));
        if ask == Some(Ask::Poweroff) {
            let ending = match self.settings.mode {
                crate::model::Mode::Boot => Ending::Poweroff,
                crate::model::Mode::NoBoot => Ending::Exit(0),
            };
            self.feed(crate::engine::orchestrator::Input::Shutdown {
                ending,
                reason: "the parent asked for it (allow_poweroff)".into(),
            });
        }
    }

    /// After each turn: what changed, to the parent's clients.
    pub(in crate::runtime) fn observe_for_parent(&mut self) {
        self.with_parent(|p, s| p.observe(&s.view(), &s.epoll));
    }

    pub(in crate::runtime) fn parent_deadline(&self) -> Option<Instant> {
        self.parent.as_ref().and_then(Server::deadline)
    }

    pub(in crate::runtime) fn parent_on_deadline(&mut self, now: Instant) {
        self.with_parent(|p, s| p.on_deadline(now, &s.epoll));
    }

    /// The end record to every client, before init ends.
    pub(in crate::runtime) fn tell_parent_the_end(&mut self, ending: Ending) {
        self.with_parent(|p, s| p.end(ending, s.engine.end_cause(), &s.view(), &s.epoll));
    }
}
