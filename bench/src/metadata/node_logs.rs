//! Reading the nodes' logs of a local cluster: ANSI escapes stripped, the current run
//! found, leader and unfence lines parsed with their timestamps, and each node's view of
//! who leads the quorum.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

/// Removes ANSI escape sequences (CSI `ESC [ ... final` and two-byte `ESC x`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        // ESC x is dropped whole; after ESC [ everything up to the final byte goes too.
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// The part of a node log written by its current process: after the last
/// `===== ... starting node` line local-cluster.sh writes before each start.
pub fn current_run(log: &str) -> &str {
    let mut start = 0;
    let mut pos = 0;
    for line in log.split_inclusive('\n') {
        if line.starts_with("=====") && line.contains("starting node") {
            start = pos + line.len();
        }
        pos += line.len();
    }
    &log[start..]
}

/// A `metadata quorum leader` line: its timestamp and `leader=` value.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaderLine {
    /// The line's leading timestamp, if it parses.
    pub at: Option<SystemTime>,
    /// `leader=Some(N)` -> `Some(N)`, `leader=None` -> `None`.
    pub leader: Option<u64>,
}

/// Parses the `leader=` field of a `metadata quorum leader` line.
pub fn parse_leader_line(line: &str) -> Option<LeaderLine> {
    let idx = line.find("metadata quorum leader")?;
    let rest = &line[idx + "metadata quorum leader".len()..];
    let field = rest
        .find(" leader=")
        .map(|i| &rest[i + " leader=".len()..])?;
    let leader = if field.starts_with("None") {
        None
    } else {
        let inner = field.strip_prefix("Some(")?;
        let end = inner.find(')')?;
        Some(inner[..end].trim().parse().ok()?)
    };
    Some(LeaderLine {
        at: line_time(line),
        leader,
    })
}

/// Whether the line is the one the raft leader logs once it acts as controller.
pub fn is_active_line(line: &str) -> bool {
    line.contains(": active controller")
}

fn field_u64(line: &str, name: &str) -> Option<u64> {
    let pat = format!(" {name}=");
    let i = line.find(&pat)?;
    let digits: String = line[i + pat.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The leading RFC 3339 UTC timestamp of a log line (tracing's default format).
pub fn line_time(line: &str) -> Option<SystemTime> {
    parse_rfc3339_utc(line.split_whitespace().next()?)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
pub fn parse_rfc3339_utc(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let rest = s.get(19..)?;
    let rest = rest.strip_suffix('Z')?;
    let nanos = if rest.is_empty() {
        0
    } else {
        let frac = rest.strip_prefix('.')?;
        if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let v: u32 = frac.parse().ok()?;
        v * 10u32.pow(9 - frac.len() as u32)
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3_600 + mi * 60 + sec;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What a node's current log says about the controller quorum.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeView {
    /// The last `metadata quorum leader` line.
    pub last_leader: Option<LeaderLine>,
    /// An `active controller` line after that leader line: (time, term).
    pub active_since_leader: Option<(Option<SystemTime>, Option<u64>)>,
}

/// Reads what the current run of a node's log says (`log` may hold earlier runs).
pub fn node_view(log: &str) -> NodeView {
    let mut v = NodeView::default();
    for raw in current_run(log).lines() {
        if !raw.contains("metadata quorum leader") && !raw.contains("active controller") {
            continue;
        }
        let line = strip_ansi(raw);
        if let Some(l) = parse_leader_line(&line) {
            v.last_leader = Some(l);
            v.active_since_leader = None;
        } else if is_active_line(&line) {
            v.active_since_leader = Some((line_time(&line), field_u64(&line, "term")));
        }
    }
    v
}

/// The timestamp of the first `broker unfenced node=<id>` line at or after `since`.
pub fn unfenced_line(log: &str, id: u64, since: SystemTime) -> Option<SystemTime> {
    log.lines()
        .filter(|l| l.contains("broker unfenced"))
        .map(strip_ansi)
        .filter(|l| field_u64(l, "node") == Some(id))
        .filter_map(|l| line_time(&l))
        .find(|&t| t >= since)
}

/// The majority's leader among `views`: `Some(n)` when more than half name node n.
pub fn majority_leader(views: &[NodeView]) -> Option<u64> {
    let mut votes: HashMap<u64, usize> = HashMap::new();
    for v in views {
        if let Some(LeaderLine {
            leader: Some(n), ..
        }) = &v.last_leader
        {
            *votes.entry(*n).or_insert(0) += 1;
        }
    }
    votes
        .into_iter()
        .find(|&(_, c)| c * 2 > views.len())
        .map(|(n, _)| n)
}

/// Reads a node log: the last 8 MiB, or the whole file if the current run started
/// earlier than that (the current run must be complete for `node_view`).
pub(super) fn read_log(path: &Path) -> Result<String> {
    const TAIL: u64 = 8 << 20;
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    if len > TAIL {
        f.seek(SeekFrom::Start(len - TAIL))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        if text.contains("starting node") {
            return Ok(text);
        }
        f.seek(SeekFrom::Start(0))?;
    }
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
