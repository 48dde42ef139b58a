//! The machine closest to Nitro outside AWS: QEMU's `nitro-enclave`
//! machine (QEMU 10 built from Debian's source with libcbor and gnutls,
//! which Debian's own packages lack), the enclave kernel built from
//! Debian's `linux-source-6.12` with AWS's configuration (`nitro/`), and
//! `eif-tool` (`tools/eif`, AWS's image-format crate) to build EIFs.
//!
//! Everything is built once and cached under `target/vm-assets/nitro/`,
//! each result beside a stamp naming its inputs: a second run costs
//! nothing, a changed input (the kernel configuration, QEMU's version)
//! rebuilds only what it feeds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::assets::{self, run, which};

/// QEMU's version, from Debian's bookworm-backports source.
pub const QEMU_VERSION: &str = "10.0.2";
/// The kernel source package (bookworm-backports).
pub const KERNEL_SOURCE: &str = "linux-source-6.12";

/// AWS's enclave kernel configuration and command line (`nitro/README.md`).
pub const KERNEL_CONFIG: &str = include_str!("../nitro/microvm-kernel-config-x86_64");
pub const CMDLINE: &str = include_str!("../nitro/x86_64.cmdline");

/// QEMU 10 needs meson 1.5 or later; its +ds tarball lacks the bundled
/// wheel, so PyPI's, pinned.
const MESON: &str = "meson==1.5.0";

/// Debian's firmware for QEMU (`qemu-system-data`: qboot, linuxboot_dma).
pub const FIRMWARE: &str = "/usr/share/qemu";

const QEMU_BUILD_DEPS: &[&str] = &[
    "build-essential",
    "pkg-config",
    "libcbor-dev",
    "libgnutls28-dev",
    "libglib2.0-dev",
    "libfdt-dev",
    "libpixman-1-dev",
    "ninja-build",
    "flex",
    "bison",
    "python3-venv",
    "xz-utils",
    "qemu-system-data",
];

const KERNEL_BUILD_DEPS: &[&str] = &[
    "build-essential",
    "bc",
    "bison",
    "flex",
    "libelf-dev",
    "libssl-dev",
    "xz-utils",
    "kmod",
    "cpio",
];

/// `eif-tool` needs openssl's headers (AWS's crate links it).
const EIF_TOOL_DEPS: &[&str] = &["pkg-config", "libssl-dev"];

#[derive(Debug, Clone)]
pub struct NitroAssets {
    pub qemu: PathBuf,
    pub bzimage: PathBuf,
    /// The kernel's `nsm.ko` (plain, as nitro-cli ships it).
    pub nsm: PathBuf,
    pub eif_tool: PathBuf,
    pub vhost: PathBuf,
    pub busybox: PathBuf,
}

pub fn dir() -> PathBuf {
    assets::assets_dir().join("nitro")
}

fn say(message: &str) {
    eprintln!("xtask: {message}");
}

// File operations whose errors name the file.
fn mkdir(path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn list(dir: &Path) -> Result<Vec<PathBuf>, String> {
    Ok(std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .collect())
}

/// A 64-bit FNV-1a of the inputs: the stamp of a cached build.
fn fingerprint(parts: &[&str]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

fn stamp_matches(stamp: &Path, want: &str) -> bool {
    std::fs::read_to_string(stamp).is_ok_and(|s| s.trim() == want)
}

fn qemu_stamp() -> String {
    fingerprint(&[
        QEMU_VERSION,
        "x86_64-softmmu libcbor gnutls vhost-user fdt tcg",
    ])
}

/// The cached QEMU is the one the stamp names, and it runs here.
fn qemu_ready(qemu: &Path) -> bool {
    qemu.is_file()
        && stamp_matches(&dir().join("qemu.stamp"), &qemu_stamp())
        && Command::new(qemu)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
}

fn kernel_stamp() -> String {
    fingerprint(&[KERNEL_SOURCE, KERNEL_CONFIG, "CONFIG_NSM=m"])
}

fn eif_tool_path() -> PathBuf {
    assets::workspace_root().join("target/eif-tool/release/eif-tool")
}

/// Everything present already, without building anything.
pub fn find() -> Result<NitroAssets, String> {
    let dir = dir();
    let missing = |what: &str| {
        format!("{what} is missing: run `cargo xtask setup` (it builds the nitro machine's tools, cached under target/vm-assets/nitro)")
    };
    let qemu = dir.join("qemu-system-x86_64");
    if !qemu_ready(&qemu) {
        return Err(missing(&format!(
            "QEMU {QEMU_VERSION} with -M nitro-enclave"
        )));
    }
    let bzimage = dir.join("bzImage");
    let nsm = dir.join("nsm.ko");
    if !bzimage.is_file()
        || !nsm.is_file()
        || !stamp_matches(&dir.join("kernel.stamp"), &kernel_stamp())
    {
        return Err(missing("the Nitro enclave kernel"));
    }
    let eif_tool = eif_tool_path();
    if !eif_tool.is_file() {
        return Err(missing("eif-tool"));
    }
    if !Path::new(FIRMWARE).join("qboot.rom").is_file() {
        return Err(missing("QEMU's firmware (qemu-system-data)"));
    }
    let vhost = which("vhost-device-vsock").ok_or_else(|| missing("vhost-device-vsock"))?;
    let busybox = PathBuf::from("/bin/busybox");
    if !busybox.is_file() {
        return Err(missing("busybox (busybox-static)"));
    }
    Ok(NitroAssets {
        qemu,
        bzimage,
        nsm,
        eif_tool,
        vhost,
        busybox,
    })
}

/// Builds what is missing (after `assets::setup`, which brings the
/// packages both machines share), then returns the assets.
pub fn setup(apt: &mut assets::Apt) -> Result<NitroAssets, String> {
    mkdir(&dir())?;
    let qemu = dir().join("qemu-system-x86_64");
    if !qemu_ready(&qemu) {
        // A cached build (target/ restored on another machine) may only
        // lack the libraries it links: those come with the build's
        // packages.
        apt.install(QEMU_BUILD_DEPS)?;
        if !qemu_ready(&qemu) {
            build_qemu(apt)?;
        }
    }
    ensure_kernel(apt)?;
    ensure_eif_tool(apt)?;
    find()
}

/// The enclave kernel and its `nsm.ko`, built if missing or stale.
pub fn ensure_kernel(apt: &mut assets::Apt) -> Result<(PathBuf, PathBuf), String> {
    mkdir(&dir())?;
    let dir = dir();
    let (bzimage, nsm) = (dir.join("bzImage"), dir.join("nsm.ko"));
    if !(bzimage.is_file()
        && nsm.is_file()
        && stamp_matches(&dir.join("kernel.stamp"), &kernel_stamp()))
    {
        build_kernel(apt)?;
    }
    Ok((bzimage, nsm))
}

/// QEMU 10 from Debian's source, with what `-M nitro-enclave` needs.
fn build_qemu(apt: &mut assets::Apt) -> Result<(), String> {
    let started = Instant::now();
    say(&format!(
        "building QEMU {QEMU_VERSION} with the nitro-enclave machine (about 3 minutes of a 2-core machine)"
    ));
    apt.install(QEMU_BUILD_DEPS)?;
    apt.backports_source()?;
    let work = assets::assets_dir().join("build/qemu");
    let _ = std::fs::remove_dir_all(&work);
    mkdir(&work)?;
    // The .dsc and Debian's patches answer 404 on the mirror; the
    // upstream tarball, which is all this needs, comes first. So the
    // command's status says nothing: the tarball does.
    say("apt-get source --download-only qemu (bookworm-backports)");
    let _ = Command::new("apt-get")
        .args([
            "source",
            "--download-only",
            "-q",
            "-t",
            "bookworm-backports",
            "qemu",
        ])
        .current_dir(&work)
        .status();
    let tarball = work.join(format!("qemu_{QEMU_VERSION}+ds.orig.tar.xz"));
    if !tarball.is_file() {
        return Err(format!(
            "apt-get source qemu gave no {} (is bookworm-backports' qemu still {QEMU_VERSION}?)",
            tarball.display()
        ));
    }
    run(Command::new("tar")
        .arg("-xf")
        .arg(&tarball)
        .current_dir(&work))?;
    let src = work.join(format!("qemu-{QEMU_VERSION}"));
    // The +ds tarball drops the edk2 firmware images that meson would
    // unpack: nothing here needs them.
    let meson_build = src.join("meson.build");
    let text = read(&meson_build)?;
    let from = "unpack_edk2_blobs = bzip2.found()";
    if !text.contains(from) {
        return Err(format!("{}: no `{from}` to patch", meson_build.display()));
    }
    write(
        &meson_build,
        &text.replace(from, "unpack_edk2_blobs = false"),
    )?;
    // It also drops QEMU's bundled Python wheels: meson comes from PyPI.
    let venv = work.join("venv");
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(venv.join("bin/pip")).args(["install", "-q", MESON, "pycotap==1.3.1"]))?;
    let build = src.join("build");
    mkdir(&build)?;
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run(Command::new("../configure")
        .arg(format!("--python={}", venv.join("bin/python3").display()))
        .args([
            "--target-list=x86_64-softmmu",
            "--without-default-features",
            "--enable-libcbor",
            "--enable-gnutls",
            "--enable-vhost-user",
            "--enable-fdt=system",
            "--enable-tcg",
            "--disable-docs",
            "--disable-werror",
            "--disable-install-blobs",
        ])
        .env("PATH", &path)
        .current_dir(&build))?;
    run(Command::new("ninja")
        .args(["-j", &jobs(), "qemu-system-x86_64"])
        .env("PATH", &path)
        .current_dir(&build))?;
    let dir = dir();
    std::fs::copy(
        build.join("qemu-system-x86_64"),
        dir.join("qemu-system-x86_64"),
    )
    .map_err(|e| format!("copy qemu-system-x86_64: {e}"))?;
    write(&dir.join("qemu.stamp"), &qemu_stamp())?;
    let _ = std::fs::remove_dir_all(&work);
    say(&format!(
        "QEMU {QEMU_VERSION} built in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The enclave kernel: Debian's 6.12 source, AWS's configuration, and
/// the upstream NSM driver as a module (AWS's 6.6 tree patches it in).
fn build_kernel(apt: &mut assets::Apt) -> Result<(), String> {
    let started = Instant::now();
    say("building the Nitro enclave kernel (about 9 minutes of a quiet 2-core machine)");
    apt.install(KERNEL_BUILD_DEPS)?;
    apt.install_backports(&[KERNEL_SOURCE])?;
    let tarball = list(Path::new("/usr/src"))?
        .into_iter()
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(KERNEL_SOURCE) && n.ends_with(".tar.xz")
            })
        })
        .ok_or_else(|| format!("{KERNEL_SOURCE} left no /usr/src/{KERNEL_SOURCE}.tar.xz"))?;
    let work = assets::assets_dir().join("build/kernel");
    let _ = std::fs::remove_dir_all(&work);
    mkdir(&work)?;
    say(&format!("unpacking {}", tarball.display()));
    run(Command::new("tar")
        .arg("-xf")
        .arg(&tarball)
        .current_dir(&work))?;
    let src = list(&work)?
        .into_iter()
        .find(|p| p.is_dir())
        .ok_or("the kernel tarball held no directory")?;
    write(&src.join(".config"), KERNEL_CONFIG)?;
    let make = |args: &[&str]| {
        run(Command::new("make")
            .args(args)
            .current_dir(&src)
            .env("KBUILD_BUILD_USER", "enclave-init")
            .env("KBUILD_BUILD_HOST", "xtask"))
    };
    make(&["olddefconfig"])?;
    run(Command::new("scripts/config")
        .args(["--module", "CONFIG_NSM"])
        .current_dir(&src))?;
    make(&["olddefconfig"])?;
    let config = read(&src.join(".config"))?;
    if !config.lines().any(|l| l == "CONFIG_NSM=m") {
        return Err("the kernel configuration refused CONFIG_NSM=m".into());
    }
    let jobs = format!("-j{}", jobs());
    make(&[&jobs, "bzImage", "modules"])?;
    let dir = dir();
    std::fs::copy(src.join("arch/x86/boot/bzImage"), dir.join("bzImage"))
        .map_err(|e| format!("copy bzImage: {e}"))?;
    std::fs::copy(src.join("drivers/misc/nsm.ko"), dir.join("nsm.ko"))
        .map_err(|e| format!("copy nsm.ko: {e}"))?;
    write(&dir.join("kernel.stamp"), &kernel_stamp())?;
    let _ = std::fs::remove_dir_all(&work);
    say(&format!(
        "the Nitro enclave kernel built in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// `tools/eif` (a workspace of its own: AWS's crate brings openssl and the
/// KMS SDK). Cargo's own cache makes a second build a no-op.
pub fn ensure_eif_tool(apt: &mut assets::Apt) -> Result<PathBuf, String> {
    if !eif_tool_path().is_file() {
        say("building eif-tool (AWS's aws-nitro-enclaves-image-format; about 4 minutes the first time)");
        apt.install(EIF_TOOL_DEPS)?;
    }
    let root = assets::workspace_root();
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--quiet",
                "--release",
                "--locked",
                "--manifest-path",
            ])
            .arg(root.join("tools/eif/Cargo.toml"))
            .arg("--target-dir")
            .arg(root.join("target/eif-tool"))
            .current_dir(&root),
    )?;
    Ok(eif_tool_path())
}

fn jobs() -> String {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .to_string()
}
