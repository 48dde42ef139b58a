//! The Nitro Secure Module, read once at boot: its description and PCR0 to
//! PCR2, for the log and the boot report. On Nitro (and on QEMU's
//! `nitro-enclave` machine) these PCRs are the image's measurements, the
//! ones `nitro-cli describe-eif` (and `cargo xtask eif`) print.
//!
//! The messages are AWS's own types (`aws-nitro-enclaves-nsm-api`, without
//! its driver) in CBOR; the ioctl is [`sys::nsm_request`]. The crate's
//! driver does not suit PID 1: it opens a fixed path, unwraps, and turns
//! every errno into `InternalError`.

use std::os::fd::AsFd;
use std::path::Path;

use aws_nitro_enclaves_nsm_api::api::{Digest, ErrorCode, Request, Response};

use crate::proto::{Nsm, Pcr};
use crate::sys;

/// Where `nsm.ko` puts the device.
pub const DEVICE: &str = "/dev/nsm";

/// The driver's bound on an answer (`NSM_RESPONSE_MAX_SIZE`).
const RESPONSE_MAX: usize = 0x3000;

/// The PCRs of the image: 0 (the whole image), 1 (kernel and boot
/// ramdisk), 2 (the application's ramdisk).
pub const IMAGE_PCRS: [u16; 3] = [0, 1, 2];

/// Reads the NSM at `device`. The error names the device and the step.
pub fn describe(device: &Path) -> Result<Nsm, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map_err(|e| format!("{}: {e}", device.display()))?;
    let ask = |request: Request| -> Result<Response, String> {
        let bytes = serde_cbor::to_vec(&request).map_err(|e| format!("encoding: {e}"))?;
        let mut answer = vec![0u8; RESPONSE_MAX];
        let n = sys::nsm_request(file.as_fd(), &bytes, &mut answer)
            .map_err(|e| format!("{}: ioctl: {e}", device.display()))?;
        decode(answer.get(..n).unwrap_or_default())
    };
    let (module_id, digest, version) = match ask(Request::DescribeNSM)? {
        Response::DescribeNSM {
            version_major,
            version_minor,
            version_patch,
            module_id,
            digest,
            ..
        } => (
            module_id,
            digest_name(digest),
            format!("{version_major}.{version_minor}.{version_patch}"),
        ),
        other => return Err(unexpected("DescribeNSM", &other)),
    };
    let mut pcrs = Vec::new();
    for index in IMAGE_PCRS {
        match ask(Request::DescribePCR { index })? {
            Response::DescribePCR { lock, data } => pcrs.push(Pcr {
                index,
                value: hex(&data),
                locked: lock,
            }),
            other => return Err(unexpected(&format!("DescribePCR {index}"), &other)),
        }
    }
    Ok(Nsm {
        module_id,
        digest,
        version,
        pcrs,
    })
}

/// An answer's CBOR; an NSM error is an error here.
pub fn decode(bytes: &[u8]) -> Result<Response, String> {
    match serde_cbor::from_slice::<Response>(bytes) {
        Ok(Response::Error(code)) => Err(format!("the NSM answered {}", error_name(code))),
        Ok(response) => Ok(response),
        Err(e) => Err(format!("unreadable answer ({} bytes): {e}", bytes.len())),
    }
}

fn unexpected(asked: &str, got: &Response) -> String {
    let kind = match got {
        Response::DescribePCR { .. } => "DescribePCR",
        Response::ExtendPCR { .. } => "ExtendPCR",
        Response::LockPCR => "LockPCR",
        Response::LockPCRs => "LockPCRs",
        Response::DescribeNSM { .. } => "DescribeNSM",
        Response::Attestation { .. } => "Attestation",
        Response::GetRandom { .. } => "GetRandom",
        Response::Error(_) => "Error",
        _ => "an unknown answer",
    };
    format!("the NSM answered {kind} to {asked}")
}

fn digest_name(digest: Digest) -> String {
    match digest {
        Digest::SHA256 => "SHA256",
        Digest::SHA384 => "SHA384",
        Digest::SHA512 => "SHA512",
    }
    .into()
}

fn error_name(code: ErrorCode) -> String {
    format!("{code:?}")
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The boot log's line: the module, its digest and the PCRs in full.
pub fn line(nsm: &Nsm) -> String {
    let pcrs: Vec<String> = nsm
        .pcrs
        .iter()
        .map(|p| format!("PCR{} {}", p.index, p.value))
        .collect();
    format!(
        "nsm: module {} (NSM {}), digest {}, {}",
        nsm.module_id,
        nsm.version,
        nsm.digest,
        pcrs.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbor(response: &Response) -> Vec<u8> {
        serde_cbor::to_vec(response).unwrap()
    }

    #[test]
    fn answers_decode_with_awss_types() {
        let answer = cbor(&Response::DescribePCR {
            lock: true,
            data: vec![0xab; 48],
        });
        match decode(&answer).unwrap() {
            Response::DescribePCR { lock, data } => {
                assert!(lock);
                assert_eq!(hex(&data), "ab".repeat(48));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nsm_errors_and_garbage_are_errors_that_say_so() {
        let err = decode(&cbor(&Response::Error(ErrorCode::InvalidIndex))).unwrap_err();
        assert_eq!(err, "the NSM answered InvalidIndex");
        let err = decode(b"\xff\x00garbage").unwrap_err();
        assert!(err.starts_with("unreadable answer (9 bytes)"), "{err}");
        assert!(decode(b"").is_err());
    }

    #[test]
    fn a_missing_device_is_named() {
        let err = describe(Path::new("/nonexistent/nsm")).unwrap_err();
        assert_eq!(
            err,
            "/nonexistent/nsm: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn a_device_that_is_not_the_nsm_is_named_with_its_errno() {
        let err = describe(Path::new("/dev/null")).unwrap_err();
        assert!(err.starts_with("/dev/null: ioctl: "), "{err}");
    }

    #[test]
    fn the_log_line_has_every_pcr_in_full() {
        let nsm = Nsm {
            module_id: "i-0123-enc0123".into(),
            digest: "SHA384".into(),
            version: "1.0.0".into(),
            pcrs: IMAGE_PCRS
                .iter()
                .map(|&index| Pcr {
                    index,
                    value: format!("{index}").repeat(96),
                    locked: true,
                })
                .collect(),
        };
        let line = line(&nsm);
        assert!(line.starts_with("nsm: module i-0123-enc0123 (NSM 1.0.0), digest SHA384, PCR0 000"));
        assert!(line.ends_with(&format!("PCR2 {}", "2".repeat(96))));
    }
}
