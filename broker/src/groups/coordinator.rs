//! The `GroupCoordinator` and its rebalance machinery (Kafka's prepareRebalance,
//! onCompleteJoin, heartbeat expiry, pending-sync expiry), shared by the request methods in
//! `membership.rs` and `offsets.rs`.
//!
//! Timers are detached glommio tasks holding a `Weak` to the coordinator; each re-checks an
//! epoch/incarnation after sleeping, so a stale timer does nothing. glommio may poll a
//! spawned task at once, so every task yields first (`spawn_detached`). Every helper here is
//! synchronous and runs under one `RefCell` borrow; none awaits.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::membership::JoinParams;
use super::records::{GroupMetadataValue, MemberMetadataValue, RecordKey};
use super::state::{Group, GroupState, JoinOutcome, Member};
use super::{GroupConfig, OffsetsLog};

/// Coordinator state behind the RefCell.
pub(super) struct CoordinatorState {
    pub(super) groups: HashMap<String, Group>,
}

/// The classic-protocol group coordinator of one `__consumer_offsets` partition; owned by
/// the shard that owns that partition; never crosses cores. Must be created (via `load`)
/// inside a glommio executor, since it spawns its timers as local tasks.
pub(crate) struct GroupCoordinator {
    pub(super) log: Rc<dyn OffsetsLog>,
    pub(super) config: GroupConfig,
    pub(super) state: RefCell<CoordinatorState>,
    pub(super) this: Weak<GroupCoordinator>,
    counter: Cell<u64>,
    id_salt: u64,
}

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(super) fn code(e: ResponseError) -> i16 {
    e.code()
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

impl GroupCoordinator {
    pub(super) fn with_state(
        log: Rc<dyn OffsetsLog>,
        config: GroupConfig,
        groups: HashMap<String, Group>,
    ) -> Rc<GroupCoordinator> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rc::new_cyclic(|this| GroupCoordinator {
            log,
            config,
            state: RefCell::new(CoordinatorState { groups }),
            this: this.clone(),
            counter: Cell::new(1),
            id_salt: splitmix64(nanos ^ u64::from(std::process::id())),
        })
    }

    /// Makes every later `next_counter` larger than `n` (after a replay of `n` records).
    pub(super) fn skip_counter_past(&self, n: u64) {
        if self.counter.get() <= n {
            self.counter.set(n + 1);
        }
    }

    pub(super) fn next_counter(&self) -> u64 {
        let n = self.counter.get();
        self.counter.set(n + 1);
        n
    }

    /// Kafka's `clientId-UUID` (or `groupInstanceId-UUID` for static members).
    pub(super) fn generate_member_id(&self, prefix: &str) -> String {
        let n = self.next_counter();
        let a = splitmix64(self.id_salt ^ n);
        let b = splitmix64(a ^ n.rotate_left(32));
        format!(
            "{prefix}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }

    /// The GroupMetadata record of `group`, with `assignment` overriding members' stored
    /// assignments (the leader's SyncGroup).
    pub(super) fn group_record(
        group: &Group,
        assignment: Option<&HashMap<String, Bytes>>,
    ) -> (Bytes, Option<Bytes>) {
        let protocol = group.protocol_name.clone().unwrap_or_default();
        let value = GroupMetadataValue {
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            generation: group.generation_id,
            protocol: group.protocol_name.clone(),
            leader: if group.members.is_empty() {
                None
            } else {
                group.leader_id.clone()
            },
            current_state_timestamp: group.state_timestamp_ms.unwrap_or(-1),
            members: group
                .members
                .values()
                .map(|m| MemberMetadataValue {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout: m.rebalance_timeout_ms,
                    session_timeout: m.session_timeout_ms,
                    subscription: m.metadata_for(&protocol),
                    assignment: assignment
                        .and_then(|a| a.get(&m.member_id).cloned())
                        .unwrap_or_else(|| m.assignment.clone()),
                })
                .collect(),
        };
        let key = RecordKey::GroupMetadata {
            group: group.group_id.clone(),
        };
        (key.encode(), Some(value.encode()))
    }

    /// Appends in call order and drives the write on a detached task (nobody waits).
    pub(super) fn append_detached(&self, records: Vec<(Bytes, Option<Bytes>)>, what: &'static str) {
        let fut = self.log.append(records);
        spawn_detached(async move {
            if let Err((_, e)) = fut.await {
                tracing::warn!(error = %e, what, "__consumer_offsets append failed");
            }
        });
    }

    // ------------------------------------------------------------ rebalance machinery

    /// Kafka's maybePrepareRebalance.
    pub(super) fn maybe_prepare_rebalance(&self, group: &mut Group, reason: &str) {
        if group.can_rebalance() {
            self.prepare_rebalance(group, reason);
        }
    }

    /// Kafka's prepareRebalance: cancel pending syncs, enter PreparingRebalance, arm the
    /// (initial-delay or rebalance-timeout) join timer, and complete at once if possible.
    pub(super) fn prepare_rebalance(&self, group: &mut Group, reason: &str) {
        if group.is(GroupState::CompletingRebalance) {
            reset_and_propagate_assignment_error(group, code(ResponseError::RebalanceInProgress));
        }
        let was_empty = group.is(GroupState::Empty);
        group.transition_to(GroupState::PreparingRebalance, now_ms());
        group.rebalance_epoch += 1;
        group.pending_sync.clear();
        let epoch = group.rebalance_epoch;
        let rebalance_timeout = i64::from(group.max_rebalance_timeout_ms());
        tracing::info!(
            group = %group.group_id,
            generation = group.generation_id,
            reason,
            "preparing to rebalance group"
        );
        let weak = self.this.clone();
        let gid = group.group_id.clone();
        if was_empty {
            group.initial_delay_active = true;
            group.new_member_added = false;
            let initial = self.config.initial_rebalance_delay_ms as i64;
            let remaining = (rebalance_timeout - initial).max(0);
            spawn_detached(initial_delay_timer(weak, gid, epoch, initial, remaining));
        } else {
            group.initial_delay_active = false;
            spawn_detached(async move {
                glommio::timer::sleep(millis(rebalance_timeout)).await;
                if let Some(c) = weak.upgrade() {
                    c.on_join_timer(&gid, epoch);
                }
            });
            self.try_complete_join(group);
        }
    }

    fn on_join_timer(&self, group_id: &str, epoch: u64) {
        let mut st = self.state.borrow_mut();
        if let Some(group) = st.groups.get_mut(group_id) {
            if group.is(GroupState::PreparingRebalance) && group.rebalance_epoch == epoch {
                self.complete_join(group);
            }
        }
    }

    /// Completes the join phase when every member has rejoined (Kafka's tryCompleteJoin).
    pub(super) fn try_complete_join(&self, group: &mut Group) {
        if group.is(GroupState::PreparingRebalance)
            && !group.initial_delay_active
            && group.has_all_members_joined()
        {
            self.complete_join(group);
        }
    }

    /// Kafka's onCompleteJoin: drop members that did not rejoin, start the next generation,
    /// answer every parked JoinGroup (the leader gets the member list).
    pub(super) fn complete_join(&self, group: &mut Group) {
        // Dynamic members that did not rejoin are dropped; static ones stay (their session
        // timeout or the pending-sync timer removes them if they are really gone).
        let not_rejoined: Vec<String> = group
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in not_rejoined {
            tracing::info!(group = %group.group_id, member = %id, "member did not rejoin in time, removing");
            group.remove_member(&id);
        }
        // Kafka's maybeElectNewJoinedLeader: the leader must be a member that rejoined.
        let leader_joined = group
            .leader_id
            .as_ref()
            .and_then(|l| group.members.get(l))
            .is_some_and(|m| m.awaiting_join.is_some());
        if !leader_joined && !group.members.is_empty() {
            match group.members.values().find(|m| m.awaiting_join.is_some()) {
                Some(m) => group.leader_id = Some(m.member_id.clone()),
                None => {
                    // Only silent static members are left: wait another rebalance timeout
                    // (their session timeouts will remove them meanwhile).
                    tracing::warn!(group = %group.group_id, "no member rejoined; extending the rebalance");
                    group.rebalance_epoch += 1;
                    let epoch = group.rebalance_epoch;
                    let timeout = i64::from(group.max_rebalance_timeout_ms());
                    let weak = self.this.clone();
                    let gid = group.group_id.clone();
                    spawn_detached(async move {
                        glommio::timer::sleep(millis(timeout)).await;
                        if let Some(c) = weak.upgrade() {
                            c.on_join_timer(&gid, epoch);
                        }
                    });
                    return;
                }
            }
        }
        group.rebalance_epoch += 1;
        group.initial_delay_active = false;
        group.new_member_added = false;
        group.pending_sync.clear();
        group.generation_id += 1;
        let now = now_ms();
        if group.members.is_empty() {
            group.protocol_name = None;
            group.subscribed_topics = None;
            group.transition_to(GroupState::Empty, now);
            tracing::info!(group = %group.group_id, generation = group.generation_id, "group is now empty");
            let record = Self::group_record(group, None);
            self.append_detached(vec![record], "empty group metadata");
            return;
        }
        group.protocol_name = group.select_protocol();
        group.subscribed_topics = group.compute_subscribed_topics();
        group.transition_to(GroupState::CompletingRebalance, now);
        tracing::info!(
            group = %group.group_id,
            generation = group.generation_id,
            members = group.members.len(),
            "rebalance join phase complete"
        );
        let leader_members = group.member_metadata_for_leader();
        let leader = group.leader_id.clone().unwrap_or_default();
        let generation = group.generation_id;
        let protocol_type = group.protocol_type.clone();
        let protocol_name = group.protocol_name.clone();
        let instant = Instant::now();
        let ids: Vec<String> = group.members.keys().cloned().collect();
        for id in &ids {
            if let Some(m) = group.members.get_mut(id) {
                let outcome = JoinOutcome {
                    error: 0,
                    member_id: id.clone(),
                    generation_id: generation,
                    protocol_type: protocol_type.clone(),
                    protocol_name: protocol_name.clone(),
                    leader_id: leader.clone(),
                    skip_assignment: false,
                    members: if *id == leader {
                        leader_members.clone()
                    } else {
                        Vec::new()
                    },
                };
                if let Some(tx) = m.awaiting_join.take() {
                    tx.send(outcome);
                }
                m.is_new = false;
                m.last_heartbeat = instant;
                // The deadline may have shrunk (join timeout -> session timeout, or a new
                // session timeout): re-arm with a fresh watchdog; the old one retires.
                m.incarnation = self.next_counter();
                self.spawn_member_expiry(&group.group_id, id, m.incarnation);
            }
            group.pending_sync.insert(id.clone());
        }
        // KAFKA-13419: members that never send SyncGroup are removed after the rebalance
        // timeout, so one stuck member cannot hold the generation hostage.
        let timeout = i64::from(group.max_rebalance_timeout_ms());
        let weak = self.this.clone();
        let gid = group.group_id.clone();
        spawn_detached(async move {
            glommio::timer::sleep(millis(timeout)).await;
            if let Some(c) = weak.upgrade() {
                c.on_pending_sync_timer(&gid, generation);
            }
        });
    }

    fn on_pending_sync_timer(&self, group_id: &str, generation: i32) {
        let mut st = self.state.borrow_mut();
        let Some(group) = st.groups.get_mut(group_id) else {
            return;
        };
        if group.generation_id != generation
            || !matches!(
                group.state,
                GroupState::CompletingRebalance | GroupState::Stable
            )
            || group.pending_sync.is_empty()
        {
            return;
        }
        let missing: Vec<String> = group.pending_sync.drain().collect();
        for id in &missing {
            tracing::info!(group = %group_id, member = %id, "member did not sync in time, removing");
            group.remove_member(id);
        }
        self.prepare_rebalance(group, "members failed to sync within the rebalance timeout");
    }

    /// Kafka's removeMemberAndUpdateGroup.
    pub(super) fn remove_member_and_update_group(
        &self,
        group: &mut Group,
        member_id: &str,
        reason: &str,
    ) {
        if let Some(mut m) = group.remove_member(member_id) {
            if let Some(tx) = m.awaiting_join.take() {
                tx.send(JoinOutcome::error("", code(ResponseError::UnknownMemberId)));
            }
        }
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance(group, reason)
            }
            GroupState::PreparingRebalance => self.try_complete_join(group),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Arms the session-timeout watchdog of one member incarnation: it sleeps until the
    /// member's deadline, re-reads the last heartbeat, and removes the member once silent.
    pub(super) fn spawn_member_expiry(&self, group_id: &str, member_id: &str, incarnation: u64) {
        let weak = self.this.clone();
        let gid = group_id.to_owned();
        let mid = member_id.to_owned();
        spawn_detached(async move {
            loop {
                let wait = match weak.upgrade() {
                    Some(c) => match c.check_member_expiry(&gid, &mid, incarnation) {
                        Some(wait) => wait,
                        None => return,
                    },
                    None => return,
                };
                glommio::timer::sleep(wait).await;
            }
        });
    }

    /// Kafka's onGroupUnloaded for every group: this node stops coordinating them (the
    /// offsets partition moved, its leader epoch changed, or it was deleted). Parked
    /// JoinGroup and SyncGroup requests are answered NOT_COORDINATOR at once, so their
    /// members find the new coordinator instead of waiting out a rebalance here (up to
    /// the rebalance timeout, answered then with a generation never written), and the
    /// groups are dropped, so this coordinator's timers find nothing left to do.
    pub(crate) fn unload(&self) {
        let groups = std::mem::take(&mut self.state.borrow_mut().groups);
        let (mut joins, mut syncs) = (0, 0);
        for (_, mut g) in groups {
            for m in g.members.values_mut() {
                if let Some(tx) = m.awaiting_join.take() {
                    tx.send(JoinOutcome::error(
                        &m.member_id,
                        code(ResponseError::NotCoordinator),
                    ));
                    joins += 1;
                }
                if let Some(tx) = m.awaiting_sync.take() {
                    tx.send((code(ResponseError::NotCoordinator), Bytes::new()));
                    syncs += 1;
                }
            }
        }
        if joins + syncs > 0 {
            tracing::info!(
                parked_joins = joins,
                parked_syncs = syncs,
                "group coordinator unloaded: parked requests answered NOT_COORDINATOR"
            );
        }
    }

    /// Returns how long to sleep before the next check, or None when the watch is over.
    fn check_member_expiry(
        &self,
        group_id: &str,
        member_id: &str,
        incarnation: u64,
    ) -> Option<Duration> {
        let mut st = self.state.borrow_mut();
        let group = st.groups.get_mut(group_id)?;
        let m = group.members.get(member_id)?;
        if m.incarnation != incarnation {
            return None;
        }
        let session = millis(i64::from(m.session_timeout_ms));
        let timeout = if m.is_new && m.awaiting_join.is_some() {
            Duration::from_millis(self.config.new_member_join_timeout_ms)
        } else {
            session
        };
        let deadline = m.last_heartbeat + timeout;
        let now = Instant::now();
        if now < deadline {
            return Some(deadline - now);
        }
        // Kafka's shouldKeepAlive: an old member waiting in JoinGroup is bounded by the
        // rebalance timeout instead, a member waiting in SyncGroup by the pending-sync timer.
        if (m.awaiting_join.is_some() && !m.is_new) || m.awaiting_sync.is_some() {
            return Some(session.max(Duration::from_millis(1)));
        }
        tracing::info!(group = %group_id, member = %member_id, "member session expired, removing");
        self.remove_member_and_update_group(group, member_id, "session timeout expired");
        None
    }

    /// A KIP-394 pending member id expires after the session timeout unless it joins.
    pub(super) fn spawn_pending_expiry(&self, group_id: &str, member_id: &str, session_ms: i32) {
        let weak = self.this.clone();
        let gid = group_id.to_owned();
        let mid = member_id.to_owned();
        spawn_detached(async move {
            glommio::timer::sleep(millis(i64::from(session_ms))).await;
            if let Some(c) = weak.upgrade() {
                let mut st = c.state.borrow_mut();
                if let Some(group) = st.groups.get_mut(&gid) {
                    if group.pending_members.remove(&mid) {
                        c.try_complete_join(group);
                    }
                }
            }
        });
    }

    pub(super) fn new_member(&self, member_id: String, p: &JoinParams) -> Member {
        Member {
            member_id,
            group_instance_id: p.group_instance_id.clone(),
            client_id: p.client_id.clone(),
            client_host: p.client_host.clone(),
            rebalance_timeout_ms: p.rebalance_timeout_ms,
            session_timeout_ms: p.session_timeout_ms,
            protocol_type: p.protocol_type.clone(),
            protocols: p.protocols.clone(),
            assignment: Bytes::new(),
            awaiting_join: None,
            awaiting_sync: None,
            is_new: false,
            last_heartbeat: Instant::now(),
            incarnation: self.next_counter(),
        }
    }
}

/// Runs `fut` as a detached local task. glommio may poll a new task right away, inside
/// the caller's state borrow (and a zero-length sleep is ready at once), so the task yields
/// before anything else.
fn spawn_detached(fut: impl std::future::Future<Output = ()> + 'static) {
    glommio::spawn_local(async move {
        futures_lite::future::yield_now().await;
        fut.await;
    })
    .detach();
}

/// Kafka's InitialDelayedJoin: wait `delay`; while new members keep arriving, wait again
/// (at most `initial` each time) until `remaining` is used up; then complete the join.
async fn initial_delay_timer(
    weak: Weak<GroupCoordinator>,
    group_id: String,
    epoch: u64,
    initial: i64,
    mut remaining: i64,
) {
    let mut delay = initial;
    loop {
        glommio::timer::sleep(millis(delay)).await;
        let Some(c) = weak.upgrade() else { return };
        let mut st = c.state.borrow_mut();
        let Some(group) = st.groups.get_mut(&group_id) else {
            return;
        };
        if !group.is(GroupState::PreparingRebalance) || group.rebalance_epoch != epoch {
            return;
        }
        if group.new_member_added && remaining > 0 {
            group.new_member_added = false;
            delay = initial.min(remaining);
            remaining -= delay;
            continue;
        }
        group.initial_delay_active = false;
        c.complete_join(group);
        return;
    }
}

/// Kafka's resetAndPropagateAssignmentError: every parked SyncGroup gets `error`, and
/// its member a fresh session (Kafka's completeAndScheduleNextHeartbeatExpiration in
/// propagateAssignment): a follower that waited in SyncGroup without heartbeats, as
/// librdkafka's and sarama's do, must not expire in the same instant as the silent
/// leader that caused the rebalance, or its rejoin is UNKNOWN_MEMBER_ID.
pub(super) fn reset_and_propagate_assignment_error(group: &mut Group, error: i16) {
    let now = Instant::now();
    for m in group.members.values_mut() {
        m.assignment = Bytes::new();
        if let Some(tx) = m.awaiting_sync.take() {
            tx.send((error, Bytes::new()));
            m.last_heartbeat = now;
        }
    }
}
