//! Waiting for the disk under a directory to go quiet before a measured phase.
//!
//! A phase that ends by deleting its topic (or a cluster whose data directory is removed)
//! leaves the disk busy for many seconds after it: on a file system mounted with online
//! `discard`, freeing the 27 GB of a 3-node max-produce phase trimmed 1.2–1.7 GB/s for
//! 16 s, inside the next phase's measured window, where every broker `fdatasync` shares
//! the device with it. A phase measures one load, so it starts once the device has
//! written and discarded less than
//! [`QUIET_BYTES_PER_SEC`] for [`QUIET_SECONDS`] seconds in a row, or after a bound.
//!
//! The device is the one `/sys/dev/block/<major>:<minor>/stat` names for the directory's
//! file system (a partition has its own counters); fields 7 and 14 (from 1) are sectors
//! written and discarded, in 512-byte units whatever the device's block size. A file system
//! without a block device (tmpfs, overlay) is not waited for.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Written + discarded bytes per second below which a second counts as quiet.
pub const QUIET_BYTES_PER_SEC: u64 = 2 << 20;

/// Quiet seconds in a row that end the wait.
pub const QUIET_SECONDS: u32 = 2;

/// How the wait ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settled {
    /// Seconds waited.
    pub waited: Duration,
    /// Whether the device went quiet (false: the bound passed, or there is no device).
    pub quiet: bool,
}

/// The `stat` file of the block device holding `dir`, if it has one.
pub fn stat_path(dir: &Path) -> Result<Option<PathBuf>> {
    let dev = std::fs::metadata(dir)
        .with_context(|| format!("stat {}", dir.display()))?
        .dev();
    let p = PathBuf::from(format!(
        "/sys/dev/block/{}:{}/stat",
        libc::major(dev),
        libc::minor(dev)
    ));
    Ok(p.exists().then_some(p))
}

/// Sectors written + discarded so far, from the text of a block device's `stat`.
pub fn parse_busy_sectors(stat: &str) -> Option<u64> {
    let f: Vec<u64> = stat
        .split_whitespace()
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // kernels before 4.18 have no discard fields: writes only
    Some(f.get(6)? + f.get(13).copied().unwrap_or(0))
}

fn busy_sectors(stat: &Path) -> Result<u64> {
    let text =
        std::fs::read_to_string(stat).with_context(|| format!("reading {}", stat.display()))?;
    parse_busy_sectors(&text).with_context(|| format!("unexpected {}: {text:?}", stat.display()))
}

/// Waits (at most `bound`) until the device under `dir` is quiet (see the module doc).
pub fn wait_quiet(dir: &Path, bound: Duration) -> Result<Settled> {
    let started = Instant::now();
    let Some(stat) = stat_path(dir)? else {
        return Ok(Settled {
            waited: Duration::ZERO,
            quiet: false,
        });
    };
    let mut last = busy_sectors(&stat)?;
    let mut quiet_in_row = 0;
    while started.elapsed() < bound {
        std::thread::sleep(Duration::from_secs(1));
        let now = busy_sectors(&stat)?;
        let bytes = now.saturating_sub(last) * 512;
        last = now;
        quiet_in_row = if bytes < QUIET_BYTES_PER_SEC {
            quiet_in_row + 1
        } else {
            0
        };
        if quiet_in_row >= QUIET_SECONDS {
            return Ok(Settled {
                waited: started.elapsed(),
                quiet: true,
            });
        }
    }
    Ok(Settled {
        waited: started.elapsed(),
        quiet: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_sectors_are_written_plus_discarded() {
        // a 6.x kernel's 17 fields: writes sectors 7th, discards sectors 14th
        let s = "  100 0 2000 10 50 0 4096 20 0 30 40 5 0 8192 7 9 3\n";
        assert_eq!(parse_busy_sectors(s), Some(4096 + 8192));
        // before discard fields: writes alone
        assert_eq!(parse_busy_sectors("1 0 2 3 4 0 4096 5 0 6 7"), Some(4096));
        assert_eq!(parse_busy_sectors("1 2 3"), None);
        assert_eq!(parse_busy_sectors("1 0 x 3 4 0 4096 5 0 6 7"), None);
    }

    #[test]
    fn a_directory_on_this_machine_is_waited_for_within_the_bound() {
        let dir = std::env::temp_dir();
        let s = wait_quiet(&dir, Duration::from_secs(3)).unwrap();
        // the bound plus the last second's sleep, with room for a loaded machine
        assert!(s.waited <= Duration::from_secs(10), "{s:?}");
        if stat_path(&dir).unwrap().is_none() {
            assert!(!s.quiet);
        }
    }
}
