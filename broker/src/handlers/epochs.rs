//! OffsetForLeaderEpoch (API 23, v2–4): for each partition and a leader epoch the caller
//! saw, the largest epoch this leader knows at or below it and the offset where that epoch
//! ended (the next epoch's start, or the log end for the latest). A follower truncates a
//! divergent suffix with it before fetching (KIP-101); a consumer checks its position
//! after a leader change (KIP-320). Answered by each partition's owning shard from the
//! log's leader-epoch cache; (-1, -1) when the epoch is older than any it has.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::OffsetForLeaderEpochRequest;
use kafka_protocol::ResponseError;

use crate::shard::ShardCtx;
use crate::shard_msg::{add_routed, ByShard, ShardRequest, ShardResponse, Tp};

pub(crate) async fn handle(
    ctx: Rc<ShardCtx>,
    req: OffsetForLeaderEpochRequest,
    _version: i16,
) -> OffsetForLeaderEpochResponse {
    let mut response = OffsetForLeaderEpochResponse::default();
    let mut by_shard: ByShard<(Tp, i32)> = BTreeMap::new();
    for (ti, topic) in req.topics.into_iter().enumerate() {
        let name = topic.topic.0.to_string();
        let mut tr = OffsetForLeaderTopicResult::default().with_topic(topic.topic.clone());
        for (pi, p) in topic.partitions.into_iter().enumerate() {
            let mut pr = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            let routed = ctx.route(&name, p.partition).and_then(|shard| {
                ctx.check_leader_epoch(&name, p.partition, Some(p.current_leader_epoch))
                    .map(|()| shard)
            });
            match routed {
                Ok(shard) => {
                    add_routed(
                        &mut by_shard,
                        shard,
                        (ti, pi),
                        &name,
                        p.partition,
                        p.leader_epoch,
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
            ctx.submit(shard, ShardRequest::EpochEnds { parts }).await,
        ));
    }
    for (slots, fut) in pending {
        let answers = match fut.await {
            ShardResponse::EpochEnds(a) => a,
            _ => Vec::new(),
        };
        for (i, (ti, pi)) in slots.into_iter().enumerate() {
            let pr = &mut response.topics[ti].partitions[pi];
            match answers.get(i) {
                Some((error, epoch, end)) => {
                    pr.error_code = *error;
                    pr.leader_epoch = *epoch;
                    pr.end_offset = *end;
                }
                None => pr.error_code = ResponseError::NotLeaderOrFollower.code(),
            }
        }
    }
    response
}
