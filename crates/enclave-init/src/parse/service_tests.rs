use super::*;

const FILE: &str = "/service/web.service";

fn parse_ok(text: &str) -> ServiceSpec {
    let (result, diags) = parse(Path::new(FILE), "web", text);
    assert!(diags.is_empty(), "{diags:?}");
    result.unwrap()
}

fn errors(text: &str) -> Vec<String> {
    let (result, diags) = parse(Path::new(FILE), "web", text);
    assert!(result.is_err(), "{text} should not load");
    diags.iter().map(ToString::to_string).collect()
}

#[test]
fn defaults_are_systemds() {
    let s = parse_ok("ExecStart = \"/bin/app\"");
    assert_eq!(s, ServiceSpec::new("web", vec!["/bin/app".into()]));
    assert_eq!(s.restart, RestartPolicy::No);
    assert_eq!(s.restart_sec, Duration::from_millis(100));
    assert_eq!(s.start_limit_burst, 5);
    assert_eq!(s.start_limit_interval, Duration::from_secs(10));
    assert_eq!(s.timeout_start, Duration::from_secs(30));
    assert_eq!(s.kill_signal, libc::SIGTERM);
    assert_eq!(s.kill_mode, KillMode::ControlGroup);
    assert_eq!((s.stdout, s.stderr), (Output::Log, Output::Log));
}

#[test]
fn every_key_in_its_valid_forms() {
    let s = parse_ok(
        r#"
ExecStart = "/bin/app --name 'a b'"
ExecStartPre = ["/bin/setup one", "-/bin/optional"]
ExecStop = "/bin/app stop"
Environment = ["A=1", "B=x=y", "EMPTY="]
EnvironmentFile = "-/etc/app.env"
WorkingDirectory = "/srv"
User = "app"
Group = 1000
Type = "notify"
RemainAfterExit = true
TimeoutStartSec = "1min"
Restart = "on-failure"
RestartSec = 0.5
RestartSteps = 4
RestartMaxDelaySec = "8s"
StartLimitBurst = 3
StartLimitIntervalSec = 0
TimeoutStopSec = "2s"
KillSignal = "SIGINT"
KillMode = "mixed"
LimitNOFILE = 4096
LimitNPROC = "100:200"
LimitCORE = "infinity"
LimitMEMLOCK = "0:infinity"
SuccessExitStatus = [3, "SIGUSR1", "42"]
SuccessAction = "exit"
FailureAction = "reboot"
After = ["db.service", "proxy"]
Before = ["late"]
Requires = ["db"]
Wants = ["metrics"]
StandardOutput = "console"
StandardError = "null"
"#,
    );
    assert_eq!(s.exec_start.argv, ["/bin/app", "--name", "a b"]);
    assert_eq!(
        s.exec_start_pre,
        [
            Command {
                argv: vec!["/bin/setup".into(), "one".into()],
                ignore_failure: false,
                ..Default::default()
            },
            Command {
                argv: vec!["/bin/optional".into()],
                ignore_failure: true,
                ..Default::default()
            },
        ]
    );
    assert_eq!(
        s.exec_stop,
        [Command {
            argv: vec!["/bin/app".into(), "stop".into()],
            ignore_failure: false,
            ..Default::default()
        }]
    );
    assert_eq!(
        s.environment,
        [
            ("A".into(), "1".into()),
            ("B".into(), "x=y".into()),
            ("EMPTY".into(), String::new())
        ]
    );
    assert_eq!(
        s.environment_files,
        [EnvironmentFile {
            path: "/etc/app.env".into(),
            optional: true
        }]
    );
    assert_eq!(s.working_directory, Some(PathBuf::from("/srv")));
    assert_eq!(s.user.as_deref(), Some("app"));
    assert_eq!(s.group.as_deref(), Some("1000"));
    assert_eq!(s.service_type, ServiceType::Notify);
    assert!(s.remain_after_exit);
    assert_eq!(s.timeout_start, Duration::from_secs(60));
    assert_eq!(s.restart, RestartPolicy::OnFailure);
    assert_eq!(s.restart_sec, Duration::from_millis(500));
    assert_eq!(s.restart_steps, 4);
    assert_eq!(s.restart_max_delay, Some(Duration::from_secs(8)));
    assert_eq!(s.start_limit_burst, 3);
    assert_eq!(s.start_limit_interval, Duration::ZERO);
    assert_eq!(s.timeout_stop, Some(Duration::from_secs(2)));
    assert_eq!(s.kill_signal, libc::SIGINT);
    assert_eq!(s.kill_mode, KillMode::Mixed);
    assert_eq!(
        s.limits,
        [
            Limit {
                resource: Resource::NoFile,
                soft: 4096,
                hard: 4096
            },
            Limit {
                resource: Resource::NProc,
                soft: 100,
                hard: 200
            },
            Limit {
                resource: Resource::Core,
                soft: u64::MAX,
                hard: u64::MAX
            },
            Limit {
                resource: Resource::MemLock,
                soft: 0,
                hard: u64::MAX
            },
        ]
    );
    assert_eq!(
        s.success_exit_status,
        [
            SuccessStatus::Code(3),
            SuccessStatus::Signal(libc::SIGUSR1),
            SuccessStatus::Code(42)
        ]
    );
    assert_eq!(
        (s.success_action, s.failure_action),
        (EndAction::Exit, EndAction::Reboot)
    );
    assert_eq!(s.after, ["db", "proxy"]);
    assert_eq!(s.before, ["late"]);
    assert_eq!(s.requires, ["db"]);
    assert_eq!(s.wants, ["metrics"]);
    assert_eq!((s.stdout, s.stderr), (Output::Console, Output::Null));
}

#[test]
fn other_valid_forms() {
    let s = parse_ok("ExecStart = [\"/bin/echo\", \"a b\", \"\"]\nEnvironment = \"A=1 'B=two words'\"\nKillSignal = 9\nSuccessExitStatus = \"1 2 TERM\"\nStandardOutput = \"null\"\n");
    assert_eq!(s.exec_start.argv, ["/bin/echo", "a b", ""]);
    assert_eq!(
        s.environment,
        [("A".into(), "1".into()), ("B".into(), "two words".into())]
    );
    assert_eq!(s.kill_signal, libc::SIGKILL);
    assert_eq!(
        s.success_exit_status,
        [
            SuccessStatus::Code(1),
            SuccessStatus::Code(2),
            SuccessStatus::Signal(libc::SIGTERM)
        ]
    );
    // StandardError inherits StandardOutput unless set.
    assert_eq!((s.stdout, s.stderr), (Output::Null, Output::Null));
    let s = parse_ok("ExecStart = \"app\"\nKillSignal = \"HUP\"\nType = \"oneshot\"\nRestart = \"on-failure\"\nUser = 0\n");
    assert_eq!(s.kill_signal, libc::SIGHUP);
    assert_eq!(s.user.as_deref(), Some("0"));
}

#[test]
fn every_bad_value_names_file_line_and_key() {
    let cases: &[(&str, &str)] = &[
        ("ExecStart = 5", "/service/web.service:1: key ExecStart: expected a command string or an array of strings, found integer"),
        ("ExecStart = \"\"", "/service/web.service:1: key ExecStart: empty command"),
        ("ExecStart = []", "/service/web.service:1: key ExecStart: empty command"),
        ("ExecStart = [\"\"]", "/service/web.service:1: key ExecStart: empty program name"),
        ("ExecStart = \"/bin/echo 'oops\"", "/service/web.service:1: key ExecStart: unterminated single quote"),
        ("ExecStart = [\"/bin/a\", 1]", "/service/web.service:1: key ExecStart: element 2: expected a string, found integer"),
        ("ExecStart = \"a\"\nExecStartPre = [\"-\"]", "/service/web.service:2: key ExecStartPre: command 1: empty command"),
        ("ExecStart = \"a\"\nExecStop = [\"x 'y\"]", "/service/web.service:2: key ExecStop: command 1: unterminated single quote"),
        ("ExecStart = \"a\"\nEnvironment = [\"NOEQUALS\"]", "/service/web.service:2: key Environment: expected KEY=VALUE, found \"NOEQUALS\""),
        ("ExecStart = \"a\"\nEnvironment = [\"=x\"]", "/service/web.service:2: key Environment: invalid variable name \"\" in \"=x\""),
        ("ExecStart = \"a\"\nEnvironmentFile = \"env\"", "/service/web.service:2: key EnvironmentFile: path \"env\" is not absolute"),
        ("ExecStart = \"a\"\nWorkingDirectory = \"srv\"", "/service/web.service:2: key WorkingDirectory: path \"srv\" is not absolute"),
        ("ExecStart = \"a\"\nUser = \"a b\"", "/service/web.service:2: key User: invalid name \"a b\""),
        ("ExecStart = \"a\"\nGroup = -1", "/service/web.service:2: key Group: id -1 is out of range"),
        ("ExecStart = \"a\"\nGroup = true", "/service/web.service:2: key Group: expected a name or a number, found boolean"),
        ("ExecStart = \"a\"\nType = \"dbus\"", "/service/web.service:2: key Type: invalid value \"dbus\": expected one of simple, oneshot, notify, forking, exec"),
        ("ExecStart = \"a\"\nRemainAfterExit = \"yes\"", "/service/web.service:2: key RemainAfterExit: expected true or false, found string"),
        ("ExecStart = \"a\"\nTimeoutStartSec = \"x\"", "/service/web.service:2: key TimeoutStartSec: invalid duration \"x\": expected a number at \"x\""),
        ("ExecStart = \"a\"\nRestart = \"sometimes\"", "/service/web.service:2: key Restart: invalid value \"sometimes\": expected one of no, always, on-success, on-failure, on-abnormal, on-abort, on-watchdog"),
        ("ExecStart = \"a\"\nRestartSec = -1", "/service/web.service:2: key RestartSec: invalid duration -1: must not be negative"),
        ("ExecStart = \"a\"\nRestartSteps = -1", "/service/web.service:2: key RestartSteps: -1 is out of range 0..=3000"),
        ("ExecStart = \"a\"\nRestartMaxDelaySec = []", "/service/web.service:2: key RestartMaxDelaySec: expected a duration such as 5, 0.5 or \"1min 30s\", found array"),
        ("ExecStart = \"a\"\nStartLimitBurst = 1.5", "/service/web.service:2: key StartLimitBurst: expected an integer, found float"),
        ("ExecStart = \"a\"\nStartLimitIntervalSec = \"5 lightyears\"", "/service/web.service:2: key StartLimitIntervalSec: invalid duration \"5 lightyears\": unknown unit \"lightyears\""),
        ("ExecStart = \"a\"\nTimeoutStopSec = false", "/service/web.service:2: key TimeoutStopSec: expected a duration such as 5, 0.5 or \"1min 30s\", found boolean"),
        ("ExecStart = \"a\"\nKillSignal = \"SIGFOO\"", "/service/web.service:2: key KillSignal: unknown signal \"SIGFOO\""),
        ("ExecStart = \"a\"\nKillSignal = 99", "/service/web.service:2: key KillSignal: unknown signal 99"),
        ("ExecStart = \"a\"\nKillSignal = \"SIGSTOP\"", "/service/web.service:2: key KillSignal: SIGSTOP cannot stop a service"),
        ("ExecStart = \"a\"\nKillMode = \"none\"", "/service/web.service:2: key KillMode: invalid value \"none\": expected one of control-group, mixed, process"),
        ("ExecStart = \"a\"\nLimitNOFILE = \"lots\"", "/service/web.service:2: key LimitNOFILE: invalid limit \"lots\": expected a number or infinity"),
        ("ExecStart = \"a\"\nLimitNPROC = -5", "/service/web.service:2: key LimitNPROC: invalid limit -5: must not be negative"),
        ("ExecStart = \"a\"\nLimitCORE = \"10:5\"", "/service/web.service:2: key LimitCORE: soft limit 10 is above hard limit 5"),
        ("ExecStart = \"a\"\nLimitMEMLOCK = 1.0", "/service/web.service:2: key LimitMEMLOCK: expected a number, \"infinity\" or \"soft:hard\", found float"),
        ("ExecStart = \"a\"\nSuccessExitStatus = [256]", "/service/web.service:2: key SuccessExitStatus: exit code 256 is out of range 0..=255"),
        ("ExecStart = \"a\"\nSuccessExitStatus = [\"SIGNOPE\"]", "/service/web.service:2: key SuccessExitStatus: \"SIGNOPE\" is neither an exit code nor a signal name"),
        ("ExecStart = \"a\"\nSuccessAction = \"halt\"", "/service/web.service:2: key SuccessAction: invalid value \"halt\": expected one of none, poweroff, reboot, exit"),
        ("ExecStart = \"a\"\nFailureAction = 1", "/service/web.service:2: key FailureAction: expected a string, found integer"),
        ("ExecStart = \"a\"\nAfter = [\"a/b\"]", "/service/web.service:2: key After: invalid service name \"a/b\""),
        ("ExecStart = \"a\"\nRequires = \"web\"", "/service/web.service:2: key Requires: service web cannot depend on itself"),
        ("ExecStart = \"a\"\nWants = [1]", "/service/web.service:2: key Wants: element 1: expected a string, found integer"),
        ("ExecStart = \"a\"\nBefore = [\"\"]", "/service/web.service:2: key Before: invalid service name \"\""),
        ("ExecStart = \"a\"\nStandardOutput = \"syslog\"", "/service/web.service:2: key StandardOutput: invalid value \"syslog\": expected one of log, journal, console, null"),
        ("ExecStart = \"a\"\nStandardError = 2", "/service/web.service:2: key StandardError: expected a string, found integer"),
        ("ExecStart = \"a\"\nType = \"oneshot\"\nRestart = \"always\"", "/service/web.service:3: key Restart: always and on-success are not allowed for Type=oneshot (systemd refuses them too)"),
        ("ExecStart = \"a\"\nRestartSec = 5\nRestartMaxDelaySec = 1", "/service/web.service:3: key RestartMaxDelaySec: must not be shorter than RestartSec"),
        ("ExecStart = [\"/bin/a\", \"x\\u0000y\"]", "/service/web.service:1: key ExecStart: a NUL byte in argument 2: \"x\\0y\""),
        ("ExecStart = \"a\"\nExecStop = [\"stop \\\"x\\u0000\\\"\"]", "/service/web.service:2: key ExecStop: command 1: a NUL byte in argument 2: \"x\\0\""),
        ("ExecStart = \"a\"\nEnvironment = [\"A=x\\u0000\"]", "/service/web.service:2: key Environment: a NUL byte in \"A=x\\0\""),
        ("Restart = \"always\"", "/service/web.service: key ExecStart: missing: every service needs a command"),
        ("", "/service/web.service: empty file: ExecStart is required"),
        ("  \n\n", "/service/web.service: empty file: ExecStart is required"),
    ];
    for (text, want) in cases {
        assert_eq!(errors(text), [want.to_string()], "{text}");
    }
}

#[test]
fn syntax_errors_name_the_line() {
    let errs = errors("ExecStart = \"/bin/a\"\nRestart = always\n");
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("/service/web.service:2: "),
        "{}",
        errs[0]
    );
}

#[test]
fn unknown_keys_warn_with_a_hint_and_still_load() {
    let (result, diags) = parse(
        Path::new(FILE),
        "web",
        "ExecStart = \"/bin/a\"\nRestrat = \"always\"\nFoo = 1\nrestart = \"no\"\n",
    );
    assert!(result.is_ok());
    let texts: Vec<String> = diags.iter().map(ToString::to_string).collect();
    assert_eq!(
        texts,
        [
            "/service/web.service:2: key Restrat: unknown key, ignored (did you mean Restart?)",
            "/service/web.service:3: key Foo: unknown key, ignored",
            "/service/web.service:4: key restart: unknown key, ignored (did you mean Restart?)",
        ]
    );
    assert!(diags
        .iter()
        .all(|d| d.severity == crate::parse::diag::Severity::Warning));
}

#[test]
fn signals_by_name_and_number() {
    assert_eq!(parse_signal("SIGTERM"), Some(libc::SIGTERM));
    assert_eq!(parse_signal("term"), Some(libc::SIGTERM));
    assert_eq!(parse_signal("9"), Some(9));
    assert_eq!(parse_signal("0"), None);
    assert_eq!(parse_signal("SIGWHAT"), None);
    assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
}

#[test]
fn zero_and_infinity_mean_what_systemd_says() {
    // TimeoutStartSec=, TimeoutStopSec=: 0 disables the timeout, as
    // infinity does (systemd.service(5)); before, TimeoutStopSec=0 was
    // "SIGKILL at once".
    for value in ["0", "\"0s\"", "\"infinity\""] {
        let s = parse_ok(&format!(
            "ExecStart = \"a\"\nTimeoutStartSec = {value}\nTimeoutStopSec = {value}"
        ));
        assert_eq!(s.timeout_start, Duration::MAX, "{value}");
        assert_eq!(s.timeout_stop, Some(Duration::MAX), "{value}");
    }
    // RestartSec=0: restart at once; StartLimitIntervalSec=0: no limit
    // (both as in systemd; the lifecycle tests show what follows).
    let s = parse_ok("ExecStart = \"a\"\nRestartSec = 0\nStartLimitIntervalSec = 0");
    assert_eq!(s.restart_sec, Duration::ZERO);
    assert_eq!(s.start_limit_interval, Duration::ZERO);
    let s = parse_ok(
        "ExecStart = \"a\"\nRestartSec = 1\nRestartMaxDelaySec = \"infinity\"\nRestartSteps = 2",
    );
    assert_eq!(s.restart_max_delay, Some(Duration::MAX));
}

#[test]
fn directories_umask_and_pid_file() {
    let s = parse_ok(
        "ExecStart = \"/bin/d\"\nUMask = \"0027\"\nRuntimeDirectory = \"redis other/sub\"\n\
         RuntimeDirectoryMode = 0o2755\nStateDirectory = [\"db\"]\nStateDirectoryMode = \"700\"\nPIDFile = \"d.pid\"\n",
    );
    assert_eq!(s.umask, Some(0o027));
    assert_eq!(s.runtime_directory, ["redis", "other/sub"]);
    assert_eq!(s.runtime_directory_mode, 0o2755);
    assert_eq!(s.state_directory, ["db"]);
    assert_eq!(s.state_directory_mode, 0o700);
    assert_eq!(s.pid_file, Some(std::path::PathBuf::from("/run/d.pid")));
    let s = parse_ok("ExecStart = \"/bin/d\"\nPIDFile = \"/var/run/d.pid\"\n");
    assert_eq!(s.pid_file, Some(std::path::PathBuf::from("/var/run/d.pid")));
    for (text, want) in [
        ("UMask = \"0999\"", "key UMask: invalid mode \"0999\": expected octal digits, at most 777"),
        ("UMask = 1024", "key UMask: invalid mode 2000 (octal): expected octal digits, at most 777"),
        ("RuntimeDirectory = \"/run/x\"", "key RuntimeDirectory: invalid directory \"/run/x\": a relative path without . or .. parts"),
        ("StateDirectory = \"a/../b\"", "key StateDirectory: invalid directory \"a/../b\": a relative path without . or .. parts"),
        ("PIDFile = \"\"", "key PIDFile: invalid path \"\""),
    ] {
        let errs = errors(&format!("ExecStart = \"/bin/d\"\n{text}\n"));
        assert!(errs.iter().any(|e| e.ends_with(want)), "{text}: {errs:#?}");
    }
}
