//! KIP-890 in storage: a transactional batch that would start its producer's transaction
//! in a log is appended only under the guard of a verification started there
//! (`start_txn_verification`) and not ended since by the producer's data or marker.

mod common;
use common::run;
use common::txn::tx_batch;
use sluice_storage::*;

fn open_new(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = common::tempdir();
    let path = dir.path().join(name);
    (dir, path)
}

/// Runs `f` on a new, empty log named `name` of a fresh shard, then shuts the shard down.
fn with_new_log<Fut: std::future::Future<Output = ()> + 'static>(
    name: &'static str,
    f: impl FnOnce(PartitionLog) -> Fut + Send + 'static,
) {
    let (_dir, path) = open_new(name);
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, path, LogConfig::default())
            .await
            .unwrap();
        f(log).await;
        shard.shutdown().await.unwrap();
    });
}

fn invalid_txn_state(r: Result<AppendInfo, StorageError>) -> bool {
    matches!(r, Err(StorageError::InvalidTxnState { .. }))
}

#[test]
fn a_transaction_starts_only_under_its_verification_guard() {
    with_new_log("t-0", |log| async move {
        let first = tx_batch(5, 0, 0, &[1], true);
        // not verified: refused, nothing written
        assert!(invalid_txn_state(log.append_with(
            first.clone(),
            1,
            TxnVerification::Guard(None)
        )));
        let guard = log.start_txn_verification(5, (0, 0), 1).unwrap();
        assert!(guard.is_some());
        // a guard that is not this verification's
        let wrong = guard.map(|g| g + 1_000_000);
        assert!(invalid_txn_state(log.append_with(
            first.clone(),
            1,
            TxnVerification::Guard(wrong)
        )));
        // a second start while the first is under way gives the same guard
        assert_eq!(log.start_txn_verification(5, (0, 0), 1).unwrap(), guard);
        assert_eq!(log.log_end_offset(), 0);
        let info = log
            .append_with(first.clone(), 1, TxnVerification::Guard(guard))
            .unwrap();
        assert_eq!(info.base_offset, 0);
        // the transaction is under way: nothing to verify, appended without a guard
        assert_eq!(log.start_txn_verification(5, (0, 0), 1).unwrap(), None);
        log.append_with(
            tx_batch(5, 0, 1, &[2], true),
            1,
            TxnVerification::Guard(None),
        )
        .unwrap();
        // the transaction ends: a retry of its first batch is still a duplicate, not an
        // unverified start
        log.append_control(5, 0, false, 0, 1).unwrap();
        let retry = log
            .append_with(first, 1, TxnVerification::Guard(None))
            .unwrap();
        assert!(retry.duplicate);
        assert_eq!(retry.base_offset, 0);
        // the next transaction needs a verification of its own: the old guard is spent
        let next = tx_batch(5, 0, 2, &[3], true);
        assert!(invalid_txn_state(log.append_with(
            next.clone(),
            1,
            TxnVerification::Guard(guard)
        )));
        let again = log.start_txn_verification(5, (0, 2), 1).unwrap();
        assert!(again.is_some() && again != guard);
        log.append_with(next, 1, TxnVerification::Guard(again))
            .unwrap();
        // verification off: appended as before
        log.append_with(tx_batch(9, 0, 0, &[4], true), 1, TxnVerification::Off)
            .unwrap();
    });
}

/// The race KIP-890's guard closes: the coordinator answered "in the transaction", then
/// its abort marker reached the partition before the batch did. The late batch must not
/// open a transaction nobody will end.
#[test]
fn a_marker_after_the_verification_spends_its_guard() {
    with_new_log("t-0", |log| async move {
        let guard = log.start_txn_verification(5, (0, 0), 1).unwrap();
        // another producer's transaction does not end producer 5's verification
        let other = log.start_txn_verification(6, (0, 0), 1).unwrap();
        log.append_with(
            tx_batch(6, 0, 0, &[1], true),
            1,
            TxnVerification::Guard(other),
        )
        .unwrap();
        // producer 5's abort marker arrives before its batch
        log.append_control(5, 0, false, 0, 1).unwrap();
        let end = log.log_end_offset();
        assert!(invalid_txn_state(log.append_with(
            tx_batch(5, 0, 0, &[2], true),
            1,
            TxnVerification::Guard(guard)
        )));
        assert_eq!(log.log_end_offset(), end);
        // producer 6's transaction is the only one open
        assert_eq!(log.first_unstable_offset(), Some(0));
    });
}

/// A verification lives in memory only: after a restart its guard opens nothing.
#[test]
fn a_restart_forgets_verifications() {
    let (_dir, path) = open_new("t-0");
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
            .await
            .unwrap();
        log.append(common::batch(1, 10, 1, 1), 1).unwrap();
        let guard = log.start_txn_verification(5, (0, 0), 1).unwrap();
        log.close().await.unwrap();
        let log = PartitionLog::open(&shard, path, LogConfig::default())
            .await
            .unwrap();
        log.load_producer_state().await.unwrap();
        assert!(invalid_txn_state(log.append_with(
            tx_batch(5, 0, 0, &[1], true),
            1,
            TxnVerification::Guard(guard)
        )));
        let fresh = log.start_txn_verification(5, (0, 0), 1).unwrap();
        assert!(fresh.is_some() && fresh != guard);
        log.append_with(
            tx_batch(5, 0, 0, &[1], true),
            1,
            TxnVerification::Guard(fresh),
        )
        .unwrap();
        shard.shutdown().await.unwrap();
    });
}

/// A coordinator's transactional batch (TxnOffsetCommit) follows the same rule.
#[test]
fn a_coordinator_batch_starts_a_transaction_only_under_its_guard() {
    with_new_log("__consumer_offsets-0", |log| async move {
        let offsets = || tx_batch(5, 0, -1, &[1], true);
        let refused = log.append_from_coordinator_with(offsets(), 1, TxnVerification::Guard(None));
        assert!(invalid_txn_state(refused));
        assert_eq!(log.log_end_offset(), 0);
        let guard = log.start_txn_verification(5, (0, -1), 1).unwrap();
        log.append_from_coordinator_with(offsets(), 1, TxnVerification::Guard(guard))
            .unwrap();
        // under way: a second commit in the same transaction needs no guard
        log.append_from_coordinator_with(offsets(), 1, TxnVerification::Guard(None))
            .unwrap();
        log.append_control(5, 0, false, 0, 1).unwrap();
        let late = log.append_from_coordinator_with(offsets(), 1, TxnVerification::Guard(guard));
        assert!(invalid_txn_state(late));
    });
}

/// A batch with a higher sequence than one still being verified waits for it (Kafka's
/// lowest sequence under verification): a lower batch whose verification failed
/// retriably is not overtaken by a later one of the same transaction.
#[test]
fn a_higher_sequence_waits_for_a_lower_one_under_verification() {
    with_new_log("t-0", |log| async move {
        // seq 0's verification starts (and, say, the coordinator could not answer)
        let low = log.start_txn_verification(5, (0, 0), 1).unwrap();
        // seq 1, pipelined after it, is verified under the same guard
        let high = log.start_txn_verification(5, (0, 1), 1).unwrap();
        assert_eq!(low, high);
        let refused = log.append_with(
            tx_batch(5, 0, 1, &[2], true),
            1,
            TxnVerification::Guard(high),
        );
        assert!(
            matches!(
                refused,
                Err(StorageError::OutOfOrderSequence {
                    expected: 0,
                    got: 1,
                    ..
                })
            ),
            "{refused:?}"
        );
        // seq 0's retry goes first, then seq 1
        log.append_with(
            tx_batch(5, 0, 0, &[1], true),
            1,
            TxnVerification::Guard(low),
        )
        .unwrap();
        log.append_with(
            tx_batch(5, 0, 1, &[2], true),
            1,
            TxnVerification::Guard(None),
        )
        .unwrap();
        // a newer epoch starts over from its own sequence
        log.append_control(5, 0, false, 0, 1).unwrap();
        log.start_txn_verification(5, (0, 7), 1).unwrap();
        let bumped = log.start_txn_verification(5, (1, 0), 1).unwrap();
        log.append_with(
            tx_batch(5, 1, 0, &[3], true),
            1,
            TxnVerification::Guard(bumped),
        )
        .unwrap();
    });
}
