//! Enclave image files (EIF), as `nitro-cli build-enclave` makes them: the
//! kernel, Nitro's command line, and two ramdisks (bootstrap, customer),
//! measured into PCR0..2 by AWS's own `aws-nitro-enclaves-image-format`
//! crate (through `tools/eif`, `eif-tool`): the PCRs are nitro-cli's by
//! construction.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::image::Image;

/// What goes around the ramdisks: the kernel, its command line, the
/// `nsm.ko` of that kernel.
#[derive(Debug, Clone)]
pub struct Blobs {
    pub kernel: PathBuf,
    pub cmdline: String,
    pub nsm: PathBuf,
}

impl Blobs {
    /// The nitro machine's kernel (built by `cargo xtask setup`) with
    /// Nitro's command line.
    pub fn built(assets: &crate::nitro::NitroAssets) -> Self {
        Self {
            kernel: assets.bzimage.clone(),
            cmdline: crate::nitro::CMDLINE.trim().to_string(),
            nsm: assets.nsm.clone(),
        }
    }

    /// nitro-cli's blobs directory (`/usr/share/nitro_enclaves/blobs`):
    /// `bzImage`, `cmdline`, `nsm.ko`.
    pub fn from_dir(dir: &Path) -> Result<Self, String> {
        let cmdline_path = dir.join("cmdline");
        let cmdline = std::fs::read_to_string(&cmdline_path)
            .map_err(|e| format!("{}: {e}", cmdline_path.display()))?;
        let blobs = Self {
            kernel: dir.join("bzImage"),
            cmdline: cmdline.trim().to_string(),
            nsm: dir.join("nsm.ko"),
        };
        for file in [&blobs.kernel, &blobs.nsm] {
            if !file.is_file() {
                return Err(format!("{}: no such file", file.display()));
            }
        }
        Ok(blobs)
    }
}

/// An image's measurements, as `nitro-cli describe-eif` prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurements {
    pub hash_algorithm: String,
    pub pcr0: String,
    pub pcr1: String,
    pub pcr2: String,
}

impl Measurements {
    fn from_json(text: &str) -> Result<Self, String> {
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("eif-tool's answer: {e}: {text}"))?;
        let m = &doc["Measurements"];
        let field = |name: &str| {
            m[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("eif-tool's answer has no {name}: {text}"))
        };
        Ok(Self {
            hash_algorithm: field("HashAlgorithm")?,
            pcr0: field("PCR0")?,
            pcr1: field("PCR1")?,
            pcr2: field("PCR2")?,
        })
    }

    /// `{"Measurements": {...}}`, nitro-cli's JSON.
    pub fn json(&self) -> String {
        let doc = serde_json::json!({
            "Measurements": {
                "HashAlgorithm": self.hash_algorithm,
                "PCR0": self.pcr0,
                "PCR1": self.pcr1,
                "PCR2": self.pcr2,
            }
        });
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    }

    /// One line per PCR.
    pub fn text(&self) -> String {
        format!(
            "PCR0: {}\nPCR1: {}\nPCR2: {}\n",
            self.pcr0, self.pcr1, self.pcr2
        )
    }

    /// PCR0, PCR1, PCR2 in order.
    pub fn pcrs(&self) -> [&str; 3] {
        [&self.pcr0, &self.pcr1, &self.pcr2]
    }
}

/// Builds `out` from `image` (its `nsm` replaced by the blobs' own) and
/// returns its measurements. The ramdisks are written to a directory of
/// their own beside `out` and removed afterwards.
pub fn build(
    eif_tool: &Path,
    blobs: &Blobs,
    image: &Image,
    out: &Path,
) -> Result<Measurements, String> {
    let name = out
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "enclave".into());
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty());
    let scratch = dir
        .unwrap_or(Path::new("."))
        .join(format!(".{name}.ramdisks-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let result = build_in(eif_tool, blobs, image, out, &name, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn build_in(
    eif_tool: &Path,
    blobs: &Blobs,
    image: &Image,
    out: &Path,
    name: &str,
    scratch: &Path,
) -> Result<Measurements, String> {
    let bootstrap = scratch.join("bootstrap.cpio");
    let customer = scratch.join("customer.cpio");
    let mut image = image.clone();
    image.nsm = Some(blobs.nsm.clone());
    image.build_ramdisks(&bootstrap, &customer)?;
    let answer = eif_tool_output(
        Command::new(eif_tool)
            .arg("build")
            .arg("--kernel")
            .arg(&blobs.kernel)
            .arg("--cmdline")
            .arg(&blobs.cmdline)
            .arg("--ramdisk")
            .arg(&bootstrap)
            .arg("--ramdisk")
            .arg(&customer)
            .arg("--name")
            .arg(name)
            .arg("--output")
            .arg(out),
    )?;
    Measurements::from_json(&answer)
}

/// The measurements of an existing EIF.
pub fn describe(eif_tool: &Path, eif: &Path) -> Result<Measurements, String> {
    let answer = eif_tool_output(Command::new(eif_tool).arg("describe").arg(eif))?;
    Measurements::from_json(&answer)
}

fn eif_tool_output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("eif-tool: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurements_read_and_print_as_nitro_cli_does() {
        let text = r#"{"Measurements":{"HashAlgorithm":"Sha384 { ... }","PCR0":"aa","PCR1":"bb","PCR2":"cc"}}"#;
        let m = Measurements::from_json(text).unwrap();
        assert_eq!(m.pcrs(), ["aa", "bb", "cc"]);
        assert_eq!(m.text(), "PCR0: aa\nPCR1: bb\nPCR2: cc\n");
        let back: serde_json::Value = serde_json::from_str(&m.json()).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        );
        assert!(Measurements::from_json(r#"{"Measurements":{}}"#)
            .unwrap_err()
            .contains("no HashAlgorithm"));
    }

    #[test]
    fn blobs_dir_needs_its_files() {
        let dir = std::env::temp_dir().join(format!("xtask-blobs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = Blobs::from_dir(&dir).unwrap_err();
        assert!(err.contains("cmdline"), "{err}");
        std::fs::write(dir.join("cmdline"), "reboot=k console=ttyS0\n").unwrap();
        let err = Blobs::from_dir(&dir).unwrap_err();
        assert!(err.contains("bzImage: no such file"), "{err}");
        std::fs::write(dir.join("bzImage"), "k").unwrap();
        std::fs::write(dir.join("nsm.ko"), "m").unwrap();
        let blobs = Blobs::from_dir(&dir).unwrap();
        assert_eq!(blobs.cmdline, "reboot=k console=ttyS0");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
