//! DescribeTransactions and ListTransactions over this coordinator's transactional ids
//! (Kafka's handleDescribeTransactions and listTransactionStates). The glue asks every
//! coordinator of the broker for ListTransactions and concatenates the answers, and filters
//! both by the principal's DESCRIBE rights.

use kafka_protocol::messages::describe_transactions_response::{
    TopicData, TransactionState as DescribedTxn,
};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedTxn;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::coordinator::{code, TransactionCoordinator};
use super::records::TxnState;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

impl TransactionCoordinator {
    /// One DescribeTransactions entry.
    pub(crate) fn describe_transaction(&self, id: &str) -> DescribedTxn {
        let out = DescribedTxn::default().with_transactional_id(TransactionalId(s(id)));
        if id.is_empty() {
            return out.with_error_code(code(ResponseError::InvalidRequest));
        }
        if !self.is_active() {
            return out.with_error_code(code(ResponseError::NotCoordinator));
        }
        let txns = self.txns.borrow();
        let Some(md) = txns.get(id).filter(|m| m.state != TxnState::Dead) else {
            return out.with_error_code(code(ResponseError::TransactionalIdNotFound));
        };
        let mut topics: Vec<TopicData> = Vec::new();
        for (topic, partition) in &md.partitions {
            match topics.last_mut() {
                Some(t) if t.topic.0.as_str() == topic => t.partitions.push(*partition),
                _ => topics.push(
                    TopicData::default()
                        .with_topic(TopicName(s(topic)))
                        .with_partitions(vec![*partition]),
                ),
            }
        }
        out.with_error_code(0)
            .with_transaction_state(s(md.state.name()))
            .with_transaction_timeout_ms(md.timeout_ms)
            .with_transaction_start_time_ms(md.start_ms)
            .with_producer_id(ProducerId(md.producer_id))
            .with_producer_epoch(md.producer_epoch)
            .with_topics(topics)
    }

    /// ListTransactions: state filters (unknown names come back in
    /// `unknown_state_filters`), producer id filters, and (v1, KIP-994) the duration filter:
    /// only transactions running longer than `duration_filter` ms. v2's
    /// `transactional_id_pattern` (a Java regular expression) is not supported yet: a
    /// request with a non-empty pattern gets INVALID_REQUEST rather than an unfiltered list.
    pub(crate) fn list_transactions(
        &self,
        req: &ListTransactionsRequest,
    ) -> ListTransactionsResponse {
        let resp = ListTransactionsResponse::default();
        if req
            .transactional_id_pattern
            .as_ref()
            .is_some_and(|p| !p.is_empty())
        {
            return resp.with_error_code(code(ResponseError::InvalidRequest));
        }
        if !self.is_active() {
            return resp.with_error_code(code(ResponseError::NotCoordinator));
        }
        let mut states = Vec::new();
        let mut unknown = Vec::new();
        for name in &req.state_filters {
            match TxnState::from_name(name.as_str()) {
                Some(st) => states.push(st),
                None => unknown.push(name.clone()),
            }
        }
        let now = self.now();
        let txns = self.txns.borrow();
        let mut listed: Vec<ListedTxn> = txns
            .iter()
            .filter(|(_, md)| {
                md.state != TxnState::Dead
                    && (req.producer_id_filters.is_empty()
                        || req
                            .producer_id_filters
                            .contains(&ProducerId(md.producer_id)))
                    && (req.state_filters.is_empty() || states.contains(&md.state))
                    && (req.duration_filter < 0
                        || now.saturating_sub(md.start_ms) > req.duration_filter)
            })
            .map(|(id, md)| {
                ListedTxn::default()
                    .with_transactional_id(TransactionalId(s(id)))
                    .with_producer_id(ProducerId(md.producer_id))
                    .with_transaction_state(s(md.state.name()))
            })
            .collect();
        listed.sort_by(|a, b| a.transactional_id.0.cmp(&b.transactional_id.0));
        resp.with_error_code(0)
            .with_unknown_state_filters(unknown)
            .with_transaction_states(listed)
    }
}
