//! A shard: one pinned glommio executor and everything it owns — its storage context, the
//! partitions placed on it, its copy of the metadata image, fetch sessions, and (shard 0) the
//! controller. `ShardCtx` is owned by its shard and never crosses cores; other shards reach
//! it only through `ShardRequest` messages.
//!
//! ```text
//!  connection (any shard) ──submit(owner, req)──► owner: start(req) ──► PartitionLog
//! ```

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use sluice_proto::batch::RecordBatchHeader;
use sluice_storage::{PartitionLog, ShardStorage};

use crate::admission::{Admission, ConnKey};
use crate::config::BrokerConfig;
use crate::coordinator_log::ReplicatedAcks;
use crate::errors::{code, now_ms, storage_error_code};
use crate::fast_map::FastMap;
use crate::groups::{GroupCoordinator, OFFSETS_TOPIC};
use crate::groups_glue::{group_config, load_coordinator, run_call, GroupAnswer};
use crate::metadata::controller::{MetadataOp, MetadataOpResult};
use crate::metadata::image::{Change, MetadataImage, TopicInfo};
use crate::metadata::topic_config::log_config;
use crate::partition_meta;
use crate::placement::shard_for;
use crate::quorum::{Event, OpReply};
use crate::router::{BoxFuture, Router};
use crate::shard_msg::{
    FetchPart, FetchPartResult, OffsetAnswer, ProducePartResult, ShardRequest, ShardResponse, Tp,
};
use crate::txn::TRANSACTION_STATE_TOPIC;
use crate::watchdog::Watchdog;
use kafka_protocol::ResponseError;
use sluice_storage::Signal;

/// How long acks=-1 waits for durability when the request's timeout_ms is not positive.
const DEFAULT_PRODUCE_TIMEOUT_MS: u64 = 30_000;

/// An acks=all answer waiting: (its slot, the partition, its log, the last offset appended).
/// An acks=all answer to wait for: (index in the answer, partition, log, last offset
/// appended, the leader epoch it was appended under).
type AckWait = (usize, Tp, PartitionLog, i64, i32);

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
                        self.follower_fetched(&p.topic, p.partition, replica, p.fetch_offset);
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
        }
    }

    /// Appends each part in arrival order, now if the shard is under its unflushed-bytes
    /// budget and nobody is waiting, else once its turn came and the flusher freed budget.
    /// Waiting for that turn and then (acks=-1) for durability takes at most `timeout_ms`
    /// in all; past it the answer is REQUEST_TIMED_OUT (not appended, if still waiting
    /// for its turn), as Kafka answers a produce whose replication outlasts its timeout.
    fn produce(
        self: &Rc<Self>,
        acks: i16,
        timeout_ms: i32,
        conn: ConnKey,
        parts: Vec<(Tp, bytes::Bytes)>,
    ) -> BoxFuture<ShardResponse> {
        let timeout = Duration::from_millis(if timeout_ms > 0 {
            timeout_ms as u64
        } else {
            DEFAULT_PRODUCE_TIMEOUT_MS
        });
        let ctx = self.clone();
        // Idempotent batches for a partition whose producer state is not built yet (first
        // use after a start): build it with async reads before the append's turn, so the
        // append never reads the log synchronously on this shard.
        let to_load = self.logs_needing_producer_state(&parts);
        if to_load.is_empty() && self.admission.may_append_now() {
            let (results, waits) = self.append_parts(acks, parts);
            let started = std::time::Instant::now();
            return Box::pin(
                async move { ctx.answer_produce(results, waits, timeout, started).await },
            );
        }
        let ticket = self.admission.ticket(conn);
        Box::pin(async move {
            let started = std::time::Instant::now();
            let not_appended = |parts: &[(Tp, bytes::Bytes)]| {
                // Not appended: the request's place is given up (the ticket drops), and
                // the client may retry, as after any Kafka produce timeout.
                ctx.warn_produce_timeout(
                    "room to append or a partition's producer state",
                    None,
                    started.elapsed(),
                );
                let message = format!(
                    "not appended within the request's timeout ({} ms): the shard's unflushed bytes stayed at storage.unflushed.max.bytes, or a partition's producer state was still loading",
                    timeout.as_millis()
                );
                let results = parts
                    .iter()
                    .map(|_| {
                        ProducePartResult::failed(
                            code(ResponseError::RequestTimedOut),
                            Some(message.clone()),
                        )
                    })
                    .collect();
                ShardResponse::Produce(results)
            };
            // the producer-state loads count against the timeout too: a load held up (by
            // the log's I/O permit, a slow disk) must not hold the answer past it (the
            // load itself goes on in its own task)
            let granted = within(timeout, started, async {
                load_producer_states(to_load).await;
                ticket.wait().await;
            })
            .await;
            if granted.is_none() {
                return not_appended(&parts);
            }
            // a truncation while this request waited unloads a partition's state: load it
            // again (twice at most), so that the append, right after the last check with
            // no wait between, finds it built; still within the timeout (the grant is held
            // meanwhile, and dropped with the ticket if the time runs out)
            let reloaded = within(timeout, started, async {
                for _ in 0..2 {
                    let again = ctx.logs_needing_producer_state(&parts);
                    if again.is_empty() {
                        break;
                    }
                    load_producer_states(again).await;
                }
            })
            .await;
            if reloaded.is_none() {
                return not_appended(&parts);
            }
            let (results, waits) = ctx.append_parts(acks, parts);
            ticket.finish();
            ctx.answer_produce(results, waits, timeout, started).await
        })
    }

    /// The logs of `parts` whose idempotent or transactional batches need the producer
    /// state and find it not built.
    fn logs_needing_producer_state(&self, parts: &[(Tp, bytes::Bytes)]) -> Vec<PartitionLog> {
        // plain (not idempotent) batches need no state: no log lookup for them
        let using: Vec<&Tp> = parts
            .iter()
            .filter(|(_, records)| PartitionLog::records_use_producer_state(records))
            .map(|(tp, _)| tp)
            .collect();
        if using.is_empty() {
            return Vec::new();
        }
        self.with_logs(|log| {
            using
                .iter()
                .filter_map(|tp| {
                    let log = log(&tp.topic, tp.partition)?;
                    (!log.producer_state_loaded()).then_some(log)
                })
                .collect()
        })
    }

    /// Appends each part; returns the answers and, for acks=-1, what to wait for.
    fn append_parts(
        &self,
        acks: i16,
        parts: Vec<(Tp, bytes::Bytes)>,
    ) -> (Vec<ProducePartResult>, Vec<AckWait>) {
        let now = now_ms();
        let mut results = Vec::with_capacity(parts.len());
        let mut waits = Vec::new();
        // one pass of lookups (a topic hashed once per run of its partitions)
        let logs: Vec<Option<PartitionLog>> = self.with_logs(|log| {
            parts
                .iter()
                .map(|(tp, _)| log(&tp.topic, tp.partition))
                .collect()
        });
        // the metrics' per-topic counts, added once per run of a topic's partitions
        let mut counted: Option<(std::sync::Arc<str>, usize, u64)> = None;
        let mut appended = false;
        for ((tp, records), log) in parts.into_iter().zip(logs) {
            let Some(log) = log else {
                results.push(ProducePartResult::failed(
                    self.no_log_error(&tp.topic, tp.partition),
                    None,
                ));
                continue;
            };
            // leadership may have moved since the request was routed (or while it waited
            // for its turn): only the leader appends client batches
            let Some(epoch) = self.leader_epoch_here(&tp.topic, tp.partition) else {
                results.push(ProducePartResult::failed(
                    code(ResponseError::NotLeaderOrFollower),
                    None,
                ));
                continue;
            };
            let bytes = records.len();
            match log.append(records, now) {
                Ok(info) => {
                    if !info.duplicate {
                        let count = info.last_offset - info.base_offset + 1;
                        let count = u64::try_from(count).unwrap_or(0);
                        match &mut counted {
                            Some((t, b, c)) if *t == tp.topic => {
                                *b += bytes;
                                *c += count;
                            }
                            _ => {
                                if let Some((t, b, c)) = counted.take() {
                                    self.metrics.produced(&t, b, c);
                                }
                                counted = Some((tp.topic.clone(), bytes, count));
                            }
                        }
                    }
                    appended = true;
                    if acks == -1 {
                        waits.push((
                            results.len(),
                            tp.clone(),
                            log.clone(),
                            info.last_offset,
                            epoch,
                        ));
                    }
                    results.push(ProducePartResult {
                        error: 0,
                        message: None,
                        base_offset: info.base_offset,
                        log_append_time: info.log_append_time_ms,
                        log_start_offset: info.log_start_offset,
                    });
                }
                Err(e) => results.push(ProducePartResult::failed(
                    storage_error_code(&e),
                    Some(e.to_string()),
                )),
            }
        }
        if let Some((t, b, c)) = counted {
            self.metrics.produced(&t, b, c);
        }
        if appended {
            self.leaders.appended.notify();
        }
        (results, waits)
    }

    /// Waits for what `waits` names (acks=all) until `started` + `timeout`, the request's
    /// arrival on this shard plus its timeout.
    async fn answer_produce(
        &self,
        mut results: Vec<ProducePartResult>,
        waits: Vec<AckWait>,
        timeout: Duration,
        started: std::time::Instant,
    ) -> ShardResponse {
        let deadline = started + timeout;
        let mut timed_out = None;
        for (i, tp, log, last, epoch) in waits {
            let Err((error, message)) = self
                .wait_replicated(&tp.topic, tp.partition, &log, last, epoch, deadline)
                .await
            else {
                continue;
            };
            if error == code(ResponseError::RequestTimedOut) && timed_out.is_none() {
                timed_out = Some((tp, log, last));
            }
            results[i] = ProducePartResult::failed(error, Some(message));
        }
        if let Some((tp, log, last)) = timed_out {
            self.warn_produce_timeout(
                "the record durable on every in-sync replica",
                Some((&tp, &log, last)),
                started.elapsed(),
            );
        }
        ShardResponse::Produce(results)
    }

    /// Logs, at most once a second per shard, a produce answered REQUEST_TIMED_OUT, with
    /// what it waited for (`waiting`; for acks=all its first partition that timed out, and
    /// that log's durable offset and high watermark) and the shard's unflushed bytes: a
    /// wait that long means the flusher or a replica made no progress for the client's
    /// whole timeout. `waited` runs from the request's arrival on this shard.
    fn warn_produce_timeout(
        &self,
        waiting: &str,
        record: Option<(&Tp, &PartitionLog, i64)>,
        waited: Duration,
    ) {
        let Some(requests) = self.produce_timeouts.borrow_mut().hit() else {
            return;
        };
        let (topic, partition, offset, durable, hw) = match record {
            Some((tp, log, last)) => (
                &*tp.topic,
                tp.partition,
                last,
                log.durable_offset(),
                self.high_watermark(&tp.topic, tp.partition, log),
            ),
            None => ("", -1, -1, -1, -1),
        };
        tracing::warn!(
            shard = self.id,
            waiting,
            topic,
            partition,
            offset,
            durable_offset = durable,
            high_watermark = hw,
            unflushed_bytes = self.storage.unflushed_bytes(),
            admission_bytes = self.storage.admission_bytes(),
            waited_ms = waited.as_millis() as u64,
            requests_since_last_line = requests,
            "produce answered REQUEST_TIMED_OUT"
        );
    }

    /// acks=all: resolves once every ISR member has `last` on disk (the high watermark
    /// passed it) under the leadership of `epoch` that appended it. Fails (error code,
    /// message) when that leadership ends first (the next leader's log decides whether the
    /// record survives, so no ack: the client retries and idempotence drops a surviving
    /// copy), when it was cut from the log, or at `deadline`.
    pub(crate) async fn wait_replicated(
        &self,
        topic: &str,
        partition: i32,
        log: &PartitionLog,
        last: i64,
        epoch: i32,
        deadline: std::time::Instant,
    ) -> Result<(), (i16, String)> {
        // the leader's own copy first: a failed flush (a full or broken disk) is answered
        // with its storage error at once, not left to time out (no timer when it is
        // durable already, as the rest of a request's partitions usually are once the
        // first one is)
        let mut durable = std::pin::pin!(log.wait_durable(last));
        let own = match future::poll_once(&mut durable).await {
            Some(done) => Some(done),
            None => {
                let now = std::time::Instant::now();
                within(deadline.saturating_duration_since(now), now, durable).await
            }
        };
        if let Some(Err(e)) = own {
            return Err((storage_error_code(&e), e.to_string()));
        }
        loop {
            if self.leader_epoch_here(topic, partition) != Some(epoch) {
                return Err((
                    code(ResponseError::NotLeaderOrFollower),
                    "leadership moved before every in-sync replica had the record".to_string(),
                ));
            }
            if self.high_watermark(topic, partition, log) > last {
                return Ok(());
            }
            if log.log_end_offset() <= last {
                return Err((
                    code(ResponseError::NotLeaderOrFollower),
                    "the record was cut from this replica's log".to_string(),
                ));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                let short = {
                    let image = self.image.borrow();
                    image.topic(topic).is_some_and(|t| {
                        let min = self.min_insync_replicas(t);
                        usize::try_from(partition)
                            .ok()
                            .and_then(|p| t.parts.get(p))
                            .is_some_and(|p| p.isr.len() < min)
                    })
                };
                return Err(if short {
                    (
                        code(ResponseError::NotEnoughReplicasAfterAppend),
                        "appended, but the ISR shrank below min.insync.replicas".to_string(),
                    )
                } else {
                    (
                        code(ResponseError::RequestTimedOut),
                        "not on every in-sync replica within the request's timeout".to_string(),
                    )
                });
            }
            future::or(
                future::or(self.storage.wait_progress(), self.leaders.moved.wait()),
                glommio::timer::sleep(left),
            )
            .await;
        }
    }

    /// Reads every part, the cold ones concurrently (one task per read, so the disk sees a
    /// queue deeper than one), then keeps whole partitions in order within `max_bytes`; the
    /// first non-empty partition is kept whole even if larger (KIP-74).
    async fn fetch(
        &self,
        parts: Vec<FetchPart>,
        max_bytes: usize,
        replica: i32,
        read_committed: bool,
    ) -> Vec<FetchPartResult> {
        const READS_IN_FLIGHT: usize = 16;
        let mut out = Vec::with_capacity(parts.len());
        let mut reads: Vec<(usize, PartitionLog, i64, i64, usize)> = Vec::new();
        let mut committed_reads: Vec<(usize, PartitionLog, i64)> = Vec::new();
        // one pass without awaiting: a fetch may name 10,000 partitions every round
        let logs: Vec<Option<PartitionLog>> =
            self.with_logs(|log| parts.iter().map(|p| log(&p.topic, p.partition)).collect());
        // followers copy up to the log end (their fsyncs overlap the leader's; the high
        // watermark still waits for the leader's own); consumers see up to the high
        // watermark (read_committed: up to the last stable offset, below which every
        // transaction is decided; the transaction state is built on first need)
        let committed = read_committed && replica < 0;
        let mut load_failed: Vec<Option<i16>> = Vec::new();
        if committed {
            for log in logs.iter().flatten() {
                let failed = match log.producer_state_loaded() {
                    true => None,
                    false => log
                        .load_transaction_state()
                        .await
                        .err()
                        .map(|e| storage_error_code(&e)),
                };
                load_failed.push(failed);
            }
        }
        let mut load_failed = load_failed.into_iter();
        self.with_high_watermarks(|high_watermark| {
            for (part, log) in parts.iter().zip(logs) {
                let Some(log) = log else {
                    out.push(FetchPartResult::failed(
                        self.no_log_error(&part.topic, part.partition),
                    ));
                    continue;
                };
                if let Some(Some(error)) = committed.then(|| load_failed.next()).flatten() {
                    out.push(FetchPartResult::failed(error));
                    continue;
                }
                let high_watermark = high_watermark(&part.topic, part.partition, &log);
                let last_stable_offset = log.last_stable_offset(high_watermark);
                let hw = if replica >= 0 {
                    log.log_end_offset()
                } else if committed {
                    last_stable_offset
                } else {
                    high_watermark
                };
                let mut r = FetchPartResult {
                    error: 0,
                    high_watermark,
                    last_stable_offset,
                    log_start_offset: log.log_start_offset(),
                    aborted: committed.then(Vec::new),
                    batches: Vec::new(),
                };
                if part.fetch_offset < r.log_start_offset
                    || part.fetch_offset > log.log_end_offset()
                {
                    r.error = code(ResponseError::OffsetOutOfRange);
                } else if part.fetch_offset < hw {
                    let limit = part.max_bytes.min(max_bytes);
                    if committed {
                        committed_reads.push((out.len(), log.clone(), part.fetch_offset));
                    }
                    reads.push((out.len(), log, part.fetch_offset, hw, limit));
                }
                out.push(r);
            }
        });
        let first = reads.first().map(|r| r.0);
        let read = |(i, log, from, hw, limit): (usize, PartitionLog, i64, i64, usize)| async move {
            (i, log.read(from, hw, limit, Some(i) == first).await)
        };
        let mut done = Vec::with_capacity(reads.len());
        // reads in plan order until the budget is spent: partitions past it would be
        // dropped from the answer below, so reading them (often from disk) is waste. Up to
        // the first that needs the disk, memory answers at once, without a task each (at
        // 10,000 partitions a task per read was a large part of a round); from there, in
        // waves of tasks (the budget still spent in plan order)
        let mut read_bytes = 0usize;
        let mut reads = reads.into_iter().peekable();
        while let Some((i, log, from, hw, limit)) = reads.next_if(|_| read_bytes < max_bytes) {
            let left = max_bytes - read_bytes;
            match log.read_now(from, hw, limit.min(left), Some(i) == first) {
                Some(res) => {
                    if let Ok(batches) = &res {
                        read_bytes += batches.iter().map(|b| b.len()).sum::<usize>();
                    }
                    done.push((i, res));
                }
                None => {
                    let mut rest = vec![(i, log, from, hw, limit)];
                    rest.extend(reads);
                    reads = rest.into_iter().peekable();
                    break;
                }
            }
        }
        let mut reads: Vec<_> = reads.collect();
        if reads.len() == 1 && read_bytes < max_bytes {
            if let Some((i, log, from, hw, limit)) = reads.pop() {
                done.push(read((i, log, from, hw, limit.min(max_bytes - read_bytes))).await);
            }
        }
        let mut reads = reads.into_iter().peekable();
        while reads.peek().is_some() && read_bytes < max_bytes {
            let left = max_bytes - read_bytes;
            let wave: Vec<_> = reads
                .by_ref()
                .take(READS_IN_FLIGHT)
                .map(|(i, log, from, hw, limit)| {
                    glommio::spawn_local(read((i, log, from, hw, limit.min(left))))
                })
                .collect();
            for task in wave {
                let (i, res) = task.await;
                if let Ok(batches) = &res {
                    read_bytes += batches.iter().map(|b| b.len()).sum::<usize>();
                }
                done.push((i, res));
            }
        }
        let mut used = 0usize;
        for (i, res) in done {
            let r = &mut out[i];
            match res {
                Ok(batches) => r.batches = batches,
                Err(e) => r.error = storage_error_code(&e),
            }
        }
        // read_committed: the aborted transactions overlapping what was read, so the
        // client drops their records (Kafka's fetch with isolation level 1)
        for (i, log, from) in committed_reads {
            let r = &mut out[i];
            let Some(upper) = r
                .batches
                .last()
                .and_then(|b| RecordBatchHeader::parse(b).ok())
                .map(|h| h.last_offset() + 1)
            else {
                continue;
            };
            match log.aborted_transactions(from, upper).await {
                Ok(list) => {
                    r.aborted = Some(
                        list.into_iter()
                            .map(|a| (a.producer_id, a.first_offset))
                            .collect(),
                    )
                }
                Err(e) => {
                    r.error = storage_error_code(&e);
                    r.batches.clear();
                }
            }
        }
        for r in out.iter_mut() {
            let size = r.bytes();
            if used > 0 && used + size > max_bytes {
                r.batches.clear();
            } else {
                used += size;
            }
        }
        out
    }

    /// Returns when any partition has data past its offset (for a follower: appended, for
    /// a consumer: below the high watermark), or after `wait_ms`.
    async fn wait_data(&self, parts: &[(Arc<str>, i32, i64)], wait_ms: u64, replica: i32) {
        let deadline = std::time::Instant::now() + Duration::from_millis(wait_ms);
        loop {
            let ready = self.with_logs(|log| {
                self.with_high_watermarks(|high_watermark| {
                    parts
                        .iter()
                        .any(|(topic, partition, offset)| match log(topic, *partition) {
                            Some(log) => {
                                let end = if replica >= 0 {
                                    log.log_end_offset()
                                } else {
                                    high_watermark(topic, *partition, &log)
                                };
                                end > *offset || *offset < log.log_start_offset()
                            }
                            None => true,
                        })
                })
            });
            let now = std::time::Instant::now();
            if ready || now >= deadline {
                return;
            }
            let appended = self.leaders.appended.wait();
            let appended = async {
                if replica >= 0 {
                    appended.await
                } else {
                    std::future::pending::<()>().await
                }
            };
            future::or(
                future::or(
                    future::or(self.storage.wait_progress(), self.leaders.moved.wait()),
                    appended,
                ),
                async {
                    glommio::timer::sleep(deadline - now).await;
                },
            )
            .await;
        }
    }

    /// ListOffsets for one partition: -2 earliest, -1 latest, -3 max timestamp, else the
    /// first offset at or after a timestamp; nothing at or past the last fetchable offset
    /// (the high watermark, or with `read_committed` the last stable offset), as Kafka.
    async fn list_offset(&self, tp: &Tp, ts: i64, read_committed: bool) -> OffsetAnswer {
        let Some(log) = self.log(&tp.topic, tp.partition) else {
            return OffsetAnswer {
                error: self.no_log_error(&tp.topic, tp.partition),
                timestamp: -1,
                offset: -1,
            };
        };
        if read_committed && !log.producer_state_loaded() {
            if let Err(e) = log.load_transaction_state().await {
                return OffsetAnswer {
                    error: storage_error_code(&e),
                    timestamp: -1,
                    offset: -1,
                };
            }
        }
        let hw = self.high_watermark(&tp.topic, tp.partition, &log);
        let fetchable = if read_committed {
            log.last_stable_offset(hw)
        } else {
            hw
        };
        let (timestamp, offset) = match ts {
            -2 => (-1, log.log_start_offset()),
            -1 => (-1, fetchable),
            -3 => log
                .max_timestamp()
                .filter(|(_, offset)| *offset < fetchable)
                .unwrap_or((-1, -1)),
            ts => match log.offset_for_timestamp(ts).await {
                Ok(Some((offset, t))) if offset < fetchable => (t, offset),
                Ok(_) => (-1, -1),
                Err(e) => {
                    return OffsetAnswer {
                        error: storage_error_code(&e),
                        timestamp: -1,
                        offset: -1,
                    }
                }
            },
        };
        OffsetAnswer {
            error: 0,
            timestamp,
            offset,
        }
    }

    /// Opens, reconfigures or deletes the partitions this shard owns as the image changed,
    /// and loads or drops the group coordinators of the offsets partitions it leads.
    async fn act_on(self: &Rc<Self>, changes: Vec<Change>) {
        self.open_new_replicas(&changes).await;
        for change in changes {
            match change {
                Change::AclsChanged => self.access.rebuild(&self.config, &self.image.borrow()),
                Change::PartitionAdded {
                    topic,
                    id,
                    partition,
                }
                | Change::PartitionChanged {
                    topic,
                    id,
                    partition,
                } => {
                    if shard_for(&id, partition, self.shards) != self.id {
                        continue;
                    }
                    let (replica, leader_id, epoch) =
                        match self.image.borrow().partition(&topic, partition) {
                            Some(p) => {
                                self.metrics
                                    .partition_changed(&topic, partition, p, self.node_id);
                                (p.replicas.contains(&self.node_id), p.leader, p.leader_epoch)
                            }
                            None => continue,
                        };
                    let leader = leader_id == self.node_id;
                    if replica && self.log(&topic, partition).is_none() {
                        self.open_partition(&topic, partition).await;
                    }
                    if leader {
                        self.followers.unfollow(&topic, partition);
                        if let Some(log) = self.log(&topic, partition) {
                            log.set_leader_epoch(epoch);
                        }
                    } else if replica && leader_id >= 0 {
                        if let Some(log) = self.log(&topic, partition) {
                            log.set_leader_epoch(-1);
                        }
                        self.followers
                            .follow(self, &topic, partition, leader_id, epoch);
                    } else {
                        self.followers.unfollow(&topic, partition);
                    }
                    if !replica {
                        self.remove_replica(&topic, partition).await;
                    }
                    if topic == OFFSETS_TOPIC {
                        self.sync_coordinator(partition, leader.then_some(epoch))
                            .await;
                    }
                    if topic == TRANSACTION_STATE_TOPIC {
                        self.sync_txn_coordinator(partition, leader.then_some(epoch))
                            .await;
                    }
                }
                Change::TopicRemoved {
                    topic,
                    id,
                    partitions,
                } => {
                    tracing::info!(%topic, id = %uuid::Uuid::from_bytes(id), partitions, shard = self.id, "deleting topic");
                    self.metrics.topic_removed(&topic);
                    for p in 0..partitions {
                        self.followers.unfollow(&topic, p);
                    }
                    let owned = self.partitions.borrow_mut().remove(&topic);
                    for (partition, log) in owned.into_iter().flatten() {
                        if let Err(e) = log.delete().await {
                            tracing::error!(%topic, partition, error = %e, "cannot delete partition");
                        }
                    }
                    if topic == OFFSETS_TOPIC {
                        self.groups.borrow_mut().clear();
                        self.group_epochs.borrow_mut().clear();
                    }
                    if topic == TRANSACTION_STATE_TOPIC {
                        self.txn_coordinators.clear();
                    }
                }
                Change::ConfigChanged { topic } => {
                    let config = match self.image.borrow().topic(&topic) {
                        Some(t) => log_config(&t.configs, &self.config),
                        None => continue,
                    };
                    if let Some(parts) = self.partitions.borrow().get(&topic) {
                        for log in parts.values() {
                            log.set_config(config.clone());
                        }
                    }
                }
            }
        }
    }

    /// Opens, `OPEN_WINDOW` at a time and each in a task of its own, the logs of the
    /// partitions `changes` make this shard a replica of, before `act_on` goes through them
    /// in order (it then finds them open). After a `kill -9` every log is recovered as it
    /// opens (its tail rescanned, its indexes checked); one at a time, 10,000 partitions
    /// took ~20 s, during which the node stayed fenced. Topics removed in the same changes
    /// are left to the ordered pass (a new topic of an old name must not open the old
    /// one's directory before the old log is deleted).
    async fn open_new_replicas(self: &Rc<Self>, changes: &[Change]) {
        // storage bounds the opens that read and write (`OPEN_IO`); the rest of a window
        // waits for the group sync that makes a recovered log durable, shared by all
        const OPEN_WINDOW: u64 = 512;
        let removed: HashSet<&str> = changes
            .iter()
            .filter_map(|c| match c {
                Change::TopicRemoved { topic, .. } => Some(topic.as_str()),
                _ => None,
            })
            .collect();
        let mut seen: HashSet<(&str, i32)> = HashSet::new();
        let mut wanted: Vec<(String, i32)> = Vec::new();
        for c in changes {
            let (Change::PartitionAdded {
                topic,
                id,
                partition,
            }
            | Change::PartitionChanged {
                topic,
                id,
                partition,
            }) = c
            else {
                continue;
            };
            if removed.contains(topic.as_str())
                || shard_for(id, *partition, self.shards) != self.id
                || self.log(topic, *partition).is_some()
                || !seen.insert((topic.as_str(), *partition))
            {
                continue;
            }
            let replica = self
                .image
                .borrow()
                .partition(topic, *partition)
                .is_some_and(|p| p.replicas.contains(&self.node_id));
            if replica {
                wanted.push((topic.clone(), *partition));
            }
        }
        if wanted.len() < 2 {
            return;
        }
        let gate = Rc::new(glommio::sync::Semaphore::new(OPEN_WINDOW));
        let tasks: Vec<_> = wanted
            .into_iter()
            .map(|(topic, partition)| {
                let (me, gate) = (self.clone(), gate.clone());
                glommio::spawn_local(async move {
                    // the semaphore is never closed: a permit always comes
                    let _permit = sluice_storage::acquire_permit(&gate, 1).await;
                    if me.log(&topic, partition).is_none() {
                        me.open_partition(&topic, partition).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
    }

    /// This node is not (or no longer) a replica of the partition: its log, open or left
    /// on disk from before a restart, is deleted, as Kafka deletes a replica moved away.
    async fn remove_replica(&self, topic: &str, partition: i32) {
        let open = self
            .partitions
            .borrow_mut()
            .get_mut(topic)
            .and_then(|m| m.remove(&partition));
        let log = match open {
            Some(log) => log,
            None => {
                let dir = self.config.data_dir().join(format!("{topic}-{partition}"));
                let probe = dir.clone();
                // a stat, on a blocking helper (no file-system call on the reactor)
                if !sluice_storage::run_blocking(&dir, move || probe.exists()).await {
                    return;
                }
                let config = match self.image.borrow().topic(topic) {
                    Some(t) => log_config(&t.configs, &self.config),
                    None => return,
                };
                match PartitionLog::open(&self.storage, dir, config).await {
                    Ok(log) => log,
                    Err(e) => {
                        tracing::error!(%topic, partition, error = %e, "cannot open a stray replica to delete it");
                        return;
                    }
                }
            }
        };
        tracing::info!(%topic, partition, shard = self.id, "not a replica here: deleting the local log");
        if let Err(e) = log.delete().await {
            tracing::error!(%topic, partition, error = %e, "cannot delete a replica moved away");
        }
    }

    async fn open_partition(&self, topic: &str, partition: i32) {
        let (config, id, replicated) = match self.image.borrow().topic(topic) {
            Some(t) => {
                let replicas = usize::try_from(partition)
                    .ok()
                    .and_then(|p| t.parts.get(p))
                    .map_or(1, |p| p.replicas.len());
                (log_config(&t.configs, &self.config), t.id, replicas > 1)
            }
            None => return,
        };
        let dir = self.config.data_dir().join(format!("{topic}-{partition}"));
        let found = partition_meta::check(dir.clone(), id).await;
        if let partition_meta::Found::Other(other) = &found {
            // a topic of the same name deleted while this node was away: its log goes
            tracing::warn!(%topic, partition, found = %other, id = %partition_meta::topic_id_string(&id),
                "the partition directory belongs to an earlier topic of this name: deleting it");
            match PartitionLog::open(&self.storage, dir.clone(), config.clone()).await {
                Ok(old) => {
                    if let Err(e) = old.delete().await {
                        tracing::error!(%topic, partition, error = %e, "cannot delete an earlier topic's log");
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(%topic, partition, error = %e, "cannot open an earlier topic's log to delete it");
                    return;
                }
            }
        }
        let opened = PartitionLog::open(&self.storage, dir, config).await;
        if let Ok(log) = &opened {
            if found != partition_meta::Found::Same {
                if let Err(e) = partition_meta::mark(log, id).await {
                    tracing::error!(%topic, partition, error = %e, "cannot write partition.metadata");
                }
            }
        }
        match opened {
            Ok(log) => {
                if replicated {
                    // the cleaner stays below the high watermark (records above it may
                    // yet be cut by a leader change); until it is known, below everything
                    log.set_clean_limit(log.log_start_offset());
                }
                self.partitions
                    .borrow_mut()
                    .entry(topic.to_string())
                    .or_default()
                    .insert(partition, log);
            }
            Err(e) => {
                tracing::error!(%topic, partition, error = %e, "cannot open partition")
            }
        }
    }

    /// Loads the group coordinator of offsets partition `partition` when this node leads it
    /// (`epoch`: its leader epoch; a coordinator loaded under another leadership is loaded
    /// again, as writes may have happened elsewhere meanwhile), drops it when it does not.
    async fn sync_coordinator(self: &Rc<Self>, partition: i32, epoch: Option<i32>) {
        let loaded = self.group_epochs.borrow().get(&partition).copied();
        if loaded.is_some() && loaded != epoch {
            self.groups.borrow_mut().remove(&partition);
            self.group_epochs.borrow_mut().remove(&partition);
            tracing::info!(
                partition,
                "no longer the group coordinator of this offsets partition under this leadership"
            );
        }
        let Some(epoch) = epoch else {
            return;
        };
        if loaded == Some(epoch) {
            return;
        }
        let Some(log) = self.log(OFFSETS_TOPIC, partition) else {
            return;
        };
        // transactional offset commits check the producer state: build it with async
        // reads now, not synchronously on the first one
        if let Err(e) = log.load_transaction_state().await {
            tracing::error!(partition, error = %e, "cannot load the producer state of an offsets partition");
            return;
        }
        let acks = ReplicatedAcks {
            ctx: Rc::downgrade(self),
            topic: OFFSETS_TOPIC,
            partition,
            epoch,
        };
        match load_coordinator(log, group_config(&self.config), acks).await {
            Ok(c) => {
                // the leadership may have ended while the log was read
                if self.leader_epoch_here(OFFSETS_TOPIC, partition) == Some(epoch) {
                    self.groups.borrow_mut().insert(partition, c);
                    self.group_epochs.borrow_mut().insert(partition, epoch);
                }
            }
            Err(e) => {
                tracing::error!(partition, error = %e, "cannot load group coordinator")
            }
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

/// `fut`'s output, or None once `timeout` has passed since `started`.
async fn within<T>(
    timeout: Duration,
    started: std::time::Instant,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(timeout.saturating_sub(started.elapsed())).await;
        None
    })
    .await
}

/// Builds each log's producer state with async reads (`PartitionLog::load_producer_state`).
/// A failure is logged: the append then answers that partition KAFKA_STORAGE_ERROR
/// (`ProducerStateNotLoaded`, retriable) and never reads the log itself.
async fn load_producer_states(logs: Vec<PartitionLog>) {
    for log in logs {
        if let Err(e) = log.load_producer_state().await {
            tracing::warn!(error = %e, "loading producer state");
        }
    }
}
