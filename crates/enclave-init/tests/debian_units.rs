//! Debian's own unit files, copied unchanged into the service directory,
//! run by the real binary as PID 1 of a PID namespace (issue: real
//! daemons). `cargo xtask setup` installs the packages (redis-server,
//! nginx-light, postgresql-15) with their services kept from starting;
//! these tests fail, saying so, when they are missing, unless
//! `EI_SKIP_DEBIAN_UNITS=1`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{wait_until, Builder};

/// The unit file as the package installed it, or `None` to skip.
fn unit_file(name: &str, package: &str) -> Option<String> {
    let path = Path::new("/lib/systemd/system").join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(_) if std::env::var_os("EI_SKIP_DEBIAN_UNITS").is_some() => None,
        Err(e) => panic!(
            "{}: {e}: install Debian's {package} (cargo xtask setup does), or set EI_SKIP_DEBIAN_UNITS=1",
            path.display()
        ),
    }
}

/// One request to `port` on localhost and the whole answer, or the error.
fn ask(port: u16, request: &[u8]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request)?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                // Redis answers without closing: one reply is enough.
                if answer.ends_with(b"\r\n") && !answer.starts_with(b"HTTP") {
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn redis(command: &str) -> String {
    ask(6379, format!("{command}\r\n").as_bytes()).unwrap_or_else(|e| panic!("redis: {e}"))
}

#[test]
fn debian_redis_server_unit_runs_unchanged_and_saves_on_stop() {
    let Some(unit) = unit_file("redis-server.service", "redis-server") else {
        return;
    };
    let init = Builder::new("redis").service("redis-server", &unit).start();
    // Type=notify: ready once redis says READY=1.
    init.wait_for("redis-server: ready");
    init.wait_socket();
    let status = init.status("redis-server");
    assert_eq!(status["state"], "running");
    let run = Path::new("/run/redis");
    assert!(run.is_dir(), "RuntimeDirectory=redis");
    let key = format!("ei-{}", std::process::id());
    assert_eq!(redis(&format!("SET {key} kept")), "+OK\r\n");
    // A stop is SIGTERM (TimeoutStopSec=0: no SIGKILL clock): redis saves.
    assert!(init.initctl(&["stop", "redis-server"]).status.success());
    init.wait_for("redis-server: stopped");
    assert!(!run.exists(), "the runtime directory goes with the service");
    assert!(
        ask(6379, b"PING\r\n").is_err(),
        "nothing listens after a stop"
    );
    // Started again, it has what it saved.
    let out = init.initctl(&["start", "redis-server"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(redis(&format!("GET {key}")), "$4\r\nkept\r\n");
    assert_eq!(redis(&format!("DEL {key}")), ":1\r\n");
    // Re-reading the files with the unit unchanged changes nothing.
    let out = init.initctl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(init.status("redis-server")["state"], "running");
    assert!(init.initctl(&["stop", "redis-server"]).status.success());
}

#[test]
fn debian_nginx_unit_forks_reloads_and_stops_unchanged() {
    let Some(unit) = unit_file("nginx.service", "nginx-light") else {
        return;
    };
    let init = Builder::new("nginx").service("nginx", &unit).start();
    // Type=forking, PIDFile=/run/nginx.pid: the master, not the start command.
    init.wait_for("nginx: main process ");
    init.wait_socket();
    let status = init.status("nginx");
    assert_eq!(status["state"], "running");
    let master = status["pid"].as_i64().unwrap();
    assert_ne!(
        init.line_with("nginx: started (pid "),
        format!("nginx: started (pid {master})")
    );
    let get = || ask(80, b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n");
    assert!(get().unwrap().starts_with("HTTP/1.1 200"), "nginx serves");
    // ExecReload (nginx -s reload): the master stays, the service too.
    let out = init.initctl(&["reload", "nginx"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(init.status("nginx")["pid"].as_i64(), Some(master));
    assert!(get().unwrap().starts_with("HTTP/1.1 200"));
    // ExecStop (start-stop-daemon --retry QUIT/5): stopped for real.
    assert!(init.initctl(&["stop", "nginx"]).status.success());
    wait_until("nothing serves", || get().is_err());
    // And a start gives one nginx again, not "Address already in use".
    let out = init.initctl(&["start", "nginx"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(get().unwrap().starts_with("HTTP/1.1 200"));
    assert!(init.initctl(&["stop", "nginx"]).status.success());
}

/// `psql` as the postgres user; its output, or its error.
fn psql(sql: &str) -> Result<String, String> {
    let out = std::process::Command::new("runuser")
        .args(["-u", "postgres", "--", "psql", "-XAtq", "-c", sql])
        .current_dir("/")
        .output()
        .map_err(|e| format!("runuser: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn debian_postgresql_template_runs_unchanged_as_instance_15_main() {
    let Some(template) = unit_file("postgresql@.service", "postgresql-15") else {
        return;
    };
    // The template as shipped, and its instance as `systemctl enable`
    // makes it: a link.
    let b = Builder::new("postgres").service("postgresql@", &template);
    let link = b.dir().join("service/postgresql@15-main.service");
    std::os::unix::fs::symlink("postgresql@.service", &link).unwrap();
    let init = b.start();
    // Type=forking through pg_ctlcluster; PIDFile=/run/postgresql/%i.pid.
    init.wait_for("postgresql@15-main: main process ");
    init.wait_socket();
    let status = init.status("postgresql@15-main");
    assert_eq!(status["state"], "running");
    let pid_file = std::fs::read_to_string("/run/postgresql/15-main.pid").unwrap();
    assert_eq!(
        pid_file.lines().next().unwrap().trim(),
        status["pid"].to_string(),
        "the postmaster is the main process"
    );
    let table = format!("ei_{}", std::process::id());
    psql(&format!(
        "CREATE TABLE {table} (v text); INSERT INTO {table} VALUES ('kept')"
    ))
    .unwrap();
    // ExecReload (pg_ctlcluster reload), then a stop (-m fast) and a start.
    let out = init.initctl(&["reload", "postgresql@15-main"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(init
        .initctl(&["stop", "postgresql@15-main"])
        .status
        .success());
    assert!(psql("SELECT 1").is_err(), "stopped for real");
    let out = init.initctl(&["start", "postgresql@15-main"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(psql(&format!("SELECT v FROM {table}")).unwrap(), "kept");
    psql(&format!("DROP TABLE {table}")).unwrap();
    assert!(init
        .initctl(&["stop", "postgresql@15-main"])
        .status
        .success());
}
