//! Topic administration (CreateTopics, DeleteTopics, CreatePartitions) and
//! DescribeCluster. Changes go to the controller on shard 0, which answers once they are
//! durable and applied on every shard.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;

use kafka_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use kafka_protocol::messages::describe_cluster_response::{
    DescribeClusterBroker, DescribeClusterResponse,
};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeClusterRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::metadata::controller::{
    MetadataOp, MetadataOpResult, NewPartitions, NewTopic, TopicOutcome, TopicRef,
};
use crate::metadata::topic_config;
use crate::shard::ShardCtx;
use crate::shard_msg::{ShardRequest, ShardResponse};

/// How long an admin request waits for the controller when it gives no positive timeout.
const DEFAULT_ADMIN_TIMEOUT_MS: i32 = 30_000;

/// The wait bound of an admin request with `timeout_ms` (Kafka's field of that name).
pub(crate) fn admin_timeout(timeout_ms: i32) -> Option<Duration> {
    let ms = if timeout_ms > 0 {
        timeout_ms
    } else {
        DEFAULT_ADMIN_TIMEOUT_MS
    };
    Some(Duration::from_millis(ms as u64))
}

/// Sends `op` to the controller and returns its answer. Past `timeout` (None: no bound,
/// for the broker's own changes) the answer is REQUEST_TIMED_OUT, as in Kafka; the change
/// may still complete afterwards. A failure is (error code, message).
pub(crate) async fn controller_answer(
    ctx: &Rc<ShardCtx>,
    op: MetadataOp,
    timeout: Option<Duration>,
) -> Result<MetadataOpResult, (i16, String)> {
    let call = async { Some(ctx.call(0, ShardRequest::Metadata(op)).await) };
    let bound = async {
        match timeout {
            Some(t) => glommio::timer::sleep(t).await,
            None => std::future::pending::<()>().await,
        }
        None
    };
    let Some(answer) = future::or(call, bound).await else {
        return Err((
            ResponseError::RequestTimedOut.code(),
            format!(
                "the controller did not answer within {} ms",
                timeout.map_or(0, |t| t.as_millis())
            ),
        ));
    };
    match answer {
        ShardResponse::Metadata(MetadataOpResult::Failed(code, msg)) => Err((code, msg)),
        ShardResponse::Metadata(result) => Ok(result),
        _ => Err((
            ResponseError::NotController.code(),
            "controller unavailable".into(),
        )),
    }
}

/// `controller_answer` for the per-topic operations.
pub(crate) async fn controller_call(
    ctx: &Rc<ShardCtx>,
    op: MetadataOp,
    timeout: Option<Duration>,
) -> Result<Vec<TopicOutcome>, (i16, String)> {
    match controller_answer(ctx, op, timeout).await? {
        MetadataOpResult::Topics(t) => Ok(t),
        _ => Err((
            ResponseError::NotController.code(),
            "controller unavailable".into(),
        )),
    }
}

pub(crate) async fn create_topics_internal(
    ctx: &Rc<ShardCtx>,
    topics: Vec<NewTopic>,
    validate_only: bool,
    timeout: Option<Duration>,
) -> Vec<TopicOutcome> {
    let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
    match controller_call(
        ctx,
        MetadataOp::CreateTopics {
            topics,
            validate_only,
        },
        timeout,
    )
    .await
    {
        Ok(t) => t,
        Err((code, msg)) => names
            .into_iter()
            .map(|name| TopicOutcome {
                name,
                error: code,
                message: Some(msg.clone()),
                ..Default::default()
            })
            .collect(),
    }
}

/// A topic name for a response.
pub(crate) fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub(crate) async fn create_topics(
    ctx: Rc<ShardCtx>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    // a name given twice: every entry of it refused, answered once (Kafka's controller)
    let (given, duplicates) = split_repeated(req.topics, |t| Some(t.name.0.to_string()));
    let mut topics = Vec::new();
    let mut reserved = Vec::new();
    let mut refused: Vec<(String, ResponseError, String)> = Vec::new();
    for t in given {
        let n = t.name.0.to_string();
        if crate::metadata::is_internal(&n) {
            reserved.push(n);
            continue;
        }
        let configs = t
            .configs
            .into_iter()
            .filter_map(|c| c.value.map(|v| (c.name.to_string(), v.to_string())))
            .collect();
        let mut assignments: Vec<(i32, Vec<i32>)> = t
            .assignments
            .into_iter()
            .map(|a| {
                (
                    a.partition_index,
                    a.broker_ids.into_iter().map(|b| b.0).collect(),
                )
            })
            .collect();
        assignments.sort_by_key(|a| a.0);
        if !assignments.is_empty() {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                refused.push((
                    n,
                    ResponseError::InvalidRequest,
                    "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".to_string(),
                ));
                continue;
            }
            if assignments.iter().enumerate().any(|(i, a)| a.0 != i as i32) {
                refused.push((
                    n,
                    ResponseError::InvalidReplicaAssignment,
                    "Partitions should be a consecutive 0-based integer sequence.".to_string(),
                ));
                continue;
            }
        }
        topics.push(NewTopic {
            name: n,
            partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            configs,
            assignments: assignments.into_iter().map(|a| a.1).collect(),
        });
    }
    let requested: Vec<NewTopic> = topics.clone();
    let outcomes = create_topics_internal(
        &ctx,
        topics,
        req.validate_only,
        admin_timeout(req.timeout_ms),
    )
    .await;
    let mut results: Vec<CreatableTopicResult> = outcomes
        .into_iter()
        .map(|o| {
            let mut r = CreatableTopicResult::default()
                .with_name(name(&o.name))
                .with_error_code(o.error)
                .with_error_message(o.message.map(StrBytes::from_string))
                .with_topic_id(uuid::Uuid::from_bytes(o.topic_id))
                .with_num_partitions(if o.error == 0 { o.partitions } else { -1 })
                .with_replication_factor(if o.error == 0 {
                    o.replication_factor
                } else {
                    -1
                });
            if version >= 5 && o.error == 0 {
                let overrides = requested
                    .iter()
                    .find(|t| t.name == o.name)
                    .map(|t| t.configs.iter().cloned().collect())
                    .unwrap_or_default();
                r.configs = Some(
                    topic_config::effective(&overrides, &ctx.config)
                        .into_iter()
                        .map(|(k, v, is_default)| {
                            CreatableTopicConfigs::default()
                                .with_name(StrBytes::from_static_str(k))
                                .with_value(Some(StrBytes::from_string(v)))
                                .with_config_source(if is_default { 5 } else { 1 })
                        })
                        .collect(),
                );
            }
            r
        })
        .collect();
    for r in reserved {
        results.push(
            CreatableTopicResult::default()
                .with_name(name(&r))
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(StrBytes::from_string(format!(
                    "Creation of internal topic '{r}' is prohibited."
                ))))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
        );
    }
    for (topic, error, message) in refused {
        results.push(
            CreatableTopicResult::default()
                .with_name(name(&topic))
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(message)))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
        );
    }
    for d in duplicates {
        results.push(
            CreatableTopicResult::default()
                .with_name(name(&d))
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(StrBytes::from_static_str("Duplicate topic name.")))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
        );
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// Splits a request's entries as Kafka's controller does when one names a topic more than
/// once: the entries whose key is given once, in order (and those without a key), and
/// each repeated key once, in the order first seen. Every entry of a repeated key goes.
fn split_repeated<T, K: Clone + Eq + std::hash::Hash>(
    items: Vec<T>,
    key: impl Fn(&T) -> Option<K>,
) -> (Vec<T>, Vec<K>) {
    let mut count: HashMap<K, usize> = HashMap::new();
    for item in &items {
        if let Some(k) = key(item) {
            *count.entry(k).or_default() += 1;
        }
    }
    let (mut once, mut repeated) = (Vec::new(), Vec::new());
    for item in items {
        let Some(k) = key(&item) else {
            once.push(item);
            continue;
        };
        match count.get_mut(&k) {
            Some(1) => once.push(item),
            Some(c) if *c > 1 => {
                // answered once, however many times it was given
                *c = 0;
                repeated.push(k);
            }
            _ => {}
        }
    }
    (once, repeated)
}

pub(crate) async fn delete_topics(
    ctx: Rc<ShardCtx>,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    // As Kafka's controller: a topic given by both name and id, or by neither, and every
    // name or id given more than once is INVALID_REQUEST; the rest are deleted.
    let given: Vec<(Option<TopicName>, uuid::Uuid)> = if version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n), uuid::Uuid::nil()))
            .collect()
    };
    let invalid = |name: Option<TopicName>, id: uuid::Uuid, msg: &str| {
        DeletableTopicResult::default()
            .with_name(name)
            .with_topic_id(id)
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_error_message(Some(StrBytes::from_string(msg.to_string())))
    };
    #[derive(Clone, PartialEq, Eq, Hash)]
    enum Given {
        Name(TopicName),
        Id(uuid::Uuid),
    }
    let (given, repeated) = split_repeated(given, |(n, id)| match (n, id.is_nil()) {
        (Some(n), true) => Some(Given::Name(n.clone())),
        (None, false) => Some(Given::Id(*id)),
        _ => None,
    });
    let mut refused: Vec<DeletableTopicResult> = Vec::new();
    let mut refs: Vec<TopicRef> = Vec::new();
    for (n, id) in given {
        match (n, id.is_nil()) {
            (Some(n), true) => refs.push(TopicRef::Name(n.0.to_string())),
            (None, false) => refs.push(TopicRef::Id(*id.as_bytes())),
            (None, true) => refused.push(invalid(
                None,
                id,
                "Neither topic name nor id were specified.",
            )),
            (Some(n), false) => refused.push(invalid(
                Some(n),
                id,
                "You may not specify both topic name and topic id.",
            )),
        }
    }
    refused.extend(repeated.into_iter().map(|g| match g {
        Given::Name(n) => invalid(Some(n), uuid::Uuid::nil(), "Duplicate topic name."),
        Given::Id(id) => invalid(None, id, "Duplicate topic id."),
    }));
    let outcomes = if refs.is_empty() {
        Vec::new()
    } else {
        let op = MetadataOp::DeleteTopics {
            topics: refs.clone(),
        };
        match controller_call(&ctx, op, admin_timeout(req.timeout_ms)).await {
            Ok(o) => o,
            // each topic answered as it was named, with the controller's error
            Err((code, msg)) => refs
                .into_iter()
                .map(|r| {
                    let (name, topic_id) = match r {
                        TopicRef::Name(n) => (n, [0; 16]),
                        TopicRef::Id(id) => (String::new(), id),
                    };
                    TopicOutcome {
                        name,
                        topic_id,
                        error: code,
                        message: Some(msg.clone()),
                        ..Default::default()
                    }
                })
                .collect(),
        }
    };
    let mut responses: Vec<DeletableTopicResult> = outcomes
        .into_iter()
        .map(|o| {
            DeletableTopicResult::default()
                .with_name((!o.name.is_empty()).then(|| name(&o.name)))
                .with_topic_id(uuid::Uuid::from_bytes(o.topic_id))
                .with_error_code(o.error)
                .with_error_message(o.message.map(StrBytes::from_string))
        })
        .collect();
    responses.extend(refused);
    DeleteTopicsResponse::default().with_responses(responses)
}

pub(crate) async fn create_partitions(
    ctx: Rc<ShardCtx>,
    req: CreatePartitionsRequest,
    _version: i16,
) -> CreatePartitionsResponse {
    let topics: Vec<NewPartitions> = req
        .topics
        .into_iter()
        .map(|t| NewPartitions {
            topic: t.name.0.to_string(),
            count: t.count,
            assignments: t
                .assignments
                .unwrap_or_default()
                .into_iter()
                .map(|a| a.broker_ids.into_iter().map(|b| b.0).collect())
                .collect(),
        })
        .collect();
    // As Kafka's controller: a topic named more than once is INVALID_REQUEST (answered
    // once) and left alone.
    let (topics, duplicates) = split_repeated(topics, |t| Some(t.topic.clone()));
    let names: Vec<String> = topics.iter().map(|t| t.topic.clone()).collect();
    let outcomes = if topics.is_empty() {
        Vec::new()
    } else {
        let op = MetadataOp::CreatePartitions {
            topics,
            validate_only: req.validate_only,
        };
        match controller_call(&ctx, op, admin_timeout(req.timeout_ms)).await {
            Ok(o) => o,
            Err((code, msg)) => names
                .into_iter()
                .map(|n| TopicOutcome {
                    name: n,
                    error: code,
                    message: Some(msg.clone()),
                    ..Default::default()
                })
                .collect(),
        }
    };
    let mut results: Vec<CreatePartitionsTopicResult> = outcomes
        .into_iter()
        .map(|o| {
            CreatePartitionsTopicResult::default()
                .with_name(name(&o.name))
                .with_error_code(o.error)
                .with_error_message(o.message.map(StrBytes::from_string))
        })
        .collect();
    results.extend(duplicates.into_iter().map(|d| {
        CreatePartitionsTopicResult::default()
            .with_name(name(&d))
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_error_message(Some(StrBytes::from_static_str("Duplicate topic name.")))
    }));
    CreatePartitionsResponse::default().with_results(results)
}

pub(crate) async fn describe_cluster(
    ctx: Rc<ShardCtx>,
    _req: DescribeClusterRequest,
    _version: i16,
    listener: Rc<str>,
) -> DescribeClusterResponse {
    let brokers = crate::handlers::metadata::live_brokers(&ctx, &listener)
        .into_iter()
        .map(|(id, host, port, rack)| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port)
                .with_rack(rack.map(StrBytes::from_string))
        })
        .collect();
    DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(ctx.cluster_id.clone()))
        .with_controller_id(BrokerId(crate::handlers::metadata::controller_for_clients(
            &ctx,
        )))
        .with_endpoint_type(1)
        .with_cluster_authorized_operations(i32::MIN)
        .with_brokers(brokers)
}
