//! Unit tests of `journal_flush.rs`: failed and stranded logs, write-behind retries,
//! the poisoned journal, the write-behind's turn.

use crate::{test_batch, test_dir, LogConfig, PartitionLog, ShardStorage, ShardStorageOptions};
use std::path::{Path, PathBuf};

fn journal_opts(root: &Path) -> ShardStorageOptions {
    ShardStorageOptions {
        flush_sync: crate::FlushSync::Journal,
        journal_dir: Some(root.to_path_buf()),
        journal_bytes: 16 << 20,
        journal_min_logs: 1,
        cleaner_enabled: false,
        ..Default::default()
    }
}

fn on_executor<F: std::future::Future<Output = ()> + 'static>(
    f: impl FnOnce() -> F + Send + 'static,
) {
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .unwrap() // ok: test
        .join()
        .unwrap(); // ok: test
}

/// Starts a journaled shard for `root` and opens the log at `dir`, then appends 4
/// batches, the last 3 with the write-behind paused (once the first has opened the
/// journal), each durable before the next: those are in the journal, not written
/// behind. Returns the shard, the log and every batch.
async fn journaled_not_behind(
    root: &Path,
    dir: PathBuf,
    config: LogConfig,
) -> (std::rc::Rc<ShardStorage>, PartitionLog, Vec<bytes::Bytes>) {
    let shard = ShardStorage::start(journal_opts(root));
    let log = PartitionLog::open(&shard, dir, config).await.unwrap();
    let mut appended = Vec::new();
    for i in 0..4u32 {
        let b = test_batch(0, &i.to_be_bytes());
        let info = log.append(b.clone(), 0).unwrap();
        appended.push(b);
        log.wait_durable(info.last_offset).await.unwrap();
        shard.journal_ctl().unwrap().behind_paused.set(true);
    }
    assert!(log.inner.state().pending().journaled() >= 3);
    (shard, log, appended)
}

/// Reopens the log at `dir` after the journals of `root` are replayed (as the broker
/// starts) and returns its log end.
fn reopened_end(root: PathBuf, dir: PathBuf) -> i64 {
    crate::replay_journals(&root).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    on_executor(move || async move {
        let shard = ShardStorage::start(journal_opts(&root));
        let log = PartitionLog::open(&shard, dir, LogConfig::default())
            .await
            .unwrap();
        tx.send(log.log_end_offset()).unwrap();
        shard.shutdown().await.unwrap();
    });
    rx.recv().unwrap()
}

#[test]
fn a_failed_log_keeps_its_journaled_batches_and_they_are_written_behind() {
    let root = test_dir();
    let (r, dir) = (root.path().to_path_buf(), root.path().join("t-0"));
    let (tx, rx) = std::sync::mpsc::channel();
    let d = dir.clone();
    on_executor(move || async move {
        let (shard, log, appended) = journaled_not_behind(&r, d, LogConfig::default()).await;
        log.inner
            .state_mut()
            .fail(&crate::StorageError::Io(std::io::Error::other("injected")));
        assert!(
            log.inner.state().stranded_in_journal(),
            "journaled batches dropped"
        );
        shard.journal_ctl().unwrap().behind_paused.set(false);
        // the checkpoint's pass writes them behind, then retires the epoch
        super::checkpoint(&shard).await.unwrap();
        assert_eq!(log.inner.state().pending().journaled(), 0);
        tx.send(appended.len() as i64).unwrap();
        // no close: the segments must hold what the retired epoch held
        std::mem::forget(log);
        std::mem::forget(shard);
    });
    let acked = rx.recv().unwrap();
    assert_eq!(reopened_end(root.path().to_path_buf(), dir), acked);
}

#[test]
fn a_checkpoint_keeps_the_epoch_of_batches_a_failed_log_cannot_write() {
    let root = test_dir();
    let (r, dir) = (root.path().to_path_buf(), root.path().join("t-0"));
    let (tx, rx) = std::sync::mpsc::channel();
    let d = dir.clone();
    on_executor(move || async move {
        let (shard, log, appended) =
            journaled_not_behind(&r, d.clone(), LogConfig::default()).await;
        // the segment can no longer be opened (a directory in its place, its cached
        // descriptor dropped): the write-behind fails
        let seg = crate::segment::log_path(&d, 0);
        let aside = d.join("aside");
        std::fs::rename(&seg, &aside).unwrap();
        std::fs::create_dir(&seg).unwrap();
        shard.inner.borrow_mut().files.remove(log.inner.id, 0);
        let ctl = shard.journal_ctl().unwrap();
        ctl.behind_paused.set(false);
        assert!(super::checkpoint(&shard).await.is_err(), "an epoch retired");
        assert!(log.inner.state().stranded_in_journal());
        assert!(
            ctl.journal.previous_live(),
            "the epoch holding them was retired"
        );
        tx.send(appended.len() as i64).unwrap();
        // the segment is back; a stop without close: the replay brings them back
        std::fs::remove_dir(&seg).unwrap();
        std::fs::rename(&aside, &seg).unwrap();
        std::mem::forget(log);
        std::mem::forget(shard);
    });
    let acked = rx.recv().unwrap();
    assert_eq!(reopened_end(root.path().to_path_buf(), dir.clone()), acked);

    // once the write goes through, a checkpoint retires the epochs
    let (r, d) = (root.path().to_path_buf(), dir.clone());
    crate::replay_journals(&r).unwrap();
    on_executor(move || async move {
        let (shard, log, _) = journaled_not_behind(&r, d.clone(), LogConfig::default()).await;
        let seg = crate::segment::log_path(&d, 0);
        let aside = d.join("aside");
        std::fs::rename(&seg, &aside).unwrap();
        std::fs::create_dir(&seg).unwrap();
        shard.inner.borrow_mut().files.remove(log.inner.id, 0);
        shard.journal_ctl().unwrap().behind_paused.set(false);
        assert!(super::checkpoint(&shard).await.is_err());
        std::fs::remove_dir(&seg).unwrap();
        std::fs::rename(&aside, &seg).unwrap();
        super::checkpoint(&shard).await.unwrap();
        assert!(!log.inner.state().stranded_in_journal());
        assert!(!shard.journal_ctl().unwrap().journal.previous_live());
        std::mem::forget(log);
        std::mem::forget(shard);
    });
}

#[test]
fn a_cycle_leaves_a_log_whose_write_behind_waits_for_it() {
    let root = test_dir();
    let r = root.path().to_path_buf();
    on_executor(move || async move {
        let shard = ShardStorage::start(journal_opts(&r));
        let log = PartitionLog::open(&shard, r.join("t-0"), LogConfig::default())
            .await
            .unwrap();
        let first = log.append(test_batch(0, b"a"), 0).unwrap();
        log.wait_durable(first.last_offset).await.unwrap();
        // its write-behind done (it clears the flag when it ends)
        for _ in 0..5000 {
            if log.inner.state().pending().is_empty() {
                break;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert!(
            log.inner.state().pending().is_empty(),
            "never written behind"
        );
        log.inner.behind_wanted.set(true);
        let second = log.append(test_batch(0, b"b"), 0).unwrap();
        for _ in 0..20 {
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            assert!(log.durable_offset() <= second.last_offset, "journaled it");
        }
        log.inner.behind_wanted.set(false);
        log.wait_durable(second.last_offset).await.unwrap();
        shard.shutdown().await.unwrap();
    });
}

/// The write-behind of three rolled segments fails at the third (a directory where
/// its file goes) after writing the first two; the retries write each batch where
/// the journal put it, once: every segment holds its batch once after a restart.
#[test]
fn a_write_behind_failing_partway_writes_each_batch_once() {
    let root = test_dir();
    let (r, dir) = (root.path().to_path_buf(), root.path().join("t-0"));
    let tiny = || LogConfig {
        segment_bytes: 64, // every batch rolls a segment
        ..Default::default()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let d = dir.clone();
    on_executor(move || async move {
        let (shard, log, appended) = journaled_not_behind(&r, d.clone(), tiny()).await;
        let bases: Vec<i64> = log
            .inner
            .state()
            .segments()
            .iter()
            .map(|s| s.base)
            .collect();
        assert!(bases.len() >= 4, "{bases:?}");
        let last = crate::segment::log_path(&d, bases[bases.len() - 1]);
        std::fs::create_dir(&last).unwrap();
        shard.journal_ctl().unwrap().behind_paused.set(false);
        assert!(super::checkpoint(&shard).await.is_err());
        assert!(log.inner.state().stranded_in_journal());
        std::fs::remove_dir(&last).unwrap();
        super::checkpoint(&shard).await.unwrap();
        assert!(!log.inner.state().stranded_in_journal());
        tx.send(appended).unwrap();
        std::mem::forget(log);
        std::mem::forget(shard);
    });
    let appended = rx.recv().unwrap();
    crate::replay_journals(root.path()).unwrap();
    let r = root.path().to_path_buf();
    on_executor(move || async move {
        let shard = ShardStorage::start(journal_opts(&r));
        let log = PartitionLog::open(&shard, dir, tiny()).await.unwrap();
        assert_eq!(log.log_end_offset(), appended.len() as i64);
        for (i, b) in appended.iter().enumerate() {
            let got = log
                .read(i as i64, i as i64 + 1, 1 << 20, true)
                .await
                .unwrap();
            assert_eq!(got.len(), 1, "offset {i}");
            let h = sluice_proto::batch::RecordBatchHeader::parse(&got[0]).unwrap();
            assert_eq!(h.base_offset, i as i64);
            assert_eq!(got[0][12..], b[12..], "offset {i}: another batch");
        }
        // each segment file holds its one batch, nothing after it
        for s in log.inner.state().segments().iter().take(appended.len()) {
            let len = std::fs::metadata(crate::segment::log_path(&log.inner.dir, s.base))
                .unwrap()
                .len();
            assert_eq!(len, s.size, "segment {}: written twice", s.base);
        }
        shard.shutdown().await.unwrap();
    });
}

/// A poisoned journal (a failed write or sync) takes no more writes and retires no
/// epoch; what it acknowledged before comes back at the next start.
#[test]
fn a_poisoned_journal_fails_writes_and_keeps_its_epochs_for_the_replay() {
    let root = test_dir();
    let (r, dir) = (root.path().to_path_buf(), root.path().join("t-0"));
    let (tx, rx) = std::sync::mpsc::channel();
    let d = dir.clone();
    on_executor(move || async move {
        let (shard, log, appended) = journaled_not_behind(&r, d, LogConfig::default()).await;
        let ctl = shard.journal_ctl().unwrap();
        super::poison(
            &shard,
            &crate::StorageError::Io(std::io::Error::other("injected")),
        );
        ctl.behind_paused.set(false);
        assert!(super::checkpoint(&shard).await.is_err());
        assert!(
            ctl.journal.used() > crate::journal::FIRST_SET,
            "the epoch was retired"
        );
        let next = log.append(test_batch(0, b"late"), 0).unwrap();
        assert!(log.wait_durable(next.last_offset).await.is_err());
        tx.send(appended.len() as i64).unwrap();
        std::mem::forget(log);
        std::mem::forget(shard);
    });
    let acked = rx.recv().unwrap();
    assert!(reopened_end(root.path().to_path_buf(), dir) >= acked);
}
