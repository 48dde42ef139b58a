//! The entropy gate: in boot mode, services start only once the kernel's
//! random pool is initialized, so that no service blocks in `getrandom`
//! (or, worse, reads `/dev/urandom` before it is seeded) without anyone
//! knowing why. `/dev/random` is readable exactly then: it is one more fd
//! of the loop, never a sleep. Past `boot.entropy` the services start
//! anyway, after an error line that names the cause.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;

use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::*;
use crate::model::EntropyGate;

/// The longest `rng_current` init reads (a driver's name).
const RNG_NAME_MAX: usize = 256;

/// A gate still closed.
pub(super) struct Waiting {
    device: File,
    since: Instant,
    deadline: Option<Instant>,
}

impl Waiting {
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// The kernel's hardware RNG, as `rng_current` names it.
fn rng_name(gate: &EntropyGate) -> String {
    match crate::host::files::read_text(&gate.rng_current, RNG_NAME_MAX) {
        Ok(text) if !text.trim().is_empty() => text.trim().to_string(),
        Ok(_) => "none".into(),
        Err(e) if e.is_not_found() => "none".into(),
        Err(e) => format!("unknown ({e})"),
    }
}

fn readable(file: &File) -> bool {
    let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
    matches!(nix::poll::poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Supervisor {
    /// Opens the gate at once when the pool is ready (or there is no
    /// gate); otherwise starts watching `/dev/random`. Whether the
    /// services must wait.
    pub(super) fn begin_entropy_gate(&mut self) -> bool {
        let Some(gate) = self.settings.entropy_gate.clone() else {
            self.boot_report.entropy.state = "not-gated".into();
            return false;
        };
        let rng = rng_name(&gate);
        self.boot_report.entropy.rng = Some(rng.clone());
        let device = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&gate.device)
        {
            Ok(f) => f,
            Err(e) => {
                console::log(
                    Level::Error,
                    &format!(
                        "entropy: {}: {e}; starting services without knowing whether the kernel's random pool is initialized (hwrng: {rng})",
                        gate.device.display()
                    ),
                );
                self.boot_report.entropy.state = "unknown".into();
                return false;
            }
        };
        if readable(&device) {
            console::log(
                Level::Info,
                &format!("entropy: the kernel's random pool is initialized (hwrng: {rng})"),
            );
            self.boot_report.entropy.state = "ready".into();
            self.boot_report.entropy.waited_ms = Some(0);
            return false;
        }
        if !self.watch(device.as_fd(), TOKEN_ENTROPY, "entropy device") {
            self.boot_report.entropy.state = "unknown".into();
            return false;
        }
        let bound = if gate.bound == Duration::MAX {
            "no bound".to_string()
        } else {
            format!("at most {}", duration::format(gate.bound))
        };
        console::log(
            Level::Warn,
            &format!(
                "entropy: the kernel's random pool is not initialized yet (hwrng: {rng}); services wait for it ({bound}, boot.entropy)"
            ),
        );
        let now = Instant::now();
        self.boot_report.entropy.state = "waiting".into();
        self.entropy = Some(Waiting {
            device,
            since: now,
            deadline: now.checked_add(gate.bound),
        });
        true
    }

    /// `/dev/random` became readable: the pool is initialized.
    pub(super) fn on_entropy(&mut self) {
        self.end_entropy_wait(true);
    }

    /// The bound passed with the gate still closed.
    pub(super) fn entropy_deadline_passed(&mut self, now: Instant) {
        if self
            .entropy
            .as_ref()
            .and_then(Waiting::deadline)
            .is_some_and(|d| d <= now)
        {
            self.end_entropy_wait(false);
        }
    }

    fn end_entropy_wait(&mut self, ready: bool) {
        let Some(waiting) = self.entropy.take() else {
            return;
        };
        let start = !(self.engine.is_shutting_down() || self.finished.is_some());
        let (starting, anyway) = if start {
            ("; starting services", "; starting services anyway")
        } else {
            ("", "")
        };
        let _ = self.epoll.delete(waiting.device.as_fd());
        let waited = waiting.since.elapsed();
        let rng = self
            .boot_report
            .entropy
            .rng
            .clone()
            .unwrap_or_else(|| "none".into());
        self.boot_report.entropy.waited_ms = Some(millis(waited));
        if ready {
            self.boot_report.entropy.state = "ready".into();
            console::log(
                Level::Info,
                &format!(
                    "entropy: the kernel's random pool is initialized after {} ms (hwrng: {rng}){starting}",
                    millis(waited)
                ),
            );
        } else {
            self.boot_report.entropy.state = "timed-out".into();
            console::log(
                Level::Error,
                &format!(
                    "entropy: the kernel's random pool is still not initialized after {} (hwrng: {rng}){anyway}: getrandom() and /dev/random will block in them until it is. An enclave's entropy comes from the NSM: is nsm.ko in boot.modules, and does the kernel have CONFIG_HW_RANDOM?",
                    duration::format(waited)
                ),
            );
        }
        if !start {
            return;
        }
        // (A panic from here on: the recovery loads the services.)
        crate::host::fault::point("entropy", "");
        self.load_initial();
    }
}
