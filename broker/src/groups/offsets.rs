//! Committed offsets and group administration: OffsetCommit, OffsetFetch, OffsetDelete,
//! DescribeGroups, ListGroups, DeleteGroups, and offset expiry (`offsets.retention.minutes`).
//!
//! A commit is validated, appended, and applied to memory only once durable; each in-flight
//! commit holds a per-partition sequence number so that a later write (commit or
//! tombstone) issued before an earlier one completes always wins, as it does in the log.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    GroupId, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::coordinator::{code, now_ms, GroupCoordinator};
use super::records::{OffsetCommitValue, RecordKey};
use super::state::{CommittedOffset, Group, GroupState};
use super::{commit_error, write_error};

/// One partition's committed offset as OffsetFetch reports it (-1/"" when none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionOffset {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) leader_epoch: i32,
    pub(crate) metadata: String,
    pub(crate) error_code: i16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicOffsets {
    pub(crate) name: String,
    pub(crate) partitions: Vec<PartitionOffset>,
}

/// OffsetFetch result of one group, mapped by the handler into the v0-v7 top-level or the
/// v8+ `groups[]` shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupOffsets {
    pub(crate) group_id: String,
    pub(crate) error_code: i16,
    pub(crate) topics: Vec<TopicOffsets>,
}

/// The OffsetCommit record of one committed value (key and value).
pub(super) fn offset_record(
    group: &str,
    topic: &str,
    partition: i32,
    value: &CommittedOffset,
) -> (bytes::Bytes, Option<bytes::Bytes>) {
    let key = RecordKey::OffsetCommit {
        group: group.to_owned(),
        topic: topic.to_owned(),
        partition,
    };
    let record = OffsetCommitValue {
        offset: value.offset,
        leader_epoch: value.leader_epoch,
        metadata: value.metadata.clone(),
        commit_timestamp: value.commit_timestamp_ms,
        expire_timestamp: value.expire_timestamp_ms.unwrap_or(-1),
    };
    (key.encode(), Some(record.encode()))
}

fn offset_tombstone(
    group: &str,
    topic: &str,
    partition: i32,
) -> (bytes::Bytes, Option<bytes::Bytes>) {
    let key = RecordKey::OffsetCommit {
        group: group.to_owned(),
        topic: topic.to_owned(),
        partition,
    };
    (key.encode(), None)
}

fn group_tombstone(group: &str) -> (bytes::Bytes, Option<bytes::Bytes>) {
    let key = RecordKey::GroupMetadata {
        group: group.to_owned(),
    };
    (key.encode(), None)
}

impl GroupCoordinator {
    /// OffsetCommit (v0-v9). Member/generation checks as Kafka; generation -1 with no member
    /// (always, for v0) is a "simple" commit, allowed while the group has no members.
    /// Answers once durable. (The broker calls `offset_commit_at`.)
    #[cfg(test)]
    pub(crate) async fn offset_commit(
        &self,
        req: OffsetCommitRequest,
        version: i16,
    ) -> OffsetCommitResponse {
        self.offset_commit_at(req, version, &[]).await
    }

    /// OffsetCommit with v1's per-partition commit timestamps (`commit_timestamps[topic]
    /// [partition]`, as in the request; missing or -1 means now). As in Kafka 3.9, an
    /// explicit timestamp is the stored commit time (retention counts from it) and sets no
    /// expiry of its own.
    pub(crate) async fn offset_commit_at(
        &self,
        req: OffsetCommitRequest,
        version: i16,
        commit_timestamps: &[Vec<i64>],
    ) -> OffsetCommitResponse {
        let group_id = req.group_id.0.as_str().to_owned();
        let now = now_ms();
        let commit_time =
            |ti: usize, pi: usize| match commit_timestamps.get(ti).and_then(|t| t.get(pi)) {
                Some(&ts) if ts != -1 => ts,
                _ => now,
            };
        let mut errors: Vec<Vec<i16>> = req
            .topics
            .iter()
            .map(|t| vec![0; t.partitions.len()])
            .collect();
        let group_error = self.validate_commit(&req, version);
        let mut written: Vec<(String, i32, CommittedOffset, u64)> = Vec::new();
        let write = match group_error {
            Some(e) => {
                errors.iter_mut().flatten().for_each(|c| *c = e);
                None
            }
            None => {
                let mut st = self.state.borrow_mut();
                let group = st
                    .groups
                    .entry(group_id.clone())
                    .or_insert_with(|| Group::new(&group_id, now));
                let explicit_expiry = if (2..=4).contains(&version) && req.retention_time_ms != -1 {
                    Some(now.saturating_add(req.retention_time_ms))
                } else {
                    None
                };
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
                        let seq = self.next_counter();
                        let value = CommittedOffset {
                            offset: p.committed_offset,
                            leader_epoch: if version >= 6 {
                                p.committed_leader_epoch
                            } else {
                                -1
                            },
                            metadata,
                            commit_timestamp_ms: commit_time(ti, pi),
                            expire_timestamp_ms: explicit_expiry,
                            order: seq,
                        };
                        records.push(offset_record(
                            &group_id,
                            topic.name.0.as_str(),
                            p.partition_index,
                            &value,
                        ));
                        group
                            .pending_commits
                            .insert((topic.name.0.as_str().to_owned(), p.partition_index), seq);
                        written.push((
                            topic.name.0.as_str().to_owned(),
                            p.partition_index,
                            value,
                            seq,
                        ));
                    }
                }
                if records.is_empty() {
                    None
                } else {
                    Some(self.log.append(records))
                }
            }
        };
        if let Some(write) = write {
            let result = write.await;
            let failed = result.as_ref().err().map(|(c, _)| commit_error(*c));
            if let Err((_, e)) = &result {
                tracing::warn!(group = %group_id, error = %e, "offset commit append failed");
            }
            let mut st = self.state.borrow_mut();
            if let Some(group) = st.groups.get_mut(&group_id) {
                for (topic, partition, value, seq) in written {
                    let key = (topic, partition);
                    // Writes complete in the order they were issued. A successful one is
                    // the committed value unless the offset was deleted meanwhile (no
                    // longer pending), even when a later commit is still in flight: that
                    // one may fail, and the answer given for this one must then hold.
                    let latest = group.pending_commits.get(&key).copied();
                    if failed.is_none() && latest.is_some_and(|l| l >= seq) {
                        group.offsets.insert(key.clone(), value);
                    }
                    if latest == Some(seq) {
                        group.pending_commits.remove(&key);
                    }
                }
            }
            if let Some(failed) = failed {
                for c in errors.iter_mut().flatten() {
                    if *c == 0 {
                        *c = failed;
                    }
                }
            }
        }
        OffsetCommitResponse::default().with_topics(
            req.topics
                .iter()
                .zip(errors)
                .map(|(t, errs)| {
                    OffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .zip(errs)
                                .map(|(p, e)| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(e)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    }

    /// Kafka's validateOffsetCommit + doCommitOffsets state checks; None = may commit.
    fn validate_commit(&self, req: &OffsetCommitRequest, version: i16) -> Option<i16> {
        let member_id = req.member_id.as_str();
        let instance = if version >= 7 {
            req.group_instance_id.as_ref().map(|s| s.as_str())
        } else {
            None
        };
        let generation = req.generation_id_or_member_epoch;
        let mut st = self.state.borrow_mut();
        let Some(group) = st.groups.get_mut(req.group_id.0.as_str()) else {
            // Unknown group: a simple commit creates it; a generation means a stale member.
            return (generation >= 0).then(|| code(ResponseError::IllegalGeneration));
        };
        if let Some(e) = group.validate_offset_commit(member_id, instance, generation, false) {
            return Some(code(e));
        }
        // a member's commit counts as its heartbeat (Kafka reschedules it)
        if let Some(m) = group.members.get_mut(member_id) {
            m.last_heartbeat = std::time::Instant::now();
        }
        None
    }

    /// OffsetFetch for one group: the requested partitions (-1 when never committed), or
    /// every committed partition when `topics` is None. With `require_stable` (KIP-447), a
    /// partition with an undecided transactional commit answers UNSTABLE_OFFSET_COMMIT so
    /// the client retries; without it, the last decided value.
    pub(crate) async fn offset_fetch_group(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
        require_stable: bool,
    ) -> GroupOffsets {
        let st = self.state.borrow();
        let group = st.groups.get(group_id);
        let lookup = |topic: &str, partition: i32| -> PartitionOffset {
            let key = (topic.to_owned(), partition);
            let unstable = require_stable
                && group
                    .is_some_and(|g| g.pending_txn_offsets.values().any(|p| p.contains_key(&key)));
            if unstable {
                return PartitionOffset {
                    partition,
                    offset: -1,
                    leader_epoch: -1,
                    metadata: String::new(),
                    error_code: code(ResponseError::UnstableOffsetCommit),
                };
            }
            match group.and_then(|g| g.offsets.get(&key)) {
                Some(o) => PartitionOffset {
                    partition,
                    offset: o.offset,
                    leader_epoch: o.leader_epoch,
                    metadata: o.metadata.clone(),
                    error_code: 0,
                },
                None => PartitionOffset {
                    partition,
                    offset: -1,
                    leader_epoch: -1,
                    metadata: String::new(),
                    error_code: 0,
                },
            }
        };
        let topics = match topics {
            Some(requested) => requested
                .into_iter()
                .map(|(name, partitions)| TopicOffsets {
                    partitions: partitions.iter().map(|p| lookup(&name, *p)).collect(),
                    name,
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                if let Some(g) = group {
                    for (topic, partition) in g.offsets.keys() {
                        by_topic.entry(topic).or_default().push(*partition);
                    }
                }
                by_topic
                    .into_iter()
                    .map(|(name, mut partitions)| {
                        partitions.sort_unstable();
                        TopicOffsets {
                            name: name.to_owned(),
                            partitions: partitions.iter().map(|p| lookup(name, *p)).collect(),
                        }
                    })
                    .collect()
            }
        };
        GroupOffsets {
            group_id: group_id.to_owned(),
            error_code: 0,
            topics,
        }
    }

    /// Every committed offset: (group, topic, partition, offset), for consumer-lag metrics.
    pub(crate) fn committed_offsets(&self) -> Vec<(String, String, i32, i64)> {
        let st = self.state.borrow();
        st.groups
            .values()
            .flat_map(|g| {
                g.offsets.iter().map(|((topic, partition), o)| {
                    (g.group_id.clone(), topic.clone(), *partition, o.offset)
                })
            })
            .collect()
    }

    /// DescribeGroups for one group; an unknown group is reported as Dead (Kafka < 4.0).
    pub(crate) async fn describe_group(&self, group_id: &str) -> DescribedGroup {
        let st = self.state.borrow();
        let mut out = DescribedGroup::default()
            .with_group_id(GroupId(StrBytes::from_string(group_id.to_owned())))
            .with_group_state(StrBytes::from_static_str(GroupState::Dead.name()));
        let Some(g) = st.groups.get(group_id) else {
            return out;
        };
        let stable = g.is(GroupState::Stable);
        let protocol = g.protocol_name.clone().unwrap_or_default();
        out.group_state = StrBytes::from_static_str(g.state.name());
        out.protocol_type = StrBytes::from_string(g.protocol_type.clone().unwrap_or_default());
        out.protocol_data = StrBytes::from_string(if stable {
            protocol.clone()
        } else {
            String::new()
        });
        out.members = g
            .members
            .values()
            .map(|m| {
                let mut d = DescribedGroupMember::default()
                    .with_member_id(StrBytes::from_string(m.member_id.clone()))
                    .with_group_instance_id(m.group_instance_id.clone().map(StrBytes::from_string))
                    .with_client_id(StrBytes::from_string(m.client_id.clone()))
                    .with_client_host(StrBytes::from_string(m.client_host.clone()));
                if stable {
                    d.member_metadata = m.metadata_for(&protocol);
                    d.member_assignment = m.assignment.clone();
                }
                d
            })
            .collect();
        out
    }

    /// ListGroups: every live group, filtered by state names and types (case-insensitive;
    /// empty filter = all). All groups here are of type "classic".
    pub(crate) async fn list_groups(
        &self,
        states_filter: &[StrBytes],
        types_filter: &[StrBytes],
    ) -> Vec<ListedGroup> {
        if !types_filter.is_empty()
            && !types_filter
                .iter()
                .any(|t| t.as_str().eq_ignore_ascii_case("classic"))
        {
            return Vec::new();
        }
        let st = self.state.borrow();
        let mut out: Vec<ListedGroup> = st
            .groups
            .values()
            .filter(|g| !g.is(GroupState::Dead))
            .filter(|g| {
                states_filter.is_empty()
                    || states_filter
                        .iter()
                        .any(|s| s.as_str().eq_ignore_ascii_case(g.state.name()))
            })
            .map(|g| {
                ListedGroup::default()
                    .with_group_id(GroupId(StrBytes::from_string(g.group_id.clone())))
                    .with_protocol_type(StrBytes::from_string(
                        g.protocol_type.clone().unwrap_or_default(),
                    ))
                    .with_group_state(StrBytes::from_static_str(g.state.name()))
                    .with_group_type(StrBytes::from_static_str("classic"))
            })
            .collect();
        out.sort_by(|a, b| a.group_id.0.as_str().cmp(b.group_id.0.as_str()));
        out
    }

    /// DeleteGroups for one group: only an Empty group can be deleted (NON_EMPTY_GROUP
    /// otherwise); its offsets and metadata are tombstoned. The group is Dead while the
    /// tombstones are written, and comes back as Empty if they cannot be.
    pub(crate) async fn delete_group(&self, group_id: &str) -> i16 {
        let write = {
            let mut st = self.state.borrow_mut();
            let Some(group) = st.groups.get_mut(group_id) else {
                return code(ResponseError::GroupIdNotFound);
            };
            match group.state {
                GroupState::Dead => return code(ResponseError::GroupIdNotFound),
                GroupState::Empty if group.members.is_empty() => {}
                _ => return code(ResponseError::NonEmptyGroup),
            }
            group.transition_to(GroupState::Dead, now_ms());
            group.pending_commits.clear();
            let mut records: Vec<_> = group
                .offsets
                .keys()
                .map(|(t, p)| offset_tombstone(group_id, t, *p))
                .collect();
            records.push(group_tombstone(group_id));
            self.log.append(records)
        };
        let result = write.await;
        let mut st = self.state.borrow_mut();
        match result {
            Ok(()) => {
                if st
                    .groups
                    .get(group_id)
                    .is_some_and(|g| g.is(GroupState::Dead))
                {
                    st.groups.remove(group_id);
                }
                tracing::info!(group = %group_id, "group deleted");
                0
            }
            Err((c, e)) => {
                tracing::warn!(group = %group_id, error = %e, "writing group tombstones failed");
                if let Some(g) = st.groups.get_mut(group_id) {
                    g.transition_to(GroupState::Empty, now_ms());
                }
                write_error(c)
            }
        }
    }

    /// OffsetDelete (v0, KIP-496): deletes offsets of an Empty group, or of topics a
    /// consumer group does not subscribe to (GROUP_SUBSCRIBED_TO_TOPIC for those it does).
    pub(crate) async fn offset_delete(
        &self,
        req: OffsetDeleteRequest,
        _version: i16,
    ) -> OffsetDeleteResponse {
        let group_id = req.group_id.0.as_str().to_owned();
        let mut errors: Vec<Vec<i16>> = req
            .topics
            .iter()
            .map(|t| vec![0; t.partitions.len()])
            .collect();
        let prepared = {
            let mut st = self.state.borrow_mut();
            match st.groups.get_mut(&group_id) {
                None => Err(code(ResponseError::GroupIdNotFound)),
                Some(g) if g.is(GroupState::Dead) => Err(code(ResponseError::GroupIdNotFound)),
                Some(g)
                    if !g.is(GroupState::Empty)
                        && g.protocol_type.as_deref() != Some("consumer") =>
                {
                    Err(code(ResponseError::NonEmptyGroup))
                }
                Some(g) => {
                    let mut records = Vec::new();
                    for (ti, topic) in req.topics.iter().enumerate() {
                        let name = topic.name.0.as_str();
                        if !g.is(GroupState::Empty) && g.is_subscribed_to(name) {
                            errors[ti]
                                .iter_mut()
                                .for_each(|e| *e = code(ResponseError::GroupSubscribedToTopic));
                            continue;
                        }
                        for p in &topic.partitions {
                            let key = (name.to_owned(), p.partition_index);
                            g.pending_commits.remove(&key);
                            if g.offsets.remove(&key).is_some() {
                                records.push(offset_tombstone(&group_id, name, p.partition_index));
                            }
                        }
                    }
                    if g.is(GroupState::Empty)
                        && g.offsets.is_empty()
                        && g.pending_commits.is_empty()
                    {
                        g.transition_to(GroupState::Dead, now_ms());
                        records.push(group_tombstone(&group_id));
                        st.groups.remove(&group_id);
                    }
                    Ok((!records.is_empty()).then(|| self.log.append(records)))
                }
            }
        };
        let mut top = 0;
        match prepared {
            Err(e) => top = e,
            Ok(None) => {}
            Ok(Some(write)) => {
                if let Err((c, e)) = write.await {
                    tracing::warn!(group = %group_id, error = %e, "writing offset tombstones failed");
                    top = write_error(c);
                }
            }
        }
        let topics = if top != 0 {
            Vec::new()
        } else {
            req.topics
                .iter()
                .zip(errors)
                .map(|(t, errs)| {
                    OffsetDeleteResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .zip(errs)
                                .map(|(p, e)| {
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(e)
                                })
                                .collect(),
                        )
                })
                .collect()
        };
        OffsetDeleteResponse::default()
            .with_error_code(top)
            .with_topics(topics)
    }

    /// A topic was deleted: its committed offsets go from every group, tombstoned, as
    /// Kafka's `onPartitionsDeleted` does, so a topic created again under the name starts
    /// from the consumers' `auto.offset.reset`, not from the old topic's positions (commits
    /// in flight for it are dropped when they complete). An Empty group left without
    /// offsets is deleted too. Returns the number of offsets removed.
    pub(crate) fn remove_topic_offsets(&self, topic: &str) -> usize {
        let now = now_ms();
        let mut st = self.state.borrow_mut();
        let mut records = Vec::new();
        let mut removed = 0;
        let mut dead = Vec::new();
        for g in st.groups.values_mut() {
            g.pending_commits.retain(|key, _| key.0 != topic);
            // undecided transactional commits of the topic too (Kafka's removeOffsets):
            // a COMMIT arriving later must not bring the topic's offsets back
            for pending in g.pending_txn_offsets.values_mut() {
                pending.retain(|key, _| key.0 != topic);
            }
            let before = removed;
            let gone: Vec<(String, i32)> =
                g.offsets.keys().filter(|k| k.0 == topic).cloned().collect();
            for key in gone {
                g.offsets.remove(&key);
                records.push(offset_tombstone(&g.group_id, &key.0, key.1));
                removed += 1;
            }
            if removed > before && g.holds_nothing() {
                g.transition_to(GroupState::Dead, now);
                records.push(group_tombstone(&g.group_id));
                dead.push(g.group_id.clone());
            }
        }
        for id in &dead {
            st.groups.remove(id);
        }
        drop(st);
        if !records.is_empty() {
            self.append_detached(records, "deleted topic's offsets");
        }
        removed
    }

    /// Expires offsets as Kafka's removeExpiredOffsets does and tombstones them; an Empty
    /// group left without offsets is deleted too. Call periodically
    /// (`offsets.retention.check.interval.ms`). Returns the number of offsets removed.
    pub(crate) async fn expire_offsets(&self, now_ms: i64) -> usize {
        let retention = self.config.offsets_retention_ms;
        let (write, removed) = {
            let mut st = self.state.borrow_mut();
            let mut records = Vec::new();
            let mut removed = 0;
            let mut dead = Vec::new();
            for g in st.groups.values_mut() {
                if g.is(GroupState::Dead) {
                    continue;
                }
                let empty = g.is(GroupState::Empty);
                // Base timestamp: when an Empty consumer group became empty; otherwise each
                // offset's commit time. Active consumer groups only lose offsets of topics
                // they no longer subscribe to.
                let expirable = empty || g.protocol_type.is_none() || g.subscribed_topics.is_some();
                if !expirable {
                    continue;
                }
                let state_ts = if g.protocol_type.is_some() && empty {
                    g.state_timestamp_ms
                } else {
                    None
                };
                let expired: Vec<(String, i32)> = g
                    .offsets
                    .iter()
                    .filter(|(key, _)| !g.pending_commits.contains_key(*key))
                    .filter(|(key, _)| {
                        empty || g.protocol_type.is_none() || !g.is_subscribed_to(&key.0)
                    })
                    .filter(|(_, o)| match o.expire_timestamp_ms {
                        Some(at) => now_ms >= at,
                        None => now_ms - state_ts.unwrap_or(o.commit_timestamp_ms) >= retention,
                    })
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in expired {
                    g.offsets.remove(&key);
                    records.push(offset_tombstone(&g.group_id, &key.0, key.1));
                    removed += 1;
                }
                if g.holds_nothing() {
                    g.transition_to(GroupState::Dead, now_ms);
                    records.push(group_tombstone(&g.group_id));
                    dead.push(g.group_id.clone());
                }
            }
            for id in &dead {
                tracing::info!(group = %id, "group has no offsets left and is removed");
                st.groups.remove(id);
            }
            (
                (!records.is_empty()).then(|| self.log.append(records)),
                removed,
            )
        };
        if let Some(write) = write {
            if let Err((_, e)) = write.await {
                tracing::warn!(error = %e, "writing expired-offset tombstones failed");
            }
        }
        removed
    }
}
