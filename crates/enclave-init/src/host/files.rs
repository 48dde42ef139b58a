//! Reading the files init reads while it runs (service files, environment
//! files, `/etc/passwd`, the config, `/cmd`, `/env`): bounded in size and
//! unable to block. A FIFO, a device or a regular file whose read waits
//! (tracefs's `trace_pipe`, `/proc/kmsg`) would otherwise stop PID 1's one
//! loop: the file must be a regular file before it is opened (opening a
//! device can act: `/dev/watchdog` arms the watchdog), is opened with
//! `O_NONBLOCK` (so even a FIFO put in its place returns at once) and
//! checked again; a read that would wait is an error, as is a file longer
//! than the cap.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The cap on every file init reads as it runs: 1 MiB.
pub const MAX: usize = 1 << 20;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a regular file ({0})")]
    NotRegular(&'static str),
    #[error("larger than {}", size(*.0))]
    TooLarge(usize),
    #[error("reading it would block (not a plain file)")]
    WouldBlock,
}

impl ReadError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

fn size(bytes: usize) -> String {
    match (bytes >> 20, bytes >> 10) {
        (mib, _) if mib > 0 && mib << 20 == bytes => format!("{mib} MiB"),
        (_, kib) if kib > 0 && kib << 10 == bytes => format!("{kib} KiB"),
        _ => format!("{bytes} bytes"),
    }
}

fn kind(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a plain file"
    }
}

/// Reads all of `path`, at most `cap` bytes, without ever blocking.
pub fn read(path: &Path, cap: usize) -> Result<Vec<u8>, ReadError> {
    let before = std::fs::metadata(path)?;
    if !before.file_type().is_file() {
        return Err(ReadError::NotRegular(kind(before.file_type())));
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular(kind(meta.file_type())));
    }
    let mut out = Vec::with_capacity((meta.len() as usize).min(cap) + 1);
    let mut chunk = [0u8; 8192];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => {
                if out.len() + n > cap {
                    return Err(ReadError::TooLarge(cap));
                }
                out.extend_from_slice(chunk.get(..n).unwrap_or_default());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(ReadError::WouldBlock)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// [`read`], as UTF-8 text.
pub fn read_text(path: &Path, cap: usize) -> Result<String, ReadError> {
    let bytes = read(path, cap)?;
    String::from_utf8(bytes).map_err(|_| {
        ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ei-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn plain_files_are_read_whole_within_the_cap() {
        let d = dir("plain");
        std::fs::write(d.join("a"), b"A=1\n").unwrap();
        assert_eq!(read(&d.join("a"), 4).unwrap(), b"A=1\n");
        assert_eq!(
            read(&d.join("a"), 3).unwrap_err().to_string(),
            "larger than 3 bytes"
        );
        assert!(read(&d.join("missing"), 10).unwrap_err().is_not_found());
        std::fs::write(d.join("big"), vec![b'x'; MAX + 1]).unwrap();
        assert_eq!(
            read(&d.join("big"), MAX).unwrap_err().to_string(),
            "larger than 1 MiB"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn what_could_block_or_never_end_is_refused_at_once() {
        let d = dir("special");
        let fifo = d.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Without O_NONBLOCK, opening a FIFO nobody writes waits forever.
        assert_eq!(
            read(&fifo, MAX).unwrap_err().to_string(),
            "not a regular file (a FIFO)"
        );
        assert_eq!(
            read(Path::new("/dev/zero"), MAX).unwrap_err().to_string(),
            "not a regular file (a character device)"
        );
        assert_eq!(
            read(&d, MAX).unwrap_err().to_string(),
            "not a regular file (a directory)"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
