//! `enclave-init`'s command line (contract §2). Hand-written: PID 1 carries
//! no argument-parsing framework, and in boot mode the kernel hands init
//! whatever bare words its command line has (`nomodules` on Nitro), which
//! must be logged and ignored, never fatal.

use std::ffi::OsString;
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: enclave-init [OPTIONS] [-- CMD [ARG...]]

PID 1 for AWS Nitro Enclaves: performs the enclave boot (mounts, kernel
modules, the vsock heartbeat, /env and /cmd, the switch to /rootfs), then
supervises the services of /service.

options:
  --no-boot               skip the boot steps; only supervise (containers, tests)
  --config PATH           config file (env ENCLAVE_INIT_CONFIG; default /etc/enclave-init.toml)
  --service-dir DIR       service directory (overrides the config file)
  --control-socket PATH   initctl socket (overrides the config file)
  -- CMD [ARG...]         with --no-boot: run CMD as service `main` and exit
                          with its status (128+N when killed by signal N)
  --version               print the version
  --help                  print this help
";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Args {
    pub no_boot: bool,
    pub config: Option<PathBuf>,
    pub service_dir: Option<PathBuf>,
    pub control_socket: Option<PathBuf>,
    pub command: Vec<String>,
    pub help: bool,
    pub version: bool,
    /// Words that are not ours (boot mode logs them).
    pub ignored: Vec<String>,
}

/// Parses the arguments after argv[0]. Errors are usage errors; the caller
/// decides whether they are fatal (only outside boot mode).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, String> {
    let mut out = Args::default();
    let mut errors = Vec::new();
    let mut iter = args.into_iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = iter.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Option<String> {
            let v = inline.clone().or_else(|| iter.next());
            if v.as_deref().is_none_or(str::is_empty) {
                errors.push(format!("{name} needs a value"));
                return None;
            }
            v
        };
        match flag.as_str() {
            "--no-boot" => out.no_boot = true,
            "--config" => out.config = value("--config").map(PathBuf::from),
            "--service-dir" => out.service_dir = value("--service-dir").map(PathBuf::from),
            "--control-socket" => out.control_socket = value("--control-socket").map(PathBuf::from),
            "--help" | "-h" => out.help = true,
            "--version" | "-V" => out.version = true,
            "--" => {
                out.command = iter.by_ref().collect();
                if out.command.is_empty() {
                    errors.push("-- needs a command after it".into());
                }
                break;
            }
            _ => out.ignored.push(arg),
        }
    }
    if out.no_boot {
        if let Some(first) = out.ignored.first() {
            errors.push(format!("unknown argument {first:?}"));
        }
    } else if !out.command.is_empty() {
        errors.push("-- CMD needs --no-boot (in boot mode the command comes from /cmd)".into());
    }
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Args, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn flags() {
        let a = p(&[
            "--no-boot",
            "--config",
            "/c.toml",
            "--service-dir=/s",
            "--control-socket",
            "/x.sock",
        ])
        .unwrap();
        assert!(a.no_boot);
        assert_eq!(a.config, Some(PathBuf::from("/c.toml")));
        assert_eq!(a.service_dir, Some(PathBuf::from("/s")));
        assert_eq!(a.control_socket, Some(PathBuf::from("/x.sock")));
        let a = p(&["--no-boot", "--", "sh", "-c", "exit 7", "--config"]).unwrap();
        assert_eq!(a.command, ["sh", "-c", "exit 7", "--config"]);
        assert!(p(&["--version"]).unwrap().version);
        assert!(p(&["--help"]).unwrap().help);
    }

    #[test]
    fn boot_mode_ignores_kernel_words() {
        let a = p(&["nomodules", "quiet", "--weird"]).unwrap();
        assert!(!a.no_boot);
        assert_eq!(a.ignored, ["nomodules", "quiet", "--weird"]);
        assert_eq!(p(&[]).unwrap(), Args::default());
    }

    #[test]
    fn usage_errors() {
        assert_eq!(
            p(&["--no-boot", "--bogus"]).unwrap_err(),
            "unknown argument \"--bogus\""
        );
        assert_eq!(
            p(&["--no-boot", "--config"]).unwrap_err(),
            "--config needs a value"
        );
        assert_eq!(
            p(&["--no-boot", "--config="]).unwrap_err(),
            "--config needs a value"
        );
        assert_eq!(
            p(&["--no-boot", "--"]).unwrap_err(),
            "-- needs a command after it"
        );
        assert_eq!(
            p(&["--", "sh"]).unwrap_err(),
            "-- CMD needs --no-boot (in boot mode the command comes from /cmd)"
        );
    }
}
