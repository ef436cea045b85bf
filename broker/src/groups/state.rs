//! In-memory group state, as Kafka's GroupMetadata/MemberMetadata keep it: members, the
//! generation, the selected protocol, static-member and pending-member bookkeeping, and the
//! group's committed offsets.
//!
//! States: Empty -> PreparingRebalance -> CompletingRebalance -> Stable, and back to
//! PreparingRebalance from Stable/CompletingRebalance (Dead groups are removed from the map).
//! Pure data plus synchronous helpers; no I/O, no awaiting.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::oneshot;
use super::records::subscription_topics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The names Kafka uses on the wire (DescribeGroups, ListGroups).
    pub(crate) fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// What a parked JoinGroup gets when the rebalance completes (or fails); the request task
/// turns it into a JoinGroupResponse for its own API version.
#[derive(Debug, Clone)]
pub(crate) struct JoinOutcome {
    pub(crate) error: i16,
    pub(crate) member_id: String,
    pub(crate) generation_id: i32,
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol_name: Option<String>,
    pub(crate) leader_id: String,
    pub(crate) skip_assignment: bool,
    /// (member_id, group_instance_id, metadata of the selected protocol); leader only.
    pub(crate) members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinOutcome {
    pub(crate) fn error(member_id: &str, error: i16) -> JoinOutcome {
        JoinOutcome {
            error,
            member_id: member_id.to_owned(),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader_id: String::new(),
            skip_assignment: false,
            members: Vec::new(),
        }
    }
}

/// What a parked SyncGroup gets: (error code, assignment).
pub(crate) type SyncOutcome = (i16, Bytes);

/// One member of a group; owned by the coordinator's shard; never crosses cores.
pub(crate) struct Member {
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) session_timeout_ms: i32,
    pub(crate) protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub(crate) protocols: Vec<(String, Bytes)>,
    pub(crate) assignment: Bytes,
    pub(crate) awaiting_join: Option<oneshot::Sender<JoinOutcome>>,
    pub(crate) awaiting_sync: Option<oneshot::Sender<SyncOutcome>>,
    /// Joined in the current rebalance and not yet answered once (KIP-394 join timeout).
    pub(crate) is_new: bool,
    pub(crate) last_heartbeat: Instant,
    /// Distinguishes this member's expiry task from those of earlier holders of the id.
    pub(crate) incarnation: u64,
}

impl Member {
    pub(crate) fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    pub(crate) fn matches(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }
}

/// Value and bookkeeping of one committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommittedOffset {
    pub(crate) offset: i64,
    pub(crate) leader_epoch: i32,
    pub(crate) metadata: String,
    pub(crate) commit_timestamp_ms: i64,
    /// Explicit expiry (OffsetCommit v2-v4 retention_time_ms), else None.
    pub(crate) expire_timestamp_ms: Option<i64>,
    /// Where its record stands in the partition's order, as this coordinator knows it
    /// (the replay position at load, then increasing with every write issued): a
    /// transaction's offset applied by its marker replaces a committed one only if it was
    /// written later (Kafka compares the records' offsets).
    pub(crate) order: u64,
}

/// A classic group; owned by the shard of its `__consumer_offsets` partition; never crosses
/// cores.
pub(crate) struct Group {
    pub(crate) group_id: String,
    pub(crate) state: GroupState,
    pub(crate) state_timestamp_ms: Option<i64>,
    pub(crate) generation_id: i32,
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol_name: Option<String>,
    pub(crate) leader_id: Option<String>,
    pub(crate) members: BTreeMap<String, Member>,
    /// group.instance.id -> member id
    pub(crate) static_members: HashMap<String, String>,
    /// KIP-394: member ids handed out with MEMBER_ID_REQUIRED, not yet joined.
    pub(crate) pending_members: HashSet<String>,
    /// Members that got a JoinGroup answer of this generation but have not synced yet.
    pub(crate) pending_sync: HashSet<String>,
    /// A member joined during the initial rebalance delay (extends it).
    pub(crate) new_member_added: bool,
    /// True while the initial (Empty -> PreparingRebalance) delay is running: the join is
    /// completed by its timer only.
    pub(crate) initial_delay_active: bool,
    /// Bumped on every prepare/complete so stale rebalance timers do nothing.
    pub(crate) rebalance_epoch: u64,
    /// Topics the members subscribe to (consumer protocol), None when unknown.
    pub(crate) subscribed_topics: Option<HashSet<String>>,
    pub(crate) offsets: HashMap<(String, i32), CommittedOffset>,
    /// In-flight commits: (topic, partition) -> sequence of the latest issued write.
    pub(crate) pending_commits: HashMap<(String, i32), u64>,
    /// Transactional commits (TxnOffsetCommit) written but not yet decided, per producer
    /// id: applied to `offsets` by the transaction's COMMIT marker, dropped by ABORT.
    pub(crate) pending_txn_offsets: HashMap<i64, HashMap<(String, i32), CommittedOffset>>,
}

impl Group {
    pub(crate) fn new(group_id: &str, now_ms: i64) -> Group {
        Group {
            group_id: group_id.to_owned(),
            state: GroupState::Empty,
            state_timestamp_ms: Some(now_ms),
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashSet::new(),
            pending_sync: HashSet::new(),
            new_member_added: false,
            initial_delay_active: false,
            rebalance_epoch: 0,
            subscribed_topics: None,
            offsets: HashMap::new(),
            pending_commits: HashMap::new(),
            pending_txn_offsets: HashMap::new(),
        }
    }

    /// Empty, with no member, pending member, offset, commit in flight or undecided
    /// transactional commit: nothing left to keep (Kafka's `hasOffsets` false, so it
    /// removes the group and tombstones its metadata).
    pub(crate) fn holds_nothing(&self) -> bool {
        self.is(GroupState::Empty)
            && self.members.is_empty()
            && self.pending_members.is_empty()
            && self.offsets.is_empty()
            && self.pending_commits.is_empty()
            && self.pending_txn_offsets.values().all(|p| p.is_empty())
    }

    pub(crate) fn is(&self, state: GroupState) -> bool {
        self.state == state
    }

    pub(crate) fn transition_to(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_timestamp_ms = Some(now_ms);
    }

    /// Kafka's `canRebalance`: PreparingRebalance is reachable from here.
    pub(crate) fn can_rebalance(&self) -> bool {
        matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        )
    }

    pub(crate) fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    /// A static member whose instance id is registered to another member id is fenced.
    pub(crate) fn is_static_member_fenced(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> bool {
        match group_instance_id.and_then(|i| self.static_members.get(i)) {
            Some(registered) => registered != member_id,
            None => false,
        }
    }

    /// Kafka's `ClassicGroup.validateOffsetCommit` (with `validateMember`) for an
    /// OffsetCommit or, `transactional`, a TxnOffsetCommit: None when it may commit.
    /// Generation -1 on an Empty group is a consumer that assigns its partitions itself
    /// (or an admin tool), accepted whatever member or instance id it sends; otherwise a
    /// member id, instance id or generation must match a member of this generation. An
    /// Empty group also takes a commit with neither (OffsetCommit v0), a transactional
    /// one any group. Only a plain commit waits out CompletingRebalance.
    pub(crate) fn validate_offset_commit(
        &self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        transactional: bool,
    ) -> Option<ResponseError> {
        if self.is(GroupState::Dead) {
            return Some(ResponseError::CoordinatorNotAvailable);
        }
        if generation < 0 && self.is(GroupState::Empty) {
            return None;
        }
        if generation >= 0 || !member_id.is_empty() || instance.is_some() {
            if let Some(instance) = instance {
                match self.static_members.get(instance) {
                    None => return Some(ResponseError::UnknownMemberId),
                    Some(registered) if registered != member_id => {
                        return Some(ResponseError::FencedInstanceId)
                    }
                    Some(_) => {}
                }
            }
            if !self.members.contains_key(member_id) {
                return Some(ResponseError::UnknownMemberId);
            }
            if generation != self.generation_id {
                return Some(ResponseError::IllegalGeneration);
            }
        } else if !transactional && !self.is(GroupState::Empty) {
            return Some(ResponseError::UnknownMemberId);
        }
        if !transactional && self.is(GroupState::CompletingRebalance) {
            return Some(ResponseError::RebalanceInProgress);
        }
        None
    }

    pub(crate) fn add_member(&mut self, member: Member) {
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member.member_id.clone());
        }
        if let Some(instance) = &member.group_instance_id {
            self.static_members
                .insert(instance.clone(), member.member_id.clone());
        }
        self.pending_members.remove(&member.member_id);
        self.members.insert(member.member_id.clone(), member);
    }

    /// Removes a member and its static registration; re-elects a leader if needed.
    pub(crate) fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let member = self.members.remove(member_id)?;
        if let Some(instance) = &member.group_instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        self.pending_sync.remove(member_id);
        if self.is_leader(member_id) {
            self.leader_id = self.members.keys().next().cloned();
        }
        Some(member)
    }

    pub(crate) fn awaiting_join_count(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.awaiting_join.is_some())
            .count()
    }

    pub(crate) fn has_all_members_joined(&self) -> bool {
        self.members.len() == self.awaiting_join_count() && self.pending_members.is_empty()
    }

    pub(crate) fn max_rebalance_timeout_ms(&self) -> i32 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    /// Kafka's `supportsProtocols`: an empty group accepts any non-empty protocol list; a
    /// non-empty one needs the same protocol type and a protocol every member supports.
    pub(crate) fn supports_protocols(&self, protocol_type: &str, protocols: &[String]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|p| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(name, _)| name == p))
            })
    }

    /// Kafka's `selectProtocol`: among protocols every member supports, each member votes
    /// for its most preferred; most votes wins (ties: earliest in the leader's preference).
    pub(crate) fn select_protocol(&self) -> Option<String> {
        let first = self
            .leader_id
            .as_ref()
            .and_then(|l| self.members.get(l))
            .or_else(|| self.members.values().next())?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|p| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(name, _)| name == *p))
            })
            .collect();
        let mut votes = vec![0usize; candidates.len()];
        for m in self.members.values() {
            if let Some(idx) = m
                .protocols
                .iter()
                .find_map(|(name, _)| candidates.iter().position(|c| *c == name))
            {
                votes[idx] += 1;
            }
        }
        let mut best: Option<usize> = None;
        for (i, v) in votes.iter().enumerate() {
            if best.is_none_or(|b| *v > votes[b]) {
                best = Some(i);
            }
        }
        best.map(|i| candidates[i].clone())
    }

    /// Union of the members' subscribed topics when the group speaks the consumer protocol.
    pub(crate) fn compute_subscribed_topics(&self) -> Option<HashSet<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = HashSet::new();
        for m in self.members.values() {
            topics.extend(subscription_topics(&m.metadata_for(protocol))?);
        }
        Some(topics)
    }

    /// The (member_id, group_instance_id, metadata) list the leader receives.
    pub(crate) fn member_metadata_for_leader(&self) -> Vec<(String, Option<String>, Bytes)> {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        self.members
            .values()
            .map(|m| {
                (
                    m.member_id.clone(),
                    m.group_instance_id.clone(),
                    m.metadata_for(&protocol),
                )
            })
            .collect()
    }

    pub(crate) fn is_subscribed_to(&self, topic: &str) -> bool {
        self.subscribed_topics
            .as_ref()
            .is_some_and(|t| t.contains(topic))
    }
}
