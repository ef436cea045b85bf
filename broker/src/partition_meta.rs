//! `partition.metadata` in every partition directory: the id of the topic the log belongs
//! to, in Kafka's format (`version: 0` / `topic_id: <base64url uuid>`). A directory is
//! named after the topic's name only, so a topic deleted while this node was down and then
//! created again under the same name would otherwise reopen the old log and serve (or
//! replicate against) records of another topic. Opening a partition checks the file: a
//! different id means the directory is a leftover, deleted before the log is created anew.
//!
//! File operations run on the shard's blocking helpers, never on the reactor, keyed by the
//! partition directory (`sluice_storage::run_blocking`: one call on a directory at a time).

use std::path::{Path, PathBuf};

use crate::metadata::image::TopicId;
use sluice_storage::{PartitionLog, StorageError};

pub(crate) const FILE: &str = "partition.metadata";

/// What a partition directory says about its topic.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// No directory yet, or one from before the file existed (kept: nothing says it is
    /// another topic's).
    Unmarked,
    /// Marked with this topic's id.
    Same,
    /// Marked with another topic's id (or unreadable): a leftover.
    Other(String),
}

/// Kafka's textual topic id: base64url of the 16 bytes, no padding (22 characters).
pub(crate) fn topic_id_string(id: &TopicId) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    for chunk in id.chunks(3) {
        let mut n = 0u32;
        for (i, b) in chunk.iter().enumerate() {
            n |= u32::from(*b) << (16 - 8 * i);
        }
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn render(id: &TopicId) -> String {
    format!("version: 0\ntopic_id: {}\n", topic_id_string(id))
}

/// The topic id a file's text names, if it is a well-formed version-0 file.
fn parse(text: &str) -> Option<&str> {
    let mut lines = text.lines();
    if lines.next()?.trim() != "version: 0" {
        return None;
    }
    let id = lines.next()?.strip_prefix("topic_id:")?.trim();
    (id.len() == 22).then_some(id)
}

fn check_blocking(dir: &Path, id: &TopicId) -> Found {
    match std::fs::read_to_string(dir.join(FILE)) {
        Ok(text) => match parse(&text) {
            Some(found) if found == topic_id_string(id) => Found::Same,
            Some(found) => Found::Other(found.to_string()),
            None => Found::Other("an unreadable partition.metadata".to_string()),
        },
        Err(_) => Found::Unmarked,
    }
}

/// Reads `dir`'s mark (on a blocking helper).
pub(crate) async fn check(dir: PathBuf, id: TopicId) -> Found {
    sluice_storage::run_blocking(&dir.clone(), move || check_blocking(&dir, &id)).await
}

/// Marks the log's directory as topic `id`'s: a temporary file, fsynced, renamed over,
/// and the directory fsynced, on a blocking helper (`PartitionLog::write_dir_file`, whose
/// directory fsync also covers a new log's first segment, so its first flush needs none).
pub(crate) async fn mark(log: &PartitionLog, id: TopicId) -> Result<(), StorageError> {
    log.write_dir_file(FILE, render(&id).into_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_topic_id_text() {
        // Kafka's Uuid.toString of the all-zero and a known id
        assert_eq!(topic_id_string(&[0; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        let id = *uuid::Uuid::parse_str("5f738735-33cd-479e-a04c-f1a9dba6f266")
            .unwrap() // ok: test
            .as_bytes();
        assert_eq!(topic_id_string(&id), "X3OHNTPNR56gTPGp26byZg");
        assert_eq!(parse(&render(&id)), Some("X3OHNTPNR56gTPGp26byZg"));
        assert_eq!(
            parse("version: 1\ntopic_id: X3OHNTPNR56gTPGp26byZg\n"),
            None
        );
        assert_eq!(parse("version: 0\ntopic_id: short\n"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn marks_are_checked() {
        let dir = tempfile::tempdir().unwrap(); // ok: test
        let (a, b) = ([1u8; 16], [2u8; 16]);
        assert_eq!(check_blocking(dir.path(), &a), Found::Unmarked);
        std::fs::write(dir.path().join(FILE), render(&a)).unwrap(); // ok: test
        assert_eq!(check_blocking(dir.path(), &a), Found::Same);
        assert!(matches!(check_blocking(dir.path(), &b), Found::Other(_)));
        std::fs::write(dir.path().join(FILE), "garbage").unwrap(); // ok: test
        assert!(matches!(check_blocking(dir.path(), &a), Found::Other(_)));
    }
}
