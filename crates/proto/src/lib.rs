//! The `initctl` protocol: JSON lines over the control socket. Every type
//! on the wire lives here, in a crate of its own that both binaries use
//! (`initctl` does not link init). A request is one
//! line of at most [`MAX_REQUEST`] bytes; each reply is one line, except
//! `logs`, which streams one `line` reply per log line (as the client reads
//! them, so that a ring of any size is served in bounded memory), then
//! `end`; with `follow`, the lines go on until the client leaves.
//!
//! Versioned: a request names the version it speaks; init answers an
//! unknown version with an error naming the one it speaks.

use serde::{Deserialize, Serialize};

pub mod parent;

/// 2: `logs` streams `line` replies and `end` (1 had one `logs` reply).
pub const VERSION: u32 = 2;
pub const MAX_REQUEST: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    #[serde(flatten)]
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Command {
    List,
    Status {
        name: String,
    },
    Start {
        name: String,
    },
    Stop {
        name: String,
    },
    Restart {
        name: String,
    },
    Logs {
        name: String,
        #[serde(default)]
        lines: Option<usize>,
        #[serde(default)]
        follow: bool,
    },
    /// Without a name: re-read the service files. With one: run that
    /// service's `ExecReload`.
    Reload {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// A signal (a name such as `SIGHUP`, or a number) to a service's main
    /// process, or to all of its processes.
    Kill {
        name: String,
        signal: String,
        #[serde(default)]
        all: bool,
    },
    Poweroff,
    Reboot,
    /// The boot report: how init came up (NSM, entropy, heartbeat).
    Boot,
}

impl Command {
    /// The command's name on the wire (`list`, `start`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Command::List => "list",
            Command::Status { .. } => "status",
            Command::Start { .. } => "start",
            Command::Stop { .. } => "stop",
            Command::Restart { .. } => "restart",
            Command::Logs { .. } => "logs",
            Command::Reload { .. } => "reload",
            Command::Kill { .. } => "kill",
            Command::Poweroff => "poweroff",
            Command::Reboot => "reboot",
            Command::Boot => "boot",
        }
    }

    /// Commands that change something: only for root or init's own user.
    pub fn changes_state(&self) -> bool {
        match self {
            Command::List | Command::Status { .. } | Command::Logs { .. } | Command::Boot => false,
            Command::Start { .. }
            | Command::Stop { .. }
            | Command::Restart { .. }
            | Command::Reload { .. }
            | Command::Kill { .. }
            | Command::Poweroff
            | Command::Reboot => true,
        }
    }
}

/// How a process ended: `{"code": N}` or `{"signal": N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LastExit {
    Code(i32),
    Signal(i32),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub name: String,
    /// running, starting, stopping, waiting, exited, failed, stopped
    pub state: String,
    pub pid: Option<i32>,
    pub restarts: u32,
    pub last_exit: Option<LastExit>,
    /// Unix time (seconds) of the last state change.
    pub since: f64,
    #[serde(rename = "type")]
    pub service_type: String,
    /// Why it failed, when `failed`.
    pub result: Option<String>,
    /// What a queued start waits for.
    pub waiting_for: Option<String>,
    /// `STATUS=` of a notify service.
    pub status_text: Option<String>,
    pub command: Vec<String>,
    pub requires: Vec<String>,
    pub wants: Vec<String>,
    pub after: Vec<String>,
    /// The newest log lines (`status` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<LogEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Unix time in seconds.
    pub time: f64,
    pub pid: i32,
    pub text: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub errors: Vec<String>,
}

/// How init came up: the answer to `boot`. In `--no-boot` mode only
/// `version`, `mode` and `entropy` (not gated) say anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootReport {
    /// enclave-init's version.
    pub version: String,
    /// `boot` (PID 1 of an enclave) or `no-boot`.
    pub mode: String,
    /// Milliseconds from init's start to the end of the boot steps.
    pub boot_ms: Option<u64>,
    /// The heartbeat's outcome (`answered by 3:9000 (attempt 1)`, or the
    /// error), absent when disabled or in `--no-boot` mode.
    pub heartbeat: Option<String>,
    /// The Nitro Secure Module as init read it at boot.
    pub nsm: Option<Nsm>,
    /// Why the NSM could not be read (no `/dev/nsm`: not an enclave).
    pub nsm_error: Option<String>,
    pub entropy: Entropy,
}

/// The NSM's description and its first PCRs, read over `/dev/nsm`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nsm {
    pub module_id: String,
    /// `SHA384`, as the NSM names it.
    pub digest: String,
    /// `major.minor.patch` of the NSM.
    pub version: String,
    /// PCR0, PCR1, PCR2 (the image, the kernel and boot ramdisk, the
    /// application), as `nitro-cli describe-eif` prints them.
    pub pcrs: Vec<Pcr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pcr {
    pub index: u16,
    /// Lowercase hex.
    pub value: String,
    pub locked: bool,
}

/// The entropy gate: services start once the kernel's random pool is
/// initialized, or after `boot.entropy` with an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entropy {
    /// `not-gated` (`--no-boot`), `waiting`, `ready`, `timed-out`, or
    /// `unknown` (`/dev/random` could not be watched: services started
    /// without waiting).
    pub state: String,
    /// The kernel's hardware RNG (`rng_current`, e.g. `nsm-hwrng`), or
    /// `none`.
    pub rng: Option<String>,
    /// How long the services waited for it, in milliseconds.
    pub waited_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Response {
    Error {
        message: String,
    },
    Done {
        message: String,
    },
    List {
        services: Vec<ServiceInfo>,
    },
    Status {
        service: ServiceInfo,
    },
    /// One log line of a `logs` answer.
    Line {
        line: LogEntry,
    },
    /// The end of a `logs` answer (without `follow`).
    End,
    Reload {
        report: ReloadReport,
    },
    Boot {
        report: BootReport,
    },
    /// One item of the parent channel's `events` and `wait` streams.
    Event {
        event: parent::Event,
    },
}

/// Parses one request line. Never panics; the error says what is wrong.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let value = versioned_json(line, MAX_REQUEST, VERSION, "init")?;
    serde_json::from_value(value).map_err(|e| format!("invalid request: {e}"))
}

/// One request line of at most `max` bytes, as JSON whose `version` is
/// `version` (what `speaker` speaks, for the error); the checks both
/// protocols make before they read a command.
fn versioned_json(
    line: &[u8],
    max: usize,
    version: u32,
    speaker: &str,
) -> Result<serde_json::Value, String> {
    if line.len() > max {
        return Err(format!("request longer than {max} bytes"));
    }
    let text = std::str::from_utf8(line).map_err(|_| "request is not UTF-8".to_string())?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("request is not JSON: {e}"))?;
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(version) => Ok(value),
        Some(v) => Err(format!(
            "protocol version {v} is not supported; {speaker} speaks version {version}"
        )),
        None => Err("request has no protocol version".into()),
    }
}

pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(message).unwrap_or_else(|e| {
        format!("{{\"reply\":\"error\",\"message\":\"cannot encode reply: {e}\"}}").into_bytes()
    });
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let cases = [
            Command::List,
            Command::Status { name: "web".into() },
            Command::Start { name: "web".into() },
            Command::Stop { name: "web".into() },
            Command::Restart { name: "web".into() },
            Command::Logs {
                name: "web".into(),
                lines: Some(5),
                follow: true,
            },
            Command::Reload { name: None },
            Command::Reload {
                name: Some("web".into()),
            },
            Command::Kill {
                name: "web".into(),
                signal: "SIGHUP".into(),
                all: true,
            },
            Command::Poweroff,
            Command::Reboot,
            Command::Boot,
        ];
        for command in cases {
            let request = Request {
                version: VERSION,
                command,
            };
            let line = encode(&request);
            assert_eq!(line.last(), Some(&b'\n'));
            let parsed = parse_request(line.strip_suffix(b"\n").unwrap()).unwrap();
            assert_eq!(parsed, request);
        }
        // What an older initctl sends still means what it meant.
        let old = parse_request(br#"{"version":2,"command":"reload"}"#).unwrap();
        assert_eq!(old.command, Command::Reload { name: None });
        let minimal = parse_request(br#"{"version":2,"command":"logs","name":"x"}"#).unwrap();
        assert_eq!(
            minimal.command,
            Command::Logs {
                name: "x".into(),
                lines: None,
                follow: false
            }
        );
    }

    #[test]
    fn bad_requests_are_errors_not_panics() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "request is not JSON"),
            (b"garbage", "request is not JSON"),
            (b"\xff\xfe", "request is not UTF-8"),
            (b"[]", "request has no protocol version"),
            (b"{\"command\":\"list\"}", "request has no protocol version"),
            (
                b"{\"version\":1,\"command\":\"list\"}",
                "protocol version 1 is not supported; init speaks version 2",
            ),
            (b"{\"version\":2}", "invalid request"),
            (
                b"{\"version\":2,\"command\":\"format-disk\"}",
                "invalid request",
            ),
            (b"{\"version\":2,\"command\":\"start\"}", "invalid request"),
            (
                b"{\"version\":2,\"command\":\"start\",\"name\":5}",
                "invalid request",
            ),
            (
                b"{\"version\":2,\"command\":\"logs\",\"name\":\"x\",\"lines\":-1}",
                "invalid request",
            ),
            (
                b"{\"version\":1.5,\"command\":\"list\"}",
                "request has no protocol version",
            ),
            (
                b"{\"version\":2,\"command\":\"list\"",
                "request is not JSON",
            ),
        ];
        for (line, want) in cases {
            let err = parse_request(line).unwrap_err();
            assert!(
                err.starts_with(want),
                "{:?}: {err}",
                String::from_utf8_lossy(line)
            );
        }
        let huge = vec![b' '; MAX_REQUEST + 1];
        assert_eq!(
            parse_request(&huge).unwrap_err(),
            format!("request longer than {MAX_REQUEST} bytes")
        );
        // Deep nesting must not overflow the stack.
        let deep = format!("{}{}", "[".repeat(2000), "]".repeat(2000));
        assert!(parse_request(deep.as_bytes()).is_err());
    }

    #[test]
    fn every_command_has_its_wire_name() {
        for (command, name) in [
            (Command::List, "list"),
            (Command::Reload { name: None }, "reload"),
            (Command::Stop { name: "x".into() }, "stop"),
        ] {
            let line = String::from_utf8(encode(&Request {
                version: VERSION,
                command: command.clone(),
            }))
            .unwrap();
            assert!(line.contains(&format!("\"command\":\"{name}\"")), "{line}");
            assert_eq!(command.name(), name);
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let r = parse_request(br#"{"version":2,"command":"list","from_the_future":true}"#).unwrap();
        assert_eq!(r.command, Command::List);
    }

    #[test]
    fn last_exit_shape() {
        assert_eq!(
            serde_json::to_string(&LastExit::Code(3)).unwrap(),
            r#"{"code":3}"#
        );
        assert_eq!(
            serde_json::to_string(&LastExit::Signal(9)).unwrap(),
            r#"{"signal":9}"#
        );
    }
}
