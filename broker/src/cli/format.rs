//! Output and parsing helpers shared by the admin verbs: `--format table|json`, aligned
//! text tables, Kafka error names (UNKNOWN_TOPIC_OR_PARTITION, as Kafka's tools print
//! them), `--timeout` durations, RFC 3339 timestamps and Kafka's base64url topic ids.
//! Nothing here does I/O except `progress` (one line to stderr) and `print_json`.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use kafka_protocol::ResponseError;

/// How results are printed on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON document (consume: one object per line) for scripts.
    Json,
}

/// A Kafka error code answered by a broker, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {name}{}", message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default())]
pub(crate) struct KafkaError {
    pub(crate) code: i16,
    pub(crate) name: String,
    pub(crate) what: String,
    pub(crate) message: Option<String>,
}

/// An error for Kafka error `code` while doing `what`, with the broker's message if any.
pub(crate) fn kafka_error(code: i16, what: &str, message: Option<&str>) -> anyhow::Error {
    KafkaError {
        code,
        name: error_name(code),
        what: what.to_string(),
        message: message.filter(|m| !m.is_empty()).map(str::to_string),
    }
    .into()
}

/// Kafka's name of an error code: `UNKNOWN_TOPIC_OR_PARTITION` for 3.
pub(crate) fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(ResponseError::Unknown(c)) => format!("UNKNOWN_ERROR_CODE_{c}"),
        Some(e) => screaming_snake(&format!("{e:?}")),
    }
}

/// `UnknownTopicOrPartition` → `UNKNOWN_TOPIC_OR_PARTITION`.
fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Column-aligned text: a header row and rows, two spaces between columns.
pub(crate) struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(headers: &[&'static str]) -> Self {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(c.chars().count());
                }
            }
        }
        let mut out = String::new();
        let mut line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut l = String::new();
            for (i, c) in cells.enumerate() {
                if i > 0 {
                    l.push_str("  ");
                }
                let _ = write!(l, "{c:<w$}", w = widths.get(i).copied().unwrap_or(0));
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&mut self.headers.iter().copied());
        for r in &self.rows {
            line(&mut r.iter().map(String::as_str));
        }
        out
    }
}

/// Prints `value` as one line of JSON on stdout.
pub(crate) fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

/// One progress line on stderr (stdout stays for results).
pub(crate) fn progress(msg: &str) {
    eprintln!("sluice: {msg}");
}

/// `NAME=VALUE` of a flag, trimmed.
pub(crate) fn split_kv<'a>(kv: &'a str, flag: &str) -> Result<(&'a str, &'a str)> {
    let (k, v) = kv
        .split_once('=')
        .with_context(|| format!("{flag} expects NAME=VALUE, got '{kv}'"))?;
    Ok((k.trim(), v.trim()))
}

/// `-` for an unknown number in tables.
pub(crate) fn opt_num(v: Option<i64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Broker ids as `1,2,3`.
pub(crate) fn ids(v: &[i32]) -> String {
    v.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// `30s`, `500ms`, `2m`, or a plain number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .with_context(|| format!("'{s}' is not a duration (e.g. 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("'{s}': unknown unit '{unit}' (ms, s, m, h)"),
    };
    if !(secs.is_finite() && secs > 0.0 && secs < 1e9) {
        bail!("'{s}' is not a positive duration");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Milliseconds since the epoch of an RFC 3339 timestamp: `2024-05-01T12:00:00Z`,
/// `2024-05-01T12:00:00.250+02:00` (a space may replace the `T`).
pub(crate) fn parse_rfc3339(s: &str) -> Result<i64> {
    let bad = || format!("'{s}' is not an RFC 3339 time such as 2024-05-01T12:00:00Z");
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<i64> {
        let part = b.get(r).with_context(bad)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            bail!(bad());
        }
        Ok(std::str::from_utf8(part)?.parse()?)
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        bail!(bad());
    }
    if b[13] != b':' || b[16] != b':' {
        bail!(bad());
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        bail!(bad());
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            bail!(bad());
        }
        // milliseconds: the first three fraction digits, padded
        let frac = &s.trim()[start..i];
        let ms = format!("{:0<3}", &frac[..frac.len().min(3)]);
        millis = ms.parse().with_context(bad)?;
    }
    let offset_min = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if h > 23 || m > 59 {
                bail!(bad());
            }
            let off = h * 60 + m;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => bail!(bad()),
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Ok(secs * 1000 + millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A topic id as Kafka prints it: 22 characters of unpadded base64url.
pub(crate) fn topic_id(id: &uuid::Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = id.as_bytes();
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for k in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * k)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(0), "NONE");
        assert_eq!(error_name(9999), "UNKNOWN_ERROR_CODE_9999");
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_rfc3339("2024-05-01T12:00:00Z").unwrap(),
            1_714_564_800_000
        );
        assert_eq!(
            parse_rfc3339("2024-05-01T14:00:00.25+02:00").unwrap(),
            1_714_564_800_250
        );
        assert_eq!(
            parse_rfc3339("2024-02-29 23:59:59.999-00:30").unwrap(),
            1_709_252_999_999
        );
        for bad in [
            "2024-05-01",
            "2024-05-01T12:00:00",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-05-01T12:00:00+0200",
            "2024-05-01T12:00:00.Z",
            "x024-05-01T12:00:00Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn topic_ids_are_base64url() {
        let id = uuid::Uuid::from_bytes([0xff; 16]);
        assert_eq!(topic_id(&id), "_____________________w");
        assert_eq!(topic_id(&uuid::Uuid::nil()), "AAAAAAAAAAAAAAAAAAAAAA");
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["xyz".into(), "1".into()]);
        assert_eq!(t.render(), "A    LONGER\nxyz  1\n");
    }
}
