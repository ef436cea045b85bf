//! Transactional offset commits (KIP-98's TxnOffsetCommit, KIP-447's fencing by group
//! generation): a consume-transform-produce loop commits its input offsets inside its
//! transaction, and they count only if the transaction commits.
//!
//! ```text
//!  TxnOffsetCommit(pid, epoch) ─► transactional batch in __consumer_offsets ─► pending[pid]
//!  COMMIT marker (written here by the transaction coordinator) ─► pending[pid] → offsets
//!  ABORT marker ─► pending[pid] dropped
//! ```
//! Pending values are invisible to OffsetFetch (which answers UNSTABLE_OFFSET_COMMIT for
//! them when the client asks for stable offsets). A replay at load follows the same rule
//! (`load.rs`).

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use kafka_protocol::ResponseError;

use super::coordinator::{code, now_ms, GroupCoordinator};
use super::offsets::offset_record;
use super::state::{CommittedOffset, Group};

impl GroupCoordinator {
    /// TxnOffsetCommit: validated as Kafka's doTxnCommitOffsets, written as one
    /// transactional batch of the producer, kept pending until the transaction's marker.
    /// `verification`: the KIP-890 guard the handler got for this group's
    /// `__consumer_offsets` partition (`txn_verify.rs`), for the log's check.
    pub(crate) async fn txn_offset_commit(
        &self,
        req: TxnOffsetCommitRequest,
        version: i16,
        verification: sluice_storage::TxnVerification,
    ) -> TxnOffsetCommitResponse {
        let group_id = req.group_id.0.as_str().to_owned();
        let now = now_ms();
        let mut errors: Vec<Vec<i16>> = req
            .topics
            .iter()
            .map(|t| vec![0; t.partitions.len()])
            .collect();
        let mut written: Vec<(String, i32, CommittedOffset)> = Vec::new();
        let write = {
            let mut st = self.state.borrow_mut();
            // an unknown group is created by a commit without a generation; one with a
            // generation is a stale member's (Kafka: ILLEGAL_GENERATION, no group made)
            let refused = if version >= 3
                && req.generation_id >= 0
                && !st.groups.contains_key(group_id.as_str())
            {
                Some(code(ResponseError::IllegalGeneration))
            } else {
                let group = st
                    .groups
                    .entry(group_id.clone())
                    .or_insert_with(|| Group::new(&group_id, now));
                validate(group, &req, version)
            };
            match refused {
                Some(e) => {
                    errors.iter_mut().flatten().for_each(|c| *c = e);
                    None
                }
                None => {
                    let mut records = Vec::new();
                    for (ti, topic) in req.topics.iter().enumerate() {
                        for (pi, p) in topic.partitions.iter().enumerate() {
                            let metadata = p
                                .committed_metadata
                                .as_ref()
                                .map(|m| m.as_str().to_owned())
                                .unwrap_or_default();
                            if metadata.len() > self.config.offset_metadata_max_bytes {
                                errors[ti][pi] = code(ResponseError::OffsetMetadataTooLarge);
                                continue;
                            }
                            let value = CommittedOffset {
                                offset: p.committed_offset,
                                leader_epoch: if version >= 2 {
                                    p.committed_leader_epoch
                                } else {
                                    -1
                                },
                                metadata,
                                commit_timestamp_ms: now,
                                expire_timestamp_ms: None,
                                order: self.next_counter(),
                            };
                            records.push(offset_record(
                                &group_id,
                                topic.name.0.as_str(),
                                p.partition_index,
                                &value,
                            ));
                            written.push((
                                topic.name.0.as_str().to_owned(),
                                p.partition_index,
                                value,
                            ));
                        }
                    }
                    (!records.is_empty()).then(|| {
                        self.log.append_txn(
                            req.producer_id.0,
                            req.producer_epoch,
                            records,
                            verification,
                        )
                    })
                }
            }
        };
        if let Some(write) = write {
            match write.await {
                Ok(()) => {
                    let mut st = self.state.borrow_mut();
                    if let Some(group) = st.groups.get_mut(&group_id) {
                        let pending = group
                            .pending_txn_offsets
                            .entry(req.producer_id.0)
                            .or_default();
                        for (topic, partition, value) in written {
                            pending.insert((topic, partition), value);
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(group = %group_id, error = e, "transactional offset commit failed");
                    for c in errors.iter_mut().flatten() {
                        if *c == 0 {
                            *c = e;
                        }
                    }
                }
            }
        }
        TxnOffsetCommitResponse::default().with_topics(
            req.topics
                .iter()
                .zip(errors)
                .map(|(t, errs)| {
                    TxnOffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .zip(errs)
                                .map(|(p, e)| {
                                    TxnOffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(e)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    }

    /// The marker of `producer_id`'s transaction reached this partition: its pending
    /// offsets become committed (`commit`) or are dropped. Returns how many were applied.
    pub(crate) fn complete_txn(&self, producer_id: i64, commit: bool) -> usize {
        let mut st = self.state.borrow_mut();
        let mut applied = 0;
        for group in st.groups.values_mut() {
            let Some(pending) = group.pending_txn_offsets.remove(&producer_id) else {
                continue;
            };
            if !commit {
                continue;
            }
            for (tp, value) in pending {
                // a plain commit written after the transactional one stays (Kafka's
                // comparison of the records' offsets)
                if group.offsets.get(&tp).is_none_or(|o| o.order < value.order) {
                    group.offsets.insert(tp, value);
                    applied += 1;
                }
            }
        }
        applied
    }
}

/// Kafka's checks before a transactional commit (GroupMetadataManager /
/// GroupCoordinator.doTxnCommitOffsets); None = may commit.
fn validate(group: &Group, req: &TxnOffsetCommitRequest, version: i16) -> Option<i16> {
    // before v3 the request has no member, instance or generation (their defaults)
    let (member_id, instance, generation) = if version >= 3 {
        let instance = req.group_instance_id.as_ref().map(|s| s.as_str());
        (req.member_id.as_str(), instance, req.generation_id)
    } else {
        ("", None, -1)
    };
    group
        .validate_offset_commit(member_id, instance, generation, true)
        .map(code)
}
