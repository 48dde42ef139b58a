//! `/etc/enclave-init.toml` (contract §3) from text. Reading never fails:
//! an unknown key is a warning, an invalid value an error that keeps the
//! default.

use std::path::{Path, PathBuf};

use crate::model::config::*;
use crate::parse::diag::Diagnostic;
use crate::parse::toml_keys::{self, KeyValue};

const CGROUPS: &[(&str, Cgroups)] = &[
    ("v1", Cgroups::V1),
    ("v2", Cgroups::V2),
    ("none", Cgroups::None),
];
const LEGACY: &[(&str, Legacy)] = &[
    ("auto", Legacy::Auto),
    ("always", Legacy::Always),
    ("never", Legacy::Never),
];
const LEVELS: &[(&str, Level)] = &[
    ("error", Level::Error),
    ("warn", Level::Warn),
    ("info", Level::Info),
    ("debug", Level::Debug),
];

/// Parses config text; `path` only names the file in diagnostics.
pub fn parse(path: &Path, text: &str) -> (Config, Vec<Diagnostic>) {
    let mut config = Config::default();
    let mut diags = Vec::new();
    let sections = match toml_keys::parse_sections(text) {
        Ok(s) => s,
        Err(e) => {
            diags.push(Diagnostic::error(
                path,
                e.line,
                None,
                format!("{}; using defaults", e.message),
            ));
            return (config, diags);
        }
    };
    for (section, entries) in sections {
        if !section.value.is_table() {
            diags.push(Diagnostic::error(
                path,
                Some(section.line),
                Some(&section.key),
                format!(
                    "expected a table [{}], found {}",
                    section.key,
                    section.value.type_str()
                ),
            ));
            continue;
        }
        if section.key == "parent" {
            config.parent.get_or_insert_with(Parent::default);
        }
        for entry in entries {
            let name = format!("{}.{}", section.key, entry.key);
            match apply(&mut config, &section.key, &entry) {
                Ok(true) => {}
                Ok(false) => diags.push(Diagnostic::warning(
                    path,
                    Some(entry.line),
                    Some(&name),
                    "unknown key, ignored",
                )),
                Err(reason) => diags.push(Diagnostic::error(
                    path,
                    Some(entry.line),
                    Some(&name),
                    format!("{reason}; using the default"),
                )),
            }
        }
        if !matches!(
            section.key.as_str(),
            "boot" | "heartbeat" | "services" | "control" | "shutdown" | "log" | "parent"
        ) {
            diags.push(Diagnostic::warning(
                path,
                Some(section.line),
                Some(&section.key),
                "unknown section, ignored",
            ));
        }
    }
    (config, diags)
}

/// Sets one key. `Ok(false)`: the key is unknown.
fn apply(config: &mut Config, section: &str, entry: &KeyValue) -> Result<bool, String> {
    let v = &entry.value;
    match (section, entry.key.as_str()) {
        ("boot", "modules") => {
            let modules = toml_keys::strings(v)?;
            if let Some(bad) = modules.iter().find(|m| !m.starts_with('/')) {
                return Err(format!("module path {bad:?} is not absolute"));
            }
            config.boot.modules = modules.into_iter().map(PathBuf::from).collect();
        }
        ("boot", "cgroups") => config.boot.cgroups = toml_keys::choice(v, CGROUPS)?,
        ("boot", "loopback") => config.boot.loopback = toml_keys::boolean(v)?,
        ("boot", "hostname") => {
            let name = toml_keys::string(v)?;
            if name.len() > 64
                || name.contains(|c: char| c.is_whitespace() || c == '/' || c.is_control())
            {
                return Err(format!("invalid hostname {name:?}"));
            }
            config.boot.hostname = name.to_string();
        }
        ("boot", "entropy") => {
            config.boot.entropy = crate::parse::service::zero_is_infinity(toml_keys::duration(v)?)
        }
        ("heartbeat", "enabled") => config.heartbeat.enabled = toml_keys::boolean(v)?,
        ("heartbeat", "cid") => config.heartbeat.cid = toml_keys::unsigned(v, i64::from(u32::MAX))?,
        ("heartbeat", "port") => {
            config.heartbeat.port = toml_keys::unsigned(v, i64::from(u32::MAX))?
        }
        ("heartbeat", "timeout") => config.heartbeat.timeout = toml_keys::duration(v)?,
        ("services", "dir") => config.services.dir = absolute(toml_keys::string(v)?)?,
        ("services", "legacy") => config.services.legacy = toml_keys::choice(v, LEGACY)?,
        ("control", "socket") => config.control.socket = absolute(toml_keys::string(v)?)?,
        ("shutdown", "timeout") => {
            config.shutdown.timeout =
                crate::parse::service::zero_is_infinity(toml_keys::duration(v)?)
        }
        ("shutdown", "final_timeout") => {
            config.shutdown.final_timeout =
                crate::parse::service::zero_is_infinity(toml_keys::duration(v)?)
        }
        ("log", "level") => config.log.level = toml_keys::choice(v, LEVELS)?,
        ("log", "buffer") => config.log.buffer = byte_size(v)?,
        ("parent", key) => {
            let Some(parent) = config.parent.as_mut() else {
                return Ok(false);
            };
            match key {
                "port" => parent.port = toml_keys::unsigned(v, i64::from(u32::MAX))?,
                "cid" => {
                    let cid: u32 = toml_keys::unsigned(v, i64::from(u32::MAX))?;
                    // VMADDR_CID_ANY would accept every peer.
                    if cid == u32::MAX {
                        return Err("4294967295 (any CID) is not one peer".into());
                    }
                    parent.cid = cid;
                }
                "logs" => {
                    parent.logs = match v {
                        toml::Value::String(s) if s == "all" => Exported::All,
                        toml::Value::String(s) => {
                            return Err(format!(
                                "expected \"all\" or an array of service names, found {s:?}"
                            ))
                        }
                        other => Exported::Only(toml_keys::strings(other)?),
                    }
                }
                "allow_poweroff" => parent.allow_poweroff = toml_keys::boolean(v)?,
                _ => return Ok(false),
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn absolute(path: &str) -> Result<PathBuf, String> {
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(format!("path {path:?} is not absolute"))
    }
}

/// A size in bytes: an integer, or a string such as `"64KiB"` or `"1M"`.
fn byte_size(value: &toml::Value) -> Result<usize, String> {
    const MAX: u64 = 1 << 30;
    let bytes = match value {
        toml::Value::Integer(_) => toml_keys::unsigned::<u64>(value, MAX as i64)?,
        toml::Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (digits, unit) = s.split_at(split);
            let n: u64 = digits.parse().map_err(|_| format!("invalid size {s:?}"))?;
            let scale = match unit.trim() {
                "" | "B" => 1,
                "K" | "KiB" | "k" => 1 << 10,
                "M" | "MiB" => 1 << 20,
                other => return Err(format!("invalid size {s:?}: unknown unit {other:?}")),
            };
            n.checked_mul(scale)
                .filter(|b| *b <= MAX)
                .ok_or_else(|| format!("size {s:?} is larger than 1GiB"))?
        }
        other => {
            return Err(format!(
                "expected a size such as 65536 or \"64KiB\", found {}",
                other.type_str()
            ))
        }
    };
    usize::try_from(bytes).map_err(|_| format!("size {bytes} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse_text(text: &str) -> (Config, Vec<String>) {
        let (config, diags) = parse(Path::new("/etc/enclave-init.toml"), text);
        (config, diags.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn empty_file_is_nitro_defaults() {
        let (config, diags) = parse_text("");
        assert_eq!(config, Config::default());
        assert!(diags.is_empty());
        assert_eq!(config.heartbeat.cid, 3);
        assert_eq!(config.heartbeat.port, 9000);
        assert_eq!(config.boot.modules, [PathBuf::from("/nsm.ko")]);
    }

    #[test]
    fn zero_means_no_timeout_as_in_systemd() {
        let (c, diags) = parse(
            Path::new("/c.toml"),
            "[boot]\nentropy = 0\n[shutdown]\ntimeout = 0\nfinal_timeout = \"0s\"\n",
        );
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(c.boot.entropy, Duration::MAX);
        assert_eq!(c.shutdown.timeout, Duration::MAX);
        assert_eq!(c.shutdown.final_timeout, Duration::MAX);
    }

    #[test]
    fn every_key_is_read() {
        let text = r#"
[boot]
modules = ["/a.ko", "/b.ko.xz"]
cgroups = "v2"
loopback = false
hostname = "enclave"
entropy = "2min"

[heartbeat]
enabled = false
cid = 2
port = 9001
timeout = "1min 30s"

[services]
dir = "/etc/services"
legacy = "never"

[control]
socket = "/tmp/ctl.sock"

[shutdown]
timeout = 2.5

[log]
level = "debug"
buffer = "16KiB"
"#;
        let (c, diags) = parse_text(text);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(
            c.boot.modules,
            [PathBuf::from("/a.ko"), PathBuf::from("/b.ko.xz")]
        );
        assert_eq!(c.boot.cgroups, Cgroups::V2);
        assert!(!c.boot.loopback);
        assert_eq!(c.boot.hostname, "enclave");
        assert_eq!(c.boot.entropy, Duration::from_secs(120));
        assert!(!c.heartbeat.enabled);
        assert_eq!((c.heartbeat.cid, c.heartbeat.port), (2, 9001));
        assert_eq!(c.heartbeat.timeout, Duration::from_secs(90));
        assert_eq!(c.services.dir, PathBuf::from("/etc/services"));
        assert_eq!(c.services.legacy, Legacy::Never);
        assert_eq!(c.control.socket, PathBuf::from("/tmp/ctl.sock"));
        assert_eq!(c.shutdown.timeout, Duration::from_millis(2500));
        assert_eq!(c.log.level, Level::Debug);
        assert_eq!(c.log.buffer, 16 * 1024);
    }

    #[test]
    fn bad_values_keep_defaults_and_name_file_line_key() {
        let cases: &[(&str, &str)] = &[
            ("[boot]\ncgroups = \"v3\"", "/etc/enclave-init.toml:2: key boot.cgroups: invalid value \"v3\": expected one of v1, v2, none; using the default"),
            ("[boot]\nmodules = [\"nsm.ko\"]", "/etc/enclave-init.toml:2: key boot.modules: module path \"nsm.ko\" is not absolute; using the default"),
            ("[boot]\nmodules = [1]", "/etc/enclave-init.toml:2: key boot.modules: element 1: expected a string, found integer; using the default"),
            ("[boot]\nloopback = \"yes\"", "/etc/enclave-init.toml:2: key boot.loopback: expected true or false, found string; using the default"),
            ("[boot]\nhostname = \"a b\"", "/etc/enclave-init.toml:2: key boot.hostname: invalid hostname \"a b\"; using the default"),
            ("[heartbeat]\ncid = -1", "/etc/enclave-init.toml:2: key heartbeat.cid: -1 is out of range 0..=4294967295; using the default"),
            ("[heartbeat]\ntimeout = \"soon\"", "/etc/enclave-init.toml:2: key heartbeat.timeout: invalid duration \"soon\": expected a number at \"soon\"; using the default"),
            ("[services]\ndir = \"service\"", "/etc/enclave-init.toml:2: key services.dir: path \"service\" is not absolute; using the default"),
            ("[services]\nlegacy = true", "/etc/enclave-init.toml:2: key services.legacy: expected a string, found boolean; using the default"),
            ("[shutdown]\ntimeout = -3", "/etc/enclave-init.toml:2: key shutdown.timeout: invalid duration -3: must not be negative; using the default"),
            ("[log]\nlevel = \"verbose\"", "/etc/enclave-init.toml:2: key log.level: invalid value \"verbose\": expected one of error, warn, info, debug; using the default"),
            ("[log]\nbuffer = \"2GiB\"", "/etc/enclave-init.toml:2: key log.buffer: invalid size \"2GiB\": unknown unit \"GiB\"; using the default"),
            ("boot = 3", "/etc/enclave-init.toml:1: key boot: expected a table [boot], found integer"),
        ];
        for (text, want) in cases {
            let (config, diags) = parse_text(text);
            assert_eq!(diags, [want.to_string()], "{text}");
            assert_eq!(config, Config::default(), "{text}");
        }
    }

    #[test]
    fn unknown_keys_warn_and_the_rest_is_used() {
        let (config, diags) =
            parse_text("[log]\nlevle = \"debug\"\nlevel = \"warn\"\n[extra]\nx = 1\n");
        assert_eq!(config.log.level, Level::Warn);
        assert_eq!(
            diags,
            [
                "/etc/enclave-init.toml:2: key log.levle: unknown key, ignored",
                "/etc/enclave-init.toml:5: key extra.x: unknown key, ignored",
                "/etc/enclave-init.toml:4: key extra: unknown section, ignored",
            ]
        );
    }

    #[test]
    fn syntax_error_is_defaults_with_line() {
        let (config, diags) = parse_text("[log]\nlevel = \n");
        assert_eq!(config, Config::default());
        assert_eq!(diags.len(), 1);
        assert!(
            diags[0].starts_with("/etc/enclave-init.toml:2: "),
            "{}",
            diags[0]
        );
        assert!(diags[0].ends_with("; using defaults"), "{}", diags[0]);
    }
}
