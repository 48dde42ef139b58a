//! Reading TOML while keeping each key's line, so that every diagnostic can
//! name it. Values stay `toml::Value`; the typed readers turn them into
//! domain types with errors that say what was expected.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::Spanned;

use crate::model::duration;

/// One `key = value` of a table, with the line it starts on (1-based).
#[derive(Debug, Clone)]
pub struct KeyValue {
    pub key: String,
    pub line: usize,
    pub value: toml::Value,
}

/// A syntax error: the line, when the parser gave a position, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: Option<usize>,
    pub message: String,
}

type FlatTable = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

/// A document whose top level is plain `key = value` pairs, in file order.
pub fn parse_flat(text: &str) -> Result<Vec<KeyValue>, SyntaxError> {
    let table: FlatTable = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
    Ok(entries(text, table))
}

/// A document of `[section]` tables, each of plain pairs, in file order.
/// A top-level key that is not a table is reported as a `KeyValue` in the
/// section `""` for the caller to complain about.
pub fn parse_sections(text: &str) -> Result<Vec<(KeyValue, Vec<KeyValue>)>, SyntaxError> {
    let top: FlatTable = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
    let mut sections = Vec::new();
    for (key, value) in top {
        let line = line_of(text, key.span().start);
        let entry = KeyValue {
            key: key.into_inner(),
            line,
            value: value.into_inner(),
        };
        sections.push((entry, Vec::new()));
    }
    // Re-read the tables with spans on their own keys. Only documents whose
    // every top-level value is a table parse this way; others keep the flat
    // view above, where the caller reports the non-table keys.
    type Nested = BTreeMap<Spanned<String>, Spanned<FlatTable>>;
    if let Ok(nested) = toml::from_str::<Nested>(text) {
        for (key, table) in nested {
            let inner = entries(text, table.into_inner());
            if let Some((_, slot)) = sections.iter_mut().find(|(s, _)| s.key == *key.get_ref()) {
                *slot = inner;
            }
        }
    }
    sections.sort_by_key(|(s, _)| s.line);
    Ok(sections)
}

fn entries(text: &str, table: FlatTable) -> Vec<KeyValue> {
    let mut out: Vec<KeyValue> = table
        .into_iter()
        .map(|(k, v)| KeyValue {
            line: line_of(text, k.span().start),
            key: k.into_inner(),
            value: v.into_inner(),
        })
        .collect();
    out.sort_by_key(|e| e.line);
    out
}

fn syntax_error(text: &str, error: &toml::de::Error) -> SyntaxError {
    let message = error.message().trim().to_string();
    SyntaxError {
        line: error.span().map(|s| line_of(text, s.start)),
        message,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |head| head.matches('\n').count())
        + 1
}

fn type_name(value: &toml::Value) -> &'static str {
    value.type_str()
}

// Typed readers: each returns the reason when the value has the wrong shape.

pub fn string(value: &toml::Value) -> Result<&str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("expected a string, found {}", type_name(value)))
}

pub fn boolean(value: &toml::Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("expected true or false, found {}", type_name(value)))
}

pub fn unsigned<T: TryFrom<i64>>(value: &toml::Value, max: i64) -> Result<T, String> {
    let n = value
        .as_integer()
        .ok_or_else(|| format!("expected an integer, found {}", type_name(value)))?;
    if n < 0 || n > max {
        return Err(format!("{n} is out of range 0..={max}"));
    }
    T::try_from(n).map_err(|_| format!("{n} is out of range 0..={max}"))
}

/// A list of strings; a single string is taken as a list of one.
pub fn strings(value: &toml::Value) -> Result<Vec<String>, String> {
    match value {
        toml::Value::String(s) => Ok(vec![s.clone()]),
        toml::Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str().map(str::to_string).ok_or_else(|| {
                    format!(
                        "element {}: expected a string, found {}",
                        i + 1,
                        type_name(item)
                    )
                })
            })
            .collect(),
        other => Err(format!(
            "expected a string or an array of strings, found {}",
            type_name(other)
        )),
    }
}

/// A duration: seconds as an integer or a float, or a systemd time span.
pub fn duration(value: &toml::Value) -> Result<Duration, String> {
    match value {
        toml::Value::Integer(n) => duration::from_secs_i64(*n),
        toml::Value::Float(f) => duration::from_secs_f64(*f),
        toml::Value::String(s) => duration::parse(s),
        other => Err(format!(
            "expected a duration such as 5, 0.5 or \"1min 30s\", found {}",
            type_name(other)
        )),
    }
}

/// One of a fixed set of words.
pub fn choice<T: Copy>(value: &toml::Value, table: &[(&str, T)]) -> Result<T, String> {
    let word = string(value)?;
    table
        .iter()
        .find(|(name, _)| *name == word)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            format!(
                "invalid value {word:?}: expected one of {}",
                names.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keys_keep_their_lines() {
        let doc = "# comment\nExecStart = \"/bin/true\"\n\nRestart = \"always\"\n";
        let entries = parse_flat(doc).unwrap();
        let seen: Vec<(&str, usize)> = entries.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(seen, [("ExecStart", 2), ("Restart", 4)]);
    }

    #[test]
    fn sections_keep_their_lines() {
        let doc = "[log]\nlevel = \"debug\"\n\n[boot]\nhostname = \"x\"\nloopback = false\n";
        let sections = parse_sections(doc).unwrap();
        assert_eq!(sections.len(), 2);
        assert_eq!(sections[0].0.key, "log");
        assert_eq!(sections[0].1[0].line, 2);
        assert_eq!(sections[1].0.key, "boot");
        let keys: Vec<(&str, usize)> = sections[1]
            .1
            .iter()
            .map(|e| (e.key.as_str(), e.line))
            .collect();
        assert_eq!(keys, [("hostname", 5), ("loopback", 6)]);
    }

    #[test]
    fn syntax_errors_have_lines() {
        let err = parse_flat("A = 1\nB = \n").unwrap_err();
        assert_eq!(err.line, Some(2));
        let err = parse_flat("A = 1\nA = 2\n").unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("duplicate key"), "{}", err.message);
    }
}
