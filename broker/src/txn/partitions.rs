//! AddPartitionsToTxn (v0–v3 from clients, one transaction; v4+ from brokers, batched, with
//! KIP-890's `verify_only`) and AddOffsetsToTxn (the group's `__consumer_offsets`
//! partition joins the transaction). Kafka's handleAddPartitionsToTransaction and
//! handleVerifyPartitionsInTransaction.
//!
//! Topic authorization and existence are the glue's checks, made before the coordinator is
//! asked (Kafka's KafkaApis does them, answering OPERATION_NOT_ATTEMPTED for the rest).

use std::collections::BTreeSet;

use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::coordinator::{code, for_version, TransactionCoordinator};
use super::records::TxnState;
use crate::groups::{coordinator_partition, OFFSETS_TOPIC};

type Partitions = BTreeSet<(String, i32)>;

fn partition_set(topics: &[AddPartitionsToTxnTopic]) -> Partitions {
    topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
        .collect()
}

/// Per-topic results with one code per partition, in topic order.
fn topic_results(
    codes: impl IntoIterator<Item = ((String, i32), i16)>,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut out: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    let mut sorted: Vec<((String, i32), i16)> = codes.into_iter().collect();
    sorted.sort();
    for ((topic, partition), error) in sorted {
        let result = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(partition)
            .with_partition_error_code(error);
        match out.last_mut() {
            Some(t) if t.name.0.as_str() == topic => t.results_by_partition.push(result),
            _ => out.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_results_by_partition(vec![result]),
            ),
        }
    }
    out
}

impl TransactionCoordinator {
    /// AddPartitionsToTxn. v0–v3: the request's one transaction. v4+: every transaction
    /// in the request, all of which the glue routed to this coordinator (it splits a
    /// broker's batch by coordinator and concatenates `results_by_transaction`; see
    /// `add_partitions_for_transaction`).
    pub(crate) async fn add_partitions_to_txn(
        &self,
        req: &AddPartitionsToTxnRequest,
        version: i16,
    ) -> AddPartitionsToTxnResponse {
        if version < 4 {
            let partitions = partition_set(&req.v3_and_below_topics);
            let error = self
                .add_partitions(
                    req.v3_and_below_transactional_id.0.as_str(),
                    req.v3_and_below_producer_id.0,
                    req.v3_and_below_producer_epoch,
                    &partitions,
                )
                .await;
            let error = for_version(error, version, 2);
            return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(
                topic_results(partitions.into_iter().map(|p| (p, error))),
            );
        }
        let mut results = Vec::with_capacity(req.transactions.len());
        for txn in &req.transactions {
            results.push(self.add_partitions_for_transaction(txn, version).await);
        }
        AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
    }

    /// One transaction of a v4+ AddPartitionsToTxn: verify-only (KIP-890: is each partition
    /// already in this producer's ongoing transaction?) or add.
    pub(crate) async fn add_partitions_for_transaction(
        &self,
        txn: &AddPartitionsToTxnTransaction,
        version: i16,
    ) -> AddPartitionsToTxnResult {
        let id = txn.transactional_id.0.as_str();
        let partitions = partition_set(&txn.topics);
        let codes: Vec<((String, i32), i16)> = if txn.verify_only {
            self.verify_partitions(
                id,
                txn.producer_id.0,
                txn.producer_epoch,
                &partitions,
                version,
            )
        } else {
            let error = self
                .add_partitions(id, txn.producer_id.0, txn.producer_epoch, &partitions)
                .await;
            partitions.into_iter().map(|p| (p, error)).collect()
        };
        AddPartitionsToTxnResult::default()
            .with_transactional_id(txn.transactional_id.clone())
            .with_topic_results(topic_results(codes))
    }

    /// AddOffsetsToTxn: adds `__consumer_offsets`-(the group's partition) to the
    /// transaction. `offsets_partitions` is the offsets topic's partition count.
    pub(crate) async fn add_offsets_to_txn(
        &self,
        req: &AddOffsetsToTxnRequest,
        version: i16,
        offsets_partitions: i32,
    ) -> AddOffsetsToTxnResponse {
        let partition = coordinator_partition(req.group_id.0.as_str(), offsets_partitions);
        let partitions: Partitions = [(OFFSETS_TOPIC.to_owned(), partition)]
            .into_iter()
            .collect();
        let error = self
            .add_partitions(
                req.transactional_id.0.as_str(),
                req.producer_id.0,
                req.producer_epoch,
                &partitions,
            )
            .await;
        AddOffsetsToTxnResponse::default().with_error_code(for_version(error, version, 2))
    }

    /// Adds `partitions` to the transaction of `id` (Kafka's
    /// handleAddPartitionsToTransaction); returns the error code (0 once the new set is
    /// replicated, or at once when nothing is new).
    pub(crate) async fn add_partitions(
        &self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &Partitions,
    ) -> i16 {
        if id.is_empty() {
            return code(ResponseError::InvalidRequest);
        }
        if !self.is_active() {
            return code(ResponseError::NotCoordinator);
        }
        self.wait_settled(id).await;
        let target = {
            let txns = self.txns.borrow();
            let Some(md) = txns.get(id) else {
                return code(ResponseError::InvalidProducerIdMapping);
            };
            if md.producer_id != producer_id {
                return code(ResponseError::InvalidProducerIdMapping);
            }
            if md.producer_epoch != producer_epoch {
                return code(ResponseError::ProducerFenced);
            }
            if md.pending.is_some() || md.state.is_prepare() {
                return code(ResponseError::ConcurrentTransactions);
            }
            if md.state == TxnState::Ongoing && partitions.is_subset(&md.partitions) {
                return 0;
            }
            md.add_partitions(partitions, self.now())
        };
        match self.write(id, target).await {
            Ok(()) => 0,
            Err(e) => e,
        }
    }

    /// Waits (at most `concurrent_wait_ms`) while `id` has a write pending or a transaction
    /// being completed, so that a client starting its next transaction right after a
    /// commit is answered when the markers are done rather than with
    /// CONCURRENT_TRANSACTIONS and a retry.
    async fn wait_settled(&self, id: &str) {
        let wait = std::time::Duration::from_millis(self.config.concurrent_wait_ms);
        let deadline = std::time::Instant::now() + wait;
        loop {
            let busy = self
                .txns
                .borrow()
                .get(id)
                .is_some_and(|md| md.pending.is_some() || md.state.is_prepare());
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !busy || left.is_zero() || !self.is_active() {
                return;
            }
            futures_lite::future::or(self.settled.wait(), glommio::timer::sleep(left)).await;
        }
    }

    /// KIP-890 verification: per partition, 0 if it is in the ongoing transaction of
    /// `producer_id`/`producer_epoch`, else TRANSACTION_ABORTABLE (v5+) or
    /// INVALID_TXN_STATE (v4); one code for all when the producer does not match.
    pub(crate) fn verify_partitions(
        &self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &Partitions,
        version: i16,
    ) -> Vec<((String, i32), i16)> {
        let all = |e: ResponseError| partitions.iter().map(|p| (p.clone(), code(e))).collect();
        if id.is_empty() {
            return all(ResponseError::InvalidRequest);
        }
        if !self.is_active() {
            return all(ResponseError::NotCoordinator);
        }
        let txns = self.txns.borrow();
        let Some(md) = txns.get(id) else {
            return all(ResponseError::InvalidProducerIdMapping);
        };
        if md.producer_id != producer_id {
            return all(ResponseError::InvalidProducerIdMapping);
        }
        if md.producer_epoch != producer_epoch {
            return all(ResponseError::ProducerFenced);
        }
        if md.state.is_prepare() {
            return all(ResponseError::ConcurrentTransactions);
        }
        let missing = if version >= 5 {
            code(ResponseError::TransactionAbortable)
        } else {
            code(ResponseError::InvalidTxnState)
        };
        partitions
            .iter()
            .map(|p| {
                let c = if md.partitions.contains(p) {
                    0
                } else {
                    missing
                };
                (p.clone(), c)
            })
            .collect()
    }
}
