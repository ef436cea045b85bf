//! Transactional offset commits: pending until the marker, UNSTABLE_OFFSET_COMMIT for
//! stable fetches meanwhile, KIP-447 generation checks, and the same outcome after a replay
//! of the partition (markers included). Same harness as `tests.rs`.

use std::rc::Rc;

use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    GroupId, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest,
};
use kafka_protocol::ResponseError;

use super::tests::support::*;
use super::GroupCoordinator;

fn txn_req(
    group: &str,
    pid: i64,
    generation: i32,
    member: &str,
    offsets: &[(&str, i32, i64)],
) -> TxnOffsetCommitRequest {
    let topics = offsets
        .iter()
        .map(|(t, p, o)| {
            TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(s(t)))
                .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(*p)
                    .with_committed_offset(*o)])
        })
        .collect();
    TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(s("tx")))
        .with_group_id(GroupId(s(group)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(0)
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_topics(topics)
}

async fn txn_commit(c: &GroupCoordinator, req: TxnOffsetCommitRequest) -> Vec<i16> {
    c.txn_offset_commit(req, 3, sluice_storage::TxnVerification::Off)
        .await
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

/// (offset, error) of one partition, asking for stable offsets or not.
async fn fetched(c: &GroupCoordinator, group: &str, partition: i32, stable: bool) -> (i64, i16) {
    let r = c
        .offset_fetch_group(group, Some(vec![("t".to_owned(), vec![partition])]), stable)
        .await;
    let p = &r.topics[0].partitions[0];
    (p.offset, p.error_code)
}

const UNSTABLE: i16 = ResponseError::UnstableOffsetCommit.code();

#[test]
fn transactional_offsets_count_only_once_their_transaction_commits() {
    run(|| async {
        let (_log, c) = coordinator(config());
        assert_eq!(
            txn_commit(&c, txn_req("g", 7, -1, "", &[("t", 0, 10)])).await,
            vec![0]
        );
        assert_eq!(
            txn_commit(&c, txn_req("g", 8, -1, "", &[("t", 1, 20)])).await,
            vec![0]
        );
        // undecided: invisible, and unstable for a client that asks for stable offsets
        assert_eq!(fetched(&c, "g", 0, false).await, (-1, 0));
        assert_eq!(fetched(&c, "g", 0, true).await, (-1, UNSTABLE));
        assert_eq!(c.complete_txn(7, true), 1);
        assert_eq!(c.complete_txn(8, false), 0);
        assert_eq!(fetched(&c, "g", 0, true).await, (10, 0));
        assert_eq!(fetched(&c, "g", 1, true).await, (-1, 0));
        // a marker of a producer with nothing pending here changes nothing
        assert_eq!(c.complete_txn(9, true), 0);
        assert_eq!(fetched(&c, "g", 0, false).await, (10, 0));
    });
}

#[test]
fn transactional_commits_are_fenced_by_the_group_generation() {
    run(|| async {
        let (_log, c) = coordinator(config());
        let (generation, ids, _) = stable_group(&c, "gg", 1, &["t"]).await;
        assert_eq!(
            txn_commit(&c, txn_req("gg", 1, generation, "nobody", &[("t", 0, 1)])).await,
            vec![ResponseError::UnknownMemberId.code()]
        );
        assert_eq!(
            txn_commit(
                &c,
                txn_req("gg", 1, generation + 1, &ids[0], &[("t", 0, 1)])
            )
            .await,
            vec![ResponseError::IllegalGeneration.code()]
        );
        assert_eq!(
            txn_commit(&c, txn_req("gg", 1, generation, &ids[0], &[("t", 0, 5)])).await,
            vec![0]
        );
        c.complete_txn(1, true);
        assert_eq!(fetched(&c, "gg", 0, false).await, (5, 0));
        // as Kafka's validateMember: a generation needs a member id; an instance id must
        // be a registered static member
        assert_eq!(
            txn_commit(&c, txn_req("gg", 1, generation, "", &[("t", 0, 6)])).await,
            vec![ResponseError::UnknownMemberId.code()]
        );
        let mut with_instance = txn_req("gg", 1, generation, &ids[0], &[("t", 0, 6)]);
        with_instance.group_instance_id = Some(s("never-joined"));
        assert_eq!(
            txn_commit(&c, with_instance).await,
            vec![ResponseError::UnknownMemberId.code()]
        );
        // a member id with generation -1 on a group with members: a stale generation
        assert_eq!(
            txn_commit(&c, txn_req("gg", 1, -1, &ids[0], &[("t", 0, 6)])).await,
            vec![ResponseError::IllegalGeneration.code()]
        );
        // neither (a producer that is not a group member): taken whatever the group's state
        assert_eq!(
            txn_commit(&c, txn_req("gg", 1, -1, "", &[("t", 0, 6)])).await,
            vec![0]
        );
        // a generation for a group this coordinator does not know: a stale member's
        assert_eq!(
            txn_commit(&c, txn_req("nobody", 1, 3, "m", &[("t", 0, 6)])).await,
            vec![ResponseError::IllegalGeneration.code()]
        );
        assert_eq!(fetched(&c, "nobody", 0, false).await, (-1, 0));
    });
}

#[test]
fn a_replay_applies_markers_and_keeps_undecided_commits_pending() {
    run(|| async {
        let (log, c) = coordinator(config());
        txn_commit(&c, txn_req("g", 1, -1, "", &[("t", 0, 100)])).await;
        txn_commit(&c, txn_req("g", 2, -1, "", &[("t", 1, 200)])).await;
        txn_commit(&c, txn_req("g", 3, -1, "", &[("t", 2, 300)])).await;
        log.marker(1, true);
        log.marker(2, false);
        drop(c);
        let replay = log.replay.borrow().clone();
        let c2 = GroupCoordinator::load(Rc::new(MemLog::default()), replay, config());
        assert_eq!(fetched(&c2, "g", 0, true).await, (100, 0));
        assert_eq!(fetched(&c2, "g", 1, true).await, (-1, 0));
        assert_eq!(fetched(&c2, "g", 2, true).await, (-1, UNSTABLE));
        c2.complete_txn(3, true);
        assert_eq!(fetched(&c2, "g", 2, true).await, (300, 0));
    });
}

#[test]
fn a_plain_commit_written_after_a_transactional_one_is_kept_at_the_marker() {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::OffsetCommitRequest;
    run(|| async {
        let (log, c) = coordinator(config());
        assert_eq!(
            txn_commit(&c, txn_req("g", 7, -1, "", &[("t", 0, 10)])).await,
            vec![0]
        );
        let plain = OffsetCommitRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(25)])]);
        let r = c.offset_commit(plain, 8).await;
        assert_eq!(r.topics[0].partitions[0].error_code, 0);
        // the marker of the earlier transactional commit does not undo the later one
        c.complete_txn(7, true);
        assert_eq!(fetched(&c, "g", 0, false).await, (25, 0));
        log.marker(7, true);
        let replay = log.replay.borrow().clone();
        let c2 = GroupCoordinator::load(Rc::new(MemLog::default()), replay, config());
        assert_eq!(fetched(&c2, "g", 0, false).await, (25, 0));
    });
}

#[test]
fn a_deleted_topics_undecided_transactional_offsets_go_too() {
    run(|| async {
        let (_log, c) = coordinator(config());
        let req = txn_req("g", 7, -1, "", &[("t", 0, 10), ("kept", 0, 5)]);
        assert_eq!(txn_commit(&c, req).await, vec![0, 0]);
        // the group is Empty with only an undecided commit: it is not removed with "t"
        assert_eq!(c.remove_topic_offsets("t"), 0);
        assert_eq!(c.complete_txn(7, true), 1);
        // the COMMIT brings "kept" in, not the deleted topic's offset
        assert_eq!(fetched(&c, "g", 0, false).await, (-1, 0));
        let kept = c
            .offset_fetch_group("g", Some(vec![("kept".to_owned(), vec![0])]), false)
            .await;
        assert_eq!(kept.topics[0].partitions[0].offset, 5);
    });
}

#[test]
fn a_group_with_an_undecided_transactional_commit_outlives_its_deleted_topic() {
    run(|| async {
        let (_log, c) = coordinator(config());
        let plain = kafka_protocol::messages::OffsetCommitRequest::default()
            .with_group_id(GroupId(s("h")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![
                        kafka_protocol::messages::offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(3),
                    ]),
            ]);
        c.offset_commit(plain, 8).await;
        let req = txn_req("h", 9, -1, "", &[("kept", 0, 5)]);
        assert_eq!(txn_commit(&c, req).await, vec![0]);
        assert_eq!(c.remove_topic_offsets("t"), 1);
        // not removed as empty: its transaction's offsets still come
        assert_eq!(c.complete_txn(9, true), 1);
        let kept = c
            .offset_fetch_group("h", Some(vec![("kept".to_owned(), vec![0])]), false)
            .await;
        assert_eq!(kept.topics[0].partitions[0].offset, 5);
    });
}
