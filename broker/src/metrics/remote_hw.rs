//! High watermarks of partitions led by other brokers, for consumer lag in a cluster: a
//! group coordinator's broker has every committed offset of its groups, but the high
//! watermark only of the partitions it holds a replica of. On a scrape, the others are
//! asked of their leaders with one ListOffsets (latest, read_uncommitted: the high
//! watermark) per leader, each bounded in time; a leader that does not answer in time
//! leaves its partitions without a lag series for that scrape.
//!
//! ```text
//!  committed (group, topic, p) with no local hw ─► leader of (topic, p) in the image
//!    ─► by leader: ListOffsets v4 over a PeerConn (≤ TIMEOUT) ─► hw ─► lag
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_lite::future;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest};

use crate::handlers::admin::name;
use crate::peer::PeerConn;
use crate::shard::ShardCtx;

/// Bound on asking one leader (connect and answer).
const TIMEOUT: Duration = Duration::from_secs(2);

/// The high watermarks of `parts` (topic, partition) from their leaders, as far as they
/// answered in time. Partitions without a live leader, or led by this node, are skipped.
pub(super) async fn high_watermarks(
    ctx: &ShardCtx,
    parts: &[(String, i32)],
) -> HashMap<(String, i32), i64> {
    let mut by_leader: BTreeMap<String, Vec<(String, i32)>> = BTreeMap::new();
    {
        let image = ctx.image.borrow();
        for (topic, partition) in parts {
            let Some(p) = image.partition(topic, *partition) else {
                continue;
            };
            if p.leader < 0 || p.leader == ctx.node_id {
                continue;
            }
            if let Some(b) = image.broker(p.leader).filter(|b| !b.fenced) {
                by_leader
                    .entry(format!("{}:{}", b.host, b.port))
                    .or_default()
                    .push((topic.clone(), *partition));
            }
        }
    }
    let mut out = HashMap::new();
    for (addr, parts) in by_leader {
        let ask = ask(&addr, &parts, &ctx.peer_security);
        let timed = future::or(async { Some(ask.await) }, async {
            glommio::timer::sleep(TIMEOUT).await;
            None
        });
        match timed.await {
            Some(Ok(hws)) => out.extend(hws),
            Some(Err(e)) => {
                tracing::debug!(%addr, error = %e, "no high watermarks from a leader for lag")
            }
            None => tracing::debug!(%addr, "no high watermarks from a leader for lag in time"),
        }
    }
    out
}

/// One ListOffsets (latest) to the leader at `addr` for `parts`.
async fn ask(
    addr: &str,
    parts: &[(String, i32)],
    security: &crate::peer::PeerSecurity,
) -> anyhow::Result<Vec<((String, i32), i64)>> {
    let mut topics: Vec<ListOffsetsTopic> = Vec::new();
    for (topic, partition) in parts {
        let p = ListOffsetsPartition::default()
            .with_partition_index(*partition)
            .with_current_leader_epoch(-1)
            .with_timestamp(-1);
        match topics.last_mut() {
            Some(t) if t.name.0.as_str() == topic => t.partitions.push(p),
            _ => topics.push(
                ListOffsetsTopic::default()
                    .with_name(name(topic))
                    .with_partitions(vec![p]),
            ),
        }
    }
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(0)
        .with_topics(topics);
    let mut conn = PeerConn::open(addr, "sluice-metrics", TIMEOUT, security).await?;
    let resp = conn.call(4, &req).await?;
    Ok(resp
        .topics
        .into_iter()
        .flat_map(|t| {
            let topic = t.name.0.to_string();
            t.partitions
                .into_iter()
                .filter(|p| p.error_code == 0 && p.offset >= 0)
                .map(move |p| ((topic.clone(), p.partition_index), p.offset))
        })
        .collect())
}
