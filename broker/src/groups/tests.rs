//! Membership tests: the coordinator runs inside a glommio LocalExecutor over an in-memory
//! `OffsetsLog`; several JoinGroup/SyncGroup requests are in flight as separate local tasks.
//! Timeouts are milliseconds, and no assertion depends on how long anything took.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::records::{GroupMetadataValue, RecordKey};
use super::{GroupConfig, GroupCoordinator, OffsetsLog};

pub(super) mod support {
    use super::*;

    /// In-memory `__consumer_offsets` partition; records land at call time (call order).
    #[derive(Default)]
    pub(crate) struct MemLog {
        pub(crate) records: RefCell<Vec<(Bytes, Option<Bytes>)>>,
        /// Every write in log order, transactional ones with their producer id.
        pub(crate) replay: RefCell<Vec<super::super::Replay>>,
        /// Writes fail at once with this storage error code.
        pub(crate) fail: Cell<Option<i16>>,
        /// Writes land but fail later (as one that outlives its replication timeout).
        pub(crate) fail_late: Cell<bool>,
        /// Extra time, in ms, before a write that lands is durable.
        pub(crate) slow_ms: Cell<u64>,
    }

    impl OffsetsLog for MemLog {
        fn append(
            &self,
            records: Vec<(Bytes, Option<Bytes>)>,
        ) -> Pin<Box<dyn Future<Output = Result<(), super::super::WriteFailed>>>> {
            if let Some(code) = self.fail.get() {
                return Box::pin(async move { Err((code, "disk on fire".to_string())) });
            }
            self.replay
                .borrow_mut()
                .extend(records.iter().cloned().map(super::super::Replay::from));
            self.records.borrow_mut().extend(records);
            if self.fail_late.get() {
                return Box::pin(async {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                    Err((
                        ResponseError::RequestTimedOut.code(),
                        "not replicated in time".to_string(),
                    ))
                });
            }
            let ms = 1 + self.slow_ms.get();
            Box::pin(async move {
                // Durability takes a moment, so other tasks interleave like on a real disk.
                glommio::timer::sleep(Duration::from_millis(ms)).await;
                Ok(())
            })
        }

        fn append_txn(
            &self,
            producer_id: i64,
            producer_epoch: i16,
            records: Vec<(Bytes, Option<Bytes>)>,
            _verification: sluice_storage::TxnVerification,
        ) -> Pin<Box<dyn Future<Output = Result<(), i16>>>> {
            if self.fail.get().is_some() || producer_epoch < 0 {
                return Box::pin(async { Err(ResponseError::ProducerFenced.code()) });
            }
            self.replay
                .borrow_mut()
                .extend(records.iter().map(|(k, v)| super::super::Replay::Record {
                    key: k.clone(),
                    value: v.clone(),
                    txn_producer: Some(producer_id),
                }));
            self.records.borrow_mut().extend(records);
            Box::pin(async {
                glommio::timer::sleep(Duration::from_millis(1)).await;
                Ok(())
            })
        }
    }

    impl MemLog {
        /// A transaction marker reaching the partition.
        pub(crate) fn marker(&self, producer_id: i64, commit: bool) {
            self.replay.borrow_mut().push(super::super::Replay::Marker {
                producer_id,
                commit,
            });
        }

        pub(crate) fn snapshot(&self) -> Vec<(Bytes, Option<Bytes>)> {
            self.records.borrow().clone()
        }

        /// The last GroupMetadata value written for `group` (None = tombstone or never).
        pub(crate) fn last_group_value(&self, group: &str) -> Option<GroupMetadataValue> {
            let recs = self.records.borrow();
            let (_, v) = recs.iter().rev().find(|(k, _)| {
                RecordKey::decode(k).ok()
                    == Some(RecordKey::GroupMetadata {
                        group: group.into(),
                    })
            })?;
            GroupMetadataValue::decode(v.as_ref()?).ok()
        }
    }

    pub(crate) fn run<F, Fut>(f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(f)
            .expect("spawn executor"); // ok: test setup
        handle.join().expect("executor panicked"); // ok: test
    }

    pub(crate) fn config() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: 100,
            min_session_timeout_ms: 1,
            ..GroupConfig::default()
        }
    }

    pub(crate) fn coordinator(config: GroupConfig) -> (Rc<MemLog>, Rc<GroupCoordinator>) {
        let log = Rc::new(MemLog::default());
        let c = GroupCoordinator::load(log.clone(), Vec::<super::super::Replay>::new(), config);
        (log, c)
    }

    /// ConsumerProtocolSubscription v0 bytes for `topics`.
    pub(crate) fn subscription(topics: &[&str]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(0);
        b.put_i32(topics.len() as i32);
        for t in topics {
            b.put_i16(t.len() as i16);
            b.put_slice(t.as_bytes());
        }
        b.put_i32(-1);
        b.freeze()
    }

    pub(crate) fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_owned())
    }

    pub(crate) struct Join<'a> {
        pub(crate) group: &'a str,
        pub(crate) member: &'a str,
        pub(crate) instance: Option<&'a str>,
        pub(crate) protocols: Vec<(&'a str, Bytes)>,
        pub(crate) session_ms: i32,
        pub(crate) rebalance_ms: i32,
    }

    impl<'a> Join<'a> {
        pub(crate) fn new(group: &'a str, member: &'a str, topics: &[&str]) -> Join<'a> {
            Join {
                group,
                member,
                instance: None,
                protocols: vec![("range", subscription(topics))],
                session_ms: 10_000,
                rebalance_ms: 5_000,
            }
        }

        pub(crate) fn request(&self) -> JoinGroupRequest {
            JoinGroupRequest::default()
                .with_group_id(GroupId(s(self.group)))
                .with_member_id(s(self.member))
                .with_group_instance_id(self.instance.map(s))
                .with_session_timeout_ms(self.session_ms)
                .with_rebalance_timeout_ms(self.rebalance_ms)
                .with_protocol_type(s("consumer"))
                .with_protocols(
                    self.protocols
                        .iter()
                        .map(|(n, m)| {
                            JoinGroupRequestProtocol::default()
                                .with_name(s(n))
                                .with_metadata(m.clone())
                        })
                        .collect(),
                )
        }
    }

    /// A full KIP-394 join (v5): get a member id, then join with it.
    pub(crate) async fn join_v5(c: &GroupCoordinator, j: &Join<'_>) -> JoinGroupResponse {
        let first = c.join_group(j.request(), 5, "client", "/127.0.0.1").await;
        if first.error_code != ResponseError::MemberIdRequired.code() {
            return first;
        }
        let retry = Join {
            member: first.member_id.as_str(),
            protocols: j.protocols.clone(),
            ..*j
        };
        c.join_group(retry.request(), 5, "client", "/127.0.0.1")
            .await
    }

    pub(crate) fn sync_req(
        group: &str,
        generation: i32,
        member: &str,
        assignments: &[(&str, &[u8])],
    ) -> SyncGroupRequest {
        SyncGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id(generation)
            .with_member_id(s(member))
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")))
            .with_assignments(
                assignments
                    .iter()
                    .map(|(m, a)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(s(m))
                            .with_assignment(Bytes::copy_from_slice(a))
                    })
                    .collect(),
            )
    }

    pub(crate) async fn heartbeat(
        c: &GroupCoordinator,
        group: &str,
        generation: i32,
        member: &str,
    ) -> i16 {
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id(generation)
            .with_member_id(s(member));
        c.heartbeat(req, 4).await.error_code
    }

    /// Brings `n` dynamic members into a Stable group; returns (generation, member ids,
    /// leader id). Each member's assignment is its index as one byte.
    pub(crate) async fn stable_group(
        c: &Rc<GroupCoordinator>,
        group: &'static str,
        n: usize,
        topics: &'static [&'static str],
    ) -> (i32, Vec<String>, String) {
        let mut tasks = Vec::new();
        for _ in 0..n {
            let c = c.clone();
            tasks.push(glommio::spawn_local(async move {
                join_v5(&c, &Join::new(group, "", topics)).await
            }));
        }
        let mut joins = Vec::new();
        for t in tasks {
            joins.push(t.await);
        }
        let generation = joins[0].generation_id;
        let leader = joins[0].leader.as_str().to_owned();
        let ids: Vec<String> = joins
            .iter()
            .map(|j| j.member_id.as_str().to_owned())
            .collect();
        let assignments: Vec<(String, Vec<u8>)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), vec![i as u8]))
            .collect();
        let mut syncs = Vec::new();
        for id in &ids {
            let c = c.clone();
            let id = id.clone();
            let is_leader = id == leader;
            let assignments = assignments.clone();
            syncs.push(glommio::spawn_local(async move {
                let a: Vec<(&str, &[u8])> = if is_leader {
                    assignments
                        .iter()
                        .map(|(m, a)| (m.as_str(), a.as_slice()))
                        .collect()
                } else {
                    Vec::new()
                };
                c.sync_group(sync_req(group, generation, &id, &a), 5).await
            }));
        }
        for (i, t) in syncs.into_iter().enumerate() {
            let r: SyncGroupResponse = t.await;
            assert_eq!(r.error_code, 0);
            assert_eq!(&r.assignment[..], &[i as u8]);
        }
        (generation, ids, leader)
    }
}

use support::*;

#[test]
fn sync_distributes_assignment_and_persists_it_first() {
    run(|| async {
        let (log, c) = coordinator(config());
        let (generation, ids, leader) = stable_group(&c, "gs", 3, &["t"]).await;
        assert_eq!(generation, 1);
        assert_eq!(c.describe_group("gs").await.group_state.as_str(), "Stable");
        let v = log.last_group_value("gs").expect("group record"); // ok: test
        assert_eq!(v.generation, 1);
        assert_eq!(v.leader.as_deref(), Some(leader.as_str()));
        assert_eq!(v.protocol.as_deref(), Some("range"));
        assert_eq!(v.members.len(), 3);
        for (i, id) in ids.iter().enumerate() {
            let m = v
                .members
                .iter()
                .find(|m| &m.member_id == id)
                .expect("member"); // ok: test
            assert_eq!(&m.assignment[..], &[i as u8]);
            assert_eq!(m.subscription, subscription(&["t"]));
        }
        // A Stable group answers SyncGroup from memory.
        let r = c
            .sync_group(sync_req("gs", generation, &ids[1], &[]), 5)
            .await;
        assert_eq!((r.error_code, &r.assignment[..]), (0, &[1u8][..]));
        // v5 protocol checks.
        let mut bad = sync_req("gs", generation, &ids[1], &[]);
        bad.protocol_name = Some(s("sticky"));
        let r = c.sync_group(bad, 5).await;
        assert_eq!(
            r.error_code,
            ResponseError::InconsistentGroupProtocol.code()
        );
    });
}

/// A leader's SyncGroup whose assignment is not stored is answered as Kafka maps the
/// write's error: a lost leadership of the offsets partition is NOT_COORDINATOR (the
/// client finds the coordinator again), too few replicas COORDINATOR_NOT_AVAILABLE.
#[test]
fn a_failed_assignment_write_answers_the_mapped_error() {
    run(|| async {
        let (log, c) = coordinator(config());
        for (storage, answer) in [
            (
                ResponseError::NotLeaderOrFollower,
                ResponseError::NotCoordinator,
            ),
            (
                ResponseError::NotEnoughReplicas,
                ResponseError::CoordinatorNotAvailable,
            ),
        ] {
            let group = format!("gf-{}", storage.code());
            let j = Join::new(&group, "", &["t"]);
            let joined = join_v5(&c, &j).await;
            assert_eq!(joined.error_code, 0);
            let id = joined.member_id.as_str().to_owned();
            log.fail.set(Some(storage.code()));
            let r = c
                .sync_group(
                    sync_req(&group, joined.generation_id, &id, &[(&id, &[1])]),
                    5,
                )
                .await;
            log.fail.set(None);
            assert_eq!(r.error_code, answer.code(), "{storage:?}");
        }
    });
}

/// `group.max.size`: a Stable group at the maximum refuses a new member
/// (GROUP_MAX_SIZE_REACHED, no member id) and keeps its generation; a group loaded with
/// more members than a lowered maximum rebalances, and of its rejoining members the ones
/// past the maximum are refused.
#[test]
fn group_max_size_refuses_new_members_and_rebalances_a_loaded_group_over_it() {
    run(|| async {
        let mut cfg = config();
        cfg.max_group_size = 2;
        let (log, c) = coordinator(cfg.clone());
        let (generation, ids, _) = stable_group(&c, "gm", 2, &["t"]).await;
        let third = join_v5(&c, &Join::new("gm", "", &["t"])).await;
        assert_eq!(third.error_code, ResponseError::GroupMaxSizeReached.code());
        assert!(third.member_id.is_empty());
        assert_eq!(heartbeat(&c, "gm", generation, &ids[0]).await, 0);
        assert_eq!(c.describe_group("gm").await.group_state.as_str(), "Stable");

        cfg.max_group_size = 1;
        let reloaded = GroupCoordinator::load(Rc::new(MemLog::default()), log.snapshot(), cfg);
        assert_eq!(
            reloaded.describe_group("gm").await.group_state.as_str(),
            "PreparingRebalance"
        );
        assert_eq!(
            heartbeat(&reloaded, "gm", generation, &ids[0]).await,
            ResponseError::RebalanceInProgress.code()
        );
        let first = {
            let c = reloaded.clone();
            let id = ids[0].clone();
            glommio::spawn_local(async move {
                let j = Join::new("gm", &id, &["t"]);
                c.join_group(j.request(), 5, "client", "h").await
            })
        };
        glommio::timer::sleep(Duration::from_millis(20)).await;
        let j = Join::new("gm", &ids[1], &["t"]);
        let second = reloaded.join_group(j.request(), 5, "client", "h").await;
        assert_eq!(second.error_code, ResponseError::GroupMaxSizeReached.code());
        let first = first.await;
        assert_eq!(first.error_code, 0);
        assert_eq!(first.generation_id, generation + 1);
        let d = reloaded.describe_group("gm").await;
        assert_eq!(d.members.len(), 1);
        assert_eq!(d.members[0].member_id.as_str(), ids[0]);
    });
}

#[test]
fn heartbeat_and_generation_fencing() {
    run(|| async {
        let (_log, c) = coordinator(config());
        let (generation, ids, _leader) = stable_group(&c, "gh", 2, &["t"]).await;
        assert_eq!(heartbeat(&c, "gh", generation, &ids[0]).await, 0);
        assert_eq!(
            heartbeat(&c, "gh", generation + 1, &ids[0]).await,
            ResponseError::IllegalGeneration.code()
        );
        assert_eq!(
            heartbeat(&c, "gh", generation, "ghost").await,
            ResponseError::UnknownMemberId.code()
        );
        assert_eq!(
            heartbeat(&c, "nogroup", 1, "x").await,
            ResponseError::UnknownMemberId.code()
        );
        let r = c
            .sync_group(sync_req("gh", generation - 1, &ids[0], &[]), 5)
            .await;
        assert_eq!(r.error_code, ResponseError::IllegalGeneration.code());
        // A new member starts a rebalance: existing members learn it from their heartbeat.
        let c2 = c.clone();
        let newcomer =
            glommio::spawn_local(async move { join_v5(&c2, &Join::new("gh", "", &["t"])).await });
        let mut hb = 0;
        for _ in 0..1000 {
            hb = heartbeat(&c, "gh", generation, &ids[0]).await;
            if hb != 0 {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(hb, ResponseError::RebalanceInProgress.code());
        let r = c
            .sync_group(sync_req("gh", generation, &ids[0], &[]), 5)
            .await;
        assert_eq!(r.error_code, ResponseError::RebalanceInProgress.code());
        // Both old members rejoin; the newcomer's join completes in generation 2.
        let mut rejoin = Vec::new();
        for id in ids.clone() {
            let c = c.clone();
            rejoin.push(glommio::spawn_local(async move {
                c.join_group(Join::new("gh", &id, &["t"]).request(), 5, "c", "h")
                    .await
            }));
        }
        let n = newcomer.await;
        assert_eq!((n.error_code, n.generation_id), (0, generation + 1));
        for t in rejoin {
            let r = t.await;
            assert_eq!((r.error_code, r.generation_id), (0, generation + 1));
        }
        assert_eq!(
            heartbeat(&c, "gh", generation, &ids[0]).await,
            ResponseError::IllegalGeneration.code()
        );
        // Wrong protocol type is refused.
        let mut j = Join::new("gh", "", &["t"]).request();
        j.protocol_type = s("connect");
        let r = c.join_group(j, 5, "c", "h").await;
        assert_eq!(
            r.error_code,
            ResponseError::InconsistentGroupProtocol.code()
        );
        let mut j = Join::new("gh", "", &["t"]).request();
        j.session_timeout_ms = 0;
        let r = c.join_group(j, 5, "c", "h").await;
        assert_eq!(r.error_code, ResponseError::InvalidSessionTimeout.code());
    });
}

#[test]
fn silent_member_expires_and_triggers_rebalance() {
    run(|| async {
        let (_log, c) = coordinator(config());
        // A keeps a long session; B's is short and B never heartbeats.
        let mut tasks = Vec::new();
        for session in [10_000, 60] {
            let c = c.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut j = Join::new("ge", "", &["t"]);
                j.session_ms = session;
                j.rebalance_ms = 60;
                join_v5(&c, &j).await
            }));
        }
        let a = tasks.remove(0).await;
        let b = tasks.remove(0).await;
        let generation = a.generation_id;
        let (ida, idb) = (
            a.member_id.as_str().to_owned(),
            b.member_id.as_str().to_owned(),
        );
        let leader = a.leader.as_str().to_owned();
        let assign: Vec<(&str, &[u8])> =
            vec![(ida.as_str(), &[1u8][..]), (idb.as_str(), &[2u8][..])];
        let c1 = c.clone();
        let req_b = sync_req(
            "ge",
            generation,
            &idb,
            if leader == idb { &assign } else { &[] },
        );
        let sb = glommio::spawn_local(async move { c1.sync_group(req_b, 5).await });
        let ra = c
            .sync_group(
                sync_req(
                    "ge",
                    generation,
                    &ida,
                    if leader == ida { &assign } else { &[] },
                ),
                5,
            )
            .await;
        assert_eq!(ra.error_code, 0);
        assert_eq!(sb.await.error_code, 0);
        // Only A heartbeats; B goes silent and must be expired, forcing a rebalance.
        let mut hb = 0;
        for _ in 0..5000 {
            hb = heartbeat(&c, "ge", generation, &ida).await;
            if hb != 0 {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(hb, ResponseError::RebalanceInProgress.code());
        let mut j = Join::new("ge", &ida, &["t"]);
        j.rebalance_ms = 60;
        let r = c.join_group(j.request(), 5, "c", "h").await;
        assert_eq!(r.error_code, 0);
        assert_eq!(r.generation_id, generation + 1);
        assert_eq!(r.leader.as_str(), ida);
        assert_eq!(r.members.len(), 1);
        assert_eq!(
            heartbeat(&c, "ge", generation + 1, &idb).await,
            ResponseError::UnknownMemberId.code()
        );
    });
}

/// The leader joins and goes silent (no SyncGroup, no heartbeat); the follower waits in
/// SyncGroup without heartbeats, as librdkafka's and sarama's do. The leader's expiry
/// answers the follower REBALANCE_IN_PROGRESS and gives it a fresh session (Kafka's
/// propagateAssignment), so its rejoin a moment later still finds it a member.
#[test]
fn a_follower_parked_in_sync_outlives_the_silent_leader() {
    run(|| async {
        let (_log, c) = coordinator(config());
        let mut tasks = Vec::new();
        // sessions F 400 and L 600 ms, the rejoin at L + 300: the follower's check after
        // its parked one (2F = 800) falls before the rejoin, its refreshed deadline
        // (L + F = 1000) after, each ~100 ms apart
        for (member, session) in [("leader", 600), ("follower", 400)] {
            let c = c.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut j = Join::new("gp", "", &["t"]);
                j.session_ms = session;
                j.rebalance_ms = 1_000;
                (member, join_v5(&c, &j).await)
            }));
        }
        let (mut leader, mut follower) = (None, None);
        for t in tasks {
            match t.await {
                ("leader", r) => leader = Some(r),
                (_, r) => follower = Some(r),
            }
        }
        // the first to join leads: the one with the longer session
        let (silent, waiting) = (leader.unwrap(), follower.unwrap()); // ok: test
        assert_eq!(silent.leader, silent.member_id);
        let id = waiting.member_id.as_str().to_owned();
        let synced = c
            .sync_group(sync_req("gp", waiting.generation_id, &id, &[]), 5)
            .await;
        assert_eq!(synced.error_code, ResponseError::RebalanceInProgress.code());
        // a client's backoff before it rejoins, past its old session's next check
        glommio::timer::sleep(Duration::from_millis(300)).await;
        let mut j = Join::new("gp", &id, &["t"]);
        j.session_ms = 400;
        let r = c.join_group(j.request(), 5, "c", "h").await;
        assert_eq!(
            r.error_code, 0,
            "the rejoin of a member that waited in SyncGroup"
        );
        assert_eq!(r.member_id.as_str(), id);
        assert_eq!(r.members.len(), 1);
    });
}

#[test]
fn leave_group_batched_and_single() {
    run(|| async {
        let (log, c) = coordinator(config());
        let (_g, ids, _leader) = stable_group(&c, "gl", 3, &["t"]).await;
        let req = LeaveGroupRequest::default()
            .with_group_id(GroupId(s("gl")))
            .with_members(vec![
                MemberIdentity::default().with_member_id(s(&ids[0])),
                MemberIdentity::default().with_member_id(s("stranger")),
            ]);
        let r = c.leave_group(req, 3).await;
        assert_eq!(r.error_code, 0);
        let codes: Vec<i16> = r.members.iter().map(|m| m.error_code).collect();
        assert_eq!(codes, vec![0, ResponseError::UnknownMemberId.code()]);
        assert_eq!(
            c.describe_group("gl").await.group_state.as_str(),
            "PreparingRebalance"
        );
        // v0 leave of the other two: the group ends up Empty and that is persisted.
        for id in &ids[1..] {
            let req = LeaveGroupRequest::default()
                .with_group_id(GroupId(s("gl")))
                .with_member_id(s(id));
            assert_eq!(c.leave_group(req, 0).await.error_code, 0);
        }
        let req = LeaveGroupRequest::default()
            .with_group_id(GroupId(s("gl")))
            .with_member_id(s(&ids[1]));
        assert_eq!(
            c.leave_group(req, 1).await.error_code,
            ResponseError::UnknownMemberId.code()
        );
        assert_eq!(c.describe_group("gl").await.group_state.as_str(), "Empty");
        for _ in 0..100 {
            if log
                .last_group_value("gl")
                .is_some_and(|v| v.members.is_empty())
            {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        let v = log.last_group_value("gl").expect("empty group record"); // ok: test
        assert!(v.members.is_empty());
        assert_eq!(v.protocol, None);
        assert_eq!(v.generation, 2);
    });
}

/// The coordinator is unloaded (its offsets partition moved) during a rebalance: a member
/// parked in JoinGroup and one parked in SyncGroup are answered NOT_COORDINATOR at once,
/// as Kafka's onGroupUnloaded does, not at the end of the rebalance timeout.
#[test]
fn unloading_answers_parked_joins_and_syncs_not_coordinator() {
    run(|| async {
        let (_log, c) = coordinator(config());
        let (_, _, leader) = stable_group(&c, "gu", 2, &["t"]).await;
        // the leader rejoins: a rebalance, the leader parked until the follower rejoins
        let c1 = c.clone();
        let l1 = leader.clone();
        let join = glommio::spawn_local(async move {
            let mut j = Join::new("gu", &l1, &["t"]);
            j.rebalance_ms = 60_000;
            c1.join_group(j.request(), 5, "c", "h").await
        });
        glommio::timer::sleep(Duration::from_millis(20)).await;
        c.unload();
        let r = join.await;
        assert_eq!(r.error_code, ResponseError::NotCoordinator.code());

        // a follower parked in SyncGroup while the leader has not synced
        let (_log, c) = coordinator(config());
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let c = c.clone();
            tasks.push(glommio::spawn_local(async move {
                join_v5(&c, &Join::new("gs", "", &["t"])).await
            }));
        }
        let mut joined = Vec::new();
        for t in tasks {
            joined.push(t.await);
        }
        let f = joined.iter().find(|j| j.leader != j.member_id).unwrap(); // ok: test
        let (c2, id, gen) = (c.clone(), f.member_id.as_str().to_owned(), f.generation_id);
        let sync =
            glommio::spawn_local(
                async move { c2.sync_group(sync_req("gs", gen, &id, &[]), 5).await },
            );
        glommio::timer::sleep(Duration::from_millis(20)).await;
        c.unload();
        assert_eq!(sync.await.error_code, ResponseError::NotCoordinator.code());
    });
}
