//! DeleteRecords (KIP-107): move each named partition's log start up to an offset (-1: the
//! high watermark), so the records below it are gone for readers — `kafka-delete-records.sh`,
//! Kafka Streams purging repartition topics, the admin clients' `delete_records`. Each
//! partition goes to the shard that owns it (`shard/delete_records.rs`), which answers
//! with the partition's low watermark once every in-sync replica's log start has passed
//! the offset, or REQUEST_TIMED_OUT at the request's timeout (at most
//! `request.deadline.ms`). DELETE on the topic is checked per topic
//! (TOPIC_AUTHORIZATION_FAILED for each of its partitions), internal topics are refused
//! (INVALID_TOPIC_EXCEPTION) before any lookup, and a partition named twice is answered
//! once, for the last offset named.
//!
//! ```text
//!  DeleteRecords ─► ACL, route per partition ─► ShardRequest::DeleteRecords per owner
//!                                               ─► (error, low watermark) per partition
//! ```

use std::collections::{BTreeMap, HashMap};
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
use crate::shard_msg::{add_routed, ByShard, ShardRequest, ShardResponse, Tp};

/// The shard answers this long (at most a quarter of it) before `request.deadline.ms`,
/// so its REQUEST_TIMED_OUT carries the low watermark reached.
const DEADLINE_MARGIN_MS: i64 = 1000;

pub(crate) async fn delete_records(
    ctx: Rc<ShardCtx>,
    req: DeleteRecordsRequest,
    _version: i16,
    conn: Rc<Conn>,
) -> DeleteRecordsResponse {
    // answered by the shard before the connection's own bound answers for it (and never
    // left waiting past it on another shard)
    let deadline_ms = ctx.config.int("request.deadline.ms");
    let deadline_ms = deadline_ms - DEADLINE_MARGIN_MS.min(deadline_ms / 4);
    let timeout_ms = i64::from(req.timeout_ms).clamp(0, deadline_ms.max(0));
    let timeout = Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0));
    let mut topics: Vec<DeleteRecordsTopicResult> = Vec::new();
    // a partition named twice is answered once, with the last offset named (Kafka keeps
    // the request's partitions in a map)
    let mut slot_of: HashMap<(String, i32), (usize, usize)> = HashMap::new();
    let mut offsets: Vec<Vec<i64>> = Vec::new();
    let mut topic_slot: HashMap<String, usize> = HashMap::new();
    for topic in req.topics {
        let name = topic.name.0.to_string();
        let ti = *topic_slot.entry(name.clone()).or_insert_with(|| {
            topics.push(DeleteRecordsTopicResult::default().with_name(topic.name.clone()));
            offsets.push(Vec::new());
            topics.len() - 1
        });
        for p in topic.partitions {
            if let Some(&(t, i)) = slot_of.get(&(name.clone(), p.partition_index)) {
                offsets[t][i] = p.offset;
                continue;
            }
            let pi = topics[ti].partitions.len();
            slot_of.insert((name.clone(), p.partition_index), (ti, pi));
            topics[ti].partitions.push(
                DeleteRecordsPartitionResult::default()
                    .with_partition_index(p.partition_index)
                    .with_low_watermark(-1),
            );
            offsets[ti].push(p.offset);
        }
    }
    let mut by_shard: ByShard<(Tp, i64)> = BTreeMap::new();
    for (ti, t) in topics.iter_mut().enumerate() {
        let name = t.name.0.to_string();
        let allowed = !ctx.access.enabled()
            || ctx
                .access
                .allows(&conn, AclOperation::Delete, ResourceType::Topic, &name);
        for (pi, pr) in t.partitions.iter_mut().enumerate() {
            if !allowed {
                pr.error_code = ResponseError::TopicAuthorizationFailed.code();
                continue;
            }
            if crate::metadata::is_internal(&name) {
                // before any lookup, as Kafka: every broker refuses it the same way
                pr.error_code = ResponseError::InvalidTopicException.code();
                continue;
            }
            match ctx.route(&name, pr.partition_index) {
                Ok(shard) => {
                    add_routed(
                        &mut by_shard,
                        shard,
                        (ti, pi),
                        &name,
                        pr.partition_index,
                        offsets[ti][pi],
                    );
                }
                Err(e) => pr.error_code = e.code(),
            }
        }
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
