//! JoinGroup, SyncGroup, Heartbeat and LeaveGroup, as Kafka's GroupCoordinator handles them
//! (KIP-394 member-id round trip, KIP-345 static membership, KIP-814 skip-assignment).
//!
//! Each request first runs a synchronous step under one state borrow; the step either
//! answers at once or parks the request on a oneshot that the rebalance machinery fulfils
//! (JoinGroup until the join phase completes, SyncGroup until the leader's assignment is
//! durable). The borrow is always released before awaiting.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::coordinator::{code, now_ms, reset_and_propagate_assignment_error, GroupCoordinator};
use super::oneshot::{self, Receiver};
use super::state::{Group, GroupState, JoinOutcome, SyncOutcome};
use super::{write_error, WriteFailed};

/// A JoinGroup request, normalised across versions.
pub(super) struct JoinParams {
    pub(super) group_id: String,
    pub(super) member_id: String,
    pub(super) group_instance_id: Option<String>,
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) session_timeout_ms: i32,
    pub(super) rebalance_timeout_ms: i32,
    pub(super) protocol_type: String,
    pub(super) protocols: Vec<(String, Bytes)>,
    /// KIP-394: v4+ must come back with the assigned member id.
    pub(super) require_known_member_id: bool,
    /// KIP-814: v9+ leaders may be told to skip the assignment.
    pub(super) supports_skip_assignment: bool,
}

type PersistFuture = Pin<Box<dyn Future<Output = Result<(), WriteFailed>>>>;

/// What to undo when a static member's replacement cannot be stored (Kafka reverts it so
/// the old instance keeps working).
struct StaticRevert {
    instance: String,
    old_id: String,
    new_id: String,
    protocols: Vec<(String, Bytes)>,
    rebalance_timeout_ms: i32,
    session_timeout_ms: i32,
}

enum JoinStep {
    Done(JoinOutcome),
    Wait(Receiver<JoinOutcome>),
    /// Static member replaced in a Stable group: answer after the group record is durable.
    /// Meanwhile the member awaits its join (the receiver): a rebalance that completes
    /// first answers it with its new generation instead, as Kafka's completeJoinFuture.
    Persist(
        PersistFuture,
        JoinOutcome,
        StaticRevert,
        Receiver<JoinOutcome>,
    ),
}

enum SyncStep {
    Done(SyncOutcome),
    Wait(Receiver<SyncOutcome>),
    /// The leader's assignment: store it, then propagate, then answer.
    Leader {
        write: PersistFuture,
        rx: Receiver<SyncOutcome>,
        generation: i32,
        assignment: HashMap<String, Bytes>,
    },
}

fn opt_string(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.as_str().to_owned())
}

/// The checks SyncGroup and Heartbeat share, in Kafka's order: a group id, a live group,
/// and no fenced static instance. Returns the group or the error to answer with.
fn live_group<'a>(
    groups: &'a mut HashMap<String, Group>,
    group_id: &str,
    member_id: &str,
    instance: Option<&str>,
) -> Result<&'a mut Group, ResponseError> {
    if group_id.is_empty() {
        return Err(ResponseError::InvalidGroupId);
    }
    let group = groups
        .get_mut(group_id)
        .ok_or(ResponseError::UnknownMemberId)?;
    if group.is(GroupState::Dead) {
        return Err(ResponseError::CoordinatorNotAvailable);
    }
    if group.is_static_member_fenced(member_id, instance) {
        return Err(ResponseError::FencedInstanceId);
    }
    Ok(group)
}

impl GroupCoordinator {
    /// JoinGroup (v0-v9). Parks until the rebalance completes; answers MEMBER_ID_REQUIRED
    /// at once to v4+ members without an id.
    pub(crate) async fn join_group(
        &self,
        req: JoinGroupRequest,
        version: i16,
        client_id: &str,
        client_host: &str,
    ) -> JoinGroupResponse {
        let params = JoinParams {
            group_id: req.group_id.0.as_str().to_owned(),
            member_id: req.member_id.as_str().to_owned(),
            group_instance_id: if version >= 5 {
                opt_string(&req.group_instance_id)
            } else {
                None
            },
            client_id: client_id.to_owned(),
            client_host: client_host.to_owned(),
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: if version == 0 {
                req.session_timeout_ms
            } else {
                req.rebalance_timeout_ms
            },
            protocol_type: req.protocol_type.as_str().to_owned(),
            protocols: req
                .protocols
                .iter()
                .map(|p| (p.name.as_str().to_owned(), p.metadata.clone()))
                .collect(),
            require_known_member_id: version >= 4,
            supports_skip_assignment: version >= 9,
        };
        let outcome = match self.join_step(&params) {
            JoinStep::Done(o) => o,
            JoinStep::Wait(rx) => rx.await.unwrap_or_else(|| {
                JoinOutcome::error(&params.member_id, code(ResponseError::UnknownMemberId))
            }),
            JoinStep::Persist(write, ok, revert, rx) => {
                let result = write.await;
                // still awaiting: nothing answered it while the record was written
                let waiting = self.take_join_waiter(&params.group_id, &revert.new_id);
                match (result, waiting) {
                    (Ok(()), Some(tx)) => {
                        tx.send(ok);
                    }
                    (Err((c, e)), Some(tx)) => {
                        tracing::warn!(group = %params.group_id, error = %e, "storing static member replacement failed");
                        self.revert_static_replacement(&params.group_id, revert);
                        tx.send(JoinOutcome::error("", write_error(c)));
                    }
                    // a rebalance, the member's removal or an unload answered it first;
                    // a failed write then changes nothing (the next generation's record
                    // is written at its sync)
                    (_, None) => {}
                }
                rx.await.unwrap_or_else(|| {
                    JoinOutcome::error(&params.member_id, code(ResponseError::UnknownMemberId))
                })
            }
        };
        join_response(outcome, version)
    }

    fn join_step(&self, p: &JoinParams) -> JoinStep {
        if p.group_id.is_empty() {
            return JoinStep::Done(JoinOutcome::error(
                &p.member_id,
                code(ResponseError::InvalidGroupId),
            ));
        }
        if p.session_timeout_ms < self.config.min_session_timeout_ms
            || p.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return JoinStep::Done(JoinOutcome::error(
                &p.member_id,
                code(ResponseError::InvalidSessionTimeout),
            ));
        }
        let mut st = self.state.borrow_mut();
        let unknown = p.member_id.is_empty();
        if !st.groups.contains_key(&p.group_id) {
            if !unknown {
                return JoinStep::Done(JoinOutcome::error(
                    &p.member_id,
                    code(ResponseError::UnknownMemberId),
                ));
            }
            st.groups
                .insert(p.group_id.clone(), Group::new(&p.group_id, now_ms()));
        }
        let Some(group) = st.groups.get_mut(&p.group_id) else {
            return JoinStep::Done(JoinOutcome::error(
                &p.member_id,
                code(ResponseError::CoordinatorNotAvailable),
            ));
        };
        if group.is(GroupState::Dead) {
            return JoinStep::Done(JoinOutcome::error(
                &p.member_id,
                code(ResponseError::CoordinatorNotAvailable),
            ));
        }
        if !self.accepts_joining_member(group, p) {
            group.pending_members.remove(&p.member_id);
            if group.members.contains_key(&p.member_id) {
                self.remove_member_and_update_group(group, &p.member_id, "group.max.size");
            }
            tracing::info!(group = %p.group_id, max = self.config.max_group_size, "group is full (group.max.size)");
            return JoinStep::Done(JoinOutcome::error(
                "",
                code(ResponseError::GroupMaxSizeReached),
            ));
        }
        let names: Vec<String> = p.protocols.iter().map(|(n, _)| n.clone()).collect();
        if !group.supports_protocols(&p.protocol_type, &names) {
            return JoinStep::Done(JoinOutcome::error(
                &p.member_id,
                code(ResponseError::InconsistentGroupProtocol),
            ));
        }
        let step = if unknown {
            self.new_member_join(group, p)
        } else {
            self.current_member_join(group, p)
        };
        if group.is(GroupState::PreparingRebalance) {
            self.try_complete_join(group);
        }
        step
    }

    /// Kafka's acceptJoiningMember (`group.max.size`): an Empty group takes anyone; one
    /// preparing a rebalance takes a member already awaiting its join, and others while
    /// fewer than the maximum await theirs (so a group over the maximum, after the setting
    /// was lowered, drops its last rejoiners); a Stable or completing group takes its
    /// members, and new ones while it is below the maximum. Unlike Kafka, a known static
    /// member rejoining under a new member id is always taken: it replaces itself.
    fn accepts_joining_member(&self, group: &Group, p: &JoinParams) -> bool {
        let max = self.config.max_group_size;
        let replaces_itself = p
            .group_instance_id
            .as_ref()
            .is_some_and(|i| group.static_members.contains_key(i));
        let member = group.members.get(&p.member_id);
        match group.state {
            GroupState::Empty | GroupState::Dead => true,
            GroupState::PreparingRebalance => {
                member.is_some_and(|m| m.awaiting_join.is_some())
                    || replaces_itself
                    || group.awaiting_join_count() < max
            }
            GroupState::Stable | GroupState::CompletingRebalance => {
                member.is_some() || replaces_itself || group.members.len() < max
            }
        }
    }

    /// After a load: a group with more members than `group.max.size` (the setting was
    /// lowered) rebalances, so that its members can commit before the last rejoiners are
    /// refused (Kafka's onLoaded).
    pub(super) fn rebalance_groups_over_capacity(&self) {
        let max = self.config.max_group_size;
        let mut st = self.state.borrow_mut();
        for group in st.groups.values_mut() {
            if group.members.len() > max {
                tracing::info!(group = %group.group_id, members = group.members.len(), max, "loaded group is over group.max.size: rebalancing");
                self.maybe_prepare_rebalance(group, "over group.max.size after a load");
            }
        }
    }

    fn new_member_join(&self, group: &mut Group, p: &JoinParams) -> JoinStep {
        let known_static = p
            .group_instance_id
            .as_ref()
            .is_some_and(|i| group.static_members.contains_key(i));
        let prefix = p.group_instance_id.as_deref().unwrap_or(&p.client_id);
        let new_id = self.generate_member_id(prefix);
        if known_static {
            return self.replace_static_member(group, p, new_id);
        }
        if p.group_instance_id.is_none() && p.require_known_member_id {
            group.pending_members.insert(new_id.clone());
            self.spawn_pending_expiry(&group.group_id, &new_id, p.session_timeout_ms);
            return JoinStep::Done(JoinOutcome::error(
                &new_id,
                code(ResponseError::MemberIdRequired),
            ));
        }
        JoinStep::Wait(self.add_member_and_rebalance(group, p, new_id))
    }

    fn current_member_join(&self, group: &mut Group, p: &JoinParams) -> JoinStep {
        let id = p.member_id.as_str();
        if group.pending_members.contains(id) {
            if p.group_instance_id.is_some() {
                // Pending ids are only handed to dynamic members.
                return JoinStep::Done(JoinOutcome::error(
                    id,
                    code(ResponseError::UnknownMemberId),
                ));
            }
            return JoinStep::Wait(self.add_member_and_rebalance(group, p, id.to_owned()));
        }
        if group.is_static_member_fenced(id, p.group_instance_id.as_deref()) {
            return JoinStep::Done(JoinOutcome::error(
                id,
                code(ResponseError::FencedInstanceId),
            ));
        }
        let instance_unknown = p
            .group_instance_id
            .as_ref()
            .is_some_and(|i| !group.static_members.contains_key(i));
        if !group.members.contains_key(id) || instance_unknown {
            return JoinStep::Done(JoinOutcome::error(id, code(ResponseError::UnknownMemberId)));
        }
        let is_leader = group.is_leader(id);
        let matches = group
            .members
            .get(id)
            .is_some_and(|m| m.matches(&p.protocols));
        match group.state {
            GroupState::PreparingRebalance => {
                JoinStep::Wait(self.update_member_and_rebalance(group, p))
            }
            GroupState::CompletingRebalance if matches => {
                // A retry of a JoinGroup whose answer was lost: answer the same generation.
                JoinStep::Done(self.current_generation_outcome(group, id, is_leader))
            }
            GroupState::Stable if matches && !is_leader => {
                JoinStep::Done(self.current_generation_outcome(group, id, false))
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                // Changed metadata, or the leader asks for a rebalance (e.g. new topics).
                JoinStep::Wait(self.update_member_and_rebalance(group, p))
            }
            GroupState::Empty | GroupState::Dead => {
                JoinStep::Done(JoinOutcome::error(id, code(ResponseError::UnknownMemberId)))
            }
        }
    }

    fn current_generation_outcome(
        &self,
        group: &Group,
        member_id: &str,
        with_members: bool,
    ) -> JoinOutcome {
        JoinOutcome {
            error: 0,
            member_id: member_id.to_owned(),
            generation_id: group.generation_id,
            protocol_type: group.protocol_type.clone(),
            protocol_name: group.protocol_name.clone(),
            leader_id: group.leader_id.clone().unwrap_or_default(),
            skip_assignment: false,
            members: if with_members {
                group.member_metadata_for_leader()
            } else {
                Vec::new()
            },
        }
    }

    fn add_member_and_rebalance(
        &self,
        group: &mut Group,
        p: &JoinParams,
        member_id: String,
    ) -> Receiver<JoinOutcome> {
        let (tx, rx) = oneshot::channel();
        let mut member = self.new_member(member_id, p);
        member.awaiting_join = Some(tx);
        member.is_new = true;
        let incarnation = member.incarnation;
        let mid = member.member_id.clone();
        if group.is(GroupState::PreparingRebalance) && group.generation_id == 0 {
            group.new_member_added = true;
        }
        group.add_member(member);
        self.spawn_member_expiry(&group.group_id, &mid, incarnation);
        self.maybe_prepare_rebalance(group, "adding new member");
        rx
    }

    fn update_member_and_rebalance(
        &self,
        group: &mut Group,
        p: &JoinParams,
    ) -> Receiver<JoinOutcome> {
        let (tx, rx) = oneshot::channel();
        if let Some(m) = group.members.get_mut(&p.member_id) {
            m.protocols = p.protocols.clone();
            m.rebalance_timeout_ms = p.rebalance_timeout_ms;
            m.session_timeout_ms = p.session_timeout_ms;
            // A duplicate JoinGroup supersedes the earlier one, which is told to join again
            // (REBALANCE_IN_PROGRESS keeps its member id; Kafka leaves it unanswered until
            // the client's own timeout).
            if let Some(earlier) = m.awaiting_join.replace(tx) {
                earlier.send(JoinOutcome::error(
                    &p.member_id,
                    code(ResponseError::RebalanceInProgress),
                ));
            }
        }
        self.maybe_prepare_rebalance(group, "member metadata changed or leader rejoined");
        rx
    }

    /// KIP-345: a static member rejoining without a member id takes over its old member id's
    /// place; the old id is fenced. In a Stable group nothing rebalances unless the selected
    /// protocol would change.
    fn replace_static_member(&self, group: &mut Group, p: &JoinParams, new_id: String) -> JoinStep {
        let Some(instance) = p.group_instance_id.clone() else {
            return JoinStep::Done(JoinOutcome::error("", code(ResponseError::UnknownMemberId)));
        };
        let Some(old_id) = group.static_members.get(&instance).cloned() else {
            return JoinStep::Done(JoinOutcome::error("", code(ResponseError::UnknownMemberId)));
        };
        let Some(mut member) = group.members.remove(&old_id) else {
            return JoinStep::Done(JoinOutcome::error("", code(ResponseError::UnknownMemberId)));
        };
        let old_leader = group.leader_id.clone().unwrap_or_default();
        if let Some(tx) = member.awaiting_join.take() {
            tx.send(JoinOutcome::error(
                &old_id,
                code(ResponseError::FencedInstanceId),
            ));
        }
        if let Some(tx) = member.awaiting_sync.take() {
            tx.send((code(ResponseError::FencedInstanceId), Bytes::new()));
        }
        let revert = StaticRevert {
            instance: instance.clone(),
            old_id: old_id.clone(),
            new_id: new_id.clone(),
            protocols: std::mem::take(&mut member.protocols),
            rebalance_timeout_ms: member.rebalance_timeout_ms,
            session_timeout_ms: member.session_timeout_ms,
        };
        member.member_id = new_id.clone();
        member.incarnation = self.next_counter();
        member.last_heartbeat = std::time::Instant::now();
        member.protocols = p.protocols.clone();
        member.rebalance_timeout_ms = p.rebalance_timeout_ms;
        member.session_timeout_ms = p.session_timeout_ms;
        member.client_id = p.client_id.clone();
        member.client_host = p.client_host.clone();
        let incarnation = member.incarnation;
        group.members.insert(new_id.clone(), member);
        group
            .static_members
            .insert(instance.clone(), new_id.clone());
        if group.is_leader(&old_id) {
            group.leader_id = Some(new_id.clone());
        }
        if group.pending_sync.remove(&old_id) {
            group.pending_sync.insert(new_id.clone());
        }
        self.spawn_member_expiry(&group.group_id, &new_id, incarnation);
        tracing::info!(group = %group.group_id, instance = %instance, old = %old_id, new = %new_id, "static member rejoined with a new member id");

        match group.state {
            GroupState::Stable if group.select_protocol() == group.protocol_name => {
                let is_leader = group.is_leader(&new_id);
                let skip = is_leader && p.supports_skip_assignment;
                let outcome = JoinOutcome {
                    error: 0,
                    member_id: new_id.clone(),
                    generation_id: group.generation_id,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol_name.clone(),
                    // Pre-KIP-814 leaders get the old leader id so they do not re-assign.
                    leader_id: if skip { new_id.clone() } else { old_leader },
                    skip_assignment: skip,
                    members: if skip {
                        group.member_metadata_for_leader()
                    } else {
                        Vec::new()
                    },
                };
                let record = Self::group_record(group, None);
                let (tx, rx) = oneshot::channel();
                if let Some(m) = group.members.get_mut(&new_id) {
                    m.awaiting_join = Some(tx);
                }
                JoinStep::Persist(self.log.append(vec![record]), outcome, revert, rx)
            }
            GroupState::Stable
            | GroupState::CompletingRebalance
            | GroupState::PreparingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = group.members.get_mut(&new_id) {
                    m.awaiting_join = Some(tx);
                }
                self.maybe_prepare_rebalance(group, "static member rejoined");
                JoinStep::Wait(rx)
            }
            GroupState::Empty | GroupState::Dead => {
                JoinStep::Done(JoinOutcome::error("", code(ResponseError::UnknownMemberId)))
            }
        }
    }

    /// Takes the join waiter of `member_id` of `group_id`, if it still has one.
    fn take_join_waiter(
        &self,
        group_id: &str,
        member_id: &str,
    ) -> Option<oneshot::Sender<JoinOutcome>> {
        let mut st = self.state.borrow_mut();
        let member = st.groups.get_mut(group_id)?.members.get_mut(member_id)?;
        member.awaiting_join.take()
    }

    /// Puts the old member id back after a failed store, if nothing replaced it meanwhile.
    fn revert_static_replacement(&self, group_id: &str, r: StaticRevert) {
        let mut st = self.state.borrow_mut();
        let Some(group) = st.groups.get_mut(group_id) else {
            return;
        };
        if group.static_members.get(&r.instance) != Some(&r.new_id) {
            return;
        }
        let Some(mut member) = group.members.remove(&r.new_id) else {
            return;
        };
        member.member_id = r.old_id.clone();
        member.protocols = r.protocols;
        member.rebalance_timeout_ms = r.rebalance_timeout_ms;
        member.session_timeout_ms = r.session_timeout_ms;
        member.incarnation = self.next_counter();
        member.last_heartbeat = std::time::Instant::now();
        let incarnation = member.incarnation;
        group.members.insert(r.old_id.clone(), member);
        group.static_members.insert(r.instance, r.old_id.clone());
        if group.is_leader(&r.new_id) {
            group.leader_id = Some(r.old_id.clone());
        }
        if group.pending_sync.remove(&r.new_id) {
            group.pending_sync.insert(r.old_id.clone());
        }
        self.spawn_member_expiry(group_id, &r.old_id, incarnation);
    }

    /// SyncGroup (v0-v5). The leader's assignment is made durable before anyone is answered.
    pub(crate) async fn sync_group(
        &self,
        req: SyncGroupRequest,
        version: i16,
    ) -> SyncGroupResponse {
        let group_id = req.group_id.0.as_str().to_owned();
        let (error, assignment) = match self.sync_step(&req, version) {
            SyncStep::Done(o) => o,
            SyncStep::Wait(rx) => rx
                .await
                .unwrap_or((code(ResponseError::UnknownMemberId), Bytes::new())),
            SyncStep::Leader {
                write,
                rx,
                generation,
                assignment,
            } => {
                let result = write.await;
                self.on_assignment_stored(&group_id, generation, assignment, result);
                rx.await
                    .unwrap_or((code(ResponseError::UnknownMemberId), Bytes::new()))
            }
        };
        let mut resp = SyncGroupResponse::default()
            .with_error_code(error)
            .with_assignment(assignment);
        if version >= 5 && error == 0 {
            let st = self.state.borrow();
            if let Some(g) = st.groups.get(&group_id) {
                resp.protocol_type = g.protocol_type.clone().map(StrBytes::from_string);
                resp.protocol_name = g.protocol_name.clone().map(StrBytes::from_string);
            }
        }
        resp
    }

    fn sync_step(&self, req: &SyncGroupRequest, version: i16) -> SyncStep {
        let err = |e: ResponseError| SyncStep::Done((code(e), Bytes::new()));
        let group_id = req.group_id.0.as_str();
        let member_id = req.member_id.as_str();
        let instance = if version >= 3 {
            opt_string(&req.group_instance_id)
        } else {
            None
        };
        let mut st = self.state.borrow_mut();
        let group = match live_group(&mut st.groups, group_id, member_id, instance.as_deref()) {
            Ok(g) => g,
            Err(e) => return err(e),
        };
        if !group.members.contains_key(member_id) {
            return err(ResponseError::UnknownMemberId);
        }
        if req.generation_id != group.generation_id {
            return err(ResponseError::IllegalGeneration);
        }
        if version >= 5 {
            let type_mismatch = req
                .protocol_type
                .as_ref()
                .is_some_and(|t| group.protocol_type.as_deref() != Some(t.as_str()));
            let name_mismatch = req
                .protocol_name
                .as_ref()
                .is_some_and(|n| group.protocol_name.as_deref() != Some(n.as_str()));
            if type_mismatch || name_mismatch {
                return err(ResponseError::InconsistentGroupProtocol);
            }
        }
        match group.state {
            GroupState::Empty => err(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => err(ResponseError::RebalanceInProgress),
            GroupState::Dead => err(ResponseError::CoordinatorNotAvailable),
            GroupState::Stable => {
                group.pending_sync.remove(member_id);
                match group.members.get_mut(member_id) {
                    Some(m) => {
                        m.last_heartbeat = std::time::Instant::now();
                        SyncStep::Done((0, m.assignment.clone()))
                    }
                    None => err(ResponseError::UnknownMemberId),
                }
            }
            GroupState::CompletingRebalance => {
                group.pending_sync.remove(member_id);
                let (tx, rx) = oneshot::channel();
                if let Some(m) = group.members.get_mut(member_id) {
                    m.awaiting_sync = Some(tx);
                }
                if !group.is_leader(member_id) {
                    return SyncStep::Wait(rx);
                }
                let mut assignment: HashMap<String, Bytes> = req
                    .assignments
                    .iter()
                    .filter(|a| group.members.contains_key(a.member_id.as_str()))
                    .map(|a| (a.member_id.as_str().to_owned(), a.assignment.clone()))
                    .collect();
                for id in group.members.keys() {
                    assignment.entry(id.clone()).or_default();
                }
                tracing::info!(group = %group_id, generation = group.generation_id, "assignment received from leader");
                let record = Self::group_record(group, Some(&assignment));
                SyncStep::Leader {
                    write: self.log.append(vec![record]),
                    rx,
                    generation: group.generation_id,
                    assignment,
                }
            }
        }
    }

    fn on_assignment_stored(
        &self,
        group_id: &str,
        generation: i32,
        assignment: HashMap<String, Bytes>,
        result: Result<(), WriteFailed>,
    ) {
        let mut st = self.state.borrow_mut();
        let Some(group) = st.groups.get_mut(group_id) else {
            return;
        };
        // Another member may have forced a new rebalance meanwhile: then do nothing.
        if !group.is(GroupState::CompletingRebalance) || group.generation_id != generation {
            return;
        }
        if let Err((c, e)) = result {
            tracing::warn!(group = %group_id, error = %e, "storing group assignment failed");
            reset_and_propagate_assignment_error(group, write_error(c));
            self.maybe_prepare_rebalance(group, "error storing the group assignment");
            return;
        }
        let now = std::time::Instant::now();
        for m in group.members.values_mut() {
            m.assignment = assignment.get(&m.member_id).cloned().unwrap_or_default();
            if let Some(tx) = m.awaiting_sync.take() {
                tx.send((0, m.assignment.clone()));
                m.last_heartbeat = now;
            }
        }
        group.transition_to(GroupState::Stable, now_ms());
        tracing::info!(group = %group_id, generation, "group stable");
    }

    /// Heartbeat (v0-v4).
    pub(crate) async fn heartbeat(&self, req: HeartbeatRequest, version: i16) -> HeartbeatResponse {
        HeartbeatResponse::default().with_error_code(self.heartbeat_code(&req, version))
    }

    fn heartbeat_code(&self, req: &HeartbeatRequest, version: i16) -> i16 {
        let group_id = req.group_id.0.as_str();
        let member_id = req.member_id.as_str();
        let instance = if version >= 3 {
            opt_string(&req.group_instance_id)
        } else {
            None
        };
        let mut st = self.state.borrow_mut();
        let group = match live_group(&mut st.groups, group_id, member_id, instance.as_deref()) {
            Ok(g) => g,
            Err(e) => return code(e),
        };
        let state = group.state;
        let generation = group.generation_id;
        let Some(m) = group.members.get_mut(member_id) else {
            return code(ResponseError::UnknownMemberId);
        };
        if req.generation_id != generation {
            return code(ResponseError::IllegalGeneration);
        }
        match state {
            GroupState::Empty | GroupState::Dead => code(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => {
                m.last_heartbeat = std::time::Instant::now();
                code(ResponseError::RebalanceInProgress)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                m.last_heartbeat = std::time::Instant::now();
                0
            }
        }
    }

    /// LeaveGroup (v0-v5; v3+ removes a batch of members with per-member errors).
    pub(crate) async fn leave_group(
        &self,
        req: LeaveGroupRequest,
        version: i16,
    ) -> LeaveGroupResponse {
        let leaving: Vec<(String, Option<String>)> = if version >= 3 {
            req.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.as_str().to_owned(),
                        opt_string(&m.group_instance_id),
                    )
                })
                .collect()
        } else {
            vec![(req.member_id.as_str().to_owned(), None)]
        };
        let (top, results) = self.leave_members(req.group_id.0.as_str(), &leaving);
        let mut resp = LeaveGroupResponse::default();
        if version >= 3 {
            resp.error_code = top;
            resp.members = leaving
                .iter()
                .zip(results)
                .map(|((id, inst), e)| {
                    MemberResponse::default()
                        .with_member_id(StrBytes::from_string(id.clone()))
                        .with_group_instance_id(inst.clone().map(StrBytes::from_string))
                        .with_error_code(e)
                })
                .collect();
        } else {
            resp.error_code = if top != 0 {
                top
            } else {
                results.first().copied().unwrap_or(0)
            };
        }
        resp
    }

    fn leave_members(
        &self,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> (i16, Vec<i16>) {
        if group_id.is_empty() {
            return (code(ResponseError::InvalidGroupId), Vec::new());
        }
        let mut st = self.state.borrow_mut();
        let Some(group) = st.groups.get_mut(group_id) else {
            return (0, vec![code(ResponseError::UnknownMemberId); leaving.len()]);
        };
        if group.is(GroupState::Dead) {
            return (code(ResponseError::CoordinatorNotAvailable), Vec::new());
        }
        let mut results = Vec::with_capacity(leaving.len());
        for (member_id, instance) in leaving {
            let by_instance = instance
                .as_ref()
                .and_then(|i| group.static_members.get(i).cloned());
            let e = if !member_id.is_empty()
                && group.is_static_member_fenced(member_id, instance.as_deref())
            {
                code(ResponseError::FencedInstanceId)
            } else if group.pending_members.remove(member_id.as_str()) {
                self.try_complete_join(group);
                0
            } else if let Some(id) = by_instance.or_else(|| {
                group
                    .members
                    .contains_key(member_id.as_str())
                    .then(|| member_id.clone())
            }) {
                tracing::info!(group = %group_id, member = %id, "member left the group");
                self.remove_member_and_update_group(group, &id, "member left the group");
                0
            } else {
                code(ResponseError::UnknownMemberId)
            };
            results.push(e);
        }
        (0, results)
    }
}

fn join_response(o: JoinOutcome, version: i16) -> JoinGroupResponse {
    let members = o
        .members
        .into_iter()
        .map(|(id, inst, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(StrBytes::from_string(id))
                .with_group_instance_id(if version >= 5 {
                    inst.map(StrBytes::from_string)
                } else {
                    None
                })
                .with_metadata(metadata)
        })
        .collect();
    let protocol_name = if version >= 7 {
        o.protocol_name.map(StrBytes::from_string)
    } else {
        Some(StrBytes::from_string(o.protocol_name.unwrap_or_default()))
    };
    JoinGroupResponse::default()
        .with_error_code(o.error)
        .with_generation_id(o.generation_id)
        .with_protocol_type(if version >= 7 {
            o.protocol_type.map(StrBytes::from_string)
        } else {
            None
        })
        .with_protocol_name(protocol_name)
        .with_leader(StrBytes::from_string(o.leader_id))
        .with_skip_assignment(version >= 9 && o.skip_assignment)
        .with_member_id(StrBytes::from_string(o.member_id))
        .with_members(members)
}
