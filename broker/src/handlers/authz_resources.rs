//! Per-resource ACL answers of the requests that name several topics, groups, transactional
//! ids or config resources (Kafka's KafkaApis / ControllerApis checks): each resource the
//! principal may not use is taken out of the request and answered with its own
//! `*_AUTHORIZATION_FAILED`; the rest of the request is handled as if it came alone.
//! Whole-request checks (a group, a transactional id, the cluster) stay in `authz::check`.
//!
//! ```text
//!  request ─► split(ctx, conn, &mut req) ─► denied answers ─┐
//!                 │ allowed resources                        ├─► one response
//!                 └─► handler (admin, configs, groups, txn) ─┘
//! ```

use std::collections::HashSet;
use std::future::Future;
use std::rc::Rc;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{admin, configs, epochs, groups, txn};
use crate::access::Access;
use crate::connection::Conn;
use crate::security::acl::{AclOperation as Op, ResourceType as Rt};
use crate::shard::ShardCtx;

const TOPIC: i16 = ResponseError::TopicAuthorizationFailed.code();
const GROUP: i16 = ResponseError::GroupAuthorizationFailed.code();
const CLUSTER: i16 = ResponseError::ClusterAuthorizationFailed.code();
const TXN: i16 = ResponseError::TransactionalIdAuthorizationFailed.code();

/// Kafka's ConfigResource types.
const CONFIG_TOPIC: i8 = 2;
const CONFIG_BROKER: i8 = 4;
const CONFIG_BROKER_LOGGER: i8 = 8;
const CONFIG_CLIENT_METRICS: i8 = 16;
const CONFIG_GROUP: i8 = 32;

/// Kafka's message for an authorization error code.
fn message(code: i16) -> Option<StrBytes> {
    Some(StrBytes::from_static_str(match code {
        TOPIC => "Topic authorization failed.",
        GROUP => "Group authorization failed.",
        CLUSTER => "Cluster authorization failed.",
        _ => "Transactional Id authorization failed.",
    }))
}

/// Runs `handler` unless every resource was denied (`empty`): then nothing is left to do
/// and the answer is the denied resources' alone.
async fn unless_empty<R: Default, F: Future<Output = R>>(empty: bool, handler: F) -> R {
    if empty {
        R::default()
    } else {
        handler.await
    }
}

/// Takes the items `allowed` refuses out of `items`; returns them, one per distinct key.
fn take_denied<T, K: Eq + std::hash::Hash>(
    items: &mut Vec<T>,
    key: impl Fn(&T) -> K,
    mut allowed: impl FnMut(&T) -> bool,
) -> Vec<T> {
    let mut seen = HashSet::new();
    let mut denied = Vec::new();
    for item in std::mem::take(items) {
        if allowed(&item) {
            items.push(item);
        } else if seen.insert(key(&item)) {
            denied.push(item);
        }
    }
    denied
}

/// CreateTopics: CREATE on the cluster allows every topic, else CREATE on each topic. A
/// created topic whose configs the principal may not describe (DESCRIBE_CONFIGS on the
/// topic) is answered without them, with `topic_config_error_code` (v5+), as Kafka does.
pub(crate) async fn create_topics(
    ctx: Rc<ShardCtx>,
    mut req: CreateTopicsRequest,
    version: i16,
    conn: Rc<Conn>,
) -> create_topics_response::CreateTopicsResponse {
    let a = &ctx.access;
    if !a.enabled() {
        return admin::create_topics(ctx, req, version).await;
    }
    let denied = if a.allows_cluster(&conn, Op::Create) {
        Vec::new()
    } else {
        take_denied(
            &mut req.topics,
            |t| t.name.clone(),
            |t| a.allows(&conn, Op::Create, Rt::Topic, &t.name),
        )
    };
    let empty = req.topics.is_empty() && !denied.is_empty();
    let mut resp = unless_empty(empty, admin::create_topics(ctx.clone(), req, version)).await;
    if version >= 5 {
        for t in resp.topics.iter_mut().filter(|t| t.error_code == 0) {
            if !ctx
                .access
                .allows(&conn, Op::DescribeConfigs, Rt::Topic, &t.name)
            {
                let hidden = create_topics_response::CreatableTopicResult::default();
                t.configs = hidden.configs;
                t.num_partitions = -1;
                t.replication_factor = -1;
                t.topic_config_error_code = TOPIC;
            }
        }
    }
    resp.topics.extend(denied.into_iter().map(|t| {
        create_topics_response::CreatableTopicResult::default()
            .with_name(t.name)
            .with_error_code(TOPIC)
            .with_error_message(message(TOPIC))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
    }));
    resp
}

/// DeleteTopics: DELETE on the cluster allows every topic, else DELETE on each. As in
/// Kafka's controller, a topic named that the principal may not DESCRIBE is
/// TOPIC_AUTHORIZATION_FAILED whether it exists or not; one it may describe but that does
/// not exist is left to the handler (UNKNOWN_TOPIC_OR_PARTITION); a topic given by id is
/// answered without its name unless the principal may describe it.
pub(crate) async fn delete_topics(
    ctx: Rc<ShardCtx>,
    mut req: DeleteTopicsRequest,
    version: i16,
    conn: Rc<Conn>,
) -> delete_topics_response::DeleteTopicsResponse {
    use delete_topics_response::DeletableTopicResult;
    let a = &ctx.access;
    if !a.enabled() || a.allows_cluster(&conn, Op::Delete) {
        return admin::delete_topics(ctx, req, version).await;
    }
    let mut denied: Vec<DeletableTopicResult> = Vec::new();
    {
        let image = ctx.image.borrow();
        let by_name_ok = |name: &str| {
            a.allows(&conn, Op::Describe, Rt::Topic, name)
                && (image.topic(name).is_none() || a.allows(&conn, Op::Delete, Rt::Topic, name))
        };
        let refused = |name: Option<TopicName>, id: uuid::Uuid| {
            DeletableTopicResult::default()
                .with_name(name)
                .with_topic_id(id)
                .with_error_code(TOPIC)
                .with_error_message(message(TOPIC))
        };
        let mut seen = HashSet::new();
        req.topic_names.retain(|n| {
            let ok = by_name_ok(n);
            if !ok && seen.insert(n.clone()) {
                denied.push(refused(Some(n.clone()), uuid::Uuid::nil()));
            }
            ok
        });
        req.topics.retain(|t| {
            let ok = match &t.name {
                Some(n) => by_name_ok(n),
                None => match image.topic_by_id(t.topic_id.as_bytes()) {
                    // an unknown id is the handler's to answer
                    None => true,
                    Some(info) => a.allows(&conn, Op::Delete, Rt::Topic, &info.name),
                },
            };
            if !ok {
                let shown = match &t.name {
                    Some(n) => Some(n.clone()),
                    None => image
                        .topic_by_id(t.topic_id.as_bytes())
                        .filter(|i| a.allows(&conn, Op::Describe, Rt::Topic, &i.name))
                        .map(|i| admin::name(&i.name)),
                };
                denied.push(refused(shown, t.topic_id));
            }
            ok
        });
    }
    let empty = req.topic_names.is_empty() && req.topics.is_empty() && !denied.is_empty();
    let mut resp = unless_empty(empty, admin::delete_topics(ctx.clone(), req, version)).await;
    resp.responses.extend(denied);
    resp
}

/// CreatePartitions: ALTER on each topic.
pub(crate) async fn create_partitions(
    ctx: Rc<ShardCtx>,
    mut req: CreatePartitionsRequest,
    version: i16,
    conn: Rc<Conn>,
) -> create_partitions_response::CreatePartitionsResponse {
    let a = &ctx.access;
    if !a.enabled() {
        return admin::create_partitions(ctx, req, version).await;
    }
    let denied = take_denied(
        &mut req.topics,
        |t| t.name.clone(),
        |t| a.allows(&conn, Op::Alter, Rt::Topic, &t.name),
    );
    let empty = req.topics.is_empty() && !denied.is_empty();
    let mut resp = unless_empty(empty, admin::create_partitions(ctx.clone(), req, version)).await;
    resp.results.extend(denied.into_iter().map(|t| {
        create_partitions_response::CreatePartitionsTopicResult::default()
            .with_name(t.name)
            .with_error_code(TOPIC)
            .with_error_message(message(TOPIC))
    }));
    resp
}

/// The error of a config resource the principal may not `op` (DESCRIBE_CONFIGS or
/// ALTER_CONFIGS): a topic or group needs it on itself, the broker, broker loggers and
/// client metrics on the cluster. Unknown types are the handler's to refuse.
fn config_denied(a: &Access, conn: &Conn, op: Op, resource_type: i8, name: &str) -> Option<i16> {
    let (ok, code) = match resource_type {
        CONFIG_TOPIC => (a.allows(conn, op, Rt::Topic, name), TOPIC),
        CONFIG_GROUP => (a.allows(conn, op, Rt::Group, name), GROUP),
        CONFIG_BROKER | CONFIG_BROKER_LOGGER | CONFIG_CLIENT_METRICS => {
            (a.allows_cluster(conn, op), CLUSTER)
        }
        _ => (true, 0),
    };
    (!ok).then_some(code)
}

/// Takes out of `resources` those the principal may not `op` (DESCRIBE_CONFIGS or
/// ALTER_CONFIGS, see `config_denied`) and returns their answers, made by `refuse`.
fn take_denied_configs<R, A>(
    a: &Access,
    conn: &Conn,
    op: Op,
    resources: &mut Vec<R>,
    of: impl Fn(&R) -> (i8, &StrBytes),
    refuse: impl Fn(i16, &R) -> A,
) -> Vec<A> {
    let mut denied = Vec::new();
    resources.retain(|r| {
        let (resource_type, name) = of(r);
        let code = config_denied(a, conn, op, resource_type, name);
        if let Some(code) = code {
            denied.push(refuse(code, r));
        }
        code.is_none()
    });
    denied
}

/// DescribeConfigs: DESCRIBE_CONFIGS per resource.
pub(crate) async fn describe_configs(
    ctx: Rc<ShardCtx>,
    mut req: DescribeConfigsRequest,
    version: i16,
    conn: Rc<Conn>,
) -> describe_configs_response::DescribeConfigsResponse {
    let a = &ctx.access;
    if !a.enabled() {
        return configs::describe(ctx, req, version).await;
    }
    let denied = take_denied_configs(
        a,
        &conn,
        Op::DescribeConfigs,
        &mut req.resources,
        |r| (r.resource_type, &r.resource_name),
        |code, r| {
            describe_configs_response::DescribeConfigsResult::default()
                .with_error_code(code)
                .with_error_message(message(code))
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
        },
    );
    let empty = req.resources.is_empty() && !denied.is_empty();
    let mut resp = unless_empty(empty, configs::describe(ctx.clone(), req, version)).await;
    resp.results.extend(denied);
    resp
}

/// AlterConfigs: ALTER_CONFIGS per resource.
pub(crate) async fn alter_configs(
    ctx: Rc<ShardCtx>,
    mut req: AlterConfigsRequest,
    version: i16,
    conn: Rc<Conn>,
) -> alter_configs_response::AlterConfigsResponse {
    let a = &ctx.access;
    if !a.enabled() {
        return configs::alter(ctx, req, version).await;
    }
    let denied = take_denied_configs(
        a,
        &conn,
        Op::AlterConfigs,
        &mut req.resources,
        |r| (r.resource_type, &r.resource_name),
        |code, r| {
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message(code))
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
        },
    );
    let empty = req.resources.is_empty() && !denied.is_empty();
    let mut resp = unless_empty(empty, configs::alter(ctx.clone(), req, version)).await;
    resp.responses.extend(denied);
    resp
}

/// IncrementalAlterConfigs: ALTER_CONFIGS per resource.
pub(crate) async fn incremental_alter_configs(
    ctx: Rc<ShardCtx>,
    mut req: IncrementalAlterConfigsRequest,
    version: i16,
    conn: Rc<Conn>,
) -> incremental_alter_configs_response::IncrementalAlterConfigsResponse {
    let a = &ctx.access;
    if !a.enabled() {
        return configs::incremental_alter(ctx, req, version).await;
    }
    let denied = take_denied_configs(
        a,
        &conn,
        Op::AlterConfigs,
        &mut req.resources,
        |r| (r.resource_type, &r.resource_name),
        |code, r| {
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message(code))
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
        },
    );
    let empty = req.resources.is_empty() && !denied.is_empty();
    let mut resp = unless_empty(empty, configs::incremental_alter(ctx.clone(), req, version)).await;
    resp.responses.extend(denied);
    resp
}

/// DeleteGroups: DELETE on each group.
pub(crate) async fn delete_groups(
    ctx: Rc<ShardCtx>,
    mut req: DeleteGroupsRequest,
    version: i16,
    conn: Rc<Conn>,
) -> delete_groups_response::DeleteGroupsResponse {
    let a = &ctx.access;
    if !a.enabled() {
        return groups::delete_groups(ctx, req, version).await;
    }
    let denied = take_denied(
        &mut req.groups_names,
        |g| g.clone(),
        |g| a.allows(&conn, Op::Delete, Rt::Group, g),
    );
    let empty = req.groups_names.is_empty() && !denied.is_empty();
    let mut resp = unless_empty(empty, groups::delete_groups(ctx.clone(), req, version)).await;
    resp.results.extend(denied.into_iter().map(|g| {
        delete_groups_response::DeletableGroupResult::default()
            .with_group_id(g)
            .with_error_code(GROUP)
    }));
    resp
}

/// OffsetDelete (DELETE on the group is checked whole first): READ on each topic; the
/// offsets of denied topics stay.
pub(crate) async fn offset_delete(
    ctx: Rc<ShardCtx>,
    mut req: OffsetDeleteRequest,
    version: i16,
    conn: Rc<Conn>,
) -> offset_delete_response::OffsetDeleteResponse {
    use offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
    let a = &ctx.access;
    if !a.enabled() {
        return groups::offset_delete(ctx, req, version).await;
    }
    let denied = take_denied(
        &mut req.topics,
        |t| t.name.clone(),
        |t| a.allows(&conn, Op::Read, Rt::Topic, &t.name),
    );
    let mut resp = groups::offset_delete(ctx.clone(), req, version).await;
    resp.topics.extend(denied.into_iter().map(|t| {
        OffsetDeleteResponseTopic::default()
            .with_name(t.name)
            .with_partitions(
                t.partitions
                    .iter()
                    .map(|p| {
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(TOPIC)
                    })
                    .collect(),
            )
    }));
    resp
}

/// TxnOffsetCommit (WRITE on the transactional id and READ on the group are checked whole
/// first): READ on each topic; denied topics' offsets are not committed.
pub(crate) async fn txn_offset_commit(
    ctx: Rc<ShardCtx>,
    mut req: TxnOffsetCommitRequest,
    version: i16,
    conn: Rc<Conn>,
) -> txn_offset_commit_response::TxnOffsetCommitResponse {
    let a = &ctx.access;
    if !a.enabled() {
        return txn::txn_offset_commit(ctx, req, version).await;
    }
    let denied = take_denied(
        &mut req.topics,
        |t| t.name.clone(),
        |t| a.allows(&conn, Op::Read, Rt::Topic, &t.name),
    );
    let empty = req.topics.is_empty() && !denied.is_empty();
    let mut resp = unless_empty(empty, txn::txn_offset_commit(ctx.clone(), req, version)).await;
    resp.topics.extend(txn::txn_commit_answers(&denied, TOPIC));
    resp
}

/// OffsetForLeaderEpoch: CLUSTER_ACTION (a follower) allows every topic, else DESCRIBE on
/// each (a consumer, KIP-320).
pub(crate) async fn offset_for_leader_epoch(
    ctx: Rc<ShardCtx>,
    mut req: OffsetForLeaderEpochRequest,
    version: i16,
    conn: Rc<Conn>,
) -> offset_for_leader_epoch_response::OffsetForLeaderEpochResponse {
    use offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
    let a = &ctx.access;
    if !a.enabled() || a.allows_cluster(&conn, Op::ClusterAction) {
        return epochs::handle(ctx, req, version).await;
    }
    let denied = take_denied(
        &mut req.topics,
        |t| t.topic.clone(),
        |t| a.allows(&conn, Op::Describe, Rt::Topic, &t.topic),
    );
    let empty = req.topics.is_empty() && !denied.is_empty();
    let mut resp = unless_empty(empty, epochs::handle(ctx.clone(), req, version)).await;
    resp.topics.extend(denied.into_iter().map(|t| {
        OffsetForLeaderTopicResult::default()
            .with_topic(t.topic)
            .with_partitions(
                t.partitions
                    .iter()
                    .map(|p| {
                        EpochEndOffset::default()
                            .with_partition(p.partition)
                            .with_error_code(TOPIC)
                            .with_leader_epoch(-1)
                            .with_end_offset(-1)
                    })
                    .collect(),
            )
    }));
    resp
}

/// AddPartitionsToTxn v0–3 (WRITE on the transactional id is checked whole first): WRITE
/// on each topic. All or nothing, as in Kafka: with a denied topic nothing is added; denied
/// topics answer TOPIC_AUTHORIZATION_FAILED, unknown ones UNKNOWN_TOPIC_OR_PARTITION and
/// the rest OPERATION_NOT_ATTEMPTED. v4 (from brokers) is a cluster action, checked whole.
pub(crate) async fn add_partitions_to_txn(
    ctx: Rc<ShardCtx>,
    req: AddPartitionsToTxnRequest,
    version: i16,
    conn: Rc<Conn>,
) -> add_partitions_to_txn_response::AddPartitionsToTxnResponse {
    use add_partitions_to_txn_response::{
        AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResponse,
        AddPartitionsToTxnTopicResult,
    };
    let a = &ctx.access;
    let writable = |t: &add_partitions_to_txn_request::AddPartitionsToTxnTopic| {
        a.allows(&conn, Op::Write, Rt::Topic, &t.name)
    };
    if !a.enabled() || version >= 4 || req.v3_and_below_topics.iter().all(writable) {
        return txn::add_partitions_to_txn(ctx, req, version).await;
    }
    let image = ctx.image.borrow();
    let results = req
        .v3_and_below_topics
        .iter()
        .map(|t| {
            let code = if !writable(t) {
                TOPIC
            } else if image.topic(&t.name).is_none() {
                ResponseError::UnknownTopicOrPartition.code()
            } else {
                ResponseError::OperationNotAttempted.code()
            };
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(*p)
                                .with_partition_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

/// DescribeProducers: READ on each topic.
pub(crate) async fn describe_producers(
    ctx: Rc<ShardCtx>,
    mut req: DescribeProducersRequest,
    version: i16,
    conn: Rc<Conn>,
) -> describe_producers_response::DescribeProducersResponse {
    use describe_producers_response::{PartitionResponse, TopicResponse};
    let a = &ctx.access;
    if !a.enabled() {
        return txn::describe_producers(ctx, req, version).await;
    }
    let denied = take_denied(
        &mut req.topics,
        |t| t.name.clone(),
        |t| a.allows(&conn, Op::Read, Rt::Topic, &t.name),
    );
    let empty = req.topics.is_empty() && !denied.is_empty();
    let mut resp = unless_empty(empty, txn::describe_producers(ctx.clone(), req, version)).await;
    resp.topics.extend(denied.into_iter().map(|t| {
        TopicResponse::default().with_name(t.name).with_partitions(
            t.partition_indexes
                .iter()
                .map(|p| {
                    PartitionResponse::default()
                        .with_partition_index(*p)
                        .with_error_code(TOPIC)
                        .with_error_message(message(TOPIC))
                })
                .collect(),
        )
    }));
    resp
}

/// DescribeTransactions: DESCRIBE on each transactional id; the answer leaves out the
/// topics of a transaction the principal may not describe.
pub(crate) async fn describe_transactions(
    ctx: Rc<ShardCtx>,
    mut req: DescribeTransactionsRequest,
    version: i16,
    conn: Rc<Conn>,
) -> describe_transactions_response::DescribeTransactionsResponse {
    let a = &ctx.access;
    if !a.enabled() {
        return txn::describe_transactions(ctx, req, version).await;
    }
    let denied = take_denied(
        &mut req.transactional_ids,
        |id| id.clone(),
        |id| a.allows(&conn, Op::Describe, Rt::TransactionalId, id),
    );
    let empty = req.transactional_ids.is_empty() && !denied.is_empty();
    let mut resp = unless_empty(empty, txn::describe_transactions(ctx.clone(), req, version)).await;
    for s in resp.transaction_states.iter_mut() {
        s.topics
            .retain(|t| ctx.access.allows(&conn, Op::Describe, Rt::Topic, &t.topic));
    }
    resp.transaction_states.extend(denied.into_iter().map(|id| {
        describe_transactions_response::TransactionState::default()
            .with_transactional_id(id)
            .with_error_code(TXN)
    }));
    resp
}

/// FindCoordinator v4+ (batched keys): DESCRIBE on each group or transactional id; a
/// denied key gets its own error. Older versions name one key and are checked whole.
pub(crate) async fn find_coordinator(
    ctx: Rc<ShardCtx>,
    mut req: FindCoordinatorRequest,
    version: i16,
    listener: Rc<str>,
    conn: Rc<Conn>,
) -> find_coordinator_response::FindCoordinatorResponse {
    let a = &ctx.access;
    let (rt, code) = match req.key_type {
        0 => (Rt::Group, GROUP),
        1 => (Rt::TransactionalId, TXN),
        // an unknown key type is the handler's to refuse
        _ => return groups::find_coordinator(ctx, req, version, listener).await,
    };
    if !a.enabled() || version < 4 {
        return groups::find_coordinator(ctx, req, version, listener).await;
    }
    let denied = take_denied(
        &mut req.coordinator_keys,
        |k| k.clone(),
        |k| a.allows(&conn, Op::Describe, rt, k),
    );
    let empty = req.coordinator_keys.is_empty() && !denied.is_empty();
    let mut resp = unless_empty(
        empty,
        groups::find_coordinator(ctx.clone(), req, version, listener),
    )
    .await;
    resp.coordinators.extend(denied.into_iter().map(|k| {
        find_coordinator_response::Coordinator::default()
            .with_key(k)
            .with_node_id(BrokerId(-1))
            .with_host(StrBytes::default())
            .with_port(-1)
            .with_error_code(code)
            .with_error_message(message(code))
    }));
    resp
}

#[cfg(test)]
mod tests {
    use super::take_denied;

    #[test]
    fn denied_items_leave_the_request_once_each_and_the_rest_keep_their_order() {
        let mut items = vec!["a", "x", "b", "x", "c", "y"];
        let denied = take_denied(&mut items, |s| *s, |s| !matches!(*s, "x" | "y"));
        assert_eq!(items, ["a", "b", "c"]);
        assert_eq!(denied, ["x", "y"]);
        let mut none: Vec<&str> = vec!["a"];
        assert!(take_denied(&mut none, |s| *s, |_| true).is_empty());
        assert_eq!(none, ["a"]);
    }
}
