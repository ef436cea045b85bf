//! One partition's append-only log for Sluice, shard-local and async on glommio.
//!
//! ```text
//!  append(Bytes) ─► validate + producer checks ─► assign offsets ─► pending + cache ─► flusher
//!                   (idempotence: producer.rs; a retried batch answers its original offsets)
//!  flusher: per dirty log one aligned DMA write (tail page + new bytes) + one fdatasync
//!           per segment, or one syncfs per cycle, or one journal record set + fdatasync
//!           per cycle with segments written behind (FlushSync) ─► durable offset advances
//!           ─► wait_durable / wait_progress wake
//!  read(from) ─► shard cache ─► pending (not yet durable) ─► DMA read of the segment
//!  replication: set_leader_epoch (append stamps it) ─ leader-epoch cache + checkpoint
//!               (epoch.rs) ─ append_replicated (leader's bytes kept) ─ truncate_from
//!               (truncate.rs: intent file, then files cut)
//!  cleaner (compacted logs): key map over the dirty part ─► cleaned segments written as
//!           .cleaned ─► swap: .swap, LogState switched, old files gone, final names
//!  transactions: every batch replayed into the producer state (producer.rs) ─► LSO,
//!           aborted entries per segment (.txnindex, txn.rs), snapshots at roll and
//!           close (snapshot.rs); append_control writes markers
//! ```
//!
//! Offsets may have gaps (a compacted log keeps batches at their original offsets):
//! recovery, reads, indexes and the producer-state rebuild accept them; `SegmentWriter`
//! writes such segments, and the cleaner makes them. Modules depend one way, top to
//! bottom (none names one above it):
//!
//! ```text
//!  log (PartitionLog), tasks (ShardStorage::start/shutdown, the background loops)
//!  recovery ─► truncate;  cleaner ─► read, cleaner_io;  read;  retention;  journal_flush
//!  ─► flusher, journal_file ─► journal;
//!  writer;  swap (the cleaner's file steps, and their completion at open)
//!  shard (ShardStorage: registry, cache, read-ahead windows, files)
//!  inner (LogInner: a log's shared core) ─► state (LogState: the only code that changes
//!                                                  a log's state)
//!  scan, producer, snapshot, txn, segment, pending, epoch, clean_point, offset_map,
//!  readahead, index, cache, files, reaper (retired files' queue), signal, ...
//! ```
//! Every type here is owned by one shard (one glommio executor) and never crosses cores;
//! only the `Bytes` returned by reads are `Send`.

mod blocking;
mod cache;
mod clean_point;
mod cleaner;
mod cleaner_io;
mod config;
mod epoch;
mod error;
mod files;
mod flusher;
mod group_sync;
mod histogram;
mod index;
mod inner;
mod journal;
mod journal_file;
mod journal_flush;
mod log;
mod log_start;
mod offset_map;
mod pending;
mod permit;
mod producer;
mod read;
mod readahead;
mod reaper;
mod recovery;
mod retention;
mod scan;
mod segment;
mod shard;
mod signal;
mod snapshot;
mod state;
mod swap;
mod tasks;
mod truncate;
mod txn;
mod writer;

pub use blocking::run as run_blocking;
pub use cleaner::CleanerPass;
pub use config::{CleanupPolicy, FlushSync, LogConfig, ShardStorageOptions};
pub use error::StorageError;
pub use histogram::LatencyHistogram;
pub use journal::{replay_journals, JournalReplay, JOURNAL_DIR};
pub use log::{AppendInfo, PartitionLog, TruncationMark, TxnVerification};
pub use permit::{acquire as acquire_permit, Acquire};
pub use retention::remove_deleted_dirs;
pub use scan::scan_prefix;
pub use shard::{ShardStorage, StorageMetrics};
pub use signal::{Signal, SignalWait};
#[doc(hidden)]
pub use swap::{CleanerHook, SwapStep};
pub use txn::{AbortedTxn, ProducerInfo};
pub use writer::SegmentWriter;

fn nofile() -> std::io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the rlimit struct we pass by pointer.
    #[allow(unsafe_code)]
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lim)
}

/// The soft RLIMIT_NOFILE now.
pub fn fd_limit() -> std::io::Result<u64> {
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
    Ok(nofile()?.rlim_cur as u64)
}

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut lim = nofile()?;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit only reads the fully initialised struct we pass by pointer.
        #[allow(unsafe_code)]
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    fd_limit()
}

/// A fresh directory for a unit test, under the target directory's `tmp/` (on the disk
/// the tests' DMA files need) or the system's temporary directory.
#[cfg(test)]
pub(crate) fn test_dir() -> tempfile::TempDir {
    let base = std::env::current_exe()
        .ok()
        .and_then(|e| e.ancestors().nth(3).map(|t| t.join("tmp")))
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).unwrap(); // ok: test setup
    tempfile::tempdir_in(base).unwrap() // ok: test setup
}

/// Runs `test` on a glommio executor of its own with a started shard storage (cleaner
/// off; the test shuts it down if it needs to), and waits for it.
#[cfg(test)]
pub(crate) fn on_test_shard<F, Fut>(test: F)
where
    F: FnOnce(std::rc::Rc<ShardStorage>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let shard = ShardStorage::start(ShardStorageOptions {
                cleaner_enabled: false,
                ..Default::default()
            });
            test(shard).await
        })
        .unwrap() // ok: test
        .join()
        .unwrap(); // ok: test
}

/// A v2 batch at `base` holding one record: key "k", `value`, timestamp 1.
#[cfg(test)]
pub(crate) fn test_batch(base: i64, value: &[u8]) -> bytes::Bytes {
    sluice_proto::batch::build_batch(
        base,
        &[sluice_proto::batch::SimpleRecord {
            key: Some(b"k"),
            value: Some(value),
            timestamp: 1,
            headers: &[],
        }],
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn fd_limit_is_raised_to_hard() {
        let soft = super::raise_fd_limit().unwrap();
        assert!(soft >= 1024);
        assert_eq!(super::raise_fd_limit().unwrap(), soft);
    }
}
