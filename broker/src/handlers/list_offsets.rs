//! ListOffsets: earliest (-2), latest (-1, the high watermark), max timestamp (-3), or the
//! first offset at or after a timestamp, answered by each partition's owning shard.
//! v0 (`handle_v0`) answers with a list of offsets (`old_style_offsets`) of at most one entry.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::list_offsets_request::ListOffsetsTopic;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::ListOffsetsRequest;
use kafka_protocol::ResponseError;

use super::legacy::OldStyleTopic;
use crate::shard::ShardCtx;
use crate::shard_msg::{add_routed, ByShard, ShardRequest, ShardResponse, Tp};

pub(crate) async fn handle(
    ctx: Rc<ShardCtx>,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let isolation = req.isolation_level;
    let mut response = ListOffsetsResponse::default();
    let mut by_shard: ByShard<(Tp, i64)> = BTreeMap::new();
    for (ti, topic) in req.topics.into_iter().enumerate() {
        let name = topic.name.0.to_string();
        let mut tr = ListOffsetsTopicResponse::default().with_name(topic.name.clone());
        for (pi, p) in topic.partitions.into_iter().enumerate() {
            let mut pr = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            if version >= 4 {
                pr.leader_epoch = ctx
                    .image
                    .borrow()
                    .partition(&name, p.partition_index)
                    .map_or(-1, |s| s.leader_epoch);
            }
            let epoch = (version >= 4).then_some(p.current_leader_epoch);
            match ctx.route(&name, p.partition_index).and_then(|shard| {
                ctx.check_leader_epoch(&name, p.partition_index, epoch)
                    .map(|()| shard)
            }) {
                Ok(shard) => {
                    add_routed(
                        &mut by_shard,
                        shard,
                        (ti, pi),
                        &name,
                        p.partition_index,
                        p.timestamp,
                    );
                }
                Err(e) => pr.error_code = e.code(),
            }
            tr.partitions.push(pr);
        }
        response.topics.push(tr);
    }
    let mut pending = Vec::new();
    for (shard, (slots, parts)) in by_shard {
        pending.push((
            slots,
            ctx.submit(
                shard,
                ShardRequest::ListOffsets {
                    parts,
                    read_committed: version >= 2 && isolation == 1,
                },
            )
            .await,
        ));
    }
    for (slots, fut) in pending {
        let answers = match fut.await {
            ShardResponse::ListOffsets(a) => a,
            _ => Vec::new(),
        };
        for (i, (ti, pi)) in slots.into_iter().enumerate() {
            let pr = &mut response.topics[ti].partitions[pi];
            match answers.get(i) {
                Some(a) => {
                    pr.error_code = a.error;
                    pr.timestamp = a.timestamp;
                    pr.offset = a.offset;
                }
                None => pr.error_code = ResponseError::NotLeaderOrFollower.code(),
            }
        }
    }
    response
}

/// ListOffsets v0: each partition's `old_style_offsets`, holding at most one offset (none
/// when `max_num_offsets` is 0 or on error): the log start for -2, the high watermark for
/// -1, and for a timestamp the first offset at or after it, or the high watermark when
/// every record is older. Kafka's v0 listed segment base offsets (by file modification
/// time) when asked for more than one; the single offset is the one clients use.
pub(crate) async fn handle_v0(
    ctx: Rc<ShardCtx>,
    req: ListOffsetsRequest,
    max_num_offsets: Vec<Vec<i32>>,
) -> Vec<OldStyleTopic> {
    let looked_up = handle(ctx.clone(), req.clone(), 0).await;
    // Timestamps past the last record: answered with the latest offset.
    let mut latest = ListOffsetsRequest::default();
    let mut latest_slots = Vec::new();
    for (ti, (t, rt)) in req.topics.iter().zip(&looked_up.topics).enumerate() {
        for (pi, (p, rp)) in t.partitions.iter().zip(&rt.partitions).enumerate() {
            if p.timestamp >= 0 && rp.error_code == 0 && rp.offset < 0 {
                latest_slots.push((ti, pi));
                latest.topics.push(
                    ListOffsetsTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(vec![p.clone().with_timestamp(-1)]),
                );
            }
        }
    }
    let mut looked_up = looked_up;
    if !latest_slots.is_empty() {
        let answers = handle(ctx, latest, 0).await;
        for ((ti, pi), t) in latest_slots.into_iter().zip(answers.topics) {
            if let (Some(p), Some(slot)) = (
                t.partitions.into_iter().next(),
                looked_up
                    .topics
                    .get_mut(ti)
                    .and_then(|t| t.partitions.get_mut(pi)),
            ) {
                *slot = p;
            }
        }
    }
    looked_up
        .topics
        .into_iter()
        .enumerate()
        .map(|(ti, t)| OldStyleTopic {
            name: t.name.0,
            partitions: t
                .partitions
                .into_iter()
                .enumerate()
                .map(|(pi, p)| {
                    let max = max_num_offsets
                        .get(ti)
                        .and_then(|m| m.get(pi))
                        .copied()
                        .unwrap_or(1);
                    let offsets = if p.error_code == 0 && p.offset >= 0 && max > 0 {
                        vec![p.offset]
                    } else {
                        Vec::new()
                    };
                    (p.partition_index, p.error_code, offsets)
                })
                .collect(),
        })
        .collect()
}
