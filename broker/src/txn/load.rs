//! Rebuilding a coordinator from its `__transaction_state` partition: replay every record
//! in log order, the last value of an id wins, a tombstone deletes it (Kafka's
//! loadTransactionMetadata). Transactions left in Prepare* are completed by `start`.
//!
//! Undecodable records are logged and skipped (they cannot be Sluice's own), so one bad
//! record never makes a partition's transactions unavailable.

use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;

use super::coordinator::TransactionCoordinator;
use super::records::{decode_key, TxnLogValue, TxnState};
use super::state::TxnMetadata;
use super::{TxnConfig, TxnIo};

impl TransactionCoordinator {
    /// Rebuilds the coordinator of `__transaction_state` partition `partition`, led at
    /// `coordinator_epoch`, from its records (in offset order). Spawns nothing: the glue
    /// calls `start` next, inside the owning shard's executor.
    pub(crate) fn load(
        partition: i32,
        coordinator_epoch: i32,
        io: TxnIo,
        config: TxnConfig,
        replay: impl IntoIterator<Item = (Bytes, Option<Bytes>)>,
    ) -> Rc<TransactionCoordinator> {
        let mut txns: HashMap<String, TxnMetadata> = HashMap::new();
        let mut skipped = 0usize;
        for (key, value) in replay {
            let id = match decode_key(&key) {
                Ok(id) => id,
                Err(e) => {
                    skipped += 1;
                    tracing::warn!(partition, error = %e, "skipping undecodable __transaction_state key");
                    continue;
                }
            };
            let Some(value) = value else {
                txns.remove(&id);
                continue;
            };
            match TxnLogValue::decode(&value) {
                // Dead and PrepareEpochFence are never written; a record claiming one is
                // as unusable as a malformed one.
                Ok(v) if matches!(v.state, TxnState::Dead | TxnState::PrepareEpochFence) => {
                    skipped += 1;
                    tracing::warn!(partition, transactional_id = %id, state = v.state.name(), "skipping a record in a state that is never written");
                }
                Ok(v) => {
                    txns.insert(id, TxnMetadata::from_value(v));
                }
                Err(e) => {
                    skipped += 1;
                    tracing::warn!(partition, transactional_id = %id, error = %e, "skipping undecodable __transaction_state value");
                }
            }
        }
        let prepared = txns.values().filter(|m| m.state.is_prepare()).count();
        tracing::info!(
            partition,
            coordinator_epoch,
            transactional_ids = txns.len(),
            prepared,
            skipped,
            "transaction coordinator loaded"
        );
        TransactionCoordinator::with_state(partition, coordinator_epoch, io, config, txns)
    }
}
