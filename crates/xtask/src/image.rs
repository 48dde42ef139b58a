//! An initramfs laid out exactly as `nitro-cli build-enclave` lays it out:
//! the bootstrap part (`/init`, `/nsm.ko`, `/dev`) and the customer part
//! (`/rootfs/...` with empty `dev run sys var proc tmp`, `/cmd`, `/env`),
//! as two ramdisks (an EIF's) or one archive (the PC machine's initramfs).
//! For the PC machine it adds the vsock modules under `/vm/` (Nitro
//! kernels have vsock built in); it can adapt the image's config to the
//! harness.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::cpio::{self, Entry, Kind};

#[derive(Default, Clone)]
pub struct Image {
    pub init: PathBuf,
    pub nsm: Option<PathBuf>,
    /// Extra modules before the root switch, at `/vm/<file name>`.
    pub vm_modules: Vec<PathBuf>,
    /// A root directory to copy into `/rootfs`.
    pub rootfs_dir: Option<PathBuf>,
    /// Static busybox, installed with its applets when the root lacks them.
    pub busybox: Option<PathBuf>,
    /// Static initctl, installed as `/usr/bin/initctl`.
    pub initctl: Option<PathBuf>,
    /// Files under `/rootfs` (path relative to it), overriding the dir's.
    pub files: Vec<(String, Vec<u8>, u32)>,
    /// `/rootfs/etc/enclave-init.toml`: `Some` replaces the image's,
    /// `None` keeps whatever the root directory has (or nothing).
    pub config: Option<String>,
    pub cmd: Option<Vec<String>>,
    pub env: Option<Vec<(String, String)>>,
}

impl Image {
    pub fn service(mut self, name: &str, text: &str) -> Self {
        self.files.push((
            format!("service/{name}.service"),
            text.as_bytes().to_vec(),
            0o644,
        ));
        self
    }

    pub fn file(mut self, path: &str, text: &str, mode: u32) -> Self {
        self.files
            .push((path.to_string(), text.as_bytes().to_vec(), mode));
        self
    }

    /// Writes the initramfs to `out`, as one archive (the PC machine).
    pub fn build(&self, out: &Path) -> Result<(), String> {
        write_cpio(out, &self.entries()?)
    }

    /// Writes nitro-cli's two ramdisks: the bootstrap one (`/init`,
    /// `/nsm.ko`, `/dev`) and the customer one (`/rootfs/...`, `/cmd`,
    /// `/env`), in the order of the EIF.
    pub fn build_ramdisks(&self, bootstrap: &Path, customer: &Path) -> Result<(), String> {
        let (boot, rest): (Vec<Entry>, Vec<Entry>) = self.entries()?.into_iter().partition(|e| {
            let top = e.path.split('/').next().unwrap_or("");
            BOOTSTRAP.contains(&top)
        });
        write_cpio(bootstrap, &boot)?;
        write_cpio(customer, &rest)
    }

    /// Every entry of the image, sorted by path.
    fn entries(&self) -> Result<Vec<Entry>, String> {
        let mut tree: BTreeMap<String, (u32, Kind)> = BTreeMap::new();
        // Owners of what comes from the root directory (the rest is root's).
        let mut owners: BTreeMap<String, (u32, u32)> = BTreeMap::new();
        let dir = |tree: &mut BTreeMap<String, (u32, Kind)>, path: &str| {
            let mut prefix = String::new();
            for part in path.split('/') {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(part);
                tree.entry(prefix.clone()).or_insert((0o755, Kind::Dir));
            }
        };
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        dir(&mut tree, "dev");
        tree.insert("init".into(), (0o755, Kind::File(read(&self.init)?)));
        if let Some(nsm) = &self.nsm {
            tree.insert("nsm.ko".into(), (0o644, Kind::File(read(nsm)?)));
        }
        for m in &self.vm_modules {
            dir(&mut tree, "vm");
            let name = m
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            tree.insert(format!("vm/{name}"), (0o644, Kind::File(read(m)?)));
        }
        dir(&mut tree, "rootfs");
        if let Some(root) = &self.rootfs_dir {
            let mut skipped = Vec::new();
            let mut copy = Copy {
                base: root,
                tree: &mut tree,
                owners: &mut owners,
                skipped: &mut skipped,
            };
            copy.dir(root)?;
            if !skipped.is_empty() {
                eprintln!(
                    "xtask: warning: {} special files of {} left out (a cpio initramfs holds files, directories and links; devices come from devtmpfs): {}",
                    skipped.len(),
                    root.display(),
                    skipped.join(", ")
                );
            }
        }
        for d in [
            "dev", "run", "sys", "var", "proc", "tmp", "etc", "bin", "usr/bin",
        ] {
            dir(&mut tree, &format!("rootfs/{d}"));
        }
        if let Some(busybox) = &self.busybox {
            tree.insert(
                "rootfs/bin/busybox".into(),
                (0o755, Kind::File(read(busybox)?)),
            );
            for applet in applets(busybox)? {
                let path = format!("rootfs/bin/{applet}");
                let usr = format!("rootfs/usr/bin/{applet}");
                if !tree.contains_key(&path) && !tree.contains_key(&usr) && applet != "busybox" {
                    tree.insert(path, (0o777, Kind::Symlink("busybox".into())));
                }
            }
        }
        if let Some(initctl) = &self.initctl {
            tree.insert(
                "rootfs/usr/bin/initctl".into(),
                (0o755, Kind::File(read(initctl)?)),
            );
        }
        tree.entry("rootfs/etc/passwd".into())
            .or_insert((0o644, Kind::File(b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n".to_vec())));
        tree.entry("rootfs/etc/group".into())
            .or_insert((0o644, Kind::File(b"root:x:0:\nnogroup:x:65534:\n".to_vec())));
        for (path, bytes, mode) in &self.files {
            if let Some((parent, _)) = path.rsplit_once('/') {
                dir(&mut tree, &format!("rootfs/{parent}"));
            }
            tree.insert(format!("rootfs/{path}"), (*mode, Kind::File(bytes.clone())));
        }
        if let Some(config) = &self.config {
            tree.insert(
                "rootfs/etc/enclave-init.toml".into(),
                (0o644, Kind::File(config.as_bytes().to_vec())),
            );
        }
        if let Some(cmd) = &self.cmd {
            tree.insert(
                "cmd".into(),
                (
                    0o644,
                    Kind::File(format!("{}\n", cmd.join("\n")).into_bytes()),
                ),
            );
        }
        if let Some(env) = &self.env {
            let text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            tree.insert("env".into(), (0o644, Kind::File(text.into_bytes())));
        }
        Ok(tree
            .into_iter()
            .map(|(path, (mode, kind))| {
                let (uid, gid) = owners.get(&path).copied().unwrap_or((0, 0));
                Entry {
                    path,
                    mode,
                    kind,
                    uid,
                    gid,
                }
            })
            .collect())
    }

    /// The image's own config text (from `files` or the root directory).
    pub fn own_config(&self) -> Option<String> {
        if let Some((_, bytes, _)) = self
            .files
            .iter()
            .find(|(p, _, _)| p == "etc/enclave-init.toml")
        {
            return Some(String::from_utf8_lossy(bytes).into_owned());
        }
        let path = self.rootfs_dir.as_ref()?.join("etc/enclave-init.toml");
        std::fs::read_to_string(path).ok()
    }
}

/// The top-level entries of nitro-cli's bootstrap ramdisk (and the PC
/// machine's modules).
const BOOTSTRAP: &[&str] = &["init", "nsm.ko", "dev", "vm"];

fn write_cpio(out: &Path, entries: &[Entry]) -> Result<(), String> {
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?,
    );
    cpio::write(&mut file, entries).map_err(|e| format!("{}: {e}", out.display()))?;
    std::io::Write::flush(&mut file).map_err(|e| format!("{}: {e}", out.display()))
}

fn applets(busybox: &Path) -> Result<Vec<String>, String> {
    let out = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| format!("{}: {e}", busybox.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// Copies a root directory into the tree, keeping modes and owners.
struct Copy<'a> {
    base: &'a Path,
    tree: &'a mut BTreeMap<String, (u32, Kind)>,
    owners: &'a mut BTreeMap<String, (u32, u32)>,
    /// Device nodes, FIFOs and sockets, which are left out.
    skipped: &'a mut Vec<String>,
}

impl Copy<'_> {
    fn dir(&mut self, dir: &Path) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let rel = path
                .strip_prefix(self.base)
                .map_err(|e| e.to_string())?
                .to_string_lossy()
                .into_owned();
            let key = format!("rootfs/{rel}");
            let meta =
                std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mode = meta.permissions().mode() & 0o7777;
            let kind = if meta.file_type().is_symlink() {
                let target =
                    std::fs::read_link(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                (0o777, Kind::Symlink(target.to_string_lossy().into_owned()))
            } else if meta.is_dir() {
                (mode, Kind::Dir)
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                (mode, Kind::File(bytes))
            } else {
                self.skipped.push(format!("/{rel}"));
                continue;
            };
            let is_dir = matches!(kind.1, Kind::Dir);
            self.tree.insert(key.clone(), kind);
            self.owners.insert(key, (meta.uid(), meta.gid()));
            if is_dir {
                self.dir(&path)?;
            }
        }
        Ok(())
    }
}

/// A config for the QEMU harness from the image's own: the heartbeat goes
/// to CID 2 (vhost-device-vsock only forwards that), and the vsock modules
/// load before the image's own modules (default `/nsm.ko`). Everything
/// else stays as the image has it.
pub fn vm_config(own: Option<&str>, vm_modules: &[PathBuf]) -> Result<String, String> {
    let mut doc: toml::Table = match own {
        Some(text) => text
            .parse()
            .map_err(|e| format!("the image's enclave-init.toml: {e}"))?,
        None => toml::Table::new(),
    };
    let boot = doc
        .entry("boot")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let boot = boot.as_table_mut().ok_or("[boot] is not a table")?;
    let mut modules: Vec<toml::Value> = vm_modules
        .iter()
        .map(|m| {
            toml::Value::String(format!(
                "/vm/{}",
                m.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ))
        })
        .collect();
    match boot.get("modules").and_then(|m| m.as_array()) {
        Some(own) => modules.extend(own.iter().cloned()),
        None => modules.push(toml::Value::String("/nsm.ko".into())),
    }
    boot.insert("modules".into(), toml::Value::Array(modules));
    let hb = doc
        .entry("heartbeat")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    hb.as_table_mut()
        .ok_or("[heartbeat] is not a table")?
        .insert("cid".into(), toml::Value::Integer(2));
    // The host is the parent here, and vhost-device-vsock shows it as CID 2
    // (Nitro's parent is CID 3): unless the image names a CID itself.
    if let Some(parent) = doc.get_mut("parent").and_then(toml::Value::as_table_mut) {
        parent
            .entry("cid")
            .or_insert_with(|| toml::Value::Integer(2));
    }
    toml::to_string(&doc).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_config_keeps_the_rest() {
        let text = vm_config(
            Some("[boot]\nhostname = \"x\"\n[log]\nlevel = \"debug\"\n"),
            &[PathBuf::from("/a/vsock.ko.xz")],
        )
        .unwrap();
        let doc: toml::Table = text.parse().unwrap();
        assert_eq!(doc["boot"]["hostname"].as_str(), Some("x"));
        assert_eq!(doc["log"]["level"].as_str(), Some("debug"));
        assert_eq!(doc["heartbeat"]["cid"].as_integer(), Some(2));
        let modules: Vec<&str> = doc["boot"]["modules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(modules, ["/vm/vsock.ko.xz", "/nsm.ko"]);
    }
}
