//! `enclave-init`'s command line (contract §2). Hand-written: PID 1 carries
//! no argument-parsing framework, and in boot mode the kernel hands init
//! whatever bare words its command line has (`nomodules` on Nitro), which
//! must be logged and ignored, never fatal.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
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
  -- CMD [ARG...]         with --no-boot: run CMD as tini and dumb-init do
                          (signals forwarded, its exit status, silent) and
                          exit with its status (128+N when killed by signal N)
  --single-child          with -- CMD: forward signals to CMD alone, not to
                          its whole process group
  --verbose               with -- CMD: init's own lines too (on stderr)
  -V, --version           print the version
  -h, --help              print this help
";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Args {
    pub no_boot: bool,
    pub config: Option<PathBuf>,
    pub service_dir: Option<PathBuf>,
    pub control_socket: Option<PathBuf>,
    /// `-- CMD [ARG...]`, byte for byte.
    pub command: Vec<OsString>,
    pub help: bool,
    pub version: bool,
    /// `--single-child`: signals to CMD alone (tini's way).
    pub single_child: bool,
    /// `--verbose`: init's own lines in one-command mode.
    pub verbose: bool,
    /// Bare words a kernel passed on (boot mode logs and ignores them).
    pub ignored: Vec<OsString>,
}

/// Parses the arguments after argv[0]. Every error is a usage error
/// (exit 2), whether init is PID 1 or not: only bare words, which the
/// kernel hands to init from its own command line (`nomodules` on Nitro),
/// are ignored, and only in boot mode. A word that looks like an option
/// means someone meant to steer init; guessing (falling back to boot mode,
/// which mounts, takes the console and waits for a heartbeat) is worse.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, String> {
    let mut out = Args::default();
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        let bytes = arg.as_encoded_bytes();
        let (flag, inline): (&[u8], Option<OsString>) = match bytes.iter().position(|b| *b == b'=')
        {
            Some(at) if bytes.starts_with(b"--") => {
                let (f, v) = bytes.split_at(at);
                let v = v.get(1..).unwrap_or_default();
                (f, Some(OsString::from_vec(v.to_vec())))
            }
            _ => (bytes, None),
        };
        let mut value = |name: &str| -> Result<PathBuf, String> {
            match inline.clone().or_else(|| iter.next()) {
                Some(v) if !v.is_empty() => Ok(PathBuf::from(v)),
                _ => Err(format!("{name} needs a value")),
            }
        };
        match flag {
            b"--no-boot" if inline.is_none() => out.no_boot = true,
            b"--config" => out.config = Some(value("--config")?),
            b"--service-dir" => out.service_dir = Some(value("--service-dir")?),
            b"--control-socket" => out.control_socket = Some(value("--control-socket")?),
            b"--help" | b"-h" if inline.is_none() => out.help = true,
            b"--single-child" if inline.is_none() => out.single_child = true,
            b"--verbose" if inline.is_none() => out.verbose = true,
            b"--version" | b"-V" if inline.is_none() => out.version = true,
            b"--" if inline.is_none() => {
                out.command = iter.by_ref().collect();
                if out.command.is_empty() {
                    return Err("-- needs a command after it".into());
                }
                break;
            }
            other if other.starts_with(b"-") => {
                return Err(format!("unknown option {:?}", arg.to_string_lossy()));
            }
            _ => out.ignored.push(arg.clone()),
        }
    }
    if out.no_boot {
        if let Some(first) = out.ignored.first() {
            return Err(format!("unknown argument {:?}", first.to_string_lossy()));
        }
    } else if !out.command.is_empty() {
        return Err("-- CMD needs --no-boot (in boot mode the command comes from /cmd)".into());
    }
    if out.command.is_empty() {
        for (set, flag) in [
            (out.single_child, "--single-child"),
            (out.verbose, "--verbose"),
        ] {
            if set {
                return Err(format!("{flag} needs --no-boot -- CMD"));
            }
        }
    }
    Ok(out)
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
    fn boot_mode_ignores_kernel_words_only() {
        let a = p(&["nomodules", "quiet"]).unwrap();
        assert!(!a.no_boot);
        assert_eq!(a.ignored, ["nomodules", "quiet"]);
        assert_eq!(p(&[]).unwrap(), Args::default());
        // Anything that looks like an option is meant for init: an error,
        // as PID 1 too (before, a typo fell back to boot mode).
        assert_eq!(
            p(&["nomodules", "--weird"]).unwrap_err(),
            "unknown option \"--weird\""
        );
        assert_eq!(
            p(&["--no-boot", "--servce-dir", "x", "--", "app"]).unwrap_err(),
            "unknown option \"--servce-dir\""
        );
        assert_eq!(p(&["-x"]).unwrap_err(), "unknown option \"-x\"");
        assert_eq!(
            p(&["--no-boot=1"]).unwrap_err(),
            "unknown option \"--no-boot=1\""
        );
    }

    #[test]
    fn arguments_pass_through_byte_for_byte() {
        let cmd = [
            OsString::from("--no-boot"),
            OsString::from("--service-dir"),
            OsString::from_vec(b"/srv/caf\xe9".to_vec()),
            OsString::from("--"),
            OsString::from("echo"),
            OsString::from_vec(b"na\xefve".to_vec()),
        ];
        let a = parse(cmd).unwrap();
        assert_eq!(
            a.service_dir,
            Some(PathBuf::from(OsString::from_vec(b"/srv/caf\xe9".to_vec())))
        );
        assert_eq!(
            a.command,
            [
                OsString::from("echo"),
                OsString::from_vec(b"na\xefve".to_vec())
            ]
        );
    }

    #[test]
    fn usage_errors() {
        assert_eq!(
            p(&["--no-boot", "--bogus"]).unwrap_err(),
            "unknown option \"--bogus\""
        );
        assert_eq!(
            p(&["--no-boot", "bare"]).unwrap_err(),
            "unknown argument \"bare\""
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
        assert_eq!(
            p(&["--no-boot", "--single-child"]).unwrap_err(),
            "--single-child needs --no-boot -- CMD"
        );
        assert_eq!(
            p(&["--no-boot", "--verbose"]).unwrap_err(),
            "--verbose needs --no-boot -- CMD"
        );
    }

    #[test]
    fn one_command_switches() {
        let a = p(&["--no-boot", "--single-child", "--verbose", "--", "sh"]).unwrap();
        assert!(a.single_child && a.verbose);
        let a = p(&["--no-boot", "--", "sh", "--single-child"]).unwrap();
        assert!(!a.single_child, "after -- every word is the command's");
        assert_eq!(a.command, ["sh", "--single-child"]);
    }
}
