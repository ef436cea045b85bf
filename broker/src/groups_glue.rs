//! Wiring of the group coordinators into the shards. Each `__consumer_offsets` partition has
//! one `GroupCoordinator` on the shard that owns it, rebuilt by replaying the partition when
//! the shard opens it. Group requests are routed there as `GroupCall`s; the coordinator
//! persists through `PartitionOffsetsLog`, an `OffsetsLog` over the partition's log.
//!
//! ```text
//!  JoinGroup(g) on any shard ─► partition = hash(g) % 50 ─► owner shard ─► coordinator
//!  coordinator.append(records) ─► PartitionLog.append (in call order, leader only)
//!      ─► wait durable ─► wait for the high watermark (every in-sync replica has it)
//! ```
//! A coordinator belongs to one leadership (leader epoch) of its partition: its writes
//! fail once that ends, and a later leadership here loads the partition again.

use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use sluice_proto::batch::{build_batch, decode_records, RecordBatchHeader, SimpleRecord};
use sluice_storage::PartitionLog;

use crate::config::BrokerConfig;
use crate::errors::now_ms;
use crate::groups::{GroupConfig, GroupCoordinator, GroupOffsets, OffsetsLog, OFFSETS_TOPIC};
use crate::shard::ShardCtx;

/// A request for one coordinator (or, for `List`, every coordinator of the shard).
#[derive(Debug)]
pub(crate) enum GroupCall {
    Join {
        req: JoinGroupRequest,
        version: i16,
        client_id: String,
        client_host: String,
    },
    Sync {
        req: SyncGroupRequest,
        version: i16,
    },
    Heartbeat {
        req: HeartbeatRequest,
        version: i16,
    },
    Leave {
        req: LeaveGroupRequest,
        version: i16,
    },
    Commit {
        req: OffsetCommitRequest,
        version: i16,
        /// OffsetCommit v1's per-partition commit timestamps; empty for other versions.
        commit_timestamps: Vec<Vec<i64>>,
    },
    Fetch {
        group_id: String,
        topics: Option<Vec<(String, Vec<i32>)>>,
        require_stable: bool,
    },
    Describe {
        group_id: String,
    },
    List {
        states: Vec<StrBytes>,
        types: Vec<StrBytes>,
    },
    Delete {
        group_id: String,
    },
    OffsetDelete {
        req: OffsetDeleteRequest,
        version: i16,
    },
}

#[derive(Debug)]
pub(crate) enum GroupAnswer {
    Join(JoinGroupResponse),
    Sync(SyncGroupResponse),
    Heartbeat(HeartbeatResponse),
    Leave(LeaveGroupResponse),
    Commit(OffsetCommitResponse),
    Fetch(GroupOffsets),
    Describe(DescribedGroup),
    List(Vec<ListedGroup>),
    Delete(i16),
    OffsetDelete(OffsetDeleteResponse),
    /// This shard has no loaded coordinator for the partition.
    NotCoordinator,
}

/// Group settings from the broker config.
pub(crate) fn group_config(config: &BrokerConfig) -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: config.int("group.initial.rebalance.delay.ms") as u64,
        min_session_timeout_ms: config.int("group.min.session.timeout.ms") as i32,
        max_session_timeout_ms: config.int("group.max.session.timeout.ms") as i32,
        offsets_retention_ms: config.int("offsets.retention.minutes") * 60_000,
        ..GroupConfig::default()
    }
}

/// How long a group write waits to be on every in-sync replica of its offsets partition
/// (Kafka's `offsets.commit.timeout.ms` default); past it the write fails and the client
/// retries.
const OFFSETS_COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a group write waits for besides local durability: the offsets partition's high
/// watermark (every ISR member has it), under the leadership it was loaded for.
pub(crate) struct ReplicatedAcks {
    pub(crate) ctx: Weak<ShardCtx>,
    pub(crate) partition: i32,
    pub(crate) epoch: i32,
}

/// An `OffsetsLog` over one `__consumer_offsets` partition. Owned by that partition's shard.
pub(crate) struct PartitionOffsetsLog {
    pub(crate) log: PartitionLog,
    pub(crate) acks: ReplicatedAcks,
}

impl OffsetsLog for PartitionOffsetsLog {
    fn append(
        &self,
        records: Vec<(Bytes, Option<Bytes>)>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>>>> {
        let now = now_ms();
        let simple: Vec<SimpleRecord<'_>> = records
            .iter()
            .map(|(k, v)| SimpleRecord {
                key: Some(k),
                value: v.as_deref(),
                timestamp: now,
                headers: &[],
            })
            .collect();
        let (partition, epoch) = (self.acks.partition, self.acks.epoch);
        let ctx = self.acks.ctx.clone();
        let leads = ctx
            .upgrade()
            .is_some_and(|c| c.leader_epoch_here(OFFSETS_TOPIC, partition) == Some(epoch));
        if !leads {
            return Box::pin(async move {
                Err(format!(
                    "no longer the leader of {OFFSETS_TOPIC}-{partition} at epoch {epoch}"
                ))
            });
        }
        // Appended now, in call order; only the replication wait is deferred.
        let appended = self.log.append(build_batch(0, &simple), now);
        let log = self.log.clone();
        Box::pin(async move {
            let info = appended.map_err(|e| e.to_string())?;
            log.wait_durable(info.last_offset)
                .await
                .map_err(|e| e.to_string())?;
            let ctx = ctx.upgrade().ok_or("the shard is shutting down")?;
            let deadline = std::time::Instant::now() + OFFSETS_COMMIT_TIMEOUT;
            ctx.wait_replicated(
                OFFSETS_TOPIC,
                partition,
                &log,
                info.last_offset,
                epoch,
                deadline,
            )
            .await
            .map_err(|(_, m)| m)
        })
    }
}

/// Replays a `__consumer_offsets` partition and builds its coordinator.
pub(crate) async fn load_coordinator(
    log: PartitionLog,
    config: GroupConfig,
    acks: ReplicatedAcks,
) -> Result<Rc<GroupCoordinator>, String> {
    let mut replay: Vec<(Bytes, Option<Bytes>)> = Vec::new();
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
            for r in decode_records(batch).map_err(|e| e.to_string())? {
                if let Some(key) = r.key {
                    replay.push((key, r.value));
                }
            }
            offset = offset.max(h.last_offset() + 1);
        }
    }
    let records = replay.len();
    let coordinator =
        GroupCoordinator::load(Rc::new(PartitionOffsetsLog { log, acks }), replay, config);
    tracing::debug!(records, "group coordinator loaded");
    Ok(coordinator)
}

/// Runs one call on a coordinator.
pub(crate) async fn run_call(c: &GroupCoordinator, call: GroupCall) -> GroupAnswer {
    match call {
        GroupCall::Join {
            req,
            version,
            client_id,
            client_host,
        } => GroupAnswer::Join(c.join_group(req, version, &client_id, &client_host).await),
        GroupCall::Sync { req, version } => GroupAnswer::Sync(c.sync_group(req, version).await),
        GroupCall::Heartbeat { req, version } => {
            GroupAnswer::Heartbeat(c.heartbeat(req, version).await)
        }
        GroupCall::Leave { req, version } => GroupAnswer::Leave(c.leave_group(req, version).await),
        GroupCall::Commit {
            req,
            version,
            commit_timestamps,
        } => GroupAnswer::Commit(c.offset_commit_at(req, version, &commit_timestamps).await),
        GroupCall::Fetch {
            group_id,
            topics,
            require_stable,
        } => GroupAnswer::Fetch(
            c.offset_fetch_group(&group_id, topics, require_stable)
                .await,
        ),
        GroupCall::Describe { group_id } => {
            GroupAnswer::Describe(c.describe_group(&group_id).await)
        }
        GroupCall::List { states, types } => {
            GroupAnswer::List(c.list_groups(&states, &types).await)
        }
        GroupCall::Delete { group_id } => GroupAnswer::Delete(c.delete_group(&group_id).await),
        GroupCall::OffsetDelete { req, version } => {
            GroupAnswer::OffsetDelete(c.offset_delete(req, version).await)
        }
    }
}
