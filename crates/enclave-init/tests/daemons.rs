//! Existing daemons from their own unit files, with the real binary (issue:
//! real daemons, Debian's unit files, the classic daemon patterns).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{wait_until, Builder};

/// `nobody` of the test machine's `/etc/passwd`: (uid, gid).
fn nobody() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .expect("a nobody user");
    let fields: Vec<&str> = line.split(':').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

#[test]
fn a_unit_file_gets_its_runtime_and_state_directories_and_umask() {
    let tag = format!("ei-dirs-{}", std::process::id());
    let run = Path::new("/run").join(&tag);
    let state = Path::new("/var/lib").join(&tag);
    let unit = format!(
        "[Unit]\nDescription=directories\n\n[Service]\nUser=nobody\nRuntimeDirectory={tag}/sub\n\
         RuntimeDirectoryMode=0750\nStateDirectory={tag}\nUMask=0077\n\
         ExecStart=/bin/sh -c 'echo \"dirs $RUNTIME_DIRECTORY $STATE_DIRECTORY\"; echo \"umask $(umask)\"; \\\n\
           touch $RUNTIME_DIRECTORY/f; stat -c \"file %%a %%U\" $RUNTIME_DIRECTORY/f; exec sleep 1000'\n"
    );
    let init = Builder::new("dirs").service("d", &unit).start();
    init.wait_for(&format!("dirs /run/{tag}/sub /var/lib/{tag}"));
    init.wait_for("umask 0077");
    init.wait_for("file 600 nobody");
    let sub = run.join("sub");
    let meta = std::fs::metadata(&sub).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
    assert_eq!((meta.uid(), meta.gid()), nobody());
    assert_eq!(std::fs::metadata(&state).unwrap().uid(), nobody().0);
    init.wait_socket();
    assert!(init.initctl(&["stop", "d"]).status.success());
    wait_until("the runtime directory removed", || !sub.exists());
    assert!(state.is_dir(), "a state directory is kept");
    let _ = std::fs::remove_dir_all(&run);
    let _ = std::fs::remove_dir_all(&state);
}
