//! Starting a service's process (contract §6): the environment, the user,
//! the program's path and the child's hygiene, all resolved in init before
//! fork so that every failure has a precise message and nothing in the
//! child can block init.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::model::spec::{Command, Output, Resource, ServiceSpec};
use crate::sys::{self, Identity};

pub use super::accounts::{
    make_directories, remove_runtime_directories, resolve_identity, User, RUNTIME_BASE, STATE_BASE,
};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a process could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnError {
    pub reason: String,
    /// The shell's convention for `exit` actions: 127 not found, 126 other.
    pub status: i32,
    /// Out of processes or memory: worth retrying.
    pub transient: bool,
}

impl SpawnError {
    pub(super) fn new(reason: String, status: i32) -> Self {
        Self {
            reason,
            status,
            transient: false,
        }
    }
}

/// Where a process's stdout/stderr go.
pub enum Stream {
    Inherit,
    Null,
    Pipe(OwnedFd),
}

/// A process ready to start: everything resolved.
pub struct Launch {
    pub program: PathBuf,
    pub argv: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
    pub identity: Option<Identity>,
    pub limits: Vec<sys::Rlimit>,
    pub stdin_inherit: bool,
    /// `cgroup.procs` of the service's cgroup, joined before exec.
    pub cgroup_procs: Option<PathBuf>,
    /// A session of its own (services), or the terminal's foreground (the
    /// one command on a terminal).
    pub session: sys::Session,
    /// Signals ignored and blocked at exec (the one command's caller's).
    pub signals: sys::InheritedSignals,
    pub umask: Option<u32>,
    /// What the caller should log (a limit lowered to what init may grant).
    pub warnings: Vec<String>,
}

/// A variable of a process's environment: bytes, as the kernel has them.
pub type Var = (OsString, OsString);

/// The environment of a service's process, in systemd's order: the base
/// (`/env` in boot mode, else init's own), the user's `HOME`, `USER`,
/// `LOGNAME`, `SHELL`, then `Environment`, then `EnvironmentFile`s, then
/// `extra` (`NOTIFY_SOCKET`, `MAINPID`). `PATH` gets a default when absent.
/// Values pass through byte for byte.
pub fn environment(
    base: &[Var],
    spec: &ServiceSpec,
    user: Option<&User>,
    extra: &[Var],
) -> Result<Vec<Var>, SpawnError> {
    let mut env: Vec<Var> = Vec::new();
    let mut set = |key: &OsStr, value: &OsStr| match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_os_string(),
        None => env.push((key.to_os_string(), value.to_os_string())),
    };
    for (k, v) in base {
        set(k, v);
    }
    if let Some(u) = user {
        set("HOME".as_ref(), u.home.as_ref());
        set("USER".as_ref(), u.name.as_ref());
        set("LOGNAME".as_ref(), u.name.as_ref());
        set("SHELL".as_ref(), u.shell.as_ref());
    }
    for (key, base, dirs) in [
        ("RUNTIME_DIRECTORY", RUNTIME_BASE, &spec.runtime_directory),
        ("STATE_DIRECTORY", STATE_BASE, &spec.state_directory),
    ] {
        if !dirs.is_empty() {
            let paths: Vec<String> = dirs.iter().map(|d| format!("{base}/{d}")).collect();
            set(key.as_ref(), paths.join(":").as_ref());
        }
    }
    for (k, v) in &spec.environment {
        set(k.as_ref(), v.as_ref());
    }
    for file in &spec.environment_files {
        match crate::host::files::read(&file.path, crate::host::files::MAX) {
            Ok(bytes) => match parse_environment_file(&bytes) {
                Ok(vars) => {
                    for (k, v) in vars {
                        set(&k, &v);
                    }
                }
                Err(e) => {
                    return Err(SpawnError::new(
                        format!("EnvironmentFile {}: {e}", file.path.display()),
                        1,
                    ))
                }
            },
            Err(e) if file.optional && e.is_not_found() => {}
            Err(e) => {
                return Err(SpawnError::new(
                    format!(
                        "EnvironmentFile {}: {}",
                        file.path.display(),
                        read_message(&e)
                    ),
                    1,
                ));
            }
        }
    }
    for (k, v) in extra {
        set(k, v);
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    Ok(env)
}

pub(super) fn read_message(e: &crate::host::files::ReadError) -> String {
    match e {
        crate::host::files::ReadError::Io(e) => io_message(e),
        other => other.to_string(),
    }
}

/// `KEY=VALUE` lines; `#` and `;` comments; optional `export `; values may be
/// quoted. Lines that are not assignments are skipped. Values are bytes;
/// a NUL byte, which no process can get, is an error naming its line.
pub fn parse_environment_file(text: &[u8]) -> Result<Vec<Var>, String> {
    let mut vars = Vec::new();
    for (index, line) in text.split(|b| *b == b'\n').enumerate() {
        if line.contains(&0) {
            return Err(format!("line {}: a NUL byte", index + 1));
        }
        let line = line.trim_ascii();
        if line.is_empty() || line.starts_with(b"#") || line.starts_with(b";") {
            continue;
        }
        let line = line.strip_prefix(b"export ").unwrap_or(line);
        let Some(at) = line.iter().position(|b| *b == b'=') else {
            continue;
        };
        let (key, value) = line.split_at(at);
        let Ok(key) = std::str::from_utf8(key.trim_ascii()) else {
            continue;
        };
        if !crate::model::spec::valid_env_name(key) {
            continue;
        }
        let value = value.get(1..).unwrap_or_default().trim_ascii();
        let value = match (value.first(), value.last()) {
            (Some(q @ (b'"' | b'\'')), Some(e)) if q == e && value.len() >= 2 => {
                value.get(1..value.len() - 1).unwrap_or_default()
            }
            _ => value,
        };
        vars.push((OsString::from(key), OsString::from_vec(value.to_vec())));
    }
    Ok(vars)
}

/// Finds `program` in the `PATH` of `env` (programs with a `/` as they are).
pub fn find_program(program: &OsStr, env: &[Var]) -> Result<PathBuf, SpawnError> {
    if program.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or(OsStr::new(DEFAULT_PATH), |(_, v)| v.as_os_str());
    for dir in path
        .as_bytes()
        .split(|b| *b == b':')
        .filter(|d| !d.is_empty())
    {
        let candidate = Path::new(OsStr::from_bytes(dir)).join(program);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(SpawnError::new(
        format!(
            "exec {}: not found in PATH ({})",
            program.to_string_lossy(),
            path.to_string_lossy()
        ),
        127,
    ))
}

/// The rlimits a process of `spec` gets: its `Limit*` keys, and for
/// descriptors without `LimitNOFILE` the limits init itself was given
/// (`nofile`; init raised its own soft limit, its services keep theirs).
/// Lowers the limits whose hard value is above init's own when init may
/// not raise hard limits (no CAP_SYS_RESOURCE: some sandboxes' root; an
/// enclave's root may): `setrlimit` would fail the start, where the
/// service can run with the most init can give. Each lowering is a
/// warning naming the limit. `current`: init's own (soft, hard).
pub fn clamp_limits(
    limits: Vec<sys::Rlimit>,
    may_raise: bool,
    current: impl Fn(sys::RlimitResource) -> Option<(u64, u64)>,
) -> (Vec<sys::Rlimit>, Vec<String>) {
    if may_raise {
        return (limits, Vec::new());
    }
    let mut warnings = Vec::new();
    let limits = limits
        .into_iter()
        .map(|(resource, soft, hard)| match current(resource) {
            Some((_, ceiling)) if hard > ceiling => {
                warnings.push(format!(
                    "{} hard limit {} is above what init may grant (no CAP_SYS_RESOURCE): using {ceiling}",
                    limit_name(resource),
                    limit_text(hard)
                ));
                (resource, soft.min(ceiling), ceiling)
            }
            _ => (resource, soft, hard),
        })
        .collect();
    (limits, warnings)
}

fn limit_name(resource: sys::RlimitResource) -> &'static str {
    match resource as libc::c_int {
        r if r == libc::RLIMIT_NOFILE as libc::c_int => "LimitNOFILE",
        r if r == libc::RLIMIT_NPROC as libc::c_int => "LimitNPROC",
        r if r == libc::RLIMIT_CORE as libc::c_int => "LimitCORE",
        r if r == libc::RLIMIT_MEMLOCK as libc::c_int => "LimitMEMLOCK",
        _ => "a limit",
    }
}

fn limit_text(v: u64) -> String {
    if v == libc::RLIM_INFINITY {
        "infinity".into()
    } else {
        v.to_string()
    }
}

pub fn rlimits(spec: &ServiceSpec, nofile: Option<(u64, u64)>) -> Vec<sys::Rlimit> {
    let value = |v: u64| {
        if v == u64::MAX {
            libc::RLIM_INFINITY
        } else {
            v
        }
    };
    let mut limits: Vec<sys::Rlimit> = spec
        .limits
        .iter()
        .map(|l| {
            let resource = match l.resource {
                Resource::NoFile => libc::RLIMIT_NOFILE,
                Resource::NProc => libc::RLIMIT_NPROC,
                Resource::Core => libc::RLIMIT_CORE,
                Resource::MemLock => libc::RLIMIT_MEMLOCK,
            };
            (
                resource as sys::RlimitResource,
                value(l.soft),
                value(l.hard),
            )
        })
        .collect();
    if let Some((soft, hard)) = nofile {
        if !spec.limits.iter().any(|l| l.resource == Resource::NoFile) {
            limits.push((libc::RLIMIT_NOFILE as sys::RlimitResource, soft, hard));
        }
    }
    limits
}

/// Prepares the process for `command` of `spec`.
pub fn prepare(
    root: &Path,
    base_env: &[Var],
    spec: &ServiceSpec,
    command: &Command,
    extra_env: &[Var],
    nofile: Option<(u64, u64)>,
) -> Result<Launch, SpawnError> {
    let (identity, user) = if command.privileged {
        (None, None)
    } else {
        resolve_identity(root, spec.user.as_deref(), spec.group.as_deref())?
    };
    let (limits, warnings) = clamp_limits(rlimits(spec, nofile), sys::may_raise_limits(), |r| {
        sys::getrlimit(r).ok()
    });
    let env = environment(base_env, spec, user.as_ref(), extra_env)?;
    let mut argv = if command.expand {
        crate::parse::words::expand(&command.argv, |name| {
            env.iter()
                .find(|(k, _)| k.as_bytes() == name)
                .map(|(_, v)| v.clone())
        })
    } else {
        command.argv.clone()
    };
    let first = argv
        .first()
        .ok_or_else(|| SpawnError::new("empty command".into(), 127))?;
    let program = find_program(first, &env)?;
    if let Some(argv0) = &command.argv0 {
        argv.remove(0);
        argv.insert(0, argv0.clone());
    }
    let cwd = spec
        .working_directory
        .clone()
        .unwrap_or_else(|| PathBuf::from("/"));
    if let Err(e) = std::fs::metadata(&cwd).and_then(|m| {
        if m.is_dir() {
            Ok(())
        } else {
            Err(std::io::Error::from_raw_os_error(libc::ENOTDIR))
        }
    }) {
        return Err(SpawnError::new(
            format!("WorkingDirectory {}: {e}", cwd.display()),
            1,
        ));
    }
    Ok(Launch {
        program,
        argv,
        env,
        cwd,
        identity,
        limits,
        stdin_inherit: spec.inherit_stdin,
        cgroup_procs: None,
        session: sys::Session::New,
        signals: sys::InheritedSignals::default(),
        umask: spec.umask,
        warnings,
    })
}

/// Starts the process. Returns its pid once exec has succeeded; a failed
/// step (exec, chdir, setuid, ...) is reported with its errno, the child
/// already reaped (see [`sys::spawn`]).
pub fn start(launch: Launch, stdout: Stream, stderr: Stream) -> Result<sys::Started, SpawnError> {
    let failed = |what: String, e: &std::io::Error| {
        let errno = e.raw_os_error().unwrap_or(0);
        SpawnError {
            reason: format!("{what}: {}", io_message(e)),
            status: if errno == libc::ENOENT && what.starts_with("exec ") {
                127
            } else {
                126
            },
            // Out of processes, memory or descriptors: the system's state,
            // retried with backoff (lifecycle), not the service's failure.
            transient: matches!(
                errno,
                libc::EAGAIN | libc::ENOMEM | libc::EMFILE | libc::ENFILE
            ),
        }
    };
    let program = launch.program.display().to_string();
    let plan = (|| {
        let stdin = if launch.stdin_inherit {
            None
        } else {
            Some(dev_null(false)?)
        };
        sys::ChildPlan::new(
            &launch.program,
            &launch.argv,
            &launch.env,
            &launch.cwd,
            [stdin, stream_fd(stdout)?, stream_fd(stderr)?],
            launch.identity,
            launch.limits,
            launch.cgroup_procs.as_deref(),
        )
        .map(|plan| {
            plan.with(launch.session, launch.signals)
                .with_umask(launch.umask)
        })
    })()
    .map_err(|e| failed(format!("exec {program}"), &e))?;
    sys::spawn(&plan).map_err(|(step, e)| match step {
        "exec" | "fork" => failed(format!("exec {program}"), &e),
        "chdir" => failed(format!("chdir {}", launch.cwd.display()), &e),
        "tcsetpgrp" => failed("making it the terminal's foreground (tcsetpgrp)".into(), &e),
        step => failed(step.to_string(), &e),
    })
}

/// What a stream becomes in the child (`None`: init's own).
fn stream_fd(stream: Stream) -> std::io::Result<Option<OwnedFd>> {
    match stream {
        Stream::Inherit => Ok(None),
        Stream::Null => dev_null(true).map(Some),
        Stream::Pipe(fd) => Ok(Some(fd)),
    }
}

fn dev_null(write: bool) -> std::io::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")?;
    Ok(OwnedFd::from(file))
}

/// `No such file or directory`, without std's ` (os error 2)`.
pub(super) fn io_message(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text.get(..i).unwrap_or(&text).to_string(),
        None => text,
    }
}

/// The streams a spawn of `spec` needs: a pipe when either is `log`.
pub fn streams(spec: &ServiceSpec) -> std::io::Result<(Stream, Stream, Option<OwnedFd>)> {
    let wants_pipe = spec.stdout == Output::Log || spec.stderr == Output::Log;
    let (read, write) = if wants_pipe {
        let (r, w) = sys::output_pipe()?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let stream = |output: Output, write: &Option<OwnedFd>| -> std::io::Result<Stream> {
        Ok(match (output, write) {
            (Output::Log, Some(w)) => Stream::Pipe(w.try_clone()?),
            (Output::Log, None) | (Output::Null, _) => Stream::Null,
            (Output::Console, _) => Stream::Inherit,
        })
    };
    let out = stream(spec.stdout, &write)?;
    let err = stream(spec.stderr, &write)?;
    Ok((out, err, read))
}

#[cfg(test)]
mod tests {

    #[test]
    fn limits_above_what_init_may_grant_are_lowered_with_a_warning() {
        let nofile = libc::RLIMIT_NOFILE as sys::RlimitResource;
        let core = libc::RLIMIT_CORE as sys::RlimitResource;
        let asked = vec![(nofile, 65535, 65535), (core, 0, 10)];
        let current = |r| Some(if r == nofile { (1024, 20000) } else { (0, 0) });
        let (limits, warnings) = clamp_limits(asked.clone(), true, current);
        assert_eq!(
            (limits, warnings.len()),
            (asked.clone(), 0),
            "with CAP_SYS_RESOURCE"
        );
        let (limits, warnings) = clamp_limits(asked, false, current);
        assert_eq!(limits, [(nofile, 20000, 20000), (core, 0, 0)]);
        assert_eq!(
            warnings,
            [
                "LimitNOFILE hard limit 65535 is above what init may grant (no CAP_SYS_RESOURCE): using 20000",
                "LimitCORE hard limit 10 is above what init may grant (no CAP_SYS_RESOURCE): using 0",
            ]
        );
    }

    use super::*;
    use crate::model::spec::EnvironmentFile;

    fn launch(program: &str, argv: &[&str], cwd: &str) -> Launch {
        Launch {
            program: PathBuf::from(program),
            argv: argv.iter().map(OsString::from).collect(),
            env: pairs(&[("ONLY", "this")]),
            cwd: PathBuf::from(cwd),
            identity: None,
            limits: vec![(libc::RLIMIT_NOFILE as sys::RlimitResource, 64, 64)],
            stdin_inherit: false,
            cgroup_procs: None,
            session: sys::Session::New,
            signals: sys::InheritedSignals::default(),
            umask: None,
            warnings: Vec::new(),
        }
    }

    /// Waits for one child of the test process and returns its exit code.
    fn exit_code(pid: i32) -> i32 {
        let mut status = 0;
        // SAFETY: waitpid on our own child; writes only to `status`.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        libc::WEXITSTATUS(status)
    }

    #[test]
    fn a_started_process_gets_exactly_its_plan() {
        let (read, write) = sys::output_pipe().unwrap();
        // argv[0], $0 and $1, the cwd, the environment, the rlimit.
        let script = "echo \"$(head -c 7 /proc/$$/cmdline)|$0|$1|$(pwd)|$(env | sort | tr '\\n' ' ')|$(ulimit -n)\"; read line; exit 7";
        let pid = start(
            launch("/bin/sh", &["my-name", "-c", script, "zero", "one"], "/tmp"),
            Stream::Pipe(write),
            Stream::Null,
        )
        .unwrap()
        .pid;
        assert_eq!(exit_code(pid), 7, "stdin is /dev/null: read ends at once");
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(read), &mut out).unwrap();
        let fields: Vec<&str> = out.trim_end().split('|').collect();
        assert_eq!(fields[..4], ["my-name", "zero", "one", "/tmp"]);
        // sh adds PWD, SHLVL and _ of its own; nothing of the test's.
        assert!(fields[4].contains("ONLY=this"), "{}", fields[4]);
        assert!(
            !fields[4].contains("CARGO"),
            "the test's environment leaked: {}",
            fields[4]
        );
        assert_eq!(fields[5], "64");
    }

    #[test]
    fn a_failed_step_is_named_and_its_child_reaped() {
        let err = start(
            launch("/nonexistent/app", &["app"], "/"),
            Stream::Null,
            Stream::Null,
        )
        .unwrap_err();
        assert_eq!(
            err.reason,
            "exec /nonexistent/app: No such file or directory"
        );
        assert_eq!((err.status, err.transient), (127, false));
        let err = start(
            launch("/bin/true", &["true"], "/nonexistent-dir"),
            Stream::Null,
            Stream::Null,
        )
        .unwrap_err();
        assert_eq!(
            err.reason,
            "chdir /nonexistent-dir: No such file or directory"
        );
        assert_eq!(err.status, 126);
        let err = start(
            launch("/bin/true", &["tr\0ue"], "/"),
            Stream::Null,
            Stream::Null,
        )
        .unwrap_err();
        assert!(err.reason.contains("NUL"), "{}", err.reason);
        // The children that failed were reaped by `start` (nextest runs
        // each test in a process of its own: no other children here).
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`.
        let ret = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        assert_eq!(
            (ret, std::io::Error::last_os_error().raw_os_error()),
            (-1, Some(libc::ECHILD))
        );
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<Var> {
        list.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn environment_layers_in_order() {
        let dir = std::env::temp_dir().join(format!("ei-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("app.env");
        std::fs::write(
            &file,
            "# comment\nFROM_FILE=1\nB=file\nexport Q=\"quoted value\"\nnot an assignment\n",
        )
        .unwrap();
        let mut spec = ServiceSpec::new("x", vec!["/bin/true".into()]);
        spec.environment = [("A", "svc"), ("B", "svc")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        spec.environment_files = vec![
            EnvironmentFile {
                path: file.clone(),
                optional: false,
            },
            EnvironmentFile {
                path: dir.join("missing"),
                optional: true,
            },
        ];
        let user = User {
            name: "app".into(),
            uid: 1,
            gid: 1,
            home: "/home/app".into(),
            shell: "/bin/sh".into(),
        };
        let env = environment(
            &pairs(&[("A", "base"), ("KEEP", "k"), ("HOME", "/")]),
            &spec,
            Some(&user),
            &pairs(&[("NOTIFY_SOCKET", "/run/n")]),
        )
        .unwrap();
        assert_eq!(
            env,
            pairs(&[
                ("A", "svc"),
                ("KEEP", "k"),
                ("HOME", "/home/app"),
                ("USER", "app"),
                ("LOGNAME", "app"),
                ("SHELL", "/bin/sh"),
                ("B", "file"),
                ("FROM_FILE", "1"),
                ("Q", "quoted value"),
                ("NOTIFY_SOCKET", "/run/n"),
                ("PATH", DEFAULT_PATH),
            ])
        );
        spec.environment_files = vec![EnvironmentFile {
            path: dir.join("missing"),
            optional: false,
        }];
        let err = environment(&[], &spec, None, &[]).unwrap_err();
        assert_eq!(
            err.reason,
            format!(
                "EnvironmentFile {}/missing: No such file or directory",
                dir.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn path_is_kept_when_given() {
        let spec = ServiceSpec::new("x", vec!["/bin/true".into()]);
        let env = environment(&pairs(&[("PATH", "/opt/bin")]), &spec, None, &[]).unwrap();
        assert_eq!(env, pairs(&[("PATH", "/opt/bin")]));
    }

    #[test]
    fn account_files_that_would_block_fail_the_start_at_once() {
        // Before: read_to_string on a FIFO /etc/passwd waited forever, at
        // every start, in init's one loop. Run in a thread with a bound so
        // that a regression fails instead of hanging the suite.
        let root = std::env::temp_dir().join(format!("ei-fifo-users-{}", std::process::id()));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        nix::unistd::mkfifo(
            &root.join("etc/passwd"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let r = root.clone();
        std::thread::spawn(move || {
            let _ = tx.send(resolve_identity(&r, Some("app"), None));
        });
        let result = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("resolving a user blocked on a FIFO /etc/passwd");
        assert_eq!(
            result.unwrap_err().reason,
            format!("{}/etc/passwd: not a regular file (a FIFO)", root.display())
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn users_and_groups_from_the_root() {
        let root = std::env::temp_dir().join(format!("ei-users-{}", std::process::id()));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/ash\nbroken line\n",
        )
        .unwrap();
        std::fs::write(
            root.join("etc/group"),
            "root:x:0:\napp:x:1000:\nwheel:x:10:app,other\naudio:x:29:other\n",
        )
        .unwrap();
        let (id, user) = resolve_identity(&root, Some("app"), None).unwrap();
        assert_eq!(
            id,
            Some(Identity {
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 10]
            })
        );
        assert_eq!(user.unwrap().home, "/home/app");
        let (id, _) = resolve_identity(&root, Some("1000"), Some("audio")).unwrap();
        assert_eq!(
            id,
            Some(Identity {
                uid: 1000,
                gid: 29,
                groups: vec![29, 10]
            })
        );
        let (id, _) = resolve_identity(&root, Some("4242"), None).unwrap();
        assert_eq!(
            id,
            Some(Identity {
                uid: 4242,
                gid: 4242,
                groups: vec![4242]
            })
        );
        let (id, user) = resolve_identity(&root, None, Some("wheel")).unwrap();
        assert_eq!(
            id,
            Some(Identity {
                uid: 0,
                gid: 10,
                groups: vec![10]
            })
        );
        assert!(user.is_none());
        assert_eq!(resolve_identity(&root, None, None).unwrap(), (None, None));
        let err = resolve_identity(&root, Some("nobody"), None).unwrap_err();
        assert_eq!(
            err.reason,
            format!("User nobody: no such user in {}/etc/passwd", root.display())
        );
        let err = resolve_identity(&root, Some("app"), Some("nogroup")).unwrap_err();
        assert_eq!(
            err.reason,
            format!(
                "Group nogroup: no such group in {}/etc/group",
                root.display()
            )
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn programs_are_found_in_path() {
        let env = pairs(&[("PATH", "/nonexistent:/bin:/usr/bin")]);
        let sh = find_program("sh".as_ref(), &env).unwrap();
        assert!(sh.ends_with("sh") && sh.is_absolute());
        assert_eq!(
            find_program("/x/y".as_ref(), &env).unwrap(),
            PathBuf::from("/x/y")
        );
        let err = find_program("no-such-program-here".as_ref(), &env).unwrap_err();
        assert_eq!(
            err.reason,
            "exec no-such-program-here: not found in PATH (/nonexistent:/bin:/usr/bin)"
        );
        assert_eq!(err.status, 127);
    }

    #[test]
    fn environment_file_syntax() {
        assert_eq!(
            parse_environment_file(b"A=1\n ; c\n#c\nB = 'x y'\nC=\"\"\n=bad\nD=a=b\n").unwrap(),
            pairs(&[("A", "1"), ("B", "x y"), ("C", ""), ("D", "a=b")])
        );
        assert_eq!(
            parse_environment_file(b"L=caf\xe9\r\n\xff=x\n").unwrap(),
            [("L".into(), OsString::from_vec(b"caf\xe9".to_vec()))],
            "values are bytes; a name must be text"
        );
        assert_eq!(
            parse_environment_file(b"A=1\nB=x\x00y\n").unwrap_err(),
            "line 2: a NUL byte"
        );
    }
}
