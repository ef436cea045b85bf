//! Metadata: brokers (this one), and topics with their partitions, all led by this node.
//! Unknown topics are created when `auto.create.topics.enable` and the request allow it.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::handlers::admin::{admin_timeout, create_topics_internal};
use crate::metadata::controller::{validate_topic_name, NewTopic};
use crate::metadata::image::TopicInfo;
use crate::shard::ShardCtx;

pub(crate) fn broker_entry(ctx: &ShardCtx) -> MetadataResponseBroker {
    let (host, port) = ctx.config.advertised();
    MetadataResponseBroker::default()
        .with_node_id(BrokerId(ctx.config.node_id()))
        .with_host(StrBytes::from_string(host))
        .with_port(port)
}

fn topic_entry(ctx: &ShardCtx, t: &TopicInfo) -> MetadataResponseTopic {
    let node = BrokerId(ctx.config.node_id());
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
        .with_topic_id(uuid::Uuid::from_bytes(t.id))
        .with_is_internal(t.name.starts_with("__"))
        .with_topic_authorized_operations(i32::MIN)
        .with_partitions(
            (0..t.partitions)
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_partition_index(p)
                        .with_leader_id(node)
                        .with_leader_epoch(0)
                        .with_replica_nodes(vec![node])
                        .with_isr_nodes(vec![node])
                })
                .collect(),
        )
}

fn unknown(name: String, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(name))))
        .with_error_code(error.code())
        .with_topic_authorized_operations(i32::MIN)
}

pub(crate) async fn handle(
    ctx: Rc<ShardCtx>,
    req: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    // v0: empty list means all topics; v1+: null means all.
    let wanted: Option<Vec<String>> = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(
            t.into_iter()
                .filter_map(|t| match t.name {
                    Some(n) => Some(n.0.to_string()),
                    None => ctx
                        .image
                        .borrow()
                        .topic_by_id(t.topic_id.as_bytes())
                        .map(|i| i.name.clone()),
                })
                .collect(),
        ),
    };
    let auto_create = ctx.config.flag("auto.create.topics.enable")
        && (version < 4 || req.allow_auto_topic_creation);
    let mut topics = Vec::new();
    match wanted {
        None => {
            let image = ctx.image.borrow();
            let mut all: Vec<&TopicInfo> = image.topics().collect();
            all.sort_by(|a, b| a.name.cmp(&b.name));
            topics.extend(all.into_iter().map(|t| topic_entry(&ctx, t)));
        }
        Some(mut names) => {
            // A topic named twice is answered once (a request cannot multiply the answer).
            let mut seen = std::collections::HashSet::new();
            names.retain(|n| seen.insert(n.clone()));
            let missing: Vec<String> = names
                .iter()
                .filter(|n| ctx.image.borrow().topic(n).is_none())
                .filter(|n| {
                    auto_create
                        && validate_topic_name(n).is_ok()
                        && !crate::metadata::is_internal(n)
                })
                .cloned()
                .collect();
            if !missing.is_empty() {
                let partitions = ctx.config.int("num.partitions") as i32;
                let new = missing
                    .into_iter()
                    .map(|name| NewTopic {
                        name,
                        partitions,
                        replication_factor: -1,
                        configs: Vec::new(),
                    })
                    .collect();
                // Races with other creators end as TOPIC_ALREADY_EXISTS, which is fine here.
                let _ = create_topics_internal(&ctx, new, false, admin_timeout(0)).await;
            }
            for name in names {
                let image = ctx.image.borrow();
                topics.push(match image.topic(&name) {
                    Some(t) => topic_entry(&ctx, t),
                    None if validate_topic_name(&name).is_err() => {
                        unknown(name, ResponseError::InvalidTopicException)
                    }
                    None => unknown(name, ResponseError::UnknownTopicOrPartition),
                });
            }
        }
    }
    MetadataResponse::default()
        .with_brokers(vec![broker_entry(&ctx)])
        .with_cluster_id(Some(StrBytes::from_string(ctx.cluster_id.clone())))
        .with_controller_id(BrokerId(ctx.config.node_id()))
        .with_cluster_authorized_operations(i32::MIN)
        .with_topics(topics)
}
