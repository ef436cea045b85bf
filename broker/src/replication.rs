//! Followers: on the shard that owns a partition this node follows, one fetcher task per
//! leader broker copies the leader's batches into the local log, byte for byte.
//!
//! ```text
//!  act_on (metadata) ─► follow(tp, leader, epoch) / unfollow(tp)
//!  fetcher(leader) loop:
//!    partitions whose leader epoch changed ─► OffsetForLeaderEpoch(latest local epoch)
//!       ─► truncate the local log to the leader's end of that epoch (KIP-101)
//!    Fetch v12 (replica_id = this node, current_leader_epoch, offset = local log end,
//!       long poll 500 ms; in a fetch session: only partitions that changed)
//!       ─► append_replicated ─► wait until durable ─► loop
//! ```
//! A follower fetches only from its durable end, so the offset it sends is what it has on
//! disk. A partition the leader refuses (not leader, fenced or unknown epoch, unknown
//! partition while its metadata catches up) is retried after 500 ms or at the next
//! metadata change; a lost connection is reopened after a short back-off.
//!
//! The leader's side (follower positions, the high watermark over the ISR, ISR changes
//! through AlterPartition) is in `hw.rs`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use futures_lite::future;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
};
use kafka_protocol::ResponseError;
use sluice_storage::{PartitionLog, Signal, StorageError};

use crate::handlers::admin::name;
use crate::peer::PeerConn;
use crate::shard::ShardCtx;

/// How long the leader may hold a follower's fetch when it has nothing new.
const FETCH_WAIT_MS: i32 = 500;
/// How long a fetch round waits for the log-start moves it started before the next
/// fetch (which reports them).
const START_REPORT_WAIT: Duration = Duration::from_millis(50);
/// A log-start move that failed is tried again after this.
const START_RETRY: Duration = Duration::from_secs(1);
/// Bound on any one exchange with the leader (its long poll included).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed connection or exchange.
const BACKOFF: Duration = Duration::from_millis(200);
/// Pause of one partition the leader refused.
const PAUSE: Duration = Duration::from_millis(500);

/// One partition as a fetcher follows it.
#[derive(Debug, Clone)]
struct Followed {
    epoch: i32,
    /// Set when the leader or its epoch changed: truncate before fetching.
    check_divergence: bool,
    /// After an error from the leader: not fetched before this (or a metadata change).
    paused_until: Option<Instant>,
}

/// The partitions this shard follows from one leader, and the task fetching them.
pub(crate) struct Fetcher {
    leader: i32,
    parts: RefCell<BTreeMap<(String, i32), Followed>>,
    changed: Signal,
    stopped: Cell<bool>,
    /// The fetch session with the leader (KIP-227), on the current connection.
    session: RefCell<Session>,
    /// Partitions whose log start is being moved toward the leader's, with the latest
    /// start the leader sent (one move at a time each, off the fetch loop: each syncs a
    /// file).
    moving_starts: Rc<RefCell<BTreeMap<(String, i32), i64>>>,
}

/// A fetch session as the follower sees it: after one full Fetch, each Fetch names only
/// the partitions whose position or leader epoch changed (and those to forget), and the
/// leader answers only partitions with news, so an idle follower costs a few bytes per
/// long poll whatever its partition count.
#[derive(Debug, Default)]
struct Session {
    /// 0: none (the next Fetch is full and asks for one).
    id: i32,
    /// The epoch of the next incremental Fetch.
    epoch: i32,
    /// What the leader's session holds: partition → (fetch offset, leader epoch, log
    /// start).
    sent: BTreeMap<(String, i32), (i64, i32, i64)>,
}

impl Fetcher {
    fn is_idle(&self) -> bool {
        self.parts.borrow().is_empty()
    }
}

/// Per shard: the fetchers by leader node.
#[derive(Default)]
pub(crate) struct Followers {
    by_leader: RefCell<BTreeMap<i32, Rc<Fetcher>>>,
}

impl Followers {
    /// Follows `tp` from `leader` at `epoch` (stops following it from anyone else).
    pub(crate) fn follow(
        &self,
        ctx: &Rc<ShardCtx>,
        topic: &str,
        partition: i32,
        leader: i32,
        epoch: i32,
    ) {
        let key = (topic.to_string(), partition);
        self.unfollow_except(&key, leader);
        let fetcher = self
            .by_leader
            .borrow_mut()
            .entry(leader)
            .or_insert_with(|| {
                let f = Rc::new(Fetcher {
                    leader,
                    parts: RefCell::new(BTreeMap::new()),
                    changed: Signal::default(),
                    stopped: Cell::new(false),
                    session: RefCell::new(Session::default()),
                    moving_starts: Rc::default(),
                });
                glommio::spawn_local(run(Rc::downgrade(ctx), f.clone())).detach();
                f
            })
            .clone();
        let mut parts = fetcher.parts.borrow_mut();
        let entry = parts.entry(key).or_insert(Followed {
            epoch,
            check_divergence: true,
            paused_until: None,
        });
        if entry.epoch != epoch {
            entry.epoch = epoch;
            entry.check_divergence = true;
        }
        entry.paused_until = None;
        drop(parts);
        fetcher.changed.notify();
    }

    /// Stops following `tp` (this node leads it now, or is no longer a replica).
    pub(crate) fn unfollow(&self, topic: &str, partition: i32) {
        self.unfollow_except(&(topic.to_string(), partition), -1);
    }

    fn unfollow_except(&self, key: &(String, i32), keep: i32) {
        let mut by_leader = self.by_leader.borrow_mut();
        for (leader, f) in by_leader.iter() {
            if *leader != keep && f.parts.borrow_mut().remove(key).is_some() {
                f.changed.notify();
            }
        }
        by_leader.retain(|_, f| {
            let keep_it = !f.is_idle() || f.leader == keep;
            if !keep_it {
                f.stopped.set(true);
                f.changed.notify();
            }
            keep_it
        });
    }

    /// Stops every fetcher (shutdown).
    pub(crate) fn stop_all(&self) {
        for f in self.by_leader.borrow_mut().values() {
            f.stopped.set(true);
            f.changed.notify();
        }
        self.by_leader.borrow_mut().clear();
    }
}

/// The fetcher task for one leader, on this shard, until it has nothing to follow.
async fn run(ctx: Weak<ShardCtx>, f: Rc<Fetcher>) {
    let mut conn: Option<PeerConn> = None;
    loop {
        if f.stopped.get() {
            return;
        }
        let Some(ctx) = ctx.upgrade() else { return };
        let active: Vec<((String, i32), Followed)> = f
            .parts
            .borrow()
            .iter()
            .filter(|(_, p)| p.paused_until.is_none_or(|t| Instant::now() >= t))
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        if active.is_empty() {
            future::or(f.changed.wait(), glommio::timer::sleep(PAUSE)).await;
            continue;
        }
        if conn.is_none() {
            let addr = ctx
                .image
                .borrow()
                .broker(f.leader)
                .map(|b| format!("{}:{}", b.host, b.port));
            let Some(addr) = addr else {
                future::or(f.changed.wait(), glommio::timer::sleep(BACKOFF)).await;
                continue;
            };
            match PeerConn::open(
                &addr,
                "sluice-replica",
                EXCHANGE_TIMEOUT,
                &ctx.peer_security,
            )
            .await
            {
                Ok(c) => {
                    // sessions belong to their connection
                    f.session.replace(Session::default());
                    conn = Some(c);
                }
                Err(e) => {
                    tracing::debug!(leader = f.leader, error = %e, "cannot reach the leader");
                    glommio::timer::sleep(BACKOFF).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let result = async {
            let diverged: Vec<_> = active.iter().filter(|(_, p)| p.check_divergence).collect();
            if !diverged.is_empty() {
                truncate_divergent(&ctx, &f, c, &diverged).await?;
            }
            fetch_once(&ctx, &f, c, &active).await
        }
        .await;
        if let Err(e) = result {
            tracing::debug!(leader = f.leader, error = %e, "replica fetch failed; reconnecting");
            conn = None;
            glommio::timer::sleep(BACKOFF).await;
        }
    }
}

/// KIP-101: for each partition whose leader changed, ask the leader where our latest
/// epoch ends in its log and cut anything of ours past it.
async fn truncate_divergent(
    ctx: &Rc<ShardCtx>,
    f: &Fetcher,
    conn: &mut PeerConn,
    parts: &[&((String, i32), Followed)],
) -> anyhow::Result<()> {
    let mut topics: BTreeMap<&str, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
    let mut asked = Vec::new();
    for ((topic, partition), p) in parts.iter().map(|x| (&x.0, &x.1)) {
        let Some(log) = ctx.log(topic, *partition) else {
            continue;
        };
        match log.latest_epoch() {
            Some(latest) => {
                topics.entry(topic).or_default().push(
                    OffsetForLeaderPartition::default()
                        .with_partition(*partition)
                        .with_current_leader_epoch(p.epoch)
                        .with_leader_epoch(latest),
                );
                asked.push((topic.clone(), *partition));
            }
            // no epochs (empty, or written before epochs were stamped): nothing to compare
            None => clear_divergence(f, topic, *partition, p.epoch),
        }
    }
    if topics.is_empty() {
        return Ok(());
    }
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(ctx.node_id))
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(name(t))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let resp: OffsetForLeaderEpochResponse = conn.call(4, &req).await?;
    for t in resp.topics {
        let topic = t.topic.0.to_string();
        for p in t.partitions {
            let Some(log) = ctx.log(&topic, p.partition) else {
                continue;
            };
            let epoch = f
                .parts
                .borrow()
                .get(&(topic.clone(), p.partition))
                .map(|x| x.epoch);
            let Some(epoch) = epoch else { continue };
            if p.error_code != 0 {
                pause(f, &topic, p.partition, p.error_code);
                continue;
            }
            if p.end_offset >= 0 && p.end_offset < log.log_end_offset() {
                let end = log.truncate_from(p.end_offset).await?;
                tracing::info!(%topic, partition = p.partition, leader = f.leader, end, "truncated a divergent suffix");
            }
            clear_divergence(f, &topic, p.partition, epoch);
        }
    }
    Ok(())
}

fn clear_divergence(f: &Fetcher, topic: &str, partition: i32, epoch: i32) {
    if let Some(p) = f
        .parts
        .borrow_mut()
        .get_mut(&(topic.to_string(), partition))
    {
        if p.epoch == epoch {
            p.check_divergence = false;
        }
    }
}

/// The leader refused the partition (it does not lead it, or not yet: its metadata may
/// be behind ours): try again after `PAUSE`, or at once when our metadata changes.
fn pause(f: &Fetcher, topic: &str, partition: i32, error: i16) {
    tracing::debug!(%topic, partition, leader = f.leader, error, "replica fetch paused");
    if let Some(p) = f
        .parts
        .borrow_mut()
        .get_mut(&(topic.to_string(), partition))
    {
        p.paused_until = Some(Instant::now() + PAUSE);
    }
}

/// One Fetch of every active partition from its local log end (incrementally, within
/// the fetch session); appends what comes back and waits until it is durable, so the next
/// fetch offset is durable.
async fn fetch_once(
    ctx: &Rc<ShardCtx>,
    f: &Fetcher,
    conn: &mut PeerConn,
    active: &[((String, i32), Followed)],
) -> anyhow::Result<()> {
    let mut want: BTreeMap<(String, i32), (i64, i32, i64)> = BTreeMap::new();
    for ((topic, partition), p) in active {
        if p.check_divergence {
            continue;
        }
        let Some(log) = ctx.log(topic, *partition) else {
            continue;
        };
        // the durable end, which is the log end once the last append is on disk: after a
        // failed flush (a full disk) the log end is past what is durable, and the leader
        // must not count that as this replica's copy
        want.insert(
            (topic.clone(), *partition),
            (log.durable_offset(), p.epoch, log.log_start_offset()),
        );
    }
    if want.is_empty() {
        return Ok(());
    }
    let (session_id, session_epoch, full, forgotten) = {
        let s = f.session.borrow();
        let full = s.id == 0;
        let forgotten: Vec<(String, i32)> = if full {
            Vec::new()
        } else {
            s.sent
                .keys()
                .filter(|k| !want.contains_key(*k))
                .cloned()
                .collect()
        };
        if full {
            (0, 0, true, forgotten)
        } else {
            (s.id, s.epoch, false, forgotten)
        }
    };
    let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    {
        let s = f.session.borrow();
        for ((topic, partition), (offset, epoch, start)) in &want {
            // a moved log start is news too: the leader's DeleteRecords waits for it
            let same = Some(&(*offset, *epoch, *start));
            if !full && s.sent.get(&(topic.clone(), *partition)) == same {
                continue;
            }
            topics.entry(topic).or_default().push(
                FetchPartition::default()
                    .with_partition(*partition)
                    .with_current_leader_epoch(*epoch)
                    .with_fetch_offset(*offset)
                    .with_log_start_offset(*start)
                    .with_partition_max_bytes(1 << 20),
            );
        }
    }
    let mut forget: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in &forgotten {
        forget.entry(topic).or_default().push(*partition);
    }
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(ctx.node_id))
        .with_max_wait_ms(FETCH_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(8 << 20)
        .with_session_id(session_id)
        .with_session_epoch(session_epoch)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    FetchTopic::default()
                        .with_topic(name(t))
                        .with_partitions(ps)
                })
                .collect(),
        )
        .with_forgotten_topics_data(
            forget
                .into_iter()
                .map(|(t, ps)| {
                    ForgottenTopic::default()
                        .with_topic(name(t))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let resp: FetchResponse = conn.call(12, &req).await?;
    {
        let mut s = f.session.borrow_mut();
        if resp.error_code == ResponseError::FetchSessionIdNotFound.code()
            || resp.error_code == ResponseError::InvalidFetchSessionEpoch.code()
        {
            // evicted or out of step: start again with a full Fetch
            *s = Session::default();
            return Ok(());
        }
        if resp.error_code != 0 {
            anyhow::bail!("Fetch refused with error {}", resp.error_code);
        }
        s.id = resp.session_id;
        s.epoch = if full {
            1
        } else {
            s.epoch.wrapping_add(1).max(1)
        };
        if full {
            s.sent.clear();
        }
        for k in &forgotten {
            s.sent.remove(k);
        }
        for (k, v) in want {
            s.sent.insert(k, v);
        }
    }
    let mut waits = Vec::new();
    let mut starts = Vec::new();
    for t in resp.responses {
        let topic = t.topic.0.to_string();
        for p in t.partitions {
            let code = p.error_code;
            if code == ResponseError::OffsetOutOfRange.code() {
                let log = ctx.log(&topic, p.partition_index);
                if let Some(log) = log.filter(|l| p.log_start_offset > l.log_end_offset()) {
                    // our log ends before the leader's starts (its retention moved on, or
                    // this replica is new): start over at the leader's log start, as
                    // Kafka's follower does (truncateFullyAndStartAt)
                    tracing::info!(%topic, partition = p.partition_index, from = log.log_end_offset(), to = p.log_start_offset, "log ends before the leader's log start; restarting it there");
                    log.truncate_fully_and_start_at(p.log_start_offset).await?;
                    continue;
                }
                // our log is ahead of the leader's: check again
                if let Some(x) = f
                    .parts
                    .borrow_mut()
                    .get_mut(&(topic.clone(), p.partition_index))
                {
                    x.check_divergence = true;
                }
                continue;
            }
            if code != 0 {
                pause(f, &topic, p.partition_index, code);
                continue;
            }
            ctx.note_leader_hw(&topic, p.partition_index, p.high_watermark);
            let Some(log) = ctx.log(&topic, p.partition_index) else {
                continue;
            };
            // the leader's log start, followed once this answer's records are in
            let (partition, leader_start) = (p.partition_index, p.log_start_offset);
            let follow =
                |log: &PartitionLog| follow_log_start(f, log, &topic, partition, leader_start);
            let Some(records) = p.records.filter(|r| !r.is_empty()) else {
                starts.extend(follow(&log));
                continue;
            };
            // idempotent or transactional batches replay into the producer state: build it
            // with async reads first, not synchronously inside the append
            if log.needs_producer_state(&records) {
                if let Err(e) = log.load_producer_state().await {
                    tracing::warn!(%topic, partition = p.partition_index, error = %e, "cannot load the producer state of a replica");
                    continue;
                }
            }
            // only data fetched from where the log ends now, at the leader epoch followed
            // now: a truncation (or a restart of the log) since the request went out makes
            // it data for another offset, and appending it after the new end would leave a
            // hole (the log takes offset gaps, a compacted leader has them); a new epoch
            // (a new leader, or a topic deleted and created again under the name) makes it
            // data of another leader's log. Kafka's fetcher skips such a response too.
            let key = (topic.clone(), p.partition_index);
            let asked = f.session.borrow().sent.get(&key).map(|x| (x.0, x.1));
            let following = f.parts.borrow().get(&key).map(|x| x.epoch);
            if asked.map(|a| a.0) != Some(log.log_end_offset()) || asked.map(|a| a.1) != following {
                tracing::debug!(%topic, partition = p.partition_index, ?asked, ?following, end = log.log_end_offset(), "fetched data is not for the log's end at the followed epoch: skipped");
                continue;
            }
            let bytes = records.len();
            let appended = match log.append_replicated(records.clone()) {
                Err(StorageError::UnexpectedAppendOffset { expected, got })
                    if starts_inside_first_batch(&log, &records, expected, got) =>
                {
                    // this log was restarted empty at the leader's log start, which a
                    // DeleteRecords put inside a batch, and the leader sends that batch
                    // whole: restart at the batch's base and take it, as Kafka's follower
                    // does (the leader's start comes back with the next answer)
                    tracing::info!(%topic, partition = p.partition_index, from = expected, to = got, "restarting an empty log at the base of the leader's first batch");
                    match restart_for_batch(&log, &records, got).await {
                        Ok(()) => log.append_replicated(records),
                        Err(e) => Err(e),
                    }
                }
                other => other,
            };
            match appended {
                Ok(info) => {
                    // the wait counts truncations from here, not from its first poll
                    waits.push(log.wait_durable(info.last_offset));
                    ctx.metrics.replicated_in(&topic, bytes);
                    // after the append, as Kafka's follower: a log just restarted at the
                    // base of the leader's first batch moves up to the leader's start now
                    starts.extend(follow(&log));
                }
                Err(e) => {
                    // checked again after a pause: a log that keeps refusing (a full or
                    // failed disk) is retried twice a second, not in a busy loop
                    tracing::warn!(%topic, partition = p.partition_index, error = %e, "replicated append refused; checking for divergence after a pause");
                    if let Some(x) = f
                        .parts
                        .borrow_mut()
                        .get_mut(&(topic.clone(), p.partition_index))
                    {
                        x.check_divergence = true;
                        x.paused_until = Some(Instant::now() + PAUSE);
                    }
                }
            }
        }
    }
    let appended_any = !waits.is_empty();
    for wait in waits {
        wait.await?;
    }
    // a moved start usually syncs in a few ms: the next fetch then reports it (the
    // leader's DeleteRecords waits for that); a slow one is reported by a later fetch.
    // Not while records flow: the next poll returns soon anyway, and acks=all waits
    // for this follower's fetches.
    let until = Instant::now() + START_REPORT_WAIT;
    let starts = if appended_any { Vec::new() } else { starts };
    for h in starts {
        let left = until.saturating_duration_since(Instant::now());
        future::or(
            async {
                h.await;
            },
            glommio::timer::sleep(left),
        )
        .await;
    }
    Ok(())
}

/// Moves `log`'s start toward the leader's (`leader_start`, after DeleteRecords or the
/// leader's retention; nothing if it is not past the log's) as far as the log reaches, as Kafka's follower does: in a task of
/// its own, so the fetch loop never waits for the file sync, one at a time per partition
/// (a start the leader sends meanwhile is taken by the same task next). The next fetch
/// reports the start the log then has.
fn follow_log_start(
    f: &Fetcher,
    log: &PartitionLog,
    topic: &str,
    partition: i32,
    leader_start: i64,
) -> Option<glommio::task::JoinHandle<()>> {
    if leader_start <= log.log_start_offset() {
        return None;
    }
    let key = (topic.to_string(), partition);
    {
        let mut moving = f.moving_starts.borrow_mut();
        if let Some(want) = moving.get_mut(&key) {
            *want = (*want).max(leader_start);
            return None;
        }
        moving.insert(key.clone(), leader_start);
    }
    let moving = f.moving_starts.clone();
    let log = log.clone();
    glommio::spawn_local(async move {
        loop {
            let Some(want) = moving.borrow().get(&key).copied() else {
                return;
            };
            let to = want.min(log.log_end_offset());
            if to > log.log_start_offset() {
                if let Err(e) = log.advance_log_start(to).await {
                    // the leader may not send this start again (it told it once): retry
                    // until the log goes away
                    let gone = matches!(e, StorageError::Closed);
                    tracing::warn!(topic = %key.0, partition = key.1, error = %e, gone, "cannot follow the leader's log start");
                    if gone {
                        moving.borrow_mut().remove(&key);
                        return;
                    }
                    glommio::timer::sleep(START_RETRY).await;
                    continue;
                }
            }
            let mut m = moving.borrow_mut();
            if m.get(&key) == Some(&want) {
                m.remove(&key);
                return;
            }
        }
    })
    .detach()
    .into()
}

/// Empties the log and restarts it at `at` (the base of `records`' first batch), with
/// its producer state built again for a transactional or idempotent batch: the restart
/// drops the state, and the append refuses such a batch without it.
async fn restart_for_batch(
    log: &PartitionLog,
    records: &[u8],
    at: i64,
) -> Result<(), StorageError> {
    log.truncate_fully_and_start_at(at).await?;
    if log.needs_producer_state(records) {
        log.load_producer_state().await?;
    }
    Ok(())
}

/// An append refused with UnexpectedAppendOffset because the log is empty at `expected`
/// (restarted at the leader's log start) and the fetched data's first batch starts at
/// `got` below it but holds `expected`.
fn starts_inside_first_batch(log: &PartitionLog, records: &[u8], expected: i64, got: i64) -> bool {
    got < expected
        && log.log_start_offset() == expected
        && log.log_end_offset() == expected
        && sluice_proto::batch::RecordBatchHeader::parse(records)
            .is_ok_and(|h| h.base_offset == got && h.last_offset() >= expected)
}
