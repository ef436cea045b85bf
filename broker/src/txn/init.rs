//! InitProducerId with a transactional id (v0–v5; Kafka's handleInitProducerId and
//! prepareInitProducerIdTransit): a new id gets a fresh producer id at epoch 0; a known id
//! gets the next epoch (a new producer id once the epoch is exhausted, KIP-360); an id with
//! an Ongoing transaction is fenced first (epoch + 1, PrepareAbort, markers) and the client
//! is told CONCURRENT_TRANSACTIONS until the abort completes. InitProducerId without a
//! transactional id (plain idempotence) is the glue's: it needs no coordinator.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::coordinator::{code, for_version, AppendFuture, TransactionCoordinator};
use super::records::TxnState;
use super::state::{epoch_exhausted, TxnMetadata, NO_PRODUCER_EPOCH, NO_PRODUCER_ID};

/// What the synchronous part of InitProducerId decided.
enum Step {
    Answer(i16),
    Done(i64, i16),
    NeedProducerId,
    Write(TxnMetadata),
    Fence(TxnMetadata, AppendFuture),
}

impl TransactionCoordinator {
    /// Handles InitProducerId for a transactional id of this coordinator's partition.
    /// A request without a transactional id gets INVALID_REQUEST: the glue answers those
    /// itself.
    pub(crate) async fn init_producer_id(
        &self,
        req: &InitProducerIdRequest,
        version: i16,
    ) -> InitProducerIdResponse {
        let (error, pid, epoch) = match self.init_inner(req).await {
            Ok((pid, epoch)) => (0, pid, epoch),
            Err(e) => (e, NO_PRODUCER_ID, NO_PRODUCER_EPOCH),
        };
        InitProducerIdResponse::default()
            .with_error_code(for_version(error, version, 4))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
    }

    async fn init_inner(&self, req: &InitProducerIdRequest) -> Result<(i64, i16), i16> {
        let id = match &req.transactional_id {
            Some(id) if !id.0.is_empty() => id.0.as_str(),
            _ => return Err(code(ResponseError::InvalidRequest)),
        };
        let expected = match (req.producer_id.0, req.producer_epoch) {
            (NO_PRODUCER_ID, NO_PRODUCER_EPOCH) => None,
            (NO_PRODUCER_ID, _) | (_, NO_PRODUCER_EPOCH) => {
                return Err(code(ResponseError::InvalidRequest))
            }
            (pid, epoch) => Some((pid, epoch)),
        };
        let timeout = req.transaction_timeout_ms;
        if timeout <= 0 || timeout > self.config.max_timeout_ms {
            return Err(code(ResponseError::InvalidTransactionTimeout));
        }
        // A producer id allocated for this request (allocation awaits, so the decision is
        // taken again afterwards, on the state as it is then).
        let mut spare: Option<i64> = None;
        loop {
            if !self.is_active() {
                return Err(code(ResponseError::NotCoordinator));
            }
            match self.init_step(id, timeout, expected, &mut spare) {
                Step::Answer(e) => return Err(e),
                Step::Done(pid, epoch) => return Ok((pid, epoch)),
                Step::NeedProducerId => {
                    spare = Some(self.io.producer_ids.allocate().await?);
                }
                Step::Write(target) => {
                    let answer = (target.producer_id, target.producer_epoch);
                    self.write(id, target).await?;
                    tracing::info!(
                        transactional_id = id,
                        producer_id = answer.0,
                        producer_epoch = answer.1,
                        "initialized transactional id"
                    );
                    return Ok(answer);
                }
                Step::Fence(target, fut) => {
                    let result = fut.await;
                    self.finish_fence(id, target, result)?;
                    return Err(code(ResponseError::ConcurrentTransactions));
                }
            }
        }
    }

    fn init_step(
        &self,
        id: &str,
        timeout: i32,
        expected: Option<(i64, i16)>,
        spare: &mut Option<i64>,
    ) -> Step {
        let now = self.now();
        let mut txns = self.txns.borrow_mut();
        if !txns.contains_key(id) {
            match spare.take() {
                None => return Step::NeedProducerId,
                Some(pid) => {
                    txns.insert(id.to_owned(), TxnMetadata::new(pid, timeout, now));
                }
            }
        }
        let Some(md) = txns.get_mut(id) else {
            return Step::Answer(code(ResponseError::UnknownServerError));
        };
        if md.pending.is_some() {
            return Step::Answer(code(ResponseError::ConcurrentTransactions));
        }
        if let Some((pid, epoch)) = expected {
            // KIP-360: a new id (no epoch yet), the current producer id, or the previous one
            // retrying after an epoch exhaustion rotated it.
            let valid = md.producer_epoch == NO_PRODUCER_EPOCH
                || pid == md.producer_id
                || (pid == md.prev_producer_id && epoch_exhausted(epoch));
            if !valid {
                return Step::Answer(code(ResponseError::ProducerFenced));
            }
        }
        match md.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Step::Answer(code(ResponseError::ConcurrentTransactions))
            }
            TxnState::Ongoing => {
                let (target, fut) = self.begin_fence(id, md, now);
                Step::Fence(target, fut)
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let expected_epoch = expected.map(|(_, e)| e);
                if epoch_exhausted(md.producer_epoch) {
                    if expected_epoch.is_none_or(|e| e == md.producer_epoch) {
                        return match spare.take() {
                            None => Step::NeedProducerId,
                            Some(pid) => Step::Write(md.rotate_producer_id(
                                pid,
                                timeout,
                                expected.is_some(),
                                now,
                            )),
                        };
                    }
                    // Kafka would throw here; the only sane answers are a retry's or fenced.
                    return match expected_epoch {
                        Some(e) if e == md.last_producer_epoch => {
                            Step::Done(md.producer_id, md.producer_epoch)
                        }
                        _ => Step::Answer(code(ResponseError::ProducerFenced)),
                    };
                }
                match md.increment_epoch(timeout, expected_epoch, now) {
                    Ok(target) => Step::Write(target),
                    Err(()) => Step::Answer(code(ResponseError::ProducerFenced)),
                }
            }
            TxnState::Dead | TxnState::PrepareEpochFence => {
                tracing::error!(
                    transactional_id = id,
                    state = md.state.name(),
                    "transactional id in a state it can never be in"
                );
                Step::Answer(code(ResponseError::UnknownServerError))
            }
        }
    }
}
