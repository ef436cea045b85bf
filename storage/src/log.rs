//! `PartitionLog`: the public handle of one partition's log. `append` is synchronous: it
//! validates every batch first (all-or-nothing: CRC, and the records themselves as Kafka's
//! log validator does: `validate_client_batch_with`, which also refuses a record without
//! a key on a compacted log, compressed or not, in its one pass over the records), checks idempotent batches (those with a
//! producer id) against the producer state (`producer.rs`), assigns offsets from the log
//! end by writing each base offset into its header, and hands the batches to
//! `LogState::enqueue` (segment roll, pending queue) and the shard (cache, dirty list).
//! Every other operation is a call into the module that does it (`read.rs`,
//! `truncate.rs`, `retention.rs`, `recovery.rs`); the log's state itself changes only
//! through `LogState`'s methods (`state.rs`). Offsets `append` assigns are contiguous; a
//! log may still have gaps (a compacted log keeps batches at their original offsets, and
//! `append_replicated` takes a compacted leader's as they are), which reads, recovery and
//! the producer-state rebuild accept. `compact` runs a log-cleaner pass (`cleaner.rs`).
//!
//! Transactions (the methods in `log/transactions.rs`): `append` takes transactional
//! batches, `append_control` writes commit and abort markers, and every batch that enters
//! the log (also through `append_replicated`) is replayed into the producer state, which
//! answers `last_stable_offset` / `first_unstable_offset` and fills the segments' aborted
//! transactions index (`aborted_transactions`); see `producer.rs`, `txn.rs`,
//! `snapshot.rs`.
//!
//! Replication groundwork: `set_leader_epoch` makes `append` stamp that epoch into every
//! batch (partitionLeaderEpoch, outside the CRC); `append_replicated` takes a leader's
//! batches as they are (offsets and epochs kept); both keep the leader-epoch cache
//! (`epoch.rs`) that answers `end_offset_for_epoch`; `truncate_from` cuts a divergent
//! suffix (`truncate.rs`).

use crate::cleaner::CleanerPass;
use crate::config::{LogConfig, MAX_DECOMPRESSED};
use crate::error::StorageError;
use crate::inner::LogInner;
use crate::shard::ShardStorage;
use crate::swap::CleanerHook;
use bytes::{Bytes, BytesMut};
use sluice_proto::batch::{
    recompress_batch, set_base_offset, set_log_append_time, set_max_timestamp,
    validate_client_batch_with, BatchIter, ClientBatchRules, RecordBatchHeader,
};
use std::path::PathBuf;
use std::rc::Rc;

mod transactions;

/// Byte range of partitionLeaderEpoch in a v2 batch header (outside the CRC).
const LEADER_EPOCH_FIELD: std::ops::Range<usize> = 12..16;

/// What `append` writes into every batch's header besides its base offset.
struct Stamp {
    /// The leader epoch (`set_leader_epoch`), if this log has one.
    leader_epoch: Option<i32>,
    /// The broker's clock, under LogAppendTime.
    append_time: Option<i64>,
}

impl Stamp {
    /// Write base offset `base`, the leader epoch and the append time into `batch` (one
    /// whole batch) and `h`, its header. Under CreateTime, `max_ts` (the records' largest
    /// timestamp, when the caller computed it) replaces the header's maxTimestamp, as
    /// Kafka's validator does: a client that sends -1 there (sarama before 1.23) would
    /// otherwise have its segments expire at once and its records missed by lookups by
    /// time.
    fn apply(&self, batch: &mut [u8], h: &mut RecordBatchHeader, base: i64, max_ts: Option<i64>) {
        set_base_offset(batch, base);
        h.base_offset = base;
        if let Some(epoch) = self.leader_epoch {
            batch[LEADER_EPOCH_FIELD].copy_from_slice(&epoch.to_be_bytes());
            h.partition_leader_epoch = epoch;
        }
        if let Some(now) = self.append_time {
            set_log_append_time(batch, now);
            h.attributes |= 0x08;
            h.max_timestamp = now;
        } else if let Some(ts) = max_ts {
            // a producer's LogAppendTime bit goes too, as Kafka's rewrite does
            if set_max_timestamp(batch, ts) {
                h.max_timestamp = ts;
                h.attributes &= !0x08;
            }
        }
    }
}

/// What `append` and `append_control` stamp, after checking that the log takes appends
/// as leader (not closed or truncating, its leader epoch not behind the log's latest).
fn leader_stamp(st: &crate::state::LogState, now_ms: i64) -> Result<Stamp, StorageError> {
    st.check_appendable()?;
    if let (Some(epoch), Some(latest)) = (st.leader_epoch(), st.latest_epoch()) {
        if latest > epoch {
            return Err(StorageError::StaleLeaderEpoch { epoch, latest });
        }
    }
    Ok(Stamp {
        leader_epoch: st.leader_epoch(),
        append_time: st.config().log_append_time.then_some(now_ms),
    })
}

/// Does this batch start, continue or end a transaction?
fn touches_transactions(h: &RecordBatchHeader) -> bool {
    h.producer_id >= 0 && (h.is_transactional() || h.is_control())
}

/// Result of a successful append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// Under `message.timestamp.type=LogAppendTime`, the time stamped on the batches
    /// (`now_ms` passed to `append`); otherwise -1, as Kafka answers. Also -1 for a
    /// duplicate and for `append_replicated` (the leader's batches keep their timestamps).
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
    /// The request was a retry of an idempotent batch already in the log: nothing was
    /// appended, and `base_offset`/`last_offset` are the original batch's. The broker
    /// answers success (error 0) with that base offset, as Kafka does.
    pub duplicate: bool,
}

/// A point in a log's history of truncations (`PartitionLog::truncation_mark`): a durable
/// wait from it fails for offsets cut after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TruncationMark(u64);

/// KIP-890 (Kafka's VerificationGuard): how an append treats a transactional batch of a
/// producer that has no transaction under way in the log, which would start one there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnVerification {
    /// Appended (verification off).
    Off,
    /// Appended only under the guard of the verification under way for its producer
    /// (`PartitionLog::start_txn_verification`, then the coordinator's yes); otherwise
    /// `InvalidTxnState`, nothing appended. None: the broker saw a transaction under way
    /// and asked nobody, so one must still be.
    Guard(Option<u64>),
}

/// Outcome of the producer checks of one append request.
enum Checked {
    /// Append (the batches are then replayed into the producer state).
    Append,
    /// The request is a retry of a batch already in the log; answer with this.
    Duplicate(AppendInfo),
}

/// Cheap handle to one partition's log. Owned by the partition's shard; `!Send`, never
/// crosses cores.
#[derive(Clone)]
pub struct PartitionLog {
    pub(crate) shard: Rc<ShardStorage>,
    pub(crate) inner: Rc<LogInner>,
}

impl PartitionLog {
    /// Open (creating the directory if missing) and recover the log in `dir`.
    pub async fn open(
        shard: &Rc<ShardStorage>,
        dir: PathBuf,
        config: LogConfig,
    ) -> Result<PartitionLog, StorageError> {
        let inner = crate::recovery::open_log(shard, dir, config).await?;
        Ok(PartitionLog {
            shard: shard.clone(),
            inner,
        })
    }

    /// Validate, assign offsets and enqueue `records` (one or more v2 batches) for the
    /// flusher. All-or-nothing: any invalid batch rejects the whole call and writes nothing.
    /// With a leader epoch set (`set_leader_epoch`) each batch is stamped with it and the
    /// leader-epoch cache records where the epoch starts; an epoch older than the log's
    /// latest is refused (`StaleLeaderEpoch`). On a compacted log (`cleanup.policy`
    /// compact) a record without a key is refused (`RecordWithoutKey`), as Kafka's log
    /// validator does; `append_replicated` does not check keys (the leader did).
    /// Transactional batches (producer id required) are checked like idempotent ones and
    /// start or continue their producer's transaction; a plain batch of a producer whose
    /// transaction is under way is `InvalidTxnState`; control batches are refused (markers
    /// go through `append_control`). Idempotent and transactional batches need the
    /// producer state built (`load_producer_state`; otherwise `ProducerStateNotLoaded`):
    /// an append never reads the log.
    pub fn append(&self, records: Bytes, now_ms: i64) -> Result<AppendInfo, StorageError> {
        self.append_with(records, now_ms, TxnVerification::Off)
    }

    /// `append`, with a transactional batch of a producer that has no transaction under
    /// way here checked against `verification` (KIP-890: see `TxnVerification`).
    pub fn append_with(
        &self,
        records: Bytes,
        now_ms: i64,
        verification: TxnVerification,
    ) -> Result<AppendInfo, StorageError> {
        let (max, rules, stamp, codec) = {
            let st = self.inner.state();
            let stamp = leader_stamp(&st, now_ms)?;
            let c = st.config();
            let rules = ClientBatchRules {
                max_decompressed: MAX_DECOMPRESSED,
                // the producer's timestamps are not kept under LogAppendTime: not checked
                timestamps: if c.log_append_time {
                    i64::MIN..=i64::MAX
                } else {
                    now_ms.saturating_sub(c.timestamp_before_max_ms)
                        ..=now_ms.saturating_add(c.timestamp_after_max_ms)
                },
                require_keys: c.cleanup_policy.compact,
                log_append_time: c.log_append_time,
            };
            let codec = c.compression.map(|codec| (codec, c.compression_level));
            (c.max_message_bytes as usize, rules, stamp, codec)
        };
        if records.is_empty() {
            return Err(StorageError::InvalidRecord("no record batches".into()));
        }
        let mut batches: Vec<(RecordBatchHeader, std::ops::Range<usize>)> = Vec::new();
        // each batch's largest record timestamp, for its header (`Stamp::apply`)
        let mut max_ts: Vec<i64> = Vec::new();
        for item in BatchIter::new(&records) {
            let (h, range) = item?;
            if h.total_size() > max {
                return Err(StorageError::MessageTooLarge {
                    size: h.total_size(),
                    max,
                });
            }
            max_ts.push(validate_client_batch_with(&records[range.clone()], &rules)?);
            if h.is_transactional() && h.producer_id < 0 {
                return Err(StorageError::InvalidRecord(
                    "a transactional batch needs a producer id".into(),
                ));
            }
            batches.push((h, range));
        }
        let count: i64 = batches
            .iter()
            .map(|(h, _)| i64::from(h.last_offset_delta) + 1)
            .sum();
        if self
            .inner
            .state()
            .log_end()
            .checked_add(count)
            .is_none_or(|end| end == i64::MAX)
        {
            return Err(StorageError::InvalidRecord(
                "the log's offsets would pass i64::MAX".into(),
            ));
        }
        match self.check_producers(&batches, verification)? {
            Checked::Append => {}
            Checked::Duplicate(info) => return Ok(info),
        }
        let records = match codec {
            Some((codec, level)) if batches.iter().any(|(h, _)| h.compression() != codec) => {
                recompressed(&records, &mut batches, codec, level, max)?
            }
            _ => records,
        };
        Ok(self.stamp_and_enqueue(records, &mut batches, &stamp, now_ms, &max_ts))
    }

    /// Follower append: `records` are one or more v2 batches exactly as the leader stored
    /// them (base offsets and partitionLeaderEpoch set), stored byte for byte. Checked:
    /// every batch's length, magic, CRC and record count (`BatchIter`; a batch the
    /// leader's cleaner rewrote may hold fewer records than its offset range), the first
    /// base offset at or after the log end offset and each next one after the previous
    /// batch (`UnexpectedAppendOffset`): a gap is taken as it is, as Kafka's follower
    /// does, since a compacted leader has them. Not checked, as Kafka's follower does not: the client
    /// rules (timestamps, sequences, max.message.bytes), which the leader applied. The
    /// leader-epoch cache learns each batch's epoch (negative epochs, from batches written
    /// before epochs were stamped, are not recorded) and a built producer state replays
    /// the batches, so duplicates are still caught after this replica takes over;
    /// transactional batches and markers need the state built (await
    /// `load_producer_state` when `needs_producer_state` says so; otherwise
    /// `ProducerStateNotLoaded`), so the follower has the leader's transactions, last
    /// stable offset and aborted index.
    /// The batches go through the same pending queue, unflushed-bytes budget, flusher and
    /// `wait_durable` as `append`. All-or-nothing. `log_append_time_ms` is -1.
    pub fn append_replicated(&self, records: Bytes) -> Result<AppendInfo, StorageError> {
        let mut expected = {
            let st = self.inner.state();
            st.check_appendable()?;
            st.log_end()
        };
        if records.is_empty() {
            return Err(StorageError::InvalidRecord("no record batches".into()));
        }
        let mut base0 = None;
        let mut batches: Vec<(RecordBatchHeader, std::ops::Range<usize>)> = Vec::new();
        for item in BatchIter::new(&records) {
            let (h, range) = item?;
            if h.base_offset < expected {
                return Err(StorageError::UnexpectedAppendOffset {
                    expected,
                    got: h.base_offset,
                });
            }
            if h.last_offset() == i64::MAX {
                return Err(StorageError::InvalidRecord(
                    "the log's offsets would pass i64::MAX".into(),
                ));
            }
            base0.get_or_insert(h.base_offset);
            expected = h.last_offset() + 1;
            batches.push((h, range));
        }
        let base0 = base0.unwrap_or(expected);
        if batches.iter().any(|(h, _)| touches_transactions(h)) {
            // transactions and the aborted index need the producer state (the broker
            // awaits `load_producer_state` first; nothing here reads the log)
            self.inner.state().require_producers()?;
        }
        let now = crate::segment::now_ms();
        let log_start = self.enqueue(records, &batches, now, true);
        Ok(AppendInfo {
            base_offset: base0,
            last_offset: expected - 1,
            log_append_time_ms: -1,
            log_start_offset: log_start,
            duplicate: false,
        })
    }

    /// Put batches whose final bytes are in `data` (offsets assigned, increasing from the
    /// log end: contiguous from `append`, perhaps with gaps from `append_replicated`) into
    /// the log (`LogState::enqueue`: segment roll, indexes, pending queue, the
    /// leader-epoch cache with `learn_epochs`, the producer state and aborted
    /// transactions), in one borrow (nothing can interleave); then the shard cache and
    /// the flusher. Returns the log start offset.
    /// Assigns offsets from the log end to checked `batches` of `records`, stamps them
    /// (`Stamp`) and queues them for the flusher: the common end of `append` and
    /// `append_from_coordinator`.
    fn stamp_and_enqueue(
        &self,
        records: Bytes,
        batches: &mut [(RecordBatchHeader, std::ops::Range<usize>)],
        stamp: &Stamp,
        now_ms: i64,
        max_ts: &[i64],
    ) -> AppendInfo {
        let mut buf = records
            .try_into_mut()
            .unwrap_or_else(|b| BytesMut::from(&b[..]));
        let base0 = self.inner.state().log_end();
        let mut next = base0;
        for (i, (h, range)) in batches.iter_mut().enumerate() {
            stamp.apply(
                &mut buf[range.start..range.end],
                h,
                next,
                max_ts.get(i).copied(),
            );
            next = h.last_offset() + 1;
        }
        let epoch_stamped = stamp.leader_epoch.is_some();
        let log_start = self.enqueue(buf.freeze(), batches, now_ms, epoch_stamped);
        AppendInfo {
            base_offset: base0,
            last_offset: next - 1,
            log_append_time_ms: stamp.append_time.unwrap_or(-1),
            log_start_offset: log_start,
            duplicate: false,
        }
    }

    fn enqueue(
        &self,
        data: Bytes,
        batches: &[(RecordBatchHeader, std::ops::Range<usize>)],
        now_ms: i64,
        learn_epochs: bool,
    ) -> i64 {
        let done =
            self.inner
                .state_mut()
                .enqueue(&self.inner.dir, &data, batches, now_ms, learn_epochs);
        self.shard
            .appended(&self.inner, done.batches, done.was_dirty);
        self.shard.metrics_add(|m| {
            m.bytes_appended += data.len() as u64;
            m.batches_appended += batches.len() as u64;
        });
        done.log_start
    }

    /// Append transactional batches a group coordinator writes for a transaction
    /// (TxnOffsetCommit: Kafka's coordinator origin). Each batch must be transactional
    /// with a producer id; it carries no sequence (-1), so only the producer's epoch is
    /// checked (an older one is `InvalidProducerEpoch`: a newer producer owns the
    /// transactional id). The batches then count as the producer's transaction here, as
    /// a client's do, until its marker. Stamped and queued as `append` does. Needs the
    /// producer state built (`load_transaction_state` first; otherwise
    /// `ProducerStateNotLoaded`).
    pub fn append_from_coordinator(
        &self,
        records: Bytes,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        self.append_from_coordinator_with(records, now_ms, TxnVerification::Off)
    }

    /// `append_from_coordinator`, with a batch that would start its producer's
    /// transaction here checked against `verification` (KIP-890, as `append_with`).
    pub fn append_from_coordinator_with(
        &self,
        records: Bytes,
        now_ms: i64,
        verification: TxnVerification,
    ) -> Result<AppendInfo, StorageError> {
        let stamp = leader_stamp(&self.inner.state(), now_ms)?;
        let mut batches: Vec<(RecordBatchHeader, std::ops::Range<usize>)> = Vec::new();
        for item in BatchIter::new(&records) {
            let (h, range) = item?;
            if !h.is_transactional() || h.is_control() || h.producer_id < 0 {
                return Err(StorageError::InvalidRecord(
                    "a coordinator's transactional batch needs the transactional bit and a producer id".into(),
                ));
            }
            batches.push((h, range));
        }
        if batches.is_empty() {
            return Err(StorageError::InvalidRecord("no record batches".into()));
        }
        {
            let st = self.inner.state();
            st.require_producers()?;
            for (h, _) in &batches {
                let entry = st.producers().and_then(|ps| ps.get(h.producer_id));
                if let Some(e) = entry {
                    if h.producer_epoch < e.epoch {
                        return Err(StorageError::InvalidProducerEpoch {
                            producer_id: h.producer_id,
                            current: e.epoch,
                            got: h.producer_epoch,
                        });
                    }
                }
                if let TxnVerification::Guard(guard) = verification {
                    let starts = entry.is_none_or(|e| e.txn_first.is_none());
                    let verified = st
                        .producers()
                        .is_some_and(|ps| ps.verified(h.producer_id, guard));
                    if starts && !verified {
                        return Err(StorageError::InvalidTxnState {
                            producer_id: h.producer_id,
                            reason: "Record was not part of an ongoing transaction".into(),
                        });
                    }
                }
            }
        }
        // built by the coordinator, with its headers right
        Ok(self.stamp_and_enqueue(records, &mut batches, &stamp, now_ms, &[]))
    }

    /// Resolves once every offset <= `last_offset` is fsynced. Fails if the flush failed,
    /// the offset was cut from the log after this call (`Truncated`, even if the log has
    /// grown past it again since: that offset now holds other data), or the log was
    /// deleted. Truncations count from the call, not from the first poll: call it right
    /// after the append, or use `wait_durable_from` with a mark taken then.
    pub fn wait_durable(
        &self,
        last_offset: i64,
    ) -> impl std::future::Future<Output = Result<(), StorageError>> + 'static {
        self.wait_durable_from(last_offset, self.truncation_mark())
    }

    /// `wait_durable`, counting truncations from `mark` (taken when the records were
    /// appended, before anything awaited).
    pub fn wait_durable_from(
        &self,
        last_offset: i64,
        mark: TruncationMark,
    ) -> impl std::future::Future<Output = Result<(), StorageError>> + 'static {
        let inner = self.inner.clone();
        async move { inner.wait_durable(last_offset, mark.0).await }
    }

    /// Where the log stands in its history of truncations, for `wait_durable_from`.
    pub fn truncation_mark(&self) -> TruncationMark {
        TruncationMark(self.inner.state().truncate_epoch())
    }

    pub fn log_start_offset(&self) -> i64 {
        self.inner.state().log_start()
    }
    pub fn log_end_offset(&self) -> i64 {
        self.inner.state().log_end()
    }
    /// Every offset below this is fsynced (the broker's high watermark on one node).
    pub fn durable_offset(&self) -> i64 {
        self.inner.state().durable()
    }

    /// Whole batches starting with the one holding `from_offset` (or, when no batch holds
    /// it, the first one after it: a compacted log has gaps), each with last offset <
    /// `max_offset`, at most `max_bytes` in total (the first one regardless if `min_one`).
    pub async fn read(
        &self,
        from_offset: i64,
        max_offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<Vec<Bytes>, StorageError> {
        crate::read::read(
            &self.shard,
            &self.inner,
            from_offset,
            max_offset,
            max_bytes,
            min_one,
        )
        .await
    }

    /// `read`, if memory (the shard cache, the pending queue, a read-ahead window) holds
    /// the whole answer: None when it needs the disk or a wait (then call `read`).
    pub fn read_now(
        &self,
        from_offset: i64,
        max_offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Option<Result<Vec<Bytes>, StorageError>> {
        crate::read::read_now(
            &self.shard,
            &self.inner,
            from_offset,
            max_offset,
            max_bytes,
            min_one,
        )
    }

    /// (offset, timestamp) of the first record at or after the log start whose timestamp
    /// is at least `ts`, as Kafka's ListOffsets by time: the exact record, compressed
    /// batches inflated, a LogAppendTime batch's records at its time. None if no such
    /// record.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, StorageError> {
        crate::read::offset_for_timestamp(&self.shard, &self.inner, ts).await
    }

    /// (max timestamp in the log, last offset of the batch that has it), from memory.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.inner.state().max_timestamp()
    }

    /// (max timestamp in the log, offset of the first record that has it): ListOffsets'
    /// MAX_TIMESTAMP (KIP-734, Kafka's `RecordBatch.offsetOfMaxTimestamp`), found as a
    /// lookup of that timestamp (the time index, then the records of the batches from
    /// there); a LogAppendTime batch answers its first record.
    pub async fn offset_of_max_timestamp(&self) -> Result<Option<(i64, i64)>, StorageError> {
        crate::read::offset_of_max_timestamp(&self.shard, &self.inner).await
    }

    /// `truncate_from`, without the new end.
    pub async fn truncate_to(&self, offset: i64) -> Result<(), StorageError> {
        self.truncate_from(offset).await.map(|_| ())
    }

    /// Cut a divergent suffix (a follower after OffsetsForLeaderEpoch): drop every batch
    /// at or after the batch holding `offset` and return the new log end, that batch's
    /// base offset (<= `offset`); batches are never split. If no batch holds `offset` (a
    /// gap in a compacted log), every batch after it goes and the new end is the end of
    /// the last batch kept in the segment holding `offset`, or that segment's base. `offset` >= the log end changes
    /// nothing (returns the log end); `offset` <= the log start empties the log, which
    /// restarts at `offset` (Kafka's truncateFullyAndStartAt); a negative `offset` is
    /// `OffsetOutOfRange`.
    ///
    /// Durable and crash-safe: pending (not yet flushed) batches in the cut range are
    /// dropped unwritten; when data on disk must go, a truncation intent is made durable
    /// first, then later segments are deleted, the segment holding the cut is shortened
    /// and its indexes rewritten, the leader-epoch checkpoint rewritten and the intent
    /// removed; a crash before the intent is durable recovers the old log, after it open
    /// completes the cut, so recovery never ends between the two. In memory the log is
    /// cut before the files (reads and appends see the new end at once; appends are
    /// refused with `Truncating` only while the cut point is being located). The cache,
    /// read-ahead windows, leader-epoch entries from the cut on and the idempotent-producer
    /// state (rebuilt from what remains on next need) are dropped. `wait_durable` callers
    /// for cut offsets fail (never hang). Returns once everything below the new end is
    /// durable (also when nothing was cut). Runs in its own task: dropping the future does
    /// not stop it half-way.
    pub async fn truncate_from(&self, offset: i64) -> Result<i64, StorageError> {
        crate::truncate::truncate(&self.shard, &self.inner, offset).await
    }

    /// Empty the log and restart it at `at`, even beyond its end (Kafka's
    /// `truncateFullyAndStartAt`): a follower whose log ends before its leader's log start
    /// offset (the leader's retention moved on, or this replica is new) then copies from
    /// the leader's first offset. Everything is dropped: segments, pending batches (their
    /// waiters fail), leader-epoch entries, producer state. Crash-safe: after a crash the
    /// log is either the empty log at `at` or a prefix of the old one. Returns `at`.
    pub async fn truncate_fully_and_start_at(&self, at: i64) -> Result<i64, StorageError> {
        crate::truncate::reset(&self.shard, &self.inner, at).await
    }

    /// Set the leader epoch this replica appends under, as leader, from now on: `append`
    /// writes it into every batch's partitionLeaderEpoch (the CRC does not cover it) and
    /// the leader-epoch cache records the first offset of each epoch. Not persisted: call
    /// it after every open, before appending as leader. A negative epoch turns stamping
    /// off, as for a log whose epoch was never set: then `append` keeps the value the
    /// client sent (-1 or 0 in practice) and records no epochs, exactly the behaviour
    /// before replication. Epochs must not go backwards: an `append` under an epoch below
    /// the log's latest fails with `StaleLeaderEpoch`. Followers need not call it
    /// (`append_replicated` keeps the leader's epochs).
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.inner.state_mut().set_leader_epoch(epoch);
    }

    /// Writes `data` as `name` (one plain file name) in the log's directory atomically —
    /// `<name>.tmp`, fsync, rename, directory fsync — on a blocking helper; the broker's
    /// `partition.metadata`. That directory fsync also makes the log's own new entries
    /// durable (a new log's first segment, created at open), so the first flush after it
    /// needs no directory fsync of its own.
    pub async fn write_dir_file(&self, name: &str, data: Vec<u8>) -> Result<(), StorageError> {
        let mut parts = std::path::Path::new(name).components();
        let plain = matches!(
            (parts.next(), parts.next()),
            (Some(std::path::Component::Normal(_)), None)
        );
        if !plain {
            return Err(StorageError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{name:?} is not a plain file name"),
            )));
        }
        let dir = self.inner.dir.clone();
        let (tmp, name) = (format!("{name}.tmp"), name.to_string());
        crate::blocking::run(&self.inner.dir, move || {
            crate::blocking::write_atomic(&dir, &tmp, &name, &data)
        })
        .await?;
        self.inner.dir_synced();
        Ok(())
    }

    /// The epoch `append` stamps, if one is set.
    pub fn leader_epoch(&self) -> Option<i32> {
        self.inner.state().leader_epoch()
    }

    /// The newest leader epoch with data in the log (the last leader-epoch cache entry).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.inner.state().latest_epoch()
    }

    /// OffsetsForLeaderEpoch for `epoch` (Kafka's LeaderEpochFileCache.endOffsetFor):
    /// (the largest epoch <= `epoch` in the log, the start offset of the next higher epoch
    /// or the log end offset if it is the latest). None means UNDEFINED (-1, -1): `epoch`
    /// is negative or the log has no epochs. Below the first epoch: (`epoch`, start of the
    /// first epoch), as Kafka answers. Above the latest: (latest, log end offset).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.inner.state().end_offset_for_epoch(epoch)
    }

    /// The leader-epoch cache: (epoch, start offset), both increasing.
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        self.inner.state().epoch_entries()
    }

    /// Moves the log start up to `offset` (DeleteRecords; a follower following its
    /// leader's log start): durable (`log_start.rs`) before reads see it, so offsets below
    /// it read as out of range from then on, after `kill -9` too. Returns the log start
    /// after the call (unchanged if `offset` is at or below it). An offset past the log
    /// end fails with OffsetOutOfRange. The segments wholly below the new start go at the
    /// next `enforce_retention` or `delete_segments_below_start`.
    pub async fn advance_log_start(&self, offset: i64) -> Result<i64, StorageError> {
        crate::retention::advance_log_start(&self.shard, &self.inner, offset).await
    }

    /// Delete whole segments past retention.ms (by batch max timestamp) and retention.bytes,
    /// if the log's `cleanup.policy` includes `delete` (a compact-only log keeps them), and
    /// whatever the policy, those wholly below a log start `advance_log_start` moved.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<(), StorageError> {
        crate::retention::enforce_retention(&self.shard, &self.inner, Some(now_ms)).await
    }

    /// Deletes the segments wholly below the log start (after `advance_log_start`) and
    /// nothing else: time and size retention wait for their own schedule.
    pub async fn delete_segments_below_start(&self) -> Result<(), StorageError> {
        crate::retention::enforce_retention(&self.shard, &self.inner, None).await
    }

    /// Offsets at or past `offset` are never cleaned (the broker sets its high watermark,
    /// so consumers below it see a stable log); until it is set the limit is the durable
    /// offset. Never above the durable offset either way, nor past the first unstable
    /// offset. It is also the high watermark that makes completed transactions stable
    /// (as `last_stable_offset`'s argument; it never goes down).
    pub fn set_clean_limit(&self, offset: i64) {
        self.inner.state_mut().set_clean_limit(offset);
    }

    /// The cleaner's checkpoint: every offset below it has been cleaned (the log start if
    /// none has).
    pub fn clean_offset(&self) -> i64 {
        let st = self.inner.state();
        st.clean_point().offset(st.log_start())
    }

    /// One log-cleaner pass over this log now, whatever its dirty ratio (the background
    /// cleaner waits for `min.cleanable.dirty.ratio` or `max.compaction.lag.ms`), with
    /// `now_ms` as the time that decides the compaction lags and tombstones' age. None if
    /// there is nothing to clean (the log is not compacted, nothing is dirty in its
    /// cleanable range) or the log changed under the pass. See `cleaner.rs`.
    pub async fn compact(&self, now_ms: i64) -> Result<Option<CleanerPass>, StorageError> {
        crate::cleaner::clean_log(&self.shard, &self.inner, now_ms).await
    }

    /// Test hook: `hook` is called at every step of a cleaning pass's swap and may stop
    /// the pass there as a crash would (`SwapStep`). It runs while the pass holds the
    /// log's I/O permit from `Committed` on: it may read the log, not wait for appends to
    /// become durable.
    #[doc(hidden)]
    pub fn set_cleaner_hook(&self, hook: Option<CleanerHook>) {
        *self.inner.cleaner_hook.borrow_mut() = hook;
    }

    pub fn config(&self) -> LogConfig {
        self.inner.state().config().clone()
    }
    pub fn set_config(&self, config: LogConfig) {
        self.inner.state_mut().set_config(config);
    }

    /// Bytes in all segments, including appended-but-not-yet-durable batches.
    pub fn size_bytes(&self) -> u64 {
        self.inner.state().size_bytes()
    }

    /// Flush, fsync, write indexes and the clean-shutdown marker, close files.
    pub async fn close(&self) -> Result<(), StorageError> {
        crate::recovery::close_inner(&self.shard, &self.inner).await
    }

    /// Remove every file of the log and its directory; later calls fail with `Closed`.
    pub async fn delete(&self) -> Result<(), StorageError> {
        crate::retention::delete_log(&self.shard, &self.inner).await
    }
}

/// `records` with every batch in `codec` at `level`, the topic's `compression.type`
/// (`recompress_batch`: the records section inflated and compressed again, every other
/// field kept), as Kafka's log validator rebuilds a batch whose codec is not the topic's;
/// `batches` are updated to the new headers and ranges. A batch that grows past `max`
/// (`max.message.bytes`) is `MessageTooLarge`, as Kafka checks the size after.
fn recompressed(
    records: &Bytes,
    batches: &mut [(RecordBatchHeader, std::ops::Range<usize>)],
    codec: u8,
    level: Option<i32>,
    max: usize,
) -> Result<Bytes, StorageError> {
    let mut out = Vec::with_capacity(records.len());
    for (h, range) in batches.iter_mut() {
        let start = out.len();
        recompress_batch(
            &records[range.clone()],
            codec,
            level,
            MAX_DECOMPRESSED,
            &mut out,
        )?;
        let size = out.len() - start;
        if size > max {
            return Err(StorageError::MessageTooLarge { size, max });
        }
        *h = RecordBatchHeader::parse(&out[start..])?;
        *range = start..out.len();
    }
    // sized to the input: the pending queue and the cache keep these bytes, counted by
    // their length, so a compressed result must not keep the input's capacity
    out.shrink_to_fit();
    Ok(Bytes::from(out))
}
