//! Transaction APIs: InitProducerId (plain idempotent ids from the controller, or a
//! transactional id's from its coordinator), AddPartitionsToTxn, AddOffsetsToTxn, EndTxn,
//! DescribeTransactions and ListTransactions (routed to the transaction coordinators),
//! TxnOffsetCommit (to the group's coordinator), WriteTxnMarkers (from another broker's
//! coordinator, `txn_markers.rs`) and DescribeProducers (each partition's producer state).

use std::rc::Rc;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::TransactionState as DescribedTxn;
use kafka_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequestTopic;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListTransactionsRequest,
    ListTransactionsResponse, ProducerId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
    WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::ResponseError;

use crate::groups::OFFSETS_TOPIC;
use crate::groups_glue::{GroupAnswer, GroupCall};
use crate::metadata::controller::{MetadataOp, MetadataOpResult};
use crate::shard::ShardCtx;
use crate::shard_msg::{ShardRequest, ShardResponse, Tp};
use crate::txn_glue::{call, TxnAnswer, TxnCall};
use crate::txn_verify::{offset_commit_error, verify, ToVerify};
use sluice_storage::TxnVerification;

const NOT_COORDINATOR: i16 = ResponseError::NotCoordinator.code();

/// InitProducerId: with a transactional id, from its transaction coordinator (fencing
/// older epochs, aborting an open transaction); without, a fresh producer id (epoch 0) for
/// an idempotent producer.
pub(crate) async fn init_producer_id(
    ctx: Rc<ShardCtx>,
    req: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(id) = req.transactional_id.as_ref().map(|t| t.0.to_string()) {
        if !id.is_empty() {
            return match call(&ctx, &id, TxnCall::Init { req, version }).await {
                TxnAnswer::Init(r) => r,
                _ => resp.with_error_code(NOT_COORDINATOR),
            };
        }
    }
    match ctx
        .call(0, ShardRequest::Metadata(MetadataOp::AllocateProducerId))
        .await
    {
        ShardResponse::Metadata(MetadataOpResult::ProducerId(pid)) => resp
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(0),
        _ => resp.with_error_code(ResponseError::CoordinatorNotAvailable.code()),
    }
}

/// The error of every partition of `topics`: `code(exists)` (a partition of a topic
/// this broker's metadata has, or not).
fn partition_errors(
    topics: &[AddPartitionsToTxnTopic],
    code: impl Fn(&str, i32) -> i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    topics
        .iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|&p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(code(t.name.0.as_str(), p))
                        })
                        .collect(),
                )
        })
        .collect()
}

/// Kafka checks that every partition exists before it asks the coordinator: if one does
/// not, it gets UNKNOWN_TOPIC_OR_PARTITION and the others OPERATION_NOT_ATTEMPTED.
fn missing_partitions(
    ctx: &ShardCtx,
    topics: &[AddPartitionsToTxnTopic],
) -> Option<Vec<AddPartitionsToTxnTopicResult>> {
    let exists = |t: &str, p: i32| ctx.image.borrow().partition(t, p).is_some();
    let any_missing = topics
        .iter()
        .any(|t| t.partitions.iter().any(|&p| !exists(t.name.0.as_str(), p)));
    any_missing.then(|| {
        partition_errors(topics, |t, p| {
            if exists(t, p) {
                ResponseError::OperationNotAttempted.code()
            } else {
                ResponseError::UnknownTopicOrPartition.code()
            }
        })
    })
}

/// AddPartitionsToTxn: v0–v3 from a client (one transaction), v4+ from brokers (several,
/// each to its own coordinator; KIP-890's verification among them).
pub(crate) async fn add_partitions_to_txn(
    ctx: Rc<ShardCtx>,
    req: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    if version < 4 {
        if let Some(results) = missing_partitions(&ctx, &req.v3_and_below_topics) {
            return AddPartitionsToTxnResponse::default()
                .with_results_by_topic_v3_and_below(results);
        }
        let id = req.v3_and_below_transactional_id.0.to_string();
        let topics = req.v3_and_below_topics.clone();
        return match call(&ctx, &id, TxnCall::AddPartitions { req, version }).await {
            TxnAnswer::AddPartitions(r) => r,
            _ => AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(
                partition_errors(&topics, |_, _| NOT_COORDINATOR),
            ),
        };
    }
    let mut results = Vec::with_capacity(req.transactions.len());
    for txn in req.transactions {
        let id = txn.transactional_id.0.to_string();
        let answer =
            AddPartitionsToTxnResult::default().with_transactional_id(txn.transactional_id.clone());
        if let Some(errors) = missing_partitions(&ctx, &txn.topics) {
            results.push(answer.with_topic_results(errors));
            continue;
        }
        let fallback =
            answer.with_topic_results(partition_errors(&txn.topics, |_, _| NOT_COORDINATOR));
        results.push(
            match call(&ctx, &id, TxnCall::AddPartitionsFor { txn, version }).await {
                TxnAnswer::AddPartitionsFor(r) => r,
                _ => fallback,
            },
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

pub(crate) async fn add_offsets_to_txn(
    ctx: Rc<ShardCtx>,
    req: AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let Some(offsets_partitions) = ctx
        .image
        .borrow()
        .topic(OFFSETS_TOPIC)
        .map(|t| t.partitions)
    else {
        return AddOffsetsToTxnResponse::default()
            .with_error_code(ResponseError::CoordinatorNotAvailable.code());
    };
    let id = req.transactional_id.0.to_string();
    let call_ = TxnCall::AddOffsets {
        req,
        version,
        offsets_partitions,
    };
    match call(&ctx, &id, call_).await {
        TxnAnswer::AddOffsets(r) => r,
        _ => AddOffsetsToTxnResponse::default().with_error_code(NOT_COORDINATOR),
    }
}

pub(crate) async fn end_txn(ctx: Rc<ShardCtx>, req: EndTxnRequest, version: i16) -> EndTxnResponse {
    let id = req.transactional_id.0.to_string();
    match call(&ctx, &id, TxnCall::End { req, version }).await {
        TxnAnswer::End(r) => r,
        _ => EndTxnResponse::default()
            .with_error_code(NOT_COORDINATOR)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}

/// TxnOffsetCommit goes to the group's coordinator (the offsets are part of the
/// transaction only through the `__consumer_offsets` partition AddOffsetsToTxn added).
pub(crate) async fn txn_offset_commit(
    ctx: Rc<ShardCtx>,
    mut req: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    use crate::handlers::groups::{answer_unknown_partitions, take_unknown_partitions};
    let asked = req.topics.len();
    let unknown = take_unknown_partitions(
        &ctx,
        &mut req.topics,
        |t| t.name.0.as_str(),
        |t| &mut t.partitions,
        |p| p.partition_index,
    );
    let mut resp = if req.topics.is_empty() && asked > 0 {
        TxnOffsetCommitResponse::default()
    } else {
        txn_offset_commit_known(ctx, req, version).await
    };
    answer_unknown_partitions(
        &mut resp.topics,
        unknown,
        |t| t.name.0.as_str(),
        |name| {
            TxnOffsetCommitResponseTopic::default().with_name(kafka_protocol::messages::TopicName(
                kafka_protocol::protocol::StrBytes::from_string(name),
            ))
        },
        |t| &mut t.partitions,
        |p, code| {
            TxnOffsetCommitResponsePartition::default()
                .with_partition_index(p)
                .with_error_code(code)
        },
    );
    for_old_producers(&mut resp, version);
    resp
}

/// As Kafka: producers before 2.0 (KAFKA-7296), which send TxnOffsetCommit v0–1, fail on
/// COORDINATOR_LOAD_IN_PROGRESS and retry COORDINATOR_NOT_AVAILABLE.
fn for_old_producers(resp: &mut TxnOffsetCommitResponse, version: i16) {
    if version >= 2 {
        return;
    }
    let loading = ResponseError::CoordinatorLoadInProgress.code();
    for p in resp.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
        if p.error_code == loading {
            p.error_code = ResponseError::CoordinatorNotAvailable.code();
        }
    }
}

/// KIP-890 for TxnOffsetCommit (Kafka verifies it as a produce): the guard for the
/// group's `__consumer_offsets` partition once the coordinator said the partition is in
/// the producer's transaction (AddOffsetsToTxn added it), or the code to answer with.
async fn verify_txn_offsets(
    ctx: &Rc<ShardCtx>,
    req: &TxnOffsetCommitRequest,
) -> Result<TxnVerification, i16> {
    if !ctx.config.flag("transaction.partition.verification.enable") {
        return Ok(TxnVerification::Off);
    }
    let group = req.group_id.0.as_str();
    let Some((partition, shard)) = crate::handlers::groups::route(ctx, group) else {
        return Err(ResponseError::CoordinatorNotAvailable.code());
    };
    let part = ToVerify {
        slot: 0,
        tp: Tp {
            topic: OFFSETS_TOPIC.into(),
            partition,
        },
        shard,
        // the coordinator's batch carries no sequence (Kafka: NO_SEQUENCE)
        base_sequence: -1,
    };
    let producer = (req.producer_id.0, req.producer_epoch);
    let mut answers = verify(
        ctx,
        req.transactional_id.0.as_str(),
        producer,
        vec![part],
        VERIFY_TIMEOUT,
    )
    .await;
    match answers.remove(&0) {
        Some(Ok(v)) => Ok(v),
        Some(Err(c)) => Err(offset_commit_error(c)),
        None => Err(ResponseError::UnknownServerError.code()),
    }
}

/// Bound on a TxnOffsetCommit's verification (the request has no timeout of its own;
/// Kafka's AddPartitionsToTxnManager uses `request.timeout.ms`).
const VERIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `txn_offset_commit` of the partitions the metadata knows.
async fn txn_offset_commit_known(
    ctx: Rc<ShardCtx>,
    req: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    let group = req.group_id.0.to_string();
    let topics = req.topics.clone();
    let code = match verify_txn_offsets(&ctx, &req).await {
        Ok(verification) => {
            let call = GroupCall::TxnCommit {
                req,
                version,
                verification,
            };
            match crate::handlers::groups::call(&ctx, &group, call).await {
                GroupAnswer::TxnCommit(r) => return r,
                other => other.unanswered_code(),
            }
        }
        Err(code) => code,
    };
    TxnOffsetCommitResponse::default().with_topics(txn_commit_answers(&topics, code))
}

/// A TxnOffsetCommit answer of `code` for every partition of `topics`.
pub(crate) fn txn_commit_answers(
    topics: &[TxnOffsetCommitRequestTopic],
    code: i16,
) -> Vec<TxnOffsetCommitResponseTopic> {
    topics
        .iter()
        .map(|t| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect()
}

pub(crate) async fn describe_transactions(
    ctx: Rc<ShardCtx>,
    req: DescribeTransactionsRequest,
    _version: i16,
) -> DescribeTransactionsResponse {
    let mut states = Vec::with_capacity(req.transactional_ids.len());
    for id in req.transactional_ids {
        let name = id.0.to_string();
        states.push(
            match call(&ctx, &name, TxnCall::Describe { id: name.clone() }).await {
                TxnAnswer::Describe(d) => d,
                _ => DescribedTxn::default()
                    .with_transactional_id(id)
                    .with_error_code(NOT_COORDINATOR),
            },
        );
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

/// ListTransactions: every transaction coordinator on this broker, on every shard.
pub(crate) async fn list_transactions(
    ctx: Rc<ShardCtx>,
    req: ListTransactionsRequest,
    _version: i16,
) -> ListTransactionsResponse {
    let mut pending = Vec::with_capacity(ctx.shards);
    for s in 0..ctx.shards {
        let call_ = TxnCall::List { req: req.clone() };
        pending.push(
            ctx.submit(
                s,
                ShardRequest::Txn {
                    partition: -1,
                    call: Box::new(call_),
                },
            )
            .await,
        );
    }
    let mut out = ListTransactionsResponse::default();
    for p in pending {
        if let ShardResponse::Txn(TxnAnswer::List(lists)) = p.await {
            for l in lists {
                if l.error_code != 0 && out.error_code == 0 {
                    out.error_code = l.error_code;
                }
                out.unknown_state_filters.extend(l.unknown_state_filters);
                out.transaction_states.extend(l.transaction_states);
            }
        }
    }
    out.unknown_state_filters.sort();
    out.unknown_state_filters.dedup();
    out
}

pub(crate) async fn write_txn_markers(
    ctx: Rc<ShardCtx>,
    req: WriteTxnMarkersRequest,
    version: i16,
) -> WriteTxnMarkersResponse {
    crate::txn_markers::handle_write_txn_markers(ctx, req, version).await
}

/// DescribeProducers: the producer state of each partition this node leads.
pub(crate) async fn describe_producers(
    ctx: Rc<ShardCtx>,
    req: DescribeProducersRequest,
    _version: i16,
) -> DescribeProducersResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partition_indexes.len());
        for p in t.partition_indexes {
            let tp = Tp {
                topic: t.name.0.as_str().into(),
                partition: p,
            };
            let answer = match ctx.route(&tp.topic, p) {
                Ok(shard) => match ctx.call(shard, ShardRequest::Producers(tp)).await {
                    ShardResponse::Producers(r) => r,
                    _ => Err(ResponseError::NotLeaderOrFollower.code()),
                },
                Err(e) => Err(e.code()),
            };
            let mut pr = PartitionResponse::default().with_partition_index(p);
            match answer {
                Ok(list) => {
                    pr.active_producers = list
                        .into_iter()
                        .map(|s| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(s.producer_id))
                                .with_producer_epoch(i32::from(s.epoch))
                                .with_last_sequence(s.last_sequence)
                                .with_last_timestamp(s.last_timestamp)
                                .with_coordinator_epoch(s.coordinator_epoch)
                                .with_current_txn_start_offset(s.current_txn_start_offset)
                        })
                        .collect()
                }
                Err(code) => pr.error_code = code,
            }
            partitions.push(pr);
        }
        topics.push(
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DescribeProducersResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_producers_see_coordinator_not_available_while_the_group_loads() {
        let topics = [TxnOffsetCommitRequestTopic::default()
            .with_partitions(vec![Default::default(), Default::default()])];
        let codes = |r: &TxnOffsetCommitResponse| -> Vec<i16> {
            r.topics[0]
                .partitions
                .iter()
                .map(|p| p.error_code)
                .collect()
        };
        let loading = ResponseError::CoordinatorLoadInProgress.code();
        let mut answers = txn_commit_answers(&topics, loading);
        answers[0].partitions[1].error_code = ResponseError::InvalidProducerEpoch.code();
        let resp = TxnOffsetCommitResponse::default().with_topics(answers);
        for (version, first) in [
            (0, ResponseError::CoordinatorNotAvailable.code()),
            (1, ResponseError::CoordinatorNotAvailable.code()),
            (2, loading),
            (4, loading),
        ] {
            let mut r = resp.clone();
            for_old_producers(&mut r, version);
            let other = ResponseError::InvalidProducerEpoch.code();
            assert_eq!(codes(&r), vec![first, other], "v{version}");
        }
    }
}
