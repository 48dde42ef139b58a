//! `cargo xtask bench [--quick]`: enclave-init beside tini and dumb-init
//! (Debian's packages), in the same run, alternating contenders, each
//! figure a median with its spread. Prints a table and writes
//! `target/bench/results.json`. Timings are figures to read, never
//! assertions: the machines are shared and noisy.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::assets;

/// One figure of one contender.
#[derive(Debug, Clone)]
pub struct Figure {
    pub bench: String,
    pub contender: String,
    pub unit: String,
    pub median: f64,
    pub low: f64,
    pub high: f64,
    /// Lower is better (time, memory) or higher is better (rates).
    pub lower_is_better: bool,
    pub note: String,
}

pub struct Bench {
    quick: bool,
    init: PathBuf,
    initctl: PathBuf,
    work: PathBuf,
    pub figures: Vec<Figure>,
}

fn median_spread(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len();
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let at = |q: f64| samples[((n - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.1), at(0.9))
}

fn percentile(samples: &[f64], q: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return 0.0;
    }
    s[((s.len() - 1) as f64 * q).round() as usize]
}

/// A contender's way to run `argv` as PID 1 of a new PID namespace.
struct Contender {
    name: &'static str,
    prefix: Vec<String>,
}

fn timed(cmd: &mut Command) -> Result<Duration, String> {
    let start = Instant::now();
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !status.success() && status.code() != Some(1) {
        return Err(format!("{cmd:?}: {status}"));
    }
    Ok(start.elapsed())
}

fn ensure_peers() -> Result<(), String> {
    let missing: Vec<&str> = ["tini", "dumb-init"]
        .into_iter()
        .filter(|p| assets::which(p).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: apt-get install {}", missing.join(" "));
    assets::run(Command::new("apt-get").args(["update", "-q"]))?;
    assets::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// RSS in KiB and CPU time in clock ticks of a process.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rfind(')').map(|i| &stat[i + 2..]).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz.max(1.0)
}

fn switches(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches")
        })
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
        .sum()
}

/// The init process inside `unshare` (its only child).
fn inner_pid(unshare: u32) -> Option<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(kids) =
            std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
        {
            if let Some(p) = kids.split_whitespace().next().and_then(|p| p.parse().ok()) {
                return Some(p);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// One byte from `out`, within `bound` (poll, then read).
fn read_byte(out: &std::process::ChildStdout, bound: Duration) -> Option<u8> {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: out.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(bound.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut pfd, 1, ms) } != 1 {
        return None;
    }
    let mut byte = 0u8;
    // SAFETY: reading one byte into a valid local from an open fd.
    let n = unsafe { libc::read(out.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
    (n == 1).then_some(byte)
}

/// A peer as PID 1 of a new PID namespace with one sleeping child, settled
/// (300 ms: a measurement's warm-up, not a synchronisation).
fn spawn_peer(c: &Contender) -> Result<(std::process::Child, u32), String> {
    let child = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .args(&c.prefix)
        .args(["sleep", "100000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = inner_pid(child.id()).ok_or("peer did not start")?;
    std::thread::sleep(Duration::from_millis(300));
    Ok((child, pid))
}

/// A supervised enclave-init in a PID namespace, its console piped.
struct Running {
    child: std::process::Child,
    pid: u32,
    lines: std::sync::mpsc::Receiver<(Instant, String)>,
}

impl Running {
    fn wait_line(&self, needle: &str, bound: Duration) -> Option<Instant> {
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok((t, l)) if l.contains(needle) => return Some(t),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the namespace's init; the namespace goes with it.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bench {
    pub fn new(quick: bool) -> Result<Self, String> {
        ensure_peers()?;
        let (init, initctl) = assets::static_binaries()?;
        let work = assets::workspace_root().join("target/bench");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
        Ok(Self {
            quick,
            init,
            initctl,
            work,
            figures: Vec::new(),
        })
    }

    fn reps(&self, full: usize, quick: usize) -> usize {
        if self.quick {
            quick
        } else {
            full
        }
    }

    fn contenders(&self) -> Vec<Contender> {
        let socket = self.work.join("ctl.sock").display().to_string();
        vec![
            Contender {
                name: "enclave-init",
                prefix: vec![
                    self.init.display().to_string(),
                    "--no-boot".into(),
                    "--config".into(),
                    "/nonexistent".into(),
                    "--service-dir".into(),
                    "/nonexistent".into(),
                    "--control-socket".into(),
                    socket,
                    "--".into(),
                ],
            },
            Contender {
                name: "tini",
                prefix: vec!["tini".into(), "--".into()],
            },
            Contender {
                name: "dumb-init",
                prefix: vec!["dumb-init".into()],
            },
        ]
    }

    fn push(
        &mut self,
        bench: &str,
        contender: &str,
        unit: &str,
        samples: Vec<f64>,
        lower_is_better: bool,
        note: &str,
    ) {
        let (median, low, high) = median_spread(samples);
        self.figures.push(Figure {
            bench: bench.into(),
            contender: contender.into(),
            unit: unit.into(),
            median,
            low,
            high,
            lower_is_better,
            note: note.into(),
        });
    }

    /// Runs `argv` under each contender as PID 1 of a new PID namespace,
    /// alternating, `reps` times; records wall time in ms.
    fn compare(&mut self, bench: &str, argv: &[&str], reps: usize) -> Result<(), String> {
        let contenders = self.contenders();
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
        for rep in 0..reps {
            // Alternating, each contender first in turn, so that none
            // always runs first (or last) in a round.
            let count = contenders.len();
            for i in (0..count).map(|k| (k + rep) % count) {
                let Some(c) = contenders.get(i) else { continue };
                let mut cmd = Command::new("unshare");
                cmd.args(["--pid", "--fork", "--mount-proc"])
                    .args(&c.prefix)
                    .args(argv);
                samples[i].push(timed(&mut cmd)?.as_secs_f64() * 1000.0);
            }
        }
        for (c, s) in contenders.iter().zip(samples) {
            self.push(bench, c.name, "ms", s, true, "");
        }
        Ok(())
    }

    fn start_supervised(
        &self,
        services: &[(String, String)],
        tag: &str,
    ) -> Result<Running, String> {
        let dir = self.work.join(tag);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("service")).map_err(|e| e.to_string())?;
        for (name, text) in services {
            std::fs::write(dir.join(format!("service/{name}.service")), text)
                .map_err(|e| e.to_string())?;
        }
        let mut child = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(&self.init)
            .args(["--no-boot", "--config", "/nonexistent", "--service-dir"])
            .arg(dir.join("service"))
            .arg("--control-socket")
            .arg(dir.join("ctl.sock"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("unshare: {e}"))?;
        let stdout = child.stdout.take().ok_or("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let pid = inner_pid(child.id()).ok_or("init did not start")?;
        Ok(Running {
            child,
            pid,
            lines: rx,
        })
    }

    // ---- the benchmarks ----

    fn start_to_exit(&mut self) -> Result<(), String> {
        self.compare(
            "1. start-to-exit: init -- /bin/true",
            &["/bin/true"],
            // Each run is ~3 ms, nearly all of it unshare's namespace and
            // mount: many runs, so that the medians settle within 1%.
            self.reps(150, 10),
        )
    }

    fn reaping(&mut self) -> Result<(), String> {
        let n = if self.quick { 2000 } else { 10000 };
        let script = format!("i=0; while [ $i -lt {n} ]; do (true &); i=$((i+1)); done");
        self.compare(
            &format!("2. reaping: {n} orphans, start to exit"),
            &["sh", "-c", &script],
            // Mostly the kernel's fork and exit, noisy on a shared machine:
            // more runs than the others.
            self.reps(9, 2),
        )
    }

    fn restart_rate(&mut self) -> Result<(), String> {
        let svc = "ExecStart = \"/bin/false\"\nRestart = \"always\"\nRestartSec = 0\nStartLimitIntervalSec = 0\n".to_string();
        let window = Duration::from_secs(if self.quick { 2 } else { 5 });
        let mut rates = Vec::new();
        let mut cpu_per = Vec::new();
        for _ in 0..self.reps(3, 1) {
            let run = self.start_supervised(&[("crash".into(), svc.clone())], "restarts")?;
            run.wait_line("(restart 100)", Duration::from_secs(30))
                .ok_or("no restarts")?;
            let (t0, c0) = (Instant::now(), cpu_seconds(run.pid));
            let mut last = 0u64;
            let deadline = t0 + window;
            let mut first = None;
            while Instant::now() < deadline {
                if let Ok((_, l)) = run.lines.recv_timeout(Duration::from_millis(100)) {
                    if let Some(n) = l
                        .split("(restart ")
                        .nth(1)
                        .and_then(|r| r.trim_end_matches(')').parse::<u64>().ok())
                    {
                        first.get_or_insert(n);
                        last = n;
                    }
                }
            }
            let (elapsed, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds(run.pid) - c0);
            let count = last.saturating_sub(first.unwrap_or(last)) as f64;
            rates.push(count / elapsed);
            if count > 0.0 {
                cpu_per.push(cpu / count * 1e6);
            }
        }
        self.push(
            "3. crash-restart rate (RestartSec=0)",
            "enclave-init",
            "restarts/s",
            rates,
            false,
            "tini and dumb-init do not restart",
        );
        self.push(
            "3. init CPU per restart",
            "enclave-init",
            "us",
            cpu_per,
            true,
            "",
        );
        Ok(())
    }

    fn restart_precision(&mut self) -> Result<(), String> {
        // Init's own lines mark both ends: "main process exited" when it
        // reaps the service, "started (pid N)" once the next exec is done.
        // They travel through the same pipe, so its latency cancels; what
        // is left is the timer's error plus one fork and exec.
        let svc = "ExecStart = \"/bin/false\"\nRestart = \"always\"\nRestartSec = 0.2\nStartLimitIntervalSec = 0\n".to_string();
        let n = self.reps(100, 20);
        let run = self.start_supervised(&[("tick".into(), svc)], "precision")?;
        let mut errors = Vec::new();
        let mut exited: Option<Instant> = None;
        let deadline = Instant::now() + Duration::from_secs(120);
        while errors.len() < n && Instant::now() < deadline {
            let Ok((t, line)) = run.lines.recv_timeout(Duration::from_secs(5)) else {
                break;
            };
            if line.contains("tick: main process exited") {
                exited = Some(t);
            } else if line.contains("tick: started (pid") {
                if let Some(e) = exited.take() {
                    errors.push((t - e).as_secs_f64() * 1000.0 - 200.0);
                }
            }
        }
        drop(run);
        if errors.is_empty() {
            return Err("no restarts seen".into());
        }
        let p99 = percentile(&errors, 0.99);
        self.figures.push(Figure {
            bench: "4. restart-delay error (RestartSec=0.2), p50 and p99".into(),
            contender: "enclave-init".into(),
            unit: "ms".into(),
            median: percentile(&errors, 0.5),
            low: percentile(&errors, 0.1),
            high: p99,
            lower_is_better: true,
            note: format!(
                "p99 {p99:.2} ms over {} restarts; from init's exit line to its next start line",
                errors.len()
            ),
        });
        Ok(())
    }

    /// SIGUSR1 to init until the command's handler writes a byte: what
    /// forwarding costs, for each contender as PID 1 of its namespace, in
    /// rounds that alternate them.
    fn signal_round_trip(&mut self) -> Result<(), String> {
        const CHILD: &str = "import os, signal\nsignal.signal(signal.SIGUSR1, lambda *a: os.write(1, b'x'))\nos.write(1, b'r')\nwhile True:\n    signal.pause()\n";
        let contenders = self.contenders();
        let mut running = Vec::new();
        for c in &contenders {
            let mut child = Command::new("unshare")
                .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
                .args(&c.prefix)
                .args(["python3", "-c", CHILD])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("unshare: {e}"))?;
            let out = child.stdout.take().ok_or("stdout")?;
            let pid = inner_pid(child.id()).ok_or("init did not start")?;
            read_byte(&out, Duration::from_secs(30))
                .ok_or_else(|| format!("{}: the command did not start", c.name))?;
            running.push((child, out, pid));
        }
        let reps = self.reps(300, 30);
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); running.len()];
        for rep in 0..reps {
            let count = running.len();
            for i in (0..count).map(|k| (k + rep) % count) {
                let Some((_, out, pid)) = running.get(i) else {
                    continue;
                };
                let start = Instant::now();
                // SAFETY: kill(2) on the namespace's init this bench started.
                unsafe { libc::kill(*pid as i32, libc::SIGUSR1) };
                read_byte(out, Duration::from_secs(10)).ok_or_else(|| {
                    format!(
                        "{}: the signal did not reach the command",
                        contenders[i].name
                    )
                })?;
                samples[i].push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
        for ((mut child, _, pid), (c, s)) in running.into_iter().zip(contenders.iter().zip(samples))
        {
            // SAFETY: as above; the namespace goes with its init.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
            self.push(
                "11. signal round trip: SIGUSR1 to init, to the command's handler",
                c.name,
                "us",
                s,
                true,
                "",
            );
        }
        Ok(())
    }

    fn idle_wakeups(&mut self) -> Result<(), String> {
        let window = Duration::from_secs(if self.quick { 3 } else { 10 });
        let services: Vec<(String, String)> = (0..10)
            .map(|i| {
                (
                    format!("sleeper{i}"),
                    "ExecStart = \"sleep 100000\"\n".to_string(),
                )
            })
            .collect();
        let run = self.start_supervised(&services, "idle")?;
        for _ in 0..10 {
            run.wait_line(": started (pid", Duration::from_secs(30))
                .ok_or("services did not start")?;
        }
        std::thread::sleep(Duration::from_millis(300));
        let before = switches(run.pid);
        std::thread::sleep(window);
        let per_min = (switches(run.pid) - before) as f64 * 60.0 / window.as_secs_f64();
        self.push(
            "5. idle wakeups (10 sleeping services)",
            "enclave-init",
            "per min",
            vec![per_min],
            true,
            "",
        );
        drop(run);
        for c in self.contenders().into_iter().skip(1) {
            let (mut child, pid) = spawn_peer(&c)?;
            let before = switches(pid);
            std::thread::sleep(window);
            let per_min = (switches(pid) - before) as f64 * 60.0 / window.as_secs_f64();
            let _ = child.kill();
            let _ = child.wait();
            self.push(
                "5. idle wakeups (10 sleeping services)",
                c.name,
                "per min",
                vec![per_min],
                true,
                "one sleeping child",
            );
        }
        Ok(())
    }

    fn memory_and_startup(&mut self) -> Result<(), String> {
        for n in [10usize, 100, 1000] {
            let services: Vec<(String, String)> = (0..n)
                .map(|i| {
                    (
                        format!("s{i:04}"),
                        "ExecStart = \"sleep 100000\"\n".to_string(),
                    )
                })
                .collect();
            // Startup at scale varies with the machine's load: several runs
            // for 1,000; the memory of the last.
            let runs = if n == 1000 { self.reps(3, 1) } else { 1 };
            let mut startups = Vec::new();
            let mut run = None;
            for _ in 0..runs {
                // The previous run ends (dropped) before the next starts.
                drop(run.take());
                let start = Instant::now();
                let this = self.start_supervised(&services, &format!("mem{n}"))?;
                let mut last = start;
                for _ in 0..n {
                    last = this
                        .wait_line(": started (pid", Duration::from_secs(120))
                        .ok_or("services did not start")?;
                }
                startups.push((last - start).as_secs_f64() * 1000.0);
                run = Some(this);
            }
            let run = run.ok_or("no run")?;
            if n == 1000 {
                self.push(
                    "7. startup: 1,000 services running",
                    "enclave-init",
                    "ms",
                    startups,
                    true,
                    "from exec of init",
                );
            }
            std::thread::sleep(Duration::from_millis(300));
            self.push(
                &format!("6. RSS with {n} services"),
                "enclave-init",
                "KiB",
                vec![rss_kib(run.pid) as f64],
                true,
                "",
            );
        }
        for c in self.contenders().into_iter().skip(1) {
            let (mut child, pid) = spawn_peer(&c)?;
            let rss = rss_kib(pid) as f64;
            let _ = child.kill();
            let _ = child.wait();
            self.push(
                "6. RSS with 10 services",
                c.name,
                "KiB",
                vec![rss],
                true,
                "one child (no services)",
            );
        }
        Ok(())
    }

    fn log_throughput(&mut self) -> Result<(), String> {
        let mib: u64 = if self.quick { 64 } else { 1024 };
        let bytes = mib << 20;
        let producer = format!("yes 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' | head -c {bytes}");
        let mut through_init = Vec::new();
        let mut plain = Vec::new();
        for _ in 0..self.reps(3, 1) {
            let svc =
                format!("ExecStart = [\"sh\", \"-c\", \"{producer}\"]\nSuccessAction = \"exit\"\n");
            let dir = self.work.join("logs");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("service")).map_err(|e| e.to_string())?;
            std::fs::write(dir.join("service/talk.service"), svc).map_err(|e| e.to_string())?;
            let t = timed(
                Command::new("unshare")
                    .args(["--pid", "--fork", "--mount-proc"])
                    .arg(&self.init)
                    .args(["--no-boot", "--config", "/nonexistent", "--service-dir"])
                    .arg(dir.join("service"))
                    .arg("--control-socket")
                    .arg(dir.join("ctl.sock")),
            )?;
            through_init.push(mib as f64 / t.as_secs_f64());
            let t =
                timed(Command::new("sh").args(["-c", &format!("{producer} | cat > /dev/null")]))?;
            plain.push(mib as f64 / t.as_secs_f64());
        }
        let note = format!("{mib} MiB of 100-byte lines; init's console is /dev/null");
        self.push(
            "8. log throughput",
            "enclave-init (StandardOutput=log)",
            "MiB/s",
            through_init,
            false,
            &note,
        );
        self.push(
            "8. log throughput",
            "plain pipe into cat",
            "MiB/s",
            plain,
            false,
            &note,
        );
        Ok(())
    }

    fn sizes(&mut self) -> Result<(), String> {
        let size = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.len() as f64 / 1024.0)
                .unwrap_or(0.0)
        };
        let init = size(&self.init);
        let initctl = size(&self.initctl);
        self.push(
            "9. binary size, static + stripped",
            "enclave-init",
            "KiB",
            vec![init],
            true,
            "musl",
        );
        self.push(
            "9. binary size, static + stripped",
            "initctl",
            "KiB",
            vec![initctl],
            true,
            "musl",
        );
        for (name, bin) in [("tini", "tini-static"), ("dumb-init", "dumb-init")] {
            if let Some(p) = assets::which(bin) {
                self.push(
                    "9. binary size, static + stripped",
                    name,
                    "KiB",
                    vec![size(&p)],
                    true,
                    bin,
                );
            }
        }
        Ok(())
    }

    fn boot(&mut self) -> Result<(), String> {
        // The nitro machine: an EIF with AWS's enclave kernel and Nitro's
        // command line, as in production.
        use crate::enclave::{self, Kind};
        let assets = assets::find()?;
        let mut image = enclave::base_image(&assets, Kind::Nitro, &self.init, &self.initctl)
            .service("first", "ExecStart = \"/bin/sh -c 'echo FIRST $(cut -d\\\" \\\" -f1 /proc/uptime); kill -TERM 1'\"\n");
        image.config = Some(enclave::harness_config(&image, None)?);
        let mut to_init = Vec::new();
        let mut init_to_service = Vec::new();
        for _ in 0..self.reps(3, 1) {
            let opts = crate::vm::Options::default();
            let o =
                enclave::boot(&assets, Kind::Nitro, &image, &self.work.join("vm"), &opts)?.outcome;
            let t_init = o
                .lines()
                .find(|l| l.contains("Run /init as init process"))
                .and_then(|l| {
                    l.trim_start_matches('[')
                        .split(']')
                        .next()?
                        .trim()
                        .parse::<f64>()
                        .ok()
                });
            let t_first = o
                .service_output("first")
                .iter()
                .find_map(|l| l.strip_prefix("FIRST ")?.trim().parse::<f64>().ok());
            if let (Some(a), Some(b)) = (t_init, t_first) {
                to_init.push(a * 1000.0);
                init_to_service.push((b - a) * 1000.0);
            }
        }
        self.push(
            "10. boot: kernel start to /init (nitro-enclave machine, TCG)",
            "kernel",
            "ms",
            to_init,
            true,
            "printk time",
        );
        self.push(
            "10. boot: /init to the first service's first instruction (nitro-enclave machine, TCG)",
            "enclave-init",
            "ms",
            init_to_service,
            true,
            "nsm.ko, the NSM's PCRs, the heartbeat and the entropy gate included",
        );
        Ok(())
    }

    /// Runs every benchmark whose name contains one of `only` (all when
    /// `only` is empty).
    pub fn run(&mut self, only: &[String]) -> Result<(), String> {
        type Step = fn(&mut Bench) -> Result<(), String>;
        let steps: [(&str, Step); 11] = [
            ("start-to-exit", Bench::start_to_exit),
            ("reaping", Bench::reaping),
            ("signal round trip", Bench::signal_round_trip),
            ("restart rate", Bench::restart_rate),
            ("restart precision", Bench::restart_precision),
            ("idle wakeups", Bench::idle_wakeups),
            ("memory and startup", Bench::memory_and_startup),
            ("log throughput", Bench::log_throughput),
            ("sizes", Bench::sizes),
            ("boot", Bench::boot),
            ("parent channel", Bench::parent_channel),
        ];
        let chosen: Vec<_> = steps
            .iter()
            .filter(|(name, _)| only.is_empty() || only.iter().any(|o| name.contains(o.as_str())))
            .collect();
        if chosen.is_empty() {
            let names: Vec<&str> = steps.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "no benchmark named {}; they are: {}",
                only.join(", "),
                names.join(", ")
            ));
        }
        for (name, step) in chosen {
            eprintln!("xtask: bench: {name}");
            if let Err(e) = step(self) {
                eprintln!("xtask: bench {name}: {e}");
            }
        }
        Ok(())
    }

    /// The table: each figure, and its ratio to the best peer.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<64} {:<34} {:>10} {:<10} {:>22} {:>8}\n",
            "benchmark", "contender", "median", "unit", "spread (p10..p90)", "vs best"
        ));
        let mut benches: Vec<&str> = Vec::new();
        for f in &self.figures {
            if !benches.contains(&f.bench.as_str()) {
                benches.push(&f.bench);
            }
        }
        for b in benches {
            let group: Vec<&Figure> = self.figures.iter().filter(|f| f.bench == b).collect();
            let peers: Vec<&&Figure> = group
                .iter()
                .filter(|f| {
                    f.contender != "enclave-init" && !f.contender.starts_with("enclave-init")
                })
                .collect();
            let best_peer = if group.first().is_some_and(|f| f.lower_is_better) {
                peers.iter().map(|f| f.median).fold(f64::INFINITY, f64::min)
            } else {
                peers
                    .iter()
                    .map(|f| f.median)
                    .fold(f64::NEG_INFINITY, f64::max)
            };
            for f in group {
                let ratio = if best_peer.is_finite() && best_peer != 0.0 {
                    format!("{:.2}x", f.median / best_peer)
                } else {
                    "-".into()
                };
                out.push_str(&format!(
                    "{:<64} {:<34} {:>10.2} {:<10} {:>10.2}..{:<10.2} {:>8}{}\n",
                    f.bench,
                    f.contender,
                    f.median,
                    f.unit,
                    f.low,
                    f.high,
                    ratio,
                    if f.note.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", f.note)
                    }
                ));
            }
        }
        out
    }

    pub fn json(&self) -> String {
        let figures: Vec<serde_json::Value> = self
            .figures
            .iter()
            .map(|f| {
                serde_json::json!({
                    "bench": f.bench, "contender": f.contender, "unit": f.unit,
                    "median": f.median, "p10": f.low, "p90": f.high,
                    "lower_is_better": f.lower_is_better, "note": f.note,
                })
            })
            .collect();
        serde_json::to_string_pretty(
            &serde_json::json!({ "quick": self.quick, "figures": figures }),
        )
        .unwrap_or_default()
    }

    pub fn write_json(&self) -> Result<PathBuf, String> {
        let path = self.work.join("results.json");
        std::fs::write(&path, self.json()).map_err(|e| e.to_string())?;
        Ok(path)
    }
}

#[path = "bench_parent.rs"]
mod parent;
