//! A shard: one pinned glommio executor and everything it owns — its storage context, the
//! partitions placed on it, its copy of the metadata image, fetch sessions, and (shard 0) the
//! controller. `ShardCtx` is owned by its shard and never crosses cores; other shards reach
//! it only through `ShardRequest` messages.
//!
//! ```text
//!  connection (any shard) ──submit(owner, req)──► owner: start(req) ──► PartitionLog
//! ```
//!
//! `start` dispatches; the paths are child modules: `produce` (admission, appends, acks),
//! `fetch` (reads, long polls, ListOffsets), `replicas` (following the metadata image:
//! opening, reconfiguring and deleting replicas, group coordinators).

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;
use sluice_storage::{PartitionLog, ShardStorage};

use crate::admission::Admission;
use crate::config::BrokerConfig;
use crate::errors::{code, now_ms, storage_error_code};
use crate::fast_map::FastMap;
use crate::groups::GroupCoordinator;
use crate::groups_glue::{run_call, GroupAnswer};
use crate::metadata::controller::{MetadataOp, MetadataOpResult};
use crate::metadata::image::{MetadataImage, TopicInfo};
use crate::placement::shard_for;
use crate::quorum::{Event, OpReply};
use crate::router::{BoxFuture, Router};
use crate::shard_msg::{ShardRequest, ShardResponse};
use crate::watchdog::Watchdog;
use kafka_protocol::ResponseError;
use sluice_storage::Signal;

mod delete_records;
mod fetch;
mod produce;
pub(crate) use produce::{within, Appended};
mod replicas;

/// Broker-side bounds on what a request may ask for, read once from the config.
pub(crate) struct Limits {
    pub(crate) fetch_max_bytes: usize,
    pub(crate) fetch_max_wait: Duration,
}

impl Limits {
    fn from_config(config: &BrokerConfig) -> Self {
        Self {
            fetch_max_bytes: config.int("fetch.max.bytes") as usize,
            fetch_max_wait: Duration::from_millis(config.int("fetch.max.wait.ms") as u64),
        }
    }
}

/// Owned by its shard; never crosses cores.
pub(crate) struct ShardCtx {
    pub(crate) id: usize,
    pub(crate) shards: usize,
    pub(crate) config: BrokerConfig,
    /// The listeners, parsed from `config` (checked before the shards start).
    pub(crate) listeners: crate::listeners::Listeners,
    /// ACL decisions (`authorizer.class.name`).
    pub(crate) access: crate::access::Access,
    /// How to reach other brokers' inter-broker listener (TLS, SASL).
    pub(crate) peer_security: std::sync::Arc<crate::peer::PeerSecurity>,
    pub(crate) cluster_id: String,
    pub(crate) storage: Rc<ShardStorage>,
    pub(crate) router: Rc<Router>,
    pub(crate) image: RefCell<MetadataImage>,
    /// Partitions this shard owns, by topic then partition index.
    partitions: RefCell<FastMap<String, FastMap<i32, PartitionLog>>>,
    /// This node's id (`node.id`).
    pub(crate) node_id: i32,
    /// Shard 0: the quorum thread's inbox (changes go there).
    pub(crate) quorum: OnceCell<flume::Sender<Event>>,
    /// Shard 0: the metadata-log index every shard has applied, and a signal when it grows.
    pub(crate) metadata_applied: Cell<u64>,
    pub(crate) metadata_progress: Signal,
    /// Group coordinators of the `__consumer_offsets` partitions this shard owns.
    pub(crate) groups: RefCell<HashMap<i32, Rc<GroupCoordinator>>>,
    /// The leader epoch each loaded coordinator was loaded under.
    group_epochs: RefCell<HashMap<i32, i32>>,
    /// Offsets partitions whose coordinator is being loaded (loads in progress).
    pub(crate) groups_loading: RefCell<HashMap<i32, u32>>,
    pub(crate) fetch_sessions: RefCell<crate::handlers::fetch_session::FetchSessions>,
    /// Set when shard 0 says every shard has applied the metadata snapshot: only then do
    /// shards accept connections, so no request sees a partition that is still opening.
    pub(crate) ready: Cell<bool>,
    pub(crate) ready_notify: Signal,
    /// Produce admission against the shard's unflushed-bytes budget.
    pub(crate) admission: Rc<Admission>,
    pub(crate) watchdog: Rc<Watchdog>,
    /// Produce answers REQUEST_TIMED_OUT (at most a line a second): a client reports such
    /// a wait only as its own timeout, and often disconnects with it.
    produce_timeouts: RefCell<crate::conn_limit::RateLimitedLog>,
    /// Partitions this shard follows, by leader (one fetcher task each).
    pub(crate) followers: crate::replication::Followers,
    /// Partitions this shard leads: followers' positions and high watermarks.
    pub(crate) leaders: crate::hw::Leaders,
    pub(crate) limits: Limits,
    /// Ids for this shard's connections (`Conn::id`).
    pub(crate) next_conn: Cell<u64>,
    /// This shard's counters (`metrics/`), gathered by scrapes.
    pub(crate) metrics: Rc<crate::metrics::ShardMetrics>,
    /// Idle connections to other brokers for transaction markers.
    pub(crate) peer_pool: crate::txn_markers::PeerPool,
    /// Transaction coordinators of the `__transaction_state` partitions this shard leads.
    pub(crate) txn_coordinators: crate::txn_glue::TxnCoordinators,
}

impl ShardCtx {
    pub(crate) fn new(
        config: BrokerConfig,
        cluster_id: String,
        storage: Rc<ShardStorage>,
        router: Rc<Router>,
        shards: usize,
        metrics: Rc<crate::metrics::ShardMetrics>,
        peer_security: std::sync::Arc<crate::peer::PeerSecurity>,
    ) -> Self {
        let listeners = config
            .listeners()
            .expect("the listener settings are checked before the shards start"); // ok: checked in server::run
        Self {
            peer_security,
            access: crate::access::Access::new(&config),
            listeners,
            id: router.shard_id,
            shards,
            cluster_id,
            storage: storage.clone(),
            router,
            image: RefCell::new(MetadataImage::default()),
            partitions: RefCell::new(FastMap::default()),
            node_id: config.node_id(),
            quorum: OnceCell::new(),
            metadata_applied: Cell::new(0),
            metadata_progress: Signal::default(),
            groups: RefCell::new(HashMap::new()),
            group_epochs: RefCell::new(HashMap::new()),
            groups_loading: RefCell::new(HashMap::new()),
            fetch_sessions: RefCell::new(Default::default()),
            ready: Cell::new(false),
            ready_notify: Signal::default(),
            admission: Admission::new(
                config.int("storage.unflushed.max.bytes") as usize,
                storage.clone(),
            ),
            followers: Default::default(),
            leaders: Default::default(),
            watchdog: Watchdog::new(Duration::from_millis(
                config.int("request.watchdog.ms") as u64
            )),
            produce_timeouts: RefCell::new(crate::conn_limit::RateLimitedLog::new()),
            limits: Limits::from_config(&config),
            next_conn: Cell::new(1),
            metrics,
            peer_pool: Default::default(),
            txn_coordinators: Default::default(),
            config,
        }
    }

    pub(crate) fn config_value(&self, name: &str) -> String {
        self.config.config_value(name)
    }

    /// The shard that owns `partition` of `topic` if this node leads it: else
    /// UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER or LEADER_NOT_AVAILABLE.
    pub(crate) fn route(&self, topic: &str, partition: i32) -> Result<usize, ResponseError> {
        self.route_in(self.image.borrow().topic(topic), partition)
    }

    /// `route` with the topic already looked up (None: unknown).
    pub(crate) fn route_in(
        &self,
        t: Option<&TopicInfo>,
        partition: i32,
    ) -> Result<usize, ResponseError> {
        let t = t.ok_or(ResponseError::UnknownTopicOrPartition)?;
        let state = usize::try_from(partition)
            .ok()
            .and_then(|p| t.parts.get(p))
            .ok_or(ResponseError::UnknownTopicOrPartition)?;
        match state.leader {
            l if l == self.node_id => Ok(shard_for(&t.id, partition, self.shards)),
            -1 => Err(ResponseError::LeaderNotAvailable),
            _ => Err(ResponseError::NotLeaderOrFollower),
        }
    }

    /// The topic's `min.insync.replicas`: its override, else the broker's.
    pub(crate) fn min_insync_replicas(&self, t: &TopicInfo) -> usize {
        t.configs
            .get("min.insync.replicas")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(self.config.int("min.insync.replicas") as usize)
    }

    /// The error for a partition this shard has no open log of. As Kafka's replica manager:
    /// a partition the metadata has is NOT_LEADER_OR_FOLLOWER (retriable: clients refresh
    /// their metadata and retry; e.g. while the logs are still being opened and recovered
    /// after a restart, or just after a leadership moved here), one it does not have is
    /// UNKNOWN_TOPIC_OR_PARTITION.
    pub(crate) fn no_log_error(&self, topic: &str, partition: i32) -> i16 {
        let image = self.image.borrow();
        if image.partition(topic, partition).is_some() {
            code(ResponseError::NotLeaderOrFollower)
        } else {
            code(ResponseError::UnknownTopicOrPartition)
        }
    }

    /// The leader epoch of `partition` of `topic` if this node leads it.
    pub(crate) fn leader_epoch_here(&self, topic: &str, partition: i32) -> Option<i32> {
        let image = self.image.borrow();
        let state = image.partition(topic, partition)?;
        (state.leader == self.node_id).then_some(state.leader_epoch)
    }

    /// A client's `current_leader_epoch` against this leader's: older is
    /// FENCED_LEADER_EPOCH (its metadata is stale), newer UNKNOWN_LEADER_EPOCH (ours is).
    pub(crate) fn check_leader_epoch(
        &self,
        topic: &str,
        partition: i32,
        epoch: Option<i32>,
    ) -> Result<(), ResponseError> {
        check_leader_epoch_in(self.image.borrow().topic(topic), partition, epoch)
    }

    /// The shard that owns `partition` of `topic`, if the topic exists.
    pub(crate) fn owner(&self, topic: &str, partition: i32) -> Option<usize> {
        let image = self.image.borrow();
        let t = image.topic(topic)?;
        (0..t.partitions)
            .contains(&partition)
            .then(|| shard_for(&t.id, partition, self.shards))
    }

    /// Every partition log this shard has open: (topic, partition, log).
    pub(crate) fn owned_logs(&self) -> Vec<(String, i32, PartitionLog)> {
        self.partitions
            .borrow()
            .iter()
            .flat_map(|(t, m)| m.iter().map(|(p, log)| (t.clone(), *p, log.clone())))
            .collect()
    }

    pub(crate) fn log(&self, topic: &str, partition: i32) -> Option<PartitionLog> {
        self.partitions
            .borrow()
            .get(topic)?
            .get(&partition)
            .cloned()
    }

    /// Runs `f` with a `log` lookup for many partitions: a run of one topic's partitions
    /// hashes the topic name once.
    pub(crate) fn with_logs<R>(
        &self,
        f: impl FnOnce(&mut dyn FnMut(&str, i32) -> Option<PartitionLog>) -> R,
    ) -> R {
        let all = self.partitions.borrow();
        let mut last: Option<(String, Option<&FastMap<i32, PartitionLog>>)> = None;
        let mut log = |topic: &str, partition: i32| -> Option<PartitionLog> {
            let parts = match &last {
                Some((name, parts)) if name == topic => *parts,
                _ => {
                    let parts = all.get(topic);
                    last = Some((topic.to_string(), parts));
                    parts
                }
            };
            parts?.get(&partition).cloned()
        };
        f(&mut log)
    }

    /// Submits `req` to `shard`. Awaiting this runs (locally) or queues (remotely) the
    /// request's ordered part; the returned future yields the answer.
    pub(crate) async fn submit(
        self: &Rc<Self>,
        shard: usize,
        req: ShardRequest,
    ) -> BoxFuture<ShardResponse> {
        if shard == self.id {
            return self.start(req);
        }
        let reply = self.router.send(shard, req).await;
        Box::pin(async move { reply.await.unwrap_or(ShardResponse::Unavailable) })
    }

    /// Submits and waits for the answer.
    pub(crate) async fn call(self: &Rc<Self>, shard: usize, req: ShardRequest) -> ShardResponse {
        self.submit(shard, req).await.await
    }

    /// Sends `make()` to every shard (this one included) and waits for all to answer.
    pub(crate) async fn broadcast(self: &Rc<Self>, make: impl Fn() -> ShardRequest) {
        let mut pending = Vec::with_capacity(self.shards);
        for s in 0..self.shards {
            pending.push(self.submit(s, make()).await);
        }
        for p in pending {
            p.await;
        }
    }

    /// Shard 0: hands `op` to the quorum thread; once it committed, waits until every shard
    /// here applied it, so this broker's next answer reflects the change.
    async fn metadata_op(self: &Rc<Self>, op: MetadataOp) -> MetadataOpResult {
        const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(30);
        let Some(quorum) = self.quorum.get() else {
            return MetadataOpResult::Failed(
                code(ResponseError::NotController),
                "metadata changes go to shard 0".into(),
            );
        };
        let (tx, rx) = flume::bounded::<OpReply>(1);
        let sent = quorum.send(Event::Op {
            op,
            reply: tx,
            deadline: std::time::Instant::now() + CONTROLLER_TIMEOUT,
            forwarded: false,
        });
        if sent.is_err() {
            return MetadataOpResult::Failed(
                code(ResponseError::NotController),
                "the metadata quorum is stopped".into(),
            );
        }
        let Ok((result, index)) = rx.recv_async().await else {
            return MetadataOpResult::Failed(
                code(ResponseError::NotController),
                "the metadata quorum dropped the change".into(),
            );
        };
        let deadline = std::time::Instant::now() + CONTROLLER_TIMEOUT;
        while self.metadata_applied.get() < index {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            future::or(self.metadata_progress.wait(), glommio::timer::sleep(left)).await;
        }
        result
    }

    /// Runs the ordered part of a request now; the rest runs in the returned future.
    pub(crate) fn start(self: &Rc<Self>, req: ShardRequest) -> BoxFuture<ShardResponse> {
        let ctx = self.clone();
        match req {
            ShardRequest::StartServing => Box::pin(async move {
                ctx.metrics.start_counting();
                ctx.ready.set(true);
                ctx.ready_notify.notify();
                ShardResponse::Done
            }),
            ShardRequest::Apply { index, records } => {
                // applied to the image now, in arrival order; partitions open in the future
                let changes = {
                    let mut image = self.image.borrow_mut();
                    records.iter().flat_map(|r| image.apply(index, r)).collect()
                };
                self.note_image_changed();
                Box::pin(async move {
                    ctx.act_on(changes).await;
                    ShardResponse::Done
                })
            }
            ShardRequest::Reset { index, records } => {
                let mut new = MetadataImage::default();
                for r in &records {
                    new.apply(index, r);
                }
                let changes = self.image.borrow().diff(&new);
                *self.image.borrow_mut() = new;
                self.note_image_changed();
                Box::pin(async move {
                    ctx.act_on(changes).await;
                    ShardResponse::Done
                })
            }
            ShardRequest::Metadata(op) => {
                Box::pin(async move { ShardResponse::Metadata(ctx.metadata_op(op).await) })
            }
            ShardRequest::Produce {
                acks,
                timeout_ms,
                conn,
                parts,
            } => self.produce(acks, timeout_ms, conn, parts),
            ShardRequest::Fetch {
                parts,
                max_bytes,
                replica,
                read_committed,
            } => {
                if replica >= 0 {
                    for p in &parts {
                        self.follower_fetched(
                            &p.topic,
                            p.partition,
                            replica,
                            p.fetch_offset,
                            p.log_start,
                        );
                    }
                }
                Box::pin(async move {
                    ShardResponse::Fetch(ctx.fetch(parts, max_bytes, replica, read_committed).await)
                })
            }
            ShardRequest::WaitData {
                parts,
                wait_ms,
                replica,
            } => Box::pin(async move {
                ctx.wait_data(&parts, wait_ms, replica).await;
                ShardResponse::Done
            }),
            ShardRequest::Group { partition, call } => Box::pin(async move {
                if partition < 0 {
                    let all: Vec<Rc<GroupCoordinator>> =
                        ctx.groups.borrow().values().cloned().collect();
                    let mut listed = Vec::new();
                    if let crate::groups_glue::GroupCall::List { states, types } = *call {
                        for c in all {
                            listed.extend(c.list_groups(&states, &types).await);
                        }
                    }
                    return ShardResponse::Group(GroupAnswer::List(listed));
                }
                let coordinator = ctx.groups.borrow().get(&partition).cloned();
                ShardResponse::Group(match coordinator {
                    Some(c) => run_call(&c, *call).await,
                    // its coordinator is being loaded (`sync_coordinator`)
                    None if ctx.groups_loading.borrow().contains_key(&partition) => {
                        GroupAnswer::Loading
                    }
                    None => GroupAnswer::NotCoordinator,
                })
            }),
            ShardRequest::EpochEnds { parts } => {
                let answers = parts
                    .iter()
                    .map(|(tp, epoch)| match self.log(&tp.topic, tp.partition) {
                        None => (self.no_log_error(&tp.topic, tp.partition), -1, -1),
                        Some(log) => match log.end_offset_for_epoch(*epoch) {
                            Some((e, end)) => (0, e, end),
                            None => (0, -1, -1),
                        },
                    })
                    .collect();
                Box::pin(async move { ShardResponse::EpochEnds(answers) })
            }
            ShardRequest::Metrics => {
                Box::pin(
                    async move { ShardResponse::Metrics(Box::new(ctx.metrics_snapshot().await)) },
                )
            }
            ShardRequest::Txn { partition, call } => {
                Box::pin(async move { ShardResponse::Txn(ctx.txn_call(partition, *call).await) })
            }
            ShardRequest::StartTxnVerification { producer, parts } => Box::pin(async move {
                ShardResponse::TxnGuards(ctx.start_txn_verifications(producer, parts).await)
            }),
            ShardRequest::Producers(tp) => {
                let log = self
                    .log(&tp.topic, tp.partition)
                    .filter(|_| self.leader_epoch_here(&tp.topic, tp.partition).is_some());
                Box::pin(async move {
                    let Some(log) = log else {
                        return ShardResponse::Producers(Err(code(
                            ResponseError::NotLeaderOrFollower,
                        )));
                    };
                    ShardResponse::Producers(match log.load_transaction_state().await {
                        Ok(()) => Ok(log.producers()),
                        Err(e) => Err(storage_error_code(&e)),
                    })
                })
            }
            ShardRequest::LogSizes => {
                let sizes = self
                    .owned_logs()
                    .into_iter()
                    .map(|(topic, partition, log)| (topic, partition, log.size_bytes()))
                    .collect();
                Box::pin(async move { ShardResponse::LogSizes(sizes) })
            }
            ShardRequest::WriteMarkers(m) => {
                Box::pin(async move { ShardResponse::Markers(ctx.write_markers_here(m).await) })
            }
            ShardRequest::ListOffsets {
                parts,
                read_committed,
            } => Box::pin(async move {
                let mut out = Vec::with_capacity(parts.len());
                for (tp, ts) in parts {
                    out.push(ctx.list_offset(&tp, ts, read_committed).await);
                }
                ShardResponse::ListOffsets(out)
            }),
            ShardRequest::DeleteRecords { parts, timeout } => Box::pin(async move {
                ShardResponse::DeleteRecords(ctx.delete_records(parts, timeout).await)
            }),
        }
    }

    /// Expires old committed offsets on every coordinator of this shard.
    pub(crate) async fn expire_offsets(&self) {
        let all: Vec<Rc<GroupCoordinator>> = self.groups.borrow().values().cloned().collect();
        let now = now_ms();
        for c in all {
            let removed = c.expire_offsets(now).await;
            if removed > 0 {
                tracing::info!(removed, shard = self.id, "expired committed offsets");
            }
        }
    }

    /// Closes every partition log (clean-shutdown markers) and the metadata log.
    pub(crate) async fn shutdown(&self) {
        self.followers.stop_all();
        self.write_final_hw_checkpoint().await;
        // every partition log is the storage's: its shutdown closes them all, many at once
        // with shared syncs (one at a time here took ~40 s at 10,000 partitions)
        if let Err(e) = self.storage.shutdown().await {
            tracing::warn!(error = %e, "storage shutdown");
        }
    }
}

/// `ShardCtx::check_leader_epoch` with the topic already looked up (None: unknown, which
/// the caller's routing reports).
pub(crate) fn check_leader_epoch_in(
    t: Option<&TopicInfo>,
    partition: i32,
    epoch: Option<i32>,
) -> Result<(), ResponseError> {
    let Some(epoch) = epoch.filter(|e| *e >= 0) else {
        return Ok(());
    };
    let Some(state) = t.and_then(|t| t.parts.get(usize::try_from(partition).ok()?)) else {
        return Ok(());
    };
    match epoch.cmp(&state.leader_epoch) {
        std::cmp::Ordering::Less => Err(ResponseError::FencedLeaderEpoch),
        std::cmp::Ordering::Greater => Err(ResponseError::UnknownLeaderEpoch),
        std::cmp::Ordering::Equal => Ok(()),
    }
}
