//! Reading what init is configured by: the config file and the service
//! directory. The files are read through [`crate::host::files`] (bounded,
//! never blocking) and handed to the pure parsers of [`crate::parse`].

use std::path::{Path, PathBuf};

use crate::host::console;
use crate::model::config::Config;
use crate::model::spec::{valid_name, ServiceSpec};
use crate::model::Level;
use crate::parse::cli::Args;
use crate::parse::diag::{Diagnostic, Severity};
use crate::parse::{config as config_text, service};

/// Reads the config file. A missing file is the defaults with no
/// diagnostic; any other problem is reported and the defaults stand in.
pub fn config(path: &Path) -> (Config, Vec<Diagnostic>) {
    match crate::host::files::read(path, crate::host::files::MAX) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => config_text::parse(path, &text),
            Err(_) => (
                Config::default(),
                vec![Diagnostic::error(
                    path,
                    None,
                    None,
                    "not UTF-8 text; using defaults",
                )],
            ),
        },
        Err(e) if e.is_not_found() => (Config::default(), Vec::new()),
        Err(e) => (
            Config::default(),
            vec![Diagnostic::error(
                path,
                None,
                None,
                format!("cannot read: {e}; using defaults"),
            )],
        ),
    }
}

/// What loading a service directory gave.
#[derive(Debug, Default)]
pub struct Loaded {
    pub services: Vec<ServiceSpec>,
    /// Names whose file exists but could not be loaded.
    pub broken: Vec<String>,
    pub diagnostics: Vec<Diagnostic>,
    /// The directory does not exist (the caller decides whether that is
    /// an error: the default one may be absent when `/cmd` gives the
    /// command).
    pub missing: bool,
}

/// Reads every `*.service` of `dir`, sorted by name. A missing directory is
/// an empty result; entries that cannot be used are reported.
pub fn load_dir(dir: &Path) -> Loaded {
    let mut loaded = Loaded::default();
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            loaded.missing = true;
            return loaded;
        }
        Err(e) => {
            loaded.diagnostics.push(Diagnostic::error(
                dir,
                None,
                None,
                format!("cannot read service directory: {e}"),
            ));
            return loaded;
        }
    };
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for entry in read {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                loaded.diagnostics.push(Diagnostic::error(
                    dir,
                    None,
                    None,
                    format!("cannot list service directory: {e}"),
                ));
                continue;
            }
        };
        let path = entry.path();
        let Some(file_name) = entry.file_name().to_str().map(str::to_string) else {
            loaded.diagnostics.push(Diagnostic::warning(
                &path,
                None,
                None,
                "file name is not UTF-8, ignored",
            ));
            continue;
        };
        let Some(name) = file_name.strip_suffix(".service") else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        if !valid_name(name) {
            loaded.diagnostics.push(Diagnostic::error(
                &path,
                None,
                None,
                format!("invalid service name {name:?}: use letters, digits and -_.@:"),
            ));
            continue;
        }
        files.push((name.to_string(), path));
    }
    files.sort();
    // `name@.service` is a template: a service only through its instances,
    // which are files (links to it, as `systemctl enable` makes) or names
    // in other services' `Wants=`/`Requires=`.
    let (templates, files): (Vec<_>, Vec<_>) =
        files.into_iter().partition(|(name, _)| name.ends_with('@'));
    for (name, path) in files {
        load_one(&mut loaded, &name, &path);
    }
    for _ in 0..16 {
        let wanted: Vec<(String, PathBuf)> = loaded
            .services
            .iter()
            .flat_map(|s| s.requires.iter().chain(&s.wants))
            .filter(|n| {
                !loaded.services.iter().any(|s| &s.name == *n) && !loaded.broken.contains(n)
            })
            .filter_map(|n| {
                let (prefix, _) = n.split_once('@')?;
                let template = format!("{prefix}@");
                let (_, path) = templates.iter().find(|(t, _)| *t == template)?;
                Some((n.clone(), path.clone()))
            })
            .collect();
        if wanted.is_empty() {
            break;
        }
        for (name, path) in wanted {
            if !loaded.services.iter().any(|s| s.name == name) && !loaded.broken.contains(&name) {
                load_one(&mut loaded, &name, &path);
            }
        }
    }
    loaded.services.sort_by(|a, b| a.name.cmp(&b.name));
    loaded
}

/// Reads and parses one service file into `loaded`.
fn load_one(loaded: &mut Loaded, name: &str, path: &Path) {
    // A panic in the parser (or in a crate it uses) costs this one file,
    // never the others nor init.
    let result = crate::host::panics::catch(|| {
        crate::host::fault::point("load", name);
        read_file(path).map(|text| service::parse(path, name, &text))
    });
    match result {
        Ok(Ok((result, diags))) => {
            loaded.diagnostics.extend(diags);
            match result {
                Ok(spec) => loaded.services.push(spec),
                Err(()) => loaded.broken.push(name.to_string()),
            }
        }
        Ok(Err(reason)) => {
            loaded
                .diagnostics
                .push(Diagnostic::error(path, None, None, reason));
            loaded.broken.push(name.to_string());
        }
        Err(panic) => {
            loaded.diagnostics.push(Diagnostic::error(
                path,
                None,
                None,
                format!("internal error while reading it: {panic}"),
            ));
            loaded.broken.push(name.to_string());
        }
    }
}

/// Reads a service file: bounded, never blocking (see [`crate::host::files`]);
/// the error is the reason.
fn read_file(path: &Path) -> Result<String, String> {
    let bytes = crate::host::files::read(path, crate::host::files::MAX).map_err(|e| match e {
        crate::host::files::ReadError::NotRegular("a directory") => {
            "is a directory, not a service file".to_string()
        }
        crate::host::files::ReadError::Io(e) => format!("cannot read: {e}"),
        other => other.to_string(),
    })?;
    if bytes.contains(&0) {
        return Err("binary file (contains NUL bytes), not a service file".into());
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".into())
}

/// The config file: `--config`, else `$ENCLAVE_INIT_CONFIG`, else the default.
pub fn config_path(args: &Args) -> PathBuf {
    args.config
        .clone()
        .or_else(|| std::env::var_os("ENCLAVE_INIT_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(crate::model::config::DEFAULT_PATH))
}

/// Reads the config and applies the command line's overrides.
pub fn config_for(path: &Path, args: &Args) -> (Config, Vec<Diagnostic>) {
    let (mut config, diags) = config(path);
    if let Some(dir) = &args.service_dir {
        config.services.dir = dir.clone();
    }
    if let Some(socket) = &args.control_socket {
        config.control.socket = socket.clone();
    }
    (config, diags)
}

/// Logs each diagnostic at its level.
pub fn report(diags: &[Diagnostic]) {
    for d in diags {
        let level = match d.severity {
            Severity::Error => Level::Error,
            Severity::Warning => Level::Warn,
        };
        console::log(level, &d.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_defaults_without_diagnostics() {
        let (config, diags) = config(Path::new("/nonexistent/enclave-init.toml"));
        assert_eq!(config, Config::default());
        assert!(diags.is_empty());
    }

    #[test]
    fn directory_loading_reports_every_bad_entry_and_keeps_the_good() {
        let dir = std::env::temp_dir().join(format!("ei-spec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("good.service"), "ExecStart = \"/bin/true\"\n").unwrap();
        std::fs::write(dir.join("bad.service"), "ExecStart = \n").unwrap();
        std::fs::write(dir.join("empty.service"), "").unwrap();
        std::fs::write(dir.join("binary.service"), b"\x7fELF\x00\x01\x02").unwrap();
        std::fs::create_dir(dir.join("adir.service")).unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        std::fs::write(dir.join("bad name.service"), "ExecStart = \"/bin/true\"\n").unwrap();
        std::fs::write(
            dir.join("zz.service"),
            "ExecStart = \"/bin/true\"\nRestrat = 1\n",
        )
        .unwrap();
        let loaded = load_dir(&dir);
        let names: Vec<&str> = loaded.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["good", "zz"]);
        assert_eq!(loaded.broken, ["adir", "bad", "binary", "empty"]);
        let texts: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
        let d = dir.display();
        for want in [
            format!("{d}/bad name.service: invalid service name \"bad name\": use letters, digits and -_.@:"),
            format!("{d}/adir.service: is a directory, not a service file"),
            format!("{d}/binary.service: binary file (contains NUL bytes), not a service file"),
            format!("{d}/empty.service: empty file: ExecStart is required"),
            format!("{d}/zz.service:2: key Restrat: unknown key, ignored (did you mean Restart?)"),
        ] {
            assert!(texts.contains(&want), "missing {want:?} in {texts:#?}");
        }
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with(&format!("{d}/bad.service:1: "))),
            "{texts:#?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn templates_give_instances_through_links_and_dependencies() {
        let dir = std::env::temp_dir().join(format!("ei-tmpl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let template = "[Service]\nExecStart=/bin/echo %i %I\n";
        std::fs::write(dir.join("pg@.service"), template).unwrap();
        std::os::unix::fs::symlink("pg@.service", dir.join("pg@15-main.service")).unwrap();
        std::fs::write(
            dir.join("web@.service"),
            template.replace("[Service]", "[Unit]\nWants=pg@16-b.service\n[Service]"),
        )
        .unwrap();
        std::fs::write(dir.join("unused@.service"), template).unwrap();
        std::fs::write(
            dir.join("app.service"),
            "ExecStart = \"/bin/app\"\nWants = [\"web@1\", \"gone@x\"]\n",
        )
        .unwrap();
        let loaded = load_dir(&dir);
        let got: Vec<(&str, Vec<String>)> = loaded
            .services
            .iter()
            .map(|s| {
                let argv = s
                    .exec_start
                    .argv
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned());
                (s.name.as_str(), argv.collect())
            })
            .collect();
        let want: Vec<(&str, Vec<String>)> = [
            ("app", vec!["/bin/app"]),
            ("pg@15-main", vec!["/bin/echo", "15-main", "15/main"]),
            ("pg@16-b", vec!["/bin/echo", "16-b", "16/b"]),
            ("web@1", vec!["/bin/echo", "1", "1"]),
        ]
        .into_iter()
        .map(|(n, a)| (n, a.into_iter().map(str::to_string).collect()))
        .collect();
        assert_eq!(got, want);
        assert!(
            loaded.broken.is_empty() && loaded.diagnostics.is_empty(),
            "{loaded:#?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_directory_is_empty() {
        let loaded = load_dir(Path::new("/nonexistent/service"));
        assert!(loaded.services.is_empty() && loaded.diagnostics.is_empty());
    }
}
