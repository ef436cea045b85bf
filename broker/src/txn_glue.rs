//! Wiring of the transaction coordinators into the shards, as `groups_glue.rs` does for
//! groups. Each `__transaction_state` partition this node leads has one
//! `TransactionCoordinator` on the shard that owns it, loaded by replaying the partition
//! under that leadership (its leader epoch is the coordinator epoch). Requests are routed
//! there as `TxnCall`s.
//!
//! ```text
//!  InitProducerId/AddPartitionsToTxn/AddOffsetsToTxn/EndTxn(id) on any shard
//!     ─► partition = hash(id) % transaction.state.log.num.partitions ─► owner shard
//!     ─► coordinator ─► CoordinatorLog (replicated) / write_markers (txn_markers.rs)
//!                     / producer ids from the controller
//! ```
//! `__transaction_state` is created on the first FindCoordinator for a transactional id,
//! as Kafka creates it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTransaction;
use kafka_protocol::messages::add_partitions_to_txn_response::AddPartitionsToTxnResult;
use kafka_protocol::messages::describe_transactions_response::TransactionState as DescribedTxn;
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, EndTxnRequest, EndTxnResponse, InitProducerIdRequest,
    InitProducerIdResponse, ListTransactionsRequest, ListTransactionsResponse,
};
use kafka_protocol::ResponseError;

use crate::config::BrokerConfig;
use crate::coordinator_log::{replay_log, CoordinatorLog, ReplicatedAcks};
use crate::groups::coordinator_partition;
use crate::handlers::admin::controller_call;
use crate::metadata::controller::{MetadataOp, MetadataOpResult, NewTopic};
use crate::shard::ShardCtx;
use crate::shard_msg::{ShardRequest, ShardResponse, Tp};
use crate::txn::{
    MarkerRequest, MarkerWriter, ProducerIds, SystemClock, TransactionCoordinator, TxnConfig,
    TxnIo, TxnLog, TxnLogError, TRANSACTION_STATE_TOPIC,
};
use crate::txn_markers::{write_markers, Markers};

/// A request for one transaction coordinator (or, for `List`, every coordinator of the
/// shard).
#[derive(Debug)]
pub(crate) enum TxnCall {
    Init {
        req: InitProducerIdRequest,
        version: i16,
    },
    /// AddPartitionsToTxn v0–v3 (one transaction).
    AddPartitions {
        req: AddPartitionsToTxnRequest,
        version: i16,
    },
    /// One transaction of an AddPartitionsToTxn v4+ (split by coordinator).
    AddPartitionsFor {
        txn: AddPartitionsToTxnTransaction,
        version: i16,
    },
    AddOffsets {
        req: AddOffsetsToTxnRequest,
        version: i16,
        offsets_partitions: i32,
    },
    End {
        req: EndTxnRequest,
        version: i16,
    },
    Describe {
        id: String,
    },
    List {
        req: ListTransactionsRequest,
    },
}

#[derive(Debug)]
pub(crate) enum TxnAnswer {
    Init(InitProducerIdResponse),
    AddPartitions(AddPartitionsToTxnResponse),
    AddPartitionsFor(AddPartitionsToTxnResult),
    AddOffsets(AddOffsetsToTxnResponse),
    End(EndTxnResponse),
    Describe(DescribedTxn),
    List(Vec<ListTransactionsResponse>),
    /// This shard has no loaded coordinator for the partition.
    NotCoordinator,
}

/// Transaction coordinator settings from the broker config.
pub(crate) fn txn_config(config: &BrokerConfig) -> TxnConfig {
    TxnConfig {
        max_timeout_ms: config.int("transaction.max.timeout.ms") as i32,
        id_expiration_ms: config.int("transactional.id.expiration.ms"),
        abort_timed_out_interval_ms: config
            .int("transaction.abort.timed.out.transaction.cleanup.interval.ms")
            as u64,
        remove_expired_interval_ms: config
            .int("transaction.remove.expired.transaction.cleanup.interval.ms")
            as u64,
        concurrent_wait_ms: 1000,
        ..TxnConfig::default()
    }
}

/// The transaction coordinators this shard has loaded, by `__transaction_state` partition,
/// with the leader epoch each was loaded under. Owned by the shard; never crosses cores.
#[derive(Default)]
pub(crate) struct TxnCoordinators {
    loaded: RefCell<HashMap<i32, (i32, Rc<TransactionCoordinator>)>>,
    /// A request to create `__transaction_state` is on its way to the controller.
    creating: Cell<bool>,
}

impl TxnCoordinators {
    fn get(&self, partition: i32) -> Option<Rc<TransactionCoordinator>> {
        self.loaded.borrow().get(&partition).map(|(_, c)| c.clone())
    }

    fn all(&self) -> Vec<Rc<TransactionCoordinator>> {
        self.loaded
            .borrow()
            .values()
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// Unloads every coordinator (the topic was deleted, or the shard stops).
    pub(crate) fn clear(&self) {
        for (_, (_, c)) in self.loaded.borrow_mut().drain() {
            c.unload();
        }
    }
}

impl TxnLog for CoordinatorLog {
    fn append(
        &self,
        records: Vec<(Bytes, Option<Bytes>)>,
    ) -> Pin<Box<dyn Future<Output = Result<(), TxnLogError>>>> {
        let now = crate::errors::now_ms();
        let write = self.write(Self::batch(&records, now), now, None);
        Box::pin(async move {
            write.await.map_err(|(code, message)| {
                if code == ResponseError::NotCoordinator.code()
                    || code == ResponseError::NotLeaderOrFollower.code()
                    || code == ResponseError::KafkaStorageError.code()
                {
                    TxnLogError::NotLeader(message)
                } else {
                    TxnLogError::Unavailable(message)
                }
            })
        })
    }
}

/// Markers through `txn_markers::write_markers` from the coordinator's shard.
struct ShardMarkers {
    ctx: Weak<ShardCtx>,
}

impl MarkerWriter for ShardMarkers {
    fn write_markers(
        &self,
        m: MarkerRequest,
    ) -> Pin<Box<dyn Future<Output = Vec<(String, i32, i16)>>>> {
        let ctx = self.ctx.clone();
        Box::pin(async move {
            let Some(ctx) = ctx.upgrade() else {
                return Vec::new(); // shutting down: every partition is retried later
            };
            let markers = Markers {
                producer_id: m.producer_id,
                producer_epoch: m.producer_epoch,
                commit: m.commit,
                coordinator_epoch: m.coordinator_epoch,
                parts: m
                    .partitions
                    .into_iter()
                    .map(|(topic, partition)| Tp {
                        topic: topic.into(),
                        partition,
                    })
                    .collect(),
            };
            write_markers(&ctx, &markers)
                .await
                .into_iter()
                .map(|(tp, code)| (tp.topic.to_string(), tp.partition, code))
                .collect()
        })
    }
}

/// Producer ids from the controller (shard 0 talks to the quorum).
struct ControllerProducerIds {
    ctx: Weak<ShardCtx>,
}

impl ProducerIds for ControllerProducerIds {
    fn allocate(&self) -> Pin<Box<dyn Future<Output = Result<i64, i16>>>> {
        let ctx = self.ctx.clone();
        Box::pin(async move {
            let ctx = ctx
                .upgrade()
                .ok_or(ResponseError::CoordinatorNotAvailable.code())?;
            match ctx
                .call(0, ShardRequest::Metadata(MetadataOp::AllocateProducerId))
                .await
            {
                ShardResponse::Metadata(MetadataOpResult::ProducerId(pid)) => Ok(pid),
                _ => Err(ResponseError::CoordinatorNotAvailable.code()),
            }
        })
    }
}

impl ShardCtx {
    /// Loads the transaction coordinator of `partition` when this node leads it at `epoch`
    /// (a coordinator loaded under another leadership is unloaded first: the partition may
    /// have been written elsewhere meanwhile), unloads it when it does not lead.
    pub(crate) async fn sync_txn_coordinator(self: &Rc<Self>, partition: i32, epoch: Option<i32>) {
        let loaded = self
            .txn_coordinators
            .loaded
            .borrow()
            .get(&partition)
            .map(|(e, _)| *e);
        if loaded.is_some() && loaded != epoch {
            if let Some((_, c)) = self.txn_coordinators.loaded.borrow_mut().remove(&partition) {
                c.unload();
            }
            tracing::info!(
                partition,
                "no longer the transaction coordinator of this partition"
            );
        }
        let Some(epoch) = epoch else { return };
        if loaded == Some(epoch) {
            return;
        }
        let Some(log) = self.log(TRANSACTION_STATE_TOPIC, partition) else {
            return;
        };
        let mut replay: Vec<(Bytes, Option<Bytes>)> = Vec::new();
        let read = replay_log(&log, |h, _, records| {
            if h.is_control() {
                return;
            }
            replay.extend(records.into_iter().filter_map(|r| Some((r.key?, r.value))));
        })
        .await;
        if let Err(e) = read {
            tracing::error!(partition, error = %e, "cannot load transaction coordinator");
            return;
        }
        // the leadership may have ended while the log was read
        if self.leader_epoch_here(TRANSACTION_STATE_TOPIC, partition) != Some(epoch) {
            return;
        }
        let weak = Rc::downgrade(self);
        let io = TxnIo {
            log: Rc::new(CoordinatorLog {
                log,
                acks: ReplicatedAcks {
                    ctx: weak.clone(),
                    topic: TRANSACTION_STATE_TOPIC,
                    partition,
                    epoch,
                },
            }),
            markers: Rc::new(ShardMarkers { ctx: weak.clone() }),
            producer_ids: Rc::new(ControllerProducerIds { ctx: weak }),
            clock: Rc::new(SystemClock),
        };
        let c =
            TransactionCoordinator::load(partition, epoch, io, txn_config(&self.config), replay);
        c.start();
        self.txn_coordinators
            .loaded
            .borrow_mut()
            .insert(partition, (epoch, c));
    }

    /// Runs `call` on this shard's coordinator of `partition` (-1 with `List`: all of them).
    pub(crate) async fn txn_call(&self, partition: i32, call: TxnCall) -> TxnAnswer {
        if let TxnCall::List { req } = &call {
            let mut out = Vec::new();
            for c in self.txn_coordinators.all() {
                out.push(c.list_transactions(req));
            }
            return TxnAnswer::List(out);
        }
        let Some(c) = self.txn_coordinators.get(partition) else {
            return TxnAnswer::NotCoordinator;
        };
        match call {
            TxnCall::Init { req, version } => {
                TxnAnswer::Init(c.init_producer_id(&req, version).await)
            }
            TxnCall::AddPartitions { req, version } => {
                TxnAnswer::AddPartitions(c.add_partitions_to_txn(&req, version).await)
            }
            TxnCall::AddPartitionsFor { txn, version } => {
                TxnAnswer::AddPartitionsFor(c.add_partitions_for_transaction(&txn, version).await)
            }
            TxnCall::AddOffsets {
                req,
                version,
                offsets_partitions,
            } => TxnAnswer::AddOffsets(
                c.add_offsets_to_txn(&req, version, offsets_partitions)
                    .await,
            ),
            TxnCall::End { req, version } => TxnAnswer::End(c.end_txn(&req, version).await),
            TxnCall::Describe { id } => TxnAnswer::Describe(c.describe_transaction(&id)),
            TxnCall::List { .. } => TxnAnswer::NotCoordinator,
        }
    }
}

/// The `__transaction_state` partition and owning shard of `transactional_id`, once the
/// topic exists.
pub(crate) fn route(ctx: &ShardCtx, transactional_id: &str) -> Option<(i32, usize)> {
    let partitions = ctx
        .image
        .borrow()
        .topic(TRANSACTION_STATE_TOPIC)?
        .partitions;
    let p = coordinator_partition(transactional_id, partitions);
    Some((p, ctx.owner(TRANSACTION_STATE_TOPIC, p)?))
}

/// Sends `call` to the coordinator of `transactional_id`.
pub(crate) async fn call(ctx: &Rc<ShardCtx>, transactional_id: &str, call: TxnCall) -> TxnAnswer {
    let Some((partition, shard)) = route(ctx, transactional_id) else {
        return TxnAnswer::NotCoordinator;
    };
    match ctx
        .call(
            shard,
            ShardRequest::Txn {
                partition,
                call: Box::new(call),
            },
        )
        .await
    {
        ShardResponse::Txn(a) => a,
        _ => TxnAnswer::NotCoordinator,
    }
}

/// Asks the controller to create `__transaction_state` (once per shard at a time), as
/// Kafka does on the first FindCoordinator for a transactional id: compacted,
/// `transaction.state.log.*` partitions, replication factor (at most the live brokers),
/// min ISR and segment size.
pub(crate) fn ensure_topic(ctx: &Rc<ShardCtx>) {
    if ctx.txn_coordinators.creating.replace(true) {
        return;
    }
    let ctx = ctx.clone();
    glommio::spawn_local(async move {
        let live = ctx.image.borrow().live_brokers().count().max(1);
        let rf = (ctx.config.int("transaction.state.log.replication.factor") as usize).min(live);
        let min_isr = (ctx.config.int("transaction.state.log.min.isr") as usize).min(rf);
        let topic = NewTopic {
            name: TRANSACTION_STATE_TOPIC.to_string(),
            partitions: ctx.config.int("transaction.state.log.num.partitions") as i32,
            replication_factor: rf as i16,
            configs: vec![
                ("cleanup.policy".into(), "compact".into()),
                // as Kafka: stored as written whatever the broker's compression.type
                ("compression.type".into(), "producer".into()),
                (
                    "segment.bytes".into(),
                    ctx.config_value("transaction.state.log.segment.bytes"),
                ),
                ("min.insync.replicas".into(), min_isr.to_string()),
            ],
            assignments: Vec::new(),
        };
        let op = MetadataOp::CreateTopics {
            topics: vec![topic],
            validate_only: false,
        };
        match controller_call(&ctx, op, None).await {
            Ok(outcomes) => {
                for o in outcomes.iter().filter(|o| o.error != 0) {
                    // TOPIC_ALREADY_EXISTS: another broker created it first
                    if o.error != ResponseError::TopicAlreadyExists.code() {
                        tracing::warn!(error = o.error, message = ?o.message, "cannot create {TRANSACTION_STATE_TOPIC}");
                    }
                }
            }
            Err((code, message)) => {
                tracing::warn!(code, %message, "cannot create {TRANSACTION_STATE_TOPIC}")
            }
        }
        ctx.txn_coordinators.creating.set(false);
    })
    .detach();
}
