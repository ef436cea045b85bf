//! ListOffsets: earliest (-2), latest (-1, the high watermark), max timestamp (-3), or the
//! first offset at or after a timestamp, answered by each partition's owning shard.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::ListOffsetsRequest;
use kafka_protocol::ResponseError;

use crate::shard::ShardCtx;
use crate::shard_msg::{ByShard, ShardRequest, ShardResponse, Tp};

pub(crate) async fn handle(
    ctx: Rc<ShardCtx>,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
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
                pr.leader_epoch = 0;
            }
            match ctx.owner(&name, p.partition_index) {
                Some(shard) => {
                    let e = by_shard.entry(shard).or_default();
                    e.0.push((ti, pi));
                    e.1.push((
                        Tp {
                            topic: name.clone(),
                            partition: p.partition_index,
                        },
                        p.timestamp,
                    ));
                }
                None => pr.error_code = ResponseError::UnknownTopicOrPartition.code(),
            }
            tr.partitions.push(pr);
        }
        response.topics.push(tr);
    }
    let mut pending = Vec::new();
    for (shard, (slots, parts)) in by_shard {
        pending.push((
            slots,
            ctx.submit(shard, ShardRequest::ListOffsets { parts }).await,
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
