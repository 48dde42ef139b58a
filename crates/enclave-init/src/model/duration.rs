//! Time spans in systemd's syntax: `"500ms"`, `"5s"`, `"2min"`, `"1min 30s"`,
//! `"1.5s"`, a bare number of seconds, or `"infinity"`.
//!
//! `infinity` is [`Duration::MAX`]: callers turn a deadline that overflows
//! `Instant` into "no deadline" with `Instant::checked_add`.

use std::time::Duration;

/// Units systemd accepts in a time span, with their length in nanoseconds.
/// Longest names first so that `"ms"` is not read as `"m"` + `"s"`.
const UNITS: &[(&str, u128)] = &[
    ("minutes", 60_000_000_000),
    ("minute", 60_000_000_000),
    ("seconds", 1_000_000_000),
    ("second", 1_000_000_000),
    ("hours", 3_600_000_000_000),
    ("hour", 3_600_000_000_000),
    ("days", 86_400_000_000_000),
    ("day", 86_400_000_000_000),
    ("weeks", 604_800_000_000_000),
    ("week", 604_800_000_000_000),
    ("msec", 1_000_000),
    ("usec", 1_000),
    ("nsec", 1),
    ("sec", 1_000_000_000),
    ("min", 60_000_000_000),
    ("hr", 3_600_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("µs", 1_000),
    ("ns", 1),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
    ("w", 604_800_000_000_000),
];

/// Parses a time span string. The error says what was wrong, for the caller
/// to wrap with the file and key.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if text == "infinity" {
        return Ok(Duration::MAX);
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() {
            return Err(format!(
                "invalid duration {text:?}: expected a number at {rest:?}"
            ));
        }
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale = if unit.is_empty() {
            1_000_000_000
        } else {
            UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, nanos)| *nanos)
                .ok_or_else(|| format!("invalid duration {text:?}: unknown unit {unit:?}"))?
        };
        let nanos = scale_number(number, scale)
            .ok_or_else(|| format!("invalid duration {text:?}: bad number {number:?}"))?;
        total = total
            .checked_add(nanos)
            .ok_or_else(|| format!("invalid duration {text:?}: too large"))?;
        rest = after.trim_start();
    }
    nanos_to_duration(total).ok_or_else(|| format!("invalid duration {text:?}: too large"))
}

/// Seconds given as a TOML float.
pub fn from_secs_f64(secs: f64) -> Result<Duration, String> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!(
            "invalid duration {secs}: must be a non-negative number of seconds"
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration {secs}: too large"))
}

/// Seconds given as a TOML integer.
pub fn from_secs_i64(secs: i64) -> Result<Duration, String> {
    u64::try_from(secs)
        .map(Duration::from_secs)
        .map_err(|_| format!("invalid duration {secs}: must not be negative"))
}

/// `"1.5"` × scale, exactly, in nanoseconds.
fn scale_number(number: &str, scale: u128) -> Option<u128> {
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if fraction.contains('.') {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut nanos = whole.checked_mul(scale)?;
    let mut place = scale;
    for digit in fraction.chars() {
        place /= 10;
        nanos = nanos.checked_add(u128::from(digit.to_digit(10)?) * place)?;
    }
    Some(nanos)
}

fn nanos_to_duration(nanos: u128) -> Option<Duration> {
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    let sub = u32::try_from(nanos % 1_000_000_000).ok()?;
    Some(Duration::new(secs, sub))
}

/// Human form used in log lines and `initctl status`: `"100ms"`, `"1min 30s"`.
pub fn format(d: Duration) -> String {
    if d == Duration::MAX {
        return "infinity".into();
    }
    let ms = d.as_millis();
    if ms < 1000 {
        if ms == 0 && d.as_nanos() > 0 {
            return format!("{}us", d.as_micros());
        }
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let rest_ms = ms % 1000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let mut parts = Vec::new();
    if h > 0 {
        parts.push(format!("{h}h"));
    }
    if m > 0 {
        parts.push(format!("{m}min"));
    }
    if s > 0 || rest_ms > 0 {
        if rest_ms > 0 {
            let fraction = format!("{rest_ms:03}");
            parts.push(format!("{s}.{}s", fraction.trim_end_matches('0')));
        } else {
            parts.push(format!("{s}s"));
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        let cases: &[(&str, Duration)] = &[
            ("5", Duration::from_secs(5)),
            ("5s", Duration::from_secs(5)),
            ("500ms", Duration::from_millis(500)),
            ("2min", Duration::from_secs(120)),
            ("1min 30s", Duration::from_secs(90)),
            ("1min30s", Duration::from_secs(90)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.2", Duration::from_millis(200)),
            (".5s", Duration::from_millis(500)),
            ("1h 2m 3s", Duration::from_secs(3723)),
            ("2 hours", Duration::from_secs(7200)),
            ("10us", Duration::from_micros(10)),
            ("1d", Duration::from_secs(86400)),
            ("0", Duration::ZERO),
            ("  7s ", Duration::from_secs(7)),
            ("infinity", Duration::MAX),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(*want), "{text}");
        }
    }

    #[test]
    fn rejected_forms() {
        let cases: &[(&str, &str)] = &[
            ("", "empty duration"),
            (
                "5 parsecs",
                "invalid duration \"5 parsecs\": unknown unit \"parsecs\"",
            ),
            ("s", "invalid duration \"s\": expected a number at \"s\""),
            (
                "-5s",
                "invalid duration \"-5s\": expected a number at \"-5s\"",
            ),
            (
                "1.2.3s",
                "invalid duration \"1.2.3s\": bad number \"1.2.3\"",
            ),
            (".", "invalid duration \".\": bad number \".\""),
            (
                "99999999999999999999999w",
                "invalid duration \"99999999999999999999999w\": too large",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Err(want.to_string()), "{text}");
        }
    }

    #[test]
    fn numbers_from_toml() {
        assert_eq!(from_secs_f64(0.25), Ok(Duration::from_millis(250)));
        assert_eq!(from_secs_i64(3), Ok(Duration::from_secs(3)));
        assert!(from_secs_f64(-1.0).is_err());
        assert!(from_secs_f64(f64::NAN).is_err());
        assert_eq!(
            from_secs_i64(-2),
            Err("invalid duration -2: must not be negative".to_string())
        );
    }

    #[test]
    fn formatting() {
        assert_eq!(format(Duration::from_millis(100)), "100ms");
        assert_eq!(format(Duration::from_secs(90)), "1min 30s");
        assert_eq!(format(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format(Duration::from_secs(3600)), "1h");
        assert_eq!(format(Duration::MAX), "infinity");
        assert_eq!(format(Duration::ZERO), "0ms");
    }
}
