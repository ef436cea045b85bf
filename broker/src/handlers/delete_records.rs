//! DeleteRecords (KIP-107): move each named partition's log start up to an offset (-1: the
//! high watermark), so the records below it are gone for readers — `kafka-delete-records.sh`,
//! Kafka Streams purging repartition topics, the admin clients' `delete_records`. Each
//! partition goes to the shard that owns it (`shard/delete_records.rs`), which answers
//! with the partition's low watermark once every in-sync replica's log start has passed
//! the offset, or REQUEST_TIMED_OUT at the request's timeout. DELETE on the topic is
//! checked per topic (TOPIC_AUTHORIZATION_FAILED for each of its partitions).
//!
//! ```text
//!  DeleteRecords ─► ACL, route per partition ─► ShardRequest::DeleteRecords per owner
//!                                               ─► (error, low watermark) per partition
//! ```

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;

use crate::connection::Conn;
use crate::security::acl::{AclOperation, ResourceType};
use crate::shard::ShardCtx;
use crate::shard_msg::{ByShard, ShardRequest, ShardResponse, Tp};

pub(crate) async fn delete_records(
    ctx: Rc<ShardCtx>,
    req: DeleteRecordsRequest,
    _version: i16,
    conn: Rc<Conn>,
) -> DeleteRecordsResponse {
    let timeout = Duration::from_millis(u64::try_from(req.timeout_ms).unwrap_or(0));
    let mut topics = Vec::with_capacity(req.topics.len());
    let mut by_shard: ByShard<(Tp, i64)> = BTreeMap::new();
    for (ti, topic) in req.topics.into_iter().enumerate() {
        let name = topic.name.0.to_string();
        let allowed = !ctx.access.enabled()
            || ctx
                .access
                .allows(&conn, AclOperation::Delete, ResourceType::Topic, &name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (pi, p) in topic.partitions.into_iter().enumerate() {
            let mut pr = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            if !allowed {
                pr.error_code = ResponseError::TopicAuthorizationFailed.code();
            } else {
                match ctx.route(&name, p.partition_index) {
                    Ok(shard) => {
                        let e = by_shard.entry(shard).or_default();
                        e.0.push((ti, pi));
                        e.1.push((
                            Tp {
                                topic: name.as_str().into(),
                                partition: p.partition_index,
                            },
                            p.offset,
                        ));
                    }
                    Err(e) => pr.error_code = e.code(),
                }
            }
            partitions.push(pr);
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    let mut pending = Vec::with_capacity(by_shard.len());
    for (shard, (slots, parts)) in by_shard {
        let call = ShardRequest::DeleteRecords { parts, timeout };
        pending.push((slots, ctx.submit(shard, call).await));
    }
    for (slots, fut) in pending {
        let answers = match fut.await {
            ShardResponse::DeleteRecords(a) => a,
            _ => Vec::new(),
        };
        for (i, (ti, pi)) in slots.into_iter().enumerate() {
            let pr: &mut DeleteRecordsPartitionResult = &mut topics[ti].partitions[pi];
            match answers.get(i) {
                Some(&(error, low)) => {
                    pr.error_code = error;
                    pr.low_watermark = low;
                }
                None => pr.error_code = ResponseError::NotLeaderOrFollower.code(),
            }
        }
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
