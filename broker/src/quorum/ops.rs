//! How the quorum thread turns metadata operations into raft proposals (`Runner` methods,
//! `mod.rs`): an op submitted on the leader is decided against the speculative image and
//! proposed; on a follower it is forwarded to the leader; broker-only nodes join as
//! learners; the speculative image is the committed one plus the proposals in flight.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use prost::Message as _;
use sluice_proto::metadata::{MetadataBatch, MetadataRecord};

use super::{failed, transport, Event, OpReply, Pending, Runner, Waiting, MAX_FORWARDS};
use crate::metadata::controller::{BrokerHeartbeat, MetadataOp, MetadataOpResult};

impl Runner {
    pub(super) fn submit(
        &mut self,
        op: MetadataOp,
        reply: flume::Sender<OpReply>,
        deadline: Instant,
        forwarded: bool,
    ) {
        if !forwarded && matches!(op, MetadataOp::ControlledShutdown { .. }) {
            // this broker is leaving: no heartbeat may unfence it again
            self.broker = false;
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = reply.send(failed(
                ResponseError::RequestTimedOut,
                "timed out waiting for the active controller",
            ));
            return;
        }
        if self.is_ready_leader() {
            if let MetadataOp::Heartbeat(hb) = &op {
                self.maybe_add_learner(hb);
            }
            let next = self.node.status().last_index + 1;
            let (Some(logic), Some(spec)) = (self.logic.as_mut(), self.spec.as_mut()) else {
                return;
            };
            let (records, result) = logic.decide(spec, next, op, now);
            if records.is_empty() {
                let _ = reply.send((result, 0));
                return;
            }
            self.propose(records, result, Some(reply), deadline);
            return;
        }
        match self.leader {
            Some(l) if l as i32 != self.local && !forwarded => self.forward(l, op, reply, deadline),
            Some(l) if l as i32 != self.local => {
                let _ = reply.send(failed(
                    ResponseError::NotController,
                    format!(
                        "node {} is not the active controller; node {l} is",
                        self.local
                    ),
                ));
            }
            // a learner not added yet hears from no leader: ask the voters in turn
            None if !self.voter && !forwarded && !self.voters.is_empty() => {
                self.rotor = self.rotor.wrapping_add(1);
                let (id, _) = self.voters[self.rotor % self.voters.len()];
                self.forward(id as u64, op, reply, deadline);
            }
            _ => self.waiting.push(Waiting {
                op,
                reply,
                deadline,
                forwarded,
            }),
        }
    }

    pub(super) fn forward(
        &self,
        leader: u64,
        op: MetadataOp,
        reply: flume::Sender<OpReply>,
        deadline: Instant,
    ) {
        let Some(addr) = self
            .voters
            .iter()
            .find(|(id, _)| *id as u64 == leader)
            .map(|(_, a)| *a)
        else {
            let _ = reply.send(failed(
                ResponseError::NotController,
                format!("no address for node {leader}"),
            ));
            return;
        };
        if self.forwards.fetch_add(1, Ordering::Relaxed) >= MAX_FORWARDS {
            self.forwards.fetch_sub(1, Ordering::Relaxed);
            let _ = reply.send(failed(
                ResponseError::NotController,
                "too many calls to the active controller in flight",
            ));
            return;
        }
        let (forwards, inbox) = (self.forwards.clone(), self.inbox.clone());
        let spawned = std::thread::Builder::new()
            .name("sluice-ctl-call".into())
            .spawn(move || {
                let timeout = deadline.saturating_duration_since(Instant::now());
                let answer = transport::call(addr, &op, timeout);
                forwards.fetch_sub(1, Ordering::Relaxed);
                let not_controller = ResponseError::NotController.code();
                let retry = match &answer {
                    Err(_) => true,
                    Ok((MetadataOpResult::Failed(code, _), _)) => *code == not_controller,
                    Ok(_) => false,
                };
                // the leader died or moved: try again (through this node's view of the
                // leader) while the request's time lasts
                let pause = Duration::from_millis(100);
                if retry && Instant::now() + pause < deadline {
                    std::thread::sleep(pause);
                    let again = Event::Op {
                        op,
                        reply: reply.clone(),
                        deadline,
                        forwarded: false,
                    };
                    if inbox.send(again).is_ok() {
                        return;
                    }
                }
                let _ =
                    reply.send(answer.unwrap_or_else(|e| failed(ResponseError::NotController, e)));
            });
        if spawned.is_err() {
            self.forwards.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The leader adds a broker-only node that heartbeats as a raft learner, so it gets
    /// the log (one configuration change at a time; raft refuses a second, and the next
    /// heartbeat tries again).
    pub(super) fn maybe_add_learner(&mut self, hb: &BrokerHeartbeat) {
        if hb.controller_addr.is_none() || hb.node_id < 1 {
            return;
        }
        let id = hb.node_id as u64;
        let conf = self.node.store().conf_state();
        if conf.voters.contains(&id) || conf.learners.contains(&id) {
            return;
        }
        let mut change = raft::eraftpb::ConfChangeSingle::default();
        change.set_change_type(raft::eraftpb::ConfChangeType::AddLearnerNode);
        change.node_id = id;
        let mut cc = raft::eraftpb::ConfChangeV2::default();
        cc.mut_changes().push(change);
        match self.node.propose_conf_change(cc) {
            Ok(_) => tracing::info!(node = hb.node_id, "adding broker as a raft learner"),
            Err(e) => tracing::debug!(node = hb.node_id, error = %e, "learner not added yet"),
        }
        self.rebuild_spec();
    }

    /// Every learner in the configuration gets a peer writer, at the controller address
    /// its registration names (any voter may become the leader that feeds it).
    pub(super) fn sync_learner_peers(&mut self) {
        let Some(peers) = self.peers.as_mut() else {
            return;
        };
        let learners = self.node.store().conf_state().learners.clone();
        for id in learners {
            if peers.has(id) || id == self.local as u64 {
                continue;
            }
            let addr = self
                .node
                .state_machine()
                .image
                .broker(id as i32)
                .and_then(|b| b.controller_addr.clone())
                .and_then(|a| a.parse::<SocketAddr>().ok());
            if let Some(addr) = addr {
                peers.add(id, addr, &self.inbox);
            }
        }
    }

    /// Proposes `records` as one entry; the reply goes out when it commits.
    pub(super) fn propose(
        &mut self,
        records: Vec<MetadataRecord>,
        result: MetadataOpResult,
        reply: Option<flume::Sender<OpReply>>,
        deadline: Instant,
    ) {
        let expected = self.node.status().last_index + 1;
        let data = MetadataBatch {
            records: records.clone(),
        }
        .encode_to_vec();
        match self.node.propose(data) {
            Ok(p) => {
                self.pending.push_back(Pending {
                    index: p.index,
                    term: p.term,
                    records,
                    result,
                    reply,
                    deadline,
                });
                if p.index != expected {
                    self.rebuild_spec();
                }
            }
            Err(e) => {
                if let Some(r) = reply {
                    let _ = r.send(failed(
                        ResponseError::NotController,
                        format!("proposal refused: {e}"),
                    ));
                }
                self.rebuild_spec();
            }
        }
    }

    /// The speculative image again: committed state plus the proposals still pending.
    pub(super) fn rebuild_spec(&mut self) {
        if self.spec.is_none() {
            return;
        }
        let mut spec = self.node.state_machine().image.clone();
        let applied = self.node.status().applied;
        for p in self.pending.iter().filter(|p| p.index > applied) {
            for r in &p.records {
                spec.apply(p.index, r);
            }
        }
        self.spec = Some(spec);
    }
}
