//! `initctl`: the control client of a running enclave-init (contract §8),
//! and with `--vsock`, the parent instance's view of an enclave (the
//! parent channel, `parent.rs`).
//!
//! Exit status: 0 success, 1 a refused or failed command, 2 a usage error,
//! 3 init cannot be reached; with `--vsock`, see `parent.rs`.

mod parent;

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use initctl_proto::{
    self as proto, BootReport, Command, LastExit, LogEntry, Request, Response, ServiceInfo,
};

const DEFAULT_SOCKET: &str = "/run/enclave-init.sock";

#[derive(Parser)]
#[command(
    name = "initctl",
    version,
    about = "Control a running enclave-init",
    disable_help_subcommand = true
)]
struct Cli {
    /// The control socket of init.
    #[arg(long, env = "INITCTL_SOCKET", default_value = DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
    /// From the parent instance: the enclave's parent channel at CID[:PORT]
    /// (vsock, port 9001 by default) or unix:PATH[:PORT] (a local VM's
    /// hybrid vsock socket). Only list, status, logs, events, wait and
    /// poweroff.
    #[arg(long, global = true, value_name = "ADDRESS")]
    vsock: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every service: name, state, pid, restarts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One service in detail, with its newest log lines.
    Status {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Start a service (and what it requires and wants); clears `failed`.
    Start { name: String },
    /// Stop a service (and what requires it); waits until it is down.
    Stop { name: String },
    /// Stop, then start a service.
    Restart { name: String },
    /// The service's captured output, newest last.
    Logs {
        name: String,
        /// Only the last N lines.
        #[arg(short = 'n', long = "lines")]
        lines: Option<usize>,
        /// Keep printing new lines until interrupted.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Re-read the service files; with a NAME, run that service's
    /// ExecReload= instead (waits until it is done).
    Reload { name: Option<String> },
    /// Send a signal to a service's processes (systemd's default: all).
    Kill {
        name: String,
        /// A name (SIGHUP, HUP) or a number.
        #[arg(short = 's', long, default_value = "SIGTERM")]
        signal: String,
        /// Only the main process.
        #[arg(long, conflicts_with = "all")]
        main: bool,
        /// Every process of the service (its process group, or cgroup).
        #[arg(long)]
        all: bool,
    },
    /// How init came up: the NSM's module and PCRs, the entropy gate, the
    /// heartbeat, the boot's duration.
    Boot {
        #[arg(long)]
        json: bool,
    },
    /// With --vsock: the boot report, the services' states and init's own
    /// lines, then every change, until the enclave ends.
    Events {
        #[arg(long)]
        json: bool,
    },
    /// With --vsock: wait for the enclave to end; exit with the status of
    /// the service that ended it (4: the connection was lost first).
    Wait {
        #[arg(long)]
        json: bool,
    },
    /// Stop everything and power off (in --no-boot mode: init exits 0).
    Poweroff,
    /// Stop everything and reboot (in --no-boot mode: init exits 0).
    Reboot,
    /// From inside a Type=notify service: tell init (sd_notify's messages).
    Notify {
        /// Send READY=1.
        #[arg(long)]
        ready: bool,
        /// Send STATUS=TEXT.
        #[arg(long)]
        status: Option<String>,
        /// Send STOPPING=1.
        #[arg(long)]
        stopping: bool,
        /// More KEY=VALUE assignments.
        assignments: Vec<String>,
    },
}

/// A failure and the exit status it means.
struct Failure {
    status: u8,
    message: String,
}

fn fail(status: u8, message: impl Into<String>) -> Failure {
    Failure {
        status,
        message: message.into(),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 2,
            });
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("initctl: {}", f.message);
            }
            ExitCode::from(f.status)
        }
    }
}

/// `--vsock`: the parent channel's commands only.
fn run_parent(address: &str, command: Cmd) -> Result<(), Failure> {
    use proto::parent::Command as P;
    let address = parent::parse_address(address).map_err(|e| fail(2, e))?;
    let (command, json) = match command {
        Cmd::List { json } => (P::List, json),
        Cmd::Status { name, json } => (P::Status { name }, json),
        Cmd::Logs {
            name,
            lines,
            follow,
        } => (
            P::Logs {
                name,
                lines,
                follow,
            },
            false,
        ),
        Cmd::Events { json } => (P::Events, json),
        Cmd::Wait { json } => (P::Wait, json),
        Cmd::Poweroff => (P::Poweroff, false),
        _ => {
            return Err(fail(
                2,
                "over --vsock only list, status, logs, events, wait and poweroff: the parent may read, and end the enclave when its image allows it",
            ))
        }
    };
    parent::run(&address, command, json)
}

fn run(cli: Cli) -> Result<(), Failure> {
    if let Some(address) = &cli.vsock {
        return run_parent(address, cli.command);
    }
    let (command, json) = match cli.command {
        Cmd::Events { .. } | Cmd::Wait { .. } => {
            return Err(fail(
                2,
                "events and wait are the parent channel's: use them with --vsock CID[:PORT]",
            ))
        }
        Cmd::Notify {
            ready,
            status,
            stopping,
            assignments,
        } => return notify(ready, status, stopping, assignments),
        Cmd::List { json } => (Command::List, json),
        Cmd::Status { name, json } => (Command::Status { name }, json),
        Cmd::Start { name } => (Command::Start { name }, false),
        Cmd::Stop { name } => (Command::Stop { name }, false),
        Cmd::Restart { name } => (Command::Restart { name }, false),
        Cmd::Logs {
            name,
            lines,
            follow,
        } => (
            Command::Logs {
                name,
                lines,
                follow,
            },
            false,
        ),
        Cmd::Reload { name } => (Command::Reload { name }, false),
        Cmd::Kill {
            name, signal, main, ..
        } => (
            Command::Kill {
                name,
                signal,
                all: !main,
            },
            false,
        ),
        Cmd::Boot { json } => (Command::Boot, json),
        Cmd::Poweroff => (Command::Poweroff, false),
        Cmd::Reboot => (Command::Reboot, false),
    };
    let follow = matches!(command, Command::Logs { follow: true, .. });
    let mut stream = UnixStream::connect(&cli.socket).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (the control socket is root-only)"
        } else {
            ""
        };
        fail(
            3,
            format!("cannot reach init at {}: {e}{hint}", cli.socket.display()),
        )
    })?;
    let _ = stream.set_read_timeout(answer_timeout(&command));
    let request = Request {
        version: proto::VERSION,
        command,
    };
    stream.write_all(&proto::encode(&request)).map_err(|e| {
        fail(
            3,
            format!("cannot talk to init at {}: {e}", cli.socket.display()),
        )
    })?;
    let mut reader = BufReader::new(stream);
    let mut out = std::io::stdout().lock();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) if follow => return Ok(()),
            Ok(0) => return Err(fail(3, "init closed the connection without an answer")),
            Ok(_) => {}
            Err(e) => return Err(fail(3, format!("reading init's answer: {e}"))),
        }
        let response: Response = serde_json::from_str(&line)
            .map_err(|e| fail(1, format!("unreadable answer from init: {e}")))?;
        match response {
            Response::Line { line } => {
                let _ = writeln!(out, "{}", format_log(&line));
                let _ = out.flush();
                continue;
            }
            Response::Error { message } => return Err(fail(1, message)),
            Response::End => return Ok(()),
            other => {
                print_response(&mut out, other, json);
                return Ok(());
            }
        }
    }
}

/// How long to wait for init's answer. `start`, `stop` and `restart`
/// answer once the service has settled, which init bounds by the service's
/// own timeouts (`infinity` included, as configured): no bound here. Others
/// answer at once; a minute is plenty even for an enclave under load.
fn answer_timeout(command: &Command) -> Option<Duration> {
    match command {
        Command::Start { .. }
        | Command::Stop { .. }
        | Command::Restart { .. }
        | Command::Reload { name: Some(_) } => None,
        Command::Logs { follow: true, .. } => None,
        _ => Some(Duration::from_secs(60)),
    }
}

fn print_response(out: &mut impl Write, response: Response, json: bool) {
    let now = unix_now();
    match response {
        Response::Event { event } if json => {
            let _ = writeln!(out, "{}", serde_json::to_string(&event).unwrap_or_default());
        }
        Response::Event { event } => print_event(out, &event),
        Response::List { services } if json => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&services).unwrap_or_default()
            );
        }
        Response::Status { service } if json => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&service).unwrap_or_default()
            );
        }
        Response::Boot { report } if json => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
        }
        Response::Boot { report } => print_boot(out, &report),
        Response::List { services } => {
            let width = services
                .iter()
                .map(|s| s.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            let _ = writeln!(
                out,
                "{:<width$}  {:<8}  {:>7}  {:>8}  {:<10}  LAST EXIT",
                "NAME", "STATE", "PID", "RESTARTS", "SINCE"
            );
            for s in services {
                let pid = s.pid.map_or("-".to_string(), |p| p.to_string());
                let last = s.last_exit.map_or("-".to_string(), short_exit);
                let _ = writeln!(
                    out,
                    "{:<width$}  {:<8}  {:>7}  {:>8}  {:<10}  {last}",
                    s.name,
                    s.state,
                    pid,
                    s.restarts,
                    ago(now - s.since)
                );
            }
        }
        Response::Status { service } => print_status(out, &service, now),
        Response::End => {}
        Response::Reload { report } => {
            let list = |v: &[String]| {
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.join(", ")
                }
            };
            let _ = writeln!(out, "added: {}", list(&report.added));
            let _ = writeln!(out, "removed: {}", list(&report.removed));
            let _ = writeln!(
                out,
                "changed (used from their next start): {}",
                list(&report.changed)
            );
            for e in &report.errors {
                let _ = writeln!(out, "error: {e}");
            }
        }
        Response::Done { message } => {
            let _ = writeln!(out, "{message}");
        }
        Response::Error { message } => {
            let _ = writeln!(out, "error: {message}");
        }
        Response::Line { line } => {
            let _ = writeln!(out, "{}", format_log(&line));
        }
    }
}

fn print_boot(out: &mut impl Write, r: &BootReport) {
    let _ = writeln!(out, "enclave-init {} ({})", r.version, r.mode);
    if let Some(ms) = r.boot_ms {
        let _ = writeln!(out, "      Boot: {ms} ms");
    }
    if let Some(hb) = &r.heartbeat {
        let _ = writeln!(out, " Heartbeat: {hb}");
    }
    match (&r.nsm, &r.nsm_error) {
        (Some(nsm), _) => {
            let _ = writeln!(out, "       NSM: {} (NSM {})", nsm.module_id, nsm.version);
            let _ = writeln!(out, "    Digest: {}", nsm.digest);
            for pcr in &nsm.pcrs {
                let lock = if pcr.locked { "" } else { " (not locked)" };
                let _ = writeln!(out, "      PCR{}: {}{lock}", pcr.index, pcr.value);
            }
        }
        (None, Some(e)) => {
            let _ = writeln!(out, "       NSM: none: {e}");
        }
        (None, None) => {}
    }
    let mut entropy = r.entropy.state.clone();
    if let Some(rng) = &r.entropy.rng {
        entropy.push_str(&format!(", hwrng {rng}"));
    }
    if let Some(ms) = r.entropy.waited_ms {
        entropy.push_str(&format!(", services waited {ms} ms"));
    }
    let _ = writeln!(out, "   Entropy: {entropy}");
}

fn print_status(out: &mut impl Write, s: &ServiceInfo, now: f64) {
    let pid = s.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    let _ = writeln!(out, "{} - {}{pid}", s.name, s.state);
    let _ = writeln!(
        out,
        "     Since: {}; {}",
        timestamp(s.since, false),
        ago(now - s.since)
    );
    let _ = writeln!(out, "      Type: {}", s.service_type);
    let _ = writeln!(out, "   Command: {}", s.command.join(" "));
    if let Some(text) = &s.status_text {
        let _ = writeln!(out, "    Status: {text}");
    }
    if let Some(result) = &s.result {
        let _ = writeln!(out, "    Result: {result}");
    }
    if let Some(waiting) = &s.waiting_for {
        let _ = writeln!(out, "   Waiting: {waiting}");
    }
    let _ = writeln!(out, "  Restarts: {}", s.restarts);
    if let Some(exit) = s.last_exit {
        let _ = writeln!(out, " Last exit: {}", long_exit(exit));
    }
    for (label, list) in [
        ("  Requires", &s.requires),
        ("     Wants", &s.wants),
        ("     After", &s.after),
    ] {
        if !list.is_empty() {
            let _ = writeln!(out, "{label}: {}", list.join(", "));
        }
    }
    if !s.recent.is_empty() {
        let _ = writeln!(out);
        for l in &s.recent {
            let _ = writeln!(out, "{}", format_log(l));
        }
    }
}

fn short_exit(exit: LastExit) -> String {
    match exit {
        LastExit::Code(c) => format!("code {c}"),
        LastExit::Signal(s) => format!("signal {s} ({})", signal_name(s)),
    }
}

fn long_exit(exit: LastExit) -> String {
    match exit {
        LastExit::Code(0) => "exited with status 0 (success)".into(),
        LastExit::Code(c) => format!("exited with status {c} (failure)"),
        LastExit::Signal(s) => format!("killed by {} (signal {s})", signal_name(s)),
    }
}

fn format_log(l: &LogEntry) -> String {
    format!("{} [{}] {}", timestamp(l.time, true), l.pid, l.text)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn ago(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}min ago", s / 60),
        3600..=86399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// `2026-11-26 11:20:00 UTC`, or with milliseconds, from Unix seconds.
fn timestamp(unix: f64, millis: bool) -> String {
    let total = unix.max(0.0);
    let secs = total as i64;
    let ms = ((total - secs as f64) * 1000.0) as u32;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, (rem / 60) % 60, rem % 60);
    if millis {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{ms:03}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
    }
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn notify(
    ready: bool,
    status: Option<String>,
    stopping: bool,
    assignments: Vec<String>,
) -> Result<(), Failure> {
    let socket = std::env::var_os("NOTIFY_SOCKET").ok_or_else(|| {
        fail(
            1,
            "NOTIFY_SOCKET is not set: notify works inside a Type=notify service",
        )
    })?;
    let mut lines = Vec::new();
    if ready {
        lines.push("READY=1".to_string());
    }
    if let Some(text) = status {
        lines.push(format!("STATUS={text}"));
    }
    if stopping {
        lines.push("STOPPING=1".to_string());
    }
    for a in assignments {
        if !a.contains('=') {
            return Err(fail(2, format!("not a KEY=VALUE assignment: {a:?}")));
        }
        lines.push(a);
    }
    if lines.is_empty() {
        return Err(fail(
            2,
            "nothing to send: use --ready, --status, --stopping or KEY=VALUE",
        ));
    }
    let text = lines.join("\n");
    send_with_barrier(std::path::Path::new(&socket), &text, Duration::from_secs(5)).map_err(|e| {
        fail(
            1,
            format!("notify {}: {e}", PathBuf::from(&socket).display()),
        )
    })
}

/// Sends `text` to the socket at `path` with a barrier, and waits (up to
/// `timeout`) until init has handled it: init closes the descriptor sent
/// with the message (the write end of a pipe) once it has handled it.
fn send_with_barrier(path: &Path, text: &str, timeout: std::time::Duration) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    let socket = UnixDatagram::unbound()?;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let addr = UnixAddr::new(path)?;
    let iov = [io::IoSlice::new(text.as_bytes())];
    let fds = [std::os::fd::AsRawFd::as_raw_fd(&write)];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg(
        std::os::fd::AsRawFd::as_raw_fd(&socket),
        &iov,
        &cmsg,
        MsgFlags::empty(),
        Some(&addr),
    )?;
    drop(write);
    let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [nix::poll::PollFd::new(
        read.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(millis))? {
        0 => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "init did not acknowledge the notification",
        )),
        _ => Ok(()),
    }
}

/// One item of the parent channel's `events` or `wait` stream.
fn print_event(out: &mut impl Write, event: &proto::parent::Event) {
    use proto::parent::Event;
    let _ = match event {
        Event::Boot { report } => {
            let nsm = report.nsm.as_ref().map_or_else(
                || report.nsm_error.clone().unwrap_or_else(|| "none".into()),
                |n| format!("{} (NSM {})", n.module_id, n.version),
            );
            writeln!(
                out,
                "boot: enclave-init {} ({}), NSM: {nsm}, entropy: {}",
                report.version, report.mode, report.entropy.state
            )
        }
        Event::State {
            service,
            state,
            pid,
            time,
        } => writeln!(
            out,
            "{} {service}: {state}{}",
            timestamp(*time, true),
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        ),
        Event::Init { line } => writeln!(
            out,
            "{} enclave-init: {}",
            timestamp(line.time, true),
            line.text
        ),
        Event::Dropped { count } => writeln!(
            out,
            "({count} lines not sent: this client did not read them in time)"
        ),
        Event::End { end } => {
            let service = match (&end.service, end.status) {
                (Some(s), Some(status)) => format!("; service {s}, status {status}"),
                (Some(s), None) => format!("; service {s}"),
                _ => String::new(),
            };
            writeln!(out, "END: {} ({}{service})", end.action, end.reason)
        }
    };
}

/// `SIGTERM`, or `signal N` for a number without a name.
fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_commands_wait_as_long_as_init_takes() {
        let name = || "app".to_string();
        for waits in [
            Command::Start { name: name() },
            Command::Stop { name: name() },
            Command::Restart { name: name() },
            Command::Reload { name: Some(name()) },
            Command::Logs {
                name: name(),
                lines: None,
                follow: true,
            },
        ] {
            assert_eq!(answer_timeout(&waits), None, "{waits:?}");
        }
        for answers_at_once in [
            Command::List,
            Command::Reload { name: None },
            Command::Kill {
                name: name(),
                signal: "HUP".into(),
                all: false,
            },
            Command::Logs {
                name: name(),
                lines: Some(3),
                follow: false,
            },
        ] {
            assert!(answer_timeout(&answers_at_once).is_some());
        }
    }

    #[test]
    fn dates() {
        assert_eq!(timestamp(0.0, false), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            timestamp(1_795_000_000.25, true),
            "2026-11-18T11:06:40.250Z"
        );
        assert_eq!(timestamp(951_782_400.0, false), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn ages() {
        assert_eq!(ago(5.0), "5s ago");
        assert_eq!(ago(125.0), "2min ago");
        assert_eq!(ago(7200.0), "2h ago");
        assert_eq!(ago(-3.0), "0s ago");
    }
}
