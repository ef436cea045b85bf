//! Putting cleaned segments in place of the segments they replace, atomically with respect
//! to a crash at any point, Kafka's way (LogCleaner + LogLoader): new files are written as
//! `.cleaned`, committed by renaming them to `.swap`, then the old files go and the
//! `.swap` files take the final names. Every step here is plain file-system calls, run on
//! a blocking helper of the shard (one call on the directory at a time); `cleaner.rs`
//! orders them around the in-memory switch.
//!
//! ```text
//!  1 write   <b>.log.cleaned, .index.cleaned, .txnindex.cleaned, .timeindex.cleaned
//!            (fdatasync each)
//!  2 commit  rename every .cleaned -> .swap, fsync dir              ── commit point
//!  3 remove  old segments each new one replaces (bases in [b, end)): renamed
//!            `.deleted`, fsync dir (the reaper frees them later, `reaper.rs`)
//!  4 install rename .swap -> .log, .index, then .timeindex, fsync dir
//! ```
//!
//! A crash before the commit point leaves `.cleaned` files (and perhaps some `.swap`):
//! `recover` removes them all and the old segments are whole. After it every new file is
//! a `.swap` (or already renamed) and `recover` finishes steps 3 and 4. A new segment's
//! time index ends with the last offset the segment covers (`Segment::final_time_index`,
//! also when it holds no batch), so recovery knows which old segments it replaces:
//! those with a base in (b, end); the old one at `b` is replaced by the rename. The time
//! index is renamed last, so it is a `.swap` as long as old segments may remain.

use crate::blocking::{remove_if_exists, sync_dir_now as sync_dir};
use crate::segment::{
    files, remove_segment_files, retire_segment_files, timeindex_path, with_suffix, CLEANED,
    DELETED, SWAP,
};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// The points of a cleaning pass's swap where a test may stop it as a crash would
/// (`PartitionLog::set_cleaner_hook`), in order. A `Half` step stops halfway through the
/// file operations of the step named after it.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SwapStep {
    /// Every `.cleaned` file written and synced; nothing renamed.
    Cleaned,
    HalfCommitted,
    /// Every new file is a `.swap` (the commit point); the log still reads the old ones.
    Committed,
    /// The log reads the new segments; every old file is still there.
    Switched,
    HalfRemoved,
    /// The old segments' files are gone.
    Removed,
    HalfInstalled,
    /// The new files have their final names; the cleaner checkpoint is not written yet.
    Installed,
}

/// A test's hook into a pass's swap: called at each `SwapStep` with the offset the pass
/// cleans up to (awaited: it may read the log meanwhile); false stops the pass there as a
/// crash would, leaving its files as they are (the test then abandons the shard without
/// closing it).
#[doc(hidden)]
pub type CleanerHook = std::rc::Rc<
    dyn Fn(SwapStep, i64) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool>>>,
>;

/// Whether a missing `from` may be skipped in a rename step: the cleaner writes all four
/// of a segment's files (`segment::files`), but the `.txnindex` is optional here, so a
/// swap of segments written without one still goes through.
fn optional(f: &Path, from: &Path) -> bool {
    f.extension().is_some_and(|e| e == "txnindex") && !from.exists()
}

/// Step 2: `.cleaned` -> `.swap` for every file of the new segments `bases`, then a
/// directory fsync. With `limit`, only that many renames and no fsync (a test's crash).
pub(crate) fn commit(dir: &Path, bases: &[i64], limit: Option<usize>) -> std::io::Result<()> {
    let mut left = limit.unwrap_or(usize::MAX);
    for &b in bases {
        for f in files(dir, b) {
            if left == 0 {
                return Ok(());
            }
            left -= 1;
            let from = with_suffix(&f, CLEANED);
            if optional(&f, &from) {
                continue;
            }
            std::fs::rename(from, with_suffix(&f, SWAP))?;
        }
    }
    if limit.is_none() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Step 3: take the old segments `old` out of the log (also those at a new segment's
/// base, which step 4 would otherwise replace): their files are renamed `.deleted`, for the shard's
/// reaper to free (`retired`), then a directory fsync. With `limit`, only that many
/// segments and no fsync.
pub(crate) fn retire_replaced(
    dir: &Path,
    old: &[i64],
    limit: Option<usize>,
) -> std::io::Result<()> {
    for &b in old.iter().take(limit.unwrap_or(usize::MAX)) {
        retire_segment_files(dir, b)?;
    }
    if limit.is_none() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// The names step 3 gives the files of the old segments `old`.
pub(crate) fn retired(dir: &Path, old: &[i64]) -> Vec<PathBuf> {
    old.iter()
        .flat_map(|&b| files(dir, b))
        .map(|f| with_suffix(&f, DELETED))
        .collect()
}

/// Step 4: the `.swap` files of `bases` take their final names (the time index of each
/// last), then a directory fsync. With `limit`, only that many renames and no fsync.
pub(crate) fn install(dir: &Path, bases: &[i64], limit: Option<usize>) -> std::io::Result<()> {
    let mut left = limit.unwrap_or(usize::MAX);
    for &b in bases {
        for f in files(dir, b) {
            if left == 0 {
                return Ok(());
            }
            left -= 1;
            let from = with_suffix(&f, SWAP);
            if optional(&f, &from) {
                continue;
            }
            match std::fs::rename(&from, &f) {
                Err(e) if e.kind() == ErrorKind::NotFound && !from.exists() && f.exists() => {}
                other => other?,
            }
        }
    }
    if limit.is_none() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Give up a swap not switched in yet (any step before 3): remove the new segments'
/// `.cleaned` and `.swap` files of `bases`. One `.cleaned` file stays until every other
/// file is durably gone (a `.swap` is renamed back for it if needed), so a crash here
/// still looks like one before the commit point and `recover` rolls back.
pub(crate) fn abandon(dir: &Path, bases: &[i64]) -> std::io::Result<()> {
    let mut cleaned = Vec::new();
    let mut swapped = Vec::new();
    for &b in bases {
        for f in files(dir, b) {
            let (c, s) = (with_suffix(&f, CLEANED), with_suffix(&f, SWAP));
            if c.exists() {
                cleaned.push(c);
            }
            if s.exists() {
                swapped.push(s);
            }
        }
    }
    let marker = match cleaned.pop() {
        Some(c) => c,
        None => match swapped.pop() {
            Some(s) => {
                let c = s.with_extension(CLEANED);
                std::fs::rename(&s, &c)?;
                sync_dir(dir)?;
                c
            }
            None => return Ok(()),
        },
    };
    for p in cleaned.iter().chain(&swapped) {
        remove_if_exists(p)?;
    }
    sync_dir(dir)?;
    remove_if_exists(&marker)?;
    sync_dir(dir)
}

/// The base offset in a segment file name (`<base:020>.<ext>...`).
fn base_of(name: &str) -> Option<i64> {
    let stem = name.get(..20)?;
    if name.as_bytes().get(20) != Some(&b'.') || !stem.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The end of the offsets a new segment covers, from the final entry of its time index.
fn covered_end(dir: &Path, base: i64) -> Option<i64> {
    let b = std::fs::read(with_suffix(&timeindex_path(dir, base), SWAP)).ok()?;
    let (_, rel) = crate::index::TimeIndex::decode_last(&b)?;
    Some(base + rel as i64 + 1)
}

/// At open, before the segments are listed (blocking): finish a swap a crash interrupted
/// after its commit point, or roll back one interrupted before it. Returns whether it
/// changed anything. Files retired and not freed yet (`.deleted`) are removed here.
pub(crate) fn recover(dir: &Path) -> std::io::Result<bool> {
    let mut cleaned = Vec::new();
    let mut retired_left = 0;
    let mut swapped: Vec<(i64, PathBuf)> = Vec::new();
    // bases of segment files under their final names (an old segment's index files may
    // outlive its log file if a removal was cut short)
    let mut existing = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(&format!(".{CLEANED}")) {
            cleaned.push(e.path());
        } else if name.ends_with(&format!(".{DELETED}")) {
            remove_if_exists(&e.path())?;
            retired_left += 1;
        } else if let Some(b) = base_of(name) {
            match &name[20..] {
                ".log" | ".index" | ".txnindex" | ".timeindex" => existing.push(b),
                n if n.ends_with(&format!(".{SWAP}")) => swapped.push((b, e.path())),
                _ => {}
            }
        }
    }
    if retired_left > 0 {
        tracing::info!(dir = %dir.display(), files = retired_left,
            "removed segment files retired before the last stop");
    }
    if !cleaned.is_empty() {
        tracing::warn!(dir = %dir.display(), files = cleaned.len() + swapped.len(),
            "rolling back a log cleaning interrupted before its swap");
        for p in cleaned.iter().chain(swapped.iter().map(|s| &s.1)) {
            remove_if_exists(p)?;
        }
        sync_dir(dir)?;
        return Ok(true);
    }
    if swapped.is_empty() {
        return Ok(false);
    }
    let mut bases: Vec<i64> = swapped.iter().map(|s| s.0).collect();
    bases.sort_unstable();
    bases.dedup();
    tracing::warn!(dir = %dir.display(), segments = bases.len(),
        "finishing a segment swap interrupted by a crash");
    existing.sort_unstable();
    existing.dedup();
    let mut old = Vec::new();
    for &b in &bases {
        // no `.timeindex.swap` left: step 4 had begun, so step 3 was durable
        if let Some(end) = covered_end(dir, b) {
            old.extend(existing.iter().copied().filter(|&o| o > b && o < end));
        }
    }
    for b in old {
        remove_segment_files(dir, b)?;
    }
    sync_dir(dir)?;
    install(dir, &bases, None)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{list_segments, log_path};

    fn touch(p: &Path, data: &[u8]) {
        std::fs::write(p, data).unwrap(); // ok: test
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap() // ok: test
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned()) // ok: test
            .collect();
        v.sort();
        v
    }

    /// Old segments 0, 10, 20, 30 (four files each); new segment 0 replaces [0, 30) as
    /// `.cleaned` files.
    fn setup(dir: &Path) {
        for b in [0, 10, 20, 30] {
            for f in files(dir, b) {
                touch(&f, b"old");
            }
        }
        let mut t = crate::index::TimeIndex::default();
        t.push_final(5, 29);
        let [l, i, x, ti] = files(dir, 0);
        touch(&with_suffix(&l, CLEANED), b"new");
        touch(&with_suffix(&i, CLEANED), b"");
        touch(&with_suffix(&x, CLEANED), b"");
        touch(&with_suffix(&ti, CLEANED), &t.encode());
    }

    #[test]
    fn a_crash_before_the_commit_point_rolls_back() {
        for renamed in 0..3 {
            let d = tempfile::tempdir().unwrap(); // ok: test
            setup(d.path());
            commit(d.path(), &[0], Some(renamed)).unwrap(); // ok: test
            assert!(recover(d.path()).unwrap()); // ok: test
            assert_eq!(list_segments(d.path()).unwrap(), vec![0, 10, 20, 30]); // ok: test
            assert_eq!(std::fs::read(log_path(d.path(), 0)).unwrap(), b"old"); // ok: test
            assert_eq!(names(d.path()).len(), 16);
        }
    }

    #[test]
    fn a_crash_after_the_commit_point_finishes_the_swap() {
        for (removed, installed) in [(0, 0), (1, 0), (2, 0), (2, 1), (2, 2)] {
            let d = tempfile::tempdir().unwrap(); // ok: test
            setup(d.path());
            commit(d.path(), &[0], None).unwrap(); // ok: test
            retire_replaced(d.path(), &[10, 20], Some(removed)).unwrap(); // ok: test
            if removed == 1 {
                // a retirement cut short: segment 20's log file renamed, its indexes not
                let l = log_path(d.path(), 20);
                std::fs::rename(&l, with_suffix(&l, DELETED)).unwrap(); // ok: test
            }
            install(d.path(), &[0], Some(installed)).unwrap(); // ok: test
            assert!(recover(d.path()).unwrap()); // ok: test
            assert_eq!(list_segments(d.path()).unwrap(), vec![0, 30]); // ok: test
            assert_eq!(std::fs::read(log_path(d.path(), 0)).unwrap(), b"new"); // ok: test
            assert_eq!(std::fs::read(log_path(d.path(), 30)).unwrap(), b"old"); // ok: test
            assert_eq!(names(d.path()).len(), 8);
            assert!(!recover(d.path()).unwrap()); // ok: test
        }
    }

    #[test]
    fn abandoning_keeps_a_cleaned_file_to_the_end() {
        let d = tempfile::tempdir().unwrap(); // ok: test
        setup(d.path());
        commit(d.path(), &[0], None).unwrap(); // ok: test
        abandon(d.path(), &[0]).unwrap(); // ok: test
        assert_eq!(names(d.path()).len(), 16);
        assert_eq!(std::fs::read(log_path(d.path(), 0)).unwrap(), b"old"); // ok: test
        assert!(!recover(d.path()).unwrap()); // ok: test
    }
}
