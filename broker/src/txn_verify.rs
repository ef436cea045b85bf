//! KIP-890 part 1 (`transaction.partition.verification.enable`): before a partition
//! leader appends a transactional batch that would start its producer's transaction in
//! that partition, it asks the producer's transaction coordinator whether the partition
//! is in the producer's ongoing transaction. A produce request delayed past its
//! transaction's end (a retry held up in the network, a client timeout) then gets an
//! error instead of opening a transaction that no coordinator will ever end, which would
//! hold the partition's last stable offset, and every read_committed consumer, forever.
//!
//! ```text
//!  Produce (transactional id, transactional batches), on the connection's shard, before
//!  the next request of the connection is read (so appends keep its order):
//!   1. owner shards: StartTxnVerification ─► per partition: a transaction is under way
//!      here (nothing to ask) | a guard (the log's `start_txn_verification`) | an error
//!   2. the coordinator (this node: a shard call; another broker: AddPartitionsToTxn v4,
//!      verify_only) ─► per guarded partition: in the transaction, or an error
//!   3. submit the appends, each with its guard (`TxnVerification`): the log refuses the
//!      batch (INVALID_TXN_STATE) if the producer's marker or data came in between
//! ```
//! TxnOffsetCommit is verified the same way for its `__consumer_offsets` partition before
//! the group coordinator writes it. The coordinator's errors reach the client as Kafka
//! maps them (`produce_error`, `offset_commit_error`). Only the first batch of a
//! transaction in a partition costs the round trip.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, ProducerId, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_storage::TxnVerification;

use crate::errors::{code, now_ms, storage_error_code};
use crate::handlers::admin::name;
use crate::shard::ShardCtx;
use crate::shard_msg::{ShardRequest, ShardResponse, Tp};
use crate::txn::TRANSACTION_STATE_TOPIC;
use crate::txn_glue::{TxnAnswer, TxnCall};
use crate::txn_markers::{peer_call, remote_leader};

/// AddPartitionsToTxn version of the broker-to-coordinator call (v4: batched, with
/// verify_only; v5 would answer TRANSACTION_ABORTABLE, which this maps anyway).
const VERIFY_VERSION: i16 = 4;

/// The transactional batch of one partition of a produce request to verify: where its
/// answer goes (an index the caller chose), the partition, its owner shard, the batch's
/// first sequence (-1 for a coordinator's batch).
pub(crate) struct ToVerify {
    pub(crate) slot: usize,
    pub(crate) tp: Tp,
    pub(crate) shard: usize,
    pub(crate) base_sequence: i32,
}

/// Per partition of `parts` (by `slot`): the verification to append under, or the error
/// code that refused it (the owner shard's, or the coordinator's as Kafka's
/// AddPartitionsToTxnManager hands it on; callers map it for their answer:
/// `produce_error`, `offset_commit_error`). Bounded by `timeout` (the request's): past
/// it, the partitions get NETWORK_EXCEPTION, nothing appended.
pub(crate) async fn verify(
    ctx: &Rc<ShardCtx>,
    transactional_id: &str,
    (producer_id, producer_epoch): (i64, i16),
    parts: Vec<ToVerify>,
    timeout: Duration,
) -> HashMap<usize, Result<TxnVerification, i16>> {
    let slots: Vec<usize> = parts.iter().map(|p| p.slot).collect();
    let work = async {
        let started = start_on_shards(ctx, (producer_id, producer_epoch), &parts).await;
        let mut out = HashMap::with_capacity(parts.len());
        let mut ask = Vec::new();
        for (part, started) in parts.into_iter().zip(started) {
            match started {
                Ok(None) => {
                    out.insert(part.slot, Ok(TxnVerification::Guard(None)));
                }
                Ok(Some(guard)) => ask.push((part, guard)),
                Err(c) => {
                    out.insert(part.slot, Err(c));
                }
            }
        }
        if ask.is_empty() {
            return out;
        }
        let tps: Vec<&Tp> = ask.iter().map(|(p, _)| &p.tp).collect();
        let codes = ask_coordinator(ctx, transactional_id, producer_id, producer_epoch, &tps).await;
        for ((part, guard), c) in ask.into_iter().zip(codes) {
            let answer = match c {
                0 => Ok(TxnVerification::Guard(Some(guard))),
                c => Err(c),
            };
            out.insert(part.slot, answer);
        }
        out
    };
    let timed = crate::shard::within(timeout, std::time::Instant::now(), work).await;
    timed.unwrap_or_else(|| {
        tracing::debug!(transactional_id, "transaction verification timed out");
        let late = code(ResponseError::NetworkException);
        slots.into_iter().map(|s| (s, Err(late))).collect()
    })
}

/// Step 1: each owner shard's answer for its partitions, in `parts` order.
async fn start_on_shards(
    ctx: &Rc<ShardCtx>,
    producer: (i64, i16),
    parts: &[ToVerify],
) -> Vec<Result<Option<u64>, i16>> {
    let mut by_shard: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, p) in parts.iter().enumerate() {
        by_shard.entry(p.shard).or_default().push(i);
    }
    let mut pending = Vec::with_capacity(by_shard.len());
    for (shard, idx) in by_shard {
        let tps = idx
            .iter()
            .map(|&i| (parts[i].tp.clone(), parts[i].base_sequence))
            .collect();
        let req = ShardRequest::StartTxnVerification {
            producer,
            parts: tps,
        };
        pending.push((idx, ctx.submit(shard, req).await));
    }
    let mut out = vec![Err(code(ResponseError::NotLeaderOrFollower)); parts.len()];
    for (idx, fut) in pending {
        if let ShardResponse::TxnGuards(answers) = fut.await {
            for (i, a) in idx.into_iter().zip(answers) {
                out[i] = a;
            }
        }
    }
    out
}

/// A verification's refusal as a Produce answers it (Kafka's ReplicaManager): the
/// retriable coordinator errors, which older clients may not retry, become
/// NOT_ENOUGH_REPLICAS (retried without a metadata refresh).
pub(crate) fn produce_error(c: i16) -> (i16, String) {
    use ResponseError as E;
    let e = ResponseError::try_from_code(c);
    match e {
        Some(E::InvalidTxnState) => (
            c,
            "Partition was not added to the transaction".into(),
        ),
        Some(
            E::ConcurrentTransactions
            | E::NetworkException
            | E::CoordinatorLoadInProgress
            | E::CoordinatorNotAvailable
            | E::NotCoordinator,
        ) => (
            code(E::NotEnoughReplicas),
            format!(
                "Unable to verify the partition has been added to the transaction. Underlying error: {}",
                e.map_or_else(|| c.to_string(), |e| format!("{e:?}"))
            ),
        ),
        _ => (c, String::new()),
    }
}

/// A verification's refusal as a TxnOffsetCommit answers it (Kafka's
/// GroupMetadataManager.maybeConvertOffsetCommitError): no answer from the coordinator is
/// COORDINATOR_LOAD_IN_PROGRESS (retried without a coordinator lookup), the rest as a
/// failed offsets write (`groups::commit_error`).
pub(crate) fn offset_commit_error(c: i16) -> i16 {
    if c == code(ResponseError::NetworkException) {
        return code(ResponseError::CoordinatorLoadInProgress);
    }
    crate::groups::commit_error(c)
}

/// The coordinator's per-partition code as Kafka's AddPartitionsToTxnManager hands it on:
/// PRODUCER_FENCED as INVALID_PRODUCER_EPOCH, TRANSACTION_ABORTABLE (v5 coordinators) as
/// INVALID_TXN_STATE.
fn from_coordinator(c: i16) -> i16 {
    match ResponseError::try_from_code(c) {
        Some(ResponseError::ProducerFenced) => code(ResponseError::InvalidProducerEpoch),
        Some(ResponseError::TransactionAbortable) => code(ResponseError::InvalidTxnState),
        _ => c,
    }
}

/// Step 2: asks the coordinator of `transactional_id` (here or on another broker) whether
/// each of `tps` is in the producer's ongoing transaction; an error code per partition.
async fn ask_coordinator(
    ctx: &Rc<ShardCtx>,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    tps: &[&Tp],
) -> Vec<i16> {
    let all = |e: ResponseError| vec![e.code(); tps.len()];
    let partitions = ctx
        .image
        .borrow()
        .topic(TRANSACTION_STATE_TOPIC)
        .map(|t| t.partitions);
    let Some(partitions) = partitions else {
        return all(ResponseError::CoordinatorNotAvailable);
    };
    let partition = crate::groups::coordinator_partition(transactional_id, partitions);
    let txn = AddPartitionsToTxnTransaction::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(
            transactional_id.to_string(),
        )))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(producer_epoch)
        .with_verify_only(true)
        .with_topics(topics_of(tps));
    let results = match remote_leader(ctx, TRANSACTION_STATE_TOPIC, partition) {
        Err(_) => return all(ResponseError::CoordinatorNotAvailable),
        Ok(None) => {
            let call = TxnCall::AddPartitionsFor {
                txn,
                version: VERIFY_VERSION,
            };
            match crate::txn_glue::call(ctx, transactional_id, call).await {
                TxnAnswer::AddPartitionsFor(r) => r,
                _ => return all(ResponseError::NotCoordinator),
            }
        }
        Ok(Some((node, addr))) => {
            let req = AddPartitionsToTxnRequest::default().with_transactions(vec![txn]);
            let call = || {
                peer_call(
                    ctx,
                    (node, &addr),
                    "sluice-txn-verify",
                    PEER_TIMEOUT,
                    VERIFY_VERSION,
                    &req,
                )
            };
            // once more on a fresh connection: the pooled one may have been closed by the
            // peer while idle (the call only reads, so asking twice is harmless)
            let resp = match call().await {
                Ok(r) => Ok(r),
                Err(_) => call().await,
            };
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(node, %addr, error = %e, "transaction verification: no answer from the coordinator");
                    return all(ResponseError::NetworkException);
                }
            };
            if resp.error_code != 0 {
                // the client is not told of the brokers' own authorization
                if resp.error_code == ResponseError::ClusterAuthorizationFailed.code() {
                    return all(ResponseError::InvalidTxnState);
                }
                return vec![resp.error_code; tps.len()];
            }
            match resp
                .results_by_transaction
                .into_iter()
                .find(|r| r.transactional_id.0.as_str() == transactional_id)
            {
                Some(r) => r,
                None => return all(ResponseError::UnknownServerError),
            }
        }
    };
    let mut by_tp: HashMap<(&str, i32), i16> = HashMap::new();
    for t in &results.topic_results {
        for p in &t.results_by_partition {
            by_tp.insert(
                (t.name.0.as_str(), p.partition_index),
                p.partition_error_code,
            );
        }
    }
    tps.iter()
        .map(|tp| {
            by_tp
                .get(&(&*tp.topic, tp.partition))
                .map_or(code(ResponseError::UnknownServerError), |&c| {
                    from_coordinator(c)
                })
        })
        .collect()
}

/// Bound on one verification exchange with another broker.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);

fn topics_of(tps: &[&Tp]) -> Vec<AddPartitionsToTxnTopic> {
    let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
    for tp in tps {
        match topics.last_mut() {
            Some(t) if t.name.0.as_str() == &*tp.topic => t.partitions.push(tp.partition),
            _ => topics.push(
                AddPartitionsToTxnTopic::default()
                    .with_name(name(&tp.topic))
                    .with_partitions(vec![tp.partition]),
            ),
        }
    }
    topics
}

impl ShardCtx {
    /// Owner shard's part of step 1 (`ShardRequest::StartTxnVerification`), per
    /// partition: only a leader verifies; the producer state is built first (async reads).
    pub(crate) async fn start_txn_verifications(
        self: &Rc<Self>,
        (producer_id, producer_epoch): (i64, i16),
        parts: Vec<(Tp, i32)>,
    ) -> Vec<Result<Option<u64>, i16>> {
        let mut out = Vec::with_capacity(parts.len());
        for (tp, seq) in parts {
            let Some(log) = self.log(&tp.topic, tp.partition) else {
                out.push(Err(self.no_log_error(&tp.topic, tp.partition)));
                continue;
            };
            if self.leader_epoch_here(&tp.topic, tp.partition).is_none() {
                out.push(Err(code(ResponseError::NotLeaderOrFollower)));
                continue;
            }
            if let Err(e) = log.load_producer_state().await {
                out.push(Err(storage_error_code(&e)));
                continue;
            }
            out.push(
                log.start_txn_verification(producer_id, (producer_epoch, seq), now_ms())
                    .map_err(|e| storage_error_code(&e)),
            );
        }
        out
    }
}
