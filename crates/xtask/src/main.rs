//! `cargo xtask`: the project's development tasks.
//!
//! * `setup`: install what the VM harness needs (idempotent).
//! * `test [--no-vm]`: everything CI runs: build, unit and integration
//!   tests, and the end-to-end VM tests.
//! * `demo`: boot the example enclave of `examples/enclave` in QEMU.
//! * `bench [--quick] [NAME...]`: enclave-init beside tini and dumb-init
//!   (every benchmark, or those whose name contains a NAME).
//! * `fuzz [--seconds N] [TARGET...]`: every fuzz target for N seconds.
//! * `vm ROOT|FILE.eif [--machine nitro|pc] [--cmd ARGV] [--env K=V]
//!   [--timeout SECS] [--no-listener]`: boot your own root directory in
//!   the Nitro layout (as an EIF on QEMU's nitro-enclave machine by
//!   default), or an EIF you built.
//! * `eif ROOT -o FILE [--cmd ARGV] [--env K=V]... [--blobs DIR] [--json]`:
//!   build an enclave image file of ROOT with enclave-init as `/init` and
//!   print its PCRs; `eif --describe FILE [--json]`: print an EIF's PCRs.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use xtask::assets::{self, run};
use xtask::eif::{self, Blobs};
use xtask::enclave::{self, Kind};
use xtask::image::Image;
use xtask::vm;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => assets::setup().map(|a| {
            eprintln!(
                "xtask: ready: QEMU {} (nitro-enclave), kernel {}",
                xtask::nitro::QEMU_VERSION,
                a.nitro.bzimage.display()
            )
        }),
        Some("eif") => build_eif(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("demo") => demo(&args[1..]),
        Some("vm") => boot_root(&args[1..]),
        Some("bench") => {
            let only: Vec<String> = args
                .iter()
                .skip(1)
                .filter(|a| *a != "--quick")
                .cloned()
                .collect();
            bench(args.iter().any(|a| a == "--quick"), &only)
        }
        Some("fuzz") => fuzz(&args[1..]),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo xtask <setup | test [--no-vm] | demo [--machine nitro|pc] | bench [--quick] [NAME...] | fuzz [--seconds N] [TARGET...]
       | vm ROOT|FILE.eif [--machine nitro|pc] [--cmd ARGV] [--env K=V] [--timeout SECS] [--no-listener]
       | eif ROOT -o FILE [--cmd ARGV] [--env K=V]... [--blobs DIR] [--json] | eif --describe FILE [--json]>";

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn test(args: &[String]) -> Result<(), String> {
    let no_vm = args.iter().any(|a| a == "--no-vm") || std::env::var_os("EI_SKIP_VM").is_some();
    if !no_vm {
        assets::setup()?;
        assets::static_binaries()?;
    } else if std::env::var_os("EI_SKIP_DEBIAN_UNITS").is_none() {
        assets::install_daemons()?;
    }
    let root = assets::workspace_root();
    // initctl is a binary of a sibling package: the integration tests of
    // enclave-init run it, so build the whole workspace first.
    run(cargo().args(["build", "--workspace"]).current_dir(&root))?;
    let mut tests = if assets::which("cargo-nextest").is_some() {
        let mut c = cargo();
        c.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
        if no_vm {
            // Not run at all rather than run and passed: the summary says
            // how many were skipped.
            c.args(["-E", "not binary(vm)"]);
        }
        c
    } else {
        let mut c = cargo();
        c.args(["test", "--workspace", "--no-fail-fast"]);
        if no_vm {
            c.args(["--exclude", "xtask"]);
        }
        c
    };
    tests.current_dir(&root);
    run(&mut tests)?;
    if no_vm {
        eprintln!(
            "xtask: the VM end-to-end tests (crates/xtask/tests/vm.rs) were skipped (--no-vm or EI_SKIP_VM); CI runs them"
        );
    }
    Ok(())
}

/// The README's main job: the example enclave, watched live.
fn demo(args: &[String]) -> Result<(), String> {
    let kind = match args {
        [] => Kind::Nitro,
        [flag, machine] if flag == "--machine" => Kind::parse(machine)?,
        _ => return Err(USAGE.to_string()),
    };
    let root = assets::workspace_root().join("examples/enclave/rootfs");
    let env = vec![("GREETING".into(), "hello from /env".into())];
    eprintln!(
        "xtask: booting the example enclave ({}, TCG; about a minute)\n",
        machine_name(kind)
    );
    boot_image(
        root,
        kind,
        None,
        env,
        "target/demo",
        vm::Options {
            echo: true,
            // The example image has [parent]: show what its parent sees.
            parent: Some(vm::ParentWatch {
                port: 9001,
                poweroff_after: None,
                echo: true,
            }),
            ..vm::Options::default()
        },
    )
}

fn machine_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Nitro => "an EIF on QEMU's nitro-enclave machine",
        Kind::Pc => "a standard PC with Debian's kernel",
    }
}

/// Builds the Nitro layout of `root` (with busybox, initctl and the real
/// nsm.ko), adapts its config to the harness, boots it and reports.
fn boot_image(
    root: PathBuf,
    kind: Kind,
    cmd: Option<Vec<String>>,
    env: Vec<(String, String)>,
    work: &str,
    opts: vm::Options,
) -> Result<(), String> {
    let assets = assets::setup()?;
    let (init, initctl) = assets::static_binaries()?;
    let mut image = Image {
        rootfs_dir: Some(root),
        cmd,
        env: Some(env),
        ..enclave::base_image(&assets, kind, &init, &initctl)
    };
    image.config = Some(enclave::harness_config(
        &image,
        image.own_config().as_deref(),
    )?);
    let work = assets::workspace_root().join(work);
    let booted = enclave::boot(&assets, kind, &image, &work, &opts)?;
    summarize(&booted)
}

fn summarize(booted: &enclave::Booted) -> Result<(), String> {
    let outcome = &booted.outcome;
    eprintln!();
    eprintln!("xtask: image {}", booted.image.display());
    // On the nitro machine the NSM's PCRs must be the image's.
    let mut pcr_error = None;
    if let Some(m) = &booted.measurements {
        eprint!("{}", m.text());
        match enclave::logged_pcrs(outcome) {
            Some(seen) if seen == m.pcrs().map(str::to_string) => {
                eprintln!("xtask: the NSM's PCR0..2, as init read them, are the image's")
            }
            Some(seen) => {
                pcr_error = Some(format!(
                    "the NSM's PCRs differ from the image's: {}",
                    seen.join(" ")
                ))
            }
            None => pcr_error = Some("init logged no PCRs from the NSM".to_string()),
        }
    }
    if !outcome.parent.is_empty() {
        let states = outcome
            .parent
            .iter()
            .filter(|l| l.contains("\"event\":\"state\""))
            .count();
        eprintln!(
            "xtask: the host heard {} lines on the parent channel ({states} state changes)",
            outcome.parent.len()
        );
        match outcome
            .parent
            .iter()
            .rev()
            .find(|l| l.contains("\"event\":\"end\""))
        {
            Some(end) => eprintln!("xtask: {}", vm::describe_parent_line(end)),
            None => eprintln!("xtask: no end record reached the host"),
        }
    }
    match &outcome.heartbeat {
        Some(hb) => eprintln!(
            "xtask: heartbeat 0x{:02x} received after {:.1}s",
            hb.byte,
            hb.after.as_secs_f64()
        ),
        None => eprintln!("xtask: no heartbeat reached the host"),
    }
    if let Some(e) = pcr_error {
        Err(e)
    } else if outcome.enclave_ended() {
        eprintln!(
            "xtask: the enclave ended cleanly (machine restart) after {:.1}s",
            outcome.elapsed.as_secs_f64()
        );
        Ok(())
    } else if outcome.stopped == Some(vm::Stop::Halted) {
        Err("the machine HALTED instead of restarting: on Nitro the enclave would stay up, holding its CPUs and memory, until the parent killed it".into())
    } else if outcome.stopped == Some(vm::Stop::Panic) {
        Err("the kernel panicked".into())
    } else if outcome.timed_out {
        Err(format!(
            "the enclave was still running after {:.0}s",
            outcome.elapsed.as_secs_f64()
        ))
    } else {
        Err(format!(
            "the enclave did not end cleanly with a machine restart (qemu: {:?})",
            outcome.status
        ))
    }
}

/// `--cmd "a b c"`, `--env K=V`: nitro-cli's `/cmd` and `/env`.
struct Legacy {
    cmd: Option<Vec<String>>,
    env: Vec<(String, String)>,
}

impl Legacy {
    /// Takes `--cmd` or `--env` and its value; whether it was one.
    fn take(
        &mut self,
        flag: &str,
        iter: &mut std::slice::Iter<'_, String>,
    ) -> Result<bool, String> {
        match flag {
            "--cmd" => {
                self.cmd = Some(
                    iter.next()
                        .ok_or("--cmd needs a command")?
                        .split_whitespace()
                        .map(str::to_string)
                        .collect(),
                );
                Ok(true)
            }
            "--env" => {
                let kv = iter.next().ok_or("--env needs KEY=VALUE")?;
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("--env {kv:?}: expected KEY=VALUE"))?;
                if k.is_empty() {
                    return Err(format!("--env {kv:?}: empty name"));
                }
                self.env.push((k.to_string(), v.to_string()));
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Boots a user's root directory as nitro-cli would lay it out, or an EIF.
fn boot_root(args: &[String]) -> Result<(), String> {
    let mut root = None;
    let mut legacy = Legacy {
        cmd: None,
        env: Vec::new(),
    };
    let mut kind = Kind::Nitro;
    let mut timeout = Duration::from_secs(300);
    let mut listener = true;
    let mut iter = args.iter();
    while let Some(a) = iter.next() {
        if legacy.take(a, &mut iter)? {
            continue;
        }
        match a.as_str() {
            "--machine" => kind = Kind::parse(iter.next().ok_or("--machine needs nitro or pc")?)?,
            "--timeout" => {
                timeout = Duration::from_secs(
                    iter.next()
                        .and_then(|t| t.parse().ok())
                        .ok_or("--timeout needs seconds")?,
                )
            }
            "--no-listener" => listener = false,
            other if root.is_none() && !other.starts_with("--") => {
                root = Some(PathBuf::from(other))
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let root = root.ok_or(USAGE)?;
    let opts = vm::Options {
        echo: true,
        timeout,
        listener,
        // An image with [parent] on port 9001: what its parent sees (none
        // without: nothing says it listens).
        parent: Some(vm::ParentWatch {
            port: 9001,
            poweroff_after: None,
            echo: true,
        }),
        ..vm::Options::default()
    };
    if root.extension().is_some_and(|e| e == "eif") {
        if kind != Kind::Nitro || legacy.cmd.is_some() || !legacy.env.is_empty() {
            return Err(
                "an EIF boots as it is, on the nitro machine: no --machine pc, --cmd or --env"
                    .into(),
            );
        }
        let assets = assets::setup()?;
        let work = assets::workspace_root().join("target/vm-run");
        let booted = enclave::boot_eif(&assets, &root, &work, &opts)?;
        return summarize(&booted);
    }
    if !root.is_dir() {
        return Err(format!(
            "{}: not a directory (or an .eif file)",
            root.display()
        ));
    }
    boot_image(root, kind, legacy.cmd, legacy.env, "target/vm-run", opts)
}

/// `cargo xtask eif`: an enclave image file of a root directory, with
/// enclave-init as `/init`, and its PCRs.
fn build_eif(args: &[String]) -> Result<(), String> {
    let mut root = None;
    let mut out = None;
    let mut describe = None;
    let mut blobs_dir = None;
    let mut json = false;
    let mut legacy = Legacy {
        cmd: None,
        env: Vec::new(),
    };
    let mut iter = args.iter();
    while let Some(a) = iter.next() {
        if legacy.take(a, &mut iter)? {
            continue;
        }
        match a.as_str() {
            "-o" | "--output" => out = Some(PathBuf::from(iter.next().ok_or("-o needs a file")?)),
            "--describe" => {
                describe = Some(PathBuf::from(iter.next().ok_or("--describe needs a file")?))
            }
            "--blobs" => {
                blobs_dir = Some(PathBuf::from(
                    iter.next().ok_or("--blobs needs a directory")?,
                ))
            }
            "--json" => json = true,
            other if root.is_none() && !other.starts_with('-') => root = Some(PathBuf::from(other)),
            other => return Err(format!("eif: unknown argument {other:?}\n{USAGE}")),
        }
    }
    let print = |m: &eif::Measurements| {
        if json {
            println!("{}", m.json());
        } else {
            print!("{}", m.text());
        }
    };
    if let Some(file) = describe {
        if root.is_some() || out.is_some() {
            return Err("eif --describe FILE takes no ROOT or -o".into());
        }
        let tool = xtask::nitro::ensure_eif_tool(&mut assets::Apt::default())?;
        print(&eif::describe(&tool, &file)?);
        return Ok(());
    }
    let root = root.ok_or("eif: which root directory? (cargo xtask eif ROOT -o FILE)")?;
    let out = out.ok_or("eif: -o FILE is required")?;
    if !root.is_dir() {
        return Err(format!("{}: not a directory", root.display()));
    }
    let mut apt = assets::Apt::default();
    let tool = xtask::nitro::ensure_eif_tool(&mut apt)?;
    let blobs = match blobs_dir {
        Some(dir) => Blobs::from_dir(&dir)?,
        None => {
            let (kernel, nsm) = xtask::nitro::ensure_kernel(&mut apt)?;
            Blobs {
                kernel,
                nsm,
                cmdline: xtask::nitro::CMDLINE.trim().to_string(),
            }
        }
    };
    let (init, initctl) = assets::static_binaries()?;
    let image = Image {
        init,
        initctl: Some(initctl),
        rootfs_dir: Some(root),
        cmd: legacy.cmd,
        env: Some(legacy.env),
        ..Image::default()
    };
    let m = eif::build(&tool, &blobs, &image, &out)?;
    eprintln!("xtask: wrote {}", out.display());
    print(&m);
    Ok(())
}

fn bench(quick: bool, only: &[String]) -> Result<(), String> {
    assets::setup()?;
    let mut bench = xtask::bench::Bench::new(quick)?;
    bench.run(only)?;
    let table = bench.table();
    println!("{table}");
    let path = bench.write_json()?;
    eprintln!("xtask: results in {}", path.display());
    Ok(())
}

/// The fuzz targets of `fuzz/`, each for a bounded time (CI: briefly; a
/// longer run: `cargo xtask fuzz --seconds 600`). cargo-fuzz needs nightly
/// features: RUSTC_BOOTSTRAP lets the stable toolchain provide them.
const FUZZ_TARGETS: &[&str] = &[
    "service_file",
    "config",
    "legacy",
    "duration",
    "control_protocol",
    "output_lines",
    "command_line",
    "parent_protocol",
];

fn fuzz(args: &[String]) -> Result<(), String> {
    let mut seconds = 60u64;
    let mut targets: Vec<String> = Vec::new();
    let mut iter = args.iter();
    while let Some(a) = iter.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = iter
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--seconds needs a number")?
            }
            t if FUZZ_TARGETS.contains(&t) => targets.push(t.to_string()),
            other => {
                return Err(format!(
                    "unknown fuzz argument {other:?}; targets: {}",
                    FUZZ_TARGETS.join(", ")
                ))
            }
        }
    }
    if targets.is_empty() {
        targets = FUZZ_TARGETS.iter().map(|t| t.to_string()).collect();
    }
    if assets::which("cargo-fuzz").is_none() {
        eprintln!("xtask: cargo install cargo-fuzz (about a minute)");
        run(cargo().args(["install", "--locked", "cargo-fuzz"]))?;
    }
    let dir = assets::workspace_root().join("fuzz");
    let logs = assets::workspace_root().join("target/fuzz-logs");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let mut table = Vec::new();
    for t in &targets {
        eprintln!("xtask: fuzz {t} for {seconds} s");
        // New inputs go to fuzz/corpus/T (not checked in); the checked-in
        // seeds (every request kind, every example service, ...) and the
        // dictionary of the format's words start it off.
        let corpus = dir.join("corpus").join(t);
        std::fs::create_dir_all(&corpus).map_err(|e| e.to_string())?;
        let log_path = logs.join(format!("{t}.log"));
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let mut cmd = cargo();
        cmd.args(["fuzz", "run", t])
            .arg(&corpus)
            .arg(dir.join("seeds").join(t))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-print_final_stats=1");
        let dict = dir.join("dict").join(format!("{t}.dict"));
        if dict.exists() {
            cmd.arg(format!("-dict={}", dict.display()));
        }
        let status = cmd
            .current_dir(&dir)
            .env("RUSTC_BOOTSTRAP", "1")
            .stderr(log)
            .status()
            .map_err(|e| format!("cargo fuzz: {e}"))?;
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if !status.success() {
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!(
                "fuzz {t} failed ({status}); its input is in fuzz/artifacts/{t}/; log {}:\n{}",
                log_path.display(),
                tail.join("\n")
            ));
        }
        let execs = text
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .map_or("?".to_string(), |n| n.trim().to_string());
        let parsed = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("fuzz-stats: "))
            .unwrap_or("?")
            .to_string();
        eprintln!("xtask: fuzz {t}: {execs} executions; {parsed}");
        table.push((t.clone(), execs, parsed));
    }
    eprintln!("\n| target | executions in {seconds} s | inputs that parsed |\n|---|---|---|");
    for (t, execs, parsed) in table {
        eprintln!("| `{t}` | {execs} | {parsed} |");
    }
    Ok(())
}
