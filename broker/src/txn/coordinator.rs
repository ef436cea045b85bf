//! The `TransactionCoordinator` and what every request path shares: the write of one id's
//! record (pending state, then apply or roll back), the marker-and-complete task of a
//! transaction in Prepare*, the epoch fence, and the timers (timed-out transactions,
//! expired transactional ids).
//!
//! Background work runs as detached glommio tasks holding a `Weak` to the coordinator;
//! each re-checks `active` and the id's state after every await, so unloading stops it.
//! Every helper that touches the map is synchronous; none holds a borrow across an await.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::records::{encode_key, TxnState, WRITTEN_VALUE_VERSION};
use super::state::TxnMetadata;
use super::{MarkerRequest, TxnConfig, TxnIo, TxnLogError};

pub(super) type AppendFuture = Pin<Box<dyn Future<Output = Result<(), TxnLogError>>>>;

pub(super) fn code(e: ResponseError) -> i16 {
    e.code()
}

/// Kafka answers clients older than the PRODUCER_FENCED code with INVALID_PRODUCER_EPOCH.
pub(super) fn for_version(error: i16, version: i16, fenced_since: i16) -> i16 {
    if error == code(ResponseError::ProducerFenced) && version < fenced_since {
        code(ResponseError::InvalidProducerEpoch)
    } else {
        error
    }
}

/// The transaction coordinator of one `__transaction_state` partition at one leader epoch;
/// owned by the shard that owns that partition; never crosses cores (`Rc`, `RefCell`).
/// Built by `load`, started (once) by `start` inside that shard's glommio executor,
/// stopped by `unload` (or by a `TxnLogError::NotLeader`); a later leadership builds a new
/// one.
///
/// What the glue does around it: route a transactional id to partition
/// `crate::groups::coordinator_partition(id, <__transaction_state partitions>)` (Kafka's
/// `partitionFor`, the same hash as groups) and answer NOT_COORDINATOR where no active
/// coordinator is; answer InitProducerId without a transactional id itself; check topic
/// authorization and existence before AddPartitionsToTxn (OPERATION_NOT_ATTEMPTED for the
/// rest, as KafkaApis does); advertise EndTxn up to v4 and ListTransactions up to v1.
pub(crate) struct TransactionCoordinator {
    /// The `__transaction_state` partition (for logs).
    pub(super) partition: i32,
    /// The partition's leader epoch this coordinator was loaded at; sent with every marker.
    pub(super) coordinator_epoch: i32,
    pub(super) io: TxnIo,
    pub(super) config: TxnConfig,
    pub(super) txns: RefCell<HashMap<String, TxnMetadata>>,
    /// Notified whenever a write of an id's state ends (and at unload): a request waiting
    /// for a transaction to complete looks again.
    pub(super) settled: sluice_storage::Signal,
    active: Cell<bool>,
    pub(super) this: Weak<TransactionCoordinator>,
}

impl TransactionCoordinator {
    pub(super) fn with_state(
        partition: i32,
        coordinator_epoch: i32,
        io: TxnIo,
        config: TxnConfig,
        txns: HashMap<String, TxnMetadata>,
    ) -> Rc<TransactionCoordinator> {
        Rc::new_cyclic(|this| TransactionCoordinator {
            partition,
            coordinator_epoch,
            io,
            config,
            txns: RefCell::new(txns),
            settled: sluice_storage::Signal::default(),
            active: Cell::new(true),
            this: this.clone(),
        })
    }

    /// False once unloaded or once a write found the partition led elsewhere.
    pub(crate) fn is_active(&self) -> bool {
        self.active.get()
    }

    /// Stops the coordinator: every request answers NOT_COORDINATOR from now on, and marker
    /// sending, Complete* writes and timers stop at their next step. The glue calls this
    /// when the shard stops leading the partition (at this epoch).
    pub(crate) fn unload(&self) {
        self.settled.notify();
        if self.active.replace(false) {
            tracing::info!(
                partition = self.partition,
                coordinator_epoch = self.coordinator_epoch,
                "transaction coordinator unloaded"
            );
        }
    }

    pub(super) fn now(&self) -> i64 {
        self.io.clock.now_ms()
    }

    /// Begins writing `target` as `id`'s record: marks `md` pending and appends (in call
    /// order). The caller holds the map borrow; the returned future does not.
    pub(super) fn begin_write(
        &self,
        id: &str,
        md: &mut TxnMetadata,
        target: &TxnMetadata,
    ) -> AppendFuture {
        md.pending = Some(target.state);
        let value = target.to_value().encode(WRITTEN_VALUE_VERSION);
        self.io.log.append(vec![(encode_key(id), Some(value))])
    }

    /// Ends a write begun by `begin_write`: on success the target becomes the state; on
    /// failure the pending state is dropped (Kafka's appendTransactionToLog callback).
    /// Returns the error code to answer with.
    pub(super) fn finish_write(
        &self,
        id: &str,
        target: TxnMetadata,
        result: Result<(), TxnLogError>,
    ) -> Result<(), i16> {
        self.settled.notify();
        if !self.active.get() {
            return Err(code(ResponseError::NotCoordinator));
        }
        let mut txns = self.txns.borrow_mut();
        match result {
            Ok(()) => match txns.get_mut(id) {
                Some(md) if md.pending == Some(target.state) => {
                    tracing::debug!(
                        transactional_id = id,
                        from = md.state.name(),
                        to = target.state.name(),
                        producer_id = target.producer_id,
                        producer_epoch = target.producer_epoch,
                        "transaction state written"
                    );
                    *md = target;
                    Ok(())
                }
                _ => Err(code(ResponseError::NotCoordinator)),
            },
            Err(TxnLogError::NotLeader(msg)) => {
                drop(txns);
                tracing::warn!(partition = self.partition, error = %msg, "__transaction_state write refused; unloading");
                self.unload();
                Err(code(ResponseError::NotCoordinator))
            }
            Err(TxnLogError::Unavailable(msg)) => {
                tracing::info!(transactional_id = id, error = %msg, to = target.state.name(), "__transaction_state write failed");
                if let Some(md) = txns.get_mut(id) {
                    md.pending = None;
                }
                Err(code(ResponseError::CoordinatorNotAvailable))
            }
        }
    }

    /// Writes `target` for `id` (which the caller found without a pending state) and waits.
    pub(super) async fn write(&self, id: &str, target: TxnMetadata) -> Result<(), i16> {
        let fut = {
            let mut txns = self.txns.borrow_mut();
            let Some(md) = txns.get_mut(id) else {
                return Err(code(ResponseError::NotCoordinator));
            };
            self.begin_write(id, md, &target)
        };
        let result = fut.await;
        self.finish_write(id, target, result)
    }

    /// Begins an epoch fence of an Ongoing transaction with nothing pending (Kafka's
    /// prepareFenceProducerEpoch + endTransaction(ABORT, isFromClient = false)): the epoch
    /// is bumped in memory at once, so the old producer is fenced from now on, and
    /// PrepareAbort is written at the bumped epoch.
    pub(super) fn begin_fence(
        &self,
        id: &str,
        md: &mut TxnMetadata,
        now: i64,
    ) -> (TxnMetadata, AppendFuture) {
        let bumped = md.fenced_epoch();
        tracing::info!(
            transactional_id = id,
            producer_id = md.producer_id,
            from_epoch = md.producer_epoch,
            to_epoch = bumped,
            "fencing producer epoch and aborting the ongoing transaction"
        );
        md.producer_epoch = bumped;
        md.last_producer_epoch = super::state::NO_PRODUCER_EPOCH;
        let target = md.prepare_end(false, now);
        let fut = self.begin_write(id, md, &target);
        (target, fut)
    }

    /// Ends an epoch fence: on success the abort's markers go out; on failure the next
    /// fence reuses the bumped epoch.
    pub(super) fn finish_fence(
        &self,
        id: &str,
        target: TxnMetadata,
        result: Result<(), TxnLogError>,
    ) -> Result<(), i16> {
        self.settled.notify();
        let r = self.finish_write(id, target, result);
        match r {
            Ok(()) => self.spawn_completion(id.to_owned(), false),
            Err(_) if self.active.get() => {
                if let Some(md) = self.txns.borrow_mut().get_mut(id) {
                    md.failed_epoch_fence = true;
                }
            }
            Err(_) => {}
        }
        r
    }

    /// Sends the markers of `id`'s transaction in Prepare{Commit,Abort} (`commit`), then
    /// writes Complete*, on a detached task.
    pub(super) fn spawn_completion(&self, id: String, commit: bool) {
        let weak = self.this.clone();
        spawn_detached(complete_transaction(weak, id, commit));
    }

    /// Starts the work a freshly loaded coordinator owes: transactions found in Prepare*
    /// get their markers re-sent and their Complete* written (Kafka's load callback), and
    /// the two timers start (timed-out transactions, expired transactional ids). Must run
    /// inside the owning shard's glommio executor.
    pub(crate) fn start(&self) {
        self.complete_prepared();
        let weak = self.this.clone();
        let every = Duration::from_millis(self.config.abort_timed_out_interval_ms.max(1));
        spawn_detached(async move {
            loop {
                glommio::timer::sleep(every).await;
                let Some(c) = weak.upgrade() else { return };
                if !c.is_active() {
                    return;
                }
                let now = c.now();
                c.abort_timed_out_transactions(now).await;
            }
        });
        let weak = self.this.clone();
        let every = Duration::from_millis(self.config.remove_expired_interval_ms.max(1));
        spawn_detached(async move {
            loop {
                glommio::timer::sleep(every).await;
                let Some(c) = weak.upgrade() else { return };
                if !c.is_active() {
                    return;
                }
                let now = c.now();
                c.expire_transactional_ids(now).await;
            }
        });
    }

    /// Spawns the completion of every transaction in Prepare* (after a load).
    pub(crate) fn complete_prepared(&self) {
        let prepared: Vec<(String, bool)> = self
            .txns
            .borrow()
            .iter()
            .filter(|(_, md)| md.state.is_prepare() && md.pending.is_none())
            .map(|(id, md)| (id.clone(), md.state == TxnState::PrepareCommit))
            .collect();
        for (id, commit) in prepared {
            tracing::info!(transactional_id = %id, commit, "completing a transaction found prepared at load");
            self.spawn_completion(id, commit);
        }
    }

    /// Aborts, with an epoch bump, every Ongoing transaction older than its timeout at
    /// `now` (Kafka's abortTimedOutTransactions). The glue's timer (`start`) calls this
    /// every `transaction.abort.timed.out.transaction.cleanup.interval.ms`; resolves when
    /// the PrepareAbort records are written (markers follow in the background).
    pub(crate) async fn abort_timed_out_transactions(&self, now: i64) {
        if !self.is_active() {
            return;
        }
        let writes: Vec<(String, TxnMetadata, AppendFuture)> = {
            let mut txns = self.txns.borrow_mut();
            let mut writes = Vec::new();
            for (id, md) in txns.iter_mut() {
                if md.state == TxnState::Ongoing
                    && md.pending.is_none()
                    && md.start_ms.saturating_add(i64::from(md.timeout_ms)) < now
                {
                    let (target, fut) = self.begin_fence(id, md, now);
                    writes.push((id.clone(), target, fut));
                }
            }
            writes
        };
        for (id, target, fut) in writes {
            let result = fut.await;
            if let Err(e) = self.finish_fence(&id, target, result) {
                tracing::warn!(transactional_id = %id, error = e, "abort of a timed-out transaction failed");
            }
        }
    }

    /// Deletes every transactional id idle for `transactional.id.expiration.ms` in Empty or
    /// Complete* (Kafka's removeExpiredTransactionalIds): one batch of tombstones, then the
    /// ids leave the map. The glue's timer (`start`) calls this every
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`.
    pub(crate) async fn expire_transactional_ids(&self, now: i64) {
        if !self.is_active() {
            return;
        }
        let (expired, fut) = {
            let mut txns = self.txns.borrow_mut();
            let mut expired = Vec::new();
            for (id, md) in txns.iter_mut() {
                if md.pending.is_none()
                    && md.state.expiration_allowed()
                    && md.last_update_ms <= now.saturating_sub(self.config.id_expiration_ms)
                {
                    md.pending = Some(TxnState::Dead);
                    expired.push((id.clone(), md.producer_id, md.producer_epoch));
                }
            }
            if expired.is_empty() {
                return;
            }
            let records: Vec<(Bytes, Option<Bytes>)> = expired
                .iter()
                .map(|(id, _, _)| (encode_key(id), None))
                .collect();
            (expired, self.io.log.append(records))
        };
        let result = fut.await;
        if let Err(TxnLogError::NotLeader(msg)) = &result {
            tracing::warn!(partition = self.partition, error = %msg, "__transaction_state write refused; unloading");
            self.unload();
        }
        let mut txns = self.txns.borrow_mut();
        for (id, pid, epoch) in expired {
            let Some(md) = txns.get_mut(&id) else {
                continue;
            };
            let same = md.pending == Some(TxnState::Dead)
                && md.producer_id == pid
                && md.producer_epoch == epoch;
            if result.is_ok() && same && self.is_active() {
                tracing::info!(transactional_id = %id, "transactional id expired");
                txns.remove(&id);
            } else if md.pending == Some(TxnState::Dead) {
                md.pending = None;
            }
        }
    }
}

/// Marker codes after which a partition needs no marker (Kafka drops it).
fn marker_dropped(c: i16) -> bool {
    c == code(ResponseError::UnknownTopicOrPartition)
        || c == code(ResponseError::UnsupportedVersion)
        || c == code(ResponseError::UnsupportedForMessageFormat)
}

/// Marker codes after which this transaction's markers are abandoned.
fn marker_abandoned(c: i16) -> bool {
    c == code(ResponseError::InvalidProducerEpoch)
        || c == code(ResponseError::TransactionCoordinatorFenced)
}

/// Is `id` still in the Prepare state `commit` names, with nothing pending, on an active
/// coordinator?
fn still_prepared(c: &TransactionCoordinator, id: &str, commit: bool) -> bool {
    let want = if commit {
        TxnState::PrepareCommit
    } else {
        TxnState::PrepareAbort
    };
    c.is_active()
        && c.txns
            .borrow()
            .get(id)
            .is_some_and(|md| md.state == want && md.pending.is_none())
}

/// Kafka's marker channel for one transaction: send markers for the partitions still
/// without one, drop the ones Kafka drops, retry the rest after the backoff; then write
/// Complete*, retrying while the log is unavailable.
async fn complete_transaction(weak: Weak<TransactionCoordinator>, id: String, commit: bool) {
    let mut backoff;
    loop {
        let (request, fut) = {
            let Some(c) = weak.upgrade() else { return };
            if !still_prepared(&c, &id, commit) {
                return;
            }
            backoff = Duration::from_millis(c.config.marker_retry_backoff_ms);
            let txns = c.txns.borrow();
            let Some(md) = txns.get(&id) else { return };
            if md.partitions.is_empty() {
                break;
            }
            let request = MarkerRequest {
                producer_id: md.producer_id,
                producer_epoch: md.producer_epoch,
                commit,
                coordinator_epoch: c.coordinator_epoch,
                partitions: md.partitions.iter().cloned().collect(),
            };
            let fut = c.io.markers.write_markers(request.clone());
            (request, fut)
        };
        let results = fut.await;
        let Some(c) = weak.upgrade() else { return };
        if !still_prepared(&c, &id, commit) {
            return;
        }
        let remaining = {
            let mut txns = c.txns.borrow_mut();
            let Some(md) = txns.get_mut(&id) else { return };
            if md.producer_id != request.producer_id || md.producer_epoch != request.producer_epoch
            {
                return;
            }
            for (topic, partition, error) in results {
                let key = (topic, partition);
                if !md.partitions.contains(&key) {
                    continue;
                }
                if error == 0 {
                    md.partitions.remove(&key);
                } else if marker_dropped(error) {
                    tracing::info!(transactional_id = %id, topic = %key.0, partition = key.1, error, "marker not needed; dropping the partition");
                    md.partitions.remove(&key);
                } else if marker_abandoned(error) {
                    tracing::warn!(transactional_id = %id, topic = %key.0, partition = key.1, error, "marker permanently refused; no more markers for this transaction");
                    return;
                } else {
                    tracing::debug!(transactional_id = %id, topic = %key.0, partition = key.1, error, "marker failed; retrying");
                }
            }
            md.partitions.len()
        };
        if remaining > 0 {
            drop(c);
            glommio::timer::sleep(backoff).await;
        }
    }
    loop {
        let (target, fut) = {
            let Some(c) = weak.upgrade() else { return };
            if !still_prepared(&c, &id, commit) {
                return;
            }
            let now = c.now();
            let mut txns = c.txns.borrow_mut();
            let Some(md) = txns.get_mut(&id) else { return };
            let target = md.complete(now);
            let fut = c.begin_write(&id, md, &target);
            (target, fut)
        };
        let result = fut.await;
        let Some(c) = weak.upgrade() else { return };
        match c.finish_write(&id, target, result) {
            Ok(()) => return,
            Err(e) if e == code(ResponseError::CoordinatorNotAvailable) => {
                drop(c);
                glommio::timer::sleep(backoff).await;
            }
            Err(_) => return,
        }
    }
}

/// Runs `fut` as a detached local task. glommio may poll a new task right away, inside the
/// caller's state borrow, so the task yields before anything else (as the group
/// coordinator's helper of the same name does).
pub(super) fn spawn_detached(fut: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(async move {
        futures_lite::future::yield_now().await;
        fut.await;
    })
    .detach();
}
