//! A newc ("070701") cpio writer: the initramfs format the kernel unpacks.
//! Entries are written in the order given; parents must come first.

use std::io::{self, Write};

pub enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

pub struct Entry {
    /// Path inside the archive, without a leading `/`.
    pub path: String,
    pub mode: u32,
    pub kind: Kind,
}

pub fn write(out: &mut impl Write, entries: &[Entry]) -> io::Result<()> {
    let mut written = 0usize;
    for (ino, e) in (1u32..).zip(entries) {
        let (type_bits, data): (u32, &[u8]) = match &e.kind {
            Kind::Dir => (0o040000, &[]),
            Kind::File(bytes) => (0o100000, bytes),
            Kind::Symlink(target) => (0o120000, target.as_bytes()),
        };
        written += header(
            out,
            ino,
            type_bits | (e.mode & 0o7777),
            if matches!(e.kind, Kind::Dir) { 2 } else { 1 },
            data.len(),
            &e.path,
        )?;
        out.write_all(data)?;
        written += data.len();
        written += pad(out, written)?;
    }
    written += header(out, 0, 0, 1, 0, "TRAILER!!!")?;
    pad_to(out, written, 512)?;
    Ok(())
}

fn header(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: usize,
    name: &str,
) -> io::Result<usize> {
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ];
    let mut h = String::from("070701");
    for f in fields {
        h.push_str(&format!("{f:08x}"));
    }
    out.write_all(h.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    let n = h.len() + name.len() + 1;
    Ok(n + pad(out, n)?)
}

fn pad(out: &mut impl Write, written: usize) -> io::Result<usize> {
    pad_to(out, written, 4)
}

fn pad_to(out: &mut impl Write, written: usize, align: usize) -> io::Result<usize> {
    let n = (align - written % align) % align;
    out.write_all(&vec![0u8; n])?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_tool_reads_it_back() {
        let entries = vec![
            Entry {
                path: "dev".into(),
                mode: 0o755,
                kind: Kind::Dir,
            },
            Entry {
                path: "init".into(),
                mode: 0o755,
                kind: Kind::File(b"#!/bin/sh\n".to_vec()),
            },
            Entry {
                path: "link".into(),
                mode: 0o777,
                kind: Kind::Symlink("init".into()),
            },
        ];
        let mut bytes = Vec::new();
        write(&mut bytes, &entries).unwrap();
        assert_eq!(bytes.len() % 512, 0);
        assert!(bytes.starts_with(b"070701"));
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("this test reads the archive back with cpio: apt-get install cpio (cargo xtask setup does)");
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "dev\ninit\nlink\n");
    }
}
