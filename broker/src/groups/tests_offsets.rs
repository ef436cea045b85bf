//! Offset and administration tests: commit/fetch, member and generation checks, replay of
//! the `__consumer_offsets` records after a "restart", expiry, describe/list/delete,
//! OffsetDelete, and storage failures. Same harness as `tests.rs`.

use std::rc::Rc;

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, OffsetDeleteRequest, TopicName};
use kafka_protocol::ResponseError;

use std::time::Duration;

use super::offsets::PartitionOffset;
use super::records::RecordKey;
use super::tests::support::*;
use super::GroupCoordinator;

fn commit_req(
    group: &str,
    generation: i32,
    member: &str,
    offsets: &[(&str, i32, i64)],
) -> OffsetCommitRequest {
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for (t, p, o) in offsets {
        let part = OffsetCommitRequestPartition::default()
            .with_partition_index(*p)
            .with_committed_offset(*o)
            .with_committed_leader_epoch(3)
            .with_committed_metadata(Some(s("meta")));
        match topics.iter_mut().find(|x| x.name.0.as_str() == *t) {
            Some(x) => x.partitions.push(part),
            None => topics.push(
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s(t)))
                    .with_partitions(vec![part]),
            ),
        }
    }
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(topics)
}

async fn commit(c: &GroupCoordinator, req: OffsetCommitRequest) -> Vec<i16> {
    c.offset_commit(req, 8)
        .await
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

async fn fetch_one(
    c: &GroupCoordinator,
    group: &str,
    topic: &str,
    partition: i32,
) -> PartitionOffset {
    let r = c
        .offset_fetch_group(
            group,
            Some(vec![(topic.to_owned(), vec![partition])]),
            false,
        )
        .await;
    r.topics[0].partitions[0].clone()
}

#[test]
fn standalone_commit_and_fetch() {
    run(|| async {
        let (_log, c) = coordinator(config());
        let codes = commit(
            &c,
            commit_req("solo", -1, "", &[("t", 0, 10), ("t", 1, 20), ("u", 0, 5)]),
        )
        .await;
        assert_eq!(codes, vec![0, 0, 0]);
        let p = fetch_one(&c, "solo", "t", 1).await;
        assert_eq!(
            (p.offset, p.leader_epoch, p.metadata.as_str(), p.error_code),
            (20, 3, "meta", 0)
        );
        let unknown = fetch_one(&c, "solo", "t", 9).await;
        assert_eq!((unknown.offset, unknown.leader_epoch), (-1, -1));
        let nogroup = fetch_one(&c, "nobody", "t", 0).await;
        assert_eq!(nogroup.offset, -1);
        let all = c.offset_fetch_group("solo", None, false).await;
        let flat: Vec<(String, i32, i64)> = all
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.name.clone(), p.partition, p.offset))
            })
            .collect();
        assert_eq!(
            flat,
            vec![("t".into(), 0, 10), ("t".into(), 1, 20), ("u".into(), 0, 5)]
        );
        // Later commits win.
        commit(&c, commit_req("solo", -1, "", &[("t", 0, 11)])).await;
        assert_eq!(fetch_one(&c, "solo", "t", 0).await.offset, 11);
        // Oversized metadata is refused per partition.
        let mut req = commit_req("solo", -1, "", &[("t", 0, 12), ("t", 1, 21)]);
        req.topics[0].partitions[0].committed_metadata = Some(s(&"x".repeat(5000)));
        assert_eq!(
            commit(&c, req).await,
            vec![ResponseError::OffsetMetadataTooLarge.code(), 0]
        );
        assert_eq!(fetch_one(&c, "solo", "t", 0).await.offset, 11);
        assert_eq!(fetch_one(&c, "solo", "t", 1).await.offset, 21);
    });
}

#[test]
fn group_commit_checks_member_and_generation() {
    run(|| async {
        let (_log, c) = coordinator(config());
        let (generation, ids, _leader) = stable_group(&c, "gc", 2, &["t"]).await;
        assert_eq!(
            commit(&c, commit_req("gc", generation, &ids[0], &[("t", 0, 100)])).await,
            vec![0]
        );
        assert_eq!(
            commit(
                &c,
                commit_req("gc", generation + 1, &ids[0], &[("t", 0, 1)])
            )
            .await,
            vec![ResponseError::IllegalGeneration.code()]
        );
        assert_eq!(
            commit(&c, commit_req("gc", generation, "ghost", &[("t", 0, 1)])).await,
            vec![ResponseError::UnknownMemberId.code()]
        );
        // A simple (generation -1) commit is refused while the group has members.
        assert_eq!(
            commit(&c, commit_req("gc", -1, "", &[("t", 0, 1)])).await,
            vec![ResponseError::UnknownMemberId.code()]
        );
        // A stale member of an unknown group gets ILLEGAL_GENERATION.
        assert_eq!(
            commit(&c, commit_req("other", 3, "m", &[("t", 0, 1)])).await,
            vec![ResponseError::IllegalGeneration.code()]
        );
        assert_eq!(fetch_one(&c, "gc", "t", 0).await.offset, 100);
    });
}

/// A consumer that assigns its partitions itself commits with generation -1, also when it
/// sets a member or a static instance id (librdkafka with `group.instance.id` and
/// `assign()`): Kafka accepts every such commit while the group is Empty.
#[test]
fn a_simple_commit_with_an_instance_id_is_taken_by_an_empty_group() {
    run(|| async {
        let (_log, c) = coordinator(config());
        let mut req = commit_req("manual", -1, "", &[("t", 0, 10)]);
        req.group_instance_id = Some(s("manual-inst"));
        assert_eq!(commit(&c, req.clone()).await, vec![0], "creates the group");
        req.topics[0].partitions[0].committed_offset = 11;
        assert_eq!(
            commit(&c, req).await,
            vec![0],
            "the group exists and is Empty"
        );
        assert_eq!(
            commit(&c, commit_req("manual", -1, "some-member", &[("t", 0, 12)])).await,
            vec![0]
        );
        assert_eq!(fetch_one(&c, "manual", "t", 0).await.offset, 12);
        // a group with members still checks them
        let (_generation, _ids, _) = stable_group(&c, "busy", 1, &["t"]).await;
        let mut busy = commit_req("busy", -1, "", &[("t", 0, 1)]);
        busy.group_instance_id = Some(s("manual-inst"));
        assert_eq!(
            commit(&c, busy).await,
            vec![ResponseError::UnknownMemberId.code()]
        );
    });
}

#[test]
fn replay_after_restart_reproduces_offsets_and_group() {
    run(|| async {
        let (log, c) = coordinator(config());
        let (generation, ids, leader) = stable_group(&c, "gp", 2, &["t"]).await;
        commit(
            &c,
            commit_req("gp", generation, &ids[0], &[("t", 0, 42), ("t", 1, 43)]),
        )
        .await;
        commit(&c, commit_req("gp", generation, &ids[1], &[("t", 1, 44)])).await;
        commit(&c, commit_req("solo", -1, "", &[("x", 0, 7)])).await;
        // A deleted group must stay deleted after replay.
        commit(&c, commit_req("gone", -1, "", &[("x", 0, 1)])).await;
        assert_eq!(c.delete_group("gone").await, 0);
        let before = c.describe_group("gp").await;
        drop(c);

        let c2 = GroupCoordinator::load(Rc::new(MemLog::default()), log.snapshot(), config());
        assert_eq!(fetch_one(&c2, "gp", "t", 0).await.offset, 42);
        assert_eq!(fetch_one(&c2, "gp", "t", 1).await.offset, 44);
        assert_eq!(fetch_one(&c2, "solo", "x", 0).await.offset, 7);
        assert_eq!(fetch_one(&c2, "gone", "x", 0).await.offset, -1);
        assert_eq!(c2.describe_group("gone").await.group_state.as_str(), "Dead");
        let after = c2.describe_group("gp").await;
        assert_eq!(after.group_state.as_str(), "Stable");
        assert_eq!(after.protocol_data, before.protocol_data);
        assert_eq!(after.members, before.members);
        // The loaded generation is live: members heartbeat and commit without rejoining.
        assert_eq!(heartbeat(&c2, "gp", generation, &ids[0]).await, 0);
        assert_eq!(
            commit(&c2, commit_req("gp", generation, &leader, &[("t", 0, 50)])).await,
            vec![0]
        );
        let sync = c2
            .sync_group(sync_req("gp", generation, &ids[1], &[]), 5)
            .await;
        assert_eq!((sync.error_code, &sync.assignment[..]), (0, &[1u8][..]));
    });
}

#[test]
fn offsets_of_empty_groups_expire_after_retention() {
    run(|| async {
        let mut cfg = config();
        cfg.offsets_retention_ms = 1_000_000;
        let (log, c) = coordinator(cfg.clone());
        commit(&c, commit_req("old", -1, "", &[("t", 0, 1), ("t", 1, 2)])).await;
        let committed_at = super::coordinator::now_ms();
        assert_eq!(c.expire_offsets(committed_at - 10).await, 0);
        assert_eq!(fetch_one(&c, "old", "t", 0).await.offset, 1);
        assert_eq!(c.expire_offsets(committed_at + 1_000_001).await, 2);
        assert_eq!(fetch_one(&c, "old", "t", 0).await.offset, -1);
        assert!(c.list_groups(&[], &[]).await.is_empty());
        let tombstones: Vec<RecordKey> = log
            .snapshot()
            .iter()
            .filter(|(_, v)| v.is_none())
            .filter_map(|(k, _)| RecordKey::decode(k).ok())
            .collect();
        assert_eq!(tombstones.len(), 3);
        assert!(tombstones.contains(&RecordKey::GroupMetadata {
            group: "old".into()
        }));
        let c2 = GroupCoordinator::load(Rc::new(MemLog::default()), log.snapshot(), cfg.clone());
        assert_eq!(fetch_one(&c2, "old", "t", 1).await.offset, -1);

        // An active consumer group keeps offsets of subscribed topics, loses the others.
        let (_log, c) = coordinator(cfg);
        let (generation, ids, _) = stable_group(&c, "live", 1, &["t"]).await;
        commit(
            &c,
            commit_req(
                "live",
                generation,
                &ids[0],
                &[("t", 0, 5), ("old-topic", 0, 6)],
            ),
        )
        .await;
        let now = super::coordinator::now_ms();
        assert_eq!(c.expire_offsets(now + 2_000_000).await, 1);
        assert_eq!(fetch_one(&c, "live", "t", 0).await.offset, 5);
        assert_eq!(fetch_one(&c, "live", "old-topic", 0).await.offset, -1);
    });
}

#[test]
fn v1_commit_timestamps_are_the_stored_commit_time() {
    run(|| async {
        let mut cfg = config();
        cfg.offsets_retention_ms = 1_000_000;
        let (log, c) = coordinator(cfg.clone());
        let now = super::coordinator::now_ms();
        // OffsetCommit v1: partition 0 says it was committed 900 s ago, partition 1 sends -1.
        let req = commit_req("v1", -1, "", &[("t", 0, 1), ("t", 1, 2)]);
        let resp = c.offset_commit_at(req, 1, &[vec![now - 900_000, -1]]).await;
        let codes: Vec<i16> = resp.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect();
        assert_eq!(codes, vec![0, 0]);
        // The records carry the timestamps: a replayed coordinator expires the same offset.
        let c2 = GroupCoordinator::load(Rc::new(MemLog::default()), log.snapshot(), cfg);
        for c in [&c, &c2] {
            // 200 s on, retention counted from each commit time: only partition 0 is past it.
            assert_eq!(c.expire_offsets(now + 200_000).await, 1);
            assert_eq!(fetch_one(c, "v1", "t", 0).await.offset, -1);
            assert_eq!(fetch_one(c, "v1", "t", 1).await.offset, 2);
        }
    });
}

#[test]
fn describe_list_and_delete_groups() {
    run(|| async {
        let (log, c) = coordinator(config());
        let (_g, ids, _leader) = stable_group(&c, "busy", 1, &["t"]).await;
        commit(&c, commit_req("idle", -1, "", &[("t", 0, 1)])).await;
        let d = c.describe_group("busy").await;
        assert_eq!(d.group_state.as_str(), "Stable");
        assert_eq!(d.protocol_type.as_str(), "consumer");
        assert_eq!(d.protocol_data.as_str(), "range");
        assert_eq!(d.members[0].member_id.as_str(), ids[0]);
        assert_eq!(d.members[0].client_host.as_str(), "/127.0.0.1");
        assert_eq!(&d.members[0].member_assignment[..], &[0u8][..]);
        assert_eq!(
            c.describe_group("missing").await.group_state.as_str(),
            "Dead"
        );

        let all = c.list_groups(&[], &[]).await;
        let names: Vec<&str> = all.iter().map(|g| g.group_id.0.as_str()).collect();
        assert_eq!(names, vec!["busy", "idle"]);
        let stable = c.list_groups(&[s("stable")], &[]).await;
        assert_eq!(stable.len(), 1);
        assert_eq!(stable[0].group_state.as_str(), "Stable");
        assert_eq!(stable[0].group_type.as_str(), "classic");
        assert!(c.list_groups(&[], &[s("consumer")]).await.is_empty());
        assert_eq!(c.list_groups(&[], &[s("Classic")]).await.len(), 2);

        assert_eq!(
            c.delete_group("busy").await,
            ResponseError::NonEmptyGroup.code()
        );
        assert_eq!(
            c.delete_group("missing").await,
            ResponseError::GroupIdNotFound.code()
        );
        assert_eq!(c.delete_group("idle").await, 0);
        assert_eq!(fetch_one(&c, "idle", "t", 0).await.offset, -1);
        assert_eq!(
            c.delete_group("idle").await,
            ResponseError::GroupIdNotFound.code()
        );
        let last = log.snapshot();
        let (k, v) = last.last().expect("tombstone"); // ok: test
        assert_eq!(
            RecordKey::decode(k),
            Ok(RecordKey::GroupMetadata {
                group: "idle".into()
            })
        );
        assert!(v.is_none());
    });
}

#[test]
fn offset_delete_respects_subscriptions() {
    run(|| async {
        let (_log, c) = coordinator(config());
        let (generation, ids, _) = stable_group(&c, "od", 1, &["t1"]).await;
        commit(
            &c,
            commit_req("od", generation, &ids[0], &[("t1", 0, 1), ("t2", 0, 2)]),
        )
        .await;
        let req = OffsetDeleteRequest::default()
            .with_group_id(GroupId(s("od")))
            .with_topics(vec![
                OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(s("t1")))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0)
                    ]),
                OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(s("t2")))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0)
                    ]),
            ]);
        let r = c.offset_delete(req.clone(), 0).await;
        assert_eq!(r.error_code, 0);
        assert_eq!(
            r.topics[0].partitions[0].error_code,
            ResponseError::GroupSubscribedToTopic.code()
        );
        assert_eq!(r.topics[1].partitions[0].error_code, 0);
        assert_eq!(fetch_one(&c, "od", "t1", 0).await.offset, 1);
        assert_eq!(fetch_one(&c, "od", "t2", 0).await.offset, -1);
        let mut missing = req;
        missing.group_id = GroupId(s("nope"));
        assert_eq!(
            c.offset_delete(missing, 0).await.error_code,
            ResponseError::GroupIdNotFound.code()
        );
    });
}

#[test]
fn storage_failure_is_reported_and_not_applied() {
    run(|| async {
        let (log, c) = coordinator(config());
        commit(&c, commit_req("f", -1, "", &[("t", 0, 1)])).await;
        // answered as Kafka's coordinator maps the append's error
        log.fail.set(Some(ResponseError::NotEnoughReplicas.code()));
        assert_eq!(
            commit(&c, commit_req("f", -1, "", &[("t", 0, 2)])).await,
            vec![ResponseError::CoordinatorNotAvailable.code()]
        );
        log.fail
            .set(Some(ResponseError::NotLeaderOrFollower.code()));
        assert_eq!(
            commit(&c, commit_req("f", -1, "", &[("t", 0, 3)])).await,
            vec![ResponseError::NotCoordinator.code()]
        );
        log.fail.set(Some(ResponseError::MessageTooLarge.code()));
        assert_eq!(
            commit(&c, commit_req("f", -1, "", &[("t", 0, 4)])).await,
            vec![ResponseError::InvalidCommitOffsetSize.code()]
        );
        assert_eq!(fetch_one(&c, "f", "t", 0).await.offset, 1);
        log.fail.set(Some(ResponseError::RequestTimedOut.code()));
        assert_eq!(
            c.delete_group("f").await,
            ResponseError::CoordinatorNotAvailable.code()
        );
        log.fail.set(Some(ResponseError::KafkaStorageError.code()));
        assert_eq!(
            c.delete_group("f").await,
            ResponseError::NotCoordinator.code()
        );
        assert_eq!(c.describe_group("f").await.group_state.as_str(), "Empty");
        log.fail.set(None);
        assert_eq!(c.delete_group("f").await, 0);
    });
}

/// A commit answered OK stays committed when a later commit of the same partition, still
/// in flight when the first completed, then fails (chaos/README.md bug 4).
#[test]
fn a_later_failed_commit_does_not_undo_an_acknowledged_one() {
    run(|| async {
        let (log, c) = coordinator(config());
        commit(&c, commit_req("g", -1, "", &[("t", 0, 5)])).await;
        let first = {
            let c = c.clone();
            glommio::spawn_local(async move {
                commit(&c, commit_req("g", -1, "", &[("t", 0, 6)])).await
            })
        };
        // the first write is issued (it lands at call time) before the second
        glommio::timer::sleep(Duration::from_micros(100)).await;
        log.fail_late.set(true);
        let second = {
            let c = c.clone();
            glommio::spawn_local(async move {
                commit(&c, commit_req("g", -1, "", &[("t", 0, 7)])).await
            })
        };
        assert_eq!(first.await, vec![0]);
        assert_eq!(
            second.await,
            vec![ResponseError::CoordinatorNotAvailable.code()]
        );
        assert_eq!(fetch_one(&c, "g", "t", 0).await.offset, 6);
    });
}

#[test]
fn concurrent_commits_apply_in_log_order() {
    run(|| async {
        let (log, c) = coordinator(config());
        let mut tasks = Vec::new();
        for o in 1..=20i64 {
            let c = c.clone();
            tasks.push(glommio::spawn_local(async move {
                commit(&c, commit_req("cc", -1, "", &[("t", 0, o)])).await
            }));
        }
        for t in tasks {
            assert_eq!(t.await, vec![0]);
        }
        let in_memory = fetch_one(&c, "cc", "t", 0).await.offset;
        let c2 = GroupCoordinator::load(Rc::new(MemLog::default()), log.snapshot(), config());
        assert_eq!(fetch_one(&c2, "cc", "t", 0).await.offset, in_memory);
    });
}

#[test]
fn a_deleted_topics_offsets_go_from_every_group_and_stay_gone_after_replay() {
    run(|| async {
        let (log, c) = coordinator(config());
        let both = commit_req(
            "both",
            -1,
            "",
            &[("gone", 0, 7), ("gone", 1, 8), ("kept", 0, 9)],
        );
        assert_eq!(commit(&c, both).await, vec![0, 0, 0]);
        assert_eq!(
            commit(&c, commit_req("only", -1, "", &[("gone", 0, 3)])).await,
            vec![0]
        );
        assert_eq!(
            commit(&c, commit_req("other", -1, "", &[("kept", 0, 1)])).await,
            vec![0]
        );
        assert_eq!(c.remove_topic_offsets("gone"), 3);
        assert_eq!(c.remove_topic_offsets("gone"), 0);
        let check = |c: Rc<GroupCoordinator>| async move {
            assert_eq!(fetch_one(&c, "both", "gone", 0).await.offset, -1);
            assert_eq!(fetch_one(&c, "both", "gone", 1).await.offset, -1);
            assert_eq!(fetch_one(&c, "both", "kept", 0).await.offset, 9);
            assert_eq!(fetch_one(&c, "other", "kept", 0).await.offset, 1);
            // a group left empty without offsets is gone
            assert_eq!(c.describe_group("only").await.group_state.as_str(), "Dead");
            assert_eq!(c.describe_group("both").await.group_state.as_str(), "Empty");
        };
        glommio::timer::sleep(Duration::from_millis(20)).await;
        check(c.clone()).await;
        let c2 = GroupCoordinator::load(Rc::new(MemLog::default()), log.snapshot(), config());
        check(c2).await;
    });
}
