//! Metadata: the live brokers, and topics with their partitions' leaders, epochs, replicas
//! and ISR, from this broker's copy of the metadata image.
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

/// The brokers clients on `listener` may use: every unfenced registered broker with an
/// endpoint of that listener name (Kafka's rule), or this one alone while the image has
/// none (a node that cannot reach the controllers still answers).
pub(crate) fn live_brokers(
    ctx: &ShardCtx,
    listener: &str,
) -> Vec<(i32, String, i32, Option<String>)> {
    let image = ctx.image.borrow();
    if image.live_brokers().next().is_some() {
        return image
            .live_brokers()
            .filter_map(|b| {
                let (host, port) = b.endpoint(listener)?;
                Some((b.node_id, host.to_string(), port, b.rack.clone()))
            })
            .collect();
    }
    ctx.listeners
        .all
        .iter()
        .find(|l| l.name == listener)
        .map(|l| {
            (
                ctx.node_id,
                l.advertised_host.clone(),
                l.advertised_port,
                None,
            )
        })
        .into_iter()
        .collect()
}

/// The controller id given to clients: this broker. Any broker forwards admin requests to
/// the active controller (as KRaft brokers answer with a random live broker), and naming
/// the broker the client already talks to keeps a client that cached a dead controller's
/// id from waiting for it: its next Metadata names a live one.
pub(crate) fn controller_for_clients(ctx: &ShardCtx) -> i32 {
    ctx.node_id
}

fn topic_entry(ctx: &ShardCtx, t: &TopicInfo) -> MetadataResponseTopic {
    let image = ctx.image.borrow();
    let alive = |n: &i32| image.broker(*n).is_some_and(|b| !b.fenced);
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
        .with_topic_id(uuid::Uuid::from_bytes(t.id))
        .with_is_internal(t.name.starts_with("__"))
        .with_topic_authorized_operations(i32::MIN)
        .with_partitions(
            t.parts
                .iter()
                .enumerate()
                .map(|(p, s)| {
                    MetadataResponsePartition::default()
                        .with_error_code(if s.leader == -1 {
                            ResponseError::LeaderNotAvailable.code()
                        } else {
                            0
                        })
                        .with_partition_index(p as i32)
                        .with_leader_id(BrokerId(s.leader))
                        .with_leader_epoch(s.leader_epoch)
                        .with_replica_nodes(s.replicas.iter().map(|r| BrokerId(*r)).collect())
                        .with_isr_nodes(s.isr.iter().map(|r| BrokerId(*r)).collect())
                        .with_offline_replicas(
                            s.replicas
                                .iter()
                                .filter(|r| !alive(r))
                                .map(|r| BrokerId(*r))
                                .collect(),
                        )
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
    conn: Rc<crate::connection::Conn>,
) -> MetadataResponse {
    let listener = conn.listener_name();
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
    let named = wanted.is_some();
    let (want_topic_ops, want_cluster_ops) = (
        req.include_topic_authorized_operations,
        req.include_cluster_authorized_operations,
    );
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
                        && super::authz::may_create(&ctx, &conn, n)
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
                        ..Default::default()
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
    let brokers = live_brokers(&ctx, &listener)
        .into_iter()
        .map(|(id, host, port, rack)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port)
                .with_rack(rack.map(StrBytes::from_string))
        })
        .collect();
    let mut resp = MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(ctx.cluster_id.clone())))
        .with_controller_id(BrokerId(controller_for_clients(&ctx)))
        .with_cluster_authorized_operations(i32::MIN)
        .with_topics(topics);
    super::authz::filter_metadata(&ctx, &conn, named, &mut resp);
    use crate::security::acl::ResourceType;
    if want_topic_ops && version >= 8 {
        for t in resp.topics.iter_mut().filter(|t| t.error_code == 0) {
            if let Some(name) = &t.name {
                t.topic_authorized_operations =
                    super::authz::authorized_operations(&ctx, &conn, ResourceType::Topic, name);
            }
        }
    }
    if want_cluster_ops && (8..=10).contains(&version) {
        resp.cluster_authorized_operations = super::authz::authorized_operations(
            &ctx,
            &conn,
            ResourceType::Cluster,
            crate::security::acl::CLUSTER_NAME,
        );
    }
    resp
}
