//! The entropy gate and `initctl boot` (issue 11, items 4 and 5), on the
//! real binary. The gate is boot mode's; debug builds put it in front of
//! `--no-boot`'s services with `ENCLAVE_INIT_TEST_ENTROPY=DIR`, where
//! `DIR/random` stands in for `/dev/random` (a FIFO is not readable until
//! someone writes to it, as `/dev/random` is not until the pool is
//! initialized) and `DIR/rng_current` for the kernel's. The real device is
//! proven on QEMU's nitro-enclave machine (`crates/xtask/tests/vm.rs`).

mod common;

use std::io::Write;

use common::{Builder, Init, TempDir};

const WEB: &str = "ExecStart = [\"sh\", \"-c\", \"echo serving; exec sleep 100000\"]\n";

fn boot_report(init: &Init) -> serde_json::Value {
    let out = init.initctl(&["boot", "--json"]);
    assert!(
        out.status.success(),
        "initctl boot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A stand-in for the kernel's files: `random` a FIFO, `rng_current`.
fn entropy_dir(rng: Option<&str>) -> TempDir {
    let dir = TempDir::new("entropy");
    let fifo = dir.path().join("random");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    if let Some(rng) = rng {
        dir.write("rng_current", &format!("{rng}\n"));
    }
    dir
}

fn gated(tag: &str, dir: &TempDir) -> Builder {
    Builder::new(tag).env(
        "ENCLAVE_INIT_TEST_ENTROPY",
        &dir.path().display().to_string(),
    )
}

/// Makes the stand-in `/dev/random` readable: the pool is initialized.
fn initialize_pool(dir: &TempDir) {
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("random"))
        .unwrap();
    fifo.write_all(b"x").unwrap();
}

#[test]
fn services_wait_for_the_random_pool_and_start_when_it_is_ready() {
    let dir = entropy_dir(Some("nsm-hwrng"));
    let init = gated("entropy-wait", &dir).service("web", WEB).start();
    init.wait_for(
        "entropy: the kernel's random pool is not initialized yet (hwrng: nsm-hwrng); services wait for it (at most 30s, boot.entropy)",
    );
    // The control socket is up while the services wait, and says why.
    init.wait_socket();
    let report = boot_report(&init);
    assert_eq!(report["entropy"]["state"], "waiting", "{report}");
    assert_eq!(report["entropy"]["rng"], "nsm-hwrng", "{report}");
    let list = init.initctl(&["list", "--json"]);
    let services: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(services, serde_json::json!([]), "nothing loaded yet");
    assert_eq!(init.count("web["), 0, "{}", init.output());
    initialize_pool(&dir);
    init.wait_for("entropy: the kernel's random pool is initialized after");
    init.wait_for("web[");
    let at = |needle: &str| {
        init.lines()
            .iter()
            .position(|l| l.contains(needle))
            .unwrap()
    };
    assert!(at("random pool is initialized after") < at("web: started"));
    let report = boot_report(&init);
    assert_eq!(report["entropy"]["state"], "ready", "{report}");
    assert!(
        report["entropy"]["waited_ms"].as_u64().is_some(),
        "{report}"
    );
}

#[test]
fn past_its_bound_the_gate_lets_services_start_with_an_error_naming_the_cause() {
    let dir = entropy_dir(None);
    let init = gated("entropy-bound", &dir)
        .config("[boot]\nentropy = \"300ms\"\n")
        .service("web", WEB)
        .start();
    init.wait_for("(hwrng: none); services wait for it (at most 300ms, boot.entropy)");
    let line = {
        init.wait_for("is still not initialized after");
        init.line_with("is still not initialized after")
    };
    assert!(line.contains("[error]") || line.contains("error"), "{line}");
    assert!(line.contains("(hwrng: none)"), "{line}");
    assert!(
        line.contains("getrandom() and /dev/random will block"),
        "{line}"
    );
    assert!(line.contains("nsm.ko"), "{line}");
    init.wait_for("web[");
    assert_eq!(boot_report(&init)["entropy"]["state"], "timed-out");
}

#[test]
fn an_initialized_pool_opens_the_gate_at_once() {
    let dir = TempDir::new("entropy-ready");
    // A regular file is always readable: the pool is ready.
    dir.write("random", "");
    dir.write("rng_current", "nsm-hwrng\n");
    let init = gated("entropy-ready", &dir).service("web", WEB).start();
    init.wait_for("web[");
    assert_eq!(
        init.count("entropy: the kernel's random pool is initialized (hwrng: nsm-hwrng)"),
        1,
        "{}",
        init.output()
    );
    assert_eq!(init.count("not initialized yet"), 0);
    init.wait_socket();
    let report = boot_report(&init);
    assert_eq!(report["entropy"]["state"], "ready");
    assert_eq!(report["entropy"]["waited_ms"], 0);
}

#[test]
fn a_shutdown_while_waiting_ends_without_starting_anything() {
    let dir = entropy_dir(None);
    let mut init = gated("entropy-term", &dir).service("web", WEB).start();
    init.wait_for("services wait for it");
    init.signal(libc::SIGTERM);
    let status = init.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", init.output());
    assert_eq!(init.count("web["), 0, "{}", init.output());
    assert_eq!(
        init.count("entropy: the kernel's random pool is initialized"),
        0
    );
}

#[test]
fn a_missing_entropy_device_is_named_and_does_not_hold_services_back() {
    let dir = TempDir::new("entropy-missing");
    let init = gated("entropy-missing", &dir).service("web", WEB).start();
    init.wait_for("web[");
    let line = init.line_with("entropy: ");
    assert!(
        line.contains(&format!("{}/random: No such file", dir.path().display())),
        "{line}"
    );
    init.wait_socket();
    assert_eq!(boot_report(&init)["entropy"]["state"], "unknown");
}

#[test]
fn initctl_boot_without_the_boot_says_so() {
    let init = Builder::new("boot-report").service("web", WEB).start();
    init.wait_for("web[");
    init.wait_socket();
    let report = boot_report(&init);
    assert_eq!(report["mode"], "no-boot", "{report}");
    assert_eq!(report["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(report["entropy"]["state"], "not-gated");
    assert!(report["nsm"].is_null() && report["boot_ms"].is_null());
    let text = init.initctl(&["boot"]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.starts_with(&format!(
            "enclave-init {} (no-boot)\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(text.contains("   Entropy: not-gated\n"), "{text}");
}

/// A reload while the gate holds the services back (SIGHUP, `initctl
/// reload`) changes nothing: the services start once, after the gate. (It
/// used to start them at once, then a second time when the gate opened.)
#[test]
fn a_reload_while_waiting_starts_nothing_and_services_start_once() {
    let dir = entropy_dir(None);
    let init = gated("entropy-reload", &dir).service("web", WEB).start();
    init.wait_for("services wait for it");
    init.wait_socket();
    init.signal(libc::SIGHUP);
    init.wait_for("received SIGHUP");
    let out = init.initctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", init.output());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the kernel's random pool"), "{err}");
    let out = init.initctl(&["start", "web"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no such service: web") && err.contains("random pool"),
        "{err}"
    );
    assert_eq!(init.count("web: started"), 0, "{}", init.output());
    initialize_pool(&dir);
    init.wait_for("web[");
    init.wait_for("serving");
    // One more round of the loop: nothing else starts.
    assert!(init.initctl(&["list"]).status.success());
    assert_eq!(init.count("web: started"), 1, "{}", init.output());
    assert_eq!(init.count("serving"), 1, "{}", init.output());
}

/// A panic where the gate opens (a test-only fault point) neither loses
/// the services nor starts them twice: the recovery loads them.
#[test]
fn a_panic_as_the_gate_opens_still_starts_the_services_once() {
    let dir = entropy_dir(None);
    let init = gated("entropy-panic", &dir)
        .env("ENCLAVE_INIT_FAULTS", "entropy")
        .service("web", WEB)
        .start();
    init.wait_for("services wait for it");
    initialize_pool(&dir);
    init.wait_for("internal error while handling");
    init.wait_for("web[");
    init.wait_socket();
    assert!(init.initctl(&["list"]).status.success());
    assert_eq!(init.count("web: started"), 1, "{}", init.output());
}
