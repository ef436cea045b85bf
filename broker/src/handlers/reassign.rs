//! Partition placement and leadership by operators: ElectLeaders (preferred or unclean
//! leader elections), AlterPartitionReassignments (move replicas, KIP-455) and
//! ListPartitionReassignments. Changes go to the controller (`metadata::elections` has the
//! rules); listing reads this broker's image.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::admin::{admin_timeout, controller_answer, name};
use crate::metadata::controller::{MetadataOp, MetadataOpResult, PartitionOutcome};
use crate::metadata::elections::{Election, Reassignment};
use crate::shard::ShardCtx;

fn brokers(ids: &[i32]) -> Vec<BrokerId> {
    ids.iter().map(|b| BrokerId(*b)).collect()
}

/// Outcomes grouped by topic, in order of first appearance.
fn by_topic(outcomes: Vec<PartitionOutcome>) -> Vec<(String, Vec<PartitionOutcome>)> {
    let mut out: Vec<(String, Vec<PartitionOutcome>)> = Vec::new();
    for o in outcomes {
        match out.iter_mut().find(|(t, _)| *t == o.topic) {
            Some((_, v)) => v.push(o),
            None => out.push((o.topic.clone(), vec![o])),
        }
    }
    out
}

/// The controller's per-partition outcomes for `op`, or `asked` each with the failure.
async fn partition_call(
    ctx: &Rc<ShardCtx>,
    op: MetadataOp,
    timeout_ms: i32,
    asked: Vec<(String, i32)>,
) -> Result<Vec<PartitionOutcome>, (i16, String)> {
    let failed = |(code, msg): (i16, String)| {
        asked
            .iter()
            .map(|(topic, partition)| PartitionOutcome {
                topic: topic.clone(),
                partition: *partition,
                error: code,
                message: Some(msg.clone()),
            })
            .collect()
    };
    match controller_answer(ctx, op, admin_timeout(timeout_ms)).await {
        Ok(MetadataOpResult::Partitions(p)) => Ok(p),
        Ok(_) => Ok(failed((
            ResponseError::NotController.code(),
            "controller unavailable".into(),
        ))),
        // with every partition asked for there is nothing to list the failure under
        Err(e) if asked.is_empty() => Err(e),
        Err(e) => Ok(failed(e)),
    }
}

pub(crate) async fn elect_leaders(
    ctx: Rc<ShardCtx>,
    req: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    // v0 has no election type: preferred
    let election = match (version, req.election_type) {
        (0, _) | (_, 0) => Election::Preferred,
        (_, 1) => Election::Unclean,
        _ => {
            return ElectLeadersResponse::default()
                .with_error_code(ResponseError::InvalidRequest.code());
        }
    };
    let partitions: Option<Vec<(String, i32)>> = req.topic_partitions.map(|topics| {
        topics
            .into_iter()
            .flat_map(|t| {
                let name = t.topic.0.to_string();
                t.partitions.into_iter().map(move |p| (name.clone(), p))
            })
            .collect()
    });
    let asked = partitions.clone().unwrap_or_default();
    let op = MetadataOp::ElectLeaders {
        election,
        partitions,
    };
    let resp = ElectLeadersResponse::default();
    match partition_call(&ctx, op, req.timeout_ms, asked).await {
        Ok(outcomes) => resp.with_replica_election_results(
            by_topic(outcomes)
                .into_iter()
                .map(|(topic, parts)| {
                    ReplicaElectionResult::default()
                        .with_topic(name(&topic))
                        .with_partition_result(
                            parts
                                .into_iter()
                                .map(|o| {
                                    PartitionResult::default()
                                        .with_partition_id(o.partition)
                                        .with_error_code(o.error)
                                        .with_error_message(o.message.map(StrBytes::from_string))
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
        // v0 has no top-level error: the answer is then empty
        Err(_) if version == 0 => resp,
        Err((code, _)) => resp.with_error_code(code),
    }
}

pub(crate) async fn alter_reassignments(
    ctx: Rc<ShardCtx>,
    req: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    let allow_rf_change = version < 1 || req.allow_replication_factor_change;
    let mut requests = Vec::new();
    let mut refused = Vec::new();
    for t in req.topics {
        let topic = t.name.0.to_string();
        for p in t.partitions {
            let replicas: Option<Vec<i32>> =
                p.replicas.map(|r| r.into_iter().map(|b| b.0).collect());
            if let (false, Some(target)) = (allow_rf_change, &replicas) {
                // KIP-860: the count must stay that of the replicas before any reassignment
                let current = ctx
                    .image
                    .borrow()
                    .partition(&topic, p.partition_index)
                    .map(|s| s.original().len());
                if current.is_some_and(|n| n != target.len()) {
                    refused.push(PartitionOutcome {
                        topic: topic.clone(),
                        partition: p.partition_index,
                        error: ResponseError::InvalidReplicationFactor.code(),
                        message: Some(format!(
                            "the replication factor would change to {} and allow_replication_factor_change is false",
                            target.len()
                        )),
                    });
                    continue;
                }
            }
            requests.push(Reassignment {
                topic: topic.clone(),
                partition: p.partition_index,
                replicas,
            });
        }
    }
    let resp = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow_rf_change);
    let mut outcomes = refused;
    if !requests.is_empty() {
        let asked: Vec<(String, i32)> = requests
            .iter()
            .map(|r| (r.topic.clone(), r.partition))
            .collect();
        match partition_call(&ctx, MetadataOp::Reassign(requests), req.timeout_ms, asked).await {
            Ok(o) => outcomes.extend(o),
            Err((code, msg)) => {
                return resp
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(msg)))
            }
        }
    }
    resp.with_responses(
        by_topic(outcomes)
            .into_iter()
            .map(|(topic, parts)| {
                ReassignableTopicResponse::default()
                    .with_name(name(&topic))
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|o| {
                                ReassignablePartitionResponse::default()
                                    .with_partition_index(o.partition)
                                    .with_error_code(o.error)
                                    .with_error_message(o.message.map(StrBytes::from_string))
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// Reassignments in progress, from this broker's image: the named partitions (unknown
/// ones are left out, as Kafka does) or all.
pub(crate) async fn list_reassignments(
    ctx: Rc<ShardCtx>,
    req: ListPartitionReassignmentsRequest,
    _version: i16,
) -> ListPartitionReassignmentsResponse {
    let image = ctx.image.borrow();
    let wanted: Option<BTreeMap<String, Vec<i32>>> = req.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let mut topics: Vec<OngoingTopicReassignment> = Vec::new();
    let mut names: Vec<&str> = match &wanted {
        Some(w) => w.keys().map(String::as_str).collect(),
        None => image.topics().map(|t| t.name.as_str()).collect(),
    };
    names.sort_unstable();
    for topic in names {
        let Some(t) = image.topic(topic) else {
            continue;
        };
        let indexes: Vec<i32> = match wanted.as_ref().and_then(|w| w.get(topic)) {
            Some(p) => p.clone(),
            None => (0..t.partitions).collect(),
        };
        let parts: Vec<OngoingPartitionReassignment> = indexes
            .into_iter()
            .filter_map(|p| {
                let s = t.parts.get(usize::try_from(p).ok()?)?;
                s.reassigning().then(|| {
                    OngoingPartitionReassignment::default()
                        .with_partition_index(p)
                        .with_replicas(brokers(&s.replicas))
                        .with_adding_replicas(brokers(&s.adding))
                        .with_removing_replicas(brokers(&s.removing))
                })
            })
            .collect();
        if !parts.is_empty() {
            topics.push(
                OngoingTopicReassignment::default()
                    .with_name(name(topic))
                    .with_partitions(parts),
            );
        }
    }
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
