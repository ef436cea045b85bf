//! Load tests: a partition replayed into a new coordinator (every state, tombstones,
//! overwrites, garbage), transactions found in Prepare* completed by `start`, and a
//! coordinator rebuilt from another's log agreeing with it.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::records::{encode_key, TxnLogValue, TxnState};
use super::test_support::*;
use super::TxnConfig;

fn value(pid: i64, epoch: i16, state: TxnState, parts: &[(&str, i32)]) -> TxnLogValue {
    TxnLogValue {
        producer_id: pid,
        previous_producer_id: -1,
        next_producer_id: -1,
        producer_epoch: epoch,
        timeout_ms: 60_000,
        state,
        partitions: parts.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
        last_update_ms: 500,
        start_ms: if state == TxnState::Empty { -1 } else { 400 },
        client_txn_version: 0,
    }
}

fn rec(id: &str, v: Option<&TxnLogValue>, version: i16) -> (Bytes, Option<Bytes>) {
    (encode_key(id), v.map(|v| v.encode(version)))
}

fn replay() -> Vec<(Bytes, Option<Bytes>)> {
    vec![
        rec("empty", Some(&value(1, 0, TxnState::Empty, &[])), 0),
        rec("ongoing", Some(&value(2, 3, TxnState::Empty, &[])), 0),
        rec(
            "ongoing",
            Some(&value(2, 3, TxnState::Ongoing, &[("t", 0)])),
            1,
        ),
        rec(
            "pc",
            Some(&value(3, 1, TxnState::Ongoing, &[("t", 1), ("u", 0)])),
            0,
        ),
        rec(
            "pc",
            Some(&value(3, 1, TxnState::PrepareCommit, &[("t", 1), ("u", 0)])),
            0,
        ),
        rec(
            "pa",
            Some(&value(4, 7, TxnState::PrepareAbort, &[("t", 2)])),
            1,
        ),
        rec("cc", Some(&value(5, 0, TxnState::CompleteCommit, &[])), 0),
        rec("ca", Some(&value(6, 2, TxnState::CompleteAbort, &[])), 0),
        rec("gone", Some(&value(7, 0, TxnState::Empty, &[])), 0),
        rec("gone", None, 0),
        // garbage: an unknown key version, a truncated value, a never-written state
        (
            Bytes::from_static(&[0, 9, 0, 1, b'x']),
            Some(Bytes::from_static(&[0])),
        ),
        (encode_key("bad"), Some(Bytes::from_static(&[0, 0, 1, 2]))),
        rec("dead", Some(&value(8, 0, TxnState::Dead, &[])), 0),
    ]
}

#[test]
fn replay_rebuilds_every_state() {
    run(|| async {
        let h = Harness::load(replay(), config());
        let expect = [
            ("empty", TxnState::Empty, 1, 0),
            ("ongoing", TxnState::Ongoing, 2, 3),
            ("pc", TxnState::PrepareCommit, 3, 1),
            ("pa", TxnState::PrepareAbort, 4, 7),
            ("cc", TxnState::CompleteCommit, 5, 0),
            ("ca", TxnState::CompleteAbort, 6, 2),
        ];
        for (id, state, pid, epoch) in expect {
            let d = h.c.describe_transaction(id);
            assert_eq!(d.error_code, 0, "{id}");
            assert_eq!(d.transaction_state.as_str(), state.name(), "{id}");
            assert_eq!((d.producer_id.0, d.producer_epoch), (pid, epoch), "{id}");
        }
        let not_found = ResponseError::TransactionalIdNotFound.code();
        for id in ["gone", "bad", "dead"] {
            assert_eq!(h.c.describe_transaction(id).error_code, not_found, "{id}");
        }
        let d = h.c.describe_transaction("ongoing");
        assert_eq!(d.topics.len(), 1);
        assert_eq!(d.transaction_start_time_ms, 400);
        // a loaded Ongoing transaction continues with its producer
        assert_eq!(h.add("ongoing", 2, 3, &[("t", 0)]).await, 0);
        assert!(
            h.log.records.borrow().is_empty(),
            "nothing written before start"
        );
        assert_eq!(h.end("ongoing", 2, 3, true).await, 0);
        h.wait_state("ongoing", TxnState::CompleteCommit).await;
    });
}

#[test]
fn start_completes_prepared_transactions() {
    run(|| async {
        let h = Harness::load(replay(), config());
        // the old producer of "pc" retrying EndTxn before the markers are out
        h.markers.hold.set(true);
        h.c.start();
        glommio::timer::sleep(Duration::from_millis(5)).await;
        assert_eq!(
            h.end("pc", 3, 1, true).await,
            ResponseError::ConcurrentTransactions.code()
        );
        assert_eq!(
            h.init("pa").await.0,
            ResponseError::ConcurrentTransactions.code()
        );
        h.markers.hold.set(false);
        h.wait_state("pc", TxnState::CompleteCommit).await;
        h.wait_state("pa", TxnState::CompleteAbort).await;
        let mut m = h.markers.requests();
        m.sort_by_key(|r| r.producer_id);
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].producer_id, m[0].producer_epoch, m[0].commit),
            (3, 1, true)
        );
        assert_eq!(m[0].partitions, parts(&[("t", 1), ("u", 0)]));
        assert_eq!(
            (m[1].producer_id, m[1].producer_epoch, m[1].commit),
            (4, 7, false)
        );
        assert_eq!(m[1].partitions, parts(&[("t", 2)]));
        assert!(m.iter().all(|r| r.coordinator_epoch == COORDINATOR_EPOCH));
        let mut ids: Vec<String> = h.log.decoded().into_iter().map(|(_, id, _)| id).collect();
        ids.sort();
        assert_eq!(
            ids,
            vec!["pa", "pc"],
            "only the two completions were written"
        );
        assert_eq!(
            h.end("pc", 3, 1, true).await,
            0,
            "a retry after completion succeeds"
        );
        // the loaded Ongoing transaction is still subject to its timeout
        assert_eq!(h.state("ongoing"), Some(TxnState::Ongoing));
        h.c.abort_timed_out_transactions(400 + 60_001).await;
        h.wait_state("ongoing", TxnState::CompleteAbort).await;
        assert_eq!(h.epoch("ongoing"), 4);
    });
}

#[test]
fn a_reloaded_coordinator_agrees_with_the_old_one() {
    run(|| async {
        let h = Harness::new();
        let (_, p1, e1) = h.init("one").await;
        assert_eq!(h.add("one", p1, e1, &[("t", 0), ("t", 1)]).await, 0);
        assert_eq!(h.end("one", p1, e1, false).await, 0);
        h.wait_state("one", TxnState::CompleteAbort).await;
        let (_, p2, e2) = h.init("two").await;
        assert_eq!(h.add("two", p2, e2, &[("u", 3)]).await, 0);
        let _ = h.init("three").await;
        let _ = h.init("three").await;
        h.markers.hold.set(true);
        let (_, p4, e4) = h.init("four").await;
        assert_eq!(h.add("four", p4, e4, &[("v", 9)]).await, 0);
        assert_eq!(h.end("four", p4, e4, true).await, 0);

        let cfg = TxnConfig {
            marker_retry_backoff_ms: 1,
            ..config()
        };
        let h2 = Harness::load(h.log.replay(), cfg);
        for id in ["one", "two", "three", "four"] {
            let a = h.c.describe_transaction(id);
            let b = h2.c.describe_transaction(id);
            assert_eq!(a, b, "{id}");
        }
        assert_eq!(h2.state("four"), Some(TxnState::PrepareCommit));
        // the new leadership takes over: the old one is unloaded, the new one completes
        h.c.unload();
        h2.c.start();
        h2.wait_state("four", TxnState::CompleteCommit).await;
        let m = h2.markers.requests();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].partitions, parts(&[("v", 9)]));
        // a further epoch for "three" continues from the reloaded one
        assert_eq!(h2.init("three").await.2, 2);
        let ps: BTreeSet<_> = h2.log.decoded().into_iter().map(|(_, id, _)| id).collect();
        assert_eq!(
            ps,
            ["four", "three"].into_iter().map(String::from).collect()
        );
    });
}
