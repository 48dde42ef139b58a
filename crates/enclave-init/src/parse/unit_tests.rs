use std::time::Duration;

use super::*;

fn os(words: &[&str]) -> Vec<OsString> {
    words.iter().map(OsString::from).collect()
}

fn load(name: &str, text: &str) -> (Result<ServiceSpec, ()>, Vec<String>) {
    let (spec, diags) = parse(Path::new("/service/x.service"), name, text);
    (spec, diags.iter().map(ToString::to_string).collect())
}

fn ok(name: &str, text: &str) -> (ServiceSpec, Vec<String>) {
    let (spec, diags) = load(name, text);
    (spec.unwrap_or_else(|()| panic!("{diags:#?}")), diags)
}

#[test]
fn recognises_the_syntax_by_its_first_section() {
    for (text, want) in [
        ("[Unit]\nDescription=x\n", true),
        (
            "# comment\n; another\n\n  [Service]\nExecStart=/bin/true\n",
            true,
        ),
        ("[Install]\n", true),
        ("ExecStart = \"/bin/true\"\n", false),
        ("[service]\n", true),
        ("[Other]\n", true),
        ("", false),
    ] {
        assert_eq!(is_unit_syntax(text), want, "{text:?}");
    }
}

#[test]
fn lexes_systemd_syntax() {
    let text = "# c\n[Unit]\n; c\nDescription = A  b \n[Service]\nExecStart=/bin/echo a \\\n# skipped\n  b \\\n; skipped too\n  c\nEmpty=\nX=a=b\n";
    let got: Vec<(String, String, String, usize)> = lex(text)
        .unwrap()
        .into_iter()
        .map(|a| (a.section, a.key, a.value, a.line))
        .collect();
    let want = [
        ("Unit", "Description", "A  b", 4),
        ("Service", "ExecStart", "/bin/echo a  b  c", 6),
        ("Service", "Empty", "", 11),
        ("Service", "X", "a=b", 12),
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0.as_str(), g.1.as_str(), g.2.as_str(), g.3), w);
    }
}

#[test]
fn lexing_errors_name_the_line() {
    for (text, want) in [
        ("Key=v\n", (1, "an assignment before the first [section]")),
        (
            "[Service]\nnot an assignment\n",
            (2, "expected Key=value, found \"not an assignment\""),
        ),
        ("[Service\n", (1, "invalid section header \"[Service\"")),
        ("[]\n", (1, "invalid section header \"[]\"")),
        ("[Service]\n=v\n", (2, "invalid key \"\"")),
        ("[Service]\nA B=v\n", (2, "invalid key \"A B\"")),
    ] {
        assert_eq!(lex(text), Err((want.0, want.1.to_string())), "{text:?}");
    }
    // A continuation at the end of the file ends the value.
    assert_eq!(lex("[S]\nA=b \\\n").unwrap()[0].value, "b");
}

#[test]
fn splits_command_lines_as_systemd() {
    let cases: &[(&str, &[&str])] = &[
        (
            "/usr/sbin/nginx -g 'daemon on; master_process on;'",
            &["/usr/sbin/nginx", "-g", "daemon on; master_process on;"],
        ),
        (
            r#"echo "a b" 'c "d"' e"f g"h"#,
            &["echo", "a b", "c \"d\"", "ef gh"],
        ),
        (
            r"echo a\tb \x41\101\u00e9 a\sb \\ \; \$",
            &["echo", "a\tb", "AAé", "a b", "\\", ";", "$"],
        ),
        (r#"echo "a\"b" 'c\'d'"#, &["echo", "a\"b", "c'd"]),
        ("echo '' \"\"", &["echo", "", ""]),
        ("  a   b  ", &["a", "b"]),
    ];
    for (text, want) in cases {
        assert_eq!(split(text).unwrap(), *want, "{text}");
    }
    for (text, want) in [
        ("echo 'a", "an unterminated ' quote"),
        ("echo \"a", "an unterminated \" quote"),
        ("echo a\\", "a trailing backslash"),
        ("echo \\q", "invalid escape \\q"),
        ("echo \\x4", "an incomplete escape"),
        ("echo \\x00", "invalid escape \\x00"),
    ] {
        assert_eq!(split(text), Err(want.to_string()), "{text}");
    }
}

fn keep(w: &str) -> Result<String, String> {
    Ok(w.to_string())
}

#[test]
fn reads_the_prefixes_of_command_lines() {
    let c = commands("-/bin/false a", keep).unwrap();
    assert_eq!(c[0].argv, os(&["/bin/false", "a"]));
    assert!(c[0].ignore_failure && c[0].expand && !c[0].privileged);
    let c = commands("@/bin/sh my-shell -c x", keep).unwrap();
    assert_eq!(c[0].argv, os(&["/bin/sh", "-c", "x"]));
    assert_eq!(c[0].argv0, Some("my-shell".into()));
    let c = commands("+:/bin/kill $MAINPID", keep).unwrap();
    assert!(c[0].privileged && !c[0].expand && !c[0].ignore_failure);
    assert!(commands("!!/bin/true", keep).unwrap()[0].argv == os(&["/bin/true"]));
    let c = commands("/bin/a 1 ; -/bin/b 2 ;", keep).unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(c[1].argv, os(&["/bin/b", "2"]));
    assert!(c[1].ignore_failure && !c[0].ignore_failure);
    for (text, want) in [
        ("-", "no program after the prefixes of \"-\""),
        (
            "@/bin/sh",
            "the @ prefix needs the name the program sees as argv[0]",
        ),
        (
            "|echo hi",
            "the | prefix (a shell) is not supported: write sh -c '...'",
        ),
        (";", "empty command"),
    ] {
        assert_eq!(commands(text, keep), Err(want.to_string()), "{text}");
    }
}

#[test]
fn replaces_specifiers() {
    let path = Path::new("/service/pg@15-main.service");
    let name = UnitName::new("pg@15-main");
    let cases = [
        (
            "%n %N %p %i %I",
            "pg@15-main.service pg@15-main pg 15-main 15/main",
        ),
        ("/run/postgresql/%i.pid", "/run/postgresql/15-main.pid"),
        (
            "%t %S %C %L %E %T %V",
            "/run /var/lib /var/cache /var/log /etc /tmp /var/tmp",
        ),
        (
            "%f %j %y %Y",
            "/15/main pg /service/pg@15-main.service /service",
        ),
        ("%u %U %h 100%%", "root 0 /root 100%"),
    ];
    for (text, want) in cases {
        assert_eq!(specifiers(text, &name, path, None).unwrap(), want, "{text}");
    }
    let named = UnitName::new("a\\x2db-c");
    assert_eq!(specifiers("%P %J", &named, path, None).unwrap(), "a-b/c c");
    assert_eq!(
        specifiers("%u", &name, path, Some("redis")).unwrap(),
        "redis"
    );
    assert_eq!(specifiers("%U", &name, path, Some("999")).unwrap(), "999");
    for (text, user, want) in [
        ("%h", Some("redis"), "specifier %h needs the user database"),
        ("%q", None, "specifier %q is not supported here"),
        (
            "50%",
            None,
            "a lone % at the end (write %% for a percent sign)",
        ),
    ] {
        let got = specifiers(text, &name, path, user).unwrap_err();
        assert!(got.starts_with(want), "{text}: {got}");
    }
}

#[test]
fn maps_keys_onto_the_spec() {
    let (s, diags) = ok(
        "web",
        "[Unit]\nDescription=Web\nAfter=network.target db.service cache\nWants=network-online.target\nRequires=db\n\
         [Service]\nType=oneshot\nRemainAfterExit=yes\nExecStartPre=-/bin/check a\nExecStartPre=/bin/check b\n\
         ExecStart=/usr/bin/web --port 80\nExecStop=/bin/stop $MAINPID\nEnvironment=\"A=1 2\" B=3\nEnvironment=C=4\n\
         EnvironmentFile=-/etc/default/web\nTimeoutSec=1h\nRestart=on-failure\nRestartSec=2\nStartLimitBurst=3\n\
         KillMode=mixed\nKillSignal=SIGQUIT\nLimitNOFILE=65535\nSuccessExitStatus=3 SIGUSR1\nSuccessExitStatus=4\n\
         StandardOutput=journal+console\nStandardError=inherit\nUser=www-data\nWorkingDirectory=-/srv\n\
         [Install]\nWantedBy=multi-user.target\nAlias=w.service\n",
    );
    assert_eq!(s.service_type, ServiceType::Oneshot);
    assert!(s.remain_after_exit);
    assert_eq!(s.exec_start.argv, os(&["/usr/bin/web", "--port", "80"]));
    assert!(s.exec_start.expand);
    assert_eq!(s.exec_start_pre.len(), 2);
    assert!(s.exec_start_pre[0].ignore_failure && !s.exec_start_pre[1].ignore_failure);
    assert_eq!(s.exec_stop[0].argv, os(&["/bin/stop", "$MAINPID"]));
    assert_eq!(
        s.environment,
        [("A", "1 2"), ("B", "3"), ("C", "4")].map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert!(s.environment_files[0].optional);
    assert_eq!(s.timeout_start, Duration::from_secs(3600));
    assert_eq!(s.timeout_stop, Some(Duration::from_secs(3600)));
    assert_eq!(s.restart, RestartPolicy::OnFailure);
    assert_eq!(s.start_limit_burst, 3);
    assert_eq!(s.kill_mode, KillMode::Mixed);
    assert_eq!(s.kill_signal, libc::SIGQUIT);
    assert_eq!(
        s.success_exit_status,
        [
            SuccessStatus::Code(3),
            SuccessStatus::Signal(libc::SIGUSR1),
            SuccessStatus::Code(4)
        ]
    );
    assert_eq!((s.stdout, s.stderr), (Output::Log, Output::Log));
    assert_eq!(s.user.as_deref(), Some("www-data"));
    assert_eq!(s.after, ["db", "cache"]);
    assert_eq!(s.requires, ["db"]);
    assert!(s.wants.is_empty());
    assert_eq!(
        diags,
        [
            "/service/x.service:3: key After: network.target ignored: only services exist here (no .target units)",
            "/service/x.service:4: key Wants: network-online.target ignored: only services exist here (no .target units)",
        ]
    );
}

#[test]
fn lists_accumulate_and_an_empty_assignment_resets() {
    let (s, _) = ok(
        "a",
        "[Unit]\nAfter=x\nAfter=\nAfter=y z\n[Service]\nExecStart=/bin/old\nExecStart=\nExecStart=/bin/new\n\
         ExecStartPre=/bin/one\nExecStartPre=\nEnvironment=A=1\nEnvironment=\nEnvironment=B=2\n",
    );
    assert_eq!(s.after, ["y", "z"]);
    assert_eq!(s.exec_start.argv, os(&["/bin/new"]));
    assert!(s.exec_start_pre.is_empty());
    assert_eq!(s.environment, [("B".to_string(), "2".to_string())]);
}

#[test]
fn unsupported_keys_warn_once_and_the_rest_loads() {
    let (s, diags) = ok(
        "r",
        "[Service]\nExecStart=/bin/r\nProtectSystem=strict\nReadWritePaths=-/a\nReadWritePaths=-/b\nRestrat=always\n\
         [Unit]\nConditionPathExists=/x\n[X-Mine]\nAnything=1\n[Socket]\nListenStream=80\nListenStream=81\n",
    );
    assert_eq!(s.exec_start.argv, os(&["/bin/r"]));
    assert_eq!(
        diags,
        [
            "/service/x.service:3: key ProtectSystem: not supported by enclave-init, ignored",
            "/service/x.service:4: key ReadWritePaths: not supported by enclave-init, ignored",
            "/service/x.service:6: key Restrat: not supported by enclave-init, ignored (did you mean Restart?)",
            "/service/x.service:8: key ConditionPathExists: not supported by enclave-init, ignored",
            "/service/x.service:12: key ListenStream: section [Socket] is not read here, key ignored",
        ]
    );
}

#[test]
fn bad_values_name_file_line_and_key_and_keep_the_file_out() {
    for (text, want) in [
        ("[Service]\nExecStart=/bin/a\nRemainAfterExit=maybe\n", "/service/x.service:3: key RemainAfterExit: expected a boolean (yes/no, true/false, on/off, 1/0), found \"maybe\""),
        ("[Service]\nExecStart=/bin/a\nRestart=sometimes\n", "/service/x.service:3: key Restart: "),
        ("[Service]\nExecStart=/bin/a 'b\n", "/service/x.service:2: key ExecStart: an unterminated ' quote"),
        ("[Service]\nExecStart=/bin/a ; /bin/b\n", "/service/x.service:2: key ExecStart: 2 command lines"),
        ("[Service]\nExecStart=/bin/a %q\n", "/service/x.service:2: key ExecStart: specifier %q is not supported here"),
        ("[Service]\nStartLimitBurst=many\nExecStart=/bin/a\n", "/service/x.service:2: key StartLimitBurst: expected a number, found \"many\""),
        ("[Service]\nType=simple\n", "/service/x.service: key ExecStart: missing: every service needs a command"),
        ("[Service]\nExecStart=/bin/a\nExecStart=\n", "/service/x.service:3: key ExecStart: missing: every service needs a command"),
        ("[Service]\nExecStart=/bin/a\n[Unit]\nAfter=x.service\n", "/service/x.service:4: key After: service x cannot depend on itself"),
        ("[Service]\nExecStart\n", "/service/x.service:2: expected Key=value, found \"ExecStart\""),
    ] {
        let (spec, diags) = load("x", text);
        assert!(spec.is_err(), "{text:?} loaded");
        assert!(diags.iter().any(|d| d.starts_with(want)), "{text:?}: want {want:?} in {diags:#?}");
    }
}

#[test]
fn an_instance_gets_its_specifiers_and_a_template_is_not_a_service() {
    let template = "[Unit]\nDescription=Cluster %i\n[Service]\nExecStart=-/usr/bin/ctl %i start\nEnvironment=DIR=/etc/pg/%I\n";
    let (s, _) = ok("pg@15-main", template);
    assert_eq!(s.name, "pg@15-main");
    assert_eq!(s.exec_start.argv, os(&["/usr/bin/ctl", "15-main", "start"]));
    assert!(s.exec_start.ignore_failure);
    assert_eq!(
        s.environment,
        [("DIR".to_string(), "/etc/pg/15/main".to_string())]
    );
    let (spec, diags) = load("pg@", template);
    assert!(spec.is_err());
    assert!(
        diags[0].contains("a template (name@.service) is not a service"),
        "{diags:?}"
    );
}

#[test]
fn the_toml_reader_sees_toml_files_and_this_one_unit_files() {
    let (s, _) = crate::parse::service::parse(
        Path::new("/s/a.service"),
        "a",
        "[Service]\nExecStart=/bin/echo 'a b'\n",
    );
    assert_eq!(s.unwrap().exec_start.argv, os(&["/bin/echo", "a b"]));
    let (s, _) = crate::parse::service::parse(
        Path::new("/s/a.service"),
        "a",
        "ExecStart = \"/bin/echo\"\n",
    );
    assert!(
        !s.unwrap().exec_start.expand,
        "TOML command lines are never expanded"
    );
}

// ---- review findings ----

#[test]
fn review8_only_a_bare_semicolon_separates_commands() {
    let c = commands(r"/usr/bin/find /var/tmp -name x -exec rm {} \;", keep).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(
        c[0].argv,
        os(&[
            "/usr/bin/find",
            "/var/tmp",
            "-name",
            "x",
            "-exec",
            "rm",
            "{}",
            ";"
        ])
    );
    let c = commands(r#"/bin/echo ";" ';' a ; /bin/true"#, keep).unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].argv, os(&["/bin/echo", ";", ";", "a"]));
}

#[test]
fn review13_specifiers_are_replaced_after_the_split() {
    // An instance holding quotes or spaces stays one word, as in systemd.
    let (s, _) = ok(
        "q@a\\x20b",
        "[Service]\nExecStart=/bin/echo %i %I\nExecStartPre=/bin/echo \"%i\"\n",
    );
    assert_eq!(s.exec_start.argv, os(&["/bin/echo", "a\\x20b", "a b"]));
    assert_eq!(s.exec_start_pre[0].argv, os(&["/bin/echo", "a\\x20b"]));
}

#[test]
fn review15_long_continuations_and_many_unknown_keys_read_in_linear_time() {
    // 200,000 continuation lines and 100,000 distinct unknown keys: each
    // would take minutes if every step copied or scanned all before it.
    let mut text = String::from("[Service]\nExecStart=/bin/true\nEnvironment=A=1 \\\n");
    text.push_str(&"\\\n".repeat(200_000));
    text.push_str("B=2\n");
    for i in 0..100_000 {
        text.push_str(&format!("X{i}=1\n"));
    }
    let (s, diags) = load("big", &text);
    let s = s.unwrap();
    assert_eq!(s.environment.len(), 2);
    assert_eq!(diags.len(), 100_000);
}

// ---- a new user's findings ----

#[test]
fn every_mistake_of_a_file_is_reported_in_one_pass() {
    let (spec, diags) = load(
        "x",
        "[Service]\nExecStart=/bin/a\nNotARealKey\nEnvironment=NOEQUALS\nLimitNOFILE=lots\n",
    );
    assert!(spec.is_err());
    for want in [
        "/service/x.service:3: expected Key=value, found \"NotARealKey\"",
        "/service/x.service:4: key Environment: ",
        "/service/x.service:5: key LimitNOFILE: ",
    ] {
        assert!(
            diags.iter().any(|d| d.starts_with(want)),
            "{want}: {diags:#?}"
        );
    }
}

#[test]
fn a_misspelt_section_is_named_with_a_hint() {
    let (spec, diags) = load("x", "[Servce]\nExecStart=/bin/a\n");
    assert!(spec.is_err());
    assert!(
        diags.iter().any(|d| d
            == "/service/x.service:2: key ExecStart: section [Servce] is not read here, key ignored (did you mean [Service]?)"),
        "{diags:#?}"
    );
    let (_, diags) = load("x", "[Service\nExecStart=/bin/a\n");
    assert!(
        diags
            .iter()
            .any(|d| d == "/service/x.service:1: invalid section header \"[Service\""),
        "{diags:#?}"
    );
}
