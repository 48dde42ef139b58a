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
    /// Owner and group (0 for what the harness adds).
    pub uid: u32,
    pub gid: u32,
}

pub fn write(out: &mut impl Write, entries: &[Entry]) -> io::Result<()> {
    let mut written = 0usize;
    for (ino, e) in (1u32..).zip(entries) {
        let (type_bits, data): (u32, &[u8]) = match &e.kind {
            Kind::Dir => (0o040000, &[]),
            Kind::File(bytes) => (0o100000, bytes),
            Kind::Symlink(target) => (0o120000, target.as_bytes()),
        };
        // newc has 32-bit sizes.
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: 4 GiB or more, too big for a cpio archive", e.path),
            )
        })?;
        written += header(
            out,
            Header {
                ino,
                mode: type_bits | (e.mode & 0o7777),
                uid: e.uid,
                gid: e.gid,
                nlink: if matches!(e.kind, Kind::Dir) { 2 } else { 1 },
                size,
            },
            &e.path,
        )?;
        out.write_all(data)?;
        written += data.len();
        written += pad(out, written)?;
    }
    let trailer = Header {
        ino: 0,
        mode: 0,
        uid: 0,
        gid: 0,
        nlink: 1,
        size: 0,
    };
    written += header(out, trailer, "TRAILER!!!")?;
    pad_to(out, written, 512)?;
    Ok(())
}

struct Header {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    size: u32,
}

fn header(out: &mut impl Write, h: Header, name: &str) -> io::Result<usize> {
    let Header {
        ino,
        mode,
        uid,
        gid,
        nlink,
        size,
    } = h;
    let fields = [
        ino,
        mode,
        uid,
        gid,
        nlink,
        0,
        size,
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
                uid: 0,
                gid: 0,
            },
            Entry {
                path: "init".into(),
                mode: 0o755,
                kind: Kind::File(b"#!/bin/sh\n".to_vec()),
                uid: 1000,
                gid: 100,
            },
            Entry {
                path: "link".into(),
                mode: 0o777,
                kind: Kind::Symlink("init".into()),
                uid: 0,
                gid: 0,
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
        // The owners too (`cpio -tv --numeric-uid-gid`).
        let mut child = std::process::Command::new("cpio")
            .args(["-tv", "--quiet", "--numeric-uid-gid"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
        let init = out.lines().find(|l| l.ends_with(" init")).unwrap();
        let fields: Vec<&str> = init.split_whitespace().collect();
        assert_eq!(&fields[2..4], ["1000", "100"], "{init}");
    }
}
