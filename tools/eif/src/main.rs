//! `eif-tool`: builds an enclave image file (EIF) and prints its PCRs, or
//! prints the PCRs of an existing one, with AWS's own
//! `aws-nitro-enclaves-image-format` crate (the code nitro-cli uses, so the
//! measurements are nitro-cli's by construction). `cargo xtask eif` lays
//! out the ramdisks and calls this.
//!
//! ```text
//! eif-tool build --kernel bzImage --cmdline TEXT --ramdisk A [--ramdisk B ...] --output app.eif [--name N]
//! eif-tool describe app.eif
//! ```
//!
//! Both print JSON on stdout, as `nitro-cli describe-eif` does: the
//! measurements (`HashAlgorithm`, `PCR0`, `PCR1`, `PCR2`). `describe`
//! fails on a file whose CRC does not match.

use std::path::PathBuf;
use std::process::ExitCode;

use aws_nitro_enclaves_image_format::defs::{EifBuildInfo, EifIdentityInfo};
use aws_nitro_enclaves_image_format::utils::eif_reader::EifReader;
use aws_nitro_enclaves_image_format::utils::EifBuilder;
use serde_json::json;
use sha2::{Digest, Sha384};

const USAGE: &str = "usage: eif-tool build --kernel FILE --cmdline TEXT --ramdisk FILE... --output FILE [--name NAME]
       eif-tool describe FILE";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("build") => build(&args[1..]),
        Some("describe") => match args.get(1) {
            Some(path) => describe(path),
            None => Err(USAGE.to_string()),
        },
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("eif-tool: {e}");
            ExitCode::FAILURE
        }
    }
}

fn build(args: &[String]) -> Result<String, String> {
    let mut kernel = None;
    let mut cmdline = None;
    let mut output = None;
    let mut name = None;
    let mut ramdisks: Vec<PathBuf> = Vec::new();
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        let mut value = || {
            iter.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--kernel" => kernel = Some(PathBuf::from(value()?)),
            "--cmdline" => cmdline = Some(value()?),
            "--ramdisk" => ramdisks.push(PathBuf::from(value()?)),
            "--output" => output = Some(PathBuf::from(value()?)),
            "--name" => name = Some(value()?),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let kernel = kernel.ok_or("--kernel is required")?;
    let cmdline = cmdline.ok_or("--cmdline is required")?;
    let output = output.ok_or("--output is required")?;
    if ramdisks.is_empty() {
        return Err("at least one --ramdisk is required".into());
    }
    // The crate panics (expect) on unreadable inputs: check them first,
    // for a message that names the file.
    for path in std::iter::once(&kernel).chain(&ramdisks) {
        std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let info = EifIdentityInfo {
        img_name: name.unwrap_or_else(|| "enclave-init".into()),
        img_version: "1.0".into(),
        build_info: EifBuildInfo {
            // Fixed, so that the same inputs give the same file.
            build_time: "1970-01-01T00:00:00Z".into(),
            build_tool: "enclave-init xtask eif".into(),
            build_tool_version: env!("CARGO_PKG_VERSION").into(),
            img_os: "Linux".into(),
            img_kernel: "Nitro enclave kernel".into(),
        },
        docker_info: json!(null),
        custom_info: json!(null),
    };
    let mut builder = EifBuilder::new(&kernel, cmdline, None, Sha384::new(), 0, info);
    for ramdisk in &ramdisks {
        builder.add_ramdisk(ramdisk);
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&output)
        .map_err(|e| format!("{}: {e}", output.display()))?;
    let measurements = builder.write_to(&mut file);
    report(measurements)
}

/// `{"Measurements": ...}` as nitro-cli prints it. The crate names the
/// hash by its hasher's `Debug`, which newer `sha2` releases spell
/// `Sha512_48 { .. }`; nitro-cli's own output says `Sha384 { ... }`.
fn report(mut measurements: std::collections::BTreeMap<String, String>) -> Result<String, String> {
    measurements.insert("HashAlgorithm".into(), "Sha384 { ... }".into());
    serde_json::to_string_pretty(&json!({ "Measurements": measurements }))
        .map_err(|e| e.to_string())
}

fn describe(path: &str) -> Result<String, String> {
    let mut reader = EifReader::from_eif(path.to_string()).map_err(|e| format!("{path}: {e}"))?;
    let measurements = reader
        .get_measurements()
        .map_err(|e| format!("{path}: {e}"))?;
    if !reader.check_crc() {
        return Err(format!(
            "{path}: the CRC does not match: the file is damaged"
        ));
    }
    report(measurements)
}
