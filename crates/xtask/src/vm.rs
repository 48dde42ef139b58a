//! Boots an enclave under QEMU (TCG) with a vsock device served by
//! vhost-device-vsock, a host-side heartbeat listener, and the serial
//! console captured (and streamed, for people watching).
//!
//! Two machines:
//!
//! * [`Machine::Nitro`], the default: QEMU's `nitro-enclave` machine
//!   booting an EIF (`-kernel app.eif`): a microVM without ACPI or PCI,
//!   virtio-mmio devices, an emulated NSM, AWS's enclave kernel and
//!   Nitro's own command line, baked into the image. Like Nitro it has no
//!   power-off, and a reboot restarts the enclave from the beginning
//!   (QEMU does not exit, even with `-no-reboot`): the harness watches the
//!   console, stops QEMU at the first `reboot: machine restart`, and fails
//!   loudly on `System halted` or a kernel panic.
//! * [`Machine::Pc`]: a standard PC with Debian's 6.12 cloud kernel, an
//!   initramfs, and the vsock modules loaded by init from `/vm/` (`.ko.xz`,
//!   which the kernel decompresses). Kept for what only it has: loading
//!   compressed modules, and `-no-reboot` making QEMU exit by itself.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The heartbeat as the host saw it.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub byte: u8,
    /// How much console text had arrived when the byte came.
    pub console_len: usize,
    pub after: Duration,
}

/// What to boot, and on which machine.
#[derive(Debug, Clone)]
pub enum Machine {
    /// QEMU's `nitro-enclave` machine, an EIF.
    Nitro { qemu: PathBuf, eif: PathBuf },
    /// A standard PC, a kernel and an initramfs.
    Pc {
        qemu: PathBuf,
        kernel: PathBuf,
        initramfs: PathBuf,
    },
}

/// Why the harness stopped QEMU itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `reboot: machine restart`: the enclave ended.
    Restart,
    /// `System halted`: a power-off, which Nitro does not have.
    Halted,
    /// The end of a kernel panic (Nitro's `panic=30` would restart the
    /// machine 30 s later and hide it).
    Panic,
}

/// The console lines that make the harness stop QEMU at once.
pub const STOP_LINES: &[(&str, Stop)] = &[
    ("reboot: machine restart", Stop::Restart),
    ("System halted", Stop::Halted),
    ("---[ end Kernel panic", Stop::Panic),
];

#[derive(Debug)]
pub struct Outcome {
    pub console: String,
    pub status: Option<std::process::ExitStatus>,
    pub timed_out: bool,
    /// Why the harness stopped QEMU, if it did.
    pub stopped: Option<Stop>,
    pub heartbeat: Option<Heartbeat>,
    pub elapsed: Duration,
    /// What the host heard on the enclave's parent channel (`events`, one
    /// JSON line each), when `Options::parent` asked for it.
    pub parent: Vec<String>,
}

impl Outcome {
    /// The enclave ended as a Nitro enclave must: init's
    /// `reboot(RB_AUTOBOOT)` restarted the machine (on the nitro machine
    /// the harness saw `reboot: machine restart` and stopped QEMU; on the
    /// PC, `-no-reboot` made QEMU exit). Not a power-off, which Nitro's
    /// machine does not have (it halts and the enclave stays up), not a
    /// kernel panic, not the harness's timeout.
    pub fn enclave_ended(&self) -> bool {
        !self.timed_out
            && (self.stopped == Some(Stop::Restart)
                || (self.stopped.is_none() && self.status.is_some_and(|s| s.success())))
            && self.console.contains("reboot: Restarting system")
            && !self.console.contains("reboot: Power down")
            && !self.console.contains("System halted")
            && !self.console.contains("Kernel panic")
    }

    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.console.lines().map(|l| l.trim_end_matches('\r'))
    }

    /// Lines a service printed through init (`name[pid]: text`), text only.
    pub fn service_output(&self, service: &str) -> Vec<String> {
        let prefix = format!("{service}[");
        self.lines()
            .filter_map(|l| {
                l.strip_prefix(&prefix)
                    .and_then(|rest| rest.split_once("]: "))
                    .map(|(_, t)| t.to_string())
            })
            .collect()
    }
}

#[derive(Clone)]
pub struct Options {
    pub timeout: Duration,
    /// Answer the heartbeat (port 9000) on the host.
    pub listener: bool,
    /// Stream the console to stderr as it comes.
    pub echo: bool,
    pub memory_mb: u32,
    /// Words for the kernel command line besides the machine's own (on the
    /// nitro machine they go into the EIF, and so into its PCRs).
    pub append: String,
    /// The emulated CPU (`-cpu`).
    pub cpu: String,
    /// Listen to the enclave's parent channel from the host.
    pub parent: Option<ParentWatch>,
}

/// The host on the enclave's parent channel (through vhost-device-vsock's
/// hybrid socket), once init says it listens: an `events` request, every
/// line kept; and, when a line holds `poweroff_after`, a `poweroff` request
/// on a second connection.
#[derive(Clone, Debug)]
pub struct ParentWatch {
    pub port: u32,
    pub poweroff_after: Option<String>,
    /// Print what the host hears, as it comes (the demo).
    pub echo: bool,
}

/// One line of the parent channel as a person reads it.
pub fn describe_parent_line(line: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_string();
    };
    let e = &v["event"];
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    match e["event"].as_str() {
        Some("boot") => format!(
            "boot report: enclave-init {}, NSM {}, entropy {}",
            s(&e["report"]["version"]),
            s(&e["report"]["nsm"]["module_id"]),
            s(&e["report"]["entropy"]["state"])
        ),
        Some("state") => format!(
            "{} is {}{}",
            s(&e["service"]),
            s(&e["state"]),
            e["pid"]
                .as_i64()
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default()
        ),
        Some("init") => format!("init: {}", s(&e["line"]["text"])),
        Some("dropped") => format!("({} lines dropped)", e["count"]),
        Some("end") => format!(
            "THE END: {} ({}{})",
            s(&e["end"]["action"]),
            s(&e["end"]["reason"]),
            e["end"]["status"]
                .as_i64()
                .map(|st| format!("; status {st}"))
                .unwrap_or_default()
        ),
        _ => line.to_string(),
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(180),
            listener: true,
            echo: false,
            memory_mb: 256,
            append: String::new(),
            cpu: CPU.into(),
            parent: None,
        }
    }
}

/// The emulated CPU. No CX16: under TCG the kernel's SLUB fast path
/// (cmpxchg16b) crashed about one boot in ten (double faults in
/// kmem_cache_alloc); without the feature the kernel takes its locked path
/// and booted every time (30 of 30 here, against 28 of 30 with it).
pub const CPU: &str = "max,-cx16";

/// The PC machine's kernel command line: Nitro's, less `pci=off` (the
/// PC's vsock is on PCI), plus what makes a panic end QEMU at once.
pub const CMDLINE: &str =
    "console=ttyS0 panic=-1 reboot=k nomodules quiet i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on";

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first line init prints; a panic before it is the emulator's.
pub const INIT_STARTED: &str = "enclave-init: enclave-init ";

/// Boots, retrying when the kernel crashes before init starts. Under TCG
/// the 6.12 kernel died in early boot about one boot in ten (in SLUB's
/// cmpxchg16b path, with and without the vsock device), which says nothing
/// about init. The emulated CPU now lacks CX16, which avoided it in every
/// trial; the retry stays as a safety net for emulator faults. A crash
/// after init's first line is never retried.
pub fn boot(
    machine: &Machine,
    vhost: &Path,
    work: &Path,
    opts: &Options,
) -> Result<Outcome, String> {
    let mut attempt = 1;
    loop {
        let outcome = boot_once(machine, vhost, work, opts)?;
        let early_crash =
            outcome.console.contains("Kernel panic") && !outcome.console.contains(INIT_STARTED);
        if !early_crash || attempt == 3 {
            return Ok(outcome);
        }
        eprintln!("xtask: the guest kernel crashed before /init ran (emulator flakiness); booting again ({}/3)", attempt + 1);
        attempt += 1;
    }
}

/// QEMU's arguments for `machine`, its vsock device on `vhu`.
fn qemu_command(machine: &Machine, vhu: &Path, opts: &Options) -> Command {
    let memory = format!("{}M", opts.memory_mb);
    let chardev = format!("socket,id=c0,path={}", vhu.display());
    let common = [
        "-accel",
        "tcg",
        "-cpu",
        &opts.cpu,
        "-smp",
        "1",
        "-m",
        &memory,
        "-nographic",
    ];
    match machine {
        Machine::Nitro { qemu, eif } => {
            let mut cmd = Command::new(qemu);
            // Debian's firmware (qboot, linuxboot_dma); the machine's
            // vhost-user-vsock needs no shared-memory backend options.
            cmd.args(["-L", crate::nitro::FIRMWARE])
                .args(["-M", "nitro-enclave,vsock=c0,id=enclave-init-vm"])
                .args(common)
                .args(["-chardev", &chardev])
                .arg("-kernel")
                .arg(eif);
            cmd
        }
        Machine::Pc {
            qemu,
            kernel,
            initramfs,
        } => {
            let mut cmd = Command::new(qemu);
            cmd.args(common)
                .args(["-no-reboot", "-nic", "none"])
                .args([
                    "-object",
                    &format!("memory-backend-memfd,id=mem,size={memory},share=on"),
                    "-numa",
                    "node,memdev=mem",
                ])
                .args([
                    "-chardev",
                    &chardev,
                    "-device",
                    "vhost-user-vsock-pci,chardev=c0",
                ])
                .arg("-kernel")
                .arg(kernel)
                .arg("-initrd")
                .arg(initramfs)
                .args(["-append", &format!("{CMDLINE} {}", opts.append)]);
            cmd
        }
    }
}

/// The host's side of the parent channel: once init says it listens,
/// connect through the hybrid socket (`CONNECT port`, `OK ...`), ask for
/// `events`, keep every line until the connection ends. A connection that
/// is refused is tried again (within the boot's life).
fn watch_parent_channel(
    uds: &Path,
    watch: &ParentWatch,
    console: &Mutex<String>,
    lines: &Mutex<Vec<String>>,
    start: Instant,
) {
    use std::io::BufRead;
    let port = watch.port;
    let listening = || {
        console
            .lock()
            .is_ok_and(|c| c.contains("parent channel: vsock port"))
    };
    while !listening() {
        if start.elapsed() > Duration::from_secs(600) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(uds) else {
        return;
    };
    if stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .is_err()
    {
        return;
    }
    let mut reader = std::io::BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut answer = String::new();
    if reader.read_line(&mut answer).is_err() || !answer.starts_with("OK") {
        if let Ok(mut l) = lines.lock() {
            l.push(format!("connect: {}", answer.trim()));
        }
        return;
    }
    let _ = stream.write_all(b"{\"version\":1,\"command\":\"events\"}\n");
    let mut line = String::new();
    let mut asked = false;
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        if watch.echo {
            use std::io::IsTerminal;
            let tag = if std::io::stderr().is_terminal() {
                "\x1b[1mparent>\x1b[0m"
            } else {
                "parent>"
            };
            eprintln!("{tag} {}", describe_parent_line(line.trim_end()));
        }
        if let Ok(mut l) = lines.lock() {
            l.push(line.trim_end().to_string());
        }
        let due = watch
            .poweroff_after
            .as_deref()
            .is_some_and(|needle| line.contains(needle));
        if due && !asked {
            asked = true;
            let answer = parent_request(uds, port, "{\"version\":1,\"command\":\"poweroff\"}");
            if let Ok(mut l) = lines.lock() {
                l.push(format!("poweroff: {answer}"));
            }
        }
        line.clear();
    }
}

/// One request on a new connection through the hybrid socket; the first
/// answer line (or what went wrong).
pub fn parent_request(uds: &Path, port: u32, request: &str) -> String {
    use std::io::BufRead;
    let run = || -> std::io::Result<String> {
        let mut stream = std::os::unix::net::UnixStream::connect(uds)?;
        stream.write_all(format!("CONNECT {port}\n").as_bytes())?;
        let mut reader = std::io::BufReader::new(stream.try_clone()?);
        let mut ok = String::new();
        reader.read_line(&mut ok)?;
        if !ok.starts_with("OK") {
            return Ok(format!("connect: {}", ok.trim()));
        }
        stream.write_all(format!("{request}\n").as_bytes())?;
        let mut answer = String::new();
        reader.read_line(&mut answer)?;
        Ok(answer.trim_end().to_string())
    };
    run().unwrap_or_else(|e| format!("error: {e}"))
}

fn boot_once(
    machine: &Machine,
    vhost: &Path,
    work: &Path,
    opts: &Options,
) -> Result<Outcome, String> {
    std::fs::create_dir_all(work).map_err(|e| e.to_string())?;
    let vhu = work.join("vhu.sock");
    let uds = work.join("vm.vsock");
    let _ = std::fs::remove_file(&vhu);
    let _ = std::fs::remove_file(&uds);
    let vhost = Command::new(vhost)
        .args(["--guest-cid", "16"])
        .arg("--socket")
        .arg(&vhu)
        .arg("--uds-path")
        .arg(&uds)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start vhost-device-vsock: {e}"))?;
    let _vhost = Kill(vhost);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !vhu.exists() {
        if Instant::now() > deadline {
            return Err("vhost-device-vsock did not create its socket".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let console = Arc::new(Mutex::new(String::new()));
    let heartbeat: Arc<Mutex<Option<Heartbeat>>> = Arc::default();
    let start = Instant::now();
    if opts.listener {
        // A guest connection to CID 2 port P arrives at "<uds>_P".
        let path = PathBuf::from(format!("{}_9000", uds.display()));
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).map_err(|e| format!("bind {}: {e}", path.display()))?;
        let (console, heartbeat) = (console.clone(), heartbeat.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut byte = [0u8; 1];
                if stream.read_exact(&mut byte).is_ok() {
                    let console_len = console.lock().map(|c| c.len()).unwrap_or(0);
                    if let Ok(mut hb) = heartbeat.lock() {
                        hb.get_or_insert(Heartbeat {
                            byte: byte[0],
                            console_len,
                            after: start.elapsed(),
                        });
                    }
                    let _ = stream.write_all(&[0xB7]);
                }
            }
        });
    }
    let parent_lines: Arc<Mutex<Vec<String>>> = Arc::default();
    if let Some(watch) = opts.parent.clone() {
        let (console, lines, uds) = (console.clone(), parent_lines.clone(), uds.clone());
        std::thread::spawn(move || watch_parent_channel(&uds, &watch, &console, &lines, start));
    }
    let mut qemu = qemu_command(machine, &vhu, opts);
    qemu.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = qemu.spawn().map_err(|e| format!("start qemu: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("qemu stdout")?;
    let mut stderr = child.stderr.take().ok_or("qemu stderr")?;
    let mut qemu = Kill(child);
    let stop: Arc<Mutex<Option<Stop>>> = Arc::default();
    let reader = {
        let (console, echo, stop) = (console.clone(), opts.echo, stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if echo {
                    let mut err = std::io::stderr();
                    let _ = err.write_all(text.as_bytes());
                    let _ = err.flush();
                }
                if let Ok(mut c) = console.lock() {
                    // Only the new text (and a line it completes) can hold
                    // a stop line not seen before.
                    let from = c.len().saturating_sub(200);
                    c.push_str(&text);
                    let tail = c.get(from..).unwrap_or(&c);
                    if let Some((_, why)) = STOP_LINES.iter().find(|(l, _)| tail.contains(l)) {
                        if let Ok(mut s) = stop.lock() {
                            s.get_or_insert(*why);
                        }
                    }
                }
            }
        })
    };
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = start + opts.timeout;
    let mut timed_out = false;
    let mut stopped = None;
    let status = loop {
        match qemu.0.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for qemu: {e}")),
        }
        if let Some(why) = stop.lock().ok().and_then(|s| *s) {
            // Nothing after the line matters: the machine restarts (or
            // stays halted) from here.
            stopped = Some(why);
            let _ = qemu.0.kill();
            break qemu.0.wait().ok();
        }
        if Instant::now() > deadline {
            timed_out = true;
            let _ = qemu.0.kill();
            break qemu.0.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = reader.join();
    let qemu_errors = errors.join().unwrap_or_default();
    let mut console = console.lock().map(|c| c.clone()).unwrap_or_default();
    if !qemu_errors.trim().is_empty() {
        console.push_str(&format!("\n[qemu stderr] {}\n", qemu_errors.trim()));
    }
    let heartbeat = heartbeat.lock().ok().and_then(|h| h.clone());
    let parent = parent_lines.lock().map(|l| l.clone()).unwrap_or_default();
    Ok(Outcome {
        parent,
        console,
        status,
        timed_out,
        stopped,
        heartbeat,
        elapsed: start.elapsed(),
    })
}
