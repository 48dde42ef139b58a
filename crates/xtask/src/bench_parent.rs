//! Benchmark 12: the parent channel. enclave-init built with the test hooks
//! (`assets::hooked_init`: the parent channel on a Unix socket, since this
//! machine has no vsock loopback), as PID 1 of a PID namespace.
//!
//! * Lines per second a `logs --follow` client receives of a service that
//!   prints 100-byte lines as fast as it can, and how many init dropped for
//!   it (a client that does not keep up is told, never waited for).
//! * What a follower costs: the CPU time of init and its service for the
//!   same lines, without and with one.
//! * `initctl list` while a parent stalls (asks for `events` and never
//!   reads) during a crash loop, against the same without it: p50, p99.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{percentile, Bench};
use crate::assets;

const NAME_RATE: &str = "12. parent channel: lines delivered to a logs --follow client";
const NAME_COST: &str = "12. parent channel: init + service CPU per 100,000 lines";
const NAME_LIST: &str = "12. parent channel: initctl list while a parent stalls, p50 / p99";

/// Children's CPU time so far (user + system), of this process's waited-for
/// descendants.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills a local.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a local.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

struct Run {
    child: Child,
    socket: PathBuf,
}

impl Run {
    fn start(
        init: &Path,
        dir: &Path,
        services: &[(&str, String)],
        config: &str,
    ) -> Result<Self, String> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("service")).map_err(|e| e.to_string())?;
        for (name, text) in services {
            std::fs::write(dir.join(format!("service/{name}.service")), text)
                .map_err(|e| e.to_string())?;
        }
        std::fs::write(dir.join("config.toml"), config).map_err(|e| e.to_string())?;
        let socket = dir.join("parent.sock");
        let child = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(init)
            .arg("--no-boot")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .arg("--service-dir")
            .arg(dir.join("service"))
            .arg("--control-socket")
            .arg(dir.join("ctl.sock"))
            .env("ENCLAVE_INIT_TEST_PARENT_SOCKET", &socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("unshare: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(socket.exists() && dir.join("ctl.sock").exists()) {
            if Instant::now() > deadline {
                return Err("init did not open its sockets".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Self { child, socket })
    }

    fn connect(&self, request: &str) -> Result<UnixStream, String> {
        let mut s = UnixStream::connect(&self.socket).map_err(|e| e.to_string())?;
        s.write_all(format!("{request}\n").as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(s)
    }

    fn wait(mut self) -> Result<(), String> {
        let status = self.child.wait().map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("init: {status}"))
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bench {
    pub(super) fn parent_channel(&mut self) -> Result<(), String> {
        let init = assets::hooked_init()?;
        let lines: u64 = if self.quick { 200_000 } else { 1_000_000 };
        let dir = self.work.join("parent");
        let go = dir.join("go");
        // The producer waits for `go`: the follower is connected by then.
        let producer = format!(
            "ExecStart = [\"sh\", \"-c\", \"while [ ! -e {} ]; do sleep 0.01; done; yes 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' | head -n {lines}\"]\nSuccessAction = \"exit\"\n",
            go.display()
        );
        let config = "[parent]\nlogs = [\"talk\"]\n[log]\nbuffer = \"1MiB\"\n";
        let (mut rates, mut drops, mut with, mut without) = (vec![], vec![], vec![], vec![]);
        for _ in 0..self.reps(3, 1) {
            for follow in [false, true] {
                let run = Run::start(&init, &dir, &[("talk", producer.clone())], config)?;
                let cpu0 = children_cpu();
                let reader = if follow {
                    let s = run.connect(
                        "{\"version\":1,\"command\":\"logs\",\"name\":\"talk\",\"follow\":true}",
                    )?;
                    Some(std::thread::spawn(move || {
                        let (mut got, mut dropped, mut first, mut last) = (0u64, 0u64, None, None);
                        for line in BufReader::new(s).lines().map_while(Result::ok) {
                            if line.starts_with("{\"reply\":\"line\"") {
                                got += 1;
                                let now = Instant::now();
                                first.get_or_insert(now);
                                last = Some(now);
                            } else if let Some(n) = line
                                .split("\"count\":")
                                .nth(1)
                                .and_then(|r| r.trim_end_matches(['}', ' ']).parse::<u64>().ok())
                            {
                                dropped += n;
                            }
                        }
                        let span = match (first, last) {
                            (Some(a), Some(b)) => b - a,
                            _ => Duration::ZERO,
                        };
                        (got, dropped, span)
                    }))
                } else {
                    None
                };
                std::fs::write(&go, "").map_err(|e| e.to_string())?;
                run.wait()?;
                let cpu = (children_cpu() - cpu0).as_secs_f64() * 1000.0 * 100_000.0 / lines as f64;
                if let Some(reader) = reader {
                    let (got, dropped, span) = reader.join().map_err(|_| "reader panicked")?;
                    rates.push(got as f64 / span.as_secs_f64().max(1e-6));
                    drops.push(dropped as f64);
                    with.push(cpu);
                } else {
                    without.push(cpu);
                }
                let _ = std::fs::remove_file(&go);
            }
        }
        let dropped = percentile(&drops, 0.5);
        self.push(
            NAME_RATE,
            "enclave-init",
            "lines/s",
            rates,
            false,
            &format!(
                "{lines} lines of 100 bytes; median {dropped:.0} dropped (told to the client)"
            ),
        );
        self.push(NAME_COST, "without a follower", "ms", without, true, "");
        self.push(
            NAME_COST,
            "with a logs --follow client",
            "ms",
            with,
            true,
            "",
        );
        self.stalled_parent(&init)
    }

    /// `initctl list` latency during a crash loop, with and without a
    /// parent that asked for `events` and reads nothing.
    fn stalled_parent(&mut self, init: &Path) -> Result<(), String> {
        let crash = "ExecStart = \"false\"\nRestart = \"always\"\nRestartSec = 0\nStartLimitIntervalSec = 0\n";
        let n = self.reps(300, 100);
        for stalled in [false, true] {
            let dir = self
                .work
                .join(if stalled { "stalled" } else { "unstalled" });
            let run = Run::start(init, &dir, &[("crash", crash.to_string())], "[parent]\n")?;
            let _parent = if stalled {
                Some(run.connect("{\"version\":1,\"command\":\"events\"}")?)
            } else {
                None
            };
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let ok = Command::new(&self.initctl)
                    .arg("--socket")
                    .arg(dir.join("ctl.sock"))
                    .arg("list")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map_err(|e| e.to_string())?
                    .success();
                if !ok {
                    return Err("initctl list failed".into());
                }
                samples.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
            self.push(
                NAME_LIST,
                if stalled {
                    "a parent stalls on events"
                } else {
                    "no parent"
                },
                "ms",
                vec![p50],
                true,
                &format!("p99 {p99:.2} ms; {n} calls during a crash loop (RestartSec=0)"),
            );
            drop(run);
        }
        Ok(())
    }
}
