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
    Ok(Outcome {
        console,
        status,
        timed_out,
        stopped,
        heartbeat,
        elapsed: start.elapsed(),
    })
}
