//! A log start inside a segment: DeleteRecords (`PartitionLog::advance_log_start`) and a
//! follower following its leader's log start move it past the first segment's base,
//! which the segments alone cannot say. Persisted per log as `log-start-offset-checkpoint`
//! in the partition directory (Kafka keeps one such checkpoint per log directory and
//! writes it every minute; here it is written before the move is visible, so a deletion
//! that was answered stays done after `kill -9`):
//!
//! ```text
//!  0        version
//!  5000     log start offset
//! ```
//!
//! The file is written under the log's I/O permit (temp file, fsync, rename, directory
//! fsync), so it never races a truncation; a value at or below the first segment's base
//! says nothing and is harmless. Unreadable, it is logged and ignored (the log starts at
//! its first segment, as before any deletion).

use std::path::{Path, PathBuf};

pub(crate) const FILE: &str = "log-start-offset-checkpoint";
const TMP: &str = "log-start-offset-checkpoint.tmp";
const VERSION: i64 = 0;

fn encode(offset: i64) -> Vec<u8> {
    format!("{VERSION}\n{offset}\n").into_bytes()
}

fn decode(b: &[u8]) -> Result<i64, String> {
    let text = std::str::from_utf8(b).map_err(|_| "not UTF-8".to_string())?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    match (lines.next(), lines.next(), lines.next()) {
        (Some(v), Some(o), None) if v.parse::<i64>() == Ok(VERSION) => o
            .parse::<i64>()
            .ok()
            .filter(|&o| o >= 0)
            .ok_or_else(|| format!("bad offset {o:?}")),
        _ => Err("not version 0 with one offset".into()),
    }
}

/// The log start the file holds; None if there is none or it is unusable. Blocking: run
/// only on a blocking helper (the open's survey, `recovery.rs`).
pub(crate) fn load(dir: &Path) -> std::io::Result<Option<i64>> {
    match std::fs::read(dir.join(FILE)) {
        Ok(b) => Ok(decode(&b)
            .map_err(|why| {
                tracing::warn!(dir = %dir.display(), why, "unusable log start checkpoint; the log starts at its first segment");
            })
            .ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Persists `offset` as the log's start, atomically, on a blocking helper.
pub(crate) async fn write(dir: PathBuf, offset: i64) -> std::io::Result<()> {
    crate::blocking::run(&dir.clone(), move || {
        crate::blocking::write_atomic(&dir, TMP, FILE, &encode(offset))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unusable_files() {
        assert_eq!(decode(&encode(5000)), Ok(5000));
        assert_eq!(decode(&encode(0)), Ok(0));
        assert!(decode(b"0\n").is_err());
        assert!(decode(b"1\n5\n").is_err());
        assert!(decode(b"0\n-3\n").is_err());
        assert!(decode(b"0\nfive\n").is_err());
        assert!(decode(b"0\n5\n6\n").is_err());
        assert!(decode(&[0xff, 0xfe]).is_err());
        let dir = tempfile::tempdir().unwrap(); // ok: test
        assert_eq!(load(dir.path()).unwrap(), None); // ok: test
        std::fs::write(dir.path().join(FILE), b"garbage").unwrap(); // ok: test
        assert_eq!(load(dir.path()).unwrap(), None); // ok: test
        std::fs::write(dir.path().join(FILE), encode(77)).unwrap(); // ok: test
        assert_eq!(load(dir.path()).unwrap(), Some(77)); // ok: test
    }
}
