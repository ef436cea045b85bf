//! The per-transactional-id state (Kafka's TransactionMetadata) and the pure transitions
//! the request paths prepare from it (Kafka's prepare* methods). A prepared target is a
//! whole `TxnMetadata`: it is written as the record value, and copied over the current
//! state once that record is replicated.

use std::collections::BTreeSet;

use super::records::{TxnLogValue, TxnState};

/// Kafka's NO_PRODUCER_ID / NO_PRODUCER_EPOCH.
pub(super) const NO_PRODUCER_ID: i64 = -1;
pub(super) const NO_PRODUCER_EPOCH: i16 = -1;

/// Kafka's `isEpochExhausted`: clients never get `i16::MAX`, so the coordinator can always
/// fence the last epoch it handed out.
pub(super) fn epoch_exhausted(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

/// One transactional id's state; lives in its coordinator's map (owned by the
/// `__transaction_state` partition's shard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TxnMetadata {
    pub(super) producer_id: i64,
    /// The producer id before the last InitProducerId (KIP-360 retry after rotation).
    pub(super) prev_producer_id: i64,
    /// Kept from v1 records (transaction version 2 writes it); not used by version 0/1
    /// transactions.
    pub(super) next_producer_id: i64,
    pub(super) producer_epoch: i16,
    /// The epoch before the last bump requested with an expected epoch (KIP-360); lets a
    /// retried InitProducerId get the same answer. Not persisted (Kafka neither).
    pub(super) last_producer_epoch: i16,
    pub(super) timeout_ms: i32,
    pub(super) state: TxnState,
    /// Partitions of the ongoing transaction; during Prepare*, those still without marker.
    pub(super) partitions: BTreeSet<(String, i32)>,
    pub(super) start_ms: i64,
    pub(super) last_update_ms: i64,
    pub(super) client_txn_version: i16,
    /// The state a record in flight will move to; blocks other transitions meanwhile.
    pub(super) pending: Option<TxnState>,
    /// An epoch-fence write failed after the epoch was bumped in memory: the next fence
    /// reuses that epoch instead of bumping again (Kafka's hasFailedEpochFence).
    pub(super) failed_epoch_fence: bool,
}

impl TxnMetadata {
    /// A new id, before its first InitProducerId record.
    pub(super) fn new(producer_id: i64, timeout_ms: i32, now: i64) -> TxnMetadata {
        TxnMetadata {
            producer_id,
            prev_producer_id: NO_PRODUCER_ID,
            next_producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now,
            client_txn_version: 0,
            pending: None,
            failed_epoch_fence: false,
        }
    }

    pub(super) fn from_value(v: TxnLogValue) -> TxnMetadata {
        TxnMetadata {
            producer_id: v.producer_id,
            prev_producer_id: v.previous_producer_id,
            next_producer_id: v.next_producer_id,
            producer_epoch: v.producer_epoch,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            timeout_ms: v.timeout_ms,
            state: v.state,
            partitions: v.partitions,
            start_ms: v.start_ms,
            last_update_ms: v.last_update_ms,
            client_txn_version: v.client_txn_version,
            pending: None,
            failed_epoch_fence: false,
        }
    }

    pub(super) fn to_value(&self) -> TxnLogValue {
        TxnLogValue {
            producer_id: self.producer_id,
            previous_producer_id: self.prev_producer_id,
            next_producer_id: self.next_producer_id,
            producer_epoch: self.producer_epoch,
            timeout_ms: self.timeout_ms,
            state: self.state,
            partitions: if self.state == TxnState::Empty {
                BTreeSet::new()
            } else {
                self.partitions.clone()
            },
            last_update_ms: self.last_update_ms,
            start_ms: self.start_ms,
            client_txn_version: self.client_txn_version,
        }
    }

    /// A target in `state`, updated at `now`, with nothing pending.
    fn target(&self, state: TxnState, now: i64) -> TxnMetadata {
        TxnMetadata {
            state,
            last_update_ms: now,
            pending: None,
            ..self.clone()
        }
    }

    /// Kafka's prepareIncrementProducerEpoch (version 0/1 transactions): Empty with the
    /// next epoch, or the current one for a retry (`expected` = the last epoch), or
    /// PRODUCER_FENCED (as Err(())). The caller has ruled out an exhausted epoch.
    pub(super) fn increment_epoch(
        &self,
        timeout_ms: i32,
        expected: Option<i16>,
        now: i64,
    ) -> Result<TxnMetadata, ()> {
        let bumped = self.producer_epoch.saturating_add(1);
        let (epoch, last) = match expected {
            None => (bumped, NO_PRODUCER_EPOCH),
            Some(e) if self.producer_epoch == NO_PRODUCER_EPOCH || e == self.producer_epoch => {
                (bumped, self.producer_epoch)
            }
            Some(e) if e == self.last_producer_epoch => {
                (self.producer_epoch, self.last_producer_epoch)
            }
            Some(_) => return Err(()),
        };
        Ok(self.init_target(self.producer_id, epoch, last, timeout_ms, now))
    }

    /// Kafka's prepareProducerIdRotation: a new producer id at epoch 0.
    pub(super) fn rotate_producer_id(
        &self,
        new_producer_id: i64,
        timeout_ms: i32,
        record_last_epoch: bool,
        now: i64,
    ) -> TxnMetadata {
        let last = if record_last_epoch {
            self.producer_epoch
        } else {
            NO_PRODUCER_EPOCH
        };
        self.init_target(new_producer_id, 0, last, timeout_ms, now)
    }

    fn init_target(
        &self,
        pid: i64,
        epoch: i16,
        last: i16,
        timeout_ms: i32,
        now: i64,
    ) -> TxnMetadata {
        TxnMetadata {
            producer_id: pid,
            prev_producer_id: self.producer_id,
            producer_epoch: epoch,
            last_producer_epoch: last,
            timeout_ms,
            partitions: BTreeSet::new(),
            start_ms: -1,
            ..self.target(TxnState::Empty, now)
        }
    }

    /// Kafka's prepareAddPartitions: Ongoing with the union; a new transaction starts now.
    pub(super) fn add_partitions(&self, added: &BTreeSet<(String, i32)>, now: i64) -> TxnMetadata {
        let start_ms = match self.state {
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => now,
            _ => self.start_ms,
        };
        let mut t = self.target(TxnState::Ongoing, now);
        t.partitions.extend(added.iter().cloned());
        t.start_ms = start_ms;
        t
    }

    /// Kafka's prepareAbortOrCommit for version 0/1 transactions (the epoch is unchanged).
    pub(super) fn prepare_end(&self, commit: bool, now: i64) -> TxnMetadata {
        let state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        self.target(state, now)
    }

    /// Kafka's prepareComplete: Complete* with no partitions.
    pub(super) fn complete(&self, now: i64) -> TxnMetadata {
        let state = if self.state == TxnState::PrepareCommit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        let mut t = self.target(state, now);
        t.partitions.clear();
        t.failed_epoch_fence = false;
        t
    }

    /// The epoch an epoch fence moves to (Kafka's prepareFenceProducerEpoch): one more,
    /// unless a previous fence already bumped it in memory and failed to write it.
    pub(super) fn fenced_epoch(&self) -> i16 {
        if self.failed_epoch_fence {
            self.producer_epoch
        } else {
            self.producer_epoch.saturating_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ongoing() -> TxnMetadata {
        let mut m = TxnMetadata::new(7, 1000, 1);
        m.producer_epoch = 4;
        m.state = TxnState::Ongoing;
        m.partitions.insert(("t".into(), 0));
        m.start_ms = 5;
        m
    }

    #[test]
    fn increment_epoch_follows_kip_360() {
        let mut m = ongoing();
        m.state = TxnState::CompleteCommit;
        m.partitions.clear();
        m.last_producer_epoch = 2;
        let t = m.increment_epoch(500, None, 9).expect("no expectation"); // ok: test
        assert_eq!((t.producer_epoch, t.last_producer_epoch), (5, -1));
        assert_eq!(
            (t.state, t.timeout_ms, t.start_ms),
            (TxnState::Empty, 500, -1)
        );
        let t = m.increment_epoch(500, Some(4), 9).expect("current epoch"); // ok: test
        assert_eq!((t.producer_epoch, t.last_producer_epoch), (5, 4));
        let t = m.increment_epoch(500, Some(2), 9).expect("retry"); // ok: test
        assert_eq!((t.producer_epoch, t.last_producer_epoch), (4, 2));
        assert!(m.increment_epoch(500, Some(3), 9).is_err());
    }

    #[test]
    fn add_then_prepare_then_complete() {
        let mut m = ongoing();
        m.state = TxnState::CompleteAbort;
        let add: BTreeSet<_> = [("u".to_string(), 1)].into_iter().collect();
        let t = m.add_partitions(&add, 50);
        assert_eq!(
            (t.state, t.start_ms, t.last_update_ms),
            (TxnState::Ongoing, 50, 50)
        );
        let t2 = t.add_partitions(&add, 60);
        assert_eq!(t2.start_ms, 50, "an ongoing transaction keeps its start");
        let p = t2.prepare_end(true, 70);
        assert_eq!(p.state, TxnState::PrepareCommit);
        assert_eq!(p.partitions, t2.partitions);
        let c = p.complete(80);
        assert_eq!(c.state, TxnState::CompleteCommit);
        assert!(c.partitions.is_empty());
        assert_eq!(c.producer_epoch, p.producer_epoch);
        assert!(
            TxnMetadata {
                state: TxnState::PrepareAbort,
                ..p
            }
            .complete(1)
            .state
                == TxnState::CompleteAbort
        );
    }
}
