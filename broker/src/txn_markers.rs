//! Transaction markers (Kafka's WriteTxnMarkers): how a transaction coordinator's COMMIT or
//! ABORT reaches every partition of the transaction.
//!
//! ```text
//!  coordinator (any shard) ─► write_markers: partitions grouped by leader
//!     led here ─► ShardRequest::WriteMarkers to each owner shard
//!     elsewhere ─► WriteTxnMarkers v1 over a PeerConn to the leader's Kafka listener
//!  owner shard: append_control (leader only, under its leader epoch)
//!     ─► durable ─► high watermark past the marker ─► (__consumer_offsets) the group
//!        coordinator applies or drops the producer's pending offsets ─► error code 0
//! ```
//! Every partition gets its own error code; the coordinator retries the ones that failed.
//! A marker is answered only once it is on every in-sync replica (acks=all), so a
//! transaction is never reported complete while a leader change could still cut a marker.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{ProducerId, WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use kafka_protocol::ResponseError;

use crate::errors::{now_ms, storage_error_code};
use crate::groups::OFFSETS_TOPIC;
use crate::handlers::admin::name;
use crate::peer::PeerConn;
use crate::shard::{Appended, ShardCtx};
use crate::shard_msg::{ShardRequest, ShardResponse, Tp};

/// How long a marker may wait to be on every in-sync replica (Kafka's coordinator uses
/// `request.timeout.ms`, 30 s).
const MARKER_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one WriteTxnMarkers exchange with another broker (the marker's own wait plus
/// the way there and back).
const PEER_TIMEOUT: Duration = Duration::from_secs(35);

/// One transaction's marker for a set of partitions.
#[derive(Debug, Clone)]
pub(crate) struct Markers {
    pub(crate) producer_id: i64,
    pub(crate) producer_epoch: i16,
    pub(crate) commit: bool,
    pub(crate) coordinator_epoch: i32,
    pub(crate) parts: Vec<Tp>,
}

impl Markers {
    fn with_parts(&self, parts: Vec<Tp>) -> Markers {
        Markers {
            parts,
            ..self.clone()
        }
    }
}

/// Connections to other brokers for markers and transaction verifications, per shard:
/// up to `POOL_PER_PEER` idle connections kept per broker and use (client id), so that
/// concurrent calls (each transactional producer's verifications, one connection's at a
/// time) reuse connections instead of opening one each (with TLS and SASL between
/// brokers, a handshake each). A call takes the most recently used one that has not idled
/// past `POOL_IDLE` (the peer may have closed an older one), or opens one, and gives it
/// back when the exchange succeeded. Owned by the shard; never crosses cores.
pub(crate) struct PeerPool<C = PeerConn> {
    idle: std::cell::RefCell<HashMap<PeerKey, Vec<(C, Instant)>>>,
}

impl<C> Default for PeerPool<C> {
    fn default() -> Self {
        Self {
            idle: Default::default(),
        }
    }
}

type PeerKey = (i32, String, &'static str);

/// Idle connections kept per broker and use.
const POOL_PER_PEER: usize = 8;
/// An idle connection older than this is closed rather than used: well inside Kafka's
/// default `connections.max.idle.ms` (10 min), after which the peer closes it.
const POOL_IDLE: Duration = Duration::from_secs(60);

impl<C> PeerPool<C> {
    fn take(&self, key: &PeerKey, now: Instant) -> Option<C> {
        let mut idle = self.idle.borrow_mut();
        let conns = idle.get_mut(key)?;
        // oldest first: those past the idle bound are dropped (closed) from the front
        let fresh = conns
            .iter()
            .position(|(_, since)| now.saturating_duration_since(*since) < POOL_IDLE)
            .unwrap_or(conns.len());
        conns.drain(..fresh);
        let conn = conns.pop().map(|(c, _)| c);
        if conns.is_empty() {
            idle.remove(key);
        }
        conn
    }

    /// Closes every idle connection of `key`.
    fn forget(&self, key: &PeerKey) {
        self.idle.borrow_mut().remove(key);
    }

    fn give_back(&self, key: PeerKey, conn: C, now: Instant) {
        let mut idle = self.idle.borrow_mut();
        let conns = idle.entry(key).or_default();
        if conns.len() < POOL_PER_PEER {
            conns.push((conn, now));
        }
    }
}

/// One exchange with broker `node` at `addr` over a pooled connection (`PeerPool`),
/// bounded by `timeout`; the connection goes back to the pool only after a whole answer.
pub(crate) async fn peer_call<R>(
    ctx: &ShardCtx,
    (node, addr): (i32, &str),
    client_id: &'static str,
    timeout: Duration,
    version: i16,
    req: &R,
) -> anyhow::Result<R::Response>
where
    R: kafka_protocol::protocol::Request + kafka_protocol::protocol::Encodable,
    R::Response: kafka_protocol::protocol::Decodable + kafka_protocol::protocol::HeaderVersion,
{
    let key = (node, addr.to_string(), client_id);
    let pooled = ctx.peer_pool.take(&key, Instant::now());
    let was_pooled = pooled.is_some();
    let mut conn = match pooled {
        Some(c) => c,
        None => PeerConn::open(addr, client_id, timeout, &ctx.peer_security).await?,
    };
    match conn.call(version, req).await {
        Ok(resp) => {
            ctx.peer_pool.give_back(key, conn, Instant::now());
            Ok(resp)
        }
        Err(e) => {
            // a pooled connection that failed (the peer restarted or closed it while
            // idle) says the others to that peer are likely gone too: a caller's retry
            // then opens a fresh one instead of taking the next stale one
            if was_pooled {
                ctx.peer_pool.forget(&key);
            }
            Err(e)
        }
    }
}

/// The node id and Kafka address of `partition`'s leader when that is another live
/// broker: Ok(None) when this node leads it, Err when it has no live leader (or the
/// partition is unknown).
pub(crate) fn remote_leader(
    ctx: &ShardCtx,
    topic: &str,
    partition: i32,
) -> Result<Option<(i32, String)>, ResponseError> {
    let image = ctx.image.borrow();
    let leader = image
        .partition(topic, partition)
        .ok_or(ResponseError::UnknownTopicOrPartition)?
        .leader;
    if leader == ctx.node_id {
        return Ok(None);
    }
    image
        .broker(leader)
        .filter(|b| !b.fenced)
        .map(|b| Some((b.node_id, format!("{}:{}", b.host, b.port))))
        .ok_or(ResponseError::LeaderNotAvailable)
}

/// Writes `m` on every partition's leader; an error code per partition, in `m.parts` order.
pub(crate) async fn write_markers(ctx: &Rc<ShardCtx>, m: &Markers) -> Vec<(Tp, i16)> {
    let mut codes: Vec<i16> = vec![0; m.parts.len()];
    let mut local: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut remote: BTreeMap<(i32, String), Vec<usize>> = BTreeMap::new();
    for (i, tp) in m.parts.iter().enumerate() {
        match ctx.route(&tp.topic, tp.partition) {
            Ok(shard) => local.entry(shard).or_default().push(i),
            Err(ResponseError::NotLeaderOrFollower) => {
                match remote_leader(ctx, &tp.topic, tp.partition) {
                    Ok(Some(at)) => remote.entry(at).or_default().push(i),
                    // led here after all (the image changed): as a leaderless partition
                    Ok(None) | Err(_) => codes[i] = ResponseError::LeaderNotAvailable.code(),
                }
            }
            Err(e) => codes[i] = e.code(),
        }
    }
    write_on_shards(ctx, m, local, &mut codes).await;
    for ((node, addr), slots) in remote {
        let parts: Vec<Tp> = slots.iter().map(|&i| m.parts[i].clone()).collect();
        let answers = send_to_peer(ctx, node, &addr, &m.with_parts(parts)).await;
        for (k, &i) in slots.iter().enumerate() {
            codes[i] = answers
                .get(k)
                .copied()
                .unwrap_or(ResponseError::NotLeaderOrFollower.code());
        }
    }
    m.parts.iter().cloned().zip(codes).collect()
}

/// Writes `m`'s partitions listed in `by_shard` (owner shard → indexes into `m.parts`) on
/// their owner shards here, all shards at once; each answer goes to `codes[index]`.
async fn write_on_shards(
    ctx: &Rc<ShardCtx>,
    m: &Markers,
    by_shard: BTreeMap<usize, Vec<usize>>,
    codes: &mut [i16],
) {
    let mut waits = Vec::new();
    for (shard, slots) in by_shard {
        let parts = slots.iter().map(|&i| m.parts[i].clone()).collect();
        let fut = ctx
            .submit(shard, ShardRequest::WriteMarkers(m.with_parts(parts)))
            .await;
        waits.push((slots, fut));
    }
    for (slots, fut) in waits {
        let answers = match fut.await {
            ShardResponse::Markers(a) => a,
            _ => Vec::new(),
        };
        for (k, &i) in slots.iter().enumerate() {
            codes[i] = answers
                .get(k)
                .copied()
                .unwrap_or(ResponseError::NotLeaderOrFollower.code());
        }
    }
}

/// WriteTxnMarkers to another broker; an error code per partition of `m`.
async fn send_to_peer(ctx: &Rc<ShardCtx>, node: i32, addr: &str, m: &Markers) -> Vec<i16> {
    let mut topics: Vec<WritableTxnMarkerTopic> = Vec::new();
    for tp in &m.parts {
        match topics.last_mut() {
            Some(t) if t.name.0.as_str() == &*tp.topic => t.partition_indexes.push(tp.partition),
            _ => topics.push(
                WritableTxnMarkerTopic::default()
                    .with_name(name(&tp.topic))
                    .with_partition_indexes(vec![tp.partition]),
            ),
        }
    }
    let req = WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
        .with_producer_id(ProducerId(m.producer_id))
        .with_producer_epoch(m.producer_epoch)
        .with_transaction_result(m.commit)
        .with_coordinator_epoch(m.coordinator_epoch)
        .with_topics(topics)]);
    let resp = match peer_call(
        ctx,
        (node, addr),
        "sluice-txn-markers",
        PEER_TIMEOUT,
        1,
        &req,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(node, %addr, error = %e, "WriteTxnMarkers to a partition leader failed");
            return vec![ResponseError::NotLeaderOrFollower.code(); m.parts.len()];
        }
    };
    let mut by_tp: HashMap<(String, i32), i16> = HashMap::new();
    for r in resp.markers {
        for t in r.topics {
            for p in t.partitions {
                by_tp.insert((t.name.0.to_string(), p.partition_index), p.error_code);
            }
        }
    }
    m.parts
        .iter()
        .map(|tp| {
            by_tp
                .get(&(tp.topic.to_string(), tp.partition))
                .copied()
                .unwrap_or(ResponseError::UnknownServerError.code())
        })
        .collect()
}

impl ShardCtx {
    /// The owner shard's part: appends the marker to each partition this node leads and
    /// waits until every in-sync replica has it; an error code per partition.
    pub(crate) async fn write_markers_here(self: &Rc<Self>, m: Markers) -> Vec<i16> {
        let deadline = Instant::now() + MARKER_TIMEOUT;
        // the producer state is built first (async reads), so appending never reads the
        // log synchronously on this shard; checked again (a truncation while another
        // partition loaded unloads it) until a round loads nothing, three rounds at most
        for _ in 0..3 {
            let unloaded: Vec<_> = m
                .parts
                .iter()
                .filter_map(|tp| self.log(&tp.topic, tp.partition))
                .filter(|log| !log.producer_state_loaded())
                .collect();
            if unloaded.is_empty() {
                break;
            }
            for log in unloaded {
                // ok: a failure is answered by the append below, for that partition
                let _ = log.load_transaction_state().await;
            }
        }
        let now = now_ms();
        let mut waits = Vec::with_capacity(m.parts.len());
        for tp in &m.parts {
            // appended now, in arrival order; the waits run together below
            let appended = match (
                self.leader_epoch_here(&tp.topic, tp.partition),
                self.log(&tp.topic, tp.partition),
            ) {
                (Some(epoch), Some(log)) => log
                    .append_control(
                        m.producer_id,
                        m.producer_epoch,
                        m.commit,
                        m.coordinator_epoch,
                        now,
                    )
                    .map(|info| (Appended::now(&log, info.last_offset, epoch), log))
                    .map_err(|e| storage_error_code(&e)),
                _ => Err(ResponseError::NotLeaderOrFollower.code()),
            };
            waits.push(async move {
                let (at, log) = appended?;
                self.wait_replicated(&tp.topic, tp.partition, &log, at, deadline)
                    .await
                    .map_err(|(code, _)| code)?;
                if &*tp.topic == OFFSETS_TOPIC {
                    let coordinator = self.groups.borrow().get(&tp.partition).cloned();
                    if let Some(c) = coordinator {
                        c.complete_txn(m.producer_id, m.commit);
                    }
                }
                Ok::<(), i16>(())
            });
        }
        // every marker is appended already: waiting in turn takes as long as the slowest
        let mut codes = Vec::with_capacity(waits.len());
        for w in waits {
            codes.push(w.await.err().unwrap_or(0));
        }
        codes
    }
}

/// WriteTxnMarkers from another broker's transaction coordinator: each partition to its
/// owner shard here.
pub(crate) async fn handle_write_txn_markers(
    ctx: Rc<ShardCtx>,
    req: WriteTxnMarkersRequest,
    _version: i16,
) -> WriteTxnMarkersResponse {
    let mut results = Vec::with_capacity(req.markers.len());
    for marker in req.markers {
        let parts: Vec<Tp> = marker
            .topics
            .iter()
            .flat_map(|t| {
                t.partition_indexes.iter().map(|&p| Tp {
                    topic: t.name.0.as_str().into(),
                    partition: p,
                })
            })
            .collect();
        let m = Markers {
            producer_id: marker.producer_id.0,
            producer_epoch: marker.producer_epoch,
            commit: marker.transaction_result,
            coordinator_epoch: marker.coordinator_epoch,
            parts,
        };
        let mut codes: Vec<i16> = vec![0; m.parts.len()];
        let mut by_shard: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, tp) in m.parts.iter().enumerate() {
            match ctx.route(&tp.topic, tp.partition) {
                Ok(shard) => by_shard.entry(shard).or_default().push(i),
                Err(e) => codes[i] = e.code(),
            }
        }
        write_on_shards(&ctx, &m, by_shard, &mut codes).await;
        let mut topics: Vec<WritableTxnMarkerTopicResult> = Vec::new();
        for (tp, code) in m.parts.iter().zip(codes) {
            let p = WritableTxnMarkerPartitionResult::default()
                .with_partition_index(tp.partition)
                .with_error_code(code);
            match topics.last_mut() {
                Some(t) if t.name.0.as_str() == &*tp.topic => t.partitions.push(p),
                _ => topics.push(
                    WritableTxnMarkerTopicResult::default()
                        .with_name(name(&tp.topic))
                        .with_partitions(vec![p]),
                ),
            }
        }
        results.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(marker.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_pool_keeps_several_fresh_connections_per_peer() {
        let pool: PeerPool<u32> = PeerPool::default();
        let key = |node| (node, format!("127.0.0.1:{node}"), "sluice-txn");
        let t0 = Instant::now();
        assert_eq!(pool.take(&key(1), t0), None);
        // concurrent calls give back more than one connection: up to POOL_PER_PEER kept
        for c in 0..10u32 {
            pool.give_back(key(1), c, t0 + Duration::from_secs(u64::from(c)));
        }
        pool.give_back(key(2), 100, t0);
        let at = t0 + Duration::from_secs(10);
        let taken: Vec<u32> = (0..POOL_PER_PEER + 1)
            .filter_map(|_| pool.take(&key(1), at))
            .collect();
        assert_eq!(taken, vec![7, 6, 5, 4, 3, 2, 1, 0], "most recent first");
        assert_eq!(pool.take(&key(2), at), Some(100), "each peer its own");

        // connections idle past POOL_IDLE are closed, not used
        for c in 0..3u32 {
            pool.give_back(key(1), c, t0 + Duration::from_secs(u64::from(c) * 30));
        }
        let later = t0 + POOL_IDLE + Duration::from_secs(31);
        assert_eq!(pool.take(&key(1), later), Some(2));
        assert_eq!(pool.take(&key(1), later), None, "0 and 1 were too old");

        // a failed pooled connection closes the others to that peer
        pool.give_back(key(1), 5, later);
        pool.give_back(key(1), 6, later);
        pool.forget(&key(1));
        assert_eq!(pool.take(&key(1), later), None);
    }
}
