//! Test-only fault injection, compiled into debug builds only (and into
//! the release build of `cargo xtask bench`'s parent-channel figures, with
//! the `test-hooks` feature): release binaries (what ships as `/init`)
//! have no fault points and read no test variables.
//!
//! `ENCLAVE_INIT_FAULTS="point[:detail],..."` makes init panic once at
//! each listed point (and detail, e.g. a service name): the tests use it
//! to prove that a panic in any handler neither ends PID 1 nor leaves its
//! view of services and processes half changed. The points: `load`
//! (parsing a service file, detail: its name), `control` (a request,
//! detail: its command), `reap` (before `waitpid`), `reaped` (after it,
//! before the exits are delivered), `timer`, `pipe` (detail: the service),
//! `notify`, `reload` (half-way through applying the changes), `deliver`
//! (an event after a spawn, detail: the
//! service), `boot` (a boot step, detail: its name), `entropy` (the
//! entropy gate opening, before the services load).
//!
//! `ENCLAVE_INIT_TEST_CGROUP_ROOT=DIR` tracks services in cgroups under
//! DIR in `--no-boot` mode, so that the tests can use a fake hierarchy.
//!
//! `ENCLAVE_INIT_TEST_PARENT_SOCKET=PATH` makes the parent channel listen
//! on a Unix socket instead of vsock.
//!
//! `ENCLAVE_INIT_TEST_ENTROPY=DIR` puts the entropy gate of boot mode in
//! front of `--no-boot`'s services, with `DIR/random` (a FIFO: readable
//! once the test writes to it) for `/dev/random` and `DIR/rng_current`
//! for the kernel's.

#[cfg(any(debug_assertions, feature = "test-hooks"))]
mod armed {
    use std::sync::Mutex;

    static FAULTS: Mutex<Option<Vec<String>>> = Mutex::new(None);

    /// Panics if `point` (with `detail`) is armed, once.
    #[allow(clippy::panic)]
    pub fn point(point: &str, detail: &str) {
        let hit = {
            let mut guard = FAULTS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let faults = guard.get_or_insert_with(|| {
                std::env::var("ENCLAVE_INIT_FAULTS")
                    .unwrap_or_default()
                    .split(',')
                    .filter(|f| !f.is_empty())
                    .map(str::to_string)
                    .collect()
            });
            let full = format!("{point}:{detail}");
            match faults.iter().position(|f| *f == point || *f == full) {
                Some(i) => {
                    faults.remove(i);
                    true
                }
                None => false,
            }
        };
        if hit {
            panic!("injected fault at {point} ({detail})");
        }
    }

    pub fn cgroup_root() -> Option<std::path::PathBuf> {
        std::env::var_os("ENCLAVE_INIT_TEST_CGROUP_ROOT").map(std::path::PathBuf::from)
    }

    pub fn entropy_dir() -> Option<std::path::PathBuf> {
        std::env::var_os("ENCLAVE_INIT_TEST_ENTROPY").map(std::path::PathBuf::from)
    }

    /// A Unix socket the parent channel listens on instead of vsock.
    pub fn parent_socket() -> Option<std::path::PathBuf> {
        std::env::var_os("ENCLAVE_INIT_TEST_PARENT_SOCKET").map(std::path::PathBuf::from)
    }
}

#[cfg(any(debug_assertions, feature = "test-hooks"))]
pub use armed::{cgroup_root, entropy_dir, parent_socket, point};

/// Release builds: no fault points.
#[cfg(not(any(debug_assertions, feature = "test-hooks")))]
#[inline(always)]
pub fn point(_point: &str, _detail: &str) {}

/// Release builds: no test hierarchy.
#[cfg(not(any(debug_assertions, feature = "test-hooks")))]
pub fn cgroup_root() -> Option<std::path::PathBuf> {
    None
}

/// Release builds: no stand-in entropy gate.
#[cfg(not(any(debug_assertions, feature = "test-hooks")))]
pub fn entropy_dir() -> Option<std::path::PathBuf> {
    None
}

/// Release builds: the parent channel is vsock, always.
#[cfg(not(any(debug_assertions, feature = "test-hooks")))]
pub fn parent_socket() -> Option<std::path::PathBuf> {
    None
}

/// The variables of this module: never passed on to services.
pub const VARIABLES: &[&str] = &[
    "ENCLAVE_INIT_FAULTS",
    "ENCLAVE_INIT_TEST_CGROUP_ROOT",
    "ENCLAVE_INIT_TEST_ENTROPY",
    "ENCLAVE_INIT_TEST_PARENT_SOCKET",
];
