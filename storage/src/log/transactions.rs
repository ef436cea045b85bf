//! `PartitionLog`'s idempotent producers and transactions: the duplicate and sequence
//! checks of an append, the async build of the producer state, control batches
//! (transaction markers), the last stable offset and the aborted transactions a
//! read_committed fetch returns.

use bytes::BytesMut;
use sluice_proto::batch::{build_control_batch, BatchIter, EndTxnMarker, RecordBatchHeader};

use super::{
    leader_stamp, touches_transactions, AppendInfo, Checked, PartitionLog, TxnVerification,
};
use crate::error::StorageError;
use crate::producer::{self, ProducerEntry, Verdict};
use crate::txn::{AbortedTxn, ProducerInfo};

impl PartitionLog {
    /// Check the idempotent batches of a request against the producer state (built on
    /// first need), each against the state as updated by the earlier ones. Returns the
    /// updated entries to commit after the write, or the answer for a request that is
    /// exactly one duplicate batch. A duplicate inside a multi-batch request is
    /// rejected as out of order: Kafka would answer the whole request with the duplicate's
    /// offsets and silently drop its new batches.
    pub(super) fn check_producers(
        &self,
        batches: &[(RecordBatchHeader, std::ops::Range<usize>)],
        verification: TxnVerification,
    ) -> Result<Checked, StorageError> {
        let mut updates: Vec<(i64, Option<ProducerEntry>)> = Vec::new();
        if !batches.iter().any(|(h, _)| producer::is_idempotent(h)) {
            return Ok(Checked::Append);
        }
        let st = self.inner.state();
        st.require_producers()?;
        let Some(ps) = st.producers() else {
            return Ok(Checked::Append); // ok: unreachable, checked just above
        };
        let mut next = st.log_end();
        for (h, _) in batches {
            let base = next;
            next = base + h.last_offset_delta as i64 + 1;
            if !producer::is_idempotent(h) {
                continue;
            }
            let pid = h.producer_id;
            let slot = match updates.iter().position(|(p, _)| *p == pid) {
                Some(i) => i,
                None => {
                    updates.push((pid, ps.get(pid).cloned()));
                    updates.len() - 1
                }
            };
            let entry = &mut updates[slot].1;
            // KIP-890: a batch that would start a transaction here needs the
            // coordinator's word (a retry of one already here is answered as before)
            let unverified = match verification {
                TxnVerification::Guard(guard) => {
                    h.is_transactional()
                        && entry.as_ref().is_none_or(|e| e.txn_first.is_none())
                        && !ps.verified(pid, guard)
                }
                TxnVerification::Off => false,
            };
            let verdict = producer::check_and_apply(entry, h, base)?;
            if matches!(verdict, Verdict::New) {
                if unverified {
                    return Err(StorageError::InvalidTxnState {
                        producer_id: pid,
                        reason: "Record was not part of an ongoing transaction".into(),
                    });
                }
                // a lower batch of the producer is still being verified: it goes first
                let lowest = match verification {
                    TxnVerification::Guard(_) => ps.verifying_lowest_seq(pid),
                    TxnVerification::Off => None,
                };
                if let Some(lowest) = lowest.filter(|&l| h.base_sequence > l) {
                    return Err(StorageError::OutOfOrderSequence {
                        producer_id: pid,
                        expected: lowest,
                        got: h.base_sequence,
                    });
                }
            }
            if let Verdict::Duplicate(m) = verdict {
                if batches.len() != 1 {
                    let expected = entry
                        .as_ref()
                        .and_then(|e| e.batches.back())
                        .map_or(0, |b| producer::next_seq(b.last_seq));
                    return Err(StorageError::OutOfOrderSequence {
                        producer_id: pid,
                        expected,
                        got: h.base_sequence,
                    });
                }
                return Ok(Checked::Duplicate(AppendInfo {
                    base_offset: m.first_offset,
                    last_offset: m.last_offset,
                    log_append_time_ms: -1,
                    log_start_offset: st.log_start(),
                    duplicate: true,
                }));
            }
        }
        Ok(Checked::Append)
    }

    /// Build the idempotent-producer state now, with async reads, if it is not built yet
    /// (a no-op otherwise), reading the newest snapshot and then the batch headers after it
    /// (from the log start for a log without one).
    /// Required before appending idempotent or transactional batches or markers: no
    /// append reads the log, one that needs the state unbuilt is
    /// `ProducerStateNotLoaded`. The load runs in a task of its own: a caller that stops
    /// waiting (its request timed out, its client went away) does not stop it, so the
    /// next caller finds the state built rather than starting over, and a snapshot the
    /// load writes is always recorded.
    pub async fn load_producer_state(&self) -> Result<(), StorageError> {
        if self.producer_state_loaded() {
            return Ok(());
        }
        let (shard, inner) = (self.shard.clone(), self.inner.clone());
        glommio::spawn_local(async move { crate::read::load_producers(&shard, &inner).await })
            .detach()
            .await
            .ok_or_else(|| {
                StorageError::Io(std::io::Error::other("producer-state load was cancelled"))
            })?
    }

    /// Whether the idempotent-producer state is built (then `append` reads nothing).
    pub fn producer_state_loaded(&self) -> bool {
        self.inner.state().producers_loaded()
    }

    /// Whether appending `records` (with `append`, or on a follower with
    /// `append_replicated`) needs the producer state that is not built yet: they hold an
    /// idempotent or transactional batch or a marker. The caller awaits
    /// `load_producer_state` first (else the append is `ProducerStateNotLoaded`).
    pub fn needs_producer_state(&self, records: &[u8]) -> bool {
        !self.producer_state_loaded() && Self::records_use_producer_state(records)
    }

    /// Whether `records` hold an idempotent or transactional batch or a marker (whatever
    /// the log): the part of `needs_producer_state` that needs no log.
    pub fn records_use_producer_state(records: &[u8]) -> bool {
        BatchIter::headers_only(records)
            .any(|b| b.is_ok_and(|(h, _)| producer::is_idempotent(&h) || touches_transactions(&h)))
    }

    /// Build the transaction state (the producer state: transactions under way,
    /// completed ones not yet stable, producers' epochs) with async reads if it is not
    /// built; the same as `load_producer_state`. Lazy by design (opens stay cheap): the
    /// broker awaits this before it asks `last_stable_offset`/`first_unstable_offset`
    /// for a read_committed fetch or ListOffsets, `producers`, or appends a marker;
    /// until then those answer conservatively (the log start counts as unstable; no
    /// producers). It reads the newest producer-state snapshot and the batch headers
    /// after it (see `snapshot.rs`), so its cost does not grow with how long a
    /// transaction has been open.
    pub async fn load_transaction_state(&self) -> Result<(), StorageError> {
        self.load_producer_state().await
    }

    /// Write one transaction marker (Kafka's WriteTxnMarkers on the leader): a control
    /// batch of producer `producer_id` at `producer_epoch` (base sequence -1) holding an
    /// end-transaction record (commit or abort, `coordinator_epoch`), stamped like
    /// `append` (base offset, leader epoch, LogAppendTime) and queued through the same
    /// pending queue, flusher and unflushed-bytes budget. Checked as Kafka's
    /// `appendEndTxnMarker`: an epoch older than the producer's is
    /// `InvalidProducerEpoch`, a coordinator epoch older than that of the producer's last
    /// marker is `TransactionCoordinatorFenced`. The marker takes the producer to its
    /// epoch and ends its transaction; an abort of a transaction under way records an
    /// aborted transaction (first offset .. marker offset) in the active segment's index.
    /// A marker for a producer without a transaction here is written all the same, as
    /// Kafka does (then nothing is recorded). Needs the producer state built
    /// (`load_transaction_state` first; otherwise `ProducerStateNotLoaded`).
    pub fn append_control(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        if producer_id < 0 {
            return Err(StorageError::InvalidRecord(
                "a transaction marker needs a producer id".into(),
            ));
        }
        let stamp = leader_stamp(&self.inner.state(), now_ms)?;
        let base = {
            let st = self.inner.state();
            st.require_producers()?;
            producer::check_marker(
                st.producers().and_then(|ps| ps.get(producer_id)),
                producer_id,
                producer_epoch,
                coordinator_epoch,
            )?;
            st.log_end()
        };
        if base >= i64::MAX - 1 {
            return Err(StorageError::InvalidRecord(
                "the log's offsets would pass i64::MAX".into(),
            ));
        }
        let marker = EndTxnMarker {
            commit,
            coordinator_epoch,
        };
        let batch = build_control_batch(producer_id, producer_epoch, marker, now_ms);
        let mut buf = BytesMut::from(&batch[..]);
        let mut h = RecordBatchHeader::parse(&buf)?;
        stamp.apply(&mut buf, &mut h, base, None);
        let len = buf.len();
        let log_start = self.enqueue(
            buf.freeze(),
            &[(h, 0..len)],
            now_ms,
            stamp.leader_epoch.is_some(),
        );
        Ok(AppendInfo {
            base_offset: base,
            last_offset: base,
            log_append_time_ms: stamp.append_time.unwrap_or(-1),
            log_start_offset: log_start,
            duplicate: false,
        })
    }

    /// The first offset of the earliest transaction that is not stable: one under way,
    /// or a completed one whose marker is at or past the highest high watermark given
    /// to `last_stable_offset` so far (Kafka keeps a transaction unstable until its
    /// marker is replicated). None if all are stable. O(1). Before the transaction
    /// state is loaded (`load_transaction_state`): the log start offset.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.inner.state().first_unstable_offset()
    }

    /// The last stable offset for a high watermark of `high_watermark`: the minimum of
    /// the high watermark, the first offset of every transaction under way and that of
    /// every completed transaction whose marker is at or past the high watermark
    /// (Kafka's UnifiedLog.lastStableOffset). O(log n). The high watermark is taken as
    /// never going down (as Kafka's): a transaction whose marker fell below one passed
    /// here is stable from then on, until a truncation rebuilds the state. Before the
    /// transaction state is loaded (`load_transaction_state`): min(high watermark, log
    /// start), so a read_committed consumer sees nothing rather than something
    /// uncommitted.
    pub fn last_stable_offset(&self, high_watermark: i64) -> i64 {
        self.inner.state_mut().last_stable_offset(high_watermark)
    }

    /// The aborted transactions a read_committed Fetch of `[from_offset, upper_offset)`
    /// returns: every one whose abort marker is at or after `from_offset` and whose first
    /// offset is before `upper_offset` (Kafka's collectAbortedTransactions), in marker
    /// order. Reads the `.txnindex` files of sealed segments that have one, once, on the
    /// blocking helper (entries stay in memory afterwards), from the segment holding
    /// `from_offset` on, and stops at an entry whose last stable offset reaches
    /// `upper_offset` (no later abort can start before it). Needs no producer state.
    pub async fn aborted_transactions(
        &self,
        from_offset: i64,
        upper_offset: i64,
    ) -> Result<Vec<AbortedTxn>, StorageError> {
        crate::read::aborted_transactions(&self.inner, from_offset, upper_offset).await
    }

    /// KIP-890: a transactional batch of `producer_id` (at `(epoch, first sequence)`;
    /// a coordinator's batch has sequence -1) is about to be appended. Ok(None) when the
    /// producer has a transaction under way here (append with
    /// `TxnVerification::Guard(None)`); Ok(Some(guard)) when the batch would start one:
    /// the broker asks the producer's coordinator whether this partition is in its
    /// transaction and, if it is, appends with `Guard(Some(guard))`. While one is under
    /// way, a batch with a higher sequence than the lowest verified is refused
    /// OUT_OF_ORDER_SEQUENCE. Needs the producer state built (`load_producer_state`;
    /// otherwise `ProducerStateNotLoaded`).
    pub fn start_txn_verification(
        &self,
        producer_id: i64,
        epoch_seq: (i16, i32),
        now_ms: i64,
    ) -> Result<Option<u64>, StorageError> {
        self.inner
            .state_mut()
            .start_txn_verification(producer_id, epoch_seq, now_ms)
    }

    /// Every producer the producer state knows (DescribeProducers), by producer id;
    /// empty until the state is loaded (`load_transaction_state`).
    pub fn producers(&self) -> Vec<ProducerInfo> {
        self.inner.state().producer_infos()
    }
}
