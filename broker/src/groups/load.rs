//! Rebuilding a coordinator from its `__consumer_offsets` partition: replay every record in
//! log order, last value per key wins, tombstones delete; then turn the surviving group
//! records into groups (Stable with members, else Empty) and attach the surviving offsets.
//! Transactional commits (TxnOffsetCommit batches) wait for their producer's marker: COMMIT
//! makes them committed offsets, ABORT drops them, none yet leaves them pending.
//!
//! Undecodable records are logged and skipped (they cannot be Sluice's own), so one bad
//! record never makes a partition's groups unavailable. Loaded members get a fresh session
//! timer, as Kafka's onGroupLoaded does.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use super::coordinator::{now_ms, GroupCoordinator};
use super::records::{GroupMetadataValue, OffsetCommitValue, RecordKey};
use super::state::{CommittedOffset, Group, GroupState, Member};
use super::{GroupConfig, OffsetsLog, Replay};

/// A TxnOffsetCommit value found at load, waiting for its producer's marker: (group,
/// topic, partition, value, replay position).
type PendingTxnOffset = (String, String, i32, OffsetCommitValue, u64);

impl GroupCoordinator {
    /// Rebuilds the coordinator of one `__consumer_offsets` partition from its records
    /// (in offset order). Must run inside the owning shard's glommio executor.
    pub(crate) fn load(
        log: Rc<dyn OffsetsLog>,
        replay: impl IntoIterator<Item = impl Into<Replay>>,
        config: GroupConfig,
    ) -> Rc<GroupCoordinator> {
        let mut group_values: HashMap<String, GroupMetadataValue> = HashMap::new();
        // values with their replay position (the later record wins at a marker)
        let mut offsets: HashMap<(String, String, i32), (OffsetCommitValue, u64)> = HashMap::new();
        // TxnOffsetCommit values per producer, waiting for their transaction's marker
        let mut txn: HashMap<i64, Vec<PendingTxnOffset>> = HashMap::new();
        let mut skipped = 0usize;
        let mut position = 0u64;
        for item in replay {
            position += 1;
            let (key, value, txn_producer) = match item.into() {
                Replay::Record {
                    key,
                    value,
                    txn_producer,
                } => (key, value, txn_producer),
                Replay::Marker {
                    producer_id,
                    commit,
                } => {
                    for (group, topic, partition, v, at) in
                        txn.remove(&producer_id).into_iter().flatten()
                    {
                        let key = (group, topic, partition);
                        if commit && offsets.get(&key).is_none_or(|(_, o)| *o < at) {
                            offsets.insert(key, (v, at));
                        }
                    }
                    continue;
                }
            };
            let key = match RecordKey::decode(&key) {
                Ok(k) => k,
                Err(e) => {
                    skipped += 1;
                    tracing::warn!(error = %e, "skipping undecodable __consumer_offsets key");
                    continue;
                }
            };
            match (key, value) {
                (
                    RecordKey::OffsetCommit {
                        group,
                        topic,
                        partition,
                    },
                    None,
                ) => {
                    offsets.remove(&(group, topic, partition));
                }
                (
                    RecordKey::OffsetCommit {
                        group,
                        topic,
                        partition,
                    },
                    Some(v),
                ) => match OffsetCommitValue::decode(&v) {
                    Ok(v) => match txn_producer {
                        Some(pid) => txn
                            .entry(pid)
                            .or_default()
                            .push((group, topic, partition, v, position)),
                        None => {
                            offsets.insert((group, topic, partition), (v, position));
                        }
                    },
                    Err(e) => {
                        skipped += 1;
                        tracing::warn!(group = %group, error = %e, "skipping undecodable offset commit value");
                    }
                },
                (RecordKey::GroupMetadata { group }, None) => {
                    group_values.remove(&group);
                }
                (RecordKey::GroupMetadata { group }, Some(v)) => {
                    match GroupMetadataValue::decode(&v) {
                        Ok(v) => {
                            group_values.insert(group, v);
                        }
                        Err(e) => {
                            skipped += 1;
                            tracing::warn!(group = %group, error = %e, "skipping undecodable group metadata value");
                        }
                    }
                }
            }
        }

        let now = now_ms();
        let mut groups: HashMap<String, Group> = HashMap::new();
        let mut members_to_watch = Vec::new();
        let instant = Instant::now();
        let mut incarnation = 1u64 << 62; // distinct from counter-issued incarnations
        for (group_id, v) in group_values {
            let mut g = Group::new(&group_id, now);
            g.generation_id = v.generation;
            g.protocol_type = (!v.protocol_type.is_empty()).then_some(v.protocol_type.clone());
            g.protocol_name = v.protocol.clone();
            g.leader_id = v.leader.clone();
            g.state_timestamp_ms =
                (v.current_state_timestamp >= 0).then_some(v.current_state_timestamp);
            g.state = if v.members.is_empty() {
                GroupState::Empty
            } else {
                GroupState::Stable
            };
            let protocol = v.protocol.clone().unwrap_or_default();
            for m in v.members {
                incarnation += 1;
                if let Some(instance) = &m.group_instance_id {
                    g.static_members
                        .insert(instance.clone(), m.member_id.clone());
                }
                members_to_watch.push((group_id.clone(), m.member_id.clone(), incarnation));
                g.members.insert(
                    m.member_id.clone(),
                    Member {
                        member_id: m.member_id,
                        group_instance_id: m.group_instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        rebalance_timeout_ms: m.rebalance_timeout,
                        session_timeout_ms: m.session_timeout,
                        protocol_type: v.protocol_type.clone(),
                        protocols: vec![(protocol.clone(), m.subscription)],
                        assignment: m.assignment,
                        awaiting_join: None,
                        awaiting_sync: None,
                        is_new: false,
                        last_heartbeat: instant,
                        incarnation,
                    },
                );
            }
            if g.leader_id
                .as_ref()
                .is_some_and(|l| !g.members.contains_key(l))
            {
                g.leader_id = g.members.keys().next().cloned();
            }
            g.subscribed_topics = g.compute_subscribed_topics();
            groups.insert(group_id, g);
        }
        let offset_count = offsets.len();
        for ((group_id, topic, partition), (v, at)) in offsets {
            let g = groups
                .entry(group_id.clone())
                .or_insert_with(|| Group::new(&group_id, now));
            g.offsets.insert((topic, partition), committed(v, at));
        }
        let mut undecided = 0usize;
        for (pid, commits) in txn {
            for (group_id, topic, partition, v, at) in commits {
                undecided += 1;
                let g = groups
                    .entry(group_id.clone())
                    .or_insert_with(|| Group::new(&group_id, now));
                g.pending_txn_offsets
                    .entry(pid)
                    .or_default()
                    .insert((topic, partition), committed(v, at));
            }
        }
        tracing::info!(
            groups = groups.len(),
            offsets = offset_count,
            undecided_txn_offsets = undecided,
            skipped,
            "group coordinator loaded"
        );
        let coordinator = GroupCoordinator::with_state(log, config, groups);
        // live writes are ordered after everything replayed
        coordinator.skip_counter_past(position);
        for (group_id, member_id, incarnation) in members_to_watch {
            coordinator.spawn_member_expiry(&group_id, &member_id, incarnation);
        }
        coordinator.rebalance_groups_over_capacity();
        coordinator
    }
}

/// A stored offset commit value as the coordinator keeps it.
fn committed(v: OffsetCommitValue, order: u64) -> CommittedOffset {
    CommittedOffset {
        order,
        offset: v.offset,
        leader_epoch: v.leader_epoch,
        metadata: v.metadata,
        commit_timestamp_ms: v.commit_timestamp,
        expire_timestamp_ms: (v.expire_timestamp >= 0).then_some(v.expire_timestamp),
    }
}
