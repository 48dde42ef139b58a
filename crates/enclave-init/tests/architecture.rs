//! The layering of ARCHITECTURE.md, checked on the sources: every
//! `crate::` path in a layer's files points to the layer itself or to one
//! below it, and no source file grows past about 800 lines. A newcomer who
//! breaks either learns it here, with the file and the line.

use std::path::{Path, PathBuf};

/// Each layer (a folder of `src/`) and the layers it may use.
const LAYERS: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("sys", &[]),
    ("parse", &["model"]),
    ("engine", &["model"]),
    ("host", &["model", "parse", "sys"]),
    ("boot", &["model", "parse", "host", "sys", "proto"]),
    (
        "runtime",
        &["model", "parse", "engine", "host", "sys", "proto"],
    ),
];

/// The files at the top (`lib.rs`, `main.rs`, `run.rs`) wire the layers
/// together and may use them all.
const TOP: &[&str] = &["lib.rs", "main.rs", "run.rs"];

const MAX_LINES: usize = 850;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::NAME` in `text`, with its line number.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push((n + 1, name));
            }
            rest = after;
        }
    }
    out
}

#[test]
fn imports_point_only_down() {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&root).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        if TOP.contains(&first.as_ref()) {
            continue;
        }
        let Some((layer, allowed)) = LAYERS.iter().find(|(l, _)| *l == first) else {
            problems.push(format!(
                "{}: not in a layer folder (add it to one, or to LAYERS in tests/architecture.rs and ARCHITECTURE.md)",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, name) in crate_paths(&text) {
            if name != *layer && !allowed.contains(&name.as_str()) {
                problems.push(format!(
                    "{}:{line}: the {layer} layer uses crate::{name}; it may use only {}",
                    rel.display(),
                    if allowed.is_empty() {
                        "itself".to_string()
                    } else {
                        allowed.join(", ")
                    }
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_source_file_grows_past_about_800_lines() {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > MAX_LINES)
                .then(|| format!("{}: {n} lines", f.strip_prefix(&root).unwrap().display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "split these by what they own:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checker_sees_paths() {
    assert_eq!(
        crate_paths("use crate::model::Pid; // crate::engine\nlet x = crate::host::console::log;"),
        [(1, "model".to_string()), (2, "host".to_string())]
    );
}
