//! Users, groups and the directories made for them: `User=`/`Group=`
//! resolved against the image's `/etc/passwd` and `/etc/group`, and
//! `RuntimeDirectory=`/`StateDirectory=` made before a start (owned by
//! them) and removed after.

use std::path::Path;

use super::spawn::{io_message, read_message, SpawnError};
use crate::model::spec::ServiceSpec;
use crate::sys::Identity;

/// A line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = User> + '_ {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        match f.as_slice() {
            [name, _, uid, gid, _, home, shell, ..] => Some(User {
                name: name.to_string(),
                uid: uid.parse().ok()?,
                gid: gid.parse().ok()?,
                home: home.to_string(),
                shell: shell.to_string(),
            }),
            _ => None,
        }
    })
}

/// (name, gid, members) of each `/etc/group` line.
fn group_entries(text: &str) -> impl Iterator<Item = (String, u32, Vec<String>)> + '_ {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        match f.as_slice() {
            [name, _, gid, members, ..] => Some((
                name.to_string(),
                gid.parse().ok()?,
                members
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            )),
            _ => None,
        }
    })
}

/// `/etc/passwd` or `/etc/group`, read at each start: bounded and never
/// blocking like every file init reads. A missing file is empty (numbers
/// then stand for themselves); one that cannot be read fails the start.
fn account_file(path: &Path) -> Result<String, SpawnError> {
    match crate::host::files::read(path, crate::host::files::MAX) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.is_not_found() => Ok(String::new()),
        Err(e) => Err(SpawnError::new(
            format!("{}: {}", path.display(), read_message(&e)),
            1,
        )),
    }
}

/// Resolves `User`/`Group` against the passwd and group files of `root`.
/// A number not in the files is used as is (its group: the same number).
pub fn resolve_identity(
    root: &Path,
    user: Option<&str>,
    group: Option<&str>,
) -> Result<(Option<Identity>, Option<User>), SpawnError> {
    if user.is_none() && group.is_none() {
        return Ok((None, None));
    }
    let (passwd_path, group_path) = (root.join("etc/passwd"), root.join("etc/group"));
    let passwd = account_file(&passwd_path)?;
    let groups = account_file(&group_path)?;
    let user_entry = match user {
        None => None,
        Some(u) => match passwd_entries(&passwd).find(|e| e.name == u || e.uid.to_string() == u) {
            Some(e) => Some(e),
            None => match u.parse::<u32>() {
                Ok(uid) => Some(User {
                    name: u.to_string(),
                    uid,
                    gid: uid,
                    home: "/".into(),
                    shell: "/bin/sh".into(),
                }),
                Err(_) => {
                    return Err(SpawnError::new(
                        format!("User {u}: no such user in {}", passwd_path.display()),
                        1,
                    ))
                }
            },
        },
    };
    let gid = match group {
        Some(g) => {
            match group_entries(&groups).find(|(name, gid, _)| name == g || gid.to_string() == g) {
                Some((_, gid, _)) => gid,
                None => g.parse::<u32>().map_err(|_| {
                    SpawnError::new(
                        format!("Group {g}: no such group in {}", group_path.display()),
                        1,
                    )
                })?,
            }
        }
        None => user_entry.as_ref().map_or(0, |u| u.gid),
    };
    let uid = user_entry.as_ref().map_or(0, |u| u.uid);
    let mut supplementary = vec![gid];
    if let Some(u) = &user_entry {
        for (_, g, members) in group_entries(&groups) {
            if members.contains(&u.name) && !supplementary.contains(&g) {
                supplementary.push(g);
            }
        }
    }
    Ok((
        Some(Identity {
            uid,
            gid,
            groups: supplementary,
        }),
        user_entry,
    ))
}

/// Where `RuntimeDirectory=` and `StateDirectory=` entries live.
pub const RUNTIME_BASE: &str = "/run";
pub const STATE_BASE: &str = "/var/lib";

/// Makes the service's `RuntimeDirectory=` and `StateDirectory=` entries
/// that do not exist (and their parents), owned by `User`/`Group` with
/// their mode, as systemd does before a start. An existing one gets its
/// owner and mode again. A symbolic link on the way is an error.
pub fn make_directories(root: &Path, spec: &ServiceSpec) -> Result<(), SpawnError> {
    if spec.runtime_directory.is_empty() && spec.state_directory.is_empty() {
        return Ok(());
    }
    let (identity, _) = resolve_identity(root, spec.user.as_deref(), spec.group.as_deref())?;
    let owner = identity.map(|id| (id.uid, id.gid));
    let sets = [
        (
            RUNTIME_BASE,
            &spec.runtime_directory,
            spec.runtime_directory_mode,
            "RuntimeDirectory",
        ),
        (
            STATE_BASE,
            &spec.state_directory,
            spec.state_directory_mode,
            "StateDirectory",
        ),
    ];
    for (base, dirs, mode, key) in sets {
        for dir in dirs.iter() {
            let path = Path::new(base).join(dir);
            // Below the base no symbolic link is followed: a service that
            // owns `a` must not make root chmod or chown what `a/b` points to.
            let made = std::fs::create_dir_all(base).and_then(|()| {
                crate::sys::make_dir_nofollow(Path::new(base), Path::new(dir), mode, owner)
            });
            if let Err(e) = made {
                return Err(SpawnError::new(
                    format!("{key} {}: {}", path.display(), io_message(&e)),
                    1,
                ));
            }
        }
    }
    Ok(())
}

/// Removes the service's `RuntimeDirectory=` entries (the service is
/// down). What cannot be removed is the reason.
pub fn remove_runtime_directories(dirs: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for dir in dirs {
        let path = Path::new(RUNTIME_BASE).join(dir);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => problems.push(format!(
                "RuntimeDirectory {}: {}",
                path.display(),
                io_message(&e)
            )),
        }
    }
    problems
}
