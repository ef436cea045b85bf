//! EndTxn (v0–v4; Kafka's handleEndTransaction for transaction versions 0 and 1): write
//! PrepareCommit/PrepareAbort, answer the client, then markers and Complete* in the
//! background (`coordinator::complete_transaction`). A retry of a decision already taken
//! succeeds (or gets CONCURRENT_TRANSACTIONS while its markers are still going out); the
//! opposite decision gets INVALID_TXN_STATE.
//!
//! Not yet: EndTxn v5 (KIP-890 part 2, an epoch bump on every transaction) needs the
//! `transaction.version` 2 feature, which Sluice does not finalize; the glue advertises
//! EndTxn up to v4, and a v5 request is handled with version 0/1 semantics.

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::coordinator::{code, for_version, TransactionCoordinator};
use super::records::TxnState;
use super::state::{NO_PRODUCER_EPOCH, NO_PRODUCER_ID};

impl TransactionCoordinator {
    /// Handles EndTxn; the answer carries the producer id and epoch (only v5 encodes them).
    pub(crate) async fn end_txn(&self, req: &EndTxnRequest, version: i16) -> EndTxnResponse {
        let (error, pid, epoch) = match self
            .end_transaction(
                req.transactional_id.0.as_str(),
                req.producer_id.0,
                req.producer_epoch,
                req.committed,
            )
            .await
        {
            Ok((pid, epoch)) => (0, pid, epoch),
            Err(e) => (e, NO_PRODUCER_ID, NO_PRODUCER_EPOCH),
        };
        EndTxnResponse::default()
            .with_error_code(for_version(error, version, 2))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
    }

    /// Commits or aborts the client's transaction; Ok((producer id, epoch)) once the
    /// Prepare* record is replicated (or at once for a retry of a completed decision).
    pub(crate) async fn end_transaction(
        &self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<(i64, i16), i16> {
        if id.is_empty() {
            return Err(code(ResponseError::InvalidRequest));
        }
        if !self.is_active() {
            return Err(code(ResponseError::NotCoordinator));
        }
        let invalid = || {
            tracing::debug!(
                transactional_id = id,
                commit,
                "EndTxn does not match the transaction's state"
            );
            Err(code(ResponseError::InvalidTxnState))
        };
        let target = {
            let txns = self.txns.borrow();
            let Some(md) = txns.get(id) else {
                return Err(code(ResponseError::InvalidProducerIdMapping));
            };
            if md.producer_id != producer_id {
                return Err(code(ResponseError::InvalidProducerIdMapping));
            }
            if md.producer_epoch != producer_epoch {
                return Err(code(ResponseError::ProducerFenced));
            }
            if md.pending.is_some() {
                return Err(code(ResponseError::ConcurrentTransactions));
            }
            match (md.state, commit) {
                (TxnState::Ongoing, _) => md.prepare_end(commit, self.now()),
                (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                    return Ok((md.producer_id, md.producer_epoch));
                }
                (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                    return Err(code(ResponseError::ConcurrentTransactions));
                }
                _ => return invalid(),
            }
        };
        let answer = (target.producer_id, target.producer_epoch);
        let partitions = target.partitions.len();
        self.write(id, target).await?;
        tracing::debug!(
            transactional_id = id,
            commit,
            partitions,
            "transaction prepared; sending markers"
        );
        self.spawn_completion(id.to_owned(), commit);
        Ok(answer)
    }
}
