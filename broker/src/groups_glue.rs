//! Wiring of the group coordinators into the shards. Each `__consumer_offsets` partition has
//! one `GroupCoordinator` on the shard that owns it, rebuilt by replaying the partition when
//! the shard opens it. Group requests are routed there as `GroupCall`s; the coordinator
//! persists through `CoordinatorLog` (`coordinator_log.rs`), an `OffsetsLog` over the partition.
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
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, SyncGroupRequest, SyncGroupResponse, TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::StrBytes;
use sluice_proto::batch::set_transactional_producer;
use sluice_storage::{PartitionLog, TxnVerification};

use crate::config::BrokerConfig;
use crate::coordinator_log::{replay_log, CoordinatorLog, ReplicatedAcks};
use crate::errors::now_ms;
use crate::groups::{
    commit_error, GroupConfig, GroupCoordinator, GroupOffsets, OffsetsLog, Replay, WriteFailed,
};

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
    TxnCommit {
        req: TxnOffsetCommitRequest,
        version: i16,
        /// The KIP-890 guard for the group's partition (`txn_verify.rs`).
        verification: TxnVerification,
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
    TxnCommit(TxnOffsetCommitResponse),
    /// This broker does not lead the group's `__consumer_offsets` partition.
    NotCoordinator,
    /// It does, and its coordinator is not loaded yet (the partition is being replayed).
    Loading,
}

impl GroupAnswer {
    /// The error of a request its coordinator did not answer, as Kafka's: NOT_COORDINATOR
    /// sends the client to FindCoordinator again, COORDINATOR_LOAD_IN_PROGRESS has it
    /// retry here.
    pub(crate) fn unanswered_code(&self) -> i16 {
        use kafka_protocol::ResponseError as E;
        match self {
            GroupAnswer::Loading => E::CoordinatorLoadInProgress.code(),
            _ => E::NotCoordinator.code(),
        }
    }
}

/// Group settings from the broker config.
pub(crate) fn group_config(config: &BrokerConfig) -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: config.int("group.initial.rebalance.delay.ms") as u64,
        min_session_timeout_ms: config.int("group.min.session.timeout.ms") as i32,
        max_session_timeout_ms: config.int("group.max.session.timeout.ms") as i32,
        offsets_retention_ms: config.int("offsets.retention.minutes") * 60_000,
        max_group_size: config.int("group.max.size") as usize,
        offset_metadata_max_bytes: config.int("offset.metadata.max.bytes") as usize,
        ..GroupConfig::default()
    }
}

impl OffsetsLog for CoordinatorLog {
    fn append(
        &self,
        records: Vec<(Bytes, Option<Bytes>)>,
    ) -> Pin<Box<dyn Future<Output = Result<(), WriteFailed>>>> {
        let now = now_ms();
        Box::pin(self.write(Self::batch(&records, now), now, None))
    }

    fn append_txn(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        records: Vec<(Bytes, Option<Bytes>)>,
        verification: TxnVerification,
    ) -> Pin<Box<dyn Future<Output = Result<(), i16>>>> {
        let now = now_ms();
        let mut batch = Self::batch(&records, now).to_vec();
        // Kafka writes TxnOffsetCommit records without a sequence (NO_SEQUENCE)
        set_transactional_producer(&mut batch, producer_id, producer_epoch, -1);
        let write = self.write(Bytes::from(batch), now, Some(verification));
        Box::pin(async move {
            write.await.map_err(|(code, m)| {
                tracing::debug!(producer_id, error = %m, "transactional offset commit not written");
                commit_error(code)
            })
        })
    }
}

/// Replays a `__consumer_offsets` partition and builds its coordinator.
pub(crate) async fn load_coordinator(
    log: PartitionLog,
    config: GroupConfig,
    acks: ReplicatedAcks,
) -> Result<Rc<GroupCoordinator>, String> {
    let mut replay: Vec<Replay> = Vec::new();
    replay_log(&log, |h, marker, records| {
        if h.is_control() {
            if let Some(m) = marker {
                replay.push(Replay::Marker {
                    producer_id: h.producer_id,
                    commit: m.commit,
                });
            }
            return;
        }
        let txn_producer = h.is_transactional().then_some(h.producer_id);
        for r in records {
            if let Some(key) = r.key {
                replay.push(Replay::Record {
                    key,
                    value: r.value,
                    txn_producer,
                });
            }
        }
    })
    .await?;
    let records = replay.len();
    let coordinator = GroupCoordinator::load(Rc::new(CoordinatorLog { log, acks }), replay, config);
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
        GroupCall::TxnCommit {
            req,
            version,
            verification,
        } => GroupAnswer::TxnCommit(c.txn_offset_commit(req, version, verification).await),
    }
}
