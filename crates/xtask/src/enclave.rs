//! An image booted on a machine: what `cargo xtask vm`, `demo`, the
//! benchmarks and the end-to-end tests share.

use std::path::{Path, PathBuf};

use crate::assets::Assets;
use crate::eif::{self, Blobs, Measurements};
use crate::image::{self, Image};
use crate::vm::{self, Machine, Options, Outcome};

/// Which machine boots the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// QEMU's nitro-enclave machine, an EIF (the default everywhere).
    Nitro,
    /// A standard PC with Debian's kernel (see `vm.rs` for what only it
    /// has).
    Pc,
}

impl Kind {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "nitro" => Ok(Kind::Nitro),
            "pc" => Ok(Kind::Pc),
            other => Err(format!("unknown machine {other:?}: nitro or pc")),
        }
    }
}

/// The Nitro layout with enclave-init as `/init`, the machine's `nsm.ko`,
/// busybox and initctl; on the PC, the vsock modules too.
pub fn base_image(assets: &Assets, kind: Kind, init: &Path, initctl: &Path) -> Image {
    let (nsm, vm_modules) = match kind {
        Kind::Nitro => (assets.nitro.nsm.clone(), Vec::new()),
        Kind::Pc => (assets.nsm.clone(), assets.vsock_modules.clone()),
    };
    Image {
        init: init.to_path_buf(),
        initctl: Some(initctl.to_path_buf()),
        nsm: Some(nsm),
        vm_modules,
        busybox: Some(assets.busybox.clone()),
        ..Image::default()
    }
}

/// The image's config adapted to the harness (heartbeat to CID 2; on the
/// PC, the vsock modules first). `own` is the image's config, if any.
pub fn harness_config(image: &Image, own: Option<&str>) -> Result<String, String> {
    image::vm_config(own, &image.vm_modules)
}

/// What a boot gave.
pub struct Booted {
    pub outcome: Outcome,
    /// The EIF's PCRs (the nitro machine).
    pub measurements: Option<Measurements>,
    /// The EIF or the initramfs booted.
    pub image: PathBuf,
}

/// Builds `image` for `kind` in `work` and boots it.
pub fn boot(
    assets: &Assets,
    kind: Kind,
    image: &Image,
    work: &Path,
    opts: &Options,
) -> Result<Booted, String> {
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    match kind {
        Kind::Nitro => {
            let eif = work.join("app.eif");
            let mut blobs = Blobs::built(&assets.nitro);
            // Words for the command line go into the image (and its PCRs),
            // as on Nitro.
            if !opts.append.trim().is_empty() {
                blobs.cmdline = format!("{} {}", blobs.cmdline, opts.append.trim());
            }
            let measurements = eif::build(&assets.nitro.eif_tool, &blobs, image, &eif)?;
            let machine = Machine::Nitro {
                qemu: assets.nitro.qemu.clone(),
                eif: eif.clone(),
            };
            let outcome = vm::boot(&machine, &assets.nitro.vhost, work, opts)?;
            Ok(Booted {
                outcome,
                measurements: Some(measurements),
                image: eif,
            })
        }
        Kind::Pc => {
            let initramfs = work.join("initramfs.cpio");
            image.build(&initramfs)?;
            let machine = Machine::Pc {
                qemu: assets.qemu.clone(),
                kernel: assets.kernel.clone(),
                initramfs: initramfs.clone(),
            };
            let outcome = vm::boot(&machine, &assets.vhost, work, opts)?;
            Ok(Booted {
                outcome,
                measurements: None,
                image: initramfs,
            })
        }
    }
}

/// Boots an existing EIF on the nitro machine.
pub fn boot_eif(
    assets: &Assets,
    eif: &Path,
    work: &Path,
    opts: &Options,
) -> Result<Booted, String> {
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let measurements = eif::describe(&assets.nitro.eif_tool, eif)?;
    let machine = Machine::Nitro {
        qemu: assets.nitro.qemu.clone(),
        eif: eif.to_path_buf(),
    };
    let outcome = vm::boot(&machine, &assets.nitro.vhost, work, opts)?;
    Ok(Booted {
        outcome,
        measurements: Some(measurements),
        image: eif.to_path_buf(),
    })
}

/// The PCRs init read from the NSM and logged (`nsm: ... PCR0 X, PCR1 Y,
/// PCR2 Z`), in order.
pub fn logged_pcrs(outcome: &Outcome) -> Option<[String; 3]> {
    let line = outcome.lines().find(|l| l.contains("nsm: module "))?;
    let value = |n: usize| {
        let at = line.find(&format!("PCR{n} "))? + 5;
        Some(
            line.get(at..)?
                .chars()
                .take_while(char::is_ascii_hexdigit)
                .collect::<String>(),
        )
    };
    Some([value(0)?, value(1)?, value(2)?])
}
