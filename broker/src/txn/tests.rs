//! Request-path tests: the coordinator runs inside a glommio LocalExecutor over the fakes
//! of `test_support` (shared with the test through `Rc`) and a manual clock. Writes and markers take a millisecond so other tasks
//! interleave; no assertion depends on how long anything took.

use std::collections::BTreeSet;
use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, GroupId,
    InitProducerIdRequest, ListTransactionsRequest, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::ResponseError;

use super::records::{TxnLogValue, TxnState};
use super::{MarkerRequest, TxnLogError};

use super::test_support::*;

#[test]
fn commit_lifecycle_writes_every_state_and_markers() {
    run(|| async {
        let h = Harness::new();
        let (e, pid, epoch) = h.init("tx").await;
        assert_eq!((e, pid, epoch), (0, 1000, 0));
        assert_eq!(h.add("tx", pid, epoch, &[("t", 0), ("t", 1)]).await, 0);
        h.clock.0.set(1_000_500);
        // already in the transaction: no write
        let before = h.log.records.borrow().len();
        assert_eq!(h.add("tx", pid, epoch, &[("t", 1)]).await, 0);
        assert_eq!(h.log.records.borrow().len(), before);
        assert_eq!(h.add("tx", pid, epoch, &[("u", 7)]).await, 0);
        assert_eq!(h.end("tx", pid, epoch, true).await, 0);
        h.wait_state("tx", TxnState::CompleteCommit).await;

        assert_eq!(
            h.log.states("tx"),
            vec![
                Some(TxnState::Empty),
                Some(TxnState::Ongoing),
                Some(TxnState::Ongoing),
                Some(TxnState::PrepareCommit),
                Some(TxnState::CompleteCommit),
            ]
        );
        let recs = h.log.decoded();
        let prepare = recs[3].2.clone().expect("value");
        assert_eq!(prepare.partitions.len(), 3);
        assert_eq!(
            prepare.start_ms, 1_000_000,
            "the transaction started at its first add"
        );
        assert_eq!((prepare.producer_id, prepare.producer_epoch), (1000, 0));
        let complete = recs[4].2.clone().expect("value");
        assert!(complete.partitions.is_empty());
        assert_eq!(complete.start_ms, 1_000_000);

        let m = h.markers.requests();
        assert_eq!(m.len(), 1);
        assert_eq!(
            m[0],
            MarkerRequest {
                producer_id: 1000,
                producer_epoch: 0,
                commit: true,
                coordinator_epoch: COORDINATOR_EPOCH,
                partitions: parts(&[("t", 0), ("t", 1), ("u", 7)]),
            }
        );
        // markers go out after PrepareCommit is written and before CompleteCommit
        let marker_seq = h.markers.calls.borrow()[0].0;
        assert!(recs[3].0 < marker_seq && marker_seq < recs[4].0);

        // the next transaction starts anew with the same epoch
        h.clock.0.set(1_002_000);
        assert_eq!(h.add("tx", pid, epoch, &[("t", 3)]).await, 0);
        let v = h.log.last("tx").expect("value");
        assert_eq!((v.state, v.start_ms), (TxnState::Ongoing, 1_002_000));
        assert_eq!(v.partitions.len(), 1);
    });
}

#[test]
fn abort_with_offsets_partition() {
    run(|| async {
        let h = Harness::new();
        let (_, pid, epoch) = h.init("tx").await;
        let req = AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(s("tx")))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_group_id(GroupId(s("my-group")));
        assert_eq!(h.c.add_offsets_to_txn(&req, 3, 50).await.error_code, 0);
        assert_eq!(h.add("tx", pid, epoch, &[("t", 0)]).await, 0);
        assert_eq!(h.end("tx", pid, epoch, false).await, 0);
        h.wait_state("tx", TxnState::CompleteAbort).await;
        let p = crate::groups::coordinator_partition("my-group", 50);
        let m = h.markers.requests();
        assert_eq!(m.len(), 1);
        assert!(!m[0].commit);
        assert_eq!(
            m[0].partitions,
            parts(&[("__consumer_offsets", p), ("t", 0)])
        );
        // AddOffsetsToTxn with a stale epoch: v1 gets INVALID_PRODUCER_EPOCH, v2 PRODUCER_FENCED
        let stale = req.clone().with_producer_epoch(epoch + 1);
        assert_eq!(
            h.c.add_offsets_to_txn(&stale, 1, 50).await.error_code,
            code(ResponseError::InvalidProducerEpoch)
        );
        assert_eq!(
            h.c.add_offsets_to_txn(&stale, 2, 50).await.error_code,
            code(ResponseError::ProducerFenced)
        );
    });
}

#[test]
fn end_txn_checks_and_retries() {
    run(|| async {
        let h = Harness::new();
        assert_eq!(
            h.end("nobody", 1, 0, true).await,
            code(ResponseError::InvalidProducerIdMapping)
        );
        let (_, pid, epoch) = h.init("tx").await;
        // nothing to end
        assert_eq!(
            h.end("tx", pid, epoch, true).await,
            code(ResponseError::InvalidTxnState)
        );
        assert_eq!(h.add("tx", pid, epoch, &[("t", 0)]).await, 0);
        assert_eq!(
            h.end("tx", pid + 1, epoch, true).await,
            code(ResponseError::InvalidProducerIdMapping)
        );
        assert_eq!(
            h.end("tx", pid, epoch + 1, true).await,
            code(ResponseError::ProducerFenced)
        );
        assert_eq!(
            h.end_v("tx", pid, epoch + 1, true, 1).await,
            code(ResponseError::InvalidProducerEpoch)
        );
        assert_eq!(
            h.end("", pid, epoch, true).await,
            code(ResponseError::InvalidRequest)
        );
        assert_eq!(h.end("tx", pid, epoch, true).await, 0);
        h.wait_state("tx", TxnState::CompleteCommit).await;
        let writes = h.log.records.borrow().len();
        // a retry of the same decision succeeds without writing; the opposite is refused
        assert_eq!(h.end("tx", pid, epoch, true).await, 0);
        assert_eq!(
            h.end("tx", pid, epoch, false).await,
            code(ResponseError::InvalidTxnState)
        );
        assert_eq!(h.log.records.borrow().len(), writes);
        assert_eq!(h.markers.requests().len(), 1);
        // an EndTxn answer carries the producer id and epoch
        let req = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s("tx")))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(true);
        let r = h.c.end_txn(&req, 4).await;
        assert_eq!(
            (r.error_code, r.producer_id.0, r.producer_epoch),
            (0, pid, epoch)
        );
    });
}

#[test]
fn concurrent_transactions_while_markers_are_pending() {
    run(|| async {
        let h = Harness::new();
        let (_, pid, epoch) = h.init("tx").await;
        assert_eq!(h.add("tx", pid, epoch, &[("t", 0)]).await, 0);
        h.markers.hold.set(true);
        // the client is answered once PrepareCommit is written, markers still pending
        assert_eq!(h.end("tx", pid, epoch, true).await, 0);
        glommio::timer::sleep(Duration::from_millis(5)).await;
        assert_eq!(h.state("tx"), Some(TxnState::PrepareCommit));
        let busy = code(ResponseError::ConcurrentTransactions);
        assert_eq!(h.end("tx", pid, epoch, true).await, busy);
        assert_eq!(
            h.end("tx", pid, epoch, false).await,
            code(ResponseError::InvalidTxnState)
        );
        assert_eq!(h.add("tx", pid, epoch, &[("t", 1)]).await, busy);
        assert_eq!(h.init("tx").await.0, busy);
        let d = h.c.describe_transaction("tx");
        assert_eq!(d.transaction_state.as_str(), "PrepareCommit");
        h.markers.hold.set(false);
        h.wait_state("tx", TxnState::CompleteCommit).await;
        let (e, pid2, epoch2) = h.init("tx").await;
        assert_eq!((e, pid2, epoch2), (0, pid, epoch + 1));
    });
}

#[test]
fn failed_markers_are_retried_and_deleted_topics_dropped() {
    run(|| async {
        let h = Harness::new();
        let (_, pid, epoch) = h.init("tx").await;
        assert_eq!(
            h.add("tx", pid, epoch, &[("t", 0), ("t", 1), ("gone", 0)])
                .await,
            0
        );
        let not_leader = code(ResponseError::NotLeaderOrFollower);
        h.markers
            .fail("t", 1, &[not_leader, code(ResponseError::RequestTimedOut)]);
        h.markers
            .fail("gone", 0, &[code(ResponseError::UnknownTopicOrPartition)]);
        assert_eq!(h.end("tx", pid, epoch, true).await, 0);
        h.wait_state("tx", TxnState::CompleteCommit).await;
        let m = h.markers.requests();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].partitions, parts(&[("gone", 0), ("t", 0), ("t", 1)]));
        assert_eq!(m[1].partitions, parts(&[("t", 1)]));
        assert_eq!(m[2].partitions, parts(&[("t", 1)]));
        assert!(m.iter().all(|r| r.commit && r.producer_epoch == epoch));
        assert_eq!(
            h.log.states("tx").last(),
            Some(&Some(TxnState::CompleteCommit))
        );
    });
}

#[test]
fn fenced_markers_stop_without_completing() {
    run(|| async {
        let h = Harness::new();
        let (_, pid, epoch) = h.init("tx").await;
        assert_eq!(h.add("tx", pid, epoch, &[("t", 0), ("t", 1)]).await, 0);
        h.markers
            .fail("t", 1, &[code(ResponseError::TransactionCoordinatorFenced)]);
        assert_eq!(h.end("tx", pid, epoch, true).await, 0);
        glommio::timer::sleep(Duration::from_millis(30)).await;
        assert_eq!(h.markers.requests().len(), 1);
        assert_eq!(h.state("tx"), Some(TxnState::PrepareCommit));
        assert_eq!(
            h.log.states("tx").last(),
            Some(&Some(TxnState::PrepareCommit))
        );
    });
}

#[test]
fn second_init_fences_the_zombie() {
    run(|| async {
        let h = Harness::new();
        let (_, pid, e0) = h.init("tx").await;
        assert_eq!(h.add("tx", pid, e0, &[("t", 0)]).await, 0);
        // a second producer with the same transactional id: the ongoing transaction is
        // aborted at a bumped epoch and the newcomer told to retry
        assert_eq!(
            h.init("tx").await.0,
            code(ResponseError::ConcurrentTransactions)
        );
        assert_eq!(h.epoch("tx"), e0 + 1);
        // the zombie is fenced at once, even before the abort completes
        assert_eq!(
            h.add("tx", pid, e0, &[("t", 1)]).await,
            code(ResponseError::ProducerFenced)
        );
        h.wait_state("tx", TxnState::CompleteAbort).await;
        let m = h.markers.requests();
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].commit, m[0].producer_epoch), (false, e0 + 1));
        assert_eq!(m[0].partitions, parts(&[("t", 0)]));
        let (e, pid2, e2) = h.init("tx").await;
        assert_eq!((e, pid2, e2), (0, pid, e0 + 2));
        assert_eq!(
            h.end("tx", pid, e0, true).await,
            code(ResponseError::ProducerFenced)
        );
        assert_eq!(
            h.add("tx", pid, e0, &[("t", 0)]).await,
            code(ResponseError::ProducerFenced)
        );
        assert_eq!(h.add("tx", pid, e2, &[("t", 0)]).await, 0);
        let states = h.log.states("tx");
        assert_eq!(
            states,
            vec![
                Some(TxnState::Empty),
                Some(TxnState::Ongoing),
                Some(TxnState::PrepareAbort),
                Some(TxnState::CompleteAbort),
                Some(TxnState::Empty),
                Some(TxnState::Ongoing),
            ]
        );
    });
}

#[test]
fn timed_out_transaction_is_aborted_with_an_epoch_bump() {
    run(|| async {
        let h = Harness::new();
        let t0 = h.clock.0.get();
        let (_, pid, e0) = h.init_v("tx", 100, (-1, -1), 4).await;
        assert_eq!(h.add("tx", pid, e0, &[("t", 0)]).await, 0);
        h.c.abort_timed_out_transactions(t0 + 100).await;
        assert_eq!(
            h.state("tx"),
            Some(TxnState::Ongoing),
            "not past the timeout yet"
        );
        // the first fence write fails: the epoch stays bumped in memory, once
        h.log
            .fail
            .borrow_mut()
            .push_back(TxnLogError::Unavailable("slow".into()));
        h.c.abort_timed_out_transactions(t0 + 101).await;
        assert_eq!(
            (h.state("tx"), h.epoch("tx")),
            (Some(TxnState::Ongoing), e0 + 1)
        );
        assert_eq!(
            h.end("tx", pid, e0, true).await,
            code(ResponseError::ProducerFenced)
        );
        h.c.abort_timed_out_transactions(t0 + 200).await;
        assert_eq!(h.epoch("tx"), e0 + 1, "a failed fence is not bumped twice");
        h.wait_state("tx", TxnState::CompleteAbort).await;
        let v = h.log.last("tx").expect("value");
        assert_eq!(
            (v.state, v.producer_epoch),
            (TxnState::CompleteAbort, e0 + 1)
        );
        let m = h.markers.requests();
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].commit, m[0].producer_epoch), (false, e0 + 1));
        // nothing more to time out
        let n = h.log.records.borrow().len();
        h.c.abort_timed_out_transactions(t0 + 1_000_000).await;
        assert_eq!(h.log.records.borrow().len(), n);
    });
}

#[test]
fn init_producer_id_validation_and_kip_360() {
    run(|| async {
        let h = Harness::new();
        let bad_timeout = code(ResponseError::InvalidTransactionTimeout);
        assert_eq!(h.init_v("tx", 900_001, (-1, -1), 4).await.0, bad_timeout);
        assert_eq!(h.init_v("tx", 0, (-1, -1), 4).await.0, bad_timeout);
        assert_eq!(
            h.init_v("", 1000, (-1, -1), 4).await.0,
            code(ResponseError::InvalidRequest)
        );
        assert_eq!(
            h.init_v("tx", 1000, (5, -1), 4).await.0,
            code(ResponseError::InvalidRequest)
        );
        let no_id = InitProducerIdRequest::default().with_transactional_id(None);
        assert_eq!(
            h.c.init_producer_id(&no_id, 4).await.error_code,
            code(ResponseError::InvalidRequest)
        );
        h.ids
            .fail
            .set(Some(code(ResponseError::CoordinatorLoadInProgress)));
        let r = h.init("tx").await;
        assert_eq!(r, (code(ResponseError::CoordinatorLoadInProgress), -1, -1));
        h.ids.fail.set(None);

        let (_, pid, e0) = h.init("tx").await;
        // KIP-360: the producer recovers with its current id and epoch
        let r = h.init_v("tx", 1000, (pid, e0), 4).await;
        assert_eq!(r, (0, pid, e0 + 1));
        // the same request again (its answer was lost): the same epoch, no bump
        assert_eq!(h.init_v("tx", 1000, (pid, e0), 4).await, (0, pid, e0 + 1));
        // a stale epoch, or another producer id, is fenced
        assert_eq!(
            h.init_v("tx", 1000, (pid, e0 + 7), 4).await.0,
            code(ResponseError::ProducerFenced)
        );
        assert_eq!(
            h.init_v("tx", 1000, (pid + 50, e0 + 1), 4).await.0,
            code(ResponseError::ProducerFenced)
        );
        assert_eq!(
            h.init_v("tx", 1000, (pid + 50, e0 + 1), 3).await.0,
            code(ResponseError::InvalidProducerEpoch)
        );
        let v = h.log.last("tx").expect("value");
        assert_eq!(
            (v.producer_id, v.producer_epoch, v.timeout_ms),
            (pid, e0 + 1, 1000)
        );
    });
}

#[test]
fn exhausted_epoch_rotates_the_producer_id() {
    run(|| async {
        let exhausted = TxnLogValue {
            producer_id: 77,
            previous_producer_id: -1,
            next_producer_id: -1,
            producer_epoch: i16::MAX - 1,
            timeout_ms: 1000,
            state: TxnState::CompleteCommit,
            partitions: BTreeSet::new(),
            last_update_ms: 1,
            start_ms: 1,
            client_txn_version: 0,
        };
        let replay = vec![(super::records::encode_key("tx"), Some(exhausted.encode(0)))];
        let h = Harness::load(replay.clone(), config());
        assert_eq!(h.init("tx").await, (0, 1000, 0));
        let v = h.log.last("tx").expect("value");
        assert_eq!((v.producer_id, v.producer_epoch), (1000, 0));

        // with the exhausted epoch as the expected one: rotation, and a retry of it works
        let h = Harness::load(replay, config());
        let r = h.init_v("tx", 1000, (77, i16::MAX - 1), 4).await;
        assert_eq!(r, (0, 1000, 0));
        let r = h.init_v("tx", 1000, (77, i16::MAX - 1), 4).await;
        assert_eq!(r, (0, 1000, 0), "retry after rotation gets the same answer");
    });
}

#[test]
fn log_failures_answer_and_roll_back() {
    run(|| async {
        let h = Harness::new();
        let (_, pid, epoch) = h.init("tx").await;
        h.log
            .fail
            .borrow_mut()
            .push_back(TxnLogError::Unavailable("isr".into()));
        assert_eq!(
            h.add("tx", pid, epoch, &[("t", 0)]).await,
            code(ResponseError::CoordinatorNotAvailable)
        );
        assert_eq!(
            (h.state("tx"), h.pending("tx")),
            (Some(TxnState::Empty), None)
        );
        assert_eq!(h.add("tx", pid, epoch, &[("t", 0)]).await, 0);
        // losing leadership unloads the coordinator
        h.log
            .fail
            .borrow_mut()
            .push_back(TxnLogError::NotLeader("moved".into()));
        assert_eq!(
            h.end("tx", pid, epoch, true).await,
            code(ResponseError::NotCoordinator)
        );
        assert!(!h.c.is_active());
        assert_eq!(h.init("tx").await.0, code(ResponseError::NotCoordinator));
        assert_eq!(
            h.add("tx", pid, epoch, &[("t", 1)]).await,
            code(ResponseError::NotCoordinator)
        );
        assert_eq!(
            h.c.describe_transaction("tx").error_code,
            code(ResponseError::NotCoordinator)
        );
    });
}

#[test]
fn unload_stops_marker_delivery() {
    run(|| async {
        let h = Harness::new();
        let (_, pid, epoch) = h.init("tx").await;
        assert_eq!(h.add("tx", pid, epoch, &[("t", 0)]).await, 0);
        h.markers.hold.set(true);
        assert_eq!(h.end("tx", pid, epoch, true).await, 0);
        glommio::timer::sleep(Duration::from_millis(3)).await;
        h.c.unload();
        h.markers.hold.set(false);
        glommio::timer::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            h.log.states("tx").last(),
            Some(&Some(TxnState::PrepareCommit))
        );
        assert_eq!(h.markers.requests().len(), 1);
    });
}

#[test]
fn verify_only_and_batched_adds() {
    run(|| async {
        let h = Harness::new();
        let (_, pid, epoch) = h.init("a").await;
        let (_, pid_b, epoch_b) = h.init("b").await;
        assert_eq!(h.add("a", pid, epoch, &[("t", 0)]).await, 0);
        let txn = |id: &str, pid: i64, epoch: i16, verify: bool, ps: &[i32]| {
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(s(id)))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_verify_only(verify)
                .with_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(ps.to_vec())])
        };
        let codes = |r: &kafka_protocol::messages::add_partitions_to_txn_response::AddPartitionsToTxnResult| {
            r.topic_results
                .iter()
                .flat_map(|t| t.results_by_partition.iter().map(|p| (p.partition_index, p.partition_error_code)))
                .collect::<Vec<_>>()
        };
        let writes = h.log.records.borrow().len();
        let r =
            h.c.add_partitions_for_transaction(&txn("a", pid, epoch, true, &[0, 1]), 5)
                .await;
        assert_eq!(
            codes(&r),
            vec![(0, 0), (1, code(ResponseError::TransactionAbortable))]
        );
        let r =
            h.c.add_partitions_for_transaction(&txn("a", pid, epoch, true, &[0, 1]), 4)
                .await;
        assert_eq!(
            codes(&r),
            vec![(0, 0), (1, code(ResponseError::InvalidTxnState))]
        );
        let fenced = code(ResponseError::ProducerFenced);
        let r =
            h.c.add_partitions_for_transaction(&txn("a", pid, epoch + 1, true, &[0, 1]), 5)
                .await;
        assert_eq!(codes(&r), vec![(0, fenced), (1, fenced)]);
        let mapping = code(ResponseError::InvalidProducerIdMapping);
        let r =
            h.c.add_partitions_for_transaction(&txn("a", pid + 1, epoch, true, &[0]), 5)
                .await;
        assert_eq!(codes(&r), vec![(0, mapping)]);
        let r =
            h.c.add_partitions_for_transaction(&txn("zz", pid, epoch, true, &[0]), 5)
                .await;
        assert_eq!(codes(&r), vec![(0, mapping)]);
        assert_eq!(
            h.log.records.borrow().len(),
            writes,
            "verification writes nothing"
        );

        // the batched (non-verify) form: two transactions in one request
        let req = AddPartitionsToTxnRequest::default().with_transactions(vec![
            txn("a", pid, epoch, false, &[2]),
            txn("b", pid_b, epoch_b, false, &[5]),
        ]);
        let resp = h.c.add_partitions_to_txn(&req, 5).await;
        assert_eq!(resp.results_by_transaction.len(), 2);
        assert_eq!(codes(&resp.results_by_transaction[0]), vec![(2, 0)]);
        assert_eq!(codes(&resp.results_by_transaction[1]), vec![(5, 0)]);
        assert_eq!(
            resp.results_by_transaction[1].transactional_id.0.as_str(),
            "b"
        );
        let r =
            h.c.add_partitions_for_transaction(&txn("a", pid, epoch, true, &[0, 2]), 5)
                .await;
        assert_eq!(codes(&r), vec![(0, 0), (2, 0)]);

        // during markers, verification answers CONCURRENT_TRANSACTIONS
        h.markers.hold.set(true);
        assert_eq!(h.end("a", pid, epoch, true).await, 0);
        let r =
            h.c.add_partitions_for_transaction(&txn("a", pid, epoch, true, &[0]), 5)
                .await;
        assert_eq!(
            codes(&r),
            vec![(0, code(ResponseError::ConcurrentTransactions))]
        );
        h.markers.hold.set(false);
        h.wait_state("a", TxnState::CompleteCommit).await;
        let r =
            h.c.add_partitions_for_transaction(&txn("a", pid, epoch, true, &[0]), 5)
                .await;
        assert_eq!(
            codes(&r),
            vec![(0, code(ResponseError::TransactionAbortable))]
        );
    });
}

#[test]
fn describe_and_list() {
    run(|| async {
        let h = Harness::new();
        let t0 = h.clock.0.get();
        let (_, pid_a, ea) = h.init_v("a", 5000, (-1, -1), 4).await;
        let (_, pid_b, _) = h.init("b").await;
        assert_eq!(
            h.add("a", pid_a, ea, &[("x", 1), ("x", 0), ("y", 3)]).await,
            0
        );
        let d = h.c.describe_transaction("a");
        assert_eq!(d.error_code, 0);
        assert_eq!(d.transaction_state.as_str(), "Ongoing");
        assert_eq!((d.producer_id.0, d.producer_epoch), (pid_a, ea));
        assert_eq!(
            (d.transaction_timeout_ms, d.transaction_start_time_ms),
            (5000, t0)
        );
        let topics: Vec<(String, Vec<i32>)> = d
            .topics
            .iter()
            .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
            .collect();
        assert_eq!(
            topics,
            vec![("x".into(), vec![0, 1]), ("y".into(), vec![3])]
        );
        assert_eq!(
            h.c.describe_transaction("b").transaction_state.as_str(),
            "Empty"
        );
        assert_eq!(
            h.c.describe_transaction("nope").error_code,
            code(ResponseError::TransactionalIdNotFound)
        );
        assert_eq!(
            h.c.describe_transaction("").error_code,
            code(ResponseError::InvalidRequest)
        );

        let ids = |r: &kafka_protocol::messages::ListTransactionsResponse| {
            r.transaction_states
                .iter()
                .map(|t| {
                    (
                        t.transactional_id.0.to_string(),
                        t.transaction_state.to_string(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let all = h.c.list_transactions(&ListTransactionsRequest::default());
        assert_eq!(all.error_code, 0);
        assert_eq!(
            ids(&all),
            vec![("a".into(), "Ongoing".into()), ("b".into(), "Empty".into())]
        );
        let r = h.c.list_transactions(
            &ListTransactionsRequest::default().with_state_filters(vec![s("Ongoing"), s("Bogus")]),
        );
        assert_eq!(ids(&r), vec![("a".into(), "Ongoing".into())]);
        assert_eq!(r.unknown_state_filters, vec![s("Bogus")]);
        let r = h.c.list_transactions(
            &ListTransactionsRequest::default().with_producer_id_filters(vec![ProducerId(pid_b)]),
        );
        assert_eq!(ids(&r), vec![("b".into(), "Empty".into())]);
        // KIP-994: only transactions running longer than the filter
        h.clock.0.set(t0 + 1000);
        let r =
            h.c.list_transactions(&ListTransactionsRequest::default().with_duration_filter(999));
        assert!(ids(&r).contains(&("a".into(), "Ongoing".into())));
        let r = h.c.list_transactions(
            &ListTransactionsRequest::default()
                .with_duration_filter(1000)
                .with_state_filters(vec![s("Ongoing")]),
        );
        assert!(ids(&r).is_empty());
        let r = h.c.list_transactions(
            &ListTransactionsRequest::default().with_transactional_id_pattern(Some(s("a.*"))),
        );
        assert_eq!(r.error_code, code(ResponseError::InvalidRequest));
    });
}

#[test]
fn idle_transactional_ids_expire() {
    run(|| async {
        let h = Harness::new();
        let t0 = h.clock.0.get();
        let (_, pid, epoch) = h.init("idle").await;
        let _ = h.init("busy").await;
        let busy = h.c.describe_transaction("busy");
        assert_eq!(
            h.add("busy", busy.producer_id.0, busy.producer_epoch, &[("t", 0)])
                .await,
            0
        );
        let week = super::TxnConfig::default().id_expiration_ms;
        h.c.expire_transactional_ids(t0 + week - 1).await;
        assert_eq!(h.state("idle"), Some(TxnState::Empty));
        h.log
            .fail
            .borrow_mut()
            .push_back(TxnLogError::Unavailable("isr".into()));
        h.c.expire_transactional_ids(t0 + week).await;
        assert_eq!(
            (h.state("idle"), h.pending("idle")),
            (Some(TxnState::Empty), None)
        );
        h.c.expire_transactional_ids(t0 + week).await;
        assert_eq!(h.state("idle"), None);
        assert_eq!(
            h.state("busy"),
            Some(TxnState::Ongoing),
            "an ongoing id never expires"
        );
        assert_eq!(
            h.log.states("idle").last(),
            Some(&None),
            "a tombstone was written"
        );
        assert_eq!(
            h.c.describe_transaction("idle").error_code,
            code(ResponseError::TransactionalIdNotFound)
        );
        assert_eq!(
            h.add("idle", pid, epoch, &[("t", 0)]).await,
            code(ResponseError::InvalidProducerIdMapping)
        );
        // an expired id starts over with a new producer id
        let (e, pid2, epoch2) = h.init("idle").await;
        assert_eq!(e, 0);
        assert_ne!(pid2, pid);
        assert_eq!(epoch2, 0);
    });
}

#[test]
fn the_next_transaction_waits_for_the_last_ones_markers_instead_of_failing() {
    run(|| async {
        let mut cfg = config();
        cfg.concurrent_wait_ms = 2_000;
        let h = Harness::load(Vec::new(), cfg);
        let (_, pid, epoch) = h.init("tx").await;
        assert_eq!(h.add("tx", pid, epoch, &[("t", 0)]).await, 0);
        h.markers.hold.set(true);
        assert_eq!(h.end("tx", pid, epoch, true).await, 0);
        // the markers are released while the next AddPartitions waits
        let release = {
            let markers = h.markers.clone();
            glommio::spawn_local(async move {
                glommio::timer::sleep(Duration::from_millis(20)).await;
                markers.hold.set(false);
            })
        };
        assert_eq!(h.add("tx", pid, epoch, &[("t", 1)]).await, 0);
        release.await;
        assert_eq!(h.state("tx"), Some(TxnState::Ongoing));
        // held for longer than the wait (2 s): CONCURRENT_TRANSACTIONS after it, as before
        h.markers.hold.set(true);
        assert_eq!(h.end("tx", pid, epoch, false).await, 0);
        assert_eq!(
            h.add("tx", pid, epoch, &[("t", 2)]).await,
            code(ResponseError::ConcurrentTransactions)
        );
        h.markers.hold.set(false);
    });
}
