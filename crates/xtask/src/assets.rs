//! What the VM harness needs, installed idempotently: QEMU, busybox,
//! cpio and xz from Debian; vhost-device-vsock from crates.io; the musl
//! target; for the PC machine a Debian 6.12 cloud kernel
//! (bookworm-backports) with its real `nsm.ko` and the vsock modules,
//! unpacked under `target/vm-assets`; for the nitro-enclave machine what
//! `nitro.rs` builds.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const MUSL: &str = "x86_64-unknown-linux-musl";
pub const VHOST_VERSION: &str = "0.3.0";

/// The vsock modules of the 6.12 kernel, in load order (each module's
/// `depends=` names the ones before it).
pub const VSOCK_MODULES: &[&str] = &[
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
];

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

pub fn assets_dir() -> PathBuf {
    workspace_root().join("target/vm-assets")
}

/// Paths of everything a boot needs.
#[derive(Debug, Clone)]
pub struct Assets {
    pub kernel: PathBuf,
    /// `nsm.ko` of the kernel, decompressed (nitro-cli ships it plain).
    pub nsm: PathBuf,
    /// The vsock modules, compressed as the kernel package has them.
    pub vsock_modules: Vec<PathBuf>,
    pub busybox: PathBuf,
    pub vhost: PathBuf,
    /// Debian's QEMU, for the PC machine.
    pub qemu: PathBuf,
    /// The nitro-enclave machine's QEMU, kernel and EIF tool.
    pub nitro: crate::nitro::NitroAssets,
}

fn say(message: &str) {
    eprintln!("xtask: {message}");
}

pub fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {status}"))
    }
}

fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let home_cargo = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin"));
    std::env::split_paths(&path)
        .chain(home_cargo)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The PC machine's kernel, nsm.ko and vsock modules.
fn pc_kernel() -> Result<(PathBuf, PathBuf, Vec<PathBuf>), String> {
    let dir = assets_dir();
    let kernel = dir.join("vmlinuz");
    let nsm = dir.join("nsm.ko");
    let vsock_modules: Vec<PathBuf> = VSOCK_MODULES
        .iter()
        .map(|m| dir.join(format!("{m}.ko.xz")))
        .collect();
    if !kernel.is_file() || !nsm.is_file() || vsock_modules.iter().any(|m| !m.is_file()) {
        return Err(missing("the PC machine's guest kernel and its modules"));
    }
    Ok((kernel, nsm, vsock_modules))
}

fn missing(what: &str) -> String {
    format!("{what} is missing: run `cargo xtask setup` (it installs the VM harness's needs)")
}

/// Everything present already, without installing anything.
pub fn find() -> Result<Assets, String> {
    let (kernel, nsm, vsock_modules) = pc_kernel()?;
    let busybox = PathBuf::from("/bin/busybox");
    if !busybox.is_file() {
        return Err(missing("busybox (busybox-static)"));
    }
    let qemu = which("qemu-system-x86_64").ok_or_else(|| missing("qemu-system-x86_64"))?;
    let vhost = which("vhost-device-vsock").ok_or_else(|| missing("vhost-device-vsock"))?;
    Ok(Assets {
        kernel,
        nsm,
        vsock_modules,
        busybox,
        vhost,
        qemu,
        nitro: crate::nitro::find()?,
    })
}

/// apt, run at most one `update` per setup, and only for what is missing.
#[derive(Default)]
pub struct Apt {
    updated: bool,
}

const BACKPORTS_LIST: &str = "/etc/apt/sources.list.d/enclave-init-bookworm-backports.sources";
const BACKPORTS_SRC_LIST: &str =
    "/etc/apt/sources.list.d/enclave-init-bookworm-backports-src.sources";

impl Apt {
    pub fn update(&mut self) -> Result<(), String> {
        if !self.updated {
            say("apt-get update");
            run(Command::new("apt-get").args(["update", "-q"]))?;
            self.updated = true;
        }
        Ok(())
    }

    fn installed(package: &str) -> bool {
        output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
            .is_ok_and(|s| s.trim() == "install ok installed")
    }

    /// Installs the packages that are not installed yet.
    pub fn install(&mut self, packages: &[&str]) -> Result<(), String> {
        self.install_from(None, packages)
    }

    /// The same, from bookworm-backports (added to apt's sources if absent).
    pub fn install_backports(&mut self, packages: &[&str]) -> Result<(), String> {
        self.backports()?;
        self.install_from(Some("bookworm-backports"), packages)
    }

    fn install_from(&mut self, release: Option<&str>, packages: &[&str]) -> Result<(), String> {
        let missing: Vec<&str> = packages
            .iter()
            .copied()
            .filter(|p| !Self::installed(p))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        self.update()?;
        say(&format!("apt-get install {}", missing.join(" ")));
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "-q", "--no-install-recommends"]);
        if let Some(release) = release {
            cmd.args(["-t", release]);
        }
        run(cmd.args(&missing).env("DEBIAN_FRONTEND", "noninteractive"))
    }

    /// bookworm-backports in apt's sources (binary packages).
    pub fn backports(&mut self) -> Result<(), String> {
        let have = output(Command::new("apt-cache").args(["policy"]))
            .map(|p| p.contains("bookworm-backports"))
            .unwrap_or(false);
        if !have {
            say("adding bookworm-backports to apt's sources");
            self.add_source(BACKPORTS_LIST, "deb")?;
        }
        Ok(())
    }

    /// bookworm-backports' source packages too (`apt-get source`).
    pub fn backports_source(&mut self) -> Result<(), String> {
        self.backports()?;
        if !Path::new(BACKPORTS_SRC_LIST).exists() {
            say("adding bookworm-backports' sources (deb-src) to apt's sources");
            self.add_source(BACKPORTS_SRC_LIST, "deb-src")?;
        }
        Ok(())
    }

    fn add_source(&mut self, file: &str, kind: &str) -> Result<(), String> {
        let mirror = debian_mirror().unwrap_or_else(|| "http://deb.debian.org/debian".into());
        std::fs::write(
            file,
            format!("Types: {kind}\nURIs: {mirror}\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"),
        )
        .map_err(|e| format!("write {file}: {e}"))?;
        self.updated = false;
        self.update()
    }
}

/// Debian's daemons whose own unit files the tests run unchanged
/// (`tests/debian_units.rs`). Their services are kept from starting at
/// install (a `policy-rc.d` that says no, for the install only, as in a
/// container), so that no copy runs outside the tests.
pub fn install_daemons() -> Result<(), String> {
    const POLICY: &str = "/usr/sbin/policy-rc.d";
    let made = !Path::new(POLICY).exists();
    if made {
        std::fs::write(
            POLICY,
            "#!/bin/sh\n# enclave-init's setup: no service starts at install\nexit 101\n",
        )
        .and_then(|()| {
            std::fs::set_permissions(POLICY, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        })
        .map_err(|e| format!("{POLICY}: {e}"))?;
    }
    // postgresql-15 makes its cluster 15-main at install.
    let result = Apt::default().install(&["redis-server", "nginx-light", "postgresql-15"]);
    if made {
        let _ = std::fs::remove_file(POLICY);
    }
    result
}

/// Installs whatever is missing (both machines' tools), then returns the
/// assets.
pub fn setup() -> Result<Assets, String> {
    let mut apt = Apt::default();
    let packages: Vec<&str> = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("cpio", "cpio"),
        ("xz", "xz-utils"),
        ("unshare", "util-linux"),
    ]
    .iter()
    .filter(|(tool, _)| {
        which(tool).is_none() && !(*tool == "busybox" && Path::new("/bin/busybox").is_file())
    })
    .map(|(_, pkg)| *pkg)
    .collect();
    apt.install(&packages)?;
    if which("vhost-device-vsock").is_none() {
        say(&format!(
            "cargo install vhost-device-vsock {VHOST_VERSION} (about 80 s)"
        ));
        run(Command::new("cargo").args([
            "install",
            "--locked",
            "vhost-device-vsock",
            "--version",
            VHOST_VERSION,
        ]))?;
    }
    ensure_musl_target()?;
    if pc_kernel().is_err() {
        fetch_kernel(&mut apt)?;
    }
    crate::nitro::setup(&mut apt)?;
    install_daemons()?;
    find()
}

/// The Debian 6.12 cloud kernel from bookworm-backports: virtio-pci built
/// in, modules compressed with xz, and the upstream Nitro Secure Module
/// driver. The backports suite is added to apt's sources when absent.
fn fetch_kernel(apt: &mut Apt) -> Result<(), String> {
    apt.backports()?;
    apt.update()?;
    let depends = output(Command::new("apt-cache").args([
        "depends",
        "-t",
        "bookworm-backports",
        "linux-image-cloud-amd64",
    ]))?;
    let package = depends
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Depends: ")
                .filter(|p| p.starts_with("linux-image-6.12"))
        })
        .ok_or_else(|| {
            format!("no 6.12 kernel package in bookworm-backports (apt-cache said: {depends})")
        })?
        .to_string();
    let work = assets_dir().join("download");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    say(&format!("apt-get download {package}"));
    run(Command::new("apt-get")
        .args(["download", &package])
        .current_dir(&work))?;
    let deb = std::fs::read_dir(&work)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download gave no .deb")?;
    let unpacked = work.join("x");
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked))?;
    let dir = assets_dir();
    let boot = unpacked.join("boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or("no vmlinuz in the kernel package")?;
    std::fs::copy(&vmlinuz, dir.join("vmlinuz")).map_err(|e| e.to_string())?;
    let modules_root = std::fs::read_dir(unpacked.join("lib/modules"))
        .map_err(|e| e.to_string())?
        .flatten()
        .next()
        .ok_or("no modules in the kernel package")?
        .path()
        .join("kernel");
    for m in VSOCK_MODULES {
        std::fs::copy(
            modules_root.join(format!("net/vmw_vsock/{m}.ko.xz")),
            dir.join(format!("{m}.ko.xz")),
        )
        .map_err(|e| format!("{m}: {e}"))?;
    }
    // nitro-cli ships nsm.ko uncompressed: so does this image.
    let raw = Command::new("xz")
        .arg("-dc")
        .arg(modules_root.join("drivers/misc/nsm.ko.xz"))
        .output()
        .map_err(|e| format!("xz: {e}"))?;
    if !raw.status.success() {
        return Err("xz -dc nsm.ko.xz failed".into());
    }
    std::fs::write(dir.join("nsm.ko"), raw.stdout).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&work);
    say(&format!("guest kernel ready in {}", dir.display()));
    Ok(())
}

/// The Debian mirror the machine's own sources use.
fn debian_mirror() -> Option<String> {
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            if let Ok(t) = std::fs::read_to_string(e.path()) {
                texts.push(t);
            }
        }
    }
    for t in texts {
        for line in t.lines() {
            let line = line.trim();
            if let Some(uri) = line.strip_prefix("URIs:") {
                let uri = uri.trim();
                if uri.ends_with("/debian") {
                    return Some(uri.to_string());
                }
            }
            if line.starts_with("deb ") {
                if let Some(uri) = line
                    .split_whitespace()
                    .find(|w| w.starts_with("http") && w.ends_with("/debian"))
                {
                    return Some(uri.to_string());
                }
            }
        }
    }
    None
}

/// The static init built with its test-only fault points (profile
/// `faults`: release with debug assertions), for VM tests of faults.
pub fn static_fault_binary() -> Result<PathBuf, String> {
    ensure_musl_target()?;
    let root = workspace_root();
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--quiet",
                "--profile",
                "faults",
                "--target",
                MUSL,
                "-p",
                "enclave-init",
            ])
            .current_dir(&root),
    )?;
    Ok(root
        .join("target")
        .join(MUSL)
        .join("faults")
        .join("enclave-init"))
}

/// The musl target, which the static binaries need.
pub fn ensure_musl_target() -> Result<(), String> {
    let targets =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if !targets.lines().any(|t| t.trim() == MUSL) {
        say(&format!("rustup target add {MUSL}"));
        run(Command::new("rustup").args(["target", "add", MUSL]))?;
    }
    Ok(())
}

/// `cargo build --release` for the musl target with `args` in the
/// workspace; the directory its binaries land in under `target_dir`.
fn build_static(args: &[&str], target_dir: &Path) -> Result<PathBuf, String> {
    ensure_musl_target()?;
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--quiet", "--release", "--target", MUSL])
            .args(args)
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(workspace_root()),
    )?;
    Ok(target_dir.join(MUSL).join("release"))
}

/// enclave-init built as `static_binaries` does, plus the test hooks (the
/// parent channel on a Unix socket): for the benchmarks of the parent
/// channel only, in a target directory of its own.
pub fn hooked_init() -> Result<PathBuf, String> {
    let target = workspace_root().join("target/hooked");
    let dir = build_static(&["-p", "enclave-init", "--features", "test-hooks"], &target)?;
    Ok(dir.join("enclave-init"))
}

/// Builds the static, stripped binaries; returns (enclave-init, initctl).
pub fn static_binaries() -> Result<(PathBuf, PathBuf), String> {
    let target = workspace_root().join("target");
    let dir = build_static(&["-p", "enclave-init", "-p", "initctl"], &target)?;
    Ok((dir.join("enclave-init"), dir.join("initctl")))
}
