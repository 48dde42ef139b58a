//! The parent channel: what the parent instance may ask an enclave over
//! vsock, and what it hears. JSON lines like the control socket, with a
//! version of their own, and a closed set of requests: everything the
//! parent may ever do is here, and reading is all of it but `poweroff`
//! (which the image's configuration must allow). A request naming any
//! other command (`start`, `stop`, `reload`, ...) does not parse: it is
//! refused, whatever its fields.
//!
//! Replies reuse [`Response`](crate::Response) (`list`, `status`, `line`,
//! `end`, `error`, `done`) and add [`Response::Event`](crate::Response)
//! for the `events` and `wait` streams.

use serde::{Deserialize, Serialize};

use crate::{BootReport, LogEntry};

/// 1: the first.
pub const VERSION: u32 = 1;
/// A request is one line of at most this many bytes.
pub const MAX_REQUEST: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    #[serde(flatten)]
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Command {
    /// Every service: name, state, pid, restarts.
    List,
    /// One service; its recent lines only when its logs are exported.
    Status { name: String },
    /// A service's captured lines, when exported; `follow` goes on.
    Logs {
        name: String,
        #[serde(default)]
        lines: Option<usize>,
        #[serde(default)]
        follow: bool,
    },
    /// The boot report, the services' states, init's own lines (those
    /// kept: a late client sees what it missed), then every change as it
    /// happens, and the end record.
    Events,
    /// Nothing until the end record.
    Wait,
    /// A graceful end of the enclave: only with `allow_poweroff = true`.
    Poweroff,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::List => "list",
            Command::Status { .. } => "status",
            Command::Logs { .. } => "logs",
            Command::Events => "events",
            Command::Wait => "wait",
            Command::Poweroff => "poweroff",
        }
    }
}

/// One item of the `events` and `wait` streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// How the enclave came up (first on `events`).
    Boot { report: BootReport },
    /// A service's state, as it is when a client joins and as it changes.
    State {
        service: String,
        state: String,
        pid: Option<i32>,
        /// Unix time in seconds.
        time: f64,
    },
    /// One of init's own log lines.
    Init { line: LogEntry },
    /// This many items were not sent to this client: it did not read them
    /// in time (init never waits for a parent).
    Dropped { count: u64 },
    /// Why the enclave ends, sent to every client before init restarts
    /// the machine.
    End { end: EndRecord },
}

/// Why the enclave ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndRecord {
    /// `poweroff`, `reboot` or `exit`.
    pub action: String,
    /// The log line's reason: `service app ended: its action is poweroff
    /// (status 3)`, `received SIGTERM from pid 1`, `initctl poweroff`, ...
    pub reason: String,
    /// The service whose end ended the enclave, if one did.
    pub service: Option<String>,
    /// That service's exit status (128+N for a signal).
    pub status: Option<i32>,
}

/// Parses one request line. Never panics; the error says what is wrong,
/// and names a command the parent may not use.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let value = crate::versioned_json(line, MAX_REQUEST, VERSION, "the parent channel")?;
    let command = value
        .get("command")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
        .to_string();
    const ALLOWED: &[&str] = &["list", "status", "logs", "events", "wait", "poweroff"];
    if !ALLOWED.contains(&command.as_str()) {
        let shown: String = command.chars().take(32).collect();
        return Err(format!(
            "refused: {shown:?} is not something the parent may ask (only {})",
            ALLOWED.join(", ")
        ));
    }
    let mut fields = value;
    if let Some(object) = fields.as_object_mut() {
        object.remove("version");
    }
    // The command alone: its fields, and no others (`deny_unknown_fields`
    // does not work through `flatten`).
    let command: Command =
        serde_json::from_value(fields).map_err(|e| format!("invalid request: {e}"))?;
    Ok(Request {
        version: VERSION,
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reading_and_poweroff_parse() {
        for (line, want) in [
            (r#"{"version":1,"command":"list"}"#, Ok(Command::List)),
            (
                r#"{"version":1,"command":"logs","name":"app","follow":true}"#,
                Ok(Command::Logs {
                    name: "app".into(),
                    lines: None,
                    follow: true,
                }),
            ),
            (r#"{"version":1,"command":"wait"}"#, Ok(Command::Wait)),
            (
                r#"{"version":1,"command":"poweroff"}"#,
                Ok(Command::Poweroff),
            ),
        ] {
            assert_eq!(
                parse_request(line.as_bytes()).map(|r| r.command),
                want,
                "{line}"
            );
        }
        for command in [
            "start", "stop", "restart", "reload", "kill", "reboot", "boot", "notify", "exec", "",
        ] {
            let line = format!(r#"{{"version":1,"command":"{command}","name":"app"}}"#);
            let err = parse_request(line.as_bytes()).unwrap_err();
            assert!(err.starts_with("refused: "), "{command}: {err}");
        }
        for (line, want) in [
            (
                r#"{"version":2,"command":"list"}"#,
                "protocol version 2 is not supported",
            ),
            (r#"{"command":"list"}"#, "request has no protocol version"),
            (
                r#"{"version":1,"command":"status","name":"a","extra":1}"#,
                "invalid request",
            ),
            (r#"{"version":1,"command":"status"}"#, "invalid request"),
            ("not json", "request is not JSON"),
        ] {
            let err = parse_request(line.as_bytes()).unwrap_err();
            assert!(err.starts_with(want), "{line}: {err}");
        }
        assert!(parse_request(&[b' '; 2000])
            .unwrap_err()
            .starts_with("request longer"));
    }

    #[test]
    fn events_round_trip() {
        let end = Event::End {
            end: EndRecord {
                action: "poweroff".into(),
                reason: "service app ended: its action is poweroff (status 3)".into(),
                service: Some("app".into()),
                status: Some(3),
            },
        };
        let line = crate::encode(&crate::Response::Event { event: end.clone() });
        let back: crate::Response = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, crate::Response::Event { event: end });
    }
}
