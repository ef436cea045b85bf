//! The log under a coordinator: one partition of `__consumer_offsets` (group coordinator)
//! or `__transaction_state` (transaction coordinator), written by the coordinator loaded
//! for one leadership of that partition. Owned by the partition's shard; never crosses
//! cores.
//!
//! ```text
//!  coordinator.append(records) ─► still the leader at the loaded epoch? ─► PartitionLog
//!      .append (now, in call order) ─► durable ─► high watermark past it (every in-sync
//!      replica has it) ─► resolved
//! ```
//! A write fails with NOT_COORDINATOR once the leadership it was loaded for ended, so an
//! answer is never given for a write a new leader may not have, and with
//! NOT_ENOUGH_REPLICAS while the ISR is below the topic's `min.insync.replicas`, as an
//! acks=all produce would.

use std::future::Future;
use std::pin::Pin;
use std::rc::Weak;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use sluice_proto::batch::{
    build_batch, decode_records, end_txn_marker, EndTxnMarker, OwnedRecord, RecordBatchHeader,
    SimpleRecord,
};
use sluice_storage::{PartitionLog, StorageError, TxnVerification};

use crate::errors::storage_error_code;
use crate::shard::{Appended, ShardCtx};

/// How long a coordinator write waits to be on every in-sync replica (Kafka's
/// `offsets.commit.timeout.ms` default); past it the write fails and the client retries.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a coordinator write waits for besides local durability: its partition's high
/// watermark, under the leadership it was loaded for.
pub(crate) struct ReplicatedAcks {
    pub(crate) ctx: Weak<ShardCtx>,
    pub(crate) topic: &'static str,
    pub(crate) partition: i32,
    pub(crate) epoch: i32,
}

/// One coordinator partition's log and the leadership it is written under.
pub(crate) struct CoordinatorLog {
    pub(crate) log: PartitionLog,
    pub(crate) acks: ReplicatedAcks,
}

/// A failed coordinator write: the Kafka error code and why (the groups' own type).
use crate::groups::WriteFailed as WriteError;

impl CoordinatorLog {
    /// `records` as one batch (keys and values, the broker's clock as timestamps).
    pub(crate) fn batch(records: &[(Bytes, Option<Bytes>)], now: i64) -> Bytes {
        let simple: Vec<SimpleRecord<'_>> = records
            .iter()
            .map(|(k, v)| SimpleRecord {
                key: Some(k),
                value: v.as_deref(),
                timestamp: now,
                headers: &[],
            })
            .collect();
        build_batch(0, &simple)
    }

    /// Appends `batch` now (in call order) if this node still leads the partition at the
    /// loaded epoch; the future waits for durability and then the high watermark.
    /// `transactional`: a TxnOffsetCommit batch (producer fields set, no sequence), which
    /// the log checks against the producer's epoch only, as Kafka's coordinator origin,
    /// and against its KIP-890 verification.
    pub(crate) fn write(
        &self,
        batch: Bytes,
        now: i64,
        transactional: Option<TxnVerification>,
    ) -> Pin<Box<dyn Future<Output = Result<(), WriteError>>>> {
        let (topic, partition, epoch) = (self.acks.topic, self.acks.partition, self.acks.epoch);
        let ctx = self.acks.ctx.clone();
        let leads = ctx
            .upgrade()
            .is_some_and(|c| c.leader_epoch_here(topic, partition) == Some(epoch));
        if !leads {
            return Box::pin(async move {
                Err((
                    ResponseError::NotCoordinator.code(),
                    format!("no longer the leader of {topic}-{partition} at epoch {epoch}"),
                ))
            });
        }
        // as an acks=all produce: an ISR below min.insync.replicas (for
        // __transaction_state: transaction.state.log.min.isr) takes no write
        let enough = ctx
            .upgrade()
            .map(|c| crate::handlers::produce::enough_in_sync(&c, -1, topic, partition));
        if let Some(Err(e)) = enough {
            return Box::pin(async move {
                Err((
                    e.code(),
                    format!(
                        "{topic}-{partition} has fewer in-sync replicas than min.insync.replicas"
                    ),
                ))
            });
        }
        // A transactional write checks the producer state, which a truncation since the
        // coordinator loaded may have unloaded: load it in the background and answer
        // COORDINATOR_LOAD_IN_PROGRESS, which clients retry (an append never reads the log
        // on this shard).
        if transactional.is_some() && !self.log.producer_state_loaded() {
            let log = self.log.clone();
            glommio::spawn_local(async move {
                if let Err(e) = log.load_transaction_state().await {
                    tracing::warn!(%topic, partition, error = %e, "cannot load the producer state of a coordinator partition");
                }
            })
            .detach();
            return Box::pin(async move {
                Err((
                    ResponseError::CoordinatorLoadInProgress.code(),
                    format!("{topic}-{partition}'s producer state is loading"),
                ))
            });
        }
        // Appended now, in call order; only the waits are deferred.
        let appended = match transactional {
            Some(verification) => self
                .log
                .append_from_coordinator_with(batch, now, verification),
            None => self.log.append(batch, now),
        };
        let failed = |e: StorageError| (storage_error_code(&e), e.to_string());
        // the waits count truncations from the append, not from their first poll
        let log = self.log.clone();
        let appended = appended.map(|info| Appended::now(&log, info.last_offset, epoch));
        Box::pin(async move {
            let at = appended.map_err(failed)?;
            log.wait_durable_from(at.last, at.mark)
                .await
                .map_err(failed)?;
            let ctx = ctx.upgrade().ok_or((
                ResponseError::NotCoordinator.code(),
                "the shard is shutting down".to_string(),
            ))?;
            let deadline = std::time::Instant::now() + COMMIT_TIMEOUT;
            ctx.wait_replicated(topic, partition, &log, at, deadline)
                .await
        })
    }
}

/// Reads the whole log in offset order, handing each batch's header, transaction marker
/// (for a control batch) and records to `each` (a coordinator's replay at load).
/// Compressed batches are refused (coordinators write uncompressed ones).
pub(crate) async fn replay_log(
    log: &PartitionLog,
    mut each: impl FnMut(&RecordBatchHeader, Option<EndTxnMarker>, Vec<OwnedRecord>),
) -> Result<(), String> {
    let end = log.log_end_offset();
    let mut offset = log.log_start_offset();
    while offset < end {
        let batches = log
            .read(offset, end, 4 << 20, true)
            .await
            .map_err(|e| e.to_string())?;
        if batches.is_empty() {
            break;
        }
        for batch in &batches {
            // a cleaned batch may have lost records (offset gaps), down to none at all:
            // the next read starts after the batch's last offset, not its last record
            let h = RecordBatchHeader::parse(batch).map_err(|e| e.to_string())?;
            let records = decode_records(batch).map_err(|e| e.to_string())?;
            let marker = end_txn_marker(batch).map_err(|e| e.to_string())?;
            each(&h, marker, records);
            offset = offset.max(h.last_offset() + 1);
        }
    }
    Ok(())
}
